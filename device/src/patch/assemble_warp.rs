//! Warp-cooperative assembly of the normal equations (docs/algorithm.md §4.1; Bolton & Schlegel
//! 2010 eq. 10): the numerics of the `assemble_warp` kernel, one warp of [`WARP_LANES`] lanes per
//! unknown `q1`, giving the same band column, `rhs[q1]` and `fluxweight[q1]` as
//! [`assemble_unknown`](crate::patch::assemble_unknown) up to the order of the sums.
//!
//! Lane `lane` of `lanes` owns the pixels `e = lane + lanes·j` (`j < MAX_PER_LANE`) of the
//! `(ny, nx)` row-major stamp of `q1` and keeps `w·A[e, q1]` of each in registers
//! ([`LaneStamp`]). The lane's part of `M[q2][q1] = Σ_pix w·A[pix, q1]·A[pix, q2]` is a sum
//! over its own pixels that lie inside the stamp of `q2`; consecutive lanes read consecutive
//! addresses of both stamps (coalesced loads, one load per multiply-add). The lanes' parts are
//! added by a warp all-reduce, abstracted as a closure so that the host tests can emulate the
//! warp: [`assemble_unknown_lane`] is the whole per-lane algorithm, shared by the kernel and
//! the tests.

use crate::math::fma;
use crate::patch::{stamps_overlap, CcdView, PatchShape, StampView};
use crate::psf::spot::StampCorner;
use crate::team::Shared;
use crate::Status;

/// Lanes of an NVIDIA warp.
pub const WARP_LANES: usize = 32;

/// Stamp pixels cached per lane: stamps of up to `lanes · MAX_PER_LANE` pixels (256 for a
/// warp; DESI's are 11 × 17 = 187) are assembled, larger ones give [`Status::TooLarge`].
pub const MAX_PER_LANE: usize = 8;

/// Slots per lane that DESI's 11 × 17 = 187-pixel stamps need in a warp (`⌈187 / 32⌉`): the
/// kernel runs [`assemble_unknown_lane_slots`] with this many for stamps of up to
/// `32 · DESI_SLOTS` pixels (every slot loop a quarter shorter than with [`MAX_PER_LANE`],
/// and fewer registers), with `MAX_PER_LANE` otherwise.
pub const DESI_SLOTS: usize = 6;

/// Stamp column of a cache slot that holds no pixel (outside the stamp or the kept rows):
/// far enough from any stamp that `col + dx` is never in `0..nx` for the column offsets
/// `|dx| < nx <= MAX_STAMP_PIXELS` of overlapping stamps.
const NO_COL: i32 = i32::MIN / 2;

/// Largest stamp [`LaneStamp`] caches anything of, whatever `lanes`: it keeps the index
/// arithmetic of [`LaneStamp::entry_partial`] exact in `i32`.
const MAX_STAMP_PIXELS: usize = 1 << 20;

/// Which warp sum [`assemble_unknown_lane`] asks for (for emulations; the GPU ignores it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarpTerm {
    /// `rhs[q1] = Σ_pix w·A[pix, q1]·p_pix`.
    Rhs,
    /// `fluxweight[q1] = Σ_pix w·A[pix, q1]`.
    Fluxweight,
    /// `M[q2][q1]` for this `q2` (only for overlapping stamps).
    Entry(usize),
}

/// One lane's share of the stamp of unknown `q1`: `w·A[e, q1]` of the pixels
/// `e = lane + lanes·j`, `j < SLOTS` (at most [`MAX_PER_LANE`]), and the lane's partial sums of
/// `rhs[q1]` and `fluxweight[q1]`.
#[derive(Clone, Copy, Debug)]
pub struct LaneStamp<const SLOTS: usize = MAX_PER_LANE> {
    /// `weight(pix) · stamp1[e]` (0 for a slot that holds no pixel).
    wa: [f64; SLOTS],
    /// Stamp column `e % nx`, or [`NO_COL`] for a slot that holds no pixel (its row is
    /// implied by `e`, see [`LaneStamp::entry_partial`]).
    col: [i32; SLOTS],
    /// Corner of the stamp of `q1`.
    corner1: StampCorner,
    /// Lane (slot `j` holds pixel `lane + lanes·j`).
    lane: usize,
    /// Lanes of the warp.
    lanes: usize,
    /// Stamp rows.
    ny: usize,
    /// Stamp columns.
    nx: usize,
    /// This lane's part of `rhs[q1]`: `Σ_j wa[j] · image(pix_j)`.
    pub rhs: f64,
    /// This lane's part of `fluxweight[q1]`: `Σ_j wa[j]`.
    pub fluxweight: f64,
}

