//! Pixel-integrated Gauss-Hermite PSF spots (docs/algorithm.md §2).
//!
//! A spot is the image of one (fiber, wavelength) on the CCD: a `(2·HSIZEY+1, 2·HSIZEX+1)`
//! stamp (row-major, rows = y) whose first column/row is the [`StampCorner`]. Pixel
//! `(iy, ix)` of the stamp is
//!
//! `S[iy][ix] = Σ_i Σ_j c_ij · Gy[j][iy] · Gx[i][ix]`, clipped at 0 and normalized to sum 1,
//!
//! where `Gx[i][m] = ∫ He_i(u)·φ(u) du` over pixel `m` in units of `u = (x − X)/σx`
//! ([`pixel_integrated_gh`]), `He_i` are the probabilists' Hermite polynomials and
//! `φ(u) = e^(−u²/2)/√(2π)`; `c_ij` = GH-i-j, `σx` = GHSIGX, `σy` = GHSIGY. These spots are the
//! columns of the projection matrix `A` of Bolton & Schlegel (2010), eq. (1): `p = A·f + n`.
//!
//! [`psf_point`] evaluates the Legendre tables of a PSF at one (fiber, wavelength),
//! [`evaluate_spot`] turns the result into a stamp, and [`spot_at`] does both. Everything is
//! allocation-free and panic-free: scratch lives on the stack, bounded by [`MAX_GH_DEGREE`]
//! and [`MAX_HALF_SIZE`]; bad sizes come back as a [`Status`].

use crate::math::{erf, exp, floor};
#[cfg(not(target_arch = "nvptx64"))]
use crate::psf::legendre::legendre_basis;
use crate::psf::legendre::{legendre_sum, legval, legval_lanes, normalized_wavelength};

/// Legendre degrees + 1 of the PSF parameters up to which [`psf_point`] computes their basis
/// once on the host (specex writes LEGDEG 8-10); longer series use `legendre_sum` per parameter.
#[cfg(not(target_arch = "nvptx64"))]
const MAX_HOST_LEGENDRE: usize = 32;
use crate::Status;

/// Largest supported Hermite degree along either axis (GHDEGX, GHDEGY).
pub const MAX_GH_DEGREE: usize = 8;
/// Largest supported stamp half size (HSIZEX, HSIZEY).
pub const MAX_HALF_SIZE: usize = 12;
/// Largest supported stamp width or height, `2·MAX_HALF_SIZE + 1`.
pub const MAX_STAMP_WIDTH: usize = 2 * MAX_HALF_SIZE + 1;
/// Largest supported number of Gauss-Hermite coefficients, `(MAX_GH_DEGREE + 1)²`.
pub const MAX_GH_COEFFS: usize = (MAX_GH_DEGREE + 1) * (MAX_GH_DEGREE + 1);

/// `√2`, correctly rounded.
const SQRT_2: f64 = core::f64::consts::SQRT_2;
/// `√(2π)` as numpy's `np.sqrt(2*np.pi)` (= 2.5066282746310002).
const SQRT_2PI: f64 = 2.506_628_274_631_000_2;

/// Stamp size and Hermite degrees shared by all spots of a PSF (`#[repr(C)]`: part of the
/// spot kernels' argument struct, [`crate::kernels::PsfTablesArgs`]).
#[repr(C)]
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

impl SpotGeometry {
    /// Stamp width `nx = 2·HSIZEX + 1` (columns).
    pub const fn nx(&self) -> usize {
        2 * self.hsizex + 1
    }

    /// Stamp height `ny = 2·HSIZEY + 1` (rows).
    pub const fn ny(&self) -> usize {
        2 * self.hsizey + 1
    }

    /// Number of stamp pixels, `ny·nx`.
    pub const fn stamp_len(&self) -> usize {
        self.ny() * self.nx()
    }

    /// Number of Gauss-Hermite coefficients, `(GHDEGX + 1)·(GHDEGY + 1)`.
    pub const fn ngh(&self) -> usize {
        (self.ghdegx + 1) * (self.ghdegy + 1)
    }

    /// `Err(Status::TooLarge)` when a half size exceeds [`MAX_HALF_SIZE`] or a degree exceeds
    /// [`MAX_GH_DEGREE`] (the capacities of the stack scratch arrays).
    pub const fn check(&self) -> Result<(), Status> {
        if self.hsizex > MAX_HALF_SIZE
            || self.hsizey > MAX_HALF_SIZE
            || self.ghdegx > MAX_GH_DEGREE
            || self.ghdegy > MAX_GH_DEGREE
        {
            Err(Status::TooLarge)
        } else {
            Ok(())
        }
    }
}

