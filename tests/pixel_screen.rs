//! Every output bin is finite and trustworthy, or has IVAR 0 and a MASK bit that says why
//! (docs/algorithm.md §1.2, §1.3, §5): masked NaNs are ignored, absurd pixels with IVAR > 0 are
//! screened out exactly as if they were masked, failed patches and non-finite outputs carry
//! BAD2DFIT, patches off the CCD NODATA, and the frame MASK follows desispec main's or 0.70's
//! BAD2DFIT rule, recomputed here independently.

mod common;

use common::{bundle_params, psf};
use desi_extract::extract::{
    assemble_frame, extract_frame, BundleBlock, ExtractError, Extraction, PatchReport, PatchSite,
    PixelLimits,
};
use desi_extract::io::PreprocImage;
use desi_extract::job::{FailedPatchPolicy, FrameJob};
use desi_extract::patch::stitch::{FrameArrays, ALLBADPIX, BAD2DFIT, NODATA, SOMEBADPIX};
use desi_extract::patch::{ExtractionParams, MaskRule, WavelengthGrid};
use desi_extract::psf::GaussHermitePsf;
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::solve::{CpuBackend, PatchIssue};
use desi_extract::trace::Trace;

/// 6000-6200 A: 251 bins, 5 patches per sub-bundle row.
fn grid() -> WavelengthGrid {
    WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap()
}

/// A noisy simulated bundle 0 on [`grid`].
fn preproc(psf: &GaussHermitePsf) -> PreprocImage {
    let truth = builtin_spectra(0, 25, &grid().wave);
    simulated_preproc(psf, &truth, 3.0, 3, false, "r0").unwrap()
}

/// Extraction of `image` with `limits` and `policy`.
fn extract_with(
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    params: &ExtractionParams,
    limits: PixelLimits,
    policy: FailedPatchPolicy,
) -> Result<Extraction, ExtractError> {
    let grid = grid();
    let job = FrameJob::new(psf, image, &grid, params)
        .expect("a valid job")
        .with_pixel_limits(limits)
        .with_failed_patches(policy);
    extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new())
}

/// Extraction with the image's own limits and the default policy.
fn extract(psf: &GaussHermitePsf, image: &PreprocImage) -> Extraction {
    let params = bundle_params();
    let limits = PixelLimits::for_image(image);
    extract_with(psf, image, &params, limits, FailedPatchPolicy::Flag).expect("extraction")
}

/// The frame-file guarantee: every stored value finite (at f32) and every bin with ivar 0
/// carries a MASK bit.
fn assert_trustworthy_or_flagged(ex: &Extraction, what: &str) {
    let a = &ex.arrays;
    let finite = |v: &f64| (*v as f32).is_finite();
    for (name, values) in [
        ("flux", &a.flux),
        ("ivar", &a.ivar),
        ("chi2pix", &a.chi2pix),
        ("resolution", &a.rdiags),
    ] {
        if let Some(i) = values.iter().position(|v| !finite(v)) {
            panic!("{what}: {name}[{i}] = {} is not finite", values[i]);
        }
    }
    for (i, (&iv, &m)) in a.ivar.iter().zip(&ex.mask).enumerate() {
        assert!(iv >= 0.0, "{what}: ivar[{i}] = {iv}");
        assert!(
            iv > 0.0 || m != 0,
            "{what}: bin {i} (fiber {}, bin {}) has ivar 0 and no MASK bit",
            i / a.nwave,
            i % a.nwave
        );
    }
}

/// Pixel indices along fiber 12's trace around 6100 A (the middle of the grid): `n` pixels
/// of the stamp's central rows and columns.
fn trace_pixels(psf: &GaussHermitePsf, n: usize) -> Vec<usize> {
    let spots = psf.spots(12, 1, &[6100.0]).unwrap();
    let c = spots.corner(0, 0);
    (0..n)
        .map(|k| {
            let (row, col) = (c.yc as usize + 3 + k / 5, c.xc as usize + 6 + k % 5);
            row * psf.npix_x + col
        })
        .collect()
}

