//! Linear algebra on the per-patch normal matrix `M = AᵀWA + diag(ridge)` (docs/algorithm.md §4).
//!
//! Every matrix is a flat row-major `f64` slice; nothing here allocates or panics: workspaces
//! are caller-provided (each routine has a `*_work_len` size query) and failures come back as
//! a [`crate::Status`] code, LAPACK `info` style.
//!
//! - [`cholesky`]: dense Cholesky `M = L·Lᵀ` of an `(n, n)` matrix: factor, solve, triangular
//!   inverse and the interleaved diagonal covariance blocks of `C = M⁻¹`.
//! - [`banded`]: the same verbs on the band storage of the lower triangle (the production path:
//!   ordered wavelength-major, a patch's `M` has bandwidth `kd ≈ 8·nspec + 2`, not `n`).
//! - [`jacobi`]: cyclic Jacobi eigendecomposition of the `74×74` covariance blocks.
//! - [`jacobi_team`]: the same inverse square root (and the resolution step) done cooperatively
//!   by a team of lanes (one GPU thread block per block), with a parallel Jacobi ordering.

pub mod banded;
pub mod banded_team;
pub mod cholesky;
pub mod jacobi;
pub mod jacobi_team;
