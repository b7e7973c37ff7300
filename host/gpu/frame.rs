//! One frame on the GPU: image, weights and PSF tables go to the device once, spots are
//! evaluated for every (fiber, wavelength) at once, and all patches are solved in a few batched
//! launches sized to the device's free memory. Failed patches fall back to the CPU path.

use super::batch::{launch_batch, BatchShape, FrameBuffers, PendingBatch, Planned, TIMING_EVENT};
use super::context::{DriverContext, GpuContext, GpuError, KernelMode, PINNED_SLOTS};
use super::launch::{lanes, Launch};
use crate::extract::{
    add_patch_model, check_compatible, check_on_ccd, finish_extraction, CcdData, ExtractError,
    Extraction, PatchReport, Progress, StageTimes, EXTRACT_MASK_BITS,
};
use crate::io::PreprocImage;
use crate::patch::plan::plan_bundle;
use crate::patch::stitch::{FrameArrays, FrameRows};
use crate::patch::{ExtractionParams, PaddedGrid, PatchPlan, WavelengthGrid};
use crate::psf::{GaussHermitePsf, SpotTable};
use crate::solve::cpu::solve_patch;
use crate::solve::{BundleInputs, PatchIssue, PatchResult, SolveError};
use crate::trace::Trace;
use cudarc::driver::{CudaEvent, CudaSlice};
use desi_device::kernels::{PsfTablesArgs, SpotsArgs, WidenArgs};
use desi_device::linalg::{banded, jacobi};
use desi_device::patch::{patch_bandwidth, PatchDesc, StampView, PATCH_DESC_WORDS};
use desi_device::psf::spot::{spot_corner, StampCorner};
use desi_device::Status;
use rayon::prelude::*;
use std::time::{Duration, Instant};

impl From<GpuError> for ExtractError {
    fn from(err: GpuError) -> Self {
        ExtractError::Solve(SolveError::Unavailable {
            backend: "gpu",
            reason: err.to_string(),
        })
    }
}

/// Stage timer: each [`Stages::enter`] ends the current stage (synchronizing the stream: stage
/// boundaries are the only syncs) and starts the next one, with an NVTX range, a host span in
/// the [`Trace`] and a pair of CUDA events whose elapsed time goes on the trace's GPU track.
struct Stages<'a> {
    gpu: &'a GpuContext,
    trace: &'a Trace,
    current: Option<OpenStage>,
    detail: Vec<(&'static str, Duration)>,
}

/// The stage in progress.
struct OpenStage {
    name: &'static str,
    start: Duration,
    event: CudaEvent,
    _range: nvtx::Range,
}

impl<'a> Stages<'a> {
    fn new(gpu: &'a GpuContext, trace: &'a Trace) -> Self {
        Self {
            gpu,
            trace,
            current: None,
            detail: Vec::new(),
        }
    }

    /// Ends the current stage and starts `name`.
    fn enter(&mut self, name: &'static str) -> Result<(), GpuError> {
        self.finish()?;
        let event = self
            .gpu
            .stream
            .record_event(Some(TIMING_EVENT))
            .stage(name)?;
        self.current = Some(OpenStage {
            name,
            start: self.trace.now(),
            event,
            _range: crate::trace::nvtx_range(name),
        });
        Ok(())
    }

    /// Ends the current stage, if any.
    fn finish(&mut self) -> Result<(), GpuError> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        let end_event = self
            .gpu
            .stream
            .record_event(Some(TIMING_EVENT))
            .stage(open.name)?;
        self.gpu.stream.synchronize().stage(open.name)?;
        let end = self.trace.now();
        let host = end.saturating_sub(open.start);
        self.trace.record(open.name, "host", open.start, host);
        let gpu_ms = open.event.elapsed_ms(&end_event).stage(open.name)?;
        let gpu_time = Duration::from_secs_f64(f64::from(gpu_ms.max(0.0)) / 1e3);
        self.trace.record(open.name, "gpu", open.start, gpu_time);
        match self.detail.iter_mut().find(|(n, _)| *n == open.name) {
            Some((_, d)) => *d += host,
            None => self.detail.push((open.name, host)),
        }
        Ok(())
    }
}

