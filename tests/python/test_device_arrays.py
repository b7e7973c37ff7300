"""CuPy (``__cuda_array_interface__``) input of ``desi_extract.extract_frame``, without a GPU.

With ``gpu=True`` on one process the device arrays must go to the engine as device addresses,
never through ``.get()`` or ``__array__`` (no device-to-host copy); with ``gpu=False`` they are
copied to the host once, and the result is the numpy input's. The fake arrays here hold host
memory behind a ``__cuda_array_interface__``: without a GPU the device path must end in a clean
error (no driver, or, where a GPU exists, "not CUDA device memory"), never in a read. The
device path itself runs on a GPU in tests/python/gpu_check.py.

    PYTHONPATH=target/python:$PYTHONPATH python3 -m unittest tests/python/test_device_arrays.py -v
"""

import os
import unittest

import numpy as np

import desi_extract
from desi_extract import _native, core

HERE = os.path.dirname(os.path.abspath(__file__))
PSF = os.path.join(HERE, "..", "..", "data", "psf-r0-00051060.fits")
WAVE = "6000.0,6040.0,0.8"


class Copied(AssertionError):
    """Raised by a fake device array that was copied to the host."""


class FakeDeviceArray:
    """Host memory described by ``__cuda_array_interface__`` (v3 unless told), counting
    ``.get()`` calls; ``forbid_copy``: ``.get()`` and ``__array__`` raise :class:`Copied`."""

    def __init__(self, host, forbid_copy=True, **override):
        self.host, self.forbid_copy, self.gets = host, forbid_copy, 0
        cai = {
            "version": 3,
            "shape": host.shape,
            "typestr": host.dtype.str,
            "data": (host.ctypes.data, False),
            "strides": None if host.flags.c_contiguous else host.strides,
            "stream": 1,
        }
        cai.update(override)
        self.__cuda_array_interface__ = cai

    def get(self):
        if self.forbid_copy:
            raise Copied("the device array was copied to the host with .get()")
        self.gets += 1
        return self.host

    def __array__(self, *args, **kwargs):
        raise Copied("the device array was converted with __array__")


def frame_image(psf, seed=3):
    """A small noisy image of the PSF's CCD size: noise everywhere, ivar 1/4."""
    rng = np.random.default_rng(seed)
    shape = (psf.native.npix_y, psf.native.npix_x)
    image = rng.normal(0.0, 2.0, size=shape).astype(np.float32)
    ivar = np.full(shape, 0.25, dtype=np.float32)
    return image, ivar


class DeviceArrays(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.environ.pop(core.GPU_ENV, None)
        cls.psf = desi_extract.read_psf(PSF)
        cls.image, cls.ivar = frame_image(cls.psf)

    def extract(self, image, ivar, gpu):
        return desi_extract.extract_frame({"image": image, "ivar": ivar}, self.psf, 25, 0, 25,
                                          wavelength=WAVE, nsubbundles=5, gpu=gpu)

    def test_gpu_true_never_copies_device_arrays(self):
        image, ivar = FakeDeviceArray(self.image), FakeDeviceArray(self.ivar)
        # No GPU (no driver): RuntimeError; a GPU: the host addresses are refused as not CUDA
        # device memory (ValueError). Never a copy, never a read.
        with self.assertRaises((RuntimeError, ValueError)) as ctx:
            self.extract(image, ivar, gpu=True)
        self.assertNotIsInstance(ctx.exception, Copied)
        message = str(ctx.exception)
        self.assertTrue(any(s in message for s in ("driver", "no device", "not CUDA device memory")),
                        message)

    def test_gpu_false_copies_once_and_matches_numpy(self):
        image = FakeDeviceArray(self.image, forbid_copy=False)
        ivar = FakeDeviceArray(self.ivar, forbid_copy=False)
        got = self.extract(image, ivar, gpu=False)
        self.assertEqual((image.gets, ivar.gets), (1, 1))
        want = self.extract(self.image, self.ivar, gpu=False)
        for key in ("specflux", "specivar", "Rdiags", "chi2pix", "pixmask_fraction"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        self.assertGreater(np.count_nonzero(want["specivar"]), 0)

    def test_device_array_description(self):
        d = core._device_array(FakeDeviceArray(self.image), "image")
        self.assertIsInstance(d, _native.DeviceArray)
        self.assertEqual(d.shape, self.image.shape)
        # float64, C-ordered with explicit strides, and rows padded apart are all read in place.
        wide = np.zeros((4, 6), dtype=np.float64)
        core._device_array(FakeDeviceArray(wide, strides=wide.strides), "ivar")
        padded = np.zeros((4, 8), dtype=np.float32)[:, :6]
        self.assertEqual(core._device_array(FakeDeviceArray(padded), "ivar").shape, (4, 6))
        bad = [
            (dict(typestr="<i4"), "float32 or float64"),
            (dict(typestr=">f4"), "float32 or float64"),
            (dict(shape=(2, 3, 4)), "2-D"),
            (dict(mask=(1, False)), "mask"),
            (dict(version=1), "version"),
            (dict(strides=(4, 4 * self.image.shape[0])), "contiguous rows"),
            (dict(strides=(-4 * self.image.shape[1], 4)), "C-ordered"),
            (dict(stream=0), "stream 0"),
        ]
        for override, text in bad:
            with self.subTest(**{k: str(v) for k, v in override.items()}):
                with self.assertRaises(ValueError) as ctx:
                    core._device_array(FakeDeviceArray(self.image, **override), "image")
                self.assertIn(text, str(ctx.exception))

    def test_a_device_job_does_not_run_on_the_cpu(self):
        image = core._device_array(FakeDeviceArray(self.image), "image")
        ivar = core._device_array(FakeDeviceArray(self.ivar), "ivar")
        wave, wmin, wmax, dw = core._wavelength_grid(WAVE, self.psf)
        job = _native.Job(image, ivar, self.psf.native, wave, wmin, wmax, dw, 0, 25, 25, 5, 50,
                          10, 0.2, 0.8, 0.0, None, False)
        with self.assertRaises(RuntimeError) as ctx:
            job.extract_frame(None)
        self.assertIn("GPU memory", str(ctx.exception))
        # Host and device planes are not mixed.
        with self.assertRaises(ValueError):
            _native.Job(image, self.ivar, self.psf.native, wave, wmin, wmax, dw, 0, 25, 25, 5, 50,
                        10, 0.2, 0.8, 0.0, None, False)


if __name__ == "__main__":
    unittest.main()
