//! A job over many exposures (`desi-extract exposures`): the frames of every exposure go
//! through one queue, so a GPU never waits at an exposure boundary, over groups of ranks
//! ([`super::groups`]: by node, or of a given size).
//!
//! The rank that plans (the coordinator when there are several groups, else the group's
//! writer) finds each exposure's frames as `exposure` does ([`super::discover_in`], with its
//! skip rule: a frame on disk is kept only when complete and made from the same inputs and
//! options) and puts them in one queue. Each group opens its GPUs once and then loops: its
//! writer asks for a chunk ([`super::coordinator`]), tells its ranks, and the ranks run
//! `exposure`'s role loops ([`super::run_role`]) over the chunk; the outcomes go back with
//! the next request. With one group the whole queue is one chunk: exactly `exposure`'s
//! pipeline over the frames of every exposure. A frame that fails is an outcome, so the
//! others finish; a killed job rerun with the same command extracts only what is missing.

use super::coordinator::{self, chunk_bytes, read_chunk, Chunk, Gathered, JobFrame, Queue, Source};
use super::groups::{self, GroupSize};
use super::jobs::{discover_in, expid_text, Discovery, ExposureDirs, FrameFiles};
use super::read_ahead::ReadAhead;
use super::summary::{
    union_length, ExposureObserver, ExposureRecord, ExposureSummary, FrameOutcome, FrameTiming,
};
use super::{
    create_outdir, frames_in_flight_for, open_gpus, provenance, release_gpus, run_role, shared,
    ExposureConfig, ExposureError, Layout, RankContext,
};
use crate::gpu::memory::memory_limit_from_env;
use crate::gpu::GpuContext;
use crate::io::atomic::write_file_atomically;
use crate::io::IoError;
use crate::parallel::{gpu_for_rank, Comm};
use crate::solve::CpuBackend;
use serde::Serialize;
use std::collections::BTreeMap;
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
#[derive(Clone, Debug, PartialEq)]
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

/// The result of a job: per exposure on the reporting rank (the coordinator, or the writer of
/// the only group), with the job's totals.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSummary {
    /// Whether this rank holds the outcomes and reports.
    pub is_reporter: bool,
    /// Every exposure's summary (frames in camera order; its wall time and frames/s are the
    /// job's, its frames in flight the most that a group's process held at once).
    pub exposures: Vec<(ExposureDirs, ExposureSummary)>,
    /// Exposures none of whose frames could be made, with why.
    pub failed_exposures: Vec<(String, String)>,
    /// Seconds from the start of the job to the last frame written.
    pub wall_s: f64,
    /// Number of groups.
    pub groups: usize,
    /// Groups that extracted on GPUs (whose frames report device stages).
    pub gpu_groups: usize,
    /// The sum over groups of the union of their frames' device stages, seconds.
    pub device_busy_s: f64,
    /// Whether any frame failed or was written flagged, or an exposure failed: the reporter's
    /// verdict, the same on every rank.
    pub any_failed: bool,
}

impl JobSummary {
    fn outcomes(&self) -> impl Iterator<Item = &FrameOutcome> {
        self.exposures.iter().flat_map(|(_, e)| e.outcomes.iter())
    }

    /// Frames written (flagged ones included).
    pub fn written(&self) -> usize {
        self.exposures.iter().map(|(_, e)| e.written()).sum()
    }

    /// Frames skipped (verified output on disk).
    pub fn skipped(&self) -> usize {
        self.exposures.iter().map(|(_, e)| e.skipped.len()).sum()
    }

    /// Frames that failed, cameras without preproc included.
    pub fn failed(&self) -> usize {
        self.exposures
            .iter()
            .map(|(_, e)| e.failed_cameras().len() + e.missing_preproc.len())
            .sum()
    }

    /// Frames written flagged (failed patches).
    pub fn flagged(&self) -> usize {
        self.exposures
            .iter()
            .map(|(_, e)| e.flagged_cameras().len())
            .sum()
    }

    /// Frames written per second of wall time.
    pub fn frames_per_s(&self) -> f64 {
        self.written() as f64 / self.wall_s.max(1e-9)
    }

    /// The GPUs' busy fraction: [`Self::device_busy_s`] over the wall time of the GPU groups
    /// (`None` on the CPU); exact for groups of one GPU process.
    pub fn gpu_busy_fraction(&self) -> Option<f64> {
        (self.gpu_groups > 0)
            .then(|| self.device_busy_s / (self.wall_s.max(1e-9) * self.gpu_groups as f64))
    }

