//! The embedded PTX module: entry points and their by-value argument structs, no unresolved
//! symbols, target, and `ptxas` acceptance.
//!
//! `ptxas` is looked up in this order: `$DESI_PTXAS`, `ptxas` on `PATH`, then the pip location
//! that `scripts/setup.sh` installs `nvidia-cuda-nvcc` into
//! (`${XDG_CACHE_HOME:-~/.cache}/desi-extract/py/nvidia/cu*/bin/ptxas`). When none is found the
//! `ptxas` test fails if `CI=true` (CI must check the PTX) and otherwise prints a notice and
//! passes, so that a developer machine without the CUDA tools can still run `cargo test`.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use desi_extract::gpu::ptx::{CUBIN_SM90, KERNELS, PTX};

/// Names of the `.entry` directives of a PTX module, in order.
fn entry_names(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix(".visible")?.trim_start();
            let rest = rest.strip_prefix(".entry")?.trim_start();
            let end = rest
                .find(|c: char| c == '(' || c.is_whitespace())
                .unwrap_or(rest.len());
            Some(rest[..end].to_owned())
        })
        .collect()
}

#[test]
fn every_listed_kernel_is_an_entry_and_every_entry_is_listed() {
    let entries = entry_names(PTX);
    for kernel in KERNELS {
        let name = kernel.name;
        assert!(
            entries.iter().any(|entry| entry == name),
            "kernel `{name}` of gpu::ptx::KERNELS has no `.entry {name}` in the PTX (entries: {entries:?})"
        );
    }
    for entry in &entries {
        assert!(
            KERNELS.iter().any(|kernel| kernel.name == entry),
            "`.entry {entry}` of the PTX is missing from gpu::ptx::KERNELS {KERNELS:?}"
        );
    }
    assert!(
        entries.iter().any(|entry| entry == "spots"),
        "no `.entry spots`"
    );
}

/// The `.param` declarations of `.entry name` (the lines between `(` and `)`, trimmed, without
/// the trailing commas).
fn entry_params<'a>(ptx: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let head = format!(".entry {name}(");
    let start = ptx.find(&head)? + head.len();
    let end = start + ptx[start..].find(')')?;
    Some(
        ptx[start..end]
            .lines()
            .map(|line| line.trim().trim_end_matches(','))
            .filter(|line| !line.is_empty())
            .collect(),
    )
}

