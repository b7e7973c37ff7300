//! `pixel_chi2_row_lane` and `core_pixel_sums_lane` (the numerics of the warp-cooperative
//! `pixel_rows_warp` and `pixel_core_warp` kernels) against `pixel_chi2_row` and
//! `core_pixel_sums` (one thread per window row / per core unknown), on DESI-like patches
//! (common/patch.rs): the χ²_pix window bitwise, chi2pix and pixmask_fraction to a few ulp
//! (the warp adds the lanes' sums in the butterfly order of the GPU's shuffles), the same
//! status on bad shapes, and the global-memory sectors of both mappings (a model of the
//! coalescing: the addresses the 32 lanes of a warp touch in one load or store, in 32-byte
//! sectors).

mod common;

use common::patch::{build_patch, Geometry, Patch};
use desi_device::patch::finalize_warp::{
    core_pixel_sums_lane, pixel_chi2_row_lane, CorePartial, MAX_COLS_PER_LANE,
};
use desi_device::patch::{core_pixel_sums, pixel_chi2_row};
use desi_device::team::Shared;
use desi_device::Status;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

/// Lanes of a GPU warp.
const WARP: usize = 32;

/// Relative tolerance of chi2pix and pixmask_fraction: both sides add the same ≤ 187
/// non-negative products, in another order (lanes, then a butterfly): a few ulp per term;
/// 1e-13 leaves a factor ~100 of margin.
const RTOL: f64 = 1e-13;

/// PSF error fraction (the r camera's).
const PSFERR: f64 = 0.01;

/// A patch with a deconvolved flux and the column range of its window.
struct Case {
    patch: Patch,
    xflux: Vec<f64>,
    col_min: i32,
    col_max: i32,
}