/// First column and row of a stamp on the CCD.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StampCorner {
    /// First column: floor(X - HSIZEX + 0.5).
    pub xc: i32,
    /// First row: floor(Y - HSIZEY + 0.5).
    pub yc: i32,
}

/// The PSF parameters of one (fiber, wavelength) that place and shape its spot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PsfPoint {
    /// Trace position X (CCD column, pixel centres at integers).
    pub x: f64,
    /// Trace position Y (CCD row, pixel centres at integers).
    pub y: f64,
    /// Gauss-Hermite width along x, GHSIGX (pixels).
    pub sigma_x: f64,
    /// Gauss-Hermite width along y, GHSIGY (pixels).
    pub sigma_y: f64,
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

/// `Some(a·b)` unless it overflows.
#[inline(always)]
pub(crate) fn mul(a: usize, b: usize) -> Option<usize> {
    a.checked_mul(b)
}

/// Coefficients `[start, start + len)` of a flat table, or `BadShape` if out of range.
#[inline(always)]
pub(crate) fn coeff_row(table: &[f64], start: usize, len: usize) -> Result<&[f64], Status> {
    let end = start.checked_add(len).ok_or(Status::BadShape)?;
    table.get(start..end).ok_or(Status::BadShape)
}

/// The shape checks of [`psf_point`]: a valid geometry, `ispec < nspec`, non-empty traces and
/// coefficient rows, and every table as long as its stated shape (`TooLarge` / `BadShape`).
pub(crate) fn check_tables(tables: &PsfTables, ispec: usize) -> Result<(), Status> {
    let geometry = tables.geometry;
    geometry.check()?;
    let (nspec, ntrace, ncoeff) = (tables.nspec, tables.ntrace, tables.nparam_coeff);
    let trace_len = mul(nspec, ntrace).ok_or(Status::BadShape)?;
    let param_len = mul(2 + geometry.ngh(), nspec)
        .and_then(|n| mul(n, ncoeff))
        .ok_or(Status::BadShape)?;
    if ispec >= nspec
        || ntrace == 0
        || ncoeff == 0
        || tables.xtrace.len() != trace_len
        || tables.ytrace.len() != trace_len
        || tables.params.len() != param_len
    {
        return Err(Status::BadShape);
    }
    Ok(())
}

/// Evaluates the trace position and Gauss-Hermite parameters of fiber `ispec` at `wave` (Å)
/// (docs/algorithm.md §1.1).
///
/// - X = `legval(ww_x, xtrace[ispec])` with `ww_x` on the XTRACE domain, Y likewise on the
///   YTRACE domain (Clenshaw, numpy `legval`).
/// - GHSIGX, GHSIGY and every GH-i-j = `legendre_sum(ww_p, params[p][ispec])` on the PSF-HDU
///   domain with all `nparam_coeff` = LEGDEG+1 coefficients (numpy `legvander @ coeff`).
///
/// # Parameters
/// - `tables`: the PSF tables; shapes as documented on [`PsfTables`].
/// - `ispec`: fiber index relative to FIBERMIN, `< tables.nspec`.
/// - `gh` (output): shape `(ghdegy+1, ghdegx+1)` row-major, GH-i-j at `j·(ghdegx+1) + i`.
///
/// # Errors
/// `TooLarge` if the geometry exceeds the scratch capacities; `BadShape` if `ispec` is out of
/// range, a table length disagrees with its stated shape, `ntrace` or `nparam_coeff` is 0, or
/// `gh.len() != (ghdegx+1)·(ghdegy+1)`; `NonFinite` if any evaluated value is NaN or infinite.
pub fn psf_point(
    tables: &PsfTables,
    ispec: usize,
    wave: f64,
    gh: &mut [f64],
) -> Result<PsfPoint, Status> {
    check_tables(tables, ispec)?;
    let geometry = tables.geometry;
    let ngh = geometry.ngh();
    let (nspec, ntrace, ncoeff) = (tables.nspec, tables.ntrace, tables.nparam_coeff);
    if gh.len() != ngh {
        return Err(Status::BadShape);
    }

    let ww_x = normalized_wavelength(wave, tables.xtrace_domain.0, tables.xtrace_domain.1);
    let ww_y = normalized_wavelength(wave, tables.ytrace_domain.0, tables.ytrace_domain.1);
    let ww_p = normalized_wavelength(wave, tables.param_domain.0, tables.param_domain.1);

    let x = legval(ww_x, coeff_row(tables.xtrace, ispec * ntrace, ntrace)?);
    let y = legval(ww_y, coeff_row(tables.ytrace, ispec * ntrace, ntrace)?);
    // On the host the Legendre basis at ww_p is computed once for every parameter (the
    // recurrence of legendre_sum, one division per degree, would run ngh + 2 times) and dotted
    // in index order: bitwise legendre_sum.
    #[cfg(not(target_arch = "nvptx64"))]
    let mut basis_buf = [0.0f64; MAX_HOST_LEGENDRE];
    #[cfg(not(target_arch = "nvptx64"))]
    let basis = match basis_buf.get_mut(..ncoeff) {
        Some(basis) => {
            legendre_basis(ww_p, basis);
            Some(&*basis)
        }
        None => None,
    };
    // Parameter p of fiber ispec starts at (p·nspec + ispec)·ncoeff.
    let param = |p: usize| -> Result<f64, Status> {
        let row = coeff_row(tables.params, (p * nspec + ispec) * ncoeff, ncoeff)?;
        #[cfg(not(target_arch = "nvptx64"))]
        if let Some(basis) = basis {
            let mut sum = 0.0;
            for (&b, &c) in basis.iter().zip(row) {
                sum += b * c;
            }
            return Ok(sum);
        }
        Ok(legendre_sum(ww_p, row))
    };
    let sigma_x = param(0)?;
    let sigma_y = param(1)?;
    let mut all_finite =
        x.is_finite() && y.is_finite() && sigma_x.is_finite() && sigma_y.is_finite();
    for (k, slot) in gh.iter_mut().enumerate() {
        let value = param(2 + k)?;
        all_finite &= value.is_finite();
        *slot = value;
    }
    if !all_finite {
        return Err(Status::NonFinite);
    }
    Ok(PsfPoint {
        x,
        y,
        sigma_x,
        sigma_y,
    })
}

