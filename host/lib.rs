//! desi-extract: spectroperfectionism extraction of DESI spectrograph frames.
//!
//! Data flow: files -> [`io`] -> ([`psf`], preproc image) -> [`patch`] plans -> [`solve`]
//! backend -> [`patch::stitch`] -> [`io`] writes; [`extract`] drives it for one frame.
#![warn(missing_docs)]

pub mod extract;
pub mod gpu;
pub mod io;
pub mod parallel;
pub mod patch;
pub mod psf;
pub mod qa;
pub mod sim;
pub mod solve;
pub mod trace;
