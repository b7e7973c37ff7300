//! The backend side of the outlier rejection (docs/algorithm.md §4.11): the claim that makes
//! a frame-wide mask right (no two bundles' windows share a CCD column), the outlier test of
//! the GPU's `reject_scan` kernel emulated on the host (the same device functions, the
//! kernel's row-by-row data path) against the CPU backend's detection, and the CPU backend's
//! `FrameSolver` entries (re-solve, per-bin counts) against independent recomputations.

mod common;

use common::psf;
use desi_device::patch::pixel_chi2_row;
use desi_device::patch::reject::{hit_words, row_core_columns, row_outliers, CoreUnknowns};
use desi_device::Status;
use desi_extract::extract::{
    check_disjoint, extract_frame, shared_windows, CcdData, RejectConfig, BIN_PIXEL_WEIGHT,
};
use desi_extract::io::PreprocImage;
use desi_extract::job::FrameJob;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PatchPlan, WavelengthGrid};
use desi_extract::psf::{GaussHermitePsf, SpotTable};
use desi_extract::sim::cosmics::deposit;
use desi_extract::sim::cosmics::CosmicConfig;
use desi_extract::sim::{
    builtin_spectra, simulated_preproc, simulated_preproc_with, SimExtras, Track,
};
use desi_extract::solve::cpu::solve_patch_with_xflux;
use desi_extract::solve::outliers::{detect, outliers_from_rows};
use desi_extract::solve::{
    Backend, BundleInputs, CpuBackend, FrameSolver, PatchResult, SolveError,
};
use desi_extract::trace::Trace;
use std::sync::Arc;

fn grid() -> WavelengthGrid {
    WavelengthGrid::arange(6000.0, 6200.0, 0.8).unwrap()
}

fn params() -> ExtractionParams {
    ExtractionParams {
        nspec: 25,
        ..ExtractionParams::default()
    }
}

/// Every bundle's plans of `params` on `psf` (the pipeline's planning).
fn all_plans(
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    grid: &WavelengthGrid,
    params: &ExtractionParams,
) -> Vec<(SpotTable, Vec<PatchPlan>)> {
    let job = FrameJob::new(psf, image, grid, params).unwrap();
    let padded = job.padded_grid();
    job.bundle_starts()
        .iter()
        .enumerate()
        .map(|(b, &start)| {
            let corners = psf
                .corners(start, params.bundlesize, &padded.fullwave)
                .unwrap();
            let plans = plan_bundle(b, &corners, params, padded.grid.nwave(), image.ny);
            (corners, plans)
        })
        .collect()
}

/// A 25-fiber frame with a 600 e⁻/pixel track along fiber 12 over bins 100..140.
fn cosmic_frame(psf: &GaussHermitePsf) -> PreprocImage {
    let grid = grid();
    let truth = builtin_spectra(0, 25, &grid.wave);
    let mut image = simulated_preproc(psf, &truth, 3.0, 5, false, "r0").unwrap();
    let spots = psf.spots(0, 25, &grid.wave).unwrap();
    let centre = |k: usize| {
        let c = spots.corner(12, k);
        (
            c.yc as f64 + spots.ny as f64 / 2.0,
            c.xc as f64 + spots.nx as f64 / 2.0,
        )
    };
    let ((r0, c0), (r1, c1)) = (centre(100), centre(140));
    for h in deposit(
        &[Track::straight(r0, c0, r1, c1, 600.0)],
        psf.npix_y,
        psf.npix_x,
    ) {
        image.image[h.pixel] += h.electrons as f32;
    }
    image
}

