//! One frame on the GPU: image, weights and PSF tables go to the device once, spots are
//! evaluated for every (fiber, wavelength) at once, and all patches are solved in a few batched
//! launches sized to the device's free memory. Failed patches fall back to the CPU path.

use super::context::{DriverContext, GpuContext, GpuError, KernelMode};
use crate::extract::{
    add_patch_model, check_compatible, check_on_ccd, finish_extraction, CcdData, ExtractError,
    Extraction, PatchReport, Progress, StageTimes, EXTRACT_MASK_BITS,
};
use crate::io::PreprocImage;
use crate::patch::plan::plan_bundle;
use crate::patch::stitch::FrameArrays;
use crate::patch::{ExtractionParams, PaddedGrid, PatchPlan, WavelengthGrid};
use crate::psf::{GaussHermitePsf, SpotTable};
use crate::solve::cpu::solve_patch;
use crate::solve::{BundleInputs, PatchIssue, PatchResult, SolveError};
use crate::trace::Trace;
use cudarc::driver::{CudaEvent, CudaSlice, LaunchConfig, PushKernelArg};
use desi_device::linalg::{banded, banded_team, jacobi, jacobi_team};
use desi_device::patch::{patch_bandwidth, PatchDesc, StampView, PATCH_DESC_WORDS};
use desi_device::spot::{spot_corner, StampCorner};
use desi_device::Status;
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// Threads per block of the one-thread-per-item kernels.
const BLOCK: u32 = 128;

/// Lanes of `factor_solve_team` (>= kd + 1 keeps every lane busy in a column phase).
const FACTOR_LANES: u32 = 64;
/// Lanes of `covariance_team` (one per C_bb column, plus the update tasks).
const COVARIANCE_LANES: u32 = 128;
/// Lanes of `resolution_team` (37 pairs x 2 lanes per pair; measured on an H100 after the index
/// arithmetic clean-up: 96 lanes 144 ms, 128: 167, 160: 155; before it: 128 lanes 251 ms
/// per frame, 96: 281, 160: 281, 256: 333, 64: 409, 512: 564).
const RESOLUTION_LANES: u32 = 96;

/// Thread-block size of a team kernel: `default`, or the tuning override in the environment
/// variable `name` (e.g. `DESI_RESOLUTION_LANES=128`), clamped to 32..=1024.
fn lanes(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(default, |v| v.clamp(32, 1024))
}

/// One thread block of `lanes` per item with `shared_bytes` of dynamic shared memory, raising
/// the kernel's dynamic shared-memory limit when it exceeds the default 48 KB.
fn block_config(
    func: &cudarc::driver::CudaFunction,
    items: usize,
    lanes: u32,
    shared_bytes: usize,
) -> Result<LaunchConfig, GpuError> {
    if shared_bytes > 48 * 1024 {
        func.set_attribute(
            cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            shared_bytes as i32,
        )
        .stage("set the dynamic shared memory size")?;
    }
    Ok(LaunchConfig {
        grid_dim: (items.max(1) as u32, 1, 1),
        block_dim: (lanes, 1, 1),
        shared_mem_bytes: shared_bytes as u32,
    })
}

