//! Every frame of one exposure (up to 30: cameras b, r, z of spectrographs 0..9), with
//! desi_proc's per-camera grids and PSF errors (docs/algorithm.md §8), over the ranks of a
//! [`Comm`]:
//!
//! - **Pipeline** (3+ ranks, [`pipeline`]): rank 0 reads, rank 1 writes, ranks 2.. extract whole
//!   frames in turn.
//! - **Shared frames** (1 or 2 ranks, or no overlap; [`shared`]): rank 0 reads and writes, every
//!   rank extracts its share of each frame's bundles, so the frames are bitwise those of one
//!   rank.
//!
//! MPI calls stay on each rank's main thread (MPI is initialized `MPI_THREAD_FUNNELED`); the
//! threads only read and write files (cfitsio is built reentrant; each thread opens its own
//! file). Frames are reported in frame order. A frame that fails at any step is carried
//! through as its error text, so the others still finish.
//!
//! | module | job |
//! |---|---|
//! | [`cameras`] | the DESI camera bands, their grids, PSF errors and stand-in PSF domains |
//! | [`jobs`] | which frames the input directory holds, their files, the skipped and redone ones |
//! | [`provenance`] | the digest of a frame's inputs and options (INPUTSUM) and the check of a frame on disk |
//! | [`roles`] | the mode for a number of ranks and each rank's role |
//! | [`list`] | the exposures of a job: a desispec production tree or a list file |
//! | [`groups`] | the split of the job's ranks into groups (by node, or of a given size) |
//! | [`night`] | a job over many exposures: the plan, each group's loop over its chunks |
//! | [`job_summary`] | a job's per-exposure summaries, totals and JSON record |
//! | `coordinator` | the rank that hands chunks of frames to the groups and gathers their outcomes |
//! | [`summary`] | the plan, per-frame outcomes, the observer that hears them, the summary |
//! | `messages` | what the ranks send each other |
//! | `frame` | one frame's steps: read, extract a share, assemble and write |
//! | `read_ahead`, `write_pool` | reading ahead and writing behind on background threads |
//! | `pipeline`, `shared` | the roles' loops |

pub mod cameras;
mod coordinator;
mod frame;
pub mod groups;
pub mod job_summary;
pub mod jobs;
pub mod list;
mod messages;
pub mod night;
mod pipeline;
pub mod provenance;
mod read_ahead;
pub mod roles;
mod shared;
pub mod summary;
mod write_pool;

pub use groups::{GroupSize, Groups};
pub use job_summary::{JobRecord, JobSummary};
pub use jobs::{discover, discover_in, expid_text, Discovery, ExposureDirs, FrameFiles};
pub use messages::FrameList;
pub use night::{run_job, JobConfig, JobObserver, JobPlan};
pub use roles::{Layout, Mode, Role};
pub use summary::{
    ExposureObserver, ExposurePlan, ExposureRecord, ExposureSummary, FrameFlags, FrameOutcome,
    FrameRecord, FrameSteps, FrameTiming, GpuMemoryReport,
};

use crate::gpu::memory::memory_limit_from_env;
use crate::gpu::{GpuContext, GpuError};
use crate::io;
use crate::job::FailedPatchPolicy;
use crate::parallel::wire::WireError;
use crate::parallel::{gpu_for_rank, Comm};
use crate::patch::{ExtractionParams, MaskRule, WavelengthGrid};
use crate::solve::{Backend, CpuBackend};
use std::path::PathBuf;
use std::time::Instant;
use thiserror::Error;

