//! The binary's side of docs/algorithm.md §5.1: absurd input pixels are reported on stderr and
//! ignored, failed patches make a flagged frame (`--failed-patches flag`, exit 2) or no frame
//! (`fail`, exit 2) with the reason on stderr, `--mask-rule` takes `main` and `0.70` only,
//! and `exposure` reports what it ignored.

mod common;

use common::PSF_PATH as PSF;
use desi_extract::io;
use desi_extract::patch::stitch::BAD2DFIT;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");
const WAVE: &str = "6000,6100,0.8";

/// (exit code, stdout, stderr) of the binary with `args`.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("start the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

use common::utf8 as s;

/// Pixel indices on fiber 12's trace near 6050 A.
fn trace_pixels(n: usize) -> Vec<usize> {
    let psf = io::read_psf(Path::new(PSF)).unwrap();
    let c = psf.spots(12, 1, &[6050.0]).unwrap().corner(0, 0);
    (0..n)
        .map(|k| (c.yc as usize + 3 + k) * psf.npix_x + c.xc as usize + 8)
        .collect()
}

fn extract(preproc: &Path, frame: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    run(&common::extract_args(
        preproc,
        frame,
        WAVE,
        ("0", "25"),
        extra,
    ))
}

#[test]
fn extract_reports_screened_pixels_and_failed_patches() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("preproc-r0-00000009.fits");
    let (code, _, err) = run(&[
        "simulate",
        "-p",
        PSF,
        "-o",
        s(&clean),
        "-w",
        WAVE,
        "-n",
        "25",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let mut image = io::read_preproc(&clean).unwrap();
    // One pixel of 3e38 and IVAR 3e38 at five pixels, all with MASK 0.
    let pixels = trace_pixels(6);
    image.image[pixels[0]] = 3e38;
    for &p in &pixels[1..] {
        image.ivar[p] = 3e38;
    }
    let poisoned = dir.path().join("poisoned.fits");
    io::write_preproc(&poisoned, &image).unwrap();

    // Default: the six pixels are ignored and said so; the frame is clean.
    let frame = dir.path().join("frame.fits");
    let (code, _, err) = extract(&poisoned, &frame, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("6 pixel(s) with IVAR > 0 ignored as absurd")
            && err.contains("1 with |value|")
            && err.contains("5 with IVAR"),
        "{err}"
    );
    let f = io::read_frame(&frame).unwrap();
    assert!(f.flux.iter().chain(&f.ivar).all(|v| v.is_finite()));
    assert!(
        (0..f.ivar.len()).all(|i| f.ivar[i] > 0.0 || f.mask[i] != 0),
        "a bin with ivar 0 and no MASK bit"
    );

    // The screen off for IVAR: the patches that see the pixels fail.
    let flagged = dir.path().join("flagged.fits");
    let (code, out, err) = extract(&poisoned, &flagged, &["--max-pixel-ivar", "inf"]);
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(
        err.contains("could not be solved") && err.contains("frame written FLAGGED"),
        "{err}"
    );
    let f = io::read_frame(&flagged).unwrap();
    let lost: Vec<usize> = (0..f.ivar.len()).filter(|&i| f.ivar[i] == 0.0).collect();
    assert!(!lost.is_empty());
    assert!(
        lost.iter().all(|&i| f.mask[i] & BAD2DFIT != 0),
        "bins with ivar 0 without BAD2DFIT"
    );
    assert!(f.flux.iter().chain(&f.ivar).all(|v| v.is_finite()));

    // --failed-patches fail: exit 2, the reason on stderr, no frame.
    let refused = dir.path().join("refused.fits");
    let (code, _, err) = extract(
        &poisoned,
        &refused,
        &["--max-pixel-ivar", "inf", "--failed-patches", "fail"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not solved on the cpu backend"), "{err}");
    assert!(!refused.exists());

    // --mask-rule: main and 0.70 only (0.70 writes the frame as desispec 0.70 would).
    let old = dir.path().join("old.fits");
    let (code, _, err) = extract(&clean, &old, &["--mask-rule", "0.70"]);
    assert_eq!(code, Some(0), "{err}");
    for bad in ["0.7", "latest"] {
        let (code, _, err) = extract(&clean, &old, &["--mask-rule", bad]);
        assert_eq!(code, Some(1), "--mask-rule {bad}: {err}");
        assert!(err.contains("--mask-rule"), "{err}");
    }
    let (code, _, err) = extract(&clean, &old, &["--max-pixel-ivar", "0"]);
    assert_eq!(code, Some(1), "{err}");

    // exposure: the poisoned r0 frame is written, the ignored pixels said on stderr.
    let (indir, outdir) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&indir).unwrap();
    std::fs::copy(&poisoned, indir.join("preproc-r0-00000009.fits")).unwrap();
    std::fs::copy(PSF, indir.join("psf-r0-00000009.fits")).unwrap();
    let (code, out, err) = run(&common::exposure_args(
        &indir,
        &outdir,
        "9",
        &["-n", "25", "--wave-span", "40", "--mask-rule", "0.70"],
    ));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("1 written, 0 skipped, 0 failed, 0 written flagged"),
        "{out}"
    );
    assert!(
        err.contains("frame r0") && err.contains("6 input pixel(s) with IVAR > 0 ignored"),
        "{err}"
    );
    // desispec reads every frame written, the flagged one (IVAR 0 under BAD2DFIT) included.
    let exposed = outdir.join("frame-r0-00000009.fits");
    common::desispec_reads(&[&frame, &flagged, &old, &exposed]);
}
