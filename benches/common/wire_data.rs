//! Synthetic messages of production size for the wire benchmarks: the bundle blocks of a full
//! 500-fiber r frame (20 bundles x 25 fibers x 2326 bins, ndiag 5: 11 resolution diagonals)
//! and a full preproc image (4128 rows x 4114 columns: IMAGE and IVAR f32, MASK i32, with a
//! 500-row fibermap and a 100-card header). Values are pseudo-random bits-exact floats.

#![allow(dead_code)]

use desi_extract::extract::{BundleBlock, PatchReport, PatchSite};
use desi_extract::io::{FitsTable, PreprocImage};
use desi_extract::patch::stitch::FrameArrays;
use desi_extract::solve::PatchIssue;
use std::path::PathBuf;

/// Bins of the r camera's desi_proc grid 5760..7620 by 0.8 Angstrom.
pub const R_NWAVE: usize = 2326;
/// Resolution half-width of the DESI PSFs (11 diagonals).
pub const NDIAG: usize = 5;
/// CCD rows and columns of a DESI preproc image.
pub const CCD_NY: usize = 4128;
/// CCD columns.
pub const CCD_NX: usize = 4114;

/// A small xorshift generator (no dependency, the same values on every run).
struct Bits(u64);

impl Bits {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 200.0 - 50.0
    }
}

/// The 20 finished blocks of a 500-fiber r frame, without model boxes.
pub fn r_frame_blocks() -> Vec<BundleBlock> {
    let mut bits = Bits(0x9e37_79b9_7f4a_7c15);
    (0..20)
        .map(|bundle| {
            let mut arrays = FrameArrays::new(25 * bundle, 25, R_NWAVE, NDIAG);
            for plane in [
                &mut arrays.flux,
                &mut arrays.ivar,
                &mut arrays.rdiags,
                &mut arrays.chi2pix,
                &mut arrays.pixmask_fraction,
            ] {
                plane.iter_mut().for_each(|v| *v = bits.f64());
            }
            BundleBlock {
                bundle,
                arrays,
                reports: vec![PatchReport {
                    site: PatchSite {
                        bundle,
                        patch: 3,
                        ispec: 25 * bundle,
                        iwave: 150,
                        nspec: 5,
                        nwave: 50,
                    },
                    issue: PatchIssue::Regularized {
                        regularize: 1e-4,
                        reason: "band_factor: NotPositiveDefinite".into(),
                    },
                }],
                rejections: Vec::new(),
                model: None,
                npatch: 5 * 30,
            }
        })
        .collect()
}

/// A full preproc image of camera r0 with pixels, a fibermap and a header.
pub fn full_preproc() -> PreprocImage {
    let mut bits = Bits(0x2545_f491_4f6c_dd1d);
    let n = CCD_NY * CCD_NX;
    PreprocImage {
        path: PathBuf::from("/data/preproc-r0-00051060.fits"),
        nx: CCD_NX,
        ny: CCD_NY,
        image: (0..n).map(|_| bits.f64() as f32).collect(),
        ivar: (0..n).map(|_| bits.f64().abs() as f32).collect(),
        mask: (0..n).map(|_| (bits.next() & 0xff) as i32).collect(),
        camera: "r0".into(),
        header: (0..100)
            .map(|i| format!("KEY{i:<5}= {:>20} / a header card", i * 7))
            .collect(),
        readnoise: None,
        fibermap: Some(FitsTable::minimal_fibermap(0..500, &[7, 42, 311])),
    }
}
