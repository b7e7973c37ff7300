//! Pixels already in device memory (`FrameJob::with_device_pixels`, the Python binding's CuPy
//! input), everything that runs without a GPU: the device twin of the pixel rule bitwise
//! against the host rule (and against the rule as it was written before it moved to the device
//! crate), the input check against the preproc reader's, the request's checks, the CPU
//! backend's refusal, and the CPU fallback of a device-pixel job, which takes its CCD from the
//! solver (`FrameSolver::host_ccd`). The kernel itself runs in tests/python/gpu_check.py.

mod common;

use common::{bundle_params, psf};
use desi_device::pixel::{screen_device_pixel, valid_input_pixel, Pixel};
use desi_extract::extract::{
    extract_frame, CcdData, ExtractError, Extraction, PixelLimits, EXTRACT_MASK_BITS,
};
use desi_extract::io::PreprocImage;
use desi_extract::job::{DevicePixels, DevicePlane, FrameJob, PixelType};
use desi_extract::patch::{PatchPlan, WavelengthGrid};
use desi_extract::psf::{GaussHermitePsf, SpotTable};
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::solve::{Backend, CpuBackend, FrameSolver, PatchIssue, PatchResult, SolveError};
use desi_extract::trace::Trace;
use std::sync::Arc;

/// The rule exactly as host/extract/screen.rs wrote it before it moved to `desi_device::pixel`
/// (the reference the shared function must reproduce bit for bit).
fn rule_as_it_was(limits: &PixelLimits, value: f32, ivar: f32, mask: i32) -> (Pixel, (f32, f32)) {
    let class = if mask & 0x2FF != 0 || ivar <= 0.0 {
        Pixel::Masked
    } else if !value.is_finite() || !ivar.is_finite() {
        Pixel::NonFinite
    } else if f64::from(value.abs()) > limits.max_abs_value {
        Pixel::AbsurdValue
    } else if f64::from(ivar) > limits.max_ivar {
        Pixel::AbsurdIvar
    } else {
        Pixel::Used
    };
    let pixel = match class {
        Pixel::Used => (value, ivar),
        _ => (0.0, 0.0),
    };
    (class, pixel)
}

/// The binding's check of host arrays (python/src/lib.rs `check_pixels`, the preproc
/// reader's rule): IVAR finite and >= 0, IMAGE finite where IVAR > 0.
fn binding_accepts(value: f32, ivar: f32) -> bool {
    (0.0..f32::INFINITY).contains(&ivar) && !(ivar > 0.0 && !value.is_finite())
}

/// Edge values of an f32 pixel value or inverse variance.
fn edge_values(limits: &PixelLimits) -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1), // smallest subnormal
        -f32::from_bits(1),
        1.0,
        -1.0,
        0.1,
        5.0,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7fc0_1234), // NaN with a payload
        f32::from_bits(0xffa0_0001), // signalling negative NaN
    ];
    for bound in [limits.max_abs_value, limits.max_ivar] {
        let b = bound as f32;
        for x in [
            b,
            f32::from_bits(b.to_bits() - 1),
            f32::from_bits(b.to_bits() + 1),
        ] {
            v.extend([x, -x]);
        }
    }
    v
}

#[test]
fn the_device_rule_is_bitwise_the_host_rule() {
    let limits = [
        PixelLimits::default(),
        PixelLimits {
            max_abs_value: 1e5,
            max_ivar: 3.0,
        },
        PixelLimits::UNLIMITED,
    ];
    let masks = [
        0,
        1 << 8,
        EXTRACT_MASK_BITS,
        1,
        1 << 9,
        1 << 10,
        1 << 15,
        -1,
    ];
    let mut cases = 0;
    for l in &limits {
        let values = edge_values(l);
        for &value in &values {
            for &ivar in &values {
                for &mask in &masks {
                    let (class, expected) = rule_as_it_was(l, value, ivar, mask);
                    assert_eq!(
                        l.classify(value, ivar, mask),
                        class,
                        "{value} {ivar} {mask}"
                    );
                    let got = l.pixel(value, ivar, mask);
                    assert_eq!(
                        (got.0.to_bits(), got.1.to_bits()),
                        (expected.0.to_bits(), expected.1.to_bits()),
                        "pixel({value}, {ivar}, {mask:#x}) with {l:?}"
                    );
                    cases += 1;
                }
                // The kernel's per-pixel function (no mask: the ivar carries it) is the host
                // rule widened to f64, and its input check is the binding's.
                let (v64, w64, valid) =
                    screen_device_pixel(value, ivar, l.max_abs_value, l.max_ivar);
                let (v32, w32) = l.pixel(value, ivar, 0);
                assert_eq!(
                    (v64.to_bits(), w64.to_bits()),
                    (f64::from(v32).to_bits(), f64::from(w32).to_bits()),
                    "screen_device_pixel({value}, {ivar}) with {l:?}"
                );
                assert_eq!(valid, binding_accepts(value, ivar), "{value} {ivar}");
                assert_eq!(valid_input_pixel(value, ivar), valid);
            }
        }
    }
    assert!(cases > 10_000, "{cases} cases");
}

