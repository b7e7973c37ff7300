//! Pixel-integrated Gauss-Hermite PSF spots (spec section 2). STUB: to be implemented.

use crate::Status;

/// Largest supported Hermite degree along either axis (GHDEGX, GHDEGY).
pub const MAX_GH_DEGREE: usize = 8;
/// Largest supported stamp half size (HSIZEX, HSIZEY).
pub const MAX_HALF_SIZE: usize = 12;

/// Stamp size and Hermite degrees shared by all spots of a PSF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpotGeometry {
    /// Half stamp width (HSIZEX); stamps have `2*hsizex+1` columns.
    pub hsizex: usize,
    /// Half stamp height (HSIZEY); stamps have `2*hsizey+1` rows.
    pub hsizey: usize,
    /// Hermite degree along x (GHDEGX).
    pub ghdegx: usize,
    /// Hermite degree along y (GHDEGY).
    pub ghdegy: usize,
}

/// First column and row of a stamp on the CCD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StampCorner {
    /// First column: floor(X - HSIZEX + 0.5).
    pub xc: i32,
    /// First row: floor(Y - HSIZEY + 0.5).
    pub yc: i32,
}

/// Legendre coefficient tables of a whole PSF, flattened for the device.
#[derive(Clone, Copy, Debug)]
pub struct PsfTables<'a> {
    /// Stamp geometry.
    pub geometry: SpotGeometry,
    /// Number of fibers in every table.
    pub nspec: usize,
    /// X trace coefficients, shape `(nspec, ntrace)`.
    pub xtrace: &'a [f64],
    /// Y trace coefficients, shape `(nspec, ntrace)`.
    pub ytrace: &'a [f64],
    /// Coefficients per fiber of the traces (degree + 1).
    pub ntrace: usize,
    /// WAVEMIN, WAVEMAX of XTRACE.
    pub xtrace_domain: (f64, f64),
    /// WAVEMIN, WAVEMAX of YTRACE.
    pub ytrace_domain: (f64, f64),
    /// PSF parameters, shape `(2 + (ghdegx+1)*(ghdegy+1), nspec, legdeg+1)`: GHSIGX, GHSIGY,
    /// then GH-i-j at `2 + j*(ghdegx+1) + i`.
    pub params: &'a [f64],
    /// LEGDEG + 1.
    pub nparam_coeff: usize,
    /// WAVEMIN, WAVEMAX of the PSF HDU.
    pub param_domain: (f64, f64),
}
