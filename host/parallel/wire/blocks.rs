//! The finished bundle blocks of [`crate::extract::extract_bundles`] as a message: a
//! [`BlockHead`] per block (shape, patch reports, model box bounds, patch count) and the
//! block's arrays as planes.

use super::{Incoming, Outgoing, PlaneRef, WireError};
use crate::extract::{BundleBlock, ModelBox};
use crate::patch::stitch::FrameArrays;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A [`BundleBlock`] without its arrays, which travel as planes in this order: flux, ivar,
/// resolution diagonals, chi2pix, pixmask fraction, then the model box's values if any.
#[derive(Debug, Serialize, Deserialize)]
pub struct BlockHead<'a> {
    bundle: usize,
    specmin: usize,
    nspec: usize,
    nwave: usize,
    ndiag: usize,
    reports: Cow<'a, [crate::extract::PatchReport]>,
    /// Pixels the block's patches rejected as outliers.
    rejections: Cow<'a, [crate::extract::PatchRejection]>,
    /// The model box's `[row_min, row_max, col_min, col_max]`.
    model: Option<[usize; 4]>,
    npatch: usize,
}

impl<'a> BlockHead<'a> {
    /// The head of `block`; its planes are appended to `planes`.
    pub fn new(block: &'a BundleBlock, planes: &mut Vec<PlaneRef<'a>>) -> Self {
        let a = &block.arrays;
        for plane in [&a.flux, &a.ivar, &a.rdiags, &a.chi2pix, &a.pixmask_fraction] {
            planes.push(PlaneRef::F64(plane));
        }
        let model = block.model.as_ref().map(|m| {
            planes.push(PlaneRef::F64(&m.values));
            [m.row_min, m.row_max, m.col_min, m.col_max]
        });
        Self {
            bundle: block.bundle,
            specmin: a.specmin,
            nspec: a.nspec,
            nwave: a.nwave,
            ndiag: a.ndiag,
            reports: Cow::Borrowed(&block.reports),
            rejections: Cow::Borrowed(&block.rejections),
            model,
            npatch: block.npatch,
        }
    }

    /// The block, with its planes taken from `message` (their lengths checked against the
    /// head's shape).
    ///
    /// # Errors
    /// Missing planes, or planes of another type or length than the shape asks for.
    pub fn into_block(self, message: &mut Incoming) -> Result<BundleBlock, WireError> {
        let bundle = self.bundle;
        let too_large = || WireError(format!("bundle {bundle}: shape too large"));
        let plain = self.nspec.checked_mul(self.nwave).ok_or_else(too_large)?;
        let ndiags = self.ndiag.checked_mul(2).and_then(|n| n.checked_add(1));
        let banded = ndiags
            .and_then(|n| n.checked_mul(plain))
            .ok_or_else(too_large)?;
        let mut take = |len, what| message.take::<f64>(len, &format!("bundle {bundle} {what}"));
        let arrays = FrameArrays {
            specmin: self.specmin,
            nspec: self.nspec,
            nwave: self.nwave,
            ndiag: self.ndiag,
            flux: take(plain, "flux")?,
            ivar: take(plain, "ivar")?,
            rdiags: take(banded, "resolution")?,
            chi2pix: take(plain, "chi2pix")?,
            pixmask_fraction: take(plain, "pixmask fraction")?,
        };
        let model = match self.model {
            Some([row_min, row_max, col_min, col_max]) => {
                let rows = row_max.saturating_sub(row_min);
                let len = rows
                    .checked_mul(col_max.saturating_sub(col_min))
                    .ok_or_else(too_large)?;
                Some(ModelBox {
                    row_min,
                    row_max,
                    col_min,
                    col_max,
                    values: take(len, "model box")?,
                })
            }
            None => None,
        };
        Ok(BundleBlock {
            bundle,
            arrays,
            reports: self.reports.into_owned(),
            rejections: self.rejections.into_owned(),
            model,
            npatch: self.npatch,
        })
    }
}

/// What a rank sends of its share of a frame: its blocks, or the error that stopped it.
pub type BlocksHead<'a> = Result<Vec<BlockHead<'a>>, Cow<'a, str>>;

/// The head of a rank's share; the blocks' planes are appended to `planes`.
pub fn blocks_head<'a>(
    share: Result<&'a [BundleBlock], &'a str>,
    planes: &mut Vec<PlaneRef<'a>>,
) -> BlocksHead<'a> {
    match share {
        Ok(blocks) => Ok(blocks.iter().map(|b| BlockHead::new(b, planes)).collect()),
        Err(text) => Err(Cow::Borrowed(text)),
    }
}

/// A rank's share from its head and the planes of `message`: `Ok(Err(text))` when that rank
/// failed.
///
/// # Errors
/// Planes that do not match the heads.
pub fn share_from_head(
    head: BlocksHead,
    message: &mut Incoming,
) -> Result<Result<Vec<BundleBlock>, String>, WireError> {
    Ok(match head {
        Ok(heads) => Ok(heads
            .into_iter()
            .map(|h| h.into_block(message))
            .collect::<Result<_, _>>()?),
        Err(text) => Err(text.into_owned()),
    })
}

