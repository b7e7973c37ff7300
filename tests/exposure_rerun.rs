//! `exposure` reruns verify what is on disk (issue #14, deliver 5): a frame is skipped only
//! when it is a complete, valid frame of the same inputs and options (INPUTSUM and the FITS
//! checksums); a truncated frame, a frame of other options and a frame written by `extract`
//! are extracted again and said so; a camera with a PSF and no preproc is reported and fails
//! the run (exit 2); an exposure id with no files is an error (exit 1); a preproc whose FLAVOR
//! desispec refuses fails its frame. Every version of the frame written is read back by desispec.
//!
//! One process, one r0 frame of 25 fibers and 50 Angstrom (the preproc is the full r0 CCD).

mod common;

use common::PSF_PATH as PSF;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");

/// Runs the binary: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().expect("start binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

use common::utf8 as s;

/// `exposure` of expid 7 from `indir` to `outdir` (25 fibers, 50 A unless `extra` has another
/// `--wave-span`) plus `extra`; asserts the
/// exit code and returns stdout + stderr.
fn exposure(indir: &Path, outdir: &Path, extra: &[&str], code: i32) -> String {
    let mut args = common::exposure_args(indir, outdir, "7", &["-n", "25"]);
    if !extra.contains(&"--wave-span") {
        args.extend_from_slice(&["--wave-span", "50"]);
    }
    args.extend_from_slice(extra);
    let (got, out, err) = run(&args);
    let text = format!("{out}\n--- stderr:\n{err}");
    assert_eq!(got, Some(code), "exposure {extra:?}: {text}");
    text
}

fn input_digest(frame: &Path) -> Option<String> {
    let data = desi_extract::io::read_frame(frame).expect("read the frame");
    match desi_extract::io::find_keyword(&data.header, "INPUTSUM") {
        Some(desi_extract::io::KeywordValue::Str(s)) => Some(s),
        _ => None,
    }
}

