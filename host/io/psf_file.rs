//! Reading specex GaussHermite PSF files (docs/algorithm.md §1.1).

use std::collections::HashMap;
use std::path::Path;

use crate::psf::{GaussHermitePsf, LegendreTable};

use super::atomic::write_atomically;
use super::error::IoError;
use super::fits::{Fits, HduKind, ImgType};
use super::header::{write_header, Keyword};
use super::limits::{
    GH_SIGMA_CHECKS, GH_SIGMA_RANGE, HSIZE_RANGE, MAX_CCD_AXIS, MAX_GH_DEGREE, MAX_LEGENDRE_COEFFS,
    MAX_PSF_FIBERS,
};
use super::table::{read_table_hdu, write_table_hdu, FitsTable};

/// PSFERR used when the PSF has no PSFERR keyword (GS and specter default).
pub const DEFAULT_PSFERR: f64 = 0.01;

/// Names of the power-law tail parameters, in the order of `GaussHermitePsf::tail`.
pub const TAIL_PARAMS: [&str; 5] = ["TAILAMP", "TAILCORE", "TAILXSCA", "TAILYSCA", "TAILINDE"];

fn required_f64(fits: &mut Fits, key: &str) -> Result<f64, IoError> {
    fits.key_f64(key)?.ok_or_else(|| IoError::MissingKeyword {
        path: fits.path().to_path_buf(),
        hdu: fits.hdu_label().to_string(),
        key: key.into(),
    })
}

fn required_usize(fits: &mut Fits, key: &str) -> Result<usize, IoError> {
    let v = fits.key_i64(key)?.ok_or_else(|| IoError::MissingKeyword {
        path: fits.path().to_path_buf(),
        hdu: fits.hdu_label().to_string(),
        key: key.into(),
    })?;
    usize::try_from(v).map_err(|_| IoError::BadKeyword {
        path: fits.path().to_path_buf(),
        hdu: fits.hdu_label().to_string(),
        key: key.into(),
        detail: format!("must be >= 0, found {v}"),
    })
}

fn bad_data(fits: &Fits, detail: String) -> IoError {
    IoError::BadData {
        path: fits.path().to_path_buf(),
        hdu: fits.hdu_label().to_string(),
        detail,
    }
}

fn shape_err(fits: &Fits, detail: String) -> IoError {
    IoError::Shape {
        path: fits.path().to_path_buf(),
        hdu: fits.hdu_label().to_string(),
        detail,
    }
}

/// Reads a trace HDU (XTRACE or YTRACE): image `[nfiber][ncoeff]` f64 with its WAVEMIN/WAVEMAX.
fn read_trace(fits: &mut Fits, name: &str) -> Result<LegendreTable, IoError> {
    if !fits.move_to_name(name)? {
        return Err(IoError::MissingHdu {
            path: fits.path().to_path_buf(),
            hdu: name.into(),
        });
    }
    if fits.hdu_kind()? != HduKind::Image {
        return Err(shape_err(fits, "expected an image".into()));
    }
    let shape = fits.image_shape()?;
    let [ncoeff, nfiber] = shape[..] else {
        return Err(shape_err(
            fits,
            format!(
                "expected a 2-D image [nfiber][ncoeff], found NAXIS = {}",
                shape.len()
            ),
        ));
    };
    if ncoeff == 0 || nfiber == 0 {
        return Err(shape_err(fits, format!("empty image {ncoeff} x {nfiber}")));
    }
    if ncoeff > MAX_LEGENDRE_COEFFS || nfiber > MAX_PSF_FIBERS {
        return Err(IoError::TooLarge {
            path: fits.path().to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            detail: format!(
                "{nfiber} fibers x {ncoeff} coefficients: beyond DESI's {MAX_PSF_FIBERS} fibers \
                 and {MAX_LEGENDRE_COEFFS} Legendre coefficients"
            ),
        });
    }
    let wavemin = required_f64(fits, "WAVEMIN")?;
    let wavemax = required_f64(fits, "WAVEMAX")?;
    if !(wavemin.is_finite() && wavemax.is_finite() && wavemax > wavemin) {
        return Err(IoError::BadKeyword {
            path: fits.path().to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            key: "WAVEMAX".into(),
            detail: format!("WAVEMIN {wavemin} must be below WAVEMAX {wavemax}"),
        });
    }
    let coeffs: Vec<f64> = fits.read_image(ncoeff * nfiber)?;
    finite_table(fits, name, (wavemin, wavemax), ncoeff, coeffs)
}

