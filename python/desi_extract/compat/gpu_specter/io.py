"""desi-extract standing in for gpu_specter.io: this module is replaced by desi_extract.io."""

import sys

import desi_extract.io

sys.modules[__name__] = desi_extract.io
