//! The GPU backend ([`Backend`] for [`GpuContext`]): one frame's image, weights and PSF tables
//! go to the device once, the spots of every fiber are evaluated at once, and the patches are
//! solved in batches sized to the device's free memory, two in flight (the host unpacks one
//! while the device solves the next). Planning, stitching, the CPU fallback and finalization
//! are the frame pipeline's ([`crate::extract`]), as for every backend.

use super::batch::{launch_batch, BatchShape, FrameBuffers, PendingBatch, Planned, TIMING_EVENT};
use super::context::{DriverContext, GpuContext, GpuError, KernelMode, PinnedGuard, PINNED_SLOTS};
use super::launch::{lanes, Launch};
use super::memory::{plan_batches, FrameMemory};
use super::schedule;
use crate::extract::{CcdData, PixelLimits};
use crate::job::FrameJob;
use crate::patch::{PaddedGrid, PatchPlan};
use crate::psf::SpotTable;
use crate::solve::{Backend, FrameSolver, PatchResult, SolveError};
use crate::trace::Trace;
use cudarc::driver::{CudaEvent, CudaSlice};
use desi_device::kernels::{
    FrameStamps, PsfTablesArgs, RejectBinsArgs, RejectMaskArgs, SpotsArgs, WidenArgs,
};
use desi_device::linalg::{banded, jacobi};
use desi_device::patch::reject::hit_words;
use desi_device::patch::{PatchDesc, PATCH_DESC_WORDS};
use desi_device::psf::spot::StampCorner;
use desi_device::Status;
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

impl From<GpuError> for SolveError {
    fn from(err: GpuError) -> Self {
        match err {
            GpuError::NoDriver(_) => SolveError::Unavailable {
                backend: "gpu",
                reason: err.to_string(),
            },
            GpuError::Input(reason) => SolveError::Input {
                backend: "gpu",
                reason,
            },
            GpuError::MemoryLimit(_) => SolveError::Input {
                backend: "gpu",
                reason: err.to_string(),
            },
            _ => SolveError::Failed {
                backend: "gpu",
                reason: err.to_string(),
            },
        }
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
    /// The end, when recorded before the stage is finished ([`Stages::mark_end`]).
    end: Option<CudaEvent>,
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
            end: None,
            _range: crate::trace::nvtx_range(name),
        });
        Ok(())
    }

    /// Records the end of the current stage in the stream now; [`Stages::finish`] later waits
    /// for that point only, not for what is enqueued after it.
    fn mark_end(&mut self) -> Result<(), GpuError> {
        if let Some(open) = self.current.as_mut() {
            open.end = Some(
                self.gpu
                    .stream
                    .record_event(Some(TIMING_EVENT))
                    .stage(open.name)?,
            );
        }
        Ok(())
    }

    /// Ends the current stage, if any.
    fn finish(&mut self) -> Result<(), GpuError> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        let end_event = match open.end {
            Some(end) => {
                end.synchronize().stage(open.name)?;
                end
            }
            None => {
                let end = self
                    .gpu
                    .stream
                    .record_event(Some(TIMING_EVENT))
                    .stage(open.name)?;
                self.gpu.stream.synchronize().stage(open.name)?;
                end
            }
        };
        let end = self.trace.now();
        let host = end.saturating_sub(open.start);
        self.trace.record(open.name, "host", open.start, host);
        self.gpu
            .record_device_span(self.trace, open.name, "gpu", &open.event, &end_event)?;
        match self.detail.iter_mut().find(|(n, _)| *n == open.name) {
            Some((_, d)) => *d += host,
            None => self.detail.push((open.name, host)),
        }
        Ok(())
    }
}

impl Backend for GpuContext {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn can_fall_back(&self) -> bool {
        true
    }

    fn begin_frame<'a>(
        &'a self,
        job: &FrameJob<'a>,
        trace: &'a Trace,
    ) -> Result<Box<dyn FrameSolver + 'a>, SolveError> {
        Ok(Box::new(GpuFrame::begin(self, *job, trace)?))
    }
}

