//! Tests of the pixel-integrated Gauss-Hermite spots (device/src/psf/spot.rs,
//! docs/algorithm.md §2).
//!
//! The reference stamps are computed here independently: a 2-D Gauss-Legendre quadrature of
//! `Σ c_ij He_i(u)φ(u) He_j(v)φ(v)` over every pixel (closed-form Hermite polynomials, std's
//! `exp`), clipped and normalized the same way, and for the pure Gaussian the product of std's
//! `erf` differences.
#![feature(float_erf)]

use desi_device::psf::spot::{
    evaluate_spot, pixel_integrated_gh, psf_point, spot_at, spot_corner, spot_corners, PsfPoint,
    PsfTables, SpotGeometry, StampCorner, MAX_GH_DEGREE, MAX_HALF_SIZE,
};
use desi_device::Status;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// DESI r-camera geometry: 17×11 stamps, 7×7 Gauss-Hermite coefficients.
const DESI: SpotGeometry = SpotGeometry {
    hsizex: 8,
    hsizey: 5,
    ghdegx: 6,
    ghdegy: 6,
};

/// Stamp pixels agree with the quadrature to 1e-12 of the peak: both sides are accurate to
/// ~1e-15 per pixel; the margin covers rounding in the 49-term sums and the normalization.
const QUADRATURE_TOL: f64 = 1e-12;

/// The pure Gaussian matches the std-erf product to 1e-14 of the peak: each erf difference is
/// within a few ulp of 1 on both sides.
const GAUSSIAN_TOL: f64 = 1e-14;

/// The stamp sums to 1 up to the rounding of 187 divisions and one sum.
const SUM_TOL: f64 = 1e-14;

/// Probabilists' Hermite polynomial He_k(u): closed forms for k <= 6, the three-term
/// recurrence above (only used by the MAX-size test).
fn hermite_e(k: usize, u: f64) -> f64 {
    let u2 = u * u;
    match k {
        0 => 1.0,
        1 => u,
        2 => u2 - 1.0,
        3 => u * (u2 - 3.0),
        4 => u2 * u2 - 6.0 * u2 + 3.0,
        5 => u * (u2 * u2 - 10.0 * u2 + 15.0),
        6 => u2 * u2 * u2 - 15.0 * u2 * u2 + 45.0 * u2 - 15.0,
        _ => u * hermite_e(k - 1, u) - (k - 1) as f64 * hermite_e(k - 2, u),
    }
}

/// Gauss-Legendre nodes and weights on [−1, 1] (Newton iteration on P_n).
fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    (0..n)
        .map(|i| {
            let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
            let mut dp = 0.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, x);
                for k in 2..=n {
                    let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                    p0 = p1;
                    p1 = p2;
                }
                dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
                let dx = p1 / dp;
                x -= dx;
                if dx.abs() < 1e-16 {
                    break;
                }
            }
            (x, 2.0 / ((1.0 - x * x) * dp * dp))
        })
        .collect()
}

/// ∫ He_k(u)φ(u) du over [a, b] by `nodes`-point Gauss-Legendre.
fn integrate_1d(k: usize, a: f64, b: f64, nodes: &[(f64, f64)]) -> f64 {
    let (mid, half) = (0.5 * (a + b), 0.5 * (b - a));
    nodes
        .iter()
        .map(|&(t, w)| {
            let u = mid + half * t;
            w * hermite_e(k, u) * (-0.5 * u * u).exp() / (2.0 * std::f64::consts::PI).sqrt()
        })
        .sum::<f64>()
        * half
}

/// Spot parameters for one test case.
#[derive(Clone, Debug)]
struct Case {
    x: f64,
    y: f64,
    sigma_x: f64,
    sigma_y: f64,
    /// Shape (ghdegy+1, ghdegx+1), c_ij at j·(ghdegx+1) + i.
    gh: Vec<f64>,
}

