//! The CPU backend: patches of a bundle in parallel with rayon, each solved by the shared
//! `desi_device` numerics. Results do not depend on the thread count (patches are independent
//! and each is computed sequentially).

use super::outliers::{bin_counts, resolve_patch, solve_patch_detecting};
use super::{Backend, BundleInputs, FrameSolver, PatchIssue, PatchResult, SolveError};
use crate::extract::{trace_cols, trace_rows, CcdData};
use crate::job::FrameJob;
use crate::patch::{PaddedGrid, PatchPlan, PixelWindow};
use crate::psf::SpotTable;
use crate::trace::Trace;
use desi_device::linalg::{banded, banded_cpu, jacobi, tridiagonal};
use desi_device::patch::{
    apply_resolution, assemble_normal_equations, pixel_statistics, regularize,
    resolution_diagonals, CoreRange, PatchShape,
};
use desi_device::Status;
use rayon::prelude::*;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Ridge used when a factorization fails with `regularize = 0` (gpu_specter's retry value).
pub const RETRY_REGULARIZE: f64 = 1e-4;

/// Condition number of a covariance block above which the CPU computes `C_bb^(-1/2)` by
/// one-sided Jacobi instead of Householder + QL: QL's error is about `ε·κ` relative (a block
/// with a bin that lost most of its pixels to the outlier rejection reaches κ ~ 1e8, 5e-9 in
/// R), Jacobi's ~1e-13 at any κ (the GPU's method). Up to 5e3 QL stays within 1e-12 of the
/// float64 reference on real blocks (tests/inverse_sqrt_blocks.rs); between 5e3 and 1e4 it
/// reached 1.5e-12 (~7ε·κ). Sending those blocks to Jacobi as well (threshold 5e3) made a
/// 25 x 251 bundle at 6000-6200 A take 0.24 s instead of 0.16 s on one thread.
pub const QL_MAX_CONDITION: f64 = 1e4;

/// Length of the `work` of [`inverse_sqrt_block`].
pub fn inverse_sqrt_block_work_len(n: usize) -> usize {
    inverse_sqrt_blocks_work_len(n, 1)
}

/// `C^(-1/2)` of one covariance block as the CPU backend computes it: Householder + QL, and
/// one-sided Jacobi where the block's condition number exceeds [`QL_MAX_CONDITION`] (see
/// there); `work` holds [`inverse_sqrt_block_work_len`]`(n)` values. [`inverse_sqrt_blocks`]
/// of this one block.
pub fn inverse_sqrt_block(block: &[f64], n: usize, out: &mut [f64], work: &mut [f64]) -> Status {
    let mut status = [Status::Ok];
    let shape = inverse_sqrt_blocks(block, n, out, &mut status, work);
    if shape != Status::Ok {
        return shape;
    }
    status[0]
}

/// Length of the `work` of [`inverse_sqrt_blocks`] for `count` blocks of `(n, n)` (0 if that
/// overflows).
pub fn inverse_sqrt_blocks_work_len(n: usize, count: usize) -> usize {
    tridiagonal::inverse_sqrt_eigh_batch_work_len(n, count)
        .max(jacobi::inverse_sqrt_work_len(n))
        .checked_add(count)
        .unwrap_or(0)
}

/// [`inverse_sqrt_block`] of each of the `count = statuses.len()` blocks `(count, n, n)` into
/// `out` (same shape), each block's status in `statuses`: one
/// `tridiagonal::inverse_sqrt_eigh_batch` (the blocks' QL iterations interleaved), then
/// one-sided Jacobi for the blocks whose condition number exceeds [`QL_MAX_CONDITION`].
/// Every block's result and status are bitwise those of [`inverse_sqrt_block`] on it alone.
/// `work` holds [`inverse_sqrt_blocks_work_len`]`(n, count)` values; [`Status::BadShape`] (and
/// nothing written) when a slice length disagrees, else [`Status::Ok`].
pub fn inverse_sqrt_blocks(
    blocks: &[f64],
    n: usize,
    out: &mut [f64],
    statuses: &mut [Status],
    work: &mut [f64],
) -> Status {
    let count = statuses.len();
    let needed = inverse_sqrt_blocks_work_len(n, count);
    if work.len() < needed || (needed == 0 && n > 0 && count > 0) {
        return Status::BadShape;
    }
    let (conditions, work) = work.split_at_mut(count);
    let shape = tridiagonal::inverse_sqrt_eigh_batch(blocks, n, out, conditions, statuses, work);
    if shape != Status::Ok {
        return shape;
    }
    let jacobi_work = &mut work[..jacobi::inverse_sqrt_work_len(n)];
    let nn = n * n;
    for (((block, out), status), &condition) in blocks
        .chunks_exact(nn)
        .zip(out.chunks_exact_mut(nn))
        .zip(statuses.iter_mut())
        .zip(conditions.iter())
    {
        if *status == Status::Ok && condition > QL_MAX_CONDITION {
            *status = jacobi::inverse_sqrt(block, n, out, jacobi_work);
        }
    }
    Status::Ok
}

/// Solves patches on the host CPU cores.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn can_fall_back(&self) -> bool {
        false
    }

    fn begin_frame<'a>(
        &'a self,
        job: &FrameJob<'a>,
        trace: &'a Trace,
    ) -> Result<Box<dyn FrameSolver + 'a>, SolveError> {
        if job.device_pixels.is_some() {
            return Err(SolveError::Unavailable {
                backend: "cpu",
                reason: format!(
                    "the pixels of {} are in GPU memory: copy them to the host to extract on \
                     the CPU",
                    job.image.path.display()
                ),
            });
        }
        let padded = job.padded_grid();
        // Only the CCD rows and columns the job's traces can reach are converted to f64
        // (while the pipeline plans the patches; `start` checks the plans' windows).
        let rows = trace_rows(job.psf, job.params, &padded.fullwave, job.image.ny);
        let cols = trace_cols(job.psf, job.params, &padded.fullwave, job.image.nx);
        let ccd = trace.span("ccd", || {
            CcdData::from_preproc_window(job.image, rows.clone(), cols.clone(), &job.pixel_limits)
        });
        Ok(Box::new(CpuFrame {
            job: *job,
            ccd,
            converted: (rows, cols),
            padded,
            bundles: VecDeque::new(),
            last_spots: Mutex::new(None),
            prefetched: None,
            trace,
        }))
    }
}

