//! Kernel-level GPU benchmarks at production shapes, timed on the device (CUDA events), with
//! cuSOLVER's batched routines on the same GPU as the yardstick.
//!
//! `cargo bench --bench gpu_kernels` (add `-- --quick` for a short run). Without a CUDA driver
//! or device it prints one line and exits 0; a failed CUDA/cuSOLVER call or a wrong cuSOLVER
//! result is printed as `gpu_kernels: ERROR ...`, the other sections still run, and the exit
//! status is 2. Environment:
//! - `DESI_BENCH_DEVICE=k`: GPU ordinal (default 0).
//! - `DESI_CUSOLVER_LIB=/path/libcusolver.so.N`: a cuSOLVER outside the loader's search path
//!   (otherwise put its directory on `LD_LIBRARY_PATH`); without cuSOLVER its benchmarks are
//!   skipped with a notice and ours still run.
//! - `DESI_GPU_KERNELS=thread`: our one-thread-per-item kernels instead of the team ones.
//!
//! What is measured:
//! 1. Our pipeline on one simulated r frame (500 spectra, 5760-7620 Å by 0.8 Å: 4,700 patches,
//!    23,500 core blocks; built exactly like `desi-extract selftest`): criterion times the
//!    whole `extract_frame (GPU)` (wall clock; it returns after copying results back, so it is
//!    device-synchronized); every one of those runs also records the CUDA-event time of each
//!    stage (`Trace` GPU track), whose medians are printed as patches/s or blocks/s.
//! 2. `cusolverDnDpotrfBatched`, n = 518, 4,700 SPD matrices (diagonally dominant, half
//!    bandwidth 56, dense column-major storage, pointer array), criterion throughput in
//!    matrices. The pristine matrices are restored by a device copy before every call, outside
//!    the timed event pair.
//! 3. `cusolverDnDsyevjBatched`, n = 74, 23,500 covariance-like blocks with eigenvectors,
//!    tolerance 1e-14, at most 15 sweeps (blocks: `C = M⁻¹`, `M = AᵀWA` of a 1-D Gaussian PSF
//!    sampled at 1.5 px per bin, kept to |i−j| <= 8; 256 distinct blocks repeated), throughput
//!    in matrices; restored before every call like potrf.
//! 4. A per-frame comparison table (ratios from this one run).
//!
//! FP64 FLOP models (stated again in the output):
//! - potrf: `n³/3` per matrix.
//! - syevj: `S · n(n−1)/2 · 18n` per matrix (per rotation: 12n for two rows and two columns of
//!   A, 6n for two columns of V), `S` = mean sweeps our host two-sided cyclic Jacobi needs on
//!   the same blocks (cuSOLVER reports no sweep count for the batched routine).
//! - our cholesky stage (banded factor + solve): `n(kd² + 3kd) + 4n·kd` per patch, mean over
//!   the patches of bundle 0 on 6000-6200 Å (n = 444/518, kd from `patch_bandwidth`).
//! - our eigh stage (pivoted Cholesky, one-sided Jacobi, compose `C^(-1/2)`):
//!   `n³/3 + P·2n + R·6n + n³` per block, `P` pair tests and `R` rotations counted by the host
//!   `inverse_sqrt` on the synthetic blocks.

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use cudarc::cusolver::{sys as csys, DnHandle};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use desi_device::linalg::jacobi::{
    inverse_sqrt_with_stats, inverse_sqrt_work_len, jacobi_eigh_with_stats, JacobiStats,
};
use desi_device::patch::patch_bandwidth;
use desi_extract::extract::{extract_frame, Extraction};
use desi_extract::gpu::{probe_driver, GpuContext};
use desi_extract::io::read_psf;
use desi_extract::job::FrameJob;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PaddedGrid, WavelengthGrid};
use desi_extract::psf::GaussHermitePsf;
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::stats::median;
use desi_extract::trace::Trace;
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");
/// Unknowns of an interior patch (7 padded spectra x 74 bins).
const POTRF_N: usize = 518;
/// Patches of one r frame (500 spectra, 2,326 bins).
const FRAME_PATCHES: usize = 4_700;
/// Covariance block order (50 + 2 x 12 bins).
const SYEVJ_N: usize = 74;
/// Core blocks of one frame (4,700 patches x 5 core spectra).
const FRAME_BLOCKS: usize = 23_500;
/// syevj tolerance and sweep limit.
const SYEVJ_TOL: f64 = 1e-14;
const SYEVJ_MAX_SWEEPS: i32 = 15;
/// Distinct host-built matrices, repeated on the device to fill the batches.
const DISTINCT_SPD: usize = 8;
const DISTINCT_BLOCKS: usize = 256;
/// Blocks on which the host Jacobi routines count sweeps and rotations (FLOP models).
const COUNTED_BLOCKS: usize = 64;
/// Half bandwidth of the potrf test matrices (about our patches' kd).
const SPD_HALF_BANDWIDTH: usize = 56;
/// Fraction of the free device memory a cuSOLVER batch may take.
const MEMORY_FRACTION: f64 = 0.8;
/// Stages of `extract_frame (GPU)` reported, with the unit their throughput counts.
const STAGES: [(&str, Unit); 6] = [
    ("spots kernel", Unit::Patches),
    ("assemble", Unit::Patches),
    ("cholesky", Unit::Patches),
    ("covariance", Unit::Blocks),
    ("eigh", Unit::Blocks),
    ("finalize", Unit::Patches),
];

