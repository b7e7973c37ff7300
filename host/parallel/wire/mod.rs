//! Messages between ranks. A message is a **head** and **planes**:
//!
//! - the head holds everything small and structured (frame indices, times, shapes, patch
//!   reports, header cards, the fibermap, PSF coefficients, error texts), serialized with serde
//!   in postcard's compact format;
//! - the planes are the large numeric arrays (a preproc image's IMAGE, IVAR and MASK; a
//!   bundle's flux, ivar, resolution diagonals, chi2pix and pixmask fraction), which travel as
//!   typed MPI buffers straight from the `Vec`s that hold them into the `Vec`s of the receiver:
//!   never encoded, never copied into a byte buffer.
//!
//! On the wire ([`crate::parallel::Comm::send_message`]) a message is one byte buffer, the
//! envelope (the plane manifest, the kind and length of every plane, then the head) followed by
//! one typed MPI message per plane. The receiver checks every plane against the manifest, and
//! the decoders ([`blocks`], [`preproc`]) check the planes' lengths against the shapes in the
//! head, so a malformed message is a [`WireError`], never a panic. Both ends run the same
//! binary: there is no versioning.
//!
//! Why planes apart (benches/wire.rs and benches/wire_mpi.rs, docs/design.md §6.1): encoding
//! a 4128 x 4114 preproc image value by value, as postcard (and the former hand-written
//! encoder) does, costs a few hundred milliseconds per frame on the sending and the receiving
//! rank; as typed buffers it costs nothing beyond MPI's own copy.

pub mod blocks;
pub mod preproc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A message that cannot be decoded (truncated, corrupt or not what the protocol expects).
#[derive(Debug, Error, PartialEq)]
#[error("malformed message between ranks: {0}")]
pub struct WireError(pub String);

impl WireError {
    fn postcard(what: &str, err: postcard::Error) -> Self {
        WireError(format!("{what}: {err}"))
    }
}

/// The kind and length (number of values) of one plane, as listed in the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlaneSpec {
    /// `f64` values.
    F64(u64),
    /// `f32` values.
    F32(u64),
    /// `i32` values.
    I32(u64),
}

