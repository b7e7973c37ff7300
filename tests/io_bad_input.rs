//! Bad inputs give errors naming the file and the problem; failed writes leave no file.

mod common;

use std::path::{Path, PathBuf};

use desi_extract::io::{
    describe, read_frame, read_preproc, read_psf, write_frame, write_model, write_preproc,
    FrameData, IoError, PreprocImage,
};
use fitsio::images::{ImageDescription, ImageType};
use fitsio::FitsFile;

use common::dir_names;
use common::PSF_PATH as PSF;

/// Asserts that the error message names the file and contains every `parts`.
fn assert_msg(err: &IoError, path: &Path, parts: &[&str]) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message lacks path: {msg}"
    );
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}: {msg}");
    }
}

fn psf_copy(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("psf-copy.fits");
    std::fs::copy(PSF, &path).expect("copy PSF");
    let mut perms = std::fs::metadata(&path).expect("meta").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).expect("make writable");
    path
}

fn small_preproc(path: &Path) -> PreprocImage {
    let (ny, nx) = (6, 9);
    PreprocImage {
        path: path.to_path_buf(),
        nx,
        ny,
        image: (0..ny * nx).map(|i| i as f32).collect(),
        ivar: vec![1.0; ny * nx],
        mask: vec![0; ny * nx],
        camera: "r0".into(),
        header: vec![],
        readnoise: None,
        fibermap: None,
    }
}

#[test]
fn missing_file() {
    let path = Path::new("/nonexistent-dir/psf-missing.fits");
    let err = read_psf(path).expect_err("missing file");
    assert!(matches!(err, IoError::NotFound { .. }), "{err:?}");
    assert_msg(&err, path, &["file not found"]);
    let err = read_preproc(path).expect_err("missing file");
    assert_msg(&err, path, &["file not found"]);
    let err = read_frame(path).expect_err("missing file");
    assert_msg(&err, path, &["file not found"]);
}

#[test]
fn not_a_fits_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage.fits");
    std::fs::write(&path, b"this is not a FITS file at all\n".repeat(200)).expect("write");
    let err = read_psf(&path).expect_err("garbage");
    assert!(matches!(err, IoError::NotFits { .. }), "{err:?}");
    assert_msg(&err, &path, &["not a FITS file"]);
    let err = describe(&path).expect_err("garbage");
    assert_msg(&err, &path, &["not a FITS file"]);
}

#[test]
fn missing_hdu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = psf_copy(&dir);
    {
        let mut f = FitsFile::edit(&path).expect("edit");
        let hdu = f.hdu("YTRACE").expect("YTRACE");
        hdu.delete(&mut f).expect("delete YTRACE");
    }
    let err = read_psf(&path).expect_err("no YTRACE");
    assert_msg(&err, &path, &["missing HDU YTRACE"]);
}

#[test]
fn nan_coefficient_in_psf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = psf_copy(&dir);
    {
        let mut f = FitsFile::edit(&path).expect("edit");
        let hdu = f.hdu("PSF").expect("PSF");
        let names: Vec<String> = hdu.read_col(&mut f, "PARAM").expect("PARAM");
        let row = names
            .iter()
            .position(|n| n.trim() == "GH-2-3")
            .expect("GH-2-3");
        let mut nan = f64::NAN;
        let mut status = 0;
        // SAFETY: open writable file at the PSF HDU; column 2 is COEFF (2000D); one element
        // (fiber 42, k 1 -> element 42*4+1, 1-based +1) is written from `nan`.
        unsafe {
            fitsio::sys::ffpcl(
                f.as_raw(),
                fitsio::sys::TDOUBLE as i32,
                2,
                row as i64 + 1,
                42 * 4 + 1 + 1,
                1,
                &mut nan as *mut f64 as *mut _,
                &mut status,
            );
        }
        assert_eq!(status, 0, "cfitsio write");
    }
    let err = read_psf(&path).expect_err("NaN coefficient");
    assert_msg(&err, &path, &["GH-2-3", "fiber 42", "coefficient 1", "NaN"]);
}

#[test]
fn wrong_psf_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = psf_copy(&dir);
    {
        let mut f = FitsFile::edit(&path).expect("edit");
        let hdu = f.primary_hdu().expect("primary");
        hdu.write_key(&mut f, "PSFTYPE", "SPOTGRID")
            .expect("write key");
    }
    let err = read_psf(&path).expect_err("wrong type");
    assert_msg(&err, &path, &["PSFTYPE", "GAUSS-HERMITE", "SPOTGRID"]);
}

