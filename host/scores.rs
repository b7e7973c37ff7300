//! Frame scores as desispec computes them (`desispec.specscore.compute_frame_scores`, the same
//! in desispec 0.70.0 and main), for the SCORES HDU that `desi_extract_spectra` appends unless
//! `--no-scores`.
//!
//! desispec's extraction calls `compute_and_append_frame_scores(frame, suffix="RAW")`, whose
//! `flux_per_angstrom` defaults to `False`: the scores are therefore the *counts* ones even
//! though the flux is per Angstrom (BUNIT electron/Angstrom). Reproduced here as is:
//! for the camera band `X` (b 4000-5800 A, r 5800-7600 A, z 7600-9800 A, chosen from the mean
//! wavelength of the grid), over the bins with `lo <= wave < hi`, per spectrum:
//!
//! - `SUM_RAW_COUNT_X`: the sum of the flux;
//! - `MEDIAN_RAW_COUNT_X`: the median of flux / dwave;
//! - `MEDIAN_RAW_SNR_X`: the median of sqrt(ivar) * flux / sqrt(dwave),
//!
//! with `dwave = numpy.gradient(wave)` and negative ivar taken as 0. Medians are numpy's (mean
//! of the two middle values for an even count, NaN when any value is NaN).

use crate::stats::median;
use rayon::prelude::*;

/// The top-hat band of each camera arm, Angstrom, `[lo, hi)` (desispec's `tophat_wave`).
pub const TOPHAT_BANDS: [(char, f64, f64); 3] = [
    ('b', 4000.0, 5800.0),
    ('r', 5800.0, 7600.0),
    ('z', 7600.0, 9800.0),
];

/// One score: a column of the SCORES table (float64, one value per spectrum).
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreColumn {
    /// Column name (TTYPEn), e.g. `SUM_RAW_COUNT_R`.
    pub name: String,
    /// Its description (the TTYPEn comment), as desispec writes it.
    pub comment: String,
    /// One value per spectrum.
    pub values: Vec<f64>,
}

/// The camera arm desispec's `_auto_detect_camera` picks for a grid: `b` when the mean
/// wavelength is at most 5800 A, `z` when it is at least 7600 A, else `r`.
pub fn auto_band(wave: &[f64]) -> char {
    let mean = wave.iter().sum::<f64>() / wave.len() as f64;
    if mean <= TOPHAT_BANDS[0].2 {
        'b'
    } else if mean >= TOPHAT_BANDS[2].1 {
        'z'
    } else {
        'r'
    }
}

/// `numpy.gradient(wave)`: central differences inside, one-sided at both ends (a single bin
/// has no gradient: numpy raises; here 0).
pub fn gradient(wave: &[f64]) -> Vec<f64> {
    let n = wave.len();
    if n < 2 {
        return vec![0.0; n];
    }
    (0..n)
        .map(|i| {
            if i == 0 {
                wave[1] - wave[0]
            } else if i == n - 1 {
                wave[n - 1] - wave[n - 2]
            } else {
                (wave[i + 1] - wave[i - 1]) / 2.0
            }
        })
        .collect()
}

/// numpy's median: NaN when any value is NaN, else [`median`].
fn np_median(values: Vec<f64>) -> f64 {
    if values.iter().any(|v| v.is_nan()) {
        f64::NAN
    } else {
        median(values)
    }
}

