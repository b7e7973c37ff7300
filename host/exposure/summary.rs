//! What an exposure run reports: the plan before it starts, each frame's outcome as it is
//! written (to an [`ExposureObserver`], in frame order) and the summary at the end.

use super::roles::Layout;
use std::path::PathBuf;

/// Seconds spent on a written frame's steps, and its patch count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameTiming {
    /// Reading the PSF and the preproc image.
    pub read_s: f64,
    /// Extracting (the slowest rank's share when ranks share the frame).
    pub extract_s: f64,
    /// Assembling and writing the frame file.
    pub write_s: f64,
    /// Patches solved.
    pub npatch: usize,
    /// What the written frame carries without data.
    pub flags: FrameFlags,
}

/// What a written frame carries without data (each such bin has IVAR 0 and a MASK bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq)]
pub struct FrameOutcome {
    /// Camera name.
    pub camera: String,
    /// The frame file.
    pub output: PathBuf,
    /// Its timing when written, else the error of the step that failed (naming the file).
    pub status: Result<FrameTiming, String>,
    /// When it was written or failed, in seconds since the start of the run.
    pub finished_at_s: f64,
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
}
