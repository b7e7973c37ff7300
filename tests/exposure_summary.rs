//! What an exposure run reports about what bounds it and its memory (issue #15 items 2 and 4):
//! the summary line and `--summary-json` (per frame: read/extract/write seconds and when each
//! step started; the GPU busy fraction, GPU memory per frame in flight, the device pool's peaks
//! and what it still holds after release, the host's peak RSS), and the GPU memory cap
//! (`--gpu-memory-limit`, `DESI_GPU_MEMORY_LIMIT`): malformed caps are clear input errors
//! everywhere; on a GPU machine (or with `DESI_REQUIRE_GPU=1`) a cap too small for the frame is
//! a clear error, a frame extracted under a small cap is bitwise the one without, and an
//! exposure's frames are bitwise the same with 1 or 3 frames in flight, as many as the GPU
//! memory holds, and under a cap, which the pool's peak respects, with nothing held after
//! release. Without a GPU, the frames-in-flight loop runs on CPU contexts
//! (`DESI_EXPOSURE_CPU_IN_FLIGHT=1`) and its variants write the same files.
//!
//! r frames of 25-50 fibers on short grids (the preprocs are full r0 CCDs).

mod common;

use common::utf8 as s;
use common::PSF_PATH as PSF;
use desi_extract::gpu::probe_driver;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");

