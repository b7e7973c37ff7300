//! GPU entry points of the per-patch solve (`nvptx64-nvidia-cuda` only): thin shims that map
//! threads to patches, unknowns or core spectra and call the same functions as the CPU backend
//! (`crate::patch`, `crate::linalg`). No numerics live here.
//!
//! Shared conventions of every kernel below:
//! - `descs`: `npatch` [`PatchDesc`]s (see its fields for the buffer offsets);
//! - `status`: `(npatch,)` `u32` [`Status`] codes; a kernel skips patches whose status is not
//!   0 and writes its own failure (several threads of one patch may race to write different
//!   non-zero codes: any of them is a failure, which is all the host needs);
//! - vectors of unknowns (`rhs`, `fluxweight`, `xflux`) have a stride of `nmax` f64 per patch;
//! - per-core-spectrum buffers have a stride of `nspp_max` blocks per patch;
//! - 1-D grids with any number of threads >= the number of items (extra threads return).

use core::arch::nvptx;

use crate::linalg::{banded, jacobi, jacobi_team};
use crate::patch::assemble_warp::{assemble_unknown_lane, WARP_LANES};
use crate::patch::{
    apply_resolution, assemble_unknown, core_pixel_sums, pixel_chi2_row, regularize,
    resolution_diagonals, CcdView, PatchDesc, StampView,
};
use crate::psf::spot::StampCorner;
use crate::team::{BlockTeam, Shared, Team};
use crate::Status;

/// `blockIdx.x * blockDim.x + threadIdx.x`.
#[inline(always)]
fn item_index() -> usize {
    // SAFETY: reading the special registers %ctaid.x, %ntid.x and %tid.x has no preconditions.
    unsafe {
        (nvptx::_block_idx_x() as usize) * (nvptx::_block_dim_x() as usize)
            + nvptx::_thread_idx_x() as usize
    }
}

/// Reads a patch descriptor.
///
/// # Safety
/// `descs` must be valid for reads of `p + 1` descriptors.
#[inline(always)]
unsafe fn desc(descs: *const PatchDesc, p: usize) -> PatchDesc {
    // SAFETY: guaranteed by the caller.
    unsafe { descs.add(p).read() }
}

/// The descriptor of patch `p` if this thread has a patch to work on: `None` beyond the batch
/// (`p >= npatch`) or for a patch that an earlier stage marked failed (non-zero status).
///
/// # Safety
/// `descs` and `status` must be valid for reads of `npatch` values.
#[inline(always)]
unsafe fn live_patch(
    descs: *const PatchDesc,
    status: *const u32,
    npatch: usize,
    p: usize,
) -> Option<PatchDesc> {
    // SAFETY: p < npatch (checked first) and the caller's guarantee.
    (p < npatch && unsafe { status.add(p).read() } == 0).then(|| unsafe { desc(descs, p) })
}

/// Records a failure of patch `p` (any non-zero code).
///
/// # Safety
/// `status` must be valid for writes of `p + 1` values.
#[inline(always)]
unsafe fn fail(status: *mut u32, p: usize, code: Status) {
    if code != Status::Ok {
        // SAFETY: guaranteed by the caller.
        unsafe { status.add(p).write(code as u32) };
    }
}

/// Stamp view of a patch in the frame's spot table.
///
/// # Safety
/// `stamps` must be valid for `stamps_len` f64 and `corners` for `stamps_len / (ny*nx)`
/// corners, not written during the launch.
#[inline(always)]
unsafe fn stamp_view<'a>(
    d: &PatchDesc,
    stamps: *const f64,
    stamps_len: usize,
    corners: *const StampCorner,
    ny: usize,
    nx: usize,
) -> StampView<'a> {
    let first = d.stamp_offset as usize;
    let ncorner = stamps_len / (ny * nx);
    // SAFETY: guaranteed by the caller; the view starts at the patch's first stamp.
    unsafe {
        StampView {
            stamps: core::slice::from_raw_parts(
                stamps.add(first * ny * nx),
                stamps_len - first * ny * nx,
            ),
            corners: core::slice::from_raw_parts(corners.add(first), ncorner - first),
            fiber_stride: d.fiber_stride as usize,
            ny,
            nx,
        }
    }
}

/// CCD view.
///
/// # Safety
/// `image` and `weight` must be valid for `nrow * ncol` reads each, not written during the
/// launch.
#[inline(always)]
unsafe fn ccd_view<'a>(
    image: *const f64,
    weight: *const f64,
    nrow: usize,
    ncol: usize,
) -> CcdView<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        CcdView {
            image: core::slice::from_raw_parts(image, nrow * ncol),
            weight: core::slice::from_raw_parts(weight, nrow * ncol),
            nrow,
            ncol,
        }
    }
}

