//! One diagonal covariance block `C_bb` of `C = M⁻¹` from the band Cholesky factor of `M`,
//! with its products on FP64 tensor cores (`mma.m8n8k4.f64`, DMMA): the GPU's `mma` variant of
//! the covariance stage (`DESI_BAND_KERNEL=mma`, kernel `covariance_mma`), written once against
//! [`MmaTeam`] + [`WarpShuffle`] for the GPU (one thread block of at least
//! [`COV_MMA_WARPS`] warps per block) and the host ([`SerialMmaTeam`], tests).
//!
//! # Algorithm
//! As [`super::banded_team::covariance_block_team`]: `C_bb = Y_bᵀ Y_b` with `Y_b = L⁻¹ E_b`
//! (Bolton & Schlegel 2010 eq 10 restricted to one fiber), column `c` of `Y_b` zero above row
//! `start(c) = b + c·nblock`. Rows of `Y_b` are produced 8 per phase (group `g`: rows
//! `m0 = b + 8g ..`), the columns padded to `8·nt` (`nt = ceil(bs / 8)` tiles of 8):
//! 1. **GEMM** (DMMA): `P = L[m0..m0+8][k_lo..m0] · Y[k_lo..m0][:]`, `k_lo = max(m0 - kd, b)`,
//!    in chunks of 4 rows `k` aligned to end at `m0` (the part of the first chunk below `k_lo`
//!    is masked to zero in both fragments); warp `w` owns the column tiles `w, w + warps, ...`
//!    and skips the tiles none of whose columns has started (their rows are zero).
//! 2. **Triangle** (registers and warp shuffles, no barrier): the 8 rows of the group in order,
//!    `y_t = (e_t − P_t − Σ_{t2<t} L[m0+t][m0+t2]·y_t2) · (1 / L[m0+t][m0+t])` (zero before a
//!    column's start and past `n`): the lanes of row `t2` finish it, the 32 lanes receive it by
//!    a shuffle and the lanes of the later rows subtract it.
//! 3. **Gram** (DMMA), one phase later: `C_bb += Y_gᵀ Y_g` over the group's 8 rows, into
//!    accumulators that stay in registers for the whole block: warp `w` owns the upper tiles
//!    `(I, J)`, `I <= J`, numbered column by column, `w, w + warps, ...` (55 for `nt = 10`),
//!    and skips those whose columns `J` have not started.
//!
//! The staged `L` rows are those of the team kernel (`stage[j·8 + t] = L[m0+t][m0−kd+j]`, the
//! diagonal as its reciprocal), staged one group ahead by all lanes. One barrier per group:
//! `ceil((n − b) / 8) + 2` phases (68 for `n = 518`), against the team kernel's 68 plus its
//! global-memory accumulators. At the end each warp writes its tiles (and their transposes)
//! to `out`.
//!
//! The differences from the serial routine are the order of the sums (in tensor-core
//! fragments) and `y` multiplied by the reciprocal of the diagonal: equal up to about
//! `n·eps·κ`, as the team kernel.
//!
//! # Phase rule
//! As [`crate::team`]: within a phase no lane reads what another lane writes. Phase `g`
//! writes the `Y` rows of group `g` (ring slots of rows `m0 .. m0 + 8`) and reads those of
//! rows `max(b, m0 − kd) .. m0` (GEMM) and `m0 − 8 .. m0` (Gram): distinct slots since the
//! ring holds `max(kd, 8) + 8` rows; it reads staged group `g` and writes group `g + 1` (two
//! buffers).

use super::banded_team::{stage_l_rows, CovGeometry};
use super::dense::pivot_status;
use super::newton_schulz::{MmaTeam, SerialMmaTeam, NS_MAX_WARPS, NS_WARP_LANES};
use crate::math::fma;
use crate::team::Shared;
use crate::Status;

/// Fewest warps per block (the per-warp tile slots are sized for it).
pub const COV_MMA_WARPS: usize = 8;
/// Most warps per block (the host emulation's per-warp state).
pub const COV_MMA_MAX_WARPS: usize = NS_MAX_WARPS;
/// Largest block order `bs` (`n / nblock`): 10 column tiles of 8.
pub const COV_MMA_ORDER_MAX: usize = 80;

