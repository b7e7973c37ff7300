//! A small checked layer over the cfitsio C API (`fitsio::sys`): one open file, the current
//! HDU remembered for error messages, every call's status turned into an [`IoError`].
//!
//! The safe `fitsio` crate lacks raw header records, unsigned images, tile compression and
//! raw table rows, which this module needs; everything unsafe in `io` lives here.

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};

use fitsio::sys;

use super::error::IoError;
use super::writeback::EarlyWriteback;

/// cfitsio's "HDU not found" status of `ffmnhd`.
const BAD_HDU_NUM: c_int = sys::BAD_HDU_NUM as c_int;
/// cfitsio's "keyword not found" status.
const KEY_NO_EXIST: c_int = sys::KEY_NO_EXIST as c_int;
/// cfitsio's "moved past the last HDU" status.
const END_OF_FILE: c_int = sys::END_OF_FILE as c_int;

/// cfitsio's `ffmbyt` modes (fitsio2.h): a position past the end of the file is an error, or
/// allowed (while writing).
const REPORT_EOF: c_int = 0;
const IGNORE_EOF: c_int = 1;

extern "C" {
    /// cfitsio's `ffpbyt` (fitsio2.h, exported by the library that `fitsio-sys` builds but
    /// not in its bindings): writes `nbytes` bytes at the position set by `ffmbyt`, large
    /// blocks directly to the file. cfitsio's own image writes end in it.
    fn ffpbyt(
        fptr: *mut sys::fitsfile,
        nbytes: sys::LONGLONG,
        buffer: *mut c_void,
        status: *mut c_int,
    ) -> c_int;
}

/// Bytes of an image data unit encoded and written at once by [`Fits::write_data_unit`]
/// (1,456 FITS records, ~4 MB: in cache while it is summed and written).
pub(crate) const DATA_PIECE: usize = 2880 * 1456;

/// Kind of the current HDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HduKind {
    /// An image (including a tile-compressed image).
    Image,
    /// An ASCII table.
    AsciiTable,
    /// A binary table.
    BinTable,
}

/// Element types that cfitsio converts to and from (its `datatype` codes).
pub(crate) trait FitsElem: Copy + Default {
    /// cfitsio datatype code (TDOUBLE, TFLOAT, ...).
    const DATATYPE: c_int;
}
impl FitsElem for f64 {
    const DATATYPE: c_int = sys::TDOUBLE as c_int;
}
impl FitsElem for f32 {
    const DATATYPE: c_int = sys::TFLOAT as c_int;
}
impl FitsElem for i32 {
    const DATATYPE: c_int = sys::TINT as c_int;
}
impl FitsElem for u32 {
    const DATATYPE: c_int = sys::TUINT as c_int;
}
impl FitsElem for i16 {
    const DATATYPE: c_int = sys::TSHORT as c_int;
}

/// Image pixel types this crate writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImgType {
    /// BITPIX -64.
    F64,
    /// BITPIX -32.
    F32,
    /// BITPIX 16.
    I16,
    /// BITPIX 32 with BZERO = 2^31 (unsigned 32-bit).
    U32,
}

impl ImgType {
    fn bitpix(self) -> c_int {
        match self {
            ImgType::F64 => sys::DOUBLE_IMG,
            ImgType::F32 => sys::FLOAT_IMG,
            ImgType::I16 => sys::SHORT_IMG as c_int,
            ImgType::U32 => sys::ULONG_IMG as c_int,
        }
    }
}

/// Text of a cfitsio status code.
pub(crate) fn status_text(status: c_int) -> String {
    let mut buf = [0 as c_char; 81];
    // SAFETY: ffgerr writes at most FLEN_ERRMSG (81) bytes including the NUL into buf.
    unsafe { sys::ffgerr(status, buf.as_mut_ptr()) };
    c_buf_to_string(&buf)
}

fn c_buf_to_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An open FITS file. Closed on drop (errors ignored); use [`Fits::close`] to see them.
pub(crate) struct Fits {
    ptr: NonNull<sys::fitsfile>,
    path: PathBuf,
    hdu: String,
    closed: bool,
    /// Length of the file on disk when cfitsio reads it as it is (not compressed as a whole),
    /// for checking the data sizes that headers declare against it.
    disk_len: Option<u64>,
    /// Where the data units written by [`Fits::write_data_unit`] are handed to the disk as
    /// they are written ([`Fits::write_back_early`]).
    writeback: Option<EarlyWriteback>,
}

fn c_path(path: &Path) -> Result<CString, IoError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| IoError::InvalidInput {
        path: path.to_path_buf(),
        detail: "path contains a NUL byte".into(),
    })
}

impl Fits {
    /// Opens an existing file read-only (no extended filename syntax). A file that cannot be
    /// read (permissions, a directory) is [`IoError::Unreadable`], not "not a FITS file".
    pub(crate) fn open(path: &Path) -> Result<Self, IoError> {
        let disk_len = probe_readable(path)?;
        if let Some(len) = disk_len {
            check_tile_keywords(path, len)?;
        }
        let cpath = c_path(path)?;
        let mut fptr: *mut sys::fitsfile = ptr::null_mut();
        let mut status: c_int = 0;
        // SAFETY: cpath is NUL-terminated; fptr and status are valid out-pointers.
        unsafe {
            sys::ffdkopn(
                &mut fptr,
                cpath.as_ptr(),
                sys::READONLY as c_int,
                &mut status,
            )
        };
        match NonNull::new(fptr) {
            Some(ptr) if status == 0 => {
                let mut fits = Fits {
                    ptr,
                    path: path.to_path_buf(),
                    hdu: "0 (primary)".into(),
                    closed: false,
                    disk_len,
                    writeback: None,
                };
                if fits.key_raw("EXTNAME").ok().flatten().is_some() {
                    fits.refresh_label();
                }
                fits.check_structure()?;
                Ok(fits)
            }
            _ => Err(IoError::NotFits {
                path: path.to_path_buf(),
                detail: format!("cfitsio status {status}: {}", status_text(status)),
            }),
        }
    }

    /// Creates a new, empty file (fails if it exists).
    pub(crate) fn create(path: &Path) -> Result<Self, IoError> {
        let cpath = c_path(path)?;
        let mut fptr: *mut sys::fitsfile = ptr::null_mut();
        let mut status: c_int = 0;
        // SAFETY: as in `open`.
        unsafe { sys::ffdkinit(&mut fptr, cpath.as_ptr(), &mut status) };
        match NonNull::new(fptr) {
            Some(ptr) if status == 0 => Ok(Fits {
                ptr,
                path: path.to_path_buf(),
                hdu: "(new file)".into(),
                closed: false,
                disk_len: None,
                writeback: None,
            }),
            _ => Err(IoError::Cfitsio {
                path: path.to_path_buf(),
                hdu: "-".into(),
                op: "create file".into(),
                status,
                message: status_text(status),
            }),
        }
    }

