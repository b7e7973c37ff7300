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
        Self::from_preproc_rows(img, 0..img.ny)
    }

    /// Converts only the CCD rows `rows` (the others stay 0, i.e. zero weight, and, being
    /// zero-initialized allocations, are never touched): extracting a few bundles then costs
    /// the rows they cover, not the whole 17-Mpixel CCD.
    pub fn from_preproc_rows(img: &PreprocImage, rows: std::ops::Range<usize>) -> Self {
        let (nrow, ncol) = (img.ny, img.nx);
        let rows = rows.start.min(nrow)..rows.end.min(nrow);
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
                for i in 0..im.len() {
                    im[i] = src[i] as f64;
                    wt[i] = if mk[i] & EXTRACT_MASK_BITS == 0 {
                        iv[i] as f64
                    } else {
                        0.0
                    };
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
///
/// Implemented as [`extract_bundles`] over every bundle followed by [`assemble_frame`]: the
/// multi-process driver runs the same two steps with the bundles spread over ranks, so its
/// output is bitwise identical to this one.
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
    let all: Vec<usize> = (0..params.bundle_starts().len()).collect();
    let set = extract_bundles(
        psf, image, grid, params, backend, &all, want_model, progress, trace,
    )?;
    let t0 = Instant::now();
    let mut extraction = assemble_frame(
        grid,
        params,
        psf.hsizey,
        set.blocks,
        want_model.then_some((image.ny, image.nx)),
    )?;
    let mut times = set.times;
    times.finalize += t0.elapsed();
    extraction.times = times;
    Ok(extraction)
}

/// A bundle's share of the model image: rows `[row_min, row_max)` x columns
/// `[col_min, col_max)` of the CCD, row-major `(row_max - row_min, col_max - col_min)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelBox {
    /// First CCD row.
    pub row_min: usize,
    /// One past the last CCD row.
    pub row_max: usize,
    /// First CCD column.
    pub col_min: usize,
    /// One past the last CCD column.
    pub col_max: usize,
    /// Model values, `(row_max - row_min, col_max - col_min)`, column fastest.
    pub values: Vec<f64>,
}

impl ModelBox {
    /// Adds the box into a full `(nrow, ncol)` model image (pixels outside it are ignored).
    pub fn add_to(&self, model: &mut [f64], nrow: usize, ncol: usize) {
        let width = self.col_max.saturating_sub(self.col_min);
        if width == 0 {
            return;
        }
        for (r, src) in (self.row_min..self.row_max.min(nrow)).zip(self.values.chunks(width)) {
            let col_max = self.col_max.min(ncol);
            if self.col_min >= col_max {
                return;
            }
            let dst = &mut model[r * ncol + self.col_min..r * ncol + col_max];
            for (m, &v) in dst.iter_mut().zip(src) {
                *m += v;
            }
        }
    }
}

/// The finished rows of one bundle: flux and ivar per Angstrom with fully masked bins zeroed
/// (the element-wise steps of [`finish_extraction`]), ready to be placed in the frame.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleBlock {
    /// Bundle index (0 = the bundle starting at `params.specmin`).
    pub bundle: usize,
    /// The bundle's rows: `arrays.specmin` is its first spectrum, `arrays.nspec` its fibers.
    pub arrays: FrameArrays,
    /// Per-patch problems of the bundle.
    pub reports: Vec<PatchReport>,
    /// The bundle's model image contribution, when requested.
    pub model: Option<ModelBox>,
    /// Patches solved.
    pub npatch: usize,
}

/// The blocks of [`extract_bundles`] with the stage times of this process.
#[derive(Clone, Debug)]
pub struct BundleSet {
    /// One block per requested bundle, in the order requested.
    pub blocks: Vec<BundleBlock>,
    /// Stage timings.
    pub times: StageTimes,
}

/// The bundles of a frame that process `index` of `count` extracts: round-robin
/// (`bundles[index::count]`, as gpu_specter's `bspecmin[rank::size]`), or, with `contiguous`,
/// one run of consecutive bundles per process (the GPU path uploads the image once per run).
pub fn bundle_share(nbundle: usize, index: usize, count: usize, contiguous: bool) -> Vec<usize> {
    let count = count.max(1);
    if contiguous {
        let (base, extra) = (nbundle / count, nbundle % count);
        let start = index * base + index.min(extra);
        let len = base + usize::from(index < extra);
        (start..(start + len).min(nbundle)).collect()
    } else {
        (index..nbundle).step_by(count).collect()
    }
}

