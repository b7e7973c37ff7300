//! `desi-extract selftest --gpu`: GPU against CPU on a simulated frame, with timings.

use super::{parse_wave_range, InputError};
use clap::Args;
use desi_extract::extract::{extract_frame, Extraction};
use desi_extract::gpu::{extract_frame_gpu, GpuContext};
use desi_extract::io;
use desi_extract::patch::stitch::median;
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::solve::CpuBackend;
use desi_extract::trace::Trace;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Compare the GPU backend with the CPU backend (fails without a GPU).
    #[arg(long)]
    gpu: bool,
    /// PSF file (default: the bundled r0 PSF, data/psf-r0-00051060.fits, looked up at run time
    /// in $DESI_EXTRACT_DATA, ./data and the data/ folder of the checkout holding the binary).
    #[arg(short = 'p', long = "psf")]
    psf: Option<PathBuf>,
    /// Wavelength grid WMIN,WMAX[,DW].
    #[arg(short = 'w', long = "wavelength", default_value = "5760,7620,0.8")]
    wavelength: String,
    /// Spectra to simulate and extract.
    #[arg(short = 'n', long = "nspec", default_value_t = 500)]
    nspec: usize,
    /// Timed GPU repetitions after one warm-up (median reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// GPU ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

/// File name of the real DESI r0 PSF bundled in the repository's data/ folder.
const BUNDLED_PSF: &str = "psf-r0-00051060.fits";

/// Finds the bundled PSF at run time: `$DESI_EXTRACT_DATA/`, then `./data/`, then `data/` in the
/// folders above the executable (a checkout's `target/release/desi-extract` finds the checkout's
/// `data/`; a copied binary next to a `data/` folder finds that). Errors list the places tried.
fn bundled_psf() -> Result<PathBuf, InputError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("DESI_EXTRACT_DATA") {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(PathBuf::from("data"));
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).take(4).map(|dir| dir.join("data")));
    }
    dirs.iter()
        .map(|dir| dir.join(BUNDLED_PSF))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            let tried: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            InputError(format!(
                "selftest: the bundled PSF {BUNDLED_PSF} is in none of {}; pass -p PSF or set \
                 DESI_EXTRACT_DATA to the folder holding it",
                tried.join(", ")
            ))
        })
}

/// Relative-difference statistics of two arrays where `mask` holds.
fn rel_stats(a: &[f64], b: &[f64], mask: impl Fn(usize) -> bool) -> (f64, f64) {
    let mut d: Vec<f64> = (0..a.len())
        .filter(|&i| mask(i))
        .map(|i| (a[i] - b[i]).abs() / a[i].abs().max(b[i].abs()).max(1e-300))
        .collect();
    let max = d.iter().cloned().fold(0.0, f64::max);
    d.sort_by(|x, y| x.total_cmp(y));
    (median(d), max)
}

