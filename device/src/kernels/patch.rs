//! Per-patch entry points of the solve (`nvptx64-nvidia-cuda` only): thin shims that map
//! threads to patches, unknowns or core spectra and call the same functions as the CPU backend
//! (`crate::patch`, `crate::linalg`). No numerics live here. Each takes its argument struct of
//! [`super::args`] by value.
//!
//! Shared conventions of every kernel below (see [`PatchBatch`]):
//! - `batch.status`: a kernel skips patches whose status is not 0 and writes its own failure
//!   (several threads of one patch may race to write different non-zero codes: any of them is
//!   a failure, which is all the host needs);
//! - vectors of unknowns (`rhs`, `fluxweight`, `xflux`) have a stride of `nmax` f64 per patch;
//! - per-core-spectrum buffers have a stride of `nspp_max` blocks per patch;
//! - one-thread-per-item kernels take any 1-D grid with at least one thread per item (extra
//!   threads return); their `shape()` is the launch the host uses.

use core::arch::nvptx;

use super::args::{
    AssembleArgs, CovarianceArgs, FactorSolveArgs, MmaCheckArgs, PatchBatch, PixelCoreArgs,
    PixelRowsArgs, ResolutionArgs,
};
use super::thread;
use crate::linalg::newton_schulz::{self, BlockMmaTeam, MmaTeam};
use crate::linalg::newton_schulz_blocked;
use crate::linalg::{banded, banded_mma, banded_team, jacobi, jacobi_team};
use crate::patch::assemble_warp::{
    assemble_unknown_lane_rs, assemble_unknown_lane_slots, WarpExchange, DESI_SLOTS, MAX_PER_LANE,
    WARP_LANES,
};
use crate::patch::finalize_warp::{core_pixel_sums_lane, pixel_chi2_row_lane, CorePartial};
use crate::patch::{
    apply_resolution, assemble_unknown, core_pixel_sums, pixel_chi2_row, regularize,
    resolution_diagonals, CcdView, PatchDesc, PatchShape, StampView,
};
use crate::team::{BlockTeam, Shared, Team};
use crate::Status;

impl PatchBatch {
    /// The descriptor of patch `p`.
    ///
    /// # Safety
    /// `descs` valid for reads of `p + 1` descriptors.
    #[inline(always)]
    unsafe fn desc(&self, p: usize) -> PatchDesc {
        // SAFETY: guaranteed by the caller.
        unsafe { self.descs.add(p).read() }
    }

    /// The descriptor of patch `p` if a thread has work on it: `None` beyond the batch
    /// (`p >= npatch`) or for a patch that an earlier stage marked failed (non-zero status).
    ///
    /// # Safety
    /// `descs` and `status` valid for reads of `npatch` values.
    #[inline(always)]
    unsafe fn live(&self, p: usize) -> Option<PatchDesc> {
        // SAFETY: p < npatch (checked first) and the caller's guarantee.
        (p < self.npatch && unsafe { self.status.add(p).read() } == 0)
            .then(|| unsafe { self.desc(p) })
    }

    /// Records a failure of patch `p` (any non-zero code; [`Status::Ok`] writes nothing).
    ///
    /// # Safety
    /// `status` valid for writes of `p + 1` values.
    #[inline(always)]
    unsafe fn fail(&self, p: usize, code: Status) {
        if code != Status::Ok {
            // SAFETY: guaranteed by the caller.
            unsafe { self.status.add(p).write(code as u32) };
        }
    }
}

/// The work item of a thread or block of a per-patch kernel with `per_patch` items per patch:
/// `index = patch · per_patch + sub`.
#[derive(Clone, Copy)]
struct Item {
    index: usize,
    patch: usize,
    sub: usize,
}

impl Item {
    #[inline(always)]
    fn new(index: usize, per_patch: usize) -> Self {
        Item {
            index,
            patch: index / per_patch,
            sub: index % per_patch,
        }
    }
}

/// The prologue of the one-thread-per-item kernels: the calling thread's item, `per_patch`
/// items per patch (its patch may lie beyond the batch: check it with [`PatchBatch::live`]).
#[inline(always)]
fn thread_item(per_patch: usize) -> Item {
    Item::new(thread::global_index(), per_patch)
}

/// The prologue of the one-block-per-item kernels: the calling block's item (`per_patch`
/// items per patch), or `None` beyond the batch (the whole block returns).
#[inline(always)]
fn block_item(batch: &PatchBatch, per_patch: usize) -> Option<Item> {
    // SAFETY: reading %ctaid.x has no preconditions.
    let item = Item::new(unsafe { nvptx::_block_idx_x() } as usize, per_patch);
    (item.patch < batch.npatch).then_some(item)
}

/// `threadIdx.x`.
#[inline(always)]
fn thread_index() -> u32 {
    // SAFETY: reading %tid.x has no preconditions.
    unsafe { nvptx::_thread_idx_x() }
}

/// [`assume_global!`] of the pointers of the assemble kernels.
///
/// # Safety
/// They are device allocations.
#[inline(always)]
unsafe fn assume_assemble_global(args: &AssembleArgs) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        assume_global!(
            args.batch.descs,
            args.batch.status,
            args.stamps.stamps,
            args.stamps.corners,
            args.ccd.image,
            args.ccd.weight,
            args.band,
            args.rhs,
            args.fluxweight
        )
    };
}

/// The work of one unit (a thread of `assemble`, a warp of `assemble_warp`) of the assemble
/// kernels: unknown `q` of patch `p` with its views and output buffers.
struct Unknown<'a> {
    p: usize,
    q: usize,
    kd: usize,
    view: StampView<'a>,
    ccd: CcdView<'a>,
    shape: PatchShape,
    /// The patch's band matrix `(n, kd + 1)`.
    band: Shared,
    /// The patch's `(n,)` right-hand side.
    rhs: Shared,
    /// The patch's `(n,)` flux weights.
    fluxweight: Shared,
}

