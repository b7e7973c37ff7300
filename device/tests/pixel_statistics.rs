//! `pixel_statistics` (the CPU's whole-patch χ²_pix and pixmask_fraction, model built stamp by
//! stamp) against `pixel_chi2_row` for every window row and `core_pixel_sums` for every core
//! unknown (the bodies of the GPU's one-thread kernels): bitwise equal windows and outputs on
//! the DESI-like patches of `common::patch` (kept rows cutting stamps, masked pixels), and the
//! same refusals.

mod common;

use common::patch::{build_patch, Geometry, Patch};
use desi_device::patch::{core_pixel_sums, pixel_chi2_row, pixel_statistics, CoreRange};
use desi_device::Status;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Column bounds of every stamp of the patch (with a margin of `pad` columns).
fn columns(patch: &Patch, pad: i32) -> (i32, i32) {
    let (ns, nw) = (patch.shape.nspecpad, patch.shape.nwavetot);
    let corners = (0..ns).flat_map(|s| (0..nw).map(move |k| (s, k)));
    let view = patch.view();
    let lo = corners
        .clone()
        .map(|(s, k)| view.corner(s, k).xc)
        .min()
        .unwrap();
    let hi = corners.map(|(s, k)| view.corner(s, k).xc).max().unwrap() + patch.nx as i32;
    ((lo - pad).max(0), (hi + pad).min(patch.ncol as i32))
}

struct Outputs {
    window: Vec<f64>,
    chi2pix: Vec<f64>,
    pixmask: Vec<f64>,
}

fn per_row(patch: &Patch, cols: (i32, i32), xflux: &[f64], core: CoreRange) -> Outputs {
    let (view, ccd, shape) = (patch.view(), patch.ccd(), patch.shape);
    let width = (cols.1 - cols.0) as usize;
    let height = (shape.row_max - shape.row_min) as usize;
    let mut window = vec![f64::NAN; width * height];
    for r in 0..height {
        let row = &mut window[r * width..(r + 1) * width];
        let status = pixel_chi2_row(&view, &ccd, &shape, cols.0, cols.1, xflux, 0.01, r, row);
        assert_eq!(status, Status::Ok);
    }
    let nk = core.k_max - core.k_min;
    let (mut chi2pix, mut pixmask) = (Vec::new(), Vec::new());
    for s in core.s_min..core.s_max {
        for k in core.k_min..core.k_max {
            let (c, m) = core_pixel_sums(&view, &ccd, &shape, cols.0, cols.1, &window, s, k);
            chi2pix.push(c);
            pixmask.push(m);
        }
    }
    assert_eq!(chi2pix.len(), (core.s_max - core.s_min) * nk);
    Outputs {
        window,
        chi2pix,
        pixmask,
    }
}

fn whole(patch: &Patch, cols: (i32, i32), xflux: &[f64], core: CoreRange) -> (Status, Outputs) {
    let shape = patch.shape;
    let width = (cols.1 - cols.0) as usize;
    let height = (shape.row_max - shape.row_min) as usize;
    let nk = core.k_max - core.k_min;
    let nspp = core.s_max - core.s_min;
    let mut out = Outputs {
        window: vec![f64::NAN; width * height],
        chi2pix: vec![f64::NAN; nspp * nk],
        pixmask: vec![f64::NAN; nspp * nk],
    };
    let status = pixel_statistics(
        &patch.view(),
        &patch.ccd(),
        &shape,
        cols.0,
        cols.1,
        xflux,
        0.01,
        core,
        &mut out.window,
        &mut out.chi2pix,
        &mut out.pixmask,
        nk,
    );
    (status, out)
}

fn bits(x: &[f64]) -> Vec<u64> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn bitwise_equal_to_the_row_and_core_bodies() {
    for (seed, geometry) in [
        (1, Geometry::desi(7, 74)),
        (2, Geometry::desi(6, 74)),
        (
            3,
            Geometry {
                cut: 0,
                ..Geometry::desi(7, 30)
            },
        ),
        (
            4,
            Geometry {
                cut: 8,
                nx: 13,
                ny: 9,
                ..Geometry::desi(6, 40)
            },
        ),
    ] {
        let patch = build_patch(geometry, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
        // Fluxes around the image level (so χ² is O(1)), a few negative.
        let xflux: Vec<f64> = (0..patch.n())
            .map(|_| rng.random_range(-50.0..400.0))
            .collect();
        let pad = if geometry.nwavetot > 50 {
            (geometry.nwavetot - 50) / 2
        } else {
            2
        };
        let core = CoreRange {
            s_min: 1,
            s_max: geometry.nspecpad - 1,
            k_min: pad,
            k_max: geometry.nwavetot - pad,
        };
        for margin in [0, 3] {
            let cols = columns(&patch, margin);
            let expected = per_row(&patch, cols, &xflux, core);
            let (status, got) = whole(&patch, cols, &xflux, core);
            assert_eq!(status, Status::Ok, "{geometry:?}");
            assert_eq!(
                bits(&got.window),
                bits(&expected.window),
                "{geometry:?} window"
            );
            assert_eq!(bits(&got.chi2pix), bits(&expected.chi2pix), "{geometry:?}");
            assert_eq!(bits(&got.pixmask), bits(&expected.pixmask), "{geometry:?}");
            // The statistics are not trivially zero: χ² > 0 somewhere, masked pixels seen.
            assert!(got.chi2pix.iter().any(|&c| c > 0.0));
            assert!(got.pixmask.iter().any(|&m| m > 0.0));
        }
    }
}

#[test]
fn stamps_outside_the_columns_are_refused() {
    let geometry = Geometry::desi(6, 30);
    let patch = build_patch(geometry, 5);
    let xflux = vec![1.0; patch.n()];
    let core = CoreRange {
        s_min: 1,
        s_max: 5,
        k_min: 2,
        k_max: 28,
    };
    let (lo, hi) = columns(&patch, 0);
    for cols in [(lo + 1, hi), (lo, hi - 1)] {
        assert_eq!(whole(&patch, cols, &xflux, core).0, Status::BadShape);
    }
    // Short flux vector.
    let (status, _) = whole(&patch, (lo, hi), &xflux[1..], core);
    assert_eq!(status, Status::BadShape);
}
