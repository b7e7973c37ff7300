//! Symmetric eigendecomposition by Householder tridiagonalization and implicit QL
//! ([`symmetric_eigen`]), and the inverse square root `C^(-1/2)` built from it
//! ([`inverse_sqrt_eigh`]; [`inverse_sqrt_eigh_batch`] for the blocks of a patch together):
//! the CPU backend's method for the per-fiber covariance blocks (docs/algorithm.md §4.4; host
//! only, the GPU kernels keep [`super::jacobi`]). It does about half the arithmetic of the
//! one-sided Jacobi of [`super::jacobi::inverse_sqrt`] with every inner loop over contiguous
//! rows, and agrees with it and with the float64 references to ~1e-13 of `max|Q|` on real
//! covariance blocks (device/tests/tridiagonal.rs).
//!
//! Speed (docs/algorithm.md §4.4): the matrix is normalized by a power of two; the work runs
//! on rows padded to whole 4-wide vectors (no scalar remainders) and aligned on them (no load
//! splits a cache line); each tridiagonalization step is one pass over the trailing rows (the
//! rank-2 update and the next step's product fused); the QL recurrence has no data-dependent
//! branch and its rotations' vector work lags it by a few rotations, consecutive rotations of
//! a sweep applied in pairs (one pass over three rows); [`inverse_sqrt_eigh_batch`] advances
//! the QL recurrences of up to [`QL_BATCH`] blocks round-robin, so that their serial chains of
//! square roots and divisions overlap; the reflectors' accumulation sums its products in
//! registers, column block by column block; `C^(-1/2)` is a register-blocked
//! `Zᵀ·diag(coef)·Z`. These fusions and the interleaving keep every entry's operations and
//! their order, so results are bitwise those of the plain loops, block by block.
//!
//! Accuracy: tridiagonalization and QL are backward stable (eigenvalues within
//! `~n·ε·‖C‖` of the exact ones: absolute, not relative, accuracy), so entries of
//! `C^(-1/2)` have errors of `~n·ε·κ` relative to `max|Q|` (`κ` the condition number after the
//! clip), the bound the Jacobi route and LAPACK-based codes (numpy's `eigh` in gpu_specter) are
//! tested to as well.

use crate::math::{abs, fma, sqrt};
use crate::Status;

/// QL iterations allowed per eigenvalue before [`Status::NoConvergence`] (LAPACK `dsteqr`
/// allows 30 per eigenvalue in all; real covariance blocks need 1-3).
pub const QL_MAX_ITERATIONS: usize = 30;

/// Width of the vectors the inner loops are written for (4 `f64`: AVX2). The working matrices
/// have rows padded with zeros to a multiple of it ([`padded`]), and every row operation runs
/// over whole aligned groups, so no loop has a scalar remainder.
const LANES: usize = 4;

/// `n` rounded up to a multiple of [`LANES`] (the row stride of the working matrices).
fn padded(n: usize) -> Option<usize> {
    n.checked_add(LANES - 1).map(|m| m / LANES * LANES)
}

/// Values a `work` slice holds beyond its arrays so that they can start on a whole vector
/// ([`aligned`]).
const ALIGN_SLACK: usize = LANES - 1;

/// `work` from its first value on a boundary of [`LANES`] values (32 bytes; at most
/// [`ALIGN_SLACK`] values dropped). The padded rows are then whole aligned vectors: no load or
/// store splits a cache line (a 74 × 74 eigendecomposition took 14% longer on misaligned
/// rows, AMD EPYC). The arithmetic does not depend on the alignment.
fn aligned(work: &mut [f64]) -> &mut [f64] {
    let offset = work
        .as_ptr()
        .align_offset(LANES * core::mem::size_of::<f64>());
    let start = offset.min(ALIGN_SLACK).min(work.len());
    &mut work[start..]
}

/// `n · padded(n) + k`, `None` on overflow.
fn padded_square_plus(n: usize, k: usize) -> Option<usize> {
    padded(n)
        .and_then(|ld| ld.checked_mul(n))
        .and_then(|m| m.checked_add(k))
}

/// Length of the `work` slice that [`symmetric_eigen`] needs: the padded matrix and
/// eigenvectors (`2·n·ld`, `ld` = `n` rounded up to a multiple of 4), `2n + 4·ld` for the
/// off-diagonal, the reflector scalars and four vectors, and 3 to align them on whole vectors
/// (0 for `n = 0`); 0 if that overflows.
pub fn symmetric_eigen_work_len(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let Some(ld) = padded(n) else { return 0 };
    padded_square_plus(n, 0)
        .and_then(|m| m.checked_mul(2))
        .and_then(|m| m.checked_add(n.checked_mul(2)?))
        .and_then(|m| m.checked_add(ld.checked_mul(4)?))
        .and_then(|m| m.checked_add(ALIGN_SLACK))
        .unwrap_or(0)
}

/// Length of the `work` slice that [`inverse_sqrt_eigh`] needs: the scratch that a block
/// uses while it is reduced or its result composed ([`inverse_sqrt_shared_len`]) and what it
/// keeps in between ([`inverse_sqrt_block_len`]); 0 for `n = 0` or if that overflows.
pub fn inverse_sqrt_eigh_work_len(n: usize) -> usize {
    inverse_sqrt_eigh_batch_work_len(n, 1)
}

/// Values of the `work` of [`inverse_sqrt_eigh`] and [`inverse_sqrt_eigh_batch`] that a block
/// uses only while it is reduced to tridiagonal form or its result composed (one part for
/// all the blocks of a batch): the padded matrix (later the panel of [`compose`]), the
/// reflector scalars and four vectors of [`tridiagonal_form`], and 3 to align them.
fn inverse_sqrt_shared_len(n: usize) -> Option<usize> {
    let ld = padded(n)?;
    padded_square_plus(n, n)?
        .checked_add(ld.checked_mul(4)?)?
        .checked_add(ALIGN_SLACK)
}

/// Values of the `work` of [`inverse_sqrt_eigh`] and [`inverse_sqrt_eigh_batch`] that each
/// block keeps from its reduction to its result: the eigenvectors (`n` padded rows), the
/// diagonal (then the eigenvalues) and the off-diagonal, and 3 to align them.
fn inverse_sqrt_block_len(n: usize) -> Option<usize> {
    padded_square_plus(n, n.checked_mul(2)?)?.checked_add(ALIGN_SLACK)
}

/// `sqrt(a² + b²)` without overflow or harmful underflow.
#[inline(always)]
fn hypot(a: f64, b: f64) -> f64 {
    let (a, b) = (abs(a), abs(b));
    let (big, small) = if a > b { (a, b) } else { (b, a) };
    if big == 0.0 {
        return 0.0;
    }
    let r = small / big;
    big * sqrt(1.0 + r * r)
}

