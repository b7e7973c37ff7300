//! The error type of the `io` module.

use std::path::PathBuf;

/// Every failure of FITS input or output. Each message names the file and the problem,
/// and where it applies the HDU, keyword, parameter, fiber or pixel.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The input file does not exist.
    #[error("{}: file not found", .path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The input exists but cannot be read (permissions, a directory, ...).
    #[error("cannot read {}: {reason}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why, e.g. `permission denied`.
        reason: String,
    },
    /// A size from a header is beyond what the file holds or beyond DESI's plausible range
    /// (checked before anything is allocated).
    #[error("{}, HDU {hdu}: {detail}", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The HDU.
        hdu: String,
        /// The size, what bounds it and the limit.
        detail: String,
    },
    /// Memory for data of a plausible size could not be allocated (a runtime failure).
    #[error("{}, HDU {hdu}: cannot allocate {bytes} bytes", .path.display())]
    OutOfMemory {
        /// The file.
        path: PathBuf,
        /// The HDU.
        hdu: String,
        /// The bytes asked for.
        bytes: usize,
    },
    /// The file exists but cfitsio cannot open it as FITS.
    #[error("{}: not a FITS file ({detail})", .path.display())]
    NotFits {
        /// The file.
        path: PathBuf,
        /// cfitsio's explanation.
        detail: String,
    },
    /// A required HDU is absent.
    #[error("{}: missing HDU {hdu}", .path.display())]
    MissingHdu {
        /// The file.
        path: PathBuf,
        /// The EXTNAME (or description) that was looked for.
        hdu: String,
    },
    /// A required header keyword is absent.
    #[error("{}, HDU {hdu}: missing keyword {key}", .path.display())]
    MissingKeyword {
        /// The file.
        path: PathBuf,
        /// The HDU searched.
        hdu: String,
        /// The keyword name.
        key: String,
    },
    /// A header keyword has a value that cannot be used.
    #[error("{}, HDU {hdu}: keyword {key}: {detail}", .path.display())]
    BadKeyword {
        /// The file.
        path: PathBuf,
        /// The HDU.
        hdu: String,
        /// The keyword name.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An HDU has the wrong kind, dimensions or size.
    #[error("{}, HDU {hdu}: wrong shape: {detail}", .path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// The HDU.
        hdu: String,
        /// Expected and found shapes.
        detail: String,
    },
    /// Data values that are not allowed (NaN coefficients, negative ivar, NaN pixels, ...).
    #[error("{}, HDU {hdu}: {detail}", .path.display())]
    BadData {
        /// The file.
        path: PathBuf,
        /// The HDU.
        hdu: String,
        /// What is wrong and where (parameter and fiber, or pixel (row, col)).
        detail: String,
    },
    /// The in-memory data handed to a writer are inconsistent (checked before anything is written).
    #[error("{}: cannot write: {detail}", .path.display())]
    InvalidInput {
        /// The output file.
        path: PathBuf,
        /// What is inconsistent.
        detail: String,
    },
    /// A cfitsio call failed.
    #[error("{}, HDU {hdu}: cfitsio {op} failed: {message} (status {status})", .path.display())]
    Cfitsio {
        /// The file.
        path: PathBuf,
        /// The current HDU when the call failed.
        hdu: String,
        /// What was being done.
        op: String,
        /// cfitsio status code.
        status: i32,
        /// cfitsio's text for the status code.
        message: String,
    },
    /// An operating-system error (creating, renaming or removing files).
    #[error("{}: {op}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// `describe` could not recognise the file.
    #[error("{}: not a DESI PSF, preproc or frame file ({detail})", .path.display())]
    NotDesi {
        /// The file.
        path: PathBuf,
        /// The HDU names that were found.
        detail: String,
    },
}

impl IoError {
    /// Whether the request is at fault (exit code 1: a bad, unreadable or missing file, a
    /// refused output path) rather than the run (exit code 2).
    ///
    /// Runtime failures: memory that could not be allocated; an OS error other than a bad path
    /// (disk full, a file size limit, an I/O error) while creating, flushing or renaming an
    /// output; cfitsio's WRITE_ERROR (106) and FILE_NOT_CLOSED (110); and any cfitsio failure
    /// on an output being written (its HDU label is `-` or `(new ...)`, the labels
    /// `Fits::create`, `create_image` and `create_bintable` give). A cfitsio failure while
    /// reading an existing HDU is the input file's fault.
    pub fn is_input_error(&self) -> bool {
        match self {
            IoError::OutOfMemory { .. } => false,
            IoError::Io { source, .. } => {
                use std::io::ErrorKind as K;
                matches!(
                    source.kind(),
                    K::NotFound
                        | K::PermissionDenied
                        | K::ReadOnlyFilesystem
                        | K::AlreadyExists
                        | K::IsADirectory
                        | K::NotADirectory
                        | K::InvalidFilename
                )
            }
            IoError::Cfitsio { hdu, status, .. } => {
                !(hdu == "-" || hdu.starts_with('(') || matches!(status, 106 | 110))
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IoError;
    use std::path::PathBuf;

    fn os_error(errno: i32) -> IoError {
        IoError::Io {
            path: PathBuf::from("frame.fits"),
            op: "writing",
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn a_full_disk_or_file_size_limit_is_a_runtime_failure_and_a_bad_path_an_input_error() {
        // ENOSPC (28), EFBIG (27), EIO (5), EDQUOT (122): the run failed (exit 2).
        for errno in [28, 27, 5, 122] {
            assert!(!os_error(errno).is_input_error(), "errno {errno}");
        }
        // ENOENT (2), EACCES (13), EISDIR (21), ENOTDIR (20), EROFS (30): the request (exit 1).
        for errno in [2, 13, 21, 20, 30] {
            assert!(os_error(errno).is_input_error(), "errno {errno}");
        }
        let write_error = |status| IoError::Cfitsio {
            path: PathBuf::from("frame.fits"),
            hdu: "FLUX".into(),
            op: "writing".into(),
            status,
            message: String::new(),
        };
        assert!(!write_error(106).is_input_error());
        assert!(write_error(104).is_input_error());
    }
}
