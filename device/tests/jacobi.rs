//! Tests of the cyclic Jacobi eigendecomposition (device/src/reference/jacobi_eigh.rs) and
//! `inverse_sqrt` (device/src/linalg/jacobi.rs) against residuals and nalgebra references.
//!
//! Sizes straddle the 4-wide vector width and the production block size (74): 1, 2, 3, 31,
//! 32, 33, 73, 74, 75, 100. Run with `-- --nocapture` to see the sweep counts.

mod common;

use common::{covariance_block, random_spd};
use desi_device::linalg::jacobi::{
    inverse_sqrt, inverse_sqrt_with_stats, inverse_sqrt_work_len, JacobiStats,
};
use desi_device::reference::jacobi_eigh::{jacobi_eigh, jacobi_eigh_with_stats};
use desi_device::Status;
use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 10] = [1, 2, 3, 31, 32, 33, 73, 74, 75, 100];
const EPS: f64 = f64::EPSILON;
const MAX_SWEEPS: usize = 30;

// ---------------------------------------------------------------------------------------
// Matrix generators (row-major (n, n) Vec<f64>).
// ---------------------------------------------------------------------------------------

/// Random symmetric, indefinite: entries uniform in (-1, 1), symmetrized.
fn random_symmetric(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let x: f64 = rng.random_range(-1.0..1.0);
            a[i * n + j] = x;
            a[j * n + i] = x;
        }
    }
    a
}

fn to_na(a: &[f64], n: usize) -> DMatrix<f64> {
    DMatrix::from_row_slice(n, n, a)
}

fn frob(m: &DMatrix<f64>) -> f64 {
    m.iter().map(|x| x * x).sum::<f64>().sqrt()
}

// ---------------------------------------------------------------------------------------
// Checks.
// ---------------------------------------------------------------------------------------

/// Runs jacobi_eigh and checks residual, orthogonality, ordering and eigenvalues vs nalgebra.
fn check_eigh(label: &str, a: &[f64], n: usize) -> JacobiStats {
    let mut work = a.to_vec();
    let mut vecs = vec![f64::NAN; n * n];
    let mut vals = vec![f64::NAN; n];
    let mut stats = JacobiStats::default();
    let status = jacobi_eigh_with_stats(&mut work, n, &mut vecs, &mut vals, MAX_SWEEPS, &mut stats);
    assert_eq!(status, Status::Ok, "{label} n={n}: status");

    let am = to_na(a, n);
    let v = to_na(&vecs, n);
    let lam = DMatrix::from_diagonal(&nalgebra::DVector::from_column_slice(&vals));
    let anorm = frob(&am).max(f64::MIN_POSITIVE);
    let nf = (n as f64).max(1.0);
    // Backward error of Jacobi: each rotation is backward stable and the error relative to
    // ||A||_F grows ~ linearly in n at most; 4·n·ε (observed values are printed).
    let tol = 4.0 * nf * EPS;
    // Each of the n² entries of VᵀV takes ~sweeps·n rotations' rounding errors, which add
    // like a random walk (~sqrt(sweeps·n)·ε each), so the Frobenius norm grows ~ n^1.5·ε;
    // bound 2·n^1.5·ε (observed ~0.3·n^1.5·ε).
    let orth_tol = 2.0 * nf * nf.sqrt() * EPS;
    let residual = frob(&(&am * &v - &v * &lam)) / anorm;
    let orth = frob(&(v.transpose() * &v - DMatrix::identity(n, n)));
    assert!(
        residual <= tol,
        "{label} n={n}: residual ||AV-VΛ||/||A|| actual {residual:e}, expected <= {tol:e}"
    );
    assert!(
        orth <= orth_tol,
        "{label} n={n}: orthogonality ||VᵀV-I|| actual {orth:e}, expected <= {orth_tol:e}"
    );
    for i in 1..n {
        assert!(
            vals[i - 1] <= vals[i],
            "{label} n={n}: eigenvalues not ascending at index {i}: {} > {}",
            vals[i - 1],
            vals[i]
        );
    }
    let mut reference: Vec<f64> = SymmetricEigen::new(am)
        .eigenvalues
        .iter()
        .copied()
        .collect();
    reference.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let scale = reference.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    // Both are backward stable: |Δλ| <= ||ΔA||_2 ~ n·ε·||A|| for each (Weyl); 4·n·ε·max|λ|.
    let etol = 4.0 * (n as f64).max(1.0) * EPS * scale;
    for (i, (x, r)) in vals.iter().zip(&reference).enumerate() {
        assert!(
            (x - r).abs() <= etol,
            "{label} n={n}: eigenvalue index {i} actual {x:e}, expected {r:e} (tol {etol:e})"
        );
    }
    println!(
        "{label:>12} n={n:>3}: sweeps {:>2}, rotations {:>6}, residual {:.2e}, orth {:.2e}",
        stats.sweeps, stats.rotations, residual, orth
    );
    stats
}

