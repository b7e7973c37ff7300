//! `assemble_unknown_lane` (the numerics of the warp-cooperative `assemble_warp` kernel) against
//! `assemble_unknown` (one thread per unknown), on DESI-like patches: 11 × 17 stamps of fibers
//! ~7.5 px apart moving 1.4 px per bin, kept rows cutting the first and last stamps, masked
//! pixels, nspecpad 6 and 7, several kd.
//!
//! The warp is emulated on the host: for each unknown q1, each of the 32 lanes runs
//! `assemble_unknown_lane` with an all-reduce that recomputes every lane's partial
//! (`LaneStamp`) and adds them in the butterfly order of the GPU's shuffles. The emulation also
//! checks that every lane asks for the same sequence of sums (the shuffles need all 32 lanes)
//! and that the partial a lane passes is the one the emulation computes for it.
//!
//! `assemble_unknown_lane_rs` (the `assemble_warp_rs` kernel: the band column by a
//! reduce-scatter of lane exchanges) runs on a lock-step emulation of the warp, 32 host
//! threads exchanging values through a board and a barrier, and must give the butterfly
//! version's bits.

mod common;

use common::patch::{build_patch, Geometry, Patch};
use desi_device::patch::assemble_warp::{
    assemble_unknown_lane, assemble_unknown_lane_rs, assemble_unknown_lane_slots, LaneStamp,
    WarpExchange, WarpTerm, DESI_SLOTS, MAX_PER_LANE, RS_ENTRIES, WARP_LANES,
};
use desi_device::patch::{assemble_unknown, patch_bandwidth};
use desi_device::team::Shared;
use desi_device::Status;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

/// Relative tolerance on band, rhs and fluxweight: both sides add the same non-negative
/// products (positive stamps, weights and image) in different orders (and the warp with fused
/// multiply-adds), a few ulp per term; 1e-13 leaves a factor ~100 of margin over 187 terms.
const RTOL: f64 = 1e-13;

/// Outputs of one assembly: band `(n, kd + 1)`, rhs, fluxweight (NaN where not written) and the
/// status of each q1.
struct Assembly {
    band: Vec<f64>,
    rhs: Vec<f64>,
    fluxweight: Vec<f64>,
    status: Vec<Status>,
}

impl Assembly {
    fn new(n: usize, band_len: usize) -> Self {
        Assembly {
            band: vec![f64::NAN; band_len],
            rhs: vec![f64::NAN; n],
            fluxweight: vec![f64::NAN; n],
            status: vec![Status::Ok; n],
        }
    }
}

/// `assemble_unknown` for every q1 (one thread each).
fn reference(patch: &Patch, kd: usize, band_len: usize) -> Assembly {
    let (view, ccd, n) = (patch.view(), patch.ccd(), patch.n());
    let mut out = Assembly::new(n, band_len);
    for q1 in 0..n {
        out.status[q1] = assemble_unknown(
            &view,
            &ccd,
            &patch.shape,
            kd,
            q1,
            Shared::new(&mut out.band),
            Shared::new(&mut out.rhs),
            Shared::new(&mut out.fluxweight),
        );
    }
    out
}

/// The GPU's butterfly all-reduce (lane masks 16, 8, 4, 2, 1): returns every lane's result.
fn butterfly(parts: &[f64]) -> Vec<f64> {
    let mut v = parts.to_vec();
    let mut mask = WARP_LANES / 2;
    while mask > 0 {
        v = (0..WARP_LANES).map(|l| v[l] + v[l ^ mask]).collect();
        mask /= 2;
    }
    v
}

/// One warp per q1, emulated lane by lane (see the module documentation), with the kernel's
/// default cache of `MAX_PER_LANE` slots per lane.
fn warp_emulation(patch: &Patch, kd: usize, band_len: usize) -> Assembly {
    warp_emulation_slots::<MAX_PER_LANE>(patch, kd, band_len)
}

