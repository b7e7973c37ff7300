//! Patch decomposition (docs/algorithm.md §3) and stitching (§5).

pub mod grid;
pub mod plan;
pub mod stitch;
pub mod wave_medians;

pub use grid::{GridError, PaddedGrid, WavelengthGrid};
pub use plan::{ExtractionParams, ParamsError, PatchPlan, PixelWindow};
pub use stitch::MaskRule;
