//! Bundles, sub-bundles, patches and their pixel windows (docs/algorithm.md §3.2, §3.3).

use crate::psf::SpotTable;
use desi_device::patch::{patch_bandwidth, PatchShape, StampView};
use rayon::prelude::*;
use thiserror::Error;

/// Decomposition and solve parameters of `desi_extract_spectra` (docs/algorithm.md §8).
#[derive(Clone, Debug, PartialEq)]
pub struct ExtractionParams {
    /// First spectrum to extract (relative to the PSF's FIBERMIN).
    pub specmin: usize,
    /// Number of spectra to extract.
    pub nspec: usize,
    /// Fibers per bundle (25).
    pub bundlesize: usize,
    /// Sub-bundles per bundle (5).
    pub nsubbundles: usize,
    /// Core bins per patch (50).
    pub nwavestep: usize,
    /// Wavelength pad in bins before `wavepad_frac` (10).
    pub wavepad: usize,
    /// Extra pad fraction (0.2 -> effective pad 12).
    pub wavepad_frac: f64,
    /// Fraction of the pad-induced rows kept (0.8).
    pub pixpad_frac: f64,
    /// Ridge α for well-measured bins (0).
    pub regularize: f64,
    /// PSF model error for chi2pix (0.01).
    pub psferr: f64,
    /// desispec's rule for the BAD2DFIT bit of the frame MASK (main by default).
    pub mask_rule: super::MaskRule,
}

impl Default for ExtractionParams {
    fn default() -> Self {
        Self {
            specmin: 0,
            nspec: 500,
            bundlesize: 25,
            nsubbundles: 5,
            nwavestep: 50,
            wavepad: 10,
            wavepad_frac: 0.2,
            pixpad_frac: 0.8,
            regularize: 0.0,
            psferr: 0.01,
            mask_rule: super::MaskRule::Main,
        }
    }
}

/// Inconsistent decomposition parameters.
#[derive(Debug, Error, PartialEq)]
pub enum ParamsError {
    /// A rule of docs/algorithm.md §8 is violated.
    #[error("invalid extraction parameters: {0}")]
    Invalid(String),
}

impl ExtractionParams {
    /// Checks the rules of gpu_specter's `spex` (bundlesize % nsubbundles == 0, nspec and
    /// specmin multiples of bundlesize) and that the pad covers the resolution diagonals.
    pub fn validate(&self, ndiag: usize, psf_nspec: usize) -> Result<(), ParamsError> {
        let fail = |msg: String| Err(ParamsError::Invalid(msg));
        if self.bundlesize == 0 || self.nsubbundles == 0 || self.nwavestep == 0 {
            return fail("bundlesize, nsubbundles and nwavestep must be positive".into());
        }
        if !self.bundlesize.is_multiple_of(self.nsubbundles) {
            return fail(format!(
                "bundlesize {} is not a multiple of nsubbundles {}",
                self.bundlesize, self.nsubbundles
            ));
        }
        if self.nspec == 0 || !self.nspec.is_multiple_of(self.bundlesize) {
            return fail(format!(
                "nspec {} is not a positive multiple of bundlesize {}",
                self.nspec, self.bundlesize
            ));
        }
        if !self.specmin.is_multiple_of(self.bundlesize) {
            return fail(format!(
                "specmin {} is not a multiple of bundlesize {}",
                self.specmin, self.bundlesize
            ));
        }
        if self.specmin + self.nspec > psf_nspec {
            return fail(format!(
                "spectra {}..{} requested but the PSF has {psf_nspec}",
                self.specmin,
                self.specmin + self.nspec
            ));
        }
        if !(0.0..=1.0).contains(&self.pixpad_frac) || !(0.0..=1.0).contains(&self.wavepad_frac) {
            return fail("pixpad_frac and wavepad_frac must lie in [0, 1]".into());
        }
        if self.pad() < ndiag {
            return fail(format!(
                "the effective wavelength pad {} is below ndiag {ndiag}",
                self.pad()
            ));
        }
        if !(self.regularize >= 0.0 && self.psferr >= 0.0) {
            return fail("regularize and psferr must be non-negative".into());
        }
        Ok(())
    }

    /// Effective pad P = wavepad + floor(wavepad·wavepad_frac).
    pub fn pad(&self) -> usize {
        super::PaddedGrid::effective_pad(self.wavepad, self.wavepad_frac)
    }

    /// Padded bins per patch, nwavestep + 2P.
    pub fn nwavetot(&self) -> usize {
        self.nwavestep + 2 * self.pad()
    }

