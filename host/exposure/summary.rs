//! What an exposure run reports: the plan before it starts, each frame's outcome as it is
//! written (to an [`ExposureObserver`], in frame order) and the summary at the end, with what
//! bounds the run (GPU busy fraction, per-frame read/extract/write times and when they ran)
//! and its memory (GPU per frame in flight, the device pool's peaks, host peak RSS); as a
//! machine-readable record through [`ExposureSummary::record`] (serde).

use super::roles::Layout;
use crate::gpu::PoolStats;
use crate::io::atomic::write_file_atomically;
use crate::io::IoError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Seconds spent on a written frame's steps, when they started (seconds since the start of the
/// run on the rank that ran them), its device use and its patch count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameTiming {
    /// Reading the PSF and the preproc image.
    pub read_s: f64,
    /// Extracting (the slowest rank's share when ranks share the frame).
    pub extract_s: f64,
    /// Assembling and writing the frame file.
    pub write_s: f64,
    /// When the read started.
    pub read_start_s: f64,
    /// When the extraction started.
    pub extract_start_s: f64,
    /// When the write started.
    pub write_start_s: f64,
    /// Sum of the frame's device stage times (CUDA events; 0 on the CPU).
    pub device_s: f64,
    /// Time the device spent on the frame's stages (their union: a stage of another frame
    /// running at the same time on another stream does not count twice within the frame).
    pub device_busy_s: f64,
    /// Upper bound of the frame's device memory (its buffers and batches in flight, as sized
    /// under the cap); `None` on the CPU.
    pub device_peak_bytes: Option<u64>,
    /// Patches solved.
    pub npatch: usize,
    /// What the written frame carries without data.
    pub flags: FrameFlags,
}

/// When a frame's read and extraction ran (seconds since the start of the run on the rank
/// that ran them) and what it used of the device; travels with the frame to its writer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameSteps {
    /// Start and end of the read.
    pub read: (f64, f64),
    /// Start and end of the extraction.
    pub extract: (f64, f64),
    /// Sum of the device stage times.
    pub device_stage_s: f64,
    /// The device stages as (start, end) on the same clock.
    pub device_intervals: Vec<(f64, f64)>,
    /// The backend's bound on the frame's device memory.
    pub device_peak_bytes: Option<u64>,
}

