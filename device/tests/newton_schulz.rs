//! Tests of the Newton–Schulz inverse square root on emulated FP64 tensor cores
//! (device/src/linalg/newton_schulz.rs, `SerialMmaTeam`): `C^(-1/2)` against the float64
//! two-sided Jacobi reference on matrices of known condition number and on covariance-like
//! blocks, iteration counts against κ, the fallback status beyond the design range, the
//! resolution step against the serial `apply_resolution` + `resolution_diagonals`, the packed
//! storage, and the emulated `mma` against a plain product. (tests/newton_schulz_blocks.rs
//! runs it on the real covariance blocks of the bundled PSF.)

mod common;

use common::{covariance_block, max_abs};
use desi_device::linalg::newton_schulz::{
    full_index, inverse_sqrt_ns, resolution_ns, MmaTeam, NsStats, SerialMmaTeam, NS_FULL_LEN,
    NS_MAX_ITERATIONS, NS_ORDER_MAX, NS_SHARED_LEN, NS_WARPS,
};
use desi_device::linalg::newton_schulz_blocked::{
    inverse_sqrt_ns2, resolution_ns2, NS2_MAX_ITERATIONS, NS2_OPTIMISTIC_FLOOR,
};
use desi_device::patch::{apply_resolution, resolution_diagonals};
use desi_device::reference::jacobi_eigh::jacobi_eigh;
use desi_device::team::Shared;
use desi_device::Status;
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Reference `C^(-1/2)` and `(λ_min, λ_max)` from the two-sided Jacobi eigenpairs.
fn reference_inverse_sqrt(c: &[f64], n: usize) -> (Vec<f64>, f64, f64) {
    let mut a = c.to_vec();
    let mut v = vec![0.0; n * n];
    let mut l = vec![0.0; n];
    assert_eq!(jacobi_eigh(&mut a, n, &mut v, &mut l, 100), Status::Ok);
    let mut q = vec![0.0; n * n];
    for e in 0..n {
        let f = 1.0 / l[e].sqrt();
        for i in 0..n {
            let vi = v[i * n + e] * f;
            for j in 0..n {
                q[i * n + j] += vi * v[j * n + e];
            }
        }
    }
    (q, l[0], l[n - 1])
}

/// `V diag(λ) Vᵀ` with a random orthogonal V and eigenvalues log-spaced from 1 down to
/// `1/kappa`, times `scale`.
fn with_condition(n: usize, kappa: f64, scale: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let g = DMatrix::<f64>::from_fn(n, n, |_, _| rng.random_range(-1.0..1.0));
    let v = g.qr().q();
    let mut c = vec![0.0; n * n];
    for e in 0..n {
        let t = if n > 1 {
            e as f64 / (n - 1) as f64
        } else {
            0.0
        };
        let lambda = scale * kappa.powf(-t);
        for i in 0..n {
            for j in 0..n {
                c[i * n + j] += lambda * v[(i, e)] * v[(j, e)];
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            c[j * n + i] = c[i * n + j];
        }
    }
    c
}

/// NS `C^(-1/2)` on the emulated team (shared memory pre-filled with NaN).
fn ns(c: &[f64], n: usize, warps: usize) -> (Status, Vec<f64>, NsStats) {
    ns_variant(Variant::Ns, c, n, warps, false)
}

/// The two kernels' iterations: `ns` (newton_schulz) and `ns2` (newton_schulz_blocked).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Ns,
    Ns2,
}

/// `C^(-1/2)` of `variant` on the emulated team (shared memory pre-filled with NaN), warps in
/// reverse order when `reverse`.
fn ns_variant(
    variant: Variant,
    c: &[f64],
    n: usize,
    warps: usize,
    reverse: bool,
) -> (Status, Vec<f64>, NsStats) {
    let team = SerialMmaTeam { warps, reverse };
    let mut q = vec![f64::NAN; n * n];
    let mut smem = vec![f64::NAN; NS_SHARED_LEN];
    let mut stats = NsStats::default();
    let solve = match variant {
        Variant::Ns => inverse_sqrt_ns::<32, SerialMmaTeam>,
        Variant::Ns2 => inverse_sqrt_ns2::<32, SerialMmaTeam>,
    };
    let st = solve(
        &team,
        c,
        n,
        Shared::new(&mut q),
        Shared::new(&mut smem),
        &mut stats,
    );
    (st, q, stats)
}

