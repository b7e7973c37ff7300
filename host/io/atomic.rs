//! Atomic output: write to a temporary name in the destination directory, rename on success,
//! remove the temporary file on failure. A reader never sees a partial output file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::error::IoError;
use super::fits::Fits;

/// Distinguishes temporary names of concurrent writes within one process.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A pending output file. Dropping it without [`AtomicOutput::commit`] removes the temporary.
pub(crate) struct AtomicOutput {
    target: PathBuf,
    temp: PathBuf,
    committed: bool,
}

impl AtomicOutput {
    /// Reserves `<name>.tmp<pid>-<n>` beside `target` (nothing is created yet).
    pub(crate) fn new(target: &Path) -> Result<Self, IoError> {
        let Some(name) = target.file_name() else {
            return Err(IoError::InvalidInput {
                path: target.to_path_buf(),
                detail: "output path has no file name".into(),
            });
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(IoError::InvalidInput {
                path: target.to_path_buf(),
                detail: format!("output directory {} does not exist", dir.display()),
            });
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = name.to_os_string();
        temp_name.push(format!(".tmp{}-{n}", std::process::id()));
        Ok(AtomicOutput {
            target: target.to_path_buf(),
            temp: target.with_file_name(temp_name),
            committed: false,
        })
    }

    /// Creates the temporary FITS file. Errors name the final path.
    pub(crate) fn create_fits(&self) -> Result<Fits, IoError> {
        let mut fits = Fits::create(&self.temp).map_err(|e| match e {
            IoError::Cfitsio {
                op,
                status,
                message,
                ..
            } => IoError::Cfitsio {
                path: self.target.clone(),
                hdu: "-".into(),
                op: format!("{op} (temporary {})", self.temp.display()),
                status,
                message,
            },
            other => other,
        })?;
        fits.set_display_path(&self.target);
        Ok(fits)
    }

    /// Renames the finished temporary file to the target.
    pub(crate) fn commit(mut self) -> Result<(), IoError> {
        std::fs::rename(&self.temp, &self.target).map_err(|source| IoError::Io {
            path: self.target.clone(),
            op: "rename temporary output into place",
            source,
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the temporary may never have been created.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Runs `body` on a fresh temporary FITS file and moves it to `target` when everything,
/// including the final close (flush), succeeded. On any error no file is left behind and an
/// existing `target` is untouched.
pub(crate) fn write_atomically(
    target: &Path,
    body: impl FnOnce(&mut Fits) -> Result<(), IoError>,
) -> Result<(), IoError> {
    let out = AtomicOutput::new(target)?;
    let mut fits = out.create_fits()?;
    body(&mut fits)?;
    fits.close()?;
    out.commit()
}
