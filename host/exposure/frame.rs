//! The steps of one frame, whatever rank runs them: read its PSF and preproc image, extract it
//! whole or a share of its bundles, and assemble and write the frame file. A step that fails becomes the
//! frame's error text (naming the file), carried to the writer so the other frames go on.

use super::jobs::FrameFiles;
use super::provenance;
use super::summary::{union_length, FrameFlags, FrameSteps, FrameTiming};
use super::ExposureConfig;
use crate::extract::{
    assemble_frame, bundle_share, check_frame_metadata, extract_bundles, extract_frame, frame_data,
    BundleBlock, ExtractError, Extraction, PixelLimits, ScreenCount,
};
use crate::io::{self, Keyword, PreprocImage};
use crate::job::FrameJob;
use crate::psf::GaussHermitePsf;
use crate::solve::Backend;
use crate::trace::Trace;
use std::time::Instant;

/// A frame's inputs as read.
#[derive(Clone, Debug)]
pub(crate) struct FrameInputs {
    /// The PSF.
    pub psf: GaussHermitePsf,
    /// The preproc image with its pixels.
    pub image: PreprocImage,
    /// The digest of the input files (as read) and options that the frame records
    /// ([`provenance::input_digest`]).
    pub digest: String,
}

/// A frame as read: its inputs or the error naming the file, the seconds it took and when it
/// started (seconds since the start of the run).
#[derive(Debug)]
pub(crate) struct ReadFrame {
    pub inputs: Result<FrameInputs, String>,
    pub read_s: f64,
    pub read_start_s: f64,
}

/// Reads a frame's PSF and preproc image and digests them with the options of `config` (the
/// files are in the page cache; on the reading thread, off the write's path), timed from
/// `start` (the start of the run).
pub(crate) fn read_frame(config: &ExposureConfig, files: &FrameFiles, start: Instant) -> ReadFrame {
    let t0 = Instant::now();
    let read = || {
        io::read_psf(&files.psf)
            .and_then(|psf| Ok((psf, io::read_preproc(&files.preproc)?)))
            .map_err(|e| e.to_string())
            .and_then(|(psf, image)| {
                // What desispec could not read in the frame (FLAVOR, carried cards, FIBERMAP):
                // refused before any work.
                check_frame_metadata(&image).map_err(|e| e.to_string())?;
                Ok((psf, image))
            })
    };
    // The digest reads the files once more (from the page cache): on a thread of its own,
    // beside the read, unless the reads are serial (`DESI_PREPROC_READ=serial`).
    let (read, digest) = if !io::preproc_planes_in_parallel() {
        let read = read();
        let digest = read
            .is_ok()
            .then(|| provenance::input_digest(config, files));
        (read, digest)
    } else {
        std::thread::scope(|scope| {
            let digest = scope.spawn(|| provenance::input_digest(config, files));
            let read = read();
            let digest = digest
                .join()
                .unwrap_or_else(|_| Err("the thread digesting the inputs panicked".into()));
            (read, Some(digest))
        })
    };
    let inputs = read.and_then(|(psf, image)| {
        let digest = digest.unwrap_or_else(|| Err("inputs not digested".into()))?;
        Ok(FrameInputs { psf, image, digest })
    });
    ReadFrame {
        inputs,
        read_s: t0.elapsed().as_secs_f64(),
        read_start_s: t0.saturating_duration_since(start).as_secs_f64(),
    }
}

/// What a frame's writer needs: the PSF's IN_PSF, the preproc image without pixels (header,
/// fibermap) and the extracted spectra.
#[derive(Debug)]
pub(crate) struct Extracted {
    pub in_psf: Option<String>,
    pub meta: PreprocImage,
    /// Pixels with IVAR > 0 that the extraction ignored as absurd.
    pub screened: ScreenCount,
    pub spectra: Spectra,
    /// The inputs' digest (INPUTSUM).
    pub digest: String,
}

/// A frame's extracted spectra, as the writer gets them.
#[derive(Debug)]
pub(crate) enum Spectra {
    /// The frame, assembled by the process that extracted it whole ([`extract_frame`]: its
    /// rows stitched and finished bundle by bundle while the device solved later ones).
    Frame(Box<Extraction>),
    /// The finished bundle blocks, from one process or several, for the writer to assemble
    /// ([`assemble_frame`]).
    Blocks(Vec<BundleBlock>),
}

impl Spectra {
    /// Patches solved.
    pub fn npatch(&self) -> usize {
        match self {
            Spectra::Frame(frame) => frame.npatch,
            Spectra::Blocks(blocks) => blocks.iter().map(|b| b.npatch).sum(),
        }
    }
}

impl Extracted {
    /// The writer's part of `inputs` with the frame's `spectra` (the pixels are freed).
    pub fn new(inputs: FrameInputs, spectra: Spectra) -> Self {
        let screened = PixelLimits::for_image(&inputs.image).count(&inputs.image);
        Self {
            in_psf: inputs.psf.in_psf,
            meta: without_pixels(inputs.image),
            screened,
            spectra,
            digest: inputs.digest,
        }
    }
}

