//! Register-tiled CPU versions of the band Cholesky factorization and of the interleaved
//! covariance blocks (host only: the GPU kernels keep [`super::banded`] and
//! [`super::banded_team`]). Same band storage, same shapes and the same results as
//! [`super::banded`] up to rounding (the sums are grouped differently and the covariance
//! rows are scaled by the reciprocal of the pivot instead of divided by it).
//!
//! The inner loops are fixed-size tiles (`R` rows × `CH` columns of accumulators) that the
//! compiler keeps in vector registers (4-wide AVX2 + FMA on x86-64-v3, `.cargo/config.toml`):
//! each load of a row segment feeds several fused multiply-adds.

use super::dense::{diagonal_status, pivot_status};
use crate::math::{fma, sqrt};
use crate::Status;

/// Rows of `Y_b = L⁻¹ E_b` computed together by the forward substitution.
const R: usize = 4;
/// Columns of `Y_b` (and of `C_bb`) per register tile: three 4-wide vectors.
const CH: usize = 12;
/// Rows of `Y_b` added to `C_bb` at once (a multiple of [`R`]).
const G: usize = 16;
/// Rows per register tile of the Gram update and of the factor's trailing update.
const TR: usize = 4;

/// `true` when `ab` has the band shape `(n, kd + 1)`.
fn band_shape_ok(ab: &[f64], n: usize, kd: usize) -> bool {
    kd.checked_add(1).and_then(|w| w.checked_mul(n)) == Some(ab.len())
}

/// `x` rounded up to a multiple of `m` (`m > 0`).
fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// Layout of the covariance workspace: a ring of `depth + 1` rows of `Y_b` (`bsp` values each:
/// `bs` rounded up to 4, plus 8 zeros for the chunks that start inside a row's prefix), the
/// padded `(bsp, bsp)` accumulator of `C_bb`, the packed band panel `(R, kd + R)` and the [`R`]
/// reciprocal pivots.
struct CovLayout {
    bs: usize,
    bsp: usize,
    depth: usize,
    panel_k: usize,
    ring_len: usize,
    acc_len: usize,
    panel_len: usize,
    work_len: usize,
}

impl CovLayout {
    /// The layout, or `None` for an invalid shape or a size that overflows.
    fn new(n: usize, kd: usize, nblock: usize) -> Option<CovLayout> {
        if nblock == 0 || !n.is_multiple_of(nblock) {
            return None;
        }
        let bs = n / nblock;
        let bsp = bs.checked_next_multiple_of(TR)?.checked_add(8)?;
        let panel_k = kd.checked_add(R)?;
        let depth = panel_k.max(G).checked_next_multiple_of(G)?;
        let ring_len = depth.checked_add(1)?.checked_mul(bsp)?;
        let acc_len = bsp.checked_mul(bsp)?;
        let panel_len = panel_k.checked_mul(R)?;
        let work_len = ring_len
            .checked_add(acc_len)?
            .checked_add(panel_len)?
            .checked_add(R)?;
        Some(CovLayout {
            bs,
            bsp,
            depth,
            panel_k,
            ring_len,
            acc_len,
            panel_len,
            work_len,
        })
    }
}

/// Length of the `work` slice that [`band_covariance_block_range`] needs (for any number of
/// blocks): a ring of `round_up(max(kd + 4, 16), 16) + 1` rows of `bs` values padded to a
/// multiple of 4 plus 8, the padded `(bs, bs)` accumulator and a small panel of `L` (100 KB for
/// `n = 518`, `nblock = 7`, `kd = 58`); 0 for invalid shapes.
pub fn band_covariance_block_range_work_len(n: usize, kd: usize, nblock: usize) -> usize {
    CovLayout::new(n, kd, nblock).map_or(0, |l| l.work_len)
}

