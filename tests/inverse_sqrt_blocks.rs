//! The CPU backend's `C_bb^(-1/2)` (`solve::cpu::inverse_sqrt_block`: Householder + QL in
//! device/src/linalg/tridiagonal.rs, one-sided Jacobi above `QL_MAX_CONDITION`) on real
//! covariance blocks of the bundled PSF, against the float64 two-sided Jacobi reference
//! (`reference::jacobi_eigh`), relative to `max|Q|`: the core blocks of every third patch of
//! bundle 0 over the r band, as extracted, and the same patches with three CCD rows of their
//! window masked (the bins there keep only the PSF wings: condition numbers up to ~1e6, which
//! take the Jacobi route). Each patch's core blocks are also computed in one batch
//! (`inverse_sqrt_blocks`, as the CPU solve does: QL iterations interleaved, Jacobi for the
//! ill-conditioned ones) and must equal the blocks computed alone bit for bit. Householder + QL
//! has the error `~ε·κ` of any method with absolute
//! eigenvalue accuracy, so its blocks are held to 1e-12 up to `κ = 5e3` and to `2e-12` (measured
//! 1.5e-12, ≈ 7ε·κ) up to `QL_MAX_CONDITION = 1e4`; Jacobi's to 1e-12. `--nocapture` prints the
//! worst per regime.

mod common;

use common::blocks::{core_blocks, reference_inverse_sqrt};
use common::psf;
use desi_device::Status;
use desi_extract::extract::CcdData;
use desi_extract::job::FrameJob;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PatchPlan, WavelengthGrid};
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::solve::cpu::{
    inverse_sqrt_block, inverse_sqrt_block_work_len, inverse_sqrt_blocks,
    inverse_sqrt_blocks_work_len, QL_MAX_CONDITION,
};
use desi_extract::solve::BundleInputs;

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
    // Batches holding blocks of both routes (QL and Jacobi).
    let mut mixed_batches = 0;
    for data in [&ccd, &masked] {
        let inputs = BundleInputs {
            spots: &spots,
            plans: &plans,
            ccd: data.view(),
            params: &params,
            ndiag: job.ndiag(),
        };
        for plan in &plans {
            let Some((cov, _)) = core_blocks(&inputs, plan) else {
                continue;
            };
            // The patch's core blocks as the CPU solve computes them, in one batch (their QL
            // iterations interleaved): each bitwise what the block alone gives.
            let nblocks = cov.len() / nn;
            let mut batch_q = vec![f64::NAN; cov.len()];
            let mut statuses = vec![Status::BadShape; nblocks];
            let mut batch_work = vec![0.0; inverse_sqrt_blocks_work_len(n, nblocks)];
            assert_eq!(
                inverse_sqrt_blocks(&cov, n, &mut batch_q, &mut statuses, &mut batch_work),
                Status::Ok
            );
            assert!(statuses.iter().all(|s| *s == Status::Ok), "{statuses:?}");
            let mut in_batch = [false; 3];
            for (block, batch_q) in cov.chunks_exact(nn).zip(batch_q.chunks_exact(nn)) {
                assert_eq!(inverse_sqrt_block(block, n, &mut q, &mut work), Status::Ok);
                assert!(
                    q.iter()
                        .zip(batch_q)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{:?}: a block of the batch differs from the block alone",
                    plan.window
                );
                let (r, kappa) = reference_inverse_sqrt(block, n);
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
                in_batch[regime] = true;
                if err > worst[regime].0 {
                    worst[regime] = (err, kappa);
                }
            }
            if in_batch[2] && (in_batch[0] || in_batch[1]) {
                mixed_batches += 1;
            }
        }
    }
    let worst_text: Vec<String> = worst
        .iter()
        .map(|(e, k)| format!("{e:.2e} at kappa {k:.1e}"))
        .collect();
    println!(
        "blocks (kappa <= 5e3, <= {QL_MAX_CONDITION:.0e}, above): {count:?}; worst: {worst_text:?}; batches mixing QL and Jacobi: {mixed_batches}"
    );
    // Both routes and the intermediate regime are exercised, within batches.
    assert!(count[0] > 100 && count[1] > 0 && count[2] > 0, "{count:?}");
    assert!(mixed_batches > 0, "no batch mixes the two routes");
    assert!(worst[0].0 <= 1e-12, "QL, kappa <= 5e3: {:?}", worst[0]);
    assert!(worst[1].0 <= 2e-12, "QL, kappa <= 1e4: {:?}", worst[1]);
    assert!(worst[2].0 <= 1e-12, "Jacobi: {:?}", worst[2]);
}
