//! Stitching patch outputs into frame arrays and finalizing them (docs/algorithm.md §5, §1.3).

use super::PatchPlan;
use crate::solve::PatchResult;
use crate::stats::{median, median_in_place};
use rayon::prelude::*;

/// Frame-level extraction outputs, `(nspec, nwave)` and `(nspec, 2·ndiag+1, nwave)` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameArrays {
    /// First spectrum (relative to FIBERMIN).
    pub specmin: usize,
    /// Number of spectra.
    pub nspec: usize,
    /// Number of wavelengths.
    pub nwave: usize,
    /// Resolution half-width.
    pub ndiag: usize,
    /// Flux (per bin until [`FrameArrays::to_per_angstrom`]).
    pub flux: Vec<f64>,
    /// Inverse variance of the flux.
    pub ivar: Vec<f64>,
    /// Resolution diagonals.
    pub rdiags: Vec<f64>,
    /// PSF-weighted χ² per pixel.
    pub chi2pix: Vec<f64>,
    /// Fraction of PSF weight on masked pixels.
    pub pixmask_fraction: Vec<f64>,
}

impl FrameArrays {
    /// Zeroed arrays.
    pub fn new(specmin: usize, nspec: usize, nwave: usize, ndiag: usize) -> Self {
        Self {
            specmin,
            nspec,
            nwave,
            ndiag,
            flux: vec![0.0; nspec * nwave],
            ivar: vec![0.0; nspec * nwave],
            rdiags: vec![0.0; nspec * (2 * ndiag + 1) * nwave],
            chi2pix: vec![0.0; nspec * nwave],
            pixmask_fraction: vec![0.0; nspec * nwave],
        }
    }

    /// Copies a patch's core outputs to spectra `[ispec, ispec+nspp)` and output bins
    /// `[iwave-pad, iwave-pad+keep)`.
    pub fn insert(&mut self, plan: &PatchPlan, result: &PatchResult, pad: usize) {
        let nspec = self.nspec;
        if let Some(mut rows) = self.row_blocks_mut(nspec.max(1)).pop() {
            rows.insert(plan, result, pad);
        }
    }

    /// Disjoint mutable views of consecutive blocks of `rows_per_block` spectra (e.g. one per
    /// bundle), so that patches of different blocks can be inserted in parallel.
    pub fn row_blocks_mut(&mut self, rows_per_block: usize) -> Vec<FrameRows<'_>> {
        let (nwave, ndiagonal) = (self.nwave, 2 * self.ndiag + 1);
        let rows_per_block = rows_per_block.max(1);
        let plain = rows_per_block * nwave;
        let mut out = Vec::new();
        let iter = self
            .flux
            .chunks_mut(plain)
            .zip(self.ivar.chunks_mut(plain))
            .zip(self.chi2pix.chunks_mut(plain))
            .zip(self.pixmask_fraction.chunks_mut(plain))
            .zip(self.rdiags.chunks_mut(plain * ndiagonal));
        for (i, ((((flux, ivar), chi2pix), pixmask_fraction), rdiags)) in iter.enumerate() {
            out.push(FrameRows::from_planes(
                self.specmin + i * rows_per_block,
                nwave,
                ndiagonal,
                [flux, ivar, chi2pix, pixmask_fraction, rdiags],
            ));
        }
        out
    }

    /// Sets ivar = 0 where every kept pixel of a bin's PSF is masked (pixmask_fraction == 1):
    /// such bins carry no information, only the ~1e-12 ivar of the regularization floor
    /// (specter's convention; gpu_specter keeps the floor). Returns how many bins were zeroed.
    pub fn zero_fully_masked(&mut self) -> usize {
        let nwave = self.nwave.max(1);
        self.ivar
            .par_chunks_mut(nwave)
            .zip(self.pixmask_fraction.par_chunks(nwave))
            .map(|(ivar, fracs)| zero_fully_masked(ivar, fracs))
            .sum()
    }

    /// Converts flux and ivar from per bin to per Angstrom: `flux /= dwave`,
    /// `ivar *= dwave²` with `dwave` = numpy `gradient(wave)`.
    pub fn to_per_angstrom(&mut self, dwave: &[f64]) {
        let nwave = self.nwave.max(1);
        self.flux
            .par_chunks_mut(nwave)
            .zip(self.ivar.par_chunks_mut(nwave))
            .for_each(|(flux, ivar)| to_per_angstrom(flux, ivar, dwave));
    }
}

