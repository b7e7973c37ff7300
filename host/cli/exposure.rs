//! `desi-extract exposure`: every frame of one exposure (up to 30: cameras b, r, z of
//! spectrographs 0..9), with desi_proc's per-camera grids and PSF errors (spec section 8).
//!
//! Roles: rank 0 reads (the next frame while the current one is extracted), rank 1 writes
//! (the previous frame), ranks 2.. extract with the bundles of each frame split among them.
//! With fewer than 3 ranks, or `--no-overlap`, rank 0 reads and writes and every rank
//! extracts: read, extract, write one frame after the other. The messages of one frame go
//! reader -> extractors (preproc + PSF), reader -> writer (headers, fibermap) and
//! extractors -> writer (finished bundle blocks), in frame order; a frame that fails at any
//! step is carried through as an error message, so the others still finish.

use super::extract::{check_output_dir, frame_data};
use super::InputError;
use clap::Args;
use desi_extract::extract::{assemble_frame, bundle_share, extract_bundles};
use desi_extract::gpu::GpuContext;
use desi_extract::io::{self, PreprocImage};
use desi_extract::parallel::wire::{self, Decoder, Encoder};
use desi_extract::parallel::{extract_bundles_gpu, gpu_for_rank, Comm};
use desi_extract::patch::{ExtractionParams, WavelengthGrid};
use desi_extract::psf::GaussHermitePsf;
use desi_extract::solve::CpuBackend;
use desi_extract::trace::Trace;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

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
    /// Extract on GPUs (each extracting rank takes GPU local_rank % visible GPUs).
    #[arg(long)]
    gpu: bool,
    /// Re-extract frames whose output exists (default: skip them).
    #[arg(long)]
    overwrite: bool,
    /// Read, extract and write one frame after the other even with 3+ ranks (for measuring
    /// what the reader/writer overlap gains).
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
}

/// desi_proc's grid WMIN, WMAX, DW and PSF error of a camera band (spec section 8).
fn camera_setup(band: char) -> Option<(f64, f64, f64, f64)> {
    match band {
        'b' => Some((3600.0, 5800.0, 0.8, 0.04)),
        'r' => Some((5760.0, 7620.0, 0.8, 0.01)),
        'z' => Some((7520.0, 9824.0, 0.8, 0.01)),
        _ => None,
    }
}

/// One frame of the exposure.
#[derive(Clone, Debug)]
struct Job {
    camera: String,
    preproc: PathBuf,
    psf: PathBuf,
    output: PathBuf,
}

/// The outcome of one frame, as the writer records it.
#[derive(Debug)]
struct Outcome {
    camera: String,
    status: Result<Timing, String>,
}

/// Seconds spent on a frame's steps.
#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    read: f64,
    extract: f64,
    write: f64,
    npatch: usize,
}

/// Frames present in `indir`, in spectrograph order (b0 r0 z0 b1 ...), and those skipped
/// because their output exists.
fn find_jobs(args: &ExposureArgs) -> (Vec<Job>, Vec<String>) {
    let expid = format!("{:08}", args.expid);
    let (mut jobs, mut skipped) = (Vec::new(), Vec::new());
    for spectrograph in 0..10 {
        for band in ['b', 'r', 'z'] {
            let camera = format!("{band}{spectrograph}");
            let preproc = args.indir.join(format!("preproc-{camera}-{expid}.fits"));
            if !preproc.is_file() {
                continue;
            }
            let output = args.outdir.join(format!("frame-{camera}-{expid}.fits"));
            if output.exists() && !args.overwrite {
                skipped.push(camera);
                continue;
            }
            jobs.push(Job {
                psf: args.indir.join(format!("psf-{camera}-{expid}.fits")),
                camera,
                preproc,
                output,
            });
        }
    }
    (jobs, skipped)
}

/// Grid and parameters of a frame of `camera` (the writer has no PSF to validate them with).
fn grid_and_params(
    args: &ExposureArgs,
    camera: &str,
) -> Result<(WavelengthGrid, ExtractionParams), String> {
    let band = camera.chars().next().unwrap_or(' ');
    let (wmin, mut wmax, dw, psferr) =
        camera_setup(band).ok_or_else(|| format!("unknown camera {camera}"))?;
    if let Some(span) = args.wave_span {
        wmax = wmax.min(wmin + span);
    }
    let grid = WavelengthGrid::arange(wmin, wmax, dw).map_err(|e| e.to_string())?;
    let params = ExtractionParams {
        specmin: args.specmin,
        nspec: args.nspec,
        psferr,
        ..ExtractionParams::default()
    };
    Ok((grid, params))
}