/// One frame on the CPU: the patches of one bundle at a time, in parallel with rayon.
struct CpuFrame<'a> {
    job: FrameJob<'a>,
    ccd: CcdData,
    /// The CCD rows and columns `ccd` holds (the other pixels are 0).
    converted: (Range<usize>, Range<usize>),
    padded: PaddedGrid,
    /// The plans still to solve, one run per bundle: (index of the first plan, plans).
    bundles: VecDeque<(usize, Vec<PatchPlan>)>,
    /// The spots of the bundle solved last (the model image asks for them next).
    last_spots: Mutex<Option<Arc<SpotTable>>>,
    /// The next bundle's spots (its first fiber and the result), evaluated while the current
    /// bundle's patches are solved: the cores that finish their patches first take them, so
    /// no core waits at a bundle's end.
    prefetched: Option<(usize, Result<Arc<SpotTable>, SolveError>)>,
    trace: &'a Trace,
}

impl FrameSolver for CpuFrame<'_> {
    fn spots(&self, ispec_min: usize, nspec: usize) -> Result<Arc<SpotTable>, SolveError> {
        let mut last = self.last_spots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(spots) = last.as_ref() {
            if spots.ispec_min == ispec_min && spots.nspec == nspec {
                return Ok(Arc::clone(spots));
            }
        }
        let spots = self.trace.span("spots", || {
            self.job.psf.spots(ispec_min, nspec, &self.padded.fullwave)
        })?;
        let spots = Arc::new(spots);
        *last = Some(Arc::clone(&spots));
        Ok(spots)
    }

    fn start(&mut self, plans: Vec<PatchPlan>, _corners: &[&SpotTable]) -> Result<(), SolveError> {
        // Every pixel a solve reads lies in its window: convert again should a window leave
        // the traces' box (never seen; the pixels outside would read as weight 0).
        let (rows, cols) = window_box(&plans);
        let (have_rows, have_cols) = &self.converted;
        let inside = |r: &Range<usize>, have: &Range<usize>| {
            r.is_empty() || (have.start <= r.start && r.end <= have.end)
        };
        if !inside(&rows, have_rows) || !inside(&cols, have_cols) {
            let union = |r: &Range<usize>, have: &Range<usize>| {
                r.start.min(have.start)..r.end.max(have.end)
            };
            let (rows, cols) = (union(&rows, have_rows), union(&cols, have_cols));
            log::debug!(
                "cpu: patch windows reach rows {rows:?} columns {cols:?} beyond the traces' box \
                 {have_rows:?} x {have_cols:?}: converting the CCD again"
            );
            self.ccd = self.trace.span("ccd", || {
                CcdData::from_preproc_window(
                    self.job.image,
                    rows.clone(),
                    cols.clone(),
                    &self.job.pixel_limits,
                )
            });
            self.converted = (rows, cols);
        }
        let mut first = 0;
        let mut plans = plans.into_iter().peekable();
        while let Some(plan) = plans.next() {
            let (bundle, start) = (plan.bundle, first);
            let mut run = vec![plan];
            while let Some(next) = plans.next_if(|p| p.bundle == bundle) {
                run.push(next);
            }
            first += run.len();
            self.bundles.push_back((start, run));
        }
        Ok(())
    }

    fn next_results(&mut self) -> Result<Option<(usize, Vec<PatchResult>)>, SolveError> {
        let Some((first, plans)) = self.bundles.pop_front() else {
            return Ok(None);
        };
        let bspecmin = plans[0].bspecmin;
        let bundlesize = self.job.params.bundlesize;
        let spots = match self.prefetched.take() {
            Some((b, spots)) if b == bspecmin => {
                let spots = spots?;
                *self.last_spots.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Arc::clone(&spots));
                spots
            }
            _ => self.spots(bspecmin, bundlesize)?,
        };
        let inputs = BundleInputs {
            spots: &spots,
            plans: &plans,
            ccd: self.ccd.view(),
            params: self.job.params,
            ndiag: self.job.ndiag(),
        };
        let threshold = self.job.reject.map(|c| c.nsigma * c.nsigma);
        let next = self.bundles.front().map(|(_, p)| p[0].bspecmin);
        let (psf, fullwave, trace) = (self.job.psf, &self.padded.fullwave, self.trace);
        let (results, prefetched) = rayon::join(
            || {
                trace.span("solve", || {
                    plans
                        .par_iter()
                        .map(|plan| solve_patch_detecting(&inputs, plan, threshold))
                        .collect()
                })
            },
            || {
                next.map(|b| {
                    let spots = trace.span("spots", || psf.spots(b, bundlesize, fullwave));
                    (b, spots.map(Arc::new).map_err(SolveError::from))
                })
            },
        );
        self.prefetched = prefetched;
        Ok(Some((first, results)))
    }

    fn ccd(&self) -> Option<&CcdData> {
        Some(&self.ccd)
    }

    fn resolve(
        &mut self,
        plans: &[PatchPlan],
        masks: &[&[u64]],
    ) -> Result<Vec<PatchResult>, SolveError> {
        let threshold = self.threshold()?;
        if masks.len() != plans.len() {
            return Err(SolveError::Failed {
                backend: "cpu",
                reason: format!("{} masks for {} patches", masks.len(), plans.len()),
            });
        }
        let mut out = Vec::with_capacity(plans.len());
        let mut first = 0;
        for run in plans.chunk_by(|a, b| a.bspecmin == b.bspecmin) {
            let spots = self.spots(run[0].bspecmin, self.job.params.bundlesize)?;
            let inputs = self.inputs(&spots, run);
            let masks = &masks[first..first + run.len()];
            first += run.len();
            let solved: Vec<PatchResult> = self.trace.span("reject re-solve", || {
                run.par_iter()
                    .zip(masks.par_iter())
                    .map(|(plan, mask)| resolve_patch(&inputs, plan, mask, threshold))
                    .collect()
            });
            out.extend(solved);
        }
        Ok(out)
    }

    fn rejected_bin_counts(
        &mut self,
        patches: &[(PatchPlan, Vec<u64>)],
    ) -> Result<Vec<Vec<u16>>, SolveError> {
        let mut out = Vec::with_capacity(patches.len());
        for run in patches.chunk_by(|a, b| a.0.bspecmin == b.0.bspecmin) {
            let spots = self.spots(run[0].0.bspecmin, self.job.params.bundlesize)?;
            let plans: Vec<PatchPlan> = run.iter().map(|(p, _)| p.clone()).collect();
            let inputs = self.inputs(&spots, &plans);
            out.extend(
                run.par_iter()
                    .map(|(plan, pixels)| bin_counts(&inputs, plan, pixels))
                    .collect::<Vec<_>>(),
            );
        }
        Ok(out)
    }
}