/// [`super::banded::band_covariance_block_range`] on the CPU: the diagonal covariance blocks
/// `C_bb` of `C = M⁻¹` for the consecutive interleaved blocks `first_block .. first_block +
/// out.len() / bs²`, from the band Cholesky factor of `M`.
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, `L` in band storage (as left by [`band_factor`] or
///   [`super::banded::band_factor`]).
/// - `nblock`: number of interleaved blocks (`nspec`); `n` must be a multiple of it,
///   `bs = n / nblock`. Block `b` is the set of unknowns `q = j·nblock + b`, `j in 0..bs`.
/// - `first_block`: the first block written.
/// - `out`: shape `(count, bs, bs)`, row-major: `out[i][r][c] = C[r·nblock + b][c·nblock + b]`
///   with `b = first_block + i` (symmetric).
/// - `work`: scratch of at least [`band_covariance_block_range_work_len`]`(n, kd, nblock)`
///   values (its content on entry is irrelevant).
///
/// # Equation
/// `C_bb = Y_bᵀ Y_b` with `Y_b = L⁻¹ E_b` (Bolton & Schlegel 2010 eq 10 restricted to one
/// fiber). `Y_b` is built four rows at a time: for the rows `m0..m0+4`,
/// `Y[m] = E[m] - Σ_{k<m0} L[m][k]·Y[k]` over the band (register tiles of 4 rows × 12 columns,
/// the last chunk of a row 8 or 4 wide; each `Y[k]` chunk loaded once for the four rows), then
/// the `4 × 4` triangle `Y[m] -= L[m][k]·Y[k]` for `m0 <= k < m` and `Y[m] *= 1 / L[m][m]`.
/// Column `j` of `Y_b` is zero above row `j·nblock + b`, so a chunk starting at column `j0`
/// only reads rows from `j0·nblock + b` on, and each group of 16 rows is stored up to its last
/// row's non-zero prefix (rounded up to 4, then 8 zeros). Every 16 rows, the rank-16 update
/// `C_bb += Y[g0..g0+16]ᵀ Y[g0..g0+16]` runs on tiles of 4 rows × 12 (8, 4) columns of the
/// upper triangle. Cost `≈ n²·kd/2 + n²·bs/6` multiply-adds per block, as the serial engine.
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] if `nblock == 0`, `n % nblock != 0` or a slice is the
/// wrong size; [`Status::NotPositiveDefinite`] / [`Status::NonFinite`] if a diagonal entry of
/// `L` is `<= 0` / not finite, or [`Status::NonFinite`] if a result is not finite.
pub fn band_covariance_block_range(
    ab: &[f64],
    n: usize,
    kd: usize,
    nblock: usize,
    first_block: usize,
    out: &mut [f64],
    work: &mut [f64],
) -> Status {
    if !band_shape_ok(ab, n, kd) {
        return Status::BadShape;
    }
    let Some(layout) = CovLayout::new(n, kd, nblock) else {
        return Status::BadShape;
    };
    let work_len = layout.work_len;
    let bs = layout.bs;
    let nout = out.len().checked_div(bs * bs).unwrap_or(0);
    if nout * bs * bs != out.len()
        || first_block.checked_add(nout).is_none_or(|end| end > nblock)
        || work.len() < work_len
    {
        return Status::BadShape;
    }
    let w = kd + 1;
    if let Some(status) = diagonal_status(n, |m| ab[m * w + kd]) {
        return status;
    }
    if n == 0 {
        return Status::Ok;
    }
    let (ring, rest) = work[..work_len].split_at_mut(layout.ring_len);
    let (acc, rest) = rest.split_at_mut(layout.acc_len);
    let (panel, inv) = rest.split_at_mut(layout.panel_len);
    for (i, cbb) in out.chunks_exact_mut(bs * bs).enumerate() {
        let b = first_block + i;
        one_block(ab, n, kd, nblock, b, &layout, ring, acc, panel, inv);
        // Copy the upper triangle out and mirror it.
        let bsp = layout.bsp;
        for r in 0..bs {
            for c in r..bs {
                let v = acc[r * bsp + c];
                cbb[r * bs + c] = v;
                cbb[c * bs + r] = v;
            }
        }
    }
    if out.iter().all(|v| v.is_finite()) {
        Status::Ok
    } else {
        Status::NonFinite
    }
}

/// Number of columns of `Y_b` that can be non-zero in row `m`: `(m - b) / nblock + 1`
/// (0 above row `b`), at most `bs`.
#[inline(always)]
fn active(m: usize, b: usize, nblock: usize, bs: usize) -> usize {
    if m < b {
        0
    } else {
        ((m - b) / nblock + 1).min(bs)
    }
}

