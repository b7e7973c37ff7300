//! The per-wavelength chi2pix medians of the MASK rule ([`super::MaskRule::Main`]), gathered
//! while a frame is extracted: each wavelength's column of chi2pix is kept sorted as runs of
//! finished rows come in (while the device solves later bundles). The run that completes the
//! frame (after the device's last batch) is only sorted, not merged in: each median is then
//! found by a binary search over the two sorted parts of its column, instead of selected from
//! the whole frame (~0.85 ms of a full frame's `finish frame` on the 16-core GPU hosts; merging
//! the last run in took ~0.95 ms of its `finish bundles` there, the whole columns' traffic).

use super::stitch::FrameRows;
use rayon::prelude::*;

/// Columns per task of [`SortedColumns::absorb`].
const COLUMNS_PER_TASK: usize = 16;

/// Every column of a frame's `(nrow, ncol)` chi2pix, sorted (by `f64::total_cmp`), over the
/// rows absorbed so far.
#[derive(Clone, Debug)]
pub struct SortedColumns {
    /// The frame's spectra: the first frame row is spectrum `specmin`.
    specmin: usize,
    nrow: usize,
    ncol: usize,
    /// Column-major, `nrow` slots a column; the first `filled` of each hold its values so far,
    /// ascending. Allocated on the first run (its pages mapped at once).
    values: Vec<f64>,
    filled: usize,
    /// The run that completed the frame, column-major (its rows a column), each column
    /// ascending: kept apart from `values`.
    last: Vec<f64>,
    /// Which frame rows were absorbed.
    seen: Vec<bool>,
    /// Cleared when a run did not fit (other width, rows outside the frame or seen before):
    /// the medians are then left to the caller.
    consistent: bool,
}

impl SortedColumns {
    /// No rows yet of a frame of spectra `specmin .. specmin + nrow` with `ncol` bins each.
    pub fn new(specmin: usize, nrow: usize, ncol: usize) -> Self {
        Self {
            specmin,
            nrow,
            ncol,
            values: Vec::new(),
            filled: 0,
            last: Vec::new(),
            seen: vec![false; nrow],
            consistent: true,
        }
    }

    /// Sorts the chi2pix of `runs` (finished rows: their final values) into the columns.
    pub fn absorb(&mut self, runs: &[FrameRows]) {
        if !self.consistent || !self.mark_seen(runs) {
            self.consistent = false;
            return;
        }
        let added: usize = runs.iter().map(FrameRows::nspec).sum();
        if added == 0 {
            return;
        }
        let (nrow, ncol, filled) = (self.nrow, self.ncol, self.filled);
        if filled > 0 && filled + added == nrow {
            self.keep_last(runs, added);
            return;
        }
        if self.values.is_empty() {
            self.values = crate::prefault::zeroed_f64(nrow * ncol);
        }
        for_each_sorted_column(runs, ncol, &mut self.values, nrow, |column, new| {
            merge_from_back(&mut column[..filled + added], filled, new);
        });
        self.filled += added;
    }

    /// The run that completes the frame (`added` rows), each column sorted into `last`.
    fn keep_last(&mut self, runs: &[FrameRows], added: usize) {
        let len = added * self.ncol;
        let mut last: Vec<f64> = Vec::with_capacity(len);
        // Written once, in parallel, never zeroed first (as the frame's mask).
        let slots = &mut last.spare_capacity_mut()[..len];
        for_each_sorted_column(runs, self.ncol, slots, added, |column, new| {
            for (slot, &v) in column.iter_mut().zip(new) {
                slot.write(v);
            }
        });
        // SAFETY: `slots` are the first `len` elements, `ncol` whole columns of `added` slots,
        // and each slot was written from its column's `added` values.
        unsafe { last.set_len(len) };
        self.last = last;
        self.filled += added;
    }

    /// Rows of the run kept apart (0 before it).
    fn last_rows(&self) -> usize {
        self.last.len().checked_div(self.ncol).unwrap_or(0)
    }