/// [`warp_emulation`] with `SLOTS` stamp pixels cached per lane (`assemble_unknown_lane` for
/// `MAX_PER_LANE`, `assemble_unknown_lane_slots` otherwise).
fn warp_emulation_slots<const SLOTS: usize>(patch: &Patch, kd: usize, band_len: usize) -> Assembly {
    let (view, ccd, shape, n) = (patch.view(), patch.ccd(), patch.shape, patch.n());
    let ns = shape.nspecpad;
    let mut out = Assembly::new(n, band_len);
    for q1 in 0..n {
        let (s1, k1) = (q1 % ns, q1 / ns);
        let mut terms_of_lane0: Vec<WarpTerm> = Vec::new();
        let mut status_of_lane0 = Status::Ok;
        for lane in 0..WARP_LANES {
            let mut caches: Option<Vec<LaneStamp<SLOTS>>> = None;
            let mut terms = Vec::new();
            let all_reduce = |term, partial: f64| {
                terms.push(term);
                let caches = caches.get_or_insert_with(|| {
                    (0..WARP_LANES)
                        .map(|l| {
                            LaneStamp::<SLOTS>::new(&view, &ccd, &shape, s1, k1, l, WARP_LANES)
                        })
                        .collect()
                });
                let parts: Vec<f64> = caches
                    .iter()
                    .map(|cache| match term {
                        WarpTerm::Rhs => cache.rhs,
                        WarpTerm::Fluxweight => cache.fluxweight,
                        WarpTerm::Entry(q2) => cache
                            .entry_partial(&view, &shape, q2 % ns, q2 / ns)
                            .unwrap_or_else(|| {
                                panic!("q1 {q1}: reduction of the rejected entry q2 {q2}")
                            }),
                    })
                    .collect();
                assert_eq!(
                    parts[lane].to_bits(),
                    partial.to_bits(),
                    "q1 {q1} lane {lane} {term:?}: partial {partial:e} but the emulation \
                         computes {:e}",
                    parts[lane]
                );
                let sums = butterfly(&parts);
                assert!(
                    sums.iter().all(|s| s.to_bits() == sums[0].to_bits()),
                    "q1 {q1} {term:?}: the butterfly gives different lanes different sums"
                );
                sums[lane]
            };
            let (band, rhs, fluxweight) = (
                Shared::new(&mut out.band),
                Shared::new(&mut out.rhs),
                Shared::new(&mut out.fluxweight),
            );
            let status = if SLOTS == MAX_PER_LANE {
                assemble_unknown_lane(
                    &view, &ccd, &shape, kd, q1, lane, WARP_LANES, band, rhs, fluxweight,
                    all_reduce,
                )
            } else {
                assemble_unknown_lane_slots::<SLOTS, _>(
                    &view, &ccd, &shape, kd, q1, lane, WARP_LANES, band, rhs, fluxweight,
                    all_reduce,
                )
            };
            if lane == 0 {
                terms_of_lane0 = terms;
                status_of_lane0 = status;
            } else {
                assert_eq!(
                    terms, terms_of_lane0,
                    "q1 {q1}: lane {lane} asks for other warp sums than lane 0 (divergent shuffles)"
                );
                assert_eq!(
                    status, status_of_lane0,
                    "q1 {q1}: lane {lane} returns another status than lane 0"
                );
            }
        }
        out.status[q1] = status_of_lane0;
    }
    out
}

/// NaN-aware comparison: both NaN (never written), both exactly 0 when `expected` is 0 (a
/// rejected or fully masked entry), else within [`RTOL`] relative.
fn compare(what: &str, actual: &[f64], expected: &[f64]) -> Result<(), String> {
    if actual.len() != expected.len() {
        return Err(format!(
            "{what}: length {} != {}",
            actual.len(),
            expected.len()
        ));
    }
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let ok = if e.is_nan() {
            a.is_nan()
        } else if e == 0.0 {
            a == 0.0
        } else {
            (a - e).abs() <= RTOL * e.abs()
        };
        if !ok {
            return Err(format!(
                "{what}[{i}]: actual {a:e}, expected {e:e} (rtol {RTOL:e})"
            ));
        }
    }
    Ok(())
}

