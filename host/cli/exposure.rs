//! `desi-extract exposure`: every frame of one exposure (up to 30: cameras b, r, z of
//! spectrographs 0..9), with desi_proc's per-camera grids and PSF errors (docs/algorithm.md §8).
//!
//! Two modes:
//!
//! - **Pipeline** (3+ ranks): rank 0 reads, rank 1 writes, ranks 2.. extract whole frames,
//!   frame `i` on extractor `i mod E`. The reader keeps up to E+1 frames being read on
//!   background threads and sends each, in frame order, to its extractor (preproc + PSF); the
//!   extractor sends the finished bundle blocks with the frame's header and fibermap to the
//!   writer, which takes them in whatever order they finish and writes up to
//!   [`WRITE_THREADS`] frames at once on background threads.
//! - **Shared frames** (1 or 2 ranks, or `--no-overlap`): rank 0 reads and writes, every rank
//!   extracts its share of each frame's bundles, one frame after the other. Rank 0 reads the
//!   next frames and writes the previous ones on background threads, unless `--no-overlap`
//!   (then read, extract and write strictly in turn: what the overlap gains is measurable).
//!   With one rank nothing is encoded or copied between the steps.
//!
//! MPI calls stay on each rank's main thread (MPI is initialized `MPI_THREAD_FUNNELED`); the
//! threads only read and write files (cfitsio is built reentrant; each thread opens its own
//! file). Progress lines and the summary come in frame order. A frame that fails at any step
//! is carried through as an error message, so the others still finish.

use super::extract::check_output_dir;
use super::InputError;
use clap::Args;
use desi_extract::exposure::cameras;
use desi_extract::extract::{
    assemble_frame, bundle_share, extract_bundles, frame_data, BundleBlock,
};
use desi_extract::gpu::GpuContext;
use desi_extract::io::{self, PreprocImage};
use desi_extract::job::FrameJob;
use desi_extract::parallel::wire::{self, Decoder, Encoder};
use desi_extract::parallel::{gpu_for_rank, Comm};
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::psf::GaussHermitePsf;
use desi_extract::solve::{Backend, CpuBackend};
use desi_extract::trace::Trace;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

/// Frames written at the same time by the writing rank (background threads).
const WRITE_THREADS: usize = 3;
/// Most frames being read ahead by the reading rank (bounds its memory, ~0.3 GB a frame).
const MAX_READ_AHEAD: usize = 8;

/// Arguments of `exposure`.
#[derive(Debug, Args)]
pub struct ExposureArgs {
    /// Directory with preproc-{camera}-{EXPID}.fits and psf-{camera}-{EXPID}.fits.
    #[arg(long)]
    indir: PathBuf,
    /// Directory for frame-{camera}-{EXPID}.fits (created when missing).
    #[arg(long)]
    outdir: PathBuf,
    /// Exposure id (file names use it zero-padded to 8 digits).
    #[arg(long)]
    expid: u64,
    /// Extract on GPUs (each extracting rank takes GPU local_rank % visible GPUs).
    #[arg(long)]
    gpu: bool,
    /// Re-extract frames whose output exists (default: skip them).
    #[arg(long)]
    overwrite: bool,
    /// Read, extract and write one frame after the other, on every rank count (for measuring
    /// what the reading-ahead, writing-behind and the reader/writer/extractor pipeline gain).
    #[arg(long = "no-overlap")]
    no_overlap: bool,
    /// First spectrum of every frame (relative to the PSF's FIBERMIN).
    #[arg(short = 's', long = "specmin", default_value_t = 0)]
    specmin: usize,
    /// Spectra per frame.
    #[arg(short = 'n', long = "nspec", default_value_t = 500)]
    nspec: usize,
    /// Only the first ANGSTROM of each camera's grid (tests and quick looks).
    #[arg(long = "wave-span")]
    wave_span: Option<f64>,
}

impl ExposureArgs {
    /// `true` with `--gpu`.
    pub fn uses_gpu(&self) -> bool {
        self.gpu
    }
}