#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Patches,
    Blocks,
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    if let Err(err) = probe_driver() {
        println!("gpu_kernels: skipped, no GPU: {err}");
        return;
    }
    match GpuContext::device_count() {
        Ok(0) => {
            println!("gpu_kernels: skipped, the CUDA driver sees no device");
            return;
        }
        Err(err) => {
            println!("gpu_kernels: skipped, no usable GPU: {err}");
            return;
        }
        Ok(_) => {}
    }
    let ordinal = match std::env::var("DESI_BENCH_DEVICE") {
        Ok(v) => match v.parse::<usize>() {
            Ok(k) => k,
            Err(_) => {
                eprintln!("gpu_kernels: DESI_BENCH_DEVICE={v:?} is not a device ordinal");
                std::process::exit(2);
            }
        },
        Err(_) => 0,
    };
    let gpu = match GpuContext::new(ordinal) {
        Ok(g) => g,
        Err(err) => {
            eprintln!("gpu_kernels: ERROR opening GPU {ordinal}: {err}");
            std::process::exit(2);
        }
    };
    let free_mb = gpu.memory().map(|(f, _)| f >> 20).unwrap_or(0);
    println!(
        "gpu_kernels: {} (device {ordinal}, {free_mb} MB free), kernels {:?}",
        gpu.name(),
        gpu.mode
    );
    let mut failed = false;

    // Host-built covariance blocks and the model counts on them (shared by syevj and ours).
    let t = Instant::now();
    let blocks = covariance_blocks(DISTINCT_BLOCKS, SYEVJ_N, 20_260_521);
    let jstats = jacobi_counts(&blocks[..COUNTED_BLOCKS.min(blocks.len())], SYEVJ_N);
    println!(
        "gpu_kernels: {} distinct {n}x{n} covariance blocks in {:.2} s; on {COUNTED_BLOCKS} of \
         them the host two-sided Jacobi takes {:.2} sweeps/block, the one-sided inverse_sqrt \
         {:.2} sweeps and {:.0} rotations/block",
        blocks.len(),
        t.elapsed().as_secs_f64(),
        jstats.eigh_sweeps,
        jstats.isqrt_sweeps,
        jstats.isqrt_rotations,
        n = SYEVJ_N
    );

    // 1. Our frame (first, so it sizes its batches on an otherwise empty device).
    let ours = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        frame_section(&mut c, &gpu)
    })) {
        Ok(Ok(s)) => Some(s),
        Ok(Err(err)) => {
            eprintln!("gpu_kernels: ERROR in our frame benchmark: {err}");
            failed = true;
            None
        }
        Err(_) => {
            eprintln!("gpu_kernels: ERROR: our frame benchmark panicked (message above)");
            failed = true;
            None
        }
    };

    // 2-3. cuSOLVER.
    let theirs = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cusolver_section(&mut c, &gpu, &blocks)
    })) {
        Ok(Ok(s)) => {
            for err in &s.errors {
                eprintln!("gpu_kernels: ERROR in the cuSOLVER benchmarks: {err}");
                failed = true;
            }
            Some(s)
        }
        Ok(Err(Section::Skip(why))) => {
            println!("gpu_kernels: cuSOLVER benchmarks skipped: {why}");
            None
        }
        Ok(Err(Section::Fail(err))) => {
            eprintln!("gpu_kernels: ERROR in the cuSOLVER benchmarks: {err}");
            failed = true;
            None
        }
        Err(_) => {
            eprintln!("gpu_kernels: ERROR: the cuSOLVER benchmarks panicked (message above)");
            failed = true;
            None
        }
    };

    report(&gpu.name(), ours.as_ref(), theirs.as_ref(), &jstats);
    c.final_summary();
    if failed {
        std::process::exit(2);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A section that could not run: `Skip` (missing library: a notice) or `Fail` (an error).
enum Section {
    Skip(String),
    Fail(String),
}

/// `Fail` with the name of the call.
fn fail<E: Display>(what: &str) -> impl FnOnce(E) -> Section + '_ {
    move |err| Section::Fail(format!("{what}: {err}"))
}

/// The value, or a panic naming the call (inside criterion's timing closures only: every call
/// there was already checked once by the validation run before timing started).
fn must<T, E: Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|err| panic!("gpu_kernels: {what} failed: {err}"))
}

/// A CUDA event that records time.
fn timing_event(stream: &Arc<CudaStream>) -> Result<cudarc::driver::CudaEvent, String> {
    stream
        .record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(|e| format!("record a CUDA event: {e}"))
}

/// The larger of two values, NaN if either is NaN (a NaN must fail a check, not vanish).
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

// ---------------------------------------------------------------------------------------------
// Our frame

/// Results of the frame section.
struct FrameStats {
    npatch: usize,
    nblock: usize,
    runs: usize,
    /// Median whole-frame wall time, seconds.
    wall: f64,
    /// Median GPU time of each of [`STAGES`], seconds (NaN if a stage never ran).
    stage: Vec<f64>,
    /// Model FLOP of the cholesky stage per patch, and the n, kd it came from.
    chol_flop_per_patch: f64,
    mean_n: f64,
    mean_kd: f64,
}

