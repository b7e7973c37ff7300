//! How a frame's patches are split into GPU batches (docs/design.md §5.2): at least
//! `DESI_GPU_BATCHES` batches of at most the memory cap each, and a short **tail batch** last.
//!
//! The host unpacks and stitches a batch while the device solves the next one; only the last
//! batch's unpacking and stitching (and `finish frame`) follow the device's last kernel, on the
//! frame's critical path. Making the last batch a small share of the frame
//! (`DESI_GPU_TAIL_PERCENT`, default [`TAIL_PERCENT`]) shortens that tail, at the price of one
//! more, smaller launch of every kernel.

use std::ops::Range;

/// Default share of a frame's patches in its last batch, percent.
pub const TAIL_PERCENT: usize = 12;

/// Frames with fewer patches than this get no tail batch (its launches would cost more than
/// the host work they hide).
pub const TAIL_MIN_PATCHES: usize = 256;

/// `DESI_GPU_TAIL_PERCENT` (0 to 50; 0 turns the tail batch off) or [`TAIL_PERCENT`].
pub fn tail_percent() -> usize {
    std::env::var("DESI_GPU_TAIL_PERCENT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(TAIL_PERCENT, |v| v.min(50))
}

/// Consecutive ranges covering `0..n`: with a tail (`nbatch >= 2`, `tail_percent > 0`,
/// `n >= TAIL_MIN_PATCHES`) the last `ceil(n · tail_percent / 100)` patches form the last
/// batch and the rest is split into `nbatch` equal batches; otherwise `nbatch` equal batches.
/// No batch exceeds `cap` (the device memory's limit; at least 1), which may add batches.
pub fn batch_ranges(n: usize, cap: usize, nbatch: usize, tail_percent: usize) -> Vec<Range<usize>> {
    let cap = cap.max(1);
    let nbatch = nbatch.max(1);
    let tail = if nbatch >= 2 && n >= TAIL_MIN_PATCHES {
        (n * tail_percent.min(50)).div_ceil(100).min(cap)
    } else {
        0
    };
    let body = n - tail;
    let batch = cap.min(body.div_ceil(nbatch)).max(1);
    let mut ranges: Vec<Range<usize>> = (0..body)
        .step_by(batch)
        .map(|start| start..(start + batch).min(body))
        .collect();
    if tail > 0 {
        ranges.push(body..n);
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges cover 0..n in order, without gaps or empty ranges, none above `cap`.
    fn check(ranges: &[Range<usize>], n: usize, cap: usize) {
        let mut next = 0;
        for r in ranges {
            assert_eq!(r.start, next, "{ranges:?}");
            assert!(r.end > r.start && r.len() <= cap.max(1), "{ranges:?}");
            next = r.end;
        }
        assert_eq!(next, n, "{ranges:?}");
    }

    #[test]
    fn a_full_frame_gets_two_batches_and_a_short_tail() {
        // An r frame: 4,700 patches, memory for 10,000 per batch.
        let r = batch_ranges(4700, 10_000, 2, 12);
        check(&r, 4700, 10_000);
        assert_eq!(r, [0..2068, 2068..4136, 4136..4700]);
        // Tail off: the former two halves.
        assert_eq!(batch_ranges(4700, 10_000, 2, 0), [0..2350, 2350..4700]);
    }

    #[test]
    fn the_memory_cap_and_small_frames() {
        let r = batch_ranges(4700, 1000, 2, 12);
        check(&r, 4700, 1000);
        assert_eq!(r.last(), Some(&(4136..4700)));
        assert_eq!(r.len(), 6);
        // A tail larger than the cap is cut to it.
        let r = batch_ranges(4700, 300, 2, 12);
        check(&r, 4700, 300);
        assert_eq!(r.last().map(|r| r.len()), Some(300));
        // One batch asked for, or a small frame: no tail.
        let one = batch_ranges(4700, 10_000, 1, 12);
        assert_eq!((one.len(), one.first()), (1, Some(&(0..4700))));
        assert_eq!(batch_ranges(100, 10_000, 2, 12), [0..50, 50..100]);
        for n in [0, 1, 2, 255, 256, 257, 999] {
            for cap in [1, 7, 100, 10_000] {
                for nbatch in [1, 2, 3, 8] {
                    check(&batch_ranges(n, cap, nbatch, 12), n, cap);
                }
            }
        }
    }
}
