//! Tests of the CPU backend's eigensolver and inverse square root
//! (device/src/linalg/tridiagonal.rs) against the float64 references: the two-sided Jacobi
//! eigendecomposition (`reference::jacobi_eigh`, high relative accuracy), the GPU's one-sided
//! Jacobi `inverse_sqrt`, residuals and orthogonality. Sizes straddle the vector width and the
//! production block size (74). Run with `-- --nocapture` for the measured differences.

mod common;

use common::{covariance_block, max_abs, random_spd};
use desi_device::linalg::jacobi::{inverse_sqrt, inverse_sqrt_work_len};
use desi_device::linalg::tridiagonal::{
    inverse_sqrt_eigh, inverse_sqrt_eigh_batch, inverse_sqrt_eigh_batch_work_len,
    inverse_sqrt_eigh_with_condition, inverse_sqrt_eigh_work_len, symmetric_eigen,
    symmetric_eigen_work_len, QL_BATCH,
};
use desi_device::reference::jacobi_eigh::jacobi_eigh;
use desi_device::Status;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 10] = [1, 2, 3, 31, 32, 33, 73, 74, 75, 100];
const EPS: f64 = f64::EPSILON;

fn random_symmetric(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = rng.random_range(-1.0..1.0);
            a[i * n + j] = v;
            a[j * n + i] = v;
        }
    }
    a
}

/// `C^(-1/2)` with the per-matrix clip from the two-sided Jacobi reference, and the condition
/// number after the clip.
fn reference_inverse_sqrt(a: &[f64], n: usize) -> (Vec<f64>, f64) {
    let mut work = a.to_vec();
    let mut v = vec![0.0; n * n];
    let mut lambda = vec![0.0; n];
    assert_eq!(
        jacobi_eigh(&mut work, n, &mut v, &mut lambda, 60),
        Status::Ok
    );
    let max = lambda.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    let floor = 1e-14 * max;
    let min = lambda
        .iter()
        .fold(f64::INFINITY, |m, &x| m.min(x))
        .max(floor);
    // jacobi_eigh's eigenvectors are the columns of v.
    let mut q = vec![0.0; n * n];
    for k in 0..n {
        let d = 1.0 / lambda[k].max(floor).sqrt();
        for i in 0..n {
            for j in 0..n {
                q[i * n + j] += v[i * n + k] * d * v[j * n + k];
            }
        }
    }
    (q, max / min)
}

fn inverse_sqrt_of(a: &[f64], n: usize) -> (Status, Vec<f64>) {
    let mut out = vec![f64::NAN; n * n];
    let mut work = vec![f64::NAN; inverse_sqrt_eigh_work_len(n)];
    let status = inverse_sqrt_eigh(a, n, &mut out, &mut work);
    (status, out)
}

/// Largest |x − y| over max|y|.
fn rel_diff(x: &[f64], y: &[f64]) -> f64 {
    let d = x
        .iter()
        .zip(y)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    d / max_abs(y).max(f64::MIN_POSITIVE)
}

