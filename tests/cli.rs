//! End-to-end tests of the `desi-extract` binary: `simulate` -> `extract` -> `info`, files read
//! back through the library, bad inputs (exit code 1, a message naming the file and the
//! problem, no output left behind), `exposure`'s bad inputs and an empty exposure (its frames
//! are in tests/mpi.rs and tests/exposure_rerun.rs) and the frame as astropy reads it (tests/astropy_check.py).
//!
//! Frames are small (one bundle, 126 wavelengths) but every preproc is the full r0 CCD.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use desi_extract::io::{self, PreprocImage};
use desi_extract::sim::project_spectra;
use fitsio::hdu::HduInfo;
use fitsio::FitsFile;

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");
use common::PSF_PATH as PSF;
/// The wavelength grid of every run: 6000, 6000.8, ..., 6100 (126 bins).
const WAVE: &str = "6000,6100,0.8";
const NWAVE: usize = 126;
/// Spectra 25..50: the second bundle.
const SPECMIN: usize = 25;
const NSPEC: usize = 25;
/// r0 CCD: NPIX_Y x NPIX_X.
const NY: usize = 4128;
const NX: usize = 4114;
/// Default `--read-noise` of `simulate`.
const READ_NOISE: f64 = 3.0;

/// What a run of the binary did.
struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Panics with the whole run unless it exited with `code`.
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "desi-extract {} exited with {:?}, expected {code}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the run exited 0.
    fn expect_ok(&self) -> &Self {
        self.expect_code(0)
    }
}

