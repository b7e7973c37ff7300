//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod blocks;

use desi_extract::extract::{extract_frame, Extraction};
use desi_extract::io::{read_psf, PreprocImage};
use desi_extract::job::FrameJob;
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::psf::GaussHermitePsf;
use desi_extract::solve::CpuBackend;
use desi_extract::trace::Trace;
use std::path::{Path, PathBuf};

/// The real DESI r0 PSF bundled in data/ (see data/README.md).
pub const PSF_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

/// Reads the shared PSF.
pub fn psf() -> GaussHermitePsf {
    read_psf(Path::new(PSF_PATH)).expect("read the shared PSF")
}

/// An in-memory preproc image of the PSF's CCD size with MASK = 0.
pub fn preproc_from_arrays(psf: &GaussHermitePsf, image: &[f64], ivar: &[f64]) -> PreprocImage {
    PreprocImage {
        path: PathBuf::from("in-memory-preproc.fits"),
        nx: psf.npix_x,
        ny: psf.npix_y,
        image: image.iter().map(|&v| v as f32).collect(),
        ivar: ivar.iter().map(|&v| v as f32).collect(),
        mask: vec![0; image.len()],
        camera: "r0".into(),
        header: Vec::new(),
        readnoise: None,
        fibermap: None,
    }
}

/// The parameters of one 25-fiber bundle from fiber 0 (the defaults otherwise).
pub fn bundle_params() -> ExtractionParams {
    ExtractionParams {
        nspec: 25,
        ..ExtractionParams::default()
    }
}

/// [`extract_frame`] on the CPU without a model image or progress reports; panics on error.
pub fn extract_cpu(
    psf: &GaussHermitePsf,
    preproc: &PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
) -> Extraction {
    extract_cpu_model(psf, preproc, grid, params, false)
}

/// [`extract_frame`] on the CPU, with the model image if `want_model`; panics on error.
pub fn extract_cpu_model(
    psf: &GaussHermitePsf,
    preproc: &PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
    want_model: bool,
) -> Extraction {
    let job = FrameJob::new(psf, preproc, grid, params)
        .expect("a valid frame job")
        .with_model(want_model);
    extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new()).expect("CPU extraction")
}

