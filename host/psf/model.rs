//! Evaluation of a [`GaussHermitePsf`](super::GaussHermitePsf). STUB.

/// PSF quantities at one (fiber, wavelength).
#[derive(Clone, Debug, PartialEq)]
pub struct PsfPoint;

/// One spot stamp.
#[derive(Clone, Debug, PartialEq)]
pub struct SpotStamp;
