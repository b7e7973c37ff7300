//! Banded Cholesky factorization `M = L·Lᵀ` of a symmetric positive definite band matrix
//! (LAPACK `dpbtrf`/`dpbtrs` with `uplo = 'L'`), the production path of the patch solve.
//!
//! # Band storage
//! A symmetric `(n, n)` matrix with half-bandwidth `kd` (`M[i][j] = 0` for `|i - j| > kd`) is
//! stored by its lower triangle in a row-major `(n, kd + 1)` array `ab`:
//!
//! `ab[i * (kd + 1) + (j + kd - i)] = M[i][j]` for `max(i - kd, 0) <= j <= i`,
//!
//! so row `i` of the band holds `M[i][i-kd..=i]` contiguously, the diagonal last
//! (`ab[i * (kd + 1) + kd] = M[i][i]`). The `kd - i` leading slots of the first `kd` rows lie
//! outside the matrix: they are ignored on input and zeroed by [`band_factor`]. After the
//! factorization `ab` holds `L` in the same layout.
//!
//! With the patch unknowns ordered wavelength-major, `q = iwave * nspec + ispec`, the
//! coupling `|dfiber| <= 2`, `|dwave| <= ~8` gives `kd ≈ 8 * nspec + 2` (about 60 for
//! `nspec = 7`, `n = 518`), so the factor costs `n·kd²/2` multiply-adds instead of `n³/6`.

use super::dense::{axpy, dot, interleaved_covariance_blocks, sub_dot};
use super::dense::{interleaved_work_len, pivot_status};
use crate::math::{fma, sqrt};
use crate::Status;

/// `true` when `ab` has the band shape `(n, kd + 1)`.
fn band_shape_ok(ab: &[f64], n: usize, kd: usize) -> bool {
    kd.checked_add(1).and_then(|w| w.checked_mul(n)) == Some(ab.len())
}

