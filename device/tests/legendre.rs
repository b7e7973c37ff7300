//! Tests of the Legendre series (device/src/psf/legendre.rs, docs/algorithm.md §1.1).

use desi_device::psf::legendre::{
    legendre_basis, legendre_sum, legval, legval_lanes, normalized_wavelength,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Relative tolerance for Legendre evaluations: a few hundred ulp for degree <= 12 recurrences
/// measured against the magnitude of the terms (which bounds the cancellation error).
const REL_TOL: f64 = 1e-12;

/// Closed-form P_0..P_6 (Abramowitz & Stegun 22.3.8 / table 22.9), each with the sum of the
/// absolute values of its terms (the scale of its rounding error).
fn closed_form(k: usize, x: f64) -> (f64, f64) {
    let x2 = x * x;
    let terms: Vec<f64> = match k {
        0 => vec![1.0],
        1 => vec![x],
        2 => vec![1.5 * x2, -0.5],
        3 => vec![2.5 * x2 * x, -1.5 * x],
        4 => vec![35.0 / 8.0 * x2 * x2, -30.0 / 8.0 * x2, 3.0 / 8.0],
        5 => vec![
            63.0 / 8.0 * x2 * x2 * x,
            -70.0 / 8.0 * x2 * x,
            15.0 / 8.0 * x,
        ],
        6 => vec![
            231.0 / 16.0 * x2 * x2 * x2,
            -315.0 / 16.0 * x2 * x2,
            105.0 / 16.0 * x2,
            -5.0 / 16.0,
        ],
        _ => unreachable!("closed forms only up to degree 6"),
    };
    (terms.iter().sum(), terms.iter().map(|t| t.abs()).sum())
}

/// Explicit sum P_n(x) = 2^-n Σ_k (−1)^k C(n,k) C(2n−2k, n) x^(n−2k) (a formula independent of
/// the three-term recurrence), with the sum of absolute terms.
fn explicit_sum(n: usize, x: f64) -> (f64, f64) {
    fn binom(n: usize, k: usize) -> f64 {
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    }
    let mut sum = 0.0;
    let mut scale = 0.0;
    for k in 0..=n / 2 {
        let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
        let t = sign * binom(n, k) * binom(2 * n - 2 * k, n) * x.powi((n - 2 * k) as i32)
            / 2f64.powi(n as i32);
        sum += t;
        scale += t.abs();
    }
    (sum, scale)
}

fn assert_close(what: &str, index: usize, ww: f64, actual: f64, expected: f64, scale: f64) {
    let err = (actual - expected).abs();
    assert!(
        err <= REL_TOL * scale.max(expected.abs()) && actual.is_finite() == expected.is_finite(),
        "{what}[{index}] at ww = {ww}: actual {actual:e}, expected {expected:e}, |diff| {err:e} > \
         {REL_TOL:e}·{scale:e}"
    );
}

/// Arguments inside and outside [−1, 1] (extrapolation is used on padded grids).
fn arguments() -> Vec<f64> {
    let mut ws: Vec<f64> = (0..=120).map(|i| -3.0 + 6.0 * i as f64 / 120.0).collect();
    ws.extend([
        -1.0,
        1.0,
        0.0,
        0.5,
        -0.5,
        1e-8,
        -2.0271453590192645,
        1.0008760402978538,
    ]);
    ws
}

#[test]
fn basis_matches_closed_forms_up_to_degree_6() {
    let mut basis = [0.0; 7];
    for ww in arguments() {
        legendre_basis(ww, &mut basis);
        for (k, &actual) in basis.iter().enumerate() {
            let (expected, scale) = closed_form(k, ww);
            assert_close("P", k, ww, actual, expected, scale);
        }
    }
}

#[test]
fn basis_matches_explicit_sum_up_to_degree_12() {
    let mut basis = [0.0; 13];
    for ww in arguments() {
        legendre_basis(ww, &mut basis);
        for (k, &actual) in basis.iter().enumerate() {
            let (expected, scale) = explicit_sum(k, ww);
            assert_close("P", k, ww, actual, expected, scale);
        }
    }
}

#[test]
fn basis_is_exact_at_plus_minus_one() {
    // P_k(1) = 1 and P_k(−1) = (−1)^k hold exactly in the recurrence's arithmetic.
    let mut basis = [0.0; 15];
    legendre_basis(1.0, &mut basis);
    for (k, &p) in basis.iter().enumerate() {
        assert_eq!(p, 1.0, "P_{k}(1)");
    }
    legendre_basis(-1.0, &mut basis);
    for (k, &p) in basis.iter().enumerate() {
        assert_eq!(p, if k % 2 == 0 { 1.0 } else { -1.0 }, "P_{k}(-1)");
    }
    // Shorter outputs are the leading part of the longer ones.
    let mut short = [0.0; 3];
    legendre_basis(0.3, &mut short);
    legendre_basis(0.3, &mut basis);
    assert_eq!(short, basis[..3]);
    legendre_basis(0.3, &mut []);
}

#[test]
fn legval_and_legendre_sum_match_closed_forms_and_each_other() {
    let mut rng = ChaCha8Rng::seed_from_u64(20260520);
    for trial in 0..200 {
        let ncoeff = 1 + trial % 7; // degrees 0..=6
        let coeffs: Vec<f64> = (0..ncoeff).map(|_| rng.random_range(-5.0..5.0)).collect();
        for ww in arguments() {
            let mut expected = 0.0;
            let mut scale = 0.0;
            for (k, &c) in coeffs.iter().enumerate() {
                let (p, s) = closed_form(k, ww);
                expected += c * p;
                scale += c.abs() * s;
            }
            assert_close("legval", trial, ww, legval(ww, &coeffs), expected, scale);
            assert_close(
                "legendre_sum",
                trial,
                ww,
                legendre_sum(ww, &coeffs),
                expected,
                scale,
            );
        }
    }
}

#[test]
fn legval_degree_12_matches_explicit_sum() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let coeffs: Vec<f64> = (0..13).map(|_| rng.random_range(-1.0..1.0)).collect();
    for ww in arguments() {
        let mut expected = 0.0;
        let mut scale = 0.0;
        for (k, &c) in coeffs.iter().enumerate() {
            let (p, s) = explicit_sum(k, ww);
            expected += c * p;
            scale += c.abs() * s;
        }
        assert_close("legval12", 0, ww, legval(ww, &coeffs), expected, scale);
        assert_close(
            "legendre_sum12",
            0,
            ww,
            legendre_sum(ww, &coeffs),
            expected,
            scale,
        );
    }
}

