//! `desi-extract simulate`: project spectra through a PSF into a preproc image.

use super::{parse_wave_range, InputError};
use anyhow::Context;
use clap::Args;
use desi_extract::io::{self, FitsTable, Keyword};
use desi_extract::patch::WavelengthGrid;
use desi_extract::sim::{self, builtin_spectra, Spectra};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Input GaussHermite PSF file.
    #[arg(short = 'p', long = "psf")]
    psf: PathBuf,
    /// Output preproc file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Write the simulated spectra (photons per bin; HDUs FLUX, WAVELENGTH) here.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Input spectra (HDUs FLUX [nspec][nwave] photons per bin, WAVELENGTH [nwave]) instead of
    /// the built-in mix; its rows go to fibers SPECMIN, SPECMIN+1, ...
    #[arg(long)]
    spectra: Option<PathBuf>,
    /// Wavelength grid WMIN,WMAX[,DW] of the built-in spectra (default: the PSF domain, 0.8 A).
    #[arg(short = 'w', long = "wavelength", allow_hyphen_values = true)]
    wavelength: Option<String>,
    /// First spectrum (relative to the PSF's FIBERMIN).
    #[arg(short = 's', long = "specmin", default_value_t = 0)]
    specmin: usize,
    /// Number of spectra (default: all fibers of the PSF from SPECMIN on).
    #[arg(short = 'n', long = "nspec")]
    nspec: Option<usize>,
    /// Gaussian read noise (electrons RMS per pixel).
    #[arg(long = "read-noise", default_value_t = 3.0)]
    read_noise: f64,
    /// Seed of the noise generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the noiseless model image (IVAR still includes the Poisson and read-noise variance).
    #[arg(long)]
    noiseless: bool,
    /// CAMERA keyword of the output.
    #[arg(long, default_value = "r0")]
    camera: String,
    /// EXPID keyword of the output.
    #[arg(long, default_value_t = 0)]
    expid: i64,
    /// Add cosmic rays (straight and curved tracks, unmasked) at --cosmic-rate for --exptime.
    #[arg(long)]
    cosmics: bool,
    /// Cosmic-ray events per cm^2 of CCD per minute (2.5: thick CCDs at ~2,100 m).
    #[arg(long = "cosmic-rate", default_value_t = 2.5, requires = "cosmics")]
    cosmic_rate: f64,
    /// Exposure time for the cosmic rays (s).
    #[arg(long, default_value_t = 1000.0, requires = "cosmics")]
    exptime: f64,
    /// Write the cosmic-ray truth here: an image (EXTNAME COSMICS) of the electrons each pixel
    /// received.
    #[arg(long = "cosmic-truth", requires = "cosmics")]
    cosmic_truth: Option<PathBuf>,
    /// Project each bin as this many sub-bins across its width (a PSF mismatch; 1: none).
    #[arg(long = "psf-oversample", default_value_t = 1)]
    psf_oversample: usize,
}

