//! Cooperative algorithms written once for both targets.
//!
//! A GPU thread block is a *team* of lanes that run phases separated by barriers. An algorithm
//! written against [`Team`] calls [`Team::each`] once per phase with a closure `f(lane)`:
//! - on the GPU ([`BlockTeam`]) every thread runs `f(threadIdx.x)` and then `__syncthreads()`;
//! - on the host ([`SerialTeam`]) `f(lane)` runs for every lane in turn.
//!
//! Both give the same result provided that, within one phase, a lane never reads what another
//! lane writes in that phase, and no two lanes write the same element. The CPU tests of a team
//! algorithm therefore check the GPU algorithm's logic (phases, indexing) exactly; the host
//! emulation is slow and meant for tests. Buffers shared by the lanes are [`Shared`] views.

/// Runs `f(i)` for `i = start, start + step, ... < end` (a lane's share of a strided loop).
#[inline(always)]
pub fn strided<F: FnMut(usize)>(start: usize, end: usize, step: usize, mut f: F) {
    let mut i = start;
    while i < end {
        f(i);
        i += step;
    }
}

/// A team of lanes separated by barriers (a thread block, or its serial emulation).
pub trait Team {
    /// Number of lanes.
    fn lanes(&self) -> usize;
    /// Runs `f(lane)` on every lane, then waits for all of them (a barrier).
    fn each<F: FnMut(usize)>(&self, f: F);
}

/// Serial emulation of a team on one host thread.
#[derive(Clone, Copy, Debug)]
pub struct SerialTeam {
    /// Number of lanes emulated.
    pub lanes: usize,
}

impl Team for SerialTeam {
    fn lanes(&self) -> usize {
        self.lanes
    }

    fn each<F: FnMut(usize)>(&self, mut f: F) {
        for lane in 0..self.lanes {
            f(lane);
        }
    }
}

/// The calling thread block (`blockDim.x` lanes; lane = `threadIdx.x`).
#[cfg(target_arch = "nvptx64")]
#[derive(Clone, Copy, Debug)]
pub struct BlockTeam;

#[cfg(target_arch = "nvptx64")]
impl Team for BlockTeam {
    fn lanes(&self) -> usize {
        // SAFETY: reading %ntid.x has no preconditions.
        unsafe { core::arch::nvptx::_block_dim_x() as usize }
    }

    fn each<F: FnMut(usize)>(&self, mut f: F) {
        // SAFETY: reading %tid.x has no preconditions; every thread of the block reaches this
        // barrier the same number of times because `each` is called in uniform control flow.
        unsafe {
            f(core::arch::nvptx::_thread_idx_x() as usize);
            core::arch::nvptx::_syncthreads();
        }
    }
}

#[cfg(target_arch = "nvptx64")]
extern "C" {
    /// `bar.warp.sync mask`: waits for the lanes of `mask` and orders their memory accesses.
    #[link_name = "llvm.nvvm.bar.warp.sync"]
    fn bar_warp_sync(mask: u32);
}

/// The calling thread's group of `W` consecutive lanes of its warp as a team (`W` = 1, 2, 4, 8,
/// 16 or 32; lane = `threadIdx.x % W`), separated by warp barriers over that group's lanes only
/// (`bar.warp.sync` with its mask): a block's warps, or a warp's `32 / W` groups, run
/// independent teams, so one may return early without stalling the others (a block-wide
/// barrier would wait for it).
#[cfg(target_arch = "nvptx64")]
#[derive(Clone, Copy, Debug)]
pub struct SubWarpTeam<const W: usize>;

#[cfg(target_arch = "nvptx64")]
impl<const W: usize> SubWarpTeam<W> {
    /// The lanes of the calling thread's group, as a `bar.warp.sync` mask.
    #[inline(always)]
    fn mask() -> u32 {
        const { assert!(W.is_power_of_two() && W <= 32) };
        // SAFETY: reading %tid.x has no preconditions.
        let lane_in_warp = unsafe { core::arch::nvptx::_thread_idx_x() } as usize % 32;
        let group = ((1u64 << W) - 1) as u32;
        group << (lane_in_warp / W * W)
    }
}

#[cfg(target_arch = "nvptx64")]
impl<const W: usize> Team for SubWarpTeam<W> {
    fn lanes(&self) -> usize {
        W
    }

    fn each<F: FnMut(usize)>(&self, mut f: F) {
        // SAFETY: reading %tid.x has no preconditions; every lane of the group reaches this
        // barrier the same number of times because `each` is called in uniform control flow
        // (per group), and the mask names exactly the group's lanes, the calling one included
        // (blocks are launched with whole warps).
        unsafe {
            f((core::arch::nvptx::_thread_idx_x() as usize) % W);
            bar_warp_sync(Self::mask());
        }
    }
}

/// A buffer shared by the lanes of a team (shared memory on the GPU, a slice on the host).
///
/// Element access goes through raw pointers so that lanes of one GPU block may hold it at
/// once; the phase rule of the module documentation makes the accesses race-free.
#[derive(Clone, Copy, Debug)]
pub struct Shared {
    ptr: *mut f64,
    len: usize,
}

