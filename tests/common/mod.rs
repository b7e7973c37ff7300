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

/// Replaces the value of header card `key` of the HDU whose EXTNAME is `hdu` (`""`: the
/// primary HDU) in the file at `path` by the raw text `value`, byte for byte (no FITS library
/// re-writes or validates it): how a corrupt or hand-edited header looks to a reader.
pub fn set_raw_card(path: &Path, hdu: &str, key: &str, value: &str) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let card_at = |b: &[u8], at: usize| String::from_utf8_lossy(&b[at..at + 80]).into_owned();
    let mut start = 0;
    while start + 2880 <= bytes.len() {
        // The header: cards until END, in 2880-byte blocks.
        let (mut at, mut cards) = (start, Vec::new());
        loop {
            let card = card_at(&bytes, at);
            at += 80;
            if card.starts_with("END ") || card.trim_end() == "END" {
                break;
            }
            cards.push((at - 80, card));
        }
        let data = at.div_ceil(2880) * 2880;
        let int = |name: &str| -> u64 {
            cards
                .iter()
                .find(|(_, c)| c[..8].trim() == name)
                .and_then(|(_, c)| c[10..].split('/').next()?.trim().parse::<i64>().ok())
                .map_or(0, |v| v.unsigned_abs())
        };
        let name = cards
            .iter()
            .find(|(_, c)| c.starts_with("EXTNAME "))
            .map(|(_, c)| {
                c[10..]
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches('\'')
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        if name == hdu || (hdu.is_empty() && start == 0) {
            let (pos, _) = cards
                .iter()
                .find(|(_, c)| c[..8].trim() == key)
                .unwrap_or_else(|| panic!("no card {key} in HDU {hdu:?} of {}", path.display()));
            let card = format!("{key:<8}= {value:>20}");
            bytes[*pos..*pos + 80].copy_from_slice(format!("{card:<80}").as_bytes());
            std::fs::write(path, &bytes).expect("write the edited file");
            return;
        }
        let naxis = int("NAXIS");
        let elements: u64 = if naxis == 0 {
            0
        } else {
            (1..=naxis).map(|i| int(&format!("NAXIS{i}"))).product()
        };
        let gcount = if cards.iter().any(|(_, c)| c.starts_with("GCOUNT ")) {
            int("GCOUNT")
        } else {
            1
        };
        let size = (elements + int("PCOUNT")) * gcount * int("BITPIX") / 8;
        start = data + (size as usize).div_ceil(2880) * 2880;
    }
    panic!("no HDU {hdu:?} in {}", path.display());
}
