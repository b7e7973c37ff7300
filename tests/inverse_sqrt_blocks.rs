//! The CPU backend's `C_bb^(-1/2)` (`solve::cpu::inverse_sqrt_block`: Householder + QL in
//! device/src/linalg/tridiagonal.rs, one-sided Jacobi above `QL_MAX_CONDITION`) on real
//! covariance blocks of the bundled PSF, against the float64 two-sided Jacobi reference
//! (`reference::jacobi_eigh`), relative to `max|Q|`: the core blocks of every third patch of
//! bundle 0 over the r band, as extracted, and the same patches with three CCD rows of their
//! window masked (the bins there keep only the PSF wings: condition numbers up to ~1e6, which
//! take the Jacobi route). Householder + QL has the error `~ε·κ` of any method with absolute
//! eigenvalue accuracy, so its blocks are held to 1e-12 up to `κ = 5e3` and to `2e-12` (measured
//! 1.5e-12, ≈ 7ε·κ) up to `QL_MAX_CONDITION = 1e4`; Jacobi's to 1e-12. `--nocapture` prints the
//! worst per regime.

mod common;

use common::psf;
use desi_device::linalg::banded;
use desi_device::patch::{assemble_normal_equations, regularize};
use desi_device::reference::jacobi_eigh::jacobi_eigh;
use desi_device::Status;
use desi_extract::extract::CcdData;
use desi_extract::job::FrameJob;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PatchPlan, WavelengthGrid};
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::solve::cpu::{inverse_sqrt_block, inverse_sqrt_block_work_len, QL_MAX_CONDITION};
use desi_extract::solve::BundleInputs;

/// Covariance blocks `(nspp, n, n)` of the core spectra of `plan` (as `solve_patch_full`).
fn core_blocks(inputs: &BundleInputs, plan: &PatchPlan) -> Option<Vec<f64>> {
    let params = inputs.params;
    let nwavetot = params.nwavetot();
    let shape = plan.shape(nwavetot)?;
    let view = plan.stamp_view(inputs.spots, params.pad());
    let n = shape.nunknown();
    let kd = plan.kd;
    let mut band = vec![0.0; n * (kd + 1)];
    let mut rhs = vec![0.0; n];
    let mut fw = vec![0.0; n];
    let st =
        assemble_normal_equations(&view, &inputs.ccd, &shape, kd, &mut band, &mut rhs, &mut fw);
    assert_eq!(st, Status::Ok);
    regularize(&mut band, n, kd, &fw, params.regularize);
    if banded::band_factor(&mut band, n, kd) != Status::Ok {
        return None;
    }
    let mut cov = vec![0.0; plan.nspp * nwavetot * nwavetot];
    let mut work = vec![0.0; banded::band_covariance_blocks_work_len(n, kd, plan.nspecpad)];
    let s_core = plan.ispec - plan.s0;
    let st = banded::band_covariance_block_range(
        &band,
        n,
        kd,
        plan.nspecpad,
        s_core,
        &mut cov,
        &mut work,
    );
    assert_eq!(st, Status::Ok);
    Some(cov)
}

/// `C^(-1/2)` from the two-sided Jacobi eigenpairs of `c` (lower triangle mirrored), with the
/// per-matrix clip, and `κ = λ_max / λ_min`.
fn reference(c: &[f64], n: usize) -> (Vec<f64>, f64) {
    let mut a = c.to_vec();
    for i in 0..n {
        for j in i + 1..n {
            a[i * n + j] = a[j * n + i];
        }
    }
    let mut v = vec![0.0; n * n];
    let mut l = vec![0.0; n];
    assert_eq!(jacobi_eigh(&mut a, n, &mut v, &mut l, 100), Status::Ok);
    let floor = 1e-14 * l[n - 1];
    let mut q = vec![0.0; n * n];
    for e in 0..n {
        let f = 1.0 / l[e].max(floor).sqrt();
        for i in 0..n {
            let vi = v[i * n + e] * f;
            for j in 0..n {
                q[i * n + j] += vi * v[j * n + e];
            }
        }
    }
    (q, l[n - 1] / l[0].max(floor))
}

#[test]
fn cpu_inverse_sqrt_matches_the_reference_on_real_blocks() {
    let psf = psf();
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).unwrap();
    let params = ExtractionParams {
        nspec: 25,
        psferr: psf.psferr,
        ..ExtractionParams::default()
    };
    let truth = builtin_spectra(0, 25, &grid.wave);
    let image = simulated_preproc(&psf, &truth, 3.0, 7, false, "r0").unwrap();
    let job = FrameJob::new(&psf, &image, &grid, &params).unwrap();
    let padded = job.padded_grid();
    let spots = psf.spots(0, params.bundlesize, &padded.fullwave).unwrap();
    let plans: Vec<PatchPlan> = plan_bundle(0, &spots, &params, padded.grid.nwave(), image.ny)
        .into_iter()
        .filter(|p| p.window.is_some())
        .step_by(3)
        .collect();
    let ccd = CcdData::from_preproc(&image);
    // The same CCD with three rows masked in the middle of each chosen patch's window.
    let mut masked = CcdData::from_preproc(&image);
    for plan in &plans {
        let w = plan.window.unwrap();
        let mid = (w.row_min + w.row_max) / 2;
        for row in mid..mid + 3 {
            for col in w.col_min..w.col_max {
                masked.weight[row as usize * masked.ncol + col as usize] = 0.0;
            }
        }
    }
    let n = params.nwavetot();
    let nn = n * n;
    let mut q = vec![0.0; nn];
    let mut work = vec![0.0; inverse_sqrt_block_work_len(n)];
    // Worst error (and its κ) per regime: κ ≤ 5e3, 5e3 < κ ≤ QL_MAX_CONDITION (QL), above (Jacobi).
    let mut worst = [(0.0f64, 0.0f64); 3];
    let mut count = [0usize; 3];
    for data in [&ccd, &masked] {
        let inputs = BundleInputs {
            spots: &spots,
            plans: &plans,
            ccd: data.view(),
            params: &params,
            ndiag: job.ndiag(),
        };
        for plan in &plans {
            let Some(cov) = core_blocks(&inputs, plan) else {
                continue;
            };
            for block in cov.chunks_exact(nn) {
                assert_eq!(inverse_sqrt_block(block, n, &mut q, &mut work), Status::Ok);
                let (r, kappa) = reference(block, n);
                let max = r.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                let err = q
                    .iter()
                    .zip(&r)
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
                    / max;
                let regime = if kappa <= 5e3 {
                    0
                } else if kappa <= QL_MAX_CONDITION {
                    1
                } else {
                    2
                };
                count[regime] += 1;
                if err > worst[regime].0 {
                    worst[regime] = (err, kappa);
                }
            }
        }
    }
    let worst_text: Vec<String> = worst
        .iter()
        .map(|(e, k)| format!("{e:.2e} at kappa {k:.1e}"))
        .collect();
    println!(
        "blocks (kappa <= 5e3, <= {QL_MAX_CONDITION:.0e}, above): {count:?}; worst: {worst_text:?}"
    );
    // Both routes and the intermediate regime are exercised.
    assert!(count[0] > 100 && count[1] > 0 && count[2] > 0, "{count:?}");
    assert!(worst[0].0 <= 1e-12, "QL, kappa <= 5e3: {:?}", worst[0]);
    assert!(worst[1].0 <= 2e-12, "QL, kappa <= 1e4: {:?}", worst[1]);
    assert!(worst[2].0 <= 1e-12, "Jacobi: {:?}", worst[2]);
}