/// Checks the eigendecomposition: residual, orthogonality, and the eigenvalues against the
/// two-sided Jacobi reference.
fn check_eigen(label: &str, a: &[f64], n: usize) {
    let mut work_a = a.to_vec();
    let mut values = vec![f64::NAN; n];
    let mut vectors = vec![f64::NAN; n * n];
    let mut work = vec![f64::NAN; symmetric_eigen_work_len(n)];
    let status = symmetric_eigen(&mut work_a, n, &mut values, &mut vectors, &mut work);
    assert_eq!(status, Status::Ok, "{label} n={n}");
    let norm = max_abs(a) * n as f64;
    let nf = n.max(1) as f64;
    for i in 0..n {
        let u = &vectors[i * n..(i + 1) * n];
        for r in 0..n {
            let au: f64 = (0..n).map(|c| a[r * n + c] * u[c]).sum();
            let res = (au - values[i] * u[r]).abs();
            assert!(
                res <= 8.0 * nf * EPS * norm,
                "{label} n={n}: residual of pair {i} row {r}: {res:e}"
            );
        }
        for j in 0..n {
            let d: f64 = (0..n).map(|c| u[c] * vectors[j * n + c]).sum();
            let expected = if i == j { 1.0 } else { 0.0 };
            assert!(
                (d - expected).abs() <= 8.0 * nf * EPS,
                "{label} n={n}: u_{i}·u_{j} = {d:e}"
            );
        }
    }
    let mut reference = a.to_vec();
    let mut v = vec![0.0; n * n];
    let mut lambda = vec![0.0; n];
    assert_eq!(
        jacobi_eigh(&mut reference, n, &mut v, &mut lambda, 60),
        Status::Ok
    );
    let mut ours = values.clone();
    ours.sort_by(f64::total_cmp);
    lambda.sort_by(f64::total_cmp);
    let scale = max_abs(&lambda);
    for (x, r) in ours.iter().zip(&lambda) {
        assert!(
            (x - r).abs() <= 8.0 * nf * EPS * scale,
            "{label} n={n}: eigenvalue {x:e} vs reference {r:e}"
        );
    }
}

#[test]
fn eigen_random_symmetric_spd_and_covariance() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for n in SIZES {
        check_eigen("symmetric", &random_symmetric(n, &mut rng), n);
        check_eigen("spd", &random_spd(n, &mut rng), n);
        check_eigen("covariance", &covariance_block(n, &mut rng), n);
    }
}

/// Covariance-like blocks and random SPD matrices: `C^(-1/2)` within 1e-12 of `max|Q|` of the
/// float64 reference, and of the one-sided Jacobi the GPU uses; exactly symmetric;
/// `Q·C·Q = I`.
#[test]
fn inverse_sqrt_agrees_with_the_references() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let mut worst = (0.0f64, 0.0f64);
    for n in SIZES {
        for (label, a) in [
            ("spd", random_spd(n, &mut rng)),
            ("covariance", covariance_block(n, &mut rng)),
            ("covariance", covariance_block(n, &mut rng)),
        ] {
            let (status, q) = inverse_sqrt_of(&a, n);
            assert_eq!(status, Status::Ok, "{label} n={n}");
            for i in 0..n {
                for j in 0..i {
                    assert_eq!(q[i * n + j].to_bits(), q[j * n + i].to_bits(), "symmetry");
                }
            }
            let (reference, cond) = reference_inverse_sqrt(&a, n);
            let d_ref = rel_diff(&q, &reference);
            let mut jac = vec![0.0; n * n];
            let mut work = vec![0.0; inverse_sqrt_work_len(n)];
            assert_eq!(inverse_sqrt(&a, n, &mut jac, &mut work), Status::Ok);
            let d_jac = rel_diff(&q, &jac);
            println!("{label:>10} n={n:>3}: cond {cond:.1e}, vs reference {d_ref:.1e}, vs one-sided Jacobi {d_jac:.1e}");
            assert!(
                d_ref <= 1e-12,
                "{label} n={n}: {d_ref:e} from the reference"
            );
            assert!(
                d_jac <= 1e-12,
                "{label} n={n}: {d_jac:e} from one-sided Jacobi"
            );
            worst = (worst.0.max(d_ref), worst.1.max(d_jac));
            // Q·C·Q = I to n·ε·κ.
            let tol = 8.0 * n as f64 * EPS * cond;
            for i in 0..n {
                for j in 0..n {
                    let qc: f64 = (0..n)
                        .map(|k| {
                            q[i * n + k] * (0..n).map(|l| a[k * n + l] * q[l * n + j]).sum::<f64>()
                        })
                        .sum();
                    let expected = if i == j { 1.0 } else { 0.0 };
                    assert!(
                        (qc - expected).abs() <= tol,
                        "{label} n={n}: QCQ[{i}][{j}] = {qc:e}"
                    );
                }
            }
        }
    }
    println!(
        "worst: vs reference {:.1e}, vs one-sided Jacobi {:.1e}",
        worst.0, worst.1
    );
}

