//! Per-item status codes returned by device numerics (LAPACK `info` style).

/// Outcome of one device computation (one spot, one patch, one matrix).
///
/// Stored as a `u32` in device buffers; the host turns non-`Ok` values into errors that
/// name the patch. `repr(u32)` keeps the layout identical on both targets.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A Cholesky pivot was not positive (the matrix is not positive definite).
    NotPositiveDefinite = 1,
    /// A non-finite value (NaN or infinity) was met.
    NonFinite = 2,
    /// An iterative method did not converge within its sweep limit.
    NoConvergence = 3,
    /// A size exceeds the compile-time capacity of a fixed scratch buffer.
    TooLarge = 4,
    /// Slice lengths disagree with the stated dimensions.
    BadShape = 5,
}

impl Status {
    /// Converts a raw device code back to a `Status` (unknown codes map to `BadShape`).
    pub fn from_code(code: u32) -> Status {
        match code {
            0 => Status::Ok,
            1 => Status::NotPositiveDefinite,
            2 => Status::NonFinite,
            3 => Status::NoConvergence,
            4 => Status::TooLarge,
            _ => Status::BadShape,
        }
    }

    /// `true` for [`Status::Ok`].
    pub fn is_ok(self) -> bool {
        self == Status::Ok
    }
}
