//! Dense Cholesky factorization `M = L·Lᵀ` of a symmetric positive definite `(n, n)` matrix.
//!
//! Verbs (same as [`crate::linalg::banded`]): [`cholesky_factor`], [`cholesky_solve`],
//! [`invert_lower`] and [`covariance_blocks`] (with its size query
//! [`covariance_blocks_work_len`]). All matrices are row-major `f64` slices, the column index
//! fastest: `M[i][j]` is `m[i * n + j]`.
//!
//! Role in the extraction (docs/algorithm.md §4.3-4.4, Bolton & Schlegel 2010 eqs 4 and
//! 10-13): the deconvolved flux is `xflux = M⁻¹ y` with `M = AᵀWA + diag(α²)` and `y = AᵀWp`, and its
//! covariance is `C = M⁻¹ = L⁻ᵀ L⁻¹`, of which the decorrelation (eqs 17-19) needs only the
//! per-fiber diagonal blocks `C_bb`. The production path is the banded one
//! ([`crate::linalg::banded`]); this dense version is the reference that the tests check it
//! against and the benchmarks time it against.
//!
//! The inner loops (`dot`, `axpy` and the interleaved covariance engine) are those of the
//! banded routines (`crate::linalg::dense`), so both run the same instructions.

use crate::linalg::dense::{
    axpy, diagonal_status, interleaved_covariance_blocks, interleaved_work_len, pivot_status,
    sub_dot,
};
use crate::math::sqrt;
use crate::Status;

/// Factors a symmetric positive definite matrix in place: `M = L·Lᵀ` (Cholesky-Banachiewicz,
/// row by row; LAPACK `dpotrf` with `uplo = 'L'` in row-major storage).
///
/// # Parameters
/// - `a`: shape `(n, n)`, row-major. On entry only the lower triangle (`j <= i`) of `M` is
///   read; on exit the lower triangle holds `L` (positive diagonal) and the strict upper
///   triangle is zeroed, so `a` is exactly the lower-triangular matrix `L`.
/// - `n`: the order of `M`.
///
/// # Equation
/// `L[i][j] = (M[i][j] - Σ_{k<j} L[i][k]·L[j][k]) · (1 / L[j][j])` for `j < i`, and
/// `L[i][i] = sqrt(M[i][i] - Σ_{k<i} L[i][k]²)`.
///
/// # Returns
/// [`Status::Ok`]; [`Status::NonFinite`] if a pivot is NaN or infinite (any non-finite entry
/// of the lower triangle propagates into its row's pivot); [`Status::NotPositiveDefinite`] if
/// a pivot is `<= 0` (the factorization stops at that row, `a` is then partly overwritten);
/// [`Status::BadShape`] if `a.len() != n * n`.
pub fn cholesky_factor(a: &mut [f64], n: usize) -> Status {
    if n.checked_mul(n) != Some(a.len()) {
        return Status::BadShape;
    }
    for i in 0..n {
        let (prev, rest) = a.split_at_mut(i * n);
        let row_i = &mut rest[..n];
        for j in 0..i {
            let row_j = &prev[j * n..j * n + j + 1];
            // Reciprocal first (independent of this row), as LAPACK dpotf2 scales by 1/L[j][j].
            let inv = 1.0 / row_j[j];
            row_i[j] = sub_dot(row_i[j], &row_i[..j], &row_j[..j]) * inv;
        }
        let (lower, upper) = row_i.split_at_mut(i);
        let pivot = sub_dot(upper[0], lower, lower);
        if let Some(status) = pivot_status(pivot) {
            return status;
        }
        upper[0] = sqrt(pivot);
        upper[1..].fill(0.0);
    }
    Status::Ok
}

/// Solves `M x = rhs` in place given the Cholesky factor `L` of `M` (LAPACK `dpotrs`):
/// forward substitution `L z = rhs`, then back substitution `Lᵀ x = z`.
///
/// # Parameters
/// - `l`: shape `(n, n)`, row-major; its lower triangle is `L` as left by
///   [`cholesky_factor`] (the strict upper triangle is not read).
/// - `rhs`: shape `(n,)`; on entry the right-hand side (`y = AᵀWp`), on exit the solution
///   (`xflux`, Bolton & Schlegel 2010 eq 4).
///
/// # Returns
/// [`Status::Ok`], or [`Status::BadShape`] if a length disagrees with `n` (nothing written).
/// A zero diagonal in `l` (never produced by a successful factorization) yields non-finite
/// values, not an error.
pub fn cholesky_solve(l: &[f64], n: usize, rhs: &mut [f64]) -> Status {
    if n.checked_mul(n) != Some(l.len()) || rhs.len() != n {
        return Status::BadShape;
    }
    // Forward: z_i = (b_i - Σ_{k<i} L[i][k] z_k) / L[i][i].
    for i in 0..n {
        let row = &l[i * n..i * n + i + 1];
        let (done, todo) = rhs.split_at_mut(i);
        todo[0] = sub_dot(todo[0], &row[..i], done) / row[i];
    }
    // Backward, column-oriented so that row i of L is read contiguously:
    // x_i = z_i / L[i][i]; z_k -= L[i][k] x_i for k < i.
    for i in (0..n).rev() {
        let row = &l[i * n..i * n + i + 1];
        let (head, tail) = rhs.split_at_mut(i);
        let x = tail[0] / row[i];
        tail[0] = x;
        axpy(-x, &row[..i], head);
    }
    Status::Ok
}

