//! `C^(-1/2)` of a covariance block by a coupled Newton–Schulz iteration whose matrix products
//! run on FP64 tensor cores (`mma.m8n8k4.f64`, DMMA): the GPU's `ns` variant of the `eigh`
//! stage (docs/algorithm.md §4.4 step 2, §6), written once for both targets against
//! [`MmaTeam`]: one GPU thread block of [`NS_WARPS`] warps per block on the device
//! (`resolution_ns`, the DMMA instruction), and [`SerialMmaTeam`] on the host (the same phases,
//! each warp's `mma` emulated element by element from the PTX ISA's fragment layout).
//!
//! # Algorithm
//! With `B = C / c`, `c = ‖C‖_∞ >= λ_max(C)` (so the spectrum of `B` lies in `(0, 1]`),
//! `Y_0 = B`, `Z_0 = I`, each iteration forms `M = Z Y` and, with `H = a I + b M`,
//! `Y ← Y H = a Y + b·Y M`, `Z ← H Z = a Z + b·M Z` (`H` is never formed; `‖I − M‖_F` is summed
//! from the product's registers). This is the odd polynomial `p(s) = a s + b s³` applied to the block
//! matrix `[[0, Y], [Z, 0]]` (whose sign is `[[0, B^(1/2)], [B^(-1/2), 0]]`), so `Y → B^(1/2)`
//! and `Z → B^(-1/2)`; the coupled form is the stable one (Higham, *Functions of Matrices*,
//! §6.3). Every iterate is a polynomial in `B`: all matrices are symmetric and only their lower
//! `8×8` tiles are stored and computed (55 of 100 for the order 80).
//!
//! The coefficients are Chen & Chow's scaled Newton–Schulz (2014): for singular values of the
//! block matrix in `[l, 1]`, `α = √(3 / (1 + l + l²))`, `a = 3α/2`, `b = −α³/2` maps `[l, 1]`
//! onto `[p(l), 1]` (at `l → 0` the small end grows by `3√3/2 ≈ 2.6` per iteration instead of
//! 1.5). The bound `l` follows the schedule from `l_0 = NS_DESIGN_FLOOR^(1/2)`, raised to
//! `√(1 − ‖I − M‖_F)` as soon as the residual proves more (the eigenvalues of the symmetric `M`
//! then lie in `[1 − ‖I − M‖_F, 1]`); at `l = 1` the step is the classical `a = 3/2`, `b = −1/2`
//! with its quadratic convergence. The iteration ends after the step taken with
//! `‖I − M‖_F <= NS_STOP` (the step squares the residual), or without a step once the residual
//! is at most [`NS_CONVERGED`]; a block still above [`NS_STOP`] after
//! [`NS_MAX_ITERATIONS`] (a spectrum wider than the design's, κ beyond ~1e5, or an indefinite or
//! non-finite block) returns [`Status::NoConvergence`] and nothing is written: the caller
//! solves it with the one-sided Jacobi ([`super::jacobi_team::resolution_team`]).
//!
//! `Q = c^(−1/2) Z`; then, as [`crate::patch::apply_resolution`] and
//! [`crate::patch::resolution_diagonals`]: `s_k = Σ_j Q[k][j]`, `ivar_k = s_k²`,
//! `flux_k = Σ_j Q[k][j]·xflux_j / s_k`, `R[r][k] = Q[r][k] / s_r` at the core bins. The
//! per-matrix clip of [`super::jacobi::inverse_sqrt`] (`σ <= 1e-14·σ_max`) never triggers for
//! the blocks this accepts (κ <= ~1e5).
//!
//! # Storage
//! Matrices of order `n <= 80` are padded to 80 with the identity (padding rows and columns
//! are exact unit vectors through every product) and stored as 100 `8×8` tiles, tile-major
//! (`10·I + J`), each tile row-major with the column index swizzled by `c ^ 4·((r >> 1) & 1)`:
//! the DMMA fragment loads (8 rows × 4 columns, in either orientation) then hit every
//! shared-memory bank evenly ([`full_index`]), and a fragment's address advances by a
//! constant along `k`. `Y` and `Z` are computed on their 55 lower tiles and stored in both
//! triangles; `M` is computed in full: its unsymmetric rounding is what keeps the coupled
//! iteration stable (symmetrizing `M` as well as `Y` and `Z` lost four digits at κ = 1e4).
//! (Storing `Y` and `Z` as their lower tiles only, 111,872 bytes for two blocks per SM, cost
//! ~20 instructions of addressing per DMMA; full tiles take 157,952 bytes, one block of 16
//! warps per SM, and ~5.)
//!
//! # Phase rule
//! As for [`crate::team`]: within one [`MmaTeam::each`] phase no lane reads what another lane
//! writes; [`MmaTeam::each_split`] carries each warp's accumulators across a barrier so that a
//! product can overwrite one of its factors.

use crate::math::{abs, sqrt};
use crate::team::Shared;
use crate::Status;

