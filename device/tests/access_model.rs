//! CPU model of the GPU memory traffic of the banded team kernels (`factor_solve_team`:
//! factor + forward + back substitution; `covariance_team`: one covariance block), on the
//! production patch shape (nspec 7 × nwave 74, kd 58) at the production lane counts
//! (64 and 128): the team routines run under `trace::TraceTeam`, every `Shared` access is
//! logged, and `trace::model` counts shared-memory wavefronts (32 banks × 4 bytes) and
//! global 32-byte sectors per warp access.
//!
//! Run (prints the tables): `cargo test -p desi-extract-device --release --features
//! access-trace --test access_model -- --nocapture`.
//!
//! The assertions hold the layouts to their design: the covariance kernel's shared-memory
//! accesses are free of bank conflicts (wavefronts within 5% of the dense minimum), those of
//! the factorization within 20% (ring wrap-around, below), and the covariance kernel's global
//! accesses stay below 1.4 times the whole-sector minimum (it was 2.9).

mod common;

use common::{patch_matrix, to_band};
use desi_device::linalg::banded::band_factor;
use desi_device::linalg::banded_team::{
    band_back_solve_team, band_factor_forward_team, band_factor_team_window_len,
    covariance_block_team, covariance_block_team_lds, covariance_block_team_ring_len,
};
use desi_device::team::Shared;
use desi_device::trace::{
    global_sectors, model, shared_wavefronts, trace, Model, Region, TraceTeam, Traffic,
};
use desi_device::Status;

const NSPEC: usize = 7;
const NWAVE: usize = 74;
const N: usize = NSPEC * NWAVE;
const KD: usize = 8 * NSPEC + 2;

/// Prints one model as a table.
fn print_model(what: &str, m: &Model) {
    println!(
        "{what}: {} phases; per phase, summed: {} accesses on the busiest lane, {} warp accesses on the busiest warp",
        m.phases, m.critical_accesses, m.critical_warp_accesses
    );
    println!(
        "  {:<8} {:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>7}",
        "region", "space", "loads", "stores", "load u", "store u", "ideal u", "factor"
    );
    for (name, shared, t) in &m.regions {
        println!(
            "  {:<8} {:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>7.2}",
            name,
            if *shared { "shared" } else { "global" },
            t.loads,
            t.stores,
            t.load_units,
            t.store_units,
            t.ideal_units,
            t.units() as f64 / t.ideal_units.max(1) as f64
        );
    }
    let mut sites = m.sites.clone();
    sites.sort_by_key(|s| std::cmp::Reverse(s.4.units()));
    println!("  top sites (units, ideal, warp accesses):");
    for (file, line, col, region, t) in sites.iter().take(8) {
        let file = file.rsplit('/').next().unwrap_or(file);
        println!(
            "    {file}:{line}:{col} {region}: {} ({}), {}",
            t.units(),
            t.ideal_units,
            t.instructions()
        );
    }
    let (s, g) = (m.total(true), m.total(false));
    println!(
        "  shared: {} warp accesses, {} wavefronts (ideal {}); global: {} warp accesses, {} sectors (ideal {})",
        s.instructions(),
        s.units(),
        s.ideal_units,
        g.instructions(),
        g.units(),
        g.ideal_units
    );
}

/// The production factor `L` of a realistic patch (band storage).
fn production_factor() -> Vec<f64> {
    let (m, _) = patch_matrix(NSPEC, NWAVE, 11);
    let mut l = to_band(&m, N, KD);
    assert_eq!(band_factor(&mut l, N, KD), Status::Ok);
    l
}

