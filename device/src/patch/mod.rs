//! Per-patch normal equations, resolution and pixel statistics (docs/algorithm.md §4.1-4.8,
//! Bolton & Schlegel 2010 eqs. 10-19), computed from spot stamps: the projection matrix A is
//! never formed.
//!
//! Unknowns of a patch are ordered **wavelength-major**: `q = k * nspecpad + s` for padded
//! spectrum `s` in `0..nspecpad` and padded bin `k` in `0..nwavetot`. Stamps overlap only for
//! nearby fibers and bins, so AᵀWA is banded in this order (bandwidth ~ 8·nspecpad) and is
//! stored in the lower band layout of [`crate::linalg::banded`]:
//! `band[i * (kd + 1) + (j + kd - i)] = M[i][j]` for `i - kd <= j <= i`.

pub mod assemble_cpu;
pub mod assemble_warp;
pub mod finalize_warp;
pub mod reject;

use crate::psf::spot::StampCorner;
use crate::team::Shared;
use crate::Status;

/// Read-only view of the spot stamps of one patch inside a larger (bundle or frame) table.
///
/// `stamps` starts at the patch's first padded spectrum and first padded bin; the stamp of
/// (s, k) starts at `(s * fiber_stride + k) * ny * nx` and is `(ny, nx)` row-major. `corners`
/// uses the same indexing without the `ny * nx` factor.
#[derive(Clone, Copy, Debug)]
pub struct StampView<'a> {
    /// Stamps, shape `(nspecpad, fiber_stride, ny, nx)` with only the first `nwavetot` bins of
    /// each fiber used.
    pub stamps: &'a [f64],
    /// Stamp corners, shape `(nspecpad, fiber_stride)`.
    pub corners: &'a [StampCorner],
    /// Distance between consecutive fibers, in stamps.
    pub fiber_stride: usize,
    /// Stamp rows (2·HSIZEY+1).
    pub ny: usize,
    /// Stamp columns (2·HSIZEX+1).
    pub nx: usize,
}

impl StampView<'_> {
    /// Index of the stamp of padded spectrum `s`, padded bin `k` in `corners` (and, times
    /// `ny * nx`, in `stamps`).
    #[inline(always)]
    pub fn index(&self, s: usize, k: usize) -> usize {
        s * self.fiber_stride + k
    }

    /// Corner of the stamp of padded spectrum `s`, padded bin `k` (panics when out of range).
    #[inline(always)]
    pub fn corner(&self, s: usize, k: usize) -> StampCorner {
        self.corners[self.index(s, k)]
    }

    /// Stamp of padded spectrum `s`, padded bin `k`: `(ny, nx)` row-major, exactly `ny * nx`
    /// values (panics when out of range).
    #[inline(always)]
    pub fn stamp(&self, s: usize, k: usize) -> &[f64] {
        let size = self.ny * self.nx;
        let start = self.index(s, k) * size;
        &self.stamps[start..start + size]
    }
}

/// Read-only view of a CCD image and its extraction weights, both `(nrow, ncol)` row-major f64.
#[derive(Clone, Copy, Debug)]
pub struct CcdView<'a> {
    /// Pixel values (electrons).
    pub image: &'a [f64],
    /// Weights: IVAR where `(MASK & 0x2FF) == 0`, else 0.
    pub weight: &'a [f64],
    /// Number of rows (NPIX_Y).
    pub nrow: usize,
    /// Number of columns (NPIX_X).
    pub ncol: usize,
}

/// Shape and pixel window of one patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchShape {
    /// Padded spectra in the patch (6 or 7 by default).
    pub nspecpad: usize,
    /// Padded bins per spectrum (nwavestep + 2·pad = 74 by default).
    pub nwavetot: usize,
    /// First kept CCD row.
    pub row_min: i32,
    /// One past the last kept CCD row.
    pub row_max: i32,
}

impl PatchShape {
    /// Number of unknowns, `nspecpad * nwavetot`.
    pub fn nunknown(&self) -> usize {
        self.nspecpad * self.nwavetot
    }
}

/// Rows `[lo, hi)` shared by two stamps and the kept window, or `None`.
#[inline(always)]
fn shared_rows(
    a: StampCorner,
    b: StampCorner,
    ny: usize,
    shape: &PatchShape,
) -> Option<(i32, i32)> {
    let ny = ny as i32;
    let lo = max_i32(max_i32(a.yc, b.yc), shape.row_min);
    let hi = min_i32(min_i32(a.yc + ny, b.yc + ny), shape.row_max);
    if lo < hi {
        Some((lo, hi))
    } else {
        None
    }
}

