//! The QA picture: a tiny RGB rasterizer (anti-aliased Wu lines, filled rectangles, text
//! through `ab_glyph` with the bundled DejaVu Sans) and the PNG writer.

use super::pulls::{PullStats, HIST_BIN, HIST_RANGE};
use super::QaError;
use crate::io::FrameData;
use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Width of the picture (pixels).
pub const WIDTH: u32 = 1400;
/// Height of the picture (pixels).
pub const HEIGHT: u32 = 900;
/// The most fibers the picture shows.
pub const MAX_FIBERS: usize = 6;

/// DejaVu Sans (Bitstream Vera license, assets/DejaVu-LICENSE.txt).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// An RGB colour.
type Rgb = [u8; 3];

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [228, 228, 228];
const TEXT: Rgb = [30, 30, 30];
/// Extracted flux.
const FLUX: Rgb = [31, 119, 180];
/// R·truth / dwave.
const MODEL: Rgb = [255, 127, 14];
const BAR: Rgb = [158, 202, 225];
const BAR_EDGE: Rgb = [49, 130, 189];
const GAUSS: Rgb = [214, 39, 40];

/// An RGB raster, row-major from the top-left corner, 3 bytes per pixel.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `height * width * 3` bytes.
    pub rgb: Vec<u8>,
    /// Drawing is limited to `[x0, x1) x [y0, y1)`.
    clip: (i64, i64, i64, i64),
}

impl Canvas {
    /// A canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: [u8; 3]) -> Self {
        let n = width as usize * height as usize;
        let mut rgb = Vec::with_capacity(3 * n);
        for _ in 0..n {
            rgb.extend_from_slice(&background);
        }
        Canvas {
            width,
            height,
            rgb,
            clip: (0, 0, width as i64, height as i64),
        }
    }

    /// The colour at `(x, y)`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Limits drawing to a rectangle (clamped to the canvas).
    fn set_clip(&mut self, x0: i64, y0: i64, x1: i64, y1: i64) {
        self.clip = (
            x0.max(0),
            y0.max(0),
            x1.min(self.width as i64),
            y1.min(self.height as i64),
        );
    }

    /// Removes the clip rectangle.
    fn reset_clip(&mut self) {
        self.clip = (0, 0, self.width as i64, self.height as i64);
    }

    /// Blends `color` over pixel `(x, y)` with opacity `alpha` (0..1).
    fn blend(&mut self, x: i64, y: i64, color: Rgb, alpha: f32) {
        let (cx0, cy0, cx1, cy1) = self.clip;
        if x < cx0 || x >= cx1 || y < cy0 || y >= cy1 || alpha.is_nan() || alpha <= 0.0 {
            return;
        }
        let a = alpha.min(1.0);
        let i = 3 * (y as usize * self.width as usize + x as usize);
        for (k, &c) in color.iter().enumerate() {
            let old = self.rgb[i + k] as f32;
            self.rgb[i + k] = (old + (c as f32 - old) * a).round() as u8;
        }
    }

    /// Fills `[x0, x1) x [y0, y1)`.
    fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.blend(x, y, color, 1.0);
            }
        }
    }

    /// One-pixel outline of `[x0, x1) x [y0, y1)`.
    fn stroke_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb) {
        self.fill_rect(x0, y0, x1, y0 + 1, color);
        self.fill_rect(x0, y1 - 1, x1, y1, color);
        self.fill_rect(x0, y0, x0 + 1, y1, color);
        self.fill_rect(x1 - 1, y0, x1, y1, color);
    }

    /// An anti-aliased line (Xiaolin Wu) between pixel-centre coordinates.
    fn line(&mut self, mut x0: f64, mut y0: f64, mut x1: f64, mut y1: f64, color: Rgb) {
        if !(x0.is_finite() && y0.is_finite() && x1.is_finite() && y1.is_finite()) {
            return;
        }
        // Far outside the canvas: nothing to draw (also bounds the loop below).
        let (w, h) = (self.width as f64, self.height as f64);
        if (x0.max(x1) < -1.0 || x0.min(x1) > w + 1.0)
            || (y0.max(y1) < -1.0 || y0.min(y1) > h + 1.0)
        {
            return;
        }
        let steep = (y1 - y0).abs() > (x1 - x0).abs();
        if steep {
            std::mem::swap(&mut x0, &mut y0);
            std::mem::swap(&mut x1, &mut y1);
        }
        if x0 > x1 {
            std::mem::swap(&mut x0, &mut x1);
            std::mem::swap(&mut y0, &mut y1);
        }
        // Clamp the run along the major axis to the canvas, keeping the slope.
        let limit = if steep { h } else { w } + 2.0;
        let dx = x1 - x0;
        let gradient = if dx == 0.0 { 1.0 } else { (y1 - y0) / dx };
        if x0 < -2.0 {
            y0 += gradient * (-2.0 - x0);
            x0 = -2.0;
        }
        if x1 > limit {
            y1 -= gradient * (x1 - limit);
            x1 = limit;
        }
        let mut plot = |a: f64, b: f64, alpha: f64| {
            let (px, py) = if steep { (b, a) } else { (a, b) };
            self.blend(px as i64, py as i64, color, alpha as f32);
        };
        let fpart = |v: f64| v - v.floor();
        let rfpart = |v: f64| 1.0 - fpart(v);

        let xend = x0.round();
        let yend = y0 + gradient * (xend - x0);
        let xgap = rfpart(x0 + 0.5);
        let xpxl1 = xend;
        plot(xpxl1, yend.floor(), rfpart(yend) * xgap);
        plot(xpxl1, yend.floor() + 1.0, fpart(yend) * xgap);
        let mut intery = yend + gradient;

        let xend = x1.round();
        let yend = y1 + gradient * (xend - x1);
        let xgap = fpart(x1 + 0.5);
        let xpxl2 = xend;
        plot(xpxl2, yend.floor(), rfpart(yend) * xgap);
        plot(xpxl2, yend.floor() + 1.0, fpart(yend) * xgap);

        let mut x = xpxl1 + 1.0;
        while x < xpxl2 {
            plot(x, intery.floor(), rfpart(intery));
            plot(x, intery.floor() + 1.0, fpart(intery));
            intery += gradient;
            x += 1.0;
        }
    }

    /// Connected line segments; `None` breaks the line.
    fn polyline(&mut self, points: &[Option<(f64, f64)>], color: Rgb, bold: bool) {
        for pair in points.windows(2) {
            if let [Some((xa, ya)), Some((xb, yb))] = *pair {
                self.line(xa, ya, xb, yb, color);
                if bold {
                    self.line(xa, ya + 0.6, xb, yb + 0.6, color);
                }
            }
        }
    }
}