/// Reference stamp: direct 2-D quadrature of Σ c_ij He_i(u)φ(u)He_j(v)φ(v) over each pixel
/// (u, v in σ units, edges (m − h − 0.5 − δ)/σ), then clip at 0 and normalize.
fn quadrature_stamp(geometry: &SpotGeometry, case: &Case) -> (StampCorner, Vec<f64>) {
    let (nx, ny) = (2 * geometry.hsizex + 1, 2 * geometry.hsizey + 1);
    let xc = (case.x - geometry.hsizex as f64 + 0.5).floor();
    let yc = (case.y - geometry.hsizey as f64 + 0.5).floor();
    let nodes = gauss_legendre(24);
    let mut stamp = vec![0.0; ny * nx];
    for iy in 0..ny {
        // Pixel row yc + iy covers [yc + iy − 0.5, yc + iy + 0.5) on the CCD.
        let v0 = (yc + iy as f64 - 0.5 - case.y) / case.sigma_y;
        let v1 = (yc + iy as f64 + 0.5 - case.y) / case.sigma_y;
        for ix in 0..nx {
            let u0 = (xc + ix as f64 - 0.5 - case.x) / case.sigma_x;
            let u1 = (xc + ix as f64 + 0.5 - case.x) / case.sigma_x;
            let (umid, uhalf) = (0.5 * (u0 + u1), 0.5 * (u1 - u0));
            let (vmid, vhalf) = (0.5 * (v0 + v1), 0.5 * (v1 - v0));
            let mut total = 0.0;
            for &(s, ws) in &nodes {
                let u = umid + uhalf * s;
                let phi_u = (-0.5 * u * u).exp() / (2.0 * std::f64::consts::PI).sqrt();
                for &(t, wt) in &nodes {
                    let v = vmid + vhalf * t;
                    let phi_v = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
                    let mut f = 0.0;
                    for j in 0..=geometry.ghdegy {
                        for i in 0..=geometry.ghdegx {
                            let c = case.gh[j * (geometry.ghdegx + 1) + i];
                            f += c * hermite_e(i, u) * hermite_e(j, v);
                        }
                    }
                    total += ws * wt * f * phi_u * phi_v;
                }
            }
            stamp[iy * nx + ix] = (total * uhalf * vhalf).max(0.0);
        }
    }
    let sum: f64 = stamp.iter().sum();
    stamp.iter_mut().for_each(|s| *s /= sum);
    (
        StampCorner {
            xc: xc as i32,
            yc: yc as i32,
        },
        stamp,
    )
}

/// Random realistic coefficients: c_00 ∈ [0.95, 1.08] (the range of GH-0-0 on real PSFs),
/// the others ±0.05.
fn random_gh(rng: &mut ChaCha8Rng, geometry: &SpotGeometry) -> Vec<f64> {
    let mut gh: Vec<f64> = (0..geometry.ngh())
        .map(|_| rng.random_range(-0.05..0.05))
        .collect();
    gh[0] = rng.random_range(0.95..1.08);
    gh
}

/// Centres covering positive, negative, integer, half-integer (both sides of the rounding
/// boundary) and CCD-edge positions, paired with rows likewise.
fn centres() -> Vec<(f64, f64)> {
    let below = |v: f64| f64::from_bits(v.to_bits() - 1); // largest double below v (v > 0)
    vec![
        (121.6251043467577, 374.03639421144385),
        (2000.5, 1000.5),
        (below(2000.5), below(1000.5)),
        (0.5, -0.5),
        (-0.5, 0.5),
        (-3.5, -7.25),
        (-17.75, -0.2),
        (3.0, 4.0),
        (0.0, 0.0),
        (4113.499999, 4127.5),
        (-1234.4999, 2222.2222),
        (1e-9, -1e-9),
        (127.7, 255.9),
    ]
}

