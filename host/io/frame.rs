//! Frame files (`frame-{camera}-{expid}.fits`, docs/algorithm.md §1.3) and model images.

use std::path::Path;

use super::atomic::write_atomically;
use super::checksum;
use super::error::IoError;
use super::fits::{Fits, FitsElem, HduKind, ImgType};
use super::header::{card_name, filter_cards, write_header, Keyword, KeywordValue};
use super::table::{write_table_hdu, FitsTable};
use crate::scores::ScoreColumn;

/// BUNIT of FLUX.
pub const FLUX_UNIT: &str = "electron/Angstrom";
/// The unit of IVAR. Not written in the file: desispec's `write_frame` writes no BUNIT in the
/// IVAR HDU, and neither does desi-extract.
pub const IVAR_UNIT: &str = "Angstrom2/electron2";

/// Extracted spectra of one frame, as written to / read from a frame file.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameData {
    /// `ispec` (relative to the PSF's FIBERMIN) of the first spectrum.
    pub specmin: usize,
    /// Number of spectra.
    pub nspec: usize,
    /// Number of wavelength bins.
    pub nwave: usize,
    /// Number of off-diagonals kept on each side of the resolution matrix (HSIZEY).
    pub ndiag: usize,
    /// Wavelength grid (Angstrom), `(nwave,)`: the raw grid, uncorrected.
    pub wavelength: Vec<f64>,
    /// Flux per Angstrom, `(nspec, nwave)`, wavelength fastest.
    pub flux: Vec<f64>,
    /// Inverse variance of `flux`, `(nspec, nwave)`.
    pub ivar: Vec<f64>,
    /// specmask bits, `(nspec, nwave)`.
    pub mask: Vec<u32>,
    /// Resolution-matrix diagonals, `(nspec, 2*ndiag+1, nwave)`, wavelength fastest.
    pub resolution: Vec<f64>,
    /// chi2pix, `(nspec, nwave)`.
    pub chi2pix: Vec<f64>,
    /// Raw cards passed through from the preproc IMAGE header.
    pub header: Vec<String>,
    /// Keywords added by the extraction (NSPEC, WAVEMIN, WAVEMAX, WAVESTEP, SPECTER, IN_PSF,
    /// IN_IMG, ORIG_PSF, FIBERMIN, HELIOCOR, DEPNAMnn/DEPVERnn, ...). They replace header
    /// cards of the same name.
    pub keywords: Vec<Keyword>,
}

/// Keyword names that [`read_frame`] returns in `keywords` rather than `header` (besides
/// DEPNAMnn/DEPVERnn).
pub const FRAME_KEYWORDS: &[&str] = &[
    "NSPEC", "SPECMIN", "WAVEMIN", "WAVEMAX", "WAVESTEP", "SPECTER", "IN_PSF", "IN_IMG",
    "ORIG_PSF", "FIBERMIN", "HELIOCOR",
];

fn is_frame_keyword(name: &str) -> bool {
    FRAME_KEYWORDS.contains(&name) || name.starts_with("DEPNAM") || name.starts_with("DEPVER")
}

/// A frame's contents to write: the fields of [`FrameData`] with the arrays and header cards
/// borrowed, from a [`FrameData`] ([`FrameData::view`]) or straight from an extraction
/// (`extract::frame_data`), so that writing a frame copies none of its ~135 MB of arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameView<'a> {
    /// As [`FrameData::specmin`].
    pub specmin: usize,
    /// As [`FrameData::nspec`].
    pub nspec: usize,
    /// As [`FrameData::nwave`].
    pub nwave: usize,
    /// As [`FrameData::ndiag`].
    pub ndiag: usize,
    /// As [`FrameData::wavelength`].
    pub wavelength: &'a [f64],
    /// As [`FrameData::flux`].
    pub flux: &'a [f64],
    /// As [`FrameData::ivar`].
    pub ivar: &'a [f64],
    /// As [`FrameData::mask`].
    pub mask: &'a [u32],
    /// As [`FrameData::resolution`].
    pub resolution: &'a [f64],
    /// As [`FrameData::chi2pix`].
    pub chi2pix: &'a [f64],
    /// As [`FrameData::header`].
    pub header: &'a [String],
    /// As [`FrameData::keywords`] (owned: a writer adds its own).
    pub keywords: Vec<Keyword>,
}

