//! The frame pipeline above the backend trait, with a backend that is not the CPU: results that
//! come back in runs of any length are stitched the same, patches the backend could not solve
//! are solved on the CPU path and reported (or fail the frame, as the caller chooses), and the
//! host's stamp corners are those of the full spot evaluation.

mod common;

use common::{extract_cpu_model, psf};
use desi_extract::extract::{
    assemble_frame, extract_bundles, extract_frame, ExtractError, Extraction,
};
use desi_extract::io::PreprocImage;
use desi_extract::job::{FallbackPolicy, FrameJob};
use desi_extract::patch::stitch::BAD2DFIT;
use desi_extract::patch::{ExtractionParams, PatchPlan, WavelengthGrid};
use desi_extract::psf::SpotTable;
use desi_extract::sim::{builtin_spectra, simulated_preproc};
use desi_extract::solve::{Backend, CpuBackend, FrameSolver, PatchIssue, PatchResult, SolveError};
use desi_extract::trace::Trace;
use std::collections::VecDeque;
use std::sync::Arc;

/// A backend that solves with the CPU solver but hands results back in runs of `run_len`
/// (across bundle boundaries) and fails the patches `fails` picks, as a device would.
struct Flaky {
    run_len: usize,
    fails: fn(&PatchPlan) -> bool,
}

struct FlakyFrame<'a> {
    inner: Box<dyn FrameSolver + 'a>,
    run_len: usize,
    fails: fn(&PatchPlan) -> bool,
    plans: Vec<PatchPlan>,
    ready: VecDeque<PatchResult>,
    handed: usize,
}

impl Backend for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }

    fn can_fall_back(&self) -> bool {
        true
    }

    fn begin_frame<'a>(
        &'a self,
        job: &FrameJob<'a>,
        trace: &'a Trace,
    ) -> Result<Box<dyn FrameSolver + 'a>, SolveError> {
        Ok(Box::new(FlakyFrame {
            inner: CpuBackend.begin_frame(job, trace)?,
            run_len: self.run_len,
            fails: self.fails,
            plans: Vec::new(),
            ready: VecDeque::new(),
            handed: 0,
        }))
    }
}

impl FrameSolver for FlakyFrame<'_> {
    fn spots(&self, ispec_min: usize, nspec: usize) -> Result<Arc<SpotTable>, SolveError> {
        self.inner.spots(ispec_min, nspec)
    }

    fn start(&mut self, plans: Vec<PatchPlan>, corners: &[&SpotTable]) -> Result<(), SolveError> {
        self.plans = plans.clone();
        self.inner.start(plans, corners)
    }

    fn next_results(&mut self) -> Result<Option<(usize, Vec<PatchResult>)>, SolveError> {
        while self.ready.len() < self.run_len {
            match self.inner.next_results()? {
                Some((_, run)) => self.ready.extend(run),
                None => break,
            }
        }
        if self.ready.is_empty() {
            return Ok(None);
        }
        let first = self.handed;
        let n = self.run_len.min(self.ready.len());
        let run: Vec<PatchResult> = self
            .ready
            .drain(..n)
            .zip(&self.plans[first..first + n])
            .map(|(result, plan)| {
                if (self.fails)(plan) {
                    PatchResult::zeros(
                        plan.nspp,
                        plan.keep,
                        5,
                        PatchIssue::Failed {
                            reason: "device status 7".into(),
                        },
                    )
                } else {
                    result
                }
            })
            .collect();
        self.handed += n;
        Ok(Some((first, run)))
    }
}

/// Two bundles (fibers 25..75) over 6500-6600 A: 15 patches per bundle.
fn frame() -> (
    desi_extract::psf::GaussHermitePsf,
    PreprocImage,
    WavelengthGrid,
    ExtractionParams,
) {
    let psf = psf();
    let grid = WavelengthGrid::arange(6500.0, 6600.0, 0.8).unwrap();
    let truth = builtin_spectra(25, 50, &grid.wave);
    let preproc = simulated_preproc(&psf, &truth, 3.0, 5, false, "r0").unwrap();
    let params = ExtractionParams {
        specmin: 25,
        nspec: 50,
        psferr: psf.psferr,
        ..ExtractionParams::default()
    };
    (psf, preproc, grid, params)
}

fn assert_same_arrays(a: &Extraction, b: &Extraction) {
    assert_eq!(a.arrays.flux, b.arrays.flux);
    assert_eq!(a.arrays.ivar, b.arrays.ivar);
    assert_eq!(a.arrays.rdiags, b.arrays.rdiags);
    assert_eq!(a.arrays.chi2pix, b.arrays.chi2pix);
    assert_eq!(a.arrays.pixmask_fraction, b.arrays.pixmask_fraction);
    assert_eq!(a.mask, b.mask);
    assert_eq!(a.model, b.model);
}

#[test]
fn runs_of_any_length_stitch_to_the_cpu_frame() {
    let (psf, preproc, grid, params) = frame();
    let cpu = extract_cpu_model(&psf, &preproc, &grid, &params, true);
    assert!(cpu.reports.is_empty(), "{:?}", cpu.reports);
    let job = FrameJob::new(&psf, &preproc, &grid, &params)
        .unwrap()
        .with_model(true);
    for run_len in [1, 7, 16, 1000] {
        let backend = Flaky {
            run_len,
            fails: |_| false,
        };
        let ex = extract_frame(&job, &backend, &|_, _| {}, &Trace::new()).unwrap();
        assert_same_arrays(&ex, &cpu);
        assert!(ex.reports.is_empty());
        assert_eq!(ex.npatch, cpu.npatch);
    }
}

