//! The frame pipeline, the same for every backend: the stamp corners and the patch plans on
//! the host while the backend takes the frame, the patches solved by the [`Backend`] in runs,
//! each bundle stitched as soon as its patches are back (with the [`FallbackPolicy`] for patches
//! the backend could not solve), the model image, and the finished frame.
//!
//! [`extract_frame`] stitches every bundle straight into the frame's rows; [`extract_bundles`]
//! makes one block per bundle, which [`assemble_frame`] puts together (the multi-process driver,
//! [`crate::parallel`], spreads the bundles over ranks that way). Both run the same per-bundle
//! code and the same element-wise finishing steps, so their frames are bitwise identical.

mod assemble;
mod ccd;
mod checks;
mod output;
pub mod provenance;
mod reject;
mod screen;

pub use assemble::{assemble_frame, bundle_share, BundleBlock, BundleSet, ModelBox};
use assemble::{finish_frame, BundleOutput, RowsFinished};
pub use ccd::{ccd_cols, ccd_rows, CcdData, EXTRACT_MASK_BITS};
pub(crate) use ccd::{trace_cols, trace_rows};
pub(crate) use checks::{check_compatible, check_on_ccd, check_traces_on_ccd};
pub use output::{check_frame_metadata, frame_data, FRAME_FLAVORS};
pub use reject::{
    check_disjoint, rejected_image, rejected_pixels, shared_windows, PatchRejection, RejectConfig,
    RejectSummary, BIN_PIXEL_WEIGHT, DEFAULT_REJECT_GROW, DEFAULT_REJECT_ITERATIONS,
    DEFAULT_REJECT_MAX_FRACTION, DEFAULT_REJECT_NSIGMA,
};
pub use screen::{
    Pixel, PixelLimits, ScreenCount, DEFAULT_SATURATION_ELECTRONS, MAX_PIXEL_IVAR,
    SATURATION_FACTOR,
};

use crate::job::{FailedPatchPolicy, FallbackPolicy, FrameJob};
use crate::patch::plan::plan_bundle;
use crate::patch::stitch::{FrameArrays, FrameRows};
use crate::patch::wave_medians::SortedColumns;
use crate::patch::{MaskRule, PaddedGrid, ParamsError, PatchPlan, WavelengthGrid};
use crate::psf::{PsfError, SpotTable};
use crate::solve::outliers::solve_patch_detecting;
use crate::solve::{Backend, BundleInputs, FrameSolver, PatchIssue, PatchResult, SolveError};
use crate::trace::Trace;
use rayon::prelude::*;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors that stop a frame extraction.
#[derive(Debug, Error)]
pub enum ExtractError {
    /// Bad decomposition parameters.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// PSF evaluation failed.
    #[error(transparent)]
    Psf(#[from] PsfError),
    /// The backend failed as a whole.
    #[error(transparent)]
    Solve(#[from] SolveError),
    /// Image and PSF disagree or the request does not fit them.
    #[error("{path}: {reason}")]
    Input {
        /// File at fault.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A patch the backend could not solve, under [`FallbackPolicy::Fail`], or a patch no
    /// backend could solve, under [`FailedPatchPolicy::Fail`].
    #[error("bundle {bundle} patch {patch} (spectra {ispec}.., bin {iwave}..) not solved on the {backend} backend: {reason}")]
    PatchFailed {
        /// Backend name.
        backend: &'static str,
        /// Bundle index.
        bundle: usize,
        /// Patch index within the bundle.
        patch: usize,
        /// First core spectrum.
        ispec: usize,
        /// First core output wavelength index.
        iwave: usize,
        /// Why the backend failed.
        reason: String,
    },
}

impl Extraction {
    /// The patches that could not be solved (their bins: ivar 0, MASK BAD2DFIT).
    pub fn failed_patches(&self) -> Vec<&PatchReport> {
        self.reports.iter().filter(|r| r.is_failed()).collect()
    }

    /// The patches off the CCD (their bins: ivar 0, MASK NODATA).
    pub fn off_ccd_patches(&self) -> Vec<&PatchReport> {
        self.reports.iter().filter(|r| r.is_off_ccd()).collect()
    }

    /// Bins with ivar 0 (each carries a MASK bit saying why).
    pub fn zero_ivar_bins(&self) -> usize {
        self.arrays.ivar.iter().filter(|&&v| v == 0.0).count()
    }

    /// What the outlier rejection did (all zero when it was off or found nothing).
    pub fn reject_summary(&self) -> RejectSummary {
        RejectSummary {
            pixels: rejected_pixels(&self.rejections).len(),
            patches: self.rejections.len(),
            capped: self.rejections.iter().filter(|r| r.capped).count(),
            bins: self
                .mask
                .iter()
                .filter(|&&m| m & crate::patch::stitch::COSMIC != 0)
                .count(),
        }
    }
}

impl ExtractError {
    /// Whether the request or its files are at fault (exit code 1) rather than the run
    /// (exit code 2): bad parameters, an image that does not fit its PSF, a PSF that cannot be
    /// evaluated.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            ExtractError::Input { .. }
                | ExtractError::Params(_)
                | ExtractError::Psf(_)
                | ExtractError::Solve(SolveError::Psf(_))
                | ExtractError::Solve(SolveError::Input { .. })
        )
    }
}

/// Which patch, and the core bins of the frame it fills: what a [`PatchReport`] or a
/// [`PatchRejection`] speaks of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PatchSite {
    /// Bundle index.
    pub bundle: usize,
    /// Patch index within the bundle.
    pub patch: usize,
    /// First core spectrum.
    pub ispec: usize,
    /// First core output wavelength index.
    pub iwave: usize,
    /// Core spectra of the patch (`ispec .. ispec + nspec`).
    pub nspec: usize,
    /// Output bins of the patch (`iwave .. iwave + nwave`).
    pub nwave: usize,
}

