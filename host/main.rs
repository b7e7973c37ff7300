//! The `desi-extract` command line. Exit codes: 0 success, 1 bad input, 2 runtime failure.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A write beyond the file size limit (RLIMIT_FSIZE) then fails with EFBIG, and the error
    // path removes the temporary and exits 2, instead of the process being killed with it
    // left behind. (CPython does the same at start-up.)
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
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
