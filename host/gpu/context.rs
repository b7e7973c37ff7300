//! The CUDA context of the GPU backend: library probe, device, stream and the loaded kernels.

use super::launch::Kernel;
use super::memory::{memory_limit_from_env, PoolStats};
use super::ptx;
use crate::trace::Trace;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaModule, CudaSlice, CudaStream, DriverError, PinnedHostSlice,
};
use cudarc::nvrtc::Ptx;
use desi_device::kernels::{
    self as k, AssembleArgs, CovarianceArgs, FactorSolveArgs, MmaCheckArgs, PixelCoreArgs,
    PixelRowsArgs, RejectBinsArgs, RejectMaskArgs, RejectScanArgs, ResolutionArgs,
    ScreenPixelsArgs, SpotsArgs, WidenArgs,
};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors of the GPU backend as a whole.
#[derive(Debug, Error)]
pub enum GpuError {
    /// No CUDA driver library on this machine.
    #[error("no NVIDIA GPU driver found ({0}); run without --gpu to use the CPU")]
    NoDriver(String),
    /// A driver call failed.
    #[error("CUDA {stage}: {source}")]
    Driver {
        /// What was being done.
        stage: String,
        /// The driver's error.
        source: DriverError,
    },
    /// The device ran out of memory for even one patch.
    #[error("GPU memory: {0}")]
    Memory(String),
    /// The caller's memory cap (`--gpu-memory-limit`, `DESI_GPU_MEMORY_LIMIT`) is malformed
    /// or too small for the frame: the request is at fault.
    #[error("GPU memory limit: {0}")]
    MemoryLimit(String),
    /// A launch refused before it reached the driver: a shape beyond the 32-bit launch
    /// limits, or an empty buffer (the kernels need device allocations).
    #[error("GPU launch: {0}")]
    Launch(String),
    /// A helper thread of the GPU backend failed (a bug, reported rather than propagated).
    #[error("GPU backend: {0}")]
    Internal(String),
    /// Input that only the device reads is bad: pixels in device memory that are invalid or
    /// not where the job says (an input error, [`crate::solve::SolveError::Input`]).
    #[error("{0}")]
    Input(String),
}

impl GpuError {
    /// Whether the request is at fault (exit code 1): a malformed or too small memory cap.
    pub fn is_input_error(&self) -> bool {
        matches!(self, GpuError::MemoryLimit(_))
    }
}

/// Adds the stage to a driver error.
pub trait DriverContext<T> {
    /// Names the stage of a failed driver call.
    fn stage(self, stage: &str) -> Result<T, GpuError>;
}

impl<T> DriverContext<T> for Result<T, DriverError> {
    fn stage(self, stage: &str) -> Result<T, GpuError> {
        self.map_err(|source| GpuError::Driver {
            stage: stage.to_string(),
            source,
        })
    }
}

/// Checks that the CUDA driver library can be loaded, before cudarc touches it (cudarc panics
/// when it is absent).
pub fn probe_driver() -> Result<(), GpuError> {
    let mut last = String::new();
    for name in ["libcuda.so.1", "libcuda.so"] {
        // SAFETY: loading the NVIDIA driver library runs its initializers, which is what every
        // CUDA program does; the handle is dropped at once (cudarc loads it again).
        match unsafe { libloading::Library::new(name) } {
            Ok(_) => return Ok(()),
            Err(err) => last = format!("{name}: {err}"),
        }
    }
    Err(GpuError::NoDriver(last))
}

/// The kernels of [`ptx::PTX`], each typed by its argument struct (`desi_device::kernels`).
#[derive(Debug)]
pub struct Kernels {
    /// PSF spots of a frame.
    pub spots: Kernel<SpotsArgs>,
    /// PSF spots of a frame, one warp per spot.
    pub spots_team: Kernel<SpotsArgs>,
    /// PSF spots of a frame, 16 lanes per spot.
    pub spots_team16: Kernel<SpotsArgs>,
    /// PSF spots of a frame, 8 lanes per spot.
    pub spots_team8: Kernel<SpotsArgs>,
    /// f32 -> f64 widening.
    pub widen_f32: Kernel<WidenArgs>,
    /// The pixel rule over an image already in device memory.
    pub screen_pixels: Kernel<ScreenPixelsArgs>,
    /// Normal equations.
    pub assemble: Kernel<AssembleArgs>,
    /// Normal equations: one warp per (patch, unknown).
    pub assemble_warp: Kernel<AssembleArgs>,
    /// `assemble_warp_rs`.
    pub assemble_warp_rs: Kernel<AssembleArgs>,
    /// Regularize, factor, solve.
    pub factor_solve: Kernel<FactorSolveArgs>,
    /// Covariance blocks.
    pub covariance: Kernel<CovarianceArgs>,
    /// Jacobi inverse square root and resolution.
    pub resolution: Kernel<ResolutionArgs>,
    /// Regularize, factor, solve: one thread block per patch.
    pub factor_solve_team: Kernel<FactorSolveArgs>,
    /// Regularize, factor, solve: one thread block per patch, blocked back substitution.
    pub factor_solve_blocked: Kernel<FactorSolveArgs>,
    /// Covariance blocks: one thread block per (patch, core spectrum).
    pub covariance_team: Kernel<CovarianceArgs>,
    /// `covariance_team` with 32-bit shared-memory addressing in its phase loop (bitwise the
    /// same results).
    pub covariance_team_lds: Kernel<CovarianceArgs>,
    /// Covariance blocks with DMMA products: one thread block of warps per (patch, core
    /// spectrum).
    pub covariance_mma: Kernel<CovarianceArgs>,
    /// `covariance_mma` with `L` staged at the end of each phase (no register prefetch).
    pub covariance_mma_late: Kernel<CovarianceArgs>,
    /// Jacobi inverse square root and resolution: one thread block per (patch, core spectrum).
    pub resolution_team: Kernel<ResolutionArgs>,
    /// Newton–Schulz inverse square root (FP64 tensor cores) and resolution, one thread block
    /// per (patch, core spectrum); what it cannot solve is left to `resolution_team`.
    pub resolution_ns: Kernel<ResolutionArgs>,
    /// `resolution_ns` with the `ns2` iteration (register-blocked products, fewer barriers,
    /// optimistic first schedule); what it cannot solve is left to `resolution_team`.
    pub resolution_ns2: Kernel<ResolutionArgs>,
    /// One DMMA of one warp (the fragment layout check of `selftest --gpu`).
    pub mma_check: Kernel<MmaCheckArgs>,
    /// χ² of the kept window rows.
    pub pixel_rows: Kernel<PixelRowsArgs>,
    /// chi2pix and pixmask_fraction.
    pub pixel_core: Kernel<PixelCoreArgs>,
    /// χ² of the kept window rows: one warp per (patch, row).
    pub pixel_rows_warp: Kernel<PixelRowsArgs>,
    /// chi2pix and pixmask_fraction: one warp per (patch, core spectrum, core bin).
    pub pixel_core_warp: Kernel<PixelCoreArgs>,
    /// Outlier test of the window rows (docs/algorithm.md §4.11).
    pub reject_scan: Kernel<RejectScanArgs>,
    /// Rejected pixels' weights set to 0.
    pub reject_mask: Kernel<RejectMaskArgs>,
    /// Rejected pixels per core bin.
    pub reject_bins: Kernel<RejectBinsArgs>,
}

