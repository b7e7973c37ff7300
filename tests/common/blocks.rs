//! Real covariance blocks of a patch and their float64 reference `C^(-1/2)`, shared by the
//! tests of the inverse square root methods (inverse_sqrt_blocks, newton_schulz_blocks,
//! rdiag_conditioning).

use desi_device::linalg::banded;
use desi_device::patch::{assemble_normal_equations, regularize};
use desi_device::reference::jacobi_eigh::jacobi_eigh;
use desi_device::Status;
use desi_extract::extract::{extract_frame, CcdData, Extraction, RejectConfig};
use desi_extract::job::FrameJob;
use desi_extract::patch::plan::plan_bundle;
use desi_extract::patch::{ExtractionParams, PatchPlan, WavelengthGrid};
use desi_extract::psf::SpotTable;
use desi_extract::sim::cosmics::CosmicConfig;
use desi_extract::sim::{builtin_spectra, simulated_preproc_with, SimExtras};
use desi_extract::solve::{Backend, BundleInputs, CpuBackend};
use desi_extract::trace::Trace;
use std::sync::Arc;

/// Covariance blocks `(nspp, n, n)` of the core spectra of `plan` and the deconvolved flux,
/// computed as `solve_patch_full` does with the serial device routines (the GPU's factor);
/// `None` where the factorization fails.
pub fn core_blocks(inputs: &BundleInputs, plan: &PatchPlan) -> Option<(Vec<f64>, Vec<f64>)> {
    let params = inputs.params;
    let nwavetot = params.nwavetot();
    let shape = plan.shape(nwavetot)?;
    let view = plan.stamp_view(inputs.spots, params.pad());
    let n = shape.nunknown();
    let kd = plan.kd;
    let mut band = vec![0.0; n * (kd + 1)];
    let mut xflux = vec![0.0; n];
    let mut fw = vec![0.0; n];
    let st = assemble_normal_equations(
        &view,
        &inputs.ccd,
        &shape,
        kd,
        &mut band,
        &mut xflux,
        &mut fw,
    );
    assert_eq!(st, Status::Ok);
    regularize(&mut band, n, kd, &fw, params.regularize);
    if banded::band_factor(&mut band, n, kd) != Status::Ok {
        return None;
    }
    assert_eq!(banded::band_solve(&band, n, kd, &mut xflux), Status::Ok);
    let s_core = plan.ispec - plan.s0;
    let mut cov = vec![0.0; plan.nspp * nwavetot * nwavetot];
    let mut work = vec![0.0; banded::band_covariance_blocks_work_len(n, kd, plan.nspecpad)];
    let st = banded::band_covariance_block_range(
        &band,
        n,
        kd,
        plan.nspecpad,
        s_core,
        &mut cov,
        &mut work,
    );
    assert_eq!(st, Status::Ok);
    Some((cov, xflux))
}

/// `C^(-1/2)` from the two-sided Jacobi eigenpairs of `c` (lower triangle mirrored), with the
/// per-matrix clip at `1e-14·λ_max`, and `κ = λ_max / λ_min` (clipped likewise).
pub fn reference_inverse_sqrt(c: &[f64], n: usize) -> (Vec<f64>, f64) {
    let mut a = c.to_vec();
    for i in 0..n {
        for j in i + 1..n {
            a[i * n + j] = a[j * n + i];
        }
    }
    let mut v = vec![0.0; n * n];
    let mut l = vec![0.0; n];
    assert_eq!(jacobi_eigh(&mut a, n, &mut v, &mut l, 100), Status::Ok);
    let floor = 1e-14 * l[n - 1];
    let mut q = vec![0.0; n * n];
    for e in 0..n {
        let f = 1.0 / l[e].max(floor).sqrt();
        for i in 0..n {
            let vi = v[i * n + e] * f;
            for j in 0..n {
                q[i * n + j] += vi * v[j * n + e];
            }
        }
    }
    (q, l[n - 1] / l[0].max(floor))
}

/// Bundle 0 of a simulated r frame (25 fibers over the r band, the bundled PSF) with cosmic
/// rays, extracted on the CPU with the outlier rejection: what the inverse-square-root tests
/// need to rebuild the covariance blocks of clean and re-solved patches.
pub struct CosmicBundle {
    /// The extraction parameters.
    pub params: ExtractionParams,
    /// Resolution half-width of the job.
    pub ndiag: usize,
    /// The CPU extraction (with its rejections).
    pub ext: Extraction,
    /// The bundle's patches that have a pixel window.
    pub plans: Vec<PatchPlan>,
    /// The bundle's spots.
    pub spots: Arc<SpotTable>,
    /// The CCD as extracted.
    pub ccd: CcdData,
    /// The CCD with every rejected pixel at weight 0 (one bundle: one mask).
    pub masked: CcdData,
    /// The patch of each rejection, in order (a patch rejected twice appears twice).
    pub rejected_patches: Vec<PatchPlan>,
    /// Rejected pixels summed over the rejections (with repeats).
    pub rejected_pixels: usize,
}

/// Builds the [`CosmicBundle`].
pub fn cosmic_bundle() -> CosmicBundle {
    let psf = super::psf();
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).unwrap();
    let params = ExtractionParams {
        nspec: 25,
        psferr: psf.psferr,
        ..ExtractionParams::default()
    };
    let truth = builtin_spectra(0, 25, &grid.wave);
    let extras = SimExtras {
        oversample: 1,
        cosmics: Some(CosmicConfig::default()),
    };
    let (image, _) = simulated_preproc_with(&psf, &truth, 3.0, 1, false, "r0", &extras).unwrap();
    let job = FrameJob::new(&psf, &image, &grid, &params)
        .unwrap()
        .with_reject(Some(RejectConfig::default()));
    let padded = job.padded_grid();
    let start = job.bundle_starts()[0];
    let corners = psf
        .corners(start, params.bundlesize, &padded.fullwave)
        .unwrap();
    let plans: Vec<PatchPlan> = plan_bundle(0, &corners, &params, padded.grid.nwave(), image.ny)
        .into_iter()
        .filter(|p| p.window.is_some())
        .collect();
    let no_progress = |_: usize, _: usize| {};
    let ext = extract_frame(&job, &CpuBackend, &no_progress, &Trace::new()).unwrap();
    let trace = Trace::new();
    let spots = {
        let solver = CpuBackend.begin_frame(&job, &trace).unwrap();
        solver.spots(0, params.bundlesize).unwrap()
    };
    let ccd = CcdData::from_preproc_rows(&image, 0..image.ny, &job.pixel_limits);
    let mut masked = CcdData::from_preproc_rows(&image, 0..image.ny, &job.pixel_limits);
    let mut rejected_patches = Vec::new();
    let mut rejected_pixels = 0;
    for rej in &ext.rejections {
        for &p in &rej.pixels {
            masked.weight[p as usize] = 0.0;
        }
        rejected_pixels += rej.pixels.len();
        let plan = plans.iter().find(|p| p.patch == rej.site.patch).unwrap();
        rejected_patches.push(plan.clone());
    }
    let ndiag = job.ndiag();
    CosmicBundle {
        params,
        ndiag,
        ext,
        plans,
        spots,
        ccd,
        masked,
        rejected_patches,
        rejected_pixels,
    }
}
