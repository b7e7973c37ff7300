//! The pixels of a preproc window ([`super::PreprocReader::read_window`]): the window's rows
//! split into one share per thread of the rayon pool, each share reading every plane on
//! handles of its own (cfitsio is built reentrant) and checking the values
//! [`ROWS_PER_PIECE`] rows at a time, while they are in cache. Planes stored as plain f32
//! (IMAGE, IVAR, READNOISE of a regular file) are read straight from the file and converted
//! from big-endian on the way; the others (the tile-compressed MASK) through cfitsio. A file
//! cfitsio inflates as a whole (gzip), or `DESI_PREPROC_READ=serial`, is read plane after plane
//! on one handle. Errors are those a sequential read reports first ([`check_outcomes`]).

use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::super::error::IoError;
use super::super::fits::Fits;
use super::{image_dims, preproc_planes_in_parallel};

/// Reads and checks the window `window` of the planes of the preproc open in `fits` (at
/// `path`; READNOISE when `has_readnoise`) into zeroed `(ny, nx)` planes.
///
/// # Errors
/// As [`super::read_preproc`], for the pixels of the window, in the order of a sequential
/// read: IMAGE, IVAR, their values, MASK, READNOISE.
pub(super) fn read_planes(
    fits: &mut Fits,
    path: &Path,
    window: &Window,
    has_readnoise: bool,
) -> Result<Planes, IoError> {
    move_to_image(fits)?;
    let n = window.shape.0.saturating_mul(window.shape.1);
    let mut planes = Planes {
        image: fits.alloc_zeroed::<f32>(n)?,
        ivar: fits.alloc_zeroed::<f32>(n)?,
        mask: fits.alloc_zeroed::<i32>(n)?,
        readnoise: has_readnoise
            .then(|| fits.alloc_zeroed::<f32>(n))
            .transpose()?,
    };
    let layouts = PlaneLayouts::probe(fits, path, window.shape, has_readnoise);
    let one_handle = fits.is_read_as_a_whole() || !preproc_planes_in_parallel();
    let nshare = if one_handle {
        1
    } else {
        rayon::current_num_threads()
    };
    let shares = planes.shares(window, nshare);
    let outcomes: Vec<ShareOutcome> = if one_handle {
        let mut handles = PlaneHandles::Shared(fits, None);
        shares
            .into_iter()
            .map(|share| share.read(&mut handles, &layouts, window, usize::MAX))
            .collect()
    } else {
        shares
            .into_par_iter()
            .map(|share| {
                let mut handles = PlaneHandles::Own(path, Default::default());
                share.read(&mut handles, &layouts, window, ROWS_PER_PIECE)
            })
            .collect()
    };
    check_outcomes(outcomes, &layouts, &planes, window, path)?;
    Ok(planes)
}

/// Rows of every plane that a share of [`super::PreprocReader::read_window`] reads and checks
/// at a time (~1 MB of a full-width f32 plane: still in cache when checked).
const ROWS_PER_PIECE: usize = 64;

/// Moves to the IMAGE HDU: EXTNAME IMAGE, else the primary HDU.
fn move_to_image(fits: &mut Fits) -> Result<(), IoError> {
    if !fits.move_to_name("IMAGE")? {
        fits.move_to(0)?;
    }
    Ok(())
}

/// The pixel planes of a preproc, in the order a sequential read takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plane {
    Image,
    Ivar,
    Mask,
    Readnoise,
}

impl Plane {
    const ALL: [Plane; 4] = [Plane::Image, Plane::Ivar, Plane::Mask, Plane::Readnoise];

    /// The plane's EXTNAME.
    fn extname(self) -> &'static str {
        match self {
            Plane::Image => "IMAGE",
            Plane::Ivar => "IVAR",
            Plane::Mask => "MASK",
            Plane::Readnoise => "READNOISE",
        }
    }

    /// Moves `fits` to the plane's HDU (IMAGE as [`move_to_image`]).
    fn move_to(self, fits: &mut Fits) -> Result<(), IoError> {
        match self {
            Plane::Image => move_to_image(fits),
            _ => fits.require_hdu(self.extname()),
        }
    }
}