    /// Flushes and closes the file, reporting errors.
    pub(crate) fn close(mut self) -> Result<(), IoError> {
        let mut status: c_int = 0;
        self.closed = true;
        // SAFETY: the pointer is valid and not closed yet; `closed` stops Drop closing it again.
        unsafe { sys::ffclos(self.ptr.as_ptr(), &mut status) };
        self.check("close", status)
    }

    /// Whether cfitsio inflated the file into memory as a whole (gzip and other compressed
    /// files) or it is not a regular file: each other handle of it would cost the whole file
    /// again.
    pub(crate) fn is_read_as_a_whole(&self) -> bool {
        self.disk_len.is_none()
    }

    /// Hands the data units that [`Fits::write_data_unit`] writes to the disk piece by piece
    /// through `writeback` (a descriptor of this file), so that the final flush finds them
    /// written.
    pub(crate) fn write_back_early(&mut self, writeback: EarlyWriteback) {
        self.writeback = Some(writeback);
    }

    /// Names `path` instead of the real file in messages (a temporary output names its target).
    pub(crate) fn set_display_path(&mut self, path: &Path) {
        self.path = path.to_path_buf();
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Label of the current HDU for messages, e.g. `2 (PSF)`.
    pub(crate) fn hdu_label(&self) -> &str {
        &self.hdu
    }

    /// Builds the error of a failed call.
    pub(crate) fn err(&self, op: impl Into<String>, status: c_int) -> IoError {
        IoError::Cfitsio {
            path: self.path.clone(),
            hdu: self.hdu.clone(),
            op: op.into(),
            status,
            message: status_text(status),
        }
    }

    fn check(&self, op: impl Into<String>, status: c_int) -> Result<(), IoError> {
        if status == 0 {
            Ok(())
        } else {
            Err(self.err(op, status))
        }
    }

    fn raw(&self) -> *mut sys::fitsfile {
        self.ptr.as_ptr()
    }

    fn refresh_label(&mut self) {
        let mut num: c_int = 0;
        // SAFETY: valid file pointer, valid out-pointer.
        unsafe { sys::ffghdn(self.raw(), &mut num) };
        let name = self
            .key_string("EXTNAME")
            .ok()
            .flatten()
            .unwrap_or_default();
        self.hdu = if name.is_empty() {
            format!("{}", num - 1)
        } else {
            format!("{} ({})", num - 1, name)
        };
    }

    /// The size in bytes of `n` values of `T` for the current HDU's data, refused beyond
    /// [`limits::MAX_HDU_BYTES`](super::limits::MAX_HDU_BYTES).
    fn checked_bytes<T>(&self, n: usize) -> Result<usize, IoError> {
        let bytes = n.saturating_mul(std::mem::size_of::<T>());
        if bytes > super::limits::MAX_HDU_BYTES {
            return Err(IoError::TooLarge {
                path: self.path.clone(),
                hdu: self.hdu.clone(),
                detail: format!(
                    "{n} values ({bytes} bytes) exceed the limit of {} bytes for one HDU",
                    super::limits::MAX_HDU_BYTES
                ),
            });
        }
        Ok(bytes)
    }

    /// `n` zeros of a cfitsio element type, as [`Fits::alloc`] (same size limit, allocation
    /// failure an error) but from the allocator's zeroed pages: pages never written cost no
    /// memory or time (a plane of which only some rows are read).
    pub(crate) fn alloc_zeroed<T: FitsElem>(&self, n: usize) -> Result<Vec<T>, IoError> {
        let bytes = self.checked_bytes::<T>(n)?;
        if n == 0 || std::mem::size_of::<T>() == 0 {
            return Ok(Vec::new());
        }
        let oom = || IoError::OutOfMemory {
            path: self.path.clone(),
            hdu: self.hdu.clone(),
            bytes,
        };
        let layout = std::alloc::Layout::array::<T>(n).map_err(|_| oom())?;
        // SAFETY: the layout has a non-zero size (n > 0, T not zero-sized).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
        if ptr.is_null() {
            return Err(oom());
        }
        // SAFETY: ptr was allocated by the global allocator with the layout of n values of T
        // (capacity n), and all-zero bytes are a valid value of every FitsElem type (f64,
        // f32, i32, u32, i16), so its n elements are initialized.
        Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
    }

    /// A zeroed buffer of `n` elements for the current HDU's data: refused beyond
    /// [`limits::MAX_HDU_BYTES`](super::limits::MAX_HDU_BYTES), and allocated fallibly (an
    /// allocation failure is [`IoError::OutOfMemory`], never an abort).
    pub(crate) fn alloc<T: Copy + Default>(&self, n: usize) -> Result<Vec<T>, IoError> {
        let bytes = self.checked_bytes::<T>(n)?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| IoError::OutOfMemory {
            path: self.path.clone(),
            hdu: self.hdu.clone(),
            bytes,
        })?;
        out.resize(n, T::default());
        Ok(out)
    }

