//! Cooperative (one team of lanes per matrix) inverse square root `C^(-1/2)` of the per-fiber
//! covariance blocks, and the resolution step built on it: the same mathematics as
//! [`super::jacobi::inverse_sqrt`] + [`crate::patch::apply_resolution`] +
//! [`crate::patch::resolution_diagonals`], written once against [`Team`] so that one GPU thread
//! block does a whole `74×74` block (Bolton & Schlegel 2010 eqs 17-19) with the matrix in shared
//! memory, and the host runs the identical phases in its tests ([`crate::team::SerialTeam`]).
//!
//! # Algorithm
//! 1. **Pivoted Cholesky in place** (outer product form, LAPACK `dpstrf`), one pivot per two
//!    phases. The pivots are not swapped physically: every column `l_j` of `L` stays in the
//!    original coordinates and is stored in the row `piv_j` of the matrix itself (that row and
//!    column of the Schur complement are dead once `piv_j` is eliminated). On exit the `n` rows
//!    `w_i` of the buffer satisfy `C = Σ_i w_i w_iᵀ` (in some row order, which does not matter).
//!    Stopping rule and [`Status`] codes as [`super::jacobi::inverse_sqrt`]: the remaining rows
//!    are zeroed when the largest pivot is `<= n·ε·max(diag C)`.
//! 2. **One-sided (Hestenes) Jacobi on the rows** `w_i`, in the round-robin ("circle method",
//!    chess tournament) parallel ordering: with `m = n` rounded up to even, step
//!    `t ∈ 0..m−1` pairs `(t, m−1)` and `((t+i) mod (m−1), (t−i) mod (m−1))` for
//!    `i ∈ 1..m/2`: `m/2` disjoint pairs per step, every pair once per sweep of `m−1` steps
//!    (for odd `n` the pair with the phantom index `n` is a bye). All pairs of a step rotate at
//!    once. Each step is two phases: (a) `g` lanes per pair form partial sums of `w_p·w_q`,
//!    `‖w_p‖²` and `‖w_q‖²` over interleaved elements; (b) every lane of the pair adds the `g`
//!    partials in the same order (so all of them derive the same rotation) and rotates its
//!    elements. The pair test is that of [`super::jacobi::inverse_sqrt`]:
//!    `|w_p·w_q| > TEAM_REL_TOL·‖w_p‖·‖w_q‖` and `|w_p·w_q| > ε²·trace C` (`trace C = Σ‖w_i‖²`
//!    is invariant); a sweep in which no pair passes it ends the iteration, and so does a sweep
//!    whose largest rotated coupling is below [`QUADRATIC_STOP`] (quadratic convergence makes
//!    the confirming sweep unnecessary), decided by every lane from per-pair counters in shared
//!    memory (uniform control flow). The norms are the
//!    freshly computed ones (not the 2×2 updates of the serial code): same test, rounding-level
//!    differences only.
//!    Why one-sided: it touches each element twice per rotation (a dot-product read, a rotation
//!    read/write) against three or more for a two-sided rotation on a full matrix (a row pass
//!    and a column pass, plus eigenvectors), needs fewer sweeps on the pivoted Cholesky factor
//!    (its Gram matrix is one LR step closer to diagonal) and needs no second `n×n` buffer, so
//!    a `74×74` block fits with its scratch in ~52 KB of shared memory (four blocks per H100 SM).
//! 3. **Compose** with the per-matrix clip of [`super::jacobi::inverse_sqrt`]: `σ_i = ‖w_i‖²`,
//!    `f = 1e-14·max σ`, `Q = f_w·I + Σ_i coef_i w_i w_iᵀ` with `f_w = f^(-1/2)` if some
//!    `σ_i <= f` (else 0) and `coef_i = (σ_i^(-1/2) − f_w)/σ_i` for the kept `σ_i > f` (else 0).
//!    `inverse_sqrt_team` (feature `reference`) forms all of `Q`; [`resolution_team`] never forms it: it needs only
//!    `Q·1`, `Q·xflux` and the `2·ndiag+1` diagonals at the core bins, each a short sum over `i`.
//!
//! # Phase rule
//! Every function here calls [`Team::each`] the same number of times on every lane (all loop
//! bounds and early returns depend only on values that every lane computes identically from
//! shared data), and within one phase no lane reads an element another lane writes.

use super::jacobi::{rotation, JacobiStats, INVERSE_SQRT_MAX_SWEEPS};

/// Rotation threshold of the team Jacobi: `|w_p·w_q| > TEAM_REL_TOL·‖w_p‖·‖w_q‖`.
///
/// The team recomputes every dot product from the rows (it keeps no 2×2 updated norms), so a
/// converged pair still shows rounding noise of up to ~n·ε relative in `w_p·w_q`; with the
/// serial threshold ε such noise kept some real covariance blocks rotating until the sweep
/// limit (measured on an H100: 6 of 23,500 blocks of a frame). 64·ε ≈ 1.4e-14 sits at the scale
/// of that noise for n = 74 and far below any effect on the results (1e-9 tolerance).
pub const TEAM_REL_TOL: f64 = 64.0 * f64::EPSILON;