#[test]
fn wrong_shapes_in_preproc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad-shape.fits");
    {
        let img = ImageDescription {
            data_type: ImageType::Float,
            dimensions: &[6, 9],
        };
        let mut f = FitsFile::create(&path)
            .with_custom_primary(&img)
            .open()
            .expect("create");
        let p = f.primary_hdu().expect("primary");
        p.write_key(&mut f, "CAMERA", "r0").expect("CAMERA");
        p.write_key(&mut f, "EXTNAME", "IMAGE").expect("EXTNAME");
        let ivar = ImageDescription {
            data_type: ImageType::Float,
            dimensions: &[6, 8],
        };
        f.create_image("IVAR", &ivar).expect("IVAR");
        let mask = ImageDescription {
            data_type: ImageType::Short,
            dimensions: &[6, 9],
        };
        f.create_image("MASK", &mask).expect("MASK");
    }
    let err = read_preproc(&path).expect_err("wrong shape");
    assert!(matches!(err, IoError::Shape { .. }), "{err:?}");
    assert_msg(&err, &path, &["IVAR", "wrong shape", "6 rows x 8 columns"]);
}

#[test]
fn missing_camera_in_preproc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nocam.fits");
    let mut img = small_preproc(&path);
    img.header = vec!["FLAVOR  = 'science '".into()];
    img.camera = String::new();
    write_preproc(&path, &img).expect("write");
    // write_preproc wrote CAMERA = '' (empty); remove it to simulate a file without CAMERA.
    {
        let mut f = FitsFile::edit(&path).expect("edit");
        let key = std::ffi::CString::new("CAMERA").unwrap();
        let mut status = 0;
        // SAFETY: open writable file at the primary HDU; ffdkey only reads the name.
        unsafe { fitsio::sys::ffdkey(f.as_raw(), key.as_ptr(), &mut status) };
        assert_eq!(status, 0);
    }
    let err = read_preproc(&path).expect_err("no CAMERA");
    assert_msg(&err, &path, &["missing keyword CAMERA"]);
}

#[test]
fn nan_pixel_with_positive_ivar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nan.fits");
    let mut img = small_preproc(&path);
    img.image[3 * 9 + 5] = f32::NAN;
    // A NaN where ivar == 0 is allowed (masked pixel): only (3, 5) is an error.
    img.image[9 + 2] = f32::NAN;
    img.ivar[9 + 2] = 0.0;
    write_preproc(&path, &img).expect("write");
    let err = read_preproc(&path).expect_err("NaN pixel");
    assert_msg(&err, &path, &["IMAGE", "(row 3, col 5)", "NaN"]);

    img.image[3 * 9 + 5] = 1.0;
    img.ivar[4 * 9 + 7] = -2.0;
    write_preproc(&path, &img).expect("write");
    let err = read_preproc(&path).expect_err("negative ivar");
    assert_msg(&err, &path, &["IVAR", "(row 4, col 7)", "-2"]);

    img.ivar[4 * 9 + 7] = 1.0;
    write_preproc(&path, &img).expect("write");
    read_preproc(&path).expect("valid again: the NaN at ivar 0 is accepted");
}

#[test]
fn not_a_desi_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.fits");
    write_model(&path, 2, 3, &[0.0; 6]).expect("write");
    let err = describe(&path).expect_err("model is not a DESI PSF/preproc/frame");
    assert_msg(
        &err,
        &path,
        &["not a DESI PSF, preproc or frame file", "MODEL"],
    );
    let err = read_frame(&path).expect_err("not a frame");
    assert_msg(&err, &path, &["missing HDU FLUX"]);
}

