//! `desi-extract extract`: one preproc frame -> one frame file.

use super::{logging, parse_wave_range, InputError};
use anyhow::Context;
use clap::Args;
use desi_extract::extract::{extract_frame, frame_data, Extraction};
use desi_extract::gpu::GpuContext;
use desi_extract::heliocentric;
use desi_extract::io::{self, Keyword};
use desi_extract::job::{FallbackPolicy, FrameJob};
use desi_extract::parallel::{extract_frame_on_ranks, gpu_for_rank, Comm};
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::scores::raw_frame_scores;
use desi_extract::solve::{Backend, CpuBackend, PatchIssue};
use desi_extract::stats::median;
use desi_extract::trace::Trace;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `extract`, named as in desispec's `desi_extract_spectra` (every flag of
/// desispec 0.70.0 and main; docs/desispec-compat.md says what each does here).
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Input preproc file.
    #[arg(short = 'i', long = "input")]
    input: PathBuf,
    /// Input fibermap file: its FIBERMAP HDU replaces the preproc's, and the frame takes its
    /// rows specmin..specmin+nspec, as desispec does.
    #[arg(short = 'f', long = "fibermap")]
    fibermap: Option<PathBuf>,
    /// Input GaussHermite PSF file.
    #[arg(short = 'p', long = "psf")]
    psf: PathBuf,
    /// Output frame file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Output model image file.
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Wavelength grid WMIN,WMAX[,DW] (default: the PSF domain with DW 0.8).
    #[arg(short = 'w', long = "wavelength", allow_hyphen_values = true)]
    wavelength: Option<String>,
    /// First spectrum to extract (relative to the PSF's FIBERMIN).
    #[arg(short = 's', long = "specmin", default_value_t = 0)]
    specmin: usize,
    /// Number of spectra to extract.
    #[arg(short = 'n', long = "nspec", default_value_t = 500)]
    nspec: usize,
    /// Regularization α added to well-measured bins.
    #[arg(short = 'r', long = "regularize", default_value_t = 0.0)]
    regularize: f64,
    /// Fibers per bundle.
    #[arg(long, default_value_t = 25)]
    bundlesize: usize,
    /// Sub-bundles per bundle.
    #[arg(long, default_value_t = 5)]
    nsubbundles: usize,
    /// Core wavelength bins per patch.
    #[arg(long, default_value_t = 50)]
    nwavestep: usize,
    /// PSF model error for chi2pix (default: the PSF's PSFERR, 0.01).
    #[arg(long)]
    psferr: Option<f64>,
    /// Fraction of the pad-induced CCD rows kept.
    #[arg(long = "pixpad-frac", default_value_t = 0.8)]
    pixpad_frac: f64,
    /// Extra wavelength pad fraction.
    #[arg(long = "wavepad-frac", default_value_t = 0.2)]
    wavepad_frac: f64,
    /// Noise decorrelation across fibers (not supported: signal decorrelation is used, as in
    /// desispec's GPU path).
    #[arg(long = "decorrelate-fibers")]
    decorrelate_fibers: bool,
    /// Run every stage on an NVIDIA GPU (a clear error where there is none).
    #[arg(long)]
    gpu: bool,
    /// Extract on the grid corrected to the solar-system barycentre, as desispec does: the
    /// pointing (TARGTRA/TARGTDEC, SKYRA, TELRA or RA/DEC) and MJD-OBS + EXPTIME/2 from the
    /// preproc header (else the fibermap's), at Kitt Peak; the frame keeps the nominal
    /// WAVELENGTH and records the factor as HELIOCOR.
    #[arg(long = "barycentric-correction")]
    barycentric_correction: bool,
    /// What to do with a patch the GPU could not solve: `cpu` solves it again on the CPU and
    /// reports it, `fail` fails the frame (exit 2, no frame written).
    #[arg(long = "gpu-fallback", value_enum, default_value_t = GpuFallback::Cpu)]
    gpu_fallback: GpuFallback,
    /// Write a Chrome/Perfetto trace JSON of the stages (and GPU kernel times) here.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Do not use the GPU (desispec: even if one is available). desi-extract runs on the CPU
    /// unless --gpu is given, so this only confirms the default.
    #[arg(long = "no-gpu", conflicts_with = "gpu")]
    no_gpu: bool,
    /// desispec: classic specter instead of gpu_specter. Accepted for desi_proc's command
    /// lines, but desi-extract's own engine (gpu_specter's numerics) runs; a warning says so.
    #[arg(long = "use-specter")]
    use_specter: bool,
    /// desispec: use MPI. Accepted; desi-extract uses MPI whenever it is started by an MPI
    /// launcher (mpirun, srun) and runs as one process otherwise, with or without this flag.
    #[arg(long)]
    mpi: bool,
    /// Do not compute the RAW scores nor write the SCORES HDU.
    #[arg(long = "no-scores")]
    no_scores: bool,
    /// More log lines (DEBUG level; $DESI_LOGLEVEL also sets the level, as in desispec).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// GPU ordinal used with --gpu (under MPI with several ranks each rank uses GPU
    /// local_rank % visible GPUs instead).
    #[arg(long = "gpu-device", default_value_t = 0)]
    gpu_device: usize,
}