impl FrameData {
    /// The frame's contents as a [`FrameView`] (the arrays borrowed, the keywords copied).
    pub fn view(&self) -> FrameView<'_> {
        FrameView {
            specmin: self.specmin,
            nspec: self.nspec,
            nwave: self.nwave,
            ndiag: self.ndiag,
            wavelength: &self.wavelength,
            flux: &self.flux,
            ivar: &self.ivar,
            mask: &self.mask,
            resolution: &self.resolution,
            chi2pix: &self.chi2pix,
            header: &self.header,
            keywords: self.keywords.clone(),
        }
    }

    /// The value of keyword `name` among `keywords`.
    pub fn keyword(&self, name: &str) -> Option<&KeywordValue> {
        find_frame_keyword(&self.keywords, name)
    }
}

/// The value of keyword `name` among `keywords`.
fn find_frame_keyword<'k>(keywords: &'k [Keyword], name: &str) -> Option<&'k KeywordValue> {
    keywords.iter().find(|k| k.name == name).map(|k| &k.value)
}

impl FrameView<'_> {
    /// Checks that every array has the size its shape says.
    fn check(&self, path: &Path) -> Result<(), IoError> {
        let n = self.nspec * self.nwave;
        let nres = self.nspec * (2 * self.ndiag + 1) * self.nwave;
        for (what, len, want) in [
            ("wavelength", self.wavelength.len(), self.nwave),
            ("flux", self.flux.len(), n),
            ("ivar", self.ivar.len(), n),
            ("mask", self.mask.len(), n),
            ("resolution", self.resolution.len(), nres),
            ("chi2pix", self.chi2pix.len(), n),
        ] {
            if len != want {
                return Err(IoError::InvalidInput {
                    path: path.to_path_buf(),
                    detail: format!(
                        "{what} has {len} values, expected {want} (nspec {}, nwave {}, ndiag {})",
                        self.nspec, self.nwave, self.ndiag
                    ),
                });
            }
        }
        Ok(())
    }

    /// The value of keyword `name` among `keywords`.
    pub fn keyword(&self, name: &str) -> Option<&KeywordValue> {
        find_frame_keyword(&self.keywords, name)
    }
}

/// Values converted per piece in [`write_as_f32`] (a reused 1 MB buffer instead of a
/// converted copy of the whole array).
const CONVERT_CHUNK: usize = 1 << 18;

/// Writes f64 `data` into the current f32 image, each value rounded with `as f32` (as a
/// whole converted copy would be), piece by piece.
fn write_as_f32(fits: &mut Fits, data: &[f64]) -> Result<(), IoError> {
    let mut buf: Vec<f32> = Vec::with_capacity(CONVERT_CHUNK.min(data.len()));
    for (i, piece) in data.chunks(CONVERT_CHUNK).enumerate() {
        buf.clear();
        buf.extend(piece.iter().map(|&v| v as f32));
        fits.write_image_at(i * CONVERT_CHUNK, &buf)?;
    }
    Ok(())
}