#[test]
fn only_neighbouring_bundles_share_pixels_on_a_full_frame() {
    let psf = psf();
    // Planning needs the image's shape only.
    let image = cosmic_frame(&psf);
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).unwrap();
    let params = ExtractionParams {
        nspec: psf.nspec,
        ..ExtractionParams::default()
    };
    let bundles = all_plans(&psf, &image, &grid, &params);
    assert_eq!(bundles.len(), psf.nspec / params.bundlesize);
    let sets: Vec<&[PatchPlan]> = bundles.iter().map(|(_, p)| p.as_slice()).collect();
    // The GPU's re-solves mask the even and the odd bundles in one copy of the weights each:
    // no two bundles of a class share a pixel.
    for parity in 0..2 {
        let class: Vec<&[PatchPlan]> = sets.iter().skip(parity).step_by(2).copied().collect();
        check_disjoint(&class).unwrap();
    }
    // Neighbours do (the edge columns of their windows, where the traces curve): the masks
    // must be each bundle's own, and the check is not vacuous.
    let shared = (0..sets.len() - 1)
        .filter(|&b| check_disjoint(&sets[b..b + 2]).is_err())
        .count();
    assert!(shared > 0, "no neighbouring bundles share a pixel");
    let err = check_disjoint(&sets).unwrap_err();
    assert!(err.contains("share CCD pixels"), "{err}");
    // The shared rectangles (where the GPU needs its two classes) are exactly the pixels in
    // windows of two bundles, by brute force over the columns where bundles 1 and 2 meet.
    let shared = shared_windows(&sets);
    assert!(!shared.is_empty());
    let span = |plans: &[PatchPlan]| {
        let ws: Vec<_> = plans.iter().filter_map(|p| p.window).collect();
        (
            ws.iter().map(|w| w.col_min).min().unwrap(),
            ws.iter().map(|w| w.col_max).max().unwrap(),
        )
    };
    let (lo, hi) = (span(sets[2]).0, span(sets[1]).1);
    assert!(lo < hi);
    let inside = |w: desi_extract::patch::PixelWindow, row: i32, col: i32| {
        (w.row_min..w.row_max).contains(&row) && (w.col_min..w.col_max).contains(&col)
    };
    let mut in_two = 0;
    for col in lo..hi {
        for row in 0..image.ny as i32 {
            let owners = sets
                .iter()
                .filter(|plans| {
                    plans
                        .iter()
                        .filter_map(|p| p.window)
                        .any(|w| inside(w, row, col))
                })
                .count();
            let in_shared = shared.iter().any(|&w| inside(w, row, col));
            assert_eq!(owners >= 2, in_shared, "pixel ({row}, {col})");
            in_two += usize::from(owners >= 2);
        }
    }
    assert!(in_two > 0);
}

/// The CPU backend's results of the frame's one bundle, with the rejection's test on.
fn cpu_first_pass<'a>(
    job: &FrameJob<'a>,
    corners: &SpotTable,
    plans: &[PatchPlan],
) -> (
    Box<dyn desi_extract::solve::FrameSolver + 'a>,
    Vec<PatchResult>,
) {
    let trace = Box::leak(Box::new(Trace::new()));
    let mut solver = CpuBackend.begin_frame(job, trace).unwrap();
    let solvable: Vec<PatchPlan> = plans
        .iter()
        .filter(|p| p.window.is_some())
        .cloned()
        .collect();
    solver.start(solvable, &[corners]).unwrap();
    let mut results = Vec::new();
    while let Some((_, run)) = solver.next_results().unwrap() {
        results.extend(run);
    }
    (solver, results)
}

#[test]
fn the_gpu_scan_path_finds_what_the_cpu_detection_finds() {
    let psf = psf();
    let image = cosmic_frame(&psf);
    let (grid, params) = (grid(), params());
    let cfg = RejectConfig::default();
    let threshold = cfg.nsigma * cfg.nsigma;
    let job = FrameJob::new(&psf, &image, &grid, &params)
        .unwrap()
        .with_reject(Some(cfg));
    let bundles = all_plans(&psf, &image, &grid, &params);
    let (corners, plans) = &bundles[0];
    let (solver, results) = cpu_first_pass(&job, corners, plans);
    let spots = solver.spots(0, params.bundlesize).unwrap();
    let ccd = CcdData::from_preproc_rows(&image, 0..image.ny, &job.pixel_limits);
    let inputs = BundleInputs {
        spots: &spots,
        plans,
        ccd: ccd.view(),
        params: &params,
        ndiag: job.ndiag(),
    };
    let pad = params.pad();
    let (mut patches_with_hits, mut total_hits) = (0, 0);
    let solvable = plans.iter().filter(|p| p.window.is_some());
    for (plan, result) in solvable.zip(&results) {
        let (solved, xflux) = solve_patch_with_xflux(&inputs, plan, true);
        let xflux = xflux.expect("a solved patch");
        assert_eq!(solved.flux, result.flux, "patch {}", plan.patch);
        let cpu = detect(&inputs, plan, &xflux, threshold).unwrap();
        // The backend's first pass carries the same test.
        assert_eq!(result.outliers.as_ref(), Some(&cpu), "patch {}", plan.patch);
        // The GPU's path: every window row's χ²_pix (pixel_rows), the row's hit mask and
        // count (reject_scan: row_outliers), copied back and decoded.
        let w = plan.window.unwrap();
        let shape = plan.shape(params.nwavetot()).unwrap();
        let view = plan.stamp_view(&spots, pad);
        let (width, height) = (
            (w.col_max - w.col_min) as usize,
            (w.row_max - w.row_min) as usize,
        );
        let words = hit_words(width) + 1; // a stride wider than the window, as in a batch
        let mut hits = vec![0u32; height * words];
        let mut weighted = vec![0u32; height];
        let core = CoreUnknowns {
            s_core: plan.ispec - plan.s0,
            nspp: plan.nspp,
            pad,
            keep: plan.keep,
        };
        let mut chi2 = vec![0.0; width];
        for r in 0..height {
            let status = pixel_chi2_row(
                &view,
                &ccd.view(),
                &shape,
                w.col_min,
                w.col_max,
                &xflux,
                params.psferr,
                r,
                &mut chi2,
            );
            assert_eq!(status, Status::Ok);
            let pix = (w.row_min as usize + r) * ccd.ncol + w.col_min as usize;
            weighted[r] = row_outliers(
                &view,
                &shape,
                w.col_min,
                w.col_max,
                core,
                r,
                &chi2,
                &ccd.weight[pix..pix + width],
                threshold,
                &mut hits[r * words..(r + 1) * words],
            )
            .unwrap();
            // The tested columns, by brute force: inside the stamp of a core unknown.
            let mut eligible = vec![0u32; words];
            row_core_columns(&view, &shape, w.col_min, w.col_max, core, r, &mut eligible).unwrap();
            let y = w.row_min + r as i32;
            for c in 0..width {
                let x = w.col_min + c as i32;
                let inside = (core.s_core..core.s_core + core.nspp).any(|s| {
                    (pad..pad + plan.keep).any(|k| {
                        let cn = view.corner(s, k);
                        y >= cn.yc
                            && y < cn.yc + view.ny as i32
                            && x >= cn.xc
                            && x < cn.xc + view.nx as i32
                    })
                });
                assert_eq!(
                    eligible[c / 32] >> (c % 32) & 1 == 1,
                    inside,
                    "row {r} col {c}"
                );
            }
        }
        let gpu = outliers_from_rows(&hits, &weighted, words, width, height);
        assert_eq!(gpu, cpu, "patch {}", plan.patch);
        assert!(cpu.weighted > 0);
        if !cpu.hits.is_empty() {
            patches_with_hits += 1;
            total_hits += cpu.hits.len();
        }
    }
    // The track is found (the comparison above is not vacuous).
    assert!(
        patches_with_hits >= 1 && total_hits >= 40,
        "{patches_with_hits} patches, {total_hits} hits"
    );
}