/// Eigenvalues and eigenvectors of the symmetric `(n, n)` row-major matrix `a` (destroyed; both
/// triangles are read).
///
/// # Algorithm
/// 1. Householder reduction to tridiagonal form `a = Z T Zᵀ` (LAPACK `dsytd2`, on the full
///    symmetric matrix so that the matrix-vector product and the rank-2 update run over
///    contiguous rows, fused in one pass per step).
/// 2. `Z` accumulated from the reflectors (backward, `dorg2l`-style), stored transposed.
/// 3. Implicit QL with Wilkinson-type shifts on `T` (EISPACK `tql2`), each plane rotation
///    applied to two contiguous rows of `Zᵀ`.
///
/// The matrices are worked on with rows padded to a multiple of 4 (in `work`).
///
/// # Parameters
/// - `a`: shape `(n, n)`, row-major, symmetric; destroyed.
/// - `values`: `n` eigenvalues, unordered.
/// - `vectors`: shape `(n, n)`, row-major: row `i` is the unit eigenvector of `values[i]`.
/// - `work`: at least [`symmetric_eigen_work_len`]`(n)` values.
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] for wrong slice lengths; [`Status::NonFinite`] for a
/// NaN or infinity in `a` or the result; [`Status::NoConvergence`] if an eigenvalue needs more
/// than [`QL_MAX_ITERATIONS`] QL iterations.
pub fn symmetric_eigen(
    a: &mut [f64],
    n: usize,
    values: &mut [f64],
    vectors: &mut [f64],
    work: &mut [f64],
) -> Status {
    let nn = match n.checked_mul(n) {
        Some(nn) => nn,
        None => return Status::BadShape,
    };
    let needed = symmetric_eigen_work_len(n);
    if a.len() != nn
        || vectors.len() != nn
        || values.len() != n
        || work.len() < needed
        || (n > 0 && needed == 0)
    {
        return Status::BadShape;
    }
    if n == 0 {
        return Status::Ok;
    }
    let Some(ld) = padded(n) else {
        return Status::BadShape;
    };
    let (ap, rest) = aligned(work).split_at_mut(n * ld);
    let (zt, rest) = rest.split_at_mut(n * ld);
    copy_padded(a, n, ap, ld);
    let k = normalize(ap);
    let status = eigen_padded(ap, n, ld, values, zt, rest);
    if status != Status::Ok {
        return status;
    }
    // Undo the scaling by 2^(−2k) (exactly, barring overflow).
    for x in values.iter_mut() {
        *x = *x * pow2(k) * pow2(k);
    }
    if values.iter().any(|x| !x.is_finite()) {
        return Status::NonFinite;
    }
    for (row, src) in vectors.chunks_exact_mut(n).zip(zt.chunks_exact(ld)) {
        row.copy_from_slice(&src[..n]);
    }
    Status::Ok
}

/// Scales `a` by `2^(−2k)` (exact: a power of two) so that its largest magnitude is in
/// `[1/4, 4)`, and returns `k`; 0 (no scaling) when that magnitude is 0 or not finite. The
/// eigen-decomposition then runs on entries of order 1: no squared quantity (reflector norms,
/// the QL rotations' `f² + g²`) underflows or overflows, whatever the units of `a`, and the
/// results, scaled back by powers of two, do not depend on them.
fn normalize(a: &mut [f64]) -> i32 {
    let max = a.iter().fold(0.0f64, |m, x| m.max(abs(*x)));
    if max == 0.0 || !max.is_finite() {
        return 0;
    }
    // Binary exponent of max (subnormals first brought into the normal range).
    let (m, shift) = if max < f64::MIN_POSITIVE {
        (max * pow2(600), 600)
    } else {
        (max, 0)
    };
    let exponent = ((m.to_bits() >> 52) & 0x7ff) as i32 - 1023 - shift;
    let k = exponent.div_euclid(2);
    let scale = pow2(-k);
    for x in a.iter_mut() {
        *x = *x * scale * scale;
    }
    k
}

/// `2^k` for `|k| <= 1022`.
fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// `dst` (rows of stride `ld`, zero padding) from the `(n, n)` row-major `src`.
fn copy_padded(src: &[f64], n: usize, dst: &mut [f64], ld: usize) {
    for (d, s) in dst.chunks_exact_mut(ld).zip(src.chunks_exact(n)) {
        d[..n].copy_from_slice(s);
        d[n..].fill(0.0);
    }
}

/// [`symmetric_eigen`] on `ap` (`n` rows of stride `ld`, zero padded; destroyed): the
/// eigenvectors as the rows of `zt` (same layout); `work` holds `2n + 4·ld` values.
fn eigen_padded(
    ap: &mut [f64],
    n: usize,
    ld: usize,
    values: &mut [f64],
    zt: &mut [f64],
    work: &mut [f64],
) -> Status {
    let (offdiag, scratch) = work.split_at_mut(n);
    let status = tridiagonal_form(ap, n, ld, values, offdiag, zt, scratch);
    if status != Status::Ok {
        return status;
    }
    let [status] = implicit_ql_interleaved(&mut [Some(QlChain::new(values, offdiag, zt, ld))]);
    if status != Status::Ok {
        return status;
    }
    eigenpairs_finite(values, zt)
}

/// [`Status::NonFinite`] if an eigenvalue or an entry of the eigenvectors `zt` is not finite.
fn eigenpairs_finite(values: &[f64], zt: &[f64]) -> Status {
    if values.iter().chain(zt.iter()).any(|x| !x.is_finite()) {
        return Status::NonFinite;
    }
    Status::Ok
}

/// The tridiagonal form `T = Zᵀ·A·Z` of `ap` (`n` rows of stride `ld`, zero padded;
/// destroyed) that implicit QL starts from: `diag`, `offdiag` and `Zᵀ` in `zt`; `scratch`
/// holds `n + 4·ld` values. [`Status::NonFinite`] for a NaN or infinity in `ap`.
fn tridiagonal_form(
    ap: &mut [f64],
    n: usize,
    ld: usize,
    diag: &mut [f64],
    offdiag: &mut [f64],
    zt: &mut [f64],
    scratch: &mut [f64],
) -> Status {
    if ap.iter().any(|x| !x.is_finite()) {
        return Status::NonFinite;
    }
    let (tau, rest) = scratch.split_at_mut(n);
    let (v, rest) = rest.split_at_mut(ld);
    let (w, rest) = rest.split_at_mut(ld);
    let (v_next, rest) = rest.split_at_mut(ld);
    let p_next = &mut rest[..ld];
    tridiagonalize(ap, n, ld, diag, offdiag, tau, [v, &mut *w, v_next, p_next]);
    accumulate_reflectors(ap, n, ld, tau, zt, w);
    Status::Ok
}

