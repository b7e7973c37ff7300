//! Criterion benchmarks of the CPU path on production shapes: one patch (n = 518, ~6,800
//! pixels) stage by stage, and one bundle (25 fibers x 251 bins, 30 patches) end to end in memory.
//!
//! `cargo bench --bench patch` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, Criterion};
use desi_device::linalg::{banded, banded_cpu, jacobi, tridiagonal};
use desi_device::patch::{
    assemble_normal_equations, assemble_unknown, core_pixel_sums, patch_bandwidth, pixel_chi2_row,
    pixel_statistics, regularize, CoreRange,
};
use desi_device::psf::spot::spot_corner;
use desi_device::team::Shared;
use desi_device::Status;
use desi_extract::extract::{extract_frame, CcdData};
use desi_extract::io::read_psf;
use desi_extract::job::FrameJob;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PaddedGrid, WavelengthGrid};
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::solve::cpu::{
    inverse_sqrt_block, inverse_sqrt_block_work_len, inverse_sqrt_blocks,
    inverse_sqrt_blocks_work_len, solve_patch, solve_patch_with_workspace, PatchWorkspace,
};
use desi_extract::solve::{BundleInputs, CpuBackend};
use desi_extract::trace::Trace;
use std::hint::black_box;
use std::path::Path;

const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

