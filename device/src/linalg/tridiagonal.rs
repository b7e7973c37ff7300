//! Symmetric eigendecomposition by Householder tridiagonalization and implicit QL
//! ([`symmetric_eigen`]), and the inverse square root `C^(-1/2)` built from it
//! ([`inverse_sqrt_eigh`]): the CPU backend's method for the per-fiber covariance blocks
//! (docs/algorithm.md §4.4). It does about half the arithmetic of the one-sided Jacobi of
//! [`super::jacobi::inverse_sqrt`] (which the GPU kernels keep) with every inner loop over
//! contiguous rows, and agrees with it and with the float64 references to ~1e-13 of `max|Q|`
//! on real covariance blocks (device/tests/tridiagonal.rs).
//!
//! Accuracy: tridiagonalization and QL are backward stable (eigenvalues within
//! `~n·ε·‖C‖` of the exact ones: absolute, not relative, accuracy), so entries of
//! `C^(-1/2)` have errors of `~n·ε·κ` relative to `max|Q|` (`κ` the condition number after the
//! clip), the bound the Jacobi route and LAPACK-based codes (numpy's `eigh` in gpu_specter) are
//! tested to as well.

use super::dense::{axpy, dot};
use crate::math::{abs, fma, sqrt};
use crate::Status;

/// QL iterations allowed per eigenvalue before [`Status::NoConvergence`] (LAPACK `dsteqr`
/// allows 30 per eigenvalue in all; real covariance blocks need 1-3).
pub const QL_MAX_ITERATIONS: usize = 30;

/// Length of the `work` slice that [`symmetric_eigen`] needs: `3n` (off-diagonal, reflector
/// scalars, one vector of scratch); 0 if that overflows.
pub fn symmetric_eigen_work_len(n: usize) -> usize {
    n.checked_mul(3).unwrap_or(0)
}

/// Length of the `work` slice that [`inverse_sqrt_eigh`] needs: `n² + 5n` (eigenvectors,
/// eigenvalues and `4n` of scratch: [`symmetric_eigen`]'s, then the panel of the product
/// that forms the result); 0 if that overflows.
pub fn inverse_sqrt_eigh_work_len(n: usize) -> usize {
    n.checked_add(5).and_then(|m| m.checked_mul(n)).unwrap_or(0)
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
///    contiguous rows).
/// 2. `Z` accumulated from the reflectors (backward, `dorg2l`-style), stored transposed.
/// 3. Implicit QL with Wilkinson-type shifts on `T` (EISPACK `tql2`), each plane rotation
///    applied to two contiguous rows of `Zᵀ`.
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
    if a.len() != nn
        || vectors.len() != nn
        || values.len() != n
        || work.len() < symmetric_eigen_work_len(n)
    {
        return Status::BadShape;
    }
    if n == 0 {
        return Status::Ok;
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Status::NonFinite;
    }
    let (offdiag, rest) = work.split_at_mut(n);
    let (tau, rest) = rest.split_at_mut(n);
    let scratch = &mut rest[..n];
    tridiagonalize(a, n, values, offdiag, tau, scratch);
    accumulate_reflectors(a, n, tau, vectors, scratch);
    let status = implicit_ql(values, offdiag, vectors, n);
    if status != Status::Ok {
        return status;
    }
    if values.iter().chain(vectors.iter()).any(|x| !x.is_finite()) {
        return Status::NonFinite;
    }
    Status::Ok
}

/// Householder tridiagonalization of the full symmetric `a`: `diag`, `offdiag[k] = T[k][k+1]`
/// (`offdiag[n-1] = 0`), the reflector of step `k` in `a[k][k+1..]` (its first entry 1 implied)
/// with scalar `tau[k]`.
fn tridiagonalize(
    a: &mut [f64],
    n: usize,
    diag: &mut [f64],
    offdiag: &mut [f64],
    tau: &mut [f64],
    scratch: &mut [f64],
) {
    tau.fill(0.0);
    offdiag.fill(0.0);
    for k in 0..n.saturating_sub(2) {
        let m = n - k - 1;
        let (head, trailing) = a.split_at_mut((k + 1) * n);
        let x = &mut head[k * n + k + 1..k * n + n];
        // Reflector H = I − τ·v·vᵀ with H·x = β·e₁ (LAPACK dlarfg).
        let alpha = x[0];
        let xnorm2 = dot(&x[1..], &x[1..]);
        if xnorm2 == 0.0 {
            offdiag[k] = alpha;
            tau[k] = 0.0;
            x[1..].fill(0.0);
            continue;
        }
        let norm = hypot(alpha, sqrt(xnorm2));
        let beta = if alpha >= 0.0 { -norm } else { norm };
        let t = (beta - alpha) / beta;
        let scale = 1.0 / (alpha - beta);
        for xi in x[1..].iter_mut() {
            *xi *= scale;
        }
        x[0] = 1.0;
        offdiag[k] = beta;
        tau[k] = t;
        // A22 ← H·A22·H on the trailing (m, m) block (rows k+1.., columns k+1..):
        // p = τ·A22·v, w = p − (τ/2)(pᵀv)·v, A22 −= v·wᵀ + w·vᵀ.
        let v = &*x;
        let p = &mut scratch[..m];
        for (i, pi) in p.iter_mut().enumerate() {
            let row = &trailing[i * n + k + 1..i * n + n];
            *pi = t * dot(row, v);
        }
        let kappa = -0.5 * t * dot(p, v);
        axpy(kappa, v, p);
        for i in 0..m {
            let row = &mut trailing[i * n + k + 1..i * n + n];
            axpy(-v[i], p, row);
            axpy(-p[i], v, row);
        }
    }
    for (k, d) in diag.iter_mut().enumerate() {
        *d = a[k * n + k];
    }
    if n >= 2 {
        offdiag[n - 2] = a[(n - 2) * n + n - 1];
    }
    offdiag[n - 1] = 0.0;
}