/// Side of a DMMA tile (`m = n = 8`).
pub const NS_TILE: usize = 8;
/// Tiles per side: the padded order is `NS_TILES · NS_TILE = 80` (DESI's 74 × 74 blocks fit).
pub const NS_TILES: usize = 10;
/// Largest order this handles.
pub const NS_ORDER_MAX: usize = NS_TILES * NS_TILE;
/// Lower tiles of a padded matrix.
pub const NS_PACKED_TILES: usize = NS_TILES * (NS_TILES + 1) / 2;
/// Warps per thread block (each owns at most [`NS_SLOTS`] of the 55 output tiles).
pub const NS_WARPS: usize = 16;
/// Output tiles per warp and product, at [`NS_WARPS`] or more warps.
pub const NS_SLOTS: usize = NS_PACKED_TILES.div_ceil(NS_WARPS);
/// Lanes of a warp.
pub const NS_WARP_LANES: usize = 32;
/// The most warps a team may have (scratch sizing; the host emulation's state array).
pub const NS_MAX_WARPS: usize = 16;
/// f64 of one full (unsymmetric) padded matrix, 100 tiles of 64.
pub const NS_FULL_LEN: usize = NS_TILES * NS_TILES * NS_TILE * NS_TILE;
/// Length (f64) of the reduction scratch: one partial per thread and one per 32 of them.
pub const NS_SCRATCH_LEN: usize = NS_MAX_WARPS * NS_WARP_LANES + NS_MAX_WARPS + 16;
/// Shared memory (f64) of `resolution_ns`: `Y`, `Z` and `M`/`H` (full tiles) and the scratch:
/// 19,744 f64 = 157,952 bytes (one block of 16 warps per H100 SM).
pub const NS_SHARED_LEN: usize = 3 * NS_FULL_LEN + NS_SCRATCH_LEN;
/// Lower end (in eigenvalues of `B = C/‖C‖_∞`) of the interval the coefficient schedule is
/// designed for: blocks with `λ_min(C)/‖C‖_∞ >= 1e-5` converge within the schedule
/// (`‖C‖_∞ <= ~3 λ_max` on covariance blocks, so κ up to ~3e4; DESI's clean blocks have
/// κ <= ~1e4), wider spectra need more iterations and beyond ~1e5 reach the cap.
pub const NS_DESIGN_FLOOR: f64 = 1e-5;
/// The iteration ends after the step taken at `‖I − ZY‖_F <=` this (the step squares it:
/// ~1e-12 left, at the rounding level of the products for κ <= 1e4).
pub const NS_STOP: f64 = 1e-6;
/// A residual at or below this ends the iteration without a further step: `Z` then differs
/// from `B^(-1/2)` by about half of it relatively (in the eigenbasis), below the products'
/// own rounding for κ >= 10 (saves the last `Y`, `Z` update, 5% of the DMMAs).
pub const NS_CONVERGED: f64 = 1e-11;
/// Iterations at most (the design interval needs 11; blocks still above [`NS_STOP`] after this
/// many are left to the Jacobi).
pub const NS_MAX_ITERATIONS: usize = 14;

/// `(row, column)` of index `idx < NS_FULL_LEN` of a full matrix ([`full_index`]).
#[inline(always)]
pub(crate) fn unpack_full(idx: usize) -> (usize, usize) {
    let t = idx / 64;
    let li = idx % 64;
    let r = li / NS_TILE;
    let c = (li % NS_TILE) ^ (4 * ((r >> 1) & 1));
    ((t / NS_TILES) * NS_TILE + r, (t % NS_TILES) * NS_TILE + c)
}

/// The 55 lower tiles `(I, J)` in storage order.
const TILES: [(u8, u8); NS_PACKED_TILES] = {
    let mut t = [(0u8, 0u8); NS_PACKED_TILES];
    let mut i = 0;
    let mut k = 0;
    while i < NS_TILES {
        let mut j = 0;
        while j <= i {
            t[k] = (i as u8, j as u8);
            k += 1;
            j += 1;
        }
        i += 1;
    }
    t
};

/// A thread block of warps that run phases separated by barriers and multiply `8×4` by `4×8`
/// FP64 fragments (`mma.m8n8k4.row.col.f64`). `L` is the number of lanes of one warp that one
/// call of a phase closure holds: 1 on the GPU (the calling thread), 32 on the host emulation
/// (the whole warp, lane `lanes[i]` in slot `i`).
pub trait MmaTeam<const L: usize> {
    /// Number of warps.
    fn warps(&self) -> usize;
    /// Runs `f(warp, lanes)` for every warp (the GPU thread: its warp and lane), then waits for
    /// all of them (a barrier).
    fn each<F: FnMut(usize, [usize; L])>(&self, f: F);
    /// Runs `s = f(warp, lanes)` for every warp, a barrier, `g(warp, lanes, s)` for every warp
    /// and a barrier: `s` (a warp's registers) crosses the first barrier.
    fn each_split<S: Copy, F: FnMut(usize, [usize; L]) -> S, G: FnMut(usize, [usize; L], S)>(
        &self,
        f: F,
        g: G,
    );
    /// `D = A·B + C` of one warp: slot `i` holds lane `lanes[i]`'s fragment values, `a` its
    /// element of `A` (`8×4`, row `lane / 4`, column `lane % 4`), `b` of `B` (`4×8`, row
    /// `lane % 4`, column `lane / 4`), `c` and the result its two elements of `C`, `D` (`8×8`,
    /// row `lane / 4`, columns `2·(lane % 4)` and `+1`). Called by all 32 lanes in uniform
    /// control flow.
    fn mma(&self, a: [f64; L], b: [f64; L], c: [[f64; 2]; L]) -> [[f64; 2]; L];
    /// Sum of `v` over the 32 lanes of one warp, returned to each lane (slot `i`: lane
    /// `lanes[i]`): a butterfly (`s ← s + s[lane ^ m]` for `m = 16, 8, 4, 2, 1`; f64 addition
    /// is commutative, so every lane gets the same bits). Called by all 32 lanes in uniform
    /// control flow.
    fn warp_sum(&self, v: [f64; L], lanes: [usize; L]) -> [f64; L];
}

