#!/usr/bin/env bash
# Issue 17, item 5: 3 exposures (90 full frames) in one `exposures --gpu` job against three
# separate `exposure --gpu` runs, on one GPU. Three full frames (b0, r0, z0; 500 fibers, desi_proc's
# grids) are simulated as profiles/exposure-scaling.sh makes them (r0 from the bundled real PSF,
# b0 and z0 from labelled STAND-IN PSFs) and linked as the 30 cameras of exposures 8, 9 and 10
# (links, not copies: 0.4 GB of inputs in all). Both ways read the same directories, so the
# frames must be identical: only the CHECKSUM/DATASUM cards (whose comments hold a timestamp)
# may differ. Prints the wall time and frames/s of each way, the GPU busy fraction and the
# per-frame read/extract/write medians (from --summary-json), and the differing cards.
#
#   bash profiles/night-gpu.sh [BIN] [WORKDIR]      (about 2-3 minutes on an H100, 15 GB of disk)
#
# Optional: FRAMES_IN_FLIGHT=N (default: the binary's, 3); MULTI=1 on a machine with several GPUs
# also runs the job over all of them (mpirun, a coordinator and one group of one rank per GPU)
# and compares its frames. A CPU dry run of the script itself:
#   GPU= NSPEC=25 EXTRA="--wave-span 20" bash profiles/night-gpu.sh
set -u
GPU=${GPU---gpu}; NSPEC=${NSPEC:-500}; EXTRA=${EXTRA:-}
B=$(realpath "${1:-target/release/desi-extract}"); W=${2:-/tmp/desi-night}; R=$(cd "$(dirname "$0")/.." && pwd)
D=$W/frames; mkdir -p "$D"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
ALL_GPUS=${CUDA_VISIBLE_DEVICES:-}; export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
FIF=(-n "$NSPEC" $GPU $EXTRA)
[ -n "${FRAMES_IN_FLIGHT:-}" ] && FIF+=(--frames-in-flight "$FRAMES_IN_FLIGHT")
P=$R/data/psf-r0-00051060.fits; cd "$D" || exit 1; cp "$P" psf-r0-00000007.fits
"$B" standin-psf -p "$P" -o psf-b0-00000007.fits --camera b >/dev/null
"$B" standin-psf -p "$P" -o psf-z0-00000007.fits --camera z >/dev/null
for c in b0:3600,5800 r0:5760,7620 z0:7520,9824; do cam=${c%%:*}; w=${c#*:}
    [ -f preproc-$cam-00000007.fits ] || "$B" simulate -p psf-$cam-00000007.fits -o preproc-$cam-00000007.fits \
        -w $w,0.8 -n "$NSPEC" --camera $cam --expid 7 --seed 3 >/dev/null 2>&1 &
done; wait
EXPIDS="8 9 10"
: > "$W/list.txt"
for e in $EXPIDS; do
    id=$(printf %08d "$e"); I=$W/in/$id; mkdir -p "$I"
    for s in 0 1 2 3 4 5 6 7 8 9; do for c in b r z; do
        ln -sf "$D/preproc-${c}0-00000007.fits" "$I/preproc-$c$s-$id.fits"
        ln -sf "$D/psf-${c}0-00000007.fits" "$I/psf-$c$s-$id.fits"
    done; done
    echo "$e $I $W/job/$id" >> "$W/list.txt"
done
rm -rf "$W/sep" "$W/job" "$W/job-mg" "$W"/*.json
now() { date +%s%N; }
# Warm-up (driver start, page cache of the inputs): one exposure of 25 fibers, not timed.
"$B" exposure --indir "$W/in/00000008" --outdir "$W/warm" --expid 8 $GPU -n 25 $EXTRA --overwrite >/dev/null 2>&1
# Three separate runs, one process start each.
s=$(now)
for e in $EXPIDS; do id=$(printf %08d "$e")
    "$B" exposure --indir "$W/in/$id" --outdir "$W/sep/$id" --expid "$e" "${FIF[@]}" \
        --summary-json "$W/sep-$id.json" > "$W/log-sep-$id.txt" 2>&1 || echo "separate run $e: exit $?"
done
sep_ms=$(( ($(now) - s) / 1000000 ))
# One job over the three exposures.
s=$(now)
"$B" exposures --list "$W/list.txt" "${FIF[@]}" --summary-json "$W/job.json" > "$W/log-job.txt" 2>&1 \
    || echo "job: exit $?"
job_ms=$(( ($(now) - s) / 1000000 ))
python3 - "$W" "$sep_ms" "$job_ms" $EXPIDS <<'EOF'
import json, statistics, sys
w, sep_ms, job_ms, expids = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def med(frames, key):
    v = [f["timing"][key] for f in frames if f.get("timing")]
    return statistics.median(v) if v else float("nan")
sep = [json.load(open(f"{w}/sep-{int(e):08d}.json")) for e in expids]
frames = [f for r in sep for f in r["frames"]]
n = sum(r["written"] for r in sep)
busy = sum(r["device_busy_s"] for r in sep) / max(1e-9, sum(r["wall_s"] for r in sep))
print(f"separate: {n} frames in {sep_ms/1e3:.2f} s wall (3 process starts) = {1e3*n/sep_ms:.2f} frames/s; "
      f"inside the runs {sum(r['wall_s'] for r in sep):.2f} s; GPU busy {100*busy:.0f}%; per-frame median "
      f"read {med(frames,'read_s'):.3f} s, extract {med(frames,'extract_s'):.3f} s, write {med(frames,'write_s'):.3f} s")
job = json.load(open(f"{w}/job.json"))
jf = [f for e in job["exposures"] for f in e["frames"]]
gb = job["gpu_busy_fraction"] or 0.0
print(f"one job : {job['written']} frames in {job_ms/1e3:.2f} s wall (1 process start) = {1e3*job['written']/job_ms:.2f} frames/s; "
      f"inside the job {job['wall_s']:.2f} s; GPU busy {100*gb:.0f}%; per-frame median read {job['median_read_s']:.3f} s, "
      f"extract {job['median_extract_s']:.3f} s, write {job['median_write_s']:.3f} s; failed {job['failed']}")
print(f"speed-up of the job: {sep_ms/job_ms:.3f}x")
EOF
# Cards (80-byte pieces) that differ between the two ways, other than CHECKSUM/DATASUM: must be 0.
bad=0; nf=0
for e in $EXPIDS; do id=$(printf %08d "$e"); for f in "$W/sep/$id"/frame-*.fits; do
    nf=$((nf + 1)); other="$W/job/$id/$(basename "$f")"
    [ -f "$other" ] || { echo "missing $other"; bad=$((bad + 1)); continue; }
    bad=$((bad + $(cmp -l "$f" "$other" | awk '{print int(($1-1)/80)}' | uniq | while read -r card; do
        dd if="$f" bs=80 skip="$card" count=1 2>/dev/null | grep -qE '^(CHECKSUM|DATASUM) *=' || echo x; done | wc -l)))
done; done
echo "pieces differing between the job and the separate runs over $nf frames (besides checksum cards): $bad"
grep -h "job:" "$W/log-job.txt" | tail -1
if [ "${MULTI:-0}" = 1 ]; then
    if [ -n "$ALL_GPUS" ]; then export CUDA_VISIBLE_DEVICES=$ALL_GPUS; else unset CUDA_VISIBLE_DEVICES; fi
    ngpu=$(nvidia-smi -L | wc -l)
    sed "s#$W/job/#$W/job-mg/#" "$W/list.txt" > "$W/list-mg.txt"
    s=$(now)
    mpirun --oversubscribe --bind-to none -n $((ngpu + 1)) "$B" exposures --list "$W/list-mg.txt" --group-size 1 \
        "${FIF[@]}" --summary-json "$W/job-mg.json" > "$W/log-job-mg.txt" 2>&1 || echo "multi-GPU job: exit $?"
    mg_ms=$(( ($(now) - s) / 1000000 ))
    echo "multi-GPU job over $ngpu GPU(s): 90 frames in $((mg_ms / 1000)).$(( (mg_ms % 1000) / 10 )) s = $(awk "BEGIN{printf \"%.2f\", 90000/$mg_ms}") frames/s; $(grep -h 'job:' "$W/log-job-mg.txt" | tail -1 | sed 's/.*job: //')"
    bad=0; for f in "$W"/job/*/frame-*.fits; do other=${f/\/job\//\/job-mg\/}
        [ -f "$other" ] || { bad=$((bad + 1)); continue; }
        bad=$((bad + $(cmp -l "$f" "$other" | awk '{print int(($1-1)/80)}' | uniq | while read -r card; do
            dd if="$f" bs=80 skip="$card" count=1 2>/dev/null | grep -qE '^(CHECKSUM|DATASUM) *=' || echo x; done | wc -l)))
    done
    echo "pieces differing between the multi-GPU job and the one-GPU job (besides checksum cards): $bad"
fi
