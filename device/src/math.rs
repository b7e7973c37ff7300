//! Elementary functions that lower on every target.
//!
//! On `nvptx64` only `sqrt`, `fma` and `floor` lower from `core`; everything else (exp, erf)
//! is written here in plain arithmetic so the CPU and the GPU run the same instructions.

/// Square root (IEEE correctly rounded on both targets).
#[inline(always)]
pub fn sqrt(x: f64) -> f64 {
    core::f64::math::sqrt(x)
}

/// Largest integer value not greater than `x`.
#[inline(always)]
pub fn floor(x: f64) -> f64 {
    core::f64::math::floor(x)
}

/// Fused multiply-add `a * b + c` with one rounding.
#[inline(always)]
pub fn fma(a: f64, b: f64, c: f64) -> f64 {
    core::f64::math::mul_add(a, b, c)
}

/// Absolute value.
#[inline(always)]
pub fn abs(x: f64) -> f64 {
    f64::from_bits(x.to_bits() & !(1u64 << 63))
}

/// Builds the `f64` with the given IEEE-754 bit pattern (for exact constants).
const fn bits(b: u64) -> f64 {
    f64::from_bits(b)
}

/// High 32 bits of `|x|` (sign cleared), as fdlibm's `GET_HIGH_WORD(hx, x); hx &= 0x7fffffff`.
#[inline(always)]
fn abs_high_word(x: f64) -> u32 {
    ((x.to_bits() >> 32) as u32) & 0x7fff_ffff
}

/// `x · 2^n` for any `n` (musl `scalbn`): exact unless the result is subnormal or overflows.
#[inline]
pub fn scalbn(x: f64, n: i32) -> f64 {
    let mut y = x;
    let mut n = n;
    if n > 1023 {
        y *= bits(0x7fe0_0000_0000_0000); // 2^1023
        n -= 1023;
        if n > 1023 {
            y *= bits(0x7fe0_0000_0000_0000);
            n -= 1023;
            if n > 1023 {
                n = 1023;
            }
        }
    } else if n < -1022 {
        // 2^-1022 · 2^53 keeps the final multiplication out of double rounding in the
        // subnormal range.
        y *= bits(0x0360_0000_0000_0000); // 2^-969
        n += 1022 - 53;
        if n < -1022 {
            y *= bits(0x0360_0000_0000_0000);
            n += 1022 - 53;
            if n < -1022 {
                n = -1022;
            }
        }
    }
    y * f64::from_bits(((0x3ff + n) as u64) << 52)
}

// Constants of fdlibm/musl `e_exp.c` (Sun Microsystems, 1993), as exact bit patterns.
const LN2_HI: f64 = bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = bits(0x3dea_39ef_3579_3c76);
const INV_LN2: f64 = bits(0x3ff7_1547_652b_82fe);
const EXP_P1: f64 = bits(0x3fc5_5555_5555_553e);
const EXP_P2: f64 = bits(0xbf66_c16c_16be_bd93);
const EXP_P3: f64 = bits(0x3f11_566a_af25_de2c);
const EXP_P4: f64 = bits(0xbebb_bd41_c5d2_6bf1);
const EXP_P5: f64 = bits(0x3e66_3769_72be_a4d0);

/// Exponential `e^x`, error below 1 ulp (the fdlibm/musl `e_exp.c` algorithm).
///
/// Method: reduce `x = k·ln2 + r` with `|r| ≤ ln2/2` (ln2 split into a 32-bit head and a
/// tail so `k·ln2_hi` is exact), approximate `e^r` by the rational form
/// `1 + r + r·c/(2 − c)` with `c = r − r²·P(r²)` (degree-5 Remez polynomial, error
/// < 2^-59), then scale by `2^k`. Special cases: `exp(NaN) = NaN`, `exp(+inf) = +inf`,
/// `exp(-inf) = 0`, overflow to `+inf` above 709.78, underflow to 0 below −745.13.
pub fn exp(x: f64) -> f64 {
    let hx = abs_high_word(x);
    let negative = x.is_sign_negative();

    // |x| >= 708.39...: NaN, overflow or (partial) underflow.
    if hx >= 0x4086_232b {
        if x.is_nan() {
            return x;
        }
        if x > 709.782_712_893_384 {
            return f64::INFINITY;
        }
        if x < -745.133_219_101_941_1 {
            return 0.0;
        }
    }

    let k: i32;
    let hi: f64;
    let lo: f64;
    if hx > 0x3fd6_2e42 {
        // |x| > ln2/2
        k = if hx >= 0x3ff0_a2b2 {
            // |x| >= 1.5 ln2: round to nearest by truncating x/ln2 ± 0.5.
            let half = if negative { -0.5 } else { 0.5 };
            (INV_LN2 * x + half) as i32
        } else if negative {
            -1
        } else {
            1
        };
        let kf = k as f64;
        hi = x - kf * LN2_HI; // exact: k·LN2_HI has at most 43 significant bits
        lo = kf * LN2_LO;
    } else if hx > 0x3e30_0000 {
        // 2^-28 < |x| <= ln2/2
        k = 0;
        hi = x;
        lo = 0.0;
    } else {
        // |x| <= 2^-28: e^x = 1 + x to within rounding.
        return 1.0 + x;
    }

    let r = hi - lo;
    let rr = r * r;
    let c = r - rr * (EXP_P1 + rr * (EXP_P2 + rr * (EXP_P3 + rr * (EXP_P4 + rr * EXP_P5))));
    let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
    if k == 0 {
        y
    } else {
        scalbn(y, k)
    }
}

