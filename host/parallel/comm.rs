//! The process group: MPI's world communicator when the program was started by an MPI
//! launcher (mpirun, srun) and built with the `mpi` feature, else a single process.

use super::wire::{Incoming, Outgoing, WireError};
#[cfg(feature = "mpi")]
use super::wire::{Plane, PlaneRef, PlaneSpec};

/// MPI tags that keep the kinds of messages apart: a receive of one kind never matches
/// another kind's message, whatever the order in which senders' messages arrive.
#[cfg(feature = "mpi")]
mod tags {
    /// [`super::Comm::send`]'s byte messages.
    pub const BYTES: i32 = 1;
    /// The envelope of a [`super::Comm::send_message`].
    pub const ENVELOPE: i32 = 2;
    /// The planes that follow an envelope.
    pub const PLANE: i32 = 3;
}

/// How this process was started, for the log line of [`Comm::init`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// No MPI launcher in the environment (or DESI_EXTRACT_NO_MPI set): one process.
    Single,
    /// Started by an MPI launcher and MPI initialized.
    Mpi,
    /// Started by an MPI launcher but MPI is unavailable (reason): runs as one process.
    Fallback(String),
}

/// Ranks of one job that exchange messages (blocking, in order per pair of ranks): bytes
/// ([`Comm::send`]) and messages of a head and typed planes ([`Comm::send_message`]).
pub struct Comm {
    rank: usize,
    size: usize,
    local_rank: usize,
    launch: Launch,
    /// The communicator, with the universe (which finalizes MPI when dropped) on the world
    /// only: a communicator split off the world ([`Comm::split`]) holds none.
    #[cfg(feature = "mpi")]
    world: Option<(
        Option<mpi::environment::Universe>,
        mpi::topology::SimpleCommunicator,
    )>,
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comm")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("launch", &self.launch)
            .finish()
    }
}

/// Environment variables that MPI launchers set for their processes.
const LAUNCHER_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "PMI_SIZE",
    "MPI_LOCALNRANKS",
];

/// Whether an MPI launcher started this process (Slurm counts when it started > 1 task).
pub fn launched_by_mpi() -> bool {
    if std::env::var_os("DESI_EXTRACT_NO_MPI").is_some() {
        return false;
    }
    LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some())
        || std::env::var("SLURM_NTASKS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n > 1)
}

/// The node-local rank from the launcher's environment (OpenMPI, Slurm, MPICH), else 0.
pub fn env_local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "SLURM_LOCALID",
        "MPI_LOCALRANKID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(0)
}

/// The number of ranks on this node from the launcher's environment, else 1.
pub fn env_local_size() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(1)
}

impl Comm {
    /// One process, no MPI.
    pub fn single() -> Self {
        Self::single_with(Launch::Single)
    }

    fn single_with(launch: Launch) -> Self {
        Self {
            rank: 0,
            size: 1,
            local_rank: 0,
            launch,
            #[cfg(feature = "mpi")]
            world: None,
        }
    }

    /// Initializes MPI when an MPI launcher started this process (see [`launched_by_mpi`]);
    /// otherwise, or when MPI cannot be initialized, a single process ([`Comm::launch`] says
    /// which and why). MPI is finalized when the returned value is dropped.
    ///
    /// MPI is initialized with `MPI_THREAD_FUNNELED`: a rank may run other threads (rayon,
    /// the file readers and writers of `exposure`), but only the thread that called `init`
    /// calls MPI: keep every [`Comm`] call on that thread.
    pub fn init() -> Self {
        if !launched_by_mpi() {
            return Self::single();
        }
        Self::init_mpi()
    }

    #[cfg(feature = "mpi")]
    fn init_mpi() -> Self {
        use mpi::traits::Communicator;
        match mpi::initialize_with_threading(mpi::Threading::Funneled) {
            Some((universe, _provided)) => {
                let world = universe.world();
                let (rank, size) = (world.rank().max(0) as usize, world.size().max(1) as usize);
                Self {
                    rank,
                    size,
                    local_rank: env_local_rank(),
                    launch: Launch::Mpi,
                    world: Some((Some(universe), world)),
                }
            }
            None => Self::single_with(Launch::Fallback(
                "MPI was already initialized in this process".into(),
            )),
        }
    }

