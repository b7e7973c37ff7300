//! Which preproc pixels the solves use: the one per-pixel rule of docs/algorithm.md §1.2,
//! shared by the CPU conversion ([`super::CcdData`]) and the GPU upload (the rule itself lives
//! in `desi_device::pixel`, so that the `screen_pixels` kernel applies the same one), including the screen
//! of pixels that are valid by their IVAR and MASK but absurd (non-finite, far beyond the
//! saturation level, or an inverse variance no CCD can have).

use crate::io::{find_keyword, KeywordValue, PreprocImage};
/// What [`PixelLimits::classify`] makes of a pixel (defined beside the rule in the device
/// crate).
pub use desi_device::pixel::Pixel;
use desi_device::pixel::{classify_pixel, screen_pixel, screen_pixels_into};
use rayon::prelude::*;

/// Saturation level assumed when the preproc header has no `SATUELE{A,B,C,D}` (electrons):
/// desispec's default saturation of 65535 ADU (`preproc.py`) at 2 electrons/ADU, above the gain
/// of every DESI amplifier.
pub const DEFAULT_SATURATION_ELECTRONS: f64 = 65_535.0 * 2.0;

/// A pixel above this many times the saturation level cannot come from the CCD: preproc
/// divides by the pixel flat, which is at least 0.1 where it is not masked (PIXFLATLOW).
pub const SATURATION_FACTOR: f64 = 10.0;

/// Largest plausible pixel inverse variance (electrons⁻²): σ = 0.01 electron, 100 times below
/// the read noise of any DESI amplifier (2-4 electrons).
pub const MAX_PIXEL_IVAR: f64 = 1e4;

/// The bounds beyond which a pixel with IVAR > 0 and no excluding MASK bit is treated as masked
/// (weight 0). Non-finite values are always excluded, whatever the bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelLimits {
    /// Largest |IMAGE| value used (electrons).
    pub max_abs_value: f64,
    /// Largest IVAR used (electrons⁻²).
    pub max_ivar: f64,
}

impl Default for PixelLimits {
    /// The limits without a header: [`DEFAULT_SATURATION_ELECTRONS`] × [`SATURATION_FACTOR`]
    /// and [`MAX_PIXEL_IVAR`].
    fn default() -> Self {
        Self {
            max_abs_value: SATURATION_FACTOR * DEFAULT_SATURATION_ELECTRONS,
            max_ivar: MAX_PIXEL_IVAR,
        }
    }
}

impl PixelLimits {
    /// No bound on values or inverse variances (only non-finite values are excluded).
    pub const UNLIMITED: Self = Self {
        max_abs_value: f64::INFINITY,
        max_ivar: f64::INFINITY,
    };

