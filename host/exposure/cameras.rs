//! The DESI cameras: bands b, r and z of spectrographs 0..9, each band with desi_proc's
//! extraction grid and PSF error (docs/algorithm.md §8), and the Legendre domain of the labelled
//! stand-in b and z PSFs that `standin-psf` derives from a real r PSF ([`standin_domain`]).

use crate::patch::{GridError, WavelengthGrid};
use std::ops::Range;

pub use crate::io::limits::FIBERS_PER_CAMERA;

/// One band of the DESI spectrographs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CameraBand {
    /// The band letter: `b`, `r` or `z`.
    pub band: char,
    /// desi_proc's grid `-w WMIN,WMAX,DW` (Angstrom).
    pub wave: (f64, f64, f64),
    /// desi_proc's `--psferr`.
    pub psferr: f64,
}

/// The three bands, in the order desi_proc lists a spectrograph's cameras.
pub const BANDS: [CameraBand; 3] = [
    CameraBand {
        band: 'b',
        wave: (3600.0, 5800.0, 0.8),
        psferr: 0.04,
    },
    CameraBand {
        band: 'r',
        wave: (5760.0, 7620.0, 0.8),
        psferr: 0.01,
    },
    CameraBand {
        band: 'z',
        wave: (7520.0, 9824.0, 0.8),
        psferr: 0.01,
    },
];

/// The Legendre domain of a stand-in PSF of band `target` made from a real r PSF whose domain
/// is `real_domain`: the linear relabelling that puts the r band's grid onto `target`'s grid,
/// so that on every grid point of `target` the stand-in's traces are the r traces at the matching
/// r grid point (on the CCD wherever the r grid is). `None` for r itself.
pub fn standin_domain(target: &CameraBand, real_domain: (f64, f64)) -> Option<(f64, f64)> {
    if target.band == 'r' {
        return None;
    }
    let r = band('r')?.wave;
    let scale = (target.wave.1 - target.wave.0) / (r.1 - r.0);
    let map = |w: f64| target.wave.0 + (w - r.0) * scale;
    Some((map(real_domain.0), map(real_domain.1)))
}

/// The spectrograph numbers.
pub const SPECTROGRAPHS: Range<usize> = 0..10;

/// The band with letter `band` (lower case).
pub fn band(band: char) -> Option<&'static CameraBand> {
    BANDS.iter().find(|b| b.band == band)
}

/// The band of a camera name such as `r3` (its first letter).
pub fn camera_band(camera: &str) -> Option<&'static CameraBand> {
    camera.chars().next().and_then(band)
}

/// Every camera name in desi_proc's order: b0 r0 z0 b1 r1 z1 ... z9.
pub fn all_cameras() -> impl Iterator<Item = String> {
    SPECTROGRAPHS.flat_map(|spectrograph| {
        BANDS
            .iter()
            .map(move |b| format!("{}{spectrograph}", b.band))
    })
}

impl CameraBand {
    /// The band's output grid; with `wave_span`, only its first `wave_span` Angstrom.
    ///
    /// # Errors
    /// An invalid grid (a `wave_span` that is not positive).
    pub fn grid(&self, wave_span: Option<f64>) -> Result<WavelengthGrid, GridError> {
        let (wmin, mut wmax, dw) = self.wave;
        if let Some(span) = wave_span {
            wmax = wmax.min(wmin + span);
        }
        WavelengthGrid::arange(wmin, wmax, dw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_carry_desi_procs_grids_and_psf_errors() {
        let b = band('b').unwrap();
        assert_eq!((b.wave, b.psferr), ((3600.0, 5800.0, 0.8), 0.04));
        let r = camera_band("r7").unwrap();
        assert_eq!((r.wave, r.psferr), ((5760.0, 7620.0, 0.8), 0.01));
        let z = camera_band("z0").unwrap();
        assert_eq!((z.wave, z.psferr), ((7520.0, 9824.0, 0.8), 0.01));
        assert!(band('x').is_none() && camera_band("").is_none());
    }

    #[test]
    fn standin_domains_put_the_r_grid_onto_the_bands_grid() {
        let real = (5500.0, 7800.0);
        assert_eq!(standin_domain(band('r').unwrap(), real), None);
        for b in [band('b').unwrap(), band('z').unwrap()] {
            let (lo, hi) = standin_domain(b, real).unwrap();
            // The same linear map sends the real domain to (lo, hi) and the r grid's ends to
            // the band grid's ends.
            let map = |w: f64| lo + (w - real.0) * (hi - lo) / (real.1 - real.0);
            assert!((map(5760.0) - b.wave.0).abs() < 1e-9, "{}", b.band);
            assert!((map(7620.0) - b.wave.1).abs() < 1e-9, "{}", b.band);
            assert!(lo < b.wave.0 && b.wave.1 < hi, "{}", b.band);
        }
    }

    #[test]
    fn the_r_grid_has_2326_bins_and_a_span_cuts_it() {
        let r = band('r').unwrap();
        let grid = r.grid(None).unwrap();
        assert_eq!((grid.nwave(), grid.wave[0]), (2326, 5760.0));
        let short = r.grid(Some(300.0)).unwrap();
        assert_eq!(short.nwave(), 376);
        assert!(r.grid(Some(-5.0)).is_err());
    }

    #[test]
    fn cameras_come_in_desi_procs_order() {
        let cameras: Vec<String> = all_cameras().collect();
        assert_eq!(cameras.len(), 30);
        assert_eq!(cameras[..4], ["b0", "r0", "z0", "b1"]);
        assert_eq!(cameras[29], "z9");
    }
}
