//! A global allocator that, when enabled, asks Linux for transparent huge pages (`MADV_HUGEPAGE`) on every
//! block of at least [`HUGE_MIN_BYTES`]: a frame's planes (9.3-102 MB each), the preproc planes,
//! the stamp tables, then take one page fault per 2 MiB instead of one per 4 KiB, and are
//! unmapped at once. On the 2-core development VM (THP `madvise` mode) touching 140 MB took
//! 62-83 ms in 4 KiB pages and ~16 ms in huge pages, and unmapping it 10-15 ms against 0.4 ms.
//! Everything else is [`std::alloc::System`]'s; the advice is a hint the kernel may ignore, and
//! never changes contents. Off unless [`set_enabled`] turns it on (`DESI_HUGE_PAGES=1` in the
//! binary): on an H100 host the 30-frame exposure took 4.89 s with it against 4.76 s without
//! (one round each, 2026-12-07, profiles/exposure-knobs.sh), and a first touch in huge pages
//! may stall on compaction (the first 140 MB took 291 ms here, against 74 ms in 4 KiB pages).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks of at least this many bytes are advised (glibc maps them on their own from 8 MiB on,
/// host/main.rs).
pub const HUGE_MIN_BYTES: usize = 8 << 20;

/// Size and alignment of a transparent huge page on x86-64.
const HUGE_PAGE: usize = 2 << 20;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the advice on or off for the blocks allocated from now on.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// [`System`] with `MADV_HUGEPAGE` on the whole huge pages of large blocks.
pub struct HugePages;

impl HugePages {
    /// Advises the whole huge pages inside `[ptr, ptr + size)`.
    fn advise(ptr: *mut u8, size: usize) {
        if ptr.is_null() || size < HUGE_MIN_BYTES || !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
        let end = (ptr as usize + size) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            advise_huge(start, end - start);
        }
    }
}

#[cfg(target_os = "linux")]
fn advise_huge(start: usize, len: usize) {
    // SAFETY: [start, start + len) lies inside a block the allocator just handed out (whole
    // pages of it); MADV_HUGEPAGE changes how its pages are backed, never their contents. The
    // result is ignored: a hint (EINVAL where THP is not built in).
    unsafe {
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_start: usize, _len: usize) {}

// SAFETY: every call is forwarded to `System` with the caller's arguments; the advice only
// touches the pages of the block returned.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, forwarded.
        let ptr = unsafe { System.alloc(layout) };
        Self::advise(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, forwarded.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        Self::advise(ptr, layout.size());
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, forwarded.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        Self::advise(new, new_size);
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The tests switch the process-wide advice: one at a time.
    static SWITCH: Mutex<()> = Mutex::new(());

    /// Blocks through the allocator keep their contents across growth, large or small, with
    /// the advice on and off.
    #[test]
    fn blocks_hold_what_was_written() {
        let _one_at_a_time = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        for on in [true, false] {
            set_enabled(on);
            for len in [16usize, HUGE_MIN_BYTES / 8 + 5, 3 * HUGE_MIN_BYTES / 8] {
                let layout = Layout::array::<u64>(len).unwrap();
                // SAFETY: non-zero size; the block is written and read within `len` values,
                // grown with the same layout, and freed with the layout it has.
                unsafe {
                    let p = HugePages.alloc_zeroed(layout).cast::<u64>();
                    assert!(!p.is_null());
                    assert_eq!(*p.add(len - 1), 0);
                    for i in (0..len).step_by(4099) {
                        *p.add(i) = i as u64;
                    }
                    let bigger = 2 * len * 8;
                    let q = HugePages.realloc(p.cast(), layout, bigger).cast::<u64>();
                    assert!(!q.is_null());
                    for i in (0..len).step_by(4099) {
                        assert_eq!(*q.add(i), i as u64);
                    }
                    HugePages.dealloc(q.cast(), Layout::from_size_align(bigger, 8).unwrap());
                }
            }
        }
        set_enabled(false);
    }

    /// Whether the mapping holding `addr` may take huge pages (`THPeligible` in
    /// /proc/self/smaps); `None` where the kernel does not say.
    #[cfg(target_os = "linux")]
    fn eligible(addr: usize) -> Option<bool> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix("THPeligible:") {
                    return Some(v.trim() == "1");
                }
            }
        }
        None
    }

    /// With the advice on, a large block's mapping is eligible for huge pages where the kernel
    /// runs THP in `madvise` mode; with it off, it is not.
    #[cfg(target_os = "linux")]
    #[test]
    fn large_blocks_are_advised_only_when_enabled() {
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        if !mode.is_ok_and(|m| m.contains("[madvise]")) {
            return; // THP off, or on for every mapping: nothing to tell apart.
        }
        let _one_at_a_time = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        let len = 4 * HUGE_MIN_BYTES;
        let layout = Layout::from_size_align(len, 8).unwrap();
        for on in [true, false] {
            set_enabled(on);
            // SAFETY: non-zero size; only the address is used, then the block is freed with
            // its layout.
            unsafe {
                let p = HugePages.alloc(layout);
                assert!(!p.is_null());
                let middle = p as usize + len / 2;
                if let Some(eligible) = eligible(middle) {
                    assert_eq!(eligible, on, "advice {on}");
                }
                HugePages.dealloc(p, layout);
            }
        }
        set_enabled(false);
    }
}