/// [`FrameArrays::zero_fully_masked`] of one spectrum.
fn zero_fully_masked(ivar: &mut [f64], fracs: &[f64]) -> usize {
    let mut count = 0;
    for (iv, &frac) in ivar.iter_mut().zip(fracs) {
        if frac == 1.0 && *iv != 0.0 {
            *iv = 0.0;
            count += 1;
        }
    }
    count
}

/// [`FrameArrays::to_per_angstrom`] of one spectrum.
fn to_per_angstrom(flux: &mut [f64], ivar: &mut [f64], dwave: &[f64]) {
    for ((f, iv), &dw) in flux.iter_mut().zip(ivar.iter_mut()).zip(dwave) {
        *f /= dw;
        *iv *= dw * dw;
    }
}

/// Mutable rows `[first, first + n)` of a [`FrameArrays`].
#[derive(Debug)]
pub struct FrameRows<'a> {
    first: usize,
    nwave: usize,
    ndiagonal: usize,
    flux: &'a mut [f64],
    ivar: &'a mut [f64],
    chi2pix: &'a mut [f64],
    pixmask_fraction: &'a mut [f64],
    rdiags: &'a mut [f64],
}

impl<'a> FrameRows<'a> {
    /// The flux of spectrum `ispec` (frame numbering; it must lie in these rows) at output bin
    /// `iwave`.
    pub fn flux_at(&self, ispec: usize, iwave: usize) -> f64 {
        self.flux[(ispec - self.first) * self.nwave + iwave]
    }

    /// First spectrum of these rows (frame numbering, FIBERMIN-relative as
    /// [`FrameArrays::specmin`]).
    pub fn first(&self) -> usize {
        self.first
    }

    /// Writes zeros over every value, so that the pages of freshly allocated arrays are mapped
    /// before the stitching that fills them (the host can do this while the device solves the
    /// first batch; faulting them in during the stitch doubled its time).
    pub fn prefault(&mut self) {
        self.flux.fill(0.0);
        self.ivar.fill(0.0);
        self.chi2pix.fill(0.0);
        self.pixmask_fraction.fill(0.0);
        self.rdiags.fill(0.0);
    }

    /// The element-wise finishing steps of these rows, once every patch of them is stitched:
    /// [`FrameArrays::zero_fully_masked`], [`FrameArrays::to_per_angstrom`] and
    /// [`FrameArrays::zero_nonfinite`], in that order, spectra in parallel. Returns the zeroed
    /// non-finite bins as `row · nwave + iwave`, `row` counted from [`FrameRows::first`],
    /// ascending. The same values as those steps on the whole frame, bin for bin.
    pub fn finish_bins(&mut self, dwave: &[f64]) -> Vec<usize> {
        let rows = BinsMut {
            flux: self.flux,
            ivar: self.ivar,
            chi2pix: self.chi2pix,
            pixmask_fraction: self.pixmask_fraction,
            rdiags: self.rdiags,
            nwave: self.nwave,
        };
        zero_nonfinite_rows(rows, self.ndiagonal, |bins| {
            zero_fully_masked(bins.ivar, bins.pixmask_fraction);
            to_per_angstrom(bins.flux, bins.ivar, dwave);
        })
    }

    /// Rows `[first, ..)` from their planes `[flux, ivar, chi2pix, pixmask_fraction, rdiags]`.
    fn from_planes(
        first: usize,
        nwave: usize,
        ndiagonal: usize,
        [flux, ivar, chi2pix, pixmask_fraction, rdiags]: [&'a mut [f64]; 5],
    ) -> Self {
        FrameRows {
            first,
            nwave,
            ndiagonal,
            flux,
            ivar,
            chi2pix,
            pixmask_fraction,
            rdiags,
        }
    }

    /// These rows, borrowed for a shorter time (to split them without giving them up).
    pub fn reborrow(&mut self) -> FrameRows<'_> {
        FrameRows::from_planes(
            self.first,
            self.nwave,
            self.ndiagonal,
            [
                &mut *self.flux,
                &mut *self.ivar,
                &mut *self.chi2pix,
                &mut *self.pixmask_fraction,
                &mut *self.rdiags,
            ],
        )
    }

