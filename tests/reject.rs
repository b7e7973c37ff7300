//! Outlier rejection inside the extraction (issue 16, docs/algorithm.md §4.11) on small
//! simulated frames: a cosmic along a trace is rejected and the flux returns to the truth; a
//! clean frame is untouched bit for bit; a bright line seen through a mismatched
//! (4x sub-bin oversampled) PSF is not rejected; the CLI records it in the frame and writes
//! the rejected-pixel image.

mod common;

use common::{psf, PSF_PATH};
use desi_extract::extract::{extract_frame, Extraction, RejectConfig};
use desi_extract::io::{read_frame, KeywordValue, PreprocImage};
use desi_extract::job::FrameJob;
use desi_extract::patch::stitch::{BAD2DFIT, COSMIC};
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::psf::GaussHermitePsf;
use desi_extract::qa::convolve_truth;
use desi_extract::sim::cosmics::deposit;
use desi_extract::sim::{
    builtin_spectra, simulated_preproc, simulated_preproc_with, SimExtras, Spectra, Track,
};
use desi_extract::solve::CpuBackend;
use desi_extract::trace::Trace;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");

fn grid() -> WavelengthGrid {
    WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap()
}

fn params() -> ExtractionParams {
    ExtractionParams {
        nspec: 25,
        ..ExtractionParams::default()
    }
}

fn extract(
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    params: &ExtractionParams,
    reject: Option<RejectConfig>,
) -> Extraction {
    let grid = grid();
    let job = FrameJob::new(psf, image, &grid, params)
        .unwrap()
        .with_reject(reject);
    extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new()).unwrap()
}

/// Pulls `(flux − R·truth) · sqrt(ivar)` of fiber `s`, bins `bins`.
fn pulls(ex: &Extraction, truth: &Spectra, s: usize, bins: std::ops::Range<usize>) -> Vec<f64> {
    let a = &ex.arrays;
    let nd = 2 * a.ndiag + 1;
    let mut rt = vec![0.0; a.nwave];
    convolve_truth(
        &a.rdiags[s * nd * a.nwave..(s + 1) * nd * a.nwave],
        &truth.flux[s * a.nwave..(s + 1) * a.nwave],
        a.nwave,
        a.ndiag,
        &mut rt,
    );
    let dwave = grid().bin_widths();
    bins.map(|j| {
        let i = s * a.nwave + j;
        (a.flux[i] - rt[j] / dwave[j]) * a.ivar[i].sqrt()
    })
    .collect()
}