/// Householder tridiagonalization of the full symmetric `a` (`n` rows of stride `ld`, zero
/// padded): `diag`, `offdiag[k] = T[k][k+1]` (`offdiag[n-1] = 0`), the reflector of step `k`
/// in `a[k][k+1..n]` (its first entry 1 implied) with scalar `tau[k]`.
///
/// Each step is one pass over the trailing rows: row `i` gets the rank-2 update of step `k`
/// and, while it is in cache, its product with the reflector of step `k + 1` (built from row
/// `k + 1`, updated first), so that step `k + 1`'s matrix-vector product costs no second pass.
/// The vectors (`v`, `w`, the next `v`, the next `p`; `ld` values each) are kept zero outside
/// their active columns, so that every row operation runs over whole aligned groups of
/// [`LANES`] from the group holding column `k + 1` (the columns before it meet zeros).
fn tridiagonalize(
    a: &mut [f64],
    n: usize,
    ld: usize,
    diag: &mut [f64],
    offdiag: &mut [f64],
    tau: &mut [f64],
    vectors: [&mut [f64]; 4],
) {
    let [mut v, w, mut v_next, p] = vectors;
    p.fill(0.0);
    tau.fill(0.0);
    offdiag.fill(0.0);
    let steps = n.saturating_sub(2);
    if steps > 0 {
        // Step 0's reflector and p = τ·A22·v (later steps get theirs from the previous pass).
        let (head, trailing) = a.split_at_mut(ld);
        let (beta, t) = reflector(&mut head[1..n]);
        offdiag[0] = beta;
        tau[0] = t;
        v.copy_from_slice(&head[..ld]);
        v[0] = 0.0;
        for (i, row) in trailing.chunks_exact(ld).enumerate() {
            p[i + 1] = t * dot_lanes(row, v);
        }
    }
    for k in 0..steps {
        let t = tau[k];
        let start = (k + 1) / LANES * LANES;
        // w = p − (τ/2)(pᵀv)·v on columns k+1..n, zero elsewhere (v is zero outside them and
        // p finite everywhere).
        let kappa = -0.5 * t * dot_lanes(&p[start..], &v[start..]);
        w.fill(0.0);
        for j in k + 1..n {
            w[j] = fma(kappa, v[j], p[j]);
        }
        let (_, trailing) = a.split_at_mut((k + 1) * ld);
        let (first, rest) = trailing.split_at_mut(ld);
        rank2_lanes(
            &mut first[start..],
            v[k + 1],
            w[k + 1],
            &v[start..],
            &w[start..],
        );
        if k + 1 < steps {
            let (beta, t_next) = reflector(&mut first[k + 2..n]);
            offdiag[k + 1] = beta;
            tau[k + 1] = t_next;
            v_next.fill(0.0);
            v_next[k + 2..n].copy_from_slice(&first[k + 2..n]);
            for (r, row) in rest.chunks_exact_mut(ld).enumerate() {
                let i = k + 2 + r;
                let row = &mut row[start..];
                p[i] = t_next
                    * rank2_dot_lanes(row, v[i], w[i], &v[start..], &w[start..], &v_next[start..]);
            }
            core::mem::swap(&mut v, &mut v_next);
        } else {
            for (r, row) in rest.chunks_exact_mut(ld).enumerate() {
                let i = k + 2 + r;
                rank2_lanes(&mut row[start..], v[i], w[i], &v[start..], &w[start..]);
            }
        }
    }
    for (k, d) in diag.iter_mut().enumerate() {
        *d = a[k * ld + k];
    }
    if n >= 2 {
        offdiag[n - 2] = a[(n - 2) * ld + n - 1];
    }
    offdiag[n - 1] = 0.0;
}

/// The Householder reflector `H = I − τ·v·vᵀ` with `H·x = β·e₁` (LAPACK `dlarfg`): `x` becomes
/// `v` (`v₀ = 1` stored); returns `(β, τ)`, `(x₀, 0)` when `x[1..]` is zero.
#[inline(always)]
fn reflector(x: &mut [f64]) -> (f64, f64) {
    let alpha = x[0];
    let mut xnorm2 = 0.0;
    for &xi in &x[1..] {
        xnorm2 = fma(xi, xi, xnorm2);
    }
    if xnorm2 == 0.0 {
        x[1..].fill(0.0);
        return (alpha, 0.0);
    }
    let norm = hypot(alpha, sqrt(xnorm2));
    let beta = if alpha >= 0.0 { -norm } else { norm };
    let t = (beta - alpha) / beta;
    let scale = 1.0 / (alpha - beta);
    for xi in x[1..].iter_mut() {
        *xi *= scale;
    }
    x[0] = 1.0;
    (beta, t)
}

/// `row −= vi·w + wi·v` over whole groups of [`LANES`] (the lengths are multiples of it).
#[inline(always)]
fn rank2_lanes(row: &mut [f64], vi: f64, wi: f64, v: &[f64], w: &[f64]) {
    for ((x, &vj), &wj) in row.iter_mut().zip(v).zip(w) {
        *x = fma(-vi, wj, fma(-wi, vj, *x));
    }
}

/// [`rank2_lanes`] on `row`, then `row · y` as [`dot_lanes`] computes it (the same
/// accumulators in the same order), in one pass.
#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
#[inline(always)]
fn rank2_dot_lanes(row: &mut [f64], vi: f64, wi: f64, v: &[f64], w: &[f64], y: &[f64]) -> f64 {
    let (mut lo, mut hi) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut rc = row.chunks_exact_mut(2 * LANES);
    let (mut vc, mut wc, mut yc) = (
        v.chunks_exact(2 * LANES),
        w.chunks_exact(2 * LANES),
        y.chunks_exact(2 * LANES),
    );
    for (((x, a), b), c) in (&mut rc).zip(&mut vc).zip(&mut wc).zip(&mut yc) {
        for t in 0..LANES {
            x[t] = fma(-vi, b[t], fma(-wi, a[t], x[t]));
            x[t + LANES] = fma(-vi, b[t + LANES], fma(-wi, a[t + LANES], x[t + LANES]));
            lo[t] = fma(x[t], c[t], lo[t]);
            hi[t] = fma(x[t + LANES], c[t + LANES], hi[t]);
        }
    }
    let (x, a, b, c) = (
        rc.into_remainder(),
        vc.remainder(),
        wc.remainder(),
        yc.remainder(),
    );
    if let (Some(x), Some(a), Some(b), Some(c)) = (
        x.first_chunk_mut::<LANES>(),
        a.first_chunk::<LANES>(),
        b.first_chunk::<LANES>(),
        c.first_chunk::<LANES>(),
    ) {
        for t in 0..LANES {
            x[t] = fma(-vi, b[t], fma(-wi, a[t], x[t]));
            lo[t] = fma(x[t], c[t], lo[t]);
        }
    }
    ((lo[0] + hi[0]) + (lo[1] + hi[1])) + ((lo[2] + hi[2]) + (lo[3] + hi[3]))
}

