#!/usr/bin/env bash
# Records an Nsight Systems timeline of one simulated full r frame extracted on the GPU, plus our
# own Chrome/Perfetto trace of the same stages (viewable anywhere, no Nsight needed).
#
#   bash profiles/nsys-frame.sh [BIN] [OUTDIR]
#
# BIN defaults to target/release/desi-extract. On the H100 lending machine nsys is not on PATH: it
# ships inside the Nsight Compute installation (found below) and records a .qdstrm there that it
# cannot turn into a report; copy the .qdstrm to a machine with Nsight Systems (QdstrmImporter) or
# use the trace JSON. NVTX ranges: spots + upload, copy to device, plan, allocate, assemble,
# cholesky, covariance, eigh, finalize, copy to host, unpack, stitch, model image, finish frame
# (host) and read/write (CLI).
set -euo pipefail
bin=${1:-target/release/desi-extract}
out=${2:-profile-output}
mkdir -p "$out"
psf=$(dirname "$0")/../data/psf-r0-00051060.fits
nsys=$(command -v nsys || compgen -G "/opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys" | head -n 1 \
    || compgen -G "/usr/local/cuda*/bin/nsys" | head -n 1 || true)
[[ -f $out/preproc.fits ]] || "$bin" simulate -p "$psf" -o "$out/preproc.fits" -w 5760,7620,0.8 --seed 1
run=("$bin" extract --gpu -i "$out/preproc.fits" -p "$psf" -o "$out/frame.fits" -w 5760,7620,0.8 --trace "$out/trace.json")
"${run[@]}"   # warm-up (JIT of the PTX, first allocations)
if [[ -n $nsys ]]; then
    "$nsys" profile --trace=cuda,nvtx,osrt --force-overwrite=true -o "$out/frame" "${run[@]}" || \
        echo "nsys-frame.sh: nsys failed; the trace JSON is still in $out/trace.json" >&2
else
    echo "nsys-frame.sh: no nsys found; wrote only $out/trace.json" >&2
    "${run[@]}"
fi
echo "nsys-frame.sh: open $out/trace.json in https://ui.perfetto.dev or chrome://tracing"