#[test]
fn cosmic_along_a_trace_is_rejected_and_the_flux_returns_to_the_truth() {
    let psf = psf();
    let grid = grid();
    let truth = builtin_spectra(0, 25, &grid.wave);
    let clean = simulated_preproc(&psf, &truth, 3.0, 5, false, "r0").unwrap();
    // A straight track along fiber 12's trace over bins 100..140 (~55 CCD rows), 600
    // electrons per pixel: what escapes preproc's mask on a bright trace.
    let (s, bins) = (12, 100..140);
    let spots = psf.spots(0, 25, &grid.wave).unwrap();
    let centre = |k: usize| {
        let c = spots.corner(s, k);
        (
            c.yc as f64 + spots.ny as f64 / 2.0,
            c.xc as f64 + spots.nx as f64 / 2.0,
        )
    };
    let ((r0, c0), (r1, c1)) = (centre(bins.start), centre(bins.end));
    let track = Track::straight(r0, c0, r1, c1, 600.0);
    let hits = deposit(&[track], psf.npix_y, psf.npix_x);
    let mut dirty = clean.clone();
    for h in &hits {
        dirty.image[h.pixel] += h.electrons as f32;
    }
    let params = params();
    let before = extract(&psf, &dirty, &params, None);
    let after = extract(&psf, &dirty, &params, Some(RejectConfig::default()));
    let reference = extract(&psf, &clean, &params, None);

    // Without rejection the track is a fake emission feature.
    let p_before = pulls(&before, &truth, s, bins.clone());
    let worst = p_before.iter().fold(0.0f64, |m, p| m.max(p.abs()));
    assert!(
        worst > 10.0,
        "the track should bias the flux: worst pull {worst}"
    );

    // With it: the strong pixels are rejected, the bins are back within their errors.
    let rejected = desi_extract::extract::rejected_pixels(&after.rejections);
    let strong: Vec<usize> = hits
        .iter()
        .filter(|h| h.electrons > 100.0)
        .map(|h| h.pixel)
        .collect();
    let caught = strong
        .iter()
        .filter(|p| rejected.binary_search(&(**p as u64)).is_ok())
        .count();
    assert_eq!(caught, strong.len(), "track pixels rejected");
    let p_after = pulls(&after, &truth, s, bins.clone());
    let mean = p_after.iter().sum::<f64>() / p_after.len() as f64;
    let worst = p_after.iter().fold(0.0f64, |m, p| m.max(p.abs()));
    eprintln!("pulls after rejection: mean {mean:.3}, worst {worst:.3}");
    // 40 correlated pulls of a unit normal: the mean within 1, none beyond 4.
    assert!(mean.abs() < 1.0, "mean pull {mean}");
    assert!(worst < 4.0, "worst pull {worst}");
    let a = &after.arrays;
    for j in bins.clone() {
        let i = s * a.nwave + j;
        assert!(a.ivar[i] > 0.0, "bin {j}: ivar {}", a.ivar[i]);
        assert_ne!(
            after.mask[i] & COSMIC,
            0,
            "bin {j}: mask {:#x}",
            after.mask[i]
        );
        assert_eq!(
            after.mask[i] & BAD2DFIT,
            0,
            "bin {j}: mask {:#x}",
            after.mask[i]
        );
    }
    // Patches whose windows the track never reached are bitwise those without rejection, and
    // the extraction of fibers far from it is the clean one.
    for f in [0, 1, 23, 24] {
        let row = f * a.nwave..(f + 1) * a.nwave;
        assert_eq!(
            a.flux[row.clone()],
            before.arrays.flux[row.clone()],
            "fiber {f}"
        );
        assert_eq!(a.flux[row.clone()], reference.arrays.flux[row], "fiber {f}");
    }
    let summary = after.reject_summary();
    assert!(
        summary.pixels >= strong.len() && summary.capped == 0,
        "{summary:?}"
    );
}

#[test]
fn clean_frame_is_untouched_bit_for_bit() {
    let psf = psf();
    let grid = grid();
    // The built-in spectra: continua, emission lines and bright sky lines.
    let truth = builtin_spectra(0, 25, &grid.wave);
    let image = simulated_preproc(&psf, &truth, 3.0, 21, false, "r0").unwrap();
    let params = params();
    let off = extract(&psf, &image, &params, None);
    let on = extract(&psf, &image, &params, Some(RejectConfig::default()));
    assert!(on.rejections.is_empty(), "{:?}", on.reject_summary());
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&on.arrays.flux), bits(&off.arrays.flux));
    assert_eq!(bits(&on.arrays.ivar), bits(&off.arrays.ivar));
    assert_eq!(bits(&on.arrays.rdiags), bits(&off.arrays.rdiags));
    assert_eq!(bits(&on.arrays.chi2pix), bits(&off.arrays.chi2pix));
    assert_eq!(on.mask, off.mask);
}

#[test]
fn bright_line_through_a_mismatched_psf_is_not_rejected() {
    let psf = psf();
    let grid = grid();
    let mut truth = builtin_spectra(0, 25, &grid.wave);
    // A line of 2e5 photons (peak pixels ~3e4 electrons) on every fifth fiber, narrow
    // (sigma 1 A), and a 4x sub-bin oversampled projection: the extraction's PSF model
    // mismatches the image most where the line is.
    let nwave = grid.nwave();
    for s in (0..25).step_by(5) {
        for (j, &w) in grid.wave.iter().enumerate() {
            let x = (w - 6100.0) / 1.0;
            truth.flux[s * nwave + j] +=
                2e5 * 0.8 * (-0.5 * x * x).exp() / (2.0f64 * std::f64::consts::PI).sqrt();
        }
    }
    let extras = SimExtras {
        oversample: 4,
        cosmics: None,
    };
    let (image, _) = simulated_preproc_with(&psf, &truth, 3.0, 8, false, "r0", &extras).unwrap();
    let params = params();
    let off = extract(&psf, &image, &params, None);
    let on = extract(&psf, &image, &params, Some(RejectConfig::default()));
    let s = on.reject_summary();
    assert_eq!(s.pixels, 0, "rejected on a clean frame: {s:?}");
    assert_eq!(on.arrays, off.arrays);
    assert_eq!(on.mask, off.mask);
}