#[inline(always)]
fn max_i32(a: i32, b: i32) -> i32 {
    if a > b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn min_i32(a: i32, b: i32) -> i32 {
    if a < b {
        a
    } else {
        b
    }
}

/// Columns shared by two stamps as (first column, count), or `None`.
#[inline(always)]
fn shared_cols(a: StampCorner, b: StampCorner, nx: usize) -> Option<(i32, usize)> {
    let lo = max_i32(a.xc, b.xc);
    let hi = min_i32(a.xc, b.xc) + nx as i32;
    if lo < hi {
        Some((lo, (hi - lo) as usize))
    } else {
        None
    }
}

/// `true` when the stamps at corners `a` and `b` share at least one kept pixel (rows
/// [`shared_rows`] and columns [`shared_cols`]): otherwise `M[q2][q1]` is exactly 0.
#[inline(always)]
pub(crate) fn stamps_overlap(
    a: StampCorner,
    b: StampCorner,
    ny: usize,
    nx: usize,
    shape: &PatchShape,
) -> bool {
    shared_rows(a, b, ny, shape).is_some() && shared_cols(a, b, nx).is_some()
}

/// Half-bandwidth `kd` of AᵀWA for a patch in wavelength-major order: the largest `q2 - q1`
/// over pairs of unknowns whose stamps share at least one kept pixel.
///
/// Stamps move monotonically down the CCD with wavelength, so the scan for `q1` stops at the
/// first bin whose stamps all start below the bottom of `q1`'s stamp (tested also on the bin
/// where the scan starts, whose stamps then cannot share a row with it), and it starts beyond
/// the largest `kd` found so far: about O(n·nspecpad), not O(n²). Each bin's top row is
/// computed once for the scans that reach it (`RowTops`): a full r frame's 4,700 patches
/// took 26 ms instead of 36 on one core (`cargo bench --bench frame_start -- plan_bundle`,
/// AMD EPYC).
pub fn patch_bandwidth(view: &StampView, shape: &PatchShape) -> usize {
    let n = shape.nunknown();
    let ns = shape.nspecpad;
    let ny = view.ny as i32;
    let mut kd = 0;
    if ns == 0 {
        return 0;
    }
    // (s, k) of q1 and q2 are stepped along with them (no division per pair). Pairs with
    // q2 - q1 <= kd cannot raise kd: the scan for q1 starts at q1 + kd + 1.
    // The top row of each bin's stamps, kept for the next scans (the bins they reach only move
    // forward, so a few recent ones cover them).
    let mut row_tops = RowTops::new();
    let (mut s1, mut k1) = (0, 0);
    for q1 in 0..n {
        let c1 = view.corner(s1, k1);
        let mut q2 = q1 + kd + 1;
        let (mut s2, mut k2) = (q2 % ns, q2 / ns);
        let scan_start = q2;
        while q2 < n {
            // No stamp of a later bin whose stamps all start below the bottom of `q1`'s shares
            // a row with it, nor does any stamp of the bins after (they move down the CCD):
            // tested where the scan enters a bin.
            let enters_bin = q2 == scan_start || s2 == 0;
            if enters_bin && k2 > k1 && row_tops.get(view, ns, k2) >= c1.yc + ny {
                break;
            }
            if q2 - q1 > kd {
                let c2 = view.corner(s2, k2);
                if shared_rows(c1, c2, view.ny, shape).is_some()
                    && shared_cols(c1, c2, view.nx).is_some()
                {
                    kd = q2 - q1;
                }
            }
            q2 += 1;
            s2 += 1;
            if s2 == ns {
                s2 = 0;
                k2 += 1;
            }
        }
        s1 += 1;
        if s1 == ns {
            s1 = 0;
            k1 += 1;
        }
    }
    kd
}

/// The smallest stamp row of a bin over a patch's spectra, for the last [`RowTops::SLOTS`] bins
/// asked (direct-mapped by bin).
struct RowTops {
    slots: [(usize, i32); RowTops::SLOTS],
}

impl RowTops {
    const SLOTS: usize = 8;

    fn new() -> Self {
        Self {
            slots: [(usize::MAX, 0); Self::SLOTS],
        }
    }

    /// `min_s corner(s, k).yc` over the `ns` spectra of `view`.
    #[inline(always)]
    fn get(&mut self, view: &StampView, ns: usize, k: usize) -> i32 {
        let slot = &mut self.slots[k % Self::SLOTS];
        if slot.0 != k {
            let mut top = i32::MAX;
            for s in 0..ns {
                top = min_i32(top, view.corner(s, k).yc);
            }
            *slot = (k, top);
        }
        slot.1
    }
}

/// Assembles the normal equations of one patch from stamps (docs/algorithm.md §4.1; B&S eq. 10):
/// `M = Aᵀ W A` into `band` (lower band storage, shape `(n, kd + 1)`), `y = Aᵀ W p` into `rhs`
/// (length n) and the flux weights `fw = Aᵀ w` into `fluxweight` (length n). Stamps are
/// truncated to the kept rows `[row_min, row_max)`; the full padded x-extent is kept.
///
/// Returns `BadShape` if a slice is too short, a stamp leaves the CCD in x or `kd` is too small
/// for a pair of overlapping stamps (use [`patch_bandwidth`]).
///
/// This is the CPU's routine ([`assemble_cpu::assemble_patch`]: the entries of
/// [`assemble_unknown`] for every unknown, summed in vector lanes, equal to rounding); the GPU
/// kernels run [`assemble_unknown`] and [`assemble_warp`].
pub fn assemble_normal_equations(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    kd: usize,
    band: &mut [f64],
    rhs: &mut [f64],
    fluxweight: &mut [f64],
) -> Status {
    assemble_cpu::assemble_patch(view, ccd, shape, kd, band, rhs, fluxweight)
}

/// The part of [`assemble_normal_equations`] owned by unknown `q1`: `rhs[q1]`,
/// `fluxweight[q1]` and the band column `M[q2][q1]` for `q2` in `q1..=q1+kd` (zeros included),
/// so that different `q1` write disjoint entries (one GPU thread per unknown).
///
/// The outputs are [`Shared`] views (`band` `(n, kd + 1)`, `rhs` and `fluxweight` `(n,)`)
/// because the threads of a patch hold them at once: each only writes, and only its own
/// entries (no `&mut` to memory another thread writes).
#[allow(clippy::too_many_arguments)]
pub fn assemble_unknown(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    kd: usize,
    q1: usize,
    band: Shared,
    rhs: Shared,
    fluxweight: Shared,
) -> Status {
    let n = shape.nunknown();
    let ns = shape.nspecpad;
    let (ny, nx) = (view.ny, view.nx);
    if q1 >= n || band.len() < n * (kd + 1) || rhs.len() < n || fluxweight.len() < n {
        return Status::BadShape;
    }
    if shape.row_min < 0 || shape.row_max as usize > ccd.nrow {
        return Status::BadShape;
    }
    let (s1, k1) = (q1 % ns, q1 / ns);
    let c1 = view.corner(s1, k1);
    if c1.xc < 0 || (c1.xc as usize + nx) > ccd.ncol {
        return Status::BadShape;
    }
    let st1 = view.stamp(s1, k1);
    // Right-hand side and flux weight over the stamp's kept rows.
    let mut y_sum = 0.0;
    let mut w_sum = 0.0;
    let row_lo = max_i32(c1.yc, shape.row_min);
    let row_hi = min_i32(c1.yc + ny as i32, shape.row_max);
    let mut row = row_lo;
    while row < row_hi {
        let pix = row as usize * ccd.ncol + c1.xc as usize;
        let srow = (row - c1.yc) as usize * nx;
        let img = &ccd.image[pix..pix + nx];
        let wgt = &ccd.weight[pix..pix + nx];
        let st = &st1[srow..srow + nx];
        for i in 0..nx {
            let ws = wgt[i] * st[i];
            w_sum += ws;
            y_sum += ws * img[i];
        }
        row += 1;
    }
    rhs.set(q1, y_sum);
    fluxweight.set(q1, w_sum);
    // Band entries M[q2][q1] for q2 >= q1 (stored in row q2).
    let q2_end = if q1 + kd + 1 < n { q1 + kd + 1 } else { n };
    for q2 in q1..q2_end {
        let (s2, k2) = (q2 % ns, q2 / ns);
        let c2 = view.corner(s2, k2);
        let slot = q2 * (kd + 1) + (q1 + kd - q2);
        let (Some((rlo, rhi)), Some((col0, ncols))) =
            (shared_rows(c1, c2, ny, shape), shared_cols(c1, c2, nx))
        else {
            band.set(slot, 0.0);
            continue;
        };
        let st2 = view.stamp(s2, k2);
        let off1 = (col0 - c1.xc) as usize;
        let off2 = (col0 - c2.xc) as usize;
        let mut sum = 0.0;
        let mut row = rlo;
        while row < rhi {
            let pix = row as usize * ccd.ncol + col0 as usize;
            let a = &st1[(row - c1.yc) as usize * nx + off1..][..ncols];
            let b = &st2[(row - c2.yc) as usize * nx + off2..][..ncols];
            let w = &ccd.weight[pix..pix + ncols];
            for i in 0..ncols {
                sum += w[i] * a[i] * b[i];
            }
            row += 1;
        }
        band.set(slot, sum);
    }
    // Any overlapping pair beyond the band would be silently lost: refuse.
    if q2_end < n {
        let c2 = view.corner(q2_end % ns, q2_end / ns);
        if stamps_overlap(c1, c2, ny, nx, shape) {
            return Status::BadShape;
        }
    }
    Status::Ok
}

/// Regularizes the normal equations (docs/algorithm.md §4.2): with `minweight = 1e-4 · max(fw)`,
/// a bin is bad if `fw < minweight`; `α = regularize` for good bins and `minweight − fw` for bad
/// ones, and `M_qq += α² + 1e-15`. Returns `minweight`.
pub fn regularize(
    band: &mut [f64],
    n: usize,
    kd: usize,
    fluxweight: &[f64],
    regularize: f64,
) -> f64 {
    let mut max_fw = 0.0f64;
    for &fw in fluxweight[..n].iter() {
        if fw > max_fw {
            max_fw = fw;
        }
    }
    let minweight = 1e-4 * max_fw;
    for (q, &fw) in fluxweight[..n].iter().enumerate() {
        let alpha = if fw < minweight {
            minweight - fw
        } else {
            regularize
        };
        band[q * (kd + 1) + kd] += alpha * alpha + 1e-15;
    }
    minweight
}

/// Resolution of one fiber from its inverse-square-root covariance block (B&S eqs. 17-19):
/// `s_k = Σ_j Q[k][j]`, `R = diag(1/s) Q`, `ivar_k = s_k²`, `flux = R · xflux`.
///
/// `q_block` is `(nwavetot, nwavetot)` row-major and is overwritten by R; `xflux` is the
/// fiber's deconvolved flux read with stride `xflux_stride` (= nspecpad in wavelength-major
/// order); `flux` and `ivar` have length `nwavetot`.
pub fn apply_resolution(
    q_block: &mut [f64],
    nwavetot: usize,
    xflux: &[f64],
    xflux_stride: usize,
    flux: &mut [f64],
    ivar: &mut [f64],
) -> Status {
    if q_block.len() < nwavetot * nwavetot
        || flux.len() < nwavetot
        || ivar.len() < nwavetot
        || (nwavetot > 0 && xflux.len() < (nwavetot - 1) * xflux_stride + 1)
    {
        return Status::BadShape;
    }
    for k in 0..nwavetot {
        let row = &mut q_block[k * nwavetot..(k + 1) * nwavetot];
        let mut s = 0.0;
        for &v in row.iter() {
            s += v;
        }
        if !s.is_finite() || s == 0.0 {
            return Status::NonFinite;
        }
        let inv = 1.0 / s;
        let mut f = 0.0;
        for (j, v) in row.iter_mut().enumerate() {
            *v *= inv;
            f += *v * xflux[j * xflux_stride];
        }
        flux[k] = f;
        ivar[k] = s * s;
    }
    Status::Ok
}

/// Diagonals of a resolution block (docs/algorithm.md §4.6, scipy `dia_matrix.data` layout with
/// offsets `+ndiag .. -ndiag`): `rdiags[d * out_stride + j] = R[k − ndiag + d][k]` for output
/// column `j = k − k_min`, `k` in `k_min..k_max`, `d` in `0..2·ndiag+1`; rows outside the block
/// give 0.
pub fn resolution_diagonals(
    resolution: &[f64],
    nwavetot: usize,
    ndiag: usize,
    k_min: usize,
    k_max: usize,
    rdiags: &mut [f64],
    out_stride: usize,
) -> Status {
    let ndiagonal = 2 * ndiag + 1;
    if k_max > nwavetot
        || k_min > k_max
        || rdiags.len() < (ndiagonal - 1) * out_stride + (k_max - k_min)
    {
        return Status::BadShape;
    }
    for k in k_min..k_max {
        for d in 0..ndiagonal {
            let row = k as isize - ndiag as isize + d as isize;
            let value = if row >= 0 && (row as usize) < nwavetot {
                resolution[row as usize * nwavetot + k]
            } else {
                0.0
            };
            rdiags[d * out_stride + (k - k_min)] = value;
        }
    }
    Status::Ok
}

/// Pixel statistics of the core unknowns of a patch (docs/algorithm.md §4.7, §4.8; CPU/specter
/// convention).
///
/// Model `m = A · xflux` over the kept window; total pixel ivar `t = 1/(1/w + (psferr·m +
/// 1e-32)²)` where `w > 0`, else 0; `χ²_pix = (p − m)²·t`. For each core unknown c:
/// `chi2pix_c = Σ A[pix,c]·χ²_pix / Σ A[pix,c]·[w_pix > 0]` (0 when the denominator is 0)
/// and `pixmask_fraction_c = Σ A[pix,c]·[w_pix == 0]`, set to exactly 1 when no kept pixel
/// of the stamp has weight (and capped at 1).
///
/// `window` is a scratch buffer of `(row_max − row_min) · (col_max − col_min)` f64 where
/// `col_min/col_max` bound every stamp column. Outputs `chi2pix` and `pixmask_fraction` are
/// `(nspp, out_stride)`: core spectrum `s_core` in `s_min..s_min+nspp`, core bin in
/// `k_min..k_max`. The window is bitwise [`pixel_chi2_row`] for every row (computed stamp by
/// stamp, each pixel's terms in the same order), followed by [`core_pixel_sums`] for every
/// core unknown (the GPU maps threads onto both).
#[allow(clippy::too_many_arguments)]
pub fn pixel_statistics(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    col_min: i32,
    col_max: i32,
    xflux: &[f64],
    psferr: f64,
    core: CoreRange,
    window: &mut [f64],
    chi2pix: &mut [f64],
    pixmask_fraction: &mut [f64],
    out_stride: usize,
) -> Status {
    let width = (col_max - col_min) as usize;
    let height = (shape.row_max - shape.row_min) as usize;
    if window.len() < width * height {
        return Status::BadShape;
    }
    let nspp = core.s_max - core.s_min;
    let nk = core.k_max - core.k_min;
    if chi2pix.len() < (nspp.max(1) - 1) * out_stride + nk
        || pixmask_fraction.len() < (nspp.max(1) - 1) * out_stride + nk
    {
        return Status::BadShape;
    }
    let n = shape.nunknown();
    if xflux.len() < n || col_min < 0 || col_max as usize > ccd.ncol {
        return Status::BadShape;
    }
    if shape.row_min < 0 || shape.row_max as usize > ccd.nrow {
        return Status::BadShape;
    }
    // The model, stamp by stamp in ascending q: every pixel adds its terms in the order of
    // pixel_chi2_row, so the window is bitwise that of pixel_chi2_row row by row, without
    // scanning every unknown for every row.
    let window = &mut window[..width * height];
    window.fill(0.0);
    let (ns, ny, nx) = (shape.nspecpad, view.ny, view.nx);
    let (mut s, mut k) = (0, 0);
    for &f in xflux[..n].iter() {
        let c = view.corner(s, k);
        let lo = max_i32(c.yc, shape.row_min);
        let hi = min_i32(c.yc + ny as i32, shape.row_max);
        if lo < hi {
            if c.xc < col_min || c.xc + nx as i32 > col_max {
                return Status::BadShape;
            }
            let st = view.stamp(s, k);
            let col = (c.xc - col_min) as usize;
            for row in lo..hi {
                let srow = &st[(row - c.yc) as usize * nx..][..nx];
                let dst = &mut window[(row - shape.row_min) as usize * width + col..][..nx];
                for i in 0..nx {
                    dst[i] += f * srow[i];
                }
            }
        }
        s += 1;
        if s == ns {
            s = 0;
            k += 1;
        }
    }
    for (r, row) in window.chunks_exact_mut(width.max(1)).enumerate() {
        let pix = (shape.row_min as usize + r) * ccd.ncol + col_min as usize;
        chi2_of_model(
            row,
            &ccd.image[pix..pix + width],
            &ccd.weight[pix..pix + width],
            psferr,
        );
    }
    for s in core.s_min..core.s_max {
        for k in core.k_min..core.k_max {
            let (chi, masked) = core_pixel_sums(view, ccd, shape, col_min, col_max, window, s, k);
            let out = (s - core.s_min) * out_stride + (k - core.k_min);
            chi2pix[out] = chi;
            pixmask_fraction[out] = masked;
        }
    }
    Status::Ok
}

/// χ²_pix of window row `r` (CCD row `row_min + r`) into `row_out` (length
/// `col_max − col_min`): the model `Σ_q xflux_q · stamp_q` over that row (unknowns in
/// ascending q), then `(p − m)²·t` with the total pixel ivar t of [`pixel_statistics`].
#[allow(clippy::too_many_arguments)]
pub fn pixel_chi2_row(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    col_min: i32,
    col_max: i32,
    xflux: &[f64],
    psferr: f64,
    r: usize,
    row_out: &mut [f64],
) -> Status {
    let ns = shape.nspecpad;
    let (ny, nx) = (view.ny, view.nx);
    let width = (col_max - col_min) as usize;
    let n = shape.nunknown();
    if row_out.len() < width || xflux.len() < n || col_min < 0 || col_max as usize > ccd.ncol {
        return Status::BadShape;
    }
    let y = shape.row_min + r as i32;
    if y < 0 || y >= shape.row_max || y as usize >= ccd.nrow {
        return Status::BadShape;
    }
    for v in row_out[..width].iter_mut() {
        *v = 0.0;
    }
    for (q, &f) in xflux[..n].iter().enumerate() {
        let (s, k) = (q % ns, q / ns);
        let c = view.corner(s, k);
        if y < c.yc || y >= c.yc + ny as i32 {
            continue;
        }
        if c.xc < col_min || c.xc + nx as i32 > col_max {
            return Status::BadShape;
        }
        let st = view.stamp(s, k);
        let srow = &st[(y - c.yc) as usize * nx..][..nx];
        let dst = &mut row_out[(c.xc - col_min) as usize..][..nx];
        for i in 0..nx {
            dst[i] += f * srow[i];
        }
    }
    let pix = y as usize * ccd.ncol + col_min as usize;
    chi2_of_model(
        &mut row_out[..width],
        &ccd.image[pix..pix + width],
        &ccd.weight[pix..pix + width],
        psferr,
    );
    Status::Ok
}

/// Replaces the model `m` of each pixel of `row` by its `χ²_pix = (p − m)²·t` (see
/// [`pixel_statistics`]); `image` and `weight` are the same pixels.
#[inline(always)]
fn chi2_of_model(row: &mut [f64], image: &[f64], weight: &[f64], psferr: f64) {
    for ((v, &p), &w) in row.iter_mut().zip(image).zip(weight) {
        let m = *v;
        *v = if w > 0.0 {
            let e = psferr * m + 1e-32;
            let t = 1.0 / (1.0 / w + e * e);
            let d = p - m;
            d * d * t
        } else {
            0.0
        };
    }
}

/// `(chi2pix, pixmask_fraction)` of unknown (s, k) from the χ²_pix window of
/// [`pixel_chi2_row`] (see [`pixel_statistics`] for the definitions).
#[allow(clippy::too_many_arguments)]
pub fn core_pixel_sums(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    col_min: i32,
    col_max: i32,
    window: &[f64],
    s: usize,
    k: usize,
) -> (f64, f64) {
    let (ny, nx) = (view.ny, view.nx);
    let width = (col_max - col_min) as usize;
    let c = view.corner(s, k);
    let st = view.stamp(s, k);
    let (mut num, mut den, mut masked) = (0.0, 0.0, 0.0);
    let lo = max_i32(c.yc, shape.row_min);
    let hi = min_i32(c.yc + ny as i32, shape.row_max);
    let mut row = lo;
    while row < hi {
        let w0 = (row - shape.row_min) as usize * width + (c.xc - col_min) as usize;
        let pix = row as usize * ccd.ncol + c.xc as usize;
        let srow = &st[(row - c.yc) as usize * nx..][..nx];
        let chi = &window[w0..w0 + nx];
        let wgt = &ccd.weight[pix..pix + nx];
        for i in 0..nx {
            if wgt[i] > 0.0 {
                num += srow[i] * chi[i];
                den += srow[i];
            } else {
                masked += srow[i];
            }
        }
        row += 1;
    }
    core_pixel_result(num, den, masked)
}

/// `(chi2pix, pixmask_fraction)` of a core unknown from its sums over the kept pixels of its
/// stamp: `num = Σ A·χ²_pix` and `den = Σ A` over pixels with weight, `masked = Σ A` over
/// pixels without (see [`pixel_statistics`]).
#[inline(always)]
pub fn core_pixel_result(num: f64, den: f64, masked: f64) -> (f64, f64) {
    let chi2pix = if den > 0.0 { num / den } else { 0.0 };
    // A bin none of whose kept pixels has weight is fully masked: report exactly 1
    // (desispec's ALLBADPIX test is an exact `== 1.0`, which a floating-point sum of
    // a normalized stamp can miss by an ulp).
    let fraction = if den > 0.0 {
        if masked < 1.0 {
            masked
        } else {
            1.0
        }
    } else if masked > 0.0 {
        1.0
    } else {
        0.0
    };
    (chi2pix, fraction)
}

/// The core unknowns of a patch: padded spectra `s_min..s_max`, padded bins `k_min..k_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreRange {
    /// First core spectrum (patch-local).
    pub s_min: usize,
    /// One past the last core spectrum.
    pub s_max: usize,
    /// First core bin (patch-local, = pad).
    pub k_min: usize,
    /// One past the last core bin.
    pub k_max: usize,
}