/// Normal equations: one thread per (patch, unknown) calls [`assemble_unknown`].
///
/// # Parameters
/// `descs`, `npatch`, `nmax` (unknowns stride), `nwavetot`; `stamps`/`stamps_len` `(nfiber,
/// nwave, ny, nx)` f64 and `corners` `(nfiber, nwave)` [`StampCorner`]s of the frame; `ny`,
/// `nx`; `image`, `weight` `(nrow, ncol)` f64; `band` (band matrices at each desc's
/// `band_offset`), `band_len`; outputs `rhs`, `fluxweight` `(npatch, nmax)`; `status`.
///
/// # Thread mapping
/// `item = patch * nmax + q`; threads with `q >= n` of their patch return.
///
/// # Safety
/// All pointers valid for the documented sizes; outputs do not overlap inputs or each other.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn assemble(
    descs: *const PatchDesc,
    npatch: usize,
    nmax: usize,
    nwavetot: usize,
    stamps: *const f64,
    stamps_len: usize,
    corners: *const StampCorner,
    ny: usize,
    nx: usize,
    image: *const f64,
    weight: *const f64,
    nrow: usize,
    ncol: usize,
    band: *mut f64,
    band_len: usize,
    rhs: *mut f64,
    fluxweight: *mut f64,
    status: *mut u32,
) {
    let item = item_index();
    let (p, q) = (item / nmax, item % nmax);
    if p >= npatch {
        return;
    }
    // SAFETY: p < npatch; the caller guarantees the buffer sizes. Each thread writes only the
    // entries owned by its unknown q (assemble_unknown's contract), so the mutable slices of
    // different threads alias but are written at disjoint indices.
    unsafe {
        let d = desc(descs, p);
        let n = d.nunknown(nwavetot);
        if q >= n {
            return;
        }
        let view = stamp_view(&d, stamps, stamps_len, corners, ny, nx);
        let ccd = ccd_view(image, weight, nrow, ncol);
        let shape = d.shape(nwavetot);
        let kd = d.kd as usize;
        let off = d.band_offset as usize;
        let len = n * (kd + 1);
        if off + len > band_len {
            fail(status, p, Status::BadShape);
            return;
        }
        let band = core::slice::from_raw_parts_mut(band.add(off), len);
        let rhs = core::slice::from_raw_parts_mut(rhs.add(p * nmax), n);
        let fw = core::slice::from_raw_parts_mut(fluxweight.add(p * nmax), n);
        let code = assemble_unknown(&view, &ccd, &shape, kd, q, band, rhs, fw);
        fail(status, p, code);
    }
}

extern "C" {
    /// `shfl.sync.bfly.b32`: the value of lane `laneid ^ lane_mask` among the lanes of `mask`.
    #[link_name = "llvm.nvvm.shfl.sync.bfly.i32"]
    fn shfl_bfly(mask: u32, value: i32, lane_mask: i32, clamp: i32) -> i32;
}

/// Sum of `value` over the 32 lanes of the calling warp, returned to every lane (butterfly:
/// 5 steps of two 32-bit shuffles; f64 addition is commutative, so every lane gets the same
/// bits).
///
/// # Safety
/// All 32 lanes of the warp must call it together (converged, uniform control flow).
#[inline(always)]
unsafe fn warp_sum(value: f64) -> f64 {
    let mut sum = value;
    let mut lane_mask = 16;
    while lane_mask > 0 {
        let bits = sum.to_bits();
        // SAFETY: every lane of the full mask executes this shuffle (caller's guarantee).
        let (lo, hi) = unsafe {
            (
                shfl_bfly(u32::MAX, bits as u32 as i32, lane_mask, 0x1f),
                shfl_bfly(u32::MAX, (bits >> 32) as u32 as i32, lane_mask, 0x1f),
            )
        };
        sum += f64::from_bits(((hi as u32 as u64) << 32) | lo as u32 as u64);
        lane_mask >>= 1;
    }
    sum
}