    /// The median of each column (as [`crate::stats::median`] of it), once every row of the
    /// frame was absorbed exactly once; `None` otherwise.
    pub fn medians(&self) -> Option<Vec<f64>> {
        if !self.consistent || self.filled != self.nrow || self.nrow == 0 {
            return None;
        }
        let n = self.nrow;
        let median = |a: &[f64], b: &[f64]| {
            let upper = kth_of_two(a, b, n / 2);
            if n % 2 == 1 {
                upper
            } else {
                0.5 * (kth_of_two(a, b, n / 2 - 1) + upper)
            }
        };
        let (last_rows, before) = (self.last_rows(), n - self.last_rows());
        // Columns in parallel: ~2 binary searches of a 4 KB column each, 0.6 ms on one thread
        // for a full frame on the GPU hosts, between its last stitch and `finish frame`.
        Some(
            (0..self.ncol)
                .into_par_iter()
                .with_min_len(COLUMNS_PER_TASK)
                .map(|j| {
                    let column = &self.values[j * n..j * n + before];
                    median(column, &self.last[j * last_rows..(j + 1) * last_rows])
                })
                .collect(),
        )
    }

    /// Marks the rows of `runs` seen; false if one has another width, lies outside the frame or
    /// was seen before.
    fn mark_seen(&mut self, runs: &[FrameRows]) -> bool {
        for rows in runs {
            if rows.nwave() != self.ncol {
                return false;
            }
            let Some(first) = rows.first().checked_sub(self.specmin) else {
                return false;
            };
            let Some(seen) = self.seen.get_mut(first..first + rows.nspec()) else {
                return false;
            };
            if seen.iter().any(|&s| s) {
                return false;
            }
            seen.fill(true);
        }
        true
    }
}

/// Calls `put(column, values)` for each of the `ncol` columns of `slots` (`stride` slots a
/// column) with that column of the chi2pix of `runs`, ascending; columns in parallel, in
/// blocks of [`COLUMNS_PER_TASK`].
fn for_each_sorted_column<T: Send>(
    runs: &[FrameRows],
    ncol: usize,
    slots: &mut [T],
    stride: usize,
    put: impl Fn(&mut [T], &[f64]) + Sync,
) {
    slots
        .par_chunks_mut(stride * COLUMNS_PER_TASK)
        .enumerate()
        .for_each_init(Vec::new, |values: &mut Vec<f64>, (task, columns)| {
            let j0 = task * COLUMNS_PER_TASK;
            for (c, column) in columns.chunks_exact_mut(stride).enumerate() {
                values.clear();
                for rows in runs {
                    values.extend(rows.chi2pix().chunks_exact(ncol).map(|row| row[j0 + c]));
                }
                values.sort_unstable_by(f64::total_cmp);
                put(column, values);
            }
        });
}

/// The value of rank `k` (0-based, by `f64::total_cmp`) of the union of the ascending `a`
/// and `b` (`k` below their total length), by a binary search on how many of the `k + 1`
/// smallest come from `a`.
fn kth_of_two(a: &[f64], b: &[f64], k: usize) -> f64 {
    let (mut lo, mut hi) = ((k + 1).saturating_sub(b.len()), (k + 1).min(a.len()));
    // The fewest `i` from `a` with a[i] >= b[k - i]: then a[..i] and b[..k + 1 - i] are the
    // k + 1 smallest.
    while lo < hi {
        let i = (lo + hi) / 2;
        if a[i].total_cmp(&b[k - i]).is_lt() {
            lo = i + 1;
        } else {
            hi = i;
        }
    }
    // The larger of the last ones taken from each side.
    let (i, j) = (lo, k + 1 - lo);
    [
        i.checked_sub(1).map(|x| a[x]),
        j.checked_sub(1).map(|x| b[x]),
    ]
    .into_iter()
    .flatten()
    .max_by(f64::total_cmp)
    .unwrap_or(f64::NAN)
}

