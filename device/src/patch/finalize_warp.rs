//! Warp-cooperative pixel statistics (docs/algorithm.md §4.7, §4.8): the numerics of the
//! `pixel_rows_warp` and `pixel_core_warp` kernels, the lanes of a warp reading consecutive
//! addresses of a stamp row, a window row and a CCD row.
//!
//! - [`pixel_chi2_row_lane`]: one warp per (patch, window row). Lane `lane` of `lanes` owns the
//!   window columns `lane + lanes·t` (`t < MAX_COLS_PER_LANE`, then the next group of
//!   `lanes · MAX_COLS_PER_LANE` columns) and keeps their model in registers. The lanes find the
//!   unknowns whose stamp covers the row `lanes` at a time (lane `i` tests `q = chunk + i`, a
//!   warp vote gathers the answers), then, for each such `q` in ascending order (the same for
//!   every lane), read its stamp row at consecutive addresses. Each pixel adds the same
//!   products in the same order as [`pixel_chi2_row`](crate::patch::pixel_chi2_row): the
//!   window is bitwise the serial one.
//! - [`core_pixel_sums_lane`]: one warp per (patch, core spectrum, core bin). Lane `lane` sums
//!   the stamp pixels `e = e0 + lane + lanes·t` of the kept rows (consecutive lanes, consecutive
//!   stamp, window and weight addresses); the warp adds the lanes' [`CorePartial`]s (shuffles on
//!   the GPU) and [`CorePartial::finish`] gives what
//!   [`core_pixel_sums`](crate::patch::core_pixel_sums) gives, up to the order of the sums.
//!
//! Both replace one thread per window row / per core unknown walking whole stamps and rows:
//! neighbouring threads then read (and, for the rows, read-modify-wrote) addresses a window row
//! or a stamp apart, one 32-byte sector per thread per access.

use crate::patch::{core_pixel_result, CcdView, PatchShape, StampView};
use crate::team::Shared;
use crate::Status;

/// Window columns a lane keeps in registers per pass of [`pixel_chi2_row_lane`]: one pass
/// covers `lanes · MAX_COLS_PER_LANE` columns (128 for a warp; DESI's windows are ~60-70
/// columns wide), wider windows take more passes over the unknowns.
pub const MAX_COLS_PER_LANE: usize = 4;

/// Lane `lane` of `lanes` computing χ²_pix of row `r` of the kept window (CCD row
/// `shape.row_min + r`, columns `col_min..col_max`): the warp together writes what
/// [`pixel_chi2_row`](crate::patch::pixel_chi2_row) writes into `row_out` (`(width,)`,
/// `width = col_max − col_min`), bitwise, and returns the same [`Status`] from every lane.
/// Lane `lane` writes the columns `≡ lane (mod lanes)` only, so the lanes of a warp (and the
/// warps of other rows) write disjoint entries.
///
/// Model `m = Σ_q xflux[q]·A[pix, q]` (`q` ascending); `χ²_pix = (p − m)²·t` with
/// `t = 1/(1/w + (psferr·m + 1e-32)²)` where `w > 0`, else 0.
///
/// `ballot(chunk, hit)` must return the votes of the warp's lanes as a bit mask (bit `i` set
/// when lane `i` passed `hit = true`); `chunk` is the first unknown the lanes tested (for
/// emulations; the GPU ignores it). Every lane of a warp calls it the same number of times
/// with the same `chunk`s (every branch around it depends on the patch and the row only), so
/// a GPU warp implements it with `vote.sync.ballot`. `lanes` is at most 32.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn pixel_chi2_row_lane<B: FnMut(usize, bool) -> u32>(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    col_min: i32,
    col_max: i32,
    xflux: &[f64],
    psferr: f64,
    r: usize,
    lane: usize,
    lanes: usize,
    row_out: Shared,
    mut ballot: B,
) -> Status {
    let ns = shape.nspecpad;
    let (ny, nx) = (view.ny, view.nx);
    let n = shape.nunknown();
    if lane >= lanes
        || lanes > 32
        || col_min < 0
        || col_max < col_min
        || col_max as usize > ccd.ncol
    {
        return Status::BadShape;
    }
    let width = (col_max - col_min) as usize;
    if row_out.len() < width || xflux.len() < n || ns == 0 {
        return Status::BadShape;
    }
    let y = shape.row_min + r as i32;
    if y < 0 || y >= shape.row_max || y as usize >= ccd.nrow {
        return Status::BadShape;
    }
    let pix0 = y as usize * ccd.ncol + col_min as usize;
    let group = lanes * MAX_COLS_PER_LANE;
    let mut base = 0;
    while base < width {
        // Model of this lane's columns base + lane + lanes·t, accumulated as the serial
        // function does (0, then += f·stamp in q order).
        let mut model = [0.0; MAX_COLS_PER_LANE];
        // (s, k) of this lane's candidate q = chunk + lane, stepped by lanes without division.
        let (step_s, step_k) = (lanes % ns, lanes / ns);
        let (mut s_lane, mut k_lane) = (lane % ns, lane / ns);
        let mut chunk = 0;
        while chunk < n {
            let hit = chunk + lane < n && {
                let c = view.corner(s_lane, k_lane);
                y >= c.yc && y < c.yc + ny as i32
            };
            let mut votes = ballot(chunk, hit);
            while votes != 0 {
                let q = chunk + votes.trailing_zeros() as usize;
                votes &= votes - 1;
                let (s, k) = (q % ns, q / ns);
                let c = view.corner(s, k);
                if c.xc < col_min || c.xc + nx as i32 > col_max {
                    return Status::BadShape;
                }
                let f = xflux[q];
                let srow = &view.stamp(s, k)[(y - c.yc) as usize * nx..][..nx];
                // Stamp column of this lane's first column: i = base + lane + lanes·t − x0.
                let first = (base + lane) as i64 - (c.xc - col_min) as i64;
                for (t, m) in model.iter_mut().enumerate() {
                    let i = first + (lanes * t) as i64;
                    if i >= 0 && (i as usize) < nx {
                        *m += f * srow[i as usize];
                    }
                }
            }
            chunk += lanes;
            s_lane += step_s;
            k_lane += step_k;
            if s_lane >= ns {
                s_lane -= ns;
                k_lane += 1;
            }
        }
        for (t, &m) in model.iter().enumerate() {
            let col = base + lane + lanes * t;
            if col < width {
                let w = ccd.weight[pix0 + col];
                let value = if w > 0.0 {
                    let e = psferr * m + 1e-32;
                    let t = 1.0 / (1.0 / w + e * e);
                    let d = ccd.image[pix0 + col] - m;
                    d * d * t
                } else {
                    0.0
                };
                row_out.set(col, value);
            }
        }
        base += group;
    }
    Status::Ok
}

