//! desi-extract: spectroperfectionism extraction of DESI spectrograph frames.
//!
//! Layers, bottom up: the `desi_device` numerics; the backends behind one trait ([`solve`]: the
//! CPU, and [`gpu`]); the frame pipeline ([`extract`], driven by a [`job::FrameJob`]: corners,
//! [`patch`] plans, backend, stitching, finalization); multi-process frames ([`parallel`]) and
//! whole exposures ([`exposure`]); the command line on top. [`io`] reads and writes the files,
//! [`psf`] evaluates the PSF, [`sim`] and [`qa`] make and check simulated frames.
//! [`heliocentric`] computes desispec's barycentric wavelength correction (HELIOCOR).
//! [`scores`] computes the RAW scores of the SCORES HDU as desispec does.
#![warn(missing_docs)]

pub mod exposure;
pub mod extract;
pub mod gpu;
pub mod heliocentric;
pub mod huge_pages;
pub mod io;
pub mod job;
pub mod parallel;
pub mod patch;
pub mod prefault;
pub mod psf;
pub mod qa;
pub mod scores;
pub mod sim;
pub mod solve;
pub mod stats;
pub mod trace;