/// Runs the binary with `args`.
fn run(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

use common::utf8 as s;

/// `simulate` of spectra 25..50 on the test grid into `dir/name`, plus `extra` flags.
fn simulate(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let nspec = NSPEC.to_string();
    let specmin = SPECMIN.to_string();
    let mut args = vec![
        "simulate",
        "-p",
        PSF,
        "-o",
        s(&out),
        "-w",
        WAVE,
        "-s",
        &specmin,
        "-n",
        &nspec,
    ];
    args.extend_from_slice(extra);
    run(&args).expect_ok();
    assert!(
        out.is_file(),
        "simulate exited 0 but wrote no {}",
        out.display()
    );
    out
}

/// `extract` of spectra 25..50 from `preproc` into `dir/frame.fits`, plus `extra` flags.
fn extract(dir: &Path, preproc: &Path, extra: &[&str]) -> (PathBuf, Run) {
    let frame = dir.join("frame.fits");
    let r = run(&common::extract_args(
        preproc,
        &frame,
        WAVE,
        ("25", "25"),
        extra,
    ));
    r.expect_ok();
    assert!(
        frame.is_file(),
        "extract exited 0 but wrote no {}",
        frame.display()
    );
    (frame, r)
}

fn read_preproc(path: &Path) -> PreprocImage {
    io::read_preproc(path).unwrap_or_else(|e| panic!("reading back the simulated preproc: {e}"))
}

/// The value of header card `name` of a preproc: the text after `= ` without the comment,
/// the quotes of a string and blanks.
fn card_value(img: &PreprocImage, name: &str) -> Option<String> {
    let card = img.header.iter().find(|c| io::card_name(c) == name)?;
    let value = card.get(10..)?.split(" /").next()?.trim();
    Some(value.trim_matches('\'').trim().to_string())
}

/// Sum of the image over the stamp boxes of spectrum `ispec` at each of `waves`.
fn stamp_sums(img: &PreprocImage, ispec: usize, waves: &[f64]) -> (f64, usize) {
    let psf = io::read_psf(Path::new(PSF)).expect("read the PSF");
    let spots = psf.spots(ispec, 1, waves).expect("spots");
    let (mut sum, mut npix) = (0.0, 0);
    for k in 0..waves.len() {
        let c = spots.corner(0, k);
        for r in 0..spots.ny {
            for i in 0..spots.nx {
                let (row, col) = (c.yc as usize + r, c.xc as usize + i);
                sum += f64::from(img.image[row * img.nx + col]);
                npix += 1;
            }
        }
    }
    (sum, npix)
}

/// The names of the entries of `dir`, as a set.
fn dir_names(dir: &Path) -> BTreeSet<String> {
    common::dir_names(dir).into_iter().collect()
}

/// numpy's `arange(wmin, wmax + dw/2, dw)` as docs/algorithm.md §3.1 defines it:
/// `wave[i] = wmin + i*delta` with `delta = (wmin + dw) - wmin` in f64.
fn arange(wmin: f64, wmax: f64, dw: f64) -> Vec<f64> {
    let n = ((wmax + 0.5 * dw - wmin) / dw).ceil() as usize;
    let delta = (wmin + dw) - wmin;
    (0..n).map(|i| wmin + i as f64 * delta).collect()
}

#[test]
fn simulate_writes_a_preproc_and_its_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truth_path = dir.path().join("truth.fits");
    let pre = simulate(
        dir.path(),
        "pre.fits",
        &["--truth", s(&truth_path), "--seed", "5"],
    );
    assert_eq!(
        dir_names(dir.path()),
        BTreeSet::from(["pre.fits".to_string(), "truth.fits".to_string()]),
        "simulate left other files"
    );

    let img = read_preproc(&pre);
    assert_eq!((img.ny, img.nx), (NY, NX), "preproc shape (rows, columns)");
    assert_eq!(img.image.len(), NY * NX);
    assert_eq!(img.camera, "r0");
    assert_eq!(
        card_value(&img, "CAMERA").as_deref(),
        Some("r0"),
        "CAMERA card"
    );
    assert_eq!(
        card_value(&img, "FLAVOR").as_deref(),
        Some("science"),
        "FLAVOR card"
    );
    let rdnoise: f64 = card_value(&img, "RDNOISE")
        .expect("RDNOISE card")
        .parse()
        .expect("RDNOISE is a number");
    assert_eq!(rdnoise, READ_NOISE, "RDNOISE");
    assert!(img.mask.iter().all(|&m| m == 0), "MASK must be all 0");
    let fibermap = img.fibermap.as_ref().expect("the preproc has a FIBERMAP");
    assert_eq!(fibermap.nrows, 500, "FIBERMAP rows (whole petal)");

    let truth =
        io::read_spectra(&truth_path).unwrap_or_else(|e| panic!("reading back the truth: {e}"));
    assert_eq!(
        (truth.nspec, truth.nwave()),
        (NSPEC, NWAVE),
        "truth shape (nspec, nwave)"
    );
    assert_eq!(truth.wave, arange(6000.0, 6100.0, 0.8), "truth wavelengths");
    assert!(
        truth.flux.iter().all(|&f| f.is_finite() && f >= 0.0),
        "truth flux finite and >= 0"
    );

    // IVAR = 1 / (model + rn^2), with the model recomputed from the truth.
    let psf = io::read_psf(Path::new(PSF)).expect("read the PSF");
    let mut spectra = truth.clone();
    spectra.specmin = SPECMIN;
    let model = project_spectra(&psf, &spectra).expect("project the truth");
    let mut worst = 0.0f64;
    for (i, (&iv, &m)) in img.ivar.iter().zip(&model).enumerate() {
        assert!(
            iv > 0.0,
            "ivar {iv} <= 0 at (row {}, col {})",
            i / NX,
            i % NX
        );
        let want = 1.0 / (m + READ_NOISE * READ_NOISE);
        worst = worst.max((f64::from(iv) - want).abs() / want);
    }
    assert!(
        worst < 1e-6,
        "IVAR differs from 1/(model + rn^2) by {worst:e} (relative)"
    );
    assert!(
        img.image.iter().all(|v| v.is_finite()),
        "IMAGE must be finite"
    );

    // Light where the fibers' traces are, none where no fiber was simulated.
    let bins: Vec<usize> = (1..12).map(|i| 10 * i).collect();
    let waves: Vec<f64> = bins.iter().map(|&k| truth.wave[k]).collect();
    let noise = |npix: usize| READ_NOISE * (npix as f64).sqrt();
    let (lit, npix) = stamp_sums(&img, 37, &waves);
    let expected: f64 = bins
        .iter()
        .map(|&k| truth.flux[(37 - SPECMIN) * NWAVE + k])
        .sum();
    assert!(
        lit > 0.5 * expected && lit > 20.0 * noise(npix),
        "fiber 37 stamps hold {lit:.1} electrons over {npix} pixels (truth {expected:.1})"
    );
    let (dark, npix) = stamp_sums(&img, 5, &waves);
    assert!(
        dark.abs() < 6.0 * noise(npix),
        "fiber 5 (not simulated) stamps hold {dark:.1} electrons over {npix} pixels"
    );
}