impl<const SLOTS: usize> LaneStamp<SLOTS> {
    /// Caches lane `lane`'s pixels of the stamp of padded spectrum `s1`, padded bin `k1`,
    /// truncated to the kept rows `[row_min, row_max)` of `shape`.
    ///
    /// The caller has checked (as [`assemble_unknown_lane_slots`] does) that `lane < lanes`,
    /// that `ny · nx <= lanes · SLOTS`, that the kept rows lie on the CCD and that the
    /// stamp's columns do. Otherwise pixels beyond the cache are ignored (nothing is cached
    /// for a stamp of more than `lanes · SLOTS` pixels) and a read outside `ccd` panics.
    #[inline(always)]
    pub fn new(
        view: &StampView,
        ccd: &CcdView,
        shape: &PatchShape,
        s1: usize,
        k1: usize,
        lane: usize,
        lanes: usize,
    ) -> Self {
        let (ny, nx) = (view.ny, view.nx);
        let corner1 = view.corner(s1, k1);
        let stamp1 = view.stamp(s1, k1);
        let mut cache = LaneStamp {
            wa: [0.0; SLOTS],
            col: [NO_COL; SLOTS],
            corner1,
            lane,
            lanes,
            ny,
            nx,
            rhs: 0.0,
            fluxweight: 0.0,
        };
        let size = ny * nx;
        if size == 0 || SLOTS > MAX_PER_LANE || size > lanes * SLOTS || size > MAX_STAMP_PIXELS {
            return cache;
        }
        // (r, c) of e = lane + lanes·j, stepped by (lanes / nx, lanes % nx) with one carry:
        // two divisions instead of one per slot. Fully unrolled (constant j): the cache stays
        // in registers on the GPU.
        let (step_r, step_c) = (lanes / nx, lanes % nx);
        let (mut r, mut c) = (lane / nx, lane % nx);
        for j in 0..SLOTS {
            let e = lane + lanes * j;
            debug_assert_eq!(e, r * nx + c);
            let row = corner1.yc + r as i32;
            if e < size && row >= shape.row_min && row < shape.row_max {
                let pix = row as usize * ccd.ncol + corner1.xc as usize + c;
                let wa = ccd.weight[pix] * stamp1[e];
                cache.wa[j] = wa;
                cache.col[j] = c as i32;
                cache.fluxweight += wa;
                cache.rhs = fma(wa, ccd.image[pix], cache.rhs);
            }
            r += step_r;
            c += step_c;
            if c >= nx {
                c -= nx;
                r += 1;
            }
        }
        cache
    }

    /// This lane's part of `M[q2][q1]` for the unknown `q2` of padded spectrum `s2`, padded
    /// bin `k2` (stamp `stamp2`, `(ny, nx)` row-major, at `corner2`):
    /// `Σ_j wa[j] · stamp2[r_j + dy][c_j + dx]` over the lane's pixels `e_j = r_j·nx + c_j`
    /// inside that stamp, `dy = yc1 − yc2`, `dx = xc1 − xc2`, accumulated with fused
    /// multiply-adds. `None` when the two stamps share no kept pixel (the entry is exactly 0;
    /// the test of [`assemble_unknown`](crate::patch::assemble_unknown)), without touching
    /// the stamp.
    ///
    /// `view` must have the stamp size of the view given to [`LaneStamp::new`] (panics if its
    /// stamps are smaller).
    #[inline(always)]
    pub fn entry_partial(
        &self,
        view: &StampView,
        shape: &PatchShape,
        s2: usize,
        k2: usize,
    ) -> Option<f64> {
        let corner2 = view.corner(s2, k2);
        if !stamps_overlap(self.corner1, corner2, self.ny, self.nx, shape) {
            return None;
        }
        Some(self.partial_in(&view.stamp(s2, k2)[..self.ny * self.nx], corner2))
    }