    /// First spectrum of every bundle.
    pub fn bundle_starts(&self) -> Vec<usize> {
        (self.specmin..self.specmin + self.nspec)
            .step_by(self.bundlesize.max(1))
            .collect()
    }
}

/// Kept CCD pixels of a patch: columns `[col_min, col_max)`, rows `[row_min, row_max)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelWindow {
    /// First column (min stamp corner over the padded unknowns).
    pub col_min: i32,
    /// One past the last column.
    pub col_max: i32,
    /// First kept row.
    pub row_min: i32,
    /// One past the last kept row.
    pub row_max: i32,
}

impl PixelWindow {
    /// Number of kept pixels.
    pub fn npix(&self) -> usize {
        ((self.col_max - self.col_min) * (self.row_max - self.row_min)).max(0) as usize
    }
}

/// One patch: core spectra × core bins plus their padding (docs/algorithm.md §3.2).
#[derive(Clone, Debug, PartialEq)]
pub struct PatchPlan {
    /// Index of the bundle in the frame.
    pub bundle: usize,
    /// Index of the patch within its bundle (sub-bundle-major).
    pub patch: usize,
    /// First spectrum of the bundle.
    pub bspecmin: usize,
    /// First core spectrum.
    pub ispec: usize,
    /// Core spectra.
    pub nspp: usize,
    /// First padded spectrum.
    pub s0: usize,
    /// Padded spectra.
    pub nspecpad: usize,
    /// fullwave index of the first core bin.
    pub iwave: usize,
    /// Core bins written to the output (the last patch keeps fewer than nwavestep).
    pub keep: usize,
    /// Kept pixels, or `None` when the patch falls off the CCD (its output stays zero).
    pub window: Option<PixelWindow>,
    /// Half-bandwidth of the patch's normal matrix in wavelength-major order (docs/algorithm.md
    /// §4.1), from the stamp corners; 0 off the CCD. Computed once here for every backend.
    pub kd: usize,
}

impl PatchPlan {
    /// Output wavelength index of the first core bin.
    pub fn out_wave_min(&self, pad: usize) -> usize {
        self.iwave - pad
    }

    /// The patch's shape for the device routines (`nwavetot` bins per spectrum, the kept
    /// rows), or `None` when the patch falls off the CCD.
    pub fn shape(&self, nwavetot: usize) -> Option<PatchShape> {
        self.window.map(|window| PatchShape {
            nspecpad: self.nspecpad,
            nwavetot,
            row_min: window.row_min,
            row_max: window.row_max,
        })
    }

    /// The patch's stamps in `spots`, a table on the fullwave grid that holds its padded
    /// spectra (a bundle's, or a frame's), `pad` bins before its first core bin.
    pub fn stamp_view<'a>(&self, spots: &'a SpotTable, pad: usize) -> StampView<'a> {
        let first = (self.s0 - spots.ispec_min) * spots.nwave + (self.iwave - pad);
        StampView {
            stamps: &spots.stamps[first * spots.ny * spots.nx..],
            ..self.corner_view(spots, pad)
        }
    }

    /// [`PatchPlan::stamp_view`] without the stamps (corners only): `spots` may be a
    /// corner-only table.
    pub fn corner_view<'a>(&self, spots: &'a SpotTable, pad: usize) -> StampView<'a> {
        let first = (self.s0 - spots.ispec_min) * spots.nwave + (self.iwave - pad);
        StampView {
            stamps: &[],
            corners: &spots.corners[first..],
            fiber_stride: spots.nwave,
            ny: spots.ny,
            nx: spots.nx,
        }
    }
}

/// gpu_specter's `get_spec_padding`: the padded spectra of a sub-bundle starting at `ispec`.
pub fn spec_padding(ispec: usize, nspp: usize, bundlesize: usize) -> (usize, usize) {
    let lower = usize::from(!ispec.is_multiple_of(bundlesize));
    let upper = usize::from(!(ispec + nspp).is_multiple_of(bundlesize));
    (ispec - lower, nspp + lower + upper)
}

