//! Backends that solve patches ([`Backend`], [`FrameSolver`]) and what they exchange with the
//! frame pipeline above them. Nothing above this module knows which one runs.

pub mod cpu;
pub mod outliers;

use crate::extract::CcdData;
use crate::job::FrameJob;
use crate::patch::{ExtractionParams, PatchPlan};
use crate::psf::{PsfError, SpotTable};
use crate::trace::Trace;
use desi_device::patch::CcdView;
use std::sync::Arc;
use std::time::Duration;

pub use cpu::CpuBackend;

/// Everything the CPU patch solve ([`cpu::solve_patch`]) reads for the patches of one bundle.
#[derive(Clone, Copy, Debug)]
pub struct BundleInputs<'a> {
    /// Spots of the bundle's fibers on the fullwave grid (index k = fullwave index).
    pub spots: &'a SpotTable,
    /// The bundle's patches.
    pub plans: &'a [PatchPlan],
    /// CCD image and weights.
    pub ccd: CcdView<'a>,
    /// Extraction parameters.
    pub params: &'a ExtractionParams,
    /// Resolution half-width (HSIZEY).
    pub ndiag: usize,
}

/// Something unusual that happened to a patch (reported, never silent).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PatchIssue {
    /// The factorization failed and succeeded after adding a ridge `regularize`.
    Regularized {
        /// The ridge α that made it work.
        regularize: f64,
        /// Why the first attempt failed.
        reason: String,
    },
    /// The patch could not be solved; its outputs are zero with ivar 0.
    Failed {
        /// Why.
        reason: String,
    },
    /// The patch's kept rows leave the CCD; its outputs are zero with ivar 0.
    OffCcd,
    /// The GPU could not solve the patch; the CPU path solved it instead.
    CpuFallback {
        /// Why the GPU failed (its status code).
        reason: String,
    },
}

/// Outputs of one patch for its core spectra and kept bins, per wavelength bin (not per
/// Angstrom). Arrays are `(nspp, keep)` and `(nspp, 2·ndiag+1, keep)`.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchResult {
    /// Reconvolved flux R·f (photons per bin).
    pub flux: Vec<f64>,
    /// Inverse variance of `flux`.
    pub ivar: Vec<f64>,
    /// Resolution diagonals.
    pub rdiags: Vec<f64>,
    /// PSF-weighted χ² per pixel.
    pub chi2pix: Vec<f64>,
    /// Fraction of PSF weight on masked pixels.
    pub pixmask_fraction: Vec<f64>,
    /// What went wrong, if anything.
    pub issue: Option<PatchIssue>,
    /// The patch's outlier candidates, when the job rejects outliers
    /// ([`crate::job::FrameJob::reject`]) and the patch was solved; `None` otherwise.
    pub outliers: Option<PatchOutliers>,
}

/// What the outlier rejection (docs/algorithm.md §4.11) needs of a solved patch, computed by
/// the backend that solved it: the tested pixels (inside the stamp of a core unknown) whose
/// χ²_pix term `(p − m)² / (1/w + (psferr·m)²)` exceeds `nsigma²`, under the mask the patch was
/// solved with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatchOutliers {
    /// Window-local indices `row · width + col` of the outliers, ascending.
    pub hits: Vec<u32>,
    /// Tested pixels with weight > 0 (the base of the rejection cap).
    pub weighted: usize,
}

impl PatchResult {
    /// All-zero outputs (ivar 0) for `nspp × keep` core bins.
    pub fn zeros(nspp: usize, keep: usize, ndiag: usize, issue: PatchIssue) -> Self {
        Self {
            flux: vec![0.0; nspp * keep],
            ivar: vec![0.0; nspp * keep],
            rdiags: vec![0.0; nspp * (2 * ndiag + 1) * keep],
            chi2pix: vec![0.0; nspp * keep],
            pixmask_fraction: vec![0.0; nspp * keep],
            issue: Some(issue),
            outliers: None,
        }
    }
}

/// Errors of a backend as a whole (per-patch problems are [`PatchIssue`]s).
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// The backend cannot run here.
    #[error("{backend} backend unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// The backend failed while it worked (a device error, a broken invariant).
    #[error("{backend} backend failed: {reason}")]
    Failed {
        /// Backend name.
        backend: &'static str,
        /// What failed.
        reason: String,
    },
    /// The PSF could not be evaluated.
    #[error(transparent)]
    Psf(#[from] PsfError),
    /// The input that only the backend reads is bad (pixels in device memory that are not
    /// valid, or not where they are said to be): an input error.
    #[error("{backend} backend: bad input: {reason}")]
    Input {
        /// Backend name.
        backend: &'static str,
        /// What is wrong, naming the input.
        reason: String,
    },
}

