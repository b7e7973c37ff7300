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
/// least `3 * LOAD_AHEAD`, the staging of [`band_back_solve_team`]).
fn window_rows(kd: usize) -> usize {
    kd.saturating_add(1 + LOAD_AHEAD).max(3 * LOAD_AHEAD)
}

/// Length of the `window` view that [`band_factor_team`], [`band_factor_forward_team`],
/// [`band_solve_team`] and [`band_back_solve_team`] need: a ring of
/// `max(kd + 1 + 8, 24)` band rows of stride `(kd + 1) | 1`, plus 2 flags
/// (3,955 values = 31.6 KB for `kd = 58`).
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
    // Constant trip count (unrolled: `acc` stays in registers).
    for (t, acc_t) in acc.iter_mut().enumerate() {
        if full + t < len {
            *acc_t = fma(x(full + t), y(full + t), *acc_t);
        }
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
    for (t, acc_t) in acc.iter_mut().enumerate() {
        if full + t < len {
            *acc_t = fma(x(full + t), y(full + t), *acc_t);
        }
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
            let v = if pos + i < kd {
                0.0
            } else {
                ab.get(i * w + pos)
            };
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
                    r.set(n - 1, r.get(n - 1) / ab.get((n - 1) * w + kd));
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
/// Forward, phase `i`: `z_i = u_i / L[i][i]`, and lanes over `k = i+1 ..= i+kd` apply
/// `u_k -= L[k][i]·z_i` (`u = rhs` on entry). Same result as
/// [`super::banded::band_solve`] up to the order of the forward sums (about `n·eps·κ`).
/// `2n + 3` phases.
///
/// # Returns
/// [`Status::Ok`], or [`Status::BadShape`] if a length disagrees with `n`, `kd` (nothing
/// written).
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
            let zi = rhs.get(i) / ab.get(i * w + kd);
            let mut k = i + 1 + lane;
            while k < n.min(i + w) {
                rhs.set(k, fma(-ab.get(k * w + i + kd - k), zi, rhs.get(k)));
                k += lanes;
            }
            // z_{i-1} (read by everyone in phase i - 1, by no one now).
            if lane == 0 && i > 0 {
                rhs.set(i - 1, rhs.get(i - 1) / ab.get((i - 1) * w + kd));
            }
        });
    }
    team.each(|lane| {
        if lane == 0 {
            rhs.set(n - 1, rhs.get(n - 1) / ab.get((n - 1) * w + kd));
        }
    });
    band_back_solve_team(team, ab, n, kd, window, rhs)
}

/// Back substitution `Lᵀ x = z` by one team, in the order of the second pass of
/// [`super::banded::band_solve`] (bitwise the same `x` for the same `z`).
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, `L` in band storage (may be global memory).
/// - `window`: scratch of [`band_factor_team_window_len`]`(kd)` values (shared memory): band
///   rows are staged there `LOAD_AHEAD` at a time, three chunks in flight.
/// - `rhs`: shape `(n,)`; on entry `z`, on exit `x`.
///
/// # Equation
/// For `i = n-1, ..., 0` (one phase each): `x_i = z_i / L[i][i]` (every lane computes it),
/// lanes over `k = i-kd .. i` apply `z_k -= L[i][k]·x_i`; `x_i` is stored in phase `i - 1`.
/// `n + 2` phases.
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
    let load = |lane: usize, c: usize| {
        let hi = n.saturating_sub(c * LOAD_AHEAD);
        let lo = n.saturating_sub((c + 1) * LOAD_AHEAD);
        let mut e = lane;
        while e < (hi - lo) * w {
            let (i, pos) = (lo + e / w, e % w);
            window.set(staged(i, pos), ab.get(i * w + pos));
            e += lanes;
        }
    };
    team.each(|lane| load(lane, 0));
    for i in (0..n).rev() {
        team.each(|lane| {
            let back = n - 1 - i;
            if back.is_multiple_of(LOAD_AHEAD) {
                // Chunk c + 1 into the buffer of chunk c - 2 (finished).
                load(lane, back / LOAD_AHEAD + 1);
            }
            let x = rhs.get(i) / window.get(staged(i, kd));
            let j0 = i.saturating_sub(kd);
            let mut k = j0 + lane;
            while k < i {
                rhs.set(k, fma(-x, window.get(staged(i, k + kd - i)), rhs.get(k)));
                k += lanes;
            }
            if lane == 0 && i + 1 < n {
                rhs.set(i + 1, rhs.get(i + 1) / window.get(staged(i + 1, kd)));
            }
        });
    }
    team.each(|lane| {
        if lane == 0 {
            rhs.set(0, rhs.get(0) / window.get(staged(0, kd)));
        }
    });
    Status::Ok
}