/// Side of a DMMA output tile.
const TILE: usize = 8;
/// Rows of `Y_b` per group (one DMMA row tile).
const ROWS: usize = 8;
/// Column tiles at most.
const NT_MAX: usize = COV_MMA_ORDER_MAX / TILE;
/// GEMM column tiles per warp at most (`ceil(NT_MAX / COV_MMA_WARPS)`).
const GEMM_SLOTS: usize = 2;
/// Gram tiles per warp at most (`ceil(55 / COV_MMA_WARPS)`): 14 registers of accumulators
/// (with 4 warps and 14 tiles per warp, ptxas needed 254 registers: 2 blocks of 4 warps per
/// SM).
const GRAM_SLOTS: usize = 7;
const _: () = assert!(GEMM_SLOTS * COV_MMA_WARPS >= NT_MAX);
const _: () = assert!(GRAM_SLOTS * COV_MMA_WARPS >= NT_MAX * (NT_MAX + 1) / 2);
const _: () = assert!(ROWS == 8 && TILE == 8 && GEMM_SLOTS == 2 && GRAM_SLOTS == 7);

/// The lanes of a warp exchange values (`shfl.sync.idx`).
pub trait WarpShuffle<const L: usize> {
    /// Slot `i` receives `v` of the lane `src(lanes[i])` of the same warp. Called by all 32
    /// lanes of the warp in uniform control flow.
    fn shuffle<S: Fn(usize) -> usize>(&self, v: [f64; L], lanes: [usize; L], src: S) -> [f64; L];
}

impl WarpShuffle<NS_WARP_LANES> for SerialMmaTeam {
    fn shuffle<S: Fn(usize) -> usize>(
        &self,
        v: [f64; NS_WARP_LANES],
        lanes: [usize; NS_WARP_LANES],
        src: S,
    ) -> [f64; NS_WARP_LANES] {
        // The emulation's closures see the warp's lanes in slots: find the slot of each source.
        let mut out = [f64::NAN; NS_WARP_LANES];
        for (o, &lane) in out.iter_mut().zip(lanes.iter()) {
            let from = src(lane);
            if let Some(slot) = lanes.iter().position(|&l| l == from) {
                *o = v[slot];
            }
        }
        out
    }
}

#[cfg(target_arch = "nvptx64")]
extern "C" {
    /// `shfl.sync.idx.b32`: the value of lane `src` among the lanes of `mask`.
    #[link_name = "llvm.nvvm.shfl.sync.idx.i32"]
    fn shfl_idx(mask: u32, value: i32, src: i32, clamp: i32) -> i32;
}

#[cfg(target_arch = "nvptx64")]
impl WarpShuffle<1> for super::newton_schulz::BlockMmaTeam {
    #[inline(always)]
    fn shuffle<S: Fn(usize) -> usize>(&self, v: [f64; 1], lanes: [usize; 1], src: S) -> [f64; 1] {
        let bits = v[0].to_bits();
        let from = src(lanes[0]) as i32;
        // SAFETY: every lane of the full mask executes this shuffle (the trait's contract:
        // uniform control flow per warp).
        let (lo, hi) = unsafe {
            (
                shfl_idx(u32::MAX, bits as u32 as i32, from, 0x1f),
                shfl_idx(u32::MAX, (bits >> 32) as u32 as i32, from, 0x1f),
            )
        };
        [f64::from_bits(
            ((hi as u32 as u64) << 32) | lo as u32 as u64,
        )]
    }
}

/// Values of the next `L` group each thread holds in registers during a phase (enough for
/// `kd <= 120` at 8 warps).
const STAGE_REGS: usize = 4;
const _: () = assert!(
    STAGE_REGS == 4,
    "the unroll! lists expand STAGE_REGS = 4 bodies"
);