/// Early end of the team Jacobi: a sweep whose largest rotated coupling
/// `|w_p·w_q| / (‖w_p‖·‖w_q‖)` stays below this value is the last one. Cyclic Jacobi
/// converges quadratically, so the couplings left after such a sweep are of order
/// `QUADRATIC_STOP² = 1e-16` (at the [`TEAM_REL_TOL`] scale) and the sweep that would only
/// confirm this is skipped (one of the ~9 sweeps of a DESI covariance block). Rotations never
/// increase the off-diagonal norm, so even without the quadratic regime the result stays
/// within ~1e-8 relative of the fully converged one, inside the 1e-9 (median) / 1e-6 (max)
/// GPU-vs-CPU tolerances; in practice the differences stay at rounding level.
pub const QUADRATIC_STOP: f64 = 1e-8;
use crate::math::{abs, fma, sqrt};
use crate::team::{strided, Shared, Team};
use crate::Status;

/// Number of length-`n` vectors at the start of the scratch (see [`jacobi_team_scratch_len`]).
const VECTORS: usize = 5;
/// Offsets (in units of `n`) of the scratch vectors. During the factorization: `L_VEC` the
/// current column of `L`, `STATE` 0 for active / 1 for eliminated indices, `FLAG` per-row flags;
/// afterwards `NORM` (σ_i), `COEF`, `T_VEC` (`coef_i·Σ w_i`), `U_VEC` (`coef_i·w_i·xflux`),
/// `ROW_SUM` (`s_k`, or per-row flags).
const L_VEC: usize = 0;
const STATE: usize = 1;
const FLAG: usize = 2;
const NORM: usize = 0;
const COEF: usize = 1;
const T_VEC: usize = 2;
const U_VEC: usize = 3;
const ROW_SUM: usize = 4;

/// Length (f64) of the `scratch` of [`orthogonal_factor_team`] and [`resolution_team`] for an
/// `(n, n)` block and a team of `lanes` lanes: `5n + 2h + 3·h·g` with `h = ⌈n/2⌉` pairs per step
/// and `g = max(1, lanes / h)` lanes per pair (74×74 with 256 lanes: 1,110 f64 = 8.7 KiB).
/// Saturates at `usize::MAX` (then no buffer is large enough).
pub fn jacobi_team_scratch_len(n: usize, lanes: usize) -> usize {
    let pairs = Pairs::new(n, lanes);
    let per_pair = pairs.g.saturating_mul(3).saturating_add(2);
    n.saturating_mul(VECTORS)
        .saturating_add(pairs.npairs.saturating_mul(per_pair))
}

/// Length (f64) of the `scratch` of `inverse_sqrt_team` (feature `reference`): `n² + `[`jacobi_team_scratch_len`].
pub fn inverse_sqrt_team_scratch_len(n: usize, lanes: usize) -> usize {
    n.saturating_mul(n)
        .saturating_add(jacobi_team_scratch_len(n, lanes))
}

/// Shared memory (f64 count) of the `resolution_team` kernel: the `(n, n)` block followed by
/// the scratch, `n² + `[`jacobi_team_scratch_len`]`(n, lanes)`; bytes = 8 × this
/// (74×74, 256 lanes: 6,586 f64 = 52,688 bytes; 128 lanes: 50,024 bytes; 96 lanes: 49,136 bytes).
pub fn resolution_team_shared_len(n: usize, lanes: usize) -> usize {
    inverse_sqrt_team_scratch_len(n, lanes)
}

/// Runs `update(i, load(i))` for `i = start, start + step, ... < end`, [`BATCH`] indices at a
/// time: the loads of a batch are all issued before its updates. The updates store to the
/// buffer the loads read, so the compiler may not move a later load above an earlier store;
/// without batching every element waited a full shared-memory latency (measured on an H100
/// with Nsight Compute: short-scoreboard stalls first in the rotation and Schur loops).
#[inline(always)]
fn strided_batched<T: Copy + Default, L: FnMut(usize) -> T, U: FnMut(usize, T)>(
    start: usize,
    end: usize,
    step: usize,
    mut load: L,
    mut update: U,
) {
    let mut i = start;
    while i + (BATCH - 1) * step < end {
        let mut v = [T::default(); BATCH];
        unroll!(t in [0, 1, 2, 3, 4, 5, 6, 7] => {
            v[t] = load(i + t * step);
        });
        unroll!(t in [0, 1, 2, 3, 4, 5, 6, 7] => {
            update(i + t * step, v[t]);
        });
        i += BATCH * step;
    }
    while i < end {
        let v = load(i);
        update(i, v);
        i += step;
    }
}

/// Indices per batch of [`strided_batched`].
const BATCH: usize = 8;

/// Column-fastest split of the lanes over a `(rows, cols)` grid: lane `l < cstep·rstep` handles
/// rows `l / cstep + j·rstep` and columns `l % cstep + k·cstep` (consecutive lanes touch
/// consecutive columns: no shared-memory bank conflicts on row-major data).
#[derive(Clone, Copy)]
struct Grid {
    cstep: usize,
    rstep: usize,
}

impl Grid {
    #[inline(always)]
    fn new(lanes: usize, cols: usize) -> Self {
        if cols == 0 || lanes < cols {
            Grid {
                cstep: lanes.max(1),
                rstep: 1,
            }
        } else {
            Grid {
                cstep: cols,
                rstep: lanes / cols,
            }
        }
    }