/// Expands `$body` for `$t = 0, 1, ..., ROWS - 1` as literal indices, so that the
/// `[f64; ROWS]` arrays indexed by `$t` stay in registers on the GPU (a plain loop with a
/// nested loop is not fully unrolled by LLVM and puts them in local memory).
macro_rules! unroll_rows {
    ($t:ident => $body:block) => {{
        let $t: usize = 0;
        $body
    }
    {
        let $t: usize = 1;
        $body
    }
    {
        let $t: usize = 2;
        $body
    }
    {
        let $t: usize = 3;
        $body
    }
    {
        let $t: usize = 4;
        $body
    }
    {
        let $t: usize = 5;
        $body
    }
    {
        let $t: usize = 6;
        $body
    }
    {
        let $t: usize = 7;
        $body
    }};
}
const _: () = assert!(ROWS == 8, "unroll_rows! expands ROWS = 8 bodies");

/// Ring depth (rows of `Y_b`) of [`covariance_block_team`]: the `kd` rows a new row reads,
/// the `ROWS` rows being written and the `ROWS` rows being added to `C_bb` (at least 2·ROWS).
fn cov_ring_depth(kd: usize) -> usize {
    kd.max(ROWS).saturating_add(ROWS)
}

/// Length of the `ring` view that [`covariance_block_team`] needs:
/// `(max(kd, 8) + 8) * (n / nblock)` (4,884 values = 39 KB for `kd = 58`, `bs = 74`); 0 for
/// invalid shapes.
pub fn covariance_block_team_ring_len(n: usize, kd: usize, nblock: usize) -> usize {
    if nblock == 0 || !n.is_multiple_of(nblock) {
        return 0;
    }
    cov_ring_depth(kd).saturating_mul(n / nblock)
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
/// - `out`: shape `(bs, bs)` (at least `bs²` values; shared memory), row-major output
///   `out[r * bs + c] = C[r * nblock + b][c * nblock + b]` (symmetric).
/// - `ring`: scratch of [`covariance_block_team_ring_len`]`(n, kd, nblock)` values (shared
///   memory): the last rows of `Y_b`, row `m` in slot `m % depth`, `bs` values each.
///
/// # Equation
/// `C_bb = Y_bᵀ Y_b` with `Y_b = L⁻¹ E_b` (Bolton & Schlegel 2010 eq 10 restricted to one
/// fiber); column `c` of `Y_b` is zero above row `b + c·nblock`, where it starts with
/// `1 / L[m][m]`. Rows are produced 8 per phase: the lane of column `c` forms
/// `y_m[c] = (e_m[c] - Σ_{k=m-kd}^{m-1} L[m][k]·y_k[c]) / L[m][m]` for `m = m0 .. m0+8`,
/// reading each ring value once for the 8 rows (two accumulators per row), then the 8×8
/// triangle in registers. In the same phase the lanes of the column pairs `(p, bs-1-p)`
/// add the previous 8 rows to their columns of the upper triangle of `C_bb`:
/// `C[r][c] += Σ_t y_t[r]·y_t[c]` for `r <= c < rmax`. Then the lower triangle is mirrored.
/// Tasks per phase: `bs` columns + `(bs + 1) / 2` pairs (111 for `bs = 74`: 128 lanes run one
/// each); `ceil((n - b) / 8) + 3` phases.
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
    if nblock == 0 || !n.is_multiple_of(nblock) || !band_shape_ok(&ab, n, kd) || block >= nblock {
        return Status::BadShape;
    }
    let bs = n / nblock;
    if out.len() < bs * bs || ring.len() < covariance_block_team_ring_len(n, kd, nblock) {
        return Status::BadShape;
    }
    let w = kd + 1;
    // Every lane reads the same diagonal: a uniform early return.
    for m in 0..n {
        if let Some(status) = pivot_status(ab.get(m * w + kd)) {
            return status;
        }
    }
    if n == 0 {
        return Status::Ok;
    }
    let lanes = team.lanes();
    let depth = cov_ring_depth(kd);
    let at = |m: usize, c: usize| (m % depth) * bs + c;
    let lband = |m: usize, k: usize| ab.get(m * w + k + kd - m);
    let ngroup = (n - block).div_ceil(ROWS);
    let npair = bs.div_ceil(2);
    team.each(|lane| {
        let mut e = lane;
        while e < bs * bs {
            out.set(e, 0.0);
            e += lanes;
        }
    });
    for g in 0..=ngroup {
        team.each(|lane| {
            let ncol = if g < ngroup { bs } else { 0 };
            let ntask = ncol + if g > 0 { npair } else { 0 };
            let mut task = lane;
            while task < ntask {
                if task < ncol {
                    y_rows(
                        n,
                        kd,
                        ring,
                        depth,
                        bs,
                        block + g * ROWS,
                        block + task * nblock,
                        task,
                        &lband,
                    );
                } else {
                    let m0 = block + (g - 1) * ROWS;
                    let count = ROWS.min(n - m0);
                    let rmax = (m0 + count - 1 - block) / nblock + 1;
                    let p = task - ncol;
                    gram_column(out, ring, bs, p, m0, count, rmax, &at);
                    if bs - 1 - p != p {
                        gram_column(out, ring, bs, bs - 1 - p, m0, count, rmax, &at);
                    }
                }
                task += lanes;
            }
        });
    }
    team.each(|lane| {
        let mut e = lane;
        while e < bs * bs {
            let (r, c) = (e / bs, e % bs);
            if r > c {
                out.set(e, out.get(c * bs + r));
            }
            e += lanes;
        }
    });
    if (0..bs).all(|c| out.get(c * bs + c).is_finite()) {
        Status::Ok
    } else {
        Status::NonFinite
    }
}