/// The names of the entries of `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Replaces the value of header card `key` of the HDU whose EXTNAME is `hdu` (`""`: the
/// primary HDU) in the file at `path` by the raw text `value`, byte for byte (no FITS library
/// re-writes or validates it): how a corrupt or hand-edited header looks to a reader.
pub fn set_raw_card(path: &Path, hdu: &str, key: &str, value: &str) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let card_at = |b: &[u8], at: usize| String::from_utf8_lossy(&b[at..at + 80]).into_owned();
    let mut start = 0;
    while start + 2880 <= bytes.len() {
        // The header: cards until END, in 2880-byte blocks.
        let (mut at, mut cards) = (start, Vec::new());
        loop {
            let card = card_at(&bytes, at);
            at += 80;
            if card.starts_with("END ") || card.trim_end() == "END" {
                break;
            }
            cards.push((at - 80, card));
        }
        let data = at.div_ceil(2880) * 2880;
        let int = |name: &str| -> u64 {
            cards
                .iter()
                .find(|(_, c)| c[..8].trim() == name)
                .and_then(|(_, c)| c[10..].split('/').next()?.trim().parse::<i64>().ok())
                .map_or(0, |v| v.unsigned_abs())
        };
        let name = cards
            .iter()
            .find(|(_, c)| c.starts_with("EXTNAME "))
            .map(|(_, c)| {
                c[10..]
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches('\'')
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        if name == hdu || (hdu.is_empty() && start == 0) {
            let (pos, _) = cards
                .iter()
                .find(|(_, c)| c[..8].trim() == key)
                .unwrap_or_else(|| panic!("no card {key} in HDU {hdu:?} of {}", path.display()));
            let card = format!("{key:<8}= {value:>20}");
            bytes[*pos..*pos + 80].copy_from_slice(format!("{card:<80}").as_bytes());
            std::fs::write(path, &bytes).expect("write the edited file");
            return;
        }
        let naxis = int("NAXIS");
        let elements: u64 = if naxis == 0 {
            0
        } else {
            (1..=naxis).map(|i| int(&format!("NAXIS{i}"))).product()
        };
        let gcount = if cards.iter().any(|(_, c)| c.starts_with("GCOUNT ")) {
            int("GCOUNT")
        } else {
            1
        };
        let size = (elements + int("PCOUNT")) * gcount * int("BITPIX") / 8;
        start = data + (size as usize).div_ceil(2880) * 2880;
    }
    panic!("no HDU {hdu:?} in {}", path.display());
}

/// Whether a test may go on without the Python stack of scripts/setup.sh (astropy, desispec):
/// only with `DESI_SKIP_DESISPEC=1`, and never when `CI=true`. Otherwise a test that needs it
/// and cannot import it fails, saying how to install it.
pub fn may_skip_desispec() -> bool {
    std::env::var("DESI_SKIP_DESISPEC").as_deref() == Ok("1")
        && std::env::var("CI").as_deref() != Ok("true")
}

/// What desispec 0.70.0 made of each of `frames` (tests/desispec_read_back.py, in one
/// `python3` process): `read_frame` without a warning, `Frame.vet() == 0`, FLUX/IVAR/MASK of
/// the header's NSPEC x NWAVE, and every bin finite with IVAR = 0 only under a desispec MASK
/// bit. One entry per frame, in order: `Ok` or `Err(problems)`.
///
/// `None` when python3 cannot import desispec and `DESI_SKIP_DESISPEC=1` (a notice is
/// printed); without that variable, or under `CI=true`, a missing desispec panics with how to
/// install it (scripts/setup.sh; scripts/test.sh exports its PYTHONPATH). Panics when python3
/// cannot be started or the script fails otherwise.
pub fn desispec_verdicts<P: AsRef<Path>>(frames: &[P]) -> Option<Vec<Result<(), String>>> {
    read_back(frames).map(|(verdicts, _)| verdicts)
}

/// [`desispec_verdicts`] and python's output (desispec's log, the script's messages).
fn read_back<P: AsRef<Path>>(frames: &[P]) -> Option<(Vec<Result<(), String>>, String)> {
    let frames: Vec<&Path> = frames.iter().map(AsRef::as_ref).collect();
    assert!(!frames.is_empty(), "desispec_verdicts: no frame given");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/desispec_read_back.py");
    let started = std::time::Instant::now();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(&frames)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        let hint = format!(
            "python3 cannot import desispec ({}): run scripts/setup.sh and export the PYTHONPATH \
             it prints (scripts/test.sh does), or set DESI_SKIP_DESISPEC=1 to skip reading \
             frames back with desispec outside CI",
            stderr.trim()
        );
        assert!(may_skip_desispec(), "{hint}");
        eprintln!("NOTICE: not reading {} frame(s) back: {hint}", frames.len());
        return None;
    }
    // desiutil's log writes to stdout too: the verdicts are the JSON lines.
    let verdicts: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with("{\"path\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("verdict {l:?}: {e}")))
        .collect();
    assert!(
        matches!(out.status.code(), Some(0 | 1)) && verdicts.len() == frames.len(),
        "{} exited {} with {} verdict(s) for {} frame(s)\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        script.display(),
        out.status,
        verdicts.len(),
        frames.len()
    );
    eprintln!(
        "desispec read {} frame(s) back in {:.2} s",
        frames.len(),
        started.elapsed().as_secs_f64()
    );
    let verdicts = frames
        .iter()
        .zip(&verdicts)
        .map(|(path, v)| {
            assert_eq!(v["path"].as_str(), path.to_str(), "verdicts out of order");
            let problems: Vec<&str> = v["problems"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
                .unwrap_or_default();
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
        .collect();
    let log: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("{\"path\""))
        .chain(stderr.lines())
        .collect();
    Some((verdicts, log.join("\n")))
}

/// Panics unless desispec 0.70.0 reads every one of `frames` as a valid frame (see
/// [`desispec_verdicts`]; one `python3` process for all of them: call it once, at the end of a
/// test, with every frame the test's runs of the binary wrote). The panic message names each
/// rejected frame with its problems.
pub fn desispec_reads<P: AsRef<Path>>(frames: &[P]) {
    let frames: Vec<&Path> = frames.iter().map(AsRef::as_ref).collect();
    let Some((verdicts, log)) = read_back(&frames) else {
        return;
    };
    let rejected: Vec<String> = frames
        .iter()
        .zip(&verdicts)
        .filter_map(|(path, v)| v.as_ref().err().map(|e| format!("{}: {e}", path.display())))
        .collect();
    assert!(
        rejected.is_empty(),
        "desispec 0.70.0 rejects {} of {} frame(s):\n{}\n--- python's output:\n{log}",
        rejected.len(),
        frames.len(),
        rejected.join("\n")
    );
}

/// Copies the frame at `frame` into `dir` as `NN-NAME` (NN: the number of files already in
/// `dir`), for a test that rewrites a frame in place to read every version back with
/// [`desispec_reads`] at its end; returns the copy's path.
pub fn keep_copy(frame: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let n = std::fs::read_dir(dir).map_or(0, |d| d.count());
    let name = frame
        .file_name()
        .unwrap_or_else(|| panic!("{} has no file name", frame.display()))
        .to_string_lossy();
    let copy = dir.join(format!("{n:02}-{name}"));
    std::fs::copy(frame, &copy)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", frame.display(), copy.display()));
    copy
}

/// The path as `&str` (test paths are UTF-8).
pub fn utf8(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The arguments of `desi-extract extract` of spectra `specmin..specmin+nspec` of `preproc`
/// (with the bundled PSF) on the grid `wave` (`WMIN,WMAX,DW`) into `frame`, then `extra`.
pub fn extract_args<'a>(
    preproc: &'a Path,
    frame: &'a Path,
    wave: &'a str,
    spectra: (&'a str, &'a str),
    extra: &[&'a str],
) -> Vec<&'a str> {
    let (specmin, nspec) = spectra;
    let mut args = vec![
        "extract",
        "-i",
        utf8(preproc),
        "-p",
        PSF_PATH,
        "-o",
        utf8(frame),
        "-w",
        wave,
        "-s",
        specmin,
        "-n",
        nspec,
    ];
    args.extend_from_slice(extra);
    args
}

/// The arguments of `desi-extract exposure` of expid `expid` from `indir` into `outdir`, then
/// `extra`.
pub fn exposure_args<'a>(
    indir: &'a Path,
    outdir: &'a Path,
    expid: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "exposure",
        "--indir",
        utf8(indir),
        "--outdir",
        utf8(outdir),
        "--expid",
        expid,
    ];
    args.extend_from_slice(extra);
    args
}

/// The CHECKSUM/DATASUM cards' dates of every HDU of a FITS file's bytes (80-byte cards).
pub fn checksum_dates(bytes: &[u8]) -> Vec<String> {
    bytes
        .chunks(80)
        .filter(|c| c.starts_with(b"CHECKSUM= ") || c.starts_with(b"DATASUM = "))
        .map(|c| String::from_utf8_lossy(&c[c.len() - 30..]).into_owned())
        .collect()
}

/// Asserts that `write_pair` writes two byte-identical frame files (8 HDUs). The cards carry
/// the second they were written: the pair is written again (up to 5 times) until both files
/// were written within the same seconds.
pub fn assert_identical_frame_files(mut write_pair: impl FnMut() -> (Vec<u8>, Vec<u8>)) {
    for attempt in 0.. {
        let (old, new) = write_pair();
        if checksum_dates(&old) != checksum_dates(&new) && attempt < 5 {
            continue;
        }
        assert_eq!(checksum_dates(&old).len(), 2 * 8);
        assert_eq!(old.len(), new.len());
        let first = old.iter().zip(&new).position(|(a, b)| a != b);
        assert!(first.is_none(), "files differ from byte {first:?}");
        break;
    }
}