/// One frame of the exposure.
#[derive(Clone, Debug)]
struct Job {
    camera: String,
    preproc: PathBuf,
    psf: PathBuf,
    output: PathBuf,
}

/// The outcome of one frame, as the writer records it.
#[derive(Debug)]
struct Outcome {
    camera: String,
    status: Result<Timing, String>,
}

/// Seconds spent on a frame's steps.
#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    read: f64,
    extract: f64,
    write: f64,
    npatch: usize,
}

/// Frames present in `indir`, in spectrograph order (b0 r0 z0 b1 ...), and those skipped
/// because their output exists.
fn find_jobs(args: &ExposureArgs) -> (Vec<Job>, Vec<String>) {
    let expid = format!("{:08}", args.expid);
    let (mut jobs, mut skipped) = (Vec::new(), Vec::new());
    for camera in cameras::all_cameras() {
        let preproc = args.indir.join(format!("preproc-{camera}-{expid}.fits"));
        if !preproc.is_file() {
            continue;
        }
        let output = args.outdir.join(format!("frame-{camera}-{expid}.fits"));
        if output.exists() && !args.overwrite {
            skipped.push(camera);
            continue;
        }
        jobs.push(Job {
            psf: args.indir.join(format!("psf-{camera}-{expid}.fits")),
            camera,
            preproc,
            output,
        });
    }
    (jobs, skipped)
}

/// Grid and parameters of a frame of `camera` (the writer has no PSF to validate them with).
fn grid_and_params(
    args: &ExposureArgs,
    camera: &str,
) -> Result<(WavelengthGrid, ExtractionParams), String> {
    let band = cameras::camera_band(camera).ok_or_else(|| format!("unknown camera {camera}"))?;
    let grid = band.grid(args.wave_span).map_err(|e| e.to_string())?;
    let params = ExtractionParams {
        specmin: args.specmin,
        nspec: args.nspec,
        psferr: band.psferr,
        ..ExtractionParams::default()
    };
    Ok((grid, params))
}

/// [`grid_and_params`] checked against the frame's PSF.
fn frame_setup(
    args: &ExposureArgs,
    camera: &str,
    psf: &GaussHermitePsf,
) -> Result<(WavelengthGrid, ExtractionParams), String> {
    let (grid, params) = grid_and_params(args, camera)?;
    params
        .validate(psf.hsizey, psf.nspec)
        .map_err(|e| e.to_string())?;
    Ok((grid, params))
}

/// How the ranks share the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Rank 0 reads, rank 1 writes, ranks 2.. extract whole frames round-robin.
    Pipeline,
    /// Rank 0 reads and writes, every rank extracts a share of every frame's bundles;
    /// `overlap`: rank 0 reads ahead and writes behind on threads.
    Shared { overlap: bool },
}

impl Mode {
    fn new(size: usize, overlap: bool) -> Self {
        if overlap && size >= 3 {
            Mode::Pipeline
        } else {
            Mode::Shared { overlap }
        }
    }

    /// The rank that writes and prints.
    fn writer(self) -> usize {
        match self {
            Mode::Pipeline => 1,
            Mode::Shared { .. } => 0,
        }
    }
}

/// A frame's inputs as read: PSF and preproc image, or the error naming the file.
type Inputs = Result<(GaussHermitePsf, PreprocImage), String>;

/// A frame read by [`ReadAhead`].
struct ReadFrame {
    inputs: Inputs,
    read_s: f64,
}

fn read_frame(job: &Job) -> ReadFrame {
    let t0 = Instant::now();
    let inputs = read_inputs(job);
    ReadFrame {
        inputs,
        read_s: t0.elapsed().as_secs_f64(),
    }
}

/// Reads the frames of `jobs` in order, up to `depth` of them at once on background threads
/// ahead of the consumer (`depth` 0: each is read when asked for, on the calling thread).
/// Memory: at most `depth` frames read or being read besides the one handed out.
struct ReadAhead<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    jobs: &'env [Job],
    depth: usize,
    next: usize,
    pending: VecDeque<ScopedJoinHandle<'scope, ReadFrame>>,
}

