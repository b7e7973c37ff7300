//! Build script: compiles `device/` (crate `desi_device`) to PTX and embeds it (the cuda_builder role).
//!
//! Route: a nested `cargo rustc` of the dependency-free device crate for `nvptx64-nvidia-cuda`,
//! with the toolchain pinned in `rust-toolchain.toml`, `-Zbuild-std=core` (no nvptx rust-std is
//! shipped, so `core` is built from the `rust-src` component) and
//! `RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Ctarget-cpu=sm_80"` (in RUSTFLAGS so
//! that `core` is built with them too), emitting the PTX with `--emit=asm=...`.
//!
//! Outputs:
//! - `$OUT_DIR/desi_device.ptx`, embedded by `host/gpu/ptx.rs` with `include_str!`;
//! - `<target dir>/ptx/desi_device.ptx`, a stable copy for scripts (`ptxas`, `cuobjdump`, diffs);
//! - `$OUT_DIR/desi_device_sm90.cubin`, the PTX compiled by `ptxas` for sm_90 (empty without
//!   `ptxas`), embedded too: H100/H200 then skip the driver's JIT compilation.
//!
//! The nested build has its own target directory `<target dir>/ptx/cargo` (never the outer one,
//! whose lock the outer cargo holds) shared by every outer profile (`build`, `test`, `clippy`,
//! `--release`): the PTX is always built with the release profile, so `core` is compiled once
//! per target directory and later builds are a fresh check of well under a second. The outer
//! cargo's jobserver is passed on (`CARGO_MAKEFLAGS`) so the nested build shares its job slots.
//!
//! The build fails, printing the reason, when the pinned toolchain or its `rust-src` is
//! missing, when the nested build fails (its full output is shown) or when the PTX references an
//! unresolved `.extern` symbol (the offending lines are shown): such a module would only fail
//! later, at load time on a GPU.
//!
//! Escape hatch: `DESI_EXTRACT_PTX=/path/to/prebuilt.ptx` embeds that file instead of building
//! (it is still checked for `.extern`). `scripts/test.sh` (and so CI) unsets it.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{self, Command};

/// File name of the PTX module, in `$OUT_DIR` and in `<target dir>/ptx`.
const PTX_FILE: &str = "desi_device.ptx";
/// LLVM target of the kernels.
const PTX_TARGET: &str = "nvptx64-nvidia-cuda";
/// Oldest GPU architecture the PTX is generated for (A100); the driver JIT-compiles it for newer ones.
const PTX_ARCH: &str = "sm_80";
/// Environment variable naming a prebuilt PTX file to embed instead of building one.
const PREBUILT_ENV: &str = "DESI_EXTRACT_PTX";