/// Eigenvalues below the clip (`1e-14·max`): the basis-free rule gives the reference's `Q`
/// (floor^(-1/2) on the clipped subspace); the clip is per matrix (scale invariant).
#[test]
fn clipped_blocks_follow_the_clip_rule() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for n in [2, 33, 74] {
        // Known spectrum: random orthogonal U (QR of a random matrix by Gram-Schmidt twice),
        // eigenvalues from 1 down to 1e-12 then 1e-16..1e-20 (clipped) for a quarter of them.
        let mut u = random_symmetric(n, &mut rng);
        for i in 0..n {
            for _ in 0..2 {
                for j in 0..i {
                    let d: f64 = (0..n).map(|c| u[i * n + c] * u[j * n + c]).sum();
                    for c in 0..n {
                        u[i * n + c] -= d * u[j * n + c];
                    }
                }
            }
            let norm = (0..n).map(|c| u[i * n + c].powi(2)).sum::<f64>().sqrt();
            for c in 0..n {
                u[i * n + c] /= norm;
            }
        }
        let nclip = (n / 4).max(1);
        let lambda: Vec<f64> = (0..n)
            .map(|i| {
                if i < n - nclip {
                    10f64.powf(-12.0 * i as f64 / (n - nclip).max(2) as f64)
                } else {
                    10f64.powf(-16.0 - 4.0 * (i - (n - nclip)) as f64 / nclip as f64)
                }
            })
            .collect();
        let build = |f: &dyn Fn(f64) -> f64| {
            let mut m = vec![0.0; n * n];
            for k in 0..n {
                let d = f(lambda[k]);
                for i in 0..n {
                    for j in 0..n {
                        m[i * n + j] += u[k * n + i] * d * u[k * n + j];
                    }
                }
            }
            for i in 0..n {
                for j in 0..i {
                    m[j * n + i] = m[i * n + j];
                }
            }
            m
        };
        let a = build(&|x| x);
        let lmax = lambda.iter().fold(0.0f64, |m, &x| m.max(x));
        let floor = 1e-14 * lmax;
        let expected = build(&|x| 1.0 / x.max(floor).sqrt());
        let (status, q) = inverse_sqrt_of(&a, n);
        assert_eq!(status, Status::Ok, "n={n}");
        // κ after the clip is 1e14: entries accurate to ~n·ε·κ relative to max|Q| only on
        // the directions near the floor; 1e-3 still catches a missing or wrong clip (which
        // changes entries by orders of magnitude); measured 2e-5.
        let d = rel_diff(&q, &expected);
        println!("clipped n={n}: {d:.1e} from the exact clipped Q");
        assert!(d <= 1e-3, "n={n}: {d:e}");
        // Scaling by 2^-66 (exact in binary) scales every step exactly: Q scales by 2^33, bit
        // for bit, clip included (a batch-wide clip would not).
        let scaled: Vec<f64> = a.iter().map(|x| x * 2f64.powi(-66)).collect();
        let (status, q_scaled) = inverse_sqrt_of(&scaled, n);
        assert_eq!(status, Status::Ok);
        let back: Vec<f64> = q_scaled.iter().map(|x| x * 2f64.powi(-33)).collect();
        assert_eq!(back, q, "n={n}: per-matrix clip");
    }
}