/// One lane's (or a whole warp's, once added) sums over the kept pixels of a core stamp: see
/// [`core_pixel_sums_lane`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CorePartial {
    /// `Σ A[pix]·χ²_pix` over pixels with weight.
    pub num: f64,
    /// `Σ A[pix]` over pixels with weight.
    pub den: f64,
    /// `Σ A[pix]` over pixels without weight.
    pub masked: f64,
}

impl core::ops::Add for CorePartial {
    type Output = CorePartial;

    /// The element-wise sum of two partials.
    #[inline(always)]
    fn add(self, other: CorePartial) -> CorePartial {
        CorePartial {
            num: self.num + other.num,
            den: self.den + other.den,
            masked: self.masked + other.masked,
        }
    }
}

impl CorePartial {
    /// `(chi2pix, pixmask_fraction)` of the whole stamp's sums (the rule of
    /// [`core_pixel_sums`](crate::patch::core_pixel_sums)).
    #[inline(always)]
    pub fn finish(self) -> (f64, f64) {
        core_pixel_result(self.num, self.den, self.masked)
    }
}

/// Lane `lane` of `lanes` summing the pixels `e = lane + lanes·t` (row-major stamp index,
/// counted from the first kept row) of the stamp of padded spectrum `s`, padded bin `k`, over
/// the kept rows of `shape`, against `window` (the χ²_pix window of [`pixel_chi2_row_lane`],
/// `(row_max − row_min, col_max − col_min)`) and the CCD weights. The sum of the partials of
/// all lanes, [`CorePartial::finish`]ed, equals
/// [`core_pixel_sums`](crate::patch::core_pixel_sums) up to the order of the sums.
///
/// The caller guarantees, as for `core_pixel_sums`, that the stamp's columns lie in
/// `col_min..col_max` and on the CCD and the kept rows on the CCD (the window's stage checks
/// them); `lanes >= 1`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn core_pixel_sums_lane(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    col_min: i32,
    col_max: i32,
    window: &[f64],
    s: usize,
    k: usize,
    lane: usize,
    lanes: usize,
) -> CorePartial {
    let (ny, nx) = (view.ny, view.nx);
    let width = (col_max - col_min) as usize;
    let c = view.corner(s, k);
    let st = view.stamp(s, k);
    let mut sums = CorePartial::default();
    let lo = if c.yc > shape.row_min {
        c.yc
    } else {
        shape.row_min
    };
    let hi = if c.yc + (ny as i32) < shape.row_max {
        c.yc + ny as i32
    } else {
        shape.row_max
    };
    if lo >= hi || nx == 0 || lanes == 0 {
        return sums;
    }
    // Stamp pixels e in [e_lo, e_hi) (whole kept rows), lane's (row, column) stepped by
    // (lanes / nx, lanes % nx) with one carry: no division per pixel.
    let e_lo = (lo - c.yc) as usize * nx;
    let e_hi = (hi - c.yc) as usize * nx;
    let (step_r, step_c) = (lanes / nx, lanes % nx);
    let mut e = e_lo + lane;
    let (mut sr, mut sc) = (e / nx, e % nx);
    // Window and CCD offsets of the stamp's pixel (0, 0) (the row may lie above the window:
    // offsets are only used for rows inside it).
    let wx = (c.xc - col_min) as usize;
    while e < e_hi {
        let row = c.yc as usize + sr;
        let wi = (row - shape.row_min as usize) * width + wx + sc;
        let pix = row * ccd.ncol + c.xc as usize + sc;
        let a = st[e];
        if ccd.weight[pix] > 0.0 {
            sums.num += a * window[wi];
            sums.den += a;
        } else {
            sums.masked += a;
        }
        e += lanes;
        sr += step_r;
        sc += step_c;
        if sc >= nx {
            sc -= nx;
            sr += 1;
        }
    }
    sums
}
