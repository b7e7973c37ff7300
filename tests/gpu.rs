//! The GPU backend from the command line. On a machine without the NVIDIA driver `--gpu` must be
//! a clear error (not a panic); with a GPU (or when `DESI_REQUIRE_GPU=1`, which makes a missing
//! GPU a failure) `selftest --gpu` must pass: GPU against CPU on a simulated bundle.

mod common;

use desi_extract::gpu::probe_driver;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_desi-extract");
use common::PSF_PATH as PSF;

/// The kernel-choice variables a test sets (all removed from the inherited environment first).
const KERNEL_VARS: [&str; 8] = [
    "DESI_EIGH_KERNEL",
    "DESI_BAND_KERNEL",
    "DESI_FACTOR_KERNEL",
    "DESI_ASSEMBLE_KERNEL",
    "DESI_GPU_STREAMS",
    "DESI_GPU_WAIT",
    "DESI_GPU_FRAME_PRIORITY",
    "DESI_SPOT_TEAM_LANES",
];

/// Runs `selftest --gpu -p PSF ARGS` with the kernel-choice variables set as `env` (the others
/// of [`KERNEL_VARS`] unset). With a GPU (or `DESI_REQUIRE_GPU=1`) it must succeed and print
/// `selftest: PASS`: returns its stdout. Without one it must be the clear error (exit 2, no
/// panic): returns `None`.
fn selftest_gpu(env: &[(&str, &str)], args: &[&str]) -> Option<String> {
    let require = std::env::var("DESI_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let mut command = Command::new(BIN);
    for var in KERNEL_VARS {
        command.env_remove(var);
    }
    let out = command
        .envs(env.iter().copied())
        .args(["selftest", "--gpu", "-p", PSF])
        .args(args)
        .output()
        .expect("run desi-extract");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if probe_driver().is_ok() || require {
        assert!(
            out.status.success(),
            "selftest --gpu {args:?} ({env:?}) failed:\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("selftest: PASS"), "{stdout}");
        Some(stdout)
    } else {
        assert_eq!(
            out.status.code(),
            Some(2),
            "stdout {stdout} stderr {stderr}"
        );
        assert!(
            stderr.contains("no NVIDIA GPU driver found"),
            "stderr: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "stderr: {stderr}");
        None
    }
}

/// A bundle with cosmic rays, extracted with the outlier rejection.
const COSMIC_ARGS: [&str; 8] = [
    "-n",
    "50",
    "-w",
    "6000,6400,0.8",
    "--repeat",
    "1",
    "--cosmics",
    "--reject-outliers",
];

#[test]
fn gpu_selftest_or_clear_error_without_gpu() {
    selftest_gpu(&[], &["-n", "25", "-w", "6000,6200,0.8", "--repeat", "1"]);
}

/// Outlier rejection on the GPU (docs/algorithm.md §4.11): on a frame with unmasked cosmic
/// rays, `selftest --gpu --reject-outliers` must pass (the GPU ran the outlier test and the
/// re-solves, and rejected the CPU's pixels patch by patch); without a GPU, the clear error.
#[test]
fn gpu_selftest_with_outlier_rejection_or_clear_error_without_gpu() {
    let Some(stdout) = selftest_gpu(&[], &COSMIC_ARGS) else {
        return;
    };
    assert!(stdout.contains("rejection stages"), "{stdout}");
    // The frame has outliers: the GPU rejected pixels.
    let gpu_line = stdout
        .lines()
        .find(|l| l.starts_with("selftest: GPU outlier rejection:"))
        .unwrap_or_else(|| panic!("no GPU rejection line:\n{stdout}"));
    let pixels: usize = gpu_line
        .split_whitespace()
        .nth(4)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{gpu_line}"));
    assert!(pixels > 0, "{gpu_line}");
}

/// The `eigh` stage by Newton–Schulz on FP64 tensor cores (docs/algorithm.md §6), on a frame
/// with cosmic rays and the outlier rejection (its re-solved blocks reach κ ~ 1e8, which the
/// kernels leave to the Jacobi): with `DESI_EIGH_KERNEL` unset (the default, `ns2`), `ns2` and
/// `ns`, `selftest --gpu` must pass, its DMMA check must have run, it must name the method that
/// ran and that kernel must have solved blocks; with `team` (the Jacobi for every block) it
/// must pass and say so; without a GPU, the clear error.
#[test]
fn gpu_selftest_with_ns_eigh_or_clear_error_without_gpu() {
    for method in [None, Some("ns2"), Some("ns"), Some("team")] {
        let env: Vec<_> = method
            .map(|m| ("DESI_EIGH_KERNEL", m))
            .into_iter()
            .collect();
        let Some(stdout) = selftest_gpu(&env, &COSMIC_ARGS) else {
            return;
        };
        assert!(stdout.contains("selftest: DMMA check"), "{stdout}");
        let name = method.unwrap_or("ns2");
        let prefix = format!("selftest: eigh {name} (DESI_EIGH_KERNEL):");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line:\n{stdout}"));
        if name == "team" {
            assert!(line.contains("every block by the Jacobi"), "{line}");
            continue;
        }
        let kernel = if name == "ns2" {
            "(resolution_ns2)"
        } else {
            "(resolution_ns)"
        };
        assert!(line.contains(kernel), "{line}");
        let solved: u64 = line
            .split_whitespace()
            .nth(4)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(solved > 0, "{line}");
    }
}

/// The band stages' variants (docs/algorithm.md §6): the defaults (`covariance_team_lds`,
/// `factor_solve_team`), `DESI_BAND_KERNEL=team` (`covariance_team`), `DESI_BAND_KERNEL=mma
/// DESI_FACTOR_KERNEL=blocked` (`covariance_mma` on FP64 tensor cores, `factor_solve_blocked`)
/// and `DESI_BAND_KERNEL=mma-late` (`covariance_mma_late`) must each pass `selftest --gpu` and
/// name the kernels that ran; a bad value is a clear error (exit 2); without a GPU, the clear
/// error.
#[test]
fn gpu_selftest_band_kernels_or_clear_error_without_gpu() {
    let args = ["-n", "50", "-w", "6000,6400,0.8", "--repeat", "1"];
    for (env, factor, covariance) in [
        (&[][..], "factor_solve_team", "covariance_team_lds"),
        (
            &[("DESI_BAND_KERNEL", "team")][..],
            "factor_solve_team",
            "covariance_team",
        ),
        (
            &[
                ("DESI_BAND_KERNEL", "mma"),
                ("DESI_FACTOR_KERNEL", "blocked"),
            ][..],
            "factor_solve_blocked",
            "covariance_mma",
        ),
        (
            &[("DESI_BAND_KERNEL", "mma-late")][..],
            "factor_solve_team",
            "covariance_mma_late",
        ),
    ] {
        let Some(stdout) = selftest_gpu(env, &args) else {
            return;
        };
        let prefix = "selftest: cholesky kernel";
        assert_line_names(&stdout, prefix, &format!("cholesky kernel {factor} "), env);
        assert_line_names(
            &stdout,
            prefix,
            &format!("covariance kernel {covariance} "),
            env,
        );
    }
    assert_bad_kernel_value("DESI_BAND_KERNEL", "dmma");
}

/// The assemble stage's variants: the default `assemble_warp` and `DESI_ASSEMBLE_KERNEL=warp-rs`
/// (`assemble_warp_rs`, the band column by a reduce-scatter) must each pass `selftest --gpu`
/// and name the kernel that ran; a bad value is a clear error (exit 2); without a GPU, the
/// clear error.
#[test]
fn gpu_selftest_assemble_kernels_or_clear_error_without_gpu() {
    assert_settings_named(
        &["-n", "50", "-w", "6000,6400,0.8", "--repeat", "1"],
        &[
            (&[], "assemble kernel assemble_warp "),
            (
                &[("DESI_ASSEMBLE_KERNEL", "warp-rs")],
                "assemble kernel assemble_warp_rs ",
            ),
        ],
    );
    assert_bad_kernel_value("DESI_ASSEMBLE_KERNEL", "butterfly");
}

/// The two stream layouts: the default `overlap` (allocations on the `prepare` stream, results
/// on `download`) and `DESI_GPU_STREAMS=one` (everything on the main stream) must each pass
/// `selftest --gpu` (with the outlier rejection's re-solves, which use the same batches) and
/// name the layout that ran; a bad value is a clear error (exit 2); without a GPU, the clear
/// error.
#[test]
fn gpu_selftest_stream_layouts_or_clear_error_without_gpu() {
    assert_settings_named(
        &COSMIC_ARGS,
        &[
            (&[], "streams Overlap "),
            (&[("DESI_GPU_STREAMS", "one")], "streams One "),
        ],
    );
    assert_bad_kernel_value("DESI_GPU_STREAMS", "two");
}

/// How the host waits (`DESI_GPU_WAIT`: the driver's spinning by default, or blocking) and the
/// kernels' stream priority (`DESI_GPU_FRAME_PRIORITY`: ranked by default, or equal) must each
/// pass `selftest --gpu` and be named in its output; bad values are clear errors (exit 2);
/// without a GPU, the clear error.
#[test]
fn gpu_selftest_wait_modes_and_frame_priorities_or_clear_error_without_gpu() {
    assert_settings_named(
        &["-n", "25"],
        &[
            (&[], "wait Spin (DESI_GPU_WAIT); frame priority Ranked "),
            (&[("DESI_GPU_WAIT", "block")], "wait Block "),
            (
                &[("DESI_GPU_FRAME_PRIORITY", "equal")],
                "frame priority Equal ",
            ),
        ],
    );
    assert_bad_kernel_value("DESI_GPU_WAIT", "nap");
    assert_bad_kernel_value("DESI_GPU_FRAME_PRIORITY", "first");
}

/// The spots kernel's team widths (`DESI_SPOT_TEAM_LANES`: 16 lanes per spot by default,
/// `spots_team16`, or a warp or 8 lanes, `spots_team`/`spots_team8`) must each pass
/// `selftest --gpu` (whose check of the frame against the CPU path needs the stamps bit for
/// bit) and be named in its output; a bad value is a clear error (exit 2); without a GPU, the
/// clear error.
#[test]
fn gpu_selftest_spot_team_widths_or_clear_error_without_gpu() {
    assert_settings_named(
        &["-n", "50", "-w", "6000,6400,0.8"],
        &[
            (&[], "; 16 lanes per spot (DESI_SPOT_TEAM_LANES)"),
            (&[("DESI_SPOT_TEAM_LANES", "32")], "; 32 lanes per spot "),
            (&[("DESI_SPOT_TEAM_LANES", "8")], "; 8 lanes per spot "),
        ],
    );
    assert_bad_kernel_value("DESI_SPOT_TEAM_LANES", "12");
}

/// Each variant `(env, named)`: `selftest --gpu ARGS` under `env` passes and its settings line
/// (`selftest: assemble kernel ...`) names `named`; without a GPU, stops at the first run (the
/// clear error, [`selftest_gpu`]).
fn assert_settings_named(args: &[&str], variants: &[(&[(&str, &str)], &str)]) {
    for &(env, named) in variants {
        let Some(stdout) = selftest_gpu(env, args) else {
            return;
        };
        assert_line_names(&stdout, "selftest: assemble kernel", named, env);
    }
}

/// The line of `stdout` starting with `prefix` names `expected` (the variant that ran under
/// `env`).
fn assert_line_names(stdout: &str, prefix: &str, expected: &str, env: &[(&str, &str)]) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line:\n{stdout}"));
    assert!(line.contains(expected), "{env:?}: {line}");
}

/// `selftest --gpu` with `var=value` (a value the kernel choice does not know) exits 2
/// without a panic; with a driver, the error names the setting.
fn assert_bad_kernel_value(var: &str, value: &str) {
    let out = Command::new(BIN)
        .env(var, value)
        .args(["selftest", "--gpu", "-p", PSF, "-n", "25"])
        .output()
        .expect("run desi-extract");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    if probe_driver().is_ok() {
        assert!(
            stderr.contains(&format!("{var}={value}")),
            "stderr: {stderr}"
        );
    }
}