/// Traces `factor_solve_team`'s routines on one patch (shared memory: window, then x, as the
/// kernel lays them out).
fn model_factor_solve(lanes: usize) -> Model {
    let (m, _) = patch_matrix(NSPEC, NWAVE, 11);
    let mut ab = to_band(&m, N, KD);
    let wlen = band_factor_team_window_len(KD);
    let mut smem = vec![0.0; wlen + N];
    for (q, x) in smem[wlen..].iter_mut().enumerate() {
        *x = (q as f64 * 0.37).sin();
    }
    let regions = [
        Region::part("window", &smem, 0..wlen),
        Region::part("x", &smem, wlen..wlen + N),
        Region::of("ab", &ab, false),
    ];
    let team = TraceTeam { lanes };
    let (status, log) = {
        let (window, x) = smem.split_at_mut(wlen);
        let (ab, window, x) = (Shared::new(&mut ab), Shared::new(window), Shared::new(x));
        trace(|| {
            let mut s = band_factor_forward_team(&team, ab, N, KD, window, x);
            if s == Status::Ok {
                s = band_back_solve_team(&team, ab, N, KD, window, x);
            }
            s
        })
    };
    assert_eq!(status, Status::Ok);
    let m = model(&log, &regions);
    assert_eq!(m.unmatched, 0, "accesses outside the regions");
    m
}

/// Traces `covariance_block_team` for `block` (shared memory: the ring and the staged `L`).
fn model_covariance(lanes: usize, block: usize) -> Model {
    model_covariance_variant(lanes, block, false)
}

/// [`model_covariance`] of `covariance_block_team` or (`lds`) `covariance_block_team_lds`.
fn model_covariance_variant(lanes: usize, block: usize, lds: bool) -> Model {
    let mut l = production_factor();
    let len = covariance_block_team_ring_len(N, KD, NSPEC);
    let mut ring = vec![0.0; len];
    let mut out = vec![0.0; NWAVE * NWAVE];
    let split = (KD + 8) * NWAVE;
    let regions = [
        Region::part("ring", &ring, 0..split),
        Region::part("stage", &ring, split..len),
        Region::of("ab", &l, false),
        Region::of("out", &out, false),
    ];
    let team = TraceTeam { lanes };
    let (status, log) = {
        let (l, out, ring) = (
            Shared::new(&mut l),
            Shared::new(&mut out),
            Shared::new(&mut ring),
        );
        trace(|| {
            if lds {
                // SAFETY: host memory (the shared-memory requirement is the GPU's).
                unsafe { covariance_block_team_lds(&team, l, N, KD, NSPEC, block, out, ring) }
            } else {
                covariance_block_team(&team, l, N, KD, NSPEC, block, out, ring)
            }
        })
    };
    assert_eq!(status, Status::Ok);
    let m = model(&log, &regions);
    assert_eq!(m.unmatched, 0, "accesses outside the regions");
    m
}

#[test]
fn wavefront_and_sector_counts() {
    // Consecutive f64 across a warp: 256 bytes, 2 wavefronts; one address: a broadcast.
    let consecutive: Vec<usize> = (0..32).map(|l| 8 * l).collect();
    assert_eq!(shared_wavefronts(&consecutive), 2);
    assert_eq!(shared_wavefronts(&[64; 32]), 1);
    // A column of a row-major array of stride 16 f64 (128 bytes): every lane in bank 0/1.
    let column: Vec<usize> = (0..32).map(|l| 128 * l).collect();
    assert_eq!(shared_wavefronts(&column), 32);
    // Odd stride 59 f64: distinct even banks for 16 lanes, two words per bank: 2.
    let odd: Vec<usize> = (0..32).map(|l| 8 * 59 * l).collect();
    assert_eq!(shared_wavefronts(&odd), 2);
    // Stride 74 f64 (148 words, 20 mod 32): 8 distinct bank pairs for 32 lanes: 4.
    let even: Vec<usize> = (0..32).map(|l| 8 * 74 * l).collect();
    assert_eq!(shared_wavefronts(&even), 4);
    assert_eq!(global_sectors(&consecutive), 8);
    assert_eq!(global_sectors(&column), 32);
}

