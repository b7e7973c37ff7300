//! [`Lds`]: cursors into a shared-memory [`Shared`] view with 32-bit addresses on the GPU.
//!
//! A [`Shared`] view holds a generic 64-bit pointer. Where LLVM cannot prove that it points
//! to shared memory (a function that is not inlined into its kernel) its accesses are the
//! generic `ld`/`st`, which ptxas tracks like global-memory loads (long-scoreboard waits), and
//! every index is 64-bit arithmetic (two integer instructions per add, more per multiply). An
//! [`Lds`] cursor is, on `nvptx64`, the 32-bit address of one element in the shared window:
//! its loads and stores are `ld.shared` / `st.shared` with a 32-bit register address
//! (`LDS`/`STS`), and moving it is one 32-bit add. On the host (tests, the serial team
//! emulation) it is an index into the view, read through [`Shared::get_unchecked`] (range
//! checked by debug builds).
//!
//! The loads are `asm!` with `readonly`: the compiler keeps them after the stores (`asm!`
//! without `readonly`) and barriers that precede them.

use crate::team::Shared;

/// A position in a shared-memory view (see the module documentation).
#[derive(Clone, Copy)]
pub struct Lds {
    /// Byte address in the shared-memory window.
    #[cfg(target_arch = "nvptx64")]
    addr: u32,
    /// The view.
    #[cfg(not(target_arch = "nvptx64"))]
    view: Shared,
    /// Element index in `view`.
    #[cfg(not(target_arch = "nvptx64"))]
    index: usize,
}

impl Lds {
    /// A cursor at element 0 of `view`.
    ///
    /// # Safety
    /// On `nvptx64`, `view` must lie in the block's shared memory (e.g. dynamic shared
    /// memory); its accesses then follow [`Shared`]'s contract.
    #[inline(always)]
    pub unsafe fn new(view: Shared) -> Self {
        #[cfg(target_arch = "nvptx64")]
        {
            let addr: u32;
            // SAFETY: converts a generic address of the shared window to its 32-bit shared
            // address (the view is in shared memory: caller); reads no memory.
            unsafe {
                core::arch::asm!(
                    "{{ .reg .b64 t; cvta.to.shared.u64 t, {p}; cvt.u32.u64 {a}, t; }}",
                    p = in(reg64) view.address() as u64,
                    a = out(reg32) addr,
                    options(pure, nomem, nostack, preserves_flags)
                );
            }
            Self { addr }
        }
        #[cfg(not(target_arch = "nvptx64"))]
        {
            Self { view, index: 0 }
        }
    }

    /// The cursor `elems` values further.
    #[inline(always)]
    pub fn offset(self, elems: u32) -> Self {
        #[cfg(target_arch = "nvptx64")]
        {
            Self {
                addr: self.addr.wrapping_add(elems.wrapping_mul(8)),
            }
        }
        #[cfg(not(target_arch = "nvptx64"))]
        {
            Self {
                index: self.index + elems as usize,
                ..self
            }
        }
    }

    /// The value `k` elements after the cursor.
    ///
    /// # Safety
    /// The element lies inside the view.
    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    pub unsafe fn get(self, k: u32) -> f64 {
        #[cfg(target_arch = "nvptx64")]
        {
            let v: f64;
            // SAFETY: a shared-memory address inside the view (caller).
            unsafe {
                core::arch::asm!(
                    "ld.shared.f64 {v}, [{a}];",
                    v = out(reg64) v,
                    a = in(reg32) self.addr.wrapping_add(k.wrapping_mul(8)),
                    options(pure, readonly, nostack, preserves_flags)
                );
            }
            v
        }
        #[cfg(not(target_arch = "nvptx64"))]
        {
            // SAFETY: inside the view (caller).
            unsafe { self.view.get_unchecked(self.index + k as usize) }
        }
    }

    /// The values `k` and `k + 1` elements after the cursor: one 16-byte load on the GPU.
    ///
    /// # Safety
    /// Both lie inside the view; on the GPU the address of the first is a multiple of 16.
    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    pub unsafe fn get2(self, k: u32) -> (f64, f64) {
        #[cfg(target_arch = "nvptx64")]
        {
            let (a, b): (f64, f64);
            // SAFETY: a 16-byte aligned shared-memory address inside the view (caller).
            unsafe {
                core::arch::asm!(
                    "ld.shared.v2.f64 {{{x}, {y}}}, [{a}];",
                    x = out(reg64) a,
                    y = out(reg64) b,
                    a = in(reg32) self.addr.wrapping_add(k.wrapping_mul(8)),
                    options(pure, readonly, nostack, preserves_flags)
                );
            }
            (a, b)
        }
        #[cfg(not(target_arch = "nvptx64"))]
        {
            // SAFETY: inside the view (caller).
            unsafe { self.view.get2_unchecked(self.index + k as usize) }
        }
    }

    /// Sets the value `k` elements after the cursor.
    ///
    /// # Safety
    /// The element lies inside the view.
    #[inline(always)]
    #[cfg_attr(
        all(feature = "access-trace", not(target_arch = "nvptx64")),
        track_caller
    )]
    pub unsafe fn set(self, k: u32, value: f64) {
        #[cfg(target_arch = "nvptx64")]
        {
            // SAFETY: a shared-memory address inside the view (caller).
            unsafe {
                core::arch::asm!(
                    "st.shared.f64 [{a}], {v};",
                    a = in(reg32) self.addr.wrapping_add(k.wrapping_mul(8)),
                    v = in(reg64) value,
                    options(nostack, preserves_flags)
                );
            }
        }
        #[cfg(not(target_arch = "nvptx64"))]
        {
            // SAFETY: inside the view (caller).
            unsafe { self.view.set_unchecked(self.index + k as usize, value) }
        }
    }
}