fn frame_section(c: &mut Criterion, gpu: &GpuContext) -> Result<FrameStats, String> {
    let psf = read_psf(Path::new(PSF)).map_err(|e| format!("read {PSF}: {e}"))?;
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).map_err(|e| e.to_string())?;
    let nspec = 500;
    let t = Instant::now();
    let spectra = builtin_spectra(0, nspec, &grid.wave);
    let image = simulated_preproc(&psf, &spectra, 3.0, 1, false, "r0")
        .map_err(|e| format!("simulate the frame: {e}"))?;
    let params = ExtractionParams {
        nspec,
        psferr: psf.psferr,
        ..ExtractionParams::default()
    };
    println!(
        "gpu_kernels: simulated an r frame, {nspec} spectra x {} wavelengths, in {:.1} s",
        grid.nwave(),
        t.elapsed().as_secs_f64()
    );
    let (chol_flop_per_patch, mean_n, mean_kd) = cholesky_model(&psf)?;

    let run = |trace: &Trace| -> Result<Extraction, String> {
        let job = FrameJob::new(&psf, &image, &grid, &params).map_err(|e| e.to_string())?;
        extract_frame(&job, gpu, &|_, _| {}, trace).map_err(|e| format!("extract_frame: {e}"))
    };
    // Warm-up and validation run (module load, allocator pools, first touch).
    let warm = run(&Trace::new())?;
    let npatch = warm.npatch;
    let nblock = npatch * (params.bundlesize / params.nsubbundles);
    println!(
        "gpu_kernels: frame has {npatch} patches, {nblock} core blocks; {} patch reports",
        warm.reports.len()
    );
    if !warm.reports.is_empty() {
        println!(
            "gpu_kernels: WARNING: patches were reported (CPU fallbacks distort the timings), \
             first: {:?}",
            warm.reports[0]
        );
    }
    if npatch != FRAME_PATCHES {
        println!(
            "gpu_kernels: WARNING: {npatch} patches, not the {FRAME_PATCHES} the cuSOLVER \
             per-frame figures assume"
        );
    }

    // Every timed run: (wall, GPU totals per stage).
    let runs: RefCell<Vec<(f64, Vec<f64>)>> = RefCell::new(Vec::new());
    let timed_run = || -> Duration {
        let trace = Trace::new();
        let t = Instant::now();
        must(run(&trace), "extract_frame (GPU)");
        let wall = t.elapsed();
        let totals = trace.totals();
        let stage = STAGES
            .iter()
            .map(|(name, _)| {
                totals
                    .iter()
                    .find(|(n, track, _)| n == name && *track == "gpu")
                    .map_or(f64::NAN, |(_, _, d)| d.as_secs_f64())
            })
            .collect();
        runs.borrow_mut().push((wall.as_secs_f64(), stage));
        wall
    };
    {
        let mut g = c.benchmark_group("frame_r");
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(15))
            .throughput(Throughput::Elements(npatch as u64));
        g.bench_function(
            BenchmarkId::new("extract_frame (GPU)", format!("{npatch}_patches")),
            |b| {
                b.iter_custom(|iters| (0..iters).map(|_| timed_run()).sum());
            },
        );
        g.finish();
    }
    if runs.borrow().is_empty() {
        // The benchmark was filtered out: a few runs for the stage table.
        for _ in 0..5 {
            timed_run();
        }
    }
    let runs = runs.into_inner();
    let stage = (0..STAGES.len())
        .map(|i| {
            median(
                runs.iter()
                    .map(|(_, s)| s[i])
                    .filter(|x| x.is_finite())
                    .collect(),
            )
        })
        .collect();
    Ok(FrameStats {
        npatch,
        nblock,
        runs: runs.len(),
        wall: median(runs.iter().map(|(w, _)| *w).collect()),
        stage,
        chol_flop_per_patch,
        mean_n,
        mean_kd,
    })
}

/// Mean model FLOP of a banded factor + solve per patch, mean n and kd, over the patches of
/// bundle 0 on 6000-6200 Å.
fn cholesky_model(psf: &GaussHermitePsf) -> Result<(f64, f64, f64), String> {
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).map_err(|e| e.to_string())?;
    let nspec = 25;
    let params = ExtractionParams {
        nspec,
        psferr: psf.psferr,
        ..ExtractionParams::default()
    };
    let pad = params.pad();
    let padded = PaddedGrid::new(grid.clone(), pad, params.nwavestep);
    let spots = psf
        .spots(0, nspec, &padded.fullwave)
        .map_err(|e| format!("spots for the FLOP model: {e}"))?;
    let plans = plan_bundle(0, &spots, &params, grid.nwave(), psf.npix_y);
    let (mut flop, mut sum_n, mut sum_kd, mut count) = (0.0, 0.0, 0.0, 0usize);
    for plan in &plans {
        let Some(shape) = plan.shape(params.nwavetot()) else {
            continue;
        };
        let view = plan.stamp_view(&spots, pad);
        let n = shape.nunknown() as f64;
        let kd = patch_bandwidth(&view, &shape) as f64;
        flop += n * (kd * kd + 3.0 * kd) + 4.0 * n * kd;
        sum_n += n;
        sum_kd += kd;
        count += 1;
    }
    if count == 0 {
        return Err("no patch of bundle 0 lies on the CCD (FLOP model)".into());
    }
    let k = count as f64;
    Ok((flop / k, sum_n / k, sum_kd / k))
}

// ---------------------------------------------------------------------------------------------
// Host-built test matrices