    /// Medians over the written frames of (read, extract, write) seconds.
    pub fn median_steps(&self) -> (f64, f64, f64) {
        let timings: Vec<&FrameTiming> = self
            .outcomes()
            .filter_map(|o| o.status.as_ref().ok())
            .collect();
        let median = |f: fn(&FrameTiming) -> f64| {
            let values: Vec<f64> = timings.iter().map(|t| f(t)).collect();
            if values.is_empty() {
                0.0
            } else {
                crate::stats::median(values)
            }
        };
        (
            median(|t| t.read_s),
            median(|t| t.extract_s),
            median(|t| t.write_s),
        )
    }

    /// The job as a serializable record: its totals and each exposure's
    /// [`ExposureRecord`] (a record per frame).
    pub fn record(&self) -> JobRecord<'_> {
        let (median_read_s, median_extract_s, median_write_s) = self.median_steps();
        JobRecord {
            wall_s: self.wall_s,
            groups: self.groups,
            written: self.written(),
            skipped: self.skipped(),
            failed: self.failed(),
            flagged: self.flagged(),
            frames_per_s: self.frames_per_s(),
            gpu_busy_fraction: self.gpu_busy_fraction(),
            device_busy_s: self.device_busy_s,
            median_read_s,
            median_extract_s,
            median_write_s,
            failed_exposures: self
                .failed_exposures
                .iter()
                .map(|(expid, why)| FailedExposure { expid, error: why })
                .collect(),
            exposures: self
                .exposures
                .iter()
                .map(|(dirs, e)| JobExposureRecord {
                    night: dirs.night,
                    record: e.record(),
                })
                .collect(),
        }
    }

    /// Writes [`Self::record`] as JSON to `path`, atomically.
    ///
    /// # Errors
    /// The file cannot be written (an [`IoError`] naming it).
    pub fn write_json(&self, path: &std::path::Path) -> Result<(), IoError> {
        let record = self.record();
        write_file_atomically(path, |out| {
            serde_json::to_writer_pretty(out, &record).map_err(|e| IoError::Io {
                path: path.to_path_buf(),
                op: "write the job summary JSON",
                source: e.into(),
            })
        })
    }
}

/// The machine-readable record of a job ([`JobSummary::record`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRecord<'a> {
    /// Seconds from the start of the job to the last frame written.
    pub wall_s: f64,
    /// Number of groups.
    pub groups: usize,
    /// Frames written (flagged ones included), skipped, failed, written flagged.
    pub written: usize,
    /// See `written`.
    pub skipped: usize,
    /// See `written`.
    pub failed: usize,
    /// See `written`.
    pub flagged: usize,
    /// Frames written per second of wall time.
    pub frames_per_s: f64,
    /// The GPUs' busy fraction (`null` on the CPU).
    pub gpu_busy_fraction: Option<f64>,
    /// Sum over groups of the union of their frames' device stages.
    pub device_busy_s: f64,
    /// Medians over the written frames of read, extract and write seconds.
    pub median_read_s: f64,
    /// See `median_read_s`.
    pub median_extract_s: f64,
    /// See `median_read_s`.
    pub median_write_s: f64,
    /// Exposures none of whose frames could be made.
    pub failed_exposures: Vec<FailedExposure<'a>>,
    /// Each exposure's record (its frames' records in camera order).
    pub exposures: Vec<JobExposureRecord<'a>>,
}

/// An exposure none of whose frames could be made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailedExposure<'a> {
    /// Its exposure id.
    pub expid: &'a str,
    /// Why.
    pub error: &'a str,
}

/// One exposure of a [`JobRecord`]: its night and `exposure`'s record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobExposureRecord<'a> {
    /// The night, when known.
    pub night: Option<u32>,
    /// The exposure's record.
    #[serde(flatten)]
    pub record: ExposureRecord<'a>,
}