/// The message with a rank's share of a frame (its blocks, or its error).
///
/// # Errors
/// See [`Outgoing::new`].
pub fn share_message<'a>(
    share: Result<&'a [BundleBlock], &'a str>,
) -> Result<Outgoing<'a>, WireError> {
    let mut planes = Vec::new();
    let head = blocks_head(share, &mut planes);
    Outgoing::new(&head, planes)
}

/// Decodes [`share_message`].
///
/// # Errors
/// A malformed message.
pub fn read_share(mut message: Incoming) -> Result<Result<Vec<BundleBlock>, String>, WireError> {
    let head = message.head()?;
    let share = share_from_head(head, &mut message)?;
    message.end()?;
    Ok(share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::PatchReport;
    use crate::solve::PatchIssue;

    fn block(bundle: usize, model: bool) -> BundleBlock {
        let mut arrays = FrameArrays::new(25 * bundle, 3, 4, 1);
        for (i, v) in arrays.flux.iter_mut().enumerate() {
            *v = i as f64 * 0.1 - 0.35;
        }
        arrays.rdiags[5] = f64::MIN_POSITIVE;
        arrays.ivar[2] = -0.0;
        arrays.chi2pix[1] = f64::NAN;
        BundleBlock {
            bundle,
            arrays,
            reports: vec![
                PatchReport {
                    site: crate::extract::PatchSite {
                        bundle,
                        patch: 2,
                        ispec: 25,
                        iwave: 50,
                        nspec: 5,
                        nwave: 50,
                    },
                    issue: PatchIssue::Regularized {
                        regularize: 1e-4,
                        reason: "not positive definite".into(),
                    },
                },
                PatchReport {
                    site: crate::extract::PatchSite {
                        bundle,
                        patch: 3,
                        ispec: 25,
                        iwave: 60,
                        nspec: 5,
                        nwave: 40,
                    },
                    issue: PatchIssue::OffCcd,
                },
            ],
            rejections: vec![crate::extract::PatchRejection {
                site: crate::extract::PatchSite {
                    bundle,
                    patch: 2,
                    ispec: 25,
                    iwave: 50,
                    nspec: 1,
                    nwave: 2,
                },
                pixels: vec![7, 4_000_000_000],
                bin_counts: vec![0, 3],
                iterations: 2,
                capped: true,
            }],
            model: model.then(|| ModelBox {
                row_min: 3,
                row_max: 5,
                col_min: 7,
                col_max: 10,
                values: vec![1.5; 6],
            }),
            npatch: 5,
        }
    }

    fn bits(b: &BundleBlock) -> Vec<u64> {
        let a = &b.arrays;
        [&a.flux, &a.ivar, &a.rdiags, &a.chi2pix, &a.pixmask_fraction]
            .into_iter()
            .flatten()
            .map(|x| x.to_bits())
            .collect()
    }

    #[test]
    fn shares_round_trip_bit_for_bit() {
        let blocks = vec![block(1, true), block(3, false)];
        let message = share_message(Ok(&blocks)).unwrap();
        let back = read_share(message.loopback().unwrap()).unwrap().unwrap();
        for (b, s) in back.iter().zip(&blocks) {
            assert_eq!(bits(b), bits(s));
            assert_eq!(
                (&b.reports, &b.rejections, &b.model, b.npatch),
                (&s.reports, &s.rejections, &s.model, s.npatch)
            );
        }
        assert_eq!(back.len(), 2);
        let back = read_share(
            share_message(Err("rank 2 failed"))
                .unwrap()
                .loopback()
                .unwrap(),
        );
        let back = back.unwrap();
        assert_eq!(back, Err("rank 2 failed".to_string()));
    }

    #[test]
    fn planes_that_do_not_fit_the_head_are_errors() {
        let blocks = [block(0, true)];
        let out = share_message(Ok(&blocks)).unwrap();
        let head: BlocksHead = out.loopback().unwrap().head().unwrap();
        // The same head with one plane short, with a shorter resolution plane, and with an
        // extra plane.
        let planes = out.planes();
        let mut short = planes.to_vec();
        short.pop();
        let mut odd = planes.to_vec();
        odd[2] = PlaneRef::F64(&planes_f64(planes)[..1]);
        let mut extra = planes.to_vec();
        extra.push(PlaneRef::I32(&[1]));
        for planes in [short, odd, extra] {
            let message = Outgoing::new(&head, planes).unwrap();
            assert!(read_share(message.loopback().unwrap()).is_err());
        }
    }

    fn planes_f64<'a>(planes: &[PlaneRef<'a>]) -> &'a [f64] {
        match planes[0] {
            PlaneRef::F64(v) => v,
            _ => panic!("flux is f64"),
        }
    }

    #[test]
    fn truncated_and_huge_shapes_are_errors() {
        let blocks = [block(0, false)];
        let out = share_message(Ok(&blocks)).unwrap();
        for cut in 0..out.envelope().len() {
            let mut planes = out.planes().iter();
            let message = Incoming::receive(out.envelope()[..cut].to_vec(), |_| {
                planes
                    .next()
                    .map(PlaneRef::to_plane)
                    .ok_or_else(|| WireError("no more".into()))
            });
            assert!(message.and_then(read_share).is_err(), "cut at {cut}");
        }
        let mut huge = block(0, false);
        huge.arrays.nspec = usize::MAX;
        let huge = [huge];
        let message = share_message(Ok(&huge)).unwrap();
        assert!(read_share(message.loopback().unwrap()).is_err());
    }
}