/// [`exp`] without branches for `|x| < 708.39` (the range where [`exp`] takes none of its
/// overflow, underflow or NaN paths): the same reduction (`k` chosen by the same high-word
/// tests), polynomial and scaling, so bitwise [`exp`] there, written with selects only so
/// that a loop over it vectorizes. Outside that range the result is unspecified: callers
/// check [`exp_lanes_ok`].
#[cfg(not(target_arch = "nvptx64"))]
#[inline(always)]
fn exp_select(x: f64) -> f64 {
    let hx = abs_high_word(x);
    let negative = x.is_sign_negative();
    let half = if negative { -0.5 } else { 0.5 };
    let one = if negative { -1 } else { 1 };
    let far = (INV_LN2 * x + half) as i32;
    let k = if hx >= 0x3ff0_a2b2 {
        far
    } else if hx > 0x3fd6_2e42 {
        one
    } else {
        0
    };
    // k = 0: hi = x − 0 = x and lo = 0 exactly, as exp's middle branch sets them.
    let kf = k as f64;
    let hi = x - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let r = hi - lo;
    let rr = r * r;
    let c = r - rr * (EXP_P1 + rr * (EXP_P2 + rr * (EXP_P3 + rr * (EXP_P4 + rr * EXP_P5))));
    let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
    // scalbn(y, k) for |k| <= 1022 is y·2^k; 2^0 = 1 leaves y as is.
    let scaled = y * f64::from_bits(((0x3ff + k) as u64) << 52);
    if hx > 0x3e30_0000 {
        scaled
    } else {
        1.0 + x
    }
}

/// Whether every element of `x` is in the range where [`exp_select`] is bitwise [`exp`].
#[cfg(not(target_arch = "nvptx64"))]
#[inline(always)]
fn exp_lanes_ok(x: &[f64]) -> bool {
    x.iter()
        .fold(true, |ok, &v| ok & (abs_high_word(v) < 0x4086_232b))
}

/// `x[i] ← exp(x[i])` for every element, bitwise [`exp`]: a vectorized pass where every
/// element is below 708.39 in magnitude (the spots' Gaussians), else [`exp`] one by one.
#[cfg(not(target_arch = "nvptx64"))]
pub fn exp_in_place(x: &mut [f64]) {
    if exp_lanes_ok(x) {
        for v in x.iter_mut() {
            *v = exp_select(*v);
        }
    } else {
        for v in x.iter_mut() {
            *v = exp(*v);
        }
    }
}