impl CpuFrame<'_> {
    /// The χ²_pix threshold of the job's outlier rejection.
    fn threshold(&self) -> Result<f64, SolveError> {
        self.job
            .reject
            .map(|c| c.nsigma * c.nsigma)
            .ok_or_else(|| SolveError::Failed {
                backend: "cpu",
                reason: "outlier rejection asked of a job without it".into(),
            })
    }

    /// The solve inputs of `plans` (one bundle's) with the bundle's `spots`.
    fn inputs<'s>(&'s self, spots: &'s SpotTable, plans: &'s [PatchPlan]) -> BundleInputs<'s> {
        BundleInputs {
            spots,
            plans,
            ccd: self.ccd.view(),
            params: self.job.params,
            ndiag: self.job.ndiag(),
        }
    }
}

/// The CCD rows and columns of the bounding box of the pixel windows of `plans` (empty when
/// none has one): every pixel a patch solve reads.
fn window_box(plans: &[PatchPlan]) -> (Range<usize>, Range<usize>) {
    let (mut r0, mut r1, mut c0, mut c1) = (i32::MAX, i32::MIN, i32::MAX, i32::MIN);
    for w in plans.iter().filter_map(|p| p.window) {
        r0 = r0.min(w.row_min);
        r1 = r1.max(w.row_max);
        c0 = c0.min(w.col_min);
        c1 = c1.max(w.col_max);
    }
    let range = |lo: i32, hi: i32| {
        if lo < hi {
            lo.max(0) as usize..hi.max(0) as usize
        } else {
            0..0
        }
    };
    (range(r0, r1), range(c0, c1))
}

