#!/usr/bin/env bash
# The GPU cost of --reject-outliers (issue 16; target: at most +30% frame time) and the
# GPU-vs-CPU agreement with it on: `selftest --gpu` on a full simulated r frame (500 fibers,
# 5760-7620 A), without and with the rejection, on a clean frame and on one with cosmic rays
# (2.5 per cm^2 per minute for 1000 s, none masked: the worst case, every cosmic escaped
# preproc). Each selftest prints the median GPU frame time of --repeat runs, the stage table
# and, with the rejection, the rejected pixels of each backend (they must be the same pixels:
# selftest fails otherwise, as it does for any GPU-vs-CPU disagreement).
#
#   bash profiles/reject-gpu.sh [BIN] [OUTDIR]
#
# Read: "GPU median of 5 runs" of each of the four runs; the cost is (with / without) - 1,
# clean frame (the outlier test alone: the reject_scan kernel in every batch and its per-row
# masks copied back; the host has nothing else to do) and cosmic frame (plus the re-solves as
# GPU batches, the per-bin counts on the device, and the host's grow/cap/mask bookkeeping).
# With the rejection, selftest also prints "rejection stages (last GPU run)": the outlier
# test's GPU time, the re-solves' GPU and wall time, the bin counts and the host's whole
# rejection span (waits included), and fails unless the GPU ran the test (and the re-solves,
# where the CPU re-solved) and both backends rejected the same pixels patch by patch.
set -euo pipefail
bin=${1:-target/release/desi-extract}
out=${2:-profile-output/reject}
mkdir -p "$out"
common=(selftest --gpu -n 500 -w 5760,7620,0.8 --repeat 5)
for frame in clean cosmics; do
    extra=()
    [[ $frame == cosmics ]] && extra=(--cosmics)
    for mode in off on; do
        flags=()
        [[ $mode == on ]] && flags=(--reject-outliers)
        log="$out/selftest-$frame-reject-$mode.txt"
        echo "== $frame frame, rejection $mode" | tee "$log"
        "$bin" "${common[@]}" "${extra[@]}" "${flags[@]}" 2>&1 | tee -a "$log" || true
    done
done
echo
echo "reject-gpu.sh: GPU frame medians (s):"
for f in "$out"/selftest-*.txt; do
    printf '  %-40s %s\n' "$(basename "$f" .txt)" \
        "$(grep -o 'GPU median of [0-9]* runs [0-9.]* s' "$f" | awk '{print $(NF-1)}')"
done
grep -h "rejected pixels only\|outlier rejection\|rejection stages\|rejection (pixels\|selftest: PASS\|selftest: FAIL" "$out"/selftest-*-on.txt
