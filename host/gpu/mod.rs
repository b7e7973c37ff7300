//! GPU backend: the embedded PTX ([`ptx`]), the CUDA context ([`context`]), the typed kernel
//! launches ([`launch`]) and the frame driver that runs every stage of the extraction on the
//! device ([`frame`]).

mod batch;
pub mod context;
pub mod frame;
pub mod launch;
pub mod ptx;

pub use context::{probe_driver, GpuContext, GpuError};
pub use frame::extract_frame_gpu;
