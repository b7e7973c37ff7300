"""The Python package against the CLI and against desispec 0.70.0's own extraction script.

Run by scripts/test.sh (after `cargo test` built target/release/desi-extract and pip installed
the package into target/python):

    PYTHONPATH=target/python:$PYTHONPATH python3 -m unittest discover -s tests/python -v

Environment: DESI_EXTRACT_BIN (default target/release/desi-extract beside this checkout).
desispec 0.70.0 and its runtime imports come from scripts/setup.sh; desihub's specter, which
desispec's script imports at module level without using it on its gpu_specter path, is the
test-only placeholder in tests/python/placeholder (anything in it that is called raises).

A frame is simulated on two bundles of the bundled r0 PSF and extracted by:
  - the CLI (`desi-extract extract`);
  - desispec's `desi_extract_spectra` main, unmodified, through `python -m
    desi_extract.desispec_compat` (our modules standing in for gpu_specter's);
  - `desi_extract.extract_frame` called directly, with comm=None and over 2 mpi4py ranks.
Every comparison is bitwise.
"""

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PSF = os.path.join(REPO, "data", "psf-r0-00051060.fits")
BIN = os.environ.get("DESI_EXTRACT_BIN", os.path.join(REPO, "target", "release", "desi-extract"))
PLACEHOLDER = os.path.join(HERE, "placeholder")
WAVE = "6000.0,6100.0,0.8"
SPECMIN, NSPEC = 0, 50

#: desispec 0.70's script computes MASK itself with 0.70's rule (BAD2DFIT where chi2pix > 100);
#: the CLI's default is desispec main's rule, so the MASK comparison runs the CLI with
#: `--mask-rule 0.70`.

HDUS_COMPARED = ("FLUX", "IVAR", "RESOLUTION", "CHI2PIX", "WAVELENGTH")


def env_with(*paths):
    """The environment with `paths` in front of PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


def run(args, env=None, timeout=600):
    """Runs `args`; fails the test with its output unless it exits 0."""
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {out.returncode}\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}"
        )
    return out


def hdu_bytes(path, name):
    """The data of HDU `name` as stored (big-endian bytes) and its shape."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        data = hdul[name].data
        return np.asarray(data).tobytes(), data.shape, data.dtype


def mpirun():
    """The mpirun command line for 2 ranks, or None without mpirun or mpi4py."""
    launcher = shutil.which("mpirun")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    if launcher is None:
        return None
    args = [launcher, "-n", "2", "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-run-as-root")
    return args


