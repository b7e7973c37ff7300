//! Bundles into frames: the finished row blocks of bundles (from any number of processes),
//! their model-image boxes, and the frame they assemble into.

use super::{ExtractError, Extraction, PatchRejection, PatchReport, StageTimes};
use crate::patch::stitch::{
    spectrum_mask_with, FrameArrays, FrameRows, KnownMedians, BAD2DFIT, COSMIC, NODATA,
};
use crate::patch::{ExtractionParams, MaskRule, ParamsError, PatchPlan, WavelengthGrid};
use crate::psf::SpotTable;
use rayon::prelude::*;
use std::ops::Range;

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
    /// Pixels the bundle's patches rejected as outliers (docs/algorithm.md §4.11).
    pub rejections: Vec<PatchRejection>,
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
    // Each block's rows of the frame: inside it, after the block before.
    let mut rows = Vec::with_capacity(blocks.len());
    for block in &blocks {
        let b = &block.arrays;
        let row0 = b.specmin.wrapping_sub(params.specmin);
        let after = rows.last().map_or(0, |r: &Range<usize>| r.end);
        if b.nwave != nwave
            || b.ndiag != ndiag
            || b.specmin < params.specmin
            || row0 + b.nspec > params.nspec
            || row0 < after
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
        rows.push(row0..row0 + b.nspec);
    }
    let mut arrays = FrameArrays::new(params.specmin, params.nspec, nwave, ndiag);
    // The blocks copied in parallel (~140 MB for a full frame, into fresh pages: one thread
    // took ~0.1 s of the exposure writer's time).
    let ndiagonal = 2 * ndiag + 1;
    let targets = pieces(&mut arrays.flux, &rows, nwave)
        .into_iter()
        .zip(pieces(&mut arrays.ivar, &rows, nwave))
        .zip(pieces(&mut arrays.chi2pix, &rows, nwave))
        .zip(pieces(&mut arrays.pixmask_fraction, &rows, nwave))
        .zip(pieces(&mut arrays.rdiags, &rows, nwave * ndiagonal));
    blocks.par_iter().zip(targets.collect::<Vec<_>>()).for_each(
        |(block, ((((flux, ivar), chi2pix), pixmask_fraction), rdiags))| {
            let b = &block.arrays;
            flux.copy_from_slice(&b.flux);
            ivar.copy_from_slice(&b.ivar);
            chi2pix.copy_from_slice(&b.chi2pix);
            pixmask_fraction.copy_from_slice(&b.pixmask_fraction);
            rdiags.copy_from_slice(&b.rdiags);
        },
    );
    let parts = blocks
        .into_iter()
        .map(|block| BundleOutput {
            reports: block.reports,
            rejections: block.rejections,
            model: block.model,
            npatch: block.npatch,
            nonfinite: Vec::new(),
            fiber_medians: None,
        })
        .collect();
    Ok(finish_frame(
        grid,
        arrays,
        parts,
        model_shape,
        params.mask_rule,
        RowsFinished::No,
    ))
}

/// Disjoint pieces of `data` (`per_row` values a row) at the rows `rows` (ascending, not
/// overlapping, inside `data`).
fn pieces<'a>(
    mut data: &'a mut [f64],
    rows: &[Range<usize>],
    per_row: usize,
) -> Vec<&'a mut [f64]> {
    let mut out = Vec::with_capacity(rows.len());
    let mut consumed = 0;
    for r in rows {
        let (_, rest) = std::mem::take(&mut data).split_at_mut(r.start * per_row - consumed);
        let (piece, rest) = rest.split_at_mut(r.len() * per_row);
        out.push(piece);
        data = rest;
        consumed = r.end * per_row;
    }
    out
}

/// What a bundle adds to its frame besides its rows.
#[derive(Clone, Debug, Default)]
pub(super) struct BundleOutput {
    /// Per-patch problems of the bundle.
    pub reports: Vec<PatchReport>,
    /// Pixels the bundle's patches rejected as outliers.
    pub rejections: Vec<PatchRejection>,
    /// The bundle's model image box, when requested.
    pub model: Option<ModelBox>,
    /// Patches of the bundle.
    pub npatch: usize,
    /// The bundle's bins zeroed as not finite (frame `row · nwave + bin`), when its rows were
    /// finished as soon as they were stitched ([`FrameRows::finish_bins`]); empty otherwise.
    pub nonfinite: Vec<usize>,
    /// The median chi2pix of each of the bundle's spectra ([`MaskRule::Main`]), when its rows
    /// were finished as soon as they were stitched.
    pub fiber_medians: Option<Vec<f64>>,
}

