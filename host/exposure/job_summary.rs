//! What a job over many exposures reports ([`super::night`]): the outcomes put back into
//! their exposures (an [`ExposureSummary`] each), the job's totals (written, skipped, failed,
//! flagged, frames/s, the GPUs' busy fraction, per-frame medians) and its machine-readable
//! record, which holds each exposure's [`ExposureRecord`].

use super::coordinator::Gathered;
use super::jobs::{expid_text, ExposureDirs};
use super::night::JobPlan;
use super::summary::{
    host_peak_rss_bytes, union_length, ExposureRecord, ExposureSummary, FrameOutcome, FrameTiming,
};
use crate::io::atomic::write_file_atomically;
use crate::io::IoError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

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
        super::summary::median_steps(&timings)
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

/// Puts the outcomes (job frame index, group key, outcome) back into the plan's exposures.
pub(crate) fn summarize(
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
                host_peak_rss_bytes: host_peak_rss_bytes(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposure::jobs::{Discovery, FrameFiles};
    use crate::exposure::night::PlannedExposure;
    use std::path::Path;

    fn written(camera: &str, expid: u64, intervals: Vec<(f64, f64)>) -> FrameOutcome {
        FrameOutcome {
            camera: camera.into(),
            output: format!("/out/frame-{camera}-{expid:08}.fits").into(),
            status: Ok(FrameTiming {
                read_s: 1.0,
                extract_s: 2.0,
                write_s: 0.5,
                ..FrameTiming::default()
            }),
            finished_at_s: 3.0,
            device_intervals: intervals,
        }
    }

    #[test]
    fn outcomes_go_back_to_their_exposures_with_the_jobs_totals() {
        let dirs = |expid| ExposureDirs::flat(Path::new("/in"), Path::new("/out"), expid);
        let found = |cameras: &[&str], skipped: &[&str]| Discovery {
            frames: cameras
                .iter()
                .map(|c| FrameFiles::new(c, Path::new("/in"), Path::new("/out"), 1))
                .collect(),
            skipped: skipped.iter().map(|c| c.to_string()).collect(),
            ..Discovery::default()
        };
        let plan = JobPlan {
            exposures: vec![
                PlannedExposure {
                    dirs: dirs(1),
                    found: found(&["b0", "r0"], &["z0"]),
                    problem: None,
                },
                PlannedExposure {
                    dirs: dirs(2),
                    found: found(&["b0"], &[]),
                    problem: None,
                },
                PlannedExposure {
                    dirs: dirs(3),
                    found: Discovery::default(),
                    problem: Some("no preproc-*-00000003.fits in /in".into()),
                },
            ],
            frames: 3,
            groups: 2,
            ranks: 3,
            coordinator: Some(0),
        };
        // Frames 0 and 2 from group (writer rank) 1, frame 1 from rank 2, out of order; device
        // stages overlapping within group 1 count once.
        let outcomes = vec![
            (2, 1, written("b0", 2, vec![(0.0, 2.0)])),
            (1, 2, written("r0", 1, vec![(0.0, 1.0)])),
            (0, 1, written("b0", 1, vec![(1.0, 3.0)])),
        ];
        let summary = summarize(plan.clone(), &[0, 0, 1], (outcomes, 3), Instant::now());
        assert_eq!(summary.exposures.len(), 3);
        let cameras: Vec<&str> = summary.exposures[0]
            .1
            .outcomes
            .iter()
            .map(|o| o.camera.as_str())
            .collect();
        assert_eq!(cameras, ["b0", "r0"]);
        assert_eq!(summary.exposures[0].1.skipped, ["z0"]);
        assert_eq!(summary.exposures[0].1.frames_in_flight, 3);
        assert_eq!(
            (summary.written(), summary.skipped(), summary.failed()),
            (3, 1, 0)
        );
        assert_eq!(summary.failed_exposures[0].0, "00000003");
        assert!(
            summary.any_failed,
            "an exposure without preproc fails the job"
        );
        assert_eq!((summary.gpu_groups, summary.device_busy_s), (2, 3.0 + 1.0));
        assert_eq!(summary.median_steps(), (1.0, 2.0, 0.5));
        let busy = summary.gpu_busy_fraction().unwrap();
        assert!((busy - 4.0 / (2.0 * summary.wall_s)).abs() < 1e-9 * busy.max(1.0));
        let json = serde_json::to_value(summary.record()).unwrap();
        assert_eq!(json["written"], 3);
        assert_eq!(json["failed_exposures"][0]["expid"], "00000003");
        assert_eq!(json["exposures"][1]["expid"], "00000002");
        assert_eq!(json["exposures"][1]["night"], serde_json::Value::Null);
        assert_eq!(json["exposures"][0]["frames"][2]["status"], "skipped");

        // A frame that never came back is a failure, never a silent gap.
        let lost = summarize(plan, &[0, 0, 1], (Vec::new(), 1), Instant::now());
        assert_eq!(lost.failed(), 3);
        let error = lost.exposures[1].1.outcomes[0].status.clone().unwrap_err();
        assert!(error.contains("never extracted"), "{error}");
        assert_eq!(lost.gpu_busy_fraction(), None);
    }
}
