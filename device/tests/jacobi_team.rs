//! Tests of the cooperative inverse square root and resolution step
//! (device/src/linalg/jacobi_team.rs) against the serial `jacobi::inverse_sqrt` +
//! `patch::apply_resolution` + `patch::resolution_diagonals`, emulating the GPU thread block
//! with `SerialTeam` (lanes in order) and `ReverseTeam` (lanes in reverse order) at lane counts
//! 1, 32, 37, 64, 128, 256 (below, at and above the 37 pairs per step of a 74×74 block).
//!
//! The two emulations give bit-identical results only if no lane reads, within a phase, what
//! another lane writes in that phase (the phase rule of `desi_device::team`); comparing them
//! catches violations that the GPU would turn into races.

mod common;

use common::{covariance_block, max_abs, random_spd, ReverseTeam};
use desi_device::linalg::jacobi::{inverse_sqrt, inverse_sqrt_work_len, JacobiStats};
use desi_device::linalg::jacobi_team::{
    inverse_sqrt_team, inverse_sqrt_team_scratch_len, inverse_sqrt_team_with_stats,
    jacobi_team_scratch_len, resolution_team, resolution_team_shared_len, QUADRATIC_STOP,
};
use desi_device::patch::{apply_resolution, resolution_diagonals};
use desi_device::team::{SerialTeam, Shared, Team};
use desi_device::Status;
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LANES: [usize; 6] = [1, 32, 37, 64, 128, 256];
const EPS: f64 = f64::EPSILON;

// ---------------------------------------------------------------------------------------
// Matrix generators (as device/tests/jacobi.rs).
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Drivers.
// ---------------------------------------------------------------------------------------

/// Serial reference `C^(-1/2)`.
fn serial_inverse_sqrt(a: &[f64], n: usize) -> (Status, Vec<f64>) {
    let mut out = vec![f64::NAN; n * n];
    let mut work = vec![f64::NAN; inverse_sqrt_work_len(n)];
    let status = inverse_sqrt(a, n, &mut out, &mut work);
    (status, out)
}

/// Team `C^(-1/2)` (scratch pre-filled with NaN so that reads of unwritten scratch show).
fn team_inverse_sqrt<T: Team>(team: &T, a: &[f64], n: usize) -> (Status, Vec<f64>, JacobiStats) {
    let mut q = a.to_vec();
    let mut scratch = vec![f64::NAN; inverse_sqrt_team_scratch_len(n, team.lanes())];
    let mut stats = JacobiStats::default();
    let status = inverse_sqrt_team_with_stats(
        team,
        Shared::new(&mut q),
        n,
        Shared::new(&mut scratch),
        &mut stats,
    );
    (status, q, stats)
}

/// Outputs of one resolution step.
#[derive(Debug, PartialEq)]
struct Resolution {
    status: Status,
    flux: Vec<f64>,
    ivar: Vec<f64>,
    rdiags: Vec<f64>,
}

/// Geometry of the resolution test: xflux stride (nspecpad), ndiag, core bins, out stride.
const NSPECPAD: usize = 3;
const NDIAG: usize = 5;

fn core_range(n: usize) -> (usize, usize, usize) {
    let pad = (n / 8).min(10);
    let (k_min, k_max) = (pad, n - pad);
    (k_min, k_max, k_max - k_min + 3)
}

fn serial_resolution(cov: &[f64], n: usize, xflux: &[f64]) -> Resolution {
    let (k_min, k_max, out_stride) = core_range(n);
    let ndiagonal = 2 * NDIAG + 1;
    let (status, mut q) = serial_inverse_sqrt(cov, n);
    let mut res = Resolution {
        status,
        flux: vec![0.0; n],
        ivar: vec![0.0; n],
        rdiags: vec![0.0; ndiagonal * out_stride],
    };
    if status != Status::Ok {
        return res;
    }
    res.status = apply_resolution(&mut q, n, xflux, NSPECPAD, &mut res.flux, &mut res.ivar);
    if res.status != Status::Ok {
        return res;
    }
    res.status = resolution_diagonals(&q, n, NDIAG, k_min, k_max, &mut res.rdiags, out_stride);
    res
}

fn team_resolution<T: Team>(team: &T, cov: &[f64], n: usize, xflux: &[f64]) -> Resolution {
    let (k_min, k_max, out_stride) = core_range(n);
    let ndiagonal = 2 * NDIAG + 1;
    let mut a = cov.to_vec();
    let mut scratch = vec![f64::NAN; jacobi_team_scratch_len(n, team.lanes())];
    let mut res = Resolution {
        status: Status::Ok,
        flux: vec![0.0; n],
        ivar: vec![0.0; n],
        rdiags: vec![0.0; ndiagonal * out_stride],
    };
    let mut stats = JacobiStats::default();
    res.status = resolution_team(
        team,
        Shared::new(&mut a),
        n,
        xflux,
        NSPECPAD,
        NDIAG,
        k_min,
        k_max,
        Shared::new(&mut res.flux),
        Shared::new(&mut res.ivar),
        Shared::new(&mut res.rdiags),
        out_stride,
        Shared::new(&mut scratch),
        &mut stats,
    );
    res
}

