//! Input spectra of the simulator: a built-in mix or a FITS file (FLUX + WAVELENGTH).

/// Spectra in photons per wavelength bin on one grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Spectra {
    /// First spectrum (relative to the PSF's FIBERMIN).
    pub specmin: usize,
    /// Number of spectra.
    pub nspec: usize,
    /// Wavelength grid (Angstrom), length nwave.
    pub wave: Vec<f64>,
    /// Photons per bin, shape `(nspec, nwave)`.
    pub flux: Vec<f64>,
}

impl Spectra {
    /// Number of wavelengths.
    pub fn nwave(&self) -> usize {
        self.wave.len()
    }
}

/// Sky-like emission lines (Angstrom) shared by every fiber (a few bright OH/O I lines in b, r, z).
const SKY_LINES: [f64; 12] = [
    5577.34, 5889.95, 6300.30, 6363.78, 6863.96, 7276.41, 7340.89, 7794.11, 8344.60, 8827.10,
    8885.85, 9375.98,
];

/// The built-in mix: every fiber has a smooth continuum (a few hundred to ~2000 photons per
/// bin, varying slowly with wavelength and from fiber to fiber), emission lines at
/// fiber-dependent redshifted wavelengths, and sky-like lines common to all fibers.
/// Deterministic (no randomness).
pub fn builtin_spectra(specmin: usize, nspec: usize, wave: &[f64]) -> Spectra {
    let nwave = wave.len();
    let mut flux = vec![0.0; nspec * nwave];
    let (w0, w1) = match (wave.first(), wave.last()) {
        (Some(&a), Some(&b)) if b > a => (a, b),
        _ => (0.0, 1.0),
    };
    let dw = if nwave > 1 {
        (w1 - w0) / (nwave - 1) as f64
    } else {
        1.0
    };
    for s in 0..nspec {
        let fiber = (specmin + s) as f64;
        let amp = 600.0 + 400.0 * (0.37 * fiber).sin().abs();
        let z = 0.002 * (fiber % 17.0);
        for (k, &w) in wave.iter().enumerate() {
            let t = (w - w0) / (w1 - w0);
            let continuum = amp * (1.0 + 0.5 * t) + 150.0 * (w / 37.0 + fiber).sin();
            let mut value = continuum.max(50.0);
            // Emission lines (Hα, [N II], [S II] rest wavelengths scaled to sit in any camera).
            for (line, strength) in [
                (6562.8, 4000.0),
                (6583.4, 1200.0),
                (6716.4, 900.0),
                (4861.3, 2500.0),
                (9069.0, 1500.0),
            ] {
                value += gaussian_line(w, line * (1.0 + z), 1.2, strength, dw);
            }
            for &line in SKY_LINES.iter() {
                value += gaussian_line(w, line, 0.9, 3000.0, dw);
            }
            flux[s * nwave + k] = value;
        }
    }
    Spectra {
        specmin,
        nspec,
        wave: wave.to_vec(),
        flux,
    }
}

/// Photons per bin of width `dw` from a Gaussian line of total `photons`.
fn gaussian_line(w: f64, center: f64, sigma: f64, photons: f64, dw: f64) -> f64 {
    let u = (w - center) / sigma;
    if u.abs() > 8.0 {
        return 0.0;
    }
    photons * dw * (-0.5 * u * u).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt())
}
