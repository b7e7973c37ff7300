//! Wavelength grids (docs/algorithm.md §3.1): the requested grid built by numpy's `arange` rule
//! and the padded `fullwave` grid on which spots and unknowns live.

use thiserror::Error;

/// Errors in the definition of a wavelength grid.
#[derive(Debug, Error, PartialEq)]
pub enum GridError {
    /// The triple `wmin,wmax,dw` does not define a grid.
    #[error("invalid wavelength grid {wmin},{wmax},{dw}: {reason}")]
    Invalid {
        /// First wavelength (Angstrom).
        wmin: f64,
        /// Last wavelength (Angstrom).
        wmax: f64,
        /// Step (Angstrom).
        dw: f64,
        /// What is wrong.
        reason: String,
    },
}

/// Largest wavelength step (Angstrom): DESI extracts on 0.8 A; with the traces at 1.4-2 CCD
/// rows per Angstrom, a step beyond a few Angstrom leaves rows between the spots of
/// consecutive bins that no unknown models.
pub const MAX_WAVE_STEP: f64 = 2.0;

/// Most wavelengths in a grid: DESI's grids have 2,326-2,881 (0.8 A over a camera's range).
pub const MAX_NWAVE: usize = 20_000;

/// The requested output grid, exactly as numpy `arange(wmin, wmax + dw/2, dw)` builds it.
#[derive(Clone, Debug, PartialEq)]
pub struct WavelengthGrid {
    /// Requested first wavelength (Angstrom).
    pub wmin: f64,
    /// Requested last wavelength (Angstrom).
    pub wmax: f64,
    /// Requested step (Angstrom).
    pub dw: f64,
    /// Grid values, length `nwave`: `wave[i] = wmin + i * ((wmin + dw) - wmin)`.
    pub wave: Vec<f64>,
}

impl WavelengthGrid {
    /// Builds the grid by numpy's `arange` rule: `nwave = ceil((wmax + dw/2 - wmin) / dw)` and
    /// `wave[i] = wmin + i * delta` with `delta = (wmin + dw) - wmin` evaluated in f64
    /// (docs/algorithm.md §11, pitfall 1: reproduces the WAVELENGTH HDU bit for bit).
    pub fn arange(wmin: f64, wmax: f64, dw: f64) -> Result<Self, GridError> {
        let invalid = |reason: &str| GridError::Invalid {
            wmin,
            wmax,
            dw,
            reason: reason.to_string(),
        };
        if !(wmin.is_finite() && wmax.is_finite() && dw.is_finite()) {
            return Err(invalid("values must be finite"));
        }
        if dw <= 0.0 {
            return Err(invalid("the step must be positive"));
        }
        if wmax < wmin {
            return Err(invalid("wmax must not be below wmin"));
        }
        if dw > MAX_WAVE_STEP {
            return Err(invalid(&format!(
                "the step must not exceed {MAX_WAVE_STEP} A (DESI extracts on 0.8 A)"
            )));
        }
        let count = ((wmax + 0.5 * dw - wmin) / dw).ceil();
        if count > MAX_NWAVE as f64 {
            return Err(invalid(&format!(
                "{count} wavelengths, more than the limit of {MAX_NWAVE} (DESI's grids have about 2,900)"
            )));
        }
        if count < 2.0 {
            return Err(invalid(&format!(
                "{count} wavelength(s): a grid needs at least two (bin widths are differences)"
            )));
        }
        let nwave = count as usize;
        let delta = (wmin + dw) - wmin;
        let wave = (0..nwave).map(|i| wmin + i as f64 * delta).collect();
        Ok(Self {
            wmin,
            wmax,
            dw,
            wave,
        })
    }

    /// Number of wavelengths.
    pub fn nwave(&self) -> usize {
        self.wave.len()
    }

    /// Bin widths by numpy `gradient(wave)`: central differences inside, one-sided at the ends
    /// (used to convert photons per bin to photons per Angstrom, docs/algorithm.md §5).
    pub fn bin_widths(&self) -> Vec<f64> {
        gradient(&self.wave)
    }
}

/// numpy `gradient` of a 1-D array with unit spacing.
pub fn gradient(values: &[f64]) -> Vec<f64> {
    let n = values.len();
    match n {
        0 => Vec::new(),
        1 => vec![0.0],
        _ => (0..n)
            .map(|i| {
                if i == 0 {
                    values[1] - values[0]
                } else if i == n - 1 {
                    values[n - 1] - values[n - 2]
                } else {
                    (values[i + 1] - values[i - 1]) / 2.0
                }
            })
            .collect(),
    }
}