    /// [`LaneStamp::entry_partial`] for the stamp at `corner2` whose index in `view` (stamp
    /// and corner tables, `s2 · fiber_stride + k2`) is `index2`: the same value, bitwise. The
    /// reduce-scatter kernel steps `index2` with `q2` and loads `corner2` one entry ahead.
    #[inline(always)]
    pub fn entry_partial_at(
        &self,
        view: &StampView,
        shape: &PatchShape,
        corner2: StampCorner,
        index2: usize,
    ) -> Option<f64> {
        if !stamps_overlap(self.corner1, corner2, self.ny, self.nx, shape) {
            return None;
        }
        let size = self.ny * self.nx;
        let start = index2 * size;
        Some(self.partial_in(&view.stamps[start..start + size], corner2))
    }

    /// The sum of [`LaneStamp::entry_partial`] over this lane's pixels, for an overlapping
    /// stamp `stamp2` (its `ny · nx` values) at `corner2`.
    #[inline(always)]
    fn partial_in(&self, stamp2: &[f64], corner2: StampCorner) -> f64 {
        let (ny, nx) = (self.ny, self.nx);
        let size = ny * nx;
        // Pixel e = r·nx + c of stamp 1 is pixel i = (r + dy)·nx + (c + dx) = e + offset of
        // stamp 2: consecutive lanes read consecutive addresses, slot j at a constant
        // distance. With c + dx in 0..nx, i is in 0..ny·nx exactly when r + dy is in 0..ny,
        // so one compare on i replaces the row test.
        //
        // Exactness: a slot holds a pixel only if ny·nx <= MAX_STAMP_PIXELS (LaneStamp::new),
        // and overlapping stamps have |dy| < ny, |dx| < nx, so every value below fits an i32
        // (wrapping operations only matter for an empty cache, whose reads add 0·x). The
        // reads are in bounds in every case: i < size32 <= stamp2.len().
        let dy = self.corner1.yc.wrapping_sub(corner2.yc);
        let dx = self.corner1.xc.wrapping_sub(corner2.xc);
        let offset = dy.wrapping_mul(nx as i32).wrapping_add(dx);
        let base = (self.lane as i32).wrapping_add(offset);
        let size32 = size.min(u32::MAX as usize) as u32;
        let nx32 = nx.min(u32::MAX as usize) as u32;
        let mut sum = 0.0;
        for j in 0..SLOTS {
            let c2 = self.col[j].wrapping_add(dx);
            let i = base.wrapping_add((self.lanes * j) as i32);
            // Negative values wrap to large u32: one compare per bound.
            if (c2 as u32) < nx32 && (i as u32) < size32 {
                // SAFETY: i < size32 <= size = stamp2.len().
                sum = fma(
                    self.wa[j],
                    unsafe { *stamp2.get_unchecked(i as u32 as usize) },
                    sum,
                );
            }
        }
        sum
    }
}