/// A frame's extraction result with its read and extract seconds, when they ran and its
/// device use, ready to write.
#[derive(Debug)]
pub(crate) struct Finished {
    pub read_s: f64,
    pub extract_s: f64,
    pub steps: FrameSteps,
    pub result: Result<Extracted, String>,
}

/// The device use of an extraction from its trace (whose origin is the start of the run): the
/// GPU track's stages (the spots kernel is inside `spots + upload`) and the backend's memory
/// bound; only the memory bound (`None`) on the CPU.
fn device_use(trace: &Trace, peak_bytes: Option<u64>) -> FrameSteps {
    let intervals: Vec<(f64, f64)> = trace
        .spans()
        .into_iter()
        .filter(|s| s.track == "gpu" && s.name != "spots kernel")
        .map(|s| {
            let start = s.start.as_secs_f64();
            (start, start + s.duration.as_secs_f64())
        })
        .collect();
    FrameSteps {
        device_stage_s: intervals.iter().fold(0.0, |total, (a, b)| total + (b - a)),
        device_intervals: intervals,
        device_peak_bytes: peak_bytes,
        ..FrameSteps::default()
    }
}

/// The preproc image without its pixels (what the writer needs), freeing them.
pub(crate) fn without_pixels(image: PreprocImage) -> PreprocImage {
    PreprocImage {
        image: Vec::new(),
        ivar: Vec::new(),
        mask: Vec::new(),
        readnoise: None,
        ..image
    }
}

/// Runs `extract` on the frame's job (its camera's grid and parameters, validated against
/// the PSF) with a trace on the clock of `start` (the start of the run); its result with the
/// device use, from the trace and the bound on device memory that `extract` returns.
fn extract_job<T>(
    config: &ExposureConfig,
    files: &FrameFiles,
    inputs: &FrameInputs,
    start: Instant,
    extract: impl FnOnce(&FrameJob, &Trace) -> Result<(T, Option<u64>), ExtractError>,
) -> Result<(T, FrameSteps), String> {
    let (grid, params) = config.frame_setup(&files.camera)?;
    params
        .validate(inputs.psf.hsizey, inputs.psf.nspec)
        .map_err(|e| e.to_string())?;
    let trace = Trace::with_origin(start);
    let extracted = FrameJob::new(&inputs.psf, &inputs.image, &grid, &params)
        .map(|job| job.with_failed_patches(config.failed_patches))
        .and_then(|job| extract(&job, &trace))
        .map(|(out, peak_bytes)| (out, device_use(&trace, peak_bytes)))
        .map_err(|e| e.to_string());
    if let Some(dir) = &config.trace_dir {
        write_trace(&trace, dir, files, config.expid);
    }
    extracted
}

/// Writes a frame's trace as `dir/trace-{camera}-{EXPID}.json`; a failure is logged, not
/// fatal (the trace is a diagnostic, the frame is the product).
fn write_trace(trace: &Trace, dir: &std::path::Path, files: &FrameFiles, expid: u64) {
    let path = dir.join(format!(
        "trace-{}-{}.json",
        files.camera,
        super::expid_text(expid)
    ));
    let written = std::fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| trace.write_chrome(&path).map_err(|e| e.to_string()));
    if let Err(err) = written {
        log::warn!(
            "exposure: could not write the trace {}: {err}",
            path.display()
        );
    }
}

/// Extracts share `index` of `count` of the frame's bundles on `backend`; the blocks with the
/// device use (on the clock of `start`, the start of the run).
pub(crate) fn extract_share(
    config: &ExposureConfig,
    files: &FrameFiles,
    inputs: &FrameInputs,
    backend: &dyn Backend,
    (index, count): (usize, usize),
    start: Instant,
) -> Result<(Vec<BundleBlock>, FrameSteps), String> {
    extract_job(config, files, inputs, start, |job, trace| {
        let nbundle = job.bundle_starts().len();
        let share = bundle_share(nbundle, index, count, backend.can_fall_back());
        let set = extract_bundles(job, backend, &share, &|_, _| {}, trace)?;
        Ok((set.blocks, set.times.device_peak_bytes))
    })
}

/// How a frame extracted whole reaches its writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WholeFrame {
    /// Assembled here (the writer is a thread of this process): [`Spectra::Frame`].
    Assembled,
    /// As bundle blocks (sent to a writing rank): [`Spectra::Blocks`].
    Blocks,
}

/// The whole frame extracted on `backend` as `how` says, with the device use (on the clock of
/// `start`, the start of the run).
fn extract_all(
    config: &ExposureConfig,
    files: &FrameFiles,
    inputs: &FrameInputs,
    backend: &dyn Backend,
    how: WholeFrame,
    start: Instant,
) -> Result<(Spectra, FrameSteps), String> {
    if how == WholeFrame::Blocks {
        return extract_share(config, files, inputs, backend, (0, 1), start)
            .map(|(blocks, device)| (Spectra::Blocks(blocks), device));
    }
    extract_job(config, files, inputs, start, |job, trace| {
        let frame = extract_frame(job, backend, &|_, _| {}, trace)?;
        let peak_bytes = frame.times.device_peak_bytes;
        Ok((Spectra::Frame(Box::new(frame)), peak_bytes))
    })
}

