//! Criterion benchmarks of a full frame's file I/O (issue #15): writing a frame file (500
//! fibers x 2,326 bins, ndiag 5: FLUX, IVAR, MASK, WAVELENGTH, RESOLUTION, FIBERMAP, CHI2PIX,
//! SCORES, every HDU with CHECKSUM/DATASUM; ~70 MB, synced and renamed into place) with the
//! direct writer (parallel encoding and DATASUM, 4 MB block writes handed to the disk as they
//! are written) and with cfitsio's conversion and `ffpcks` read-back (the writer before); and
//! reading a full r preproc (4,128 x 4,114 IMAGE/IVAR f32, RICE-compressed MASK) in shares of
//! rows on the rayon pool and plane after plane (`DESI_PREPROC_READ=serial`). The files are in
//! the page cache, as an exposure's are.
//!
//! `write_frame_whole` times what an exposure's writer does with a frame's finished bundle
//! blocks (host/exposure/frame.rs `write_frame`): assemble the 20 blocks of a 500-fiber r
//! frame, take the frame's contents, compute the RAW scores and write the file (the blocks are
//! cloned outside the timing, as each frame's come fresh from its extraction).
//! `DESI_BENCH_PREPROC=<preproc>` adds `read_preproc/file`, the read of that file (e.g. one
//! made by `desi-extract simulate -p data/psf-r0-00051060.fits -o X -n 500 -w 5760,7620,0.8`).
//!
//! `cargo bench --bench frame_io` (add `-- --quick` for a short run).

#[path = "common/wire_data.rs"]
mod wire_data;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use desi_extract::extract::{assemble_frame, frame_data};
use desi_extract::io::{
    read_preproc, write_frame_using, write_frame_with_scores, write_preproc, FitsTable, FrameData,
    FrameWriter, Keyword, PreprocImage,
};
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::scores::{raw_frame_scores, ScoreColumn};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

/// A full r frame with plausible, varied values.
fn full_frame() -> FrameData {
    let (nspec, nwave, ndiag) = (500, 2326, 5);
    let n = nspec * nwave;
    let wave = |i: usize| (i as f64 * 0.7131).sin();
    FrameData {
        specmin: 0,
        nspec,
        nwave,
        ndiag,
        wavelength: (0..nwave).map(|i| 5760.0 + i as f64 * 0.8).collect(),
        flux: (0..n).map(|i| 1000.0 * (1.0 + wave(i))).collect(),
        ivar: (0..n).map(|i| 0.01 * wave(i + 3).abs()).collect(),
        mask: (0..n).map(|i| u32::from(i % 97 == 0) << 1).collect(),
        resolution: (0..n * (2 * ndiag + 1))
            .map(|i| 0.1 * wave(i).abs())
            .collect(),
        chi2pix: (0..n).map(|i| 1.0 + 0.1 * wave(i + 5)).collect(),
        header: vec![
            Keyword::str("CAMERA", "r0", "camera").card(),
            Keyword::int("EXPID", 8, "").card(),
            Keyword::str("FLAVOR", "science", "").card(),
        ],
        keywords: vec![
            Keyword::float("WAVEMIN", 5760.0, "First wavelength [Angstrom]"),
            Keyword::float("WAVEMAX", 7620.0, "Last wavelength [Angstrom]"),
            Keyword::float("WAVESTEP", 0.8, "Wavelength step size [Angstrom]"),
        ],
    }
}

