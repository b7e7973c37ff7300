//! FITS input and output (docs/algorithm.md §1): specex PSF files, preproc images, frame and model
//! files, through cfitsio (`fitsio` crate and its raw `fitsio::sys` API).
//!
//! - [`read_psf`]: GaussHermite PSF -> [`crate::psf::GaussHermitePsf`].
//! - [`read_preproc`] / [`write_preproc`]: IMAGE/IVAR/MASK(/READNOISE/FIBERMAP).
//! - [`write_frame`] / [`read_frame`]: FLUX/IVAR/MASK/WAVELENGTH/RESOLUTION/FIBERMAP/CHI2PIX.
//! - [`write_frame_with_scores`]: the same with desispec's SCORES HDU.
//! - [`write_model`] / [`write_model_with_header`]: the MODEL image.
//! - [`write_psf`]: a GaussHermite PSF (stand-in PSFs for tests).
//! - [`describe`]: the `info` command.
//!
//! All outputs are written to a temporary name in the destination directory and renamed when
//! complete; on error the temporary file is removed and an existing output is left untouched.
//! Names ending in `.gz` are gzip-compressed. [`check_outputs`] refuses outputs that would
//! replace an input, another output, a device or a FIFO.
//! Every error message names the file and the problem ([`IoError`]).

pub(crate) mod atomic;
mod checksum;
mod describe;
mod error;
mod fits;
mod frame;
mod header;
pub mod limits;
mod output_path;
mod preproc;
mod psf_file;
mod spectra;
mod table;
mod temp_name;
mod writeback;

pub use describe::{checksums_ok, describe, detect, FileKind};
pub use error::IoError;
pub use fits::cfitsio_version;
pub use frame::{
    frame_fibermap_and_keywords, read_frame, read_image, write_frame, write_frame_using,
    write_frame_with_scores, write_image_hdu, write_model, write_model_with_header,
    write_pixel_mask, FrameData, FrameView, FrameWriter, FLUX_UNIT, FRAME_KEYWORDS, IVAR_UNIT,
};
pub(crate) use header::split_value_comment;
pub use header::{card_name, find_keyword, is_structural, Keyword, KeywordValue};
pub use output_path::check_outputs;
pub use preproc::{
    preproc_planes_in_parallel, read_preproc, write_preproc, PreprocImage, PreprocReader,
};
pub use psf_file::{read_psf, write_psf, DEFAULT_PSFERR, TAIL_PARAMS};
pub use spectra::{read_spectra, write_spectra};
pub use table::{read_table, FitsTable, TableColumn};