/// Where one patch lives in the batched GPU buffers (all fields 64-bit so the host can upload an
/// array of descriptors as plain `u64` words, [`PATCH_DESC_WORDS`] per patch).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchDesc {
    /// Index (in stamps) of the patch's first stamp `(s0, first padded bin)` in the frame table.
    pub stamp_offset: u64,
    /// Stamps between consecutive fibers of the table (its number of wavelengths).
    pub fiber_stride: u64,
    /// Padded spectra.
    pub nspecpad: u64,
    /// Core spectra.
    pub nspp: u64,
    /// First core spectrum, patch-local.
    pub s_core: u64,
    /// Core bins kept in the output.
    pub keep: u64,
    /// First kept row.
    pub row_min: i64,
    /// One past the last kept row.
    pub row_max: i64,
    /// First column of the window.
    pub col_min: i64,
    /// One past the last column.
    pub col_max: i64,
    /// Half-bandwidth of AᵀWA.
    pub kd: u64,
    /// Offset (in f64) of the patch's band matrix in the band buffer.
    pub band_offset: u64,
    /// Offset (in f64) of the patch's pixel scratch window.
    pub pixel_offset: u64,
}

/// Number of 64-bit words of a [`PatchDesc`].
pub const PATCH_DESC_WORDS: usize = 13;

