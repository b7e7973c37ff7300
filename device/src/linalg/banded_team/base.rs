//! The banded team factorization and solve of main at bbb071a, kept for A/B timing on the GPU
//! (`factor_solve_team_base`, selected by `DESI_FACTOR_KERNEL=base`): the pivot's sum of
//! squares on the lane of the pivot row in the pivot's phase, `z_{j-1}` reloaded from global
//! memory and divided again by lane 0, `x_i = z_i / L[i][i]`, ring slots by remainders. The
//! factor is bitwise that of the current routines (and `band_factor`); the solution equals
//! theirs up to the reciprocals (one rounding per unknown).

use super::{
    band_factor_team_window_len, band_shape_ok, dot4_at, flag_status, pivot_row, window_rows,
    window_stride, Window, LOAD_AHEAD,
};
use crate::math::fma;
use crate::team::{Shared, Team};
use crate::Status;

/// [`super::band_factor_forward_team`] as it was at main bbb071a.
///
/// # Returns
/// As [`super::band_factor_forward_team`].
pub fn band_factor_forward_team_base<T: Team>(
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

/// The factorization, optionally with the forward substitution (main at bbb071a).
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
                let (base_i, base_j) = (win.at(i, 0), win.at(j, 0));
                // SAFETY: xi + t < pj <= kd and yj + t < kd for t < j - i0; the window length
                // was checked on entry.
                let s = win.get(i, pj)
                    - dot4_at(
                        j - i0,
                        |t| unsafe { win.get_at(base_i, xi + t) },
                        |t| unsafe { win.get_at(base_j, yj + t) },
                    );
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

/// [`super::band_back_solve_team`] as it was at main bbb071a (`x_i = z_i / L[i][i]` by every
/// lane, lane 0 dividing again to store `x_{i+1}`): bitwise `band_solve`'s second pass.
///
/// # Returns
/// As [`super::band_back_solve_team`].
pub fn band_back_solve_team_base<T: Team>(
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
