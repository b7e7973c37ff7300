//! Outlier (cosmic-ray) rejection inside the extraction (docs/algorithm.md §4.11, issue 16):
//! the decisions, the same for every backend.
//!
//! The backend that solved a patch also tests it ([`PatchResult::outliers`]): every pixel
//! inside the stamp of a core unknown is compared with the patch's model
//! `m = Σ_q xflux_q · A_q` through the χ² term of chi2pix, `(p − m)² / (1/w + (psferr·m)²)`,
//! and those beyond `nsigma²` come back (on the GPU the test runs on the device, next to the
//! pixel statistics; a clean frame's patches bring back no pixel, and the host then has
//! nothing to do). Here, on the host, the outliers are grown by `grow` pixels, refused when a
//! patch's finds would exceed `max_fraction` of its tested weighted pixels (a source the PSF
//! mis-models must not be eaten), and added to the mask; the backend solves the touched
//! patches again without the masked pixels ([`FrameSolver::resolve`]) and tests them again,
//! at most `max_iterations` times; the backend finally counts the rejected pixels per core
//! bin ([`FrameSolver::rejected_bin_counts`]). The mask is each bundle's own, so the outcome
//! does not depend on which bundles a process extracts, nor on the backend beyond the last
//! bits of the solutions.

use super::PatchSite;
use crate::patch::{PatchPlan, PixelWindow};
pub use crate::solve::outliers::BIN_PIXEL_WEIGHT;
use crate::solve::{FrameSolver, PatchIssue, PatchResult, SolveError};
use rayon::prelude::*;
use std::collections::BTreeSet;

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

/// One bundle's patches for [`reject_bundles`]: its plans (every patch, off-CCD ones included)
/// and their results, one per plan in order.
pub(crate) struct BundleResults<'a> {
    /// The bundle's plans.
    pub plans: &'a [PatchPlan],
    /// One result per plan.
    pub results: Vec<PatchResult>,
}

/// One bundle's final results (one per plan) and its patches' rejections.
pub(crate) type BundleRejected = (Vec<PatchResult>, Vec<PatchRejection>);