// Constants of fdlibm/musl `s_erf.c` (Sun Microsystems, 1993), as exact bit patterns.
const ERX: f64 = bits(0x3feb_0ac1_6000_0000);
const EFX8: f64 = bits(0x3ff0_6eba_8214_db69);
const EFX: f64 = bits(0x3fc0_6eba_8214_db69);
// erf on [0, 0.84375]: erf(x) = x + x·PP(x²)/QQ(x²).
const PP0: f64 = bits(0x3fc0_6eba_8214_db68);
const PP1: f64 = bits(0xbfd4_cd7d_691c_b913);
const PP2: f64 = bits(0xbf9d_2a51_dbd7_194f);
const PP3: f64 = bits(0xbf77_a291_2366_68e4);
const PP4: f64 = bits(0xbef8_ead6_1200_16ac);
const QQ1: f64 = bits(0x3fd9_7779_cdda_dc09);
const QQ2: f64 = bits(0x3fb0_a54c_5536_ceba);
const QQ3: f64 = bits(0x3f74_d022_c4d3_6b0f);
const QQ4: f64 = bits(0x3f21_5dc9_221c_1a10);
const QQ5: f64 = bits(0xbed0_9c43_42a2_6120);
// erf on [0.84375, 1.25]: erf(1 + s) = erx + PA(s)/QA(s).
const PA0: f64 = bits(0xbf63_59b8_bef7_7538);
const PA1: f64 = bits(0x3fda_8d00_ad92_b34d);
const PA2: f64 = bits(0xbfd7_d240_fbb8_c3f1);
const PA3: f64 = bits(0x3fd4_5fca_8051_20e4);
const PA4: f64 = bits(0xbfbc_6398_3d3e_28ec);
const PA5: f64 = bits(0x3fa2_2a36_5997_95eb);
const PA6: f64 = bits(0xbf61_bf38_0a96_073f);
const QA1: f64 = bits(0x3fbb_3e66_18ee_e323);
const QA2: f64 = bits(0x3fe1_4af0_92eb_6f33);
const QA3: f64 = bits(0x3fb2_635c_d99f_e9a7);
const QA4: f64 = bits(0x3fc0_2660_e763_351f);
const QA5: f64 = bits(0x3f8b_edc2_6b51_dd1c);
const QA6: f64 = bits(0x3f88_8b54_5735_151d);
// erfc on [1.25, 1/0.35]: erfc(x) = exp(−x² − 0.5625 + RA(1/x²)/SA(1/x²))/x.
const RA0: f64 = bits(0xbf84_3412_600d_6435);
const RA1: f64 = bits(0xbfe6_3416_e4ba_7360);
const RA2: f64 = bits(0xc025_1e04_41b0_e726);
const RA3: f64 = bits(0xc04f_300a_e4cb_a38d);
const RA4: f64 = bits(0xc064_4cb1_8428_2266);
const RA5: f64 = bits(0xc067_135c_ebcc_abb2);
const RA6: f64 = bits(0xc054_5265_57e4_d2f2);
const RA7: f64 = bits(0xc023_a0ef_c69a_c25c);
const SA1: f64 = bits(0x4033_a6b9_bd70_7687);
const SA2: f64 = bits(0x4061_350c_526a_e721);
const SA3: f64 = bits(0x407b_290d_d58a_1a71);
const SA4: f64 = bits(0x4084_2b19_21ec_2868);
const SA5: f64 = bits(0x407a_d021_5770_0314);
const SA6: f64 = bits(0x405b_28a3_ee48_ae2c);
const SA7: f64 = bits(0x401a_47ef_8e48_4a93);
const SA8: f64 = bits(0xbfae_eff2_ee74_9a62);
// erfc on [1/0.35, 28]: the same form with RB/SB.
const RB0: f64 = bits(0xbf84_3412_39e8_6f4a);
const RB1: f64 = bits(0xbfe9_93ba_70c2_85de);
const RB2: f64 = bits(0xc031_c209_555f_995a);
const RB3: f64 = bits(0xc064_145d_43c5_ed98);
const RB4: f64 = bits(0xc083_ec88_1375_f228);
const RB5: f64 = bits(0xc090_0461_6a2e_5992);
const RB6: f64 = bits(0xc07e_384e_9bdc_383f);
const SB1: f64 = bits(0x403e_568b_261d_5190);
const SB2: f64 = bits(0x4074_5cae_221b_9f0a);
const SB3: f64 = bits(0x4098_02eb_189d_5118);
const SB4: f64 = bits(0x40a8_ffb7_688c_246a);
const SB5: f64 = bits(0x40a3_f219_cedf_3be6);
const SB6: f64 = bits(0x407d_a874_e79f_e763);
const SB7: f64 = bits(0xc036_70e2_4271_2d62);

/// `x·PP(x²)/QQ(x²)` (erf(x) − x on `|x| < 0.84375`).
#[inline(always)]
fn erf_small_ratio(x: f64) -> f64 {
    let z = x * x;
    let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
    let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
    r / s
}

/// `PA(s)/QA(s)` with `s = |x| − 1` (erf(|x|) − erx on `0.84375 <= |x| < 1.25`).
#[inline(always)]
fn erf_one_ratio(ax: f64) -> f64 {
    let s = ax - 1.0;
    let p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
    let q = 1.0 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
    p / q
}