/// A CUDA device with the desi-extract kernels loaded.
#[derive(Debug)]
pub struct GpuContext {
    /// The context.
    pub ctx: Arc<CudaContext>,
    /// The stream every launch and copy goes to, but the batches' results.
    pub stream: Arc<CudaStream>,
    /// The stream the batches' results come back on: their copies run beside the next
    /// batch's kernels instead of ahead of them (`stream` itself under
    /// `DESI_GPU_STREAMS=one`, [`GPU_STREAMS_ENV`]).
    pub download: Arc<CudaStream>,
    /// The stream the batches' buffers are allocated and cleared on (at the highest
    /// priority): the next batch's are ready while the device still runs the batch before
    /// (`stream` itself under `DESI_GPU_STREAMS=one`).
    pub prepare: Arc<CudaStream>,
    /// Which of the two layouts `download` and `prepare` follow ([`GPU_STREAMS_ENV`]).
    pub streams: StreamLayout,
    /// How the host waits for the device ([`GPU_WAIT_ENV`]).
    pub wait: WaitMode,
    /// The rule that set `stream`'s priority ([`GPU_FRAME_PRIORITY_ENV`]).
    pub frame_priority: FramePriority,
    /// The loaded module.
    pub module: Arc<CudaModule>,
    /// Its kernels.
    pub kernels: Kernels,
    /// Device ordinal.
    pub ordinal: usize,
    /// Kernel family for the solve stages.
    pub mode: KernelMode,
    /// Lanes per spot of the spots kernel with the team kernels ([`SPOT_TEAM_LANES_ENV`]).
    pub spot_team: SpotTeam,
    /// Method of the `eigh` stage with the team kernels ([`EIGH_KERNEL_ENV`]).
    pub eigh: EighKernel,
    /// Kernel of the covariance stage with the team kernels ([`BAND_KERNEL_ENV`]).
    pub band: BandKernel,
    /// Kernel of the cholesky stage with the team kernels ([`FACTOR_KERNEL_ENV`]).
    pub factor: FactorKernel,
    /// Kernel of the assemble stage with the team kernels ([`ASSEMBLE_KERNEL_ENV`]).
    pub assemble: AssembleKernel,
    /// Blocks `resolution_ns` solved and left to the Jacobi, added up on the device over the
    /// context's life ([`GpuContext::eigh_counts`]).
    ns_counts: Mutex<CudaSlice<u32>>,
    /// Page-locked host buffers for the results of the (at most two) batches in flight,
    /// reused across batches and frames.
    pinned: [Mutex<Option<PinnedHostSlice<f64>>>; PINNED_SLOTS],
    /// Page-locked host buffers for the status codes of the batches in flight.
    pinned_status: [Mutex<Option<PinnedHostSlice<u32>>>; PINNED_SLOTS],
    /// Page-locked host buffer for the stamp corners (a frame keeps it while it runs and
    /// reads the corners there).
    pinned_corners: Mutex<Option<PinnedHostSlice<i32>>>,
    /// Page-locked host buffer for the spot status codes (kept likewise).
    pinned_spot_status: Mutex<Option<PinnedHostSlice<u32>>>,
    /// Page-locked, write-combined host buffer for the image upload, reused across frames.
    pinned_up: Mutex<Option<PinnedHostSlice<f32>>>,
    /// The caller's cap on the device bytes of one frame on this context (see
    /// [`super::memory`]); `None`: the free memory alone sizes the batches.
    memory_limit: Option<u64>,
    /// An event recorded on the idle stream when the context was made, and the host time it
    /// completed: device events convert to host instants through it
    /// ([`GpuContext::device_instant`]).
    epoch: (CudaEvent, Instant),
}

/// A new stream of `ctx` at the priority `pick(least, greatest)` chooses from the device's
/// range (greater priorities are smaller numbers).
fn stream_at_priority(
    ctx: &Arc<CudaContext>,
    pick: impl FnOnce(i32, i32) -> i32,
) -> Result<Arc<CudaStream>, GpuError> {
    ctx.bind_to_thread()
        .stage("bind the context to the thread")?;
    let (least, greatest) =
        cudarc::driver::result::stream::get_priority_range().stage("read the stream priorities")?;
    ctx.new_stream_with_priority(pick(least, greatest))
        .stage("create a stream")
}

/// A new stream of `ctx` at the device's highest priority ([`GpuContext::urgent_stream`]).
fn urgent_stream(ctx: &Arc<CudaContext>) -> Result<Arc<CudaStream>, GpuError> {
    stream_at_priority(ctx, |_least, greatest| greatest)
}

/// Number of page-locked download slots: batches that may be in flight at once.
pub const PINNED_SLOTS: usize = 2;

/// A page-locked host buffer lent by [`GpuContext::pinned_download`] or
/// [`GpuContext::pinned_upload`] (given back on drop).
pub struct PinnedGuard<'a, T> {
    slot: MutexGuard<'a, Option<PinnedHostSlice<T>>>,
    len: usize,
}

