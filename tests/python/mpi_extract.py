"""Helper of test_desispec_compat.py, run under `mpirun -n 2`: extract_frame with
MPI.COMM_WORLD (the image and PSF given on rank 0 only, as desispec does); rank 0 saves the
result to an npz file.

    mpirun -n 2 python mpi_extract.py PREPROC PSF WAVE SPECMIN NSPEC OUT.npz
"""

import sys

import numpy as np
from mpi4py import MPI

import desi_extract


def main(preproc, psf, wave, specmin, nspec, out):
    comm = MPI.COMM_WORLD
    image = None
    if comm.rank == 0:
        from desispec import io
        from desispec.maskbits import extractmaskval

        img = io.read_image(preproc)
        image = {"image": img.pix, "ivar": img.ivar * ((img.mask & extractmaskval) == 0)}
    else:
        psf = None
    result = desi_extract.extract_frame(image, psf, 25, int(specmin), int(nspec), wavelength=wave,
                                        nsubbundles=5, model=True, comm=comm)
    if comm.rank == 0:
        np.savez(out, **{k: v for k, v in result.items() if v is not None})
    else:
        assert result is None


if __name__ == "__main__":
    main(*sys.argv[1:])
