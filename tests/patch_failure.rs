//! A patch that cannot be solved is reported and zeroed (ivar 0), never a silent NaN: here
//! five pixels of IVAR 3e38 with the pixel screen off ([`PixelLimits::UNLIMITED`]; by default
//! they are ignored as absurd) make the normal equations of the patches that see them not
//! positive definite at working precision.

mod common;

use common::{bundle_params, psf};
use desi_extract::extract::{extract_frame, PixelLimits};
use desi_extract::job::FrameJob;
use desi_extract::patch::WavelengthGrid;
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::solve::{CpuBackend, PatchIssue};
use desi_extract::trace::Trace;

#[test]
fn unsolvable_patch_is_reported_and_zeroed() {
    let psf = psf();
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap();
    let truth = builtin_spectra(0, 25, &grid.wave);
    let mut preproc = simulated_preproc(&psf, &truth, 3.0, 0, true, "r0").unwrap();
    // IVAR 3e38 on fiber 12's trace in the middle of the grid.
    let spots = psf.spots(12, 1, &[6100.0]).unwrap();
    let c = spots.corner(0, 0);
    for k in 0..5 {
        let pix = (c.yc as usize + 3 + k) * psf.npix_x + c.xc as usize + 8;
        preproc.ivar[pix] = 3e38;
    }
    let params = bundle_params();
    let job = FrameJob::new(&psf, &preproc, &grid, &params)
        .unwrap()
        .with_pixel_limits(PixelLimits::UNLIMITED);
    let ex = extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new()).unwrap();
    let failed: Vec<_> = ex
        .reports
        .iter()
        .filter(|r| matches!(r.issue, PatchIssue::Failed { .. }))
        .collect();
    assert!(!failed.is_empty(), "no patch reported: {:?}", ex.reports);
    assert!(
        failed
            .iter()
            .any(|r| r.site.ispec <= 12 && 12 < r.site.ispec + 5),
        "{failed:?}"
    );
    let a = &ex.arrays;
    assert!(
        a.flux.iter().all(|v| v.is_finite()),
        "NaN flux in the output"
    );
    assert!(
        a.ivar.iter().all(|v| v.is_finite()),
        "NaN ivar in the output"
    );
    assert!(
        a.rdiags.iter().all(|v| v.is_finite()),
        "NaN Rdiags in the output"
    );
    // The failed patches' bins carry ivar 0; everything else is untouched.
    let zero = a.ivar.iter().filter(|&&v| v == 0.0).count();
    let expected: usize = failed.len() * 5 * params.nwavestep;
    assert!(
        zero >= expected.min(a.ivar.len()) - 5 * params.nwavestep,
        "zero-ivar bins {zero}, failed patches {}",
        failed.len()
    );
    assert!(zero < a.ivar.len() / 2, "too many zeroed bins: {zero}");
}
