//! The frame file of an extraction: its arrays and desispec's header keywords.

use super::provenance::{dependency_keywords, shorten_filename};
use super::{ExtractError, Extraction};
use crate::io::{find_keyword, FrameData, Keyword, KeywordValue, PreprocImage};
use crate::patch::WavelengthGrid;
use std::path::Path;

/// The FLAVOR values of a frame file that desispec accepts (`desispec.io.params`'
/// `frame_types`, which `Frame.vet()` checks).
pub const FRAME_FLAVORS: &[&str] = &["none", "flat", "arc", "zero", "bias", "science"];

/// Refuses a preproc whose header has no FLAVOR among [`FRAME_FLAVORS`], before any work:
/// its frame would fail desispec's `Frame.vet()`, so desispec's `write_frame` refuses to write
/// it and `read_frame` warns on it (a preproc desispec wrote always has one).
pub fn check_frame_flavor(image: &PreprocImage) -> Result<(), ExtractError> {
    let reason = match find_keyword(&image.header, "FLAVOR") {
        Some(KeywordValue::Str(f)) if FRAME_FLAVORS.contains(&f.trim()) => return Ok(()),
        Some(KeywordValue::Str(f)) => format!("FLAVOR '{}' is not one of", f.trim()),
        Some(other) => format!("FLAVOR {other:?} is not one of"),
        None => "no FLAVOR keyword: expected one of".to_string(),
    };
    Err(ExtractError::Input {
        path: image.path.display().to_string(),
        reason: format!(
            "{reason} {} (desispec refuses to write a frame without one)",
            FRAME_FLAVORS.join(", ")
        ),
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn image(cards: &[&str]) -> PreprocImage {
        PreprocImage {
            path: "preproc-r0-00000001.fits".into(),
            nx: 0,
            ny: 0,
            image: Vec::new(),
            ivar: Vec::new(),
            mask: Vec::new(),
            camera: "r0".into(),
            header: cards.iter().map(|c| c.to_string()).collect(),
            readnoise: None,
            fibermap: None,
        }
    }

    #[test]
    fn flavor_must_be_a_desispec_frame_type() {
        for flavor in FRAME_FLAVORS {
            let card = Keyword::str("FLAVOR", flavor, "").card();
            assert!(check_frame_flavor(&image(&[&card])).is_ok(), "{card}");
        }
        for (cards, says) in [
            (vec![], "no FLAVOR keyword"),
            (
                vec!["FLAVOR  = 'dither  '"],
                "FLAVOR 'dither' is not one of",
            ),
            (
                vec!["FLAVOR  =                    3"],
                "is not one of none, flat",
            ),
        ] {
            let err = check_frame_flavor(&image(&cards)).unwrap_err().to_string();
            assert!(
                err.contains("preproc-r0-00000001.fits") && err.contains(says),
                "{err}"
            );
        }
    }
}
