//! Pulls of an extracted frame against the known input spectra.

use super::QaError;
use crate::io::FrameData;
use crate::patch::grid::gradient;
use crate::sim::Spectra;
use crate::stats::median;

/// Wavelengths of the truth and frame grids may differ by this much (Angstrom).
const WAVE_TOL: f64 = 1e-6;

/// Half-width of the pull histogram: bins cover `[-HIST_RANGE, HIST_RANGE)`.
pub const HIST_RANGE: f64 = 5.0;

/// Width of one pull-histogram bin.
pub const HIST_BIN: f64 = 0.25;

/// Summary of the pulls of a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct PullStats {
    /// Number of pulls (bins with `ivar > 0`).
    pub n: usize,
    /// Mean pull.
    pub mean: f64,
    /// Sample standard deviation of the pulls (denominator `n - 1`; 0 when `n == 1`).
    pub std: f64,
    /// Median chi2pix over the bins that entered the pulls.
    pub median_chi2pix: f64,
    /// Fraction of pulls with `|pull| > 3`.
    pub frac_abs_gt_3: f64,
    /// `(bin centre, count)` of the pulls in bins of [`HIST_BIN`] over
    /// `[-HIST_RANGE, HIST_RANGE)`; pulls outside are not counted here.
    pub histogram: Vec<(f64, u64)>,
}

/// `out = R · truth` for one spectrum, per bin, where `resolution_diags` holds the
/// `2*ndiag+1` stored diagonals `(2*ndiag+1, nwave)`, wavelength fastest, in the scipy dia
/// layout of the RESOLUTION HDU: `R[j - ndiag + d][j] = resolution_diags[d][j]`, i.e.
/// `(R t)[i] = Σ_d resolution_diags[d][i + ndiag - d] · t[i + ndiag - d]`.
///
/// # Panics
/// If the slice lengths do not match `nwave` and `ndiag` (a caller bug; [`pulls`] checks
/// file data before calling).
pub fn convolve_truth(
    resolution_diags: &[f64],
    truth: &[f64],
    nwave: usize,
    ndiag: usize,
    out: &mut [f64],
) {
    let ndiagonal = 2 * ndiag + 1;
    assert_eq!(
        resolution_diags.len(),
        ndiagonal * nwave,
        "resolution diagonals"
    );
    assert_eq!(truth.len(), nwave, "truth length");
    assert_eq!(out.len(), nwave, "output length");
    out.fill(0.0);
    for d in 0..ndiagonal {
        let diag = &resolution_diags[d * nwave..(d + 1) * nwave];
        // Row i = col - ndiag + d for col in [0, nwave) with 0 <= i < nwave.
        let col_lo = ndiag.saturating_sub(d);
        let col_hi = (nwave + ndiag).saturating_sub(d).min(nwave);
        for col in col_lo..col_hi {
            out[col + d - ndiag] += diag[col] * truth[col];
        }
    }
}

/// Offset of the frame's grid inside the truth grid, or why there is none.
fn grid_offset(frame: &[f64], truth: &[f64]) -> Result<usize, QaError> {
    let (Some(&first), Some(&last)) = (frame.first(), frame.last()) else {
        return Err(QaError::Shape {
            what: "frame",
            detail: "empty wavelength grid".into(),
        });
    };
    if truth.len() < frame.len() {
        return Err(QaError::WaveGrid {
            detail: format!(
                "truth has {} wavelengths, fewer than the frame's {} ({first}..{last} A)",
                truth.len(),
                frame.len()
            ),
        });
    }
    let offset = truth
        .iter()
        .position(|&w| (w - first).abs() <= WAVE_TOL)
        .ok_or_else(|| QaError::WaveGrid {
            detail: format!(
                "the frame's first wavelength {first} A is not on the truth grid ({}..{} A)",
                truth[0],
                truth[truth.len() - 1]
            ),
        })?;
    if offset + frame.len() > truth.len() {
        return Err(QaError::WaveGrid {
            detail: format!(
                "the frame grid ({first}..{last} A, {} bins) runs past the end of the truth grid \
                 ({} A)",
                frame.len(),
                truth[truth.len() - 1]
            ),
        });
    }
    for (j, (&f, &t)) in frame.iter().zip(&truth[offset..]).enumerate() {
        let close = (f - t).abs() <= WAVE_TOL; // false for NaN
        if !close {
            return Err(QaError::WaveGrid {
                detail: format!(
                    "frame bin {j} is at {f} A, truth bin {} at {t} A (tolerance {WAVE_TOL} A)",
                    offset + j
                ),
            });
        }
    }
    Ok(offset)
}

