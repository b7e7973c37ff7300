"""gpu_specter's ``extract_frame`` on desi-extract's frame pipeline.

Same signature, arguments and result as ``gpu_specter.core.extract_frame`` (gpu_specter 0.3, as
desispec's ``main_gpu_specter`` calls it); the work is done by the library's one frame entry
point (``desi_extract::extract::extract_frame``, or ``extract_bundles`` + ``assemble_frame``
when a frame is spread over mpi4py ranks), with the GIL released.
"""

import logging
import os
import sys
import time

import numpy as np

from . import _native
from .io import read_psf

#: Environment variable that overrides the ``gpu`` argument: ``1`` runs on the GPU, ``0`` on
#: the CPU, whatever the caller asked (desispec asks for the GPU only where CuPy is installed).
GPU_ENV = "DESI_EXTRACT_GPU"


def _logger(loglevel=None):
    """desiutil's logger when desiutil is installed (as in gpu_specter), else ``logging``'s."""
    try:
        from desiutil.log import get_logger

        return get_logger(loglevel) if loglevel is not None else get_logger()
    except ImportError:
        log = logging.getLogger("desi_extract")
        if loglevel is not None:
            log.setLevel(loglevel)
        return log


def _on_device(array):
    """Whether ``array`` lives in CUDA device memory (exposes ``__cuda_array_interface__``, as
    CuPy, Numba and PyTorch arrays do)."""
    return array is not None and hasattr(array, "__cuda_array_interface__")


def _host_float32(array, name):
    """``img[name]`` as a C-contiguous float32 numpy array.

    An array on the GPU (an object with ``__cuda_array_interface__``, e.g. CuPy) is copied to the
    host here, once, with its ``.get()``: this is the path of ``gpu=False`` (the CPU extracts
    from host memory) and of a frame spread over several MPI ranks (rank 0 broadcasts the
    pixels); with ``gpu=True`` on one process the GPU reads device arrays where they are
    (:func:`_device_array`). float64 values are rounded to float32, the type preproc images are
    stored in (values read from a preproc file are float32 already, and round-trip exactly).
    """
    if array is None:
        raise ValueError(f"image dict has no {name!r} array")
    if _on_device(array):
        if not hasattr(array, "get"):
            raise TypeError(
                f"image[{name!r}] is a GPU array without .get(): pass a numpy or CuPy array"
            )
        array = array.get()
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"image[{name!r}] must be 2-D (rows, columns), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"image[{name!r}] must be numeric, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


#: The element types the GPU reads in place (others: copy to float32 first).
_DEVICE_TYPES = {"<f4": 4, "<f8": 8}


def _device_array(array, name):
    """``img[name]``, an array in CUDA device memory, described for the engine from its
    ``__cuda_array_interface__`` (versions 2 and 3) without touching its data: the GPU backend
    reads it where it is (no device-to-host copy), after synchronizing the interface's
    ``stream``. Float32 or float64 (rounded to float32 on the device, as :func:`_host_float32`
    rounds), 2-D, rows of contiguous elements (C order, or rows padded apart), no mask.

    The returned object keeps ``array`` alive; the caller must not write the array while the
    extraction runs (the interface's contract for the consumer's read).
    """
    cai = array.__cuda_array_interface__
    version = cai.get("version")
    if version not in (2, 3):
        raise ValueError(f"image[{name!r}]: __cuda_array_interface__ version {version!r} "
                         "is not supported (2 or 3)")
    shape = tuple(int(n) for n in cai["shape"])
    if len(shape) != 2:
        raise ValueError(f"image[{name!r}] must be 2-D (rows, columns), got shape {shape}")
    typestr = cai["typestr"]
    if typestr not in _DEVICE_TYPES:
        raise ValueError(f"image[{name!r}] on the GPU must be float32 or float64 ('<f4', '<f8'), "
                         f"got {typestr!r}: convert it (e.g. .astype(cupy.float32)) first")
    if cai.get("mask") is not None:
        raise ValueError(f"image[{name!r}]: masked device arrays are not supported "
                         "(put the mask into image['ivar'])")
    itemsize = _DEVICE_TYPES[typestr]
    strides = cai.get("strides")
    if strides is None:
        row_stride = shape[1] * itemsize
    else:
        row_stride, col_stride = (int(n) for n in strides)
        if col_stride != itemsize and shape[1] > 1:
            raise ValueError(f"image[{name!r}] on the GPU must have contiguous rows (strides "
                             f"{tuple(strides)} for {typestr}): pass cupy.ascontiguousarray(...)")
        if shape[0] == 1:
            row_stride = shape[1] * itemsize
        if row_stride < shape[1] * itemsize or row_stride % itemsize:
            raise ValueError(f"image[{name!r}] on the GPU must be C-ordered (strides "
                             f"{tuple(strides)}): pass cupy.ascontiguousarray(...)")
    address, _readonly = cai["data"]
    stream = cai.get("stream") if version >= 3 else None
    return _native.DeviceArray(int(address), typestr, shape, row_stride,
                               None if stream is None else int(stream), array)