    /// `(first row, first column)` of `lane`, `None` for an idle lane.
    #[inline(always)]
    fn start(&self, lane: usize) -> Option<(usize, usize)> {
        if lane < self.cstep * self.rstep {
            Some((lane / self.cstep, lane % self.cstep))
        } else {
            None
        }
    }

    /// Runs `f(i, k)` on the elements of `lane` in `(rows, cols)`.
    #[inline(always)]
    fn each<F: FnMut(usize, usize)>(&self, lane: usize, rows: usize, cols: usize, mut f: F) {
        if let Some((r0, c0)) = self.start(lane) {
            strided(r0, rows, self.rstep, |i| {
                strided(c0, cols, self.cstep, |k| f(i, k));
            });
        }
    }
}

/// The round-robin pair schedule of an order-`n` problem on a team of `lanes` lanes.
#[derive(Clone, Copy)]
struct Pairs {
    /// `n` rounded up to even.
    m: usize,
    /// Pairs per step, `m / 2`.
    npairs: usize,
    /// Lanes per pair.
    g: usize,
    /// Pair groups: lane `l < g·groups` serves pair slots `l / g + j·groups`.
    groups: usize,
}

impl Pairs {
    #[inline(always)]
    fn new(n: usize, lanes: usize) -> Self {
        let m = n + (n & 1);
        let npairs = m / 2;
        let g = (lanes / npairs.max(1)).max(1);
        Pairs {
            m,
            npairs,
            g,
            groups: (lanes / g).max(1),
        }
    }

    /// `(group, sub-lane)` of `lane`, `None` for an idle lane.
    #[inline(always)]
    fn lane(&self, lane: usize) -> Option<(usize, usize)> {
        if lane < self.g * self.groups {
            Some((lane / self.g, lane % self.g))
        } else {
            None
        }
    }

    /// Pair `(p, q)` of slot `slot` at step `step`: `p = step + slot`, `q = step − slot`
    /// (mod `m − 1`; `q = m − 1` for slot 0, the phantom `n` when `n` is odd). Not sorted: the
    /// lanes of consecutive slots then read consecutive rows `p` (and `q`), which for a row
    /// stride of 74 f64 fall in distinct shared-memory banks (sorting mixed the two runs
    /// within a warp and caused bank conflicts). A rotation of `(w_q, w_p)` gives the same
    /// pair of rows as one of `(w_p, w_q)` up to order and sign, which the composition
    /// `Σ coef_i w_i w_iᵀ` does not see.
    #[inline(always)]
    fn pair(&self, step: usize, slot: usize) -> (usize, usize) {
        // `step < r` and `1 <= slot <= r`, so both sums lie in `[0, 2r)`: one conditional
        // subtraction replaces `% r` (an integer division, costly on the GPU).
        let r = self.m - 1;
        let wrap = |v: usize| if v >= r { v - r } else { v };
        if slot == 0 {
            (step, r)
        } else {
            (wrap(step + slot), wrap(step + r - slot))
        }
    }
}