/// The prologue of `assemble` and `assemble_warp`: work unit `unit = p · nmax + q` (a thread,
/// a warp) runs `work` on unknown `q` of patch `p`; nothing for a unit beyond the batch or
/// beyond its patch's unknowns, and `bad_shape(p)` when patch `p`'s band matrix lies beyond
/// `band_len`. (Continuations rather than a returned enum: the views must not be merged with
/// other values, or the compiler loses their global address space.)
///
/// # Safety
/// The buffers of `args` valid for their documented sizes; the threads of a patch write
/// disjoint entries of the output views (the contract of the assemble functions).
#[inline(always)]
unsafe fn assemble_unit<B: FnOnce(usize), W: FnOnce(Unknown)>(
    args: &AssembleArgs,
    unit: usize,
    bad_shape: B,
    work: W,
) {
    let batch = &args.batch;
    let nwavetot = batch.nwavetot;
    let (p, q) = (unit / args.nmax, unit % args.nmax);
    if p >= batch.npatch {
        return;
    }
    // SAFETY: p < npatch; the caller guarantees the buffer sizes, and the views of the
    // outputs are shared by the patch's threads, which write disjoint entries.
    unsafe {
        let d = batch.desc(p);
        let n = d.nunknown(nwavetot);
        if q >= n {
            return;
        }
        let view = args.stamps.patch_view(&d);
        let ccd = args.ccd.view();
        let shape = d.shape(nwavetot);
        let kd = d.kd as usize;
        let off = d.band_offset as usize;
        let len = n * (kd + 1);
        if off + len > args.band_len {
            bad_shape(p);
            return;
        }
        work(Unknown {
            p,
            q,
            kd,
            view,
            ccd,
            shape,
            band: Shared::from_raw(args.band.add(off), len),
            rhs: Shared::from_raw(args.rhs.add(p * args.nmax), n),
            fluxweight: Shared::from_raw(args.fluxweight.add(p * args.nmax), n),
        });
    }
}

/// Normal equations: one thread per (patch, unknown) calls [`assemble_unknown`]
/// ([`AssembleArgs`]).
///
/// # Launch
/// [`AssembleArgs::shape`]: `item = patch * nmax + q`; threads with `q >= n` of their patch
/// return.
///
/// # Safety
/// All pointers valid for the documented sizes; outputs do not overlap inputs or each other.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn assemble(args: AssembleArgs) {
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_assemble_global(&args) };
    let batch = args.batch;
    // SAFETY: the caller's guarantee; each thread writes only the entries owned by its unknown
    // q (assemble_unknown's contract); p < npatch in both continuations.
    unsafe {
        assemble_unit(
            &args,
            thread::global_index(),
            |p| batch.fail(p, Status::BadShape),
            |u| {
                let code = assemble_unknown(
                    &u.view,
                    &u.ccd,
                    &u.shape,
                    u.kd,
                    u.q,
                    u.band,
                    u.rhs,
                    u.fluxweight,
                );
                batch.fail(u.p, code);
            },
        )
    };
}

extern "C" {
    /// `shfl.sync.bfly.b32`: the value of lane `laneid ^ lane_mask` among the lanes of `mask`.
    #[link_name = "llvm.nvvm.shfl.sync.bfly.i32"]
    fn shfl_bfly(mask: u32, value: i32, lane_mask: i32, clamp: i32) -> i32;
}

extern "C" {
    /// `vote.sync.ballot.b32`: bit `i` set when lane `i` of `mask` passes `pred = true`.
    #[link_name = "llvm.nvvm.vote.ballot.sync"]
    fn vote_ballot(mask: u32, pred: bool) -> u32;
}

/// The votes of the 32 lanes of the calling warp (bit `i`: lane `i` passed `true`).
///
/// # Safety
/// All 32 lanes of the warp must call it together (converged, uniform control flow).
#[inline(always)]
unsafe fn warp_ballot(hit: bool) -> u32 {
    // SAFETY: every lane of the full mask executes this vote (caller's guarantee).
    unsafe { vote_ballot(u32::MAX, hit) }
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

/// Normal equations, warp-cooperative: the same arguments and results as [`assemble`] (up
/// to the order of the sums), but one warp per (patch, unknown) runs
/// [`assemble_unknown_lane_slots`]: coalesced stamp and CCD loads, the stamp of `q1` times the
/// weights kept in registers ([`DESI_SLOTS`] per lane for stamps of up to 192 pixels, such as
/// DESI's 187, else [`MAX_PER_LANE`]), lane sums added by shuffles. `TooLarge` for stamps of
/// more than 256 pixels: use [`assemble`].
///
/// # Launch
/// [`AssembleArgs::warp_shape`]: blocks of 128 threads (any multiple of 32 works), i.e. 4
/// unknowns per block, at least `npatch · nmax` warps; no shared memory.
///
/// # Thread mapping
/// `warp = (blockIdx.x · blockDim.x + threadIdx.x) / 32`, `lane = threadIdx.x % 32`;
/// `warp = patch · nmax + q`; warps with `q >= n` of their patch or `patch >= npatch` return
/// as a whole (every shuffle is executed by all 32 lanes). Lane 0 writes `rhs`, `fluxweight`
/// and a failure status; lane `d % 32` writes the band entry `M[q + d][q]`.
///
/// # Safety
/// All pointers valid for the documented sizes; outputs do not overlap inputs or each other;
/// the launch shape above.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn assemble_warp(args: AssembleArgs) {
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_assemble_global(&args) };
    let thread = thread::global_index();
    let (warp, lane) = (thread / WARP_LANES, thread % WARP_LANES);
    let batch = args.batch;
    // SAFETY: the caller's guarantee. p and q are the same for the 32 lanes of a warp, so the
    // early returns leave whole warps and the shuffles of warp_sum are executed by all lanes.
    // Each lane writes only the entries that assemble_unknown_lane_slots assigns to (q, lane);
    // p < npatch in both continuations.
    unsafe {
        assemble_unit(
            &args,
            warp,
            |p| {
                if lane == 0 {
                    batch.fail(p, Status::BadShape);
                }
            },
            |u| {
                // DESI's stamps take 6 slots per lane; the shape is the same for the whole
                // launch, so every warp takes the same branch.
                let code = if u.view.ny * u.view.nx <= WARP_LANES * DESI_SLOTS {
                    assemble_unknown_lane_slots::<DESI_SLOTS, _>(
                        &u.view,
                        &u.ccd,
                        &u.shape,
                        u.kd,
                        u.q,
                        lane,
                        WARP_LANES,
                        u.band,
                        u.rhs,
                        u.fluxweight,
                        // All 32 lanes of the warp call the all-reduce together
                        // (assemble_unknown_lane_slots's contract).
                        |_, partial| warp_sum(partial),
                    )
                } else {
                    assemble_unknown_lane_slots::<MAX_PER_LANE, _>(
                        &u.view,
                        &u.ccd,
                        &u.shape,
                        u.kd,
                        u.q,
                        lane,
                        WARP_LANES,
                        u.band,
                        u.rhs,
                        u.fluxweight,
                        |_, partial| warp_sum(partial),
                    )
                };
                if lane == 0 {
                    batch.fail(u.p, code);
                }
            },
        )
    };
}

/// The calling warp's butterfly shuffle as a [`WarpExchange`] (two 32-bit shuffles per f64).
struct ShuffleWarp;