/// A plane to send, borrowed from the value that holds it.
#[derive(Clone, Copy, Debug)]
pub enum PlaneRef<'a> {
    /// `f64` values.
    F64(&'a [f64]),
    /// `f32` values.
    F32(&'a [f32]),
    /// `i32` values.
    I32(&'a [i32]),
}

/// A received plane.
#[derive(Clone, Debug, PartialEq)]
pub enum Plane {
    /// `f64` values.
    F64(Vec<f64>),
    /// `f32` values.
    F32(Vec<f32>),
    /// `i32` values.
    I32(Vec<i32>),
}

impl PlaneRef<'_> {
    /// Kind and length.
    pub fn spec(&self) -> PlaneSpec {
        match self {
            PlaneRef::F64(v) => PlaneSpec::F64(v.len() as u64),
            PlaneRef::F32(v) => PlaneSpec::F32(v.len() as u64),
            PlaneRef::I32(v) => PlaneSpec::I32(v.len() as u64),
        }
    }

    /// A copy of the values (what the receiver gets).
    pub fn to_plane(&self) -> Plane {
        match self {
            PlaneRef::F64(v) => Plane::F64(v.to_vec()),
            PlaneRef::F32(v) => Plane::F32(v.to_vec()),
            PlaneRef::I32(v) => Plane::I32(v.to_vec()),
        }
    }
}

impl Plane {
    /// Kind and length.
    pub fn spec(&self) -> PlaneSpec {
        match self {
            Plane::F64(v) => PlaneRef::F64(v).spec(),
            Plane::F32(v) => PlaneRef::F32(v).spec(),
            Plane::I32(v) => PlaneRef::I32(v).spec(),
        }
    }
}

/// A value type that planes hold: `f64`, `f32` or `i32`.
pub trait PlaneValue: Sized {
    /// The values of `plane` when it holds this type (else the plane back).
    fn values(plane: Plane) -> Result<Vec<Self>, Plane>;
}

macro_rules! plane_value {
    ($t:ty, $variant:ident) => {
        impl PlaneValue for $t {
            fn values(plane: Plane) -> Result<Vec<Self>, Plane> {
                match plane {
                    Plane::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
        }
    };
}
plane_value!(f64, F64);
plane_value!(f32, F32);
plane_value!(i32, I32);

/// A message ready to send: the envelope bytes and the planes it borrows.
#[derive(Debug)]
pub struct Outgoing<'a> {
    envelope: Vec<u8>,
    planes: Vec<PlaneRef<'a>>,
}

impl<'a> Outgoing<'a> {
    /// The message with `head` and `planes` (sent in this order after the envelope).
    ///
    /// # Errors
    /// A head that postcard cannot serialize (e.g. a path that is not UTF-8).
    pub fn new<H: Serialize + ?Sized>(
        head: &H,
        planes: Vec<PlaneRef<'a>>,
    ) -> Result<Self, WireError> {
        let manifest: Vec<PlaneSpec> = planes.iter().map(PlaneRef::spec).collect();
        let mut envelope = postcard::to_allocvec(&manifest)
            .map_err(|e| WireError::postcard("plane manifest", e))?;
        envelope.extend(postcard::to_allocvec(head).map_err(|e| WireError::postcard("head", e))?);
        Ok(Self { envelope, planes })
    }

    /// The first buffer on the wire: the plane manifest followed by the head.
    pub fn envelope(&self) -> &[u8] {
        &self.envelope
    }

    /// The planes, in order.
    pub fn planes(&self) -> &[PlaneRef<'a>] {
        &self.planes
    }

    /// The message as the receiving rank gets it, without MPI (the planes copied): for
    /// tests, benchmarks and a rank that sends to itself.
    pub fn loopback(&self) -> Result<Incoming, WireError> {
        let mut planes = self.planes.iter();
        Incoming::receive(self.envelope.clone(), |_| {
            planes
                .next()
                .map(PlaneRef::to_plane)
                .ok_or_else(|| WireError("fewer planes than the manifest lists".into()))
        })
    }
}

/// A received message: its head and the planes not yet taken, in order.
#[derive(Debug)]
pub struct Incoming {
    envelope: Vec<u8>,
    head_at: usize,
    planes: std::vec::IntoIter<Plane>,
}

impl Incoming {
    /// Parses `envelope` and receives the planes its manifest lists, one `receive` call per
    /// plane in order, checking each against the manifest.
    ///
    /// # Errors
    /// A corrupt manifest, or a plane of another kind or length than listed.
    pub fn receive(
        envelope: Vec<u8>,
        mut receive: impl FnMut(PlaneSpec) -> Result<Plane, WireError>,
    ) -> Result<Self, WireError> {
        let (manifest, head) = postcard::take_from_bytes::<Vec<PlaneSpec>>(&envelope)
            .map_err(|e| WireError::postcard("plane manifest", e))?;
        let head_at = envelope.len() - head.len();
        let mut planes = Vec::with_capacity(manifest.len());
        for (index, spec) in manifest.into_iter().enumerate() {
            let plane = receive(spec)?;
            if plane.spec() != spec {
                return Err(WireError(format!(
                    "plane {index}: received {:?}, the manifest lists {spec:?}",
                    plane.spec()
                )));
            }
            planes.push(plane);
        }
        Ok(Self {
            envelope,
            head_at,
            planes: planes.into_iter(),
        })
    }

    /// The head, which must fill the rest of the envelope.
    ///
    /// # Errors
    /// A truncated or corrupt head, or bytes left over after it.
    pub fn head<H: DeserializeOwned>(&self) -> Result<H, WireError> {
        from_bytes(&self.envelope[self.head_at..], "head")
    }

    /// The next plane, which must hold `len` values of type `T` (`what` names it in errors).
    ///
    /// # Errors
    /// No plane left, or one of another type or length.
    pub fn take<T: PlaneValue>(&mut self, len: usize, what: &str) -> Result<Vec<T>, WireError> {
        let plane = self
            .planes
            .next()
            .ok_or_else(|| WireError(format!("{what}: no plane left")))?;
        let spec = plane.spec();
        match T::values(plane) {
            Ok(values) if values.len() == len => Ok(values),
            _ => Err(WireError(format!(
                "{what}: expected {len} values of {}, received {spec:?}",
                std::any::type_name::<T>()
            ))),
        }
    }

    /// Fails unless every plane was taken.
    ///
    /// # Errors
    /// Planes left over.
    pub fn end(self) -> Result<(), WireError> {
        match self.planes.len() {
            0 => Ok(()),
            n => Err(WireError(format!("{n} plane(s) left over"))),
        }
    }
}

/// `value` in postcard's format: for small messages without planes (the broadcast lists).
///
/// # Errors
/// A value that postcard cannot serialize.
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    postcard::to_allocvec(value).map_err(|e| WireError::postcard("message", e))
}

/// Decodes [`to_bytes`]; every byte must be used.
///
/// # Errors
/// Truncated or corrupt bytes, or bytes left over.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, WireError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| WireError::postcard(what, e))?;
    match rest.len() {
        0 => Ok(value),
        n => Err(WireError(format!("{what}: {n} trailing bytes"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Head {
        index: usize,
        text: String,
    }

    fn message<'a>(f: &'a [f64], m: &'a [i32]) -> Outgoing<'a> {
        let head = Head {
            index: 7,
            text: "r0".into(),
        };
        Outgoing::new(&head, vec![PlaneRef::F64(f), PlaneRef::I32(m)]).unwrap()
    }

    #[test]
    fn head_and_planes_round_trip_bit_for_bit() {
        let (f, m) = ([1.5, -0.0, f64::NAN], [3, -4]);
        let mut back = message(&f, &m).loopback().unwrap();
        let head: Head = back.head().unwrap();
        assert_eq!((head.index, head.text.as_str()), (7, "r0"));
        let f2: Vec<f64> = back.take(3, "f").unwrap();
        assert_eq!(f2[1].to_bits(), (-0.0f64).to_bits());
        assert!(f2[2].is_nan());
        assert_eq!(back.take::<i32>(2, "m").unwrap(), m);
        back.end().unwrap();
    }

    #[test]
    fn wrong_planes_are_errors() {
        let (f, m) = ([1.0; 4], [0; 2]);
        let out = message(&f, &m);
        // Wrong type, wrong length, too few and too many planes taken.
        assert!(out.loopback().unwrap().take::<f32>(4, "f").is_err());
        assert!(out.loopback().unwrap().take::<f64>(3, "f").is_err());
        let mut back = out.loopback().unwrap();
        back.take::<f64>(4, "f").unwrap();
        back.take::<i32>(2, "m").unwrap();
        assert!(back.take::<i32>(2, "m").is_err());
        let mut back = out.loopback().unwrap();
        back.take::<f64>(4, "f").unwrap();
        assert!(back.end().is_err());
        // A plane other than the manifest lists, and a missing one.
        let envelope = out.envelope().to_vec();
        let swapped = Incoming::receive(envelope.clone(), |_| Ok(Plane::F32(vec![0.0; 4])));
        assert!(swapped.is_err());
        let mut given = 0;
        let missing = Incoming::receive(envelope, |spec| {
            given += 1;
            match given {
                1 => Ok(PlaneRef::F64(&f).to_plane()),
                _ => Err(WireError(format!("{spec:?} never came"))),
            }
        });
        assert!(missing.is_err());
    }

    #[test]
    fn truncated_or_corrupt_envelopes_are_errors_not_panics() {
        let (f, m) = ([2.0; 3], [1; 2]);
        let out = message(&f, &m);
        let envelope = out.envelope();
        let planes = || {
            let mut it = out.planes().iter();
            move |_: PlaneSpec| {
                it.next()
                    .map(PlaneRef::to_plane)
                    .ok_or_else(|| WireError("no more".into()))
            }
        };
        let decode = |bytes: &[u8]| -> Result<Head, WireError> {
            Incoming::receive(bytes.to_vec(), planes())?.head()
        };
        assert!(decode(envelope).is_ok());
        for cut in 0..envelope.len() {
            assert!(decode(&envelope[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = envelope.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_err());
        // Every single-byte corruption decodes to an error or some value, never a panic.
        for at in 0..envelope.len() {
            for byte in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = envelope.to_vec();
                bad[at] = byte;
                let _ = decode(&bad);
            }
        }
    }

    #[test]
    fn small_messages_round_trip_and_reject_extra_bytes() {
        let lists = (vec!["b0".to_string(), "r0".into()], vec!["z0".to_string()]);
        let bytes = to_bytes(&lists).unwrap();
        let back: (Vec<String>, Vec<String>) = from_bytes(&bytes, "lists").unwrap();
        assert_eq!(back, lists);
        let mut longer = bytes.clone();
        longer.push(1);
        assert!(from_bytes::<(Vec<String>, Vec<String>)>(&longer, "lists").is_err());
        assert!(from_bytes::<(Vec<String>, Vec<String>)>(&bytes[..3], "lists").is_err());
    }
}
