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

use super::cholesky::pivot_status;
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
/// least `2 * LOAD_AHEAD`, the staging of [`band_back_solve_team`]).
fn window_rows(kd: usize) -> usize {
    kd.saturating_add(1 + LOAD_AHEAD).max(2 * LOAD_AHEAD)
}

/// Length of the `window` view that [`band_factor_team`], [`band_factor_forward_team`],
/// [`band_solve_team`] and [`band_back_solve_team`] need: a ring of
/// `max(kd + 1 + 8, 16)` band rows of stride `(kd + 1) | 1`, plus 2 flags
/// (3,962 values = 31.7 KB for `kd = 58`).
pub fn band_factor_team_window_len(kd: usize) -> usize {
    window_rows(kd)
        .saturating_mul(window_stride(kd))
        .saturating_add(2)
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

/// `Σ_{t<len} x(t)·y(t)` in the order of `cholesky::dot` (8 fused accumulators, remainder
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
    for (t, acc_t) in acc.iter_mut().enumerate().take(len - full) {
        *acc_t = fma(x(full + t), y(full + t), *acc_t);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `Σ_{t<len} x(t)·y(t)` in the order of `banded::dot4` (4 fused accumulators): bitwise the
/// same value.
#[inline(always)]
fn dot4_at(len: usize, x: impl Fn(usize) -> f64, y: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0.0f64; 4];
    let full = len / 4 * 4;
    let mut i = 0;
    while i < full {
        for (t, acc_t) in acc.iter_mut().enumerate() {
            *acc_t = fma(x(i + t), y(i + t), *acc_t);
        }
        i += 4;
    }
    for (t, acc_t) in acc.iter_mut().enumerate().take(len - full) {
        *acc_t = fma(x(full + t), y(full + t), *acc_t);
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3])
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
    fn get(&self, i: usize, pos: usize) -> f64 {
        self.data.get(self.at(i, pos))
    }

    #[inline(always)]
    fn set(&self, i: usize, pos: usize, value: f64) {
        self.data.set(self.at(i, pos), value)
    }
}

/// Finishes the pivot of band row `i` in the window (all its off-diagonal entries final):
/// `L[i][i] = sqrt(M[i][i] - Σ L[i][k]²)` in the order of `band_factor`; returns the flag
/// (0 or a [`Status`] code).
#[inline(always)]
fn pivot_row(win: &Window, i: usize, kd: usize) -> f64 {
    let p0 = i.saturating_sub(kd) + kd - i;
    let pivot = win.get(i, kd) - dot8_at(kd - p0, |t| win.get(i, p0 + t), |t| win.get(i, p0 + t));
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
/// `i = j + 1 + l + t·lanes <= j + kd`, each a dot product over its own window row; the lane
/// of row `j + 1` then finishes that row's pivot and writes the failure flag. In the same
/// phase, row `j` (final) is written back to `ab`, and every `LOAD_AHEAD` columns the next
/// `LOAD_AHEAD` rows are loaded into the ring. `n + 2` phases; the work of one phase is
/// `kd` dot products of length `<= kd` (one per lane for `lanes >= kd`, e.g. 64 lanes).
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
/// `z_j = u_j / L[j][j]` (column-oriented, so the sums run in a different order than in
/// [`super::banded::band_solve`]: equal to about `n·eps·κ`).
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
    // Loads band rows [lo, hi) into the ring (lane-strided); slots outside M become 0.
    let load = |lane: usize, lo: usize, hi: usize| {
        let hi = hi.min(n);
        if hi <= lo {
            return;
        }
        let mut e = lane;
        while e < (hi - lo) * w {
            let (i, pos) = (lo + e / w, e % w);
            let v = if pos + i < kd { 0.0 } else { ab.get(i * w + pos) };
            win.set(i, pos, v);
            e += lanes;
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
    for j in 0..n {
        // Read after a barrier, the same value on every lane: uniform exit.
        if flag.get(last) != 0.0 {
            break;
        }
        let cur = j % 2;
        team.each(|lane| {
            let inv = 1.0 / win.get(j, kd);
            // z_j = u_j / L[j][j] (the same value on every lane; stored in phase j + 1).
            let zj = rhs.map(|r| r.get(j) / win.get(j, kd));
            let i_end = n.min(j + w);
            let mut i = j + 1 + lane;
            while i < i_end {
                let i0 = i.saturating_sub(kd);
                let pj = j + kd - i;
                let (xi, yj) = (i0 + kd - i, i0 + kd - j);
                let s = win.get(i, pj)
                    - dot4_at(j - i0, |t| win.get(i, xi + t), |t| win.get(j, yj + t));
                let lij = s * inv;
                win.set(i, pj, lij);
                if let (Some(r), Some(zj)) = (rhs, zj) {
                    r.set(i, fma(-lij, zj, r.get(i)));
                }
                if i == j + 1 {
                    flag.set(cur, pivot_row(&win, i, kd));
                }
                i += lanes;
            }
            if lane == 0 {
                if j + 1 >= n {
                    flag.set(cur, 0.0);
                }
                // z_{j-1}: its window slot may be reloaded in this phase; ab row j-1 is
                // final (written back in phase j - 1).
                if let (Some(r), true) = (rhs, j > 0) {
                    r.set(j - 1, r.get(j - 1) / ab.get((j - 1) * w + kd));
                }
            }
            // Row j is final: write it back (nobody reads ab in this phase but the loads).
            let mut pos = lane;
            while pos < w {
                ab.set(j * w + pos, win.get(j, pos));
                pos += lanes;
            }
            // Rows j+w .. j+w+LOAD_AHEAD (first read in phases j+1 .. j+LOAD_AHEAD) go to
            // the slots of rows j-LOAD_AHEAD .. j-1: written back already, read by no one in
            // this phase (the ring has at least kd + 1 + LOAD_AHEAD rows).
            if j % LOAD_AHEAD == 0 {
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
                    r.set(n - 1, r.get(n - 1) / ab.get((n - 1) * w + kd));
                }
            });
        }
    }
    status
}