/// Factors a symmetric positive definite band matrix in place: `M = L·Lᵀ`, `L` lower
/// triangular with the same half-bandwidth `kd` (column by column, LAPACK `dpbtf2` order:
/// the `kd` dot products below a pivot are independent, so they overlap in the pipeline).
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, row-major band storage of the lower triangle of `M` (see the
///   module docs: `ab[i * (kd + 1) + (j + kd - i)] = M[i][j]`). On exit it holds `L` in the
///   same layout; the slots outside the matrix (`j < 0`) are zeroed.
/// - `n`: the order of `M`; `kd`: its half-bandwidth (any `kd >= 0`; `kd >= n - 1` is dense).
///
/// # Equation
/// For `j0 = max(i - kd, 0) <= j < i`:
/// `L[i][j] = (M[i][j] - Σ_{k=j0}^{j-1} L[i][k]·L[j][k]) · (1 / L[j][j])`, and
/// `L[i][i] = sqrt(M[i][i] - Σ_{k=j0}^{i-1} L[i][k]²)`; all sums run over contiguous band
/// rows. Column `j` (pivot `L[j][j]`, then `L[j+1..=j+kd][j]`) is finished before column
/// `j + 1`. Cost `≈ n·kd²/2` multiply-adds.
///
/// # Returns
/// [`Status::Ok`]; [`Status::NonFinite`] if a pivot is NaN or infinite;
/// [`Status::NotPositiveDefinite`] if a pivot is `<= 0` (the factorization stops at that
/// column, `ab` is then partly overwritten);
/// [`Status::BadShape`] if `ab.len() != n * (kd + 1)`.
pub fn band_factor(ab: &mut [f64], n: usize, kd: usize) -> Status {
    if !band_shape_ok(ab, n, kd) {
        return Status::BadShape;
    }
    let w = kd + 1;
    // Column by column (LAPACK dpbtf2 order): the pivot of row j, then column j of L below
    // it. The kd dot products of a column are independent of each other, so they overlap.
    for j in 0..n {
        let j0 = j.saturating_sub(kd);
        let (done, after) = ab.split_at_mut((j + 1) * w);
        let row_j = &mut done[j * w..];
        // Position of column k in band row j is k + kd - j; slots before p0 are outside M.
        let p0 = j0 + kd - j;
        row_j[..p0].fill(0.0);
        let (lower, diag) = row_j.split_at_mut(kd);
        let lower = &lower[p0..];
        let pivot = diag[0] - dot(lower, lower);
        if let Some(status) = pivot_status(pivot) {
            return status;
        }
        diag[0] = sqrt(pivot);
        // As LAPACK, scale by the reciprocal of the pivot.
        let inv = 1.0 / diag[0];
        let row_j = &done[j * w..];
        for (i, row_i) in (j + 1..n.min(j + w)).zip(after.chunks_exact_mut(w)) {
            // L[i][k] and L[j][k] for k in i0..j, at k + kd - i and k + kd - j.
            let i0 = i.saturating_sub(kd);
            let pj = j + kd - i;
            let s = row_i[pj] - dot4(&row_i[i0 + kd - i..pj], &row_j[i0 + kd - j..kd]);
            row_i[pj] = s * inv;
        }
    }
    Status::Ok
}

/// Solves `M x = rhs` in place given the band Cholesky factor of `M` (LAPACK `dpbtrs`):
/// forward substitution `L z = rhs`, then back substitution `Lᵀ x = z`.
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, `L` in band storage as left by [`band_factor`].
/// - `rhs`: shape `(n,)`, wavelength-major like `M`; on entry `y = AᵀWp`, on exit
///   `xflux = M⁻¹ y` (Bolton & Schlegel 2010 eq 4).
///
/// # Equation
/// `z_i = (b_i - Σ_{k=j0}^{i-1} L[i][k] z_k) / L[i][i]`; then for `i = n-1, ..., 0`:
/// `x_i = z_i / L[i][i]` and `z_k -= L[i][k]·x_i` for `j0 <= k < i` (row `i` of the band is
/// read contiguously in both passes). Cost `2·n·kd` multiply-adds.
///
/// # Returns
/// [`Status::Ok`], or [`Status::BadShape`] if a length disagrees with `n`, `kd` (nothing
/// written).
pub fn band_solve(ab: &[f64], n: usize, kd: usize, rhs: &mut [f64]) -> Status {
    if !band_shape_ok(ab, n, kd) || rhs.len() != n {
        return Status::BadShape;
    }
    let w = kd + 1;
    for i in 0..n {
        let j0 = i.saturating_sub(kd);
        let row = &ab[i * w..i * w + w];
        let (done, todo) = rhs.split_at_mut(i);
        todo[0] = sub_dot(todo[0], &row[j0 + kd - i..kd], &done[j0..]) / row[kd];
    }
    for i in (0..n).rev() {
        let j0 = i.saturating_sub(kd);
        let row = &ab[i * w..i * w + w];
        let (head, tail) = rhs.split_at_mut(i);
        let x = tail[0] / row[kd];
        tail[0] = x;
        axpy(-x, &row[j0 + kd - i..kd], &mut head[j0..]);
    }
    Status::Ok
}

/// Length of the `work` slice that [`band_covariance_blocks`] needs:
/// `min(max(kd + 1, 4), n) * (n / nblock)` (a ring of the last `kd + 1` rows of `L⁻¹·E_b`,
/// at least 4; 4,366 values = 35 KB for `n = 518`, `nblock = 7`, `kd = 58`); 0 for invalid
/// shapes.
pub fn band_covariance_blocks_work_len(n: usize, kd: usize, nblock: usize) -> usize {
    interleaved_work_len(n, nblock, kd.saturating_add(1))
}

/// Diagonal covariance blocks `C_bb` of `C = M⁻¹` from the band Cholesky factor of `M`, for
/// **interleaved** blocks: block `b` (fiber `ispec = b`) is the set of unknowns
/// `q = iwave * nblock + b`, `iwave in 0..bs`, matching the wavelength-major order
/// `q = iwave * nspec + ispec` of the patch solve.
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, `L` in band storage as left by [`band_factor`].
/// - `nblock`: number of blocks (`nspec`); `n` must be a multiple of it, `bs = n / nblock`
///   (`nwave`).
/// - `out`: shape `(nblock, bs, bs)`, row-major, output:
///   `out[b][r][c] = C[r * nblock + b][c * nblock + b]` (symmetric; the `C_bb` of
///   docs/algorithm.md §4.4 step 2 in that fiber's wavelength order).
/// - `work`: scratch of at least [`band_covariance_blocks_work_len`]`(n, kd, nblock)` values.
///
/// # Equation
/// `C_bb = E_bᵀ L⁻ᵀ L⁻¹ E_b = Y_bᵀ Y_b` with `Y_b = L⁻¹ E_b` (Bolton & Schlegel 2010 eq 10
/// restricted to one fiber). `Y_b` is built row by row by banded forward substitution,
/// `y_m = (e_m - Σ_{k=m-kd}^{m-1} L[m][k]·y_k) / L[m][m]`, where `e_m` is row `m` of `E_b` and
/// only the first `(m - b) / nblock + 1` columns of `y_m` can be non-zero; each finished row
/// is added to `C_bb` as the rank-1 update `y_mᵀ y_m` and only the last `kd + 1` rows are kept.
/// Cost `≈ n²·kd/2 + n²·bs/6` multiply-adds (about 11 M for `n = 518`, `kd = 58`), against
/// `≈ n³/3` for a dense factor; inner loops are contiguous axpys of length `<= bs`.
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] if `nblock == 0`, `n % nblock != 0` or a slice is the
/// wrong size; [`Status::NotPositiveDefinite`] / [`Status::NonFinite`] if a diagonal entry of
/// `L` is `<= 0` / not finite, or [`Status::NonFinite`] if a result is not finite.
pub fn band_covariance_blocks(
    ab: &[f64],
    n: usize,
    kd: usize,
    nblock: usize,
    out: &mut [f64],
    work: &mut [f64],
) -> Status {
    if !band_shape_ok(ab, n, kd) {
        return Status::BadShape;
    }
    if nblock == 0 || out.len() != n * (n / nblock) {
        return Status::BadShape;
    }
    band_covariance_block_range(ab, n, kd, nblock, 0, out, work)
}

