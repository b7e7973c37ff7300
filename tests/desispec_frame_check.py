#!/usr/bin/env python3
"""Checks a desi-extract frame (and its model image) with desispec 0.70.0 itself.

Usage: python3 tests/desispec_frame_check.py FRAME.fits [MODEL.fits] [--no-scores]

- everything tests/desispec_read_back.py checks (`read_problems`: `desispec.io.read_frame`
  without any warning, `Frame.vet()` returns 0, shapes of the header's NSPEC x NWAVE, every bin
  finite with IVAR = 0 only under a specmask bit);
- the SCORES HDU equals `desispec.specscore.compute_frame_scores(frame, suffix="RAW",
  flux_per_angstrom=False)` (what `desi_extract_spectra` appends), computed by desispec on the
  frame as read (FLUX is float32 in the file, so to 1e-6 relative), with desispec's column
  names, order and TTYPE comments; with --no-scores there is no SCORES HDU;
- IN_PSF / IN_IMG are what `desispec.io.shorten_filename` makes of the paths given in the
  environment variables DESI_EXTRACT_CHECK_PSF / DESI_EXTRACT_CHECK_IMG (this process has the
  extraction's environment);
- the DEPNAMnn/DEPVERnn cards are desiutil's format: consecutive, names unique, each DESI
  environment variable of `desiutil.depend.possible_envvars` recorded with its value or
  NOT_SET, desi-extract recorded; `desiutil.depend.getdep` finds them;
- the IVAR, RESOLUTION and CHI2PIX HDUs carry no BUNIT (desispec's write_frame writes none);
- the model image (if given) has the frame's NSPEC, IN_PSF, IN_IMG, CAMERA and provenance.

Prints every problem and exits 1 if there is any; exits 0 otherwise. Run by
tests/desispec_frame.rs.
"""

import os
import sys

from desispec_read_back import read_problems  # this script's folder is on sys.path


def check(frame_path, model_path, expect_scores):
    import numpy as np
    from astropy.io import fits
    from desispec.io.meta import shorten_filename
    from desispec.specscore import compute_frame_scores
    from desiutil import depend

    frame, problems = read_problems(frame_path)
    if frame is None:
        return problems

    def expect(ok, message):
        if not ok:
            problems.append(message)
        return ok

    with fits.open(frame_path) as hdul:
        names = [h.name for h in hdul]
        head = hdul[0].header
        if expect_scores:
            if expect("SCORES" in names, f"no SCORES HDU: {names}"):
                ours = hdul["SCORES"]
                ref, comments = compute_frame_scores(frame, suffix="RAW", flux_per_angstrom=False)
                cols = list(ours.columns.names)
                expect(cols == list(ref.keys()), f"SCORES columns {cols}, desispec {list(ref.keys())}")
                for i, name in enumerate(cols, start=1):
                    expect(ours.header.comments[f"TTYPE{i}"] == comments.get(name),
                           f"SCORES {name} comment {ours.header.comments[f'TTYPE{i}']!r}, desispec {comments.get(name)!r}")
                    if name in ref:
                        a = np.asarray(ours.data[name], dtype=np.float64)
                        b = np.asarray(ref[name], dtype=np.float64)
                        expect(a.shape == b.shape, f"SCORES {name} shape {a.shape}, desispec {b.shape}")
                        if a.shape == b.shape:
                            rel = np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))
                            expect(rel < 1e-6, f"SCORES {name} differs from desispec by {rel:.3g} (relative)")
                            expect(np.all(np.isfinite(a)), f"SCORES {name} has non-finite values")
                # The check must be able to fail: scores of other fluxes differ.
                fake = frame.flux.copy()
                frame.flux = fake * 1.001
                moved, _ = compute_frame_scores(frame, suffix="RAW", flux_per_angstrom=False)
                first = cols[0] if cols else None
                if first in moved:
                    expect(not np.allclose(moved[first], ours.data[first], rtol=1e-6, atol=0),
                           "scaled flux still matches the SCORES (check cannot fail)")
                frame.flux = fake
        else:
            expect("SCORES" not in names, f"--no-scores but a SCORES HDU: {names}")

        for key, env in [("IN_PSF", "DESI_EXTRACT_CHECK_PSF"), ("IN_IMG", "DESI_EXTRACT_CHECK_IMG")]:
            given = os.environ.get(env)
            if given is not None:
                want = shorten_filename(given)
                expect(head.get(key) == want, f"{key} {head.get(key)!r}, desispec's shorten_filename gives {want!r}")

        deps = {}
        for i in range(100):
            n, v = f"DEPNAM{i:02d}", f"DEPVER{i:02d}"
            if n not in head:
                expect(not any(f"DEPNAM{j:02d}" in head for j in range(i + 1, 100)),
                       f"DEPNAMnn cards are not consecutive (gap at {n})")
                break
            expect(v in head, f"{n} without {v}")
            expect(head[n] not in deps, f"dependency {head[n]} recorded twice")
            deps[head[n]] = head.get(v)
        for var in depend.possible_envvars:
            want = os.environ.get(var, "NOT_SET")
            expect(deps.get(var) == want, f"{var} recorded as {deps.get(var)!r}, expected {want!r}")
            expect(depend.getdep(head, var) == want, f"desiutil getdep({var}) = {depend.getdep(head, var)!r}")
        expect("desi-extract" in deps, "desi-extract not among the DEPNAMnn cards")

        for name in ["IVAR", "RESOLUTION", "CHI2PIX"]:
            expect("BUNIT" not in hdul[name].header, f"{name} has a BUNIT (desispec writes none)")
        expect(hdul["WAVELENGTH"].header.get("BUNIT") == "Angstrom", "WAVELENGTH BUNIT is not Angstrom")
        expect(head.get("BUNIT") == "electron/Angstrom", f"FLUX BUNIT {head.get('BUNIT')!r}")

    if model_path is not None:
        with fits.open(model_path, checksum=True) as mdl:
            mh = mdl[0].header
            for key in ["NSPEC", "IN_PSF", "IN_IMG", "CAMERA", "WAVEMIN", "WAVEMAX", "DEPNAM00", "FIBERMIN", "SPECMIN"]:
                expect(mh.get(key) == head.get(key), f"model {key} {mh.get(key)!r}, frame {head.get(key)!r}")
            expect(mdl[0].verify_checksum() == 1, "model CHECKSUM missing or wrong")
            expect(mdl[0].data.dtype.kind == "f", "model is not a float image")
    return problems


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    expect_scores = "--no-scores" not in argv
    if not 1 <= len(args) <= 2:
        print(f"usage: {argv[0]} FRAME.fits [MODEL.fits] [--no-scores]", file=sys.stderr)
        return 2
    frame_path = args[0]
    model_path = args[1] if len(args) == 2 else None
    try:
        problems = check(frame_path, model_path, expect_scores)
    except Exception as err:  # noqa: BLE001 - any failure to read is a failed check
        import traceback
        traceback.print_exc()
        problems = [f"{type(err).__name__}: {err}"]
    if problems:
        print(f"{frame_path}: not a frame as desispec writes it:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"{frame_path}: desispec reads it, vet() passes, scores and provenance agree")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