/// The values of a frame image HDU, as they are stored.
#[derive(Clone, Copy)]
enum ImageValues<'a> {
    /// f64 values stored as f32 (BITPIX -32), rounded with `as f32`.
    AsF32(&'a [f64]),
    /// f64 values (BITPIX -64).
    F64(&'a [f64]),
    /// u32 values (BITPIX 32, BZERO 2^31).
    U32(&'a [u32]),
}

/// How a frame's image data units are written. Both give the same file, byte for byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FrameWriter {
    /// Encoded and summed in one parallel pass, piece by piece, and written as large blocks
    /// ([`checksum::encode_into`], [`Fits::write_data_unit`]).
    #[default]
    Direct,
    /// Converted and written by cfitsio, whose `ffpcks` then reads each data unit back to sum
    /// it (the writer before issue #15).
    Cfitsio,
}

impl FrameWriter {
    /// `DESI_FRAME_WRITER=cfitsio` selects [`FrameWriter::Cfitsio`]; unset or `direct`,
    /// [`FrameWriter::Direct`].
    ///
    /// # Errors
    /// Any other value (named in the message).
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("DESI_FRAME_WRITER") {
            Err(_) => Ok(Self::Direct),
            Ok(v) => match v.trim() {
                "" | "direct" => Ok(Self::Direct),
                "cfitsio" => Ok(Self::Cfitsio),
                other => Err(format!(
                    "DESI_FRAME_WRITER={other:?}: expected direct or cfitsio"
                )),
            },
        }
    }

    /// The name `DESI_FRAME_WRITER` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Cfitsio => "cfitsio",
        }
    }
}

impl ImageValues<'_> {
    fn img_type(self) -> ImgType {
        match self {
            ImageValues::AsF32(_) => ImgType::F32,
            ImageValues::F64(_) => ImgType::F64,
            ImageValues::U32(_) => ImgType::U32,
        }
    }

    /// Writes the values as the current image's data unit, then CHECKSUM/DATASUM.
    fn write(self, fits: &mut Fits, writer: FrameWriter) -> Result<(), IoError> {
        if writer == FrameWriter::Cfitsio {
            match self {
                ImageValues::AsF32(v) => write_as_f32(fits, v)?,
                ImageValues::F64(v) => fits.write_image(v)?,
                ImageValues::U32(v) => fits.write_image(v)?,
            }
            return fits.write_checksum();
        }
        match self {
            ImageValues::AsF32(v) => encode_unit::<1, _, _>(fits, v, checksum::AsF32),
            ImageValues::F64(v) => encode_unit::<2, _, _>(fits, v, checksum::F64),
            ImageValues::U32(v) => encode_unit::<1, _, _>(fits, v, checksum::Unsigned32),
        }
    }
}

/// Writes `values` as the current image's data unit, encoded and summed piece by piece
/// ([`checksum::encode_into`], [`Fits::write_data_unit`]).
fn encode_unit<const K: usize, S, T>(
    fits: &mut Fits,
    values: &[S],
    to_words: impl Fn(S) -> T + Sync + Copy,
) -> Result<(), IoError>
where
    S: Copy + Sync,
    T: checksum::FitsWords<K>,
{
    let size = 4 * K;
    fits.write_data_unit(values.len() * size, |offset, buf| {
        let first = offset / size;
        let src = &values[first..first + buf.len() / size];
        checksum::encode_into(src, buf, to_words)
    })
}

/// An image HDU with EXTNAME, BUNIT (when given), the values and checksums.
fn image_hdu(
    fits: &mut Fits,
    axes: &[usize],
    extname: &str,
    bunit: Option<&str>,
    values: ImageValues,
    writer: FrameWriter,
) -> Result<(), IoError> {
    fits.create_image(values.img_type(), axes)?;
    fits.write_key_str("EXTNAME", extname, "")?;
    if let Some(unit) = bunit {
        fits.write_key_str("BUNIT", unit, "")?;
    }
    values.write(fits, writer)
}

/// [`write_frame_with_scores`] of a [`FrameData`], without a SCORES HDU.
///
/// # Errors
/// As [`write_frame_with_scores`].
pub fn write_frame(
    path: &Path,
    frame: &FrameData,
    fibermap: Option<&FitsTable>,
) -> Result<(), IoError> {
    write_frame_with_scores(path, &frame.view(), fibermap, None)
}