/// Extracts the bundles `bundles` (indices into `params.bundle_starts()`) of a frame and
/// returns their finished row blocks; [`assemble_frame`] puts blocks of every bundle (from
/// any number of processes) together into the frame.
///
/// # Errors
/// Invalid parameters, image/PSF mismatch, a bundle index out of range, fibers off the CCD,
/// or a backend failure.
#[allow(clippy::too_many_arguments)]
pub fn extract_bundles(
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
    backend: &dyn Backend,
    bundles: &[usize],
    want_model: bool,
    progress: Progress,
    trace: &Trace,
) -> Result<BundleSet, ExtractError> {
    let ndiag = psf.hsizey;
    params.validate(ndiag, psf.nspec)?;
    check_compatible(psf, image, grid)?;
    let starts = params.bundle_starts();
    if let Some(&bad) = bundles.iter().find(|&&b| b >= starts.len()) {
        return Err(ExtractError::Params(ParamsError::Invalid(format!(
            "bundle {bad} requested but the frame has {} bundles",
            starts.len()
        ))));
    }
    let ccd = CcdData::from_preproc_rows(
        image,
        trace_rows(psf, params, &padded_fullwave(grid, params), image.ny),
    );
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let nwave = grid.nwave();
    let dwave = grid.bin_widths();
    let spec_max = params.specmin + params.nspec;
    let mut times = StageTimes::default();
    let patches_per_bundle = params.nsubbundles * nwave.div_ceil(params.nwavestep);
    let total = bundles.len() * patches_per_bundle;
    let mut done = 0;
    let mut blocks = Vec::with_capacity(bundles.len());
    progress(0, total);
    for &bundle in bundles {
        let bspecmin = starts[bundle];
        let bnspec = params.bundlesize.min(spec_max - bspecmin);
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
        let mut arrays = FrameArrays::new(bspecmin, bnspec, nwave, ndiag);
        let mut reports = Vec::new();
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
        }
        let model = want_model.then(|| bundle_model(&ccd, &spots, &plans, &arrays, params.pad()));
        arrays.zero_fully_masked();
        arrays.to_per_angstrom(&dwave);
        blocks.push(BundleBlock {
            bundle,
            arrays,
            reports,
            model,
            npatch: plans.len(),
        });
        done += plans.len();
        progress(done, total);
        times.spots += t1 - t0;
        times.solve += t2 - t1;
        times.finalize += t2.elapsed();
    }
    Ok(BundleSet { blocks, times })
}

/// The model image of one bundle's patches (spec 4.9) in the bounding box of its stamps.
fn bundle_model(
    ccd: &CcdData,
    spots: &SpotTable,
    plans: &[PatchPlan],
    arrays: &FrameArrays,
    pad: usize,
) -> ModelBox {
    let (mut row_min, mut row_max) = (ccd.nrow, 0);
    let (mut col_min, mut col_max) = (ccd.ncol, 0);
    for s in 0..spots.nspec {
        for k in 0..spots.nwave {
            let c = spots.corner(s, k);
            let (r0, c0) = (c.yc.max(0) as usize, c.xc.max(0) as usize);
            row_min = row_min.min(r0);
            col_min = col_min.min(c0);
            row_max = row_max.max((c.yc + spots.ny as i32).max(0) as usize);
            col_max = col_max.max((c.xc + spots.nx as i32).max(0) as usize);
        }
    }
    let (row_max, col_max) = (row_max.min(ccd.nrow), col_max.min(ccd.ncol));
    let (row_min, col_min) = (row_min.min(row_max), col_min.min(col_max));
    let width = col_max - col_min;
    let mut values = vec![0.0; (row_max - row_min) * width];
    for plan in plans {
        add_patch_model_in(
            &mut values,
            width,
            (row_min, col_min),
            spots,
            plan,
            arrays,
            pad,
        );
    }
    ModelBox {
        row_min,
        row_max,
        col_min,
        col_max,
        values,
    }
}

