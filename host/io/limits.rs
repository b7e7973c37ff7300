//! DESI's plausible ranges for the sizes and parameters read from input headers, checked
//! before anything is allocated or evaluated (a header value beyond them is a bad input,
//! never an attempt to allocate or to extract).

/// Pixels along one CCD axis (NAXISn of a preproc image, NPIX_X/NPIX_Y of a PSF): DESI's
/// CCDs are 4096–4128 pixels on a side.
pub const MAX_CCD_AXIS: usize = 8192;

/// Fibers of one DESI camera (one petal): the rows of a preproc FIBERMAP.
pub const FIBERS_PER_CAMERA: usize = 500;

/// Fibers of one PSF: DESI has 5,000 fibers in all (500 per camera).
pub const MAX_PSF_FIBERS: usize = 5000;

/// Legendre coefficients per fiber of a trace or PSF parameter (specex writes 4–10).
pub const MAX_LEGENDRE_COEFFS: usize = 32;

/// Bytes of one HDU's data as read into memory: the largest DESI HDU (a frame's RESOLUTION,
/// 500 × 11 × 2,881 f32, 63 MB; a preproc image, 68 MB) is far below it.
pub const MAX_HDU_BYTES: usize = 1 << 30;

/// Half stamp sizes HSIZEX/HSIZEY (DESI's PSFs: 8 and 5): at least 1 pixel, at most the
/// device's stamp scratch ([`desi_device::psf::spot::MAX_HALF_SIZE`]).
pub const HSIZE_RANGE: std::ops::RangeInclusive<usize> = 1..=desi_device::psf::spot::MAX_HALF_SIZE;

/// Gauss-Hermite degrees GHDEGX/GHDEGY (DESI's PSFs: 6): at most the device's
/// [`desi_device::psf::spot::MAX_GH_DEGREE`].
pub const MAX_GH_DEGREE: usize = desi_device::psf::spot::MAX_GH_DEGREE;

/// Gaussian widths GHSIGX/GHSIGY in pixels anywhere on the PSF domain (DESI's PSFs:
/// 0.9–1.3 px): a width outside it is no spectrograph PSF.
pub const GH_SIGMA_RANGE: std::ops::RangeInclusive<f64> = 0.25..=5.0;

/// Wavelengths at which GHSIGX/GHSIGY are checked against [`GH_SIGMA_RANGE`], evenly spaced
/// over the PSF domain (ends included).
pub const GH_SIGMA_CHECKS: usize = 33;
