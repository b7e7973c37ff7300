#!/usr/bin/env python3
"""Reads frames back with desispec 0.70.0 itself, as a DESI pipeline would.

Usage: python3 tests/desispec_read_back.py FRAME.fits[.gz] ...

For each frame (one process for all: importing desispec costs a second or two):

- `desispec.io.read_frame` reads it without any warning (every warning, astropy's
  VerifyWarning and desispec's UserWarnings among them, is a problem);
- `Frame.vet()` returns 0;
- FLUX, IVAR and MASK have the shape NSPEC x NWAVE of the file's header (NSPEC in the
  primary header, NWAVE its NAXIS1), WAVELENGTH has NWAVE values, RESOLUTION is
  NSPEC x NDIAG x NWAVE, and a FIBERMAP (when there is one) has NSPEC rows;
- every bin is trustworthy or flagged: FLUX and IVAR finite, IVAR >= 0, IVAR = 0 only with a
  MASK bit, and every MASK bit one of `desispec.maskbits.specmask`'s.

Prints one JSON line per frame on stdout, {"path": ..., "problems": [...]}, and exits 1 if any
frame has a problem, 0 otherwise; exits 3 (with the reason on stderr) when desispec cannot be
imported. Run by tests/common/mod.rs (`desispec_reads`); tests/desispec_frame_check.py uses
`read_problems` for the same checks.
"""

import json
import sys
import warnings


def read_problems(path):
    """(frame or None, problems) of the frame at `path` as desispec reads it."""
    import numpy as np
    from astropy.io import fits
    from desispec.io import read_frame
    from desispec.maskbits import specmask

    problems = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            frame = read_frame(path)
        except Exception as err:  # noqa: BLE001 - any failure to read is the finding
            return None, [f"read_frame failed: {type(err).__name__}: {err}"]
    for w in caught:
        problems.append(f"read_frame warning: {w.category.__name__}: {w.message}")
    vet = frame.vet()
    if vet != 0:
        problems.append(f"Frame.vet() = {vet}")

    with fits.open(path) as hdul:
        head = hdul[0].header
        nspec, nwave = head.get("NSPEC"), head.get("NAXIS1")
    if nspec is None or nwave is None:
        problems.append(f"the primary header lacks NSPEC ({nspec}) or NAXIS1 ({nwave})")
        return frame, problems
    for name in ["flux", "ivar", "mask"]:
        shape = np.shape(getattr(frame, name))
        if shape != (nspec, nwave):
            problems.append(f"{name} shape {shape}, header NSPEC x NWAVE = {(nspec, nwave)}")
    if np.shape(frame.wave) != (nwave,):
        problems.append(f"wave shape {np.shape(frame.wave)}, header NWAVE = {nwave}")
    rdata = np.shape(frame.resolution_data)
    if len(rdata) != 3 or rdata[0] != nspec or rdata[2] != nwave:
        problems.append(f"resolution_data shape {rdata}, header NSPEC = {nspec}, NWAVE = {nwave}")
    if frame.fibermap is not None and len(frame.fibermap) != nspec:
        problems.append(f"FIBERMAP has {len(frame.fibermap)} rows, NSPEC = {nspec}")
    if problems:
        return frame, problems

    flux, ivar, mask = frame.flux, frame.ivar, frame.mask
    for name, a in [("flux", flux), ("ivar", ivar)]:
        bad = ~np.isfinite(a)
        if bad.any():
            problems.append(f"{np.count_nonzero(bad)} non-finite {name} value(s)")
    if np.any(ivar < 0):
        problems.append(f"{np.count_nonzero(ivar < 0)} bin(s) with IVAR < 0")
    unflagged = (ivar == 0) & (mask == 0)
    if unflagged.any():
        s, w = np.argwhere(unflagged)[0]
        problems.append(f"{np.count_nonzero(unflagged)} bin(s) with IVAR = 0 and MASK = 0 "
                        f"(first: spectrum {s}, wavelength {frame.wave[w]})")
    known = 0
    for name in specmask.names():
        known |= specmask.mask(name)
    unknown = np.bitwise_or.reduce(mask.ravel().astype(np.int64)) & ~known
    if unknown:
        problems.append(f"MASK bits {unknown:#x} are not desispec specmask bits")
    return frame, problems


def main(argv):
    paths = argv[1:]
    if not paths:
        print(f"usage: {argv[0]} FRAME.fits ...", file=sys.stderr)
        return 2
    try:
        import desispec.io  # noqa: F401
        import desispec.maskbits  # noqa: F401
    except Exception as err:  # noqa: BLE001 - reported to the caller, which decides
        print(f"cannot import desispec: {type(err).__name__}: {err}", file=sys.stderr)
        return 3
    failed = 0
    for path in paths:
        try:
            _, problems = read_problems(path)
        except Exception as err:  # noqa: BLE001 - a check that raises is a failed check
            import traceback
            traceback.print_exc()
            problems = [f"the check raised {type(err).__name__}: {err}"]
        if problems:
            failed += 1
            print(f"{path}: not a frame desispec accepts:", file=sys.stderr)
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
        print(json.dumps({"path": path, "problems": problems}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
