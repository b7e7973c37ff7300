//! Tests of the cooperative banded Cholesky routines (`desi_device::linalg::banded_team`)
//! against the serial ones (`linalg::banded`), with the host emulation of a thread block.
//!
//! Every routine runs under `SerialTeam` at 1, 32, 59, 64, 128 and 256 lanes (below, at and
//! above the `kd + 1 = 59` rows of a column, the 74 columns and 111 tasks of a covariance
//! phase) and under `ReverseTeam` (the lanes of a phase in reverse order), which must give
//! bitwise the same results: a lane reading what another lane writes in the same phase
//! would see a different value in one of the two orders.
//!
//! Matrices: the realistic patch structure of `tests/cholesky.rs` (nspec fibers x 74 bins,
//! wavelength-major, |dfiber| <= 2, |dwave| <= 8, condition number 400; kd = 8·nspec + 2 =
//! 50 / 58) for nspec 6 and 7, and its leading `(n, n)` corners for n = 1, 2, 5, 74 at
//! kd = 58 (dense bands).

mod common;

use common::{max_abs, patch_matrix, to_band, ReverseTeam};
use desi_device::linalg::banded::{band_covariance_block_range, band_factor, band_solve};
use desi_device::linalg::banded_team::{
    band_back_solve_blocked_team, band_back_solve_team, band_factor_forward_team, band_factor_team,
    band_factor_team_window_len, band_solve_team, covariance_block_team, covariance_block_team_lds,
    covariance_block_team_ring_len,
};
use desi_device::team::{SerialTeam, Shared, Team};
use desi_device::Status;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Lane counts of the brief: one lane, a warp, kd + 1, two warps, 4 and 8 warps.
const LANES: [usize; 6] = [1, 32, 59, 64, 128, 256];

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

/// Asserts `|actual[i] - expected[i]| <= tol` for every i (NaN fails), reporting the worst
/// index with its actual and expected values.
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

/// Asserts bitwise equality (NaN payloads included), reporting the first difference.
fn assert_bitwise(actual: &[f64], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    if let Some(i) = (0..actual.len()).find(|&i| actual[i].to_bits() != expected[i].to_bits()) {
        panic!(
            "{what}: index {i}: actual {:e}, expected {:e} (not bitwise equal)",
            actual[i], expected[i]
        );
    }
}

/// Leading `(k, k)` corner of a row-major `(n, n)` matrix.
fn corner(m: &[f64], n: usize, k: usize) -> Vec<f64> {
    (0..k * k).map(|e| m[(e / k) * n + e % k]).collect()
}

/// A test case: name, band `(n, kd)` of an SPD matrix, block count for the covariance.
struct Case {
    name: String,
    ab: Vec<f64>,
    n: usize,
    kd: usize,
    nblock: usize,
}

/// The realistic patches (nspec 7, 6, 2 and 1: n = 518 / 444 / 148 / 74, kd = 58 / 50 / 18 /
/// 10, so that the covariance's 8-row groups end at every offset) and the corners n = 1, 2, 5, 74 of
/// the nspec = 7 patch at kd = 58 (dense bands, kd >= n - 1).
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let m7 = patch_matrix(7, 74, 11).0;
    for (nspec, seed) in [(7usize, 11u64), (6, 12), (2, 13), (1, 14)] {
        let n = nspec * 74;
        let kd = 8 * nspec + 2;
        let m = if nspec == 7 {
            m7.clone()
        } else {
            patch_matrix(nspec, 74, seed).0
        };
        cases.push(Case {
            name: format!("patch nspec={nspec}"),
            ab: to_band(&m, n, kd),
            n,
            kd,
            nblock: nspec,
        });
    }
    for (k, nblock) in [(1usize, 1usize), (2, 2), (5, 5), (74, 2)] {
        let kd = 58;
        cases.push(Case {
            name: format!("corner n={k}"),
            ab: to_band(&corner(&m7, 7 * 74, k), k, kd),
            n: k,
            kd,
            nblock,
        });
    }
    cases
}

