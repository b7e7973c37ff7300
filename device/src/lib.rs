//! `desi_device`: the numerics of desi-extract, written once for two targets.
//!
//! Everything here is `#![no_std]`, allocation-free and panic-free on kernel paths: plain
//! functions over slices of `f64`. The host crate calls them directly (CPU backend, tests);
//! on `nvptx64-nvidia-cuda` the thin entry points in [`kernels`] map threads and blocks onto
//! the same functions, so the CPU and GPU paths share one body of numerics.
//!
//! Modules by stage: [`pixel`] (which CCD pixels the solves use), [`psf`] (Legendre series,
//! spots), [`patch`] (normal equations, resolution, pixel statistics), [`linalg`] (banded
//! Cholesky, covariance blocks, Jacobi),
//! [`kernels`] (the GPU entry points); [`math`], [`team`] and [`status`] serve them all.
//! `reference` (feature `reference`) holds the dense routines the production ones are checked
//! against, for tests and benchmarks.
//!
//! Array conventions: every array is a flat slice in row-major (C) order; each function
//! documents its shapes as `(slow, ..., fast)`.
#![no_std]
#![feature(core_float_math)]
#![cfg_attr(
    target_arch = "nvptx64",
    feature(
        abi_ptx,
        asm_experimental_arch,
        core_intrinsics,
        stdarch_nvptx,
        gpu_intrinsics,
        gpu_launch_sized_workgroup_mem,
        link_llvm_intrinsics
    )
)]
#![cfg_attr(target_arch = "nvptx64", allow(internal_features))]
#![warn(missing_docs)]

#[macro_use]
mod macros;

pub mod kernels;
pub mod lds;
pub mod linalg;
pub mod math;
pub mod patch;
pub mod pixel;
pub mod psf;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
pub mod status;
pub mod team;
#[cfg(all(feature = "access-trace", not(target_arch = "nvptx64")))]
pub mod trace;

pub use status::Status;
