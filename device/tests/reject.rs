//! The rejection's per-pixel steps (`desi_device::patch::reject`) against brute force on
//! synthetic stamps: the tested columns of a row (bit ranges crossing and filling whole
//! words), the outlier filter, and the per-bin counts.

use desi_device::patch::reject::{
    hit_words, rejected_bin_count, row_core_columns, row_filter, row_outliers, CoreUnknowns,
};
use desi_device::patch::{PatchShape, StampView};
use desi_device::psf::spot::StampCorner;
use desi_device::Status;

/// `nspec` fibers x `nwave` bins of `ny x nx` stamps, corners spread over `width` columns.
fn view(
    nspec: usize,
    nwave: usize,
    ny: usize,
    nx: usize,
    corners: &[StampCorner],
) -> StampView<'static> {
    let stamps: Vec<f64> = (0..nspec * nwave * ny * nx)
        .map(|i| 1.0 + (i * 37 % 101) as f64)
        .collect();
    StampView {
        stamps: Box::leak(stamps.into_boxed_slice()),
        corners: Box::leak(corners.to_vec().into_boxed_slice()),
        fiber_stride: nwave,
        ny,
        nx,
    }
}

#[test]
fn tested_columns_and_outliers_match_brute_force() {
    let (nspec, nwave, ny, nx) = (3, 6, 4, 40);
    // Corners from column -10 (left of the window) to past its right edge, rows 0..10.
    let corners: Vec<StampCorner> = (0..nspec * nwave)
        .map(|i| StampCorner {
            xc: -10 + (i as i32 * 13) % 110,
            yc: (i as i32 * 5) % 10,
        })
        .collect();
    let view = view(nspec, nwave, ny, nx, &corners);
    let shape = PatchShape {
        nspecpad: nspec,
        nwavetot: nwave,
        row_min: 0,
        row_max: 14,
    };
    let core = CoreUnknowns {
        s_core: 1,
        nspp: 2,
        pad: 1,
        keep: 4,
    };
    for (col_min, col_max) in [(0, 100), (3, 35), (0, 32), (5, 69), (0, 0)] {
        let width = (col_max - col_min) as usize;
        let chi2: Vec<f64> = (0..width).map(|c| (c * 7 % 50) as f64).collect();
        let weight: Vec<f64> = (0..width)
            .map(|c| if c % 9 == 4 { 0.0 } else { 1.0 })
            .collect();
        for r in 0..14 {
            let mut words = vec![0u32; hit_words(width) + 1];
            words.fill(u32::MAX);
            row_core_columns(&view, &shape, col_min, col_max, core, r, &mut words).unwrap();
            let y = r as i32;
            let mut weighted = 0;
            for c in 0..width {
                let x = col_min + c as i32;
                let inside = (core.s_core..core.s_core + core.nspp).any(|s| {
                    (core.pad..core.pad + core.keep).any(|k| {
                        let cn = view.corner(s, k);
                        y >= cn.yc && y < cn.yc + ny as i32 && x >= cn.xc && x < cn.xc + nx as i32
                    })
                });
                assert_eq!(
                    words[c / 32] >> (c % 32) & 1 == 1,
                    inside,
                    "({col_min}, {col_max}) row {r} col {c}"
                );
                weighted += usize::from(inside && weight[c] > 0.0);
            }
            // Bits past the window stay clear (the words the function owns).
            for c in width..32 * hit_words(width) {
                assert_eq!(words[c / 32] >> (c % 32) & 1, 0);
            }
            let eligible = words.clone();
            let n = row_filter(&mut words[..hit_words(width)], &chi2, &weight, 30.0).unwrap();
            assert_eq!(n as usize, weighted);
            for c in 0..width {
                let hit = eligible[c / 32] >> (c % 32) & 1 == 1 && chi2[c] > 30.0;
                assert_eq!(words[c / 32] >> (c % 32) & 1 == 1, hit);
            }
            let mut again = vec![0u32; hit_words(width)];
            let m = row_outliers(
                &view, &shape, col_min, col_max, core, r, &chi2, &weight, 30.0, &mut again,
            )
            .unwrap();
            assert_eq!((m, &again[..]), (n, &words[..hit_words(width)]));
        }
    }
    // Too few words or values: refused.
    let mut short = vec![0u32; 1];
    assert_eq!(
        row_core_columns(&view, &shape, 0, 100, core, 0, &mut short),
        Err(Status::BadShape)
    );
    let mut words = vec![u32::MAX; 1];
    assert_eq!(
        row_filter(&mut words, &[0.0; 10], &[1.0; 10], 1.0),
        Err(Status::BadShape)
    );
}

#[test]
fn bin_counts_match_brute_force() {
    let (nspec, nwave, ny, nx) = (2, 3, 5, 6);
    let corners: Vec<StampCorner> = (0..nspec * nwave)
        .map(|i| StampCorner {
            xc: 8 + i as i32 * 2,
            yc: 3 + i as i32 * 3,
        })
        .collect();
    let mut stamps = vec![0.0; nspec * nwave * ny * nx];
    for (i, v) in stamps.iter_mut().enumerate() {
        // A peaked stamp: most pixels far below 1% of the total, a few above.
        *v = if i % 7 == 0 {
            10.0
        } else {
            0.001 * (i % 5) as f64
        };
    }
    let view = StampView {
        stamps: &stamps,
        corners: &corners,
        fiber_stride: nwave,
        ny,
        nx,
    };
    let ncol = 40;
    let rows = (4, 16);
    let (col_min, col_max) = (9, 20);
    let pixels: Vec<u64> = (0..20 * ncol as u64).filter(|p| p % 3 == 0).collect();
    let mut nonzero = 0;
    for s in 0..nspec {
        for k in 0..nwave {
            let c = view.corner(s, k);
            let st = view.stamp(s, k);
            let mut total = 0.0;
            let mut inside = Vec::new();
            for y in 0..ny {
                for x in 0..nx {
                    let (row, col) = (c.yc + y as i32, c.xc + x as i32);
                    if row >= rows.0 && row < rows.1 && col >= col_min && col < col_max {
                        total += st[y * nx + x];
                        inside.push(((row as usize * ncol + col as usize) as u64, st[y * nx + x]));
                    }
                }
            }
            let expected = inside
                .iter()
                .filter(|(p, v)| pixels.contains(p) && total > 0.0 && *v >= 0.01 * total)
                .count() as u32;
            let got = rejected_bin_count(&view, rows, col_min, col_max, ncol, s, k, &pixels, 0.01);
            assert_eq!(got, expected, "({s}, {k})");
            nonzero += usize::from(got > 0);
        }
    }
    assert!(nonzero > 0 && nonzero < nspec * nwave, "{nonzero}");
    // No weight inside the window: no count.
    assert_eq!(
        rejected_bin_count(
            &view,
            (100, 101),
            col_min,
            col_max,
            ncol,
            0,
            0,
            &pixels,
            0.01
        ),
        0
    );
}
