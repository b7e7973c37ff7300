//! Reading frames ahead of the extraction, on background threads.

use super::frame::{read_frame, ReadFrame};
use super::jobs::FrameFiles;
use super::ExposureConfig;
use std::collections::VecDeque;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

/// Reads the frames of `frames` in order, up to `depth` of them at once (in parallel) on
/// background threads ahead of the consumer (`depth` 0: each is read when asked for, on the
/// calling thread). Memory: at most `depth` frames read or being read besides the one handed
/// out.
pub(crate) struct ReadAhead<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    config: &'env ExposureConfig,
    frames: &'env [FrameFiles],
    depth: usize,
    next: usize,
    start: Instant,
    pending: VecDeque<ScopedJoinHandle<'scope, ReadFrame>>,
}

impl<'scope, 'env> ReadAhead<'scope, 'env> {
    /// Starts reading the first `depth` frames (read times on the clock of `start`, the start
    /// of the run).
    pub fn new(
        scope: &'scope Scope<'scope, 'env>,
        config: &'env ExposureConfig,
        frames: &'env [FrameFiles],
        depth: usize,
        start: Instant,
    ) -> Self {
        let mut reads = Self {
            scope,
            config,
            frames,
            depth,
            next: 0,
            start,
            pending: VecDeque::new(),
        };
        reads.fill();
        reads
    }

    fn fill(&mut self) {
        while self.pending.len() < self.depth && self.next < self.frames.len() {
            let (config, files, start) = (self.config, &self.frames[self.next], self.start);
            self.pending
                .push_back(self.scope.spawn(move || read_frame(config, files, start)));
            self.next += 1;
        }
    }

    /// The next frame in order (`None` after the last); starts reading the one after.
    pub fn next_frame(&mut self) -> Option<ReadFrame> {
        if self.depth == 0 {
            let files = self.frames.get(self.next)?;
            self.next += 1;
            return Some(read_frame(self.config, files, self.start));
        }
        let handle = self.pending.pop_front()?;
        self.fill();
        Some(handle.join().unwrap_or_else(|_| ReadFrame {
            inputs: Err("the thread reading this frame panicked".into()),
            read_s: 0.0,
            read_start_s: 0.0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn frames_come_in_order_at_any_depth_with_their_errors() {
        let (indir, outdir) = (Path::new("/nonexistent/in"), Path::new("/nonexistent/out"));
        let config = ExposureConfig::for_tests("/nonexistent/in", "/nonexistent/out");
        let frames: Vec<FrameFiles> = ["b0", "r0", "z0"]
            .iter()
            .map(|camera| FrameFiles::new(camera, indir, outdir, 7))
            .collect();
        for depth in [0, 1, 2, 8] {
            std::thread::scope(|scope| {
                let mut reads = ReadAhead::new(scope, &config, &frames, depth, Instant::now());
                for files in &frames {
                    let read = reads.next_frame().expect("one per frame");
                    let err = read.inputs.expect_err("no such file");
                    assert!(err.contains(&files.camera), "depth {depth}: {err}");
                }
                assert!(reads.next_frame().is_none());
            });
        }
    }
}