/// Normal equations, warp-cooperative: the same parameters and results as [`assemble`] (up
/// to the order of the sums), but one warp per (patch, unknown) runs
/// [`assemble_unknown_lane`]: coalesced stamp and CCD loads, the stamp of `q1` times the
/// weights kept in registers, lane sums added by shuffles.
///
/// # Parameters
/// As [`assemble`]: `descs`, `npatch`, `nmax` (unknowns stride), `nwavetot`;
/// `stamps`/`stamps_len` `(nfiber, nwave, ny, nx)` f64 and `corners` `(nfiber, nwave)`
/// [`StampCorner`]s of the frame; `ny`, `nx`; `image`, `weight` `(nrow, ncol)` f64; `band`
/// (band matrices at each desc's `band_offset`), `band_len`; outputs `rhs`, `fluxweight`
/// `(npatch, nmax)`; `status` (`TooLarge` for stamps of more than 256 pixels: use
/// [`assemble`]).
///
/// # Launch contract
/// - block `(128, 1, 1)` (any multiple of 32 works): 4 warps, i.e. 4 unknowns, per block;
/// - grid `(⌈npatch · nmax / 4⌉, 1, 1)` for 128-thread blocks (at least `npatch · nmax`
///   warps); no shared memory.
///
/// # Thread mapping
/// `warp = (blockIdx.x · blockDim.x + threadIdx.x) / 32`, `lane = threadIdx.x % 32`;
/// `warp = patch · nmax + q`; warps with `q >= n` of their patch or `patch >= npatch` return
/// as a whole (every shuffle is executed by all 32 lanes). Lane 0 writes `rhs`, `fluxweight`
/// and a failure status; lane `d % 32` writes the band entry `M[q + d][q]`.
///
/// # Safety
/// All pointers valid for the documented sizes; outputs do not overlap inputs or each other;
/// the launch contract above.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn assemble_warp(
    descs: *const PatchDesc,
    npatch: usize,
    nmax: usize,
    nwavetot: usize,
    stamps: *const f64,
    stamps_len: usize,
    corners: *const StampCorner,
    ny: usize,
    nx: usize,
    image: *const f64,
    weight: *const f64,
    nrow: usize,
    ncol: usize,
    band: *mut f64,
    band_len: usize,
    rhs: *mut f64,
    fluxweight: *mut f64,
    status: *mut u32,
) {
    let thread = item_index();
    let (warp, lane) = (thread / WARP_LANES, thread % WARP_LANES);
    let (p, q) = (warp / nmax, warp % nmax);
    if p >= npatch {
        return;
    }
    // SAFETY: p < npatch; the caller guarantees the buffer sizes. p and q are the same for
    // the 32 lanes of a warp, so the early returns leave whole warps and the shuffles of
    // warp_sum are executed by all lanes. Each lane writes only the entries that
    // assemble_unknown_lane assigns to (q, lane), so the mutable slices of different
    // threads alias but are written at disjoint indices.
    unsafe {
        let d = desc(descs, p);
        let n = d.nunknown(nwavetot);
        if q >= n {
            return;
        }
        let view = stamp_view(&d, stamps, stamps_len, corners, ny, nx);
        let ccd = ccd_view(image, weight, nrow, ncol);
        let shape = d.shape(nwavetot);
        let kd = d.kd as usize;
        let off = d.band_offset as usize;
        let len = n * (kd + 1);
        if off + len > band_len {
            if lane == 0 {
                fail(status, p, Status::BadShape);
            }
            return;
        }
        let band = core::slice::from_raw_parts_mut(band.add(off), len);
        let rhs = core::slice::from_raw_parts_mut(rhs.add(p * nmax), n);
        let fw = core::slice::from_raw_parts_mut(fluxweight.add(p * nmax), n);
        let code = assemble_unknown_lane(
            &view,
            &ccd,
            &shape,
            kd,
            q,
            lane,
            WARP_LANES,
            band,
            rhs,
            fw,
            |_, partial| warp_sum(partial),
        );
        if lane == 0 {
            fail(status, p, code);
        }
    }
}

/// Regularization, banded Cholesky factorization and solve: one thread per patch.
///
/// # Parameters
/// `descs`, `npatch`, `nmax`, `nwavetot`, `band`/`band_len` (factored in place), `rhs`,
/// `fluxweight` `(npatch, nmax)`, `regularize` (α), output `xflux` `(npatch, nmax)`, `status`.
///
/// # Safety
/// All pointers valid for the documented sizes.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn factor_solve(
    descs: *const PatchDesc,
    npatch: usize,
    nmax: usize,
    nwavetot: usize,
    band: *mut f64,
    band_len: usize,
    rhs: *const f64,
    fluxweight: *const f64,
    regularize_alpha: f64,
    xflux: *mut f64,
    status: *mut u32,
) {
    let p = item_index();
    // SAFETY: one thread per patch owns its band matrix and vectors.
    unsafe {
        let Some(d) = live_patch(descs, status, npatch, p) else {
            return;
        };
        let n = d.nunknown(nwavetot);
        let kd = d.kd as usize;
        let off = d.band_offset as usize;
        if off + n * (kd + 1) > band_len {
            fail(status, p, Status::BadShape);
            return;
        }
        let band = core::slice::from_raw_parts_mut(band.add(off), n * (kd + 1));
        let fw = core::slice::from_raw_parts(fluxweight.add(p * nmax), n);
        regularize(band, n, kd, fw, regularize_alpha);
        let code = banded::band_factor(band, n, kd);
        if code != Status::Ok {
            fail(status, p, code);
            return;
        }
        let x = core::slice::from_raw_parts_mut(xflux.add(p * nmax), n);
        x.copy_from_slice(core::slice::from_raw_parts(rhs.add(p * nmax), n));
        fail(status, p, banded::band_solve(band, n, kd, x));
    }
}