/// [`band_covariance_blocks`] for the consecutive blocks `first_block ..
/// first_block + out.len() / bs²` only (e.g. the core fibers of a patch, or one block per GPU
/// thread); `out` has shape `(count, bs, bs)` and `work` the same length as for all blocks.
pub fn band_covariance_block_range(
    ab: &[f64],
    n: usize,
    kd: usize,
    nblock: usize,
    first_block: usize,
    out: &mut [f64],
    work: &mut [f64],
) -> Status {
    if !band_shape_ok(ab, n, kd) {
        return Status::BadShape;
    }
    let w = kd + 1;
    let row = |m: usize| {
        let k_lo = m.saturating_sub(kd);
        (k_lo, &ab[m * w + (k_lo + kd - m)..m * w + w])
    };
    interleaved_covariance_blocks(n, nblock, first_block, w, row, out, work)
}

/// `Σ x[i]·y[i]` for the short dot products of the band factor (length `< kd`): 4
/// independent fused accumulators (one 4-wide vector) and a remainder of at most 3 into the
/// same lanes; measured 25% faster than the 8-accumulator `dot` at kd = 58.
#[inline(always)]
fn dot4(x: &[f64], y: &[f64]) -> f64 {
    let len = x.len().min(y.len());
    let (x, y) = (&x[..len], &y[..len]);
    let xc = x.chunks_exact(4);
    let yc = y.chunks_exact(4);
    let (xr, yr) = (xc.remainder(), yc.remainder());
    let mut acc = [0.0f64; 4];
    for (a, b) in xc.zip(yc) {
        for t in 0..4 {
            acc[t] = fma(a[t], b[t], acc[t]);
        }
    }
    for ((acc_t, a), b) in acc.iter_mut().zip(xr).zip(yr) {
        *acc_t = fma(*a, *b, *acc_t);
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3])
}
