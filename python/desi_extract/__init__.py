"""desi-extract from Python: DESI spectroperfectionism extraction with gpu_specter's interface.

- :func:`extract_frame` (``desi_extract.core``): gpu_specter's ``extract_frame`` signature,
  arguments and result dict, on desi-extract's frame pipeline (CPU, or an NVIDIA GPU), with an
  optional mpi4py communicator.
- :func:`read_psf` (``desi_extract.io``): a specex GaussHermite PSF from a path or from
  gpu_specter's PSF dict.
- ``desi_extract.mpi``: gpu_specter's IO coordinators (no MPI, serial, parallel IO).
- ``python -m desi_extract.desispec_compat ARGS``: desispec's own ``desi_extract_spectra``
  (``desispec.scripts.extract.main``, unmodified) on this engine, see README.
"""

from ._native import __version__  # noqa: F401
from .core import extract_frame  # noqa: F401
from .io import read_psf  # noqa: F401

__all__ = ["extract_frame", "read_psf", "__version__"]