#[test]
fn failed_writes_leave_no_file() {
    // Output directory does not exist: nothing can be created.
    let missing = Path::new("/nonexistent-dir-desi-extract/out/frame.fits");
    let err = write_model(missing, 2, 2, &[1.0; 4]).expect_err("no directory");
    assert_msg(&err, missing, &["output directory", "does not exist"]);
    assert!(!missing.exists());

    // An error in the middle of writing (an invalid header card, rejected by cfitsio after
    // the temporary file exists): no output, no temporary, and a previous file untouched.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.fits");
    let good = small_preproc(&path);
    write_preproc(&path, &good).expect("first write");
    let before = std::fs::read(&path).expect("read bytes");
    let mut bad = small_preproc(&path);
    bad.image[0] = 42.0;
    bad.header = vec!["BAD#KEY =                    1".into()];
    let err = write_preproc(&path, &bad).expect_err("bad card");
    assert_msg(&err, &path, &["BAD#KEY"]);
    assert_eq!(dir_names(dir.path()), ["p.fits"], "no temporary left");
    assert_eq!(
        std::fs::read(&path).expect("read bytes"),
        before,
        "old file untouched"
    );

    // Same for a frame whose fibermap is too short (detected before anything is written)
    // and one with an invalid keyword name (detected while writing the FLUX header).
    let fpath = dir.path().join("frame.fits");
    let frame = FrameData {
        specmin: 0,
        nspec: 2,
        nwave: 3,
        ndiag: 1,
        wavelength: vec![1.0, 2.0, 3.0],
        flux: vec![0.0; 6],
        ivar: vec![0.0; 6],
        mask: vec![0; 6],
        resolution: vec![0.0; 18],
        chi2pix: vec![0.0; 6],
        header: vec![],
        keywords: vec![desi_extract::io::Keyword::int("lower", 1, "")],
    };
    let err = write_frame(&fpath, &frame, None).expect_err("bad keyword name");
    assert_msg(&err, &fpath, &["invalid keyword name"]);
    let short = desi_extract::io::FitsTable::minimal_fibermap(0..1, &[]);
    let mut ok_kw = frame.clone();
    ok_kw.keywords.clear();
    let err = write_frame(&fpath, &ok_kw, Some(&short)).expect_err("short fibermap");
    assert_msg(&err, &fpath, &["fibermap has 1 rows"]);
    assert_eq!(dir_names(dir.path()), ["p.fits"], "no frame, no temporary");
    let mut wrong = ok_kw.clone();
    wrong.resolution.pop();
    let err = write_frame(&fpath, &wrong, None).expect_err("wrong shape");
    assert_msg(&err, &fpath, &["resolution has 17 values"]);
    write_frame(&fpath, &ok_kw, None).expect("valid frame writes");
    assert_eq!(dir_names(dir.path()), ["frame.fits", "p.fits"]);
}

/// Sets the constant Legendre term of `param` for fiber `fiber` (other terms 0) in the PSF
/// table of `path`.
fn set_psf_param(path: &Path, param: &str, fiber: usize, value: f64) {
    let mut f = FitsFile::edit(path).expect("edit");
    let hdu = f.hdu("PSF").expect("PSF");
    let names: Vec<String> = hdu.read_col(&mut f, "PARAM").expect("PARAM");
    let row = names.iter().position(|n| n.trim() == param).expect(param);
    let mut values = [value, 0.0, 0.0, 0.0];
    let mut status = 0;
    // SAFETY: open writable file at the PSF HDU; column 2 is COEFF (2000D = 500 fibers x 4);
    // the 4 elements of `fiber` (1-based first element fiber*4+1) are written from `values`.
    unsafe {
        fitsio::sys::ffpcl(
            f.as_raw(),
            fitsio::sys::TDOUBLE as i32,
            2,
            row as i64 + 1,
            fiber as i64 * 4 + 1,
            4,
            values.as_mut_ptr() as *mut _,
            &mut status,
        );
    }
    assert_eq!(status, 0, "cfitsio write");
}

#[test]
fn header_values_are_parsed_strictly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // cfitsio reads the first token of these values; they must be refused.
    for (hdu, key, value, parts) in [
        (
            "PSF",
            "WAVEMIN",
            "9 5543.0",
            vec!["WAVEMIN", "one value expected", "9 5543.0"],
        ),
        ("PSF", "HSIZEX", "8 2", vec!["HSIZEX", "one value expected"]),
        (
            "YTRACE",
            "PCOUNT",
            "6 0",
            vec!["YTRACE", "PCOUNT", "one value expected"],
        ),
        ("PSF", "PCOUNT", "6 0", vec!["PCOUNT", "one value expected"]),
        (
            "PSF",
            "WAVEMAX",
            "7826.0E",
            vec!["WAVEMAX", "expected a number"],
        ),
        ("YTRACE", "PCOUNT", "6", vec!["YTRACE", "PCOUNT = 0"]),
    ] {
        let path = psf_copy(&dir);
        common::set_raw_card(&path, hdu, key, value);
        let err = read_psf(&path).expect_err(value);
        assert_msg(&err, &path, &parts);
        assert!(err.is_input_error(), "{err}");
    }
    // The unedited copy still reads (the edit helper is not what fails).
    let path = psf_copy(&dir);
    common::set_raw_card(&path, "PSF", "WAVEMIN", "5543.0");
    read_psf(&path).expect("an equivalent card reads");
}