    #[cfg(not(feature = "mpi"))]
    fn init_mpi() -> Self {
        Self::single_with(Launch::Fallback(
            "this binary was built without the `mpi` feature".into(),
        ))
    }

    /// This process's rank, `0..size`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Rank among the processes of this node (for the GPU choice).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// How the group came about.
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// The same ranks with `local_rank` as the rank among the processes of this node (the GPU
    /// choice of a group's ranks: see [`crate::exposure::groups`]).
    pub fn with_local_rank(mut self, local_rank: usize) -> Self {
        self.local_rank = local_rank;
        self
    }

    /// Splits the ranks into communicators, one per `color` (ranks ordered by `key`, then by
    /// rank here); a rank with `color` `None` gets none. Every rank must call it. The new
    /// communicator must be dropped before this one (the world finalizes MPI). Its local
    /// rank is this one's until [`Comm::with_local_rank`] says otherwise.
    pub fn split(&self, color: Option<u32>, key: usize) -> Option<Comm> {
        #[cfg(feature = "mpi")]
        if let Some((_, world)) = &self.world {
            use mpi::topology::{Color, Communicator};
            let color = color.map_or_else(Color::undefined, |c| {
                Color::with_value(i32::try_from(c).unwrap_or(i32::MAX))
            });
            let key = i32::try_from(key).unwrap_or(i32::MAX);
            let sub = world.split_by_color_with_key(color, key)?;
            return Some(self.sub(sub));
        }
        let _ = key;
        color.map(|_| Self::single_with(self.launch.clone()))
    }

    /// The ranks of this node (MPI_Comm_split_type shared), in rank order. Every rank must call
    /// it; the same drop order as [`Comm::split`].
    pub fn split_by_node(&self) -> Comm {
        #[cfg(feature = "mpi")]
        if let Some((_, world)) = &self.world {
            use mpi::topology::Communicator;
            let key = i32::try_from(self.rank).unwrap_or(i32::MAX);
            return self.sub(world.split_shared(key));
        }
        Self::single_with(self.launch.clone())
    }

    #[cfg(feature = "mpi")]
    fn sub(&self, comm: mpi::topology::SimpleCommunicator) -> Comm {
        use mpi::traits::Communicator;
        let (rank, size) = (comm.rank().max(0) as usize, comm.size().max(1) as usize);
        Self {
            rank,
            size,
            local_rank: self.local_rank,
            launch: self.launch.clone(),
            world: Some((None, comm)),
        }
    }

    /// Receives the next byte message of [`Comm::send`] from any rank: (source, bytes). With
    /// `poll` it sleeps that long between probes instead of blocking in MPI (a blocked MPI
    /// receive spins a core: a rank that mostly waits, the job's coordinator, stays light).
    pub fn recv_any(&self, poll: Option<std::time::Duration>) -> (usize, Vec<u8>) {
        #[cfg(feature = "mpi")]
        if let Some((_, world)) = &self.world {
            use mpi::point_to_point::MatchedReceiveVec;
            use mpi::traits::{Communicator, Source};
            let probed = match poll {
                Some(pause) => loop {
                    if let Some(found) = world
                        .any_process()
                        .immediate_matched_probe_with_tag(tags::BYTES)
                    {
                        break found;
                    }
                    std::thread::sleep(pause);
                },
                None => world.any_process().matched_probe_with_tag(tags::BYTES),
            };
            let (bytes, status) = probed.matched_receive_vec::<u8>();
            return (status.source_rank().max(0) as usize, bytes);
        }
        let _ = poll;
        unreachable_single("recv_any");
        (0, Vec::new())
    }

    /// Sends `bytes` to rank `dest` (blocking; `dest` must differ from this rank).
    pub fn send(&self, dest: usize, bytes: &[u8]) {
        #[cfg(feature = "mpi")]
        if let Some((_, world)) = &self.world {
            use mpi::traits::{Communicator, Destination};
            world
                .process_at_rank(dest as i32)
                .send_with_tag(bytes, tags::BYTES);
            return;
        }
        let _ = (dest, bytes);
        unreachable_single("send");
    }

