#!/usr/bin/env bash
# A/B of two builds on one GPU machine, in one call of the device tool, most important first
# (issue #15's before/after figures from one machine):
#
#   bash profiles/gpu-ab.sh BASE_BIN NEW_BIN [OUT]
#
# 1. `selftest --gpu -n 500 --repeat 7` (full r frame: stage table, median frame time) of
#    NEW (warm-up), BASE, NEW;
# 2. the 30-frame exposure (frames as profiles/exposure-gpu.sh makes them) NEW (warm-up), then
#    BASE/NEW twice alternated (NEW with --summary-json: GPU busy, memory; BASE builds older
#    than --summary-json run without it);
# 3. a second selftest round; a full r frame on 16 CPU threads, BASE/NEW twice, with peak RSS;
#    two `extract --gpu --trace` runs of NEW on a full r frame (the front: spots kernel, upload,
#    plan);
# 4. NEW's selftest under the tuning knobs DESI_GPU_BATCHES=3|4, DESI_GPU_TAIL_PERCENT=0,
#    DESI_FACTOR_LANES=32, DESI_COVARIANCE_LANES=64|256;
# 5. PASS checks: cosmics + outlier rejection (50 fibers), the per-thread kernels (25 fibers).
# OUT/log.txt grows as it goes (one line per run) and everything else is re-packed into
# OUT/all.tgz after each section, so a run cut short at the tool's time limit still returns
# what it did (the device tool returns few files per call). OUT defaults to $OUT, else /tmp/ab.
set -u
[ $# -ge 2 ] || { echo "usage: $0 BASE_BIN NEW_BIN [OUT]" >&2; exit 1; }
BASE=$(realpath "$1"); NEW=$(realpath "$2")
OUT=${3:-${OUT:-/tmp/ab}}; W=$(mktemp -d); mkdir -p $W/st $OUT
L=$OUT/log.txt; R=$(cd "$(dirname "$0")/.." && pwd); cd "$R" || exit 2; P=$R/data/psf-r0-00051060.fits
pack() { tar -czf $OUT/all.tgz -C $W st 2>/dev/null; }
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
bin_of() { [ "$1" = base ] && echo "$BASE" || echo "$NEW"; }
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader >> $L
st() { tag=$1; bin_path=$(bin_of $2); shift 2
  s=$(date +%s%N)
  env "$@" timeout 150 $bin_path selftest --gpu -p $P -n 500 --repeat 7 > $W/st/$tag.txt 2>&1; rc=$?
  echo "== [$(el)s] $tag rc=$rc $(( ($(date +%s%N) - s) / 1000000 )) ms $(grep -E 'GPU median|PASS|FAIL' $W/st/$tag.txt | cut -c1-90 | tr '\n' ' ')" >> $L
}
st warm new DESI_X=1
st base1 base DESI_X=1
st new1 new DESI_X=1
pack
# Exposure frames (as profiles/exposure-gpu.sh makes them)
D=/tmp/desi-exposure/frames; E=/tmp/desi-exposure/e30; mkdir -p $D $E
( cd $D; cp $P psf-r0-00000007.fits
  $NEW standin-psf -p $P -o psf-b0-00000007.fits --camera b > /dev/null
  $NEW standin-psf -p $P -o psf-z0-00000007.fits --camera z > /dev/null
  for c in b0:3600,5800 r0:5760,7620 z0:7520,9824; do cam=${c%%:*}; w=${c#*:}
    $NEW simulate -p psf-$cam-00000007.fits -o preproc-$cam-00000007.fits -w $w,0.8 --camera $cam --expid 7 --seed 3 > /dev/null 2>&1 &
  done; wait )
( cd $E; for s in 0 1 2 3 4 5 6 7 8 9; do for c in b r z; do
  ln -sf $D/preproc-${c}0-00000007.fits preproc-$c$s-00000008.fits; ln -sf $D/psf-${c}0-00000007.fits psf-$c$s-00000008.fits
done; done )
echo "== [$(el)s] frames made" >> $L
ex() { tag=$1; bin=$2; bin_path=$(bin_of $2); shift 2
  sj=""; [ $bin = new ] && sj="--summary-json $W/st/ex_$tag.json"
  s=$(date +%s%N)
  timeout 100 $bin_path exposure --indir $E --outdir $E/$tag --expid 8 --gpu --overwrite $sj "$@" > $W/st/ex_$tag.txt 2>&1; rc=$?
  echo "== [$(el)s] ex_$tag rc=$rc $(( ($(date +%s%N) - s) / 1000000 )) ms $(grep -E 'GPU busy' $W/st/ex_$tag.txt | cut -c1-200 | tr '\n' ' ')" >> $L
}
ex warm new
ex base1 base; ex new1 new; ex base2 base; ex new2 new
pack
st base2 base DESI_X=1
st new2 new DESI_X=1
pack
for i in 1 2; do for b in base new; do b_path=$(bin_of $b)
  /usr/bin/time -f "%e s %M KB" timeout 60 $b_path extract -i $D/preproc-r0-00000007.fits -p $P -o /tmp/cpu16-$b.fits -w 5760,7620,0.8 --threads 16 > $W/st/cpu16_$b$i.txt 2>&1
  echo "== [$(el)s] cpu16 $b$i $(grep -E 'time  |KB' $W/st/cpu16_$b$i.txt | tr '\n' ' ')" >> $L
done; done
for i in 1 2; do timeout 60 $NEW extract --gpu -i $D/preproc-r0-00000007.fits -p $P -o /tmp/fr-r.fits -w 5760,7620,0.8 --trace $W/st/trace$i.json > $W/st/extract$i.txt 2>&1; echo "== [$(el)s] extract$i rc=$? $(grep -E 'time  ' $W/st/extract$i.txt)" >> $L; done
pack
for kv in DESI_GPU_BATCHES=3 DESI_GPU_TAIL_PERCENT=0 DESI_FACTOR_LANES=32 DESI_COVARIANCE_LANES=256 DESI_GPU_BATCHES=4 DESI_COVARIANCE_LANES=64; do
  st "k_${kv}" new $kv
done
pack
timeout 60 $NEW selftest --gpu -n 50 --repeat 2 --cosmics --reject-outliers > $W/st/reject50.txt 2>&1; echo "== [$(el)s] reject50 rc=$? $(grep -E 'PASS|FAIL' $W/st/reject50.txt)" >> $L
DESI_GPU_KERNELS=thread timeout 60 $NEW selftest --gpu -n 25 --repeat 1 > $W/st/thread25.txt 2>&1; echo "== [$(el)s] thread25 rc=$? $(grep -E 'PASS|FAIL' $W/st/thread25.txt)" >> $L
pack
cat $L
