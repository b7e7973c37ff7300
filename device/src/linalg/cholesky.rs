//! Dense Cholesky factorization `M = L·Lᵀ` of a symmetric positive definite `(n, n)` matrix.
//!
//! Verbs (same as [`super::banded`]): [`cholesky_factor`], [`cholesky_solve`],
//! [`invert_lower`] and [`covariance_blocks`] (with its size query
//! [`covariance_blocks_work_len`]). All matrices are row-major `f64` slices, the column index
//! fastest: `M[i][j]` is `m[i * n + j]`.
//!
//! Role in the extraction (docs/algorithm.md §4.3-4.4, Bolton & Schlegel 2010 eqs 4 and 10-13):
//! the deconvolved flux is `xflux = M⁻¹ y` with `M = AᵀWA + diag(α²)` and `y = AᵀWp`, and its
//! covariance is `C = M⁻¹ = L⁻ᵀ L⁻¹`, of which the decorrelation (eqs 17-19) needs only the
//! per-fiber diagonal blocks `C_bb`. The production path is the banded one
//! ([`super::banded`]); this dense version is the reference it is checked against and the
//! fallback for matrices that are not banded.
//!
//! The shared inner loops (`dot`, `axpy` and the interleaved covariance engine) live here as
//! crate-private helpers so that the dense and the banded routines run the same instructions.

use crate::math::{fma, sqrt};
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

// ---------------------------------------------------------------------------------------
// Shared kernels (also used by `banded`).
// ---------------------------------------------------------------------------------------

/// `Σ x[i]·y[i]` over the common length, with 8 independent fused accumulators so that the
/// loop vectorizes (fixed summation order, identical on every target).
#[inline(always)]
pub(crate) fn dot(x: &[f64], y: &[f64]) -> f64 {
    let len = x.len().min(y.len());
    let (x, y) = (&x[..len], &y[..len]);
    let xc = x.chunks_exact(8);
    let yc = y.chunks_exact(8);
    let (xr, yr) = (xc.remainder(), yc.remainder());
    let mut acc = [0.0f64; 8];
    for (a, b) in xc.zip(yc) {
        for t in 0..8 {
            acc[t] = fma(a[t], b[t], acc[t]);
        }
    }
    // The remainder goes into independent accumulators too (no serial fma chain).
    for ((acc_t, a), b) in acc.iter_mut().zip(xr).zip(yr) {
        *acc_t = fma(*a, *b, *acc_t);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `init - Σ x[k]·y[k]` over the common length, with the **last** product applied after
/// the others: in the row-by-row substitutions (factor, forward solve) only that last
/// entry was just computed, so the rest of the dot runs ahead out of order and the
/// loop-carried dependency is a single fused multiply-add.
#[inline(always)]
pub(crate) fn sub_dot(init: f64, x: &[f64], y: &[f64]) -> f64 {
    let len = x.len().min(y.len());
    if len == 0 {
        return init;
    }
    let last = len - 1;
    fma(-x[last], y[last], init - dot(&x[..last], &y[..last]))
}

/// `y[i] += alpha·x[i]` over the common length (fused multiply-add).
#[inline(always)]
pub(crate) fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = fma(alpha, *xi, *yi);
    }
}

/// Status of a Cholesky pivot `d` (the value whose square root becomes `L[i][i]`): `None`
/// when it is usable.
#[inline(always)]
pub(crate) fn pivot_status(pivot: f64) -> Option<Status> {
    if !pivot.is_finite() {
        Some(Status::NonFinite)
    } else if pivot <= 0.0 {
        Some(Status::NotPositiveDefinite)
    } else {
        None
    }
}

/// Checks that the `n` diagonal entries `diag(i)` of a Cholesky factor are finite and
/// positive; `None` when they are.
pub(crate) fn diagonal_status(n: usize, diag: impl Fn(usize) -> f64) -> Option<Status> {
    (0..n).find_map(|i| pivot_status(diag(i)))
}

/// Rows of `Y_b` added to `C_bb` together, and nonzero `L[m][k]` applied together, by the
/// covariance engine (4 fused multiply-adds per load/store of the accumulated row).
const GROUP: usize = 4;

