//! Frame-wide entry points (`nvptx64-nvidia-cuda` only): the PSF spots of every
//! `(fiber, wavelength)`, the f32 -> f64 widening of the uploaded CCD, the pixel screen of an
//! image already in device memory, and the smoke test of the launch path. Each takes its argument struct of [`super::args`] by value.

use core::arch::nvptx;

use super::args::{ScreenPixelsArgs, SmokeAxpyArgs, SpotsArgs, WidenArgs, WARP_THREADS};
use super::thread;
use crate::pixel::screen_device_pixel;
use crate::psf::spot::{spot_at, StampCorner};
use crate::psf::spot_team::{spot_team, spot_team_scratch_len};
use crate::team::{Shared, SubWarpTeam};
use crate::Status;

/// Smoke test of the build and launch pipeline: `y[i] = a * x[i] + y[i]` for `i < n`
/// ([`SmokeAxpyArgs`]).
///
/// Kept on purpose beside the real kernels: it exercises the PTX build, embedding and a launch
/// with nothing from the numerics involved, so a failing GPU test can tell the two apart.
///
/// # Launch
/// [`SmokeAxpyArgs::shape`]: one thread per element; threads with `i >= n` return at once, so
/// any grid with at least `n` threads works.
///
/// # Safety
/// `x` must be valid for reads and `y` for reads and writes of `n` `f64` each, and the two must
/// not overlap.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn smoke_axpy(args: SmokeAxpyArgs) {
    let SmokeAxpyArgs { n, a, x, y } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_global!(x, y) };
    let i = thread::global_index();
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

/// [`assume_global!`] of the pointers of the spot kernels.
///
/// # Safety
/// They are device allocations.
#[inline(always)]
unsafe fn assume_spots_global(args: &SpotsArgs) {
    let t = &args.tables;
    // SAFETY: guaranteed by the caller.
    unsafe {
        assume_global!(
            t.xtrace,
            t.ytrace,
            t.params,
            args.wave,
            args.stamps,
            args.corners,
            args.status
        )
    };
}

/// Spot `item` of the grid of `args`: `(ispec, iwave)` (wavelength fastest), or `None`
/// beyond the grid.
#[inline(always)]
fn spot_index(args: &SpotsArgs, item: usize) -> Option<(usize, usize)> {
    let nwave = args.nwave;
    (item < args.tables.nspec * nwave).then(|| (item / nwave, item % nwave))
}

/// PSF spots of a whole frame: one pixel-integrated stamp per `(ispec, iwave)` of the grid
/// ([`SpotsArgs`]).
///
/// Calls [`spot_at`] for fiber `ispec` at wavelength `wave[iwave]` and stores its stamp, its
/// corner on the CCD and its [`Status`] code. On failure the corner is `(0, 0)` and the stamp
/// holds whatever `spot_at` left in it: the host must check `status` first.
///
/// # Launch
/// [`SpotsArgs::shape`]: one thread per item, `item = blockIdx.x * blockDim.x + threadIdx.x`,
/// `ispec = item / nwave`, `iwave = item % nwave` (wavelength fastest, so neighbouring threads
/// read neighbouring `wave` entries). Threads with `item >= nspec * nwave` return at once.
///
/// # Safety
/// - the tables and `wave` valid for reads of their lengths, not written during the launch;
/// - `stamps` valid for writes of `nspec * nwave * ny * nx` `f64`s, `corners` of
///   `2 * nspec * nwave` `i32`s and `status` of `nspec * nwave` `u32`s; the three output
///   buffers must not overlap each other or any input;
/// - `nspec * nwave * ny * nx` must not overflow `usize`.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn spots(args: SpotsArgs) {
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_spots_global(&args) };
    let item = thread::global_index();
    let Some((ispec, iwave)) = spot_index(&args, item) else {
        return;
    };
    // SAFETY: the tables are valid for their lengths and not written (caller).
    let tables = unsafe { args.tables.tables() };
    let stamp_len = tables.geometry.stamp_len();
    // SAFETY: iwave < nwave and `wave` is valid for `nwave` reads.
    let wave = unsafe { args.wave.add(iwave).read() };
    // SAFETY: item < nspec * nwave, so the `stamp_len` values from `item * stamp_len` lie inside
    // the `(nspec, nwave, ny, nx)` output; every thread has its own item, so the mutable
    // slices of different threads never overlap.
    let stamp =
        unsafe { core::slice::from_raw_parts_mut(args.stamps.add(item * stamp_len), stamp_len) };
    let result = spot_at(&tables, ispec, wave, stamp);
    // SAFETY: item < nspec * nwave; this thread alone writes item's entries.
    unsafe { write_spot_result(item, result, args.corners, args.status) };
}