/// Covariance blocks `C_bb` of the core spectra: one thread per (patch, core spectrum c).
///
/// # Parameters
/// `descs`, `npatch`, `nspp_max`, `nwavetot`, `band`/`band_len` (factored), outputs `cov`
/// `(npatch, nspp_max, nwavetot, nwavetot)`, scratch `work` `(npatch, nspp_max, work_stride)`,
/// `status`.
///
/// # Thread mapping
/// `item = patch * nspp_max + c`; threads with `c >= nspp` return.
///
/// # Safety
/// All pointers valid for the documented sizes.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn covariance(
    descs: *const PatchDesc,
    npatch: usize,
    nspp_max: usize,
    nwavetot: usize,
    band: *const f64,
    band_len: usize,
    cov: *mut f64,
    work: *mut f64,
    work_stride: usize,
    status: *mut u32,
) {
    let item = item_index();
    let (p, c) = (item / nspp_max, item % nspp_max);
    // SAFETY: each (patch, c) owns its output block and scratch.
    unsafe {
        let Some(d) = live_patch(descs, status, npatch, p) else {
            return;
        };
        if c >= d.nspp as usize {
            return;
        }
        let n = d.nunknown(nwavetot);
        let kd = d.kd as usize;
        let off = d.band_offset as usize;
        let need = banded::band_covariance_blocks_work_len(n, kd, d.nspecpad as usize);
        if off + n * (kd + 1) > band_len || need > work_stride {
            fail(status, p, Status::BadShape);
            return;
        }
        let ab = core::slice::from_raw_parts(band.add(off), n * (kd + 1));
        let block = nwavetot * nwavetot;
        let out = core::slice::from_raw_parts_mut(cov.add(item * block), block);
        let w = core::slice::from_raw_parts_mut(work.add(item * work_stride), work_stride);
        let code = banded::band_covariance_block_range(
            ab,
            n,
            kd,
            d.nspecpad as usize,
            d.s_core as usize + c,
            out,
            w,
        );
        fail(status, p, code);
    }
}

/// Resolution of the core spectra: `Q = C_bb^(-1/2)` by Jacobi, `R = Q / rowsum`, ivar, flux
/// and the stored diagonals. One thread per (patch, core spectrum c).
///
/// # Parameters
/// `descs`, `npatch`, `nspp_max`, `nmax`, `nwavetot`, `ndiag`, `pad`, `nwavestep`; `cov`
/// `(npatch, nspp_max, nwavetot²)` (input), `xflux` `(npatch, nmax)`; scratch `qbuf` (like
/// `cov`) and `work` `(npatch, nspp_max, work_stride)`; outputs `flux`, `ivar` `(npatch,
/// nspp_max, nwavetot)` and `rdiags` `(npatch, nspp_max, 2·ndiag+1, nwavestep)`; `status`.
///
/// # Safety
/// All pointers valid for the documented sizes.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn resolution(
    descs: *const PatchDesc,
    npatch: usize,
    nspp_max: usize,
    nmax: usize,
    nwavetot: usize,
    ndiag: usize,
    pad: usize,
    nwavestep: usize,
    cov: *const f64,
    xflux: *const f64,
    qbuf: *mut f64,
    work: *mut f64,
    work_stride: usize,
    flux: *mut f64,
    ivar: *mut f64,
    rdiags: *mut f64,
    status: *mut u32,
) {
    let item = item_index();
    let (p, c) = (item / nspp_max, item % nspp_max);
    // SAFETY: each (patch, c) owns its scratch and output blocks.
    unsafe {
        let Some(d) = live_patch(descs, status, npatch, p) else {
            return;
        };
        if c >= d.nspp as usize {
            return;
        }
        if jacobi::inverse_sqrt_work_len(nwavetot) > work_stride {
            fail(status, p, Status::BadShape);
            return;
        }
        let block = nwavetot * nwavetot;
        let a = core::slice::from_raw_parts(cov.add(item * block), block);
        let q = core::slice::from_raw_parts_mut(qbuf.add(item * block), block);
        let w = core::slice::from_raw_parts_mut(work.add(item * work_stride), work_stride);
        let code = jacobi::inverse_sqrt(a, nwavetot, q, w);
        if code != Status::Ok {
            fail(status, p, code);
            return;
        }
        let s = d.s_core as usize + c;
        let n = d.nunknown(nwavetot);
        let x = core::slice::from_raw_parts(xflux.add(p * nmax + s), n - s);
        let f = core::slice::from_raw_parts_mut(flux.add(item * nwavetot), nwavetot);
        let iv = core::slice::from_raw_parts_mut(ivar.add(item * nwavetot), nwavetot);
        let code = apply_resolution(q, nwavetot, x, d.nspecpad as usize, f, iv);
        if code != Status::Ok {
            fail(status, p, code);
            return;
        }
        let ndiagonal = 2 * ndiag + 1;
        let rd = core::slice::from_raw_parts_mut(
            rdiags.add(item * ndiagonal * nwavestep),
            ndiagonal * nwavestep,
        );
        let code = resolution_diagonals(
            q,
            nwavetot,
            ndiag,
            pad,
            pad + d.keep as usize,
            rd,
            nwavestep,
        );
        fail(status, p, code);
    }
}