fn cases(seed: u64, geometry: &SpotGeometry) -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (x, y) in centres() {
        out.push(Case {
            x,
            y,
            sigma_x: rng.random_range(1.0..1.1),
            sigma_y: rng.random_range(1.0..1.25),
            gh: random_gh(&mut rng, geometry),
        });
    }
    for _ in 0..12 {
        out.push(Case {
            x: rng.random_range(-50.0..4200.0),
            y: rng.random_range(-50.0..4200.0),
            sigma_x: rng.random_range(1.0..1.2),
            sigma_y: rng.random_range(1.0..1.2),
            gh: random_gh(&mut rng, geometry),
        });
    }
    out
}

fn evaluate(geometry: &SpotGeometry, case: &Case) -> (StampCorner, Vec<f64>) {
    let mut stamp = vec![f64::NAN; geometry.stamp_len()];
    let corner = evaluate_spot(
        geometry,
        case.x,
        case.y,
        case.sigma_x,
        case.sigma_y,
        &case.gh,
        &mut stamp,
    )
    .unwrap_or_else(|status| panic!("evaluate_spot({case:?}) failed: {status:?}"));
    (corner, stamp)
}

#[test]
fn stamps_are_normalized_nonnegative_and_centred() {
    for (k, case) in cases(1, &DESI).iter().enumerate() {
        let (corner, stamp) = evaluate(&DESI, case);
        assert_eq!(stamp.len(), 11 * 17);
        for (i, &s) in stamp.iter().enumerate() {
            assert!(
                s >= 0.0 && s.is_finite(),
                "case {k} pixel {i}: {s:e} not >= 0"
            );
        }
        let sum: f64 = stamp.iter().sum();
        assert!(
            (sum - 1.0).abs() <= SUM_TOL,
            "case {k}: sum {sum:e}, expected 1"
        );

        // Corner rule and sub-pixel offset range.
        assert_eq!(
            corner.xc as f64,
            (case.x - 8.0 + 0.5).floor(),
            "case {k} xc"
        );
        assert_eq!(
            corner.yc as f64,
            (case.y - 5.0 + 0.5).floor(),
            "case {k} yc"
        );
        let dx = case.x - corner.xc as f64 - 8.0;
        let dy = case.y - corner.yc as f64 - 5.0;
        assert!(
            (-0.5..0.5).contains(&dx),
            "case {k}: X − xc − HSIZEX = {dx}"
        );
        assert!(
            (-0.5..0.5).contains(&dy),
            "case {k}: Y − yc − HSIZEY = {dy}"
        );

        // Centre of mass within 0.7 px of the centre pixel (|δ| <= 0.5 plus the small shift
        // from the odd Hermite terms).
        let (mut cx, mut cy) = (0.0, 0.0);
        for (i, &s) in stamp.iter().enumerate() {
            cx += s * (i % 17) as f64;
            cy += s * (i / 17) as f64;
        }
        assert!(
            (cx - 8.0).abs() <= 0.7,
            "case {k}: x centre of mass {cx}, expected 8 ± 0.7"
        );
        assert!(
            (cy - 5.0).abs() <= 0.7,
            "case {k}: y centre of mass {cy}, expected 5 ± 0.7"
        );
    }
}

fn assert_stamps_close(what: &str, actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: stamp lengths");
    let peak = expected.iter().cloned().fold(0.0, f64::max);
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (a - e).abs();
        assert!(
            err <= tol * peak,
            "{what} pixel {i} (row {}, col {}): actual {a:e}, expected {e:e}, |diff| {err:e} > \
             {tol:e}·peak {peak:e}",
            i / 17,
            i % 17
        );
    }
}

#[test]
fn stamps_match_direct_quadrature() {
    for (k, case) in cases(2, &DESI).iter().enumerate() {
        let (corner, stamp) = evaluate(&DESI, case);
        let (ref_corner, reference) = quadrature_stamp(&DESI, case);
        assert_eq!(corner, ref_corner, "case {k} corner");
        assert_stamps_close(&format!("case {k}"), &stamp, &reference, QUADRATURE_TOL);
    }
}