impl<'scope, 'env> ReadAhead<'scope, 'env> {
    fn new(scope: &'scope Scope<'scope, 'env>, jobs: &'env [Job], depth: usize) -> Self {
        let mut reads = Self {
            scope,
            jobs,
            depth,
            next: 0,
            pending: VecDeque::new(),
        };
        reads.fill();
        reads
    }

    fn fill(&mut self) {
        while self.pending.len() < self.depth && self.next < self.jobs.len() {
            let job = &self.jobs[self.next];
            self.pending
                .push_back(self.scope.spawn(move || read_frame(job)));
            self.next += 1;
        }
    }

    /// The next frame in order (None after the last).
    fn next_frame(&mut self) -> Option<ReadFrame> {
        if self.depth == 0 {
            let job = self.jobs.get(self.next)?;
            self.next += 1;
            return Some(read_frame(job));
        }
        let handle = self.pending.pop_front()?;
        self.fill();
        Some(handle.join().unwrap_or_else(|_| ReadFrame {
            inputs: Err("the thread reading this frame panicked".into()),
            read_s: 0.0,
        }))
    }
}

/// What a frame's writer needs besides the job: the PSF's IN_PSF, the preproc image without
/// pixels (header, fibermap) and the finished bundle blocks.
struct Extracted {
    in_psf: Option<String>,
    meta: PreprocImage,
    blocks: Vec<BundleBlock>,
}

/// A frame's extraction result with its read and extract seconds, ready to write.
struct Finished {
    read_s: f64,
    extract_s: f64,
    result: Result<Extracted, String>,
}

/// A write that finished: its outcome and when (seconds since the start of the run).
type Written = (Result<Timing, String>, f64);

/// Writes frames on up to `max` background threads (`max` 0: on the calling thread, at once)
/// and prints a progress line per frame in frame order as soon as the frames before it are
/// done; [`WritePool::finish`] waits for all and returns the outcomes in frame order.
struct WritePool<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    args: &'env ExposureArgs,
    jobs: &'env [Job],
    start: Instant,
    max: usize,
    pending: VecDeque<(usize, ScopedJoinHandle<'scope, Written>)>,
    done: Vec<Option<Written>>,
    printed: usize,
}

impl<'scope, 'env> WritePool<'scope, 'env> {
    fn new(
        scope: &'scope Scope<'scope, 'env>,
        args: &'env ExposureArgs,
        jobs: &'env [Job],
        start: Instant,
        max: usize,
    ) -> Self {
        Self {
            scope,
            args,
            jobs,
            start,
            max,
            pending: VecDeque::new(),
            done: (0..jobs.len()).map(|_| None).collect(),
            printed: 0,
        }
    }

    /// Writes frame `index` (waits first for the oldest write when `max` are running).
    fn submit(&mut self, index: usize, frame: Finished) {
        let (args, job, start) = (self.args, &self.jobs[index], self.start);
        let task = move || {
            let status = write_finished(args, job, frame);
            (status, start.elapsed().as_secs_f64())
        };
        if self.max == 0 {
            let written = task();
            self.record(index, written);
            return;
        }
        while self.pending.len() >= self.max {
            self.join_oldest();
        }
        self.pending.push_back((index, self.scope.spawn(task)));
    }

    fn join_oldest(&mut self) {
        if let Some((index, handle)) = self.pending.pop_front() {
            let written = handle.join().unwrap_or_else(|_| {
                (
                    Err("the thread writing this frame panicked".into()),
                    self.start.elapsed().as_secs_f64(),
                )
            });
            self.record(index, written);
        }
    }

