//! GPU backend: the embedded PTX ([`ptx`]), the CUDA context ([`context`], which implements
//! [`crate::solve::Backend`]), the typed kernel launches ([`launch`]) and the frame solver on
//! the device ([`frame`]).

mod batch;
pub mod context;
pub mod frame;
pub mod launch;
mod pixels;
pub mod ptx;
mod schedule;

pub use context::{probe_driver, GpuContext, GpuError};
