//! Dense inner loops shared by the banded Cholesky ([`super::banded`]), the Jacobi inverse
//! square root ([`super::jacobi`]) and the dense reference routines (`crate::reference`, feature
//! `reference`): dot products, axpys, the pivot test and the interleaved covariance engine, so
//! that every caller runs the same instructions. All matrices are row-major `f64` slices.

use crate::math::fma;
use crate::Status;

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