#[test]
fn simulate_noise_follows_the_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = simulate(dir.path(), "a.fits", &["--seed", "5"]);
    let b = simulate(dir.path(), "b.fits", &["--seed", "5"]);
    let c = simulate(dir.path(), "c.fits", &["--seed", "6"]);
    let bits =
        |p: &Path| -> Vec<u32> { read_preproc(p).image.iter().map(|v| v.to_bits()).collect() };
    let (a, b, c) = (bits(&a), bits(&b), bits(&c));
    let diff_ab = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(diff_ab, 0, "same seed, {diff_ab} IMAGE pixels differ");
    let diff_ac = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    assert!(
        diff_ac > a.len() / 2,
        "seeds 5 and 6 differ in only {diff_ac} of {} IMAGE pixels",
        a.len()
    );
}

#[test]
fn simulate_noiseless_image_is_the_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truth_path = dir.path().join("truth.fits");
    let pre = simulate(
        dir.path(),
        "pre.fits",
        &["--truth", s(&truth_path), "--noiseless"],
    );
    let img = read_preproc(&pre);
    let mut truth = io::read_spectra(&truth_path).expect("read the truth");
    truth.specmin = SPECMIN;
    let psf = io::read_psf(Path::new(PSF)).expect("read the PSF");
    let model = project_spectra(&psf, &truth).expect("project the truth");
    let bad = img
        .image
        .iter()
        .zip(&model)
        .position(|(&v, &m)| v != m as f32);
    if let Some(i) = bad {
        panic!(
            "noiseless IMAGE (row {}, col {}) = {} but the model is {}",
            i / NX,
            i % NX,
            img.image[i],
            model[i]
        );
    }
    // Spectra 25..50 at 6000-6100 A lie well inside the CCD: the image holds all the photons.
    let total_image: f64 = img.image.iter().map(|&v| f64::from(v)).sum();
    let total_truth: f64 = truth.flux.iter().sum();
    let rel = (total_image - total_truth).abs() / total_truth;
    assert!(
        rel < 0.01,
        "IMAGE sums to {total_image:.1} electrons, the truth to {total_truth:.1} ({:.3}% off)",
        100.0 * rel
    );
}

#[test]
fn extract_writes_a_frame_and_a_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pre = simulate(dir.path(), "pre.fits", &["--seed", "5"]);
    let model = dir.path().join("model.fits");
    let (frame_path, r) = extract(dir.path(), &pre, &["-m", s(&model)]);
    assert_eq!(
        dir_names(dir.path()),
        BTreeSet::from(["frame.fits", "model.fits", "pre.fits"].map(String::from)),
        "extract left other files"
    );
    for word in ["spectra", "median S/N", "time"] {
        assert!(
            r.stdout.contains(word),
            "extract summary lacks {word:?}:\n{}",
            r.stdout
        );
    }

    let frame =
        io::read_frame(&frame_path).unwrap_or_else(|e| panic!("reading back the frame: {e}"));
    assert_eq!(
        (frame.nspec, frame.nwave, frame.specmin),
        (NSPEC, NWAVE, SPECMIN),
        "(nspec, nwave, specmin)"
    );
    assert_eq!(frame.ndiag, 5, "ndiag (HSIZEY of the r0 PSF)");
    assert_eq!(
        frame.wavelength,
        arange(6000.0, 6100.0, 0.8),
        "frame wavelengths"
    );
    if let Some(i) = frame.ivar.iter().position(|&v| v.is_nan() || v <= 0.0) {
        panic!(
            "ivar[{}][{}] = {} is not > 0",
            i / NWAVE,
            i % NWAVE,
            frame.ivar[i]
        );
    }
    assert!(
        frame.flux.iter().all(|v| v.is_finite()),
        "flux must be finite"
    );
    let fibermap =
        io::read_table(&frame_path, "FIBERMAP").unwrap_or_else(|e| panic!("frame FIBERMAP: {e}"));
    let fibers = fibermap
        .column_i64("FIBER")
        .expect("FIBERMAP has a FIBER column");
    assert_eq!(fibers, (25..50).collect::<Vec<i64>>(), "FIBERMAP FIBER");

    let mut f = FitsFile::open(&model).unwrap_or_else(|e| panic!("open {}: {e}", model.display()));
    assert_eq!(
        f.num_hdus().expect("num_hdus"),
        1,
        "the model file has one HDU"
    );
    let hdu = f.primary_hdu().expect("primary HDU");
    let extname: String = hdu.read_key(&mut f, "EXTNAME").expect("model EXTNAME");
    assert_eq!(extname.trim(), "MODEL");
    match &hdu.info {
        HduInfo::ImageInfo { shape, .. } => {
            assert_eq!(shape, &[NY, NX], "MODEL shape (rows, columns)")
        }
        other => panic!("MODEL is not an image: {other:?}"),
    }
    common::desispec_reads(&[&frame_path]);
}

