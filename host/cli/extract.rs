//! `desi-extract extract`: one preproc frame -> one frame file.

use super::{parse_wave_range, InputError};
use anyhow::Context;
use clap::Args;
use desi_extract::extract::{extract_frame, frame_data, Extraction};
use desi_extract::gpu::GpuContext;
use desi_extract::heliocentric;
use desi_extract::io::{self, Keyword};
use desi_extract::job::{FallbackPolicy, FrameJob};
use desi_extract::parallel::{extract_frame_on_ranks, gpu_for_rank, Comm};
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::solve::{Backend, CpuBackend, PatchIssue};
use desi_extract::stats::median;
use desi_extract::trace::Trace;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `extract`, named as in desispec's `desi_extract_spectra`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Input preproc file.
    #[arg(short = 'i', long = "input")]
    input: PathBuf,
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
    if args.decorrelate_fibers {
        return Err(InputError(
            "--decorrelate-fibers is not supported (signal decorrelation only, as desispec's GPU path)".into(),
        )
        .into());
    }
    // Refuse what can be refused before reading the (large) image and extracting (minutes):
    // outputs that would replace an input or each other, devices, FIFOs, missing directories.
    let mut outputs = vec![("-o", args.output.as_path())];
    outputs.extend(args.model.as_deref().map(|p| ("-m", p)));
    outputs.extend(args.trace.as_deref().map(|p| ("--trace", p)));
    io::check_outputs(&[("-i", &args.input), ("-p", &args.psf)], &outputs)?;
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
    let image = trace.span("read", || io::read_preproc(&args.input))?;
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
    trace.span("write", || {
        io::write_frame(&args.output, &frame, image.fibermap.as_ref())
    })?;
    if let (Some(path), Some(model)) = (&args.model, &ex.model) {
        trace.span("write model", || {
            io::write_model(path, image.ny, image.nx, model)
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