/// Full solution of one patch for its core spectra, before core bins are selected.
#[derive(Clone, Debug)]
pub struct PatchSolution {
    /// Kept pixels.
    pub window: PixelWindow,
    /// Shape of the patch.
    pub shape: PatchShape,
    /// Half-bandwidth of AᵀWA in wavelength-major order.
    pub kd: usize,
    /// Deconvolved flux f = M⁻¹ AᵀWp, wavelength-major (`q = k·nspecpad + s`).
    pub xflux: Vec<f64>,
    /// Flux weights Aᵀw, wavelength-major.
    pub fluxweight: Vec<f64>,
    /// Resolution matrices of the core spectra, `(nspp, nwavetot, nwavetot)`.
    pub resolution: Vec<f64>,
    /// Reconvolved flux R·f of the core spectra, `(nspp, nwavetot)`.
    pub flux: Vec<f64>,
    /// Inverse variance of `flux`, `(nspp, nwavetot)`.
    pub ivar: Vec<f64>,
    /// Regularization retry, if one was needed.
    pub issue: Option<PatchIssue>,
}

/// The working memory of one patch solve, reused from patch to patch: the band matrix and
/// its factor's scratch, the right-hand side / flux, the covariance blocks and their scratch,
/// the resolution blocks, the reconvolved flux and ivar, the eigen-solver's scratch and the
/// blocks' statuses, and the model window of the pixel statistics. A solve sizes each buffer
/// to its patch (growing it when needed, never shrinking) and writes every value it reads, so
/// results do not depend on what a previous patch left (only the band is zeroed: the assembly
/// leaves the entries above its first rows untouched).
#[derive(Clone, Debug, Default)]
pub struct PatchWorkspace {
    band: Vec<f64>,
    factor_work: Vec<f64>,
    xflux: Vec<f64>,
    fluxweight: Vec<f64>,
    cov: Vec<f64>,
    cov_work: Vec<f64>,
    resolution: Vec<f64>,
    flux: Vec<f64>,
    ivar: Vec<f64>,
    eig_work: Vec<f64>,
    eig_status: Vec<Status>,
    pixels: Vec<f64>,
}

