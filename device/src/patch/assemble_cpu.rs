//! The CPU's whole-patch assembly of the normal equations (docs/algorithm.md §4.1): the
//! entries of [`assemble_unknown`](super::assemble_unknown) for every unknown, with the
//! products summed in vector lanes instead of one serial chain.
//!
//! For each unknown `q1`, `W = w·A_q1` (the stamp times the pixel weights, zero on rows outside
//! the kept window) is formed once, and the copy of `W` moved by `dx` columns (zero where the
//! move leaves the stamp) the first time a pair needs that offset (at most `2·nx − 1` copies
//! per `q1`, ~5 in DESI patches). An entry `M[q2][q1]` is then one contiguous dot product over
//! the shared rows, whole rows of `A_q2` against the same rows of the copy, the columns that
//! `A_q1` does not share multiplying zeros: two 4-wide fused accumulators (AVX2 on the
//! x86-64-v3 host target) where the one-thread-per-unknown body adds ~50 products one after
//! another in loops of a few columns.
//!
//! The products are those of [`assemble_unknown`](super::assemble_unknown) (`(w·a)·b`) and
//! zeros; only the order of the sums differs, so the entries agree to a few ulp per term
//! (checked in `device/tests/assemble_cpu.rs` against `assemble_unknown` and a dense `AᵀWA`),
//! and entries of stamps that share no kept pixel are exact zeros as there. The GPU's kernels
//! never call this module (they run `assemble_unknown` and
//! [`assemble_warp`](super::assemble_warp)).

use super::{assemble_unknown, CcdView, PatchShape, StampView};
use super::{max_i32, min_i32, shared_cols, shared_rows, stamps_overlap};
use crate::math::fma;
use crate::psf::spot::StampCorner;
use crate::team::Shared;
use crate::Status;

/// Largest stack buffer of moved copies of `W` (`(2·nx − 1)·ny·nx` values) of the fast path;
/// larger stamps fall back to [`assemble_unknown`] per unknown (DESI's 11 × 17 stamps take
/// 6,171).
pub const MAX_SHIFTED_STAMPS: usize = 8192;

/// Largest stamp (`ny·nx` values) of the fast path.
pub const MAX_STAMP: usize = 1024;

