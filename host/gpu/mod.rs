//! GPU backend. For now: the PTX of `desi_device` kernels, built by build.rs.

pub mod ptx;