/// `C_bb` of block `b` into the padded accumulator `acc` (upper triangle; see
/// [`band_covariance_block_range`]).
#[allow(clippy::too_many_arguments)]
fn one_block(
    ab: &[f64],
    n: usize,
    kd: usize,
    nblock: usize,
    b: usize,
    layout: &CovLayout,
    ring: &mut [f64],
    acc: &mut [f64],
    panel: &mut [f64],
    inv: &mut [f64],
) {
    let (bs, bsp, depth, pk) = (layout.bs, layout.bsp, layout.depth, layout.panel_k);
    acc.fill(0.0);
    let mut g0 = 0;
    while g0 < n {
        let g_end = (g0 + G).min(n);
        // Columns written for every row of this group: up to the last row's active prefix
        // (rounded up to 4), so that the group's rows are complete (zeros included) over the
        // Gram's columns; 8 more zeros cover the chunks of later groups that start inside it.
        let ncol = round_up(active(g_end - 1, b, nblock, bs), TR);
        let mut m0 = g0;
        while m0 < g_end {
            let k_base = m0.saturating_sub(kd);
            pack_panel(ab, n, kd, m0, k_base, pk, panel, inv);
            let panel: &[f64] = panel;
            let rows = Rows::new(n, nblock, b, m0, kd, layout);
            let mut j0 = 0;
            while j0 + CH <= ncol {
                rows.chunk::<CH>(ring, panel, inv, j0);
                j0 += CH;
            }
            if j0 + 8 <= ncol {
                rows.chunk::<8>(ring, panel, inv, j0);
                j0 += 8;
            }
            if j0 < ncol {
                rows.chunk::<TR>(ring, panel, inv, j0);
            }
            for r in 0..R {
                let at = (rows.slot0 + r) * bsp + ncol;
                ring[at..at + 8].fill(0.0);
            }
            m0 += R;
        }
        // Rank-16 update of the upper triangle over the group's active columns.
        let slot0 = g0 % depth;
        let rows = &ring[slot0 * bsp..(slot0 + g_end - g0) * bsp];
        gram_upper(acc, bsp, active(g_end - 1, b, nblock, bs), rows, g_end - g0);
        g0 += G;
    }
}

/// The rows `m0..m0 + R` of `Y_b` being computed (see [`one_block`]).
struct Rows {
    nblock: usize,
    b: usize,
    m0: usize,
    k_base: usize,
    /// Ring slot of row `m0` (the rows `m0..m0 + R` never wrap: `depth` and `m0` are
    /// multiples of `R`).
    slot0: usize,
    /// Column of the `1` of `E` in each row (`usize::MAX` if none).
    e_col: [usize; R],
    depth: usize,
    stride: usize,
    pk: usize,
}

impl Rows {
    fn new(n: usize, nblock: usize, b: usize, m0: usize, kd: usize, layout: &CovLayout) -> Rows {
        let e_col = core::array::from_fn(|r| {
            let m = m0 + r;
            if m < n && m >= b && (m - b).is_multiple_of(nblock) {
                (m - b) / nblock
            } else {
                usize::MAX
            }
        });
        Rows {
            nblock,
            b,
            m0,
            k_base: m0.saturating_sub(kd),
            slot0: m0 % layout.depth,
            e_col,
            depth: layout.depth,
            stride: layout.bsp,
            pk: layout.panel_k,
        }
    }

    /// Ring slot of row `k`, `m0 - depth < k <= m0`.
    #[inline(always)]
    fn slot(&self, k: usize) -> usize {
        let back = self.m0 - k;
        if self.slot0 >= back {
            self.slot0 - back
        } else {
            self.slot0 + self.depth - back
        }
    }

    /// Columns `j0..j0 + W` of the rows `m0..m0 + R` into the ring: `E` rows, minus the
    /// rows `k < m0` from `j0·nblock + b` on (whole runs of ring slots), then the triangle.
    #[inline(always)]
    fn chunk<const W: usize>(&self, ring: &mut [f64], panel: &[f64], inv: &[f64], j0: usize) {
        let (m0, k_base, depth, stride) = (self.m0, self.k_base, self.depth, self.stride);
        let mut tile = [[0.0f64; W]; R];
        for (row, &j) in tile.iter_mut().zip(&self.e_col) {
            if (j0..j0 + W).contains(&j) {
                row[j - j0] = 1.0;
            }
        }
        // Rows k < m0 with column j0 possibly non-zero: k >= j0·nblock + b.
        let mut k = k_base.max(j0 * self.nblock + self.b);
        while k < m0 {
            // Contiguous run of ring slots (at most one wrap; the ring has one spare row so
            // that every run is `run` whole rows).
            let slot = self.slot(k);
            let run = (depth - slot).min(m0 - k);
            let rows = &ring[slot * stride + j0..(slot + run) * stride + j0];
            tile = forward_tile(tile, &panel[k - k_base..], self.pk, rows, stride, run);
            k += run;
        }
        let tile = triangle(tile, panel, self.pk, m0 - k_base, inv);
        for (r, row) in tile.iter().enumerate() {
            let at = (self.slot0 + r) * stride + j0;
            ring[at..at + W].copy_from_slice(row);
        }
    }
}

