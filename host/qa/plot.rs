//! The QA picture, drawn with `plotters` (bitmap backend, text through its `ab_glyph` feature
//! with the bundled DejaVu Sans: no system font is looked up), and its PNG file.

use super::pulls::{PullStats, HIST_BIN, HIST_RANGE};
use super::QaError;
use crate::io::atomic::write_file_atomically;
use crate::io::FrameData;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::data::float::pretty_print_float;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::OnceLock;

/// Width of the picture (pixels).
pub const WIDTH: u32 = 1400;
/// Height of the picture (pixels).
pub const HEIGHT: u32 = 900;
/// The most fibers the picture shows.
pub const MAX_FIBERS: usize = 6;

/// DejaVu Sans (Bitstream Vera license, assets/DejaVu-LICENSE.txt).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

const GRID: RGBColor = RGBColor(228, 228, 228);
const TEXT: RGBColor = RGBColor(30, 30, 30);
/// Extracted flux.
const FLUX: RGBColor = RGBColor(31, 119, 180);
/// R·truth / dwave.
const MODEL: RGBColor = RGBColor(255, 127, 14);
const BAR: RGBColor = RGBColor(158, 202, 225);
const BAR_EDGE: RGBColor = RGBColor(49, 130, 189);
const GAUSS: RGBColor = RGBColor(214, 39, 40);

/// Left and right edges of the plotting areas (pixels).
const LEFT: i32 = 100;
const RIGHT: i32 = 1370;
/// Left edge of the vertical axis descriptions.
const Y_DESC_X: i32 = 14;
/// Top and bottom of the region of the spectrum panels.
const REGION_TOP: i32 = 62;
const REGION_BOTTOM: i32 = 588;
/// The histogram's plotting area.
const HIST_TOP: i32 = 652;
const HIST_BOTTOM: i32 = 852;
const HIST_RIGHT: i32 = 900;
/// Left edge of the summary box (right edge [`RIGHT`], same height as the histogram).
const BOX_LEFT: i32 = 950;

/// An RGB raster, row-major from the top-left corner, 3 bytes per pixel.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `height * width * 3` bytes.
    pub rgb: Vec<u8>,
}

impl Canvas {
    /// The colour at `(x, y)`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

/// Registers the bundled font as plotters' sans-serif family (once per process).
fn register_bundled_font() -> Result<(), QaError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED
        .get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT_BYTES).is_ok())
    {
        Ok(())
    } else {
        Err(QaError::Font("not a TrueType font".into()))
    }
}

/// The bundled font at `size` pixels in the text colour.
fn font(size: f64) -> TextStyle<'static> {
    (FontFamily::SansSerif, size).into_font().color(&TEXT)
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
    register_bundled_font()?;
    // White background: the buffer starts white.
    let mut rgb = vec![255u8; 3 * WIDTH as usize * HEIGHT as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let draw_err = |e: DrawingAreaErrorKind<_>| QaError::Draw(e.to_string());
        draw_header(&root, title).map_err(draw_err)?;
        let slot = (REGION_BOTTOM - REGION_TOP) / fibers.len() as i32;
        for (k, &fiber) in fibers.iter().enumerate() {
            let top = REGION_TOP + k as i32 * slot;
            draw_spectrum(&root, frame, model, fiber, top, slot - 46).map_err(draw_err)?;
        }
        root.draw(&Text::new(
            "wavelength [Å]",
            ((LEFT + RIGHT) / 2, REGION_BOTTOM + 4),
            font(14.0).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(draw_err)?;
        draw_histogram(&root, stats).map_err(draw_err)?;
        draw_summary(&root, frame, stats).map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(Canvas {
        width: WIDTH,
        height: HEIGHT,
        rgb,
    })
}

/// The result of the drawing functions.
type Drawn<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A chart with `f64` axes.
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Title and the legend of the spectrum panels.
fn draw_header<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str) -> Drawn<DB> {
    root.draw(&Text::new(
        format!("desi-extract qa: {title}"),
        (LEFT, 10),
        font(19.0),
    ))?;
    let legend_font = font(14.0).pos(Pos::new(HPos::Left, VPos::Center));
    let mut x = RIGHT;
    for (color, label) in [
        (MODEL, "R·truth / dwave (expected)"),
        (FLUX, "extracted flux"),
    ] {
        let (w, _) = root.estimate_text_size(label, &legend_font)?;
        x -= w as i32 + 12;
        root.draw(&Text::new(label, (x + 32, 20), legend_font.clone()))?;
        root.draw(&Rectangle::new([(x, 19), (x + 26, 22)], color.filled()))?;
        x -= 36;
    }
    Ok(())
}

/// Where a chart goes and what its axes say.
struct Layout<'s> {
    /// Top of the plotting area (pixels).
    top: i32,
    /// Height of the plotting area.
    height: i32,
    /// Right edge of the plotting area (the left one is [`LEFT`]).
    right: i32,
    /// Height of the tick labels and description below the plotting area.
    x_label_area: i32,
    /// About how many ticks along x and y.
    ticks: (usize, usize),
    /// Description of the x axis (below it), of the y axis (left, reading upwards).
    desc: (&'s str, &'s str),
}

