//! A/B timing of the CPU's blocked band Cholesky and tiled covariance blocks
//! (`linalg::banded_cpu`) against the serial routines of `linalg::banded` on the production
//! patch shape (n = 518 = 7 fibers × 74 bins, kd = 58, the 5 core blocks 1..6). The two
//! variants run alternately, one call each per round, and the medians are printed (robust on
//! a shared, noisy machine).
//!
//! Run: `cargo bench -p desi-extract-device --bench banded_cpu` (optional argument: rounds).

use desi_device::linalg::{banded, banded_cpu};
use desi_device::Status;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::Instant;

const NSPEC: usize = 7;
const NWAVE: usize = 74;
const N: usize = NSPEC * NWAVE;
const KD: usize = 8 * NSPEC + 2;

/// A patch-shaped SPD matrix in band storage: |dfiber| <= 2, |dwave| <= 8 coupling with
/// random values, made SPD by diagonal dominance.
fn patch_band(seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut m = vec![0.0; N * N];
    for p in 0..N {
        let (wp, sp) = (p / NSPEC, p % NSPEC);
        for q in 0..p {
            let (wq, sq) = (q / NSPEC, q % NSPEC);
            if wp.abs_diff(wq) <= 8 && sp.abs_diff(sq) <= 2 {
                let v = rng.random_range(-1.0..1.0) / (1.0 + wp.abs_diff(wq) as f64);
                m[p * N + q] = v;
                m[q * N + p] = v;
            }
        }
    }
    for i in 0..N {
        let off: f64 = (0..N).filter(|&j| j != i).map(|j| m[i * N + j].abs()).sum();
        m[i * N + i] = off * 1.05 + 0.01;
    }
    let w = KD + 1;
    let mut ab = vec![0.0; N * w];
    for i in 0..N {
        for j in i.saturating_sub(KD)..=i {
            ab[i * w + (j + KD - i)] = m[i * N + j];
        }
    }
    ab
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `a` and `b` alternately, `rounds` times each (after a warm-up), and prints the
/// medians in microseconds.
fn ab(name: &str, rounds: usize, mut a: impl FnMut(), mut b: impl FnMut()) {
    for _ in 0..20 {
        a();
        b();
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        a();
        ta.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        b();
        tb.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (ma, mb) = (median(ta), median(tb));
    println!(
        "{name}: serial {ma:.1} us, cpu {mb:.1} us (x{:.2})",
        ma / mb
    );
}

fn main() {
    let rounds: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(400);
    let ab0 = patch_band(1);
    let mut l = ab0.clone();
    assert_eq!(banded::band_factor(&mut l, N, KD), Status::Ok);
    let mut fa = ab0.clone();
    let mut fb = ab0.clone();
    let mut fwork = vec![0.0; banded_cpu::band_factor_work_len(KD)];
    ab(
        "band_factor n518 kd58",
        rounds,
        || {
            fa.copy_from_slice(&ab0);
            assert_eq!(banded::band_factor(black_box(&mut fa), N, KD), Status::Ok);
        },
        || {
            fb.copy_from_slice(&ab0);
            let s = banded_cpu::band_factor(black_box(&mut fb), N, KD, &mut fwork);
            assert_eq!(s, Status::Ok);
        },
    );
    let bs = NWAVE;
    let mut ca = vec![0.0; 5 * bs * bs];
    let mut cb = vec![0.0; 5 * bs * bs];
    let mut wa = vec![0.0; banded::band_covariance_blocks_work_len(N, KD, NSPEC)];
    let mut wb = vec![0.0; banded_cpu::band_covariance_block_range_work_len(N, KD, NSPEC)];
    ab(
        "covariance core blocks 1..6",
        rounds,
        || {
            let s = banded::band_covariance_block_range(&l, N, KD, NSPEC, 1, &mut ca, &mut wa);
            assert_eq!(s, Status::Ok);
        },
        || {
            let s = banded_cpu::band_covariance_block_range(&l, N, KD, NSPEC, 1, &mut cb, &mut wb);
            assert_eq!(s, Status::Ok);
        },
    );
}