/// Plans every patch of one bundle; `spots` covers the bundle's fibers on the fullwave grid
/// (spot index k = fullwave index). `nrow` is the CCD height.
pub fn plan_bundle(
    bundle: usize,
    spots: &SpotTable,
    params: &ExtractionParams,
    nwave: usize,
    nrow: usize,
) -> Vec<PatchPlan> {
    let pad = params.pad();
    let nspp = params.bundlesize / params.nsubbundles;
    let bspecmin = spots.ispec_min;
    let mut plans = Vec::new();
    for sub in 0..params.nsubbundles {
        let ispec = bspecmin + sub * nspp;
        let (s0, nspecpad) = spec_padding(ispec, nspp, params.bundlesize);
        for iwave in (pad..pad + nwave).step_by(params.nwavestep) {
            let keep = params.nwavestep.min(nwave - (iwave - pad));
            let window = pixel_window(spots, s0 - bspecmin, nspecpad, iwave, params, nrow);
            plans.push(PatchPlan {
                bundle,
                patch: plans.len(),
                bspecmin,
                ispec,
                nspp,
                s0,
                nspecpad,
                iwave,
                keep,
                window,
                kd: 0,
            });
        }
    }
    // The bandwidths, patches in parallel (the costly part of planning).
    plans.par_iter_mut().for_each(|plan| {
        if let Some(shape) = plan.shape(params.nwavetot()) {
            plan.kd = patch_bandwidth(&plan.corner_view(spots, pad), &shape);
        }
    });
    plans
}

/// Pixel window of a patch (docs/algorithm.md §3.3), `None` if its kept rows leave the CCD
/// (CPU-path rule).
fn pixel_window(
    spots: &SpotTable,
    s_local: usize,
    nspecpad: usize,
    iwave: usize,
    params: &ExtractionParams,
    nrow: usize,
) -> Option<PixelWindow> {
    let pad = params.pad();
    let (ny, nx) = (spots.ny as i64, spots.nx as i64);
    let (mut xmin, mut xmax) = (i64::MAX, i64::MIN);
    let (mut ypadmin, mut ypadmax) = (i64::MAX, i64::MIN);
    let (mut ymin, mut ymax) = (i64::MAX, i64::MIN);
    for s in s_local..s_local + nspecpad {
        for k in iwave - pad..iwave + params.nwavestep + pad {
            let c = spots.corner(s, k);
            let (xc, yc) = (c.xc as i64, c.yc as i64);
            xmin = xmin.min(xc);
            xmax = xmax.max(xc + nx);
            ypadmin = ypadmin.min(yc);
            ypadmax = ypadmax.max(yc + ny);
            if (iwave..iwave + params.nwavestep).contains(&k) {
                ymin = ymin.min(yc);
                ymax = ymax.max(yc + ny);
            }
        }
    }
    // Python: int((ymin - ypadmin) * (1 - pixpad_frac)) and
    // int((ymax - ypadmin) + (ypadmax - ymax) * pixpad_frac), both non-negative.
    let lo = ypadmin + (((ymin - ypadmin) as f64) * (1.0 - params.pixpad_frac)) as i64;
    let hi = ypadmin
        + (((ymax - ypadmin) as f64) + ((ypadmax - ymax) as f64) * params.pixpad_frac) as i64;
    if lo < 0 || hi > nrow as i64 {
        return None;
    }
    Some(PixelWindow {
        col_min: xmin as i32,
        col_max: xmax as i32,
        row_min: lo as i32,
        row_max: hi as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_padding_matches_gpu_specter() {
        assert_eq!(spec_padding(0, 5, 25), (0, 6));
        assert_eq!(spec_padding(5, 5, 25), (4, 7));
        assert_eq!(spec_padding(20, 5, 25), (19, 6));
        assert_eq!(spec_padding(25, 5, 25), (25, 6));
        assert_eq!(spec_padding(35, 5, 25), (34, 7));
    }

    #[test]
    fn parameter_rules() {
        let p = ExtractionParams::default();
        assert_eq!(p.pad(), 12);
        assert_eq!(p.nwavetot(), 74);
        assert!(p.validate(5, 500).is_ok());
        assert!(ExtractionParams {
            nsubbundles: 4,
            ..p.clone()
        }
        .validate(5, 500)
        .is_err());
        assert!(ExtractionParams {
            nspec: 30,
            ..p.clone()
        }
        .validate(5, 500)
        .is_err());
        assert!(ExtractionParams {
            specmin: 5,
            nspec: 25,
            ..p.clone()
        }
        .validate(5, 500)
        .is_err());
        assert!(ExtractionParams {
            specmin: 475,
            nspec: 50,
            ..p.clone()
        }
        .validate(5, 500)
        .is_err());
        assert!(ExtractionParams {
            wavepad: 3,
            ..p.clone()
        }
        .validate(5, 500)
        .is_err());
        assert_eq!(
            ExtractionParams {
                specmin: 25,
                nspec: 50,
                ..p
            }
            .bundle_starts(),
            vec![25, 50]
        );
    }
}