#[test]
fn info_names_the_kind_and_refuses_other_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truth = dir.path().join("truth.fits");
    let pre = simulate(dir.path(), "pre.fits", &["--truth", s(&truth)]);
    let (frame, _) = extract(dir.path(), &pre, &[]);
    for (path, kind) in [
        (Path::new(PSF), "DESI GaussHermite PSF"),
        (pre.as_path(), "DESI preproc image"),
        (frame.as_path(), "DESI frame"),
    ] {
        let r = run(&["info", s(path)]);
        r.expect_ok();
        assert!(
            r.stdout.contains(kind) && r.stdout.contains(s(path)),
            "info {} does not say {kind:?}:\n{}",
            path.display(),
            r.stdout
        );
    }
    // desispec reads the frame; the read-back can fail: the preproc is no frame, and frames
    // with a bin of IVAR 0 without a MASK bit or with a MASK bit desispec does not define are
    // refused (written through the library: the binary writes neither).
    let mut bad = io::read_frame(&frame).expect("read the frame");
    bad.ivar[3] = 0.0;
    bad.mask[3] = 0;
    let unflagged = dir.path().join("unflagged.fits");
    io::write_frame(&unflagged, &bad, None).expect("write the unflagged frame");
    bad.ivar[3] = 1.0;
    bad.mask[5] = 1 << 20;
    let unknown_bit = dir.path().join("unknown-bit.fits");
    io::write_frame(&unknown_bit, &bad, None).expect("write the frame with bit 20");
    if let Some(verdicts) = common::desispec_verdicts(&[&frame, &pre, &unflagged, &unknown_bit]) {
        assert_eq!(verdicts[0], Ok(()), "desispec on {}", frame.display());
        let problem = |i: usize| verdicts[i].clone().expect_err("the read-back must fail");
        assert!(problem(1).contains("extension not found"), "{}", problem(1));
        assert!(
            problem(2).contains("1 bin(s) with IVAR = 0 and MASK = 0"),
            "{}",
            problem(2)
        );
        assert!(
            problem(3).contains("MASK bits 0x100000 are not desispec specmask bits"),
            "{}",
            problem(3)
        );
    }
    let garbage = dir.path().join("notes.txt");
    std::fs::write(&garbage, b"not a FITS file\n".repeat(300)).expect("write garbage");
    for (path, problem) in [
        (&garbage, "not a FITS file"),
        (&truth, "not a DESI PSF, preproc or frame"),
    ] {
        let r = run(&["info", s(path)]);
        r.expect_code(1);
        assert!(
            r.stderr.contains(s(path)) && r.stderr.contains(problem),
            "info {}: the message should name the file and say {problem:?}:\n{}",
            path.display(),
            r.stderr
        );
    }
}

