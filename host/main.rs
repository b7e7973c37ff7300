//! The `desi-extract` command line. Exit codes: 0 success, 1 bad input, 2 runtime failure.

mod cli;

use clap::Parser;
use std::process::ExitCode;

/// Large blocks in transparent huge pages (desi_extract::huge_pages).
#[global_allocator]
static ALLOCATOR: desi_extract::huge_pages::HugePages = desi_extract::huge_pages::HugePages;

fn main() -> ExitCode {
    // A write beyond the file size limit (RLIMIT_FSIZE) then fails with EFBIG, and the error
    // path removes the temporary and exits 2, instead of the process being killed with it
    // left behind. (CPython does the same at start-up.)
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    fixed_allocation_thresholds();
    // DESI_HUGE_PAGES=1: large blocks in transparent huge pages (an experiment, off by default).
    if std::env::var_os("DESI_HUGE_PAGES").is_some_and(|v| v == "1") {
        desi_extract::huge_pages::set_enabled(true);
    }
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

/// Fixes glibc's thresholds instead of its moving ones: blocks of 8 MiB and more (a full
/// frame's flux, ivar, chi2pix and pixmask planes are 9.3 MB each) are always fresh mappings,
/// whose pages the kernel zeroes when they are first touched (the frame pipeline prefaults
/// them in parallel), instead of recycled heap memory that `calloc` clears on the allocating
/// thread: after glibc had raised its threshold past them, the frame's planes took ~4 ms to
/// allocate before each GPU frame could start (`selftest --gpu --trace`, span `frame arrays`).
/// The heap is trimmed only beyond 64 MiB free at its top (glibc's largest moving value).
fn fixed_allocation_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