/// Compares every output and status; returns the number of non-zero band entries.
fn check(label: &str, patch: &Patch, kd: usize, band_len: usize) -> usize {
    let expected = reference(patch, kd, band_len);
    let actual = warp_emulation(patch, kd, band_len);
    assert_eq!(actual.status, expected.status, "{label}: statuses");
    for (what, a, e) in [
        ("band", &actual.band, &expected.band),
        ("rhs", &actual.rhs, &expected.rhs),
        ("fluxweight", &actual.fluxweight, &expected.fluxweight),
    ] {
        if let Err(err) = compare(what, a, e) {
            panic!("{label} (kd {kd}): {err}");
        }
    }
    expected
        .band
        .iter()
        .filter(|v| **v != 0.0 && !v.is_nan())
        .count()
}

#[test]
fn warp_matches_assemble_unknown_on_desi_like_patches() {
    for (seed, geometry) in [
        (1, Geometry::desi(7, 74)),
        (2, Geometry::desi(6, 74)),
        (
            3,
            Geometry {
                cut: 0,
                ..Geometry::desi(7, 30)
            },
        ),
        (
            4,
            Geometry {
                cut: 8,
                spacing: 6.8,
                rate: 1.1,
                ..Geometry::desi(6, 40)
            },
        ),
    ] {
        let patch = build_patch(geometry, seed);
        let n = patch.n();
        let bandwidth = patch_bandwidth(&patch.view(), &patch.shape);
        assert!(
            bandwidth > WARP_LANES,
            "{geometry:?}: kd {bandwidth} does not span two chunks of lanes"
        );
        for kd in [bandwidth, bandwidth + 9] {
            let label = format!("{geometry:?} seed {seed}");
            let nonzero = check(&label, &patch, kd, n * (kd + 1));
            assert!(nonzero > n * 10, "{label}: only {nonzero} non-zero entries");
        }
    }
}

#[test]
fn chunk_boundaries_of_the_band_column() {
    // nspecpad 3: kd ~ 24, so kd + 1 can sit on both sides of 32 and 64 (lanes per chunk).
    let geometry = Geometry::desi(3, 50);
    let patch = build_patch(geometry, 5);
    let n = patch.n();
    let bandwidth = patch_bandwidth(&patch.view(), &patch.shape);
    assert!(bandwidth <= 30, "kd {bandwidth} too large for this test");
    for kd in [bandwidth, 30, 31, 32, 33, 62, 63, 64, 65] {
        check(&format!("{geometry:?}"), &patch, kd, n * (kd + 1));
    }
}

#[test]
fn fully_masked_stamp_gives_exact_zeros() {
    let geometry = Geometry::desi(6, 20);
    let mut patch = build_patch(geometry, 6);
    // Mask every pixel of the stamp of (s = 2, k = 9).
    let corner = patch.corners[2 * patch.fiber_stride + 9];
    for r in 0..patch.ny {
        for c in 0..patch.nx {
            let pix = (corner.yc as usize + r) * patch.ncol + corner.xc as usize + c;
            patch.weight[pix] = 0.0;
        }
    }
    let n = patch.n();
    let kd = patch_bandwidth(&patch.view(), &patch.shape);
    check(&format!("{geometry:?}"), &patch, kd, n * (kd + 1));
    let actual = warp_emulation(&patch, kd, n * (kd + 1));
    let q1 = 9 * geometry.nspecpad + 2;
    assert_eq!(actual.fluxweight[q1], 0.0);
    assert_eq!(actual.rhs[q1], 0.0);
    for q2 in q1..(q1 + kd + 1).min(n) {
        assert_eq!(actual.band[q2 * (kd + 1) + (q1 + kd - q2)], 0.0, "q2 {q2}");
    }
}

