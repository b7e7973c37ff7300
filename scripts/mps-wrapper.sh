#!/usr/bin/env bash
# Runs a command under the CUDA Multi-Process Service, as DESI's desi_mps_wrapper does: the first
# local rank of each node starts the MPS control daemon, every rank waits, runs the command, and
# the first local rank stops the daemon afterwards. Exit code: the command's.
#
#   mpirun -n 6 scripts/mps-wrapper.sh [-d SECONDS] desi-extract exposure --gpu ...
#   srun  -n 20 scripts/mps-wrapper.sh desi-extract exposure --gpu ...
#
# Local rank from SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK or MPI_LOCALRANKID (default 0).
# Pipe and log directories: $CUDA_MPS_PIPE_DIRECTORY / $CUDA_MPS_LOG_DIRECTORY (default
# /tmp/nvidia-mps, /tmp/nvidia-log).
set -u
delay=1
if [[ ${1:-} == -d ]]; then delay=$2; shift 2; fi
[[ $# -gt 0 ]] || { echo "usage: $0 [-d SECONDS] COMMAND..." >&2; exit 2; }
local_rank=${SLURM_LOCALID:-${OMPI_COMM_WORLD_LOCAL_RANK:-${MPI_LOCALRANKID:-0}}}
export CUDA_MPS_PIPE_DIRECTORY=${CUDA_MPS_PIPE_DIRECTORY:-/tmp/nvidia-mps}
export CUDA_MPS_LOG_DIRECTORY=${CUDA_MPS_LOG_DIRECTORY:-/tmp/nvidia-log}
if [[ $local_rank == 0 ]]; then
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if ! nvidia-cuda-mps-control -d; then
        echo "mps-wrapper: could not start nvidia-cuda-mps-control; running without MPS" >&2
    fi
fi
sleep "$delay"
"$@"
status=$?
if [[ $local_rank == 0 ]]; then
    sleep "$delay"
    echo quit | nvidia-cuda-mps-control >/dev/null 2>&1 || true
fi
exit $status
