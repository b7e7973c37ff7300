//! The inverse square root `C^(-1/2)` of the per-fiber covariance blocks by preconditioned
//! one-sided Jacobi ([`inverse_sqrt`]), and the Jacobi rotation and stopping rule it shares
//! with the team version ([`super::jacobi_team`]) and the two-sided reference eigensolver
//! (`crate::reference::jacobi_eigh`, feature `reference`).
//!
//! Role in the extraction (docs/algorithm.md §4.4, Bolton & Schlegel 2010 eqs 17-19): for each
//! spectrum block `b` of a patch, the `(nwave, nwave)` diagonal block `C_bb` of the flux
//! covariance `C = M⁻¹` (74×74, symmetric positive definite) is decomposed as
//! `C_bb = U Σ Uᵀ` and `Q_b = U Σ^(-1/2) Uᵀ = C_bb^(-1/2)` ([`inverse_sqrt`]). `Q_b` then gives
//! the resolution matrix `R = diag(1/s)·Q` and `ivar = s²` (`s` the row sums of `Q`).
//!
//! # Stopping rule (threshold skipping)
//! A rotation of the pair `(p, q)` is applied only when its coupling exceeds
//! `JACOBI_REL_TOL` relative to the pair's diagonal (`|w_p·w_q| > JACOBI_REL_TOL·‖w_p‖·‖w_q‖`
//! here, `|A[p][q]| > JACOBI_REL_TOL · sqrt(|A[p][p]·A[q][q]|)` for two-sided Jacobi) and an
//! absolute floor `ε²·trace` (`ε²·‖A‖_F`); the iteration stops after the first sweep that
//! applies no rotation. Justification: this is the relative criterion of Demmel & Veselić
//! (1992); when it holds for every pair with `JACOBI_REL_TOL = ε`, neglecting the remaining
//! off-diagonal entries moves each eigenvalue of a positive definite matrix by at most about
//! `n·ε` relative to itself (not merely relative to `‖A‖`), and the eigenvectors by about
//! `n·ε / relgap`; a matrix-level test `off(A) <= tol·‖A‖_F` (cuSOLVER `syevj`) gives only
//! absolute accuracy. The same test doubles as the classic threshold skip: the rotations it
//! skips (e.g. the negligible entries of an already nearly diagonal block) cost one compare.
//! The absolute floor only matters for singular or indefinite matrices, where a diagonal
//! entry can be ~0 and the relative test alone could chase rounding noise.

use super::dense::{axpy, dot};
use crate::math::{abs, sqrt};
use crate::Status;

/// Relative off-diagonal threshold of the stopping rule: a pair `(p, q)` is converged when
/// `|A[p][q]| <= JACOBI_REL_TOL · sqrt(|A[p][p]·A[q][q]|)`. Set to machine epsilon.
pub const JACOBI_REL_TOL: f64 = f64::EPSILON;

/// Sweep limit used by [`inverse_sqrt`]. Cyclic Jacobi converges quadratically once the
/// off-diagonal part is small; the realistic 74×74 covariance blocks need 8-9 rotating
/// sweeps, random dense 100×100 matrices about 9-11.
pub const INVERSE_SQRT_MAX_SWEEPS: usize = 30;

/// Counters of one Jacobi run, for benchmarks and tuning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JacobiStats {
    /// Sweeps that applied at least one rotation (0 for a diagonal input). The final sweep
    /// that only confirms convergence is not counted.
    pub sweeps: usize,
    /// Rotations applied in all sweeps (skipped pairs not counted).
    pub rotations: usize,
}

/// Length of the `work` slice that [`inverse_sqrt`] needs: `n² + 3n` (the rows of `W`, the
/// squared row norms, the pivot order and one row of scratch); 0 if that overflows.
pub fn inverse_sqrt_work_len(n: usize) -> usize {
    n.checked_add(3).and_then(|m| m.checked_mul(n)).unwrap_or(0)
}

