//! Preproc write -> read round trips (docs/algorithm.md §1.2).

mod common;

use common::dir_names;

use std::ops::Range;
use std::path::{Path, PathBuf};

use desi_extract::io::{
    checksums_ok, describe, find_keyword, read_preproc, write_preproc, FitsTable, Keyword,
    KeywordValue, PreprocImage,
};
use fitsio::FitsFile;

/// Deterministic pseudo-random values in [0, 1) (64-bit LCG, high bits).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A non-square test image (ny != nx, neither a multiple of a tile size).
fn sample(path: &Path, ny: usize, nx: usize, seed: u64) -> PreprocImage {
    let mut rng = Lcg(seed);
    let n = ny * nx;
    let image: Vec<f32> = (0..n)
        .map(|_| (rng.next() * 2000.0 - 50.0) as f32)
        .collect();
    let ivar: Vec<f32> = (0..n)
        .map(|_| {
            let v = rng.next();
            if v < 0.05 {
                0.0
            } else {
                v as f32
            }
        })
        .collect();
    // ccdmask bits 0..9 (docs/algorithm.md §1.2), including 0x200 = BADAMP and combinations.
    let mask: Vec<i32> = (0..n)
        .map(|_| {
            let v = rng.next();
            if v < 0.9 {
                0
            } else {
                ((v * 1e4) as i32) & 0x3FF
            }
        })
        .collect();
    let header = vec![
        Keyword::str("CAMERA", "r0", "Spectrograph camera").card(),
        Keyword::float("RDNOISE", 3.25, "Read noise").card(),
        Keyword::str("FLAVOR", "science", "").card(),
        Keyword::int("EXPID", 51060, "Exposure number").card(),
        format!("{:<80}", "COMMENT a comment card that must survive"),
        Keyword::str("BUNIT", "electron", "").card(),
    ];
    PreprocImage {
        path: path.to_path_buf(),
        nx,
        ny,
        image,
        ivar,
        mask,
        camera: "r0".into(),
        header,
        readnoise: None,
        fibermap: None,
    }
}

fn tmp(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn preproc_round_trip_with_compressed_mask() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = tmp(&dir, "preproc-r0-00000001.fits");
    let img = sample(&path, 37, 53, 7);
    write_preproc(&path, &img).expect("write preproc");
    assert_eq!(
        dir_names(dir.path()),
        ["preproc-r0-00000001.fits"],
        "no temp left"
    );

    let back = read_preproc(&path).expect("read preproc");
    assert_eq!((back.ny, back.nx), (37, 53));
    // f32 written and read as f32: bit-exact.
    assert_eq!(back.image, img.image);
    assert_eq!(back.ivar, img.ivar);
    // RICE_1 on integers is lossless.
    assert_eq!(back.mask, img.mask);
    assert_eq!(back.camera, "r0");
    let trimmed: Vec<&str> = img.header.iter().map(|c| c.trim_end()).collect();
    assert_eq!(
        back.header, trimmed,
        "cards pass through (trailing blanks trimmed), in order"
    );
    assert_eq!(back.readnoise, None);
    assert_eq!(back.fibermap, None);

    // FITS-level structure: MASK is a tile-compressed int16 image with row tiles.
    let mut f = FitsFile::open(&path).expect("open");
    let mask = f.hdu("MASK").expect("MASK");
    let ztype: String = mask.read_key(&mut f, "ZCMPTYPE").expect("ZCMPTYPE");
    let zbitpix: i64 = mask.read_key(&mut f, "ZBITPIX").expect("ZBITPIX");
    let ztile1: i64 = mask.read_key(&mut f, "ZTILE1").expect("ZTILE1");
    let ztile2: i64 = mask.read_key(&mut f, "ZTILE2").expect("ZTILE2");
    assert_eq!(ztype.trim(), "RICE_1");
    assert_eq!((zbitpix, ztile1, ztile2), (16, 53, 1));
    let primary = f.primary_hdu().expect("primary");
    let extname: String = primary.read_key(&mut f, "EXTNAME").expect("EXTNAME");
    let bitpix: i64 = primary.read_key(&mut f, "BITPIX").expect("BITPIX");
    assert_eq!((extname.as_str(), bitpix), ("IMAGE", -32));
    assert!(
        checksums_ok(&path).expect("verify"),
        "CHECKSUM/DATASUM correct"
    );

    let text = describe(&path).expect("describe");
    assert!(text.contains("preproc"), "{text}");
    assert!(text.contains("tile-compressed RICE_1"), "{text}");
}