/// Orthogonal factor of a symmetric positive (semi)definite matrix: on exit the rows `w_i` of
/// `a` are mutually orthogonal (to the Jacobi threshold) and `C = Σ_i w_i w_iᵀ` (steps 1-2 of
/// the module documentation). The eigenvalues of `C` are `‖w_i‖²`, its eigenvectors
/// `w_i / ‖w_i‖`.
///
/// # Parameters
/// - `a`: `(n, n)` row-major (stride `n`), the input `C`, symmetric (both triangles read and
///   equal); overwritten by the rows `w_i` (row order unspecified; zero rows for a
///   rank-deficient `C`).
/// - `scratch`: at least [`jacobi_team_scratch_len`]`(n, team.lanes())` f64.
/// - `stats`: sweeps that rotated and rotations applied (as [`JacobiStats`]).
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] (short buffers, no lanes); [`Status::NonFinite`] (NaN
/// or infinity in `a`); [`Status::NotPositiveDefinite`] (indefinite beyond rounding);
/// [`Status::NoConvergence`] after [`INVERSE_SQRT_MAX_SWEEPS`] rotating sweeps (the rows are
/// then the last iterate). The same value on every lane.
pub fn orthogonal_factor_team<T: Team>(
    team: &T,
    a: Shared,
    n: usize,
    scratch: Shared,
    stats: &mut JacobiStats,
) -> Status {
    *stats = JacobiStats::default();
    let lanes = team.lanes();
    let nn = match n.checked_mul(n) {
        Some(nn) => nn,
        None => return Status::BadShape,
    };
    if lanes == 0 || a.len() < nn || scratch.len() < jacobi_team_scratch_len(n, lanes) {
        return Status::BadShape;
    }
    if n == 0 {
        return Status::Ok;
    }
    let (status, trace) = if n == DESI_BLOCK {
        pivoted_cholesky_team(team, a, Fixed::<DESI_BLOCK>, scratch)
    } else {
        pivoted_cholesky_team(team, a, Dyn(n), scratch)
    };
    if status != Status::Ok {
        return status;
    }
    one_sided_jacobi_team(
        team,
        a,
        n,
        scratch,
        f64::EPSILON * f64::EPSILON * trace,
        stats,
    )
}

/// Step 1: pivoted Cholesky in place (see the module documentation). Returns the status and
/// `trace C`.
fn pivoted_cholesky_team<T: Team, O: Size>(
    team: &T,
    a: Shared,
    order: O,
    scratch: Shared,
) -> (Status, f64) {
    let n = order.get();
    let lanes = team.lanes();
    if a.len() < n * n || scratch.len() < VECTORS * n {
        return (Status::BadShape, 0.0);
    }
    let lvec = scratch.sub(L_VEC * n, n);
    let state = scratch.sub(STATE * n, n);
    let flag = scratch.sub(FLAG * n, n);
    let grid = Grid::new(lanes, n);

    // Per-row finiteness; every index active.
    team.each(|lane| {
        strided(lane, n, lanes, |i| {
            let mut bad = 0.0;
            for k in 0..n {
                if !a.get(i * n + k).is_finite() {
                    bad = 1.0;
                }
            }
            flag.set(i, bad);
            state.set(i, 0.0);
        })
    });
    let (mut nonfinite, mut max_diag, mut trace) = (false, 0.0f64, 0.0);
    team.each(|_| {
        let (mut bad, mut big, mut sum) = (false, 0.0f64, 0.0);
        for i in 0..n {
            bad |= flag.get(i) != 0.0;
            let d = a.get(i * n + i);
            big = big.max(d);
            sum += d;
        }
        (nonfinite, max_diag, trace) = (bad, big, sum);
    });
    if nonfinite {
        return (Status::NonFinite, trace);
    }
    let tol = n as f64 * f64::EPSILON * max_diag;

    for _ in 0..n {
        // Pivot (every lane scans the active diagonal: identical result) and column l_j.
        let (mut piv, mut pivot) = (n, f64::NAN);
        team.each(|lane| {
            let (mut best, mut best_val) = (n, f64::NAN);
            for i in 0..n {
                // SAFETY: i < n; state holds n values and a n² (checked by the caller).
                if unsafe { state.get_unchecked(i) } == 0.0 {
                    let d = unsafe { a.get_unchecked(i * n + i) };
                    if best == n || d > best_val {
                        best = i;
                        best_val = d;
                    }
                }
            }
            (piv, pivot) = (best, best_val);
            if best < n && best_val > tol {
                let d = sqrt(best_val);
                let inv = 1.0 / d;
                strided(lane, n, lanes, |k| {
                    lvec.set(
                        k,
                        if k == best {
                            d
                        } else {
                            a.get(best * n + k) * inv
                        },
                    );
                });
            }
        });
        if pivot.is_nan() {
            return (Status::NonFinite, trace);
        }
        if pivot <= tol {
            if pivot < -tol {
                return (Status::NotPositiveDefinite, trace);
            }
            // The rest is zero to rounding: the active rows (Schur complement) become zero rows.
            team.each(|lane| {
                grid.each(lane, n, n, |i, k| {
                    if state.get(i) == 0.0 {
                        a.set(i * n + k, 0.0);
                    }
                })
            });
            return (Status::Ok, trace);
        }
        // Row piv <- l_j; active rows: Schur update, column piv zeroed; eliminated rows (earlier
        // l's) untouched.
        // Column-major per lane: the column's l_k is loaded once, the rows go in batches.
        team.each(|lane| {
            if lane == 0 {
                state.set(piv, 1.0);
            }
            if let Some((r0, c0)) = grid.start(lane) {
                strided(c0, n, grid.cstep, |k| {
                    // SAFETY: k < n; lvec holds n values.
                    let lk = unsafe { lvec.get_unchecked(k) };
                    strided_batched(
                        r0,
                        n,
                        grid.rstep,
                        |i| {
                            // SAFETY: i, k < n; state and lvec hold n values, a n². The state
                            // of row piv (written in this phase by lane 0) is not read.
                            unsafe {
                                let active = i != piv && state.get_unchecked(i) == 0.0;
                                (active, lvec.get_unchecked(i), a.get_unchecked(i * n + k))
                            }
                        },
                        |i, (active, li, aik)| {
                            let v = if i == piv {
                                lk
                            } else if !active {
                                aik
                            } else if k == piv {
                                0.0
                            } else {
                                fma(-li, lk, aik)
                            };
                            // SAFETY: as above; each (i, k) belongs to this lane alone.
                            unsafe { a.set_unchecked(i * n + k, v) };
                        },
                    );
                });
            }
        });
    }
    (Status::Ok, trace)
}

/// A size of the Jacobi steps, the lanes per pair `g` or the order `n`: a compile-time
/// constant ([`Fixed`]) for the usual team sizes and DESI's block (the strided loops over a row
/// then unroll with constant offsets and trip counts and no index arithmetic per element, which
/// measurably dominated the GPU kernel's instruction count), or a run-time value ([`Dyn`]).
trait Size: Copy {
    /// The value.
    fn get(self) -> usize;
}

/// A size known at compile time.
#[derive(Clone, Copy)]
struct Fixed<const N: usize>;

impl<const N: usize> Size for Fixed<N> {
    #[inline(always)]
    fn get(self) -> usize {
        N
    }
}

/// A size known at run time.
#[derive(Clone, Copy)]
struct Dyn(usize);

impl Size for Dyn {
    #[inline(always)]
    fn get(self) -> usize {
        self.0
    }
}

/// Step 2: one-sided Jacobi on the rows of `w` in the round-robin order (dispatches on the
/// lanes per pair; see [`Size`]).
fn one_sided_jacobi_team<T: Team>(
    team: &T,
    w: Shared,
    n: usize,
    scratch: Shared,
    abs_floor: f64,
    stats: &mut JacobiStats,
) -> Status {
    let pairs = Pairs::new(n, team.lanes());
    let order = Dyn(n);
    match (n, pairs.g) {
        // DESI's block (nwavetot = 50 + 2·12) at the default 96 lanes: constant trip counts.
        (DESI_BLOCK, 2) => jacobi_sweeps(
            team,
            w,
            scratch,
            abs_floor,
            stats,
            Fixed::<2>,
            Fixed::<DESI_BLOCK>,
        ),
        (_, 1) => jacobi_sweeps(team, w, scratch, abs_floor, stats, Fixed::<1>, order),
        (_, 2) => jacobi_sweeps(team, w, scratch, abs_floor, stats, Fixed::<2>, order),
        (_, 3) => jacobi_sweeps(team, w, scratch, abs_floor, stats, Fixed::<3>, order),
        (_, 4) => jacobi_sweeps(team, w, scratch, abs_floor, stats, Fixed::<4>, order),
        (_, g) => jacobi_sweeps(team, w, scratch, abs_floor, stats, Dyn(g), order),
    }
}

/// The block order of DESI's default extraction (`nwavetot = nwavestep + 2·pad = 50 + 24`).
const DESI_BLOCK: usize = 74;

/// Runs `f(k, odd)` for a lane's elements `k = sub, sub + g, ... < n` (`sub < g`; when `g`
/// divides `n`, exactly `k = sub + g·j` for `j < n / g`: a constant trip count when `n` and `g`
/// are compile-time constants), alternately marked even (`false`) and odd (`true`), two per
/// iteration, so that a caller can keep two independent sets of accumulators (the
/// flag is a constant at each call site once inlined: no indexing, registers only).
#[inline(always)]
fn lane_elements_split<F: FnMut(usize, bool)>(sub: usize, n: usize, g: usize, mut f: F) {
    if n.is_multiple_of(g) {
        let count = n / g;
        let mut j = 0;
        while j + 1 < count {
            f(sub + g * j, false);
            f(sub + g * (j + 1), true);
            j += 2;
        }
        if j < count {
            f(sub + g * j, false);
        }
    } else {
        let mut k = sub;
        while k + g < n {
            f(k, false);
            f(k + g, true);
            k += 2 * g;
        }
        if k < n {
            f(k, false);
        }
    }
}

/// The sweeps of [`one_sided_jacobi_team`] with `n = order.get()` and
/// `lanes_per_pair.get() == Pairs::new(n, lanes).g`.
///
/// The caller guarantees `w.len() >= n²` and the scratch length (checked in
/// [`orthogonal_factor_team`]); every `p·n + k` below has `p, k < n`.
fn jacobi_sweeps<T: Team, G: Size, O: Size>(
    team: &T,
    w: Shared,
    scratch: Shared,
    abs_floor: f64,
    stats: &mut JacobiStats,
    lanes_per_pair: G,
    order: O,
) -> Status {
    let n = order.get();
    let pairs = Pairs::new(n, team.lanes());
    let (g, npairs, groups) = (lanes_per_pair.get(), pairs.npairs, pairs.groups);
    debug_assert_eq!(g, pairs.g);
    let cnt = scratch.sub(VECTORS * n, npairs);
    let bigcnt = scratch.sub(VECTORS * n + npairs, npairs);
    let part = scratch.sub(VECTORS * n + 2 * npairs, 3 * npairs * g);
    let steps = pairs.m - 1;
    let mut status = Status::NoConvergence;
    for sweep in 0..=INVERSE_SQRT_MAX_SWEEPS {
        let rotate = sweep < INVERSE_SQRT_MAX_SWEEPS;
        for step in 0..steps {
            // (a) Partial sums of w_p·w_q, ‖w_p‖², ‖w_q‖².
            team.each(|lane| {
                let Some((group, sub)) = pairs.lane(lane) else {
                    return;
                };
                strided(group, npairs, groups, |slot| {
                    let (p, q) = pairs.pair(step, slot);
                    if p >= n || q >= n {
                        return;
                    }
                    // Two sets of accumulators (even and odd elements): half-length FMA
                    // dependency chains, which bounded this phase on the GPU.
                    let (mut even, mut odd) = ([0.0; 3], [0.0; 3]);
                    let (rp, rq) = (p * n, q * n);
                    lane_elements_split(sub, n, g, |k, is_odd| {
                        // SAFETY: p, q < n and k < n, so both indices are < n² <= w.len().
                        let (x, y) = unsafe { (w.get_unchecked(rp + k), w.get_unchecked(rq + k)) };
                        let a = if is_odd { &mut odd } else { &mut even };
                        a[0] = fma(x, y, a[0]);
                        a[1] = fma(x, x, a[1]);
                        a[2] = fma(y, y, a[2]);
                    });
                    let gpq = even[0] + odd[0];
                    let dp = even[1] + odd[1];
                    let dq = even[2] + odd[2];
                    let base = 3 * (slot * g + sub);
                    part.set(base, gpq);
                    part.set(base + 1, dp);
                    part.set(base + 2, dq);
                });
            });
            // (b) Test and rotate; sub-lane 0 counts the pairs that failed the test.
            team.each(|lane| {
                let Some((group, sub)) = pairs.lane(lane) else {
                    return;
                };
                strided(group, npairs, groups, |slot| {
                    let (p, q) = pairs.pair(step, slot);
                    let (mut hit, mut big) = (false, false);
                    if p < n && q < n {
                        let (mut gpq, mut dp, mut dq) = (0.0, 0.0, 0.0);
                        for r in 0..g {
                            let base = 3 * (slot * g + r);
                            gpq += part.get(base);
                            dp += part.get(base + 1);
                            dq += part.get(base + 2);
                        }
                        // |g| > tol·sqrt(dp·dq) as g² > tol²·dp·dq: no square root per step (the
                        // products stay far from overflow for covariance-scaled entries; an
                        // overflow to inf tests as "rotate", the safe side).
                        let (g2, dd) = (gpq * gpq, dp * dq);
                        hit = g2 > TEAM_REL_TOL * TEAM_REL_TOL * dd && abs(gpq) > abs_floor;
                        // A coupling at or above QUADRATIC_STOP (or NaN) forbids the early end.
                        let settled = g2 < QUADRATIC_STOP * QUADRATIC_STOP * dd;
                        big = hit && !settled;
                        if hit && rotate {
                            let (c, s, _) = rotation(dp, dq, gpq);
                            let (rp, rq) = (p * n, q * n);
                            strided_batched(
                                sub,
                                n,
                                g,
                                // SAFETY: as in phase (a).
                                |k| unsafe { (w.get_unchecked(rp + k), w.get_unchecked(rq + k)) },
                                |k, (x, y)| unsafe {
                                    w.set_unchecked(rp + k, fma(c, x, -s * y));
                                    w.set_unchecked(rq + k, fma(s, x, c * y));
                                },
                            );
                        }
                    }
                    if sub == 0 {
                        let (before, before_big) = if step == 0 {
                            (0.0, 0.0)
                        } else {
                            (cnt.get(slot), bigcnt.get(slot))
                        };
                        cnt.set(slot, before + if hit { 1.0 } else { 0.0 });
                        bigcnt.set(slot, before_big + if big { 1.0 } else { 0.0 });
                    }
                });
            });
        }
        let (mut total, mut large) = (0.0, 0.0);
        team.each(|_| {
            let (mut sum, mut big) = (0.0, 0.0);
            for slot in 0..npairs {
                sum += cnt.get(slot);
                big += bigcnt.get(slot);
            }
            (total, large) = (sum, big);
        });
        if total == 0.0 {
            status = Status::Ok;
            break;
        }
        if !rotate {
            break;
        }
        stats.sweeps += 1;
        // Counts are exact small integers in f64.
        stats.rotations += total as usize;
        if large == 0.0 {
            status = Status::Ok;
            break;
        }
    }
    status
}

/// Step 3 (weights): `σ_i = ‖w_i‖²` of the rows of `w`, the clip, `coef_i` into `COEF` and
/// (with `xflux`) `coef_i·Σ_j w_i[j]` into `T_VEC` and `coef_i·Σ_j w_i[j]·xflux[j·stride]` into
/// `U_VEC`. Returns the status and the floor weight `f_w` (identical on every lane).
fn weights_team<T: Team, O: Size>(
    team: &T,
    w: Shared,
    order: O,
    xflux: Option<(&[f64], usize)>,
    scratch: Shared,
) -> (Status, f64) {
    let n = order.get();
    let lanes = team.lanes();
    if w.len() < n * n || scratch.len() < VECTORS * n {
        return (Status::BadShape, 0.0);
    }
    let norm = scratch.sub(NORM * n, n);
    let coef = scratch.sub(COEF * n, n);
    let tvec = scratch.sub(T_VEC * n, n);
    let uvec = scratch.sub(U_VEC * n, n);
    team.each(|lane| {
        strided(lane, n, lanes, |i| {
            let (mut d, mut one, mut x) = (0.0, 0.0, 0.0);
            for j in 0..n {
                // SAFETY: i, j < n and w.len() >= n² (checked by the callers' shape tests).
                let v = unsafe { w.get_unchecked(i * n + j) };
                d = fma(v, v, d);
                one += v;
                if let Some((xf, stride)) = xflux {
                    x = fma(v, xf[j * stride], x);
                }
            }
            norm.set(i, d);
            tvec.set(i, one);
            uvec.set(i, x);
        })
    });
    let (mut status, mut floor_weight) = (Status::Ok, 0.0);
    team.each(|lane| {
        let (mut sigma_max, mut finite) = (0.0f64, true);
        for i in 0..n {
            let d = norm.get(i);
            finite &= d.is_finite();
            sigma_max = sigma_max.max(d);
        }
        if !finite {
            status = Status::NonFinite;
            return;
        }
        if sigma_max <= 0.0 {
            status = Status::NotPositiveDefinite;
            return;
        }
        let floor = 1e-14 * sigma_max;
        let mut clipped = false;
        for i in 0..n {
            clipped |= norm.get(i) <= floor;
        }
        let fw = if clipped { 1.0 / sqrt(floor) } else { 0.0 };
        (status, floor_weight) = (Status::Ok, fw);
        strided(lane, n, lanes, |i| {
            let d = norm.get(i);
            let c = if d > floor {
                (1.0 / sqrt(d) - fw) / d
            } else {
                0.0
            };
            coef.set(i, c);
            tvec.set(i, c * tvec.get(i));
            uvec.set(i, c * uvec.get(i));
        });
    });
    (status, floor_weight)
}

/// `Q[j][k] = f_w·δ_jk + Σ_i coef_i·w_i[min]·w_i[max]` (symmetric by construction).
#[inline(always)]
fn q_entry(w: Shared, coef: Shared, n: usize, fw: f64, j: usize, k: usize) -> f64 {
    let (lo, hi) = if j <= k { (j, k) } else { (k, j) };
    let mut sum = if j == k { fw } else { 0.0 };
    if lo >= n || hi >= n || coef.len() < n || w.len() < n * n {
        return f64::NAN;
    }
    for i in 0..n {
        // SAFETY: i, lo, hi < n, coef.len() >= n and w.len() >= n² (checked above).
        unsafe {
            sum = fma(
                coef.get_unchecked(i) * w.get_unchecked(i * n + lo),
                w.get_unchecked(i * n + hi),
                sum,
            );
        }
    }
    sum
}

/// Inverse square root `C^(-1/2)` in place, cooperatively (the result of
/// [`super::jacobi::inverse_sqrt`], to rounding; Bolton & Schlegel 2010 eqs 17-19).
///
/// # Parameters
/// - `a`: `(n, n)` row-major (stride `n`), symmetric positive (semi)definite; overwritten by
///   `Q = C^(-1/2)` (exactly symmetric).
/// - `scratch`: at least [`inverse_sqrt_team_scratch_len`]`(n, team.lanes())` f64 (the first
///   `n²` hold a copy of the orthogonal factor).
///
/// # Returns
/// As [`super::jacobi::inverse_sqrt`] (and [`Status::BadShape`] for a team without lanes);
/// with [`Status::NoConvergence`] `a` holds the result built from the last iterate. Identical
/// on every lane.
///
/// Reference only (tests; feature `reference`): the kernels use [`resolution_team`].
#[cfg(any(test, feature = "reference"))]
pub fn inverse_sqrt_team<T: Team>(team: &T, a: Shared, n: usize, scratch: Shared) -> Status {
    let mut stats = JacobiStats::default();
    inverse_sqrt_team_with_stats(team, a, n, scratch, &mut stats)
}

/// [`inverse_sqrt_team`], also reporting the sweep and rotation counts (reference only, as
/// [`inverse_sqrt_team`]).
#[cfg(any(test, feature = "reference"))]
pub fn inverse_sqrt_team_with_stats<T: Team>(
    team: &T,
    a: Shared,
    n: usize,
    scratch: Shared,
    stats: &mut JacobiStats,
) -> Status {
    *stats = JacobiStats::default();
    let lanes = team.lanes();
    let nn = match n.checked_mul(n) {
        Some(nn) => nn,
        None => return Status::BadShape,
    };
    if lanes == 0 || a.len() < nn || scratch.len() < inverse_sqrt_team_scratch_len(n, lanes) {
        return Status::BadShape;
    }
    let w = scratch.sub(0, nn);
    let small = scratch.sub(nn, scratch.len() - nn);
    let status = orthogonal_factor_team(team, a, n, small, stats);
    if n == 0 || (status != Status::Ok && status != Status::NoConvergence) {
        return status;
    }
    let grid = Grid::new(lanes, n);
    team.each(|lane| grid.each(lane, n, n, |i, k| w.set(i * n + k, a.get(i * n + k))));
    let (code, fw) = weights_team(team, w, Dyn(n), None, small);
    if code != Status::Ok {
        return code;
    }
    let coef = small.sub(COEF * n, n);
    team.each(|lane| {
        grid.each(lane, n, n, |j, k| {
            if j <= k {
                let v = q_entry(w, coef, n, fw, j, k);
                a.set(j * n + k, v);
                a.set(k * n + j, v);
            }
        })
    });
    let flag = small.sub(ROW_SUM * n, n);
    team.each(|lane| {
        strided(lane, n, lanes, |i| {
            let mut bad = 0.0;
            for k in 0..n {
                if !a.get(i * n + k).is_finite() {
                    bad = 1.0;
                }
            }
            flag.set(i, bad);
        })
    });
    let mut finite = true;
    team.each(|_| {
        let mut ok = true;
        for i in 0..n {
            ok &= flag.get(i) == 0.0;
        }
        finite = ok;
    });
    if finite {
        status
    } else {
        Status::NonFinite
    }
}

/// Resolution of one core spectrum from its covariance block, cooperatively: the results of
/// [`super::jacobi::inverse_sqrt`] → [`crate::patch::apply_resolution`] →
/// [`crate::patch::resolution_diagonals`] (to rounding), without forming `Q = C_bb^(-1/2)`
/// (Bolton & Schlegel 2010 eqs 17-19): `s_k = Σ_j Q[k][j]`, `ivar_k = s_k²`,
/// `flux_k = Σ_j Q[k][j]·xflux_j / s_k`, `R[r][k] = Q[r][k] / s_r`.
///
/// # Parameters
/// - `cov`: `(nwavetot, nwavetot)` row-major `C_bb` (symmetric positive definite); destroyed.
/// - `xflux`: the fiber's deconvolved flux, element `j` at `xflux[j·xflux_stride]`
///   (`xflux_stride = nspecpad` in wavelength-major order).
/// - `ndiag`, `k_min..k_max`: the stored diagonals and core bins, as
///   [`crate::patch::resolution_diagonals`].
/// - `flux`, `ivar`: `(nwavetot,)` outputs; `rdiags`: `(2·ndiag+1, out_stride)` output,
///   `rdiags[d·out_stride + (k − k_min)] = R[k − ndiag + d][k]` (0 outside the block).
/// - `scratch`: at least [`jacobi_team_scratch_len`]`(nwavetot, team.lanes())` f64.
/// - `stats`: Jacobi sweep and rotation counts.
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] for short buffers or bad ranges; the failures of
/// [`orthogonal_factor_team`] (including [`Status::NoConvergence`]: nothing is written then);
/// [`Status::NonFinite`] if a row sum is zero or not finite (`flux`/`ivar` may then be partly
/// written, `rdiags` is not). Identical on every lane.
#[allow(clippy::too_many_arguments)]
pub fn resolution_team<T: Team>(
    team: &T,
    cov: Shared,
    nwavetot: usize,
    xflux: &[f64],
    xflux_stride: usize,
    ndiag: usize,
    k_min: usize,
    k_max: usize,
    flux: Shared,
    ivar: Shared,
    rdiags: Shared,
    out_stride: usize,
    scratch: Shared,
    stats: &mut JacobiStats,
) -> Status {
    *stats = JacobiStats::default();
    let n = nwavetot;
    let ndiagonal = 2 * ndiag + 1;
    if flux.len() < n
        || ivar.len() < n
        || (n > 0 && xflux.len() < (n - 1) * xflux_stride + 1)
        || k_max > n
        || k_min > k_max
        || rdiags.len() < (ndiagonal - 1) * out_stride + (k_max - k_min)
    {
        return Status::BadShape;
    }
    let status = orthogonal_factor_team(team, cov, n, scratch, stats);
    if status != Status::Ok || n == 0 {
        return status;
    }
    if n == DESI_BLOCK {
        compose_resolution(
            team,
            Fixed::<DESI_BLOCK>,
            cov,
            (xflux, xflux_stride),
            (ndiag, k_min, k_max),
            (flux, ivar, rdiags, out_stride),
            scratch,
        )
    } else {
        compose_resolution(
            team,
            Dyn(n),
            cov,
            (xflux, xflux_stride),
            (ndiag, k_min, k_max),
            (flux, ivar, rdiags, out_stride),
            scratch,
        )
    }
}

