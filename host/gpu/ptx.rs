//! The embedded PTX module of the `desi_device` kernels.
//!
//! build.rs compiles `device/` for `nvptx64-nvidia-cuda` (target `sm_80`, PTX that the driver
//! JIT-compiles for any newer GPU) and writes it to `$OUT_DIR/desi_device.ptx`, embedded here;
//! a copy lies at `<target dir>/ptx/desi_device.ptx` for offline tools (`ptxas`).

use desi_device::kernels::EntryParam;

/// PTX text of the `desi_device` kernels (sm_80+, built by build.rs).
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/desi_device.ptx"));

/// [`PTX`] compiled by `ptxas -arch=sm_90` at build time (empty when the build found no
/// `ptxas`): loaded on compute capability 9.0 devices instead of JIT-compiling the PTX.
pub const CUBIN_SM90: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/desi_device_sm90.cubin"));

/// Every kernel entry point of [`PTX`] with the size and alignment of its one parameter, its
/// argument struct (`desi_device::kernels::ENTRIES`, evaluated on the host).
///
/// `tests/ptx.rs` checks this list against the `.entry` directives both ways, and each
/// kernel's `.param` against the struct's layout.
pub const KERNELS: &[EntryParam] = desi_device::kernels::ENTRIES;