/// Checks every frame array against its shape.
fn check_frame(frame: &FrameData) -> Result<(), QaError> {
    let n = frame.nspec * frame.nwave;
    let nres = frame.nspec * (2 * frame.ndiag + 1) * frame.nwave;
    for (what, len, want) in [
        ("wavelength", frame.wavelength.len(), frame.nwave),
        ("flux", frame.flux.len(), n),
        ("ivar", frame.ivar.len(), n),
        ("resolution", frame.resolution.len(), nres),
        ("chi2pix", frame.chi2pix.len(), n),
    ] {
        if len != want {
            return Err(QaError::Shape {
                what: "frame",
                detail: format!(
                    "{what} has {len} values, expected {want} (nspec {}, nwave {}, ndiag {})",
                    frame.nspec, frame.nwave, frame.ndiag
                ),
            });
        }
    }
    Ok(())
}

/// The expected extracted flux per Angstrom, `R·truth / dwave`, `(nspec, nwave)` for every
/// spectrum of `frame`, with `dwave` the numpy gradient of the frame's wavelengths.
///
/// The truth grid must equal the frame's WAVELENGTH within 1e-6 A or contain it as a
/// contiguous sub-range; frame spectrum `s` (absolute `frame.specmin + s`) is truth row
/// `frame.specmin - truth.specmin + s`.
pub fn model_flux(frame: &FrameData, truth: &Spectra) -> Result<Vec<f64>, QaError> {
    check_frame(frame)?;
    let tw = truth.nwave();
    if truth.flux.len() != truth.nspec * tw {
        return Err(QaError::Shape {
            what: "truth",
            detail: format!(
                "flux has {} values, expected nspec {} x nwave {tw}",
                truth.flux.len(),
                truth.nspec
            ),
        });
    }
    let offset = grid_offset(&frame.wavelength, &truth.wave)?;
    let truth_end = truth.specmin + truth.nspec;
    if frame.specmin < truth.specmin || frame.specmin + frame.nspec > truth_end {
        return Err(QaError::Spectra {
            detail: format!(
                "the frame holds spectra {} to {}, the truth {} to {}",
                frame.specmin,
                (frame.specmin + frame.nspec).saturating_sub(1),
                truth.specmin,
                truth_end.saturating_sub(1)
            ),
        });
    }
    let row0 = frame.specmin - truth.specmin;
    let (nwave, ndiag) = (frame.nwave, frame.ndiag);
    let dwave = gradient(&frame.wavelength);
    Ok(resolved_truth(
        &frame.resolution,
        (frame.nspec, nwave, ndiag),
        &dwave,
        |s| {
            let row = (row0 + s) * tw + offset;
            &truth.flux[row..row + nwave]
        },
    ))
}

