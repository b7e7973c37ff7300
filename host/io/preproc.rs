//! Preprocessed CCD images (`preproc-{camera}-{expid}.fits`, docs/algorithm.md §1.2).

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::atomic::write_atomically;
use super::error::IoError;
use super::fits::{Fits, HduKind, ImgType};
use super::header::{card_name, filter_cards, write_header, Keyword};
use super::table::{read_table_hdu, write_table_hdu, FitsTable};
use window::Window;

mod window;

/// A preproc image: IMAGE, IVAR and MASK of one camera, shape `(ny, nx)` row-major
/// (x = column fastest, NAXIS1 = nx).
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocImage {
    /// File it was read from (or will be written to).
    pub path: PathBuf,
    /// Columns (NAXIS1).
    pub nx: usize,
    /// Rows (NAXIS2).
    pub ny: usize,
    /// Pixel values in electrons, `(ny, nx)`.
    pub image: Vec<f32>,
    /// Inverse variance, `(ny, nx)`; finite and >= 0.
    pub ivar: Vec<f32>,
    /// ccdmask bits (stored as int16), `(ny, nx)`.
    pub mask: Vec<i32>,
    /// CAMERA keyword, lower-cased (e.g. `r0`).
    pub camera: String,
    /// Raw cards (up to 80 characters) of the IMAGE header to pass through: structural,
    /// checksum and cfitsio boilerplate cards removed, trailing blanks trimmed on read;
    /// CAMERA, RDNOISE, FLAVOR, EXPID, ... stay here.
    pub header: Vec<String>,
    /// Optional READNOISE image, `(ny, nx)`.
    pub readnoise: Option<Vec<f32>>,
    /// Optional FIBERMAP table, carried byte for byte.
    pub fibermap: Option<FitsTable>,
}

fn shape_err(fits: &Fits, detail: String) -> IoError {
    IoError::Shape {
        path: fits.path().to_path_buf(),
        hdu: fits.hdu_label().to_string(),
        detail,
    }
}

/// Checks that the current HDU is a 2-D image and returns its `(ny, nx)`; `expect` checks the
/// size.
fn image_dims(fits: &mut Fits, expect: Option<(usize, usize)>) -> Result<(usize, usize), IoError> {
    if fits.hdu_kind()? != HduKind::Image {
        return Err(shape_err(fits, "expected an image".into()));
    }
    let shape = fits.image_shape()?;
    let [nx, ny] = shape[..] else {
        return Err(shape_err(
            fits,
            format!(
                "expected a 2-D image, found NAXIS = {} ({shape:?})",
                shape.len()
            ),
        ));
    };
    if let Some((eny, enx)) = expect {
        if (ny, nx) != (eny, enx) {
            return Err(shape_err(
                fits,
                format!("image is {ny} rows x {nx} columns, IMAGE is {eny} x {enx}"),
            ));
        }
    }
    Ok((ny, nx))
}

/// Reads a preproc file: IMAGE (primary, or EXTNAME IMAGE), IVAR, MASK (int16, possibly
/// tile-compressed), optional READNOISE and FIBERMAP.
///
/// # Errors
/// Missing file/HDU, missing CAMERA, shapes that disagree, IVAR not finite or negative, or
/// IMAGE not finite where IVAR > 0 (the message names the HDU and the first bad pixel
/// (row, col)).
pub fn read_preproc(path: &Path) -> Result<PreprocImage, IoError> {
    let reader = PreprocReader::open(path)?;
    let rows = 0..reader.metadata().ny;
    reader.read_rows(rows)
}

/// A preproc file opened for reading in two steps: its metadata (header, CAMERA, shape,
/// FIBERMAP) first, then the pixels of the CCD rows a job needs ([`PreprocReader::read_rows`]).
/// A few bundles over part of the wavelength range then read and check a fraction of the
/// 17-Mpixel planes.
pub struct PreprocReader {
    fits: Fits,
    meta: PreprocImage,
    has_readnoise: bool,
}