def _wavelength_grid(wavelength, psf):
    """``(wave, wmin, wmax, dw)`` exactly as gpu_specter builds them: an array as given; a
    ``'wmin,wmax,dw'`` string, a tuple, or None (the PSF's WAVEMIN/WAVEMAX, dw 0.8) through
    ``np.arange(wmin, wmax + 0.5*dw, dw)``."""
    if isinstance(wavelength, np.ndarray):
        wave = np.ascontiguousarray(wavelength, dtype=np.float64)
        if wave.ndim != 1 or wave.size < 2:
            raise ValueError("wavelength array must be 1-D with at least 2 values")
        wmin, wmax = float(wave[0]), float(wave[-1])
        dw = float(np.gradient(wave)[0])
        if not np.allclose(np.diff(wave), dw):
            raise ValueError("wavelength array must be evenly spaced")
        return wave, wmin, wmax, dw
    if isinstance(wavelength, str):
        wmin, wmax, dw = map(float, wavelength.split(","))
    elif isinstance(wavelength, (tuple, list)):
        wmin, wmax, dw = (float(v) for v in wavelength)
    elif wavelength is None:
        wmin, wmax = psf["PSF"].meta["WAVEMIN"], psf["PSF"].meta["WAVEMAX"]
        dw = 0.8
    else:
        raise TypeError(f"wavelength: expected an array, 'wmin,wmax,dw', a tuple or None, got {type(wavelength).__name__}")
    if not (np.isfinite([wmin, wmax, dw]).all() and dw > 0 and wmax >= wmin):
        raise ValueError(f"invalid wavelength range {wmin},{wmax},{dw}")
    wave = np.arange(wmin, wmax + 0.5 * dw, dw)
    return wave, wmin, wmax, dw


def _use_gpu(gpu):
    """The ``gpu`` argument, unless ``$DESI_EXTRACT_GPU`` overrides it."""
    override = os.environ.get(GPU_ENV)
    if override in ("0", "1"):
        return override == "1"
    if override:
        raise ValueError(f"${GPU_ENV} must be 0 or 1, not {override!r}")
    return bool(gpu)


def _gpu_device(rank):
    """The GPU of this process: CuPy's current device when CuPy is loaded (as gpu_specter and
    desispec select it), else the rank modulo the visible devices."""
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        return int(cupy.cuda.runtime.getDevice())
    count = _native.gpu_device_count()
    if count == 0:
        raise RuntimeError("gpu=True but the CUDA driver sees no device")
    return rank % count


def _camera(img):
    """The CAMERA of the image's ``meta`` header (desispec's image dict), or None."""
    meta = img.get("meta") if hasattr(img, "get") else None
    try:
        camera = meta.get("CAMERA") if meta is not None else None
    except AttributeError:
        return None
    return str(camera) if camera is not None else None


