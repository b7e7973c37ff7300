//! Frames as desispec writes them, checked by desispec 0.70.0 itself
//! (tests/desispec_frame_check.py): `desispec.io.read_frame` without a warning,
//! `Frame.vet()`, the SCORES HDU against `desispec.specscore.compute_frame_scores`, IN_PSF /
//! IN_IMG against `desispec.io.shorten_filename`, the DEPNAMnn/DEPVERnn cards through
//! `desiutil.depend`, the model image's header; and `desi_extract_spectra`'s flags:
//! `-f/--fibermap` (rows specmin.. of that file, column descriptions and units carried),
//! `--no-scores`, the accepted `--psferr --no-gpu --use-specter --mpi -v`, the refused
//! `--decorrelate-fibers` and `--fibermap-index` (desispec rejects both on its default path).
//!
//! Needs `python3` with desispec and what its `io` imports (scripts/setup.sh installs them into
//! the PYTHONPATH it prints; scripts/test.sh exports it). Without them the test fails, unless
//! DESI_SKIP_DESISPEC=1 outside CI (then it is skipped with a notice; `common::may_skip_desispec`).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::PSF_PATH;
use desi_extract::io::{read_table, KeywordValue};

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");
/// The grid of every run (r band: inside the r score band 5800-7600 A).
const WAVE: &str = "6000,6100,0.8";
/// The environment variables desiutil records (cleared, then set per run).
const DESI_VARS: [&str; 10] = [
    "DESI_ROOT",
    "DESI_ROOT_READONLY",
    "DESI_SPECTRO_DATA",
    "DESI_SPECTRO_REDUX",
    "SPECPROD",
    "DESI_SPECTRO_CALIB",
    "DESI_BASIS_TEMPLATES",
    "DESI_TARGET",
    "DESIMODEL",
    "DESI_LOGLEVEL",
];

/// Whether python3 can import desispec.io (PYTHONPATH as the environment has it).
fn desispec_available() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import desispec.io, desispec.specscore, desiutil.depend",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A command with the DESI environment variables cleared and `env` set.
fn command(program: &str, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(program);
    for var in DESI_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what} exited {}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

use common::utf8 as s;

