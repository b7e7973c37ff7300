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
    /// Where the pixels are when they are already in GPU memory (set by
    /// [`FrameJob::with_device_pixels`]; the Python binding's CuPy input): `image` then gives
    /// the shape, header and name only, and its pixel vectors are not read. Only the GPU
    /// backend runs such a job; the CPU backend refuses it.
    pub device_pixels: Option<DevicePixels>,
    /// Outlier (cosmic-ray) rejection inside the extraction (docs/algorithm.md §4.11); `None`
    /// (the default) extracts as desispec does.
    pub reject: Option<crate::extract::RejectConfig>,
}

/// Element type of a plane of [`DevicePixels`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelType {
    /// `float32` (`'<f4'`).
    F32,
    /// `float64` (`'<f8'`): rounded to f32 as the host path converts such arrays.
    F64,
}

impl PixelType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            PixelType::F32 => 4,
            PixelType::F64 => 8,
        }
    }
}

/// One `(ny, nx)` row-major plane in GPU memory: its device address, element type and the
/// bytes from one row to the next (the elements of a row are contiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePlane {
    /// Device address of element `(0, 0)`.
    pub address: u64,
    /// Element type.
    pub dtype: PixelType,
    /// Bytes from one row to the next.
    pub row_stride: usize,
}

/// The image and inverse variance of a frame already in GPU memory (e.g. CuPy arrays, through
/// `__cuda_array_interface__`): the GPU backend screens them on the device by the same pixel
/// rule (the `screen_pixels` kernel) instead of uploading `FrameJob::image`'s pixels, so the
/// image is never copied to the host. The inverse variance carries the mask (no MASK plane:
/// gpu_specter's convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePixels {
    image: DevicePlane,
    ivar: DevicePlane,
    stream: Option<u64>,
}

impl DevicePixels {
    /// Device pixels from raw addresses. `stream` is the CUDA stream (a `CUstream` handle, or
    /// 1/2 for the legacy/per-thread default stream) on which the producer wrote the arrays, as
    /// `__cuda_array_interface__` v3 gives it: the backend synchronizes it before reading.
    ///
    /// # Safety
    /// For as long as any job holding the value runs: each plane is a live allocation of the
    /// CUDA device that the GPU backend runs on, in the process's primary context, holding the
    /// job's `(ny, nx)` elements at `address + row * row_stride + col * size`, which nobody
    /// writes or frees meanwhile. (The backend checks with the driver that each address lies
    /// in a device allocation of its device large enough for the plane, and
    /// [`FrameJob::with_device_pixels`] checks the shape arithmetic, but neither can tell
    /// whether the memory will stay valid.)
    pub unsafe fn new(image: DevicePlane, ivar: DevicePlane, stream: Option<u64>) -> Self {
        Self {
            image,
            ivar,
            stream,
        }
    }

    /// The image plane.
    pub fn image(&self) -> DevicePlane {
        self.image
    }

    /// The inverse variance plane.
    pub fn ivar(&self) -> DevicePlane {
        self.ivar
    }

    /// The producer's stream, to synchronize before reading.
    pub fn stream(&self) -> Option<u64> {
        self.stream
    }
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
            device_pixels: None,
            reject: None,
        })
    }

    /// The same job with its pixels in GPU memory ([`DevicePixels`]): `image` then gives the
    /// shape, header and name only.
    ///
    /// # Errors
    /// [`ExtractError::Input`] naming the image when a plane's address is null or not aligned
    /// to its element, or its row stride is not a multiple of the element or shorter than a
    /// row of `image.nx` elements.
    pub fn with_device_pixels(self, pixels: DevicePixels) -> Result<Self, ExtractError> {
        let nx = self.image.nx;
        for (name, plane) in [("image", pixels.image), ("ivar", pixels.ivar)] {
            let size = plane.dtype.size();
            let problem = if plane.address == 0 {
                Some("a null device address".to_string())
            } else if plane.address % size as u64 != 0 {
                Some(format!(
                    "device address {:#x} not aligned to its {size}-byte elements",
                    plane.address
                ))
            } else if plane.row_stride % size != 0 || plane.row_stride < nx * size {
                Some(format!(
                    "row stride {} bytes for rows of {nx} elements of {size} bytes",
                    plane.row_stride
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ExtractError::Input {
                    path: self.image.path.display().to_string(),
                    reason: format!("{name} in device memory: {problem}"),
                });
            }
        }
        Ok(Self {
            device_pixels: Some(pixels),
            ..self
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

    /// The same job with outlier rejection `reject` (`None`: off).
    pub fn with_reject(self, reject: Option<crate::extract::RejectConfig>) -> Self {
        Self { reject, ..self }
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
