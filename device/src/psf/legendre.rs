//! Legendre series in wavelength (docs/algorithm.md §1.1).
//!
//! Every PSF quantity `q` of fiber `ispec` is a Legendre series in the wavelength mapped onto
//! `[-1, 1]`: `q(λ) = Σ_{k=0..deg} c[ispec][k] · P_k(ww)` with
//! `ww = (λ − WAVEMIN)·(2/(WAVEMAX − WAVEMIN)) − 1`. The traces X, Y are evaluated by Clenshaw
//! ([`legval`], numpy `legval`), the PSF parameters by the explicit basis
//! ([`legendre_sum`], numpy `legvander(ww, deg) @ coeff`); both follow numpy's operation
//! order. Extrapolation (`|ww| > 1`) is allowed. Nothing here allocates or panics.

/// Maps a wavelength onto the Legendre domain of an HDU:
/// `ww = (wave − wavemin)·(2/(wavemax − wavemin)) − 1`, in exactly that operation order
/// (as gpu_specter and specter compute it). `wavemin..wavemax` maps onto `[-1, 1]`.
#[inline]
pub fn normalized_wavelength(wave: f64, wavemin: f64, wavemax: f64) -> f64 {
    (wave - wavemin) * (2.0 / (wavemax - wavemin)) - 1.0
}

/// Legendre series `Σ_k coeffs[k]·P_k(ww)` by Clenshaw's recurrence, in numpy
/// `numpy.polynomial.legendre.legval` operation order.
///
/// `coeffs` has shape `(deg + 1,)`, lowest degree first. An empty series is 0.
pub fn legval(ww: f64, coeffs: &[f64]) -> f64 {
    let [value] = legval_lanes([ww], coeffs);
    value
}

/// [`legval`] at `L` points at once (one series, lane `l` at `ww[l]`), each lane by numpy's
/// operations in its order (so every lane is bitwise [`legval`]`(ww[l], coeffs)`, which is
/// this with one lane); the lanes' divisions and multiplications vectorize (the host's corner
/// planning).
pub fn legval_lanes<const L: usize>(ww: [f64; L], coeffs: &[f64]) -> [f64; L] {
    let (c0, c1) = match coeffs {
        [] => return [0.0; L],
        [c0] => ([*c0; L], [0.0; L]),
        [c0, c1] => ([*c0; L], [*c1; L]),
        [rest @ .., second_last, last] => {
            let mut c0 = [*second_last; L];
            let mut c1 = [*last; L];
            let mut nd = coeffs.len() as f64;
            // numpy: for i in 3..=len: c0, c1 = c[-i] − c1·(nd−1)/nd, c0 + c1·x·(2nd−1)/nd
            for &ck in rest.iter().rev() {
                nd -= 1.0;
                for l in 0..L {
                    let tmp = c0[l];
                    c0[l] = ck - (c1[l] * (nd - 1.0)) / nd;
                    c1[l] = tmp + (c1[l] * ww[l] * (2.0 * nd - 1.0)) / nd;
                }
            }
            (c0, c1)
        }
    };
    core::array::from_fn(|l| c0[l] + c1[l] * ww[l])
}

/// Fills `out[k] = P_k(ww)` for `k = 0..out.len()` (numpy `legvander` row, shape `(deg + 1,)`)
/// with Bonnet's recurrence `P_0 = 1`, `P_1 = ww`,
/// `P_k = (P_{k−1}·ww·(2k−1) − P_{k−2}·(k−1))/k` in numpy's operation order.
pub fn legendre_basis(ww: f64, out: &mut [f64]) {
    let mut p_prev = 0.0; // P_{k-2}
    let mut p_cur = 1.0; // P_{k-1}
    for (k, slot) in out.iter_mut().enumerate() {
        let p = match k {
            0 => 1.0,
            1 => ww,
            _ => {
                let kf = k as f64;
                (p_cur * ww * (2.0 * kf - 1.0) - p_prev * (kf - 1.0)) / kf
            }
        };
        *slot = p;
        if k > 0 {
            p_prev = p_cur;
        }
        p_cur = p;
    }
}

/// Legendre series `Σ_k coeffs[k]·P_k(ww)` as numpy `legvander(ww, deg) @ coeffs`: the basis of
/// [`legendre_basis`] dotted with `coeffs` (shape `(deg + 1,)`, lowest degree first) in index
/// order. Used for the PSF parameters (GHSIGX, GHSIGY, GH-i-j) with all LEGDEG+1 coefficients.
/// An empty series is 0.
pub fn legendre_sum(ww: f64, coeffs: &[f64]) -> f64 {
    let mut sum = 0.0;
    let mut p_prev = 0.0; // P_{k-2}
    let mut p_cur = 1.0; // P_{k-1}
    for (k, &ck) in coeffs.iter().enumerate() {
        let p = match k {
            0 => 1.0,
            1 => ww,
            _ => {
                let kf = k as f64;
                (p_cur * ww * (2.0 * kf - 1.0) - p_prev * (kf - 1.0)) / kf
            }
        };
        sum += p * ck;
        if k > 0 {
            p_prev = p_cur;
        }
        p_cur = p;
    }
    sum
}