/// `(t, j)` of element `e` of the staging of a group of `L` (the order of [`stage_l_rows`]:
/// blocks of 8 positions × 8 rows, position fastest): row `m0 + t`, position `j`, stored at
/// `j · 8 + t`; `None` past the last position.
#[inline(always)]
fn stage_place(kd: usize, e: usize) -> Option<(usize, usize)> {
    let (t, j) = ((e / ROWS) % ROWS, e / (ROWS * ROWS) * ROWS + e % ROWS);
    (j < kd + ROWS).then_some((t, j))
}

/// The value [`stage_l_rows`] stages at `(t, j)` ([`stage_place`]) for rows `m0 .. m0 + 8`:
/// `L[m0 + t][m0 − kd + j]`, zero outside the band and the matrix, the diagonal as its
/// reciprocal (1 past the matrix).
#[inline(always)]
fn stage_value(geo: &CovGeometry, ab: &Shared, m0: usize, (t, j): (usize, usize)) -> f64 {
    let (n, kd) = (geo.n, geo.kd);
    let w = kd + 1;
    let m = m0 + t;
    if m >= n {
        if j == kd + t {
            1.0
        } else {
            0.0
        }
    } else if j < t || j > kd + t || m0 + j < kd {
        0.0
    } else if j == kd + t {
        1.0 / ab.get(m * w + kd)
    } else {
        ab.get(m * w + j - t)
    }
}

/// Rows of the `Y_b` ring.
fn ring_depth(kd: usize) -> usize {
    kd.max(ROWS).saturating_add(ROWS)
}

/// Row stride of the ring: `8·nt` padded to `8 (mod 16)` f64, so that the 4 rows of a
/// fragment (8 consecutive columns each) fall on the two halves of the 32 banks: two
/// wavefronts per fragment load, the minimum for 32 × 8 bytes.
fn ring_stride(nt: usize) -> usize {
    let w = TILE * nt;
    if w.is_multiple_of(16) {
        w + 8
    } else {
        w
    }
}

/// Length (f64) of the `smem` view that [`covariance_block_mma`] needs for a team of `warps`
/// warps: the ring of `max(kd, 8) + 8` rows of `Y_b` (stride `ring_stride`), two staged groups
/// of `L` (`(max(kd, 8) + 8) · 8` each) and one slot per lane: 66 · 88 + 2 · 528 + 256 =
/// 7,120 f64 (56,960 bytes) for `bs = 74`, `kd = 58` and 8 warps. 0 for invalid shapes.
pub fn covariance_block_mma_smem_len(n: usize, kd: usize, nblock: usize, warps: usize) -> usize {
    if nblock == 0 || !n.is_multiple_of(nblock) {
        return 0;
    }
    let nt = (n / nblock).div_ceil(TILE);
    let depth = ring_depth(kd);
    depth
        .saturating_mul(ring_stride(nt))
        .saturating_add(depth.saturating_mul(2 * ROWS))
        .saturating_add(warps.saturating_mul(NS_WARP_LANES))
}

/// The `(row, column)` tile of upper tile number `t` (column by column: `(0,0), (0,1), (1,1),
/// (0,2), ...`).
#[inline(always)]
fn upper_tile(t: usize) -> (usize, usize) {
    let (mut tr, mut tc) = (t, 0);
    while tr > tc {
        tc += 1;
        tr -= tc;
    }
    (tr, tc)
}

/// Index of a warp's state in the arrays that outlive a phase: on the GPU each thread holds
/// its own (index 0 of an array of 1, a constant: registers), the host emulation one per warp.
#[inline(always)]
const fn state_index<const L: usize>(warp: usize) -> usize {
    if L == 1 {
        0
    } else {
        warp
    }
}

/// [`covariance_block_mma`] on the host emulation ([`SerialMmaTeam`], up to
/// [`COV_MMA_MAX_WARPS`] warps, one state per warp; `prefetch` as `PREFETCH`): the tests'
/// entry point.
#[cfg(not(target_arch = "nvptx64"))]
#[allow(clippy::too_many_arguments)]
pub fn covariance_block_mma_serial(
    team: &SerialMmaTeam,
    ab: Shared,
    n: usize,
    kd: usize,
    nblock: usize,
    block: usize,
    out: Shared,
    smem: Shared,
    prefetch: bool,
) -> Status {
    if prefetch {
        covariance_block_mma::<NS_WARP_LANES, COV_MMA_MAX_WARPS, true, _>(
            team, ab, n, kd, nblock, block, out, smem,
        )
    } else {
        covariance_block_mma::<NS_WARP_LANES, COV_MMA_MAX_WARPS, false, _>(
            team, ab, n, kd, nblock, block, out, smem,
        )
    }
}

