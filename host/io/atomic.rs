//! Atomic output: write to a temporary file in the destination directory, flush it to disk and
//! rename it over the target on success (then flush the directory), remove it on failure. A
//! reader never sees a partial output file, and a failed write leaves an existing target
//! untouched.
//!
//! Every writer of the crate goes through here: the FITS writers ([`write_atomically`]), the
//! QA picture and the trace JSON ([`write_file_atomically`]). Before anything is created the
//! target is resolved ([`OutputPath`]: symbolic links followed, devices, FIFOs, directories
//! and dangling links refused) and stale temporaries of dead processes are swept
//! ([`temp_name`](super::temp_name)). The temporaries are `tempfile` named temporaries
//! (removed when dropped, so on every error path) named
//! `<name>.tmp<pid>@<host>.<random><extension>`, keeping the final extension (`.fits`,
//! `.fits.gz`, `.png`) for tools that look at it.
//!
//! The data units of a FITS output go to the disk while the rest is written
//! ([`EarlyWriteback`]), so that the flush before the rename has little left to wait for.
//!
//! A FITS target whose name ends in `.gz` is gzip-compressed: cfitsio writes the FITS file to
//! an uncompressed temporary, which is then compressed into the final temporary (`flate2`,
//! zlib-rs) and removed. Errors while writing (disk full, file size limit, I/O errors) are
//! runtime failures ([`IoError::is_input_error`] is false for them).

use std::ffi::OsString;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use tempfile::{Builder, NamedTempFile, TempPath};

use super::error::IoError;
use super::fits::Fits;
use super::output_path::OutputPath;
use super::temp_name;
use super::writeback::EarlyWriteback;

/// gzip level of compressed outputs. On a full r frame (500 x 2326, 69.8 MB of FITS), CPU
/// seconds and size: zlib-rs level 1 1.1 s, 62.1 MB; level 2 2.0 s, 47.2 MB; level 6 2.35 s,
/// 47.1 MB; cfitsio's own gzip (zlib level 1, whole file in memory) 2.3 s, 42.9 MB.
const GZIP_LEVEL: u32 = 2;

/// A validated output: where its temporaries go and the file the rename replaces.
struct Target<'a> {
    /// The path as given (messages name it).
    path: &'a Path,
    /// The resolved path.
    out: OutputPath,
}

impl<'a> Target<'a> {
    /// Checks `path` before anything is created and sweeps stale temporaries of it.
    fn new(path: &'a Path) -> Result<Self, IoError> {
        let out = OutputPath::resolve(path)?;
        temp_name::sweep_stale(&out.dir, &out.name);
        Ok(Target { path, out })
    }

    /// Whether the target is gzip-compressed (its name ends in `.gz`).
    fn gzip(&self) -> bool {
        self.out.name.as_encoded_bytes().ends_with(b".gz")
    }

    /// Creates a temporary beside the target, ending in `suffix`, through `create`, which must
    /// fail with [`std::io::ErrorKind::AlreadyExists`] when its path is taken (another name is
    /// then tried). New files are readable as the umask allows, like any output (not `0600`).
    fn temp<R>(
        &self,
        suffix: &OsString,
        create: impl FnMut(&Path) -> std::io::Result<R>,
    ) -> Result<NamedTempFile<R>, IoError> {
        let prefix = temp_name::prefix(&self.out.name);
        let mut builder = Builder::new();
        builder.prefix(&prefix).suffix(suffix);
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        builder
            .make_in(&self.out.dir, create)
            .map_err(|source| self.io_err("create the temporary output", source))
    }

    /// The final extension (`.fits.gz`), kept by the temporary.
    fn extension(&self) -> OsString {
        temp_name::extension(&self.out.name)
    }

    /// Flushes the finished temporary file to disk, renames it to the target and flushes the
    /// directory (so the rename itself survives a crash).
    fn commit(&self, file: &std::fs::File, temp: TempPath) -> Result<(), IoError> {
        file.sync_all()
            .map_err(|source| self.io_err("flush the temporary output to disk", source))?;
        temp.persist(&self.out.real)
            .map_err(|e| self.io_err("rename the temporary output into place", e.error))?;
        match std::fs::File::open(&self.out.dir).and_then(|d| d.sync_all()) {
            // Some file systems cannot sync a directory: the rename is done all the same.
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
                Err(self.io_err("flush the output directory to disk", e))
            }
            _ => Ok(()),
        }
    }

    /// An OS error naming the target.
    fn io_err(&self, op: &'static str, source: std::io::Error) -> IoError {
        IoError::Io {
            path: self.path.to_path_buf(),
            op,
            source,
        }
    }
}

/// Whether a FITS temporary's data units go to the disk as they are written
/// ([`EarlyWriteback`]): yes for the file renamed into place, no for the uncompressed
/// intermediate of a gzip output (removed once compressed, never flushed).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writeback {
    Early,
    AtTheEnd,
}

