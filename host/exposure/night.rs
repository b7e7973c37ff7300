//! A job over many exposures (`desi-extract exposures`): the frames of every exposure go
//! through one queue, so a GPU never waits at an exposure boundary, over groups of ranks
//! ([`super::groups`]: by node, or of a given size).
//!
//! Planning finds each exposure's frames as `exposure` does ([`super::discover_in`], with its
//! skip rule: a frame on disk is kept only when complete and made from the same inputs and
//! options, which reads them), in parallel on the rayon pool: with one group on its writer,
//! with several on every group's writer for its share of the exposures, gathered by the
//! coordinator (a restart of a large job verifies its frames on every node at once). The
//! frames go into one queue. Each group then loops: its writer asks for a chunk
//! ([`super::coordinator`]), tells its ranks, and the ranks run `exposure`'s role loops
//! ([`super::run_role`]) over the chunk, opening their GPUs with the first one; the outcomes
//! go back with the next request. With one group the whole queue is one chunk: exactly
//! `exposure`'s pipeline over the frames of every exposure. A frame that fails is an outcome,
//! so the others finish; a killed job rerun with the same command extracts only what is
//! missing.

use super::coordinator::{self, chunk_bytes, read_chunk, Chunk, JobFrame, Queue, Source};
use super::groups::{self, GroupSize};
use super::job_summary::summarize;
use super::jobs::{discover_in, expid_text, Discovery, ExposureDirs, FrameFiles};
use super::read_ahead::ReadAhead;
use super::summary::{ExposureObserver, FrameOutcome};
use super::{
    create_outdir, frames_in_flight_for, open_gpus, provenance, release_gpus, run_role, shared,
    ExposureConfig, ExposureError, JobSummary, Layout, RankContext,
};
use crate::gpu::memory::memory_limit_from_env;
use crate::gpu::GpuContext;
use crate::parallel::{gpu_for_rank, Comm};
use crate::solve::CpuBackend;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What a job extracts and how its ranks share the work.
#[derive(Clone, Debug, PartialEq)]
pub struct JobConfig {
    /// The options of every frame, as `exposure` takes them (its `indir`, `outdir` and `expid`
    /// are not used).
    pub options: ExposureConfig,
    /// The exposures, in the order their frames are queued.
    pub exposures: Vec<ExposureDirs>,
    /// How the ranks are split into groups.
    pub groups: GroupSize,
    /// Frames a group asks for at once (`None`: 10 per frame its extracting ranks hold at
    /// once), capped by its share of what is left.
    pub chunk: Option<usize>,
}

/// One exposure of the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedExposure {
    /// Its directories.
    pub dirs: ExposureDirs,
    /// Its frames: to extract, skipped, redone (why), PSFs without preproc.
    pub found: Discovery,
    /// Why none of its frames can be made (no preproc file, output directory not created).
    pub problem: Option<String>,
}

/// What the job is about to do (heard on the planning rank).
#[derive(Clone, Debug, PartialEq)]
pub struct JobPlan {
    /// Every exposure with its frames.
    pub exposures: Vec<PlannedExposure>,
    /// Frames to extract, over all exposures.
    pub frames: usize,
    /// Number of groups.
    pub groups: usize,
    /// Ranks of the job.
    pub ranks: usize,
    /// The coordinating rank, with several groups.
    pub coordinator: Option<usize>,
}

/// Hears the job: the plan on the planning rank, each frame on the writer of the group that
/// wrote it (frames of a chunk in order).
pub trait JobObserver {
    /// The plan, before any frame is extracted.
    fn planned(&mut self, _plan: &JobPlan) {}
    /// Frame `index` (0-based, in the job's queue) of `total` was written or failed in group
    /// `group`.
    fn frame_done(&mut self, _group: usize, _index: usize, _total: usize, _outcome: &FrameOutcome) {
    }
}

/// An observer that hears nothing.
impl JobObserver for () {}

/// Finds the frames of one exposure with `exposure`'s skip rule (a frame on disk is verified:
/// checksums, and INPUTSUM against a digest of the inputs) and creates its output directory
/// when it has frames to write.
fn plan_exposure(options: &ExposureConfig, dirs: &ExposureDirs) -> PlannedExposure {
    let mut found = discover_in(dirs, options.overwrite, |files| {
        provenance::check_existing(options, files)
    });
    let mut problem = found.no_input().then(|| {
        let mut why = format!(
            "no preproc-*-{}.fits in {}",
            expid_text(dirs.expid),
            dirs.preproc_dir.display()
        );
        if !found.missing_preproc.is_empty() {
            why += &format!(
                " (PSF file(s) for camera(s) {})",
                found.missing_preproc.join(" ")
            );
        }
        why
    });
    if problem.is_none() && !found.frames.is_empty() {
        if let Err(e) = create_outdir(&dirs.outdir) {
            problem = Some(e.to_string());
        }
    }
    if problem.is_some() {
        found.frames.clear();
    }
    PlannedExposure {
        dirs: dirs.clone(),
        found,
        problem,
    }
}