/// Host emulation of an [`MmaTeam`]: warps run one after the other, each phase closure sees
/// all 32 lanes of its warp, and `mma` computes `D = C + A·B` from the fragment layout of the
/// PTX ISA (written out here independently of the loads of [`resolution_ns`]), summing over
/// `k` in order with fused multiply-adds.
#[derive(Clone, Copy, Debug)]
pub struct SerialMmaTeam {
    /// Warps emulated (at least [`NS_WARPS`], at most [`NS_MAX_WARPS`]).
    pub warps: usize,
    /// Run the warps of each phase in reverse order (with `false`, in order: comparing the two
    /// shows whether a warp reads, within a phase, what another writes).
    pub reverse: bool,
}

impl SerialMmaTeam {
    /// Warp `i` of the order of this emulation.
    fn warp(&self, i: usize) -> usize {
        if self.reverse {
            self.warps - 1 - i
        } else {
            i
        }
    }
}

/// The 32 lanes `0..32` of a warp.
const ALL_LANES: [usize; NS_WARP_LANES] = {
    let mut l = [0usize; NS_WARP_LANES];
    let mut i = 0;
    while i < NS_WARP_LANES {
        l[i] = i;
        i += 1;
    }
    l
};

impl MmaTeam<NS_WARP_LANES> for SerialMmaTeam {
    fn warps(&self) -> usize {
        self.warps
    }

    fn each<F: FnMut(usize, [usize; NS_WARP_LANES])>(&self, mut f: F) {
        for i in 0..self.warps {
            f(self.warp(i), ALL_LANES);
        }
    }

    fn each_split<
        S: Copy,
        F: FnMut(usize, [usize; NS_WARP_LANES]) -> S,
        G: FnMut(usize, [usize; NS_WARP_LANES], S),
    >(
        &self,
        mut f: F,
        mut g: G,
    ) {
        let mut state: [Option<S>; NS_MAX_WARPS] = [None; NS_MAX_WARPS];
        let warps = self.warps.min(NS_MAX_WARPS);
        for i in 0..warps {
            let w = self.warp(i);
            state[w] = Some(f(w, ALL_LANES));
        }
        for i in 0..warps {
            let w = self.warp(i);
            if let Some(s) = state[w] {
                g(w, ALL_LANES, s);
            }
        }
    }

    fn mma(
        &self,
        a: [f64; NS_WARP_LANES],
        b: [f64; NS_WARP_LANES],
        c: [[f64; 2]; NS_WARP_LANES],
    ) -> [[f64; 2]; NS_WARP_LANES] {
        // PTX ISA, "Matrix fragments for mma.m8n8k4 with .f64 floating point type":
        // A: row = laneid >> 2, col = laneid % 4; B: row = laneid % 4, col = laneid >> 2;
        // C/D: row = laneid >> 2 (groupID), col = 2 * (laneid % 4) + i.
        let mut am = [[0.0; 4]; 8];
        let mut bm = [[0.0; 8]; 4];
        let mut cm = [[0.0; 8]; 8];
        for lane in 0..NS_WARP_LANES {
            am[lane >> 2][lane % 4] = a[lane];
            bm[lane % 4][lane >> 2] = b[lane];
            cm[lane >> 2][2 * (lane % 4)] = c[lane][0];
            cm[lane >> 2][2 * (lane % 4) + 1] = c[lane][1];
        }
        let mut d = [[0.0; 2]; NS_WARP_LANES];
        for (lane, out) in d.iter_mut().enumerate() {
            let row = lane >> 2;
            for (i, o) in out.iter_mut().enumerate() {
                let col = 2 * (lane % 4) + i;
                let mut sum = cm[row][col];
                for (k, brow) in bm.iter().enumerate() {
                    sum = crate::math::fma(am[row][k], brow[col], sum);
                }
                *o = sum;
            }
        }
        d
    }

    fn warp_sum(
        &self,
        v: [f64; NS_WARP_LANES],
        lanes: [usize; NS_WARP_LANES],
    ) -> [f64; NS_WARP_LANES] {
        // Slot i holds lane lanes[i] (ALL_LANES: i itself); the butterfly by lane number.
        let mut s = [0.0; NS_WARP_LANES];
        for (i, &lane) in lanes.iter().enumerate() {
            s[lane] = v[i];
        }
        let mut m = 16;
        while m > 0 {
            let prev = s;
            for (lane, x) in s.iter_mut().enumerate() {
                *x = prev[lane] + prev[lane ^ m];
            }
            m >>= 1;
        }
        let mut out = [0.0; NS_WARP_LANES];
        for (i, &lane) in lanes.iter().enumerate() {
            out[i] = s[lane];
        }
        out
    }
}

/// Offset of element `(r, c)` (`r, c < 8`) inside a stored tile (row-major, swizzled).
#[inline(always)]
pub(crate) const fn local(r: usize, c: usize) -> usize {
    r * NS_TILE + (c ^ (4 * ((r >> 1) & 1)))
}

/// One warp's accumulators: `NS_SLOTS` tiles of `L` lanes' two values.
type Acc<const L: usize> = [[[f64; 2]; L]; NS_SLOTS];

/// Index of element `(r, c)` of a padded matrix (tile-major `10·I + J`, swizzled tiles).
#[inline(always)]
pub const fn full_index(r: usize, c: usize) -> usize {
    ((r / NS_TILE) * NS_TILES + c / NS_TILE) * NS_TILE * NS_TILE + local(r % NS_TILE, c % NS_TILE)
}

/// `A` fragment of rows `8x..` and columns `8y + 4h..` of the full matrix `m`:
/// `m[8x + lane/4][8y + 4h + lane%4]`.
#[inline(always)]
pub(crate) fn fragment_full_a(m: Shared, x: usize, y: usize, h: usize, lane: usize) -> f64 {
    let (g, t) = (lane >> 2, lane & 3);
    // SAFETY: x, y < NS_TILES give an index below NS_FULL_LEN, which the view holds.
    unsafe { m.get_unchecked((x * NS_TILES + y) * 64 + local(g, 4 * h + t)) }
}

