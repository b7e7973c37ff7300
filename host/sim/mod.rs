//! Simulation of preproc images from known spectra. STUB.