/// Inverse square root `C^(-1/2) = U Σ^(-1/2) Uᵀ` of a symmetric positive (semi)definite
/// matrix (Bolton & Schlegel 2010 eqs 17-19: `Q_b = C_bb^(-1/2)`).
///
/// # Algorithm
/// Preconditioned one-sided Jacobi (Drmač & Veselić 2008, the SPD case), cheaper than
/// `jacobi_eigh` (the two-sided reference, feature `reference`) on the same matrix (measured
/// in `benches/jacobi.rs`):
/// 1. Cholesky with diagonal pivoting `Pᵀ C P = L Lᵀ` (LAPACK `dpstrf`).
/// 2. Row-cyclic one-sided (Hestenes) Jacobi on the columns of `L`: plane rotations `V` with
///    `W = L V` having mutually orthogonal columns. Then `L Lᵀ = W Wᵀ = Σ_i w_i w_iᵀ` with
///    orthogonal `w_i`, so the eigenpairs of `Pᵀ C P` are `σ_i = ‖w_i‖²`, `u_i = w_i / ‖w_i‖`:
///    neither `V` nor a column update is needed, every operation is on contiguous rows of
///    `Wᵀ` (a dot product and a pair rotation), and the Gram matrix `Lᵀ L` it diagonalizes is
///    one LR step closer to diagonal than `C`, so it needs fewer rotations than two-sided
///    Jacobi on `C` (74×74 covariance blocks: 8-9 rotating sweeps and ≈ 15,700 rotations,
///    against 9-10 sweeps and ≈ 20,500 rotations for `jacobi_eigh`); each rotation is also
///    cheaper (8n instead of 12n flops plus 2n scattered stores).
///    The pair test is the same relative one as `jacobi_eigh`:
///    `|w_p·w_q| <= JACOBI_REL_TOL·‖w_p‖·‖w_q‖`; each `u_i` then has error about
///    `ε·sqrt(σ_max/σ_i)` (better than `ε·σ_max/σ_i` for an eigensolver working on `C`).
/// 3. Clip and compose: `σ_i ← max(σ_i, f)` with `f = 1e-14·max(σ)`, and
///    `out = P (Σ_i σ_i^(-1/2) u_i u_iᵀ) Pᵀ`. The maximum is taken **per matrix**
///    (gpu_specter takes it over the whole batch of blocks; per matrix is scale invariant and
///    agrees whenever the clip does not trigger, which is the case for well-posed covariance
///    blocks). When some eigenvalues are clipped, their eigenvectors are not used: they all
///    share the value `f`, so their part is `f^(-1/2)·(I − Σ_kept u_i u_iᵀ)`, basis-free.
///
/// Cholesky stops when the largest remaining pivot is `<= n·ε·max(diag C)` (rounding level:
/// the rest of `C` is then treated as zero, moving eigenvalues by at most `n²·ε·max(diag C)`,
/// the absolute accuracy of any eigensolver on `C`), and reports
/// [`Status::NotPositiveDefinite`] if that pivot is below `-n·ε·max(diag C)`.
///
/// # Parameters
/// - `a`: shape `(n, n)`, row-major, symmetric positive (semi)definite (both triangles are
///   read and must agree).
/// - `n`: the order.
/// - `out`: shape `(n, n)`, row-major, output: `C^(-1/2)`, exactly symmetric.
/// - `work`: scratch of at least [`inverse_sqrt_work_len`]`(n)` values.
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] for wrong slice lengths; [`Status::NonFinite`] if `a`
/// holds a NaN or infinity (or a result is not finite); [`Status::NotPositiveDefinite`] if
/// `C` is (beyond rounding) indefinite or zero; [`Status::NoConvergence`] if Jacobi needs
/// more than [`INVERSE_SQRT_MAX_SWEEPS`] sweeps (`out` then holds the result built from the
/// last iterate).
pub fn inverse_sqrt(a: &[f64], n: usize, out: &mut [f64], work: &mut [f64]) -> Status {
    let mut stats = JacobiStats::default();
    inverse_sqrt_with_stats(a, n, out, work, &mut stats)
}