/// One frame extracted whole by this process, handed to its writer as `how` says (times on
/// the clock of `start`, the start of the run); an extraction error is prefixed with `who`
/// (e.g. `rank 2: `), a read error is passed on as it is.
pub(crate) fn extract_whole(
    config: &ExposureConfig,
    files: &FrameFiles,
    read: ReadFrame,
    backend: &dyn Backend,
    who: &str,
    how: WholeFrame,
    start: Instant,
) -> Finished {
    let t0 = Instant::now();
    let mut steps = FrameSteps::default();
    let result = read.inputs.and_then(|inputs| {
        let (spectra, device) = extract_all(config, files, &inputs, backend, how, start)
            .map_err(|e| format!("{who}{e}"))?;
        steps = device;
        Ok(Extracted::new(inputs, spectra))
    });
    let extract_s = t0.elapsed().as_secs_f64();
    steps.read = (read.read_start_s, read.read_start_s + read.read_s);
    let extract_start_s = t0.saturating_duration_since(start).as_secs_f64();
    steps.extract = (extract_start_s, extract_start_s + extract_s);
    Finished {
        read_s: read.read_s,
        extract_s,
        steps,
        result,
    }
}

/// Assembles and writes a finished frame: its timing (on the clock of `start`, the start of the
/// run), or the error of any step.
pub(crate) fn write_finished(
    config: &ExposureConfig,
    files: &FrameFiles,
    frame: Finished,
    start: Instant,
) -> Result<FrameTiming, String> {
    let extracted = frame.result?;
    let t0 = Instant::now();
    let npatch = extracted.spectra.npatch();
    let screened = extracted.screened.total();
    let ex = write_frame(config, files, extracted)?;
    let steps = &frame.steps;
    Ok(FrameTiming {
        read_s: frame.read_s,
        extract_s: frame.extract_s,
        write_s: t0.elapsed().as_secs_f64(),
        read_start_s: steps.read.0,
        extract_start_s: steps.extract.0,
        write_start_s: t0.saturating_duration_since(start).as_secs_f64(),
        device_s: steps.device_stage_s,
        device_busy_s: union_length(&steps.device_intervals),
        device_peak_bytes: steps.device_peak_bytes,
        npatch,
        flags: FrameFlags {
            failed_patches: ex.failed_patches().len(),
            off_ccd_patches: ex.off_ccd_patches().len(),
            nonfinite_bins: ex.nonfinite_bins.len(),
            zero_ivar_bins: ex.zero_ivar_bins(),
            screened_pixels: screened,
        },
    })
}

/// Assembles the blocks into the frame and writes its file (with the SCORES HDU); returns the
/// frame (its reports and arrays say what was flagged).
fn write_frame(
    config: &ExposureConfig,
    files: &FrameFiles,
    extracted: Extracted,
) -> Result<Extraction, String> {
    let t0 = Instant::now();
    let (grid, params) = config.frame_setup(&files.camera)?;
    let ex = match extracted.spectra {
        Spectra::Frame(frame) => *frame,
        Spectra::Blocks(blocks) => {
            let ndiag = blocks.first().map_or(0, |b| b.arrays.ndiag);
            assemble_frame(&grid, &params, ndiag, blocks, None).map_err(|e| e.to_string())?
        }
    };
    let t_assembled = t0.elapsed().as_secs_f64();
    let meta = &extracted.meta;
    let in_psf = extracted.in_psf.as_deref();
    let mut frame = frame_data(&ex, meta, in_psf, &files.psf, &files.preproc, &grid);
    // The digest a rerun compares before skipping this frame (of the files as they were read).
    frame.keywords.push(Keyword::str(
        provenance::INPUT_DIGEST_KEY,
        &extracted.digest,
        "XXH3-128 of the inputs and options",
    ));
    io::check_outputs(
        &[("preproc", &files.preproc), ("psf", &files.psf)],
        &[("frame", &files.output)],
    )
    .map_err(|e| e.to_string())?;
    // desispec's RAW scores, as `extract` writes them (docs/desispec-compat.md).
    let t_contents = t0.elapsed().as_secs_f64();
    let scores = crate::scores::raw_frame_scores(frame.wavelength, frame.flux, frame.ivar);
    let t_scores = t0.elapsed().as_secs_f64();
    io::write_frame_with_scores(
        &files.output,
        &frame,
        meta.fibermap.as_ref(),
        scores.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    log::debug!(
        "exposure: frame {} written in {:.3} s: assemble {:.3} s, contents and checks {:.3} s, \
         scores {:.3} s, FITS {:.3} s",
        files.camera,
        t0.elapsed().as_secs_f64(),
        t_assembled,
        t_contents - t_assembled,
        t_scores - t_contents,
        t0.elapsed().as_secs_f64() - t_scores
    );
    Ok(ex)
}