/// `Zᵀ` (row `j` = column `j` of `Z = H₀·H₁⋯H_{n−3}`) into `zt`, from the reflectors that
/// [`tridiagonalize`] left in `a`.
fn accumulate_reflectors(a: &[f64], n: usize, tau: &[f64], zt: &mut [f64], y: &mut [f64]) {
    // Z = H₀(H₁(⋯(H_{n−3}·I))): applying H_k from the left touches rows and columns k+1.. only.
    zt.fill(0.0);
    for i in 0..n {
        zt[i * n + i] = 1.0;
    }
    for k in (0..n.saturating_sub(2)).rev() {
        let t = tau[k];
        if t == 0.0 {
            continue;
        }
        let vtail = &a[k * n + k + 2..k * n + n];
        let y = &mut y[..n - k - 1];
        // y = vᵀ·Z[k+1.., k+1..] (v₀ = 1), then Z[r][k+1..] −= τ·v_r·y.
        y.copy_from_slice(&zt[(k + 1) * n + k + 1..(k + 1) * n + n]);
        for (r, &vr) in vtail.iter().enumerate() {
            let row = (k + 2 + r) * n;
            axpy(vr, &zt[row + k + 1..row + n], y);
        }
        axpy(-t, y, &mut zt[(k + 1) * n + k + 1..(k + 1) * n + n]);
        for (r, &vr) in vtail.iter().enumerate() {
            let row = (k + 2 + r) * n;
            axpy(-t * vr, y, &mut zt[row + k + 1..row + n]);
        }
    }
    // In place transpose: rows become the columns of Z.
    for i in 0..n {
        for j in i + 1..n {
            zt.swap(i * n + j, j * n + i);
        }
    }
}

/// Rotations generated but not yet applied to the eigenvector rows by [`implicit_ql`] (the
/// application lags the generation by this many rotations so that each rotation's vector work
/// is ready to run while the scalar recurrence computes the next ones).
const QL_LAG: usize = 4;

/// Ring of pending rotations `(i, c, s)` (a power of two above [`QL_LAG`]).
const QL_RING: usize = 8;

/// Implicit QL on the tridiagonal `(diag, offdiag)` (EISPACK `tql2`, Numerical Recipes
/// `tqli`), rotating the rows of `zt`; `diag` ends as the eigenvalues, row `i` of `zt` as the
/// eigenvector of `diag[i]`.
///
/// The scalar recurrence is one serial chain of dependent operations per rotation (a square
/// root and a division), so it is kept short ([`givens`]) and the rotations' vector work on
/// `zt` is applied [`QL_LAG`] rotations behind it: out-of-order execution overlaps the two
/// (the rotations are applied in the same order, so the result does not change).
fn implicit_ql(diag: &mut [f64], offdiag: &mut [f64], zt: &mut [f64], n: usize) -> Status {
    let mut ring = [(0usize, 0.0f64, 0.0f64); QL_RING];
    // Rotations generated (`tail`) and applied (`head`) so far.
    let (mut head, mut tail) = (0usize, 0usize);
    for l in 0..n {
        let mut iterations = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = abs(diag[m]) + abs(diag[m + 1]);
                if abs(offdiag[m]) <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iterations += 1;
            if iterations > QL_MAX_ITERATIONS {
                return Status::NoConvergence;
            }
            let mut g = (diag[l + 1] - diag[l]) / (2.0 * offdiag[l]);
            let r = hypot(g, 1.0);
            g = diag[m] - diag[l] + offdiag[l] / (g + if g >= 0.0 { r } else { -r });
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut underflow = false;
            for i in (l..m).rev() {
                let f = s * offdiag[i];
                let b = c * offdiag[i];
                let (r, cs) = givens(f, g);
                offdiag[i + 1] = r;
                let Some((cn, sn)) = cs else {
                    diag[i + 1] -= p;
                    offdiag[m] = 0.0;
                    underflow = true;
                    break;
                };
                (c, s) = (cn, sn);
                g = diag[i + 1] - p;
                let r = fma(diag[i] - g, s, 2.0 * c * b);
                p = s * r;
                diag[i + 1] = g + p;
                g = fma(c, r, -b);
                ring[tail % QL_RING] = (i, c, s);
                tail += 1;
                if tail - head > QL_LAG {
                    apply_pending(&ring, head, zt, n);
                    head += 1;
                }
            }
            if underflow {
                continue;
            }
            diag[l] -= p;
            offdiag[l] = g;
            offdiag[m] = 0.0;
        }
    }
    while head < tail {
        apply_pending(&ring, head, zt, n);
        head += 1;
    }
    Status::Ok
}