/// Packs rows `m0..m0 + R` of `L` into `panel`, row `r` at `r·pk`:
/// `panel[r·pk + (k - k_base)] = L[m0 + r][k]` for `k_base <= k < m0 + R` (zero outside the
/// band and above the diagonal), and `inv[r] = 1 / L[m0 + r][m0 + r]`. Rows past `n` are
/// identity rows (zero off-diagonal, pivot 1).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pack_panel(
    ab: &[f64],
    n: usize,
    kd: usize,
    m0: usize,
    k_base: usize,
    pk: usize,
    panel: &mut [f64],
    inv: &mut [f64],
) {
    let w = kd + 1;
    let used = m0 + R - k_base;
    for (r, prow) in panel.chunks_exact_mut(pk).take(R).enumerate() {
        let prow = &mut prow[..used];
        let m = m0 + r;
        if m >= n {
            prow.fill(0.0);
            inv[r] = 1.0;
            continue;
        }
        let k_lo = m.saturating_sub(kd).max(k_base);
        let row = &ab[m * w..m * w + w];
        let (head, tail) = prow.split_at_mut(k_lo - k_base);
        head.fill(0.0);
        let (mid, after) = tail.split_at_mut(m - k_lo);
        mid.copy_from_slice(&row[k_lo + kd - m..kd]);
        after.fill(0.0);
        inv[r] = 1.0 / row[kd];
    }
}

/// `tile[r][c] - Σ_t coef[r·pk + t]·rows[t·stride + c]` for `t in 0..run` (the rows of the
/// ring, `stride` apart; the coefficients of the packed panel).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // t walks the R coefficient rows and the ring rows together
fn forward_tile<const W: usize>(
    mut a: [[f64; W]; R],
    coef: &[f64],
    pk: usize,
    rows: &[f64],
    stride: usize,
    run: usize,
) -> [[f64; W]; R] {
    let c: [&[f64]; R] = core::array::from_fn(|r| &coef[r * pk..r * pk + run]);
    // Rows split off one at a time (no division for an iterator's length).
    let mut rest = rows;
    for t in 0..run {
        let Some((y, tail)) = rest.split_at_checked(stride.min(rest.len())) else {
            break;
        };
        rest = tail;
        let y: &[f64; W] = y
            .get(..W)
            .and_then(|y| y.try_into().ok())
            .unwrap_or(&[0.0; W]);
        for r in 0..R {
            let cr = c[r][t];
            for j in 0..W {
                a[r][j] = fma(-cr, y[j], a[r][j]);
            }
        }
    }
    a
}

/// The triangle within the rows `m0..m0 + R` (`L[m0 + r][m0 + t]` at
/// `panel[r·pk + diag + t]`, `t < r`) and the reciprocal pivots: row `r` becomes
/// `(tile[r] - Σ_{t<r} L[m0 + r][m0 + t]·row_t) · inv[r]`, rows in order.
#[inline(always)]
fn triangle<const W: usize>(
    mut a: [[f64; W]; R],
    panel: &[f64],
    pk: usize,
    diag: usize,
    inv: &[f64],
) -> [[f64; W]; R] {
    for r in 0..R {
        for t in 0..r {
            let c = panel[r * pk + diag + t];
            let x = a[t];
            for j in 0..W {
                a[r][j] = fma(-c, x[j], a[r][j]);
            }
        }
        let d = inv[r];
        for v in a[r].iter_mut() {
            *v *= d;
        }
    }
    a
}

/// `acc[r][c] += Σ_t rows[t][r]·rows[t][c]` over `nrows` rows (`stride` apart) for the
/// upper triangle of the leading `(nact, nact)` corner, on tiles of 4 rows starting at the
/// diagonal: 12 columns at a time, then 8 or 4 (the tiles on the diagonal also update a few entries
/// below it, which are not used). Reads columns up to `nact` rounded up to 4.
#[inline(always)]
fn gram_upper(acc: &mut [f64], stride: usize, nact: usize, rows: &[f64], nrows: usize) {
    let end = round_up(nact, TR);
    for r0 in (0..nact).step_by(TR) {
        let mut c0 = r0;
        while c0 + CH <= end {
            gram_tile::<CH>(acc, stride, r0, c0, rows, nrows);
            c0 += CH;
        }
        if c0 + 8 <= end {
            gram_tile::<8>(acc, stride, r0, c0, rows, nrows);
            c0 += 8;
        }
        if c0 < end {
            gram_tile::<TR>(acc, stride, r0, c0, rows, nrows);
        }
    }
}