/// [`rank2_lanes`] on `row`, then `row · y` as [`dot_lanes`] computes it (the same
/// accumulators in the same order), in one pass: AVX2 + FMA (the compiler's own vectorization
/// of the portable version mixes 2-wide vectors and shuffles).
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline(always)]
fn rank2_dot_lanes(row: &mut [f64], vi: f64, wi: f64, v: &[f64], w: &[f64], y: &[f64]) -> f64 {
    use core::arch::x86_64::{
        _mm256_add_pd, _mm256_fmadd_pd, _mm256_loadu_pd, _mm256_set1_pd, _mm256_setzero_pd,
        _mm256_storeu_pd,
    };
    let n = row.len().min(v.len()).min(w.len()).min(y.len()) / LANES * LANES;
    let (xp, vp, wp, yp) = (row.as_mut_ptr(), v.as_ptr(), w.as_ptr(), y.as_ptr());
    let mut s = [0.0f64; LANES];
    // SAFETY: the intrinsics' target features (AVX2, FMA) are enabled for the whole build
    // (the cfg above); every load and store covers 4 values at an offset j with j + 4 <= n,
    // n at most each slice's length (and 4 for `s`); `row` is exclusively borrowed, so no
    // other slice overlaps it.
    unsafe {
        let (nvi, nwi) = (_mm256_set1_pd(-vi), _mm256_set1_pd(-wi));
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let mut j = 0;
        while j + 2 * LANES <= n {
            let x0 = _mm256_fmadd_pd(nwi, _mm256_loadu_pd(vp.add(j)), _mm256_loadu_pd(xp.add(j)));
            let x0 = _mm256_fmadd_pd(nvi, _mm256_loadu_pd(wp.add(j)), x0);
            _mm256_storeu_pd(xp.add(j), x0);
            lo = _mm256_fmadd_pd(x0, _mm256_loadu_pd(yp.add(j)), lo);
            let k = j + LANES;
            let x1 = _mm256_fmadd_pd(nwi, _mm256_loadu_pd(vp.add(k)), _mm256_loadu_pd(xp.add(k)));
            let x1 = _mm256_fmadd_pd(nvi, _mm256_loadu_pd(wp.add(k)), x1);
            _mm256_storeu_pd(xp.add(k), x1);
            hi = _mm256_fmadd_pd(x1, _mm256_loadu_pd(yp.add(k)), hi);
            j += 2 * LANES;
        }
        if j + LANES <= n {
            let x0 = _mm256_fmadd_pd(nwi, _mm256_loadu_pd(vp.add(j)), _mm256_loadu_pd(xp.add(j)));
            let x0 = _mm256_fmadd_pd(nvi, _mm256_loadu_pd(wp.add(j)), x0);
            _mm256_storeu_pd(xp.add(j), x0);
            lo = _mm256_fmadd_pd(x0, _mm256_loadu_pd(yp.add(j)), lo);
        }
        _mm256_storeu_pd(s.as_mut_ptr(), _mm256_add_pd(lo, hi));
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

/// `x · y` over whole groups of [`LANES`], with 8 independent fused accumulators (fixed
/// order: element `j` goes to accumulator `j mod 8`, a last group of 4 to accumulators 0-3).
#[inline(always)]
fn dot_lanes(x: &[f64], y: &[f64]) -> f64 {
    let (mut lo, mut hi) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (xc, yc) = (x.chunks_exact(2 * LANES), y.chunks_exact(2 * LANES));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        let (Some(a), Some(b)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) else {
            continue;
        };
        for t in 0..LANES {
            lo[t] = fma(a[t], b[t], lo[t]);
            hi[t] = fma(a[t + LANES], b[t + LANES], hi[t]);
        }
    }
    if let (Some(a), Some(b)) = (xr.first_chunk::<LANES>(), yr.first_chunk::<LANES>()) {
        for t in 0..LANES {
            lo[t] = fma(a[t], b[t], lo[t]);
        }
    }
    ((lo[0] + hi[0]) + (lo[1] + hi[1])) + ((lo[2] + hi[2]) + (lo[3] + hi[3]))
}

/// `Zᵀ` (row `j` = column `j` of `Z = H₀·H₁⋯H_{n−3}`; rows of stride `ld`, zero padded) into
/// `zt`, from the reflectors that [`tridiagonalize`] left in `a`; `y` holds `ld` values.
fn accumulate_reflectors(
    a: &[f64],
    n: usize,
    ld: usize,
    tau: &[f64],
    zt: &mut [f64],
    y: &mut [f64],
) {
    // Z = H₀(H₁(⋯(H_{n−3}·I))): applying H_k from the left touches rows and columns k+1.. only
    // (the rows k+1.. of the partial product are zero before column k+1, so the aligned
    // groups from column k+1's start meet zeros there).
    zt.fill(0.0);
    for i in 0..n {
        zt[i * ld + i] = 1.0;
    }
    for k in (0..n.saturating_sub(2)).rev() {
        let t = tau[k];
        if t == 0.0 {
            continue;
        }
        let start = (k + 1) / LANES * LANES;
        let vtail = &a[k * ld + k + 2..k * ld + n];
        let y = &mut y[start..ld];
        // y = vᵀ·Z[k+1.., ..] (v₀ = 1; each column summed over the rows in order), then
        // Z[r][..] −= τ·v_r·y.
        let mut c0 = start;
        while c0 + 8 * LANES <= ld {
            column_sums::<{ 8 * LANES }>(zt, ld, k + 1, vtail, c0, &mut y[c0 - start..]);
            c0 += 8 * LANES;
        }
        while c0 + 2 * LANES <= ld {
            column_sums::<{ 2 * LANES }>(zt, ld, k + 1, vtail, c0, &mut y[c0 - start..]);
            c0 += 2 * LANES;
        }
        if c0 < ld {
            column_sums::<LANES>(zt, ld, k + 1, vtail, c0, &mut y[c0 - start..]);
        }
        axpy_lanes(-t, y, &mut zt[(k + 1) * ld + start..(k + 2) * ld]);
        for (r, &vr) in vtail.iter().enumerate() {
            let row = (k + 2 + r) * ld;
            axpy_lanes(-t * vr, y, &mut zt[row + start..row + ld]);
        }
    }
    // In place transpose: rows become the columns of Z.
    for i in 0..n {
        for j in i + 1..n {
            zt.swap(i * ld + j, j * ld + i);
        }
    }
}

/// `y[..W] = Z[first][c0..c0 + W] + Σ_r v_r·Z[first + 1 + r][c0..c0 + W]` (rows of stride
/// `ld`), each column summed over the rows in order in a register.
#[inline(always)]
fn column_sums<const W: usize>(
    z: &[f64],
    ld: usize,
    first: usize,
    v: &[f64],
    c0: usize,
    y: &mut [f64],
) {
    let Some(head) = z[first * ld + c0..].first_chunk::<W>() else {
        return;
    };
    let mut acc = *head;
    for (r, &vr) in v.iter().enumerate() {
        let Some(row) = z[(first + 1 + r) * ld + c0..].first_chunk::<W>() else {
            return;
        };
        for (a, &x) in acc.iter_mut().zip(row) {
            *a = fma(vr, x, *a);
        }
    }
    if let Some(out) = y.first_chunk_mut::<W>() {
        *out = acc;
    }
}

/// `y += alpha·x` over whole groups of [`LANES`].
#[inline(always)]
fn axpy_lanes(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = fma(alpha, xi, *yi);
    }
}

/// Rotations generated but not yet applied to the eigenvector rows by [`implicit_ql`] (the
/// application lags the generation by this many rotations so that each rotation's vector work
/// is ready to run while the scalar recurrence computes the next ones).
const QL_LAG: usize = 4;

/// Ring of pending rotations `(i, c, s)` (a power of two above [`QL_LAG`]).
const QL_RING: usize = 8;

/// Implicit QL on the tridiagonal `(diag, offdiag)` of several matrices at once (EISPACK
/// `tql2`, Numerical Recipes `tqli`), each chain rotating the rows of its `zt`: every `diag`
/// ends as the eigenvalues, row `i` of its `zt` as the eigenvector of `diag[i]`. Returns each
/// chain's status ([`Status::Ok`], or [`Status::NoConvergence`] when an eigenvalue needs more
/// than [`QL_MAX_ITERATIONS`] iterations; `Ok` for an empty slot).
///
/// Each chain's scalar recurrence is one serial chain of dependent operations per rotation (a
/// square root and a division), so it is kept short ([`givens`]) and the rotations' vector
/// work on `zt` is applied [`QL_LAG`] rotations behind it, consecutive rotations two at a
/// time ([`apply_pending_two`]). The chains are independent, and they advance round-robin:
/// one rotation of every chain, then the pending vector work of every chain (the recurrences
/// first, so that out-of-order execution overlaps their latencies with each other and with
/// the vector work), for as many rounds as every chain's current sweep still has rotations;
/// then the chains whose sweep ended (or whose rotation underflowed) start their next one.
/// Each chain does exactly the operations, in the same order, that it does alone (`K = 1`),
/// so its results do not depend on the others.
fn implicit_ql_interleaved<const K: usize>(chains: &mut [Option<QlChain<'_>>; K]) -> [Status; K] {
    let mut state = Interleaved {
        chains,
        sweeps: [Sweep::default(); K],
        running: [false; K],
        status: [Status::Ok; K],
    };
    while let Some(rounds) = state.start_sweeps() {
        let underflow = state.rotate_rounds(rounds);
        state.end_sweeps(underflow);
    }
    state.status
}

/// The state of [`implicit_ql_interleaved`]: the chains still iterating (a finished one's
/// slot emptied, its status kept), and the sweep each is running.
struct Interleaved<'c, 'a, const K: usize> {
    chains: &'c mut [Option<QlChain<'a>>; K],
    sweeps: [Sweep; K],
    running: [bool; K],
    status: [Status; K],
}

