//! Evaluation of a [`GaussHermitePsf`] through the shared device numerics: flattened
//! coefficient tables and spot stamps for ranges of fibers and wavelengths.

use super::GaussHermitePsf;
use desi_device::psf::spot::{spot_at, spot_corners, PsfTables, SpotGeometry, StampCorner};
use rayon::prelude::*;
use thiserror::Error;

/// Wavelengths of one fiber per parallel work item of [`GaussHermitePsf::spots`].
pub const SPOT_CHUNK: usize = 64;

/// Errors while evaluating a PSF.
#[derive(Debug, Error)]
pub enum PsfError {
    /// The device numerics refused an evaluation.
    #[error("PSF {path}: spot of fiber {ispec} at {wave} A failed: {status:?}")]
    Spot {
        /// PSF file.
        path: String,
        /// Spectrum index (relative to FIBERMIN).
        ispec: usize,
        /// Wavelength (Angstrom).
        wave: f64,
        /// Device status.
        status: desi_device::Status,
    },
    /// A fiber range outside the PSF.
    #[error("PSF {path}: fibers {ispec_min}..{ispec_max} requested but the PSF has {nspec}")]
    FiberRange {
        /// PSF file.
        path: String,
        /// First requested spectrum.
        ispec_min: usize,
        /// One past the last requested spectrum.
        ispec_max: usize,
        /// Spectra in the PSF.
        nspec: usize,
    },
}

/// Flattened PSF parameter coefficients, laid out as [`PsfTables::params`] expects.
#[derive(Clone, Debug)]
pub struct FlatPsf {
    params: Vec<f64>,
}

impl GaussHermitePsf {
    /// Stamp geometry (HSIZEX/HSIZEY/GHDEGX/GHDEGY).
    pub fn geometry(&self) -> SpotGeometry {
        SpotGeometry {
            hsizex: self.hsizex,
            hsizey: self.hsizey,
            ghdegx: self.ghdegx,
            ghdegy: self.ghdegy,
        }
    }

    /// Stamp rows (2·HSIZEY+1).
    pub fn stamp_ny(&self) -> usize {
        2 * self.hsizey + 1
    }

    /// Stamp columns (2·HSIZEX+1).
    pub fn stamp_nx(&self) -> usize {
        2 * self.hsizex + 1
    }

    /// Flattens GHSIGX, GHSIGY and GH-i-j into one `(2 + ngh, nspec, legdeg+1)` array.
    pub fn flatten(&self) -> FlatPsf {
        let mut params = Vec::with_capacity((2 + self.gh.len()) * self.sigma_x.coeffs.len());
        params.extend_from_slice(&self.sigma_x.coeffs);
        params.extend_from_slice(&self.sigma_y.coeffs);
        for table in &self.gh {
            params.extend_from_slice(&table.coeffs);
        }
        FlatPsf { params }
    }

    /// Device view of the coefficient tables; `flat` must come from [`Self::flatten`].
    pub fn tables<'a>(&'a self, flat: &'a FlatPsf) -> PsfTables<'a> {
        PsfTables {
            geometry: self.geometry(),
            nspec: self.nspec,
            xtrace: &self.xtrace.coeffs,
            ytrace: &self.ytrace.coeffs,
            ntrace: self.xtrace.ncoeff,
            xtrace_domain: (self.xtrace.wavemin, self.xtrace.wavemax),
            ytrace_domain: (self.ytrace.wavemin, self.ytrace.wavemax),
            params: &flat.params,
            nparam_coeff: self.legdeg + 1,
            param_domain: (self.sigma_x.wavemin, self.sigma_x.wavemax),
        }
    }

    /// Refuses spectra `ispec_min..ispec_min+nspec` beyond the PSF's fibers.
    ///
    /// # Errors
    /// [`PsfError::FiberRange`].
    pub fn check_fibers(&self, ispec_min: usize, nspec: usize) -> Result<(), PsfError> {
        if ispec_min + nspec > self.nspec {
            return Err(PsfError::FiberRange {
                path: self.path.display().to_string(),
                ispec_min,
                ispec_max: ispec_min + nspec,
                nspec: self.nspec,
            });
        }
        Ok(())
    }

    /// The error for a spot of spectrum `ispec` at `wave` (Angstrom) that the device code
    /// refused with `status` (on the host or on a GPU).
    pub fn spot_error(&self, ispec: usize, wave: f64, status: desi_device::Status) -> PsfError {
        PsfError::Spot {
            path: self.path.display().to_string(),
            ispec,
            wave,
            status,
        }
    }

