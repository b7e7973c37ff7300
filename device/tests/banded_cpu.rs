//! Tests of the CPU's blocked band Cholesky and register-tiled covariance blocks
//! (`desi_device::linalg::banded_cpu`) against float64 dense references (nalgebra LU inverse,
//! `L Lᵀ` residual) and against the serial routines of `desi_device::linalg::banded` that the
//! GPU kernels keep.
//!
//! Matrices: the realistic patch structure (nspec fibers × 74 bins, wavelength-major,
//! |dfiber| <= 2, |dwave| <= 8, κ = 400: the full 518-unknown patch and the 444-unknown edge
//! patch, every core-fiber range), seeded random SPD band matrices over edge-case sizes and
//! bandwidths (kd = 0, 1, n - 1, kd > n), and the failure statuses.

mod common;

use common::{max_abs, patch_matrix, to_band};
use desi_device::linalg::{banded, banded_cpu};
use desi_device::Status;
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EPS: f64 = f64::EPSILON;

/// Worst `|a - e|` (NaN counts as infinite).
fn max_diff(a: &[f64], e: &[f64]) -> f64 {
    assert_eq!(a.len(), e.len());
    a.iter()
        .zip(e)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        })
        .fold(0.0, f64::max)
}

/// Random symmetric band matrix with half-bandwidth `kd`, SPD by diagonal dominance, then
/// scaled symmetrically by random factors in [0.5, 2] (κ up to ~10³).
fn random_band_spd(n: usize, kd: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut m = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i.saturating_sub(kd)..i {
            let v = rng.random_range(-1.0..1.0);
            m[i * n + j] = v;
            m[j * n + i] = v;
        }
    }
    for i in 0..n {
        let off: f64 = (0..n).filter(|&j| j != i).map(|j| m[i * n + j].abs()).sum();
        m[i * n + i] = (off + 0.1) * rng.random_range(1.0..1.5);
    }
    let scale: Vec<f64> = (0..n).map(|_| rng.random_range(0.5..2.0)).collect();
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] *= scale[i] * scale[j];
        }
    }
    m
}

/// Dense lower-triangular `L` from band storage.
fn from_band(ab: &[f64], n: usize, kd: usize) -> Vec<f64> {
    let w = kd + 1;
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in i.saturating_sub(kd)..=i {
            l[i * n + j] = ab[i * w + (j + kd - i)];
        }
    }
    l
}

/// The float64 reference inverse (nalgebra LU) and κ(M) (eigenvalues).
fn reference_inverse(m: &[f64], n: usize) -> (Vec<f64>, f64) {
    let a = DMatrix::from_row_slice(n, n, m);
    let eig = a.clone().symmetric_eigenvalues();
    let cond = eig.max() / eig.min();
    let inv = a.try_inverse().expect("reference inverse");
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            c[i * n + j] = inv[(i, j)];
        }
    }
    (c, cond)
}

/// Blocks `first..first + count` of the interleaved diagonal blocks of a dense `(n, n)` `C`.
fn reference_blocks(c: &[f64], n: usize, nblock: usize, first: usize, count: usize) -> Vec<f64> {
    let bs = n / nblock;
    let mut out = vec![0.0; count * bs * bs];
    for i in 0..count {
        let b = first + i;
        for r in 0..bs {
            for s in 0..bs {
                out[(i * bs + r) * bs + s] = c[(r * nblock + b) * n + (s * nblock + b)];
            }
        }
    }
    out
}

