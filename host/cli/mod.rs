//! Sub-commands of the `desi-extract` binary.

mod exposure;
mod exposures;
mod extract;
mod info;
mod logging;
mod qa;
mod reject;
mod selftest;
mod simulate;
mod standin;

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
    /// Extract the spectra of one preproc frame (desi_extract_spectra flags); under mpirun the
    /// bundles are spread over the ranks.
    Extract(extract::ExtractArgs),
    /// Extract every frame of an exposure (preproc-{b,r,z}{0..9}-EXPID.fits); under mpirun
    /// with 3+ ranks a reader and a writer rank overlap I/O with the compute ranks.
    Exposure(exposure::ExposureArgs),
    /// Extract every frame of many exposures in one job (a desispec production tree or a list
    /// file); under mpirun/srun the ranks form groups (by node, or --group-size) that take
    /// frames from one queue.
    Exposures(exposures::ExposuresArgs),
    /// Write a labelled stand-in b or z PSF derived from a real r PSF (for tests only).
    StandinPsf(standin::StandinArgs),
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
    logging::init();
    let comm = desi_extract::parallel::Comm::init();
    // CPU ranks sharing a node share its cores unless --threads says otherwise. GPU ranks keep
    // all of them: they mostly wait on the GPU, and their host stages (planning, upload,
    // stitching, reading, writing) then run at full width (30-frame exposure on one H100 with
    // 6 ranks: 16.5 s with the cores split, 12.3 s without).
    let gpu_job = match &cli.command {
        Command::Extract(args) => args.uses_gpu(),
        Command::Exposure(args) => args.uses_gpu(),
        Command::Exposures(args) => args.uses_gpu(),
        _ => false,
    };
    let threads = cli.threads.or_else(|| {
        let local = desi_extract::parallel::comm::env_local_size();
        (comm.size() > 1 && local > 1 && !gpu_job).then(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / local).max(1)
        })
    });
    if let Some(threads) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {threads} threads: {e}"))?;
    }
    match comm.launch() {
        desi_extract::parallel::Launch::Fallback(reason) => eprintln!(
            "desi-extract: started by an MPI launcher but {reason}: running as one process"
        ),
        desi_extract::parallel::Launch::Mpi if comm.rank() == 0 => {
            eprintln!("desi-extract: MPI with {} ranks", comm.size())
        }
        _ => {}
    }
    let result = match cli.command {
        Command::Extract(args) => extract::run(args, &comm),
        Command::Exposure(args) => exposure::run(args, &comm),
        Command::Exposures(args) => exposures::run(args, &comm),
        Command::StandinPsf(args) => standin::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Info(args) => info::run(args),
        Command::Selftest(args) => selftest::run(args),
        Command::Qa(args) => qa::run(args),
    };
    match result {
        // One rank failing alone would leave the others waiting for its messages: end the job.
        Err(err) if comm.size() > 1 => {
            eprintln!("desi-extract: rank {}: error: {err:#}", comm.rank());
            comm.abort(i32::from(exit_code(&err)))
        }
        other => other,
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
            || cause
                .downcast_ref::<desi_extract::io::IoError>()
                .is_some_and(|e| e.is_input_error())
            || cause.is::<desi_extract::patch::ParamsError>()
            || cause.is::<desi_extract::patch::GridError>()
            || cause
                .downcast_ref::<desi_extract::extract::ExtractError>()
                .is_some_and(|e| e.is_input_error())
            || cause
                .downcast_ref::<desi_extract::parallel::RanksError>()
                .is_some_and(|e| e.is_input_error())
            || cause
                .downcast_ref::<desi_extract::exposure::ExposureError>()
                .is_some_and(|e| e.is_input_error())
            || cause
                .downcast_ref::<desi_extract::gpu::GpuError>()
                .is_some_and(|e| e.is_input_error())
    });
    if input {
        1
    } else {
        2
    }
}

/// `--mask-rule` values: desispec's rule for the BAD2DFIT bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MaskRuleArg {
    /// desispec main: chi2pix > 5x the median over fibers and over wavelengths.
    Main,
    /// desispec 0.70.0: chi2pix > 100.
    #[value(name = "0.70")]
    V0_70,
}

impl From<MaskRuleArg> for desi_extract::patch::MaskRule {
    fn from(arg: MaskRuleArg) -> Self {
        match arg {
            MaskRuleArg::Main => Self::Main,
            MaskRuleArg::V0_70 => Self::V0_70,
        }
    }
}

/// `--failed-patches` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailedPatchesArg {
    /// Write the frame with the patch's bins flagged (IVAR 0, MASK BAD2DFIT); exit 2.
    Flag,
    /// Write no frame; exit 2.
    Fail,
}

impl From<FailedPatchesArg> for desi_extract::job::FailedPatchPolicy {
    fn from(arg: FailedPatchesArg) -> Self {
        match arg {
            FailedPatchesArg::Flag => Self::Flag,
            FailedPatchesArg::Fail => Self::Fail,
        }
    }
}

/// `--gpu-memory-limit` values: a memory size with a unit (`20GiB`, `8000MB`; see
/// [`desi_extract::gpu::parse_memory_size`]).
pub fn memory_size(text: &str) -> Result<u64, String> {
    desi_extract::gpu::parse_memory_size(text)
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