/// `count` covariance-like blocks `C = M⁻¹` of order `n`, row-major (= column-major: exactly
/// symmetric). `M = AᵀWA`: bin k of a Gaussian PSF (σ 0.9-1.3 px) centred at 1.5 px per bin,
/// sampled at pixel centres, weights `1/(3² + model)` for fluxes 50-1000; entries with
/// |i−j| > 8 dropped (they are below 1e-10 of the diagonal).
fn covariance_blocks(count: usize, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let margin = 8.0;
    let npix = (1.5 * n as f64 + 2.0 * margin).ceil() as usize;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let sigma = 0.9 + 0.4 * rng.random::<f64>();
        let flux: Vec<f64> = (0..n).map(|_| 50.0 + 950.0 * rng.random::<f64>()).collect();
        let mut a = vec![0.0; npix * n];
        for p in 0..npix {
            for k in 0..n {
                let d = (p as f64 + 0.5) - (margin + 1.5 * k as f64 + 0.75);
                a[p * n + k] = (-0.5 * (d / sigma).powi(2)).exp()
                    / (sigma * (2.0 * std::f64::consts::PI).sqrt());
            }
        }
        let mut m = vec![0.0; n * n];
        for p in 0..npix {
            let row = &a[p * n..(p + 1) * n];
            let model: f64 = row.iter().zip(&flux).map(|(x, f)| x * f).sum();
            let w = 1.0 / (9.0 + model);
            for i in 0..n {
                for j in i.saturating_sub(8)..(i + 9).min(n) {
                    m[i * n + j] += w * row[i] * row[j];
                }
            }
        }
        let Some(chol) = DMatrix::from_row_slice(n, n, &m).cholesky() else {
            continue;
        };
        let inv = chol.inverse();
        let mut cov = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                cov[i * n + j] = 0.5 * (inv[(i, j)] + inv[(j, i)]);
            }
        }
        out.push(cov);
    }
    out
}

/// A dense symmetric diagonally dominant (hence SPD) matrix of order `n` with half bandwidth
/// `kd`, column-major.
fn spd_banded(n: usize, kd: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut a = vec![0.0f64; n * n];
    for j in 0..n {
        for i in j + 1..(j + kd + 1).min(n) {
            let v: f64 = rng.random_range(-1.0..1.0);
            a[i + j * n] = v;
            a[j + i * n] = v;
        }
    }
    for i in 0..n {
        let off: f64 = (0..n).filter(|&j| j != i).map(|j| a[i + j * n].abs()).sum();
        a[i + i * n] = 1.0 + off;
    }
    a
}

/// Model counts of the host Jacobi routines on the synthetic blocks (means per block).
struct JacobiCounts {
    eigh_sweeps: f64,
    isqrt_sweeps: f64,
    isqrt_rotations: f64,
}

fn jacobi_counts(blocks: &[Vec<f64>], n: usize) -> JacobiCounts {
    let (mut es, mut is, mut ir) = (0usize, 0usize, 0usize);
    let mut vecs = vec![0.0; n * n];
    let mut vals = vec![0.0; n];
    let mut out = vec![0.0; n * n];
    let mut work = vec![0.0; inverse_sqrt_work_len(n)];
    for b in blocks {
        let mut a = b.clone();
        let mut st = JacobiStats::default();
        let _ = jacobi_eigh_with_stats(&mut a, n, &mut vecs, &mut vals, 100, &mut st);
        es += st.sweeps;
        let mut st = JacobiStats::default();
        let _ = inverse_sqrt_with_stats(b, n, &mut out, &mut work, &mut st);
        is += st.sweeps;
        ir += st.rotations;
    }
    let k = blocks.len().max(1) as f64;
    JacobiCounts {
        eigh_sweeps: es as f64 / k,
        isqrt_sweeps: is as f64 / k,
        isqrt_rotations: ir as f64 / k,
    }
}

// ---------------------------------------------------------------------------------------------
// cuSOLVER

/// Results of the cuSOLVER section.
struct CusolverStats {
    potrf: Option<BatchTime>,
    syevj: Option<BatchTime>,
    /// Failures of either benchmark (the other still ran).
    errors: Vec<String>,
}

/// Median time of one batched call and its batch size.
struct BatchTime {
    batch: usize,
    seconds: f64,
    /// Matrices whose info was non-zero in the validation run.
    bad: usize,
}

/// Loads cuSOLVER: an explicit `DESI_CUSOLVER_LIB` first (kept loaded, so cudarc's load by
/// soname finds it), then cudarc's own search.
fn load_cusolver() -> Result<(), Section> {
    if let Ok(path) = std::env::var("DESI_CUSOLVER_LIB") {
        // SAFETY: loading cuSOLVER runs its initializers, as any CUDA program does; the handle
        // is leaked on purpose so the library stays loaded for cudarc.
        match unsafe { libloading::Library::new(&path) } {
            Ok(lib) => std::mem::forget(lib),
            Err(e) => {
                return Err(Section::Skip(format!(
                    "DESI_CUSOLVER_LIB={path} does not load: {e}"
                )))
            }
        }
    }
    // SAFETY: only tries to dlopen the candidate names.
    if unsafe { csys::is_culib_present() } {
        Ok(())
    } else {
        Err(Section::Skip(
            "libcusolver (libcusolver.so / .so.11 / .so.12) not found or its dependencies \
             (libcublas, libcublasLt, libcusparse, libnvJitLink) do not load; put their \
             directory on LD_LIBRARY_PATH or set DESI_CUSOLVER_LIB"
                .into(),
        ))
    }
}

fn cusolver_section(
    c: &mut Criterion,
    gpu: &GpuContext,
    blocks: &[Vec<f64>],
) -> Result<CusolverStats, Section> {
    load_cusolver()?;
    gpu.ctx.bind_to_thread().map_err(fail("bind the context"))?;
    let handle = DnHandle::new(gpu.stream.clone()).map_err(fail("cusolverDnCreate"))?;
    let mut errors = Vec::new();
    let mut outcome = |name: &str, result: Result<BatchTime, Section>| match result {
        Ok(t) => Some(t),
        Err(Section::Skip(e)) => {
            println!("gpu_kernels: {name} skipped: {e}");
            None
        }
        Err(Section::Fail(e)) => {
            errors.push(format!("{name}: {e}"));
            None
        }
    };
    // syevj runs even when potrf failed (its buffers are gone by then).
    let potrf = outcome("potrfBatched", potrf_bench(c, gpu, &handle));
    let syevj = outcome("syevjBatched", syevj_bench(c, gpu, &handle, blocks));
    Ok(CusolverStats {
        potrf,
        syevj,
        errors,
    })
}

