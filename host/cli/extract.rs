//! `desi-extract extract`: one preproc frame -> one frame file.

use super::reject::{reject_keywords, reject_line, RejectArgs};
use super::{logging, parse_wave_range, FailedPatchesArg, InputError, MaskRuleArg};
use anyhow::Context;
use clap::Args;
use desi_extract::extract::{
    ccd_cols, ccd_rows, check_frame_metadata, extract_frame, frame_data, Extraction, PixelLimits,
};
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
    /// desispec's rule for the BAD2DFIT mask bit: `main` (chi2pix > 5x the median over fibers
    /// and over wavelengths) or `0.70` (chi2pix > 100, desispec 0.70.0).
    #[arg(long = "mask-rule", value_enum, default_value_t = MaskRuleArg::Main)]
    mask_rule: MaskRuleArg,
    /// A patch that could not be solved: `flag` writes the frame with its bins at IVAR 0 and
    /// MASK BAD2DFIT, `fail` writes no frame; both exit 2.
    #[arg(long = "failed-patches", value_enum, default_value_t = FailedPatchesArg::Flag)]
    failed_patches: FailedPatchesArg,
    /// Pixels with IVAR > 0 and |IMAGE| above this many electrons are ignored as absurd
    /// (default: 10x the largest SATUELEx of the preproc header, else 10 x 131070).
    #[arg(long = "max-pixel-value")]
    max_pixel_value: Option<f64>,
    /// Pixels with IVAR above this (electrons^-2) are ignored as absurd (default 1e4).
    #[arg(long = "max-pixel-ivar")]
    max_pixel_ivar: Option<f64>,
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
    /// Cap on the GPU memory of this process with --gpu (e.g. 20GiB, 8000MB; default
    /// $DESI_GPU_MEMORY_LIMIT, else none): the batches are sized to stay under it.
    #[arg(long = "gpu-memory-limit", value_parser = super::memory_size)]
    gpu_memory_limit: Option<u64>,
    /// Outlier rejection (docs/algorithm.md §4.11).
    #[command(flatten)]
    reject: RejectArgs,
    /// With --reject-outliers: write the pixels rejected as outliers here, an int16 image
    /// (EXTNAME REJECTED) of the CCD's shape, 1 where a patch rejected the pixel.
    #[arg(long = "rejected-pixels", requires = "reject_outliers")]
    rejected_pixels: Option<PathBuf>,
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
    // Refuse what can be refused before reading the (large) image and extracting (minutes):
    // outputs that would replace an input or each other, devices, FIFOs, missing directories.
    let mut outputs = vec![("-o", args.output.as_path())];
    outputs.extend(args.model.as_deref().map(|p| ("-m", p)));
    outputs.extend(args.trace.as_deref().map(|p| ("--trace", p)));
    outputs.extend(
        args.rejected_pixels
            .as_deref()
            .map(|p| ("--rejected-pixels", p)),
    );
    let reject = args.reject.config()?;
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
        mask_rule: args.mask_rule.into(),
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
        let mut gpu = GpuContext::new(ordinal)?;
        if let Some(limit) = args.gpu_memory_limit {
            gpu.set_memory_limit(Some(limit))?;
        }
        Some(gpu)
    } else {
        None
    };
    let backend: &dyn Backend = match &gpu {
        Some(g) => g,
        None => &CpuBackend,
    };
    let trace = Trace::new();
    // The header and FIBERMAP first: they fix the extraction grid (barycentric correction),
    // hence the CCD rows the requested fibers' traces reach; only those rows are read.
    let mut reader = trace.span("read", || io::PreprocReader::open(&args.input))?;
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
        reader.metadata_mut().fibermap = Some(table);
        log::debug!("fibermap from {}", path.display());
    }
    // What desispec could not read in the frame (FLAVOR, carried cards, FIBERMAP): refused
    // before any work.
    check_frame_metadata(reader.metadata()).map_err(|e| InputError(e.to_string()))?;
    let backend_name = match &gpu {
        Some(g) => format!("gpu ({})", g.name()),
        None => CpuBackend.name().to_string(),
    };
    let heliocor = if args.barycentric_correction {
        let factor = heliocentric::preproc_factor(reader.metadata()).map_err(|e| {
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
    let rows = ccd_rows(&psf, &params, &extraction_grid);
    // On the CPU only the columns the bundles' traces reach as well (the box its backend
    // converts); a GPU takes whole rows.
    let cols = match &gpu {
        Some(_) => 0..usize::MAX,
        None => ccd_cols(&psf, &params, &extraction_grid),
    };
    let image = trace.span("read", || reader.read_window(rows.clone(), cols.clone()))?;
    let limits = pixel_limits(&args, &image)?;
    let job = FrameJob::new(&psf, &image, &extraction_grid, &params)?
        .with_model(args.model.is_some())
        .with_fallback(args.gpu_fallback.into())
        .with_failed_patches(args.failed_patches.into())
        .with_pixel_limits(limits)
        .with_reject(reject);
    if comm.rank() == 0 {
        warn_screened(&args.input, &limits, &image, rows, cols);
    }
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
    if let Some(cfg) = &reject {
        frame.keywords.extend(reject_keywords(cfg, &ex));
        log::info!("{}", reject_line(&ex));
    }
    let scores = if args.no_scores {
        None
    } else {
        log::info!("Computing scores and appending to frame");
        let scores = raw_frame_scores(frame.wavelength, frame.flux, frame.ivar);
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
        // The frame's FLUX header (FIBERMIN, SPECMIN, ...), as desispec writes the model.
        let (_, keywords) =
            io::frame_fibermap_and_keywords(&args.output, &frame, image.fibermap.as_ref())?;
        trace.span("write model", || {
            io::write_model_with_header(path, image.ny, image.nx, model, frame.header, &keywords)
        })?;
    }
    if let Some(path) = &args.rejected_pixels {
        log::info!("Writing rejected pixels {}", path.display());
        let pixels = desi_extract::extract::rejected_pixels(&ex.rejections);
        let keywords = reject
            .map(|cfg| reject_keywords(&cfg, &ex))
            .unwrap_or_default();
        io::write_pixel_mask(path, image.ny, image.nx, &pixels, "REJECTED", &keywords)?;
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
    Ok(if warn_flagged(&ex, &args.output) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The pixel limits of the image, with `--max-pixel-value` / `--max-pixel-ivar` overriding.
fn pixel_limits(args: &ExtractArgs, image: &io::PreprocImage) -> Result<PixelLimits, InputError> {
    let mut limits = PixelLimits::for_image(image);
    for (flag, value, slot) in [
        (
            "--max-pixel-value",
            args.max_pixel_value,
            &mut limits.max_abs_value,
        ),
        (
            "--max-pixel-ivar",
            args.max_pixel_ivar,
            &mut limits.max_ivar,
        ),
    ] {
        if let Some(v) = value {
            if v.is_nan() || v <= 0.0 {
                return Err(InputError(format!("{flag} {v}: must be positive")));
            }
            *slot = v;
        }
    }
    Ok(limits)
}

/// Says on stderr how many pixels with IVAR > 0 the screen ignores among the CCD pixels read
/// (`rows` x `cols`), and why.
fn warn_screened(
    input: &Path,
    limits: &PixelLimits,
    image: &io::PreprocImage,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    let count = limits.count_window(image, rows, cols);
    if count.total() > 0 {
        eprintln!(
            "desi-extract: warning: {}: {} pixel(s) with IVAR > 0 ignored as absurd ({} not finite, {} with |value| > {:e} electrons, {} with IVAR > {:e}); their bins carry SOMEBADPIX/ALLBADPIX where they dominate",
            input.display(),
            count.total(),
            count.nonfinite,
            count.value,
            limits.max_abs_value,
            count.ivar,
            limits.max_ivar
        );
    }
}

/// Says on stderr which bins carry no data and why; returns whether a patch failed (the frame
/// is then flagged: exit 2).
fn warn_flagged(ex: &Extraction, output: &Path) -> bool {
    let name = output.display();
    let off = ex.off_ccd_patches();
    if !off.is_empty() {
        let bins: usize = off.iter().map(|r| r.site.nspec * r.site.nwave).sum();
        eprintln!(
            "desi-extract: warning: {name}: {} patch(es) off the CCD: {bins} bins written with IVAR 0 and MASK NODATA",
            off.len()
        );
    }
    if !ex.nonfinite_bins.is_empty() {
        eprintln!(
            "desi-extract: warning: {name}: {} bin(s) with non-finite outputs written with IVAR 0 and MASK BAD2DFIT",
            ex.nonfinite_bins.len()
        );
    }
    let failed = ex.failed_patches();
    for r in &failed {
        if let PatchIssue::Failed { reason } = &r.issue {
            eprintln!(
                "desi-extract: error: {name}: bundle {} patch {} (spectra {}..{}, bins {}..{}) could not be solved: {reason}",
                r.site.bundle,
                r.site.patch,
                r.site.ispec,
                r.site.ispec + r.site.nspec,
                r.site.iwave,
                r.site.iwave + r.site.nwave
            );
        }
    }
    if !failed.is_empty() {
        let bins: usize = failed.iter().map(|r| r.site.nspec * r.site.nwave).sum();
        eprintln!(
            "desi-extract: error: {name}: frame written FLAGGED: {} failed patch(es), {bins} bins with IVAR 0 and MASK BAD2DFIT (--failed-patches fail writes no frame)",
            failed.len()
        );
    }
    !failed.is_empty()
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
            report.site.bundle,
            report.site.patch,
            report.site.ispec,
            report.site.iwave,
            report.issue
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