impl<const K: usize> Interleaved<'_, '_, K> {
    /// Starts a sweep in every chain that has none (retiring the chains that finish instead);
    /// returns the rotations that every running sweep still has (the rounds that can run
    /// before one of them ends), `None` when every chain has finished.
    #[inline(always)]
    fn start_sweeps(&mut self) -> Option<usize> {
        let mut rounds = None;
        for (((slot, sweep), running), status) in self
            .chains
            .iter_mut()
            .zip(self.sweeps.iter_mut())
            .zip(self.running.iter_mut())
            .zip(self.status.iter_mut())
        {
            let Some(chain) = slot else {
                continue;
            };
            if !*running {
                match chain.next_sweep() {
                    NextSweep::Run(next) => {
                        *sweep = next;
                        *running = true;
                    }
                    NextSweep::Finished(finished) => {
                        *status = finished;
                        *slot = None;
                        continue;
                    }
                }
            }
            let left = sweep.next - chain.l;
            rounds = Some(rounds.map_or(left, |r: usize| r.min(left)));
        }
        rounds
    }

    /// Up to `rounds` rounds of one rotation of every running chain, then every chain's
    /// pending vector work; stops after a round where a rotation underflowed. Returns the
    /// chains whose rotation underflowed.
    #[inline(always)]
    fn rotate_rounds(&mut self, rounds: usize) -> [bool; K] {
        let mut underflow = [false; K];
        for _ in 0..rounds {
            let mut any_underflow = false;
            for ((slot, sweep), underflow) in self
                .chains
                .iter_mut()
                .zip(self.sweeps.iter_mut())
                .zip(underflow.iter_mut())
            {
                if let Some(chain) = slot {
                    if !chain.rotate(sweep) {
                        *underflow = true;
                        any_underflow = true;
                    }
                }
            }
            for chain in self.chains.iter_mut().flatten() {
                chain.apply_lagged();
            }
            if any_underflow {
                break;
            }
        }
        underflow
    }

    /// Ends the sweeps that reached their chain's `l` (and those cut short by an underflow).
    #[inline(always)]
    fn end_sweeps(&mut self, underflow: [bool; K]) {
        for (((slot, sweep), running), underflow) in self
            .chains
            .iter_mut()
            .zip(&self.sweeps)
            .zip(self.running.iter_mut())
            .zip(underflow)
        {
            let Some(chain) = slot else {
                continue;
            };
            if underflow {
                *running = false;
            } else if sweep.next == chain.l {
                chain.end_sweep(sweep);
                *running = false;
            }
        }
    }
}

/// The scalar state of a QL sweep in progress (the rotation and shift variables of `tql2`):
/// the next rotation is `(next − 1, next)`; the sweep ends when `next` reaches the chain's `l`.
#[derive(Clone, Copy, Default)]
struct Sweep {
    next: usize,
    g: f64,
    s: f64,
    c: f64,
    p: f64,
}

/// What [`QlChain::next_sweep`] found.
enum NextSweep {
    /// A sweep to run.
    Run(Sweep),
    /// The iteration ended with this status.
    Finished(Status),
}

/// One implicit QL iteration in progress ([`implicit_ql_interleaved`]): the tridiagonal
/// matrix, the eigenvector rows `zt` (stride `ld`), the rotations generated (`tail`) and
/// applied (`head`) so far with the ring of pending ones, the eigenvalue being converged (`l`)
/// with its iteration count, and the end `m` of the current sweep's block.
struct QlChain<'a> {
    diag: &'a mut [f64],
    offdiag: &'a mut [f64],
    zt: &'a mut [f64],
    ld: usize,
    ring: [(usize, f64, f64); QL_RING],
    head: usize,
    tail: usize,
    l: usize,
    m: usize,
    iterations: usize,
}

impl<'a> QlChain<'a> {
    /// The iteration on `(diag, offdiag)` (`n` values each; `offdiag[k] = T[k][k+1]`),
    /// rotating the rows (stride `ld`) of `zt`.
    fn new(diag: &'a mut [f64], offdiag: &'a mut [f64], zt: &'a mut [f64], ld: usize) -> Self {
        QlChain {
            diag,
            offdiag,
            zt,
            ld,
            ring: [(0, 0.0, 0.0); QL_RING],
            head: 0,
            tail: 0,
            l: 0,
            m: 0,
            iterations: 0,
        }
    }

    /// Deflates: moves `l` past the converged eigenvalues, finds the block `l..=m` that the
    /// next sweep works on and its shift. When every eigenvalue has converged, applies the
    /// pending rotations and reports [`Status::Ok`].
    fn next_sweep(&mut self) -> NextSweep {
        let n = self.diag.len();
        let (diag, offdiag) = (&*self.diag, &*self.offdiag);
        while self.l < n {
            let l = self.l;
            let mut m = l;
            while m + 1 < n {
                let dd = abs(diag[m]) + abs(diag[m + 1]);
                if abs(offdiag[m]) <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                self.l += 1;
                self.iterations = 0;
                continue;
            }
            self.iterations += 1;
            if self.iterations > QL_MAX_ITERATIONS {
                return NextSweep::Finished(Status::NoConvergence);
            }
            let mut g = (diag[l + 1] - diag[l]) / (2.0 * offdiag[l]);
            let r = hypot(g, 1.0);
            g = diag[m] - diag[l] + offdiag[l] / (g + if g >= 0.0 { r } else { -r });
            self.m = m;
            return NextSweep::Run(Sweep {
                next: m,
                g,
                s: 1.0,
                c: 1.0,
                p: 0.0,
            });
        }
        while self.head < self.tail {
            apply_pending(&self.ring, self.head, self.zt, self.ld);
            self.head += 1;
        }
        NextSweep::Finished(Status::Ok)
    }

    /// The next rotation of `sweep` (its vector work queued); `false` when `f² + g²`
    /// underflowed to 0, which ends the sweep (its block split, `tql2`'s `r = 0` branch).
    #[inline(always)]
    fn rotate(&mut self, sweep: &mut Sweep) -> bool {
        let (diag, offdiag) = (&mut *self.diag, &mut *self.offdiag);
        let i = sweep.next - 1;
        let Sweep { g, s, c, p, .. } = *sweep;
        let f = s * offdiag[i];
        let b = c * offdiag[i];
        let (r, cs) = givens(f, g);
        offdiag[i + 1] = r;
        let Some((c, s)) = cs else {
            diag[i + 1] -= p;
            offdiag[self.m] = 0.0;
            return false;
        };
        let g = diag[i + 1] - p;
        // c·(2b), not (2c)·b: the same value (doubling is exact) with one fewer operation
        // after c on the recurrence's critical path.
        let r = fma(diag[i] - g, s, c * (2.0 * b));
        let p = s * r;
        diag[i + 1] = g + p;
        *sweep = Sweep {
            next: i,
            g: fma(c, r, -b),
            s,
            c,
            p,
        };
        self.ring[self.tail % QL_RING] = (i, c, s);
        self.tail += 1;
        true
    }

    /// Applies the oldest pending rotations (two when consecutive) once more than
    /// [`QL_LAG`] are pending.
    #[inline(always)]
    fn apply_lagged(&mut self) {
        if self.tail - self.head > QL_LAG + 1 {
            self.head += apply_pending_two(&self.ring, self.head, self.zt, self.ld);
        }
    }

    /// The end of a sweep that ran to `l`: the last rotation's updates of `diag[l]` and
    /// `offdiag[l]`, and the block end decoupled.
    #[inline(always)]
    fn end_sweep(&mut self, sweep: &Sweep) {
        self.diag[self.l] -= sweep.p;
        self.offdiag[self.l] = sweep.g;
        self.offdiag[self.m] = 0.0;
    }
}

