//! GPU entry points (`nvptx64-nvidia-cuda` only): thin shims from threads to `desi_device` functions.
//!
//! Every kernel here only maps a thread to an item, builds slices from the raw pointers it was
//! given and calls the same safe function the CPU backend calls (docs/design.md §11, rule 1): no
//! numerics live in this file. Kernel parameters are scalars and raw pointers only (no aggregates
//! by value), so the host pushes them one by one in the order documented under `# Parameters`;
//! sizes are `usize` (64-bit `.u64` parameters in PTX), floating point values `f64`.
//!
//! The host side keeps the list of entry points in `desi_extract::gpu::ptx::KERNELS`; the test
//! `tests/ptx.rs` checks that both agree with the `.entry` directives of the built PTX.

use core::arch::nvptx;

use crate::spot::{spot_at, PsfTables, SpotGeometry};
use crate::spot_team::{spot_team, spot_team_scratch_len};
use crate::team::{Shared, WarpTeam};

/// Flat index of the calling thread in a 1-D launch: `blockIdx.x * blockDim.x + threadIdx.x`.
#[inline(always)]
fn global_thread_index_x() -> usize {
    // SAFETY: reading the special registers %ctaid.x, %ntid.x and %tid.x has no preconditions;
    // the values are non-negative `i32`s, so the casts to `usize` are lossless.
    unsafe {
        (nvptx::_block_idx_x() as usize) * (nvptx::_block_dim_x() as usize)
            + nvptx::_thread_idx_x() as usize
    }
}

/// A table of the spot kernels' parameters: pointer, length, and wavelength domain.
type KernelTable = (*const f64, usize, f64, f64);

/// The [`PsfTables`] of the spot kernels' parameters.
///
/// # Safety
/// Each table pointer must be valid for reads of its length and not written while the tables
/// are in use.
unsafe fn psf_tables<'a>(
    geometry: SpotGeometry,
    nspec: usize,
    (xtrace, xtrace_len, xmin, xmax): KernelTable,
    (ytrace, ytrace_len, ymin, ymax): KernelTable,
    ntrace: usize,
    (params, params_len, pmin, pmax): KernelTable,
    nparam_coeff: usize,
) -> PsfTables<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        PsfTables {
            geometry,
            nspec,
            xtrace: core::slice::from_raw_parts(xtrace, xtrace_len),
            ytrace: core::slice::from_raw_parts(ytrace, ytrace_len),
            ntrace,
            xtrace_domain: (xmin, xmax),
            ytrace_domain: (ymin, ymax),
            params: core::slice::from_raw_parts(params, params_len),
            nparam_coeff,
            param_domain: (pmin, pmax),
        }
    }
}

/// Smoke test of the build and launch pipeline: `y[i] = a * x[i] + y[i]` for `i < n`.
///
/// Kept on purpose beside the real kernels: it exercises the PTX build, embedding and a launch
/// with nothing from the numerics involved, so a failing GPU test can tell the two apart.
///
/// # Parameters
/// - `n`: number of elements.
/// - `a`: scale factor.
/// - `x`: shape `(n,)`, read.
/// - `y`: shape `(n,)`, read and written in place.
///
/// # Thread mapping
/// One thread per element, 1-D grid: `i = blockIdx.x * blockDim.x + threadIdx.x`; threads with
/// `i >= n` return at once, so any grid with at least `n` threads works.
///
/// # Safety
/// `x` must be valid for reads and `y` for reads and writes of `n` `f64` each, and the two must
/// not overlap.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn smoke_axpy(n: usize, a: f64, x: *const f64, y: *mut f64) {
    let i = global_thread_index_x();
    if i >= n {
        return;
    }
    // SAFETY: i < n and the caller guarantees `n` valid, non-overlapping elements behind both
    // pointers; each thread touches only its own element `i`.
    unsafe {
        let yi = y.add(i);
        yi.write(a * x.add(i).read() + yi.read());
    }
}

