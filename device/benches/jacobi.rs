//! Criterion bench of `inverse_sqrt` (cyclic Jacobi + C^(-1/2)) on realistic 74×74
//! covariance blocks `C_bb = M_b⁻¹` (production shape: one per fiber per patch, 32,900 per
//! frame). Prints the sweep/rotation counts of the benchmarked blocks.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use desi_device::linalg::jacobi::{
    inverse_sqrt, inverse_sqrt_with_stats, inverse_sqrt_work_len, jacobi_eigh, JacobiStats,
};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NWAVE: usize = 74;
const NBLOCK: usize = 8;

/// erf to ~1e-16 for |x| < 6 (series / continued fraction); bench-only.
fn erf(x: f64) -> f64 {
    if x < 0.0 {
        return -erf(-x);
    }
    if x < 3.0 {
        let (mut term, mut sum, mut k) = (x, x, 0.0);
        while term.abs() > 1e-18 * sum.abs() {
            k += 1.0;
            term *= -x * x / k;
            sum += term / (2.0 * k + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut f = x;
        for k in (1..60).rev() {
            f = x + (k as f64 / 2.0) / f;
        }
        1.0 - (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
    }
}

/// C = M⁻¹, M = AᵀWA banded (|i-j| <= 8): pixel-integrated Gaussian PSF (σ 0.9-1.3 px) at
/// 1.5 px per bin with random ivar (same generator as tests/jacobi.rs).
fn covariance_block(nwave: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let (dy, pad) = (1.5, 10usize);
    let npix = (nwave as f64 * dy) as usize + 2 * pad;
    let sigma: f64 = rng.random_range(0.9..1.3);
    let ivar: Vec<f64> = (0..npix).map(|_| rng.random_range(0.5..1.5)).collect();
    let profile = |y: usize, k: usize| {
        let c = pad as f64 + dy * k as f64;
        let lo = (y as f64 - 0.5 - c) / (sigma * 2f64.sqrt());
        let hi = (y as f64 + 0.5 - c) / (sigma * 2f64.sqrt());
        0.5 * (erf(hi) - erf(lo))
    };
    let mut m = DMatrix::<f64>::zeros(nwave, nwave);
    for i in 0..nwave {
        for j in i.saturating_sub(8)..(i + 9).min(nwave) {
            m[(i, j)] = (0..npix)
                .map(|y| profile(y, i) * ivar[y] * profile(y, j))
                .sum();
        }
        m[(i, i)] += 1e-6;
    }
    let m = (&m + m.transpose()) * 0.5;
    let c = m.try_inverse().expect("M is positive definite");
    let mut out = vec![0.0; nwave * nwave];
    for i in 0..nwave {
        for j in 0..nwave {
            out[i * nwave + j] = 0.5 * (c[(i, j)] + c[(j, i)]);
        }
    }
    out
}

fn bench_jacobi(c: &mut Criterion) {
    let n = NWAVE;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let blocks: Vec<Vec<f64>> = (0..NBLOCK).map(|_| covariance_block(n, &mut rng)).collect();
    let mut out = vec![0.0; n * n];
    let mut work = vec![0.0; inverse_sqrt_work_len(n)];
    let mut counts = Vec::new();
    for a in &blocks {
        let mut stats = JacobiStats::default();
        let status = inverse_sqrt_with_stats(a, n, &mut out, &mut work, &mut stats);
        assert!(status.is_ok(), "inverse_sqrt failed: {status:?}");
        counts.push((stats.sweeps, stats.rotations));
    }
    println!("74x74 covariance blocks (sweeps, rotations): {counts:?}");

    let mut group = c.benchmark_group("jacobi_74");
    group.throughput(Throughput::Elements(NBLOCK as u64));
    group.bench_function("inverse_sqrt x8 blocks", |b| {
        b.iter(|| {
            for a in &blocks {
                let status = inverse_sqrt(black_box(a), n, &mut out, &mut work);
                black_box(status);
            }
            black_box(&out);
        })
    });
    let mut scratch = vec![0.0; n * n];
    let mut vecs = vec![0.0; n * n];
    let mut vals = vec![0.0; n];
    group.bench_function("jacobi_eigh x8 blocks", |b| {
        b.iter(|| {
            for a in &blocks {
                scratch.copy_from_slice(a);
                let status = jacobi_eigh(black_box(&mut scratch), n, &mut vecs, &mut vals, 30);
                black_box(status);
            }
            black_box(&vecs);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_jacobi);
criterion_main!(benches);
