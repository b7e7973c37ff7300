//! Simulated DESI-like patches shared by the tests of the warp-cooperative patch kernels
//! (`assemble_warp`, `finalize_warp`): 11 × 17 stamps of fibers ~7.5 px apart moving 1.4 px
//! per bin, kept rows cutting the first and last stamps, masked pixels.

use desi_device::patch::{CcdView, PatchShape, StampView};
use desi_device::psf::spot::StampCorner;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Extra bins per fiber in the stamp table (NaN stamps, far-away corners): a wrong fiber stride
/// shows up as NaN.
pub const TABLE_PAD: usize = 3;

/// A patch: its stamp table, CCD and shape.
pub struct Patch {
    pub stamps: Vec<f64>,
    pub corners: Vec<StampCorner>,
    pub fiber_stride: usize,
    pub ny: usize,
    pub nx: usize,
    pub image: Vec<f64>,
    pub weight: Vec<f64>,
    pub nrow: usize,
    pub ncol: usize,
    pub shape: PatchShape,
}

impl Patch {
    pub fn view(&self) -> StampView<'_> {
        StampView {
            stamps: &self.stamps,
            corners: &self.corners,
            fiber_stride: self.fiber_stride,
            ny: self.ny,
            nx: self.nx,
        }
    }

    pub fn ccd(&self) -> CcdView<'_> {
        CcdView {
            image: &self.image,
            weight: &self.weight,
            nrow: self.nrow,
            ncol: self.ncol,
        }
    }

    pub fn n(&self) -> usize {
        self.shape.nunknown()
    }
}

/// Geometry of a simulated patch.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub nspecpad: usize,
    pub nwavetot: usize,
    pub ny: usize,
    pub nx: usize,
    /// Fiber spacing (px).
    pub spacing: f64,
    /// Trace slope (px per bin).
    pub rate: f64,
    /// Kept rows removed above the first stamp's top and below the last stamp's bottom.
    pub cut: i32,
}

impl Geometry {
    pub fn desi(nspecpad: usize, nwavetot: usize) -> Self {
        Geometry {
            nspecpad,
            nwavetot,
            ny: 11,
            nx: 17,
            spacing: 7.5,
            rate: 1.4,
            cut: 4,
        }
    }
}

/// Pixel-sampled elliptical Gaussian spots (positive, unit sum) on a noisy CCD with random
/// weights, ~2% of pixels masked and one masked column segment crossing several traces.
pub fn build_patch(geometry: Geometry, seed: u64) -> Patch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let Geometry {
        nspecpad: ns,
        nwavetot: nw,
        ny,
        nx,
        spacing,
        rate,
        cut,
    } = geometry;
    let (hx, hy) = ((nx / 2) as f64, (ny / 2) as f64);
    let margin = 3.0;
    let stride = nw + TABLE_PAD;
    let mut stamps = vec![f64::NAN; ns * stride * ny * nx];
    let mut corners = vec![
        StampCorner {
            xc: -1_000_000,
            yc: -1_000_000
        };
        ns * stride
    ];
    let phase: Vec<f64> = (0..ns).map(|_| rng.random_range(0.0..1.0)).collect();
    for s in 0..ns {
        for k in 0..nw {
            let x = margin + hx + spacing * s as f64 + 0.02 * k as f64 + 0.3 * phase[s];
            let y = margin + hy + rate * k as f64 + 0.5 * phase[s];
            let corner = StampCorner {
                xc: (x - hx + 0.5).floor() as i32,
                yc: (y - hy + 0.5).floor() as i32,
            };
            let (sx, sy) = (rng.random_range(0.9..1.3), rng.random_range(1.0..1.4));
            let stamp = &mut stamps[(s * stride + k) * ny * nx..][..ny * nx];
            let mut total = 0.0;
            for r in 0..ny {
                for c in 0..nx {
                    let dx = (corner.xc + c as i32) as f64 - x;
                    let dy = (corner.yc + r as i32) as f64 - y;
                    let v = (-0.5 * (dx * dx / (sx * sx) + dy * dy / (sy * sy))).exp();
                    stamp[r * nx + c] = v;
                    total += v;
                }
            }
            stamp.iter_mut().for_each(|v| *v /= total);
            corners[s * stride + k] = corner;
        }
    }
    let used = |s: usize| (0..nw).map(move |k| s * stride + k);
    let all: Vec<StampCorner> = (0..ns).flat_map(used).map(|i| corners[i]).collect();
    let top = all.iter().map(|c| c.yc).min().unwrap();
    let bottom = all.iter().map(|c| c.yc).max().unwrap() + ny as i32;
    let right = all.iter().map(|c| c.xc).max().unwrap() + nx as i32;
    let (nrow, ncol) = (bottom as usize + 2, right as usize + 2);
    let image: Vec<f64> = (0..nrow * ncol)
        .map(|_| rng.random_range(0.0..100.0))
        .collect();
    let mut weight: Vec<f64> = (0..nrow * ncol)
        .map(|_| {
            if rng.random_range(0.0..1.0) < 0.02 {
                0.0
            } else {
                rng.random_range(0.5..1.5)
            }
        })
        .collect();
    // A masked column segment (a bad CCD column) through the middle of the patch.
    let col = ncol / 2;
    for row in nrow / 3..nrow / 2 {
        weight[row * ncol + col] = 0.0;
    }
    Patch {
        stamps,
        corners,
        fiber_stride: stride,
        ny,
        nx,
        image,
        weight,
        nrow,
        ncol,
        shape: PatchShape {
            nspecpad: ns,
            nwavetot: nw,
            row_min: top + cut,
            row_max: bottom - cut,
        },
    }
}