def extract_frame(img, psf, bundlesize, specmin, nspec, wavelength=None, nwavestep=50,
                  nsubbundles=1, model=None, regularize=0, psferr=None, comm=None, gpu=None,
                  loglevel=None, timing=None, wavepad=10, pixpad_frac=0.8, wavepad_frac=0.2,
                  batch_subbundle=True, ranks_per_bundle=None):
    """Extracts 1-D spectra from a 2-D image (gpu_specter's ``extract_frame``).

    Args:
        img: dict with ``'image'`` and ``'ivar'`` (rows, columns) arrays, numpy or CuPy; the
            ivar already carries the mask, as desispec passes it. Other keys (``fibermap``,
            ``wave``, ``meta``) are ignored. Needed on rank 0 only. CuPy (any
            ``__cuda_array_interface__``) float32/float64 arrays are read by the GPU where they
            are when ``gpu`` is true on one process (no copy to the host; they must be on the
            extraction's device, CuPy's current one, and not be written during the call);
            with ``gpu=False`` or over several ranks they are copied to the host once.
        psf: :func:`desi_extract.read_psf`'s result, a PSF path, or gpu_specter's PSF dict
            (rank 0 only).
        bundlesize, specmin, nspec: spectra ``specmin .. specmin+nspec`` in bundles of
            ``bundlesize``.

    Options (as gpu_specter):
        wavelength: ``'wmin,wmax,dw'``, a tuple, an evenly spaced array, or None (the PSF's
            range, dw 0.8).
        nwavestep, nsubbundles: patch size (gpu_specter's own default is 1 sub-bundle; the
            command lines pass 5).
        model: truthy to compute the model image.
        regularize: regularization; psferr: PSF error for chi2pix (None: the PSF's PSFERR).
        comm: None, or an mpi4py communicator: the bundles are spread over its ranks and the
            frame is assembled on rank 0, bitwise identical to one rank.
        gpu: extract on an NVIDIA GPU (``$DESI_EXTRACT_GPU`` = 0/1 overrides it).
        loglevel: desiutil log level; timing: dict to receive gpu_specter's time stamps.
        wavepad, pixpad_frac, wavepad_frac: padding, as gpu_specter.
        batch_subbundle, ranks_per_bundle: accepted and checked as gpu_specter does; they do not
            change the decomposition (the result never depends on it).

    Returns:
        On rank 0, a dict: ``specflux``, ``specivar`` (per Angstrom), ``specmask``
        (``specivar == 0`` as int, gpu_specter's), ``wave``, ``Rdiags`` (nspec, 2*ndiag+1,
        nwave), ``pixmask_fraction``, ``chi2pix``, ``modelimage`` (None unless ``model``);
        None on the other ranks.

    Raises:
        ValueError: bad input (arrays, PSF, parameters); RuntimeError: a failed extraction
            (on every rank when any rank failed).
    """
    time_start = time.time()
    log = _logger(loglevel)
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    use_gpu = _use_gpu(gpu)
    if use_gpu and batch_subbundle:
        rpb = 1 if ranks_per_bundle is None else ranks_per_bundle
        if rpb > nsubbundles or nsubbundles % rpb != 0:
            raise ValueError("ranks_per_bundle must be <= nsubbundles and divide it")
    time_init_mpi_comm = time.time()

    image = ivar = None
    if rank == 0:
        if img is None:
            raise ValueError("extract_frame: rank 0 needs the image dict")
        psf = read_psf(psf)
        image, ivar = img.get("image"), img.get("ivar")
        if use_gpu and (comm is None or size == 1) and _on_device(image) and _on_device(ivar):
            # The GPU reads the caller's device arrays in place: no copy to the host.
            image, ivar = _device_array(image, "image"), _device_array(ivar, "ivar")
        else:
            image, ivar = _host_float32(image, "image"), _host_float32(ivar, "ivar")
    if comm is not None and size > 1:
        if rank == 0:
            log.info("Broadcasting inputs to other MPI ranks")
        psf = comm.bcast(psf, root=0)
        shape = comm.bcast(None if image is None else image.shape, root=0)
        if rank > 0:
            image = np.empty(shape, dtype=np.float32)
            ivar = np.empty(shape, dtype=np.float32)
        comm.Bcast(image, root=0)
        comm.Bcast(ivar, root=0)
    time_bcast = time.time()

    wave, wmin, wmax, dw = _wavelength_grid(wavelength, psf)
    if rank == 0:
        log.info(f"Using GPU: {use_gpu}")
        log.info(f"Extracting wavelengths {wmin},{wmax},{dw}")
    job = _native.Job(
        image, ivar, psf.native, wave, wmin, wmax, dw, specmin, nspec, bundlesize, nsubbundles,
        nwavestep, wavepad, wavepad_frac, pixpad_frac, regularize, psferr, bool(model),
        camera=_camera(img),
    )
    device = _gpu_device(rank) if use_gpu else None
    time_host_to_device = time.time()

    if comm is None or size == 1:
        frame = job.extract_frame(device)
        time_extracted = time_staged = time.time()
    else:
        share = list(range(job.nbundle))[rank::size]
        data, error = None, None
        try:
            data = job.extract_bundles(share, device)
        except Exception as err:  # reported on every rank below, then re-raised
            error = err
        errors = comm.allgather(None if error is None else f"rank {rank}: {error}")
        if error is not None:
            raise error
        failed = [e for e in errors if e is not None]
        if failed:
            raise RuntimeError("extraction failed on another rank: " + "; ".join(failed))
        time_extracted = time.time()
        shares = comm.gather(data, root=0)
        time_staged = time.time()
        frame = job.assemble(shares) if rank == 0 else None

    result = None
    time_merged = time.time()
    if rank == 0:
        for line in frame["reports"]:
            log.warning(f"patch {line}")
        specivar = frame["specivar"]
        result = dict(
            specflux=frame["specflux"],
            specivar=specivar,
            specmask=(specivar == 0).astype(int),
            wave=wave,
            Rdiags=frame["Rdiags"],
            pixmask_fraction=frame["pixmask_fraction"],
            chi2pix=frame["chi2pix"],
            modelimage=frame["modelimage"] if model else None,
        )
        log.info(f"Extracted {nspec} spectra x {wave.size} wavelengths ({frame['npatch']} patches) "
                 f"in {time.time() - time_start:.2f} s")
    time_assembled = time.time()

    if isinstance(timing, dict):
        timing["init-mpi-comm"] = time_init_mpi_comm
        timing["init-mpi-bcast"] = time_bcast
        timing["host-to-device"] = time_host_to_device
        timing["extracted-bundles"] = time_extracted
        timing["staged-bundles"] = time_staged
        timing["merged-bundles"] = time_merged
        timing["assembled-frame"] = time_assembled
    return result
