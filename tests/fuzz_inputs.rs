//! The bounded fuzz loop of issue #14 (deliver 7): seeded byte flips, header-value edits,
//! absurd header sizes and truncations of a small PSF and a small preproc, each run through `info` and `extract`, and
//! every outcome classified:
//!
//! | class | meaning |
//! |---|---|
//! | correct | exit 0, the frame equals the unmutated run's |
//! | flagged | exit 0, the frame differs and has bins masked that the reference has not |
//! | changed | exit 0, the frame differs, no new mask bits (a flipped pixel or coefficient) |
//! | bad-bins | exit 0 with non-finite FLUX/IVAR, IVAR < 0, or IVAR = 0 without a MASK bit |
//! | input-error | exit 1 with a message |
//! | runtime-error | exit 2 with a message |
//! | silent-error | exit 1 or 2 with nothing on stderr |
//! | crash | killed by a signal (abort, segfault), or an exit code other than 0, 1, 2 |
//! | panic | a Rust panic message on stderr |
//! | hang | still running after the time limit (killed) |
//! | leftover | a file other than the frame left in the output directory, or a frame after exit 1, or an unreadable frame after exit 0 |
//! | desispec-rejects | exit 0, but desispec 0.70.0 cannot read the frame (`read_frame` fails or warns) or `Frame.vet() != 0` or the bins break its rules (tests/desispec_read_back.py) |
//!
//! The test fails on crash, panic, hang, leftover, bad-bins, desispec-rejects and silent-error
//! (every outcome must be a correct, flagged or changed frame, or a clear error with exit 1 or
//! 2). The frames of exit 0 (a few kB each) are kept aside and read back by desispec in one
//! python process after the loop (`common::desispec_verdicts`). It prints the table of counts
//! by class (and each failing case, with its index, to reproduce it: the mutations depend only
//! on the seed and the index). `DESI_FUZZ_CASES` (default 400, half PSF, half preproc) and
//! `DESI_FUZZ_SEED` (default 14) change the loop, `DESI_FUZZ_FROM` (default 0) skips the cases
//! before it (`DESI_FUZZ_FROM=1743 DESI_FUZZ_CASES=1744` reruns case 1743 alone); every child
//! runs under a 4 GiB address-space limit and a 60 s time limit.
//!
//! The files are small so that hundreds of cases take a few minutes on 2 cores: the bundled r0
//! PSF cut to 5 fibers and a CCD window of about 100 x 150 pixels around their traces (the trace
//! offsets moved with it), and a preproc simulated through it on 6000-6040 A.

mod common;

use desi_extract::io::{self, FrameData, Keyword};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");
const NSPEC: usize = 5;
const WAVE: &str = "6000,6040,0.8";
const TIME_LIMIT: Duration = Duration::from_secs(60);
/// Address-space limit of every child (KiB, for `ulimit -v`).
const MEMORY_KB: u64 = 4 << 20;

/// The bundled PSF cut to `NSPEC` fibers and a CCD window around their traces on 5950-6090 A.
fn small_psf(path: &Path) {
    let mut psf = common::psf();
    let cut = |t: &mut desi_extract::psf::LegendreTable| t.coeffs.truncate(NSPEC * t.ncoeff);
    cut(&mut psf.xtrace);
    cut(&mut psf.ytrace);
    cut(&mut psf.sigma_x);
    cut(&mut psf.sigma_y);
    psf.gh.iter_mut().for_each(cut);
    if let Some(tail) = psf.tail.as_mut() {
        tail.iter_mut().for_each(cut);
    }
    psf.nspec = NSPEC;
    let waves: Vec<f64> = (0..=28).map(|i| 5950.0 + 5.0 * f64::from(i)).collect();
    let spots = psf.spots(0, NSPEC, &waves).expect("spots of the small PSF");
    let (mut x0, mut x1, mut y0, mut y1) = (i32::MAX, i32::MIN, i32::MAX, i32::MIN);
    for s in 0..NSPEC {
        for k in 0..waves.len() {
            let c = spots.corner(s, k);
            x0 = x0.min(c.xc);
            x1 = x1.max(c.xc + spots.nx as i32);
            y0 = y0.min(c.yc);
            y1 = y1.max(c.yc + spots.ny as i32);
        }
    }
    let (dx, dy) = (x0 - 10, y0 - 10);
    for f in 0..NSPEC {
        psf.xtrace.coeffs[f * psf.xtrace.ncoeff] -= f64::from(dx);
        psf.ytrace.coeffs[f * psf.ytrace.ncoeff] -= f64::from(dy);
    }
    psf.npix_x = (x1 + 10 - dx) as usize;
    psf.npix_y = (y1 + 10 - dy) as usize;
    io::write_psf(path, &psf, &[Keyword::str("CAMERA", "r0", "Camera")]).expect("write");
}