/// `M = AᵀWA`, `y = AᵀWp` and `fw = Aᵀw` of one patch, as
/// [`assemble_normal_equations`](super::assemble_normal_equations) documents them (that
/// function calls this one), with vector dot products (see the module
/// documentation).
///
/// Returns `BadShape` for the inputs `assemble_unknown` refuses (a short slice, rows off the
/// CCD, a stamp leaving the CCD in x, an overlapping pair beyond `kd`), after writing the
/// unknowns before the first offending one.
pub fn assemble_patch(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    kd: usize,
    band: &mut [f64],
    rhs: &mut [f64],
    fluxweight: &mut [f64],
) -> Status {
    let n = shape.nunknown();
    let ns = shape.nspecpad;
    let (ny, nx) = (view.ny, view.nx);
    if n == 0 {
        return Status::Ok;
    }
    let size = ny * nx;
    let ncopy = (2 * nx).saturating_sub(1);
    if nx == 0 || ny == 0 || ncopy * size > MAX_SHIFTED_STAMPS || size > MAX_STAMP {
        let (band, rhs, fluxweight) =
            (Shared::new(band), Shared::new(rhs), Shared::new(fluxweight));
        for q1 in 0..n {
            let status = assemble_unknown(view, ccd, shape, kd, q1, band, rhs, fluxweight);
            if status != Status::Ok {
                return status;
            }
        }
        return Status::Ok;
    }
    if band.len() < n * (kd + 1) || rhs.len() < n || fluxweight.len() < n {
        return Status::BadShape;
    }
    if shape.row_min < 0 || shape.row_max as usize > ccd.nrow {
        return Status::BadShape;
    }
    // Copy `dx + nx − 1` of W, rows of the kept window only; `built[copy]` is the q1 + 1 it
    // was built for.
    let mut shifted = [0.0f64; MAX_SHIFTED_STAMPS];
    let mut built = [0usize; MAX_STAMP];
    let mut w_stamp = [0.0f64; MAX_STAMP];
    let mut w_image = [0.0f64; MAX_STAMP];
    let (w_stamp, w_image) = (&mut w_stamp[..size], &mut w_image[..size]);
    let mid = nx - 1;
    let (mut s1, mut k1) = (0, 0);
    for q1 in 0..n {
        let c1 = view.corner(s1, k1);
        if c1.xc < 0 || (c1.xc as usize + nx) > ccd.ncol {
            return Status::BadShape;
        }
        let st1 = view.stamp(s1, k1);
        // W and W·p, zero outside the kept rows.
        w_stamp.fill(0.0);
        w_image.fill(0.0);
        let row_lo = max_i32(c1.yc, shape.row_min);
        let row_hi = min_i32(c1.yc + ny as i32, shape.row_max);
        let mut row = row_lo;
        while row < row_hi {
            let r = (row - c1.yc) as usize;
            let pix = row as usize * ccd.ncol + c1.xc as usize;
            let img = &ccd.image[pix..pix + nx];
            let wgt = &ccd.weight[pix..pix + nx];
            let st = &st1[r * nx..(r + 1) * nx];
            let ws = &mut w_stamp[r * nx..(r + 1) * nx];
            let wi = &mut w_image[r * nx..(r + 1) * nx];
            for i in 0..nx {
                ws[i] = wgt[i] * st[i];
                wi[i] = ws[i] * img[i];
            }
            row += 1;
        }
        fluxweight[q1] = lane_sum(w_stamp);
        rhs[q1] = lane_sum(w_image);
        let q2_end = min_usize(q1 + kd + 1, n);
        let (mut s2, mut k2) = (s1, k1);
        for q2 in q1..q2_end {
            let c2 = view.corner(s2, k2);
            let slot = q2 * (kd + 1) + (q1 + kd - q2);
            band[slot] = match (shared_rows(c1, c2, ny, shape), shared_cols(c1, c2, nx)) {
                (Some((rlo, rhi)), Some(_)) => {
                    // |dx| < nx: the columns overlap.
                    let copy = (mid as i32 + c2.xc - c1.xc) as usize;
                    if let Some(v) = narrow_entry(w_stamp, view, (s2, k2), c1, c2, (rlo, rhi)) {
                        v
                    } else {
                        let moved: &[f64] = if copy == mid {
                            w_stamp
                        } else {
                            let moved = &mut shifted[copy * size..(copy + 1) * size];
                            if built[copy] != q1 + 1 {
                                move_columns(w_stamp, moved, nx, copy, mid);
                                built[copy] = q1 + 1;
                            }
                            moved
                        };
                        let len = (rhi - rlo) as usize * nx;
                        let a = &moved[(rlo - c1.yc) as usize * nx..][..len];
                        let b = &view.stamp(s2, k2)[(rlo - c2.yc) as usize * nx..][..len];
                        lane_dot(a, b)
                    }
                }
                _ => 0.0,
            };
            s2 += 1;
            if s2 == ns {
                s2 = 0;
                k2 += 1;
            }
        }
        // Any overlapping pair beyond the band would be silently lost: refuse.
        if q2_end < n {
            let c2 = view.corner(q2_end % ns, q2_end / ns);
            if stamps_overlap(c1, c2, ny, nx, shape) {
                return Status::BadShape;
            }
        }
        s1 += 1;
        if s1 == ns {
            s1 = 0;
            k1 += 1;
        }
    }
    Status::Ok
}

/// `dst (r, j) = src (r, j + dx)` for `dx = copy − mid`, zero where `j + dx` leaves the row
/// (`src` and `dst` are `(ny, nx)`), element by element (a `memcpy` call per row costs more
/// than the row).
#[inline(always)]
fn move_columns(src: &[f64], dst: &mut [f64], nx: usize, copy: usize, mid: usize) {
    let shift = copy as isize - mid as isize;
    for (src, dst) in src.chunks_exact(nx).zip(dst.chunks_exact_mut(nx)) {
        for (j, d) in dst.iter_mut().enumerate() {
            let i = j as isize + shift;
            *d = if i >= 0 && (i as usize) < nx {
                src[i as usize]
            } else {
                0.0
            };
        }
    }
}

/// `M[q2][q1]` of a pair of stamps whose columns overlap by at most half a stamp (stamps of
/// neighbouring fibers) from `w_stamp` (`W = w·A_q1`, corner `c1`) and the stamp of `q2` =
/// (spectrum, bin) in `view` (corner `c2`) over the shared rows `rlo..rhi` and columns only ([`narrow_dot`]), or `None`
/// for the other pairs (the whole-row dot product of a moved copy of `W`). x86-64 only: the
/// other targets (the PTX, whose kernels never call this module) keep the moved copies.
#[cfg(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma"))]
#[inline(always)]
fn narrow_entry(
    w_stamp: &[f64],
    view: &StampView,
    (s2, k2): (usize, usize),
    c1: StampCorner,
    c2: StampCorner,
    (rlo, rhi): (i32, i32),
) -> Option<f64> {
    let nx = view.nx;
    let dx = c2.xc - c1.xc;
    let width = nx.checked_sub(dx.unsigned_abs() as usize)?;
    if 2 * width > nx + 1 || width > NARROW_MAX {
        return None;
    }
    let (a0, b0) = if dx > 0 {
        (dx as usize, 0)
    } else {
        (0, dx.unsigned_abs() as usize)
    };
    let a = w_stamp.get((rlo - c1.yc) as usize * nx + a0..)?;
    let b = view.stamp(s2, k2).get((rlo - c2.yc) as usize * nx + b0..)?;
    Some(narrow_dot(a, b, nx, (rhi - rlo) as usize, width))
}