/// A chart with `layout` and data ranges `x`, `y`: grid lines at the ticks, tick labels below
/// and left, the axis descriptions and a frame around the plotting area.
fn chart<'a, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    layout: &Layout,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    // The y description is drawn with its top at the area's left edge; ab_glyph text reaches
    // a few pixels beyond its box, hence the margin.
    let area = root.clone().shrink(
        (Y_DESC_X, layout.top),
        (layout.right - Y_DESC_X, layout.height + layout.x_label_area),
    );
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(layout.x_label_area)
        .y_label_area_size(LEFT - Y_DESC_X)
        .build_cartesian_2d(x, y)?;
    let label = |v: &f64| pretty_print_float(*v, false);
    chart
        .configure_mesh()
        .x_labels(layout.ticks.0)
        .y_labels(layout.ticks.1)
        .max_light_lines(0)
        .bold_line_style(GRID)
        .axis_style(BLACK)
        .label_style(font(13.0))
        .axis_desc_style(font(14.0))
        .x_label_formatter(&label)
        .y_label_formatter(&label)
        .x_desc(layout.desc.0)
        .y_desc(layout.desc.1)
        .draw()?;
    // The axes lie just left of and below the plotting area: the frame closes them.
    root.draw(&Rectangle::new(
        [
            (LEFT - 1, layout.top - 1),
            (layout.right, layout.top + layout.height),
        ],
        BLACK,
    ))?;
    Ok(chart)
}

/// Lines through consecutive points, broken where a point is `None`.
fn draw_polyline<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    points: impl Iterator<Item = Option<(f64, f64)>>,
    style: ShapeStyle,
) -> Drawn<DB> {
    let mut run = Vec::new();
    for p in points.chain(std::iter::once(None)) {
        match p {
            Some(p) => run.push(p),
            None if !run.is_empty() => {
                chart.draw_series(std::iter::once(PathElement::new(
                    std::mem::take(&mut run),
                    style,
                )))?;
            }
            None => {}
        }
    }
    Ok(())
}

/// The panel of spectrum `fiber`: plotting area `top..top + height`, its label above.
fn draw_spectrum<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    frame: &FrameData,
    model: &[f64],
    fiber: usize,
    top: i32,
    height: i32,
) -> Drawn<DB> {
    let s = fiber - frame.specmin;
    let row = s * frame.nwave..(s + 1) * frame.nwave;
    let (wave, flux, ivar, expected) = (
        &frame.wavelength,
        &frame.flux[row.clone()],
        &frame.ivar[row.clone()],
        &model[row],
    );
    let flux_at = |j: usize| (ivar[j] > 0.0 && flux[j].is_finite()).then_some(flux[j]);
    let model_at = |j: usize| expected[j].is_finite().then_some(expected[j]);
    let (lo, hi) = (0..frame.nwave)
        .flat_map(|j| [flux_at(j), model_at(j)])
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let (w0, w1) = (wave[0], wave[frame.nwave - 1]);
    let layout = Layout {
        top,
        height,
        right: RIGHT,
        x_label_area: 24,
        ticks: (16, 4),
        desc: ("", "electron / Å"),
    };
    let y = lo - 0.06 * span..hi + 0.06 * span;
    // Bold flux: two anti-aliased lines a pixel apart (plotters' wide lines are not).
    let pixel = (y.end - y.start) / height as f64;
    let mut chart = chart(root, &layout, w0.min(w1)..w0.max(w1), y)?;
    let (npix, mean, std) = fiber_pulls(frame, model, s);
    root.draw(&Text::new(
        format!("spectrum {fiber}   (pulls: N = {npix}, mean = {mean:+.3}, std = {std:.3})"),
        (LEFT, top - 3),
        font(14.0).pos(Pos::new(HPos::Left, VPos::Bottom)),
    ))?;
    for shift in [0.0, pixel] {
        draw_polyline(
            &mut chart,
            (0..frame.nwave).map(|j| flux_at(j).map(|f| (wave[j], f + shift))),
            FLUX.into(),
        )?;
    }
    draw_polyline(
        &mut chart,
        (0..frame.nwave).map(|j| model_at(j).map(|m| (wave[j], m))),
        MODEL.into(),
    )
}

