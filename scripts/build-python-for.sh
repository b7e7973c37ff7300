#!/usr/bin/env bash
# Builds the Python package `desi_extract` for another CPython version than the one here
# (default 3.12, e.g. a GPU machine's interpreter), without that interpreter and without
# maturin: cargo builds the extension crate (python/Cargo.toml) with PyO3 configured by a
# PYO3_CONFIG_FILE, and the package folder is assembled by hand:
#
#     bash scripts/build-python-for.sh [VERSION]        # -> .carry/pyVV/desi_extract/
#
# Use it on the other machine with `PYTHONPATH=.carry/pyVV:$PYTHONPATH` (numpy installed
# there). The extension links no Python library (an extension module resolves the
# interpreter's symbols when it is imported) and no other shared library than glibc's; it is
# stripped (~4 MB). The extension is built in the shared target directory (only the PyO3
# crates and the extension are rebuilt for another version; set CARGO_TARGET_DIR to keep them
# apart).
set -euo pipefail

version=${1:-3.12}
if [[ ! $version =~ ^3\.[0-9]+$ ]]; then
    echo "usage: $0 [3.N]  (a CPython 3 version, e.g. 3.12)" >&2
    exit 1
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
tag=${version/./}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
out=$repo/.carry/py$tag
arch=$(uname -m)
suffix=cpython-$tag-$arch-linux-gnu.so

config=$target_dir/pyo3-config-$tag.txt
mkdir -p "$target_dir"
# PyO3 0.25's config file (pyo3-build-config `InterpreterConfig::from_reader`): the target
# interpreter, a shared libpython build (the default of Linux distributions and python.org),
# not the stable ABI, and no link lines (an extension module does not link libpython).
cat > "$config" <<CONFIG
implementation=CPython
version=$version
shared=true
abi3=false
pointer_width=64
suppress_build_script_link_lines=true
CONFIG

PYO3_CONFIG_FILE=$config cargo build --release --manifest-path "$repo/python/Cargo.toml" \
    --features pyo3/extension-module --target-dir "$target_dir"

rm -rf "$out"
mkdir -p "$out"
cp -r "$repo/python/desi_extract" "$out/"
find "$out" \( -name __pycache__ -o -name '*.so' \) -prune -exec rm -rf {} +
cp "$target_dir/release/lib_native.so" "$out/desi_extract/_native.$suffix"
strip "$out/desi_extract/_native.$suffix"
if ! nm -D --defined-only "$out/desi_extract/_native.$suffix" | grep -qw PyInit__native; then
    echo "error: $out/desi_extract/_native.$suffix does not export PyInit__native" >&2
    exit 2
fi
echo "built $out/desi_extract (CPython $version): PYTHONPATH=$out"
