//! Tests of the DMMA covariance block (`desi_device::linalg::banded_mma`, the code of the GPU
//! kernel `covariance_mma`) under the host emulation of a thread block of warps
//! (`SerialMmaTeam`: each warp's `mma.m8n8k4.f64` computed element by element from the PTX
//! fragment layout, `shfl.sync.idx` by slot), against two float64 references: the serial band
//! routine (`banded::band_covariance_block_range`) and the dense inverse of the patch matrix
//! (nalgebra's Cholesky).
//!
//! Every block runs at 4, 5, 8 and 16 warps, with the warps of each phase in order and in
//! reverse: all must give bitwise the same `C_bb` (a tile's sums do not depend on the warp
//! that owns it; a warp reading, within a phase, what another writes would show up in one of
//! the two orders). The shared memory and the output start as NaN.
//!
//! Shapes: the realistic patches of `tests/cholesky.rs` at nspec 7, 6, 5, 2, 1 (n = 518 … 74,
//! kd = 58 … 10: the extremes of a frame's patches, the interior sub-bundles with a padding
//! fiber on each side and the edge ones), their dense-band corners (kd >= n - 1) and random
//! band matrices with odd block sizes (13, 37: edge tiles), kd = 0, 1, 7, 8, 33, 35 and the
//! largest order, 80.

mod common;

use common::{max_abs, patch_matrix, to_band};
use desi_device::linalg::banded::{band_covariance_block_range, band_factor};
use desi_device::linalg::banded_mma::{
    covariance_block_mma_serial, covariance_block_mma_smem_len, COV_MMA_ORDER_MAX, COV_MMA_WARPS,
};
use desi_device::linalg::newton_schulz::SerialMmaTeam;
use desi_device::team::Shared;
use desi_device::Status;
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Warp counts: the fewest the kernel accepts (its default), an odd count, 12, the most.
const WARPS: [usize; 4] = [8, 9, 12, 16];

/// Asserts `|actual[i] - expected[i]| <= tol` (NaN fails), reporting the worst index.
fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let err = (a - e).abs();
        let err = if err.is_nan() { f64::INFINITY } else { err };
        if err > tol && worst.is_none_or(|(_, w)| err > w) {
            worst = Some((i, err));
        }
    }
    if let Some((i, err)) = worst {
        panic!(
            "{what}: index {i}: actual {:e}, expected {:e}, |diff| {err:e} > tol {tol:e}",
            actual[i], expected[i]
        );
    }
}

/// Asserts bitwise equality, reporting the first difference.
fn assert_bitwise(actual: &[f64], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    if let Some(i) = (0..actual.len()).find(|&i| actual[i].to_bits() != expected[i].to_bits()) {
        panic!(
            "{what}: index {i}: actual {:e}, expected {:e} (not bitwise equal)",
            actual[i], expected[i]
        );
    }
}

/// Runs `covariance_block_mma` (`prefetch`: the next `L` group through registers); returns
/// the status and `C_bb` (NaN-filled buffers).
#[allow(clippy::too_many_arguments)]
fn cov_mma(
    team: &SerialMmaTeam,
    prefetch: bool,
    l: &[f64],
    n: usize,
    kd: usize,
    nblock: usize,
    block: usize,
) -> (Status, Vec<f64>) {
    let bs = n / nblock;
    let mut l = l.to_vec();
    let mut out = vec![f64::NAN; bs * bs];
    let mut smem = vec![f64::NAN; covariance_block_mma_smem_len(n, kd, nblock, team.warps)];
    let status = covariance_block_mma_serial(
        team,
        Shared::new(&mut l),
        n,
        kd,
        nblock,
        block,
        Shared::new(&mut out),
        Shared::new(&mut smem),
        prefetch,
    );
    (status, out)
}

/// Serial reference of one block.
fn cov_serial(l: &[f64], n: usize, kd: usize, nblock: usize, block: usize) -> (Status, Vec<f64>) {
    let bs = n / nblock;
    let mut out = vec![0.0; bs * bs];
    let mut work = vec![0.0; (kd + 1).max(4).min(n) * bs];
    let status = band_covariance_block_range(l, n, kd, nblock, block, &mut out, &mut work);
    (status, out)
}

/// Block `block` of the dense inverse `m⁻¹` (row-major `(bs, bs)`).
fn dense_block(inv: &DMatrix<f64>, nblock: usize, bs: usize, block: usize) -> Vec<f64> {
    (0..bs * bs)
        .map(|e| inv[((e / bs) * nblock + block, (e % bs) * nblock + block)])
        .collect()
}

