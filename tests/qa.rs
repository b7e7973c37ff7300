//! The `qa` module and command: R·truth against a dense resolution matrix, pull statistics of
//! a synthetic frame with known Gaussian noise, wavelength-grid and fiber checks, and the PNG
//! picture decoded back.

use desi_extract::io::{self, FrameData};
use desi_extract::patch::grid::gradient;
use desi_extract::qa::{self, convolve_truth, QaError, HEIGHT, WIDTH};
use desi_extract::sim::Spectra;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");

/// Dense `R` from stored diagonals: `R[j - ndiag + d][j] = diags[d][j]` (scipy dia layout,
/// offsets `+ndiag..-ndiag`).
fn dense(diags: &[f64], nwave: usize, ndiag: usize) -> Vec<Vec<f64>> {
    let mut r = vec![vec![0.0; nwave]; nwave];
    for d in 0..2 * ndiag + 1 {
        for (j, &v) in diags[d * nwave..(d + 1) * nwave].iter().enumerate() {
            let i = j as isize - ndiag as isize + d as isize;
            if (0..nwave as isize).contains(&i) {
                r[i as usize][j] = v;
            }
        }
    }
    r
}

#[test]
fn convolve_truth_hand_example() {
    // ndiag 1: d = 0 is the superdiagonal R[j-1][j], d = 1 the diagonal, d = 2 the subdiagonal
    // R[j+1][j]; the NaNs fall outside the matrix and must never be read.
    let diags = [
        f64::NAN,
        1.0,
        2.0,
        3.0, //
        10.0,
        20.0,
        30.0,
        40.0, //
        100.0,
        200.0,
        300.0,
        f64::NAN,
    ];
    let truth = [1.0, 2.0, 3.0, 4.0];
    let mut out = [0.0; 4];
    convolve_truth(&diags, &truth, 4, 1, &mut out);
    assert_eq!(out, [12.0, 146.0, 502.0, 1060.0]);
}

#[test]
fn convolve_truth_matches_dense_matrix() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (nwave, ndiag) in [(40, 5), (7, 5), (1, 0), (3, 2), (25, 1)] {
        let nd = 2 * ndiag + 1;
        let diags: Vec<f64> = (0..nd * nwave)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let truth: Vec<f64> = (0..nwave).map(|_| rng.random_range(0.0..100.0)).collect();
        let r = dense(&diags, nwave, ndiag);
        let mut out = vec![f64::NAN; nwave];
        convolve_truth(&diags, &truth, nwave, ndiag, &mut out);
        for i in 0..nwave {
            let want: f64 = (0..nwave).map(|j| r[i][j] * truth[j]).sum();
            assert!(
                (out[i] - want).abs() <= 1e-12 * (1.0 + want.abs()),
                "nwave {nwave}, ndiag {ndiag}, row {i}: {} vs dense {want}",
                out[i]
            );
        }
    }
}

/// Smooth continuum plus a few emission lines, photons per bin, for spectrum `s`.
fn truth_row(s: usize, wave: &[f64]) -> Vec<f64> {
    wave.iter()
        .map(|&w| {
            let line = |c: f64, a: f64| a * (-0.5 * ((w - c) / 1.2).powi(2)).exp();
            400.0
                + 30.0 * s as f64
                + 100.0 * (w / 37.0).sin()
                + line(6100.0, 2000.0)
                + line(6230.5, 800.0 + 50.0 * s as f64)
        })
        .collect()
}

