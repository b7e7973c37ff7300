//! The frames of an exposure: which cameras have a preproc file in the input directory, where
//! their PSFs are and where their frames go (desi_proc's file names), and which are skipped
//! because their frame exists.

use super::cameras::all_cameras;
use std::path::{Path, PathBuf};

/// The files of one frame of the exposure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameFiles {
    /// Camera name, e.g. `r3`.
    pub camera: String,
    /// `INDIR/preproc-{camera}-{EXPID}.fits`.
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
        let expid = expid_text(expid);
        Self {
            camera: camera.to_string(),
            preproc: indir.join(format!("preproc-{camera}-{expid}.fits")),
            psf: indir.join(format!("psf-{camera}-{expid}.fits")),
            output: outdir.join(format!("frame-{camera}-{expid}.fits")),
        }
    }
}

/// What [`discover`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Frames to extract, in desi_proc's camera order (b0 r0 z0 b1 ...).
    pub frames: Vec<FrameFiles>,
    /// Cameras whose frame exists (skipped unless `overwrite`).
    pub skipped: Vec<String>,
}

/// The frames of exposure `expid` whose preproc file is in `indir`: those whose frame is not
/// yet in `outdir` (all of them with `overwrite`), and the cameras skipped. The PSF is not
/// looked for here: a missing PSF fails its frame alone, when it is read.
pub fn discover(indir: &Path, outdir: &Path, expid: u64, overwrite: bool) -> Discovery {
    let mut found = Discovery::default();
    for camera in all_cameras() {
        let files = FrameFiles::new(&camera, indir, outdir, expid);
        if !files.preproc.is_file() {
            continue;
        }
        if files.output.exists() && !overwrite {
            found.skipped.push(camera);
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

        let found = discover(&indir, &outdir, 42, false);
        let cameras: Vec<&str> = found.frames.iter().map(|f| f.camera.as_str()).collect();
        assert_eq!(cameras, ["b0", "r1", "z1"]);
        assert_eq!(found.skipped, ["r0"]);
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

        let all = discover(&indir, &outdir, 42, true);
        assert_eq!(all.frames.len(), 4);
        assert!(all.skipped.is_empty());
        assert_eq!(discover(&indir, &outdir, 7, false), Discovery::default());
    }

    #[test]
    fn expids_are_zero_padded_to_8_digits() {
        assert_eq!(expid_text(51060), "00051060");
        assert_eq!(expid_text(123_456_789), "123456789");
    }
}
