//! The CPU backend's results do not depend on the number of threads (bitwise).

mod common;

use common::{extract_cpu_model, psf};
use desi_extract::extract::Extraction;
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::sim::{builtin_spectra, simulated_preproc};

#[test]
fn results_are_bitwise_independent_of_thread_count() {
    let psf = psf();
    let grid = WavelengthGrid::arange(6500.0, 6650.0, 0.8).unwrap();
    let truth = builtin_spectra(25, 25, &grid.wave);
    let preproc = simulated_preproc(&psf, &truth, 3.0, 11, false, "r0").unwrap();
    let params = ExtractionParams {
        specmin: 25,
        nspec: 25,
        ..ExtractionParams::default()
    };
    let run = |threads: usize| -> Extraction {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| extract_cpu_model(&psf, &preproc, &grid, &params, true))
    };
    let one = run(1);
    for threads in [2, 3] {
        let other = run(threads);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&one.arrays.flux) == bits(&other.arrays.flux),
            "flux differs with {threads} threads"
        );
        assert!(
            bits(&one.arrays.ivar) == bits(&other.arrays.ivar),
            "ivar differs with {threads} threads"
        );
        assert!(
            bits(&one.arrays.rdiags) == bits(&other.arrays.rdiags),
            "Rdiags differ with {threads} threads"
        );
        assert!(
            bits(&one.arrays.chi2pix) == bits(&other.arrays.chi2pix),
            "chi2pix differs with {threads} threads"
        );
        assert!(
            bits(one.model.as_ref().unwrap()) == bits(other.model.as_ref().unwrap()),
            "model differs with {threads} threads"
        );
    }
}