/// `B` fragment of rows `8y + 4h..` and columns `8x..` of the full matrix `m`:
/// `m[8y + 4h + lane%4][8x + lane/4]`.
#[inline(always)]
pub(crate) fn fragment_full_b(m: Shared, x: usize, y: usize, h: usize, lane: usize) -> f64 {
    let (g, t) = (lane >> 2, lane & 3);
    // SAFETY: as fragment_full_a.
    unsafe { m.get_unchecked((y * NS_TILES + x) * 64 + local(4 * h + t, g)) }
}

/// Output tiles `w + s·warps` (`s < NS_SLOTS`) of a product, for tile numbers `first..end`
/// (`tile(t)` gives the `(row, column)` tile of number `t`): `Σ_k A(row, k)·B(k, column)` with
/// `fa(row, k, h, lane)` and `fb(column, k, h, lane)` the fragments, in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn product_tiles<const L: usize, T, TI, FA, FB>(
    team: &T,
    first: usize,
    end: usize,
    tile: TI,
    fa: FA,
    fb: FB,
    w: usize,
    lanes: [usize; L],
) -> Acc<L>
where
    T: MmaTeam<L>,
    TI: Fn(usize) -> (usize, usize),
    FA: Fn(usize, usize, usize, usize) -> f64,
    FB: Fn(usize, usize, usize, usize) -> f64,
{
    let warps = team.warps();
    let mut acc: Acc<L> = [[[0.0; 2]; L]; NS_SLOTS];
    for kt in 0..NS_TILES {
        for h in 0..2 {
            unroll!(s in [0, 1, 2, 3, 4, 5, 6] => {
                let t = first + w + s * warps;
                if s < NS_SLOTS && t < end {
                    let (ti, tj) = tile(t);
                    let mut va = [0.0; L];
                    let mut vb = [0.0; L];
                    for i in 0..L {
                        va[i] = fa(ti, kt, h, lanes[i]);
                        vb[i] = fb(tj, kt, h, lanes[i]);
                    }
                    acc[s] = team.mma(va, vb, acc[s]);
                }
            });
        }
    }
    acc
}

/// Stores the tiles of [`product_tiles`] (same `first`, `end`, `w`) in the full matrix `d`:
/// `place(t)` gives tile `t`'s `(row, column)` tile and whether the matrix is symmetric. A
/// symmetric product is computed on its lower tiles only and each is also stored transposed;
/// a diagonal tile stores its lower triangle in both triangles (an exactly symmetric iterate:
/// keeping the two rounded triangles cost two orders of magnitude of accuracy at κ = 1e4).
/// `combine = Some((a, b))` stores `a·old + b·product` (the step `Y ← aY + b·YM` without
/// forming `H = aI + bM`).
#[inline(always)]
fn store_tiles<const L: usize, P: Fn(usize) -> ((usize, usize), bool)>(
    d: Shared,
    (first, end, warps): (usize, usize, usize),
    place: P,
    combine: Option<(f64, f64)>,
    w: usize,
    lanes: [usize; L],
    acc: &Acc<L>,
) {
    unroll!(s in [0, 1, 2, 3, 4, 5, 6] => {
        let t = first + w + s * warps;
        if s < NS_SLOTS && t < end {
            let ((ti, tj), symmetric) = place(t);
            let b = (ti * NS_TILES + tj) * 64;
            let bt = (tj * NS_TILES + ti) * 64;
            for i in 0..L {
                let (g, q) = (lanes[i] >> 2, lanes[i] & 3);
                for (e, &p) in acc[s][i].iter().enumerate() {
                    let c = 2 * q + e;
                    // With `combine = (a, b)`: `a·d + b·p`, `d` the element's old value
                    // (read at the lower position this lane owns, never written by another).
                    let v = match combine {
                        Some((ca, cb)) if !symmetric || ti != tj || g >= c => {
                            ca * d.get(b + local(g, c)) + cb * p
                        }
                        _ => p,
                    };
                    if !symmetric {
                        d.set(b + local(g, c), v);
                    } else if ti != tj {
                        d.set(b + local(g, c), v);
                        d.set(bt + local(c, g), v);
                    } else if g >= c {
                        d.set(b + local(g, c), v);
                        d.set(b + local(c, g), v);
                    }
                }
            }
        }
    });
}

/// Adds `Σ (δ_rc − M_rc)²` over the elements of the tiles of [`product_tiles`] (same `first`,
/// `end`, `w`; tiles of a full matrix) that each lane holds to `partial`.
#[inline(always)]
fn residual_partials<const L: usize>(
    acc: &Acc<L>,
    (first, end, warps): (usize, usize, usize),
    w: usize,
    lanes: [usize; L],
    partial: &mut [f64; L],
) {
    unroll!(s in [0, 1, 2, 3, 4, 5, 6] => {
        let t = first + w + s * warps;
        if s < NS_SLOTS && t < end {
            let (ti, tj) = full_tile(t);
            for i in 0..L {
                let (g, q) = (lanes[i] >> 2, lanes[i] & 3);
                for (e, &v) in acc[s][i].iter().enumerate() {
                    let delta = if ti == tj && g == 2 * q + e { 1.0 } else { 0.0 };
                    let r = delta - v;
                    partial[i] += r * r;
                }
            }
        }
    });
}

