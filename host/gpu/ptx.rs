//! The embedded PTX module. STUB until build.rs lands.

/// PTX text of the `desi_device` kernels (sm_80+, built by build.rs).
pub const PTX: &str = "";