impl Shared {
    /// A view of `slice` (host, or a device slice the team owns).
    pub fn new(slice: &mut [f64]) -> Self {
        Self {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
        }
    }

    /// A view of `len` values at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` f64 for as long as the view is used,
    /// and accessed by no one else than the team's lanes under the phase rule.
    pub unsafe fn from_raw(ptr: *mut f64, len: usize) -> Self {
        Self { ptr, len }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i` (NaN when out of range, which is a logic error that tests catch).
    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    pub fn get(&self, i: usize) -> f64 {
        if i < self.len {
            #[cfg(all(feature = "access-trace", not(target_arch = "nvptx64")))]
            crate::trace::record(
                self.ptr.wrapping_add(i),
                8,
                false,
                core::panic::Location::caller(),
            );
            // SAFETY: i < len and the view is valid (constructor contract).
            unsafe { self.ptr.add(i).read() }
        } else {
            f64::NAN
        }
    }

    /// Sets element `i` (ignored when out of range; see [`Shared::get`]).
    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    pub fn set(&self, i: usize, value: f64) {
        if i < self.len {
            #[cfg(all(feature = "access-trace", not(target_arch = "nvptx64")))]
            crate::trace::record(
                self.ptr.wrapping_add(i),
                8,
                true,
                core::panic::Location::caller(),
            );
            // SAFETY: i < len and the view is valid (constructor contract).
            unsafe { self.ptr.add(i).write(value) }
        }
    }

    /// Element `i` without the range check of [`Shared::get`] (for hot loops whose indices
    /// are in range by construction; checked by debug builds, i.e. the host tests).
    ///
    /// # Safety
    /// `i < self.len()`.
    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    pub unsafe fn get_unchecked(&self, i: usize) -> f64 {
        debug_assert!(i < self.len, "Shared::get_unchecked: {i} >= {}", self.len);
        #[cfg(all(feature = "access-trace", not(target_arch = "nvptx64")))]
        crate::trace::record(
            self.ptr.wrapping_add(i),
            8,
            false,
            core::panic::Location::caller(),
        );
        // SAFETY: i < len (caller) and the view is valid (constructor contract).
        unsafe { self.ptr.add(i).read() }
    }

    /// Sets element `i` without the range check of [`Shared::set`].
    ///
    /// # Safety
    /// `i < self.len()`.
    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    pub unsafe fn set_unchecked(&self, i: usize, value: f64) {
        debug_assert!(i < self.len, "Shared::set_unchecked: {i} >= {}", self.len);
        #[cfg(all(feature = "access-trace", not(target_arch = "nvptx64")))]
        crate::trace::record(
            self.ptr.wrapping_add(i),
            8,
            true,
            core::panic::Location::caller(),
        );
        // SAFETY: i < len (caller) and the view is valid (constructor contract).
        unsafe { self.ptr.add(i).write(value) }
    }

    /// Elements `i` and `i + 1`: one 16-byte load on the GPU (half the load instructions, and
    /// half the shared-memory wavefronts of a broadcast), two loads on the host.
    ///
    /// # Safety
    /// `i + 1 < self.len()`; on the GPU the address of element `i` is a multiple of 16 (see
    /// [`Shared::address`]).
    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    pub unsafe fn get2_unchecked(&self, i: usize) -> (f64, f64) {
        debug_assert!(
            i + 1 < self.len,
            "Shared::get2_unchecked: {i} + 1 >= {}",
            self.len
        );
        #[cfg(target_arch = "nvptx64")]
        {
            /// Two f64 with the alignment of a 16-byte vector load.
            #[repr(C, align(16))]
            struct Pair(f64, f64);
            // SAFETY: i + 1 < len (caller), the address is 16-byte aligned (caller).
            let pair = unsafe { self.ptr.add(i).cast::<Pair>().read() };
            (pair.0, pair.1)
        }
        #[cfg(not(target_arch = "nvptx64"))]
        {
            #[cfg(feature = "access-trace")]
            crate::trace::record(
                self.ptr.wrapping_add(i),
                16,
                false,
                core::panic::Location::caller(),
            );
            // SAFETY: i + 1 < len (caller) and the view is valid (constructor contract).
            unsafe { (self.ptr.add(i).read(), self.ptr.add(i + 1).read()) }
        }
    }

    /// Byte address of element 0 (for alignment decisions, e.g. [`Shared::get2_unchecked`]).
    pub fn address(&self) -> usize {
        self.ptr as usize
    }

    /// A sub-view `[start, start + len)` (clamped to the view).
    pub fn sub(&self, start: usize, len: usize) -> Shared {
        let start = start.min(self.len);
        let len = len.min(self.len - start);
        // SAFETY: the range lies inside the original view.
        Shared {
            ptr: unsafe { self.ptr.add(start) },
            len,
        }
    }
}
