//! The CPU backend's blocked band Cholesky and tiled covariance blocks
//! (`desi_device::linalg::banded_cpu`) on real patch normal equations: the bundled r0 PSF, a
//! simulated bundle, patches of every kind (7 padded fibers, n = 518; the bundle-edge patches,
//! 6 fibers, n = 444; first and last wavelength patches; one core fiber per sub-bundle with 3
//! or 2 padded fibers), each checked against an independent float64 reference: the dense
//! inverse (nalgebra LU) of the same regularized `M`. Also the factorization retry of
//! `solve_patch_full` (a failed factor, then the ridge, with the same workspace).

mod common;

use common::{bundle_params, psf};
use desi_device::linalg::{banded, banded_cpu};
use desi_device::patch::{assemble_normal_equations, regularize};
use desi_device::Status;
use desi_extract::extract::CcdData;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PaddedGrid, PatchPlan, WavelengthGrid};
use desi_extract::psf::SpotTable;
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use nalgebra::DMatrix;

/// The normal equations `(band, n, kd)` of one patch, regularized with `ridge`.
fn normal_equations(
    plan: &PatchPlan,
    spots: &SpotTable,
    ccd: &CcdData,
    params: &ExtractionParams,
    ridge: f64,
) -> (Vec<f64>, usize, usize) {
    let nwavetot = params.nwavetot();
    let view = plan.stamp_view(spots, params.pad());
    let shape = plan.shape(nwavetot).expect("patch on the CCD");
    let n = shape.nunknown();
    let kd = plan.kd;
    let mut band = vec![0.0; n * (kd + 1)];
    let mut rhs = vec![0.0; n];
    let mut fw = vec![0.0; n];
    let status =
        assemble_normal_equations(&view, &ccd.view(), &shape, kd, &mut band, &mut rhs, &mut fw);
    assert_eq!(status, Status::Ok);
    regularize(&mut band, n, kd, &fw, ridge);
    (band, n, kd)
}

/// Dense symmetric `M` from the band storage of its lower triangle.
fn dense(band: &[f64], n: usize, kd: usize) -> DMatrix<f64> {
    let w = kd + 1;
    DMatrix::from_fn(n, n, |i, j| {
        let (i, j) = if j > i { (j, i) } else { (i, j) };
        if i - j > kd {
            0.0
        } else {
            band[i * w + j + kd - i]
        }
    })
}

/// Factors and computes the core covariance blocks with `banded_cpu`; returns the worst
/// `max|C_bb − C_ref| / max|C_ref|` over the core blocks against the dense inverse, after
/// checking the factor against the serial one (`n·eps·κ` of max|L|).
fn check_patch(plan: &PatchPlan, band: &[f64], n: usize, kd: usize, nwavetot: usize) -> f64 {
    let m = dense(band, n, kd);
    let eig = m.clone().symmetric_eigenvalues();
    let cond = eig.max() / eig.min();
    let c_ref = m.try_inverse().expect("invertible M");

    let mut l = band.to_vec();
    let mut work = vec![f64::NAN; banded_cpu::band_factor_work_len(kd)];
    assert_eq!(
        banded_cpu::band_factor(&mut l, n, kd, &mut work),
        Status::Ok
    );
    let mut l_serial = band.to_vec();
    assert_eq!(banded::band_factor(&mut l_serial, n, kd), Status::Ok);
    let lmax = l_serial.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let dl = l
        .iter()
        .zip(&l_serial)
        .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
    let tol = n as f64 * f64::EPSILON * cond * lmax;
    assert!(
        dl <= tol,
        "patch {}: L vs serial {dl:e} > {tol:e}",
        plan.patch
    );

    let s_core = plan.ispec - plan.s0;
    let block = nwavetot * nwavetot;
    let mut cov = vec![f64::NAN; plan.nspp * block];
    let mut work =
        vec![f64::NAN; banded_cpu::band_covariance_block_range_work_len(n, kd, plan.nspecpad)];
    let status = banded_cpu::band_covariance_block_range(
        &l,
        n,
        kd,
        plan.nspecpad,
        s_core,
        &mut cov,
        &mut work,
    );
    assert_eq!(status, Status::Ok);
    let ns = plan.nspecpad;
    let mut worst = 0.0f64;
    for c in 0..plan.nspp {
        let s = s_core + c;
        let expected = DMatrix::from_fn(nwavetot, nwavetot, |i, j| c_ref[(i * ns + s, j * ns + s)]);
        let got = DMatrix::from_row_slice(nwavetot, nwavetot, &cov[c * block..(c + 1) * block]);
        let rel = (&got - &expected).amax() / expected.amax();
        worst = worst.max(rel);
    }
    worst
}