fn grid_for(items: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((items as u32).div_ceil(BLOCK).max(1), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl From<GpuError> for ExtractError {
    fn from(err: GpuError) -> Self {
        ExtractError::Solve(SolveError::Unavailable {
            backend: "gpu",
            reason: err.to_string(),
        })
    }
}

/// A planned patch with its place in the batch.
struct Planned {
    plan: PatchPlan,
    desc: PatchDesc,
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

/// CUDA events that record timing.
const TIMING_EVENT: cudarc::driver::sys::CUevent_flags =
    cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;

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
        let g = tables.geometry;
        let (xd, yd, pd) = (
            tables.xtrace_domain,
            tables.ytrace_domain,
            tables.param_domain,
        );
        let (xlen, ylen, plen) = (
            tables.xtrace.len(),
            tables.ytrace.len(),
            tables.params.len(),
        );
        let mut b = stream.launch_builder(&gpu.kernels.spots);
        b.arg(&g.hsizex)
            .arg(&g.hsizey)
            .arg(&g.ghdegx)
            .arg(&g.ghdegy)
            .arg(&nfiber)
            .arg(&d_xtrace)
            .arg(&xlen)
            .arg(&d_ytrace)
            .arg(&ylen)
            .arg(&tables.ntrace)
            .arg(&xd.0)
            .arg(&xd.1)
            .arg(&yd.0)
            .arg(&yd.1)
            .arg(&d_params)
            .arg(&plen)
            .arg(&tables.nparam_coeff)
            .arg(&pd.0)
            .arg(&pd.1)
            .arg(&d_wave)
            .arg(&nfull)
            .arg(&mut d_stamps)
            .arg(&mut d_corners)
            .arg(&mut d_spot_status);
        // SAFETY: argument order and types follow `spots` in device/src/kernels.rs; buffers
        // have the sizes documented there.
        unsafe { b.launch(grid_for(nitem)) }.stage("launch spots")?;
    }
    let spots_end = stream
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
    let corner_words = stream
        .clone_dtoh(&d_corners)
        .stage("copy corners to host")?;
    // The spots kernel alone (its stage also holds the overlapped planning and upload).
    let ms = spots_start
        .elapsed_ms(&spots_end)
        .stage("time the spots kernel")?;
    let gpu_time = Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3);
    trace.record("spots kernel", "gpu", t_spots, gpu_time);
    let spot_status = stream
        .clone_dtoh(&d_spot_status)
        .stage("copy spot status to host")?;
    if let Some(i) = spot_status.iter().position(|&s| s != 0) {
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
    let corners: Vec<StampCorner> = corner_words
        .chunks_exact(2)
        .map(|c| StampCorner { xc: c[0], yc: c[1] })
        .collect();
    let bundles = params.bundle_starts();
    // The early plan stands when its corners are the kernel's (always, barring a host/device
    // rounding difference); otherwise plan again from the kernel's corners.
    let (planned, plans_by_bundle) = match early_plan {
        Some(Ok(plan)) if host_corners.as_deref() == Some(corners.as_slice()) => plan,
        _ => plan_frame(psf, &corners, params, &padded, (nrow, ncol), (ny, nx))?,
    };
    let (d_image, d_weight) =
        upload.map_err(|_| GpuError::Internal("the image upload thread panicked".into()))??;
    // The kernels below (main stream) wait for the upload (copy stream).
    stream
        .join(&copy_stream)
        .stage("wait for the image upload")?;

    // Solve in batches sized to the free memory.
    let mut results: Vec<Option<PatchResult>> = (0..planned.len()).map(|_| None).collect();
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
    let batch = ((free as f64 * 0.7) as usize / (8 * per_patch_words))
        .min(planned.len())
        .max(1);
    if free < 8 * per_patch_words {
        return Err(GpuError::Memory(format!(
            "{free} bytes free, one patch needs {}",
            8 * per_patch_words
        ))
        .into());
    }
    let mut done = 0;
    for chunk_start in (0..planned.len()).step_by(batch) {
        let chunk = &planned[chunk_start..(chunk_start + batch).min(planned.len())];
        let outs = solve_batch(
            gpu,
            chunk,
            &d_stamps,
            &d_corners,
            &d_image,
            &d_weight,
            (nrow, ncol),
            params,
            ndiag,
            (ny, nx),
            nmax,
            nspp_max,
            cov_work,
            eig_work,
            &mut stages,
        )?;
        for (i, out) in outs.into_iter().enumerate() {
            results[chunk_start + i] = Some(out);
        }
        done += chunk.len();
        progress(done.min(total), total);
    }

    stages.enter("stitch")?;
    // Stitch, bundles in parallel (disjoint rows); CPU fallback for failed patches.
    let mut arrays = FrameArrays::new(params.specmin, params.nspec, nwave, ndiag);
    let mut gpu_results = planned.iter().zip(results).peekable();
    let mut per_bundle: Vec<Vec<Option<PatchResult>>> = Vec::with_capacity(plans_by_bundle.len());
    for plans in &plans_by_bundle {
        let mut bundle_results = Vec::with_capacity(plans.len());
        for plan in plans {
            bundle_results.push(match gpu_results.peek() {
                Some((p, _)) if p.plan == *plan => gpu_results.next().and_then(|(_, r)| r),
                _ => None,
            });
        }
        per_bundle.push(bundle_results);
    }
    let row_blocks = arrays.row_blocks_mut(params.bundlesize);
    let bundle_reports: Vec<Result<Vec<PatchReport>, ExtractError>> = row_blocks
        .into_par_iter()
        .zip(per_bundle.into_par_iter())
        .enumerate()
        .map(|(bundle, (mut rows, bundle_results))| {
            let plans = &plans_by_bundle[bundle];
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
                            None => {
                                psf.spots(bundles[bundle], params.bundlesize, &padded.fullwave)?
                            }
                        };
                        let inputs = BundleInputs {
                            spots: &spots,
                            plans,
                            ccd: ccd_host.get_or_init(|| CcdData::from_preproc(image)).view(),
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
    let mut reports = Vec::new();
    for r in bundle_reports {
        reports.extend(r?);
    }
    // Model image from the stamps of each bundle (copied back per bundle).
    let mut model = want_model.then(|| vec![0.0; nrow * ncol]);
    if let Some(model) = model.as_mut() {
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
    const CHUNK: usize = 1 << 16;
    image_h
        .par_chunks_mut(CHUNK)
        .zip(pixels.par_chunks(CHUNK))
        .for_each(|(dst, src)| dst.copy_from_slice(src));
    weight_h
        .par_chunks_mut(CHUNK)
        .zip(ivar.par_chunks(CHUNK).zip(mask.par_chunks(CHUNK)))
        .for_each(|(dst, (iv, m))| {
            for ((w, &iv), &m) in dst.iter_mut().zip(iv).zip(m) {
                *w = if m & EXTRACT_MASK_BITS == 0 { iv } else { 0.0 };
            }
        });
    let mut d_both32 = copy_stream
        .alloc_zeros::<f32>(2 * npix)
        .stage("allocate image staging")?;
    copy_stream
        .memcpy_htod(&*host, &mut d_both32)
        .stage("copy image and weights to device")?;
    let mut d_image = copy_stream
        .alloc_zeros::<f64>(npix)
        .stage("allocate image")?;
    let mut d_weight = copy_stream
        .alloc_zeros::<f64>(npix)
        .stage("allocate weights")?;
    for (half, dst) in [(0, &mut d_image), (1, &mut d_weight)] {
        let src = d_both32.slice(half * npix..(half + 1) * npix);
        let mut b = copy_stream.launch_builder(&gpu.kernels.widen_f32);
        b.arg(&npix).arg(&src).arg(dst);
        // SAFETY: `widen_f32(n, src: *const f32, dst: *mut f64)` with n = npix elements each.
        unsafe { b.launch(grid_for(npix)) }.stage("launch widen_f32")?;
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

/// Runs every per-patch kernel on one batch and returns the core outputs in batch order
/// (a failed patch comes back with [`PatchIssue::Failed`]).
#[allow(clippy::too_many_arguments)]
fn solve_batch(
    gpu: &GpuContext,
    chunk: &[Planned],
    d_stamps: &CudaSlice<f64>,
    d_corners: &CudaSlice<i32>,
    d_image: &CudaSlice<f64>,
    d_weight: &CudaSlice<f64>,
    ccd_shape: (usize, usize),
    params: &ExtractionParams,
    ndiag: usize,
    stamp_shape: (usize, usize),
    nmax: usize,
    nspp_max: usize,
    cov_work: usize,
    eig_work: usize,
    stages: &mut Stages,
) -> Result<Vec<PatchResult>, GpuError> {
    stages.enter("allocate")?;
    let stream = &gpu.stream;
    let np = chunk.len();
    let kd_max = chunk.iter().map(|p| p.desc.kd as usize).max().unwrap_or(0);
    let nwavetot = params.nwavetot();
    let nwavestep = params.nwavestep;
    let pad = params.pad();
    // Re-base the band and pixel offsets to this batch.
    let band0 = chunk[0].desc.band_offset;
    let pix0 = chunk[0].desc.pixel_offset;
    let mut words = Vec::with_capacity(np * PATCH_DESC_WORDS);
    let (mut band_len, mut pixels_len) = (0usize, 0usize);
    for p in chunk {
        let mut d = p.desc;
        d.band_offset -= band0;
        d.pixel_offset -= pix0;
        band_len = band_len.max((d.band_offset as usize) + d.band_len(nwavetot));
        pixels_len = pixels_len.max(d.pixel_offset as usize + d.npix());
        words.extend_from_slice(&d.to_words());
    }
    let d_descs = stream.clone_htod(&words).stage("copy patch descriptors")?;
    let mut d_band = stream
        .alloc_zeros::<f64>(band_len.max(1))
        .stage("allocate band matrices")?;
    let mut d_rhs = stream.alloc_zeros::<f64>(np * nmax).stage("allocate rhs")?;
    let mut d_fw = stream
        .alloc_zeros::<f64>(np * nmax)
        .stage("allocate fluxweight")?;
    let mut d_xflux = stream
        .alloc_zeros::<f64>(np * nmax)
        .stage("allocate xflux")?;
    let mut d_status = stream.alloc_zeros::<u32>(np).stage("allocate status")?;
    let ncore = np * nspp_max;
    let block = nwavetot * nwavetot;
    let mut d_cov = stream
        .alloc_zeros::<f64>(ncore * block)
        .stage("allocate covariance")?;
    let team = gpu.mode == KernelMode::Team;
    // The per-thread kernels need global scratch; the team kernels work in shared memory.
    let scratch = |len: usize| if team { 1 } else { len };
    let mut d_cov_work = stream
        .alloc_zeros::<f64>(scratch(ncore * cov_work))
        .stage("allocate covariance scratch")?;
    let (nrow, ncol) = ccd_shape;
    let stamps_len = d_stamps.len();
    let (sny, snx) = stamp_shape;
    stages.enter("assemble")?;

    {
        let mut b = stream.launch_builder(&gpu.kernels.assemble);
        b.arg(&d_descs)
            .arg(&np)
            .arg(&nmax)
            .arg(&nwavetot)
            .arg(d_stamps)
            .arg(&stamps_len)
            .arg(d_corners)
            .arg(&sny)
            .arg(&snx)
            .arg(d_image)
            .arg(d_weight)
            .arg(&nrow)
            .arg(&ncol)
            .arg(&mut d_band)
            .arg(&band_len)
            .arg(&mut d_rhs)
            .arg(&mut d_fw)
            .arg(&mut d_status);
        // SAFETY: argument order and types follow `assemble` in device/src/patch_kernels.rs.
        unsafe { b.launch(grid_for(np * nmax)) }.stage("launch assemble")?;
    }
    stages.enter("cholesky")?;
    {
        let func = if team {
            &gpu.kernels.factor_solve_team
        } else {
            &gpu.kernels.factor_solve
        };
        let mut b = stream.launch_builder(func);
        b.arg(&d_descs)
            .arg(&np)
            .arg(&nmax)
            .arg(&nwavetot)
            .arg(&mut d_band)
            .arg(&band_len)
            .arg(&d_rhs)
            .arg(&d_fw)
            .arg(&params.regularize)
            .arg(&mut d_xflux)
            .arg(&mut d_status);
        let cfg = if team {
            let shared = 8 * (banded_team::band_factor_team_window_len(kd_max) + nmax);
            block_config(func, np, lanes("DESI_FACTOR_LANES", FACTOR_LANES), shared)?
        } else {
            grid_for(np)
        };
        // SAFETY: argument order and types follow `factor_solve` / `factor_solve_team` (same
        // parameters); the team launch gives the documented shared memory.
        unsafe { b.launch(cfg) }.stage("launch factor_solve")?;
    }
    stages.enter("covariance")?;
    {
        let func = if team {
            &gpu.kernels.covariance_team
        } else {
            &gpu.kernels.covariance
        };
        let mut b = stream.launch_builder(func);
        b.arg(&d_descs)
            .arg(&np)
            .arg(&nspp_max)
            .arg(&nwavetot)
            .arg(&d_band)
            .arg(&band_len)
            .arg(&mut d_cov)
            .arg(&mut d_cov_work)
            .arg(&cov_work)
            .arg(&mut d_status);
        let cfg = if team {
            let shared = 8 * (nwavetot + 16) * (kd_max.max(8) + 8);
            block_config(
                func,
                ncore,
                lanes("DESI_COVARIANCE_LANES", COVARIANCE_LANES),
                shared,
            )?
        } else {
            grid_for(ncore)
        };
        // SAFETY: argument order and types follow `covariance` / `covariance_team`.
        unsafe { b.launch(cfg) }.stage("launch covariance")?;
    }
    stages.enter("eigh")?;
    drop(d_cov_work);
    drop(d_band);
    let ndiagonal = 2 * ndiag + 1;
    let mut d_q = stream
        .alloc_zeros::<f64>(scratch(ncore * block))
        .stage("allocate Q")?;
    let mut d_eig_work = stream
        .alloc_zeros::<f64>(scratch(ncore * eig_work))
        .stage("allocate Jacobi scratch")?;
    let mut d_flux = stream
        .alloc_zeros::<f64>(ncore * nwavetot)
        .stage("allocate flux")?;
    let mut d_ivar = stream
        .alloc_zeros::<f64>(ncore * nwavetot)
        .stage("allocate ivar")?;
    let mut d_rdiags = stream
        .alloc_zeros::<f64>(ncore * ndiagonal * nwavestep)
        .stage("allocate Rdiags")?;
    {
        let func = if team {
            &gpu.kernels.resolution_team
        } else {
            &gpu.kernels.resolution
        };
        let mut b = stream.launch_builder(func);
        b.arg(&d_descs)
            .arg(&np)
            .arg(&nspp_max)
            .arg(&nmax)
            .arg(&nwavetot)
            .arg(&ndiag)
            .arg(&pad)
            .arg(&nwavestep)
            .arg(&d_cov)
            .arg(&d_xflux)
            .arg(&mut d_q)
            .arg(&mut d_eig_work)
            .arg(&eig_work)
            .arg(&mut d_flux)
            .arg(&mut d_ivar)
            .arg(&mut d_rdiags)
            .arg(&mut d_status);
        let cfg = if team {
            let lanes = lanes("DESI_RESOLUTION_LANES", RESOLUTION_LANES);
            let shared = 8 * jacobi_team::resolution_team_shared_len(nwavetot, lanes as usize);
            block_config(func, ncore, lanes, shared)?
        } else {
            grid_for(ncore)
        };
        // SAFETY: argument order and types follow `resolution` / `resolution_team`.
        unsafe { b.launch(cfg) }.stage("launch resolution")?;
    }
    stages.enter("finalize")?;
    drop(d_q);
    drop(d_eig_work);
    drop(d_cov);
    let mut d_pixels = stream
        .alloc_zeros::<f64>(pixels_len.max(1))
        .stage("allocate pixel windows")?;
    let mut d_chi2 = stream
        .alloc_zeros::<f64>(ncore * nwavestep)
        .stage("allocate chi2pix")?;
    let mut d_pixmask = stream
        .alloc_zeros::<f64>(ncore * nwavestep)
        .stage("allocate pixmask")?;
    let max_rows = chunk
        .iter()
        .map(|p| (p.desc.row_max - p.desc.row_min).max(0) as usize)
        .max()
        .unwrap_or(0);
    {
        let mut b = stream.launch_builder(&gpu.kernels.pixel_rows);
        b.arg(&d_descs)
            .arg(&np)
            .arg(&max_rows)
            .arg(&nmax)
            .arg(&nwavetot)
            .arg(d_stamps)
            .arg(&stamps_len)
            .arg(d_corners)
            .arg(&sny)
            .arg(&snx)
            .arg(d_image)
            .arg(d_weight)
            .arg(&nrow)
            .arg(&ncol)
            .arg(&d_xflux)
            .arg(&params.psferr)
            .arg(&mut d_pixels)
            .arg(&pixels_len)
            .arg(&mut d_status);
        // SAFETY: argument order and types follow `pixel_rows` in device/src/patch_kernels.rs.
        unsafe { b.launch(grid_for(np * max_rows)) }.stage("launch pixel_rows")?;
    }
    {
        let mut b = stream.launch_builder(&gpu.kernels.pixel_core);
        b.arg(&d_descs)
            .arg(&np)
            .arg(&nspp_max)
            .arg(&nwavetot)
            .arg(&pad)
            .arg(&nwavestep)
            .arg(d_stamps)
            .arg(&stamps_len)
            .arg(d_corners)
            .arg(&sny)
            .arg(&snx)
            .arg(d_image)
            .arg(d_weight)
            .arg(&nrow)
            .arg(&ncol)
            .arg(&d_pixels)
            .arg(&pixels_len)
            .arg(&mut d_chi2)
            .arg(&mut d_pixmask)
            .arg(&mut d_status);
        // SAFETY: argument order and types follow `pixel_core`.
        unsafe { b.launch(grid_for(ncore * nwavestep)) }.stage("launch pixel_core")?;
    }
    stages.enter("copy to host")?;
    let status = stream.clone_dtoh(&d_status).stage("copy status to host")?;
    // The outputs land in one page-locked buffer (pageable copies ran at ~1.5 GB/s).
    let sizes = [
        d_flux.len(),
        d_ivar.len(),
        d_rdiags.len(),
        d_chi2.len(),
        d_pixmask.len(),
    ];
    let mut pinned = gpu.pinned_download(sizes.iter().sum())?;
    let host = pinned.as_mut_slice().stage("map pinned buffer")?;
    let (flux, rest) = host.split_at_mut(sizes[0]);
    let (ivar, rest) = rest.split_at_mut(sizes[1]);
    let (rdiags, rest) = rest.split_at_mut(sizes[2]);
    let (chi2, rest) = rest.split_at_mut(sizes[3]);
    let pixmask = &mut rest[..sizes[4]];
    for (src, dst) in [
        (&d_flux, &mut *flux),
        (&d_ivar, &mut *ivar),
        (&d_rdiags, &mut *rdiags),
        (&d_chi2, &mut *chi2),
        (&d_pixmask, &mut *pixmask),
    ] {
        stream.memcpy_dtoh(src, dst).stage("copy results to host")?;
    }
    stream.synchronize().stage("copy results to host")?;
    let (flux, ivar, rdiags, chi2, pixmask) = (&*flux, &*ivar, &*rdiags, &*chi2, &*pixmask);
    stages.enter("unpack")?;

    let out = chunk
        .par_iter()
        .enumerate()
        .map(|(i, p)| {
            let (nspp, keep) = (p.plan.nspp, p.plan.keep);
            if status[i] != 0 {
                return PatchResult::zeros(
                    nspp,
                    keep,
                    ndiag,
                    PatchIssue::Failed {
                        reason: format!("GPU status {:?}", Status::from_code(status[i])),
                    },
                );
            }
            let mut r = PatchResult::zeros(nspp, keep, ndiag, PatchIssue::OffCcd);
            r.issue = None;
            for c in 0..nspp {
                let item = i * nspp_max + c;
                let src = item * nwavetot + pad;
                r.flux[c * keep..(c + 1) * keep].copy_from_slice(&flux[src..src + keep]);
                r.ivar[c * keep..(c + 1) * keep].copy_from_slice(&ivar[src..src + keep]);
                let src = item * nwavestep;
                r.chi2pix[c * keep..(c + 1) * keep].copy_from_slice(&chi2[src..src + keep]);
                r.pixmask_fraction[c * keep..(c + 1) * keep]
                    .copy_from_slice(&pixmask[src..src + keep]);
                for d in 0..ndiagonal {
                    let src = (item * ndiagonal + d) * nwavestep;
                    let dst = (c * ndiagonal + d) * keep;
                    r.rdiags[dst..dst + keep].copy_from_slice(&rdiags[src..src + keep]);
                }
            }
            r
        })
        .collect();
    Ok(out)
}