#[test]
fn cli_records_the_rejection_and_writes_the_pixel_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (preproc, truth_path) = (d.join("preproc.fits"), d.join("cosmics.fits"));
    let status = Command::new(BIN)
        .args(["simulate", "-p", PSF_PATH, "-o"])
        .arg(&preproc)
        .args(["-w", "5950,6250", "-n", "25", "--seed", "3", "--cosmics"])
        .args(["--cosmic-rate", "20", "--cosmic-truth"])
        .arg(&truth_path)
        .status()
        .unwrap();
    assert!(status.success());
    let (frame, rejected) = (d.join("frame.fits"), d.join("rejected.fits"));
    let out = Command::new(BIN)
        .args(["extract", "-i"])
        .arg(&preproc)
        .args(["-p", PSF_PATH, "-o"])
        .arg(&frame)
        .args(["-w", "6000,6200", "-n", "25", "--reject-outliers"])
        .arg("--rejected-pixels")
        .arg(&rejected)
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", out.status);
    let f = read_frame(&frame).unwrap();
    // Cards the frame reader does not model come back as raw header cards.
    let card = |f: &desi_extract::io::FrameData, name: &str| -> Option<i64> {
        if let Some(KeywordValue::Int(v)) = f.keyword(name) {
            return Some(*v);
        }
        f.header
            .iter()
            .find(|c| c.get(..8).is_some_and(|k| k.trim_end() == name))
            .and_then(|c| c.get(10..)?.split('/').next()?.trim().parse().ok())
    };
    let int = |name: &str| card(&f, name).unwrap_or_else(|| panic!("{name} missing"));
    let npix = int("NREJPIX");
    assert!(
        npix > 0,
        "cosmics at 20 per cm2 per minute must hit the bundle"
    );
    assert_eq!(
        int("NREJBIN") as usize,
        f.mask.iter().filter(|&&m| m & COSMIC != 0).count()
    );
    // The pixel image has exactly NREJPIX ones, all on pixels the simulation hit.
    let ones = read_image(&rejected, "REJECTED");
    let cosmic = read_image(&truth_path, "COSMICS");
    let set: Vec<usize> = ones
        .iter()
        .enumerate()
        .filter(|(_, &v)| v == 1.0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(set.len() as i64, npix);
    // Every rejected pixel lies within 3 pixels of a hit one (grow radius 1 in each of up to
    // 3 passes: the neighbours of a rejected cosmic's grown edge can stand out in the next
    // pass): nothing is rejected away from the cosmics.
    let ncol = 4114;
    let near_hit = |i: usize| {
        let (r, c) = ((i / ncol) as i64, (i % ncol) as i64);
        (-3..=3).any(|dr| {
            (-3..=3).any(|dc| {
                let (rr, cc) = (r + dr, c + dc);
                rr >= 0
                    && cc >= 0
                    && cc < ncol as i64
                    && cosmic[rr as usize * ncol + cc as usize] > 0.0
            })
        })
    };
    let far: Vec<usize> = set.iter().copied().filter(|&i| !near_hit(i)).collect();
    assert!(
        far.is_empty(),
        "{} rejected pixels away from any cosmic: {:?}",
        far.len(),
        &far[..far.len().min(10)]
    );
    // Without the flag: no rejection cards.
    let plain = d.join("plain.fits");
    let status = Command::new(BIN)
        .args(["extract", "-i"])
        .arg(&preproc)
        .args(["-p", PSF_PATH, "-o"])
        .arg(&plain)
        .args(["-w", "6000,6200", "-n", "25"])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(card(&read_frame(&plain).unwrap(), "NREJPIX").is_none());
    common::desispec_reads(&[frame, plain]);
}

fn read_image(path: &Path, extname: &str) -> Vec<f64> {
    desi_extract::io::read_image(path, extname).unwrap().2
}
