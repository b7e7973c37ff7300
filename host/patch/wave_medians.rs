//! The per-wavelength chi2pix medians of the MASK rule ([`super::MaskRule::Main`]), gathered
//! while a frame is extracted: each wavelength's column of chi2pix is kept sorted as runs of
//! finished rows come in (while the device solves later bundles), so that after the device's
//! last batch only the last run is sorted in and each median is read off, instead of selected
//! from the whole frame (~0.85 ms of a full frame's `finish frame` on the 16-core GPU hosts).

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
        if self.values.is_empty() {
            self.values = crate::prefault::zeroed_f64(self.nrow * self.ncol);
        }
        let (nrow, ncol, filled) = (self.nrow, self.ncol, self.filled);
        self.values
            .par_chunks_mut(nrow * COLUMNS_PER_TASK)
            .enumerate()
            .for_each_init(Vec::new, |new: &mut Vec<f64>, (task, columns)| {
                let j0 = task * COLUMNS_PER_TASK;
                for (c, column) in columns.chunks_exact_mut(nrow).enumerate() {
                    new.clear();
                    for rows in runs {
                        new.extend(rows.chi2pix().chunks_exact(ncol).map(|row| row[j0 + c]));
                    }
                    new.sort_unstable_by(f64::total_cmp);
                    merge_from_back(&mut column[..filled + added], filled, new);
                }
            });
        self.filled += added;
    }

    /// The median of each column (as [`crate::stats::median`] of it), once every row of the
    /// frame was absorbed exactly once; `None` otherwise.
    pub fn medians(&self) -> Option<Vec<f64>> {
        if !self.consistent || self.filled != self.nrow || self.nrow == 0 {
            return None;
        }
        let n = self.nrow;
        Some(
            self.values
                .chunks_exact(n)
                .map(|column| {
                    let upper = column[n / 2];
                    if n % 2 == 1 {
                        upper
                    } else {
                        0.5 * (column[n / 2 - 1] + upper)
                    }
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