    fn record(&mut self, index: usize, written: Written) {
        if let Some(slot) = self.done.get_mut(index) {
            *slot = Some(written);
        }
        let (expid, n) = (format!("{:08}", self.args.expid), self.jobs.len());
        while let Some(Some((status, at))) = self.done.get(self.printed) {
            let job = &self.jobs[self.printed];
            match status {
                Ok(t) => println!(
                    "exposure {expid}: frame {}/{n} {} written at {at:.2} s (read {:.2} s, extract {:.2} s, write {:.2} s) -> {}",
                    self.printed + 1,
                    job.camera,
                    t.read,
                    t.extract,
                    t.write,
                    job.output.display()
                ),
                Err(e) => println!(
                    "exposure {expid}: frame {}/{n} {} FAILED: {e}",
                    self.printed + 1,
                    job.camera
                ),
            }
            self.printed += 1;
        }
    }

    /// Waits for every write; the outcomes in frame order.
    fn finish(mut self) -> Vec<Outcome> {
        while !self.pending.is_empty() {
            self.join_oldest();
        }
        self.jobs
            .iter()
            .zip(std::mem::take(&mut self.done))
            .map(|(job, written)| Outcome {
                camera: job.camera.clone(),
                status: written
                    .map_or_else(|| Err("never extracted (internal error)".into()), |w| w.0),
            })
            .collect()
    }
}

