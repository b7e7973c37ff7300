//! Zeroed buffers whose pages are mapped in one system call instead of one page fault per
//! 4 KiB page on first write: a buffer the caller fills entirely and at once (the CPU path's
//! bundle stamps, ~12 MB for 25 fibers x 325 wavelengths) otherwise pays a fault per page,
//! ~2 µs each in a virtual machine, about a third of evaluating the spots on one thread.

/// Buffers of at least this many bytes are prefaulted (smaller ones come from the heap, whose
/// pages are mostly mapped already).
const PREFAULT_MIN_BYTES: usize = 1 << 20;

/// A vector of `len` zeros whose pages are already mapped (Linux `MADV_POPULATE_WRITE`, 5.14
/// and later). Best effort: where the kernel refuses, the pages fault in on first write as
/// for `vec![0.0; len]`, and the contents are the same zeros either way.
pub fn zeroed_f64(len: usize) -> Vec<f64> {
    let v = vec![0.0f64; len];
    let bytes = std::mem::size_of_val(v.as_slice());
    if bytes >= PREFAULT_MIN_BYTES {
        populate_write(v.as_ptr().cast::<u8>(), bytes);
    }
    v
}

/// Asks the kernel to map the whole pages inside `len` bytes at `start` for writing.
#[cfg(target_os = "linux")]
fn populate_write(start: *const u8, len: usize) {
    const PAGE: usize = 4096;
    let first = (start as usize).next_multiple_of(PAGE);
    let end = (start as usize + len) / PAGE * PAGE;
    if end <= first {
        return;
    }
    // SAFETY: [first, end) lies inside the live allocation of `len` bytes at `start`, which
    // the caller owns; MADV_POPULATE_WRITE only maps its pages (as a write of the values
    // already there would) and never changes their contents. Its result is ignored: it is a
    // hint (EINVAL on kernels before 5.14).
    unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            end - first,
            libc::MADV_POPULATE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn populate_write(_start: *const u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_buffers_hold_zeros_of_the_asked_length() {
        for len in [0, 1, 1000, (PREFAULT_MIN_BYTES / 8) + 3, 3 << 20] {
            let v = zeroed_f64(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x.to_bits() == 0));
        }
    }
}