/// The FIBERMAP rows of a frame and the keywords of its FLUX header (as [`write_frame`]
/// writes them: `frame.keywords`, NSPEC and FIBERMIN when absent, SPECMIN, BUNIT
/// `electron/Angstrom`); desispec writes the model image with this header too.
///
/// # Errors
/// A fibermap with too few rows (`path` names the output in the message).
pub fn frame_fibermap_and_keywords(
    path: &Path,
    frame: &FrameView,
    fibermap: Option<&FitsTable>,
) -> Result<(FitsTable, Vec<Keyword>), IoError> {
    let rows = frame.specmin..frame.specmin + frame.nspec;
    let fm = match fibermap {
        Some(table) => table
            .slice_rows(rows.clone())
            .ok_or_else(|| IoError::InvalidInput {
                path: path.to_path_buf(),
                detail: format!(
                    "fibermap has {} rows, cannot take rows {}..{}",
                    table.nrows, rows.start, rows.end
                ),
            })?,
        None => {
            let first = match frame.keyword("FIBERMIN") {
                Some(KeywordValue::Int(v)) if *v >= 0 => *v as usize,
                _ => frame.specmin,
            };
            FitsTable::minimal_fibermap(first..first + frame.nspec, &[])
        }
    };
    let mut keywords = frame.keywords.clone();
    let mut set_default = |kw: Keyword| {
        if !keywords.iter().any(|k| k.name == kw.name) {
            keywords.push(kw);
        }
    };
    set_default(Keyword::int(
        "NSPEC",
        frame.nspec as i64,
        "number of spectra",
    ));
    let fibermin = fm
        .column_i64("FIBER")
        .and_then(|f| f.into_iter().min())
        .unwrap_or(frame.specmin as i64);
    set_default(Keyword::int("FIBERMIN", fibermin, "smallest fiber number"));
    keywords.retain(|k| k.name != "SPECMIN" && k.name != "BUNIT");
    keywords.push(Keyword::int(
        "SPECMIN",
        frame.specmin as i64,
        "first spectrum index relative to PSF FIBERMIN",
    ));
    keywords.push(Keyword::str("BUNIT", FLUX_UNIT, "Flux unit"));
    Ok((fm, keywords))
}

/// Writes a frame file atomically, HDUs in the order of docs/algorithm.md §1.3 (desispec's
/// `write_frame`): FLUX (primary, f4, header = `frame.header` cards + `frame.keywords` +
/// NSPEC/FIBERMIN when absent + SPECMIN + BUNIT), IVAR (f4, no BUNIT, as desispec), MASK (u4: BITPIX 32, BZERO 2147483648), WAVELENGTH (f8), RESOLUTION (f4,
/// NAXIS1 = nwave, NAXIS2 = 2*ndiag+1, NAXIS3 = nspec), FIBERMAP (column descriptions and units
/// carried), CHI2PIX (f4) and, when `scores` is given, SCORES (one float64 column per score,
/// described in its TTYPEn comment, as desispec writes `frame.scores`). Every HDU has EXTNAME
/// and CHECKSUM/DATASUM.
///
/// FIBERMAP: rows `[specmin, specmin+nspec)` of `fibermap` (the preproc's, whole petal), or
/// when None a minimal one (see [`FitsTable::minimal_fibermap`]) for fibers FIBERMIN.. (the
/// FIBERMIN keyword if given, else `specmin`). FIBERMIN, when not among the keywords, is the
/// smallest FIBER of the written fibermap (or `specmin`).
///
/// # Errors
/// Inconsistent shapes, a fibermap with too few rows, invalid header cards or keywords, or a
/// cfitsio/OS failure; no output file is then left (a previous one is untouched).
pub fn write_frame_with_scores(
    path: &Path,
    frame: &FrameView,
    fibermap: Option<&FitsTable>,
    scores: Option<&[ScoreColumn]>,
) -> Result<(), IoError> {
    let writer = FrameWriter::from_env().map_err(|detail| IoError::InvalidInput {
        path: path.to_path_buf(),
        detail,
    })?;
    write_frame_using(writer, path, frame, fibermap, scores)
}

