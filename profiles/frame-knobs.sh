#!/usr/bin/env bash
# The full r frame's last milliseconds (issue #15: 0.10 s on one H100) on one warm GPU, in one
# call of the device tool: `selftest --gpu -n 500 --repeat 7` (median of 7 after a warm-up,
# stage table, PASS) of NEW alternated with BASE, of each VARIANT build (e.g. other register
# limits: DESI_REGISTER_LIMITS=spots_team=64 cargo build --release, build.rs), and of NEW under
# the run-time knobs below; then Nsight Compute's stall sections of one `spots_team16` launch.
#
#   bash profiles/frame-knobs.sh BASE_BIN NEW_BIN [OUT] [VARIANT_BIN ...]
#
# Knobs (environment of NEW): DESI_GPU_TAIL_PERCENT=6|9 (the tail batch, default 12),
# DESI_SPOT_LANES=64|256 (threads per block of the spots kernel, default 128),
# DESI_SPOT_TEAM_LANES=32|8 (lanes per spot: spots_team/spots_team8, 1 or 4 spots per warp
# instead of the default's 2, the same stamps bit for bit; 8 also with 256 threads per block).
# OUT (default $OUT, else /tmp/frame-knobs) gets log.txt (a line per run: median, PASS count,
# the start and end stages), all.tgz (every selftest's output and trace, re-packed after each run, so a run cut
# at the time limit still returns what it did) and spots.txt (ncu's details page, through
# profiles/ncu-kernel.sh).
set -u
[ $# -ge 2 ] || { echo "usage: $0 BASE_BIN NEW_BIN [OUT] [VARIANT_BIN ...]" >&2; exit 1; }
BASE=$(realpath "$1"); NEW=$(realpath "$2"); OUT=${3:-${OUT:-/tmp/frame-knobs}}
shift $(( $# >= 3 ? 3 : 2 ))
R=$(cd "$(dirname "$0")/.." && pwd); P=$R/data/psf-r0-00051060.fits
W=$(mktemp -d); mkdir -p "$OUT"; L=$OUT/log.txt
pack() { tar -czf "$OUT/all.tgz" -C "$W" . 2>/dev/null; }
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader >> "$L"
st() { tag=$1; bin=$2; shift 2
    timeout 90 env "$@" "$bin" selftest --gpu -p "$P" -n 500 --repeat 7 --trace "$W/tr_$tag.json" > "$W/st_$tag.txt" 2>&1
    echo "$tag rc=$? $(grep -h 'GPU median' "$W/st_$tag.txt") PASS=$(grep -c 'selftest: PASS' "$W/st_$tag.txt") $(grep -hE '^  (frame arrays|spots kernel|finish bundles|finish frame)' "$W/st_$tag.txt" | tr -s ' ' | tr '\n' ' ')" >> "$L"
    pack; }
st warm "$NEW"
st new_1 "$NEW"; st base_1 "$BASE"
k=0
for v in "$@"; do k=$((k + 1)); st "variant${k}_$(basename "$v")" "$(realpath "$v")"; done
st tail6 "$NEW" DESI_GPU_TAIL_PERCENT=6; st tail9 "$NEW" DESI_GPU_TAIL_PERCENT=9
st lanes64 "$NEW" DESI_SPOT_LANES=64; st lanes256 "$NEW" DESI_SPOT_LANES=256
st team32 "$NEW" DESI_SPOT_TEAM_LANES=32; st team8 "$NEW" DESI_SPOT_TEAM_LANES=8
st team8_w8 "$NEW" DESI_SPOT_TEAM_LANES=8 DESI_SPOT_LANES=256
st new_2 "$NEW"; st base_2 "$BASE"; st new_3 "$NEW"; st base_3 "$BASE"
# Why spots_team16 takes ~10 ms on an H100 (its FP64 work is ~1 ms at peak): the stall reasons
# per instruction of one launch on a full r frame.
NCU_SECTIONS="WarpStateStats SchedulerStats InstructionStats ComputeWorkloadAnalysis SourceCounters" \
    NCU_DETAILS=1 timeout 300 bash "$R/profiles/ncu-kernel.sh" spots_team16 "$NEW" "$W/ncu" \
    > "$OUT/spots.txt" 2>&1
echo "ncu rc=$?" >> "$L"
mv "$W/ncu/spots_team16.ncu-rep" "$OUT/" 2>/dev/null; rm -rf "$W/ncu"; pack
cat "$L"
