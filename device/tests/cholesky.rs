//! Tests of the dense (`desi_device::reference::cholesky`) and banded
//! (`desi_device::linalg::banded`) Cholesky family.
//!
//! Matrices are seeded random SPD matrices (dense, banded with edge-case bandwidths, and the
//! realistic patch structure: nspec fibers x nwave bins ordered wavelength-major with
//! |dfiber| <= 2, |dwave| <= 8 coupling). References are nalgebra dense f64 routines
//! (LU inverse, symmetric eigendecomposition `V Λ⁻¹ Vᵀ`). Tolerances are multiples of
//! `n·eps` (backward errors) or `n·eps·κ(M)` (forward errors of an inverse).

mod common;

use common::{max_abs, patch_matrix, to_band};
use desi_device::linalg::banded::{
    band_covariance_blocks, band_covariance_blocks_work_len, band_factor, band_solve,
};
use desi_device::reference::cholesky::{
    cholesky_factor, cholesky_solve, covariance_blocks, covariance_blocks_work_len, invert_lower,
};
use desi_device::Status;
use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EPS: f64 = f64::EPSILON;

/// Sizes required by the brief: both sides of a 74-bin block and the two patch sizes.
const SIZES: [usize; 8] = [1, 2, 5, 73, 74, 75, 444, 518];

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
    if std::env::var_os("CHOL_VERBOSE").is_some() {
        let max_err = actual
            .iter()
            .zip(expected)
            .map(|(a, e)| (a - e).abs())
            .fold(0.0, f64::max);
        eprintln!("{what}: max |diff| / tol = {:.3e}", max_err / tol);
    }
    if let Some((i, err)) = worst {
        panic!(
            "{what}: index {i}: actual {:e}, expected {:e}, |diff| {err:e} > tol {tol:e}",
            actual[i], expected[i]
        );
    }
}

fn frobenius(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Row-major `(n, n)` slice to nalgebra.
fn to_na(m: &[f64], n: usize) -> DMatrix<f64> {
    DMatrix::from_row_slice(n, n, m)
}

/// nalgebra to row-major.
fn from_na(m: &DMatrix<f64>) -> Vec<f64> {
    let mut out = vec![0.0; m.nrows() * m.ncols()];
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            out[i * m.ncols() + j] = m[(i, j)];
        }
    }
    out
}

/// Random dense SPD matrix `G Gᵀ / n + I/2` (eigenvalues in about [0.5, 4.5]).
fn random_spd(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g: Vec<f64> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let s: f64 = (0..n).map(|k| g[i * n + k] * g[j * n + k]).sum();
            m[i * n + j] = s / n as f64 + if i == j { 0.5 } else { 0.0 };
        }
    }
    m
}

/// Random symmetric band matrix with half-bandwidth `kd`, made SPD by diagonal dominance
/// (diagonal = 1 + Σ|off-diagonal| of the row times a random factor in [1, 1.5]), then with
/// a random symmetric scaling so that it is not merely diagonally dominant in magnitude.
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

/// Half-bandwidth of the patch structure, wavelength-major: `dwave_max * nspec + dfiber_max`.
fn patch_kd(nspec: usize) -> usize {
    8 * nspec + 2
}

/// Dense row-major lower-triangular matrix from band storage.
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

/// Checks `‖L Lᵀ − M‖_F / ‖M‖_F <= 2·n·eps` and that `l` is lower triangular.
fn check_factor_residual(l: &[f64], m: &[f64], n: usize, what: &str) {
    for i in 0..n {
        for j in i + 1..n {
            assert_eq!(
                l[i * n + j],
                0.0,
                "{what}: upper triangle at ({i}, {j}) not zero"
            );
        }
        assert!(
            l[i * n + i] > 0.0,
            "{what}: diagonal {i} = {}",
            l[i * n + i]
        );
    }
    let ll = to_na(l, n) * to_na(l, n).transpose();
    let diff = from_na(&ll);
    let res: Vec<f64> = diff.iter().zip(m).map(|(a, b)| a - b).collect();
    let rel = frobenius(&res) / frobenius(m);
    if std::env::var_os("CHOL_VERBOSE").is_some() {
        eprintln!(
            "{what}: factor residual / (n eps) = {:.3e}",
            rel / (n.max(1) as f64 * EPS)
        );
    }
    // Cholesky is backward stable: |L Lᵀ − M| <= γ_{n+1} |L||Lᵀ|, and ‖|L||Lᵀ|‖ <= n‖M‖
    // only in the worst case; 2·n·eps is a comfortable normwise bound in practice.
    let tol = 2.0 * n.max(1) as f64 * EPS;
    assert!(rel <= tol, "{what}: ‖LLᵀ−M‖/‖M‖ = {rel:e} > {tol:e}");
}

