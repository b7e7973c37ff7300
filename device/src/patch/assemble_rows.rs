//! The CPU backend's assembly of the normal equations (docs/algorithm.md §4.1): the same
//! entries as [`super::assemble_normal_equations`] (which the GPU's reference kernel and the
//! device tests use), computed for the CPU's vector units. Each unknown's weighted stamp
//! `w·S_q1` is formed once (the GPU's warp kernel keeps it in registers the same way), and every
//! band entry is a sum of row dot products `Σ (w·S_q1)·S_q2` with independent fused
//! accumulators, instead of a serial sum of `w·S_q1·S_q2`. The products are the same; only the
//! order of summation differs (entries agree to a few ulps; tests/patch_solve.rs checks the
//! patch outputs against the float64 reference).

use super::{max_i32, min_i32, shared_cols, shared_rows, stamps_overlap};
use super::{CcdView, PatchShape, StampView};
use crate::linalg::dense::dot;
use crate::psf::spot::MAX_STAMP_WIDTH;
use crate::Status;

/// Assembles `M = AᵀWA` (lower band, `(n, kd + 1)`), `rhs = AᵀWp` and `fluxweight = Aᵀw` of a
/// patch, as [`super::assemble_normal_equations`] (same arguments, same layout, same
/// [`Status::BadShape`] refusals, including a pair that overlaps beyond `kd`), by row dot
/// products over weighted stamps. [`Status::TooLarge`] for stamps beyond
/// [`MAX_STAMP_WIDTH`]² pixels.
pub fn assemble_normal_equations_rows(
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
    if band.len() < n * (kd + 1) || rhs.len() < n || fluxweight.len() < n {
        return Status::BadShape;
    }
    if shape.row_min < 0 || shape.row_max as usize > ccd.nrow {
        return Status::BadShape;
    }
    let mut ws_buf = [0.0f64; MAX_STAMP_WIDTH * MAX_STAMP_WIDTH];
    let Some(ws) = ws_buf.get_mut(..ny * nx) else {
        return Status::TooLarge;
    };
    let ncol = ccd.ncol;
    for q1 in 0..n {
        let (s1, k1) = (q1 % ns, q1 / ns);
        let c1 = view.corner(s1, k1);
        if c1.xc < 0 || (c1.xc as usize + nx) > ncol {
            return Status::BadShape;
        }
        let st1 = view.stamp(s1, k1);
        // Weighted stamp over the kept rows (other rows are never read below), with the
        // right-hand side and the flux weight.
        let row_lo = max_i32(c1.yc, shape.row_min);
        let row_hi = min_i32(c1.yc + ny as i32, shape.row_max);
        let (mut y_sum, mut w_sum) = (0.0, 0.0);
        let mut row = row_lo;
        while row < row_hi {
            let pix = row as usize * ncol + c1.xc as usize;
            let srow = (row - c1.yc) as usize * nx;
            let ws_row = &mut ws[srow..srow + nx];
            for ((o, &w), &s) in ws_row
                .iter_mut()
                .zip(&ccd.weight[pix..pix + nx])
                .zip(&st1[srow..srow + nx])
            {
                *o = w * s;
            }
            y_sum += dot(ws_row, &ccd.image[pix..pix + nx]);
            w_sum += ws_row.iter().sum::<f64>();
            row += 1;
        }
        rhs[q1] = y_sum;
        fluxweight[q1] = w_sum;
        // Band entries M[q2][q1] for q2 >= q1 (stored in row q2).
        let q2_end = (q1 + kd + 1).min(n);
        for q2 in q1..q2_end {
            let (s2, k2) = (q2 % ns, q2 / ns);
            let c2 = view.corner(s2, k2);
            let slot = q2 * (kd + 1) + (q1 + kd - q2);
            let (Some((rlo, rhi)), Some((col0, ncols))) =
                (shared_rows(c1, c2, ny, shape), shared_cols(c1, c2, nx))
            else {
                band[slot] = 0.0;
                continue;
            };
            let st2 = view.stamp(s2, k2);
            let off1 = (col0 - c1.xc) as usize;
            let off2 = (col0 - c2.xc) as usize;
            let mut sum = 0.0;
            let mut row = rlo;
            while row < rhi {
                let a = &ws[(row - c1.yc) as usize * nx + off1..][..ncols];
                let b = &st2[(row - c2.yc) as usize * nx + off2..][..ncols];
                sum += dot(a, b);
                row += 1;
            }
            band[slot] = sum;
        }
        // Any overlapping pair beyond the band would be silently lost: refuse.
        if q2_end < n {
            let c2 = view.corner(q2_end % ns, q2_end / ns);
            if stamps_overlap(c1, c2, ny, nx, shape) {
                return Status::BadShape;
            }
        }
    }
    Status::Ok
}