/// Total length of the union of `intervals` (start, end), in any order.
pub fn union_length(intervals: &[(f64, f64)]) -> f64 {
    let mut sorted: Vec<(f64, f64)> = intervals
        .iter()
        .copied()
        .filter(|(a, b)| b > a && a.is_finite() && b.is_finite())
        .collect();
    sorted.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (a, b) in sorted {
        current = match current {
            Some((s, e)) if a <= e => Some((s, e.max(b))),
            Some((s, e)) => {
                total += e - s;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    total + current.map_or(0.0, |(s, e)| e - s)
}

/// What a written frame carries without data (each such bin has IVAR 0 and a MASK bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameFlags {
    /// Patches that could not be solved (bins: MASK BAD2DFIT): the frame is flagged and
    /// counts as failed ([`ExposureSummary::any_failed`]).
    pub failed_patches: usize,
    /// Patches off the CCD (bins: MASK NODATA).
    pub off_ccd_patches: usize,
    /// Bins whose outputs were not finite (MASK BAD2DFIT).
    pub nonfinite_bins: usize,
    /// Bins with IVAR 0 for any reason (masked pixels included).
    pub zero_ivar_bins: usize,
    /// Input pixels with IVAR > 0 ignored as absurd.
    pub screened_pixels: usize,
}

impl FrameFlags {
    /// Whether the frame was written with failed patches.
    pub fn is_flagged(&self) -> bool {
        self.failed_patches > 0
    }
}

impl FrameOutcome {
    /// Whether the frame failed, or was written flagged (with failed patches).
    pub fn is_failed_or_flagged(&self) -> bool {
        self.status.as_ref().map_or(true, |t| t.flags.is_flagged())
    }
}

/// The outcome of one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameOutcome {
    /// Camera name.
    pub camera: String,
    /// The frame file.
    pub output: PathBuf,
    /// Its timing when written, else the error of the step that failed (naming the file).
    pub status: Result<FrameTiming, String>,
    /// When it was written or failed, in seconds since the start of the run.
    pub finished_at_s: f64,
    /// Its device stages as (start, end) in seconds since the start of the run on the rank
    /// that extracted it (empty on the CPU).
    pub device_intervals: Vec<(f64, f64)>,
}

/// What the run is about to do (reported by the writing rank before the first frame).
#[derive(Clone, Debug, PartialEq)]
pub struct ExposurePlan {
    /// The exposure id as file names write it.
    pub expid: String,
    /// Frames to extract.
    pub frames: usize,
    /// Frames skipped because they exist and are verified.
    pub skipped: usize,
    /// Frames that exist but are extracted again, with the reason (camera, why).
    pub redone: Vec<(String, String)>,
    /// Cameras with a PSF but no preproc file (no frame; the run fails).
    pub missing_preproc: Vec<String>,
    /// How the ranks share the work.
    pub layout: Layout,
    /// Frames the writing rank's process extracts at once (a single GPU process: one per GPU
    /// context; else 1).
    pub frames_in_flight: usize,
}

/// Hears what the writing rank reports while the run goes (the CLI prints it). Both methods
/// are called on the thread that called [`super::run_exposure`].
pub trait ExposureObserver {
    /// The plan, before any frame is extracted.
    fn planned(&mut self, _plan: &ExposurePlan) {}
    /// Frame `position` (0-based) of `total` is written or failed; frames are reported in
    /// frame order, each as soon as it and the frames before it are done.
    fn frame_done(&mut self, _position: usize, _total: usize, _outcome: &FrameOutcome) {}
}

/// An observer that hears nothing.
impl ExposureObserver for () {}

/// The result of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct ExposureSummary {
    /// The exposure id as file names write it.
    pub expid: String,
    /// Whether this rank is the one that wrote the frames and holds their outcomes.
    pub is_writer: bool,
    /// Every frame's outcome, in frame order (on the writing rank; empty on the others).
    pub outcomes: Vec<FrameOutcome>,
    /// Cameras skipped because their frame exists and is verified.
    pub skipped: Vec<String>,
    /// Cameras with a PSF but no preproc file (counted as failed).
    pub missing_preproc: Vec<String>,
    /// Seconds from the start of the run to the last frame written.
    pub wall_s: f64,
    /// Whether any frame failed or was written flagged (with failed patches), or a camera misses
    /// its preproc: the writing rank's verdict, the same on every rank.
    pub any_failed: bool,
    /// Frames extracted at the same time by one process (GPU contexts; 1 on the CPU).
    pub frames_in_flight: usize,
    /// This rank's GPU memory, when it extracted on a GPU.
    pub gpu_memory: Option<GpuMemoryReport>,
    /// This process's peak resident set size (getrusage), bytes.
    pub host_peak_rss_bytes: u64,
}

/// A rank's GPU memory over the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GpuMemoryReport {
    /// The caller's cap for the process (`--gpu-memory-limit`, `DESI_GPU_MEMORY_LIMIT`), each
    /// frame in flight getting an equal part.
    pub limit_bytes: Option<u64>,
    /// The device memory pool's counters over the run (peaks since the contexts opened;
    /// `used`/`reserved` at the end, before release).
    pub pool: PoolStats,
    /// Bytes the pool still held after the run released its memory (0 when everything was
    /// handed back to the driver).
    pub held_after_release: u64,
}