fn main() {
    println!("cargo:rerun-if-changed=device/src");
    println!("cargo:rerun-if-changed=device/Cargo.toml");
    println!("cargo:rerun-if-changed=rust-toolchain.toml");
    println!("cargo:rerun-if-env-changed={PREBUILT_ENV}");

    let manifest_dir = PathBuf::from(env_or_fail("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env_or_fail("OUT_DIR"));
    let ptx_dir = ptx_dir(&out_dir);
    if let Err(err) = fs::create_dir_all(&ptx_dir) {
        fail(&format!("cannot create {}: {err}", ptx_dir.display()));
    }

    let (ptx, origin) = match env::var_os(PREBUILT_ENV).filter(|path| !path.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            println!(
                "cargo:warning=embedding the prebuilt PTX {} ({PREBUILT_ENV} is set); device/ is not rebuilt",
                path.display()
            );
            (read_or_fail(&path), path)
        }
        None => {
            let path = build_ptx(&manifest_dir, &ptx_dir.join("cargo"));
            (read_or_fail(&path), path)
        }
    };

    check_no_extern(&ptx, &origin);
    let ptx = limit_registers(ptx);
    write_or_fail(&out_dir.join(PTX_FILE), &ptx);
    // The stable copy is written through a temporary name and renamed, so a script never reads
    // half a file.
    let tmp = ptx_dir.join(format!("{PTX_FILE}.tmp{}", process::id()));
    write_or_fail(&tmp, &ptx);
    if let Err(err) = fs::rename(&tmp, ptx_dir.join(PTX_FILE)) {
        fail(&format!(
            "cannot rename {} into place: {err}",
            tmp.display()
        ));
    }
    build_cubin(&out_dir);
}

/// File name of the sm_90 cubin in `$OUT_DIR` (empty when no `ptxas` was found).
const CUBIN_FILE: &str = "desi_device_sm90.cubin";

/// Compiles the PTX for sm_90 (H100/H200) with `ptxas`, so that those GPUs load machine code
/// instead of JIT-compiling the PTX at first use (about 10 s on an H100 with a cold
/// `~/.nv/ComputeCache`). Without `ptxas` (`$DESI_PTXAS`, `PATH`, or the pip copy that
/// scripts/setup.sh installs) the cubin is empty and every GPU JIT-compiles the PTX.
fn build_cubin(out_dir: &Path) {
    println!("cargo:rerun-if-env-changed=DESI_PTXAS");
    println!("cargo:rerun-if-changed=tools/find_ptxas.rs");
    let cubin = out_dir.join(CUBIN_FILE);
    let found = find_ptxas().unwrap_or_else(|err| fail(&err));
    let Some(ptxas) = found else {
        println!(
            "cargo:warning=no ptxas found: the GPU kernels are embedded as PTX only and JIT-compile at first use (run scripts/setup.sh, or set DESI_PTXAS)"
        );
        write_or_fail(&cubin, "");
        return;
    };
    let status = process::Command::new(&ptxas)
        .args(["-arch=sm_90", "-O3"])
        .arg(out_dir.join(PTX_FILE))
        .arg("-o")
        .arg(&cubin)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!("{} rejected the PTX ({s})", ptxas.display())),
        Err(err) => fail(&format!("cannot run {}: {err}", ptxas.display())),
    }
}

include!("tools/find_ptxas.rs");

/// Kernels given a `.maxnreg` register limit, and the limit: rustc has no launch-bounds
/// attribute, and without a limit ptxas schedules for ILP up to 255 registers.
/// `covariance_team`: 128 registers x 128 lanes x 4 blocks fill an SM's 64 K registers, the 4
/// blocks its shared memory allows (47.5 KB each); unlimited it takes about 220.
/// `factor_solve_team`: 168 registers x 64 lanes x 6 blocks fit, the 6 blocks its shared memory
/// allows (35.9 KB each); it takes 167 unlimited, a guard against a silent drop to 5 blocks.
/// `factor_solve_blocked`: the same kernel with the blocked back substitution.
/// `covariance_mma`: 128 registers x 256 lanes x 2 blocks fill an SM (2 x 57 KB of shared
/// memory); unlimited it takes over 200 (1 block per SM); ~250 bytes of spills at 128
/// (`covariance_mma_late`, without the register prefetch of `L`: ~150).
/// `spots_team`: unlimited it takes 108 registers, 4 blocks of 128 lanes (16 warps) per SM,
/// stalled on fixed-latency dependencies (ncu); at 80 (96 bytes of spill stores) 6 blocks fit
/// (its 18.3 KB of shared memory allow 6): a full r frame's spots kernel took 12.93 ms
/// against 14.53 (H100, CUDA events, two runs; selftest PASS). `spots_team16` and
/// `spots_team8` (the same body on smaller teams; 16 lanes the default) get the same cap.
const REGISTER_LIMITS: &[(&str, u32)] = &[
    ("spots_team", 80),
    ("spots_team16", 80),
    ("spots_team8", 80),
    ("covariance_team", 128),
    ("covariance_team_lds", 128),
    ("covariance_mma", 128),
    ("covariance_mma_late", 128),
    ("resolution_team", 128),
    ("resolution_ns", 128),
    ("resolution_ns2", 128),
    ("factor_solve_team", 168),
    ("factor_solve_blocked", 168),
];

/// Build-time override of [`REGISTER_LIMITS`] for experiments on a GPU machine (a build per
/// variant, carried beside the default one): `DESI_REGISTER_LIMITS=spots_team=64,resolution_team=0`
/// sets the limit of each named kernel (`0` removes it; kernels not named keep theirs).
const REGISTER_LIMITS_ENV: &str = "DESI_REGISTER_LIMITS";

