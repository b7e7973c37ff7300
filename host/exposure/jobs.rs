//! The frames of an exposure: which cameras have a preproc file in the input directory, where
//! their PSFs are and where their frames go (desi_proc's file names), which are skipped
//! because their frame exists and is verified, which are redone (and why), and which cameras
//! have a PSF but no preproc file.

use super::cameras::all_cameras;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where one exposure's files are: desi_proc's layout puts the preproc images under
/// `preproc/NIGHT/EXPID/` and the PSFs and frames under `exposures/NIGHT/EXPID/`; `exposure`
/// reads both from one directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureDirs {
    /// The night (YYYYMMDD) when known (desispec layout or list file).
    pub night: Option<u32>,
    /// Exposure id.
    pub expid: u64,
    /// Directory of `preproc-{camera}-{EXPID}.fits`.
    pub preproc_dir: PathBuf,
    /// Directory of `psf-{camera}-{EXPID}.fits`.
    pub psf_dir: PathBuf,
    /// Directory of `frame-{camera}-{EXPID}.fits`.
    pub outdir: PathBuf,
}

impl ExposureDirs {
    /// One directory for the preproc images and PSFs, as `exposure --indir` reads them.
    pub fn flat(indir: &Path, outdir: &Path, expid: u64) -> Self {
        Self {
            night: None,
            expid,
            preproc_dir: indir.to_path_buf(),
            psf_dir: indir.to_path_buf(),
            outdir: outdir.to_path_buf(),
        }
    }
}

/// The files of one frame of the exposure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameFiles {
    /// Camera name, e.g. `r3`.
    pub camera: String,
    /// `INDIR/preproc-{camera}-{EXPID}.fits` (or `.fits.gz`).
    pub preproc: PathBuf,
    /// `INDIR/psf-{camera}-{EXPID}.fits`.
    pub psf: PathBuf,
    /// `OUTDIR/frame-{camera}-{EXPID}.fits`.
    pub output: PathBuf,
}

/// The exposure id as file names write it: zero-padded to 8 digits.
pub fn expid_text(expid: u64) -> String {
    format!("{expid:08}")
}

impl FrameFiles {
    /// The files of `camera` in exposure `expid`.
    pub fn new(camera: &str, indir: &Path, outdir: &Path, expid: u64) -> Self {
        Self::in_dirs(camera, &ExposureDirs::flat(indir, outdir, expid))
    }

    /// The files of `camera` in the exposure of `dirs` (desi_proc's names: `preproc-`, `psf-`
    /// and `frame-{camera}-{EXPID}.fits`, the PSF being the one desi_proc passes to
    /// `desi_extract_spectra`).
    ///
    /// The preproc image may be gzip-compressed, as desispec writes it by default
    /// (`preproc-{camera}-{EXPID}.fits.gz`, `DESI_COMPRESSION`): that name is taken when the
    /// plain one does not exist.
    pub fn in_dirs(camera: &str, dirs: &ExposureDirs) -> Self {
        let expid = expid_text(dirs.expid);
        let plain = dirs
            .preproc_dir
            .join(format!("preproc-{camera}-{expid}.fits"));
        let gzipped = plain.with_extension("fits.gz");
        let preproc = if !plain.exists() && gzipped.is_file() {
            gzipped
        } else {
            plain
        };
        Self {
            camera: camera.to_string(),
            preproc,
            psf: dirs.psf_dir.join(format!("psf-{camera}-{expid}.fits")),
            output: dirs.outdir.join(format!("frame-{camera}-{expid}.fits")),
        }
    }
}

/// What [`discover`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Frames to extract, in desi_proc's camera order (b0 r0 z0 b1 ...).
    pub frames: Vec<FrameFiles>,
    /// Cameras whose frame exists and passed the check (skipped unless `overwrite`).
    pub skipped: Vec<String>,
    /// Cameras whose frame exists but failed the check, with the reason: extracted again.
    pub redone: Vec<(String, String)>,
    /// Cameras with a PSF file but no preproc file: no frame can be made for them.
    pub missing_preproc: Vec<String>,
}

impl Discovery {
    /// Whether no preproc file of the exposure was found at all.
    pub fn no_input(&self) -> bool {
        self.frames.is_empty() && self.skipped.is_empty()
    }
}

