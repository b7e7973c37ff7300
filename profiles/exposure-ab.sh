#!/usr/bin/env bash
# A/B of the 30-frame exposure on one GPU (issue #15 item 2): the host side before and after
# the frames-in-flight/I-O rework, alternated on the same warm machine, medians reported.
#
#   bash profiles/exposure-ab.sh [BIN] [WORKDIR] [ROUNDS]
#
# Variants (each ROUNDS times, default 3, in turn):
#   old    DESI_EXPOSURE_LOOP=fifo DESI_FRAME_WRITER=cfitsio DESI_PREPROC_READ=serial
#          --frames-in-flight 3 (the behaviour of main at 34fbd31)
#   new3   the new loop, writer and reads with 3 frames in flight
#   new    the defaults (frames in flight from the GPU memory)
#   new8   --frames-in-flight 8
# The frames are made as profiles/exposure-gpu.sh makes them (run it first, or this script makes
# them); afterwards every variant's files are compared with old's, card by card (only the
# CHECKSUM/DATASUM cards, whose comments hold the second they were written, may differ).
set -u
B=$(realpath "${1:-target/release/desi-extract}"); W=${2:-/tmp/desi-exposure}; N=${3:-3}
R=$(cd "$(dirname "$0")/.." && pwd)
D=$W/frames; E=$W/e30
P=$R/data/psf-r0-00051060.fits
. "$R/profiles/exposure-frames.sh"
make_exposure_frames "$B" "$P" "$W" || exit 2
cd "$E" || exit 2
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}

run() { name=$1; shift
    env "$@" "$B" exposure --indir "$E" --outdir "$E/ab-$name" --expid 8 --gpu --overwrite \
        --summary-json "$E/ab-$name-$round.json" ${FLAGS[$name]} > "$E/ab-log-$name-$round.txt" 2>&1 \
        || echo "$name round $round failed (exit $?): $E/ab-log-$name-$round.txt"
}
declare -A FLAGS=([old]="--frames-in-flight 3" [new3]="--frames-in-flight 3" [new]="" [new8]="--frames-in-flight 8")
FLAGS[warmup]=""; round=0; run warmup DESI_X=1
for round in $(seq 1 "$N"); do
    run old DESI_EXPOSURE_LOOP=fifo DESI_FRAME_WRITER=cfitsio DESI_PREPROC_READ=serial
    run new3 DESI_X=1
    run new DESI_X=1
    run new8 DESI_X=1
done
python3 - "$E" "$N" <<'PY'
import json, statistics as st, sys
e, n = sys.argv[1], int(sys.argv[2])
print(f"{'variant':8} {'wall s':>7} {'busy':>5} {'inflight':>8} {'read':>6} {'extract':>7} {'write':>6}  (medians over {n} rounds; per-frame medians)")
for v in ["old", "new3", "new", "new8"]:
    runs = [json.load(open(f"{e}/ab-{v}-{r}.json")) for r in range(1, n + 1)]
    med = lambda key: st.median(f["timing"][key] for j in runs for f in j["frames"] if f.get("timing"))
    print(f"{v:8} {st.median(j['wall_s'] for j in runs):7.2f} {st.median(j['gpu_busy_fraction'] for j in runs):5.2f} "
          f"{runs[0]['frames_in_flight']:8} {med('read_s'):6.3f} {med('extract_s'):7.3f} {med('write_s'):6.3f}")
PY
for v in new3 new new8; do bad=0
    for f in "$E"/ab-old/frame-*.fits; do other="$E/ab-$v/$(basename "$f")"
        bad=$((bad + $(cmp -l "$f" "$other" | awk '{print int(($1-1)/80)}' | uniq | while read -r card; do
            dd if="$f" bs=80 skip="$card" count=1 2>/dev/null | grep -qE '^(CHECKSUM|DATASUM) *=' || echo x; done | wc -l)))
    done
    echo "$v: 80-byte pieces differing from old over 30 frames (besides checksum cards): $bad"; done