impl Case {
    fn new(geometry: Geometry, seed: u64) -> Self {
        let patch = build_patch(geometry, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        // Fluxes of both signs (noisy deconvolved spectra), so that the model and χ² are not
        // monotonic in any one term.
        let xflux = (0..patch.n())
            .map(|_| rng.random_range(-20.0..400.0))
            .collect();
        let ns = patch.shape.nspecpad;
        let used = (0..ns)
            .flat_map(|s| (0..geometry.nwavetot).map(move |k| s * patch_stride(geometry) + k));
        let xs: Vec<i32> = used.map(|i| patch.corners[i].xc).collect();
        let col_min = xs.iter().min().unwrap() - 1;
        let col_max = xs.iter().max().unwrap() + patch.nx as i32 + 1;
        Case {
            patch,
            xflux,
            col_min,
            col_max,
        }
    }

    fn width(&self) -> usize {
        (self.col_max - self.col_min) as usize
    }

    fn height(&self) -> usize {
        (self.patch.shape.row_max - self.patch.shape.row_min) as usize
    }

    /// The window of `pixel_chi2_row`, row by row, and the first non-Ok status.
    fn reference_window(&self) -> (Vec<f64>, Status) {
        let (w, h) = (self.width(), self.height());
        let mut window = vec![f64::NAN; w * h];
        let p = &self.patch;
        for r in 0..h {
            let code = pixel_chi2_row(
                &p.view(),
                &p.ccd(),
                &p.shape,
                self.col_min,
                self.col_max,
                &self.xflux,
                PSFERR,
                r,
                &mut window[r * w..(r + 1) * w],
            );
            if code != Status::Ok {
                return (window, code);
            }
        }
        (window, Status::Ok)
    }

    /// The window of `pixel_chi2_row_lane`, one warp of `lanes` per row, lanes in `order`;
    /// checks that every lane of a row returns the same status.
    fn warp_window(&self, lanes: usize, reverse: bool) -> (Vec<f64>, Status) {
        let (w, h) = (self.width(), self.height());
        let mut window = vec![f64::NAN; w * h];
        let p = &self.patch;
        for r in 0..h {
            let row = Shared::new(&mut window[r * w..(r + 1) * w]);
            let mut codes = Vec::new();
            let order: Vec<usize> = if reverse {
                (0..lanes).rev().collect()
            } else {
                (0..lanes).collect()
            };
            let y = p.shape.row_min + r as i32;
            let mut chunks = Vec::new();
            for lane in order {
                let mut mine = Vec::new();
                codes.push(pixel_chi2_row_lane(
                    &p.view(),
                    &p.ccd(),
                    &p.shape,
                    self.col_min,
                    self.col_max,
                    &self.xflux,
                    PSFERR,
                    r,
                    lane,
                    lanes,
                    row,
                    |chunk, hit| {
                        // The warp's vote, every lane's answer recomputed here; the lane's own
                        // must be the one it passed.
                        mine.push(chunk);
                        let votes = self.votes(y, chunk, lanes);
                        assert_eq!(hit, votes >> lane & 1 == 1, "row {r} lane {lane} q {chunk}");
                        votes
                    },
                ));
                chunks.push(mine);
            }
            assert!(
                codes.iter().all(|&c| c == codes[0]),
                "row {r}: lanes disagree on the status: {codes:?}"
            );
            assert!(
                chunks.iter().all(|c| *c == chunks[0]),
                "row {r}: lanes vote on different chunks"
            );
            if codes[0] != Status::Ok {
                return (window, codes[0]);
            }
        }
        (window, Status::Ok)
    }

    /// The votes of `lanes` lanes testing whether the stamps of q = chunk + lane cover CCD
    /// row `y`.
    fn votes(&self, y: i32, chunk: usize, lanes: usize) -> u32 {
        let p = &self.patch;
        let ns = p.shape.nspecpad;
        (0..lanes)
            .filter(|&lane| {
                let q = chunk + lane;
                q < p.n() && {
                    let c = p.corners[(q % ns) * p.fiber_stride + q / ns];
                    y >= c.yc && y < c.yc + p.ny as i32
                }
            })
            .fold(0, |votes, lane| votes | 1 << lane)
    }

    /// Core unknowns (s, k) of the test: every padded spectrum but the first and last, bins
    /// `pad..nwavetot - pad`.
    fn core(&self, pad: usize) -> Vec<(usize, usize)> {
        let ns = self.patch.shape.nspecpad;
        let nw = self.patch.shape.nwavetot;
        (1..ns - 1)
            .flat_map(|s| (pad..nw - pad).map(move |k| (s, k)))
            .collect()
    }

    /// `core_pixel_sums` of unknown (s, k).
    fn reference_core(&self, window: &[f64], s: usize, k: usize) -> (f64, f64) {
        let p = &self.patch;
        core_pixel_sums(
            &p.view(),
            &p.ccd(),
            &p.shape,
            self.col_min,
            self.col_max,
            window,
            s,
            k,
        )
    }

    /// The lanes' partials of unknown (s, k), added as a warp of 32 adds them (butterfly), or
    /// in lane order for other lane counts.
    fn warp_core(&self, window: &[f64], s: usize, k: usize, lanes: usize) -> (f64, f64) {
        let p = &self.patch;
        let parts: Vec<CorePartial> = (0..lanes)
            .map(|lane| {
                core_pixel_sums_lane(
                    &p.view(),
                    &p.ccd(),
                    &p.shape,
                    self.col_min,
                    self.col_max,
                    window,
                    s,
                    k,
                    lane,
                    lanes,
                )
            })
            .collect();
        let total = if lanes == WARP {
            let pick =
                |f: fn(&CorePartial) -> f64| butterfly(&parts.iter().map(f).collect::<Vec<_>>());
            CorePartial {
                num: pick(|c| c.num),
                den: pick(|c| c.den),
                masked: pick(|c| c.masked),
            }
        } else {
            parts.iter().fold(CorePartial::default(), |acc, &c| acc + c)
        };
        total.finish()
    }
}

fn patch_stride(geometry: Geometry) -> usize {
    geometry.nwavetot + common::patch::TABLE_PAD
}

/// The GPU's butterfly all-reduce (lane masks 16, 8, 4, 2, 1), as lane 0 sees it.
fn butterfly(parts: &[f64]) -> f64 {
    let mut v = parts.to_vec();
    let mut mask = WARP / 2;
    while mask > 0 {
        v = (0..WARP).map(|l| v[l] + v[l ^ mask]).collect();
        mask /= 2;
    }
    v[0]
}

/// Bitwise comparison of two windows (NaN where nothing was written must match too).
fn same_bits(label: &str, actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            a.to_bits() == e.to_bits(),
            "{label}: window[{i}] = {a:e}, serial {e:e}"
        );
    }
}

