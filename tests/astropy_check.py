#!/usr/bin/env python3
"""Reads a desi-extract frame file with astropy as desispec does; checks docs/algorithm.md §1.3.

Usage: python3 tests/astropy_check.py FRAME.fits

Exits 0 when the frame has the HDUs FLUX, IVAR, MASK, WAVELENGTH, RESOLUTION, FIBERMAP,
CHI2PIX (and SCORES, unless written with --no-scores) in that order with the dtypes and shapes desispec expects, the primary header has
FLAVOR and CAMERA, and every HDU's CHECKSUM/DATASUM verifies without any warning. Otherwise it
prints every problem found and exits 1. Run by tests/cli.rs.
"""

import sys
import warnings

import numpy as np
from astropy.io import fits

HDU_NAMES = ["FLUX", "IVAR", "MASK", "WAVELENGTH", "RESOLUTION", "FIBERMAP", "CHI2PIX"]
FLOAT32_HDUS = ["FLUX", "IVAR", "RESOLUTION", "CHI2PIX"]
FLAVORS = {"none", "flat", "arc", "zero", "bias", "science"}


def check(path):
    """Returns the list of problems of the frame at `path` (empty when it is fine)."""
    problems = []

    def expect(ok, message):
        if not ok:
            problems.append(message)
        return ok

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(path, checksum=True) as hdul:
            hdul.verify("exception")
            names = [hdu.name for hdu in hdul]
            ok_names = names in (HDU_NAMES, HDU_NAMES + ["SCORES"])
            if not expect(ok_names, f"HDU names {names}, expected {HDU_NAMES} (+ SCORES)"):
                return problems
            for hdu in hdul:
                expect(hdu.verify_checksum() == 1, f"{hdu.name}: CHECKSUM missing or wrong")
                expect(hdu.verify_datasum() == 1, f"{hdu.name}: DATASUM missing or wrong")

            flux = hdul["FLUX"].data
            if not expect(flux is not None and flux.ndim == 2, "FLUX is not a 2-D image"):
                return problems
            nspec, nwave = flux.shape
            for name in FLOAT32_HDUS:
                dtype = hdul[name].data.dtype
                expect(dtype.kind == "f" and dtype.itemsize == 4, f"{name} dtype {dtype}, expected float32")
            mask = hdul["MASK"].data
            expect(mask.dtype == np.uint32, f"MASK dtype {mask.dtype}, expected uint32 (BITPIX 32, BZERO 2**31)")
            expect(hdul["MASK"].header.get("BZERO") == 2**31, "MASK BZERO is not 2147483648")
            wave = hdul["WAVELENGTH"].data
            expect(wave.dtype.kind == "f" and wave.dtype.itemsize == 8, f"WAVELENGTH dtype {wave.dtype}, expected float64")

            for name in ["IVAR", "MASK", "CHI2PIX"]:
                shape = hdul[name].data.shape
                expect(shape == (nspec, nwave), f"{name} shape {shape}, expected {(nspec, nwave)}")
            expect(wave.shape == (nwave,), f"WAVELENGTH shape {wave.shape}, expected {(nwave,)}")
            rshape = hdul["RESOLUTION"].data.shape
            expect(rshape == (nspec, 11, nwave), f"RESOLUTION shape {rshape}, expected {(nspec, 11, nwave)}")

            head = hdul[0].header
            expect(head.get("BUNIT") == "electron/Angstrom", f"FLUX BUNIT {head.get('BUNIT')!r}")
            expect(str(head.get("FLAVOR", "")).strip() in FLAVORS, f"FLAVOR {head.get('FLAVOR')!r} missing or invalid")
            expect(str(head.get("CAMERA", "")).strip() != "", "CAMERA missing from the primary header")
            expect(head.get("NSPEC") == nspec, f"NSPEC {head.get('NSPEC')!r}, FLUX has {nspec} spectra")
            expect(hdul["WAVELENGTH"].header.get("BUNIT") == "Angstrom", "WAVELENGTH BUNIT is not Angstrom")
            expect(np.all(np.diff(wave) > 0), "WAVELENGTH is not increasing")
            for name in ["FLUX", "IVAR", "RESOLUTION", "CHI2PIX"]:
                expect(np.all(np.isfinite(hdul[name].data)), f"{name} has non-finite values")
            expect(np.all(hdul["IVAR"].data >= 0), "IVAR has negative values")

            fibermap = hdul["FIBERMAP"]
            if expect(isinstance(fibermap, fits.BinTableHDU), f"FIBERMAP is a {type(fibermap).__name__}"):
                columns = fibermap.columns.names
                if expect("FIBER" in columns, f"FIBERMAP columns {columns} lack FIBER"):
                    fibers = fibermap.data["FIBER"]
                    expect(len(fibers) == nspec, f"FIBERMAP has {len(fibers)} rows, FLUX {nspec} spectra")
                    expect(head.get("FIBERMIN") == int(np.min(fibers)), "FIBERMIN is not min(FIBER)")
    for w in caught:
        problems.append(f"warning: {w.category.__name__}: {w.message}")
    return problems


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} FRAME.fits", file=sys.stderr)
        return 2
    path = argv[1]
    try:
        problems = check(path)
    except Exception as err:  # noqa: BLE001 - any failure to read is a failed check
        problems = [f"{type(err).__name__}: {err}"]
    if problems:
        print(f"{path}: not a valid frame for desispec:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"{path}: frame OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
