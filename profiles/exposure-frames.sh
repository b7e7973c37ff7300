# Sourced by the exposure profiles: make_exposure_frames BIN PSF_r WORKDIR makes the synthetic
# 30-frame exposure once (b/r/z full frames of expid 7 simulated from the r PSF and its b/z
# stand-ins under WORKDIR/frames) and links it as expid 8 for spectrographs 0-9 under
# WORKDIR/e30; files already there are kept.
make_exposure_frames() {
    local bin psf work
    bin=$(realpath "$1"); psf=$(realpath "$2"); work=$3
    local frames=$work/frames e30=$work/e30
    mkdir -p "$frames" "$e30"
    ( cd "$frames" || exit 2
      [ -f psf-r0-00000007.fits ] || cp "$psf" psf-r0-00000007.fits
      [ -f psf-b0-00000007.fits ] || "$bin" standin-psf -p "$psf" -o psf-b0-00000007.fits --camera b >/dev/null
      [ -f psf-z0-00000007.fits ] || "$bin" standin-psf -p "$psf" -o psf-z0-00000007.fits --camera z >/dev/null
      for c in b0:3600,5800 r0:5760,7620 z0:7520,9824; do cam=${c%%:*}; w=${c#*:}
          [ -f preproc-$cam-00000007.fits ] || "$bin" simulate -p psf-$cam-00000007.fits \
              -o preproc-$cam-00000007.fits -w $w,0.8 --camera $cam --expid 7 --seed 3 >/dev/null 2>&1 &
      done; wait ) || return 2
    ( cd "$e30" || exit 2
      for s in 0 1 2 3 4 5 6 7 8 9; do for c in b r z; do
          ln -sf "$frames/preproc-${c}0-00000007.fits" preproc-$c$s-00000008.fits
          ln -sf "$frames/psf-${c}0-00000007.fits" psf-$c$s-00000008.fits
      done; done )
}