fn close(label: &str, actual: f64, expected: f64) {
    let scale = expected.abs().max(f64::MIN_POSITIVE);
    assert!(
        actual.is_finite() && (actual - expected).abs() <= RTOL * scale,
        "{label}: {actual:e}, serial {expected:e}"
    );
}

/// Every core unknown of `case` (window and sums) against the serial functions.
fn check_case(label: &str, case: &Case, lanes_list: &[usize]) {
    let (reference, code) = case.reference_window();
    assert_eq!(code, Status::Ok, "{label}: serial window");
    // χ²_pix must be a real statistic here: positive somewhere, zero on masked pixels.
    assert!(
        reference.iter().any(|&v| v > 0.0),
        "{label}: all-zero window"
    );
    for &lanes in lanes_list {
        for reverse in [false, true] {
            let (window, code) = case.warp_window(lanes, reverse);
            assert_eq!(code, Status::Ok, "{label}: lanes {lanes}");
            same_bits(&format!("{label}, lanes {lanes}"), &window, &reference);
        }
        for (s, k) in case.core(4) {
            let (chi, mask) = case.reference_core(&reference, s, k);
            let (wchi, wmask) = case.warp_core(&reference, s, k, lanes);
            close(
                &format!("{label}: chi2pix ({s}, {k}), lanes {lanes}"),
                wchi,
                chi,
            );
            close(
                &format!("{label}: pixmask ({s}, {k}), lanes {lanes}"),
                wmask,
                mask,
            );
        }
    }
}

#[test]
fn warp_window_and_sums_match_the_serial_functions() {
    for (seed, geometry) in [
        (1, Geometry::desi(7, 74)),
        (2, Geometry::desi(6, 74)),
        (3, Geometry::desi(6, 30)),
    ] {
        let case = Case::new(geometry, seed);
        // 32 (the warp; ~70 columns: 3 per lane), 7 and 1 (several passes of
        // MAX_COLS_PER_LANE columns, stamp rows longer than the lane count).
        assert!(case.width() > 7 * MAX_COLS_PER_LANE);
        check_case(&format!("seed {seed}"), &case, &[WARP, 7, 1]);
    }
}

#[test]
fn wide_windows_take_several_passes() {
    // Fibers 20 px apart: a window wider than 32 · MAX_COLS_PER_LANE columns.
    let geometry = Geometry {
        spacing: 26.0,
        ..Geometry::desi(6, 20)
    };
    let case = Case::new(geometry, 11);
    assert!(case.width() > WARP * MAX_COLS_PER_LANE, "{}", case.width());
    check_case("wide", &case, &[WARP]);
}

#[test]
fn fully_masked_stamp_reports_exactly_one() {
    let geometry = Geometry::desi(6, 20);
    let mut case = Case::new(geometry, 6);
    // Mask every pixel of the stamp of (2, 10): its pixmask_fraction is exactly 1 and its
    // chi2pix 0 however the lanes add.
    let stride = patch_stride(geometry);
    let c = case.patch.corners[2 * stride + 10];
    let (ny, nx, ncol) = (case.patch.ny, case.patch.nx, case.patch.ncol);
    for r in 0..ny {
        for x in 0..nx {
            case.patch.weight[(c.yc as usize + r) * ncol + c.xc as usize + x] = 0.0;
        }
    }
    let (window, code) = case.reference_window();
    assert_eq!(code, Status::Ok);
    for lanes in [WARP, 5] {
        assert_eq!(case.warp_core(&window, 2, 10, lanes), (0.0, 1.0));
    }
    assert_eq!(case.reference_core(&window, 2, 10), (0.0, 1.0));
    check_case("masked stamp", &case, &[WARP]);
}

#[test]
fn bad_shapes_give_the_same_status() {
    let geometry = Geometry::desi(6, 24);
    let base = Case::new(geometry, 7);
    // A window narrower than the stamps, a window beyond the CCD, a short flux vector.
    let mut narrow = Case::new(geometry, 7);
    narrow.col_max -= 3;
    let mut beyond = Case::new(geometry, 7);
    beyond.col_max = base.patch.ncol as i32 + 1;
    let mut short = Case::new(geometry, 7);
    short.xflux.pop();
    for (label, case) in [("narrow", narrow), ("beyond", beyond), ("short", short)] {
        let (_, expected) = case.reference_window();
        assert_ne!(expected, Status::Ok, "{label}");
        let (_, code) = case.warp_window(WARP, false);
        assert_eq!(code, expected, "{label}");
    }
}

