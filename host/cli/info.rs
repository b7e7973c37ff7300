//! `desi-extract info FILE...`

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// PSF, preproc or frame FITS files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Prints a description of each file.
pub fn run(args: InfoArgs) -> anyhow::Result<ExitCode> {
    for (i, path) in args.files.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", desi_extract::io::describe(path)?);
    }
    Ok(ExitCode::SUCCESS)
}
