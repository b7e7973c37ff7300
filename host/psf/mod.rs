//! The Gauss-Hermite PSF model (docs/algorithm.md §1.1 and §2): coefficient tables as read from a
//! specex PSF file, and their evaluation at (fiber, wavelength) through `desi_device`.

pub mod model;

pub use model::{FlatPsf, PsfError, SpotTable};

/// A Legendre-coefficient table of one quantity for every fiber, with its own domain.
///
/// `coeffs` has shape `(nfiber, ncoeff)`, coefficient index fastest.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LegendreTable {
    /// Lower end of the wavelength domain mapped to -1 (Angstrom; the HDU's WAVEMIN).
    pub wavemin: f64,
    /// Upper end of the wavelength domain mapped to +1 (Angstrom; the HDU's WAVEMAX).
    pub wavemax: f64,
    /// Number of coefficients per fiber (degree + 1).
    pub ncoeff: usize,
    /// Coefficients, shape `(nfiber, ncoeff)`.
    pub coeffs: Vec<f64>,
}

impl LegendreTable {
    /// Coefficients of one fiber (`ispec` relative to FIBERMIN).
    pub fn fiber(&self, ispec: usize) -> &[f64] {
        &self.coeffs[ispec * self.ncoeff..(ispec + 1) * self.ncoeff]
    }

    /// Number of fibers in the table.
    pub fn nfiber(&self) -> usize {
        self.coeffs.len().checked_div(self.ncoeff).unwrap_or(0)
    }
}

/// A GaussHermite PSF (PSFVER 3) as stored in a specex PSF file.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GaussHermitePsf {
    /// File the PSF was read from (for error messages).
    #[serde(with = "lossy_path")]
    pub path: std::path::PathBuf,
    /// X (column) trace, XTRACE HDU.
    pub xtrace: LegendreTable,
    /// Y (row) trace, YTRACE HDU.
    pub ytrace: LegendreTable,
    /// GHSIGX, PSF HDU domain.
    pub sigma_x: LegendreTable,
    /// GHSIGY, PSF HDU domain.
    pub sigma_y: LegendreTable,
    /// GH-i-j coefficient tables in file order: index `j * (ghdegx + 1) + i`
    /// (i = Hermite degree along x, fastest; j = degree along y).
    pub gh: Vec<LegendreTable>,
    /// Power-law tail parameters TAILAMP, TAILCORE, TAILXSCA, TAILYSCA, TAILINDE
    /// (None when absent from the file). Not used by default (GS parity).
    pub tail: Option<[LegendreTable; 5]>,
    /// Half stamp size along x (HSIZEX); stamps are `2*hsizex+1` columns wide.
    pub hsizex: usize,
    /// Half stamp size along y (HSIZEY); stamps are `2*hsizey+1` rows high.
    pub hsizey: usize,
    /// Maximum Hermite degree along x (GHDEGX).
    pub ghdegx: usize,
    /// Maximum Hermite degree along y (GHDEGY).
    pub ghdegy: usize,
    /// Legendre degree of the PSF parameters (LEGDEG); all LEGDEG+1 coefficients are used.
    pub legdeg: usize,
    /// CCD width in pixels (NPIX_X).
    pub npix_x: usize,
    /// CCD height in pixels (NPIX_Y).
    pub npix_y: usize,
    /// First fiber number (FIBERMIN); `ispec` is relative to it.
    pub fibermin: usize,
    /// Number of fibers.
    pub nspec: usize,
    /// PSF model error used by chi2pix (PSFERR keyword, default 0.01).
    pub psferr: f64,
    /// The PSF's IN_PSF keyword when present (passed to frame headers as ORIG_PSF).
    pub in_psf: Option<String>,
    /// The CAMERA keyword (PSF HDU, else primary), lower-cased, when present: a preproc of
    /// another camera is refused.
    #[serde(default)]
    pub camera: Option<String>,
}

impl GaussHermitePsf {
    /// A copy whose every Legendre domain is mapped by the linear map that takes this PSF's
    /// domain (the PSF HDU's WAVEMIN..WAVEMAX) onto `wavemin..wavemax`: the stand-in has the
    /// same traces and spot shapes at the mapped wavelengths. For tests of cameras whose real
    /// PSFs are not at hand (b/z from an r PSF); never a physical PSF.
    pub fn remapped(&self, wavemin: f64, wavemax: f64) -> GaussHermitePsf {
        let (lo, hi) = (self.sigma_x.wavemin, self.sigma_x.wavemax);
        let scale = (wavemax - wavemin) / (hi - lo);
        let map = |w: f64| wavemin + (w - lo) * scale;
        let remap = |t: &LegendreTable| LegendreTable {
            wavemin: map(t.wavemin),
            wavemax: map(t.wavemax),
            ..t.clone()
        };
        GaussHermitePsf {
            path: self.path.clone(),
            xtrace: remap(&self.xtrace),
            ytrace: remap(&self.ytrace),
            sigma_x: remap(&self.sigma_x),
            sigma_y: remap(&self.sigma_y),
            gh: self.gh.iter().map(remap).collect(),
            tail: self.tail.as_ref().map(|t| t.each_ref().map(remap)),
            ..self.clone()
        }
    }
}

/// Serializes a path as text, lossily where it is not UTF-8 (it only names the file in
/// messages), so that a PSF can always be sent to another rank.
mod lossy_path {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::path::{Path, PathBuf};

    pub fn serialize<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&path.to_string_lossy())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
        String::deserialize(deserializer).map(PathBuf::from)
    }
}
