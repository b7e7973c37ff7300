//! Frame and model files: write -> read with the FITS-level layout of docs/algorithm.md §1.3.

mod common;

use std::path::Path;

use desi_extract::io::{
    checksums_ok, describe, read_frame, read_table, write_frame, write_model, FitsTable, FrameData,
    Keyword, KeywordValue, FLUX_UNIT,
};
use fitsio::FitsFile;

/// A frame with non-square shapes: nspec 7 (specmin 25), nwave 31, ndiag 5.
fn sample_frame() -> FrameData {
    let (nspec, nwave, ndiag) = (7, 31, 5);
    let nd = 2 * ndiag + 1;
    let wavelength: Vec<f64> = (0..nwave).map(|i| 5760.0 + i as f64 * 0.8).collect();
    let flux: Vec<f64> = (0..nspec * nwave)
        .map(|i| 100.0 + (i as f64 * 0.37).sin() * 40.0)
        .collect();
    let ivar: Vec<f64> = (0..nspec * nwave)
        .map(|i| {
            if i % 13 == 0 {
                0.0
            } else {
                0.01 + i as f64 * 1e-4
            }
        })
        .collect();
    // Includes the top bit (bit 31) to exercise the BZERO = 2^31 unsigned convention.
    let mask: Vec<u32> = (0..nspec * nwave)
        .map(|i| match i % 13 {
            0 => 3,
            5 => 128,
            7 => 1 << 31,
            _ => 0,
        })
        .collect();
    let resolution: Vec<f64> = (0..nspec * nd * nwave)
        .map(|i| ((i / nwave) % nd) as f64 * 0.01 + (i % nwave) as f64 * 1e-5)
        .collect();
    let chi2pix: Vec<f64> = (0..nspec * nwave)
        .map(|i| 1.0 + (i % 7) as f64 * 0.1)
        .collect();
    let long_path = format!(
        "/global/cfs/cdirs/desi/spectro/redux/{}/psf-r0-00051060.fits",
        "x".repeat(60)
    );
    FrameData {
        specmin: 25,
        nspec,
        nwave,
        ndiag,
        wavelength,
        flux,
        ivar,
        mask,
        resolution,
        chi2pix,
        header: vec![
            Keyword::str("CAMERA", "r0", "camera").card(),
            Keyword::str("FLAVOR", "science", "").card(),
            Keyword::int("EXPID", 51060, "").card(),
            Keyword::str("BUNIT", "electron", "replaced on write").card(),
            Keyword::int("NSPEC", 999, "replaced by the keyword").card(),
        ],
        keywords: vec![
            Keyword::int("NSPEC", nspec as i64, "Number of spectra"),
            Keyword::float("WAVEMIN", 5760.0, "First wavelength [Angstrom]"),
            Keyword::float("WAVEMAX", 5784.0, "Last wavelength [Angstrom]"),
            Keyword::float("WAVESTEP", 0.8, "Wavelength step size [Angstrom]"),
            Keyword::str("SPECTER", "0.1.0", "desi-extract"),
            Keyword::str("IN_PSF", &long_path, "Input spectral PSF"),
            Keyword::str("IN_IMG", "preproc-r0-00051060.fits", "Input image"),
            Keyword::int("FIBERMIN", 25, "first fiber"),
        ],
    }
}

fn key<T: fitsio::headers::ReadsKey>(f: &mut FitsFile, hdu: usize, name: &str) -> T {
    let h = f.hdu(hdu).expect("hdu");
    h.read_key(f, name)
        .unwrap_or_else(|e| panic!("HDU {hdu} keyword {name}: {e}"))
}