#[test]
fn bad_inputs_are_reported() {
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    for n in [2, 33, 74] {
        // Rayleigh quotients -10 and 10: eigenvalues of both signs far beyond rounding.
        let mut a = random_symmetric(n, &mut rng);
        a[0] = -10.0;
        a[n + 1] = 10.0;
        let (status, _) = inverse_sqrt_of(&a, n);
        assert_eq!(status, Status::NotPositiveDefinite, "n={n}: indefinite");
        let (status, _) = inverse_sqrt_of(&vec![0.0; n * n], n);
        assert_eq!(status, Status::NotPositiveDefinite, "n={n}: zero");
        let mut a = random_spd(n, &mut rng);
        a[n + 1] = f64::NAN;
        let (status, _) = inverse_sqrt_of(&a, n);
        assert_eq!(status, Status::NonFinite, "n={n}: NaN");
        a[n + 1] = f64::INFINITY;
        let (status, _) = inverse_sqrt_of(&a, n);
        assert_eq!(status, Status::NonFinite, "n={n}: infinity");
    }
    let n = 5;
    let a = vec![1.0; n * n];
    let mut out = vec![0.0; n * n];
    let mut work = vec![0.0; inverse_sqrt_eigh_work_len(n)];
    assert_eq!(
        inverse_sqrt_eigh(&a[1..], n, &mut out, &mut work),
        Status::BadShape
    );
    assert_eq!(
        inverse_sqrt_eigh(&a, n, &mut out[1..], &mut work),
        Status::BadShape
    );
    assert_eq!(
        inverse_sqrt_eigh(&a, n, &mut out, &mut work[1..]),
        Status::BadShape
    );
    // The scratch of the reduction (padded matrix, rows of 8 for n = 5; n + 4 padded rows of
    // vectors) and what the block keeps (padded eigenvectors, diagonal and off-diagonal), each
    // with 3 to align it on whole vectors.
    assert_eq!(
        inverse_sqrt_eigh_work_len(n),
        (n * 8 + n + 4 * 8 + 3) + (n * 8 + 2 * n + 3)
    );
    assert_eq!(inverse_sqrt_eigh(&[], 0, &mut [], &mut []), Status::Ok);
    // A diagonal matrix: exact.
    let d = [4.0, 9.0, 0.25];
    let mut a = vec![0.0; 9];
    for i in 0..3 {
        a[i * 4] = d[i];
    }
    let (status, q) = inverse_sqrt_of(&a, 3);
    assert_eq!(status, Status::Ok);
    assert_eq!(q, vec![0.5, 0.0, 0.0, 0.0, 1.0 / 3.0, 0.0, 0.0, 0.0, 2.0]);
}

/// Matrices scaled by 2^∓600 (squares of their entries, as in reflector norms and the QL
/// rotations, leave the double range): the result is the unscaled one scaled by 2^±300 to the
/// bit (the matrix is normalized by a power of two first), and so are the eigenpairs.
#[test]
fn extreme_scales_are_normalized() {
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    for n in [5, 74] {
        let a = covariance_block(n, &mut rng);
        let (status, q) = inverse_sqrt_of(&a, n);
        assert_eq!(status, Status::Ok);
        for exponent in [-600, 600] {
            let scaled: Vec<f64> = a.iter().map(|x| x * 2f64.powi(exponent)).collect();
            let (status, q_scaled) = inverse_sqrt_of(&scaled, n);
            assert_eq!(status, Status::Ok, "n={n} 2^{exponent}");
            let back: Vec<f64> = q_scaled
                .iter()
                .map(|x| x * 2f64.powi(exponent / 2))
                .collect();
            assert_eq!(back, q, "n={n} 2^{exponent}");
            // The eigenvalues scale exactly too (the references' own arithmetic overflows
            // here, so the unscaled matrix's are the reference).
            let eigen = |m: &[f64]| {
                let mut work_a = m.to_vec();
                let mut values = vec![0.0; n];
                let mut vectors = vec![0.0; n * n];
                let mut work = vec![0.0; symmetric_eigen_work_len(n)];
                let status = symmetric_eigen(&mut work_a, n, &mut values, &mut vectors, &mut work);
                assert_eq!(status, Status::Ok, "n={n} 2^{exponent}");
                (values, vectors)
            };
            let (values, vectors) = eigen(&a);
            let (values_scaled, vectors_scaled) = eigen(&scaled);
            let values_back: Vec<f64> = values_scaled
                .iter()
                .map(|x| x * 2f64.powi(-exponent))
                .collect();
            assert_eq!(values_back, values, "n={n} 2^{exponent}");
            assert_eq!(vectors_scaled, vectors, "n={n} 2^{exponent}");
        }
    }
}