/// Merges the ascending `new` into `column`, whose first `filled` values are ascending and
/// which has room for `new` after them, from the back (no scratch).
fn merge_from_back(column: &mut [f64], filled: usize, new: &[f64]) {
    let (mut i, mut j) = (filled, new.len());
    for k in (0..filled + new.len()).rev() {
        if j == 0 {
            break;
        }
        if i > 0 && column[i - 1].total_cmp(&new[j - 1]).is_gt() {
            column[k] = column[i - 1];
            i -= 1;
        } else {
            column[k] = new[j - 1];
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::stitch::FrameArrays;
    use crate::stats::median;

    /// A frame whose chi2pix has ties, signed zeros and an odd and an even row count.
    fn frame(nspec: usize, nwave: usize) -> FrameArrays {
        let mut arrays = FrameArrays::new(100, nspec, nwave, 1);
        for (i, v) in arrays.chi2pix.iter_mut().enumerate() {
            *v = match (i * 7919) % 13 {
                0 => -0.0,
                1 => 0.0,
                2 => 1.5,
                k => (k as f64) * 0.37 - 2.0 + (i % 5) as f64,
            };
        }
        arrays
    }

    fn strided_medians(arrays: &FrameArrays) -> Vec<f64> {
        (0..arrays.nwave)
            .map(|j| {
                median(
                    (0..arrays.nspec)
                        .map(|s| arrays.chi2pix[s * arrays.nwave + j])
                        .collect(),
                )
            })
            .collect()
    }

    /// Rows absorbed in runs of any size and order give the medians of the whole columns, bit
    /// for bit.
    #[test]
    fn runs_in_any_order_give_the_columns_medians() {
        for (nspec, nwave, rows_per_block, order) in [
            (
                50,
                37,
                5,
                vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]],
            ),
            (
                51,
                20,
                5,
                vec![vec![9, 10], vec![0], vec![1, 2, 3, 4, 5, 6, 7, 8]],
            ),
            (3, 4, 1, vec![vec![1], vec![2, 0]]),
            // One run: the frame completed by its first run (no part kept apart).
            (10, 7, 5, vec![vec![0, 1]]),
        ] {
            let mut arrays = frame(nspec, nwave);
            let want = strided_medians(&arrays);
            let mut columns = SortedColumns::new(100, nspec, nwave);
            {
                let mut blocks: Vec<Option<FrameRows>> = arrays
                    .row_blocks_mut(rows_per_block)
                    .into_iter()
                    .map(Some)
                    .collect();
                for run in &order {
                    assert!(columns.medians().is_none(), "incomplete");
                    let rows: Vec<FrameRows> =
                        run.iter().map(|&b| blocks[b].take().unwrap()).collect();
                    columns.absorb(&rows);
                }
            }
            let got = columns.medians().expect("every row absorbed");
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{nspec}x{nwave}");
        }
    }

    /// The rank-k value of two sorted parts is that of their sorted union, for every k and
    /// for empty, short and tied parts.
    #[test]
    fn kth_of_two_is_the_rank_in_the_union() {
        let values = |n: usize, seed: usize| -> Vec<f64> {
            let mut v: Vec<f64> = (0..n)
                .map(|i| match (i * 31 + seed * 17) % 7 {
                    0 => -0.0,
                    1 => 0.0,
                    k => (k as f64) - 3.5 + ((i + seed) % 3) as f64,
                })
                .collect();
            v.sort_unstable_by(f64::total_cmp);
            v
        };
        for (na, nb) in [(0, 1), (1, 0), (5, 1), (1, 5), (7, 7), (20, 3), (0, 9)] {
            let (a, b) = (values(na, 1), values(nb, 2));
            let mut union = [a.clone(), b.clone()].concat();
            union.sort_unstable_by(f64::total_cmp);
            for (k, want) in union.iter().enumerate() {
                assert_eq!(
                    kth_of_two(&a, &b, k).to_bits(),
                    want.to_bits(),
                    "{na}+{nb} rank {k}"
                );
            }
        }
    }

    /// Rows absorbed twice, outside the frame or of another width leave the medians to the
    /// caller.
    #[test]
    fn rows_that_do_not_fit_give_no_medians() {
        let mut arrays = frame(10, 6);
        let mut other = FrameArrays::new(100, 10, 7, 1);
        let mut outside = FrameArrays::new(90, 10, 6, 1);
        let mut blocks = arrays.row_blocks_mut(5);
        let second = blocks.pop().unwrap();
        let first = blocks.pop().unwrap();
        let mut twice = SortedColumns::new(100, 10, 6);
        twice.absorb(std::slice::from_ref(&first));
        twice.absorb(std::slice::from_ref(&first));
        twice.absorb(std::slice::from_ref(&second));
        assert!(twice.medians().is_none());
        let mut wide = SortedColumns::new(100, 10, 6);
        wide.absorb(&other.row_blocks_mut(10));
        assert!(wide.medians().is_none());
        let mut shifted = SortedColumns::new(100, 10, 6);
        shifted.absorb(&outside.row_blocks_mut(10));
        assert!(shifted.medians().is_none());
    }
}
