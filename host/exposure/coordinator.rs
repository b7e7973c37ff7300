//! Handing out the frames of a job: the chunks a group asks for, from the job's queue (on
//! the coordinating rank, or within the group's writer when the job has one group), and the
//! messages between a group's writer and the coordinator.
//!
//! A group's writer asks for its next chunk with the outcomes of the previous one; the reply
//! is the next chunk or `None` when the queue is empty, after which the group ends. A group
//! takes at most its `want`, and at most its share of what is left (guided self-scheduling:
//! `ceil(left / groups)`), so that groups finish together and a slow frame holds up only its
//! own group's chunk.

use super::jobs::FrameFiles;
use super::night::PlannedExposure;
use super::summary::FrameOutcome;
use super::ExposureError;
use crate::parallel::wire::WireError;
use crate::parallel::Comm;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// One frame of the job: its place in the job's frame list and its files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct JobFrame {
    /// Index in the job's frame list.
    pub index: usize,
    /// Its files.
    pub files: FrameFiles,
}

/// Frames handed to a group at once, with the job's frame count (for progress lines).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Chunk {
    /// Frames in the job.
    pub total: usize,
    /// The frames of the chunk.
    pub frames: Vec<JobFrame>,
}

/// A group writer's request: how many frames it wants and the outcomes of its last chunk
/// (job frame index, outcome).
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    want: usize,
    /// Frames the group's writing process holds at once (its summary's `frames_in_flight`).
    in_flight: usize,
    done: Vec<(usize, FrameOutcome)>,
}

/// What a group's writer sends the coordinator: first its share of the plan (the exposures
/// it planned, by index in the job's list), then requests for chunks.
#[derive(Debug, Serialize, Deserialize)]
enum ToCoordinator {
    Plan(Vec<(usize, PlannedExposure)>),
    Next(Request),
}

/// How long the coordinator sleeps between looks for a request.
const POLL: Duration = Duration::from_millis(2);

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(value).map_err(|e| WireError(format!("cannot encode a job message: {e}")))
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    serde_json::from_slice(bytes).map_err(|e| WireError(format!("malformed job message: {e}")))
}

/// The frames left to hand out.
#[derive(Debug)]
pub(crate) struct Queue {
    total: usize,
    left: VecDeque<JobFrame>,
    groups: usize,
}

impl Queue {
    /// A queue of `frames` for `groups` groups.
    pub fn new(frames: Vec<JobFrame>, groups: usize) -> Self {
        Self {
            total: frames.len(),
            left: frames.into(),
            groups: groups.max(1),
        }
    }

    /// The next chunk for a group that wants `want` frames (`None` when nothing is left).
    pub fn next_chunk(&mut self, want: usize) -> Option<Chunk> {
        if self.left.is_empty() {
            return None;
        }
        let share = self.left.len().div_ceil(self.groups);
        let take = want.clamp(1, share.max(1)).min(self.left.len());
        Some(Chunk {
            total: self.total,
            frames: self.left.drain(..take).collect(),
        })
    }
}

/// What the groups sent back: every outcome (job frame index, world rank of the group writer
/// that sent it, outcome) and the most frames a group's process held at once.
pub(crate) type Gathered = (Vec<(usize, usize, FrameOutcome)>, usize);

/// The coordinator: gathers the `groups` groups' shares of the plan, makes the queue of the
/// whole plan with `make_queue` (which also reports it), then serves the groups' requests
/// until each has been told that the queue is empty. A request that comes before every share
/// is in waits for them.
pub(crate) fn serve(
    world: &Comm,
    groups: usize,
    make_queue: impl FnOnce(Vec<(usize, PlannedExposure)>) -> Queue,
) -> Result<Gathered, ExposureError> {
    let mut shares = Vec::new();
    let mut early = VecDeque::new();
    let mut planned = 0;
    while planned < groups {
        let (source, bytes) = world.recv_any(Some(POLL));
        match decode(&bytes)? {
            ToCoordinator::Plan(share) => {
                shares.extend(share);
                planned += 1;
            }
            ToCoordinator::Next(request) => early.push_back((source, request)),
        }
    }
    let mut queue = make_queue(shares);
    let mut outcomes = Vec::new();
    let mut in_flight = 1;
    let mut active = groups;
    while active > 0 {
        let (source, request) = match early.pop_front() {
            Some(request) => request,
            None => {
                let (source, bytes) = world.recv_any(Some(POLL));
                match decode(&bytes)? {
                    ToCoordinator::Next(request) => (source, request),
                    ToCoordinator::Plan(_) => {
                        return Err(WireError(format!(
                            "rank {source} sent its share of the plan twice"
                        ))
                        .into())
                    }
                }
            }
        };
        in_flight = in_flight.max(request.in_flight);
        outcomes.extend(request.done.into_iter().map(|(i, o)| (i, source, o)));
        let chunk = queue.next_chunk(request.want);
        if chunk.is_none() {
            active -= 1;
        }
        world.send(source, &encode(&chunk)?);
    }
    Ok((outcomes, in_flight))
}