/// Whether the frame's rows went through [`FrameRows::finish_bins`] bundle by bundle (their
/// non-finite bins zeroed and listed in the [`BundleOutput`]s) or [`finish_frame`] zeroes them.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum RowsFinished {
    /// Every bundle's rows are finished; the outputs list their non-finite bins (and, for the
    /// MASK rule, each spectrum's chi2pix median); `wave_medians`: the per-wavelength chi2pix
    /// medians, when gathered as the rows were finished.
    Yes { wave_medians: Option<Vec<f64>> },
    /// The rows are per Angstrom; non-finite bins are still to be zeroed.
    No,
}

/// The finished frame from its finished rows (per Angstrom) and its bundles' outputs in bundle
/// order: non-finite bins zeroed (unless `finished` says the bundles did it), the mask on the
/// whole frame by `rule` plus the bits of [`flag_bins`], the model boxes summed in bundle order.
pub(super) fn finish_frame(
    grid: &WavelengthGrid,
    mut arrays: FrameArrays,
    parts: Vec<BundleOutput>,
    model_shape: Option<(usize, usize)>,
    rule: MaskRule,
    finished: RowsFinished,
) -> Extraction {
    let mut model = model_shape.map(|(nrow, ncol)| (vec![0.0; nrow * ncol], nrow, ncol));
    let mut reports = Vec::new();
    let mut rejections = Vec::new();
    let mut npatch = 0;
    let mut nonfinite_bins = Vec::new();
    // The bundles' per-fiber medians, when every bundle brought them.
    let mut fiber_medians = Some(Vec::with_capacity(arrays.nspec));
    for part in parts {
        fiber_medians = fiber_medians
            .zip(part.fiber_medians)
            .map(|(mut all, mine)| {
                all.extend(mine);
                all
            });
        rejections.extend(part.rejections);
        if let (Some((full, nrow, ncol)), Some(boxed)) = (model.as_mut(), &part.model) {
            boxed.add_to(full, *nrow, *ncol);
        }
        reports.extend(part.reports);
        nonfinite_bins.extend(part.nonfinite);
        npatch += part.npatch;
    }
    let wave_medians = match finished {
        RowsFinished::Yes { wave_medians } => {
            nonfinite_bins.sort_unstable();
            wave_medians
        }
        RowsFinished::No => {
            nonfinite_bins = arrays.zero_nonfinite();
            None
        }
    };
    let known = KnownMedians {
        fiber: fiber_medians,
        wave: wave_medians,
    };
    let mut mask = spectrum_mask_with(&arrays, rule, known);
    flag_bins(&arrays, &mut mask, &reports, &nonfinite_bins);
    flag_rejected(&arrays, &mut mask, &rejections);
    Extraction {
        grid: grid.clone(),
        arrays,
        mask,
        reports,
        rejections,
        nonfinite_bins,
        model: model.map(|(full, _, _)| full),
        npatch,
        times: StageTimes::default(),
    }
}

/// The MASK bits of bins without a trustworthy value (docs/algorithm.md §1.3): BAD2DFIT on the
/// bins of failed patches and on `nonfinite` bins, NODATA on the bins of patches off the CCD
/// and on any other bin with ivar 0 and no bit yet. Afterwards every bin with ivar 0 has a bit.
fn flag_bins(arrays: &FrameArrays, mask: &mut [u32], reports: &[PatchReport], nonfinite: &[usize]) {
    let nwave = arrays.nwave;
    for report in reports {
        let bit = if report.is_failed() {
            BAD2DFIT
        } else if report.is_off_ccd() {
            NODATA
        } else {
            continue;
        };
        let row0 = report.site.ispec.saturating_sub(arrays.specmin);
        let bins = report.site.iwave.min(nwave)..(report.site.iwave + report.site.nwave).min(nwave);
        for row in row0..(row0 + report.site.nspec).min(arrays.nspec) {
            for m in &mut mask[row * nwave + bins.start..row * nwave + bins.end] {
                *m |= bit;
            }
        }
    }
    for &i in nonfinite {
        mask[i] |= BAD2DFIT;
    }
    // Every element stored (no conditional store: AVX2's masked stores are slow on AMD cores,
    // 40 ms for a full frame), rows in parallel.
    mask.par_chunks_mut(nwave.max(1))
        .zip(arrays.ivar.par_chunks(nwave.max(1)))
        .for_each(|(mask, ivar)| {
            for (m, &iv) in mask.iter_mut().zip(ivar) {
                *m |= if iv == 0.0 && *m == 0 { NODATA } else { 0 };
            }
        });
}

