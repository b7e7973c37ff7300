//! The pipeline of 3+ ranks ([`super::roles::Mode::Pipeline`]): rank 0 reads, rank 1 writes,
//! ranks 2.. extract whole frames, frame `i` on extractor `i mod E`.
//!
//! The reader keeps up to E+1 frames being read on background threads and sends each, in frame
//! order, to its extractor (PSF and pixels). An extractor extracts one frame on a worker thread
//! while its main thread receives the next and sends the previous one's blocks, with the
//! frame's header and fibermap, to the writer, which takes them in whatever order they finish
//! and writes up to [`WRITE_THREADS`] frames at once on background threads.

use super::frame::{extract_whole, Finished, WholeFrame};
use super::messages::{
    finished_message, inputs_message, read_finished_message, read_inputs_message,
};
use super::read_ahead::ReadAhead;
use super::summary::{ExposureObserver, FrameOutcome};
use super::write_pool::WritePool;
use super::{ExposureError, RankContext};
use crate::parallel::wire::{Incoming, WireError};
use std::thread::ScopedJoinHandle;

/// Frames written at the same time by the writing rank (background threads).
pub(crate) const WRITE_THREADS: usize = 3;
/// Most frames being read ahead by the reading rank (bounds its memory, ~0.3 GB a frame).
const MAX_READ_AHEAD: usize = 8;

/// Rank 0: reads every frame and sends it to its extractor.
pub(crate) fn reader(ctx: &RankContext) -> Result<(), ExposureError> {
    let depth = (ctx.layout.extractors() + 1).min(MAX_READ_AHEAD);
    std::thread::scope(|scope| {
        let mut reads = ReadAhead::new(scope, ctx.config, ctx.frames, depth, ctx.start);
        let mut index = 0;
        while let Some(read) = reads.next_frame() {
            let message = inputs_message(index, &read)?;
            ctx.comm
                .send_message(ctx.layout.extractor_of(index), &message);
            index += 1;
        }
        Ok(())
    })
}

/// Rank 1: receives the finished frames in any order and writes them; their outcomes.
pub(crate) fn writer(
    ctx: &RankContext,
    observer: &mut dyn ExposureObserver,
) -> Result<Vec<FrameOutcome>, ExposureError> {
    let n = ctx.frames.len();
    std::thread::scope(|scope| {
        let mut pool = WritePool::new(scope, ctx, WRITE_THREADS, observer);
        let mut seen = vec![false; n];
        for _ in 0..n {
            let (_, message) = ctx.comm.recv_message_any()?;
            let (index, frame) = read_finished_message(message)?;
            match seen.get_mut(index) {
                Some(seen) if !*seen => *seen = true,
                _ => {
                    return Err(
                        WireError(format!("frame {index} received twice or out of range")).into(),
                    )
                }
            }
            pool.submit(index, frame);
        }
        Ok(pool.finish())
    })
}

/// Ranks 2..: extractor `index` of `count` extracts frames `index, index + count, ...`, each
/// on a worker thread while the main thread (the only one that calls MPI) receives the next
/// frame and sends the previous one to the writer.
pub(crate) fn extractor(
    ctx: &RankContext,
    index: usize,
    count: usize,
) -> Result<(), ExposureError> {
    let (rank, start) = (ctx.comm.rank(), ctx.start);
    let extract_one = |frame: usize, message: Incoming| -> Result<Finished, ExposureError> {
        let (at, read) = read_inputs_message(message)?;
        check_frame(at, frame)?;
        let who = format!("rank {rank}: ");
        Ok(extract_whole(
            ctx.config,
            &ctx.frames[frame],
            read,
            ctx.backend,
            &who,
            WholeFrame::Blocks,
            start,
        ))
    };
    let join = |(frame, handle): (usize, ScopedJoinHandle<'_, Result<Finished, ExposureError>>)| {
        let finished = handle.join().map_err(|_| {
            ExposureError::ThreadPanicked(format!("rank {rank}: the extraction thread"))
        })??;
        Ok::<_, ExposureError>((frame, finished))
    };
    let send = |(frame, finished): (usize, Finished)| -> Result<(), ExposureError> {
        ctx.comm
            .send_message(1, &finished_message(frame, &finished)?);
        Ok(())
    };
    std::thread::scope(|scope| {
        let mut running = None;
        for frame in (index..ctx.frames.len()).step_by(count) {
            let message = ctx.comm.recv_message(0)?;
            let previous = running.take().map(join).transpose()?;
            let extract_one = &extract_one;
            running = Some((frame, scope.spawn(move || extract_one(frame, message))));
            if let Some(done) = previous {
                send(done)?;
            }
        }
        if let Some(done) = running.take().map(join).transpose()? {
            send(done)?;
        }
        Ok(())
    })
}

/// A message of frame `got` arrived where frame `want` was expected (a logic error).
pub(crate) fn check_frame(got: usize, want: usize) -> Result<(), WireError> {
    if got == want {
        Ok(())
    } else {
        Err(WireError(format!(
            "expected frame {want}, received frame {got}"
        )))
    }
}