    /// The chi2pix of these rows, `(nspec, nwave)` row-major.
    pub fn chi2pix(&self) -> &[f64] {
        self.chi2pix
    }

    /// Output bins per spectrum.
    pub fn nwave(&self) -> usize {
        self.nwave
    }

    /// Number of spectra in these rows.
    pub fn nspec(&self) -> usize {
        self.flux.len().checked_div(self.nwave).unwrap_or(0)
    }

    /// Splits off the first `n` spectra (at most all of them): `(rows [first, first + n),
    /// the rest)`, so that disjoint spectra can be filled in parallel.
    pub fn split_rows(self, n: usize) -> (Self, Self) {
        let n = n.min(self.nspec());
        let (first, nwave, ndiagonal) = (self.first, self.nwave, self.ndiagonal);
        let plain = n * nwave;
        let [(flux, flux_rest), (ivar, ivar_rest), (chi2pix, chi2pix_rest), (pixmask, pixmask_rest), (rdiags, rdiags_rest)] =
            [
                (self.flux, plain),
                (self.ivar, plain),
                (self.chi2pix, plain),
                (self.pixmask_fraction, plain),
                (self.rdiags, plain * ndiagonal),
            ]
            .map(|(plane, len)| plane.split_at_mut(len));
        (
            Self::from_planes(
                first,
                nwave,
                ndiagonal,
                [flux, ivar, chi2pix, pixmask, rdiags],
            ),
            Self::from_planes(
                first + n,
                nwave,
                ndiagonal,
                [
                    flux_rest,
                    ivar_rest,
                    chi2pix_rest,
                    pixmask_rest,
                    rdiags_rest,
                ],
            ),
        )
    }

    /// These rows split among the runs of `items` that share their core spectra
    /// (`core(item) = (first spectrum, count)`: a sub-bundle's patches), in order, so that the
    /// runs can be filled in parallel; one part holding every item when the runs are not
    /// ascending, disjoint and within these rows.
    pub fn split_among<'i, T>(
        self,
        items: &'i [T],
        core: impl Fn(&T) -> (usize, usize),
    ) -> Vec<(FrameRows<'a>, &'i [T])> {
        let runs: Vec<&[T]> = items.chunk_by(|a, b| core(a) == core(b)).collect();
        let cores: Vec<(usize, usize)> = runs.iter().map(|run| core(&run[0])).collect();
        let end = self.first + self.nspec();
        let disjoint = cores.first().is_none_or(|&(s, _)| s >= self.first)
            && cores.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0)
            && cores.last().is_none_or(|&(s, n)| s + n <= end);
        if !disjoint {
            return vec![(self, items)];
        }
        let mut parts = Vec::with_capacity(runs.len());
        let mut rest = self;
        for (run, (first, n)) in runs.into_iter().zip(cores) {
            let skip = first - rest.first;
            let (_, tail) = rest.split_rows(skip);
            let (mine, tail) = tail.split_rows(n);
            parts.push((mine, run));
            rest = tail;
        }
        parts
    }

    /// The median chi2pix of each spectrum of these rows ([`row_medians`]).
    pub fn chi2pix_medians(&self) -> Vec<f64> {
        row_medians(self.chi2pix, self.nwave)
    }

    /// Copies a patch's core outputs (its spectra must lie in these rows).
    pub fn insert(&mut self, plan: &PatchPlan, result: &PatchResult, pad: usize) {
        let keep = plan.keep;
        let w0 = plan.out_wave_min(pad);
        let ndiagonal = self.ndiagonal;
        for c in 0..plan.nspp {
            let row = plan.ispec + c - self.first;
            let dst = row * self.nwave + w0;
            let src = c * keep;
            self.flux[dst..dst + keep].copy_from_slice(&result.flux[src..src + keep]);
            self.ivar[dst..dst + keep].copy_from_slice(&result.ivar[src..src + keep]);
            self.chi2pix[dst..dst + keep].copy_from_slice(&result.chi2pix[src..src + keep]);
            self.pixmask_fraction[dst..dst + keep]
                .copy_from_slice(&result.pixmask_fraction[src..src + keep]);
            for d in 0..ndiagonal {
                let dst = (row * ndiagonal + d) * self.nwave + w0;
                let src = (c * ndiagonal + d) * keep;
                self.rdiags[dst..dst + keep].copy_from_slice(&result.rdiags[src..src + keep]);
            }
        }
    }
}