/// Sends a group's share of the plan to the coordinator (the group's writer, before its first
/// request).
pub(crate) fn send_plan(
    world: &Comm,
    coordinator: usize,
    share: Vec<(usize, PlannedExposure)>,
) -> Result<(), ExposureError> {
    world.send(coordinator, &encode(&ToCoordinator::Plan(share))?);
    Ok(())
}

/// Where a group's writer gets its chunks.
pub(crate) enum Source<'a> {
    /// The job's one group: the queue is here; the outcomes stay here.
    Local {
        queue: Queue,
        done: Vec<(usize, FrameOutcome)>,
        in_flight: usize,
    },
    /// Groups of a job with a coordinator at world rank `coordinator`.
    Remote { world: &'a Comm, coordinator: usize },
}

impl Source<'_> {
    /// Hands in the outcomes of the last chunk and takes the next (`None`: the group is done);
    /// `in_flight`: the frames the group's writing process holds at once.
    pub fn next_chunk(
        &mut self,
        want: usize,
        in_flight: usize,
        done: Vec<(usize, FrameOutcome)>,
    ) -> Result<Option<Chunk>, ExposureError> {
        match self {
            Source::Local {
                queue,
                done: all,
                in_flight: held,
            } => {
                all.extend(done);
                *held = in_flight;
                Ok(queue.next_chunk(want))
            }
            Source::Remote { world, coordinator } => {
                let request = Request {
                    want,
                    in_flight,
                    done,
                };
                world.send(*coordinator, &encode(&ToCoordinator::Next(request))?);
                Ok(decode(&world.recv(*coordinator))?)
            }
        }
    }

    /// The outcomes kept here (a local source's) and the frames its process held at once.
    pub fn into_outcomes(self) -> (Vec<(usize, FrameOutcome)>, usize) {
        match self {
            Source::Local {
                done, in_flight, ..
            } => (done, in_flight),
            Source::Remote { .. } => (Vec::new(), 1),
        }
    }
}

/// Encodes a chunk (or the end) for the group's other ranks.
pub(crate) fn chunk_bytes(chunk: &Option<Chunk>) -> Result<Vec<u8>, WireError> {
    encode(chunk)
}

/// Decodes [`chunk_bytes`].
pub(crate) fn read_chunk(bytes: &[u8]) -> Result<Option<Chunk>, WireError> {
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn frames(n: usize) -> Vec<JobFrame> {
        (0..n)
            .map(|index| JobFrame {
                index,
                files: FrameFiles::new("r0", Path::new("/in"), Path::new("/out"), index as u64),
            })
            .collect()
    }

    #[test]
    fn chunks_are_guided_shares_and_every_frame_goes_out_once() {
        let mut queue = Queue::new(frames(9), 2);
        let sizes: Vec<usize> = std::iter::from_fn(|| queue.next_chunk(100))
            .map(|c| {
                assert_eq!(c.total, 9);
                c.frames.len()
            })
            .collect();
        // ceil(9/2) = 5, ceil(4/2) = 2, 1, 1.
        assert_eq!(sizes, [5, 2, 1, 1]);
        let mut queue = Queue::new(frames(90), 4);
        let mut seen = Vec::new();
        while let Some(chunk) = queue.next_chunk(12) {
            assert!(chunk.frames.len() <= 12);
            seen.extend(chunk.frames.iter().map(|f| f.index));
        }
        assert_eq!(seen, (0..90).collect::<Vec<_>>());
        // Fewer frames than groups, and none at all.
        let mut queue = Queue::new(frames(1), 3);
        assert_eq!(queue.next_chunk(4).map(|c| c.frames.len()), Some(1));
        assert!(queue.next_chunk(4).is_none());
        assert!(Queue::new(Vec::new(), 2).next_chunk(1).is_none());
    }

    #[test]
    fn a_local_source_keeps_the_outcomes_and_chunks_survive_encoding() {
        let mut source = Source::Local {
            queue: Queue::new(frames(3), 1),
            done: Vec::new(),
            in_flight: 1,
        };
        let chunk = source.next_chunk(8, 3, Vec::new()).unwrap();
        let bytes = chunk_bytes(&chunk).unwrap();
        assert_eq!(read_chunk(&bytes).unwrap(), chunk);
        let outcome = FrameOutcome {
            camera: "r0".into(),
            output: "/out/frame-r0-00000000.fits".into(),
            status: Err("preproc: truncated".into()),
            finished_at_s: 1.5,
            device_intervals: vec![(0.5, 1.0)],
        };
        let request = Request {
            want: 2,
            in_flight: 3,
            done: vec![(0, outcome.clone())],
        };
        let back: Request = decode(&encode(&request).unwrap()).unwrap();
        assert_eq!((back.done, back.in_flight), (request.done, 3));
        assert!(source
            .next_chunk(8, 3, vec![(0, outcome)])
            .unwrap()
            .is_none());
        let (kept, in_flight) = source.into_outcomes();
        assert_eq!((kept.len(), in_flight), (1, 3));
        assert!(read_chunk(b"{").is_err());
    }
}
