//! Cooperative spot evaluation: one team of lanes (a GPU thread block) evaluates one spot with
//! every intermediate in shared memory, written once against [`Team`] for the GPU and the host
//! tests.
//!
//! The arithmetic is that of [`spot_at`](crate::psf::spot::spot_at), operation for operation and in
//! the same order ([`psf_point`](crate::psf::spot::psf_point), the edges of
//! [`pixel_integrated_gh`](crate::psf::spot::pixel_integrated_gh), the `Σ_i` of `Hx`, the `Σ_j` of
//! each pixel, the clip, the total by rows and the division), so the stamps, corners and
//! status codes are the same bit for bit. Only the work is spread: the one-thread-per-spot
//! kernel kept its scratch arrays on the stack, in local memory (H100, Nsight Compute: 75 % of
//! the stall samples on local loads, DRAM 47 % busy, 26 ms per frame); here the lanes share it.
//!
//! # Phases
//! 1. Lanes evaluate the `2 + ngh` Legendre sums of GHSIGX, GHSIGY and GH-i-j, and X, Y.
//! 2. Lane 0 decides the status and the corner; every lane computes pixel edges
//!    ([`gh_edge`]) of the x and y bases.
//! 3. `Hx[j][ix] = Σ_i c_ij·Gx[i][ix]`, one entry per lane.
//! 4. `S[iy][ix] = max(Σ_j Gy[j][iy]·Hx[j][ix], 0)`, one pixel per lane.
//! 5. One lane per row sums the row (columns in order), then lane 0 sums the rows' sums (rows
//!    in order): [`evaluate_spot`](crate::psf::spot::evaluate_spot)'s order, a serial chain of
//!    `nx + ny` additions instead of the `nx·ny` of one lane summing the whole stamp.
//! 6. The lanes write `S / ΣS` (consecutive lanes, consecutive pixels).

use crate::math::floor;
use crate::psf::legendre::{legendre_sum, legval, normalized_wavelength};
use crate::psf::spot::{
    check_tables, coeff_row, corner, edge_u, gh_edge, PsfTables, SpotGeometry, StampCorner,
    MAX_GH_DEGREE,
};
use crate::team::{strided, Shared, Team};
use crate::Status;

/// Scratch slots: status code, corner x, corner y, stamp total.
const INFO: usize = 4;
/// Scratch slots of X and Y.
const POS: usize = 2;

/// Offsets of the scratch regions of one geometry.
#[derive(Clone, Copy)]
struct Layout {
    pos: usize,
    par: usize,
    ex: usize,
    ey: usize,
    hx: usize,
    st: usize,
    end: usize,
}

impl Layout {
    fn new(g: &SpotGeometry) -> Self {
        let (nx, ny) = (g.nx(), g.ny());
        let (dx, dy) = (g.ghdegx + 1, g.ghdegy + 1);
        let pos = INFO;
        let par = pos + POS;
        let ex = par + 2 + g.ngh();
        let ey = ex + (nx + 1) * dx;
        let hx = ey + (ny + 1) * dy;
        let st = hx + dy * nx;
        Layout {
            pos,
            par,
            ex,
            ey,
            hx,
            st,
            end: st + ny * nx,
        }
    }
}

/// Length (f64) of the `scratch` of [`spot_team`] for `geometry` (DESI's 17×11 stamps with
/// 7×7 coefficients: 712 values, 5.6 KB).
pub fn spot_team_scratch_len(geometry: &SpotGeometry) -> usize {
    Layout::new(geometry).end
}

