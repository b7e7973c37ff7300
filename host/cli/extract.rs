//! `desi-extract extract`: one preproc frame -> one frame file.

use super::{parse_wave_range, InputError};
use anyhow::Context;
use clap::Args;
use desi_extract::extract::{
    assemble_frame, bundle_share, extract_bundles, extract_frame_traced, Extraction,
};
use desi_extract::gpu::{extract_frame_gpu, GpuContext};
use desi_extract::io::{self, FrameData, Keyword};
use desi_extract::parallel::{extract_bundles_gpu, gpu_for_rank, wire, Comm};
use desi_extract::patch::stitch::median;
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::psf::GaussHermitePsf;
use desi_extract::solve::{Backend, CpuBackend, PatchIssue};
use desi_extract::trace::Trace;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
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
    /// Write a Chrome/Perfetto trace JSON of the stages (and GPU kernel times) here.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// GPU ordinal used with --gpu (under MPI with several ranks each rank uses GPU
    /// local_rank % visible GPUs instead).
    #[arg(long = "gpu-device", default_value_t = 0)]
    gpu_device: usize,
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
    let trace = Trace::new();
    let image = trace.span("read", || io::read_preproc(&args.input))?;
    let backend_name = match &gpu {
        Some(g) => format!("gpu ({})", g.name()),
        None => CpuBackend.name().to_string(),
    };
    let bar = progress_bar();
    let read_time = start.elapsed();
    let t0 = Instant::now();
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let ex = if comm.size() > 1 {
        let Some(ex) = extract_on_ranks(
            comm,
            gpu.as_ref(),
            &psf,
            &image,
            &grid,
            &params,
            &args,
            &progress,
            &trace,
        )?
        else {
            // Not the writing rank: its blocks went to rank 0.
            return Ok(ExitCode::SUCCESS);
        };
        ex
    } else {
        match &gpu {
            Some(g) => extract_frame_gpu(
                g,
                &psf,
                &image,
                &grid,
                &params,
                args.model.is_some(),
                &progress,
                &trace,
            )?,
            None => extract_frame_traced(
                &psf,
                &image,
                &grid,
                &params,
                &CpuBackend,
                args.model.is_some(),
                &progress,
                &trace,
            )?,
        }
    };
    bar.finish_and_clear();
    let solve_time = t0.elapsed();

    let t1 = Instant::now();
    let frame = frame_data(
        &ex,
        &image,
        psf.in_psf.as_deref(),
        &args.psf,
        &args.input,
        &grid,
    );
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

/// The bundles of one frame spread over the ranks of `comm` (round-robin on the CPU, runs
/// of consecutive bundles on GPUs); rank 0 gathers the finished blocks and assembles the frame
/// (`Some`), the other ranks return `None` once their blocks are sent.
#[allow(clippy::too_many_arguments)]
fn extract_on_ranks(
    comm: &Comm,
    gpu: Option<&GpuContext>,
    psf: &GaussHermitePsf,
    image: &io::PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
    args: &ExtractArgs,
    progress: desi_extract::extract::Progress,
    trace: &Trace,
) -> anyhow::Result<Option<Extraction>> {
    let want_model = args.model.is_some();
    let nbundle = params.bundle_starts().len();
    let share = bundle_share(nbundle, comm.rank(), comm.size(), gpu.is_some());
    let set = match gpu {
        Some(g) => extract_bundles_gpu(
            g, psf, image, grid, params, &share, want_model, progress, trace,
        ),
        None => extract_bundles(
            psf,
            image,
            grid,
            params,
            &CpuBackend,
            &share,
            want_model,
            progress,
            trace,
        ),
    };
    let (mine, times) = match set {
        Ok(set) => (Ok(set.blocks), set.times),
        Err(err) => (
            Err(format!("rank {}: {err}", comm.rank())),
            Default::default(),
        ),
    };
    if comm.rank() != 0 {
        comm.send(0, &wire::encode_blocks(&mine));
        return match mine {
            Ok(_) => Ok(None),
            Err(msg) => Err(anyhow::anyhow!(msg)),
        };
    }
    let mut blocks = mine.map_err(|msg| anyhow::anyhow!(msg))?;
    for source in 1..comm.size() {
        let theirs = wire::decode_blocks(&comm.recv(source))?;
        blocks.extend(theirs.map_err(|msg| anyhow::anyhow!(msg))?);
    }
    let t0 = Instant::now();
    let mut ex = assemble_frame(
        grid,
        params,
        psf.hsizey,
        blocks,
        want_model.then_some((image.ny, image.nx)),
    )?;
    ex.times = times;
    ex.times.finalize += t0.elapsed();
    Ok(Some(ex))
}

/// Refuses an output path whose directory does not exist.
pub(super) fn check_output_dir(path: &Path) -> Result<(), InputError> {
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

/// Frame file contents of an extraction of `input` with `psf_path` (`in_psf`: the PSF's
/// IN_PSF keyword, passed on as ORIG_PSF).
pub(super) fn frame_data(
    ex: &Extraction,
    image: &io::PreprocImage,
    in_psf: Option<&str>,
    psf_path: &Path,
    input: &Path,
    grid: &WavelengthGrid,
) -> FrameData {
    let a = &ex.arrays;
    let mut keywords = vec![
        Keyword::int("NSPEC", a.nspec as i64, "Number of spectra"),
        Keyword::float("WAVEMIN", grid.wmin, "First wavelength [Angstrom]"),
        Keyword::float("WAVEMAX", grid.wmax, "Last wavelength [Angstrom]"),
        Keyword::float("WAVESTEP", grid.dw, "Wavelength step size [Angstrom]"),
        Keyword::str(
            "SPECTER",
            concat!("desi-extract ", env!("CARGO_PKG_VERSION")),
            "Extraction code",
        ),
        Keyword::str("IN_PSF", &short_path(psf_path), "Input spectral PSF"),
        Keyword::str("IN_IMG", &short_path(input), "Input image"),
        Keyword::str("DEPNAM00", "desi-extract", ""),
        Keyword::str("DEPVER00", env!("CARGO_PKG_VERSION"), ""),
    ];
    if let Some(orig) = in_psf {
        keywords.push(Keyword::str(
            "ORIG_PSF",
            orig,
            "PSF the input PSF was derived from",
        ));
    }
    FrameData {
        specmin: a.specmin,
        nspec: a.nspec,
        nwave: a.nwave,
        ndiag: a.ndiag,
        wavelength: grid.wave.clone(),
        flux: a.flux.clone(),
        ivar: a.ivar.clone(),
        mask: ex.mask.clone(),
        resolution: a.rdiags.clone(),
        chi2pix: a.chi2pix.clone(),
        header: image.header.clone(),
        keywords,
    }
}

/// The file name of a path (header values must stay short).
fn short_path(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
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