/// The RAW scores of a frame (`flux`, `ivar`: `(nspec, nwave)`, wavelength fastest, on the
/// grid `wave`), as `compute_and_append_frame_scores(frame, suffix="RAW")` computes them, in
/// desispec's column order. `None` when no bin of the grid lies in the band of its camera arm
/// (desispec raises there; desi-extract writes no SCORES HDU and says so).
pub fn raw_frame_scores(wave: &[f64], flux: &[f64], ivar: &[f64]) -> Option<Vec<ScoreColumn>> {
    let nwave = wave.len();
    if nwave == 0 || !flux.len().is_multiple_of(nwave) || ivar.len() != flux.len() {
        return None;
    }
    let band = auto_band(wave);
    let &(_, lo, hi) = TOPHAT_BANDS.iter().find(|b| b.0 == band)?;
    let bins: Vec<usize> = (0..nwave)
        .filter(|&i| wave[i] >= lo && wave[i] < hi)
        .collect();
    if bins.is_empty() {
        return None;
    }
    let dwave = gradient(wave);
    // Each spectrum's scores on its own (in parallel), in spectrum order.
    let per_spectrum: Vec<[f64; 3]> = flux
        .par_chunks(nwave)
        .zip(ivar.par_chunks(nwave))
        .map(|(f, iv)| spectrum_scores(f, iv, &bins, &dwave))
        .collect();
    let column = |k: usize| per_spectrum.iter().map(|s| s[k]).collect::<Vec<f64>>();
    let (sum, med_count, med_snr) = (column(0), column(1), column(2));
    let upper = band.to_ascii_uppercase();
    let range = format!("{lo},{hi}A");
    Some(vec![
        ScoreColumn {
            name: format!("SUM_RAW_COUNT_{upper}"),
            comment: format!("sum counts in wave. range {range}"),
            values: sum,
        },
        ScoreColumn {
            name: format!("MEDIAN_RAW_COUNT_{upper}"),
            comment: format!("median counts/A in wave. range {range}"),
            values: med_count,
        },
        ScoreColumn {
            name: format!("MEDIAN_RAW_SNR_{upper}"),
            comment: format!("median SNR/sqrt(A) in wave. range {range}"),
            values: med_snr,
        },
    ])
}

/// The three RAW scores of one spectrum (`f`, `iv`: its flux and ivar) over the band's `bins`,
/// `dwave` the grid's gradient: the sum of the flux, the median of flux / dwave and the median
/// of sqrt(ivar) * flux / sqrt(dwave).
fn spectrum_scores(f: &[f64], iv: &[f64], bins: &[usize], dwave: &[f64]) -> [f64; 3] {
    // numpy sums pairwise; a plain sum differs by rounding only (~1e-16 relative).
    let sum = bins.iter().map(|&i| f[i]).sum::<f64>();
    let med_count = np_median(bins.iter().map(|&i| f[i] / dwave[i]).collect());
    let med_snr = np_median(
        bins.iter()
            .map(|&i| {
                // `ivar[ivar < 0] *= 0` (a NaN stays NaN).
                let v = if iv[i] < 0.0 { 0.0 } else { iv[i] };
                v.sqrt() * f[i] / dwave[i].sqrt()
            })
            .collect(),
    );
    [sum, med_count, med_snr]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_and_gradient_follow_numpy() {
        assert_eq!(auto_band(&[3600.0, 5800.0]), 'b');
        assert_eq!(auto_band(&[5760.0, 7620.0]), 'r');
        assert_eq!(auto_band(&[7520.0, 9824.0]), 'z');
        assert_eq!(gradient(&[1.0, 2.0, 4.0, 7.0]), vec![1.0, 1.5, 2.5, 3.0]);
        assert_eq!(gradient(&[5600.0, 5800.0, 6000.0, 7600.0])[2], 900.0);
    }

    #[test]
    fn scores_of_a_small_frame() {
        // r band (mean 6250): bins 5800 and 6000 in, 5600 and 7600 out; dwave 200, 200, 900, 1600.
        let wave = [5600.0, 5800.0, 6000.0, 7600.0];
        let flux = [
            9.0,
            2.0,
            4.0,
            9.0,
            /* spectrum 2 */ 0.0,
            -1.0,
            f64::NAN,
            0.0,
        ];
        let ivar = [1.0, 4.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let s = raw_frame_scores(&wave, &flux, &ivar).expect("r band bins");
        let names: Vec<&str> = s.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["SUM_RAW_COUNT_R", "MEDIAN_RAW_COUNT_R", "MEDIAN_RAW_SNR_R"]
        );
        assert_eq!(s[0].values[0], 6.0);
        assert_eq!(s[1].values[0], 0.5 * (2.0 / 200.0 + 4.0 / 900.0));
        // sqrt(4) * 2 / sqrt(200) and 0 (negative ivar) -> mean of the two.
        assert_eq!(s[2].values[0], 0.5 * (4.0 / 200f64.sqrt()));
        assert!(s[0].values[1].is_nan() && s[1].values[1].is_nan());
        assert_eq!(s[0].comment, "sum counts in wave. range 5800,7600A");
        // z band (mean >= 7600) but no bin below 9800.
        assert!(raw_frame_scores(&[9800.0, 9900.0], &[1.0; 2], &[1.0; 2]).is_none());
    }
}
