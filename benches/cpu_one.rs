//! Criterion benchmarks of the one-thread CPU path's non-solve stages (issue #15 item 3): the
//! spots of one bundle (25 fibers x 325 padded wavelengths) on one thread, their pixel-edge
//! step (`pixel_integrated_gh`, whose Gaussians run as one vectorized `exp_in_place` pass on
//! the host) against the scalar `exp`, and the preproc read of one bundle's CCD window
//! (`read_window`, the CPU CLI's read) against its whole rows (`read_rows`).
//!
//! `cargo bench --bench cpu_one` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, Criterion};
use desi_device::math::{exp, exp_in_place};
use desi_device::psf::spot::pixel_integrated_gh;
use desi_extract::extract::{ccd_cols, ccd_rows};
use desi_extract::io::{read_psf, write_preproc, PreprocReader};
use desi_extract::patch::{ExtractionParams, PaddedGrid, WavelengthGrid};
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use std::hint::black_box;
use std::path::Path;

const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

fn benches(c: &mut Criterion) {
    let psf = read_psf(Path::new(PSF)).expect("bundled PSF");
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).expect("grid");
    let params = ExtractionParams {
        nspec: 25,
        ..ExtractionParams::default()
    };
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool");
    let mut g = c.benchmark_group("cpu_one");
    g.bench_function("spots_bundle_25x325_one_thread", |b| {
        b.iter(|| {
            one.install(|| {
                psf.spots(0, 25, black_box(&padded.fullwave))
                    .expect("spots")
            })
        })
    });
    // One spot's x (17 columns) and y (11 rows) bases at GHDEG 6, over a spread of offsets and
    // widths.
    let cases: Vec<(f64, f64)> = (0..64)
        .map(|i| ((i % 10) as f64 / 10.0 - 0.5, 0.9 + (i % 7) as f64 / 10.0))
        .collect();
    let (mut gx, mut gy) = (vec![0.0; 7 * 17], vec![0.0; 7 * 11]);
    g.bench_function("pixel_integrated_gh_x_and_y_x64", |b| {
        b.iter(|| {
            for &(delta, sigma) in &cases {
                pixel_integrated_gh(delta, sigma, 8, 6, &mut gx).expect("x basis");
                pixel_integrated_gh(-delta, sigma * 1.1, 5, 6, &mut gy).expect("y basis");
                black_box((&gx, &gy));
            }
        })
    });
    // The Gaussians of 18 pixel edges: the vectorized pass against exp one by one.
    let args: Vec<f64> = (0..18)
        .map(|m| -0.5 * ((m as f64 - 8.7) / 1.1).powi(2))
        .collect();
    let mut buf = args.clone();
    g.bench_function("exp_18_edges_scalar", |b| {
        b.iter(|| {
            for (v, &x) in buf.iter_mut().zip(black_box(&args)) {
                *v = exp(x);
            }
            black_box(&buf);
        })
    });
    g.bench_function("exp_18_edges_in_place", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(&args));
            exp_in_place(&mut buf);
            black_box(&buf);
        })
    });
    // The preproc read of one bundle at 6000-6200 A: its CCD window against its whole rows.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("preproc-r0-00000001.fits");
    let truth = builtin_spectra(0, 25, &grid.wave);
    let mut image = simulated_preproc(&psf, &truth, 3.0, 1, false, "r0").expect("simulate");
    image.path = path.clone();
    write_preproc(&path, &image).expect("write preproc");
    let (rows, cols) = (
        ccd_rows(&psf, &params, &grid),
        ccd_cols(&psf, &params, &grid),
    );
    g.bench_function("read_preproc_bundle_rows", |b| {
        b.iter(|| {
            PreprocReader::open(&path)
                .expect("open")
                .read_rows(rows.clone())
                .expect("read rows")
        })
    });
    g.bench_function("read_preproc_bundle_window", |b| {
        b.iter(|| {
            PreprocReader::open(&path)
                .expect("open")
                .read_window(rows.clone(), cols.clone())
                .expect("read window")
        })
    });
    g.finish();
}

criterion_group!(cpu_one, benches);
criterion_main!(cpu_one);