impl PatchSite {
    /// The core of `plan`, whose output bins start at [`PatchPlan::out_wave_min`]`(pad)`.
    pub fn of(plan: &PatchPlan, pad: usize) -> Self {
        Self {
            bundle: plan.bundle,
            patch: plan.patch,
            ispec: plan.ispec,
            iwave: plan.out_wave_min(pad),
            nspec: plan.nspp,
            nwave: plan.keep,
        }
    }
}

/// A reported per-patch problem.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PatchReport {
    /// The patch and its core bins.
    pub site: PatchSite,
    /// What happened.
    pub issue: PatchIssue,
}

impl PatchReport {
    /// Whether the patch could not be solved at all (its bins have ivar 0 and BAD2DFIT).
    pub fn is_failed(&self) -> bool {
        matches!(self.issue, PatchIssue::Failed { .. })
    }

    /// Whether the patch lies off the CCD (its bins have ivar 0 and NODATA).
    pub fn is_off_ccd(&self) -> bool {
        matches!(self.issue, PatchIssue::OffCcd)
    }
}

/// Wall time per stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageTimes {
    /// Spot evaluation.
    pub spots: Duration,
    /// Patch solves.
    pub solve: Duration,
    /// Stitching, model image and finalization.
    pub finalize: Duration,
    /// Finer stages of the backend (e.g. GPU kernels), in order.
    pub detail: Vec<(&'static str, Duration)>,
    /// The backend's bound on the frame's device memory ([`FrameSolver::device_peak_bytes`]).
    pub device_peak_bytes: Option<u64>,
}

/// A finished extraction.
#[derive(Clone, Debug)]
pub struct Extraction {
    /// The output grid.
    pub grid: WavelengthGrid,
    /// Frame arrays, flux and ivar per Angstrom.
    pub arrays: FrameArrays,
    /// desispec spectrum mask.
    pub mask: Vec<u32>,
    /// Per-patch problems.
    pub reports: Vec<PatchReport>,
    /// Pixels rejected as outliers, per patch that rejected any (empty without
    /// [`FrameJob::reject`]).
    pub rejections: Vec<PatchRejection>,
    /// Bins zeroed (ivar 0, BAD2DFIT) because an output was not finite, `row · nwave + bin`.
    pub nonfinite_bins: Vec<usize>,
    /// Model image `(nrow, ncol)`, when requested.
    pub model: Option<Vec<f64>>,
    /// Number of patches solved.
    pub npatch: usize,
    /// Stage timings.
    pub times: StageTimes,
}