/// Runs `simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let mut inputs = vec![("-p", args.psf.as_path())];
    inputs.extend(args.spectra.as_deref().map(|p| ("--spectra", p)));
    let mut outputs = vec![("-o", args.output.as_path())];
    outputs.extend(args.truth.as_deref().map(|p| ("--truth", p)));
    outputs.extend(args.cosmic_truth.as_deref().map(|p| ("--cosmic-truth", p)));
    if !(args.cosmic_rate >= 0.0 && args.cosmic_rate.is_finite())
        || !(args.exptime >= 0.0 && args.exptime.is_finite())
        || !(1..=64).contains(&args.psf_oversample)
    {
        return Err(InputError(format!(
            "--cosmic-rate {} and --exptime {} must be finite values >= 0, --psf-oversample {} in 1..=64",
            args.cosmic_rate, args.exptime, args.psf_oversample
        ))
        .into());
    }
    io::check_outputs(&inputs, &outputs)?;
    if !(args.read_noise >= 0.0 && args.read_noise.is_finite()) {
        return Err(InputError(format!(
            "--read-noise {} must be a finite value >= 0",
            args.read_noise
        ))
        .into());
    }
    let psf = io::read_psf(&args.psf)?;
    let spectra = match &args.spectra {
        Some(path) => {
            if args.wavelength.is_some() || args.nspec.is_some() {
                return Err(InputError(
                    "--spectra defines the wavelengths and fibers: drop -w and -n".into(),
                )
                .into());
            }
            let mut spectra = io::read_spectra(path)?;
            spectra.specmin = args.specmin;
            spectra
        }
        None => {
            let (wmin, wmax, dw) = match &args.wavelength {
                Some(text) => parse_wave_range(text, 0.8)?,
                None => (psf.sigma_x.wavemin, psf.sigma_x.wavemax, 0.8),
            };
            let grid = WavelengthGrid::arange(wmin, wmax, dw)?;
            let nspec = args.nspec.unwrap_or(psf.nspec.saturating_sub(args.specmin));
            builtin_spectra(args.specmin, nspec, &grid.wave)
        }
    };
    check_spectra(&psf, &spectra, &args)?;
    eprintln!(
        "simulate: {} spectra x {} wavelengths ({:.1}-{:.1} A) through {}",
        spectra.nspec,
        spectra.nwave(),
        spectra.wave.first().copied().unwrap_or(0.0),
        spectra.wave.last().copied().unwrap_or(0.0),
        args.psf.display()
    );
    let camera = args.camera.to_lowercase();
    let extras = sim::SimExtras {
        oversample: args.psf_oversample,
        cosmics: args.cosmics.then(|| sim::CosmicConfig {
            rate: args.cosmic_rate,
            exptime: args.exptime,
            ..sim::CosmicConfig::default()
        }),
    };
    let (mut preproc, hits) = sim::simulated_preproc_with(
        &psf,
        &spectra,
        args.read_noise,
        args.seed,
        args.noiseless,
        &camera,
        &extras,
    )?;
    if args.cosmics {
        eprintln!(
            "simulate: {} pixels hit by cosmic rays ({:.0} electrons in all)",
            hits.len(),
            hits.iter().map(|h| h.electrons).sum::<f64>()
        );
    }
    if let Some(path) = &args.cosmic_truth {
        let mut image = vec![0.0; psf.npix_y * psf.npix_x];
        for h in &hits {
            image[h.pixel] = h.electrons;
        }
        let keywords = [
            Keyword::float("CRRATE", args.cosmic_rate, "Cosmic rays per cm2 per minute"),
            Keyword::float("EXPTIME", args.exptime, "Exposure time [s]"),
            Keyword::int("NCRPIX", hits.len() as i64, "Pixels hit"),
        ];
        io::write_image_hdu(path, psf.npix_y, psf.npix_x, &image, "COSMICS", &keywords)?;
    }
    preproc.path = args.output.clone();
    preproc.header = header_cards(&args, &spectra);
    let fibers = psf.fibermin..psf.fibermin + psf.nspec;
    preproc.fibermap = Some(FitsTable::minimal_fibermap(fibers, &[]));
    io::write_preproc(&args.output, &preproc)?;
    if let Some(truth) = &args.truth {
        io::write_spectra(truth, &spectra)
            .with_context(|| format!("writing the truth to {}", truth.display()))?;
    }
    eprintln!(
        "simulate: wrote {} ({}x{} pixels{}) in {:.2} s",
        args.output.display(),
        psf.npix_y,
        psf.npix_x,
        if args.noiseless { ", noiseless" } else { "" },
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Refuses spectra that do not fit the PSF.
fn check_spectra(
    psf: &desi_extract::psf::GaussHermitePsf,
    spectra: &Spectra,
    args: &SimulateArgs,
) -> Result<(), InputError> {
    if spectra.nspec == 0 || spectra.specmin + spectra.nspec > psf.nspec {
        return Err(InputError(format!(
            "spectra {}..{} do not fit the {} fibers of {}",
            spectra.specmin,
            spectra.specmin + spectra.nspec,
            psf.nspec,
            args.psf.display()
        )));
    }
    let (lo, hi) = (psf.sigma_x.wavemin, psf.sigma_x.wavemax);
    let outside = spectra
        .wave
        .iter()
        .find(|&&w| w < lo - 10.0 || w > hi + 10.0);
    if let Some(w) = outside {
        return Err(InputError(format!(
            "wavelength {w} A lies outside the PSF domain {lo}..{hi} A of {}",
            args.psf.display()
        )));
    }
    if spectra.flux.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(InputError(
            "input spectra must be finite and non-negative".into(),
        ));
    }
    Ok(())
}

/// Header cards of the simulated IMAGE HDU.
fn header_cards(args: &SimulateArgs, spectra: &Spectra) -> Vec<String> {
    [
        Keyword::str("CAMERA", &args.camera.to_lowercase(), "Spectrograph camera"),
        Keyword::float("RDNOISE", args.read_noise, "Read noise (electrons RMS)"),
        Keyword::str("FLAVOR", "science", "Exposure flavor"),
        Keyword::int("EXPID", args.expid, "Exposure number"),
        Keyword::str("SIMULATE", "desi-extract simulate", "Simulated image"),
        Keyword::int("SIMSEED", args.seed as i64, "Noise seed"),
        Keyword::int(
            "SIMNOISE",
            i64::from(!args.noiseless),
            "1 if Poisson + read noise were added",
        ),
        Keyword::int(
            "SIMSPMIN",
            spectra.specmin as i64,
            "First simulated spectrum",
        ),
        Keyword::int(
            "SIMNSPEC",
            spectra.nspec as i64,
            "Number of simulated spectra",
        ),
    ]
    .iter()
    .map(Keyword::card)
    .collect()
}