/// `--gpu-fallback` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GpuFallback {
    /// Solve the patch again on the CPU and report it.
    Cpu,
    /// Fail the frame.
    Fail,
}

impl From<GpuFallback> for FallbackPolicy {
    fn from(choice: GpuFallback) -> Self {
        match choice {
            GpuFallback::Cpu => FallbackPolicy::CpuAndReport,
            GpuFallback::Fail => FallbackPolicy::Fail,
        }
    }
}

impl ExtractArgs {
    /// `true` with `--gpu`.
    pub fn uses_gpu(&self) -> bool {
        self.gpu
    }
}

/// Runs `extract` (on one rank, or with the bundles spread over the ranks of `comm`).
pub fn run(args: ExtractArgs, comm: &Comm) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    if args.verbose {
        logging::verbose();
    }
    if args.decorrelate_fibers {
        return Err(InputError(
            "--decorrelate-fibers not implemented with gpu_specter (desispec refuses it on its default path too; desi-extract extracts with signal decorrelation only)".into(),
        )
        .into());
    }
    let root = comm.rank() == 0;
    if args.use_specter && root {
        log::warn!(
            "--use-specter: desi-extract's engine runs instead of specter's ex2d (gpu_specter's numerics and defaults; see docs/desispec-compat.md)"
        );
    }
    if args.mpi && root {
        log::debug!(
            "--mpi: {} rank(s) from the launcher (desi-extract uses MPI whenever started by one)",
            comm.size()
        );
    }
    // Refuse what can be refused before reading the (large) image and extracting (minutes).
    for path in std::iter::once(&args.output).chain(&args.model) {
        check_output_dir(path)?;
    }
    let psf = io::read_psf(&args.psf)?;
    let (wmin, wmax, dw) = match &args.wavelength {
        Some(text) => parse_wave_range(text, 0.8)?,
        None => (psf.sigma_x.wavemin, psf.sigma_x.wavemax, 0.8),
    };
    let grid = WavelengthGrid::arange(wmin, wmax, dw)?;
    let params = ExtractionParams {
        specmin: args.specmin,
        nspec: args.nspec,
        bundlesize: args.bundlesize,
        nsubbundles: args.nsubbundles,
        nwavestep: args.nwavestep,
        wavepad: 10,
        wavepad_frac: args.wavepad_frac,
        pixpad_frac: args.pixpad_frac,
        regularize: args.regularize,
        psferr: args.psferr.unwrap_or(psf.psferr),
    };
    params.validate(psf.hsizey, psf.nspec).with_context(|| {
        format!(
            "cannot extract {} with {}",
            args.input.display(),
            args.psf.display()
        )
    })?;
    let gpu = if args.gpu {
        // Several ranks: each takes the GPU of its node-local rank (modulo the GPUs visible).
        let ordinal = if comm.size() > 1 {
            gpu_for_rank(comm.local_rank())?
        } else {
            args.gpu_device
        };
        Some(GpuContext::new(ordinal)?)
    } else {
        None
    };
    let backend: &dyn Backend = match &gpu {
        Some(g) => g,
        None => &CpuBackend,
    };
    let trace = Trace::new();
    let mut image = trace.span("read", || io::read_preproc(&args.input))?;
    if let Some(path) = &args.fibermap {
        // desispec: io.read_fibermap(args.fibermap), then rows specmin..specmin+nspec.
        let table = io::read_table(path, "FIBERMAP")?;
        if table.nrows < args.specmin + args.nspec {
            return Err(InputError(format!(
                "{}: FIBERMAP has {} rows, the frame needs rows {}..{} (-s/--specmin, -n/--nspec)",
                path.display(),
                table.nrows,
                args.specmin,
                args.specmin + args.nspec
            ))
            .into());
        }
        image.fibermap = Some(table);
        log::debug!("fibermap from {}", path.display());
    }
    let backend_name = match &gpu {
        Some(g) => format!("gpu ({})", g.name()),
        None => CpuBackend.name().to_string(),
    };
    let heliocor = if args.barycentric_correction {
        let factor = heliocentric::preproc_factor(&image).map_err(|e| {
            InputError(format!(
                "{}: --barycentric-correction: {e}",
                args.input.display()
            ))
        })?;
        Some(factor)
    } else {
        None
    };
    if root {
        log::info!(
            "Applying barycentric_correction_factor: {}",
            heliocor.unwrap_or(1.0)
        );
        log::info!("extract:  input = {}", args.input.display());
        log::info!("extract:  psf = {}", args.psf.display());
        log::info!("extract:  specmin = {}", args.specmin);
        log::info!("extract:  nspec = {}", args.nspec);
        log::info!("extract:  wavelength = {wmin},{wmax},{dw}");
        log::info!("extract:  nwavestep = {}", args.nwavestep);
        log::info!("extract:  regularize = {}", args.regularize);
        log::debug!("extract:  backend = {backend_name}");
        log::debug!("extract:  {params:?}");
    }
    let extraction_grid = match heliocor {
        Some(factor) => heliocentric::corrected_grid(&grid, factor)?,
        None => grid.clone(),
    };
    let job = FrameJob::new(&psf, &image, &extraction_grid, &params)?
        .with_model(args.model.is_some())
        .with_fallback(args.gpu_fallback.into());
    let bar = progress_bar();
    let read_time = start.elapsed();
    let t0 = Instant::now();
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let ex = if comm.size() > 1 {
        match extract_frame_on_ranks(comm, &job, backend, &progress, &trace)? {
            Some(ex) => ex,
            // Not the writing rank: its blocks went to rank 0.
            None => return Ok(ExitCode::SUCCESS),
        }
    } else {
        extract_frame(&job, backend, &progress, &trace)?
    };
    bar.finish_and_clear();
    let solve_time = t0.elapsed();

    let t1 = Instant::now();
    let mut frame = frame_data(
        &ex,
        &image,
        psf.in_psf.as_deref(),
        &args.psf,
        &args.input,
        &grid,
    );
    if let Some(factor) = heliocor.filter(|&f| f != 1.0) {
        frame.keywords.push(Keyword::float(
            "HELIOCOR",
            factor,
            "Barycentric wavelength correction factor",
        ));
    }
    let scores = if args.no_scores {
        None
    } else {
        log::info!("Computing scores and appending to frame");
        let scores = raw_frame_scores(&frame.wavelength, &frame.flux, &frame.ivar);
        if scores.is_none() {
            log::warn!(
                "no wavelength of {wmin}-{wmax} A lies in the score band of its camera arm: no SCORES HDU (desispec fails here)"
            );
        }
        scores
    };
    log::info!("Writing frame {}", args.output.display());
    trace.span("write", || {
        io::write_frame_with_scores(
            &args.output,
            &frame,
            image.fibermap.as_ref(),
            scores.as_deref(),
        )
    })?;
    if let (Some(path), Some(model)) = (&args.model, &ex.model) {
        log::info!("Writing model {}", path.display());
        trace.span("write model", || {
            io::write_model_with_header(
                path,
                image.ny,
                image.nx,
                model,
                &frame.header,
                &frame.keywords,
            )
        })?;
    }
    let write_time = t1.elapsed();
    if let Some(path) = &args.trace {
        trace
            .write_chrome(path)
            .with_context(|| format!("writing the trace {}", path.display()))?;
    }
    print_summary(
        &ex,
        &args,
        &backend_name,
        [read_time, solve_time, write_time, start.elapsed()],
    );
    let failed = ex
        .reports
        .iter()
        .filter(|r| matches!(r.issue, PatchIssue::Failed { .. }))
        .count();
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Refuses an output path whose directory does not exist.
fn check_output_dir(path: &Path) -> Result<(), InputError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(InputError(format!(
            "{}: output directory {} does not exist",
            path.display(),
            dir.display()
        )))
    }
}

