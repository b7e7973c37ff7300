//! One noiseless patch on the real r0 PSF, checked against an independent dense float64
//! reference (docs/algorithm.md §10.2, acceptance test A6).
#![allow(clippy::needless_range_loop)] // index loops mirror the matrix equations

mod common;

use desi_device::patch::CcdView;
use desi_extract::io::read_psf;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PaddedGrid, WavelengthGrid};
use desi_extract::solve::cpu::solve_patch_full;
use desi_extract::solve::BundleInputs;
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

use common::PSF_PATH as PSF;

#[test]
fn noiseless_patch_matches_dense_reference() {
    let psf = read_psf(Path::new(PSF)).expect("read PSF");
    let params = ExtractionParams {
        nspec: 25,
        ..ExtractionParams::default()
    };
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap();
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    let spots = psf.spots(0, 25, &padded.fullwave).unwrap();
    let plans = plan_bundle(0, &spots, &params, grid.nwave(), psf.npix_y);
    // Second sub-bundle, second patch: 7 padded fibers x 74 bins, n = 518.
    let plan = plans
        .iter()
        .find(|p| p.nspecpad == 7 && p.iwave == params.pad() + params.nwavestep)
        .expect("a 7-fiber patch")
        .clone();
    let window = plan.window.expect("patch on the CCD");
    let (ns, nw) = (plan.nspecpad, params.nwavetot());
    let n = ns * nw;

    // Truth: random photons per bin for every unknown of the patch (wavelength-major).
    let mut rng = ChaCha8Rng::seed_from_u64(20261124);
    let truth: Vec<f64> = (0..n).map(|_| rng.random_range(1000.0..1500.0)).collect();
    let (nrow, ncol) = (psf.npix_y, psf.npix_x);
    let mut image = vec![0.0; nrow * ncol];
    let k0 = plan.iwave - params.pad();
    let s_off = plan.s0 - spots.ispec_min;
    for q in 0..n {
        let (s, k) = (q % ns, q / ns);
        let c = spots.corner(s_off + s, k0 + k);
        let stamp = spots.stamp(s_off + s, k0 + k);
        for r in 0..spots.ny {
            for i in 0..spots.nx {
                let pix = (c.yc as usize + r) * ncol + c.xc as usize + i;
                image[pix] += truth[q] * stamp[r * spots.nx + i];
            }
        }
    }
    let weight: Vec<f64> = image.iter().map(|&v| 1.0 / (v + 9.0)).collect();
    let inputs = BundleInputs {
        spots: &spots,
        plans: &plans,
        ccd: CcdView {
            image: &image,
            weight: &weight,
            nrow,
            ncol,
        },
        params: &params,
        ndiag: psf.hsizey,
    };
    let sol = solve_patch_full(&inputs, &plan).expect("patch solves");

    // 1. Deconvolved flux recovered (tolerance: the 1e-15 ridge and rounding of a
    //    condition-number ~1e3 system allow ~1e-11; 1e-9 is the acceptance bar).
    for q in 0..n {
        let rel = (sol.xflux[q] - truth[q]).abs() / truth[q];
        assert!(
            rel < 1e-9,
            "xflux[{q}] = {} vs truth {} (rel {rel:e})",
            sol.xflux[q],
            truth[q]
        );
    }

    // 2. Resolution rows sum to one (R = Q / rowsum(Q) exactly, up to rounding of 74 terms).
    let nspp = plan.nspp;
    for c in 0..nspp {
        for k in 0..nw {
            let row = &sol.resolution[(c * nw + k) * nw..(c * nw + k + 1) * nw];
            let sum: f64 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-13, "fiber {c} row {k}: sum {sum}");
        }
    }

    // 3. Rᵀ diag(ivar) R = blockdiag(C_bb⁻¹), with C from an independent dense AᵀWA.
    let npix = window.npix();
    let width = (window.col_max - window.col_min) as usize;
    let mut a = DMatrix::<f64>::zeros(npix, n);
    for q in 0..n {
        let (s, k) = (q % ns, q / ns);
        let c = spots.corner(s_off + s, k0 + k);
        let stamp = spots.stamp(s_off + s, k0 + k);
        for r in 0..spots.ny {
            let y = c.yc + r as i32;
            if y < window.row_min || y >= window.row_max {
                continue;
            }
            for i in 0..spots.nx {
                let x = c.xc + i as i32;
                let p = (y - window.row_min) as usize * width + (x - window.col_min) as usize;
                a[(p, q)] = stamp[r * spots.nx + i];
            }
        }
    }
    let mut w = DMatrix::<f64>::zeros(npix, 1);
    for p in 0..npix {
        let (y, x) = (
            window.row_min as usize + p / width,
            window.col_min as usize + p % width,
        );
        w[(p, 0)] = weight[y * ncol + x];
    }
    let aw = DMatrix::from_fn(npix, n, |p, q| a[(p, q)] * w[(p, 0)]);
    let mut m = aw.transpose() * &a;
    let fw: Vec<f64> = (0..n).map(|q| aw.column(q).sum()).collect();
    let minweight = 1e-4 * fw.iter().cloned().fold(0.0, f64::max);
    for q in 0..n {
        let alpha = if fw[q] < minweight {
            minweight - fw[q]
        } else {
            0.0
        };
        m[(q, q)] += alpha * alpha + 1e-15;
    }
    let cov = m.clone().try_inverse().expect("invertible M");
    let s_core = plan.ispec - plan.s0;
    for c in 0..nspp {
        let s = s_core + c;
        let cbb = DMatrix::from_fn(nw, nw, |i, j| cov[(i * ns + s, j * ns + s)]);
        let expected = cbb.try_inverse().expect("invertible C_bb");
        let r = DMatrix::from_row_slice(nw, nw, &sol.resolution[c * nw * nw..(c + 1) * nw * nw]);
        let ivar = DMatrix::from_diagonal(&nalgebra::DVector::from_row_slice(
            &sol.ivar[c * nw..(c + 1) * nw],
        ));
        let got = r.transpose() * ivar * &r;
        let scale = expected.amax();
        let err = (&got - &expected).amax() / scale;
        // Two inversions of a condition ~1e3-1e4 matrix: 1e-9 relative to the largest entry.
        assert!(err < 1e-9, "fiber {c}: max |RᵀNR - C_bb⁻¹| / max = {err:e}");
    }
}
