#!/usr/bin/env bash
# Installs what building and testing desi-extract needs. Idempotent: when everything is present
# it only checks (about a second) and changes nothing.
#
#   1. system packages (Debian/Ubuntu apt): a C toolchain and make (fitsio-src builds cfitsio
#      with its autotools configure), pkg-config, python3 and pip, libclang (bindgen for nvtx
#      and rsmpi), OpenMPI (libopenmpi-dev, openmpi-bin: the `mpi` feature and tests/mpi.rs);
#   2. the nightly pinned in rust-toolchain.toml with rust-src (for -Zbuild-std=core: the PTX
#      kernels), llvm-tools, clippy and rustfmt;
#   3. Python tools, with `pip install --target` into $DESI_PY_TOOLS
#      (default ${XDG_CACHE_HOME:-~/.cache}/desi-extract/py): nvidia-cuda-nvcc for `ptxas`
#      (offline check of the PTX for sm_90) and astropy (tests read our FITS files back).
#
# Prints `export DESI_PTXAS=...` and `export PYTHONPATH=...` lines at the end; scripts/test.sh
# finds both by itself.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
toolchain=$(sed -n 's/^ *channel *= *"\([^"]*\)".*/\1/p' "$repo/rust-toolchain.toml")
py_tools=${DESI_PY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/desi-extract/py}
# CUDA 13.x ptxas: supports sm_80 .. sm_120, PTX ISA up to 9.x.
nvcc_req='nvidia-cuda-nvcc==13.5.37'
astropy_req='astropy>=6.1,<8'

say() { printf 'setup.sh: %s\n' "$*" >&2; }

# --- 1. system packages ------------------------------------------------------------------------
missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ! python3 -m pip --version >/dev/null 2>&1; then missing+=(python3-pip); fi
# libclang: bindgen of the nvtx crate (NVTX ranges).
if ! compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null && ! compgen -G "/usr/lib/x86_64-linux-gnu/libclang*.so*" >/dev/null; then
    missing+=(libclang-dev)
fi
# OpenMPI: the `mpi` cargo feature (default) links it (rsmpi probes `mpicc`); the multi-rank
# tests start `mpirun`.
command -v mpicc >/dev/null 2>&1 || missing+=(libopenmpi-dev)
command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
if ((${#missing[@]})); then
    say "installing system packages: ${missing[*]}"
    sudo=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { say "need root (or sudo) to apt-get install ${missing[*]}"; exit 1; }
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || { say "no apt-get: install ${missing[*]} by hand"; exit 1; }
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- 2. Rust ------------------------------------------------------------------------------------
command -v rustup >/dev/null 2>&1 || { say "rustup not found: install it from https://rustup.rs"; exit 1; }
components=(rust-src llvm-tools clippy rustfmt)
installed=$(rustup component list --toolchain "$toolchain" --installed 2>/dev/null || true)
need_rust=0
for component in "${components[@]}"; do
    grep -q "^$component" <<<"$installed" || need_rust=1
done
if ((need_rust)); then
    say "installing Rust $toolchain with ${components[*]}"
    args=()
    for component in "${components[@]}"; do args+=(-c "$component"); done
    rustup toolchain install "$toolchain" --profile minimal "${args[@]}"
fi

# --- 3. Python tools (ptxas, astropy) --------------------------------------------------------------
find_ptxas() { compgen -G "$py_tools/nvidia/cu*/bin/ptxas" | sort | tail -n 1; }
if [[ -z $(find_ptxas) ]] || ! PYTHONPATH=$py_tools python3 -c 'import astropy' >/dev/null 2>&1; then
    say "pip installing $nvcc_req '$astropy_req' into $py_tools"
    mkdir -p "$py_tools"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --root-user-action=ignore --upgrade --target "$py_tools" "$nvcc_req" "$astropy_req"
fi
ptxas=$(find_ptxas)
[[ -n $ptxas && -x $ptxas ]] || { say "ptxas not found under $py_tools after pip install"; exit 1; }
"$ptxas" --version | grep -q 'release' || { say "$ptxas does not run"; exit 1; }

say "ready: Rust $toolchain, $("$ptxas" --version | sed -n 's/.*\(release [0-9.]*\).*/\1/p') ptxas"
echo "export DESI_PTXAS=$ptxas"
echo "export PYTHONPATH=$py_tools\${PYTHONPATH:+:\$PYTHONPATH}"
