//! Cosmic rays for simulated frames (issue 16): straight muon tracks and curved electron
//! tracks ("worms") deposited on the CCD after the noise, as cosmics that escaped preproc's
//! mask, with their truth (which pixels were hit, by how many electrons).
//!
//! The model (docs/algorithm.md §4.11): events arrive at `rate` per cm² of CCD per minute
//! (default 2.5, the order of the rates measured with thick CCDs at 2,000-2,200 m: DECam at
//! Cerro Tololo ~2 cm⁻² min⁻¹ in dome-closed darks, 5 quoted at zenith), so a DESI r CCD
//! (4114 x 4128 pixels of 15 µm, 38 cm²) gets ~1,600 in a 1000 s exposure. The spectrograph
//! CCDs stand vertical, so muons, whose intensity goes as cos²θ of the zenith angle, cross the
//! 250 µm of silicon at all angles to its normal: the projected track is
//! `thickness · tan α / pixel` long (a few pixels to a few hundred, capped at
//! [`MAX_TRACK_PIXELS`]), with ~75 e⁻ per µm of path (Landau-like spread drawn log-normal).
//! A fraction `worm_fraction` of the events are curved low-energy electron tracks of 5-40
//! pixels and ~1,500 e⁻ per pixel.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal};

/// Longest projected straight track (pixels).
pub const MAX_TRACK_PIXELS: f64 = 600.0;
/// Electrons per µm of silicon crossed by a minimum-ionizing particle (most probable ~70-80).
pub const ELECTRONS_PER_UM: f64 = 75.0;

/// The cosmic-ray model of a simulated exposure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosmicConfig {
    /// Events per cm² of CCD per minute.
    pub rate: f64,
    /// Exposure time (s).
    pub exptime: f64,
    /// Pixel size (µm).
    pub pixel_um: f64,
    /// Depleted silicon thickness (µm): 250 for the DESI r and z CCDs.
    pub thickness_um: f64,
    /// Fraction of curved electron tracks.
    pub worm_fraction: f64,
}

impl Default for CosmicConfig {
    fn default() -> Self {
        Self {
            rate: 2.5,
            exptime: 1000.0,
            pixel_um: 15.0,
            thickness_um: 250.0,
            worm_fraction: 0.15,
        }
    }
}

impl CosmicConfig {
    /// Expected number of events on a `(nrow, ncol)` CCD.
    pub fn expected_events(&self, nrow: usize, ncol: usize) -> f64 {
        let cm2 = (nrow * ncol) as f64 * (self.pixel_um * 1e-4).powi(2);
        self.rate * cm2 * self.exptime / 60.0
    }
}

/// One cosmic-ray track: points along it (CCD row, column; fractional) with the electrons
/// deposited at each.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    /// `(row, col, electrons)` samples, a quarter pixel apart.
    pub samples: Vec<(f64, f64, f64)>,
    /// Whether it is a curved electron track.
    pub curved: bool,
}

impl Track {
    /// A straight track from `(row0, col0)` to `(row1, col1)` depositing `electrons_per_pixel`
    /// per pixel of length (at least one sample).
    pub fn straight(row0: f64, col0: f64, row1: f64, col1: f64, electrons_per_pixel: f64) -> Self {
        let len = ((row1 - row0).powi(2) + (col1 - col0).powi(2)).sqrt();
        let n = ((len * 4.0).ceil() as usize).max(1);
        let per = electrons_per_pixel * len.max(0.25) / n as f64;
        let samples = (0..n)
            .map(|i| {
                let t = (i as f64 + 0.5) / n as f64;
                (row0 + t * (row1 - row0), col0 + t * (col1 - col0), per)
            })
            .collect();
        Self {
            samples,
            curved: false,
        }
    }
}

/// One hit pixel of the truth record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosmicHit {
    /// `row · ncol + col`.
    pub pixel: usize,
    /// Electrons deposited.
    pub electrons: f64,
}

/// Draws the tracks of one exposure on a `(nrow, ncol)` CCD from `seed`.
pub fn draw_tracks(nrow: usize, ncol: usize, cfg: &CosmicConfig, seed: u64) -> Vec<Track> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC05_41C5);
    let expected = cfg.expected_events(nrow, ncol);
    // Poisson count through a normal approximation (thousands of events).
    let n = Normal::new(expected, expected.sqrt())
        .map(|d| d.sample(&mut rng).round().max(0.0) as usize)
        .unwrap_or(expected as usize);
    let landau = LogNormal::new(0.0, 0.3).ok();
    let depth = cfg.thickness_um / cfg.pixel_um;
    (0..n)
        .map(|_| {
            let row0 = rng.random::<f64>() * nrow as f64;
            let col0 = rng.random::<f64>() * ncol as f64;
            let spread = landau.map_or(1.0, |l| l.sample(&mut rng));
            if rng.random::<f64>() < cfg.worm_fraction {
                worm(&mut rng, row0, col0, spread)
            } else {
                muon(&mut rng, row0, col0, depth, cfg.pixel_um, spread)
            }
        })
        .collect()
}