/// Ring depth used by [`interleaved_covariance_blocks`]: `depth` rows, at least [`GROUP`] so
/// that a group of finished rows is still in the ring, at most `n`.
fn ring_depth(n: usize, depth: usize) -> usize {
    depth.max(GROUP).min(n)
}

/// Work length of [`interleaved_covariance_blocks`]: a ring of `ring_depth(n, depth)` rows of
/// `bs` values; 0 for invalid shapes.
pub(crate) fn interleaved_work_len(n: usize, nblock: usize, depth: usize) -> usize {
    if nblock == 0 || !n.is_multiple_of(nblock) {
        return 0;
    }
    ring_depth(n, depth).saturating_mul(n / nblock)
}

/// `y[i] -= c[0]·x0[i] + c[1]·x1[i] + c[2]·x2[i] + c[3]·x3[i]`, applied in that order
/// (fused), over `y.len()` (each `x` at least that long).
#[inline(always)]
fn axpy4_sub(c: [f64; GROUP], x: [&[f64]; GROUP], y: &mut [f64]) {
    let len = y.len();
    let (x0, x1, x2, x3) = (&x[0][..len], &x[1][..len], &x[2][..len], &x[3][..len]);
    for i in 0..len {
        let mut v = fma(-c[0], x0[i], y[i]);
        v = fma(-c[1], x1[i], v);
        v = fma(-c[2], x2[i], v);
        y[i] = fma(-c[3], x3[i], v);
    }
}

/// Rank-4 update of the upper triangle of the `(bs, bs)` block `cbb` over its leading
/// `(rmax, rmax)` corner: `C[r][c] += Σ_t y_t[r]·y_t[c]` for `r <= c < rmax`, rows applied
/// in order `t = 0..4` (fused).
#[inline(always)]
fn gram4_upper(cbb: &mut [f64], bs: usize, rmax: usize, y: [&[f64]; GROUP]) {
    let (y0, y1, y2, y3) = (&y[0][..rmax], &y[1][..rmax], &y[2][..rmax], &y[3][..rmax]);
    for r in 0..rmax {
        let (a0, a1, a2, a3) = (y0[r], y1[r], y2[r], y3[r]);
        if a0 == 0.0 && a1 == 0.0 && a2 == 0.0 && a3 == 0.0 {
            continue;
        }
        let c_row = &mut cbb[r * bs + r..r * bs + rmax];
        let (z0, z1, z2, z3) = (&y0[r..], &y1[r..], &y2[r..], &y3[r..]);
        let len = c_row.len();
        let (z0, z1, z2, z3) = (&z0[..len], &z1[..len], &z2[..len], &z3[..len]);
        for c in 0..len {
            let mut v = fma(a0, z0[c], c_row[c]);
            v = fma(a1, z1[c], v);
            v = fma(a2, z2[c], v);
            c_row[c] = fma(a3, z3[c], v);
        }
    }
}

/// Rank-1 update of the upper triangle: `C[r][c] += y[r]·y[c]` for `r <= c < y.len()`.
#[inline(always)]
fn gram1_upper(cbb: &mut [f64], bs: usize, y: &[f64]) {
    let rmax = y.len();
    for r in 0..rmax {
        let yr = y[r];
        if yr != 0.0 {
            axpy(yr, &y[r..rmax], &mut cbb[r * bs + r..r * bs + rmax]);
        }
    }
}

