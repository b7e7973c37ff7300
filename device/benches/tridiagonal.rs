//! Criterion bench of the CPU backend's `inverse_sqrt_eigh` (Householder tridiagonalization +
//! implicit QL + C^(-1/2)) against the one-sided Jacobi `inverse_sqrt` the GPU kernels keep, on
//! realistic 74×74 covariance blocks (production shape: one per core fiber per patch), and the
//! blocks of one production patch (5 core fibers) one at a time against
//! `inverse_sqrt_eigh_batch` (their QL iterations interleaved).
//!
//! `cargo bench -p desi-extract-device --bench tridiagonal` (add `-- --quick` for a short run).

#[path = "../tests/common/mod.rs"]
mod common;

use common::covariance_block;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use desi_device::linalg::jacobi::{inverse_sqrt, inverse_sqrt_work_len};
use desi_device::linalg::tridiagonal::{
    inverse_sqrt_eigh, inverse_sqrt_eigh_batch, inverse_sqrt_eigh_batch_work_len,
    inverse_sqrt_eigh_with_condition, inverse_sqrt_eigh_work_len, symmetric_eigen,
    symmetric_eigen_work_len,
};
use desi_device::Status;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const NWAVE: usize = 74;
const NBLOCK: usize = 8;
/// Core fibers of a production patch (`nspp`): its covariance blocks.
const PATCH_BLOCKS: usize = 5;

fn bench_tridiagonal(c: &mut Criterion) {
    let n = NWAVE;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let blocks: Vec<Vec<f64>> = (0..NBLOCK).map(|_| covariance_block(n, &mut rng)).collect();
    let mut out = vec![0.0; n * n];
    let mut group = c.benchmark_group("inverse_sqrt_74");
    group.throughput(Throughput::Elements(NBLOCK as u64));
    let mut work = vec![0.0; inverse_sqrt_eigh_work_len(n)];
    group.bench_function("tridiagonal_ql x8 blocks", |b| {
        b.iter(|| {
            for a in &blocks {
                black_box(inverse_sqrt_eigh(black_box(a), n, &mut out, &mut work));
            }
            black_box(&out);
        })
    });
    let mut jacobi_work = vec![0.0; inverse_sqrt_work_len(n)];
    group.bench_function("one_sided_jacobi x8 blocks", |b| {
        b.iter(|| {
            for a in &blocks {
                black_box(inverse_sqrt(black_box(a), n, &mut out, &mut jacobi_work));
            }
            black_box(&out);
        })
    });
    let mut scratch = vec![0.0; n * n];
    let mut vectors = vec![0.0; n * n];
    let mut values = vec![0.0; n];
    let mut eig_work = vec![0.0; symmetric_eigen_work_len(n)];
    group.bench_function("symmetric_eigen only x8 blocks", |b| {
        b.iter(|| {
            for a in &blocks {
                scratch.copy_from_slice(a);
                black_box(symmetric_eigen(
                    black_box(&mut scratch),
                    n,
                    &mut values,
                    &mut vectors,
                    &mut eig_work,
                ));
            }
            black_box(&vectors);
        })
    });
    group.finish();
}

/// The 5 core blocks of a patch: one `inverse_sqrt_eigh_with_condition` each (as the CPU
/// backend did) against one `inverse_sqrt_eigh_batch` (the same results, bit for bit).
fn bench_patch_blocks(c: &mut Criterion) {
    let n = NWAVE;
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    let blocks: Vec<f64> = (0..PATCH_BLOCKS)
        .flat_map(|_| covariance_block(n, &mut rng))
        .collect();
    let mut out = vec![0.0; PATCH_BLOCKS * n * n];
    let mut conditions = [0.0; PATCH_BLOCKS];
    let mut statuses = [Status::Ok; PATCH_BLOCKS];
    let mut group = c.benchmark_group("inverse_sqrt_74_patch");
    group.throughput(Throughput::Elements(PATCH_BLOCKS as u64));
    let mut work = vec![0.0; inverse_sqrt_eigh_work_len(n)];
    group.bench_function(format!("one_at_a_time x{PATCH_BLOCKS}"), |b| {
        b.iter(|| {
            for ((a, q), condition) in blocks
                .chunks_exact(n * n)
                .zip(out.chunks_exact_mut(n * n))
                .zip(conditions.iter_mut())
            {
                black_box(inverse_sqrt_eigh_with_condition(
                    black_box(a),
                    n,
                    q,
                    &mut work,
                    condition,
                ));
            }
            black_box(&out);
        })
    });
    let mut batch_work = vec![0.0; inverse_sqrt_eigh_batch_work_len(n, PATCH_BLOCKS)];
    group.bench_function(format!("batch x{PATCH_BLOCKS}"), |b| {
        b.iter(|| {
            black_box(inverse_sqrt_eigh_batch(
                black_box(&blocks),
                n,
                &mut out,
                &mut conditions,
                &mut statuses,
                &mut batch_work,
            ));
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_tridiagonal, bench_patch_blocks);
criterion_main!(benches);