/// Progress callback: (patches done, patches total).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Extracts the spectra `params.specmin .. +nspec` of the job: every bundle stitched straight
/// into the frame's rows, then the frame finished. The result is bitwise that of
/// [`extract_bundles`] over every bundle followed by [`assemble_frame`] (the multi-process path).
///
/// # Errors
/// As [`extract_bundles`].
pub fn extract_frame(
    job: &FrameJob,
    backend: &dyn Backend,
    progress: Progress,
    trace: &Trace,
) -> Result<Extraction, ExtractError> {
    let params = job.params;
    let all: Vec<usize> = (0..job.bundle_starts().len()).collect();
    // The frame's planes (140 MB for a full r frame) are allocated while the backend solves
    // its first run, not ahead of it: on the 16-core GPU hosts their allocation took ~2.5 ms
    // at the start of each frame of `selftest --gpu` (trace span `frame arrays`).
    let mut allocated: Option<FrameArrays> = None;
    let slot = &mut allocated;
    let rows = move || {
        // The borrow moved out of the closure (FnOnce): the rows may outlive its body.
        let slot = slot;
        let arrays = slot.insert(trace.span("frame arrays", || {
            FrameArrays::new(params.specmin, params.nspec, job.grid.nwave(), job.ndiag())
        }));
        arrays.row_blocks_mut(params.bundlesize)
    };
    // Each bundle's rows are finished (per Angstrom, non-finite bins zeroed) as soon as they
    // are stitched, mostly while the backend solves later bundles: only the whole-frame steps
    // are left for the end.
    let dwave = job.grid.bin_widths();
    let Solved {
        parts,
        mut times,
        wave_medians,
    } = solve_into(job, backend, &all, rows, Some(&dwave), progress, trace)?;
    let arrays = allocated.ok_or_else(|| SolveError::Failed {
        backend: "host",
        reason: "the frame's arrays were never allocated".into(),
    })?;
    let t0 = Instant::now();
    let extraction = trace.span("finish frame", || {
        let model_shape = job.want_model.then_some((job.image.ny, job.image.nx));
        let mut extraction = finish_frame(
            job.grid,
            arrays,
            parts,
            model_shape,
            job.params.mask_rule,
            RowsFinished::Yes { wave_medians },
        );
        times.finalize += t0.elapsed();
        extraction.times = times;
        extraction
    });
    Ok(extraction)
}

/// Extracts the bundles `bundles` (indices into `params.bundle_starts()`) of the job and
/// returns their finished row blocks; [`assemble_frame`] puts blocks of every bundle (from any
/// number of processes) together into the frame.
///
/// # Errors
/// A bundle index out of range, fibers off the CCD, a PSF that cannot be evaluated, a backend
/// failure, or (under [`FallbackPolicy::Fail`]) a patch the backend could not solve.
pub fn extract_bundles(
    job: &FrameJob,
    backend: &dyn Backend,
    bundles: &[usize],
    progress: Progress,
    trace: &Trace,
) -> Result<BundleSet, ExtractError> {
    let params = job.params;
    let starts = job.bundle_starts();
    check_bundles(bundles, starts.len())?;
    let spec_max = params.specmin + params.nspec;
    let mut arrays: Vec<FrameArrays> = bundles
        .iter()
        .map(|&b| {
            let nspec = params.bundlesize.min(spec_max - starts[b]);
            FrameArrays::new(starts[b], nspec, job.grid.nwave(), job.ndiag())
        })
        .collect();
    let rows: Vec<FrameRows> = arrays
        .iter_mut()
        .flat_map(|a| a.row_blocks_mut(params.bundlesize))
        .collect();
    let Solved { parts, times, .. } =
        solve_into(job, backend, bundles, move || rows, None, progress, trace)?;
    let dwave = job.grid.bin_widths();
    let blocks = arrays
        .into_iter()
        .zip(parts)
        .zip(bundles)
        .map(|((mut arrays, part), &bundle)| {
            arrays.zero_fully_masked();
            arrays.to_per_angstrom(&dwave);
            BundleBlock {
                bundle,
                arrays,
                reports: part.reports,
                rejections: part.rejections,
                model: part.model,
                npatch: part.npatch,
            }
        })
        .collect();
    Ok(BundleSet { blocks, times })
}

/// Refuses bundle indices beyond the frame's `nbundle`.
fn check_bundles(bundles: &[usize], nbundle: usize) -> Result<(), ExtractError> {
    match bundles.iter().find(|&&b| b >= nbundle) {
        Some(bad) => Err(ExtractError::Params(ParamsError::Invalid(format!(
            "bundle {bad} requested but the frame has {nbundle} bundles"
        )))),
        None => Ok(()),
    }
}

