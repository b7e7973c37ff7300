//! `desi-extract selftest --gpu`: GPU against CPU on a simulated frame, with timings.

use super::reject::{reject_line, RejectArgs};
use super::{parse_wave_range, InputError};
use clap::Args;
use desi_extract::extract::{extract_frame, rejected_pixels, Extraction, PatchRejection};
use desi_extract::gpu::context::{
    EighKernel, KernelMode, ASSEMBLE_KERNEL_ENV, BAND_KERNEL_ENV, EIGH_KERNEL_ENV,
    FACTOR_KERNEL_ENV, GPU_FRAME_PRIORITY_ENV, GPU_STREAMS_ENV, GPU_WAIT_ENV, SPOT_TEAM_LANES_ENV,
};
use desi_extract::gpu::frame::{RESOLVE_STAGE, SCAN_STAGE};
use desi_extract::gpu::GpuContext;
use desi_extract::io;
use desi_extract::job::FrameJob;
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::sim::{builtin_spectra, simulated_preproc_with, CosmicConfig, SimExtras};
use desi_extract::solve::CpuBackend;
use desi_extract::stats::median;
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
    /// Add cosmic rays to the simulated frame (unmasked; 2.5 per cm^2 per minute, 1000 s).
    #[arg(long)]
    cosmics: bool,
    /// With --cosmics: events per cm^2 per minute (e.g. 0.25 for one cosmic in ten escaping
    /// preproc's mask).
    #[arg(long = "cosmic-rate", default_value_t = 2.5, requires = "cosmics")]
    cosmic_rate: f64,
    /// Outlier rejection on both backends (the rejected pixels must agree).
    #[command(flatten)]
    reject: RejectArgs,
    /// Write the last timed GPU run's stage timeline (host spans and CUDA-event kernel times)
    /// as a Chrome trace (chrome://tracing, Perfetto).
    #[arg(long)]
    trace: Option<PathBuf>,
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
    let d: Vec<f64> = (0..a.len())
        .filter(|&i| mask(i))
        .map(|i| (a[i] - b[i]).abs() / a[i].abs().max(b[i].abs()).max(1e-300))
        .collect();
    let max = d.iter().cloned().fold(0.0, f64::max);
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
    let extras = SimExtras {
        oversample: 1,
        cosmics: args.cosmics.then(|| CosmicConfig {
            rate: args.cosmic_rate,
            ..CosmicConfig::default()
        }),
    };
    let (image, _) = simulated_preproc_with(&psf, &spectra, 3.0, 1, false, "r0", &extras)?;
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
    // The cholesky and covariance kernels the batches launch (the variants of
    // DESI_FACTOR_KERNEL and DESI_BAND_KERNEL that run for this block order).
    let (factor, covariance) = match gpu.mode {
        KernelMode::Team => (
            gpu.factor.kernel(),
            gpu.band
                .covariance_for(params.nwavetot())
                .covariance_kernel(),
        ),
        KernelMode::Thread => ("factor_solve", "covariance"),
    };
    println!(
        "selftest: cholesky kernel {factor} ({FACTOR_KERNEL_ENV}={:?}); covariance kernel {covariance} ({BAND_KERNEL_ENV}={:?}, nwavetot {})",
        gpu.factor,
        gpu.band,
        params.nwavetot()
    );
    // The assemble kernel (DESI_ASSEMBLE_KERNEL; `assemble` for stamps beyond a warp's cache).
    let (sny, snx) = (psf.stamp_ny(), psf.stamp_nx());
    let assemble = match gpu.mode {
        KernelMode::Team
            if sny * snx
                <= desi_device::patch::assemble_warp::WARP_LANES
                    * desi_device::patch::assemble_warp::MAX_PER_LANE =>
        {
            gpu.assemble.kernel()
        }
        _ => "assemble",
    };
    println!(
        "selftest: assemble kernel {assemble} ({ASSEMBLE_KERNEL_ENV}={:?}); streams {:?} \
         ({GPU_STREAMS_ENV}); wait {:?} ({GPU_WAIT_ENV}); frame priority {:?} \
         ({GPU_FRAME_PRIORITY_ENV}); {} lanes per spot ({SPOT_TEAM_LANES_ENV})",
        gpu.assemble,
        gpu.streams,
        gpu.wait,
        gpu.frame_priority,
        gpu.spot_team.lanes()
    );
    let reject = args.reject.config()?;
    let job = FrameJob::new(&psf, &image, &grid, &params)?.with_reject(reject);
    let no_progress = |_: usize, _: usize| {};
    let t = Instant::now();
    let cpu = extract_frame(&job, &CpuBackend, &no_progress, &Trace::new())?;
    let cpu_time = t.elapsed();
    let mut gpu_times = Vec::new();
    let mut gpu_result: Option<Extraction> = None;
    let mut last_trace = Trace::new();
    for i in 0..=args.repeat {
        let trace = Trace::new();
        let t = Instant::now();
        let r = extract_frame(&job, &gpu, &no_progress, &trace)?;
        last_trace = trace;
        if i > 0 {
            gpu_times.push(t.elapsed());
        }
        gpu_result = Some(r);
    }
    let Some(g) = gpu_result else {
        return Err(anyhow::anyhow!("no GPU run"));
    };
    if let Some(path) = &args.trace {
        last_trace.write_chrome(path)?;
        println!(
            "selftest: wrote the last GPU run's trace to {}",
            path.display()
        );
    }
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
    let gpu_secs: Vec<f64> = gpu_times.iter().map(Duration::as_secs_f64).collect();
    println!(
        "selftest: CPU {:.2} s; GPU median of {} runs {:.3} s (all: {:?})",
        cpu_time.as_secs_f64(),
        gpu_secs.len(),
        median(gpu_secs.clone()),
        gpu_secs
            .iter()
            .map(|s| format!("{s:.3}"))
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
    // The rejection decides the same on both backends: the same pixels, patch by patch, and
    // the GPU ran it (its outlier test and re-solves are GPU stages).
    let mut rejection_failures = Vec::new();
    if reject.is_some() {
        println!("selftest: CPU {}", reject_line(&cpu));
        println!("selftest: GPU {}", reject_line(&g));
        let (c, q) = (
            rejected_pixels(&cpu.rejections),
            rejected_pixels(&g.rejections),
        );
        let only_cpu = c.iter().filter(|p| q.binary_search(p).is_err()).count();
        let only_gpu = q.iter().filter(|p| c.binary_search(p).is_err()).count();
        println!(
            "selftest: rejected pixels only on the CPU {only_cpu}, only on the GPU {only_gpu}"
        );
        if only_cpu + only_gpu > 0 {
            rejection_failures.push(format!(
                "{} pixels rejected as outliers on one backend only",
                only_cpu + only_gpu
            ));
        }
        let differing = patch_rejection_mismatches(&cpu, &g);
        println!("selftest: patches whose rejection (pixels, bin counts, passes, cap) differs: {differing}");
        if differing > 0 {
            rejection_failures.push(format!(
                "{differing} patches rejected differently on the two backends"
            ));
        }
        let gpu_ms = |name: &str| {
            totals
                .iter()
                .find(|(n, t, _)| *n == name && *t == "gpu")
                .map(|(_, _, d)| d.as_secs_f64() * 1e3)
        };
        let host_ms = |name: &str| {
            totals
                .iter()
                .find(|(n, t, _)| *n == name && *t == "host")
                .map_or(0.0, |(_, _, d)| d.as_secs_f64() * 1e3)
        };
        let scan = gpu_ms(SCAN_STAGE);
        let resolve = gpu_ms(RESOLVE_STAGE);
        println!(
            "selftest: rejection stages (last GPU run): outlier test (GPU) {} ms; re-solves: GPU {} ms, wall {:.2} ms; bin counts {:.2} ms; host rejection (all passes, waits included) {:.2} ms",
            scan.map_or("-".into(), |v| format!("{v:.2}")),
            resolve.map_or("-".into(), |v| format!("{v:.2}")),
            host_ms(RESOLVE_STAGE),
            host_ms("reject bins"),
            host_ms("reject"),
        );
        if scan.is_none() {
            rejection_failures.push(
                "the GPU run has no outlier test stage: it did not run the rejection on the device"
                    .into(),
            );
        }
        if !cpu.rejections.is_empty() && resolve.is_none() {
            rejection_failures
                .push("the CPU re-solved patches but the GPU run has no re-solve stage".into());
        }
    }
    println!("selftest: GPU patch reports: {}", g.reports.len());
    for r in g.reports.iter().take(10) {
        println!("  {r:?}");
    }
    // The DMMA fragment layout that resolution_ns and resolution_ns2 rely on (one warp: always
    // checked), which eigh method ran and, with ns2 (the default) or ns, how many blocks that
    // kernel solved.
    let mut eigh_failures = Vec::new();
    let mma_err = gpu.check_mma()?;
    println!(
        "selftest: DMMA check (one mma.m8n8k4.f64 against the f64 product): max abs error {mma_err:.2e}"
    );
    // |A|, |B|, |C| < 1 and k = 4: any correct summation order is within ~5ε.
    if mma_err.is_nan() || mma_err > MMA_CHECK_TOLERANCE {
        eigh_failures.push(format!(
            "the DMMA check is off by {mma_err:.2e} (> {MMA_CHECK_TOLERANCE:e}): wrong fragment layout"
        ));
    }
    let method = gpu.eigh.name();
    if gpu.runs_newton_schulz(params.nwavetot()) {
        let (solved, left) = gpu.eigh_counts()?;
        let kernel = if gpu.eigh == EighKernel::Ns2 {
            "resolution_ns2"
        } else {
            "resolution_ns"
        };
        println!(
            "selftest: eigh {method} ({EIGH_KERNEL_ENV}): {solved} blocks by Newton-Schulz ({kernel}), {left} left to the Jacobi (resolution_team; all runs)"
        );
        if solved == 0 {
            eigh_failures.push(format!(
                "the eigh method is {method} ({EIGH_KERNEL_ENV}), but {kernel} solved no block"
            ));
        }
    } else {
        let kernel = match gpu.mode {
            KernelMode::Team => "resolution_team",
            KernelMode::Thread => "resolution, per-thread kernels",
        };
        let why = if gpu.eigh.newton_schulz() {
            format!(
                " (not with these kernels or blocks of order {})",
                params.nwavetot()
            )
        } else {
            String::new()
        };
        println!(
            "selftest: eigh {method} ({EIGH_KERNEL_ENV}){why}: every block by the Jacobi ({kernel})"
        );
    }
    let verdict = Verdict {
        flux: (flux_med, flux_max),
        ivar: (ivar_med, ivar_max),
        chi2pix: (chi_med, chi_max),
        rdiags_max: rd_max,
        ivar_zero_mismatch,
        gpu_reports: g.reports.len(),
        gpu_stages: g.times.detail.len(),
    };
    let mut failures = verdict.failures();
    failures.extend(rejection_failures);
    failures.extend(eigh_failures);
    for failure in &failures {
        println!("selftest: FAIL: {failure}");
    }
    let ok = failures.is_empty();
    println!("selftest: {}", if ok { "PASS" } else { "FAIL" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Patches whose rejection differs between two extractions of one frame: present in one
/// only, or with other pixels, bin counts, passes or cap.
fn patch_rejection_mismatches(a: &Extraction, b: &Extraction) -> usize {
    let key = |r: &PatchRejection| (r.site.bundle, r.site.patch);
    let mut left: Vec<&PatchRejection> = a.rejections.iter().collect();
    let mut right: Vec<&PatchRejection> = b.rejections.iter().collect();
    left.sort_by_key(|r| key(r));
    right.sort_by_key(|r| key(r));
    let (mut i, mut j, mut differ) = (0, 0, 0);
    while i < left.len() || j < right.len() {
        match (left.get(i), right.get(j)) {
            (Some(x), Some(y)) if key(x) == key(y) => {
                differ += usize::from(x != y);
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if key(x) < key(y) => {
                differ += 1;
                i += 1;
            }
            (Some(_), None) => {
                differ += 1;
                i += 1;
            }
            _ => {
                differ += 1;
                j += 1;
            }
        }
    }
    differ
}

/// Largest `|D − (A·B + C)|` accepted from `mma_check` (entries in (−1, 1), four products).
const MMA_CHECK_TOLERANCE: f64 = 1e-14;

/// What `selftest --gpu` compares, and the bounds it holds them to.
#[derive(Clone, Debug, PartialEq)]
struct Verdict {
    /// Flux relative difference (median, max) over bins with ivar > 0 on both backends.
    flux: (f64, f64),
    /// Ivar relative difference (median, max).
    ivar: (f64, f64),
    /// chi2pix relative difference (median, max).
    chi2pix: (f64, f64),
    /// Largest absolute difference of the resolution diagonals.
    rdiags_max: f64,
    /// Bins with ivar > 0 on one backend only.
    ivar_zero_mismatch: usize,
    /// Patches the GPU run reported (failed, regularized, or solved on the CPU instead).
    gpu_reports: usize,
    /// GPU stages timed by CUDA events: none means the GPU did not run.
    gpu_stages: usize,
}

impl Verdict {
    /// Relative differences allowed: FP64 rounding of the same arithmetic in another order
    /// (measured 1e-14 median, 1e-12 max on a full frame), with margin.
    const REL_MEDIAN: f64 = 1e-9;
    const REL_MAX: f64 = 1e-6;
    /// Resolution diagonals are O(1): the same margin, absolute.
    const RDIAGS_MAX: f64 = 1e-9;

    /// Why the comparison fails (empty when it passes).
    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, (median, max)) in [
            ("flux", self.flux),
            ("ivar", self.ivar),
            ("chi2pix", self.chi2pix),
        ] {
            if !(at_most(median, Self::REL_MEDIAN) && at_most(max, Self::REL_MAX)) {
                out.push(format!(
                    "{name} relative difference median {median:.2e} max {max:.2e} (allowed {:.0e} / {:.0e})",
                    Self::REL_MEDIAN,
                    Self::REL_MAX
                ));
            }
        }
        if !at_most(self.rdiags_max, Self::RDIAGS_MAX) {
            out.push(format!(
                "Rdiags max abs difference {:.2e} (allowed {:.0e})",
                self.rdiags_max,
                Self::RDIAGS_MAX
            ));
        }
        if self.ivar_zero_mismatch > 0 {
            out.push(format!(
                "{} bins have ivar > 0 on one backend only",
                self.ivar_zero_mismatch
            ));
        }
        if self.gpu_reports > 0 {
            out.push(format!(
                "{} GPU patches were reported (failed, regularized or solved on the CPU instead): \
                 the comparison would not test the GPU there",
                self.gpu_reports
            ));
        }
        if self.gpu_stages == 0 {
            out.push("no GPU stage was timed: the GPU backend did not run".into());
        }
        out
    }
}

/// `value <= bound`, false for NaN (a NaN difference fails the comparison).
fn at_most(value: f64, bound: f64) -> bool {
    value <= bound
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    fn agreeing() -> Verdict {
        Verdict {
            flux: (5e-15, 3e-13),
            ivar: (3e-14, 7e-13),
            chi2pix: (7e-15, 2e-13),
            rdiags_max: 2e-13,
            ivar_zero_mismatch: 0,
            gpu_reports: 0,
            gpu_stages: 9,
        }
    }

    #[test]
    fn agreement_passes() {
        assert_eq!(agreeing().failures(), Vec::<String>::new());
    }

    #[test]
    fn each_check_can_fail() {
        let cases: Vec<(&str, Verdict)> = vec![
            (
                "flux",
                Verdict {
                    flux: (2e-9, 1e-12),
                    ..agreeing()
                },
            ),
            (
                "flux",
                Verdict {
                    flux: (1e-15, 2e-6),
                    ..agreeing()
                },
            ),
            (
                "ivar",
                Verdict {
                    ivar: (f64::NAN, 0.0),
                    ..agreeing()
                },
            ),
            (
                "chi2pix",
                Verdict {
                    chi2pix: (1e-15, 1e-3),
                    ..agreeing()
                },
            ),
            (
                "Rdiags",
                Verdict {
                    rdiags_max: 1e-8,
                    ..agreeing()
                },
            ),
            (
                "one backend only",
                Verdict {
                    ivar_zero_mismatch: 1,
                    ..agreeing()
                },
            ),
            (
                "reported",
                Verdict {
                    gpu_reports: 1,
                    ..agreeing()
                },
            ),
            (
                "did not run",
                Verdict {
                    gpu_stages: 0,
                    ..agreeing()
                },
            ),
        ];
        for (what, verdict) in cases {
            let failures = verdict.failures();
            assert_eq!(failures.len(), 1, "{what}: {failures:?}");
            assert!(failures[0].contains(what), "{what}: {failures:?}");
        }
    }
}