/// `‖C‖_∞` of a row-major `(n, n)` matrix.
fn inf_norm(c: &[f64], n: usize) -> f64 {
    c.chunks(n)
        .map(|row| row.iter().map(|v| v.abs()).sum::<f64>())
        .fold(0.0, f64::max)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
}

#[test]
fn emulated_mma_is_the_plain_product() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let a: Vec<f64> = (0..32).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b: Vec<f64> = (0..32).map(|_| rng.random_range(-1.0..1.0)).collect();
    let c: Vec<f64> = (0..64).map(|_| rng.random_range(-1.0..1.0)).collect();
    // A (8x4) and B (4x8) row-major, C (8x8) row-major; lane fragments as the PTX ISA says.
    let mut fa = [0.0; 32];
    let mut fb = [0.0; 32];
    let mut fc = [[0.0; 2]; 32];
    for lane in 0..32 {
        fa[lane] = a[(lane / 4) * 4 + lane % 4];
        fb[lane] = b[(lane % 4) * 8 + lane / 4];
        fc[lane] = [
            c[(lane / 4) * 8 + 2 * (lane % 4)],
            c[(lane / 4) * 8 + 2 * (lane % 4) + 1],
        ];
    }
    let d = SerialMmaTeam {
        warps: NS_WARPS,
        reverse: false,
    }
    .mma(fa, fb, fc);
    for (lane, dl) in d.iter().enumerate() {
        for (i, &got) in dl.iter().enumerate() {
            let (r, col) = (lane / 4, 2 * (lane % 4) + i);
            let want: f64 =
                c[r * 8 + col] + (0..4).map(|k| a[r * 4 + k] * b[k * 8 + col]).sum::<f64>();
            // Four products of values in (-1, 1): a few ε whatever the summation order.
            assert!((got - want).abs() <= 20.0 * f64::EPSILON, "lane {lane} {i}");
        }
    }
}

#[test]
fn full_index_is_a_bijection() {
    let mut seen = vec![0u32; NS_FULL_LEN];
    for r in 0..NS_ORDER_MAX {
        for c in 0..NS_ORDER_MAX {
            let i = full_index(r, c);
            assert!(i < NS_FULL_LEN);
            // Tile-major: the 64 elements of a tile are contiguous.
            assert_eq!(i / 64, (r / 8) * 10 + c / 8);
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|&k| k == 1), "every element once");
}

/// Accuracy against the reference for κ from 1 to 1e4 (the brief: 1e-11 of max|Q|), at 74 (DESI),
/// 80 (no padding), 37 and 9 (odd, mostly padding).
#[test]
fn inverse_sqrt_matches_reference_up_to_kappa_1e4() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    println!("n    kappa     scale   iterations  residual   max|dQ|/max|Q|");
    for &n in &[74usize, 80, 37, 9] {
        for &kappa in &[1.0, 10.0, 1e2, 1e3, 3e3, 1e4] {
            let scale = 10f64.powf(rng.random_range(-6.0..6.0));
            let c = with_condition(n, kappa, scale, &mut rng);
            let (q_ref, _, _) = reference_inverse_sqrt(&c, n);
            let (st, q, stats) = ns(&c, n, NS_WARPS);
            assert_eq!(st, Status::Ok, "n {n} kappa {kappa:e}: {stats:?}");
            let rel = max_diff(&q, &q_ref) / max_abs(&q_ref);
            println!(
                "{n:3} {kappa:9.1e} {scale:9.1e} {:6} {:12.2e} {rel:12.2e}",
                stats.iterations, stats.residual
            );
            // The required 1e-11 of max|Q| (measured: at most ~3e-13).
            assert!(rel <= 1e-11, "n {n} kappa {kappa:e}: {rel:e}");
        }
    }
}

