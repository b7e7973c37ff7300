//! Matrix generators and team emulations shared by the device tests and benches.
#![allow(dead_code)]

pub mod patch;

use desi_device::team::Team;
use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Serial emulation running the lanes of each phase in reverse order (with `SerialTeam`, the
/// lanes in order, it shows whether a lane reads what another writes in the same phase).
#[derive(Clone, Copy)]
pub struct ReverseTeam {
    /// Number of lanes.
    pub lanes: usize,
}

impl Team for ReverseTeam {
    fn lanes(&self) -> usize {
        self.lanes
    }

    fn each<F: FnMut(usize)>(&self, mut f: F) {
        for lane in (0..self.lanes).rev() {
            f(lane);
        }
    }
}

/// Largest absolute value (0 for an empty slice).
pub fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Random SPD: G·Gᵀ/n + 0.05·I with G uniform in (-1, 1) (condition number ~ 100).
pub fn random_spd(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let g: Vec<f64> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let s: f64 = (0..n).map(|k| g[i * n + k] * g[j * n + k]).sum();
            a[i * n + j] = s / n as f64;
        }
        a[i * n + i] += 0.05;
    }
    // Exact symmetry (the sums above are symmetric up to rounding only).
    for i in 0..n {
        for j in 0..i {
            a[j * n + i] = a[i * n + j];
        }
    }
    a
}

/// Covariance-like block: C = M⁻¹ with M = AᵀWA (+ tiny ridge) banded (|i-j| <= 8), the
/// normal matrix of a 1-D Gaussian PSF (σ in [0.9, 1.3] px) sampled at 1.5 px per bin,
/// pixel-integrated, with random inverse variances. C is dense, not diagonally dominant, and
/// neighbouring bins are anticorrelated, like the real per-fiber blocks C_bb.
pub fn covariance_block(nwave: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let dy = 1.5;
    let pad = 10;
    let npix = (nwave as f64 * dy) as usize + 2 * pad;
    let sigma: f64 = rng.random_range(0.9..1.3);
    let ivar: Vec<f64> = (0..npix).map(|_| rng.random_range(0.5..1.5)).collect();
    // Pixel-integrated Gaussian of bin k in pixel y: Φ((y+1/2-c)/σ) - Φ((y-1/2-c)/σ).
    let profile = |y: usize, k: usize| {
        let c = pad as f64 + dy * k as f64;
        let lo = (y as f64 - 0.5 - c) / (sigma * 2f64.sqrt());
        let hi = (y as f64 + 0.5 - c) / (sigma * 2f64.sqrt());
        0.5 * (erf(hi) - erf(lo))
    };
    let mut m = DMatrix::<f64>::zeros(nwave, nwave);
    for i in 0..nwave {
        for j in i.saturating_sub(8)..(i + 9).min(nwave) {
            let s: f64 = (0..npix)
                .map(|y| profile(y, i) * ivar[y] * profile(y, j))
                .sum();
            m[(i, j)] = s;
        }
        m[(i, i)] += 1e-6;
    }
    let m = (&m + m.transpose()) * 0.5;
    let c = m.try_inverse().expect("M is positive definite");
    let mut out = vec![0.0; nwave * nwave];
    for i in 0..nwave {
        for j in 0..nwave {
            out[i * nwave + j] = 0.5 * (c[(i, j)] + c[(j, i)]);
        }
    }
    out
}

/// erf to ~1e-16 (Taylor series below 3, continued fraction above); test-only.
pub fn erf(x: f64) -> f64 {
    if x < 0.0 {
        return -erf(-x);
    }
    if x < 3.0 {
        let mut term = x;
        let mut sum = x;
        let mut k = 0.0;
        while term.abs() > 1e-18 * sum.abs() {
            k += 1.0;
            term *= -x * x / k;
            sum += term / (2.0 * k + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction (Lentz), converges fast for x >= 3.
        let mut f = x;
        for k in (1..60).rev() {
            f = x + (k as f64 / 2.0) / f;
        }
        1.0 - (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
    }
}

/// A realistic patch normal matrix `M = Σ_pix a aᵀ + δ I` (n = nspec·nwave, wavelength-major
/// `q = iwave·nspec + ispec`): three "pixels" per unknown, each with a Gaussian profile over
/// fibers `ispec ± 1` and bins `iwave ± 4` (so `M` couples |dfiber| <= 2, |dwave| <= 8), and
/// a ridge `δ` chosen for a condition number of 400.
pub fn patch_matrix(nspec: usize, nwave: usize, seed: u64) -> (Vec<f64>, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = nspec * nwave;
    let mut m = vec![0.0; n * n];
    let mut a = vec![0.0; n];
    let mut support = Vec::new();
    for ispec in 0..nspec {
        for iwave in 0..nwave {
            for _ in 0..3 {
                let cs = ispec as f64 + rng.random_range(-0.4..0.4);
                let cw = iwave as f64 + rng.random_range(-0.5..0.5);
                let amp = rng.random_range(0.5..2.0);
                support.clear();
                for s in ispec.saturating_sub(1)..(ispec + 2).min(nspec) {
                    for w in iwave.saturating_sub(4)..(iwave + 5).min(nwave) {
                        let ds = s as f64 - cs;
                        let dw = w as f64 - cw;
                        let q = w * nspec + s;
                        a[q] = amp * (-0.5 * (ds * ds / 0.3 + dw * dw / 2.0)).exp();
                        support.push(q);
                    }
                }
                for &p in &support {
                    for &q in &support {
                        m[p * n + q] += a[p] * a[q];
                    }
                }
                for &p in &support {
                    a[p] = 0.0;
                }
            }
        }
    }
    let eig = SymmetricEigen::new(DMatrix::from_row_slice(n, n, &m)).eigenvalues;
    let (lmin, lmax) = (eig.min(), eig.max());
    let target = 400.0;
    let delta = ((lmax - target * lmin) / (target - 1.0)).max(0.0);
    for i in 0..n {
        m[i * n + i] += delta;
    }
    let cond = (lmax + delta) / (lmin + delta);
    (m, cond)
}

/// Band storage `(n, kd + 1)` of the lower triangle of a dense row-major matrix; slots
/// outside the matrix are filled with garbage (they must be ignored).
pub fn to_band(m: &[f64], n: usize, kd: usize) -> Vec<f64> {
    let w = kd + 1;
    let mut ab = vec![1.0e300; n * w];
    for i in 0..n {
        for j in i.saturating_sub(kd)..=i {
            ab[i * w + (j + kd - i)] = m[i * n + j];
        }
    }
    ab
}
