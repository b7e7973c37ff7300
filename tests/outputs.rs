//! Outputs never destroy inputs (issue #14, deliver 4) and `.gz` outputs are gzip (issue #12):
//! `extract` refuses an output equal to an input or to another output (by path, `./`, hard and
//! symbolic links), devices, FIFOs and dangling links, with exit 1 and the input untouched; a
//! symbolic link is written through (the link stays, its target is replaced); a write that
//! fails (file size limit: SIGXFSZ ignored, EFBIG) exits 2 and leaves no temporary; stale
//! temporaries of dead processes are swept; `-o frame.fits.gz` is a gzip file that our reader
//! and desispec's `read_frame` read.

mod common;

use common::PSF_PATH as PSF;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");

struct Run {
    code: Option<i32>,
    text: String,
}

fn run_cmd(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("start");
    Run {
        code: out.status.code(),
        text: format!(
            "{}\n--- stderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

use common::utf8 as s;

/// `extract` of one bundle, 126 bins, from `preproc` with `-o out` plus `extra`.
fn extract(preproc: &Path, out: &Path, extra: &[&str]) -> Run {
    let args = common::extract_args(preproc, out, "6000,6100,0.8", ("0", "25"), extra);
    run_cmd(Command::new(BIN).args(&args))
}

fn expect(run: &Run, code: i32, needle: &str) {
    assert!(
        run.code == Some(code) && run.text.contains(needle),
        "expected exit {code} and '{needle}', got {:?}:\n{}",
        run.code,
        run.text
    );
}

/// Size and modification time: what an overwrite would change.
fn stamp(p: &Path) -> (u64, std::time::SystemTime) {
    let m = std::fs::metadata(p).unwrap();
    (m.len(), m.modified().unwrap())
}

fn simulate(dir: &Path) -> PathBuf {
    let preproc = dir.join("preproc.fits");
    let r = run_cmd(Command::new(BIN).args([
        "simulate",
        "-p",
        PSF,
        "-o",
        s(&preproc),
        "-w",
        "6000,6100,0.8",
        "-n",
        "25",
    ]));
    assert_eq!(r.code, Some(0), "{}", r.text);
    preproc
}

#[test]
fn outputs_never_replace_inputs_devices_or_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let preproc = simulate(d);
    let before = stamp(&preproc);
    let psf_copy = d.join("psf.fits");
    std::fs::copy(PSF, &psf_copy).unwrap();
    std::fs::hard_link(&preproc, d.join("hard.fits")).unwrap();
    let frame = d.join("frame.fits");

    let same_input = [
        (preproc.clone(), "-o is the same file as the input -i"),
        (
            d.join(".").join("preproc.fits"),
            "same file as the input -i",
        ),
        (d.join("hard.fits"), "same file as the input -i"),
        (PathBuf::from(PSF), "-o is the same file as the input -p"),
    ];
    for (out, needle) in &same_input {
        expect(&extract(&preproc, out, &[]), 1, needle);
    }
    expect(
        &extract(&preproc, &frame, &["-m", s(&d.join("./frame.fits"))]),
        1,
        "-m is the same file as the output -o",
    );
    expect(
        &extract(&preproc, &frame, &["--trace", s(&frame)]),
        1,
        "--trace is the same file as the output -o",
    );
    expect(
        &extract(&preproc, &frame, &["-m", s(&preproc)]),
        1,
        "-m is the same file as the input -i",
    );
    // Devices, FIFOs, directories, dangling links.
    let fifo = d.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink(d.join("nowhere.fits"), d.join("dangling.fits")).unwrap();
    for (out, needle) in [
        (PathBuf::from("/dev/null"), "is a character device"),
        (fifo.clone(), "is a FIFO"),
        (d.to_path_buf(), "is a directory"),
        (d.join("dangling.fits"), "which does not exist: refusing"),
        (d.join("no-dir/frame.fits"), "does not exist"),
    ] {
        expect(&extract(&preproc, &out, &[]), 1, needle);
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(stamp(&preproc), before, "the preproc is untouched");
    assert!(!frame.exists());

    // A symbolic link is written through: the link stays, its target gets the frame.
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let target = sub.join("target.fits");
    std::fs::write(&target, b"old").unwrap();
    let link = d.join("link.fits");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let r = extract(&preproc, &link, &[]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let written = desi_extract::io::read_frame(&target).expect("the target is a frame");
    assert_eq!(written.nspec, 25);
    assert_eq!(common::dir_names(&sub), ["target.fits"]);
    common::desispec_reads(&[&target]);

    // Every directory holds only what the test made and the link's frame.
    assert_eq!(
        common::dir_names(d),
        [
            "dangling.fits",
            "fifo",
            "hard.fits",
            "link.fits",
            "preproc.fits",
            "psf.fits",
            "sub"
        ]
    );
}

#[test]
fn failed_writes_exit_2_without_leftovers_and_stale_temporaries_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let preproc = simulate(d);
    let frame = d.join("frame.fits");

    // Temporaries of a process that has exited (the old name without a host, which counts
    // as this host's) go; one of a running process (this test) stays.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = d.join(format!("frame.fits.tmp{dead}.Xyz12.fits"));
    let live = d.join(format!("frame.fits.tmp{}.Abc34.fits", std::process::id()));
    std::fs::write(&stale, b"partial").unwrap();
    std::fs::write(&live, b"in progress").unwrap();
    let r = extract(&preproc, &frame, &[]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert!(
        !stale.exists() && live.exists(),
        "{:?}",
        common::dir_names(d)
    );
    std::fs::remove_file(&live).unwrap();

    // The model image (the full CCD) beyond a 2 MB file size limit: the kernel's SIGXFSZ is
    // ignored, the write fails with EFBIG, exit 2, the temporary is removed, the frame
    // (written before) is complete.
    let model = d.join("model.fits");
    let kept = tempfile::tempdir().unwrap();
    let first = common::keep_copy(&frame, kept.path());
    std::fs::remove_file(&frame).unwrap();
    let script = format!(
        "ulimit -f 2048; exec {BIN} extract -i {} -p {PSF} -o {} -m {} -w 6000,6100,0.8 -n 25",
        s(&preproc),
        s(&frame),
        s(&model)
    );
    let r = run_cmd(Command::new("bash").args(["-c", &script]));
    expect(&r, 2, "model.fits");
    assert!(!model.exists());
    desi_extract::io::read_frame(&frame).expect("the frame is complete");
    // Compressed output under the same limit (a 1 kB limit stops the frame itself).
    let gz = d.join("frame2.fits.gz");
    let script = format!(
        "ulimit -f 1; exec {BIN} extract -i {} -p {PSF} -o {} -w 6000,6100,0.8 -n 25",
        s(&preproc),
        s(&gz)
    );
    let r = run_cmd(Command::new("bash").args(["-c", &script]));
    expect(&r, 2, "frame2.fits.gz");
    assert_eq!(
        common::dir_names(d),
        ["frame.fits", "preproc.fits"],
        "no temporary left behind"
    );
    // The first run's frame, and the one the failed run wrote before its model.
    common::desispec_reads(&[&first, &frame]);
}

#[test]
fn a_run_killed_while_writing_leaves_a_temporary_that_the_next_run_removes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let preproc = simulate(d);
    let (frame, model) = (d.join("frame.fits"), d.join("model.fits"));
    // Kill (SIGKILL: no clean-up possible) as soon as the model's temporary appears; a fast
    // machine may finish first, so a few tries.
    let mut killed_with_temp = false;
    for _ in 0..5 {
        let mut child = Command::new(BIN)
            .args(["extract", "-i", s(&preproc), "-p", PSF, "-o", s(&frame)])
            .args(["-m", s(&model), "-w", "6000,6100,0.8", "-n", "25"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(60) {
            let temp = common::dir_names(d)
                .iter()
                .any(|n| n.starts_with("model.fits.tmp"));
            if temp {
                child.kill().unwrap();
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let status = child.wait().unwrap();
        let left = common::dir_names(d)
            .into_iter()
            .any(|n| n.starts_with("model.fits.tmp"));
        if !status.success() && left {
            killed_with_temp = true;
            break;
        }
        let _ = std::fs::remove_file(&model);
    }
    assert!(killed_with_temp, "never caught the model's temporary");
    assert!(!model.exists(), "no partial model under the final name");
    let r = extract(&preproc, &frame, &["-m", s(&model)]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(
        common::dir_names(d),
        ["frame.fits", "model.fits", "preproc.fits"],
        "the killed run's temporary is swept"
    );
    common::desispec_reads(&[&frame]);
}

#[test]
fn gz_outputs_are_gzip_and_desispec_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let preproc = simulate(d);
    let (plain, gz) = (d.join("frame.fits"), d.join("frame.fits.gz"));
    for out in [&plain, &gz] {
        let r = extract(&preproc, out, &[]);
        assert_eq!(r.code, Some(0), "{}", r.text);
    }
    let bytes = std::fs::read(&gz).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    let mut unzipped = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_end(&mut unzipped)
        .expect("a valid gzip stream");
    assert!(unzipped.starts_with(b"SIMPLE  ="), "a FITS file inside");
    assert!(bytes.len() < unzipped.len());
    let (a, b) = (
        desi_extract::io::read_frame(&plain).unwrap(),
        desi_extract::io::read_frame(&gz).unwrap(),
    );
    assert!(a.flux == b.flux && a.ivar == b.ivar && a.mask == b.mask);
    assert_eq!(
        common::dir_names(d),
        ["frame.fits", "frame.fits.gz", "preproc.fits"]
    );
    // desispec reads both (its read_frame opens .fits.gz through astropy).
    common::desispec_reads(&[&gz, &plain]);
}