/// A [`LegendreTable`] of `ncoeff` coefficients per fiber, or an error naming `what`, the
/// coefficient and the fiber of the first non-finite one.
fn finite_table(
    fits: &Fits,
    what: &str,
    (wavemin, wavemax): (f64, f64),
    ncoeff: usize,
    coeffs: Vec<f64>,
) -> Result<LegendreTable, IoError> {
    if let Some(i) = coeffs.iter().position(|c| !c.is_finite()) {
        return Err(bad_data(
            fits,
            format!(
                "{what} coefficient {} of fiber {} is {}",
                i % ncoeff,
                i / ncoeff,
                coeffs[i]
            ),
        ));
    }
    Ok(LegendreTable {
        wavemin,
        wavemax,
        ncoeff,
        coeffs,
    })
}

/// Reads a specex GaussHermite PSF file (PSFVER >= 3; docs/algorithm.md §1.1).
///
/// XTRACE (primary or EXTNAME XTRACE) and YTRACE are `[nfiber][ncoeff]` f64 images with
/// their own WAVEMIN/WAVEMAX; every PSF-table parameter uses the PSF HDU's WAVEMIN/WAVEMAX
/// and all LEGDEG+1 stored coefficients (LEGDEGX/LEGDEGW are ignored: the GH-0-0 quirk).
/// Rows of the PSF table are looked up by PARAM name. PSFERR defaults to 0.01.
///
/// # Errors
/// Missing file, not FITS, missing HDU or keyword, PSFTYPE other than GAUSS-HERMITE,
/// PSFVER < 3, inconsistent shapes, non-finite coefficients (naming parameter and fiber).
pub fn read_psf(path: &Path) -> Result<GaussHermitePsf, IoError> {
    let mut fits = Fits::open(path)?;
    fits.move_to(0)?;
    let psftype = fits
        .key_string("PSFTYPE")?
        .ok_or_else(|| IoError::MissingKeyword {
            path: path.to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            key: "PSFTYPE".into(),
        })?;
    if psftype.trim() != "GAUSS-HERMITE" {
        return Err(IoError::BadKeyword {
            path: path.to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            key: "PSFTYPE".into(),
            detail: format!("expected GAUSS-HERMITE, found {psftype:?}"),
        });
    }
    let psfver = fits
        .key_i64("PSFVER")?
        .ok_or_else(|| IoError::MissingKeyword {
            path: path.to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            key: "PSFVER".into(),
        })?;
    if psfver < 3 {
        return Err(IoError::BadKeyword {
            path: path.to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            key: "PSFVER".into(),
            detail: format!("version {psfver} not supported (need >= 3)"),
        });
    }
    let primary_in_psf = fits.key_string("IN_PSF")?;
    let primary_camera = fits.key_string("CAMERA")?;

    let xtrace = read_trace(&mut fits, "XTRACE")?;
    let xtrace_fibermin = fits.key_i64("FIBERMIN")?;
    let ytrace = read_trace(&mut fits, "YTRACE")?;
    let nspec = xtrace.nfiber();
    if ytrace.nfiber() != nspec {
        return Err(shape_err(
            &fits,
            format!("YTRACE has {} fibers, XTRACE {nspec}", ytrace.nfiber()),
        ));
    }

    if !fits.move_to_name("PSF")? {
        return Err(IoError::MissingHdu {
            path: path.to_path_buf(),
            hdu: "PSF".into(),
        });
    }
    let wavemin = required_f64(&mut fits, "WAVEMIN")?;
    let wavemax = required_f64(&mut fits, "WAVEMAX")?;
    if !(wavemin.is_finite() && wavemax.is_finite() && wavemax > wavemin) {
        return Err(IoError::BadKeyword {
            path: path.to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            key: "WAVEMAX".into(),
            detail: format!("WAVEMIN {wavemin} must be below WAVEMAX {wavemax}"),
        });
    }
    let hsizex = required_usize(&mut fits, "HSIZEX")?;
    let hsizey = required_usize(&mut fits, "HSIZEY")?;
    let ghdegx = required_usize(&mut fits, "GHDEGX")?;
    let ghdegy = required_usize(&mut fits, "GHDEGY")?;
    let legdeg = required_usize(&mut fits, "LEGDEG")?;
    let npix_x = required_usize(&mut fits, "NPIX_X")?;
    let npix_y = required_usize(&mut fits, "NPIX_Y")?;
    let in_range = |key: &str, value: usize, range: std::ops::RangeInclusive<usize>, why: &str| {
        if range.contains(&value) {
            Ok(())
        } else {
            Err(IoError::BadKeyword {
                path: path.to_path_buf(),
                hdu: fits.hdu_label().to_string(),
                key: key.into(),
                detail: format!(
                    "{value} is outside the plausible range {}..={} ({why})",
                    range.start(),
                    range.end()
                ),
            })
        }
    };
    let stamp = "the device's stamp limit; DESI's PSFs have HSIZEX 8, HSIZEY 5";
    in_range("HSIZEX", hsizex, HSIZE_RANGE, stamp)?;
    in_range("HSIZEY", hsizey, HSIZE_RANGE, stamp)?;
    let degree = "the device's Hermite limit; DESI's PSFs have 6";
    in_range("GHDEGX", ghdegx, 0..=MAX_GH_DEGREE, degree)?;
    in_range("GHDEGY", ghdegy, 0..=MAX_GH_DEGREE, degree)?;
    let legendre = "specex writes 3 to 9";
    in_range("LEGDEG", legdeg, 0..=MAX_LEGENDRE_COEFFS - 1, legendre)?;
    let ccd = "DESI's CCDs are 4096 to 4128 pixels on a side";
    in_range("NPIX_X", npix_x, 1..=MAX_CCD_AXIS, ccd)?;
    in_range("NPIX_Y", npix_y, 1..=MAX_CCD_AXIS, ccd)?;
    let fibermin = match fits.key_i64("FIBERMIN")?.or(xtrace_fibermin) {
        Some(v) => usize::try_from(v).map_err(|_| IoError::BadKeyword {
            path: path.to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            key: "FIBERMIN".into(),
            detail: format!("must be >= 0, found {v}"),
        })?,
        None => {
            return Err(IoError::MissingKeyword {
                path: path.to_path_buf(),
                hdu: fits.hdu_label().to_string(),
                key: "FIBERMIN".into(),
            })
        }
    };
    if let Some(fibermax) = fits.key_i64("FIBERMAX")? {
        if fibermax - fibermin as i64 + 1 != nspec as i64 {
            return Err(shape_err(
                &fits,
                format!("FIBERMIN..FIBERMAX = {fibermin}..{fibermax} but the traces have {nspec} fibers"),
            ));
        }
    }
    let psferr = fits.key_f64("PSFERR")?.unwrap_or(DEFAULT_PSFERR);
    if !(0.0..=1.0).contains(&psferr) {
        return Err(IoError::BadKeyword {
            path: path.to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            key: "PSFERR".into(),
            detail: format!("{psferr} is outside 0..=1 (a fraction of the model; DESI: 0.01-0.04)"),
        });
    }
    let in_psf = fits.key_string("IN_PSF")?.or(primary_in_psf);
    let camera = match fits.key_string("CAMERA")? {
        Some(c) => Some(c),
        None => primary_camera,
    }
    .map(|c| c.trim().trim_matches('\'').trim().to_lowercase())
    .filter(|c| !c.is_empty());

    let table = read_table_hdu(&mut fits, "PSF")?;
    let ncoeff = legdeg + 1;
    let want = nspec * ncoeff;
    let param_col = table
        .column("PARAM")
        .ok_or_else(|| shape_err(&fits, "no PARAM column".into()))?;
    if param_col.code != 'A' {
        return Err(shape_err(
            &fits,
            format!("PARAM column has TFORM {}", param_col.tform),
        ));
    }
    let coeff_col = table
        .column("COEFF")
        .ok_or_else(|| shape_err(&fits, "no COEFF column".into()))?;
    if coeff_col.code != 'D' || coeff_col.repeat != want {
        return Err(shape_err(
            &fits,
            format!(
                "COEFF has TFORM {}, expected {want}D = nfiber {nspec} x (LEGDEG+1) {ncoeff}",
                coeff_col.tform
            ),
        ));
    }
    let coeff_index = table.columns.iter().position(|c| c.name == coeff_col.name);
    if let Some(ci) = coeff_index {
        if let Some(tdim) = fits.key_string(&format!("TDIM{}", ci + 1))? {
            let dims: Vec<usize> = tdim
                .trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace())
                .split(',')
                .filter_map(|d| d.trim().parse().ok())
                .collect();
            if dims != [ncoeff, nspec] {
                return Err(shape_err(
                    &fits,
                    format!(
                        "COEFF TDIM{} = {tdim}, expected ({ncoeff}, {nspec})",
                        ci + 1
                    ),
                ));
            }
        }
    }
    let names = table
        .column_str("PARAM")
        .ok_or_else(|| shape_err(&fits, "cannot decode PARAM".into()))?;
    let all = table
        .column_f64("COEFF")
        .ok_or_else(|| shape_err(&fits, "cannot decode COEFF".into()))?;
    let rows: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.trim(), i))
        .collect();

    let param = |name: &str| -> Result<LegendreTable, IoError> {
        let Some(&row) = rows.get(name) else {
            return Err(bad_data(
                &fits,
                format!("parameter {name} missing from the PARAM column"),
            ));
        };
        let coeffs = all[row * want..(row + 1) * want].to_vec();
        finite_table(
            &fits,
            &format!("parameter {name}:"),
            (wavemin, wavemax),
            ncoeff,
            coeffs,
        )
    };

    let sigma_x = param("GHSIGX")?;
    let sigma_y = param("GHSIGY")?;
    check_sigma(&fits, "GHSIGX", &sigma_x, fibermin)?;
    check_sigma(&fits, "GHSIGY", &sigma_y, fibermin)?;
    let mut gh = Vec::with_capacity((ghdegx + 1) * (ghdegy + 1));
    for j in 0..=ghdegy {
        for i in 0..=ghdegx {
            gh.push(param(&format!("GH-{i}-{j}"))?);
        }
    }
    let tail = if TAIL_PARAMS.iter().all(|n| rows.contains_key(n)) {
        Some([
            param(TAIL_PARAMS[0])?,
            param(TAIL_PARAMS[1])?,
            param(TAIL_PARAMS[2])?,
            param(TAIL_PARAMS[3])?,
            param(TAIL_PARAMS[4])?,
        ])
    } else {
        None
    };

    Ok(GaussHermitePsf {
        path: path.to_path_buf(),
        xtrace,
        ytrace,
        sigma_x,
        sigma_y,
        gh,
        tail,
        hsizex,
        hsizey,
        ghdegx,
        ghdegy,
        legdeg,
        npix_x,
        npix_y,
        fibermin,
        nspec,
        psferr,
        in_psf,
        camera,
    })
}

