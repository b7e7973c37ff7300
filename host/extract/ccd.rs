//! The CCD as the solves read it: image and extraction weights in f64, and the rows a set of
//! traces can reach.

use super::PixelLimits;
use crate::io::PreprocImage;
use crate::patch::{ExtractionParams, PaddedGrid, WavelengthGrid};
use crate::psf::GaussHermitePsf;
use desi_device::patch::CcdView;
use rayon::prelude::*;

/// ccdmask bits that exclude a pixel from the fit: everything but BADREADNOISE (0x2FF).
pub use desi_device::pixel::EXTRACT_MASK_BITS;

/// CCD image and weights promoted to f64 by the rule of [`PixelLimits::pixel`]: weights are IVAR
/// where `(MASK & 0x2FF) == 0` and the pixel passes the screen, else 0 (and the value 0).
#[derive(Clone, Debug)]
pub struct CcdData {
    /// Rows.
    pub nrow: usize,
    /// Columns.
    pub ncol: usize,
    /// Pixel values.
    pub image: Vec<f64>,
    /// Extraction weights.
    pub weight: Vec<f64>,
}

impl CcdData {
    /// Converts a preproc image with its own limits ([`PixelLimits::for_image`]).
    pub fn from_preproc(img: &PreprocImage) -> Self {
        Self::from_preproc_rows(img, 0..img.ny, &PixelLimits::for_image(img))
    }

    /// Converts only the CCD rows `rows` (the others stay 0, i.e. zero weight, and, being
    /// zero-initialized allocations, are never touched): extracting a few bundles then costs
    /// the rows they cover, not the whole 17-Mpixel CCD.
    pub fn from_preproc_rows(
        img: &PreprocImage,
        rows: std::ops::Range<usize>,
        limits: &PixelLimits,
    ) -> Self {
        Self::from_preproc_window(img, rows, 0..img.nx, limits)
    }

    /// Converts only the pixels of rows `rows` and columns `cols` (clamped to the image; the
    /// others stay 0, i.e. zero weight, their pages never touched): a bundle's patches read
    /// ~250 of a CCD row's 4,000+ columns.
    pub fn from_preproc_window(
        img: &PreprocImage,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        limits: &PixelLimits,
    ) -> Self {
        let (nrow, ncol) = (img.ny, img.nx);
        let rows = rows.start.min(nrow)..rows.end.min(nrow);
        let cols = cols.start.min(ncol)..cols.end.min(ncol);
        let mut image = vec![0.0; nrow * ncol];
        let mut weight = vec![0.0; nrow * ncol];
        let span = rows.start * ncol..rows.end * ncol;
        image[span.clone()]
            .par_chunks_mut(ncol.max(1))
            .zip(weight[span.clone()].par_chunks_mut(ncol.max(1)))
            .zip(img.image[span.clone()].par_chunks(ncol.max(1)))
            .zip(
                img.ivar[span.clone()]
                    .par_chunks(ncol.max(1))
                    .zip(img.mask[span].par_chunks(ncol.max(1))),
            )
            .for_each(|(((im, wt), src), (iv, mk))| {
                for i in cols.clone() {
                    let (value, weight) = limits.pixel(src[i], iv[i], mk[i]);
                    im[i] = f64::from(value);
                    wt[i] = f64::from(weight);
                }
            });
        Self {
            nrow,
            ncol,
            image,
            weight,
        }
    }

    /// Device view.
    pub fn view(&self) -> CcdView<'_> {
        CcdView {
            image: &self.image,
            weight: &self.weight,
            nrow: self.nrow,
            ncol: self.ncol,
        }
    }
}

/// The CCD rows an extraction of `params` on `grid` with `psf` reads: the rows its fibers'
/// stamps can reach over the padded grid ([`trace_rows`]),
/// before the image's height is known (the reader clamps them). A caller that reads only these
/// rows of a preproc ([`crate::io::PreprocReader::read_rows`]) and extracts with the same
/// `psf`, `params` and `grid` gets the frame of the whole image.
pub fn ccd_rows(
    psf: &GaussHermitePsf,
    params: &ExtractionParams,
    grid: &WavelengthGrid,
) -> std::ops::Range<usize> {
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    trace_rows(psf, params, &padded.fullwave, usize::MAX)
}

/// CCD rows that the stamps of spectra `specmin..specmin+nspec` can reach on `fullwave`: the
/// Y trace sampled along the grid, widened by the stamp half-height and a margin of 3 rows.
fn trace_rows(
    psf: &GaussHermitePsf,
    params: &ExtractionParams,
    fullwave: &[f64],
    nrow: usize,
) -> std::ops::Range<usize> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let samples = 64.min(fullwave.len().max(1));
    for ispec in params.specmin..(params.specmin + params.nspec).min(psf.nspec) {
        let coeffs = psf.ytrace.fiber(ispec);
        for j in 0..samples {
            let k = j * (fullwave.len().saturating_sub(1)) / (samples - 1).max(1);
            let Some(&wave) = fullwave.get(k) else {
                continue;
            };
            let ww = desi_device::psf::legendre::normalized_wavelength(
                wave,
                psf.ytrace.wavemin,
                psf.ytrace.wavemax,
            );
            let y = desi_device::psf::legendre::legval(ww, coeffs);
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return 0..nrow;
    }
    // Between samples the trace moves by at most a few rows (1.5-2 rows per bin, 2400/64
    // bins between samples): widen by that step as well.
    let step = (hi - lo) / samples as f64;
    let margin = psf.hsizey as f64 + 3.0 + step;
    let lo = (lo - margin).floor().max(0.0) as usize;
    let hi = ((hi + margin).ceil().max(0.0) as usize).min(nrow);
    lo..hi.max(lo)
}