/// What to extract: the directories, the exposure, the backend and the per-frame request.
#[derive(Clone, Debug, PartialEq)]
pub struct ExposureConfig {
    /// Directory with preproc-{camera}-{EXPID}.fits and psf-{camera}-{EXPID}.fits.
    pub indir: PathBuf,
    /// Directory for frame-{camera}-{EXPID}.fits (created when missing).
    pub outdir: PathBuf,
    /// Exposure id.
    pub expid: u64,
    /// Extract on GPUs (each extracting rank takes GPU local_rank % visible GPUs).
    pub gpu: bool,
    /// Re-extract frames whose output exists (else they are skipped).
    pub overwrite: bool,
    /// Read ahead, write behind and, on 3+ ranks, run the reader/writer/extractor pipeline;
    /// `false`: read, extract and write one frame after the other on every rank count.
    pub overlap: bool,
    /// First spectrum of every frame (relative to the PSF's FIBERMIN).
    pub specmin: usize,
    /// Spectra per frame.
    pub nspec: usize,
    /// Only the first `wave_span` Angstrom of each camera's grid.
    pub wave_span: Option<f64>,
    /// desispec's rule for the BAD2DFIT mask bit.
    pub mask_rule: MaskRule,
    /// A frame with a patch that could not be solved: written flagged, or failed.
    pub failed_patches: FailedPatchPolicy,
    /// Cap on the device memory of each GPU process (`None`: `DESI_GPU_MEMORY_LIMIT` if set,
    /// else none); the frames a process has in flight share it equally.
    pub gpu_memory_limit: Option<u64>,
    /// Frames one GPU process extracts at once, each on its own GPU context and stream
    /// (`None`: as many as the GPU memory holds, [`frames_for_memory`] of the cap or of the
    /// free memory, at most [`DEFAULT_FRAMES_IN_FLIGHT`]); only a single GPU process that overlaps
    /// keeps more than one.
    pub frames_in_flight: Option<usize>,
    /// Where each extracted frame's trace is written (`trace-{camera}-{EXPID}.json`, spans
    /// on the clock of the run's start); `None`: not written.
    pub trace_dir: Option<PathBuf>,
}

/// Frames a single GPU process keeps in flight when neither `--frames-in-flight` nor the GPU
/// memory sets them (a job over many exposures without a memory cap): one frame's host stages
/// (reading its results, stitching, finishing, the next frame's planning and upload) run while
/// the others' kernels do. Three, measured on an H100 (30 full frames, one run each): 1 frame
/// 10.35 s (GPU busy 72%), 2 frames 9.12-9.57 s (79-82%), 3 frames 8.03 s (88%). A single
/// exposure sets them from the GPU memory ([`frames_for_memory`]).
pub const DEFAULT_FRAMES_IN_FLIGHT: usize = 3;
/// Most frames in flight on one GPU process.
pub const MAX_FRAMES_IN_FLIGHT: usize = 8;

impl ExposureConfig {
    /// The output grid and parameters of a frame of `camera` (checked against its PSF when
    /// extracted; the writer has no PSF).
    ///
    /// # Errors
    /// An unknown camera or an invalid grid, as the frame's error text.
    pub fn frame_setup(&self, camera: &str) -> Result<(WavelengthGrid, ExtractionParams), String> {
        let band =
            cameras::camera_band(camera).ok_or_else(|| format!("unknown camera {camera}"))?;
        let grid = band.grid(self.wave_span).map_err(|e| e.to_string())?;
        let params = ExtractionParams {
            specmin: self.specmin,
            nspec: self.nspec,
            psferr: band.psferr,
            mask_rule: self.mask_rule,
            ..ExtractionParams::default()
        };
        Ok((grid, params))
    }

    /// A configuration for unit tests: 25 fibers of expid 7 from `indir` to `outdir` on the CPU.
    #[cfg(test)]
    pub(crate) fn for_tests(indir: &str, outdir: &str) -> Self {
        Self {
            indir: indir.into(),
            outdir: outdir.into(),
            expid: 7,
            gpu: false,
            overwrite: false,
            overlap: true,
            specmin: 0,
            nspec: 25,
            wave_span: None,
            mask_rule: Default::default(),
            failed_patches: Default::default(),
            gpu_memory_limit: None,
            frames_in_flight: None,
            trace_dir: None,
        }
    }

    /// Checks the input directory and `wave_span` and creates the output directory when
    /// missing (as desi_proc does; every rank may try).
    fn prepare(&self) -> Result<(), ExposureError> {
        if !self.indir.is_dir() {
            return Err(ExposureError::NotADirectory(self.indir.clone()));
        }
        create_outdir(&self.outdir)?;
        self.check_request()
    }