/// The phase rule: warps run in reverse order give bitwise the same result (a warp reading,
/// within a phase, what another writes would show here; on the GPU it would be a race).
#[test]
fn warp_order_does_not_matter() {
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let c = covariance_block(74, &mut rng);
    let run = |reverse: bool| {
        let team = SerialMmaTeam {
            warps: NS_WARPS,
            reverse,
        };
        let mut q = vec![f64::NAN; 74 * 74];
        let mut smem = vec![f64::NAN; NS_SHARED_LEN];
        let mut stats = NsStats::default();
        let st = inverse_sqrt_ns(
            &team,
            &c,
            74,
            Shared::new(&mut q),
            Shared::new(&mut smem),
            &mut stats,
        );
        (st, q)
    };
    let (a, b) = (run(false), run(true));
    assert_eq!(a.0, Status::Ok);
    assert_eq!(a.0, b.0);
    assert!(a
        .1
        .iter()
        .zip(&b.1)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// Covariance-like blocks (dense, anticorrelated neighbours: device/tests/common).
#[test]
fn covariance_blocks_74() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..6 {
        let c = covariance_block(74, &mut rng);
        let (q_ref, lmin, lmax) = reference_inverse_sqrt(&c, 74);
        let (st, q, stats) = ns(&c, 74, NS_WARPS);
        assert_eq!(st, Status::Ok);
        let rel = max_diff(&q, &q_ref) / max_abs(&q_ref);
        println!(
            "kappa {:.2e}: {} iterations, error {rel:.2e}",
            lmax / lmin,
            stats.iterations
        );
        assert!(rel <= 1e-11, "{rel:e}");
    }
}

/// Beyond the design range the block is left to the Jacobi: never a wrong result.
#[test]
fn ill_conditioned_and_bad_blocks_are_flagged() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for &kappa in &[1e7, 1e8, 1e10] {
        let c = with_condition(74, kappa, 1.0, &mut rng);
        let (st, _, stats) = ns(&c, 74, NS_WARPS);
        println!(
            "kappa {kappa:e}: {st:?} after {} iterations",
            stats.iterations
        );
        assert_eq!(st, Status::NoConvergence, "kappa {kappa:e}");
        assert_eq!(stats.iterations, NS_MAX_ITERATIONS);
    }
    // Indefinite, NaN, zero: no result.
    let mut c = with_condition(74, 10.0, 1.0, &mut rng);
    for i in 0..74 {
        c[i * 74 + i] -= 0.5;
    }
    assert_eq!(ns(&c, 74, NS_WARPS).0, Status::NoConvergence);
    let mut c = with_condition(74, 10.0, 1.0, &mut rng);
    c[5 * 74 + 7] = f64::NAN;
    assert_eq!(ns(&c, 74, NS_WARPS).0, Status::NoConvergence);
    assert_eq!(ns(&[0.0; 74 * 74], 74, NS_WARPS).0, Status::NoConvergence);
    // Bad shapes.
    assert_eq!(ns(&[1.0; 81 * 81], 81, NS_WARPS).0, Status::BadShape);
    assert_eq!(ns(&[1.0; 4], 2, 4).0, Status::BadShape);
}

/// Iterations against κ and where the fallback starts (printed; `--nocapture`).
#[test]
fn iteration_counts_against_kappa() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut last_ok = 0.0;
    for e in 0..=16 {
        let kappa = 10f64.powf(e as f64 * 0.5);
        let c = with_condition(74, kappa, 1.0, &mut rng);
        let (st, q, stats) = ns(&c, 74, NS_WARPS);
        let err = if st == Status::Ok {
            let (q_ref, _, _) = reference_inverse_sqrt(&c, 74);
            max_diff(&q, &q_ref) / max_abs(&q_ref)
        } else {
            f64::NAN
        };
        println!(
            "kappa {kappa:8.1e}: {st:?} {} iterations, residual {:.1e}, error {err:.1e}",
            stats.iterations, stats.residual
        );
        if st == Status::Ok {
            last_ok = kappa;
            // Accepted blocks beyond 1e4 are still accurate to 1e-10 of max|Q|.
            assert!(err <= 1e-10, "kappa {kappa:e}: {err:e}");
        }
    }
    assert!(last_ok >= 1e4, "the design range covers κ = 1e4");
}

