//! `desi-extract exposures`: every frame of many exposures in one job (a desispec production
//! tree or a list file), over groups of ranks. The job is the library's
//! [`desi_extract::exposure::night`]; this module holds the flags and logs the plan, a line
//! per frame and the job's summary in desispec's log style on stderr.

use super::exposure::{flag_detail, FrameOptions};
use super::InputError;
use clap::Args;
use desi_extract::exposure::list::{from_list, from_tree};
use desi_extract::exposure::night::JobPlan;
use desi_extract::exposure::{
    expid_text, run_job, FrameOutcome, GroupSize, JobConfig, JobObserver, JobSummary,
};
use desi_extract::parallel::Comm;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `exposures`.
#[derive(Debug, Args)]
pub struct ExposuresArgs {
    /// desispec production directory ($DESI_SPECTRO_REDUX/$SPECPROD): reads
    /// preproc/NIGHT/EXPID/preproc-CAM-EXPID.fits and exposures/NIGHT/EXPID/psf-CAM-EXPID.fits,
    /// writes exposures/NIGHT/EXPID/frame-CAM-EXPID.fits; every exposure of its preproc/ tree
    /// unless --list or --nights says which.
    #[arg(long, required_unless_present = "list")]
    specprod: Option<PathBuf>,
    /// Only these nights (YYYYMMDD, comma-separated) of the production tree.
    #[arg(long, value_delimiter = ',', conflicts_with = "list")]
    nights: Vec<u32>,
    /// A list of exposures, one a line: `NIGHT EXPID` (in --specprod) or `EXPID INDIR OUTDIR`
    /// (preproc and PSF files in INDIR, as `exposure --indir`); `#` starts a comment.
    #[arg(long)]
    list: Option<PathBuf>,
    #[command(flatten)]
    options: FrameOptions,
    /// Ranks per group (default: the ranks of a node form a group). With several groups
    /// rank 0 only hands frames out.
    #[arg(long = "group-size", value_parser = clap::value_parser!(u64).range(1..))]
    group_size: Option<u64>,
    /// Frames a group takes at once (default: 10 per frame its ranks extract at once, e.g. 30
    /// for one GPU process; never more than its share of what is left). A job with one group
    /// takes every frame at once.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    chunk: Option<u64>,
    /// Also write the job's record as JSON: totals and, per exposure, `exposure`'s record (a
    /// record per frame).
    #[arg(long = "summary-json")]
    summary_json: Option<PathBuf>,
}

impl ExposuresArgs {
    /// `true` with `--gpu`.
    pub fn uses_gpu(&self) -> bool {
        self.options.uses_gpu()
    }
}

/// Runs `exposures`: exit 2 when a frame or an exposure failed or a frame was written flagged;
/// exit 1 for a bad list or tree, or when no exposure has a frame to extract or skip.
pub fn run(args: ExposuresArgs, comm: &Comm) -> anyhow::Result<ExitCode> {
    let exposures = match (&args.list, &args.specprod) {
        (Some(list), specprod) => from_list(list, specprod.as_deref()),
        (None, Some(specprod)) => from_tree(specprod, &args.nights),
        (None, None) => return Err(InputError("--specprod or --list is needed".into()).into()),
    }
    .map_err(|e| InputError(e.to_string()))?;
    let config = JobConfig {
        options: args.options.config(PathBuf::new(), PathBuf::new(), 0),
        exposures,
        groups: args
            .group_size
            .map_or(GroupSize::ByNode, |n| GroupSize::Ranks(n as usize)),
        chunk: args.chunk.map(|n| n as usize),
    };
    let mut logger = Logger {
        frames_seen: 0,
        kill_after: kill_after_from_env(),
    };
    let summary = run_job(&config, comm, &mut logger)?;
    if summary.is_reporter {
        log_summary(&summary);
        if let Some(path) = &args.summary_json {
            summary.write_json(path)?;
        }
    }
    Ok(super::exposure::job_exit_code(summary.any_failed))
}

/// Test hook: `DESI_EXTRACT_TEST_KILL_AFTER_FRAMES=N` kills the process with SIGKILL once
/// its group has written N frames (what a node failure or a job's time limit does, for the
/// tests of a restart).
fn kill_after_from_env() -> Option<usize> {
    std::env::var("DESI_EXTRACT_TEST_KILL_AFTER_FRAMES")
        .ok()?
        .parse()
        .ok()
}