impl PatchDesc {
    /// The patch's shape.
    pub fn shape(&self, nwavetot: usize) -> PatchShape {
        PatchShape {
            nspecpad: self.nspecpad as usize,
            nwavetot,
            row_min: self.row_min as i32,
            row_max: self.row_max as i32,
        }
    }

    /// Number of unknowns for `nwavetot` bins per spectrum.
    pub fn nunknown(&self, nwavetot: usize) -> usize {
        self.nspecpad as usize * nwavetot
    }

    /// Length (f64) of the band matrix, `n * (kd + 1)`.
    pub fn band_len(&self, nwavetot: usize) -> usize {
        self.nunknown(nwavetot) * (self.kd as usize + 1)
    }

    /// Pixels of the window.
    pub fn npix(&self) -> usize {
        ((self.row_max - self.row_min) * (self.col_max - self.col_min)).max(0) as usize
    }

    /// The descriptor as words (host upload).
    pub fn to_words(&self) -> [u64; PATCH_DESC_WORDS] {
        [
            self.stamp_offset,
            self.fiber_stride,
            self.nspecpad,
            self.nspp,
            self.s_core,
            self.keep,
            self.row_min as u64,
            self.row_max as u64,
            self.col_min as u64,
            self.col_max as u64,
            self.kd,
            self.band_offset,
            self.pixel_offset,
        ]
    }
}