impl<T: cudarc::driver::ValidAsZeroBits> PinnedGuard<'_, T> {
    /// The first `len` values (the length asked for).
    pub fn as_mut_slice(&mut self) -> Result<&mut [T], DriverError> {
        match self.slot.as_mut() {
            Some(buf) => Ok(&mut buf.as_mut_slice()?[..self.len]),
            None => Err(DriverError(
                cudarc::driver::sys::cudaError_enum::CUDA_ERROR_NOT_INITIALIZED,
            )),
        }
    }

    /// The first `len` values, to read (once the copies into them have completed).
    pub fn as_slice(&self) -> Result<&[T], DriverError> {
        match self.slot.as_ref() {
            Some(buf) => Ok(&buf.as_slice()?[..self.len]),
            None => Err(DriverError(
                cudarc::driver::sys::cudaError_enum::CUDA_ERROR_NOT_INITIALIZED,
            )),
        }
    }
}

/// Which kernels solve the patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelMode {
    /// One thread block per patch or per core spectrum (cooperative, shared memory): default.
    Team,
    /// One thread per patch or per core spectrum (the plain device functions; reference).
    Thread,
}

/// The value of the environment variable `var` among `choices` (name, value): the first
/// choice when `var` is unset or empty; any other name is an error naming it and the choices.
fn env_choice<T: Copy>(var: &str, choices: &[(&str, T)]) -> Result<T, GpuError> {
    let value = std::env::var(var).unwrap_or_default();
    let name = if value.is_empty() {
        choices.first().map_or("", |c| c.0)
    } else {
        value.as_str()
    };
    if let Some(&(_, choice)) = choices.iter().find(|c| c.0 == name) {
        return Ok(choice);
    }
    let names: Vec<String> = choices.iter().map(|c| format!("`{}`", c.0)).collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "nothing".into(),
    };
    Err(GpuError::Launch(format!(
        "{var}={value}: expected {expected}"
    )))
}

/// Environment variable choosing the `eigh` stage's method: `ns2` (default: Newton–Schulz on
/// FP64 tensor cores with register-blocked products, `resolution_ns2`, with the blocks it
/// cannot solve left to `resolution_team`), `ns` (the first Newton–Schulz kernel,
/// `resolution_ns`, likewise) or `team` (one-sided Jacobi for every block, `resolution_team`).
pub const EIGH_KERNEL_ENV: &str = "DESI_EIGH_KERNEL";

/// Method of the `eigh` stage (`C_bb^(-1/2)` and the resolution, docs/algorithm.md §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EighKernel {
    /// One-sided Jacobi (`resolution_team`) for every block.
    Team,
    /// Coupled Newton–Schulz with its products on FP64 tensor cores (`resolution_ns`), then
    /// `resolution_team` on the blocks it left (κ beyond ~1e5, non-finite).
    Ns,
    /// The same iteration with register-blocked products, 3 barriers per iteration and an
    /// optimistic first schedule (`resolution_ns2`), then `resolution_team` on the blocks it
    /// left: default.
    Ns2,
}

impl EighKernel {
    /// From [`EIGH_KERNEL_ENV`]: `team`, `ns`, or `ns2`/unset; anything else is an error
    /// naming it.
    pub fn from_env() -> Result<Self, GpuError> {
        env_choice(
            EIGH_KERNEL_ENV,
            &[("ns2", Self::Ns2), ("ns", Self::Ns), ("team", Self::Team)],
        )
    }

    /// The value of [`EIGH_KERNEL_ENV`] that selects this method.
    pub fn name(self) -> &'static str {
        match self {
            Self::Team => "team",
            Self::Ns => "ns",
            Self::Ns2 => "ns2",
        }
    }

    /// Whether this method runs a Newton–Schulz kernel first (`ns`, `ns2`).
    pub fn newton_schulz(self) -> bool {
        matches!(self, Self::Ns | Self::Ns2)
    }
}

/// Environment variable choosing the lanes per spot of the spots kernel: `16` (default:
/// `spots_team16`, two spots per warp), `32` (`spots_team`, one warp per spot) or `8`
/// (`spots_team8`, four); the stamps are the same bit for bit. On an H100 (full r frame,
/// 2026-12-07) the kernel took 10.35 ms with 16 lanes, 12.93 with 32 and 11.98 with 8: one
/// spot keeps only ~18 of a warp's 32 lanes busy (ncu), two spots per warp fill them.
pub const SPOT_TEAM_LANES_ENV: &str = "DESI_SPOT_TEAM_LANES";

/// Lanes per spot of the spots kernel ([`SPOT_TEAM_LANES_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpotTeam {
    /// One warp per spot (`spots_team`).
    Warp,
    /// 16 lanes per spot (`spots_team16`): default.
    Half,
    /// 8 lanes per spot (`spots_team8`).
    Quarter,
}

impl SpotTeam {
    /// From [`SPOT_TEAM_LANES_ENV`]: `16`/unset, `32` or `8`; anything else is an error naming
    /// it.
    pub fn from_env() -> Result<Self, GpuError> {
        env_choice(
            SPOT_TEAM_LANES_ENV,
            &[("16", Self::Half), ("32", Self::Warp), ("8", Self::Quarter)],
        )
    }

    /// Lanes per spot.
    pub fn lanes(self) -> usize {
        match self {
            Self::Warp => 32,
            Self::Half => 16,
            Self::Quarter => 8,
        }
    }

    /// The spots kernel of this team width.
    pub fn kernel(self, kernels: &Kernels) -> &Kernel<SpotsArgs> {
        match self {
            Self::Warp => &kernels.spots_team,
            Self::Half => &kernels.spots_team16,
            Self::Quarter => &kernels.spots_team8,
        }
    }
}

/// Environment variable choosing the covariance stage's kernel (`C_bb` from the band factor,
/// docs/algorithm.md §4.4): `team-lds` (default: `covariance_team_lds`, FP64 FMAs with 32-bit
/// shared-memory addressing in its phase loop), `team` (`covariance_team`, the same sums
/// bitwise through generic loads: 25.9 against 16.9 ms per r frame on an H100), `mma`
/// (`covariance_mma`, its products on FP64 tensor cores; needs `nwavetot <= 80`) or `mma-late`
/// (`covariance_mma_late`, the same without the register prefetch of `L`). `mma` measured
/// slower than `team` on an H200 (44.1 against 26.0 ms per r frame), so it is not the default.
pub const BAND_KERNEL_ENV: &str = "DESI_BAND_KERNEL";