/// Plans the exposures `which` (indices into the job's list) on the rayon pool: verifying the
/// frames a rerun may skip reads their inputs and outputs, so the files are read in parallel
/// (and, with a coordinator, by every group's writer for its share of the exposures).
fn plan_share(config: &JobConfig, which: &[usize]) -> Vec<(usize, PlannedExposure)> {
    use rayon::prelude::*;
    which
        .par_iter()
        .filter_map(|&e| {
            let dirs = config.exposures.get(e)?;
            Some((e, plan_exposure(&config.options, dirs)))
        })
        .collect()
}

/// The job's plan from every exposure's, in the job's order, and its queue: the frames in
/// exposure then camera order, with the exposure of each.
fn queue_plan(exposures: Vec<PlannedExposure>) -> (JobPlan, Vec<JobFrame>, Vec<usize>) {
    let (mut frames, mut exposure_of) = (Vec::new(), Vec::new());
    for (e, planned) in exposures.iter().enumerate() {
        for files in &planned.found.frames {
            frames.push(JobFrame {
                index: frames.len(),
                files: files.clone(),
            });
            exposure_of.push(e);
        }
    }
    let plan = JobPlan {
        exposures,
        frames: frames.len(),
        groups: 0,
        ranks: 0,
        coordinator: None,
    };
    (plan, frames, exposure_of)
}

/// Frames a group asks for at once by default: 10 per frame its extracting ranks hold at once
/// (a single GPU process with 3 in flight: 30, an exposure's worth). A chunk ends with its
/// pipeline drained (the last frames run with fewer in flight, the next chunk's reads start
/// with it), so chunks are large; the coordinator's guided share keeps the end balanced.
fn default_chunk(layout: &Layout, in_flight: usize) -> usize {
    10 * layout.extractors().max(1) * in_flight.max(1)
}

/// Passes the frames of a chunk, reported by the writer's pool, on to the job's observer.
struct ChunkObserver<'a> {
    group: usize,
    chunk: &'a Chunk,
    inner: &'a mut dyn JobObserver,
}

impl ExposureObserver for ChunkObserver<'_> {
    fn frame_done(&mut self, position: usize, _total: usize, outcome: &FrameOutcome) {
        if let Some(frame) = self.chunk.frames.get(position) {
            self.inner
                .frame_done(self.group, frame.index, self.chunk.total, outcome);
        }
    }
}

/// One group's loop: opens its GPUs once, then extracts the chunks its writer gets from
/// `source` (`Some` on the writer only) until there are none; the outcomes a local source
/// kept (on the writer of a job's only group) and the frames this process held at once.
fn run_group(
    config: &JobConfig,
    group: &Comm,
    group_index: usize,
    mut source: Option<Source<'_>>,
    start: Instant,
    observer: &mut dyn JobObserver,
) -> Result<(Vec<(usize, FrameOutcome)>, usize), ExposureError> {
    let options = &config.options;
    let layout = Layout::new(group.size(), options.overlap);
    let uses_gpu = options.gpu && layout.extracts(group.rank());
    let in_flight = frames_in_flight_for(&layout, uses_gpu, options.frames_in_flight);
    let limit = match (uses_gpu, options.gpu_memory_limit) {
        (false, _) => None,
        (true, Some(limit)) => Some(limit),
        (true, None) => memory_limit_from_env()?,
    };
    if uses_gpu {
        // No driver: say so at once, not after the first frames are read.
        crate::gpu::probe_driver()?;
    }
    // Opened with the first chunk, once its first frames are being read (driver start and
    // module load overlap the reads, as in `exposure`); never for a group that gets no frame.
    let mut gpus: Vec<GpuContext> = Vec::new();
    // The only group takes the whole queue at once: no chunk boundary at all.
    let want = match (config.chunk, &source) {
        (Some(n), _) => n,
        (None, Some(Source::Local { .. })) => usize::MAX,
        (None, _) => default_chunk(&layout, in_flight),
    };
    let mut last = Vec::new();
    loop {
        let bytes = match source.as_mut() {
            Some(source) => {
                let next = source.next_chunk(want, in_flight, std::mem::take(&mut last))?;
                chunk_bytes(&next)?
            }
            None => Vec::new(),
        };
        let Some(chunk) = read_chunk(&group.broadcast(layout.writer(), bytes))? else {
            break;
        };
        let files: Vec<FrameFiles> = chunk.frames.iter().map(|f| f.files.clone()).collect();
        let mut heard = ChunkObserver {
            group: group_index,
            chunk: &chunk,
            inner: &mut *observer,
        };
        let outcomes = std::thread::scope(|scope| {
            let reads = (in_flight > 1).then(|| {
                ReadAhead::new(scope, options, &files, shared::READ_AHEAD_IN_FLIGHT, start)
            });
            if uses_gpu && gpus.is_empty() {
                gpus = open_gpus(gpu_for_rank(group.local_rank())?, in_flight, limit)?;
            }
            let ctx = RankContext {
                config: options,
                comm: group,
                frames: &files,
                layout,
                start,
                backend: gpus.first().map_or(&CpuBackend, |g| g),
            };
            run_role(&ctx, &gpus, in_flight, reads, &mut heard)
        })?;
        last = chunk.frames.iter().map(|f| f.index).zip(outcomes).collect();
    }
    release_gpus(&gpus, limit)?;
    Ok(source.map_or((Vec::new(), 1), Source::into_outcomes))
}

