//! Stitching patch outputs into frame arrays and finalizing them (docs/algorithm.md §5, §1.3).

use super::PatchPlan;
use crate::solve::PatchResult;
use crate::stats::median;
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
            out.push(FrameRows {
                first: self.specmin + i * rows_per_block,
                nwave,
                ndiagonal,
                flux,
                ivar,
                chi2pix,
                pixmask_fraction,
                rdiags,
            });
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
            .map(|(ivar, fracs)| {
                let mut count = 0;
                for (iv, &frac) in ivar.iter_mut().zip(fracs) {
                    if frac == 1.0 && *iv != 0.0 {
                        *iv = 0.0;
                        count += 1;
                    }
                }
                count
            })
            .sum()
    }

    /// Converts flux and ivar from per bin to per Angstrom: `flux /= dwave`,
    /// `ivar *= dwave²` with `dwave` = numpy `gradient(wave)`.
    pub fn to_per_angstrom(&mut self, dwave: &[f64]) {
        let nwave = self.nwave.max(1);
        self.flux
            .par_chunks_mut(nwave)
            .zip(self.ivar.par_chunks_mut(nwave))
            .for_each(|(flux, ivar)| {
                for ((f, iv), &dw) in flux.iter_mut().zip(ivar.iter_mut()).zip(dwave) {
                    *f /= dw;
                    *iv *= dw * dw;
                }
            });
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

impl FrameRows<'_> {
    /// The flux of spectrum `ispec` (frame numbering; it must lie in these rows) at output bin
    /// `iwave`.
    pub fn flux_at(&self, ispec: usize, iwave: usize) -> f64 {
        self.flux[(ispec - self.first) * self.nwave + iwave]
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
/// desispec specmask bit BAD2DFIT (chi2pix far above both its fiber's and its wavelength's medians).
pub const BAD2DFIT: u32 = 1 << 7;

/// The frame MASK as desispec's `get_spectrum_mask` computes it (docs/algorithm.md §1.3):
/// SOMEBADPIX where pixmask_fraction > 0.5, ALLBADPIX where it equals 1.0 exactly, BAD2DFIT
/// where chi2pix exceeds 5× the median over fibers at that wavelength and 5× the median over
/// wavelengths of that fiber.
pub fn spectrum_mask(arrays: &FrameArrays) -> Vec<u32> {
    let (nspec, nwave) = (arrays.nspec, arrays.nwave);
    let chi = &arrays.chi2pix;
    let fiber_median: Vec<f64> = (0..nspec)
        .into_par_iter()
        .map(|s| median(chi[s * nwave..(s + 1) * nwave].to_vec()))
        .collect();
    let wave_median: Vec<f64> = (0..nwave)
        .into_par_iter()
        .map(|j| median((0..nspec).map(|s| chi[s * nwave + j]).collect()))
        .collect();
    let mut mask = vec![0u32; nspec * nwave];
    mask.par_chunks_mut(nwave.max(1))
        .zip(fiber_median.par_iter())
        .enumerate()
        .for_each(|(s, (row, &fiber_med))| {
            for (j, (m, &wave_med)) in row.iter_mut().zip(&wave_median).enumerate() {
                let i = s * nwave + j;
                let frac = arrays.pixmask_fraction[i];
                if frac > 0.5 {
                    *m |= SOMEBADPIX;
                }
                if frac == 1.0 {
                    *m |= ALLBADPIX;
                }
                if chi[i] > 5.0 * wave_med && chi[i] > 5.0 * fiber_med {
                    *m |= BAD2DFIT;
                }
            }
        });
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_bits_follow_desispec_rules() {
        let mut a = FrameArrays::new(0, 3, 4, 1);
        a.chi2pix = vec![1.0; 12];
        a.chi2pix[5] = 100.0; // fiber 1, wave 1: far above both medians
        a.pixmask_fraction[0] = 1.0;
        a.pixmask_fraction[1] = 0.75;
        a.pixmask_fraction[2] = 0.5;
        a.pixmask_fraction[3] = 1.0 - 1e-16;
        let m = spectrum_mask(&a);
        assert_eq!(m[0], SOMEBADPIX | ALLBADPIX);
        assert_eq!(m[1], SOMEBADPIX);
        assert_eq!(m[2], 0);
        assert_eq!(m[3], SOMEBADPIX);
        assert_eq!(m[5], BAD2DFIT);
        assert_eq!(m.iter().filter(|&&v| v & BAD2DFIT != 0).count(), 1);
    }
}