#[test]
fn clipping_matches_quadrature_when_wings_go_negative() {
    // Strong odd/even terms make parts of the stamp negative before clipping.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for k in 0..4 {
        let mut gh = random_gh(&mut rng, &DESI);
        gh[2] = -0.3; // c_20
        gh[7 * 2] = 0.25; // c_02
        gh[3] = 0.2; // c_30
        let case = Case {
            x: 300.3 + k as f64 * 0.21,
            y: -40.45,
            sigma_x: 1.05,
            sigma_y: 1.15,
            gh,
        };
        let (_, stamp) = evaluate(&DESI, &case);
        let (_, reference) = quadrature_stamp(&DESI, &case);
        let zeros = reference.iter().filter(|&&s| s == 0.0).count();
        assert!(
            zeros > 0,
            "case {k}: test setup should produce clipped pixels"
        );
        assert_stamps_close(
            &format!("clipped case {k}"),
            &stamp,
            &reference,
            QUADRATURE_TOL,
        );
    }
}

#[test]
fn pure_gaussian_matches_erf_product() {
    let mut gh = vec![0.0; DESI.ngh()];
    gh[0] = 1.0;
    for (k, &(x, y)) in centres().iter().enumerate() {
        let case = Case {
            x,
            y,
            sigma_x: 1.0 + 0.01 * k as f64,
            sigma_y: 1.2 - 0.01 * k as f64,
            gh: gh.clone(),
        };
        let (corner, stamp) = evaluate(&DESI, &case);
        let pixel = |lo: f64, hi: f64, centre: f64, sigma: f64| {
            let s2 = sigma * std::f64::consts::SQRT_2;
            0.5 * (((hi - centre) / s2).erf() - ((lo - centre) / s2).erf())
        };
        let gx: Vec<f64> = (0..17)
            .map(|ix| {
                let c = corner.xc as f64 + ix as f64;
                pixel(c - 0.5, c + 0.5, x, case.sigma_x)
            })
            .collect();
        let gy: Vec<f64> = (0..11)
            .map(|iy| {
                let c = corner.yc as f64 + iy as f64;
                pixel(c - 0.5, c + 0.5, y, case.sigma_y)
            })
            .collect();
        let (sx, sy): (f64, f64) = (gx.iter().sum(), gy.iter().sum());
        let reference: Vec<f64> = (0..11 * 17)
            .map(|i| gy[i / 17] * gx[i % 17] / (sx * sy))
            .collect();
        assert_stamps_close(&format!("gaussian {k}"), &stamp, &reference, GAUSSIAN_TOL);
    }
}

#[test]
fn pixel_basis_matches_quadrature() {
    let nodes = gauss_legendre(24);
    let mut out = vec![0.0; 7 * 17];
    for &(delta, sigma) in &[(0.0, 1.0), (-0.5, 1.07), (0.4999, 1.21), (0.123, 0.9)] {
        pixel_integrated_gh(delta, sigma, 8, 6, &mut out).expect("valid sizes");
        for i in 0..=6 {
            for m in 0..17 {
                let u0 = (m as f64 - 8.0 - 0.5 - delta) / sigma;
                let u1 = (m as f64 - 8.0 + 0.5 - delta) / sigma;
                let expected = integrate_1d(i, u0, u1, &nodes);
                let actual = out[i * 17 + m];
                // Entries are O(0.1-1); quadrature and closed forms agree to ~1e-16.
                assert!(
                    (actual - expected).abs() <= 1e-14,
                    "δ={delta} σ={sigma} G[{i}][{m}]: actual {actual:e}, expected {expected:e}"
                );
            }
        }
    }
}

