//! Cyclic two-sided Jacobi eigendecomposition of small symmetric matrices: the reference
//! that the one-sided inverse square root ([`crate::linalg::jacobi::inverse_sqrt`]) is
//! measured and checked against (tests and benchmarks; feature `reference`).
//!
//! # Algorithm
//! Row-cyclic Jacobi (Golub & Van Loan, *Matrix Computations*, algorithm 8.5.3): each sweep
//! visits the pairs `(p, q)`, `p < q`, row by row; each visit applies the rotation `J(p, q, θ)`
//! that zeroes `A[p][q]`: `A ← Jᵀ A J`, `V ← V J`. The matrix is stored full (both triangles);
//! the rotation is applied to the two *rows* `p` and `q` (contiguous, vectorized) and the two
//! updated rows are then copied into columns `p` and `q` (the column update of a symmetric
//! matrix equals the row update). The eigenvectors are accumulated as the rows of `Vᵀ`, so
//! their update is also a pair of contiguous row operations.
//!
//! Stopping rule: that of [`crate::linalg::jacobi`] (relative threshold
//! [`JACOBI_REL_TOL`], absolute floor `ε²·‖A‖_F`, `‖A‖_F` being invariant under rotations).

use crate::linalg::jacobi::{rotate_rows, rotation, JacobiStats, JACOBI_REL_TOL};
use crate::math::{abs, sqrt};
use crate::Status;

/// Eigendecomposition `A = V Λ Vᵀ` of a real symmetric matrix by cyclic Jacobi (see the
/// module documentation for the algorithm and the stopping rule).
///
/// # Parameters
/// - `a`: shape `(n, n)`, row-major, symmetric (both triangles are read and must agree; the
///   caller symmetrizes if needed). Destroyed: on exit it is the nearly diagonal `Vᵀ A V`.
/// - `n`: the order of `A`.
/// - `eigenvectors`: shape `(n, n)`, row-major, output: **column** `i` is the unit eigenvector
///   of `eigenvalues[i]`, i.e. `V[k][i] = eigenvectors[k * n + i]` (LAPACK/NumPy convention).
/// - `eigenvalues`: shape `(n,)`, output, in ascending order.
/// - `max_sweeps`: the most sweeps that may apply rotations.
///
/// # Equation
/// Each rotation `J(p, q)` with `cot 2θ = (A[q][q] − A[p][p]) / (2 A[p][q])`,
/// `t = tan θ = sign(cot 2θ) / (|cot 2θ| + sqrt(1 + cot² 2θ))`, `c = 1/sqrt(1+t²)`, `s = t·c`
/// updates `A[p][p] −= t·A[p][q]`, `A[q][q] += t·A[p][q]`, `A[p][q] = 0`, and for `k ≠ p, q`
/// `A[p][k] ← c·A[p][k] − s·A[q][k]`, `A[q][k] ← s·A[p][k] + c·A[q][k]` (and symmetrically).
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] if a slice length disagrees with `n`;
/// [`Status::NonFinite`] if `a` holds a NaN or infinity (the outputs are then not written) or
/// an eigenvalue comes out non-finite; [`Status::NoConvergence`] if pairs still need rotating
/// after `max_sweeps` sweeps (the outputs then hold the last iterate, still orthogonal).
pub fn jacobi_eigh(
    a: &mut [f64],
    n: usize,
    eigenvectors: &mut [f64],
    eigenvalues: &mut [f64],
    max_sweeps: usize,
) -> Status {
    let mut stats = JacobiStats::default();
    jacobi_eigh_with_stats(a, n, eigenvectors, eigenvalues, max_sweeps, &mut stats)
}

/// [`jacobi_eigh`], also reporting the sweep and rotation counts in `stats` (written on every
/// return path that ran the iteration; zeroed otherwise).
pub fn jacobi_eigh_with_stats(
    a: &mut [f64],
    n: usize,
    eigenvectors: &mut [f64],
    eigenvalues: &mut [f64],
    max_sweeps: usize,
    stats: &mut JacobiStats,
) -> Status {
    let status = jacobi_rows(a, n, eigenvectors, eigenvalues, max_sweeps, stats);
    if status != Status::Ok && status != Status::NoConvergence {
        return status;
    }
    // Ascending order: selection sort, swapping rows of Vᵀ (n² compares, n row swaps).
    for i in 0..n {
        let mut best = i;
        for j in i + 1..n {
            if eigenvalues[j] < eigenvalues[best] {
                best = j;
            }
        }
        if best != i {
            eigenvalues.swap(i, best);
            let (lo, hi) = eigenvectors.split_at_mut(best * n);
            lo[i * n..i * n + n].swap_with_slice(&mut hi[..n]);
        }
    }
    // Vᵀ -> V in place: eigenvectors become columns.
    for i in 0..n {
        for j in i + 1..n {
            eigenvectors.swap(i * n + j, j * n + i);
        }
    }
    status
}