/// Blocks of every kind the CPU backend can meet, for the batch test: covariance blocks (QL
/// takes ~5,500 rotations for n = 74), a random SPD matrix, a diagonal one (no rotation at
/// all) and a nearly diagonal one (a few), a nearly singular one, one scaled by 2^-600, and the
/// failures: a NaN (rejected before QL), an indefinite and a zero matrix (rejected after it).
fn batch_test_blocks(n: usize, rng: &mut ChaCha8Rng) -> Vec<(&'static str, Vec<f64>)> {
    let diagonal = |scale: f64, rng: &mut ChaCha8Rng| {
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            a[i * n + i] = rng.random_range(0.5..2.0);
            if i > 0 {
                let v = scale * rng.random_range(-1.0..1.0);
                a[i * n + i - 1] = v;
                a[(i - 1) * n + i] = v;
            }
        }
        a
    };
    // C − (1 − 1e-10)·c₀c₀ᵀ/c₀₀ (c₀ the first column of a covariance block): positive
    // definite but nearly singular along one direction (κ > 1e9).
    let mut ill = covariance_block(n, rng);
    let c00 = ill[0];
    let col: Vec<f64> = (0..n).map(|i| ill[i * n]).collect();
    for i in 0..n {
        for j in 0..n {
            ill[i * n + j] -= (1.0 - 1e-10) * col[i] * col[j] / c00;
        }
    }
    for i in 0..n {
        for j in 0..i {
            ill[j * n + i] = ill[i * n + j];
        }
    }
    let mut nan = covariance_block(n, rng);
    nan[n + 2] = f64::NAN;
    let mut indefinite = random_symmetric(n, rng);
    indefinite[0] = -10.0;
    indefinite[n + 1] = 10.0;
    let tiny: Vec<f64> = covariance_block(n, rng)
        .iter()
        .map(|x| x * 2f64.powi(-600))
        .collect();
    vec![
        ("covariance", covariance_block(n, rng)),
        ("diagonal", diagonal(0.0, rng)),
        ("covariance", covariance_block(n, rng)),
        ("spd", random_spd(n, rng)),
        ("nearly diagonal", diagonal(1e-9, rng)),
        ("ill-conditioned", ill),
        ("NaN", nan),
        ("covariance", covariance_block(n, rng)),
        ("indefinite", indefinite),
        ("2^-600", tiny),
        ("zero", vec![0.0; n * n]),
        ("covariance", covariance_block(n, rng)),
    ]
}

