//! What the ranks of an exposure send each other, on top of [`crate::parallel::wire`]:
//!
//! | message | from → to | contents |
//! |---|---|---|
//! | [`FrameList`] | rank 0 → all (broadcast) | the cameras to extract, skipped, redone (why), missing a preproc |
//! | inputs | reader → extractor(s) | frame index, read seconds, PSF and preproc image with its pixels, or the read error |
//! | share | shared-frame member → rank 0 | extract seconds, the member's bundle blocks or its error |
//! | finished | extractor → writer | frame index, read and extract seconds, IN_PSF, the preproc image without pixels and the blocks, or the error |
//!
//! Pixels and bundle arrays travel as planes, the rest in the postcard head.

use super::frame::{Extracted, Finished, FrameInputs, ReadFrame, Spectra};
use super::summary::FrameSteps;
use crate::extract::{BundleBlock, ScreenCount};
use crate::parallel::wire::blocks::{blocks_head, share_from_head, BlockHead, BlocksHead};
use crate::parallel::wire::preproc::PreprocHead;
use crate::parallel::wire::{self, Incoming, Outgoing, PlaneRef, WireError};
use crate::psf::GaussHermitePsf;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The frames of the run, as rank 0 found them: every rank builds the same file list from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameList {
    /// Cameras to extract, in frame order.
    pub cameras: Vec<String>,
    /// Cameras skipped because their frame exists and is verified.
    pub skipped: Vec<String>,
    /// Cameras whose frame exists but is extracted again, and why.
    pub redone: Vec<(String, String)>,
    /// Cameras with a PSF but no preproc file.
    pub missing_preproc: Vec<String>,
}

impl FrameList {
    /// The broadcast bytes.
    ///
    /// # Errors
    /// Never for these types (see [`wire::to_bytes`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        wire::to_bytes(self)
    }

    /// Decodes [`FrameList::to_bytes`].
    ///
    /// # Errors
    /// Truncated or corrupt bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        wire::from_bytes(bytes, "frame list")
    }
}

#[derive(Serialize, Deserialize)]
struct InputsHead<'a> {
    index: usize,
    read_s: f64,
    read_start_s: f64,
    inputs: Result<(Cow<'a, GaussHermitePsf>, PreprocHead<'a>, Cow<'a, str>), Cow<'a, str>>,
}

/// The message with frame `index` as read (its PSF and pixels, or its error).
pub(crate) fn inputs_message(index: usize, read: &ReadFrame) -> Result<Outgoing<'_>, WireError> {
    let mut planes = Vec::new();
    let inputs = match &read.inputs {
        Ok(inputs) => Ok((
            Cow::Borrowed(&inputs.psf),
            PreprocHead::new(&inputs.image, &mut planes),
            Cow::Borrowed(inputs.digest.as_str()),
        )),
        Err(text) => Err(Cow::Borrowed(text.as_str())),
    };
    let head = InputsHead {
        index,
        read_s: read.read_s,
        read_start_s: read.read_start_s,
        inputs,
    };
    Outgoing::new(&head, planes)
}

/// Decodes [`inputs_message`]: (frame index, frame as read).
pub(crate) fn read_inputs_message(mut message: Incoming) -> Result<(usize, ReadFrame), WireError> {
    let head: InputsHead = message.head()?;
    let inputs = match head.inputs {
        Ok((psf, image, digest)) => Ok(FrameInputs {
            psf: psf.into_owned(),
            image: image.into_image(&mut message)?,
            digest: digest.into_owned(),
        }),
        Err(text) => Err(text.into_owned()),
    };
    message.end()?;
    let read = ReadFrame {
        inputs,
        read_s: head.read_s,
        read_start_s: head.read_start_s,
    };
    Ok((head.index, read))
}

#[derive(Serialize, Deserialize)]
struct ShareHead<'a> {
    extract_s: f64,
    blocks: BlocksHead<'a>,
}

/// The message with a shared-frame member's share: its extract seconds and blocks, or its
/// error.
pub(crate) fn share_message<'a>(
    extract_s: f64,
    share: Result<&'a [BundleBlock], &'a str>,
) -> Result<Outgoing<'a>, WireError> {
    let mut planes = Vec::new();
    let blocks = blocks_head(share, &mut planes);
    Outgoing::new(&ShareHead { extract_s, blocks }, planes)
}

/// Decodes [`share_message`]: (extract seconds, blocks or error).
pub(crate) fn read_share_message(
    mut message: Incoming,
) -> Result<(f64, Result<Vec<BundleBlock>, String>), WireError> {
    let head: ShareHead = message.head()?;
    let share = share_from_head(head.blocks, &mut message)?;
    message.end()?;
    Ok((head.extract_s, share))
}

#[derive(Serialize, Deserialize)]
struct ExtractedHead<'a> {
    in_psf: Option<Cow<'a, str>>,
    digest: Cow<'a, str>,
    meta: PreprocHead<'a>,
    screened: ScreenCount,
    blocks: Vec<BlockHead<'a>>,
}