#[test]
fn short_series() {
    assert_eq!(legval(0.7, &[]), 0.0);
    assert_eq!(legendre_sum(0.7, &[]), 0.0);
    assert_eq!(legval(0.7, &[2.5]), 2.5);
    assert_eq!(legendre_sum(0.7, &[2.5]), 2.5);
    assert_eq!(legval(0.5, &[2.0, 3.0]), 3.5);
    assert_eq!(legendre_sum(0.5, &[2.0, 3.0]), 3.5);
    // 1 + 2·x + 3·(3x²−1)/2 at x = 0.5: 1 + 1 + 3·(−0.125) = 1.625 (exact in binary).
    assert_eq!(legval(0.5, &[1.0, 2.0, 3.0]), 1.625);
    assert_eq!(legendre_sum(0.5, &[1.0, 2.0, 3.0]), 1.625);
}

#[test]
fn normalized_wavelength_uses_spec_operation_order() {
    // (wave − wavemin)·(2/(wavemax − wavemin)) − 1, evaluated in Python with the same order;
    // the first three differ in the last bits from (wave − wavemin)·2/(wavemax − wavemin) − 1.
    let cases: [(f64, f64, f64, f64); 9] = [
        (7533.8, 5543.0, 7827.0, 0.743257443082312),
        (6795.1, 5543.0, 7827.0, 0.09640980735551707),
        (6663.8, 5543.0, 7827.0, -0.018563922942206434),
        (5543.0, 5543.0, 7827.0, -1.0),
        (7827.0, 5543.0, 7827.0, 1.0),
        (6685.0, 5543.0, 7827.0, 0.0),
        (7827.0, 5543.0, 7826.0, 1.0008760402978538),
        (9000.0, 5543.0, 7827.0, 2.0271453590192645),
        (5000.0, 5543.0, 7826.0, -1.4756898817345598),
    ];
    for (i, &(wave, wavemin, wavemax, expected)) in cases.iter().enumerate() {
        let actual = normalized_wavelength(wave, wavemin, wavemax);
        assert_eq!(
            actual.to_bits(),
            expected.to_bits(),
            "case {i}: actual {actual:e}, expected {expected:e}"
        );
    }
}

/// `legval_lanes` is `legval` lane by lane, bit for bit, for every series length (the empty,
/// one- and two-term cases included) and points inside, at and beyond [-1, 1], NaN and ±inf.
#[test]
fn legval_lanes_is_legval_bitwise() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    for len in 0..14 {
        for _ in 0..50 {
            let coeffs: Vec<f64> = (0..len).map(|_| rng.random_range(-1e3..1e3)).collect();
            let mut points: Vec<f64> = (0..13).map(|_| rng.random_range(-1.5..1.5)).collect();
            points.extend([
                -1.0,
                1.0,
                0.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                -0.0,
            ]);
            for chunk in points.chunks_exact(4) {
                let ww = [chunk[0], chunk[1], chunk[2], chunk[3]];
                let lanes = legval_lanes(ww, &coeffs);
                for l in 0..4 {
                    let one = legval(ww[l], &coeffs);
                    assert_eq!(
                        lanes[l].to_bits(),
                        one.to_bits(),
                        "len {len} at {}: {} vs {one}",
                        ww[l],
                        lanes[l]
                    );
                }
            }
            let odd = legval_lanes([0.25, -0.75, 1.0], &coeffs);
            assert_eq!(odd[1].to_bits(), legval(-0.75, &coeffs).to_bits());
        }
    }
}
