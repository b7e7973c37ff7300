//! desi-extract: spectroperfectionism extraction of DESI spectrograph frames.
//!
//! Data flow: files -> [`io`] -> ([`psf`], preproc image) -> patch plans -> backend solves ->
//! stitching -> [`io`] writes. See `docs`-level overview in README.md and DESIGN.md.
#![warn(missing_docs)]

pub mod gpu;
pub mod io;
pub mod psf;
pub mod sim;
