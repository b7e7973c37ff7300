//! Backends that solve batches of patches. Nothing above this module knows which one runs.

pub mod cpu;

use crate::patch::{ExtractionParams, PatchPlan};
use crate::psf::SpotTable;
use desi_device::patch::CcdView;

pub use cpu::CpuBackend;

/// Everything a backend needs to solve the patches of one bundle.
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
#[derive(Clone, Debug, PartialEq)]
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
}

/// A way of solving the patches of a bundle.
pub trait Backend: Sync {
    /// Short name for logs ("cpu", "gpu").
    fn name(&self) -> &'static str;
    /// Solves every patch of `inputs.plans`, returning results in the same order.
    fn solve_bundle(&self, inputs: &BundleInputs) -> Result<Vec<PatchResult>, SolveError>;
}
