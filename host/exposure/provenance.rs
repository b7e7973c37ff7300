//! Which frames on disk a rerun may keep: a frame written by `exposure` records the digest of
//! its inputs and options (the INPUTSUM keyword of its FLUX header: XXH3-128 of the PSF and
//! preproc bytes, the camera, the grid and the extraction parameters). A rerun skips an
//! existing frame only when every HDU's CHECKSUM/DATASUM verifies, the file reads back as a
//! frame and its INPUTSUM equals the digest of this run's inputs; any other frame (truncated,
//! corrupt, from other inputs or options, or written without INPUTSUM) is extracted again and
//! the reason reported.

use super::jobs::FrameFiles;
use super::ExposureConfig;
use crate::io::{self, KeywordValue};
use std::io::Read;
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

/// The header keyword holding the digest.
pub const INPUT_DIGEST_KEY: &str = "INPUTSUM";

/// Feeds `path`'s length and bytes to `hasher`.
fn hash_file(hasher: &mut Xxh3, path: &Path) -> Result<(), String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    hasher.update(&total.to_le_bytes());
    Ok(())
}

/// The digest of a frame's inputs and options, as 32 hex digits.
///
/// # Errors
/// An input that cannot be read, or an unknown camera (the text names it).
pub fn input_digest(config: &ExposureConfig, files: &FrameFiles) -> Result<String, String> {
    let (grid, params) = config.frame_setup(&files.camera)?;
    let mut hasher = Xxh3::new();
    // The options: camera, grid and every extraction parameter (Debug prints f64 exactly).
    let options = format!(
        "desi-extract exposure v1\0{}\0{:?}\0{:?}\0",
        files.camera,
        (grid.wmin.to_bits(), grid.wmax.to_bits(), grid.dw.to_bits()),
        params
    );
    hasher.update(options.as_bytes());
    hash_file(&mut hasher, &files.psf)?;
    hash_file(&mut hasher, &files.preproc)?;
    Ok(format!("{:032x}", hasher.digest128()))
}

/// `Ok` when the frame at `files.output` is a complete, valid frame of this run's inputs and
/// options, else why not (the frame is then extracted again).
pub fn check_existing(config: &ExposureConfig, files: &FrameFiles) -> Result<(), String> {
    let path = &files.output;
    match io::checksums_ok(path) {
        Ok(true) => {}
        Ok(false) => return Err("its CHECKSUM/DATASUM are missing or wrong".into()),
        Err(e) => return Err(format!("it is incomplete or unreadable ({e})")),
    }
    let frame = io::read_frame(path).map_err(|e| format!("it is not a valid frame ({e})"))?;
    let recorded = match io::find_keyword(&frame.header, INPUT_DIGEST_KEY) {
        Some(KeywordValue::Str(s)) => s,
        _ => {
            return Err(format!(
                "it has no {INPUT_DIGEST_KEY} (not written by desi-extract exposure)"
            ))
        }
    };
    let digest = input_digest(config, files)?;
    if recorded.trim() == digest {
        Ok(())
    } else {
        Err("it was extracted from other inputs or options".into())
    }
}
