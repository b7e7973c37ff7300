#!/usr/bin/env bash
# Installs what building and testing desi-extract needs. Idempotent: when everything is present
# it only checks (about a second) and changes nothing.
#
#   1. system packages (Debian/Ubuntu apt), each checked by the file or command the build or the
#      tests really use: a C toolchain and make (fitsio-src builds cfitsio with its autotools
#      configure), python3 and pip, libclang as clang-sys loads it (bindgen for nvtx and rsmpi),
#      OpenMPI (libopenmpi-dev, openmpi-bin: the `mpi` feature and tests/mpi.rs);
#   2. the nightly pinned in rust-toolchain.toml with rust-src (for -Zbuild-std=core: the PTX
#      kernels), llvm-tools, clippy and rustfmt;
#   3. Python tools, with `pip install --target` into $DESI_PY_TOOLS
#      (default ${XDG_CACHE_HOME:-~/.cache}/desi-extract/py): nvidia-cuda-nvcc for `ptxas`
#      (offline check of the PTX for sm_90) and astropy (tests read our FITS files back), then
#      desispec without its dependencies (tests/heliocentric.rs calls its barycentric
#      correction, which needs only astropy and numpy; a few seconds, 20 MB), and what
#      desispec.io.read_frame and desispec.specscore import (desiutil, fitsio, scipy, desitarget,
#      without their dependencies: tests read our frames back with desispec, ~220 MB); for the
#      Python package (pyproject.toml, tests/python): maturin (its build backend, `pip install .`)
#      and mpi4py (its multi-rank test; the binary wheel runs on the system's OpenMPI).
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
desispec_req='desispec==0.70.0'
# What desispec.io.read_frame, Frame.vet() and desispec.specscore import (desispec's own
# dependency list minus what they never load): installed without dependencies, pinned.
readframe_reqs=(desiutil==4.0.1 fitsio==1.4.2 scipy==1.17.1 desitarget==4.4.0)
# The Python package's build backend and the mpi4py of its multi-rank test.
python_pkg_reqs=(maturin==1.16.0 mpi4py==4.1.2)

say() { printf 'setup.sh: %s\n' "$*" >&2; }

# pip-installs PACKAGES (no dependencies) into $py_tools through a scratch target, so that each
# top-level entry replaces its old copy and the scripts of one package do not replace another's
# bin/; the scripts named in $keep_bins (space-separated) are moved to $py_tools/bin.
pip_into_tools() {
    local scratch entry bin
    scratch=$(mktemp -d)
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --root-user-action=ignore --no-deps --target "$scratch" "$@"
    for bin in ${keep_bins:-}; do
        mkdir -p "$py_tools"/bin
        mv -f "$scratch/bin/$bin" "$py_tools/bin/$bin"
    done
    rm -rf "$scratch"/bin
    for entry in "$scratch"/*; do
        rm -rf "${py_tools:?}/$(basename "$entry")"
        mv "$entry" "$py_tools"/
    done
    rm -rf "$scratch"
}

# --- 1. system packages ------------------------------------------------------------------------
missing=()
# The cc crate and cfitsio's configure (fitsio-src, with its bundled zlib) run `$CC` (default cc)
# and `make`.
"${CC:-cc}" --version >/dev/null 2>&1 || missing+=(build-essential)
command -v make >/dev/null 2>&1 || missing+=(make)
# Step 3 below runs `python3 -m pip`; the tests run `python3` with astropy.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ! python3 -m pip --version >/dev/null 2>&1; then missing+=(python3-pip); fi
# The Python package (PyO3): the interpreter's headers (Debian's python3-dev), where the python3
# in use looks for them.
py_include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
[[ -n $py_include && -f $py_include/Python.h ]] || missing+=(python3-dev)
# libclang: bindgen (rsmpi's mpi-sys, nvtx-sys) loads it at build time through clang-sys, which
# looks only for `libclang.so`, `libclang-*.so`, `libclang.so.*` or `libclang-*.so.*` (never
# `libclang-cpp*`, the C++ library) in $LIBCLANG_PATH if set, else in `llvm-config --prefix`/lib*,
# $LD_LIBRARY_PATH, $LIBRARY_PATH and the usual library directories. Parsing mpi.h also needs
# clang's own headers (stddef.h in the resource directory beside the library: libclang-common).
# libclang-dev brings both.
libclang_candidates() {
    local dirs=() d
    if [[ -n ${LIBCLANG_PATH:-} ]]; then
        if [[ -f $LIBCLANG_PATH ]]; then printf '%s\n' "$LIBCLANG_PATH"; return; fi
        dirs=("$LIBCLANG_PATH")
    else
        if command -v "${LLVM_CONFIG_PATH:-llvm-config}" >/dev/null 2>&1; then
            d=$("${LLVM_CONFIG_PATH:-llvm-config}" --prefix 2>/dev/null || true)
            [[ -n $d ]] && dirs+=("$d/bin" "$d/lib" "$d/lib64")
        fi
        local IFS=:
        for d in ${LD_LIBRARY_PATH:-} ${LIBRARY_PATH:-}; do [[ -n $d ]] && dirs+=("$d"); done
        unset IFS
        for d in /usr/local/llvm*/lib* /usr/local/lib*/*/* /usr/local/lib*/* /usr/local/lib* \
            /usr/lib*/*/* /usr/lib*/* /usr/lib*; do
            [[ -d $d ]] && dirs+=("$d")
        done
    fi
    for d in "${dirs[@]}"; do
        for f in "$d"/libclang.so "$d"/libclang-*.so "$d"/libclang.so.* "$d"/libclang-*.so.*; do
            [[ -f $f && $(basename "$f") != *-cpp.* ]] && printf '%s\n' "$f"
        done
    done
}
libclang_usable() {
    local lib dir
    while IFS= read -r lib; do
        # clang's resource directory, <libdir>/clang/<version>/include, beside the library as
        # found or as resolved, or in Debian's /usr/lib/llvm-N/lib (libclang-common-N-dev).
        for dir in "$(dirname "$lib")" "$(dirname "$(readlink -f "$lib")")" /usr/lib/llvm-*/lib; do
            compgen -G "$dir/clang/*/include/stddef.h" >/dev/null && return 0
        done
    done < <(libclang_candidates)
    return 1
}
libclang_usable || missing+=(libclang-dev)
# OpenMPI: the `mpi` cargo feature (default) links it (rsmpi probes `mpicc`); the multi-rank
# tests start `mpirun`.
# rsmpi's build-probe-mpi runs `${MPICC:-mpicc} -show` for the include and link flags.
"${MPICC:-mpicc}" -show >/dev/null 2>&1 || missing+=(libopenmpi-dev)
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
    # The same checks again: a package that installs but does not provide what the build loads
    # must fail here, not as a bindgen panic in the middle of the build.
    libclang_usable || { say "no libclang that clang-sys would load (with clang's stddef.h) after installing libclang-dev; set LIBCLANG_PATH"; exit 1; }
    "${MPICC:-mpicc}" -show >/dev/null 2>&1 || { say "'${MPICC:-mpicc} -show' fails after installing libopenmpi-dev"; exit 1; }
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