/// The lower tile of number `t` (row-major order of the lower triangle).
#[inline(always)]
fn lower_tile(t: usize) -> (usize, usize) {
    let (i, j) = TILES[t];
    (i as usize, j as usize)
}

/// The tile of number `t` of a full matrix (row-major tiles).
#[inline(always)]
fn full_tile(t: usize) -> (usize, usize) {
    (t / NS_TILES, t % NS_TILES)
}

/// Iterations and outcome of [`resolution_ns`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NsStats {
    /// Newton–Schulz iterations taken (products `Z·Y` formed).
    pub iterations: usize,
    /// `‖I − ZY‖_F` at the last test.
    pub residual: f64,
}

/// The per-iteration coefficients `(a, b)` of `H = a I + b M` for singular values in `[l, 1]`,
/// and the new lower bound `p(l)` (Chen & Chow's scaled Newton–Schulz).
#[inline(always)]
pub fn ns_coefficients(l: f64) -> (f64, f64, f64) {
    let l = if l < 1.0 { l } else { 1.0 };
    let alpha = sqrt(3.0 / (1.0 + l + l * l));
    let (a, b) = (1.5 * alpha, -0.5 * alpha * alpha * alpha);
    (a, b, l * (a + b * l * l))
}

/// Sum over the team of one partial per thread (`scratch[tid]`, `tid = 32·warp + lane`):
/// two phases, the same bits on every lane.
#[inline(always)]
fn team_sum<const L: usize, T: MmaTeam<L>>(team: &T, scratch: Shared) -> f64 {
    let threads = team.warps() * NS_WARP_LANES;
    let groups = threads.div_ceil(NS_WARP_LANES);
    let second = NS_MAX_WARPS * NS_WARP_LANES;
    team.each(|w, lanes| {
        for &lane in lanes.iter() {
            let tid = w * NS_WARP_LANES + lane;
            if tid < groups {
                let mut s = 0.0;
                for k in 0..NS_WARP_LANES {
                    s += scratch.get(tid * NS_WARP_LANES + k);
                }
                scratch.set(second + tid, s);
            }
        }
    });
    let mut total = 0.0;
    team.each(|_, _| {
        let mut s = 0.0;
        for k in 0..groups {
            s += scratch.get(second + k);
        }
        total = s;
    });
    total
}

/// The first phases of both Newton–Schulz variants: `C` (`cov(e)`, element `e = i·n + j`, each
/// read once) loaded into `y` padded to 80 with the identity, its absolute row sums staged in
/// `scratch`, then `y ← C / c` and `z ← I` with `c = ‖C‖_∞`, which it returns (NaN when a row
/// sum is not finite). Three phases; the same value on every lane.
#[inline(always)]
pub(crate) fn load_scaled<const L: usize, T: MmaTeam<L>, C: Fn(usize) -> f64>(
    team: &T,
    cov: C,
    n: usize,
    y: Shared,
    z: Shared,
    scratch: Shared,
) -> f64 {
    let threads = team.warps() * NS_WARP_LANES;
    // Load C into Y (identity padding): each element read once from `cov`.
    team.each(|w, lanes| {
        for &lane in lanes.iter() {
            let mut idx = w * NS_WARP_LANES + lane;
            while idx < NS_FULL_LEN {
                let (r, c) = unpack_full(idx);
                let v = if r < n && c < n {
                    cov(r * n + c)
                } else if r == c {
                    1.0
                } else {
                    0.0
                };
                y.set(idx, v);
                idx += threads;
            }
        }
    });
    // Absolute row sums (from shared memory: no serial chain of global loads).
    team.each(|w, lanes| {
        for &lane in lanes.iter() {
            let k = w * NS_WARP_LANES + lane;
            if k < n {
                let mut s = 0.0;
                for j in 0..n {
                    s += abs(y.get(full_index(k, j)));
                }
                scratch.set(k, s);
            }
        }
    });
    // c = ‖C‖_∞; B = C / c, Z = I.
    let mut norm = 0.0;
    team.each(|w, lanes| {
        let mut c = 0.0f64;
        let mut finite = true;
        for k in 0..n {
            let s = scratch.get(k);
            finite &= s.is_finite();
            c = c.max(s);
        }
        norm = if finite { c } else { f64::NAN };
        for &lane in lanes.iter() {
            let tid = w * NS_WARP_LANES + lane;
            let mut idx = tid;
            while idx < NS_FULL_LEN {
                let (r, col) = unpack_full(idx);
                if r < n && col < n {
                    y.set(idx, y.get(idx) / norm);
                }
                z.set(idx, if r == col { 1.0 } else { 0.0 });
                idx += threads;
            }
        }
    });
    norm
}