/// One-dimensional pixel-integrated Gauss-Hermite basis (docs/algorithm.md §2, steps 3-4).
///
/// For the `n = 2·half_size + 1` pixels of a stamp row, with normalized pixel edges
/// `u_m = (m − half_size − 0.5 − delta)/sigma`, `m = 0..=n`, fills
///
/// - `out[0][m] = ½·(erf(u_{m+1}/√2) − erf(u_m/√2))`,
/// - `out[i][m] = He_{i−1}(u_m)·φ(u_m) − He_{i−1}(u_{m+1})·φ(u_{m+1})` for `i = 1..=degree`,
///
/// i.e. `∫ He_i(u)·φ(u) du` over pixel `m` in `u` units (no `1/σ` Jacobian; it cancels on
/// normalization). `delta ∈ [−0.5, 0.5)` is the sub-pixel offset of the spot centre from the
/// centre of pixel `half_size`.
///
/// # Parameters
/// - `out`: shape `(degree + 1, 2·half_size + 1)` row-major (pixel index fastest).
///
/// # Errors
/// `TooLarge` if `degree > MAX_GH_DEGREE` or `half_size > MAX_HALF_SIZE`; `BadShape` if
/// `out.len() != (degree + 1)·(2·half_size + 1)`.
pub fn pixel_integrated_gh(
    delta: f64,
    sigma: f64,
    half_size: usize,
    degree: usize,
    out: &mut [f64],
) -> Result<(), Status> {
    if degree > MAX_GH_DEGREE || half_size > MAX_HALF_SIZE {
        return Err(Status::TooLarge);
    }
    let n = 2 * half_size + 1;
    if out.len() != (degree + 1) * n {
        return Err(Status::BadShape);
    }
    // On the host the edges' Gaussians and Hermite terms run as vectorized passes (bitwise
    // the same values; `n <= MAX_STAMP_WIDTH` holds after the checks above).
    #[cfg(not(target_arch = "nvptx64"))]
    if n <= MAX_STAMP_WIDTH {
        pixel_integrated_gh_host(delta, sigma, half_size, degree, out);
        return Ok(());
    }
    let mut prev = [0.0f64; MAX_GH_DEGREE + 1];
    for m in 0..=n {
        let mut cur = [0.0f64; MAX_GH_DEGREE + 1];
        gh_edge(edge_u(m, half_size, delta, sigma), degree, &mut cur);
        if m > 0 {
            // Pixel m−1 lies between edges m−1 (prev) and m (cur).
            let edges = prev.iter().zip(cur.iter());
            for (i, (row, (&lo, &hi))) in out.chunks_exact_mut(n).zip(edges).enumerate() {
                let value = if i == 0 { 0.5 * (hi - lo) } else { lo - hi };
                if let Some(slot) = row.get_mut(m - 1) {
                    *slot = value;
                }
            }
        }
        prev = cur;
    }
    Ok(())
}