#[test]
fn factor_solve_team_traffic() {
    let m = model_factor_solve(64);
    print_model("factor_solve_team, one patch (n 518, kd 58), 64 lanes", &m);
    // The rows of a column are read at the odd stride 59 (2 wavefronts per warp, the
    // minimum) except where a warp's rows wrap around the ring of 67 rows (67 · 59 is not a
    // multiple of 16 f64): about 16% more than the minimum, which a ring of 80 rows would
    // avoid at the price of a 6th of the SM's blocks.
    // The busiest lane of a factorization phase computes one entry of the column (a dot
    // product: 2 reads per term, up to kd terms) and a few more accesses, the pivot's sum of
    // squares having been accumulated a phase ahead in the dot product's pass over that row
    // (before: the pivot's lane also summed the kd squares, 126,245 accesses on the busiest
    // lanes in all); a back-substitution phase is a few accesses per lane. The same bound per
    // warp (lanes of a warp on different branches issue one after the other).
    let bound = (N * (2 * KD + 24) + N * 16) as u64;
    assert!(
        m.critical_accesses <= bound && m.critical_warp_accesses <= bound,
        "critical path: {} accesses on the busiest lanes, {} on the busiest warps",
        m.critical_accesses,
        m.critical_warp_accesses
    );
    let s = m.total(true);
    assert!(
        s.units() as f64 <= 1.2 * s.ideal_units as f64,
        "shared-memory bank conflicts: {} wavefronts for a dense minimum of {}",
        s.units(),
        s.ideal_units
    );
}

#[test]
fn covariance_team_traffic() {
    // A patch: its 5 core fibers (blocks 1..=5 of nspecpad 7).
    let (mut shared, mut global) = (Traffic::default(), Traffic::default());
    for block in [1, 2, 4, 5] {
        let m = model_covariance(128, block);
        shared.add(&m.total(true));
        global.add(&m.total(false));
    }
    let m = model_covariance(128, 3);
    print_model(
        "covariance_team, one block (n 518, kd 58, nblock 7, block 3), 128 lanes",
        &m,
    );
    shared.add(&m.total(true));
    global.add(&m.total(false));
    println!(
        "covariance_team, one patch (blocks 1..=5): shared {} warp accesses, {} wavefronts (ideal {}); global {} warp accesses, {} sectors (ideal {})",
        shared.instructions(),
        shared.units(),
        shared.ideal_units,
        global.instructions(),
        global.units(),
        global.ideal_units
    );
    let s = m.total(true);
    assert!(
        s.units() as f64 <= 1.05 * s.ideal_units as f64,
        "shared-memory bank conflicts: {} wavefronts for a dense minimum of {}",
        s.units(),
        s.ideal_units
    );
    let g = m.total(false);
    assert!(
        g.units() as f64 <= 1.4 * g.ideal_units as f64,
        "scattered global accesses: {} sectors for a minimum of {}",
        g.units(),
        g.ideal_units
    );
}

/// `covariance_block_team_lds` (the GPU's `covariance_team_lds`) makes the accesses of
/// `covariance_block_team` in other instructions: in shared memory the same warp accesses and
/// wavefronts per region; in global memory the same values read and written (lane accesses)
/// in the same number of warp accesses, their 32-byte sectors within 5% (the host vectors of
/// two runs need not share their alignment to 32 bytes, and the LDS variant loads the next
/// group of `L` in another order).
#[test]
fn covariance_team_lds_traffic_equals_covariance_team() {
    for block in [0, 3, 6] {
        let (a, b) = (
            model_covariance_variant(128, block, false),
            model_covariance_variant(128, block, true),
        );
        for ((name, shared, ta), (_, _, tb)) in a.regions.iter().zip(&b.regions) {
            let what = format!("block {block} {name}: team {ta:?}, lds {tb:?}");
            assert_eq!(tb.lane_accesses, ta.lane_accesses, "{what}");
            assert_eq!(tb.instructions(), ta.instructions(), "{what}");
            assert_eq!(tb.ideal_units, ta.ideal_units, "{what}");
            if *shared {
                assert_eq!(tb.units(), ta.units(), "{what}");
            } else {
                assert!(tb.units() as f64 <= 1.05 * ta.units() as f64, "{what}");
            }
        }
    }
}