/// A progress bar on a terminal, hidden otherwise.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "extract [{bar:40}] {pos}/{len} patches {elapsed_precise} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The one-screen summary printed at the end.
fn print_summary(
    ex: &Extraction,
    args: &ExtractArgs,
    backend: &str,
    times: [std::time::Duration; 4],
) {
    let a = &ex.arrays;
    let snr: Vec<f64> = a
        .flux
        .iter()
        .zip(&a.ivar)
        .filter(|(_, &iv)| iv > 0.0)
        .map(|(&f, &iv)| f * iv.sqrt())
        .collect();
    let masked = ex.mask.iter().filter(|&&m| m != 0).count();
    println!("desi-extract extract: {}", args.output.display());
    println!(
        "  spectra     {} (fibers {}..{}), {} wavelengths {:.2}-{:.2} A",
        a.nspec,
        a.specmin,
        a.specmin + a.nspec,
        a.nwave,
        ex.grid.wave.first().copied().unwrap_or(0.0),
        ex.grid.wave.last().copied().unwrap_or(0.0)
    );
    println!("  patches     {} on the {} backend", ex.npatch, backend);
    println!("  median S/N  {:.2} per bin", median(snr));
    println!(
        "  median chi2pix {:.3}; masked bins {} of {}",
        median(a.chi2pix.clone()),
        masked,
        a.flux.len()
    );
    for report in &ex.reports {
        println!(
            "  patch bundle {} #{} (spectra {}.., bin {}..): {:?}",
            report.bundle, report.patch, report.ispec, report.iwave, report.issue
        );
    }
    println!(
        "  time        {:.2} s total: read {:.2} s, spots {:.2} s, solve {:.2} s, finalize {:.2} s, write {:.2} s",
        times[3].as_secs_f64(),
        times[0].as_secs_f64(),
        ex.times.spots.as_secs_f64(),
        ex.times.solve.as_secs_f64(),
        ex.times.finalize.as_secs_f64(),
        times[2].as_secs_f64()
    );
    let _ = times[1];
}
