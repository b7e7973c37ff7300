//! GPU entry points and their typed interface.
//!
//! [`args`] (compiled for both targets, re-exported here) defines one `#[repr(C)]` argument
//! struct per kernel family, the [`Entry`] constant of each kernel and its launch shape; the
//! host fills the struct and pushes it as the kernel's only parameter. The entry points
//! themselves (`nvptx64-nvidia-cuda` only) are thin shims that map threads to items, build
//! slices and views from the struct's pointers and call the same functions as the CPU backend
//! ([`crate::psf`], [`crate::patch`], [`crate::linalg`]); no numerics live in them:
//! - `frame`: frame-wide kernels (PSF spots, f32 widening, the launch smoke test);
//! - `patch`: the per-patch solve stages.

pub mod args;
pub mod reject_args;

pub use args::*;
pub use reject_args::*;

/// The global address space of the pointers of an argument struct: see [`assume_global!`].
#[cfg(target_arch = "nvptx64")]
mod global {
    extern "C" {
        /// `isspacep.global`: whether a generic address lies in the global window.
        #[link_name = "llvm.nvvm.isspacep.global"]
        fn isspacep_global(ptr: *const u8) -> bool;
    }

    /// Whether `ptr` is a global-memory address (`isspacep.global`).
    #[inline(always)]
    pub(super) fn is_global<T>(ptr: *const T) -> bool {
        // SAFETY: `isspacep.global` has no preconditions.
        unsafe { isspacep_global(ptr.cast()) }
    }

    /// Hands `value` to an empty `asm!` (a PTX comment), so that it is computed: see
    /// [`assume_global!`].
    #[inline(always)]
    pub(super) fn keep(value: bool) {
        // SAFETY: an empty template with one register input; no memory, stack or flags.
        unsafe {
            core::arch::asm!(
                "// global pointers: {0}",
                in(reg32) value as u32,
                options(nomem, nostack, preserves_flags)
            )
        };
    }
}

/// Tells the compiler that the listed device pointers (of an argument struct) are
/// global-memory addresses, as it assumes of a kernel's pointer parameters; written at the
/// start of each entry point.
///
/// A pointer read from an argument struct is otherwise generic, and its loads and stores the
/// generic `ld`/`st` instead of `ld.global`/`st.global` (and ptxas then needs more registers
/// and spills: a generic access may alias shared memory). The facts are
/// `llvm.assume(isspacep.global(p))`, which the backend's address-space inference turns into
/// `cvta.to.global` and global accesses, as for a pointer parameter. LLVM drops an assume
/// whose condition has no other use before the backend runs, so the conjunction of the
/// conditions is also handed to an empty `asm!` (a PTX comment); the `isspacep`, `and.pred`
/// and `selp` that feed it are dead code for ptxas. (One statement per pointer, no loop: LLVM
/// deletes a loop of assumes.)
///
/// # Safety
/// Every pointer must be a global-memory address (a device allocation of the host; never
/// null). The expansion calls `core::hint::assert_unchecked`: use it inside an `unsafe` block
/// whose `// SAFETY:` comment states where the pointers come from.
#[cfg(target_arch = "nvptx64")]
macro_rules! assume_global {
    ($($ptr:expr),+ $(,)?) => {{
        $crate::kernels::global::keep(true $(& $crate::kernels::global::is_global($ptr))+);
        $(core::hint::assert_unchecked($crate::kernels::global::is_global($ptr));)+
    }};
}

/// Indices of the calling thread (special registers), for the entry points.
#[cfg(target_arch = "nvptx64")]
mod thread {
    use core::arch::nvptx;

    /// Flat index of the calling thread in a 1-D launch: `blockIdx.x * blockDim.x +
    /// threadIdx.x`.
    #[inline(always)]
    pub(super) fn global_index() -> usize {
        // SAFETY: reading the special registers %ctaid.x, %ntid.x and %tid.x has no
        // preconditions; the values are non-negative `i32`s, so the casts to `usize` are
        // lossless.
        unsafe {
            (nvptx::_block_idx_x() as usize) * (nvptx::_block_dim_x() as usize)
                + nvptx::_thread_idx_x() as usize
        }
    }
}

#[cfg(target_arch = "nvptx64")]
mod frame;
#[cfg(target_arch = "nvptx64")]
mod patch;
#[cfg(target_arch = "nvptx64")]
mod reject;