/// A batched cuSOLVER call on device buffers that it overwrites.
trait BatchedCall {
    /// Puts the pristine inputs back (a device copy).
    fn restore(&mut self, stream: &Arc<CudaStream>) -> Result<(), String>;

    /// Enqueues the call.
    fn launch(&mut self, handle: &DnHandle, stream: &Arc<CudaStream>) -> Result<(), String>;

    /// Restore (untimed) and one call between two CUDA events: seconds.
    fn time_once(&mut self, handle: &DnHandle, stream: &Arc<CudaStream>) -> Result<f64, String> {
        self.restore(stream)?;
        let start = timing_event(stream)?;
        self.launch(handle, stream)?;
        let end = timing_event(stream)?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(|e| format!("event time: {e}"))?;
        Ok(f64::from(ms) / 1e3)
    }
}

/// Times `call` with criterion (group `group`, benchmark `id`, throughput `batch` matrices)
/// and returns the median of the timed calls (three more calls when criterion ran none, e.g.
/// when filtered out).
#[allow(clippy::too_many_arguments)]
fn time_batched<C: BatchedCall>(
    c: &mut Criterion,
    group: &str,
    id: BenchmarkId,
    call: &mut C,
    handle: &DnHandle,
    stream: &Arc<CudaStream>,
    batch: usize,
    what: &str,
) -> Result<f64, Section> {
    let times: RefCell<Vec<f64>> = RefCell::new(Vec::new());
    {
        let mut g = c.benchmark_group(group);
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(10))
            .throughput(Throughput::Elements(batch as u64));
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = 0.0;
                for _ in 0..iters {
                    let s = must(call.time_once(handle, stream), what);
                    times.borrow_mut().push(s);
                    total += s;
                }
                Duration::from_secs_f64(total)
            });
        });
        g.finish();
    }
    let mut times = times.into_inner();
    if times.is_empty() {
        for _ in 0..3 {
            times.push(call.time_once(handle, stream).map_err(Section::Fail)?);
        }
    }
    Ok(median(times))
}

/// Device buffers of the potrf benchmark.
struct Potrf {
    n: usize,
    batch: usize,
    pristine: CudaSlice<f64>,
    work: CudaSlice<f64>,
    ptrs: CudaSlice<u64>,
    info: CudaSlice<i32>,
}

impl BatchedCall for Potrf {
    fn restore(&mut self, stream: &Arc<CudaStream>) -> Result<(), String> {
        stream
            .memcpy_dtod(&self.pristine, &mut self.work)
            .map_err(|e| format!("restore the matrices: {e}"))
    }

    fn launch(&mut self, handle: &DnHandle, stream: &Arc<CudaStream>) -> Result<(), String> {
        let (ptrs, _r) = self.ptrs.device_ptr(stream);
        let (_w, _rw) = self.work.device_ptr_mut(stream);
        let (info, _ri) = self.info.device_ptr_mut(stream);
        // SAFETY: `ptrs` holds `batch` device addresses of n x n column-major f64 matrices
        // inside `work` (alive for the call), `info` holds `batch` ints; lda = n.
        unsafe {
            csys::cusolverDnDpotrfBatched(
                handle.cu(),
                csys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                self.n as i32,
                ptrs as *mut *mut f64,
                self.n as i32,
                info as *mut i32,
                self.batch as i32,
            )
        }
        .result()
        .map_err(|e| format!("cusolverDnDpotrfBatched: {e}"))
    }
}

fn potrf_bench(
    c: &mut Criterion,
    gpu: &GpuContext,
    handle: &DnHandle,
) -> Result<BatchTime, Section> {
    let stream = &gpu.stream;
    let n = POTRF_N;
    let nn = n * n;
    let (free, _) = gpu.memory().map_err(fail("query memory"))?;
    let per_matrix = 2 * nn * 8 + 8 + 4;
    let batch = ((free as f64 * MEMORY_FRACTION) as usize / per_matrix).min(FRAME_PATCHES);
    if batch == 0 {
        return Err(Section::Skip(format!(
            "{free} bytes free, one matrix needs {per_matrix}"
        )));
    }
    let host: Vec<Vec<f64>> = (0..DISTINCT_SPD)
        .map(|k| spd_banded(n, SPD_HALF_BANDWIDTH, 1000 + k as u64))
        .collect();
    let mut pristine = stream
        .alloc_zeros::<f64>(batch * nn)
        .map_err(fail("allocate the matrices"))?;
    for (k, m) in host.iter().enumerate() {
        let src = stream
            .clone_htod(m)
            .map_err(fail("copy a matrix to the device"))?;
        for i in (k..batch).step_by(DISTINCT_SPD) {
            let mut dst = pristine.slice_mut(i * nn..(i + 1) * nn);
            stream
                .memcpy_dtod(&src, &mut dst)
                .map_err(fail("replicate a matrix"))?;
        }
    }
    let work = stream
        .alloc_zeros::<f64>(batch * nn)
        .map_err(fail("allocate the work matrices"))?;
    let base = {
        let (p, _guard) = work.device_ptr(stream);
        p
    };
    let addrs: Vec<u64> = (0..batch).map(|i| base + (i * nn * 8) as u64).collect();
    let ptrs = stream
        .clone_htod(&addrs)
        .map_err(fail("copy the pointer array"))?;
    let info = stream
        .alloc_zeros::<i32>(batch)
        .map_err(fail("allocate info"))?;
    let mut p = Potrf {
        n,
        batch,
        pristine,
        work,
        ptrs,
        info,
    };

    // Validation: every info 0, and L Lᵀ = A for matrix 0.
    p.restore(stream).map_err(Section::Fail)?;
    p.launch(handle, stream).map_err(Section::Fail)?;
    stream
        .synchronize()
        .map_err(fail("synchronize after potrf"))?;
    let info = stream.clone_dtoh(&p.info).map_err(fail("copy info"))?;
    let bad = info.iter().filter(|&&i| i != 0).count();
    if bad > 0 {
        return Err(Section::Fail(format!(
            "{bad} of {batch} matrices not factored (first info {})",
            info.iter().find(|&&i| i != 0).copied().unwrap_or(0)
        )));
    }
    let l = stream
        .clone_dtoh(&p.work.slice(0..nn))
        .map_err(fail("copy a factor"))?;
    let a = &host[0];
    let mut worst = 0.0f64;
    for j in 0..n {
        for i in j..n {
            let s: f64 = (0..=j).map(|k| l[i + k * n] * l[j + k * n]).sum();
            worst = nan_max(worst, (s - a[i + j * n]).abs() / a[i + i * n]);
        }
    }
    println!(
        "gpu_kernels: potrfBatched n={n} x{batch}: all info 0; max |LLᵀ−A|/A_ii of matrix 0 = \
         {worst:.1e}"
    );
    if worst.is_nan() || worst > 1e-12 {
        return Err(Section::Fail(format!(
            "factor of matrix 0 wrong: max |LLᵀ−A|/A_ii = {worst:e}"
        )));
    }

    let seconds = time_batched(
        c,
        "cusolver_potrfBatched",
        BenchmarkId::new(format!("n{n}"), format!("{batch}_matrices")),
        &mut p,
        handle,
        stream,
        batch,
        "timed potrfBatched",
    )?;
    Ok(BatchTime {
        batch,
        seconds,
        bad: 0,
    })
}