fn benches(c: &mut Criterion) {
    let psf = read_psf(Path::new(PSF)).expect("bundled PSF");
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap();
    let truth = builtin_spectra(0, 25, &grid.wave);
    let preproc = simulated_preproc(&psf, &truth, 3.0, 1, false, "r0").expect("simulate");
    let ccd = CcdData::from_preproc(&preproc);
    let params = ExtractionParams {
        nspec: 25,
        ..ExtractionParams::default()
    };
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let spots = psf.spots(0, 25, &padded.fullwave).unwrap();
    let plans = plan_bundle(0, &spots, &params, grid.nwave(), ccd.nrow);
    let plan = plans.iter().find(|p| p.nspecpad == 7).unwrap().clone();
    let window = plan.window.unwrap();
    let inputs = BundleInputs {
        spots: &spots,
        plans: &plans,
        ccd: ccd.view(),
        params: &params,
        ndiag: psf.hsizey,
    };
    let nwavetot = params.nwavetot();
    let view = plan.stamp_view(&spots, params.pad());
    let shape = plan.shape(nwavetot).expect("the patch is on the CCD");
    let n = shape.nunknown();
    let kd = patch_bandwidth(&view, &shape);
    let mut band = vec![0.0; n * (kd + 1)];
    let mut rhs = vec![0.0; n];
    let mut fw = vec![0.0; n];
    assemble_normal_equations(&view, &inputs.ccd, &shape, kd, &mut band, &mut rhs, &mut fw);
    regularize(&mut band, n, kd, &fw, 0.0);
    let unfactored = band.clone();
    let mut factored = band.clone();
    banded::band_factor(&mut factored, n, kd);
    let mut cov = vec![0.0; n * nwavetot];
    let mut work = vec![0.0; banded::band_covariance_blocks_work_len(n, kd, plan.nspecpad)];
    banded::band_covariance_blocks(&factored, n, kd, plan.nspecpad, &mut cov, &mut work);
    let mut xflux = rhs.clone();
    banded::band_solve(&factored, n, kd, &mut xflux);

    let mut g = c.benchmark_group(format!("patch_n{n}_kd{kd}_npix{}", window.npix()));
    // The bundle's spots: 25 fibers x the padded grid (325 wavelengths for 6000-6200 A).
    g.bench_function(format!("spots_bundle_25x{}", padded.fullwave.len()), |b| {
        b.iter(|| psf.spots(0, 25, black_box(&padded.fullwave)).unwrap())
    });
    // A bundle's corners on the full r grid (the planning's share of the spot code, once per
    // bundle and frame): psf.corners (a vector of wavelengths at a time) against spot_corner
    // per spot.
    let full = PaddedGrid::new(
        WavelengthGrid::arange(5760.0, 7620.0, 0.8).unwrap(),
        params.pad(),
        params.nwavestep,
    );
    let flat = psf.flatten();
    let tables = psf.tables(&flat);
    g.bench_function(format!("corners_bundle_25x{}", full.fullwave.len()), |b| {
        b.iter(|| psf.corners(0, 25, black_box(&full.fullwave)).unwrap())
    });
    g.bench_function(
        format!("corners_bundle_25x{}_per_spot", full.fullwave.len()),
        |b| {
            b.iter(|| {
                let mut corners = Vec::with_capacity(25 * full.fullwave.len());
                for ispec in 0..25 {
                    for &wave in black_box(&full.fullwave) {
                        corners.push(spot_corner(&tables, ispec, wave).unwrap());
                    }
                }
                corners
            })
        },
    );
    g.bench_function("bandwidth", |b| {
        b.iter(|| patch_bandwidth(black_box(&view), &shape))
    });
    g.bench_function("assemble", |b| {
        b.iter(|| {
            assemble_normal_equations(&view, &inputs.ccd, &shape, kd, &mut band, &mut rhs, &mut fw)
        })
    });
    // The one-thread-per-unknown body the GPU's `assemble` kernel runs, over every unknown
    // (the CPU's assembly before `patch::assemble_cpu`).
    g.bench_function("assemble_per_unknown", |b| {
        b.iter(|| {
            for q1 in 0..n {
                assemble_unknown(
                    &view,
                    &inputs.ccd,
                    &shape,
                    kd,
                    q1,
                    Shared::new(&mut band),
                    Shared::new(&mut rhs),
                    Shared::new(&mut fw),
                );
            }
        })
    });
    g.bench_function("band_factor", |b| {
        b.iter(|| {
            band.copy_from_slice(&unfactored);
            banded::band_factor(&mut band, n, kd)
        })
    });
    let mut factor_work = vec![0.0; banded_cpu::band_factor_work_len(kd)];
    g.bench_function("band_factor_blocked", |b| {
        b.iter(|| {
            band.copy_from_slice(&unfactored);
            banded_cpu::band_factor(&mut band, n, kd, &mut factor_work)
        })
    });
    g.bench_function("band_solve", |b| {
        b.iter(|| {
            let mut x = rhs.clone();
            banded::band_solve(&factored, n, kd, &mut x)
        })
    });
    g.bench_function("covariance_blocks", |b| {
        b.iter(|| {
            banded::band_covariance_blocks(&factored, n, kd, plan.nspecpad, &mut cov, &mut work)
        })
    });
    let mut q = vec![0.0; nwavetot * nwavetot];
    let mut eig_work = vec![0.0; jacobi::inverse_sqrt_work_len(nwavetot)];
    g.bench_function("inverse_sqrt_74_one_block", |b| {
        b.iter(|| {
            jacobi::inverse_sqrt(&cov[..nwavetot * nwavetot], nwavetot, &mut q, &mut eig_work)
        })
    });
    let mut eigh_work = vec![0.0; tridiagonal::inverse_sqrt_eigh_work_len(nwavetot)];
    g.bench_function("inverse_sqrt_eigh_74_one_block", |b| {
        b.iter(|| {
            tridiagonal::inverse_sqrt_eigh(
                &cov[..nwavetot * nwavetot],
                nwavetot,
                &mut q,
                &mut eigh_work,
            )
        })
    });
    let s_core = plan.ispec - plan.s0;
    let mut core_cov = vec![0.0; plan.nspp * nwavetot * nwavetot];
    g.bench_function("covariance_block_range_core", |b| {
        b.iter(|| {
            banded::band_covariance_block_range(
                &factored,
                n,
                kd,
                plan.nspecpad,
                s_core,
                &mut core_cov,
                &mut work,
            )
        })
    });
    // The CPU backend's C_bb^(-1/2) (Householder + QL, Jacobi above QL_MAX_CONDITION) of the
    // patch's core blocks, as solve_patch_full calls it: one iteration = all core blocks.
    banded::band_covariance_block_range(
        &factored,
        n,
        kd,
        plan.nspecpad,
        s_core,
        &mut core_cov,
        &mut work,
    );
    let mut block_work = vec![0.0; inverse_sqrt_block_work_len(nwavetot)];
    g.bench_function(format!("inverse_sqrt_block_74_core_x{}", plan.nspp), |b| {
        b.iter(|| {
            for block in core_cov.chunks_exact(nwavetot * nwavetot) {
                black_box(inverse_sqrt_block(block, nwavetot, &mut q, &mut block_work));
            }
        })
    });
    // The same blocks as solve_patch computes them: one batch, their QL iterations interleaved
    // (bitwise the results above).
    let mut core_q = vec![0.0; core_cov.len()];
    let mut statuses = vec![Status::Ok; plan.nspp];
    let mut blocks_work = vec![0.0; inverse_sqrt_blocks_work_len(nwavetot, plan.nspp)];
    g.bench_function(format!("inverse_sqrt_blocks_74_core_x{}", plan.nspp), |b| {
        b.iter(|| {
            black_box(inverse_sqrt_blocks(
                &core_cov,
                nwavetot,
                &mut core_q,
                &mut statuses,
                &mut blocks_work,
            ))
        })
    });
    let mut cpu_work =
        vec![0.0; banded_cpu::band_covariance_block_range_work_len(n, kd, plan.nspecpad)];
    g.bench_function("covariance_block_range_core_tiled", |b| {
        b.iter(|| {
            banded_cpu::band_covariance_block_range(
                &factored,
                n,
                kd,
                plan.nspecpad,
                s_core,
                &mut core_cov,
                &mut cpu_work,
            )
        })
    });
    let mut pixels = vec![0.0; window.npix()];
    let mut chi = vec![0.0; plan.nspp * params.nwavestep];
    let mut pm = vec![0.0; plan.nspp * params.nwavestep];
    let core = CoreRange {
        s_min: plan.ispec - plan.s0,
        s_max: plan.ispec - plan.s0 + plan.nspp,
        k_min: params.pad(),
        k_max: params.pad() + params.nwavestep,
    };
    g.bench_function("pixel_statistics", |b| {
        b.iter(|| {
            pixel_statistics(
                &view,
                &inputs.ccd,
                &shape,
                window.col_min,
                window.col_max,
                &xflux,
                params.psferr,
                core,
                &mut pixels,
                &mut chi,
                &mut pm,
                params.nwavestep,
            )
        })
    });
    // The row and core bodies of the GPU's one-thread kernels over the whole patch (the CPU's
    // pixel statistics before the model was built stamp by stamp).
    let width = (window.col_max - window.col_min) as usize;
    g.bench_function("pixel_statistics_per_row", |b| {
        b.iter(|| {
            for (r, row) in pixels.chunks_exact_mut(width).enumerate() {
                pixel_chi2_row(
                    &view,
                    &inputs.ccd,
                    &shape,
                    window.col_min,
                    window.col_max,
                    &xflux,
                    params.psferr,
                    r,
                    row,
                );
            }
            for s in core.s_min..core.s_max {
                for k in core.k_min..core.k_max {
                    let out = (s - core.s_min) * params.nwavestep + (k - core.k_min);
                    (chi[out], pm[out]) = core_pixel_sums(
                        &view,
                        &inputs.ccd,
                        &shape,
                        window.col_min,
                        window.col_max,
                        &pixels,
                        s,
                        k,
                    );
                }
            }
        })
    });
    g.bench_function("solve_patch_total", |b| {
        b.iter(|| solve_patch(&inputs, black_box(&plan)))
    });
    // The same solve with a fresh workspace every time (every buffer allocated and its pages
    // touched for the first time): what the per-thread workspace of solve_patch saves.
    g.bench_function("solve_patch_fresh_workspace", |b| {
        b.iter(|| {
            let mut ws = PatchWorkspace::default();
            solve_patch_with_workspace(&inputs, black_box(&plan), false, &mut ws)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("bundle");
    g.sample_size(10);
    g.bench_function("extract_25x251_in_memory", |b| {
        b.iter(|| {
            let job = FrameJob::new(&psf, &preproc, &grid, &params).unwrap();
            extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(patch, benches);
criterion_main!(patch);