/// [`write_frame_with_scores`] with the image data units written by `writer` (the same file
/// whichever).
///
/// # Errors
/// As [`write_frame_with_scores`].
pub fn write_frame_using(
    writer: FrameWriter,
    path: &Path,
    frame: &FrameView,
    fibermap: Option<&FitsTable>,
    scores: Option<&[ScoreColumn]>,
) -> Result<(), IoError> {
    frame.check(path)?;
    let scores_table = match scores {
        Some(columns) => {
            let defs: Vec<(&str, &str, &[f64])> = columns
                .iter()
                .map(|c| (c.name.as_str(), c.comment.as_str(), c.values.as_slice()))
                .collect();
            let table = FitsTable::from_f64_columns("SCORES", &defs)
                .filter(|t| t.nrows == frame.nspec || columns.is_empty())
                .ok_or_else(|| IoError::InvalidInput {
                    path: path.to_path_buf(),
                    detail: format!(
                        "scores: every column must have nspec = {} values",
                        frame.nspec
                    ),
                })?;
            Some(table)
        }
        None => None,
    };
    let (fm, keywords) = frame_fibermap_and_keywords(path, frame, fibermap)?;

    let (nspec, nwave, ndiag) = (frame.nspec, frame.nwave, frame.ndiag);
    let plane = [nwave, nspec];
    write_atomically(path, |fits| {
        fits.create_image(ImgType::F32, &plane)?;
        fits.write_key_str("EXTNAME", "FLUX", "")?;
        write_header(fits, frame.header, &keywords)?;
        ImageValues::AsF32(frame.flux).write(fits, writer)?;
        let ivar = ImageValues::AsF32(frame.ivar);
        image_hdu(fits, &plane, "IVAR", None, ivar, writer)?;
        let mask = ImageValues::U32(frame.mask);
        image_hdu(fits, &plane, "MASK", None, mask, writer)?;
        let wave = ImageValues::F64(frame.wavelength);
        image_hdu(fits, &[nwave], "WAVELENGTH", Some("Angstrom"), wave, writer)?;
        let axes = [nwave, 2 * ndiag + 1, nspec];
        let resolution = ImageValues::AsF32(frame.resolution);
        image_hdu(fits, &axes, "RESOLUTION", None, resolution, writer)?;
        write_table_hdu(fits, &fm, "FIBERMAP")?;
        let chi2pix = ImageValues::AsF32(frame.chi2pix);
        image_hdu(fits, &plane, "CHI2PIX", None, chi2pix, writer)?;
        if let Some(table) = &scores_table {
            write_table_hdu(fits, table, "SCORES")?;
        }
        Ok(())
    })
}

/// Reads image HDU `name`, checking its axes (FITS order, NAXIS1 first).
fn read_image_hdu<T: FitsElem>(
    fits: &mut Fits,
    name: &str,
    axes: &[usize],
) -> Result<Vec<T>, IoError> {
    fits.require_hdu(name)?;
    let shape = if fits.hdu_kind()? == HduKind::Image {
        fits.image_shape()?
    } else {
        Vec::new()
    };
    if shape != axes {
        return Err(IoError::Shape {
            path: fits.path().to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            detail: format!("expected image axes {axes:?} (NAXIS1 first), found {shape:?}"),
        });
    }
    fits.read_image(axes.iter().product())
}

