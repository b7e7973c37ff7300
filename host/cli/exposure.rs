//! `desi-extract exposure`: every frame of one exposure with desi_proc's per-camera grids and
//! PSF errors. The pipeline (frames, rank roles, messages, threads) is the library's
//! [`desi_extract::exposure`]; this module holds the flags and prints the plan, one line per
//! frame and the summary table.

use super::{FailedPatchesArg, MaskRuleArg};
use clap::Args;
use desi_extract::exposure::{
    expid_text, run_exposure, ExposureConfig, ExposureObserver, ExposurePlan, ExposureSummary,
    FrameFlags, FrameOutcome, Mode,
};
use desi_extract::gpu::memory::format_bytes;
use desi_extract::parallel::Comm;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `exposure`.
#[derive(Debug, Args)]
pub struct ExposureArgs {
    /// Directory with preproc-{camera}-{EXPID}.fits and psf-{camera}-{EXPID}.fits.
    #[arg(long)]
    indir: PathBuf,
    /// Directory for frame-{camera}-{EXPID}.fits (created when missing).
    #[arg(long)]
    outdir: PathBuf,
    /// Exposure id (file names use it zero-padded to 8 digits).
    #[arg(long)]
    expid: u64,
    #[command(flatten)]
    options: FrameOptions,
    /// Also write the summary as JSON (per frame: status, read/extract/write seconds and start
    /// times, device seconds and memory; the GPU busy fraction, GPU and host memory).
    #[arg(long = "summary-json")]
    summary_json: Option<PathBuf>,
}

/// The options of every frame, shared by `exposure` and `exposures`.
#[derive(Debug, Args)]
pub struct FrameOptions {
    /// Extract on GPUs (each extracting rank takes GPU local_rank % visible GPUs).
    #[arg(long)]
    gpu: bool,
    /// Re-extract frames whose output exists (default: skip them).
    #[arg(long)]
    overwrite: bool,
    /// Read, extract and write one frame after the other, on every rank count (for measuring
    /// what the reading-ahead, writing-behind and the reader/writer/extractor pipeline gain).
    #[arg(long = "no-overlap")]
    no_overlap: bool,
    /// First spectrum of every frame (relative to the PSF's FIBERMIN).
    #[arg(short = 's', long = "specmin", default_value_t = 0)]
    specmin: usize,
    /// Spectra per frame.
    #[arg(short = 'n', long = "nspec", default_value_t = 500)]
    nspec: usize,
    /// Only the first ANGSTROM of each camera's grid (tests and quick looks).
    #[arg(long = "wave-span")]
    wave_span: Option<f64>,
    /// desispec's rule for the BAD2DFIT mask bit: `main` or `0.70` (as `extract`).
    #[arg(long = "mask-rule", value_enum, default_value_t = MaskRuleArg::Main)]
    mask_rule: MaskRuleArg,
    /// A frame with a patch that could not be solved: `flag` writes it with the patch's bins
    /// at IVAR 0 and MASK BAD2DFIT, `fail` writes no frame; either way the frame counts as
    /// failed (exit 2).
    #[arg(long = "failed-patches", value_enum, default_value_t = FailedPatchesArg::Flag)]
    failed_patches: FailedPatchesArg,
    /// Cap on the GPU memory of each process with --gpu (e.g. 20GiB for each of four ranks
    /// sharing an 80 GB GPU; default $DESI_GPU_MEMORY_LIMIT, else none); the frames a process
    /// has in flight share it.
    #[arg(long = "gpu-memory-limit", value_parser = super::memory_size)]
    gpu_memory_limit: Option<u64>,
    /// Frames one GPU process extracts at once, each on its own stream (1 to 8; default: as
    /// many as the GPU memory holds, one per 9.66 GiB of --gpu-memory-limit or of 70% of the
    /// free memory, at most 3, which measured fastest; 3 in a job over many exposures without
    /// a cap).
    #[arg(long = "frames-in-flight", value_parser = clap::value_parser!(u64).range(1..=8))]
    frames_in_flight: Option<u64>,
    /// Write each frame's extraction trace (host stages and GPU stages on the clock of the
    /// run's start, Chrome trace format: chrome://tracing, Perfetto) to
    /// DIR/trace-{camera}-{EXPID}.json (created when missing).
    #[arg(long = "trace-dir", value_name = "DIR")]
    trace_dir: Option<PathBuf>,
}

impl FrameOptions {
    /// `true` with `--gpu`.
    pub fn uses_gpu(&self) -> bool {
        self.gpu
    }