/// The `extract` arguments of every case.
fn extract_args<'a>(preproc: &'a str, psf: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "extract",
        "-i",
        preproc,
        "-p",
        psf,
        "-o",
        out,
        "-w",
        WAVE,
        "-n",
        "5",
        "--bundlesize",
        "5",
        "--nsubbundles",
        "1",
        "--threads",
        "1",
    ]
}

/// A finished (or killed) child.
struct Ran {
    /// Exit code, `None` when killed by a signal.
    code: Option<i32>,
    /// The signal that killed it, if one did.
    signal: Option<i32>,
    hung: bool,
    stderr: String,
}

/// Runs the binary with `args` under the memory and time limits.
fn run_limited(args: &[&str], logs: &Path) -> Ran {
    let (out, err) = (logs.join("stdout"), logs.join("stderr"));
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_KB}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout log"))
        .stderr(File::create(&err).expect("stderr log"))
        .spawn()
        .expect("start the binary");
    let start = Instant::now();
    let (status, hung) = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break (Some(status), false);
        }
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ran {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        hung,
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// The byte ranges of the FITS headers of `bytes` (as far as they parse).
fn header_ranges(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos + 2880 <= bytes.len() {
        let mut end = None;
        let mut keys: BTreeMap<String, i64> = BTreeMap::new();
        let mut card = pos;
        while card + 80 <= bytes.len() {
            let text = String::from_utf8_lossy(&bytes[card..card + 80]).into_owned();
            let name = text[..8].trim().to_string();
            if name == "END" {
                end = Some(card + 80);
                break;
            }
            if let Some(v) = text.get(10..30).and_then(|v| v.trim().parse::<i64>().ok()) {
                keys.insert(name, v);
            }
            card += 80;
        }
        let Some(end) = end else { break };
        let data_start = end.div_ceil(2880) * 2880;
        ranges.push((pos, end));
        let naxis = keys.get("NAXIS").copied().unwrap_or(0);
        let mut n: i64 = if naxis > 0 { 1 } else { 0 };
        for i in 1..=naxis {
            n = n.saturating_mul(keys.get(&format!("NAXIS{i}")).copied().unwrap_or(0));
        }
        let bits = keys.get("BITPIX").copied().unwrap_or(8).abs() / 8;
        let size = n
            .saturating_add(keys.get("PCOUNT").copied().unwrap_or(0))
            .saturating_mul(bits.max(1));
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        pos = data_start.saturating_add(size.div_ceil(2880) * 2880);
    }
    ranges
}

/// Header keywords holding sizes, counts and degrees.
const SIZE_KEYS: &[&str] = &[
    "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "TFIELDS", "HSIZEX", "HSIZEY", "LEGDEG", "GHDEGX",
    "GHDEGY", "NPIX_X", "NPIX_Y", "FIBERMIN", "NSPEC",
];
/// Values a size is set to.
const SIZE_VALUES: &[i64] = &[0, 1, -1, 2000, 30000, 100000, 50000000, 99999999];

/// A mutant of `bytes` and a description of the mutation.
fn mutate(bytes: &[u8], rng: &mut ChaCha8Rng) -> (Vec<u8>, String) {
    let mut out = bytes.to_vec();
    let headers = header_ranges(bytes);
    match rng.random_range(0..10) {
        // Random bytes anywhere.
        0..=3 => {
            let n = rng.random_range(1..=4);
            let mut at = Vec::new();
            for _ in 0..n {
                let i = rng.random_range(0..out.len());
                out[i] ^= rng.random_range(1..=255u8);
                at.push(i);
            }
            (out, format!("flipped bytes at {at:?}"))
        }
        // A header value edited: a character of a card's value field replaced by a digit, a
        // sign, a blank or a letter (sizes, degrees, domains, counts).
        4..=7 if !headers.is_empty() => {
            let n = rng.random_range(1..=2);
            let mut what = Vec::new();
            for _ in 0..n {
                let (start, end) = headers[rng.random_range(0..headers.len())];
                let ncard = (end - start) / 80;
                let card = start + 80 * rng.random_range(0..ncard);
                let col = rng.random_range(10..31);
                let ch = *b"0123456789999-+ .EXx"
                    .get(rng.random_range(0..20))
                    .unwrap_or(&b'9');
                out[card + col] = ch;
                what.push(format!(
                    "{} col {col} -> '{}'",
                    String::from_utf8_lossy(&bytes[card..card + 8]).trim(),
                    ch as char
                ));
            }
            (out, format!("header edit {what:?}"))
        }
        // A size or degree read from a header set to an absurd value (the values of issue #14's
        // aborts among them).
        8 if !headers.is_empty() => {
            let cards: Vec<usize> = headers
                .iter()
                .flat_map(|&(start, end)| (start..end).step_by(80))
                .filter(|&c| SIZE_KEYS.contains(&String::from_utf8_lossy(&bytes[c..c + 8]).trim()))
                .collect();
            if cards.is_empty() {
                return (out, "no size keyword: unchanged".into());
            }
            let card = cards[rng.random_range(0..cards.len())];
            let value = SIZE_VALUES[rng.random_range(0..SIZE_VALUES.len())];
            let text = format!("{value:>20}");
            out[card + 10..card + 30].copy_from_slice(text.as_bytes());
            let name = String::from_utf8_lossy(&bytes[card..card + 8])
                .trim()
                .to_string();
            (out, format!("{name} = {value}"))
        }
        // Truncated.
        _ => {
            let len = rng.random_range(0..out.len());
            out.truncate(len);
            (out, format!("truncated to {len} bytes"))
        }
    }
}

/// What is wrong with the bins of the frame at `path` (for the failure report).
fn bad_bins_detail(path: &Path) -> String {
    let Ok(f) = io::read_frame(path) else {
        return "unreadable".into();
    };
    let bins = f.flux.iter().zip(&f.ivar).zip(&f.mask);
    let nonfinite = bins
        .clone()
        .filter(|((x, iv), _)| !x.is_finite() || !iv.is_finite())
        .count();
    let negative = f.ivar.iter().filter(|&&iv| iv < 0.0).count();
    let unflagged = bins.filter(|((_, &iv), &m)| iv == 0.0 && m == 0).count();
    format!(
        "{nonfinite} non-finite, {negative} IVAR < 0, {unflagged} IVAR = 0 with MASK = 0 of {} bins",
        f.flux.len()
    )
}

/// Classes of outcomes (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Correct,
    Flagged,
    Changed,
    BadBins,
    InputError,
    RuntimeError,
    SilentError,
    Crash,
    Panic,
    Hang,
    Leftover,
    DesispecRejects,
}

