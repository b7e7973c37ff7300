//! `info`: a human-readable description of a PSF, preproc or frame file.

use std::fmt::Write as _;
use std::path::Path;

use super::error::IoError;
use super::fits::{Fits, HduKind};
use super::frame::read_frame;
use super::header::KeywordValue;
use super::preproc::read_preproc;
use super::psf_file::read_psf;
use crate::stats::median;

/// What kind of DESI file a path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A specex GaussHermite PSF (PSFTYPE, or XTRACE + PSF HDUs).
    Psf,
    /// A preproc image (IMAGE, IVAR, MASK).
    Preproc,
    /// A frame (FLUX, IVAR, MASK, WAVELENGTH, RESOLUTION).
    Frame,
}

struct HduSummary {
    name: String,
    line: String,
}

fn type_name(bitpix: i32) -> &'static str {
    match bitpix {
        8 => "u1",
        16 => "i2",
        20 => "u2",
        32 => "i4",
        40 => "u4",
        64 => "i8",
        -32 => "f4",
        -64 => "f8",
        _ => "?",
    }
}

fn summarize(fits: &mut Fits) -> Result<(Vec<HduSummary>, bool), IoError> {
    let n = fits.num_hdus()?;
    let mut out = Vec::with_capacity(n);
    let mut has_psftype = false;
    for i in 0..n {
        fits.move_to(i)?;
        if i == 0 {
            has_psftype = fits.key_raw("PSFTYPE")?.is_some();
        }
        let name = fits
            .key_string("EXTNAME")?
            .unwrap_or_default()
            .trim()
            .to_string();
        let line = match fits.hdu_kind()? {
            HduKind::Image => {
                let shape = fits.image_shape()?;
                if shape.is_empty() {
                    "header only".to_string()
                } else {
                    let dims: Vec<String> = shape.iter().rev().map(|d| d.to_string()).collect();
                    let ty = type_name(fits.image_equiv_bitpix()?);
                    let comp = if fits.is_compressed() {
                        format!(
                            ", tile-compressed {}",
                            fits.key_string("ZCMPTYPE")?.unwrap_or_default()
                        )
                    } else {
                        String::new()
                    };
                    format!("image {ty} [{}]{comp}", dims.join("]["))
                }
            }
            kind => {
                let nrows = fits.table_nrows()?;
                let ncols = fits.table_ncols()?;
                let k = if kind == HduKind::BinTable {
                    "binary"
                } else {
                    "ASCII"
                };
                format!("{k} table, {nrows} rows x {ncols} columns")
            }
        };
        out.push(HduSummary { name, line });
    }
    Ok((out, has_psftype))
}

/// Classifies the file from its HDU names (and PSFTYPE in the primary header).
pub fn detect(path: &Path) -> Result<FileKind, IoError> {
    let mut fits = Fits::open(path)?;
    let (hdus, has_psftype) = summarize(&mut fits)?;
    classify(path, &hdus, has_psftype)
}

fn classify(path: &Path, hdus: &[HduSummary], has_psftype: bool) -> Result<FileKind, IoError> {
    let has = |n: &str| hdus.iter().any(|h| h.name.eq_ignore_ascii_case(n));
    if has_psftype || (has("XTRACE") && has("PSF")) {
        Ok(FileKind::Psf)
    } else if ["FLUX", "IVAR", "MASK", "WAVELENGTH", "RESOLUTION"]
        .iter()
        .all(|n| has(n))
    {
        Ok(FileKind::Frame)
    } else if has("IVAR") && has("MASK") && (has("IMAGE") || hdus[0].line.starts_with("image")) {
        Ok(FileKind::Preproc)
    } else {
        let names: Vec<&str> = hdus.iter().map(|h| h.name.as_str()).collect();
        Err(IoError::NotDesi {
            path: path.to_path_buf(),
            detail: format!("HDUs {names:?}"),
        })
    }
}

/// The median of the finite values (numpy's), `None` when there are none.
fn finite_median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| median(v))
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.6}"))
}