/// Simulates the r0 preproc of exposure 7 (spectra 0..25, 5740-5830 A) into `preproc`, plus
/// `extra` flags.
fn simulate_r0(preproc: &Path, extra: &[&str]) {
    let mut args = vec![
        "simulate",
        "-p",
        PSF,
        "-o",
        s(preproc),
        "-w",
        "5740,5830",
        "-n",
        "25",
        "--camera",
        "r0",
        "--expid",
        "7",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn reruns_verify_frames_on_disk_and_missing_inputs_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (indir, outdir) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&indir).unwrap();
    // Every version of the frame written, read back by desispec at the end.
    let kept = dir.path().join("kept");
    let psf = indir.join("psf-r0-00000007.fits");
    std::fs::copy(PSF, &psf).unwrap();
    let preproc = indir.join("preproc-r0-00000007.fits");
    simulate_r0(&preproc, &[]);
    // A PSF without its preproc (camera b0).
    std::fs::copy(PSF, indir.join("psf-b0-00000007.fits")).unwrap();

    // First run: r0 written with its INPUTSUM, b0 reported missing, exit 2.
    let text = exposure(&indir, &outdir, &[], 2);
    assert!(
        text.contains("camera b0 has a PSF but no preproc file") && text.contains("MISSING"),
        "{text}"
    );
    assert!(text.contains("1 written, 0 skipped, 1 failed"), "{text}");
    let frame = outdir.join("frame-r0-00000007.fits");
    let digest = input_digest(&frame).expect("INPUTSUM recorded");
    common::keep_copy(&frame, &kept);
    assert_eq!(digest.len(), 32, "{digest}");
    std::fs::remove_file(indir.join("psf-b0-00000007.fits")).unwrap();

    // A verified frame of the same inputs is skipped.
    let text = exposure(&indir, &outdir, &[], 0);
    assert!(text.contains("0 written, 1 skipped, 0 failed"), "{text}");

    // A truncated frame (an earlier run killed while writing in place, a full disk, a copy
    // cut short) is extracted again, and said so.
    let flux = desi_extract::io::read_frame(&frame).unwrap().flux;
    let bytes = std::fs::read(&frame).unwrap();
    std::fs::write(&frame, &bytes[..bytes.len() / 2]).unwrap();
    let text = exposure(&indir, &outdir, &[], 0);
    assert!(
        text.contains("frame r0 exists but it is incomplete or unreadable")
            && text.contains("extracting it again"),
        "{text}"
    );
    assert!(text.contains("1 written, 0 skipped, 0 failed"), "{text}");
    common::keep_copy(&frame, &kept);
    let again = desi_extract::io::read_frame(&frame).unwrap();
    assert!(again.flux == flux, "the same frame again");
    assert_eq!(input_digest(&frame).as_deref(), Some(digest.as_str()));

    // One flipped byte in the data: the checksums catch it.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 5000;
    flipped[at] ^= 0x40;
    std::fs::write(&frame, &flipped).unwrap();
    let text = exposure(&indir, &outdir, &[], 0);
    assert!(
        text.contains("CHECKSUM/DATASUM are missing or wrong"),
        "{text}"
    );
    common::keep_copy(&frame, &kept);

    // Other options (a shorter grid): redone.
    let text = exposure(&indir, &outdir, &["--wave-span", "40"], 0);
    assert!(
        text.contains("extracted from other inputs or options"),
        "{text}"
    );
    assert_ne!(input_digest(&frame).as_deref(), Some(digest.as_str()));
    common::keep_copy(&frame, &kept);

    // Another input (the preproc rewritten with another seed): redone.
    exposure(&indir, &outdir, &[], 0);
    common::keep_copy(&frame, &kept);
    simulate_r0(&preproc, &["--seed", "9"]);
    let text = exposure(&indir, &outdir, &[], 0);
    assert!(
        text.contains("extracted from other inputs or options"),
        "{text}"
    );
    common::keep_copy(&frame, &kept);

    // A frame written by `extract` (no INPUTSUM) is not trusted either.
    let (code, out, err) = run(&[
        "extract",
        "-i",
        s(&preproc),
        "-p",
        s(&psf),
        "-o",
        s(&frame),
        "-w",
        "5760,5800",
        "-n",
        "25",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    common::keep_copy(&frame, &kept);
    let text = exposure(&indir, &outdir, &[], 0);
    assert!(text.contains("it has no INPUTSUM"), "{text}");
    common::keep_copy(&frame, &kept);
    let text = exposure(&indir, &outdir, &[], 0);
    assert!(text.contains("0 written, 1 skipped, 0 failed"), "{text}");
    let names = common::dir_names(&outdir);
    assert_eq!(
        names,
        ["frame-r0-00000007.fits"],
        "nothing else left behind"
    );

    // An exposure id without files is an error naming the directory.
    let (code, out, err) = run(&common::exposure_args(&indir, &outdir, "8", &[]));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no preproc-*-00000008.fits file"), "{err}");
    // With only a PSF for it, the message says so.
    std::fs::copy(PSF, indir.join("psf-z3-00000008.fits")).unwrap();
    let (code, _, err) = run(&common::exposure_args(&indir, &outdir, "8", &[]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("without preproc for camera(s) z3"), "{err}");

    // A preproc whose FLAVOR desispec's Frame.vet() refuses: that frame fails, none is written.
    // (A tiny image: the check comes before the image is compared with the PSF.)
    let odd = indir.join("preproc-r0-00000009.fits");
    let mut tiny = desi_extract::io::read_preproc(&preproc).unwrap();
    (tiny.nx, tiny.ny) = (9, 6);
    tiny.image = vec![1.0; 54];
    tiny.ivar = vec![1.0; 54];
    tiny.mask = vec![0; 54];
    desi_extract::io::write_preproc(&odd, &tiny).unwrap();
    common::set_raw_card(&odd, "", "FLAVOR", "'dither  '");
    std::fs::copy(PSF, indir.join("psf-r0-00000009.fits")).unwrap();
    let (code, out, err) = run(&common::exposure_args(
        &indir,
        &outdir,
        "9",
        &["-n", "25", "--wave-span", "50"],
    ));
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("FLAVOR 'dither' is not one of none, flat, arc, zero, bias, science"),
        "{out}{err}"
    );
    assert!(!outdir.join("frame-r0-00000009.fits").exists());

    let versions: Vec<std::path::PathBuf> = common::dir_names(&kept)
        .iter()
        .map(|n| kept.join(n))
        .collect();
    assert_eq!(versions.len(), 8, "{versions:?}");
    common::desispec_reads(&versions);
}