#[test]
fn the_comparisons_see_a_one_ulp_change() {
    // The checks above are not vacuous: one stamp pixel changed by one ulp changes the window
    // bitwise, and a flux changed by 1e-12 moves chi2pix beyond RTOL.
    let geometry = Geometry::desi(6, 16);
    let case = Case::new(geometry, 9);
    let (reference, _) = case.reference_window();
    let mut other = Case::new(geometry, 9);
    let stride = patch_stride(geometry);
    let (ny, nx) = (other.patch.ny, other.patch.nx);
    let i = (3 * stride + 8) * ny * nx + (ny / 2) * nx + nx / 2;
    other.patch.stamps[i] = f64::from_bits(other.patch.stamps[i].to_bits() + 1);
    let (window, _) = other.warp_window(WARP, false);
    let differ = window
        .iter()
        .zip(&reference)
        .any(|(a, e)| a.to_bits() != e.to_bits());
    assert!(differ, "a one-ulp stamp change left the window unchanged");
    let mut moved = Case::new(geometry, 9);
    for x in moved.xflux.iter_mut() {
        *x *= 1.0 + 1e-10;
    }
    let (window, _) = moved.warp_window(WARP, false);
    let (s, k) = (3, 8);
    let (chi, _) = case.reference_core(&reference, s, k);
    let (wchi, _) = moved.warp_core(&window, s, k, WARP);
    assert!((wchi - chi).abs() > RTOL * chi.abs(), "{wchi:e} vs {chi:e}");
}

// ---------------------------------------------------------------------------------------
// Coalescing model: global-memory sectors of one warp-wide load or store.

/// Bytes of a global-memory sector.
const SECTOR: u64 = 32;

/// Requests (warp-wide loads or stores) and the 32-byte sectors they touch.
#[derive(Default, Debug, Clone, Copy)]
struct Traffic {
    requests: u64,
    sectors: u64,
}

impl Traffic {
    /// One warp-wide access of the (byte) addresses of its active lanes.
    fn access(&mut self, addresses: impl IntoIterator<Item = u64>) {
        let sectors: BTreeSet<u64> = addresses.into_iter().map(|a| a / SECTOR).collect();
        if !sectors.is_empty() {
            self.requests += 1;
            self.sectors += sectors.len() as u64;
        }
    }

    fn per_request(&self) -> f64 {
        self.sectors as f64 / self.requests.max(1) as f64
    }
}

/// Disjoint base addresses of the buffers (bytes, 256-aligned as cudaMalloc's).
const STAMPS: u64 = 0;
const CORNERS: u64 = 1 << 40;
const IMAGE: u64 = 2 << 40;
const WEIGHT: u64 = 3 << 40;
const WINDOW: u64 = 4 << 40;

/// Which unknowns' stamps cover CCD row y, in q order, with their (s, k).
fn covering(case: &Case, y: i32) -> Vec<(usize, usize, usize)> {
    let p = &case.patch;
    let ns = p.shape.nspecpad;
    (0..p.n())
        .map(|q| (q, q % ns, q / ns))
        .filter(|&(_, s, k)| {
            let c = p.view().corner(s, k);
            y >= c.yc && y < c.yc + p.ny as i32
        })
        .collect()
}