    /// Evaluates the spots of spectra `ispec_min..ispec_min+nspec` at every wavelength of
    /// `waves` (in parallel over runs of [`SPOT_CHUNK`] wavelengths of a fiber; every spot is
    /// computed on its own, so the result does not depend on the threads).
    pub fn spots(
        &self,
        ispec_min: usize,
        nspec: usize,
        waves: &[f64],
    ) -> Result<SpotTable, PsfError> {
        self.check_fibers(ispec_min, nspec)?;
        let flat = self.flatten();
        let tables = self.tables(&flat);
        let (ny, nx) = (self.stamp_ny(), self.stamp_nx());
        let nwave = waves.len();
        // Filled entirely just below: its pages mapped at once (crate::prefault).
        let mut stamps = crate::prefault::zeroed_f64(nspec * nwave * ny * nx);
        let mut corners = vec![StampCorner::default(); nspec * nwave];
        // Work items of up to SPOT_CHUNK wavelengths of one fiber: a bundle's 25 fibers would
        // leave most of a many-core node idle.
        let chunk = SPOT_CHUNK.min(nwave.max(1));
        stamps
            .par_chunks_mut((nwave * ny * nx).max(1))
            .zip(corners.par_chunks_mut(nwave.max(1)))
            .enumerate()
            .flat_map(|(s, (fiber_stamps, fiber_corners))| {
                fiber_stamps
                    .par_chunks_mut((chunk * ny * nx).max(1))
                    .zip(fiber_corners.par_chunks_mut(chunk))
                    .enumerate()
                    .map(move |(c, part)| (s, c, part))
            })
            .try_for_each(|(s, c, (part_stamps, part_corners))| {
                let ispec = ispec_min + s;
                let k0 = c * chunk;
                for (i, corner) in part_corners.iter_mut().enumerate() {
                    let wave = waves[k0 + i];
                    let stamp = &mut part_stamps[i * ny * nx..(i + 1) * ny * nx];
                    *corner = spot_at(&tables, ispec, wave, stamp)
                        .map_err(|status| self.spot_error(ispec, wave, status))?;
                }
                Ok(())
            })?;
        Ok(SpotTable {
            ispec_min,
            nspec,
            nwave,
            ny,
            nx,
            stamps,
            corners,
        })
    }
}

impl GaussHermitePsf {
    /// The stamp corners alone (no stamps) of fibers `ispec_min .. ispec_min + nspec` at
    /// `waves`: what planning needs, the same corners [`GaussHermitePsf::spots`] returns (both
    /// come from the device code's trace evaluation), at a fraction of its cost.
    ///
    /// # Errors
    /// Fibers outside the PSF, or a trace that is not finite or leaves the integer range.
    pub fn corners(
        &self,
        ispec_min: usize,
        nspec: usize,
        waves: &[f64],
    ) -> Result<SpotTable, PsfError> {
        self.check_fibers(ispec_min, nspec)?;
        let flat = self.flatten();
        let tables = self.tables(&flat);
        let nwave = waves.len();
        let mut corners = vec![StampCorner::default(); nspec * nwave];
        // Fibers in parallel, each fiber's wavelengths a vector at a time.
        corners
            .par_chunks_mut(nwave.max(1))
            .enumerate()
            .try_for_each(|(s, row)| {
                let ispec = ispec_min + s;
                spot_corners(&tables, ispec, waves, row)
                    .map_err(|(k, status)| self.spot_error(ispec, waves[k], status))
            })?;
        Ok(SpotTable {
            ispec_min,
            nspec,
            nwave,
            ny: self.stamp_ny(),
            nx: self.stamp_nx(),
            stamps: Vec::new(),
            corners,
        })
    }
}

/// Spot stamps of a block of fibers over a wavelength grid.
#[derive(Clone, Debug)]
pub struct SpotTable {
    /// First spectrum (relative to FIBERMIN).
    pub ispec_min: usize,
    /// Number of spectra.
    pub nspec: usize,
    /// Number of wavelengths.
    pub nwave: usize,
    /// Stamp rows.
    pub ny: usize,
    /// Stamp columns.
    pub nx: usize,
    /// Stamps, shape `(nspec, nwave, ny, nx)`; empty in a corner-only table
    /// ([`GaussHermitePsf::corners`]).
    pub stamps: Vec<f64>,
    /// Stamp corners, shape `(nspec, nwave)`.
    pub corners: Vec<StampCorner>,
}

impl SpotTable {
    /// Stamp of local spectrum `s` at wavelength index `k`, `(ny, nx)` row-major.
    pub fn stamp(&self, s: usize, k: usize) -> &[f64] {
        let size = self.ny * self.nx;
        let start = (s * self.nwave + k) * size;
        &self.stamps[start..start + size]
    }

    /// Corner of local spectrum `s` at wavelength index `k`.
    pub fn corner(&self, s: usize, k: usize) -> StampCorner {
        self.corners[s * self.nwave + k]
    }
}