/// The warp sum of the emulation: every lane gets the same bits, the sum to rounding.
#[test]
fn emulated_warp_sum_is_uniform() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let v: [f64; 32] = core::array::from_fn(|_| rng.random_range(0.0..1.0) * 1e-3);
    let mut lanes = [0usize; 32];
    for (i, l) in lanes.iter_mut().enumerate() {
        *l = i;
    }
    let team = SerialMmaTeam {
        warps: NS_WARPS,
        reverse: false,
    };
    let s = team.warp_sum(v, lanes);
    let want: f64 = v.iter().sum();
    assert!(s.iter().all(|x| x.to_bits() == s[0].to_bits()));
    assert!((s[0] - want).abs() <= 32.0 * f64::EPSILON * want);
    // Slots holding lanes in another order: the value of each lane is the same.
    let mut perm = lanes;
    perm.reverse();
    let mut vp = [0.0; 32];
    for (i, &l) in perm.iter().enumerate() {
        vp[i] = v[l];
    }
    let sp = team.warp_sum(vp, perm);
    assert!(sp.iter().all(|x| x.to_bits() == s[0].to_bits()));
}

/// `ns2` against the reference and against `ns` for κ from 1 to 1e4 at orders 74, 80, 37, 9:
/// the same bound as `ns` (1e-11 of max|Q|), and no worse than `ns` beyond rounding
/// (max(2·ns, 4e-13)); at most 8 iterations when `λ_min(C)/‖C‖_∞` is at least the optimistic
/// floor, at most `ns`'s + 2 otherwise.
#[test]
fn ns2_matches_reference_and_ns_up_to_kappa_1e4() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    println!("n    kappa     scale   it ns/ns2   max|dQ|/max|Q| ns / ns2");
    let mut worst: f64 = 0.0;
    for &n in &[74usize, 80, 37, 9] {
        for &kappa in &[1.0, 10.0, 1e2, 1e3, 3e3, 1e4] {
            let scale = 10f64.powf(rng.random_range(-6.0..6.0));
            let c = with_condition(n, kappa, scale, &mut rng);
            let (q_ref, lmin, _) = reference_inverse_sqrt(&c, n);
            let (st1, q1, s1) = ns(&c, n, NS_WARPS);
            let (st2, q2, s2) = ns_variant(Variant::Ns2, &c, n, NS_WARPS, false);
            assert_eq!(st1, Status::Ok);
            assert_eq!(st2, Status::Ok, "n {n} kappa {kappa:e}: {s2:?}");
            let r1 = max_diff(&q1, &q_ref) / max_abs(&q_ref);
            let r2 = max_diff(&q2, &q_ref) / max_abs(&q_ref);
            worst = worst.max(r2);
            println!(
                "{n:3} {kappa:9.1e} {scale:9.1e} {:4}/{:<4} {r1:12.2e} {r2:12.2e}",
                s1.iterations, s2.iterations
            );
            assert!(r2 <= 1e-11, "n {n} kappa {kappa:e}: {r2:e}");
            assert!(
                r2 <= (2.0 * r1).max(4e-13),
                "n {n} kappa {kappa:e}: {r2:e} vs ns {r1:e}"
            );
            if lmin / inf_norm(&c, n) >= NS2_OPTIMISTIC_FLOOR {
                assert!(s2.iterations <= 8, "n {n} kappa {kappa:e}: {s2:?}");
            }
            assert!(s2.iterations <= s1.iterations + 2, "{s1:?} {s2:?}");
        }
    }
    println!("worst ns2 {worst:.2e}");
}

