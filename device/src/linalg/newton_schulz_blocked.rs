//! The GPU's `ns2` variant of the `eigh` stage (`DESI_EIGH_KERNEL=ns2`, kernel
//! `resolution_ns2`): the coupled Newton–Schulz inverse square root of
//! [`super::newton_schulz`] (same storage, same DMMA products, same stopping rule, same
//! resolution step), reorganized to move less data through shared memory, wait at fewer
//! barriers and take fewer iterations on the common well-conditioned blocks.
//!
//! # Differences from `ns`
//! - **Register blocking.** Each warp computes `16×16` super-tiles (`2×2` DMMA tiles): per
//!   `k` step it loads two `A` and two `B` fragments for four DMMAs, half the shared-memory
//!   traffic of `ns` (one `A` and one `B` per DMMA), which bounds `ns` (4 KB of fragments per
//!   DMMA pair against the SM's 128 bytes per clock). Each output tile still sums its `k`
//!   fragments in the same order: a product tile is bitwise the one of `ns`. The symmetric
//!   products (`YM`, `MZ`) are computed on the 15 lower super-tiles (the upper tile of a diagonal
//!   super-tile is skipped), `M = ZY` on all 25.
//! - **Fewer barriers.** `Y ← aY + b·YM` and `Z ← aZ + b·MZ` are one phase (both products
//!   held in registers across one barrier, then stored: 30 super-tiles over 16 warps); the
//!   residual `‖I − M‖_F` is summed per warp by shuffles ([`MmaTeam::warp_sum`]) inside the
//!   `ZY` phase and the 16 warp sums are added by every thread after its barrier. An iteration
//!   waits at 3 barriers instead of 7. The block is loaded row by row per warp (coalesced
//!   global reads, row sums by shuffles: 2 phases instead of 3) and the resolution step sums
//!   `Z`'s rows the same way (2 phases instead of 4, no serial loop over a row): 28 barriers
//!   per clean block (8 iterations) instead of 80.
//! - **No `Y` update in the last step** (only `Z` is needed; `Z ← aZ + b·MZ` does not read
//!   the new `Y`, so `Z` is the same), and the iteration always ends with that step, taken
//!   at `‖I − ZY‖_F <=` [`NS_STOP`]: `ns` stops without a step once the residual is at most
//!   `1e-11` ([`super::newton_schulz::NS_CONVERGED`]), where the computed residual is mostly
//!   rounding and can hide a truncation error of ~1e-12 (seen on blocks of κ ~ 5e3–1e4 that
//!   left the optimistic schedule); after the step it is ~r².
//! - **Optimistic first schedule.** `ns` designs its coefficients for `λ(B) >= 1e-5`
//!   ([`NS_DESIGN_FLOOR`]), which costs every block 11 products `ZY` whatever its κ. `ns2`
//!   designs them for `λ(B) >=` [`NS2_OPTIMISTIC_FLOOR`] (1e-3: 8 iterations, the case of 96%
//!   of the clean blocks of an r frame, whose `λ_min(B)` has median 3.6e-3 and 5% quantile
//!   2e-3) while tracking, with the same coefficients, the lower bound that the
//!   design floor `1e-5` guarantees (`l_g ← min(p(l_g), p(1))`, `p` being unimodal on
//!   `[0, 1]`). When the optimistic schedule has reached `l >= 0.99` but the residual has not
//!   proved `‖I − M‖_F < 1`, some singular value lies below the optimistic floor: from then on
//!   the coefficients come from the guaranteed bound (Chen & Chow on `[l_g, 1]`), as `ns`
//!   would from that point. Blocks with κ beyond ~1e4 take one or two iterations more than
//!   with `ns`; the cap is [`NS2_MAX_ITERATIONS`] (blocks beyond κ ~1e6 go to the Jacobi, as
//!   with `ns`).
//!
//! Shared memory, storage and phase rule: as [`super::newton_schulz`] ([`NS_SHARED_LEN`]).

