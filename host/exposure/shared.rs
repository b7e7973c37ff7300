//! Shared frames ([`super::roles::Mode::Shared`]: 1 or 2 ranks, or `--no-overlap`): rank 0
//! reads and writes, every rank extracts its share of each frame's bundles, one frame after
//! the other. With overlap rank 0 reads the next frames and writes the previous ones on
//! background threads; without, it reads, extracts and writes strictly in turn (what the
//! overlap gains is measurable). With one rank nothing is encoded or copied between the steps,
//! and a single GPU process keeps two (or more) frames in flight on as many GPU contexts.

use super::frame::{
    extract_share, extract_whole, Extracted, Finished, ReadFrame, Spectra, WholeFrame,
};
use super::jobs::FrameFiles;
use super::messages::{inputs_message, read_inputs_message, read_share_message, share_message};
use super::pipeline::{check_frame, WRITE_THREADS};
use super::read_ahead::ReadAhead;
use super::summary::{ExposureObserver, FrameOutcome, FrameSteps};
use super::write_pool::WritePool;
use super::{ExposureConfig, ExposureError, RankContext};
use crate::solve::Backend;
use std::collections::VecDeque;
use std::thread::ScopedJoinHandle;
use std::time::Instant;

/// Frames a single GPU process reads ahead, in parallel (each ~0.3 GB in memory): enough that
/// the next frames are read while the ones in flight extract, even on a cold page cache.
pub(crate) const READ_AHEAD_IN_FLIGHT: usize = 4;
/// Frames a single GPU process writes at once (each ~0.15 GB of results in memory): a full
/// frame takes 0.5-0.7 s to assemble and write on one core (2-core development machine), so
/// that the extraction loop, which waits for a free writer before it starts the next frame,
/// never waits at GPU speed (0.1-0.2 s a frame).
const WRITE_THREADS_IN_FLIGHT: usize = 6;

/// Rank 0: reads each frame, extracts it with the other ranks and writes it; the outcomes.
pub(crate) fn root(
    ctx: &RankContext,
    overlap: bool,
    observer: &mut dyn ExposureObserver,
) -> Result<Vec<FrameOutcome>, ExposureError> {
    let (read_depth, writers) = if overlap { (2, WRITE_THREADS) } else { (0, 0) };
    std::thread::scope(|scope| {
        let mut reads = ReadAhead::new(scope, ctx.config, ctx.frames, read_depth, ctx.start);
        let mut pool = WritePool::new(scope, ctx, writers, observer);
        for (index, files) in ctx.frames.iter().enumerate() {
            let Some(read) = reads.next_frame() else {
                break;
            };
            let frame = root_frame(ctx, files, index, read)?;
            pool.submit(index, frame);
        }
        Ok(pool.finish())
    })
}

/// A frame extracted whole by this process, which writes it: assembled as it is extracted
/// ([`WholeFrame::Assembled`]).
fn extract_assembled(
    config: &ExposureConfig,
    files: &FrameFiles,
    read: ReadFrame,
    backend: &dyn Backend,
    start: Instant,
) -> Finished {
    extract_whole(
        config,
        files,
        read,
        backend,
        "",
        WholeFrame::Assembled,
        start,
    )
}