/// f64 input is rounded to f32 before the rule, as numpy's `astype(float32)` rounds (to
/// nearest, ties to even): the device path then equals the host path.
#[test]
fn f64_input_rounds_to_nearest_f32() {
    let one_plus_half_ulp = 1.0 + f64::from(f32::EPSILON) / 2.0; // a tie: to even (1.0)
    assert_eq!(one_plus_half_ulp as f32, 1.0);
    let three_halves_ulp = 1.0 + 1.5 * f64::from(f32::EPSILON); // tie: to even (1 + 2 ulp)
    assert_eq!(three_halves_ulp as f32, 1.0 + 2.0 * f32::EPSILON);
    assert_eq!(1e300_f64 as f32, f32::INFINITY);
    assert!(!valid_input_pixel(0.0, 1e300_f64 as f32));
}

/// 6000-6100 A.
fn grid() -> WavelengthGrid {
    WavelengthGrid::arange(6000.0, 6100.0, 0.8).unwrap()
}

/// A noisy simulated bundle 0.
fn preproc(psf: &GaussHermitePsf) -> PreprocImage {
    let truth = builtin_spectra(0, 25, &grid().wave);
    simulated_preproc(psf, &truth, 3.0, 7, false, "r0").unwrap()
}

/// The same image without its pixels, as the binding holds it for device input.
fn shape_only(image: &PreprocImage) -> PreprocImage {
    PreprocImage {
        image: Vec::new(),
        ivar: Vec::new(),
        mask: Vec::new(),
        ..image.clone()
    }
}

/// Device pixels at made-up addresses (never dereferenced by these tests).
fn fake_device_pixels(
    nx: usize,
    address: u64,
    dtype: PixelType,
    row_stride: usize,
) -> DevicePixels {
    let plane = |offset: u64| DevicePlane {
        address: address + offset,
        dtype,
        row_stride,
    };
    // SAFETY: no backend that reads device memory runs these pixels (CPU backend and the fake
    // backend below only).
    unsafe { DevicePixels::new(plane(0), plane((nx * 4096) as u64), None) }
}

#[test]
fn the_request_checks_device_planes() {
    let psf = psf();
    let image = shape_only(&preproc(&psf));
    let (grid, params) = (grid(), bundle_params());
    let job = FrameJob::new(&psf, &image, &grid, &params).unwrap();
    let nx = image.nx;
    let ok = fake_device_pixels(nx, 1 << 40, PixelType::F32, 4 * nx);
    assert!(job.with_device_pixels(ok).is_ok());
    let padded = fake_device_pixels(nx, 1 << 40, PixelType::F64, 8 * (nx + 3));
    assert!(job.with_device_pixels(padded).is_ok());
    for (pixels, expected) in [
        (fake_device_pixels(nx, 0, PixelType::F32, 4 * nx), "null"),
        (
            fake_device_pixels(nx, (1 << 40) + 2, PixelType::F32, 4 * nx),
            "aligned",
        ),
        (
            fake_device_pixels(nx, 1 << 40, PixelType::F64, 8 * nx - 8),
            "row stride",
        ),
        (
            fake_device_pixels(nx, 1 << 40, PixelType::F64, 8 * nx + 4),
            "row stride",
        ),
    ] {
        let err = job.with_device_pixels(pixels).unwrap_err();
        assert!(err.is_input_error(), "{err}");
        let text = err.to_string();
        assert!(text.contains(expected), "{text}");
        assert!(text.contains(&image.path.display().to_string()), "{text}");
    }
}