/// Lane `lane` of a warp of `lanes` lanes assembling unknown `q1` of a patch: the warp
/// together writes what [`assemble_unknown`](crate::patch::assemble_unknown) writes
/// (`rhs[q1]`, `fluxweight[q1]` and the band column `M[q2][q1]`, `q2` in `q1..=q1+kd`,
/// stored at `band[q2·(kd+1) + (q1+kd−q2)]`, zeros included; `band` is `(n, kd + 1)`,
/// `rhs` and `fluxweight` `(n,)`, B&S eq. 10) and returns the same [`Status`], or
/// [`Status::TooLarge`] for stamps of more than `lanes · MAX_PER_LANE` pixels.
///
/// `all_reduce(term, partial)` must return the sum of `partial` over the `lanes` lanes of the
/// warp (the same value to every lane); `term` says what is summed. Every lane of a warp
/// calls it the same number of times with the same `term`s (every branch around it depends
/// on `q1` and the patch only), so a GPU warp can implement it with shuffles.
///
/// Lane 0 writes `rhs[q1]` and `fluxweight[q1]`; the entries `q2 = q1 + d` are written by
/// lane `d mod lanes`. Different lanes and different `q1` therefore write disjoint entries of
/// the [`Shared`] outputs, which all the lanes of all the warps of a patch hold at once.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn assemble_unknown_lane<F: FnMut(WarpTerm, f64) -> f64>(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    kd: usize,
    q1: usize,
    lane: usize,
    lanes: usize,
    band: Shared,
    rhs: Shared,
    fluxweight: Shared,
    all_reduce: F,
) -> Status {
    assemble_unknown_lane_slots::<MAX_PER_LANE, F>(
        view, ccd, shape, kd, q1, lane, lanes, band, rhs, fluxweight, all_reduce,
    )
}