    /// The limits of an image: [`SATURATION_FACTOR`] × the largest `SATUELEx` of its header
    /// (desispec preproc's saturation level of amplifier x in electrons), else the
    /// [`Default`], and [`MAX_PIXEL_IVAR`].
    pub fn for_image(image: &PreprocImage) -> Self {
        let saturation = ["A", "B", "C", "D"]
            .iter()
            .filter_map(
                |amp| match find_keyword(&image.header, &format!("SATUELE{amp}")) {
                    Some(KeywordValue::Float(v)) => Some(v),
                    Some(KeywordValue::Int(v)) => Some(v as f64),
                    _ => None,
                },
            )
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            });
        Self {
            max_abs_value: SATURATION_FACTOR * saturation.unwrap_or(DEFAULT_SATURATION_ELECTRONS),
            max_ivar: MAX_PIXEL_IVAR,
        }
    }

    /// The rule: `(value, weight)` as the solves see a pixel. The weight is IVAR where no
    /// excluding MASK bit is set ([`EXTRACT_MASK_BITS`]) and the pixel passes the screen,
    /// else 0; the value is 0 wherever the weight is 0, so that a masked NaN or infinity can
    /// never reach a sum (`0 · NaN = NaN`).
    #[inline]
    pub fn pixel(&self, value: f32, ivar: f32, mask: i32) -> (f32, f32) {
        screen_pixel(value, ivar, mask, self.max_abs_value, self.max_ivar)
    }

    /// [`PixelLimits::pixel`] over slices (a row or a run of rows), widened to `T` (`f32` or
    /// `f64`): bitwise the same, without per-pixel branches
    /// ([`desi_device::pixel::screen_pixels_into`]).
    ///
    /// # Panics
    /// If the slices differ in length.
    #[inline]
    pub fn screen_into<T: Copy + From<f32>>(
        &self,
        image: &[f32],
        ivar: &[f32],
        mask: &[i32],
        value: &mut [T],
        weight: &mut [T],
    ) {
        screen_pixels_into(
            image,
            ivar,
            mask,
            self.max_abs_value,
            self.max_ivar,
            value,
            weight,
        );
    }

    /// What the rule makes of one pixel ([`desi_device::pixel::classify_pixel`], the function
    /// the `screen_pixels` kernel applies to images already in device memory).
    #[inline]
    pub fn classify(&self, value: f32, ivar: f32, mask: i32) -> Pixel {
        classify_pixel(value, ivar, mask, self.max_abs_value, self.max_ivar)
    }

    /// How many pixels of `image` with IVAR > 0 and no excluding MASK bit the screen excludes.
    pub fn count(&self, image: &PreprocImage) -> ScreenCount {
        self.count_rows(image, 0..image.ny)
    }

    /// [`PixelLimits::count`] over the CCD rows `rows` only (clamped to the image): the rows
    /// an extraction reads ([`crate::io::PreprocReader::read_rows`]; the others are 0).
    pub fn count_rows(&self, image: &PreprocImage, rows: std::ops::Range<usize>) -> ScreenCount {
        self.count_window(image, rows, 0..image.nx)
    }

    /// [`PixelLimits::count`] over the window `rows` x `cols` only (clamped to the image): the
    /// pixels an extraction on the CPU reads ([`crate::io::PreprocReader::read_window`]; the
    /// others are 0).
    pub fn count_window(
        &self,
        image: &PreprocImage,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) -> ScreenCount {
        let nx = image.nx;
        let (c0, c1) = (cols.start.min(nx), cols.end.min(nx));
        let c1 = c1.max(c0);
        let end = rows.end.min(image.ny);
        // Rows per parallel work item: about 64 Ki pixels.
        let chunk = ((1usize << 16) / (c1 - c0).max(1)).max(1);
        let rows: Vec<usize> = (rows.start.min(end)..end).collect();
        rows.par_chunks(chunk)
            .map(|rows| {
                let mut count = ScreenCount::default();
                for &r in rows {
                    let span = r * nx + c0..r * nx + c1;
                    let planes = (
                        image.image.get(span.clone()).unwrap_or_default(),
                        image.ivar.get(span.clone()).unwrap_or_default(),
                        image.mask.get(span).unwrap_or_default(),
                    );
                    for ((&v, &iv), &m) in planes.0.iter().zip(planes.1).zip(planes.2) {
                        match self.classify(v, iv, m) {
                            Pixel::NonFinite => count.nonfinite += 1,
                            Pixel::AbsurdValue => count.value += 1,
                            Pixel::AbsurdIvar => count.ivar += 1,
                            Pixel::Used | Pixel::Masked => {}
                        }
                    }
                }
                count
            })
            .reduce(ScreenCount::default, |a, b| ScreenCount {
                nonfinite: a.nonfinite + b.nonfinite,
                value: a.value + b.value,
                ivar: a.ivar + b.ivar,
            })
    }
}

/// Pixels with IVAR > 0 and no excluding MASK bit that the screen excluded, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScreenCount {
    /// Non-finite value or IVAR.
    pub nonfinite: usize,
    /// |value| beyond the limit.
    pub value: usize,
    /// IVAR beyond the limit.
    pub ivar: usize,
}

impl ScreenCount {
    /// All excluded pixels.
    pub fn total(&self) -> usize {
        self.nonfinite + self.value + self.ivar
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_excludes_masked_and_absurd_pixels() {
        let l = PixelLimits::default();
        assert_eq!(l.pixel(5.0, 0.1, 0), (5.0, 0.1));
        // BADREADNOISE (bit 8) does not exclude; BAD (bit 0) does.
        assert_eq!(l.pixel(5.0, 0.1, 1 << 8), (5.0, 0.1));
        assert_eq!(l.pixel(5.0, 0.1, 1), (0.0, 0.0));
        // A masked NaN becomes a plain 0: nothing can multiply it.
        assert_eq!(l.pixel(f32::NAN, 0.0, 1), (0.0, 0.0));
        assert_eq!(l.classify(f32::NAN, 0.0, 1), Pixel::Masked);
        assert_eq!(l.classify(f32::NAN, 0.1, 0), Pixel::NonFinite);
        assert_eq!(l.classify(f32::INFINITY, 0.1, 0), Pixel::NonFinite);
        assert_eq!(l.classify(1e20, 0.1, 0), Pixel::AbsurdValue);
        assert_eq!(l.classify(-3e38, 0.1, 0), Pixel::AbsurdValue);
        assert_eq!(l.classify(5.0, 3e38, 0), Pixel::AbsurdIvar);
        assert_eq!(l.classify(1.2e6, 0.1, 0), Pixel::Used);
        assert_eq!(l.classify(1.4e6, 0.1, 0), Pixel::AbsurdValue);
        let none = PixelLimits::UNLIMITED;
        assert_eq!(none.classify(3e38, 3e38, 0), Pixel::Used);
        assert_eq!(none.classify(f32::NAN, 1.0, 0), Pixel::NonFinite);
        assert_eq!(l.classify(1.0, f32::NAN, 0), Pixel::NonFinite);
        assert_eq!(l.pixel(1.0, f32::NAN, 0), (0.0, 0.0));
    }
}