/// Extracts a frame on the GPU; same contract and outputs as [`crate::extract::extract_frame`].
#[allow(clippy::too_many_arguments)]
pub fn extract_frame_gpu(
    gpu: &GpuContext,
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
    want_model: bool,
    progress: Progress,
    trace: &Trace,
) -> Result<Extraction, ExtractError> {
    let ndiag = psf.hsizey;
    params.validate(ndiag, psf.nspec)?;
    check_compatible(psf, image, grid)?;
    let mut stages = Stages::new(gpu, trace);
    stages.enter("prepare")?;
    let t_start = Instant::now();
    let stream = &gpu.stream;
    // The host copy of the CCD in f64 is only needed for CPU fallbacks.
    let ccd_host: std::sync::OnceLock<CcdData> = std::sync::OnceLock::new();
    let (nrow, ncol) = (image.ny, image.nx);
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let nfull = padded.nfull();
    let nwave = grid.nwave();
    let (ny, nx) = (psf.stamp_ny(), psf.stamp_nx());
    let pad = params.pad();
    let nwavetot = params.nwavetot();
    let nspp_max = params.bundlesize / params.nsubbundles;
    let nmax = (nspp_max + 2) * nwavetot;
    let flat = psf.flatten();
    let tables = psf.tables(&flat);
    stages.enter("spots + plan")?;

    // Spots of every PSF fiber on fullwave (asynchronous), while the host plans the patches
    // from corners it computes itself (the same device code as the kernel's corners; checked
    // against the kernel's below).
    let nfiber = psf.nspec;
    let nitem = nfiber * nfull;
    let d_xtrace = stream.clone_htod(tables.xtrace).stage("copy PSF")?;
    let d_ytrace = stream.clone_htod(tables.ytrace).stage("copy PSF")?;
    let d_params = stream.clone_htod(tables.params).stage("copy PSF")?;
    let d_wave = stream
        .clone_htod(&padded.fullwave)
        .stage("copy wavelengths")?;
    let mut d_stamps = stream
        .alloc_zeros::<f64>(nitem * ny * nx)
        .stage("allocate stamps")?;
    let mut d_corners = stream
        .alloc_zeros::<i32>(2 * nitem)
        .stage("allocate corners")?;
    let mut d_spot_status = stream
        .alloc_zeros::<u32>(nitem)
        .stage("allocate spot status")?;
    let (t_spots, spots_start) = (
        trace.now(),
        stream
            .record_event(Some(TIMING_EVENT))
            .stage("record an event")?,
    );
    {
        let mut l = Launch::on(stream);
        let args = SpotsArgs {
            tables: PsfTablesArgs::new(
                &tables,
                l.read(&d_xtrace),
                l.read(&d_ytrace),
                l.read(&d_params),
            ),
            wave: l.read(&d_wave),
            nwave: nfull,
            stamps: l.write(&mut d_stamps),
            corners: l.write(&mut d_corners),
            status: l.write(&mut d_spot_status),
        };
        // One warp per spot (shared scratch) unless the per-thread kernels are asked for.
        let (kernel, shape) = if gpu.mode == KernelMode::Team {
            let warps = lanes("DESI_SPOT_LANES", 32 * SpotsArgs::TEAM_WARPS) / 32;
            (&gpu.kernels.spots_team, args.team_shape(warps))
        } else {
            (&gpu.kernels.spots, args.shape())
        };
        // SAFETY: the tables are copies of `tables`, `wave` has nfull values, stamps, corners
        // and status nfiber * nfull spots (nfiber = tables.nspec); the shape is the kernel's.
        unsafe { l.run(kernel, shape, &args) }?;
    }
    let spots_end = stream
        .record_event(Some(TIMING_EVENT))
        .stage("record an event")?;
    // The corners and status codes come back to page-locked memory while the host plans.
    let mut corner_buf = gpu.pinned_corners(2 * nitem)?;
    stream
        .memcpy_dtoh(
            &d_corners,
            corner_buf.as_mut_slice().stage("map pinned buffer")?,
        )
        .stage("copy corners to host")?;
    let mut status_buf = gpu.pinned_status(0, nitem)?;
    stream
        .memcpy_dtoh(
            &d_spot_status,
            status_buf.as_mut_slice().stage("map pinned buffer")?,
        )
        .stage("copy spot status to host")?;
    let spot_copies = stream
        .record_event(Some(TIMING_EVENT))
        .stage("record an event")?;
    // Meanwhile a second thread uploads the image and weights on a second stream (the copy
    // engine works while the spots kernel runs).
    let copy_stream = stream.fork().stage("create the upload stream")?;
    let (upload, host_corners, early_plan) = std::thread::scope(|scope| {
        let upload = scope.spawn(|| {
            upload_ccd(
                gpu,
                &copy_stream,
                &image.image,
                &image.ivar,
                &image.mask,
                trace,
            )
        });
        let t_plan = trace.now();
        let host_corners: Option<Vec<StampCorner>> = (0..nitem)
            .into_par_iter()
            .map(|i| spot_corner(&tables, i / nfull, padded.fullwave[i % nfull]).ok())
            .collect();
        let early_plan = host_corners
            .as_ref()
            .map(|c| plan_frame(psf, c, params, &padded, (nrow, ncol), (ny, nx)));
        trace.record(
            "plan (host, during spots)",
            "host",
            t_plan,
            trace.now().saturating_sub(t_plan),
        );
        (upload.join(), host_corners, early_plan)
    });
    spot_copies
        .synchronize()
        .stage("copy corners and spot status to host")?;
    // The spots kernel alone (its stage also holds the overlapped planning and upload).
    let ms = spots_start
        .elapsed_ms(&spots_end)
        .stage("time the spots kernel")?;
    let gpu_time = Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3);
    trace.record("spots kernel", "gpu", t_spots, gpu_time);
    let spot_status = status_buf.as_mut_slice().stage("map pinned buffer")?;
    if let Some(i) = spot_status.par_iter().position_first(|&s| s != 0) {
        return Err(ExtractError::Input {
            path: psf.path.display().to_string(),
            reason: format!(
                "spot of fiber {} at {:.2} A failed on the GPU: {:?}",
                psf.fibermin + i / nfull,
                padded.fullwave[i % nfull],
                Status::from_code(spot_status[i])
            ),
        });
    }
    let corner_words = corner_buf.as_mut_slice().stage("map pinned buffer")?;
    let kernel_corners = || {
        corner_words
            .par_chunks_exact(2)
            .map(|c| StampCorner { xc: c[0], yc: c[1] })
            .collect::<Vec<_>>()
    };
    let host_matches = host_corners.as_ref().is_some_and(|host| {
        host.par_iter()
            .zip(corner_words.par_chunks_exact(2))
            .all(|(h, c)| h.xc == c[0] && h.yc == c[1])
    });
    let bundles = params.bundle_starts();
    // The early plan stands when its corners are the kernel's (always, barring a host/device
    // rounding difference); otherwise plan again from the kernel's corners.
    let (corners, (planned, plans_by_bundle)) = match (early_plan, host_corners) {
        (Some(Ok(plan)), Some(host)) if host_matches => (host, plan),
        _ => {
            let corners = kernel_corners();
            let plan = plan_frame(psf, &corners, params, &padded, (nrow, ncol), (ny, nx))?;
            (corners, plan)
        }
    };
    // The page-locked buffers go back to the context (the batches reuse the status slots).
    drop(corner_buf);
    drop(status_buf);
    let (d_image, d_weight) =
        upload.map_err(|_| GpuError::Internal("the image upload thread panicked".into()))??;
    // The kernels below (main stream) wait for the upload (copy stream).
    stream
        .join(&copy_stream)
        .stage("wait for the image upload")?;

    // Solve in batches sized to the free memory, two in flight on the stream: while the
    // device solves one, the host unpacks and stitches the one before. (Alternating two
    // streams, so that the kernels of consecutive batches overlap, measured no faster on an
    // H100: 0.305 s against 0.291 s.)
    stages.finish()?;
    let total = plans_by_bundle.iter().map(Vec::len).sum::<usize>();
    progress(0, total);
    let kd_max = planned
        .iter()
        .map(|p| p.desc.kd as usize)
        .max()
        .unwrap_or(0);
    let cov_work = banded::band_covariance_blocks_work_len(nmax, kd_max, nspp_max + 2).max(
        banded::band_covariance_blocks_work_len((nspp_max + 1) * nwavetot, kd_max, nspp_max + 1),
    );
    let eig_work = jacobi::inverse_sqrt_work_len(nwavetot);
    let per_core = 2 * nwavetot * nwavetot
        + cov_work
        + eig_work
        + 2 * nwavetot
        + (2 * ndiag + 4) * params.nwavestep;
    let per_patch_words =
        nmax * (kd_max + 1) + 3 * nmax + nspp_max * per_core + 140 * 70 + PATCH_DESC_WORDS + 1;
    let (free, _) = gpu.memory()?;
    if free < 8 * per_patch_words * PINNED_SLOTS {
        return Err(GpuError::Memory(format!(
            "{free} bytes free, one patch needs {}",
            8 * per_patch_words
        ))
        .into());
    }
    // Two batches in flight share the memory; at least `batches()` batches per frame.
    let memory_batch = (free as f64 * 0.7) as usize / (8 * per_patch_words * PINNED_SLOTS);
    let batch = memory_batch.min(planned.len().div_ceil(batches())).max(1);
    let shape = BatchShape {
        nmax,
        nspp_max,
        cov_work,
        eig_work,
        ndiag,
    };
    let frame_buffers = FrameBuffers {
        stamps: &d_stamps,
        corners: &d_corners,
        image: &d_image,
        weight: &d_weight,
        ccd_shape: (nrow, ncol),
        stamp_shape: (ny, nx),
    };
    let mut arrays = FrameArrays::new(params.specmin, params.nspec, nwave, ndiag);
    let mut rows: Vec<Option<FrameRows>> = arrays
        .row_blocks_mut(params.bundlesize)
        .into_iter()
        .map(Some)
        .collect();
    // First planned patch of each bundle (and the end).
    let mut bundle_start = vec![planned.len(); plans_by_bundle.len() + 1];
    for (i, p) in planned.iter().enumerate().rev() {
        bundle_start[p.plan.bundle.min(plans_by_bundle.len())] = i;
    }
    for b in (0..plans_by_bundle.len()).rev() {
        bundle_start[b] = bundle_start[b].min(bundle_start[b + 1]);
    }
    let stitcher = Stitcher {
        psf,
        image,
        params,
        padded: &padded,
        plans_by_bundle: &plans_by_bundle,
        bundles: &bundles,
        ndiag,
        ccd_host: &ccd_host,
        planned: &planned,
        bundle_start: &bundle_start,
        trace,
    };
    let mut results: Vec<Option<PatchResult>> = (0..planned.len()).map(|_| None).collect();
    let mut reports = Vec::new();
    let mut stitched = 0;
    let mut done = 0;
    let ranges: Vec<std::ops::Range<usize>> = (0..planned.len())
        .step_by(batch)
        .map(|start| start..(start + batch).min(planned.len()))
        .collect();
    let mut pending: Option<(std::ops::Range<usize>, PendingBatch)> = None;
    // One pass per batch plus one that only collects the last.
    for (i, range) in ranges.iter().cloned().map(Some).chain([None]).enumerate() {
        let launched = if let Some(range) = range {
            let slot = i % PINNED_SLOTS;
            let chunk = &planned[range.clone()];
            let batch = launch_batch(gpu, slot, chunk, &frame_buffers, params, shape, trace)?;
            Some((range, batch))
        } else {
            None
        };
        let Some((previous, batch)) = std::mem::replace(&mut pending, launched) else {
            continue;
        };
        let outs = batch.collect(
            &planned[previous.clone()],
            params,
            shape,
            trace,
            &mut stages.detail,
        )?;
        for (slot, out) in results[previous.clone()].iter_mut().zip(outs) {
            *slot = Some(out);
        }
        done += previous.len();
        progress(done.min(total), total);
        // Stitch every bundle whose patches have all come back.
        let ready = (stitched..plans_by_bundle.len())
            .take_while(|&b| bundle_start[b + 1] <= previous.end)
            .count();
        let range = stitched..stitched + ready;
        reports.extend(stitcher.stitch(range.clone(), &mut rows[range], &mut results)?);
        stitched += ready;
    }
    if stitched < plans_by_bundle.len() {
        // Bundles without any GPU patch (all off the CCD).
        let rest = stitched..plans_by_bundle.len();
        reports.extend(stitcher.stitch(rest.clone(), &mut rows[rest], &mut results)?);
    }
    drop(rows);
    // Model image from the stamps of each bundle (copied back per bundle).
    let mut model = want_model.then(|| vec![0.0; nrow * ncol]);
    if let Some(model) = model.as_mut() {
        stages.enter("model image")?;
        for (bundle, plans) in plans_by_bundle.iter().enumerate() {
            let spots = download_bundle_spots(
                gpu,
                &d_stamps,
                &corners,
                bundles[bundle],
                params.bundlesize,
                nfull,
                ny,
                nx,
            )?;
            for plan in plans {
                add_patch_model(model, ncol, &spots, plan, &arrays, pad);
            }
        }
    }
    stages.finish()?;
    let mut extraction = finish_extraction(grid, arrays, reports, model, total);
    let elapsed = t_start.elapsed();
    extraction.times = StageTimes {
        spots: stages
            .detail
            .iter()
            .filter(|(n, _)| *n == "spots + plan")
            .map(|(_, d)| *d)
            .sum(),
        solve: elapsed,
        finalize: Duration::ZERO,
        detail: stages.detail,
    };
    Ok(extraction)
}