impl WarpExchange for ShuffleWarp {
    #[inline(always)]
    fn exchange(&mut self, value: f64, mask: u32) -> f64 {
        let bits = value.to_bits();
        // SAFETY: assemble_unknown_lane_rs calls the exchange with all 32 lanes of the warp
        // together, in uniform control flow (its contract; assemble_warp_rs's early returns
        // leave whole warps).
        let (lo, hi) = unsafe {
            (
                shfl_bfly(u32::MAX, bits as u32 as i32, mask as i32, 0x1f),
                shfl_bfly(u32::MAX, (bits >> 32) as u32 as i32, mask as i32, 0x1f),
            )
        };
        f64::from_bits(((hi as u32 as u64) << 32) | lo as u32 as u64)
    }
}

/// The work of one warp of [`assemble_warp_rs`] on unknown `u.q`: the status of
/// [`assemble_unknown_lane_rs`] with the 6-slot cache for stamps of up to 192 pixels, else
/// 8 slots. Inlined, so that the views keep their global address space.
#[inline(always)]
fn assemble_rs_unit(u: &Unknown, lane: usize) -> Status {
    if u.view.ny * u.view.nx <= WARP_LANES * DESI_SLOTS {
        assemble_unknown_lane_rs::<DESI_SLOTS, _>(
            &u.view,
            &u.ccd,
            &u.shape,
            u.kd,
            u.q,
            lane,
            u.band,
            u.rhs,
            u.fluxweight,
            &mut ShuffleWarp,
        )
    } else {
        assemble_unknown_lane_rs::<MAX_PER_LANE, _>(
            &u.view,
            &u.ccd,
            &u.shape,
            u.kd,
            u.q,
            lane,
            u.band,
            u.rhs,
            u.fluxweight,
            &mut ShuffleWarp,
        )
    }
}

/// [`assemble_warp`] with the band column reduced 16 entries at a time by a reduce-scatter
/// ([`assemble_unknown_lane_rs`]: 16 exchanges per 16 entries instead of 80): the same
/// arguments, launch, thread mapping and results, bitwise; the even lanes write the band.
///
/// # Safety
/// As [`assemble_warp`].
#[no_mangle]
pub unsafe extern "ptx-kernel" fn assemble_warp_rs(args: AssembleArgs) {
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_assemble_global(&args) };
    let thread = thread::global_index();
    let (warp, lane) = (thread / WARP_LANES, thread % WARP_LANES);
    let batch = args.batch;
    // SAFETY: as in assemble_warp: p and q are the same for the 32 lanes of a warp, so the
    // early returns leave whole warps and every exchange is executed by all lanes; each lane
    // writes only the entries that assemble_unknown_lane_rs assigns to (q, lane).
    unsafe {
        assemble_unit(
            &args,
            warp,
            |p| {
                if lane == 0 {
                    batch.fail(p, Status::BadShape);
                }
            },
            // Inlined (too large for LLVM to choose it): the views keep their global
            // address space.
            #[inline(always)]
            |u| {
                let code = assemble_rs_unit(&u, lane);
                if lane == 0 {
                    batch.fail(u.p, code);
                }
            },
        )
    };
}

/// Regularization, banded Cholesky factorization and solve: one thread per patch
/// ([`FactorSolveArgs`]).
///
/// # Launch
/// [`FactorSolveArgs::shape`]: thread `p` solves patch `p`.
///
/// # Safety
/// All pointers valid for the documented sizes.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn factor_solve(args: FactorSolveArgs) {
    let FactorSolveArgs {
        batch,
        nmax,
        band,
        band_len,
        rhs,
        fluxweight,
        regularize: alpha,
        xflux,
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_global!(batch.descs, batch.status, band, rhs, fluxweight, xflux) };
    let p = thread::global_index();
    // SAFETY: one thread per patch owns its band matrix and vectors.
    unsafe {
        let Some(d) = batch.live(p) else {
            return;
        };
        let n = d.nunknown(batch.nwavetot);
        let kd = d.kd as usize;
        let off = d.band_offset as usize;
        if off + n * (kd + 1) > band_len {
            batch.fail(p, Status::BadShape);
            return;
        }
        let band = core::slice::from_raw_parts_mut(band.add(off), n * (kd + 1));
        let fw = core::slice::from_raw_parts(fluxweight.add(p * nmax), n);
        regularize(band, n, kd, fw, alpha);
        let code = banded::band_factor(band, n, kd);
        if code != Status::Ok {
            batch.fail(p, code);
            return;
        }
        let x = core::slice::from_raw_parts_mut(xflux.add(p * nmax), n);
        x.copy_from_slice(core::slice::from_raw_parts(rhs.add(p * nmax), n));
        batch.fail(p, banded::band_solve(band, n, kd, x));
    }
}

/// Covariance blocks `C_bb` of the core spectra: one thread per (patch, core spectrum c)
/// ([`CovarianceArgs`]).
///
/// # Launch
/// [`CovarianceArgs::shape`]: `item = patch * nspp_max + c`; threads with `c >= nspp` return.
///
/// # Safety
/// All pointers valid for the documented sizes.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn covariance(args: CovarianceArgs) {
    let CovarianceArgs {
        batch,
        nspp_max,
        band,
        band_len,
        cov,
        work,
        work_stride,
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_global!(batch.descs, batch.status, band, cov, work) };
    let nwavetot = batch.nwavetot;
    let item = thread_item(nspp_max);
    // SAFETY: each (patch, c) owns its output block and scratch.
    unsafe {
        let Some(d) = batch.live(item.patch) else {
            return;
        };
        let (p, c) = (item.patch, item.sub);
        if c >= d.nspp as usize {
            return;
        }
        let n = d.nunknown(nwavetot);
        let kd = d.kd as usize;
        let off = d.band_offset as usize;
        let need = banded::band_covariance_blocks_work_len(n, kd, d.nspecpad as usize);
        if off + n * (kd + 1) > band_len || need > work_stride {
            batch.fail(p, Status::BadShape);
            return;
        }
        let ab = core::slice::from_raw_parts(band.add(off), n * (kd + 1));
        let block = nwavetot * nwavetot;
        let out = core::slice::from_raw_parts_mut(cov.add(item.index * block), block);
        let w = core::slice::from_raw_parts_mut(work.add(item.index * work_stride), work_stride);
        let code = banded::band_covariance_block_range(
            ab,
            n,
            kd,
            d.nspecpad as usize,
            d.s_core as usize + c,
            out,
            w,
        );
        batch.fail(p, code);
    }
}

