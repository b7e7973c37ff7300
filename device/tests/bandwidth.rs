//! `patch_bandwidth` (pruned O(n·kd) scan) against the O(n²) definition: the largest `q2 − q1`
//! over pairs of unknowns (wavelength-major `q = k·nspecpad + s`) whose stamps share a kept pixel.

use desi_device::patch::{patch_bandwidth, PatchShape, StampView};
use desi_device::psf::spot::StampCorner;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The definition, every pair.
fn brute_force(
    corners: &[StampCorner],
    stride: usize,
    shape: &PatchShape,
    ny: i32,
    nx: i32,
) -> usize {
    let ns = shape.nspecpad;
    let n = shape.nunknown();
    let corner = |q: usize| corners[(q % ns) * stride + q / ns];
    let mut kd = 0;
    for q1 in 0..n {
        for q2 in q1 + 1..n {
            let (a, b) = (corner(q1), corner(q2));
            let rows =
                a.yc.max(b.yc).max(shape.row_min) < (a.yc + ny).min(b.yc + ny).min(shape.row_max);
            let cols = a.xc.max(b.xc) < (a.xc + nx).min(b.xc + nx);
            if rows && cols {
                kd = kd.max(q2 - q1);
            }
        }
    }
    kd
}

#[test]
fn pruned_scan_equals_the_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut nontrivial = 0;
    for case in 0..200 {
        let ns = rng.random_range(1..8usize);
        let nwave = rng.random_range(1..40usize);
        let (ny, nx) = (rng.random_range(3..16usize), rng.random_range(3..12usize));
        // Fibers ~ nx apart in x (sometimes overlapping), y increasing with wavelength at a
        // random rate (stamps move monotonically down the CCD), with jitter of 0..1 pixel.
        let rate = rng.random_range(0.3..2.5f64);
        let spacing = rng.random_range(0.5..1.5f64) * nx as f64;
        let corners: Vec<StampCorner> = (0..ns)
            .flat_map(|s| {
                let offset = rng.random_range(0.0..3.0f64);
                let jitter: Vec<f64> = (0..nwave).map(|_| rng.random_range(0.0..1.0)).collect();
                (0..nwave)
                    .map(move |k| StampCorner {
                        xc: (s as f64 * spacing + 0.2 * k as f64 / nwave as f64) as i32,
                        yc: (offset + rate * k as f64 + jitter[k]).floor() as i32,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let top = corners.iter().map(|c| c.yc).min().unwrap_or(0);
        let bottom = corners.iter().map(|c| c.yc).max().unwrap_or(0) + ny as i32;
        let cut = rng.random_range(0..=(bottom - top) / 4);
        let shape = PatchShape {
            nspecpad: ns,
            nwavetot: nwave,
            row_min: top + cut,
            row_max: bottom - cut,
        };
        let view = StampView {
            stamps: &[],
            corners: &corners,
            fiber_stride: nwave,
            ny,
            nx,
        };
        let expected = brute_force(&corners, nwave, &shape, ny as i32, nx as i32);
        assert_eq!(
            patch_bandwidth(&view, &shape),
            expected,
            "case {case}: ns {ns}, nwave {nwave}, stamp {ny}x{nx}"
        );
        nontrivial += usize::from(expected > ns);
    }
    // Most cases couple more than neighbouring bins (the pruning is exercised).
    assert!(
        nontrivial > 100,
        "only {nontrivial} cases with kd > nspecpad"
    );
}