/// Writes the corner (`(0, 0)` on failure) and status code of spot `item`.
///
/// # Safety
/// `corners` valid for `2 · (item + 1)` and `status` for `item + 1` writes, by one thread.
#[inline(always)]
unsafe fn write_spot_result(
    item: usize,
    result: Result<StampCorner, Status>,
    corners: *mut i32,
    status: *mut u32,
) {
    let (corner, code) = match result {
        Ok(corner) => (corner, Status::Ok),
        Err(err) => (StampCorner::default(), err),
    };
    // SAFETY: guaranteed by the caller.
    unsafe {
        corners.add(2 * item).write(corner.xc);
        corners.add(2 * item + 1).write(corner.yc);
        status.add(item).write(code as u32);
    }
}

/// PSF spots, one warp per `(ispec, iwave)` item: the cooperative [`spot_team`] on a warp
/// (the same stamps, corners and status codes as [`spots`], bit for bit).
///
/// # Launch
/// [`SpotsArgs::team_shape`]`(w, 32)`:
/// - block `(32 · w, 1, 1)` (whole warps); warp `k` of block `b` evaluates item `b · w + k`
///   (`ispec = item / nwave`, `iwave = item % nwave`); grid `(⌈nspec · nwave / w⌉, 1, 1)`;
/// - dynamic shared memory of at least `8 · w ·` [`spot_team_scratch_len`] bytes (5,696 bytes
///   per warp for DESI's 17×11 stamps with 7×7 coefficients). A smaller allocation is not
///   detected.
///
/// # Safety
/// As [`spots`], and the launch shape above.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn spots_team(args: SpotsArgs) {
    // SAFETY: the caller's contract, with teams of a whole warp.
    unsafe { spots_in_teams::<WARP_THREADS>(args) }
}

/// [`spots_team`] with teams of 16 lanes, two spots per warp: the same stamps, bit for bit,
/// with each spot's serial steps (its stamp's total, its status) run beside another spot's.
/// The GPU default (`DESI_SPOT_TEAM_LANES`, unset or `16`): 10.35 ms per full r frame against
/// 12.93 ms for [`spots_team`] on an H100.
///
/// # Launch
/// [`SpotsArgs::team_shape`]`(w, 16)`: as [`spots_team`] with `2 · w` items per block, item
/// `(b · w + k) · 2 + g` for group `g` of warp `k`, and `2 · w` scratch areas.
///
/// # Safety
/// As [`spots`], and the launch shape above.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn spots_team16(args: SpotsArgs) {
    // SAFETY: the caller's contract, with teams of 16 lanes.
    unsafe { spots_in_teams::<16>(args) }
}

/// [`spots_team16`] with teams of 8 lanes, four spots per warp (`DESI_SPOT_TEAM_LANES=8`;
/// [`SpotsArgs::team_shape`]`(w, 8)`).
///
/// # Safety
/// As [`spots`], and the launch shape [`SpotsArgs::team_shape`]`(w, 8)`.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn spots_team8(args: SpotsArgs) {
    // SAFETY: the caller's contract, with teams of 8 lanes.
    unsafe { spots_in_teams::<8>(args) }
}

/// The body of the `spots_team` kernels: [`spot_team`] on teams of `W` consecutive lanes
/// ([`SubWarpTeam`]), `32 / W` items per warp, each with its own scratch area.
///
/// # Safety
/// As [`spots`], and the launch shape [`SpotsArgs::team_shape`]`(w, W)`.
#[inline(always)]
unsafe fn spots_in_teams<const W: usize>(args: SpotsArgs) {
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_spots_global(&args) };
    // SAFETY: reading %ctaid.x, %ntid.x and %tid.x has no preconditions.
    let (block, teams, tid) = unsafe {
        (
            nvptx::_block_idx_x() as usize,
            nvptx::_block_dim_x() as usize / W,
            nvptx::_thread_idx_x() as usize,
        )
    };
    let team_index = tid / W;
    let item = block * teams + team_index;
    // Whole teams return together.
    let Some((ispec, iwave)) = spot_index(&args, item) else {
        return;
    };
    let geometry = args.tables.geometry;
    let stamp_len = geometry.stamp_len();
    // SAFETY: the tables are valid for their lengths and not written (caller).
    let tables = unsafe { args.tables.tables() };
    let team = SubWarpTeam::<W>;
    let smem = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<f64>();
    let scratch_len = spot_team_scratch_len(&geometry);
    // SAFETY: iwave < nwave; the team owns item's stamp (no other team writes it) and the
    // launch provides scratch_len f64 of dynamic shared memory per team, used by this team's
    // lanes under the team's phase rule.
    let result = unsafe {
        let wave = args.wave.add(iwave).read();
        let scratch = Shared::from_raw(smem.add(team_index * scratch_len), scratch_len);
        let stamp = Shared::from_raw(args.stamps.add(item * stamp_len), stamp_len);
        spot_team(&team, &tables, ispec, wave, scratch, stamp)
    };
    if tid % W == 0 {
        // SAFETY: item < nspec * nwave; lane 0 of this team alone writes item's entries.
        unsafe { write_spot_result(item, result, args.corners, args.status) };
    }
}