/// Rank 0's part of one frame: hands it to the other ranks (with one rank it extracts it
/// whole), extracts its own share and gathers theirs in rank order.
fn root_frame(
    ctx: &RankContext,
    files: &FrameFiles,
    index: usize,
    read: ReadFrame,
) -> Result<Finished, ExposureError> {
    let size = ctx.comm.size();
    if size == 1 {
        return Ok(extract_assembled(
            ctx.config,
            files,
            read,
            ctx.backend,
            ctx.start,
        ));
    }
    let message = inputs_message(index, &read)?;
    for dest in 1..size {
        ctx.comm.send_message(dest, &message);
    }
    drop(message);
    let t0 = Instant::now();
    let mut steps = FrameSteps::default();
    let mut blocks = match &read.inputs {
        Ok(inputs) => {
            extract_share(ctx.config, files, inputs, ctx.backend, (0, size), ctx.start).map(
                |(blocks, device)| {
                    // Rank 0's own device use (the others' clocks differ).
                    steps = device;
                    blocks
                },
            )
        }
        Err(e) => Err(e.clone()),
    };
    let mut extract_s = t0.elapsed().as_secs_f64();
    for source in 1..size {
        let (their_s, theirs) = read_share_message(ctx.comm.recv_message(source)?)?;
        extract_s = extract_s.max(their_s);
        blocks = match (blocks, theirs) {
            (Ok(mut all), Ok(more)) => {
                all.extend(more);
                Ok(all)
            }
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
    }
    let result = match (read.inputs, blocks) {
        (Ok(inputs), Ok(blocks)) => Ok(Extracted::new(inputs, Spectra::Blocks(blocks))),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    };
    steps.read = (read.read_start_s, read.read_start_s + read.read_s);
    let extract_start_s = t0.saturating_duration_since(ctx.start).as_secs_f64();
    steps.extract = (extract_start_s, extract_start_s + extract_s);
    Ok(Finished {
        read_s: read.read_s,
        extract_s,
        steps,
        result,
    })
}

/// Ranks 1..: extracts share `index` of `size` of every frame and sends it to rank 0.
pub(crate) fn member(ctx: &RankContext, index: usize, size: usize) -> Result<(), ExposureError> {
    for (frame, files) in ctx.frames.iter().enumerate() {
        let (at, read) = read_inputs_message(ctx.comm.recv_message(0)?)?;
        check_frame(at, frame)?;
        let t0 = Instant::now();
        let blocks = read.inputs.and_then(|inputs| {
            extract_share(
                ctx.config,
                files,
                &inputs,
                ctx.backend,
                (index, size),
                ctx.start,
            )
            .map(|(blocks, _)| blocks)
            .map_err(|e| format!("rank {index}: {e}"))
        });
        let share = blocks.as_deref().map_err(String::as_str);
        let message = share_message(t0.elapsed().as_secs_f64(), share)?;
        ctx.comm.send_message(0, &message);
    }
    Ok(())
}

/// One GPU process with a GPU context per frame in flight (`backends`): each frame extracts
/// on a free context on a worker thread while the next frames are read (`reads`, already
/// started) and the finished ones written. A frame starts as soon as any running one has
/// finished (whichever comes first) and it is read, so its upload and spots overlap the other
/// frames' batches and host stages and the device always has a frame's work queued; finished
/// frames go to the write pool without the loop waiting for a write (it reaps the writes that
/// are done and blocks only past [`WRITE_THREADS_IN_FLIGHT`] pending ones).
///
/// `DESI_EXPOSURE_LOOP=fifo` keeps the loop before issue #15: contexts in turn, a frame
/// starting only when the oldest running one has finished and its write was handed over.
pub(crate) fn frames_in_flight(
    ctx: &RankContext,
    backends: &[&dyn Backend],
    reads: ReadAhead<'_, '_>,
    observer: &mut dyn ExposureObserver,
) -> Result<Vec<FrameOutcome>, ExposureError> {
    if fifo_loop() {
        return frames_in_flight_fifo(ctx, backends, reads, observer);
    }
    frames_in_flight_any(ctx, backends, reads, observer)
}

/// Whether `DESI_EXPOSURE_LOOP=fifo` asks for the loop before issue #15.
pub(crate) fn fifo_loop() -> bool {
    std::env::var("DESI_EXPOSURE_LOOP").is_ok_and(|v| v.trim() == "fifo")
}

/// A frame that finished extracting on context `slot`: its index and result (`None`: the
/// extraction thread panicked).
type Done = (usize, usize, Option<Finished>);

fn frames_in_flight_any(
    ctx: &RankContext,
    backends: &[&dyn Backend],
    mut reads: ReadAhead<'_, '_>,
    observer: &mut dyn ExposureObserver,
) -> Result<Vec<FrameOutcome>, ExposureError> {
    let n = backends.len().max(1);
    std::thread::scope(|scope| {
        let mut pool = WritePool::new(scope, ctx, WRITE_THREADS_IN_FLIGHT, observer);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
        // Contexts free for a frame, the lowest first.
        let mut free: Vec<usize> = (0..n).rev().collect();
        let (mut next, mut running) = (0, 0);
        loop {
            while next < ctx.frames.len() && !free.is_empty() {
                let Some(read) = reads.next_frame() else {
                    next = ctx.frames.len();
                    break;
                };
                let slot = free.pop().unwrap_or(0);
                let (config, start, files, index) =
                    (ctx.config, ctx.start, &ctx.frames[next], next);
                let backend = backends.get(slot).copied().unwrap_or(ctx.backend);
                let tx = done_tx.clone();
                scope.spawn(move || {
                    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        extract_assembled(config, files, read, backend, start)
                    }))
                    .ok();
                    // The loop holds a sender and waits for every frame it started.
                    let _ = tx.send((slot, index, finished));
                });
                next += 1;
                running += 1;
            }
            if running == 0 {
                break;
            }
            let Ok((slot, index, finished)) = done_rx.recv() else {
                break;
            };
            running -= 1;
            free.push(slot);
            let finished = finished
                .ok_or_else(|| ExposureError::ThreadPanicked("an extraction thread".into()))?;
            pool.submit(index, finished);
        }
        Ok(pool.finish())
    })
}

/// The loop before issue #15 (`DESI_EXPOSURE_LOOP=fifo`): frame `i` on context `i mod N`,
/// started when the oldest of the N running frames has finished and been handed to the
/// write pool.
fn frames_in_flight_fifo(
    ctx: &RankContext,
    backends: &[&dyn Backend],
    mut reads: ReadAhead<'_, '_>,
    observer: &mut dyn ExposureObserver,
) -> Result<Vec<FrameOutcome>, ExposureError> {
    let join = |handle: ScopedJoinHandle<'_, Finished>| {
        handle
            .join()
            .map_err(|_| ExposureError::ThreadPanicked("an extraction thread".into()))
    };
    let n = backends.len().max(1);
    std::thread::scope(|scope| {
        let mut pool = WritePool::new(scope, ctx, WRITE_THREADS_IN_FLIGHT, observer);
        let mut running = VecDeque::with_capacity(n);
        for (index, files) in ctx.frames.iter().enumerate() {
            if running.len() >= n {
                if let Some((done, oldest)) = running.pop_front() {
                    pool.submit(done, join(oldest)?);
                }
            }
            let Some(read) = reads.next_frame() else {
                break;
            };
            let (config, start) = (ctx.config, ctx.start);
            let backend = backends.get(index % n).copied().unwrap_or(ctx.backend);
            let handle =
                scope.spawn(move || extract_assembled(config, files, read, backend, start));
            running.push_back((index, handle));
        }
        while let Some((done, oldest)) = running.pop_front() {
            pool.submit(done, join(oldest)?);
        }
        Ok(pool.finish())
    })
}