/// Number of batches a frame is solved in at least (two in flight), `DESI_GPU_BATCHES` or 2:
/// more batches hide more of the host's unpacking and stitching behind the device's work,
/// fewer keep the device fuller (H100, r frame, one stream: 1 batch 0.300-0.316 s, 2: 0.291,
/// 4: 0.301, 8: 0.313).
fn batches() -> usize {
    std::env::var("DESI_GPU_BATCHES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(2, |v| v.clamp(1, 64))
}

/// What stitching the GPU results of whole bundles into the frame needs.
struct Stitcher<'a> {
    psf: &'a GaussHermitePsf,
    image: &'a PreprocImage,
    params: &'a ExtractionParams,
    padded: &'a PaddedGrid,
    plans_by_bundle: &'a [Vec<PatchPlan>],
    bundles: &'a [usize],
    ndiag: usize,
    /// The host copy of the CCD in f64, made on the first CPU fallback.
    ccd_host: &'a std::sync::OnceLock<CcdData>,
    /// The GPU patches, in bundle order.
    planned: &'a [Planned],
    /// First planned patch of each bundle (and the end).
    bundle_start: &'a [usize],
    /// Where the `stitch` spans go.
    trace: &'a Trace,
}

impl Stitcher<'_> {
    /// Stitches bundles `bundles` (their `rows`, in order) from the GPU results, bundles in
    /// parallel (disjoint rows), taking each result out of `results` (in `planned` order);
    /// patches without a good GPU result are solved on the CPU. Returns the patch reports.
    fn stitch(
        &self,
        bundles: std::ops::Range<usize>,
        rows: &mut [Option<FrameRows>],
        results: &mut [Option<PatchResult>],
    ) -> Result<Vec<PatchReport>, ExtractError> {
        let start = self.trace.now();
        let out = self.stitch_bundles(bundles, rows, results);
        let elapsed = self.trace.now().saturating_sub(start);
        self.trace.record("stitch", "host", start, elapsed);
        out
    }

    /// [`Stitcher::stitch`] without the trace span.
    fn stitch_bundles(
        &self,
        bundles: std::ops::Range<usize>,
        rows: &mut [Option<FrameRows>],
        results: &mut [Option<PatchResult>],
    ) -> Result<Vec<PatchReport>, ExtractError> {
        let (planned, bundle_start) = (self.planned, self.bundle_start);
        let params = self.params;
        let (pad, ndiag) = (params.pad(), self.ndiag);
        // Each bundle's GPU results, matched to its plans (off-CCD plans have none).
        let mut per_bundle = Vec::with_capacity(bundles.len());
        for b in bundles.clone() {
            let range = bundle_start[b]..bundle_start[b + 1];
            let mut gpu_results = planned[range.clone()]
                .iter()
                .zip(results[range].iter_mut())
                .peekable();
            let mut bundle_results = Vec::with_capacity(self.plans_by_bundle[b].len());
            for plan in &self.plans_by_bundle[b] {
                bundle_results.push(match gpu_results.peek() {
                    Some((p, _)) if p.plan == *plan => {
                        gpu_results.next().and_then(|(_, r)| r.take())
                    }
                    _ => None,
                });
            }
            per_bundle.push(bundle_results);
        }
        let reports: Vec<Result<Vec<PatchReport>, ExtractError>> = rows
            .par_iter_mut()
            .zip(per_bundle.into_par_iter())
            .zip(bundles.into_par_iter())
            .map(|((rows, bundle_results), bundle)| {
                let Some(rows) = rows.as_mut() else {
                    return Ok(Vec::new());
                };
                let plans = &self.plans_by_bundle[bundle];
                let mut host_spots: Option<SpotTable> = None;
                let mut reports = Vec::new();
                for (plan, gpu_result) in plans.iter().zip(bundle_results) {
                    let result = match (plan.window, gpu_result) {
                        (None, _) => {
                            PatchResult::zeros(plan.nspp, plan.keep, ndiag, PatchIssue::OffCcd)
                        }
                        (Some(_), Some(r)) if r.issue.is_none() => r,
                        (Some(_), other) => {
                            let reason = match other.and_then(|r| r.issue) {
                                Some(PatchIssue::Failed { reason }) => reason,
                                _ => "no GPU result".to_string(),
                            };
                            let spots = match host_spots.take() {
                                Some(s) => s,
                                None => self.psf.spots(
                                    self.bundles[bundle],
                                    params.bundlesize,
                                    &self.padded.fullwave,
                                )?,
                            };
                            let inputs = BundleInputs {
                                spots: &spots,
                                plans,
                                ccd: self
                                    .ccd_host
                                    .get_or_init(|| CcdData::from_preproc(self.image))
                                    .view(),
                                params,
                                ndiag,
                            };
                            let mut r = solve_patch(&inputs, plan);
                            if r.issue.is_none() {
                                r.issue = Some(PatchIssue::CpuFallback { reason });
                            }
                            host_spots = Some(spots);
                            r
                        }
                    };
                    rows.insert(plan, &result, pad);
                    if let Some(issue) = &result.issue {
                        reports.push(PatchReport {
                            bundle,
                            patch: plan.patch,
                            ispec: plan.ispec,
                            iwave: plan.out_wave_min(pad),
                            issue: issue.clone(),
                        });
                    }
                }
                Ok(reports)
            })
            .collect();
        let mut out = Vec::new();
        for r in reports {
            out.extend(r?);
        }
        Ok(out)
    }
}

