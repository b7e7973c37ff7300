"""desi-extract standing in for gpu_specter.core: this module is replaced by desi_extract.core."""

import sys

import desi_extract.core

sys.modules[__name__] = desi_extract.core
