//! A preproc image as a message: a [`PreprocHead`] (path, shape, camera, header cards,
//! fibermap) and the pixel planes IMAGE, IVAR, MASK and READNOISE, each present or not.

use super::{Incoming, PlaneRef, WireError};
use crate::io::{FitsTable, PreprocImage};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::PathBuf;

/// A [`PreprocImage`] without its pixels, which travel as planes: IMAGE, IVAR and MASK
/// (`ny * nx` values each, or none for an image without pixels, as the writer needs it), then
/// READNOISE when the image has one.
#[derive(Debug, Serialize, Deserialize)]
pub struct PreprocHead<'a> {
    /// The file name, lossily where it is not UTF-8 (it only names the file in messages).
    path: Cow<'a, str>,
    nx: usize,
    ny: usize,
    pixels: bool,
    readnoise: bool,
    camera: Cow<'a, str>,
    header: Cow<'a, [String]>,
    fibermap: Option<Cow<'a, FitsTable>>,
}

impl<'a> PreprocHead<'a> {
    /// The head of `image`; its planes are appended to `planes`. An image whose IMAGE is
    /// empty travels without pixels (IVAR and MASK must then be empty too).
    pub fn new(image: &'a PreprocImage, planes: &mut Vec<PlaneRef<'a>>) -> Self {
        let pixels = !image.image.is_empty();
        planes.extend([
            PlaneRef::F32(&image.image),
            PlaneRef::F32(&image.ivar),
            PlaneRef::I32(&image.mask),
        ]);
        if let Some(readnoise) = &image.readnoise {
            planes.push(PlaneRef::F32(readnoise));
        }
        Self {
            path: image.path.to_string_lossy(),
            nx: image.nx,
            ny: image.ny,
            pixels,
            readnoise: image.readnoise.is_some(),
            camera: Cow::Borrowed(&image.camera),
            header: Cow::Borrowed(&image.header),
            fibermap: image.fibermap.as_ref().map(Cow::Borrowed),
        }
    }

    /// The image, with its planes taken from `message` (lengths checked against the shape).
    ///
    /// # Errors
    /// Missing planes, or planes of another type or length than the shape asks for.
    pub fn into_image(self, message: &mut Incoming) -> Result<PreprocImage, WireError> {
        let npix = self
            .nx
            .checked_mul(self.ny)
            .ok_or_else(|| WireError(format!("preproc {} x {}: too large", self.ny, self.nx)))?;
        let len = if self.pixels { npix } else { 0 };
        let image = message.take::<f32>(len, "preproc IMAGE")?;
        let ivar = message.take::<f32>(len, "preproc IVAR")?;
        let mask = message.take::<i32>(len, "preproc MASK")?;
        let readnoise = if self.readnoise {
            Some(message.take::<f32>(npix, "preproc READNOISE")?)
        } else {
            None
        };
        Ok(PreprocImage {
            path: PathBuf::from(self.path.into_owned()),
            nx: self.nx,
            ny: self.ny,
            image,
            ivar,
            mask,
            camera: self.camera.into_owned(),
            header: self.header.into_owned(),
            readnoise,
            fibermap: self.fibermap.map(Cow::into_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::wire::Outgoing;

    fn image() -> PreprocImage {
        PreprocImage {
            path: PathBuf::from("preproc-r0-00000001.fits"),
            nx: 3,
            ny: 2,
            image: vec![1.0, 2.0, 3.0, 4.0, 5.0, f32::NAN],
            ivar: vec![0.5; 6],
            mask: vec![0, 1, 2, 3, 4, -5],
            camera: "r0".into(),
            header: vec!["EXPID   =                    1".into()],
            readnoise: Some(vec![3.0; 6]),
            fibermap: Some(FitsTable::minimal_fibermap(0..4, &[2])),
        }
    }

    fn round_trip(img: &PreprocImage) -> Result<PreprocImage, WireError> {
        let mut planes = Vec::new();
        let head = PreprocHead::new(img, &mut planes);
        let mut message = Outgoing::new(&head, planes)?.loopback()?;
        let back = message.head::<PreprocHead>()?.into_image(&mut message)?;
        message.end()?;
        Ok(back)
    }

    #[test]
    fn images_round_trip_with_and_without_pixels() {
        let img = image();
        let full = round_trip(&img).unwrap();
        assert_eq!(full.image[5].to_bits(), f32::NAN.to_bits());
        assert_eq!((&full.mask, &full.readnoise), (&img.mask, &img.readnoise));
        assert_eq!((&full.header, &full.fibermap), (&img.header, &img.fibermap));
        assert_eq!((&full.path, full.nx, full.ny), (&img.path, 3, 2));
        let meta = PreprocImage {
            image: Vec::new(),
            ivar: Vec::new(),
            mask: Vec::new(),
            readnoise: None,
            ..img.clone()
        };
        assert_eq!(round_trip(&meta).unwrap(), meta);
    }

    #[test]
    fn pixels_that_do_not_fit_the_shape_are_errors() {
        let mut short = image();
        short.ivar.pop();
        assert!(round_trip(&short).is_err());
        let mut no_mask = image();
        no_mask.mask.clear();
        assert!(round_trip(&no_mask).is_err());
        let mut huge = image();
        huge.nx = usize::MAX;
        assert!(round_trip(&huge).is_err());
    }
}
