"""desispec's own extraction script on desi-extract: an opt-in stand-in for gpu_specter.

desispec's ``desi_extract_spectra`` (``desispec.scripts.extract.main``) extracts, by default,
through ``gpu_specter.io.read_psf``, ``gpu_specter.core.extract_frame`` and
``gpu_specter.mpi``'s IO coordinators. :func:`install` registers this package's modules under
those names (``sys.modules``), so that desispec's unmodified script runs on desi-extract's
engine and writes its frame itself (its header, MASK rule, SCORES, fibermap). Nothing changes
until a user opts in, in one of three ways:

- ``python -m desi_extract.desispec_compat ARGS``: ``desi_extract_spectra ARGS`` on this engine
  (``mpirun -n N python -m desi_extract.desispec_compat ... --mpi`` under MPI);
- ``import desi_extract.desispec_compat as c; c.install()`` before desispec imports gpu_specter
  (e.g. at the top of a driver that calls ``desispec.scripts.extract.main``);
- ``export PYTHONPATH=$(python -m desi_extract.desispec_compat --shim-path):$PYTHONPATH``: a
  ``gpu_specter`` package that forwards to this one, for programs started by others
  (``desi_proc``). Remove it from PYTHONPATH to go back to gpu_specter.
"""

import os
import sys
import types

from . import core, io, mpi
from ._native import __version__

#: The ``__version__`` desispec records in the frame header (SPECTER keyword).
GPU_SPECTER_VERSION = f"desi-extract {__version__}"


def shim_path():
    """The folder holding the forwarding ``gpu_specter`` package (for PYTHONPATH)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "compat")


def install():
    """Registers desi-extract as ``gpu_specter``, ``gpu_specter.core``, ``gpu_specter.io`` and
    ``gpu_specter.mpi`` in ``sys.modules``. Refuses if another gpu_specter is already imported
    (it would keep being used where it was imported)."""
    existing = sys.modules.get("gpu_specter")
    if existing is not None and not getattr(existing, "__desi_extract__", False):
        raise RuntimeError(
            f"gpu_specter is already imported from {getattr(existing, '__file__', '?')}: "
            "install the desi-extract stand-in before anything imports gpu_specter"
        )
    package = types.ModuleType("gpu_specter")
    package.__doc__ = "desi-extract standing in for gpu_specter (desi_extract.desispec_compat)"
    package.__version__ = GPU_SPECTER_VERSION
    package.__desi_extract__ = True
    package.__path__ = []
    package.core, package.io, package.mpi = core, io, mpi
    sys.modules["gpu_specter"] = package
    sys.modules["gpu_specter.core"] = core
    sys.modules["gpu_specter.io"] = io
    sys.modules["gpu_specter.mpi"] = mpi


def main(argv=None):
    """``desi_extract_spectra argv`` (desispec's ``main``, unmodified) on desi-extract."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--shim-path"]:
        print(shim_path())
        return 0
    install()
    from desispec.scripts.extract import main as desispec_main

    desispec_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