/// The iteration of the module documentation on `C` (`cov(e)`: element `e = i·n + j` of the
/// row-major `(n, n)` block, read during the first phase): on [`Status::Ok`] the `Z` part of
/// `smem` (see [`ns_z`]) holds `(C/c)^(-1/2)` and the returned factor is `c^(-1/2)`, so that
/// `Q = C^(-1/2)` is that factor times `Z`. [`Status::NoConvergence`]: not converged within
/// [`NS_MAX_ITERATIONS`], or a non-finite or non-positive block. [`Status::BadShape`]: `n`
/// outside `1..=80`, a short `smem`, or fewer than [`NS_WARPS`] / more than [`NS_MAX_WARPS`]
/// warps. Identical on every lane.
pub fn inverse_sqrt_ns_iterate<const L: usize, T: MmaTeam<L>, C: Fn(usize) -> f64>(
    team: &T,
    cov: C,
    n: usize,
    smem: Shared,
    stats: &mut NsStats,
) -> (Status, f64) {
    *stats = NsStats::default();
    let warps = team.warps();
    if n == 0
        || n > NS_ORDER_MAX
        || !(NS_WARPS..=NS_MAX_WARPS).contains(&warps)
        || smem.len() < NS_SHARED_LEN
    {
        return (Status::BadShape, 0.0);
    }
    let y = smem.sub(0, NS_FULL_LEN);
    let z = ns_z(smem);
    let m = smem.sub(2 * NS_FULL_LEN, NS_FULL_LEN);
    let scratch = smem.sub(3 * NS_FULL_LEN, NS_SCRATCH_LEN);
    let norm = load_scaled(team, cov, n, y, z, scratch);
    // NaN or non-positive: leave the block to the Jacobi (which reports it).
    if !(norm > 0.0 && norm.is_finite()) {
        return (Status::NoConvergence, 0.0);
    }
    let mut l = sqrt(NS_DESIGN_FLOOR);
    let mut converged = false;
    for it in 0..NS_MAX_ITERATIONS {
        // M = Z·Y, all 100 tiles (its unsymmetric rounding carries the coupled iteration's
        // stability: symmetrizing it as well as Y and Z loses it), in two passes of at most
        // NS_SLOTS tiles per warp.
        let half = NS_SLOTS * warps;
        team.each(|w, lanes| {
            let mut first = 0;
            let mut partial = [0.0; L];
            while first < NS_TILES * NS_TILES {
                let end = (first + half).min(NS_TILES * NS_TILES);
                let acc = product_tiles(
                    team,
                    first,
                    end,
                    full_tile,
                    move |x, k, h, lane| fragment_full_a(z, x, k, h, lane),
                    move |x, k, h, lane| fragment_full_b(y, x, k, h, lane),
                    w,
                    lanes,
                );
                residual_partials(&acc, (first, end, warps), w, lanes, &mut partial);
                store_tiles(
                    m,
                    (first, end, warps),
                    |t| (full_tile(t), false),
                    None,
                    w,
                    lanes,
                    &acc,
                );
                first = end;
            }
            // ‖I − M‖_F² partials, from the registers.
            for (i, &lane) in lanes.iter().enumerate() {
                scratch.set(w * NS_WARP_LANES + lane, partial[i]);
            }
        });
        let residual = sqrt(team_sum(team, scratch));
        stats.iterations = it + 1;
        stats.residual = residual;
        if !residual.is_finite() || residual > 1e3 {
            break;
        }
        if residual < 1.0 {
            let proven = sqrt(1.0 - residual);
            if proven > l {
                l = proven;
            }
        }
        if residual <= NS_CONVERGED {
            // Z is already B^(-1/2) to rounding: the step would only confirm it.
            converged = true;
            break;
        }
        let last = residual <= NS_STOP;
        let (a, b, next) = ns_coefficients(l);
        l = next;
        // Y ← Y·H = aY + b·YM, then Z ← H·Z = aZ + b·MZ (H = aI + bM is never formed): lower
        // tiles (the iterates are symmetric), each product kept in registers across a barrier.
        let lower = (0, NS_PACKED_TILES, warps);
        team.each_split(
            |w, lanes| {
                product_tiles(
                    team,
                    0,
                    NS_PACKED_TILES,
                    lower_tile,
                    move |x, k, h, lane| fragment_full_a(y, x, k, h, lane),
                    move |x, k, h, lane| fragment_full_b(m, x, k, h, lane),
                    w,
                    lanes,
                )
            },
            |w, lanes, acc: Acc<L>| {
                store_tiles(
                    y,
                    lower,
                    |t| (lower_tile(t), true),
                    Some((a, b)),
                    w,
                    lanes,
                    &acc,
                )
            },
        );
        team.each_split(
            |w, lanes| {
                product_tiles(
                    team,
                    0,
                    NS_PACKED_TILES,
                    lower_tile,
                    move |x, k, h, lane| fragment_full_a(m, x, k, h, lane),
                    move |x, k, h, lane| fragment_full_b(z, x, k, h, lane),
                    w,
                    lanes,
                )
            },
            |w, lanes, acc: Acc<L>| {
                store_tiles(
                    z,
                    lower,
                    |t| (lower_tile(t), true),
                    Some((a, b)),
                    w,
                    lanes,
                    &acc,
                )
            },
        );
        if last {
            converged = true;
            break;
        }
    }
    if !converged {
        return (Status::NoConvergence, 0.0);
    }
    (Status::Ok, 1.0 / sqrt(norm))
}