/// A way of solving patches. Nothing above this module knows which one runs: the frame
/// pipeline ([`crate::extract`]) computes the stamp corners, plans the patches, stitches the
/// results, applies the [`crate::job::FallbackPolicy`], builds the model image and finalizes
/// the frame for every backend alike.
pub trait Backend: Sync {
    /// Short name for logs ("cpu", "gpu").
    fn name(&self) -> &'static str;
    /// Whether a patch this backend could not solve is worth solving again on the CPU path
    /// (false for the CPU backend itself).
    fn can_fall_back(&self) -> bool;
    /// Starts one frame: the backend takes the job's image and PSF (a GPU uploads them and
    /// evaluates the spots of every fiber on the device).
    ///
    /// # Errors
    /// The backend cannot run (no device, out of memory) or the PSF cannot be evaluated.
    fn begin_frame<'a>(
        &'a self,
        job: &FrameJob<'a>,
        trace: &'a Trace,
    ) -> Result<Box<dyn FrameSolver + 'a>, SolveError>;
}

/// One frame on a backend: spots on request, then the patches in runs.
pub trait FrameSolver {
    /// The spots (stamps and corners) of fibers `ispec_min .. ispec_min + nspec` on the job's
    /// padded grid (`fullwave`), for the model image.
    ///
    /// # Errors
    /// Fibers outside the PSF, a spot that cannot be evaluated, or a device failure.
    fn spots(&self, ispec_min: usize, nspec: usize) -> Result<Arc<SpotTable>, SolveError>;

    /// Starts solving `plans` (in bundle order; every plan has a pixel window). `corners` holds
    /// the corner-only spot table of every bundle the plans come from, as the host computed
    /// them and planned with; a backend that evaluates spots itself must find the same corners.
    ///
    /// # Errors
    /// Spots that failed on the device, corners that differ from the host's, no memory.
    fn start(&mut self, plans: Vec<PatchPlan>, corners: &[&SpotTable]) -> Result<(), SolveError>;

    /// The next run of results in plan order: the index of the run's first plan and one result
    /// per plan; `None` once every plan's result has come back.
    ///
    /// # Errors
    /// A failure of the backend as a whole (per-patch problems are [`PatchIssue`]s).
    fn next_results(&mut self) -> Result<Option<(usize, Vec<PatchResult>)>, SolveError>;

    /// Time of the backend's own stages so far (e.g. GPU kernels), in order of first use.
    fn stage_times(&self) -> Vec<(&'static str, Duration)> {
        Vec::new()
    }

    /// Upper bound of the device memory this frame takes at most (its buffers and its batches
    /// in flight, as sized), for backends with device memory; `None` (the default) otherwise.
    fn device_peak_bytes(&self) -> Option<u64> {
        None
    }

    /// The whole CCD as this solver screened it, on the host, for the CPU fallback of a job
    /// whose pixels are in device memory ([`crate::job::FrameJob::device_pixels`]), where the
    /// pipeline has no host pixels to convert; `None` (the default) when the solver has no
    /// such copy to give.
    ///
    /// # Errors
    /// A device failure.
    fn host_ccd(&self) -> Result<Option<CcdData>, SolveError> {
        Ok(None)
    }

    /// The CCD the solver reads, when it holds one on the host (the CPU backend): the outlier
    /// rejection ([`crate::extract::RejectConfig`]) reads it instead of converting its own.
    fn ccd(&self) -> Option<&CcdData> {
        None
    }

    /// Outlier rejection (docs/algorithm.md §4.11): solves each of `plans` (each with a pixel
    /// window) again with the weights of the pixels of its mask (`masks[i]`: its bundle's
    /// rejected CCD pixels `row · ncol + col`, ascending; plans of one bundle share one) set
    /// to 0 in its window, and returns one result per plan, in order, with its
    /// [`PatchResult::outliers`] under that mask (a patch that cannot be solved comes back
    /// with [`PatchIssue::Failed`]).
    ///
    /// # Errors
    /// A backend that does not reject outliers (the default), `masks` not one per plan, or a
    /// failure of the backend as a whole.
    fn resolve(
        &mut self,
        plans: &[PatchPlan],
        masks: &[&[u64]],
    ) -> Result<Vec<PatchResult>, SolveError> {
        let _ = (plans, masks);
        Err(SolveError::Unavailable {
            backend: "this",
            reason: "the backend does not re-solve patches for the outlier rejection".into(),
        })
    }

    /// Outlier rejection: per `(plan, pixels)` (rejected CCD pixels of the plan's window,
    /// ascending), the count per core bin `(nspp, keep)` of the pixels that carry at least
    /// [`outliers::BIN_PIXEL_WEIGHT`] of the bin's PSF weight inside the window
    /// ([`desi_device::patch::reject::rejected_bin_count`]).
    ///
    /// # Errors
    /// As [`FrameSolver::resolve`].
    fn rejected_bin_counts(
        &mut self,
        patches: &[(PatchPlan, Vec<u64>)],
    ) -> Result<Vec<Vec<u16>>, SolveError> {
        let _ = patches;
        Err(SolveError::Unavailable {
            backend: "this",
            reason: "the backend does not count rejected pixels".into(),
        })
    }
}