# --- 3. Python tools (ptxas, astropy, desispec) ----------------------------------------------------
find_ptxas() { compgen -G "$py_tools/nvidia/cu*/bin/ptxas" | sort | tail -n 1; }
if [[ -z $(find_ptxas) ]] || ! PYTHONPATH=$py_tools python3 -c 'import astropy' >/dev/null 2>&1; then
    say "pip installing $nvcc_req '$astropy_req' into $py_tools"
    mkdir -p "$py_tools"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --root-user-action=ignore --upgrade --target "$py_tools" "$nvcc_req" "$astropy_req"
fi
# desispec's full dependency list (numba, healpy, fitsio, desitarget, ...) is not needed for
# desispec.heliocentric, and some of it builds C code: install desispec alone, through a
# scratch target (pip_into_tools) so that its scripts do not replace the bin/ of the packages above.
# (The check is by file: importing desispec.heliocentric loads astropy.coordinates, ~1.5 s.)
desispec_check="import desispec, desispec.heliocentric; assert desispec.__version__ == '${desispec_req#*==}'"
if [[ ! -f $py_tools/desispec/heliocentric.py || ! -d $py_tools/desispec-${desispec_req#*==}.dist-info ]]; then
    say "pip installing $desispec_req (no dependencies) into $py_tools"
    rm -rf "$py_tools"/desispec-*.dist-info
    pip_into_tools "$desispec_req"
    PYTHONPATH=$py_tools python3 -c "$desispec_check" || { say "desispec.heliocentric does not import after installing $desispec_req"; exit 1; }
fi
# desispec.io (read_frame), desispec.frame and desispec.specscore: their imports, each without
# its own dependencies (desitarget's healpy/numba/... are never loaded by read_frame), through a
# scratch target as above.
readframe_check="import desispec.io, desispec.frame, desispec.specscore; from desispec.io import read_frame"
if ! PYTHONPATH=$py_tools python3 -c "$readframe_check" >/dev/null 2>&1; then
    say "pip installing ${readframe_reqs[*]} (no dependencies) into $py_tools"
    pip_into_tools "${readframe_reqs[@]}"
    PYTHONPATH=$py_tools python3 -c "$readframe_check" || { say "desispec.io does not import after installing ${readframe_reqs[*]}"; exit 1; }
fi
# The Python package: maturin (binary in $py_tools/bin, which scripts/test.sh puts on PATH) and
# mpi4py, through a scratch target as above.
if [[ ! -x $py_tools/bin/maturin ]] || ! PYTHONPATH=$py_tools python3 -c 'import maturin, mpi4py' >/dev/null 2>&1; then
    say "pip installing ${python_pkg_reqs[*]} into $py_tools"
    keep_bins=maturin pip_into_tools "${python_pkg_reqs[@]}"
    "$py_tools"/bin/maturin --version >/dev/null || { say "maturin does not run after pip install"; exit 1; }
fi
ptxas=$(find_ptxas)
[[ -n $ptxas && -x $ptxas ]] || { say "ptxas not found under $py_tools after pip install"; exit 1; }
"$ptxas" --version | grep -q 'release' || { say "$ptxas does not run"; exit 1; }

say "ready: Rust $toolchain, $("$ptxas" --version | sed -n 's/.*\(release [0-9.]*\).*/\1/p') ptxas"
echo "export DESI_PTXAS=$ptxas"
echo "export PYTHONPATH=$py_tools\${PYTHONPATH:+:\$PYTHONPATH}"
