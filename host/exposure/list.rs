//! The exposures of a multi-exposure job: every exposure of a desispec production tree, or
//! those of a list file.
//!
//! A production tree (desispec's `findfile` layout, the `$DESI_SPECTRO_REDUX/$SPECPROD`
//! directory) holds `preproc/NIGHT/EXPID/preproc-CAM-EXPID.fits` and
//! `exposures/NIGHT/EXPID/psf-CAM-EXPID.fits`; the frames go to
//! `exposures/NIGHT/EXPID/frame-CAM-EXPID.fits` (NIGHT is YYYYMMDD, EXPID zero-padded to 8
//! digits). A list file names one exposure per line, either `NIGHT EXPID` (in the production
//! tree) or `EXPID INDIR OUTDIR` (preproc images and PSFs in INDIR, as `exposure --indir`
//! reads them); fields are separated by blanks or commas, `#` starts a comment.

use super::jobs::{expid_text, ExposureDirs};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why the exposures of a job could not be listed (a bad request: exit code 1).
#[derive(Debug, Error)]
pub enum ListError {
    /// A directory or file could not be read.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A line of a list file is not an exposure.
    #[error("{}:{line}: {reason}", path.display())]
    Line {
        /// The list file.
        path: PathBuf,
        /// Line number (1-based).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The production tree has no `preproc/` directory.
    #[error("{}: not a desispec production directory (no preproc/ directory in it)", .0.display())]
    NotATree(PathBuf),
    /// Nothing to extract.
    #[error("{0}: no exposure found")]
    Empty(String),
}

/// Parses a night, YYYYMMDD.
fn parse_night(text: &str) -> Option<u32> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
        .filter(|n| *n >= 19_000_101)
}