/// Asserts that two extractions are bitwise the same in every output.
fn assert_same(a: &Extraction, b: &Extraction, what: &str) {
    let (x, y) = (&a.arrays, &b.arrays);
    assert!(x.flux == y.flux, "{what}: flux differs");
    assert!(x.ivar == y.ivar, "{what}: ivar differs");
    assert!(x.rdiags == y.rdiags, "{what}: resolution differs");
    assert!(x.chi2pix == y.chi2pix, "{what}: chi2pix differs");
    assert!(a.mask == b.mask, "{what}: mask differs");
    assert_eq!(a.reports, b.reports, "{what}: reports differ");
}

#[test]
fn a_masked_nan_is_simply_ignored() {
    let psf = psf();
    let clean = preproc(&psf);
    let pixels = trace_pixels(&psf, 1);
    // The same pixel masked with a finite value: the reference.
    let mut masked = clean.clone();
    masked.ivar[pixels[0]] = 0.0;
    masked.mask[pixels[0]] = 1;
    let reference = extract(&psf, &masked);
    assert!(reference.reports.is_empty(), "{:?}", reference.reports);
    // NaN with IVAR 0 and MASK 1 (the issue's case), and NaN with IVAR 0 alone.
    for mask in [1, 0] {
        let mut poisoned = masked.clone();
        poisoned.image[pixels[0]] = f32::NAN;
        poisoned.mask[pixels[0]] = mask;
        let ex = extract(&psf, &poisoned);
        assert_same(&ex, &reference, &format!("NaN with IVAR 0, MASK {mask}"));
        assert_eq!(
            PixelLimits::for_image(&poisoned).count(&poisoned).total(),
            0
        );
        assert_trustworthy_or_flagged(&ex, "masked NaN");
    }
}

#[test]
fn absurd_pixels_are_screened_exactly_as_masked_ones() {
    let psf = psf();
    let clean = preproc(&psf);
    // (case, pixels, IMAGE value, IVAR value); IVAR stays > 0 and MASK 0 in every case.
    let cases: [(&str, usize, Option<f32>, Option<f32>); 6] = [
        ("one pixel of 3e38", 1, Some(3e38), None),
        ("one pixel of 1e30", 1, Some(1e30), None),
        ("one pixel of 1e20", 1, Some(1e20), None),
        ("one pixel of -1e20", 1, Some(-1e20), None),
        ("50 pixels of 3e38", 50, Some(3e38), None),
        ("IVAR 3e38 at 5 pixels", 5, None, Some(3e38)),
    ];
    for (what, n, value, ivar) in cases {
        let pixels = trace_pixels(&psf, n);
        let mut poisoned = clean.clone();
        let mut masked = clean.clone();
        for &p in &pixels {
            if let Some(v) = value {
                poisoned.image[p] = v;
            }
            if let Some(iv) = ivar {
                poisoned.ivar[p] = iv;
            }
            masked.mask[p] = 1;
        }
        let limits = PixelLimits::for_image(&poisoned);
        let count = limits.count(&poisoned);
        assert_eq!(count.total(), n, "{what}: {count:?}");
        if ivar.is_some() {
            assert_eq!(count.ivar, n, "{what}");
        } else {
            assert_eq!(count.value, n, "{what}");
        }
        let ex = extract(&psf, &poisoned);
        assert_same(&ex, &extract(&psf, &masked), what);
        assert!(ex.reports.is_empty(), "{what}: {:?}", ex.reports);
        assert_trustworthy_or_flagged(&ex, what);
        // Nothing wild survives (the simulated fluxes are below ~1e4 electron/A).
        let wild = ex
            .arrays
            .flux
            .iter()
            .zip(&ex.arrays.ivar)
            .filter(|&(f, &iv)| iv > 0.0 && f.abs() > 1e6)
            .count();
        assert_eq!(
            wild, 0,
            "{what}: {wild} bins with |flux| > 1e6 and ivar > 0"
        );
    }
}

#[test]
fn saturation_keywords_set_the_value_limit() {
    let psf = psf();
    let mut image = preproc(&psf);
    assert_eq!(PixelLimits::for_image(&image), PixelLimits::default());
    image.header = vec![
        "SATUELEA=              60000.0 / saturation in electrons".into(),
        "SATUELEB=                80000 / saturation in electrons".into(),
    ];
    let limits = PixelLimits::for_image(&image);
    assert_eq!(limits.max_abs_value, 800_000.0);
    let p = trace_pixels(&psf, 1)[0];
    image.image[p] = 900_000.0;
    assert_eq!(limits.count(&image).value, 1);
    assert_eq!(PixelLimits::default().count(&image).value, 0);
}