/// The frames of exposure `expid` whose preproc file is in `indir`: those whose frame is not
/// yet in `outdir` or whose frame fails `keep` (all of them with `overwrite`), the cameras
/// skipped, those redone and why, and the cameras with a PSF but no preproc. `keep` says
/// whether an existing frame may stay (`Err(reason)` when not). The PSF of a preproc is not
/// looked for here: a missing PSF fails its frame alone, when it is read.
pub fn discover(
    indir: &Path,
    outdir: &Path,
    expid: u64,
    overwrite: bool,
    keep: impl Fn(&FrameFiles) -> Result<(), String>,
) -> Discovery {
    discover_in(&ExposureDirs::flat(indir, outdir, expid), overwrite, keep)
}

/// [`discover`] for the exposure of `dirs` (preproc images and PSFs in their directories).
pub fn discover_in(
    dirs: &ExposureDirs,
    overwrite: bool,
    keep: impl Fn(&FrameFiles) -> Result<(), String>,
) -> Discovery {
    let mut found = Discovery::default();
    for camera in all_cameras() {
        let files = FrameFiles::in_dirs(&camera, dirs);
        if !files.preproc.is_file() {
            if files.psf.is_file() {
                found.missing_preproc.push(camera);
            }
            continue;
        }
        if files.output.exists() && !overwrite {
            match keep(&files) {
                Ok(()) => found.skipped.push(camera),
                Err(reason) => {
                    found.redone.push((camera, reason));
                    found.frames.push(files);
                }
            }
        } else {
            found.frames.push(files);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: PathBuf) {
        std::fs::write(path, b"").unwrap();
    }

    #[test]
    fn finds_preprocs_in_camera_order_and_skips_done_frames() {
        let dir = tempfile::tempdir().unwrap();
        let (indir, outdir) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::create_dir_all(&indir).unwrap();
        std::fs::create_dir_all(&outdir).unwrap();
        for camera in ["z1", "b0", "r1", "r0"] {
            touch(indir.join(format!("preproc-{camera}-00000042.fits")));
        }
        // Other exposures, a PSF without preproc and a directory named like a preproc.
        touch(indir.join("preproc-b1-00000043.fits"));
        touch(indir.join("psf-z0-00000042.fits"));
        std::fs::create_dir(indir.join("preproc-b2-00000042.fits")).unwrap();
        touch(outdir.join("frame-r0-00000042.fits"));
        touch(outdir.join("frame-z1-00000042.fits"));
        // desispec's gzip-compressed preproc name counts when the plain one is absent.
        touch(indir.join("preproc-b3-00000042.fits.gz"));
        // r0's frame passes the check, z1's does not.
        let keep = |f: &FrameFiles| match f.camera.as_str() {
            "r0" => Ok(()),
            _ => Err("truncated".to_string()),
        };

        let found = discover(&indir, &outdir, 42, false, keep);
        let cameras: Vec<&str> = found.frames.iter().map(|f| f.camera.as_str()).collect();
        assert_eq!(cameras, ["b0", "r1", "z1", "b3"]);
        assert_eq!(
            found.frames[3].preproc,
            indir.join("preproc-b3-00000042.fits.gz")
        );
        assert_eq!(
            found.frames[3].output,
            outdir.join("frame-b3-00000042.fits")
        );
        assert_eq!(found.skipped, ["r0"]);
        assert_eq!(found.redone, [("z1".to_string(), "truncated".to_string())]);
        assert_eq!(found.missing_preproc, ["z0"]);
        assert!(!found.no_input());
        assert_eq!(found.frames[1], FrameFiles::new("r1", &indir, &outdir, 42));
        assert_eq!(
            found.frames[1].psf,
            indir.join("psf-r1-00000042.fits"),
            "the PSF of the same camera and exposure"
        );
        assert_eq!(
            found.frames[0].output,
            outdir.join("frame-b0-00000042.fits")
        );

        let all = discover(&indir, &outdir, 42, true, keep);
        assert_eq!(all.frames.len(), 5);
        assert!(all.skipped.is_empty() && all.redone.is_empty());
        let none = discover(&indir, &outdir, 7, false, keep);
        assert_eq!(none, Discovery::default());
        assert!(none.no_input());
    }

    #[test]
    fn expids_are_zero_padded_to_8_digits() {
        assert_eq!(expid_text(51060), "00051060");
        assert_eq!(expid_text(123_456_789), "123456789");
    }
}
