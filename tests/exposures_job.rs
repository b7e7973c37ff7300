//! `desi-extract exposures`, many exposures in one job, on CPU ranks: three small exposures
//! (b0, r0, z0 of 25 fibers x 300 A each, b and z from stand-in PSFs) laid out as a desispec
//! production tree.
//!
//! - `mpirun -n 6 --group-size 3` (a coordinator and 2 groups: 2 ranks sharing frames, 3 in
//!   the reader/writer pipeline) over a list file writes frames identical, card for card and
//!   byte for byte but CHECKSUM/DATASUM, to three single-exposure `exposure` runs; a rerun
//!   skips them all. One frame for 3 groups of one rank: the idle groups end cleanly (its
//!   preproc read gzip-compressed, as desispec names it by default).
//! - A job over the production tree killed (SIGKILL) after its first frames and restarted
//!   with the same command finishes only what is missing, with identical frames and no
//!   temporary file left.
//! - A corrupt preproc fails alone and an exposure with no preproc is reported, on a
//!   coordinator and 2 groups of one rank: the others are written, the job exits 2 and its
//!   JSON record says which and why.
//! - desispec 0.70.0 reads the frames the jobs wrote.
//!
//! Without `mpirun` the MPI parts fail when CI=true and are skipped (with a notice) otherwise.

mod common;

use common::PSF_PATH;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");
const NIGHT: &str = "20201214";
const CAMERAS: [(&str, &str); 3] = [
    ("b0", "3570,3940"),
    ("r0", "5730,6100"),
    ("z0", "7490,7860"),
];
const EXPIDS: [u64; 3] = [1, 2, 3];

/// Whether mpirun can be used (panics in CI when it cannot).
fn have_mpirun() -> bool {
    let ok = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "mpirun not found but CI=true: install openmpi (scripts/setup.sh does)"
        );
        eprintln!("NOTICE: mpirun not found; skipping the MPI parts");
    }
    ok
}

