//! `extract --barycentric-correction` as desispec's extraction does it: the frame is extracted
//! on the nominal grid divided by the factor (bitwise the same as asking for that grid with
//! `-w`), keeps the nominal WAVELENGTH and records the factor as HELIOCOR; a preproc without a
//! pointing is refused as bad input (exit 1) naming the file.

mod common;

use common::{psf, PSF_PATH};
use desi_extract::heliocentric::{barycentric_correction, Site};
use desi_extract::io::{self, read_frame, KeywordValue};
use desi_extract::patch::WavelengthGrid;
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");
/// A pointing and mid-exposure time: TARGTRA 150, TARGTDEC 2.2, MJD-OBS 59650.25, EXPTIME 900.
const RA: f64 = 150.0;
const DEC: f64 = 2.2;
const MJD_OBS: f64 = 59650.25;
const EXPTIME: f64 = 900.0;

fn extract(preproc: &Path, output: &Path, wave: &str, extra: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(["extract", "-i"])
        .arg(preproc)
        .args(["-p", PSF_PATH, "-o"])
        .arg(output)
        .args(["-w", wave, "-s", "25", "-n", "25"])
        .args(extra)
        .env("DESI_EXTRACT_NO_MPI", "1")
        .output()
        .expect("run desi-extract");
    out
}

fn card(name: &str, value: f64) -> String {
    format!("{name:<8}= {:>20}", format!("{value:?}"))
}

fn heliocor(frame: &io::FrameData) -> Option<f64> {
    frame
        .keywords
        .iter()
        .find(|k| k.name == "HELIOCOR")
        .map(|k| match k.value {
            KeywordValue::Float(f) => f,
            ref other => panic!("HELIOCOR is {other:?}"),
        })
}

#[test]
fn barycentric_correction_extracts_on_the_divided_grid_and_keeps_the_nominal_wavelength() {
    let dir = tempfile::tempdir().unwrap();
    let psf = psf();
    let nominal = WavelengthGrid::arange(6000.0, 6100.0, 0.8).unwrap();
    let truth = builtin_spectra(25, 25, &nominal.wave);
    let mut image = simulated_preproc(&psf, &truth, 3.0, 9, false, "r0").unwrap();
    // What desispec's Frame.vet() requires of every frame (the CLI refuses a preproc without).
    image
        .header
        .push(io::Keyword::str("FLAVOR", "science", "").card());
    let plain = dir.path().join("preproc-plain.fits");
    io::write_preproc(&plain, &image).unwrap();
    image.header.extend([
        card("TARGTRA", RA),
        card("TARGTDEC", DEC),
        card("MJD-OBS", MJD_OBS),
        card("EXPTIME", EXPTIME),
    ]);
    let pointed = dir.path().join("preproc-pointed.fits");
    io::write_preproc(&pointed, &image).unwrap();

    let factor = barycentric_correction(
        RA,
        DEC,
        MJD_OBS + EXPTIME / 2.0 / 3600.0 / 24.0,
        &Site::KPNO_DESISPEC,
    )
    .unwrap()
    .factor;
    // Tens of km/s: a factor visibly different from 1.
    assert!((factor - 1.0).abs() > 1e-5, "factor {factor}");

    let corrected = dir.path().join("frame-corrected.fits");
    let out = extract(
        &pointed,
        &corrected,
        "6000,6100,0.8",
        &["--barycentric-correction"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same extraction asked for directly on the divided grid.
    let divided = format!(
        "{:?},{:?},{:?}",
        6000.0 / factor,
        6100.0 / factor,
        0.8 / factor
    );
    let direct = dir.path().join("frame-direct.fits");
    let out = extract(&pointed, &direct, &divided, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    common::desispec_reads(&[&corrected, &direct]);
    let corrected = read_frame(&corrected).unwrap();
    let direct = read_frame(&direct).unwrap();
    assert_eq!(corrected.flux, direct.flux);
    assert_eq!(corrected.ivar, direct.ivar);
    assert_eq!(corrected.mask, direct.mask);
    assert_eq!(corrected.resolution, direct.resolution);
    assert_eq!(corrected.wavelength, nominal.wave);
    assert_ne!(direct.wavelength, nominal.wave);
    assert_eq!(heliocor(&corrected), Some(factor));
    assert_eq!(heliocor(&direct), None);

    // Without a pointing: bad input, exit 1, the file named, no frame written.
    let refused = dir.path().join("frame-refused.fits");
    let out = extract(
        &plain,
        &refused,
        "6000,6100,0.8",
        &["--barycentric-correction"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("preproc-plain.fits") && stderr.contains("--barycentric-correction"),
        "{stderr}"
    );
    assert!(!refused.exists());
}