/// Patch 3 of every bundle and the last patch of bundle 1 fail on the "device".
fn some_fail(plan: &PatchPlan) -> bool {
    plan.patch == 3 || (plan.bundle == 1 && plan.patch == 14)
}

#[test]
fn failed_patches_fall_back_to_the_cpu_and_are_reported() {
    let (psf, preproc, grid, params) = frame();
    let cpu = extract_cpu_model(&psf, &preproc, &grid, &params, false);
    let job = FrameJob::new(&psf, &preproc, &grid, &params).unwrap();
    let backend = Flaky {
        run_len: 9,
        fails: some_fail,
    };
    let ex = extract_frame(&job, &backend, &|_, _| {}, &Trace::new()).unwrap();
    assert_same_arrays(&ex, &cpu);
    let reported: Vec<(usize, usize)> = ex
        .reports
        .iter()
        .map(|r| (r.site.bundle, r.site.patch))
        .collect();
    assert_eq!(reported, [(0, 3), (1, 3), (1, 14)]);
    for report in &ex.reports {
        assert_eq!(
            report.issue,
            PatchIssue::CpuFallback {
                reason: "device status 7".into()
            }
        );
    }
}

#[test]
fn the_fail_policy_fails_the_frame_naming_the_patch() {
    let (psf, preproc, grid, params) = frame();
    let job = FrameJob::new(&psf, &preproc, &grid, &params)
        .unwrap()
        .with_fallback(FallbackPolicy::Fail);
    let backend = Flaky {
        run_len: 4,
        fails: some_fail,
    };
    let err = extract_frame(&job, &backend, &|_, _| {}, &Trace::new()).unwrap_err();
    match &err {
        ExtractError::PatchFailed {
            backend,
            bundle,
            patch,
            reason,
            ..
        } => {
            assert_eq!((*backend, *bundle, *patch), ("flaky", 0, 3));
            assert_eq!(reason, "device status 7");
        }
        other => panic!("expected PatchFailed, got {other:?}"),
    }
    assert!(!err.is_input_error());
    assert!(err.to_string().contains("bundle 0 patch 3"), "{err}");
}

#[test]
fn host_corners_are_the_corners_of_the_full_spots() {
    let psf = psf();
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).unwrap();
    let waves: Vec<f64> = grid.wave.iter().step_by(7).copied().collect();
    for first in [0, 240, 475] {
        let corners = psf.corners(first, 25, &waves).unwrap();
        let spots = psf.spots(first, 25, &waves).unwrap();
        assert!(corners.stamps.is_empty());
        assert_eq!(
            corners.corners,
            spots.corners,
            "fibers {first}..{}",
            first + 25
        );
        assert_eq!(
            (corners.nspec, corners.nwave, corners.ny, corners.nx),
            (spots.nspec, spots.nwave, spots.ny, spots.nx)
        );
    }
    assert!(psf.corners(490, 25, &waves).is_err());
}

/// Adds a bright pixel at the centre of fiber `ispec`'s spot at each of `waves` (a cosmic-ray
/// hit the extraction does not model: its bins' chi2pix far above the medians).
fn hit_spots(
    psf: &desi_extract::psf::GaussHermitePsf,
    preproc: &mut PreprocImage,
    ispec: usize,
    waves: &[f64],
) {
    let corners = psf.corners(ispec, 1, waves).unwrap();
    for k in 0..waves.len() {
        let c = corners.corner(0, k);
        let (row, col) = (c.yc as usize + psf.hsizey, c.xc as usize + psf.hsizex);
        preproc.image[row * preproc.nx + col] += 5000.0;
    }
}

#[test]
fn frame_rows_and_assembled_blocks_are_bitwise_equal() {
    let (psf, mut preproc, grid, params) = frame();
    // Hits on a few spectra, so that the MASK compared below has BAD2DFIT bins (its chi2pix
    // medians per fiber and per wavelength are gathered differently on the two paths).
    for ispec in [30, 52, 60] {
        hit_spots(&psf, &mut preproc, ispec, &[6520.0, 6551.2, 6580.0]);
    }
    let job = FrameJob::new(&psf, &preproc, &grid, &params)
        .unwrap()
        .with_model(true);
    let direct = extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new()).unwrap();
    // Blocks in the order a two-rank run would gather them, bundle 1 first.
    let mut blocks = Vec::new();
    for bundle in [1, 0] {
        let set = extract_bundles(&job, &CpuBackend, &[bundle], &|_, _| {}, &Trace::new()).unwrap();
        blocks.extend(set.blocks);
    }
    let shape = Some((preproc.ny, preproc.nx));
    let assembled = assemble_frame(&grid, &params, psf.hsizey, blocks, shape).unwrap();
    let bad2dfit = direct.mask.iter().filter(|&&m| m & BAD2DFIT != 0).count();
    assert!(bad2dfit > 0, "the hits flag no bin");
    assert_same_arrays(&direct, &assembled);
    assert_eq!(direct.reports, assembled.reports);
    assert_eq!(direct.npatch, assembled.npatch);
}