#[test]
fn preproc_round_trip_readnoise_fibermap_and_camera_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = tmp(&dir, "p.fits");
    let mut img = sample(&path, 20, 11, 99);
    // No CAMERA card: write_preproc adds one from `camera`; upper case is lower-cased on read.
    img.header.retain(|c| !c.starts_with("CAMERA"));
    img.camera = "B7".into();
    img.readnoise = Some((0..220).map(|i| 2.5 + i as f32 * 1e-3).collect());
    img.fibermap = Some(FitsTable::minimal_fibermap(3500..3520, &[3503, 3517]));
    write_preproc(&path, &img).expect("write");
    let back = read_preproc(&path).expect("read");
    assert_eq!(back.camera, "b7");
    assert_eq!(
        find_keyword(&back.header, "CAMERA"),
        Some(KeywordValue::Str("B7".into()))
    );
    assert_eq!(back.readnoise, img.readnoise);
    let fm = back.fibermap.expect("fibermap");
    assert_eq!(
        fm.column_names(),
        ["FIBER", "TARGETID", "OBJTYPE", "FIBERSTATUS"]
    );
    assert_eq!(fm.nrows, 20);
    assert_eq!(fm.column_i64("FIBER"), Some((3500..3520).collect()));
    assert_eq!(fm.column_i64("TARGETID"), Some((3500..3520).collect()));
    let objtype = fm.column_str("OBJTYPE").expect("OBJTYPE");
    assert_eq!(objtype[3], "SKY");
    assert_eq!(objtype[17], "SKY");
    assert_eq!(objtype.iter().filter(|t| *t == "TGT").count(), 18);
    assert_eq!(
        fm.data,
        img.fibermap
            .as_ref()
            .map(|f| f.data.clone())
            .unwrap_or_default()
    );

    // The same table read back by cfitsio's column reader.
    let mut f = FitsFile::open(&path).expect("open");
    let hdu = f.hdu("FIBERMAP").expect("FIBERMAP");
    let fibers: Vec<i32> = hdu.read_col(&mut f, "FIBER").expect("FIBER");
    let tid: Vec<i64> = hdu.read_col(&mut f, "TARGETID").expect("TARGETID");
    assert_eq!(fibers, (3500..3520).collect::<Vec<i32>>());
    assert_eq!(tid[19], 3519);
}

#[test]
fn rewrite_replaces_previous_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = tmp(&dir, "p.fits");
    write_preproc(&path, &sample(&path, 5, 6, 1)).expect("first write");
    let second = sample(&path, 8, 3, 2);
    write_preproc(&path, &second).expect("second write");
    let back = read_preproc(&path).expect("read");
    assert_eq!((back.ny, back.nx), (8, 3));
    assert_eq!(back.image, second.image);
    assert_eq!(dir_names(dir.path()), ["p.fits"]);
}