/// Runs the rejection on the solved patches of `bundles` together: each pass grows the
/// outliers of every patch whose solution changed, adds them to its bundle's mask, and has
/// `solver` solve again (and test again) every patch whose window holds a newly masked pixel
/// of its bundle, with the bundle's whole mask. `weight_ok(p)` says whether CCD pixel `p` has weight (grown pixels without
/// weight are not rejected). Returns per bundle the final results (bitwise the given ones for
/// patches whose window holds no masked pixel) and one [`PatchRejection`] per patch solved
/// without some pixels.
///
/// The mask is each bundle's own (a patch's pad rows and neighbour columns are the core of
/// other patches of the bundle, whose tests find the outliers there; the windows of
/// neighbouring bundles may share an edge column, and a pixel masked for one bundle never
/// enters the other's solves), so the outcome does not depend on which bundles are rejected
/// together, nor on the number of processes.
///
/// # Errors
/// A failure of the backend as a whole.
pub(crate) fn reject_bundles(
    cfg: &RejectConfig,
    pad: usize,
    ncol: usize,
    bundles: Vec<BundleResults>,
    solver: &mut dyn FrameSolver,
    weight_ok: &(dyn Fn(u64) -> bool + Sync),
) -> Result<Vec<BundleRejected>, SolveError> {
    let mut plans: Vec<&PatchPlan> = Vec::new();
    let mut states: Vec<PatchState> = Vec::new();
    // The bundle (index into `bundles`) of each patch.
    let mut owner: Vec<usize> = Vec::new();
    let mut sizes = Vec::with_capacity(bundles.len());
    for (b, bundle) in bundles.into_iter().enumerate() {
        sizes.push(bundle.plans.len());
        for (plan, result) in bundle.plans.iter().zip(bundle.results) {
            states.push(PatchState::new(plan, result, cfg));
            plans.push(plan);
            owner.push(b);
        }
    }
    let mut masks: Vec<BTreeSet<u64>> = sizes.iter().map(|_| BTreeSet::new()).collect();
    let mut changed: Vec<bool> = states.iter().map(|s| s.testable).collect();
    for _ in 0..cfg.max_iterations {
        // The grown outliers of every patch whose solution changed, under its bundle's mask.
        let found: Vec<Vec<u64>> = states
            .par_iter_mut()
            .zip(plans.par_iter())
            .zip(changed.par_iter().zip(owner.par_iter()))
            .map(|((state, plan), (&changed, &b))| {
                if changed {
                    state.grow(plan, &masks[b], cfg.grow, ncol, weight_ok)
                } else {
                    Vec::new()
                }
            })
            .collect();
        let mut new: Vec<BTreeSet<u64>> = sizes.iter().map(|_| BTreeSet::new()).collect();
        for (pixels, &b) in found.into_iter().zip(&owner) {
            new[b].extend(pixels.into_iter().filter(|p| !masks[b].contains(p)));
        }
        if new.iter().all(BTreeSet::is_empty) {
            break;
        }
        for (mask, added) in masks.iter_mut().zip(&new) {
            mask.extend(added.iter().copied());
        }
        // Solve again every patch whose window holds a new pixel of its bundle.
        let touched: Vec<usize> = (0..states.len())
            .into_par_iter()
            .filter(|&i| {
                states[i].testable
                    && plans[i]
                        .window
                        .is_some_and(|w| window_holds(w, ncol, &new[owner[i]]))
            })
            .collect();
        if touched.is_empty() {
            break;
        }
        let lists: Vec<Vec<u64>> = masks.iter().map(|m| m.iter().copied().collect()).collect();
        let resolve_plans: Vec<PatchPlan> = touched.iter().map(|&i| plans[i].clone()).collect();
        let resolve_masks: Vec<&[u64]> = touched.iter().map(|&i| &lists[owner[i]][..]).collect();
        let solved = solver.resolve(&resolve_plans, &resolve_masks)?;
        if solved.len() != touched.len() {
            return Err(SolveError::Failed {
                backend: "host",
                reason: format!(
                    "{} patches solved again for the outlier rejection, {} asked",
                    solved.len(),
                    touched.len()
                ),
            });
        }
        let mut incoming: Vec<Option<PatchResult>> = states.iter().map(|_| None).collect();
        for (&i, result) in touched.iter().zip(solved) {
            incoming[i] = Some(result);
        }
        changed = states
            .par_iter_mut()
            .zip(incoming.into_par_iter())
            .zip(plans.par_iter().zip(owner.par_iter()))
            .map(|((state, result), (plan, &b))| {
                result.is_some_and(|r| state.accept(plan, r, &masks[b], ncol))
            })
            .collect();
        if !changed.iter().any(|&c| c) {
            break;
        }
    }
    // The per-bin counts of the patches solved without some pixels.
    let mut rejected: Vec<(usize, Vec<u64>)> = Vec::new();
    for (i, state) in states.iter().enumerate() {
        if state.resolves > 0 && plans[i].window.is_some() {
            rejected.push((i, state.masked.clone()));
        }
    }
    let counted: Vec<(PatchPlan, Vec<u64>)> = rejected
        .iter()
        .map(|(i, pixels)| (plans[*i].clone(), pixels.clone()))
        .collect();
    let counts = if counted.is_empty() {
        Vec::new()
    } else {
        solver.rejected_bin_counts(&counted)?
    };
    let mut rejections: Vec<Option<PatchRejection>> = (0..states.len()).map(|_| None).collect();
    for ((i, pixels), bin_counts) in rejected.into_iter().zip(counts) {
        let state = &states[i];
        rejections[i] = Some(PatchRejection {
            site: PatchSite::of(plans[i], pad),
            pixels,
            bin_counts,
            iterations: state.resolves,
            capped: state.capped,
        });
    }
    let mut out = Vec::with_capacity(sizes.len());
    let mut states = states.into_iter();
    let mut rejections = rejections.into_iter();
    for n in sizes {
        let results: Vec<PatchResult> = states.by_ref().take(n).map(|s| s.result).collect();
        let found: Vec<PatchRejection> = rejections.by_ref().take(n).flatten().collect();
        out.push((results, found));
    }
    Ok(out)
}