/// One diagonal covariance block `C_bb` (block `b = block` of the interleaved order, unknowns
/// `q = iwave·nblock + b`) from the band Cholesky factor, by one team of warps with DMMA: the
/// block of [`super::banded_team::covariance_block_team`] (module documentation).
///
/// # Parameters
/// - `ab`: shape `(n, kd + 1)`, `L` in band storage (may be global memory).
/// - `nblock`: number of blocks; `n` a multiple of it, `bs = n / nblock <= 80`.
/// - `out`: at least `bs²` values, row-major symmetric `C_bb` (may be global memory; written
///   once per element at the end).
/// - `smem`: [`covariance_block_mma_smem_len`]`(n, kd, nblock, warps)` values (shared memory).
///
/// # Returns
/// [`Status::Ok`]; [`Status::BadShape`] on a shape mismatch, `bs > 80` or a team of fewer than
/// [`COV_MMA_WARPS`] / more than [`COV_MMA_MAX_WARPS`] warps; [`Status::NotPositiveDefinite`]
/// / [`Status::NonFinite`] if a diagonal entry of `L` is `<= 0` / not finite (the first in
/// order; checked first, nothing written), or [`Status::NonFinite`] if a diagonal entry of
/// `C_bb` is not finite. Identical on every lane.
///
/// `PREFETCH`: load the next group of `L` into registers at the start of each phase and store
/// it at the end (its global-memory latency overlaps the DMMAs; 4 values per thread, when
/// `(kd + 8)` rounded up to 8, times 8, is at most `4 · 32 · warps`), or stage it at the end
/// (fewer registers): the same values, the same results.
///
/// `WS` is the number of per-warp register states that outlive a phase: 1 on the GPU (each
/// thread its own, `L = 1`), at least the warp count on the host emulation
/// ([`covariance_block_mma_serial`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn covariance_block_mma<
    const L: usize,
    const WS: usize,
    const PREFETCH: bool,
    T: MmaTeam<L> + WarpShuffle<L>,