/// The pull histogram (as a probability density) with the unit Gaussian.
fn draw_histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    stats: &PullStats,
) -> Drawn<DB> {
    let norm = 1.0 / (stats.n.max(1) as f64 * HIST_BIN);
    let gauss = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let peak = stats
        .histogram
        .iter()
        .map(|&(_, c)| c as f64 * norm)
        .fold(gauss(0.0), f64::max);
    let layout = Layout {
        top: HIST_TOP,
        height: HIST_BOTTOM - HIST_TOP,
        right: HIST_RIGHT,
        x_label_area: 44,
        ticks: (11, 5),
        desc: ("pull = (flux − R·truth / dwave) · √ivar", "density"),
    };
    let mut chart = chart(root, &layout, -HIST_RANGE..HIST_RANGE, 0.0..1.12 * peak)?;
    let bars = || {
        stats
            .histogram
            .iter()
            .filter(|&&(_, count)| count > 0)
            .map(|&(centre, count)| {
                [
                    (centre - HIST_BIN / 2.0, count as f64 * norm),
                    (centre + HIST_BIN / 2.0, 0.0),
                ]
            })
    };
    chart.draw_series(bars().map(|corners| Rectangle::new(corners, BAR.filled())))?;
    chart.draw_series(bars().map(|corners| Rectangle::new(corners, BAR_EDGE)))?;
    chart
        .draw_series(LineSeries::new(
            (0..=500).map(|i| {
                let x = -HIST_RANGE + 2.0 * HIST_RANGE * i as f64 / 500.0;
                (x, gauss(x))
            }),
            GAUSS.stroke_width(2),
        ))?
        .label("N(0, 1)")
        .legend(|(x, y)| Rectangle::new([(x, y - 1), (x + 26, y + 2)], GAUSS.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(TRANSPARENT)
        .label_font(font(14.0))
        .draw()?;
    for (i, line) in [
        format!("N = {}", stats.n),
        format!("mean = {:+.4}", stats.mean),
        format!("std = {:.4}", stats.std),
    ]
    .iter()
    .enumerate()
    {
        root.draw(&Text::new(
            line.as_str(),
            (LEFT + 10, HIST_TOP + 8 + 19 * i as i32),
            font(15.0),
        ))?;
    }
    Ok(())
}

/// The box with the pull statistics, right of the histogram.
fn draw_summary<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    frame: &FrameData,
    stats: &PullStats,
) -> Drawn<DB> {
    root.draw(&Rectangle::new(
        [(BOX_LEFT, HIST_TOP), (RIGHT, HIST_BOTTOM)],
        BLACK,
    ))?;
    let outside = stats.n as u64 - stats.histogram.iter().map(|&(_, c)| c).sum::<u64>();
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
        root.draw(&Text::new(
            line.as_str(),
            (BOX_LEFT + 14, HIST_TOP + 10 + 23 * i as i32),
            font(if i == 0 { 16.0 } else { 15.0 }),
        ))?;
    }
    Ok(())
}

/// Encodes `canvas` as an 8-bit RGB PNG and writes it to `path` atomically (a temporary file
/// beside it, renamed when complete; removed on failure).
pub fn write_png(canvas: &Canvas, path: &Path) -> Result<(), QaError> {
    write_file_atomically(path, |out| {
        let png_err = |source| QaError::Png {
            path: path.to_path_buf(),
            source,
        };
        let mut encoder = png::Encoder::new(out, canvas.width, canvas.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        // fdeflate: about 10x faster than the default (zlib) for a file twice as large
        // (~0.2 MB); the encoding dominated the `qa` command's time.
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().map_err(png_err)?;
        writer.write_image_data(&canvas.rgb).map_err(png_err)?;
        writer.finish().map_err(png_err)
    })
}