impl Class {
    fn fails(self) -> bool {
        matches!(
            self,
            Class::Crash
                | Class::Panic
                | Class::Hang
                | Class::Leftover
                | Class::BadBins
                | Class::DesispecRejects
                | Class::SilentError
        )
    }
}

/// The class of a run that wrote nothing (`info`) or `frame` (`extract`).
fn classify(ran: &Ran, frame: Option<(&Path, &FrameData)>) -> Class {
    if ran.hung {
        return Class::Hang;
    }
    if ran.stderr.contains("panicked") {
        return Class::Panic;
    }
    let code = match ran.code {
        Some(c @ 0..=2) => c,
        _ => return Class::Crash,
    };
    if code != 0 && ran.stderr.trim().is_empty() {
        return Class::SilentError;
    }
    let Some((path, reference)) = frame else {
        return match code {
            0 => Class::Correct,
            1 => Class::InputError,
            _ => Class::RuntimeError,
        };
    };
    match code {
        1 if path.exists() => Class::Leftover,
        1 => Class::InputError,
        2 => Class::RuntimeError,
        _ => {
            let Ok(f) = io::read_frame(path) else {
                return Class::Leftover;
            };
            let bad = f
                .flux
                .iter()
                .zip(&f.ivar)
                .zip(&f.mask)
                .any(|((&x, &iv), &m)| {
                    !x.is_finite() || !iv.is_finite() || iv < 0.0 || (iv == 0.0 && m == 0)
                });
            if bad || f.flux.len() != reference.flux.len() {
                Class::BadBins
            } else if f.flux == reference.flux
                && f.ivar == reference.ivar
                && f.mask == reference.mask
            {
                Class::Correct
            } else if f
                .mask
                .iter()
                .zip(&reference.mask)
                .any(|(&m, &r)| m & !r != 0)
            {
                Class::Flagged
            } else {
                Class::Changed
            }
        }
    }
}