#[test]
fn largest_supported_geometry_matches_quadrature() {
    let geometry = SpotGeometry {
        hsizex: MAX_HALF_SIZE,
        hsizey: MAX_HALF_SIZE - 3,
        ghdegx: MAX_GH_DEGREE,
        ghdegy: MAX_GH_DEGREE - 1,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let case = Case {
        x: 517.37,
        y: -9.61,
        sigma_x: 1.8,
        sigma_y: 1.3,
        gh: random_gh(&mut rng, &geometry),
    };
    let mut stamp = vec![0.0; geometry.stamp_len()];
    let corner = evaluate_spot(
        &geometry,
        case.x,
        case.y,
        case.sigma_x,
        case.sigma_y,
        &case.gh,
        &mut stamp,
    )
    .expect("largest geometry is supported");
    let (ref_corner, reference) = quadrature_stamp(&geometry, &case);
    assert_eq!(corner, ref_corner);
    let peak = reference.iter().cloned().fold(0.0, f64::max);
    for (i, (&a, &e)) in stamp.iter().zip(&reference).enumerate() {
        assert!(
            (a - e).abs() <= QUADRATURE_TOL * peak,
            "pixel {i}: actual {a:e}, expected {e:e}"
        );
    }
}

/// A tiny hand-made PSF: 2 fibers, quadratic traces, LEGDEG = 1, GHDEG 1×1, with domains
/// chosen so every intermediate is exact in binary: at wave = 3, ww = 0.5 on XTRACE (0, 4),
/// −0.25 on YTRACE (0, 8), 0.75 on the PSF HDU (−4, 4).
struct TinyPsf {
    xtrace: Vec<f64>,
    ytrace: Vec<f64>,
    params: Vec<f64>,
}

const TINY_GEOMETRY: SpotGeometry = SpotGeometry {
    hsizex: 2,
    hsizey: 1,
    ghdegx: 1,
    ghdegy: 1,
};

impl TinyPsf {
    fn new() -> Self {
        // (nspec=2, ntrace=3)
        let xtrace = vec![100.0, 4.0, 8.0, 200.0, -2.0, 16.0];
        let ytrace = vec![50.0, 8.0, 32.0, -30.0, 4.0, 0.0];
        // (2 + 4 params, nspec = 2, ncoeff = 2): row p, fiber s = [a, b] means a + b·ww.
        let params = vec![
            1.0, 0.25, 1.5, -0.5, // GHSIGX fibers 0, 1
            1.25, 0.5, 1.0, 0.0, // GHSIGY
            1.0, 0.0, 0.75, 0.5, // GH-0-0
            0.125, 0.5, -0.25, 1.0, // GH-1-0
            0.5, -1.0, 0.0, 0.25, // GH-0-1
            2.0, 4.0, -1.0, -0.5, // GH-1-1
        ];
        TinyPsf {
            xtrace,
            ytrace,
            params,
        }
    }

    fn tables(&self) -> PsfTables<'_> {
        PsfTables {
            geometry: TINY_GEOMETRY,
            nspec: 2,
            xtrace: &self.xtrace,
            ytrace: &self.ytrace,
            ntrace: 3,
            xtrace_domain: (0.0, 4.0),
            ytrace_domain: (0.0, 8.0),
            params: &self.params,
            nparam_coeff: 2,
            param_domain: (-4.0, 4.0),
        }
    }
}

