//! Simulation of preproc images: known spectra projected through the PSF, with optional
//! Poisson and Gaussian read noise (reproducible from a seed).

pub mod cosmics;
pub mod spectra;

use crate::psf::{GaussHermitePsf, PsfError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};
use rayon::prelude::*;

pub use cosmics::{CosmicConfig, CosmicHit, Track};
pub use spectra::{builtin_spectra, Spectra};

/// What a simulation adds to the plain projection of [`simulated_preproc`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SimExtras {
    /// Project every bin as `oversample` sub-bins spread over its width (photons shared
    /// equally) instead of one spot at its centre: a PSF mismatch against the extraction's
    /// model (1 or 0: none).
    pub oversample: usize,
    /// Cosmic rays added after the noise (unmasked, as cosmics that escaped preproc).
    pub cosmics: Option<CosmicConfig>,
}

/// `spectra` on a grid `factor` times finer: each bin split into `factor` sub-bins centred
/// across its width (the grid's local step), each with `1/factor` of its photons.
pub fn oversampled(spectra: &Spectra, factor: usize) -> Spectra {
    let factor = factor.max(1);
    let nwave = spectra.nwave();
    if factor == 1 || nwave < 2 {
        return spectra.clone();
    }
    let dw: Vec<f64> = (0..nwave)
        .map(|k| {
            let (a, b) = (k.saturating_sub(1), (k + 1).min(nwave - 1));
            (spectra.wave[b] - spectra.wave[a]) / (b - a) as f64
        })
        .collect();
    let wave: Vec<f64> = (0..nwave)
        .flat_map(|k| {
            let (w, d) = (spectra.wave[k], dw[k]);
            (0..factor).map(move |j| w + d * ((j as f64 + 0.5) / factor as f64 - 0.5))
        })
        .collect();
    let flux = spectra
        .flux
        .iter()
        .flat_map(|&f| std::iter::repeat_n(f / factor as f64, factor))
        .collect();
    Spectra {
        specmin: spectra.specmin,
        nspec: spectra.nspec,
        wave,
        flux,
    }
}

/// Rows per independently seeded noise chunk (keeps noise independent of the thread count).
const NOISE_ROWS_PER_CHUNK: usize = 16;

/// Projects `spectra` (photons per wavelength bin) through the PSF onto a zero CCD of the
/// PSF's size: `image = Σ_(s,k) phot[s][k] · spot(s, wave_k)`. Returns `(nrow, ncol)` f64.
/// Stamp pixels falling off the CCD are dropped.
pub fn project_spectra(psf: &GaussHermitePsf, spectra: &Spectra) -> Result<Vec<f64>, PsfError> {
    let (nrow, ncol) = (psf.npix_y, psf.npix_x);
    let mut image = vec![0.0; nrow * ncol];
    let chunk = 25;
    let mut s_start = 0;
    while s_start < spectra.nspec {
        let n = chunk.min(spectra.nspec - s_start);
        let spots = psf.spots(spectra.specmin + s_start, n, &spectra.wave)?;
        for s in 0..n {
            for k in 0..spectra.nwave() {
                let phot = spectra.flux[(s_start + s) * spectra.nwave() + k];
                if phot == 0.0 {
                    continue;
                }
                let c = spots.corner(s, k);
                let stamp = spots.stamp(s, k);
                for r in 0..spots.ny {
                    let row = c.yc as i64 + r as i64;
                    if row < 0 || row >= nrow as i64 {
                        continue;
                    }
                    for i in 0..spots.nx {
                        let col = c.xc as i64 + i as i64;
                        if col < 0 || col >= ncol as i64 {
                            continue;
                        }
                        image[row as usize * ncol + col as usize] += phot * stamp[r * spots.nx + i];
                    }
                }
            }
        }
        s_start += n;
    }
    Ok(image)
}