/// Applies the pending rotation number `k` of the ring to the rows of `zt`.
#[inline(always)]
fn apply_pending(ring: &[(usize, f64, f64); QL_RING], k: usize, zt: &mut [f64], n: usize) {
    let (i, c, s) = ring[k % QL_RING];
    let (lo, hi) = zt.split_at_mut((i + 1) * n);
    rotate_pair(&mut lo[i * n..i * n + n], &mut hi[..n], c, s);
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

/// `x ← c·x − s·y`, `y ← s·x + c·y` (the QL rotation of eigenvector rows `i`, `i + 1`).
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
    if a.len() != nn || out.len() != nn || work.len() < inverse_sqrt_eigh_work_len(n) {
        return Status::BadShape;
    }
    if n == 0 {
        return Status::Ok;
    }
    let (vectors, rest) = work.split_at_mut(nn);
    let (values, rest) = rest.split_at_mut(n);
    out.copy_from_slice(a);
    let status = symmetric_eigen(out, n, values, vectors, rest);
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
    // out = floor_weight·I + Σ_i coef_i·u_i u_iᵀ, coef_i = λ_i^(-1/2) − floor_weight for the
    // kept eigenvalues and 0 for the clipped ones (values now holds coef_i).
    for x in values.iter_mut() {
        *x = if *x > floor {
            1.0 / sqrt(*x) - floor_weight
        } else {
            0.0
        };
    }
    compose(vectors, values, n, floor_weight, out, rest);
    if out.iter().any(|x| !x.is_finite()) {
        return Status::NonFinite;
    }
    Status::Ok
}

/// Rows of the result computed together by [`compose`] (a panel of `coef_i·u_i[j]`).
const COMPOSE_ROWS: usize = 4;

/// Columns of the result computed together by [`compose`] (two 4-wide vectors).
const COMPOSE_COLS: usize = 8;

/// `out = floor_weight·I + Σ_i coef_i·u_i u_iᵀ` (`u_i` row `i` of `zt`), exactly symmetric:
/// the upper triangle by tiles of [`COMPOSE_ROWS`] × [`COMPOSE_COLS`] (a register-blocked
/// `Zᵀ·diag(coef)·Z`, each product summed over `i` in order), then mirrored. `panel` holds at
/// least `COMPOSE_ROWS·n` values.
fn compose(
    zt: &[f64],
    coef: &[f64],
    n: usize,
    floor_weight: f64,
    out: &mut [f64],
    panel: &mut [f64],
) {
    const R: usize = COMPOSE_ROWS;
    const C: usize = COMPOSE_COLS;
    let panel = &mut panel[..R * n];
    for j0 in (0..n).step_by(R) {
        let rows = R.min(n - j0);
        // panel[i·R + r] = coef_i·u_i[j0 + r] (zero past the last row).
        for (i, p) in panel.chunks_exact_mut(R).enumerate() {
            let u = &zt[i * n + j0..i * n + j0 + rows];
            for (r, pr) in p.iter_mut().enumerate() {
                *pr = if r < rows { coef[i] * u[r] } else { 0.0 };
            }
        }
        let mut k0 = j0;
        while k0 + C <= n {
            let mut acc = [[0.0f64; C]; R];
            for (i, p) in panel.chunks_exact(R).enumerate() {
                let b = &zt[i * n + k0..i * n + k0 + C];
                for (accr, &pr) in acc.iter_mut().zip(p) {
                    for (a, &bt) in accr.iter_mut().zip(b) {
                        *a = fma(pr, bt, *a);
                    }
                }
            }
            for (r, accr) in acc.iter().enumerate().take(rows) {
                out[(j0 + r) * n + k0..(j0 + r) * n + k0 + C].copy_from_slice(accr);
            }
            k0 += C;
        }
        // The last columns (fewer than C).
        for k in k0..n {
            let mut acc = [0.0f64; R];
            for (i, p) in panel.chunks_exact(R).enumerate() {
                let b = zt[i * n + k];
                for (a, &pr) in acc.iter_mut().zip(p) {
                    *a = fma(pr, b, *a);
                }
            }
            for (r, &a) in acc.iter().enumerate().take(rows) {
                out[(j0 + r) * n + k] = a;
            }
        }
    }
    for j in 0..n {
        out[j * n + j] += floor_weight;
        for k in 0..j {
            out[j * n + k] = out[k * n + j];
        }
    }
}