/// The rows and columns read of a `(ny, nx)` image (clamped to it).
pub(super) struct Window {
    /// The image's `(ny, nx)`.
    pub(super) shape: (usize, usize),
    /// The rows read.
    pub(super) rows: Range<usize>,
    /// The columns read of each row.
    pub(super) cols: Range<usize>,
}

impl Window {
    /// The window's pixels of rows `rows` as ranges of a buffer whose first row is `first`:
    /// whole rows when every column is read, else one range per row.
    fn segments(&self, rows: Range<usize>, first: usize) -> impl Iterator<Item = Range<usize>> {
        let (nx, cols) = (self.shape.1, self.cols.clone());
        let whole = cols.start == 0 && cols.end == nx;
        let (start, end) = (rows.start - first, rows.end - first);
        if whole {
            Box::new(std::iter::once(start * nx..end * nx)) as Box<dyn Iterator<Item = _>>
        } else {
            Box::new((start..end).map(move |r| r * nx + cols.start..r * nx + cols.end))
        }
    }

    /// The window's pixels, as ranges of a whole plane.
    fn all_segments(&self) -> impl Iterator<Item = Range<usize>> {
        self.segments(self.rows.clone(), 0)
    }
}

/// The pixel planes being read, `(ny, nx)` each.
pub(super) struct Planes {
    /// IMAGE.
    pub(super) image: Vec<f32>,
    /// IVAR.
    pub(super) ivar: Vec<f32>,
    /// MASK.
    pub(super) mask: Vec<i32>,
    /// READNOISE, when the file has one.
    pub(super) readnoise: Option<Vec<f32>>,
}

impl Planes {
    /// The window's rows split into `n` shares of consecutive rows (at least one, maybe
    /// empty), each with its rows of every plane.
    fn shares(&mut self, window: &Window, n: usize) -> Vec<RowShare<'_>> {
        let nx = window.shape.1;
        let rows = window.rows.clone();
        let per_share = rows.len().div_ceil(n.max(1)).max(1);
        let span = rows.start * nx..rows.end * nx;
        let step = (per_share * nx).max(1);
        let mut image = self.image[span.clone()].chunks_mut(step);
        let mut ivar = self.ivar[span.clone()].chunks_mut(step);
        let mut mask = self.mask[span.clone()].chunks_mut(step);
        let mut readnoise = self.readnoise.as_mut().map(|p| p[span].chunks_mut(step));
        let mut shares = Vec::new();
        let mut first = rows.start;
        while let (Some(image), Some(ivar), Some(mask)) = (image.next(), ivar.next(), mask.next()) {
            let last = first + image.len() / nx.max(1);
            shares.push(RowShare {
                rows: first..last,
                image,
                ivar,
                mask,
                readnoise: readnoise.as_mut().and_then(Iterator::next),
            });
            first = last;
        }
        if shares.is_empty() {
            // No rows: the HDUs are still looked at (and their shapes checked).
            shares.push(RowShare {
                rows: rows.clone(),
                image: &mut [],
                ivar: &mut [],
                mask: &mut [],
                readnoise: None,
            });
        }
        shares
    }
}

/// One share of a window: its rows and their part of each plane (`(rows.len(), nx)`).
struct RowShare<'a> {
    rows: Range<usize>,
    image: &'a mut [f32],
    ivar: &'a mut [f32],
    mask: &'a mut [i32],
    readnoise: Option<&'a mut [f32]>,
}

