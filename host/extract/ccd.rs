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
        // Clamped to the image, and empty (not reversed) when they start beyond their end.
        let c0 = cols.start.min(ncol);
        let c1 = cols.end.min(ncol).max(c0);
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
                let (src, iv, mk) = (&src[c0..c1], &iv[c0..c1], &mk[c0..c1]);
                limits.screen_into(src, iv, mk, &mut im[c0..c1], &mut wt[c0..c1]);
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

/// The CCD columns an extraction of `params` on `grid` with `psf` reads: the columns the
/// stamps of its bundles' fibers can reach over the padded grid ([`trace_cols`], the box the
/// CPU backend converts), before the image's width is known (the reader clamps them). With
/// [`ccd_rows`] the window a caller reads ([`crate::io::PreprocReader::read_window`]) to get
/// the frame of the whole image on the CPU.
pub fn ccd_cols(
    psf: &GaussHermitePsf,
    params: &ExtractionParams,
    grid: &WavelengthGrid,
) -> std::ops::Range<usize> {
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    trace_cols(psf, params, &padded.fullwave, usize::MAX)
}

/// CCD rows that the stamps of spectra `specmin..specmin+nspec` can reach on `fullwave`: the
/// Y trace sampled along the grid, widened by the stamp half-height and a margin of 3 rows.
pub(crate) fn trace_rows(
    psf: &GaussHermitePsf,
    params: &ExtractionParams,
    fullwave: &[f64],
    nrow: usize,
) -> std::ops::Range<usize> {
    let fibers = params.specmin..(params.specmin + params.nspec).min(psf.nspec);
    trace_span(&psf.ytrace, fibers, fullwave, psf.hsizey, nrow)
}

/// CCD columns that the stamps of every fiber of the bundles of `params` (whole bundles: a
/// patch's padded spectra reach beyond the extracted ones) can reach on `fullwave`: the X
/// trace sampled along the grid, widened by the stamp half-width and a margin of 3 columns.
pub(crate) fn trace_cols(
    psf: &GaussHermitePsf,
    params: &ExtractionParams,
    fullwave: &[f64],
    ncol: usize,
) -> std::ops::Range<usize> {
    let last = params.bundle_starts().last().copied();
    let end = last.map_or(params.specmin, |start| start + params.bundlesize);
    trace_span(
        &psf.xtrace,
        params.specmin..end.min(psf.nspec),
        fullwave,
        psf.hsizex,
        ncol,
    )
}

/// Pixels along one axis that the stamps of `fibers` can reach on `fullwave` (`trace`: the
/// Legendre table of that axis, `half`: the stamp's half-size along it), clamped to `0..len`.
fn trace_span(
    trace: &crate::psf::LegendreTable,
    fibers: std::ops::Range<usize>,
    fullwave: &[f64],
    half: usize,
    len: usize,
) -> std::ops::Range<usize> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let samples = 64.min(fullwave.len().max(1));
    for ispec in fibers {
        let coeffs = trace.fiber(ispec);
        for j in 0..samples {
            let k = j * (fullwave.len().saturating_sub(1)) / (samples - 1).max(1);
            let Some(&wave) = fullwave.get(k) else {
                continue;
            };
            let ww = desi_device::psf::legendre::normalized_wavelength(
                wave,
                trace.wavemin,
                trace.wavemax,
            );
            let y = desi_device::psf::legendre::legval(ww, coeffs);
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return 0..len;
    }
    // Between samples the trace moves by at most a few pixels (1.5-2 rows per bin, 2400/64
    // bins between samples): widen by that step as well.
    let step = (hi - lo) / samples as f64;
    let margin = half as f64 + 3.0 + step;
    let lo = (lo - margin).floor().max(0.0) as usize;
    let hi = ((hi + margin).ceil().max(0.0) as usize).min(len);
    lo..hi.max(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::read_psf;
    use crate::patch::plan::plan_bundle;
    use std::path::Path;

    /// The CPU backend converts the traces' box ([`trace_rows`] x [`trace_cols`]); every pixel
    /// window of every patch must lie inside it (else `start` converts again). Checked for the
    /// bundled r-camera PSF: the whole frame, one bundle, a partial last bundle, and a grid
    /// running off the CCD's bottom.
    #[test]
    fn patch_windows_lie_in_the_traces_box() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/psf-r0-00051060.fits");
        let psf = read_psf(&path).expect("bundled PSF");
        let (nrow, ncol) = (4128, 4114);
        for (specmin, nspec, wave) in [
            (0, 500, (5760.0, 7620.0)),
            (25, 25, (6000.0, 6200.0)),
            (475, 13, (7000.0, 7100.0)),
            (200, 50, (7500.0, 7900.0)),
        ] {
            let params = ExtractionParams {
                specmin,
                nspec,
                ..ExtractionParams::default()
            };
            let grid = WavelengthGrid::arange(wave.0, wave.1, 0.8).unwrap();
            let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
            let rows = trace_rows(&psf, &params, &padded.fullwave, nrow);
            let cols = trace_cols(&psf, &params, &padded.fullwave, ncol);
            let mut windows = 0;
            for (bundle, &start) in params.bundle_starts().iter().enumerate() {
                let corners = psf
                    .corners(start, params.bundlesize, &padded.fullwave)
                    .unwrap();
                let plans = plan_bundle(bundle, &corners, &params, grid.nwave(), nrow);
                for w in plans.iter().filter_map(|p| p.window) {
                    windows += 1;
                    let label = format!("{specmin}+{nspec} {wave:?}: {w:?} vs {rows:?} x {cols:?}");
                    assert!(
                        rows.start as i32 <= w.row_min && w.row_max <= rows.end as i32,
                        "{label}"
                    );
                    assert!(
                        cols.start as i32 <= w.col_min && w.col_max <= cols.end as i32,
                        "{label}"
                    );
                }
            }
            assert!(windows > 0);
            // The box is a bundle's, not the CCD's width, for one bundle.
            if nspec <= 25 {
                assert!(cols.len() < 400, "{cols:?}");
            }
        }
    }
}
