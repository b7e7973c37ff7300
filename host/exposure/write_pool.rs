//! Writing finished frames on background threads, reporting them in frame order.

use super::frame::{write_finished, Finished};
use super::jobs::FrameFiles;
use super::summary::{ExposureObserver, FrameOutcome, FrameTiming};
use super::{ExposureConfig, RankContext};
use std::collections::VecDeque;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

/// A write that finished: its outcome, when (seconds since the start of the run) and the
/// frame's device stages.
type Written = (Result<FrameTiming, String>, f64, Vec<(f64, f64)>);

/// Writes frames on up to `max` background threads (`max` 0: on the calling thread, at once)
/// and reports each frame to the observer in frame order as soon as the frames before it are
/// done; [`WritePool::finish`] waits for all and returns the outcomes in frame order.
pub(crate) struct WritePool<'scope, 'env, 'obs> {
    scope: &'scope Scope<'scope, 'env>,
    config: &'env ExposureConfig,
    frames: &'env [FrameFiles],
    start: Instant,
    max: usize,
    observer: &'obs mut dyn ExposureObserver,
    pending: VecDeque<(usize, ScopedJoinHandle<'scope, Written>)>,
    done: Vec<Option<Written>>,
    reported: usize,
}

impl<'scope, 'env, 'obs> WritePool<'scope, 'env, 'obs> {
    /// A pool for the frames of `ctx`, timing from its start.
    pub fn new(
        scope: &'scope Scope<'scope, 'env>,
        ctx: &RankContext<'env>,
        max: usize,
        observer: &'obs mut dyn ExposureObserver,
    ) -> Self {
        Self {
            scope,
            config: ctx.config,
            frames: ctx.frames,
            start: ctx.start,
            max,
            observer,
            pending: VecDeque::new(),
            done: (0..ctx.frames.len()).map(|_| None).collect(),
            reported: 0,
        }
    }

    /// Writes frame `index` (waits first for the oldest write when `max` are running).
    pub fn submit(&mut self, index: usize, frame: Finished) {
        let Some(files) = self.frames.get(index) else {
            return;
        };
        let (config, start) = (self.config, self.start);
        let task = move || {
            let intervals = frame.steps.device_intervals.clone();
            let status = write_finished(config, files, frame, start);
            (status, start.elapsed().as_secs_f64(), intervals)
        };
        if self.max == 0 {
            let written = task();
            self.record(index, written);
            return;
        }
        if self.pending.len() >= self.max {
            self.reap_finished();
        }
        while self.pending.len() >= self.max {
            self.join_oldest();
        }
        self.pending.push_back((index, self.scope.spawn(task)));
    }

    /// Records every write that has finished, whatever its place in the queue.
    fn reap_finished(&mut self) {
        let (finished, running): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, handle)| handle.is_finished());
        self.pending = running;
        for (index, handle) in finished {
            let written = self.joined(handle);
            self.record(index, written);
        }
    }

    /// The result of a write's thread (an error if it panicked).
    fn joined(&self, handle: ScopedJoinHandle<'scope, Written>) -> Written {
        handle.join().unwrap_or_else(|_| {
            (
                Err("the thread writing this frame panicked".into()),
                self.start.elapsed().as_secs_f64(),
                Vec::new(),
            )
        })
    }

    fn join_oldest(&mut self) {
        if let Some((index, handle)) = self.pending.pop_front() {
            let written = self.joined(handle);
            self.record(index, written);
        }
    }

    fn record(&mut self, index: usize, written: Written) {
        if let Some(slot) = self.done.get_mut(index) {
            *slot = Some(written);
        }
        while let Some(Some((status, at, intervals))) = self.done.get(self.reported) {
            let outcome = outcome(
                &self.frames[self.reported],
                status.clone(),
                *at,
                intervals.clone(),
            );
            self.observer
                .frame_done(self.reported, self.frames.len(), &outcome);
            self.reported += 1;
        }
    }

    /// Waits for every write; the outcomes in frame order (a frame never submitted is an
    /// internal error).
    pub fn finish(mut self) -> Vec<FrameOutcome> {
        while !self.pending.is_empty() {
            self.join_oldest();
        }
        let now = self.start.elapsed().as_secs_f64();
        self.frames
            .iter()
            .zip(std::mem::take(&mut self.done))
            .map(|(files, written)| match written {
                Some((status, at, intervals)) => outcome(files, status, at, intervals),
                None => outcome(
                    files,
                    Err("never extracted (internal error)".into()),
                    now,
                    Vec::new(),
                ),
            })
            .collect()
    }
}

fn outcome(
    files: &FrameFiles,
    status: Result<FrameTiming, String>,
    at: f64,
    device_intervals: Vec<(f64, f64)>,
) -> FrameOutcome {
    FrameOutcome {
        camera: files.camera.clone(),
        output: files.output.clone(),
        status,
        finished_at_s: at,
        device_intervals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposure::Layout;
    use crate::parallel::Comm;
    use crate::solve::CpuBackend;

    /// Records what the pool reports.
    #[derive(Default)]
    struct Heard(Vec<(usize, usize, String)>);

    impl ExposureObserver for Heard {
        fn frame_done(&mut self, position: usize, total: usize, outcome: &FrameOutcome) {
            self.0.push((position, total, outcome.camera.clone()));
        }
    }

    fn failed(text: &str) -> Finished {
        Finished {
            read_s: 0.0,
            extract_s: 0.0,
            steps: Default::default(),
            result: Err(text.into()),
        }
    }

    #[test]
    fn frames_are_reported_in_frame_order_whatever_order_they_finish_in() {
        let config = ExposureConfig::for_tests("/in", "/out");
        let frames: Vec<FrameFiles> = ["b0", "r0", "z0", "b1"]
            .iter()
            .map(|c| FrameFiles::new(c, &config.indir, &config.outdir, 7))
            .collect();
        let comm = Comm::single();
        let ctx = RankContext {
            config: &config,
            comm: &comm,
            frames: &frames,
            layout: Layout::new(1, true),
            start: Instant::now(),
            backend: &CpuBackend,
        };
        for max in [0, 1, 3] {
            let mut heard = Heard::default();
            let outcomes = std::thread::scope(|scope| {
                let mut pool = WritePool::new(scope, &ctx, max, &mut heard);
                for index in [2, 0, 1] {
                    pool.submit(index, failed(&format!("frame {index} failed")));
                }
                pool.finish()
            });
            let order: Vec<&str> = heard.0.iter().map(|(_, _, c)| c.as_str()).collect();
            assert_eq!(order, ["b0", "r0", "z0"], "max {max}");
            assert!(heard
                .0
                .iter()
                .enumerate()
                .all(|(i, h)| h.0 == i && h.1 == 4));
            assert_eq!(outcomes.len(), 4);
            assert_eq!(outcomes[2].status, Err("frame 2 failed".into()));
            assert_eq!(outcomes[2].output, frames[2].output);
            assert_eq!(
                outcomes[3].status,
                Err("never extracted (internal error)".into())
            );
        }
    }
}