use super::newton_schulz::{
    fragment_full_a, fragment_full_b, full_index, inverse_sqrt_with, local, ns_coefficients, ns_z,
    resolution_shape_ok, MmaTeam, NsStats, NS_DESIGN_FLOOR, NS_FULL_LEN, NS_MAX_WARPS,
    NS_ORDER_MAX, NS_SCRATCH_LEN, NS_SHARED_LEN, NS_STOP, NS_TILES, NS_WARPS, NS_WARP_LANES,
};
use crate::math::{abs, sqrt};
use crate::team::Shared;
use crate::Status;

/// Super-tiles (`2×2` DMMA tiles, `16×16` elements) per side of the padded matrix.
pub const NS2_SUPER: usize = NS_TILES / 2;
/// Lower super-tiles (`P >= Q`) of a symmetric product.
pub const NS2_SUPER_LOWER: usize = NS2_SUPER * (NS2_SUPER + 1) / 2;
/// Lower end (in eigenvalues of `B = C/‖C‖_∞`) of the interval the first coefficient schedule
/// assumes (module documentation): 8 iterations for spectra within it (blocks below it take
/// 10 to 12 up to κ ~ 1e4, against `ns`'s 11).
pub const NS2_OPTIMISTIC_FLOOR: f64 = 1e-3;
/// The optimistic schedule is deemed to have run out once its bound reaches this without the
/// residual proving `‖I − ZY‖_F < 1` (then the guaranteed bound takes over).
const NS2_SWITCH: f64 = 0.99;
/// Iterations at most (one more than `ns`'s 14: the optimistic schedule costs blocks of
/// κ ~1e5 one iteration; beyond ~1e6 blocks still go to the Jacobi).
pub const NS2_MAX_ITERATIONS: usize = 15;

/// The lower super-tile of number `t < 15` (row-major order of the lower triangle).
#[inline(always)]
fn lower_super(t: usize) -> (usize, usize) {
    // Rows of 1, 2, 3, 4, 5 super-tiles start at 0, 1, 3, 6, 10.
    let p = if t < 1 {
        0
    } else if t < 3 {
        1
    } else if t < 6 {
        2
    } else if t < 10 {
        3
    } else {
        4
    };
    (p, t - p * (p + 1) / 2)
}

/// One warp's accumulators for a super-tile: tiles `(2P + i, 2Q + j)` at index `2i + j`.
type Acc4<const L: usize> = [[[f64; 2]; L]; 4];

/// `Σ_k A(2P + i, k)·B(k, 2Q + j)` over the 10 `k` tiles (two `k4` halves each), `A`, `B` full
/// matrices: two `A` and two `B` fragments per `k` step for the four DMMAs (three when
/// `skip_upper`: the tile `(2P, 2P + 1)` of a diagonal super-tile of a symmetric product).
/// Each tile's DMMAs run in the order of `ns`'s `product_tiles`.
#[inline(always)]
fn super_product<const L: usize, T: MmaTeam<L>>(
    team: &T,
    a: Shared,
    b: Shared,
    (p, q): (usize, usize),
    skip_upper: bool,
    lanes: [usize; L],
) -> Acc4<L> {
    let mut acc: Acc4<L> = [[[0.0; 2]; L]; 4];
    for kt in 0..NS_TILES {
        for h in 0..2 {
            let mut a0 = [0.0; L];
            let mut a1 = [0.0; L];
            let mut b0 = [0.0; L];
            let mut b1 = [0.0; L];
            for i in 0..L {
                a0[i] = fragment_full_a(a, 2 * p, kt, h, lanes[i]);
                a1[i] = fragment_full_a(a, 2 * p + 1, kt, h, lanes[i]);
                b0[i] = fragment_full_b(b, 2 * q, kt, h, lanes[i]);
                b1[i] = fragment_full_b(b, 2 * q + 1, kt, h, lanes[i]);
            }
            acc[0] = team.mma(a0, b0, acc[0]);
            if !skip_upper {
                acc[1] = team.mma(a0, b1, acc[1]);
            }
            acc[2] = team.mma(a1, b0, acc[2]);
            acc[3] = team.mma(a1, b1, acc[3]);
        }
    }
    acc
}