/// The machine-readable record of a run ([`ExposureSummary::record`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExposureRecord<'a> {
    /// The exposure id.
    pub expid: &'a str,
    /// Seconds from the start of the run to the last frame written.
    pub wall_s: f64,
    /// Frames written, skipped, failed (missing preproc included), written flagged.
    pub written: usize,
    /// Frames skipped (verified output).
    pub skipped: usize,
    /// Frames failed.
    pub failed: usize,
    /// Frames written flagged.
    pub flagged: usize,
    /// Frames per second of wall time.
    pub frames_per_s: f64,
    /// Frames extracted at the same time by one process.
    pub frames_in_flight: usize,
    /// Union of the device stages of every frame over the wall time (`null` on the CPU).
    pub gpu_busy_fraction: Option<f64>,
    /// Seconds of that union.
    pub device_busy_s: f64,
    /// Sum of every frame's device stage times.
    pub device_stage_s: f64,
    /// Medians over the written frames of read, extract and write seconds.
    pub median_read_s: f64,
    /// See `median_read_s`.
    pub median_extract_s: f64,
    /// See `median_read_s`.
    pub median_write_s: f64,
    /// Largest bound of one frame's device memory (one frame in flight).
    pub gpu_peak_bytes_per_frame: Option<u64>,
    /// GPU memory of the writing rank.
    pub gpu_memory: Option<GpuMemoryReport>,
    /// Peak resident set size of the writing rank, bytes.
    pub host_peak_rss_bytes: u64,
    /// One record per frame, in frame order.
    pub frames: Vec<FrameRecord<'a>>,
}

/// One frame in an [`ExposureRecord`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FrameRecord<'a> {
    /// Camera.
    pub camera: &'a str,
    /// The frame file.
    pub output: String,
    /// `ok`, `flagged`, `failed`, `skipped` or `missing`.
    pub status: &'static str,
    /// The error of a failed frame.
    pub error: Option<&'a str>,
    /// When it was written or failed (seconds since the start of the run).
    pub finished_at_s: Option<f64>,
    /// Its times (written frames).
    pub timing: Option<FrameTiming>,
}

/// Peak resident set size of this process in bytes (getrusage's `ru_maxrss`, KiB on Linux);
/// 0 when it cannot be read.
pub fn host_peak_rss_bytes() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `struct rusage` through the valid pointer; zeroed is a valid
    // value of the plain-integer struct should it not.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: initialized (zeroed, then written by getrusage).
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}

impl ExposureSummary {
    /// Frames written (flagged ones included).
    pub fn written(&self) -> usize {
        self.outcomes.iter().filter(|o| o.status.is_ok()).count()
    }