/// [`pixel_integrated_gh`] on the host (shape already checked: `degree <= MAX_GH_DEGREE`,
/// `half_size <= MAX_HALF_SIZE`, `out` of `(degree + 1)·(2·half_size + 1)` values): the
/// `erf` of every pixel edge, their Gaussians in one vectorized pass
/// ([`crate::math::exp_in_place`], bitwise `exp`), then [`gh_edge`]'s Hermite recurrence and
/// the differences, each over all edges at once: bitwise [`pixel_integrated_gh`]'s values.
#[cfg(not(target_arch = "nvptx64"))]
fn pixel_integrated_gh_host(
    delta: f64,
    sigma: f64,
    half_size: usize,
    degree: usize,
    out: &mut [f64],
) {
    use crate::math::exp_in_place;
    const EDGES: usize = MAX_STAMP_WIDTH + 1;
    let n = 2 * half_size + 1;
    let mut erf_buf = [0.0f64; EDGES];
    let mut phi_buf = [0.0f64; EDGES];
    let (Some(erfs), Some(phis)) = (erf_buf.get_mut(..=n), phi_buf.get_mut(..=n)) else {
        return;
    };
    for (m, (e, p)) in erfs.iter_mut().zip(phis.iter_mut()).enumerate() {
        let u = edge_u(m, half_size, delta, sigma);
        *e = u / SQRT_2;
        *p = -0.5 * u * u;
    }
    for e in erfs.iter_mut() {
        *e = erf(*e);
    }
    // Row i of `edge` holds the edges' values of degree i: erf(u/√2) for i = 0,
    // He_{i−1}(u)·φ(u) above (gh_edge's recurrence, run for all edges at once).
    let mut edge = [[0.0f64; EDGES]; MAX_GH_DEGREE + 1];
    edge[0][..=n].copy_from_slice(erfs);
    if degree >= 1 {
        exp_in_place(phis);
        let mut u_buf = [0.0f64; EDGES];
        let us = &mut u_buf[..=n];
        for (m, (u, p)) in us.iter_mut().zip(phis.iter_mut()).enumerate() {
            *u = edge_u(m, half_size, delta, sigma);
            *p /= SQRT_2PI;
        }
        // He_0 = 1, He_1 = u, He_k = u·He_{k−1} − (k−1)·He_{k−2}: rows of He values.
        let mut he_prev = [0.0f64; EDGES]; // He_{k−2}
        let mut he_cur = [1.0f64; EDGES]; // He_{k−1}
        for k in 0..degree {
            let mut he = [0.0f64; EDGES];
            for m in 0..=n {
                he[m] = match k {
                    0 => 1.0,
                    1 => us[m],
                    _ => he_cur[m] * us[m] - he_prev[m] * ((k - 1) as f64),
                };
            }
            for (slot, (&h, &phi)) in edge[k + 1][..=n].iter_mut().zip(he.iter().zip(phis.iter())) {
                *slot = h * phi;
            }
            if k > 0 {
                he_prev = he_cur;
            }
            he_cur = he;
        }
    }
    // Pixel m lies between edges m and m + 1.
    for (i, (row, e)) in out.chunks_exact_mut(n).zip(edge.iter()).enumerate() {
        let (lo, hi) = (&e[..n], &e[1..=n]);
        if i == 0 {
            for (slot, (&lo, &hi)) in row.iter_mut().zip(lo.iter().zip(hi)) {
                *slot = 0.5 * (hi - lo);
            }
        } else {
            for (slot, (&lo, &hi)) in row.iter_mut().zip(lo.iter().zip(hi)) {
                *slot = lo - hi;
            }
        }
    }
}

/// The normalized position `u_m = (m − half_size − 0.5 − delta)/sigma` of pixel edge `m` (see
/// [`pixel_integrated_gh`]).
#[inline(always)]
pub(crate) fn edge_u(m: usize, half_size: usize, delta: f64, sigma: f64) -> f64 {
    (m as f64 - half_size as f64 - 0.5 - delta) / sigma
}

/// The values of [`pixel_integrated_gh`] at one pixel edge `u`: `edge[0] = erf(u/√2)`,
/// `edge[i] = He_{i−1}(u)·φ(u)` for `i = 1..=degree` (`degree <= MAX_GH_DEGREE`; the other
/// entries are left as they are). Pixel `m` is then `½·(edge_{m+1}[0] − edge_m[0])` for
/// `i = 0` and `edge_m[i] − edge_{m+1}[i]` above.
#[inline(always)]
pub(crate) fn gh_edge(u: f64, degree: usize, edge: &mut [f64; MAX_GH_DEGREE + 1]) {
    edge[0] = erf(u / SQRT_2);
    if degree >= 1 {
        let phi = exp(-0.5 * u * u) / SQRT_2PI;
        // He_k(u), k = 0..degree−1, by He_k = u·He_{k−1} − (k−1)·He_{k−2} (hermevander order).
        let mut he_prev = 0.0; // He_{k−2}
        let mut he_cur = 1.0; // He_{k−1}
        for (k, slot) in edge.iter_mut().skip(1).take(degree).enumerate() {
            let he = match k {
                0 => 1.0,
                1 => u,
                _ => he_cur * u - he_prev * ((k - 1) as f64),
            };
            *slot = he * phi;
            if k > 0 {
                he_prev = he_cur;
            }
            he_cur = he;
        }
    }
}