#[test]
fn cpu_entries_resolve_and_count_as_independent_recomputations_say() {
    let psf = psf();
    let image = cosmic_frame(&psf);
    let (grid, params) = (grid(), params());
    let job = FrameJob::new(&psf, &image, &grid, &params)
        .unwrap()
        .with_reject(Some(RejectConfig::default()));
    let bundles = all_plans(&psf, &image, &grid, &params);
    let (corners, plans) = &bundles[0];
    let (mut solver, results) = cpu_first_pass(&job, corners, plans);
    let solvable: Vec<PatchPlan> = plans
        .iter()
        .filter(|p| p.window.is_some())
        .cloned()
        .collect();
    // With an empty mask the re-solve is the first solve, bit for bit.
    let none: Vec<&[u64]> = solvable.iter().map(|_| &[][..]).collect();
    let again = solver.resolve(&solvable, &none).unwrap();
    assert_eq!(again, results);
    // The patch with the most outliers, solved without them: none of them is found again
    // (their weight is 0), and the flux changes.
    let (i, worst) = results
        .iter()
        .enumerate()
        .max_by_key(|(_, r)| r.outliers.as_ref().map_or(0, |o| o.hits.len()))
        .unwrap();
    let plan = &solvable[i];
    let w = plan.window.unwrap();
    let width = (w.col_max - w.col_min) as usize;
    let ncol = image.nx;
    let mut mask: Vec<u64> = worst
        .outliers
        .as_ref()
        .unwrap()
        .hits
        .iter()
        .map(|&h| {
            let (r, c) = (h as usize / width, h as usize % width);
            ((w.row_min as usize + r) * ncol + w.col_min as usize + c) as u64
        })
        .collect();
    mask.sort_unstable();
    assert!(mask.len() >= 10, "{} outliers", mask.len());
    let masked = solver
        .resolve(std::slice::from_ref(plan), &[&mask])
        .unwrap()
        .remove(0);
    assert!(masked.issue.is_none());
    assert_ne!(masked.flux, worst.flux);
    let found_again: Vec<u32> = masked.outliers.unwrap().hits;
    for &h in &worst.outliers.as_ref().unwrap().hits {
        assert!(!found_again.contains(&h), "masked pixel {h} found again");
    }
    // The per-bin counts against a recomputation from the spots.
    let counts = solver
        .rejected_bin_counts(&[(plan.clone(), mask.clone())])
        .unwrap()
        .remove(0);
    let spots = solver.spots(0, params.bundlesize).unwrap();
    let pad = params.pad();
    let view = plan.stamp_view(&spots, pad);
    let mut expected = vec![0u16; plan.nspp * plan.keep];
    for c in 0..plan.nspp {
        for j in 0..plan.keep {
            let (s, k) = (plan.ispec - plan.s0 + c, pad + j);
            let corner = view.corner(s, k);
            let stamp = view.stamp(s, k);
            let mut in_window = Vec::new();
            for y in 0..view.ny {
                for x in 0..view.nx {
                    let (row, col) = (corner.yc + y as i32, corner.xc + x as i32);
                    if (w.row_min..w.row_max).contains(&row)
                        && (w.col_min..w.col_max).contains(&col)
                    {
                        let p = (row as usize * ncol + col as usize) as u64;
                        in_window.push((p, stamp[y * view.nx + x]));
                    }
                }
            }
            let total: f64 = in_window.iter().map(|(_, v)| v).sum();
            expected[c * plan.keep + j] = in_window
                .iter()
                .filter(|(p, v)| mask.contains(p) && *v >= BIN_PIXEL_WEIGHT * total)
                .count() as u16;
        }
    }
    assert_eq!(counts, expected);
    assert!(counts.iter().any(|&n| n > 0));
}