#[test]
fn failed_patches_are_flagged_bad2dfit_or_fail_the_frame() {
    let psf = psf();
    let mut image = preproc(&psf);
    // IVAR 3e38 at 5 pixels with the screen off: the normal matrix is not positive definite
    // at working precision and the patches that see the pixels cannot be solved.
    for p in trace_pixels(&psf, 5) {
        image.ivar[p] = 3e38;
    }
    let params = bundle_params();
    let open = PixelLimits::UNLIMITED;
    let ex = extract_with(&psf, &image, &params, open, FailedPatchPolicy::Flag).unwrap();
    let failed = ex.failed_patches();
    assert!(!failed.is_empty(), "no failed patch: {:?}", ex.reports);
    assert!(
        failed
            .iter()
            .any(|r| r.site.ispec <= 12 && 12 < r.site.ispec + r.site.nspec),
        "{failed:?}"
    );
    assert_trustworthy_or_flagged(&ex, "failed patches");
    let a = &ex.arrays;
    let mut flagged = 0;
    for r in &failed {
        for s in r.site.ispec..r.site.ispec + r.site.nspec {
            for j in r.site.iwave..r.site.iwave + r.site.nwave {
                let i = (s - a.specmin) * a.nwave + j;
                assert_eq!(a.ivar[i], 0.0, "fiber {s} bin {j}");
                assert!(
                    ex.mask[i] & BAD2DFIT != 0,
                    "fiber {s} bin {j}: {}",
                    ex.mask[i]
                );
                flagged += 1;
            }
        }
    }
    assert_eq!(
        flagged,
        failed
            .iter()
            .map(|r| r.site.nspec * r.site.nwave)
            .sum::<usize>()
    );
    // Elsewhere the frame is the one of the screened image (the patches are independent).
    let bad2d = ex.mask.iter().filter(|&&m| m & BAD2DFIT != 0).count();
    assert!(
        bad2d < flagged + a.flux.len() / 100,
        "{bad2d} BAD2DFIT bins"
    );

    // Under FailedPatchPolicy::Fail the frame is an error naming the patch, exit code 2.
    let err = extract_with(&psf, &image, &params, open, FailedPatchPolicy::Fail).unwrap_err();
    assert!(matches!(err, ExtractError::PatchFailed { .. }), "{err}");
    assert!(!err.is_input_error());
    assert!(err.to_string().contains("not solved"), "{err}");
}

#[test]
fn off_ccd_patches_and_nonfinite_bins_carry_their_bits() {
    // A one-bundle frame of 3 fibers x 6 bins assembled from a block with an off-CCD patch
    // (fibers 0-1, bins 2-4), a NaN flux (fiber 2, bin 0) and an inf chi2pix (fiber 2, bin 5).
    let params = ExtractionParams {
        nspec: 3,
        bundlesize: 3,
        nsubbundles: 1,
        ..ExtractionParams::default()
    };
    let grid = WavelengthGrid::arange(6000.0, 6004.0, 0.8).unwrap();
    assert_eq!(grid.nwave(), 6);
    let mut arrays = FrameArrays::new(0, 3, 6, 1);
    arrays.flux = vec![10.0; 18];
    arrays.ivar = vec![1.0; 18];
    arrays.chi2pix = vec![1.0; 18];
    arrays.rdiags = vec![1.0 / 3.0; 54];
    for s in 0..2 {
        for j in 2..5 {
            let i = s * 6 + j;
            (arrays.flux[i], arrays.ivar[i], arrays.chi2pix[i]) = (0.0, 0.0, 0.0);
        }
    }
    arrays.flux[12] = f64::NAN;
    arrays.chi2pix[17] = f64::INFINITY;
    arrays.ivar[6] = 0.0; // fiber 1 bin 0: ivar 0 for no recorded reason
    let block = BundleBlock {
        bundle: 0,
        arrays,
        reports: vec![PatchReport {
            site: PatchSite {
                bundle: 0,
                patch: 0,
                ispec: 0,
                iwave: 2,
                nspec: 2,
                nwave: 3,
            },
            issue: PatchIssue::OffCcd,
        }],
        rejections: Vec::new(),
        model: None,
        npatch: 1,
    };
    let ex = assemble_frame(&grid, &params, 1, vec![block], None).unwrap();
    assert_eq!(ex.nonfinite_bins, [12, 17]);
    assert_eq!(ex.off_ccd_patches().len(), 1);
    assert_trustworthy_or_flagged(&ex, "assembled");
    for s in 0..3 {
        for j in 0..6 {
            let i = s * 6 + j;
            let expected = match (s, j) {
                (0..=1, 2..=4) => NODATA,
                (2, 0) | (2, 5) => BAD2DFIT,
                (1, 0) => NODATA,
                _ => 0,
            };
            assert_eq!(
                ex.mask[i] & (NODATA | BAD2DFIT),
                expected,
                "fiber {s} bin {j}"
            );
        }
    }
    assert_eq!((ex.arrays.ivar[12], ex.arrays.flux[12]), (0.0, 0.0));
    assert_eq!((ex.arrays.ivar[17], ex.arrays.chi2pix[17]), (0.0, 0.0));
}