#[test]
fn psf_point_matches_hand_computed_values() {
    let psf = TinyPsf::new();
    let tables = psf.tables();
    let mut gh = [0.0; 4];
    // P_2(0.5) = −0.125, P_2(−0.25) = −0.40625; ww_p = 0.75.
    let point = psf_point(&tables, 0, 3.0, &mut gh).expect("valid tables");
    let expected = PsfPoint {
        x: 100.0 + 4.0 * 0.5 + 8.0 * -0.125,     // 101
        y: 50.0 + 8.0 * -0.25 + 32.0 * -0.40625, // 35
        sigma_x: 1.0 + 0.25 * 0.75,              // 1.1875
        sigma_y: 1.25 + 0.5 * 0.75,              // 1.625
    };
    assert_eq!(point, expected, "fiber 0");
    assert_eq!(
        gh,
        [1.0, 0.125 + 0.375, 0.5 - 0.75, 2.0 + 3.0],
        "fiber 0 GH"
    );

    let point = psf_point(&tables, 1, 3.0, &mut gh).expect("valid tables");
    let expected = PsfPoint {
        x: 200.0 - 2.0 * 0.5 + 16.0 * -0.125, // 197
        y: -30.0 + 4.0 * -0.25,               // −31
        sigma_x: 1.5 - 0.5 * 0.75,            // 1.125
        sigma_y: 1.0,
    };
    assert_eq!(point, expected, "fiber 1");
    assert_eq!(
        gh,
        [0.75 + 0.375, -0.25 + 0.75, 0.1875, -1.0 - 0.375],
        "fiber 1 GH"
    );

    // Extrapolation beyond the domain (wave = 10: ww_x = 4, ww_y = 1.5, ww_p = 2.5).
    let point = psf_point(&tables, 0, 10.0, &mut gh).expect("valid tables");
    assert_eq!(point.x, 100.0 + 4.0 * 4.0 + 8.0 * (1.5 * 16.0 - 0.5));
    assert_eq!(point.y, 50.0 + 8.0 * 1.5 + 32.0 * (1.5 * 2.25 - 0.5));
    assert_eq!(point.sigma_x, 1.0 + 0.25 * 2.5);
}

#[test]
fn spot_at_is_psf_point_then_evaluate_spot() {
    let psf = TinyPsf::new();
    let tables = psf.tables();
    for &(ispec, wave) in &[(0usize, 3.0), (1, 3.0), (0, 1.3), (1, 6.1)] {
        let mut gh = [0.0; 4];
        let point = psf_point(&tables, ispec, wave, &mut gh).expect("valid tables");
        let mut expected = [0.0; 15];
        let corner = evaluate_spot(
            &TINY_GEOMETRY,
            point.x,
            point.y,
            point.sigma_x,
            point.sigma_y,
            &gh,
            &mut expected,
        );
        let mut stamp = [0.0; 15];
        let actual = spot_at(&tables, ispec, wave, &mut stamp);
        assert_eq!(actual, corner, "spot_at({ispec}, {wave}) corner/status");
        assert_eq!(stamp, expected, "spot_at({ispec}, {wave}) stamp");
    }
}

/// `spot_corner` (host planning) gives the corner `spot_at` (GPU stamps) uses, including at
/// half-pixel positions where the rounding decides, and the same errors.
#[test]
fn spot_corner_is_the_corner_of_spot_at() {
    let psf = TinyPsf::new();
    let tables = psf.tables();
    let mut stamp = [0.0; 15];
    let mut waves: Vec<f64> = (0..400).map(|i| -2.0 + 0.03125 * i as f64).collect();
    waves.extend([3.0, 1.3, 6.1, 0.0, 4.0, 8.0]);
    let mut checked = 0;
    for ispec in 0..2 {
        for &wave in &waves {
            let expected = spot_at(&tables, ispec, wave, &mut stamp);
            let actual = spot_corner(&tables, ispec, wave);
            match expected {
                Ok(corner) => {
                    assert_eq!(actual, Ok(corner), "fiber {ispec} at {wave}");
                    checked += 1;
                }
                // spot_at may fail later (sigma, stamp sum) where the corner is fine.
                Err(Status::NonFinite) | Err(Status::TooLarge) => {}
                Err(other) => assert_eq!(actual, Err(other), "fiber {ispec} at {wave}"),
            }
        }
    }
    assert!(checked > 700, "only {checked} spots had a valid stamp");
    assert_eq!(spot_corner(&tables, 2, 3.0), Err(Status::BadShape));
    assert_eq!(spot_corner(&tables, 0, f64::NAN), Err(Status::NonFinite));
}