    /// Number of HDUs.
    pub(crate) fn num_hdus(&mut self) -> Result<usize, IoError> {
        let mut n: c_int = 0;
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffthdu(self.raw(), &mut n, &mut status) };
        self.check("count HDUs", status)?;
        Ok(n.max(0) as usize)
    }

    /// Moves to HDU `index` (0 = primary).
    pub(crate) fn move_to(&mut self, index: usize) -> Result<(), IoError> {
        let mut status: c_int = 0;
        let mut kind: c_int = 0;
        let num = c_int::try_from(index + 1).map_err(|_| self.err("move to HDU", BAD_HDU_NUM))?;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffmahd(self.raw(), num, &mut kind, &mut status) };
        if status == END_OF_FILE || status == BAD_HDU_NUM {
            return Err(IoError::MissingHdu {
                path: self.path.clone(),
                hdu: format!("number {index}"),
            });
        }
        self.check(format!("move to HDU {index}"), status)?;
        self.refresh_label();
        self.check_structure()
    }

    /// Moves to the HDU whose EXTNAME (or HDUNAME) is `name`; `Ok(false)` when there is none.
    pub(crate) fn move_to_name(&mut self, name: &str) -> Result<bool, IoError> {
        let cname = CString::new(name).map_err(|_| self.err("move to named HDU", BAD_HDU_NUM))?;
        let mut status: c_int = 0;
        // SAFETY: ffmnhd only reads the name (the C prototype lacks const).
        unsafe {
            sys::ffmnhd(
                self.raw(),
                sys::ANY_HDU,
                cname.as_ptr() as *mut c_char,
                0,
                &mut status,
            )
        };
        if status == BAD_HDU_NUM {
            return Ok(false);
        }
        self.check(format!("move to HDU {name}"), status)?;
        self.refresh_label();
        self.check_structure()?;
        Ok(true)
    }

    /// Moves to the HDU `name` or fails with [`IoError::MissingHdu`].
    pub(crate) fn require_hdu(&mut self, name: &str) -> Result<(), IoError> {
        if self.move_to_name(name)? {
            Ok(())
        } else {
            Err(IoError::MissingHdu {
                path: self.path.clone(),
                hdu: name.into(),
            })
        }
    }

    /// Kind of the current HDU (tile-compressed images report `Image`).
    pub(crate) fn hdu_kind(&mut self) -> Result<HduKind, IoError> {
        let mut kind: c_int = 0;
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffghdt(self.raw(), &mut kind, &mut status) };
        self.check("get HDU type", status)?;
        Ok(match kind {
            0 => HduKind::Image,
            1 => HduKind::AsciiTable,
            _ => HduKind::BinTable,
        })
    }

    /// Whether the current HDU is a tile-compressed image.
    pub(crate) fn is_compressed(&mut self) -> bool {
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointer.
        let r = unsafe { sys::fits_is_compressed_image(self.raw(), &mut status) };
        status == 0 && r != 0
    }

    /// Image axes in FITS order (NAXIS1 first); empty for a header-only HDU.
    pub(crate) fn image_shape(&mut self) -> Result<Vec<usize>, IoError> {
        let mut naxis: c_int = 0;
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffgidm(self.raw(), &mut naxis, &mut status) };
        self.check("get image dimensions", status)?;
        let mut axes = vec![0 as sys::LONGLONG; naxis.max(0) as usize];
        if !axes.is_empty() {
            // SAFETY: axes has room for naxis values.
            unsafe { sys::ffgiszll(self.raw(), naxis, axes.as_mut_ptr(), &mut status) };
            self.check("get image size", status)?;
        }
        Ok(axes.into_iter().map(|a| a.max(0) as usize).collect())
    }

    /// Equivalent BITPIX of the image (BZERO/BSCALE applied: 40 for unsigned 32-bit, 20 for u16).
    pub(crate) fn image_equiv_bitpix(&mut self) -> Result<i32, IoError> {
        let mut bitpix: c_int = 0;
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffgiet(self.raw(), &mut bitpix, &mut status) };
        self.check("get image type", status)?;
        Ok(bitpix)
    }

    /// Where the current image's data unit starts in the file (bytes), when its values are
    /// stored as plain big-endian f32 (BITPIX -32, not tile-compressed, no BSCALE/BZERO
    /// scaling) in a file read as it is: its values can then be read straight from the file,
    /// the bits cfitsio would give. `None` otherwise.
    pub(crate) fn plain_f32_data_start(&mut self) -> Result<Option<u64>, IoError> {
        if self.is_read_as_a_whole() || self.is_compressed() {
            return Ok(None);
        }
        let mut bitpix: c_int = 0;
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffgidt(self.raw(), &mut bitpix, &mut status) };
        self.check("get image type", status)?;
        let unscaled = self.key_f64("BSCALE")?.is_none_or(|v| v == 1.0)
            && self.key_f64("BZERO")?.is_none_or(|v| v == 0.0);
        if bitpix != sys::FLOAT_IMG || !unscaled {
            return Ok(None);
        }
        let (mut head, mut start, mut end): (sys::LONGLONG, sys::LONGLONG, sys::LONGLONG) =
            (0, 0, 0);
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffghadll(self.raw(), &mut head, &mut start, &mut end, &mut status) };
        self.check("get the HDU offsets", status)?;
        Ok(u64::try_from(start).ok())
    }

    /// Reads the whole current image (any stored type, converted by cfitsio).
    pub(crate) fn read_image<T: FitsElem>(&mut self, n: usize) -> Result<Vec<T>, IoError> {
        let mut out = self.alloc::<T>(n)?;
        self.read_pixels(0, &mut out, "read image")?;
        Ok(out)
    }

    /// Reads `out.len()` values of the current image starting at element `first` (0-based,
    /// row-major from the first pixel; any stored type, converted by cfitsio): e.g. a range of
    /// whole rows. cfitsio reads only the blocks (or compressed tiles) that hold them.
    pub(crate) fn read_image_into<T: FitsElem>(
        &mut self,
        first: usize,
        out: &mut [T],
    ) -> Result<(), IoError> {
        self.read_pixels(first, out, "read image rows")
    }

    /// Reads `out.len()` values of the current image from element `first` (0-based), checking
    /// cfitsio's status as the operation `what`.
    fn read_pixels<T: FitsElem>(
        &mut self,
        first: usize,
        out: &mut [T],
        what: &str,
    ) -> Result<(), IoError> {
        let len = out.len();
        self.pixel_range(first, len, what, |file, first, n, status| {
            let mut anynul: c_int = 0;
            // SAFETY: out holds n = out.len() elements of the type named by T::DATATYPE; a
            // null nulval means "no null checking".
            unsafe {
                sys::ffgpv(
                    file,
                    T::DATATYPE,
                    first,
                    n,
                    ptr::null_mut(),
                    out.as_mut_ptr() as *mut c_void,
                    &mut anynul,
                    status,
                )
            };
        })
    }

    /// Runs `call(file, first, n, status)`, one cfitsio read or write of the `n = len`
    /// image elements from 1-based `first` (`first` here is 0-based), unless `len` is 0, and
    /// checks its status as the operation `what`.
    fn pixel_range(
        &mut self,
        first: usize,
        len: usize,
        what: &str,
        call: impl FnOnce(*mut sys::fitsfile, sys::LONGLONG, sys::LONGLONG, &mut c_int),
    ) -> Result<(), IoError> {
        if len == 0 {
            return Ok(());
        }
        let mut status: c_int = 0;
        call(
            self.raw(),
            first as sys::LONGLONG + 1,
            len as sys::LONGLONG,
            &mut status,
        );
        self.check(what, status)
    }

    /// Appends a new image HDU with axes in FITS order (NAXIS1 first) and makes it current.
    pub(crate) fn create_image(&mut self, ty: ImgType, axes: &[usize]) -> Result<(), IoError> {
        let mut naxes: Vec<sys::LONGLONG> = axes.iter().map(|&a| a as sys::LONGLONG).collect();
        let mut status: c_int = 0;
        // SAFETY: naxes has axes.len() elements; cfitsio only reads it.
        unsafe {
            sys::ffcrimll(
                self.raw(),
                ty.bitpix(),
                naxes.len() as c_int,
                naxes.as_mut_ptr(),
                &mut status,
            )
        };
        self.check("create image HDU", status)?;
        self.hdu = "(new image)".into();
        Ok(())
    }

    /// Requests RICE_1 tile compression for the next image created (`false` turns it off).
    pub(crate) fn set_rice_compression(&mut self, on: bool) -> Result<(), IoError> {
        let mut status: c_int = 0;
        let ctype = if on { sys::RICE_1 as c_int } else { 0 };
        // SAFETY: valid file pointer and out-pointer.
        unsafe { sys::fits_set_compression_type(self.raw(), ctype, &mut status) };
        self.check("set compression type", status)
    }

    /// Writes the whole current image from `data` (converted by cfitsio to the HDU's type).
    pub(crate) fn write_image<T: FitsElem>(&mut self, data: &[T]) -> Result<(), IoError> {
        self.write_image_at(0, data)
    }

    /// Writes `data` into the current image starting at element `first` (0-based, in FITS
    /// order), converted by cfitsio to the HDU's type: an image written in pieces.
    pub(crate) fn write_image_at<T: FitsElem>(
        &mut self,
        first: usize,
        data: &[T],
    ) -> Result<(), IoError> {
        self.pixel_range(
            first,
            data.len(),
            "write image",
            |file, first, n, status| {
                // SAFETY: data holds n = data.len() elements of T::DATATYPE; cfitsio only reads the
                // array (the C prototype lacks const) and checks that the range lies inside the
                // image.
                unsafe {
                    sys::ffppr(
                        file,
                        T::DATATYPE,
                        first,
                        n,
                        data.as_ptr() as *mut c_void,
                        status,
                    )
                };
            },
        )
    }

    /// Raw value text of a keyword (strings keep their quotes), or None when absent.
    ///
    /// The value is parsed from the card's own text, strictly: one value (a quoted string or
    /// one token) then nothing but an optional `/ comment`. cfitsio itself stops at the first
    /// blank, so that `WAVEMIN = 9 5543.0` would read as 9; here it is a [`IoError::BadKeyword`].
    pub(crate) fn key_raw(&mut self, name: &str) -> Result<Option<String>, IoError> {
        let cname = CString::new(name).map_err(|_| self.err("read keyword", KEY_NO_EXIST))?;
        let mut card = [0 as c_char; 81];
        let mut status: c_int = 0;
        // SAFETY: card has FLEN_CARD (81) bytes; the name is NUL-terminated.
        unsafe { sys::ffgcrd(self.raw(), cname.as_ptr(), card.as_mut_ptr(), &mut status) };
        if status == KEY_NO_EXIST {
            return Ok(None);
        }
        self.check(format!("read keyword {name}"), status)?;
        let card = c_buf_to_string(&card);
        card_value(&card)
            .map(Some)
            .map_err(|detail| IoError::BadKeyword {
                path: self.path.clone(),
                hdu: self.hdu.clone(),
                key: name.into(),
                detail: format!("{detail}: {:?}", card.trim_end()),
            })
    }

    /// A structural keyword (BITPIX, NAXISn, PCOUNT, GCOUNT) as a strictly parsed integer.
    fn structural(&mut self, name: &str) -> Result<Option<i64>, IoError> {
        let Some(raw) = self.key_raw(name)? else {
            return Ok(None);
        };
        raw.parse::<i64>()
            .map(Some)
            .map_err(|_| IoError::BadKeyword {
                path: self.path.clone(),
                hdu: self.hdu.clone(),
                key: name.into(),
                detail: format!("expected an integer, found {raw}"),
            })
    }

    /// Checks the current HDU's structural cards, parsed strictly (cfitsio reads `PCOUNT = 6 0`
    /// as 6), and that the data they declare lie inside the file: a header that claims more
    /// data than the file holds (a truncated file, or a corrupt NAXISn or PCOUNT) is refused
    /// here, before any read allocates for it.
    fn check_structure(&mut self) -> Result<(), IoError> {
        let bad = |fits: &Fits, key: &str, detail: String| IoError::BadKeyword {
            path: fits.path.clone(),
            hdu: fits.hdu.clone(),
            key: key.into(),
            detail,
        };
        let bitpix = self.structural("BITPIX")?.unwrap_or(8);
        if ![8, 16, 32, 64, -32, -64].contains(&bitpix) {
            return Err(bad(
                self,
                "BITPIX",
                format!("{bitpix} is not a FITS BITPIX"),
            ));
        }
        let naxis = self.structural("NAXIS")?.unwrap_or(0);
        if !(0..=999).contains(&naxis) {
            return Err(bad(self, "NAXIS", format!("{naxis} is not in 0..=999")));
        }
        let mut elements: u128 = u128::from(naxis > 0);
        for i in 1..=naxis {
            let key = format!("NAXIS{i}");
            let n = self.structural(&key)?.unwrap_or(0);
            let Ok(n) = u64::try_from(n) else {
                return Err(bad(self, &key, format!("{n} is negative")));
            };
            elements = elements.saturating_mul(u128::from(n));
        }
        let extension = self.key_raw("XTENSION")?;
        let pcount = self.structural("PCOUNT")?.unwrap_or(0);
        let gcount = self.structural("GCOUNT")?.unwrap_or(1);
        let (Ok(pcount), Ok(gcount)) = (u64::try_from(pcount), u64::try_from(gcount)) else {
            return Err(bad(
                self,
                "PCOUNT",
                format!("PCOUNT {pcount} and GCOUNT {gcount} must not be negative"),
            ));
        };
        let is_image_ext = extension
            .as_deref()
            .is_some_and(|x| x.trim_matches('\'').trim() == "IMAGE");
        if is_image_ext && (pcount != 0 || gcount != 1) {
            return Err(bad(
                self,
                "PCOUNT",
                format!(
                    "an IMAGE extension has PCOUNT = 0 and GCOUNT = 1, found {pcount} and {gcount}"
                ),
            ));
        }
        let bytes = (bitpix.unsigned_abs() as u128 / 8)
            .saturating_mul(u128::from(gcount))
            .saturating_mul(elements.saturating_add(u128::from(pcount)));
        let Some(disk_len) = self.disk_len else {
            return Ok(());
        };
        let mut head: sys::LONGLONG = 0;
        let mut data: sys::LONGLONG = 0;
        let mut end: sys::LONGLONG = 0;
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffghadll(self.raw(), &mut head, &mut data, &mut end, &mut status) };
        self.check("get HDU offsets", status)?;
        let available = u128::from(disk_len.saturating_sub(data.max(0) as u64));
        if bytes > available {
            return Err(IoError::TooLarge {
                path: self.path.clone(),
                hdu: self.hdu.clone(),
                detail: format!(
                    "the header declares {bytes} bytes of data (BITPIX {bitpix}, NAXIS {naxis}, \
                     PCOUNT {pcount}, GCOUNT {gcount}) but the file holds only {available} after \
                     the header: truncated file or bad NAXISn/PCOUNT"
                ),
            });
        }
        Ok(())
    }

    /// A keyword's value as a string (long CONTINUE strings joined, quotes removed, trailing
    /// blanks trimmed; a non-string value is returned as its text). None when absent.
    pub(crate) fn key_string(&mut self, name: &str) -> Result<Option<String>, IoError> {
        let Some(raw) = self.key_raw(name)? else {
            return Ok(None);
        };
        if !raw.starts_with('\'') {
            return Ok(Some(raw));
        }
        let cname = CString::new(name).map_err(|_| self.err("read keyword", KEY_NO_EXIST))?;
        let mut value: *mut c_char = ptr::null_mut();
        let mut status: c_int = 0;
        // SAFETY: ffgkls allocates `value` (freed below with fffree); comment may be null.
        unsafe {
            sys::ffgkls(
                self.raw(),
                cname.as_ptr(),
                &mut value,
                ptr::null_mut(),
                &mut status,
            )
        };
        let text = if value.is_null() {
            String::new()
        } else {
            // SAFETY: cfitsio returns a NUL-terminated string; it is freed exactly once.
            let s = unsafe { std::ffi::CStr::from_ptr(value) }
                .to_string_lossy()
                .into_owned();
            let mut st2: c_int = 0;
            // SAFETY: value was allocated by cfitsio.
            unsafe { sys::fffree(value as *mut c_void, &mut st2) };
            s
        };
        self.check(format!("read keyword {name}"), status)?;
        Ok(Some(text.trim_end().to_string()))
    }

    /// A numeric keyword as f64 (quoted numbers such as PSFVER = '3' are accepted).
    pub(crate) fn key_f64(&mut self, name: &str) -> Result<Option<f64>, IoError> {
        let Some(raw) = self.key_raw(name)? else {
            return Ok(None);
        };
        let text = raw.trim_matches('\'').trim().replace(['D', 'd'], "E");
        text.parse::<f64>()
            .map(Some)
            .map_err(|_| IoError::BadKeyword {
                path: self.path.clone(),
                hdu: self.hdu.clone(),
                key: name.into(),
                detail: format!("expected a number, found {raw}"),
            })
    }

    /// An integer keyword (quoted integers accepted; a float with no fraction such as 0.0 too).
    pub(crate) fn key_i64(&mut self, name: &str) -> Result<Option<i64>, IoError> {
        let Some(raw) = self.key_raw(name)? else {
            return Ok(None);
        };
        let text = raw.trim_matches('\'').trim().to_string();
        if let Ok(v) = text.parse::<i64>() {
            return Ok(Some(v));
        }
        match text.replace(['D', 'd'], "E").parse::<f64>() {
            Ok(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Ok(Some(v as i64)),
            _ => Err(IoError::BadKeyword {
                path: self.path.clone(),
                hdu: self.hdu.clone(),
                key: name.into(),
                detail: format!("expected an integer, found {raw}"),
            }),
        }
    }

    /// All header records of the current HDU (80-character cards, trailing blanks removed),
    /// END excluded.
    pub(crate) fn cards(&mut self) -> Result<Vec<String>, IoError> {
        let mut nexist: c_int = 0;
        let mut nmore: c_int = 0;
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffghsp(self.raw(), &mut nexist, &mut nmore, &mut status) };
        self.check("read header size", status)?;
        let mut cards = Vec::with_capacity(nexist.max(0) as usize);
        for i in 1..=nexist {
            let mut card = [0 as c_char; 81];
            // SAFETY: card has FLEN_CARD (81) bytes.
            unsafe { sys::ffgrec(self.raw(), i, card.as_mut_ptr(), &mut status) };
            self.check(format!("read header record {i}"), status)?;
            cards.push(c_buf_to_string(&card).trim_end().to_string());
        }
        Ok(cards)
    }

    /// Appends one raw header card (validated by cfitsio).
    pub(crate) fn write_card(&mut self, card: &str) -> Result<(), IoError> {
        let ccard = CString::new(card).map_err(|_| IoError::InvalidInput {
            path: self.path.clone(),
            detail: format!("header card contains a NUL byte: {card:?}"),
        })?;
        let mut status: c_int = 0;
        // SAFETY: ccard is NUL-terminated.
        unsafe { sys::ffprec(self.raw(), ccard.as_ptr(), &mut status) };
        self.check(format!("write header card {:?}", card.trim_end()), status)
    }

    /// Appends a string keyword (long strings use the CONTINUE convention).
    pub(crate) fn write_key_str(
        &mut self,
        name: &str,
        value: &str,
        comment: &str,
    ) -> Result<(), IoError> {
        let bad = |what: &str| IoError::InvalidInput {
            path: self.path.clone(),
            detail: format!("keyword {name}: {what} contains a NUL byte"),
        };
        let cname = CString::new(name).map_err(|_| bad("name"))?;
        let cval = CString::new(value).map_err(|_| bad("value"))?;
        let ccom = CString::new(comment).map_err(|_| bad("comment"))?;
        let mut status: c_int = 0;
        // SAFETY: all strings are NUL-terminated and only read.
        unsafe {
            if value.len() > 68 {
                sys::ffpkls(
                    self.raw(),
                    cname.as_ptr(),
                    cval.as_ptr(),
                    ccom.as_ptr(),
                    &mut status,
                )
            } else {
                sys::ffpkys(
                    self.raw(),
                    cname.as_ptr(),
                    cval.as_ptr(),
                    ccom.as_ptr(),
                    &mut status,
                )
            }
        };
        self.check(format!("write keyword {name}"), status)
    }

    /// Replaces the comment of the existing keyword `name` of the current HDU.
    pub(crate) fn modify_comment(&mut self, name: &str, comment: &str) -> Result<(), IoError> {
        let bad = || IoError::InvalidInput {
            path: self.path.clone(),
            detail: format!("keyword {name}: name or comment contains a NUL byte"),
        };
        let cname = CString::new(name).map_err(|_| bad())?;
        let ccom = CString::new(comment).map_err(|_| bad())?;
        let mut status: c_int = 0;
        // SAFETY: both strings are NUL-terminated and only read.
        unsafe { sys::ffmcom(self.raw(), cname.as_ptr(), ccom.as_ptr(), &mut status) };
        self.check(format!("write the comment of {name}"), status)
    }

    /// Writes CHECKSUM and DATASUM of the current HDU (call after its data are written).
    pub(crate) fn write_checksum(&mut self) -> Result<(), IoError> {
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointer.
        unsafe { sys::ffpcks(self.raw(), &mut status) };
        self.check("write checksum", status)
    }

    /// Writes the whole data unit of the current image (header complete but for the checksum
    /// cards), `nbytes` bytes as stored (big-endian, without fill) that `produce(offset, buf)`
    /// puts into `buf` piece by piece (from byte `offset`, pieces of [`DATA_PIECE`] bytes but
    /// the last) returning their ones' complement sum ([`super::checksum::encode_into`]), then
    /// CHECKSUM and DATASUM: the cards and the file that [`Fits::write_image`] +
    /// [`Fits::write_checksum`] give, byte for byte (the same cfitsio calls in the same order,
    /// with the date of this call), without cfitsio converting the values nor reading the data
    /// unit back to sum it. The pieces go through one reused buffer (no page faults), and are
    /// handed to the disk as they are written when the file writes back early
    /// ([`Fits::write_back_early`]).
    pub(crate) fn write_data_unit(
        &mut self,
        nbytes: usize,
        produce: impl FnMut(usize, &mut [u8]) -> u32,
    ) -> Result<(), IoError> {
        let mut status: c_int = 0;
        let mut date = [0 as c_char; 20];
        // SAFETY: ffgstm writes at most 20 bytes (with the NUL) into `date`; a null timeref is
        // allowed.
        unsafe { sys::ffgstm(date.as_mut_ptr(), ptr::null_mut(), &mut status) };
        self.check("get the date", status)?;
        let date = c_buf_to_string(&date);
        // ffpcks on an HDU without the cards: CHECKSUM undefined and DATASUM 0 first.
        let check_comment = format!("HDU checksum updated {date}");
        self.write_key_str("CHECKSUM", "0000000000000000", &check_comment)?;
        let data_comment = format!("data unit checksum updated {date}");
        self.write_key_str("DATASUM", "         0", &data_comment)?;
        self.reparse_header()?;
        let (mut head, mut start, mut end): (sys::LONGLONG, sys::LONGLONG, sys::LONGLONG) =
            (0, 0, 0);
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffghadll(self.raw(), &mut head, &mut start, &mut end, &mut status) };
        self.check("get the HDU offsets", status)?;
        let unit = usize::try_from(end - start).unwrap_or(0);
        if nbytes > unit || unit - nbytes >= 2880 {
            return Err(self.err(
                format!("write {nbytes} data bytes into a {unit}-byte data unit"),
                sys::BAD_DIMEN as c_int,
            ));
        }
        let datasum = self.write_pieces(start, unit, nbytes, produce)?;
        if datasum != 0 {
            self.modify_key_str("DATASUM", &datasum.to_string(), &data_comment)?;
        }
        // The header's sum on top of the data's, complemented into CHECKSUM (ffpcks's end).
        let mut sum = std::ffi::c_ulong::from(datasum);
        let mut text = [0 as c_char; 17];
        let nrec = ((start - head) / 2880) as std::ffi::c_long;
        // SAFETY: valid file pointer and out-pointers; ffcsum reads the `nrec` header records
        // from the position set by ffmbyt; ffesum writes 16 characters and a NUL into `text`.
        unsafe {
            sys::ffmbyt(self.raw(), head, REPORT_EOF, &mut status);
            sys::ffcsum(self.raw(), nrec, &mut sum, &mut status);
            sys::ffesum(sum, 1, text.as_mut_ptr());
        }
        self.check("sum the header", status)?;
        self.modify_key_str("CHECKSUM", &c_buf_to_string(&text), "&")
    }

    /// Writes the `unit` bytes of a data unit that starts at byte `start` of the file: the
    /// `nbytes` bytes of `produce` (as [`Fits::write_data_unit`] describes it), then zeros up
    /// to the end of the 2880-byte record (as cfitsio's ffpdfl writes them), in pieces of
    /// [`DATA_PIECE`] bytes through one reused buffer. Returns the ones' complement sum of the
    /// data.
    fn write_pieces(
        &mut self,
        start: sys::LONGLONG,
        unit: usize,
        nbytes: usize,
        mut produce: impl FnMut(usize, &mut [u8]) -> u32,
    ) -> Result<u32, IoError> {
        let mut buf = self.alloc::<u8>(DATA_PIECE.min(unit))?;
        let mut datasum = 0u32;
        let mut offset = 0;
        while offset < unit {
            let piece = &mut buf[..DATA_PIECE.min(unit - offset)];
            let sum = fill_piece(&mut produce, nbytes, offset, piece);
            datasum = super::checksum::add(datasum, sum);
            self.write_bytes_at(start + offset as sys::LONGLONG, piece)?;
            offset += piece.len();
        }
        Ok(datasum)
    }

    /// Writes `bytes` at byte `pos` of the file (cfitsio's ffmbyt + ffpbyt: large blocks go
    /// straight to the file) and hands them to the disk when it writes back early.
    fn write_bytes_at(&mut self, pos: sys::LONGLONG, bytes: &[u8]) -> Result<(), IoError> {
        let mut status: c_int = 0;
        // SAFETY: valid file pointer; ffmbyt only moves cfitsio's position (beyond the end of
        // the file is allowed while writing: IGNORE_EOF); ffpbyt reads `bytes.len()` bytes
        // from the buffer and does not modify it (the C prototype lacks const).
        unsafe {
            sys::ffmbyt(self.raw(), pos, IGNORE_EOF, &mut status);
            ffpbyt(
                self.raw(),
                bytes.len() as sys::LONGLONG,
                bytes.as_ptr() as *mut c_void,
                &mut status,
            );
        }
        self.check("write image data", status)?;
        if let Some(writeback) = &self.writeback {
            writeback.start(u64::try_from(pos).unwrap_or(0), bytes.len() as u64);
        }
        Ok(())
    }

    /// Replaces the value (and comment; `&` keeps it) of string keyword `name`.
    fn modify_key_str(&mut self, name: &str, value: &str, comment: &str) -> Result<(), IoError> {
        let c = |s: &str| {
            CString::new(s).map_err(|_| IoError::InvalidInput {
                path: self.path.clone(),
                detail: format!("keyword {name}: value or comment contains a NUL byte"),
            })
        };
        let (cname, cvalue, ccomment) = (c(name)?, c(value)?, c(comment)?);
        let mut status: c_int = 0;
        // SAFETY: NUL-terminated strings that cfitsio only reads.
        unsafe {
            sys::ffmkys(
                self.raw(),
                cname.as_ptr(),
                cvalue.as_ptr(),
                ccomment.as_ptr(),
                &mut status,
            )
        };
        self.check(format!("modify keyword {name}"), status)
    }

    /// Verifies CHECKSUM/DATASUM of the current HDU: (data ok, header ok), each 1 = correct,
    /// 0 = absent, -1 = wrong.
    pub(crate) fn verify_checksum(&mut self) -> Result<(i32, i32), IoError> {
        let mut data: c_int = 0;
        let mut hdu: c_int = 0;
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffvcks(self.raw(), &mut data, &mut hdu, &mut status) };
        self.check("verify checksum", status)?;
        Ok((data, hdu))
    }

    /// Number of rows of the current table.
    pub(crate) fn table_nrows(&mut self) -> Result<usize, IoError> {
        let mut n: sys::LONGLONG = 0;
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffgnrwll(self.raw(), &mut n, &mut status) };
        self.check("get number of rows", status)?;
        Ok(n.max(0) as usize)
    }

    /// Reads `nbytes` raw bytes per row for rows `[0, nrows)` of the current binary table.
    pub(crate) fn read_table_bytes(
        &mut self,
        nrows: usize,
        row_bytes: usize,
    ) -> Result<Vec<u8>, IoError> {
        let n = nrows.saturating_mul(row_bytes);
        let mut out = self.alloc::<u8>(n)?;
        if n == 0 {
            return Ok(out);
        }
        let mut status: c_int = 0;
        // SAFETY: out holds n bytes; ffgtbb reads n consecutive bytes starting at row 1.
        unsafe {
            sys::ffgtbb(
                self.raw(),
                1,
                1,
                n as sys::LONGLONG,
                out.as_mut_ptr(),
                &mut status,
            )
        };
        self.check("read table bytes", status)?;
        Ok(out)
    }

    /// Appends a binary table with the given columns and `nrows` rows and makes it current.
    pub(crate) fn create_bintable(
        &mut self,
        extname: &str,
        nrows: usize,
        ttype: &[String],
        tform: &[String],
    ) -> Result<(), IoError> {
        let to_c = |v: &[String]| -> Result<Vec<CString>, IoError> {
            v.iter()
                .map(|s| {
                    CString::new(s.as_str()).map_err(|_| IoError::InvalidInput {
                        path: self.path.clone(),
                        detail: format!("table {extname}: column text {s:?} contains NUL"),
                    })
                })
                .collect()
        };
        let ctype = to_c(ttype)?;
        let cform = to_c(tform)?;
        let cext = CString::new(extname).map_err(|_| IoError::InvalidInput {
            path: self.path.clone(),
            detail: "EXTNAME contains NUL".into(),
        })?;
        let mut ptype: Vec<*mut c_char> = ctype.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        let mut pform: Vec<*mut c_char> = cform.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        let mut status: c_int = 0;
        // SAFETY: the pointer arrays hold tfields NUL-terminated strings that outlive the call
        // and are only read; a null tunit means "no units".
        unsafe {
            sys::ffcrtb(
                self.raw(),
                sys::BINARY_TBL as c_int,
                nrows as sys::LONGLONG,
                ptype.len() as c_int,
                ptype.as_mut_ptr(),
                pform.as_mut_ptr(),
                ptr::null_mut(),
                cext.as_ptr(),
                &mut status,
            )
        };
        self.check(format!("create table {extname}"), status)?;
        self.hdu = format!("(new table {extname})");
        Ok(())
    }

    /// Re-reads the current HDU's structure after header cards were added.
    pub(crate) fn reparse_header(&mut self) -> Result<(), IoError> {
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointer.
        unsafe { sys::ffrdef(self.raw(), &mut status) };
        self.check("re-read header", status)
    }

    /// Writes raw row bytes starting at row 1 of the current binary table.
    pub(crate) fn write_table_bytes(&mut self, data: &[u8]) -> Result<(), IoError> {
        if data.is_empty() {
            return Ok(());
        }
        let mut status: c_int = 0;
        // SAFETY: data holds data.len() bytes, only read by cfitsio.
        unsafe {
            sys::ffptbb(
                self.raw(),
                1,
                1,
                data.len() as sys::LONGLONG,
                data.as_ptr() as *mut u8,
                &mut status,
            )
        };
        self.check("write table bytes", status)
    }

    /// Number of columns of the current table.
    pub(crate) fn table_ncols(&mut self) -> Result<usize, IoError> {
        let mut n: c_int = 0;
        let mut status: c_int = 0;
        // SAFETY: valid file pointer and out-pointers.
        unsafe { sys::ffgncl(self.raw(), &mut n, &mut status) };
        self.check("get number of columns", status)?;
        Ok(n.max(0) as usize)
    }
}

