//! Criterion bench of `inverse_sqrt` (cyclic Jacobi + C^(-1/2)) on realistic 74×74
//! covariance blocks `C_bb = M_b⁻¹` (production shape: one per fiber per patch, 32,900 per
//! frame). Prints the sweep/rotation counts of the benchmarked blocks.

#[path = "../tests/common/mod.rs"]
mod common;

use common::covariance_block;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use desi_device::linalg::jacobi::{
    inverse_sqrt, inverse_sqrt_with_stats, inverse_sqrt_work_len, JacobiStats,
};
use desi_device::reference::jacobi_eigh::jacobi_eigh;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const NWAVE: usize = 74;
const NBLOCK: usize = 8;

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
