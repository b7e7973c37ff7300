//! Outlier (cosmic-ray) rejection inside the extraction (docs/algorithm.md §4.11, issue 16).
//!
//! After a patch is solved, every kept pixel of its window is compared with the patch's model
//! `m = Σ_q xflux_q · A_q` through the χ² term of chi2pix, `(p − m)² / (1/w + (psferr·m)²)`
//! (`desi_device::patch::pixel_chi2_row`, the same function the pixel statistics use). Pixels
//! beyond `nsigma²` are rejected with their neighbours within `grow` pixels, and the patch is
//! solved again with their weights set to 0, at most `max_iterations` times; a pass that would
//! reject more than `max_fraction` of the patch's weighted pixels is not applied (a source the
//! PSF mis-models must not be eaten). The decision is per patch and uses only that patch's
//! pixels and solution, so it is the same for every backend and bundle split: the frame
//! pipeline runs it on whatever the backend returned, with the CPU numerics for the re-solves.

use super::PatchSite;
use crate::patch::PatchPlan;
use crate::solve::cpu::solve_patch_keeping;
use crate::solve::{BundleInputs, PatchIssue, PatchResult};
use desi_device::patch::{pixel_chi2_row, CcdView};
use desi_device::Status;
use rayon::prelude::*;

/// Default rejection threshold in σ (docs/algorithm.md §4.11 gives the measurements).
pub const DEFAULT_REJECT_NSIGMA: f64 = 6.0;
/// Default number of reject/re-solve passes per patch.
pub const DEFAULT_REJECT_ITERATIONS: usize = 3;
/// Default neighbourhood radius (pixels, Chebyshev): 1 rejects the 3x3 box around an outlier.
pub const DEFAULT_REJECT_GROW: usize = 1;
/// Default cap on the fraction of a patch's weighted core pixels its tests may reject: a
/// cosmic running 600 pixels along a trace, grown to 3 columns, takes ~25% of them (with 10%,
/// the cap of desispec's fibermask MANYREJECTED, such tracks stayed in; docs/algorithm.md
/// §4.11).
pub const DEFAULT_REJECT_MAX_FRACTION: f64 = 0.30;
/// A rejected pixel counts for a bin (and sets its COSMIC bit) when it carries at least this
/// fraction of the bin's PSF weight.
pub const BIN_PIXEL_WEIGHT: f64 = 0.01;

/// How outliers are rejected ([`crate::job::FrameJob::reject`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RejectConfig {
    /// Threshold in σ of the chi2pix residual, `(p − m)²·t > nsigma²`.
    pub nsigma: f64,
    /// Most reject/re-solve passes per patch (>= 1).
    pub max_iterations: usize,
    /// Neighbourhood radius (pixels) rejected with each outlier.
    pub grow: usize,
    /// Largest fraction of a patch's weighted pixels that may be rejected.
    pub max_fraction: f64,
}

impl Default for RejectConfig {
    fn default() -> Self {
        Self {
            nsigma: DEFAULT_REJECT_NSIGMA,
            max_iterations: DEFAULT_REJECT_ITERATIONS,
            grow: DEFAULT_REJECT_GROW,
            max_fraction: DEFAULT_REJECT_MAX_FRACTION,
        }
    }
}

impl RejectConfig {
    /// Checks the values: `nsigma` finite and > 0, `max_iterations` >= 1, `grow` <= 5,
    /// `max_fraction` in (0, 1].
    ///
    /// # Errors
    /// A message naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.nsigma.is_finite() && self.nsigma > 0.0) {
            return Err(format!("reject threshold {} must be > 0", self.nsigma));
        }
        if self.max_iterations == 0 {
            return Err("reject iterations must be >= 1".into());
        }
        if self.grow > 5 {
            return Err(format!("reject grow {} must be <= 5", self.grow));
        }
        if !(self.max_fraction > 0.0 && self.max_fraction <= 1.0) {
            return Err(format!(
                "reject max fraction {} must lie in (0, 1]",
                self.max_fraction
            ));
        }
        Ok(())
    }
}

/// The pixels of one patch rejected as outliers and the core bins they touched.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PatchRejection {
    /// The patch and its core bins.
    pub site: PatchSite,
    /// Rejected CCD pixels, `row · ncol + col`, ascending.
    pub pixels: Vec<u64>,
    /// Per core bin `(nspec, nwave)`: rejected pixels carrying at least [`BIN_PIXEL_WEIGHT`] of
    /// the bin's PSF weight.
    pub bin_counts: Vec<u16>,
    /// Re-solves done.
    pub iterations: u32,
    /// Whether a pass was refused by the cap ([`RejectConfig::max_fraction`]).
    pub capped: bool,
}

