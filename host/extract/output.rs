//! The frame file of an extraction: its arrays and desispec's header keywords.

use super::Extraction;
use crate::io::{FrameData, Keyword, PreprocImage};
use crate::patch::WavelengthGrid;
use std::path::Path;

/// Frame file contents of an extraction of `input` with `psf_path` (`in_psf`: the PSF's
/// IN_PSF keyword, passed on as ORIG_PSF).
pub fn frame_data(
    ex: &Extraction,
    image: &PreprocImage,
    in_psf: Option<&str>,
    psf_path: &Path,
    input: &Path,
    grid: &WavelengthGrid,
) -> FrameData {
    let a = &ex.arrays;
    let mut keywords = vec![
        Keyword::int("NSPEC", a.nspec as i64, "Number of spectra"),
        Keyword::float("WAVEMIN", grid.wmin, "First wavelength [Angstrom]"),
        Keyword::float("WAVEMAX", grid.wmax, "Last wavelength [Angstrom]"),
        Keyword::float("WAVESTEP", grid.dw, "Wavelength step size [Angstrom]"),
        Keyword::str(
            "SPECTER",
            concat!("desi-extract ", env!("CARGO_PKG_VERSION")),
            "Extraction code",
        ),
        Keyword::str("IN_PSF", &short_path(psf_path), "Input spectral PSF"),
        Keyword::str("IN_IMG", &short_path(input), "Input image"),
        Keyword::str("DEPNAM00", "desi-extract", ""),
        Keyword::str("DEPVER00", env!("CARGO_PKG_VERSION"), ""),
    ];
    if let Some(orig) = in_psf {
        keywords.push(Keyword::str(
            "ORIG_PSF",
            orig,
            "PSF the input PSF was derived from",
        ));
    }
    FrameData {
        specmin: a.specmin,
        nspec: a.nspec,
        nwave: a.nwave,
        ndiag: a.ndiag,
        wavelength: grid.wave.clone(),
        flux: a.flux.clone(),
        ivar: a.ivar.clone(),
        mask: ex.mask.clone(),
        resolution: a.rdiags.clone(),
        chi2pix: a.chi2pix.clone(),
        header: image.header.clone(),
        keywords,
    }
}

/// The file name of a path (header values must stay short).
fn short_path(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