/// `pixel_rows`: a warp is 32 consecutive rows (threads) of one patch; the threads walk
/// q = 0..n in lockstep (the corner load is uniform), the threads whose row the stamp covers
/// read its row and read-modify-write their window row; then every thread finishes its row.
fn model_pixel_rows_thread(case: &Case) -> Traffic {
    let p = &case.patch;
    let (w, h) = (case.width(), case.height());
    let (nx, ny, ns) = (p.nx, p.ny, p.shape.nspecpad);
    let stamp_bytes = (ny * nx * 8) as u64;
    let mut t = Traffic::default();
    for r0 in (0..h).step_by(WARP) {
        let rows: Vec<usize> = (r0..(r0 + WARP).min(h)).collect();
        for q in 0..p.n() {
            let (s, k) = (q % ns, q / ns);
            let c = p.view().corner(s, k);
            let idx = (s * p.fiber_stride + k) as u64;
            t.access([CORNERS + idx * 8]);
            let active: Vec<usize> = rows
                .iter()
                .copied()
                .filter(|&r| {
                    let y = p.shape.row_min + r as i32;
                    y >= c.yc && y < c.yc + ny as i32
                })
                .collect();
            for i in 0..nx {
                let srow = |r: usize| (p.shape.row_min + r as i32 - c.yc) as u64 * nx as u64;
                t.access(
                    active
                        .iter()
                        .map(|&r| STAMPS + idx * stamp_bytes + (srow(r) + i as u64) * 8),
                );
                let dst = |r: usize| {
                    WINDOW + ((r * w) as u64 + (c.xc - case.col_min) as u64 + i as u64) * 8
                };
                t.access(active.iter().map(|&r| dst(r))); // load
                t.access(active.iter().map(|&r| dst(r))); // store
            }
        }
        for i in 0..w {
            let pix = |r: usize| {
                ((p.shape.row_min as usize + r) * p.ncol + case.col_min as usize + i) as u64 * 8
            };
            t.access(rows.iter().map(|&r| IMAGE + pix(r)));
            t.access(rows.iter().map(|&r| WEIGHT + pix(r)));
            t.access(rows.iter().map(|&r| WINDOW + ((r * w + i) as u64) * 8)); // load
            t.access(rows.iter().map(|&r| WINDOW + ((r * w + i) as u64) * 8)); // store
        }
    }
    t
}

/// `pixel_rows_warp`: a warp per row, lanes over columns (`pixel_chi2_row_lane`): the vote
/// over 32 candidate unknowns at a time, then the covering stamps' rows.
fn model_pixel_rows_warp(case: &Case) -> Traffic {
    let p = &case.patch;
    let (w, h) = (case.width(), case.height());
    let (nx, ny) = (p.nx, p.ny);
    let stamp_bytes = (ny * nx * 8) as u64;
    let mut t = Traffic::default();
    for r in 0..h {
        let y = p.shape.row_min + r as i32;
        let cover = covering(case, y);
        let ns = p.shape.nspecpad;
        for base in (0..w).step_by(WARP * MAX_COLS_PER_LANE) {
            // The vote: lane i loads the corner of q = chunk + i.
            for chunk in (0..p.n()).step_by(WARP) {
                t.access(
                    (chunk..(chunk + WARP).min(p.n()))
                        .map(|q| CORNERS + ((q % ns) * p.fiber_stride + q / ns) as u64 * 8),
                );
            }
            for &(_, s, k) in &cover {
                t.access([CORNERS + (s * p.fiber_stride + k) as u64 * 8]);
                let c = p.view().corner(s, k);
                let idx = (s * p.fiber_stride + k) as u64;
                let x0 = (c.xc - case.col_min) as i64;
                let row = (y - c.yc) as u64 * nx as u64;
                for tt in 0..MAX_COLS_PER_LANE {
                    t.access((0..WARP).filter_map(|lane| {
                        let i = (base + lane + WARP * tt) as i64 - x0;
                        (i >= 0 && (i as usize) < nx)
                            .then(|| STAMPS + idx * stamp_bytes + (row + i as u64) * 8)
                    }));
                }
            }
            for tt in 0..MAX_COLS_PER_LANE {
                let cols: Vec<usize> = (0..WARP)
                    .map(|lane| base + lane + WARP * tt)
                    .filter(|&col| col < w)
                    .collect();
                let pix =
                    |col: usize| (y as usize * p.ncol + case.col_min as usize + col) as u64 * 8;
                t.access(cols.iter().map(|&col| WEIGHT + pix(col)));
                t.access(cols.iter().map(|&col| IMAGE + pix(col)));
                t.access(cols.iter().map(|&col| WINDOW + ((r * w + col) as u64) * 8));
            }
        }
    }
    t
}