/// |actual − expected| <= tol·scale elementwise, reporting the worst index.
fn assert_close(label: &str, actual: &[f64], expected: &[f64], tol: f64, scale: f64) -> f64 {
    assert_eq!(actual.len(), expected.len(), "{label}: lengths");
    let mut worst = 0.0f64;
    for (i, (x, e)) in actual.iter().zip(expected).enumerate() {
        let err = (x - e).abs();
        assert!(
            err <= tol * scale,
            "{label}: index {i} actual {x:e}, expected {e:e} (tol {:e})",
            tol * scale
        );
        worst = worst.max(err / scale);
    }
    worst
}

/// out·a·out ≈ I to 4·n·ε·κ (errors in out of relative size ~n·ε·κ, see tests/jacobi.rs).
fn assert_inverse_sqrt(label: &str, a: &[f64], q: &[f64], n: usize) {
    let am = DMatrix::from_row_slice(n, n, a);
    let qm = DMatrix::from_row_slice(n, n, q);
    let eig = am.clone().symmetric_eigen();
    let max = eig.eigenvalues.max();
    let cond = max / eig.eigenvalues.min().max(1e-14 * max);
    let tol = 4.0 * n as f64 * EPS * cond;
    let prod = &qm * am * &qm;
    for i in 0..n {
        for j in 0..n {
            let expected = if i == j { 1.0 } else { 0.0 };
            assert!(
                (prod[(i, j)] - expected).abs() <= tol,
                "{label}: (out·a·out)[{i}][{j}] actual {:e}, expected {expected} (tol {tol:e})",
                prod[(i, j)]
            );
        }
        for j in 0..i {
            assert_eq!(
                q[i * n + j].to_bits(),
                q[j * n + i].to_bits(),
                "{label}: out not symmetric at ({i}, {j})"
            );
        }
    }
}

/// Checks the team inverse square root of `a` at every lane count, in both lane orders.
fn check_inverse_sqrt_all_lanes(label: &str, a: &[f64], n: usize) {
    let (status, reference) = serial_inverse_sqrt(a, n);
    assert_eq!(status, Status::Ok, "{label} n={n}: serial status");
    let scale = max_abs(&reference).max(f64::MIN_POSITIVE);
    let mut worst = 0.0f64;
    let mut sweeps = Vec::new();
    for lanes in LANES {
        let (status, q, stats) = team_inverse_sqrt(&SerialTeam { lanes }, a, n);
        assert_eq!(status, Status::Ok, "{label} n={n} lanes={lanes}: status");
        let (rstatus, rq, rstats) = team_inverse_sqrt(&ReverseTeam { lanes }, a, n);
        assert_eq!(
            rstatus, status,
            "{label} n={n} lanes={lanes}: reverse status"
        );
        assert_eq!(rstats, stats, "{label} n={n} lanes={lanes}: reverse stats");
        for (i, (x, y)) in q.iter().zip(&rq).enumerate() {
            assert_eq!(
                x.to_bits(),
                y.to_bits(),
                "{label} n={n} lanes={lanes}: reverse lane order differs at {i}: {x:e} vs {y:e}"
            );
        }
        // Both are accurate to ~n·ε·sqrt(κ) relative to max|Q| (one-sided Jacobi on the
        // Cholesky factor); the covariance blocks here have κ <= 1e4: 1e-12 leaves room.
        worst = worst.max(assert_close(
            &format!("{label} n={n} lanes={lanes}: team vs serial"),
            &q,
            &reference,
            1e-12,
            scale,
        ));
        assert_inverse_sqrt(&format!("{label} n={n} lanes={lanes}"), a, &q, n);
        sweeps.push(stats.sweeps);
    }
    println!(
        "{label:>12} n={n:>3}: team vs serial max rel err {worst:.2e}, sweeps by lanes {sweeps:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[test]
fn inverse_sqrt_covariance_blocks_74() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for _ in 0..3 {
        let a = covariance_block(74, &mut rng);
        check_inverse_sqrt_all_lanes("covariance", &a, 74);
    }
}

#[test]
fn inverse_sqrt_odd_and_small_sizes() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    for n in [1, 2, 3, 73, 75] {
        let a = covariance_block(n, &mut rng);
        check_inverse_sqrt_all_lanes("covariance", &a, n);
        let a = random_spd(n, &mut rng);
        check_inverse_sqrt_all_lanes("spd", &a, n);
    }
}