/// Finds the frames of every exposure (creating missing output directories) and queues them.
fn plan(config: &JobConfig) -> (JobPlan, Vec<JobFrame>, Vec<usize>) {
    let options = &config.options;
    let mut exposures = Vec::with_capacity(config.exposures.len());
    let (mut frames, mut exposure_of) = (Vec::new(), Vec::new());
    for (e, dirs) in config.exposures.iter().enumerate() {
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
        for files in &found.frames {
            frames.push(JobFrame {
                index: frames.len(),
                files: files.clone(),
            });
            exposure_of.push(e);
        }
        exposures.push(PlannedExposure {
            dirs: dirs.clone(),
            found,
            problem,
        });
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
            run_role(&ctx, &gpus, reads, &mut heard)
        })?;
        last = chunk.frames.iter().map(|f| f.index).zip(outcomes).collect();
    }
    release_gpus(&gpus, limit)?;
    Ok(source.map_or((Vec::new(), 1), Source::into_outcomes))
}

/// Puts the outcomes (job frame index, group key, outcome) back into the plan's exposures.
fn summarize(
    plan: JobPlan,
    exposure_of: &[usize],
    (outcomes, frames_in_flight): Gathered,
    start: Instant,
) -> JobSummary {
    let wall_s = start.elapsed().as_secs_f64();
    let mut by_frame: Vec<Option<FrameOutcome>> = vec![None; exposure_of.len()];
    let mut by_group: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    for (index, group, outcome) in outcomes {
        by_group
            .entry(group)
            .or_default()
            .extend(outcome.device_intervals.iter().copied());
        if let Some(slot) = by_frame.get_mut(index) {
            *slot = Some(outcome);
        }
    }
    let busy: Vec<f64> = by_group
        .values()
        .filter(|v| !v.is_empty())
        .map(|v| union_length(v))
        .collect();
    let mut per_exposure: Vec<Vec<FrameOutcome>> = vec![Vec::new(); plan.exposures.len()];
    for ((frame, outcome), &e) in by_frame.into_iter().enumerate().zip(exposure_of) {
        let outcome = outcome.unwrap_or_else(|| FrameOutcome {
            camera: format!("frame {frame}"),
            output: Default::default(),
            status: Err("never extracted (internal error)".into()),
            finished_at_s: wall_s,
            device_intervals: Vec::new(),
        });
        per_exposure[e].push(outcome);
    }
    let mut failed_exposures = Vec::new();
    let exposures: Vec<(ExposureDirs, ExposureSummary)> = plan
        .exposures
        .into_iter()
        .zip(per_exposure)
        .map(|(planned, outcomes)| {
            let expid = expid_text(planned.dirs.expid);
            if let Some(why) = &planned.problem {
                failed_exposures.push((expid.clone(), why.clone()));
            }
            let any_failed = outcomes.iter().any(FrameOutcome::is_failed_or_flagged)
                || !planned.found.missing_preproc.is_empty();
            let summary = ExposureSummary {
                expid,
                is_writer: true,
                outcomes,
                skipped: planned.found.skipped,
                missing_preproc: planned.found.missing_preproc,
                wall_s,
                any_failed,
                frames_in_flight,
                gpu_memory: None,
                host_peak_rss_bytes: super::summary::host_peak_rss_bytes(),
            };
            (planned.dirs, summary)
        })
        .collect();
    let any_failed = !failed_exposures.is_empty() || exposures.iter().any(|(_, e)| e.any_failed);
    JobSummary {
        is_reporter: true,
        exposures,
        failed_exposures,
        wall_s,
        groups: plan.groups,
        gpu_groups: busy.len(),
        device_busy_s: busy.iter().sum(),
        any_failed,
    }
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
    let planned = |observer: &mut dyn JobObserver| {
        let (mut plan, frames, exposure_of) = plan(config);
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
            reporter = coordinator.unwrap_or(0);
            let (plan, frames, exposure_of) = planned(observer);
            let outcomes =
                coordinator::serve(world, Queue::new(frames, groups.count), groups.count)?;
            result = Some((plan, exposure_of, outcomes));
        }
        (Some(group), Some(coordinator)) => {
            reporter = coordinator;
            let writer = Layout::new(group.size(), config.options.overlap).writer();
            let source = (group.rank() == writer).then_some(Source::Remote { world, coordinator });
            run_group(config, group, groups.index, source, start, observer)?;
        }
        (Some(group), None) => {
            // One group: the world in the same order; its writer plans and keeps the queue.
            let writer = Layout::new(group.size(), config.options.overlap).writer();
            reporter = writer;
            let mut planning = None;
            let source = if group.rank() == writer {
                let (plan, frames, exposure_of) = planned(observer);
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