>(
    team: &T,
    ab: Shared,
    n: usize,
    kd: usize,
    nblock: usize,
    block: usize,
    out: Shared,
    smem: Shared,
) -> Status {
    let warps = team.warps();
    if nblock == 0
        || !n.is_multiple_of(nblock)
        || block >= nblock
        || kd.checked_add(1).and_then(|w| w.checked_mul(n)) != Some(ab.len())
        || !(COV_MMA_WARPS..=COV_MMA_MAX_WARPS).contains(&warps)
        || (L == 1 && WS != 1)
        || (L > 1 && WS < warps)
    {
        return Status::BadShape;
    }
    let bs = n / nblock;
    if bs > COV_MMA_ORDER_MAX
        || out.len() < bs * bs
        || smem.len() < covariance_block_mma_smem_len(n, kd, nblock, warps)
    {
        return Status::BadShape;
    }
    let nt = bs.div_ceil(TILE);
    let depth = ring_depth(kd);
    let stride = ring_stride(nt);
    let ring_len = depth * stride;
    let stage_len = depth * ROWS;
    let ring = smem.sub(0, ring_len);
    let stage = |g: usize| smem.sub(ring_len + (g % 2) * stage_len, stage_len);
    let threads = warps * NS_WARP_LANES;
    let first = smem.sub(ring_len + 2 * stage_len, threads);
    let w1 = kd + 1;
    let geo = CovGeometry {
        n,
        kd,
        nblock,
        block,
        bs,
        depth,
    };
    // Phase 0: the diagonal of L (each thread its share: the index of its first failure, or
    // n), the ring zeroed, group 0 of L staged. (A copy of the geometry: this closure and the
    // last one may stay calls on the GPU, and what they borrow lives in local memory; the
    // main loop's state must not.)
    let geo0 = geo;
    team.each(|w, lanes| {
        for &lane in lanes.iter() {
            let tid = w * NS_WARP_LANES + lane;
            let mut i = tid;
            let mut found = n;
            while i < n {
                let d = ab.get(i * w1 + kd);
                if !(d > 0.0 && d <= f64::MAX) {
                    found = i;
                    break;
                }
                i += threads;
            }
            first.set(tid, found as f64);
            let mut e = tid;
            while e < ring_len {
                ring.set(e, 0.0);
                e += threads;
            }
            stage_l_rows(&geo0, &ab, stage(0), block, tid, threads);
        }
    });
    let mut min = n;
    for t in 0..threads {
        min = min.min(first.get(t) as usize);
    }
    if min < n {
        return pivot_status(ab.get(min * w1 + kd)).unwrap_or(Status::NonFinite);
    }
    if n == 0 {
        return Status::Ok;
    }
    let ngroup = (n - block).div_ceil(ROWS);
    let ntile = nt * (nt + 1) / 2;
    // Column `c`'s first row (never for the padding columns).
    let start = |c: usize| {
        if c < bs {
            block + c * nblock
        } else {
            usize::MAX
        }
    };
    // The Gram accumulators of each warp (module documentation), across phases.
    let mut gram = [[[[0.0f64; 2]; L]; GRAM_SLOTS]; WS];
    // The next group of L through registers (its global loads issued at the start of the
    // phase, stored at the end: their latency overlaps the DMMAs) when each thread's share
    // fits STAGE_REGS values, else staged at the end by `stage_l_rows` (the same values).
    let stage_elems = (kd + ROWS).div_ceil(ROWS) * ROWS * ROWS;
    let prefetch = PREFETCH && stage_elems <= STAGE_REGS * threads;
    for g in 0..=ngroup {
        // Inlined into the phase (a call would keep the accumulators of `gram`, which it
        // borrows, in local memory).
        team.each(
            #[inline(always)]
            |w, lanes| {
                let acc = &mut gram[state_index::<L>(w)];
                let next = g + 1 < ngroup;
                let m1 = block + (g + 1) * ROWS;
                let mut pre = [[0.0f64; STAGE_REGS]; L];
                if next && prefetch {
                    for (i, &lane) in lanes.iter().enumerate() {
                        let tid = w * NS_WARP_LANES + lane;
                        unroll!(r in [0, 1, 2, 3] => {
                            if let Some(place) = stage_place(kd, tid + r * threads) {
                                pre[i][r] = stage_value(&geo, &ab, m1, place);
                            }
                        });
                    }
                }
                if g > 0 {
                    gram_group(
                        team,
                        &geo,
                        ring,
                        stride,
                        block + (g - 1) * ROWS,
                        acc,
                        w,
                        lanes,
                    );
                }
                if g < ngroup {
                    let m0 = block + g * ROWS;
                    group_rows(team, &geo, ring, stride, stage(g), m0, &start, w, lanes);
                    if next && prefetch {
                        let st = stage(g + 1);
                        for (i, &lane) in lanes.iter().enumerate() {
                            let tid = w * NS_WARP_LANES + lane;
                            unroll!(r in [0, 1, 2, 3] => {
                                if let Some((t, j)) = stage_place(kd, tid + r * threads) {
                                    st.set(j * ROWS + t, pre[i][r]);
                                }
                            });
                        }
                    } else if next {
                        for &lane in lanes.iter() {
                            let tid = w * NS_WARP_LANES + lane;
                            stage_l_rows(&geo, &ab, stage(g + 1), m1, tid, threads);
                        }
                    }
                }
            },
        );
    }
    // The tiles (and their transposes) into `out`: element (r, c) of a diagonal tile from its
    // upper triangle only, so that C_bb is exactly symmetric. (From a copy, as `geo0`.)
    let tiles = gram;
    team.each(|w, lanes| {
        let acc = &tiles[state_index::<L>(w)];
        unroll!(s in [0, 1, 2, 3, 4, 5, 6] => {
            let t = w + s * warps;
            if t < ntile {
                let (ti, tj) = upper_tile(t);
                for (i, &lane) in lanes.iter().enumerate() {
                    let r = ti * TILE + lane / 4;
                    for (h, &v) in acc[s][i].iter().enumerate() {
                        let c = tj * TILE + 2 * (lane % 4) + h;
                        if r < bs && c < bs && (ti < tj || r <= c) {
                            out.set(r * bs + c, v);
                            out.set(c * bs + r, v);
                        }
                    }
                }
            }
        });
    });
    if (0..bs).all(|c| out.get(c * bs + c).is_finite()) {
        Status::Ok
    } else {
        Status::NonFinite
    }
}