#[test]
fn bad_shapes_give_the_same_status() {
    let geometry = Geometry::desi(7, 24);
    let base = build_patch(geometry, 7);
    let n = base.n();
    let bandwidth = patch_bandwidth(&base.view(), &base.shape);

    // kd too small: the columns with a pair beyond the band fail (after writing, as the
    // thread kernel does).
    let kd = bandwidth - 1;
    let expected = reference(&base, kd, n * (kd + 1));
    assert!(expected.status.contains(&Status::BadShape));
    check("kd - 1", &base, kd, n * (kd + 1));

    // The last unknown's stamp moved 6 rows up: the widest overlapping pair ends at q2 = n - 1,
    // the last entry the beyond-the-band test can see.
    let mut patch = build_patch(geometry, 7);
    let last = (geometry.nspecpad - 1) * patch.fiber_stride + geometry.nwavetot - 1;
    patch.corners[last].yc -= 6;
    let widest = patch_bandwidth(&patch.view(), &patch.shape);
    assert!(widest > bandwidth);
    let kd = widest - 1;
    let expected = reference(&patch, kd, n * (kd + 1));
    assert_eq!(expected.status[n - 1 - widest], Status::BadShape);
    check("last unknown beyond the band", &patch, kd, n * (kd + 1));

    // Stamps of fiber 0 leaving the CCD on the left for bins 5..9.
    let mut patch = build_patch(geometry, 7);
    for k in 5..9 {
        patch.corners[k].xc = -2;
    }
    let kd = patch_bandwidth(&patch.view(), &patch.shape);
    let expected = reference(&patch, kd, n * (kd + 1));
    assert!(expected.status.contains(&Status::BadShape));
    check("stamp left of the CCD", &patch, kd, n * (kd + 1));

    // ... and on the right (last fiber, last bins).
    let mut patch = build_patch(geometry, 7);
    let last = (geometry.nspecpad - 1) * patch.fiber_stride + geometry.nwavetot - 1;
    patch.corners[last].xc = (patch.ncol - patch.nx + 1) as i32;
    let expected = reference(&patch, kd, n * (kd + 1));
    assert!(expected.status.contains(&Status::BadShape));
    check("stamp right of the CCD", &patch, kd, n * (kd + 1));

    // Kept rows beyond the CCD.
    for (row_min, row_max) in [(-1, base.shape.row_max), (0, base.nrow as i32 + 1)] {
        let mut patch = build_patch(geometry, 7);
        patch.shape.row_min = row_min;
        patch.shape.row_max = row_max;
        let expected = reference(&patch, bandwidth, n * (bandwidth + 1));
        assert!(expected.status.iter().all(|s| *s == Status::BadShape));
        check("rows off the CCD", &patch, bandwidth, n * (bandwidth + 1));
    }

    // A band buffer one entry short.
    let expected = reference(&base, bandwidth, n * (bandwidth + 1) - 1);
    assert!(expected.status.iter().all(|s| *s == Status::BadShape));
    check("short band", &base, bandwidth, n * (bandwidth + 1) - 1);
}

#[test]
fn desi_slots_give_the_same_bits_as_the_full_cache() {
    // The kernel's 6-slot cache for DESI's 11 x 17 stamps: bitwise the 8-slot result (the
    // extra slots hold nothing), and TooLarge beyond 32 x 6 = 192 pixels.
    for (seed, geometry) in [(21, Geometry::desi(7, 40)), (22, Geometry::desi(6, 30))] {
        assert!(geometry.ny * geometry.nx <= WARP_LANES * DESI_SLOTS);
        let patch = build_patch(geometry, seed);
        let n = patch.n();
        let kd = patch_bandwidth(&patch.view(), &patch.shape);
        let full = warp_emulation(&patch, kd, n * (kd + 1));
        let desi = warp_emulation_slots::<DESI_SLOTS>(&patch, kd, n * (kd + 1));
        assert!(full.status.iter().all(|s| *s == Status::Ok));
        assert_eq!(desi.status, full.status);
        for (what, a, b) in [
            ("band", &desi.band, &full.band),
            ("rhs", &desi.rhs, &full.rhs),
            ("fluxweight", &desi.fluxweight, &full.fluxweight),
        ] {
            let same = a
                .iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "seed {seed}: {what} differs between 6 and 8 slots");
        }
        check(&format!("seed {seed}, 8 slots"), &patch, kd, n * (kd + 1));
    }
    let geometry = Geometry {
        ny: 12,
        nx: 17,
        ..Geometry::desi(6, 12)
    };
    let patch = build_patch(geometry, 23);
    let n = patch.n();
    let kd = patch_bandwidth(&patch.view(), &patch.shape);
    let desi = warp_emulation_slots::<DESI_SLOTS>(&patch, kd, n * (kd + 1));
    assert!(desi.status.iter().all(|s| *s == Status::TooLarge));
}

