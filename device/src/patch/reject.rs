//! Outlier rejection (docs/algorithm.md §4.11): the per-pixel steps that the backends run
//! where the patches are solved (the CPU backend on the host, the GPU's `reject_scan` and
//! `reject_bins` kernels), so that every backend tests the same pixels the same way. The
//! decisions (grow, cap, mask, passes) are the host's.
//!
//! - [`row_outliers`]: of one window row, the pixels inside the stamp of a core unknown (the
//!   only ones tested) whose χ²_pix term exceeds the threshold, as a bit mask, and how many
//!   tested pixels have weight (the cap's base);
//! - [`rejected_bin_count`]: how many rejected pixels carry at least a given fraction of a
//!   core bin's PSF weight inside the window (the bin's COSMIC count).

use crate::patch::{PatchShape, StampView};
use crate::Status;

/// Columns per word of a hit mask ([`row_outliers`]).
pub const HIT_WORD_BITS: usize = 32;

/// Words of the hit mask of a window row `width` columns wide.
#[inline(always)]
pub const fn hit_words(width: usize) -> usize {
    width.div_ceil(HIT_WORD_BITS)
}

/// The core unknowns of a patch: padded spectra `s_core .. s_core + nspp`, padded bins
/// `pad .. pad + keep`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreUnknowns {
    /// First core spectrum (padded index).
    pub s_core: usize,
    /// Core spectra.
    pub nspp: usize,
    /// First core bin (padded index).
    pub pad: usize,
    /// Core bins.
    pub keep: usize,
}

/// Outliers of row `r` of a patch's kept window (CCD row `shape.row_min + r`, columns
/// `col_min .. col_max`): bit `c` of `hits` (`hits[c / 32] >> (c % 32)`) is set when window
/// column `c` lies inside the stamp of a core unknown of `core` and `chi2_row[c]` (the χ²_pix
/// term of [`pixel_chi2_row`](crate::patch::pixel_chi2_row), 0 where the weight is 0) exceeds
/// `threshold`. Returns the number of those core-stamp pixels whose weight (`weight_row`, the
/// window's columns of the CCD row) is > 0. [`row_core_columns`] then [`row_filter`].
///
/// Only core-stamp pixels are tested: the pad rows and the neighbours' columns also receive
/// the wings of bins beyond the pad and of fibers beyond the neighbours, which the patch's
/// model lacks.
///
/// # Errors
/// [`Status::BadShape`] when `hits` has fewer than [`hit_words`]`(width)` words or a row
/// fewer than `width` values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn row_outliers(
    view: &StampView,
    shape: &PatchShape,
    col_min: i32,
    col_max: i32,
    core: CoreUnknowns,
    r: usize,
    chi2_row: &[f64],
    weight_row: &[f64],
    threshold: f64,
    hits: &mut [u32],
) -> Result<u32, Status> {
    row_core_columns(view, shape, col_min, col_max, core, r, hits)?;
    row_filter(hits, chi2_row, weight_row, threshold)
}

/// The columns of window row `r` inside the stamp of a core unknown of `core`, as a bit mask
/// in `words` (the first [`hit_words`]`(col_max − col_min)` words are written).
///
/// # Errors
/// [`Status::BadShape`] when `col_max < col_min` or `words` is too short.
#[inline(always)]
pub fn row_core_columns(
    view: &StampView,
    shape: &PatchShape,
    col_min: i32,
    col_max: i32,
    core: CoreUnknowns,
    r: usize,
    words: &mut [u32],
) -> Result<(), Status> {
    if col_max < col_min {
        return Err(Status::BadShape);
    }
    let nw = hit_words((col_max - col_min) as usize);
    if words.len() < nw {
        return Err(Status::BadShape);
    }
    let words = &mut words[..nw];
    for w in words.iter_mut() {
        *w = 0;
    }
    let (ny, nx) = (view.ny as i32, view.nx as i32);
    let y = shape.row_min + r as i32;
    for s in core.s_core..core.s_core + core.nspp {
        for k in core.pad..core.pad + core.keep {
            let c = view.corner(s, k);
            if y < c.yc || y >= c.yc + ny {
                continue;
            }
            let lo = if c.xc > col_min { c.xc } else { col_min } - col_min;
            let hi = if c.xc + nx < col_max {
                c.xc + nx
            } else {
                col_max
            } - col_min;
            if lo < hi {
                set_bits(words, lo as usize, hi as usize);
            }
        }
    }
    Ok(())
}