/// Runs `exposure`.
pub fn run(args: ExposureArgs, comm: &Comm) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    if !args.indir.is_dir() {
        return Err(
            InputError(format!("--indir {}: not a directory", args.indir.display())).into(),
        );
    }
    // The output directory is created when missing (as desi_proc does); every rank may try.
    if !args.outdir.is_dir() {
        std::fs::create_dir_all(&args.outdir).map_err(|e| {
            InputError(format!(
                "--outdir {}: cannot create it: {e}",
                args.outdir.display()
            ))
        })?;
    }
    check_output_dir(&args.outdir.join("frame"))?;
    if args.wave_span.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
        return Err(InputError("--wave-span must be a positive number of Angstrom".into()).into());
    }
    let (rank, size) = (comm.rank(), comm.size());
    let mode = Mode::new(size, !args.no_overlap);
    // Rank 0 lists the frames once for everybody (outputs appear while the others start).
    let list = if rank == 0 {
        let (jobs, skipped) = find_jobs(&args);
        let mut e = Encoder::new();
        e.strs(&jobs.iter().map(|j| j.camera.clone()).collect::<Vec<_>>());
        e.strs(&skipped);
        e.finish()
    } else {
        Vec::new()
    };
    let list = comm.broadcast(0, list);
    let mut d = Decoder::new(&list);
    let (cameras, skipped) = (d.strs()?, d.strs()?);
    let expid = format!("{:08}", args.expid);
    let jobs: Vec<Job> = cameras
        .iter()
        .map(|camera| Job {
            camera: camera.clone(),
            preproc: args.indir.join(format!("preproc-{camera}-{expid}.fits")),
            psf: args.indir.join(format!("psf-{camera}-{expid}.fits")),
            output: args.outdir.join(format!("frame-{camera}-{expid}.fits")),
        })
        .collect();
    let nextract = match mode {
        Mode::Pipeline => size - 2,
        Mode::Shared { .. } => size,
    };
    if rank == mode.writer() {
        let how = match mode {
            Mode::Pipeline => format!(
                "reader rank 0, writer rank 1, {nextract} extracting rank(s) taking whole frames in turn"
            ),
            Mode::Shared { overlap: true } => format!(
                "{size} rank(s) sharing each frame's bundles, rank 0 reading ahead and writing behind"
            ),
            Mode::Shared { overlap: false } => {
                format!("{size} rank(s), read/extract/write in turn")
            }
        };
        println!(
            "exposure {expid}: {} frame(s) to extract, {} skipped (output exists; --overwrite redoes them); {how}",
            jobs.len(),
            skipped.len()
        );
    }
    let me_extracts = match mode {
        Mode::Pipeline => rank >= 2,
        Mode::Shared { .. } => true,
    };
    let gpu = if args.gpu && me_extracts {
        let ordinal = gpu_for_rank(comm.local_rank())?;
        Some(GpuContext::new(ordinal)?)
    } else {
        None
    };
    // A single GPU process keeps two frames in flight, each on its own stream (context): the
    // host stages of one (planning, upload, stitching) run while the other's kernels do.
    let second_gpu = match (&gpu, mode, size) {
        (Some(first), Mode::Shared { overlap: true }, 1) => Some(GpuContext::new(first.ordinal)?),
        _ => None,
    };

    let outcomes = match (mode, rank) {
        (Mode::Shared { .. }, 0) if second_gpu.is_some() => {
            let gpus = [gpu.as_ref(), second_gpu.as_ref()];
            let join = |handle: ScopedJoinHandle<'_, Finished>| {
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("an extraction thread panicked"))
            };
            std::thread::scope(|scope| -> anyhow::Result<Vec<Outcome>> {
                let mut reads = ReadAhead::new(scope, &jobs, 3);
                let mut pool = WritePool::new(scope, &args, &jobs, start, WRITE_THREADS);
                let mut running = None;
                for (index, job) in jobs.iter().enumerate() {
                    let Some(read) = reads.next_frame() else {
                        break;
                    };
                    let (args, g) = (&args, gpus[index % 2]);
                    let handle = scope.spawn(move || extract_local(args, job, read, g));
                    if let Some((done, previous)) = running.replace((index, handle)) {
                        pool.submit(done, join(previous)?);
                    }
                }
                if let Some((done, previous)) = running.take() {
                    pool.submit(done, join(previous)?);
                }
                Ok(pool.finish())
            })?
        }
        (Mode::Shared { overlap }, 0) => {
            let (read_depth, writers) = if overlap { (2, WRITE_THREADS) } else { (0, 0) };
            std::thread::scope(|scope| -> anyhow::Result<Vec<Outcome>> {
                let mut reads = ReadAhead::new(scope, &jobs, read_depth);
                let mut pool = WritePool::new(scope, &args, &jobs, start, writers);
                for (index, job) in jobs.iter().enumerate() {
                    let Some(read) = reads.next_frame() else {
                        break;
                    };
                    let frame = shared_root_frame(&args, comm, job, index, read, gpu.as_ref())?;
                    pool.submit(index, frame);
                }
                Ok(pool.finish())
            })?
        }
        (Mode::Shared { .. }, _) => {
            for (index, job) in jobs.iter().enumerate() {
                let (at, inputs, _) = decode_inputs(&comm.recv(0))?;
                check_index(at, index)?;
                let t0 = Instant::now();
                let blocks = inputs.and_then(|(psf, img)| {
                    extract_share(&args, job, &psf, &img, gpu.as_ref(), rank, size)
                        .map_err(|e| format!("rank {rank}: {e}"))
                });
                let mut e = Encoder::new();
                e.f64(t0.elapsed().as_secs_f64());
                e.bytes(&wire::encode_blocks(&blocks));
                comm.send(0, &e.finish());
            }
            Vec::new()
        }
        (Mode::Pipeline, 0) => {
            let depth = (nextract + 1).min(MAX_READ_AHEAD);
            std::thread::scope(|scope| {
                let mut reads = ReadAhead::new(scope, &jobs, depth);
                let mut index = 0;
                while let Some(read) = reads.next_frame() {
                    let message = encode_inputs(index, &read.inputs, read.read_s);
                    drop(read);
                    comm.send(2 + index % nextract, &message);
                    index += 1;
                }
            });
            Vec::new()
        }
        (Mode::Pipeline, 1) => std::thread::scope(|scope| -> anyhow::Result<Vec<Outcome>> {
            let mut pool = WritePool::new(scope, &args, &jobs, start, WRITE_THREADS);
            let mut seen = vec![false; jobs.len()];
            for _ in 0..jobs.len() {
                let (_, message) = comm.recv_any();
                let (index, frame) = decode_finished(&message)?;
                match seen.get_mut(index) {
                    Some(s) if !*s => *s = true,
                    _ => {
                        return Err(wire::WireError(format!(
                            "frame {index} received twice or out of range"
                        ))
                        .into())
                    }
                }
                pool.submit(index, frame);
            }
            Ok(pool.finish())
        })?,
        (Mode::Pipeline, _) => {
            // Frame i extracts on a worker thread while the main thread (the only one that
            // calls MPI) receives frame i + 1 and sends frame i - 1 to the writer.
            let extract_one = |index: usize, message: Vec<u8>| -> anyhow::Result<Vec<u8>> {
                let (at, inputs, read_s) = decode_inputs(&message)?;
                drop(message);
                check_index(at, index)?;
                let t0 = Instant::now();
                let result = inputs.and_then(|(psf, img)| {
                    let blocks = extract_share(&args, &jobs[index], &psf, &img, gpu.as_ref(), 0, 1)
                        .map_err(|e| format!("rank {rank}: {e}"))?;
                    Ok(Extracted {
                        in_psf: psf.in_psf,
                        meta: without_pixels(img),
                        blocks,
                    })
                });
                let frame = Finished {
                    read_s,
                    extract_s: t0.elapsed().as_secs_f64(),
                    result,
                };
                Ok(encode_finished(index, &frame))
            };
            let join = |handle: ScopedJoinHandle<'_, anyhow::Result<Vec<u8>>>| {
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("rank {rank}: the extraction thread panicked"))?
            };
            std::thread::scope(|scope| -> anyhow::Result<()> {
                let mut running = None;
                for index in (rank - 2..jobs.len()).step_by(nextract) {
                    let message = comm.recv(0);
                    let previous = running.take().map(join).transpose()?;
                    let extract_one = &extract_one;
                    running = Some(scope.spawn(move || extract_one(index, message)));
                    if let Some(done) = previous {
                        comm.send(1, &done);
                    }
                }
                if let Some(done) = running.take().map(join).transpose()? {
                    comm.send(1, &done);
                }
                Ok(())
            })?;
            Vec::new()
        }
    };
    let failed = outcomes.iter().filter(|o| o.status.is_err()).count();
    if rank == mode.writer() {
        print_summary(&expid, &outcomes, &skipped, start.elapsed().as_secs_f64());
    }
    // Everybody exits with the writer's verdict.
    let verdict = comm.broadcast(mode.writer(), vec![u8::from(failed > 0)]);
    Ok(if verdict.first().copied().unwrap_or(1) != 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// A message of frame `got` arrived where frame `want` was expected (a logic error).
fn check_index(got: usize, want: usize) -> Result<(), wire::WireError> {
    if got == want {
        Ok(())
    } else {
        Err(wire::WireError(format!(
            "expected frame {want}, received frame {got}"
        )))
    }
}

/// One frame extracted whole by this process (no MPI): the single-rank path.
fn extract_local(
    args: &ExposureArgs,
    job: &Job,
    read: ReadFrame,
    gpu: Option<&GpuContext>,
) -> Finished {
    let t0 = Instant::now();
    let result = read.inputs.and_then(|(psf, img)| {
        let blocks = extract_share(args, job, &psf, &img, gpu, 0, 1)?;
        Ok(Extracted {
            in_psf: psf.in_psf,
            meta: without_pixels(img),
            blocks,
        })
    });
    Finished {
        read_s: read.read_s,
        extract_s: t0.elapsed().as_secs_f64(),
        result,
    }
}

/// Rank 0 of the shared-frames mode: hands the frame to the other ranks (with one rank it is
/// [`extract_local`]), extracts its own share and gathers theirs.
fn shared_root_frame(
    args: &ExposureArgs,
    comm: &Comm,
    job: &Job,
    index: usize,
    read: ReadFrame,
    gpu: Option<&GpuContext>,
) -> anyhow::Result<Finished> {
    let size = comm.size();
    if size == 1 {
        return Ok(extract_local(args, job, read, gpu));
    }
    let message = encode_inputs(index, &read.inputs, read.read_s);
    for dest in 1..size {
        comm.send(dest, &message);
    }
    let t0 = Instant::now();
    let mut extract_s: f64 = 0.0;
    let mut blocks = match &read.inputs {
        Ok((psf, img)) => extract_share(args, job, psf, img, gpu, 0, size),
        Err(e) => Err(e.clone()),
    };
    extract_s = extract_s.max(t0.elapsed().as_secs_f64());
    for source in 1..size {
        let message = comm.recv(source);
        let mut d = Decoder::new(&message);
        extract_s = extract_s.max(d.f64()?);
        let theirs = wire::decode_blocks(&d.bytes()?)?;
        d.end()?;
        blocks = match (blocks, theirs) {
            (Ok(mut all), Ok(more)) => {
                all.extend(more);
                Ok(all)
            }
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
    }
    let result = match (read.inputs, blocks) {
        (Ok((psf, img)), Ok(blocks)) => Ok(Extracted {
            in_psf: psf.in_psf,
            meta: without_pixels(img),
            blocks,
        }),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    };
    Ok(Finished {
        read_s: read.read_s,
        extract_s,
        result,
    })
}

/// Reads a frame's PSF and preproc image (an error names the file and the problem).
fn read_inputs(job: &Job) -> Inputs {
    let psf = io::read_psf(&job.psf).map_err(|e| e.to_string())?;
    let image = io::read_preproc(&job.preproc).map_err(|e| e.to_string())?;
    Ok((psf, image))
}

/// The preproc image without its pixels (what the writer needs), freeing them.
fn without_pixels(mut img: PreprocImage) -> PreprocImage {
    img.image = Vec::new();
    img.ivar = Vec::new();
    img.mask = Vec::new();
    img.readnoise = None;
    img
}

/// The message with a frame's inputs: frame index, read time, then the PSF and the preproc
/// image with its pixels, or the error.
fn encode_inputs(index: usize, inputs: &Inputs, read_s: f64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.usize(index);
    e.f64(read_s);
    match inputs {
        Ok((psf, img)) => {
            e.usize(0);
            wire::put_psf(&mut e, psf);
            wire::put_preproc(&mut e, img, true);
        }
        Err(msg) => {
            e.usize(1);
            e.str(msg);
        }
    }
    e.finish()
}

/// Decodes [`encode_inputs`]: (frame index, inputs, read seconds).
fn decode_inputs(bytes: &[u8]) -> Result<(usize, Inputs, f64), wire::WireError> {
    let mut d = Decoder::new(bytes);
    let index = d.usize()?;
    let read_s = d.f64()?;
    let inputs = if d.usize()? == 0 {
        let psf = wire::get_psf(&mut d)?;
        Ok((psf, wire::get_preproc(&mut d)?))
    } else {
        Err(d.str()?)
    };
    d.end()?;
    Ok((index, inputs, read_s))
}

/// The message of a finished frame (extractor -> writer): frame index, read and extract
/// seconds, then IN_PSF, the preproc image without pixels and the blocks, or the error.
fn encode_finished(index: usize, frame: &Finished) -> Vec<u8> {
    let mut e = Encoder::new();
    e.usize(index);
    e.f64(frame.read_s);
    e.f64(frame.extract_s);
    match &frame.result {
        Ok(ex) => {
            e.usize(0);
            match &ex.in_psf {
                Some(s) => {
                    e.usize(1);
                    e.str(s);
                }
                None => e.usize(0),
            }
            wire::put_preproc(&mut e, &ex.meta, false);
            e.usize(ex.blocks.len());
            for b in &ex.blocks {
                wire::put_block(&mut e, b);
            }
        }
        Err(msg) => {
            e.usize(1);
            e.str(msg);
        }
    }
    e.finish()
}

/// Decodes [`encode_finished`]: (frame index, frame).
fn decode_finished(bytes: &[u8]) -> Result<(usize, Finished), wire::WireError> {
    let mut d = Decoder::new(bytes);
    let index = d.usize()?;
    let (read_s, extract_s) = (d.f64()?, d.f64()?);
    let result = if d.usize()? == 0 {
        let in_psf = if d.usize()? == 1 {
            Some(d.str()?)
        } else {
            None
        };
        let meta = wire::get_preproc(&mut d)?;
        let n = d.usize()?;
        let blocks = (0..n)
            .map(|_| wire::get_block(&mut d))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Extracted {
            in_psf,
            meta,
            blocks,
        })
    } else {
        Err(d.str()?)
    };
    d.end()?;
    Ok((
        index,
        Finished {
            read_s,
            extract_s,
            result,
        },
    ))
}

/// Assembles and writes a finished frame; its timing, or the error of any step.
fn write_finished(args: &ExposureArgs, job: &Job, frame: Finished) -> Result<Timing, String> {
    let ex = frame.result?;
    let t0 = Instant::now();
    let npatch = ex.blocks.iter().map(|b| b.npatch).sum();
    write_frame(args, job, ex.blocks, ex.in_psf.as_deref(), &ex.meta)?;
    Ok(Timing {
        read: frame.read_s,
        extract: frame.extract_s,
        write: t0.elapsed().as_secs_f64(),
        npatch,
    })
}

/// Extracts this rank's share of the frame's bundles.
fn extract_share(
    args: &ExposureArgs,
    job: &Job,
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    gpu: Option<&GpuContext>,
    index: usize,
    count: usize,
) -> Result<Vec<BundleBlock>, String> {
    let (grid, params) = frame_setup(args, &job.camera, psf)?;
    let backend: &dyn Backend = match gpu {
        Some(g) => g,
        None => &CpuBackend,
    };
    let share = bundle_share(
        params.bundle_starts().len(),
        index,
        count,
        backend.can_fall_back(),
    );
    let trace = Trace::new();
    let progress = |_: usize, _: usize| {};
    FrameJob::new(psf, image, &grid, &params)
        .and_then(|frame| extract_bundles(&frame, backend, &share, &progress, &trace))
        .map(|set| set.blocks)
        .map_err(|e| e.to_string())
}

/// Assembles and writes a frame.
fn write_frame(
    args: &ExposureArgs,
    job: &Job,
    blocks: Vec<BundleBlock>,
    in_psf: Option<&str>,
    image: &PreprocImage,
) -> Result<(), String> {
    let ndiag = blocks.first().map_or(0, |b| b.arrays.ndiag);
    let (grid, params) = grid_and_params(args, &job.camera)?;
    let ex = assemble_frame(&grid, &params, ndiag, blocks, None).map_err(|e| e.to_string())?;
    let frame = frame_data(&ex, image, in_psf, &job.psf, &job.preproc, &grid);
    io::write_frame(&job.output, &frame, image.fibermap.as_ref()).map_err(|e| e.to_string())
}

/// The table printed by the writer at the end.
fn print_summary(expid: &str, outcomes: &[Outcome], skipped: &[String], wall: f64) {
    println!("exposure {expid} summary:");
    println!(
        "  {:<6} {:<8} {:>8} {:>10} {:>8} {:>8}  detail",
        "camera", "status", "read_s", "extract_s", "write_s", "patches"
    );
    for o in outcomes {
        match &o.status {
            Ok(t) => println!(
                "  {:<6} {:<8} {:>8.2} {:>10.2} {:>8.2} {:>8}",
                o.camera, "ok", t.read, t.extract, t.write, t.npatch
            ),
            Err(e) => println!(
                "  {:<6} {:<8} {:>8} {:>10} {:>8} {:>8}  {e}",
                o.camera, "FAILED", "-", "-", "-", "-"
            ),
        }
    }
    for camera in skipped {
        println!(
            "  {:<6} {:<8} {:>8} {:>10} {:>8} {:>8}  output exists",
            camera, "skipped", "-", "-", "-", "-"
        );
    }
    let written = outcomes.iter().filter(|o| o.status.is_ok()).count();
    let failed = outcomes.len() - written;
    println!(
        "exposure {expid}: {written} written, {} skipped, {failed} failed in {wall:.2} s ({:.2} frames/s)",
        skipped.len(),
        written as f64 / wall.max(1e-9)
    );
    if failed > 0 {
        let names: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.status.is_err())
            .map(|o| o.camera.as_str())
            .collect();
        eprintln!("exposure {expid}: failed frame(s): {}", names.join(" "));
    }
}