#[test]
fn stamps_beyond_the_lane_cache_are_refused() {
    for (ny, nx, fits) in [
        (16, 16, true),
        (17, 16, false),
        (11, 17, true),
        (13, 21, false),
    ] {
        assert_eq!(fits, ny * nx <= WARP_LANES * MAX_PER_LANE);
        let geometry = Geometry {
            ny,
            nx,
            ..Geometry::desi(6, 12)
        };
        let patch = build_patch(geometry, 8);
        let n = patch.n();
        let kd = patch_bandwidth(&patch.view(), &patch.shape);
        if fits {
            check(&format!("{geometry:?}"), &patch, kd, n * (kd + 1));
        } else {
            let actual = warp_emulation(&patch, kd, n * (kd + 1));
            assert!(
                actual.status.iter().all(|s| *s == Status::TooLarge),
                "{ny} x {nx} stamps: {:?}",
                actual.status
            );
            assert!(actual.band.iter().all(|v| v.is_nan()), "nothing is written");
        }
    }
}

#[test]
fn the_comparison_catches_small_errors() {
    let expected = [0.0, 1.5, f64::NAN, -2.0];
    assert!(compare("x", &expected, &expected).is_ok());
    // One entry 2e-13 relative off, a rejected entry that is not exactly 0, a NaN written.
    let mut off = expected;
    off[1] *= 1.0 + 2e-13;
    assert!(compare("x", &off, &expected).is_err());
    let mut not_zero = expected;
    not_zero[0] = 1e-300;
    assert!(compare("x", &not_zero, &expected).is_err());
    let mut written = expected;
    written[2] = 0.0;
    assert!(compare("x", &written, &expected).is_err());
    let mut nan = expected;
    nan[3] = f64::NAN;
    assert!(compare("x", &nan, &expected).is_err());
}

#[test]
fn the_warp_result_differs_from_a_perturbed_reference() {
    // The full check must fail when one stamp value changes (the emulation reads the stamps).
    let geometry = Geometry::desi(6, 16);
    let patch = build_patch(geometry, 9);
    let n = patch.n();
    let kd = patch_bandwidth(&patch.view(), &patch.shape);
    let expected = reference(&patch, kd, n * (kd + 1));
    let mut perturbed = build_patch(geometry, 9);
    let center = (3 * perturbed.fiber_stride + 8) * perturbed.ny * perturbed.nx + 5 * 17 + 8;
    perturbed.stamps[center] *= 1.0 + 1e-9;
    let actual = warp_emulation(&perturbed, kd, n * (kd + 1));
    assert!(compare("band", &actual.band, &expected.band).is_err());
    assert!(compare("rhs", &actual.rhs, &expected.rhs).is_err());
}

/// One lane of a warp emulated by 32 host threads in lock step: an exchange posts the value
/// on the board, waits for every lane, reads the partner's and waits again (so the board is
/// not overwritten before everyone has read). Records the masks it was called with.
struct ThreadLane<'a> {
    lane: usize,
    board: &'a [AtomicU64],
    barrier: &'a Barrier,
    masks: Vec<u32>,
}

impl WarpExchange for ThreadLane<'_> {
    fn exchange(&mut self, value: f64, mask: u32) -> f64 {
        assert!(mask.is_power_of_two() && (mask as usize) < WARP_LANES);
        self.masks.push(mask);
        self.board[self.lane].store(value.to_bits(), Ordering::SeqCst);
        self.barrier.wait();
        let theirs = self.board[self.lane ^ mask as usize].load(Ordering::SeqCst);
        self.barrier.wait();
        f64::from_bits(theirs)
    }
}

