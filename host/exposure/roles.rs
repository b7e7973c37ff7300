//! How the ranks of an exposure share the work: the mode for a number of ranks and each
//! rank's role in it.

/// How the ranks share the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 3+ ranks: rank 0 reads, rank 1 writes, ranks 2.. extract whole frames in turn.
    Pipeline,
    /// 1 or 2 ranks, or no overlap asked for: rank 0 reads and writes, every rank extracts a
    /// share of every frame's bundles, one frame after the other; with `overlap` rank 0 reads
    /// ahead and writes behind on background threads.
    Shared {
        /// Whether rank 0 reads ahead and writes behind.
        overlap: bool,
    },
}

/// What one rank does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reads every frame and sends it to its extractor ([`Mode::Pipeline`], rank 0).
    Reader,
    /// Receives finished frames and writes them ([`Mode::Pipeline`], rank 1).
    Writer,
    /// Extracts frames `index, index + count, ...` whole ([`Mode::Pipeline`], ranks 2..).
    Extractor {
        /// This extractor among the extractors.
        index: usize,
        /// Number of extractors.
        count: usize,
    },
    /// Reads, extracts its share of the bundles and writes ([`Mode::Shared`], rank 0); with
    /// `size` 1 it extracts whole frames.
    SharedRoot {
        /// Number of ranks sharing each frame.
        size: usize,
    },
    /// Extracts share `index` of `size` of every frame's bundles ([`Mode::Shared`], ranks 1..).
    SharedMember {
        /// This rank's share (its rank).
        index: usize,
        /// Number of ranks sharing each frame.
        size: usize,
    },
}

/// The mode of a run and the number of ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// How the ranks share the work.
    pub mode: Mode,
    /// Number of ranks.
    pub size: usize,
}

impl Layout {
    /// The pipeline on 3+ ranks when `overlap` is wanted, else shared frames.
    pub fn new(size: usize, overlap: bool) -> Self {
        let mode = if overlap && size >= 3 {
            Mode::Pipeline
        } else {
            Mode::Shared { overlap }
        };
        Self { mode, size }
    }

    /// The rank that writes the frames and reports.
    pub fn writer(&self) -> usize {
        match self.mode {
            Mode::Pipeline => 1,
            Mode::Shared { .. } => 0,
        }
    }

    /// Number of ranks that extract.
    pub fn extractors(&self) -> usize {
        match self.mode {
            Mode::Pipeline => self.size - 2,
            Mode::Shared { .. } => self.size,
        }
    }

    /// The role of `rank`.
    pub fn role(&self, rank: usize) -> Role {
        match (self.mode, rank) {
            (Mode::Pipeline, 0) => Role::Reader,
            (Mode::Pipeline, 1) => Role::Writer,
            (Mode::Pipeline, _) => Role::Extractor {
                index: rank - 2,
                count: self.extractors(),
            },
            (Mode::Shared { .. }, 0) => Role::SharedRoot { size: self.size },
            (Mode::Shared { .. }, _) => Role::SharedMember {
                index: rank,
                size: self.size,
            },
        }
    }

    /// Whether `rank` extracts (and so needs a GPU with `--gpu`).
    pub fn extracts(&self, rank: usize) -> bool {
        !matches!(self.role(rank), Role::Reader | Role::Writer)
    }

    /// The rank that extracts frame `frame` in the pipeline (every rank in shared frames).
    pub fn extractor_of(&self, frame: usize) -> usize {
        match self.mode {
            Mode::Pipeline => 2 + frame % self.extractors(),
            Mode::Shared { .. } => 0,
        }
    }

    /// Whether the one process keeps two frames in flight on two GPU contexts (a single GPU
    /// rank that reads ahead): one frame's host stages (planning, upload, stitching) then run
    /// while the other's kernels do.
    pub fn two_frames_in_flight(&self, gpu: bool) -> bool {
        gpu && self.size == 1 && self.mode == (Mode::Shared { overlap: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_for_1_to_6_ranks() {
        let roles = |size, overlap| -> Vec<Role> {
            let layout = Layout::new(size, overlap);
            (0..size).map(|rank| layout.role(rank)).collect()
        };
        use Role::*;
        assert_eq!(roles(1, true), [SharedRoot { size: 1 }]);
        assert_eq!(
            roles(2, true),
            [SharedRoot { size: 2 }, SharedMember { index: 1, size: 2 }]
        );
        for size in 3..=6 {
            let r = roles(size, true);
            assert_eq!(r[..2], [Reader, Writer], "{size} ranks");
            for (rank, role) in r.iter().enumerate().skip(2) {
                let count = size - 2;
                assert_eq!(
                    *role,
                    Extractor {
                        index: rank - 2,
                        count
                    },
                    "{size} ranks"
                );
            }
        }
        // Without overlap every rank shares every frame, whatever the count.
        for size in 1..=6 {
            let r = roles(size, false);
            assert_eq!(r[0], SharedRoot { size });
            assert!(r[1..]
                .iter()
                .all(|role| matches!(role, SharedMember { .. })));
        }
    }

    #[test]
    fn writers_extractors_and_frames() {
        for size in 1..=6 {
            let shared = Layout::new(size, size < 3);
            assert_eq!((shared.writer(), shared.extractors()), (0, size));
            assert!((0..size).all(|rank| shared.extracts(rank)));
        }
        let piped = Layout::new(5, true);
        assert_eq!((piped.writer(), piped.extractors()), (1, 3));
        assert!(!piped.extracts(0) && !piped.extracts(1) && piped.extracts(4));
        let owners: Vec<usize> = (0..7).map(|frame| piped.extractor_of(frame)).collect();
        assert_eq!(owners, [2, 3, 4, 2, 3, 4, 2]);
        assert_eq!(Layout::new(3, true).extractor_of(5), 2);
    }

    #[test]
    fn two_frames_in_flight_only_on_one_gpu_process_that_overlaps() {
        assert!(Layout::new(1, true).two_frames_in_flight(true));
        assert!(!Layout::new(1, true).two_frames_in_flight(false));
        assert!(!Layout::new(1, false).two_frames_in_flight(true));
        assert!(!Layout::new(2, true).two_frames_in_flight(true));
    }
}