/// The spot of fiber `ispec` at `wave` (Å) by one team: the result of
/// [`spot_at`](crate::psf::spot::spot_at) (same stamp, corner and errors, bit for bit).
///
/// # Parameters
/// - `tables`: the PSF tables.
/// - `scratch`: at least [`spot_team_scratch_len`] values (shared memory on the GPU).
/// - `stamp` (output): shape `(2·hsizey+1, 2·hsizex+1)` row-major; each element is written by
///   one lane (may be global memory). On error its contents are unspecified.
///
/// # Returns
/// The corner, or the error of `spot_at`; the same on every lane.
pub fn spot_team<T: Team>(
    team: &T,
    tables: &PsfTables,
    ispec: usize,
    wave: f64,
    scratch: Shared,
    stamp: Shared,
) -> Result<StampCorner, Status> {
    // The shape checks of psf_point.
    check_tables(tables, ispec)?;
    let geometry = tables.geometry;
    let ngh = geometry.ngh();
    let (nspec, ntrace, ncoeff) = (tables.nspec, tables.ntrace, tables.nparam_coeff);
    let layout = Layout::new(&geometry);
    let lanes = team.lanes();
    if lanes == 0 || stamp.len() != geometry.stamp_len() || scratch.len() < layout.end {
        return Err(Status::BadShape);
    }
    let (nx, ny) = (geometry.nx(), geometry.ny());
    let (dx, dy) = (geometry.ghdegx + 1, geometry.ghdegy + 1);
    let ww_x = normalized_wavelength(wave, tables.xtrace_domain.0, tables.xtrace_domain.1);
    let ww_y = normalized_wavelength(wave, tables.ytrace_domain.0, tables.ytrace_domain.1);
    let ww_p = normalized_wavelength(wave, tables.param_domain.0, tables.param_domain.1);

    // 1. X, Y, GHSIGX, GHSIGY and the GH-i-j (the rows exist: shapes checked above).
    team.each(|lane| {
        strided(lane, 2 + ngh + POS, lanes, |k| {
            let value = if k < 2 + ngh {
                coeff_row(tables.params, (k * nspec + ispec) * ncoeff, ncoeff)
                    .map_or(f64::NAN, |row| legendre_sum(ww_p, row))
            } else if k == 2 + ngh {
                coeff_row(tables.xtrace, ispec * ntrace, ntrace)
                    .map_or(f64::NAN, |row| legval(ww_x, row))
            } else {
                coeff_row(tables.ytrace, ispec * ntrace, ntrace)
                    .map_or(f64::NAN, |row| legval(ww_y, row))
            };
            let slot = if k < 2 + ngh {
                layout.par + k
            } else {
                layout.pos + (k - 2 - ngh)
            };
            scratch.set(slot, value);
        })
    });
    let (x, y) = (scratch.get(layout.pos), scratch.get(layout.pos + 1));
    let (sigma_x, sigma_y) = (scratch.get(layout.par), scratch.get(layout.par + 1));
    let delta_x = x - floor(x + 0.5);
    let delta_y = y - floor(y + 0.5);

    // 2. Status and corner (lane 0, psf_point then evaluate_spot order); pixel edges.
    team.each(|lane| {
        if lane == 0 {
            let code = point_status(&scratch, &layout, ngh).and_then(|()| {
                let positive_finite = |s: f64| s.is_finite() && s > 0.0;
                if !(positive_finite(sigma_x) && positive_finite(sigma_y)) {
                    return Err(Status::NonFinite);
                }
                let xc = corner(x, geometry.hsizex)?;
                let yc = corner(y, geometry.hsizey)?;
                scratch.set(1, f64::from(xc));
                scratch.set(2, f64::from(yc));
                Ok(())
            });
            scratch.set(0, f64::from(code.err().map_or(0, |s| s as u32)));
        }
        strided(lane, (nx + 1) + (ny + 1), lanes, |e| {
            let (m, half, delta, sigma, degree, base, stride) = if e <= nx {
                (
                    e,
                    geometry.hsizex,
                    delta_x,
                    sigma_x,
                    geometry.ghdegx,
                    layout.ex,
                    dx,
                )
            } else {
                let m = e - nx - 1;
                (
                    m,
                    geometry.hsizey,
                    delta_y,
                    sigma_y,
                    geometry.ghdegy,
                    layout.ey,
                    dy,
                )
            };
            let mut edge = [0.0f64; MAX_GH_DEGREE + 1];
            gh_edge(edge_u(m, half, delta, sigma), degree, &mut edge);
            for (i, &v) in edge.iter().take(degree + 1).enumerate() {
                scratch.set(base + m * stride + i, v);
            }
        });
    });
    let code = scratch.get(0) as u32;
    if code != 0 {
        return Err(Status::from_code(code));
    }
    let found = StampCorner {
        xc: scratch.get(1) as i32,
        yc: scratch.get(2) as i32,
    };
    // Basis value `i` of pixel `m` from the edges at `base` (stride `d`), as pixel_integrated_gh.
    let basis = |base: usize, d: usize, i: usize, m: usize| {
        let lo = scratch.get(base + m * d + i);
        let hi = scratch.get(base + (m + 1) * d + i);
        if i == 0 {
            0.5 * (hi - lo)
        } else {
            lo - hi
        }
    };

    // 3. Hx[j][ix] = Σ_i c_ij·Gx[i][ix] (i ascending from 0.0, as evaluate_spot).
    team.each(|lane| {
        strided(lane, dy * nx, lanes, |e| {
            let (j, ix) = (e / nx, e % nx);
            let mut h = 0.0;
            for i in 0..dx {
                let c = scratch.get(layout.par + 2 + j * dx + i);
                h += c * basis(layout.ex, dx, i, ix);
            }
            scratch.set(layout.hx + e, h);
        })
    });
    // 4. S[iy][ix] = Σ_j Gy[j][iy]·Hx[j][ix], clipped at 0 (NaN propagates).
    team.each(|lane| {
        strided(lane, ny * nx, lanes, |p| {
            let (iy, ix) = (p / nx, p % nx);
            let mut s = 0.0;
            for j in 0..dy {
                let g = basis(layout.ey, dy, j, iy);
                s += g * scratch.get(layout.hx + j * nx + ix);
            }
            if s < 0.0 {
                s = 0.0;
            }
            scratch.set(layout.st + p, s);
        })
    });
    // 5. The total: each row's sum (one lane per row) into the edges' slots, free since step
    //    4 (`layout.ex .. layout.st` holds at least `ny + 1` values), then the rows' sums.
    team.each(|lane| {
        strided(lane, ny, lanes, |iy| {
            let mut row_total = 0.0;
            for ix in 0..nx {
                row_total += scratch.get(layout.st + iy * nx + ix);
            }
            scratch.set(layout.ex + iy, row_total);
        })
    });
    team.each(|lane| {
        if lane == 0 {
            let mut total = 0.0;
            for iy in 0..ny {
                total += scratch.get(layout.ex + iy);
            }
            scratch.set(3, total);
        }
    });
    let total = scratch.get(3);
    if !(total.is_finite() && total > 0.0) {
        return Err(Status::NonFinite);
    }
    // 6. Normalized stamp.
    team.each(|lane| {
        strided(lane, ny * nx, lanes, |p| {
            stamp.set(p, scratch.get(layout.st + p) / total);
        })
    });
    Ok(found)
}

/// `NonFinite` when X, Y, GHSIGX, GHSIGY or a GH-i-j is not finite (psf_point's test).
fn point_status(scratch: &Shared, layout: &Layout, ngh: usize) -> Result<(), Status> {
    let finite = (0..POS).all(|k| scratch.get(layout.pos + k).is_finite())
        && (0..2 + ngh).all(|k| scratch.get(layout.par + k).is_finite());
    if finite {
        Ok(())
    } else {
        Err(Status::NonFinite)
    }
}