/// Runs the rejection on the solved patches of one bundle (`results`, one per plan of
/// `inputs.plans`, in order; `inputs.ccd` the unmasked CCD): each pass tests every patch whose
/// solution changed against its model ([`detect`]), adds the outliers (grown) to the bundle's
/// mask, and solves again every patch whose window holds a newly masked pixel, with the whole
/// mask. Returns the final results (bitwise `results` for patches whose window holds no masked
/// pixel) and one [`PatchRejection`] per patch solved without some pixels.
///
/// The mask is the bundle's: a patch's pad rows and neighbour columns are the core of other
/// patches of the bundle, whose tests find the outliers there. Bundles never share pixels (the
/// gap between bundles is wider than a stamp), so the result does not depend on which bundles
/// a process extracts.
pub(crate) fn reject_bundle(
    cfg: &RejectConfig,
    inputs: &BundleInputs,
    results: Vec<PatchResult>,
) -> (Vec<PatchResult>, Vec<PatchRejection>) {
    let plans = inputs.plans;
    let threshold = cfg.nsigma * cfg.nsigma;
    let mut states: Vec<PatchState> = plans
        .iter()
        .zip(results)
        .map(|(plan, result)| PatchState::new(inputs, plan, result, cfg))
        .collect();
    let mut mask = std::collections::BTreeSet::<u64>::new();
    let mut changed: Vec<bool> = states.iter().map(PatchState::testable).collect();
    for _ in 0..cfg.max_iterations {
        // Outliers of every patch whose solution changed, under the current mask.
        let found: Vec<Vec<u64>> = states
            .par_iter_mut()
            .zip(plans.par_iter())
            .zip(changed.par_iter())
            .map(|((state, plan), &changed)| {
                if changed {
                    state.detect(inputs, plan, &mask, threshold, cfg.grow)
                } else {
                    Vec::new()
                }
            })
            .collect();
        let new: std::collections::BTreeSet<u64> = found
            .into_iter()
            .flatten()
            .filter(|p| !mask.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        mask.extend(new.iter().copied());
        // Solve again every patch whose window holds a new pixel.
        let ncol = inputs.ccd.ncol;
        changed = states
            .par_iter_mut()
            .zip(plans.par_iter())
            .map(|(state, plan)| {
                let touched =
                    state.testable() && plan.window.is_some_and(|w| window_holds(w, ncol, &new));
                touched && state.resolve(inputs, plan, &mask)
            })
            .collect();
        if !changed.iter().any(|&c| c) {
            break;
        }
    }
    let ncol = inputs.ccd.ncol;
    let mut rejections = Vec::new();
    let mut out = Vec::with_capacity(states.len());
    for (state, plan) in states.into_iter().zip(plans) {
        if let (true, Some(window)) = (state.resolves > 0, plan.window) {
            let pixels: Vec<u64> = window_pixels(window, ncol)
                .filter(|p| state.masked.contains(p))
                .collect();
            rejections.push(PatchRejection {
                site: PatchSite::of(plan, inputs.params.pad()),
                bin_counts: bin_counts(inputs, plan, &pixels),
                pixels,
                iterations: state.resolves,
                capped: state.capped,
            });
        }
        out.push(state.result);
    }
    (out, rejections)
}

/// The linear CCD indices of a window, ascending.
fn window_pixels(w: crate::patch::PixelWindow, ncol: usize) -> impl Iterator<Item = u64> {
    (w.row_min..w.row_max).flat_map(move |r| {
        (w.col_min..w.col_max).map(move |c| (r as usize * ncol + c as usize) as u64)
    })
}

/// Whether any of `pixels` lies in window `w`.
fn window_holds(
    w: crate::patch::PixelWindow,
    ncol: usize,
    pixels: &std::collections::BTreeSet<u64>,
) -> bool {
    (w.row_min..w.row_max).any(|r| {
        let lo = (r as usize * ncol + w.col_min as usize) as u64;
        let hi = (r as usize * ncol + w.col_max as usize) as u64;
        pixels.range(lo..hi).next().is_some()
    })
}

/// One patch during the rejection of its bundle.
struct PatchState {
    /// The current solution.
    result: PatchResult,
    /// Window-local: inside a core unknown's stamp ([`core_footprint`]); empty when the patch
    /// is not tested (not solved, or no deconvolved flux).
    eligible: Vec<bool>,
    /// Pixels this patch's own tests found (grown), for the cap.
    found: usize,
    /// Masked pixels the current solution was solved without.
    masked: std::collections::BTreeSet<u64>,
    /// Re-solves done.
    resolves: u32,
    /// Whether the cap refused a pass of this patch.
    capped: bool,
    /// Largest number of pixels its tests may reject.
    cap: usize,
}

impl PatchState {
    fn new(
        inputs: &BundleInputs,
        plan: &PatchPlan,
        result: PatchResult,
        cfg: &RejectConfig,
    ) -> Self {
        let nwavetot = inputs.params.nwavetot();
        let solved = !matches!(
            result.issue,
            Some(PatchIssue::Failed { .. }) | Some(PatchIssue::OffCcd)
        );
        let shape = plan.shape(nwavetot);
        let usable = solved && shape.is_some_and(|s| result.xflux.len() == s.nunknown());
        let (eligible, weighted) = match (usable, plan.window) {
            (true, Some(w)) => {
                let width = (w.col_max - w.col_min) as usize;
                let eligible = core_footprint(inputs, plan, width);
                let ccd = inputs.ccd;
                let weighted = window_pixels(w, ccd.ncol)
                    .zip(&eligible)
                    .filter(|(p, &e)| e && ccd.weight[*p as usize] > 0.0)
                    .count();
                (eligible, weighted)
            }
            _ => (Vec::new(), 0),
        };
        Self {
            result,
            eligible,
            found: 0,
            masked: Default::default(),
            resolves: 0,
            capped: false,
            cap: (cfg.max_fraction * weighted as f64).floor() as usize,
        }
    }

    fn testable(&self) -> bool {
        !self.eligible.is_empty()
    }

    /// The outliers of the current solution among the eligible pixels not in `mask`, each
    /// grown by `grow` pixels (weighted pixels of the window only); none when the cap refuses
    /// them.
    fn detect(
        &mut self,
        inputs: &BundleInputs,
        plan: &PatchPlan,
        mask: &std::collections::BTreeSet<u64>,
        threshold: f64,
        grow: usize,
    ) -> Vec<u64> {
        let params = inputs.params;
        let (Some(w), Some(shape)) = (plan.window, plan.shape(params.nwavetot())) else {
            return Vec::new();
        };
        let ccd = inputs.ccd;
        let ncol = ccd.ncol;
        let (width, height) = (
            (w.col_max - w.col_min) as usize,
            (w.row_max - w.row_min) as usize,
        );
        let local_mask: Vec<bool> = window_pixels(w, ncol).map(|p| mask.contains(&p)).collect();
        // The CCD as this patch's solution saw it (copied only when some pixel is masked).
        let masked = local_mask
            .iter()
            .any(|&m| m)
            .then(|| MaskedCcd::new(ccd, w, &local_mask));
        let view_ccd = masked.as_ref().map_or(ccd, MaskedCcd::view);
        let view = plan.stamp_view(inputs.spots, params.pad());
        let mut chi2 = vec![0.0; width];
        let mut hits = Vec::new();
        for r in 0..height {
            // Rows with no tested pixel (the pad rows) need no model.
            if !self.eligible[r * width..(r + 1) * width].iter().any(|&e| e) {
                continue;
            }
            let status = pixel_chi2_row(
                &view,
                &view_ccd,
                &shape,
                w.col_min,
                w.col_max,
                &self.result.xflux,
                params.psferr,
                r,
                &mut chi2,
            );
            if status != Status::Ok {
                // Not expected for a solved patch: leave it as it is.
                return Vec::new();
            }
            hits.extend(
                (0..width)
                    .filter(|&c| {
                        let i = r * width + c;
                        chi2[c] > threshold && self.eligible[i] && !local_mask[i]
                    })
                    .map(|c| (r, c)),
            );
        }
        let g = grow as isize;
        let mut grown = std::collections::BTreeSet::new();
        for (r, c) in hits {
            for dr in -g..=g {
                for dc in -g..=g {
                    let (rr, cc) = (r as isize + dr, c as isize + dc);
                    if rr < 0 || cc < 0 || rr >= height as isize || cc >= width as isize {
                        continue;
                    }
                    let (rr, cc) = (rr as usize, cc as usize);
                    let p = ((w.row_min as usize + rr) * ncol + w.col_min as usize + cc) as u64;
                    if !local_mask[rr * width + cc] && ccd.weight[p as usize] > 0.0 {
                        grown.insert(p);
                    }
                }
            }
        }
        if self.found + grown.len() > self.cap {
            self.capped = true;
            return Vec::new();
        }
        self.found += grown.len();
        grown.into_iter().collect()
    }

    /// Solves the patch again without the pixels of `mask` in its window; false (the solution
    /// kept) when that solve fails.
    fn resolve(
        &mut self,
        inputs: &BundleInputs,
        plan: &PatchPlan,
        mask: &std::collections::BTreeSet<u64>,
    ) -> bool {
        let Some(w) = plan.window else {
            return false;
        };
        let ncol = inputs.ccd.ncol;
        let local_mask: Vec<bool> = window_pixels(w, ncol).map(|p| mask.contains(&p)).collect();
        let masked = MaskedCcd::new(inputs.ccd, w, &local_mask);
        let inputs_masked = BundleInputs {
            ccd: masked.view(),
            ..*inputs
        };
        let mut solved = solve_patch_keeping(&inputs_masked, plan, true);
        if matches!(solved.issue, Some(PatchIssue::Failed { .. })) {
            return false;
        }
        // A patch the backend solved only after a fallback keeps that report.
        if solved.issue.is_none() {
            solved.issue = self.result.issue.clone();
        }
        self.result = solved;
        self.masked = window_pixels(w, ncol)
            .filter(|p| mask.contains(p))
            .collect();
        self.resolves += 1;
        true
    }
}

/// The window pixels (window-local, rows of `width`) inside the stamp of a core unknown of
/// `plan`: the only ones tested. The pad rows and the neighbour fibers' columns also see light
/// of unknowns outside the patch (the wings of bins beyond the pad, of fibers beyond the
/// neighbours), which the patch's model lacks: a bright line there leaves residuals that are
/// no outliers. Each pixel is a core pixel of some patch, whose own test covers it.
fn core_footprint(inputs: &BundleInputs, plan: &PatchPlan, width: usize) -> Vec<bool> {
    let pad = inputs.params.pad();
    let view = plan.stamp_view(inputs.spots, pad);
    let Some(window) = plan.window else {
        return Vec::new();
    };
    let height = (window.row_max - window.row_min) as usize;
    let mut inside = vec![false; width * height];
    let s_core = plan.ispec - plan.s0;
    for s in s_core..s_core + plan.nspp {
        for k in pad..pad + plan.keep {
            let corner = view.corner(s, k);
            for y in 0..view.ny as i32 {
                let row = corner.yc + y;
                if row < window.row_min || row >= window.row_max {
                    continue;
                }
                for x in 0..view.nx as i32 {
                    let col = corner.xc + x;
                    if col >= window.col_min && col < window.col_max {
                        let local = (row - window.row_min) as usize * width
                            + (col - window.col_min) as usize;
                        inside[local] = true;
                    }
                }
            }
        }
    }
    inside
}

/// Per core bin of `plan`, the masked `pixels` (CCD indices) that carry at least
/// [`BIN_PIXEL_WEIGHT`] of the bin's PSF weight inside the window.
fn bin_counts(inputs: &BundleInputs, plan: &PatchPlan, pixels: &[u64]) -> Vec<u16> {
    let pad = inputs.params.pad();
    let view = plan.stamp_view(inputs.spots, pad);
    let ncol = inputs.ccd.ncol;
    let mut counts = vec![0u16; plan.nspp * plan.keep];
    let Some(window) = plan.window else {
        return counts;
    };
    let s_core = plan.ispec - plan.s0;
    for c in 0..plan.nspp {
        for j in 0..plan.keep {
            let (s, k) = (s_core + c, pad + j);
            let corner = view.corner(s, k);
            let stamp = view.stamp(s, k);
            let mut total = 0.0;
            let mut hits = Vec::new();
            for y in 0..view.ny {
                let row = corner.yc + y as i32;
                if row < window.row_min || row >= window.row_max {
                    continue;
                }
                for x in 0..view.nx {
                    let col = corner.xc + x as i32;
                    if col < window.col_min || col >= window.col_max {
                        continue;
                    }
                    let v = stamp[y * view.nx + x];
                    total += v;
                    let p = (row as usize * ncol + col as usize) as u64;
                    if pixels.binary_search(&p).is_ok() {
                        hits.push(v);
                    }
                }
            }
            let n = hits
                .iter()
                .filter(|&&v| total > 0.0 && v >= BIN_PIXEL_WEIGHT * total)
                .count();
            counts[c * plan.keep + j] = n.min(u16::MAX as usize) as u16;
        }
    }
    counts
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
    fn new(ccd: CcdView, window: crate::patch::PixelWindow, rejected: &[bool]) -> Self {
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

/// A rejection summary of a frame (header cards, logs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectSummary {
    /// Distinct CCD pixels rejected.
    pub pixels: usize,
    /// Patches with rejected pixels.
    pub patches: usize,
    /// Patches where the cap stopped a pass.
    pub capped: usize,
    /// Bins with the COSMIC bit.
    pub bins: usize,
}

/// Distinct rejected pixels of `rejections` (sorted).
pub fn rejected_pixels(rejections: &[PatchRejection]) -> Vec<u64> {
    let mut all: Vec<u64> = rejections
        .iter()
        .flat_map(|r| r.pixels.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The `(nrow, ncol)` image of the rejected pixels: 1 where a patch rejected the pixel.
pub fn rejected_image(rejections: &[PatchRejection], nrow: usize, ncol: usize) -> Vec<u8> {
    let mut image = vec![0u8; nrow * ncol];
    for p in rejected_pixels(rejections) {
        if let Some(v) = image.get_mut(p as usize) {
            *v = 1;
        }
    }
    image
}