/// One `(4, W)` tile of [`gram_upper`] at `(r0, c0)`.
#[inline(always)]
fn gram_tile<const W: usize>(
    acc: &mut [f64],
    stride: usize,
    r0: usize,
    c0: usize,
    rows: &[f64],
    nrows: usize,
) {
    let mut a = [[0.0f64; W]; TR];
    for (i, row) in a.iter_mut().enumerate() {
        let at = (r0 + i) * stride + c0;
        row.copy_from_slice(&acc[at..at + W]);
    }
    let mut rest = rows;
    for _ in 0..nrows {
        let Some((y, tail)) = rest.split_at_checked(stride.min(rest.len())) else {
            break;
        };
        rest = tail;
        let x: &[f64; TR] = y[r0..r0 + TR].try_into().unwrap_or(&[0.0; TR]);
        let z: &[f64; W] = y[c0..c0 + W].try_into().unwrap_or(&[0.0; W]);
        for i in 0..TR {
            for j in 0..W {
                a[i][j] = fma(x[i], z[j], a[i][j]);
            }
        }
    }
    for (i, row) in a.iter().enumerate() {
        let at = (r0 + i) * stride + c0;
        acc[at..at + W].copy_from_slice(row);
    }
}

/// Columns of `L` factored together by [`band_factor`] (the panel width).
const NB: usize = 16;

/// Row length of the transposed panel of [`band_factor`]: the `NB + kd` rows that a panel
/// touches, padded by one tile of [`CH`] columns.
fn panel_width(kd: usize) -> Option<usize> {
    kd.checked_add(NB + CH)
}

/// Length of the `work` slice that [`band_factor`] needs: `NB · (NB + kd + CH)` values
/// (11 KB for `kd = 58`); 0 if that overflows.
pub fn band_factor_work_len(kd: usize) -> usize {
    panel_width(kd).and_then(|p| p.checked_mul(NB)).unwrap_or(0)
}

/// [`super::banded::band_factor`] on the CPU, blocked: `M = L·Lᵀ` in place, `NB = 16`
/// columns at a time (LAPACK `dpbtrf` order, right-looking).
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, row-major band storage of the lower triangle of `M`
///   (`ab[i * (kd + 1) + (j + kd - i)] = M[i][j]`). On exit it holds `L` in the same layout;
///   the slots outside the matrix (`j < 0`) are zeroed.
/// - `n`: the order of `M`; `kd`: its half-bandwidth (any `kd >= 0`).
/// - `work`: scratch of at least [`band_factor_work_len`]`(kd)` values (content irrelevant).
///
/// # Equation
/// For each panel of columns `j0..j1` (`j1 = j0 + 16`): the panel's rows `j0..j1 + kd` are
/// copied transposed (`P[t][i - j0] = M[i][j0 + t]`, zero outside the band) and factored
/// column by column, `L[j][j] = sqrt(P[j][j])`, `L[i][j] = P[j][i] · (1 / L[j][j])`, each
/// column then subtracted from the panel's later columns (`P[u][i] -= L[u][j]·L[i][j]`, a
/// contiguous axpy over the rows); then the trailing triangle
/// `M[i][j] -= Σ_{t} L[i][j0 + t]·L[j][j0 + t]` for `j1 <= j <= i < j1 + kd` is updated on
/// `4 × 12` register tiles. The same sums as the unblocked factor, grouped by panel:
/// equal up to rounding. Cost `≈ n·kd²/2` multiply-adds.
///
/// # Returns
/// [`Status::Ok`]; [`Status::NonFinite`] if a pivot is NaN or infinite;
/// [`Status::NotPositiveDefinite`] if a pivot is `<= 0` (the factorization stops, `ab` is
/// then partly overwritten); [`Status::BadShape`] if `ab.len() != n * (kd + 1)` or `work` is
/// too short.
pub fn band_factor(ab: &mut [f64], n: usize, kd: usize, work: &mut [f64]) -> Status {
    let Some(pw) = panel_width(kd) else {
        return Status::BadShape;
    };
    if !band_shape_ok(ab, n, kd) || work.len() < band_factor_work_len(kd) {
        return Status::BadShape;
    }
    let w = kd + 1;
    for i in 0..n.min(kd) {
        ab[i * w..i * w + kd - i].fill(0.0);
    }
    let p = &mut work[..NB * pw];
    let mut j0 = 0;
    while j0 < n {
        let j1 = (j0 + NB).min(n);
        let nb = j1 - j0;
        // Rows touched by the panel: j0..i_end.
        let i_end = (j1 + kd).min(n);
        // Load the panel transposed, zero outside the band and the matrix.
        p.fill(0.0);
        // Column j of M below the diagonal, M[i][j] for i in j..j + w, is every kd-th slot
        // of the band from its diagonal entry on.
        for (t, col) in p.chunks_exact_mut(pw).take(nb).enumerate() {
            let j = j0 + t;
            let count = w.min(n - j);
            let src = ab[j * w + kd..].iter().step_by(kd.max(1));
            for (dst, v) in col[t..t + count].iter_mut().zip(src) {
                *dst = *v;
            }
        }
        // Factor the panel column by column (right-looking inside the panel).
        for t in 0..nb {
            let (done, rest) = p.split_at_mut((t + 1) * pw);
            let col = &mut done[t * pw..];
            let pivot = col[t];
            if let Some(status) = pivot_status(pivot) {
                return status;
            }
            let d = sqrt(pivot);
            col[t] = d;
            let inv = 1.0 / d;
            let rows = i_end - j0;
            for v in &mut col[t + 1..rows] {
                *v *= inv;
            }
            let col: &[f64] = col;
            for (u, later) in (t + 1..nb).zip(rest.chunks_exact_mut(pw)) {
                let c = col[u];
                if c != 0.0 {
                    for (y, x) in later[u..rows].iter_mut().zip(&col[u..rows]) {
                        *y = fma(-c, *x, *y);
                    }
                }
            }
        }
        // Store the panel's columns of L.
        for (t, col) in p.chunks_exact(pw).take(nb).enumerate() {
            let j = j0 + t;
            let count = w.min(n - j);
            let dst = ab[j * w + kd..].iter_mut().step_by(kd.max(1));
            for (d, v) in dst.zip(&col[t..t + count]) {
                *d = *v;
            }
        }
        // Trailing update of rows and columns j1..i_end (lower triangle, inside the band).
        trailing_update(ab, kd, p, pw, nb, j0, j1, i_end);
        j0 = j1;
    }
    Status::Ok
}