    /// The cameras of the frames written flagged (with failed patches), in frame order.
    pub fn flagged_cameras(&self) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|o| o.status.as_ref().is_ok_and(|t| t.flags.is_flagged()))
            .map(|o| o.camera.as_str())
            .collect()
    }

    /// The cameras of the frames that failed, in frame order.
    pub fn failed_cameras(&self) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|o| o.status.is_err())
            .map(|o| o.camera.as_str())
            .collect()
    }

    /// Frames written per second of wall time.
    pub fn frames_per_s(&self) -> f64 {
        self.written() as f64 / self.wall_s.max(1e-9)
    }

    fn timings(&self) -> impl Iterator<Item = &FrameTiming> {
        self.outcomes.iter().filter_map(|o| o.status.as_ref().ok())
    }

    /// Sum of every written frame's device stage times, seconds.
    pub fn device_stage_s(&self) -> f64 {
        // A fold from +0: an empty f64 sum is -0.
        self.timings().fold(0.0, |total, t| total + t.device_s)
    }

    /// Seconds during which the device ran a stage of any frame (the union of every frame's
    /// stages; exact for one process, whose frames share one clock).
    pub fn device_busy_s(&self) -> f64 {
        let all: Vec<(f64, f64)> = self
            .outcomes
            .iter()
            .flat_map(|o| o.device_intervals.iter().copied())
            .collect();
        union_length(&all)
    }

    /// [`Self::device_busy_s`] over the wall time: how much of the run the GPU worked (`None`
    /// on the CPU). Under 1 the GPU waited for reading, writing or the host.
    pub fn gpu_busy_fraction(&self) -> Option<f64> {
        self.gpu_memory
            .is_some()
            .then(|| self.device_busy_s() / self.wall_s.max(1e-9))
    }

    /// Medians over the written frames of (read, extract, write) seconds.
    pub fn median_steps(&self) -> (f64, f64, f64) {
        median_steps(&self.timings().collect::<Vec<_>>())
    }

    /// The largest bound of one frame's device memory.
    pub fn gpu_peak_bytes_per_frame(&self) -> Option<u64> {
        self.timings().filter_map(|t| t.device_peak_bytes).max()
    }

    /// Writes [`Self::record`] as JSON to `path`, atomically (a temporary beside it, renamed
    /// when complete).
    ///
    /// # Errors
    /// The file cannot be written (an [`IoError`] naming it).
    pub fn write_json(&self, path: &std::path::Path) -> Result<(), IoError> {
        let record = self.record();
        write_file_atomically(path, |out| {
            serde_json::to_writer_pretty(out, &record).map_err(|e| IoError::Io {
                path: path.to_path_buf(),
                op: "write the exposure summary JSON",
                source: e.into(),
            })
        })
    }

    /// The run as a serializable record (per frame: status, times, device use; the GPU busy
    /// fraction, memory and host RSS).
    pub fn record(&self) -> ExposureRecord<'_> {
        let (median_read_s, median_extract_s, median_write_s) = self.median_steps();
        let mut frames: Vec<FrameRecord> = self
            .outcomes
            .iter()
            .map(|o| FrameRecord {
                camera: &o.camera,
                output: o.output.display().to_string(),
                status: match &o.status {
                    Ok(t) if t.flags.is_flagged() => "flagged",
                    Ok(_) => "ok",
                    Err(_) => "failed",
                },
                error: o.status.as_ref().err().map(String::as_str),
                finished_at_s: Some(o.finished_at_s),
                timing: o.status.as_ref().ok().copied(),
            })
            .collect();
        for (list, status) in [
            (&self.skipped, "skipped"),
            (&self.missing_preproc, "missing"),
        ] {
            frames.extend(list.iter().map(|camera| FrameRecord {
                camera,
                output: String::new(),
                status,
                error: None,
                finished_at_s: None,
                timing: None,
            }));
        }
        ExposureRecord {
            expid: &self.expid,
            wall_s: self.wall_s,
            written: self.written(),
            skipped: self.skipped.len(),
            failed: self.failed_cameras().len() + self.missing_preproc.len(),
            flagged: self.flagged_cameras().len(),
            frames_per_s: self.frames_per_s(),
            frames_in_flight: self.frames_in_flight,
            gpu_busy_fraction: self.gpu_busy_fraction(),
            device_busy_s: self.device_busy_s(),
            device_stage_s: self.device_stage_s(),
            median_read_s,
            median_extract_s,
            median_write_s,
            gpu_peak_bytes_per_frame: self.gpu_peak_bytes_per_frame(),
            gpu_memory: self.gpu_memory,
            host_peak_rss_bytes: self.host_peak_rss_bytes,
            frames,
        }
    }
}

