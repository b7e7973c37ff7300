//! Patch decomposition (spec section 3) and stitching (section 5).

pub mod grid;
pub mod plan;
pub mod stitch;

pub use grid::{GridError, PaddedGrid, WavelengthGrid};
pub use plan::{ExtractionParams, ParamsError, PatchPlan, PixelWindow};