/// Writes an `n`-row fibermap (FIBER 1000.., as petal 2) with column descriptions and units,
/// as desispec's `annotate_fibermap` writes them, with astropy.
fn write_fibermap(path: &Path, n: usize) {
    let script = r#"
import sys
import numpy as np
from astropy.io import fits
n = int(sys.argv[2])
cols = [
    fits.Column(name="FIBER", format="J", array=1000 + np.arange(n)),
    fits.Column(name="TARGETID", format="K", array=np.arange(n) + 7),
    fits.Column(name="OBJTYPE", format="3A", array=np.array(["TGT"] * n)),
    fits.Column(name="FIBERSTATUS", format="J", array=np.zeros(n, dtype=np.int32)),
    fits.Column(name="TARGET_RA", format="D", unit="deg", array=np.linspace(10, 11, n)),
]
hdu = fits.BinTableHDU.from_columns(cols, name="FIBERMAP")
hdu.header["TTYPE1"] = ("FIBER", "Fiber ID on the CCDs [0-4999]")
hdu.header["TTYPE5"] = ("TARGET_RA", "Target right ascension")
hdu.header["TILEID"] = 1234
fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(sys.argv[1], checksum=True)
"#;
    let out = Command::new("python3")
        .args(["-c", script, s(path), &n.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        describe("writing the fibermap", &out)
    );
}

#[test]
fn frames_are_read_by_desispec_as_it_writes_them() {
    if !desispec_available() {
        let hint = "desispec.io is not importable by python3: run scripts/setup.sh and export the PYTHONPATH it prints (scripts/test.sh does), or set DESI_SKIP_DESISPEC=1 to skip this test outside CI";
        assert!(common::may_skip_desispec(), "{hint}");
        eprintln!("NOTICE: skipping the desispec frame check: {hint}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check_script = root.join("tests/desispec_frame_check.py");
    let dir = tempfile::tempdir().expect("tempdir");
    // A production tree: $DESI_SPECTRO_REDUX/$SPECPROD/preproc/..., the PSF under
    // $DESI_SPECTRO_CALIB (shortened to SPECPROD/... and SPCALIB/... as desispec does).
    let redux = dir.path().join("redux");
    let preproc_dir = redux.join("prod").join("preproc");
    std::fs::create_dir_all(&preproc_dir).expect("mkdir");
    let preproc = preproc_dir.join("preproc-r0-00000001.fits");
    let calib = root.join("data");
    let env = [
        ("DESI_SPECTRO_REDUX", s(&redux).to_string()),
        ("SPECPROD", "prod".to_string()),
        ("DESI_SPECTRO_CALIB", s(&calib).to_string()),
        ("DESIMODEL", "/opt/desimodel/0.19".to_string()),
    ];
    let out = command(BIN, &env)
        .args(["simulate", "-p", PSF_PATH, "-o", s(&preproc), "-w", WAVE])
        .args(["-s", "25", "-n", "25", "--seed", "3"])
        .output()
        .expect("run simulate");
    assert!(out.status.success(), "{}", describe("simulate", &out));
    let fibermap = dir.path().join("fibermap-00000001.fits");
    write_fibermap(&fibermap, 500);

    let frame = dir.path().join("frame-r0-00000001.fits");
    let model = dir.path().join("model-r0-00000001.fits");
    let extract = |extra: &[&str], frame: &Path| {
        command(BIN, &env)
            .args(["extract", "-i", s(&preproc), "-p", PSF_PATH, "-o", s(frame)])
            .args(["-w", WAVE, "-s", "25", "-n", "25"])
            .args(extra)
            .output()
            .expect("run extract")
    };
    // desi_proc's flags for an r camera, and the rest of desispec's accepted ones.
    let flags = [
        "--psferr",
        "0.01",
        "--no-gpu",
        "--use-specter",
        "--mpi",
        "-v",
        "-f",
        s(&fibermap),
        "-m",
        s(&model),
    ];
    let out = extract(&flags, &frame);
    assert!(out.status.success(), "{}", describe("extract", &out));
    let log = String::from_utf8_lossy(&out.stderr);
    for line in [
        "WARNING:desi-extract:extract: --use-specter",
        "INFO:desi-extract:extract: extract:  nspec = 25",
        "DEBUG:desi-extract:extract: extract:  backend = cpu",
    ] {
        assert!(log.contains(line), "no {line:?} in the log:\n{log}");
    }

    let check = |args: &[&str]| {
        let out = command("python3", &env)
            .arg(&check_script)
            .args(args)
            .env("DESI_EXTRACT_CHECK_PSF", PSF_PATH)
            .env("DESI_EXTRACT_CHECK_IMG", s(&preproc))
            .output()
            .expect("run python3");
        (
            out.status.success(),
            describe("desispec_frame_check.py", &out),
        )
    };
    let (ok, text) = check(&[s(&frame), s(&model)]);
    assert!(ok, "{text}");

    // -f: rows specmin.. of the given fibermap, with its descriptions, units and keywords.
    let fm = read_table(&frame, "FIBERMAP").expect("read FIBERMAP");
    assert_eq!(
        fm.column_i64("FIBER").expect("FIBER"),
        (1025..1050).collect::<Vec<i64>>()
    );
    let comment = |name: &str| fm.column(name).map(|c| c.comment.clone());
    assert_eq!(
        comment("FIBER").as_deref(),
        Some("Fiber ID on the CCDs [0-4999]")
    );
    assert_eq!(
        comment("TARGET_RA").as_deref(),
        Some("Target right ascension")
    );
    assert!(fm.cards.iter().any(|c| c.starts_with("TUNIT5  = 'deg")));
    assert!(fm.cards.iter().any(|c| c.starts_with("TILEID  =")));
    let written = desi_extract::io::read_frame(&frame).expect("read frame");
    assert_eq!(
        written.keyword("FIBERMIN"),
        Some(&KeywordValue::Int(1025)),
        "FIBERMIN from the -f fibermap"
    );
    assert_eq!(
        written.keyword("IN_IMG"),
        Some(&KeywordValue::Str(
            "SPECPROD/preproc/preproc-r0-00000001.fits".into()
        ))
    );

    // The check can fail: a frame whose scores were not written by desispec's rule.
    let (ok, text) = check(&[s(&frame), "--no-scores"]);
    assert!(
        !ok,
        "the check accepted a SCORES HDU under --no-scores:\n{text}"
    );

    // --no-scores: no SCORES HDU, desispec still reads it.
    let bare = dir.path().join("frame-noscores.fits");
    let out = extract(&["--no-scores"], &bare);
    assert!(
        out.status.success(),
        "{}",
        describe("extract --no-scores", &out)
    );
    let (ok, text) = check(&[s(&bare), "--no-scores"]);
    assert!(ok, "{text}");

    // Flags desispec refuses on its default path: exit 1 with a clear message, no frame.
    let refused: [(&[&str], &str); 3] = [
        (&["--decorrelate-fibers"], "--decorrelate-fibers"),
        (&["--fibermap-index", "0"], "--fibermap-index"),
        (&["--gpu", "--no-gpu"], "--no-gpu"),
    ];
    for (args, word) in refused {
        let out_path = dir.path().join("refused.fits");
        let out = extract(args, &out_path);
        assert_eq!(out.status.code(), Some(1), "{}", describe("extract", &out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(word), "{args:?}: message {err}");
        assert!(!out_path.exists(), "{args:?} left {}", out_path.display());
    }
    // A fibermap too short for the rows asked for: bad input, named, before extracting.
    let short_fm = dir.path().join("fibermap-short.fits");
    write_fibermap(&short_fm, 40);
    let out_path = dir.path().join("short.fits");
    let out = extract(&["-f", s(&short_fm)], &out_path);
    assert_eq!(out.status.code(), Some(1), "{}", describe("extract", &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(s(&short_fm)) && err.contains("40 rows"),
        "message {err}"
    );
    assert!(!out_path.exists());
}