/// Applies the pending rotation number `k` of the ring to the rows (stride `ld`) of `zt`.
#[inline(always)]
fn apply_pending(ring: &[(usize, f64, f64); QL_RING], k: usize, zt: &mut [f64], ld: usize) {
    let (i, c, s) = ring[k % QL_RING];
    let (lo, hi) = zt.split_at_mut((i + 1) * ld);
    rotate_pair(&mut lo[i * ld..i * ld + ld], &mut hi[..ld], c, s);
}

/// Applies the pending rotations number `k` and `k + 1` of the ring in one pass over the
/// rows when they are consecutive rotations of one sweep, `(i, i + 1)` then `(i − 1, i)` (row
/// `i` stays in registers between them, and every entry sees the same operations in the same
/// order as with two [`apply_pending`]), else rotation `k` alone; returns how many it applied.
#[inline(always)]
fn apply_pending_two(
    ring: &[(usize, f64, f64); QL_RING],
    k: usize,
    zt: &mut [f64],
    ld: usize,
) -> usize {
    let (i, c, s) = ring[k % QL_RING];
    let (i2, c2, s2) = ring[(k + 1) % QL_RING];
    if i2 + 1 != i {
        apply_pending(ring, k, zt, ld);
        return 1;
    }
    let (lo, hi) = zt.split_at_mut(i * ld);
    let (mid, hi) = hi.split_at_mut(ld);
    let (above, below) = (&mut lo[i2 * ld..i2 * ld + ld], &mut hi[..ld]);
    rotate_three(above, mid, below, [c, s, c2, s2]);
    2
}

/// Rotation `(c, s)` of rows `(mid, below)`, then `(c2, s2)` of rows `(above, mid)` with the
/// new `mid`, in one pass (the pair of [`apply_pending_two`]).
#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
#[inline(always)]
fn rotate_three(above: &mut [f64], mid: &mut [f64], below: &mut [f64], cs: [f64; 4]) {
    let [c, s, c2, s2] = cs;
    for ((w, x), y) in above.iter_mut().zip(mid.iter_mut()).zip(below.iter_mut()) {
        let (u, v) = (*x, *y);
        let xi = fma(c, u, -s * v);
        *y = fma(s, u, c * v);
        let t = *w;
        *w = fma(c2, t, -s2 * xi);
        *x = fma(s2, t, c2 * xi);
    }
}

/// [`rotate_three`] with AVX2 + FMA intrinsics, whole groups of [`LANES`] (the rows are
/// padded): the same operations in the same order (`−s·v` is `(−s)·v`, the negation exact),
/// in fewer instructions than the compiler's loop, which leaves more of the out-of-order
/// window to the QL recurrences it runs beside.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline(always)]
fn rotate_three(above: &mut [f64], mid: &mut [f64], below: &mut [f64], cs: [f64; 4]) {
    use core::arch::x86_64::{
        _mm256_fmadd_pd, _mm256_loadu_pd, _mm256_mul_pd, _mm256_set1_pd, _mm256_storeu_pd,
    };
    let [c, s, c2, s2] = cs;
    let n = above.len().min(mid.len()).min(below.len()) / LANES * LANES;
    let (wp, xp, yp) = (above.as_mut_ptr(), mid.as_mut_ptr(), below.as_mut_ptr());
    // SAFETY: the intrinsics' target features (AVX2, FMA) are enabled for the whole build
    // (the cfg above); every load and store covers 4 values at an offset j with j + 4 <= n,
    // n at most each slice's length; the three rows are distinct exclusive borrows, so they
    // do not overlap.
    unsafe {
        let (vc, vs, vns) = (_mm256_set1_pd(c), _mm256_set1_pd(s), _mm256_set1_pd(-s));
        let (vc2, vs2, vns2) = (_mm256_set1_pd(c2), _mm256_set1_pd(s2), _mm256_set1_pd(-s2));
        let mut j = 0;
        while j + LANES <= n {
            let u = _mm256_loadu_pd(xp.add(j));
            let v = _mm256_loadu_pd(yp.add(j));
            let xi = _mm256_fmadd_pd(vc, u, _mm256_mul_pd(vns, v));
            _mm256_storeu_pd(yp.add(j), _mm256_fmadd_pd(vs, u, _mm256_mul_pd(vc, v)));
            let t = _mm256_loadu_pd(wp.add(j));
            _mm256_storeu_pd(wp.add(j), _mm256_fmadd_pd(vc2, t, _mm256_mul_pd(vns2, xi)));
            _mm256_storeu_pd(xp.add(j), _mm256_fmadd_pd(vs2, t, _mm256_mul_pd(vc2, xi)));
            j += LANES;
        }
    }
}

/// The plane rotation of the QL step: `r = sqrt(f² + g²)` and `(c, s) = (g/r, f/r)`, or `None`
/// when `r = 0`. The common case takes one square root and one division, with no branch on
/// the operands' sizes (a mispredicted branch stalls the serial QL recurrence): `1/r` is
/// `r · (1/r²)`. Where `f² + g²` could lose accuracy to underflow or overflow (outside
/// `[2^-960, 2^960]`), [`hypot`]'s scaled formula is used.
#[inline(always)]
fn givens(f: f64, g: f64) -> (f64, Option<(f64, f64)>) {
    const TINY: f64 = 1.0e-289; // ≈ 2^-960
    const HUGE: f64 = 1.0e289; // ≈ 2^960
    let x = fma(f, f, g * g);
    if x > TINY && x < HUGE {
        let r = sqrt(x);
        let inv = r * (1.0 / x);
        (r, Some((g * inv, f * inv)))
    } else {
        let r = hypot(f, g);
        if r == 0.0 {
            (r, None)
        } else {
            (r, Some((g / r, f / r)))
        }
    }
}

/// `x ← c·x − s·y`, `y ← s·x + c·y` (the QL rotation of eigenvector rows `i`, `i + 1`; whole
/// padded rows, so vectors without a remainder).
#[inline(always)]
fn rotate_pair(x: &mut [f64], y: &mut [f64], c: f64, s: f64) {
    for (xi, yi) in x.iter_mut().zip(y.iter_mut()) {
        let (u, v) = (*xi, *yi);
        *xi = fma(c, u, -s * v);
        *yi = fma(s, u, c * v);
    }
}

/// Inverse square root `C^(-1/2)` of a symmetric positive (semi)definite matrix by
/// [`symmetric_eigen`], with the clip of docs/algorithm.md §4.4 (the same rule as
/// [`super::jacobi::inverse_sqrt`]): `λ_i ← max(λ_i, f)` with `f = 1e-14·max_i λ_i` per matrix,
/// and the clipped eigenvalues' part written basis-free as `f^(-1/2)·(I − Σ_kept u_i u_iᵀ)`.
///
/// # Parameters
/// - `a`: shape `(n, n)`, row-major, symmetric (both triangles read).
/// - `out`: shape `(n, n)`, row-major, output `C^(-1/2)`, exactly symmetric.
/// - `work`: at least [`inverse_sqrt_eigh_work_len`]`(n)` values.
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] for wrong slice lengths; [`Status::NonFinite`] for a NaN
/// or infinity in `a` or the result; [`Status::NotPositiveDefinite`] when the largest
/// eigenvalue is not positive or the smallest is below `−n·ε·λ_max` (indefinite beyond
/// rounding, the pivot rule of the Jacobi route); [`Status::NoConvergence`] from the QL
/// iteration.
pub fn inverse_sqrt_eigh(a: &[f64], n: usize, out: &mut [f64], work: &mut [f64]) -> Status {
    let mut condition = 0.0;
    inverse_sqrt_eigh_with_condition(a, n, out, work, &mut condition)
}