/// Where a share reads each plane: handles of its own (opened when first needed), or one
/// handle moved from HDU to HDU (and the plane it is at).
enum PlaneHandles<'a> {
    Own(&'a Path, Box<[Option<Fits>; 4]>),
    Shared(&'a mut Fits, Option<Plane>),
}

impl PlaneHandles<'_> {
    /// A handle at `plane`'s HDU, its shape checked against `shape` when first reached.
    fn at(&mut self, plane: Plane, shape: (usize, usize)) -> Result<&mut Fits, IoError> {
        match self {
            PlaneHandles::Own(path, handles) => {
                let slot = &mut handles[plane as usize];
                if slot.is_none() {
                    let mut fits = Fits::open(path)?;
                    plane.move_to(&mut fits)?;
                    image_dims(&mut fits, Some(shape))?;
                    *slot = Some(fits);
                }
                slot.as_mut().ok_or_else(|| unreachable_handle(path))
            }
            PlaneHandles::Shared(fits, at) => {
                if *at != Some(plane) {
                    *at = None;
                    plane.move_to(fits)?;
                    image_dims(fits, Some(shape))?;
                    *at = Some(plane);
                }
                Ok(&mut **fits)
            }
        }
    }
}

/// The error of a handle slot found empty right after it was filled (cannot happen).
fn unreachable_handle(path: &Path) -> IoError {
    IoError::InvalidInput {
        path: path.to_path_buf(),
        detail: "internal: plane handle missing".into(),
    }
}

/// What a share found: each plane's first read error, and whether every value it read passes
/// the checks of [`super::read_preproc`].
struct ShareOutcome {
    errors: [Option<IoError>; 4],
    ivar_ok: bool,
    pixels_ok: bool,
}

/// Values of a plain f32 plane read from the file at a time (1 MB).
const DIRECT_CHUNK: usize = 1 << 18;

/// What [`super::PreprocReader::read_window`] learns of the planes' HDUs before the shares read them
/// (through one handle; a plane it cannot look at is left to the shares, which report why):
/// the labels of IMAGE and IVAR for the messages, and the file with where the data of each
/// plane stored as plain f32 start ([`Fits::plain_f32_data_start`]): those are read straight
/// from the file and converted while in cache, not by cfitsio into the plane then swapped
/// there.
struct PlaneLayouts {
    labels: [String; 2],
    path: PathBuf,
    file: Option<std::fs::File>,
    plain_f32: [Option<u64>; 4],
}

/// A plane stored as plain f32: the file and where its data unit starts.
#[derive(Clone, Copy)]
struct PlainPlane<'a> {
    file: &'a std::fs::File,
    start: u64,
    path: &'a Path,
}

impl PlaneLayouts {
    /// Looks at the planes of `fits` (shape `shape`; READNOISE when `has_readnoise`).
    fn probe(fits: &mut Fits, path: &Path, shape: (usize, usize), has_readnoise: bool) -> Self {
        let mut layouts = PlaneLayouts {
            labels: Default::default(),
            path: path.to_path_buf(),
            file: None,
            plain_f32: [None; 4],
        };
        for plane in [Plane::Image, Plane::Ivar, Plane::Readnoise] {
            if plane == Plane::Readnoise && !has_readnoise {
                continue;
            }
            let start = plane
                .move_to(fits)
                .and_then(|()| image_dims(fits, Some(shape)))
                .and_then(|_| fits.plain_f32_data_start());
            if let Some(label) = layouts.labels.get_mut(plane as usize) {
                *label = fits.hdu_label().to_string();
            }
            layouts.plain_f32[plane as usize] = start.ok().flatten();
        }
        if layouts.plain_f32.iter().any(Option::is_some) {
            layouts.file = std::fs::File::open(path).ok();
        }
        layouts
    }

    /// Where `plane` is read from when it is read straight from the file.
    fn plain(&self, plane: Plane) -> Option<PlainPlane<'_>> {
        Some(PlainPlane {
            file: self.file.as_ref()?,
            start: self.plain_f32[plane as usize]?,
            path: &self.path,
        })
    }
}

