//! GPU backend: the embedded PTX ([`ptx`]), the CUDA context ([`context`], which implements
//! [`crate::solve::Backend`]), the typed kernel launches ([`launch`]) and the frame solver on
//! the device ([`frame`]), and its device memory: the caller's cap, the batch plan under it and
//! the pool's counters ([`memory`]).

mod batch;
pub mod context;
pub mod frame;
pub mod launch;
pub mod memory;
mod pixels;
pub mod ptx;
mod schedule;

pub use context::{probe_driver, GpuContext, GpuError};
pub use memory::{parse_memory_size, PoolStats, MEMORY_LIMIT_ENV};