/// [`inverse_sqrt_eigh`], also writing `condition = λ_max / λ_min` of `a` (as computed; `+∞`
/// when `λ_min <= 0`; 1 for `n = 0`) when the eigenvalues were computed.
///
/// Householder + QL computes the eigenvalues to an absolute error of about `ε·λ_max`, so the
/// smallest ones, which dominate `C^(-1/2)`, carry a relative error of about `ε·condition`:
/// the result differs from the float64 reference by about `ε·condition` relative where the
/// one-sided Jacobi route (relatively accurate, Demmel & Veselić 1992) stays at ~1e-13.
/// Callers that need the latter for ill-conditioned blocks test `condition`.
pub fn inverse_sqrt_eigh_with_condition(
    a: &[f64],
    n: usize,
    out: &mut [f64],
    work: &mut [f64],
    condition: &mut f64,
) -> Status {
    *condition = 1.0;
    let nn = match n.checked_mul(n) {
        Some(nn) => nn,
        None => return Status::BadShape,
    };
    let needed = inverse_sqrt_eigh_work_len(n);
    if a.len() != nn || out.len() != nn || work.len() < needed || (n > 0 && needed == 0) {
        return Status::BadShape;
    }
    if n == 0 {
        return Status::Ok;
    }
    let Some(shared_len) = inverse_sqrt_shared_len(n) else {
        return Status::BadShape;
    };
    let (shared, work) = work.split_at_mut(shared_len);
    inverse_sqrt_alone(a, n, out, condition, shared, work)
}

/// [`inverse_sqrt_eigh_with_condition`] of `a` (`n >= 1`, shapes checked) with the `shared`
/// scratch and the block's `work` of [`inverse_sqrt_eigh_batch`]: its QL iteration alone.
fn inverse_sqrt_alone(
    a: &[f64],
    n: usize,
    out: &mut [f64],
    condition: &mut f64,
    shared: &mut [f64],
    work: &mut [f64],
) -> Status {
    let mut block = match InverseSqrtBlock::prepare(a, n, shared, work) {
        Ok(block) => block,
        Err(status) => return status,
    };
    let [status] = implicit_ql_interleaved(&mut [Some(block.ql_chain())]);
    block.finish(status, out, condition, shared)
}

/// Blocks whose QL iterations [`inverse_sqrt_eigh_batch`] runs interleaved (at most).
pub const QL_BATCH: usize = 8;

/// Length of the `work` slice that [`inverse_sqrt_eigh_batch`] needs for `count` blocks of
/// `(n, n)`: the scratch of the block being reduced or composed ([`inverse_sqrt_shared_len`])
/// and what each of up to [`QL_BATCH`] blocks at a time keeps in between
/// ([`inverse_sqrt_block_len`]); 0 for `n = 0` or `count = 0` or if that overflows.
pub fn inverse_sqrt_eigh_batch_work_len(n: usize, count: usize) -> usize {
    if n == 0 || count == 0 {
        return 0;
    }
    inverse_sqrt_block_len(n)
        .and_then(|block| block.checked_mul(count.min(QL_BATCH)))
        .zip(inverse_sqrt_shared_len(n))
        .and_then(|(blocks, shared)| blocks.checked_add(shared))
        .unwrap_or(0)
}

/// [`inverse_sqrt_eigh_with_condition`] of `count = statuses.len()` blocks, up to
/// [`QL_BATCH`] at a time with their QL iterations interleaved (`implicit_ql_interleaved`:
/// the serial recurrences of independent blocks overlap). Every block's result, condition
/// number and status are bitwise those of [`inverse_sqrt_eigh_with_condition`] on it alone
/// (each block gets the same operations in the same order); a block that fails does not
/// affect the others.
///
/// # Parameters
/// - `blocks`: shape `(count, n, n)`, row-major, each symmetric.
/// - `out`: shape `(count, n, n)`, output `C^(-1/2)` of each block.
/// - `conditions`: `count` values, output `λ_max / λ_min` of each block (as
///   [`inverse_sqrt_eigh_with_condition`] writes it).
/// - `statuses`: `count` values, output: each block's status.
/// - `work`: at least [`inverse_sqrt_eigh_batch_work_len`]`(n, count)` values.
///
/// # Returns
/// [`Status::BadShape`] (and nothing written) for slice lengths that disagree, else
/// [`Status::Ok`] with the per-block statuses in `statuses`.
pub fn inverse_sqrt_eigh_batch(
    blocks: &[f64],
    n: usize,
    out: &mut [f64],
    conditions: &mut [f64],
    statuses: &mut [Status],
    work: &mut [f64],
) -> Status {
    let count = statuses.len();
    let Some(len) = n.checked_mul(n).and_then(|nn| nn.checked_mul(count)) else {
        return Status::BadShape;
    };
    let needed = inverse_sqrt_eigh_batch_work_len(n, count);
    if blocks.len() != len
        || out.len() != len
        || conditions.len() != count
        || work.len() < needed
        || (n > 0 && count > 0 && needed == 0)
    {
        return Status::BadShape;
    }
    conditions.fill(1.0);
    statuses.fill(Status::Ok);
    if n == 0 || count == 0 {
        return Status::Ok;
    }
    let (Some(shared_len), Some(block_len)) =
        (inverse_sqrt_shared_len(n), inverse_sqrt_block_len(n))
    else {
        return Status::BadShape;
    };
    let (shared, work) = work.split_at_mut(shared_len);
    // Groups of (nearly) equal size: the interleaving gains least while one chain runs alone.
    let group = count.div_ceil(count.div_ceil(QL_BATCH));
    let nn = n * n;
    for (((blocks, out), conditions), statuses) in blocks
        .chunks(group * nn)
        .zip(out.chunks_mut(group * nn))
        .zip(conditions.chunks_mut(group))
        .zip(statuses.chunks_mut(group))
    {
        inverse_sqrt_group(
            blocks, n, out, conditions, statuses, shared, work, block_len,
        );
    }
    Status::Ok
}

/// [`inverse_sqrt_eigh_batch`] of at most [`QL_BATCH`] blocks (shapes checked): the
/// `shared` scratch, and `block_len` values of `work` for each block.
#[allow(clippy::too_many_arguments)]
fn inverse_sqrt_group(
    blocks: &[f64],
    n: usize,
    out: &mut [f64],
    conditions: &mut [f64],
    statuses: &mut [Status],
    shared: &mut [f64],
    work: &mut [f64],
    block_len: usize,
) {
    // One block: its QL alone (the interleaved loop's empty slots would only cost time).
    if let ([status], [condition]) = (&mut *statuses, &mut *conditions) {
        *status = inverse_sqrt_alone(blocks, n, out, condition, shared, work);
        return;
    }
    let mut prepared: [Option<InverseSqrtBlock<'_>>; QL_BATCH] = [const { None }; QL_BATCH];
    for ((slot, (a, work)), status) in prepared
        .iter_mut()
        .zip(
            blocks
                .chunks_exact(n * n)
                .zip(work.chunks_exact_mut(block_len)),
        )
        .zip(statuses.iter_mut())
    {
        match InverseSqrtBlock::prepare(a, n, shared, work) {
            Ok(block) => *slot = Some(block),
            Err(failed) => *status = failed,
        }
    }
    let ql = implicit_ql_interleaved(
        &mut prepared
            .each_mut()
            .map(|slot| slot.as_mut().map(InverseSqrtBlock::ql_chain)),
    );
    for (((slot, ql), (out, condition)), status) in prepared
        .into_iter()
        .zip(ql)
        .zip(out.chunks_exact_mut(n * n).zip(conditions.iter_mut()))
        .zip(statuses.iter_mut())
    {
        if let Some(block) = slot {
            *status = block.finish(ql, out, condition, shared);
        }
    }
}

/// One block's `C^(-1/2)` in three steps (so that [`inverse_sqrt_eigh_batch`] can run the QL
/// iterations of several together): [`Self::prepare`] scales and reduces it to tridiagonal
/// form, the QL iteration ([`Self::ql_chain`]) computes the eigenpairs, [`Self::finish`] the
/// result from them.
struct InverseSqrtBlock<'a> {
    n: usize,
    ld: usize,
    /// The eigenvectors (rows of stride `ld`, zero padded).
    zt: &'a mut [f64],
    /// The diagonal, then the eigenvalues.
    values: &'a mut [f64],
    /// The off-diagonal.
    offdiag: &'a mut [f64],
    /// The matrix was scaled by `2^(−2k)`.
    scale_exponent: i32,
}

