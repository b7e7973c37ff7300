//! The science measurements of the outlier rejection (issue 16, docs/algorithm.md §4.11), on
//! the CPU, on simulated frames of several bundles over the whole r range:
//!
//! - flux bias in bins hit by cosmic rays, without and with rejection: the cosmic frame is the
//!   clean frame (same noise realization) plus the cosmics, so `flux(cosmic) − flux(clean)` is
//!   exactly what the cosmics did; a bin is *hit* when a cosmic pixel carries >= 1% of its PSF;
//! - the fraction of pixels rejected on frames without cosmics (bright sky and emission lines
//!   of the built-in spectra; and with a 4x sub-bin oversampled PSF);
//! - pulls of the bins no cosmic touched, against the truth;
//! - BAD2DFIT counts, and how many of the hit bins with a > 3σ error BAD2DFIT alone flags;
//! - the cost (wall time, CPU; the GPU's is measured by profiles/reject-gpu.sh).
//!
//! `cargo run --release --example reject_science -- [NSPEC] [SEEDS] [NSIGMA,...]`
//! (defaults 75 fibers = 3 bundles, 2 seeds, thresholds 4,5,6,8).

use desi_extract::extract::{extract_frame, Extraction, RejectConfig};
use desi_extract::job::FrameJob;
use desi_extract::patch::stitch::{BAD2DFIT, COSMIC};
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::psf::SpotTable;
use desi_extract::qa::resolved_truth;
use desi_extract::sim::{
    builtin_spectra, project_spectra, simulated_preproc_with, CosmicConfig, SimExtras, Spectra,
};
use desi_extract::solve::CpuBackend;
use desi_extract::trace::Trace;
use std::path::Path;
use std::time::Instant;

const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let nspec: usize = args.get(1).map_or(Ok(75), |a| a.parse())?;
    let seeds: u64 = args.get(2).map_or(Ok(2), |a| a.parse())?;
    let thresholds: Vec<f64> = match args.get(3) {
        Some(a) => a.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![4.0, 5.0, 6.0, 8.0],
    };
    // Optional: ITERATIONS,MAX_FRACTION,GROW (the defaults of RejectConfig otherwise).
    let base = match args.get(4) {
        Some(a) => {
            let v: Vec<f64> = a.split(',').map(str::parse).collect::<Result<_, _>>()?;
            RejectConfig {
                max_iterations: v[0] as usize,
                max_fraction: v[1],
                grow: v[2] as usize,
                ..RejectConfig::default()
            }
        }
        None => RejectConfig::default(),
    };
    let psf = desi_extract::io::read_psf(Path::new(PSF))?;
    if std::env::var("REJECT_COST").is_ok() {
        return cost(&psf, nspec, base);
    }
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8)?;
    let params = ExtractionParams {
        nspec,
        ..ExtractionParams::default()
    };
    let truth = builtin_spectra(0, nspec, &grid.wave);
    let spots = psf.spots(0, nspec, &grid.wave)?;
    let footprint = project_spectra(&psf, &truth)?
        .iter()
        .filter(|&&v| v > 1e-3)
        .count();
    let cosmics = CosmicConfig::default();
    println!(
        "frame: {nspec} fibers x {} bins (r, 5760-7620 A), {seeds} seeds; cosmics {:.1} per cm2 per min for {:.0} s = {:.0} events per full CCD; footprint {footprint} pixels",
        grid.nwave(),
        cosmics.rate,
        cosmics.exptime,
        cosmics.expected_events(psf.npix_y, psf.npix_x)
    );
    let mut rows = Vec::new();
    for seed in 0..seeds {
        let sim = |extras: SimExtras| {
            simulated_preproc_with(&psf, &truth, 3.0, 100 + seed, false, "r0", &extras)
        };
        let (clean, _) = sim(SimExtras::default())?;
        let (dirty, hits) = sim(SimExtras {
            cosmics: Some(cosmics),
            ..SimExtras::default()
        })?;
        let (over, _) = sim(SimExtras {
            oversample: 4,
            ..SimExtras::default()
        })?;
        let hit = hit_bins(&spots, &hits, psf.npix_x, nspec, grid.nwave());
        let run = |img, reject| -> Result<(Extraction, f64), Box<dyn std::error::Error>> {
            let job = FrameJob::new(&psf, img, &grid, &params)?.with_reject(reject);
            let t = Instant::now();
            let ex = extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new())?;
            Ok((ex, t.elapsed().as_secs_f64()))
        };
        let (base_clean, t_clean) = run(&clean, None)?;
        let (base_dirty, t_dirty) = run(&dirty, None)?;
        let (base_over, _) = run(&over, None)?;
        println!(
            "seed {seed}: {} cosmic pixels, {} hit bins; no rejection: {t_clean:.1} s clean, {t_dirty:.1} s cosmics",
            hits.len(),
            hit.iter().filter(|&&h| h).count()
        );
        rows.push(measure(
            "off",
            &truth,
            &grid,
            &hit,
            [&base_clean, &base_dirty],
            [&base_dirty, &base_clean, &base_over],
            footprint,
            t_dirty,
        ));
        for &nsigma in &thresholds {
            let cfg = Some(RejectConfig { nsigma, ..base });
            let (rc, t_rc) = run(&clean, cfg)?;
            let (rd, t) = run(&dirty, cfg)?;
            let (ro, _) = run(&over, cfg)?;
            rows.push(measure(
                &format!("{nsigma}"),
                &truth,
                &grid,
                &hit,
                [&base_clean, &base_dirty],
                [&rd, &rc, &ro],
                footprint,
                t,
            ));
            println!("nsigma {nsigma}: clean frame {t_rc:.1} s with rejection (detection only)");
        }
    }
    println!();
    println!("| nsigma | hit-bin pull mean | mean abs pull | hit bins with abs pull > 3 | hit bins moved > 3s by cosmics | of those BAD2DFIT | of those COSMIC | false rej. clean | false rej. 4x PSF | clean bitwise | pulls untouched mean/std | BAD2DFIT bins | re-solved patches | CPU time |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    Ok(())
}