/// Refuses a Gaussian width (GHSIGX or GHSIGY) outside [`GH_SIGMA_RANGE`] at any of
/// [`GH_SIGMA_CHECKS`] wavelengths spread over the PSF domain, naming the fiber and wavelength.
fn check_sigma(
    fits: &Fits,
    name: &str,
    table: &LegendreTable,
    fibermin: usize,
) -> Result<(), IoError> {
    use desi_device::psf::legendre::{legendre_sum, normalized_wavelength};
    let (lo, hi) = (table.wavemin, table.wavemax);
    for ispec in 0..table.nfiber() {
        for k in 0..GH_SIGMA_CHECKS {
            let wave = lo + (hi - lo) * k as f64 / (GH_SIGMA_CHECKS - 1) as f64;
            let sigma = legendre_sum(normalized_wavelength(wave, lo, hi), table.fiber(ispec));
            if !GH_SIGMA_RANGE.contains(&sigma) {
                return Err(bad_data(
                    fits,
                    format!(
                        "{name} of fiber {} is {sigma} px at {wave:.1} A, outside the plausible \
                         range {}..={} px (DESI's PSFs: 0.9-1.3 px)",
                        fibermin + ispec,
                        GH_SIGMA_RANGE.start(),
                        GH_SIGMA_RANGE.end()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Writes a GaussHermite PSF (PSFVER 3, docs/algorithm.md §1.1) that [`read_psf`] reads back
/// exactly: XTRACE as the primary image (EXTNAME XTRACE), YTRACE, and the PSF table (PARAM,
/// COEFF `[nfiber][LEGDEG+1]` per row) with GHSIGX, GHSIGY, GH-i-j and, when present, the tail
/// parameters. `keywords` (e.g. CAMERA, a provenance note) go to the primary and PSF headers.
///
/// # Errors
/// Tables whose sizes disagree with the PSF's fiber count or LEGDEG, an invalid keyword, or
/// any cfitsio/OS failure (no file is left behind then).
pub fn write_psf(path: &Path, psf: &GaussHermitePsf, keywords: &[Keyword]) -> Result<(), IoError> {
    let ncoeff = psf.legdeg + 1;
    let want = psf.nspec * ncoeff;
    let invalid = |detail: String| IoError::InvalidInput {
        path: path.to_path_buf(),
        detail,
    };
    for (name, t) in [("XTRACE", &psf.xtrace), ("YTRACE", &psf.ytrace)] {
        if t.nfiber() != psf.nspec || t.ncoeff == 0 {
            return Err(invalid(format!(
                "{name} has {} fibers x {} coefficients for a PSF of {} fibers",
                t.nfiber(),
                t.ncoeff,
                psf.nspec
            )));
        }
    }
    let mut params: Vec<(String, &LegendreTable)> = vec![
        ("GHSIGX".into(), &psf.sigma_x),
        ("GHSIGY".into(), &psf.sigma_y),
    ];
    if psf.gh.len() != (psf.ghdegx + 1) * (psf.ghdegy + 1) {
        return Err(invalid(format!(
            "{} GH tables for GHDEGX {} and GHDEGY {}",
            psf.gh.len(),
            psf.ghdegx,
            psf.ghdegy
        )));
    }
    for (index, table) in psf.gh.iter().enumerate() {
        let (i, j) = (index % (psf.ghdegx + 1), index / (psf.ghdegx + 1));
        params.push((format!("GH-{i}-{j}"), table));
    }
    if let Some(tail) = &psf.tail {
        for (name, table) in TAIL_PARAMS.iter().zip(tail) {
            params.push((name.to_string(), table));
        }
    }
    if let Some((name, t)) = params
        .iter()
        .find(|(_, t)| t.coeffs.len() != want || t.ncoeff != ncoeff)
    {
        return Err(invalid(format!(
            "parameter {name} has {} coefficients ({} per fiber), expected {want} ({ncoeff} per fiber)",
            t.coeffs.len(),
            t.ncoeff
        )));
    }
    let (wavemin, wavemax) = (psf.sigma_x.wavemin, psf.sigma_x.wavemax);
    let name_len = params
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut data = Vec::with_capacity(params.len() * (name_len + 8 * want));
    for (name, table) in &params {
        let mut field = name.as_bytes().to_vec();
        field.resize(name_len, b' ');
        data.extend_from_slice(&field);
        for c in &table.coeffs {
            data.extend_from_slice(&c.to_be_bytes());
        }
    }
    let fibermax = (psf.fibermin + psf.nspec).saturating_sub(1);
    let common = |wmin: f64, wmax: f64| {
        let mut out = vec![
            Keyword::str("PSFTYPE", "GAUSS-HERMITE", "PSF model"),
            Keyword::int("PSFVER", 3, "PSF format version"),
            Keyword::float("WAVEMIN", wmin, "Legendre domain lower end [Angstrom]"),
            Keyword::float("WAVEMAX", wmax, "Legendre domain upper end [Angstrom]"),
            Keyword::int("FIBERMIN", psf.fibermin as i64, "First fiber"),
            Keyword::int("FIBERMAX", fibermax as i64, "Last fiber"),
            Keyword::int("NPIX_X", psf.npix_x as i64, "CCD columns"),
            Keyword::int("NPIX_Y", psf.npix_y as i64, "CCD rows"),
        ];
        if let Some(orig) = &psf.in_psf {
            out.push(Keyword::str("IN_PSF", orig, "Input PSF"));
        }
        out
    };
    let mut table_cards: Vec<String> = common(wavemin, wavemax)
        .into_iter()
        .chain([
            Keyword::int("HSIZEX", psf.hsizex as i64, "Half stamp width"),
            Keyword::int("HSIZEY", psf.hsizey as i64, "Half stamp height"),
            Keyword::int("GHDEGX", psf.ghdegx as i64, "Hermite degree along x"),
            Keyword::int("GHDEGY", psf.ghdegy as i64, "Hermite degree along y"),
            Keyword::int("LEGDEG", psf.legdeg as i64, "Legendre degree"),
            Keyword::float("PSFERR", psf.psferr, "PSF model error"),
            Keyword::str("TDIM2", &format!("({ncoeff},{})", psf.nspec), ""),
        ])
        .chain(keywords.iter().cloned())
        .map(|k| k.card())
        .collect();
    table_cards.retain(|c| !c.is_empty());
    let tform_name = format!("{name_len}A");
    let tform_coeff = format!("{want}D");
    let table = FitsTable::from_parts(
        "PSF",
        &[("PARAM", &tform_name), ("COEFF", &tform_coeff)],
        table_cards,
        params.len(),
        data,
    )
    .ok_or_else(|| invalid("PSF table layout does not add up".into()))?;
    write_atomically(path, |fits| {
        for (index, (name, trace)) in [("XTRACE", &psf.xtrace), ("YTRACE", &psf.ytrace)]
            .into_iter()
            .enumerate()
        {
            fits.create_image(ImgType::F64, &[trace.ncoeff, psf.nspec])?;
            fits.write_key_str("EXTNAME", name, "")?;
            let mut kws = common(trace.wavemin, trace.wavemax);
            if index == 0 {
                kws.extend(keywords.iter().cloned());
            }
            write_header(fits, &[], &kws)?;
            fits.write_image(&trace.coeffs)?;
            fits.write_checksum()?;
        }
        write_table_hdu(fits, &table, "PSF")
    })
}