/// desispec specmask bit SOMEBADPIX (pixmask_fraction > 0.5).
pub const SOMEBADPIX: u32 = 1 << 0;
/// desispec specmask bit ALLBADPIX (pixmask_fraction == 1).
pub const ALLBADPIX: u32 = 1 << 1;
/// desispec specmask bit COSMIC ("Input pixels included a masked cosmic"): set on bins whose
/// pixels the outlier rejection removed (docs/algorithm.md §4.11).
pub const COSMIC: u32 = 1 << 2;
/// desispec specmask bit BAD2DFIT ("Bad fit of extraction 2D model to pixel data"): chi2pix
/// far above its medians ([`MaskRule`]); we also set it, with ivar 0, on the bins of a patch
/// that could not be solved and on bins whose outputs were not finite (docs/algorithm.md §1.3).
pub const BAD2DFIT: u32 = 1 << 7;
/// desispec specmask bit NODATA ("No data exists"): we set it, with ivar 0, on the bins of a
/// patch whose pixels lie off the CCD and on any other bin left with ivar 0 and no other bit.
pub const NODATA: u32 = 1 << 8;

/// The rule that turns chi2pix into BAD2DFIT (docs/algorithm.md §1.3). SOMEBADPIX and
/// ALLBADPIX are the same in both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MaskRule {
    /// desispec main's `get_spectrum_mask`: chi2pix > 5 × the median over the frame's fibers
    /// at that wavelength **and** > 5 × the median over wavelengths of that fiber.
    #[default]
    Main,
    /// desispec 0.70.0's `main_gpu_specter`: chi2pix > 100.
    V0_70,
}

impl MaskRule {
    /// The rule by its command-line name: `main` or `0.70`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "main" => Some(Self::Main),
            "0.70" => Some(Self::V0_70),
            _ => None,
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::V0_70 => "0.70",
        }
    }
}

/// Columns per task of [`column_medians`]: a fiber's 64 values are 8 whole cache lines.
const MEDIAN_COLUMNS: usize = 64;

/// The [`median`] of every column of the row-major `(nrow, ncol)` array `values`: columns in
/// blocks of [`MEDIAN_COLUMNS`] in parallel, each block gathered row segment by row segment
/// (whole cache lines, not one strided value per line) into column-contiguous scratch, where
/// each column's median is selected in place. The same values per column as a strided gather:
/// the same medians.
fn column_medians(values: &[f64], nrow: usize, ncol: usize) -> Vec<f64> {
    if nrow == 0 || ncol == 0 {
        return vec![f64::NAN; ncol];
    }
    let mut medians = vec![0.0; ncol];
    medians
        .par_chunks_mut(MEDIAN_COLUMNS)
        .enumerate()
        .for_each(|(block, out)| {
            let (j0, width) = (block * MEDIAN_COLUMNS, out.len());
            let mut columns = vec![0.0; width * nrow];
            for (s, row) in values.chunks_exact(ncol).take(nrow).enumerate() {
                for (c, &v) in row[j0..j0 + width].iter().enumerate() {
                    columns[c * nrow + s] = v;
                }
            }
            for (m, column) in out.iter_mut().zip(columns.chunks_exact_mut(nrow)) {
                *m = median_in_place(column);
            }
        });
    medians
}

/// The frame MASK as desispec computes it from pixmask_fraction and chi2pix
/// (docs/algorithm.md §1.3): SOMEBADPIX where pixmask_fraction > 0.5, ALLBADPIX where it
/// equals 1.0 exactly, BAD2DFIT by `rule`.
pub fn spectrum_mask(arrays: &FrameArrays, rule: MaskRule) -> Vec<u32> {
    spectrum_mask_with(arrays, rule, KnownMedians::default())
}