/// The covariance-block engine shared by the dense and the banded routines.
///
/// `row(m)` returns `(k_lo, L[m][k_lo..=m])`: row `m` of the lower-triangular factor from its
/// first stored column `k_lo` to the diagonal, contiguous (`k_lo = 0` dense,
/// `max(m - kd, 0)` banded). `depth` is the number of previous rows a forward-substitution
/// row reads plus one (`n` dense, `kd + 1` banded), so `Y_b` is kept as a ring of
/// `ring_depth(n, depth)` rows of `bs` values in `work`: row `m` lives in slot `m % depth`.
///
/// For block `b` and row `m >= b`, only the first `rmax = (m - b) / nblock + 1` columns of
/// `y_m` can be non-zero; every loop runs over that prefix (contiguous, vectorizable). Zero
/// entries of `L` are skipped, so the dense and the banded routines, given the same factor,
/// perform the same operations in the same order (bitwise-equal results).
pub(crate) fn interleaved_covariance_blocks<'a, R>(
    n: usize,
    nblock: usize,
    first_block: usize,
    depth: usize,
    row: R,
    out: &mut [f64],
    work: &mut [f64],
) -> Status
where
    R: Fn(usize) -> (usize, &'a [f64]),
{
    if nblock == 0 || !n.is_multiple_of(nblock) || depth == 0 {
        return Status::BadShape;
    }
    let bs = n / nblock;
    let work_len = interleaved_work_len(n, nblock, depth);
    let depth = ring_depth(n, depth);
    let nout = out.len().checked_div(bs * bs).unwrap_or(0);
    if nout * bs * bs != out.len()
        || first_block.checked_add(nout).is_none_or(|end| end > nblock)
        || work.len() < work_len
    {
        return Status::BadShape;
    }
    if let Some(status) = diagonal_status(n, |m| {
        let (k_lo, l_row) = row(m);
        l_row.get(m - k_lo).copied().unwrap_or(f64::NAN)
    }) {
        return status;
    }
    if n == 0 {
        return Status::Ok;
    }
    let work = &mut work[..work_len];
    for (i, cbb) in out.chunks_exact_mut(bs * bs).enumerate() {
        let b = first_block + i;
        cbb.fill(0.0);
        let mut slot = b % depth;
        // Finished rows of Y_b (ending at the current one) not yet added to C_bb.
        let mut pending = 0usize;
        for m in b..n {
            let rmax = (m - b) / nblock + 1;
            let (k_lo, l_row) = row(m);
            let k_start = k_lo.max(b);
            {
                let (head, rest) = work.split_at_mut(slot * bs);
                let (y_full, tail) = rest.split_at_mut(bs);
                let (head, tail) = (&*head, &*tail);
                // Row k of Y_b (k != m) from its ring slot, first rmax columns.
                let ring = |ks: usize| -> &[f64] {
                    if ks < slot {
                        &head[ks * bs..ks * bs + rmax]
                    } else {
                        &tail[(ks - slot - 1) * bs..(ks - slot - 1) * bs + rmax]
                    }
                };
                y_full.fill(0.0);
                let y = &mut y_full[..rmax];
                if (m - b).is_multiple_of(nblock) {
                    y[rmax - 1] = 1.0;
                }
                // y_m = (e_m - Σ_k L[m][k]·y_k) / L[m][m], nonzero L[m][k] four at a time.
                let mut coef = [0.0f64; GROUP];
                let mut slots = [0usize; GROUP];
                let mut count = 0;
                let mut ks = k_start % depth;
                for &lmk in &l_row[k_start - k_lo..m - k_lo] {
                    if lmk != 0.0 {
                        coef[count] = lmk;
                        slots[count] = ks;
                        count += 1;
                        if count == GROUP {
                            axpy4_sub(coef, slots.map(ring), y);
                            count = 0;
                        }
                    }
                    ks += 1;
                    if ks == depth {
                        ks = 0;
                    }
                }
                for (&c, &ks) in coef.iter().zip(&slots).take(count) {
                    axpy(-c, ring(ks), y);
                }
                let d = l_row[m - k_lo];
                for v in y.iter_mut() {
                    *v /= d;
                }
            }
            pending += 1;
            if pending == GROUP || m + 1 == n {
                // Rows m+1-pending..=m are still in the ring (depth >= GROUP); entries past a
                // row's own rmax are zero, so all are used over the current rmax.
                let work = &*work;
                let ring_at = |back: usize| {
                    let s = (slot + depth - back) % depth;
                    &work[s * bs..s * bs + rmax]
                };
                if pending == GROUP {
                    gram4_upper(cbb, bs, rmax, [3, 2, 1, 0].map(ring_at));
                } else {
                    for back in (0..pending).rev() {
                        gram1_upper(cbb, bs, ring_at(back));
                    }
                }
                pending = 0;
            }
            slot += 1;
            if slot == depth {
                slot = 0;
            }
        }
        // Mirror the upper triangle into the lower one.
        for r in 1..bs {
            for c in 0..r {
                cbb[r * bs + c] = cbb[c * bs + r];
            }
        }
    }
    if out.iter().all(|v| v.is_finite()) {
        Status::Ok
    } else {
        Status::NonFinite
    }
}