/// Logs the plan and a line per frame.
struct Logger {
    frames_seen: usize,
    kill_after: Option<usize>,
}

impl JobObserver for Logger {
    fn planned(&mut self, plan: &JobPlan) {
        let skipped: usize = plan.exposures.iter().map(|e| e.found.skipped.len()).sum();
        let how = match plan.coordinator {
            Some(rank) => format!(
                "{} groups over {} ranks, rank {rank} handing out the frames",
                plan.groups, plan.ranks
            ),
            None => format!("1 group of {} rank(s)", plan.ranks),
        };
        log::info!(
            "{} exposure(s): {} frame(s) to extract, {skipped} skipped (output exists and is verified; --overwrite redoes them); {how}",
            plan.exposures.len(),
            plan.frames
        );
        for exposure in &plan.exposures {
            let expid = expid_text(exposure.dirs.expid);
            if let Some(why) = &exposure.problem {
                log::error!("exposure {expid}: no frame can be made: {why}");
            }
            for (camera, why) in &exposure.found.redone {
                log::info!(
                    "exposure {expid}: frame {camera} exists but {why}: extracting it again"
                );
            }
            for camera in &exposure.found.missing_preproc {
                log::error!(
                    "exposure {expid}: camera {camera} has a PSF but no preproc file: no frame for it"
                );
            }
        }
    }

    fn frame_done(&mut self, group: usize, index: usize, total: usize, outcome: &FrameOutcome) {
        let number = index + 1;
        let output = outcome.output.display();
        match &outcome.status {
            Ok(t) => {
                log::info!(
                    "group {group}: frame {number}/{total} {} {} at {:.2} s (read {:.2} s, extract {:.2} s, write {:.2} s) -> {output}",
                    outcome.camera,
                    if t.flags.is_flagged() { "written FLAGGED" } else { "written" },
                    outcome.finished_at_s,
                    t.read_s,
                    t.extract_s,
                    t.write_s
                );
                if let Some(detail) = flag_detail(&t.flags) {
                    if t.flags.is_flagged() {
                        log::error!("{output}: {detail}");
                    } else {
                        log::warn!("{output}: {detail}");
                    }
                }
            }
            Err(e) => log::error!(
                "group {group}: frame {number}/{total} {} FAILED ({output}): {e}",
                outcome.camera
            ),
        }
        self.frames_seen += 1;
        if self.kill_after.is_some_and(|n| self.frames_seen >= n) {
            log::warn!("DESI_EXTRACT_TEST_KILL_AFTER_FRAMES: killing this process");
            // SAFETY: raise() sends a signal to this process; SIGKILL cannot be handled.
            unsafe { libc::raise(libc::SIGKILL) };
        }
    }
}

/// The job's summary: per exposure, then the totals and what bounds the job.
fn log_summary(summary: &JobSummary) {
    for (dirs, e) in &summary.exposures {
        let failed = e.failed_cameras().len() + e.missing_preproc.len();
        let night = dirs.night.map_or(String::new(), |n| format!("night {n} "));
        log::info!(
            "{night}exposure {}: {} written, {} skipped, {failed} failed, {} written flagged",
            e.expid,
            e.written(),
            e.skipped.len(),
            e.flagged_cameras().len()
        );
        let mut failed: Vec<&str> = e.failed_cameras();
        failed.extend(e.missing_preproc.iter().map(String::as_str));
        if !failed.is_empty() {
            log::error!(
                "exposure {}: failed frame(s): {}",
                e.expid,
                failed.join(" ")
            );
        }
    }
    for (expid, why) in &summary.failed_exposures {
        log::error!("exposure {expid} FAILED: {why}");
    }
    let (read, extract, write) = summary.median_steps();
    let gpu = summary.gpu_busy_fraction().map_or(String::new(), |busy| {
        format!(
            "; GPU busy {:.0}% ({:.2} s of device stages over {} GPU group(s))",
            100.0 * busy,
            summary.device_busy_s,
            summary.gpu_groups
        )
    });
    log::info!(
        "job: {} exposure(s), {} frame(s) written, {} skipped, {} failed, {} written flagged in {:.2} s ({:.2} frames/s) over {} group(s); per-frame median read {read:.2} s, extract {extract:.2} s, write {write:.2} s{gpu}",
        summary.exposures.len(),
        summary.written(),
        summary.skipped(),
        summary.failed(),
        summary.flagged(),
        summary.wall_s,
        summary.frames_per_s(),
        summary.groups
    );
}
