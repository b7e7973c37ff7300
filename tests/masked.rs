//! A masked rectangle on a noiseless simulated bundle (docs/algorithm.md §10.2, acceptance test
//! A8): fully masked bins get pixmask_fraction = 1, ALLBADPIX and ivar = 0; partly masked bins get
//! a fraction in (0, 1) and SOMEBADPIX above 0.5; bins away from the rectangle are untouched.

mod common;

use common::{bundle_params, extract_cpu, psf};
use desi_extract::patch::stitch::{ALLBADPIX, SOMEBADPIX};
use desi_extract::patch::WavelengthGrid;
use desi_extract::sim::{builtin_spectra, simulated_preproc};

#[test]
fn masked_rectangle_sets_allbadpix() {
    let psf = psf();
    let grid = WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap();
    let truth = builtin_spectra(0, 25, &grid.wave);
    let mut preproc = simulated_preproc(&psf, &truth, 3.0, 0, true, "r0").unwrap();
    // Rectangle over fibers 10-12 (all their stamp columns) for 60 rows in the middle.
    let spots = psf.spots(9, 5, &grid.wave).unwrap();
    let mid = grid.nwave() / 2;
    let col_lo = spots.corner(1, mid).xc - 3;
    let col_hi = spots.corner(3, mid).xc + spots.nx as i32 + 3;
    let row_lo = spots.corner(2, mid).yc - 30;
    let row_hi = row_lo + 60;
    for y in row_lo..row_hi {
        for x in col_lo..col_hi {
            preproc.mask[y as usize * psf.npix_x + x as usize] = 1; // ccdmask BAD
        }
    }
    let params = bundle_params();
    let ex = extract_cpu(&psf, &preproc, &grid, &params);
    let a = &ex.arrays;
    let (mut full, mut partial, mut clean) = (0, 0, 0);
    for s in 0..a.nspec {
        for j in 0..a.nwave {
            let i = s * a.nwave + j;
            let frac = a.pixmask_fraction[i];
            let c = psf.spots(s, 1, &[grid.wave[j]]).unwrap().corner(0, 0);
            let inside_x = c.xc >= col_lo && c.xc + spots.nx as i32 <= col_hi;
            let inside_y = c.yc >= row_lo && c.yc + spots.ny as i32 <= row_hi;
            let overlaps = c.xc < col_hi
                && c.xc + spots.nx as i32 > col_lo
                && c.yc < row_hi
                && c.yc + spots.ny as i32 > row_lo;
            if inside_x && inside_y {
                full += 1;
                assert_eq!(
                    frac, 1.0,
                    "fiber {s} bin {j}: fully masked but fraction {frac}"
                );
                assert_eq!(
                    ex.mask[i] & ALLBADPIX,
                    ALLBADPIX,
                    "fiber {s} bin {j}: no ALLBADPIX"
                );
                assert_eq!(ex.mask[i] & SOMEBADPIX, SOMEBADPIX);
                assert_eq!(
                    a.ivar[i], 0.0,
                    "fiber {s} bin {j}: ivar {} where fully masked",
                    a.ivar[i]
                );
            } else if overlaps {
                partial += 1;
                assert!(
                    frac > 0.0 && frac <= 1.0,
                    "fiber {s} bin {j}: partial fraction {frac}"
                );
                assert_eq!(
                    ex.mask[i] & SOMEBADPIX != 0,
                    frac > 0.5,
                    "fiber {s} bin {j}: SOMEBADPIX vs {frac}"
                );
            } else {
                clean += 1;
                assert_eq!(
                    frac, 0.0,
                    "fiber {s} bin {j}: untouched bin has fraction {frac}"
                );
                assert_eq!(ex.mask[i] & (ALLBADPIX | SOMEBADPIX), 0);
                assert!(a.ivar[i] > 0.0);
            }
        }
    }
    assert!(
        full > 50,
        "only {full} fully masked bins: rectangle misplaced"
    );
    assert!(
        partial > 20 && clean > 5000,
        "partial {partial}, clean {clean}"
    );
}