#[test]
fn bad_inputs_exit_1_and_leave_no_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pre = simulate(d, "pre.fits", &[]);
    let garbage = d.join("garbage-psf.fits");
    std::fs::write(&garbage, b"SIMPLE  = nonsense\n".repeat(400)).expect("write garbage");
    // A preproc with one NaN pixel where ivar > 0, on a CCD row and column the extraction reads
    // (only the rows the requested traces reach are read and checked, on the CPU only their
    // columns: desi_extract::extract::ccd_rows and ccd_cols).
    let nan_pre = d.join("nan-pre.fits");
    let mut img = read_preproc(&pre);
    let (rows, cols) = {
        let psf = io::read_psf(Path::new(PSF)).expect("read the PSF");
        let params = desi_extract::patch::ExtractionParams {
            specmin: SPECMIN,
            nspec: NSPEC,
            ..Default::default()
        };
        let grid = desi_extract::patch::WavelengthGrid::arange(6000.0, 6100.0, 0.8).expect("grid");
        (
            desi_extract::extract::ccd_rows(&psf, &params, &grid),
            desi_extract::extract::ccd_cols(&psf, &params, &grid),
        )
    };
    let (row, col) = ((rows.start + rows.end) / 2, (cols.start + cols.end) / 2);
    assert!(img.ivar[row * NX + col] > 0.0);
    img.image[row * NX + col] = f32::NAN;
    io::write_preproc(&nan_pre, &img).expect("write the NaN preproc");
    // The same image of camera b0 (the PSF is r0's), and with a 3-row FIBERMAP.
    img.image[row * NX + col] = 1.0;
    let b0_pre = d.join("b0-pre.fits");
    img.camera = "b0".into();
    img.header.retain(|c| !c.starts_with("CAMERA "));
    io::write_preproc(&b0_pre, &img).expect("write the b0 preproc");
    img.camera = "r0".into();
    let fm3_pre = d.join("fm3-pre.fits");
    let full_fibermap = img.fibermap.clone();
    img.fibermap = img.fibermap.as_ref().and_then(|f| f.slice_rows(0..3));
    io::write_preproc(&fm3_pre, &img).expect("write the 3-row FIBERMAP preproc");
    // What desispec could not read in the frame (docs/algorithm.md §1.2) is refused before the
    // image is compared with the PSF: tiny (6 x 9 pixel) preprocs carry it. Without FLAVOR
    // (desispec refuses to write such a frame: Frame.vet()), with a header card no FITS reader
    // parses, with a FIBERMAP without FIBER (both would be carried into the frame).
    let tiny = |path: &Path, header: Vec<String>| {
        let n = 6 * 9;
        let image = PreprocImage {
            path: path.to_path_buf(),
            nx: 9,
            ny: 6,
            image: vec![1.0; n],
            ivar: vec![1.0; n],
            mask: vec![0; n],
            camera: "r0".into(),
            header,
            readnoise: None,
            fibermap: full_fibermap.clone(),
        };
        io::write_preproc(path, &image).expect("write a tiny preproc");
    };
    let noflavor_pre = d.join("noflavor-pre.fits");
    let badcard_pre = d.join("badcard-pre.fits");
    let nofiber_pre = d.join("nofiber-pre.fits");
    let mut header = img.header.clone();
    tiny(&badcard_pre, header.clone());
    common::set_raw_card(&badcard_pre, "", "SIMSEED", "E");
    tiny(&nofiber_pre, header.clone());
    common::set_raw_card(&nofiber_pre, "FIBERMAP", "TTYPE1", "'FIB5R   '");
    header.retain(|c| !c.starts_with("FLAVOR "));
    tiny(&noflavor_pre, header);
    drop(img);
    let inputs = dir_names(d);

    let missing_pre = d.join("missing-pre.fits");
    let missing_psf = d.join("missing-psf.fits");
    let out = d.join("frame.fits");
    let model = d.join("model.fits");
    let out_nodir = d.join("no-such-dir/frame.fits");
    let model_nodir = d.join("no-such-dir/model.fits");
    let pixel = format!("pixel (row {row}, col {col})");
    let cases: Vec<(&str, Vec<&str>, &Path, Vec<&str>)> = vec![
        (
            "missing preproc",
            vec!["-i", s(&missing_pre)],
            &missing_pre,
            vec!["file not found"],
        ),
        (
            "missing PSF",
            vec!["-p", s(&missing_psf)],
            &missing_psf,
            vec!["file not found"],
        ),
        (
            "garbage PSF",
            vec!["-p", s(&garbage)],
            &garbage,
            vec!["not a FITS file"],
        ),
        (
            "NaN pixel",
            vec!["-i", s(&nan_pre)],
            &nan_pre,
            vec![&pixel, "NaN"],
        ),
        (
            "wavelengths off the PSF",
            vec!["-w", "3000,3100"],
            Path::new(PSF),
            vec!["outside the PSF domain"],
        ),
        (
            "one-point grid",
            vec!["-w", "6000,6000,0.8"],
            Path::new("6000,6000,0.8"),
            vec!["at least two"],
        ),
        (
            "step of 1000 A",
            vec!["-w", "6000,6100,1000"],
            Path::new("6000,6100,1000"),
            vec!["must not exceed 2 A"],
        ),
        (
            "camera mismatch",
            vec!["-i", s(&b0_pre)],
            &b0_pre,
            vec!["CAMERA is b0", "camera r0"],
        ),
        (
            "3-row FIBERMAP",
            vec!["-i", s(&fm3_pre)],
            &fm3_pre,
            vec!["FIBERMAP has 3 rows", "500 fibers"],
        ),
        (
            "unparsable card",
            vec!["-i", s(&badcard_pre)],
            &badcard_pre,
            vec!["header card SIMSEED has a value FITS readers cannot parse"],
        ),
        (
            "FIBERMAP without FIBER",
            vec!["-i", s(&nofiber_pre)],
            &nofiber_pre,
            vec!["FIBERMAP has no integer FIBER column", "FIB5R"],
        ),
        (
            "no FLAVOR",
            vec!["-i", s(&noflavor_pre)],
            &noflavor_pre,
            vec!["no FLAVOR keyword", "none, flat, arc, zero, bias, science"],
        ),
        (
            "specmin 10",
            vec!["-s", "10"],
            &pre,
            vec!["specmin 10", "bundlesize 25"],
        ),
        (
            "nsubbundles 4",
            vec!["--nsubbundles", "4"],
            &pre,
            vec!["nsubbundles 4"],
        ),
        (
            "output directory missing",
            vec!["-o", s(&out_nodir)],
            &out_nodir,
            vec!["does not exist"],
        ),
        (
            "model directory missing",
            vec!["-m", s(&model_nodir)],
            &model_nodir,
            vec!["does not exist"],
        ),
    ];
    for (name, overrides, culprit, problems) in cases {
        // The good command line with the flags of `overrides` replaced or added.
        let mut args = vec![
            "extract",
            "-i",
            s(&pre),
            "-p",
            PSF,
            "-o",
            s(&out),
            "-m",
            s(&model),
            "-w",
            WAVE,
            "-s",
            "25",
            "-n",
            "25",
        ];
        for pair in overrides.chunks(2) {
            match args.iter().position(|a| *a == pair[0]) {
                Some(i) => args[i + 1] = pair[1],
                None => args.extend_from_slice(pair),
            }
        }
        let r = run(&args);
        r.expect_code(1);
        let message = r.stderr.trim();
        assert!(
            message.contains(s(culprit)),
            "{name}: the message should name {}:\n{message}",
            culprit.display()
        );
        for p in problems {
            assert!(
                message.contains(p),
                "{name}: the message should say {p:?}:\n{message}"
            );
        }
        assert!(
            !message.contains("panicked"),
            "{name}: the binary panicked:\n{message}"
        );
        assert_eq!(
            dir_names(d),
            inputs,
            "{name}: the output directory holds more than the inputs"
        );
    }
}