/// Per (fiber, bin): whether a cosmic pixel carries >= 1% of the bin's PSF weight.
fn hit_bins(
    spots: &SpotTable,
    hits: &[desi_extract::sim::CosmicHit],
    ncol: usize,
    nspec: usize,
    nwave: usize,
) -> Vec<bool> {
    let set: std::collections::HashSet<usize> = hits
        .iter()
        .filter(|h| h.electrons > 10.0)
        .map(|h| h.pixel)
        .collect();
    let mut out = vec![false; nspec * nwave];
    for s in 0..nspec {
        for k in 0..nwave {
            let c = spots.corner(s, k);
            let st = spots.stamp(s, k);
            let total: f64 = st.iter().sum();
            'stamp: for y in 0..spots.ny {
                for x in 0..spots.nx {
                    let (row, col) = (c.yc + y as i32, c.xc + x as i32);
                    if row < 0 || col < 0 {
                        continue;
                    }
                    let p = row as usize * ncol + col as usize;
                    if st[y * spots.nx + x] >= 0.01 * total && set.contains(&p) {
                        out[s * nwave + k] = true;
                        break 'stamp;
                    }
                }
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn measure(
    label: &str,
    truth: &Spectra,
    grid: &WavelengthGrid,
    hit: &[bool],
    [base_clean, base_dirty]: [&Extraction; 2],
    [dirty, clean, over]: [&Extraction; 3],
    footprint: usize,
    time: f64,
) -> String {
    let (a, c) = (&dirty.arrays, &base_clean.arrays);
    let (mut sum, mut sum_abs, mut n) = (0.0, 0.0, 0usize);
    let (mut big, mut still, mut big_flag, mut big_cosmic) = (0usize, 0usize, 0usize, 0usize);
    let mut pulls = Vec::new();
    let dwave = grid.bin_widths();
    let expected = resolved_truth(&a.rdiags, (a.nspec, a.nwave, a.ndiag), &dwave, |s| {
        &truth.flux[s * a.nwave..(s + 1) * a.nwave]
    });
    for s in 0..a.nspec {
        for j in 0..a.nwave {
            let i = s * a.nwave + j;
            if c.ivar[i] <= 0.0 {
                continue;
            }
            let sigma = 1.0 / c.ivar[i].sqrt();
            if hit[i] {
                // Bias against the truth in the bin's own error (ivar 0: rejected everything).
                if a.ivar[i] > 0.0 {
                    let d = (a.flux[i] - expected[i]) * a.ivar[i].sqrt();
                    sum += d;
                    sum_abs += d.abs();
                    n += 1;
                    if d.abs() > 3.0 {
                        still += 1;
                    }
                }
                // Hit bins the cosmics moved by > 3σ without rejection (fake features): which
                // bits they carry here.
                if (base_dirty.arrays.flux[i] - c.flux[i]).abs() > 3.0 * sigma {
                    big += 1;
                    if dirty.mask[i] & BAD2DFIT != 0 {
                        big_flag += 1;
                    }
                    if dirty.mask[i] & COSMIC != 0 {
                        big_cosmic += 1;
                    }
                }
            } else if a.ivar[i] > 0.0 {
                pulls.push((a.flux[i] - expected[i]) * a.ivar[i].sqrt());
            }
        }
    }
    let m = pulls.len() as f64;
    let mean = pulls.iter().sum::<f64>() / m;
    let std = (pulls.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (m - 1.0)).sqrt();
    let bad2dfit = dirty.mask.iter().filter(|&&v| v & BAD2DFIT != 0).count();
    let frac = |ex: &Extraction| ex.reject_summary().pixels as f64 / footprint as f64;
    let bitwise = clean.arrays == base_clean.arrays && clean.mask == base_clean.mask;
    format!(
        "| {label} | {:+.3} | {:.3} | {still} | {big} | {big_flag} | {big_cosmic} | {:.2e} | {:.2e} | {bitwise} | {mean:+.4} / {std:.4} | {bad2dfit} | {} ({} capped) | {time:.1} s |",
        sum / n.max(1) as f64,
        sum_abs / n.max(1) as f64,
        frac(clean),
        frac(over),
        dirty.rejections.len(),
        dirty.reject_summary().capped,
    )
}

/// CPU seconds (user + system) this process has used so far (Linux /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 14th field.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // rest starts at field 3 (state is not numeric and is skipped): utime, stime = fields 14, 15.
    let (utime, stime) = (
        f.get(10).copied().unwrap_or(0.0),
        f.get(11).copied().unwrap_or(0.0),
    );
    (utime + stime) / 100.0
}

/// `REJECT_COST=1`: CPU seconds of the extraction without and with rejection (clean frame:
/// the detection alone; cosmic frame: detection and re-solves), 3 runs each, on a loaded
/// machine where wall times mislead.
fn cost(
    psf: &desi_extract::psf::GaussHermitePsf,
    nspec: usize,
    cfg: RejectConfig,
) -> Result<(), Box<dyn std::error::Error>> {
    let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8)?;
    let params = ExtractionParams {
        nspec,
        ..ExtractionParams::default()
    };
    let truth = builtin_spectra(0, nspec, &grid.wave);
    for cosmics in [None, Some(CosmicConfig::default())] {
        let extras = SimExtras {
            cosmics,
            ..SimExtras::default()
        };
        let (image, _) = simulated_preproc_with(psf, &truth, 3.0, 100, false, "r0", &extras)?;
        for reject in [None, Some(cfg)] {
            let mut runs = Vec::new();
            let mut patches = 0;
            for _ in 0..3 {
                let job = FrameJob::new(psf, &image, &grid, &params)?.with_reject(reject);
                let c0 = cpu_seconds();
                let ex = extract_frame(&job, &CpuBackend, &|_, _| {}, &Trace::new())?;
                runs.push(cpu_seconds() - c0);
                patches = ex.rejections.len();
            }
            runs.sort_by(f64::total_cmp);
            println!(
                "cost: {} frame, rejection {}: CPU {:.2} s (median of 3: {:?}), patches re-solved {patches}",
                if cosmics.is_some() { "cosmic" } else { "clean" },
                if reject.is_some() { "on" } else { "off" },
                runs[1],
                runs.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}