/// `inverse_sqrt_eigh_batch` (the QL iterations of up to `QL_BATCH` blocks interleaved) gives
/// every block bitwise the result, condition number and status of
/// `inverse_sqrt_eigh_with_condition` on it alone, whatever the blocks beside it: batches of
/// 1 to 12 blocks (one to two groups) mixing blocks whose QL takes no rotation, a few, or
/// thousands, blocks that fail before or after the QL, and work slices at each alignment.
#[test]
fn batch_is_bitwise_the_single_block_routine() {
    let mut rng = ChaCha8Rng::seed_from_u64(26);
    for n in [33, 74] {
        let pool = batch_test_blocks(n, &mut rng);
        let nn = n * n;
        let single: Vec<(Status, f64, Vec<f64>)> = pool
            .iter()
            .map(|(_, a)| {
                let mut out = vec![f64::NAN; nn];
                let mut work = vec![f64::NAN; inverse_sqrt_eigh_work_len(n)];
                let mut condition = f64::NAN;
                let status =
                    inverse_sqrt_eigh_with_condition(a, n, &mut out, &mut work, &mut condition);
                (status, condition, out)
            })
            .collect();
        let statuses: Vec<Status> = single.iter().map(|s| s.0).collect();
        for expected in [Status::Ok, Status::NonFinite, Status::NotPositiveDefinite] {
            assert!(statuses.contains(&expected), "n={n}: {statuses:?}");
        }
        assert!(
            single.iter().any(|s| s.0 == Status::Ok && s.1 > 1e9),
            "n={n}: no ill-conditioned block"
        );
        for count in 1..=pool.len() {
            // A rotation of the pool, so that every block meets different neighbours.
            let order: Vec<usize> = (0..count).map(|j| (j + count) % pool.len()).collect();
            let blocks: Vec<f64> = order.iter().flat_map(|&j| pool[j].1.clone()).collect();
            let mut out = vec![f64::NAN; count * nn];
            let mut conditions = vec![f64::NAN; count];
            let mut batch_statuses = vec![Status::BadShape; count];
            let offset = count % 4;
            let mut work = vec![f64::NAN; inverse_sqrt_eigh_batch_work_len(n, count) + offset];
            assert_eq!(
                inverse_sqrt_eigh_batch(
                    &blocks,
                    n,
                    &mut out,
                    &mut conditions,
                    &mut batch_statuses,
                    &mut work[offset..],
                ),
                Status::Ok
            );
            for (slot, &j) in order.iter().enumerate() {
                let (label, _) = pool[j];
                let (status, condition, ref q) = single[j];
                assert_eq!(batch_statuses[slot], status, "n={n} {label} in {count}");
                assert_eq!(
                    conditions[slot].to_bits(),
                    condition.to_bits(),
                    "n={n} {label} in {count}: condition"
                );
                if status == Status::Ok {
                    let batch_q = &out[slot * nn..(slot + 1) * nn];
                    assert!(
                        batch_q
                            .iter()
                            .zip(q)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "n={n} {label} in {count}: C^(-1/2) differs"
                    );
                }
            }
        }
    }
    const { assert!(QL_BATCH < 12, "the batches above span more than one group") };
}

#[test]
fn batch_bad_shapes_are_reported() {
    let n = 5;
    let count = 3;
    let blocks = vec![1.0; count * n * n];
    let mut out = vec![0.0; count * n * n];
    let mut conditions = vec![0.0; count];
    let mut statuses = vec![Status::Ok; count];
    let len = inverse_sqrt_eigh_batch_work_len(n, count);
    // One scratch for all, and a part per block for up to QL_BATCH blocks.
    let len_of = |count| inverse_sqrt_eigh_batch_work_len(n, count);
    let per_block = len_of(2) - len_of(1);
    assert_eq!(len_of(1), inverse_sqrt_eigh_work_len(n));
    assert_eq!(len, len_of(1) + (count - 1) * per_block);
    assert_eq!(len_of(QL_BATCH + 3), len_of(QL_BATCH));
    assert_eq!(len_of(0), 0);
    let mut work = vec![0.0; len];
    let mut run = |blocks: &[f64], out: &mut [f64], conditions: &mut [f64], work: &mut [f64]| {
        inverse_sqrt_eigh_batch(blocks, n, out, conditions, &mut statuses, work)
    };
    assert_eq!(
        run(&blocks[1..], &mut out, &mut conditions, &mut work),
        Status::BadShape
    );
    assert_eq!(
        run(&blocks, &mut out[1..], &mut conditions, &mut work),
        Status::BadShape
    );
    assert_eq!(
        run(&blocks, &mut out, &mut conditions[1..], &mut work),
        Status::BadShape
    );
    assert_eq!(
        run(&blocks, &mut out, &mut conditions, &mut work[1..]),
        Status::BadShape
    );
    assert_eq!(
        run(&blocks, &mut out, &mut conditions, &mut work),
        Status::Ok
    );
    assert_eq!(
        inverse_sqrt_eigh_batch(&[], 0, &mut [], &mut [], &mut [], &mut []),
        Status::Ok
    );
}
