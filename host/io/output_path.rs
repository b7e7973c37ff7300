//! Output paths checked before anything is written: an output never replaces an input, another
//! output of the same run, a device node, a FIFO, a socket or a directory.
//!
//! Symbolic links are **followed**: writing to a link replaces the file it points to (the
//! temporary is created beside that file and renamed onto it), and the link stays a link, as
//! `cp` or an editor would do. A link that points nowhere (dangling) is refused rather than
//! guessed at. Two paths are the same file when their canonical paths are equal (`./x`, `x`,
//! `d/../x`, links) or, for files that exist, when they share device and inode (hard links).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::error::IoError;

/// An output path as it will be written.
#[derive(Clone, Debug)]
pub(crate) struct OutputPath {
    /// The file actually replaced: the path given, or the file its symbolic link names.
    pub real: PathBuf,
    /// The directory of `real`, where the temporary goes (`.` for a bare file name).
    pub dir: PathBuf,
    /// The file name of `real`.
    pub name: OsString,
}

impl OutputPath {
    /// Resolves `path` (following a symbolic link) and refuses what must not be replaced: a
    /// path without a file name, a dangling link, anything but a regular file where one exists,
    /// a missing directory. Errors are [`IoError::InvalidInput`] naming `path`.
    pub(crate) fn resolve(path: &Path) -> Result<Self, IoError> {
        let refuse = |detail: String| IoError::InvalidInput {
            path: path.to_path_buf(),
            detail,
        };
        if path.file_name().is_none() {
            return Err(refuse("output path has no file name".into()));
        }
        let real = match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => match fs::canonicalize(path) {
                Ok(target) => target,
                Err(_) => {
                    let to = fs::read_link(path)
                        .map(|t| t.display().to_string())
                        .unwrap_or_else(|_| "?".into());
                    return Err(refuse(format!(
                        "the output is a symbolic link to {to}, which does not exist: \
                         refusing to write through it"
                    )));
                }
            },
            _ => path.to_path_buf(),
        };
        if let Ok(meta) = fs::metadata(&real) {
            if !meta.is_file() {
                return Err(refuse(format!(
                    "the output exists and is {}: refusing to replace it",
                    kind_name(&meta.file_type())
                )));
            }
        }
        let Some(name) = real.file_name().map(|n| n.to_os_string()) else {
            return Err(refuse("output path has no file name".into()));
        };
        let dir = match real.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(refuse(format!(
                "output directory {} does not exist",
                dir.display()
            )));
        }
        Ok(Self { real, dir, name })
    }
}

/// "a directory", "a FIFO", ... for messages.
fn kind_name(kind: &fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// What makes two paths the same file.
#[derive(Debug)]
struct Identity {
    /// The canonical path (of the parent joined with the name where the file does not exist).
    canonical: PathBuf,
    /// Device and inode of an existing file.
    inode: Option<(u64, u64)>,
}

impl Identity {
    fn of(path: &Path) -> Self {
        match fs::metadata(path) {
            Ok(meta) => Self {
                canonical: fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
                inode: Some((meta.dev(), meta.ino())),
            },
            Err(_) => {
                let parent = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                let canonical = match (fs::canonicalize(parent), path.file_name()) {
                    (Ok(dir), Some(name)) => dir.join(name),
                    _ => path.to_path_buf(),
                };
                Self {
                    canonical,
                    inode: None,
                }
            }
        }
    }

    fn same(&self, other: &Identity) -> bool {
        self.canonical == other.canonical || (self.inode.is_some() && self.inode == other.inode)
    }
}

/// Checks a run's outputs before any work: each resolves ([`OutputPath::resolve`]: no device,
/// FIFO, directory or dangling link, an existing directory), none is the same file as an input
/// or as another output. Stale temporaries of each output left by dead processes are removed
/// (host/io/temp_name.rs). `inputs` and `outputs` are `(flag, path)` pairs, the flag naming the
/// path in messages (`-i`, `--trace`, ...).
///
/// # Errors
/// [`IoError::InvalidInput`] naming the output and the input or output it collides with.
pub fn check_outputs(inputs: &[(&str, &Path)], outputs: &[(&str, &Path)]) -> Result<(), IoError> {
    for (_, path) in outputs {
        let out = OutputPath::resolve(path)?;
        // Temporaries of killed earlier runs go now, whatever this run does next.
        super::temp_name::sweep_stale(&out.dir, &out.name);
    }
    let ins: Vec<Identity> = inputs.iter().map(|(_, p)| Identity::of(p)).collect();
    let outs: Vec<Identity> = outputs.iter().map(|(_, p)| Identity::of(p)).collect();
    for (i, ((flag, path), id)) in outputs.iter().zip(&outs).enumerate() {
        let collide = |detail: String| IoError::InvalidInput {
            path: path.to_path_buf(),
            detail,
        };
        if let Some(((in_flag, in_path), _)) = inputs.iter().zip(&ins).find(|(_, x)| x.same(id)) {
            return Err(collide(format!(
                "{flag} is the same file as the input {in_flag} {}: refusing to overwrite an input",
                in_path.display()
            )));
        }
        if let Some(((other_flag, other), _)) = outputs[..i]
            .iter()
            .zip(&outs[..i])
            .find(|(_, x)| x.same(id))
        {
            return Err(collide(format!(
                "{flag} is the same file as the output {other_flag} {}: each output needs its own file",
                other.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_file_by_path_link_and_inode() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = d.join("in.fits");
        fs::write(&input, b"x").unwrap();
        fs::hard_link(&input, d.join("hard.fits")).unwrap();
        std::os::unix::fs::symlink(&input, d.join("soft.fits")).unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        let ok = |outs: &[(&str, &Path)]| check_outputs(&[("-i", &input)], outs);
        for same in [
            d.join("hard.fits"),
            d.join("soft.fits"),
            d.join("sub/../in.fits"),
            d.join("./in.fits"),
        ] {
            let err = ok(&[("-o", &same)]).unwrap_err().to_string();
            assert!(err.contains("same file as the input -i"), "{err}");
        }
        let (a, b) = (d.join("a.fits"), d.join("sub/../a.fits"));
        let err = ok(&[("-o", &a), ("-m", &b)]).unwrap_err().to_string();
        assert!(
            err.contains("-m is the same file as the output -o"),
            "{err}"
        );
        ok(&[("-o", &a), ("-m", &d.join("b.fits"))]).unwrap();
    }

    #[test]
    fn special_files_and_dangling_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        for (path, want) in [
            (Path::new("/dev/null"), "a character device"),
            (d, "a directory"),
            (&d.join("dangling"), "does not exist: refusing"),
            (&d.join("no/such/dir.fits"), "does not exist"),
        ] {
            let err = OutputPath::resolve(path).unwrap_err().to_string();
            assert!(err.contains(want), "{}: {err}", path.display());
        }
        let target = d.join("target.fits");
        fs::write(&target, b"old").unwrap();
        std::os::unix::fs::symlink(&target, d.join("link.fits")).unwrap();
        let out = OutputPath::resolve(&d.join("link.fits")).unwrap();
        assert_eq!(out.real, fs::canonicalize(&target).unwrap());
        assert_eq!(out.name, "target.fits");
    }
}
