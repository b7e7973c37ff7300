#!/usr/bin/env bash
# The quick-start example: installs what is missing, builds, simulates one bundle of 25 fibers
# over 6000-6300 A from the bundled real r0 PSF, extracts it, prints the summary and writes a
# QA picture (extracted spectra against the truth, and the pull histogram).
#
#   bash scripts/demo.sh [OUTDIR]      (default OUTDIR: demo-output)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/demo-output}
cd "$repo"
bash scripts/setup.sh >/dev/null
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/desi-extract
psf=$repo/data/psf-r0-00051060.fits
mkdir -p "$out"
set -x
"$bin" simulate -p "$psf" -o "$out/preproc-r0-00000001.fits" --truth "$out/truth-r0-00000001.fits" \
    -w 6000,6300,0.8 -s 0 -n 25 --seed 42 --expid 1
"$bin" extract -i "$out/preproc-r0-00000001.fits" -p "$psf" -o "$out/frame-r0-00000001.fits" \
    -w 6000,6300,0.8 -s 0 -n 25
"$bin" qa --frame "$out/frame-r0-00000001.fits" --truth "$out/truth-r0-00000001.fits" -o "$out/qa-r0-00000001.png"
"$bin" info "$out/frame-r0-00000001.fits"