/// PSF spots of a whole frame: one pixel-integrated stamp per `(ispec, iwave)` of the grid.
///
/// Calls [`spot_at`] for fiber `ispec` at wavelength `wave[iwave]` and stores its stamp, its
/// corner on the CCD and its [`crate::Status`] code. On failure the corner is `(0, 0)` and the
/// stamp holds whatever `spot_at` left in it: the host must check `status` first.
///
/// # Parameters
/// PSF geometry (the fields of [`SpotGeometry`]): `hsizex`, `hsizey` (stamps are
/// `ny = 2*hsizey+1` rows by `nx = 2*hsizex+1` columns), `ghdegx`, `ghdegy`.
///
/// Coefficient tables (the fields of [`PsfTables`], each slice as pointer + length in `f64`s):
/// - `nspec`: number of fibers of the PSF tables and of the output grid.
/// - `xtrace`, `xtrace_len`: shape `(nspec, ntrace)`, Legendre coefficients of X(wave).
/// - `ytrace`, `ytrace_len`: shape `(nspec, ntrace)`, Legendre coefficients of Y(wave).
/// - `ntrace`: coefficients per fiber of the traces.
/// - `xtrace_wavemin`, `xtrace_wavemax`, `ytrace_wavemin`, `ytrace_wavemax`: trace domains.
/// - `params`, `params_len`: shape `(2 + (ghdegx+1)*(ghdegy+1), nspec, nparam_coeff)`.
/// - `nparam_coeff`: LEGDEG + 1.
/// - `param_wavemin`, `param_wavemax`: domain of the PSF parameter HDU.
///
/// Grid and outputs (row-major, last index fastest):
/// - `wave`: shape `(nwave,)`, wavelengths in Angstrom, shared by every fiber.
/// - `nwave`: number of wavelengths.
/// - `stamps`: shape `(nspec, nwave, ny, nx)`, written.
/// - `corners`: shape `(nspec, nwave, 2)` `i32`, written: `(xc, yc)` of each stamp.
/// - `status`: shape `(nspec, nwave)` `u32`, written: [`crate::Status`] codes (0 = ok).
///
/// # Thread mapping
/// One thread per item, 1-D grid: `item = blockIdx.x * blockDim.x + threadIdx.x`,
/// `ispec = item / nwave`, `iwave = item % nwave` (wavelength fastest, so neighbouring threads
/// read neighbouring `wave` entries). Threads with `item >= nspec * nwave` return at once.
///
/// # Safety
/// - `xtrace`, `ytrace` and `params` must be valid for reads of `xtrace_len`, `ytrace_len` and
///   `params_len` `f64`s, and `wave` for `nwave` `f64`s; none of them may be written during
///   the launch.
/// - `stamps` must be valid for writes of `nspec * nwave * ny * nx` `f64`s, `corners` of
///   `2 * nspec * nwave` `i32`s and `status` of `nspec * nwave` `u32`s; the three output
///   buffers must not overlap each other or any input.
/// - `nspec * nwave * ny * nx` must not overflow `usize`.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn spots(
    hsizex: usize,
    hsizey: usize,
    ghdegx: usize,
    ghdegy: usize,
    nspec: usize,
    xtrace: *const f64,
    xtrace_len: usize,
    ytrace: *const f64,
    ytrace_len: usize,
    ntrace: usize,
    xtrace_wavemin: f64,
    xtrace_wavemax: f64,
    ytrace_wavemin: f64,
    ytrace_wavemax: f64,
    params: *const f64,
    params_len: usize,
    nparam_coeff: usize,
    param_wavemin: f64,
    param_wavemax: f64,
    wave: *const f64,
    nwave: usize,
    stamps: *mut f64,
    corners: *mut i32,
    status: *mut u32,
) {
    let item = global_thread_index_x();
    if item >= nspec * nwave {
        return;
    }
    let ispec = item / nwave;
    let iwave = item % nwave;

    let geometry = SpotGeometry {
        hsizex,
        hsizey,
        ghdegx,
        ghdegy,
    };
    // SAFETY: the caller guarantees each table pointer is valid for reads of its length and
    // is not written during the launch.
    let tables = unsafe {
        psf_tables(
            geometry,
            nspec,
            (xtrace, xtrace_len, xtrace_wavemin, xtrace_wavemax),
            (ytrace, ytrace_len, ytrace_wavemin, ytrace_wavemax),
            ntrace,
            (params, params_len, param_wavemin, param_wavemax),
            nparam_coeff,
        )
    };
    let stamp_len = geometry.stamp_len();
    // SAFETY: iwave < nwave and `wave` is valid for `nwave` reads.
    let wave_i = unsafe { wave.add(iwave).read() };
    // SAFETY: item < nspec * nwave, so the `stamp_len` values from `item * stamp_len` lie inside
    // the `(nspec, nwave, ny, nx)` output; every thread has its own item, so the mutable
    // slices of different threads never overlap.
    let stamp = unsafe { core::slice::from_raw_parts_mut(stamps.add(item * stamp_len), stamp_len) };

    let result = spot_at(&tables, ispec, wave_i, stamp);
    // SAFETY: item < nspec * nwave; this thread alone writes item's entries.
    unsafe { write_spot_result(item, result, corners, status) };
}

/// Writes the corner (`(0, 0)` on failure) and status code of spot `item`.
///
/// # Safety
/// `corners` valid for `2 · (item + 1)` and `status` for `item + 1` writes, by one thread.
#[inline(always)]
unsafe fn write_spot_result(
    item: usize,
    result: Result<crate::spot::StampCorner, crate::Status>,
    corners: *mut i32,
    status: *mut u32,
) {
    let (corner, code) = match result {
        Ok(corner) => (corner, crate::Status::Ok),
        Err(err) => (crate::spot::StampCorner::default(), err),
    };
    // SAFETY: guaranteed by the caller.
    unsafe {
        corners.add(2 * item).write(corner.xc);
        corners.add(2 * item + 1).write(corner.yc);
        status.add(item).write(code as u32);
    }
}