/// Plans every bundle of a frame from the stamp corners of all fibers (host, bundles in
/// parallel): the CPU path's plans plus the GPU descriptors (bandwidth, buffer offsets).
#[allow(clippy::type_complexity)]
fn plan_frame(
    psf: &GaussHermitePsf,
    corners: &[StampCorner],
    params: &ExtractionParams,
    padded: &PaddedGrid,
    (nrow, ncol): (usize, usize),
    (ny, nx): (usize, usize),
) -> Result<(Vec<Planned>, Vec<Vec<PatchPlan>>), ExtractError> {
    let bundles = params.bundle_starts();
    let nfull = padded.nfull();
    let nwave = padded.grid.nwave();
    let pad = params.pad();
    let nwavetot = params.nwavetot();
    type BundlePlans = (Vec<PatchPlan>, Vec<Planned>);
    let per_bundle: Vec<Result<BundlePlans, ExtractError>> = bundles
        .par_iter()
        .enumerate()
        .map(|(bundle, &bspecmin)| {
            let table = corner_table(corners, bspecmin, params.bundlesize, nfull, ny, nx);
            check_on_ccd(psf, &table, padded, ncol)?;
            let plans = plan_bundle(bundle, &table, params, nwave, nrow);
            let planned = plans
                .par_iter()
                .filter_map(|plan| {
                    let window = plan.window?;
                    let shape = plan.shape(nwavetot)?;
                    let stamp_offset = plan.s0 * nfull + (plan.iwave - pad);
                    let view = StampView {
                        stamps: &[],
                        corners: &corners[stamp_offset..],
                        fiber_stride: nfull,
                        ny,
                        nx,
                    };
                    let desc = PatchDesc {
                        stamp_offset: stamp_offset as u64,
                        fiber_stride: nfull as u64,
                        nspecpad: plan.nspecpad as u64,
                        nspp: plan.nspp as u64,
                        s_core: (plan.ispec - plan.s0) as u64,
                        keep: plan.keep as u64,
                        row_min: window.row_min as i64,
                        row_max: window.row_max as i64,
                        col_min: window.col_min as i64,
                        col_max: window.col_max as i64,
                        kd: patch_bandwidth(&view, &shape) as u64,
                        band_offset: 0,
                        pixel_offset: 0,
                    };
                    Some(Planned {
                        plan: plan.clone(),
                        desc,
                    })
                })
                .collect();
            Ok((plans, planned))
        })
        .collect();
    let mut planned = Vec::new();
    let mut plans_by_bundle = Vec::new();
    let (mut band_total, mut pixel_total) = (0u64, 0u64);
    for result in per_bundle {
        let (plans, bundle_planned) = result?;
        for mut p in bundle_planned {
            p.desc.band_offset = band_total;
            p.desc.pixel_offset = pixel_total;
            band_total += p.desc.band_len(nwavetot) as u64;
            pixel_total += p.desc.npix() as u64;
            planned.push(p);
        }
        plans_by_bundle.push(plans);
    }
    Ok((planned, plans_by_bundle))
}