/// See the x86-64 `narrow_entry`: `None` (every pair by moved copies) on the other targets.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma")))]
#[inline(always)]
fn narrow_entry(
    _w_stamp: &[f64],
    _view: &StampView,
    _q2: (usize, usize),
    _c1: StampCorner,
    _c2: StampCorner,
    _rows: (i32, i32),
) -> Option<f64> {
    None
}

/// Widest column overlap summed by [`narrow_dot`] (two 4-wide vectors per row).
#[cfg(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma"))]
const NARROW_MAX: usize = 8;

/// `Σ_r Σ_{c < width} x[r·nx + c]·y[r·nx + c]` over `rows` rows `nx` apart (`width <=
/// NARROW_MAX`, `width <= nx`): the shared columns of two stamps of neighbouring fibers,
/// without the zeros of the whole rows. Masked 4-wide loads of each row's columns (lanes past
/// `width` read as 0 and never touch memory); even and odd rows go into separate fused
/// accumulators, columns 0-3 and 4-7 too, summed at the end: the entries of
/// `assemble_unknown` to rounding (another order of the sums).
#[cfg(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma"))]
#[inline(always)]
fn narrow_dot(x: &[f64], y: &[f64], nx: usize, rows: usize, width: usize) -> f64 {
    use core::arch::x86_64::{
        _mm256_add_pd, _mm256_fmadd_pd, _mm256_maskload_pd, _mm256_set_epi64x, _mm256_setzero_pd,
        _mm256_storeu_pd,
    };
    let width = min_usize(width, min_usize(nx, NARROW_MAX));
    if rows == 0 || width == 0 {
        return 0.0;
    }
    // Every row read, `x[r·nx..r·nx + width]` for `r < rows`, lies in both slices.
    let last = (rows - 1) * nx + width;
    if x.len() < last || y.len() < last {
        return 0.0;
    }
    let lane = |l: usize| if l < width { -1i64 } else { 0 };
    let mut acc = [0.0f64; 4];
    // SAFETY: the target has AVX and FMA (the cfg above); a masked load reads only its enabled
    // lanes, `x[r·nx + l]` and `y[r·nx + l]` with `l < width`, inside both slices (checked
    // above: `(rows − 1)·nx + width <= len`); the store writes the 4 values of `acc`.
    unsafe {
        let lo_mask = _mm256_set_epi64x(lane(3), lane(2), lane(1), lane(0));
        let hi_mask = _mm256_set_epi64x(lane(7), lane(6), lane(5), lane(4));
        let (px, py) = (x.as_ptr(), y.as_ptr());
        let (mut a0, mut a1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let (mut b0, mut b1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let mut r = 0;
        while r + 2 <= rows {
            let (p0, p1) = (r * nx, (r + 1) * nx);
            a0 = _mm256_fmadd_pd(
                _mm256_maskload_pd(px.add(p0), lo_mask),
                _mm256_maskload_pd(py.add(p0), lo_mask),
                a0,
            );
            a1 = _mm256_fmadd_pd(
                _mm256_maskload_pd(px.add(p1), lo_mask),
                _mm256_maskload_pd(py.add(p1), lo_mask),
                a1,
            );
            if width > 4 {
                b0 = _mm256_fmadd_pd(
                    _mm256_maskload_pd(px.add(p0 + 4), hi_mask),
                    _mm256_maskload_pd(py.add(p0 + 4), hi_mask),
                    b0,
                );
                b1 = _mm256_fmadd_pd(
                    _mm256_maskload_pd(px.add(p1 + 4), hi_mask),
                    _mm256_maskload_pd(py.add(p1 + 4), hi_mask),
                    b1,
                );
            }
            r += 2;
        }
        if r < rows {
            let p0 = r * nx;
            a0 = _mm256_fmadd_pd(
                _mm256_maskload_pd(px.add(p0), lo_mask),
                _mm256_maskload_pd(py.add(p0), lo_mask),
                a0,
            );
            if width > 4 {
                b0 = _mm256_fmadd_pd(
                    _mm256_maskload_pd(px.add(p0 + 4), hi_mask),
                    _mm256_maskload_pd(py.add(p0 + 4), hi_mask),
                    b0,
                );
            }
        }
        let sum = _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(b0, b1));
        _mm256_storeu_pd(acc.as_mut_ptr(), sum);
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3])
}