/// [`grid_and_params`] checked against the frame's PSF.
fn frame_setup(
    args: &ExposureArgs,
    camera: &str,
    psf: &GaussHermitePsf,
) -> Result<(WavelengthGrid, ExtractionParams), String> {
    let (grid, params) = grid_and_params(args, camera)?;
    params
        .validate(psf.hsizey, psf.nspec)
        .map_err(|e| e.to_string())?;
    Ok((grid, params))
}

/// Who does what.
struct Roles {
    reader: usize,
    writer: usize,
    extractors: Vec<usize>,
}

impl Roles {
    fn new(size: usize, overlap: bool) -> Self {
        if overlap && size >= 3 {
            Self {
                reader: 0,
                writer: 1,
                extractors: (2..size).collect(),
            }
        } else {
            Self {
                reader: 0,
                writer: 0,
                extractors: (0..size).collect(),
            }
        }
    }
}

/// Runs `exposure`.
pub fn run(args: ExposureArgs, comm: &Comm) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    if !args.indir.is_dir() {
        return Err(
            InputError(format!("--indir {}: not a directory", args.indir.display())).into(),
        );
    }
    // The output directory is created when missing (as desi_proc does); every rank may try.
    if !args.outdir.is_dir() {
        std::fs::create_dir_all(&args.outdir).map_err(|e| {
            InputError(format!(
                "--outdir {}: cannot create it: {e}",
                args.outdir.display()
            ))
        })?;
    }
    check_output_dir(&args.outdir.join("frame"))?;
    if args.wave_span.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
        return Err(InputError("--wave-span must be a positive number of Angstrom".into()).into());
    }
    let roles = Roles::new(comm.size(), !args.no_overlap);
    let (rank, me_extracts) = (comm.rank(), roles.extractors.contains(&comm.rank()));
    // Rank 0 lists the frames once for everybody (outputs appear while the others start).
    let list = if rank == 0 {
        let (jobs, skipped) = find_jobs(&args);
        let mut e = Encoder::new();
        e.strs(&jobs.iter().map(|j| j.camera.clone()).collect::<Vec<_>>());
        e.strs(&skipped);
        e.finish()
    } else {
        Vec::new()
    };
    let list = comm.broadcast(0, list);
    let mut d = Decoder::new(&list);
    let (cameras, skipped) = (d.strs()?, d.strs()?);
    let expid = format!("{:08}", args.expid);
    let jobs: Vec<Job> = cameras
        .iter()
        .map(|camera| Job {
            camera: camera.clone(),
            preproc: args.indir.join(format!("preproc-{camera}-{expid}.fits")),
            psf: args.indir.join(format!("psf-{camera}-{expid}.fits")),
            output: args.outdir.join(format!("frame-{camera}-{expid}.fits")),
        })
        .collect();
    if rank == roles.writer {
        let mode = if roles.writer != roles.reader {
            format!(
                "reader rank 0, writer rank 1, {} extracting rank(s)",
                roles.extractors.len()
            )
        } else {
            format!("{} rank(s), read/extract/write in turn", comm.size())
        };
        println!(
            "exposure {expid}: {} frame(s) to extract, {} skipped (output exists; --overwrite redoes them); {mode}",
            jobs.len(),
            skipped.len()
        );
    }
    let gpu = if args.gpu && me_extracts {
        let ordinal = gpu_for_rank(comm.local_rank())?;
        Some(GpuContext::new(ordinal)?)
    } else {
        None
    };

    let mut outcomes = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        let t_frame = Instant::now();
        // Reader: the frame's inputs to the extractors and its metadata to the writer.
        let mut local_inputs = None;
        let mut local_meta = None;
        if rank == roles.reader {
            let t0 = Instant::now();
            let inputs = read_inputs(job);
            let read_s = t0.elapsed().as_secs_f64();
            let for_extractors = encode_inputs(&inputs, true, read_s);
            for &dest in roles.extractors.iter().filter(|&&r| r != rank) {
                comm.send(dest, &for_extractors);
            }
            if roles.writer != rank {
                comm.send(roles.writer, &encode_inputs(&inputs, false, read_s));
            }
            local_meta = Some((
                inputs
                    .as_ref()
                    .map(|(psf, img)| (psf.in_psf.clone(), meta_of(img)))
                    .map_err(Clone::clone),
                read_s,
            ));
            local_inputs = Some(inputs);
        }
        // Extractors: their share of the bundles, to the writer.
        let mut local_blocks = None;
        if me_extracts {
            let inputs = match local_inputs.take() {
                Some(inputs) => inputs,
                None => decode_inputs(&comm.recv(roles.reader)).map(|(inputs, _)| inputs)?,
            };
            let t0 = Instant::now();
            let index_in = roles
                .extractors
                .iter()
                .position(|&r| r == rank)
                .unwrap_or(0);
            let blocks = inputs.and_then(|(psf, img)| {
                extract_share(
                    &args,
                    job,
                    &psf,
                    &img,
                    gpu.as_ref(),
                    index_in,
                    roles.extractors.len(),
                )
                .map_err(|e| format!("rank {rank}: {e}"))
            });
            let extract_s = t0.elapsed().as_secs_f64();
            let mut e = Encoder::new();
            e.f64(extract_s);
            e.bytes(&wire::encode_blocks(&blocks));
            let message = e.finish();
            if rank == roles.writer {
                local_blocks = Some(message);
            } else {
                comm.send(roles.writer, &message);
            }
        }
        // Writer: assemble and write.
        if rank == roles.writer {
            let (meta, read_s) = match local_meta.take() {
                Some(meta) => meta,
                None => {
                    let (inputs, read_s) = decode_inputs(&comm.recv(roles.reader))?;
                    (inputs.map(|(psf, img)| (psf.in_psf.clone(), img)), read_s)
                }
            };
            let mut blocks = Ok(Vec::new());
            let mut extract_s: f64 = 0.0;
            for &source in &roles.extractors {
                let message = if source == rank {
                    local_blocks.take().unwrap_or_default()
                } else {
                    comm.recv(source)
                };
                let mut d = Decoder::new(&message);
                extract_s = extract_s.max(d.f64()?);
                let theirs = wire::decode_blocks(&d.bytes()?)?;
                blocks = match (blocks, theirs) {
                    (Ok(mut all), Ok(more)) => {
                        all.extend(more);
                        Ok(all)
                    }
                    (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                };
            }
            let status = match meta {
                Err(e) => Err(e),
                Ok((in_psf, image)) => blocks.and_then(|blocks| {
                    let t0 = Instant::now();
                    let npatch = blocks.iter().map(|b| b.npatch).sum();
                    write_frame(&args, job, blocks, in_psf.as_deref(), &image).map(|()| Timing {
                        read: read_s,
                        extract: extract_s,
                        write: t0.elapsed().as_secs_f64(),
                        npatch,
                    })
                }),
            };
            match &status {
                Ok(t) => println!(
                    "exposure {expid}: frame {}/{} {} written in {:.2} s (read {:.2} s, extract {:.2} s, write {:.2} s) -> {}",
                    index + 1,
                    jobs.len(),
                    job.camera,
                    t_frame.elapsed().as_secs_f64(),
                    t.read,
                    t.extract,
                    t.write,
                    job.output.display()
                ),
                Err(e) => println!(
                    "exposure {expid}: frame {}/{} {} FAILED: {e}",
                    index + 1,
                    jobs.len(),
                    job.camera
                ),
            }
            outcomes.push(Outcome {
                camera: job.camera.clone(),
                status,
            });
        }
    }
    let failed = outcomes.iter().filter(|o| o.status.is_err()).count();
    if rank == roles.writer {
        print_summary(&expid, &outcomes, &skipped, start.elapsed().as_secs_f64());
    }
    // Everybody exits with the writer's verdict.
    let verdict = comm.broadcast(roles.writer, vec![u8::from(failed > 0)]);
    Ok(if verdict.first().copied().unwrap_or(1) != 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads a frame's PSF and preproc image (an error names the file and the problem).
fn read_inputs(job: &Job) -> Result<(GaussHermitePsf, PreprocImage), String> {
    let psf = io::read_psf(&job.psf).map_err(|e| e.to_string())?;
    let image = io::read_preproc(&job.preproc).map_err(|e| e.to_string())?;
    Ok((psf, image))
}

/// The preproc image without its pixels (what the writer needs).
fn meta_of(img: &PreprocImage) -> PreprocImage {
    PreprocImage {
        image: Vec::new(),
        ivar: Vec::new(),
        mask: Vec::new(),
        readnoise: None,
        ..img.clone()
    }
}

/// The reader's message: read time, then the inputs (with or without pixels) or the error.
fn encode_inputs(
    inputs: &Result<(GaussHermitePsf, PreprocImage), String>,
    pixels: bool,
    read_s: f64,
) -> Vec<u8> {
    let mut e = Encoder::new();
    e.f64(read_s);
    match inputs {
        Ok((psf, img)) => {
            e.usize(0);
            wire::put_psf(&mut e, psf);
            wire::put_preproc(&mut e, img, pixels);
        }
        Err(msg) => {
            e.usize(1);
            e.str(msg);
        }
    }
    e.finish()
}

/// Decodes [`encode_inputs`].
type Inputs = Result<(GaussHermitePsf, PreprocImage), String>;
fn decode_inputs(bytes: &[u8]) -> Result<(Inputs, f64), wire::WireError> {
    let mut d = Decoder::new(bytes);
    let read_s = d.f64()?;
    let inputs = if d.usize()? == 0 {
        let psf = wire::get_psf(&mut d)?;
        Ok((psf, wire::get_preproc(&mut d)?))
    } else {
        Err(d.str()?)
    };
    d.end()?;
    Ok((inputs, read_s))
}

/// Extracts this rank's share of the frame's bundles.
fn extract_share(
    args: &ExposureArgs,
    job: &Job,
    psf: &GaussHermitePsf,
    image: &PreprocImage,
    gpu: Option<&GpuContext>,
    index: usize,
    count: usize,
) -> Result<Vec<desi_extract::extract::BundleBlock>, String> {
    let (grid, params) = frame_setup(args, &job.camera, psf)?;
    let share = bundle_share(params.bundle_starts().len(), index, count, gpu.is_some());
    let trace = Trace::new();
    let progress = |_: usize, _: usize| {};
    let set = match gpu {
        Some(g) => extract_bundles_gpu(
            g, psf, image, &grid, &params, &share, false, &progress, &trace,
        ),
        None => extract_bundles(
            psf,
            image,
            &grid,
            &params,
            &CpuBackend,
            &share,
            false,
            &progress,
            &trace,
        ),
    };
    set.map(|s| s.blocks).map_err(|e| e.to_string())
}

/// Assembles and writes a frame.
fn write_frame(
    args: &ExposureArgs,
    job: &Job,
    blocks: Vec<desi_extract::extract::BundleBlock>,
    in_psf: Option<&str>,
    image: &PreprocImage,
) -> Result<(), String> {
    let ndiag = blocks.first().map_or(0, |b| b.arrays.ndiag);
    let (grid, params) = grid_and_params(args, &job.camera)?;
    let ex = assemble_frame(&grid, &params, ndiag, blocks, None).map_err(|e| e.to_string())?;
    let frame = frame_data(&ex, image, in_psf, &job.psf, &job.preproc, &grid);
    io::write_frame(&job.output, &frame, image.fibermap.as_ref()).map_err(|e| e.to_string())
}

/// The table printed by the writer at the end.
fn print_summary(expid: &str, outcomes: &[Outcome], skipped: &[String], wall: f64) {
    println!("exposure {expid} summary:");
    println!(
        "  {:<6} {:<8} {:>8} {:>10} {:>8} {:>8}  detail",
        "camera", "status", "read_s", "extract_s", "write_s", "patches"
    );
    for o in outcomes {
        match &o.status {
            Ok(t) => println!(
                "  {:<6} {:<8} {:>8.2} {:>10.2} {:>8.2} {:>8}",
                o.camera, "ok", t.read, t.extract, t.write, t.npatch
            ),
            Err(e) => println!(
                "  {:<6} {:<8} {:>8} {:>10} {:>8} {:>8}  {e}",
                o.camera, "FAILED", "-", "-", "-", "-"
            ),
        }
    }
    for camera in skipped {
        println!(
            "  {:<6} {:<8} {:>8} {:>10} {:>8} {:>8}  output exists",
            camera, "skipped", "-", "-", "-", "-"
        );
    }
    let written = outcomes.iter().filter(|o| o.status.is_ok()).count();
    let failed = outcomes.len() - written;
    println!(
        "exposure {expid}: {written} written, {} skipped, {failed} failed in {wall:.2} s ({:.2} frames/s)",
        skipped.len(),
        written as f64 / wall.max(1e-9)
    );
    if failed > 0 {
        let names: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.status.is_err())
            .map(|o| o.camera.as_str())
            .collect();
        eprintln!("exposure {expid}: failed frame(s): {}", names.join(" "));
    }
}