/// A full r preproc (4,128 rows x 4,114 columns) with noise-like values and a sparse mask.
fn full_preproc(path: PathBuf) -> PreprocImage {
    let (ny, nx) = (4128, 4114);
    let n = ny * nx;
    let noise = |i: usize| ((i as f64 * 0.618_034).fract() - 0.5) as f32;
    PreprocImage {
        path,
        nx,
        ny,
        image: (0..n).map(|i| 10.0 * noise(i)).collect(),
        ivar: (0..n).map(|i| 0.1 + 0.01 * noise(i + 7)).collect(),
        mask: (0..n).map(|i| i32::from(i % 1009 == 0)).collect(),
        camera: "r0".into(),
        header: vec![
            Keyword::str("CAMERA", "r0", "camera").card(),
            Keyword::str("FLAVOR", "science", "").card(),
        ],
        readnoise: None,
        fibermap: Some(FitsTable::minimal_fibermap(0..500, &[])),
    }
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let frame = full_frame();
    let fibermap = FitsTable::minimal_fibermap(0..500, &[]);
    let scores: Vec<ScoreColumn> = ["SUM_RAW_COUNT_R", "MEDIAN_RAW_SNR_R"]
        .iter()
        .map(|name| ScoreColumn {
            name: name.to_string(),
            comment: String::new(),
            values: (0..500).map(|i| i as f64).collect(),
        })
        .collect();
    let mut group = c.benchmark_group("frame_io");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for writer in [FrameWriter::Direct, FrameWriter::Cfitsio] {
        let path = dir.path().join(format!("frame-{}.fits", writer.name()));
        group.bench_function(format!("write_frame/{}", writer.name()), |b| {
            b.iter(|| {
                // A new file each time, as in an exposure (no old file to replace).
                let _ = std::fs::remove_file(&path);
                write_frame_using(writer, &path, &frame.view(), Some(&fibermap), Some(&scores))
                    .expect("write frame")
            })
        });
    }
    write_frame_whole(&mut group, dir.path());
    let preproc = dir.path().join("preproc-r0-00000008.fits");
    write_preproc(&preproc, &full_preproc(preproc.clone())).expect("write preproc");
    for (name, serial) in [("parallel", false), ("serial", true)] {
        if serial {
            std::env::set_var("DESI_PREPROC_READ", "serial");
        } else {
            std::env::remove_var("DESI_PREPROC_READ");
        }
        group.bench_function(format!("read_preproc/{name}"), |b| {
            b.iter(|| black_box(read_preproc(&preproc).expect("read preproc")))
        });
    }
    std::env::remove_var("DESI_PREPROC_READ");
    if let Some(file) = std::env::var_os("DESI_BENCH_PREPROC") {
        let file = PathBuf::from(file);
        group.bench_function("read_preproc/file", |b| {
            b.iter(|| black_box(read_preproc(&file).expect("read preproc")))
        });
    }
    group.finish();
}

/// An exposure writer's work on a finished frame: assemble its blocks, its contents, the RAW
/// scores and the file.
fn write_frame_whole(
    group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    dir: &std::path::Path,
) {
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).expect("r grid");
    assert_eq!(grid.nwave(), wire_data::R_NWAVE);
    let params = ExtractionParams {
        specmin: 0,
        nspec: 500,
        ..ExtractionParams::default()
    };
    let blocks = wire_data::r_frame_blocks();
    let mut meta = wire_data::full_preproc();
    meta.header
        .push(Keyword::str("FLAVOR", "science", "").card());
    let meta = PreprocImage {
        image: Vec::new(),
        ivar: Vec::new(),
        mask: Vec::new(),
        ..meta
    };
    let path = dir.join("frame-r0-00000008.fits");
    group.bench_function("write_frame_whole", |b| {
        b.iter_batched(
            || blocks.clone(),
            |blocks| {
                let _ = std::fs::remove_file(&path);
                let ex = assemble_frame(&grid, &params, wire_data::NDIAG, blocks, None)
                    .expect("assemble");
                let frame = frame_data(&ex, &meta, None, &meta.path, &meta.path, &grid);
                let scores = raw_frame_scores(frame.wavelength, frame.flux, frame.ivar);
                write_frame_with_scores(&path, &frame, meta.fibermap.as_ref(), scores.as_deref())
                    .expect("write frame");
                ex
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(frame_io, benches);
criterion_main!(frame_io);
