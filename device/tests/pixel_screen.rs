//! `screen_pixels_into` (the branchless slice form of the per-pixel rule, used to fill the GPU
//! upload and to convert the CPU's CCD) against `screen_pixel` pixel by pixel, bitwise: every
//! class of pixel (masked, non-finite, NaN, signed zeros, subnormals, values at and beside
//! the bounds), bounds that are not `f32` values, infinite, negative or NaN bounds, both output
//! widths, and lengths that are not a whole number of vector steps.

use desi_device::pixel::{screen_pixel, screen_pixels_into, EXTRACT_MASK_BITS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Values that sit on or beside `bounds` (as `f32`), and the special ones.
fn edge_values(bounds: &[f64]) -> Vec<f32> {
    let mut values = vec![
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        1.0,
        -1.0,
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
    ];
    for &b in bounds {
        let b32 = b as f32;
        for v in [b32, b32.next_up(), b32.next_down()] {
            values.extend([v, -v]);
        }
    }
    values
}

/// `screen_pixels_into` of the pixels into fresh outputs of type `T` (filled with 7 first).
fn screened<T: Copy + From<f32>>(
    pixels: (&[f32], &[f32], &[i32]),
    bounds: (f64, f64),
) -> (Vec<T>, Vec<T>) {
    let n = pixels.0.len();
    let (mut value, mut weight) = (vec![T::from(7.0); n], vec![T::from(7.0); n]);
    let (image, ivar, mask) = pixels;
    screen_pixels_into(
        image,
        ivar,
        mask,
        bounds.0,
        bounds.1,
        &mut value,
        &mut weight,
    );
    (value, weight)
}

fn check(image: &[f32], ivar: &[f32], mask: &[i32], max_abs_value: f64, max_ivar: f64) {
    let n = image.len();
    let (v32, w32) = screened::<f32>((image, ivar, mask), (max_abs_value, max_ivar));
    let (v64, w64) = screened::<f64>((image, ivar, mask), (max_abs_value, max_ivar));
    for i in 0..n {
        let (v, w) = screen_pixel(image[i], ivar[i], mask[i], max_abs_value, max_ivar);
        let what = format!(
            "pixel {i}: value {:e} ivar {:e} mask {:#x}, bounds {max_abs_value:e} {max_ivar:e}",
            image[i], ivar[i], mask[i]
        );
        assert_eq!(v32[i].to_bits(), v.to_bits(), "{what}");
        assert_eq!(w32[i].to_bits(), w.to_bits(), "{what}");
        assert_eq!(v64[i].to_bits(), f64::from(v).to_bits(), "{what}");
        assert_eq!(w64[i].to_bits(), f64::from(w).to_bits(), "{what}");
    }
}

#[test]
fn every_pair_of_edge_values_under_every_bound_matches_the_rule() {
    let value_bound = 1_310_700.0; // the default saturation bound: an f32
    let awkward = 1_310_700.1; // not an f32: rounds to one above or below
    let ivar_bound = 1e4;
    let small = 1e-300; // below every positive f32
    let bounds = [
        (value_bound, ivar_bound),
        (awkward, 1e4 + 1e-9),
        (f64::INFINITY, f64::INFINITY),
        (1e39, 1e39), // above f32::MAX
        (0.0, 0.0),
        (-1.0, -1.0),
        (small, small),
        (f64::NAN, f64::NAN),
        (f64::from(f32::MAX), f64::from(f32::MAX)),
    ];
    let all: Vec<f64> = bounds.iter().flat_map(|&(a, b)| [a, b]).collect();
    let values = edge_values(&all);
    let masks = [
        0,
        1,
        0x100,
        0x200,
        EXTRACT_MASK_BITS,
        0x100 | 0x400,
        -1,
        i32::MIN,
    ];
    let (mut image, mut ivar, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for &v in &values {
        for &iv in &values {
            for &m in &masks {
                image.push(v);
                ivar.push(iv);
                mask.push(m);
            }
        }
    }
    // The shifted copy's length is odd: some pixels go through the remainder loop.
    assert!((image.len() - 1) % 16 != 0);
    for &(a, b) in &bounds {
        check(&image, &ivar, &mask, a, b);
        // Shifted by one, so that each pixel is also seen in another lane.
        check(&image[1..], &ivar[1..], &mask[1..], a, b);
    }
}

#[test]
fn random_pixels_of_every_kind_and_short_rows_match_the_rule() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 100_003;
    let image: Vec<f32> = (0..n)
        .map(|_| match rng.random_range(0..20) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => 3e6,
            _ => rng.random_range(-50.0..5e4),
        })
        .collect();
    let ivar: Vec<f32> = (0..n)
        .map(|_| match rng.random_range(0..20) {
            0 => 0.0,
            1 => f32::NAN,
            2 => 2e4,
            3 => -1.0,
            _ => rng.random_range(1e-4..1.0),
        })
        .collect();
    let mask: Vec<i32> = (0..n)
        .map(|_| {
            if rng.random_range(0..10) == 0 {
                1 << rng.random_range(0..12)
            } else {
                0
            }
        })
        .collect();
    check(&image, &ivar, &mask, 1_310_700.0, 1e4);
    for len in 0..40 {
        check(&image[..len], &ivar[..len], &mask[..len], 1_310_700.0, 1e4);
    }
}

#[test]
#[should_panic(expected = "slices of different lengths")]
fn slices_of_different_lengths_are_refused() {
    let mut out = [0.0f32; 3];
    let mut weight = [0.0f32; 2];
    screen_pixels_into(
        &[1.0; 3],
        &[1.0; 3],
        &[0; 3],
        1.0,
        1.0,
        &mut out,
        &mut weight,
    );
}
