//! Sub-commands of the `desi-extract` binary.

mod extract;
mod info;
mod qa;
mod selftest;
mod simulate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Spectroperfectionism extraction of DESI spectrograph frames on CPUs and NVIDIA GPUs.
#[derive(Debug, Parser)]
#[command(name = "desi-extract", version, about)]
pub struct Cli {
    /// Worker threads for the CPU path (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Extract the spectra of one preproc frame (desi_extract_spectra flags).
    Extract(extract::ExtractArgs),
    /// Project spectra through a PSF into a simulated preproc image.
    Simulate(simulate::SimulateArgs),
    /// Describe a PSF, preproc or frame file.
    Info(info::InfoArgs),
    /// Check the GPU backend against the CPU backend on a simulated frame (`--gpu`).
    Selftest(selftest::SelftestArgs),
    /// Compare an extracted frame with the simulated truth: pull statistics and a PNG.
    Qa(qa::QaArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(threads) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {threads} threads: {e}"))?;
    }
    match cli.command {
        Command::Extract(args) => extract::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Info(args) => info::run(args),
        Command::Selftest(args) => selftest::run(args),
        Command::Qa(args) => qa::run(args),
    }
}

/// Marker for errors caused by the user's input (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Exit code for an error: 1 for bad input (files, flags), 2 for runtime failures.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let input = err.chain().any(|cause| {
        cause.is::<InputError>()
            || cause.is::<desi_extract::io::IoError>()
            || cause.is::<desi_extract::patch::ParamsError>()
            || cause.is::<desi_extract::patch::GridError>()
            || matches!(
                cause.downcast_ref::<desi_extract::extract::ExtractError>(),
                Some(
                    desi_extract::extract::ExtractError::Input { .. }
                        | desi_extract::extract::ExtractError::Params(_)
                )
            )
    });
    if input {
        1
    } else {
        2
    }
}

/// Parses `WMIN,WMAX,DW` (DW optional, default `default_dw`).
pub fn parse_wave_range(text: &str, default_dw: f64) -> Result<(f64, f64, f64), InputError> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let number = |s: &str| {
        s.parse::<f64>()
            .map_err(|_| InputError(format!("-w {text}: '{s}' is not a number")))
    };
    match parts.as_slice() {
        [a, b] => Ok((number(a)?, number(b)?, default_dw)),
        [a, b, c] => Ok((number(a)?, number(b)?, number(c)?)),
        _ => Err(InputError(format!("-w {text}: expected WMIN,WMAX[,DW]"))),
    }
}
