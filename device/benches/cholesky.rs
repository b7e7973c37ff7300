//! Criterion benches of the Cholesky family on the production patch shape: n = 518 unknowns
//! (nspec = 7 fibers × nwave = 74 bins, wavelength-major), half-bandwidth kd = 8·7 + 2 = 58,
//! 7 covariance blocks of 74×74. One call = one patch; throughput is in patches.
//!
//! Run: `cargo bench -p desi-extract-device --bench cholesky -- --quick`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use desi_device::linalg::banded::{
    band_covariance_blocks, band_covariance_blocks_work_len, band_factor, band_solve,
};
use desi_device::reference::cholesky::{
    cholesky_factor, cholesky_solve, covariance_blocks, covariance_blocks_work_len, invert_lower,
};
use desi_device::Status;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

const NSPEC: usize = 7;
const NWAVE: usize = 74;
const N: usize = NSPEC * NWAVE;
const KD: usize = 8 * NSPEC + 2;

/// A patch-shaped SPD matrix (dense row-major `(N, N)`): |dfiber| <= 2, |dwave| <= 8
/// coupling with random values, made SPD by diagonal dominance.
fn patch_matrix(seed: u64) -> Vec<f64> {
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
    m
}

fn to_band(m: &[f64]) -> Vec<f64> {
    let w = KD + 1;
    let mut ab = vec![0.0; N * w];
    for i in 0..N {
        for j in i.saturating_sub(KD)..=i {
            ab[i * w + (j + KD - i)] = m[i * N + j];
        }
    }
    ab
}

fn bench(c: &mut Criterion) {
    let m = patch_matrix(1);
    let ab = to_band(&m);
    let mut l = m.clone();
    assert_eq!(cholesky_factor(&mut l, N), Status::Ok);
    let mut lb = ab.clone();
    assert_eq!(band_factor(&mut lb, N, KD), Status::Ok);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let rhs: Vec<f64> = (0..N).map(|_| rng.random_range(-1.0..1.0)).collect();
    let bs = N / NSPEC;

    let mut group = c.benchmark_group("cholesky_n518");
    group.throughput(Throughput::Elements(1));

    group.bench_function("dense_factor", |bch| {
        bch.iter_batched_ref(
            || m.clone(),
            |a| assert_eq!(cholesky_factor(black_box(a), N), Status::Ok),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("dense_solve", |bch| {
        let mut x = rhs.clone();
        bch.iter(|| {
            x.copy_from_slice(&rhs);
            cholesky_solve(black_box(&l), N, black_box(&mut x))
        })
    });
    group.bench_function("dense_invert_lower", |bch| {
        let mut linv = vec![0.0; N * N];
        bch.iter(|| invert_lower(black_box(&l), N, black_box(&mut linv)))
    });
    group.bench_function("dense_covariance_blocks", |bch| {
        let mut out = vec![0.0; NSPEC * bs * bs];
        let mut work = vec![0.0; covariance_blocks_work_len(N, NSPEC)];
        bch.iter(|| covariance_blocks(black_box(&l), N, NSPEC, &mut out, &mut work))
    });
    group.bench_function("band_factor", |bch| {
        let mut a = ab.clone();
        bch.iter(|| {
            a.copy_from_slice(&ab);
            assert_eq!(band_factor(black_box(&mut a), N, KD), Status::Ok)
        })
    });
    group.bench_function("band_solve", |bch| {
        let mut x = rhs.clone();
        bch.iter(|| {
            x.copy_from_slice(&rhs);
            band_solve(black_box(&lb), N, KD, black_box(&mut x))
        })
    });
    group.bench_function("band_covariance_blocks", |bch| {
        let mut out = vec![0.0; NSPEC * bs * bs];
        let mut work = vec![0.0; band_covariance_blocks_work_len(N, KD, NSPEC)];
        bch.iter(|| band_covariance_blocks(black_box(&lb), N, KD, NSPEC, &mut out, &mut work))
    });
    group.bench_function("band_total", |bch| {
        // factor + solve + covariance blocks: the per-patch production sequence.
        let mut a = ab.clone();
        let mut x = rhs.clone();
        let mut out = vec![0.0; NSPEC * bs * bs];
        let mut work = vec![0.0; band_covariance_blocks_work_len(N, KD, NSPEC)];
        bch.iter(|| {
            a.copy_from_slice(&ab);
            x.copy_from_slice(&rhs);
            assert_eq!(band_factor(black_box(&mut a), N, KD), Status::Ok);
            assert_eq!(band_solve(&a, N, KD, &mut x), Status::Ok);
            band_covariance_blocks(&a, N, KD, NSPEC, &mut out, &mut work)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