class Frames(unittest.TestCase):
    """One simulated preproc, extracted every way."""

    @classmethod
    def setUpClass(cls):
        if not os.access(BIN, os.X_OK):
            raise unittest.SkipTest(f"{BIN} not built (cargo build --release)")
        cls.tmp = tempfile.TemporaryDirectory(prefix="desi-extract-py-")
        d = cls.tmp.name
        cls.preproc = os.path.join(d, "preproc-r0-00000001.fits")
        run([BIN, "simulate", "-p", PSF, "-o", cls.preproc, "-w", WAVE,
             "-s", str(SPECMIN), "-n", str(NSPEC), "--seed", "3"])
        cls.cli_frame = os.path.join(d, "frame-cli.fits")
        cls.cli_model = os.path.join(d, "model-cli.fits")
        cls.common = ["-p", PSF, "-w", WAVE, "-s", str(SPECMIN), "-n", str(NSPEC)]
        run([BIN, "extract", "-i", cls.preproc, "-o", cls.cli_frame, "-m", cls.cli_model, *cls.common])
        cls.desispec_frame = os.path.join(d, "frame-desispec.fits")
        cls.desispec_model = os.path.join(d, "model-desispec.fits")
        cls.env = env_with(PLACEHOLDER)
        run([sys.executable, "-m", "desi_extract.desispec_compat", "-i", cls.preproc,
             "-o", cls.desispec_frame, "-m", cls.desispec_model, *cls.common], env=cls.env)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def image_dict(self):
        """The image dict as desispec's main_gpu_specter builds it."""
        sys.path.insert(0, PLACEHOLDER)
        from desispec import io as dio
        from desispec.maskbits import extractmaskval

        img = dio.read_image(self.preproc)
        return {"image": img.pix, "ivar": img.ivar * ((img.mask & extractmaskval) == 0)}

    def assert_same_hdus(self, a, b, names=HDUS_COMPARED):
        for name in names:
            da, sa, ta = hdu_bytes(a, name)
            db, sb, tb = hdu_bytes(b, name)
            self.assertEqual((sa, ta), (sb, tb), f"{name}: shape/dtype")
            self.assertTrue(da == db, f"{name} of {a} and {b} differ")

    def test_desispec_script_writes_the_cli_frame(self):
        """desispec's unmodified script on our engine: FLUX/IVAR/RESOLUTION/CHI2PIX/WAVELENGTH
        bit for bit those of the CLI, and the model image too."""
        self.assert_same_hdus(self.desispec_frame, self.cli_frame)
        from astropy.io import fits

        with fits.open(self.desispec_model) as a, fits.open(self.cli_model) as b:
            self.assertTrue(np.array_equal(a[0].data, b["MODEL"].data), "model images differ")
            self.assertGreater(float(np.abs(a[0].data).sum()), 0.0)
        with fits.open(self.desispec_frame) as hdul:
            self.assertIn("SCORES", hdul, "desispec appends its SCORES HDU")
            self.assertTrue(hdul[0].header["SPECTER"].startswith("desi-extract"))

    def test_desispec_mask_rule_070(self):
        """MASK of desispec 0.70's script equals the CLI's with `--mask-rule 0.70`."""
        frame = os.path.join(self.tmp.name, "frame-cli-070.fits")
        run([BIN, "extract", "-i", self.preproc, "-o", frame, "--mask-rule", "0.70", *self.common])
        self.assert_same_hdus(self.desispec_frame, frame, ("MASK",))

    def test_frames_read_back_with_desispec(self):
        """desispec.io.read_frame reads both frames and Frame.vet() passes."""
        code = (
            "import sys; from desispec.io import read_frame\n"
            "for path in sys.argv[1:]:\n"
            "    f = read_frame(path)\n"
            "    assert f.vet() == 0, (path, f.vet())\n"
            "    assert f.flux.shape == (%d, 126), f.flux.shape\n" % NSPEC
        )
        run([sys.executable, "-W", "error::UserWarning", "-c", code, self.cli_frame,
             self.desispec_frame], env=self.env)

    def test_extract_frame_matches_the_cli(self):
        """desi_extract.extract_frame with desispec's image dict: the CLI's frame (as float32),
        gpu_specter's result keys, specmask = (specivar == 0), timing filled."""
        import desi_extract
        from astropy.io import fits

        timing = {}
        result = desi_extract.extract_frame(
            self.image_dict(), desi_extract.read_psf(PSF), 25, SPECMIN, NSPEC,
            wavelength=(6000.0, 6100.0, 0.8), nwavestep=50, nsubbundles=5, model=True,
            regularize=0.0, psferr=None, comm=None, gpu=False, timing=timing)
        self.assertEqual(set(result), {"specflux", "specivar", "specmask", "wave", "Rdiags",
                                       "pixmask_fraction", "chi2pix", "modelimage"})
        with fits.open(self.cli_frame) as hdul, fits.open(self.cli_model) as model:
            for key, name in (("specflux", "FLUX"), ("specivar", "IVAR"),
                              ("Rdiags", "RESOLUTION"), ("chi2pix", "CHI2PIX")):
                ours = result[key].astype(np.float32)
                theirs = hdul[name].data.astype(np.float32)
                self.assertEqual(ours.shape, theirs.shape, key)
                self.assertTrue(ours.tobytes() == theirs.tobytes(), f"{key} differs from {name}")
            self.assertTrue(np.array_equal(result["wave"], hdul["WAVELENGTH"].data))
            self.assertTrue(np.array_equal(result["modelimage"], model["MODEL"].data))
        self.assertTrue(np.array_equal(result["specmask"], (result["specivar"] == 0).astype(int)))
        self.assertGreater(np.median(result["specivar"]), 0.0)
        self.assertEqual(len(timing), 7)

    def test_gil_is_released(self):
        """Another Python thread runs while a frame is extracted."""
        import desi_extract

        image, psf = self.image_dict(), desi_extract.read_psf(PSF)
        ticks, done = [0], threading.Event()

        def count():
            while not done.is_set():
                ticks[0] += 1
                time.sleep(0.001)

        thread = threading.Thread(target=count)
        thread.start()
        start = time.time()
        desi_extract.extract_frame(image, psf, 25, SPECMIN, NSPEC, wavelength=WAVE,
                                   nsubbundles=5)
        elapsed = time.time() - start
        done.set()
        thread.join()
        # A thread blocked on the GIL would tick at most a handful of times (at the start and
        # the end); a free one ticks every millisecond or so.
        self.assertGreater(ticks[0], max(20, 100 * elapsed * 0.2), f"{ticks[0]} ticks in {elapsed:.2f} s")

    def test_device_arrays_are_copied_to_the_host_once(self):
        """An array with __cuda_array_interface__ (CuPy's protocol; CuPy itself needs a GPU and
        is not installed here) is fetched with .get() once and extracts as its host copy."""
        import desi_extract

        class DeviceArray:
            gets = 0

            def __init__(self, host):
                self.host = host
                self.__cuda_array_interface__ = {"shape": host.shape, "version": 3}

            def get(self):
                DeviceArray.gets += 1
                return self.host

        image, psf = self.image_dict(), desi_extract.read_psf(PSF)
        args = (psf, 25, SPECMIN, NSPEC)
        device = {k: DeviceArray(v) for k, v in image.items()}
        ours = desi_extract.extract_frame(device, *args, wavelength=WAVE, nsubbundles=5)
        self.assertEqual(DeviceArray.gets, 2)
        host = desi_extract.extract_frame(image, *args, wavelength=WAVE, nsubbundles=5)
        self.assertTrue(ours["specflux"].tobytes() == host["specflux"].tobytes())

    def test_bad_input_is_a_value_error(self):
        import desi_extract

        image, psf = self.image_dict(), desi_extract.read_psf(PSF)
        bad = dict(image, ivar=image["ivar"].copy())
        bad["ivar"][100, 200] = -1.0
        with self.assertRaisesRegex(ValueError, r"ivar'\]\[100, 200\] = -1"):
            desi_extract.extract_frame(bad, psf, 25, SPECMIN, NSPEC, wavelength=WAVE)
        with self.assertRaisesRegex(ValueError, "4128x4114"):
            desi_extract.extract_frame({"image": image["image"][:-1], "ivar": image["ivar"][:-1]},
                                       psf, 25, SPECMIN, NSPEC, wavelength=WAVE)
        with self.assertRaises(ValueError):
            desi_extract.extract_frame(image, psf, 25, SPECMIN, 510, wavelength=WAVE)
        with self.assertRaisesRegex(ValueError, "no-such-psf.fits"):
            desi_extract.read_psf("/nonexistent/no-such-psf.fits")
        # The image's CAMERA (its meta header, as desispec's image dict has it) against the PSF's.
        with self.assertRaisesRegex(ValueError, "CAMERA is b0 but the PSF .* is for camera r0"):
            desi_extract.extract_frame(dict(image, meta={"CAMERA": "b0"}), psf, 25, SPECMIN,
                                       NSPEC, wavelength=WAVE)

    @unittest.skipIf(mpirun() is None, "mpi4py or mpirun not installed")
    def test_mpi_two_ranks_are_bitwise_one(self):
        """extract_frame over 2 mpi4py ranks, and desispec's script with --mpi under
        mpirun -n 2: bitwise the one-rank results."""
        out = os.path.join(self.tmp.name, "mpi.npz")
        run([*mpirun(), sys.executable, os.path.join(HERE, "mpi_extract.py"), self.preproc,
             PSF, WAVE, str(SPECMIN), str(NSPEC), out], env=self.env)
        import desi_extract

        one = desi_extract.extract_frame(self.image_dict(), PSF, 25, SPECMIN, NSPEC,
                                         wavelength=WAVE, nsubbundles=5, model=True)
        with np.load(out) as two:
            for key in ("specflux", "specivar", "Rdiags", "pixmask_fraction", "chi2pix",
                        "modelimage", "wave"):
                self.assertTrue(one[key].tobytes() == two[key].tobytes(), f"{key} differs")
        frame = os.path.join(self.tmp.name, "frame-desispec-mpi.fits")
        run([*mpirun(), sys.executable, "-m", "desi_extract.desispec_compat", "--mpi",
             "-i", self.preproc, "-o", frame, *self.common], env=self.env)
        self.assert_same_hdus(frame, self.desispec_frame, HDUS_COMPARED + ("MASK",))