    /// The library's configuration for these options and the exposure `expid` of `indir` into
    /// `outdir`.
    pub fn config(&self, indir: PathBuf, outdir: PathBuf, expid: u64) -> ExposureConfig {
        ExposureConfig {
            indir,
            outdir,
            expid,
            gpu: self.gpu,
            overwrite: self.overwrite,
            overlap: !self.no_overlap,
            specmin: self.specmin,
            nspec: self.nspec,
            wave_span: self.wave_span,
            mask_rule: self.mask_rule.into(),
            failed_patches: self.failed_patches.into(),
            gpu_memory_limit: self.gpu_memory_limit,
            frames_in_flight: self.frames_in_flight.map(|n| n as usize),
            trace_dir: self.trace_dir.clone(),
        }
    }
}

impl ExposureArgs {
    /// `true` with `--gpu`.
    pub fn uses_gpu(&self) -> bool {
        self.options.uses_gpu()
    }
}

/// Runs `exposure`: exit 2 when a frame failed or was written flagged, or a camera has a PSF but
/// no preproc; exit 1 when no preproc file of the exposure is found.
pub fn run(args: ExposureArgs, comm: &Comm) -> anyhow::Result<ExitCode> {
    let config = args.options.config(args.indir, args.outdir, args.expid);
    let mut printer = Printer {
        expid: expid_text(config.expid),
    };
    let summary = run_exposure(&config, comm, &mut printer)?;
    if summary.is_writer {
        print_summary(&summary);
        if let Some(path) = &args.summary_json {
            summary.write_json(path)?;
        }
    }
    Ok(job_exit_code(summary.any_failed))
}