/// The first `len` values of `v`, grown (with zeros) to `len` if shorter; the values a
/// previous use left are kept (the callers overwrite every one they read).
fn scratch(v: &mut Vec<f64>, len: usize) -> &mut [f64] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

thread_local! {
    /// The [`PatchWorkspace`] of the patches this thread solves (rayon's workers keep theirs
    /// for the whole process).
    static WORKSPACE: std::cell::RefCell<PatchWorkspace> =
        std::cell::RefCell::new(PatchWorkspace::default());
}

/// Runs `f` with this thread's [`PatchWorkspace`] (a fresh one should it be in use already).
fn with_workspace<T>(f: impl FnOnce(&mut PatchWorkspace) -> T) -> T {
    WORKSPACE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut ws) => f(&mut ws),
        Err(_) => f(&mut PatchWorkspace::default()),
    })
}

/// What [`solve_patch_in`] returns besides the values it leaves in the workspace.
struct Solved {
    window: PixelWindow,
    shape: PatchShape,
    kd: usize,
    issue: Option<PatchIssue>,
}

/// Solves the normal equations and the resolution of one patch (docs/algorithm.md §4.1-4.4).
pub fn solve_patch_full(
    inputs: &BundleInputs,
    plan: &PatchPlan,
) -> Result<PatchSolution, PatchIssue> {
    with_workspace(|ws| {
        let solved = solve_patch_in(inputs, plan, ws)?;
        let n = solved.shape.nunknown();
        let nwavetot = solved.shape.nwavetot;
        let (len, block_len) = (plan.nspp * nwavetot, plan.nspp * nwavetot * nwavetot);
        Ok(PatchSolution {
            window: solved.window,
            shape: solved.shape,
            kd: solved.kd,
            xflux: ws.xflux[..n].to_vec(),
            fluxweight: ws.fluxweight[..n].to_vec(),
            resolution: ws.resolution[..block_len].to_vec(),
            flux: ws.flux[..len].to_vec(),
            ivar: ws.ivar[..len].to_vec(),
            issue: solved.issue,
        })
    })
}