/// [`assemble_unknown_lane`] with `SLOTS` (at most [`MAX_PER_LANE`]) stamp pixels cached per
/// lane: the same results (bitwise: the slots beyond the stamp hold nothing and add nothing)
/// for stamps of up to `lanes · SLOTS` pixels, [`Status::TooLarge`] for larger ones.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn assemble_unknown_lane_slots<const SLOTS: usize, F: FnMut(WarpTerm, f64) -> f64>(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    kd: usize,
    q1: usize,
    lane: usize,
    lanes: usize,
    band: Shared,
    rhs: Shared,
    fluxweight: Shared,
    mut all_reduce: F,
) -> Status {
    let n = shape.nunknown();
    let ns = shape.nspecpad;
    let (ny, nx) = (view.ny, view.nx);
    if SLOTS > MAX_PER_LANE || ny * nx > lanes * SLOTS {
        return Status::TooLarge;
    }
    if q1 >= n
        || lane >= lanes
        || band.len() < n * (kd + 1)
        || rhs.len() < n
        || fluxweight.len() < n
    {
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
    let cache = LaneStamp::<SLOTS>::new(view, ccd, shape, s1, k1, lane, lanes);
    let y_sum = all_reduce(WarpTerm::Rhs, cache.rhs);
    let w_sum = all_reduce(WarpTerm::Fluxweight, cache.fluxweight);
    if lane == 0 {
        rhs.set(q1, y_sum);
        fluxweight.set(q1, w_sum);
    }
    // Chunks of `lanes` entries: lane d keeps entry q1 + chunk + d, then every lane stores
    // its own (one store per lane per chunk). (s2, k2) follow q2 without a division. (Stepping
    // the stamp index with q2 and loading the next corner one entry ahead, as
    // assemble_unknown_lane_rs does, made this kernel slower: 19.97 against 19.19 ms per r
    // frame, H100, 2026-12-07.)
    let q2_end = if q1 + kd + 1 < n { q1 + kd + 1 } else { n };
    let (mut s2, mut k2) = (s1, k1);
    let mut chunk = q1;
    while chunk < q2_end {
        let chunk_end = if chunk + lanes < q2_end {
            chunk + lanes
        } else {
            q2_end
        };
        let mut mine = 0.0;
        let mut q2 = chunk;
        while q2 < chunk_end {
            if let Some(partial) = cache.entry_partial(view, shape, s2, k2) {
                let total = all_reduce(WarpTerm::Entry(q2), partial);
                if q2 - chunk == lane {
                    mine = total;
                }
            }
            q2 += 1;
            s2 += 1;
            if s2 == ns {
                s2 = 0;
                k2 += 1;
            }
        }
        let q2 = chunk + lane;
        if q2 < chunk_end {
            band.set(q2 * (kd + 1) + (q1 + kd - q2), mine);
        }
        chunk = chunk_end;
    }
    // Any overlapping pair beyond the band would be silently lost: refuse. (s2, k2) is q2_end.
    if q2_end < n && stamps_overlap(c1, view.corner(s2, k2), ny, nx, shape) {
        return Status::BadShape;
    }
    Status::Ok
}

/// The lane exchange of a warp: all that [`assemble_unknown_lane_rs`] needs from the hardware
/// (a butterfly shuffle on the GPU, a lock-step emulation of 32 host threads in the tests).
pub trait WarpExchange {
    /// The `value` that lane `lane ^ mask` passes. Every lane of the warp calls it together,
    /// with the same `mask` (a power of two below [`WARP_LANES`]).
    fn exchange(&mut self, value: f64, mask: u32) -> f64;
}

/// Entries of the band column reduced together by [`assemble_unknown_lane_rs`]: a
/// reduce-scatter of 16 entries over 32 lanes takes 8 + 4 + 2 + 1 + 1 = 16 exchanges where
/// 16 butterfly all-reduces take 80, with 16 partial sums per lane in registers.
pub const RS_ENTRIES: usize = 16;

/// The butterfly all-reduce of the GPU's warp sum (lane masks 16, 8, 4, 2, 1, each step
/// `own + partner's`): every lane gets the same sum.
#[inline(always)]
fn butterfly_sum<X: WarpExchange>(warp: &mut X, value: f64) -> f64 {
    let mut sum = value;
    let mut mask = (WARP_LANES / 2) as u32;
    while mask > 0 {
        sum += warp.exchange(sum, mask);
        mask >>= 1;
    }
    sum
}

/// One step of the reduce-scatter of [`assemble_unknown_lane_rs`]: `part[..2·H]` holds this
/// lane's sums of `2·H` entries; a lane with the `mask` bit set keeps the upper `H` and sends
/// the lower ones, the others the reverse, and each kept entry gets the partner's sum of it
/// added (`own + partner's`). The kept entries end in `part[..H]`.
#[inline(always)]
fn reduce_scatter_step<const H: usize, X: WarpExchange>(
    part: &mut [f64; RS_ENTRIES],
    lane: usize,
    mask: u32,
    warp: &mut X,
) {
    let upper = lane as u32 & mask != 0;
    for i in 0..H {
        let (keep, send) = if upper {
            (part[H + i], part[i])
        } else {
            (part[i], part[H + i])
        };
        part[i] = keep + warp.exchange(send, mask);
    }
}

/// Lane `lane` of a warp of [`WARP_LANES`] lanes assembling unknown `q1` of a patch: the same
/// writes, values (bitwise) and [`Status`] as [`assemble_unknown_lane_slots`] with an
/// all-reduce by butterfly shuffles (the GPU's `assemble_warp`), but the band column is
/// reduced [`RS_ENTRIES`] entries at a time by a reduce-scatter: each lane computes its
/// partial of every entry of the group (0 for entries whose stamps do not overlap), then at
/// lane masks 16, 8, 4, 2 a lane keeps the half of its entries that its mask bit selects and
/// adds its partner's partials of them (`own + partner's`, the additions of the butterfly in
/// the same order), and at mask 1 the pair adds its last entry. Lane `l` then holds the full
/// sum of entry `l / 2` of the group, which the even lanes store. An entry without overlap
/// sums exact zeros, the `+0.0` the butterfly version stores.
///
/// `warp.exchange` is called the same number of times with the same masks by every lane
/// (every branch around it depends on `q1` and the patch only). `rhs[q1]` and
/// `fluxweight[q1]` are butterfly all-reduces as in `assemble_warp`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn assemble_unknown_lane_rs<const SLOTS: usize, X: WarpExchange>(
    view: &StampView,
    ccd: &CcdView,
    shape: &PatchShape,
    kd: usize,
    q1: usize,
    lane: usize,
    band: Shared,
    rhs: Shared,
    fluxweight: Shared,
    warp: &mut X,
) -> Status {
    let lanes = WARP_LANES;
    let n = shape.nunknown();
    let ns = shape.nspecpad;
    let (ny, nx) = (view.ny, view.nx);
    if SLOTS > MAX_PER_LANE || ny * nx > lanes * SLOTS {
        return Status::TooLarge;
    }
    if q1 >= n
        || lane >= lanes
        || band.len() < n * (kd + 1)
        || rhs.len() < n
        || fluxweight.len() < n
    {
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
    let cache = LaneStamp::<SLOTS>::new(view, ccd, shape, s1, k1, lane, lanes);
    let y_sum = butterfly_sum(warp, cache.rhs);
    let w_sum = butterfly_sum(warp, cache.fluxweight);
    if lane == 0 {
        rhs.set(q1, y_sum);
        fluxweight.set(q1, w_sum);
    }
    // (s2, k2), the stamp index and the corner of q2 are stepped with q2, the corner of
    // q2 + 1 loaded one entry ahead (as in assemble_unknown_lane_slots).
    let q2_end = if q1 + kd + 1 < n { q1 + kd + 1 } else { n };
    let stride = view.fiber_stride;
    let (mut s2, mut k2) = (s1, k1);
    let mut index2 = view.index(s1, k1);
    let mut corner2 = c1;
    let mut chunk = q1;
    while chunk < q2_end {
        // This lane's partial of entry chunk + e (0 beyond q2_end or without overlap), the
        // state stepped to the next q2.
        // This lane's partial of entry chunk + e (0 beyond q2_end or without overlap), the
        // state stepped to the next q2 (a macro: inlined for certain, so the views keep their
        // global address space).
        macro_rules! partial_of {
            ($e:expr) => {{
                let q2 = chunk + $e;
                if q2 >= q2_end {
                    0.0
                } else {
                    let (mut s_next, mut k_next, mut index_next) = (s2 + 1, k2, index2 + stride);
                    if s_next == ns {
                        s_next = 0;
                        k_next += 1;
                        index_next = k_next;
                    }
                    let corner_next = if q2 + 1 < n {
                        view.corners[index_next]
                    } else {
                        corner2
                    };
                    let partial = cache.entry_partial_at(view, shape, corner2, index2);
                    (s2, k2, index2, corner2) = (s_next, k_next, index_next, corner_next);
                    partial.unwrap_or(0.0)
                }
            }};
        }
        // Written out (constant indices): the partials stay in registers.
        let mut part: [f64; RS_ENTRIES] = [
            partial_of!(0),
            partial_of!(1),
            partial_of!(2),
            partial_of!(3),
            partial_of!(4),
            partial_of!(5),
            partial_of!(6),
            partial_of!(7),
            partial_of!(8),
            partial_of!(9),
            partial_of!(10),
            partial_of!(11),
            partial_of!(12),
            partial_of!(13),
            partial_of!(14),
            partial_of!(15),
        ];
        // Reduce-scatter at masks 16, 8, 4, 2 (16 -> 8 -> 4 -> 2 -> 1 entries per lane).
        reduce_scatter_step::<8, X>(&mut part, lane, 16, warp);
        reduce_scatter_step::<4, X>(&mut part, lane, 8, warp);
        reduce_scatter_step::<2, X>(&mut part, lane, 4, warp);
        reduce_scatter_step::<1, X>(&mut part, lane, 2, warp);
        let mask = 1;
        let total = part[0] + warp.exchange(part[0], mask);
        let q2 = chunk + lane / 2;
        if lane & 1 == 0 && q2 < q2_end {
            band.set(q2 * (kd + 1) + (q1 + kd - q2), total);
        }
        chunk += RS_ENTRIES;
    }
    debug_assert!(q2_end >= n || (corner2 == view.corner(s2, k2) && index2 == view.index(s2, k2)));
    // Any overlapping pair beyond the band would be silently lost: refuse. corner2 is q2_end's.
    if q2_end < n && stamps_overlap(c1, corner2, ny, nx, shape) {
        return Status::BadShape;
    }
    Status::Ok
}
