//! GPU backend. For now: the PTX of the `desi_device` kernels, built by build.rs ([`ptx`]).

pub mod ptx;