/// Stamp corner `floor(coord − half_size + 0.5)` as an `i32`, or `TooLarge` out of range.
#[inline(always)]
pub(crate) fn corner(coord: f64, half_size: usize) -> Result<i32, Status> {
    let c = floor(coord - half_size as f64 + 0.5);
    if c >= i32::MIN as f64 && c <= i32::MAX as f64 {
        Ok(c as i32)
    } else {
        Err(Status::TooLarge)
    }
}

/// Evaluates one clipped, normalized Gauss-Hermite spot stamp (docs/algorithm.md §2).
///
/// 1. Corner `xc = floor(X − HSIZEX + 0.5)`, `yc = floor(Y − HSIZEY + 0.5)`.
/// 2. Sub-pixel offsets `δx = X − floor(X + 0.5)`, `δy = Y − floor(Y + 0.5)` (in `[−0.5, 0.5)`).
/// 3. 1-D bases `Gx` (`(ghdegx+1, nx)`) and `Gy` (`(ghdegy+1, ny)`) by [`pixel_integrated_gh`].
/// 4. `S[iy][ix] = Σ_j Gy[j][iy] · (Σ_i c_ij · Gx[i][ix])`.
/// 5. `S ← max(S, 0)`, then `S ← S/ΣS` (the stamp sums to 1), `ΣS` summed row by row (each
///    row's elements in column order from 0, then the rows' sums in row order from 0), an order
///    the GPU's team kernels share with a short serial chain (device/src/psf/spot_team.rs).
///
/// The power-law tail of specter (docs/algorithm.md §2, step 7) is not included (gpu_specter
/// parity).
///
/// # Parameters
/// - `geometry`: HSIZEX, HSIZEY, GHDEGX, GHDEGY.
/// - `x`, `y`: spot centre on the CCD (pixel centres at integers).
/// - `sigma_x`, `sigma_y`: GHSIGX, GHSIGY in pixels, finite and `> 0`.
/// - `gh`: GH-i-j coefficients, shape `(ghdegy+1, ghdegx+1)` row-major: `c_ij` at
///   `j·(ghdegx+1) + i`.
/// - `stamp` (output): shape `(2·hsizey+1, 2·hsizex+1)` row-major (rows = y, columns = x).
///
/// # Errors
/// `TooLarge` if the geometry exceeds [`MAX_HALF_SIZE`]/[`MAX_GH_DEGREE`] or a corner does not
/// fit in `i32`; `BadShape` if `gh` or `stamp` has the wrong length; `NonFinite` if X, Y or a
/// σ is not finite, a σ is not positive, or the clipped stamp sums to 0 or a non-finite value
/// (the stamp contents are then unspecified).
pub fn evaluate_spot(
    geometry: &SpotGeometry,
    x: f64,
    y: f64,
    sigma_x: f64,
    sigma_y: f64,
    gh: &[f64],
    stamp: &mut [f64],
) -> Result<StampCorner, Status> {
    geometry.check()?;
    let nx = geometry.nx();
    let ny = geometry.ny();
    let ndegx = geometry.ghdegx + 1;
    let ndegy = geometry.ghdegy + 1;
    if gh.len() != geometry.ngh() || stamp.len() != geometry.stamp_len() {
        return Err(Status::BadShape);
    }
    let positive_finite = |s: f64| s.is_finite() && s > 0.0;
    if !(x.is_finite() && y.is_finite() && positive_finite(sigma_x) && positive_finite(sigma_y)) {
        return Err(Status::NonFinite);
    }
    let xc = corner(x, geometry.hsizex)?;
    let yc = corner(y, geometry.hsizey)?;
    let delta_x = x - floor(x + 0.5);
    let delta_y = y - floor(y + 0.5);

    let mut gx_buf = [0.0f64; (MAX_GH_DEGREE + 1) * MAX_STAMP_WIDTH];
    let mut gy_buf = [0.0f64; (MAX_GH_DEGREE + 1) * MAX_STAMP_WIDTH];
    let gx = gx_buf.get_mut(..ndegx * nx).ok_or(Status::TooLarge)?;
    let gy = gy_buf.get_mut(..ndegy * ny).ok_or(Status::TooLarge)?;
    pixel_integrated_gh(delta_x, sigma_x, geometry.hsizex, geometry.ghdegx, gx)?;
    pixel_integrated_gh(delta_y, sigma_y, geometry.hsizey, geometry.ghdegy, gy)?;

    // Hx[j][ix] = Σ_i c_ij·Gx[i][ix], then S[iy][ix] = Σ_j Gy[j][iy]·Hx[j][ix], each stamp
    // element summed in registers and written once (the stamp may be GPU global memory:
    // accumulating into it term by term multiplied its memory traffic), clipped at 0 (NaN
    // propagates into the sum); the sums run in the order i = 0, 1, ... and j = 0, 1, ... .
    // On the host, stamps at most 12, 16 or 20 columns wide (DESI's PSFs: 17) run both sums
    // on zero-padded rows in whole 4-wide vectors (`stamp_sums_padded`, bitwise the same
    // stamp and total); wider ones take the general loops below.
    let bases = StampBases {
        gx,
        gy,
        gh,
        ndegx,
        ndegy,
        nx,
        ny,
    };
    #[cfg(not(target_arch = "nvptx64"))]
    let padded = if nx <= 12 {
        stamp_sums_padded::<12>(&bases, stamp)
    } else if nx <= 16 {
        stamp_sums_padded::<16>(&bases, stamp)
    } else if nx <= 20 {
        stamp_sums_padded::<20>(&bases, stamp)
    } else {
        None
    };
    #[cfg(target_arch = "nvptx64")]
    let padded: Option<f64> = None;
    let total = match padded {
        Some(total) => total,
        None => stamp_sums(&bases, stamp)?,
    };
    if !(total.is_finite() && total > 0.0) {
        return Err(Status::NonFinite);
    }
    for s in stamp.iter_mut() {
        *s /= total;
    }
    Ok(StampCorner { xc, yc })
}