    /// Receives the next byte message of [`Comm::send`] from rank `source` (blocking).
    pub fn recv(&self, source: usize) -> Vec<u8> {
        #[cfg(feature = "mpi")]
        if let Some((_, world)) = &self.world {
            use mpi::traits::{Communicator, Source};
            let process = world.process_at_rank(source as i32);
            return process.receive_vec_with_tag::<u8>(tags::BYTES).0;
        }
        let _ = source;
        unreachable_single("recv");
        Vec::new()
    }

    /// Sends a message to rank `dest` (blocking): its envelope, then each plane as a typed
    /// buffer, straight from the memory that holds it (see [`super::wire`]).
    pub fn send_message(&self, dest: usize, message: &Outgoing) {
        #[cfg(feature = "mpi")]
        if let Some((_, world)) = &self.world {
            use mpi::traits::{Communicator, Destination};
            let process = world.process_at_rank(dest as i32);
            process.send_with_tag(message.envelope(), tags::ENVELOPE);
            for plane in message.planes() {
                match *plane {
                    PlaneRef::F64(values) => process.send_with_tag(values, tags::PLANE),
                    PlaneRef::F32(values) => process.send_with_tag(values, tags::PLANE),
                    PlaneRef::I32(values) => process.send_with_tag(values, tags::PLANE),
                }
            }
            return;
        }
        let _ = (dest, message);
        unreachable_single("send_message");
    }

    /// Receives the next message of [`Comm::send_message`] from rank `source` (blocking).
    ///
    /// # Errors
    /// A malformed envelope or a plane other than it lists.
    pub fn recv_message(&self, source: usize) -> Result<Incoming, WireError> {
        self.recv_message_from(Some(source))
            .map(|(_, message)| message)
    }

    /// Receives the next message of [`Comm::send_message`] from any rank (blocking): (source
    /// rank, message). Messages of one sender still arrive in the order they were sent.
    ///
    /// # Errors
    /// A malformed envelope or a plane other than it lists.
    pub fn recv_message_any(&self) -> Result<(usize, Incoming), WireError> {
        self.recv_message_from(None)
    }

    fn recv_message_from(&self, source: Option<usize>) -> Result<(usize, Incoming), WireError> {
        #[cfg(feature = "mpi")]
        if let Some((_, world)) = &self.world {
            use mpi::traits::{Communicator, Source};
            let (envelope, status) = match source {
                Some(rank) => world
                    .process_at_rank(rank as i32)
                    .receive_vec_with_tag::<u8>(tags::ENVELOPE),
                None => world
                    .any_process()
                    .receive_vec_with_tag::<u8>(tags::ENVELOPE),
            };
            // The planes follow the envelope from the same sender, in order.
            let sender = status.source_rank();
            let process = world.process_at_rank(sender);
            let message = Incoming::receive(envelope, |spec| {
                Ok(match spec {
                    PlaneSpec::F64(_) => Plane::F64(process.receive_vec_with_tag(tags::PLANE).0),
                    PlaneSpec::F32(_) => Plane::F32(process.receive_vec_with_tag(tags::PLANE).0),
                    PlaneSpec::I32(_) => Plane::I32(process.receive_vec_with_tag(tags::PLANE).0),
                })
            })?;
            return Ok((sender.max(0) as usize, message));
        }
        let _ = source;
        unreachable_single("recv_message");
        Err(WireError(
            "a single process has no other rank to receive from".into(),
        ))
    }

    /// Rank `root`'s `bytes` on every rank (the other ranks' `bytes` are ignored).
    pub fn broadcast(&self, root: usize, bytes: Vec<u8>) -> Vec<u8> {
        if self.size == 1 {
            return bytes;
        }
        if self.rank == root {
            for dest in (0..self.size).filter(|&r| r != root) {
                self.send(dest, &bytes);
            }
            bytes
        } else {
            self.recv(root)
        }
    }
}

impl Comm {
    /// Ends every rank of the job with `code` (after an error on one rank, so that the others
    /// do not wait for it forever); a single process just exits.
    pub fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if let Some((_, world)) = &self.world {
            use mpi::traits::Communicator;
            world.abort(code);
        }
        std::process::exit(code)
    }
}

/// A single process has nobody to talk to: the callers never do that (a logic error).
fn unreachable_single(op: &str) {
    debug_assert!(false, "Comm::{op} on a single-process group");
}