#[test]
fn resolution_matches_serial() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for n in [1, 2, 3, 73, 74, 75] {
        let cov = covariance_block(n, &mut rng);
        let xflux: Vec<f64> = (0..(n - 1) * NSPECPAD + 1)
            .map(|_| rng.random_range(-5.0..100.0))
            .collect();
        let reference = serial_resolution(&cov, n, &xflux);
        assert_eq!(reference.status, Status::Ok, "n={n}: serial status");
        let mut worst = [0.0f64; 3];
        for lanes in LANES {
            let got = team_resolution(&SerialTeam { lanes }, &cov, n, &xflux);
            let reverse = team_resolution(&ReverseTeam { lanes }, &cov, n, &xflux);
            assert_eq!(got.status, Status::Ok, "n={n} lanes={lanes}: status");
            // Bit-identical in both lane orders (phase rule).
            let bits = |r: &Resolution| -> Vec<u64> {
                r.flux
                    .iter()
                    .chain(&r.ivar)
                    .chain(&r.rdiags)
                    .map(|x| x.to_bits())
                    .collect()
            };
            assert_eq!(
                bits(&got),
                bits(&reverse),
                "n={n} lanes={lanes}: reverse order"
            );
            // R, ivar and flux inherit Q's ~n·ε·sqrt(κ) relative error (see above): 1e-12 of
            // each output's largest magnitude.
            let label = format!("n={n} lanes={lanes}");
            worst[0] = worst[0].max(assert_close(
                &format!("{label} flux"),
                &got.flux,
                &reference.flux,
                1e-12,
                max_abs(&reference.flux),
            ));
            worst[1] = worst[1].max(assert_close(
                &format!("{label} ivar"),
                &got.ivar,
                &reference.ivar,
                1e-12,
                max_abs(&reference.ivar),
            ));
            worst[2] = worst[2].max(assert_close(
                &format!("{label} rdiags"),
                &got.rdiags,
                &reference.rdiags,
                1e-12,
                max_abs(&reference.rdiags),
            ));
        }
        println!(
            "n={n:>3}: max rel err flux {:.2e}, ivar {:.2e}, rdiags {:.2e}",
            worst[0], worst[1], worst[2]
        );
    }
}

/// Sweep counts of the round-robin ordering on realistic blocks (print with --nocapture);
/// bounded so that a convergence regression fails.
#[test]
fn sweep_counts_covariance_74() {
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let mut counts = Vec::new();
    for _ in 0..10 {
        let a = covariance_block(74, &mut rng);
        let (status, _, stats) = team_inverse_sqrt(&SerialTeam { lanes: 256 }, &a, 74);
        assert_eq!(status, Status::Ok);
        counts.push((stats.sweeps, stats.rotations));
    }
    println!("team 74x74 (sweeps, rotations): {counts:?}");
    for (i, &(sweeps, _)) in counts.iter().enumerate() {
        // The serial row-cyclic order needs 8-9; parallel orderings about one more. 12 as in
        // tests/jacobi.rs.
        assert!(
            sweeps <= 12,
            "block {i}: sweeps actual {sweeps}, expected <= 12"
        );
    }
}

#[test]
fn non_finite_input_is_reported() {
    let n = 33;
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for (i, j) in [(0, 0), (3, 5), (n - 1, n - 1)] {
            let mut a = random_spd(n, &mut rng);
            a[i * n + j] = bad;
            a[j * n + i] = bad;
            let xflux = vec![1.0; (n - 1) * NSPECPAD + 1];
            for lanes in [1, 37, 256] {
                let (status, _, _) = team_inverse_sqrt(&SerialTeam { lanes }, &a, n);
                assert_eq!(
                    status,
                    Status::NonFinite,
                    "{bad} at ({i}, {j}), lanes={lanes}"
                );
                let res = team_resolution(&ReverseTeam { lanes }, &a, n, &xflux);
                assert_eq!(
                    res.status,
                    Status::NonFinite,
                    "resolution: {bad} at ({i}, {j}), lanes={lanes}"
                );
            }
        }
    }
}