/// Describes a DESI PSF, preproc or frame file for the `info` command: the HDUs with shapes
/// and types, the key keywords, the wavelength domain, the fibers and (for frames and
/// preprocs) a few statistics. The file is fully read and validated.
///
/// # Errors
/// Anything the readers reject, and [`IoError::NotDesi`] for other FITS files.
pub fn describe(path: &Path) -> Result<String, IoError> {
    let mut fits = Fits::open(path)?;
    let (hdus, has_psftype) = summarize(&mut fits)?;
    let kind = classify(path, &hdus, has_psftype)?;
    let mut s = String::new();
    let label = match kind {
        FileKind::Psf => "DESI GaussHermite PSF",
        FileKind::Preproc => "DESI preproc image",
        FileKind::Frame => "DESI frame",
    };
    let _ = writeln!(s, "{}: {label}", path.display());
    for (i, h) in hdus.iter().enumerate() {
        let _ = writeln!(s, "  HDU {i:<2} {:<12} {}", h.name, h.line);
    }
    // Key keywords of the primary header, when present.
    fits.move_to(0)?;
    let mut keys = Vec::new();
    for key in [
        "CAMERA", "EXPID", "NIGHT", "FLAVOR", "EXPTIME", "RDNOISE", "PSFVER",
    ] {
        if let Some(v) = fits.key_string(key)? {
            keys.push(format!("{key}={}", v.trim()));
        }
    }
    if !keys.is_empty() {
        let _ = writeln!(s, "  keywords: {}", keys.join(" "));
    }
    match kind {
        FileKind::Psf => {
            let psf = read_psf(path)?;
            let _ = writeln!(
                s,
                "  fibers {}..{} ({} spectra); NPIX {} x {} (x by y); HSIZE {} x {}; GHDEG {} x {}; LEGDEG {}",
                psf.fibermin,
                psf.fibermin + psf.nspec.saturating_sub(1),
                psf.nspec,
                psf.npix_x,
                psf.npix_y,
                psf.hsizex,
                psf.hsizey,
                psf.ghdegx,
                psf.ghdegy,
                psf.legdeg
            );
            let _ = writeln!(
                s,
                "  wavelength: traces {}..{} A, PSF parameters {}..{} A; PSFERR {}; tail {}",
                psf.xtrace.wavemin,
                psf.xtrace.wavemax,
                psf.sigma_x.wavemin,
                psf.sigma_x.wavemax,
                psf.psferr,
                if psf.tail.is_some() {
                    "present"
                } else {
                    "absent"
                }
            );
            if let Some(p) = &psf.in_psf {
                let _ = writeln!(s, "  IN_PSF {p}");
            }
        }
        FileKind::Preproc => {
            let img = read_preproc(path)?;
            let rows = super::limits::FIBERS_PER_CAMERA;
            if let Some(fm) = img.fibermap.as_ref().filter(|f| f.nrows != rows) {
                return Err(IoError::Shape {
                    path: path.to_path_buf(),
                    hdu: "FIBERMAP".into(),
                    detail: format!(
                        "{} rows, but a DESI preproc FIBERMAP has one row per fiber of the camera ({rows})",
                        fm.nrows
                    ),
                });
            }
            let n = img.image.len().max(1) as f64;
            let good = img.ivar.iter().filter(|&&v| v > 0.0).count();
            let masked = img.mask.iter().filter(|&&m| m != 0).count();
            let _ = writeln!(
                s,
                "  camera {}; {} rows x {} columns; ivar > 0: {:.4}; mask != 0: {:.4}; median image {}",
                img.camera,
                img.ny,
                img.nx,
                good as f64 / n,
                masked as f64 / n,
                fmt_opt(finite_median(img.image.iter().map(|&v| f64::from(v))))
            );
            let _ = writeln!(
                s,
                "  READNOISE {}; FIBERMAP {}",
                if img.readnoise.is_some() {
                    "present"
                } else {
                    "absent"
                },
                img.fibermap
                    .as_ref()
                    .map_or("absent".to_string(), |f| format!("{} rows", f.nrows))
            );
        }
        FileKind::Frame => {
            let fr = read_frame(path)?;
            let fibermin = match fr.keyword("FIBERMIN") {
                Some(KeywordValue::Int(v)) => v.to_string(),
                _ => "?".into(),
            };
            let (w0, w1) = (
                fr.wavelength.first().copied().unwrap_or(f64::NAN),
                fr.wavelength.last().copied().unwrap_or(f64::NAN),
            );
            let step = if fr.nwave > 1 {
                (w1 - w0) / (fr.nwave - 1) as f64
            } else {
                f64::NAN
            };
            let _ = writeln!(
                s,
                "  nspec {} (FIBERMIN {fibermin}, specmin {}); nwave {}; wavelength {w0}..{w1} A (step {step:.6}); ndiag {}",
                fr.nspec, fr.specmin, fr.nwave, fr.ndiag
            );
            let n = fr.flux.len().max(1) as f64;
            let good = fr.ivar.iter().filter(|&&v| v > 0.0).count();
            let masked = fr.mask.iter().filter(|&&m| m != 0).count();
            let _ = writeln!(
                s,
                "  median flux {}; ivar > 0: {:.4}; mask != 0: {:.4}; median chi2pix {}",
                fmt_opt(finite_median(fr.flux.iter().copied())),
                good as f64 / n,
                masked as f64 / n,
                fmt_opt(finite_median(fr.chi2pix.iter().copied()))
            );
        }
    }
    Ok(s)
}

/// Verifies CHECKSUM/DATASUM of every HDU: `Ok(true)` when all are present and correct,
/// `Ok(false)` when any is absent or wrong.
pub fn checksums_ok(path: &Path) -> Result<bool, IoError> {
    let mut fits = Fits::open(path)?;
    let n = fits.num_hdus()?;
    for i in 0..n {
        fits.move_to(i)?;
        let (data, hdu) = fits.verify_checksum()?;
        if data != 1 || hdu != 1 {
            return Ok(false);
        }
    }
    Ok(true)
}