#[derive(Serialize, Deserialize)]
struct FinishedHead<'a> {
    index: usize,
    read_s: f64,
    extract_s: f64,
    steps: Cow<'a, FrameSteps>,
    result: Result<ExtractedHead<'a>, Cow<'a, str>>,
}

/// The message of finished frame `index` (extractor → writer).
pub(crate) fn finished_message(index: usize, frame: &Finished) -> Result<Outgoing<'_>, WireError> {
    let mut planes: Vec<PlaneRef> = Vec::new();
    let result = match &frame.result {
        Ok(ex) => {
            let Spectra::Blocks(blocks) = &ex.spectra else {
                return Err(WireError(
                    "a frame assembled by its extractor is written by that process, not sent"
                        .into(),
                ));
            };
            Ok(ExtractedHead {
                in_psf: ex.in_psf.as_deref().map(Cow::Borrowed),
                digest: Cow::Borrowed(ex.digest.as_str()),
                meta: PreprocHead::new(&ex.meta, &mut planes),
                screened: ex.screened,
                blocks: blocks
                    .iter()
                    .map(|b| BlockHead::new(b, &mut planes))
                    .collect(),
            })
        }
        Err(text) => Err(Cow::Borrowed(text.as_str())),
    };
    let head = FinishedHead {
        index,
        read_s: frame.read_s,
        extract_s: frame.extract_s,
        steps: Cow::Borrowed(&frame.steps),
        result,
    };
    Outgoing::new(&head, planes)
}

