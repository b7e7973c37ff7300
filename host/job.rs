//! One frame extraction request, validated once: the PSF, the preproc image, the output grid,
//! the decomposition parameters, whether a model image is wanted, what to do with patches a
//! backend could not solve or that no backend could solve, and which pixels the solves use.
//! Every backend and every driver above them takes a [`FrameJob`].

use crate::extract::{ExtractError, PixelLimits};
use crate::io::PreprocImage;
use crate::patch::{ExtractionParams, PaddedGrid, WavelengthGrid};
use crate::psf::GaussHermitePsf;

/// What happens to a patch that a backend other than the CPU could not solve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FallbackPolicy {
    /// Solve it again on the CPU path and report it ([`crate::solve::PatchIssue::CpuFallback`]).
    #[default]
    CpuAndReport,
    /// Fail the frame ([`ExtractError::PatchFailed`]): for checks that must see every patch
    /// solved where they asked (`selftest --gpu`) and for productions that prefer a clear failure.
    Fail,
}

/// What happens to a frame with a patch that could not be solved at all (after the
/// [`FallbackPolicy`]); docs/algorithm.md §5.1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailedPatchPolicy {
    /// Keep the frame: the patch's bins get IVAR 0 and MASK BAD2DFIT, and the patch is
    /// reported ([`crate::solve::PatchIssue::Failed`]); callers report the frame as flagged
    /// (`extract` exits 2 after writing it). A pipeline keeps the other ~99.9% of the frame,
    /// every lost bin says why, and the run is still visibly not clean.
    #[default]
    Flag,
    /// Fail the frame ([`ExtractError::PatchFailed`]): no frame is written.
    Fail,
}

/// A validated frame extraction request. Construct it with [`FrameJob::new`].
#[derive(Clone, Copy, Debug)]
pub struct FrameJob<'a> {
    /// The PSF.
    pub psf: &'a GaussHermitePsf,
    /// The preproc image (same CCD shape as the PSF).
    pub image: &'a PreprocImage,
    /// The output wavelength grid (inside the PSF domain).
    pub grid: &'a WavelengthGrid,
    /// Decomposition parameters; `specmin .. specmin + nspec` are the spectra to extract.
    pub params: &'a ExtractionParams,
    /// Whether the model image is wanted.
    pub want_model: bool,
    /// What to do with patches the backend could not solve.
    pub fallback: FallbackPolicy,
    /// What to do with the frame when a patch could not be solved at all.
    pub failed_patches: FailedPatchPolicy,
    /// The pixels the solves use (docs/algorithm.md §1.2): by default
    /// [`PixelLimits::for_image`].
    pub pixel_limits: PixelLimits,
}

impl<'a> FrameJob<'a> {
    /// Checks the parameters against the PSF, the image (shape, CAMERA, FIBERMAP rows) against
    /// the PSF, the grid against the PSF's wavelength domain, and that the requested fibers'
    /// traces stay on the CCD rows over the grid.
    ///
    /// # Errors
    /// [`ExtractError::Params`] for invalid parameters, [`ExtractError::Input`] naming the file
    /// at fault for an image/PSF mismatch or a grid outside the PSF domain.
    pub fn new(
        psf: &'a GaussHermitePsf,
        image: &'a PreprocImage,
        grid: &'a WavelengthGrid,
        params: &'a ExtractionParams,
    ) -> Result<Self, ExtractError> {
        params.validate(psf.hsizey, psf.nspec)?;
        crate::extract::check_compatible(psf, image, grid)?;
        crate::extract::check_traces_on_ccd(psf, grid, params.specmin, params.nspec)?;
        Ok(Self {
            psf,
            image,
            grid,
            params,
            want_model: false,
            fallback: FallbackPolicy::default(),
            failed_patches: FailedPatchPolicy::default(),
            pixel_limits: PixelLimits::for_image(image),
        })
    }

    /// The same job with the model image requested or not.
    pub fn with_model(self, want_model: bool) -> Self {
        Self { want_model, ..self }
    }

    /// The same job with another fallback policy.
    pub fn with_fallback(self, fallback: FallbackPolicy) -> Self {
        Self { fallback, ..self }
    }

    /// The same job with another policy for patches that could not be solved.
    pub fn with_failed_patches(self, failed_patches: FailedPatchPolicy) -> Self {
        Self {
            failed_patches,
            ..self
        }
    }

    /// The same job with other pixel limits (e.g. [`PixelLimits::UNLIMITED`]).
    pub fn with_pixel_limits(self, pixel_limits: PixelLimits) -> Self {
        Self {
            pixel_limits,
            ..self
        }
    }

    /// Resolution half-width (the PSF's HSIZEY).
    pub fn ndiag(&self) -> usize {
        self.psf.hsizey
    }

    /// The padded grid on which spots and unknowns live.
    pub fn padded_grid(&self) -> PaddedGrid {
        PaddedGrid::new(self.grid.clone(), self.params.pad(), self.params.nwavestep)
    }

    /// First spectrum of every bundle of the job.
    pub fn bundle_starts(&self) -> Vec<usize> {
        self.params.bundle_starts()
    }
}
