//! Argument structs of the outlier-rejection kernels (docs/algorithm.md §4.11), with the
//! conventions of [`super::args`]: `reject_scan` (the tested pixels of each window row beyond
//! the threshold, after `pixel_rows`), `reject_mask` (rejected pixels' weights set to 0 before
//! a re-solve) and `reject_bins` (the rejected pixels that count for each core bin).

use super::args::{Entry, FrameCcd, FrameStamps, KernelArgs, LaunchShape, PatchBatch};
use crate::patch::PatchDesc;

/// `reject_scan`: outliers and tested weighted pixels of every window row.
pub const REJECT_SCAN: Entry<RejectScanArgs> = Entry::new("reject_scan");
/// `reject_mask`: weights of the rejected pixels set to 0.
pub const REJECT_MASK: Entry<RejectMaskArgs> = Entry::new("reject_mask");
/// `reject_bins`: rejected pixels per core bin.
pub const REJECT_BINS: Entry<RejectBinsArgs> = Entry::new("reject_bins");

/// Arguments of `reject_scan`: per (patch, window row), the hit mask and the tested weighted
/// pixels of [`crate::patch::reject::row_outliers`], from the χ²_pix windows of `pixel_rows`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RejectScanArgs {
    /// The batch (patches with a non-zero status are skipped: their outputs stay 0).
    pub batch: PatchBatch,
    /// Rows per patch of the launch (the largest window height of the batch).
    pub max_rows: usize,
    /// Padding bins on each side of the core bins.
    pub pad: usize,
    /// The frame's stamps (corners only are read).
    pub stamps: FrameStamps,
    /// The CCD (weights only are read).
    pub ccd: FrameCcd,
    /// The windows of `pixel_rows` (read).
    pub pixels: *const f64,
    /// Length of `pixels` in f64.
    pub pixels_len: usize,
    /// χ²_pix threshold, `nsigma²`.
    pub threshold: f64,
    /// Hit-mask words per row (at least `hit_words` of the widest window of the batch).
    pub words: usize,
    /// Shape `(npatch, max_rows, words)` u32: hit masks (written, rows of the window only).
    pub hits: *mut u32,
    /// Shape `(npatch, max_rows)` u32: tested pixels with weight per row (written, rows of
    /// the window only).
    pub weighted: *mut u32,
}

// SAFETY: #[repr(C)], Copy, 8-byte integers, a float, raw pointers and such structs only.
unsafe impl KernelArgs for RejectScanArgs {}

impl RejectScanArgs {
    /// One thread per `(patch, window row)`, `npatch · max_rows` items.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.batch.npatch * self.max_rows)
    }
}

/// Arguments of `reject_mask`: `weight[pixels[i]] = 0` for `i < n` (indices `>= npix` are
/// ignored).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RejectMaskArgs {
    /// Number of pixels.
    pub n: usize,
    /// Shape `(n,)` u64: CCD indices `row · ncol + col` (read).
    pub pixels: *const u64,
    /// Shape `(npix,)`: the CCD's weights (written).
    pub weight: *mut f64,
    /// Pixels of the CCD.
    pub npix: usize,
}

// SAFETY: #[repr(C)], Copy, 8-byte integers and raw pointers only.
unsafe impl KernelArgs for RejectMaskArgs {}

impl RejectMaskArgs {
    /// One thread per pixel.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.n)
    }
}

/// Arguments of `reject_bins`: per (patch, core spectrum, core bin), the count of
/// [`crate::patch::reject::rejected_bin_count`] over the patch's rejected pixels.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RejectBinsArgs {
    /// Shape `(npatch,)`: the patches (read).
    pub descs: *const PatchDesc,
    /// Patches.
    pub npatch: usize,
    /// Stride of the core spectra per patch.
    pub nspp_max: usize,
    /// Core bins per patch (stride of the outputs' last axis).
    pub nwavestep: usize,
    /// Padding bins on each side of the core bins.
    pub pad: usize,
    /// The frame's stamps.
    pub stamps: FrameStamps,
    /// CCD columns.
    pub ncol: usize,
    /// Shape `(npatch + 1,)` u64: patch `p`'s pixels are `pixels[offsets[p]..offsets[p + 1]]`
    /// (read).
    pub offsets: *const u64,
    /// The rejected pixels of every patch, ascending within each (read).
    pub pixels: *const u64,
    /// A pixel counts when it carries at least this fraction of the bin's weight.
    pub min_fraction: f64,
    /// Shape `(npatch, nspp_max, nwavestep)` u32: counts (written for the core bins).
    pub counts: *mut u32,
}

// SAFETY: #[repr(C)], Copy, 8-byte integers, a float, raw pointers and such structs only.
unsafe impl KernelArgs for RejectBinsArgs {}

impl RejectBinsArgs {
    /// One thread per `(patch, core spectrum, core bin)`.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.npatch * self.nspp_max * self.nwavestep)
    }
}