/// Inverts a lower-triangular matrix: `linv = L⁻¹` (LAPACK `dtrtri`, `uplo = 'L'`).
///
/// # Parameters
/// - `l`: shape `(n, n)`, row-major; its lower triangle is `L` (the strict upper triangle is
///   not read).
/// - `linv`: shape `(n, n)`, row-major, output: the lower-triangular `L⁻¹` with its strict
///   upper triangle zeroed. With it `C = M⁻¹ = L⁻ᵀ·L⁻¹`.
///
/// # Equation
/// Row by row: `L⁻¹[m][m] = 1 / L[m][m]` and
/// `L⁻¹[m][0..m] = -(Σ_{k<m} L[m][k]·L⁻¹[k][0..m]) / L[m][m]`.
///
/// # Returns
/// [`Status::Ok`]; [`Status::NonFinite`] if a diagonal entry of `L` is not finite or a result
/// is not finite; [`Status::NotPositiveDefinite`] if a diagonal entry is `<= 0` (not a
/// Cholesky factor); [`Status::BadShape`] on a length mismatch. On error `linv` is
/// unspecified.
pub fn invert_lower(l: &[f64], n: usize, linv: &mut [f64]) -> Status {
    if n.checked_mul(n) != Some(l.len()) || linv.len() != l.len() {
        return Status::BadShape;
    }
    if let Some(status) = diagonal_status(n, |i| l[i * n + i]) {
        return status;
    }
    for m in 0..n {
        let l_row = &l[m * n..m * n + m + 1];
        let (prev, rest) = linv.split_at_mut(m * n);
        let out = &mut rest[..n];
        out.fill(0.0);
        for (k, &lmk) in l_row[..m].iter().enumerate() {
            if lmk != 0.0 {
                axpy(-lmk, &prev[k * n..k * n + k + 1], &mut out[..k + 1]);
            }
        }
        let d = l_row[m];
        for v in &mut out[..m] {
            *v /= d;
        }
        out[m] = 1.0 / d;
    }
    if linv.iter().all(|v| v.is_finite()) {
        Status::Ok
    } else {
        Status::NonFinite
    }
}

/// Length of the `work` slice that [`covariance_blocks`] needs: `n * (n / nblock)` (the
/// whole `(n, bs)` block column `L⁻¹·E_b`); 0 for invalid shapes.
pub fn covariance_blocks_work_len(n: usize, nblock: usize) -> usize {
    interleaved_work_len(n, nblock, n)
}

/// Diagonal covariance blocks `C_bb` of `C = M⁻¹` from the dense Cholesky factor of `M`, for
/// **interleaved** blocks: block `b` (fiber `ispec = b`) is the set of unknowns
/// `q = iwave * nblock + b`, `iwave in 0..bs`, matching the wavelength-major order
/// `q = iwave * nspec + ispec` of the patch solve.
///
/// # Parameters
/// - `l`: shape `(n, n)`, row-major; its lower triangle is `L` with `M = L·Lᵀ` (the strict
///   upper triangle is not read).
/// - `nblock`: number of blocks (`nspec`); `n` must be a multiple of it, `bs = n / nblock`
///   (`nwave`).
/// - `out`: shape `(nblock, bs, bs)`, row-major, output:
///   `out[b][r][c] = C[r * nblock + b][c * nblock + b]` (symmetric).
/// - `work`: scratch of at least [`covariance_blocks_work_len`]`(n, nblock)` values.
///
/// # Equation
/// `C_bb = E_bᵀ L⁻ᵀ L⁻¹ E_b = Y_bᵀ Y_b` with `Y_b = L⁻¹ E_b` (`E_b` the `(n, bs)` selection of
/// block b's unit vectors), found by forward substitution row by row (column `r` of `Y_b` is
/// zero above row `r * nblock + b`); each finished row `y_m` of `Y_b` is added to `C_bb` as
/// the rank-1 update `y_mᵀ y_m`. About `n³/3` multiply-adds for a full `L` (zero entries of `L` are skipped).
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] if `nblock == 0`, `n % nblock != 0` or a slice is the
/// wrong size; [`Status::NotPositiveDefinite`] / [`Status::NonFinite`] if a diagonal entry of
/// `L` is `<= 0` / not finite, or [`Status::NonFinite`] if a result is not finite.
pub fn covariance_blocks(
    l: &[f64],
    n: usize,
    nblock: usize,
    out: &mut [f64],
    work: &mut [f64],
) -> Status {
    if n.checked_mul(n) != Some(l.len()) {
        return Status::BadShape;
    }
    let row = |m: usize| (0usize, &l[m * n..m * n + m + 1]);
    if nblock == 0 || out.len() != n * (n / nblock) {
        return Status::BadShape;
    }
    interleaved_covariance_blocks(n, nblock, 0, n, row, out, work)
}
