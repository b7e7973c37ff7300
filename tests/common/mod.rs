//! Helpers shared by the integration tests.
#![allow(dead_code)]

use desi_extract::extract::{extract_frame, Extraction};
use desi_extract::io::{read_psf, PreprocImage};
use desi_extract::job::FrameJob;
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::psf::GaussHermitePsf;
use desi_extract::solve::CpuBackend;
use desi_extract::trace::Trace;
use std::path::{Path, PathBuf};

/// The real DESI r0 PSF bundled in data/ (see data/README.md).
pub const PSF_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

/// Reads the shared PSF.
pub fn psf() -> GaussHermitePsf {
    read_psf(Path::new(PSF_PATH)).expect("read the shared PSF")
}

/// An in-memory preproc image of the PSF's CCD size with MASK = 0.
pub fn preproc_from_arrays(psf: &GaussHermitePsf, image: &[f64], ivar: &[f64]) -> PreprocImage {
    PreprocImage {
        path: PathBuf::from("in-memory-preproc.fits"),
        nx: psf.npix_x,
        ny: psf.npix_y,
        image: image.iter().map(|&v| v as f32).collect(),
        ivar: ivar.iter().map(|&v| v as f32).collect(),
        mask: vec![0; image.len()],
        camera: "r0".into(),
        header: Vec::new(),
        readnoise: None,
        fibermap: None,
    }
}

/// The parameters of one 25-fiber bundle from fiber 0 (the defaults otherwise).
pub fn bundle_params() -> ExtractionParams {
    ExtractionParams {
        nspec: 25,
        ..ExtractionParams::default()
    }
}

/// [`extract_frame`] on the CPU without a model image or progress reports; panics on error.
pub fn extract_cpu(
    psf: &GaussHermitePsf,
    preproc: &PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
) -> Extraction {
    extract_cpu_model(psf, preproc, grid, params, false)
}

/// [`extract_frame`] on the CPU, with the model image if `want_model`; panics on error.
pub fn extract_cpu_model(
    psf: &GaussHermitePsf,
    preproc: &PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
    want_model: bool,
) -> Extraction {
    let job = FrameJob::new(psf, preproc, grid, params)
        .expect("a valid frame job")
        .with_model(want_model);
    extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new()).expect("CPU extraction")
}

/// The names of the entries of `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}