#[test]
fn real_patches_match_dense_inverse() {
    let psf = psf();
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap();
    let truth = builtin_spectra(0, 25, &grid.wave);
    let preproc = simulated_preproc(&psf, &truth, 3.0, 1, false, "r0").expect("simulate");
    let ccd = CcdData::from_preproc(&preproc);
    let mut shapes = Vec::new();
    for nsubbundles in [5, 25] {
        let params = ExtractionParams {
            nsubbundles,
            ..bundle_params()
        };
        let nwavetot = params.nwavetot();
        let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
        let spots = psf.spots(0, 25, &padded.fullwave).unwrap();
        let plans = plan_bundle(0, &spots, &params, grid.nwave(), ccd.nrow);
        let last_iwave = plans.iter().map(|p| p.iwave).max().unwrap();
        // Edge sub-bundles (fewer padded fibers) and a middle one, at the first, a middle and
        // the last wavelength patch.
        let subs = [0, 1, nsubbundles / 2, nsubbundles - 1];
        for plan in plans.iter().filter(|p| {
            let sub = (p.ispec - p.bspecmin) / p.nspp;
            subs.contains(&sub)
                && (p.iwave == params.pad()
                    || p.iwave == params.pad() + params.nwavestep
                    || p.iwave == last_iwave)
        }) {
            let (band, n, kd) = normal_equations(plan, &spots, &ccd, &params, 0.0);
            let worst = check_patch(plan, &band, n, kd, nwavetot);
            eprintln!(
                "nsubbundles {nsubbundles} patch {} (nspecpad {}, nspp {}, n {n}, kd {kd}): \
                 max|C - C_ref| / max|C_ref| = {worst:.2e}",
                plan.patch, plan.nspecpad, plan.nspp
            );
            assert!(
                worst <= 1e-12,
                "patch {}: covariance vs dense inverse {worst:e}",
                plan.patch
            );
            shapes.push((n, plan.nspp));
        }
    }
    for (n, nspp) in [(518, 5), (444, 5), (222, 1), (148, 1)] {
        assert!(
            shapes.contains(&(n, nspp)),
            "no patch with n={n}, nspp={nspp}"
        );
    }
}

/// The retry of `solve_patch_full`: a factorization that fails (here `M` made indefinite at
/// one unknown) leaves the workspace and `ab` partly overwritten; the fresh assembly with the
/// retry ridge then factors exactly as in a fresh call, and matches the dense inverse.
#[test]
fn factor_retry_after_failure() {
    let psf = psf();
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap();
    let truth = builtin_spectra(0, 25, &grid.wave);
    let preproc = simulated_preproc(&psf, &truth, 3.0, 1, false, "r0").expect("simulate");
    let ccd = CcdData::from_preproc(&preproc);
    let params = bundle_params();
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let spots = psf.spots(0, 25, &padded.fullwave).unwrap();
    let plans = plan_bundle(0, &spots, &params, grid.nwave(), ccd.nrow);
    let plan = plans.iter().find(|p| p.nspecpad == 7).unwrap();
    let ridge = desi_extract::solve::cpu::RETRY_REGULARIZE;
    let (mut band, n, kd) = normal_equations(plan, &spots, &ccd, &params, 0.0);
    let w = kd + 1;
    // Unknown 300: its pivot goes negative after the trailing updates of earlier panels.
    band[300 * w + kd] = -1.0;
    let mut work = vec![0.0; banded_cpu::band_factor_work_len(kd)];
    assert_eq!(
        banded_cpu::band_factor(&mut band, n, kd, &mut work),
        Status::NotPositiveDefinite
    );
    let (fresh, _, _) = normal_equations(plan, &spots, &ccd, &params, ridge);
    let mut retried = fresh.clone();
    assert_eq!(
        banded_cpu::band_factor(&mut retried, n, kd, &mut work),
        Status::Ok
    );
    let mut clean = fresh.clone();
    let mut clean_work = vec![0.0; banded_cpu::band_factor_work_len(kd)];
    assert_eq!(
        banded_cpu::band_factor(&mut clean, n, kd, &mut clean_work),
        Status::Ok
    );
    assert_eq!(retried, clean, "retry differs from a fresh factorization");
    let worst = check_patch(plan, &fresh, n, kd, params.nwavetot());
    assert!(
        worst <= 1e-12,
        "retry: covariance vs dense inverse {worst:e}"
    );
}
