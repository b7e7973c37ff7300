//! Criterion benchmarks of the host work that follows a GPU frame's last batch (docs/design.md
//! §5.2): stitching a full r frame's patch results (500 fibers, 2,326 bins, ~4,700 patches of
//! the bundled PSF's real plans) into the frame arrays, bundles in parallel as the pipeline does,
//! into freshly allocated arrays (their pages faulted in by the stitch) and into arrays already
//! touched; and each step of `finish frame`.
//!
//! `cargo bench --bench host_tail` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use desi_extract::io::read_psf;
use desi_extract::patch::stitch::{
    row_medians, spectrum_mask, spectrum_mask_with, FrameArrays, FrameRows, KnownMedians,
};
use desi_extract::patch::wave_medians::SortedColumns;
use desi_extract::patch::{plan::plan_bundle, ExtractionParams, MaskRule, PaddedGrid};
use desi_extract::patch::{PatchPlan, WavelengthGrid};
use desi_extract::solve::PatchResult;
use rayon::prelude::*;
use std::hint::black_box;
use std::path::Path;

const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

/// CCD rows of the r camera.
const NROW: usize = 4128;

/// Results with distinct, plausible values (flux ~100, ivar ~0.01, a few masked fractions).
fn fake_result(plan: &PatchPlan, ndiag: usize, seed: usize) -> PatchResult {
    let bins = plan.nspp * plan.keep;
    let value = |i: usize, scale: f64| scale * (1.0 + ((i * 7 + seed * 13) % 101) as f64 / 101.0);
    PatchResult {
        flux: (0..bins).map(|i| value(i, 100.0)).collect(),
        ivar: (0..bins).map(|i| value(i, 0.01)).collect(),
        rdiags: (0..bins * (2 * ndiag + 1))
            .map(|i| value(i, 0.05))
            .collect(),
        chi2pix: (0..bins).map(|i| value(i, 1.0)).collect(),
        pixmask_fraction: (0..bins)
            .map(|i| {
                if (i + seed).is_multiple_of(97) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect(),
        outliers: None,
        issue: None,
    }
}

/// Every patch of `bundles` inserted into `arrays`, bundles in parallel.
fn stitch(
    arrays: &mut FrameArrays,
    bundles: &[Vec<(PatchPlan, PatchResult)>],
    params: &ExtractionParams,
) {
    let pad = params.pad();
    arrays
        .row_blocks_mut(params.bundlesize)
        .into_par_iter()
        .zip(bundles)
        .for_each(|(mut rows, patches)| {
            for (plan, result) in patches {
                rows.insert(plan, result, pad);
            }
        });
}

/// The last `nlast` bundles of the frame (a GPU frame's last run) inserted into `arrays`:
/// one task per bundle, or with `by_subbundle` one per sub-bundle's rows
/// (`FrameRows::split_rows`, as the pipeline stitches).
fn stitch_last(
    arrays: &mut FrameArrays,
    bundles: &[Vec<(PatchPlan, PatchResult)>],
    params: &ExtractionParams,
    nlast: usize,
    by_subbundle: bool,
) {
    let pad = params.pad();
    let blocks = arrays.row_blocks_mut(params.bundlesize);
    let skip = blocks.len().saturating_sub(nlast);
    let mut tasks: Vec<(FrameRows, &[(PatchPlan, PatchResult)])> = Vec::new();
    for (rows, patches) in blocks.into_iter().zip(bundles).skip(skip) {
        if !by_subbundle {
            tasks.push((rows, patches));
            continue;
        }
        tasks.extend(rows.split_among(patches, |(plan, _)| (plan.ispec, plan.nspp)));
    }
    tasks.into_par_iter().for_each(|(mut rows, patches)| {
        for (plan, result) in patches {
            rows.insert(plan, result, pad);
        }
    });
}

fn benches(c: &mut Criterion) {
    let psf = read_psf(Path::new(PSF)).expect("bundled PSF");
    let params = ExtractionParams::default();
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).expect("r grid");
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let ndiag = psf.hsizey;
    let nbundle = params.nspec / params.bundlesize;
    let bundles: Vec<Vec<(PatchPlan, PatchResult)>> = (0..nbundle)
        .map(|b| {
            let corners = psf
                .corners(b * params.bundlesize, params.bundlesize, &padded.fullwave)
                .expect("corners");
            plan_bundle(b, &corners, &params, grid.nwave(), NROW)
                .into_iter()
                .enumerate()
                .map(|(i, plan)| {
                    let result = fake_result(&plan, ndiag, b * 1000 + i);
                    (plan, result)
                })
                .collect()
        })
        .collect();
    let npatch: usize = bundles.iter().map(Vec::len).sum();
    let (nspec, nwave) = (params.nspec, grid.nwave());
    let new_arrays = || FrameArrays::new(0, nspec, nwave, ndiag);
    let mut full = new_arrays();
    stitch(&mut full, &bundles, &params);
    let dwave = grid.bin_widths();

    let mut g = c.benchmark_group(format!("host_tail_{nspec}x{nwave}_{npatch}_patches"));
    g.sample_size(20);
    g.bench_function("stitch_into_fresh_arrays", |b| {
        b.iter_batched(
            || (),
            |()| {
                let mut arrays = new_arrays();
                stitch(&mut arrays, black_box(&bundles), &params);
                arrays
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("stitch_into_touched_arrays", |b| {
        let mut arrays = full.clone();
        b.iter(|| stitch(&mut arrays, black_box(&bundles), &params))
    });
    // A frame's last run (DESI_GPU_TAIL_PERCENT 12: ~3 bundles) stitched by bundle and by
    // sub-bundle.
    for by_subbundle in [false, true] {
        let name = if by_subbundle {
            "stitch_last_3_bundles_by_subbundle"
        } else {
            "stitch_last_3_bundles_by_bundle"
        };
        g.bench_function(name, |b| {
            let mut arrays = full.clone();
            b.iter(|| stitch_last(&mut arrays, black_box(&bundles), &params, 3, by_subbundle))
        });
    }
    g.bench_function("zero_fully_masked", |b| {
        b.iter_batched(
            || full.clone(),
            |mut a| a.zero_fully_masked(),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("to_per_angstrom", |b| {
        b.iter_batched(
            || full.clone(),
            |mut a| a.to_per_angstrom(&dwave),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("zero_nonfinite", |b| {
        b.iter_batched(
            || full.clone(),
            |mut a| a.zero_nonfinite(),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("spectrum_mask_main", |b| {
        b.iter(|| spectrum_mask(black_box(&full), MaskRule::Main))
    });
    // What is left for `finish frame` once the bundles brought their per-fiber medians.
    let medians = row_medians(&full.chi2pix, full.nwave);
    g.bench_function("spectrum_mask_main_fiber_medians_known", |b| {
        b.iter(|| {
            let known = KnownMedians {
                fiber: Some(medians.clone()),
                wave: None,
            };
            spectrum_mask_with(black_box(&full), MaskRule::Main, known)
        })
    });
    // And once the per-wavelength medians came from the sorted columns: the mask loop alone.
    let mut columns = SortedColumns::new(0, nspec, nwave);
    let mut scratch = full.clone();
    columns.absorb(&scratch.row_blocks_mut(params.bundlesize));
    let wave_medians = columns.medians().expect("every row absorbed");
    g.bench_function("spectrum_mask_main_medians_known", |b| {
        b.iter(|| {
            let known = KnownMedians {
                fiber: Some(medians.clone()),
                wave: Some(wave_medians.clone()),
            };
            spectrum_mask_with(black_box(&full), MaskRule::Main, known)
        })
    });
    // The per-wavelength medians at the frame's end: the last run's 3 bundles sorted into the
    // columns of the 17 before, then the medians read off.
    let last_run = nbundle - 3;
    let mut before = SortedColumns::new(0, nspec, nwave);
    before.absorb(&scratch.row_blocks_mut(params.bundlesize)[..last_run]);
    g.bench_function("wave_medians_last_3_bundles_sorted_in", |b| {
        b.iter_batched(
            || before.clone(),
            |mut columns| {
                let blocks = scratch.row_blocks_mut(params.bundlesize);
                columns.absorb(black_box(&blocks[last_run..]));
                columns.medians()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(host_tail, benches);
criterion_main!(host_tail);
