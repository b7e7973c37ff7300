//! The `desi-extract` command line. Exit codes: 0 success, 1 bad input, 2 runtime failure.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors are bad input (exit 1, not clap's 2); --help and --version exit 0.
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(u8::from(err.use_stderr()));
        }
    };
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("desi-extract: error: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