/// Resolution of one core spectrum from its covariance block by the Newton–Schulz inverse
/// square root (module documentation): the outputs of
/// [`super::jacobi_team::resolution_team`] (to the iteration's accuracy), or
/// [`Status::NoConvergence`] with nothing written.
///
/// # Parameters
/// - `cov(e)`: element `e = i·n + j` of the row-major `(n, n)` `C_bb` (symmetric positive
///   definite), read once per element during the first phase.
/// - `n`: order, at most [`NS_ORDER_MAX`].
/// - `xflux`, `xflux_stride`, `ndiag`, `k_min..k_max`, `flux`, `ivar`, `rdiags`, `out_stride`:
///   as [`super::jacobi_team::resolution_team`].
/// - `smem`: at least [`NS_SHARED_LEN`] f64 shared by the team.
///
/// # Returns
/// [`Status::Ok`] (outputs written); [`Status::NoConvergence`] (not converged within
/// [`NS_MAX_ITERATIONS`], or a non-finite or non-positive block, or a zero / non-finite row sum:
/// nothing written, solve it with the Jacobi); [`Status::BadShape`] for short buffers, bad
/// ranges, `n > 80` or fewer than [`NS_WARPS`] / more than [`NS_MAX_WARPS`] warps. Identical on
/// every lane.
#[allow(clippy::too_many_arguments)]
pub fn resolution_ns<const L: usize, T: MmaTeam<L>, C: Fn(usize) -> f64>(
    team: &T,
    cov: C,
    n: usize,
    (xflux, xflux_stride): (&[f64], usize),
    (ndiag, k_min, k_max): (usize, usize, usize),
    (flux, ivar, rdiags, out_stride): (Shared, Shared, Shared, usize),
    smem: Shared,
    stats: &mut NsStats,
) -> Status {
    *stats = NsStats::default();
    if !resolution_shape_ok(
        n,
        (xflux, xflux_stride),
        (ndiag, k_min, k_max),
        (flux, ivar, rdiags, out_stride),
    ) {
        return Status::BadShape;
    }
    let (status, qscale) = inverse_sqrt_ns_iterate(team, cov, n, smem, stats);
    if status != Status::Ok {
        return status;
    }
    resolution_from_z(
        team,
        n,
        qscale,
        (xflux, xflux_stride),
        (ndiag, k_min, k_max),
        (flux, ivar, rdiags, out_stride),
        smem,
    )
}

/// Whether the buffers and ranges of a resolution call fit (see [`resolution_ns`]).
#[inline(always)]
pub(crate) fn resolution_shape_ok(
    n: usize,
    (xflux, xflux_stride): (&[f64], usize),
    (ndiag, k_min, k_max): (usize, usize, usize),
    (flux, ivar, rdiags, out_stride): (Shared, Shared, Shared, usize),
) -> bool {
    let ndiagonal = 2 * ndiag + 1;
    !(n == 0
        || n > NS_ORDER_MAX
        || flux.len() < n
        || ivar.len() < n
        || xflux.len() < (n - 1) * xflux_stride + 1
        || k_max > n
        || k_min > k_max
        || rdiags.len() < (ndiagonal - 1) * out_stride + (k_max - k_min))
}

/// The resolution step shared by both variants, from `Z` ([`ns_z`]) and `qscale = c^(-1/2)`
/// (`Q = qscale·Z`): row sums, ivar, flux and Rdiags as [`resolution_ns`] documents (`M` and the
/// scratch of `smem` are reused). [`Status::NoConvergence`] for a zero or non-finite row sum
/// (nothing written). Arguments as [`resolution_ns`], already checked.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn resolution_from_z<const L: usize, T: MmaTeam<L>>(
    team: &T,
    n: usize,
    qscale: f64,
    (xflux, xflux_stride): (&[f64], usize),
    (ndiag, k_min, k_max): (usize, usize, usize),
    (flux, ivar, rdiags, out_stride): (Shared, Shared, Shared, usize),
    smem: Shared,
) -> Status {
    let ndiagonal = 2 * ndiag + 1;
    let threads = team.warps() * NS_WARP_LANES;
    let z = ns_z(smem);
    let m = smem.sub(2 * NS_FULL_LEN, NS_FULL_LEN);
    let scratch = smem.sub(3 * NS_FULL_LEN, NS_SCRATCH_LEN);
    // Q = Z / √c: row sums, ivar, flux (row sums and the staged xflux kept in m, free now).
    let row_sum = m.sub(0, NS_ORDER_MAX);
    let xstaged = m.sub(NS_ORDER_MAX, NS_ORDER_MAX);
    team.each(|w, lanes| {
        for &lane in lanes.iter() {
            let j = w * NS_WARP_LANES + lane;
            if j < n {
                xstaged.set(j, xflux[j * xflux_stride]);
            }
        }
    });
    team.each(|w, lanes| {
        for &lane in lanes.iter() {
            let k = w * NS_WARP_LANES + lane;
            if k < n {
                let (mut s, mut qx) = (0.0, 0.0);
                for j in 0..n {
                    let v = z.get(full_index(k, j)) * qscale;
                    s += v;
                    qx += v * xstaged.get(j);
                }
                row_sum.set(k, s);
                scratch.set(k, qx);
            }
        }
    });
    let mut finite = true;
    team.each(|_, _| {
        let mut ok = true;
        for k in 0..n {
            let s = row_sum.get(k);
            ok &= s.is_finite() && s != 0.0;
        }
        finite = ok;
    });
    if !finite {
        return Status::NoConvergence;
    }
    let ncore = k_max - k_min;
    team.each(|w, lanes| {
        for &lane in lanes.iter() {
            let tid = w * NS_WARP_LANES + lane;
            if tid < n {
                let s = row_sum.get(tid);
                ivar.set(tid, s * s);
                flux.set(tid, scratch.get(tid) / s);
            }
            let mut e = tid;
            while e < ndiagonal * ncore {
                let (d, j) = (e / ncore, e % ncore);
                let k = k_min + j;
                let row = (k + d).wrapping_sub(ndiag);
                let value = if k + d >= ndiag && row < n {
                    z.get(full_index(row, k)) * qscale / row_sum.get(row)
                } else {
                    0.0
                };
                rdiags.set(d * out_stride + j, value);
                e += threads;
            }
        }
    });
    Status::Ok
}

/// The `Z` matrix ([`full_index`]) inside the shared memory of [`inverse_sqrt_ns_iterate`].
pub fn ns_z(smem: Shared) -> Shared {
    smem.sub(NS_FULL_LEN, NS_FULL_LEN)
}