/// [`solve_patch_full`] into `ws`: on success its first `n` values of `xflux` and
/// `fluxweight`, `nspp·nwavetot²` of `resolution` and `nspp·nwavetot` of `flux` and `ivar`
/// are the patch's.
fn solve_patch_in(
    inputs: &BundleInputs,
    plan: &PatchPlan,
    ws: &mut PatchWorkspace,
) -> Result<Solved, PatchIssue> {
    let params = inputs.params;
    let nwavetot = params.nwavetot();
    let (Some(window), Some(shape)) = (plan.window, plan.shape(nwavetot)) else {
        return Err(PatchIssue::OffCcd);
    };
    let view = plan.stamp_view(inputs.spots, params.pad());
    let n = shape.nunknown();
    let kd = plan.kd;
    let fail = |stage: &str, status: Status| PatchIssue::Failed {
        reason: format!("{stage}: {status:?}"),
    };

    let band = scratch(&mut ws.band, n * (kd + 1));
    let xflux = scratch(&mut ws.xflux, n);
    let fluxweight = scratch(&mut ws.fluxweight, n);
    let factor_work = scratch(&mut ws.factor_work, banded_cpu::band_factor_work_len(kd));
    let mut issue = None;
    let mut ridge = params.regularize;
    loop {
        band.fill(0.0);
        let status =
            assemble_normal_equations(&view, &inputs.ccd, &shape, kd, band, xflux, fluxweight);
        if status != Status::Ok {
            return Err(fail("assembly", status));
        }
        regularize(band, n, kd, fluxweight, ridge);
        // The CPU's blocked factor (the GPU keeps the serial/team order): equal up to rounding.
        let status = banded_cpu::band_factor(band, n, kd, factor_work);
        if status == Status::Ok {
            break;
        }
        if ridge >= RETRY_REGULARIZE {
            return Err(fail("Cholesky factorization", status));
        }
        ridge = RETRY_REGULARIZE;
        issue = Some(PatchIssue::Regularized {
            regularize: ridge,
            reason: format!("Cholesky factorization: {status:?}"),
        });
    }
    let status = banded::band_solve(band, n, kd, xflux);
    if status != Status::Ok {
        return Err(fail("Cholesky solve", status));
    }
    if xflux.iter().any(|v| !v.is_finite()) {
        return Err(fail("deconvolved flux", Status::NonFinite));
    }

    // Covariance blocks of the core spectra only (the neighbours' are discarded).
    let s_core = plan.ispec - plan.s0;
    let block_len = nwavetot * nwavetot;
    let cov = scratch(&mut ws.cov, plan.nspp * block_len);
    // The CPU's register-tiled engine (device/tests/banded_cpu.rs: 1e-12 of the dense inverse).
    let work = scratch(
        &mut ws.cov_work,
        banded_cpu::band_covariance_block_range_work_len(n, kd, plan.nspecpad),
    );
    let status =
        banded_cpu::band_covariance_block_range(band, n, kd, plan.nspecpad, s_core, cov, work);
    if status != Status::Ok {
        return Err(fail("covariance blocks", status));
    }

    let resolution = scratch(&mut ws.resolution, plan.nspp * block_len);
    let flux = scratch(&mut ws.flux, plan.nspp * nwavetot);
    let ivar = scratch(&mut ws.ivar, plan.nspp * nwavetot);
    let eig_work = scratch(
        &mut ws.eig_work,
        inverse_sqrt_blocks_work_len(nwavetot, plan.nspp),
    );
    ws.eig_status.resize(plan.nspp, Status::Ok);
    // The CPU's method (Householder + QL, one-sided Jacobi for ill-conditioned blocks; the GPU
    // keeps one-sided Jacobi), the core blocks' QL iterations interleaved: both agree with the
    // float64 reference to ~1e-13 of max|Q| (device/tests/tridiagonal.rs;
    // tests/rdiag_conditioning.rs).
    let status = inverse_sqrt_blocks(cov, nwavetot, resolution, &mut ws.eig_status, eig_work);
    if status != Status::Ok {
        return Err(fail("inverse square root of C_bb", status));
    }
    for c in 0..plan.nspp {
        let s = s_core + c;
        let q_block = &mut resolution[c * block_len..(c + 1) * block_len];
        let status = ws.eig_status[c];
        if status != Status::Ok {
            return Err(fail("inverse square root of C_bb", status));
        }
        let status = apply_resolution(
            q_block,
            nwavetot,
            &xflux[s..],
            plan.nspecpad,
            &mut flux[c * nwavetot..(c + 1) * nwavetot],
            &mut ivar[c * nwavetot..(c + 1) * nwavetot],
        );
        if status != Status::Ok {
            return Err(fail("resolution", status));
        }
    }
    Ok(Solved {
        window,
        shape,
        kd,
        issue,
    })
}