/// Resolution of the core spectra: `Q = C_bb^(-1/2)` by Jacobi, `R = Q / rowsum`, ivar, flux
/// and the stored diagonals. One thread per (patch, core spectrum c) ([`ResolutionArgs`]).
///
/// # Launch
/// [`ResolutionArgs::shape`]: `item = patch * nspp_max + c`; threads with `c >= nspp` return.
///
/// # Safety
/// All pointers valid for the documented sizes.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn resolution(args: ResolutionArgs) {
    let ResolutionArgs {
        batch,
        nspp_max,
        nmax,
        ndiag,
        pad,
        nwavestep,
        cov,
        xflux,
        qbuf,
        work,
        work_stride,
        flux,
        ivar,
        rdiags,
        ..
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe {
        assume_global!(
            batch.descs,
            batch.status,
            cov,
            xflux,
            qbuf,
            work,
            flux,
            ivar,
            rdiags
        )
    };
    let nwavetot = batch.nwavetot;
    let item = thread_item(nspp_max);
    // SAFETY: each (patch, c) owns its scratch and output blocks.
    unsafe {
        let Some(d) = batch.live(item.patch) else {
            return;
        };
        let (p, c) = (item.patch, item.sub);
        if c >= d.nspp as usize {
            return;
        }
        if jacobi::inverse_sqrt_work_len(nwavetot) > work_stride {
            batch.fail(p, Status::BadShape);
            return;
        }
        let block = nwavetot * nwavetot;
        let a = core::slice::from_raw_parts(cov.add(item.index * block), block);
        let q = core::slice::from_raw_parts_mut(qbuf.add(item.index * block), block);
        let w = core::slice::from_raw_parts_mut(work.add(item.index * work_stride), work_stride);
        let code = jacobi::inverse_sqrt(a, nwavetot, q, w);
        if code != Status::Ok {
            batch.fail(p, code);
            return;
        }
        let s = d.s_core as usize + c;
        let n = d.nunknown(nwavetot);
        let x = core::slice::from_raw_parts(xflux.add(p * nmax + s), n - s);
        let f = core::slice::from_raw_parts_mut(flux.add(item.index * nwavetot), nwavetot);
        let iv = core::slice::from_raw_parts_mut(ivar.add(item.index * nwavetot), nwavetot);
        let code = apply_resolution(q, nwavetot, x, d.nspecpad as usize, f, iv);
        if code != Status::Ok {
            batch.fail(p, code);
            return;
        }
        let ndiagonal = 2 * ndiag + 1;
        let rd = core::slice::from_raw_parts_mut(
            rdiags.add(item.index * ndiagonal * nwavestep),
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
        batch.fail(p, code);
    }
}

/// Resolution of the core spectra, cooperatively: the same arguments and outputs as
/// [`resolution`] (`qbuf`, `work` and `work_stride` are unused and may be a 1-element buffer
/// and 0), but one thread block per (patch, core spectrum c) runs
/// [`jacobi_team::resolution_team`] on the covariance block copied into shared memory.
///
/// # Launch
/// [`ResolutionArgs::team_shape`]`(lanes)`:
/// - grid `(npatch · nspp_max, 1, 1)`: block `item = patch · nspp_max + c`; blocks with
///   `c >= nspp` of their patch return at once;
/// - block `(lanes, 1, 1)`, any `lanes >= 1` (96 by default; the Jacobi steps use
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
/// All pointers valid for the documented sizes; the launch shape above.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn resolution_team(args: ResolutionArgs) {
    let ResolutionArgs {
        batch,
        nspp_max,
        nmax,
        ndiag,
        pad,
        nwavestep,
        cov,
        xflux,
        flux,
        ivar,
        rdiags,
        block_state,
        ..
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_global!(batch.descs, batch.status, cov, xflux, flux, ivar, rdiags) };
    let nwavetot = batch.nwavetot;
    let Some(item) = block_item(&batch, nspp_max) else {
        return;
    };
    // A block that `resolution_ns` solved (the whole block returns: the value is the same
    // for every thread).
    // SAFETY: block_state, when not null, holds npatch · nspp_max values (the contract).
    if !block_state.is_null() && unsafe { block_state.add(item.index).read() } == 1 {
        return;
    }
    let (p, c) = (item.patch, item.sub);
    let team = BlockTeam;
    let lanes = team.lanes();
    let block = nwavetot * nwavetot;
    let smem = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<f64>();
    // SAFETY: the launch provides resolution_team_shared_len(nwavetot, lanes) f64 of dynamic
    // shared memory (launch shape), used only by this block's lanes under the team's phase
    // rule; the descriptor, status, cov, xflux and output accesses are within the documented
    // sizes, and each (patch, c) owns its output rows.
    unsafe {
        let d = batch.desc(p);
        if c >= d.nspp as usize {
            return;
        }
        let a = Shared::from_raw(smem, block);
        let scratch = Shared::from_raw(
            smem.add(block),
            jacobi_team::jacobi_team_scratch_len(nwavetot, lanes),
        );
        let src = cov.add(item.index * block);
        team.each(|lane| {
            if lane == 0 {
                scratch.set(0, batch.status.add(p).read() as f64);
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
            Shared::from_raw(flux.add(item.index * nwavetot), nwavetot),
            Shared::from_raw(ivar.add(item.index * nwavetot), nwavetot),
            Shared::from_raw(
                rdiags.add(item.index * ndiagonal * nwavestep),
                ndiagonal * nwavestep,
            ),
            nwavestep,
            scratch,
            &mut stats,
        );
        if thread_index() == 0 {
            batch.fail(p, code);
        }
    }
}

/// Jacobi inverse square root and resolution by Newton–Schulz on FP64 tensor cores: one thread
/// block of [`newton_schulz::NS_WARPS`] warps per (patch, core spectrum) runs
/// [`newton_schulz::resolution_ns`] on the covariance block read from global memory; the same
/// outputs as [`resolution_team`], for the blocks it solves. It never fails a patch: a block it
/// cannot solve (not converged, κ beyond its range, non-finite) gets `block_state` 0 and is
/// left to `resolution_team`, launched next with the same arguments; every other block gets 1
/// (also those of a patch an earlier stage failed). `ns_counts` adds the solved and left blocks.
///
/// # Launch
/// [`ResolutionArgs::ns_shape`]: `blockIdx.x = patch · nspp_max + c`, 512 threads,
/// `8 · NS_SHARED_LEN` bytes of dynamic shared memory; `nwavetot <= 80`.
///
/// # Safety
/// As [`resolution_team`], with `block_state` valid for `npatch · nspp_max` and `ns_counts`
/// for 2 values (neither null).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn resolution_ns(args: ResolutionArgs) {
    // SAFETY: the caller's contract is resolution_ns_body's.
    unsafe { resolution_ns_body::<false>(args) }
}

/// [`resolution_ns`] with the `ns2` iteration ([`newton_schulz_blocked::resolution_ns2`]:
/// register-blocked products, 3 barriers per iteration, optimistic first schedule): the same
/// arguments, launch, block states and counters (`DESI_EIGH_KERNEL=ns2`).
///
/// # Safety
/// As [`resolution_ns`].
#[no_mangle]
pub unsafe extern "ptx-kernel" fn resolution_ns2(args: ResolutionArgs) {
    // SAFETY: the caller's contract is resolution_ns_body's.
    unsafe { resolution_ns_body::<true>(args) }
}

/// The body of [`resolution_ns`] (`NS2 = false`: [`newton_schulz::resolution_ns`]) and
/// [`resolution_ns2`] (`NS2 = true`: [`newton_schulz_blocked::resolution_ns2`]; same
/// arguments and statuses).
///
/// # Safety
/// As [`resolution_ns`].
#[inline(always)]
unsafe fn resolution_ns_body<const NS2: bool>(args: ResolutionArgs) {
    let ResolutionArgs {
        batch,
        nspp_max,
        nmax,
        ndiag,
        pad,
        nwavestep,
        cov,
        xflux,
        flux,
        ivar,
        rdiags,
        block_state,
        ns_counts,
        ..
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe {
        assume_global!(
            batch.descs,
            batch.status,
            cov,
            xflux,
            flux,
            ivar,
            rdiags,
            block_state,
            ns_counts
        )
    };
    let nwavetot = batch.nwavetot;
    let Some(item) = block_item(&batch, nspp_max) else {
        return;
    };
    let (p, c) = (item.patch, item.sub);
    let team = BlockMmaTeam;
    let block = nwavetot * nwavetot;
    let smem = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<f64>();
    let first = thread_index() == 0;
    // SAFETY: the launch provides NS_SHARED_LEN f64 of dynamic shared memory, used by this
    // block's threads under the team's phase rule; descriptor, status, cov, xflux, outputs,
    // block_state and ns_counts are within the documented sizes, and each (patch, c) owns its
    // output rows and state.
    unsafe {
        let d = batch.desc(p);
        if c >= d.nspp as usize {
            return;
        }
        // Nothing to do for a failed patch (the status does not change during this kernel:
        // resolution_ns never writes it; every thread reads the same value).
        if batch.status.add(p).read() != 0 {
            if first {
                block_state.add(item.index).write(1);
            }
            return;
        }
        let mut solved = false;
        if nwavetot <= newton_schulz::NS_ORDER_MAX && team.warps() >= newton_schulz::NS_WARPS {
            let src = cov.add(item.index * block);
            let s = d.s_core as usize + c;
            let n = d.nunknown(nwavetot);
            let x = core::slice::from_raw_parts(xflux.add(p * nmax + s), n - s);
            let ndiagonal = 2 * ndiag + 1;
            let mut stats = newton_schulz::NsStats::default();
            let read = move |e: usize| src.add(e).read();
            let (xflux, diagonals, outputs) = (
                (x, d.nspecpad as usize),
                (ndiag, pad, pad + d.keep as usize),
                (
                    Shared::from_raw(flux.add(item.index * nwavetot), nwavetot),
                    Shared::from_raw(ivar.add(item.index * nwavetot), nwavetot),
                    Shared::from_raw(
                        rdiags.add(item.index * ndiagonal * nwavestep),
                        ndiagonal * nwavestep,
                    ),
                    nwavestep,
                ),
            );
            let smem = Shared::from_raw(smem, newton_schulz::NS_SHARED_LEN);
            let (order, stats) = (nwavetot, &mut stats);
            let code = if NS2 {
                newton_schulz_blocked::resolution_ns2(
                    &team, read, order, xflux, diagonals, outputs, smem, stats,
                )
            } else {
                newton_schulz::resolution_ns(
                    &team, read, order, xflux, diagonals, outputs, smem, stats,
                )
            };
            solved = code == Status::Ok;
        }
        if first {
            block_state.add(item.index).write(solved as u32);
            let counter = ns_counts.add(if solved { 0 } else { 1 });
            core::sync::atomic::AtomicU32::from_ptr(counter)
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// One DMMA of one warp ([`MmaCheckArgs`]): lane `l` loads `A[l/4][l%4]`, `B[l%4][l/4]` and
/// `C[l/4][2(l%4) + i]`, runs [`BlockMmaTeam`]'s `mma` and stores `D` at the places of `C`.
///
/// # Launch
/// [`MmaCheckArgs::shape`]: one block of 32 threads.
///
/// # Safety
/// `a`, `b` valid for 32 reads, `c` for 64 reads, `d` for 64 writes.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mma_check(args: MmaCheckArgs) {
    let MmaCheckArgs { a, b, c, d } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_global!(a, b, c, d) };
    let lane = thread_index() as usize;
    if lane >= 32 {
        return;
    }
    let (g, t) = (lane / 4, lane % 4);
    // SAFETY: the indices are below 32 (a, b) and 64 (c, d), the documented sizes; all 32
    // lanes reach the mma.
    unsafe {
        let va = a.add(g * 4 + t).read();
        let vb = b.add(t * 8 + g).read();
        let vc = [c.add(g * 8 + 2 * t).read(), c.add(g * 8 + 2 * t + 1).read()];
        let [[d0, d1]] = BlockMmaTeam.mma([va], [vb], [vc]);
        d.add(g * 8 + 2 * t).write(d0);
        d.add(g * 8 + 2 * t + 1).write(d1);
    }
}

/// χ²_pix of the kept window: one thread per (patch, window row) calls [`pixel_chi2_row`]
/// ([`PixelRowsArgs`]).
///
/// # Launch
/// [`PixelRowsArgs::shape`]: `item = patch * max_rows + r`; threads with
/// `r >= row_max - row_min` return.
///
/// # Safety
/// All pointers valid for the documented sizes.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn pixel_rows(args: PixelRowsArgs) {
    let PixelRowsArgs {
        batch,
        max_rows,
        nmax,
        stamps,
        ccd,
        xflux,
        psferr,
        pixels,
        pixels_len,
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe {
        assume_global!(
            batch.descs,
            batch.status,
            stamps.stamps,
            stamps.corners,
            ccd.image,
            ccd.weight,
            xflux,
            pixels
        )
    };
    let nwavetot = batch.nwavetot;
    let item = thread_item(max_rows);
    // SAFETY: each (patch, row) owns its row of the window scratch.
    unsafe {
        let Some(d) = batch.live(item.patch) else {
            return;
        };
        let (p, r) = (item.patch, item.sub);
        let height = (d.row_max - d.row_min).max(0) as usize;
        if r >= height {
            return;
        }
        let width = (d.col_max - d.col_min).max(0) as usize;
        let off = d.pixel_offset as usize + r * width;
        if d.pixel_offset as usize + d.npix() > pixels_len {
            batch.fail(p, Status::BadShape);
            return;
        }
        let view = stamps.patch_view(&d);
        let ccd = ccd.view();
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
        batch.fail(p, code);
    }
}

/// chi2pix and pixmask_fraction: one thread per (patch, core spectrum c, core bin j) calls
/// [`core_pixel_sums`] on the window of [`pixel_rows`] ([`PixelCoreArgs`]).
///
/// # Launch
/// [`PixelCoreArgs::shape`]: `item = (patch * nspp_max + c) * nwavestep + j`; threads with
/// `c >= nspp` or `j >= keep` return.
///
/// # Safety
/// All pointers valid for the documented sizes.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn pixel_core(args: PixelCoreArgs) {
    let PixelCoreArgs {
        batch,
        nspp_max,
        pad,
        nwavestep,
        stamps,
        ccd,
        pixels,
        pixels_len,
        chi2pix,
        pixmask,
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe {
        assume_global!(
            batch.descs,
            batch.status,
            stamps.stamps,
            stamps.corners,
            ccd.image,
            ccd.weight,
            pixels,
            chi2pix,
            pixmask
        )
    };
    let per = nspp_max * nwavestep;
    let item = thread_item(per);
    let (p, cj) = (item.patch, item.sub);
    let (c, j) = (cj / nwavestep, cj % nwavestep);
    // SAFETY: each item writes only its own output element.
    unsafe {
        let Some(d) = batch.live(p) else {
            return;
        };
        if c >= d.nspp as usize || j >= d.keep as usize {
            return;
        }
        let off = d.pixel_offset as usize;
        if off + d.npix() > pixels_len {
            batch.fail(p, Status::BadShape);
            return;
        }
        let view = stamps.patch_view(&d);
        let ccd = ccd.view();
        let shape = d.shape(batch.nwavetot);
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
        chi2pix.add(item.index).write(chi);
        pixmask.add(item.index).write(masked);
    }
}

/// χ²_pix of the kept window, warp-cooperative: the same arguments and results as
/// [`pixel_rows`] (bitwise), one warp per (patch, window row) running
/// [`pixel_chi2_row_lane`]: lanes over the row's columns, coalesced stamp-row, image, weight
/// and window accesses, the row's model in registers; the stamps that cover the row are found
/// 32 unknowns at a time by a warp vote.
///
/// # Launch
/// [`PixelRowsArgs::warp_shape`]: blocks of 128 threads (any multiple of 32 works),
/// `warp = patch · max_rows + r`; warps with `r >= row_max − row_min` of their patch or
/// `patch >= npatch` return as a whole (every vote is executed by all 32 lanes).
///
/// # Safety
/// All pointers valid for the documented sizes; the launch shape above.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn pixel_rows_warp(args: PixelRowsArgs) {
    let PixelRowsArgs {
        batch,
        max_rows,
        nmax,
        stamps,
        ccd,
        xflux,
        psferr,
        pixels,
        pixels_len,
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe {
        assume_global!(
            batch.descs,
            batch.status,
            stamps.stamps,
            stamps.corners,
            ccd.image,
            ccd.weight,
            xflux,
            pixels
        )
    };
    let nwavetot = batch.nwavetot;
    let thread = thread::global_index();
    let lane = thread % WARP_LANES;
    let item = Item::new(thread / WARP_LANES, max_rows);
    // SAFETY: each (patch, row) owns its row of the window scratch, and each lane the columns
    // pixel_chi2_row_lane assigns to it. Every early return depends on the warp's (patch, row)
    // only, so the votes run on all 32 lanes.
    unsafe {
        let Some(d) = batch.live(item.patch) else {
            return;
        };
        let (p, r) = (item.patch, item.sub);
        let height = (d.row_max - d.row_min).max(0) as usize;
        if r >= height {
            return;
        }
        let width = (d.col_max - d.col_min).max(0) as usize;
        if d.pixel_offset as usize + d.npix() > pixels_len {
            batch.fail(p, Status::BadShape);
            return;
        }
        let view = stamps.patch_view(&d);
        let ccd = ccd.view();
        let shape = d.shape(nwavetot);
        let x = core::slice::from_raw_parts(xflux.add(p * nmax), d.nunknown(nwavetot));
        let row = Shared::from_raw(pixels.add(d.pixel_offset as usize + r * width), width);
        let code = pixel_chi2_row_lane(
            &view,
            &ccd,
            &shape,
            d.col_min as i32,
            d.col_max as i32,
            x,
            psferr,
            r,
            lane,
            WARP_LANES,
            row,
            // All 32 lanes of the warp vote together (pixel_chi2_row_lane's contract).
            |_, hit| warp_ballot(hit),
        );
        batch.fail(p, code);
    }
}

/// chi2pix and pixmask_fraction, warp-cooperative: the same arguments and results as
/// [`pixel_core`] (up to the order of the sums), one warp per (patch, core spectrum c, core
/// bin j) running [`core_pixel_sums_lane`] (lanes over the stamp's pixels: coalesced stamp,
/// window and weight loads) and adding the lanes' sums by shuffles.
///
/// # Launch
/// [`PixelCoreArgs::warp_shape`]: blocks of 128 threads (any multiple of 32 works),
/// `warp = (patch · nspp_max + c) · nwavestep + j`; warps with `c >= nspp` or `j >= keep` of
/// their patch or `patch >= npatch` return as a whole (every shuffle is executed by all 32
/// lanes). Lane 0 writes the outputs.
///
/// # Safety
/// All pointers valid for the documented sizes; the launch shape above.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn pixel_core_warp(args: PixelCoreArgs) {
    let PixelCoreArgs {
        batch,
        nspp_max,
        pad,
        nwavestep,
        stamps,
        ccd,
        pixels,
        pixels_len,
        chi2pix,
        pixmask,
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe {
        assume_global!(
            batch.descs,
            batch.status,
            stamps.stamps,
            stamps.corners,
            ccd.image,
            ccd.weight,
            pixels,
            chi2pix,
            pixmask
        )
    };
    let thread = thread::global_index();
    let lane = thread % WARP_LANES;
    let item = Item::new(thread / WARP_LANES, nspp_max * nwavestep);
    let (p, cj) = (item.patch, item.sub);
    let (c, j) = (cj / nwavestep, cj % nwavestep);
    // SAFETY: every test below depends on the warp's item only (whole warps return, so the
    // shuffles of warp_sum run on all 32 lanes); lane 0 writes the item's own outputs.
    unsafe {
        let Some(d) = batch.live(p) else {
            return;
        };
        if c >= d.nspp as usize || j >= d.keep as usize {
            return;
        }
        let off = d.pixel_offset as usize;
        if off + d.npix() > pixels_len {
            if lane == 0 {
                batch.fail(p, Status::BadShape);
            }
            return;
        }
        let view = stamps.patch_view(&d);
        let ccd = ccd.view();
        let shape = d.shape(batch.nwavetot);
        let window = core::slice::from_raw_parts(pixels.add(off), d.npix());
        let part = core_pixel_sums_lane(
            &view,
            &ccd,
            &shape,
            d.col_min as i32,
            d.col_max as i32,
            window,
            d.s_core as usize + c,
            pad + j,
            lane,
            WARP_LANES,
        );
        let total = CorePartial {
            num: warp_sum(part.num),
            den: warp_sum(part.den),
            masked: warp_sum(part.masked),
        };
        if lane == 0 {
            let (chi, masked) = total.finish();
            chi2pix.add(item.index).write(chi);
            pixmask.add(item.index).write(masked);
        }
    }
}

/// Regularization, banded Cholesky factorization and solve of one patch per thread block
/// (the cooperative version of [`factor_solve`], same arguments and results; the factor is
/// bitwise that of `band_factor`, the solve equal up to the order of the forward sums and
/// the diagonal's reciprocals).
///
/// # Launch
/// [`FactorSolveArgs::team_shape`]`(lanes, kd_max)`:
/// - grid `(npatch, 1, 1)`: block `blockIdx.x` solves patch `blockIdx.x`;
/// - block `(lanes, 1, 1)`, any `lanes >= 1`; 64 recommended (one lane per row of a column
///   for `kd <= 63`, e.g. kd = 58: 58 dot products per phase);
/// - dynamic shared memory of at least
///   `8 · (`[`band_factor_team_window_len`](banded_team::band_factor_team_window_len)`(kd_max) + nmax)`
///   bytes (`kd_max` the largest `kd` of the batch): 8 · (3,971 + 518) = 35,912 bytes for
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
/// All pointers valid for the documented sizes; the launch shape above.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn factor_solve_team(args: FactorSolveArgs) {
    // SAFETY: the kernel's contract.
    unsafe { factor_solve_team_body::<false>(args) }
}

/// [`factor_solve_team`] with the blocked back substitution
/// ([`banded_team::band_back_solve_blocked_team`]: 8 unknowns per phase, `ceil(n / 8) + 1`
/// phases instead of `n + 2`); the same launch, the same factor, `xflux` equal up to the order
/// of the back substitution's sums.
///
/// # Safety
/// As [`factor_solve_team`].
#[no_mangle]
pub unsafe extern "ptx-kernel" fn factor_solve_blocked(args: FactorSolveArgs) {
    // SAFETY: the kernel's contract.
    unsafe { factor_solve_team_body::<true>(args) }
}

/// The body of [`factor_solve_team`] (`BLOCKED`: of [`factor_solve_blocked`]).
///
/// # Safety
/// As [`factor_solve_team`].
#[inline(always)]
unsafe fn factor_solve_team_body<const BLOCKED: bool>(args: FactorSolveArgs) {
    let FactorSolveArgs {
        batch,
        nmax,
        band,
        band_len,
        rhs,
        fluxweight,
        regularize: alpha,
        xflux,
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_global!(batch.descs, batch.status, band, rhs, fluxweight, xflux) };
    let tid = thread_index();
    let Some(item) = block_item(&batch, 1) else {
        return;
    };
    let p = item.patch;
    let team = BlockTeam;
    let lanes = team.lanes();
    let smem = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<f64>();
    // SAFETY: the block owns patch p's band matrix and vectors (one block per patch); the
    // launch provides band_factor_team_window_len(kd_max) + nmax f64 of dynamic shared memory,
    // used only by this block's lanes under the team's phase rule. Status is written only by
    // this block, after every read of it.
    unsafe {
        if batch.status.add(p).read() != 0 {
            return;
        }
        let d = batch.desc(p);
        let n = d.nunknown(batch.nwavetot);
        let kd = d.kd as usize;
        let off = d.band_offset as usize;
        if off + n * (kd + 1) > band_len || n > nmax {
            if tid == 0 {
                batch.fail(p, Status::BadShape);
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
                regularize(band, n, kd, fw, alpha);
            }
            let mut q = lane;
            while q < n {
                x.set(q, src.add(q).read());
                q += lanes;
            }
        });
        let mut code = banded_team::band_factor_forward_team(&team, ab, n, kd, window, x);
        if code == Status::Ok {
            code = if BLOCKED {
                banded_team::band_back_solve_blocked_team(&team, ab, n, kd, window, x)
            } else {
                banded_team::band_back_solve_team(&team, ab, n, kd, window, x)
            };
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
            batch.fail(p, code);
        }
    }
}

/// Covariance block `C_bb` of one core spectrum per thread block (the cooperative version
/// of [`covariance`], same arguments; equal to it up to the order of the sums; `work` and
/// `work_stride` are not used).
///
/// # Launch
/// [`CovarianceArgs::team_shape`]`(lanes, kd_max)`:
/// - grid `(npatch · nspp_max, 1, 1)`: block `item = patch · nspp_max + c`; blocks with
///   `c >= nspp` of their patch return;
/// - block `(lanes, 1, 1)`, any `lanes >= 1`; 128 recommended (per phase, the 74 columns of
///   8 new rows of `Y_b` and the 120 `5 × 5` tiles of the `C_bb` update for
///   `nwavetot = 74`, at most one of each per lane);
/// - dynamic shared memory of at least `8 · `
///   [`covariance_block_team_ring_len`](banded_team::covariance_block_team_ring_len)`(nwavetot, kd_max, 1)`
///   bytes = `8 · ((nwavetot + 16) · (max(kd_max, 8) + 8) + 1)`: 47,528 bytes for
///   `nwavetot = 74`, `kd_max = 58` (4 blocks per SM), above the default 48 KiB for larger
///   shapes: the host sets `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`. A smaller
///   allocation is not detected. `C_bb` is accumulated in `cov` (global memory; tile-major,
///   reordered to row-major at the end).
///
/// # Thread mapping
/// Thread `threadIdx.x` is lane `threadIdx.x` of a [`BlockTeam`]. The patch status is read
/// by thread 0 and broadcast through shared memory (another block of the patch may write it
/// concurrently), so every thread of a block passes the same barriers.
///
/// # Safety
/// All pointers valid for the documented sizes; the launch shape above.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn covariance_team(args: CovarianceArgs) {
    // SAFETY: the kernel's contract.
    unsafe { covariance_team_body::<false>(args) }
}

