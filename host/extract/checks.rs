//! Consistency checks of a request against its PSF and image, before any work.

use super::ExtractError;
use crate::io::PreprocImage;
use crate::patch::{PaddedGrid, WavelengthGrid};
use crate::psf::{GaussHermitePsf, SpotTable};

/// Rejects images whose shape differs from the PSF's CCD, a preproc of another camera than the
/// PSF's (CAMERA keywords, when both have one: a preproc file always has one, an in-memory image
/// handed over by the Python binding may not), a FIBERMAP without one row per PSF fiber, and
/// grids outside the PSF domain.
pub(crate) fn check_compatible(
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    grid: &WavelengthGrid,
) -> Result<(), ExtractError> {
    let image_camera = Some(image.camera.as_str()).filter(|c| !c.is_empty());
    if let Some(camera) = psf
        .camera
        .as_deref()
        .filter(|c| image_camera.is_some_and(|i| i != *c))
    {
        return Err(ExtractError::Input {
            path: image.path.display().to_string(),
            reason: format!(
                "CAMERA is {} but the PSF {} is for camera {camera}",
                image.camera,
                psf.path.display()
            ),
        });
    }
    if let Some(fibermap) = image.fibermap.as_ref().filter(|f| f.nrows != psf.nspec) {
        return Err(ExtractError::Input {
            path: image.path.display().to_string(),
            reason: format!(
                "FIBERMAP has {} rows but the PSF {} has {} fibers (one row per fiber)",
                fibermap.nrows,
                psf.path.display(),
                psf.nspec
            ),
        });
    }
    if image.ny != psf.npix_y || image.nx != psf.npix_x {
        return Err(ExtractError::Input {
            path: image.path.display().to_string(),
            reason: format!(
                "image is {}x{} (rows x columns) but the PSF {} describes a {}x{} CCD",
                image.ny,
                image.nx,
                psf.path.display(),
                psf.npix_y,
                psf.npix_x
            ),
        });
    }
    let (lo, hi) = (psf.sigma_x.wavemin, psf.sigma_x.wavemax);
    let first = grid.wave.first().copied().unwrap_or(grid.wmin);
    let last = grid.wave.last().copied().unwrap_or(grid.wmax);
    if grid.wave.is_empty() || first < lo || last > hi + 0.5 * grid.dw {
        return Err(ExtractError::Input {
            path: psf.path.display().to_string(),
            reason: format!(
                "requested wavelengths {first:.3}..{last:.3} A lie outside the PSF domain {lo}..{hi} A"
            ),
        });
    }
    Ok(())
}

/// Rejects fibers whose stamps leave the CCD columns anywhere on the padded grid.
pub(crate) fn check_on_ccd(
    psf: &GaussHermitePsf,
    spots: &SpotTable,
    padded: &PaddedGrid,
    ncol: usize,
) -> Result<(), ExtractError> {
    for s in 0..spots.nspec {
        for k in 0..spots.nwave {
            let c = spots.corner(s, k);
            if c.xc < 0 || c.xc as usize + spots.nx > ncol {
                return Err(ExtractError::Input {
                    path: psf.path.display().to_string(),
                    reason: format!(
                        "fiber {} leaves the CCD columns (stamp at column {}) at {:.2} A",
                        psf.fibermin + spots.ispec_min + s,
                        c.xc,
                        padded.fullwave[k]
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Rejects requests whose traces leave the CCD rows: the Y trace of a requested fiber at a
/// requested wavelength outside the pixel centres `-0.5 ..= NPIX_Y - 0.5`. The error names the
/// fibers and the wavelengths. (Patches whose pads alone reach beyond the CCD are extracted
/// and reported as off the CCD, as gpu_specter's CPU path does.)
pub(crate) fn check_traces_on_ccd(
    psf: &GaussHermitePsf,
    grid: &WavelengthGrid,
    specmin: usize,
    nspec: usize,
) -> Result<(), ExtractError> {
    use desi_device::psf::legendre::{legval, normalized_wavelength};
    let table = &psf.ytrace;
    let top = psf.npix_y as f64 - 0.5;
    // (first fiber, last fiber, first wavelength, last wavelength, extreme y)
    let mut off: Option<(usize, usize, f64, f64, f64)> = None;
    for ispec in specmin..(specmin + nspec).min(table.nfiber()) {
        let coeffs = table.fiber(ispec);
        for &wave in &grid.wave {
            let y = legval(
                normalized_wavelength(wave, table.wavemin, table.wavemax),
                coeffs,
            );
            if (-0.5..=top).contains(&y) {
                continue;
            }
            let fiber = psf.fibermin + ispec;
            let worst = |e: f64| {
                if (y - top).max(-0.5 - y) > (e - top).max(-0.5 - e) {
                    y
                } else {
                    e
                }
            };
            off = Some(match off {
                None => (fiber, fiber, wave, wave, y),
                Some((f0, _, w0, w1, e)) => (f0, fiber, w0.min(wave), w1.max(wave), worst(e)),
            });
        }
    }
    match off {
        None => Ok(()),
        Some((f0, f1, w0, w1, y)) => Err(ExtractError::Input {
            path: psf.path.display().to_string(),
            reason: format!(
                "the traces leave the CCD rows (0..{} px): fibers {f0}..={f1} at {w0:.1}..={w1:.1} A \
                 (trace y {y:.1}); request wavelengths where the spectra are on the CCD",
                psf.npix_y
            ),
        }),
    }
}
