//! Spreading work over processes (MPI ranks) and GPUs: the process group ([`Comm`]), the
//! messages the ranks exchange ([`wire`]) and the bundle extraction on a GPU by runs of
//! consecutive bundles ([`extract_bundles_gpu`]).
//!
//! A frame over N ranks: every rank extracts its share of the bundles
//! ([`crate::extract::bundle_share`]) with [`crate::extract::extract_bundles`] (or
//! [`extract_bundles_gpu`]), the finished row blocks go to one rank, and
//! [`crate::extract::assemble_frame`] puts them together and computes the mask on the whole
//! frame, exactly as the single-process driver does: the output does not depend on N.

pub mod comm;
pub mod wire;

pub use comm::{Comm, Launch};

use crate::extract::{BundleBlock, BundleSet, ExtractError, ModelBox, Progress, StageTimes};
use crate::gpu::{extract_frame_gpu, GpuContext, GpuError};
use crate::io::PreprocImage;
use crate::patch::stitch::FrameArrays;
use crate::patch::{ExtractionParams, ParamsError, WavelengthGrid};
use crate::psf::GaussHermitePsf;
use crate::trace::Trace;

/// The GPU ordinal of a rank: its node-local rank modulo the visible GPUs (several ranks may
/// share a GPU).
///
/// # Errors
/// No CUDA driver or no visible GPU.
pub fn gpu_for_rank(local_rank: usize) -> Result<usize, GpuError> {
    let count = GpuContext::device_count()?;
    if count == 0 {
        return Err(GpuError::NoDriver("the driver sees no CUDA device".into()));
    }
    Ok(local_rank % count)
}

/// [`crate::extract::extract_bundles`] on a GPU: one [`extract_frame_gpu`] call per run of
/// consecutive bundles (use contiguous shares, see [`crate::extract::bundle_share`]), split
/// into per-bundle blocks. The model of a run travels with its run's first block.
///
/// # Errors
/// As [`extract_frame_gpu`], or a bundle index out of range.
#[allow(clippy::too_many_arguments)]
pub fn extract_bundles_gpu(
    gpu: &GpuContext,
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
    bundles: &[usize],
    want_model: bool,
    progress: Progress,
    trace: &Trace,
) -> Result<BundleSet, ExtractError> {
    let starts = params.bundle_starts();
    if let Some(&bad) = bundles.iter().find(|&&b| b >= starts.len()) {
        return Err(ExtractError::Params(ParamsError::Invalid(format!(
            "bundle {bad} requested but the frame has {} bundles",
            starts.len()
        ))));
    }
    let spec_max = params.specmin + params.nspec;
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for &b in bundles {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|&l| l + 1 == b) => run.push(b),
            _ => runs.push(vec![b]),
        }
    }
    let mut blocks = Vec::with_capacity(bundles.len());
    let mut times = StageTimes::default();
    for run in runs {
        let first = run[0];
        let specmin = starts[first];
        let last = run[run.len() - 1];
        let nspec = (starts[last] + params.bundlesize).min(spec_max) - specmin;
        let sub = ExtractionParams {
            specmin,
            nspec,
            ..params.clone()
        };
        let ex = extract_frame_gpu(gpu, psf, image, grid, &sub, want_model, progress, trace)?;
        times.spots += ex.times.spots;
        times.solve += ex.times.solve;
        times.finalize += ex.times.finalize;
        times.detail.extend(ex.times.detail.iter().cloned());
        let a = &ex.arrays;
        let (nwave, ndiagonal) = (a.nwave, 2 * a.ndiag + 1);
        let mut model = ex.model.as_ref().map(|m| model_box(m, image.ny, image.nx));
        for (i, &bundle) in run.iter().enumerate() {
            let row0 = starts[bundle] - specmin;
            let rows = params.bundlesize.min(spec_max - starts[bundle]);
            let (lo, hi) = (row0 * nwave, (row0 + rows) * nwave);
            let arrays = FrameArrays {
                specmin: starts[bundle],
                nspec: rows,
                nwave,
                ndiag: a.ndiag,
                flux: a.flux[lo..hi].to_vec(),
                ivar: a.ivar[lo..hi].to_vec(),
                rdiags: a.rdiags[lo * ndiagonal..hi * ndiagonal].to_vec(),
                chi2pix: a.chi2pix[lo..hi].to_vec(),
                pixmask_fraction: a.pixmask_fraction[lo..hi].to_vec(),
            };
            let reports = ex
                .reports
                .iter()
                .filter(|r| r.bundle == i)
                .map(|r| {
                    let mut r = r.clone();
                    r.bundle = bundle;
                    r
                })
                .collect();
            blocks.push(BundleBlock {
                bundle,
                arrays,
                reports,
                model: model.take(),
                npatch: if i == 0 { ex.npatch } else { 0 },
            });
        }
    }
    Ok(BundleSet { blocks, times })
}

/// The bounding box of the non-zero pixels of a full `(nrow, ncol)` model image.
fn model_box(model: &[f64], nrow: usize, ncol: usize) -> ModelBox {
    let (mut row_min, mut row_max, mut col_min, mut col_max) = (nrow, 0, ncol, 0);
    for (r, row) in model.chunks(ncol.max(1)).enumerate().take(nrow) {
        let Some(first) = row.iter().position(|&v| v != 0.0) else {
            continue;
        };
        let last = row.iter().rposition(|&v| v != 0.0).unwrap_or(first);
        row_min = row_min.min(r);
        row_max = r + 1;
        col_min = col_min.min(first);
        col_max = col_max.max(last + 1);
    }
    let (row_min, col_min) = (row_min.min(row_max), col_min.min(col_max));
    let mut values = Vec::with_capacity((row_max - row_min) * (col_max - col_min));
    for r in row_min..row_max {
        values.extend_from_slice(&model[r * ncol + col_min..r * ncol + col_max]);
    }
    ModelBox {
        row_min,
        row_max,
        col_min,
        col_max,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_box_keeps_every_nonzero_pixel() {
        let (nrow, ncol) = (5, 7);
        let mut model = vec![0.0; nrow * ncol];
        model[ncol + 2] = 1.0;
        model[3 * ncol + 5] = -2.0;
        let b = model_box(&model, nrow, ncol);
        assert_eq!((b.row_min, b.row_max, b.col_min, b.col_max), (1, 4, 2, 6));
        let mut back = vec![0.0; nrow * ncol];
        b.add_to(&mut back, nrow, ncol);
        assert_eq!(back, model);
        let empty = model_box(&vec![0.0; nrow * ncol], nrow, ncol);
        assert!(empty.values.is_empty());
    }
}