class Psfs(unittest.TestCase):
    def test_gpu_specter_dict_reads_as_the_file(self):
        """read_psf of gpu_specter's PSF dict (built as gpu_specter.io.read_psf builds it)
        holds the same tables as read_psf of the file."""
        import desi_extract
        from astropy.io import fits
        from astropy.table import Table

        psfdata = {"PSF": Table.read(PSF, "PSF")}
        with fits.open(PSF) as hdul:
            for extname in ("XTRACE", "YTRACE"):
                t = Table()
                t[extname[0]] = hdul[extname].data
                for key in ("WAVEMIN", "WAVEMAX"):
                    t.meta[key] = hdul[extname].header[key]
                psfdata[extname] = t
        from_file = desi_extract.read_psf(PSF).native
        from_dict = desi_extract.read_psf(psfdata).native
        # The serialized PSF starts with its path, which differs; the tables follow.
        a, b = from_file.to_bytes(), from_dict.to_bytes()
        la, lb = len(from_file.path.encode()), len(from_dict.path.encode())
        self.assertEqual(a[-(len(a) - la - 1):], b[-(len(b) - lb - 1):])
        self.assertEqual(from_dict.wavemin, from_file.wavemin)
        with self.assertRaisesRegex(ValueError, "XTRACE"):
            desi_extract.read_psf({"PSF": psfdata["PSF"]})

    def test_psf_pickles(self):
        import desi_extract

        psf = desi_extract.read_psf(PSF)
        back = pickle.loads(pickle.dumps(psf))
        self.assertEqual(back.native.to_bytes(), psf.native.to_bytes())
        self.assertEqual(back["PSF"].meta["WAVEMIN"], psf["PSF"].meta["WAVEMIN"])

    def test_shim_path_forwards_gpu_specter(self):
        """The PYTHONPATH shim: `import gpu_specter.core` is desi_extract.core."""
        shim = run([sys.executable, "-m", "desi_extract.desispec_compat", "--shim-path"]).stdout.strip()
        code = ("import gpu_specter, gpu_specter.core, gpu_specter.io, gpu_specter.mpi, desi_extract.core\n"
                "assert gpu_specter.core is desi_extract.core\n"
                "assert gpu_specter.core.extract_frame is desi_extract.core.extract_frame\n"
                "assert gpu_specter.mpi.SerialIOCoordinator.__module__ == 'desi_extract.mpi'\n"
                "print(gpu_specter.__version__)")
        out = run([sys.executable, "-c", code], env=env_with(shim)).stdout
        self.assertTrue(out.startswith("desi-extract"), out)


if __name__ == "__main__":
    unittest.main()
