//! The frame file of an extraction: its arrays and desispec's header keywords.

use super::provenance::{dependency_keywords, shorten_filename};
use super::{ExtractError, Extraction};
use crate::io::{
    card_name, find_keyword, split_value_comment, FrameView, Keyword, KeywordValue, PreprocImage,
};
use crate::patch::WavelengthGrid;
use std::path::Path;

/// The FLAVOR values of a frame file that desispec accepts (`desispec.io.params`'
/// `frame_types`, which `Frame.vet()` checks).
pub const FRAME_FLAVORS: &[&str] = &["none", "flat", "arc", "zero", "bias", "science"];

/// Refuses, before any work, an image whose frame file desispec could not take
/// (`desispec.io.read_frame` fails or `Frame.vet()` is not 0): a header without a FLAVOR among
/// [`FRAME_FLAVORS`] (desispec's `write_frame` refuses such a frame), a header card (carried
/// into the frame) whose value FITS readers cannot parse, a FIBERMAP (carried too) without an
/// integer FIBER column. A preproc desispec wrote has none of these.
pub fn check_frame_metadata(image: &PreprocImage) -> Result<(), ExtractError> {
    let bad = |reason: String| ExtractError::Input {
        path: image.path.display().to_string(),
        reason,
    };
    let flavor = match find_keyword(&image.header, "FLAVOR") {
        Some(KeywordValue::Str(f)) if FRAME_FLAVORS.contains(&f.trim()) => None,
        Some(KeywordValue::Str(f)) => Some(format!("FLAVOR '{}' is not one of", f.trim())),
        Some(other) => Some(format!("FLAVOR {other:?} is not one of")),
        None => Some("no FLAVOR keyword: expected one of".to_string()),
    };
    if let Some(reason) = flavor {
        return Err(bad(format!(
            "{reason} {} (desispec refuses to write a frame without one)",
            FRAME_FLAVORS.join(", ")
        )));
    }
    if let Some(card) = image.header.iter().find(|c| !card_text_is_legal(c)) {
        return Err(bad(format!(
            "header card {:?} is not a legal FITS card (keyword of A-Z, 0-9, '-', '_'; printable \
             ASCII text)",
            card.trim_end()
        )));
    }
    if let Some(card) = image.header.iter().find(|c| !card_value_parses(c)) {
        return Err(bad(format!(
            "header card {} has a value FITS readers cannot parse: {:?}",
            card_name(card),
            card.trim_end()
        )));
    }
    if let Some(fibermap) = &image.fibermap {
        if fibermap.column_i64("FIBER").is_none() {
            return Err(bad(format!(
                "FIBERMAP has no integer FIBER column (columns: {})",
                fibermap
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

/// Whether a raw header card is legal FITS text (which cfitsio refuses to write otherwise, after
/// the whole extraction): printable ASCII only, and a keyword (columns 1-8, left-justified) of
/// upper-case letters, digits, `-` and `_`, or blank.
fn card_text_is_legal(card: &str) -> bool {
    if !card.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return false;
    }
    let name = card.get(..8.min(card.len())).unwrap_or("").trim_end();
    name.bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Whether the value of a raw header card is one the FITS standard (and astropy) reads: a
/// quoted string, T or F, an integer or real number (E or D exponent), a complex number in
/// parentheses, or nothing (undefined). Cards without a value indicator (`= ` in columns
/// 9-10: COMMENT, HISTORY, CONTINUE, HIERARCH, blank) are not checked.
fn card_value_parses(card: &str) -> bool {
    if card.starts_with("HIERARCH ") || card.get(8..10) != Some("= ") {
        return true;
    }
    let (value, _) = split_value_comment(card.get(10..).unwrap_or(""));
    let v = value.trim();
    if v.is_empty() || v == "T" || v == "F" || (v.starts_with('(') && v.ends_with(')')) {
        return true;
    }
    if let Some(s) = v.strip_prefix('\'') {
        // Closed, with inner quotes doubled.
        return s.ends_with('\'') && s[..s.len() - 1].replace("''", "").find('\'').is_none();
    }
    v.chars()
        .all(|c| c.is_ascii_digit() || "+-.EDed".contains(c))
        && (v.parse::<i64>().is_ok() || v.replace(['D', 'd'], "E").parse::<f64>().is_ok())
}

/// Frame file contents of an extraction of `input` with `psf_path` (`in_psf`: the PSF's
/// IN_PSF keyword, passed on as ORIG_PSF), with desispec's keywords: NSPEC, WAVEMIN/WAVEMAX/
/// WAVESTEP, SPECTER (the extraction code), IN_PSF and IN_IMG as given on the command line and
/// shortened as desispec does, the DEPNAMnn/DEPVERnn provenance and ORIG_PSF
/// (see [`super::provenance`]). The arrays are borrowed from `ex` and `grid`, the header cards
/// from `image`: nothing is copied.
pub fn frame_data<'a>(
    ex: &'a Extraction,
    image: &'a PreprocImage,
    in_psf: Option<&str>,
    psf_path: &Path,
    input: &Path,
    grid: &'a WavelengthGrid,
) -> FrameView<'a> {
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
    FrameView {
        specmin: a.specmin,
        nspec: a.nspec,
        nwave: a.nwave,
        ndiag: a.ndiag,
        wavelength: &grid.wave,
        flux: &a.flux,
        ivar: &a.ivar,
        mask: &ex.mask,
        resolution: &a.rdiags,
        chi2pix: &a.chi2pix,
        header: &image.header,
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
            assert!(check_frame_metadata(&image(&[&card])).is_ok(), "{card}");
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
            let err = check_frame_metadata(&image(&cards))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("preproc-r0-00000001.fits") && err.contains(says),
                "{err}"
            );
        }
    }

    #[test]
    fn carried_cards_must_parse() {
        let flavor = "FLAVOR  = 'science '";
        for good in [
            "SIMSEED =                    0 / Noise seed",
            "EXPTIME =               900.25 / s",
            "X       =              -1.5D-3",
            "X       =                1E+10",
            "X       =                    T",
            "X       =           (1.0, 2.0)",
            "X       =                      / undefined",
            "X       = 'it''s / not a comment'",
            "COMMENT   anything = at all 'x",
            "HISTORY whatever",
            "HIERARCH ESO DET = 3",
        ] {
            assert!(
                check_frame_metadata(&image(&[flavor, good])).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "SIMSEED =           E        0 / Noise seed",
            "X       =                  nan",
            "X       =                  inf",
            "X       =                   1E",
            "X       = 'unclosed",
            "X       = 'a'b'",
            "X       =              science",
        ] {
            let err = check_frame_metadata(&image(&[flavor, bad]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot parse"), "{bad}: {err}");
        }
    }

    #[test]
    fn carried_cards_must_be_legal_fits_text() {
        let flavor = "FLAVOR  = 'science '";
        for bad in [
            "EXTN\u{fffd}ME = 'IMAGE   '",
            "extname = 'IMAGE   '",
            "EXT NAME= 'IMAGE   '",
            "EXTNAME = 'IMA\tGE  '",
        ] {
            let err = check_frame_metadata(&image(&[flavor, bad]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a legal FITS card"), "{bad:?}: {err}");
        }
        for good in [
            "DATE-OBS= '2026-12-06'",
            "MY_KEY1 =                    1",
            "",
        ] {
            assert!(
                check_frame_metadata(&image(&[flavor, good])).is_ok(),
                "{good:?}"
            );
        }
    }
}