/// Checks every block of the factor `l` at every warp count, in both warp orders, against the
/// serial reference (and `dense`, the blocks of the dense inverse, when given); returns the
/// largest relative difference from the serial reference.
fn check_blocks(
    what: &str,
    l: &[f64],
    n: usize,
    kd: usize,
    nblock: usize,
    dense: Option<&DMatrix<f64>>,
) -> f64 {
    let bs = n / nblock;
    let mut worst = 0.0f64;
    for block in 0..nblock {
        let (status, expected) = cov_serial(l, n, kd, nblock, block);
        assert_eq!(status, Status::Ok, "{what} block {block}: serial");
        let scale = max_abs(&expected);
        let mut first: Option<Vec<f64>> = None;
        // All warp counts on the first and last blocks, the default on the others.
        let counts: &[usize] = if block == 0 || block + 1 == nblock {
            &WARPS
        } else {
            &[COV_MMA_WARPS]
        };
        for &warps in counts {
            for reverse in [false, true] {
                let label = format!("{what} block {block} warps={warps} reverse={reverse}");
                // With and without the register prefetch of L on alternate runs (the same
                // values: all runs must agree bitwise).
                let prefetch = (warps + usize::from(reverse)) % 2 == 0;
                let team = SerialMmaTeam { warps, reverse };
                let (status, c) = cov_mma(&team, prefetch, l, n, kd, nblock, block);
                assert_eq!(status, Status::Ok, "{label}");
                // Sums of the same terms in another order: the team kernel's tolerance.
                assert_close(&c, &expected, 1e-13 * scale, &label);
                for r in 0..bs {
                    for col in 0..r {
                        assert_eq!(
                            c[r * bs + col].to_bits(),
                            c[col * bs + r].to_bits(),
                            "{label}: symmetry ({r}, {col})"
                        );
                    }
                }
                if let Some(inv) = dense {
                    let d = dense_block(inv, nblock, bs, block);
                    assert_close(&c, &d, 1e-12 * max_abs(&d), &format!("{label}: dense"));
                }
                let diff = c
                    .iter()
                    .zip(&expected)
                    .fold(0.0f64, |m, (a, e)| m.max((a - e).abs()));
                worst = worst.max(diff / scale);
                match &first {
                    None => first = Some(c),
                    Some(f) => assert_bitwise(&c, f, &format!("{label}: vs the first run")),
                }
            }
        }
    }
    worst
}

/// The realistic patch matrices (n = 74·nspec, kd = 8·nspec + 2) against both references.
#[test]
fn patches_match_serial_and_dense_references() {
    for (nspec, seed) in [(7usize, 11u64), (6, 12), (5, 15), (2, 13), (1, 14)] {
        let n = nspec * 74;
        let kd = 8 * nspec + 2;
        let m = patch_matrix(nspec, 74, seed).0;
        let inv = DMatrix::from_row_slice(n, n, &m)
            .cholesky()
            .expect("SPD")
            .inverse();
        let mut l = to_band(&m, n, kd);
        assert_eq!(band_factor(&mut l, n, kd), Status::Ok);
        let worst = check_blocks(
            &format!("patch nspec={nspec}"),
            &l,
            n,
            kd,
            nspec,
            Some(&inv),
        );
        eprintln!(
            "patch nspec={nspec} n={n} kd={kd}: max |mma - serial| / max|C_bb| = {worst:.2e}"
        );
    }
}

/// Leading corners of the nspec = 7 patch at kd = 58 (dense bands, `kd >= n - 1`): one and
/// two unknowns, a block order of 1, a 74-unknown matrix in 2 blocks of 37 (edge tiles).
#[test]
fn dense_band_corners() {
    let m7 = patch_matrix(7, 74, 11).0;
    for (k, nblock) in [(1usize, 1usize), (2, 2), (5, 5), (74, 2), (80, 1)] {
        let corner: Vec<f64> = (0..k * k).map(|e| m7[(e / k) * 518 + e % k]).collect();
        let kd = 58;
        let mut l = to_band(&corner, k, kd);
        assert_eq!(band_factor(&mut l, k, kd), Status::Ok);
        let inv = DMatrix::from_row_slice(k, k, &corner)
            .cholesky()
            .expect("SPD")
            .inverse();
        check_blocks(&format!("corner n={k}"), &l, k, kd, nblock, Some(&inv));
    }
}

/// A random SPD band matrix (band storage), strictly diagonally dominant.
fn banded_spd(n: usize, kd: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w = kd + 1;
    let mut ab = vec![1.0e300; n * w];
    for i in 0..n {
        for j in i.saturating_sub(kd)..i {
            ab[i * w + j + kd - i] = rng.random_range(-1.0..1.0);
        }
        ab[i * w + kd] = 2.0 * kd as f64 + 1.0 + rng.random_range(0.0..1.0);
    }
    ab
}

/// Odd block orders (edge tiles), `kd` below, at and above a group's 8 rows and a chunk's 4,
/// the largest order (80: 10 full tiles), an order-80 matrix with 3 blocks, and `kd` beyond the
/// register staging of 8 warps.
#[test]
fn odd_shapes() {
    for (n, kd, nblock, seed) in [
        (39usize, 0usize, 3usize, 21u64),
        (39, 1, 3, 22),
        (39, 3, 3, 27),
        (39, 7, 3, 23),
        (52, 8, 4, 24),
        (65, 33, 5, 25),
        (222, 35, 3, 26),
        (80, 12, 1, 28),
        (240, 21, 3, 29),
        // kd > 120: at 8 warps the next group of L is staged at the end of the phase, at 16
        // through registers (the same values: bitwise the same C_bb).
        (160, 121, 2, 30),
        (240, 200, 3, 31),
    ] {
        let mut l = banded_spd(n, kd, seed);
        assert_eq!(band_factor(&mut l, n, kd), Status::Ok);
        check_blocks(
            &format!("n={n} kd={kd} nblock={nblock}"),
            &l,
            n,
            kd,
            nblock,
            None,
        );
    }
}