/// `PreprocReader::read_rows` reads exactly the rows asked for (IMAGE, IVAR, the compressed
/// MASK and READNOISE), zeros elsewhere, clamps a range that runs past the CCD edge, and checks
/// only the rows it reads, naming a bad pixel by its CCD row.
#[test]
fn preproc_row_range_read() {
    use desi_extract::io::PreprocReader;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = tmp(&dir, "preproc-r0-00000002.fits");
    let (ny, nx) = (41, 29);
    let mut img = sample(&path, ny, nx, 11);
    img.readnoise = Some((0..ny * nx).map(|i| 2.0 + i as f32 * 1e-3).collect());
    write_preproc(&path, &img).expect("write preproc");

    let planes_match = |back: &PreprocImage, rows: std::ops::Range<usize>| {
        for r in 0..ny {
            let span = r * nx..(r + 1) * nx;
            let inside = rows.contains(&r);
            let pick_f = |src: &[f32]| {
                if inside {
                    src[span.clone()].to_vec()
                } else {
                    vec![0.0; nx]
                }
            };
            assert_eq!(
                back.image[span.clone()],
                pick_f(&img.image)[..],
                "image row {r}"
            );
            assert_eq!(
                back.ivar[span.clone()],
                pick_f(&img.ivar)[..],
                "ivar row {r}"
            );
            let rn = img.readnoise.as_deref().expect("readnoise");
            let back_rn = back.readnoise.as_deref().expect("readnoise read");
            assert_eq!(back_rn[span.clone()], pick_f(rn)[..], "readnoise row {r}");
            let mask: Vec<i32> = if inside {
                img.mask[span.clone()].to_vec()
            } else {
                vec![0; nx]
            };
            assert_eq!(back.mask[span.clone()], mask[..], "mask row {r}");
        }
    };

    // Interior rows, the first rows, the last rows and a range past the CCD edge.
    for (rows, expect) in [
        (5..17, 5..17),
        (0..3, 0..3),
        (ny - 4..ny, ny - 4..ny),
        (ny - 2..ny + 50, ny - 2..ny),
        (ny + 3..ny + 9, ny..ny),
        (0..ny, 0..ny),
    ] {
        let reader = PreprocReader::open(&path).expect("open");
        let meta = reader.metadata();
        assert_eq!((meta.ny, meta.nx, meta.camera.as_str()), (ny, nx, "r0"));
        assert!(meta.image.is_empty() && meta.ivar.is_empty() && meta.mask.is_empty());
        let back = reader.read_rows(rows.clone()).expect("read rows");
        assert_eq!((back.ny, back.nx), (ny, nx), "{rows:?}");
        assert_eq!(back.image.len(), ny * nx);
        planes_match(&back, expect);
        assert_eq!(back.header, read_preproc(&path).expect("full read").header);
    }

    // A bad IVAR outside the rows read is not seen; inside, it is named by its CCD row.
    let bad_row = 30;
    img.ivar[bad_row * nx + 4] = f32::NAN;
    let path2 = tmp(&dir, "preproc-r0-00000003.fits");
    write_preproc(&path2, &img).expect("write preproc with a NaN ivar");
    let back = PreprocReader::open(&path2)
        .expect("open")
        .read_rows(0..bad_row)
        .expect("the bad pixel is not in the rows read");
    assert_eq!(back.ivar[bad_row * nx + 4], 0.0);
    let err = PreprocReader::open(&path2)
        .expect("open")
        .read_rows(bad_row - 2..bad_row + 1)
        .expect_err("the bad pixel is in the rows read");
    let text = err.to_string();
    assert!(
        text.contains(&format!("(row {bad_row}, col 4)")) && text.contains("IVAR"),
        "{text}"
    );
}

/// The planes of `path` read whole by cfitsio through the `fitsio` crate (the reference the
/// shares of `PreprocReader::read_window` are compared with), as bits.
fn planes_read_whole(path: &Path) -> [Vec<u32>; 4] {
    let mut f = FitsFile::open(path).expect("open");
    let mut plane = |name: &str| -> Vec<u32> {
        let hdu = f.hdu(name).expect(name);
        let values: Vec<f32> = hdu.read_image(&mut f).expect(name);
        values.iter().map(|v| v.to_bits()).collect()
    };
    let (image, ivar, readnoise) = (plane("IMAGE"), plane("IVAR"), plane("READNOISE"));
    let hdu = f.hdu("MASK").expect("MASK");
    let mask: Vec<i32> = hdu.read_image(&mut f).expect("MASK");
    [
        image,
        ivar,
        mask.iter().map(|&m| m as u32).collect(),
        readnoise,
    ]
}

/// The planes of a preproc as read by desi-extract, as bits.
fn planes_read(img: &PreprocImage) -> [Vec<u32>; 4] {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    [
        bits(&img.image),
        bits(&img.ivar),
        img.mask.iter().map(|&m| m as u32).collect(),
        bits(img.readnoise.as_deref().expect("readnoise")),
    ]
}

/// `planes` with every pixel outside rows `rows` x columns `cols` of a `(_, nx)` image zeroed.
fn window_of(
    planes: &[Vec<u32>; 4],
    nx: usize,
    rows: &Range<usize>,
    cols: &Range<usize>,
) -> [Vec<u32>; 4] {
    planes.clone().map(|mut plane| {
        for (i, v) in plane.iter_mut().enumerate() {
            if !(rows.contains(&(i / nx)) && cols.contains(&(i % nx))) {
                *v = 0;
            }
        }
        plane
    })
}