/// The 1-D bases of one spot and its coefficients, as [`evaluate_spot`] builds them: `gx`
/// `(ndegx, nx)` and `gy` `(ndegy, ny)` row-major, `gh` `(ndegy, ndegx)` (`c_ij` at
/// `j·ndegx + i`).
#[derive(Clone, Copy)]
struct StampBases<'a> {
    gx: &'a [f64],
    gy: &'a [f64],
    gh: &'a [f64],
    ndegx: usize,
    ndegy: usize,
    nx: usize,
    ny: usize,
}

/// Steps 4-5 of [`evaluate_spot`] (the stamp before normalization and its total), for any
/// stamp width: `Hx[j] = Σ_i c_ij·Gx[i]`, then every element `Σ_j Gy[j][iy]·Hx[j][ix]`
/// clipped at 0. On the host the rows run j outside and the columns inside (vectors, each
/// element's terms still added in the order j = 0, 1, ...: bitwise the same stamp); the GPU
/// keeps one element at a time in a register.
#[inline(always)]
fn stamp_sums(bases: &StampBases, stamp: &mut [f64]) -> Result<f64, Status> {
    let (gx, gy, gh) = (bases.gx, bases.gy, bases.gh);
    let (ndegx, ndegy, nx, ny) = (bases.ndegx, bases.ndegy, bases.nx, bases.ny);
    let mut hx_buf = [0.0f64; (MAX_GH_DEGREE + 1) * MAX_STAMP_WIDTH];
    let hx = hx_buf.get_mut(..ndegy * nx).ok_or(Status::TooLarge)?;
    for (gh_j, hx_j) in gh.chunks_exact(ndegx).zip(hx.chunks_exact_mut(nx)) {
        for (&c_ij, gx_i) in gh_j.iter().zip(gx.chunks_exact(nx)) {
            for (h, &g) in hx_j.iter_mut().zip(gx_i) {
                *h += c_ij * g;
            }
        }
    }
    let mut total = 0.0;
    #[cfg(not(target_arch = "nvptx64"))]
    for (iy, stamp_row) in stamp.chunks_exact_mut(nx).enumerate() {
        stamp_row.fill(0.0);
        for (gy_j, hx_j) in gy.chunks_exact(ny).zip(hx.chunks_exact(nx)) {
            // In range by construction (iy < ny); NaN would flag a logic error.
            let g = gy_j.get(iy).copied().unwrap_or(f64::NAN);
            for (out, &h) in stamp_row.iter_mut().zip(hx_j) {
                *out += g * h;
            }
        }
        let mut row_total = 0.0;
        for out in stamp_row.iter_mut() {
            if *out < 0.0 {
                *out = 0.0;
            }
            row_total += *out;
        }
        total += row_total;
    }
    #[cfg(target_arch = "nvptx64")]
    for (iy, stamp_row) in stamp.chunks_exact_mut(nx).enumerate() {
        let mut row_total = 0.0;
        for (ix, out) in stamp_row.iter_mut().enumerate() {
            let mut s = 0.0;
            for (gy_j, hx_j) in gy.chunks_exact(ny).zip(hx.chunks_exact(nx)) {
                // In range by construction (iy < ny, ix < nx); NaN would flag a logic error.
                let g = gy_j.get(iy).copied().unwrap_or(f64::NAN);
                s += g * hx_j.get(ix).copied().unwrap_or(f64::NAN);
            }
            if s < 0.0 {
                s = 0.0;
            }
            row_total += s;
            *out = s;
        }
        total += row_total;
    }
    Ok(total)
}