/// A [`Shared`] view handed to the emulation's threads (they write disjoint entries, the
/// contract of `assemble_unknown_lane_rs`).
#[derive(Clone, Copy)]
struct SendShared(Shared);
// SAFETY: the lanes write disjoint entries and the scope joins them before the buffers are
// read.
unsafe impl Send for SendShared {}

/// `assemble_unknown_lane_rs` with `SLOTS` slots for every q1, the 32 lanes on 32 threads in
/// lock step. Checks that every lane makes the same exchanges and returns the same status.
fn warp_rs_emulation<const SLOTS: usize>(patch: &Patch, kd: usize, band_len: usize) -> Assembly {
    let (view, ccd, shape, n) = (patch.view(), patch.ccd(), patch.shape, patch.n());
    let mut out = Assembly::new(n, band_len);
    let board: Vec<AtomicU64> = (0..WARP_LANES).map(|_| AtomicU64::new(0)).collect();
    let barrier = Barrier::new(WARP_LANES);
    let views = (
        SendShared(Shared::new(&mut out.band)),
        SendShared(Shared::new(&mut out.rhs)),
        SendShared(Shared::new(&mut out.fluxweight)),
    );
    let lanes: Vec<(Vec<Status>, Vec<u32>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WARP_LANES)
            .map(|lane| {
                let (board, barrier) = (&board, &barrier);
                scope.spawn(move || {
                    let (band, rhs, fluxweight) = views;
                    let mut warp = ThreadLane {
                        lane,
                        board,
                        barrier,
                        masks: Vec::new(),
                    };
                    let status: Vec<Status> = (0..n)
                        .map(|q1| {
                            assemble_unknown_lane_rs::<SLOTS, _>(
                                &view,
                                &ccd,
                                &shape,
                                kd,
                                q1,
                                lane,
                                band.0,
                                rhs.0,
                                fluxweight.0,
                                &mut warp,
                            )
                        })
                        .collect();
                    (status, warp.masks)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an emulated lane panicked"))
            .collect()
    });
    for (lane, (status, masks)) in lanes.iter().enumerate() {
        assert_eq!(status, &lanes[0].0, "lane {lane} returns other statuses");
        assert_eq!(masks, &lanes[0].1, "lane {lane} makes other exchanges");
    }
    out.status = lanes[0].0.clone();
    out
}

/// Bitwise equality of two assemblies (NaN where neither wrote).
fn assert_same_bits(label: &str, a: &Assembly, b: &Assembly) {
    assert_eq!(a.status, b.status, "{label}: statuses");
    for (what, x, y) in [
        ("band", &a.band, &b.band),
        ("rhs", &a.rhs, &b.rhs),
        ("fluxweight", &a.fluxweight, &b.fluxweight),
    ] {
        assert_eq!(x.len(), y.len());
        for (i, (u, v)) in x.iter().zip(y.iter()).enumerate() {
            assert_eq!(
                u.to_bits(),
                v.to_bits(),
                "{label}: {what}[{i}] {u:e} (reduce-scatter) against {v:e} (butterfly)"
            );
        }
    }
}

#[test]
fn reduce_scatter_gives_the_butterfly_bits() {
    // DESI-like patches with both caches, kd across the 16-entry groups and the 32-lane
    // chunks of the butterfly version.
    for (seed, geometry) in [(31, Geometry::desi(7, 24)), (32, Geometry::desi(6, 20))] {
        let patch = build_patch(geometry, seed);
        let n = patch.n();
        let bandwidth = patch_bandwidth(&patch.view(), &patch.shape);
        assert!(bandwidth > 2 * RS_ENTRIES, "kd {bandwidth}: one group only");
        for kd in [bandwidth, bandwidth + 7] {
            let label = format!("{geometry:?} seed {seed} kd {kd}");
            let len = n * (kd + 1);
            let rs = warp_rs_emulation::<DESI_SLOTS>(&patch, kd, len);
            assert!(rs.status.iter().all(|s| *s == Status::Ok), "{label}");
            assert_same_bits(
                &label,
                &rs,
                &warp_emulation_slots::<DESI_SLOTS>(&patch, kd, len),
            );
            assert_same_bits(
                &label,
                &warp_rs_emulation::<MAX_PER_LANE>(&patch, kd, len),
                &rs,
            );
            // And against the one-thread assembly (independent order of the sums).
            let expected = reference(&patch, kd, len);
            for (what, a, e) in [
                ("band", &rs.band, &expected.band),
                ("rhs", &rs.rhs, &expected.rhs),
                ("fluxweight", &rs.fluxweight, &expected.fluxweight),
            ] {
                if let Err(err) = compare(what, a, e) {
                    panic!("{label}: {err}");
                }
            }
        }
    }
    // nspecpad 3 (kd ~ 24): group and chunk boundaries on both sides of kd + 1.
    let patch = build_patch(Geometry::desi(3, 30), 33);
    let n = patch.n();
    let bandwidth = patch_bandwidth(&patch.view(), &patch.shape);
    for kd in [bandwidth, 30, 31, 32, 33, 47, 48] {
        let kd = kd.max(bandwidth);
        let len = n * (kd + 1);
        let label = format!("nspecpad 3, kd {kd}");
        assert_same_bits(
            &label,
            &warp_rs_emulation::<DESI_SLOTS>(&patch, kd, len),
            &warp_emulation_slots::<DESI_SLOTS>(&patch, kd, len),
        );
    }
}

#[test]
fn reduce_scatter_gives_the_butterfly_statuses_on_bad_shapes() {
    let geometry = Geometry::desi(7, 12);
    let base = build_patch(geometry, 34);
    let n = base.n();
    let bandwidth = patch_bandwidth(&base.view(), &base.shape);
    // kd too small (a pair beyond the band: BadShape after the writes), a band buffer one
    // entry short, a stamp beyond the CCD's right edge.
    let mut right = build_patch(geometry, 34);
    let last = (geometry.nspecpad - 1) * right.fiber_stride + geometry.nwavetot - 1;
    right.corners[last].xc = (right.ncol - right.nx + 1) as i32;
    for (label, patch, kd, len) in [
        ("kd - 1", &base, bandwidth - 1, n * bandwidth),
        ("short band", &base, bandwidth, n * (bandwidth + 1) - 1),
        (
            "stamp right of the CCD",
            &right,
            bandwidth,
            n * (bandwidth + 1),
        ),
    ] {
        let rs = warp_rs_emulation::<DESI_SLOTS>(patch, kd, len);
        assert!(rs.status.contains(&Status::BadShape), "{label}");
        assert_same_bits(
            label,
            &rs,
            &warp_emulation_slots::<DESI_SLOTS>(patch, kd, len),
        );
    }
    // A stamp of 12 x 17 = 204 pixels does not fit 6 slots of 32 lanes.
    let big = build_patch(
        Geometry {
            ny: 12,
            nx: 17,
            ..Geometry::desi(6, 8)
        },
        35,
    );
    let kd = patch_bandwidth(&big.view(), &big.shape);
    let rs = warp_rs_emulation::<DESI_SLOTS>(&big, kd, big.n() * (kd + 1));
    assert!(rs.status.iter().all(|s| *s == Status::TooLarge));
}

#[test]
fn the_bitwise_check_sees_one_ulp() {
    // The reduce-scatter is checked bitwise: one ulp in one band entry must fail the check.
    let patch = build_patch(Geometry::desi(6, 20), 36);
    let n = patch.n();
    let kd = patch_bandwidth(&patch.view(), &patch.shape);
    let butterfly_bits = warp_emulation_slots::<DESI_SLOTS>(&patch, kd, n * (kd + 1));
    let mut perturbed = warp_rs_emulation::<DESI_SLOTS>(&patch, kd, n * (kd + 1));
    assert_same_bits("unperturbed", &perturbed, &butterfly_bits);
    let i = perturbed
        .band
        .iter()
        .position(|v| *v > 0.0)
        .expect("a positive entry");
    perturbed.band[i] = f64::from_bits(perturbed.band[i].to_bits() + 1);
    let caught =
        std::panic::catch_unwind(|| assert_same_bits("one ulp", &perturbed, &butterfly_bits));
    assert!(caught.is_err(), "a one-ulp change went unnoticed");
}