/// `spot_corners` (a fiber's wavelengths a vector at a time) gives `spot_corner`'s corners bit
/// for bit at every wavelength, whatever the length (tails of 0..3), and the index and status
/// of the first wavelength `spot_corner` refuses.
#[test]
fn spot_corners_are_spot_corner_at_each_wavelength() {
    let psf = TinyPsf::new();
    let tables = psf.tables();
    let waves: Vec<f64> = (0..403).map(|i| -2.0 + 0.03125 * i as f64).collect();
    for ispec in 0..2 {
        for len in [0, 1, 3, 4, 5, 7, 8, 150, 403] {
            let waves = &waves[..len];
            let mut out = vec![Default::default(); len];
            let expected: Result<Vec<_>, (usize, Status)> = waves
                .iter()
                .enumerate()
                .map(|(k, &w)| spot_corner(&tables, ispec, w).map_err(|s| (k, s)))
                .collect();
            match expected {
                Ok(corners) => {
                    assert_eq!(spot_corners(&tables, ispec, waves, &mut out), Ok(()));
                    assert_eq!(out, corners, "fiber {ispec}, {len} wavelengths");
                }
                Err(first) => {
                    assert_eq!(spot_corners(&tables, ispec, waves, &mut out), Err(first));
                }
            }
        }
    }
    // A bad wavelength inside a vector, in the tail, and a bad fiber.
    let mut waves: Vec<f64> = (0..10).map(|i| 3.0 + 0.1 * i as f64).collect();
    let mut out = vec![Default::default(); waves.len()];
    assert_eq!(spot_corners(&tables, 0, &waves, &mut out), Ok(()));
    waves[6] = f64::NAN;
    assert_eq!(
        spot_corners(&tables, 0, &waves, &mut out),
        Err((6, Status::NonFinite))
    );
    waves[6] = 3.6;
    waves[9] = f64::INFINITY;
    assert_eq!(
        spot_corners(&tables, 0, &waves, &mut out),
        Err((9, Status::NonFinite))
    );
    assert_eq!(
        spot_corners(&tables, 2, &waves, &mut out),
        Err((0, Status::BadShape))
    );
    assert_eq!(
        spot_corners(&tables, 0, &waves, &mut out[..3]),
        Err((0, Status::BadShape))
    );
}

#[test]
fn bad_inputs_are_reported() {
    let gh = {
        let mut gh = vec![0.0; DESI.ngh()];
        gh[0] = 1.0;
        gh
    };
    let mut stamp = vec![0.0; DESI.stamp_len()];
    let call = |geometry: &SpotGeometry, x: f64, sx: f64, gh: &[f64], stamp: &mut [f64]| {
        evaluate_spot(geometry, x, 10.0, sx, 1.0, gh, stamp)
    };
    assert!(call(&DESI, 10.0, 1.0, &gh, &mut stamp).is_ok());
    assert_eq!(
        call(&DESI, 10.0, 1.0, &gh[1..], &mut stamp),
        Err(Status::BadShape)
    );
    assert_eq!(
        call(&DESI, 10.0, 1.0, &gh, &mut stamp[1..]),
        Err(Status::BadShape)
    );
    let mut longer = vec![0.0; DESI.stamp_len() + 1];
    assert_eq!(
        call(&DESI, 10.0, 1.0, &gh, &mut longer),
        Err(Status::BadShape)
    );

    let too_wide = SpotGeometry {
        hsizex: MAX_HALF_SIZE + 1,
        ..DESI
    };
    let mut wide_stamp = vec![0.0; too_wide.stamp_len()];
    assert_eq!(
        call(&too_wide, 10.0, 1.0, &gh, &mut wide_stamp),
        Err(Status::TooLarge)
    );
    let too_high_degree = SpotGeometry {
        ghdegy: MAX_GH_DEGREE + 1,
        ..DESI
    };
    let gh_big = vec![0.1; too_high_degree.ngh()];
    assert_eq!(
        call(&too_high_degree, 10.0, 1.0, &gh_big, &mut stamp),
        Err(Status::TooLarge)
    );

    for &(x, sx) in &[
        (f64::NAN, 1.0),
        (f64::INFINITY, 1.0),
        (10.0, 0.0),
        (10.0, -1.0),
        (10.0, f64::NAN),
    ] {
        assert_eq!(
            call(&DESI, x, sx, &gh, &mut stamp),
            Err(Status::NonFinite),
            "x={x} σ={sx}"
        );
    }
    assert_eq!(
        call(&DESI, 1e12, 1.0, &gh, &mut stamp),
        Err(Status::TooLarge),
        "corner overflow"
    );
    assert_eq!(
        call(&DESI, 10.0, 1.0, &vec![0.0; gh.len()], &mut stamp),
        Err(Status::NonFinite)
    );
    let negative: Vec<f64> = gh.iter().map(|c| -c).collect();
    assert_eq!(
        call(&DESI, 10.0, 1.0, &negative, &mut stamp),
        Err(Status::NonFinite),
        "all clipped"
    );

    let mut out = vec![0.0; 7 * 17];
    assert_eq!(
        pixel_integrated_gh(0.0, 1.0, 8, 6, &mut out[1..]),
        Err(Status::BadShape)
    );
    assert_eq!(
        pixel_integrated_gh(0.0, 1.0, 8, MAX_GH_DEGREE + 1, &mut out),
        Err(Status::TooLarge)
    );
    assert_eq!(
        pixel_integrated_gh(0.0, 1.0, MAX_HALF_SIZE + 1, 1, &mut out),
        Err(Status::TooLarge)
    );
}

