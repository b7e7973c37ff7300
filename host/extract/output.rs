//! The frame file of an extraction: its arrays and desispec's header keywords.

use super::provenance::{dependency_keywords, shorten_filename};
use super::Extraction;
use crate::io::{FrameData, Keyword, PreprocImage};
use crate::patch::WavelengthGrid;
use std::path::Path;

/// Frame file contents of an extraction of `input` with `psf_path` (`in_psf`: the PSF's
/// IN_PSF keyword, passed on as ORIG_PSF), with desispec's keywords: NSPEC, WAVEMIN/WAVEMAX/
/// WAVESTEP, SPECTER (the extraction code), IN_PSF and IN_IMG as given on the command line and
/// shortened as desispec does, the DEPNAMnn/DEPVERnn provenance and ORIG_PSF
/// (see [`super::provenance`]).
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
        Keyword::float("WAVEMIN", grid.wmin, "First wavelength [Angstroms]"),
        Keyword::float("WAVEMAX", grid.wmax, "Last wavelength [Angstroms]"),
        Keyword::float("WAVESTEP", grid.dw, "Wavelength step size [Angstroms]"),
        Keyword::str(
            "SPECTER",
            concat!("desi-extract ", env!("CARGO_PKG_VERSION")),
            "Extraction code",
        ),
        Keyword::str(
            "IN_PSF",
            &shorten_filename(&psf_path.to_string_lossy()),
            "Input spectral PSF",
        ),
        Keyword::str("IN_IMG", &shorten_filename(&input.to_string_lossy()), ""),
    ];
    keywords.extend(dependency_keywords(&image.header));
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
