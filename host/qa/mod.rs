//! Quality assessment of an extracted frame against the simulated input spectra (the
//! `desi-extract qa` command).
//!
//! - [`pulls`]: `(flux - R·truth / dwave) · sqrt(ivar)` over every bin with `ivar > 0`, and
//!   their [`PullStats`].
//! - [`render`] / [`write_png`]: a PNG picture with the extracted and expected flux of a few
//!   fibers and the pull histogram against the unit Gaussian.

mod plot;
mod pulls;

pub use plot::{default_fibers, render, write_png, Canvas, HEIGHT, MAX_FIBERS, WIDTH};
pub use pulls::{
    convolve_truth, model_flux, pulls, pulls_with_model, resolved_truth, PullStats, HIST_BIN,
    HIST_RANGE,
};

use crate::io::IoError;
use std::path::PathBuf;

/// Every failure of the QA computations and of writing the picture.
#[derive(Debug, thiserror::Error)]
pub enum QaError {
    /// The truth wavelength grid neither equals the frame's nor contains it as a contiguous
    /// sub-range.
    #[error("frame and truth wavelength grids differ: {detail}")]
    WaveGrid {
        /// Where the grids disagree.
        detail: String,
    },
    /// The truth file does not hold the spectra of the frame.
    #[error("truth spectra do not cover the frame: {detail}")]
    Spectra {
        /// Which spectra are missing.
        detail: String,
    },
    /// An array does not have the size its shape says.
    #[error("inconsistent {what}: {detail}")]
    Shape {
        /// `frame` or `truth`.
        what: &'static str,
        /// Expected and found sizes.
        detail: String,
    },
    /// Values that cannot enter a pull (NaN flux, negative ivar, ...).
    #[error("bad frame data: {detail}")]
    BadData {
        /// What is wrong and where (spectrum, bin).
        detail: String,
    },
    /// Every bin has `ivar == 0`.
    #[error("no bin of the frame has ivar > 0: nothing to compare")]
    NoValidBins,
    /// A requested fiber is not in the frame.
    #[error("fiber {fiber} is not in the frame (it holds spectra {specmin} to {last})", last = (.specmin + .nspec).saturating_sub(1))]
    Fiber {
        /// The requested spectrum number.
        fiber: usize,
        /// First spectrum of the frame.
        specmin: usize,
        /// Number of spectra of the frame.
        nspec: usize,
    },
    /// The number of fibers to draw is not in `1..=MAX_FIBERS`.
    #[error("{n} fibers requested: the picture shows 1 to {max}")]
    FiberCount {
        /// Requested number.
        n: usize,
        /// The most the layout holds.
        max: usize,
    },
    /// The bundled font could not be parsed (a build problem, not an input problem).
    #[error("bundled font assets/DejaVuSans.ttf: {0}")]
    Font(String),
    /// plotters failed to draw the picture.
    #[error("cannot draw the QA picture: {0}")]
    Draw(String),
    /// PNG encoding failed.
    #[error("{}: cannot encode PNG: {source}", .path.display())]
    Png {
        /// The output file.
        path: PathBuf,
        /// The encoder's error.
        source: png::EncodingError,
    },
    /// The output file cannot be written: no file name, a missing directory (input errors),
    /// or a failed file-system operation.
    #[error(transparent)]
    Output(#[from] IoError),
}

impl QaError {
    /// True when the error comes from the user's input (files, flags) rather than from the
    /// program or the system: the CLI exits with 1 for these.
    pub fn is_input(&self) -> bool {
        match self {
            QaError::Output(e) => matches!(e, IoError::InvalidInput { .. }),
            QaError::Font(_) | QaError::Draw(_) | QaError::Png { .. } => false,
            QaError::WaveGrid { .. }
            | QaError::Spectra { .. }
            | QaError::Shape { .. }
            | QaError::BadData { .. }
            | QaError::NoValidBins
            | QaError::Fiber { .. }
            | QaError::FiberCount { .. } => true,
        }
    }
}