/// Horizontal anchor of a text box.
#[derive(Debug, Clone, Copy)]
enum HAlign {
    Left,
    Center,
    Right,
}

/// Vertical anchor of a text box.
#[derive(Debug, Clone, Copy)]
enum VAlign {
    Top,
    Middle,
    Bottom,
}

/// Text rendering with the bundled font.
struct Text<'f> {
    font: FontRef<'f>,
}

/// Coverage of a rendered string, row-major.
struct Mask {
    width: usize,
    height: usize,
    alpha: Vec<f32>,
}

impl Text<'static> {
    /// Parses the bundled font.
    fn new() -> Result<Self, QaError> {
        let font = FontRef::try_from_slice(FONT_BYTES).map_err(|e| QaError::Font(e.to_string()))?;
        Ok(Text { font })
    }
}

impl Text<'_> {
    /// Renders `text` at `size` pixels into a coverage mask (line box: ascent to descent).
    fn mask(&self, text: &str, size: f32) -> Mask {
        let scale = PxScale::from(size);
        let scaled = self.font.as_scaled(scale);
        let ascent = scaled.ascent();
        let height = (ascent - scaled.descent()).ceil().max(1.0) as usize;
        let mut caret = 0.0f32;
        let mut prev = None;
        let mut glyphs = Vec::new();
        for ch in text.chars() {
            let id = scaled.glyph_id(ch);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(scale, point(caret, ascent)));
            caret += scaled.h_advance(id);
            prev = Some(id);
        }
        let width = caret.ceil().max(1.0) as usize;
        let mut alpha = vec![0.0f32; width * height];
        for glyph in glyphs {
            if let Some(outline) = self.font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                let (bx, by) = (bounds.min.x as i64, bounds.min.y as i64);
                outline.draw(|x, y, c| {
                    let (px, py) = (bx + x as i64, by + y as i64);
                    if px >= 0 && py >= 0 && (px as usize) < width && (py as usize) < height {
                        let a = &mut alpha[py as usize * width + px as usize];
                        *a = (*a + c).min(1.0);
                    }
                });
            }
        }
        Mask {
            width,
            height,
            alpha,
        }
    }

    /// Draws `text` anchored at `(x, y)`; `rotated` turns it 90 degrees counter-clockwise
    /// (reading upwards), the anchors then apply to the rotated box.
    #[allow(clippy::too_many_arguments)]
    fn draw(
        &self,
        canvas: &mut Canvas,
        x: f64,
        y: f64,
        text: &str,
        size: f32,
        color: Rgb,
        (ha, va): (HAlign, VAlign),
        rotated: bool,
    ) {
        let m = self.mask(text, size);
        let (bw, bh) = if rotated {
            (m.height, m.width)
        } else {
            (m.width, m.height)
        };
        let left = match ha {
            HAlign::Left => x,
            HAlign::Center => x - bw as f64 / 2.0,
            HAlign::Right => x - bw as f64,
        }
        .round() as i64;
        let top = match va {
            VAlign::Top => y,
            VAlign::Middle => y - bh as f64 / 2.0,
            VAlign::Bottom => y - bh as f64,
        }
        .round() as i64;
        for r in 0..bh {
            for c in 0..bw {
                // Counter-clockwise: box (c, r) shows mask (x = w - 1 - r, y = c).
                let a = if rotated {
                    m.alpha[c * m.width + (m.width - 1 - r)]
                } else {
                    m.alpha[r * m.width + c]
                };
                if a > 0.0 {
                    canvas.blend(left + c as i64, top + r as i64, color, a);
                }
            }
        }
    }

    /// Width in pixels of `text` at `size`.
    fn width(&self, text: &str, size: f32) -> f64 {
        let scaled = self.font.as_scaled(PxScale::from(size));
        let mut caret = 0.0f32;
        let mut prev = None;
        for ch in text.chars() {
            let id = scaled.glyph_id(ch);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            caret += scaled.h_advance(id);
            prev = Some(id);
        }
        caret as f64
    }
}