/// Reference C^(-1/2) from nalgebra with the same per-matrix clip.
fn reference_inverse_sqrt(a: &[f64], n: usize) -> (DMatrix<f64>, f64) {
    let eig = SymmetricEigen::new(to_na(a, n));
    let max = eig
        .eigenvalues
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    let min = eig.eigenvalues.iter().fold(f64::INFINITY, |m, &x| m.min(x));
    let d = eig.eigenvalues.map(|x| 1.0 / x.max(1e-14 * max).sqrt());
    let u = &eig.eigenvectors;
    let q = u * DMatrix::from_diagonal(&d) * u.transpose();
    (q, max / min.max(1e-14 * max))
}

/// Runs inverse_sqrt on an SPD matrix and checks out·a·out ≈ I, exact symmetry and the
/// nalgebra reference.
fn check_inverse_sqrt(label: &str, a: &[f64], n: usize) -> JacobiStats {
    let mut out = vec![f64::NAN; n * n];
    let mut work = vec![f64::NAN; inverse_sqrt_work_len(n)];
    let mut stats = JacobiStats::default();
    let status = inverse_sqrt_with_stats(a, n, &mut out, &mut work, &mut stats);
    assert_eq!(status, Status::Ok, "{label} n={n}: status");
    for i in 0..n {
        for j in 0..i {
            assert_eq!(
                out[i * n + j].to_bits(),
                out[j * n + i].to_bits(),
                "{label} n={n}: out not symmetric at ({i}, {j}): {} vs {}",
                out[i * n + j],
                out[j * n + i]
            );
        }
    }
    let (reference, cond) = reference_inverse_sqrt(a, n);
    let q = to_na(&out, n);
    // out·a·out = I up to errors in out of relative size ~ n·ε·κ (the small eigenvalues'
    // directions are amplified by κ); 4·n·ε·κ.
    let tol = 4.0 * (n as f64).max(1.0) * EPS * cond;
    let prod = &q * to_na(a, n) * &q;
    for i in 0..n {
        for j in 0..n {
            let expected = if i == j { 1.0 } else { 0.0 };
            let actual = prod[(i, j)];
            assert!(
                (actual - expected).abs() <= tol,
                "{label} n={n}: (out·a·out)[{i}][{j}] actual {actual:e}, expected {expected} (tol {tol:e})"
            );
        }
    }
    // Versus nalgebra: both have errors ~ n·ε·κ relative to max|Q|.
    let scale = reference.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for i in 0..n {
        for j in 0..n {
            let (actual, expected) = (out[i * n + j], reference[(i, j)]);
            assert!(
                (actual - expected).abs() <= tol * scale,
                "{label} n={n}: out[{i}][{j}] actual {actual:e}, expected {expected:e} (tol {:e})",
                tol * scale
            );
        }
    }
    println!(
        "{label:>12} n={n:>3}: sweeps {:>2}, rotations {:>6}, cond {:.1e}",
        stats.sweeps, stats.rotations, cond
    );
    stats
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[test]
fn eigh_random_symmetric_indefinite() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for n in SIZES {
        let a = random_symmetric(n, &mut rng);
        check_eigh("symmetric", &a, n);
    }
}

#[test]
fn eigh_random_spd() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for n in SIZES {
        let a = random_spd(n, &mut rng);
        check_eigh("spd", &a, n);
    }
}

#[test]
fn eigh_covariance_blocks() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for n in SIZES {
        let a = covariance_block(n, &mut rng);
        check_eigh("covariance", &a, n);
    }
}

#[test]
fn inverse_sqrt_random_spd() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for n in SIZES {
        let a = random_spd(n, &mut rng);
        check_inverse_sqrt("spd", &a, n);
    }
}

#[test]
fn inverse_sqrt_covariance_blocks() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for n in SIZES {
        let a = covariance_block(n, &mut rng);
        check_inverse_sqrt("covariance", &a, n);
    }
}