/// Checks the solve residual `‖M x − b‖ / (‖M‖·‖x‖) <= 4·n·eps` and the solution against
/// nalgebra's LU solve within `4·n·eps·κ`.
fn check_solve(x: &[f64], m: &[f64], b: &[f64], n: usize, cond: f64, what: &str) {
    let mx = to_na(m, n) * nalgebra::DVector::from_column_slice(x);
    let res: Vec<f64> = mx.iter().zip(b).map(|(a, e)| a - e).collect();
    let rel = frobenius(&res) / (frobenius(m) * frobenius(x));
    if std::env::var_os("CHOL_VERBOSE").is_some() {
        eprintln!(
            "{what}: solve residual / (n eps) = {:.3e}",
            rel / (n.max(1) as f64 * EPS)
        );
    }
    // Backward error of two triangular solves after a backward-stable factorization.
    let tol = 4.0 * n.max(1) as f64 * EPS;
    assert!(rel <= tol, "{what}: ‖Mx−b‖/(‖M‖‖x‖) = {rel:e} > {tol:e}");
    let reference = to_na(m, n)
        .lu()
        .solve(&nalgebra::DVector::from_column_slice(b))
        .expect("reference LU solve");
    // Forward error of two backward-stable solvers: each within n·eps·κ of the truth.
    let tol = 4.0 * n.max(1) as f64 * EPS * cond * max_abs(reference.as_slice());
    assert_close(x, reference.as_slice(), tol, &format!("{what}: x vs LU"));
}

/// Extracts the interleaved diagonal blocks of a dense `(n, n)` matrix.
fn interleaved_blocks(c: &[f64], n: usize, nblock: usize) -> Vec<f64> {
    let bs = n / nblock;
    let mut out = vec![0.0; nblock * bs * bs];
    for b in 0..nblock {
        for r in 0..bs {
            for s in 0..bs {
                out[(b * bs + r) * bs + s] = c[(r * nblock + b) * n + (s * nblock + b)];
            }
        }
    }
    out
}

/// Condition number and the eigendecomposition reference `C = V Λ⁻¹ Vᵀ`.
fn eigen_inverse(m: &[f64], n: usize) -> (Vec<f64>, f64) {
    let eig = SymmetricEigen::new(to_na(m, n));
    let lmin = eig.eigenvalues.min();
    let lmax = eig.eigenvalues.max();
    let inv_l = DMatrix::from_diagonal(&eig.eigenvalues.map(|l| 1.0 / l));
    let c = &eig.eigenvectors * inv_l * eig.eigenvectors.transpose();
    (from_na(&c), lmax / lmin)
}

/// Dense references of one test matrix: LU inverse, eigendecomposition inverse, κ(M).
struct Reference {
    c_lu: Vec<f64>,
    c_eig: Vec<f64>,
    cond: f64,
}

impl Reference {
    fn new(m: &[f64], n: usize) -> Reference {
        let (c_eig, cond) = eigen_inverse(m, n);
        let c_lu = from_na(&to_na(m, n).try_inverse().expect("reference inverse"));
        Reference { c_lu, c_eig, cond }
    }
}