/// The exit code of an `exposure` or `exposures` run: 2 when some frame failed (the others
/// were still written), else 0.
pub(super) fn job_exit_code(any_failed: bool) -> ExitCode {
    if any_failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints the plan and a line per frame as the writing rank reports them.
struct Printer {
    expid: String,
}

impl ExposureObserver for Printer {
    fn planned(&mut self, plan: &ExposurePlan) {
        let (size, extractors) = (plan.layout.size, plan.layout.extractors());
        let how = match plan.layout.mode {
            Mode::Pipeline => format!(
                "reader rank 0, writer rank 1, {extractors} extracting rank(s) taking whole frames in turn"
            ),
            Mode::Shared { overlap: true } if plan.frames_in_flight > 1 => format!(
                "1 process with {} frames in flight on the GPU (one stream each; {}), reading ahead and writing behind",
                plan.frames_in_flight,
                desi_extract::exposure::io_variants()
            ),
            Mode::Shared { overlap: true } => format!(
                "{size} rank(s) sharing each frame's bundles, rank 0 reading ahead and writing behind"
            ),
            Mode::Shared { overlap: false } => {
                format!("{size} rank(s), read/extract/write in turn")
            }
        };
        println!(
            "exposure {}: {} frame(s) to extract, {} skipped (output exists and is verified; --overwrite redoes them); {how}",
            plan.expid, plan.frames, plan.skipped
        );
        for (camera, why) in &plan.redone {
            println!(
                "exposure {}: frame {camera} exists but {why}: extracting it again",
                plan.expid
            );
        }
        for camera in &plan.missing_preproc {
            eprintln!(
                "exposure {}: camera {camera} has a PSF but no preproc file: no frame for it",
                plan.expid
            );
        }
    }

    fn frame_done(&mut self, position: usize, total: usize, outcome: &FrameOutcome) {
        let expid = &self.expid;
        let (number, camera) = (position + 1, &outcome.camera);
        match &outcome.status {
            Ok(t) => {
                let device = match t.device_peak_bytes {
                    Some(peak) => {
                        format!(", GPU {:.2} s, <= {}", t.device_busy_s, format_bytes(peak))
                    }
                    None => String::new(),
                };
                println!(
                    "exposure {expid}: frame {number}/{total} {camera} {} at {:.2} s (read {:.2} s, extract {:.2} s, write {:.2} s{device}) -> {}",
                    if t.flags.is_flagged() { "written FLAGGED" } else { "written" },
                    outcome.finished_at_s,
                    t.read_s,
                    t.extract_s,
                    t.write_s,
                    outcome.output.display()
                );
                if let Some(detail) = flag_detail(&t.flags) {
                    let level = if t.flags.is_flagged() {
                        "error"
                    } else {
                        "warning"
                    };
                    eprintln!(
                        "exposure {expid}: {level}: frame {camera} ({}): {detail}",
                        outcome.output.display()
                    );
                }
            }
            Err(e) => println!("exposure {expid}: frame {number}/{total} {camera} FAILED: {e}"),
        }
    }
}

/// What a written frame carries without data, in words (None when nothing).
pub(super) fn flag_detail(flags: &FrameFlags) -> Option<String> {
    let mut parts = Vec::new();
    if flags.failed_patches > 0 {
        parts.push(format!(
            "{} patch(es) could not be solved (IVAR 0, MASK BAD2DFIT)",
            flags.failed_patches
        ));
    }
    if flags.off_ccd_patches > 0 {
        parts.push(format!(
            "{} patch(es) off the CCD (IVAR 0, MASK NODATA)",
            flags.off_ccd_patches
        ));
    }
    if flags.nonfinite_bins > 0 {
        parts.push(format!(
            "{} bin(s) with non-finite outputs (IVAR 0, MASK BAD2DFIT)",
            flags.nonfinite_bins
        ));
    }
    if flags.screened_pixels > 0 {
        parts.push(format!(
            "{} input pixel(s) with IVAR > 0 ignored as absurd",
            flags.screened_pixels
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The table printed by the writer at the end.
fn print_summary(summary: &ExposureSummary) {
    let expid = &summary.expid;
    println!("exposure {expid} summary:");
    println!(
        "  {:<6} {:<8} {:>8} {:>10} {:>8} {:>8} {:>10} {:>8}  detail",
        "camera", "status", "read_s", "extract_s", "write_s", "gpu_s", "gpu_mem", "patches"
    );
    let none = "-";
    for o in &summary.outcomes {
        match &o.status {
            Ok(t) => println!(
                "  {:<6} {:<8} {:>8.2} {:>10.2} {:>8.2} {:>8} {:>10} {:>8}  {}",
                o.camera,
                if t.flags.is_flagged() {
                    "FLAGGED"
                } else {
                    "ok"
                },
                t.read_s,
                t.extract_s,
                t.write_s,
                t.device_peak_bytes
                    .map_or(none.into(), |_| format!("{:.2}", t.device_busy_s)),
                t.device_peak_bytes.map_or(none.into(), format_bytes),
                t.npatch,
                flag_detail(&t.flags).unwrap_or_default()
            ),
            Err(e) => println!(
                "  {:<6} {:<8} {none:>8} {none:>10} {none:>8} {none:>8} {none:>10} {none:>8}  {e}",
                o.camera, "FAILED"
            ),
        }
    }
    for (list, status, why) in [
        (&summary.skipped, "skipped", "output exists and is verified"),
        (
            &summary.missing_preproc,
            "MISSING",
            "PSF but no preproc file",
        ),
    ] {
        for camera in list {
            println!(
                "  {camera:<6} {status:<8} {none:>8} {none:>10} {none:>8} {none:>8} {none:>10} {none:>8}  {why}"
            );
        }
    }
    let mut failed = summary.failed_cameras();
    let flagged = summary.flagged_cameras();
    failed.extend(summary.missing_preproc.iter().map(String::as_str));
    println!(
        "exposure {expid}: {} written, {} skipped, {} failed, {} written flagged in {:.2} s ({:.2} frames/s)",
        summary.written(),
        summary.skipped.len(),
        failed.len(),
        flagged.len(),
        summary.wall_s,
        summary.frames_per_s()
    );
    println!("exposure {expid}: {}", bounds_line(summary));
    if !failed.is_empty() {
        eprintln!("exposure {expid}: failed frame(s): {}", failed.join(" "));
    }
    if !flagged.is_empty() {
        eprintln!(
            "exposure {expid}: frame(s) written flagged (failed patches): {}",
            flagged.join(" ")
        );
    }
}

/// What bounds the run: the GPU busy fraction, the median step times, and the memory.
fn bounds_line(summary: &ExposureSummary) -> String {
    let (read, extract, write) = summary.median_steps();
    let mut line = format!(
        "per-frame median read {read:.2} s, extract {extract:.2} s, write {write:.2} s; {} frame(s) in flight",
        summary.frames_in_flight
    );
    if let Some(busy) = summary.gpu_busy_fraction() {
        line += &format!(
            "; GPU busy {:.0}% ({:.2} s of device stages over {:.2} s; sum of stage times {:.2} s)",
            100.0 * busy,
            summary.device_busy_s(),
            summary.wall_s,
            summary.device_stage_s()
        );
    }
    if let Some(gpu) = &summary.gpu_memory {
        let limit = gpu
            .limit_bytes
            .map_or("no cap".to_string(), |l| format!("cap {}", format_bytes(l)));
        line += &format!(
            "; GPU memory ({limit}): per frame in flight <= {}, pool peak {} used / {} reserved, {} held after release",
            summary
                .gpu_peak_bytes_per_frame()
                .map_or("-".to_string(), format_bytes),
            format_bytes(gpu.pool.used_high),
            format_bytes(gpu.pool.reserved_high),
            format_bytes(gpu.held_after_release)
        );
    }
    line + &format!(
        "; host peak RSS {}",
        format_bytes(summary.host_peak_rss_bytes)
    )
}
