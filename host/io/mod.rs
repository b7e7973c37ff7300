//! FITS input and output: PSF files, preproc images, frame and model files. STUB.