/// Checks that `path` can be read as an input and returns its length when cfitsio reads it as
/// it is (`None` for a file compressed as a whole, which cfitsio inflates in memory).
fn probe_readable(path: &Path) -> Result<Option<u64>, IoError> {
    use std::io::{ErrorKind, Read};
    let unreadable = |reason: String| IoError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let reason = |e: &std::io::Error| match e.kind() {
        ErrorKind::PermissionDenied => "permission denied".to_string(),
        ErrorKind::IsADirectory => "is a directory".to_string(),
        _ => e.to_string(),
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(IoError::NotFound {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(unreadable(reason(&e))),
    };
    let meta = file.metadata().map_err(|e| unreadable(reason(&e)))?;
    if meta.is_dir() {
        return Err(unreadable("is a directory".into()));
    }
    let mut magic = [0u8; 2];
    let got = file.read(&mut magic).map_err(|e| unreadable(reason(&e)))?;
    // gzip, Unix compress, bzip2 and zip files are inflated by cfitsio: their length on disk
    // says nothing about the FITS data; a regular FITS file starts with "SIMPLE".
    let compressed = got == 2
        && matches!(
            magic,
            [0x1f, 0x8b] | [0x1f, 0x9d] | [b'B', b'Z'] | [b'P', b'K']
        );
    Ok((meta.is_file() && !compressed).then_some(meta.len()))
}

/// The value of an 80-character header card, parsed strictly: `Ok` with the value text (a
/// string keeps its quotes; empty when the card has no value) when the card holds one value
/// and at most a `/ comment`; `Err` with what is wrong otherwise.
fn card_value(card: &str) -> Result<String, String> {
    let Some(rest) = card
        .get(8..)
        .filter(|r| r.starts_with("= ") || r.starts_with('='))
    else {
        return Ok(String::new());
    };
    let text = rest[1..].trim_start();
    if let Some(body) = text.strip_prefix('\'') {
        // A string: '' is an escaped quote; the closing quote ends it.
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\'' {
                if bytes.get(i + 1) == Some(&b'\'') {
                    i += 2;
                    continue;
                }
                let after = body[i + 1..].trim_start();
                if !(after.is_empty() || after.starts_with('/')) {
                    return Err(format!("text after the closing quote: {after:?}"));
                }
                return Ok(format!("'{}", &body[..=i]));
            }
            i += 1;
        }
        return Err("string without its closing quote".into());
    }
    let value = text.split('/').next().unwrap_or("").trim();
    if value.split_whitespace().nth(1).is_some() {
        return Err(format!("one value expected, found {value:?}"));
    }
    Ok(value.to_string())
}

/// Header blocks read per HDU by [`check_tile_keywords`] at most (a 28,800-card header).
const MAX_HEADER_BLOCKS: u64 = 360;

/// Scans the raw headers of the regular (not compressed) FITS file at `path`, `len` bytes,
/// before cfitsio parses any: in a tile-compressed image HDU (ZIMAGE = T), every ZNAXISn and
/// ZTILEn must be one integer (ZTILEn >= 1, ZNAXISn >= 0), parsed strictly. cfitsio reads
/// `ZTILE1 = 0   66` as 0 when it opens the HDU, and divides by it (SIGFPE, an abort);
/// [`Fits::check_structure`] comes too late for that. The scan stops, leaving the file to
/// cfitsio's own checks, at the first header it cannot follow.
fn check_tile_keywords(path: &Path, len: u64) -> Result<(), IoError> {
    use std::io::{Read, Seek, SeekFrom};
    let unreadable = |e: std::io::Error| IoError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let (mut pos, mut index) = (0u64, 0usize);
    let mut block = vec![0u8; 2880];
    'hdus: while pos.saturating_add(2880) <= len {
        file.seek(SeekFrom::Start(pos)).map_err(unreadable)?;
        let mut cards: Vec<String> = Vec::new();
        let mut blocks = 0;
        loop {
            if blocks == MAX_HEADER_BLOCKS || pos + 2880 * (blocks + 1) > len {
                break 'hdus;
            }
            file.read_exact(&mut block).map_err(unreadable)?;
            blocks += 1;
            let mut ended = false;
            for card in block.chunks(80) {
                let card = String::from_utf8_lossy(card).into_owned();
                ended = card.get(..8).is_some_and(|n| n.trim_end() == "END");
                if ended {
                    break;
                }
                cards.push(card);
            }
            if ended {
                break;
            }
        }
        let find = |name: &str| {
            cards
                .iter()
                .find(|c| c.get(..8).map(str::trim_end) == Some(name))
        };
        let int = |name: &str| -> Option<i64> { card_value(find(name)?).ok()?.parse().ok() };
        if find("ZIMAGE").and_then(|c| card_value(c).ok()).as_deref() == Some("T") {
            let hdu = match find("EXTNAME").and_then(|c| card_value(c).ok()) {
                Some(name) => format!("{index} ({})", name.trim_matches('\'').trim()),
                None => index.to_string(),
            };
            for card in &cards {
                let name = card.get(..8).unwrap_or("").trim_end();
                let min = match name.strip_prefix("ZTILE").or(name.strip_prefix("ZNAXIS")) {
                    Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                        i64::from(name.starts_with("ZTILE"))
                    }
                    _ => continue,
                };
                let value = card_value(card);
                if value
                    .as_deref()
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_none_or(|v| v < min)
                {
                    return Err(IoError::BadKeyword {
                        path: path.to_path_buf(),
                        hdu,
                        key: name.to_string(),
                        detail: format!(
                            "expected one integer >= {min}, found {:?}",
                            card.get(10..)
                                .unwrap_or("")
                                .split('/')
                                .next()
                                .unwrap_or("")
                                .trim()
                        ),
                    });
                }
            }
        }
        // The next HDU, past this one's data.
        let (Some(bitpix), Some(naxis)) = (int("BITPIX"), int("NAXIS")) else {
            break;
        };
        let mut elements: u128 = u128::from(naxis > 0);
        for i in 1..=naxis.clamp(0, 999) {
            let Some(n) = int(&format!("NAXIS{i}")).and_then(|n| u64::try_from(n).ok()) else {
                break 'hdus;
            };
            elements = elements.saturating_mul(u128::from(n));
        }
        let pcount = int("PCOUNT").unwrap_or(0).max(0) as u128;
        let gcount = int("GCOUNT").unwrap_or(1).max(0) as u128;
        let bytes = (u128::from(bitpix.unsigned_abs()) / 8)
            .saturating_mul(gcount)
            .saturating_mul(elements.saturating_add(pcount));
        let data = pos + 2880 * blocks;
        let Ok(next) = u64::try_from(u128::from(data) + bytes.div_ceil(2880) * 2880) else {
            break;
        };
        pos = next;
        index += 1;
    }
    Ok(())
}