/// [`REGISTER_LIMITS`] with the overrides of [`REGISTER_LIMITS_ENV`] (fails on a malformed
/// entry or an unknown kernel name there).
fn register_limits() -> Vec<(String, u32)> {
    println!("cargo:rerun-if-env-changed={REGISTER_LIMITS_ENV}");
    let mut limits: Vec<(String, u32)> = REGISTER_LIMITS
        .iter()
        .map(|(name, limit)| (name.to_string(), *limit))
        .collect();
    let Ok(text) = env::var(REGISTER_LIMITS_ENV) else {
        return limits;
    };
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry
            .split_once('=')
            .and_then(|(name, limit)| Some((name.trim(), limit.trim().parse::<u32>().ok()?)));
        let Some((name, limit)) = parsed else {
            fail(&format!(
                "{REGISTER_LIMITS_ENV}: `{entry}` is not KERNEL=REGISTERS (e.g. spots_team=64)"
            ));
        };
        limits.retain(|(n, _)| n != name);
        if limit > 0 {
            limits.push((name.to_string(), limit));
        }
    }
    limits
}

/// Inserts `.maxnreg` between the parameter list and the body of the kernels of
/// [`register_limits`] (fails when one is missing or already has a directive).
fn limit_registers(mut ptx: String) -> String {
    for (name, limit) in register_limits() {
        let head = format!(".entry {name}(");
        let Some(start) = ptx.find(&head) else {
            fail(&format!(
                "REGISTER_LIMITS: no kernel `{name}` in the device PTX"
            ));
        };
        let Some(close) = ptx[start..].find(")\n").map(|i| start + i + 1) else {
            fail(&format!("REGISTER_LIMITS: no parameter list for `{name}`"));
        };
        let rest = ptx[close..].trim_start();
        if !rest.starts_with('{') {
            fail(&format!("REGISTER_LIMITS: `{name}` already has directives"));
        }
        ptx.insert_str(close, &format!("\n.maxnreg {limit}"));
    }
    ptx
}

/// `<target dir>/ptx`, found by walking up from `OUT_DIR` (`<target>[/<triple>]/<profile>/build/
/// <pkg>-<hash>/out`); falls back to `$OUT_DIR/ptx` for layouts it does not recognise.
fn ptx_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "build"))
        .and_then(|build| build.parent()) // <profile>
        .and_then(|profile| profile.parent()) // <target> or <target>/<triple>
        .map(|target| target.join("ptx"))
        .unwrap_or_else(|| out_dir.join("ptx"))
}

/// Runs the nested nvptx build in `target_dir` and returns the path of the emitted PTX.
fn build_ptx(manifest_dir: &Path, target_dir: &Path) -> PathBuf {
    let (cargo, rustc, toolchain) = nightly_tools(manifest_dir);
    check_rust_src(&rustc, &toolchain);

    let ptx = target_dir.join(PTX_FILE);
    let mut output = run_nested_cargo(manifest_dir, target_dir, &cargo, &rustc, &ptx);
    if output.status.success() && !ptx.is_file() {
        // cargo considered the device crate fresh but the emitted file is gone (deleted by
        // hand): forget the crate's fingerprint so that rustc runs, and emits, again.
        forget_device_fingerprint(target_dir);
        output = run_nested_cargo(manifest_dir, target_dir, &cargo, &rustc, &ptx);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        fail(&format!(
            "the nested PTX build of device/ failed ({}).\n\
             command: {} rustc --manifest-path device/Cargo.toml --lib --crate-type rlib --release \
             --target {PTX_TARGET} -Zbuild-std=core --target-dir {} -- --emit=link,asm={}\n\
             --- its stderr ---\n{stderr}\n--- its stdout ---\n{stdout}",
            output.status,
            cargo.display(),
            target_dir.display(),
            ptx.display(),
        ));
    }
    if !ptx.is_file() {
        fail(&format!(
            "the nested PTX build succeeded but wrote no {}\n--- its stderr ---\n{stderr}",
            ptx.display()
        ));
    }
    forward_warnings(&stderr);
    ptx
}

