//! The embedded PTX module of the `desi_device` kernels.
//!
//! build.rs compiles `device/` for `nvptx64-nvidia-cuda` (target `sm_80`, PTX that the driver
//! JIT-compiles for any newer GPU) and writes it to `$OUT_DIR/desi_device.ptx`, embedded here;
//! a copy lies at `<target dir>/ptx/desi_device.ptx` for offline tools (`ptxas`).

/// PTX text of the `desi_device` kernels (sm_80+, built by build.rs).
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/desi_device.ptx"));

/// [`PTX`] compiled by `ptxas -arch=sm_90` at build time (empty when the build found no
/// `ptxas`): loaded on compute capability 9.0 devices instead of JIT-compiling the PTX.
pub const CUBIN_SM90: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/desi_device_sm90.cubin"));

/// Name of the `spots` kernel: PSF stamps of every `(ispec, iwave)` of a frame.
pub const SPOTS: &str = "spots";
/// Name of the `spots_team` kernel: the same stamps, one thread block per `(ispec, iwave)`.
pub const SPOTS_TEAM: &str = "spots_team";
/// Name of the `smoke_axpy` kernel: `y = a x + y`, a smoke test of the build and launch path.
pub const SMOKE_AXPY: &str = "smoke_axpy";

/// Name of the `widen_f32` kernel: f32 -> f64 of the uploaded image and weights.
pub const WIDEN_F32: &str = "widen_f32";
/// Name of the `assemble` kernel: normal equations, one thread per (patch, unknown).
pub const ASSEMBLE: &str = "assemble";
/// Name of the `assemble_warp` kernel: normal equations, one warp per (patch, unknown).
pub const ASSEMBLE_WARP: &str = "assemble_warp";
/// Name of the `factor_solve` kernel: regularization, banded Cholesky and solve per patch.
pub const FACTOR_SOLVE: &str = "factor_solve";
/// Name of the `covariance` kernel: covariance blocks of the core spectra.
pub const COVARIANCE: &str = "covariance";
/// Name of the `resolution` kernel: Jacobi inverse square root, R, flux, ivar, diagonals.
pub const RESOLUTION: &str = "resolution";
/// Name of the `resolution_team` kernel: the same, one thread block per core spectrum.
pub const RESOLUTION_TEAM: &str = "resolution_team";
/// Name of the `pixel_rows` kernel: χ² of every kept window row.
pub const PIXEL_ROWS: &str = "pixel_rows";
/// Name of the `pixel_core` kernel: chi2pix and pixmask_fraction of the core unknowns.
pub const PIXEL_CORE: &str = "pixel_core";
/// Name of the `factor_solve_team` kernel: `factor_solve`, one thread block per patch.
pub const FACTOR_SOLVE_TEAM: &str = "factor_solve_team";
/// Name of the `covariance_team` kernel: `covariance`, one thread block per core spectrum.
pub const COVARIANCE_TEAM: &str = "covariance_team";

/// Every kernel entry point of [`PTX`] (`.entry` names), in the order of `device/src/kernels.rs`.
///
/// `tests/ptx.rs` checks that this list and the PTX's `.entry` directives agree both ways.
pub const KERNELS: &[&str] = &[
    SMOKE_AXPY,
    SPOTS,
    SPOTS_TEAM,
    WIDEN_F32,
    ASSEMBLE,
    ASSEMBLE_WARP,
    FACTOR_SOLVE,
    COVARIANCE,
    RESOLUTION,
    RESOLUTION_TEAM,
    PIXEL_ROWS,
    PIXEL_CORE,
    FACTOR_SOLVE_TEAM,
    COVARIANCE_TEAM,
];