/// The chi2pix medians of [`MaskRule::Main`] computed before the frame's end: per fiber (by
/// [`row_medians`] of the finished rows, bundle by bundle) and per wavelength (by
/// [`super::wave_medians::SortedColumns`]); `None`, or a length other than the frame's, is
/// computed by [`spectrum_mask_with`].
#[derive(Clone, Debug, Default)]
pub struct KnownMedians {
    /// One per spectrum.
    pub fiber: Option<Vec<f64>>,
    /// One per output bin.
    pub wave: Option<Vec<f64>>,
}

/// The median of each row of `values` (`nwave` values a row), rows in parallel: the
/// per-fiber chi2pix medians of [`MaskRule::Main`].
pub fn row_medians(values: &[f64], nwave: usize) -> Vec<f64> {
    values
        .par_chunks(nwave.max(1))
        .map(|row| median(row.to_vec()))
        .collect()
}

/// [`spectrum_mask`], with the medians that are `known` already (e.g. computed while the
/// backend solved later bundles); the others are computed here.
pub fn spectrum_mask_with(arrays: &FrameArrays, rule: MaskRule, known: KnownMedians) -> Vec<u32> {
    let (nspec, nwave) = (arrays.nspec, arrays.nwave);
    let chi = &arrays.chi2pix;
    let (fiber_median, wave_median): (Vec<f64>, Vec<f64>) = match rule {
        MaskRule::Main => {
            let fiber_median = match known.fiber {
                Some(fiber) if fiber.len() == nspec => fiber,
                _ => row_medians(chi, nwave),
            };
            let wave_median = match known.wave {
                Some(wave) if wave.len() == nwave => wave,
                _ => column_medians(chi, nspec, nwave),
            };
            (fiber_median, wave_median)
        }
        MaskRule::V0_70 => (Vec::new(), Vec::new()),
    };
    let bad2d = |i: usize, s: usize, j: usize| match rule {
        MaskRule::Main => chi[i] > 5.0 * wave_median[j] && chi[i] > 5.0 * fiber_median[s],
        MaskRule::V0_70 => chi[i] > 100.0,
    };
    // Written once, rows in parallel, into memory never zeroed: zeroing the 4.7 MB of a full
    // frame's mask first (calloc on one thread) made this loop take ~0.9 ms on the GPU hosts
    // instead of ~0.4 ms, at the end of the frame's critical path.
    let len = nspec * nwave;
    let mut mask: Vec<u32> = Vec::with_capacity(len);
    mask.spare_capacity_mut()[..len]
        .par_chunks_mut(nwave.max(1))
        .enumerate()
        .for_each(|(s, row)| {
            for (j, m) in row.iter_mut().enumerate() {
                let i = s * nwave + j;
                let frac = arrays.pixmask_fraction[i];
                let mut bits = 0;
                if frac > 0.5 {
                    bits |= SOMEBADPIX;
                }
                if frac == 1.0 {
                    bits |= ALLBADPIX;
                }
                if bad2d(i, s, j) {
                    bits |= BAD2DFIT;
                }
                m.write(bits);
            }
        });
    // SAFETY: the chunks above cover the first `len` elements, and each was written.
    unsafe { mask.set_len(len) };
    mask
}

impl FrameArrays {
    /// Zeroes every bin (flux, ivar, chi2pix and its resolution column) one of whose outputs
    /// is not finite at the f32 precision of the frame file, and returns their indices
    /// (`ispec_row · nwave + iwave`). Nothing upstream should produce one (docs/algorithm.md
    /// §5); this is the guarantee that none reaches a file.
    pub fn zero_nonfinite(&mut self) -> Vec<usize> {
        let rows = BinsMut {
            flux: &mut self.flux,
            ivar: &mut self.ivar,
            chi2pix: &mut self.chi2pix,
            pixmask_fraction: &mut self.pixmask_fraction,
            rdiags: &mut self.rdiags,
            nwave: self.nwave,
        };
        zero_nonfinite_rows(rows, 2 * self.ndiag + 1, |_| {})
    }
}