/// "Nice" tick positions (steps of 1, 2 or 5 x 10^k) covering `[lo, hi]`, about `target`
/// of them, and the number of decimals their labels need.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, usize) {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return (vec![lo], 0);
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = mag
        * if norm < 1.5 {
            1.0
        } else if norm < 3.0 {
            2.0
        } else if norm < 7.0 {
            5.0
        } else {
            10.0
        };
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().max(0.0) as usize
    };
    let mut ticks = Vec::new();
    let mut k = (lo / step).ceil();
    while k * step <= hi + 1e-9 * step && ticks.len() < 100 {
        ticks.push(k * step + 0.0);
        k += 1.0;
    }
    (ticks, decimals)
}

/// A plotting rectangle in pixels with its data ranges.
struct Panel {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Panel {
    /// Pixel column of data `x`.
    fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * (self.right - self.left)
    }

    /// Pixel row of data `y`.
    fn py(&self, y: f64) -> f64 {
        self.bottom - (y - self.y.0) / (self.y.1 - self.y.0) * (self.bottom - self.top)
    }

    /// Grid, frame, ticks and tick labels.
    fn axes(&self, canvas: &mut Canvas, text: &Text, xticks: usize, yticks: usize) {
        let (l, t, r, b) = (
            self.left as i64,
            self.top as i64,
            self.right as i64,
            self.bottom as i64,
        );
        let (xt, xdec) = nice_ticks(self.x.0, self.x.1, xticks);
        let (yt, ydec) = nice_ticks(self.y.0, self.y.1, yticks);
        for &v in &xt {
            let x = self.px(v).round() as i64;
            canvas.fill_rect(x, t + 1, x + 1, b, GRID);
            canvas.fill_rect(x, b, x + 1, b + 5, BLACK);
            let label = format!("{v:.xdec$}");
            text.draw(
                canvas,
                x as f64,
                b as f64 + 6.0,
                &label,
                13.0,
                TEXT,
                (HAlign::Center, VAlign::Top),
                false,
            );
        }
        for &v in &yt {
            let y = self.py(v).round() as i64;
            canvas.fill_rect(l + 1, y, r, y + 1, GRID);
            canvas.fill_rect(l - 5, y, l, y + 1, BLACK);
            let label = format!("{v:.ydec$}");
            text.draw(
                canvas,
                l as f64 - 8.0,
                y as f64,
                &label,
                13.0,
                TEXT,
                (HAlign::Right, VAlign::Middle),
                false,
            );
        }
        canvas.stroke_rect(l, t, r + 1, b + 1, BLACK);
    }