/// Parts of the image upload (filling the page-locked buffer overlaps the copy of the part
/// before).
const UPLOAD_PARTS: usize = 4;

/// Uploads the image and the extraction weights (IVAR where `(MASK & 0x2FF) == 0`, else 0; exact
/// in f32) as f32 through the context's page-locked staging buffer and widens them to f64 on
/// the device, all on `copy_stream`; returns once the copy is complete.
fn upload_ccd(
    gpu: &GpuContext,
    copy_stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    pixels: &[f32],
    ivar: &[f32],
    mask: &[i32],
    trace: &Trace,
) -> Result<(CudaSlice<f64>, CudaSlice<f64>), GpuError> {
    let start = trace.now();
    let _range = crate::trace::nvtx_range("copy to device");
    let npix = pixels.len();
    // Both planes go through one page-locked staging buffer (filled in parallel): a true
    // asynchronous DMA instead of the driver's pageable staging.
    let mut staging = gpu.pinned_upload(2 * npix)?;
    let host = staging.as_mut_slice().stage("map pinned buffer")?;
    let (image_h, weight_h) = host.split_at_mut(npix);
    let mut d_both32 = copy_stream
        .alloc_zeros::<f32>(2 * npix)
        .stage("allocate image staging")?;
    // In parts: the copy engine moves one part while the host fills the next.
    const CHUNK: usize = 1 << 16;
    let part = npix.div_ceil(UPLOAD_PARTS).max(1);
    for start in (0..npix).step_by(part) {
        let range = start..(start + part).min(npix);
        let (image_p, weight_p) = (&mut image_h[range.clone()], &mut weight_h[range.clone()]);
        image_p
            .par_chunks_mut(CHUNK)
            .zip(pixels[range.clone()].par_chunks(CHUNK))
            .for_each(|(dst, src)| dst.copy_from_slice(src));
        weight_p
            .par_chunks_mut(CHUNK)
            .zip(
                ivar[range.clone()]
                    .par_chunks(CHUNK)
                    .zip(mask[range.clone()].par_chunks(CHUNK)),
            )
            .for_each(|(dst, (iv, m))| {
                for ((w, &iv), &m) in dst.iter_mut().zip(iv).zip(m) {
                    *w = if m & EXTRACT_MASK_BITS == 0 { iv } else { 0.0 };
                }
            });
        for (offset, src) in [(0, &*image_p), (npix, &*weight_p)] {
            let mut dst = d_both32.slice_mut(offset + range.start..offset + range.end);
            copy_stream
                .memcpy_htod(src, &mut dst)
                .stage("copy image and weights to device")?;
        }
    }
    let mut d_image = copy_stream
        .alloc_zeros::<f64>(npix)
        .stage("allocate image")?;
    let mut d_weight = copy_stream
        .alloc_zeros::<f64>(npix)
        .stage("allocate weights")?;
    for (half, dst) in [(0, &mut d_image), (1, &mut d_weight)] {
        let src = d_both32.slice(half * npix..(half + 1) * npix);
        let mut l = Launch::on(copy_stream);
        let args = WidenArgs {
            n: npix,
            src: l.read(&src),
            dst: l.write(dst),
        };
        // SAFETY: `src` and `dst` hold npix values each and do not overlap.
        unsafe { l.run(&gpu.kernels.widen_f32, args.shape(), &args) }?;
    }
    // The staging buffer goes back to the context only after the copy has read it.
    copy_stream
        .synchronize()
        .stage("copy image and weights to device")?;
    drop(staging);
    trace.record(
        "copy to device (upload thread)",
        "host",
        start,
        trace.now().saturating_sub(start),
    );
    Ok((d_image, d_weight))
}

