//! Criterion benchmarks of the outlier rejection's backend steps (docs/algorithm.md §4.11) on
//! production shapes: one patch (n = 518, ~6,800 pixels) of a frame with a cosmic track along
//! a trace: the CPU backend's test (`outliers::detect`: the model and χ²_pix of every tested
//! row, then the row masks), the per-row mask alone (`row_outliers`, the body of the GPU's
//! `reject_scan` kernel, over every window row), the re-solve without the track's pixels
//! (`resolve_patch`) and the per-bin counts (`bin_counts`, the body of `reject_bins`).
//!
//! `cargo bench --bench reject` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, Criterion};
use desi_device::patch::pixel_chi2_row;
use desi_device::patch::reject::{hit_words, row_outliers, CoreUnknowns};
use desi_extract::extract::CcdData;
use desi_extract::io::read_psf;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PaddedGrid, WavelengthGrid};
use desi_extract::sim::cosmics::deposit;
use desi_extract::sim::{builtin_spectra, simulated_preproc, Track};
use desi_extract::solve::cpu::solve_patch_with_xflux;
use desi_extract::solve::outliers::{bin_counts, detect, resolve_patch};
use desi_extract::solve::BundleInputs;
use std::hint::black_box;
use std::path::Path;

const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

fn benches(c: &mut Criterion) {
    let psf = read_psf(Path::new(PSF)).expect("bundled PSF");
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap();
    let truth = builtin_spectra(0, 25, &grid.wave);
    let mut preproc = simulated_preproc(&psf, &truth, 3.0, 1, false, "r0").expect("simulate");
    let params = ExtractionParams {
        nspec: 25,
        ..ExtractionParams::default()
    };
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let spots = psf.spots(0, 25, &padded.fullwave).unwrap();
    let plans = plan_bundle(0, &spots, &params, grid.nwave(), preproc.ny);
    let plan = plans.iter().find(|p| p.nspecpad == 7).unwrap().clone();
    let w = plan.window.unwrap();
    // A track along the first core fiber through the middle of the window.
    let s = plan.ispec - plan.s0;
    let view = plan.stamp_view(&spots, params.pad());
    let centre = |k: usize| {
        let c = view.corner(s, k);
        (
            c.yc as f64 + view.ny as f64 / 2.0,
            c.xc as f64 + view.nx as f64 / 2.0,
        )
    };
    let pad = params.pad();
    let ((r0, c0), (r1, c1)) = (centre(pad + 10), centre(pad + 30));
    for h in deposit(
        &[Track::straight(r0, c0, r1, c1, 600.0)],
        preproc.ny,
        preproc.nx,
    ) {
        preproc.image[h.pixel] += h.electrons as f32;
    }
    let ccd = CcdData::from_preproc(&preproc);
    let inputs = BundleInputs {
        spots: &spots,
        plans: &plans,
        ccd: ccd.view(),
        params: &params,
        ndiag: psf.hsizey,
    };
    let threshold = 36.0;
    let (_, xflux) = solve_patch_with_xflux(&inputs, &plan, true);
    let xflux = xflux.expect("the patch solves");
    let outliers = detect(&inputs, &plan, &xflux, threshold).unwrap();
    assert!(!outliers.hits.is_empty(), "the track is found");
    let width = (w.col_max - w.col_min) as usize;
    let height = (w.row_max - w.row_min) as usize;
    let mut mask: Vec<u64> = outliers
        .hits
        .iter()
        .map(|&h| {
            let (r, c) = (h as usize / width, h as usize % width);
            ((w.row_min as usize + r) * ccd.ncol + w.col_min as usize + c) as u64
        })
        .collect();
    mask.sort_unstable();
    let shape = plan.shape(params.nwavetot()).unwrap();
    // The χ²_pix window as `pixel_rows` leaves it for `reject_scan`.
    let mut window = vec![0.0; width * height];
    for (r, row) in window.chunks_mut(width).enumerate() {
        pixel_chi2_row(
            &view,
            &ccd.view(),
            &shape,
            w.col_min,
            w.col_max,
            &xflux,
            params.psferr,
            r,
            row,
        );
    }
    let core = CoreUnknowns {
        s_core: s,
        nspp: plan.nspp,
        pad,
        keep: plan.keep,
    };
    let words = hit_words(width);

    let mut g = c.benchmark_group("reject one patch (n = 518)");
    g.bench_function(
        "detect (CPU backend: model, chi2pix rows, row masks)",
        |b| b.iter(|| detect(&inputs, &plan, black_box(&xflux), threshold)),
    );
    g.bench_function("row_outliers over the window (reject_scan's body)", |b| {
        let mut hits = vec![0u32; words];
        b.iter(|| {
            let mut weighted = 0;
            for (r, row) in window.chunks(width).enumerate() {
                let pix = (w.row_min as usize + r) * ccd.ncol + w.col_min as usize;
                weighted += row_outliers(
                    &view,
                    &shape,
                    w.col_min,
                    w.col_max,
                    core,
                    r,
                    black_box(row),
                    &ccd.weight[pix..pix + width],
                    threshold,
                    &mut hits,
                )
                .unwrap();
            }
            weighted
        })
    });
    g.bench_function("resolve_patch without the track", |b| {
        b.iter(|| resolve_patch(&inputs, &plan, black_box(&mask), threshold))
    });
    g.bench_function("bin_counts (reject_bins' body)", |b| {
        b.iter(|| bin_counts(&inputs, &plan, black_box(&mask)))
    });
    g.finish();
}

criterion_group!(reject, benches);
criterion_main!(reject);