/// [`inverse_sqrt`], also reporting the one-sided Jacobi sweep and rotation counts in
/// `stats`.
pub fn inverse_sqrt_with_stats(
    a: &[f64],
    n: usize,
    out: &mut [f64],
    work: &mut [f64],
    stats: &mut JacobiStats,
) -> Status {
    *stats = JacobiStats::default();
    let nn = match n.checked_mul(n) {
        Some(nn) => nn,
        None => return Status::BadShape,
    };
    if a.len() != nn || out.len() != nn || work.len() < inverse_sqrt_work_len(n) {
        return Status::BadShape;
    }
    if n == 0 {
        return Status::Ok;
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Status::NonFinite;
    }
    let (wt, rest) = work.split_at_mut(nn);
    let (norm2, rest) = rest.split_at_mut(n);
    let (perm, rest) = rest.split_at_mut(n);
    let tmp = &mut rest[..n];

    // 1. Pivoted Cholesky: `out` holds the Schur complement, `wt` gets Lᵀ (row j = column j
    //    of L), `perm[j]` the original index of pivoted position j (stored as f64, exact).
    out.copy_from_slice(a);
    let status = pivoted_cholesky(out, n, wt, perm);
    if status != Status::Ok {
        return status;
    }

    // 2. One-sided Jacobi on the rows of Wᵀ.
    let mut status = Status::NoConvergence;
    for _ in 0..=INVERSE_SQRT_MAX_SWEEPS {
        let mut trace = 0.0;
        for (d, row) in norm2.iter_mut().zip(wt.chunks_exact(n)) {
            *d = dot(row, row);
            trace += *d;
        }
        let abs_floor = f64::EPSILON * f64::EPSILON * trace;
        let rotate = stats.sweeps < INVERSE_SQRT_MAX_SWEEPS;
        let rotations = one_sided_sweep(wt, n, norm2, abs_floor, rotate);
        if rotations == 0 {
            status = Status::Ok;
            break;
        }
        if !rotate {
            break;
        }
        stats.sweeps += 1;
        stats.rotations += rotations;
    }

    // 3. Eigenvalues σ_i = ‖w_i‖², clip, compose.
    let mut sigma_max = 0.0f64;
    for (d, row) in norm2.iter_mut().zip(wt.chunks_exact(n)) {
        *d = dot(row, row);
        sigma_max = sigma_max.max(*d);
    }
    if norm2.iter().any(|d| !d.is_finite()) {
        return Status::NonFinite;
    }
    if sigma_max <= 0.0 {
        return Status::NotPositiveDefinite;
    }
    let floor = 1e-14 * sigma_max;
    let clipped = norm2.iter().any(|&d| d <= floor);
    let floor_weight = if clipped { 1.0 / sqrt(floor) } else { 0.0 };
    // out = floor_weight·I + Σ_i coef_i·w_i w_iᵀ with coef_i = (σ_i^(-1/2) − floor_weight)/σ_i
    // for the kept rows and 0 for the clipped ones (norm2 now holds coef_i). The columns of
    // each row are un-pivoted on the way (u_i in the original coordinates).
    for (row, d) in wt.chunks_exact_mut(n).zip(norm2.iter_mut()) {
        *d = if *d > floor {
            (1.0 / sqrt(*d) - floor_weight) / *d
        } else {
            0.0
        };
        tmp.copy_from_slice(row);
        for (&x, &p) in tmp.iter().zip(perm.iter()) {
            // perm holds exact small integers; `as usize` of them cannot truncate.
            if let Some(slot) = row.get_mut(p as usize) {
                *slot = x;
            }
        }
    }
    // Upper triangle: row j of `out` accumulates the tails of the rows of Wᵀ (contiguous
    // axpy); then mirrored, so `out` is exactly symmetric.
    for j in 0..n {
        let out_row = &mut out[j * n + j..j * n + n];
        out_row.fill(0.0);
        out_row[0] = floor_weight;
        for (row, &coef) in wt.chunks_exact(n).zip(norm2.iter()) {
            axpy(coef * row[j], &row[j..], out_row);
        }
    }
    for j in 0..n {
        for k in 0..j {
            out[j * n + k] = out[k * n + j];
        }
    }
    if out.iter().any(|x| !x.is_finite()) {
        return Status::NonFinite;
    }
    status
}

