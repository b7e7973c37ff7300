//! The deterministic synthetic frame of tests/data/reference-51060.json (docs/algorithm.md §12):
//! our extraction must reproduce the public Python reference at the float32 level of its
//! frame file.

mod common;

use common::{bundle_params, extract_cpu, preproc_from_arrays, psf};
use desi_extract::patch::WavelengthGrid;
use desi_extract::sim::{project_spectra, Spectra};
use serde_json::Value;

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/reference-51060.json"
);

/// The recipe of the reference file: fibers 0-24, simwave_k = 6000 + 0.8 k for k = -60..350,
/// phot = 1000 + 10 i + 100 sin(k/7 + i) plus 5000 at three bins per fiber.
fn recipe_spectra() -> Spectra {
    let ks: Vec<i64> = (-60..=350).collect();
    let wave: Vec<f64> = ks.iter().map(|&k| 6000.0 + 0.8 * k as f64).collect();
    let mut flux = Vec::with_capacity(25 * ks.len());
    for i in 0..25i64 {
        for &k in &ks {
            let mut phot = 1000.0 + 10.0 * i as f64 + 100.0 * (k as f64 / 7.0 + i as f64).sin();
            if k == 17 + 11 * i || k == 123 + 7 * i || k == 200 + 3 * i {
                phot += 5000.0;
            }
            flux.push(phot);
        }
    }
    Spectra {
        specmin: 0,
        nspec: 25,
        wave,
        flux,
    }
}

fn check_case(case: &str, pseudonoise: bool) {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(REFERENCE).unwrap()).unwrap();
    let expected = &reference[case];
    let psf = psf();
    let noiseless = project_spectra(&psf, &recipe_spectra()).unwrap();
    let ncol = psf.npix_x;
    let image: Vec<f64> = noiseless
        .iter()
        .enumerate()
        .map(|(p, &v)| {
            if pseudonoise {
                let (y, x) = ((p / ncol) as f64, (p % ncol) as f64);
                v + (v + 9.0).sqrt() * (12.9898 * x + 78.233 * y).sin()
            } else {
                v
            }
        })
        .collect();
    let ivar: Vec<f64> = noiseless.iter().map(|&v| 1.0 / (v + 9.0)).collect();
    let preproc = preproc_from_arrays(&psf, &image, &ivar);
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap();
    let params = bundle_params();
    let ex = extract_cpu(&psf, &preproc, &grid, &params);
    assert!(
        ex.reports.is_empty(),
        "unexpected patch reports: {:?}",
        ex.reports
    );
    let a = &ex.arrays;
    assert_eq!(a.nwave as u64, expected["nwave"].as_u64().unwrap());
    assert_eq!(
        *grid.wave.last().unwrap(),
        expected["wave_last"].as_f64().unwrap()
    );

    // Frame file values are float32: compare our f64 results after the same cast.
    let f32v = |v: f64| v as f32 as f64;
    let rel = |got: f64, want: f64| (got - want).abs() / want.abs().max(1e-300);
    let sum = |v: &[f64]| v.iter().map(|&x| f32v(x)).sum::<f64>();
    // Sums over 6,275 float32 values: 1e-6 relative covers float32 rounding of each term.
    for (name, values) in [
        ("sum_flux", &a.flux),
        ("sum_ivar", &a.ivar),
        ("sum_Rdiags", &a.rdiags),
    ] {
        let want = expected[name].as_f64().unwrap();
        let got = sum(values);
        assert!(rel(got, want) < 1e-6, "{case} {name}: {got} vs {want}");
    }
    let ndiagonal = 2 * a.ndiag + 1;
    for (key, point) in expected["points"].as_object().unwrap() {
        let mut it = key.split(',').map(|v| v.parse::<usize>().unwrap());
        let (s, j) = (it.next().unwrap(), it.next().unwrap());
        let i = s * a.nwave + j;
        // float32 storage: ~6e-8 relative per value, and our f64 path agrees to ~1e-9.
        let flux = point["flux"].as_f64().unwrap();
        assert!(
            rel(f32v(a.flux[i]), flux) < 3e-7,
            "{case} {key} flux {} vs {flux}",
            a.flux[i]
        );
        let ivar = point["ivar"].as_f64().unwrap();
        assert!(
            rel(f32v(a.ivar[i]), ivar) < 3e-7,
            "{case} {key} ivar {} vs {ivar}",
            a.ivar[i]
        );
        for (d, want) in point["Rdiags"].as_array().unwrap().iter().enumerate() {
            let got = a.rdiags[(s * ndiagonal + d) * a.nwave + j];
            let want = want.as_f64().unwrap();
            assert!(
                (f32v(got) - want).abs() < 3e-7,
                "{case} {key} Rdiags[{d}] {got} vs {want}"
            );
        }
        if pseudonoise {
            // chi2pix of the CPU convention; relative 1e-5 (a sum of squared residuals).
            let chi = point["chi2pix"].as_f64().unwrap();
            assert!(
                rel(f32v(a.chi2pix[i]), chi) < 1e-5,
                "{case} {key} chi2pix {} vs {chi}",
                a.chi2pix[i]
            );
        }
    }
}

#[test]
fn noiseless_reference_frame() {
    check_case("noiseless", false);
}

#[test]
fn pseudonoise_reference_frame() {
    check_case("pseudonoise", true);
}