impl<'a> InverseSqrtBlock<'a> {
    /// `a` (`(n, n)`, `n >= 1`) checked, copied to the padded rows of `shared` (at least
    /// [`inverse_sqrt_shared_len`]`(n)` values), normalized and reduced to tridiagonal form in
    /// `work` (at least [`inverse_sqrt_block_len`]`(n)` values); [`Status::NonFinite`] for a
    /// NaN or infinity in `a`.
    fn prepare(
        a: &[f64],
        n: usize,
        shared: &mut [f64],
        work: &'a mut [f64],
    ) -> Result<Self, Status> {
        let ld = padded(n).ok_or(Status::BadShape)?;
        let (ap, scratch) = aligned(shared).split_at_mut(n * ld);
        let (zt, rest) = aligned(work).split_at_mut(n * ld);
        let (values, rest) = rest.split_at_mut(n);
        let offdiag = &mut rest[..n];
        if a.iter().any(|x| !x.is_finite()) {
            return Err(Status::NonFinite);
        }
        copy_padded(a, n, ap, ld);
        // C·2^(−2k) has the inverse square root C^(-1/2)·2^k: scaled back exactly at the end.
        let scale_exponent = normalize(ap);
        let status = tridiagonal_form(ap, n, ld, values, offdiag, zt, scratch);
        if status != Status::Ok {
            return Err(status);
        }
        Ok(InverseSqrtBlock {
            n,
            ld,
            zt,
            values,
            offdiag,
            scale_exponent,
        })
    }

    /// The QL iteration of the tridiagonal form.
    fn ql_chain(&mut self) -> QlChain<'_> {
        QlChain::new(self.values, self.offdiag, self.zt, self.ld)
    }

    /// `C^(-1/2)` into `out` (`(n, n)`) and `condition` from the eigenpairs, given the status
    /// `ql` of the QL iteration (anything but [`Status::Ok`] is returned as is); `shared` (as
    /// in [`Self::prepare`]) holds the panel of [`compose`].
    fn finish(
        self,
        ql: Status,
        out: &mut [f64],
        condition: &mut f64,
        shared: &mut [f64],
    ) -> Status {
        let InverseSqrtBlock {
            n,
            ld,
            zt,
            values,
            scale_exponent,
            ..
        } = self;
        if ql != Status::Ok {
            return ql;
        }
        let status = eigenpairs_finite(values, zt);
        if status != Status::Ok {
            return status;
        }
        let lambda_max = values.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
        let lambda_min = values.iter().fold(f64::INFINITY, |m, &x| m.min(x));
        *condition = if lambda_min > 0.0 {
            lambda_max / lambda_min
        } else {
            f64::INFINITY
        };
        if lambda_max <= 0.0 || lambda_min < -(n as f64) * f64::EPSILON * lambda_max {
            return Status::NotPositiveDefinite;
        }
        let floor = 1e-14 * lambda_max;
        let clipped = values.iter().any(|&x| x <= floor);
        let floor_weight = if clipped { 1.0 / sqrt(floor) } else { 0.0 };
        // out = floor_weight·I + Σ_i coef_i·u_i u_iᵀ, coef_i = λ_i^(-1/2) − floor_weight for
        // the kept eigenvalues and 0 for the clipped ones (values now holds coef_i).
        for x in values.iter_mut() {
            *x = if *x > floor {
                1.0 / sqrt(*x) - floor_weight
            } else {
                0.0
            };
        }
        compose(zt, ld, values, n, floor_weight, out, aligned(shared));
        let unscale = pow2(-scale_exponent);
        for x in out.iter_mut() {
            *x *= unscale;
        }
        if out.iter().any(|x| !x.is_finite()) {
            return Status::NonFinite;
        }
        Status::Ok
    }
}

/// Rows of the result computed together by [`compose`] (a panel of `coef_i·u_i[j]`).
const COMPOSE_ROWS: usize = 4;

/// `out = floor_weight·I + Σ_i coef_i·u_i u_iᵀ` (`u_i` row `i` of `zt`, stride `ld`, zero
/// padded), exactly symmetric: the upper triangle by tiles of [`COMPOSE_ROWS`] × 8 (then × 4)
/// columns (a register-blocked `Zᵀ·diag(coef)·Z`, each product summed over `i` in order),
/// then mirrored. `panel` holds at least `COMPOSE_ROWS·n` values.
#[inline(never)]
fn compose(
    zt: &[f64],
    ld: usize,
    coef: &[f64],
    n: usize,
    floor_weight: f64,
    out: &mut [f64],
    panel: &mut [f64],
) {
    const R: usize = COMPOSE_ROWS;
    let panel = &mut panel[..R * n];
    for j0 in (0..n).step_by(R) {
        let rows = R.min(n - j0);
        // panel[i·R + r] = coef_i·u_i[j0 + r] (zero past the last row).
        for (i, p) in panel.chunks_exact_mut(R).enumerate() {
            let u = &zt[i * ld + j0..i * ld + j0 + rows];
            for (r, pr) in p.iter_mut().enumerate() {
                *pr = if r < rows { coef[i] * u[r] } else { 0.0 };
            }
        }
        // Column groups from the one holding column j0 (aligned: j0 is a multiple of 4).
        let mut k0 = j0;
        while k0 + 2 * LANES <= ld {
            compose_tile::<{ 2 * LANES }>(zt, ld, panel, k0, rows, j0, n, out);
            k0 += 2 * LANES;
        }
        if k0 < ld {
            compose_tile::<LANES>(zt, ld, panel, k0, rows, j0, n, out);
        }
    }
    for j in 0..n {
        out[j * n + j] += floor_weight;
        for k in 0..j {
            out[j * n + k] = out[k * n + j];
        }
    }
}

/// One tile of [`compose`]: rows `j0..j0 + rows`, columns `k0..k0 + C` (those below `n`
/// stored).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn compose_tile<const C: usize>(
    zt: &[f64],
    ld: usize,
    panel: &[f64],
    k0: usize,
    rows: usize,
    j0: usize,
    n: usize,
    out: &mut [f64],
) {
    const R: usize = COMPOSE_ROWS;
    let mut acc = [[0.0f64; C]; R];
    for (i, p) in panel.chunks_exact(R).enumerate() {
        let b = &zt[i * ld + k0..i * ld + k0 + C];
        for (accr, &pr) in acc.iter_mut().zip(p) {
            for (a, &bt) in accr.iter_mut().zip(b) {
                *a = fma(pr, bt, *a);
            }
        }
    }
    let cols = C.min(n - k0);
    for (r, accr) in acc.iter().enumerate().take(rows) {
        out[(j0 + r) * n + k0..(j0 + r) * n + k0 + cols].copy_from_slice(&accr[..cols]);
    }
}