/// Checks that no two of `bundles` (each bundle's plans) have windows that share a CCD
/// pixel: the rejection's mask is then each bundle's own, whichever bundles are extracted
/// together (and a frame-wide mask in device memory is right for every bundle). The column
/// ranges of neighbouring bundles do overlap (traces curve: a bundle's windows span more
/// columns than any of its rows), so the windows of bundles whose ranges overlap are compared
/// pairwise.
///
/// # Errors
/// The first two windows of different bundles that overlap.
pub fn check_disjoint(bundles: &[&[PatchPlan]]) -> Result<(), String> {
    let mut spans: Vec<(i32, i32, usize)> = bundles
        .iter()
        .enumerate()
        .filter_map(|(i, plans)| {
            let windows = plans.iter().filter_map(|p| p.window);
            let lo = windows.clone().map(|w| w.col_min).min()?;
            let hi = windows.map(|w| w.col_max).max()?;
            Some((lo, hi, i))
        })
        .collect();
    spans.sort_unstable();
    let overlap = |a: PixelWindow, b: PixelWindow| {
        a.col_min < b.col_max
            && b.col_min < a.col_max
            && a.row_min < b.row_max
            && b.row_min < a.row_max
    };
    for (n, &(_, hi0, i)) in spans.iter().enumerate() {
        for &(lo1, _, j) in &spans[n + 1..] {
            if lo1 >= hi0 {
                break;
            }
            for p in bundles[i] {
                for q in bundles[j] {
                    if let (Some(a), Some(b)) = (p.window, q.window) {
                        if overlap(a, b) {
                            return Err(format!(
                                "bundles {} and {} share CCD pixels (patch {} {a:?}, patch {} \
                                 {b:?}): the outlier rejection's mask would leak from one to \
                                 the other",
                                p.bundle, q.bundle, p.patch, q.patch
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The pixels of `mask` in window `w`, ascending.
fn window_masked(w: PixelWindow, ncol: usize, mask: &BTreeSet<u64>) -> Vec<u64> {
    (w.row_min..w.row_max)
        .flat_map(|r| {
            let lo = (r as usize * ncol + w.col_min as usize) as u64;
            let hi = (r as usize * ncol + w.col_max as usize) as u64;
            mask.range(lo..hi).copied()
        })
        .collect()
}

/// The CCD rectangles where windows of two different bundles of `bundles` overlap (the edge
/// columns of neighbouring bundles, where traces curve): a pixel outside all of them lies in
/// the windows of one bundle at most.
pub fn shared_windows(bundles: &[&[PatchPlan]]) -> Vec<PixelWindow> {
    let spans: Vec<(i32, i32)> = bundles
        .iter()
        .map(|plans| {
            let windows = plans.iter().filter_map(|p| p.window);
            (
                windows.clone().map(|w| w.col_min).min().unwrap_or(0),
                windows.map(|w| w.col_max).max().unwrap_or(0),
            )
        })
        .collect();
    let mut shared = Vec::new();
    for i in 0..bundles.len() {
        for j in i + 1..bundles.len() {
            if spans[i].0 >= spans[j].1 || spans[j].0 >= spans[i].1 {
                continue;
            }
            for a in bundles[i].iter().filter_map(|p| p.window) {
                for b in bundles[j].iter().filter_map(|p| p.window) {
                    let w = PixelWindow {
                        col_min: a.col_min.max(b.col_min),
                        col_max: a.col_max.min(b.col_max),
                        row_min: a.row_min.max(b.row_min),
                        row_max: a.row_max.min(b.row_max),
                    };
                    if w.col_min < w.col_max && w.row_min < w.row_max {
                        shared.push(w);
                    }
                }
            }
        }
    }
    shared
}

/// Whether any of `pixels` lies in window `w`.
fn window_holds(w: PixelWindow, ncol: usize, pixels: &BTreeSet<u64>) -> bool {
    (w.row_min..w.row_max).any(|r| {
        let lo = (r as usize * ncol + w.col_min as usize) as u64;
        let hi = (r as usize * ncol + w.col_max as usize) as u64;
        pixels.range(lo..hi).next().is_some()
    })
}

/// One patch during the rejection.
struct PatchState {
    /// The current solution.
    result: PatchResult,
    /// Whether the patch is tested (solved, with outliers from its backend, a window).
    testable: bool,
    /// Pixels this patch's own tests found (grown), for the cap.
    found: usize,
    /// Masked pixels the current solution was solved without (ascending).
    masked: Vec<u64>,
    /// Re-solves done.
    resolves: u32,
    /// Whether the cap refused a pass of this patch.
    capped: bool,
    /// Largest number of pixels its tests may reject.
    cap: usize,
}

impl PatchState {
    fn new(plan: &PatchPlan, result: PatchResult, cfg: &RejectConfig) -> Self {
        let solved = !matches!(
            result.issue,
            Some(PatchIssue::Failed { .. }) | Some(PatchIssue::OffCcd)
        );
        let weighted = result.outliers.as_ref().map_or(0, |o| o.weighted);
        let testable = solved && plan.window.is_some() && result.outliers.is_some();
        Self {
            result,
            testable,
            found: 0,
            masked: Vec::new(),
            resolves: 0,
            capped: false,
            cap: (cfg.max_fraction * weighted as f64).floor() as usize,
        }
    }

    /// The outliers of the current solution (its backend's hits), each grown by `grow`
    /// pixels (pixels of the window with weight and not in `mask` only); none when the cap
    /// refuses them.
    fn grow(
        &mut self,
        plan: &PatchPlan,
        mask: &BTreeSet<u64>,
        grow: usize,
        ncol: usize,
        weight_ok: &(dyn Fn(u64) -> bool + Sync),
    ) -> Vec<u64> {
        let (Some(w), Some(outliers)) = (plan.window, self.result.outliers.as_ref()) else {
            return Vec::new();
        };
        if outliers.hits.is_empty() {
            return Vec::new();
        }
        let (width, height) = (
            (w.col_max - w.col_min) as usize,
            (w.row_max - w.row_min) as usize,
        );
        let g = grow as isize;
        let mut grown = BTreeSet::new();
        for &h in &outliers.hits {
            let (r, c) = (h as usize / width, h as usize % width);
            for dr in -g..=g {
                for dc in -g..=g {
                    let (rr, cc) = (r as isize + dr, c as isize + dc);
                    if rr < 0 || cc < 0 || rr >= height as isize || cc >= width as isize {
                        continue;
                    }
                    let (rr, cc) = (rr as usize, cc as usize);
                    let p = ((w.row_min as usize + rr) * ncol + w.col_min as usize + cc) as u64;
                    if !mask.contains(&p) && weight_ok(p) {
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

    /// Takes `solved`, the patch solved again without the pixels of `mask` in its window;
    /// false (the solution kept) when that solve failed.
    fn accept(
        &mut self,
        plan: &PatchPlan,
        mut solved: PatchResult,
        mask: &BTreeSet<u64>,
        ncol: usize,
    ) -> bool {
        let Some(w) = plan.window else {
            return false;
        };
        if matches!(solved.issue, Some(PatchIssue::Failed { .. })) {
            return false;
        }
        // A patch the backend solved only after a fallback keeps that report.
        if solved.issue.is_none() {
            solved.issue = self.result.issue.clone();
        }
        self.result = solved;
        self.masked = window_masked(w, ncol, mask);
        self.resolves += 1;
        true
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
