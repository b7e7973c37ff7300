//! The frame file of an extraction, as `extract` and `exposure` write it (the arrays borrowed
//! from the extraction by `frame_data`, the RAW scores computed spectrum by spectrum in
//! parallel, the direct writer handing each piece to the disk early), is the file of the writer
//! before them (the arrays copied into a `FrameData`, the scores computed one spectrum after the
//! other, cfitsio's conversion and `ffpcks`), byte for byte, for a full 500-fiber r frame.

mod common;
#[path = "../benches/common/wire_data.rs"]
mod wire_data;

use desi_extract::extract::{assemble_frame, frame_data};
use desi_extract::io::{
    checksums_ok, write_frame_using, write_frame_with_scores, FitsTable, FrameData, FrameWriter,
    Keyword, PreprocImage,
};
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::scores::{auto_band, gradient, raw_frame_scores, ScoreColumn, TOPHAT_BANDS};
use desi_extract::stats::median;
use std::path::Path;

/// numpy's median (NaN when any value is NaN), as `scores` computes it.
fn np_median(values: Vec<f64>) -> f64 {
    if values.iter().any(|v| v.is_nan()) {
        f64::NAN
    } else {
        median(values)
    }
}

/// The RAW scores one spectrum after the other: the loop of `raw_frame_scores` before it ran
/// per spectrum in parallel (the reference).
fn scores_one_after_the_other(wave: &[f64], flux: &[f64], ivar: &[f64]) -> Vec<ScoreColumn> {
    let nwave = wave.len();
    let band = auto_band(wave);
    let &(_, lo, hi) = TOPHAT_BANDS.iter().find(|b| b.0 == band).expect("band");
    let bins: Vec<usize> = (0..nwave)
        .filter(|&i| wave[i] >= lo && wave[i] < hi)
        .collect();
    let dwave = gradient(wave);
    let (mut sum, mut med_count, mut med_snr) = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..flux.len() / nwave {
        let f = &flux[s * nwave..(s + 1) * nwave];
        let iv = &ivar[s * nwave..(s + 1) * nwave];
        sum.push(bins.iter().map(|&i| f[i]).sum::<f64>());
        med_count.push(np_median(bins.iter().map(|&i| f[i] / dwave[i]).collect()));
        med_snr.push(np_median(
            bins.iter()
                .map(|&i| {
                    let v = if iv[i] < 0.0 { 0.0 } else { iv[i] };
                    v.sqrt() * f[i] / dwave[i].sqrt()
                })
                .collect(),
        ));
    }
    let upper = band.to_ascii_uppercase();
    let range = format!("{lo},{hi}A");
    let column = |name: String, comment: String, values| ScoreColumn {
        name,
        comment,
        values,
    };
    vec![
        column(
            format!("SUM_RAW_COUNT_{upper}"),
            format!("sum counts in wave. range {range}"),
            sum,
        ),
        column(
            format!("MEDIAN_RAW_COUNT_{upper}"),
            format!("median counts/A in wave. range {range}"),
            med_count,
        ),
        column(
            format!("MEDIAN_RAW_SNR_{upper}"),
            format!("median SNR/sqrt(A) in wave. range {range}"),
            med_snr,
        ),
    ]
}

/// The columns with their values as bits (NaN compared bitwise).
fn score_bits(columns: &[ScoreColumn]) -> Vec<(String, String, Vec<u64>)> {
    columns
        .iter()
        .map(|c| {
            let bits = c.values.iter().map(|v| v.to_bits()).collect();
            (c.name.clone(), c.comment.clone(), bits)
        })
        .collect()
}

/// The preproc metadata a writer has (no pixels): a header with FLAVOR and a whole petal's
/// fibermap.
fn preproc_metadata() -> PreprocImage {
    PreprocImage {
        path: "/data/preproc-r0-00051060.fits".into(),
        nx: wire_data::CCD_NX,
        ny: wire_data::CCD_NY,
        image: Vec::new(),
        ivar: Vec::new(),
        mask: Vec::new(),
        camera: "r0".into(),
        header: vec![
            Keyword::str("CAMERA", "r0", "camera").card(),
            Keyword::str("FLAVOR", "science", "").card(),
            Keyword::int("EXPID", 51060, "").card(),
        ],
        readnoise: None,
        fibermap: Some(FitsTable::minimal_fibermap(0..500, &[7, 42, 311])),
    }
}

#[test]
fn frame_of_an_extraction_is_the_file_of_the_writer_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).expect("r grid");
    let params = ExtractionParams {
        specmin: 0,
        nspec: 500,
        ..ExtractionParams::default()
    };
    let mut blocks = wire_data::r_frame_blocks();
    // Outputs that are not finite: their bins are zeroed and flagged on assembly.
    blocks[3].arrays.flux[77] = f64::NAN;
    blocks[7].arrays.rdiags[1234] = f64::INFINITY;
    let ex = assemble_frame(&grid, &params, wire_data::NDIAG, blocks, None).expect("assemble");
    assert_eq!(ex.nonfinite_bins.len(), 2);
    let meta = preproc_metadata();
    let (psf, input) = (Path::new("/data/psf-r0-00051060.fits"), &meta.path);
    let frame = frame_data(&ex, &meta, Some("psf-orig.fits"), psf, input, &grid);
    let scores = raw_frame_scores(frame.wavelength, frame.flux, frame.ivar).expect("r band");

    // The writer before: the arrays copied, the scores one spectrum after the other, cfitsio.
    let copied = FrameData {
        specmin: frame.specmin,
        nspec: frame.nspec,
        nwave: frame.nwave,
        ndiag: frame.ndiag,
        wavelength: grid.wave.clone(),
        flux: ex.arrays.flux.clone(),
        ivar: ex.arrays.ivar.clone(),
        mask: ex.mask.clone(),
        resolution: ex.arrays.rdiags.clone(),
        chi2pix: ex.arrays.chi2pix.clone(),
        header: meta.header.clone(),
        keywords: frame.keywords.clone(),
    };
    let reference = scores_one_after_the_other(&copied.wavelength, &copied.flux, &copied.ivar);
    assert_eq!(score_bits(&scores), score_bits(&reference));
    assert!(reference[2].values.iter().any(|v| *v != 0.0));

    let fibermap = meta.fibermap.as_ref();
    let write_before = || {
        let path = dir.path().join("frame-before.fits");
        let view = copied.view();
        write_frame_using(
            FrameWriter::Cfitsio,
            &path,
            &view,
            fibermap,
            Some(&reference),
        )
        .expect("write frame");
        path
    };
    let write_now = || {
        let path = dir.path().join("frame-now.fits");
        write_frame_with_scores(&path, &frame, fibermap, Some(&scores)).expect("write frame");
        path
    };
    common::assert_identical_frame_files(|| {
        let (before, now) = (write_before(), write_now());
        assert!(checksums_ok(&now).expect("read back"));
        (std::fs::read(before).unwrap(), std::fs::read(now).unwrap())
    });
}