/// Draws a noisy image: Poisson(model) + Normal(0, read_noise) per pixel, from `seed`.
/// Each chunk of rows has its own generator seeded from (seed, chunk), so the result does
/// not depend on the number of threads.
pub fn add_noise(model: &[f64], ncol: usize, read_noise: f64, seed: u64) -> Vec<f64> {
    let mut out = vec![0.0; model.len()];
    let chunk_len = NOISE_ROWS_PER_CHUNK * ncol.max(1);
    out.par_chunks_mut(chunk_len)
        .zip(model.par_chunks(chunk_len))
        .enumerate()
        .for_each(|(chunk, (dst, src))| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(chunk as u64 + 1);
            let gauss = Normal::new(0.0, read_noise.max(0.0)).ok();
            for (d, &m) in dst.iter_mut().zip(src) {
                let counts = if m > 0.0 {
                    match Poisson::new(m) {
                        Ok(p) => p.sample(&mut rng),
                        Err(_) => m,
                    }
                } else {
                    0.0
                };
                let noise = gauss.map_or(0.0, |g| g.sample(&mut rng));
                *d = counts + noise;
            }
        });
    out
}

/// Inverse variance of a simulated image: `1 / (model + read_noise²)` (0 where that is not
/// positive).
pub fn model_ivar(model: &[f64], read_noise: f64) -> Vec<f64> {
    let rn2 = read_noise * read_noise;
    model
        .iter()
        .map(|&m| {
            let var = m.max(0.0) + rn2;
            if var > 0.0 {
                1.0 / var
            } else {
                0.0
            }
        })
        .collect()
}

/// An in-memory preproc image of the PSF's CCD: `spectra` projected, noise added unless
/// `noiseless`, IVAR from the noiseless model, MASK 0, CAMERA `camera`.
pub fn simulated_preproc(
    psf: &GaussHermitePsf,
    spectra: &Spectra,
    read_noise: f64,
    seed: u64,
    noiseless: bool,
    camera: &str,
) -> Result<crate::io::PreprocImage, PsfError> {
    simulated_preproc_with(
        psf,
        spectra,
        read_noise,
        seed,
        noiseless,
        camera,
        &SimExtras::default(),
    )
    .map(|(image, _)| image)
}

/// [`simulated_preproc`] with `extras`: the spectra projected `extras.oversample` times finer
/// and cosmic rays drawn from `seed` added after the noise (their electrons also enter the
/// IVAR, as preproc's variance from the pixel values does). Returns the image and the cosmic
/// truth (hit pixels in ascending order; empty without cosmics).
///
/// # Errors
/// The PSF cannot be evaluated at a wavelength.
pub fn simulated_preproc_with(
    psf: &GaussHermitePsf,
    spectra: &Spectra,
    read_noise: f64,
    seed: u64,
    noiseless: bool,
    camera: &str,
    extras: &SimExtras,
) -> Result<(crate::io::PreprocImage, Vec<CosmicHit>), PsfError> {
    let mut model = if extras.oversample > 1 {
        project_spectra(psf, &oversampled(spectra, extras.oversample))?
    } else {
        project_spectra(psf, spectra)?
    };
    let mut image = if noiseless {
        model.clone()
    } else {
        add_noise(&model, psf.npix_x, read_noise, seed)
    };
    let hits = match &extras.cosmics {
        Some(cfg) => {
            let tracks = cosmics::draw_tracks(psf.npix_y, psf.npix_x, cfg, seed);
            cosmics::deposit(&tracks, psf.npix_y, psf.npix_x)
        }
        None => Vec::new(),
    };
    for h in &hits {
        image[h.pixel] += h.electrons;
        model[h.pixel] += h.electrons;
    }
    let ivar = model_ivar(&model, read_noise);
    let preproc = crate::io::PreprocImage {
        path: std::path::PathBuf::from(format!("simulated-{camera}.fits")),
        nx: psf.npix_x,
        ny: psf.npix_y,
        image: image.iter().map(|&v| v as f32).collect(),
        ivar: ivar.iter().map(|&v| v as f32).collect(),
        mask: vec![0; model.len()],
        camera: camera.to_string(),
        header: Vec::new(),
        readnoise: None,
        fibermap: None,
    };
    Ok((preproc, hits))
}