/// The statuses of the team kernel: a bad diagonal of `L` (the first in order decides,
/// nothing else run), a NaN below the diagonal (NonFinite from `C_bb`).
#[test]
fn statuses() {
    let (n, kd, nblock) = (6 * 74, 50, 6);
    let w = kd + 1;
    let mut l = to_band(&patch_matrix(6, 74, 12).0, n, kd);
    assert_eq!(band_factor(&mut l, n, kd), Status::Ok);
    let mut bad = Vec::new();
    for (i, v) in [
        (100usize, 0.0),
        (n - 1, -2.0),
        (3, f64::NAN),
        (n - 1, f64::INFINITY),
    ] {
        let mut a = l.clone();
        a[i * w + kd] = v;
        bad.push((format!("diag {i} = {v}"), a));
    }
    for (first, second) in [
        ((3usize, f64::NAN), (100usize, 0.0)),
        ((70, -1.0), (5 + 64, f64::NAN)),
    ] {
        let mut a = l.clone();
        a[first.0 * w + kd] = first.1;
        a[second.0 * w + kd] = second.1;
        bad.push((format!("diag {first:?} and {second:?}"), a));
    }
    for (i, j) in [(100usize, 60usize), (n - 1, n - 2)] {
        let mut a = l.clone();
        a[i * w + (j + kd - i)] = f64::NAN;
        bad.push((format!("L({i}, {j}) = NaN"), a));
    }
    for (what, a) in &bad {
        for block in [0, 5] {
            let (expected, _) = cov_serial(a, n, kd, nblock, block);
            assert_ne!(expected, Status::Ok, "{what}: serial");
            for warps in [8, 16] {
                for reverse in [false, true] {
                    let team = SerialMmaTeam { warps, reverse };
                    let (status, _) = cov_mma(&team, reverse, a, n, kd, nblock, block);
                    assert_eq!(status, expected, "{what}: block {block} warps={warps}");
                }
            }
        }
    }
}

#[test]
fn bad_shapes() {
    let run = |warps: usize, ab_len: usize, n: usize, kd: usize, nblock: usize, block: usize| {
        let mut ab = vec![1.0; ab_len];
        let bs = n.checked_div(nblock).unwrap_or(0);
        let mut out = vec![0.0; (bs * bs).max(1)];
        let len = covariance_block_mma_smem_len(n, kd, nblock.max(1), warps.max(8));
        let mut smem = vec![0.0; len];
        covariance_block_mma_serial(
            &SerialMmaTeam {
                warps,
                reverse: false,
            },
            Shared::new(&mut ab),
            n,
            kd,
            nblock,
            block,
            Shared::new(&mut out),
            Shared::new(&mut smem),
            true,
        )
    };
    let (n, kd) = (10, 3);
    assert_eq!(run(8, n * (kd + 1), n, kd, 2, 0), Status::Ok);
    assert_eq!(
        run(8, n * (kd + 1), n, kd, 3, 0),
        Status::BadShape,
        "n % nblock"
    );
    assert_eq!(
        run(8, n * (kd + 1), n, kd, 0, 0),
        Status::BadShape,
        "nblock 0"
    );
    assert_eq!(run(8, n * (kd + 1), n, kd, 2, 2), Status::BadShape, "block");
    assert_eq!(run(8, n * kd, n, kd, 2, 0), Status::BadShape, "band length");
    assert_eq!(
        run(7, n * (kd + 1), n, kd, 2, 0),
        Status::BadShape,
        "7 warps"
    );
    assert_eq!(
        run(17, n * (kd + 1), n, kd, 2, 0),
        Status::BadShape,
        "17 warps"
    );
    let big = COV_MMA_ORDER_MAX + 1;
    assert_eq!(run(8, big * 4, big, 3, 1, 0), Status::BadShape, "order 81");
    // A short shared memory or output.
    let mut ab = vec![1.0; n * (kd + 1)];
    let mut out = vec![0.0; 25];
    let len = covariance_block_mma_smem_len(n, kd, 2, 8);
    let mut smem = vec![0.0; len];
    let team = SerialMmaTeam {
        warps: 8,
        reverse: false,
    };
    let ab_s = Shared::new(&mut ab);
    assert_eq!(
        covariance_block_mma_serial(
            &team,
            ab_s,
            n,
            kd,
            2,
            0,
            Shared::new(&mut out[..24]),
            Shared::new(&mut smem),
            true
        ),
        Status::BadShape,
        "short out"
    );
    assert_eq!(
        covariance_block_mma_serial(
            &team,
            ab_s,
            n,
            kd,
            2,
            0,
            Shared::new(&mut out),
            Shared::new(&mut smem[..len - 1]),
            true
        ),
        Status::BadShape,
        "short smem"
    );
}