/// Writes a FITS temporary ending in `suffix` through `body` and closes it: its path (removed
/// when dropped). Errors name `target`.
fn fits_temp(
    out: &Target,
    suffix: &OsString,
    writeback: Writeback,
    body: impl FnOnce(&mut Fits) -> Result<(), IoError>,
) -> Result<TempPath, IoError> {
    let target = out.path;
    // cfitsio creates the file itself (and refuses an existing one): it is the temporary's
    // creator. Its own error is kept for the message.
    let mut failure = None;
    let temp = out.temp(suffix, |path| {
        Fits::create(path).map_err(|e| {
            let kind = if path.exists() {
                std::io::ErrorKind::AlreadyExists
            } else {
                std::io::ErrorKind::Other
            };
            let io = std::io::Error::new(kind, e.to_string());
            failure = Some(e);
            io
        })
    });
    let (mut fits, temp) = match (temp, failure) {
        (Ok(t), _) => t.into_parts(),
        (
            Err(_),
            Some(IoError::Cfitsio {
                path,
                op,
                status,
                message,
                ..
            }),
        ) => {
            return Err(IoError::Cfitsio {
                path: target.to_path_buf(),
                hdu: "-".into(),
                op: format!("{op} (temporary {})", path.display()),
                status,
                message,
            })
        }
        (Err(_), Some(other)) => return Err(other),
        (Err(e), None) => return Err(e),
    };
    if writeback == Writeback::Early {
        if let Some(early) = EarlyWriteback::open(&temp) {
            fits.write_back_early(early);
        }
    }
    fits.set_display_path(target);
    if let Err(e) = body(&mut fits) {
        // Close before `temp` removes the file.
        drop(fits);
        return Err(e);
    }
    fits.close()?;
    Ok(temp)
}

/// Compresses the finished FITS temporary `plain` into a new temporary of `out` (gzip) and
/// renames that into place.
fn commit_gzip(out: &Target, plain: &Path) -> Result<(), IoError> {
    let source = std::fs::File::open(plain)
        .map_err(|source| out.io_err("reopen the temporary output", source))?;
    let mut temp = out.temp(&out.extension(), |path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    })?;
    {
        let mut encoder = GzEncoder::new(
            BufWriter::with_capacity(1 << 20, temp.as_file_mut()),
            Compression::new(GZIP_LEVEL),
        );
        std::io::copy(&mut BufReader::with_capacity(1 << 20, source), &mut encoder)
            .map_err(|source| out.io_err("compress the temporary output", source))?;
        encoder
            .finish()
            .and_then(|mut w| w.flush())
            .map_err(|source| out.io_err("write the compressed temporary output", source))?;
    }
    let (file, path) = temp.into_parts();
    out.commit(&file, path)
}

/// Runs `body` on a fresh temporary FITS file and moves it to `target` when everything,
/// including the final close (flush), succeeded. On any error no file is left behind and an
/// existing `target` is untouched. Errors name `target`.
pub(crate) fn write_atomically(
    target: &Path,
    body: impl FnOnce(&mut Fits) -> Result<(), IoError>,
) -> Result<(), IoError> {
    let out = Target::new(target)?;
    if out.gzip() {
        // The uncompressed intermediate: the same name without `.gz`.
        let ext = out.extension();
        let plain_ext = OsString::from(
            ext.to_string_lossy()
                .strip_suffix(".gz")
                .unwrap_or_default()
                .to_string(),
        );
        let plain = fits_temp(&out, &plain_ext, Writeback::AtTheEnd, body)?;
        return commit_gzip(&out, &plain);
    }
    let temp = fits_temp(&out, &out.extension(), Writeback::Early, body)?;
    let file = std::fs::File::open(&temp)
        .map_err(|source| out.io_err("reopen the temporary output", source))?;
    out.commit(&file, temp)
}

/// Writes `target` through `body` (given a buffered writer on a temporary file beside it),
/// then flushes, syncs and renames the temporary into place. On any error, of `body` or of
/// the file system, the temporary is removed and an existing `target` is untouched. The
/// errors of this function are [`IoError`]s naming `target`, converted into `E`.
pub(crate) fn write_file_atomically<E: From<IoError>>(
    target: &Path,
    body: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E> {
    let out = Target::new(target)?;
    let mut temp = out.temp(&out.extension(), |path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    })?;
    {
        let mut writer = BufWriter::new(temp.as_file_mut());
        body(&mut writer)?;
        writer
            .flush()
            .map_err(|source| out.io_err("write the temporary output", source))?;
    }
    let (file, path) = temp.into_parts();
    Ok(out.commit(&file, path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn temporary_carries_name_pid_and_extension() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("frame.fits.gz");
        let out = Target::new(&target).unwrap();
        let temp = out
            .temp(&out.extension(), |p| std::fs::File::create_new(p))
            .unwrap();
        let name = temp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let start = format!("frame.fits.gz.tmp{}@", std::process::id());
        assert!(
            name.starts_with(&start) && name.ends_with(".fits.gz"),
            "{name}"
        );
        assert_eq!(temp.path().parent(), Some(dir.path()));
        drop(temp);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn file_is_replaced_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.json");
        write_file_atomically::<IoError>(&target, |w| {
            w.write_all(b"first").map_err(|e| IoError::Io {
                path: target.clone(),
                op: "write",
                source: e,
            })
        })
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"first");

        // A failing body: the old content stays, no temporary is left.
        let err = write_file_atomically(&target, |w| {
            w.write_all(b"partial").unwrap();
            Err(IoError::InvalidInput {
                path: target.clone(),
                detail: "stop".into(),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("stop"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"first");
        assert_eq!(names(dir.path()), ["out.json"]);

        // Readable like a file written directly (the umask applies, not tempfile's 0600).
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&target), mode(&plain));
    }

    #[test]
    fn bad_targets_are_input_errors() {
        let err =
            write_file_atomically::<IoError>(Path::new("/nonexistent-dir-x/a.png"), |_| Ok(()))
                .unwrap_err();
        assert!(
            matches!(err, IoError::InvalidInput { .. })
                && err.to_string().contains("does not exist"),
            "{err}"
        );
        let err = write_file_atomically::<IoError>(Path::new("/"), |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("no file name"), "{err}");
    }

    #[test]
    fn fits_temporary_is_removed_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.fits");
        let err = write_atomically(&target, |fits| {
            assert!(fits.path() == target.as_path());
            Err(IoError::InvalidInput {
                path: target.clone(),
                detail: "body failed".into(),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("body failed"));
        assert!(names(dir.path()).is_empty());
    }
}