/// Reads a frame file written by [`write_frame`] (or desispec/GS; MASK of any integer type is
/// converted to u32). The FIBERMAP is not read here (use [`super::read_table`]).
///
/// `keywords` receives the FLUX header cards named in [`FRAME_KEYWORDS`] and DEPNAMnn/
/// DEPVERnn; `header` the other non-structural cards, BUNIT excluded. `specmin` is the SPECMIN
/// keyword (0 when absent).
pub fn read_frame(path: &Path) -> Result<FrameData, IoError> {
    let (mut fits, [nwave, nspec]) = open_2d_image(path, "FLUX", " (nspec, nwave)")?;
    let flux = fits.read_image::<f64>(nspec * nwave)?;
    let cards = fits.cards()?;
    let mut header = Vec::new();
    let mut keywords = Vec::new();
    let mut prev_to_keywords = false;
    for card in filter_cards(&cards, &["BUNIT"]) {
        let name = card_name(&card);
        if name == "CONTINUE" {
            if !prev_to_keywords {
                header.push(card);
            }
            continue;
        }
        prev_to_keywords = false;
        if is_frame_keyword(name) {
            if let Some(kw) = Keyword::from_card(&card) {
                keywords.push(kw);
                prev_to_keywords = true;
                continue;
            }
        }
        header.push(card);
    }
    // Long strings (IN_PSF, IN_IMG paths) may span CONTINUE cards: re-read them in full.
    for kw in &mut keywords {
        if let KeywordValue::Str(s) = &mut kw.value {
            if let Some(full) = fits.key_string(&kw.name)? {
                *s = full;
            }
        }
    }
    let specmin = match keywords
        .iter()
        .find(|k| k.name == "SPECMIN")
        .map(|k| &k.value)
    {
        Some(KeywordValue::Int(v)) if *v >= 0 => *v as usize,
        _ => 0,
    };

    let ivar = read_image_hdu::<f64>(&mut fits, "IVAR", &[nwave, nspec])?;
    let mask = read_image_hdu::<u32>(&mut fits, "MASK", &[nwave, nspec])?;
    let wavelength = read_image_hdu::<f64>(&mut fits, "WAVELENGTH", &[nwave])?;
    fits.require_hdu("RESOLUTION")?;
    let rshape = fits.image_shape()?;
    let ndiag = match rshape[..] {
        [w, nd, s] if w == nwave && s == nspec && nd % 2 == 1 => (nd - 1) / 2,
        _ => {
            return Err(IoError::Shape {
                path: path.to_path_buf(),
                hdu: fits.hdu_label().to_string(),
                detail: format!(
                    "expected axes [nwave {nwave}, 2*ndiag+1, nspec {nspec}], found {rshape:?}"
                ),
            })
        }
    };
    let resolution = fits.read_image::<f64>(nspec * (2 * ndiag + 1) * nwave)?;
    let chi2pix = read_image_hdu::<f64>(&mut fits, "CHI2PIX", &[nwave, nspec])?;
    Ok(FrameData {
        specmin,
        nspec,
        nwave,
        ndiag,
        wavelength,
        flux,
        ivar,
        mask,
        resolution,
        chi2pix,
        header,
        keywords,
    })
}

/// Writes a pixel mask: one int16 image HDU (primary) named `extname`, shape `(ny, nx)`, 1 at
/// the linear indices `pixels` (`row · nx + col`) and 0 elsewhere, with `keywords`, atomically
/// (the outlier rejection's `--rejected-pixels`).
///
/// # Errors
/// A pixel index beyond the image, or a cfitsio/OS failure (no file is then left).
pub fn write_pixel_mask(
    path: &Path,
    ny: usize,
    nx: usize,
    pixels: &[u64],
    extname: &str,
    keywords: &[Keyword],
) -> Result<(), IoError> {
    let mut image = vec![0i16; ny * nx];
    for &p in pixels {
        match usize::try_from(p).ok().and_then(|p| image.get_mut(p)) {
            Some(v) => *v = 1,
            None => {
                return Err(IoError::InvalidInput {
                    path: path.to_path_buf(),
                    detail: format!("pixel {p} outside the {ny}x{nx} image"),
                })
            }
        }
    }
    write_atomically(path, |fits| {
        fits.create_image(ImgType::I16, &[nx, ny])?;
        fits.write_key_str("EXTNAME", extname, "")?;
        write_header(fits, &[], keywords)?;
        fits.write_image(&image)?;
        fits.write_checksum()
    })
}