    /// Checks `wave_span` and the spectra asked for against every DESI camera: a request that
    /// would fail every frame the same way is refused before any work.
    ///
    /// # Errors
    /// [`ExposureError::WaveSpan`] or [`ExposureError::Request`].
    pub fn check_request(&self) -> Result<(), ExposureError> {
        if self.wave_span.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
            return Err(ExposureError::WaveSpan);
        }
        // Every frame would fail the same way: refuse the request before any work.
        for band in &cameras::BANDS {
            let camera = format!("{}0", band.band);
            let (_, params) = self.frame_setup(&camera).map_err(|reason| {
                ExposureError::Request(format!(
                    "--wave-span {}: the {} camera grid from {} A: {reason}",
                    self.wave_span.map_or("none".into(), |s| s.to_string()),
                    band.band,
                    band.wave.0
                ))
            })?;
            params
                .validate(0, cameras::FIBERS_PER_CAMERA)
                .map_err(|e| {
                    ExposureError::Request(format!(
                        "-s {} -n {}: {e} (a DESI camera has {} fibers)",
                        self.specmin,
                        self.nspec,
                        cameras::FIBERS_PER_CAMERA
                    ))
                })?;
        }
        Ok(())
    }
}

/// Creates the output directory `path` when missing (as desi_proc does; several ranks may
/// try at once).
pub(crate) fn create_outdir(path: &std::path::Path) -> Result<(), ExposureError> {
    if !path.is_dir() {
        std::fs::create_dir_all(path).map_err(|source| ExposureError::CreateOutdir {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Errors that stop an exposure run (a frame's own failure does not: it is its outcome).
#[derive(Debug, Error)]
pub enum ExposureError {
    /// The input directory is not one.
    #[error("--indir {}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The output directory could not be created.
    #[error("--outdir {}: cannot create it: {source}", path.display())]
    CreateOutdir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `wave_span` is not a positive number.
    #[error("--wave-span must be a positive number of Angstrom")]
    WaveSpan,
    /// The grid or the spectra asked for cannot be extracted from any DESI camera.
    #[error("{0}")]
    Request(String),
    /// No GPU for an extracting rank.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// A message between ranks could not be decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// No preproc file of the exposure in the input directory.
    #[error("--indir {}: no preproc-*-{expid}.fits file (nothing to extract){psf_note}", indir.display())]
    NoInput {
        /// The input directory.
        indir: PathBuf,
        /// The exposure id as file names write it.
        expid: String,
        /// Names the cameras that have a PSF file, if any.
        psf_note: String,
    },
    /// A worker thread panicked (a bug).
    #[error("{0} panicked")]
    ThreadPanicked(String),
}

impl ExposureError {
    /// Whether the request is at fault (exit code 1) rather than the run (exit code 2).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            ExposureError::NotADirectory(_)
                | ExposureError::NoInput { .. }
                | ExposureError::CreateOutdir { .. }
                | ExposureError::WaveSpan
                | ExposureError::Request(_)
        ) || matches!(self, ExposureError::Gpu(e) if e.is_input_error())
    }
}

/// What the role loops of one rank share.
pub(crate) struct RankContext<'a> {
    config: &'a ExposureConfig,
    comm: &'a Comm,
    frames: &'a [FrameFiles],
    layout: Layout,
    start: Instant,
    backend: &'a dyn Backend,
}

/// Extracts every frame of the exposure over the ranks of `comm` (every rank calls it):
/// rank 0 finds the frames ([`discover`]) and tells the others, the writing rank reports the
/// plan and each frame to `observer`, and every rank returns the summary (the outcomes on the
/// writing rank) with the writer's verdict.
///
/// # Errors
/// Bad directories or `wave_span` (before any work), no GPU for an extracting rank with
/// `config.gpu`, a malformed message. A frame that fails is not an error: see
/// [`ExposureSummary::any_failed`].
pub fn run_exposure(
    config: &ExposureConfig,
    comm: &Comm,
    observer: &mut dyn ExposureObserver,
) -> Result<ExposureSummary, ExposureError> {
    let start = Instant::now();
    config.prepare()?;
    let (rank, layout) = (comm.rank(), Layout::new(comm.size(), config.overlap));
    // Rank 0 lists the frames once for everybody (outputs appear while the others start).
    let list = if rank == 0 {
        let found = discover(
            &config.indir,
            &config.outdir,
            config.expid,
            config.overwrite,
            |files| provenance::check_existing(config, files),
        );
        let cameras = found.frames.into_iter().map(|f| f.camera).collect();
        FrameList {
            cameras,
            skipped: found.skipped,
            redone: found.redone,
            missing_preproc: found.missing_preproc,
        }
        .to_bytes()?
    } else {
        Vec::new()
    };
    let list = FrameList::from_bytes(&comm.broadcast(0, list))?;
    let frames: Vec<FrameFiles> = list
        .cameras
        .iter()
        .map(|camera| FrameFiles::new(camera, &config.indir, &config.outdir, config.expid))
        .collect();
    let expid = expid_text(config.expid);
    // Every rank has the same list: all of them stop here together.
    if frames.is_empty() && list.skipped.is_empty() {
        let psf_note = if list.missing_preproc.is_empty() {
            String::new()
        } else {
            format!(
                "; PSF file(s) without preproc for camera(s) {}",
                list.missing_preproc.join(" ")
            )
        };
        return Err(ExposureError::NoInput {
            indir: config.indir.clone(),
            expid,
            psf_note,
        });
    }
    let uses_gpu = config.gpu && layout.extracts(rank);
    // At most this many frames in flight; a single GPU process without `--frames-in-flight`
    // sets the number from the GPU memory once its first context is open.
    let in_flight_at_most = frames_in_flight_for(&layout, uses_gpu, config.frames_in_flight);
    let limit = match (uses_gpu, config.gpu_memory_limit) {
        (false, _) => None,
        (true, Some(limit)) => Some(limit),
        (true, None) => memory_limit_from_env()?,
    };
    log::debug!(
        "exposure: {} frame(s) listed at {:.3} s",
        frames.len(),
        start.elapsed().as_secs_f64()
    );
    if uses_gpu {
        // No driver: say so at once, not after the first frames are read.
        crate::gpu::probe_driver()?;
        log::debug!(
            "exposure: GPU driver loaded at {:.3} s",
            start.elapsed().as_secs_f64()
        );
    }
    let (outcomes, gpu_memory, in_flight) = std::thread::scope(|scope| {
        // A single GPU process starts reading before it opens the GPU (driver start-up and
        // module load take a while on a fresh machine).
        let reads = (in_flight_at_most > 1).then(|| {
            read_ahead::ReadAhead::new(scope, config, &frames, shared::READ_AHEAD_IN_FLIGHT, start)
        });
        let gpus = if uses_gpu {
            let ordinal = gpu_for_rank(comm.local_rank())?;
            let opening = Instant::now();
            let gpus = if in_flight_at_most > 1 && config.frames_in_flight.is_none() {
                open_gpus_by_memory(ordinal, limit)?
            } else {
                open_gpus(ordinal, in_flight_at_most, limit)?
            };
            log::debug!(
                "exposure: {} GPU context(s) opened in {:.3} s (at {:.3} s)",
                gpus.len(),
                opening.elapsed().as_secs_f64(),
                start.elapsed().as_secs_f64()
            );
            gpus
        } else {
            Vec::new()
        };
        // Without a GPU, frames in flight only with DESI_EXPOSURE_CPU_IN_FLIGHT (CPU contexts).
        let in_flight = if gpus.is_empty() {
            in_flight_at_most
        } else {
            gpus.len()
        };
        if rank == layout.writer() {
            observer.planned(&ExposurePlan {
                expid: expid.clone(),
                frames: frames.len(),
                skipped: list.skipped.len(),
                redone: list.redone.clone(),
                missing_preproc: list.missing_preproc.clone(),
                layout,
                frames_in_flight: in_flight,
            });
        }
        let ctx = RankContext {
            config,
            comm,
            frames: &frames,
            layout,
            start,
            backend: gpus.first().map_or(&CpuBackend, |g| g),
        };
        let outcomes = run_role(&ctx, &gpus, in_flight, reads, observer)?;
        let releasing = Instant::now();
        let gpu_memory = release_gpus(&gpus, limit)?;
        if uses_gpu {
            log::debug!(
                "exposure: GPU memory released in {:.3} s (at {:.3} s)",
                releasing.elapsed().as_secs_f64(),
                start.elapsed().as_secs_f64()
            );
            // Each context unpins its page-locked buffers and unloads its module.
            let closing = Instant::now();
            drop(gpus);
            log::debug!(
                "exposure: GPU contexts closed in {:.3} s (at {:.3} s)",
                closing.elapsed().as_secs_f64(),
                start.elapsed().as_secs_f64()
            );
        }
        Ok::<_, ExposureError>((outcomes, gpu_memory, in_flight))
    })?;
    let wall_s = start.elapsed().as_secs_f64();
    // Everybody ends with the writer's verdict.
    let failed_here =
        outcomes.iter().any(FrameOutcome::is_failed_or_flagged) || !list.missing_preproc.is_empty();
    let verdict = comm.broadcast(layout.writer(), vec![u8::from(failed_here)]);
    Ok(ExposureSummary {
        expid,
        is_writer: rank == layout.writer(),
        outcomes,
        skipped: list.skipped,
        missing_preproc: list.missing_preproc,
        wall_s,
        any_failed: verdict.first().copied().unwrap_or(1) != 0,
        frames_in_flight: in_flight,
        gpu_memory,
        host_peak_rss_bytes: summary::host_peak_rss_bytes(),
    })
}

/// Runs this rank's role over the frames of `ctx` (`reads`: the frames already being read
/// ahead by a single process with several frames in flight, one per context of `gpus`, or
/// `cpu_slots` on the CPU backend without GPU); the outcomes on the writing rank, none on the
/// others.
pub(crate) fn run_role(
    ctx: &RankContext,
    gpus: &[GpuContext],
    cpu_slots: usize,
    reads: Option<read_ahead::ReadAhead<'_, '_>>,
    observer: &mut dyn ExposureObserver,
) -> Result<Vec<FrameOutcome>, ExposureError> {
    let layout = ctx.layout;
    match (layout.role(ctx.comm.rank()), reads) {
        (Role::Reader, _) => pipeline::reader(ctx).map(|()| Vec::new()),
        (Role::Writer, _) => pipeline::writer(ctx, observer),
        (Role::Extractor { index, count }, _) => {
            pipeline::extractor(ctx, index, count).map(|()| Vec::new())
        }
        (Role::SharedRoot { .. }, Some(reads)) => {
            let backends: Vec<&dyn Backend> = if gpus.is_empty() {
                vec![&CpuBackend; cpu_slots.max(1)]
            } else {
                gpus.iter().map(|g| g as &dyn Backend).collect()
            };
            shared::frames_in_flight(ctx, &backends, reads, observer)
        }
        (Role::SharedRoot { .. }, None) => {
            let overlap = layout.mode == (Mode::Shared { overlap: true });
            shared::root(ctx, overlap, observer)
        }
        (Role::SharedMember { index, size }, _) => {
            shared::member(ctx, index, size).map(|()| Vec::new())
        }
    }
}

/// The frames one process keeps in flight on its GPU: `requested` (default
/// [`DEFAULT_FRAMES_IN_FLIGHT`], at most [`MAX_FRAMES_IN_FLIGHT`]) for a single GPU process
/// that overlaps, else 1. ([`run_exposure`] sets a single GPU process's number from the GPU
/// memory when none is requested: [`frames_for_memory`].)
pub(crate) fn frames_in_flight_for(
    layout: &Layout,
    uses_gpu: bool,
    requested: Option<usize>,
) -> usize {
    if layout.two_frames_in_flight(uses_gpu || cpu_frames_in_flight()) {
        requested
            .unwrap_or(DEFAULT_FRAMES_IN_FLIGHT)
            .clamp(1, MAX_FRAMES_IN_FLIGHT)
    } else {
        1
    }
}

/// The variants of the frames-in-flight loop and the file I/O this process runs (the A/B
/// switches of issue #15), e.g. `loop any, frame writer direct, preproc read parallel`.
pub fn io_variants() -> String {
    let writer = io::FrameWriter::from_env().map_or("invalid", |w| w.name());
    let read = if io::preproc_planes_in_parallel() {
        "parallel"
    } else {
        "serial"
    };
    let order = if shared::fifo_loop() { "fifo" } else { "any" };
    format!("loop {order}, frame writer {writer}, preproc read {read}")
}

/// `DESI_EXPOSURE_CPU_IN_FLIGHT=1`: a single process without GPU keeps frames in flight as a
/// GPU process does, each extracted on the CPU backend (the in-flight loop, its reading ahead
/// and writing behind tested and traced on machines without a GPU).
fn cpu_frames_in_flight() -> bool {
    std::env::var("DESI_EXPOSURE_CPU_IN_FLIGHT").is_ok_and(|v| v.trim() == "1")
}

/// Device bytes one full frame in flight may take: the batch plan's bound for a full r frame
/// (500 fibers, ~4,700 patches) in its default two batches, 9.66 GiB (the pool's measured
/// peak is lower, 8.4 GiB for three frames on an H100). A frame given less is cut into more
/// batches.
pub const FRAME_IN_FLIGHT_BYTES: u64 = 10_372_000_000;

/// Frames in flight for `budget` device bytes (the caller's cap, or the share of the free
/// memory the batches may take): one per [`FRAME_IN_FLIGHT_BYTES`], 1 to
/// [`DEFAULT_FRAMES_IN_FLIGHT`]. More than three are slower, not faster: the frames' host
/// stages then compete for the CPU cores and their kernels for the GPU (30 full frames on an
/// H200, one run each: 3 frames 6.37 s, GPU busy 85%; 8 frames 7.44-8.00 s, 81-82%; on an
/// H100, 4 frames 7.37 s against 3 frames 5.92 s). `--frames-in-flight` still sets up to
/// [`MAX_FRAMES_IN_FLIGHT`].
pub fn frames_for_memory(budget: u64) -> usize {
    usize::try_from(budget / FRAME_IN_FLIGHT_BYTES)
        .unwrap_or(usize::MAX)
        .clamp(1, DEFAULT_FRAMES_IN_FLIGHT)
}

/// Share of the free device memory that sets the frames in flight when no cap is given (as
/// the batch plan's share of the free memory).
const FREE_MEMORY_SHARE: f64 = 0.7;

/// Opens as many contexts on GPU `ordinal` as its memory holds frames in flight
/// ([`frames_for_memory`] of the cap `limit`, or without one of [`FREE_MEMORY_SHARE`] of the
/// free memory that the first context sees), each capped at its part of `limit`.
pub(crate) fn open_gpus_by_memory(
    ordinal: usize,
    limit: Option<u64>,
) -> Result<Vec<GpuContext>, ExposureError> {
    let first = GpuContext::new(ordinal)?;
    let budget = match limit {
        Some(limit) => limit,
        None => (first.memory()?.0 as f64 * FREE_MEMORY_SHARE) as u64,
    };
    let count = frames_for_memory(budget);
    log::debug!(
        "exposure: {count} frame(s) in flight for {} of GPU memory",
        crate::gpu::memory::format_bytes(budget)
    );
    with_contexts(first, ordinal, count, limit)
}

/// Opens `count` contexts (streams) on GPU `ordinal`, each capped at its part of `limit`, with
/// the device pool's peaks reset.
pub(crate) fn open_gpus(
    ordinal: usize,
    count: usize,
    limit: Option<u64>,
) -> Result<Vec<GpuContext>, ExposureError> {
    with_contexts(GpuContext::new(ordinal)?, ordinal, count, limit)
}

/// `first` and `count - 1` more contexts on GPU `ordinal`, each capped at its part of `limit`,
/// with the device pool's peaks reset.
fn with_contexts(
    first: GpuContext,
    ordinal: usize,
    count: usize,
    limit: Option<u64>,
) -> Result<Vec<GpuContext>, ExposureError> {
    let share = limit.map(|l| l / count.max(1) as u64);
    let mut gpus = Vec::with_capacity(count.max(1));
    gpus.push(first);
    for rank in 1..count.max(1) {
        gpus.push(GpuContext::with_rank(ordinal, rank)?);
    }
    for gpu in &mut gpus {
        gpu.set_memory_limit(share)?;
    }
    if let Some(first) = gpus.first() {
        // The pool may keep what the whole process may use.
        first.set_pool_release_threshold(limit.unwrap_or(u64::MAX))?;
        let reserve = pool_reserve_from_env();
        if reserve > 0 {
            let t = std::time::Instant::now();
            first.reserve_pool(reserve)?;
            log::debug!(
                "exposure: {} reserved in the GPU memory pool in {:.3} s",
                crate::gpu::memory::format_bytes(reserve),
                t.elapsed().as_secs_f64()
            );
        }
        first.reset_pool_peaks()?;
    }
    let pixels = prewarm_pixels_from_env();
    if pixels > 0 {
        // Each context's upload buffer, the contexts in parallel.
        let t = std::time::Instant::now();
        std::thread::scope(|scope| {
            let threads: Vec<_> = gpus
                .iter()
                .map(|gpu| scope.spawn(move || gpu.pinned_upload(2 * pixels).map(drop)))
                .collect();
            threads
                .into_iter()
                .try_for_each(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })?;
        log::debug!(
            "exposure: upload buffers for {pixels} pixels allocated in {:.3} s",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(gpus)
}

/// Bytes of device memory mapped into the pool before the first frame:
/// `DESI_GPU_POOL_RESERVE_GIB` (GiB, default 0: none). An experiment's knob.
fn pool_reserve_from_env() -> u64 {
    std::env::var("DESI_GPU_POOL_RESERVE_GIB")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|g| g.is_finite() && *g > 0.0)
        .map_or(0, |g| (g * f64::from(1u32 << 30)) as u64)
}

/// Pixels of the image each context's page-locked upload buffer is allocated for before the
/// first frame: `DESI_GPU_PREWARM_PIXELS` (default 0: allocated by the first frame that
/// uploads, as before). An experiment's knob.
fn prewarm_pixels_from_env() -> usize {
    std::env::var("DESI_GPU_PREWARM_PIXELS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
}

/// Reads the device pool's counters over the run, then hands the memory the contexts' frames
/// left in the pool back to the driver and checks that the pool holds nothing more; `None`
/// without GPU. (The contexts themselves are released when dropped.)
pub(crate) fn release_gpus(
    gpus: &[GpuContext],
    limit: Option<u64>,
) -> Result<Option<GpuMemoryReport>, ExposureError> {
    let Some(first) = gpus.first() else {
        return Ok(None);
    };
    let pool = first.pool_stats()?;
    for gpu in gpus {
        gpu.release_memory()?;
    }
    Ok(Some(GpuMemoryReport {
        limit_bytes: limit,
        pool,
        held_after_release: first.pool_stats()?.reserved,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_for_memory_gives_one_frame_per_bound_and_at_most_the_default() {
        assert_eq!(frames_for_memory(0), 1);
        assert_eq!(frames_for_memory(FRAME_IN_FLIGHT_BYTES - 1), 1);
        assert_eq!(frames_for_memory(2 * FRAME_IN_FLIGHT_BYTES), 2);
        assert_eq!(
            frames_for_memory(8 * FRAME_IN_FLIGHT_BYTES),
            DEFAULT_FRAMES_IN_FLIGHT
        );
        assert_eq!(frames_for_memory(u64::MAX), DEFAULT_FRAMES_IN_FLIGHT);
    }
}
