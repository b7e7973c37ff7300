//! Real covariance blocks of a patch and their float64 reference `C^(-1/2)`, shared by the
//! tests of the inverse square root methods (inverse_sqrt_blocks, newton_schulz_blocks,
//! rdiag_conditioning).

use desi_device::linalg::banded;
use desi_device::patch::{assemble_normal_equations, regularize};
use desi_device::reference::jacobi_eigh::jacobi_eigh;
use desi_device::Status;
use desi_extract::patch::PatchPlan;
use desi_extract::solve::BundleInputs;

/// Covariance blocks `(nspp, n, n)` of the core spectra of `plan` and the deconvolved flux,
/// computed as `solve_patch_full` does with the serial device routines (the GPU's factor);
/// `None` where the factorization fails.
pub fn core_blocks(inputs: &BundleInputs, plan: &PatchPlan) -> Option<(Vec<f64>, Vec<f64>)> {
    let params = inputs.params;
    let nwavetot = params.nwavetot();
    let shape = plan.shape(nwavetot)?;
    let view = plan.stamp_view(inputs.spots, params.pad());
    let n = shape.nunknown();
    let kd = plan.kd;
    let mut band = vec![0.0; n * (kd + 1)];
    let mut xflux = vec![0.0; n];
    let mut fw = vec![0.0; n];
    let st = assemble_normal_equations(
        &view,
        &inputs.ccd,
        &shape,
        kd,
        &mut band,
        &mut xflux,
        &mut fw,
    );
    assert_eq!(st, Status::Ok);
    regularize(&mut band, n, kd, &fw, params.regularize);
    if banded::band_factor(&mut band, n, kd) != Status::Ok {
        return None;
    }
    assert_eq!(banded::band_solve(&band, n, kd, &mut xflux), Status::Ok);
    let s_core = plan.ispec - plan.s0;
    let mut cov = vec![0.0; plan.nspp * nwavetot * nwavetot];
    let mut work = vec![0.0; banded::band_covariance_blocks_work_len(n, kd, plan.nspecpad)];
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
    Some((cov, xflux))
}

/// `C^(-1/2)` from the two-sided Jacobi eigenpairs of `c` (lower triangle mirrored), with the
/// per-matrix clip at `1e-14·λ_max`, and `κ = λ_max / λ_min` (clipped likewise).
pub fn reference_inverse_sqrt(c: &[f64], n: usize) -> (Vec<f64>, f64) {
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
