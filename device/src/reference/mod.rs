//! Reference linear algebra for tests and benchmarks only (feature `reference`; not built
//! into the production crate nor its PTX): the routines that the production ones of
//! [`crate::linalg`] are checked and measured against.
//!
//! - [`cholesky`]: dense Cholesky `M = L·Lᵀ` of an `(n, n)` matrix: factor, solve, triangular
//!   inverse and the interleaved diagonal covariance blocks of `C = M⁻¹`.
//! - [`jacobi_eigh`]: cyclic two-sided Jacobi eigendecomposition.
//!
//! The device crate's own tests and benchmarks enable the feature through a dev-dependency on
//! the crate itself; the workspace root does the same for its benchmarks.

pub mod cholesky;
pub mod jacobi_eigh;
