//! Linear algebra on the per-patch normal matrix `M = AᵀWA + diag(ridge)` (docs/algorithm.md §4).
//!
//! Every matrix is a flat row-major `f64` slice; nothing here allocates or panics: workspaces
//! are caller-provided (each routine has a `*_work_len` size query) and failures come back as
//! a [`crate::Status`] code, LAPACK `info` style.
//!
//! - [`banded`]: Cholesky factor, solve and the interleaved diagonal covariance blocks of
//!   `C = M⁻¹` on the band storage of the lower triangle (ordered wavelength-major, a patch's
//!   `M` has bandwidth `kd ≈ 8·nspec + 2`, not `n`).
//! - `banded_cpu` (host only): the factor and the covariance blocks of [`banded`] as
//!   register-tiled, blocked loops: the CPU backend's path (same results up to rounding).
//! - [`banded_team`]: the same verbs done cooperatively by a team of lanes (one GPU thread
//!   block per patch or per block).
//! - [`banded_mma`]: the covariance blocks of [`banded_team`] with their products on FP64
//!   tensor cores (the GPU's `DESI_BAND_KERNEL=mma` variant).
//! - [`jacobi`]: the inverse square root of the `74×74` covariance blocks by one-sided Jacobi.
//! - [`jacobi_team`]: the same inverse square root (and the resolution step) done cooperatively
//!   by a team of lanes (one GPU thread block per block), with a parallel Jacobi ordering.
//! - [`newton_schulz`]: the same inverse square root and resolution step by a coupled
//!   Newton–Schulz iteration on FP64 tensor cores (the GPU's `DESI_EIGH_KERNEL=ns` variant).
//! - [`newton_schulz_blocked`]: the same iteration with register-blocked products, fewer
//!   barriers and an optimistic first schedule (the `DESI_EIGH_KERNEL=ns2` variant).
//! - `tridiagonal` (host only): symmetric eigendecomposition (Householder + implicit QL) and
//!   the inverse square root built from it, one block or several with their QL iterations
//!   interleaved: the CPU backend's method for the covariance blocks.
//! - `dense` (crate-private): the dot products, axpys and covariance engine they share.
//!
//! The dense Cholesky and the two-sided Jacobi eigensolver that these are checked against live
//! in `crate::reference` (feature `reference`: tests and benchmarks only).

pub mod banded;
#[cfg(not(target_arch = "nvptx64"))]
pub mod banded_cpu;
pub mod banded_mma;
pub mod banded_team;
pub(crate) mod dense;
pub mod jacobi;
pub mod jacobi_team;
pub mod newton_schulz;
pub mod newton_schulz_blocked;
#[cfg(not(target_arch = "nvptx64"))]
pub mod tridiagonal;