/// Stores super-tile `(P, Q)` of the full product `M` in `m`, and adds `Σ (δ_rc − M_rc)²`
/// over each lane's elements to `partial`.
#[inline(always)]
fn store_full_super<const L: usize>(
    m: Shared,
    (p, q): (usize, usize),
    acc: &Acc4<L>,
    lanes: [usize; L],
    partial: &mut [f64; L],
) {
    for (idx, tile) in acc.iter().enumerate() {
        let (ti, tj) = (2 * p + idx / 2, 2 * q + idx % 2);
        let base = (ti * NS_TILES + tj) * 64;
        for i in 0..L {
            let (g, t) = (lanes[i] >> 2, lanes[i] & 3);
            for (e, &v) in tile[i].iter().enumerate() {
                let c = 2 * t + e;
                m.set(base + local(g, c), v);
                let delta = if ti == tj && g == c { 1.0 } else { 0.0 };
                let r = delta - v;
                partial[i] += r * r;
            }
        }
    }
}

/// Stores `a·old + b·product` of the lower super-tile `(P, Q)` of a symmetric iterate `d` in
/// both triangles (a diagonal tile from its lower triangle, so exactly symmetric), as `ns`'s
/// `store_tiles` does for one tile; `old` is read at the lower position this lane owns.
#[inline(always)]
fn store_symmetric_super<const L: usize>(
    d: Shared,
    (p, q): (usize, usize),
    (ca, cb): (f64, f64),
    acc: &Acc4<L>,
    lanes: [usize; L],
) {
    for (idx, tile) in acc.iter().enumerate() {
        let (ti, tj) = (2 * p + idx / 2, 2 * q + idx % 2);
        if ti < tj {
            continue;
        }
        let b = (ti * NS_TILES + tj) * 64;
        let bt = (tj * NS_TILES + ti) * 64;
        for i in 0..L {
            let (g, t) = (lanes[i] >> 2, lanes[i] & 3);
            for (e, &v) in tile[i].iter().enumerate() {
                let c = 2 * t + e;
                if ti != tj {
                    let x = ca * d.get(b + local(g, c)) + cb * v;
                    d.set(b + local(g, c), x);
                    d.set(bt + local(c, g), x);
                } else if g >= c {
                    let x = ca * d.get(b + local(g, c)) + cb * v;
                    d.set(b + local(g, c), x);
                    d.set(b + local(c, g), x);
                }
            }
        }
    }
}

/// Columns `lane + 32·u` (`u < 3`) of a row that lane `lane` handles in the row-per-warp
/// phases (80 columns: three for lanes below 16, two for the others).
const ROW_PARTS: usize = NS_ORDER_MAX.div_ceil(NS_WARP_LANES);

