//! Multi-process runs under OpenMPI's mpirun: one frame over 1, 2 and 3 ranks gives bitwise
//! identical arrays; a small synthetic exposure (b0/r0/z0, 25 fibers x 300 A, b and z from
//! labelled stand-in PSFs) through `exposure` strictly in turn (1 rank, --no-overlap), with
//! reading/writing threads (1 rank), shared frames (2 ranks) and the reader/writer pipeline
//! (3 and 4 ranks) gives identical frames; a corrupt preproc fails alone.
//!
//! Without `mpirun` these tests fail when CI=true and are skipped (with a notice) otherwise.

mod common;

use common::PSF_PATH;
use desi_extract::io::{read_frame, read_psf, write_psf, FrameData, Keyword};
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");

/// Whether mpirun can be used (panics in CI when it cannot: the multi-rank tests must run).
fn have_mpirun() -> bool {
    let ok = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "mpirun not found but CI=true: install openmpi (scripts/setup.sh does)"
        );
        eprintln!("NOTICE: mpirun not found; skipping the MPI tests");
    }
    ok
}

/// `desi-extract ARGS` under `mpirun -n ranks` (ranks 0: without mpirun).
fn run(ranks: usize, args: &[&str]) -> Output {
    let mut cmd = if ranks == 0 {
        Command::new(BIN)
    } else {
        let mut c = Command::new("mpirun");
        c.args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .args(["-n", &ranks.to_string(), BIN]);
        c
    };
    // Containers often forbid the cross-process copies (CMA) of OpenMPI's shared-memory
    // transport; copying through the shared segment works everywhere.
    cmd.env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(args);
    let out = cmd.output().expect("start desi-extract");
    eprintln!(
        "--- {ranks} rank(s) {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "command failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that two frames have bit-identical data arrays.
fn assert_same_frame(a: &Path, b: &Path) {
    let (fa, fb): (FrameData, FrameData) = (read_frame(a).unwrap(), read_frame(b).unwrap());
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        (fa.nspec, fa.nwave, fa.ndiag),
        (fb.nspec, fb.nwave, fb.ndiag)
    );
    assert!(fa.ivar.iter().any(|&v| v > 0.0), "{}: no data", a.display());
    for (name, x, y) in [
        ("WAVELENGTH", &fa.wavelength, &fb.wavelength),
        ("FLUX", &fa.flux, &fb.flux),
        ("IVAR", &fa.ivar, &fb.ivar),
        ("RESOLUTION", &fa.resolution, &fb.resolution),
        ("CHI2PIX", &fa.chi2pix, &fb.chi2pix),
    ] {
        if let Some(i) = bits(x).iter().zip(bits(y)).position(|(p, q)| *p != q) {
            panic!(
                "{} vs {}: {name}[{i}] {} != {}",
                a.display(),
                b.display(),
                x[i],
                y[i]
            );
        }
    }
    assert_eq!(fa.mask, fb.mask, "MASK differs");
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

/// `simulate` of 50 fibers over 5950-6150 A with the bundled PSF into `preproc`, then `extra`.
fn simulate_50(preproc: &str, extra: &[&str]) {
    let mut args = vec![
        "simulate",
        "-p",
        PSF_PATH,
        "-o",
        preproc,
        "-w",
        "5950,6150",
        "-n",
        "50",
    ];
    args.extend_from_slice(extra);
    ok(&run(0, &args));
}

/// `extract` of 50 fibers over 6000-6100 A of `preproc` into `frame` on `ranks` ranks (0: no
/// mpirun), then `extra`; asserts exit 0 and returns stdout.
fn extract_50(ranks: usize, preproc: &str, frame: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "extract",
        "-i",
        preproc,
        "-p",
        PSF_PATH,
        "-o",
        frame,
        "-w",
        "6000,6100",
        "-n",
        "50",
    ];
    args.extend_from_slice(extra);
    ok(&run(ranks, &args))
}

#[test]
fn one_frame_is_identical_on_1_2_and_3_ranks() {
    if !have_mpirun() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let preproc = path(d, "preproc.fits");
    simulate_50(&preproc, &["--seed", "11"]);
    let mut frames = Vec::new();
    for ranks in [0, 2, 3] {
        let frame = path(d, &format!("frame-{ranks}.fits"));
        let model = path(d, &format!("model-{ranks}.fits"));
        let out = extract_50(ranks, &preproc, &frame, &["-m", &model]);
        assert!(
            out.contains("patches     30"),
            "two bundles of 15 patches: {out}"
        );
        frames.push(frame);
    }
    for other in &frames[1..] {
        assert_same_frame(Path::new(&frames[0]), Path::new(other));
    }
    common::desispec_reads(&frames);
}

/// Outlier rejection (issue 16) decides per bundle, so the frame with cosmic rays and
/// `--reject-outliers` is bitwise the same on 1, 2 and 3 ranks, rejected pixels included.
#[test]
fn outlier_rejection_is_identical_on_1_2_and_3_ranks() {
    if !have_mpirun() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let preproc = path(d, "preproc.fits");
    simulate_50(
        &preproc,
        &["--seed", "12", "--cosmics", "--cosmic-rate", "20"],
    );
    let (mut frames, mut masks) = (Vec::new(), Vec::new());
    for ranks in [0, 2, 3] {
        let frame = path(d, &format!("frame-{ranks}.fits"));
        let rejected = path(d, &format!("rejected-{ranks}.fits"));
        extract_50(
            ranks,
            &preproc,
            &frame,
            &["--reject-outliers", "--rejected-pixels", &rejected],
        );
        frames.push(frame);
        masks.push(
            desi_extract::io::read_image(Path::new(&rejected), "REJECTED")
                .unwrap()
                .2,
        );
    }
    let cosmic_bins = read_frame(Path::new(&frames[0]))
        .unwrap()
        .mask
        .iter()
        .filter(|&&m| m & 4 != 0)
        .count();
    assert!(
        cosmic_bins > 0,
        "no bin has MASK COSMIC: the test frame has no rejection"
    );
    for (other, mask) in frames[1..].iter().zip(&masks[1..]) {
        assert_same_frame(Path::new(&frames[0]), Path::new(other));
        assert!(mask == &masks[0], "rejected pixels differ");
    }
    common::desispec_reads(&frames);
}

/// Writes the synthetic exposure 7 (b0, r0, z0; 25 fibers) into `dir`.
fn synthetic_exposure(dir: &Path) {
    let real = read_psf(Path::new(PSF_PATH)).unwrap();
    std::fs::copy(PSF_PATH, dir.join("psf-r0-00000007.fits")).unwrap();
    for camera in ["b0", "z0"] {
        let psf = path(dir, &format!("psf-{camera}-00000007.fits"));
        let out = ok(&run(
            0,
            &[
                "standin-psf",
                "-p",
                PSF_PATH,
                "-o",
                &psf,
                "--camera",
                camera,
            ],
        ));
        let _ = out;
        let standin = read_psf(Path::new(&psf)).unwrap();
        // A relabelled copy: same coefficients, domains moved onto the camera's.
        assert_eq!(standin.xtrace.coeffs, real.xtrace.coeffs);
        assert_eq!(standin.gh[3].coeffs, real.gh[3].coeffs);
        let target = desi_extract::exposure::cameras::band(camera.chars().next().unwrap()).unwrap();
        let domain = (real.sigma_x.wavemin, real.sigma_x.wavemax);
        let expect = desi_extract::exposure::cameras::standin_domain(target, domain).unwrap();
        assert_eq!((standin.sigma_x.wavemin, standin.sigma_x.wavemax), expect);
    }
    for (camera, wave, seed) in [
        ("b0", "3570,3940", "1"),
        ("r0", "5730,6100", "2"),
        ("z0", "7490,7860", "3"),
    ] {
        let psf = path(dir, &format!("psf-{camera}-00000007.fits"));
        let preproc = path(dir, &format!("preproc-{camera}-00000007.fits"));
        ok(&run(
            0,
            &[
                "simulate", "-p", &psf, "-o", &preproc, "-w", wave, "-n", "25", "--camera", camera,
                "--expid", "7", "--seed", seed,
            ],
        ));
    }
}

fn exposure(ranks: usize, indir: &Path, outdir: &Path, extra: &[&str]) -> Output {
    std::fs::create_dir_all(outdir).unwrap();
    let mut args = common::exposure_args(indir, outdir, "7", &["-n", "25", "--wave-span", "300"]);
    args.extend_from_slice(extra);
    run(ranks, &args)
}

#[test]
fn exposure_pipeline_matches_serial_and_a_corrupt_frame_fails_alone() {
    if !have_mpirun() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let indir = dir.path().join("in");
    std::fs::create_dir_all(&indir).unwrap();
    synthetic_exposure(&indir);

    // Strictly in turn (one process, --no-overlap) is the reference; one process reading
    // ahead and writing behind on threads, two ranks sharing every frame, the pipeline with
    // one extracting rank (3 ranks) and with two taking whole frames in turn (4 ranks) must
    // write the same frames.
    let serial = dir.path().join("serial");
    let out = ok(&exposure(0, &indir, &serial, &["--no-overlap"]));
    assert!(out.contains("read/extract/write in turn"), "{out}");
    assert!(out.contains("3 written, 0 skipped, 0 failed"), "{out}");
    let threaded = dir.path().join("threaded");
    let out = ok(&exposure(0, &indir, &threaded, &[]));
    assert!(out.contains("reading ahead and writing behind"), "{out}");
    assert!(out.contains("3 written, 0 skipped, 0 failed"), "{out}");
    let shared = dir.path().join("shared");
    let out = ok(&exposure(2, &indir, &shared, &[]));
    assert!(out.contains("2 rank(s) sharing each frame"), "{out}");
    let piped = dir.path().join("piped");
    let out = ok(&exposure(3, &indir, &piped, &[]));
    assert!(
        out.contains("reader rank 0, writer rank 1, 1 extracting"),
        "{out}"
    );
    assert!(out.contains("3 written, 0 skipped, 0 failed"), "{out}");
    let piped4 = dir.path().join("piped4");
    let out = ok(&exposure(4, &indir, &piped4, &[]));
    assert!(out.contains("writer rank 1, 2 extracting rank(s)"), "{out}");
    assert!(out.contains("3 written, 0 skipped, 0 failed"), "{out}");
    // Progress lines in frame order whatever order the frames finish in.
    let order: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split(" frame ").nth(1)?.split(' ').nth(1))
        .collect();
    assert_eq!(order, ["b0", "r0", "z0"], "{out}");
    for camera in ["b0", "r0", "z0"] {
        let name = format!("frame-{camera}-00000007.fits");
        for other in [&threaded, &shared, &piped, &piped4] {
            assert_same_frame(&serial.join(&name), &other.join(&name));
        }
        let frame = read_frame(&piped.join(&name)).unwrap();
        let wavemin = frame.wavelength[0];
        let expect = match camera {
            "b0" => 3600.0,
            "r0" => 5760.0,
            _ => 7520.0,
        };
        assert_eq!(wavemin, expect, "{camera}: the camera's grid");
    }

    // Done frames are skipped unless --overwrite.
    let out = ok(&exposure(3, &indir, &piped, &[]));
    assert!(out.contains("0 written, 3 skipped, 0 failed"), "{out}");

    // A truncated preproc (b1) fails alone: the others are written, exit non-zero.
    let good = std::fs::read(indir.join("preproc-r0-00000007.fits")).unwrap();
    std::fs::write(
        indir.join("preproc-b1-00000007.fits"),
        &good[..good.len() / 3],
    )
    .unwrap();
    std::fs::copy(
        indir.join("psf-b0-00000007.fits"),
        indir.join("psf-b1-00000007.fits"),
    )
    .unwrap();
    for (ranks, sub) in [
        (4, "corrupt-piped"),
        (2, "corrupt-shared"),
        (0, "corrupt-threaded"),
    ] {
        let outdir = dir.path().join(sub);
        let result = exposure(ranks, &indir, &outdir, &[]);
        assert!(
            !result.status.success(),
            "{sub}: a failed frame must fail the run"
        );
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert!(
            stdout.contains("3 written, 0 skipped, 1 failed"),
            "{stdout}"
        );
        let failed_line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with("b1") && l.contains("FAILED"))
            .unwrap_or_else(|| panic!("summary names b1 as failed: {stdout}"));
        assert!(
            failed_line.contains("preproc-b1-00000007.fits"),
            "{failed_line}"
        );
        for camera in ["b0", "r0", "z0"] {
            assert!(outdir
                .join(format!("frame-{camera}-00000007.fits"))
                .is_file());
        }
        assert!(!outdir.join("frame-b1-00000007.fits").exists());
    }

    // desispec reads every frame written (b, r and z; every layout; beside a failed frame).
    let mut written = Vec::new();
    for sub in [
        "serial",
        "threaded",
        "shared",
        "piped",
        "piped4",
        "corrupt-piped",
        "corrupt-shared",
        "corrupt-threaded",
    ] {
        for camera in ["b0", "r0", "z0"] {
            written.push(
                dir.path()
                    .join(sub)
                    .join(format!("frame-{camera}-00000007.fits")),
            );
        }
    }
    common::desispec_reads(&written);
}

#[test]
fn written_psf_reads_back_exactly() {
    let real = read_psf(Path::new(PSF_PATH)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("psf.fits");
    let note = Keyword::str("STANDIN", "test copy", "");
    write_psf(&out, &real, &[note]).unwrap();
    let back = read_psf(&out).unwrap();
    assert_eq!(back.xtrace, real.xtrace);
    assert_eq!(back.ytrace, real.ytrace);
    assert_eq!(back.sigma_x, real.sigma_x);
    assert_eq!(back.sigma_y, real.sigma_y);
    assert_eq!(back.gh, real.gh);
    assert_eq!(back.tail, real.tail);
    assert_eq!(
        (
            back.hsizex,
            back.hsizey,
            back.ghdegx,
            back.ghdegy,
            back.legdeg
        ),
        (
            real.hsizex,
            real.hsizey,
            real.ghdegx,
            real.ghdegy,
            real.legdeg
        )
    );
    assert_eq!(
        (back.npix_x, back.npix_y, back.fibermin, back.nspec),
        (real.npix_x, real.npix_y, real.fibermin, real.nspec)
    );
    assert_eq!(back.psferr, real.psferr);
    assert_eq!(back.in_psf, real.in_psf);
}