/// `Σ x[i]` in four lanes (chunks of 4), the last `len mod 4` in order.
#[inline(always)]
fn lane_sum(x: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let chunks = x.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for t in 0..4 {
            acc[t] += c[t];
        }
    }
    // A scalar tail: a masked vector update of `acc` would stall the reduction's loads.
    let mut tail = 0.0;
    for v in rest {
        tail += v;
    }
    ((acc[0] + acc[2]) + (acc[1] + acc[3])) + tail
}

/// `Σ x[i]·y[i]` (equal lengths): eight fused accumulators (two 4-wide vectors) over chunks
/// of 8, one more chunk of 4 into the first four, and the last `len mod 4` in order.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma")))]
#[inline(always)]
fn lane_dot(x: &[f64], y: &[f64]) -> f64 {
    let len = min_usize(x.len(), y.len());
    let (x, y) = (&x[..len], &y[..len]);
    let mut acc = [0.0f64; 8];
    let xc = x.chunks_exact(8);
    let yc = y.chunks_exact(8);
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (u, v) in xc.zip(yc) {
        for t in 0..8 {
            acc[t] = fma(u[t], v[t], acc[t]);
        }
    }
    let (mut xr, mut yr) = (xr, yr);
    if xr.len() >= 4 {
        for t in 0..4 {
            acc[t] = fma(xr[t], yr[t], acc[t]);
        }
        (xr, yr) = (&xr[4..], &yr[4..]);
    }
    let mut tail = 0.0;
    for (u, v) in xr.iter().zip(yr) {
        tail = fma(*u, *v, tail);
    }
    (((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))) + tail
}

/// The x86-64 (AVX + FMA) body of `lane_dot`: the same eight accumulators in two 256-bit
/// registers, with the same products and sums in the same order (bitwise the portable
/// body), written with intrinsics because LLVM vectorized the portable loop 2 lanes wide.
#[cfg(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma"))]
#[inline(always)]
fn lane_dot(x: &[f64], y: &[f64]) -> f64 {
    use core::arch::x86_64::{
        _mm256_fmadd_pd, _mm256_loadu_pd, _mm256_setzero_pd, _mm256_storeu_pd,
    };
    let len = min_usize(x.len(), y.len());
    let (x, y) = (&x[..len], &y[..len]);
    let mut acc = [0.0f64; 8];
    let body = len / 8 * 8;
    let four = len - body >= 4;
    // SAFETY: the target has AVX and FMA (the cfg above); every 4-value load reads
    // `x[p..p + 4]`, `y[p..p + 4]` with `p + 4 <= body <= len` (or `p = body`, `p + 4 <= len`
    // when `four`), inside both slices; the stores write the 8 values of `acc`.
    unsafe {
        let (px, py) = (x.as_ptr(), y.as_ptr());
        let mut lo = _mm256_setzero_pd();
        let mut hi = _mm256_setzero_pd();
        let mut p = 0;
        while p < body {
            lo = _mm256_fmadd_pd(_mm256_loadu_pd(px.add(p)), _mm256_loadu_pd(py.add(p)), lo);
            hi = _mm256_fmadd_pd(
                _mm256_loadu_pd(px.add(p + 4)),
                _mm256_loadu_pd(py.add(p + 4)),
                hi,
            );
            p += 8;
        }
        if four {
            lo = _mm256_fmadd_pd(_mm256_loadu_pd(px.add(p)), _mm256_loadu_pd(py.add(p)), lo);
        }
        _mm256_storeu_pd(acc.as_mut_ptr(), lo);
        _mm256_storeu_pd(acc.as_mut_ptr().add(4), hi);
    }
    let rest = if four { body + 4 } else { body };
    lane_dot_finish(&acc, &x[rest..], &y[rest..])
}

/// The end of the x86-64 `lane_dot`: the last values in order, then the eight lanes summed
/// in pairs (as the portable body).
#[cfg(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma"))]
#[inline(always)]
fn lane_dot_finish(acc: &[f64; 8], xr: &[f64], yr: &[f64]) -> f64 {
    let mut tail = 0.0;
    for (u, v) in xr.iter().zip(yr) {
        tail = fma(*u, *v, tail);
    }
    (((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))) + tail
}

#[inline(always)]
fn min_usize(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}