/// Runs `band_factor_team` on a copy of `ab`; returns the status and the band.
fn factor_team<T: Team>(team: &T, ab: &[f64], n: usize, kd: usize) -> (Status, Vec<f64>) {
    let mut out = ab.to_vec();
    let mut window = vec![f64::NAN; band_factor_team_window_len(kd)];
    let status = band_factor_team(team, Shared::new(&mut out), n, kd, Shared::new(&mut window));
    (status, out)
}

/// Runs `band_factor_forward_team` + `band_back_solve_team`; returns status, band, x.
fn factor_solve_team<T: Team>(
    team: &T,
    ab: &[f64],
    n: usize,
    kd: usize,
    rhs: &[f64],
) -> (Status, Vec<f64>, Vec<f64>) {
    let mut band = ab.to_vec();
    let mut x = rhs.to_vec();
    let mut window = vec![f64::NAN; band_factor_team_window_len(kd)];
    let (b, w, xs) = (
        Shared::new(&mut band),
        Shared::new(&mut window),
        Shared::new(&mut x),
    );
    let mut status = band_factor_forward_team(team, b, n, kd, w, xs);
    if status == Status::Ok {
        status = band_back_solve_team(team, b, n, kd, w, xs);
    }
    (status, band, x)
}

/// Runs `covariance_block_team` for one block; returns the status and `C_bb`. Also runs
/// `covariance_block_team_lds` (the GPU's `covariance_team_lds`) on fresh scratch and
/// requires the same status and, on success, bitwise the same `C_bb`.
#[allow(clippy::too_many_arguments)]
fn cov_team<T: Team>(
    team: &T,
    l: &[f64],
    n: usize,
    kd: usize,
    nblock: usize,
    block: usize,
) -> (Status, Vec<f64>) {
    let (status, out) = cov_team_variant(team, l, n, kd, nblock, block, false);
    let (status_lds, out_lds) = cov_team_variant(team, l, n, kd, nblock, block, true);
    let what = format!(
        "n={n} kd={kd} nblock={nblock} block={block} lanes={}",
        team.lanes()
    );
    assert_eq!(status_lds, status, "{what}: lds status");
    if status == Status::Ok {
        assert_bitwise(&out_lds, &out, &format!("{what}: lds"));
    }
    (status, out)
}