/// Kernel of the covariance stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BandKernel {
    /// `covariance_team`: one thread block per block, FP64 FMAs, `C_bb` accumulated in global
    /// memory.
    Team,
    /// `covariance_team_lds`: `covariance_team` with its shared-memory loads and stores as
    /// `ld.shared`/`st.shared` on 32-bit addresses and 32-bit index arithmetic (bitwise the
    /// same results): default.
    TeamLds,
    /// `covariance_mma`: one thread block of warps per block, GEMM and Gram on FP64 tensor
    /// cores, `C_bb` accumulated in registers, the next rows of `L` prefetched through
    /// registers.
    Mma,
    /// `covariance_mma_late`: `covariance_mma` with the rows of `L` staged at the end of each
    /// phase (fewer registers, the load latency not overlapped).
    MmaLate,
}

impl BandKernel {
    /// From [`BAND_KERNEL_ENV`]: `team-lds`/unset, `team`, `mma` or `mma-late`; anything else
    /// is an error naming it.
    pub fn from_env() -> Result<Self, GpuError> {
        env_choice(
            BAND_KERNEL_ENV,
            &[
                ("team-lds", Self::TeamLds),
                ("team", Self::Team),
                ("mma", Self::Mma),
                ("mma-late", Self::MmaLate),
            ],
        )
    }

    /// The covariance kernel that runs for blocks of order `nwavetot`: `covariance_mma` needs
    /// `nwavetot <= 80` (its 10 column tiles of 8), so [`BandKernel::Mma`] and
    /// [`BandKernel::MmaLate`] run the default `covariance_team_lds` on larger blocks; the team
    /// kernels run for every order (`selftest --gpu` prints the kernel that ran).
    pub fn covariance_for(self, nwavetot: usize) -> BandKernel {
        match self {
            Self::Mma | Self::MmaLate
                if nwavetot > desi_device::linalg::banded_mma::COV_MMA_ORDER_MAX =>
            {
                Self::TeamLds
            }
            other => other,
        }
    }

    /// The name of the covariance kernel of this variant.
    pub fn covariance_kernel(self) -> &'static str {
        match self {
            Self::Team => "covariance_team",
            Self::TeamLds => "covariance_team_lds",
            Self::Mma => "covariance_mma",
            Self::MmaLate => "covariance_mma_late",
        }
    }
}

/// Environment variable choosing the cholesky stage's kernel (regularize, band factor,
/// solve): `team` (default: `factor_solve_team`, one unknown per phase) or `blocked`
/// (`factor_solve_blocked`, the back substitution 8 unknowns per phase). `blocked` measured
/// slower on an H200 (19.0 against 15.2 ms per r frame), so it is not the default.
pub const FACTOR_KERNEL_ENV: &str = "DESI_FACTOR_KERNEL";

/// Kernel of the cholesky stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorKernel {
    /// `factor_solve_team`: back substitution one unknown per phase (`n + 2` phases): default.
    Team,
    /// `factor_solve_blocked`: back substitution 8 unknowns per phase (`ceil(n / 8) + 1`
    /// phases).
    Blocked,
}

impl FactorKernel {
    /// From [`FACTOR_KERNEL_ENV`]: `team`/unset or `blocked`; anything else is an error
    /// naming it.
    pub fn from_env() -> Result<Self, GpuError> {
        env_choice(
            FACTOR_KERNEL_ENV,
            &[("team", Self::Team), ("blocked", Self::Blocked)],
        )
    }

    /// The name of the kernel of this variant.
    pub fn kernel(self) -> &'static str {
        match self {
            Self::Team => "factor_solve_team",
            Self::Blocked => "factor_solve_blocked",
        }
    }
}

/// Environment variable choosing the assemble stage's kernel where the stamps fit a warp's
/// register cache: `warp` (default: `assemble_warp`, each band entry summed over the warp by a
/// butterfly of shuffles) or `warp-rs` (`assemble_warp_rs`, the band column reduced 16
/// entries at a time by a reduce-scatter: 16 exchanges instead of 80, bitwise the same
/// results, 142 registers against 96).
pub const ASSEMBLE_KERNEL_ENV: &str = "DESI_ASSEMBLE_KERNEL";

/// Kernel of the assemble stage (stamps of up to 256 pixels; `assemble` otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssembleKernel {
    /// `assemble_warp`: default.
    Warp,
    /// `assemble_warp_rs`: the band column by a reduce-scatter.
    WarpRs,
}

impl AssembleKernel {
    /// From [`ASSEMBLE_KERNEL_ENV`]: `warp`/unset or `warp-rs`; anything else is an error
    /// naming it.
    pub fn from_env() -> Result<Self, GpuError> {
        env_choice(
            ASSEMBLE_KERNEL_ENV,
            &[("warp", Self::Warp), ("warp-rs", Self::WarpRs)],
        )
    }

    /// The name of the kernel of this variant.
    pub fn kernel(self) -> &'static str {
        match self {
            Self::Warp => "assemble_warp",
            Self::WarpRs => "assemble_warp_rs",
        }
    }
}

/// Environment variable choosing how a frame's work is spread over the context's streams:
/// `overlap` (default: the batches' buffers allocated and cleared on `prepare`, results,
/// corners and spot status codes copied back on `download`, beside the kernels) or `one`
/// (everything on the main stream, as before issue #15's fourth stretch: to compare the two
/// on one machine, or to fall back should the overlap misbehave on a driver).
pub const GPU_STREAMS_ENV: &str = "DESI_GPU_STREAMS";

/// How a frame's work is spread over streams ([`GPU_STREAMS_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamLayout {
    /// Allocation and downloads on streams of their own: default.
    Overlap,
    /// Everything on the main stream.
    One,
}

impl StreamLayout {
    /// From [`GPU_STREAMS_ENV`]: `overlap`/unset or `one`; anything else is an error naming it.
    pub fn from_env() -> Result<Self, GpuError> {
        env_choice(
            GPU_STREAMS_ENV,
            &[("overlap", Self::Overlap), ("one", Self::One)],
        )
    }
}

/// Environment variable choosing how the host waits for the device: `spin` (default: the
/// driver's choice for a process with fewer contexts than cores, a thread spinning on the CPU
/// while it waits) or `block` (the context's `CU_CTX_SCHED_BLOCKING_SYNC`: a waiting thread
/// sleeps until the device wakes it, leaving its core to the host stages of other frames).
pub const GPU_WAIT_ENV: &str = "DESI_GPU_WAIT";

/// How threads wait for the device ([`GPU_WAIT_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    /// The driver's default (spinning): default.
    Spin,
    /// Blocking synchronization.
    Block,
}