#[test]
fn bad_tables_are_reported() {
    let psf = TinyPsf::new();
    let good = psf.tables();
    let mut gh = [0.0; 4];
    let mut stamp = [0.0; 15];
    assert!(psf_point(&good, 1, 3.0, &mut gh).is_ok());
    assert_eq!(
        psf_point(&good, 2, 3.0, &mut gh).err(),
        Some(Status::BadShape),
        "ispec"
    );
    assert_eq!(
        psf_point(&good, 0, 3.0, &mut gh[..3]).err(),
        Some(Status::BadShape),
        "gh"
    );
    let short_trace = PsfTables {
        xtrace: &psf.xtrace[..5],
        ..good
    };
    assert_eq!(
        psf_point(&short_trace, 0, 3.0, &mut gh).err(),
        Some(Status::BadShape)
    );
    let short_y = PsfTables {
        ytrace: &psf.ytrace[1..],
        ..good
    };
    assert_eq!(
        psf_point(&short_y, 0, 3.0, &mut gh).err(),
        Some(Status::BadShape)
    );
    let short_params = PsfTables {
        params: &psf.params[..23],
        ..good
    };
    assert_eq!(
        psf_point(&short_params, 0, 3.0, &mut gh).err(),
        Some(Status::BadShape)
    );
    let no_trace = PsfTables {
        ntrace: 0,
        xtrace: &[],
        ytrace: &[],
        ..good
    };
    assert_eq!(
        psf_point(&no_trace, 0, 3.0, &mut gh).err(),
        Some(Status::BadShape)
    );
    let wrong_ncoeff = PsfTables {
        nparam_coeff: 3,
        ..good
    };
    assert_eq!(
        psf_point(&wrong_ncoeff, 0, 3.0, &mut gh).err(),
        Some(Status::BadShape)
    );
    let degenerate_domain = PsfTables {
        param_domain: (1.0, 1.0),
        ..good
    };
    assert_eq!(
        psf_point(&degenerate_domain, 0, 3.0, &mut gh).err(),
        Some(Status::NonFinite)
    );
    let too_large = PsfTables {
        geometry: SpotGeometry {
            ghdegx: MAX_GH_DEGREE + 1,
            ..TINY_GEOMETRY
        },
        ..good
    };
    assert_eq!(
        spot_at(&too_large, 0, 3.0, &mut stamp),
        Err(Status::TooLarge)
    );
    assert_eq!(
        spot_at(&good, 0, 3.0, &mut stamp[..14]),
        Err(Status::BadShape)
    );
    assert_eq!(spot_at(&good, 5, 3.0, &mut stamp), Err(Status::BadShape));
}