/// Factors `m` with both routines; checks the blocked factor's residual `‖L Lᵀ − M‖_F <=
/// 2·n·eps·‖M‖_F`, its zeroed outside slots, and its agreement with the serial factor
/// within `n·eps·κ·max|L|`. Returns the blocked factor in band storage.
fn factor_both(m: &[f64], n: usize, kd: usize, cond: f64, what: &str) -> Vec<f64> {
    let mut ab = to_band(m, n, kd);
    let mut ab_serial = ab.clone();
    let mut work = vec![f64::NAN; banded_cpu::band_factor_work_len(kd)];
    assert_eq!(
        banded_cpu::band_factor(&mut ab, n, kd, &mut work),
        Status::Ok,
        "{what}: blocked factor"
    );
    assert_eq!(banded::band_factor(&mut ab_serial, n, kd), Status::Ok);
    let w = kd + 1;
    for i in 0..n.min(kd) {
        for p in 0..kd - i {
            assert_eq!(ab[i * w + p], 0.0, "{what}: outside slot ({i}, {p})");
        }
    }
    let l = from_band(&ab, n, kd);
    let la = DMatrix::from_row_slice(n, n, &l);
    let res = &la * la.transpose() - DMatrix::from_row_slice(n, n, m);
    let rel = res.norm() / DMatrix::from_row_slice(n, n, m).norm();
    assert!(
        rel <= 2.0 * n.max(1) as f64 * EPS,
        "{what}: ‖LLᵀ−M‖/‖M‖ = {rel:e}"
    );
    let l_serial = from_band(&ab_serial, n, kd);
    let tol = n.max(1) as f64 * EPS * cond * max_abs(&l_serial);
    let d = max_diff(&l, &l_serial);
    assert!(d <= tol, "{what}: blocked vs serial L: {d:e} > {tol:e}");
    ab
}

/// Covariance blocks `first..first + count` from the blocked routine, checked against the
/// dense reference inverse (`rel_tol` relative to max|C_bb|) and the serial engine
/// (`n·eps·κ` relative), and for exact symmetry. Returns the worst relative difference
/// from the reference.
#[allow(clippy::too_many_arguments)]
fn check_cov(
    ab: &[f64],
    c_ref: &[f64],
    n: usize,
    kd: usize,
    nblock: usize,
    first: usize,
    count: usize,
    rel_tol: f64,
    cond: f64,
    what: &str,
) -> f64 {
    let bs = n / nblock;
    let mut out = vec![f64::NAN; count * bs * bs];
    let mut work = vec![f64::NAN; banded_cpu::band_covariance_block_range_work_len(n, kd, nblock)];
    assert_eq!(
        banded_cpu::band_covariance_block_range(ab, n, kd, nblock, first, &mut out, &mut work),
        Status::Ok,
        "{what}"
    );
    let expected = reference_blocks(c_ref, n, nblock, first, count);
    let scale = max_abs(&expected);
    let rel = max_diff(&out, &expected) / scale;
    assert!(
        rel <= rel_tol,
        "{what}: blocks {first}..{}: max |C - C_ref| / max|C_ref| = {rel:e} > {rel_tol:e}",
        first + count
    );
    let mut serial = vec![f64::NAN; count * bs * bs];
    let mut work = vec![f64::NAN; banded::band_covariance_blocks_work_len(n, kd, nblock)];
    assert_eq!(
        banded::band_covariance_block_range(ab, n, kd, nblock, first, &mut serial, &mut work),
        Status::Ok
    );
    let tol = 4.0 * n as f64 * EPS * cond;
    let rel_serial = max_diff(&out, &serial) / scale;
    assert!(
        rel_serial <= tol,
        "{what}: vs serial engine {rel_serial:e} > {tol:e}"
    );
    for i in 0..count {
        for r in 0..bs {
            for s in 0..r {
                let (x, y) = (out[(i * bs + r) * bs + s], out[(i * bs + s) * bs + r]);
                assert_eq!(x, y, "{what}: block {i} not symmetric at ({r}, {s})");
            }
        }
    }
    rel
}

/// The production shapes: nspecpad = 7 (n = 518) and the edge patch nspecpad = 6 (n = 444),
/// nwave = 74, κ = 400: every core range (5 core fibers, fewer at the bundle edges, one,
/// all) agrees with the dense float64 inverse to 1e-12 of max|C_bb|.
#[test]
fn patch_blocks_match_dense_inverse() {
    for (nspec, seed) in [(7usize, 21u64), (6, 22), (5, 23)] {
        let nwave = 74;
        let n = nspec * nwave;
        let kd = 8 * nspec + 2;
        let (m, cond) = patch_matrix(nspec, nwave, seed);
        let ab = factor_both(&m, n, kd, cond, &format!("patch nspec={nspec}"));
        let (c_ref, _) = reference_inverse(&m, n);
        let mut ranges = vec![(0, nspec), (0, 1), (nspec - 1, 1)];
        if nspec >= 7 {
            ranges.push((1, 5));
        }
        if nspec >= 4 {
            ranges.push((2, nspec - 3));
            ranges.push((0, 3));
        }
        let mut worst = 0.0f64;
        for (first, count) in ranges {
            let what = format!("patch nspec={nspec}");
            let rel = check_cov(&ab, &c_ref, n, kd, nspec, first, count, 1e-12, cond, &what);
            worst = worst.max(rel);
        }
        eprintln!("patch nspec={nspec} n={n}: worst |C - C_ref| / max|C_ref| = {worst:.2e}");
    }
}