    /// Restricts drawing to the inside of the frame.
    fn clip(&self, canvas: &mut Canvas) {
        canvas.set_clip(
            self.left as i64 + 1,
            self.top as i64 + 1,
            self.right as i64,
            self.bottom as i64,
        );
    }
}

/// The fibers drawn by default: the first, middle and last spectrum of the frame (absolute
/// spectrum numbers, duplicates removed).
pub fn default_fibers(frame: &FrameData) -> Vec<usize> {
    if frame.nspec == 0 {
        return Vec::new();
    }
    let mut fibers = vec![
        frame.specmin,
        frame.specmin + frame.nspec / 2,
        frame.specmin + frame.nspec - 1,
    ];
    fibers.dedup();
    fibers
}

/// Mean and sample standard deviation of the pulls of frame row `s` (NaN when undefined).
fn fiber_pulls(frame: &FrameData, model: &[f64], s: usize) -> (usize, f64, f64) {
    let range = s * frame.nwave..(s + 1) * frame.nwave;
    let pulls: Vec<f64> = frame.flux[range.clone()]
        .iter()
        .zip(&frame.ivar[range.clone()])
        .zip(&model[range])
        .filter(|((_, &iv), _)| iv > 0.0)
        .map(|((&f, &iv), &m)| (f - m) * iv.sqrt())
        .collect();
    let n = pulls.len();
    let mean = pulls.iter().sum::<f64>() / n as f64;
    let var = pulls.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    (n, mean, var.sqrt())
}