/// Steps 1 and 2 of the module documentation for group `m0` by warp `w`: the GEMM of its
/// column tiles and the triangle, then the 8 new rows of those tiles into the ring.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn group_rows<const L: usize, T: MmaTeam<L> + WarpShuffle<L>, S: Fn(usize) -> usize>(
    team: &T,
    geo: &CovGeometry,
    ring: Shared,
    stride: usize,
    stage: Shared,
    m0: usize,
    start: &S,
    w: usize,
    lanes: [usize; L],
) {
    let (n, kd, depth) = (geo.n, geo.kd, geo.depth);
    let warps = team.warps();
    let nt = geo.bs.div_ceil(TILE);
    // Column tile `ct` has a started column when its first column starts before the group's
    // end (uniform per warp).
    let active = |ct: usize| ct < nt && start(ct * TILE) < m0 + ROWS;
    // The chunks of 4 rows k: the valid ones are k_lo .. m0, positions j = k + kd - m0 in
    // j_lo .. kd; the chunks end at j = kd.
    let k_lo = m0.saturating_sub(kd).max(geo.block);
    let span = m0 - k_lo;
    let nq = span.div_ceil(4);
    let mut acc = [[[0.0f64; 2]; L]; GEMM_SLOTS];
    // Ring slot of the chunk's first row m0 - 4·nq (+ depth: no underflow, 4·nq < depth + 4).
    let mut sc = (m0 + 2 * depth - 4 * nq) % depth;
    let mut q = 0;
    while q < nq {
        // Rows k = m0 - back, back = 4·(nq - q) - kk.
        let mut va = [0.0f64; L];
        let mut slot = [0usize; L];
        let mut valid = [false; L];
        for i in 0..L {
            let (g4, kk) = (lanes[i] / 4, lanes[i] % 4);
            let back = 4 * (nq - q) - kk;
            valid[i] = back <= span;
            let s = sc + kk;
            slot[i] = if s >= depth { s - depth } else { s };
            if valid[i] {
                // SAFETY: j = kd - back < kd and g4 < 8: below (kd + 8) · 8 <= stage.len().
                va[i] = unsafe { stage.get_unchecked((kd - back) * ROWS + g4) };
            }
        }
        unroll!(s in [0, 1] => {
            let ct = w + s * warps;
            if active(ct) {
                let mut vb = [0.0f64; L];
                for i in 0..L {
                    if valid[i] {
                        // SAFETY: slot < depth, column 8·ct + lane/4 < 8·nt <= stride.
                        vb[i] = unsafe {
                            ring.get_unchecked(slot[i] * stride + ct * TILE + lanes[i] / 4)
                        };
                    }
                }
                acc[s] = team.mma(va, vb, acc[s]);
            }
        });
        sc += 4;
        if sc >= depth {
            sc -= depth;
        }
        q += 1;
    }
    // The triangle: lane `l` holds row t = l / 4 of the group, columns 2·(l % 4) + h of each of
    // its tiles. Its row's L[m0+t][m0+t2] (t2 < t) and 1 / L[m0+t][m0+t] from the stage.
    let mut lrow = [[0.0f64; ROWS]; L];
    let mut rinv = [0.0f64; L];
    for i in 0..L {
        let t = lanes[i] / 4;
        unroll!(t2 in [0, 1, 2, 3, 4, 5, 6, 7] => {
            // SAFETY: (kd + t2) · 8 + t < (kd + 8) · 8 <= stage.len().
            lrow[i][t2] = unsafe { stage.get_unchecked((kd + t2) * ROWS + t) };
        });
        // SAFETY: as above (a load, not lrow[i][t]: a run-time index is local memory).
        rinv[i] = unsafe { stage.get_unchecked((kd + t) * ROWS + t) };
    }
    let slot0 = m0 % depth;
    unroll!(s in [0, 1] => {
        let ct = w + s * warps;
        if ct < nt {
            let mut v = [[0.0f64; 2]; L];
            if active(ct) {
                for i in 0..L {
                    let m = m0 + lanes[i] / 4;
                    for h in 0..2 {
                        let c = ct * TILE + 2 * (lanes[i] % 4) + h;
                        let e = if m == start(c) { 1.0 } else { 0.0 };
                        v[i][h] = e - acc[s][i][h];
                    }
                }
                unroll!(t2 in [0, 1, 2, 3, 4, 5, 6, 7] => {
                    // Row t2 final.
                    for i in 0..L {
                        if lanes[i] / 4 == t2 {
                            let m = m0 + t2;
                            for (h, vh) in v[i].iter_mut().enumerate() {
                                let c = ct * TILE + 2 * (lanes[i] % 4) + h;
                                *vh = if m >= start(c) && m < n { *vh * rinv[i] } else { 0.0 };
                            }
                        }
                    }
                    if t2 + 1 < ROWS {
                        let src = |lane: usize| 4 * t2 + lane % 4;
                        let mut y = [[0.0f64; 2]; L];
                        for h in 0..2 {
                            let mut vh = [0.0f64; L];
                            for i in 0..L {
                                vh[i] = v[i][h];
                            }
                            let yh = team.shuffle(vh, lanes, src);
                            for i in 0..L {
                                y[i][h] = yh[i];
                            }
                        }
                        for i in 0..L {
                            if lanes[i] / 4 > t2 {
                                for h in 0..2 {
                                    v[i][h] = fma(-lrow[i][t2], y[i][h], v[i][h]);
                                }
                            }
                        }
                    }
                });
            }
            // Inactive tiles store their zeros (the slots' earlier rows were zero too).
            for i in 0..L {
                let t = lanes[i] / 4;
                let slot = if slot0 + t >= depth { slot0 + t - depth } else { slot0 + t };
                let at = slot * stride + ct * TILE + 2 * (lanes[i] % 4);
                ring.set(at, v[i][0]);
                ring.set(at + 1, v[i][1]);
            }
        }
    });
}