#[test]
fn the_cpu_backend_refuses_device_pixels() {
    let psf = psf();
    let image = shape_only(&preproc(&psf));
    let (grid, params) = (grid(), bundle_params());
    let pixels = fake_device_pixels(image.nx, 1 << 40, PixelType::F32, 4 * image.nx);
    let job = FrameJob::new(&psf, &image, &grid, &params)
        .unwrap()
        .with_device_pixels(pixels)
        .unwrap();
    let err = extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new()).unwrap_err();
    assert!(
        matches!(
            err,
            ExtractError::Solve(SolveError::Unavailable { backend: "cpu", .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("GPU memory"), "{err}");
}

/// A backend that solves nothing (every patch comes back failed, as a GPU's could) and holds
/// the screened CCD of `ccd`, as the GPU backend holds it for device pixels.
struct FailingBackend {
    ccd: Option<CcdData>,
}

struct FailingFrame<'a> {
    backend: &'a FailingBackend,
    ndiag: usize,
    plans: Vec<PatchPlan>,
    done: bool,
}

impl Backend for FailingBackend {
    fn name(&self) -> &'static str {
        "failing"
    }

    fn can_fall_back(&self) -> bool {
        true
    }

    fn begin_frame<'a>(
        &'a self,
        job: &FrameJob<'a>,
        _trace: &'a Trace,
    ) -> Result<Box<dyn FrameSolver + 'a>, SolveError> {
        Ok(Box::new(FailingFrame {
            backend: self,
            ndiag: job.ndiag(),
            plans: Vec::new(),
            done: false,
        }))
    }
}

impl FrameSolver for FailingFrame<'_> {
    fn spots(&self, _ispec_min: usize, _nspec: usize) -> Result<Arc<SpotTable>, SolveError> {
        Err(SolveError::Failed {
            backend: "failing",
            reason: "no spots".into(),
        })
    }

    fn start(&mut self, plans: Vec<PatchPlan>, _corners: &[&SpotTable]) -> Result<(), SolveError> {
        self.plans = plans;
        Ok(())
    }

    fn next_results(&mut self) -> Result<Option<(usize, Vec<PatchResult>)>, SolveError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(None);
        }
        let failed = |p: &PatchPlan| {
            let issue = PatchIssue::Failed {
                reason: "device says no".into(),
            };
            PatchResult::zeros(p.nspp, p.keep, self.ndiag, issue)
        };
        Ok(Some((0, self.plans.iter().map(failed).collect())))
    }

    fn host_ccd(&self) -> Result<Option<CcdData>, SolveError> {
        Ok(self.backend.ccd.clone())
    }
}

/// Bitwise equality of the outputs of two extractions.
fn assert_same(a: &Extraction, b: &Extraction) {
    let (x, y) = (&a.arrays, &b.arrays);
    for (name, p, q) in [
        ("flux", &x.flux, &y.flux),
        ("ivar", &x.ivar, &y.ivar),
        ("rdiags", &x.rdiags, &y.rdiags),
        ("chi2pix", &x.chi2pix, &y.chi2pix),
    ] {
        assert_eq!(p.len(), q.len(), "{name}");
        if let Some(i) = (0..p.len()).find(|&i| p[i].to_bits() != q[i].to_bits()) {
            panic!("{name}[{i}]: {} != {}", p[i], q[i]);
        }
    }
    assert_eq!(a.mask, b.mask);
}

#[test]
fn the_fallback_of_device_pixels_reads_the_solvers_ccd() {
    let psf = psf();
    let full = preproc(&psf);
    let image = shape_only(&full);
    let (grid, params) = (grid(), bundle_params());
    let cpu_job = FrameJob::new(&psf, &full, &grid, &params).unwrap();
    let cpu = extract_frame(&cpu_job, &CpuBackend, &|_, _| {}, &Trace::new()).unwrap();

    let pixels = fake_device_pixels(image.nx, 1 << 40, PixelType::F32, 4 * image.nx);
    let job = FrameJob::new(&psf, &image, &grid, &params)
        .unwrap()
        .with_device_pixels(pixels)
        .unwrap();
    // Every patch falls back to the CPU, on the CCD the backend screened: the CPU's frame.
    let backend = FailingBackend {
        ccd: Some(CcdData::from_preproc_rows(
            &full,
            0..full.ny,
            &cpu_job.pixel_limits,
        )),
    };
    let ex = extract_frame(&job, &backend, &|_, _| {}, &Trace::new()).unwrap();
    assert_same(&ex, &cpu);
    assert_eq!(ex.reports.len(), ex.npatch, "every patch reported");
    assert!(ex.reports.iter().all(
        |r| matches!(&r.issue, PatchIssue::CpuFallback { reason } if reason == "device says no")
    ));

    // A solver without a host copy: a clear failure, never a read of absent host pixels.
    let err = extract_frame(
        &job,
        &FailingBackend { ccd: None },
        &|_, _| {},
        &Trace::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("device memory"), "{err}");
    assert!(!err.is_input_error());
}