/// What [`solve_into`] returns.
struct Solved {
    /// Each bundle's reports, model box, patch count (and, finished, non-finite bins and
    /// per-fiber chi2pix medians).
    parts: Vec<BundleOutput>,
    /// Stage times.
    times: StageTimes,
    /// The per-wavelength chi2pix medians of the MASK rule over every row, when the rows were
    /// finished and cover the whole frame.
    wave_medians: Option<Vec<f64>>,
}

/// The frame pipeline proper: the bundles `bundles` (valid indices) solved by `backend` and
/// stitched into the rows that `rows` makes (one view per bundle, in the same order; made
/// and their pages mapped while the backend solves its first run), bundles stitched as soon
/// as their patches are back. Returns each bundle's reports, model box and patch count and the stage times.
/// With `finish` (the output grid's bin widths) each bundle's rows are finished
/// ([`FrameRows::finish_bins`]) right after its stitching and model box, and its output lists
/// its non-finite bins (with [`MaskRule::Main`], also the chi2pix medians: per fiber, and per
/// wavelength when the rows are the whole frame's); without it the rows are left as stitched
/// (flux per bin).
fn solve_into<'r>(
    job: &FrameJob,
    backend: &dyn Backend,
    bundles: &[usize],
    rows: impl FnOnce() -> Vec<FrameRows<'r>> + Send,
    finish: Option<&[f64]>,
    progress: Progress,
    trace: &Trace,
) -> Result<Solved, ExtractError> {
    let padded = job.padded_grid();
    let t_start = Instant::now();
    // The backend takes the frame (a GPU uploads the image and evaluates every spot) while the
    // host computes the stamp corners and plans the patches.
    let (solver, planned) = std::thread::scope(|scope| {
        let planning = scope.spawn(|| {
            let start = trace.now();
            let planned = plan_bundles(job, &padded, bundles);
            trace.record("plan", "host", start, trace.now().saturating_sub(start));
            planned
        });
        let solver = backend.begin_frame(job, trace);
        (solver, planning.join())
    });
    let planned = planned.map_err(|_| SolveError::Failed {
        backend: "host",
        reason: "the planning thread panicked".into(),
    })??;
    let mut solver = solver?;
    // The patches with a pixel window go to the backend, in bundle order; `first[i]` is the
    // index of bundle i's first one (and the end).
    let mut first = Vec::with_capacity(planned.len() + 1);
    let mut solvable = Vec::new();
    for bundle in &planned {
        first.push(solvable.len());
        solvable.extend(bundle.plans.iter().filter(|p| p.window.is_some()).cloned());
    }
    first.push(solvable.len());
    let corners: Vec<&SpotTable> = planned.iter().map(|b| &b.corners).collect();
    trace.span("start", || solver.start(solvable, &corners))?;
    let t_solve = Instant::now();

    // The per-wavelength medians need every row of the frame: gathered when the rows are
    // finished here (`extract_frame`, the whole frame's; `SortedColumns` gives no medians for
    // rows that do not cover it).
    let params = job.params;
    let wave_columns = (finish.is_some() && params.mask_rule == MaskRule::Main).then(|| {
        Mutex::new(SortedColumns::new(
            params.specmin,
            params.nspec,
            job.grid.nwave(),
        ))
    });
    let stitcher = Stitcher {
        job,
        backend,
        padded: &padded,
        finish,
        wave_columns,
        ccd_host: OnceLock::new(),
    };
    let total: usize = planned.iter().map(|b| b.plans.len()).sum();
    let mut results: Vec<Option<PatchResult>> = (0..first[planned.len()]).map(|_| None).collect();
    let mut parts = Vec::with_capacity(planned.len());
    let (mut stitched, mut done) = (0, 0);
    let mut stitch_time = Duration::ZERO;
    progress(0, total);
    let mut finished = false;
    // The rows are made and their pages mapped while the backend works on its first run (the
    // stitch would otherwise fault them in, on the critical path of the frame's last batch).
    let (mut rows, mut next) = std::thread::scope(|scope| {
        let prefault = scope.spawn(|| {
            let mut rows = rows();
            rows.par_iter_mut().for_each(FrameRows::prefault);
            rows
        });
        let first_run = solver.next_results();
        match prefault.join() {
            Ok(rows) => (rows, first_run),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    while !finished {
        let returned = match std::mem::replace(&mut next, Ok(None))? {
            Some((start, run)) => {
                let end = start + run.len();
                for (slot, result) in results[start..end].iter_mut().zip(run) {
                    *slot = Some(result);
                }
                end
            }
            None => {
                finished = true;
                results.len()
            }
        };
        // Every bundle whose patches have all come back, stitched in parallel.
        let ready = (stitched..planned.len())
            .take_while(|&b| first[b + 1] <= returned)
            .count();
        if ready > 0 {
            let t0 = Instant::now();
            let range = stitched..stitched + ready;
            let mut new_parts = stitcher.stitch(
                &planned[range.clone()],
                &mut rows[range.clone()],
                &mut results[first[range.start]..first[range.end]],
                &first[range.start..=range.end],
                &mut *solver,
                trace,
            )?;
            done += planned[range].iter().map(|b| b.plans.len()).sum::<usize>();
            parts.append(&mut new_parts);
            stitched += ready;
            stitch_time += t0.elapsed();
            progress(done, total);
        }
        if !finished {
            next = solver.next_results();
        }
    }
    let times = StageTimes {
        spots: t_solve - t_start,
        solve: t_solve.elapsed().saturating_sub(stitch_time),
        finalize: stitch_time,
        detail: solver.stage_times(),
        device_peak_bytes: solver.device_peak_bytes(),
    };
    let wave_medians = stitcher
        .wave_columns
        .and_then(|columns| columns.into_inner().ok())
        .and_then(|columns| {
            let medians = columns.medians();
            // Unmapped off the frame's critical path (9.3 MB for a full frame).
            rayon::spawn(move || drop(columns));
            medians
        });
    Ok(Solved {
        parts,
        times,
        wave_medians,
    })
}

/// The plans of one bundle with the corner-only spot table they were made from.
struct BundlePlan {
    /// Bundle index.
    bundle: usize,
    /// Stamp corners of the bundle's fibers on the padded grid.
    corners: SpotTable,
    /// Every patch of the bundle, off-CCD ones included.
    plans: Vec<PatchPlan>,
}

/// The stamp corners and the patch plans of `bundles` (host, bundles in parallel).
fn plan_bundles(
    job: &FrameJob,
    padded: &PaddedGrid,
    bundles: &[usize],
) -> Result<Vec<BundlePlan>, ExtractError> {
    let (params, psf) = (job.params, job.psf);
    let starts = params.bundle_starts();
    let (nrow, ncol) = (job.image.ny, job.image.nx);
    bundles
        .par_iter()
        .map(|&bundle| {
            let corners = psf.corners(starts[bundle], params.bundlesize, &padded.fullwave)?;
            check_on_ccd(psf, &corners, padded, ncol)?;
            let plans = plan_bundle(bundle, &corners, params, padded.grid.nwave(), nrow);
            Ok(BundlePlan {
                bundle,
                corners,
                plans,
            })
        })
        .collect()
}

/// A stitched bundle's patch reports and outlier rejections.
type Stitched = (Vec<PatchReport>, Vec<PatchRejection>);

/// What stitching patch results into bundle blocks needs.
struct Stitcher<'a> {
    job: &'a FrameJob<'a>,
    backend: &'a dyn Backend,
    padded: &'a PaddedGrid,
    /// The output bin widths when each bundle's rows are finished once stitched (`solve_into`).
    finish: Option<&'a [f64]>,
    /// The frame's chi2pix columns, sorted as finished rows come in (the per-wavelength
    /// medians of the MASK rule), when the rows are the whole frame's and are finished.
    wave_columns: Option<Mutex<SortedColumns>>,
    /// The host copy of the CCD in f64, made on the first CPU fallback.
    ccd_host: OnceLock<CcdData>,
}

impl Stitcher<'_> {
    /// Stitches `bundles` into their `rows` (bundles in parallel) from `results` (their
    /// solvable patches in order; bundle i's are `first[i] - first[0] .. first[i + 1] -
    /// first[0]`), then makes each bundle's model box (the spots from `solver`).
    fn stitch(
        &self,
        bundles: &[BundlePlan],
        rows: &mut [FrameRows],
        results: &mut [Option<PatchResult>],
        first: &[usize],
        solver: &mut dyn FrameSolver,
        trace: &Trace,
    ) -> Result<Vec<BundleOutput>, ExtractError> {
        let start = trace.now();
        self.fetch_device_ccd(results, &*solver)?;
        let mut per_bundle = Vec::with_capacity(bundles.len());
        let mut rest = results;
        for pair in first.windows(2) {
            let (mine, tail) = rest.split_at_mut(pair[1] - pair[0]);
            per_bundle.push(mine);
            rest = tail;
        }
        // Every patch's result (the fallback applied), bundles in parallel.
        let collected: Vec<Result<Vec<PatchResult>, ExtractError>> = bundles
            .par_iter()
            .zip(per_bundle)
            .map(|(bundle, results)| self.collect_bundle(bundle, results))
            .collect();
        let solved = collected.into_iter().collect::<Result<Vec<_>, _>>()?;
        // The outlier rejection of these bundles together (docs/algorithm.md §4.11).
        let (solved, rejections): (Vec<Vec<PatchResult>>, Vec<Vec<PatchRejection>>) =
            match self.job.reject.as_ref() {
                None => {
                    let none = bundles.iter().map(|_| Vec::new()).collect();
                    (solved, none)
                }
                Some(cfg) => {
                    let reject_start = trace.now();
                    let any_hits = solved
                        .iter()
                        .flatten()
                        .any(|r| r.outliers.as_ref().is_some_and(|o| !o.hits.is_empty()));
                    if any_hits {
                        self.fetch_reject_ccd(&*solver)?;
                    }
                    let weights = self.host_weights();
                    let weight_ok = |p: u64| weights.positive(p);
                    let input = bundles
                        .iter()
                        .zip(solved)
                        .map(|(bundle, results)| reject::BundleResults {
                            plans: &bundle.plans,
                            results,
                        })
                        .collect();
                    let out = reject::reject_bundles(
                        cfg,
                        self.job.params.pad(),
                        self.job.image.nx,
                        input,
                        solver,
                        &weight_ok,
                    );
                    trace.record(
                        "reject",
                        "host",
                        reject_start,
                        trace.now().saturating_sub(reject_start),
                    );
                    out?.into_iter().unzip()
                }
            };
        let stitched: Vec<Stitched> = bundles
            .par_iter()
            .zip(rows.par_iter_mut())
            .zip(solved.into_par_iter().zip(rejections))
            .map(|((bundle, rows), (results, rejections))| {
                (self.insert_bundle(bundle, rows, results), rejections)
            })
            .collect();
        trace.record("stitch", "host", start, trace.now().saturating_sub(start));
        let params = self.job.params;
        let mut parts = Vec::with_capacity(bundles.len());
        for ((bundle, rows), stitched) in bundles.iter().zip(rows.iter()).zip(stitched) {
            let (reports, rejections) = stitched;
            let model = if self.job.want_model {
                let spots = solver.spots(bundle.corners.ispec_min, params.bundlesize)?;
                let shape = (self.job.image.ny, self.job.image.nx);
                Some(trace.span("model image", || {
                    assemble::bundle_model(shape, &spots, &bundle.plans, rows, params.pad())
                }))
            } else {
                None
            };
            parts.push(BundleOutput {
                reports,
                rejections,
                model,
                npatch: bundle.plans.len(),
                nonfinite: Vec::new(),
                fiber_medians: None,
            });
        }
        if let Some(dwave) = self.finish {
            let start = trace.now();
            let nwave = dwave.len();
            let specmin = self.job.params.specmin;
            // With the per-fiber chi2pix medians of the MASK rule (finished rows: final values),
            // so that `finish frame` does not compute them after the device's last batch.
            let medians = self.job.params.mask_rule == MaskRule::Main;
            let finished: Vec<(Vec<usize>, Option<Vec<f64>>)> = rows
                .par_iter_mut()
                .map(|rows| {
                    let offset = (rows.first() - specmin) * nwave;
                    let local = rows.finish_bins(dwave);
                    let bins = local.into_iter().map(|i| offset + i).collect();
                    (bins, medians.then(|| rows.chi2pix_medians()))
                })
                .collect();
            for (part, (bins, medians)) in parts.iter_mut().zip(finished) {
                part.nonfinite = bins;
                part.fiber_medians = medians;
            }
            if let Some(columns) = &self.wave_columns {
                if let Ok(mut columns) = columns.lock() {
                    columns.absorb(rows);
                }
            }
            trace.record(
                "finish bundles",
                "host",
                start,
                trace.now().saturating_sub(start),
            );
        }
        Ok(parts)
    }

    /// For a job whose pixels are in device memory, the host copy of the screened CCD from
    /// `solver` ([`FrameSolver::host_ccd`]: the rare device-to-host copy of the image), the
    /// first time one of `results` is to be solved again on the CPU: the fallback has no host
    /// pixels of its own to convert.
    fn fetch_device_ccd(
        &self,
        results: &[Option<PatchResult>],
        solver: &dyn FrameSolver,
    ) -> Result<(), ExtractError> {
        let needed = self.job.device_pixels.is_some()
            && self.backend.can_fall_back()
            && self.job.fallback == FallbackPolicy::CpuAndReport
            && self.ccd_host.get().is_none()
            && results
                .iter()
                .any(|r| r.as_ref().is_none_or(|r| r.issue.is_some()));
        if needed {
            let ccd = solver.host_ccd()?.ok_or_else(|| SolveError::Failed {
                backend: self.backend.name(),
                reason: "the pixels are in device memory and the backend gave no host copy \
                         for the CPU fallback"
                    .into(),
            })?;
            // Only this (sequential) step sets it.
            let _ = self.ccd_host.set(ccd);
        }
        Ok(())
    }

    /// Whether each CCD pixel has weight, for the growth of the outliers
    /// (docs/algorithm.md §4.11): the pipeline's host copy of the CCD, or, read pixel by
    /// pixel, the job's preproc image under its pixel rule (the rule by which every backend
    /// converts or uploads it: the same weights).
    fn host_weights(&self) -> HostWeights<'_> {
        match self.ccd_host.get() {
            Some(ccd) => HostWeights::Ccd(ccd),
            None => HostWeights::Preproc(self.job.image, &self.job.pixel_limits),
        }
    }

    /// For a job whose pixels are in device memory (no preproc pixels on the host), the
    /// solver's host copy of the CCD, once, for the growth of the outliers.
    fn fetch_reject_ccd(&self, solver: &dyn FrameSolver) -> Result<(), ExtractError> {
        if self.job.device_pixels.is_none() || self.ccd_host.get().is_some() {
            return Ok(());
        }
        let ccd = solver.host_ccd()?.ok_or_else(|| SolveError::Failed {
            backend: self.backend.name(),
            reason: "the pixels are in device memory and the backend gave no host copy for \
                     the outlier rejection"
                .into(),
        })?;
        // Only this (sequential) step and `fetch_device_ccd` set it.
        let _ = self.ccd_host.set(ccd);
        Ok(())
    }

    /// One bundle's results, one per plan (`results`: its solvable patches in order), the
    /// [`FallbackPolicy`] and [`FailedPatchPolicy`] applied.
    fn collect_bundle(
        &self,
        bundle: &BundlePlan,
        results: &mut [Option<PatchResult>],
    ) -> Result<Vec<PatchResult>, ExtractError> {
        let pad = self.job.params.pad();
        let ndiag = self.job.ndiag();
        let mut host_spots: Option<SpotTable> = None;
        let mut results = results.iter_mut();
        let mut solved = Vec::with_capacity(bundle.plans.len());
        for plan in &bundle.plans {
            let result = match plan.window {
                None => PatchResult::zeros(plan.nspp, plan.keep, ndiag, PatchIssue::OffCcd),
                Some(_) => {
                    let result = results.next().and_then(Option::take);
                    match result {
                        Some(r) if r.issue.is_none() || !self.backend.can_fall_back() => r,
                        other => self.fall_back(bundle, plan, other, &mut host_spots)?,
                    }
                }
            };
            if let (Some(PatchIssue::Failed { reason }), FailedPatchPolicy::Fail) =
                (&result.issue, self.job.failed_patches)
            {
                return Err(ExtractError::PatchFailed {
                    backend: self.backend.name(),
                    bundle: bundle.bundle,
                    patch: plan.patch,
                    ispec: plan.ispec,
                    iwave: plan.out_wave_min(pad),
                    reason: reason.clone(),
                });
            }
            solved.push(result);
        }
        Ok(solved)
    }

    /// Stitches one bundle's final results (one per plan) into its `rows` and returns its
    /// reports.
    fn insert_bundle(
        &self,
        bundle: &BundlePlan,
        rows: &mut FrameRows,
        solved: Vec<PatchResult>,
    ) -> Vec<PatchReport> {
        let pad = self.job.params.pad();
        // The runs of patches with the same core spectra (a subbundle's) fill disjoint rows:
        // they are copied in parallel (a frame's last run holds only a few bundles, and one
        // thread per bundle made its stitch ~2 ms of the frame's tail).
        let mut results = solved.into_iter();
        let parts: Vec<_> = rows
            .reborrow()
            .split_among(&bundle.plans, |p| (p.ispec, p.nspp))
            .into_iter()
            .map(|(rows, plans)| (rows, plans, results.by_ref().take(plans.len()).collect()))
            .collect();
        parts
            .into_par_iter()
            .flat_map_iter(|(mut rows, plans, results): (_, _, Vec<PatchResult>)| {
                let mut reports = Vec::new();
                for (plan, result) in plans.iter().zip(results) {
                    rows.insert(plan, &result, pad);
                    if let Some(issue) = result.issue {
                        reports.push(PatchReport {
                            site: PatchSite::of(plan, pad),
                            issue,
                        });
                    }
                }
                reports
            })
            .collect()
    }

    /// A patch the backend did not solve (`result`: what it returned, if anything), under the
    /// job's [`FallbackPolicy`]: solved on the CPU path and reported, or the frame fails.
    fn fall_back(
        &self,
        bundle: &BundlePlan,
        plan: &PatchPlan,
        result: Option<PatchResult>,
        host_spots: &mut Option<SpotTable>,
    ) -> Result<PatchResult, ExtractError> {
        let (job, params) = (self.job, self.job.params);
        let reason = match result.and_then(|r| r.issue) {
            Some(PatchIssue::Failed { reason }) => reason,
            Some(other) => format!("{other:?}"),
            None => "no result".to_string(),
        };
        if job.fallback == FallbackPolicy::Fail {
            return Err(ExtractError::PatchFailed {
                backend: self.backend.name(),
                bundle: bundle.bundle,
                patch: plan.patch,
                ispec: plan.ispec,
                iwave: plan.out_wave_min(params.pad()),
                reason,
            });
        }
        let spots = match host_spots {
            Some(spots) => spots,
            None => host_spots.insert(job.psf.spots(
                bundle.corners.ispec_min,
                params.bundlesize,
                &self.padded.fullwave,
            )?),
        };
        let ccd = match self.ccd_host.get() {
            Some(ccd) => ccd,
            None if job.device_pixels.is_none() => self.ccd_host.get_or_init(|| {
                CcdData::from_preproc_rows(job.image, 0..job.image.ny, &job.pixel_limits)
            }),
            // `stitch` fetches the solver's copy first; reaching this is a bug.
            None => {
                return Err(ExtractError::Solve(SolveError::Failed {
                    backend: "host",
                    reason: "no host copy of the device pixels for the CPU fallback".into(),
                }))
            }
        };
        let inputs = BundleInputs {
            spots,
            plans: &bundle.plans,
            ccd: ccd.view(),
            params,
            ndiag: job.ndiag(),
        };
        let threshold = job.reject.map(|c| c.nsigma * c.nsigma);
        let mut fallback = solve_patch_detecting(&inputs, plan, threshold);
        if fallback.issue.is_none() {
            fallback.issue = Some(PatchIssue::CpuFallback { reason });
        }
        Ok(fallback)
    }
}

/// Where the outlier rejection reads whether a CCD pixel has weight ([`Stitcher::host_weights`]).
enum HostWeights<'a> {
    /// A host CCD.
    Ccd(&'a CcdData),
    /// The preproc image under the job's pixel rule, pixel by pixel.
    Preproc(&'a crate::io::PreprocImage, &'a PixelLimits),
}

impl HostWeights<'_> {
    /// Whether pixel `p` (`row · ncol + col`) has weight > 0 (false beyond the CCD).
    fn positive(&self, p: u64) -> bool {
        let p = p as usize;
        match self {
            HostWeights::Ccd(ccd) => ccd.weight.get(p).is_some_and(|&w| w > 0.0),
            HostWeights::Preproc(image, limits) => {
                match (image.image.get(p), image.ivar.get(p), image.mask.get(p)) {
                    (Some(&v), Some(&iv), Some(&m)) => limits.pixel(v, iv, m).1 > 0.0,
                    _ => false,
                }
            }
        }
    }
}