/// Runs the binary with `env` set: (exit code, stdout, stderr).
fn run_env(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("DESI_GPU_MEMORY_LIMIT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("start binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    run_env(args, &[])
}

/// Whether the GPU tests run here: a GPU, or `DESI_REQUIRE_GPU=1` (then its absence fails).
fn gpu_here(test: &str) -> bool {
    let require = std::env::var("DESI_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let here = probe_driver().is_ok() || require;
    if !here {
        eprintln!("{test}: no NVIDIA driver here; the GPU part is not run (DESI_REQUIRE_GPU=1 requires it)");
    }
    here
}

/// Simulates an r0 preproc of spectra 0..nspec on `wave` into `path`.
fn simulate_r0(path: &Path, nspec: &str, wave: &str) {
    let (code, out, err) = run(&[
        "simulate",
        "-p",
        PSF,
        "-o",
        s(path),
        "-w",
        wave,
        "-n",
        nspec,
        "--camera",
        "r0",
        "--expid",
        "7",
        "--seed",
        "5",
    ]);
    assert_eq!(code, Some(0), "simulate: {out}{err}");
}

/// An input directory of exposure 7 whose cameras `r0..r{n-1}` all hold the same simulated r0
/// preproc (25 fibers, 5740-5830 A) and the bundled r PSF.
fn exposure_inputs(dir: &Path, n: usize) -> PathBuf {
    let indir = dir.join("in");
    std::fs::create_dir_all(&indir).unwrap();
    let first = indir.join("preproc-r0-00000007.fits");
    simulate_r0(&first, "25", "5740,5830");
    for i in 0..n {
        std::fs::copy(PSF, indir.join(format!("psf-r{i}-00000007.fits"))).unwrap();
        if i > 0 {
            std::fs::copy(&first, indir.join(format!("preproc-r{i}-00000007.fits"))).unwrap();
        }
    }
    indir
}

/// `exposure` of expid 7 (25 fibers, 50 A) from `indir` into `outdir` with `extra`, writing
/// the summary JSON; asserts exit 0 and returns (stdout, JSON).
fn exposure(indir: &Path, outdir: &Path, extra: &[&str]) -> (String, Value) {
    let json = outdir.with_extension("json");
    let mut args = common::exposure_args(
        indir,
        outdir,
        "7",
        &["-n", "25", "--wave-span", "50", "--summary-json", s(&json)],
    );
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args);
    assert_eq!(code, Some(0), "exposure {extra:?}: {out}\n{err}");
    let text = std::fs::read_to_string(&json).expect("summary JSON written");
    (out, serde_json::from_str(&text).expect("valid JSON"))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// FLUX, IVAR, MASK, RESOLUTION and CHI2PIX of a frame.
type Arrays = (Vec<f64>, Vec<f64>, Vec<u32>, Vec<f64>, Vec<f64>);

/// The data arrays of a frame, for bitwise comparisons.
fn frame_arrays(path: &Path) -> Arrays {
    let f = desi_extract::io::read_frame(path).expect("read the frame");
    (f.flux, f.ivar, f.mask, f.resolution, f.chi2pix)
}

/// Checks one frame record of the JSON: its steps ran in order, each took time, and it was
/// reported after its write.
fn check_frame_record(frame: &Value, wall_s: f64) {
    assert_eq!(frame["status"], "ok", "{frame}");
    let t = &frame["timing"];
    let (read, extract, write) = (num(t, "read_s"), num(t, "extract_s"), num(t, "write_s"));
    assert!(read > 0.0 && extract > 0.0 && write > 0.0, "{t}");
    let (r0, e0, w0) = (
        num(t, "read_start_s"),
        num(t, "extract_start_s"),
        num(t, "write_start_s"),
    );
    // Each step starts after the one before ended (timestamps to 1 ms of slack).
    let slack = 1e-3;
    assert!(r0 >= 0.0 && e0 + slack >= r0 + read, "{t}");
    assert!(w0 + slack >= e0 + extract, "{t}");
    let done = num(frame, "finished_at_s");
    assert!(
        done + slack >= w0 + write && done <= wall_s + slack,
        "{frame}"
    );
    assert!(t["npatch"].as_u64().is_some_and(|n| n > 0), "{t}");
}

#[test]
fn the_summary_reports_each_frames_steps_and_what_bounds_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let indir = exposure_inputs(dir.path(), 3);
    let (out, json) = exposure(&indir, &dir.path().join("out"), &[]);
    assert!(
        out.contains("per-frame median read")
            && out.contains("1 frame(s) in flight")
            && out.contains("host peak RSS"),
        "{out}"
    );
    assert!(!out.contains("GPU busy"), "no GPU on the CPU: {out}");
    let wall_s = num(&json, "wall_s");
    assert_eq!(json["expid"], "00000007");
    assert_eq!(
        (json["written"].as_u64(), json["failed"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(json["frames_in_flight"], 1);
    assert!(json["gpu_busy_fraction"].is_null() && json["gpu_memory"].is_null());
    assert!(json["gpu_peak_bytes_per_frame"].is_null());
    assert_eq!(num(&json, "device_busy_s"), 0.0);
    let rss = json["host_peak_rss_bytes"].as_u64().unwrap();
    // The process held at least one full r CCD (image, ivar, mask: 4128 x 4114 x 12 bytes).
    assert!(rss > 4128 * 4114 * 12 && rss < 64 << 30, "{rss}");
    for key in ["median_read_s", "median_extract_s", "median_write_s"] {
        assert!(num(&json, key) > 0.0 && num(&json, key) < wall_s, "{key}");
    }
    let frames = json["frames"].as_array().unwrap();
    let cameras: Vec<&str> = frames
        .iter()
        .map(|f| f["camera"].as_str().unwrap())
        .collect();
    assert_eq!(cameras, ["r0", "r1", "r2"]);
    for frame in frames {
        check_frame_record(frame, wall_s);
        assert!(frame["timing"]["device_peak_bytes"].is_null(), "{frame}");
        assert_eq!(num(&frame["timing"], "device_s"), 0.0);
    }

    // The same frames read, extracted and written strictly in turn: bitwise equal, and a
    // frame's read starts after the frame before was written.
    // With each frame's trace written: spans of its extraction, on the run's clock.
    let traces = dir.path().join("traces");
    let (_, serial) = exposure(
        &indir,
        &dir.path().join("serial"),
        &["--no-overlap", "--trace-dir", s(&traces)],
    );
    let frames = serial["frames"].as_array().unwrap();
    for frame in frames {
        let camera = frame["camera"].as_str().unwrap();
        let path = traces.join(format!("trace-{camera}-00000007.json"));
        let text = std::fs::read_to_string(&path).expect("trace written");
        let trace: Value = serde_json::from_str(&text).expect("trace is JSON");
        let spans: Vec<&Value> = trace["traceEvents"]
            .as_array()
            .expect("traceEvents")
            .iter()
            .filter(|e| e["ph"] == "X")
            .collect();
        let named = |name: &str| spans.iter().any(|e| e["name"] == name);
        assert!(named("plan") && named("finish frame"), "{camera}: {text}");
        // The first span starts when the frame's extraction did (the run's clock, in µs).
        let first = spans.iter().map(|e| num(e, "ts")).fold(f64::MAX, f64::min) / 1e6;
        let start = num(&frame["timing"], "extract_start_s");
        assert!(first + 1e-3 >= start && first < start + num(&frame["timing"], "extract_s"));
    }
    for pair in frames.windows(2) {
        let before = &pair[0]["timing"];
        assert!(
            num(&pair[1]["timing"], "read_start_s") + 1e-3
                >= num(before, "write_start_s") + num(before, "write_s"),
            "{pair:?}"
        );
    }
    let mut written = Vec::new();
    for camera in ["r0", "r1", "r2"] {
        let name = format!("frame-{camera}-00000007.fits");
        let (a, b) = (
            dir.path().join("out").join(&name),
            dir.path().join("serial").join(&name),
        );
        assert!(
            frame_arrays(&a) == frame_arrays(&b),
            "{name}: overlap changed the frame"
        );
        written.extend([a, b]);
    }
    common::desispec_reads(&written);
}

#[test]
fn a_malformed_gpu_memory_cap_is_a_clear_input_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let indir = dir.path().join("in");
    std::fs::create_dir_all(&indir).unwrap();
    // Never read: the cap is refused when the GPU is opened, before any frame.
    std::fs::write(indir.join("preproc-r0-00000007.fits"), b"").unwrap();
    std::fs::copy(PSF, indir.join("psf-r0-00000007.fits")).unwrap();
    let outdir = dir.path().join("out");
    let base = common::exposure_args(&indir, &outdir, "7", &["--gpu"]);
    let mut flag = base.clone();
    flag.extend(["--gpu-memory-limit", "12 parsecs"]);
    let (code, out, err) = run(&flag);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("--gpu-memory-limit") && err.contains("is not a memory size"),
        "{err}"
    );
    let (code, out, err) = run_env(&base, &[("DESI_GPU_MEMORY_LIMIT", "lots")]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("DESI_GPU_MEMORY_LIMIT") && err.contains("\"lots\" is not a memory size"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(common::dir_names(&outdir).is_empty(), "nothing written");
}

#[test]
fn a_frame_under_a_small_gpu_memory_cap_is_bitwise_the_one_without() {
    if !gpu_here("a_frame_under_a_small_gpu_memory_cap_is_bitwise_the_one_without") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let preproc = dir.path().join("preproc-r0-00000007.fits");
    // 100 fibers x 500 bins: 20 sub-bundles x 10 wavelength patches, 2 batches without a cap.
    simulate_r0(&preproc, "100", "5740,6180");
    let extract = |name: &str, extra: &[&str]| {
        let frame = dir.path().join(name);
        let trace = dir.path().join(format!("{name}.trace.json"));
        let mut more = vec!["--gpu", "--trace", s(&trace)];
        more.extend_from_slice(extra);
        let args = common::extract_args(&preproc, &frame, "5760,6160,0.8", ("0", "100"), &more);
        let (code, out, err) = run(&args);
        (code, format!("{out}{err}"), frame, trace)
    };
    // Too small for the frame's stamps, image and weights: a clear input error, no frame.
    let (code, text, frame, _) = extract("tiny.fits", &["--gpu-memory-limit", "1MiB"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("GPU memory limit") && text.contains("too small for this frame"),
        "{text}"
    );
    assert!(!frame.exists());
    // What the frame needs before any patch, from the message: "... need X (N bytes) before".
    let need: u64 = text
        .split(" bytes) before any patch")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {text}"));
    // Just above that: the batches get the room of the upload staging (8 bytes a pixel, freed
    // before the batches run) and 8 MiB, a few tens of patches of ~1-5 MB each.
    let cap = (need + (8 << 20)).to_string();
    let (code, text, capped, capped_trace) = extract("capped.fits", &["--gpu-memory-limit", &cap]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text, free, free_trace) = extract("free.fits", &[]);
    assert_eq!(code, Some(0), "{text}");
    let batches = |trace: &Path| {
        let json: Value = serde_json::from_str(&std::fs::read_to_string(trace).unwrap()).unwrap();
        json["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "assemble" && e["tid"] == 2)
            .count()
    };
    let (nb_capped, nb_free) = (batches(&capped_trace), batches(&free_trace));
    assert!(
        nb_capped > nb_free && nb_free >= 1,
        "{nb_capped} batches under the cap, {nb_free} without"
    );
    assert!(
        frame_arrays(&capped) == frame_arrays(&free),
        "the cap changed the frame"
    );
    common::desispec_reads(&[capped, free]);
}

#[test]
fn gpu_exposure_frames_are_the_same_in_flight_and_capped_and_memory_is_released() {
    if !gpu_here("gpu_exposure_frames_are_the_same_in_flight_and_capped_and_memory_is_released") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let indir = exposure_inputs(dir.path(), 4);
    let runs: [(&str, &[&str]); 4] = [
        ("one", &["--gpu", "--frames-in-flight", "1"]),
        ("default", &["--gpu"]),
        ("three", &["--gpu", "--frames-in-flight", "3"]),
        ("capped", &["--gpu", "--gpu-memory-limit", "3GiB"]),
    ];
    let mut written = Vec::new();
    for (name, extra) in runs {
        let (out, json) = exposure(&indir, &dir.path().join(name), extra);
        assert!(
            out.contains("GPU busy") && out.contains("held after release"),
            "{out}"
        );
        let wall_s = num(&json, "wall_s");
        let busy = json["gpu_busy_fraction"].as_f64().expect("a GPU fraction");
        assert!(busy > 0.0 && busy <= 1.0 + 1e-6, "{name}: busy {busy}");
        // The union of the device stages never exceeds their sum.
        assert!(num(&json, "device_busy_s") <= num(&json, "device_stage_s") + 1e-6);
        let gpu = &json["gpu_memory"];
        assert_eq!(gpu["held_after_release"], 0, "{name}: {gpu}");
        let used_high = gpu["pool"]["used_high"].as_u64().unwrap();
        assert!(used_high > 0, "{name}: {gpu}");
        let in_flight = json["frames_in_flight"].as_u64().unwrap();
        // Without --frames-in-flight, one frame per 9.66 GiB of the cap (3 GiB: one) or of
        // 70% of the free memory.
        match name {
            "default" => assert!((1..=3).contains(&in_flight), "{name}: {in_flight}"),
            _ => assert_eq!(in_flight, [1, 0, 3, 1][written.len() / 4], "{name}"),
        }
        assert!(
            in_flight == 1 || out.contains(&format!("{in_flight} frames in flight on the GPU")),
            "{out}"
        );
        if name == "capped" {
            let cap = 3u64 << 30;
            assert_eq!(gpu["limit_bytes"], cap);
            assert!(used_high <= cap, "pool peak {used_high} over the cap");
        }
        for frame in json["frames"].as_array().unwrap() {
            check_frame_record(frame, wall_s);
            let t = &frame["timing"];
            let peak = t["device_peak_bytes"]
                .as_u64()
                .expect("GPU frames report memory");
            assert!(
                peak > 0 && (name != "capped" || peak <= (3u64 << 30) / in_flight),
                "{t}"
            );
            assert!(
                num(t, "device_s") > 0.0 && num(t, "device_busy_s") <= num(t, "device_s") + 1e-6
            );
        }
        for i in 0..4 {
            written.push(
                dir.path()
                    .join(name)
                    .join(format!("frame-r{i}-00000007.fits")),
            );
        }
    }
    let reference = frame_arrays(&written[0]);
    for path in &written {
        assert!(
            frame_arrays(path) == reference,
            "{} differs",
            path.display()
        );
    }
    common::desispec_reads(&written);
}

/// A frame file's bytes with the CHECKSUM and DATASUM cards (whose comments hold the second
/// they were written) blanked.
fn without_checksum_cards(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("read the frame");
    for card in bytes.chunks_mut(80) {
        if card.starts_with(b"CHECKSUM= ") || card.starts_with(b"DATASUM = ") {
            card.fill(b' ');
        }
    }
    bytes
}

/// The frames-in-flight loop (the single GPU process's, run here on CPU contexts with
/// `DESI_EXPOSURE_CPU_IN_FLIGHT=1`): any-order completion (default) and the loop before issue
/// #15 (`DESI_EXPOSURE_LOOP=fifo`), with the direct and cfitsio frame writers and the parallel
/// and serial preproc reads, all write the files of the plain one-process run, byte for byte
/// (but the checksum cards' dates), report every frame in order and the frames in flight.
#[test]
fn frames_in_flight_loops_writers_and_readers_give_the_same_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let indir = exposure_inputs(dir.path(), 5);
    let reference = dir.path().join("plain");
    let (_, plain) = exposure(&indir, &reference, &[]);
    assert_eq!(plain["frames_in_flight"], 1, "{plain}");
    let variants: [(&str, &[(&str, &str)]); 3] = [
        ("any", &[("DESI_EXPOSURE_CPU_IN_FLIGHT", "1")]),
        (
            "fifo",
            &[
                ("DESI_EXPOSURE_CPU_IN_FLIGHT", "1"),
                ("DESI_EXPOSURE_LOOP", "fifo"),
            ],
        ),
        (
            "old-io",
            &[
                ("DESI_EXPOSURE_CPU_IN_FLIGHT", "1"),
                ("DESI_FRAME_WRITER", "cfitsio"),
                ("DESI_PREPROC_READ", "serial"),
            ],
        ),
    ];
    for (name, env) in variants {
        let outdir = dir.path().join(name);
        let json = outdir.with_extension("json");
        let mut args = common::exposure_args(
            &indir,
            &outdir,
            "7",
            &["-n", "25", "--wave-span", "50", "--summary-json", s(&json)],
        );
        args.extend_from_slice(&["--frames-in-flight", "3"]);
        let (code, out, err) = run_env(&args, env);
        assert_eq!(code, Some(0), "{name}: {out}\n{err}");
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("summary")).unwrap();
        assert_eq!(summary["frames_in_flight"], 3, "{name}: {summary}");
        let frames = summary["frames"].as_array().expect("frames");
        assert_eq!(frames.len(), 5, "{name}");
        let wall = num(&summary, "wall_s");
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame["camera"], format!("r{i}"), "{name}: in order");
            check_frame_record(frame, wall);
        }
        for i in 0..5 {
            let file = format!("frame-r{i}-00000007.fits");
            let (want, got) = (reference.join(&file), outdir.join(&file));
            assert!(
                without_checksum_cards(&want) == without_checksum_cards(&got),
                "{name}: {file} differs from the plain run's"
            );
            assert!(
                desi_extract::io::checksums_ok(&got).expect("read"),
                "{name}"
            );
        }
    }
}
