"""desi-extract standing in for gpu_specter.mpi: this module is replaced by desi_extract.mpi."""

import sys

import desi_extract.mpi

sys.modules[__name__] = desi_extract.mpi