/// Owns a `syevjInfo_t`.
struct SyevjParams(csys::syevjInfo_t);

impl SyevjParams {
    fn new(tol: f64, max_sweeps: i32) -> Result<Self, Section> {
        let mut info: csys::syevjInfo_t = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; the created object is destroyed in Drop.
        unsafe { csys::cusolverDnCreateSyevjInfo(&mut info) }
            .result()
            .map_err(fail("cusolverDnCreateSyevjInfo"))?;
        let params = Self(info);
        // SAFETY: `info` was just created.
        unsafe { csys::cusolverDnXsyevjSetTolerance(params.0, tol) }
            .result()
            .map_err(fail("cusolverDnXsyevjSetTolerance"))?;
        // SAFETY: as above.
        unsafe { csys::cusolverDnXsyevjSetMaxSweeps(params.0, max_sweeps) }
            .result()
            .map_err(fail("cusolverDnXsyevjSetMaxSweeps"))?;
        Ok(params)
    }
}

impl Drop for SyevjParams {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by cusolverDnCreateSyevjInfo, destroyed once.
            let _ = unsafe { csys::cusolverDnDestroySyevjInfo(self.0) };
        }
    }
}

/// Device buffers of the syevj benchmark.
struct Syevj {
    n: usize,
    batch: usize,
    pristine: CudaSlice<f64>,
    a: CudaSlice<f64>,
    w: CudaSlice<f64>,
    work: CudaSlice<f64>,
    info: CudaSlice<i32>,
    params: SyevjParams,
}

impl BatchedCall for Syevj {
    fn restore(&mut self, stream: &Arc<CudaStream>) -> Result<(), String> {
        stream
            .memcpy_dtod(&self.pristine, &mut self.a)
            .map_err(|e| format!("restore the blocks: {e}"))
    }

    fn launch(&mut self, handle: &DnHandle, stream: &Arc<CudaStream>) -> Result<(), String> {
        let lwork = self.work.len();
        let (a, _ra) = self.a.device_ptr_mut(stream);
        let (w, _rw) = self.w.device_ptr_mut(stream);
        let (work, _rk) = self.work.device_ptr_mut(stream);
        let (info, _ri) = self.info.device_ptr_mut(stream);
        // SAFETY: `a` holds `batch` n x n column-major blocks (lda = n), `w` batch*n values,
        // `work` lwork values as sized by the bufferSize query, `info` batch ints.
        unsafe {
            csys::cusolverDnDsyevjBatched(
                handle.cu(),
                csys::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                csys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                self.n as i32,
                a as *mut f64,
                self.n as i32,
                w as *mut f64,
                work as *mut f64,
                lwork as i32,
                info as *mut i32,
                self.params.0,
                self.batch as i32,
            )
        }
        .result()
        .map_err(|e| format!("cusolverDnDsyevjBatched: {e}"))
    }
}

