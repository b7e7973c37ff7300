//! Patch decomposition on the r0 default grid (docs/algorithm.md §3.2-3.4; acceptance tests A4
//! and A5 of §10.2).

mod common;

use common::psf;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PaddedGrid, WavelengthGrid};

#[test]
fn r0_default_grid_patches() {
    let psf = psf();
    let params = ExtractionParams::default();
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).unwrap();
    let padded = PaddedGrid::new(grid.clone(), params.pad(), params.nwavestep);
    assert_eq!(padded.nfull(), 2400);
    let spots = psf.spots(0, 25, &padded.fullwave).unwrap();
    let plans = plan_bundle(0, &spots, &params, grid.nwave(), psf.npix_y);
    // 5 sub-bundles x 47 patches; 2/5 of them with 6 padded spectra.
    assert_eq!(plans.len(), 5 * 47);
    assert_eq!(plans.iter().filter(|p| p.nspecpad == 6).count(), 2 * 47);
    assert!(
        plans.iter().all(|p| p.window.is_some()),
        "no r0 patch touches an edge"
    );
    let last = plans.iter().rfind(|p| p.ispec == 10).unwrap();
    assert_eq!(last.iwave, 2312);
    assert_eq!(last.keep, 26);

    // The table of docs/algorithm.md §3.4 (bundle 0): sub-bundle ispec, first core bin iwave, s0,
    // nspecpad, padded box x [xmin, xmax), kept rows [lo, hi), A shape (rows * cols) x n.
    let expected = [
        (0, 12, 0, 6, (113, 167), (351, 463), 444),
        (10, 12, 9, 7, (179, 239), (343, 455), 518),
        (10, 2312, 9, 7, (168, 229), (3816, 3944), 518),
    ];
    for (ispec, iwave, s0, nspecpad, (x0, x1), (y0, y1), n) in expected {
        let p = plans
            .iter()
            .find(|p| p.ispec == ispec && p.iwave == iwave)
            .unwrap();
        let w = p.window.unwrap();
        assert_eq!(
            (p.s0, p.nspecpad),
            (s0, nspecpad),
            "ispec {ispec} iwave {iwave}"
        );
        assert!(
            (w.col_min - x0).abs() <= 1 && (w.col_max - x1).abs() <= 1,
            "ispec {ispec} iwave {iwave} columns [{}, {}) vs table [{x0}, {x1})",
            w.col_min,
            w.col_max
        );
        // The table was measured on a sibling r0 PSF (its boxes differ from this PSF's by up to
        // one pixel); the row rule itself is checked to float32 precision by
        // tests/reference_frame.rs, which depends on every kept row.
        assert!(
            (w.row_min - y0).abs() <= 2 && (w.row_max - y1).abs() <= 2,
            "ispec {ispec} iwave {iwave} rows [{}, {}) vs table [{y0}, {y1})",
            w.row_min,
            w.row_max
        );
        assert_eq!(p.nspecpad * params.nwavetot(), n);
    }

    // Window sizes over the bundle fall in the measured ranges of docs/algorithm.md §3.3.
    for p in &plans {
        let w = p.window.unwrap();
        let rows = w.row_max - w.row_min;
        let cols = w.col_max - w.col_min;
        assert!((100..=140).contains(&rows), "patch {} rows {rows}", p.patch);
        assert!((50..=65).contains(&cols), "patch {} cols {cols}", p.patch);
    }
}