/// PSF spots, one warp per `(ispec, iwave)` item: the cooperative [`spot_team`] on a
/// [`WarpTeam`] (the same stamps, corners and status codes as [`spots`], bit for bit).
///
/// # Parameters
/// As [`spots`].
///
/// # Launch contract
/// - block `(32 · w, 1, 1)` (whole warps); warp `k` of block `b` evaluates item `b · w + k`
///   (`ispec = item / nwave`, `iwave = item % nwave`); grid `(⌈nspec · nwave / w⌉, 1, 1)`;
/// - dynamic shared memory of at least `8 · w ·` [`spot_team_scratch_len`] bytes (5,696 bytes
///   per warp for DESI's 17×11 stamps with 7×7 coefficients). A smaller allocation is not
///   detected.
///
/// # Safety
/// As [`spots`], and the launch contract above.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn spots_team(
    hsizex: usize,
    hsizey: usize,
    ghdegx: usize,
    ghdegy: usize,
    nspec: usize,
    xtrace: *const f64,
    xtrace_len: usize,
    ytrace: *const f64,
    ytrace_len: usize,
    ntrace: usize,
    xtrace_wavemin: f64,
    xtrace_wavemax: f64,
    ytrace_wavemin: f64,
    ytrace_wavemax: f64,
    params: *const f64,
    params_len: usize,
    nparam_coeff: usize,
    param_wavemin: f64,
    param_wavemax: f64,
    wave: *const f64,
    nwave: usize,
    stamps: *mut f64,
    corners: *mut i32,
    status: *mut u32,
) {
    // SAFETY: reading %ctaid.x, %ntid.x and %tid.x has no preconditions.
    let (block, warps, tid) = unsafe {
        (
            nvptx::_block_idx_x() as usize,
            nvptx::_block_dim_x() as usize / 32,
            nvptx::_thread_idx_x() as usize,
        )
    };
    let warp = tid / 32;
    let item = block * warps + warp;
    // Whole warps return together.
    if item >= nspec * nwave {
        return;
    }
    let ispec = item / nwave;
    let iwave = item % nwave;
    let geometry = SpotGeometry {
        hsizex,
        hsizey,
        ghdegx,
        ghdegy,
    };
    let stamp_len = geometry.stamp_len();
    // SAFETY: as in `spots`: the tables are valid for their lengths and not written.
    let tables = unsafe {
        psf_tables(
            geometry,
            nspec,
            (xtrace, xtrace_len, xtrace_wavemin, xtrace_wavemax),
            (ytrace, ytrace_len, ytrace_wavemin, ytrace_wavemax),
            ntrace,
            (params, params_len, param_wavemin, param_wavemax),
            nparam_coeff,
        )
    };
    let team = WarpTeam;
    let smem = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<f64>();
    let scratch_len = spot_team_scratch_len(&geometry);
    // SAFETY: iwave < nwave; the warp owns item's stamp (no other warp writes it) and the
    // launch provides scratch_len f64 of dynamic shared memory per warp, used by this warp's
    // lanes under the team's phase rule.
    let result = unsafe {
        let wave_i = wave.add(iwave).read();
        let scratch = Shared::from_raw(smem.add(warp * scratch_len), scratch_len);
        let stamp = Shared::from_raw(stamps.add(item * stamp_len), stamp_len);
        spot_team(&team, &tables, ispec, wave_i, scratch, stamp)
    };
    if tid % 32 == 0 {
        // SAFETY: item < nspec * nwave; lane 0 of this warp alone writes item's entries.
        unsafe { write_spot_result(item, result, corners, status) };
    }
}

/// Widens `n` f32 values to f64 (`dst[i] = src[i] as f64`, exact): the image and weights go to
/// the device as f32 (half the bytes) and are used as f64.
///
/// # Parameters
/// - `n`: number of values; `src`: shape `(n,)` f32, read; `dst`: shape `(n,)` f64, written.
///
/// # Thread mapping
/// One thread per element, 1-D grid; threads with `i >= n` return.
///
/// # Safety
/// `src` valid for `n` reads and `dst` for `n` writes; they must not overlap.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn widen_f32(n: usize, src: *const f32, dst: *mut f64) {
    let i = global_thread_index_x();
    if i >= n {
        return;
    }
    // SAFETY: i < n and the caller guarantees n valid elements behind both pointers.
    unsafe { dst.add(i).write(src.add(i).read() as f64) }
}