/// `pixel_core`: a warp is 32 consecutive core unknowns (c, j) of one patch, each thread
/// walking its stamp's kept rows and columns in lockstep (row index, column).
fn model_pixel_core_thread(case: &Case, core: &[(usize, usize)]) -> Traffic {
    let p = &case.patch;
    let (nx, ny, w) = (p.nx, p.ny, case.width());
    let stamp_bytes = (ny * nx * 8) as u64;
    let mut t = Traffic::default();
    for items in core.chunks(WARP) {
        for r in 0..ny {
            for i in 0..nx {
                let mut st = Vec::new();
                let mut win = Vec::new();
                let mut wgt = Vec::new();
                for &(s, k) in items {
                    let c = p.view().corner(s, k);
                    let lo = c.yc.max(p.shape.row_min);
                    let hi = (c.yc + ny as i32).min(p.shape.row_max);
                    let row = lo + r as i32;
                    if row >= hi {
                        continue;
                    }
                    let idx = (s * p.fiber_stride + k) as u64;
                    st.push(
                        STAMPS + idx * stamp_bytes + ((row - c.yc) as usize * nx + i) as u64 * 8,
                    );
                    let wi =
                        (row - p.shape.row_min) as usize * w + (c.xc - case.col_min) as usize + i;
                    win.push(WINDOW + wi as u64 * 8);
                    wgt.push(WEIGHT + (row as usize * p.ncol + c.xc as usize + i) as u64 * 8);
                }
                t.access(st);
                t.access(wgt);
                t.access(win);
            }
        }
        // The two outputs.
        t.access(items.iter().enumerate().map(|(i, _)| WINDOW + i as u64 * 8));
        t.access(items.iter().enumerate().map(|(i, _)| WINDOW + i as u64 * 8));
    }
    t
}

/// `pixel_core_warp`: a warp per core unknown, lanes over its kept stamp pixels.
fn model_pixel_core_warp(case: &Case, core: &[(usize, usize)]) -> Traffic {
    let p = &case.patch;
    let (nx, ny, w) = (p.nx, p.ny, case.width());
    let stamp_bytes = (ny * nx * 8) as u64;
    let mut t = Traffic::default();
    for &(s, k) in core {
        let c = p.view().corner(s, k);
        let lo = c.yc.max(p.shape.row_min);
        let hi = (c.yc + ny as i32).min(p.shape.row_max);
        let (e_lo, e_hi) = ((lo - c.yc) as usize * nx, (hi - c.yc).max(0) as usize * nx);
        let idx = (s * p.fiber_stride + k) as u64;
        for e0 in (e_lo..e_hi).step_by(WARP) {
            let es: Vec<usize> = (e0..(e0 + WARP).min(e_hi)).collect();
            t.access(
                es.iter()
                    .map(|&e| STAMPS + idx * stamp_bytes + e as u64 * 8),
            );
            let rc = |e: usize| (c.yc as usize + e / nx, e % nx);
            t.access(es.iter().map(|&e| {
                let (row, col) = rc(e);
                WEIGHT + (row * p.ncol + c.xc as usize + col) as u64 * 8
            }));
            t.access(es.iter().map(|&e| {
                let (row, col) = rc(e);
                WINDOW
                    + ((row - p.shape.row_min as usize) * w + (c.xc - case.col_min) as usize + col)
                        as u64
                        * 8
            }));
        }
        // Lane 0 writes the two outputs.
        t.access([WINDOW]);
        t.access([WINDOW]);
    }
    t
}

#[test]
fn warp_mappings_touch_fewer_sectors() {
    // One DESI-like patch (7 padded spectra, 74 bins, 11 × 17 stamps, a ~60-column window):
    // the warp mappings must at least halve the sectors of both stages. Printed figures are
    // quoted in the kernels' documentation (cargo test -- --nocapture).
    let case = Case::new(Geometry::desi(7, 74), 1);
    let core = case.core(12);
    let rows = (model_pixel_rows_thread(&case), model_pixel_rows_warp(&case));
    let cores = (
        model_pixel_core_thread(&case, &core),
        model_pixel_core_warp(&case, &core),
    );
    for (name, (old, new)) in [("pixel_rows", rows), ("pixel_core", cores)] {
        println!(
            "{name}: thread mapping {} requests, {} sectors ({:.1}/request); warp mapping {} \
             requests, {} sectors ({:.1}/request); sectors x{:.2}",
            old.requests,
            old.sectors,
            old.per_request(),
            new.requests,
            new.sectors,
            new.per_request(),
            new.sectors as f64 / old.sectors as f64
        );
        assert!(2 * new.sectors < old.sectors, "{name}: {old:?} -> {new:?}");
    }
}