/// The phase rule for `ns2` (warps in reverse order: bitwise the same) on a covariance-like
/// block and on a block with κ = 1e5 (which takes the guaranteed schedule).
#[test]
fn ns2_warp_order_does_not_matter() {
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    for c in [
        covariance_block(74, &mut rng),
        with_condition(74, 1e5, 1.0, &mut rng),
    ] {
        let a = ns_variant(Variant::Ns2, &c, 74, NS_WARPS, false);
        let b = ns_variant(Variant::Ns2, &c, 74, NS_WARPS, true);
        assert_eq!(a.0, Status::Ok);
        assert_eq!(a.0, b.0);
        assert_eq!(a.2, b.2);
        assert!(a
            .1
            .iter()
            .zip(&b.1)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

/// `ns2` on covariance-like blocks: the reference to 1e-11, and 8 iterations at most when
/// `λ_min(C)/‖C‖_∞` is at least the optimistic floor.
#[test]
fn ns2_covariance_blocks_74() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..6 {
        let c = covariance_block(74, &mut rng);
        let (q_ref, lmin, lmax) = reference_inverse_sqrt(&c, 74);
        let (st, q, stats) = ns_variant(Variant::Ns2, &c, 74, NS_WARPS, false);
        assert_eq!(st, Status::Ok);
        let rel = max_diff(&q, &q_ref) / max_abs(&q_ref);
        println!(
            "kappa {:.2e}: {} iterations, error {rel:.2e}",
            lmax / lmin,
            stats.iterations
        );
        assert!(rel <= 1e-11, "{rel:e}");
        if lmin / inf_norm(&c, 74) >= NS2_OPTIMISTIC_FLOOR {
            assert!(stats.iterations <= 8, "{stats:?}");
        }
    }
}

/// `ns2` beyond its range: flagged after its cap, never a wrong result; bad blocks and shapes.
#[test]
fn ns2_ill_conditioned_and_bad_blocks_are_flagged() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for &kappa in &[1e7, 1e8, 1e10] {
        let c = with_condition(74, kappa, 1.0, &mut rng);
        let (st, _, stats) = ns_variant(Variant::Ns2, &c, 74, NS_WARPS, false);
        println!(
            "kappa {kappa:e}: {st:?} after {} iterations",
            stats.iterations
        );
        assert_eq!(st, Status::NoConvergence, "kappa {kappa:e}");
        assert_eq!(stats.iterations, NS2_MAX_ITERATIONS);
    }
    let run = |c: &[f64], n: usize, warps: usize| ns_variant(Variant::Ns2, c, n, warps, false).0;
    let mut c = with_condition(74, 10.0, 1.0, &mut rng);
    for i in 0..74 {
        c[i * 74 + i] -= 0.5;
    }
    assert_eq!(run(&c, 74, NS_WARPS), Status::NoConvergence);
    let mut c = with_condition(74, 10.0, 1.0, &mut rng);
    c[5 * 74 + 7] = f64::NAN;
    assert_eq!(run(&c, 74, NS_WARPS), Status::NoConvergence);
    assert_eq!(run(&[0.0; 74 * 74], 74, NS_WARPS), Status::NoConvergence);
    assert_eq!(run(&[1.0; 81 * 81], 81, NS_WARPS), Status::BadShape);
    assert_eq!(run(&[1.0; 4], 2, 4), Status::BadShape);
}

/// `ns2` iterations against κ (printed beside `ns`'s; `--nocapture`): accepted blocks
/// accurate to 1e-10 of max|Q|, κ = 1e4 covered, κ >= 1e7 flagged.
#[test]
fn ns2_iteration_counts_against_kappa() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut last_ok = 0.0;
    for e in 0..=16 {
        let kappa = 10f64.powf(e as f64 * 0.5);
        let c = with_condition(74, kappa, 1.0, &mut rng);
        let (_, _, s1) = ns(&c, 74, NS_WARPS);
        let (st, q, stats) = ns_variant(Variant::Ns2, &c, 74, NS_WARPS, false);
        let err = if st == Status::Ok {
            let (q_ref, _, _) = reference_inverse_sqrt(&c, 74);
            max_diff(&q, &q_ref) / max_abs(&q_ref)
        } else {
            f64::NAN
        };
        println!(
            "kappa {kappa:8.1e}: {st:?} {} iterations (ns {}), residual {:.1e}, error {err:.1e}",
            stats.iterations, s1.iterations, stats.residual
        );
        if st == Status::Ok {
            last_ok = kappa;
            assert!(err <= 1e-10, "kappa {kappa:e}: {err:e}");
        }
        if kappa >= 1e7 {
            assert_eq!(st, Status::NoConvergence);
        }
    }
    assert!(last_ok >= 1e4, "the design range covers κ = 1e4");
}