#[test]
fn indefinite_zero_and_rank_deficient() {
    let mut rng = ChaCha8Rng::seed_from_u64(26);
    for n in [2, 33, 74] {
        let team = SerialTeam { lanes: 64 };
        // SPD minus twice its largest diagonal entry: indefinite far beyond rounding.
        let mut a = random_spd(n, &mut rng);
        let shift = 2.0 * (0..n).map(|i| a[i * n + i]).fold(0.0, f64::max);
        for i in 0..n {
            a[i * n + i] -= shift;
        }
        assert_eq!(
            team_inverse_sqrt(&team, &a, n).0,
            Status::NotPositiveDefinite,
            "n={n}"
        );
        let zero = vec![0.0; n * n];
        assert_eq!(
            team_inverse_sqrt(&team, &zero, n).0,
            Status::NotPositiveDefinite,
            "n={n}"
        );
    }
    // Rank n/2: the clip triggers; same result as the serial code (see tests/jacobi.rs for the
    // 1e-10 tolerance: the clipped null space is determined to ~n·ε·κ_range).
    let n = 32;
    let g: Vec<f64> = (0..n * n / 2)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..n / 2)
                .map(|k| g[i * n / 2 + k] * g[j * n / 2 + k])
                .sum();
            a[i * n + j] = s;
            a[j * n + i] = s;
        }
    }
    let (status, reference) = serial_inverse_sqrt(&a, n);
    assert_eq!(status, Status::Ok);
    for lanes in LANES {
        let (status, q, _) = team_inverse_sqrt(&SerialTeam { lanes }, &a, n);
        assert_eq!(status, Status::Ok, "rank-deficient lanes={lanes}");
        let (_, rq, _) = team_inverse_sqrt(&ReverseTeam { lanes }, &a, n);
        assert_eq!(q, rq, "rank-deficient lanes={lanes}: reverse order");
        assert_close(
            &format!("rank-deficient lanes={lanes}"),
            &q,
            &reference,
            1e-10,
            max_abs(&reference),
        );
    }
}

#[test]
fn bad_shapes_are_reported() {
    let n = 10;
    let team = SerialTeam { lanes: 32 };
    let mut a = random_spd(n, &mut ChaCha8Rng::seed_from_u64(27));
    let mut scratch = vec![0.0; inverse_sqrt_team_scratch_len(n, 32) - 1];
    assert_eq!(
        inverse_sqrt_team(&team, Shared::new(&mut a), n, Shared::new(&mut scratch)),
        Status::BadShape
    );
    let mut scratch = vec![0.0; inverse_sqrt_team_scratch_len(n, 32)];
    assert_eq!(
        inverse_sqrt_team(
            &team,
            Shared::new(&mut a[1..]),
            n,
            Shared::new(&mut scratch)
        ),
        Status::BadShape
    );
    assert_eq!(
        inverse_sqrt_team(
            &SerialTeam { lanes: 0 },
            Shared::new(&mut a),
            n,
            Shared::new(&mut scratch)
        ),
        Status::BadShape
    );
    // Documented sizes: 74×74 at 256 lanes (h = 37 pairs, g = 6 lanes per pair).
    assert_eq!(
        jacobi_team_scratch_len(74, 256),
        5 * 74 + 2 * 37 + 3 * 37 * 6
    );
    assert_eq!(resolution_team_shared_len(74, 256) * 8, 52_688);
    assert_eq!(resolution_team_shared_len(74, 128) * 8, 50_024);
    assert_eq!(resolution_team_shared_len(74, 96) * 8, 49_136);
}

/// A serial team that counts its phases.
struct CountingTeam {
    lanes: usize,
    phases: std::cell::Cell<usize>,
}

impl Team for CountingTeam {
    fn lanes(&self) -> usize {
        self.lanes
    }
    fn each<F: FnMut(usize)>(&self, mut f: F) {
        self.phases.set(self.phases.get() + 1);
        for lane in 0..self.lanes {
            f(lane);
        }
    }
}

/// The early end (`QUADRATIC_STOP`) skips the sweep that would only confirm convergence on
/// most realistic blocks (it cannot when the last rotating sweep still had a coupling above
/// the threshold): outside the rotating sweeps only the pivoted Cholesky and the composition
/// run, not an extra sweep of `2·(m − 1) + 1` phases. Accuracy with the early end is checked
/// by the team-vs-serial tests above.
#[test]
fn converged_blocks_mostly_end_without_a_confirming_sweep() {
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    let blocks = 8;
    let mut early = 0;
    for _ in 0..blocks {
        let a = covariance_block(74, &mut rng);
        let team = CountingTeam {
            lanes: 96,
            phases: std::cell::Cell::new(0),
        };
        let (status, _, stats) = team_inverse_sqrt(&team, &a, 74);
        assert_eq!(status, Status::Ok);
        // Rotating sweeps: 2 phases per step and 1 for the verdict; pivoted Cholesky: 2 + 2n;
        // composition: a handful.
        let sweep_phases = 2 * 73 + 1;
        let cholesky_phases = 2 + 2 * 74;
        let other = team.phases.get() - stats.sweeps * sweep_phases - cholesky_phases;
        println!(
            "sweeps {}, phases {}, outside the rotating sweeps and the Cholesky {other}",
            stats.sweeps,
            team.phases.get()
        );
        if other < 16 {
            early += 1;
        } else {
            assert_eq!(other, sweep_phases + 6, "unexpected phase count");
        }
    }
    assert!(
        2 * early >= blocks,
        "early end on {early} of {blocks} blocks, expected at least half ({QUADRATIC_STOP})"
    );
}