/// Resolution of the core spectra, cooperatively: the same inputs and outputs as
/// [`resolution`] (`qbuf`, `work` and `work_stride` are unused and may be null/0), but one
/// thread block per (patch, core spectrum c) runs [`jacobi_team::resolution_team`] on the
/// covariance block copied into shared memory.
///
/// # Parameters
/// As [`resolution`].
///
/// # Launch contract
/// - grid `(npatch · nspp_max, 1, 1)`: block `item = patch · nspp_max + c`; blocks with
///   `c >= nspp` of their patch return at once;
/// - block `(lanes, 1, 1)`, any `lanes >= 1` (128 or 256 recommended; the Jacobi steps use
///   `g = lanes / ⌈nwavetot/2⌉` lanes per pair);
/// - dynamic shared memory of at least
///   `8 · `[`jacobi_team::resolution_team_shared_len`]`(nwavetot, lanes)` bytes
///   (`8·(n² + 5n + h + 3·h·g)`, `h = ⌈n/2⌉`; 52,392 bytes for 74×74 at 256 lanes, 49,728 at
///   128), above the default 48 KiB: the host sets
///   `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`. A smaller allocation is not detected.
///
/// # Thread mapping
/// Thread `threadIdx.x` is lane `threadIdx.x` of a [`BlockTeam`]; every thread of a block
/// passes the same sequence of barriers (the patch status is read by thread 0 and broadcast
/// through shared memory, so a concurrent failure of another block of the patch cannot split
/// the block).
///
/// # Safety
/// All pointers valid for the documented sizes; the launch contract above.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn resolution_team(
    descs: *const PatchDesc,
    npatch: usize,
    nspp_max: usize,
    nmax: usize,
    nwavetot: usize,
    ndiag: usize,
    pad: usize,
    nwavestep: usize,
    cov: *const f64,
    xflux: *const f64,
    _qbuf: *mut f64,
    _work: *mut f64,
    _work_stride: usize,
    flux: *mut f64,
    ivar: *mut f64,
    rdiags: *mut f64,
    status: *mut u32,
) {
    // SAFETY: reading %ctaid.x has no preconditions.
    let item = unsafe { nvptx::_block_idx_x() } as usize;
    let (p, c) = (item / nspp_max, item % nspp_max);
    if p >= npatch {
        return;
    }
    let team = BlockTeam;
    let lanes = team.lanes();
    let block = nwavetot * nwavetot;
    let smem = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<f64>();
    // SAFETY: the launch provides resolution_team_shared_len(nwavetot, lanes) f64 of dynamic
    // shared memory (launch contract), used only by this block's lanes under the team's phase
    // rule; the descriptor, status, cov, xflux and output accesses are within the documented
    // sizes, and each (patch, c) owns its output rows.
    unsafe {
        let d = desc(descs, p);
        if c >= d.nspp as usize {
            return;
        }
        let a = Shared::from_raw(smem, block);
        let scratch = Shared::from_raw(
            smem.add(block),
            jacobi_team::jacobi_team_scratch_len(nwavetot, lanes),
        );
        let src = cov.add(item * block);
        team.each(|lane| {
            if lane == 0 {
                scratch.set(0, status.add(p).read() as f64);
            }
            let mut e = lane;
            while e < block {
                a.set(e, src.add(e).read());
                e += lanes;
            }
        });
        let mut skip = false;
        team.each(|_| skip = scratch.get(0) != 0.0);
        if skip {
            return;
        }
        let s = d.s_core as usize + c;
        let n = d.nunknown(nwavetot);
        let x = core::slice::from_raw_parts(xflux.add(p * nmax + s), n - s);
        let ndiagonal = 2 * ndiag + 1;
        let mut stats = jacobi::JacobiStats::default();
        let code = jacobi_team::resolution_team(
            &team,
            a,
            nwavetot,
            x,
            d.nspecpad as usize,
            ndiag,
            pad,
            pad + d.keep as usize,
            Shared::from_raw(flux.add(item * nwavetot), nwavetot),
            Shared::from_raw(ivar.add(item * nwavetot), nwavetot),
            Shared::from_raw(
                rdiags.add(item * ndiagonal * nwavestep),
                ndiagonal * nwavestep,
            ),
            nwavestep,
            scratch,
            &mut stats,
        );
        if nvptx::_thread_idx_x() == 0 {
            fail(status, p, code);
        }
    }
}