/// Step 3 of the module documentation: rows `m0 .. m0 + 8` of `Y_b` (in the ring) into the
/// Gram tiles of warp `w` (`C[r][c] += Σ_t y_t[r]·y_t[c]`), skipping the tiles whose columns
/// `J` start after the group.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gram_group<const L: usize, T: MmaTeam<L>>(
    team: &T,
    geo: &CovGeometry,
    ring: Shared,
    stride: usize,
    m0: usize,
    acc: &mut [[[f64; 2]; L]; GRAM_SLOTS],
    w: usize,
    lanes: [usize; L],
) {
    let depth = geo.depth;
    let warps = team.warps();
    let nt = geo.bs.div_ceil(TILE);
    let ntile = nt * (nt + 1) / 2;
    let slot0 = m0 % depth;
    unroll!(s in [0, 1, 2, 3, 4, 5, 6] => {
        let t = w + s * warps;
        if t < ntile {
            let (ti, tj) = upper_tile(t);
            if geo.block + tj * TILE * geo.nblock < m0 + ROWS {
                unroll!(h in [0, 1] => {
                    let mut va = [0.0f64; L];
                    let mut vb = [0.0f64; L];
                    for i in 0..L {
                        let r = slot0 + 4 * h + lanes[i] % 4;
                        let base = (if r >= depth { r - depth } else { r }) * stride;
                        // SAFETY: slot < depth, columns < 8·nt <= stride.
                        unsafe {
                            va[i] = ring.get_unchecked(base + ti * TILE + lanes[i] / 4);
                            vb[i] = ring.get_unchecked(base + tj * TILE + lanes[i] / 4);
                        }
                    }
                    acc[s] = team.mma(va, vb, acc[s]);
                });
            }
        }
    });
}
