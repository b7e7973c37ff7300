//! The outlier-rejection flags shared by `extract` and `selftest` (docs/algorithm.md §4.11).

use super::InputError;
use clap::Args;
use desi_extract::extract::{
    rejected_pixels, Extraction, RejectConfig, DEFAULT_REJECT_GROW, DEFAULT_REJECT_ITERATIONS,
    DEFAULT_REJECT_MAX_FRACTION, DEFAULT_REJECT_NSIGMA,
};
use desi_extract::io::Keyword;

/// `--reject-outliers` and its settings.
#[derive(Debug, Args)]
pub struct RejectArgs {
    /// Reject outlier pixels (cosmic rays that escaped preproc's mask) inside the extraction:
    /// pixels beyond --reject-nsigma of the patch's model are dropped with their neighbours and
    /// the patch is solved again; their bins get MASK COSMIC. Off by default (desispec's
    /// output).
    #[arg(long = "reject-outliers")]
    pub reject_outliers: bool,
    /// Rejection threshold in sigma of the chi2pix residual (PSF error term included).
    #[arg(long = "reject-nsigma", default_value_t = DEFAULT_REJECT_NSIGMA, requires = "reject_outliers")]
    pub reject_nsigma: f64,
    /// Most reject/re-solve passes per patch.
    #[arg(long = "reject-iterations", default_value_t = DEFAULT_REJECT_ITERATIONS, requires = "reject_outliers")]
    pub reject_iterations: usize,
    /// Neighbourhood (pixels) rejected around each outlier (1: the 3x3 box).
    #[arg(long = "reject-grow", default_value_t = DEFAULT_REJECT_GROW, requires = "reject_outliers")]
    pub reject_grow: usize,
    /// Largest fraction of a patch's pixels that may be rejected.
    #[arg(long = "reject-max-fraction", default_value_t = DEFAULT_REJECT_MAX_FRACTION, requires = "reject_outliers")]
    pub reject_max_fraction: f64,
}

impl RejectArgs {
    /// The configuration, `None` without `--reject-outliers`.
    ///
    /// # Errors
    /// A setting out of range.
    pub fn config(&self) -> Result<Option<RejectConfig>, InputError> {
        if !self.reject_outliers {
            return Ok(None);
        }
        let cfg = RejectConfig {
            nsigma: self.reject_nsigma,
            max_iterations: self.reject_iterations,
            grow: self.reject_grow,
            max_fraction: self.reject_max_fraction,
        };
        cfg.validate()
            .map_err(|e| InputError(format!("--reject-*: {e}")))?;
        Ok(Some(cfg))
    }
}

/// The frame header cards that record the rejection (desispec has none of its own).
pub fn reject_keywords(cfg: &RejectConfig, ex: &Extraction) -> Vec<Keyword> {
    let s = ex.reject_summary();
    vec![
        Keyword::float("REJNSIG", cfg.nsigma, "Outlier rejection threshold [sigma]"),
        Keyword::int(
            "REJITER",
            cfg.max_iterations as i64,
            "Outlier rejection passes max",
        ),
        Keyword::int(
            "REJGROW",
            cfg.grow as i64,
            "Outlier rejection grow radius [pix]",
        ),
        Keyword::float(
            "REJMAXF",
            cfg.max_fraction,
            "Max rejected fraction per patch",
        ),
        Keyword::int(
            "NREJPIX",
            s.pixels as i64,
            "CCD pixels rejected as outliers",
        ),
        Keyword::int("NREJPAT", s.patches as i64, "Patches with rejected pixels"),
        Keyword::int(
            "NREJCAP",
            s.capped as i64,
            "Patches where the cap stopped rejection",
        ),
        Keyword::int(
            "NREJBIN",
            s.bins as i64,
            "Bins with MASK COSMIC from rejection",
        ),
    ]
}

/// The one-line summary of the rejection for logs.
pub fn reject_line(ex: &Extraction) -> String {
    let s = ex.reject_summary();
    format!(
        "outlier rejection: {} pixels in {} patches ({} capped), {} bins MASK COSMIC",
        rejected_pixels(&ex.rejections).len(),
        s.patches,
        s.capped,
        s.bins
    )
}