/// `M[i][j] -= Σ_{t < nb} P[t][i - j0]·P[t][j - j0]` for `j1 <= j <= i < i_end`, on tiles of
/// [`TR`] rows × [`CH`] columns (entries above the diagonal are computed but not stored).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn trailing_update(
    ab: &mut [f64],
    kd: usize,
    p: &[f64],
    pw: usize,
    nb: usize,
    j0: usize,
    j1: usize,
    i_end: usize,
) {
    let w = kd + 1;
    let mut i0 = j1;
    while i0 < i_end {
        let nr = (i_end - i0).min(TR);
        let mut jc = j1;
        while jc < i0 + nr {
            // Valid columns of each tile row: jc..=i (all CH below the diagonal).
            let valid: [usize; TR] = core::array::from_fn(|r| {
                if r < nr {
                    (i0 + r + 1).saturating_sub(jc).min(CH)
                } else {
                    0
                }
            });
            let full = valid == [CH; TR];
            let mut a = [[0.0f64; CH]; TR];
            for (r, row) in a.iter_mut().enumerate().take(nr) {
                let i = i0 + r;
                let base = i * w + jc + kd - i;
                if full {
                    row.copy_from_slice(&ab[base..base + CH]);
                } else {
                    row[..valid[r]].copy_from_slice(&ab[base..base + valid[r]]);
                }
            }
            let mut rest = &p[..nb * pw];
            while let Some((col, tail)) = rest.split_at_checked(pw) {
                rest = tail;
                let x: &[f64; TR] = col[i0 - j0..i0 - j0 + TR].try_into().unwrap_or(&[0.0; TR]);
                let z: &[f64; CH] = col[jc - j0..jc - j0 + CH].try_into().unwrap_or(&[0.0; CH]);
                for r in 0..TR {
                    for c in 0..CH {
                        a[r][c] = fma(-x[r], z[c], a[r][c]);
                    }
                }
            }
            for (r, row) in a.iter().enumerate().take(nr) {
                let i = i0 + r;
                let base = i * w + jc + kd - i;
                if full {
                    ab[base..base + CH].copy_from_slice(row);
                } else {
                    ab[base..base + valid[r]].copy_from_slice(&row[..valid[r]]);
                }
            }
            jc += CH;
        }
        i0 += TR;
    }
}