/// The padded grid `fullwave = lo ++ wave ++ hi` (docs/algorithm.md §3.1): `pad` bins below,
/// the requested grid, and `pad + nwavestep` bins above so that the last partial patch has a
/// full set of unknowns.
#[derive(Clone, Debug, PartialEq)]
pub struct PaddedGrid {
    /// The requested grid.
    pub grid: WavelengthGrid,
    /// Effective pad P = wavepad + floor(wavepad * wavepad_frac) (bins).
    pub pad: usize,
    /// Core bins per patch.
    pub nwavestep: usize,
    /// fullwave values, length `nwave + 2*pad + nwavestep`.
    pub fullwave: Vec<f64>,
}

impl PaddedGrid {
    /// Builds fullwave with the exact operation order of gpu_specter:
    /// `lo[k] = ((k*dw) - ((P-1)*dw + dw)) + wmin` and `hi[k] = wave[-1] + (k+1)*dw`.
    pub fn new(grid: WavelengthGrid, pad: usize, nwavestep: usize) -> Self {
        let dw = grid.dw;
        let lo_max = pad.saturating_sub(1) as f64 * dw;
        let mut fullwave = Vec::with_capacity(grid.nwave() + 2 * pad + nwavestep);
        fullwave.extend((0..pad).map(|k| ((k as f64 * dw) - (lo_max + dw)) + grid.wmin));
        fullwave.extend_from_slice(&grid.wave);
        let last = grid.wave.last().copied().unwrap_or(grid.wmin);
        fullwave.extend((0..pad + nwavestep).map(|k| last + (1.0 + k as f64) * dw));
        Self {
            grid,
            pad,
            nwavestep,
            fullwave,
        }
    }

    /// Effective pad of gpu_specter: `wavepad + floor(wavepad * wavepad_frac)`.
    pub fn effective_pad(wavepad: usize, wavepad_frac: f64) -> usize {
        wavepad + (wavepad as f64 * wavepad_frac).floor() as usize
    }

    /// Number of fullwave points.
    pub fn nfull(&self) -> usize {
        self.fullwave.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_camera_grid_matches_numpy_arange() {
        let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).unwrap();
        assert_eq!(grid.nwave(), 2326);
        assert_eq!(grid.wave[grid.nwave() - 1], 7620.000000000423);
        assert_eq!((5760.0f64 + 0.8) - 5760.0, 0.8000000000001819);
        let padded = PaddedGrid::new(grid, PaddedGrid::effective_pad(10, 0.2), 50);
        assert_eq!(padded.pad, 12);
        assert_eq!(padded.nfull(), 2400);
        assert!((padded.fullwave[0] - 5750.4).abs() < 1e-9);
        assert!((padded.fullwave[2399] - 7669.6).abs() < 1e-9);
    }

    #[test]
    fn b_and_z_grids_match_desi_proc() {
        let b = WavelengthGrid::arange(3600.0, 5800.0, 0.8).unwrap();
        assert_eq!(b.nwave(), 2751);
        assert_eq!(b.wave[2750], 5800.0000000005);
        let z = WavelengthGrid::arange(7520.0, 9824.0, 0.8).unwrap();
        assert_eq!(z.nwave(), 2881);
        assert_eq!(z.wave[2880], 9824.000000000524);
    }

    #[test]
    fn gradient_is_one_sided_at_the_ends() {
        assert_eq!(gradient(&[1.0, 2.0, 4.0, 7.0]), vec![1.0, 1.5, 2.5, 3.0]);
    }

    #[test]
    fn bad_grids_are_rejected() {
        assert!(WavelengthGrid::arange(6000.0, 5000.0, 0.8).is_err());
        assert!(WavelengthGrid::arange(6000.0, 7000.0, 0.0).is_err());
        assert!(WavelengthGrid::arange(f64::NAN, 7000.0, 0.8).is_err());
        // One point (numpy would give a single bin of width 0), steps beyond the limit.
        assert!(WavelengthGrid::arange(6000.0, 6000.0, 0.8).is_err());
        assert!(WavelengthGrid::arange(6000.0, 6000.3, 0.8).is_err());
        assert!(WavelengthGrid::arange(6000.0, 6100.0, 1000.0).is_err());
        assert!(WavelengthGrid::arange(6000.0, 6100.0, 30.0).is_err());
        assert!(WavelengthGrid::arange(3600.0, 9824.0, 0.1).is_err());
        // The limits themselves are allowed.
        assert_eq!(
            WavelengthGrid::arange(6000.0, 6000.8, 0.8).unwrap().nwave(),
            2
        );
        assert_eq!(
            WavelengthGrid::arange(6000.0, 6100.0, MAX_WAVE_STEP)
                .unwrap()
                .nwave(),
            51
        );
    }
}
