//! Frame extraction driver: PSF + preproc image -> stitched frame arrays, bundle by bundle,
//! through any [`Backend`].

use crate::io::PreprocImage;
use crate::patch::plan::plan_bundle;
use crate::patch::stitch::{spectrum_mask, FrameArrays};
use crate::patch::{ExtractionParams, PaddedGrid, ParamsError, PatchPlan, WavelengthGrid};
use crate::psf::{GaussHermitePsf, PsfError, SpotTable};
use crate::solve::{Backend, BundleInputs, PatchIssue, SolveError};
use crate::trace::Trace;
use desi_device::patch::CcdView;
use rayon::prelude::*;
use std::time::{Duration, Instant};
use thiserror::Error;

/// ccdmask bits that exclude a pixel from the fit: everything but BADREADNOISE (0x2FF).
pub const EXTRACT_MASK_BITS: i32 = 0x2FF;

/// Errors that stop a frame extraction.
#[derive(Debug, Error)]
pub enum ExtractError {
    /// Bad decomposition parameters.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// PSF evaluation failed.
    #[error(transparent)]
    Psf(#[from] PsfError),
    /// The backend failed as a whole.
    #[error(transparent)]
    Solve(#[from] SolveError),
    /// Image and PSF disagree or the request does not fit them.
    #[error("{path}: {reason}")]
    Input {
        /// File at fault.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A reported per-patch problem.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchReport {
    /// Bundle index.
    pub bundle: usize,
    /// Patch index within the bundle.
    pub patch: usize,
    /// First core spectrum.
    pub ispec: usize,
    /// First core output wavelength index.
    pub iwave: usize,
    /// What happened.
    pub issue: PatchIssue,
}

/// Wall time per stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageTimes {
    /// Spot evaluation.
    pub spots: Duration,
    /// Patch solves.
    pub solve: Duration,
    /// Stitching, model image and finalization.
    pub finalize: Duration,
    /// Finer stages of the backend (e.g. GPU kernels), in order.
    pub detail: Vec<(&'static str, Duration)>,
}

/// A finished extraction.
#[derive(Clone, Debug)]
pub struct Extraction {
    /// The output grid.
    pub grid: WavelengthGrid,
    /// Frame arrays, flux and ivar per Angstrom.
    pub arrays: FrameArrays,
    /// desispec spectrum mask.
    pub mask: Vec<u32>,
    /// Per-patch problems.
    pub reports: Vec<PatchReport>,
    /// Model image `(nrow, ncol)`, when requested.
    pub model: Option<Vec<f64>>,
    /// Number of patches solved.
    pub npatch: usize,
    /// Stage timings.
    pub times: StageTimes,
}

/// CCD image and weights promoted to f64; weights are IVAR where `(MASK & 0x2FF) == 0`.
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
    /// Converts a preproc image.
    pub fn from_preproc(img: &PreprocImage) -> Self {
        let image = img.image.par_iter().map(|&v| v as f64).collect();
        let weight = img
            .ivar
            .par_iter()
            .zip(&img.mask)
            .map(|(&iv, &m)| {
                if m & EXTRACT_MASK_BITS == 0 {
                    iv as f64
                } else {
                    0.0
                }
            })
            .collect();
        Self {
            nrow: img.ny,
            ncol: img.nx,
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

/// Progress callback: (patches done, patches total).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Extracts the spectra `params.specmin .. +nspec` of `image` on `grid`.
pub fn extract_frame(
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
    backend: &dyn Backend,
    want_model: bool,
    progress: Progress,
) -> Result<Extraction, ExtractError> {
    extract_frame_traced(
        psf,
        image,
        grid,
        params,
        backend,
        want_model,
        progress,
        &Trace::new(),
    )
}

/// [`extract_frame`] recording its stages (spots, solve, stitch per bundle) in `trace`.
#[allow(clippy::too_many_arguments)]
pub fn extract_frame_traced(
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
    backend: &dyn Backend,
    want_model: bool,
    progress: Progress,
    trace: &Trace,
) -> Result<Extraction, ExtractError> {
    let ndiag = psf.hsizey;
    params.validate(ndiag, psf.nspec)?;
    check_compatible(psf, image, grid)?;
    let ccd = CcdData::from_preproc(image);
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let nwave = grid.nwave();
    let mut arrays = FrameArrays::new(params.specmin, params.nspec, nwave, ndiag);
    let mut model = want_model.then(|| vec![0.0; ccd.nrow * ccd.ncol]);
    let mut reports = Vec::new();
    let mut times = StageTimes::default();
    let bundles = params.bundle_starts();
    let patches_per_bundle = params.nsubbundles * nwave.div_ceil(params.nwavestep);
    let total = bundles.len() * patches_per_bundle;
    let mut done = 0;
    progress(0, total);
    for (bundle, &bspecmin) in bundles.iter().enumerate() {
        let t0 = Instant::now();
        let spots = trace.span("spots", || {
            psf.spots(bspecmin, params.bundlesize, &padded.fullwave)
        })?;
        check_on_ccd(psf, &spots, &padded, ccd.ncol)?;
        let plans = plan_bundle(bundle, &spots, params, nwave, ccd.nrow);
        let t1 = Instant::now();
        let inputs = BundleInputs {
            spots: &spots,
            plans: &plans,
            ccd: ccd.view(),
            params,
            ndiag,
        };
        let results = trace.span("solve", || backend.solve_bundle(&inputs))?;
        let t2 = Instant::now();
        for (plan, result) in plans.iter().zip(&results) {
            arrays.insert(plan, result, params.pad());
            if let Some(issue) = &result.issue {
                reports.push(PatchReport {
                    bundle,
                    patch: plan.patch,
                    ispec: plan.ispec,
                    iwave: plan.out_wave_min(params.pad()),
                    issue: issue.clone(),
                });
            }
            if let Some(model) = model.as_mut() {
                add_patch_model(model, ccd.ncol, &spots, plan, &arrays, params.pad());
            }
        }
        done += plans.len();
        progress(done, total);
        times.spots += t1 - t0;
        times.solve += t2 - t1;
        times.finalize += t2.elapsed();
    }
    let t3 = Instant::now();
    let mut extraction = finish_extraction(grid, arrays, reports, model, total);
    times.finalize += t3.elapsed();
    extraction.times = times;
    Ok(extraction)
}

/// Finalizes stitched per-bin arrays (any backend): zero ivar of fully masked bins, convert
/// to per Angstrom and compute the desispec mask.
pub(crate) fn finish_extraction(
    grid: &WavelengthGrid,
    mut arrays: FrameArrays,
    reports: Vec<PatchReport>,
    model: Option<Vec<f64>>,
    npatch: usize,
) -> Extraction {
    arrays.zero_fully_masked();
    arrays.to_per_angstrom(&grid.bin_widths());
    let mask = spectrum_mask(&arrays);
    Extraction {
        grid: grid.clone(),
        arrays,
        mask,
        reports,
        model,
        npatch,
        times: StageTimes::default(),
    }
}

/// Rejects images whose shape differs from the PSF's CCD and grids outside the PSF domain.
pub(crate) fn check_compatible(
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    grid: &WavelengthGrid,
) -> Result<(), ExtractError> {
    if image.ny != psf.npix_y || image.nx != psf.npix_x {
        return Err(ExtractError::Input {
            path: image.path.display().to_string(),
            reason: format!(
                "image is {}x{} (rows x columns) but the PSF {} describes a {}x{} CCD",
                image.ny,
                image.nx,
                psf.path.display(),
                psf.npix_y,
                psf.npix_x
            ),
        });
    }
    let (lo, hi) = (psf.sigma_x.wavemin, psf.sigma_x.wavemax);
    let first = grid.wave.first().copied().unwrap_or(grid.wmin);
    let last = grid.wave.last().copied().unwrap_or(grid.wmax);
    if grid.wave.is_empty() || first < lo || last > hi + 0.5 * grid.dw {
        return Err(ExtractError::Input {
            path: psf.path.display().to_string(),
            reason: format!(
                "requested wavelengths {first:.3}..{last:.3} A lie outside the PSF domain {lo}..{hi} A"
            ),
        });
    }
    Ok(())
}

/// Rejects fibers whose stamps leave the CCD columns anywhere on the padded grid.
pub(crate) fn check_on_ccd(
    psf: &GaussHermitePsf,
    spots: &SpotTable,
    padded: &PaddedGrid,
    ncol: usize,
) -> Result<(), ExtractError> {
    for s in 0..spots.nspec {
        for k in 0..spots.nwave {
            let c = spots.corner(s, k);
            if c.xc < 0 || c.xc as usize + spots.nx > ncol {
                return Err(ExtractError::Input {
                    path: psf.path.display().to_string(),
                    reason: format!(
                        "fiber {} leaves the CCD columns (stamp at column {}) at {:.2} A",
                        psf.fibermin + spots.ispec_min + s,
                        c.xc,
                        padded.fullwave[k]
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Adds `A_core · flux_core` of a patch (the R-convolved flux per bin, CPU convention of
/// spec 4.9) to the model image, clipped to the patch's kept rows.
pub(crate) fn add_patch_model(
    model: &mut [f64],
    ncol: usize,
    spots: &SpotTable,
    plan: &PatchPlan,
    arrays: &FrameArrays,
    pad: usize,
) {
    let Some(window) = plan.window else { return };
    let (ny, nx) = (spots.ny, spots.nx);
    for c in 0..plan.nspp {
        let ispec = plan.ispec + c;
        let s = ispec - spots.ispec_min;
        for j in 0..plan.keep {
            let out = plan.out_wave_min(pad) + j;
            let flux = arrays.flux[(ispec - arrays.specmin) * arrays.nwave + out];
            let k = plan.iwave + j;
            let corner = spots.corner(s, k);
            let stamp = spots.stamp(s, k);
            for r in 0..ny {
                let row = corner.yc + r as i32;
                if row < window.row_min || row >= window.row_max {
                    continue;
                }
                let base = row as usize * ncol + corner.xc as usize;
                for (m, &v) in model[base..base + nx]
                    .iter_mut()
                    .zip(&stamp[r * nx..(r + 1) * nx])
                {
                    *m += flux * v;
                }
            }
        }
    }
}