/// Decodes [`finished_message`]: (frame index, frame).
pub(crate) fn read_finished_message(mut message: Incoming) -> Result<(usize, Finished), WireError> {
    let head: FinishedHead = message.head()?;
    let result = match head.result {
        Ok(ex) => {
            let meta = ex.meta.into_image(&mut message)?;
            let blocks = ex
                .blocks
                .into_iter()
                .map(|b| b.into_block(&mut message))
                .collect::<Result<_, _>>()?;
            Ok(Extracted {
                in_psf: ex.in_psf.map(Cow::into_owned),
                digest: ex.digest.into_owned(),
                meta,
                screened: ex.screened,
                spectra: Spectra::Blocks(blocks),
            })
        }
        Err(text) => Err(text.into_owned()),
    };
    message.end()?;
    let frame = Finished {
        read_s: head.read_s,
        extract_s: head.extract_s,
        steps: head.steps.into_owned(),
        result,
    };
    Ok((head.index, frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::ModelBox;
    use crate::io::{read_psf, FitsTable, PreprocImage};
    use crate::patch::stitch::FrameArrays;
    use std::path::{Path, PathBuf};

    const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

    fn image() -> PreprocImage {
        PreprocImage {
            path: PathBuf::from("preproc-r0-00000007.fits"),
            nx: 4,
            ny: 3,
            image: (0..12).map(|i| i as f32 - 0.5).collect(),
            ivar: vec![2.0; 12],
            mask: (0..12).collect(),
            camera: "r0".into(),
            header: vec!["EXPID   =                    7".into()],
            readnoise: None,
            fibermap: Some(FitsTable::minimal_fibermap(0..25, &[3])),
        }
    }

    fn blocks() -> Vec<BundleBlock> {
        (0..2)
            .map(|bundle| {
                let mut arrays = FrameArrays::new(25 * bundle, 2, 5, 1);
                arrays
                    .flux
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = i as f64 / 3.0);
                BundleBlock {
                    bundle,
                    arrays,
                    reports: Vec::new(),
                    rejections: Vec::new(),
                    model: (bundle == 1).then(|| ModelBox {
                        row_min: 0,
                        row_max: 1,
                        col_min: 2,
                        col_max: 4,
                        values: vec![0.25, -1.0],
                    }),
                    npatch: 7,
                }
            })
            .collect()
    }

    #[test]
    fn frame_lists_round_trip() {
        let list = FrameList {
            cameras: vec!["b0".into(), "r0".into()],
            skipped: vec!["z0".into()],
            redone: vec![("r0".into(), "truncated".into())],
            missing_preproc: vec!["b1".into()],
        };
        assert_eq!(
            FrameList::from_bytes(&list.to_bytes().unwrap()).unwrap(),
            list
        );
        assert!(FrameList::from_bytes(&[5, 1]).is_err());
    }

    #[test]
    fn inputs_round_trip_with_the_psf_and_pixels_or_the_error() {
        let psf = read_psf(Path::new(PSF)).unwrap();
        let read = ReadFrame {
            inputs: Ok(FrameInputs {
                psf: psf.clone(),
                image: image(),
                digest: "0123456789abcdef0123456789abcdef".into(),
            }),
            read_s: 0.75,
            read_start_s: 1.25,
        };
        let message = inputs_message(3, &read).unwrap();
        let (index, back) = read_inputs_message(message.loopback().unwrap()).unwrap();
        let inputs = back.inputs.unwrap();
        assert_eq!((index, back.read_s, back.read_start_s), (3, 0.75, 1.25));
        assert_eq!(inputs.image, image());
        assert_eq!(inputs.digest, "0123456789abcdef0123456789abcdef");
        assert_eq!((&inputs.psf.gh, &inputs.psf.ytrace), (&psf.gh, &psf.ytrace));
        assert_eq!((inputs.psf.path, inputs.psf.in_psf), (psf.path, psf.in_psf));

        let failed = ReadFrame {
            inputs: Err("psf-b1-00000007.fits: file not found".into()),
            read_s: 0.0,
            read_start_s: 0.0,
        };
        let message = inputs_message(4, &failed).unwrap();
        let (index, back) = read_inputs_message(message.loopback().unwrap()).unwrap();
        assert_eq!(index, 4);
        assert_eq!(
            back.inputs.unwrap_err(),
            "psf-b1-00000007.fits: file not found"
        );
    }

    #[test]
    fn shares_and_finished_frames_round_trip() {
        let blocks = blocks();
        let message = share_message(1.5, Ok(&blocks)).unwrap();
        let (extract_s, back) = read_share_message(message.loopback().unwrap()).unwrap();
        assert_eq!((extract_s, back.unwrap()), (1.5, blocks.clone()));
        let message = share_message(2.0, Err("rank 1: failed")).unwrap();
        let (_, back) = read_share_message(message.loopback().unwrap()).unwrap();
        assert_eq!(back.unwrap_err(), "rank 1: failed");

        let inputs = FrameInputs {
            psf: read_psf(Path::new(PSF)).unwrap(),
            image: image(),
            digest: "fedcba9876543210fedcba9876543210".into(),
        };
        let steps = FrameSteps {
            read: (0.25, 0.75),
            extract: (0.75, 4.0),
            device_stage_s: 2.5,
            device_intervals: vec![(1.0, 2.0), (2.5, 4.0)],
            device_peak_bytes: Some(7 << 30),
        };
        let finished = Finished {
            read_s: 0.5,
            extract_s: 3.25,
            steps: steps.clone(),
            result: Ok(Extracted::new(inputs, Spectra::Blocks(blocks.clone()))),
        };
        let message = finished_message(2, &finished).unwrap();
        let (index, back) = read_finished_message(message.loopback().unwrap()).unwrap();
        assert_eq!(back.steps, steps);
        let ex = back.result.unwrap();
        assert_eq!((index, back.read_s, back.extract_s), (2, 0.5, 3.25));
        let sent = finished.result.as_ref().unwrap();
        let Spectra::Blocks(got) = ex.spectra else {
            panic!("blocks expected");
        };
        assert_eq!(
            (got, ex.in_psf, ex.screened),
            (blocks, sent.in_psf.clone(), sent.screened)
        );
        assert_eq!(ex.digest, "fedcba9876543210fedcba9876543210");
        assert!(ex.meta.image.is_empty() && ex.meta.mask.is_empty());
        assert_eq!(
            (ex.meta.header, ex.meta.fibermap),
            (image().header, image().fibermap)
        );
    }

    #[test]
    fn truncated_finished_messages_are_errors() {
        let finished = Finished {
            read_s: 0.5,
            extract_s: 3.25,
            steps: FrameSteps::default(),
            result: Ok(Extracted {
                in_psf: Some("psf-r0.fits".into()),
                meta: image(),
                screened: ScreenCount {
                    nonfinite: 1,
                    value: 2,
                    ivar: 3,
                },
                spectra: Spectra::Blocks(blocks()),
                digest: "0123456789abcdef0123456789abcdef".into(),
            }),
        };
        let message = finished_message(0, &finished).unwrap();
        let envelope = message.envelope();
        for cut in 0..envelope.len() {
            let mut planes = message.planes().iter();
            let received = Incoming::receive(envelope[..cut].to_vec(), |_| {
                planes
                    .next()
                    .map(PlaneRef::to_plane)
                    .ok_or_else(|| WireError("no more".into()))
            });
            assert!(
                received.and_then(read_finished_message).is_err(),
                "cut at {cut}"
            );
        }
        // Another message kind is not a finished frame.
        let share = share_message(1.0, Ok(&[])).unwrap();
        assert!(read_finished_message(share.loopback().unwrap()).is_err());
    }

    /// A frame its extractor assembled is written by that process: sending it is an error,
    /// not a message without spectra.
    #[test]
    fn an_assembled_frame_is_not_sent() {
        let frame = crate::extract::Extraction {
            grid: crate::patch::WavelengthGrid::arange(5760.0, 5763.2, 0.8).unwrap(),
            arrays: FrameArrays::new(0, 2, 5, 1),
            mask: vec![0; 10],
            reports: Vec::new(),
            rejections: Vec::new(),
            nonfinite_bins: Vec::new(),
            model: None,
            npatch: 1,
            times: Default::default(),
        };
        let finished = Finished {
            read_s: 0.5,
            extract_s: 3.25,
            steps: FrameSteps::default(),
            result: Ok(Extracted {
                in_psf: None,
                meta: image(),
                screened: ScreenCount::default(),
                spectra: Spectra::Frame(Box::new(frame)),
                digest: "0123456789abcdef0123456789abcdef".into(),
            }),
        };
        match finished_message(0, &finished) {
            Err(err) => assert!(err.0.contains("assembled"), "{}", err.0),
            Ok(_) => panic!("an assembled frame was sent"),
        }
    }
}