/// Covariance blocks compared with the nalgebra LU inverse and the eigendecomposition
/// inverse; both references are within `n·eps·κ·‖C‖` of the truth, and so is ours.
fn check_blocks(blocks: &[f64], reference: &Reference, n: usize, nblock: usize, what: &str) {
    let ref_eig = interleaved_blocks(&reference.c_eig, n, nblock);
    let ref_lu = interleaved_blocks(&reference.c_lu, n, nblock);
    // Forward error of an inverse: c·n·eps·κ relative to max|C| (c = 4 covers both routes).
    let tol = 4.0 * n as f64 * EPS * reference.cond * max_abs(&reference.c_lu);
    assert_close(blocks, &ref_lu, tol, &format!("{what}: C_bb vs LU inverse"));
    assert_close(blocks, &ref_eig, tol, &format!("{what}: C_bb vs V Λ⁻¹ Vᵀ"));
    let bs = n / nblock;
    for b in 0..nblock {
        for r in 0..bs {
            for s in 0..r {
                let (x, y) = (blocks[(b * bs + r) * bs + s], blocks[(b * bs + s) * bs + r]);
                assert_eq!(x, y, "{what}: block {b} not symmetric at ({r}, {s})");
            }
        }
    }
}

fn divisors(n: usize) -> Vec<usize> {
    let all: Vec<usize> = (1..=n).filter(|&d| n.is_multiple_of(d)).collect();
    // Keep the test time bounded: small block counts and the extreme nblock = n.
    let mut out: Vec<usize> = all.iter().copied().filter(|&d| d <= 8).collect();
    if !out.contains(&n) {
        out.push(n);
    }
    out
}

fn dense_factor(m: &[f64], n: usize) -> Vec<f64> {
    let mut l = m.to_vec();
    // Poison the strict upper triangle: only the lower one may be read.
    for i in 0..n {
        for j in i + 1..n {
            l[i * n + j] = f64::NAN;
        }
    }
    assert_eq!(cholesky_factor(&mut l, n), Status::Ok, "dense factor n={n}");
    l
}

