//! Every frame of one exposure (up to 30: cameras b, r, z of spectrographs 0..9), with
//! desi_proc's per-camera grids and PSF errors (docs/algorithm.md §8).

pub mod cameras;