/// [`covariance_team`] with the shared-memory work of its phase loop on 32-bit shared-memory
/// addresses ([`banded_team::covariance_block_team_lds`]: `ld.shared` instead of generic
/// loads, 32-bit index arithmetic, the ring wrap out of the inner loops): bitwise the same
/// results, the same launch (`DESI_BAND_KERNEL=team-lds`).
///
/// # Safety
/// As [`covariance_team`].
#[no_mangle]
pub unsafe extern "ptx-kernel" fn covariance_team_lds(args: CovarianceArgs) {
    // SAFETY: the kernel's contract.
    unsafe { covariance_team_body::<true>(args) }
}

/// The body of [`covariance_team`] and (`LDS`) [`covariance_team_lds`].
///
/// # Safety
/// As [`covariance_team`].
#[inline(always)]
unsafe fn covariance_team_body<const LDS: bool>(args: CovarianceArgs) {
    let CovarianceArgs {
        batch,
        nspp_max,
        band,
        band_len,
        cov,
        ..
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_global!(batch.descs, batch.status, band, cov) };
    let nwavetot = batch.nwavetot;
    let tid = thread_index();
    let Some(item) = block_item(&batch, nspp_max) else {
        return;
    };
    let (p, c) = (item.patch, item.sub);
    let team = BlockTeam;
    let block = nwavetot * nwavetot;
    let smem = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<f64>();
    // SAFETY: the launch provides covariance_block_team_ring_len(nwavetot, kd_max, 1) f64 of
    // dynamic shared memory, used only by this block's lanes under the team's phase rule;
    // each (patch, c) owns its output block (the accumulator); the band is only read.
    unsafe {
        let d = batch.desc(p);
        if c >= d.nspp as usize {
            return;
        }
        let flag = Shared::from_raw(smem, 1);
        // Broadcast the entry status (another block of the patch may write it meanwhile).
        team.each(|lane| {
            if lane == 0 {
                flag.set(0, batch.status.add(p).read() as f64);
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
                batch.fail(p, Status::BadShape);
            }
            return;
        }
        let ring_len = banded_team::covariance_block_team_ring_len(n, kd, nblock);
        let ring = Shared::from_raw(smem, ring_len);
        let ab = Shared::from_raw(band.add(off) as *mut f64, n * (kd + 1));
        let out = Shared::from_raw(cov.add(item.index * block), block);
        let block_index = d.s_core as usize + c;
        // (`ring` is the launch's dynamic shared memory, as covariance_block_team_lds needs.)
        let code = if LDS {
            banded_team::covariance_block_team_lds(&team, ab, n, kd, nblock, block_index, out, ring)
        } else {
            banded_team::covariance_block_team(&team, ab, n, kd, nblock, block_index, out, ring)
        };
        if tid == 0 {
            batch.fail(p, code);
        }
    }
}

/// Covariance block `C_bb` of one core spectrum per thread block of warps, with its products
/// on FP64 tensor cores ([`banded_mma::covariance_block_mma`]): the same arguments and results
/// as [`covariance_team`] (equal up to the order of the sums; `work` and `work_stride` are not
/// used).
///
/// # Launch
/// [`CovarianceArgs::mma_shape`]`(warps, kd_max)`:
/// - grid `(npatch · nspp_max, 1, 1)`: block `item = patch · nspp_max + c`; blocks with
///   `c >= nspp` of their patch return;
/// - block `(32 · warps, 1, 1)`, `COV_MMA_WARPS <= warps <= COV_MMA_MAX_WARPS` (8 to 16;
///   otherwise the patch fails with `BadShape`);
/// - dynamic shared memory of at least `8 · `
///   [`covariance_block_mma_smem_len`](banded_mma::covariance_block_mma_smem_len)`(nwavetot, kd_max, 1, warps)`
///   bytes (56,960 for `nwavetot = 74`, `kd_max = 58`, 8 warps; the host raises the 48 KiB
///   default); `nwavetot <= 80` (otherwise `BadShape`). A smaller allocation is not detected.
///
/// # Thread mapping
/// Thread `threadIdx.x` is lane `threadIdx.x % 32` of warp `threadIdx.x / 32` of a
/// [`BlockMmaTeam`]. The patch status is read by thread 0 and broadcast through shared memory
/// (another block of the patch may write it concurrently), so every thread of a block passes
/// the same barriers.
///
/// # Safety
/// All pointers valid for the documented sizes; the launch shape above.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn covariance_mma(args: CovarianceArgs) {
    // SAFETY: the kernel's contract.
    unsafe { covariance_mma_body::<true>(args) }
}