/// One run of `cargo rustc` for the device crate, in a clean environment.
fn run_nested_cargo(
    manifest_dir: &Path,
    target_dir: &Path,
    cargo: &Path,
    rustc: &Path,
    ptx: &Path,
) -> process::Output {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest_dir);
    // Variables the outer cargo set for this build script or its own rustc (RUSTC_WRAPPER of
    // clippy, CARGO_TARGET_DIR, CARGO_ENCODED_RUSTFLAGS, profile overrides, ...) must not leak
    // into the nested build; keep only the cargo home and the outer jobserver.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_MAKEFLAGS");
        let leaks = key.starts_with("CARGO")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key.starts_with("__CARGO")
            || key.starts_with("CLIPPY")
            || matches!(
                key,
                "RUSTFLAGS"
                    | "RUSTUP_TOOLCHAIN"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "NUM_JOBS"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
            );
        if leaks && !keep {
            cmd.env_remove(key);
        }
    }
    let mut emit = OsString::from("--emit=link,asm=");
    emit.push(ptx);
    cmd.env("RUSTC", rustc)
        .env(
            "RUSTFLAGS",
            format!("-Zunstable-options -Cpanic=immediate-abort -Ctarget-cpu={PTX_ARCH}"),
        )
        // The workspace's release profile asks for debug info and several codegen units: the
        // PTX wants neither (one codegen unit = one .s file at the --emit path).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_TERM_PROGRESS_WHEN", "never");
    if env::var("CARGO_NET_OFFLINE").is_ok_and(|value| value == "true") {
        cmd.arg("--offline");
    }
    cmd.args(["rustc", "--manifest-path"])
        .arg(manifest_dir.join("device").join("Cargo.toml"))
        .args([
            "--lib",
            "--crate-type",
            "rlib",
            "--release",
            "--target",
            PTX_TARGET,
        ])
        .args(["-Zbuild-std=core", "--target-dir"])
        .arg(target_dir)
        .arg("--")
        .arg(emit);
    match cmd.output() {
        Ok(output) => output,
        Err(err) => fail(&format!("cannot run {}: {err}", cargo.display())),
    }
}

/// Deletes the nested build's fingerprints of the device crate (best effort).
fn forget_device_fingerprint(target_dir: &Path) {
    let dir = target_dir
        .join(PTX_TARGET)
        .join("release")
        .join(".fingerprint");
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("desi-extract-device-")
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Re-emits the headline (and location) of each warning of the nested build as a cargo warning:
/// `cargo clippy` on the host never sees the nvptx-only code, this is where its warnings show.
fn forward_warnings(stderr: &str) {
    let mut lines = stderr.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("warning:") && !line.contains("generated") {
            let location = lines
                .peek()
                .filter(|next| next.trim_start().starts_with("-->"))
                .map(|next| next.trim())
                .unwrap_or("");
            println!("cargo:warning=device ({PTX_TARGET}): {line} {location}");
        }
    }
}

