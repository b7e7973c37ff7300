//! The backend side of the outlier rejection (docs/algorithm.md §4.11) on the host: the CPU
//! backend's detection ([`detect`]), re-solve ([`resolve_patch`]) and per-bin counts
//! ([`bin_counts`]), with the per-pixel steps of [`desi_device::patch::reject`] that the GPU
//! kernels run too. The decisions (grow, cap, mask, passes) are the frame pipeline's
//! (`crate::extract`).

use super::cpu::solve_patch_with_xflux;
use super::{BundleInputs, PatchOutliers, PatchResult};
use crate::patch::{PatchPlan, PixelWindow};
use desi_device::patch::reject::{
    hit_words, rejected_bin_count, row_core_columns, row_filter, CoreUnknowns, HIT_WORD_BITS,
};
use desi_device::patch::{pixel_chi2_row, CcdView};
use desi_device::Status;

/// A rejected pixel counts for a bin (and sets its COSMIC bit) when it carries at least this
/// fraction of the bin's PSF weight.
pub const BIN_PIXEL_WEIGHT: f64 = 0.01;

/// The core unknowns of `plan`.
pub(crate) fn core_unknowns(plan: &PatchPlan, pad: usize) -> CoreUnknowns {
    CoreUnknowns {
        s_core: plan.ispec - plan.s0,
        nspp: plan.nspp,
        pad,
        keep: plan.keep,
    }
}

/// The outliers of a solved patch (deconvolved flux `xflux`, solved against `inputs.ccd`):
/// the pixels inside the stamp of a core unknown whose χ²_pix term exceeds `threshold`, and
/// the number of such pixels with weight. `None` when the patch has no window or shape; no
/// hits when the model of a row cannot be formed (the patch is then left as it is).
pub fn detect(
    inputs: &BundleInputs,
    plan: &PatchPlan,
    xflux: &[f64],
    threshold: f64,
) -> Option<PatchOutliers> {
    let params = inputs.params;
    let (w, shape) = (plan.window?, plan.shape(params.nwavetot())?);
    let ccd = inputs.ccd;
    let (width, height) = (
        (w.col_max - w.col_min) as usize,
        (w.row_max - w.row_min) as usize,
    );
    let view = plan.stamp_view(inputs.spots, params.pad());
    let core = core_unknowns(plan, params.pad());
    let mut words = vec![0u32; hit_words(width)];
    let mut chi2 = vec![0.0; width];
    let mut hits = Vec::new();
    let mut weighted = 0;
    let mut model_ok = true;
    for r in 0..height {
        row_core_columns(&view, &shape, w.col_min, w.col_max, core, r, &mut words).ok()?;
        // Rows with no tested pixel (the pad rows) need no model.
        if words.iter().all(|&v| v == 0) {
            continue;
        }
        let pix = (w.row_min as usize + r) * ccd.ncol + w.col_min as usize;
        let weight = &ccd.weight[pix..pix + width];
        if model_ok {
            let status = pixel_chi2_row(
                &view,
                &ccd,
                &shape,
                w.col_min,
                w.col_max,
                xflux,
                params.psferr,
                r,
                &mut chi2,
            );
            if status != Status::Ok {
                // Not expected for a solved patch: no outliers, the cap's base still counted.
                model_ok = false;
                hits.clear();
                chi2.fill(0.0);
            }
        }
        weighted += row_filter(&mut words, &chi2, weight, threshold).ok()? as usize;
        for (i, &word) in words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let c = i * HIT_WORD_BITS + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                hits.push((r * width + c) as u32);
            }
        }
    }
    Some(PatchOutliers { hits, weighted })
}

/// The outliers of a patch from per-row hit masks and counts, as the GPU's `reject_scan`
/// writes them ([`desi_device::patch::reject::row_outliers`] of every window row): `hits`
/// `(rows, words)` (bit `c` of row `r`: window column `c`), `weighted` `(rows,)`; the first
/// `height` rows of a window `width` columns wide are read.
pub fn outliers_from_rows(
    hits: &[u32],
    weighted: &[u32],
    words: usize,
    width: usize,
    height: usize,
) -> PatchOutliers {
    let rows = height.min(weighted.len()).min(hits.len() / words.max(1));
    let weighted = weighted[..rows].iter().map(|&n| n as usize).sum();
    let mut out = Vec::new();
    for r in 0..rows {
        for (w, &word) in hits[r * words..(r + 1) * words].iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let c = w * HIT_WORD_BITS + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if c < width {
                    out.push((r * width + c) as u32);
                }
            }
        }
    }
    PatchOutliers {
        hits: out,
        weighted,
    }
}