/// Reads `out.len()` values of the plain f32 plane `plain` from element `first` (big-endian
/// in the file), [`DIRECT_CHUNK`] values at a time through `buf`: the bits cfitsio would give.
fn read_plain_f32(
    plain: PlainPlane,
    first: usize,
    out: &mut [f32],
    buf: &mut Vec<u8>,
) -> Result<(), IoError> {
    use std::os::unix::fs::FileExt;
    for (k, chunk) in out.chunks_mut(DIRECT_CHUNK).enumerate() {
        buf.resize(4 * chunk.len(), 0);
        let offset = plain.start + 4 * (first + k * DIRECT_CHUNK) as u64;
        plain
            .file
            .read_exact_at(buf, offset)
            .map_err(|source| IoError::Io {
                path: plain.path.to_path_buf(),
                op: "read image data",
                source,
            })?;
        for (v, bytes) in chunk.iter_mut().zip(buf.chunks_exact(4)) {
            *v = f32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
    }
    Ok(())
}

impl RowShare<'_> {
    /// Reads the share's rows of every plane, `piece` rows at a time (every plane of a piece,
    /// then its checks), through `handles`. A plane that fails is not read further; the
    /// others are.
    fn read(
        mut self,
        handles: &mut PlaneHandles,
        layouts: &PlaneLayouts,
        window: &Window,
        piece: usize,
    ) -> ShareOutcome {
        let mut outcome = ShareOutcome {
            errors: Default::default(),
            ivar_ok: true,
            pixels_ok: true,
        };
        let rows = self.rows.clone();
        let mut start = rows.start;
        let mut buf = Vec::new();
        loop {
            let end = rows.end.min(start.saturating_add(piece.max(1)));
            for plane in Plane::ALL {
                if outcome.errors[plane as usize].is_none() {
                    let read = match layouts.plain(plane) {
                        Some(plain) => self.read_plain(plain, plane, window, start..end, &mut buf),
                        None => self.read_plane(handles, plane, window, start..end),
                    };
                    if let Err(e) = read {
                        outcome.errors[plane as usize] = Some(e);
                    }
                }
            }
            if outcome.errors[..2].iter().all(Option::is_none) {
                let (ivar_ok, pixels_ok) = self.check(window, start..end);
                outcome.ivar_ok &= ivar_ok;
                outcome.pixels_ok &= pixels_ok;
            }
            if end >= rows.end {
                break;
            }
            start = end;
        }
        outcome
    }

    /// The share's part of the f32 plane `plane` (not MASK).
    fn f32_plane(&mut self, plane: Plane) -> Option<&mut [f32]> {
        match plane {
            Plane::Image => Some(self.image),
            Plane::Ivar => Some(self.ivar),
            Plane::Readnoise => self.readnoise.as_deref_mut(),
            Plane::Mask => None,
        }
    }

    /// Reads rows `rows` of the window of the plain f32 plane `plane` straight from the file
    /// ([`read_plain_f32`]).
    fn read_plain(
        &mut self,
        plain: PlainPlane,
        plane: Plane,
        window: &Window,
        rows: Range<usize>,
        buf: &mut Vec<u8>,
    ) -> Result<(), IoError> {
        let first = self.rows.start * window.shape.1;
        let segments = window.segments(rows, self.rows.start);
        let Some(values) = self.f32_plane(plane) else {
            return Ok(());
        };
        for segment in segments {
            let at = first + segment.start;
            read_plain_f32(plain, at, &mut values[segment], buf)?;
        }
        Ok(())
    }

    /// Reads rows `rows` of the window of `plane` into the share's part of it.
    fn read_plane(
        &mut self,
        handles: &mut PlaneHandles,
        plane: Plane,
        window: &Window,
        rows: Range<usize>,
    ) -> Result<(), IoError> {
        let first = self.rows.start;
        let nx = window.shape.1;
        let fits = match (plane, &self.readnoise) {
            (Plane::Readnoise, None) => return Ok(()),
            _ => handles.at(plane, window.shape)?,
        };
        for segment in window.segments(rows, first) {
            let at = first * nx + segment.start;
            match plane {
                Plane::Image => fits.read_image_into(at, &mut self.image[segment])?,
                Plane::Ivar => fits.read_image_into(at, &mut self.ivar[segment])?,
                Plane::Mask => fits.read_image_into(at, &mut self.mask[segment])?,
                Plane::Readnoise => {
                    if let Some(readnoise) = self.readnoise.as_deref_mut() {
                        fits.read_image_into(at, &mut readnoise[segment])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether every IVAR value of rows `rows` of the window is finite and >= 0, and every
    /// IMAGE value is finite where IVAR > 0 (branch-free passes, vectorized).
    fn check(&self, window: &Window, rows: Range<usize>) -> (bool, bool) {
        let (mut ivar_ok, mut pixels_ok) = (true, true);
        for s in window.segments(rows, self.rows.start) {
            let (image, ivar) = (&self.image[s.clone()], &self.ivar[s]);
            ivar_ok &= ivar.iter().fold(true, |ok, &v| ok & ivar_value_ok(v));
            pixels_ok &= image
                .iter()
                .zip(ivar)
                .fold(true, |ok, (&v, &iv)| ok & pixel_value_ok(v, iv));
        }
        (ivar_ok, pixels_ok)
    }
}

/// An IVAR value [`super::read_preproc`] accepts: finite and >= 0.
fn ivar_value_ok(v: f32) -> bool {
    (0.0..f32::INFINITY).contains(&v)
}

/// An IMAGE value [`super::read_preproc`] accepts where IVAR is `iv`: finite, unless IVAR <= 0.
fn pixel_value_ok(v: f32, iv: f32) -> bool {
    (iv <= 0.0) | (v.abs() < f32::INFINITY)
}

/// The verdict on the shares of a window, as a sequential read gives it: the first read error
/// of IMAGE, then of IVAR, then the first bad IVAR value, the first bad IMAGE value (in pixel
/// order), then the first read error of MASK and of READNOISE.
fn check_outcomes(
    outcomes: Vec<ShareOutcome>,
    layouts: &PlaneLayouts,
    planes: &Planes,
    window: &Window,
    path: &Path,
) -> Result<(), IoError> {
    let mut errors: [Vec<IoError>; 4] = Default::default();
    let (mut ivar_ok, mut pixels_ok) = (true, true);
    for outcome in outcomes {
        for (plane, error) in outcome.errors.into_iter().enumerate() {
            errors[plane].extend(error);
        }
        ivar_ok &= outcome.ivar_ok;
        pixels_ok &= outcome.pixels_ok;
    }
    let [image_errors, ivar_errors, mask_errors, readnoise_errors] = errors;
    let first = |errors: Vec<IoError>| errors.into_iter().next().map_or(Ok(()), Err);
    first(image_errors)?;
    first(ivar_errors)?;
    let [image_hdu, ivar_hdu] = layouts.labels.clone();
    let (image, ivar) = (&planes.image, &planes.ivar);
    let nx = window.shape.1;
    // The slower scan that names the first bad pixel only runs when there is one.
    let first_bad = |ok: bool, bad: &dyn Fn(usize) -> bool| {
        (!ok)
            .then(|| window.all_segments().flatten().find(|&i| bad(i)))
            .flatten()
    };
    if let Some(i) = first_bad(ivar_ok, &|i| !ivar_value_ok(ivar[i])) {
        return Err(IoError::BadData {
            path: path.to_path_buf(),
            hdu: ivar_hdu,
            detail: format!(
                "ivar {} at pixel (row {}, col {}) is not finite and >= 0",
                ivar[i],
                i / nx,
                i % nx
            ),
        });
    }
    if let Some(i) = first_bad(pixels_ok, &|i| !pixel_value_ok(image[i], ivar[i])) {
        return Err(IoError::BadData {
            path: path.to_path_buf(),
            hdu: image_hdu,
            detail: format!(
                "pixel (row {}, col {}) is {} where ivar = {} > 0",
                i / nx,
                i % nx,
                image[i],
                ivar[i]
            ),
        });
    }
    first(mask_errors)?;
    first(readnoise_errors)
}