/// Jacobi core: on exit `vt` holds `Vᵀ` (row `i` = eigenvector `i`) and `eigenvalues` the
/// diagonal of the final iterate, unsorted. Validates the shapes and the input.
fn jacobi_rows(
    a: &mut [f64],
    n: usize,
    vt: &mut [f64],
    eigenvalues: &mut [f64],
    max_sweeps: usize,
    stats: &mut JacobiStats,
) -> Status {
    *stats = JacobiStats::default();
    let nn = match n.checked_mul(n) {
        Some(nn) => nn,
        None => return Status::BadShape,
    };
    if a.len() != nn || vt.len() != nn || eigenvalues.len() != n {
        return Status::BadShape;
    }
    let mut frob2 = 0.0;
    for &x in a.iter() {
        frob2 += x * x;
    }
    // A NaN or infinity anywhere makes the sum non-finite (squares cannot cancel).
    if !frob2.is_finite() {
        // Distinguish overflow of the sum (finite huge entries) from non-finite entries.
        if a.iter().any(|x| !x.is_finite()) {
            return Status::NonFinite;
        }
        frob2 = f64::MAX;
    }
    let abs_floor = f64::EPSILON * f64::EPSILON * sqrt(frob2);

    vt.fill(0.0);
    for i in 0..n {
        vt[i * n + i] = 1.0;
    }

    let mut status = Status::NoConvergence;
    for _ in 0..=max_sweeps {
        let rotations = sweep(a, n, vt, abs_floor, stats.sweeps < max_sweeps);
        if rotations == 0 {
            status = Status::Ok;
            break;
        }
        if stats.sweeps == max_sweeps {
            break;
        }
        stats.sweeps += 1;
        stats.rotations += rotations;
    }
    for (i, e) in eigenvalues.iter_mut().enumerate() {
        *e = a[i * n + i];
    }
    if eigenvalues.iter().any(|x| !x.is_finite()) {
        return Status::NonFinite;
    }
    status
}

/// One row-cyclic sweep. Returns the number of pairs that failed the convergence test
/// (rotated when `rotate`, otherwise only counted).
#[inline(never)]
fn sweep(a: &mut [f64], n: usize, vt: &mut [f64], abs_floor: f64, rotate: bool) -> usize {
    let mut count = 0;
    for p in 0..n {
        for q in p + 1..n {
            let apq = a[p * n + q];
            let app = a[p * n + p];
            let aqq = a[q * n + q];
            let thresh = JACOBI_REL_TOL * sqrt(abs(app * aqq));
            // `!(x > t)` rather than `x <= t`: NaNs rotate (and propagate to the result).
            if !(abs(apq) > thresh && abs(apq) > abs_floor) {
                continue;
            }
            count += 1;
            if !rotate {
                continue;
            }
            let (c, s, t) = rotation(app, aqq, apq);
            rotate_pair(a, n, p, q, c, s);
            a[p * n + p] = app - t * apq;
            a[q * n + q] = aqq + t * apq;
            a[p * n + q] = 0.0;
            a[q * n + p] = 0.0;
            // Columns p and q from rows p and q (A is symmetric).
            for k in 0..n {
                a[k * n + p] = a[p * n + k];
                a[k * n + q] = a[q * n + k];
            }
            rotate_pair(vt, n, p, q, c, s);
        }
    }
    count
}

/// Rotates rows `p < q` of the row-major `(n, n)` matrix `m`:
/// `m[p] ← c·m[p] − s·m[q]`, `m[q] ← s·m[p] + c·m[q]`.
#[inline(always)]
fn rotate_pair(m: &mut [f64], n: usize, p: usize, q: usize, c: f64, s: f64) {
    let (lo, hi) = m.split_at_mut(q * n);
    let row_p = &mut lo[p * n..p * n + n];
    rotate_rows(row_p, &mut hi[..n], c, s);
}
