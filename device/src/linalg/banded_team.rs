//! Cooperative (one thread block per patch) versions of the banded Cholesky routines of
//! [`super::banded`]: factor, solve and one interleaved covariance block, written once
//! against [`Team`] (see [`crate::team`] for the phase rule) for the GPU ([`crate::team`]'s
//! `BlockTeam`) and the host ([`crate::team::SerialTeam`], tests).
//!
//! Band storage is that of [`super::banded`]: `ab` has shape `(n, kd + 1)`, row-major,
//! `ab[i * (kd + 1) + (j + kd - i)] = M[i][j]` (the diagonal last in each row). `ab` may live
//! in global memory; the routines keep their hot data in the `window` / `ring` / `out`
//! views (shared memory on the GPU).
//!
//! Every lane calls [`Team::each`] the same number of times (uniform control flow); a failed
//! pivot is written to a flag in one phase and read by every lane after the barrier, and all
//! lanes return the same [`Status`].

use super::dense::pivot_status;
use crate::lds::Lds;
use crate::math::{fma, sqrt};
use crate::team::{Shared, Team};
use crate::Status;

/// Rows loaded from `ab` into the window at once by [`band_factor_team`] (one global-memory
/// latency per `LOAD_AHEAD` columns instead of one per column).
const LOAD_AHEAD: usize = 8;

/// Rows of `Y_b` computed per phase by [`covariance_block_team`] (each ring value loaded
/// once is used `ROWS` times).
const ROWS: usize = 8;

/// Row stride of the window: `kd + 1` rounded up to odd, so that the lanes of one column
/// (rows `j+1..=j+kd`, one row per lane) hit distinct shared-memory banks.
fn window_stride(kd: usize) -> usize {
    kd.saturating_add(1) | 1
}

/// Rows of the window ring: the `kd + 1` active rows plus `LOAD_AHEAD` loaded ahead (at
/// least `3 * LOAD_AHEAD`, the staging of [`band_back_solve_team`]).
fn window_rows(kd: usize) -> usize {
    kd.saturating_add(1 + LOAD_AHEAD).max(3 * LOAD_AHEAD)
}

/// Length of the `window` view that [`band_factor_team`], [`band_factor_forward_team`],
/// `band_solve_team` and [`band_back_solve_team`] need: a ring of
/// `max(kd + 1 + 8, 24)` band rows of stride `(kd + 1) | 1`, plus 2 flags and two sets of 8
/// partial pivot sums (3,971 values = 31.8 KB for `kd = 58`).
pub fn band_factor_team_window_len(kd: usize) -> usize {
    window_rows(kd)
        .saturating_mul(window_stride(kd))
        .saturating_add(2 + 2 * 8)
}

/// `true` when `ab` has the band shape `(n, kd + 1)`.
fn band_shape_ok(ab: &Shared, n: usize, kd: usize) -> bool {
    kd.checked_add(1).and_then(|w| w.checked_mul(n)) == Some(ab.len())
}

/// A status code as stored in a shared flag.
fn status_flag(status: Status) -> f64 {
    status as u32 as f64
}

/// The status of a shared flag.
fn flag_status(flag: f64) -> Status {
    Status::from_code(flag as u32)
}