/// Sweep counts on 20 realistic 74×74 blocks (print with --nocapture); also bounds them so a
/// regression in convergence fails.
#[test]
fn sweep_counts_covariance_74() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = 74;
    let mut counts = Vec::new();
    for _ in 0..20 {
        let a = covariance_block(n, &mut rng);
        let mut out = vec![0.0; n * n];
        let mut work = vec![0.0; inverse_sqrt_work_len(n)];
        let mut stats = JacobiStats::default();
        assert_eq!(
            inverse_sqrt_with_stats(&a, n, &mut out, &mut work, &mut stats),
            Status::Ok
        );
        counts.push((stats.sweeps, stats.rotations));
    }
    println!("74x74 covariance blocks (sweeps, rotations): {counts:?}");
    for (i, &(sweeps, _)) in counts.iter().enumerate() {
        // Quadratic convergence: ~log2(53 bits / initial log-accuracy) + a few; 12 is generous.
        assert!(
            sweeps <= 12,
            "block {i}: sweeps actual {sweeps}, expected <= 12"
        );
    }
}

#[test]
fn diagonal_input_converges_immediately() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for n in SIZES {
        let diag: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            a[i * n + i] = diag[i];
        }
        // Exactly diagonal: no rotation, eigenvalues exact, V = a permutation.
        let mut work = a.clone();
        let (mut vecs, mut vals) = (vec![0.0; n * n], vec![0.0; n]);
        let mut stats = JacobiStats::default();
        let status = jacobi_eigh_with_stats(&mut work, n, &mut vecs, &mut vals, 5, &mut stats);
        assert_eq!(status, Status::Ok);
        assert_eq!(stats.sweeps, 0, "n={n}: diagonal input sweeps");
        let mut sorted = diag.clone();
        sorted.sort_by(|x, y| x.partial_cmp(y).unwrap());
        assert_eq!(
            vals, sorted,
            "n={n}: eigenvalues of a diagonal matrix are exact"
        );
        // Nearly diagonal (off-diagonal 1e-10): one sweep, whose second-order fill-in
        // (~1e-20) is below the threshold.
        for i in 0..n {
            for j in 0..i {
                let x = 1e-10 * rng.random_range(-1.0..1.0);
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
            a[i * n + i] = 1.0 + i as f64; // well separated
        }
        let stats = check_eigh("nearly-diag", &a, n);
        assert!(
            stats.sweeps <= 1,
            "n={n}: nearly diagonal sweeps actual {}, expected <= 1",
            stats.sweeps
        );
    }
}

#[test]
fn non_finite_input_is_reported() {
    let n = 33;
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for (i, j) in [(0, 0), (3, 5), (n - 1, n - 1)] {
            let mut a = random_spd(n, &mut rng);
            a[i * n + j] = bad;
            a[j * n + i] = bad;
            let (mut vecs, mut vals) = (vec![0.0; n * n], vec![0.0; n]);
            let status = jacobi_eigh(&mut a.clone(), n, &mut vecs, &mut vals, MAX_SWEEPS);
            assert_eq!(
                status,
                Status::NonFinite,
                "jacobi_eigh with {bad} at ({i}, {j})"
            );
            let mut out = vec![0.0; n * n];
            let mut work = vec![0.0; inverse_sqrt_work_len(n)];
            let status = inverse_sqrt(&a, n, &mut out, &mut work);
            assert_eq!(
                status,
                Status::NonFinite,
                "inverse_sqrt with {bad} at ({i}, {j})"
            );
        }
    }
}

#[test]
fn too_few_sweeps_is_no_convergence() {
    let n = 33;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let a = random_symmetric(n, &mut rng);
    let (mut vecs, mut vals) = (vec![0.0; n * n], vec![0.0; n]);
    let mut stats = JacobiStats::default();
    let status = jacobi_eigh_with_stats(&mut a.clone(), n, &mut vecs, &mut vals, 2, &mut stats);
    assert_eq!(status, Status::NoConvergence);
    assert_eq!(stats.sweeps, 2);
    // The iterate is still an orthogonal similarity.
    let v = to_na(&vecs, n);
    let orth = frob(&(v.transpose() * &v - DMatrix::identity(n, n)));
    // Same bound as in check_eigh.
    let orth_tol = 2.0 * (n as f64).powf(1.5) * EPS;
    assert!(
        orth <= orth_tol,
        "orthogonality actual {orth:e}, expected <= {orth_tol:e}"
    );
    // And max_sweeps = 0 on a non-diagonal matrix.
    let status = jacobi_eigh(&mut a.clone(), n, &mut vecs, &mut vals, 0);
    assert_eq!(status, Status::NoConvergence);
}