/// χ²_pix of the kept window: one thread per (patch, window row) calls [`pixel_chi2_row`].
///
/// # Parameters
/// `descs`, `npatch`, `max_rows` (row stride of the launch), `nmax`, `nwavetot`, `stamps`,
/// `stamps_len`, `corners`, `ny`, `nx`, `image`, `weight`, `nrow`, `ncol`, `xflux`, `psferr`,
/// output `pixels` (each desc's window at `pixel_offset`), `pixels_len`, `status`.
///
/// # Thread mapping
/// `item = patch * max_rows + r`; threads with `r >= row_max - row_min` return.
///
/// # Safety
/// All pointers valid for the documented sizes.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn pixel_rows(
    descs: *const PatchDesc,
    npatch: usize,
    max_rows: usize,
    nmax: usize,
    nwavetot: usize,
    stamps: *const f64,
    stamps_len: usize,
    corners: *const StampCorner,
    ny: usize,
    nx: usize,
    image: *const f64,
    weight: *const f64,
    nrow: usize,
    ncol: usize,
    xflux: *const f64,
    psferr: f64,
    pixels: *mut f64,
    pixels_len: usize,
    status: *mut u32,
) {
    let item = item_index();
    let (p, r) = (item / max_rows, item % max_rows);
    // SAFETY: each (patch, row) owns its row of the window scratch.
    unsafe {
        let Some(d) = live_patch(descs, status, npatch, p) else {
            return;
        };
        let height = (d.row_max - d.row_min).max(0) as usize;
        if r >= height {
            return;
        }
        let width = (d.col_max - d.col_min).max(0) as usize;
        let off = d.pixel_offset as usize + r * width;
        if d.pixel_offset as usize + d.npix() > pixels_len {
            fail(status, p, Status::BadShape);
            return;
        }
        let view = stamp_view(&d, stamps, stamps_len, corners, ny, nx);
        let ccd = ccd_view(image, weight, nrow, ncol);
        let shape = d.shape(nwavetot);
        let x = core::slice::from_raw_parts(xflux.add(p * nmax), d.nunknown(nwavetot));
        let row = core::slice::from_raw_parts_mut(pixels.add(off), width);
        let code = pixel_chi2_row(
            &view,
            &ccd,
            &shape,
            d.col_min as i32,
            d.col_max as i32,
            x,
            psferr,
            r,
            row,
        );
        fail(status, p, code);
    }
}

/// chi2pix and pixmask_fraction: one thread per (patch, core spectrum c, core bin j) calls
/// [`core_pixel_sums`] on the window of [`pixel_rows`].
///
/// # Parameters
/// `descs`, `npatch`, `nspp_max`, `nwavetot`, `pad`, `nwavestep`, `stamps`, `stamps_len`,
/// `corners`, `ny`, `nx`, `image`, `weight`, `nrow`, `ncol`, `pixels`, `pixels_len`; outputs
/// `chi2pix`, `pixmask` `(npatch, nspp_max, nwavestep)`; `status`.
///
/// # Safety
/// All pointers valid for the documented sizes.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn pixel_core(
    descs: *const PatchDesc,
    npatch: usize,
    nspp_max: usize,
    nwavetot: usize,
    pad: usize,
    nwavestep: usize,
    stamps: *const f64,
    stamps_len: usize,
    corners: *const StampCorner,
    ny: usize,
    nx: usize,
    image: *const f64,
    weight: *const f64,
    nrow: usize,
    ncol: usize,
    pixels: *const f64,
    pixels_len: usize,
    chi2pix: *mut f64,
    pixmask: *mut f64,
    status: *mut u32,
) {
    let item = item_index();
    let per = nspp_max * nwavestep;
    let (p, cj) = (item / per, item % per);
    let (c, j) = (cj / nwavestep, cj % nwavestep);
    // SAFETY: each item writes only its own output element.
    unsafe {
        let Some(d) = live_patch(descs, status, npatch, p) else {
            return;
        };
        if c >= d.nspp as usize || j >= d.keep as usize {
            return;
        }
        let off = d.pixel_offset as usize;
        if off + d.npix() > pixels_len {
            fail(status, p, Status::BadShape);
            return;
        }
        let view = stamp_view(&d, stamps, stamps_len, corners, ny, nx);
        let ccd = ccd_view(image, weight, nrow, ncol);
        let shape = d.shape(nwavetot);
        let window = core::slice::from_raw_parts(pixels.add(off), d.npix());
        let (chi, masked) = core_pixel_sums(
            &view,
            &ccd,
            &shape,
            d.col_min as i32,
            d.col_max as i32,
            window,
            d.s_core as usize + c,
            pad + j,
        );
        chi2pix.add(item).write(chi);
        pixmask.add(item).write(masked);
    }
}