#[test]
fn fuzzed_psf_and_preproc_end_in_a_frame_or_a_clean_error() {
    let cases: usize = std::env::var("DESI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("DESI_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14);
    let from: usize = std::env::var("DESI_FUZZ_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (psf, preproc) = (d.join("psf.fits"), d.join("preproc.fits"));
    small_psf(&psf);
    let sim = Command::new(BIN)
        .args(["simulate", "-p"])
        .arg(&psf)
        .arg("-o")
        .arg(&preproc)
        .args(["-w", WAVE, "-n", "5", "--seed", "3"])
        .output()
        .expect("simulate");
    assert!(sim.status.success(), "{sim:?}");
    let (logs, work, kept) = (d.join("logs"), d.join("case"), d.join("kept"));
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&kept).unwrap();
    let s = |p: &Path| p.to_str().expect("UTF-8").to_string();

    // The unmutated run: the reference frame, and it must be clean.
    let reference_path = d.join("reference.fits");
    let ran = run_limited(
        &extract_args(&s(&preproc), &s(&psf), &s(&reference_path)),
        &logs,
    );
    assert_eq!(ran.code, Some(0), "reference run: {}", ran.stderr);
    let reference = io::read_frame(&reference_path).expect("reference frame");
    assert!(reference.ivar.iter().any(|&v| v > 0.0));

    let originals = [
        ("psf", std::fs::read(&psf).unwrap()),
        ("preproc", std::fs::read(&preproc).unwrap()),
    ];
    println!(
        "fuzz: {cases} cases, seed {seed}; psf {} bytes, preproc {} bytes",
        originals[0].1.len(),
        originals[1].1.len()
    );
    let mut counts: BTreeMap<(&str, &str, Class), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    // The frames of exit 0 for desispec: (copy, kind, class, the case's line).
    let mut written = Vec::new();
    let start = Instant::now();
    for case in from..cases {
        let (kind, original) = &originals[case % 2];
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003) + case as u64);
        let (bytes, how) = mutate(original, &mut rng);
        let mutant = work.join(format!("{kind}.fits"));
        std::fs::write(&mutant, &bytes).unwrap();
        let out = work.join("frame.fits");

        let info = run_limited(&["info", &s(&mutant)], &logs);
        let info_class = classify(&info, None);
        let (pre, ps) = match *kind {
            "psf" => (s(&preproc), s(&mutant)),
            _ => (s(&mutant), s(&psf)),
        };
        let ext = run_limited(&extract_args(&pre, &ps, &s(&out)), &logs);
        let mut ext_class = classify(&ext, Some((&out, &reference)));
        // Nothing but the mutant and the frame may be left in the case directory.
        let left: Vec<String> = common::dir_names(&work)
            .into_iter()
            .filter(|n| n != &format!("{kind}.fits") && n != "frame.fits")
            .collect();
        if !left.is_empty() {
            ext_class = Class::Leftover;
        }
        if ext.code == Some(0) && out.is_file() {
            let copy = kept.join(format!("case-{case}.fits"));
            std::fs::copy(&out, &copy).unwrap();
            let line = format!(
                "case {case} ({kind}, {how}): extract -> {:?} (exit 0)",
                Class::DesispecRejects
            );
            written.push((copy, *kind, ext_class, line));
        }
        for (command, class, ran) in [("info", info_class, &info), ("extract", ext_class, &ext)] {
            *counts.entry((kind, command, class)).or_default() += 1;
            let tail: String = ran
                .stderr
                .lines()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .join(" | ");
            let line = format!(
                "case {case} ({kind}, {how}): {command} -> {class:?} (exit {:?}, signal {:?}; left {left:?}): {tail}",
                ran.code,
                ran.signal
            );
            // Exit 2 is right for a run that failed (or a frame written FLAGGED), wrong for a bad
            // input file: each is printed for the record.
            if class == Class::RuntimeError {
                println!("exit 2: {line}");
            }
            if class.fails() {
                let detail = match class {
                    Class::BadBins => format!(" [{}]", bad_bins_detail(&out)),
                    _ => String::new(),
                };
                failures.push(format!("{line}{detail}"));
            }
        }
        for entry in std::fs::read_dir(&work).unwrap().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let loop_time = start.elapsed().as_secs_f64();
    // desispec reads the reference and every frame of exit 0, in one process.
    let mut paths = vec![reference_path.clone()];
    paths.extend(written.iter().map(|w| w.0.clone()));
    if let Some(verdicts) = common::desispec_verdicts(&paths) {
        if let Err(problem) = &verdicts[0] {
            panic!("desispec rejects the reference frame: {problem}");
        }
        for ((_, kind, class, line), verdict) in written.iter().zip(&verdicts[1..]) {
            if let Err(problem) = verdict {
                *counts.entry((kind, "extract", *class)).or_default() -= 1;
                *counts
                    .entry((kind, "extract", Class::DesispecRejects))
                    .or_default() += 1;
                failures.push(format!("{line}: {problem}"));
            }
        }
        println!(
            "fuzz: desispec read {} frame(s) of exit 0 back",
            verdicts.len()
        );
    }
    println!("fuzz: {cases} cases in {loop_time:.1} s; outcomes (file, command, class: count):");
    counts.retain(|_, n| *n > 0);
    for ((kind, command, class), n) in &counts {
        println!("  {kind:<8} {command:<8} {class:?}: {n}");
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(
        failures.is_empty(),
        "{} failing outcome(s) (crash, panic, hang, leftover, bad bins, desispec rejects or a silent error):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
