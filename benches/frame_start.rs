//! Criterion benchmarks of the host work at a GPU frame's start (docs/design.md §5.2), which
//! runs beside the spots kernel and gates the first batch: the pixel screen that fills the
//! upload buffer (one of its four parts of a full r CCD, ~4.2 M pixels, on one thread: the
//! per-pixel rule against `PixelLimits::screen_into`, and the same into f64 as the CPU's CCD
//! conversion), and the planning of a full r frame (every bundle's stamp corners, then its
//! patches' windows and bandwidths), on one thread.
//!
//! `cargo bench --bench frame_start` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use desi_extract::extract::PixelLimits;
use desi_extract::io::read_psf;
use desi_extract::patch::{plan::plan_bundle, ExtractionParams, PaddedGrid, WavelengthGrid};
use std::hint::black_box;
use std::path::Path;

const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

/// CCD rows and columns of the r camera.
const NROW: usize = 4128;
const NCOL: usize = 4114;

/// One upload part's pixels: mostly used, with masked, zero-IVAR and non-finite ones spread
/// through them (the screen's branches taken now and then, as on a real CCD).
fn pixels(n: usize) -> (Vec<f32>, Vec<f32>, Vec<i32>) {
    let image = (0..n)
        .map(|i| match i % 997 {
            0 => f32::NAN,
            _ => (i % 4099) as f32 * 0.37 - 20.0,
        })
        .collect();
    let ivar = (0..n)
        .map(|i| {
            if i % 211 == 0 {
                0.0
            } else {
                0.01 + (i % 13) as f32 * 1e-3
            }
        })
        .collect();
    let mask = (0..n).map(|i| if i % 331 == 0 { 2 } else { 0 }).collect();
    (image, ivar, mask)
}

fn screen(c: &mut Criterion) {
    let n = NROW * NCOL / 4;
    let (image, ivar, mask) = pixels(n);
    let limits = PixelLimits::default();
    let (mut v32, mut w32) = (vec![0f32; n], vec![0f32; n]);
    let (mut v64, mut w64) = (vec![0f64; n], vec![0f64; n]);
    let mut g = c.benchmark_group("screen_upload_part");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(20);
    g.bench_function("per_pixel_rule_f32", |b| {
        b.iter(|| {
            for i in 0..n {
                (v32[i], w32[i]) = limits.pixel(image[i], ivar[i], mask[i]);
            }
            black_box(&v32);
        })
    });
    g.bench_function("screen_into_f32", |b| {
        b.iter(|| {
            limits.screen_into(&image, &ivar, &mask, &mut v32, &mut w32);
            black_box(&v32);
        })
    });
    g.bench_function("screen_into_f64", |b| {
        b.iter(|| {
            limits.screen_into(&image, &ivar, &mask, &mut v64, &mut w64);
            black_box(&v64);
        })
    });
    g.finish();
}

fn plan(c: &mut Criterion) {
    let psf = read_psf(Path::new(PSF)).expect("bundled PSF");
    let params = ExtractionParams::default();
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).expect("r grid");
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let nbundle = params.nspec / params.bundlesize;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool");
    let corners: Vec<_> = (0..nbundle)
        .map(|b| {
            psf.corners(b * params.bundlesize, params.bundlesize, &padded.fullwave)
                .expect("corners")
        })
        .collect();
    let mut g = c.benchmark_group(format!("plan_full_r_frame_{nbundle}_bundles"));
    g.sample_size(10);
    g.bench_function("corners", |b| {
        b.iter(|| {
            pool.install(|| {
                for bundle in 0..nbundle {
                    black_box(
                        psf.corners(
                            bundle * params.bundlesize,
                            params.bundlesize,
                            &padded.fullwave,
                        )
                        .expect("corners"),
                    );
                }
            })
        })
    });
    g.bench_function("plan_bundle", |b| {
        b.iter(|| {
            pool.install(|| {
                for (bundle, corners) in corners.iter().enumerate() {
                    black_box(plan_bundle(bundle, corners, &params, grid.nwave(), NROW));
                }
            })
        })
    });
    g.finish();
}

criterion_group!(frame_start, screen, plan);
criterion_main!(frame_start);
