//! Spectra files of the simulator (`--spectra` input, `--truth` output): HDU FLUX, f8
//! `(nspec, nwave)` photons per wavelength bin, and HDU WAVELENGTH, f8 `(nwave,)` Angstrom.

use std::path::Path;

use super::atomic::write_atomically;
use super::error::IoError;
use super::fits::{Fits, HduKind, ImgType};
use crate::sim::Spectra;

fn shape_err(fits: &Fits, detail: String) -> IoError {
    IoError::Shape {
        path: fits.path().to_path_buf(),
        hdu: fits.hdu_label().to_string(),
        detail,
    }
}

/// Reads a spectra file. `specmin` of the result is 0 (the caller assigns fibers).
///
/// # Errors
/// Missing file or HDU, shapes that disagree, non-finite values, or a wavelength grid that is
/// not strictly increasing.
pub fn read_spectra(path: &Path) -> Result<Spectra, IoError> {
    let mut fits = Fits::open(path)?;
    fits.require_hdu("WAVELENGTH")?;
    if fits.hdu_kind()? != HduKind::Image {
        return Err(shape_err(&fits, "expected an image".into()));
    }
    let shape = fits.image_shape()?;
    let [nwave] = shape[..] else {
        return Err(shape_err(
            &fits,
            format!("expected a 1-D image, found axes {shape:?}"),
        ));
    };
    let wave: Vec<f64> = fits.read_image(nwave)?;
    if wave.iter().any(|w| !w.is_finite()) || wave.windows(2).any(|p| p[1] <= p[0]) {
        return Err(shape_err(
            &fits,
            "wavelengths must be finite and strictly increasing".into(),
        ));
    }
    fits.require_hdu("FLUX")?;
    if fits.hdu_kind()? != HduKind::Image {
        return Err(shape_err(&fits, "expected an image".into()));
    }
    let shape = fits.image_shape()?;
    let [nw, nspec] = shape[..] else {
        return Err(shape_err(
            &fits,
            format!("expected a 2-D image [nspec][nwave], found axes {shape:?}"),
        ));
    };
    if nw != nwave {
        return Err(shape_err(
            &fits,
            format!("FLUX has {nw} wavelengths but WAVELENGTH has {nwave}"),
        ));
    }
    let flux: Vec<f64> = fits.read_image(nwave * nspec)?;
    if let Some(i) = flux.iter().position(|v| !v.is_finite()) {
        return Err(shape_err(
            &fits,
            format!(
                "non-finite flux at spectrum {}, wavelength index {}",
                i / nwave,
                i % nwave
            ),
        ));
    }
    Ok(Spectra {
        specmin: 0,
        nspec,
        wave,
        flux,
    })
}

/// Writes a spectra file atomically (FLUX primary, WAVELENGTH second).
pub fn write_spectra(path: &Path, spectra: &Spectra) -> Result<(), IoError> {
    write_atomically(path, |fits| {
        fits.create_image(ImgType::F64, &[spectra.nwave(), spectra.nspec])?;
        fits.write_key_str("EXTNAME", "FLUX", "")?;
        fits.write_key_str("BUNIT", "electron", "photons per wavelength bin")?;
        fits.write_image(&spectra.flux)?;
        fits.write_checksum()?;
        fits.create_image(ImgType::F64, &[spectra.nwave()])?;
        fits.write_key_str("EXTNAME", "WAVELENGTH", "")?;
        fits.write_key_str("BUNIT", "Angstrom", "")?;
        fits.write_image(&spectra.wave)?;
        fits.write_checksum()
    })
}