/// The resolution step of `resolution_ns` and `resolution_ns2` against the serial functions on
/// the reference Q (flux and ivar relative to 1e-11, as the Q accuracy, measured ~1e-13; Rdiags
/// absolute to 1e-12, the selftest's metric; the columns beyond the core bins untouched), and
/// against each other (both from the same block, to the same bounds).
#[test]
fn resolution_matches_serial_functions_and_ns2_matches_ns() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let (n, ndiag, k_min, k_max, nspecpad) = (74usize, 5usize, 12usize, 62usize, 3usize);
    let out_stride = k_max - k_min + 2;
    let ndiagonal = 2 * ndiag + 1;
    for _ in 0..3 {
        let c = covariance_block(n, &mut rng);
        let xflux: Vec<f64> = (0..n * nspecpad)
            .map(|_| rng.random_range(-1.0..5.0))
            .collect();
        let (mut q, _, _) = reference_inverse_sqrt(&c, n);
        let (mut flux_ref, mut ivar_ref) = (vec![0.0; n], vec![0.0; n]);
        assert_eq!(
            apply_resolution(&mut q, n, &xflux, nspecpad, &mut flux_ref, &mut ivar_ref),
            Status::Ok
        );
        let mut rd_ref = vec![0.0; ndiagonal * out_stride];
        assert_eq!(
            resolution_diagonals(&q, n, ndiag, k_min, k_max, &mut rd_ref, out_stride),
            Status::Ok
        );
        let team = SerialMmaTeam {
            warps: NS_WARPS,
            reverse: false,
        };
        let mut outs = Vec::new();
        for variant in [Variant::Ns, Variant::Ns2] {
            let (mut flux, mut ivar) = (vec![f64::NAN; n], vec![f64::NAN; n]);
            let mut rd = vec![0.0; ndiagonal * out_stride];
            let mut smem = vec![f64::NAN; NS_SHARED_LEN];
            let mut stats = NsStats::default();
            let args = (
                Shared::new(&mut flux),
                Shared::new(&mut ivar),
                Shared::new(&mut rd),
                out_stride,
            );
            let st = match variant {
                Variant::Ns => resolution_ns(
                    &team,
                    |e| c[e],
                    n,
                    (&xflux, nspecpad),
                    (ndiag, k_min, k_max),
                    args,
                    Shared::new(&mut smem),
                    &mut stats,
                ),
                Variant::Ns2 => resolution_ns2(
                    &team,
                    |e| c[e],
                    n,
                    (&xflux, nspecpad),
                    (ndiag, k_min, k_max),
                    args,
                    Shared::new(&mut smem),
                    &mut stats,
                ),
            };
            assert_eq!(st, Status::Ok);
            outs.push((flux, ivar, rd));
        }
        let rel = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| ((x - y) / y).abs())
                .fold(0.0, f64::max)
        };
        for (variant, (flux, ivar, rd)) in ["ns", "ns2"].iter().zip(&outs) {
            let ivar_err = rel(ivar, &ivar_ref);
            let flux_err = rel(flux, &flux_ref);
            let rd_err = max_diff(rd, &rd_ref);
            assert!(ivar_err <= 1e-11, "{variant}: ivar {ivar_err:e}");
            assert!(flux_err <= 1e-11, "{variant}: flux {flux_err:e}");
            assert!(rd_err <= 1e-12, "{variant}: rdiags {rd_err:e}");
            for d in 0..ndiagonal {
                for j in k_max - k_min..out_stride {
                    assert_eq!(rd[d * out_stride + j], 0.0, "{variant}");
                }
            }
        }
        let (f1, i1, r1) = &outs[0];
        let (f2, i2, r2) = &outs[1];
        assert!(rel(i2, i1) <= 1e-11, "ivar ns2 vs ns {:e}", rel(i2, i1));
        assert!(rel(f2, f1) <= 1e-11, "flux ns2 vs ns {:e}", rel(f2, f1));
        assert!(max_diff(r2, r1) <= 1e-12, "rdiags {:e}", max_diff(r2, r1));
    }
}