/// One covariance block by `covariance_block_team` or (`lds`) `covariance_block_team_lds`,
/// output and scratch starting as NaN.
#[allow(clippy::too_many_arguments)]
fn cov_team_variant<T: Team>(
    team: &T,
    l: &[f64],
    n: usize,
    kd: usize,
    nblock: usize,
    block: usize,
    lds: bool,
) -> (Status, Vec<f64>) {
    let bs = n / nblock;
    let mut l = l.to_vec();
    let mut out = vec![f64::NAN; bs * bs];
    let mut ring = vec![f64::NAN; covariance_block_team_ring_len(n, kd, nblock)];
    let (ab, outv, ringv) = (
        Shared::new(&mut l),
        Shared::new(&mut out),
        Shared::new(&mut ring),
    );
    let status = if lds {
        // SAFETY: host memory (the shared-memory requirement is the GPU's).
        unsafe { covariance_block_team_lds(team, ab, n, kd, nblock, block, outv, ringv) }
    } else {
        covariance_block_team(team, ab, n, kd, nblock, block, outv, ringv)
    };
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

fn random_vector(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

// ------------------------------------------------------------------------------------------
// Results
// ------------------------------------------------------------------------------------------

#[test]
fn factor_is_bitwise_band_factor() {
    for case in cases() {
        let (n, kd) = (case.n, case.kd);
        let mut expected = case.ab.clone();
        assert_eq!(
            band_factor(&mut expected, n, kd),
            Status::Ok,
            "{}",
            case.name
        );
        for lanes in LANES {
            let (status, l) = factor_team(&SerialTeam { lanes }, &case.ab, n, kd);
            assert_eq!(status, Status::Ok, "{} lanes={lanes}", case.name);
            assert_bitwise(&l, &expected, &format!("{} lanes={lanes}", case.name));
            let (status, l) = factor_team(&ReverseTeam { lanes }, &case.ab, n, kd);
            assert_eq!(status, Status::Ok, "{} reverse lanes={lanes}", case.name);
            assert_bitwise(
                &l,
                &expected,
                &format!("{} reverse lanes={lanes}", case.name),
            );
        }
    }
}

#[test]
fn solve_matches_band_solve() {
    for case in cases() {
        let (n, kd) = (case.n, case.kd);
        let mut l = case.ab.clone();
        assert_eq!(band_factor(&mut l, n, kd), Status::Ok);
        let rhs = random_vector(n, 7 + n as u64);
        let mut expected = rhs.clone();
        assert_eq!(band_solve(&l, n, kd, &mut expected), Status::Ok);
        // The forward sums run in another order (column- vs row-oriented): both solutions
        // are within n·eps·κ (κ = 400) of the truth; 1e-13 of max|x| covers it.
        let tol = 1e-13 * max_abs(&expected);
        let mut first: Option<Vec<f64>> = None;
        for lanes in LANES {
            for reverse in [false, true] {
                let what = format!("{} lanes={lanes} reverse={reverse}", case.name);
                let (status, band, x) = if reverse {
                    factor_solve_team(&ReverseTeam { lanes }, &case.ab, n, kd, &rhs)
                } else {
                    factor_solve_team(&SerialTeam { lanes }, &case.ab, n, kd, &rhs)
                };
                assert_eq!(status, Status::Ok, "{what}");
                assert_bitwise(&band, &l, &format!("{what}: fused factor"));
                assert_close(&x, &expected, tol, &format!("{what}: fused x"));
                // Every lane count and order gives the same bits.
                match &first {
                    None => first = Some(x.clone()),
                    Some(f) => assert_bitwise(&x, f, &format!("{what}: fused x vs 1 lane")),
                }
                // The standalone solve is the same computation as the fused one.
                let mut xs = rhs.clone();
                let mut lc = l.clone();
                let mut window = vec![f64::NAN; band_factor_team_window_len(kd)];
                let status = band_solve_team(
                    &SerialTeam { lanes },
                    Shared::new(&mut lc),
                    n,
                    kd,
                    Shared::new(&mut window),
                    Shared::new(&mut xs),
                );
                assert_eq!(status, Status::Ok, "{what}: solve");
                assert_bitwise(&xs, &x, &format!("{what}: solve vs fused"));
                assert_bitwise(&lc, &l, &format!("{what}: solve leaves L"));
            }
        }
    }
}

/// The blocked back substitution (`factor_solve_blocked`) against the serial `band_solve` and
/// the dense solve of the patch matrix, after the fused factor and forward substitution, at
/// every lane count in both lane orders (the same bits for all: each sum has one owner and a
/// fixed order); the scratch starts as NaN.
#[test]
fn blocked_back_solve_matches_band_solve() {
    for case in cases() {
        let (n, kd) = (case.n, case.kd);
        let mut l = case.ab.clone();
        assert_eq!(band_factor(&mut l, n, kd), Status::Ok);
        let rhs = random_vector(n, 70 + n as u64);
        let mut expected = rhs.clone();
        assert_eq!(band_solve(&l, n, kd, &mut expected), Status::Ok);
        // As solve_matches_band_solve: n·eps·κ (κ = 400) of the truth.
        let tol = 1e-13 * max_abs(&expected);
        let mut first: Option<Vec<f64>> = None;
        for lanes in LANES {
            for reverse in [false, true] {
                let what = format!("{} lanes={lanes} reverse={reverse}", case.name);
                let mut band = case.ab.clone();
                let mut x = rhs.clone();
                let mut window = vec![f64::NAN; band_factor_team_window_len(kd)];
                let (b, w, xs) = (
                    Shared::new(&mut band),
                    Shared::new(&mut window),
                    Shared::new(&mut x),
                );
                let status = if reverse {
                    let team = ReverseTeam { lanes };
                    let s = band_factor_forward_team(&team, b, n, kd, w, xs);
                    assert_eq!(s, Status::Ok, "{what}: factor");
                    band_back_solve_blocked_team(&team, b, n, kd, w, xs)
                } else {
                    let team = SerialTeam { lanes };
                    let s = band_factor_forward_team(&team, b, n, kd, w, xs);
                    assert_eq!(s, Status::Ok, "{what}: factor");
                    band_back_solve_blocked_team(&team, b, n, kd, w, xs)
                };
                assert_eq!(status, Status::Ok, "{what}");
                assert_bitwise(&band, &l, &format!("{what}: factor"));
                assert_close(&x, &expected, tol, &format!("{what}: x"));
                match &first {
                    None => first = Some(x),
                    Some(f) => assert_bitwise(&x, f, &format!("{what}: x vs the first")),
                }
            }
        }
        // Against the dense float64 solve of the matrix itself (not only of its factor).
        if n > 1 && case.name.starts_with("patch") {
            let m = nalgebra::DMatrix::from_fn(n, n, |i, j| {
                let (r, c) = (i.max(j), i.min(j));
                if r - c <= kd {
                    case.ab[r * (kd + 1) + c + kd - r]
                } else {
                    0.0
                }
            });
            let dense = m
                .cholesky()
                .expect("SPD")
                .solve(&nalgebra::DVector::from_column_slice(&rhs));
            let x = first.expect("ran");
            assert_close(
                &x,
                dense.as_slice(),
                1e-12 * max_abs(dense.as_slice()),
                &format!("{}: dense", case.name),
            );
        }
    }
}

/// Bad shapes of the blocked back substitution: nothing written.
#[test]
fn blocked_back_solve_bad_shapes() {
    let team = SerialTeam { lanes: 32 };
    let (n, kd) = (10, 3);
    let mut ab = vec![1.0; n * (kd + 1)];
    let mut window = vec![0.0; band_factor_team_window_len(kd)];
    let mut rhs = vec![2.0; n];
    let (b, w) = (Shared::new(&mut ab), Shared::new(&mut window));
    assert_eq!(
        band_back_solve_blocked_team(&team, b, n, kd, w, Shared::new(&mut rhs[..n - 1])),
        Status::BadShape
    );
    assert_eq!(
        band_back_solve_blocked_team(
            &team,
            b,
            n,
            kd,
            w.sub(0, w.len() - 1),
            Shared::new(&mut rhs)
        ),
        Status::BadShape
    );
    assert_eq!(
        band_back_solve_blocked_team(&team, b, n + 1, kd, w, Shared::new(&mut rhs)),
        Status::BadShape
    );
    assert!(rhs.iter().all(|&v| v == 2.0));
}

#[test]
fn covariance_matches_serial_blocks() {
    for case in cases() {
        let (n, kd, nblock) = (case.n, case.kd, case.nblock);
        let mut l = case.ab.clone();
        assert_eq!(band_factor(&mut l, n, kd), Status::Ok);
        for block in 0..nblock {
            let (status, expected) = cov_serial(&l, n, kd, nblock, block);
            assert_eq!(status, Status::Ok, "{} block {block}", case.name);
            // Sums of the same terms in another order: a few eps·κ relative to max|C_bb|.
            let tol = 1e-13 * max_abs(&expected);
            // All lane counts on the first block and the last, one count on the others.
            let lane_counts: &[usize] = if block == 0 || block + 1 == nblock {
                &LANES
            } else {
                &[128]
            };
            let mut first: Option<Vec<f64>> = None;
            for &lanes in lane_counts {
                let what = format!("{} block {block} lanes={lanes}", case.name);
                let (status, c) = cov_team(&SerialTeam { lanes }, &l, n, kd, nblock, block);
                assert_eq!(status, Status::Ok, "{what}");
                assert_close(&c, &expected, tol, &what);
                let bs = n / nblock;
                for r in 0..bs {
                    for col in 0..r {
                        assert_eq!(
                            c[r * bs + col].to_bits(),
                            c[col * bs + r].to_bits(),
                            "{what}: symmetry ({r}, {col})"
                        );
                    }
                }
                let (status, cr) = cov_team(&ReverseTeam { lanes }, &l, n, kd, nblock, block);
                assert_eq!(status, Status::Ok, "{what} reverse");
                assert_bitwise(&cr, &c, &format!("{what}: reverse"));
                match &first {
                    None => first = Some(c),
                    Some(f) => assert_bitwise(&c, f, &format!("{what}: vs first lane count")),
                }
            }
        }
    }
}

/// A random SPD band matrix (band storage): off-diagonals uniform in (-1, 1) inside the band,
/// diagonal `2·kd + 1 + u` (strictly diagonally dominant).
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

/// The covariance layouts on other shapes: odd block sizes (13, 37 with tiles past the edge),
/// `kd` below, at and above the 8 rows of a group (kd = 0, 1, 7, 8, 33, 35), the tile-major
/// accumulators on all of them (the row-major ones run in `covariance_matches_serial_blocks`:
/// the nspec 1 and 2 patches, kd = 10, 18), and the ring at both alignments
/// (its first value at an odd f64 index: the 16-byte aligned `L` staging then starts one
/// value later). The scratch and the output start as NaN, so a value read from the padding
/// or the alignment slack would show.
#[test]
fn covariance_layouts_odd_shapes_and_alignment() {
    for (n, kd, nblock, seed) in [
        (39usize, 0usize, 3usize, 21u64),
        (39, 1, 3, 22),
        (39, 7, 3, 23),
        (52, 8, 4, 24),
        (65, 33, 5, 25),
        (222, 35, 3, 26),
    ] {
        let mut l = banded_spd(n, kd, seed);
        assert_eq!(band_factor(&mut l, n, kd), Status::Ok);
        let bs = n / nblock;
        for block in 0..nblock {
            let (status, expected) = cov_serial(&l, n, kd, nblock, block);
            assert_eq!(status, Status::Ok);
            let tol = 1e-13 * max_abs(&expected);
            let mut first: Option<Vec<f64>> = None;
            for lanes in [32usize, 128] {
                for offset in [0usize, 1] {
                    let what = format!(
                        "n={n} kd={kd} nblock={nblock} block={block} lanes={lanes} offset={offset}"
                    );
                    let mut lc = l.clone();
                    let mut out = vec![f64::NAN; bs * bs];
                    let len = covariance_block_team_ring_len(n, kd, nblock);
                    let mut ring = vec![f64::NAN; len + 1];
                    let status = covariance_block_team(
                        &SerialTeam { lanes },
                        Shared::new(&mut lc),
                        n,
                        kd,
                        nblock,
                        block,
                        Shared::new(&mut out),
                        Shared::new(&mut ring[offset..offset + len]),
                    );
                    assert_eq!(status, Status::Ok, "{what}");
                    assert_close(&out, &expected, tol, &what);
                    // The LDS variant on the same ring alignment: bitwise the same.
                    let mut lc = l.clone();
                    let mut out_lds = vec![f64::NAN; bs * bs];
                    let mut ring = vec![f64::NAN; len + 1];
                    // SAFETY: host memory (the shared-memory requirement is the GPU's).
                    let status = unsafe {
                        covariance_block_team_lds(
                            &SerialTeam { lanes },
                            Shared::new(&mut lc),
                            n,
                            kd,
                            nblock,
                            block,
                            Shared::new(&mut out_lds),
                            Shared::new(&mut ring[offset..offset + len]),
                        )
                    };
                    assert_eq!(status, Status::Ok, "{what}: lds");
                    assert_bitwise(&out_lds, &out, &format!("{what}: lds"));
                    match &first {
                        None => first = Some(out),
                        Some(f) => assert_bitwise(&out, f, &format!("{what}: vs the first")),
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Failures
// ------------------------------------------------------------------------------------------

/// The nspec = 6 patch band (kd = 50) and the serial status of a modified copy.
fn patch_band() -> (Vec<f64>, usize, usize) {
    let n = 6 * 74;
    let kd = 50;
    (to_band(&patch_matrix(6, 74, 12).0, n, kd), n, kd)
}

#[test]
fn not_positive_definite_and_non_finite_statuses() {
    let (ab, n, kd) = patch_band();
    let w = kd + 1;
    let mut bad = Vec::new();
    // A negative diagonal half-way; a zero first pivot; a large negative last diagonal.
    for (i, v) in [(200usize, -1.0), (0, 0.0), (n - 1, -1.0e6)] {
        let mut a = ab.clone();
        a[i * w + kd] = v;
        bad.push((format!("diag {i} = {v}"), a));
    }
    // NaN / infinities on and off the diagonal, early, middle and last row.
    for (i, j) in [
        (0usize, 0usize),
        (37, 37),
        (37, 0),
        (300, 260),
        (n - 1, n - 1),
        (n - 1, n - 51),
    ] {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut a = ab.clone();
            a[i * w + (j + kd - i)] = v;
            bad.push((format!("({i}, {j}) = {v}"), a));
        }
    }
    for (what, a) in &bad {
        let mut serial = a.clone();
        let expected = band_factor(&mut serial, n, kd);
        assert_ne!(expected, Status::Ok, "{what}: serial");
        for lanes in [1, 59, 64] {
            let (status, _) = factor_team(&SerialTeam { lanes }, a, n, kd);
            assert_eq!(status, expected, "{what}: factor lanes={lanes}");
            let (status, _) = factor_team(&ReverseTeam { lanes }, a, n, kd);
            assert_eq!(status, expected, "{what}: factor reverse lanes={lanes}");
            let rhs = vec![1.0; n];
            let (status, _, _) = factor_solve_team(&SerialTeam { lanes }, a, n, kd, &rhs);
            assert_eq!(status, expected, "{what}: factor+forward lanes={lanes}");
        }
    }
}

#[test]
fn covariance_statuses() {
    let (ab, n, kd) = patch_band();
    let w = kd + 1;
    let mut l = ab.clone();
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
    // Two bad pivots: the first in order decides (the team splits the check over the lanes).
    for (first, second) in [
        ((3usize, f64::NAN), (100usize, 0.0)),
        ((70, -1.0), (5 + 64, f64::NAN)),
    ] {
        let mut a = l.clone();
        a[first.0 * w + kd] = first.1;
        a[second.0 * w + kd] = second.1;
        bad.push((
            format!(
                "diag {} = {} and {} = {}",
                first.0, first.1, second.0, second.1
            ),
            a,
        ));
    }
    // A NaN below the diagonal propagates into C_bb (NonFinite from the result).
    for (i, j) in [(100usize, 60usize), (n - 1, n - 2)] {
        let mut a = l.clone();
        a[i * w + (j + kd - i)] = f64::NAN;
        bad.push((format!("L({i}, {j}) = NaN"), a));
    }
    for (what, a) in &bad {
        for block in [0, 5] {
            let (expected, _) = cov_serial(a, n, kd, 6, block);
            assert_ne!(expected, Status::Ok, "{what}: serial");
            for lanes in [1, 64, 128] {
                let (status, _) = cov_team(&SerialTeam { lanes }, a, n, kd, 6, block);
                assert_eq!(status, expected, "{what}: block {block} lanes={lanes}");
                let (status, _) = cov_team(&ReverseTeam { lanes }, a, n, kd, 6, block);
                assert_eq!(
                    status, expected,
                    "{what}: block {block} reverse lanes={lanes}"
                );
            }
        }
    }
}

#[test]
fn bad_shapes() {
    let team = SerialTeam { lanes: 32 };
    let (n, kd) = (10, 3);
    let mut ab = vec![1.0; n * (kd + 1)];
    let mut short_ab = vec![1.0; n * (kd + 1) - 1];
    let mut window = vec![0.0; band_factor_team_window_len(kd)];
    let mut short_window = vec![0.0; band_factor_team_window_len(kd) - 1];
    let mut rhs = vec![0.0; n];
    let mut short_rhs = vec![0.0; n - 1];
    let (ab, short_ab) = (Shared::new(&mut ab), Shared::new(&mut short_ab));
    let (window, short_window) = (Shared::new(&mut window), Shared::new(&mut short_window));
    let (rhs, short_rhs) = (Shared::new(&mut rhs), Shared::new(&mut short_rhs));
    let bad = Status::BadShape;
    assert_eq!(band_factor_team(&team, short_ab, n, kd, window), bad);
    assert_eq!(band_factor_team(&team, ab, n, kd, short_window), bad);
    assert_eq!(
        band_factor_forward_team(&team, ab, n, kd, window, short_rhs),
        bad
    );
    assert_eq!(band_solve_team(&team, ab, n, kd, window, short_rhs), bad);
    assert_eq!(band_solve_team(&team, short_ab, n, kd, window, rhs), bad);
    assert_eq!(
        band_back_solve_team(&team, ab, n, kd, short_window, rhs),
        bad
    );
    let mut out = vec![0.0; 25];
    let mut ring = vec![0.0; covariance_block_team_ring_len(n, kd, 2)];
    let (out, ring) = (Shared::new(&mut out), Shared::new(&mut ring));
    assert_eq!(
        covariance_block_team(&team, ab, n, kd, 3, 0, out, ring),
        bad
    );
    assert_eq!(
        covariance_block_team(&team, ab, n, kd, 0, 0, out, ring),
        bad
    );
    assert_eq!(
        covariance_block_team(&team, ab, n, kd, 2, 2, out, ring),
        bad
    );
    assert_eq!(
        covariance_block_team(&team, short_ab, n, kd, 2, 0, out, ring),
        bad
    );
    assert_eq!(
        covariance_block_team(&team, ab, n, kd, 2, 0, out.sub(0, 24), ring),
        bad
    );
    let short_ring = ring.sub(0, ring.len() - 1);
    assert_eq!(
        covariance_block_team(&team, ab, n, kd, 2, 0, out, short_ring),
        bad
    );
    // The LDS variant checks the same shapes.
    for (ab, nblock, block, out, ring) in [
        (ab, 3, 0, out, ring),
        (ab, 0, 0, out, ring),
        (ab, 2, 2, out, ring),
        (short_ab, 2, 0, out, ring),
        (ab, 2, 0, out.sub(0, 24), ring),
        (ab, 2, 0, out, short_ring),
    ] {
        // SAFETY: host memory (the shared-memory requirement is the GPU's).
        let status =
            unsafe { covariance_block_team_lds(&team, ab, n, kd, nblock, block, out, ring) };
        assert_eq!(status, bad, "lds nblock={nblock} block={block}");
    }
    // n = 0 is valid and does nothing.
    let mut empty: Vec<f64> = Vec::new();
    let empty = Shared::new(&mut empty);
    assert_eq!(band_factor_team(&team, empty, 0, kd, window), Status::Ok);
    assert_eq!(
        band_solve_team(&team, empty, 0, kd, window, empty),
        Status::Ok
    );
}