/// `erfc(|x|)` for `1.25 <= |x| < 28` (asymptotic rational form; `hx` is the high word of
/// `|x|`), with `x²` split so that `exp(−x²)` keeps full relative accuracy.
#[inline(always)]
fn erfc_tail(ax: f64, hx: u32) -> f64 {
    let s = 1.0 / (ax * ax);
    let (r, q) = if hx < 0x4006_db6d {
        // |x| < 1/0.35
        (
            RA0 + s * (RA1 + s * (RA2 + s * (RA3 + s * (RA4 + s * (RA5 + s * (RA6 + s * RA7)))))),
            1.0 + s
                * (SA1
                    + s * (SA2
                        + s * (SA3 + s * (SA4 + s * (SA5 + s * (SA6 + s * (SA7 + s * SA8))))))),
        )
    } else {
        (
            RB0 + s * (RB1 + s * (RB2 + s * (RB3 + s * (RB4 + s * (RB5 + s * RB6))))),
            1.0 + s * (SB1 + s * (SB2 + s * (SB3 + s * (SB4 + s * (SB5 + s * (SB6 + s * SB7)))))),
        )
    };
    // z = |x| with the low 32 bits cleared: z² is exact, and −x² = −z² + (z − x)(z + x).
    let z = f64::from_bits(ax.to_bits() & 0xffff_ffff_0000_0000);
    exp(-z * z - 0.5625) * exp((z - ax) * (z + ax) + r / q) / ax
}

/// Error function `erf(x) = 2/√π ∫₀ˣ e^(−t²) dt`, error below 1 ulp (fdlibm/musl `s_erf.c`).
///
/// Method by `|x|`: `[0, 0.84375)` odd rational `x + x·P(x²)/Q(x²)`; `[0.84375, 1.25)`
/// rational in `|x| − 1` around erf(1); `[1.25, 6)` `1 − erfc(|x|)` from the asymptotic
/// form `exp(−x² − 0.5625 + R(1/x²)/S(1/x²))/|x|`; `≥ 6` `±1`. `erf(NaN) = NaN`.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = abs(x);
    let hx = abs_high_word(x);
    let value = if hx < 0x3feb_0000 {
        // |x| < 0.84375
        if hx < 0x3e30_0000 {
            // |x| < 2^-28: erf(x) = x·2/√π to within rounding.
            if hx < 0x0080_0000 {
                // avoid underflow of efx·x
                0.125 * (8.0 * ax + EFX8 * ax)
            } else {
                ax + EFX * ax
            }
        } else {
            ax + ax * erf_small_ratio(ax)
        }
    } else if hx < 0x3ff4_0000 {
        // |x| < 1.25
        ERX + erf_one_ratio(ax)
    } else if hx < 0x4018_0000 {
        // |x| < 6
        1.0 - erfc_tail(ax, hx)
    } else {
        1.0
    };
    if x.is_sign_negative() {
        -value
    } else {
        value
    }
}

/// Complementary error function `erfc(x) = 1 − erf(x)`, computed without cancellation for
/// large positive `x` (relative error below ~1 ulp down to the underflow at `x ≈ 26.5`;
/// fdlibm/musl `s_erf.c`). `erfc(NaN) = NaN`, `erfc(+inf) = 0`, `erfc(−inf) = 2`.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let negative = x.is_sign_negative();
    let ax = abs(x);
    let hx = abs_high_word(x);
    if hx < 0x3feb_0000 {
        // |x| < 0.84375
        if hx < 0x3c70_0000 {
            // |x| < 2^-56
            return 1.0 - x;
        }
        let y = erf_small_ratio(x);
        if x < 0.25 {
            // covers all negative x too
            1.0 - (x + x * y)
        } else {
            0.5 - (x * y + (x - 0.5))
        }
    } else if hx < 0x3ff4_0000 {
        // 0.84375 <= |x| < 1.25
        let pq = erf_one_ratio(ax);
        if negative {
            1.0 + (ERX + pq)
        } else {
            (1.0 - ERX) - pq
        }
    } else if hx < 0x403c_0000 {
        // 1.25 <= |x| < 28
        if negative && hx >= 0x4018_0000 {
            // x <= -6
            return 2.0;
        }
        let tail = erfc_tail(ax, hx);
        if negative {
            2.0 - tail
        } else {
            tail
        }
    } else if negative {
        2.0
    } else {
        0.0
    }
}
