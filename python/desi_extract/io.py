"""PSF input with gpu_specter's interface (``gpu_specter.io.read_psf``).

:func:`read_psf` returns a :class:`PsfData`: a dict with gpu_specter's keys (``'PSF'``,
``'XTRACE'``, ``'YTRACE'``, each with the ``meta`` of its HDU header as gpu_specter's tables
have) that also holds the PSF as desi-extract's reader read it (:attr:`PsfData.native`), which
is what :func:`desi_extract.extract_frame` uses. It pickles (mpi4py broadcasts it).
"""

import os
import tempfile

from . import _native

#: PSFERR of a PSF file without one (gpu_specter's and specter's default).
DEFAULT_PSFERR = 0.01


class Meta:
    """Stand-in for one of gpu_specter's PSF tables: only its ``meta`` (header keywords)."""

    def __init__(self, meta):
        self.meta = dict(meta)

    def __repr__(self):
        return f"Meta({self.meta!r})"


class PsfData(dict):
    """A PSF in gpu_specter's dict shape, backed by desi-extract's PSF (:attr:`native`)."""

    def __init__(self, native):
        super().__init__()
        self.native = native
        meta = dict(
            WAVEMIN=native.wavemin,
            WAVEMAX=native.wavemax,
            PSFERR=native.psferr,
            HSIZEX=native.hsizex,
            HSIZEY=native.hsizey,
            NPIX_X=native.npix_x,
            NPIX_Y=native.npix_y,
            FIBERMIN=native.fibermin,
        )
        if native.in_psf is not None:
            meta["IN_PSF"] = native.in_psf
        self["PSF"] = Meta(meta)
        self["XTRACE"] = Meta(dict(WAVEMIN=native.wavemin, WAVEMAX=native.wavemax))
        self["YTRACE"] = Meta(dict(WAVEMIN=native.wavemin, WAVEMAX=native.wavemax))

    def __reduce__(self):
        return (PsfData, (self.native,))


def _write_gpu_specter_dict(psf, path):
    """Writes gpu_specter's PSF dict (astropy Tables ``PSF``, ``XTRACE``, ``YTRACE``, as
    ``gpu_specter.io.read_psf`` returns) back to a specex-layout FITS file at ``path``."""
    import numpy as np
    from astropy.io import fits
    from astropy.table import Table

    try:
        table, xtrace, ytrace = psf["PSF"], psf["XTRACE"], psf["YTRACE"]
    except KeyError as err:
        raise ValueError(f"PSF dict without the {err.args[0]!r} entry of gpu_specter's read_psf") from None
    meta = dict(table.meta)
    primary = fits.Header()
    for key in ("PSFTYPE", "PSFVER"):
        if key not in meta:
            raise ValueError(f"PSF dict: the 'PSF' table's meta has no {key}")
        primary[key] = meta[key]
    hdus = [fits.PrimaryHDU(header=primary)]
    for name, column in (("XTRACE", "X"), ("YTRACE", "Y")):
        trace = psf[name]
        header = fits.Header()
        for key in ("WAVEMIN", "WAVEMAX"):
            if key not in trace.meta:
                raise ValueError(f"PSF dict: the {name!r} table's meta has no {key}")
            header[key] = trace.meta[key]
        data = np.asarray(trace[column], dtype=np.float64)
        hdus.append(fits.ImageHDU(data=data, header=header, name=name))
    # The table's keywords (astropy keeps COMMENT/HISTORY as lists: not needed, left out).
    scalars = {k: v for k, v in meta.items()
               if len(k) <= 8 and isinstance(v, (str, bool, int, float, np.number))}
    psf_hdu = fits.BinTableHDU(Table(table, meta=scalars), name="PSF")
    hdus.append(psf_hdu)
    fits.HDUList(hdus).writeto(path)


def read_psf(filename):
    """Reads a specex GaussHermite PSF.

    Args:
        filename: a path (str or os.PathLike) of a PSF file; or gpu_specter's PSF dict (the
            astropy Tables of ``gpu_specter.io.read_psf``), which is written to a temporary
            FITS file and read back (one explicit copy); or a :class:`PsfData` (returned as is).

    Returns:
        :class:`PsfData`.

    Raises:
        ValueError: a file that is missing or not a GaussHermite PSF (the message names the file
            and the problem), or a dict without gpu_specter's entries.
    """
    if isinstance(filename, PsfData):
        return filename
    if isinstance(filename, _native.Psf):
        return PsfData(filename)
    if isinstance(filename, dict):
        with tempfile.TemporaryDirectory(prefix="desi-extract-psf-") as tmp:
            path = os.path.join(tmp, "psf.fits")
            _write_gpu_specter_dict(filename, path)
            return PsfData(_native.Psf.read(path))
    if isinstance(filename, (str, bytes, os.PathLike)):
        return PsfData(_native.Psf.read(os.fsdecode(filename)))
    raise TypeError(f"read_psf: expected a path or gpu_specter's PSF dict, got {type(filename).__name__}")