/// Steps 4-5 of [`evaluate_spot`] on the host for stamps at most `W` columns wide, on
/// zero-padded rows of `W` columns (whole 4-wide vectors, no remainder loops):
/// `Hx[j] = Σ_i c_ij·Gx[i]`, then each stamp row `S[iy] = Σ_j Gy[j][iy]·Hx[j]`, every element's
/// terms added from 0 in the order `i` (`j`) = 0, 1, ... as the general loops add them,
/// clipped at 0 and summed into the returned total ([`evaluate_spot`]'s order: each row, then
/// the rows' sums): bitwise the stamp and total of the general loops (the padding columns are
/// computed and dropped). `None` (nothing written) if `nx > W` or a slice is short.
#[cfg(not(target_arch = "nvptx64"))]
#[inline(always)]
fn stamp_sums_padded<const W: usize>(bases: &StampBases, stamp: &mut [f64]) -> Option<f64> {
    let (gx, gy, gh) = (bases.gx, bases.gy, bases.gh);
    let (ndegx, ndegy, nx, ny) = (bases.ndegx, bases.ndegy, bases.nx, bases.ny);
    if nx > W || nx == 0 || ndegx > MAX_GH_DEGREE + 1 || ndegy > MAX_GH_DEGREE + 1 {
        return None;
    }
    if gx.len() < ndegx * nx || gy.len() < ndegy * ny || gh.len() < ndegx * ndegy {
        return None;
    }
    if stamp.len() < ny * nx {
        return None;
    }
    let mut gx_pad = [[0.0f64; W]; MAX_GH_DEGREE + 1];
    for (dst, src) in gx_pad.iter_mut().zip(gx.chunks_exact(nx)).take(ndegx) {
        dst[..nx].copy_from_slice(src);
    }
    let mut hx_pad = [[0.0f64; W]; MAX_GH_DEGREE + 1];
    for (hx_j, gh_j) in hx_pad.iter_mut().zip(gh.chunks_exact(ndegx)).take(ndegy) {
        for (&c_ij, gx_i) in gh_j.iter().zip(&gx_pad) {
            for (h, &g) in hx_j.iter_mut().zip(gx_i) {
                *h += c_ij * g;
            }
        }
    }
    let hx_pad = &hx_pad[..ndegy];
    let mut total = 0.0;
    for (iy, stamp_row) in stamp.chunks_exact_mut(nx).take(ny).enumerate() {
        let mut row = [0.0f64; W];
        for (j, h) in hx_pad.iter().enumerate() {
            let g = gy[j * ny + iy];
            for (out, &h) in row.iter_mut().zip(h) {
                *out += g * h;
            }
        }
        let mut row_total = 0.0;
        for (out, &v) in stamp_row.iter_mut().zip(&row) {
            let v = if v < 0.0 { 0.0 } else { v };
            row_total += v;
            *out = v;
        }
        total += row_total;
    }
    Some(total)
}

/// The stamp corner of fiber `ispec` at `wave` (Å) exactly as [`spot_at`] places it, from the
/// traces alone (no Gauss-Hermite parameters, no stamp): lets the host plan the patches while
/// the GPU evaluates the stamps. Same X and Y evaluation as [`psf_point`], same rounding as
/// [`evaluate_spot`].
///
/// # Errors
/// `BadShape` if `ispec` is out of range or a trace table disagrees with its shape; `NonFinite`
/// if X or Y is not finite; `TooLarge` for a corner outside `i32` or a bad geometry.
pub fn spot_corner(tables: &PsfTables, ispec: usize, wave: f64) -> Result<StampCorner, Status> {
    let (xrow, yrow) = trace_rows(tables, ispec)?;
    let ww_x = normalized_wavelength(wave, tables.xtrace_domain.0, tables.xtrace_domain.1);
    let ww_y = normalized_wavelength(wave, tables.ytrace_domain.0, tables.ytrace_domain.1);
    place_corner(&tables.geometry, legval(ww_x, xrow), legval(ww_y, yrow))
}

