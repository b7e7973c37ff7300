//! The CPU backend's per-thread `PatchWorkspace` (host/solve/cpu.rs): a workspace reused across
//! the patches of a bundle, in an order where the patch sizes shrink and grow again and after a
//! patch whose window has masked pixels, gives bitwise the results of a fresh workspace for
//! every patch (every buffer value a solve reads is one it wrote), through both
//! `solve_patch_with_workspace` and `solve_patch` (the thread's own workspace).

mod common;

use desi_extract::extract::CcdData;
use desi_extract::io::read_psf;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PaddedGrid, WavelengthGrid};
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::solve::cpu::{solve_patch, solve_patch_with_workspace, PatchWorkspace};
use desi_extract::solve::{BundleInputs, PatchResult};
use std::path::Path;

use common::PSF_PATH as PSF;

/// The bit patterns of every output of `r` (and its issue), for exact comparison.
fn bits(r: &PatchResult) -> (Vec<Vec<u64>>, String) {
    let planes = [&r.flux, &r.ivar, &r.rdiags, &r.chi2pix, &r.pixmask_fraction];
    (
        planes
            .iter()
            .map(|p| p.iter().map(|v| v.to_bits()).collect())
            .collect(),
        format!("{:?}", r.issue),
    )
}

#[test]
fn reused_workspace_is_bitwise_a_fresh_one() {
    let psf = read_psf(Path::new(PSF)).expect("read PSF");
    let params = ExtractionParams {
        nspec: 25,
        ..ExtractionParams::default()
    };
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap();
    let truth = builtin_spectra(0, 25, &grid.wave);
    let preproc = simulated_preproc(&psf, &truth, 3.0, 1, false, "r0").expect("simulate");
    let mut ccd = CcdData::from_preproc(&preproc);
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let spots = psf.spots(0, 25, &padded.fullwave).unwrap();
    let plans = plan_bundle(0, &spots, &params, grid.nwave(), ccd.nrow);
    // Mask a block of pixels in the first patch's window (weight 0): that patch's solve then
    // differs from its neighbours' in what it reads, not in the buffers' sizes.
    let w = plans[0].window.expect("the first patch is on the CCD");
    for row in w.row_min + 10..w.row_min + 20 {
        for col in w.col_min + 5..w.col_min + 25 {
            ccd.weight[row as usize * ccd.ncol + col as usize] = 0.0;
        }
    }
    let inputs = BundleInputs {
        spots: &spots,
        plans: &plans,
        ccd: ccd.view(),
        params: &params,
        ndiag: psf.hsizey,
    };
    // Sizes must change along the order: 6- and 7-fiber patches (n = 444, 518) interleaved.
    let sizes: Vec<usize> = plans.iter().map(|p| p.nspecpad).collect();
    assert!(
        sizes.iter().min() < sizes.iter().max(),
        "patch sizes {sizes:?}"
    );
    let mut order: Vec<usize> = (0..plans.len()).rev().collect();
    order.sort_by_key(|&i| (i % 3, std::cmp::Reverse(i)));

    let fresh: Vec<_> = plans
        .iter()
        .map(|plan| {
            let mut ws = PatchWorkspace::default();
            let (result, xflux) = solve_patch_with_workspace(&inputs, plan, true, &mut ws);
            (bits(&result), xflux.expect("the patch solves"))
        })
        .collect();
    assert!(
        fresh.iter().all(|(r, _)| r.1 == "None"),
        "every patch solves without an issue"
    );

    let mut ws = PatchWorkspace::default();
    for &i in &order {
        let (result, xflux) = solve_patch_with_workspace(&inputs, &plans[i], true, &mut ws);
        assert_eq!(bits(&result), fresh[i].0, "patch {i} (reused workspace)");
        let xflux = xflux.expect("the patch solves");
        assert!(
            xflux
                .iter()
                .zip(&fresh[i].1)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "patch {i}: deconvolved flux (reused workspace)"
        );
        // The thread's own workspace, in the same changing order.
        assert_eq!(
            bits(&solve_patch(&inputs, &plans[i])),
            fresh[i].0,
            "patch {i} (thread workspace)"
        );
    }
}