/// The pinned toolchain's `cargo` and `rustc` and its name.
///
/// With rustup (the normal case) the binaries of the channel pinned in `rust-toolchain.toml` are
/// used directly, whatever toolchain runs the outer build (`cargo +stable clippy` included).
/// Without rustup, the outer build's own `cargo`/`rustc` are used and must be a nightly.
fn nightly_tools(manifest_dir: &Path) -> (PathBuf, PathBuf, String) {
    let channel = pinned_channel(manifest_dir);
    if let Some(rustup) = find_rustup() {
        let which = |tool: &str| -> PathBuf {
            let output = Command::new(&rustup)
                .args(["which", "--toolchain", &channel, tool])
                .env_remove("RUSTUP_TOOLCHAIN")
                .output();
            match output {
                Ok(out) if out.status.success() => {
                    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
                }
                Ok(out) => fail(&format!(
                    "the pinned toolchain {channel} (rust-toolchain.toml) is needed to build the \
                     GPU kernels but `rustup which --toolchain {channel} {tool}` failed:\n{}\n\
                     Install it with scripts/setup.sh, or:\n  rustup toolchain install {channel} \
                     --profile minimal -c rust-src -c llvm-tools -c clippy -c rustfmt\n\
                     (or set {PREBUILT_ENV}=path/to/prebuilt.ptx to skip the kernel build)",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(err) => fail(&format!("cannot run {}: {err}", rustup.display())),
            }
        };
        return (which("cargo"), which("rustc"), channel);
    }
    let cargo = PathBuf::from(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let rustc = PathBuf::from(env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    let version = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    if !version.contains("nightly") {
        fail(&format!(
            "building the GPU kernels needs a nightly rustc ({channel}, rust-toolchain.toml) and \
             rustup was not found; {} reports:\n{version}\nInstall rustup and run scripts/setup.sh \
             (or set {PREBUILT_ENV}=path/to/prebuilt.ptx to skip the kernel build)",
            rustc.display()
        ));
    }
    (cargo, rustc, channel)
}

/// The `channel = "..."` of `rust-toolchain.toml`.
fn pinned_channel(manifest_dir: &Path) -> String {
    let path = manifest_dir.join("rust-toolchain.toml");
    let text = read_or_fail(&path);
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with("channel"))
        .find_map(|line| line.split('"').nth(1))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            fail(&format!(
                "no `channel = \"...\"` line in {}",
                path.display()
            ))
        })
}

/// `rustup` from PATH, `$CARGO_HOME/bin` or `~/.cargo/bin`.
fn find_rustup() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|dir| dir.join("rustup")));
    }
    if let Some(home) = env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(home).join("bin").join("rustup"));
    }
    if let Some(home) = env::var_os("HOME") {
        candidates.push(
            PathBuf::from(home)
                .join(".cargo")
                .join("bin")
                .join("rustup"),
        );
    }
    candidates.into_iter().find(|path| path.is_file())
}

/// `-Zbuild-std` compiles `core` from the toolchain's `rust-src` component: check it is there.
fn check_rust_src(rustc: &Path, toolchain: &str) {
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .unwrap_or_else(|err| fail(&format!("cannot run {}: {err}", rustc.display())));
    let core = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core.is_file() {
        fail(&format!(
            "the rust-src component of {toolchain} is missing ({} not found); -Zbuild-std=core \
             needs it to build `core` for {PTX_TARGET}. Install it with:\n  rustup component add \
             rust-src --toolchain {toolchain}",
            core.display()
        ));
    }
}

/// Fails on any `.extern` declaration: an unresolved symbol (a libm call, a panic handler)
/// that no PTX linker will provide.
fn check_no_extern(ptx: &str, origin: &Path) {
    let externs: Vec<String> = ptx
        .lines()
        .enumerate()
        // `.extern .shared` arrays are dynamic shared memory (launch-sized, e.g.
        // `gpu_launch_sized_workgroup_mem`), resolved by the launch, not by the linker.
        .filter(|(_, line)| line.contains(".extern") && !line.contains(".extern .shared"))
        .map(|(index, line)| format!("  {}:{}: {}", origin.display(), index + 1, line.trim()))
        .collect();
    if !externs.is_empty() {
        fail(&format!(
            "the device PTX has {} unresolved `.extern` declaration(s); every function a kernel \
             calls must be defined in device/ (on nvptx only sqrt/fma/floor lower from core, \
             panics must be impossible or use -Cpanic=immediate-abort):\n{}",
            externs.len(),
            externs.join("\n")
        ));
    }
    if !ptx.contains(".entry") {
        fail(&format!(
            "{} contains no `.entry` (no kernel)",
            origin.display()
        ));
    }
}

fn env_or_fail(key: &str) -> OsString {
    env::var_os(key).unwrap_or_else(|| fail(&format!("{key} is not set (run through cargo)")))
}

fn read_or_fail(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|err| fail(&format!("cannot read {}: {err}", path.display())))
}

fn write_or_fail(path: &Path, text: &str) {
    if let Err(err) = fs::write(path, text) {
        fail(&format!("cannot write {}: {err}", path.display()));
    }
}

/// Prints `error: <message>` (shown by cargo under the build script's stderr) and exits.
fn fail(message: &str) -> ! {
    eprintln!("error: desi-extract build.rs: {message}");
    process::exit(1);
}