/// Edge-case sizes and bandwidths (diagonal, tridiagonal, dense, kd > n, sizes around one
/// 74-bin block and the two patch sizes), every small block count and nblock = n.
#[test]
fn random_sizes_and_bandwidths() {
    for (s, &n) in [1usize, 2, 5, 17, 73, 74, 75, 148, 444].iter().enumerate() {
        let mut kds = vec![0, 1, 2, 7, 15, 16, 17, 58, n.saturating_sub(1), n + 3];
        kds.sort_unstable();
        kds.dedup();
        for (t, &kd) in kds.iter().enumerate() {
            if n > 200 && kd > 64 {
                continue;
            }
            let seed = 500 + 31 * s as u64 + t as u64;
            let m = random_band_spd(n, kd, seed);
            let (c_ref, cond) = reference_inverse(&m, n);
            let what = format!("n={n} kd={kd}");
            let ab = factor_both(&m, n, kd, cond, &what);
            let mut nblocks: Vec<usize> = (1..=8).filter(|d| n.is_multiple_of(*d)).collect();
            nblocks.push(n);
            nblocks.dedup();
            for nblock in nblocks {
                // Forward error of an inverse: a few n·eps·κ relative to max|C|.
                let tol = 4.0 * n as f64 * EPS * cond;
                let what = format!("{what} nblock={nblock}");
                check_cov(&ab, &c_ref, n, kd, nblock, 0, nblock, tol, cond, &what);
                if nblock > 2 {
                    check_cov(&ab, &c_ref, n, kd, nblock, 1, nblock - 2, tol, cond, &what);
                }
            }
        }
    }
}

/// The serial and the blocked factor stop with the same status on the same bad pivot.
#[test]
fn factor_failures() {
    let mut work = vec![0.0; banded_cpu::band_factor_work_len(1)];
    // Indefinite (eigenvalues 3 and -1), singular, negative first pivot.
    for m in [
        [1.0, 2.0, 2.0, 1.0],
        [1.0, 1.0, 1.0, 1.0],
        [-1.0, 0.0, 0.0, 1.0],
    ] {
        let mut ab = to_band(&m, 2, 1);
        assert_eq!(
            banded_cpu::band_factor(&mut ab, 2, 1, &mut work),
            Status::NotPositiveDefinite
        );
    }
    let mut ab = to_band(&[f64::NAN, 0.0, 0.0, 1.0], 2, 1);
    assert_eq!(
        banded_cpu::band_factor(&mut ab, 2, 1, &mut work),
        Status::NonFinite
    );
    // A pivot that fails only after the trailing updates of earlier panels (column 40 of a
    // patch matrix made indefinite there), at the same column as the serial factor.
    let (nspec, nwave) = (7, 74);
    let n = nspec * nwave;
    let kd = 8 * nspec + 2;
    let (mut m, _) = patch_matrix(nspec, nwave, 5);
    m[40 * n + 40] = -1.0;
    let mut ab = to_band(&m, n, kd);
    let mut ab_serial = ab.clone();
    let mut work = vec![0.0; banded_cpu::band_factor_work_len(kd)];
    assert_eq!(
        banded_cpu::band_factor(&mut ab, n, kd, &mut work),
        Status::NotPositiveDefinite
    );
    assert_eq!(
        banded::band_factor(&mut ab_serial, n, kd),
        Status::NotPositiveDefinite
    );
    let mut m_inf = m.clone();
    m_inf[40 * n + 40] = f64::INFINITY;
    let mut ab = to_band(&m_inf, n, kd);
    assert_eq!(
        banded_cpu::band_factor(&mut ab, n, kd, &mut work),
        Status::NonFinite
    );
    // Bad shapes.
    let mut ab = vec![1.0; 5];
    assert_eq!(
        banded_cpu::band_factor(&mut ab, 2, 1, &mut work),
        Status::BadShape
    );
    let mut ab = to_band(&[4.0, 1.0, 1.0, 4.0], 2, 1);
    assert_eq!(
        banded_cpu::band_factor(&mut ab, 2, 1, &mut []),
        Status::BadShape
    );
}