/// Cholesky with diagonal pivoting (outer-product form, LAPACK `dpstrf`) of the symmetric
/// `(n, n)` row-major matrix in `schur` (destroyed: it holds the trailing Schur complements,
/// both triangles). Writes `Lᵀ` into `lt` (row `j` = column `j` of `L`, zero left of `j`) and the
/// pivot order into `perm` (`perm[j]` = original index, as an exact `f64`).
fn pivoted_cholesky(schur: &mut [f64], n: usize, lt: &mut [f64], perm: &mut [f64]) -> Status {
    for (j, p) in perm.iter_mut().enumerate() {
        *p = j as f64;
    }
    lt.fill(0.0);
    let mut max_diag = 0.0f64;
    for j in 0..n {
        max_diag = max_diag.max(schur[j * n + j]);
    }
    let tol = n as f64 * f64::EPSILON * max_diag;
    for j in 0..n {
        let mut piv = j;
        for i in j + 1..n {
            if schur[i * n + i] > schur[piv * n + piv] {
                piv = i;
            }
        }
        let pivot = schur[piv * n + piv];
        if pivot.is_nan() {
            return Status::NonFinite;
        }
        if pivot <= tol {
            // The rest is zero to rounding (rows j.. of Lᵀ stay zero) or indefinite.
            return if pivot < -tol {
                Status::NotPositiveDefinite
            } else {
                Status::Ok
            };
        }
        if piv != j {
            // Symmetric swap of j and piv in the trailing Schur complement (rows/cols >= j),
            // and of the already computed entries of L's rows j and piv (columns of Lᵀ).
            let (lo, hi) = schur.split_at_mut(piv * n);
            lo[j * n + j..j * n + n].swap_with_slice(&mut hi[j..n]);
            for k in j..n {
                schur.swap(k * n + j, k * n + piv);
            }
            for k in 0..j {
                lt.swap(k * n + j, k * n + piv);
            }
            perm.swap(j, piv);
        }
        let d = sqrt(schur[j * n + j]);
        let inv = 1.0 / d;
        let lt_row = &mut lt[j * n..j * n + n];
        lt_row[j] = d;
        for (l, &c) in lt_row[j + 1..]
            .iter_mut()
            .zip(&schur[j * n + j + 1..j * n + n])
        {
            *l = c * inv;
        }
        // Schur complement update of rows i > j (full rows k > j, contiguous).
        let lt_row = &lt[j * n..j * n + n];
        for i in j + 1..n {
            let li = lt_row[i];
            axpy(-li, &lt_row[j + 1..], &mut schur[i * n + j + 1..i * n + n]);
        }
    }
    Status::Ok
}

/// One row-cyclic sweep of one-sided Jacobi on the rows `w_i` of the row-major `(n, n)`
/// matrix `wt`, with `norm2[i] = ‖w_i‖²` kept up to date by the exact 2×2 formulas. Returns
/// the number of pairs that failed the orthogonality test (rotated when `rotate`).
///
/// (Fusing the rotation of `(p, q)` with the dot product of the next pair `(p, q + 1)` was
/// measured 35-40% slower and is not used.)
#[inline(never)]
fn one_sided_sweep(
    wt: &mut [f64],
    n: usize,
    norm2: &mut [f64],
    abs_floor: f64,
    rotate: bool,
) -> usize {
    let mut count = 0;
    for p in 0..n {
        for q in p + 1..n {
            let (lo, hi) = wt.split_at_mut(q * n);
            let row_p = &mut lo[p * n..p * n + n];
            let row_q = &mut hi[..n];
            let g = dot(row_p, row_q);
            let (dp, dq) = (norm2[p], norm2[q]);
            let thresh = JACOBI_REL_TOL * sqrt(dp * dq);
            if !(abs(g) > thresh && abs(g) > abs_floor) {
                continue;
            }
            count += 1;
            if !rotate {
                continue;
            }
            let (c, s, t) = rotation(dp, dq, g);
            rotate_rows(row_p, row_q, c, s);
            norm2[p] = dp - t * g;
            norm2[q] = dq + t * g;
        }
    }
    count
}

/// `x ← c·x − s·y`, `y ← s·x + c·y` elementwise over the common length.
#[inline(always)]
pub(crate) fn rotate_rows(x: &mut [f64], y: &mut [f64], c: f64, s: f64) {
    for (xi, yi) in x.iter_mut().zip(y.iter_mut()) {
        let (u, v) = (*xi, *yi);
        *xi = c * u - s * v;
        *yi = s * u + c * v;
    }
}

/// Jacobi rotation `(c, s, t = s/c)` that zeroes `apq` of the 2×2 block
/// `[[app, apq], [apq, aqq]]` (Golub & Van Loan algorithm 8.5.1, the smaller angle).
#[inline(always)]
pub(crate) fn rotation(app: f64, aqq: f64, apq: f64) -> (f64, f64, f64) {
    let theta = (aqq - app) / (2.0 * apq);
    let t = if abs(theta) > 1e150 {
        // 1 + θ² would overflow; t = 1/(2θ) to full precision there.
        0.5 / theta
    } else {
        let t = 1.0 / (abs(theta) + sqrt(1.0 + theta * theta));
        if theta < 0.0 {
            -t
        } else {
            t
        }
    };
    let c = 1.0 / sqrt(1.0 + t * t);
    (c, t * c, t)
}