/// The first phases of `ns2` (the same result as `ns`'s `load_scaled` up to the order of the row
/// sums; 2 phases instead of 3, no serial loop over a row): warp `w` loads rows `w, w + warps,
/// ...` of `C` (`cov(e)`, element `e = i·n + j`, each read once; consecutive lanes read
/// consecutive elements) into `y`, padded to 80 with the identity, sums each row's absolute
/// values by [`MmaTeam::warp_sum`] and stages its largest row sum in `scratch[w]` (NaN when one
/// is not finite); after the barrier every thread takes `c = ‖C‖_∞` from the 16 values and
/// the team sets `y ← C / c` and `z ← I`. Returns `c` (NaN for a non-finite block), the same
/// on every lane.
#[inline(always)]
fn load_scaled_rows<const L: usize, T: MmaTeam<L>, C: Fn(usize) -> f64>(
    team: &T,
    cov: C,
    n: usize,
    y: Shared,
    z: Shared,
    scratch: Shared,
) -> f64 {
    let warps = team.warps();
    let threads = warps * NS_WARP_LANES;
    team.each(|w, lanes| {
        let mut largest = [0.0f64; L];
        let mut r = w;
        while r < NS_ORDER_MAX {
            let mut part = [0.0; L];
            for i in 0..L {
                for u in 0..ROW_PARTS {
                    let c = lanes[i] + u * NS_WARP_LANES;
                    if c < NS_ORDER_MAX {
                        let v = if r < n && c < n {
                            cov(r * n + c)
                        } else if r == c {
                            1.0
                        } else {
                            0.0
                        };
                        y.set(full_index(r, c), v);
                        if r < n && c < n {
                            part[i] += abs(v);
                        }
                    }
                }
            }
            let sum = team.warp_sum(part, lanes);
            if r < n {
                for i in 0..L {
                    // NaN once a row sum is not finite (a comparison would drop it).
                    largest[i] = if !sum[i].is_finite() || !largest[i].is_finite() {
                        f64::NAN
                    } else if sum[i] > largest[i] {
                        sum[i]
                    } else {
                        largest[i]
                    };
                }
            }
            r += warps;
        }
        for (i, &lane) in lanes.iter().enumerate() {
            if lane == 0 {
                scratch.set(w, largest[i]);
            }
        }
    });
    let mut norm = 0.0f64;
    for k in 0..warps {
        let v = scratch.get(k);
        norm = if !v.is_finite() || !norm.is_finite() {
            f64::NAN
        } else if v > norm {
            v
        } else {
            norm
        };
    }
    team.each(|w, lanes| {
        for &lane in lanes.iter() {
            let mut idx = w * NS_WARP_LANES + lane;
            while idx < NS_FULL_LEN {
                let (r, c) = super::newton_schulz::unpack_full(idx);
                if r < n && c < n {
                    y.set(idx, y.get(idx) / norm);
                }
                z.set(idx, if r == c { 1.0 } else { 0.0 });
                idx += threads;
            }
        }
    });
    norm
}

