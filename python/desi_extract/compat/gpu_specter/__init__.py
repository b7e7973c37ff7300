"""A ``gpu_specter`` that forwards to desi-extract (opt in by putting the folder above this one
on PYTHONPATH: ``python -m desi_extract.desispec_compat --shim-path`` prints it)."""

from desi_extract.desispec_compat import GPU_SPECTER_VERSION as __version__  # noqa: F401

__desi_extract__ = True