/// Whether `python3` can import astropy (PYTHONPATH as the environment has it).
fn astropy_available() -> bool {
    Command::new("python3")
        .args(["-c", "import astropy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn frame_reads_in_astropy_as_desispec_expects() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("scripts/setup.sh").is_file(),
        "scripts/setup.sh (which installs astropy) is missing"
    );
    if !astropy_available() {
        let hint = "astropy is not importable by python3: run scripts/setup.sh and export the PYTHONPATH it prints (scripts/test.sh does), or set DESI_SKIP_DESISPEC=1 to skip this test outside CI";
        assert!(common::may_skip_desispec(), "{hint}");
        eprintln!("NOTICE: skipping the astropy check: {hint}");
        return;
    }
    let script = root.join("tests/astropy_check.py");
    let dir = tempfile::tempdir().expect("tempdir");
    let truth = dir.path().join("truth.fits");
    let pre = simulate(dir.path(), "pre.fits", &["--truth", s(&truth)]);
    let (frame, _) = extract(dir.path(), &pre, &[]);
    let check = |path: &Path| {
        Command::new("python3")
            .arg(&script)
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()))
    };
    let out = check(&frame);
    assert!(
        out.status.success(),
        "astropy_check.py {} failed ({}):\n--- stdout:\n{}\n--- stderr:\n{}",
        frame.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    common::desispec_reads(&[&frame]);
    // The check itself must be able to fail: a truth file is no frame.
    let out = check(&truth);
    assert!(
        !out.status.success(),
        "astropy_check.py accepted the truth file {} as a frame",
        truth.display()
    );
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    for args in [
        &[
            "extract",
            "-i",
            "pre.fits",
            "-p",
            PSF,
            "-o",
            "frame.fits",
            "-s",
            "abc",
        ][..],
        &["extract", "-i", "pre.fits", "-o", "frame.fits"][..],
        &["simulate", "-p", PSF, "-o", "pre.fits", "--no-such-flag"][..],
        &["no-such-command"][..],
    ] {
        let r = run(args);
        r.expect_code(1);
        assert!(
            r.stderr.contains("error"),
            "{:?}: no error message:\n{}",
            args,
            r.stderr
        );
    }
    let r = run(&[
        "extract",
        "-i",
        "pre.fits",
        "-p",
        PSF,
        "-o",
        "frame.fits",
        "-s",
        "abc",
    ]);
    assert!(
        r.stderr.contains("--specmin"),
        "the message should name --specmin:\n{}",
        r.stderr
    );
    for args in [
        &["--help"][..],
        &["extract", "--help"][..],
        &["--version"][..],
    ] {
        let r = run(args);
        r.expect_ok();
        assert!(!r.stdout.is_empty(), "{args:?} printed nothing");
    }
}