/// Runs `selftest`.
pub fn run(args: SelftestArgs) -> anyhow::Result<ExitCode> {
    if !args.gpu {
        return Err(InputError(
            "selftest needs --gpu (it compares the GPU backend with the CPU backend)".into(),
        )
        .into());
    }
    let psf_path = match args.psf {
        Some(path) => path,
        None => bundled_psf()?,
    };
    let psf = io::read_psf(&psf_path)?;
    let (wmin, wmax, dw) = parse_wave_range(&args.wavelength, 0.8)?;
    let grid = WavelengthGrid::arange(wmin, wmax, dw)?;
    let gpu = GpuContext::new(args.device)?;
    println!(
        "selftest: {} ({} MB free)",
        gpu.name(),
        gpu.memory()?.0 >> 20
    );
    let t = Instant::now();
    let spectra = builtin_spectra(0, args.nspec, &grid.wave);
    let image = simulated_preproc(&psf, &spectra, 3.0, 1, false, "r0")?;
    println!(
        "selftest: simulated {} spectra x {} wavelengths in {:.2} s",
        args.nspec,
        grid.nwave(),
        t.elapsed().as_secs_f64()
    );
    let params = ExtractionParams {
        nspec: args.nspec,
        psferr: psf.psferr,
        ..ExtractionParams::default()
    };
    let t = Instant::now();
    let cpu = extract_frame(&psf, &image, &grid, &params, &CpuBackend, false, &|_, _| {})?;
    let cpu_time = t.elapsed();
    let mut gpu_times = Vec::new();
    let mut gpu_result: Option<Extraction> = None;
    let mut last_trace = Trace::new();
    for i in 0..=args.repeat {
        let trace = Trace::new();
        let t = Instant::now();
        let r = extract_frame_gpu(
            &gpu,
            &psf,
            &image,
            &grid,
            &params,
            false,
            &|_, _| {},
            &trace,
        )?;
        last_trace = trace;
        if i > 0 {
            gpu_times.push(t.elapsed());
        }
        gpu_result = Some(r);
    }
    let Some(g) = gpu_result else {
        return Err(anyhow::anyhow!("no GPU run"));
    };
    let (a, b) = (&cpu.arrays, &g.arrays);
    let both = |i: usize| a.ivar[i] > 0.0 && b.ivar[i] > 0.0;
    let (flux_med, flux_max) = rel_stats(&a.flux, &b.flux, both);
    let (ivar_med, ivar_max) = rel_stats(&a.ivar, &b.ivar, both);
    let rd_max = a
        .rdiags
        .iter()
        .zip(&b.rdiags)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let (chi_med, chi_max) = rel_stats(&a.chi2pix, &b.chi2pix, both);
    let ivar_zero_mismatch = (0..a.ivar.len())
        .filter(|&i| (a.ivar[i] > 0.0) != (b.ivar[i] > 0.0))
        .count();
    gpu_times.sort();
    let med = gpu_times
        .get(gpu_times.len() / 2)
        .copied()
        .unwrap_or(Duration::ZERO);
    println!(
        "selftest: CPU {:.2} s; GPU median of {} runs {:.3} s (all: {:?})",
        cpu_time.as_secs_f64(),
        gpu_times.len(),
        med.as_secs_f64(),
        gpu_times
            .iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
    );
    println!("  stage (last run)     host ms   GPU (CUDA events) ms");
    let totals = last_trace.totals();
    for (name, track, d) in &totals {
        let has_host = totals.iter().any(|(n, t, _)| n == name && *t == "host");
        if *track == "gpu" && !has_host {
            println!("  {name:<16} {:>10} {:12.2}", "-", d.as_secs_f64() * 1e3);
            continue;
        }
        if *track != "host" {
            continue;
        }
        let gpu_ms = totals
            .iter()
            .find(|(n, t, _)| n == name && *t == "gpu")
            .map(|(_, _, g)| g.as_secs_f64() * 1e3);
        match gpu_ms {
            Some(g) => println!("  {name:<16} {:10.2} {:12.2}", d.as_secs_f64() * 1e3, g),
            None => println!("  {name:<16} {:10.2}", d.as_secs_f64() * 1e3),
        }
    }
    println!("selftest: flux rel diff median {flux_med:.2e} max {flux_max:.2e}; ivar median {ivar_med:.2e} max {ivar_max:.2e}; Rdiags max abs {rd_max:.2e}; chi2pix median {chi_med:.2e} max {chi_max:.2e}; ivar>0 mismatches {ivar_zero_mismatch}");
    println!("selftest: GPU patch reports: {}", g.reports.len());
    for r in g.reports.iter().take(10) {
        println!("  {r:?}");
    }
    let ok = flux_med <= 1e-9
        && flux_max <= 1e-6
        && ivar_med <= 1e-9
        && ivar_max <= 1e-6
        && rd_max <= 1e-9
        && ivar_zero_mismatch == 0;
    println!("selftest: {}", if ok { "PASS" } else { "FAIL" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