/// Regularization, banded Cholesky factorization and solve of one patch per thread block
/// (the cooperative version of [`factor_solve`], same parameters and results; the factor is
/// bitwise that of `band_factor`, the solve equal up to the order of the forward sums).
///
/// # Parameters
/// As [`factor_solve`]: `descs`, `npatch`, `nmax`, `nwavetot`, `band`/`band_len` (factored in
/// place), `rhs`, `fluxweight` `(npatch, nmax)`, `regularize_alpha` (α), output `xflux`
/// `(npatch, nmax)`, `status`.
///
/// # Launch contract
/// - grid `(npatch, 1, 1)`: block `blockIdx.x` solves patch `blockIdx.x`;
/// - block `(lanes, 1, 1)`, any `lanes >= 1`; 64 recommended (one lane per row of a column
///   for `kd <= 63`, e.g. kd = 58: 58 dot products per phase);
/// - dynamic shared memory of at least
///   `8 · (`[`band_factor_team_window_len`](crate::linalg::banded_team::band_factor_team_window_len)`(kd_max) + nmax)`
///   bytes (`kd_max` the largest `kd` of the batch): 8 · (3,955 + 518) = 35,784 bytes for
///   `kd = 58`, `nmax = 518` (below the default 48 KiB). A smaller allocation is not detected.
///
/// # Thread mapping
/// Thread `threadIdx.x` is lane `threadIdx.x` of a [`BlockTeam`]. Only this block writes the
/// patch's status (thread 0, at the end), so every thread reads the same entry value.
/// Phases: lane 0 regularizes (`regularize`) while all lanes copy `rhs` into shared memory;
/// then `band_factor_forward_team` (factor + forward substitution, `n + 3` phases) and
/// `band_back_solve_team` (`n + 2` phases); the lanes store `xflux`.
///
/// # Safety
/// All pointers valid for the documented sizes; the launch contract above.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn factor_solve_team(
    descs: *const PatchDesc,
    npatch: usize,
    nmax: usize,
    nwavetot: usize,
    band: *mut f64,
    band_len: usize,
    rhs: *const f64,
    fluxweight: *const f64,
    regularize_alpha: f64,
    xflux: *mut f64,
    status: *mut u32,
) {
    use crate::linalg::banded_team;
    // SAFETY: reading %ctaid.x and %tid.x has no preconditions.
    let (p, tid) = unsafe { (nvptx::_block_idx_x() as usize, nvptx::_thread_idx_x()) };
    if p >= npatch {
        return;
    }
    let team = BlockTeam;
    let lanes = team.lanes();
    let smem = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<f64>();
    // SAFETY: the block owns patch p's band matrix and vectors (one block per patch); the
    // launch provides band_factor_team_window_len(kd_max) + nmax f64 of dynamic shared memory,
    // used only by this block's lanes under the team's phase rule. Status is written only by
    // this block, after every read of it.
    unsafe {
        if status.add(p).read() != 0 {
            return;
        }
        let d = desc(descs, p);
        let n = d.nunknown(nwavetot);
        let kd = d.kd as usize;
        let off = d.band_offset as usize;
        if off + n * (kd + 1) > band_len || n > nmax {
            if tid == 0 {
                fail(status, p, Status::BadShape);
            }
            return;
        }
        let wlen = banded_team::band_factor_team_window_len(kd);
        let window = Shared::from_raw(smem, wlen);
        let x = Shared::from_raw(smem.add(wlen), n);
        let ab = Shared::from_raw(band.add(off), n * (kd + 1));
        let src = rhs.add(p * nmax);
        team.each(|lane| {
            if lane == 0 {
                // The only access to the band in this phase.
                let band = core::slice::from_raw_parts_mut(band.add(off), n * (kd + 1));
                let fw = core::slice::from_raw_parts(fluxweight.add(p * nmax), n);
                regularize(band, n, kd, fw, regularize_alpha);
            }
            let mut q = lane;
            while q < n {
                x.set(q, src.add(q).read());
                q += lanes;
            }
        });
        let mut code = banded_team::band_factor_forward_team(&team, ab, n, kd, window, x);
        if code == Status::Ok {
            code = banded_team::band_back_solve_team(&team, ab, n, kd, window, x);
        }
        if code == Status::Ok {
            let dst = xflux.add(p * nmax);
            team.each(|lane| {
                let mut q = lane;
                while q < n {
                    dst.add(q).write(x.get(q));
                    q += lanes;
                }
            });
        }
        if tid == 0 {
            fail(status, p, code);
        }
    }
}