/// Widens `n` f32 values to f64 (`dst[i] = src[i] as f64`, exact): the image and weights go to
/// the device as f32 (half the bytes) and are used as f64 ([`WidenArgs`]).
///
/// # Launch
/// [`WidenArgs::shape`]: one thread per element; threads with `i >= n` return.
///
/// # Safety
/// `src` valid for `n` reads and `dst` for `n` writes; they must not overlap.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn widen_f32(args: WidenArgs) {
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_global!(args.src, args.dst) };
    let WidenArgs { n, src, dst } = args;
    let i = thread::global_index();
    if i >= n {
        return;
    }
    // SAFETY: i < n and the caller guarantees n valid elements behind both pointers.
    unsafe { dst.add(i).write(src.add(i).read() as f64) }
}

/// Reads element `col` of the row at `row` as f32: an f32 as it is, an f64 rounded to nearest.
///
/// # Safety
/// `row` valid for reads of `col + 1` elements of `element` bytes (4 or 8), suitably aligned.
#[inline(always)]
unsafe fn read_as_f32(row: *const u8, element: usize, col: usize) -> f32 {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if element == 8 {
            row.cast::<f64>().add(col).read() as f32
        } else {
            row.cast::<f32>().add(col).read()
        }
    }
}

/// The pixel rule over an image already in device memory ([`ScreenPixelsArgs`]): thread `i`
/// reads pixel `(i / ncol, i % ncol)` of `image` and `ivar` (f64 rounded to f32), writes
/// [`screen_device_pixel`]'s value and weight, and counts the pixel in `invalid` when it is
/// not valid input (atomic add and min: invalid input is rare,
/// so the atomics cost nothing on valid images).
///
/// # Launch
/// [`ScreenPixelsArgs::shape`]: one thread per pixel; threads with `i >= nrow * ncol` return.
///
/// # Safety
/// - `image` valid for reads of `nrow` rows of `ncol` elements of `image_element` bytes (4 or
///   8), `image_row_stride` bytes apart, aligned to the element; the same for `ivar`; neither
///   written during the launch;
/// - `value` and `weight` valid for `nrow * ncol` writes each, `invalid` for two u64 reads and
///   writes (8-byte aligned); the outputs overlap neither each other nor the inputs.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn screen_pixels(args: ScreenPixelsArgs) {
    // SAFETY: device allocations (the kernel's contract: the host checked every input address
    // with the driver, and allocated the outputs).
    unsafe { assume_global!(args.image, args.ivar, args.value, args.weight, args.invalid) };
    let i = thread::global_index();
    if i >= args.nrow * args.ncol {
        return;
    }
    let (row, col) = (i / args.ncol, i % args.ncol);
    // SAFETY: row < nrow and col < ncol: inside both planes (caller).
    let (value, ivar) = unsafe {
        (
            read_as_f32(
                args.image.add(row * args.image_row_stride),
                args.image_element,
                col,
            ),
            read_as_f32(
                args.ivar.add(row * args.ivar_row_stride),
                args.ivar_element,
                col,
            ),
        )
    };
    let (value_used, weight, valid) =
        screen_device_pixel(value, ivar, args.max_abs_value, args.max_ivar);
    // SAFETY: i < nrow * ncol; this thread alone writes element i of each output.
    unsafe {
        args.value.add(i).write(value_used);
        args.weight.add(i).write(weight);
    }
    if !valid {
        // SAFETY: `invalid` holds two aligned u64 of device memory (caller), only ever accessed
        // atomically during the launch.
        unsafe {
            use core::sync::atomic::{AtomicU64, Ordering};
            AtomicU64::from_ptr(args.invalid).fetch_add(1, Ordering::Relaxed);
            AtomicU64::from_ptr(args.invalid.add(1)).fetch_min(i as u64, Ordering::Relaxed);
        }
    }
}