/// `(align, size)` of a `.param .align A .b8 NAME[SIZE]` declaration named `NAME`.
fn byte_array_param(decl: &str, name: &str) -> Option<(usize, usize)> {
    let rest = decl.strip_prefix(".param")?.trim_start();
    let rest = rest.strip_prefix(".align")?.trim_start();
    let (align, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start().strip_prefix(".b8")?.trim_start();
    let rest = rest.strip_prefix(name)?.strip_prefix('[')?;
    let size = rest.strip_suffix(']')?;
    Some((align.parse().ok()?, size.parse().ok()?))
}

/// Each kernel takes exactly one parameter, its argument struct by value: the PTX declares
/// one `.param .align A .b8 <name>_param_0[SIZE]` with `SIZE` and `A` the `size_of` and
/// `align_of` of the struct on the host (so the bytes the host pushes are the parameter the
/// kernel reads).
#[test]
fn every_kernel_takes_its_argument_struct_by_value() {
    for kernel in KERNELS {
        let name = kernel.name;
        let params = entry_params(PTX, name)
            .unwrap_or_else(|| panic!("no parameter list for `.entry {name}` in the PTX"));
        assert_eq!(
            params.len(),
            1,
            "`.entry {name}` must take exactly one parameter (its argument struct), PTX has {params:?}"
        );
        let param_name = format!("{name}_param_0");
        let (align, size) = byte_array_param(params[0], &param_name).unwrap_or_else(|| {
            panic!(
                "`.entry {name}`: the parameter `{}` is not `.param .align A .b8 {param_name}[SIZE]`",
                params[0]
            )
        });
        assert_eq!(
            (size, align),
            (kernel.size, kernel.align),
            "`.entry {name}`: PTX parameter of {size} bytes aligned to {align}, host argument \
             struct of {} bytes aligned to {}",
            kernel.size,
            kernel.align
        );
    }
}

#[test]
fn the_parameter_parser_reads_a_byte_array() {
    let ptx = ".visible .entry k(\n\t.param .align 8 .b8 k_param_0[144]\n)\n.maxnreg 128\n{\n}\n";
    assert_eq!(
        entry_params(ptx, "k"),
        Some(vec![".param .align 8 .b8 k_param_0[144]"])
    );
    assert_eq!(
        byte_array_param(".param .align 8 .b8 k_param_0[144]", "k_param_0"),
        Some((8, 144))
    );
    assert_eq!(byte_array_param(".param .u64 k_param_0", "k_param_0"), None);
    let two = ".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .f64 k_param_1\n)\n{\n}\n";
    assert_eq!(
        entry_params(two, "k"),
        Some(vec![".param .u64 k_param_0", ".param .f64 k_param_1"])
    );
}

#[test]
fn no_unresolved_extern() {
    let externs: Vec<(usize, &str)> = PTX
        .lines()
        .enumerate()
        // `.extern .shared` arrays are launch-sized dynamic shared memory, not symbols.
        .filter(|(_, line)| line.contains(".extern") && !line.contains(".extern .shared"))
        .map(|(index, line)| (index + 1, line.trim()))
        .collect();
    assert!(
        externs.is_empty(),
        "unresolved `.extern` in the PTX (line, text): {externs:?}"
    );
}

#[test]
fn targets_sm_80_or_newer_64_bit() {
    let target = PTX
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(".target"))
        .expect("no .target directive in the PTX")
        .trim();
    let arch: u32 = target
        .split(',')
        .next()
        .and_then(|arch| arch.trim().strip_prefix("sm_"))
        .and_then(|digits| {
            digits
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("cannot parse `.target {target}`"));
    assert!(
        arch >= 80,
        "PTX targets sm_{arch}, want sm_80 or newer (f64 throughput, async copies)"
    );
    assert!(
        PTX.lines().any(|line| line.trim() == ".address_size 64"),
        "PTX is not 64-bit (.address_size 64 missing)"
    );
}

include!("../tools/find_ptxas.rs");

/// [`find_ptxas`], panicking on a bad `$DESI_PTXAS`.
fn ptxas() -> Option<PathBuf> {
    find_ptxas().unwrap_or_else(|err| panic!("{err}"))
}

#[test]
fn ptxas_accepts_the_ptx_for_sm_90() {
    let Some(ptxas) = ptxas() else {
        let in_ci = env::var("CI").is_ok_and(|value| value == "true" || value == "1");
        assert!(
            !in_ci,
            "CI=true but no ptxas was found (DESI_PTXAS, PATH, ~/.cache/desi-extract/py): run scripts/setup.sh"
        );
        eprintln!(
            "NOTICE: ptxas not found (set DESI_PTXAS or run scripts/setup.sh); skipping the ptxas check of the PTX"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let ptx = dir.path().join("desi_device.ptx");
    let cubin = dir.path().join("desi_device.cubin");
    fs::write(&ptx, PTX).expect("write the PTX to a temporary file");
    let output = Command::new(&ptxas)
        .arg("-arch=sm_90")
        .arg("-o")
        .arg(&cubin)
        .arg(&ptx)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", ptxas.display()));
    assert!(
        output.status.success(),
        "{} -arch=sm_90 rejected the PTX ({}):\n{}{}",
        ptxas.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let cubin_len = fs::metadata(&cubin).map(|meta| meta.len()).unwrap_or(0);
    assert!(cubin_len > 0, "ptxas wrote no cubin");
}

/// With `ptxas` at hand the build embeds an sm_90 cubin (an ELF image) next to the PTX; in CI
/// (`CI=true`, where setup installs `ptxas`) it must be there.
#[test]
fn the_build_embeds_an_sm_90_cubin_when_ptxas_exists() {
    let in_ci = env::var("CI").is_ok_and(|value| value == "true" || value == "1");
    if ptxas().is_none() && !in_ci {
        eprintln!(
            "no ptxas: the build embedded PTX only (cubin empty: {})",
            CUBIN_SM90.is_empty()
        );
        return;
    }
    assert!(
        CUBIN_SM90.starts_with(b"\x7fELF"),
        "the embedded sm_90 cubin is not an ELF image ({} bytes)",
        CUBIN_SM90.len()
    );
    // Every kernel is in it (its symbol table names them).
    let image = String::from_utf8_lossy(CUBIN_SM90);
    for kernel in KERNELS {
        let name = kernel.name;
        assert!(image.contains(name), "kernel {name} missing from the cubin");
    }
}
