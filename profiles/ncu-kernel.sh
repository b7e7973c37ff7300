#!/usr/bin/env bash
# Records Nsight Compute metrics of one launch of one kernel of a full r frame extraction.
#
#   bash profiles/ncu-kernel.sh KERNEL [BIN] [OUTDIR]
#
# KERNEL is a kernel name of host/gpu/ptx.rs (spots, assemble, factor_solve_team, covariance_team,
# resolution_team, pixel_rows, pixel_core, ...). Writes OUTDIR/KERNEL.ncu-rep (open in the Nsight
# Compute GUI) and prints the "SpeedOfLight", "Occupancy" and "LaunchStats" sections.
# NCU_SIM_ARGS are added to the simulation (e.g. "--cosmics"; the frame is then kept apart),
# NCU_EXTRACT_ARGS to the extraction (e.g. "--reject-outliers" for reject_scan, reject_bins).
# NCU_SECTIONS adds sections (e.g. "WarpStateStats SourceCounters": the stall reasons);
# NCU_DETAILS=1 prints the report's details page instead of the summary.
set -euo pipefail
kernel=${1:?kernel name}
bin=${2:-target/release/desi-extract}
out=${3:-profile-output}
mkdir -p "$out"
psf=$(dirname "$0")/../data/psf-r0-00051060.fits
# ncu on the PATH, else Nsight Compute's own folder, else CUDA's (the GPU machines have it only in
# /opt/nvidia/nsight-compute/VERSION/).
ncu=$(command -v ncu || true)
for pattern in "/opt/nvidia/nsight-compute/*/ncu" "/usr/local/cuda*/bin/ncu"; do
    [[ -n $ncu ]] || ncu=$(compgen -G "$pattern" | head -n 1 || true)
done
[[ -n $ncu ]] || { echo "ncu-kernel.sh: no ncu (Nsight Compute) found" >&2; exit 1; }
read -r -a sim_args <<<"${NCU_SIM_ARGS:-}"
read -r -a extract_args <<<"${NCU_EXTRACT_ARGS:-}"
sections=()
for section in ${NCU_SECTIONS:-}; do sections+=(--section "$section"); done
preproc=$out/preproc${NCU_SIM_ARGS:+-$(echo "$NCU_SIM_ARGS" | tr -c 'a-z0-9' '_')}.fits
[[ -f $preproc ]] || "$bin" simulate -p "$psf" -o "$preproc" -w 5760,7620,0.8 --seed 1 "${sim_args[@]}"
"$ncu" --clock-control none --kernel-name "$kernel" --launch-count 1 --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section MemoryWorkloadAnalysis "${sections[@]}" --force-overwrite -o "$out/$kernel" \
    "$bin" extract --gpu -i "$preproc" -p "$psf" -o "$out/frame.fits" -w 5760,7620,0.8 "${extract_args[@]}"
if [[ ${NCU_DETAILS:-0} == 1 ]]; then
    "$ncu" --import "$out/$kernel.ncu-rep" --page details
else
    "$ncu" --import "$out/$kernel.ncu-rep" --print-summary per-kernel
fi