/// Puts the finished blocks of every bundle of a frame together (in bundle order, whatever
/// order they come in) and computes the desispec mask on the whole frame; `model_shape`
/// `(nrow, ncol)` asks for the model image (the bundles' boxes summed in bundle order).
///
/// # Errors
/// A bundle missing, repeated or out of range, or a block whose shape does not fit the frame.
pub fn assemble_frame(
    grid: &WavelengthGrid,
    params: &ExtractionParams,
    ndiag: usize,
    mut blocks: Vec<BundleBlock>,
    model_shape: Option<(usize, usize)>,
) -> Result<Extraction, ExtractError> {
    let nbundle = params.bundle_starts().len();
    blocks.sort_by_key(|b| b.bundle);
    let order: Vec<usize> = blocks.iter().map(|b| b.bundle).collect();
    if order != (0..nbundle).collect::<Vec<_>>() {
        return Err(ExtractError::Params(ParamsError::Invalid(format!(
            "cannot assemble the frame: expected bundles 0..{nbundle}, got {order:?}"
        ))));
    }
    let nwave = grid.nwave();
    let mut arrays = FrameArrays::new(params.specmin, params.nspec, nwave, ndiag);
    let mut model = model_shape.map(|(nrow, ncol)| (vec![0.0; nrow * ncol], nrow, ncol));
    let mut reports = Vec::new();
    let mut npatch = 0;
    let ndiagonal = 2 * ndiag + 1;
    for block in blocks {
        let b = &block.arrays;
        let row0 = b.specmin.wrapping_sub(params.specmin);
        if b.nwave != nwave
            || b.ndiag != ndiag
            || b.specmin < params.specmin
            || row0 + b.nspec > params.nspec
        {
            return Err(ExtractError::Params(ParamsError::Invalid(format!(
                "bundle {}: block of spectra {}..{} x {} bins (ndiag {}) does not fit the frame",
                block.bundle,
                b.specmin,
                b.specmin + b.nspec,
                b.nwave,
                b.ndiag
            ))));
        }
        let (lo, hi) = (row0 * nwave, (row0 + b.nspec) * nwave);
        arrays.flux[lo..hi].copy_from_slice(&b.flux);
        arrays.ivar[lo..hi].copy_from_slice(&b.ivar);
        arrays.chi2pix[lo..hi].copy_from_slice(&b.chi2pix);
        arrays.pixmask_fraction[lo..hi].copy_from_slice(&b.pixmask_fraction);
        arrays.rdiags[lo * ndiagonal..hi * ndiagonal].copy_from_slice(&b.rdiags);
        if let (Some((full, nrow, ncol)), Some(part)) = (model.as_mut(), &block.model) {
            part.add_to(full, *nrow, *ncol);
        }
        reports.extend(block.reports);
        npatch += block.npatch;
    }
    let mask = spectrum_mask(&arrays);
    Ok(Extraction {
        grid: grid.clone(),
        arrays,
        mask,
        reports,
        model: model.map(|(full, _, _)| full),
        npatch,
        times: StageTimes::default(),
    })
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

/// The padded wavelength grid of an extraction.
fn padded_fullwave(grid: &WavelengthGrid, params: &ExtractionParams) -> Vec<f64> {
    PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep).fullwave
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
    add_patch_model_in(model, ncol, (0, 0), spots, plan, arrays, pad);
}

/// [`add_patch_model`] into a box of the model image `width` columns wide whose first pixel
/// is CCD (row, column) `origin`; the box must hold every stamp of the patch's kept rows.
fn add_patch_model_in(
    model: &mut [f64],
    width: usize,
    origin: (usize, usize),
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
                let base = (row as usize - origin.0) * width + corner.xc as usize - origin.1;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_shares_cover_every_bundle_once() {
        for nbundle in [1, 2, 5, 20] {
            for count in 1..=7 {
                for contiguous in [false, true] {
                    let mut all: Vec<usize> = (0..count)
                        .flat_map(|i| bundle_share(nbundle, i, count, contiguous))
                        .collect();
                    all.sort_unstable();
                    assert_eq!(
                        all,
                        (0..nbundle).collect::<Vec<_>>(),
                        "{nbundle} bundles over {count} (contiguous {contiguous})"
                    );
                }
            }
        }
        assert_eq!(bundle_share(20, 1, 3, false), [1, 4, 7, 10, 13, 16, 19]);
        assert_eq!(bundle_share(20, 1, 3, true), [7, 8, 9, 10, 11, 12, 13]);
    }

    #[test]
    fn model_boxes_add_in_place() {
        let (nrow, ncol) = (4, 5);
        let mut model = vec![1.0; nrow * ncol];
        let part = ModelBox {
            row_min: 1,
            row_max: 3,
            col_min: 2,
            col_max: 4,
            values: vec![1.0, 2.0, 3.0, 4.0],
        };
        part.add_to(&mut model, nrow, ncol);
        assert_eq!(model[ncol + 2], 2.0);
        assert_eq!(model[ncol + 3], 3.0);
        assert_eq!(model[2 * ncol + 2], 4.0);
        assert_eq!(model[2 * ncol + 3], 5.0);
        assert_eq!(model.iter().sum::<f64>(), 20.0 + 10.0);
    }
}
