//! `desi-extract qa --frame FRAME --truth TRUTH -o QA.png [--fibers 0,5,12]`: pulls of an
//! extracted frame against the simulated input spectra, and a PNG picture of them.

use super::InputError;
use clap::Args;
use desi_extract::io;
use desi_extract::qa::{self, QaError};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `qa`.
#[derive(Debug, Args)]
pub struct QaArgs {
    /// Extracted frame file.
    #[arg(long)]
    frame: PathBuf,
    /// Truth spectra written by `simulate --truth` (photons per bin).
    #[arg(long)]
    truth: PathBuf,
    /// Output PNG picture.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Spectra to draw, comma separated absolute spectrum numbers (default: the first, middle
    /// and last of the frame).
    #[arg(long, value_delimiter = ',')]
    fibers: Option<Vec<usize>>,
}

/// Runs `qa`.
pub fn run(args: QaArgs) -> anyhow::Result<ExitCode> {
    io::check_outputs(
        &[("--frame", &args.frame), ("--truth", &args.truth)],
        &[("-o", &args.output)],
    )?;
    let frame = io::read_frame(&args.frame)?;
    let truth = io::read_spectra(&args.truth)?;
    let context = |e: QaError| -> anyhow::Error {
        let message = format!("{} vs {}: {e}", args.frame.display(), args.truth.display());
        if e.is_input() {
            InputError(message).into()
        } else {
            anyhow::Error::new(e)
        }
    };
    let model = qa::model_flux(&frame, &truth).map_err(context)?;
    let (_, stats) = qa::pulls_with_model(&frame, &model).map_err(context)?;
    let fibers = args.fibers.unwrap_or_else(|| qa::default_fibers(&frame));
    let name = |p: &PathBuf| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let title = format!("{} vs truth {}", name(&args.frame), name(&args.truth));
    let canvas = qa::render(&frame, &model, &stats, &fibers, &title).map_err(context)?;
    qa::write_png(&canvas, &args.output).map_err(|e| {
        if e.is_input() {
            InputError(e.to_string()).into()
        } else {
            anyhow::Error::new(e)
        }
    })?;
    println!("pulls: N = {}", stats.n);
    println!("  mean = {:+.5}", stats.mean);
    println!("  std = {:.5}", stats.std);
    println!("  |pull| > 3 fraction = {:.5}", stats.frac_abs_gt_3);
    println!("  median chi2pix = {:.5}", stats.median_chi2pix);
    println!("wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}