/// A synthetic frame: an asymmetric Gaussian resolution per spectrum (columns normalised),
/// flux = R·truth/dwave + Gaussian noise of known ivar, some bins with ivar = 0 (and NaN flux),
/// and the matching truth.
fn synthetic(specmin: usize, nspec: usize, nwave: usize, seed: u64) -> (FrameData, Spectra) {
    let ndiag = 5;
    let nd = 2 * ndiag + 1;
    let wave: Vec<f64> = (0..nwave).map(|j| 6000.0 + 0.8 * j as f64).collect();
    let dwave = gradient(&wave);
    let truth_flux: Vec<f64> = (0..nspec)
        .flat_map(|s| truth_row(specmin + s, &wave))
        .collect();
    let mut resolution = vec![0.0; nspec * nd * nwave];
    for s in 0..nspec {
        for j in 0..nwave {
            let sigma = 1.0 + 0.3 * (s as f64 / nspec as f64) + 0.2 * (j as f64 / nwave as f64);
            let kernel: Vec<f64> = (0..nd)
                .map(|d| {
                    let off = d as f64 - ndiag as f64 - 0.3;
                    (-0.5 * (off / sigma).powi(2)).exp()
                })
                .collect();
            let norm: f64 = kernel.iter().sum();
            for d in 0..nd {
                resolution[(s * nd + d) * nwave + j] = kernel[d] / norm;
            }
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let unit = Normal::new(0.0, 1.0).unwrap();
    let mut flux = vec![0.0; nspec * nwave];
    let mut ivar = vec![0.0; nspec * nwave];
    let mut model = vec![0.0; nwave];
    for s in 0..nspec {
        let rd = &resolution[s * nd * nwave..(s + 1) * nd * nwave];
        convolve_truth(
            rd,
            &truth_flux[s * nwave..(s + 1) * nwave],
            nwave,
            ndiag,
            &mut model,
        );
        for j in 0..nwave {
            let i = s * nwave + j;
            let expected = model[j] / dwave[j];
            if (j + 7 * s) % 97 == 0 {
                flux[i] = f64::NAN;
                ivar[i] = 0.0;
                continue;
            }
            let sigma = (expected.abs() / 2.0).sqrt() + 3.0;
            flux[i] = expected + sigma * unit.sample(&mut rng);
            ivar[i] = 1.0 / (sigma * sigma);
        }
    }
    let frame = FrameData {
        specmin,
        nspec,
        nwave,
        ndiag,
        wavelength: wave.clone(),
        flux,
        ivar,
        mask: vec![0; nspec * nwave],
        resolution,
        chi2pix: (0..nspec * nwave)
            .map(|i| 0.5 + (i % 11) as f64 * 0.1)
            .collect(),
        header: Vec::new(),
        keywords: Vec::new(),
    };
    let truth = Spectra {
        specmin: 0,
        nspec,
        wave,
        flux: truth_flux,
    };
    // The truth's rows are the frame's spectra only when specmin is 0: callers adjust.
    (frame, truth)
}

#[test]
fn pulls_of_known_noise_are_unit_normal() {
    let (frame, truth) = synthetic(0, 20, 600, 11);
    let (pulls, stats) = qa::pulls(&frame, &truth).unwrap();
    let skipped = frame.ivar.iter().filter(|&&v| v == 0.0).count();
    assert!(skipped > 50);
    assert_eq!(stats.n, frame.nspec * frame.nwave - skipped);
    assert_eq!(pulls.len(), stats.n);
    // Statistical errors: mean 1/sqrt(N) = 0.0092, std 1/sqrt(2N) = 0.0065 for N ~ 11,900.
    let n = stats.n as f64;
    assert!(stats.mean.abs() < 4.0 / n.sqrt(), "mean {}", stats.mean);
    assert!(
        (stats.std - 1.0).abs() < 4.0 / (2.0 * n).sqrt(),
        "std {}",
        stats.std
    );
    // |pull| > 3: 0.27 % of a unit normal, ~32 +- 6 pulls.
    assert!(
        (0.0005..0.006).contains(&stats.frac_abs_gt_3),
        "|pull| > 3 fraction {}",
        stats.frac_abs_gt_3
    );
    // chi2pix takes the values 0.5, 0.6, ..., 1.5 about equally often.
    assert!(
        (stats.median_chi2pix - 1.0).abs() < 0.101,
        "{}",
        stats.median_chi2pix
    );
    // Histogram: 40 bins of 0.25 from -5 to 5, counts matching the pulls inside.
    assert_eq!(stats.histogram.len(), 40);
    assert!((stats.histogram[0].0 + 4.875).abs() < 1e-12);
    assert!((stats.histogram[39].0 - 4.875).abs() < 1e-12);
    let inside = pulls.iter().filter(|p| p.abs() < 5.0).count() as u64;
    assert_eq!(stats.histogram.iter().map(|&(_, c)| c).sum::<u64>(), inside);
    // The bins next to 0 hold ~0.25 * 0.3989 * 0.99 of the pulls.
    let central = stats.histogram[20].1 as f64 / n;
    assert!(
        (central - 0.0987).abs() < 0.01,
        "central bin fraction {central}"
    );

    // A flux scaled by 2% gives a pull mean far from 0: the test can fail.
    let mut biased = frame.clone();
    for v in &mut biased.flux {
        *v *= 1.02;
    }
    let (_, bad) = qa::pulls(&biased, &truth).unwrap();
    assert!(bad.mean > 0.3, "biased mean {}", bad.mean);
}

#[test]
fn truth_sub_range_and_row_offset() {
    let (frame, truth) = synthetic(0, 6, 200, 5);
    let (_, exact) = qa::pulls(&frame, &truth).unwrap();

    // Truth on a wider grid (12 bins below, 30 above) and with 3 extra spectra before: the
    // frame's spectra 3..9 are rows 3..9 of a truth starting at spectrum 0.
    let (lo, hi) = (12, 30);
    let nwave = frame.nwave + lo + hi;
    let wave: Vec<f64> = (0..nwave)
        .map(|j| 6000.0 + 0.8 * (j as f64 - lo as f64))
        .collect();
    let mut flux = vec![-1e9; 3 * nwave];
    for s in 0..truth.nspec {
        flux.extend((0..nwave).map(|j| {
            if (lo..lo + frame.nwave).contains(&j) {
                truth.flux[s * frame.nwave + j - lo]
            } else {
                -1e9
            }
        }));
    }
    let wide = Spectra {
        specmin: 0,
        nspec: truth.nspec + 3,
        wave,
        flux,
    };
    let mut shifted = frame.clone();
    shifted.specmin = 3;
    let (_, stats) = qa::pulls(&shifted, &wide).unwrap();
    assert_eq!(stats, exact);

    // The same frame against truth rows 0..6 (wrong spectra) differs.
    let (_, wrong) = qa::pulls(&frame, &wide).unwrap();
    assert!(
        wrong.std > 100.0,
        "std against the wrong rows {}",
        wrong.std
    );
}

#[test]
fn grid_and_fiber_mismatches_are_errors() {
    let (frame, truth) = synthetic(0, 4, 100, 1);

    let mut shifted = truth.clone();
    for w in &mut shifted.wave {
        *w += 0.01;
    }
    let err = qa::pulls(&frame, &shifted).unwrap_err();
    assert!(matches!(err, QaError::WaveGrid { .. }), "{err}");
    assert!(err.to_string().contains("6000"), "{err}");
    assert!(err.is_input());

    // Same start, different step: fails at bin 1.
    let mut stretched = truth.clone();
    for (j, w) in stretched.wave.iter_mut().enumerate() {
        *w = 6000.0 + 0.8001 * j as f64;
    }
    let err = qa::pulls(&frame, &stretched).unwrap_err();
    assert!(
        matches!(err, QaError::WaveGrid { .. }) && err.to_string().contains("frame bin 1"),
        "{err}"
    );

    // Truth shorter than the frame, or ending inside it.
    let mut short = truth.clone();
    short.wave.truncate(50);
    short.flux = short
        .flux
        .chunks(100)
        .flat_map(|r| r[..50].to_vec())
        .collect();
    assert!(matches!(
        qa::pulls(&frame, &short),
        Err(QaError::WaveGrid { .. })
    ));
    let mut late = truth.clone();
    for w in &mut late.wave {
        *w -= 8.0; // frame bin 0 is truth bin 10
    }
    let err = qa::pulls(&frame, &late).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");

    // Truth without the frame's spectra.
    let mut beyond = frame.clone();
    beyond.specmin = 2;
    let err = qa::pulls(&beyond, &truth).unwrap_err();
    assert!(
        matches!(err, QaError::Spectra { .. })
            && err.to_string().contains("spectra 2 to 5, the truth 0 to 3"),
        "{err}"
    );
    let mut later_truth = truth.clone();
    later_truth.specmin = 1;
    assert!(matches!(
        qa::pulls(&frame, &later_truth),
        Err(QaError::Spectra { .. })
    ));

    // Inconsistent sizes and data.
    let mut cut = frame.clone();
    cut.resolution.pop();
    assert!(matches!(
        qa::pulls(&cut, &truth),
        Err(QaError::Shape { .. })
    ));
    let mut negative = frame.clone();
    negative.ivar[5] = -1.0;
    assert!(matches!(
        qa::pulls(&negative, &truth),
        Err(QaError::BadData { .. })
    ));
    let mut empty = frame.clone();
    empty.ivar.fill(0.0);
    assert!(matches!(
        qa::pulls(&empty, &truth),
        Err(QaError::NoValidBins)
    ));
}

/// Pixels within `tol` (per channel) of `color`.
fn count_near(rgb: &[u8], color: [u8; 3], tol: i32) -> usize {
    rgb.chunks_exact(3)
        .filter(|p| (0..3).all(|k| (p[k] as i32 - color[k] as i32).abs() <= tol))
        .count()
}

/// Decodes an 8-bit RGB PNG.
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn picture_has_curves_text_and_histogram() {
    let (frame, truth) = synthetic(0, 9, 400, 2);
    let model = qa::model_flux(&frame, &truth).unwrap();
    let (_, stats) = qa::pulls_with_model(&frame, &model).unwrap();
    let fibers = qa::default_fibers(&frame);
    assert_eq!(fibers, [0, 4, 8]);
    let canvas = qa::render(&frame, &model, &stats, &fibers, "synthetic").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qa.png");
    qa::write_png(&canvas, &path).unwrap();
    if let Ok(keep) = std::env::var("QA_TEST_PNG") {
        qa::write_png(&canvas, Path::new(&keep)).unwrap();
    }
    // Only the PNG is left: the temporary was renamed.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("qa.png")]);

    let (w, h, rgb) = decode(&path);
    assert_eq!((w, h), (WIDTH, HEIGHT));
    assert_eq!(rgb, canvas.rgb);
    let colours: HashSet<&[u8]> = rgb.chunks_exact(3).collect();
    assert!(
        colours.len() > 50,
        "only {} distinct colours",
        colours.len()
    );
    let white = count_near(&rgb, [255, 255, 255], 0);
    assert!(
        white > rgb.len() / 3 / 2,
        "background: {white} white pixels"
    );
    // Extracted flux (blue), expected flux (orange), histogram bars (light blue), Gaussian (red).
    for (what, colour, least) in [
        ("flux curve", [31, 119, 180], 200),
        ("model curve", [255, 127, 14], 200),
        ("histogram bars", [158, 202, 225], 5000),
        ("Gaussian curve", [214, 39, 40], 200),
        ("text and axes", [30, 30, 30], 1000),
    ] {
        let n = count_near(&rgb, colour, 12);
        assert!(
            n >= least,
            "{what}: {n} pixels near {colour:?}, expected >= {least}"
        );
    }
    // The curves lie inside the first panel (rows 62..194) and, with the emission line at
    // 6100 A, span most of its height.
    // Coloured (not grey) pixels there are curve pixels: grid, frame and text are grey.
    let coloured = |p: [u8; 3]| p.iter().max().unwrap() - p.iter().min().unwrap() > 60;
    let curve_rows: HashSet<u32> = (40..240)
        .filter(|&y| (101..1369).any(|x| coloured(canvas.pixel(x, y))))
        .collect();
    assert!(
        curve_rows.len() > 80 && curve_rows.iter().all(|y| (63..194).contains(y)),
        "curve rows of panel 1: {} from {:?} to {:?}",
        curve_rows.len(),
        curve_rows.iter().min(),
        curve_rows.iter().max()
    );
}

#[test]
fn picture_rejects_bad_fibers_and_paths() {
    let (mut frame, truth) = synthetic(0, 4, 100, 4);
    frame.specmin = 0;
    let model = qa::model_flux(&frame, &truth).unwrap();
    let (_, stats) = qa::pulls_with_model(&frame, &model).unwrap();
    let err = qa::render(&frame, &model, &stats, &[1, 4], "x").unwrap_err();
    assert!(matches!(err, QaError::Fiber { fiber: 4, .. }), "{err}");
    assert!(err.to_string().contains("spectra 0 to 3"), "{err}");
    assert!(matches!(
        qa::render(&frame, &model, &stats, &[], "x"),
        Err(QaError::FiberCount { n: 0, .. })
    ));
    assert!(matches!(
        qa::render(&frame, &model, &stats, &[0; 7], "x"),
        Err(QaError::FiberCount { n: 7, .. })
    ));
    let canvas = qa::render(&frame, &model, &stats, &[2], "one fiber").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("qa.png");
    let err = qa::write_png(&canvas, &missing).unwrap_err();
    assert!(
        matches!(err, QaError::Output(io::IoError::InvalidInput { .. }))
            && err.to_string().contains("no-such-dir"),
        "{err}"
    );
    assert!(err.is_input());
}

/// Runs the binary.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_prints_statistics_and_rejects_mismatched_truth() {
    let dir = tempfile::tempdir().unwrap();
    let (frame, truth) = synthetic(0, 5, 150, 8);
    let frame_path = dir.path().join("frame.fits");
    let truth_path = dir.path().join("truth.fits");
    io::write_frame(&frame_path, &frame, None).unwrap();
    io::write_spectra(&truth_path, &truth).unwrap();
    let png_path = dir.path().join("qa.png");
    let (f, t, p) = (
        frame_path.to_str().unwrap(),
        truth_path.to_str().unwrap(),
        png_path.to_str().unwrap(),
    );

    let (code, stdout, stderr) =
        run(&["qa", "--frame", f, "--truth", t, "-o", p, "--fibers", "0,3"]);
    assert_eq!(code, Some(0), "stdout {stdout}\nstderr {stderr}");
    // The frame is stored in f4: the statistics match the f64 ones closely.
    let (_, stats) = qa::pulls(&frame, &truth).unwrap();
    assert!(stdout.contains(&format!("N = {}", stats.n)), "{stdout}");
    for key in [
        "mean =",
        "std =",
        "|pull| > 3 fraction =",
        "median chi2pix =",
        "qa.png",
    ] {
        assert!(stdout.contains(key), "missing '{key}' in {stdout}");
    }
    assert_eq!(decode(&png_path).0, WIDTH);

    // Bad fiber, mismatched grid, missing directory: exit 1, message naming the problem.
    let (code, _, stderr) = run(&["qa", "--frame", f, "--truth", t, "-o", p, "--fibers", "9"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("fiber 9"), "{stderr}");

    let mut shifted = truth.clone();
    for w in &mut shifted.wave {
        *w += 0.4;
    }
    let shifted_path = dir.path().join("shifted.fits");
    io::write_spectra(&shifted_path, &shifted).unwrap();
    let out2 = dir.path().join("qa2.png");
    let (code, _, stderr) = run(&[
        "qa",
        "--frame",
        f,
        "--truth",
        shifted_path.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("shifted.fits") && stderr.contains("wavelength grids differ"),
        "{stderr}"
    );
    assert!(!out2.exists());

    let nowhere = dir.path().join("missing").join("qa.png");
    let (code, _, stderr) = run(&[
        "qa",
        "--frame",
        f,
        "--truth",
        t,
        "-o",
        nowhere.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");

    let (code, _, stderr) = run(&["qa", "--frame", "/nonexistent.fits", "--truth", t, "-o", p]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent.fits"), "{stderr}");
}
