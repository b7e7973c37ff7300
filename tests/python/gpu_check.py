"""GPU check of the Python package (needs an NVIDIA GPU; not part of the unittest run):

    PYTHONPATH=target/python:$PYTHONPATH python3 tests/python/gpu_check.py PREPROC [NSPEC [PSF]]

PREPROC: e.g. `desi-extract simulate -p data/psf-r0-00051060.fits -o PREPROC -w 6000,6100,0.8 -n 50`.

Extracts the preproc with gpu=True and gpu=False, prints the largest GPU-vs-CPU differences
(flux and ivar relative, Rdiags absolute; the CLI's `selftest --gpu` expects ~1e-9), and the
device memory in use (nvidia-smi) before, during (right after the call) and after: the call
must hand its memory back (the pool is trimmed and the context dropped when it returns).
Exits 1 when the results disagree beyond 1e-6 or the memory in use grew by more than 64 MiB.
"""

import os
import subprocess
import sys

import numpy as np

import desi_extract

HERE = os.path.dirname(os.path.abspath(__file__))


def used_mib():
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def main(preproc, nspec="50", psf=os.path.join(HERE, "..", "..", "data", "psf-r0-00051060.fits")):
    from astropy.io import fits

    with fits.open(preproc) as hdul:
        image = {"image": hdul["IMAGE"].data.astype(np.float32),
                 "ivar": (hdul["IVAR"].data * ((hdul["MASK"].data & 0x2FF) == 0)).astype(np.float32)}
    psf, nspec = desi_extract.read_psf(psf), int(nspec)
    before = used_mib()
    gpu = desi_extract.extract_frame(image, psf, 25, 0, nspec, wavelength="6000,6100,0.8",
                                     nsubbundles=5, gpu=True)
    after = used_mib()
    cpu = desi_extract.extract_frame(image, psf, 25, 0, nspec, wavelength="6000,6100,0.8",
                                     nsubbundles=5, gpu=False)
    ok = cpu["specivar"] > 0
    flux = np.max(np.abs(gpu["specflux"] - cpu["specflux"])[ok] / np.abs(cpu["specflux"][ok]).clip(1e-3))
    ivar = np.max(np.abs(gpu["specivar"] - cpu["specivar"])[ok] / cpu["specivar"][ok])
    rdiags = np.max(np.abs(gpu["Rdiags"] - cpu["Rdiags"]))
    print(f"GPU vs CPU: flux {flux:.2e} relative, ivar {ivar:.2e} relative, Rdiags {rdiags:.2e}")
    print(f"GPU memory used: {before} MiB before, {after} MiB after the call")
    return 0 if max(flux, ivar, rdiags) < 1e-6 and after - before <= 64 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