/// Extracts every frame of the job's exposures over the ranks of `world` (every rank calls
/// it): the planning rank reports the plan, each group's writer each frame it writes, and
/// every rank returns the summary (the exposures' outcomes on the reporting rank) with the
/// reporter's verdict.
///
/// # Errors
/// A request that no frame could satisfy (before any work), no exposure with a frame to
/// extract or skip, no GPU for an extracting rank with `gpu`, a malformed message. A frame or
/// an exposure that fails is not an error: see [`JobSummary::any_failed`].
pub fn run_job(
    config: &JobConfig,
    world: &Comm,
    observer: &mut dyn JobObserver,
) -> Result<JobSummary, ExposureError> {
    let start = Instant::now();
    config.options.check_request()?;
    let groups = groups::split(world, config.groups);
    // The plan of the exposures `share` and, on the rank that reports, the whole plan.
    let report = |exposures: Vec<(usize, PlannedExposure)>, observer: &mut dyn JobObserver| {
        let mut exposures = exposures;
        exposures.sort_by_key(|(e, _)| *e);
        let (mut plan, frames, exposure_of) =
            queue_plan(exposures.into_iter().map(|(_, p)| p).collect());
        plan.groups = groups.count;
        plan.ranks = world.size();
        plan.coordinator = groups.coordinator;
        observer.planned(&plan);
        (plan, frames, exposure_of)
    };
    let mut result = None;
    let reporter;
    match (&groups.comm, groups.coordinator) {
        (None, coordinator) => {
            // The coordinator: the groups plan, it queues and hands out.
            reporter = coordinator.unwrap_or(0);
            let mut planned = None;
            let outcomes = coordinator::serve(world, groups.count, |shares| {
                let (plan, frames, exposure_of) = report(shares, &mut *observer);
                planned = Some((plan, exposure_of));
                Queue::new(frames, groups.count)
            })?;
            if let Some((plan, exposure_of)) = planned {
                result = Some((plan, exposure_of, outcomes));
            }
        }
        (Some(group), Some(coordinator)) => {
            // A group's writer plans its share of the exposures (every `count`-th), sends it
            // and asks for chunks.
            reporter = coordinator;
            let writer = Layout::new(group.size(), config.options.overlap).writer();
            let source = if group.rank() == writer {
                let mine: Vec<usize> = (groups.index..config.exposures.len())
                    .step_by(groups.count.max(1))
                    .collect();
                coordinator::send_plan(world, coordinator, plan_share(config, &mine))?;
                Some(Source::Remote { world, coordinator })
            } else {
                None
            };
            run_group(config, group, groups.index, source, start, observer)?;
        }
        (Some(group), None) => {
            // One group: the world in the same order; its writer plans and keeps the queue.
            let writer = Layout::new(group.size(), config.options.overlap).writer();
            reporter = writer;
            let mut planning = None;
            let source = if group.rank() == writer {
                let all: Vec<usize> = (0..config.exposures.len()).collect();
                let (plan, frames, exposure_of) = report(plan_share(config, &all), observer);
                planning = Some((plan, exposure_of));
                Some(Source::Local {
                    queue: Queue::new(frames, 1),
                    done: Vec::new(),
                    in_flight: 1,
                })
            } else {
                None
            };
            let (kept, in_flight) = run_group(config, group, 0, source, start, observer)?;
            if let Some((plan, exposure_of)) = planning {
                let outcomes = kept.into_iter().map(|(i, o)| (i, 0, o)).collect();
                result = Some((plan, exposure_of, (outcomes, in_flight)));
            }
        }
    }
    drop(groups);
    let mut summary = match result {
        Some((plan, exposure_of, outcomes)) => {
            let nothing =
                plan.frames == 0 && plan.exposures.iter().all(|e| e.found.skipped.is_empty());
            if nothing {
                return Err(ExposureError::Request(format!(
                    "no frame to extract or skip in {} exposure(s): {}",
                    plan.exposures.len(),
                    plan.exposures
                        .iter()
                        .filter_map(|e| e.problem.as_deref())
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            summarize(plan, &exposure_of, outcomes, start)
        }
        None => JobSummary {
            is_reporter: false,
            exposures: Vec::new(),
            failed_exposures: Vec::new(),
            wall_s: start.elapsed().as_secs_f64(),
            groups: 0,
            gpu_groups: 0,
            device_busy_s: 0.0,
            any_failed: false,
        },
    };
    let verdict = world.broadcast(reporter, vec![u8::from(summary.any_failed)]);
    summary.any_failed = verdict.first().copied().unwrap_or(1) != 0;
    Ok(summary)
}