/// Bad factors and bad shapes of the covariance blocks give the serial routine's statuses.
#[test]
fn covariance_failures() {
    let (n, kd, nblock) = (8, 2, 2);
    let m = random_band_spd(n, kd, 3);
    let mut ab = to_band(&m, n, kd);
    let mut work = vec![0.0; banded_cpu::band_factor_work_len(kd)];
    assert_eq!(
        banded_cpu::band_factor(&mut ab, n, kd, &mut work),
        Status::Ok
    );
    let len = banded_cpu::band_covariance_block_range_work_len(n, kd, nblock);
    let mut work = vec![0.0; len];
    let mut out = vec![0.0; 2 * 16];
    let w = kd + 1;
    for (value, status) in [
        (0.0, Status::NotPositiveDefinite),
        (-1.0, Status::NotPositiveDefinite),
        (f64::NAN, Status::NonFinite),
        (f64::INFINITY, Status::NonFinite),
    ] {
        let mut bad = ab.clone();
        bad[5 * w + kd] = value;
        assert_eq!(
            banded_cpu::band_covariance_block_range(&bad, n, kd, nblock, 0, &mut out, &mut work),
            status
        );
    }
    // A non-finite off-diagonal entry: the result is not finite.
    let mut bad = ab.clone();
    bad[5 * w + kd - 1] = f64::NAN;
    assert_eq!(
        banded_cpu::band_covariance_block_range(&bad, n, kd, nblock, 0, &mut out, &mut work),
        Status::NonFinite
    );
    let cov = banded_cpu::band_covariance_block_range;
    assert_eq!(cov(&ab, n, kd, 3, 0, &mut out, &mut work), Status::BadShape);
    assert_eq!(cov(&ab, n, kd, 0, 0, &mut out, &mut work), Status::BadShape);
    assert_eq!(
        cov(&ab, n, kd, nblock, 1, &mut out, &mut work),
        Status::BadShape
    );
    assert_eq!(
        cov(&ab, n, kd, nblock, 0, &mut out[..15], &mut work),
        Status::BadShape
    );
    assert_eq!(
        cov(&ab, n, kd, nblock, 0, &mut out, &mut work[..len - 1]),
        Status::BadShape
    );
    assert_eq!(
        cov(&ab[1..], n, kd, nblock, 0, &mut out, &mut work),
        Status::BadShape
    );
    assert_eq!(
        banded_cpu::band_covariance_block_range_work_len(n, kd, 3),
        0
    );
    // Sizes that overflow: no work length, and BadShape rather than a panic.
    let huge = usize::MAX - 5;
    assert_eq!(
        banded_cpu::band_covariance_block_range_work_len(0, huge, 1),
        0
    );
    assert_eq!(
        cov(&[], 0, huge, 1, 0, &mut [], &mut work),
        Status::BadShape
    );
    assert_eq!(banded_cpu::band_factor_work_len(huge), 0);
    assert_eq!(
        banded_cpu::band_factor(&mut [], 0, huge, &mut work),
        Status::BadShape
    );
    // The work content on entry does not matter.
    let mut a = vec![0.0; 2 * 16];
    let mut b = vec![0.0; 2 * 16];
    work.fill(f64::NAN);
    assert_eq!(cov(&ab, n, kd, nblock, 0, &mut a, &mut work), Status::Ok);
    work.fill(1.0e300);
    assert_eq!(cov(&ab, n, kd, nblock, 0, &mut b, &mut work), Status::Ok);
    assert_eq!(a, b);
}
