//! The `desi-extract` command line. Exit codes: 0 success, 1 bad input, 2 runtime failure.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("desi-extract: error: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