/// `desi-extract ARGS` under `mpirun -n ranks` (0: without mpirun), with `env` set.
fn run(ranks: usize, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = if ranks == 0 {
        Command::new(BIN)
    } else {
        let mut c = Command::new("mpirun");
        c.args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .args(["-n", &ranks.to_string(), BIN]);
        c
    };
    cmd.env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .envs(env.iter().copied())
        .args(args);
    let out = cmd.output().expect("start desi-extract");
    eprintln!(
        "--- {ranks} rank(s) {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "command failed: {}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn expid(e: u64) -> String {
    format!("{e:08}")
}

/// The production tree: `preproc/NIGHT/EXPID/preproc-CAM-EXPID.fits` and
/// `exposures/NIGHT/EXPID/psf-CAM-EXPID.fits`, and for each exposure a flat directory
/// `flat/EXPID` with links to both (what `exposure --indir` reads).
fn production(root: &Path) {
    let psfs = root.join("psfs");
    std::fs::create_dir_all(&psfs).unwrap();
    for (camera, _) in CAMERAS {
        let psf = psfs.join(format!("psf-{camera}.fits"));
        if camera == "r0" {
            std::fs::copy(PSF_PATH, &psf).unwrap();
        } else {
            ok(&run(
                0,
                &[
                    "standin-psf",
                    "-p",
                    PSF_PATH,
                    "-o",
                    s(&psf),
                    "--camera",
                    camera,
                ],
                &[],
            ));
        }
    }
    for e in EXPIDS {
        let id = expid(e);
        let pre = root.join("preproc").join(NIGHT).join(&id);
        let exp = root.join("exposures").join(NIGHT).join(&id);
        let flat = root.join("flat").join(&id);
        for dir in [&pre, &exp, &flat] {
            std::fs::create_dir_all(dir).unwrap();
        }
        for (c, (camera, wave)) in CAMERAS.iter().enumerate() {
            let psf = exp.join(format!("psf-{camera}-{id}.fits"));
            std::fs::copy(psfs.join(format!("psf-{camera}.fits")), &psf).unwrap();
            let preproc = pre.join(format!("preproc-{camera}-{id}.fits"));
            let seed = (10 * e + c as u64).to_string();
            ok(&run(
                0,
                &[
                    "simulate",
                    "-p",
                    s(&psf),
                    "-o",
                    s(&preproc),
                    "-w",
                    wave,
                    "-n",
                    "25",
                    "--camera",
                    camera,
                    "--expid",
                    &e.to_string(),
                    "--seed",
                    &seed,
                ],
                &[],
            ));
            for file in [&psf, &preproc] {
                std::os::unix::fs::symlink(file, flat.join(file.file_name().unwrap())).unwrap();
            }
        }
    }
}

/// The options of every extraction here.
const OPTIONS: [&str; 4] = ["-n", "25", "--wave-span", "300"];

/// Single-exposure references: `exposure` of each flat directory into `ref/EXPID`.
fn references(root: &Path) {
    for e in EXPIDS {
        let id = expid(e);
        let (indir, outdir) = (root.join("flat").join(&id), root.join("ref").join(&id));
        let mut args = vec![
            "exposure",
            "--indir",
            s(&indir),
            "--outdir",
            s(&outdir),
            "--expid",
            &id,
        ];
        args.extend(OPTIONS);
        let text = String::from_utf8_lossy(&run(0, &args, &[]).stdout).into_owned();
        assert!(text.contains("3 written, 0 skipped, 0 failed"), "{text}");
    }
}

/// Asserts that two FITS files are the same, 80-byte card for card, but the CHECKSUM and
/// DATASUM cards and the cards in `also_ignore` (their data and every other header card
/// included: the files are identical apart from those).
fn assert_same_fits(a: &Path, b: &Path, also_ignore: &[&str]) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{} vs {}: sizes",
        a.display(),
        b.display()
    );
    let ignored = |card: &[u8]| {
        ["CHECKSUM", "DATASUM"]
            .iter()
            .chain(also_ignore)
            .any(|key| card.starts_with(format!("{key:<8}=").as_bytes()))
    };
    let mut skipped = 0;
    for (i, (p, q)) in x.chunks(80).zip(y.chunks(80)).enumerate() {
        if p == q {
            continue;
        }
        if ignored(p) && ignored(q) {
            skipped += 1;
            continue;
        }
        panic!(
            "{} vs {}: card/block {i} differs:\n{}\n{}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(p),
            String::from_utf8_lossy(q)
        );
    }
    let _ = skipped;
}

fn frame_name(camera: &str, e: u64) -> String {
    format!("frame-{camera}-{}.fits", expid(e))
}