/// Runs `before` and then [`BinsMut::zero_nonfinite`] on each spectrum of `rows` (`nwave` bins
/// each, `ndiagonal` resolution diagonals), spectra in parallel, and returns the zeroed bins
/// as `row · nwave + iwave`, ascending. A row's values are checked in branch-free passes and
/// only a row holding a bad value is searched bin by bin.
fn zero_nonfinite_rows(
    rows: BinsMut<'_>,
    ndiagonal: usize,
    before: impl Fn(&mut BinsMut<'_>) + Sync,
) -> Vec<usize> {
    let nwave = rows.nwave.max(1);
    let bad_rows: Vec<Vec<usize>> = rows
        .flux
        .par_chunks_mut(nwave)
        .zip(rows.ivar.par_chunks_mut(nwave))
        .zip(rows.chi2pix.par_chunks_mut(nwave))
        .zip(rows.pixmask_fraction.par_chunks_mut(nwave))
        .zip(rows.rdiags.par_chunks_mut(nwave * ndiagonal))
        .enumerate()
        .map(|(row, ((((flux, ivar), chi2pix), fraction), rdiags))| {
            let mut bins = BinsMut {
                flux,
                ivar,
                chi2pix,
                pixmask_fraction: fraction,
                rdiags,
                nwave,
            };
            before(&mut bins);
            bins.zero_nonfinite()
                .into_iter()
                .map(|j| row * nwave + j)
                .collect()
        })
        .collect();
    bad_rows.concat()
}

/// One spectrum's bins: `(nwave,)` arrays and `(2·ndiag+1, nwave)` resolution diagonals.
struct BinsMut<'a> {
    flux: &'a mut [f64],
    ivar: &'a mut [f64],
    chi2pix: &'a mut [f64],
    pixmask_fraction: &'a mut [f64],
    rdiags: &'a mut [f64],
    nwave: usize,
}

/// Whether `v` is finite at the f32 precision of the frame file.
#[inline(always)]
fn finite_f32(v: f64) -> bool {
    (v as f32).is_finite()
}

/// Whether every value of `values` is [`finite_f32`] (a branch-free pass).
fn all_finite_f32(values: &[f64]) -> bool {
    values.iter().fold(true, |ok, &v| ok & finite_f32(v))
}