impl PreprocReader {
    /// Opens `path` and reads everything but the pixel planes.
    ///
    /// # Errors
    /// Missing file/HDU, missing CAMERA, IMAGE not 2-D, a bad FIBERMAP.
    pub fn open(path: &Path) -> Result<Self, IoError> {
        let mut fits = Fits::open(path)?;
        if !fits.move_to_name("IMAGE")? {
            fits.move_to(0)?;
            if fits.image_shape()?.len() != 2 {
                return Err(IoError::MissingHdu {
                    path: path.to_path_buf(),
                    hdu: "IMAGE".into(),
                });
            }
        }
        let (ny, nx) = image_dims(&mut fits, None)?;
        let cards = fits.cards()?;
        let header = filter_cards(&cards, &[]);
        let camera = fits
            .key_string("CAMERA")?
            .ok_or_else(|| IoError::MissingKeyword {
                path: path.to_path_buf(),
                hdu: fits.hdu_label().to_string(),
                key: "CAMERA".into(),
            })?
            .trim()
            .to_lowercase();
        let has_readnoise = fits.move_to_name("READNOISE")?;
        let fibermap = if fits.move_to_name("FIBERMAP")? {
            Some(read_table_hdu(&mut fits, "FIBERMAP")?)
        } else {
            None
        };
        let meta = PreprocImage {
            path: path.to_path_buf(),
            nx,
            ny,
            image: Vec::new(),
            ivar: Vec::new(),
            mask: Vec::new(),
            camera,
            header,
            readnoise: None,
            fibermap,
        };
        Ok(Self {
            fits,
            meta,
            has_readnoise,
        })
    }

    /// The file's metadata: shape, CAMERA, header cards and FIBERMAP; its pixel planes are
    /// empty.
    pub fn metadata(&self) -> &PreprocImage {
        &self.meta
    }

    /// The metadata, to change before the pixels are read (e.g. a FIBERMAP from another file,
    /// which [`PreprocReader::read_rows`] keeps); the pixel planes it sets are replaced.
    pub fn metadata_mut(&mut self) -> &mut PreprocImage {
        &mut self.meta
    }

    /// Reads rows `rows` (clamped to the image) of IMAGE, IVAR, MASK and READNOISE and checks
    /// them as [`read_preproc`] does. The planes have the full `(ny, nx)` shape; the rows not
    /// read are 0 (IVAR 0: no data) and are not checked. The extraction reads only the rows
    /// its fibers' traces reach (`extract::ccd_rows`).
    ///
    /// # Errors
    /// As [`read_preproc`], for the rows read.
    pub fn read_rows(self, rows: Range<usize>) -> Result<PreprocImage, IoError> {
        self.read_window(rows, 0..usize::MAX)
    }

