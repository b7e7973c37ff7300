//! The CLI reads only the CCD rows its fibers' traces reach (`extract::ccd_rows`,
//! `io::PreprocReader::read_rows`), and on the CPU only their columns as well
//! (`extract::ccd_cols`, `io::PreprocReader::read_window`): the frame must be bitwise that of
//! the whole image, in the middle of the CCD and for windows at its bottom and top edges.

mod common;

use desi_extract::extract::{ccd_cols, ccd_rows};
use desi_extract::io::{read_preproc, write_preproc, PreprocReader};
use desi_extract::job::FrameJob;
use desi_extract::patch::WavelengthGrid;
use desi_extract::sim::{builtin_spectra, simulated_preproc};

#[test]
fn row_range_read_gives_the_frame_of_the_whole_image() {
    let psf = common::psf();
    let params = common::bundle_params();
    // Signal over the PSF's whole wavelength domain, so every window holds data.
    let (lo, hi) = (psf.sigma_x.wavemin.ceil(), psf.sigma_x.wavemax.floor());
    let sim_grid = WavelengthGrid::arange(lo, hi, 0.8).expect("grid");
    let truth = builtin_spectra(0, params.nspec, &sim_grid.wave);
    let mut image = simulated_preproc(&psf, &truth, 3.0, 5, false, "r0").expect("simulate");
    // Masked pixels and zero weights inside the windows read take part as well.
    for i in (0..image.ivar.len()).step_by(97) {
        image.mask[i] = 1;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("preproc-r0-00000007.fits");
    image.path = path.clone();
    write_preproc(&path, &image).expect("write preproc");
    let full = read_preproc(&path).expect("read preproc");

    // Windows at the CCD's edges: the first and last 80 A whose padded traces stay on it.
    let valid = |wmin: f64| {
        let grid = WavelengthGrid::arange(wmin, wmin + 80.0, 0.8).expect("grid");
        FrameJob::new(&psf, &full, &grid, &params).is_ok()
    };
    let bottom = (0..400)
        .map(|i| lo + i as f64)
        .find(|&w| valid(w))
        .expect("bottom");
    let top = (0..400)
        .map(|i| hi - 80.0 - i as f64)
        .find(|&w| valid(w))
        .expect("top");
    // Middle of the CCD, the bottom edge (first wavelengths), the top edge (last ones).
    for (wmin, wmax) in [(6500.0, 6580.0), (bottom, bottom + 80.0), (top, top + 80.0)] {
        let grid = WavelengthGrid::arange(wmin, wmax, 0.8).expect("grid");
        let rows = ccd_rows(&psf, &params, &grid);
        assert!(
            rows.len() < full.ny / 4,
            "{wmin}-{wmax}: {rows:?} is not a small part of the {} rows",
            full.ny
        );
        let part = PreprocReader::open(&path)
            .expect("open")
            .read_rows(rows.clone())
            .expect("read rows");
        let n_read = rows.start.min(full.ny) * full.nx..rows.end.min(full.ny) * full.nx;
        assert!(part.image[..n_read.start].iter().all(|&v| v == 0.0));
        assert!(part.ivar[n_read.end..].iter().all(|&v| v == 0.0));
        if wmin == bottom {
            assert_eq!(rows.start, 0, "the bottom window reaches row 0");
        }
        if wmin == top {
            assert!(rows.end >= full.ny, "the top window reaches the last row");
        }
        // The window of those rows and the bundles' trace columns: every other pixel is 0.
        let cols = ccd_cols(&psf, &params, &grid);
        assert!(
            cols.len() < full.nx / 4,
            "{wmin}-{wmax}: columns {cols:?} are not a small part of the {}",
            full.nx
        );
        let window = PreprocReader::open(&path)
            .expect("open")
            .read_window(rows.clone(), cols.clone())
            .expect("read window");
        let mut read_pixels = 0;
        for (i, (&v, &w)) in window.image.iter().zip(&window.ivar).enumerate() {
            let (r, c) = (i / full.nx, i % full.nx);
            if rows.contains(&r) && cols.contains(&c) {
                assert_eq!(v, full.image[i], "pixel ({r}, {c})");
                assert_eq!(w, full.ivar[i], "ivar ({r}, {c})");
                assert_eq!(window.mask[i], full.mask[i], "mask ({r}, {c})");
                read_pixels += 1;
            } else {
                assert!(
                    v == 0.0 && w == 0.0 && window.mask[i] == 0,
                    "({r}, {c}) not read"
                );
            }
        }
        assert_eq!(
            read_pixels,
            (rows.start.min(full.ny)..rows.end.min(full.ny)).len()
                * (cols.start.min(full.nx)..cols.end.min(full.nx)).len()
        );
        let a = common::extract_cpu(&psf, &full, &grid, &params);
        let b = common::extract_cpu(&psf, &part, &grid, &params);
        let c = common::extract_cpu(&psf, &window, &grid, &params);
        assert_eq!(
            a.arrays, c.arrays,
            "{wmin}-{wmax}: frame arrays of the window"
        );
        assert_eq!(a.mask, c.mask, "{wmin}-{wmax}: mask of the window");
        assert_eq!(a.reports.len(), c.reports.len());
        assert!(
            a.arrays.ivar.iter().filter(|&&v| v > 0.0).count() > a.arrays.ivar.len() / 2,
            "{wmin}-{wmax}: most bins carry data"
        );
        assert_eq!(a.arrays, b.arrays, "{wmin}-{wmax}: frame arrays");
        assert_eq!(a.mask, b.mask, "{wmin}-{wmax}: mask");
        assert_eq!(a.reports.len(), b.reports.len());
    }
}