/// Writes one f64 image HDU (primary) named `extname`, shape `(ny, nx)`, with `keywords`,
/// atomically (the simulator's cosmic-ray truth).
///
/// # Errors
/// `values.len() != ny * nx`, or a cfitsio/OS failure (no file is then left).
pub fn write_image_hdu(
    path: &Path,
    ny: usize,
    nx: usize,
    values: &[f64],
    extname: &str,
    keywords: &[Keyword],
) -> Result<(), IoError> {
    if values.len() != ny * nx {
        return Err(IoError::InvalidInput {
            path: path.to_path_buf(),
            detail: format!("image has {} values, expected {ny}*{nx}", values.len()),
        });
    }
    write_atomically(path, |fits| {
        fits.create_image(ImgType::F64, &[nx, ny])?;
        fits.write_key_str("EXTNAME", extname, "")?;
        write_header(fits, &[], keywords)?;
        fits.write_image(values)?;
        fits.write_checksum()
    })
}

/// Reads the 2-D image of HDU `extname` (any numeric type, converted to f64) and its shape
/// `(ny, nx)`: the images of [`write_image_hdu`] and [`write_pixel_mask`].
///
/// # Errors
/// A missing HDU, an image that is not 2-D, or a cfitsio failure.
pub fn read_image(path: &Path, extname: &str) -> Result<(usize, usize, Vec<f64>), IoError> {
    let (mut fits, [nx, ny]) = open_2d_image(path, extname, "")?;
    let values = fits.read_image::<f64>(nx * ny)?;
    Ok((ny, nx, values))
}

/// Opens `path` at HDU `extname` and returns it with the image's axes `[NAXIS1, NAXIS2]`; an
/// image that is not 2-D is an [`IoError::Shape`] ("expected a 2-D image{layout}, ...").
fn open_2d_image(path: &Path, extname: &str, layout: &str) -> Result<(Fits, [usize; 2]), IoError> {
    let mut fits = Fits::open(path)?;
    fits.require_hdu(extname)?;
    let shape = fits.image_shape()?;
    let [naxis1, naxis2] = shape[..] else {
        return Err(IoError::Shape {
            path: path.to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            detail: format!("expected a 2-D image{layout}, found axes {shape:?}"),
        });
    };
    Ok((fits, [naxis1, naxis2]))
}

/// Writes a model image: one image HDU (primary) with EXTNAME MODEL, f8, shape `(ny, nx)`
/// (NAXIS1 = nx), atomically, with no other keywords (see [`write_model_with_header`]).
///
/// # Errors
/// `model.len() != ny * nx`, or a cfitsio/OS failure (no file is then left).
pub fn write_model(path: &Path, ny: usize, nx: usize, model: &[f64]) -> Result<(), IoError> {
    write_model_with_header(path, ny, nx, model, &[], &[])
}

/// Writes a model image as [`write_model`], its header carrying the frame's: the raw `header`
/// cards and the `keywords` (as [`write_frame`] writes them in FLUX), then BUNIT `electron`
/// (the model is in electrons per CCD pixel; desispec copies the frame's header with its
/// BUNIT `electron/Angstrom`).
///
/// # Errors
/// As [`write_model`], or invalid header cards or keywords.
pub fn write_model_with_header(
    path: &Path,
    ny: usize,
    nx: usize,
    model: &[f64],
    header: &[String],
    keywords: &[Keyword],
) -> Result<(), IoError> {
    if model.len() != ny * nx {
        return Err(IoError::InvalidInput {
            path: path.to_path_buf(),
            detail: format!(
                "model has {} values, expected ny*nx = {ny}*{nx}",
                model.len()
            ),
        });
    }
    let mut keywords = keywords.to_vec();
    keywords.retain(|k| k.name != "BUNIT");
    keywords.push(Keyword::str("BUNIT", "electron", "Model image unit"));
    write_atomically(path, |fits| {
        fits.create_image(ImgType::F64, &[nx, ny])?;
        fits.write_key_str("EXTNAME", "MODEL", "")?;
        write_header(fits, header, &keywords)?;
        fits.write_image(model)?;
        fits.write_checksum()
    })
}