/// One frame on the device: its buffers, the spots' corners as the kernel computed them, and
/// the batches of patches still to solve.
struct GpuFrame<'g> {
    gpu: &'g GpuContext,
    job: FrameJob<'g>,
    trace: &'g Trace,
    stages: Stages<'g>,
    padded: PaddedGrid,
    /// Stamps of every (PSF fiber, fullwave) on the device, `(nfiber, nfull, ny, nx)`.
    d_stamps: CudaSlice<f64>,
    /// Their corners on the device, `(nfiber, nfull, 2)` as (xc, yc).
    d_corners: CudaSlice<i32>,
    /// The same corners on the host, `(xc, yc)` pairs in the context's page-locked buffer
    /// (read there: a copy into `StampCorner`s cost ~1 ms before the first batch).
    corners: PinnedGuard<'g, i32>,
    /// The spot status codes of every (fiber, fullwave), checked by [`FrameSolver::start`].
    spot_status: PinnedGuard<'g, u32>,
    d_image: CudaSlice<f64>,
    d_weight: CudaSlice<f64>,
    /// The patches with their device descriptors, in the pipeline's order.
    planned: Vec<Planned>,
    shape: Option<BatchShape>,
    /// The batches, as ranges of `planned`, and the next one to launch.
    ranges: Vec<Range<usize>>,
    next_batch: usize,
    /// The batch in flight.
    pending: Option<(Range<usize>, PendingBatch<'g>)>,
    /// Device bytes the frame holds while its batches run (stamps, corners, image, weights).
    fixed_bytes: u64,
    /// Upper bound of the frame's device bytes (its buffers, then with its batches in flight).
    peak_bytes: u64,
    /// Most patches of one batch (the memory plan's).
    batch_max: usize,
    /// The weights with one class of bundles' rejected pixels at 0 (the outlier rejection's
    /// re-solves; allocated on first use).
    d_masked: Option<CudaSlice<f64>>,
    /// Where windows of two bundles overlap (`crate::extract::shared_windows`), with the
    /// outlier rejection: per CCD column, the row ranges.
    shared: std::collections::HashMap<i32, Vec<Range<i32>>>,
    /// What `begin` enqueued and `start` waits for, after the first batch is enqueued behind
    /// it ([`GpuFrame::finish_begin`]).
    begun: Option<Begun>,
}

/// The events of a frame's beginning: the spots kernel's start and end, and the end of the
/// copies of its corners and status codes to the host.
struct Begun {
    spots: (CudaEvent, CudaEvent),
    spot_copies: CudaEvent,
    /// The upload's device spans (track `upload`), recorded once the stage is waited for.
    upload: Vec<DeviceSpan>,
}