/// A spot table holding only the corners of fibers `bspecmin..+nspec` (for planning).
fn corner_table(
    corners: &[StampCorner],
    bspecmin: usize,
    nspec: usize,
    nfull: usize,
    ny: usize,
    nx: usize,
) -> SpotTable {
    SpotTable {
        ispec_min: bspecmin,
        nspec,
        nwave: nfull,
        ny,
        nx,
        stamps: Vec::new(),
        corners: corners[bspecmin * nfull..(bspecmin + nspec) * nfull].to_vec(),
    }
}

/// Copies the stamps of one bundle back to the host (model image).
#[allow(clippy::too_many_arguments)]
fn download_bundle_spots(
    gpu: &GpuContext,
    d_stamps: &CudaSlice<f64>,
    corners: &[StampCorner],
    bspecmin: usize,
    nspec: usize,
    nfull: usize,
    ny: usize,
    nx: usize,
) -> Result<SpotTable, GpuError> {
    let size = ny * nx;
    let view = d_stamps.slice(bspecmin * nfull * size..(bspecmin + nspec) * nfull * size);
    let stamps = gpu.stream.clone_dtoh(&view).stage("copy stamps to host")?;
    let mut table = corner_table(corners, bspecmin, nspec, nfull, ny, nx);
    table.stamps = stamps;
    Ok(table)
}
