//! The CPU backend's assembly (`assemble_normal_equations_rows`) against the device's
//! `assemble_normal_equations` on every patch of a real-PSF bundle: the same band entries,
//! right-hand side and flux weights up to the order of summation, the same zeros, the same
//! refusal of a bandwidth that drops an overlapping pair; masked pixels included.

mod common;

use desi_device::patch::{
    assemble_normal_equations, assemble_normal_equations_rows, patch_bandwidth,
};
use desi_device::Status;
use desi_extract::extract::CcdData;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{PaddedGrid, WavelengthGrid};
use desi_extract::sim::{builtin_spectra, simulated_preproc};

#[test]
fn row_assembly_equals_the_device_assembly() {
    let psf = common::psf();
    let params = common::bundle_params();
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).expect("grid");
    let truth = builtin_spectra(0, params.nspec, &grid.wave);
    let mut preproc = simulated_preproc(&psf, &truth, 3.0, 3, false, "r0").expect("simulate");
    // Masked pixels (weight 0) and a dead column.
    for i in (0..preproc.ivar.len()).step_by(13) {
        preproc.ivar[i] = 0.0;
    }
    for r in 0..preproc.ny {
        preproc.mask[r * preproc.nx + 40] = 1;
    }
    let ccd = CcdData::from_preproc(&preproc);
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let spots = psf.spots(0, params.nspec, &padded.fullwave).expect("spots");
    let plans = plan_bundle(0, &spots, &params, grid.nwave(), ccd.nrow);
    let nwavetot = params.nwavetot();
    let mut checked = 0;
    for plan in &plans {
        let Some(shape) = plan.shape(nwavetot) else {
            continue;
        };
        let view = plan.stamp_view(&spots, params.pad());
        let n = shape.nunknown();
        let kd = patch_bandwidth(&view, &shape);
        let run = |rows: bool, kd: usize| {
            let mut band = vec![f64::NAN; n * (kd + 1)];
            let (mut rhs, mut fw) = (vec![f64::NAN; n], vec![f64::NAN; n]);
            let status = if rows {
                assemble_normal_equations_rows(
                    &view,
                    &ccd.view(),
                    &shape,
                    kd,
                    &mut band,
                    &mut rhs,
                    &mut fw,
                )
            } else {
                assemble_normal_equations(
                    &view,
                    &ccd.view(),
                    &shape,
                    kd,
                    &mut band,
                    &mut rhs,
                    &mut fw,
                )
            };
            (status, band, rhs, fw)
        };
        let (s_dev, band_dev, rhs_dev, fw_dev) = run(false, kd);
        let (s_rows, band_rows, rhs_rows, fw_rows) = run(true, kd);
        assert_eq!((s_dev, s_rows), (Status::Ok, Status::Ok));
        let close = |what: &str, a: &[f64], b: &[f64]| {
            let scale = b
                .iter()
                .filter(|x| !x.is_nan())
                .fold(0.0f64, |m, x| m.max(x.abs()));
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                // Band slots outside the matrix (before row i's first column) stay unwritten.
                assert_eq!(x.is_nan(), y.is_nan(), "{what}[{i}]: {x:e} vs {y:e}");
                if x.is_nan() {
                    continue;
                }
                assert_eq!(*x == 0.0, *y == 0.0, "{what}[{i}]: {x:e} vs {y:e}");
                assert!(
                    (x - y).abs() <= 1e-14 * scale.max(f64::MIN_POSITIVE),
                    "{what}[{i}]: {x:e} vs {y:e}"
                );
            }
        };
        close("band", &band_rows, &band_dev);
        close("rhs", &rhs_rows, &rhs_dev);
        close("fluxweight", &fw_rows, &fw_dev);
        // A bandwidth one short of the measured one drops an overlapping pair: both refuse.
        if kd > 0 {
            assert_eq!(run(false, kd - 1).0, Status::BadShape);
            assert_eq!(run(true, kd - 1).0, Status::BadShape);
        }
        checked += 1;
    }
    assert!(checked >= 20, "{checked} patches checked");
}