/// Parses an exposure id (digits, as desispec's directories write it, zero-padded or not).
fn parse_expid(text: &str) -> Option<u64> {
    (!text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// The directories of exposure `expid` of `night` in the production tree `specprod`.
pub fn in_tree(specprod: &Path, night: u32, expid: u64) -> ExposureDirs {
    let sub = Path::new(&night.to_string()).join(expid_text(expid));
    let exposures = specprod.join("exposures").join(&sub);
    ExposureDirs {
        night: Some(night),
        expid,
        preproc_dir: specprod.join("preproc").join(&sub),
        psf_dir: exposures.clone(),
        outdir: exposures,
    }
}

/// The sub-directories of `dir` whose names `parse` accepts, sorted by value (others are
/// ignored: a production tree holds other files beside them).
fn numbered_dirs<T: Ord + Copy>(
    dir: &Path,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ListError> {
    let io = |source| ListError::Io {
        path: dir.to_path_buf(),
        what: "cannot list the directory",
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if let Some(value) = name.to_str().and_then(&parse) {
            if entry.path().is_dir() {
                found.push(value);
            }
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Every exposure of the production tree `specprod` with a `preproc/NIGHT/EXPID/`
/// directory, by night then exposure id; only the nights of `nights` when it is not empty.
///
/// # Errors
/// No `preproc/` directory, a directory that cannot be listed, or no exposure at all.
pub fn from_tree(specprod: &Path, nights: &[u32]) -> Result<Vec<ExposureDirs>, ListError> {
    let preproc = specprod.join("preproc");
    if !preproc.is_dir() {
        return Err(ListError::NotATree(specprod.to_path_buf()));
    }
    let mut exposures = Vec::new();
    for night in numbered_dirs(&preproc, parse_night)? {
        if !nights.is_empty() && !nights.contains(&night) {
            continue;
        }
        for expid in numbered_dirs(&preproc.join(night.to_string()), parse_expid)? {
            exposures.push(in_tree(specprod, night, expid));
        }
    }
    if exposures.is_empty() {
        let which = if nights.is_empty() {
            String::new()
        } else {
            format!(
                " for night(s) {}",
                nights
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        return Err(ListError::Empty(format!(
            "{}{which}",
            preproc.join("NIGHT/EXPID").display()
        )));
    }
    Ok(exposures)
}

/// The exposures of the list file `path` (see the module's documentation); `specprod` is the
/// production tree of `NIGHT EXPID` lines.
///
/// # Errors
/// The file cannot be read; a line that is not an exposure, a `NIGHT EXPID` line without
/// `specprod`, or an exposure listed twice (the error names the file and the line); no
/// exposure at all.
pub fn from_list(path: &Path, specprod: Option<&Path>) -> Result<Vec<ExposureDirs>, ListError> {
    let text = std::fs::read_to_string(path).map_err(|source| ListError::Io {
        path: path.to_path_buf(),
        what: "cannot read the exposure list",
        source,
    })?;
    let mut exposures = Vec::new();
    let mut seen = HashSet::new();
    for (number, raw) in text.lines().enumerate() {
        let fail = |reason: String| ListError::Line {
            path: path.to_path_buf(),
            line: number + 1,
            reason,
        };
        let content = raw.split('#').next().unwrap_or("");
        let fields: Vec<&str> = content
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|f| !f.is_empty())
            .collect();
        let dirs = match fields.as_slice() {
            [] => continue,
            [night, expid] => {
                let night = parse_night(night)
                    .ok_or_else(|| fail(format!("'{night}' is not a night (YYYYMMDD)")))?;
                let expid = parse_expid(expid)
                    .ok_or_else(|| fail(format!("'{expid}' is not an exposure id")))?;
                let root = specprod.ok_or_else(|| {
                    fail("a NIGHT EXPID line needs the production directory (--specprod)".into())
                })?;
                in_tree(root, night, expid)
            }
            [expid, indir, outdir] => {
                let expid = parse_expid(expid)
                    .ok_or_else(|| fail(format!("'{expid}' is not an exposure id")))?;
                ExposureDirs::flat(Path::new(indir), Path::new(outdir), expid)
            }
            _ => {
                return Err(fail(format!(
                    "expected 'NIGHT EXPID' or 'EXPID INDIR OUTDIR', found {} field(s)",
                    fields.len()
                )))
            }
        };
        if !seen.insert((dirs.outdir.clone(), dirs.expid)) {
            return Err(fail(format!(
                "exposure {} into {} is listed twice",
                expid_text(dirs.expid),
                dirs.outdir.display()
            )));
        }
        exposures.push(dirs);
    }
    if exposures.is_empty() {
        return Err(ListError::Empty(path.display().to_string()));
    }
    Ok(exposures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_production_tree_lists_its_exposures_by_night_and_expid() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (night, expid) in [
            ("20201215", "00000120"),
            ("20201214", "00000101"),
            ("20201214", "00000099"),
        ] {
            std::fs::create_dir_all(root.join("preproc").join(night).join(expid)).unwrap();
        }
        // Not nights or exposures: ignored.
        std::fs::create_dir_all(root.join("preproc/README")).unwrap();
        std::fs::create_dir_all(root.join("preproc/20201214/tilepix")).unwrap();
        std::fs::write(root.join("preproc/20201214/00000100"), b"").unwrap();

        let all = from_tree(root, &[]).unwrap();
        let ids: Vec<(Option<u32>, u64)> = all.iter().map(|e| (e.night, e.expid)).collect();
        assert_eq!(
            ids,
            [
                (Some(20201214), 99),
                (Some(20201214), 101),
                (Some(20201215), 120)
            ]
        );
        assert_eq!(
            all[0].preproc_dir,
            root.join("preproc/20201214/00000099"),
            "desispec's preproc directory"
        );
        assert_eq!(all[0].psf_dir, root.join("exposures/20201214/00000099"));
        assert_eq!(all[0].outdir, all[0].psf_dir);
        let one = from_tree(root, &[20201215]).unwrap();
        assert_eq!(one.len(), 1);
        let err = from_tree(root, &[20201216]).unwrap_err().to_string();
        assert!(
            err.contains("no exposure found") && err.contains("20201216"),
            "{err}"
        );
        let err = from_tree(&root.join("preproc"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no preproc/ directory"), "{err}");
    }

    #[test]
    fn a_list_file_names_exposures_and_its_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("exposures.txt");
        std::fs::write(
            &list,
            "# night expid\n20201214 101\n\n7, /data/in, /data/out  # flat directories\n",
        )
        .unwrap();
        let root = Path::new("/prod");
        let found = from_list(&list, Some(root)).unwrap();
        assert_eq!(found[0], in_tree(root, 20201214, 101));
        assert_eq!(
            found[1],
            ExposureDirs::flat(Path::new("/data/in"), Path::new("/data/out"), 7)
        );

        let cases = [
            ("20201214 101\n2020121 5\n", ":2: '2020121' is not a night"),
            ("20201214 x1\n", ":1: 'x1' is not an exposure id"),
            (
                "1 2 3 4\n",
                ":1: expected 'NIGHT EXPID' or 'EXPID INDIR OUTDIR', found 4",
            ),
            (
                "5 in out\n# again\n5 other out\n",
                ":3: exposure 00000005 into out is listed twice",
            ),
            ("# nothing\n", "no exposure found"),
        ];
        for (text, expect) in cases {
            std::fs::write(&list, text).unwrap();
            let err = from_list(&list, Some(root)).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
            assert!(err.contains("exposures.txt"), "{err}");
        }
        std::fs::write(&list, "20201214 101\n").unwrap();
        let err = from_list(&list, None).unwrap_err().to_string();
        assert!(err.contains(":1: a NIGHT EXPID line needs"), "{err}");
        let err = from_list(&dir.path().join("missing.txt"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.txt: cannot read the exposure list"),
            "{err}"
        );
    }
}