/// desispec's specmask COSMIC ("Input pixels included a masked cosmic") on every core bin where
/// a patch rejected a pixel carrying a material part of the bin's PSF weight
/// ([`PatchRejection::bin_counts`]; docs/algorithm.md §4.11). The bins keep their ivar: the
/// re-solve without those pixels is a trustworthy value.
fn flag_rejected(arrays: &FrameArrays, mask: &mut [u32], rejections: &[PatchRejection]) {
    let nwave = arrays.nwave;
    for r in rejections {
        let row0 = r.site.ispec.wrapping_sub(arrays.specmin);
        for c in 0..r.site.nspec {
            let row = row0.wrapping_add(c);
            if row >= arrays.nspec {
                continue;
            }
            for j in 0..r.site.nwave {
                let bin = r.site.iwave + j;
                if bin < nwave
                    && r.bin_counts
                        .get(c * r.site.nwave + j)
                        .is_some_and(|&n| n > 0)
                {
                    mask[row * nwave + bin] |= COSMIC;
                }
            }
        }
    }
}

/// The model image of one bundle's patches (docs/algorithm.md §4.9) in the bounding box of its
/// stamps on a `(nrow, ncol)` CCD.
pub(super) fn bundle_model(
    (nrow, ncol): (usize, usize),
    spots: &SpotTable,
    plans: &[PatchPlan],
    rows: &FrameRows,
    pad: usize,
) -> ModelBox {
    let (mut row_min, mut row_max) = (nrow, 0);
    let (mut col_min, mut col_max) = (ncol, 0);
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
    let (row_max, col_max) = (row_max.min(nrow), col_max.min(ncol));
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
            rows,
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

/// Adds `A_core · flux_core` of a patch (the R-convolved flux per bin, CPU convention of
/// docs/algorithm.md §4.9), clipped to the patch's kept rows, into a box of the model image
/// `width` columns wide whose first pixel is CCD (row, column) `origin`; the box must hold every
/// stamp of the patch's kept rows.
fn add_patch_model_in(
    model: &mut [f64],
    width: usize,
    origin: (usize, usize),
    spots: &SpotTable,
    plan: &PatchPlan,
    rows: &FrameRows,
    pad: usize,
) {
    let Some(window) = plan.window else { return };
    let (ny, nx) = (spots.ny, spots.nx);
    for c in 0..plan.nspp {
        let ispec = plan.ispec + c;
        let s = ispec - spots.ispec_min;
        for j in 0..plan.keep {
            let out = plan.out_wave_min(pad) + j;
            let flux = rows.flux_at(ispec, out);
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

    /// A block of bundle `bundle` (3 fibers) whose first spectrum is `specmin`, with every value
    /// `value`.
    fn block(bundle: usize, specmin: usize, value: f64) -> BundleBlock {
        let mut arrays = FrameArrays::new(specmin, 3, 6, 1);
        for plane in [
            &mut arrays.flux,
            &mut arrays.ivar,
            &mut arrays.chi2pix,
            &mut arrays.pixmask_fraction,
            &mut arrays.rdiags,
        ] {
            plane.fill(value);
        }
        BundleBlock {
            bundle,
            arrays,
            reports: Vec::new(),
            rejections: Vec::new(),
            model: None,
            npatch: 1,
        }
    }

    fn two_bundles() -> (WavelengthGrid, ExtractionParams) {
        let params = ExtractionParams {
            nspec: 6,
            bundlesize: 3,
            nsubbundles: 1,
            ..ExtractionParams::default()
        };
        (WavelengthGrid::arange(6000.0, 6004.0, 0.8).unwrap(), params)
    }

    #[test]
    fn blocks_land_on_their_rows_in_every_plane() {
        let (grid, params) = two_bundles();
        let blocks = vec![block(1, 3, 0.25), block(0, 0, 0.5)];
        let ex = assemble_frame(&grid, &params, 1, blocks, None).unwrap();
        let a = &ex.arrays;
        for (plane, per_row) in [
            (&a.flux, 6),
            (&a.ivar, 6),
            (&a.chi2pix, 6),
            (&a.pixmask_fraction, 6),
            (&a.rdiags, 18),
        ] {
            assert_eq!(plane.len(), 6 * per_row);
            assert!(plane[..3 * per_row].iter().all(|&v| v == 0.5));
            assert!(plane[3 * per_row..].iter().all(|&v| v == 0.25));
        }
    }

    #[test]
    fn overlapping_blocks_are_refused() {
        let (grid, params) = two_bundles();
        // Bundle 1's block says it starts at spectrum 2, inside bundle 0's rows.
        let blocks = vec![block(0, 0, 0.5), block(1, 2, 0.25)];
        match assemble_frame(&grid, &params, 1, blocks, None) {
            Err(e) => assert!(e.to_string().contains("bundle 1"), "{e}"),
            Ok(_) => panic!("overlapping blocks were assembled"),
        }
    }

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