#[test]
fn frame_layout_and_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("frame-r0-00051060.fits");
    let frame = sample_frame();
    // Preproc fibermap of a whole 40-fiber "petal": the frame keeps rows 25..32.
    let fibermap = FitsTable::minimal_fibermap(0..40, &[27]);
    write_frame(&path, &frame, Some(&fibermap)).expect("write frame");

    let mut f = FitsFile::open(&path).expect("open");
    let names: Vec<String> = (0..7)
        .map(|i| key::<String>(&mut f, i, "EXTNAME").trim().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "FLUX",
            "IVAR",
            "MASK",
            "WAVELENGTH",
            "RESOLUTION",
            "FIBERMAP",
            "CHI2PIX"
        ]
    );
    assert!(f.hdu(7).is_err(), "exactly 7 HDUs");
    for (hdu, bitpix) in [(0, -32), (1, -32), (2, 32), (3, -64), (4, -32), (6, -32)] {
        assert_eq!(
            key::<i64>(&mut f, hdu, "BITPIX"),
            bitpix,
            "BITPIX of HDU {hdu}"
        );
    }
    assert_eq!(
        key::<f64>(&mut f, 2, "BZERO"),
        2147483648.0,
        "MASK is u4 via BZERO"
    );
    assert_eq!(key::<i64>(&mut f, 0, "NAXIS1"), 31);
    assert_eq!(key::<i64>(&mut f, 0, "NAXIS2"), 7);
    assert_eq!(key::<i64>(&mut f, 4, "NAXIS"), 3);
    assert_eq!(
        key::<i64>(&mut f, 4, "NAXIS1"),
        31,
        "RESOLUTION NAXIS1 = nwave"
    );
    assert_eq!(
        key::<i64>(&mut f, 4, "NAXIS2"),
        11,
        "RESOLUTION NAXIS2 = 2*ndiag+1"
    );
    assert_eq!(
        key::<i64>(&mut f, 4, "NAXIS3"),
        7,
        "RESOLUTION NAXIS3 = nspec"
    );
    assert_eq!(key::<String>(&mut f, 0, "BUNIT"), FLUX_UNIT);
    assert_eq!(key::<String>(&mut f, 3, "BUNIT"), "Angstrom");
    assert_eq!(
        key::<i64>(&mut f, 0, "NSPEC"),
        7,
        "keyword replaces header card"
    );
    assert_eq!(key::<String>(&mut f, 0, "FLAVOR"), "science");
    // The raw unsigned mask values, read by cfitsio from the BZERO-shifted int32.
    let raw_mask: Vec<u32> = f.hdu(2).and_then(|h| h.read_image(&mut f)).expect("mask");
    assert_eq!(raw_mask, frame.mask);
    assert!(checksums_ok(&path).expect("checksums"));
    drop(f);

    let back = read_frame(&path).expect("read frame");
    assert_eq!(
        (back.specmin, back.nspec, back.nwave, back.ndiag),
        (25, 7, 31, 5)
    );
    assert_eq!(back.wavelength, frame.wavelength, "f8 is exact");
    assert_eq!(back.mask, frame.mask, "u4 is exact");
    // f4 storage: values equal the f64 inputs rounded to f32, exactly.
    let as_f32 = |v: &[f64]| v.iter().map(|&x| x as f32 as f64).collect::<Vec<_>>();
    assert_eq!(back.flux, as_f32(&frame.flux));
    assert_eq!(back.ivar, as_f32(&frame.ivar));
    assert_eq!(back.resolution, as_f32(&frame.resolution));
    assert_eq!(back.chi2pix, as_f32(&frame.chi2pix));
    // RESOLUTION memory order (nspec, 2*ndiag+1, nwave): spot-check one element.
    let (s, d, w) = (4, 9, 17);
    assert_eq!(
        back.resolution[(s * 11 + d) * 31 + w],
        frame.resolution[(s * 11 + d) * 31 + w] as f32 as f64
    );
    assert_eq!(
        back.header[..3],
        frame.header[..3],
        "passed-through cards, in order"
    );
    assert!(back
        .header
        .iter()
        .all(|c| !c.starts_with("BUNIT") && !c.starts_with("NSPEC")));
    for kw in &frame.keywords {
        assert_eq!(
            back.keyword(&kw.name),
            Some(&kw.value),
            "keyword {}",
            kw.name
        );
    }
    assert_eq!(back.keyword("SPECMIN"), Some(&KeywordValue::Int(25)));

    let fm = read_table(&path, "FIBERMAP").expect("fibermap");
    assert_eq!(fm.nrows, 7);
    assert_eq!(fm.column_i64("FIBER"), Some((25..32).collect()));
    assert_eq!(fm.column_str("OBJTYPE").expect("OBJTYPE")[2], "SKY");

    let text = describe(&path).expect("describe");
    assert!(
        text.contains("DESI frame") && text.contains("nwave 31"),
        "{text}"
    );
}