/// `Σ_{t<len} x(t)·y(t)` in the order of `dense::dot` (8 fused accumulators, remainder
/// into the first ones, same final combination): bitwise the same value.
#[inline(always)]
fn dot8_at(len: usize, x: impl Fn(usize) -> f64, y: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let full = len / 8 * 8;
    let mut i = 0;
    while i < full {
        for (t, acc_t) in acc.iter_mut().enumerate() {
            *acc_t = fma(x(i + t), y(i + t), *acc_t);
        }
        i += 8;
    }
    // Constant trip count (unrolled: `acc` stays in registers).
    for (t, acc_t) in acc.iter_mut().enumerate() {
        if full + t < len {
            *acc_t = fma(x(full + t), y(full + t), *acc_t);
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `Σ_{t<len} x(t)·y(t)` in the order of `banded::dot4` (4 fused accumulators; bitwise) and, in the same pass over `x`, the 8 accumulators of
/// [`dot8_at`]`(len, x, x)` before their final combination (each accumulator receives its
/// terms in `dot8_at`'s order): the sum of squares of a row comes for free with its dot
/// product (the loads are shared; the FMAs are independent chains).
#[inline(always)]
fn dot4_squares8_at(
    len: usize,
    x: impl Fn(usize) -> f64,
    y: impl Fn(usize) -> f64,
) -> (f64, [f64; 8]) {
    let mut acc = [0.0f64; 4];
    let mut sq = [0.0f64; 8];
    let full = len / 8 * 8;
    let mut i = 0;
    while i < full {
        for (t, sq_t) in sq.iter_mut().enumerate() {
            let xv = x(i + t);
            acc[t % 4] = fma(xv, y(i + t), acc[t % 4]);
            *sq_t = fma(xv, xv, *sq_t);
        }
        i += 8;
    }
    // Constant trip count (unrolled: the accumulators stay in registers).
    for (t, sq_t) in sq.iter_mut().enumerate() {
        if full + t < len {
            let xv = x(full + t);
            acc[t % 4] = fma(xv, y(full + t), acc[t % 4]);
            *sq_t = fma(xv, xv, *sq_t);
        }
    }
    ((acc[0] + acc[2]) + (acc[1] + acc[3]), sq)
}

/// Window geometry of one band: row `i` of the band lives in ring slot `i % rows`.
#[derive(Clone, Copy)]
struct Window {
    data: Shared,
    rows: usize,
    stride: usize,
}

impl Window {
    /// Index of position `pos` (`0..=kd`) of band row `i`.
    #[inline(always)]
    fn at(&self, i: usize, pos: usize) -> usize {
        (i % self.rows) * self.stride + pos
    }

    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    fn get(&self, i: usize, pos: usize) -> f64 {
        self.data.get(self.at(i, pos))
    }

    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    fn set(&self, i: usize, pos: usize, value: f64) {
        self.data.set(self.at(i, pos), value)
    }

    /// Position `pos` of the row that starts at `base = self.at(i, 0)`, without the range
    /// check of [`Shared::get`] (the dot products' inner loops: the checks and their 64-bit
    /// compares outnumbered the FMAs about 15 to 1 in the GPU factor kernel).
    ///
    /// # Safety
    /// `pos <= kd` (so `pos < stride`) and the window holds `rows · stride` values (checked
    /// against [`band_factor_team_window_len`] by the callers).
    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    unsafe fn get_at(&self, base: usize, pos: usize) -> f64 {
        // SAFETY: base = slot·stride with slot < rows and pos < stride (caller).
        unsafe { self.data.get_unchecked(base + pos) }
    }
}

/// [`pivot_row`] from partial sums (`base`: `win.at(i, 0)`): the 8 accumulators of
/// [`dot8_at`] over all but the last two entries of the row, which the lane of row `i` left in
/// `part` in phase `i - 2` (from its dot product's pass over the row, [`dot4_squares8_at`];
/// zeros when the row has at most 2 entries, `part` then not read); adds the last two entries
/// (the
/// columns `i - 2`, `i - 1`) to their accumulators and combines them as [`dot8_at`] does, so
/// the pivot is bitwise that of `pivot_row` (every accumulator receives its entries in the
/// same order), with 2 FMAs instead of `kd` on the phase's critical path.
#[inline(always)]
fn pivot_finish(win: &Window, i: usize, base: usize, kd: usize, part: Shared) -> f64 {
    let p0 = i.saturating_sub(kd) + kd - i;
    let len = kd - p0;
    let mut acc = [0.0f64; 8];
    if len > 2 {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = part.get(k);
        }
    }
    let mut t = len.saturating_sub(2);
    while t < len {
        // SAFETY: p0 + t < kd; the callers checked the window length.
        let x = unsafe { win.get_at(base, p0 + t) };
        // acc[t % 8] with constant indices (registers, not local memory).
        for (k, acc_k) in acc.iter_mut().enumerate() {
            if t % 8 == k {
                *acc_k = fma(x, x, *acc_k);
            }
        }
        t += 1;
    }
    let dot = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    let pivot = win.data.get(base + kd) - dot;
    match pivot_status(pivot) {
        Some(status) => status_flag(status),
        None => {
            win.data.set(base + kd, sqrt(pivot));
            0.0
        }
    }
}

/// `slot % rows` for `slot < rows + lanes` (a subtraction or a few: no 64-bit remainder).
#[inline(always)]
fn wrap_slot(mut slot: usize, rows: usize) -> usize {
    while slot >= rows {
        slot -= rows;
    }
    slot
}

/// Finishes the pivot of band row `i` in the window (all its off-diagonal entries final):
/// `L[i][i] = sqrt(M[i][i] - Σ L[i][k]²)` in the order of `band_factor`; returns the flag
/// (0 or a [`Status`] code).
#[inline(always)]
fn pivot_row(win: &Window, i: usize, kd: usize) -> f64 {
    let p0 = i.saturating_sub(kd) + kd - i;
    let base = win.at(i, 0);
    // SAFETY: p0 + t < kd for t < kd - p0; the callers checked the window length.
    let row = |t: usize| unsafe { win.get_at(base, p0 + t) };
    let pivot = win.get(i, kd) - dot8_at(kd - p0, row, row);
    match pivot_status(pivot) {
        Some(status) => status_flag(status),
        None => {
            win.set(i, kd, sqrt(pivot));
            0.0
        }
    }
}

/// Banded Cholesky factorization `M = L·Lᵀ` of one band matrix by one team: the same
/// operations in the same order per element as [`super::banded::band_factor`], hence
/// bitwise the same `L` and the same [`Status`].
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, band storage of the lower triangle of `M` (may be global
///   memory); on exit `L` in the same layout, the slots outside the matrix zeroed. On failure
///   `ab` is partly overwritten.
/// - `window`: scratch of at least [`band_factor_team_window_len`]`(kd)` values (shared
///   memory): a ring of the active band rows.
///
/// # Algorithm (phases)
/// Column by column (LAPACK `dpbtf2` order). Phase `j` (after `L[j][j]` is known): lane `l`
/// computes `L[i][j] = (M[i][j] - Σ_k L[i][k]·L[j][k]) / L[j][j]` for the rows
/// `i = j + 1 + l + t·lanes <= j + kd`, each a dot product over its own window row (`L[i][j]`
/// is `(…) · (1 / L[j][j])`, as in `band_factor`); the lane of row `j + 1` then finishes that
/// row's pivot from the partial sum of squares that the lane of row `j + 1` left in phase
/// `j - 1` (all but the last two terms, accumulated in `dot8_at`'s order during its dot
/// product over the same entries: the same FMAs in the same order, no extra loads) and writes
/// the failure flag. In the same phase, row `j` (final) is written
/// back to `ab`, and every `LOAD_AHEAD` columns the next `LOAD_AHEAD` rows are loaded into the
/// ring. `n + 2` phases; the work of one phase is `kd` dot products of length `<= kd` (one
/// per lane for `lanes >= kd`, e.g. 64 lanes), each with its row's sum of squares.
///
/// # Returns
/// As `band_factor`: [`Status::Ok`], [`Status::NonFinite`] / [`Status::NotPositiveDefinite`]
/// for the first non-finite / non-positive pivot, [`Status::BadShape`] if
/// `ab.len() != n * (kd + 1)` or `window` is too short.
pub fn band_factor_team<T: Team>(
    team: &T,
    ab: Shared,
    n: usize,
    kd: usize,
    window: Shared,
) -> Status {
    factor_impl(team, ab, n, kd, window, None)
}

/// [`band_factor_team`] fused with the forward substitution `L z = rhs` (no extra phase):
/// in phase `j` the lane of row `i` also applies `u_i -= L[i][j]·z_j` with
/// `z_j = u_j · (1 / L[j][j])` (column-oriented, so the sums run in a different order than in
/// [`super::banded::band_solve`], and the reciprocal rounds once more: equal to about
/// `n·eps·κ`).
///
/// # Parameters
/// As [`band_factor_team`], plus `rhs`: shape `(n,)`, on entry `y = AᵀWp`, on exit `z` with
/// `L z = y` (when the factorization succeeds). Follow with [`band_back_solve_team`] for
/// `xflux = M⁻¹ y` (Bolton & Schlegel 2010 eq 4).
///
/// # Returns
/// As [`band_factor_team`]; [`Status::BadShape`] also if `rhs.len() != n`.
pub fn band_factor_forward_team<T: Team>(
    team: &T,
    ab: Shared,
    n: usize,
    kd: usize,
    window: Shared,
    rhs: Shared,
) -> Status {
    if rhs.len() != n {
        return Status::BadShape;
    }
    factor_impl(team, ab, n, kd, window, Some(rhs))
}

/// The factorization, optionally with the forward substitution.
fn factor_impl<T: Team>(
    team: &T,
    ab: Shared,
    n: usize,
    kd: usize,
    window: Shared,
    rhs: Option<Shared>,
) -> Status {
    if !band_shape_ok(&ab, n, kd) || window.len() < band_factor_team_window_len(kd) {
        return Status::BadShape;
    }
    if n == 0 {
        return Status::Ok;
    }
    let w = kd + 1;
    let lanes = team.lanes();
    let rows = window_rows(kd);
    let win = Window {
        data: window,
        rows,
        stride: window_stride(kd),
    };
    let flag = window.sub(rows * win.stride, 2);
    // Partial pivot sums of row r in buffer r % 2 (written in phase r - 2 by the lane of row
    // r, read in phase r - 1).
    let partial = window.sub(rows * win.stride + 2, 2 * 8);
    let part = |r: usize| partial.sub((r % 2) * 8, 8);
    // Loads band rows [lo, hi) into the ring (lane-strided); slots outside M become 0.
    // Row by row, lanes over the positions (no 64-bit division per element).
    let load = |lane: usize, lo: usize, hi: usize| {
        let hi = hi.min(n);
        let mut i = lo;
        let mut slot = lo % rows;
        while i < hi {
            let base = slot * win.stride;
            let mut pos = lane;
            while pos < w {
                let v = if pos + i < kd {
                    0.0
                } else {
                    ab.get(i * w + pos)
                };
                win.data.set(base + pos, v);
                pos += lanes;
            }
            i += 1;
            slot = wrap_slot(slot + 1, rows);
        }
    };
    team.each(|lane| {
        load(lane, 0, w);
        if lane == 0 {
            flag.set(0, 0.0);
            flag.set(1, 0.0);
        }
    });
    // Column "-1": the first pivot, flag slot 1.
    team.each(|lane| {
        if lane == 0 {
            flag.set(1, pivot_row(&win, 0, kd));
        }
    });
    let mut last = 1;
    // z_{j-1} = u_{j-1} / L[j-1][j-1], computed by every lane in phase j - 1 and stored by
    // lane 0 in phase j from its register (lane 0 alone sets it: each GPU thread has its own
    // copy, the serial emulation shares one).
    let mut zprev = 0.0;
    for j in 0..n {
        // Read after a barrier, the same value on every lane: uniform exit.
        if flag.get(last) != 0.0 {
            break;
        }
        let cur = j % 2;
        // Ring slots by additions from row j's (the same on every lane), not by a 64-bit
        // remainder per row access: it led every lane's dot product.
        let slot_j = j % rows;
        let base_j = slot_j * win.stride;
        team.each(|lane| {
            let inv = 1.0 / win.data.get(base_j + kd);
            // z_j = u_j / L[j][j] (the same value on every lane; stored in phase j + 1).
            let zj = rhs.map(|r| r.get(j) * inv);
            let i_end = n.min(j + w);
            let mut i = j + 1 + lane;
            let mut slot_i = wrap_slot(slot_j + 1 + lane, rows);
            while i < i_end {
                let i0 = i.saturating_sub(kd);
                let pj = j + kd - i;
                let (xi, yj) = (i0 + kd - i, i0 + kd - j);
                let base_i = slot_i * win.stride;
                // SAFETY: xi + t < pj <= kd and yj + t < kd for t < j - i0; the window length
                // was checked on entry.
                let (dot, squares) = dot4_squares8_at(
                    j - i0,
                    |t| unsafe { win.get_at(base_i, xi + t) },
                    |t| unsafe { win.get_at(base_j, yj + t) },
                );
                let s = win.data.get(base_i + pj) - dot;
                // Row j + 2's pivot, all but its last two terms (the same entries as this
                // dot product's): read in the next phase.
                if i == j + 2 {
                    let p = part(i);
                    for (k, v) in squares.iter().enumerate() {
                        p.set(k, *v);
                    }
                }
                let lij = s * inv;
                win.data.set(base_i + pj, lij);
                if let (Some(r), Some(zj)) = (rhs, zj) {
                    r.set(i, fma(-lij, zj, r.get(i)));
                }
                if i == j + 1 {
                    flag.set(cur, pivot_finish(&win, i, base_i, kd, part(i)));
                }
                i += lanes;
                slot_i = wrap_slot(slot_i + lanes, rows);
            }
            if lane == 0 {
                if j + 1 >= n {
                    flag.set(cur, 0.0);
                }
                // z_{j-1} (read by everyone in phase j - 1, by no one now): from the
                // register, not from memory (a global-memory load and a division on the lane
                // that also finishes the next pivot, every phase).
                if let (Some(r), true) = (rhs, j > 0) {
                    r.set(j - 1, zprev);
                }
                if let Some(z) = zj {
                    zprev = z;
                }
            }
            // Row j is final: write it back (nobody reads ab in this phase but the loads).
            let mut pos = lane;
            while pos < w {
                ab.set(j * w + pos, win.data.get(base_j + pos));
                pos += lanes;
            }
            // Rows j+w .. j+w+LOAD_AHEAD (first read in phases j+1 .. j+LOAD_AHEAD) go to
            // the slots of rows j-LOAD_AHEAD .. j-1: written back already, read by no one in
            // this phase (the ring has at least kd + 1 + LOAD_AHEAD rows).
            if j.is_multiple_of(LOAD_AHEAD) {
                load(lane, j + w, j + w + LOAD_AHEAD);
            }
        });
        last = cur;
    }
    let status = flag_status(flag.get(last));
    if status == Status::Ok {
        if let Some(r) = rhs {
            team.each(|lane| {
                if lane == 0 {
                    r.set(n - 1, r.get(n - 1) * (1.0 / ab.get((n - 1) * w + kd)));
                }
            });
        }
    }
    status
}

/// Solves `M x = rhs` by one team given the band Cholesky factor of `M`: forward
/// substitution `L z = rhs` (column-oriented, the order of [`band_factor_forward_team`]),
/// then [`band_back_solve_team`].
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, `L` as left by [`band_factor_team`] (may be global memory).
/// - `window`: scratch of [`band_factor_team_window_len`]`(kd)` values (shared memory).
/// - `rhs`: shape `(n,)`; on entry `y = AᵀWp`, on exit `xflux = M⁻¹ y` (Bolton & Schlegel
///   2010 eq 4).
///
/// # Equation
/// Forward, phase `i`: `z_i = u_i · (1 / L[i][i])`, and lanes over `k = i+1 ..= i+kd` apply
/// `u_k -= L[k][i]·z_i` (`u = rhs` on entry): bitwise [`band_factor_forward_team`]'s `z`.
/// Same result as [`super::banded::band_solve`] up to the order of the forward sums and the
/// reciprocals (about `n·eps·κ`).
/// `2n + 3` phases.
///
/// # Returns
/// [`Status::Ok`], or [`Status::BadShape`] if a length disagrees with `n`, `kd` (nothing
/// written).
///
/// Reference only (tests; feature `reference`): the kernels use
/// [`band_factor_forward_team`] and [`band_back_solve_team`].
#[cfg(any(test, feature = "reference"))]
pub fn band_solve_team<T: Team>(
    team: &T,
    ab: Shared,
    n: usize,
    kd: usize,
    window: Shared,
    rhs: Shared,
) -> Status {
    if !band_shape_ok(&ab, n, kd)
        || rhs.len() != n
        || window.len() < band_factor_team_window_len(kd)
    {
        return Status::BadShape;
    }
    if n == 0 {
        return Status::Ok;
    }
    let w = kd + 1;
    let lanes = team.lanes();
    for i in 0..n {
        team.each(|lane| {
            let zi = rhs.get(i) * (1.0 / ab.get(i * w + kd));
            let mut k = i + 1 + lane;
            while k < n.min(i + w) {
                rhs.set(k, fma(-ab.get(k * w + i + kd - k), zi, rhs.get(k)));
                k += lanes;
            }
            // z_{i-1} (read by everyone in phase i - 1, by no one now).
            if lane == 0 && i > 0 {
                rhs.set(i - 1, rhs.get(i - 1) * (1.0 / ab.get((i - 1) * w + kd)));
            }
        });
    }
    team.each(|lane| {
        if lane == 0 {
            rhs.set(n - 1, rhs.get(n - 1) * (1.0 / ab.get((n - 1) * w + kd)));
        }
    });
    band_back_solve_team(team, ab, n, kd, window, rhs)
}

/// Back substitution `Lᵀ x = z` by one team, in the order of the second pass of
/// [`super::banded::band_solve`], except that `x_i = z_i · (1 / L[i][i])` (one rounding more
/// per unknown than the serial division, far below `n·eps·κ`).
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, `L` in band storage (may be global memory).
/// - `window`: scratch of [`band_factor_team_window_len`]`(kd)` values (shared memory): band
///   rows are staged there `LOAD_AHEAD` at a time, three chunks in flight.
/// - `rhs`: shape `(n,)`; on entry `z`, on exit `x`.
///
/// # Equation
/// For `i = n-1, ..., 0` (one phase each): `x_i = z_i · r_i` (every lane computes it),
/// lanes over `k = i-kd .. i` apply `z_k -= L[i][k]·x_i`; `x_i` is stored in phase `i - 1`
/// (from lane 0's register). The reciprocal `r_i = 1 / L[i][i]` is computed by lane 0 one
/// phase ahead into a shared slot, so a phase's critical path is a load, a multiplication and
/// an FMA, without a division. `n + 2` phases.
///
/// # Returns
/// [`Status::Ok`], or [`Status::BadShape`] if a length disagrees with `n`, `kd`.
pub fn band_back_solve_team<T: Team>(
    team: &T,
    ab: Shared,
    n: usize,
    kd: usize,
    window: Shared,
    rhs: Shared,
) -> Status {
    if !band_shape_ok(&ab, n, kd)
        || rhs.len() != n
        || window.len() < band_factor_team_window_len(kd)
    {
        return Status::BadShape;
    }
    if n == 0 {
        return Status::Ok;
    }
    let w = kd + 1;
    let lanes = team.lanes();
    let stride = window_stride(kd);
    // Staged row i: chunk (n-1-i) / LOAD_AHEAD in buffer chunk % 3.
    let staged = |i: usize, pos: usize| {
        let back = n - 1 - i;
        let row = (back / LOAD_AHEAD % 3) * LOAD_AHEAD + back % LOAD_AHEAD;
        row * stride + pos
    };
    // Loads chunk c (rows n-(c+1)A .. n-cA, clamped at 0), lane-strided.
    // Row by row, lanes over the positions (no 64-bit division per element).
    let load = |lane: usize, c: usize| {
        let hi = n.saturating_sub(c * LOAD_AHEAD);
        let mut i = n.saturating_sub((c + 1) * LOAD_AHEAD);
        while i < hi {
            let mut pos = lane;
            while pos < w {
                window.set(staged(i, pos), ab.get(i * w + pos));
                pos += lanes;
            }
            i += 1;
        }
    };
    // r_i = 1 / L[i][i] in slot i % 2 (the flag slots of the factorization).
    let rinv = window.sub(window_rows(kd) * stride, 2);
    team.each(|lane| {
        load(lane, 0);
        if lane == 0 {
            rinv.set((n - 1) % 2, 1.0 / ab.get((n - 1) * w + kd));
        }
    });
    // x_{i+1}, computed by every lane in phase i + 1 and stored by lane 0 in phase i from its
    // register (see `zprev` in the factorization).
    let mut xprev = 0.0;
    for i in (0..n).rev() {
        team.each(|lane| {
            let back = n - 1 - i;
            if back.is_multiple_of(LOAD_AHEAD) {
                // Chunk c + 1 into the buffer of chunk c - 2 (finished).
                load(lane, back / LOAD_AHEAD + 1);
            }
            let x = rhs.get(i) * rinv.get(i % 2);
            let j0 = i.saturating_sub(kd);
            let mut k = j0 + lane;
            while k < i {
                rhs.set(k, fma(-x, window.get(staged(i, k + kd - i)), rhs.get(k)));
                k += lanes;
            }
            if lane == 0 {
                if i + 1 < n {
                    rhs.set(i + 1, xprev);
                }
                xprev = x;
                // Row i - 1 is staged: its chunk was loaded at the start of this chunk or
                // earlier.
                if i > 0 {
                    rinv.set((i - 1) % 2, 1.0 / window.get(staged(i - 1, kd)));
                }
            }
        });
    }
    team.each(|lane| {
        if lane == 0 {
            rhs.set(0, xprev);
        }
    });
    Status::Ok
}

/// Back substitution `Lᵀ x = z` by one team, 8 unknowns per phase: the result of
/// [`band_back_solve_team`] up to the order of the sums (about `n·eps·κ`), in `ceil(n / 8) + 1`
/// phases instead of `n + 2` (the GPU's `factor_solve_blocked`).
///
/// # Parameters
/// As [`band_back_solve_team`] (the same `window`: three staged chunks of 8 band rows).
///
/// # Equation
/// Blocks of 8 rows from the bottom, block `c` = rows `lo_c .. hi_c` with
/// `hi_c = n − 8c`, `lo_c = max(hi_c − 8, 0)` (the staged chunks of [`band_back_solve_team`]).
/// Phase `c` (after a phase staging chunk 0):
/// - lane 0 applies block `c − 1`'s unknowns to the rows of block `c`
///   (`z_k −= Σ_{i ∈ c−1} L[i][k]·x_i`), then solves the block's triangle, `i = hi_c − 1` down
///   to `lo_c`: `x_i = z_i · (1 / L[i][i])`, `z_k −= L[i][k]·x_i` for `lo_c <= k < i`;
/// - the other lanes (lane 0 too in a team of one) apply block `c − 1`'s unknowns to the rows
///   `k < lo_c` it reaches (`k >= lo_{c−1} − kd`), one row per lane (at most 8 FMAs);
/// - every lane stages chunk `c + 1` (the buffer of chunk `c − 2`, finished), and the first 8
///   lanes the reciprocals of its diagonal (one buffer of two, as the chunks: the divisions
///   stay off lane 0's path).
///
/// Within a phase lane 0 writes the rows of block `c` and the others the rows below it; both
/// read the `x` of block `c − 1`, final since the phase before.
///
/// # Returns
/// [`Status::Ok`], or [`Status::BadShape`] if a length disagrees with `n`, `kd`.
pub fn band_back_solve_blocked_team<T: Team>(
    team: &T,
    ab: Shared,
    n: usize,
    kd: usize,
    window: Shared,
    rhs: Shared,
) -> Status {
    if !band_shape_ok(&ab, n, kd)
        || rhs.len() != n
        || window.len() < band_factor_team_window_len(kd)
    {
        return Status::BadShape;
    }
    if n == 0 {
        return Status::Ok;
    }
    let w = kd + 1;
    let lanes = team.lanes();
    let stride = window_stride(kd);
    // As band_back_solve_team: staged row i: chunk (n-1-i) / 8 in buffer chunk % 3.
    let staged = |i: usize, pos: usize| {
        let back = n - 1 - i;
        let row = (back / LOAD_AHEAD % 3) * LOAD_AHEAD + back % LOAD_AHEAD;
        row * stride + pos
    };
    // L[i][k] (i - kd <= k <= i) from the staged row i.
    let lik = |i: usize, k: usize| window.get(staged(i, k + kd - i));
    let load = |lane: usize, c: usize| {
        let hi = n.saturating_sub(c * LOAD_AHEAD);
        let mut i = n.saturating_sub((c + 1) * LOAD_AHEAD);
        while i < hi {
            let mut pos = lane;
            while pos < w {
                window.set(staged(i, pos), ab.get(i * w + pos));
                pos += lanes;
            }
            i += 1;
        }
    };
    let nchunk = n.div_ceil(LOAD_AHEAD);
    // 1 / L[i][i] of the rows of block c in buffer c % 2 (the factorization's partial-sum
    // slots), computed one phase ahead from `ab` by the first lanes: 8 divisions off lane 0's
    // path.
    let rinv = window.sub(window_rows(kd) * stride + 2, 2 * LOAD_AHEAD);
    let reciprocals = |lane: usize, c: usize| {
        let hi = n - c * LOAD_AHEAD;
        let mut t = lane;
        while t < LOAD_AHEAD.min(hi) {
            let i = hi - 1 - t;
            rinv.set((c % 2) * LOAD_AHEAD + t, 1.0 / ab.get(i * w + kd));
            t += lanes;
        }
    };
    team.each(|lane| {
        load(lane, 0);
        reciprocals(lane, 0);
    });
    for c in 0..nchunk {
        let hi = n - c * LOAD_AHEAD;
        let lo = hi.saturating_sub(LOAD_AHEAD);
        // Block c - 1 (empty for c = 0): rows lo .. hi of the block above.
        let (plo, phi) = if c == 0 {
            (hi, hi)
        } else {
            (hi, hi + LOAD_AHEAD)
        };
        team.each(|lane| {
            if c + 1 < nchunk {
                load(lane, c + 1);
                reciprocals(lane, c + 1);
            }
            if lane == 0 {
                // Block c - 1's unknowns into the rows of block c (row by row: 8 independent
                // sums of at most 8 terms).
                for k in lo..hi {
                    let mut z = rhs.get(k);
                    for i in plo..phi.min(k + w) {
                        z = fma(-lik(i, k), rhs.get(i), z);
                    }
                    rhs.set(k, z);
                }
                // The triangle of block c.
                for i in (lo..hi).rev() {
                    let x = rhs.get(i) * rinv.get((c % 2) * LOAD_AHEAD + (hi - 1 - i));
                    rhs.set(i, x);
                    for k in lo.max(i.saturating_sub(kd))..i {
                        rhs.set(k, fma(-lik(i, k), x, rhs.get(k)));
                    }
                }
            }
            // Rows below block c reached by block c - 1: k in [lo_{c-1} - kd, lo), by the
            // lanes other than 0 (by lane 0 too in a team of one).
            let (first, step) = if lanes > 1 { (1, lanes - 1) } else { (0, 1) };
            if c > 0 && lane >= first {
                let mut k = plo.saturating_sub(kd) + lane - first;
                while k < lo {
                    let mut z = rhs.get(k);
                    for i in plo..phi.min(k + w) {
                        z = fma(-lik(i, k), rhs.get(i), z);
                    }
                    rhs.set(k, z);
                    k += step;
                }
            }
        });
    }
    Status::Ok
}

/// [`unroll!`] over `0..ROWS`.
macro_rules! unroll_rows {
    ($t:ident => $body:block) => {
        unroll!($t in [0, 1, 2, 3, 4, 5, 6, 7] => $body)
    };
}
const _: () = assert!(ROWS == 8, "unroll_rows! expands ROWS = 8 bodies");

/// Ring depth (rows of `Y_b`) of [`covariance_block_team`]: the `kd` rows a new row reads
/// plus the `ROWS` rows being written (the `ROWS` rows added to `C_bb` in the same phase are
/// among the `kd` read when `kd >= ROWS`; at least `2·ROWS`). Also the positions of one
/// staged group of `L` rows (`kd + ROWS <= depth`).
fn cov_ring_depth(kd: usize) -> usize {
    kd.max(ROWS).saturating_add(ROWS)
}

/// Most groups of `ROWS` rows of `Y_b` added to `C_bb` by one [`gram_tile`] update (at most
/// `kd / ROWS`, the rows still held by the ring): each update reads and writes its tile of the
/// global-memory `out` once, so batching groups divides that traffic, which bounded the GPU
/// kernel (H100, Nsight Compute: long-scoreboard stalls first, 13 of 32 bytes per store
/// sector used). The sums are the same FMAs in the same order: the results do not change.
const GRAM_GROUPS: usize = 8;

/// Side of the square tiles of `C_bb` that one lane accumulates per phase in
/// [`covariance_block_team`] (`TILE²` registers; 120 upper tiles for `bs = 74`).
const TILE: usize = 5;

/// Length of the `ring` view that [`covariance_block_team`] needs:
/// `(max(kd, 8) + 8) * (n / nblock + 16) + 1`: the ring of `Y_b` rows (`bs` values each), one
/// value of alignment slack and two staged groups of 8 rows of `L` (5,941 values = 47.5 KB for
/// `kd = 58`, `bs = 74`); 0 for invalid shapes.
pub fn covariance_block_team_ring_len(n: usize, kd: usize, nblock: usize) -> usize {
    if nblock == 0 || !n.is_multiple_of(nblock) {
        return 0;
    }
    cov_ring_depth(kd)
        .saturating_mul((n / nblock).saturating_add(2 * ROWS))
        .saturating_add(1)
}

/// Index in `ring` of the staged `L` groups: the first index `>= depth · bs` whose address is
/// a multiple of 16 bytes (the pairs of [`Shared::get2_unchecked`]), i.e. after the ring of
/// `Y_b` rows and at most one value of slack.
fn cov_stage_start(ring: &Shared, depth: usize, bs: usize) -> usize {
    let first = depth * bs;
    first + (ring.address() / 8 + first) % 2
}

/// The first failing diagonal entry of `L` (`None` when all are finite and positive): every
/// lane reads the whole diagonal, 8 independent loads at a time.
#[inline(always)]
fn diagonal_status(ab: &Shared, n: usize, kd: usize) -> Option<Status> {
    let w = kd + 1;
    let mut m = 0;
    while m < n {
        let mut ok = true;
        unroll_rows!(t => {
            if m + t < n {
                let d = ab.get((m + t) * w + kd);
                ok &= d > 0.0 && d <= f64::MAX;
            }
        });
        if !ok {
            // Rare: the first failure in order, as the serial routine reports it.
            return (m..n).find_map(|i| pivot_status(ab.get(i * w + kd)));
        }
        m += ROWS;
    }
    None
}

/// [`diagonal_status`] by a team: lane `l` checks the entries `l, l + lanes, ...` and leaves
/// the index of its first failure (or `n`) in `first[l]`; after the barrier every lane takes
/// the smallest, which is the first failure in order.
fn diagonal_status_team<T: Team>(
    team: &T,
    ab: &Shared,
    n: usize,
    kd: usize,
    first: Shared,
) -> Option<Status> {
    let (w, lanes) = (kd + 1, team.lanes());
    team.each(|lane| {
        let mut i = lane;
        let mut found = n;
        while i < n {
            let d = ab.get(i * w + kd);
            if !(d > 0.0 && d <= f64::MAX) {
                found = i;
                break;
            }
            i += lanes;
        }
        first.set(lane, found as f64);
    });
    let mut min = n;
    for l in 0..lanes {
        min = min.min(first.get(l) as usize);
    }
    (min < n)
        .then(|| pivot_status(ab.get(min * w + kd)))
        .flatten()
}

/// One diagonal covariance block `C_bb` of `C = M⁻¹` from the band Cholesky factor of `M`,
/// by one team, for the interleaved block `b = block` (unknowns `q = iwave * nblock + b`):
/// the block that [`super::banded::band_covariance_block_range`] writes for
/// `first_block = block`, equal to it up to the order of the sums (about `n·eps·κ`).
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, `L` in band storage (may be global memory).
/// - `nblock`: number of blocks (`nspec`); `n` a multiple of it, `bs = n / nblock` (`nwave`).
/// - `block`: the block `b < nblock`.
/// - `out`: shape `(bs, bs)` (at least `bs²` values; may be global memory: each element is
///   read and written by one lane per phase), row-major output
///   `out[r * bs + c] = C[r * nblock + b][c * nblock + b]` (symmetric). Used as the
///   accumulator (tile-major, see below): on failure it holds partial sums.
/// - `ring`: scratch of [`covariance_block_team_ring_len`]`(n, kd, nblock)` values (shared
///   memory; on the GPU 16-byte aligned, as dynamic shared memory is): the last
///   `depth = max(kd, 8) + 8` rows of `Y_b` (row `m` in slot `m % depth`, `bs` values each),
///   then, from the first 16-byte aligned index (at most one value of slack), two buffers of
///   `depth · 8` values holding the rows `m0 .. m0 + 8` of `L` of one group, position-major
///   and zero-padded: `stage[j · 8 + t] = L[m0 + t][m0 - kd + j]` (`0 <= j < kd + 8`, zero
///   outside the band and the matrix) except on the diagonal `j = kd + t`, which holds
///   `1 / L[m0 + t][m0 + t]` (`1` for rows `>= n`).
///
/// # Equation
/// `C_bb = Y_bᵀ Y_b` with `Y_b = L⁻¹ E_b` (Bolton & Schlegel 2010 eq 10 restricted to one
/// fiber); column `c` of `Y_b` is zero above row `start = b + c·nblock`, where it starts with
/// `1 / L[m][m]`. Rows are produced 8 per phase (group `g`: rows `m0 = b + 8g ..`): the lane
/// of column `c` forms `y_m[c] = (e_m[c] - Σ_{k=m-kd}^{m-1} L[m][k]·y_k[c]) · (1 / L[m][m])`
/// for the 8 rows, reading each ring value once for the 8 rows (one accumulator per row, `L`
/// from the staged group in 16-byte pairs: broadcast shared-memory reads, the same rows `k`
/// for every started column, no branch), then the 8×8 triangle in registers; columns that
/// start after the group only store zeros. In the same phase the next group of `L` is staged
/// (all lanes, from `ab`, 8 consecutive band values per 8 lanes) and, every `min(kd / 8, 8)`
/// groups (at least 1; the rows stay in the ring for `kd` rows) and after the last, the lanes
/// of the `TILE × TILE` tiles of the upper triangle of `C_bb` add the rows computed since their
/// last update: `C[r][c] += Σ_t y_t[r]·y_t[c]` (tiles whose columns start after those rows are
/// skipped); tile `i` runs on lane `(i + bs) % lanes`, so that with `lanes >= bs + tiles`
/// no lane has both kinds of task. The tiles' sums live in `out` tile-major between updates
/// (entry `(i, j)` of tile `tile` at `(i·5 + j)·ntile + tile`: the lanes of a warp touch
/// consecutive values) when `25·ntile <= min(bs², depth·bs)` (always for `bs >= 5` and
/// `kd >= 32`), else row-major in place. At the end the tile-major sums go through the ring to
/// their row-major places, lower triangle included (2 phases); row-major ones are mirrored
/// (1 phase). `ceil((n - b) / 8) + 3` or `+ 4` phases.
///
/// The differences from the serial routine: the order of the sums, and `y` multiplied by the
/// reciprocal of the diagonal instead of divided by it (one rounding more per row, far below
/// `n·eps·κ`).
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] on a shape mismatch; [`Status::NotPositiveDefinite`]
/// / [`Status::NonFinite`] if a diagonal entry of `L` is `<= 0` / not finite (checked first,
/// nothing written), or [`Status::NonFinite`] if a diagonal entry of `C_bb` is not finite
/// (every entry then is finite too, `|C[r][c]| <= sqrt(C[r][r]·C[c][c])`).
#[allow(clippy::too_many_arguments)]
pub fn covariance_block_team<T: Team>(
    team: &T,
    ab: Shared,
    n: usize,
    kd: usize,
    nblock: usize,
    block: usize,
    out: Shared,
    ring: Shared,
) -> Status {
    covariance_impl::<T, false>(team, ab, n, kd, nblock, block, out, ring)
}

/// [`covariance_block_team`] with the phase loop's shared-memory work ([`y_rows_lds`],
/// [`gram_tile_lds`]) on 32-bit [`Lds`] cursors instead of the generic 64-bit pointers of
/// [`Shared`]: `ld.shared`/`st.shared` on the GPU instead of generic loads and stores (which
/// ptxas waits for as for global memory), 32-bit instead of 64-bit index arithmetic, the ring
/// wrap hoisted out of the inner loops (each loop split at the wrap), the geometry passed by
/// value instead of through a local-memory struct. The same FMAs in the same order: bitwise
/// the result of [`covariance_block_team`] (device/tests/banded_team.rs), for the GPU's
/// `covariance_team_lds`.
///
/// # Parameters
/// As [`covariance_block_team`]; shapes whose ring or output indices do not fit in 31 bits
/// are [`Status::BadShape`].
///
/// # Safety
/// On the GPU, `ring` must lie in the block's shared memory (e.g. dynamic shared memory).
#[allow(clippy::too_many_arguments)]
pub unsafe fn covariance_block_team_lds<T: Team>(
    team: &T,
    ab: Shared,
    n: usize,
    kd: usize,
    nblock: usize,
    block: usize,
    out: Shared,
    ring: Shared,
) -> Status {
    const LIMIT: usize = i32::MAX as usize / 8;
    if ring.len() > LIMIT || out.len() > LIMIT || n > LIMIT || kd > LIMIT {
        return Status::BadShape;
    }
    covariance_impl::<T, true>(team, ab, n, kd, nblock, block, out, ring)
}

/// The body of [`covariance_block_team`] (`LDS` false) and [`covariance_block_team_lds`]
/// (`LDS` true; its caller checked the 31-bit index ranges and that `ring` is shared memory).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn covariance_impl<T: Team, const LDS: bool>(
    team: &T,
    ab: Shared,
    n: usize,
    kd: usize,
    nblock: usize,
    block: usize,
    out: Shared,
    ring: Shared,
) -> Status {
    if nblock == 0 || !n.is_multiple_of(nblock) || !band_shape_ok(&ab, n, kd) || block >= nblock {
        return Status::BadShape;
    }
    let bs = n / nblock;
    if out.len() < bs * bs || ring.len() < covariance_block_team_ring_len(n, kd, nblock) {
        return Status::BadShape;
    }
    // The diagonal check: split over the lanes when the ring rows (first written in the
    // phase after next) can hold one flag per lane (each lane read all of it from global
    // memory before: a fifth of the GPU kernel's time), else every lane reads it all. Either
    // way a uniform early return.
    let lanes = team.lanes();
    let checked = if cov_ring_depth(kd) * bs >= lanes {
        diagonal_status_team(team, &ab, n, kd, ring.sub(0, lanes))
    } else {
        diagonal_status(&ab, n, kd)
    };
    if let Some(status) = checked {
        return status;
    }
    if n == 0 {
        return Status::Ok;
    }
    let depth = cov_ring_depth(kd);
    let stage_len = depth * ROWS;
    let stage0 = cov_stage_start(&ring, depth, bs);
    let stage = |g: usize| ring.sub(stage0 + (g % 2) * stage_len, stage_len);
    let ngroup = (n - block).div_ceil(ROWS);
    let ntr = bs.div_ceil(TILE);
    let ntile = ntr * (ntr + 1) / 2;
    // Tile-major sums when they fit in `out` and, for the final reordering, in the ring of
    // `Y_b` rows (always for the production shapes: 3,000 values for bs = 74).
    let store = if TILE * TILE * ntile <= (bs * bs).min(depth * bs) {
        TileStore::TileMajor { ntile }
    } else {
        TileStore::RowMajor
    };
    let geo = CovGeometry {
        n,
        kd,
        nblock,
        block,
        bs,
        depth,
    };
    team.each(|lane| {
        let mut e = lane;
        while e < bs * bs {
            out.set(e, 0.0);
            e += lanes;
        }
        stage_l_rows(&geo, &ab, stage(0), block, lane, lanes);
    });
    // The 32-bit cursor and geometry of the LDS variant (indices below 2^31: checked by
    // covariance_block_team_lds).
    let lds = LDS.then(|| {
        // SAFETY: `ring` is in shared memory on the GPU (covariance_block_team_lds's contract).
        let ring32 = unsafe { Lds::new(ring) };
        let geo32 = Geo32 {
            n: n as u32,
            kd: kd as u32,
            nblock: nblock as u32,
            block: block as u32,
            bs: bs as u32,
            depth: depth as u32,
        };
        (ring32, geo32)
    });
    // Groups of Y_b rows per C_bb update: the rows stay in the ring for `kd` rows, and each
    // update reads and writes the tiles of `out` (global memory) once for all of them.
    let gram_groups = (kd / ROWS).clamp(1, GRAM_GROUPS);
    let mut gram_from = block;
    // The LDS variant's ring slots of rows `block + g·8` and `gram_from`, and the groups since
    // the last update, advanced by additions (the remainders were 64-bit subroutine calls per
    // phase and lane).
    let (mut slot_m0, mut slot_from, mut since) = (block % depth, block % depth, 0);
    for g in 0..=ngroup {
        // Rows `gram_from .. gram_to` (all computed in earlier phases) go into C_bb now.
        let gram_to = block + g * ROWS;
        let gram_now = if LDS {
            g > 0 && (since == gram_groups || g == ngroup)
        } else {
            g > 0 && (g % gram_groups == 0 || g == ngroup)
        };
        team.each(|lane| {
            if g < ngroup {
                let m0 = block + g * ROWS;
                if let Some((ring32, geo32)) = lds {
                    let stage32 = ring32.offset((stage0 + (g % 2) * stage_len) as u32);
                    let slot0 = slot_m0 as u32;
                    // The next group of `L`: loaded now, stored after the rows (the loads'
                    // global-memory latency behind the FMAs; the other buffer).
                    let next = (g + 1 < ngroup).then(|| {
                        let at = ring32.offset((stage0 + ((g + 1) % 2) * stage_len) as u32);
                        let pre = LPrefetch::load(geo32, &ab, (m0 + ROWS) as u32, lane, lanes);
                        (at, pre)
                    });
                    let mut c = lane;
                    while c < bs {
                        y_rows_lds(geo32, ring32, stage32, m0 as u32, slot0, c as u32);
                        c += lanes;
                    }
                    if let Some((at, pre)) = next {
                        pre.store(geo32, &ab, at, (m0 + ROWS) as u32, lane, lanes);
                    }
                } else {
                    let mut c = lane;
                    while c < bs {
                        y_rows(&geo, ring, stage(g), m0, c);
                        c += lanes;
                    }
                }
                if !LDS && g + 1 < ngroup {
                    stage_l_rows(&geo, &ab, stage(g + 1), m0 + ROWS, lane, lanes);
                }
            }
            if gram_now {
                if let Some((ring32, geo32)) = lds {
                    let rows = (gram_from as u32, gram_to as u32, slot_from as u32);
                    // (lane + lanes - bs % lanes) % lanes in 32 bits.
                    let (lane32, lanes32) = (lane as u32, lanes as u32);
                    let mut tile = (lane32 + lanes32 - geo32.bs % lanes32) % lanes32;
                    while tile < ntile as u32 {
                        gram_tile_lds(geo32, out, ring32, rows, tile, store);
                        tile += lanes32;
                    }
                } else {
                    let mut tile = (lane + lanes - bs % lanes) % lanes;
                    while tile < ntile {
                        gram_tile(&geo, out, ring, (gram_from, gram_to), tile, store);
                        tile += lanes;
                    }
                }
            }
        });
        if gram_now {
            gram_from = gram_to;
            slot_from = slot_m0;
            since = 0;
        }
        since += 1;
        slot_m0 += ROWS;
        if slot_m0 >= depth {
            slot_m0 -= depth;
        }
    }
    match store {
        TileStore::RowMajor => team.each(|lane| {
            let mut e = lane;
            while e < bs * bs {
                let (r, c) = (e / bs, e % bs);
                if r > c {
                    out.set(e, out.get(c * bs + r));
                }
                e += lanes;
            }
        }),
        TileStore::TileMajor { ntile } => {
            // The tile-major sums into the ring (free now), then every entry of `C_bb` from
            // there: coalesced global reads and writes.
            let len = TILE * TILE * ntile;
            team.each(|lane| {
                let mut k = lane;
                while k < len {
                    ring.set(k, out.get(k));
                    k += lanes;
                }
            });
            team.each(|lane| {
                let mut e = lane;
                while e < bs * bs {
                    let (r, c) = (e / bs, e % bs);
                    let (r, c) = (r.min(c), r.max(c));
                    let (tr, tc) = (r / TILE, c / TILE);
                    let tile = tc * (tc + 1) / 2 + tr;
                    let k = ((r % TILE) * TILE + c % TILE) * ntile + tile;
                    out.set(e, ring.get(k));
                    e += lanes;
                }
            });
        }
    }
    if (0..bs).all(|c| out.get(c * bs + c).is_finite()) {
        Status::Ok
    } else {
        Status::NonFinite
    }
}

/// Shape of one [`covariance_block_team`] problem (also used by the DMMA variant,
/// [`super::banded_mma`], for its staging of `L`).
#[derive(Clone, Copy)]
pub(crate) struct CovGeometry {
    pub(crate) n: usize,
    pub(crate) kd: usize,
    pub(crate) nblock: usize,
    pub(crate) block: usize,
    pub(crate) bs: usize,
    pub(crate) depth: usize,
}

/// Stages rows `m0 .. m0 + 8` of `L` into `stage` (layout of [`covariance_block_team`]),
/// lane-strided.
#[inline(always)]
pub(crate) fn stage_l_rows(
    geo: &CovGeometry,
    ab: &Shared,
    stage: Shared,
    m0: usize,
    lane: usize,
    lanes: usize,
) {
    let (n, kd) = (geo.n, geo.kd);
    let w = kd + 1;
    // Element e: blocks of 8 positions × 8 rows, position fastest, so that 8 lanes read 8
    // consecutive values of one row of `ab` (4 rows per warp: about 10 sectors instead of 16
    // for rows read down a column; 4 shared-memory wavefronts per warp store instead of 2).
    let positions = kd + ROWS;
    let mut e = lane;
    while e < positions.div_ceil(ROWS) * ROWS * ROWS {
        let (t, j) = ((e / ROWS) % ROWS, e / (ROWS * ROWS) * ROWS + e % ROWS);
        if j >= positions {
            e += lanes;
            continue;
        }
        let m = m0 + t;
        let v = if m >= n {
            if j == kd + t {
                1.0
            } else {
                0.0
            }
        } else if j < t || j > kd + t || m0 + j < kd {
            0.0
        } else if j == kd + t {
            // The diagonal as its reciprocal: one division per row here instead of one per
            // row and column in `y_rows`.
            1.0 / ab.get(m * w + kd)
        } else {
            ab.get(m * w + j - t)
        };
        stage.set(j * ROWS + t, v);
        e += lanes;
    }
}

/// Rows `m0 .. m0 + 8` of column `c` of `Y_b` into the ring (zero for rows before the
/// column's start or `>= n`): `y_m[c] = (e_m[c] - Σ_k L[m][k]·y_k[c]) / L[m][m]`, `L` from
/// the staged group.
///
/// Every column that has started runs the sum over the same rows
/// `k = max(m0 - kd, block) .. m0` (the ring holds zeros above a column's start, which add
/// exact zeros: the same value as a sum from the start): the lanes of a warp then read the
/// same `L` entries (one broadcast wavefront per 16-byte pair) instead of up to 9 different
/// rows in the columns that start within the window. Columns that start after the group only
/// store their zeros.
// Not inlined: keeps its loop-invariant addresses out of the phase loop (registers).
#[inline(never)]
fn y_rows(geo: &CovGeometry, ring: Shared, stage: Shared, m0: usize, c: usize) {
    let (n, kd, bs, depth) = (geo.n, geo.kd, geo.bs, geo.depth);
    let start = geo.block + c * geo.nblock;
    let slot0 = m0 % depth;
    let mut y = [0.0f64; ROWS];
    // SAFETY (the unchecked accesses): `stage` has `depth · ROWS >= (kd + ROWS) · ROWS`
    // values and starts 16-byte aligned (`lrow + 2p` is even), `ring` at least `depth · bs`
    // (checked by the caller), `at = slot · bs + c < depth · bs` (`slot < depth`, `c < bs`).
    if start < m0 + ROWS {
        let mut acc = [0.0f64; ROWS];
        // Ring part: k in [max(m0 - kd, block), m0); stage position j = k + kd - m0 (the
        // zero padding covers the rows whose band starts later).
        let k_lo = m0.saturating_sub(kd).max(geo.block);
        // Index of y_k[c] in the ring, advanced by additions (no multiplication per term).
        let ring_end = depth * bs;
        let mut at = (k_lo % depth) * bs + c;
        let mut j = k_lo + kd - m0;
        while j < kd {
            let v = unsafe { ring.get_unchecked(at) };
            let lrow = j * ROWS;
            unroll!(p in [0, 1, 2, 3] => {
                let (a, b) = unsafe { stage.get2_unchecked(lrow + 2 * p) };
                acc[2 * p] = fma(-a, v, acc[2 * p]);
                acc[2 * p + 1] = fma(-b, v, acc[2 * p + 1]);
            });
            at += bs;
            if at >= ring_end {
                at -= ring_end;
            }
            j += 1;
        }
        // Triangle: rows of this group, in registers.
        let tri = kd * ROWS;
        unroll_rows!(t => {
            let m = m0 + t;
            let e = if m == start { 1.0 } else { 0.0 };
            let mut s = e + acc[t];
            unroll_rows!(t2 => {
                if t2 < t {
                    s = fma(-unsafe { stage.get_unchecked(tri + t2 * ROWS + t) }, y[t2], s);
                }
            });
            let v = s * unsafe { stage.get_unchecked(tri + t * ROWS + t) };
            y[t] = if m >= start && m < n { v } else { 0.0 };
        });
    }
    unroll_rows!(t => {
        let slot = if slot0 + t >= depth { slot0 + t - depth } else { slot0 + t };
        unsafe { ring.set_unchecked(slot * bs + c, y[t]) };
    });
}

/// [`unroll!`] over `0..TILE`: keeps the `TILE × TILE` accumulators in registers.
macro_rules! unroll_tile {
    ($i:ident => $body:block) => {
        unroll!($i in [0, 1, 2, 3, 4] => $body)
    };
}
const _: () = assert!(TILE == 5, "unroll_tile! expands TILE = 5 bodies");

/// Where [`gram_tile`] accumulates `C_bb` in `out` between updates.
#[derive(Clone, Copy)]
enum TileStore {
    /// In place: entry `(r, c)` at `r · bs + c` (the lanes of a warp touch rows of different
    /// tiles: about one 32-byte sector per value).
    RowMajor,
    /// Tile-major: entry `(i, j)` of tile `tile` at `(i · TILE + j) · ntile + tile`, so the
    /// lanes of a warp (consecutive tiles) touch consecutive values (whole sectors);
    /// [`covariance_block_team`] moves the sums to their row-major places at the end.
    TileMajor {
        /// Number of tiles.
        ntile: usize,
    },
}

/// Adds rows `m0 .. min(m1, n)` of `Y_b` (in the ring: `m1 - m0 <= kd`, `m1` a group start) to
/// the upper-triangle entries of tile `tile` of `C_bb` (`out`, laid out as `store` says):
/// `C[r][c] += Σ_t y_t[r]·y_t[c]` for `r <= c`. Tiles are numbered column by column:
/// `(0,0), (0,1), (1,1), (0,2), ...` (tile `(tr, tc)` is number `tc·(tc+1)/2 + tr`).
// Not inlined: keeps its loop-invariant addresses out of the phase loop (registers).
#[inline(never)]
fn gram_tile(
    geo: &CovGeometry,
    out: Shared,
    ring: Shared,
    (m0, m1): (usize, usize),
    tile: usize,
    store: TileStore,
) {
    let (bs, depth) = (geo.bs, geo.depth);
    let (mut tr, mut tc) = (tile, 0);
    while tr > tc {
        tc += 1;
        tr -= tc;
    }
    let (r0, c0) = (tr * TILE, tc * TILE);
    // Columns c >= c0 start at b + c·nblock: nothing to add before.
    if m1 <= geo.block + c0 * geo.nblock {
        return;
    }
    // Rows / columns past `bs - 1` (edge tiles) read at most `TILE - 1` values past the end of
    // a ring row (inside `ring`: the next row, the alignment slack or the staged `L`) into
    // accumulators that never reach the row-major `C_bb` (tile-major: stored in their own
    // slots and left there).
    let keep = |i: usize, j: usize| match store {
        TileStore::RowMajor => r0 + i <= c0 + j && c0 + j < bs,
        TileStore::TileMajor { .. } => true,
    };
    let at = |i: usize, j: usize| match store {
        TileStore::RowMajor => (r0 + i) * bs + c0 + j,
        TileStore::TileMajor { ntile } => (i * TILE + j) * ntile + tile,
    };
    // SAFETY (the unchecked accesses): row-major stored entries have `r <= c < bs` and `out`
    // has at least `bs²` values; tile-major ones are below `TILE² · ntile <= bs²` (checked by
    // the caller); ring reads are below `depth · bs + TILE <= ring.len()` (checked by the
    // caller: `ring` also holds the staged `L`).
    let mut acc = [[0.0f64; TILE]; TILE];
    unroll_tile!(i => {
        unroll_tile!(j => {
            if keep(i, j) {
                acc[i][j] = unsafe { out.get_unchecked(at(i, j)) };
            }
        });
    });
    // Rows >= n are zero: a run-time trip count (also keeps LLVM from unrolling the loop and
    // hoisting its 80 loads, which needs more than 128 registers).
    let count = m1.min(geo.n) - m0;
    let mut slot = m0 % depth;
    let mut t = 0;
    while t < count {
        let (rbase, cbase) = (slot * bs + r0, slot * bs + c0);
        let mut yr = [0.0f64; TILE];
        let mut yc = [0.0f64; TILE];
        unroll_tile!(i => {
            yr[i] = unsafe { ring.get_unchecked(rbase + i) };
            yc[i] = unsafe { ring.get_unchecked(cbase + i) };
        });
        unroll_tile!(i => {
            unroll_tile!(j => {
                acc[i][j] = fma(yr[i], yc[j], acc[i][j]);
            });
        });
        slot += 1;
        if slot == depth {
            slot = 0;
        }
        t += 1;
    }
    unroll_tile!(i => {
        unroll_tile!(j => {
            if keep(i, j) {
                unsafe { out.set_unchecked(at(i, j), acc[i][j]) };
            }
        });
    });
}

/// [`CovGeometry`] in 32 bits, passed by value to the LDS variant's phase functions (in
/// registers, not through a local-memory struct).
#[derive(Clone, Copy)]
struct Geo32 {
    n: u32,
    kd: u32,
    nblock: u32,
    block: u32,
    bs: u32,
    depth: u32,
}

/// [`y_rows`] on [`Lds`] cursors (`stage`: the group's staged `L`; `slot0 = m0 % depth`), with
/// the ring holding `-y` instead of `y`: the terms `(-L)·y` of [`y_rows`] are computed as
/// `L·(-y)`, the same values exactly (signed zeros included), so the sums are bitwise those
/// of [`y_rows`] and [`gram_tile_lds`]'s products `(-y_r)·(-y_c)` those of [`gram_tile`],
/// without a negation per term (the values come from `asm!` loads, whose negation is an
/// integer instruction per value, not a free operand modifier of the FMA). The sum over the
/// ring runs in two loops split where the ring wraps (no compare-and-wrap per term): per row
/// `k` one ring load, four 16-byte stage loads, 8 FMAs and two 32-bit adds.
// Inlined (unlike `y_rows`): with 32-bit cursors the phase loop fits the 128 registers
// (ptxas, sm_90: 16-byte stack frame, no spill inside the phase loop), and an ABI call passed
// the geometry through local memory and spilled the caller's values around it (120 bytes).
#[inline(always)]
fn y_rows_lds(g: Geo32, ring: Lds, stage: Lds, m0: u32, slot0: u32, c: u32) {
    let start = g.block + c * g.nblock;
    // -y of the group's rows (-0.0 where y is 0.0).
    let mut ny = [-0.0f64; ROWS];
    // SAFETY (the cursor accesses): as in `y_rows` (ring slots `< depth`, stage positions
    // `< (kd + 8) · 8 <= depth · 8`, 16-byte aligned pairs: `cov_stage_start`).
    if start < m0 + ROWS as u32 {
        let mut acc = [0.0f64; ROWS];
        let k_lo = m0.saturating_sub(g.kd).max(g.block);
        // Rows k_lo .. m0 (count <= kd < depth), the first in slot k_lo % depth.
        let count = m0 - k_lo;
        let s_lo = if slot0 >= count {
            slot0 - count
        } else {
            slot0 + g.depth - count
        };
        let first = count.min(g.depth - s_lo);
        let mut r = ring.offset(s_lo * g.bs + c);
        let mut l = stage.offset((k_lo + g.kd - m0) * ROWS as u32);
        let mut step = |r: &mut Lds, l: &mut Lds| {
            let nv = unsafe { r.get(0) };
            unroll!(p in [0, 1, 2, 3] => {
                let (a, b) = unsafe { l.get2(2 * p as u32) };
                acc[2 * p] = fma(a, nv, acc[2 * p]);
                acc[2 * p + 1] = fma(b, nv, acc[2 * p + 1]);
            });
            *r = r.offset(g.bs);
            *l = l.offset(ROWS as u32);
        };
        let mut k = 0;
        while k < first {
            step(&mut r, &mut l);
            k += 1;
        }
        r = ring.offset(c);
        while k < count {
            step(&mut r, &mut l);
            k += 1;
        }
        // Triangle: rows of this group, in registers.
        let tri = stage.offset(g.kd * ROWS as u32);
        unroll_rows!(t => {
            let m = m0 + t as u32;
            let e = if m == start { 1.0 } else { 0.0 };
            let mut s = e + acc[t];
            unroll_rows!(t2 => {
                if t2 < t {
                    s = fma(unsafe { tri.get((t2 * ROWS + t) as u32) }, ny[t2], s);
                }
            });
            let v = s * unsafe { tri.get((t * ROWS + t) as u32) };
            ny[t] = if m >= start && m < g.n { -v } else { -0.0 };
        });
    }
    unroll_rows!(t => {
        let slot = slot0 + t as u32;
        let slot = if slot >= g.depth { slot - g.depth } else { slot };
        unsafe { ring.offset(slot * g.bs + c).set(0, ny[t]) };
    });
}

/// [`gram_tile`] on [`Lds`] cursors: rows `m0 .. min(m1, n)` of `Y_b` (`slot0 = m0 % depth`;
/// the ring holds `-y`, see [`y_rows_lds`]) into tile `tile`; the same FMAs in the same
/// order on the same products (bitwise the same sums), the ring's rows in two loops split
/// where it wraps, 32-bit indices.
// Inlined, as `y_rows_lds`.
#[inline(always)]
fn gram_tile_lds(
    g: Geo32,
    out: Shared,
    ring: Lds,
    (m0, m1, slot0): (u32, u32, u32),
    tile: u32,
    store: TileStore,
) {
    let (mut tr, mut tc) = (tile, 0u32);
    while tr > tc {
        tc += 1;
        tr -= tc;
    }
    let t5 = TILE as u32;
    let (r0, c0) = (tr * t5, tc * t5);
    if m1 <= g.block + c0 * g.nblock {
        return;
    }
    let keep = |i: usize, j: usize| match store {
        TileStore::RowMajor => r0 + i as u32 <= c0 + j as u32 && c0 + (j as u32) < g.bs,
        TileStore::TileMajor { .. } => true,
    };
    let at = |i: usize, j: usize| -> usize {
        match store {
            TileStore::RowMajor => ((r0 + i as u32) * g.bs + c0 + j as u32) as usize,
            TileStore::TileMajor { ntile } => {
                ((i * TILE + j) as u32 * ntile as u32 + tile) as usize
            }
        }
    };
    // SAFETY: as in `gram_tile` (the same indices).
    let mut acc = [[0.0f64; TILE]; TILE];
    unroll_tile!(i => {
        unroll_tile!(j => {
            if keep(i, j) {
                acc[i][j] = unsafe { out.get_unchecked(at(i, j)) };
            }
        });
    });
    let count = m1.min(g.n) - m0;
    let first = count.min(g.depth - slot0);
    let mut pr = ring.offset(slot0 * g.bs + r0);
    let mut pc = ring.offset(slot0 * g.bs + c0);
    let mut step = |pr: &mut Lds, pc: &mut Lds| {
        let mut yr = [0.0f64; TILE];
        let mut yc = [0.0f64; TILE];
        unroll_tile!(i => {
            yr[i] = unsafe { pr.get(i as u32) };
            yc[i] = unsafe { pc.get(i as u32) };
        });
        unroll_tile!(i => {
            unroll_tile!(j => {
                acc[i][j] = fma(yr[i], yc[j], acc[i][j]);
            });
        });
        *pr = pr.offset(g.bs);
        *pc = pc.offset(g.bs);
    };
    let mut t = 0;
    while t < first {
        step(&mut pr, &mut pc);
        t += 1;
    }
    pr = ring.offset(r0);
    pc = ring.offset(c0);
    while t < count {
        step(&mut pr, &mut pc);
        t += 1;
    }
    unroll_tile!(i => {
        unroll_tile!(j => {
            if keep(i, j) {
                unsafe { out.set_unchecked(at(i, j), acc[i][j]) };
            }
        });
    });
}

/// Elements of a staged group of `L` that one lane of [`covariance_block_team_lds`] loads into
/// registers at the start of a phase (element `lane + s·lanes`, `s < L_PREFETCH`: all of them
/// for `lanes >= 128` and `kd <= 72`); any further ones are loaded and stored at the end.
const L_PREFETCH: usize = 5;

/// Element `e` of the staging order of [`stage_l_rows`] (blocks of 8 positions × 8 rows,
/// position fastest): `(j, t)` = (position, row), `None` past the `kd + 8` positions.
#[inline(always)]
fn stage_element(e: u32, kd: u32) -> Option<(u32, u32)> {
    let r = ROWS as u32;
    let (t, j) = ((e / r) % r, e / (r * r) * r + e % r);
    (j < kd + r).then_some((j, t))
}

/// The value that [`stage_l_rows`] stores at `(j, t)` for the group starting at row `m0`,
/// before the reciprocal: `(value, true)` for a diagonal entry of `L` (stored as
/// `1 / value`), else `(stored value, false)`.
#[inline(always)]
fn stage_value(g: Geo32, ab: &Shared, m0: u32, (j, t): (u32, u32)) -> (f64, bool) {
    let (n, kd) = (g.n, g.kd);
    let w = kd as usize + 1;
    let m = m0 + t;
    if m >= n {
        (if j == kd + t { 1.0 } else { 0.0 }, false)
    } else if j < t || j > kd + t || m0 + j < kd {
        (0.0, false)
    } else if j == kd + t {
        (ab.get(m as usize * w + kd as usize), true)
    } else {
        (ab.get(m as usize * w + (j - t) as usize), false)
    }
}

/// One lane's share of a staged group of `L` (layout of [`stage_l_rows`]), loaded from `ab`
/// into registers ahead of its store: [`LPrefetch::store`] leaves exactly the values of
/// [`stage_l_rows`] (the diagonal's reciprocal taken at the store).
struct LPrefetch {
    values: [f64; L_PREFETCH],
}

impl LPrefetch {
    /// Loads this lane's first `L_PREFETCH` elements of the group starting at row `m0`.
    #[inline(always)]
    fn load(g: Geo32, ab: &Shared, m0: u32, lane: usize, lanes: usize) -> Self {
        let mut values = [0.0f64; L_PREFETCH];
        for (s, v) in values.iter_mut().enumerate() {
            let e = (lane + s * lanes) as u32;
            if let Some(pos) = stage_element(e, g.kd) {
                *v = stage_value(g, ab, m0, pos).0;
            }
        }
        Self { values }
    }

    /// Stores the prefetched elements into `stage` (the group's buffer), then loads and
    /// stores this lane's remaining elements.
    #[inline(always)]
    fn store(&self, g: Geo32, ab: &Shared, stage: Lds, m0: u32, lane: usize, lanes: usize) {
        let r = ROWS as u32;
        // SAFETY: positions j < kd + 8 <= depth and t < 8: inside the group's buffer of
        // depth · 8 values (the layout of `stage_l_rows`).
        for (s, raw) in self.values.iter().enumerate() {
            let e = (lane + s * lanes) as u32;
            if let Some((j, t)) = stage_element(e, g.kd) {
                let diagonal = m0 + t < g.n && j == g.kd + t;
                let v = if diagonal { 1.0 / *raw } else { *raw };
                unsafe { stage.set(j * r + t, v) };
            }
        }
        let count = (g.kd + r).div_ceil(r) * r * r;
        let mut e = (lane + L_PREFETCH * lanes) as u32;
        while e < count {
            if let Some((j, t)) = stage_element(e, g.kd) {
                let (raw, diagonal) = stage_value(g, ab, m0, (j, t));
                let v = if diagonal { 1.0 / raw } else { raw };
                unsafe { stage.set(j * r + t, v) };
            }
            e += lanes as u32;
        }
    }
}