impl BinsMut<'_> {
    /// [`FrameArrays::zero_nonfinite`] of this spectrum: the bins zeroed, ascending.
    fn zero_nonfinite(&mut self) -> Vec<usize> {
        let clean = all_finite_f32(self.flux)
            && all_finite_f32(self.ivar)
            && all_finite_f32(self.chi2pix)
            && all_finite_f32(self.pixmask_fraction)
            && all_finite_f32(self.rdiags);
        if clean {
            return Vec::new();
        }
        let nwave = self.nwave;
        let ndiagonal = self.rdiags.len() / nwave.max(1);
        let bad: Vec<usize> = (0..nwave)
            .filter(|&j| {
                !(finite_f32(self.flux[j])
                    && finite_f32(self.ivar[j])
                    && finite_f32(self.chi2pix[j])
                    && finite_f32(self.pixmask_fraction[j])
                    && (0..ndiagonal).all(|d| finite_f32(self.rdiags[d * nwave + j])))
            })
            .collect();
        for &j in &bad {
            self.flux[j] = 0.0;
            self.ivar[j] = 0.0;
            self.chi2pix[j] = 0.0;
            if !self.pixmask_fraction[j].is_finite() {
                self.pixmask_fraction[j] = 0.0;
            }
            for d in 0..ndiagonal {
                self.rdiags[d * nwave + j] = 0.0;
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked column medians equal the strided gather's, over block edges (widths not a
    /// multiple of the block), odd and even row counts, repeated values, NaNs and empty shapes.
    #[test]
    fn column_medians_are_the_strided_medians() {
        for (nrow, ncol) in [(1, 1), (2, 3), (5, 64), (7, 65), (500, 130), (4, 200)] {
            let values: Vec<f64> = (0..nrow * ncol)
                .map(|i| match i % 37 {
                    0 => f64::NAN,
                    5 => 2.5,
                    _ => ((i * 7919) % 1009) as f64 * 0.01 - 3.0,
                })
                .collect();
            let blocked = column_medians(&values, nrow, ncol);
            for (j, m) in blocked.iter().enumerate() {
                let strided = median((0..nrow).map(|s| values[s * ncol + j]).collect());
                assert_eq!(m.to_bits(), strided.to_bits(), "{nrow}x{ncol} column {j}");
            }
        }
        assert!(column_medians(&[], 0, 3).iter().all(|m| m.is_nan()));
        assert!(column_medians(&[], 4, 0).is_empty());
    }

    /// `split_rows` hands out the spectra `[first, first + n)` and the rest, every plane
    /// (the resolution's `ndiagonal` rows per spectrum included), and clamps `n`.
    #[test]
    fn split_rows_cover_their_spectra_in_every_plane() {
        let (nspec, nwave, ndiag) = (7, 4, 1);
        let mut arrays = FrameArrays::new(10, nspec, nwave, ndiag);
        {
            let mut blocks = arrays.row_blocks_mut(nspec);
            let rows = blocks.pop().expect("one block");
            assert_eq!(rows.nspec(), nspec);
            let (mut a, b) = rows.split_rows(3);
            let (mut b, empty) = b.split_rows(99);
            assert_eq!((a.first(), a.nspec()), (10, 3));
            assert_eq!((b.first(), b.nspec()), (13, 4));
            assert_eq!((empty.first(), empty.nspec()), (17, 0));
            for (rows, value) in [(&mut a, 1.0), (&mut b, 2.0)] {
                for plane in [
                    &mut *rows.flux,
                    &mut *rows.ivar,
                    &mut *rows.chi2pix,
                    &mut *rows.pixmask_fraction,
                    &mut *rows.rdiags,
                ] {
                    plane.fill(value);
                }
            }
        }
        let row_of = |i: usize, per_spectrum: usize| i / per_spectrum;
        for plane in [
            &arrays.flux,
            &arrays.ivar,
            &arrays.chi2pix,
            &arrays.pixmask_fraction,
        ] {
            for (i, &v) in plane.iter().enumerate() {
                assert_eq!(v, if row_of(i, nwave) < 3 { 1.0 } else { 2.0 }, "bin {i}");
            }
        }
        let per_spectrum = nwave * (2 * ndiag + 1);
        for (i, &v) in arrays.rdiags.iter().enumerate() {
            assert_eq!(
                v,
                if row_of(i, per_spectrum) < 3 {
                    1.0
                } else {
                    2.0
                },
                "rdiag {i}"
            );
        }
    }

    /// The mask with the per-fiber or per-wavelength medians handed in (as the frame pipeline
    /// computes them) is the mask that computes them; medians of the wrong length are not used.
    #[test]
    fn known_medians_give_the_same_mask() {
        let (nspec, nwave) = (6, 9);
        let mut a = FrameArrays::new(0, nspec, nwave, 1);
        a.chi2pix = (0..nspec * nwave)
            .map(|i| 1.0 + ((i * 37) % 11) as f64 * 0.1)
            .collect();
        a.chi2pix[13] = 50.0; // far above both medians: BAD2DFIT
        a.chi2pix[40] = 7.0;
        let reference = spectrum_mask(&a, MaskRule::Main);
        assert!(reference.iter().any(|&m| m & BAD2DFIT != 0));
        let medians = row_medians(&a.chi2pix, nwave);
        assert_eq!(medians.len(), nspec);
        let fiber = |medians: Vec<f64>| KnownMedians {
            fiber: Some(medians),
            wave: None,
        };
        let wave = |medians: Vec<f64>| KnownMedians {
            fiber: None,
            wave: Some(medians),
        };
        assert_eq!(
            spectrum_mask_with(&a, MaskRule::Main, fiber(medians.clone())),
            reference
        );
        let wave_medians = column_medians(&a.chi2pix, nspec, nwave);
        let both = KnownMedians {
            fiber: Some(medians),
            wave: Some(wave_medians),
        };
        assert_eq!(spectrum_mask_with(&a, MaskRule::Main, both), reference);
        // Wrong medians of the wrong length are ignored (recomputed).
        for wrong in [fiber(vec![1e9; nspec - 1]), wave(vec![1e9; nwave + 1])] {
            assert_eq!(spectrum_mask_with(&a, MaskRule::Main, wrong), reference);
        }
        // Medians so large that nothing is above 5x them: no BAD2DFIT (they are used).
        for huge in [fiber(vec![1e9; nspec]), wave(vec![1e9; nwave])] {
            let mask = spectrum_mask_with(&a, MaskRule::Main, huge);
            assert!(mask.iter().all(|&m| m & BAD2DFIT == 0));
        }
    }

    #[test]
    fn mask_bits_follow_desispec_rules() {
        let mut a = FrameArrays::new(0, 3, 4, 1);
        a.chi2pix = vec![1.0; 12];
        a.chi2pix[5] = 100.0; // fiber 1, wave 1: far above both medians
        a.pixmask_fraction[0] = 1.0;
        a.pixmask_fraction[1] = 0.75;
        a.pixmask_fraction[2] = 0.5;
        a.pixmask_fraction[3] = 1.0 - 1e-16;
        let m = spectrum_mask(&a, MaskRule::Main);
        assert_eq!(m[0], SOMEBADPIX | ALLBADPIX);
        assert_eq!(m[1], SOMEBADPIX);
        assert_eq!(m[2], 0);
        assert_eq!(m[3], SOMEBADPIX);
        assert_eq!(m[5], BAD2DFIT);
        assert_eq!(m.iter().filter(|&&v| v & BAD2DFIT != 0).count(), 1);
    }

    #[test]
    fn the_two_bad2dfit_rules_differ_as_desispec_does() {
        // 5 fibers x 4 bins on a background of 1. Fiber 4 is bright everywhere (chi2pix 150):
        // above 100, so 0.70 flags it, but not above 5x its own median, so main does not.
        // Fiber 0 bin 3 is 60: main flags it (> 5x both medians), 0.70 does not (<= 100).
        // Fiber 1 bin 0 is exactly 100: main flags it, 0.70 does not (strict >).
        let mut a = FrameArrays::new(0, 5, 4, 1);
        a.chi2pix = vec![1.0; 20];
        a.chi2pix[3] = 60.0;
        a.chi2pix[4] = 100.0;
        a.chi2pix[16..20].copy_from_slice(&[150.0; 4]);
        let main = spectrum_mask(&a, MaskRule::Main);
        let old = spectrum_mask(&a, MaskRule::V0_70);
        let flagged =
            |m: &[u32]| -> Vec<usize> { (0..20).filter(|&i| m[i] & BAD2DFIT != 0).collect() };
        assert_eq!(flagged(&main), [3, 4]);
        assert_eq!(flagged(&old), [16, 17, 18, 19]);
        assert_eq!(MaskRule::from_name("0.70"), Some(MaskRule::V0_70));
        assert_eq!(MaskRule::from_name("main"), Some(MaskRule::Main));
        assert_eq!(MaskRule::from_name("0.7"), None);
    }

    #[test]
    fn nonfinite_bins_are_zeroed_including_f32_overflow() {
        let mut a = FrameArrays::new(0, 2, 3, 1);
        a.flux = vec![1.0; 6];
        a.ivar = vec![2.0; 6];
        a.chi2pix = vec![1.0; 6];
        a.rdiags = vec![0.5; 18];
        a.flux[1] = f64::NAN;
        a.ivar[3] = 1e39; // finite in f64, infinite in the f32 file
        a.rdiags[2 * 3 + 2] = f64::INFINITY; // fiber 0 bin 2, last diagonal
        let bad = a.zero_nonfinite();
        assert_eq!(bad, [1, 2, 3]);
        for &i in &bad {
            assert_eq!((a.flux[i], a.ivar[i], a.chi2pix[i]), (0.0, 0.0, 0.0));
        }
        assert_eq!(a.ivar[0], 2.0);
        assert!(a.rdiags.iter().all(|v| v.is_finite()));
    }
}