/// Covariance block `C_bb` of one core spectrum per thread block (the cooperative version
/// of [`covariance`], same parameters; equal to it up to the order of the sums).
///
/// # Parameters
/// As [`covariance`]: `descs`, `npatch`, `nspp_max`, `nwavetot`, `band`/`band_len`
/// (factored), output `cov` `(npatch, nspp_max, nwavetot, nwavetot)`, `status`; `work` and
/// `work_stride` are not used.
///
/// # Launch contract
/// - grid `(npatch · nspp_max, 1, 1)`: block `item = patch · nspp_max + c`; blocks with
///   `c >= nspp` of their patch return;
/// - block `(lanes, 1, 1)`, any `lanes >= 1`; 128 recommended (per phase, the 74 columns of
///   8 new rows of `Y_b` and the 120 `5 × 5` tiles of the `C_bb` update for
///   `nwavetot = 74`, at most one of each per lane);
/// - dynamic shared memory of at least `8 · `
///   [`covariance_block_team_ring_len`](crate::linalg::banded_team::covariance_block_team_ring_len)`(nwavetot, kd_max, 1)`
///   bytes = `8 · (nwavetot + 16) · (max(kd_max, 8) + 8)`: 47,520 bytes for
///   `nwavetot = 74`, `kd_max = 58` (4 blocks per SM), above the default 48 KiB for larger
///   shapes: the host sets `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`. A smaller
///   allocation is not detected. `C_bb` is accumulated in place in `cov` (global memory).
///
/// # Thread mapping
/// Thread `threadIdx.x` is lane `threadIdx.x` of a [`BlockTeam`]. The patch status is read
/// by thread 0 and broadcast through shared memory (another block of the patch may write it
/// concurrently), so every thread of a block passes the same barriers.
///
/// # Safety
/// All pointers valid for the documented sizes; the launch contract above.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn covariance_team(
    descs: *const PatchDesc,
    npatch: usize,
    nspp_max: usize,
    nwavetot: usize,
    band: *const f64,
    band_len: usize,
    cov: *mut f64,
    _work: *mut f64,
    _work_stride: usize,
    status: *mut u32,
) {
    use crate::linalg::banded_team;
    // SAFETY: reading %ctaid.x and %tid.x has no preconditions.
    let (item, tid) = unsafe { (nvptx::_block_idx_x() as usize, nvptx::_thread_idx_x()) };
    let (p, c) = (item / nspp_max, item % nspp_max);
    if p >= npatch {
        return;
    }
    let team = BlockTeam;
    let block = nwavetot * nwavetot;
    let smem = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<f64>();
    // SAFETY: the launch provides covariance_block_team_ring_len(nwavetot, kd_max, 1) f64 of
    // dynamic shared memory, used only by this block's lanes under the team's phase rule;
    // each (patch, c) owns its output block (the accumulator); the band is only read.
    unsafe {
        let d = desc(descs, p);
        if c >= d.nspp as usize {
            return;
        }
        let flag = Shared::from_raw(smem, 1);
        // Broadcast the entry status (another block of the patch may write it meanwhile).
        team.each(|lane| {
            if lane == 0 {
                flag.set(0, status.add(p).read() as f64);
            }
        });
        let mut skip = false;
        team.each(|_| skip = flag.get(0) != 0.0);
        if skip {
            return;
        }
        let n = d.nunknown(nwavetot);
        let kd = d.kd as usize;
        let nblock = d.nspecpad as usize;
        let off = d.band_offset as usize;
        if off + n * (kd + 1) > band_len || nblock == 0 || n != nblock * nwavetot {
            if tid == 0 {
                fail(status, p, Status::BadShape);
            }
            return;
        }
        let ring_len = banded_team::covariance_block_team_ring_len(n, kd, nblock);
        let ring = Shared::from_raw(smem, ring_len);
        let ab = Shared::from_raw(band.add(off) as *mut f64, n * (kd + 1));
        let out = Shared::from_raw(cov.add(item * block), block);
        let code = banded_team::covariance_block_team(
            &team,
            ab,
            n,
            kd,
            nblock,
            d.s_core as usize + c,
            out,
            ring,
        );
        if tid == 0 {
            fail(status, p, code);
        }
    }
}