/// The JSON record of a job.
fn record(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Files of `dir` (recursively) that are temporaries of an interrupted write.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn many_exposures_in_one_job_over_groups_with_restart_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    production(root);
    references(root);
    let mpi = have_mpirun();

    // 1. Six ranks in two groups over a list file: the frames of single-exposure runs.
    if mpi {
        let list = root.join("list.txt");
        let mut text = String::from("# expid indir outdir\n");
        for e in EXPIDS {
            let id = expid(e);
            text += &format!(
                "{e} {} {}\n",
                root.join("flat").join(&id).display(),
                root.join("mpi").join(&id).display()
            );
        }
        std::fs::write(&list, text).unwrap();
        let json = root.join("mpi.json");
        let mut args = vec![
            "exposures",
            "--list",
            s(&list),
            "--group-size",
            "3",
            "--summary-json",
            s(&json),
        ];
        args.extend(OPTIONS);
        let log = ok(&run(6, &args, &[]));
        assert!(
            log.contains(
                "INFO:desi-extract:exposures: 3 exposure(s): 9 frame(s) to extract, 0 skipped"
            ) && log.contains("2 groups over 6 ranks, rank 0 handing out the frames"),
            "{log}"
        );
        assert!(
            log.contains("group 0: frame ") && log.contains("group 1: frame "),
            "both groups work: {log}"
        );
        assert!(
            log.contains("job: 3 exposure(s), 9 frame(s) written, 0 skipped, 0 failed"),
            "{log}"
        );
        let job = record(&json);
        assert_eq!(
            (job["written"].as_u64(), job["groups"].as_u64()),
            (Some(9), Some(2))
        );
        assert!(job["gpu_busy_fraction"].is_null());
        let exposures = job["exposures"].as_array().unwrap();
        assert_eq!(exposures.len(), 3);
        for (record, e) in exposures.iter().zip(EXPIDS) {
            assert_eq!(record["expid"], expid(e));
            let statuses: Vec<&str> = record["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["status"].as_str().unwrap())
                .collect();
            assert_eq!(statuses, ["ok", "ok", "ok"]);
        }
        for e in EXPIDS {
            for (camera, _) in CAMERAS {
                let name = frame_name(camera, e);
                let id = expid(e);
                assert_same_fits(
                    &root.join("ref").join(&id).join(&name),
                    &root.join("mpi").join(&id).join(&name),
                    &[],
                );
            }
        }
        // Done frames are skipped.
        let log = ok(&run(6, &args, &[]));
        assert!(
            log.contains("0 frame(s) written, 9 skipped, 0 failed"),
            "{log}"
        );

        // Fewer frames than groups: one frame (r0 of exposure 1) for 3 groups of one rank, its
        // preproc gzip-compressed as desispec names it by default (preproc-*.fits.gz).
        let one = root.join("one");
        std::fs::create_dir_all(&one).unwrap();
        let flat = root.join("flat").join(expid(1));
        std::os::unix::fs::symlink(
            flat.join("psf-r0-00000001.fits"),
            one.join("psf-r0-00000001.fits"),
        )
        .unwrap();
        let plain = std::fs::read(flat.join("preproc-r0-00000001.fits")).unwrap();
        let gz = std::fs::File::create(one.join("preproc-r0-00000001.fits.gz")).unwrap();
        let mut encoder = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &plain).unwrap();
        encoder.finish().unwrap();
        let list = root.join("one.txt");
        std::fs::write(
            &list,
            format!("1 {} {}\n", one.display(), root.join("one-out").display()),
        )
        .unwrap();
        let mut args = vec!["exposures", "--list", s(&list), "--group-size", "1"];
        args.extend(OPTIONS);
        let log = ok(&run(4, &args, &[]));
        assert!(log.contains("3 groups over 4 ranks"), "{log}");
        assert!(
            log.contains("1 frame(s) written, 0 skipped, 0 failed"),
            "{log}"
        );
        let name = frame_name("r0", 1);
        let reference = root.join("ref").join(expid(1)).join(&name);
        let written = root.join("one-out").join(&name);
        // The inputs' names differ (a link, a compressed copy), and so does the digest of the
        // input bytes (INPUTSUM); nothing else does.
        assert_same_fits(&reference, &written, &["IN_PSF", "IN_IMG", "INPUTSUM"]);
    }

    // 2. The production tree, killed after 4 frames, then restarted: only what is missing.
    let tree = root.join("exposures").join(NIGHT);
    let mut args = vec!["exposures", "--specprod", s(root), "--nights", NIGHT];
    args.extend(OPTIONS);
    let killed = run(0, &args, &[("DESI_EXTRACT_TEST_KILL_AFTER_FRAMES", "4")]);
    assert_eq!(
        killed.status.signal(),
        Some(9),
        "killed by SIGKILL: {}",
        killed.status
    );
    let done_before: Vec<String> = EXPIDS
        .iter()
        .flat_map(|&e| CAMERAS.iter().map(move |(c, _)| (c, e)))
        .filter(|(c, e)| tree.join(expid(*e)).join(frame_name(c, *e)).is_file())
        .map(|(c, e)| frame_name(c, e))
        .collect();
    assert!(
        (4..9).contains(&done_before.len()),
        "the kill came after 4 frames and before the last: {done_before:?}"
    );
    let log = ok(&run(0, &args, &[]));
    let expect = format!(
        "{} frame(s) to extract, {} skipped",
        9 - done_before.len(),
        done_before.len()
    );
    assert!(log.contains(&expect), "{expect}: {log}");
    assert!(temporaries(root).is_empty(), "{:?}", temporaries(root));
    for e in EXPIDS {
        for (camera, _) in CAMERAS {
            let name = frame_name(camera, e);
            let id = expid(e);
            // The paths of the inputs differ (tree, flat directory); nothing else does.
            assert_same_fits(
                &root.join("ref").join(&id).join(&name),
                &tree.join(&id).join(&name),
                &["IN_PSF", "IN_IMG"],
            );
        }
    }

    // desispec reads what the jobs wrote (before part 3 overwrites the tree).
    let mut written = Vec::new();
    for e in EXPIDS {
        for (camera, _) in CAMERAS {
            written.push(tree.join(expid(e)).join(frame_name(camera, e)));
            if mpi {
                written.push(root.join("mpi").join(expid(e)).join(frame_name(camera, e)));
            }
        }
    }
    if mpi {
        written.push(root.join("one-out").join(frame_name("r0", 1)));
    }
    common::desispec_reads(&written);

    // 3. A corrupt preproc fails alone; an exposure without preproc is reported.
    if mpi {
        let bad = root
            .join("preproc")
            .join(NIGHT)
            .join(expid(2))
            .join("preproc-r0-00000002.fits");
        let good = std::fs::read(&bad).unwrap();
        std::fs::remove_file(&bad).unwrap();
        std::fs::write(&bad, &good[..good.len() / 3]).unwrap();
        std::fs::create_dir_all(root.join("preproc").join(NIGHT).join(expid(4))).unwrap();
        std::fs::remove_file(tree.join(expid(2)).join(frame_name("r0", 2))).unwrap();
        let json = root.join("corrupt.json");
        let mut args = vec![
            "exposures",
            "--specprod",
            s(root),
            "--overwrite",
            "--group-size",
            "1",
            "--summary-json",
            s(&json),
        ];
        args.extend(OPTIONS);
        let out = run(3, &args, &[]);
        assert!(!out.status.success(), "a failed frame fails the job");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("2 groups over 3 ranks"), "{log}");
        assert!(
            log.contains("job: 4 exposure(s), 8 frame(s) written, 0 skipped, 1 failed"),
            "{log}"
        );
        assert!(log.contains("ERROR:desi-extract:exposures: exposure 00000004 FAILED: no preproc-*-00000004.fits"), "{log}");
        let job = record(&json);
        assert_eq!(job["failed"], 1);
        assert_eq!(job["failed_exposures"][0]["expid"], expid(4));
        let frames = job["exposures"][1]["frames"].as_array().unwrap();
        assert_eq!(frames[1]["camera"], "r0");
        assert_eq!(frames[1]["status"], "failed");
        let error = frames[1]["error"].as_str().unwrap();
        assert!(error.contains("preproc-r0-00000002.fits"), "{error}");
        assert!(!tree.join(expid(2)).join(frame_name("r0", 2)).exists());
        for e in EXPIDS {
            for (camera, _) in CAMERAS {
                if (camera, e) != ("r0", 2) {
                    assert_same_fits(
                        &root.join("ref").join(expid(e)).join(frame_name(camera, e)),
                        &tree.join(expid(e)).join(frame_name(camera, e)),
                        &["IN_PSF", "IN_IMG"],
                    );
                }
            }
        }
    }
}

#[test]
fn bad_lists_and_trees_are_input_errors_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let list = root.join("nights.txt");
    std::fs::write(&list, "20201214 12\n2020-12-14 13\n").unwrap();
    let out = run(
        0,
        &["exposures", "--list", s(&list), "--specprod", s(root)],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nights.txt:2: '2020-12-14' is not a night (YYYYMMDD)"),
        "{err}"
    );

    let out = run(0, &["exposures", "--specprod", s(root)], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a desispec production directory (no preproc/ directory"),
        "{err}"
    );

    // A tree whose only exposure has no preproc file: nothing to extract or skip.
    std::fs::create_dir_all(root.join("preproc").join(NIGHT).join(expid(5))).unwrap();
    let mut args = vec!["exposures", "--specprod", s(root)];
    args.extend(OPTIONS);
    let out = run(0, &args, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no frame to extract or skip in 1 exposure(s): no preproc-*-00000005.fits in"),
        "{err}"
    );
}
