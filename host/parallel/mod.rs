//! Spreading work over processes (MPI ranks) and GPUs: the process group ([`Comm`]), the
//! messages the ranks exchange ([`wire`]) and one frame over the ranks
//! ([`extract_frame_on_ranks`]).
//!
//! A frame over N ranks: every rank extracts its share of the bundles
//! ([`crate::extract::bundle_share`]) with [`crate::extract::extract_bundles`] on its backend,
//! the finished row blocks go to one rank, and [`crate::extract::assemble_frame`] puts them
//! together and computes the mask on the whole frame, exactly as the single-process driver
//! does: the output does not depend on N.

pub mod comm;
pub mod wire;

pub use comm::{Comm, Launch};

use crate::extract::{
    assemble_frame, bundle_share, extract_bundles, ExtractError, Extraction, Progress,
};
use crate::gpu::{GpuContext, GpuError};
use crate::job::FrameJob;
use crate::solve::Backend;
use crate::trace::Trace;
use std::time::Instant;

/// The GPU ordinal of a rank: its node-local rank modulo the visible GPUs (several ranks may
/// share a GPU).
///
/// # Errors
/// No CUDA driver or no visible GPU.
pub fn gpu_for_rank(local_rank: usize) -> Result<usize, GpuError> {
    let count = GpuContext::device_count()?;
    if count == 0 {
        return Err(GpuError::NoDriver("the driver sees no CUDA device".into()));
    }
    Ok(local_rank % count)
}

/// Errors of a frame spread over ranks.
#[derive(Debug, thiserror::Error)]
pub enum RanksError {
    /// This rank's own extraction failed.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// Another rank's extraction failed (its message); `input` when its request or files were
    /// at fault (the message then carries [`BAD_INPUT_MARK`]).
    #[error("{message}")]
    Remote {
        /// The other rank's error message.
        message: String,
        /// Whether it was a bad input (exit code 1) rather than a runtime failure.
        input: bool,
    },
    /// A message between ranks could not be decoded.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
}

impl RanksError {
    /// Whether this rank's own request or files are at fault (see
    /// [`ExtractError::is_input_error`]).
    pub fn is_input_error(&self) -> bool {
        match self {
            RanksError::Extract(err) => err.is_input_error(),
            RanksError::Remote { input, .. } => *input,
            RanksError::Wire(_) => false,
        }
    }

    /// The error of another rank from the text it sent.
    fn remote(message: String) -> Self {
        let input = message.contains(BAD_INPUT_MARK);
        RanksError::Remote { message, input }
    }
}

/// Marks the text a rank sends for an error of its request or files (so that the writing rank
/// exits 1 for it, as the same run on one process does).
pub const BAD_INPUT_MARK: &str = " (bad input)";

/// Extracts one frame with its bundles spread over the ranks of `comm` (round-robin on the
/// CPU, as gpu_specter; one run of consecutive bundles per rank on backends that can fall back,
/// i.e. devices, which then evaluate each run's spots once): every rank extracts its share with
/// [`crate::extract::extract_bundles`], rank 0 gathers the finished blocks and assembles the
/// frame (`Some`), the other ranks return `None` once their blocks are sent. The frame is
/// bitwise identical to [`crate::extract::extract_frame`] on one rank.
///
/// # Errors
/// Any rank's extraction error (rank 0 reports the others'), or a message that does not decode.
pub fn extract_frame_on_ranks(
    comm: &Comm,
    job: &FrameJob,
    backend: &dyn Backend,
    progress: Progress,
    trace: &Trace,
) -> Result<Option<Extraction>, RanksError> {
    let nbundle = job.bundle_starts().len();
    let contiguous = backend.can_fall_back();
    let share = bundle_share(nbundle, comm.rank(), comm.size(), contiguous);
    let (mine, times) = match extract_bundles(job, backend, &share, progress, trace) {
        Ok(set) => (Ok(set.blocks), set.times),
        Err(err) => (Err(err), Default::default()),
    };
    if comm.rank() != 0 {
        let share = mine.map_err(|err| {
            let mark = if err.is_input_error() {
                BAD_INPUT_MARK
            } else {
                ""
            };
            (format!("rank {}{mark}: {err}", comm.rank()), err)
        });
        let sent = share.as_deref().map_err(|(text, _)| text.as_str());
        comm.send_message(0, &wire::blocks::share_message(sent)?);
        return share.map(|_| None).map_err(|(_, err)| err.into());
    }
    let mut blocks = mine?;
    for source in 1..comm.size() {
        let theirs = wire::blocks::read_share(comm.recv_message(source)?)?;
        blocks.extend(theirs.map_err(RanksError::remote)?);
    }
    let t0 = Instant::now();
    let model_shape = job.want_model.then_some((job.image.ny, job.image.nx));
    let mut ex = assemble_frame(job.grid, job.params, job.ndiag(), blocks, model_shape)?;
    ex.times = times;
    ex.times.finalize += t0.elapsed();
    Ok(Some(ex))
}