/// A full-size preproc (4128 x 4114, RICE MASK, READNOISE), read in shares of rows on 1, 2, 3
/// and 7 threads (each share read and checked 64 rows at a time, on handles of its own) and,
/// gzip-compressed, plane after plane on one handle, gives the planes cfitsio reads whole, bit
/// for bit; and so do windows of rows and columns (zeros outside).
#[test]
fn shares_read_the_planes_cfitsio_reads_whole() {
    use desi_extract::io::PreprocReader;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = tmp(&dir, "preproc-r0-00000004.fits");
    let (ny, nx) = (4128, 4114);
    let mut img = sample(&path, ny, nx, 21);
    img.readnoise = Some(
        (0..ny * nx)
            .map(|i| 3.0 + (i % 977) as f32 * 1e-3)
            .collect(),
    );
    write_preproc(&path, &img).expect("write preproc");
    let gz = tmp(&dir, "preproc-r0-00000004.fits.gz");
    write_preproc(&gz, &img).expect("write gzip preproc");
    let whole = planes_read_whole(&path);
    let read_on = |threads: usize, file: &Path, rows: Range<usize>, cols: Range<usize>| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| PreprocReader::open(file).and_then(|r| r.read_window(rows, cols)))
            .expect("read window")
    };
    for threads in [1, 2, 3, 7] {
        let back = read_on(threads, &path, 0..ny, 0..nx);
        assert!(planes_read(&back) == whole, "{threads} threads");
    }
    let back = read_on(4, &gz, 0..ny, 0..nx);
    assert!(planes_read(&back) == whole, "gzip");
    for (rows, cols) in [
        (100..1000, 0..nx),
        (7..4000, 33..2100),
        (4000..4128, 4100..4114),
    ] {
        let want = window_of(&whole, nx, &rows, &cols);
        let back = read_on(3, &path, rows.clone(), cols.clone());
        assert!(planes_read(&back) == want, "{rows:?} x {cols:?}");
    }
    let (rows, cols) = (7..4000, 33..2100);
    let back = read_on(3, &gz, rows.clone(), cols.clone());
    assert!(
        planes_read(&back) == window_of(&whole, nx, &rows, &cols),
        "gzip window"
    );
}

/// With bad values in several shares (4 threads: shares of 75 rows, read 64 rows at a time),
/// the error is the one a sequential read reports: a bad IVAR before a bad IMAGE value
/// wherever they are, and of several, the first in pixel order.
#[test]
fn shares_report_the_error_a_sequential_read_reports() {
    use desi_extract::io::PreprocReader;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ny, nx) = (300, 31);
    let read = |name: &str, edit: &dyn Fn(&mut PreprocImage)| -> String {
        let path = tmp(&dir, name);
        let mut img = sample(&path, ny, nx, 5);
        img.ivar.iter_mut().for_each(|v| *v = v.max(0.5));
        edit(&mut img);
        write_preproc(&path, &img).expect("write preproc");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .expect("pool");
        let err = pool
            .install(|| PreprocReader::open(&path).and_then(|r| r.read_rows(0..ny)))
            .expect_err("bad values");
        err.to_string()
    };
    let text = read("a.fits", &|img| {
        img.image[10 * nx + 3] = f32::NAN;
        img.ivar[250 * nx + 7] = -1.0;
    });
    assert!(
        text.contains("(row 250, col 7)") && text.contains("IVAR"),
        "{text}"
    );
    let text = read("b.fits", &|img| {
        img.ivar[250 * nx + 7] = -1.0;
        img.ivar[120 * nx + 30] = f32::INFINITY;
    });
    assert!(
        text.contains("ivar inf at pixel (row 120, col 30)"),
        "{text}"
    );
    let text = read("c.fits", &|img| {
        img.image[290 * nx + 1] = f32::INFINITY;
        img.image[70 * nx + 2] = f32::NAN;
    });
    assert!(text.contains("pixel (row 70, col 2) is NaN"), "{text}");
}