/// A straight muon track starting at `(row0, col0)` on a vertical CCD.
fn muon(
    rng: &mut ChaCha8Rng,
    row0: f64,
    col0: f64,
    depth: f64,
    pixel_um: f64,
    spread: f64,
) -> Track {
    // Direction: intensity ∝ cos²θ per steradian, then the flux through the vertical plane
    // (normal along x) weighs it by |cos α| = |sin θ cos φ| (rejection sampling).
    let (dx, dy, cos_a) = loop {
        let u: f64 = rng.random();
        let cos_t = u.cbrt(); // pdf ∝ cos²θ d(cosθ)
        let sin_t = (1.0 - cos_t * cos_t).max(0.0).sqrt();
        let phi = rng.random::<f64>() * std::f64::consts::TAU;
        let cos_a = (sin_t * phi.cos()).abs();
        if rng.random::<f64>() < cos_a {
            // In-plane components: horizontal (sinθ sinφ) along columns, vertical (cosθ)
            // along rows.
            break (sin_t * phi.sin(), cos_t, cos_a);
        }
    };
    let tan_a = (1.0 - cos_a * cos_a).max(0.0).sqrt() / cos_a.max(1e-6);
    let len = (depth * tan_a).min(MAX_TRACK_PIXELS);
    let norm = (dx * dx + dy * dy).sqrt().max(1e-12);
    let (row1, col1) = (row0 + len * dy / norm, col0 + len * dx / norm);
    // Electrons per pixel of projected length: the path in silicon per pixel of projected
    // length is pixel / sin α; a nearly normal crossing leaves its whole path's charge
    // (thickness / cos α) in about one pixel.
    let sin_a = (1.0 - cos_a * cos_a).max(0.0).sqrt();
    let per_pixel = if len >= 0.25 {
        ELECTRONS_PER_UM * pixel_um / sin_a.max(1e-6)
    } else {
        ELECTRONS_PER_UM * depth * pixel_um / cos_a.max(1e-6) / 0.25
    };
    Track::straight(row0, col0, row1, col1, per_pixel * spread)
}

/// A curved electron track of 5-40 pixels (a random walk with a drifting direction).
fn worm(rng: &mut ChaCha8Rng, row0: f64, col0: f64, spread: f64) -> Track {
    let len = 5.0 + rng.random::<f64>() * 35.0;
    let n = (len * 4.0) as usize;
    let mut angle = rng.random::<f64>() * std::f64::consts::TAU;
    let turn = Normal::new(0.0, 0.15).ok();
    let (mut r, mut c) = (row0, col0);
    let per = 1500.0 * spread / 4.0;
    let samples = (0..n)
        .map(|_| {
            angle += turn.map_or(0.0, |t| t.sample(rng));
            r += 0.25 * angle.sin();
            c += 0.25 * angle.cos();
            (r, c, per)
        })
        .collect();
    Track {
        samples,
        curved: true,
    }
}

/// The electrons of `tracks` per pixel of a `(nrow, ncol)` CCD (bilinear split of each sample;
/// off-CCD charge dropped), ascending pixel order.
pub fn deposit(tracks: &[Track], nrow: usize, ncol: usize) -> Vec<CosmicHit> {
    let mut map = std::collections::BTreeMap::<usize, f64>::new();
    for t in tracks {
        for &(r, c, e) in &t.samples {
            let (r, c) = (r - 0.5, c - 0.5);
            let (r0, c0) = (r.floor(), c.floor());
            let (fr, fc) = (r - r0, c - c0);
            for (dr, wr) in [(0.0, 1.0 - fr), (1.0, fr)] {
                for (dc, wc) in [(0.0, 1.0 - fc), (1.0, fc)] {
                    let (rr, cc) = (r0 + dr, c0 + dc);
                    if rr < 0.0 || cc < 0.0 || rr >= nrow as f64 || cc >= ncol as f64 {
                        continue;
                    }
                    let w = wr * wc * e;
                    if w > 0.0 {
                        *map.entry(rr as usize * ncol + cc as usize).or_insert(0.0) += w;
                    }
                }
            }
        }
    }
    map.into_iter()
        .map(|(pixel, electrons)| CosmicHit { pixel, electrons })
        .collect()
}