/// `R·truth / dwave` per bin, `(nspec, nwave)` spectrum-major, for spectra whose resolution
/// diagonals `(nspec, 2·ndiag+1, nwave)` are `rdiags` (`shape` = `(nspec, nwave, ndiag)`), with
/// `truth_row(s)` the `nwave` true values of spectrum `s` (per bin) and `dwave` the bin widths:
/// the expected extracted flux per Angstrom.
///
/// # Panics
/// If a slice length does not match the shape (a caller bug).
pub fn resolved_truth<'t>(
    rdiags: &[f64],
    shape: (usize, usize, usize),
    dwave: &[f64],
    truth_row: impl Fn(usize) -> &'t [f64],
) -> Vec<f64> {
    let (nspec, nwave, ndiag) = shape;
    let ndiagonal = 2 * ndiag + 1;
    let mut model = vec![0.0; nspec * nwave];
    for (s, out) in model.chunks_exact_mut(nwave.max(1)).enumerate() {
        let rd = &rdiags[s * ndiagonal * nwave..(s + 1) * ndiagonal * nwave];
        convolve_truth(rd, truth_row(s), nwave, ndiag, out);
        for (v, dw) in out.iter_mut().zip(dwave) {
            *v /= dw;
        }
    }
    model
}

/// Pulls `(flux - R·truth / dwave) · sqrt(ivar)` of every bin of `frame` with `ivar > 0`
/// (spectrum-major order) and their statistics. See [`model_flux`] for how the truth is
/// matched to the frame.
pub fn pulls(frame: &FrameData, truth: &Spectra) -> Result<(Vec<f64>, PullStats), QaError> {
    let model = model_flux(frame, truth)?;
    pulls_with_model(frame, &model)
}

/// [`pulls`] from an already computed [`model_flux`].
pub fn pulls_with_model(
    frame: &FrameData,
    model: &[f64],
) -> Result<(Vec<f64>, PullStats), QaError> {
    check_frame(frame)?;
    if model.len() != frame.flux.len() {
        return Err(QaError::Shape {
            what: "frame",
            detail: format!(
                "model has {} values, the flux {}",
                model.len(),
                frame.flux.len()
            ),
        });
    }
    let mut values = Vec::with_capacity(model.len());
    let mut chi2 = Vec::with_capacity(model.len());
    for (i, ((&f, &iv), &m)) in frame.flux.iter().zip(&frame.ivar).zip(model).enumerate() {
        if iv == 0.0 {
            continue;
        }
        let (s, j) = (i / frame.nwave, i % frame.nwave);
        if !(iv > 0.0 && iv.is_finite()) {
            return Err(QaError::BadData {
                detail: format!("ivar {iv} of spectrum row {s}, bin {j}"),
            });
        }
        let pull = (f - m) * iv.sqrt();
        if !pull.is_finite() {
            return Err(QaError::BadData {
                detail: format!(
                    "non-finite pull (flux {f}, expected {m}) at spectrum row {s}, bin {j}"
                ),
            });
        }
        values.push(pull);
        chi2.push(frame.chi2pix[i]);
    }
    if values.is_empty() {
        return Err(QaError::NoValidBins);
    }
    let stats = statistics(&values, chi2);
    Ok((values, stats))
}

/// Mean, standard deviation, outlier fraction and histogram of `pulls` (not empty).
fn statistics(pulls: &[f64], chi2: Vec<f64>) -> PullStats {
    let n = pulls.len();
    let mean = pulls.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (pulls.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let outliers = pulls.iter().filter(|p| p.abs() > 3.0).count();
    let nbins = (2.0 * HIST_RANGE / HIST_BIN).round() as usize;
    let mut counts = vec![0u64; nbins];
    for &p in pulls {
        let k = ((p + HIST_RANGE) / HIST_BIN).floor();
        if k >= 0.0 && (k as usize) < nbins {
            counts[k as usize] += 1;
        }
    }
    let histogram = counts
        .into_iter()
        .enumerate()
        .map(|(k, c)| (-HIST_RANGE + (k as f64 + 0.5) * HIST_BIN, c))
        .collect();
    PullStats {
        n,
        mean,
        std,
        median_chi2pix: median(chi2),
        frac_abs_gt_3: outliers as f64 / n as f64,
        histogram,
    }
}