/// Draws the QA picture ([`WIDTH`] x [`HEIGHT`]): for each of `fibers` (absolute spectrum
/// numbers of `frame`, 1 to [`MAX_FIBERS`]) a panel with the extracted flux and `model`
/// (`R·truth / dwave`, from [`super::model_flux`]) against wavelength, then the histogram of
/// the pulls of `stats` with the unit Gaussian and a summary. `title` heads the picture.
pub fn render(
    frame: &FrameData,
    model: &[f64],
    stats: &PullStats,
    fibers: &[usize],
    title: &str,
) -> Result<Canvas, QaError> {
    if fibers.is_empty() || fibers.len() > MAX_FIBERS {
        return Err(QaError::FiberCount {
            n: fibers.len(),
            max: MAX_FIBERS,
        });
    }
    for &fiber in fibers {
        if fiber < frame.specmin || fiber >= frame.specmin + frame.nspec {
            return Err(QaError::Fiber {
                fiber,
                specmin: frame.specmin,
                nspec: frame.nspec,
            });
        }
    }
    let n = frame.nspec * frame.nwave;
    if frame.flux.len() != n
        || frame.ivar.len() != n
        || model.len() != n
        || frame.wavelength.len() != frame.nwave
        || frame.nwave < 2
    {
        return Err(QaError::Shape {
            what: "frame",
            detail: format!(
                "flux {}, ivar {}, model {}, wavelength {} values for nspec {} x nwave {} \
                 (at least 2 wavelengths needed)",
                frame.flux.len(),
                frame.ivar.len(),
                model.len(),
                frame.wavelength.len(),
                frame.nspec,
                frame.nwave
            ),
        });
    }
    let text = Text::new()?;
    let mut canvas = Canvas::new(WIDTH, HEIGHT, WHITE);
    let (left, right) = (100.0, 1370.0);

    // Title and legend.
    text.draw(
        &mut canvas,
        left,
        10.0,
        &format!("desi-extract qa: {title}"),
        19.0,
        TEXT,
        (HAlign::Left, VAlign::Top),
        false,
    );
    let legend = [
        (FLUX, "extracted flux"),
        (MODEL, "R·truth / dwave (expected)"),
    ];
    let mut lx = right;
    for (color, label) in legend.iter().rev() {
        lx -= text.width(label, 14.0) + 12.0;
        text.draw(
            &mut canvas,
            lx + 32.0,
            20.0,
            label,
            14.0,
            TEXT,
            (HAlign::Left, VAlign::Middle),
            false,
        );
        canvas.fill_rect(lx as i64, 19, lx as i64 + 26, 22, *color);
        lx -= 36.0;
    }

    // Spectrum panels.
    let wave = &frame.wavelength;
    let (wmin, wmax) = (
        wave[0].min(wave[frame.nwave - 1]),
        wave[0].max(wave[frame.nwave - 1]),
    );
    let (region_top, region_bottom) = (62.0, 588.0);
    let slot = (region_bottom - region_top) / fibers.len() as f64;
    for (k, &fiber) in fibers.iter().enumerate() {
        let s = fiber - frame.specmin;
        let row = s * frame.nwave..(s + 1) * frame.nwave;
        let (flux, ivar, expected) = (
            &frame.flux[row.clone()],
            &frame.ivar[row.clone()],
            &model[row],
        );
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for j in 0..frame.nwave {
            for v in [(ivar[j] > 0.0).then_some(flux[j]), Some(expected[j])]
                .into_iter()
                .flatten()
            {
                if v.is_finite() {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
        if !(lo.is_finite() && hi.is_finite()) {
            (lo, hi) = (0.0, 1.0);
        }
        let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
        let top = region_top + k as f64 * slot;
        let panel = Panel {
            left,
            top,
            right,
            bottom: top + slot - 46.0,
            x: (wmin, wmax),
            y: (lo - 0.06 * span, hi + 0.06 * span),
        };
        panel.axes(&mut canvas, &text, 12, 4);
        let (npix, pmean, pstd) = fiber_pulls(frame, model, s);
        text.draw(
            &mut canvas,
            left,
            top - 3.0,
            &format!("spectrum {fiber}   (pulls: N = {npix}, mean = {pmean:+.3}, std = {pstd:.3})"),
            14.0,
            TEXT,
            (HAlign::Left, VAlign::Bottom),
            false,
        );
        text.draw(
            &mut canvas,
            24.0,
            (panel.top + panel.bottom) / 2.0,
            "electron / Å",
            13.0,
            TEXT,
            (HAlign::Center, VAlign::Middle),
            true,
        );
        panel.clip(&mut canvas);
        let flux_points: Vec<Option<(f64, f64)>> = (0..frame.nwave)
            .map(|j| {
                (ivar[j] > 0.0 && flux[j].is_finite())
                    .then(|| (panel.px(wave[j]), panel.py(flux[j])))
            })
            .collect();
        let model_points: Vec<Option<(f64, f64)>> = (0..frame.nwave)
            .map(|j| {
                expected[j]
                    .is_finite()
                    .then(|| (panel.px(wave[j]), panel.py(expected[j])))
            })
            .collect();
        canvas.polyline(&flux_points, FLUX, true);
        canvas.polyline(&model_points, MODEL, false);
        canvas.reset_clip();
    }
    text.draw(
        &mut canvas,
        (left + right) / 2.0,
        region_bottom + 4.0,
        "wavelength [Å]",
        14.0,
        TEXT,
        (HAlign::Center, VAlign::Top),
        false,
    );

    // Pull histogram (as a probability density) with the unit Gaussian.
    let norm = 1.0 / (stats.n.max(1) as f64 * HIST_BIN);
    let gauss = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let peak = stats
        .histogram
        .iter()
        .map(|&(_, c)| c as f64 * norm)
        .fold(gauss(0.0), f64::max);
    let hist = Panel {
        left,
        top: 652.0,
        right: 900.0,
        bottom: 852.0,
        x: (-HIST_RANGE, HIST_RANGE),
        y: (0.0, 1.12 * peak),
    };
    hist.axes(&mut canvas, &text, 10, 4);
    hist.clip(&mut canvas);
    for &(centre, count) in &stats.histogram {
        if count == 0 {
            continue;
        }
        let x0 = hist.px(centre - HIST_BIN / 2.0).round() as i64;
        let x1 = hist.px(centre + HIST_BIN / 2.0).round() as i64;
        let y0 = hist.py(count as f64 * norm).round() as i64;
        let y1 = hist.bottom as i64;
        canvas.fill_rect(x0, y0, x1, y1, BAR);
        canvas.stroke_rect(x0, y0, x1 + 1, y1 + 1, BAR_EDGE);
    }
    let curve: Vec<Option<(f64, f64)>> = (0..=500)
        .map(|i| {
            let x = -HIST_RANGE + 2.0 * HIST_RANGE * i as f64 / 500.0;
            Some((hist.px(x), hist.py(gauss(x))))
        })
        .collect();
    canvas.polyline(&curve, GAUSS, true);
    canvas.reset_clip();
    let outside = stats.n as u64 - stats.histogram.iter().map(|&(_, c)| c).sum::<u64>();
    let summary = [
        format!("N = {}", stats.n),
        format!("mean = {:+.4}", stats.mean),
        format!("std = {:.4}", stats.std),
    ];
    for (i, line) in summary.iter().enumerate() {
        text.draw(
            &mut canvas,
            hist.left + 10.0,
            hist.top + 8.0 + 19.0 * i as f64,
            line,
            15.0,
            TEXT,
            (HAlign::Left, VAlign::Top),
            false,
        );
    }
    canvas.fill_rect(
        hist.right as i64 - 150,
        hist.top as i64 + 16,
        hist.right as i64 - 124,
        hist.top as i64 + 19,
        GAUSS,
    );
    text.draw(
        &mut canvas,
        hist.right - 118.0,
        hist.top + 17.0,
        "N(0, 1)",
        14.0,
        TEXT,
        (HAlign::Left, VAlign::Middle),
        false,
    );
    text.draw(
        &mut canvas,
        (hist.left + hist.right) / 2.0,
        hist.bottom + 24.0,
        "pull = (flux − R·truth / dwave) · √ivar",
        14.0,
        TEXT,
        (HAlign::Center, VAlign::Top),
        false,
    );
    text.draw(
        &mut canvas,
        24.0,
        (hist.top + hist.bottom) / 2.0,
        "density",
        13.0,
        TEXT,
        (HAlign::Center, VAlign::Middle),
        true,
    );

    // Summary box.
    let (bx, by) = (950.0, 652.0);
    canvas.stroke_rect(
        bx as i64,
        by as i64,
        right as i64 + 1,
        hist.bottom as i64 + 1,
        BLACK,
    );
    let lines = [
        "Pull statistics".to_string(),
        format!("bins with ivar > 0:   {}", stats.n),
        format!("mean:   {:+.4}", stats.mean),
        format!("std:   {:.4}", stats.std),
        format!(
            "|pull| > 3:   {:.3} %  (Gaussian 0.270 %)",
            100.0 * stats.frac_abs_gt_3
        ),
        format!("outside ±{HIST_RANGE}:   {outside}"),
        format!("median chi2pix:   {:.4}", stats.median_chi2pix),
        format!(
            "frame: spectra {} to {}, {} wavelengths",
            frame.specmin,
            (frame.specmin + frame.nspec).saturating_sub(1),
            frame.nwave
        ),
    ];
    for (i, line) in lines.iter().enumerate() {
        text.draw(
            &mut canvas,
            bx + 14.0,
            by + 10.0 + 23.0 * i as f64,
            line,
            if i == 0 { 16.0 } else { 15.0 },
            TEXT,
            (HAlign::Left, VAlign::Top),
            false,
        );
    }
    Ok(canvas)
}

/// Distinguishes temporary names of concurrent writes within one process.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Encodes `canvas` as an 8-bit RGB PNG and writes it to `path` atomically (a temporary
/// name in the same directory, renamed when complete; removed on failure).
pub fn write_png(canvas: &Canvas, path: &Path) -> Result<(), QaError> {
    let Some(name) = path.file_name() else {
        return Err(QaError::OutputPath {
            path: path.to_path_buf(),
            detail: "output path has no file name".into(),
        });
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(QaError::OutputPath {
            path: path.to_path_buf(),
            detail: format!("output directory {} does not exist", dir.display()),
        });
    }
    let mut bytes = Vec::new();
    {
        let png_err = |source| QaError::Png {
            path: path.to_path_buf(),
            source,
        };
        let mut encoder = png::Encoder::new(&mut bytes, canvas.width, canvas.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(png_err)?;
        writer.write_image_data(&canvas.rgb).map_err(png_err)?;
        writer.finish().map_err(png_err)?;
    }
    let mut temp_name = name.to_os_string();
    temp_name.push(format!(
        ".tmp{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = path.with_file_name(temp_name);
    let io_err = |op, source| QaError::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    if let Err(e) = std::fs::write(&temp, &bytes) {
        let _ = std::fs::remove_file(&temp);
        return Err(io_err("write the temporary PNG", e));
    }
    if let Err(e) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(io_err("rename the temporary PNG into place", e));
    }
    Ok(())
}
