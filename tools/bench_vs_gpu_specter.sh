#!/usr/bin/env bash
# One bundle (25 fibers x 251 bins, 30 patches) on one thread: desi-extract's whole process
# against gpu_specter's CPU path (numpy + OpenBLAS + numba, one thread), on a simulated preproc
# of the bundled PSF. Prints every run and the medians (docs/design.md §4, issue #15).
#
#   GS=/tmp/gs GS_DEPS=/tmp/gsdeps bash tools/bench_vs_gpu_specter.sh [REPEATS]
#
# BASELINE_BIN=path/to/another/desi-extract also times that binary in the same runs (e.g. a
# build of an earlier commit), for before/after figures on the same machine load.
#
# GS: a gpu_specter checkout (git -C .../desihub+gpu_specter/repo archive HEAD | tar -x -C $GS);
# GS_DEPS: a pip --target folder with numba (pip install --target $GS_DEPS numba); numpy, scipy,
# astropy and fitsio come from ~/.cache/desi-extract/py (scripts/setup.sh). Build first:
# cargo build --release.
set -euo pipefail
repeats=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${DESI_EXTRACT_BIN:-$root/target/release/desi-extract}
psf=$root/data/psf-r0-00051060.fits
gs=${GS:-/tmp/gs}
deps=${GS_DEPS:-/tmp/gsdeps}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wave=6000.0,6200.0,0.8 # 251 bins
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
export RAYON_NUM_THREADS=1
export PYTHONPATH=$gs/py:$deps:$HOME/.cache/desi-extract/py
"$bin" simulate -p "$psf" -o "$work/preproc.fits" -s 0 -n 25 -w "$wave" --seed 1 >/dev/null

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }

: >"$work/ours_total"; : >"$work/ours_solve"; : >"$work/gs_total"; : >"$work/gs_extract"
: >"$work/base_total"; : >"$work/base_solve"
for i in $(seq "$repeats"); do
    if [ -n "${BASELINE_BIN:-}" ]; then
        t0=$(now)
        "$BASELINE_BIN" extract -i "$work/preproc.fits" -p "$psf" -o "$work/frame-base.fits" \
            -w "$wave" -s 0 -n 25 --threads 1 >"$work/base.log" 2>&1
        t1=$(now)
        echo "$t1 - $t0" | bc -l >>"$work/base_total"
        grep -o 'solve [0-9.]* s' "$work/base.log" | head -1 | awk '{print $2}' >>"$work/base_solve"
        printf 'run %d: baseline %.3f s (solve %s s)\n' "$i" "$(tail -1 "$work/base_total")" \
            "$(tail -1 "$work/base_solve")"
    fi
    t0=$(now)
    "$bin" extract -i "$work/preproc.fits" -p "$psf" -o "$work/frame.fits" -w "$wave" \
        -s 0 -n 25 --threads 1 >"$work/ours.log" 2>&1
    t1=$(now)
    total=$(echo "$t1 - $t0" | bc -l)
    solve=$(grep -o 'solve [0-9.]* s' "$work/ours.log" | head -1 | awk '{print $2}')
    echo "$total" >>"$work/ours_total"; echo "$solve" >>"$work/ours_solve"
    t0=$(now)
    line=$(python3 "$root/tools/gpu_specter_time.py" "$work/preproc.fits" "$psf" \
        "$work/gs-frame.fits" "$wave" 0 25 2>"$work/gs.log")
    t1=$(now)
    gtotal=$(echo "$t1 - $t0" | bc -l)
    # load + extract + write of a warm process (numba's JIT warm-up excluded).
    gwarm=$(echo "$line" | awk '{print $2 + $4 + $6}')
    gextract=$(echo "$line" | awk '{print $4}')
    echo "$gwarm" >>"$work/gs_total"; echo "$gextract" >>"$work/gs_extract"
    printf 'run %d: desi-extract %.3f s (solve %s s); gpu_specter %.3f s warm (extract %s s; %.1f s with python start and numba JIT)\n' \
        "$i" "$total" "$solve" "$gwarm" "$gextract" "$gtotal"
done
ot=$(median <"$work/ours_total"); os=$(median <"$work/ours_solve")
gt=$(median <"$work/gs_total"); ge=$(median <"$work/gs_extract")
echo "median of $repeats, one thread:"
echo "  desi-extract whole process $ot s, solve $os s"
if [ -n "${BASELINE_BIN:-}" ]; then
    echo "  baseline     whole process $(median <"$work/base_total") s, solve $(median <"$work/base_solve") s"
fi
echo "  gpu_specter  warm process (read + extract + write) $gt s, extraction $ge s"
printf '  ratio gpu_specter / desi-extract: whole process %.1fx; gpu_specter extraction alone / our whole process %.1fx\n' \
    "$(echo "$gt / $ot" | bc -l)" "$(echo "$ge / $ot" | bc -l)"