/// The resolution step of `ns2` from `Z` ([`ns_z`]) and `qscale = c^(-1/2)` (`Q = qscale·Z`):
/// the outputs of `ns`'s (`s_k = Σ_j Q[k][j]`, `ivar_k = s_k²`, `flux_k = Σ_j Q[k][j]·xflux_j /
/// s_k`, `R[r][k] = Q[r][k] / s_r` at the core bins) up to the order of the row sums, in 2
/// phases instead of 4: warp `w` sums rows `w, w + warps, ...` by [`MmaTeam::warp_sum`] (each
/// lane its three columns, `xflux` read once per lane into registers) and stages `s_k`, the
/// numerator of `flux_k` and whether its row sums are finite and non-zero in `M`; then the
/// outputs. [`Status::NoConvergence`] for a zero or non-finite row sum (nothing written).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn resolution_rows<const L: usize, T: MmaTeam<L>>(
    team: &T,
    n: usize,
    qscale: f64,
    (xflux, xflux_stride): (&[f64], usize),
    (ndiag, k_min, k_max): (usize, usize, usize),
    (flux, ivar, rdiags, out_stride): (Shared, Shared, Shared, usize),
    smem: Shared,
) -> Status {
    let ndiagonal = 2 * ndiag + 1;
    let warps = team.warps();
    let threads = warps * NS_WARP_LANES;
    let z = ns_z(smem);
    let m = smem.sub(2 * NS_FULL_LEN, NS_FULL_LEN);
    let row_sum = m.sub(0, NS_ORDER_MAX);
    let numerator = m.sub(NS_ORDER_MAX, NS_ORDER_MAX);
    let flags = m.sub(2 * NS_ORDER_MAX, NS_MAX_WARPS);
    team.each(|w, lanes| {
        let mut x = [[0.0; ROW_PARTS]; L];
        for i in 0..L {
            for (u, xv) in x[i].iter_mut().enumerate() {
                let j = lanes[i] + u * NS_WARP_LANES;
                if j < n {
                    *xv = xflux[j * xflux_stride];
                }
            }
        }
        let mut ok = true;
        let mut k = w;
        while k < n {
            let mut s = [0.0; L];
            let mut qx = [0.0; L];
            for i in 0..L {
                for (u, &xv) in x[i].iter().enumerate() {
                    let j = lanes[i] + u * NS_WARP_LANES;
                    if j < n {
                        let v = z.get(full_index(k, j)) * qscale;
                        s[i] += v;
                        qx[i] += v * xv;
                    }
                }
            }
            let s = team.warp_sum(s, lanes);
            let qx = team.warp_sum(qx, lanes);
            ok &= s[0].is_finite() && s[0] != 0.0;
            for (i, &lane) in lanes.iter().enumerate() {
                if lane == 0 {
                    row_sum.set(k, s[i]);
                    numerator.set(k, qx[i]);
                }
            }
            k += warps;
        }
        for &lane in lanes.iter() {
            if lane == 0 {
                flags.set(w, if ok { 1.0 } else { 0.0 });
            }
        }
    });
    for w in 0..warps {
        if flags.get(w) != 1.0 {
            return Status::NoConvergence;
        }
    }
    let ncore = k_max - k_min;
    team.each(|w, lanes| {
        for &lane in lanes.iter() {
            let tid = w * NS_WARP_LANES + lane;
            if tid < n {
                let s = row_sum.get(tid);
                ivar.set(tid, s * s);
                flux.set(tid, numerator.get(tid) / s);
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

/// `(a, b)` of the step for the bound `l` and the images of `l_o` (the optimistic bound) and
/// `l_g` (the guaranteed one) under `p(s) = a s + b s³`: `p(l_o)` and `min(p(l_g), p(1))`.
#[inline(always)]
fn step_bounds(l: f64, lo: f64, lg: f64) -> (f64, f64, f64, f64) {
    let (a, b, _) = ns_coefficients(l);
    let lo = if lo < 1.0 { lo } else { 1.0 };
    let po = lo * (a + b * lo * lo);
    let pg = lg * (a + b * lg * lg);
    let p1 = a + b;
    (
        a,
        b,
        if po < 1.0 { po } else { 1.0 },
        if pg < p1 { pg } else { p1 },
    )
}

/// The `ns2` iteration (module documentation) on `C` (`cov(e)`: element `e = i·n + j` of the
/// row-major `(n, n)` block, read once): on [`Status::Ok`] the `Z` part of `smem` ([`ns_z`])
/// holds `(C/c)^(-1/2)` and the returned factor is `c^(-1/2)`. [`Status::NoConvergence`]: not
/// converged within [`NS2_MAX_ITERATIONS`], or a non-finite or non-positive block.
/// [`Status::BadShape`]: `n` outside `1..=80`, a short `smem`, or fewer than [`NS_WARPS`] /
/// more than [`NS_MAX_WARPS`] warps. Identical on every lane.
pub fn inverse_sqrt_ns2_iterate<const L: usize, T: MmaTeam<L>, C: Fn(usize) -> f64>(
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
    let norm = load_scaled_rows(team, cov, n, y, z, scratch);
    if !(norm > 0.0 && norm.is_finite()) {
        return (Status::NoConvergence, 0.0);
    }
    // Optimistic bound (the coefficients until it runs out), guaranteed bound, which is used.
    let mut lo = sqrt(NS2_OPTIMISTIC_FLOOR);
    let mut lg = sqrt(NS_DESIGN_FLOOR);
    let mut optimistic = true;
    let mut converged = false;
    for it in 0..NS2_MAX_ITERATIONS {
        // M = ZY on its 25 super-tiles (warp w: w, w + warps, ...), ‖I − M‖_F² per warp.
        team.each(|w, lanes| {
            let mut partial = [0.0; L];
            let mut job = w;
            while job < NS2_SUPER * NS2_SUPER {
                let pq = (job / NS2_SUPER, job % NS2_SUPER);
                let acc = super_product(team, z, y, pq, false, lanes);
                store_full_super(m, pq, &acc, lanes, &mut partial);
                job += warps;
            }
            let sum = team.warp_sum(partial, lanes);
            for (i, &lane) in lanes.iter().enumerate() {
                if lane == 0 {
                    scratch.set(w, sum[i]);
                }
            }
        });
        // Every thread adds the warp sums in the same order (same bits everywhere); the
        // next write of these slots is two barriers away.
        let mut total = 0.0;
        for k in 0..warps {
            total += scratch.get(k);
        }
        let residual = sqrt(total);
        stats.iterations = it + 1;
        stats.residual = residual;
        if !residual.is_finite() || residual > 1e3 {
            break;
        }
        if residual < 1.0 {
            let proven = sqrt(1.0 - residual);
            lo = lo.max(proven);
            lg = lg.max(proven);
        } else if optimistic && lo >= NS2_SWITCH {
            // The optimistic schedule ran out without a proof: a singular value lies below
            // its floor; continue from the guaranteed bound.
            optimistic = false;
        }
        // Unlike `ns`, no stop without a step at `‖I − M‖_F <= NS_CONVERGED`: at that level
        // the computed residual is mostly the products' rounding and can hide a truncation
        // error of ~1e-12 (seen on blocks that left the optimistic schedule); the last step
        // (Z only: a quarter of an iteration) makes it ~r², far below the rounding.
        let last = residual <= NS_STOP;
        let l = if optimistic { lo } else { lg };
        let (a, b, nlo, nlg) = step_bounds(l, lo, lg);
        lo = nlo;
        lg = nlg;
        // Z ← aZ + b·MZ (jobs 0..15) and, unless this is the last step, Y ← aY + b·YM (jobs
        // 15..30): products in registers across the barrier, then stored.
        let jobs = if last {
            NS2_SUPER_LOWER
        } else {
            2 * NS2_SUPER_LOWER
        };
        let zero: Acc4<L> = [[[0.0; 2]; L]; 4];
        team.each_split(
            |w, lanes| {
                let mut out = [zero, zero];
                for (s, o) in out.iter_mut().enumerate() {
                    let job = w + s * warps;
                    if job < jobs {
                        let t = job % NS2_SUPER_LOWER;
                        let pq = lower_super(t);
                        let (fa, fb) = if job < NS2_SUPER_LOWER {
                            (m, z)
                        } else {
                            (y, m)
                        };
                        *o = super_product(team, fa, fb, pq, pq.0 == pq.1, lanes);
                    }
                }
                out
            },
            |w, lanes, out: [Acc4<L>; 2]| {
                for (s, o) in out.iter().enumerate() {
                    let job = w + s * warps;
                    if job < jobs {
                        let pq = lower_super(job % NS2_SUPER_LOWER);
                        let d = if job < NS2_SUPER_LOWER { z } else { y };
                        store_symmetric_super(d, pq, (a, b), o, lanes);
                    }
                }
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

/// Resolution of one core spectrum from its covariance block by the `ns2` iteration: the
/// arguments, outputs and statuses of [`super::newton_schulz::resolution_ns`] (with
/// [`NS2_MAX_ITERATIONS`]).
#[allow(clippy::too_many_arguments)]
pub fn resolution_ns2<const L: usize, T: MmaTeam<L>, C: Fn(usize) -> f64>(
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
    let (status, qscale) = inverse_sqrt_ns2_iterate(team, cov, n, smem, stats);
    if status != Status::Ok {
        return status;
    }
    resolution_rows(
        team,
        n,
        qscale,
        (xflux, xflux_stride),
        (ndiag, k_min, k_max),
        (flux, ivar, rdiags, out_stride),
        smem,
    )
}

/// `Q = C^(-1/2)` by [`inverse_sqrt_ns2_iterate`], written to `q` (`(n, n)` row-major) on
/// [`Status::Ok`] (tests and benchmarks; the kernel uses [`resolution_ns2`]).
pub fn inverse_sqrt_ns2<const L: usize, T: MmaTeam<L>>(
    team: &T,
    cov: &[f64],
    n: usize,
    q: Shared,
    smem: Shared,
    stats: &mut NsStats,
) -> Status {
    inverse_sqrt_with(
        |t, c, n, s, st| inverse_sqrt_ns2_iterate(t, c, n, s, st),
        team,
        cov,
        n,
        q,
        smem,
        stats,
    )
}