/// Step 3 of [`resolution_team`] on the orthogonal factor `w` (order `order.get()`): weights,
/// `Q·1`, `Q·xflux`, ivar, flux and the diagonals of `R` (shapes checked by the caller).
fn compose_resolution<T: Team, O: Size>(
    team: &T,
    order: O,
    w: Shared,
    (xflux, xflux_stride): (&[f64], usize),
    (ndiag, k_min, k_max): (usize, usize, usize),
    (flux, ivar, rdiags, out_stride): (Shared, Shared, Shared, usize),
    scratch: Shared,
) -> Status {
    let n = order.get();
    let lanes = team.lanes();
    let ndiagonal = 2 * ndiag + 1;
    let (status, fw) = weights_team(team, w, order, Some((xflux, xflux_stride)), scratch);
    if status != Status::Ok {
        return status;
    }
    let coef = scratch.sub(COEF * n, n);
    let tvec = scratch.sub(T_VEC * n, n);
    let uvec = scratch.sub(U_VEC * n, n);
    let row_sum = scratch.sub(ROW_SUM * n, n);
    // s = Q·1 and Q·xflux, column k per lane (Q is symmetric).
    team.each(|lane| {
        strided(lane, n, lanes, |k| {
            let mut s = fw;
            let mut qx = fw * xflux[k * xflux_stride];
            for i in 0..n {
                // SAFETY: i, k < n; w holds n² values and the vectors n (orthogonal_factor_team
                // checked both).
                unsafe {
                    let v = w.get_unchecked(i * n + k);
                    s = fma(tvec.get_unchecked(i), v, s);
                    qx = fma(uvec.get_unchecked(i), v, qx);
                }
            }
            row_sum.set(k, s);
            ivar.set(k, s * s);
            flux.set(k, qx / s);
        })
    });
    // Diagonals of R at the core bins.
    let mut finite = true;
    let ncore = k_max - k_min;
    let grid = Grid::new(lanes, ncore);
    team.each(|lane| {
        let mut ok = true;
        for k in 0..n {
            let s = row_sum.get(k);
            ok &= s.is_finite() && s != 0.0;
        }
        finite = ok;
        if !ok {
            return;
        }
        grid.each(lane, ndiagonal, ncore, |d, j| {
            let k = k_min + j;
            let row = (k + d).wrapping_sub(ndiag);
            let value = if k + d >= ndiag && row < n {
                q_entry(w, coef, n, fw, row, k) * (1.0 / row_sum.get(row))
            } else {
                0.0
            };
            rdiags.set(d * out_stride + j, value);
        });
    });
    if finite {
        Status::Ok
    } else {
        Status::NonFinite
    }
}