impl WaitMode {
    /// From [`GPU_WAIT_ENV`]: `spin`/unset or `block`; anything else is an error naming it.
    pub fn from_env() -> Result<Self, GpuError> {
        env_choice(
            GPU_WAIT_ENV,
            &[("spin", Self::Spin), ("block", Self::Block)],
        )
    }
}

/// Environment variable choosing the kernels' stream priority of the frames a process keeps in
/// flight ([`GpuContext::with_rank`]): `ranked` (default: the context opened first highest,
/// then each next one step lower, all below the `prepare` streams), so that one frame runs
/// ahead while the others fill the device around it instead of all of them advancing together
/// and reaching their host stages at once, or `equal` (every frame's kernels at the default
/// priority, as before).
pub const GPU_FRAME_PRIORITY_ENV: &str = "DESI_GPU_FRAME_PRIORITY";

/// The kernels' stream priority of a context ([`GPU_FRAME_PRIORITY_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramePriority {
    /// The default priority for every context.
    Equal,
    /// One step lower for each context opened after the first: default.
    Ranked,
}

impl FramePriority {
    /// From [`GPU_FRAME_PRIORITY_ENV`]: `ranked`/unset or `equal`; anything else is an error
    /// naming it.
    pub fn from_env() -> Result<Self, GpuError> {
        env_choice(
            GPU_FRAME_PRIORITY_ENV,
            &[("ranked", Self::Ranked), ("equal", Self::Equal)],
        )
    }
}

/// The main stream of a context of rank `rank` (0 for the first a process opens): the default
/// priority, or under [`FramePriority::Ranked`] one step below the device's greatest (kept for
/// the `prepare` streams) for rank 0 and one more step lower per rank, down to the least.
fn kernel_stream(
    ctx: &Arc<CudaContext>,
    rank: usize,
    priority: FramePriority,
) -> Result<Arc<CudaStream>, GpuError> {
    match priority {
        FramePriority::Equal => ctx.new_stream().stage("create a stream"),
        FramePriority::Ranked => stream_at_priority(ctx, |least, greatest| {
            let steps = i32::try_from(rank).unwrap_or(i32::MAX).saturating_add(1);
            greatest.saturating_add(steps).min(least)
        }),
    }
}

/// The kernel module: the PTX, JIT-compiled by the driver (cached in `~/.nv/ComputeCache`; about
/// 10 s on an H100 when the cache is cold), or on a compute capability 9.0 device the sm_90
/// cubin that the build compiled with `ptxas` (no JIT: a cold start of `selftest --gpu -n 25`
/// on an H100 took 1.6 s with it against 7.7 s with the PTX; the GPU-vs-CPU agreement is the
/// same). The PTX is the fallback should the driver refuse the cubin; `DESI_GPU_CUBIN=0`
/// forces it.
fn load_kernels(ctx: &Arc<CudaContext>) -> Result<Arc<CudaModule>, GpuError> {
    use cudarc::driver::sys::CUdevice_attribute as Attr;
    let major = ctx
        .attribute(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .stage("query the compute capability")?;
    let minor = ctx
        .attribute(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        .stage("query the compute capability")?;
    let want_cubin = std::env::var("DESI_GPU_CUBIN").map_or(true, |v| v != "0");
    if want_cubin && (major, minor) == (9, 0) && !ptx::CUBIN_SM90.is_empty() {
        if let Ok(module) = ctx.load_module(Ptx::from_binary(ptx::CUBIN_SM90.to_vec())) {
            return Ok(module);
        }
    }
    ctx.load_module(Ptx::from_src(ptx::PTX))
        .stage("load the PTX module")
}

/// The device's default (stream-ordered) memory pool, where the backend's allocations live.
fn default_pool(ctx: &CudaContext) -> Result<cudarc::driver::sys::CUmemoryPool, GpuError> {
    use cudarc::driver::sys;
    ctx.bind_to_thread().stage("bind the context")?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: a plain driver call on the current context's device with a valid out-pointer.
    unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) }
        .result()
        .stage("get the default memory pool")?;
    Ok(pool)
}

