//! GPU entry points (`nvptx64-nvidia-cuda` only): thin shims from threads to the functions of
//! [`crate::psf`], [`crate::patch`] and [`crate::linalg`].
//!
//! - `frame`: frame-wide kernels (PSF spots, f32 widening, the launch smoke test);
//! - `patch`: the per-patch solve stages.

#[cfg(target_arch = "nvptx64")]
mod frame;
#[cfg(target_arch = "nvptx64")]
mod patch;