/// Sets bits `lo .. hi` (`lo < hi <= 32 · words.len()`) of a bit mask, a word at a time.
#[inline(always)]
fn set_bits(words: &mut [u32], lo: usize, hi: usize) {
    let (first, last) = (lo / HIT_WORD_BITS, (hi - 1) / HIT_WORD_BITS);
    let mut w = first;
    while w <= last {
        // The bits of word w inside lo .. hi.
        let from = if w == first { lo % HIT_WORD_BITS } else { 0 };
        let to = if w == last {
            (hi - 1) % HIT_WORD_BITS + 1
        } else {
            HIT_WORD_BITS
        };
        let ones = if to - from == HIT_WORD_BITS {
            u32::MAX
        } else {
            ((1u32 << (to - from)) - 1) << from
        };
        words[w] |= ones;
        w += 1;
    }
}

/// Keeps, of the columns set in `words` (a row's tested columns, [`row_core_columns`]), those
/// whose `chi2_row` value exceeds `threshold`; returns how many of the tested columns have a
/// `weight_row` value > 0.
///
/// # Errors
/// [`Status::BadShape`] when a set bit lies beyond `chi2_row` or `weight_row`.
#[inline(always)]
pub fn row_filter(
    words: &mut [u32],
    chi2_row: &[f64],
    weight_row: &[f64],
    threshold: f64,
) -> Result<u32, Status> {
    let mut weighted = 0;
    for (w, word) in words.iter_mut().enumerate() {
        let mut tested = *word;
        let mut outliers = 0;
        while tested != 0 {
            let bit = tested.trailing_zeros() as usize;
            tested &= tested - 1;
            let col = w * HIT_WORD_BITS + bit;
            if col >= chi2_row.len() || col >= weight_row.len() {
                return Err(Status::BadShape);
            }
            if weight_row[col] > 0.0 {
                weighted += 1;
            }
            if chi2_row[col] > threshold {
                outliers |= 1 << bit;
            }
        }
        *word = outliers;
    }
    Ok(weighted)
}

/// How many of `pixels` (CCD indices `row · ncol + col`, ascending) carry at least
/// `min_fraction` of the PSF weight that the stamp of padded unknown `(s, k)` puts inside the
/// window `rows × (col_min .. col_max)` (0 when that weight is not > 0).
#[allow(clippy::too_many_arguments)]
pub fn rejected_bin_count(
    view: &StampView,
    rows: (i32, i32),
    col_min: i32,
    col_max: i32,
    ncol: usize,
    s: usize,
    k: usize,
    pixels: &[u64],
    min_fraction: f64,
) -> u32 {
    let corner = view.corner(s, k);
    let stamp = view.stamp(s, k);
    let inside = |y: usize, x: usize| {
        let (row, col) = (corner.yc + y as i32, corner.xc + x as i32);
        (row >= rows.0 && row < rows.1 && col >= col_min && col < col_max)
            .then(|| (row as usize * ncol + col as usize) as u64)
    };
    let mut total = 0.0;
    for y in 0..view.ny {
        for x in 0..view.nx {
            if inside(y, x).is_some() {
                total += stamp[y * view.nx + x];
            }
        }
    }
    if total <= 0.0 {
        return 0;
    }
    let mut count = 0;
    for y in 0..view.ny {
        for x in 0..view.nx {
            if let Some(p) = inside(y, x) {
                let v = stamp[y * view.nx + x];
                if pixels.binary_search(&p).is_ok() && v >= min_fraction * total {
                    count += 1;
                }
            }
        }
    }
    count
}