#[test]
fn bad_shapes_are_reported() {
    let n = 4;
    let a = vec![1.0; n * n];
    let (mut vecs, mut vals) = (vec![0.0; n * n], vec![0.0; n]);
    assert_eq!(
        jacobi_eigh(&mut a.clone()[1..], n, &mut vecs, &mut vals, 5),
        Status::BadShape
    );
    assert_eq!(
        jacobi_eigh(&mut a.clone(), n, &mut vecs[1..], &mut vals, 5),
        Status::BadShape
    );
    assert_eq!(
        jacobi_eigh(&mut a.clone(), n, &mut vecs, &mut vals[1..], 5),
        Status::BadShape
    );
    let mut out = vec![0.0; n * n];
    let mut work = vec![0.0; inverse_sqrt_work_len(n)];
    assert_eq!(
        inverse_sqrt(&a, n, &mut out, &mut work[1..]),
        Status::BadShape
    );
    assert_eq!(
        inverse_sqrt(&a, n, &mut out[1..], &mut work),
        Status::BadShape
    );
    assert_eq!(
        inverse_sqrt(&a[1..], n, &mut out, &mut work),
        Status::BadShape
    );
    assert_eq!(inverse_sqrt_work_len(n), n * n + 3 * n);
}

/// The eigenvalue clip is per matrix: scaling the input by 1e-20 scales the output by 1e10
/// (with a batch-wide clip it would not), including a rank-deficient input where the clip
/// triggers.
#[test]
fn inverse_sqrt_clip_is_per_matrix() {
    let n = 32;
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    // Rank n/2: G·Gᵀ with G of shape (n, n/2); half the eigenvalues are ~1e-16·max -> clipped.
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
    let mut out = vec![0.0; n * n];
    let mut work = vec![0.0; inverse_sqrt_work_len(n)];
    assert_eq!(inverse_sqrt(&a, n, &mut out, &mut work), Status::Ok);
    let (reference, _) = reference_inverse_sqrt(&a, n);
    let scale = reference.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    // The clipped null space contributes floor^(-1/2)·P_null (basis independent); P_null is
    // determined to ~n·ε·κ_range; κ of the range here is < 1e4, so 1e-10 relative is loose
    // but still catches a missing or batch-wide clip (those change entries by O(1)).
    for i in 0..n * n {
        assert!(
            (out[i] - reference[(i / n, i % n)]).abs() <= 1e-10 * scale,
            "rank-deficient: out[{i}] actual {:e}, expected {:e}",
            out[i],
            reference[(i / n, i % n)]
        );
    }
    let scaled: Vec<f64> = a.iter().map(|x| x * 1e-20).collect();
    let mut out_scaled = vec![0.0; n * n];
    assert_eq!(
        inverse_sqrt(&scaled, n, &mut out_scaled, &mut work),
        Status::Ok
    );
    for i in 0..n * n {
        // Scaling by a power of ten is not exact in binary; results agree to the same 1e-10.
        let expected = out[i] * 1e10;
        assert!(
            (out_scaled[i] - expected).abs() <= 1e-10 * scale * 1e10,
            "scaled: out[{i}] actual {:e}, expected {expected:e}",
            out_scaled[i]
        );
    }
}

#[test]
fn inverse_sqrt_rejects_indefinite_and_zero() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for n in [2, 33, 74] {
        let mut out = vec![0.0; n * n];
        let mut work = vec![0.0; inverse_sqrt_work_len(n)];
        // Random symmetric: eigenvalues of both signs, far beyond rounding.
        let a = random_symmetric(n, &mut rng);
        assert_eq!(
            inverse_sqrt(&a, n, &mut out, &mut work),
            Status::NotPositiveDefinite,
            "n={n}: indefinite input"
        );
        // SPD minus twice its largest diagonal entry on the diagonal: negative definite part.
        let mut a = random_spd(n, &mut rng);
        let shift = 2.0 * (0..n).map(|i| a[i * n + i]).fold(0.0, f64::max);
        for i in 0..n {
            a[i * n + i] -= shift;
        }
        assert_eq!(
            inverse_sqrt(&a, n, &mut out, &mut work),
            Status::NotPositiveDefinite,
            "n={n}: negative definite input"
        );
        let zero = vec![0.0; n * n];
        assert_eq!(
            inverse_sqrt(&zero, n, &mut out, &mut work),
            Status::NotPositiveDefinite,
            "n={n}: zero input"
        );
    }
}