/// Rows `m0 .. m0 + ROWS` (those `< n`) of column `c` of `Y_b` (first non-zero row `start`)
/// into the ring: `y_m[c] = (e_m[c] - Σ_k L[m][k]·y_k[c]) / L[m][m]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn y_rows(
    n: usize,
    kd: usize,
    ring: Shared,
    depth: usize,
    bs: usize,
    m0: usize,
    start: usize,
    c: usize,
    lband: &impl Fn(usize, usize) -> f64,
) {
    let count = ROWS.min(n - m0);
    let mut acc0 = [0.0f64; ROWS];
    let mut acc1 = [0.0f64; ROWS];
    // Ring part: k in [max(m0 - kd, start), m0), each value used by up to ROWS rows; row
    // m0 + t reads k >= m0 + t - kd. Two accumulators per row (k even / odd).
    let k_lo = m0.saturating_sub(kd).max(start);
    let mut k = k_lo;
    while k < m0 {
        let v = ring.get((k % depth) * bs + c);
        let odd = (k - k_lo) % 2 == 1;
        unroll_rows!(t => {
            let m = m0 + t;
            if t < count && k + kd >= m {
                let l = lband(m, k);
                if odd {
                    acc1[t] = fma(-l, v, acc1[t]);
                } else {
                    acc0[t] = fma(-l, v, acc0[t]);
                }
            }
        });
        k += 1;
    }
    // Triangle: rows of this group, in registers.
    let mut y = [0.0f64; ROWS];
    unroll_rows!(t => {
        let m = m0 + t;
        if t < count && m >= start {
            let e = if m == start { 1.0 } else { 0.0 };
            let mut s = (e + acc0[t]) + acc1[t];
            unroll_rows!(t2 => {
                let k2 = m0 + t2;
                if t2 < t && k2 >= start && k2 + kd >= m {
                    s = fma(-lband(m, k2), y[t2], s);
                }
            });
            y[t] = s / lband(m, m);
        }
    });
    unroll_rows!(t => {
        if t < count {
            ring.set(((m0 + t) % depth) * bs + c, y[t]);
        }
    });
}

/// Adds rows `m0 .. m0 + count` of `Y_b` (in the ring) to column `c` of the upper triangle
/// of `C_bb` (`out`, stride `bs`): `C[r][c] += Σ_t y_t[r]·y_t[c]` for `r <= c`, `c < rmax`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gram_column(
    out: Shared,
    ring: Shared,
    bs: usize,
    c: usize,
    m0: usize,
    count: usize,
    rmax: usize,
    at: &impl Fn(usize, usize) -> usize,
) {
    if c >= rmax {
        return;
    }
    let mut yc = [0.0f64; ROWS];
    for (t, yc_t) in yc.iter_mut().enumerate() {
        if t < count {
            *yc_t = ring.get(at(m0 + t, c));
        }
    }
    for r in 0..=c {
        let mut v = out.get(r * bs + c);
        for (t, &yc_t) in yc.iter().enumerate() {
            if t < count {
                v = fma(ring.get(at(m0 + t, r)), yc_t, v);
            }
        }
        out.set(r * bs + c, v);
    }
}