#[test]
fn exposure_bad_inputs_and_an_empty_exposure_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (indir, outdir) = (dir.path().join("in"), dir.path().join("out/new"));
    std::fs::create_dir_all(&indir).expect("indir");
    let exposure = |indir: &Path, extra: &[&str]| {
        let mut args = vec!["exposure", "--indir", s(indir), "--outdir", s(&outdir)];
        args.extend_from_slice(&["--expid", "7"]);
        args.extend_from_slice(extra);
        run(&args)
    };
    let missing = dir.path().join("no-such-dir");
    let r = exposure(&missing, &[]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("--indir") && r.stderr.contains("not a directory"),
        "{}",
        r.stderr
    );
    for span in ["-3", "0", "nan", "0.1"] {
        let r = exposure(&indir, &[&format!("--wave-span={span}")]);
        r.expect_code(1);
        assert!(r.stderr.contains("--wave-span"), "{span}: {}", r.stderr);
    }
    // Spectra no DESI camera has: refused before any frame.
    for (flags, says) in [
        (&["-s", "480"][..], "specmin 480"),
        (&["-s", "475", "-n", "50"][..], "spectra 475..525"),
    ] {
        let r = exposure(&indir, flags);
        r.expect_code(1);
        assert!(r.stderr.contains(says), "{flags:?}: {}", r.stderr);
    }
    // No preproc file for the exposure: an error naming the directory (the frames of a real
    // exposure, reruns and missing preprocs are in tests/exposure_rerun.rs).
    let r = exposure(&indir, &[]);
    r.expect_code(1);
    assert!(outdir.is_dir(), "--outdir is created");
    assert!(
        r.stderr.contains("no preproc-*-00000007.fits file"),
        "{}",
        r.stderr
    );
    // Stand-in PSFs exist for the b and z bands only.
    let standin = dir.path().join("standin.fits");
    let r = run(&[
        "standin-psf",
        "-p",
        PSF,
        "-o",
        s(&standin),
        "--camera",
        "r0",
    ]);
    r.expect_code(1);
    assert!(r.stderr.contains("expected b or z"), "{}", r.stderr);
    assert!(!standin.exists());
}
