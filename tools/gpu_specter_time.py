"""Times gpu_specter's CPU extraction of one bundle in one process (tools/bench_vs_gpu_specter.sh).

numba compiles gpu_specter's kernels at their first call (no cache): a warm-up extraction of
one fiber x 50 bins runs first, so the figures are those of a warm process. Prints one line:
`load S extract S write S` (reading preproc + PSF, the extraction, writing the frame).

    python3 gpu_specter_time.py PREPROC PSF OUT WMIN,WMAX,DW SPECMIN NSPEC
"""

import sys
import time

from gpu_specter.core import extract_frame
from gpu_specter.io import read_img, read_psf, write_frame


def main():
    preproc, psf_path, out, wave, specmin, nspec = sys.argv[1:7]
    specmin, nspec = int(specmin), int(nspec)
    wmin, wmax, dw = (float(v) for v in wave.split(","))

    def run(img, psf, wavelength, nspec):
        return extract_frame(img, psf, 25, specmin, nspec, wavelength, 50, 5,
                             None, 0.0, None, None, False, "warning")

    t0 = time.perf_counter()
    img = read_img(preproc)
    psf = read_psf(psf_path)
    t1 = time.perf_counter()
    run(img, psf, f"{wmin},{wmin + 49 * dw},{dw}", 1)  # numba JIT warm-up
    t2 = time.perf_counter()
    frame = run(img, psf, wave, nspec)
    t3 = time.perf_counter()
    frame["imagehdr"] = img["imagehdr"]
    frame["fibermap"] = img["fibermap"]
    frame["fibermaphdr"] = img["fibermaphdr"]
    write_frame(out, frame)
    t4 = time.perf_counter()
    print(f"load {t1 - t0:.4f} extract {t3 - t2:.4f} write {t4 - t3:.4f} jit {t2 - t1:.4f}")


if __name__ == "__main__":
    main()
