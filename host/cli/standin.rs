//! `desi-extract standin-psf`: a labelled stand-in b or z PSF derived from a real r PSF, for
//! exercising b/z code paths (grids, file naming, the exposure pipeline) where only r PSFs
//! are at hand. The traces and spot shapes are the r camera's, relabelled in wavelength.

use super::InputError;
use clap::Args;
use desi_extract::exposure::cameras;
use desi_extract::io::{self, Keyword};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `standin-psf`.
#[derive(Debug, Args)]
pub struct StandinArgs {
    /// A real GaussHermite PSF of an r camera.
    #[arg(short = 'p', long = "psf")]
    psf: PathBuf,
    /// Output PSF file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Target camera band: b or z (the r PSF relabelled so that desi_proc's r grid
    /// 5760-7620 A lands on the band's grid, 3600-5800 A or 7520-9824 A); a digit may follow
    /// (b0, z3) and names the CAMERA keyword.
    #[arg(long)]
    camera: String,
}

/// Runs `standin-psf`.
pub fn run(args: StandinArgs) -> anyhow::Result<ExitCode> {
    let camera = args.camera.to_lowercase();
    let band = camera.chars().next().unwrap_or(' ');
    let digit_ok = camera.len() == 1
        || (camera.len() == 2 && camera.chars().nth(1).is_some_and(|c| c.is_ascii_digit()));
    let bad_camera = || {
        InputError(format!(
            "--camera {}: expected b or z, optionally followed by a digit (b0, z3)",
            args.camera
        ))
    };
    io::check_outputs(&[("-p", &args.psf)], &[("-o", &args.output)])?;
    let target = cameras::band(band)
        .filter(|target| digit_ok && target.band != 'r')
        .ok_or_else(bad_camera)?;
    let real = io::read_psf(&args.psf)?;
    let real_domain = (real.sigma_x.wavemin, real.sigma_x.wavemax);
    let (wavemin, wavemax) = cameras::standin_domain(target, real_domain).ok_or_else(bad_camera)?;
    let standin = real.remapped(wavemin, wavemax);
    let source = args
        .psf
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.psf.display().to_string());
    let note = format!("derived from {source} for testing only");
    let mut keywords = vec![Keyword::str(
        "STANDIN",
        &note,
        "NOT A REAL PSF: wavelength-relabelled copy",
    )];
    if camera.len() == 2 {
        keywords.push(Keyword::str("CAMERA", &camera, "Camera of the stand-in"));
    }
    io::write_psf(&args.output, &standin, &keywords)?;
    eprintln!(
        "desi-extract standin-psf: wrote {} — a STAND-IN {band} PSF {note} (the r traces and \
         spots relabelled onto {wavemin:.1}-{wavemax:.1} A; not a real PSF)",
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
