#!/usr/bin/env bash
# Synthetic 30-frame exposure on the GPUs of one host, through MPI (no NCCL), as measured for
# issues 5 and 6: three full frames are simulated (r0 from the bundled real PSF; b0 and z0 from
# labelled STAND-IN PSFs mapped onto the b/z domains) and linked as spectrographs 0-9; then the
# exposure runs as one process on one GPU, then with a reader rank, a writer rank and one or two
# extracting ranks per GPU on 1, 2, 4 and 8 GPUs (as many as are visible), and the outputs are
# compared with the one-process run (only the CHECKSUM/DATASUM cards, whose comments hold a
# timestamp, may differ).
#
#   bash profiles/exposure-scaling.sh [BIN] [WORKDIR]
set -u
B=$(realpath "${1:-target/release/desi-extract}"); W=${2:-/tmp/desi-exposure}; R=$(cd "$(dirname "$0")/.." && pwd)
D=$W/frames; E=$W/e30; mkdir -p "$D" "$E"
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
ngpu=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
P=$R/data/psf-r0-00051060.fits; cd "$D"; cp "$P" psf-r0-00000007.fits
"$B" standin-psf -p "$P" -o psf-b0-00000007.fits --camera b >/dev/null
"$B" standin-psf -p "$P" -o psf-z0-00000007.fits --camera z >/dev/null
for c in b0:3600,5800 r0:5760,7620 z0:7520,9824; do cam=${c%%:*}; w=${c#*:}
    [ -f preproc-$cam-00000007.fits ] || "$B" simulate -p psf-$cam-00000007.fits -o preproc-$cam-00000007.fits \
        -w $w,0.8 --camera $cam --expid 7 --seed 3 >/dev/null 2>&1 &
done; wait
cd "$E"
for s in 0 1 2 3 4 5 6 7 8 9; do for c in b r z; do
    ln -sf "$D/preproc-${c}0-00000007.fits" preproc-$c$s-00000008.fits; ln -sf "$D/psf-${c}0-00000007.fits" psf-$c$s-00000008.fits
done; done
run() { name=$1; shift; s=$(date +%s%N); "$@" > log-$name.txt 2>&1; rc=$?; e=$(date +%s%N)
    echo "== $name rc=$rc $(( (e - s) / 1000000 )) ms: $(grep -E 'written,' log-$name.txt | tail -1)"; }
M="mpirun --allow-run-as-root --oversubscribe"
# The reference: one process on GPU 0 (two frames in flight).
run 1proc-1gpu env CUDA_VISIBLE_DEVICES=0 "$B" exposure --indir "$E" --outdir "$E/p1" --expid 8 --gpu
# G = 1, 2, 4, 8 GPUs (up to the visible count): reader + writer ranks and one or two extracting
# ranks per GPU (-n G+2, -n 2G+2); frames/s and strong-scaling efficiency against G = 1.
base=""
for g in 1 2 4 8; do
    [ "$g" -gt "$ngpu" ] && break
    vis=$(seq -s, 0 $((g - 1)))
    for n in $((g + 2)) $((2 * g + 2)); do
        s=$(date +%s%N)
        run g$g-n$n $M -x CUDA_VISIBLE_DEVICES=$vis -n $n "$B" exposure --indir "$E" --outdir "$E/g${g}n$n" --expid 8 --gpu
        ms=$(( ($(date +%s%N) - s) / 1000000 ))
        [ "$n" -eq $((g + 2)) ] && { [ -z "$base" ] && base=$ms; \
            echo "   $g GPU(s), $n ranks: $(awk "BEGIN{printf \"%.2f frames/s, efficiency %.0f%%\", 30000/$ms, 100*$base/($ms*$g)}")"; }
    done
done
# Cards (80-byte pieces) that differ from the one-process run, other than the CHECKSUM/DATASUM
# cards: must be 0 (data and all other header cards identical).
for d in "$E"/g*n*; do bad=0; for f in "$E"/p1/frame-*.fits; do
        other="$d/$(basename "$f")"
        bad=$((bad + $(cmp -l "$f" "$other" | awk '{print int(($1-1)/80)}' | uniq | while read -r card; do
            dd if="$f" bs=80 skip="$card" count=1 2>/dev/null | grep -qE '^(CHECKSUM|DATASUM) *=' || echo x; done | wc -l)))
    done
    echo "$(basename "$d"): pieces differing from the 1-process run over 30 frames (besides checksum cards): $bad"; done
