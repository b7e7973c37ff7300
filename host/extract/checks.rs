//! Consistency checks of a request against its PSF and image, before any work.

use super::ExtractError;
use crate::io::PreprocImage;
use crate::patch::{PaddedGrid, WavelengthGrid};
use crate::psf::{GaussHermitePsf, SpotTable};

/// Rejects images whose shape differs from the PSF's CCD and grids outside the PSF domain.
pub(crate) fn check_compatible(
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    grid: &WavelengthGrid,
) -> Result<(), ExtractError> {
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
