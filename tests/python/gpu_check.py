"""GPU check of the Python package (needs an NVIDIA GPU; not part of the unittest run):

    PYTHONPATH=target/python:$PYTHONPATH python3 tests/python/gpu_check.py PREPROC [NSPEC [PSF]] [--cupy]

PREPROC: e.g. `desi-extract simulate -p data/psf-r0-00051060.fits -o PREPROC -w 6000,6100,0.8 -n 50`,
or `synthetic`: a seeded image made here (a smooth background of 40-80 electrons with Gaussian
noise, ivar 1/variance, 0.5% of the pixels masked), for a machine without the CLI or astropy.

Extracts the preproc with gpu=True and gpu=False, prints the largest GPU-vs-CPU differences
(flux and ivar relative, Rdiags absolute; the CLI's `selftest --gpu` expects ~1e-9), and the
device memory in use (nvidia-smi) before, during (right after the call) and after: the call
must hand its memory back (the pool is trimmed and the context dropped when it returns).
Exits 1 when the results disagree beyond 1e-6 or the memory in use grew by more than 64 MiB.

With CuPy installed (or `--cupy`, which makes its absence a failure) it then extracts the same
image from CuPy arrays (float32, and float64 made on a non-default stream with work still
queued, which the engine must wait for) and checks that
  (a) the result equals the numpy-input GPU result bit for bit;
  (b) the image never came to the host: the arrays are wrapped in an object that forwards only
      `__cuda_array_interface__` and raises on `.get()`, `__array__` and every other attribute,
      so any host copy by the package fails the call;
  (c) the device memory in use after the call is back where it was before it (64 MiB slack);
  (d) a NaN where ivar > 0 and a float16 array are refused with a ValueError.
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


class DeviceOnly:
    """A CuPy array seen only through its ``__cuda_array_interface__``: any other use (``.get()``,
    ``__array__``, ``.astype``, ...) raises, so a copy to the host cannot go unnoticed."""

    def __init__(self, array):
        object.__setattr__(self, "_array", array)

    @property
    def __cuda_array_interface__(self):
        return self._array.__cuda_array_interface__

    def __array__(self, *args, **kwargs):
        raise AssertionError("the device array was converted to numpy (a host copy)")

    def __getattr__(self, name):
        raise AssertionError(f"the package used .{name} of a device array")


def cupy_checks(image, psf, nspec, reference, strict):
    """(a)-(d) of the module docstring; returns the number of failed checks."""
    try:
        import cupy
    except ImportError:
        print("CuPy not installed: device-array checks skipped" + (" (required)" if strict else ""))
        return 1 if strict else 0
    failures = 0
    args = dict(wavelength="6000,6100,0.8", nsubbundles=5, gpu=True)
    keys = ("specflux", "specivar", "Rdiags", "pixmask_fraction", "chi2pix")
    cases = []
    dimage, divar = cupy.asarray(image["image"]), cupy.asarray(image["ivar"])
    cases.append(("float32", dimage, divar, None))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        # Queued on `stream`: the engine must synchronize it (the interface's `stream` field).
        wide_image = dimage.astype(cupy.float64) * 1.0
        wide_ivar = divar.astype(cupy.float64) * 1.0
    cases.append(("float64 on a side stream", wide_image, wide_ivar, stream))
    for label, im, iv, on in cases:
        if on is None:
            cupy.cuda.runtime.deviceSynchronize()
        before = used_mib()
        if on is None:
            got = desi_extract.extract_frame({"image": DeviceOnly(im), "ivar": DeviceOnly(iv)},
                                             psf, 25, 0, nspec, **args)
        else:
            with on:
                got = desi_extract.extract_frame({"image": DeviceOnly(im), "ivar": DeviceOnly(iv)},
                                                 psf, 25, 0, nspec, **args)
        after = used_mib()
        same = all(np.array_equal(got[k], reference[k]) for k in keys)
        print(f"CuPy {label}: bitwise equal to the numpy-input GPU result: {same}; "
              f"GPU memory {before} MiB before, {after} MiB after")
        failures += (not same) + (after - before > 64)
    bad, bad_ivar = dimage.copy(), divar.copy()
    bad[2000, 2000], bad_ivar[2000, 2000] = cupy.nan, 1.0
    for label, im, iv in (("NaN where ivar > 0", bad, bad_ivar),
                          ("float16", dimage.astype(cupy.float16), divar)):
        try:
            desi_extract.extract_frame({"image": DeviceOnly(im), "ivar": DeviceOnly(iv)},
                                       psf, 25, 0, nspec, **args)
            print(f"CuPy {label}: accepted (expected a ValueError)")
            failures += 1
        except ValueError as err:
            print(f"CuPy {label}: ValueError: {err}")
    return failures


def synthetic_image(psf, seed=12):
    """The `synthetic` input (see the module docstring) for `psf`'s CCD."""
    rng = np.random.default_rng(seed)
    ny, nx = psf.native.npix_y, psf.native.npix_x
    y, x = np.mgrid[0:ny, 0:nx]
    level = 60.0 + 20.0 * np.sin(x / 300.0) * np.cos(y / 500.0)
    variance = level + 9.0
    image = (level + rng.normal(size=(ny, nx)) * np.sqrt(variance)).astype(np.float32)
    ivar = (1.0 / variance * (rng.random((ny, nx)) > 0.005)).astype(np.float32)
    return {"image": image, "ivar": ivar}


def main(preproc, nspec="50", psf=os.path.join(HERE, "..", "..", "data", "psf-r0-00051060.fits"),
         strict=False):
    psf, nspec = desi_extract.read_psf(psf), int(nspec)
    if preproc == "synthetic":
        image = synthetic_image(psf)
    else:
        from astropy.io import fits

        with fits.open(preproc) as hdul:
            image = {"image": hdul["IMAGE"].data.astype(np.float32),
                     "ivar": (hdul["IVAR"].data * ((hdul["MASK"].data & 0x2FF) == 0)).astype(np.float32)}
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
    failures = cupy_checks(image, psf, nspec, gpu, strict)
    return 0 if max(flux, ivar, rdiags) < 1e-6 and after - before <= 64 and failures == 0 else 1


if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if a != "--cupy"]
    sys.exit(main(*argv, strict="--cupy" in sys.argv[1:]))