#[test]
fn absurd_psf_sizes_and_widths_are_refused_before_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, value) in [
        ("HSIZEX", "100000"),
        ("HSIZEX", "2000"),
        ("HSIZEX", "0"),
        ("HSIZEY", "0"),
        ("GHDEGX", "40"),
        ("LEGDEG", "1000"),
        ("NPIX_Y", "99999999"),
    ] {
        let path = psf_copy(&dir);
        common::set_raw_card(&path, "PSF", key, value);
        let err = read_psf(&path).expect_err(key);
        assert_msg(&err, &path, &[key, value, "plausible range"]);
        assert!(err.is_input_error(), "{err}");
    }
    for value in [1e10, 0.0, -1.0, 0.1] {
        let path = psf_copy(&dir);
        set_psf_param(&path, "GHSIGX", 42, value);
        let err = read_psf(&path).expect_err("absurd GHSIGX");
        assert_msg(&err, &path, &["GHSIGX", "fiber 42", "plausible range"]);
    }
    // A plausible width passes.
    let path = psf_copy(&dir);
    set_psf_param(&path, "GHSIGY", 42, 1.5);
    assert!((read_psf(&path).expect("GHSIGY 1.5").sigma_y.fiber(42)[0] - 1.5).abs() < 1e-12);
}

#[test]
fn sizes_beyond_the_file_are_refused_before_allocating() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A PSF table of 50 million rows (800 GB) in a 1 MB file: an error, not an abort.
    let path = psf_copy(&dir);
    common::set_raw_card(&path, "PSF", "NAXIS2", "50000000");
    let err = read_psf(&path).expect_err("huge table");
    assert!(matches!(err, IoError::TooLarge { .. }), "{err:?}");
    assert_msg(
        &err,
        &path,
        &["PSF", "800800000000 bytes", "truncated file or bad NAXISn"],
    );
    let err = describe(&path).expect_err("info of the huge table");
    assert!(matches!(err, IoError::TooLarge { .. }), "{err:?}");
    // A preproc IMAGE of 99,999,999 rows.
    let pre = dir.path().join("pre.fits");
    write_preproc(&pre, &small_preproc(&pre)).expect("write preproc");
    common::set_raw_card(&pre, "IMAGE", "NAXIS2", "99999999");
    let err = read_preproc(&pre).expect_err("huge image");
    assert!(matches!(err, IoError::TooLarge { .. }), "{err:?}");
    assert_msg(&err, &pre, &["IMAGE", "truncated file"]);
    // A truncated file: the last HDU's data end beyond the end of the file.
    let pre = dir.path().join("pre2.fits");
    write_preproc(&pre, &small_preproc(&pre)).expect("write preproc");
    let psf = psf_copy(&dir);
    let len = std::fs::metadata(&psf).expect("meta").len();
    let bytes = std::fs::read(&psf).expect("read");
    std::fs::write(&psf, &bytes[..(len - 5000) as usize]).expect("truncate");
    let err = read_psf(&psf).expect_err("truncated PSF");
    assert_msg(&err, &psf, &["PSF", "truncated file"]);
}

/// cfitsio divides by ZTILEn when it opens a tile-compressed HDU, and reads `0   66` as 0
/// (SIGFPE, found by the fuzz loop): ZTILEn and ZNAXISn are checked on the raw header first.
#[test]
fn tile_keywords_of_a_compressed_hdu_are_checked_before_cfitsio_opens_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, value, says) in [
        (
            "ZTILE1",
            "0            66",
            "expected one integer >= 1, found \"0            66\"",
        ),
        ("ZTILE2", "0", "expected one integer >= 1, found \"0\""),
        ("ZNAXIS1", "-9", "expected one integer >= 0, found \"-9\""),
    ] {
        let pre = dir.path().join(format!("pre-{key}.fits"));
        write_preproc(&pre, &small_preproc(&pre)).expect("write preproc");
        common::set_raw_card(&pre, "MASK", key, value);
        let err = read_preproc(&pre).expect_err("bad tile keyword");
        assert!(matches!(err, IoError::BadKeyword { .. }), "{err:?}");
        assert_msg(&err, &pre, &["MASK", key, says]);
        let err = describe(&pre).expect_err("info of the bad tile keyword");
        assert_msg(&err, &pre, &["MASK", key]);
    }
}

#[test]
fn unreadable_inputs_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = read_psf(dir.path()).expect_err("a directory");
    assert!(matches!(err, IoError::Unreadable { .. }), "{err:?}");
    assert_msg(&err, dir.path(), &["cannot read", "is a directory"]);
    let path = psf_copy(&dir);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    }
    if std::fs::File::open(&path).is_ok() {
        eprintln!("NOTICE: running as root: permissions do not stop reading, skipping that case");
        return;
    }
    let err = read_psf(&path).expect_err("unreadable");
    assert_msg(&err, &path, &["cannot read", "permission denied"]);
}