/// A span of device time between two events, named for the trace.
type DeviceSpan = (&'static str, CudaEvent, CudaEvent);

/// The CCD on the device: image and extraction weights (f64), and the device spans of their
/// upload (none when the pixels were on the device already).
struct DeviceCcd {
    image: CudaSlice<f64>,
    weight: CudaSlice<f64>,
    upload: Vec<DeviceSpan>,
}

impl<'g> GpuFrame<'g> {
    /// Copies the PSF tables, launches the spots kernel for every PSF fiber, uploads the image
    /// and weights meanwhile, and brings the corners and status codes back.
    fn begin(gpu: &'g GpuContext, job: FrameJob<'g>, trace: &'g Trace) -> Result<Self, GpuError> {
        let (psf, image) = (job.psf, job.image);
        let mut stages = Stages::new(gpu, trace);
        stages.enter("spots + upload")?;
        let stream = &gpu.stream;
        let padded = job.padded_grid();
        let nfull = padded.nfull();
        let flat = psf.flatten();
        let tables = psf.tables(&flat);
        let nfiber = psf.nspec;
        let nitem = nfiber * nfull;
        let (ny, nx) = (psf.stamp_ny(), psf.stamp_nx());
        // Refuse a frame the caller's cap cannot hold before allocating anything.
        let npix = (image.ny * image.nx) as u64;
        // (With the outlier rejection, the masked copy of the weights of its re-solves.)
        let masked_bytes = if job.reject.is_some() { 8 * npix } else { 0 };
        let fixed_bytes =
            8 * (nitem * ny * nx) as u64 + 4 * 2 * nitem as u64 + 16 * npix + masked_bytes;
        let table_bytes =
            8 * (tables.xtrace.len() + tables.ytrace.len() + tables.params.len() + nfull) as u64;
        // While it begins: the spot status codes, the PSF tables and the f32 upload staging.
        let begin_bytes = fixed_bytes + 4 * nitem as u64 + table_bytes + 8 * npix;
        if let Some(limit) = gpu.memory_limit() {
            if begin_bytes > limit {
                return Err(GpuError::MemoryLimit(format!(
                    "the GPU memory cap {} ({limit} bytes) is too small for this frame: its PSF \
                     stamps ({nfiber} fibers x {nfull} wavelengths of {ny}x{nx} pixels), image \
                     and weights ({}x{} pixels) need {} ({begin_bytes} bytes) before any patch",
                    super::memory::format_bytes(limit),
                    image.ny,
                    image.nx,
                    super::memory::format_bytes(begin_bytes),
                )));
            }
        }
        let (d_xtrace, d_ytrace, d_params, d_wave) = trace.span("copy PSF", || {
            Ok::<_, GpuError>((
                stream.clone_htod(tables.xtrace).stage("copy PSF")?,
                stream.clone_htod(tables.ytrace).stage("copy PSF")?,
                stream.clone_htod(tables.params).stage("copy PSF")?,
                stream
                    .clone_htod(&padded.fullwave)
                    .stage("copy wavelengths")?,
            ))
        })?;
        // Not cleared (clearing the stamps took ~0.7 ms of the device before the spots kernel
        // on a full frame): the spots kernel writes every spot's corner and status code, and
        // every pixel of each spot it succeeds on (corner (0, 0) on failure); a frame with a
        // failed spot fails in `check_spots` before any result of its batches is used.
        // SAFETY: every element the host uses is written by the spots kernel first; the
        // batches' kernels read stamp values only as numbers (indices come from the corners).
        let (mut d_stamps, mut d_corners, mut d_spot_status) =
            trace.span("allocate stamps", || unsafe {
                Ok::<_, GpuError>((
                    stream
                        .alloc::<f64>(nitem * ny * nx)
                        .stage("allocate stamps")?,
                    stream.alloc::<i32>(2 * nitem).stage("allocate corners")?,
                    stream.alloc::<u32>(nitem).stage("allocate spot status")?,
                ))
            })?;
        let spots_start = stream
            .record_event(Some(TIMING_EVENT))
            .stage("record an event")?;
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
            // One team per spot (shared scratch; 16 lanes unless DESI_SPOT_TEAM_LANES says
            // otherwise) unless the per-thread kernels are asked for.
            let (kernel, shape) = if gpu.mode == KernelMode::Team {
                let warps = lanes("DESI_SPOT_LANES", 32 * SpotsArgs::TEAM_WARPS) / 32;
                let team = gpu.spot_team;
                (
                    team.kernel(&gpu.kernels),
                    args.team_shape(warps, team.lanes()),
                )
            } else {
                (&gpu.kernels.spots, args.shape())
            };
            // SAFETY: the tables are copies of `tables`, `wave` has nfull values, stamps, corners
            // and status nfiber * nfull spots (nfiber = tables.nspec); the shape is the kernel's.
            trace.span("launch spots", || unsafe { l.run(kernel, shape, &args) })?;
        }
        let spots_end = stream
            .record_event(Some(TIMING_EVENT))
            .stage("record an event")?;
        // The corners and status codes come back to page-locked memory on the download
        // stream, after the spots kernel but beside the first batch's kernels (on the main
        // stream they delayed them by ~0.3 ms).
        let download = &gpu.download;
        download
            .wait(&spots_end)
            .stage("wait for the spots kernel")?;
        let mut corner_buf = gpu.pinned_corners(2 * nitem)?;
        download
            .memcpy_dtoh(
                &d_corners,
                corner_buf.as_mut_slice().stage("map pinned buffer")?,
            )
            .stage("copy corners to host")?;
        let mut status_buf = gpu.pinned_spot_status(nitem)?;
        download
            .memcpy_dtoh(
                &d_spot_status,
                status_buf.as_mut_slice().stage("map pinned buffer")?,
            )
            .stage("copy spot status to host")?;
        let spot_copies = download
            .record_event(Some(TIMING_EVENT))
            .stage("record an event")?;
        // A stream of its own, not a fork of the main one: a fork waits for the spots kernel,
        // and the copies ran after it instead of beside it. At the device's highest priority,
        // so that the widening's blocks go ahead of the spots kernel's waiting ones.
        let copy_stream = gpu.urgent_stream()?;
        let DeviceCcd {
            image: d_image,
            weight: d_weight,
            upload,
        } = match &job.device_pixels {
            // Pixels already on the device: screened there, never copied to the host.
            Some(pixels) => {
                let (image, weight) =
                    super::pixels::screen_device_pixels(gpu, &copy_stream, pixels, &job, trace)?;
                DeviceCcd {
                    image,
                    weight,
                    upload: Vec::new(),
                }
            }
            None => upload_ccd(gpu, &copy_stream, image, &job.pixel_limits, trace)?,
        };
        // The kernels of the batches (main stream) wait for the upload (copy stream).
        stream
            .join(&copy_stream)
            .stage("wait for the image upload")?;
        // Not waited for here: `start` enqueues the first batch behind it first.
        stages.mark_end()?;
        Ok(Self {
            gpu,
            job,
            trace,
            stages,
            padded,
            d_stamps,
            d_corners,
            corners: corner_buf,
            spot_status: status_buf,
            d_image,
            d_weight,
            planned: Vec::new(),
            shape: None,
            ranges: Vec::new(),
            next_batch: 0,
            pending: None,
            fixed_bytes,
            peak_bytes: begin_bytes,
            batch_max: 1,
            d_masked: None,
            shared: Default::default(),
            begun: Some(Begun {
                spots: (spots_start, spots_end),
                spot_copies,
                upload,
            }),
        })
    }

    /// Waits for the spots kernel, the copies of its corners and status codes and the image
    /// upload (once), and records their times.
    fn finish_begin(&mut self) -> Result<(), GpuError> {
        let Some(begun) = self.begun.take() else {
            return Ok(());
        };
        self.stages.finish()?;
        begun
            .spot_copies
            .synchronize()
            .stage("copy corners and spot status to host")?;
        let (start, end) = &begun.spots;
        self.gpu
            .record_device_span(self.trace, "spots kernel", "gpu", start, end)?;
        // The upload's events precede the stage's end (the main stream joined its stream).
        for (name, before, after) in &begun.upload {
            self.gpu
                .record_device_span(self.trace, name, "upload", before, after)?;
        }
        Ok(())
    }

    /// The spots' corners as `(xc, yc)` pairs and their status codes, once their copies to the
    /// host are complete.
    fn host_spots(&self) -> Result<(&[i32], &[u32]), GpuError> {
        if let Some(begun) = &self.begun {
            begun
                .spot_copies
                .synchronize()
                .stage("copy corners and spot status to host")?;
        }
        Ok((
            self.corners.as_slice().stage("map pinned buffer")?,
            self.spot_status.as_slice().stage("map pinned buffer")?,
        ))
    }

    /// Checks the device's spots against the host's corners of `tables` (one per bundle).
    fn check_spots(&self, tables: &[&SpotTable]) -> Result<(), SolveError> {
        let nfull = self.padded.nfull();
        let psf = self.job.psf;
        let (pairs, status) = self.host_spots()?;
        if let Some(i) = status.par_iter().position_first(|&s| s != 0) {
            return Err(SolveError::Psf(psf.spot_error(
                i / nfull,
                self.padded.fullwave[i % nfull],
                Status::from_code(status[i]),
            )));
        }
        // Bundles in parallel.
        let differs = tables.par_iter().find_first(|table| {
            let start = 2 * table.ispec_min * nfull;
            match pairs.get(start..start + 2 * table.corners.len()) {
                Some(device) => device
                    .chunks_exact(2)
                    .zip(&table.corners)
                    .any(|(d, host)| d[0] != host.xc || d[1] != host.yc),
                None => true,
            }
        });
        match differs {
            Some(table) => Err(SolveError::Failed {
                backend: "gpu",
                reason: format!(
                    "the device's stamp corners of fibers {}..{} differ from the host's (the \
                     spot code of the two targets disagrees: a bug)",
                    table.ispec_min,
                    table.ispec_min + table.nspec
                ),
            }),
            None => Ok(()),
        }
    }

    /// The device descriptor of every plan (bandwidth and frame-wide buffer offsets).
    fn describe(&self, plans: Vec<PatchPlan>) -> Vec<Planned> {
        let params = self.job.params;
        let (nfull, pad, nwavetot) = (self.padded.nfull(), params.pad(), params.nwavetot());
        let (mut band_total, mut pixel_total) = (0u64, 0u64);
        plans
            .into_iter()
            .filter_map(|plan| {
                let window = plan.window?;
                let desc = PatchDesc {
                    stamp_offset: (plan.s0 * nfull + (plan.iwave - pad)) as u64,
                    fiber_stride: nfull as u64,
                    nspecpad: plan.nspecpad as u64,
                    nspp: plan.nspp as u64,
                    s_core: (plan.ispec - plan.s0) as u64,
                    keep: plan.keep as u64,
                    row_min: window.row_min as i64,
                    row_max: window.row_max as i64,
                    col_min: window.col_min as i64,
                    col_max: window.col_max as i64,
                    kd: plan.kd as u64,
                    band_offset: band_total,
                    pixel_offset: pixel_total,
                };
                band_total += desc.band_len(nwavetot) as u64;
                pixel_total += desc.npix() as u64;
                Some(Planned { plan, desc })
            })
            .collect()
    }

    /// Sizes the batches to the free device memory and the caller's cap (docs/design.md §5.2,
    /// [`plan_batches`]): two in flight share them, and a frame has at least [`batches`] of
    /// them, and a short last one (`schedule::batch_ranges`).
    fn size_batches(&mut self) -> Result<(), GpuError> {
        let params = self.job.params;
        let ndiag = self.job.ndiag();
        let nwavetot = params.nwavetot();
        let nspp_max = params.bundlesize / params.nsubbundles;
        let nmax = (nspp_max + 2) * nwavetot;
        let kd_max = self
            .planned
            .iter()
            .map(|p| p.desc.kd as usize)
            .max()
            .unwrap_or(0);
        let cov_work = banded::band_covariance_blocks_work_len(nmax, kd_max, nspp_max + 2).max(
            banded::band_covariance_blocks_work_len(
                (nspp_max + 1) * nwavetot,
                kd_max,
                nspp_max + 1,
            ),
        );
        let eig_work = jacobi::inverse_sqrt_work_len(nwavetot);
        let per_core = 2 * nwavetot * nwavetot
            + cov_work
            + eig_work
            + 2 * nwavetot
            + (2 * ndiag + 4) * params.nwavestep;
        // The outlier test's masks and counts (u32, per window row), when the job rejects.
        let scan_words = if self.job.reject.is_some() {
            let (rows, cols) = self.planned.iter().fold((0, 0), |(r, c), p| {
                let d = &p.desc;
                (
                    r.max((d.row_max - d.row_min).max(0) as usize),
                    c.max((d.col_max - d.col_min).max(0) as usize),
                )
            });
            (rows * (hit_words(cols) + 1)).div_ceil(2)
        } else {
            0
        };
        // Every buffer of a batch is alive until the batch is collected (batch.rs,
        // `BatchBuffers`): the sum of them all, the pixel windows at the largest of the frame.
        let window_words = self
            .planned
            .iter()
            .map(|p| p.desc.npix())
            .max()
            .unwrap_or(0);
        let per_patch_words = nmax * (kd_max + 1)
            + 3 * nmax
            + nspp_max * per_core
            + window_words
            + PATCH_DESC_WORDS
            + 1
            + scan_words;
        let (free, _) = self.gpu.memory()?;
        let plan = plan_batches(
            FrameMemory {
                npatch: self.planned.len(),
                per_patch: 8 * per_patch_words as u64,
                fixed: self.fixed_bytes,
                in_flight: PINNED_SLOTS,
                min_batches: batches(),
            },
            free as u64,
            self.gpu.memory_limit(),
        )?;
        self.peak_bytes = self.peak_bytes.max(plan.peak_bytes);
        // The plan's batch size bounds every range (so its peak holds); within it, the frame
        // ends with a short tail batch.
        self.ranges = schedule::batch_ranges(
            self.planned.len(),
            plan.batch,
            batches(),
            schedule::tail_percent(),
        );
        self.shape = Some(BatchShape {
            nmax,
            nspp_max,
            cov_work,
            eig_work,
            ndiag,
            reject_threshold: self.job.reject.map(|c| c.nsigma * c.nsigma),
        });
        self.batch_max = plan.batch.max(1);
        Ok(())
    }

    /// The classes (indices into `plans`) whose re-solves share one masked copy of the
    /// weights: all of them when no masked pixel lies where windows of two bundles overlap
    /// (each bundle's mask then reaches its own windows only), else the even and the odd
    /// bundles (no two of a class share a pixel: `start` checks it). `DESI_REJECT_CLASSES=
    /// parity` always takes the two classes (the same results: to compare the cost).
    fn resolve_classes(&self, plans: &[PatchPlan], masks: &[&[u64]]) -> Vec<Vec<usize>> {
        let ncol = self.job.image.nx;
        let mut seen = std::collections::BTreeSet::new();
        let leaks = std::env::var("DESI_REJECT_CLASSES").as_deref() == Ok("parity")
            || plans.iter().zip(masks).any(|(plan, mask)| {
                seen.insert(plan.bundle)
                    && mask.iter().any(|&p| {
                        let (row, col) = ((p as usize / ncol) as i32, (p as usize % ncol) as i32);
                        self.shared
                            .get(&col)
                            .is_some_and(|rows| rows.iter().any(|r| r.contains(&row)))
                    })
            });
        if !leaks {
            return vec![(0..plans.len()).collect()];
        }
        (0..2)
            .map(|parity| {
                (0..plans.len())
                    .filter(|&i| plans[i].bundle % 2 == parity)
                    .collect()
            })
            .collect()
    }

    /// `d_masked` := the frame's weights with the pixels `mask` (CCD indices) at 0 (allocated
    /// on first use; the memory plan counts it).
    fn mask_weights(&mut self, mask: &[u64]) -> Result<(), GpuError> {
        let stream = &self.gpu.stream;
        let npix = self.d_weight.len();
        if self.d_masked.is_none() {
            self.d_masked = Some(
                stream
                    .alloc_zeros::<f64>(npix)
                    .stage("allocate masked weights")?,
            );
        }
        let Some(masked) = self.d_masked.as_mut() else {
            return Err(GpuError::Internal("no masked weights".into()));
        };
        stream
            .memcpy_dtod(&self.d_weight, masked)
            .stage("copy the weights")?;
        if mask.is_empty() {
            return Ok(());
        }
        let d_mask = stream.clone_htod(mask).stage("copy the rejected pixels")?;
        let mut l = Launch::on(stream);
        let args = RejectMaskArgs {
            n: mask.len(),
            pixels: l.read(&d_mask),
            weight: l.write(masked),
            npix,
        };
        // SAFETY: pixels holds n indices, weight npix values (indices beyond are skipped).
        unsafe { l.run(&self.gpu.kernels.reject_mask, args.shape(), &args) }?;
        Ok(())
    }

    /// Launches batch `self.next_batch`, if any is left.
    fn launch_next(&mut self) -> Result<Option<(Range<usize>, PendingBatch<'g>)>, GpuError> {
        let (Some(range), Some(shape)) = (self.ranges.get(self.next_batch).cloned(), self.shape)
        else {
            return Ok(None);
        };
        let slot = self.next_batch % PINNED_SLOTS;
        self.next_batch += 1;
        let psf = self.job.psf;
        let buffers = FrameBuffers {
            stamps: &self.d_stamps,
            corners: &self.d_corners,
            image: &self.d_image,
            weight: &self.d_weight,
            ccd_shape: (self.job.image.ny, self.job.image.nx),
            stamp_shape: (psf.stamp_ny(), psf.stamp_nx()),
        };
        let batch = self.trace.span("launch", || {
            launch_batch(
                self.gpu,
                slot,
                &self.planned[range.clone()],
                &buffers,
                self.job.params,
                shape,
                self.trace,
                None,
            )
        })?;
        Ok(Some((range, batch)))
    }
}