/// Keeps up to `threshold` bytes of freed device memory in the device's stream-ordered memory
/// pool (`u64::MAX`, without a cap: all of it). With the default threshold 0 the pool hands its
/// memory back to the driver at every synchronization, and each frame then maps its gigabytes
/// of buffers afresh.
fn set_pool_threshold(ctx: &CudaContext, threshold: u64) -> Result<(), GpuError> {
    let pool = default_pool(ctx)?;
    let mut threshold = threshold;
    // SAFETY: the release threshold is a cuuint64_t; valid pointer.
    unsafe {
        cudarc::driver::sys::cuMemPoolSetAttribute(
            pool,
            cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
    .result()
    .stage("set the memory pool release threshold")?;
    Ok(())
}

impl GpuContext {
    /// The device counters of `resolution_ns` (for [`Launch::write`](super::launch::Launch)).
    pub(super) fn ns_counts(&self) -> MutexGuard<'_, CudaSlice<u32>> {
        self.ns_counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the eigh stage of a batch of `nwavetot`-order blocks runs a Newton–Schulz kernel
    /// first: the team kernels, `ns` or `ns2`, and blocks no larger than the kernels' order
    /// limit; otherwise every block goes to the Jacobi (`resolution_team`, or the per-thread
    /// `resolution` with `DESI_GPU_KERNELS=thread`).
    pub fn runs_newton_schulz(&self, nwavetot: usize) -> bool {
        self.mode == KernelMode::Team
            && self.eigh.newton_schulz()
            && nwavetot <= desi_device::linalg::newton_schulz::NS_ORDER_MAX
    }

    /// Blocks the `ns` method of the `eigh` stage solved, and left to the Jacobi, since the
    /// context was made (waits for the stream).
    ///
    /// # Errors
    /// A driver error.
    pub fn eigh_counts(&self) -> Result<(u64, u64), GpuError> {
        let counts = self.ns_counts();
        let host = self
            .stream
            .clone_dtoh(&*counts)
            .stage("copy the eigh counters")?;
        self.stream
            .synchronize()
            .stage("wait for the eigh counters")?;
        Ok((host[0] as u64, host[1] as u64))
    }

    /// Runs `mma_check` (one DMMA of one warp) on fixed pseudo-random `A` (8×4), `B` (4×8),
    /// `C` (8×8) and returns the largest `|D − (A·B + C)|` against the plain f64 product:
    /// a wrong fragment layout gives O(1), the instruction's rounding ~1e-16.
    ///
    /// # Errors
    /// A driver error.
    pub fn check_mma(&self) -> Result<f64, GpuError> {
        // A small LCG: values in (-1, 1) with no structure a layout error could hide in.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let a: Vec<f64> = (0..32).map(|_| next()).collect();
        let b: Vec<f64> = (0..32).map(|_| next()).collect();
        let c: Vec<f64> = (0..64).map(|_| next()).collect();
        let d_a = self.stream.clone_htod(&a).stage("copy mma A")?;
        let d_b = self.stream.clone_htod(&b).stage("copy mma B")?;
        let d_c = self.stream.clone_htod(&c).stage("copy mma C")?;
        let mut d_d = self.stream.alloc_zeros::<f64>(64).stage("allocate mma D")?;
        {
            let mut l = super::launch::Launch::on(&self.stream);
            let args = MmaCheckArgs {
                a: l.read(&d_a),
                b: l.read(&d_b),
                c: l.read(&d_c),
                d: l.write(&mut d_d),
            };
            // SAFETY: a and b hold 32 values, c and d 64 (MmaCheckArgs); one warp.
            unsafe { l.run(&self.kernels.mma_check, args.shape(), &args) }?;
        }
        let d = self.stream.clone_dtoh(&d_d).stage("copy mma D")?;
        self.stream.synchronize().stage("wait for mma_check")?;
        let mut worst = 0.0f64;
        for r in 0..8 {
            for col in 0..8 {
                let want =
                    c[r * 8 + col] + (0..4).map(|k| a[r * 4 + k] * b[k * 8 + col]).sum::<f64>();
                let err = (d[r * 8 + col] - want).abs();
                worst = if err.is_nan() {
                    f64::NAN
                } else {
                    worst.max(err)
                };
            }
        }
        Ok(worst)
    }

    /// Opens GPU `ordinal` and loads the kernels; the memory cap is
    /// [`super::memory::MEMORY_LIMIT_ENV`]'s, if set ([`GpuContext::set_memory_limit`]
    /// overrides it).
    ///
    /// # Errors
    /// No driver, a driver failure, or a malformed `DESI_GPU_MEMORY_LIMIT`.
    pub fn new(ordinal: usize) -> Result<Self, GpuError> {
        Self::with_rank(ordinal, 0)
    }

    /// [`GpuContext::new`] for the `rank`-th context a process opens on the device (frames in
    /// flight): under [`FramePriority::Ranked`] its kernels' stream is `rank` steps below the
    /// first context's.
    ///
    /// # Errors
    /// As [`GpuContext::new`].
    pub fn with_rank(ordinal: usize, rank: usize) -> Result<Self, GpuError> {
        // A malformed cap is the caller's error, said before anything else.
        let memory_limit = memory_limit_from_env()?;
        let wait = WaitMode::from_env()?;
        let frame_priority = FramePriority::from_env()?;
        probe_driver()?;
        let ctx = CudaContext::new(ordinal).stage(&format!("open device {ordinal}"))?;
        if wait == WaitMode::Block {
            ctx.bind_to_thread()
                .stage("bind the context to the thread")?;
            cudarc::driver::result::ctx::set_flags(
                cudarc::driver::sys::CUctx_flags::CU_CTX_SCHED_BLOCKING_SYNC,
            )
            .stage("set blocking synchronization")?;
        }
        // A stream of its own (not the legacy default stream, which every context of the
        // process would share and which synchronizes with the other streams): two contexts of
        // one device then overlap (`exposure` keeps two frames in flight).
        let stream = kernel_stream(&ctx, rank, frame_priority)?;
        let streams = StreamLayout::from_env()?;
        let (download, prepare) = match streams {
            StreamLayout::Overlap => (
                ctx.new_stream().stage("create the download stream")?,
                urgent_stream(&ctx)?,
            ),
            StreamLayout::One => (stream.clone(), stream.clone()),
        };
        let module = load_kernels(&ctx)?;
        let kernels = Kernels {
            spots: Kernel::load(&module, k::SPOTS)?,
            spots_team: Kernel::load(&module, k::SPOTS_TEAM)?,
            spots_team16: Kernel::load(&module, k::SPOTS_TEAM16)?,
            spots_team8: Kernel::load(&module, k::SPOTS_TEAM8)?,
            widen_f32: Kernel::load(&module, k::WIDEN_F32)?,
            screen_pixels: Kernel::load(&module, k::SCREEN_PIXELS)?,
            assemble: Kernel::load(&module, k::ASSEMBLE)?,
            assemble_warp: Kernel::load(&module, k::ASSEMBLE_WARP)?,
            assemble_warp_rs: Kernel::load(&module, k::ASSEMBLE_WARP_RS)?,
            factor_solve: Kernel::load(&module, k::FACTOR_SOLVE)?,
            covariance: Kernel::load(&module, k::COVARIANCE)?,
            resolution: Kernel::load(&module, k::RESOLUTION)?,
            factor_solve_team: Kernel::load(&module, k::FACTOR_SOLVE_TEAM)?,
            factor_solve_blocked: Kernel::load(&module, k::FACTOR_SOLVE_BLOCKED)?,
            covariance_team: Kernel::load(&module, k::COVARIANCE_TEAM)?,
            covariance_team_lds: Kernel::load(&module, k::COVARIANCE_TEAM_LDS)?,
            covariance_mma: Kernel::load(&module, k::COVARIANCE_MMA)?,
            covariance_mma_late: Kernel::load(&module, k::COVARIANCE_MMA_LATE)?,
            resolution_team: Kernel::load(&module, k::RESOLUTION_TEAM)?,
            resolution_ns: Kernel::load(&module, k::RESOLUTION_NS)?,
            resolution_ns2: Kernel::load(&module, k::RESOLUTION_NS2)?,
            mma_check: Kernel::load(&module, k::MMA_CHECK)?,
            pixel_rows: Kernel::load(&module, k::PIXEL_ROWS)?,
            pixel_core: Kernel::load(&module, k::PIXEL_CORE)?,
            pixel_rows_warp: Kernel::load(&module, k::PIXEL_ROWS_WARP)?,
            pixel_core_warp: Kernel::load(&module, k::PIXEL_CORE_WARP)?,
            reject_scan: Kernel::load(&module, k::REJECT_SCAN)?,
            reject_mask: Kernel::load(&module, k::REJECT_MASK)?,
            reject_bins: Kernel::load(&module, k::REJECT_BINS)?,
        };
        let mode = match std::env::var("DESI_GPU_KERNELS").as_deref() {
            Ok("thread") => KernelMode::Thread,
            _ => KernelMode::Team,
        };
        let spot_team = SpotTeam::from_env()?;
        let eigh = EighKernel::from_env()?;
        let band = BandKernel::from_env()?;
        let factor = FactorKernel::from_env()?;
        let assemble = AssembleKernel::from_env()?;
        let ns_counts = Mutex::new(
            stream
                .alloc_zeros::<u32>(2)
                .stage("allocate the eigh counters")?,
        );
        let epoch_event = stream
            .record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .stage("record the epoch event")?;
        epoch_event
            .synchronize()
            .stage("wait for the epoch event")?;
        let epoch = (epoch_event, Instant::now());
        let mut gpu = Self {
            ctx,
            stream,
            download,
            prepare,
            streams,
            wait,
            frame_priority,
            module,
            kernels,
            ordinal,
            mode,
            spot_team,
            eigh,
            band,
            factor,
            assemble,
            ns_counts,
            pinned: Default::default(),
            pinned_status: Default::default(),
            pinned_corners: Mutex::new(None),
            pinned_spot_status: Mutex::new(None),
            pinned_up: Mutex::new(None),
            memory_limit: None,
            epoch,
        };
        gpu.set_memory_limit(memory_limit)?;
        Ok(gpu)
    }

    /// Caps the device bytes of one frame on this context (`None`: no cap): the batches are
    /// sized so that the frame's buffers and its batches in flight stay under it, and a frame
    /// that cannot fit one patch per batch fails with [`GpuError::MemoryLimit`]. The device's
    /// memory pool then hands back what it keeps beyond the cap at each synchronization.
    /// Contexts sharing a process share its device's pool: give each its part of the
    /// process's cap.
    ///
    /// # Errors
    /// A driver error setting the pool's release threshold.
    pub fn set_memory_limit(&mut self, limit: Option<u64>) -> Result<(), GpuError> {
        self.memory_limit = limit;
        set_pool_threshold(&self.ctx, limit.unwrap_or(u64::MAX))
    }

    /// Keeps up to `bytes` of freed memory in the device's pool (shared by the contexts of the
    /// process on this device) for the next allocations; the rest goes back to the driver at
    /// each synchronization. [`GpuContext::set_memory_limit`] sets it to the context's cap (or
    /// unlimited): contexts that share a process's cap set it to the whole cap.
    ///
    /// # Errors
    /// A driver error.
    pub fn set_pool_release_threshold(&self, bytes: u64) -> Result<(), GpuError> {
        set_pool_threshold(&self.ctx, bytes)
    }

    /// Maps `bytes` of device memory into the memory pool ahead of the frames (one block
    /// allocated and freed on `prepare`, kept by the pool under a release threshold that allows
    /// it), so that the first frames' batches do not wait for the pool to grow.
    ///
    /// # Errors
    /// A driver error, or not that much free memory.
    pub fn reserve_pool(&self, bytes: u64) -> Result<(), GpuError> {
        let Ok(len) = usize::try_from(bytes) else {
            return Err(GpuError::Memory(format!("{bytes} bytes to reserve")));
        };
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the block is never read or written, only allocated and freed.
        let block = unsafe { self.prepare.alloc::<u8>(len) }.stage("reserve pool memory")?;
        drop(block);
        self.prepare
            .synchronize()
            .stage("wait for the pool reservation")
    }

    /// The cap set by [`GpuContext::set_memory_limit`] or the environment.
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// The host instant at which the device reached `event` (recorded on a stream of this
    /// context), through the epoch event recorded when the context was made (accurate to the
    /// driver's event resolution, about a microsecond, plus the epoch's host latency).
    ///
    /// # Errors
    /// A driver error (the event must have completed or complete).
    pub fn device_instant(&self, event: &CudaEvent) -> Result<Instant, GpuError> {
        let ms = self
            .epoch
            .0
            .elapsed_ms(event)
            .stage("time an event against the epoch")?;
        let after = Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3);
        Ok(self.epoch.1 + after)
    }

    /// A new stream at the device's highest priority: the block scheduler starts its kernels'
    /// blocks ahead of those of lower-priority streams still waiting for room (a short kernel
    /// then runs beside a long one instead of after it).
    ///
    /// # Errors
    /// A driver error.
    pub fn urgent_stream(&self) -> Result<Arc<CudaStream>, GpuError> {
        urgent_stream(&self.ctx)
    }

    /// Puts the device time from `start` to `end` (events of this context, both completed) on
    /// `track` of `trace` as `name`, at the time the device reached `start`; returns its length.
    ///
    /// # Errors
    /// A driver error reading the events.
    pub fn record_device_span(
        &self,
        trace: &Trace,
        name: &str,
        track: &'static str,
        start: &CudaEvent,
        end: &CudaEvent,
    ) -> Result<Duration, GpuError> {
        let ms = start.elapsed_ms(end).stage(name)?;
        let duration = Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3);
        trace.record(name, track, trace.at(self.device_instant(start)?), duration);
        Ok(duration)
    }

    /// The counters of the device's default memory pool (shared by every context of the
    /// process on this device).
    ///
    /// # Errors
    /// A driver error.
    pub fn pool_stats(&self) -> Result<PoolStats, GpuError> {
        use cudarc::driver::sys::CUmemPool_attribute as A;
        let pool = default_pool(&self.ctx)?;
        let get = |attr| {
            let mut value: u64 = 0;
            // SAFETY: the four attributes read are cuuint64_t values; valid out-pointer.
            unsafe {
                cudarc::driver::sys::cuMemPoolGetAttribute(
                    pool,
                    attr,
                    (&mut value as *mut u64).cast(),
                )
            }
            .result()
            .stage("read the memory pool counters")?;
            Ok::<_, GpuError>(value)
        };
        Ok(PoolStats {
            used: get(A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
            used_high: get(A::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
            reserved: get(A::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?,
            reserved_high: get(A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?,
        })
    }

    /// Resets the pool's high-water marks to the current values (to measure a part of a run).
    ///
    /// # Errors
    /// A driver error.
    pub fn reset_pool_peaks(&self) -> Result<(), GpuError> {
        use cudarc::driver::sys::CUmemPool_attribute as A;
        let pool = default_pool(&self.ctx)?;
        for attr in [
            A::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
        ] {
            let mut zero: u64 = 0;
            // SAFETY: the high-water attributes may only be set to 0 (a reset); valid pointer.
            unsafe {
                cudarc::driver::sys::cuMemPoolSetAttribute(
                    pool,
                    attr,
                    (&mut zero as *mut u64).cast(),
                )
            }
            .result()
            .stage("reset the memory pool peaks")?;
        }
        Ok(())
    }

    /// Hands the device memory this context's frames left in the device's memory pool back
    /// to the driver (the pool keeps freed memory, see `set_pool_threshold`): for callers that
    /// share the process with other GPU code (the Python package, before desispec's next
    /// steps). Waits for the context's stream first.
    ///
    /// # Errors
    /// A driver error.
    pub fn release_memory(&self) -> Result<(), GpuError> {
        use cudarc::driver::sys;
        self.stream.synchronize().stage("synchronize the stream")?;
        self.download
            .synchronize()
            .stage("synchronize the download stream")?;
        self.prepare
            .synchronize()
            .stage("synchronize the allocation stream")?;
        let pool = default_pool(&self.ctx)?;
        // SAFETY: a plain driver call on the device's pool; trimming only releases memory no
        // allocation holds.
        unsafe { sys::cuMemPoolTrimTo(pool, 0) }
            .result()
            .stage("trim the memory pool")?;
        Ok(())
    }

    /// Number of visible CUDA devices.
    pub fn device_count() -> Result<usize, GpuError> {
        probe_driver()?;
        let n = CudaContext::device_count().stage("count devices")?;
        Ok(n.max(0) as usize)
    }

    /// Name of the device.
    pub fn name(&self) -> String {
        self.ctx
            .name()
            .unwrap_or_else(|_| format!("CUDA device {}", self.ordinal))
    }

    /// The page-locked host buffer of download slot `slot` (`< PINNED_SLOTS`; one per batch in
    /// flight), at least `len` f64 (grown when needed, kept for reuse).
    pub fn pinned_download(
        &self,
        slot: usize,
        len: usize,
    ) -> Result<PinnedGuard<'_, f64>, GpuError> {
        // No write-combining: the host reads it; every value is written by a device copy
        // before it is read.
        self.pinned_buffer(&self.pinned[slot % PINNED_SLOTS], len, 0)
    }

    /// The page-locked status buffer of download slot `slot`, at least `len` u32.
    pub fn pinned_status(&self, slot: usize, len: usize) -> Result<PinnedGuard<'_, u32>, GpuError> {
        self.pinned_buffer(&self.pinned_status[slot % PINNED_SLOTS], len, 0)
    }

    /// The page-locked buffer for stamp corners, at least `len` i32.
    pub fn pinned_corners(&self, len: usize) -> Result<PinnedGuard<'_, i32>, GpuError> {
        self.pinned_buffer(&self.pinned_corners, len, 0)
    }

    /// The page-locked buffer for the spots' status codes, at least `len` u32.
    pub fn pinned_spot_status(&self, len: usize) -> Result<PinnedGuard<'_, u32>, GpuError> {
        self.pinned_buffer(&self.pinned_spot_status, len, 0)
    }

    /// A page-locked, write-combined host buffer of at least `len` f32 for uploads (the host
    /// only writes it; grown when needed, kept for reuse). Holding the guard serializes
    /// uploads: keep it until the copies from it have completed.
    pub fn pinned_upload(&self, len: usize) -> Result<PinnedGuard<'_, f32>, GpuError> {
        // Write-combined: fast host writes and device reads; the host never reads it and
        // writes it before every copy.
        self.pinned_buffer(
            &self.pinned_up,
            len,
            cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED,
        )
    }

    /// The buffer of `slot`, reallocated with `flags` (`cuMemHostAlloc`) when shorter than `len`.
    fn pinned_buffer<'a, T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        slot: &'a Mutex<Option<PinnedHostSlice<T>>>,
        len: usize,
        flags: std::ffi::c_uint,
    ) -> Result<PinnedGuard<'a, T>, GpuError> {
        let mut slot = slot
            .lock()
            .map_err(|_| GpuError::Memory("pinned buffer lock poisoned".into()))?;
        if slot.as_ref().is_none_or(|b| b.len() < len) {
            *slot = None;
            // SAFETY: page-locked host memory of `len` T; the callers document how it is
            // written before it is read.
            let buf = unsafe { self.ctx.alloc_pinned_with_flags::<T>(len.max(1), flags) }
                .stage("allocate page-locked host memory")?;
            *slot = Some(buf);
        }
        Ok(PinnedGuard { slot, len })
    }

    /// Free and total device memory in bytes.
    pub fn memory(&self) -> Result<(usize, usize), GpuError> {
        self.ctx.mem_get_info().stage("query memory")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Pick {
        A,
        B,
        C,
    }

    /// Unset or empty gives the first choice, a listed name its value, anything else an error
    /// naming the variable, the value and every choice.
    #[test]
    fn env_choice_reads_the_listed_names_and_refuses_others() {
        // A variable no other code reads (tests run in threads of one process).
        const VAR: &str = "DESI_TEST_ENV_CHOICE_ONLY";
        let choices = [("a", Pick::A), ("b-b", Pick::B), ("c", Pick::C)];
        std::env::remove_var(VAR);
        assert_eq!(env_choice(VAR, &choices).unwrap(), Pick::A);
        for (value, want) in [
            ("", Pick::A),
            ("a", Pick::A),
            ("b-b", Pick::B),
            ("c", Pick::C),
        ] {
            std::env::set_var(VAR, value);
            assert_eq!(env_choice(VAR, &choices).unwrap(), want, "{value}");
        }
        std::env::set_var(VAR, "B-B");
        let err = env_choice(VAR, &choices).unwrap_err().to_string();
        assert!(
            err.contains("DESI_TEST_ENV_CHOICE_ONLY=B-B: expected `a`, `b-b` or `c`"),
            "{err}"
        );
        std::env::set_var(VAR, "x");
        let err = env_choice(VAR, &choices[..1]).unwrap_err().to_string();
        assert!(err.contains("=x: expected `a`"), "{err}");
        std::env::remove_var(VAR);
    }
}