    /// [`PreprocReader::read_rows`] of the columns `cols` (clamped to the image) of those
    /// rows only: the pixels outside the window are 0 (IVAR 0) and are neither read nor
    /// checked. An extraction on the CPU reads the window its traces' stamps reach
    /// (`extract::ccd_rows` x `extract::ccd_cols`).
    ///
    /// The window's rows are split into one share per thread of the rayon pool, each read
    /// (every plane, on handles of its own: cfitsio is built reentrant) and checked 64 rows at
    /// a time, while they are in cache; planes stored as plain f32 are read straight from the
    /// file (host/io/preproc/window.rs). A file cfitsio inflates as a whole (gzip), or
    /// `DESI_PREPROC_READ=serial`, is read plane after plane on this handle.
    ///
    /// # Errors
    /// As [`read_preproc`], for the pixels read, in the order of a sequential read: IMAGE,
    /// IVAR, their values, MASK, READNOISE.
    pub fn read_window(
        self,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<PreprocImage, IoError> {
        let Self {
            mut fits,
            mut meta,
            has_readnoise,
        } = self;
        let clamp =
            |r: Range<usize>, len: usize| r.start.min(len)..r.end.min(len).max(r.start.min(len));
        let window = Window {
            shape: (meta.ny, meta.nx),
            rows: clamp(rows, meta.ny),
            cols: clamp(cols, meta.nx),
        };
        let planes = window::read_planes(&mut fits, &meta.path, &window, has_readnoise)?;
        meta.image = planes.image;
        meta.ivar = planes.ivar;
        meta.mask = planes.mask;
        meta.readnoise = planes.readnoise;
        Ok(meta)
    }
}

/// Whether [`PreprocReader::read_window`] (and `read_rows`) reads the rows in shares on the
/// threads of the rayon pool (the default) or plane after plane on the calling thread
/// (`DESI_PREPROC_READ=serial`, the reader before issue #15).
pub fn preproc_planes_in_parallel() -> bool {
    std::env::var("DESI_PREPROC_READ").map_or(true, |v| v.trim() != "serial")
}

fn check_len(path: &Path, what: &str, len: usize, want: usize) -> Result<(), IoError> {
    if len == want {
        Ok(())
    } else {
        Err(IoError::InvalidInput {
            path: path.to_path_buf(),
            detail: format!("{what} has {len} values, expected ny*nx = {want}"),
        })
    }
}

/// Writes a preproc file (used by the simulator), atomically: IMAGE f32 primary with
/// EXTNAME IMAGE and the header cards (plus CAMERA from `img.camera` when the cards have
/// none), IVAR f32, MASK int16 tile-compressed with RICE_1 (rows as tiles), optional
/// READNOISE f32 and FIBERMAP. Every HDU carries CHECKSUM/DATASUM.
///
/// # Errors
/// Inconsistent array sizes, mask values outside int16, invalid header cards, or any
/// cfitsio/OS failure; the output file is then absent (a previous one is untouched).
pub fn write_preproc(path: &Path, img: &PreprocImage) -> Result<(), IoError> {
    let n = img.nx * img.ny;
    check_len(path, "image", img.image.len(), n)?;
    check_len(path, "ivar", img.ivar.len(), n)?;
    check_len(path, "mask", img.mask.len(), n)?;
    if let Some(rn) = &img.readnoise {
        check_len(path, "readnoise", rn.len(), n)?;
    }
    let mask16: Vec<i16> = img
        .mask
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            i16::try_from(m).map_err(|_| IoError::InvalidInput {
                path: path.to_path_buf(),
                detail: format!(
                    "mask value {m} at (row {}, col {}) does not fit int16",
                    i / img.nx.max(1),
                    i % img.nx.max(1)
                ),
            })
        })
        .collect::<Result<_, _>>()?;
    let axes = [img.nx, img.ny];
    write_atomically(path, |fits| {
        fits.create_image(ImgType::F32, &axes)?;
        fits.write_key_str("EXTNAME", "IMAGE", "")?;
        let mut keywords = Vec::new();
        if !img.header.iter().any(|c| card_name(c) == "CAMERA") {
            keywords.push(Keyword::str("CAMERA", &img.camera, "camera"));
        }
        write_header(fits, &img.header, &keywords)?;
        fits.write_image(&img.image)?;
        fits.write_checksum()?;

        fits.create_image(ImgType::F32, &axes)?;
        fits.write_key_str("EXTNAME", "IVAR", "")?;
        fits.write_image(&img.ivar)?;
        fits.write_checksum()?;

        fits.set_rice_compression(true)?;
        fits.create_image(ImgType::I16, &axes)?;
        fits.set_rice_compression(false)?;
        fits.write_key_str("EXTNAME", "MASK", "")?;
        fits.write_image(&mask16)?;
        fits.write_checksum()?;

        if let Some(rn) = &img.readnoise {
            fits.create_image(ImgType::F32, &axes)?;
            fits.write_key_str("EXTNAME", "READNOISE", "")?;
            fits.write_image(rn)?;
            fits.write_checksum()?;
        }
        if let Some(fm) = &img.fibermap {
            write_table_hdu(fits, fm, "FIBERMAP")?;
        }
        Ok(())
    })
}