impl FrameSolver for GpuFrame<'_> {
    fn spots(&self, ispec_min: usize, nspec: usize) -> Result<Arc<SpotTable>, SolveError> {
        let psf = self.job.psf;
        psf.check_fibers(ispec_min, nspec)?;
        let (nfull, ny, nx) = (self.padded.nfull(), psf.stamp_ny(), psf.stamp_nx());
        let size = ny * nx;
        let fibers = ispec_min * nfull..(ispec_min + nspec) * nfull;
        let view = self.d_stamps.slice(fibers.start * size..fibers.end * size);
        let stamps = self
            .gpu
            .stream
            .clone_dtoh(&view)
            .stage("copy stamps to host")?;
        Ok(Arc::new(SpotTable {
            ispec_min,
            nspec,
            nwave: nfull,
            ny,
            nx,
            stamps,
            corners: self.host_spots()?.0[2 * fibers.start..2 * fibers.end]
                .chunks_exact(2)
                .map(|c| StampCorner { xc: c[0], yc: c[1] })
                .collect(),
        }))
    }

    fn start(&mut self, plans: Vec<PatchPlan>, corners: &[&SpotTable]) -> Result<(), SolveError> {
        if self.job.reject.is_some() {
            // The re-solves mask the pixels of a class of bundles (even, odd) in one copy of
            // the weights: right only while no two bundles of a class share a pixel.
            let bundles: Vec<&[PatchPlan]> = plans.chunk_by(|a, b| a.bundle == b.bundle).collect();
            for parity in 0..2 {
                let class: Vec<&[PatchPlan]> = bundles
                    .iter()
                    .filter(|b| b[0].bundle % 2 == parity)
                    .copied()
                    .collect();
                crate::extract::check_disjoint(&class).map_err(|reason| SolveError::Failed {
                    backend: "gpu",
                    reason,
                })?;
            }
            self.shared.clear();
            for w in crate::extract::shared_windows(&bundles) {
                for col in w.col_min..w.col_max {
                    self.shared
                        .entry(col)
                        .or_default()
                        .push(w.row_min..w.row_max);
                }
            }
        }
        self.planned = self.trace.span("describe", || self.describe(plans));
        self.trace.span("size batches", || self.size_batches())?;
        // The first batch goes to the device before the spots are checked: the check (~2 ms on
        // the host) then overlaps the batch's kernels instead of delaying them, and no result
        // leaves the solver before it passed (a failed check fails the frame; the batch in
        // flight is dropped with it).
        if self.pending.is_none() {
            self.pending = self.launch_next()?;
        }
        self.finish_begin()?;
        self.trace
            .span("check spots", || self.check_spots(corners))?;
        Ok(())
    }

    fn next_results(&mut self) -> Result<Option<(usize, Vec<PatchResult>)>, SolveError> {
        loop {
            // Launch the next batch before collecting the one in flight: two in flight.
            let launched = self.launch_next()?;
            let Some((range, batch)) = std::mem::replace(&mut self.pending, launched) else {
                if self.pending.is_some() {
                    continue;
                }
                return Ok(None);
            };
            let shape = self
                .shape
                .ok_or_else(|| GpuError::Internal("no batch shape".into()))?;
            let results = batch.collect(
                self.gpu,
                &self.planned[range.clone()],
                self.job.params,
                shape,
                self.trace,
                &mut self.stages.detail,
            )?;
            return Ok(Some((range.start, results)));
        }
    }

    fn stage_times(&self) -> Vec<(&'static str, Duration)> {
        self.stages.detail.clone()
    }

    /// The re-solves of the outlier rejection on the device, in classes of bundles
    /// ([`GpuFrame::resolve_classes`]: one, or even and odd where a masked pixel lies in an
    /// edge column that neighbouring bundles' windows share): per class, a copy of the
    /// frame's weights with the class's masked pixels at 0 (`reject_mask`; each bundle's mask
    /// then reaches its own windows only), and its plans through the batch kernels (with the
    /// outlier test) in batches of the memory plan's size, each waited for. The frame's own
    /// weights, which the first pass still reads, are never changed.
    fn resolve(
        &mut self,
        plans: &[PatchPlan],
        masks: &[&[u64]],
    ) -> Result<Vec<PatchResult>, SolveError> {
        let shape = self
            .shape
            .ok_or_else(|| GpuError::Internal("no batch shape".into()))?;
        if shape.reject_threshold.is_none() || masks.len() != plans.len() {
            return Err(GpuError::Internal(format!(
                "re-solve of {} patches with {} masks asked of a job {} rejection",
                plans.len(),
                masks.len(),
                if shape.reject_threshold.is_some() {
                    "with"
                } else {
                    "without"
                }
            ))
            .into());
        }
        let start = self.trace.now();
        let mut out: Vec<Option<PatchResult>> = plans.iter().map(|_| None).collect();
        for class in self.resolve_classes(plans, masks) {
            if class.is_empty() {
                continue;
            }
            // The class's masks, one per bundle.
            let mut bundles = std::collections::BTreeSet::new();
            let mut union: Vec<u64> = Vec::new();
            for &i in &class {
                if bundles.insert(plans[i].bundle) {
                    union.extend_from_slice(masks[i]);
                }
            }
            self.mask_weights(&union)?;
            let planned = self.describe(class.iter().map(|&i| plans[i].clone()).collect());
            if planned.len() != class.len() {
                return Err(GpuError::Internal("a re-solved patch has no window".into()).into());
            }
            let psf = self.job.psf;
            let Some(masked) = self.d_masked.as_ref() else {
                return Err(GpuError::Internal("no masked weights".into()).into());
            };
            let buffers = FrameBuffers {
                stamps: &self.d_stamps,
                corners: &self.d_corners,
                image: &self.d_image,
                weight: masked,
                ccd_shape: (self.job.image.ny, self.job.image.nx),
                stamp_shape: (psf.stamp_ny(), psf.stamp_nx()),
            };
            // The download slot the first pass is not using (its batch in flight holds the
            // other).
            let slot = self.next_batch % PINNED_SLOTS;
            let mut done = 0;
            for chunk in planned.chunks(self.batch_max) {
                let batch = launch_batch(
                    self.gpu,
                    slot,
                    chunk,
                    &buffers,
                    self.job.params,
                    shape,
                    self.trace,
                    Some(RESOLVE_STAGE),
                )?;
                let results = batch.collect(
                    self.gpu,
                    chunk,
                    self.job.params,
                    shape,
                    self.trace,
                    &mut self.stages.detail,
                )?;
                for (&i, result) in class[done..].iter().zip(results) {
                    out[i] = Some(result);
                }
                done += chunk.len();
            }
        }
        let end = self.trace.now();
        self.trace
            .record(RESOLVE_STAGE, "host", start, end.saturating_sub(start));
        out.into_iter()
            .map(|r| r.ok_or_else(|| GpuError::Internal("a patch was not re-solved".into()).into()))
            .collect()
    }

    /// The per-bin counts of the rejected pixels on the device (`reject_bins`, the function
    /// the CPU backend runs).
    fn rejected_bin_counts(
        &mut self,
        patches: &[(PatchPlan, Vec<u64>)],
    ) -> Result<Vec<Vec<u16>>, SolveError> {
        if patches.is_empty() {
            return Ok(Vec::new());
        }
        let start = self.trace.now();
        let params = self.job.params;
        let planned = self.describe(patches.iter().map(|(p, _)| p.clone()).collect());
        if planned.len() != patches.len() {
            return Err(GpuError::Internal("a rejecting patch has no window".into()).into());
        }
        let words: Vec<u64> = planned.iter().flat_map(|p| p.desc.to_words()).collect();
        let mut offsets = Vec::with_capacity(patches.len() + 1);
        offsets.push(0u64);
        let mut pixels = Vec::new();
        for (_, list) in patches {
            pixels.extend_from_slice(list);
            offsets.push(pixels.len() as u64);
        }
        let nspp_max = planned.iter().map(|p| p.plan.nspp).max().unwrap_or(1);
        let nwavestep = params.nwavestep;
        let stream = &self.gpu.stream;
        let d_descs = stream.clone_htod(&words).stage("copy patch descriptors")?;
        let d_offsets = stream.clone_htod(&offsets).stage("copy pixel offsets")?;
        let d_pixels = stream
            .clone_htod(if pixels.is_empty() {
                &[0u64][..]
            } else {
                &pixels
            })
            .stage("copy the rejected pixels")?;
        let mut d_counts = stream
            .alloc_zeros::<u32>(planned.len() * nspp_max * nwavestep)
            .stage("allocate bin counts")?;
        let psf = self.job.psf;
        {
            let mut l = Launch::on(stream);
            let args = RejectBinsArgs {
                descs: l.read(&d_descs).cast::<PatchDesc>(),
                npatch: planned.len(),
                nspp_max,
                nwavestep,
                pad: params.pad(),
                stamps: FrameStamps {
                    stamps: l.read(&self.d_stamps),
                    stamps_len: self.d_stamps.len(),
                    corners: l.read(&self.d_corners).cast::<StampCorner>(),
                    ny: psf.stamp_ny(),
                    nx: psf.stamp_nx(),
                },
                ncol: self.job.image.nx,
                offsets: l.read(&d_offsets),
                pixels: l.read(&d_pixels),
                min_fraction: crate::solve::outliers::BIN_PIXEL_WEIGHT,
                counts: l.write(&mut d_counts),
            };
            // SAFETY: descs holds npatch descriptors of plans of this frame (stamps inside the
            // frame's table), offsets npatch + 1 ascending values ending at the length of
            // pixels (one unused value when empty), counts npatch * nspp_max * nwavestep
            // (nspp <= nspp_max, keep <= nwavestep).
            unsafe { l.run(&self.gpu.kernels.reject_bins, args.shape(), &args) }?;
        }
        let counts = stream
            .clone_dtoh(&d_counts)
            .stage("copy bin counts to host")?;
        let out = planned
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (nspp, keep) = (p.plan.nspp, p.plan.keep);
                let mut bins = Vec::with_capacity(nspp * keep);
                for c in 0..nspp {
                    let src = (i * nspp_max + c) * nwavestep;
                    bins.extend(
                        counts[src..src + keep]
                            .iter()
                            .map(|&n| n.min(u32::from(u16::MAX)) as u16),
                    );
                }
                bins
            })
            .collect();
        let end = self.trace.now();
        self.trace
            .record("reject bins", "host", start, end.saturating_sub(start));
        add_stage(
            &mut self.stages.detail,
            "reject bins",
            end.saturating_sub(start),
        );
        Ok(out)
    }

    fn device_peak_bytes(&self) -> Option<u64> {
        Some(self.peak_bytes)
    }

    /// The screened CCD copied back from the device, for a job whose pixels are in device
    /// memory (the CPU fallback's only source of pixels then); `None` for a job with host
    /// pixels, whose fallback converts them itself.
    fn host_ccd(&self) -> Result<Option<CcdData>, SolveError> {
        if self.job.device_pixels.is_none() {
            return Ok(None);
        }
        let stream = &self.gpu.stream;
        let image = stream
            .clone_dtoh(&self.d_image)
            .stage("copy the screened image to host")?;
        let weight = stream
            .clone_dtoh(&self.d_weight)
            .stage("copy the screened weights to host")?;
        Ok(Some(CcdData {
            nrow: self.job.image.ny,
            ncol: self.job.image.nx,
            image,
            weight,
        }))
    }
}