/// Solves one patch (docs/algorithm.md §4) and returns its core outputs.
pub fn solve_patch(inputs: &BundleInputs, plan: &PatchPlan) -> PatchResult {
    solve_patch_with_xflux(inputs, plan, false).0
}

/// [`solve_patch`], and with `keep_xflux` the deconvolved flux of every padded unknown
/// (wavelength-major, `q = k·nspecpad + s`) of a solved patch (the outlier rejection's model;
/// docs/algorithm.md §4.11). The working memory is the calling thread's [`PatchWorkspace`].
pub fn solve_patch_with_xflux(
    inputs: &BundleInputs,
    plan: &PatchPlan,
    keep_xflux: bool,
) -> (PatchResult, Option<Vec<f64>>) {
    with_workspace(|ws| solve_patch_with_workspace(inputs, plan, keep_xflux, ws))
}

/// [`solve_patch_with_xflux`] with the working memory `ws`.
pub fn solve_patch_with_workspace(
    inputs: &BundleInputs,
    plan: &PatchPlan,
    keep_xflux: bool,
    ws: &mut PatchWorkspace,
) -> (PatchResult, Option<Vec<f64>>) {
    let ndiag = inputs.ndiag;
    let solution = match solve_patch_in(inputs, plan, ws) {
        Ok(solution) => solution,
        Err(issue) => return (PatchResult::zeros(plan.nspp, plan.keep, ndiag, issue), None),
    };
    let pad = inputs.params.pad();
    let nwavetot = solution.shape.nwavetot;
    let keep = plan.keep;
    let ndiagonal = 2 * ndiag + 1;
    let mut result = PatchResult {
        flux: vec![0.0; plan.nspp * keep],
        ivar: vec![0.0; plan.nspp * keep],
        rdiags: vec![0.0; plan.nspp * ndiagonal * keep],
        chi2pix: vec![0.0; plan.nspp * keep],
        pixmask_fraction: vec![0.0; plan.nspp * keep],
        issue: solution.issue.clone(),
        outliers: None,
    };
    for c in 0..plan.nspp {
        let src = c * nwavetot + pad;
        result.flux[c * keep..(c + 1) * keep].copy_from_slice(&ws.flux[src..src + keep]);
        result.ivar[c * keep..(c + 1) * keep].copy_from_slice(&ws.ivar[src..src + keep]);
        let block = &ws.resolution[c * nwavetot * nwavetot..(c + 1) * nwavetot * nwavetot];
        let rd = &mut result.rdiags[c * ndiagonal * keep..(c + 1) * ndiagonal * keep];
        let status = resolution_diagonals(block, nwavetot, ndiag, pad, pad + keep, rd, keep);
        if status != Status::Ok {
            return (
                failed(plan, ndiag, format!("resolution diagonals: {status:?}")),
                None,
            );
        }
    }
    let s_core = plan.ispec - plan.s0;
    let core = CoreRange {
        s_min: s_core,
        s_max: s_core + plan.nspp,
        k_min: pad,
        k_max: pad + keep,
    };
    let window = solution.window;
    let n = solution.shape.nunknown();
    let pixels = scratch(&mut ws.pixels, window.npix());
    let status = pixel_statistics(
        &plan.stamp_view(inputs.spots, inputs.params.pad()),
        &inputs.ccd,
        &solution.shape,
        window.col_min,
        window.col_max,
        &ws.xflux[..n],
        inputs.params.psferr,
        core,
        pixels,
        &mut result.chi2pix,
        &mut result.pixmask_fraction,
        keep,
    );
    if status != Status::Ok {
        return (
            failed(plan, ndiag, format!("pixel statistics: {status:?}")),
            None,
        );
    }
    (result, keep_xflux.then(|| ws.xflux[..n].to_vec()))
}

fn failed(plan: &PatchPlan, ndiag: usize, reason: String) -> PatchResult {
    PatchResult::zeros(plan.nspp, plan.keep, ndiag, PatchIssue::Failed { reason })
}