fn syevj_bench(
    c: &mut Criterion,
    gpu: &GpuContext,
    handle: &DnHandle,
    blocks: &[Vec<f64>],
) -> Result<BatchTime, Section> {
    let stream = &gpu.stream;
    let n = SYEVJ_N;
    let nn = n * n;
    let (free, _) = gpu.memory().map_err(fail("query memory"))?;
    // Two copies of the blocks, eigenvalues, info, and room for a workspace of the same order.
    let per_matrix = 3 * nn * 8 + n * 8 + 4;
    let batch = ((free as f64 * MEMORY_FRACTION) as usize / per_matrix)
        .min(FRAME_BLOCKS)
        .min(i32::MAX as usize / nn);
    if batch == 0 || blocks.is_empty() {
        return Err(Section::Skip(format!(
            "{free} bytes free, one block needs {per_matrix}"
        )));
    }
    let distinct: Vec<f64> = blocks.iter().flatten().copied().collect();
    let d_distinct = stream
        .clone_htod(&distinct)
        .map_err(fail("copy the blocks"))?;
    let mut pristine = stream
        .alloc_zeros::<f64>(batch * nn)
        .map_err(fail("allocate the blocks"))?;
    let nd = blocks.len();
    let mut i = 0;
    while i < batch {
        let k = nd.min(batch - i);
        let mut dst = pristine.slice_mut(i * nn..(i + k) * nn);
        stream
            .memcpy_dtod(&d_distinct.slice(0..k * nn), &mut dst)
            .map_err(fail("replicate the blocks"))?;
        i += k;
    }
    drop(d_distinct);
    let a = stream
        .alloc_zeros::<f64>(batch * nn)
        .map_err(fail("allocate the work blocks"))?;
    let w = stream
        .alloc_zeros::<f64>(batch * n)
        .map_err(fail("allocate eigenvalues"))?;
    let info = stream
        .alloc_zeros::<i32>(batch)
        .map_err(fail("allocate info"))?;
    let params = SyevjParams::new(SYEVJ_TOL, SYEVJ_MAX_SWEEPS)?;
    let mut lwork: i32 = 0;
    {
        let (ap, _ra) = a.device_ptr(stream);
        let (wp, _rw) = w.device_ptr(stream);
        // SAFETY: device pointers of the buffers above, an out-pointer to a local.
        unsafe {
            csys::cusolverDnDsyevjBatched_bufferSize(
                handle.cu(),
                csys::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                csys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                n as i32,
                ap as *const f64,
                n as i32,
                wp as *const f64,
                &mut lwork,
                params.0,
                batch as i32,
            )
        }
        .result()
        .map_err(|e| {
            Section::Skip(format!(
                "cusolverDnDsyevjBatched_bufferSize(n = {n}, batch = {batch}) refused: {e} \
                 (this cuSOLVER may not support the batched routine at this size)"
            ))
        })?;
    }
    if lwork < 0 {
        return Err(Section::Fail(format!(
            "bufferSize returned lwork = {lwork}"
        )));
    }
    let work = stream
        .alloc_zeros::<f64>((lwork as usize).max(1))
        .map_err(fail(&format!("allocate the workspace ({lwork} doubles)")))?;
    let mut s = Syevj {
        n,
        batch,
        pristine,
        a,
        w,
        work,
        info,
        params,
    };

    // Validation: info, and A V = V Λ for block 0 against nalgebra's eigenvalues.
    s.restore(stream).map_err(Section::Fail)?;
    s.launch(handle, stream).map_err(Section::Fail)?;
    stream
        .synchronize()
        .map_err(fail("synchronize after syevj"))?;
    let info = stream.clone_dtoh(&s.info).map_err(fail("copy info"))?;
    if let Some(&neg) = info.iter().find(|&&i| i < 0) {
        return Err(Section::Fail(format!("info = {neg} (invalid parameter)")));
    }
    let bad = info.iter().filter(|&&i| i > 0).count();
    let v = stream
        .clone_dtoh(&s.a.slice(0..nn))
        .map_err(fail("copy eigenvectors"))?;
    let lam = stream
        .clone_dtoh(&s.w.slice(0..n))
        .map_err(fail("copy eigenvalues"))?;
    let c0 = &blocks[0];
    let lmax = lam.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let mut resid = 0.0f64;
    for k in 0..n {
        for i in 0..n {
            let av: f64 = (0..n).map(|j| c0[i * n + j] * v[j + k * n]).sum();
            resid = nan_max(resid, (av - lam[k] * v[i + k * n]).abs());
        }
    }
    let mut reference = DMatrix::from_row_slice(n, n, c0)
        .symmetric_eigen()
        .eigenvalues
        .as_slice()
        .to_vec();
    reference.sort_by(|x, y| x.total_cmp(y));
    let mut got = lam.clone();
    got.sort_by(|x, y| x.total_cmp(y));
    let eig_err = got
        .iter()
        .zip(&reference)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f64, nan_max);
    println!(
        "gpu_kernels: syevjBatched n={n} x{batch}: {bad} blocks not converged in \
         {SYEVJ_MAX_SWEEPS} sweeps; block 0: max|AV−VΛ|/λmax = {:.1e}, max|λ−λ_nalgebra|/λmax \
         = {:.1e}; workspace {} MB",
        resid / lmax,
        eig_err / lmax,
        (lwork as usize * 8) >> 20
    );
    let rel = nan_max(resid, eig_err) / lmax;
    if rel.is_nan() || rel > 1e-10 {
        return Err(Section::Fail(format!(
            "block 0 decomposition wrong: residual {:e}, eigenvalue error {:e} (relative)",
            resid / lmax,
            eig_err / lmax
        )));
    }

    let seconds = time_batched(
        c,
        "cusolver_syevjBatched",
        BenchmarkId::new(
            format!("n{n}_vectors_tol1e-14"),
            format!("{batch}_matrices"),
        ),
        &mut s,
        handle,
        stream,
        batch,
        "timed syevjBatched",
    )?;
    Ok(BatchTime {
        batch,
        seconds,
        bad,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

fn report(gpu: &str, ours: Option<&FrameStats>, theirs: Option<&CusolverStats>, j: &JacobiCounts) {
    let nf = SYEVJ_N as f64;
    let pn = POTRF_N as f64;
    let potrf_flop = pn.powi(3) / 3.0;
    let syevj_flop = j.eigh_sweeps * nf * (nf - 1.0) / 2.0 * 18.0 * nf;
    let pairs = (j.isqrt_sweeps + 1.0) * nf * (nf - 1.0) / 2.0;
    let eigh_flop = nf.powi(3) / 3.0 + pairs * 2.0 * nf + j.isqrt_rotations * 6.0 * nf + nf.powi(3);
    println!();
    println!("==== gpu_kernels summary: {gpu} ====");
    println!("FP64 FLOP models:");
    println!(
        "  potrf n={POTRF_N}: n³/3 = {:.1} MFLOP per matrix",
        potrf_flop / 1e6
    );
    println!(
        "  syevj n={SYEVJ_N}: S·n(n−1)/2·18n with S = {:.2} (host two-sided cyclic Jacobi \
         sweeps on the same blocks) = {:.1} MFLOP per block",
        j.eigh_sweeps,
        syevj_flop / 1e6
    );
    println!(
        "  our eigh: n³/3 + P·2n + R·6n + n³ with P = {:.0} pair tests, R = {:.0} rotations \
         (host inverse_sqrt on the synthetic blocks) = {:.1} MFLOP per block",
        pairs,
        j.isqrt_rotations,
        eigh_flop / 1e6
    );

    let mut chol = f64::NAN;
    let mut cov = f64::NAN;
    let mut eigh = f64::NAN;
    if let Some(o) = ours {
        println!(
            "  our cholesky: n(kd²+3kd) + 4n·kd with mean n = {:.0}, kd = {:.1} (bundle 0, \
             6000-6200 Å) = {:.2} MFLOP per patch",
            o.mean_n,
            o.mean_kd,
            o.chol_flop_per_patch / 1e6
        );
        println!();
        println!(
            "extract_frame (GPU), r frame, {} patches / {} blocks: median wall {:.1} ms over {} \
             runs ({:.0} patches/s)",
            o.npatch,
            o.nblock,
            o.wall * 1e3,
            o.runs,
            o.npatch as f64 / o.wall
        );
        println!(
            "  {:<11} {:>12} {:>16} {:>14}",
            "stage", "GPU ms", "throughput", "GFLOP/s"
        );
        for ((name, unit), &t) in STAGES.iter().zip(&o.stage) {
            let (count, label) = match unit {
                Unit::Patches => (o.npatch as f64, "patches/s"),
                Unit::Blocks => (o.nblock as f64, "blocks/s"),
            };
            let gflops = match *name {
                "cholesky" => format!("{:.0}", o.npatch as f64 * o.chol_flop_per_patch / t / 1e9),
                "eigh" => format!("{:.0}", o.nblock as f64 * eigh_flop / t / 1e9),
                _ => "-".into(),
            };
            println!(
                "  {:<11} {:>12.2} {:>9.3e} {label:<10} {gflops:>8}",
                name,
                t * 1e3,
                count / t
            );
        }
        println!("  (GPU ms: CUDA-event time of the stage, median over runs; eigh includes its allocations)");
        let scale = FRAME_PATCHES as f64 / o.npatch.max(1) as f64;
        chol = o.stage[2] * scale;
        cov = o.stage[3] * scale;
        eigh = o.stage[4] * scale;
    }

    let mut potrf = f64::NAN;
    let mut syevj = f64::NAN;
    if let Some(t) = theirs {
        println!();
        if let Some(p) = &t.potrf {
            potrf = p.seconds * FRAME_PATCHES as f64 / p.batch as f64;
            println!(
                "cuSOLVER potrfBatched n={POTRF_N} x{}: {:.2} ms per call, {:.0} matrices/s, \
                 {:.0} GFLOP/s; per frame ({FRAME_PATCHES}) {:.2} ms",
                p.batch,
                p.seconds * 1e3,
                p.batch as f64 / p.seconds,
                p.batch as f64 * potrf_flop / p.seconds / 1e9,
                potrf * 1e3
            );
        }
        if let Some(s) = &t.syevj {
            syevj = s.seconds * FRAME_BLOCKS as f64 / s.batch as f64;
            println!(
                "cuSOLVER syevjBatched n={SYEVJ_N} x{}: {:.2} ms per call, {:.0} matrices/s, \
                 {:.0} GFLOP/s (model); per frame ({FRAME_BLOCKS}) {:.2} ms; {} blocks did not \
                 converge",
                s.batch,
                s.seconds * 1e3,
                s.batch as f64 / s.seconds,
                s.batch as f64 * syevj_flop / s.seconds / 1e9,
                syevj * 1e3,
                s.bad
            );
        }
    }

    println!();
    println!("Per-frame comparison ({FRAME_PATCHES} patches, {FRAME_BLOCKS} blocks; ratio > 1: ours faster):");
    let row = |what: &str, ours: f64, theirs: f64, against: &str| {
        if ours.is_finite() && theirs.is_finite() && ours > 0.0 {
            println!(
                "  {what:<38} {:>9.2} ms | {against:<34} {:>9.2} ms | ratio {:>6.2}",
                ours * 1e3,
                theirs * 1e3,
                theirs / ours
            );
        } else {
            println!("  {what:<38} (not measured in this run)");
        }
    };
    row(
        "ours: banded factor+solve (cholesky)",
        chol,
        potrf,
        "potrfBatched n=518 (factor only)",
    );
    row(
        "ours: cholesky + covariance blocks",
        chol + cov,
        potrf,
        "potrfBatched n=518 (factor only)",
    );
    row(
        "ours: eigh (Jacobi C^-1/2 + resolution)",
        eigh,
        syevj,
        "syevjBatched n=74 (eigh only)",
    );
    println!(
        "  (the dense route also needs a triangular inverse for C_bb after potrf, so potrf alone \
         understates it; ours run on the frame's real blocks, syevj on synthetic ones)"
    );
}