/// The CPU backend, all of a frame's patches returned in one run: the frame pipeline then
/// rejects every bundle together (as it does with the GPU's large batches), where the CPU
/// backend's runs make it reject one bundle at a time.
struct Grouped;

static CPU: CpuBackend = CpuBackend;

impl Backend for Grouped {
    fn name(&self) -> &'static str {
        "grouped-cpu"
    }

    fn can_fall_back(&self) -> bool {
        false
    }

    fn begin_frame<'a>(
        &'a self,
        job: &FrameJob<'a>,
        trace: &'a Trace,
    ) -> Result<Box<dyn FrameSolver + 'a>, SolveError> {
        Ok(Box::new(GroupedFrame {
            inner: CPU.begin_frame(job, trace)?,
            done: false,
        }))
    }
}

struct GroupedFrame<'a> {
    inner: Box<dyn FrameSolver + 'a>,
    done: bool,
}

impl FrameSolver for GroupedFrame<'_> {
    fn spots(&self, ispec_min: usize, nspec: usize) -> Result<Arc<SpotTable>, SolveError> {
        self.inner.spots(ispec_min, nspec)
    }

    fn start(&mut self, plans: Vec<PatchPlan>, corners: &[&SpotTable]) -> Result<(), SolveError> {
        self.inner.start(plans, corners)
    }

    fn next_results(&mut self) -> Result<Option<(usize, Vec<PatchResult>)>, SolveError> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        let mut all = Vec::new();
        while let Some((_, run)) = self.inner.next_results()? {
            all.extend(run);
        }
        Ok(Some((0, all)))
    }

    fn resolve(
        &mut self,
        plans: &[PatchPlan],
        masks: &[&[u64]],
    ) -> Result<Vec<PatchResult>, SolveError> {
        self.inner.resolve(plans, masks)
    }

    fn rejected_bin_counts(
        &mut self,
        patches: &[(PatchPlan, Vec<u64>)],
    ) -> Result<Vec<Vec<u16>>, SolveError> {
        self.inner.rejected_bin_counts(patches)
    }
}

#[test]
fn bundles_rejected_together_give_what_bundles_rejected_one_at_a_time_give() {
    let psf = psf();
    let grid = WavelengthGrid::arange(6000.0, 6400.0, 0.8).unwrap();
    let nspec = 75;
    let truth = builtin_spectra(0, nspec, &grid.wave);
    let extras = SimExtras {
        oversample: 1,
        cosmics: Some(CosmicConfig::default()),
    };
    let (image, hits) = simulated_preproc_with(&psf, &truth, 3.0, 7, false, "r0", &extras).unwrap();
    assert!(hits.len() > 1000);
    let params = ExtractionParams {
        nspec,
        ..ExtractionParams::default()
    };
    let job = FrameJob::new(&psf, &image, &grid, &params)
        .unwrap()
        .with_reject(Some(RejectConfig::default()));
    let one = extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new()).unwrap();
    let together = extract_frame(&job, &Grouped, &|_, _| {}, &Trace::new()).unwrap();
    // Every bundle rejected something (the comparison is not vacuous).
    for b in 0..nspec / params.bundlesize {
        assert!(
            one.rejections.iter().any(|r| r.site.bundle == b),
            "bundle {b} rejected nothing"
        );
    }
    assert_eq!(one.rejections, together.rejections);
    assert_eq!(one.arrays.flux, together.arrays.flux);
    assert_eq!(one.arrays.ivar, together.arrays.ivar);
    assert_eq!(one.arrays.rdiags, together.arrays.rdiags);
    assert_eq!(one.arrays.chi2pix, together.arrays.chi2pix);
    assert_eq!(one.mask, together.mask);
}