/// Fills `piece`, the bytes from `offset` of a data unit of `nbytes` data bytes: the data that
/// `produce` encodes, then zeros (the record's fill). Returns the data's ones' complement sum.
fn fill_piece(
    produce: &mut impl FnMut(usize, &mut [u8]) -> u32,
    nbytes: usize,
    offset: usize,
    piece: &mut [u8],
) -> u32 {
    let data = piece.len().min(nbytes.saturating_sub(offset));
    let sum = if data > 0 {
        produce(offset, &mut piece[..data])
    } else {
        0
    };
    piece[data..].fill(0);
    sum
}

impl Drop for Fits {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let mut status: c_int = 0;
        // SAFETY: the pointer came from a successful open/create and was not closed by `close`.
        unsafe { sys::ffclos(self.ptr.as_ptr(), &mut status) };
    }
}

/// The version of the cfitsio library linked in, e.g. `4.6.3` (as `fits_get_version`).
pub fn cfitsio_version() -> String {
    let mut version: f32 = 0.0;
    // SAFETY: ffvers only writes the float behind the valid pointer.
    unsafe { sys::ffvers(&mut version) };
    // cfitsio encodes major.minor.micro as major + minor/100 + micro/10000.
    let v = (f64::from(version) * 10000.0).round() as i64;
    format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100)
}