/// [`crate::solve::cpu::solve_patch`], and with `threshold` the patch's outliers
/// ([`detect`]) in [`PatchResult::outliers`].
pub fn solve_patch_detecting(
    inputs: &BundleInputs,
    plan: &PatchPlan,
    threshold: Option<f64>,
) -> PatchResult {
    let (mut result, xflux) = solve_patch_with_xflux(inputs, plan, threshold.is_some());
    if let (Some(threshold), Some(xflux)) = (threshold, xflux) {
        result.outliers = detect(inputs, plan, &xflux, threshold);
    }
    result
}

/// Solves `plan` again with the weights of the pixels of `mask` (CCD indices, ascending) in
/// its window set to 0, and detects its outliers under that mask.
pub fn resolve_patch(
    inputs: &BundleInputs,
    plan: &PatchPlan,
    mask: &[u64],
    threshold: f64,
) -> PatchResult {
    let Some(w) = plan.window else {
        return solve_patch_detecting(inputs, plan, Some(threshold));
    };
    let ncol = inputs.ccd.ncol;
    let local_mask: Vec<bool> = window_pixels(w, ncol)
        .map(|p| mask.binary_search(&p).is_ok())
        .collect();
    let masked = MaskedCcd::new(inputs.ccd, w, &local_mask);
    let inputs_masked = BundleInputs {
        ccd: masked.view(),
        ..*inputs
    };
    solve_patch_detecting(&inputs_masked, plan, Some(threshold))
}

/// Per core bin `(nspp, keep)` of `plan`, the rejected `pixels` (CCD indices, ascending) that
/// carry at least [`BIN_PIXEL_WEIGHT`] of the bin's PSF weight inside the window.
pub fn bin_counts(inputs: &BundleInputs, plan: &PatchPlan, pixels: &[u64]) -> Vec<u16> {
    let pad = inputs.params.pad();
    let mut counts = vec![0u16; plan.nspp * plan.keep];
    let Some(w) = plan.window else {
        return counts;
    };
    let view = plan.stamp_view(inputs.spots, pad);
    let s_core = plan.ispec - plan.s0;
    for c in 0..plan.nspp {
        for j in 0..plan.keep {
            let n = rejected_bin_count(
                &view,
                (w.row_min, w.row_max),
                w.col_min,
                w.col_max,
                inputs.ccd.ncol,
                s_core + c,
                pad + j,
                pixels,
                BIN_PIXEL_WEIGHT,
            );
            counts[c * plan.keep + j] = n.min(u32::from(u16::MAX)) as u16;
        }
    }
    counts
}

/// The linear CCD indices of a window, ascending.
pub(crate) fn window_pixels(w: PixelWindow, ncol: usize) -> impl Iterator<Item = u64> {
    (w.row_min..w.row_max).flat_map(move |r| {
        (w.col_min..w.col_max).map(move |c| (r as usize * ncol + c as usize) as u64)
    })
}

/// A CCD that reads as `ccd` inside one patch window, with some of its pixels' weights set to
/// 0, and as empty (weight 0) elsewhere: the re-solve of that patch reads only its window.
/// The planes are zero-initialized allocations of the rows up to the window's last, so only
/// the pages of the window's rows are ever touched.
struct MaskedCcd {
    image: Vec<f64>,
    weight: Vec<f64>,
    nrow: usize,
    ncol: usize,
}

impl MaskedCcd {
    fn new(ccd: CcdView, window: PixelWindow, rejected: &[bool]) -> Self {
        let ncol = ccd.ncol;
        let (r0, r1) = (window.row_min as usize, window.row_max as usize);
        let (c0, c1) = (window.col_min as usize, window.col_max as usize);
        let width = c1 - c0;
        let mut image = vec![0.0; r1 * ncol];
        let mut weight = vec![0.0; r1 * ncol];
        for r in r0..r1 {
            let span = r * ncol + c0..r * ncol + c1;
            image[span.clone()].copy_from_slice(&ccd.image[span.clone()]);
            let local = &rejected[(r - r0) * width..(r - r0 + 1) * width];
            for ((w, &src), &bad) in weight[span.clone()]
                .iter_mut()
                .zip(&ccd.weight[span])
                .zip(local)
            {
                *w = if bad { 0.0 } else { src };
            }
        }
        Self {
            image,
            weight,
            nrow: ccd.nrow,
            ncol,
        }
    }

    fn view(&self) -> CcdView<'_> {
        // Rows past the window's last are never read (`nrow` is the CCD's, for the checks).
        CcdView {
            image: &self.image,
            weight: &self.weight,
            nrow: self.nrow,
            ncol: self.ncol,
        }
    }
}