/// [`covariance_mma`] with the next group of `L` staged at the end of each phase instead of
/// through registers (fewer registers and spills, the global-memory latency not overlapped;
/// the same results): `DESI_BAND_KERNEL=mma-late`.
///
/// # Safety
/// As [`covariance_mma`].
#[no_mangle]
pub unsafe extern "ptx-kernel" fn covariance_mma_late(args: CovarianceArgs) {
    // SAFETY: the kernel's contract.
    unsafe { covariance_mma_body::<false>(args) }
}

/// The body of [`covariance_mma`] (`PREFETCH`) and [`covariance_mma_late`].
///
/// # Safety
/// As [`covariance_mma`].
#[inline(always)]
unsafe fn covariance_mma_body<const PREFETCH: bool>(args: CovarianceArgs) {
    let CovarianceArgs {
        batch,
        nspp_max,
        band,
        band_len,
        cov,
        ..
    } = args;
    // SAFETY: device allocations of the host (the kernel's contract).
    unsafe { assume_global!(batch.descs, batch.status, band, cov) };
    let nwavetot = batch.nwavetot;
    let tid = thread_index();
    let Some(item) = block_item(&batch, nspp_max) else {
        return;
    };
    let (p, c) = (item.patch, item.sub);
    let team = BlockMmaTeam;
    let block = nwavetot * nwavetot;
    let smem = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<f64>();
    // SAFETY: the launch provides covariance_block_mma_smem_len(nwavetot, kd_max, 1, warps)
    // f64 of dynamic shared memory, used only by this block's threads under the team's phase
    // rule; each (patch, c) owns its output block; the band is only read.
    unsafe {
        let d = batch.desc(p);
        if c >= d.nspp as usize {
            return;
        }
        let flag = Shared::from_raw(smem, 1);
        // Broadcast the entry status (another block of the patch may write it meanwhile).
        MmaTeam::each(&team, |_, _| {
            if tid == 0 {
                flag.set(0, batch.status.add(p).read() as f64);
            }
        });
        let mut skip = false;
        MmaTeam::each(&team, |_, _| skip = flag.get(0) != 0.0);
        if skip {
            return;
        }
        let n = d.nunknown(nwavetot);
        let kd = d.kd as usize;
        let nblock = d.nspecpad as usize;
        let off = d.band_offset as usize;
        if off + n * (kd + 1) > band_len || nblock == 0 || n != nblock * nwavetot {
            if tid == 0 {
                batch.fail(p, Status::BadShape);
            }
            return;
        }
        let len = banded_mma::covariance_block_mma_smem_len(n, kd, nblock, team.warps());
        let code = banded_mma::covariance_block_mma::<1, 1, PREFETCH, _>(
            &team,
            Shared::from_raw(band.add(off) as *mut f64, n * (kd + 1)),
            n,
            kd,
            nblock,
            d.s_core as usize + c,
            Shared::from_raw(cov.add(item.index * block), block),
            Shared::from_raw(smem, len),
        );
        if tid == 0 {
            batch.fail(p, code);
        }
    }
}
