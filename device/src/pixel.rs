//! The per-pixel rule of docs/algorithm.md §1.2, written once for both targets: which preproc
//! pixels the solves use and with what weight. The host applies it while it converts a CCD
//! (`PixelLimits` in host/extract/screen.rs) and the `screen_pixels` kernel applies it to an
//! image already in device memory, so the two cannot drift apart.

/// ccdmask bits that exclude a pixel from the fit: everything but BADREADNOISE (0x2FF).
pub const EXTRACT_MASK_BITS: i32 = 0x2FF;

/// What the rule makes of one pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pixel {
    /// Used with weight IVAR.
    Used,
    /// IVAR 0 (or not positive) or an excluding MASK bit: not used, as in desispec.
    Masked,
    /// IVAR > 0 (or NaN) and no excluding MASK bit, but the value or IVAR is not finite: not
    /// used.
    NonFinite,
    /// IVAR > 0 but |value| above the largest value used: not used.
    AbsurdValue,
    /// IVAR above the largest IVAR used: not used.
    AbsurdIvar,
}

/// The rule: the class of a pixel `value` (electrons) with inverse variance `ivar` and ccdmask
/// bits `mask`, given the largest |value| and IVAR a pixel may have to be used.
#[inline]
pub fn classify_pixel(
    value: f32,
    ivar: f32,
    mask: i32,
    max_abs_value: f64,
    max_ivar: f64,
) -> Pixel {
    if mask & EXTRACT_MASK_BITS != 0 || ivar <= 0.0 {
        Pixel::Masked
    } else if !value.is_finite() || !ivar.is_finite() {
        Pixel::NonFinite
    } else if f64::from(value).abs() > max_abs_value {
        Pixel::AbsurdValue
    } else if f64::from(ivar) > max_ivar {
        Pixel::AbsurdIvar
    } else {
        Pixel::Used
    }
}

/// `(value, weight)` as the solves see a pixel: `(value, ivar)` for a [`Pixel::Used`] one,
/// else `(0, 0)`, so that a masked NaN or infinity can never reach a sum (`0 · NaN = NaN`).
#[inline]
pub fn screen_pixel(
    value: f32,
    ivar: f32,
    mask: i32,
    max_abs_value: f64,
    max_ivar: f64,
) -> (f32, f32) {
    match classify_pixel(value, ivar, mask, max_abs_value, max_ivar) {
        Pixel::Used => (value, ivar),
        _ => (0.0, 0.0),
    }
}

/// Whether a pixel is acceptable input at all, as the preproc reader requires of a file: IVAR
/// finite and >= 0, and the value finite where IVAR > 0. (Input that breaks this is refused
/// with an error naming the pixel, never screened silently.)
#[inline]
pub fn valid_input_pixel(value: f32, ivar: f32) -> bool {
    (0.0..f32::INFINITY).contains(&ivar) && (ivar == 0.0 || value.is_finite())
}

/// What the `screen_pixels` kernel makes of one pixel of an image in device memory (no mask
/// bits: the inverse variance carries the mask): the value and weight of [`screen_pixel`]
/// widened to f64 (exact), and whether the pixel is valid input ([`valid_input_pixel`]). An
/// f64 input is rounded to f32 first (`as f32`, to nearest), as the host path converts it.
#[inline]
pub fn screen_device_pixel(
    value: f32,
    ivar: f32,
    max_abs_value: f64,
    max_ivar: f64,
) -> (f64, f64, bool) {
    let (value_used, weight) = screen_pixel(value, ivar, 0, max_abs_value, max_ivar);
    (
        f64::from(value_used),
        f64::from(weight),
        valid_input_pixel(value, ivar),
    )
}

/// The largest `f32` whose value does not exceed `bound` (`+inf` for `+inf` and for NaN), so
/// that for every finite `f32` `x`, `x <= f32_bound(bound)` exactly when
/// `!(f64::from(x) > bound)`, the test of [`classify_pixel`] (never true for a NaN `bound`).
fn f32_bound(bound: f64) -> f32 {
    if bound.is_nan() {
        return f32::INFINITY;
    }
    let rounded = bound as f32;
    if f64::from(rounded) > bound {
        rounded.next_down()
    } else {
        rounded
    }
}

/// [`screen_pixel`] over whole rows: `value[i], weight[i]` = `screen_pixel(image[i], ivar[i],
/// mask[i], ...)`, widened to `T` (`f32`, or `f64` exactly), bitwise the same for every input
/// (NaN, infinities, signed zeros and the bounds included). Written without branches (the
/// limits compared in `f32` through `f32_bound`, the choice as a bit mask), so that it
/// compiles to vector compares and selects: the screen of a whole CCD is then bound by memory
/// rather than by the per-pixel branches of [`classify_pixel`].
///
/// # Panics
/// If the five slices differ in length.
#[inline]
pub fn screen_pixels_into<T: Copy + From<f32>>(
    image: &[f32],
    ivar: &[f32],
    mask: &[i32],
    max_abs_value: f64,
    max_ivar: f64,
    value: &mut [T],
    weight: &mut [T],
) {
    let n = image.len();
    assert!(
        ivar.len() == n && mask.len() == n && value.len() == n && weight.len() == n,
        "screen_pixels_into: slices of different lengths"
    );
    let (value_bound, ivar_bound) = (f32_bound(max_abs_value), f32_bound(max_ivar));
    let screen = |v: f32, iv: f32, m: i32| -> (T, T) {
        // `classify_pixel`'s Used, as one condition: no excluding bit, IVAR > 0 and both
        // finite (so that `ivar <= 0` is `!(ivar > 0)`), neither above its bound.
        let used = (m & EXTRACT_MASK_BITS == 0)
            & (iv > 0.0)
            & (v.abs() < f32::INFINITY)
            & (iv < f32::INFINITY)
            & (v.abs() <= value_bound)
            & (iv <= ivar_bound);
        let keep = 0u32.wrapping_sub(u32::from(used));
        (
            T::from(f32::from_bits(v.to_bits() & keep)),
            T::from(f32::from_bits(iv.to_bits() & keep)),
        )
    };
    let pixels = image.iter().zip(ivar).zip(mask);
    for (((&v, &iv), &m), (out_v, out_w)) in pixels.zip(value.iter_mut().zip(weight.iter_mut())) {
        (*out_v, *out_w) = screen(v, iv, m);
    }
}
