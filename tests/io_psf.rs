//! PSF file parsing on the shared specex PSF (docs/algorithm.md §1.1).

mod common;

use std::path::Path;

use desi_extract::io::{describe, read_psf, DEFAULT_PSFERR};
use fitsio::FitsFile;

use common::PSF_PATH as PSF;

/// Reads COEFF element `elem` (0-based, [fiber][k] flattened) of the row whose PARAM is
/// `param`, with cfitsio's own column reader (independent of desi_extract's byte decoding).
fn raw_coeff(param: &str, elem: usize) -> f64 {
    let mut f = FitsFile::open(PSF).expect("open PSF");
    let hdu = f.hdu("PSF").expect("PSF HDU");
    let names: Vec<String> = hdu.read_col(&mut f, "PARAM").expect("PARAM");
    let row = names
        .iter()
        .position(|n| n.trim() == param)
        .expect("param row");
    let mut value = 0.0f64;
    let mut anynul = 0;
    let mut status = 0;
    let mut colnum = 0;
    let tmpl = std::ffi::CString::new("COEFF").unwrap();
    // SAFETY: valid open file positioned at the PSF HDU; out-pointers are valid; one element
    // is read into `value`.
    unsafe {
        let fptr = f.as_raw();
        fitsio::sys::ffgcno(fptr, 0, tmpl.as_ptr() as *mut _, &mut colnum, &mut status);
        fitsio::sys::ffgcv(
            fptr,
            fitsio::sys::TDOUBLE as i32,
            colnum,
            row as i64 + 1,
            elem as i64 + 1,
            1,
            std::ptr::null_mut(),
            &mut value as *mut f64 as *mut _,
            &mut anynul,
            &mut status,
        );
    }
    assert_eq!(status, 0, "cfitsio status reading {param}[{elem}]");
    value
}

/// Reads image element (fiber, k) of XTRACE/YTRACE with the safe fitsio API.
fn raw_trace(hdu_name: &str, fiber: usize, k: usize) -> f64 {
    let mut f = FitsFile::open(PSF).expect("open PSF");
    let hdu = f.hdu(hdu_name).expect("trace HDU");
    let data: Vec<f64> = hdu.read_image(&mut f).expect("trace image");
    data[fiber * 7 + k]
}

#[test]
fn psf_header_values_and_shapes() {
    let psf = read_psf(Path::new(PSF)).expect("read shared PSF");
    assert_eq!(psf.nspec, 500);
    assert_eq!(psf.xtrace.ncoeff, 7);
    assert_eq!(psf.xtrace.nfiber(), 500);
    assert_eq!(psf.ytrace.ncoeff, 7);
    assert_eq!(psf.ytrace.nfiber(), 500);
    // Trace domain 5543..7826 vs PSF HDU 5543..7827 (docs/algorithm.md §1.1: each HDU its own
    // domain).
    assert_eq!((psf.xtrace.wavemin, psf.xtrace.wavemax), (5543.0, 7826.0));
    assert_eq!((psf.ytrace.wavemin, psf.ytrace.wavemax), (5543.0, 7826.0));
    assert_eq!((psf.sigma_x.wavemin, psf.sigma_x.wavemax), (5543.0, 7827.0));
    assert_eq!((psf.gh[48].wavemin, psf.gh[48].wavemax), (5543.0, 7827.0));
    assert_eq!(psf.legdeg, 3);
    assert_eq!((psf.hsizex, psf.hsizey), (8, 5));
    assert_eq!((psf.ghdegx, psf.ghdegy), (6, 6));
    assert_eq!((psf.npix_x, psf.npix_y), (4114, 4128));
    assert_eq!(psf.fibermin, 0);
    assert_eq!(psf.psferr, DEFAULT_PSFERR);
    assert_eq!(psf.psferr, 0.01);
    assert_eq!(psf.in_psf, None);
    assert_eq!(psf.gh.len(), 49);
    for t in psf.gh.iter().chain([&psf.sigma_x, &psf.sigma_y]) {
        assert_eq!(t.ncoeff, 4);
        assert_eq!(t.nfiber(), 500);
    }
    let tail = psf.tail.as_ref().expect("TAIL* rows present in 51060");
    // TAILAMP == 0 for every fiber (docs/algorithm.md §1.1).
    assert!(tail[0].coeffs.iter().all(|&c| c == 0.0));
}

#[test]
fn gh00_quirk_higher_coefficients_copy_ghsigy() {
    let psf = read_psf(Path::new(PSF)).expect("read shared PSF");
    let gh00 = &psf.gh[0];
    for fiber in 0..500 {
        let a = gh00.fiber(fiber);
        let b = psf.sigma_y.fiber(fiber);
        assert_eq!(a[0], 1.0, "fiber {fiber}: GH-0-0 constant term");
        // Exact copies in the file, so exact equality.
        assert_eq!(
            &a[1..4],
            &b[1..4],
            "fiber {fiber}: GH-0-0[1..3] vs GHSIGY[1..3]"
        );
    }
}

#[test]
fn coefficient_layout_is_fiber_major() {
    let psf = read_psf(Path::new(PSF)).expect("read shared PSF");
    // GH-i-j lives at index j*(ghdegx+1)+i; element (fiber, k) at fiber*(LEGDEG+1)+k in the
    // file row. Values are copied, not computed: exact equality.
    for (param, table, fiber, k) in [
        ("GHSIGX", &psf.sigma_x, 0, 0),
        ("GHSIGY", &psf.sigma_y, 137, 2),
        ("GH-2-1", &psf.gh[7 + 2], 250, 1),
        ("GH-1-2", &psf.gh[2 * 7 + 1], 499, 3),
        ("GH-6-6", &psf.gh[48], 321, 3),
    ] {
        let expect = raw_coeff(param, fiber * 4 + k);
        assert_eq!(table.fiber(fiber)[k], expect, "{param} fiber {fiber} k {k}");
    }
    for (hdu, table, fiber, k) in [
        ("XTRACE", &psf.xtrace, 0, 0),
        ("XTRACE", &psf.xtrace, 411, 5),
        ("YTRACE", &psf.ytrace, 499, 6),
    ] {
        assert_eq!(
            table.fiber(fiber)[k],
            raw_trace(hdu, fiber, k),
            "{hdu} ({fiber},{k})"
        );
    }
    // Sanity of the physics ranges from docs/algorithm.md §1.1 (GHSIGX in [1.00, 1.09] on the r
    // grid): the constant term of GHSIGX is a mean sigma, so it lies in a slightly wider band.
    assert!(psf
        .sigma_x
        .coeffs
        .chunks(4)
        .all(|c| (0.9..1.2).contains(&c[0])));
}

#[test]
fn describe_psf() {
    let text = describe(Path::new(PSF)).expect("describe PSF");
    assert!(text.contains("GaussHermite PSF"), "{text}");
    assert!(text.contains("XTRACE") && text.contains("YTRACE") && text.contains("PSF"));
    assert!(text.contains("LEGDEG 3"), "{text}");
    assert!(text.contains("7827"), "{text}");
}