fn random_rhs(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

// ------------------------------------------------------------------------------------------
// Dense
// ------------------------------------------------------------------------------------------

#[test]
fn dense_factor_solve_inverse_blocks() {
    for (s, &n) in SIZES.iter().enumerate() {
        let m = random_spd(n, 100 + s as u64);
        let l = dense_factor(&m, n);
        check_factor_residual(&l, &m, n, &format!("dense n={n}"));

        let b = random_rhs(n, 200 + s as u64);
        let mut x = b.clone();
        assert_eq!(cholesky_solve(&l, n, &mut x), Status::Ok);
        let reference = Reference::new(&m, n);
        check_solve(&x, &m, &b, n, reference.cond, &format!("dense solve n={n}"));

        // Triangular inverse: |L·X − I| <= γ_n |L||X| elementwise (Higham, Thm 8.5 family).
        let mut linv = vec![f64::NAN; n * n];
        assert_eq!(invert_lower(&l, n, &mut linv), Status::Ok);
        let prod = from_na(&(to_na(&l, n) * to_na(&linv, n)));
        let abs_prod = from_na(&(to_na(&l, n).abs() * to_na(&linv, n).abs()));
        for i in 0..n {
            for j in 0..n {
                let expect = if i == j { 1.0 } else { 0.0 };
                let tol = 2.0 * n as f64 * EPS * abs_prod[i * n + j];
                let err = (prod[i * n + j] - expect).abs();
                assert!(
                    err <= tol,
                    "n={n}: (L·L⁻¹)[{i}][{j}] = {:e}, expected {expect}, tol {tol:e}",
                    prod[i * n + j]
                );
                if j > i {
                    assert_eq!(linv[i * n + j], 0.0, "n={n}: L⁻¹ upper ({i}, {j})");
                }
            }
        }

        for nblock in divisors(n) {
            let bs = n / nblock;
            let mut out = vec![f64::NAN; nblock * bs * bs];
            let mut work = vec![f64::NAN; covariance_blocks_work_len(n, nblock)];
            assert_eq!(
                covariance_blocks(&l, n, nblock, &mut out, &mut work),
                Status::Ok
            );
            let what = format!("dense n={n} nblock={nblock}");
            check_blocks(&out, &reference, n, nblock, &what);
        }
    }
}

#[test]
fn dense_covariance_matches_triangular_inverse() {
    // C_bb from the engine equals (L⁻ᵀ L⁻¹)_bb from invert_lower, independently of any
    // reference inverse: both are sums of the same products, so 2·n·eps·max|C| suffices.
    let n = 75;
    let m = random_spd(n, 7);
    let l = dense_factor(&m, n);
    let mut linv = vec![0.0; n * n];
    assert_eq!(invert_lower(&l, n, &mut linv), Status::Ok);
    let linv_na = to_na(&linv, n);
    let c = from_na(&(linv_na.transpose() * &linv_na));
    for nblock in [1, 3, 5, 15, 25, 75] {
        let bs = n / nblock;
        let mut out = vec![0.0; nblock * bs * bs];
        let mut work = vec![0.0; covariance_blocks_work_len(n, nblock)];
        assert_eq!(
            covariance_blocks(&l, n, nblock, &mut out, &mut work),
            Status::Ok
        );
        let expected = interleaved_blocks(&c, n, nblock);
        let tol = 2.0 * n as f64 * EPS * max_abs(&c);
        assert_close(&out, &expected, tol, &format!("nblock={nblock}"));
    }
}

// ------------------------------------------------------------------------------------------
// Banded
// ------------------------------------------------------------------------------------------

/// Factor, solve and covariance blocks of a band matrix, each checked against the dense
/// routines and the nalgebra references.
fn check_band(m: &[f64], n: usize, kd: usize, nblocks: &[usize], seed: u64, what: &str) {
    let mut ab = to_band(m, n, kd);
    assert_eq!(
        band_factor(&mut ab, n, kd),
        Status::Ok,
        "{what}: band factor"
    );
    let w = kd + 1;
    for i in 0..n.min(kd) {
        for p in 0..kd - i {
            assert_eq!(
                ab[i * w + p],
                0.0,
                "{what}: outside slot ({i}, {p}) not zeroed"
            );
        }
    }
    let l_band = from_band(&ab, n, kd);
    check_factor_residual(&l_band, m, n, &format!("{what}: band"));

    // Banded and dense factors run the same sums, grouped differently by the unrolled dot:
    // they differ by rounding only, n·eps·κ(M) relative to max|L| (perturbation bound of L).
    let reference = Reference::new(m, n);
    let l_dense = dense_factor(m, n);
    let tol = n as f64 * EPS * reference.cond * max_abs(&l_dense);
    assert_close(
        &l_band,
        &l_dense,
        tol,
        &format!("{what}: band L vs dense L"),
    );

    let b = random_rhs(n, seed);
    let mut x = b.clone();
    assert_eq!(band_solve(&ab, n, kd, &mut x), Status::Ok);
    check_solve(&x, m, &b, n, reference.cond, &format!("{what}: band solve"));
    let mut x_dense = b.clone();
    assert_eq!(cholesky_solve(&l_dense, n, &mut x_dense), Status::Ok);
    // Two backward-stable solves of the same system: within 4·n·eps·κ of each other.
    let tol = 4.0 * n as f64 * EPS * reference.cond * max_abs(&x_dense);
    assert_close(&x, &x_dense, tol, &format!("{what}: band vs dense solve"));

    for &nblock in nblocks {
        let bs = n / nblock;
        let mut out = vec![f64::NAN; nblock * bs * bs];
        let mut work = vec![f64::NAN; band_covariance_blocks_work_len(n, kd, nblock)];
        assert_eq!(
            band_covariance_blocks(&ab, n, kd, nblock, &mut out, &mut work),
            Status::Ok
        );
        check_blocks(
            &out,
            &reference,
            n,
            nblock,
            &format!("{what}: nblock={nblock}"),
        );
        // The dense engine on the same factor (zeros outside the band, which both paths
        // skip) runs the same operations in the same order: bitwise equal.
        let mut dense_out = vec![f64::NAN; nblock * bs * bs];
        let mut work = vec![f64::NAN; covariance_blocks_work_len(n, nblock)];
        assert_eq!(
            covariance_blocks(&l_band, n, nblock, &mut dense_out, &mut work),
            Status::Ok
        );
        assert_close(
            &out,
            &dense_out,
            0.0,
            &format!("{what}: band vs dense C_bb"),
        );
    }
}

#[test]
fn banded_random_sizes_and_bandwidths() {
    for (s, &n) in SIZES.iter().enumerate() {
        let mut kds = vec![
            0,
            1,
            2,
            7,
            58,
            n.saturating_sub(2),
            n.saturating_sub(1),
            n,
            n + 3,
        ];
        kds.sort_unstable();
        kds.dedup();
        for (t, &kd) in kds.iter().enumerate() {
            // Keep the debug-profile runtime bounded: wide bands only below n = 100.
            if n > 100 && kd > 64 && kd + 1 < n {
                continue;
            }
            let seed = 1000 + 37 * s as u64 + t as u64;
            let m = random_band_spd(n, kd, seed);
            check_band(&m, n, kd, &divisors(n), seed, &format!("n={n} kd={kd}"));
        }
    }
}

#[test]
fn banded_patch_structure() {
    for (nspec, seed) in [(7usize, 11u64), (6, 12)] {
        let nwave = 74;
        let n = nspec * nwave;
        let kd = patch_kd(nspec);
        let (m, cond) = patch_matrix(nspec, nwave, seed);
        assert!((350.0..450.0).contains(&cond), "patch cond {cond}");
        for i in 0..n {
            for j in 0..n {
                if i.abs_diff(j) > kd {
                    assert_eq!(m[i * n + j], 0.0, "patch matrix outside band at ({i}, {j})");
                }
            }
        }
        check_band(
            &m,
            n,
            kd,
            &[nspec, 1],
            seed,
            &format!("patch nspec={nspec}"),
        );
        // A wider stored band than needed gives the same factor up to the grouping of the
        // unrolled dot products: n·eps·κ(M) relative to max|L| (perturbation bound of L).
        let mut ab = to_band(&m, n, kd);
        let mut ab_wide = to_band(&m, n, kd + 5);
        assert_eq!(band_factor(&mut ab, n, kd), Status::Ok);
        assert_eq!(band_factor(&mut ab_wide, n, kd + 5), Status::Ok);
        let l = from_band(&ab, n, kd);
        let tol = n as f64 * EPS * cond * max_abs(&l);
        assert_close(
            &from_band(&ab_wide, n, kd + 5),
            &l,
            tol,
            "kd+5 vs kd factor",
        );
    }
}

// ------------------------------------------------------------------------------------------
// Failures
// ------------------------------------------------------------------------------------------

#[test]
fn not_positive_definite() {
    // Indefinite: eigenvalues 3 and -1.
    let m = [1.0, 2.0, 2.0, 1.0];
    let mut a = m;
    assert_eq!(cholesky_factor(&mut a, 2), Status::NotPositiveDefinite);
    let mut ab = to_band(&m, 2, 1);
    assert_eq!(band_factor(&mut ab, 2, 1), Status::NotPositiveDefinite);

    // Singular (pivot exactly 0) and negative first pivot.
    let mut a = [1.0, 1.0, 1.0, 1.0];
    assert_eq!(cholesky_factor(&mut a, 2), Status::NotPositiveDefinite);
    let mut a = [-1.0];
    assert_eq!(cholesky_factor(&mut a, 1), Status::NotPositiveDefinite);

    // A large SPD patch matrix with one diagonal entry made negative half-way.
    let n = 74;
    let kd = 7;
    let mut m = random_band_spd(n, kd, 5);
    m[40 * n + 40] = -m[40 * n + 40];
    let mut a = m.clone();
    assert_eq!(cholesky_factor(&mut a, n), Status::NotPositiveDefinite);
    let mut ab = to_band(&m, n, kd);
    assert_eq!(band_factor(&mut ab, n, kd), Status::NotPositiveDefinite);

    // A factor with a non-positive diagonal is rejected by the inverse and the blocks.
    let l = [1.0, 0.0, 0.5, 0.0];
    let mut linv = [0.0; 4];
    assert_eq!(invert_lower(&l, 2, &mut linv), Status::NotPositiveDefinite);
    let mut out = [0.0; 4];
    let mut work = [0.0; 4];
    assert_eq!(
        covariance_blocks(&l, 2, 1, &mut out, &mut work),
        Status::NotPositiveDefinite
    );
    let ab = [0.0, 1.0, 0.5, 0.0];
    assert_eq!(
        band_covariance_blocks(&ab, 2, 1, 1, &mut out, &mut work),
        Status::NotPositiveDefinite
    );
}

#[test]
fn non_finite() {
    let n = 75;
    let kd = 9;
    let m = random_band_spd(n, kd, 9);
    for (i, j) in [(0, 0), (10, 10), (10, 3), (74, 74), (74, 70), (74, 66)] {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut a = m.clone();
            a[i * n + j] = bad;
            assert_eq!(
                cholesky_factor(&mut a, n),
                Status::NonFinite,
                "dense ({i},{j}) {bad}"
            );
            let mut ab = to_band(&a, n, kd);
            assert_eq!(
                band_factor(&mut ab, n, kd),
                Status::NonFinite,
                "band ({i},{j}) {bad}"
            );
        }
    }
    // The dense upper triangle is never read: a NaN there is harmless.
    let mut a = m.clone();
    a[3 * n + 5] = f64::NAN;
    assert_eq!(cholesky_factor(&mut a, n), Status::Ok);

    // A NaN in a factor is caught by the inverse and the covariance blocks.
    let mut l = dense_factor(&m, n);
    l[50 * n + 20] = f64::NAN;
    let mut linv = vec![0.0; n * n];
    assert_eq!(invert_lower(&l, n, &mut linv), Status::NonFinite);
    let mut out = vec![0.0; n * n];
    let mut work = vec![0.0; covariance_blocks_work_len(n, 1)];
    assert_eq!(
        covariance_blocks(&l, n, 1, &mut out, &mut work),
        Status::NonFinite
    );
    let mut ab = to_band(&m, n, kd);
    assert_eq!(band_factor(&mut ab, n, kd), Status::Ok);
    ab[50 * (kd + 1) + 3] = f64::NAN;
    let mut work = vec![0.0; band_covariance_blocks_work_len(n, kd, 1)];
    assert_eq!(
        band_covariance_blocks(&ab, n, kd, 1, &mut out, &mut work),
        Status::NonFinite
    );
}