#[test]
fn frame_without_fibermap_gets_minimal_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("frame.fits");
    let mut frame = sample_frame();
    frame.keywords.retain(|k| k.name != "FIBERMIN");
    frame.specmin = 3;
    write_frame(&path, &frame, None).expect("write");
    let fm = read_table(&path, "FIBERMAP").expect("fibermap");
    assert_eq!(fm.column_i64("FIBER"), Some((3..10).collect()));
    let back = read_frame(&path).expect("read");
    assert_eq!(back.keyword("FIBERMIN"), Some(&KeywordValue::Int(3)));
}

#[test]
fn model_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.fits");
    let (ny, nx) = (9, 14);
    let model: Vec<f64> = (0..ny * nx).map(|i| i as f64 * 0.125 - 3.0).collect();
    write_model(&path, ny, nx, &model).expect("write model");
    let mut f = FitsFile::open(&path).expect("open");
    assert_eq!(key::<String>(&mut f, 0, "EXTNAME"), "MODEL");
    assert_eq!(key::<i64>(&mut f, 0, "BITPIX"), -64);
    assert_eq!(
        (
            key::<i64>(&mut f, 0, "NAXIS1"),
            key::<i64>(&mut f, 0, "NAXIS2")
        ),
        (14, 9)
    );
    let back: Vec<f64> = f
        .primary_hdu()
        .and_then(|h| h.read_image(&mut f))
        .expect("data");
    assert_eq!(back, model);
    assert!(write_model(Path::new(&dir.path().join("m2.fits")), ny, nx, &model[1..]).is_err());
}

/// The direct writer (parallel encoding and DATASUM, block writes) gives the file that
/// cfitsio's own conversion and `ffpcks` give, byte for byte, CHECKSUM and DATASUM included:
/// for a frame whose RESOLUTION spans several write pieces, with NaN, infinities, -0, values
/// beyond f32, the top MASK bit, an all-zero HDU (DATASUM 0) and data that do not fill the
/// last 2880-byte record; and the sums verify.
#[test]
fn direct_and_cfitsio_writers_give_identical_files() {
    use desi_extract::io::{write_frame_using, FrameWriter};
    use desi_extract::scores::ScoreColumn;
    let dir = tempfile::tempdir().expect("tempdir");
    let (nspec, nwave, ndiag) = (60, 2327, 5);
    let nd = 2 * ndiag + 1;
    let mut frame = sample_frame();
    let n = nspec * nwave;
    let wave = |i: usize| (i as f64 * 0.7131).sin();
    frame.nspec = nspec;
    frame.nwave = nwave;
    frame.specmin = 0;
    frame.wavelength = (0..nwave).map(|i| 5760.0 + i as f64 * 0.8).collect();
    frame.flux = (0..n)
        .map(|i| match i % 101 {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => -0.0,
            3 => 1e300,
            4 => -1e-300,
            _ => 1000.0 * wave(i),
        })
        .collect();
    frame.ivar = (0..n).map(|i| wave(i + 7).abs() * 0.01).collect();
    frame.mask = (0..n)
        .map(|i| (wave(i + 3).to_bits() as u32) & 0x8000_0fff)
        .collect();
    frame.resolution = (0..nspec * nd * nwave).map(|i| wave(i) * 0.1).collect();
    frame.chi2pix = vec![0.0; n];
    frame.keywords.retain(|k| k.name != "FIBERMIN");
    let fibermap = FitsTable::minimal_fibermap(0..500, &[3]);
    let scores = [ScoreColumn {
        name: "SUM_RAW_COUNT_R".into(),
        comment: "sum values in R cam".into(),
        values: (0..nspec).map(|i| i as f64).collect(),
    }];
    let write = |writer: FrameWriter| {
        let path = dir.path().join(format!("frame-{}.fits", writer.name()));
        write_frame_using(writer, &path, &frame.view(), Some(&fibermap), Some(&scores))
            .expect("write frame");
        assert!(checksums_ok(&path).expect("read back"), "{writer:?}");
        std::fs::read(&path).expect("read bytes")
    };
    common::assert_identical_frame_files(|| {
        (write(FrameWriter::Cfitsio), write(FrameWriter::Direct))
    });
}
