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