/// numpy's median (the mean of the middle two for an even count).
fn numpy_median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

#[test]
fn frame_mask_follows_desispec_main_or_0_70() {
    let psf = psf();
    let mut image = preproc(&psf);
    // A masked rectangle over fiber 12's stamps for 40 rows (ALLBADPIX, SOMEBADPIX) and hot
    // pixels within the limits on fiber 5 (BAD2DFIT), so that every bit occurs.
    let spots = psf.spots(12, 1, &[6100.0]).unwrap();
    let c = spots.corner(0, 0);
    for row in c.yc as usize..c.yc as usize + 40 {
        for col in c.xc as usize - 2..c.xc as usize + spots.nx + 2 {
            image.mask[row * psf.npix_x + col] = 1;
        }
    }
    let hot = psf.spots(5, 1, &[6050.0]).unwrap().corner(0, 0);
    for k in 0..6 {
        let row = hot.yc as usize + 2 + 7 * k;
        image.image[row * psf.npix_x + hot.xc as usize + 8] += 5e3 * (k + 1) as f32;
    }
    let mut params = bundle_params();
    let limits = PixelLimits::for_image(&image);
    let policy = FailedPatchPolicy::Flag;
    let main = extract_with(&psf, &image, &params, limits, policy).unwrap();
    params.mask_rule = MaskRule::V0_70;
    let old = extract_with(&psf, &image, &params, limits, policy).unwrap();
    // Only the mask differs.
    assert!(main.arrays == old.arrays);
    let a = &main.arrays;
    let (nspec, nwave) = (a.nspec, a.nwave);
    let chi = &a.chi2pix;
    let fiber_med: Vec<f64> = (0..nspec)
        .map(|s| numpy_median(chi[s * nwave..(s + 1) * nwave].to_vec()))
        .collect();
    let wave_med: Vec<f64> = (0..nwave)
        .map(|j| numpy_median((0..nspec).map(|s| chi[s * nwave + j]).collect()))
        .collect();
    let mut counts = [0usize; 4];
    for (s, &fiber_median) in fiber_med.iter().enumerate() {
        for (j, &wave_median) in wave_med.iter().enumerate() {
            let i = s * nwave + j;
            let frac = a.pixmask_fraction[i];
            let mut base = 0;
            if frac > 0.5 {
                base |= SOMEBADPIX;
            }
            if frac == 1.0 {
                base |= ALLBADPIX;
            }
            let bad_main = chi[i] > 5.0 * wave_median && chi[i] > 5.0 * fiber_median;
            let bad_old = chi[i] > 100.0;
            let expect = |bad: bool| base | if bad { BAD2DFIT } else { 0 };
            assert_eq!(main.mask[i], expect(bad_main), "main: fiber {s} bin {j}");
            assert_eq!(old.mask[i], expect(bad_old), "0.70: fiber {s} bin {j}");
            counts[0] += usize::from(base & SOMEBADPIX != 0);
            counts[1] += usize::from(base & ALLBADPIX != 0);
            counts[2] += usize::from(bad_main);
            counts[3] += usize::from(bad_old);
        }
    }
    // The test exercises every bit and the two rules disagree somewhere.
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    assert!(main.mask != old.mask, "{counts:?}");
    assert_trustworthy_or_flagged(&main, "main rule");
    assert_trustworthy_or_flagged(&old, "0.70 rule");
}