/// The stage name of the outlier rejection's re-solves on the device (every kernel of their
/// batches; `selftest --gpu --reject-outliers` requires it when the CPU rejected pixels).
pub const RESOLVE_STAGE: &str = "reject re-solve";

/// The stage name of the outlier test on the device (`reject_scan`, in every batch of a job
/// that rejects; `selftest --gpu --reject-outliers` requires it).
pub const SCAN_STAGE: &str = "reject scan";

/// Adds `time` to stage `name` of `detail` (appended the first time).
fn add_stage(detail: &mut Vec<(&'static str, Duration)>, name: &'static str, time: Duration) {
    match detail.iter_mut().find(|(n, _)| *n == name) {
        Some((_, d)) => *d += time,
        None => detail.push((name, time)),
    }
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

/// Parts of the image upload (filling the page-locked buffer overlaps the copy of the part
/// before), `DESI_UPLOAD_PARTS` or 4.
fn upload_parts() -> usize {
    std::env::var("DESI_UPLOAD_PARTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(4, |v| v.clamp(1, 64))
}

/// Uploads the image and the extraction weights (by the rule of [`PixelLimits::pixel`]: IVAR
/// where `(MASK & 0x2FF) == 0` and the pixel passes the screen, else 0 and the value 0; exact in
/// f32) as f32 through the context's page-locked staging buffer and widens them to f64 on
/// the device, all on `copy_stream`; returns once the copies have read the staging buffer
/// (the widening may still be waiting for the device), with the device spans of the copies
/// and the widening.
fn upload_ccd(
    gpu: &GpuContext,
    copy_stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    preproc: &crate::io::PreprocImage,
    limits: &PixelLimits,
    trace: &Trace,
) -> Result<DeviceCcd, GpuError> {
    let (pixels, ivar, mask) = (&preproc.image, &preproc.ivar, &preproc.mask);
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
    // Each part's copy and the widening, timed on the device (trace track `upload`).
    let parts = upload_parts();
    let mut device_spans = Vec::with_capacity(parts + 1);
    // In parts: the copy engine moves one part while the host fills the next.
    const CHUNK: usize = 1 << 16;
    let part = npix.div_ceil(parts).max(1);
    for start in (0..npix).step_by(part) {
        let range = start..(start + part).min(npix);
        let (image_p, weight_p) = (&mut image_h[range.clone()], &mut weight_h[range.clone()]);
        trace.span("fill upload part", || {
            image_p
                .par_chunks_mut(CHUNK)
                .zip(weight_p.par_chunks_mut(CHUNK))
                .zip(pixels[range.clone()].par_chunks(CHUNK))
                .zip(
                    ivar[range.clone()]
                        .par_chunks(CHUNK)
                        .zip(mask[range.clone()].par_chunks(CHUNK)),
                )
                .for_each(|(((im, wt), src), (iv, m))| limits.screen_into(src, iv, m, im, wt))
        });
        let before = copy_stream
            .record_event(Some(TIMING_EVENT))
            .stage("record an event")?;
        for (offset, src) in [(0, &*image_p), (npix, &*weight_p)] {
            let mut dst = d_both32.slice_mut(offset + range.start..offset + range.end);
            copy_stream
                .memcpy_htod(src, &mut dst)
                .stage("copy image and weights to device")?;
        }
        let after = copy_stream
            .record_event(Some(TIMING_EVENT))
            .stage("record an event")?;
        device_spans.push(("upload part", before, after));
    }
    let copied = copy_stream.record_event(None).stage("record an event")?;
    let mut d_image = copy_stream
        .alloc_zeros::<f64>(npix)
        .stage("allocate image")?;
    let mut d_weight = copy_stream
        .alloc_zeros::<f64>(npix)
        .stage("allocate weights")?;
    let widen_start = copy_stream
        .record_event(Some(TIMING_EVENT))
        .stage("record an event")?;
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
    let widen_end = copy_stream
        .record_event(Some(TIMING_EVENT))
        .stage("record an event")?;
    device_spans.push(("widen", widen_start, widen_end));
    // The staging buffer goes back to the context only after the copies have read it; the
    // widening is not waited for (it runs when the spots kernel leaves room for it).
    copied
        .synchronize()
        .stage("copy image and weights to device")?;
    drop(staging);
    trace.record(
        "copy to device",
        "host",
        start,
        trace.now().saturating_sub(start),
    );
    Ok(DeviceCcd {
        image: d_image,
        weight: d_weight,
        upload: device_spans,
    })
}