/// The X and Y trace coefficients of fiber `ispec` after [`spot_corner`]'s shape checks (a
/// valid geometry, `ispec < nspec`, non-empty traces as long as their stated shape).
fn trace_rows<'t>(tables: &PsfTables<'t>, ispec: usize) -> Result<(&'t [f64], &'t [f64]), Status> {
    tables.geometry.check()?;
    let ntrace = tables.ntrace;
    let trace_len = mul(tables.nspec, ntrace).ok_or(Status::BadShape)?;
    if ispec >= tables.nspec
        || ntrace == 0
        || tables.xtrace.len() != trace_len
        || tables.ytrace.len() != trace_len
    {
        return Err(Status::BadShape);
    }
    Ok((
        coeff_row(tables.xtrace, ispec * ntrace, ntrace)?,
        coeff_row(tables.ytrace, ispec * ntrace, ntrace)?,
    ))
}

/// The stamp corner of a spot centred at trace position `(x, y)`: `NonFinite` unless both are
/// finite, else [`corner`] of each.
fn place_corner(geometry: &SpotGeometry, x: f64, y: f64) -> Result<StampCorner, Status> {
    if !(x.is_finite() && y.is_finite()) {
        return Err(Status::NonFinite);
    }
    Ok(StampCorner {
        xc: corner(x, geometry.hsizex)?,
        yc: corner(y, geometry.hsizey)?,
    })
}

/// [`spot_corner`] of fiber `ispec` at every wavelength of `waves` into `out` (same length):
/// the traces evaluated [`CORNER_LANES`] wavelengths at a time ([`legval_lanes`]), bitwise
/// [`spot_corner`]'s corners.
///
/// # Errors
/// The first wavelength (index into `waves`) whose corner [`spot_corner`] refuses, with its
/// status; `BadShape` at index 0 if `out` and `waves` differ in length.
pub fn spot_corners(
    tables: &PsfTables,
    ispec: usize,
    waves: &[f64],
    out: &mut [StampCorner],
) -> Result<(), (usize, Status)> {
    if out.len() != waves.len() {
        return Err((0, Status::BadShape));
    }
    if waves.is_empty() {
        return Ok(());
    }
    // The shape checks once (they do not depend on the wavelength).
    let (xrow, yrow) = trace_rows(tables, ispec).map_err(|status| (0, status))?;
    let (xdom, ydom) = (tables.xtrace_domain, tables.ytrace_domain);
    let lanes = waves.chunks_exact(CORNER_LANES);
    let rest = lanes.remainder().len();
    for (i, (chunk, dst)) in lanes.zip(out.chunks_exact_mut(CORNER_LANES)).enumerate() {
        let wave: [f64; CORNER_LANES] = core::array::from_fn(|l| chunk[l]);
        let x = legval_lanes(wave.map(|w| normalized_wavelength(w, xdom.0, xdom.1)), xrow);
        let y = legval_lanes(wave.map(|w| normalized_wavelength(w, ydom.0, ydom.1)), yrow);
        for l in 0..CORNER_LANES {
            dst[l] = place_corner(&tables.geometry, x[l], y[l])
                .map_err(|status| (i * CORNER_LANES + l, status))?;
        }
    }
    let tail = waves.len() - rest;
    for (k, (&wave, dst)) in waves[tail..].iter().zip(&mut out[tail..]).enumerate() {
        *dst = spot_corner(tables, ispec, wave).map_err(|status| (tail + k, status))?;
    }
    Ok(())
}

/// Wavelengths per step of [`spot_corners`] (one AVX2 vector of f64).
pub const CORNER_LANES: usize = 4;

/// The spot of fiber `ispec` at wavelength `wave` (Å): [`psf_point`] then [`evaluate_spot`].
///
/// # Parameters
/// - `tables`: the PSF tables ([`PsfTables`]).
/// - `stamp` (output): shape `(2·hsizey+1, 2·hsizex+1)` row-major (rows = y).
///
/// # Errors
/// As [`psf_point`] and [`evaluate_spot`].
pub fn spot_at(
    tables: &PsfTables,
    ispec: usize,
    wave: f64,
    stamp: &mut [f64],
) -> Result<StampCorner, Status> {
    tables.geometry.check()?;
    let mut gh_buf = [0.0f64; MAX_GH_COEFFS];
    let gh = gh_buf
        .get_mut(..tables.geometry.ngh())
        .ok_or(Status::TooLarge)?;
    let point = psf_point(tables, ispec, wave, gh)?;
    evaluate_spot(
        &tables.geometry,
        point.x,
        point.y,
        point.sigma_x,
        point.sigma_y,
        gh,
        stamp,
    )
}
