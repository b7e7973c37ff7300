//! Physics acceptance: a simulated noisy bundle over the whole r range, extracted and compared
//! with the known input spectra (pulls and chi2pix).

mod common;

use common::{bundle_params, extract_cpu, psf};
use desi_extract::patch::WavelengthGrid;
use desi_extract::qa::resolved_truth;
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::stats::median;

#[test]
fn noisy_bundle_pulls_are_unit_normal() {
    let psf = psf();
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).unwrap();
    let truth = builtin_spectra(0, 25, &grid.wave);
    let preproc = simulated_preproc(&psf, &truth, 3.0, 7, false, "r0").unwrap();
    let params = bundle_params();
    let ex = extract_cpu(&psf, &preproc, &grid, &params);
    assert!(ex.reports.is_empty(), "patch reports: {:?}", ex.reports);
    let a = &ex.arrays;
    let dwave = grid.bin_widths();
    let expected = resolved_truth(&a.rdiags, (a.nspec, a.nwave, a.ndiag), &dwave, |s| {
        &truth.flux[s * a.nwave..(s + 1) * a.nwave]
    });
    let mut pulls = Vec::with_capacity(a.nspec * a.nwave);
    for s in 0..a.nspec {
        for j in 0..a.nwave {
            let i = s * a.nwave + j;
            assert!(a.ivar[i] > 0.0, "ivar[{s}][{j}] = {}", a.ivar[i]);
            pulls.push((a.flux[i] - expected[i]) * a.ivar[i].sqrt());
        }
    }
    let n = pulls.len() as f64;
    let mean = pulls.iter().sum::<f64>() / n;
    let std = (pulls.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // Statistical errors: mean 1/sqrt(N) = 0.004, std 1/sqrt(2N) = 0.003 for N = 58,150;
    // neighbouring fibers are correlated, so allow ~5 sigma.
    eprintln!("pulls: N = {n}, mean = {mean:.5}, std = {std:.5}");
    assert!(mean.abs() < 0.02, "pull mean {mean}");
    assert!((std - 1.0).abs() < 0.02, "pull std {std}");
    let chi = median(a.chi2pix.clone());
    eprintln!("median chi2pix = {chi:.4}");
    // chi2pix is the PSF-weighted residual chi2 per pixel after the fit, which absorbs about
    // one degree of freedom per unknown where the PSF weight is concentrated; near 1, below it.
    assert!((0.6..1.2).contains(&chi), "median chi2pix {chi}");
    // Resolution rows: the stored 11 diagonals of each column sum to ~1 (mass outside ±5
    // diagonals is ~2.4e-4 per row, docs/algorithm.md §4.4).
    let ndiagonal = 2 * a.ndiag + 1;
    let mut worst = 0.0f64;
    for s in 0..a.nspec {
        for j in 20..a.nwave - 20 {
            let row: f64 = (0..ndiagonal)
                .map(|d| {
                    let col = j + a.ndiag - d;
                    a.rdiags[(s * ndiagonal + d) * a.nwave + col]
                })
                .sum();
            worst = worst.max((row - 1.0).abs());
        }
    }
    assert!(
        worst < 2e-3,
        "row sums of the stored diagonals deviate by {worst}"
    );
}