/// `Q = C^(-1/2)` by [`inverse_sqrt_ns_iterate`], written to `q` (`(n, n)` row-major) on
/// [`Status::Ok`] (tests and benchmarks; the kernel uses [`resolution_ns`]).
pub fn inverse_sqrt_ns<const L: usize, T: MmaTeam<L>>(
    team: &T,
    cov: &[f64],
    n: usize,
    q: Shared,
    smem: Shared,
    stats: &mut NsStats,
) -> Status {
    inverse_sqrt_with(
        |t, c, n, s, st| inverse_sqrt_ns_iterate(t, c, n, s, st),
        team,
        cov,
        n,
        q,
        smem,
        stats,
    )
}

/// [`inverse_sqrt_ns`] with the iteration `iterate` of a variant (host tests and benchmarks).
pub(crate) fn inverse_sqrt_with<const L: usize, T: MmaTeam<L>>(
    iterate: impl FnOnce(&T, &dyn Fn(usize) -> f64, usize, Shared, &mut NsStats) -> (Status, f64),
    team: &T,
    cov: &[f64],
    n: usize,
    q: Shared,
    smem: Shared,
    stats: &mut NsStats,
) -> Status {
    if cov.len() < n * n || q.len() < n * n {
        return Status::BadShape;
    }
    let read = |e: usize| cov[e];
    let (status, qscale) = iterate(team, &read, n, smem, stats);
    if status != Status::Ok {
        return status;
    }
    let z = ns_z(smem);
    let threads = team.warps() * NS_WARP_LANES;
    team.each(|w, lanes| {
        for &lane in lanes.iter() {
            let mut e = w * NS_WARP_LANES + lane;
            while e < n * n {
                q.set(e, z.get(full_index(e / n, e % n)) * qscale);
                e += threads;
            }
        }
    });
    Status::Ok
}

/// The calling thread block as an [`MmaTeam`] (`blockDim.x / 32` warps; each thread holds its
/// own lane, `L = 1`), with the DMMA instruction.
#[cfg(target_arch = "nvptx64")]
#[derive(Clone, Copy, Debug)]
pub struct BlockMmaTeam;

#[cfg(target_arch = "nvptx64")]
impl BlockMmaTeam {
    /// `(warp, lane)` of the calling thread.
    #[inline(always)]
    fn me() -> (usize, usize) {
        // SAFETY: reading %tid.x has no preconditions.
        let tid = unsafe { core::arch::nvptx::_thread_idx_x() } as usize;
        (tid / NS_WARP_LANES, tid % NS_WARP_LANES)
    }
}

#[cfg(target_arch = "nvptx64")]
impl MmaTeam<1> for BlockMmaTeam {
    #[inline(always)]
    fn warps(&self) -> usize {
        // SAFETY: reading %ntid.x has no preconditions.
        unsafe { core::arch::nvptx::_block_dim_x() as usize / NS_WARP_LANES }
    }

    #[inline(always)]
    fn each<F: FnMut(usize, [usize; 1])>(&self, mut f: F) {
        let (w, lane) = Self::me();
        f(w, [lane]);
        // SAFETY: every thread of the block reaches this barrier the same number of times
        // (`each` is called in uniform control flow).
        unsafe { core::arch::nvptx::_syncthreads() };
    }

    #[inline(always)]
    fn each_split<S: Copy, F: FnMut(usize, [usize; 1]) -> S, G: FnMut(usize, [usize; 1], S)>(
        &self,
        mut f: F,
        mut g: G,
    ) {
        let (w, lane) = Self::me();
        let s = f(w, [lane]);
        // SAFETY: as in `each`.
        unsafe { core::arch::nvptx::_syncthreads() };
        g(w, [lane], s);
        // SAFETY: as in `each`.
        unsafe { core::arch::nvptx::_syncthreads() };
    }

    #[inline(always)]
    fn mma(&self, a: [f64; 1], b: [f64; 1], c: [[f64; 2]; 1]) -> [[f64; 2]; 1] {
        let (d0, d1): (f64, f64);
        // SAFETY: `mma.sync.aligned` needs the 32 lanes of the warp to execute it together,
        // which the trait's contract (uniform control flow per warp) guarantees; it reads and
        // writes registers only; the PTX targets sm_80+, where the f64 shape exists.
        unsafe {
            core::arch::asm!(
                "mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {{{0}, {1}}}, {{{2}}}, {{{3}}}, {{{4}, {5}}};",
                out(reg64) d0,
                out(reg64) d1,
                in(reg64) a[0],
                in(reg64) b[0],
                in(reg64) c[0][0],
                in(reg64) c[0][1],
                options(nostack, nomem),
            );
        }
        [[d0, d1]]
    }

    #[inline(always)]
    fn warp_sum(&self, v: [f64; 1], _lanes: [usize; 1]) -> [f64; 1] {
        let mut sum = v[0];
        let mut m = 16;
        while m > 0 {
            let bits = sum.to_bits();
            // SAFETY: all 32 lanes of the warp execute this shuffle together (the trait's
            // contract: uniform control flow per warp).
            let (lo, hi) = unsafe {
                (
                    shfl_bfly(u32::MAX, bits as u32 as i32, m, 0x1f),
                    shfl_bfly(u32::MAX, (bits >> 32) as u32 as i32, m, 0x1f),
                )
            };
            sum += f64::from_bits(((hi as u32 as u64) << 32) | lo as u32 as u64);
            m >>= 1;
        }
        [sum]
    }
}

#[cfg(target_arch = "nvptx64")]
extern "C" {
    /// `shfl.sync.bfly.b32`: the value of lane `laneid ^ lane_mask` among the lanes of `mask`.
    #[link_name = "llvm.nvvm.shfl.sync.bfly.i32"]
    fn shfl_bfly(mask: u32, value: i32, lane_mask: i32, clamp: i32) -> i32;
}
