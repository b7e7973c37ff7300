#!/usr/bin/env bash
# The knobs of issue #15's last stretch on one warm GPU, in one call of the device tool:
# `selftest --gpu` (full r frame, median of 7) with 4 KiB pages and with huge pages, then the
# 30-frame exposure alternated over ROUNDS rounds (default 2) in these variants:
#   default   ranked frame priorities, 4 KiB pages
#   huge      DESI_HUGE_PAGES=1 (large blocks in transparent huge pages, host/huge_pages.rs)
#   equal     DESI_GPU_FRAME_PRIORITY=equal (the frames in flight at one stream priority)
#   warm      DESI_GPU_POOL_RESERVE_GIB=14 DESI_GPU_PREWARM_PIXELS=16982592 (the device pool
#             grown and the upload buffers allocated before the first frame)
# Each exposure writes its summary JSON and its frames' traces (--trace-dir); OUT/log.txt grows
# line by line and OUT/all.tgz is re-packed after each run, so a run cut at the time limit
# still returns what it did.
#
#   bash profiles/exposure-knobs.sh [BIN] [OUT] [ROUNDS]
set -u
B=$(realpath "${1:-target/release/desi-extract}"); O=${2:-/tmp/knobs}; N=${3:-2}
R=$(cd "$(dirname "$0")/.." && pwd)
P=$R/data/psf-r0-00051060.fits; L=$O/log.txt; W=/tmp/desi-exposure
mkdir -p "$O"
pack() { tar -czf "$O/all.tgz" -C "$O" --exclude all.tgz . 2>/dev/null; }
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader >> "$L"
cat /sys/kernel/mm/transparent_hugepage/enabled >> "$L" 2>/dev/null
st() { tag=$1; shift
    timeout 90 env "$@" "$B" selftest --gpu -p "$P" -n 500 --repeat 7 --trace "$O/tr_$tag.json" > "$O/st_$tag.txt" 2>&1
    echo "$tag rc=$? $(grep -h 'GPU median' "$O/st_$tag.txt") $(grep -c 'selftest: PASS' "$O/st_$tag.txt")" >> "$L"; pack; }
st default; st huge DESI_HUGE_PAGES=1
E=$W/e30
. "$R/profiles/exposure-frames.sh"
make_exposure_frames "$B" "$P" "$W" || exit 2
ex() { tag=$1; shift
    env DESI_LOGLEVEL=DEBUG "$@" /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KB" -o "$O/time.txt" \
        timeout 100 "$B" exposure --indir "$E" --outdir "$E/o-$tag" --expid 8 --gpu --overwrite \
        --summary-json "$O/ex_$tag.json" --trace-dir "$O/trace_$tag" > "$O/ex_$tag.txt" 2>&1
    echo "ex $tag rc=$? $(cat "$O/time.txt") $(grep -E 'GPU busy' "$O/ex_$tag.txt" | cut -c1-160)" >> "$L"
    rm -rf "$E/o-$tag"; pack; }
ex first
for n in $(seq "$N"); do
    ex default_$n; ex huge_$n DESI_HUGE_PAGES=1; ex equal_$n DESI_GPU_FRAME_PRIORITY=equal
    ex warm_$n DESI_GPU_POOL_RESERVE_GIB=14 DESI_GPU_PREWARM_PIXELS=16982592
done
grep -h "reserved in\|upload buffers" "$O"/ex_warm_*.txt >> "$L"
cat "$L"; pack