/// Medians of `timings`' (read, extract, write) seconds (0 for none).
pub(crate) fn median_steps(timings: &[&FrameTiming]) -> (f64, f64, f64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(camera: &str, ok: bool) -> FrameOutcome {
        FrameOutcome {
            camera: camera.into(),
            output: PathBuf::from(format!("frame-{camera}-00000007.fits")),
            status: if ok {
                Ok(FrameTiming::default())
            } else {
                Err("preproc-b1-00000007.fits: truncated".into())
            },
            finished_at_s: 1.0,
            device_intervals: Vec::new(),
        }
    }

    #[test]
    fn counts_written_and_failed_frames() {
        let summary = ExposureSummary {
            expid: "00000007".into(),
            is_writer: true,
            outcomes: vec![
                outcome("b0", true),
                outcome("b1", false),
                outcome("r0", true),
            ],
            skipped: vec!["z0".into()],
            missing_preproc: Vec::new(),
            wall_s: 4.0,
            any_failed: true,
            frames_in_flight: 1,
            gpu_memory: None,
            host_peak_rss_bytes: 0,
        };
        assert_eq!(summary.written(), 2);
        assert_eq!(summary.failed_cameras(), ["b1"]);
        assert_eq!(summary.frames_per_s(), 0.5);
        let empty = ExposureSummary {
            outcomes: Vec::new(),
            wall_s: 0.0,
            ..summary
        };
        assert_eq!((empty.written(), empty.frames_per_s()), (0, 0.0));
    }

    #[test]
    fn the_union_of_intervals_counts_overlaps_once() {
        assert_eq!(union_length(&[]), 0.0);
        assert_eq!(union_length(&[(1.0, 2.0)]), 1.0);
        // Nested, overlapping, touching, disjoint, unsorted, empty and reversed ones.
        let intervals = [
            (5.0, 6.0),
            (0.0, 2.0),
            (0.5, 1.0),
            (1.5, 3.0),
            (3.0, 3.5),
            (7.0, 7.0),
            (9.0, 8.0),
            (f64::NAN, 10.0),
        ];
        assert_eq!(union_length(&intervals), 3.5 + 1.0);
    }

    fn timing(read_s: f64, extract_s: f64, write_s: f64, peak: u64) -> FrameTiming {
        FrameTiming {
            read_s,
            extract_s,
            write_s,
            device_s: 1.0,
            device_peak_bytes: Some(peak),
            ..FrameTiming::default()
        }
    }

    #[test]
    fn the_record_reports_what_bounds_the_run() {
        let mut frames = vec![
            outcome("b0", true),
            outcome("r0", true),
            outcome("z0", false),
        ];
        frames[0].status = Ok(timing(0.2, 1.0, 0.5, 4 << 30));
        frames[1].status = Ok(timing(0.4, 3.0, 0.7, 6 << 30));
        // Two frames in flight: their device stages overlap over [1, 2].
        frames[0].device_intervals = vec![(0.5, 2.0)];
        frames[1].device_intervals = vec![(1.0, 3.0), (3.5, 4.0)];
        let summary = ExposureSummary {
            expid: "00000007".into(),
            is_writer: true,
            outcomes: frames,
            skipped: vec!["b1".into()],
            missing_preproc: vec!["r1".into()],
            wall_s: 5.0,
            any_failed: true,
            frames_in_flight: 2,
            gpu_memory: Some(GpuMemoryReport {
                limit_bytes: Some(20 << 30),
                pool: PoolStats {
                    used_high: 9 << 30,
                    ..PoolStats::default()
                },
                held_after_release: 0,
            }),
            host_peak_rss_bytes: 3 << 30,
        };
        assert_eq!(summary.device_busy_s(), 3.0);
        assert_eq!(summary.gpu_busy_fraction(), Some(0.6));
        assert_eq!(summary.device_stage_s(), 2.0);
        assert_eq!(summary.median_steps(), (0.30000000000000004, 2.0, 0.6));
        assert_eq!(summary.gpu_peak_bytes_per_frame(), Some(6 << 30));
        let json = serde_json::to_value(summary.record()).unwrap();
        assert_eq!(json["gpu_busy_fraction"], 0.6);
        assert_eq!(json["written"], 2);
        assert_eq!(json["failed"], 2);
        assert_eq!(json["frames_in_flight"], 2);
        assert_eq!(json["gpu_memory"]["limit_bytes"], 20u64 << 30);
        assert_eq!(json["gpu_memory"]["pool"]["used_high"], 9u64 << 30);
        assert_eq!(json["host_peak_rss_bytes"], 3u64 << 30);
        let records = json["frames"].as_array().unwrap();
        let status: Vec<&str> = records
            .iter()
            .map(|f| f["status"].as_str().unwrap())
            .collect();
        assert_eq!(status, ["ok", "ok", "failed", "skipped", "missing"]);
        assert_eq!(records[1]["timing"]["extract_s"], 3.0);
        assert_eq!(records[1]["timing"]["device_peak_bytes"], 6u64 << 30);
        assert_eq!(records[2]["error"], "preproc-b1-00000007.fits: truncated");
        // On the CPU there is no GPU fraction.
        let cpu = ExposureSummary {
            gpu_memory: None,
            ..summary
        };
        assert_eq!(cpu.gpu_busy_fraction(), None);
        assert!(serde_json::to_value(cpu.record()).unwrap()["gpu_busy_fraction"].is_null());
    }

    #[test]
    fn the_host_peak_rss_is_read() {
        // The peak only grows: touch more than it was, and it must grow to at least that.
        let before = host_peak_rss_bytes();
        assert!(before > 1 << 20, "{before}");
        let len = before as usize + (64 << 20);
        let block = vec![1u8; len];
        assert!(block.iter().step_by(4096).all(|&b| b == 1));
        let after = host_peak_rss_bytes();
        assert!(after >= len as u64, "{before} -> {after}, touched {len}");
    }
}