#[test]
fn bad_shapes() {
    let mut a = vec![1.0; 5];
    assert_eq!(cholesky_factor(&mut a, 2), Status::BadShape);
    let l = [1.0, 0.0, 0.0, 1.0];
    let mut rhs = [1.0; 3];
    assert_eq!(cholesky_solve(&l, 2, &mut rhs), Status::BadShape);
    assert_eq!(rhs, [1.0; 3], "solve wrote on BadShape");
    let mut linv = [0.0; 3];
    assert_eq!(invert_lower(&l, 2, &mut linv), Status::BadShape);
    let mut ab = vec![1.0; 7];
    assert_eq!(band_factor(&mut ab, 3, 1), Status::BadShape);
    let ab = [0.0, 1.0, 0.0, 1.0];
    assert_eq!(band_solve(&ab, 2, 1, &mut rhs), Status::BadShape);

    // Block count not dividing n, zero blocks, wrong out size, short work.
    let mut out = [0.0; 4];
    let mut work = [0.0; 4];
    assert_eq!(
        covariance_blocks(&l, 2, 3, &mut out, &mut work),
        Status::BadShape
    );
    assert_eq!(
        covariance_blocks(&l, 2, 0, &mut out, &mut work),
        Status::BadShape
    );
    assert_eq!(
        covariance_blocks(&l, 2, 2, &mut out, &mut work),
        Status::BadShape
    );
    assert_eq!(
        covariance_blocks(&l, 2, 1, &mut out, &mut work[..3]),
        Status::BadShape
    );
    assert_eq!(covariance_blocks_work_len(2, 3), 0);
    assert_eq!(
        band_covariance_blocks(&ab, 2, 1, 3, &mut out, &mut work),
        Status::BadShape
    );
    assert_eq!(
        band_covariance_blocks(&ab, 2, 1, 1, &mut out, &mut work[..3]),
        Status::BadShape
    );
    assert_eq!(band_covariance_blocks_work_len(518, 58, 7), 59 * 74);
    assert_eq!(band_covariance_blocks_work_len(5, 58, 5), 5);
    assert_eq!(covariance_blocks_work_len(518, 7), 518 * 74);

    // n = 0 is a valid empty problem.
    assert_eq!(cholesky_factor(&mut [], 0), Status::Ok);
    assert_eq!(band_factor(&mut [], 0, 3), Status::Ok);
}
