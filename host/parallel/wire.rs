//! A small binary encoding of what the ranks exchange: preproc images, PSFs and the finished
//! bundle blocks of [`crate::extract::extract_bundles`]. Little-endian, length-prefixed; both
//! ends run the same binary, so there is no versioning. Floats travel as their exact bits.

use crate::extract::{BundleBlock, ModelBox, PatchReport};
use crate::io::{FitsTable, PreprocImage, TableColumn};
use crate::patch::stitch::FrameArrays;
use crate::psf::{GaussHermitePsf, LegendreTable};
use crate::solve::PatchIssue;
use std::path::PathBuf;
use thiserror::Error;

/// A message that cannot be decoded (truncated or not what the protocol expects).
#[derive(Debug, Error, PartialEq)]
#[error("malformed message between ranks: {0}")]
pub struct WireError(pub String);

/// Appends values to a byte buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// A usize as u64.
    pub fn usize(&mut self, v: usize) {
        self.buf.extend_from_slice(&(v as u64).to_le_bytes());
    }

    /// An f64 (exact bits).
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A byte string.
    pub fn bytes(&mut self, v: &[u8]) {
        self.usize(v.len());
        self.buf.extend_from_slice(v);
    }

    /// A UTF-8 string.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// A length followed by `len` items of `W` little-endian bytes each.
    fn values<const W: usize>(&mut self, len: usize, items: impl Iterator<Item = [u8; W]>) {
        self.usize(len);
        self.buf.reserve(W * len);
        for bytes in items {
            self.buf.extend_from_slice(&bytes);
        }
    }

    /// f64 values (exact bits).
    pub fn f64s(&mut self, v: &[f64]) {
        self.values(v.len(), v.iter().map(|x| x.to_le_bytes()));
    }

    /// f32 values (exact bits).
    pub fn f32s(&mut self, v: &[f32]) {
        self.values(v.len(), v.iter().map(|x| x.to_le_bytes()));
    }

    /// i32 values.
    pub fn i32s(&mut self, v: &[i32]) {
        self.values(v.len(), v.iter().map(|x| x.to_le_bytes()));
    }

    /// Strings.
    pub fn strs(&mut self, v: &[String]) {
        self.usize(v.len());
        for s in v {
            self.str(s);
        }
    }
}

/// Reads values back in the order they were encoded.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Starts at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(WireError(format!(
                "{what}: needs {n} bytes at offset {} of {}",
                self.pos,
                self.buf.len()
            )));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// A usize.
    pub fn usize(&mut self) -> Result<usize, WireError> {
        let v = u64::from_le_bytes(self.array("integer")?);
        usize::try_from(v).map_err(|_| WireError(format!("integer {v} does not fit usize")))
    }

    /// A length followed by that many items of `width` bytes (checked against what is left).
    fn len(&mut self, width: usize, what: &str) -> Result<usize, WireError> {
        let n = self.usize()?;
        let left = self.buf.len() - self.pos;
        if n.checked_mul(width).is_none_or(|b| b > left) {
            return Err(WireError(format!(
                "{what}: {n} items but {left} bytes left"
            )));
        }
        Ok(n)
    }

    /// An f64.
    pub fn f64(&mut self) -> Result<f64, WireError> {
        Ok(f64::from_le_bytes(self.array("f64")?))
    }

    /// A byte string.
    pub fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.len(1, "bytes")?;
        Ok(self.take(n, "bytes")?.to_vec())
    }

    /// A UTF-8 string.
    pub fn str(&mut self) -> Result<String, WireError> {
        String::from_utf8(self.bytes()?).map_err(|e| WireError(format!("string: {e}")))
    }

    /// f64 values.
    pub fn f64s(&mut self) -> Result<Vec<f64>, WireError> {
        self.values("f64 array", f64::from_le_bytes)
    }

    /// f32 values.
    pub fn f32s(&mut self) -> Result<Vec<f32>, WireError> {
        self.values("f32 array", f32::from_le_bytes)
    }

    /// i32 values.
    pub fn i32s(&mut self) -> Result<Vec<i32>, WireError> {
        self.values("i32 array", i32::from_le_bytes)
    }

    /// A length followed by that many items of `W` little-endian bytes, each decoded by
    /// `decode`.
    fn values<T, const W: usize>(
        &mut self,
        what: &str,
        decode: fn([u8; W]) -> T,
    ) -> Result<Vec<T>, WireError> {
        let n = self.len(W, what)?;
        let raw = self.take(W * n, what)?;
        Ok(raw
            .chunks_exact(W)
            .map(|chunk| {
                let mut bytes = [0u8; W];
                bytes.copy_from_slice(chunk);
                decode(bytes)
            })
            .collect())
    }

    /// Strings.
    pub fn strs(&mut self) -> Result<Vec<String>, WireError> {
        let n = self.len(8, "string list")?;
        (0..n).map(|_| self.str()).collect()
    }

    /// Fails unless every byte was consumed.
    pub fn end(&self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(WireError(format!(
                "{} trailing bytes",
                self.buf.len() - self.pos
            )))
        }
    }
}

fn put_table(e: &mut Encoder, t: &LegendreTable) {
    e.f64(t.wavemin);
    e.f64(t.wavemax);
    e.usize(t.ncoeff);
    e.f64s(&t.coeffs);
}

fn get_table(d: &mut Decoder) -> Result<LegendreTable, WireError> {
    Ok(LegendreTable {
        wavemin: d.f64()?,
        wavemax: d.f64()?,
        ncoeff: d.usize()?,
        coeffs: d.f64s()?,
    })
}

/// Encodes a PSF.
pub fn put_psf(e: &mut Encoder, psf: &GaussHermitePsf) {
    e.str(&psf.path.to_string_lossy());
    for t in [&psf.xtrace, &psf.ytrace, &psf.sigma_x, &psf.sigma_y] {
        put_table(e, t);
    }
    e.usize(psf.gh.len());
    for t in &psf.gh {
        put_table(e, t);
    }
    match &psf.tail {
        Some(tail) => {
            e.usize(1);
            for t in tail {
                put_table(e, t);
            }
        }
        None => e.usize(0),
    }
    for v in [
        psf.hsizex,
        psf.hsizey,
        psf.ghdegx,
        psf.ghdegy,
        psf.legdeg,
        psf.npix_x,
        psf.npix_y,
        psf.fibermin,
        psf.nspec,
    ] {
        e.usize(v);
    }
    e.f64(psf.psferr);
    put_opt_str(e, psf.in_psf.as_deref());
}

/// Decodes a PSF.
pub fn get_psf(d: &mut Decoder) -> Result<GaussHermitePsf, WireError> {
    let path = PathBuf::from(d.str()?);
    let (xtrace, ytrace) = (get_table(d)?, get_table(d)?);
    let (sigma_x, sigma_y) = (get_table(d)?, get_table(d)?);
    let ngh = d.len(8, "GH tables")?;
    let gh = (0..ngh).map(|_| get_table(d)).collect::<Result<_, _>>()?;
    let tail = if d.usize()? == 1 {
        Some([
            get_table(d)?,
            get_table(d)?,
            get_table(d)?,
            get_table(d)?,
            get_table(d)?,
        ])
    } else {
        None
    };
    Ok(GaussHermitePsf {
        path,
        xtrace,
        ytrace,
        sigma_x,
        sigma_y,
        gh,
        tail,
        hsizex: d.usize()?,
        hsizey: d.usize()?,
        ghdegx: d.usize()?,
        ghdegy: d.usize()?,
        legdeg: d.usize()?,
        npix_x: d.usize()?,
        npix_y: d.usize()?,
        fibermin: d.usize()?,
        nspec: d.usize()?,
        psferr: d.f64()?,
        in_psf: get_opt_str(d)?,
    })
}

fn put_opt_str(e: &mut Encoder, v: Option<&str>) {
    match v {
        Some(s) => {
            e.usize(1);
            e.str(s);
        }
        None => e.usize(0),
    }
}

fn get_opt_str(d: &mut Decoder) -> Result<Option<String>, WireError> {
    Ok(if d.usize()? == 1 {
        Some(d.str()?)
    } else {
        None
    })
}

/// Encodes a preproc image; `pixels: false` leaves out IMAGE, IVAR, MASK and READNOISE (what
/// the writer needs: header and fibermap).
pub fn put_preproc(e: &mut Encoder, img: &PreprocImage, pixels: bool) {
    e.str(&img.path.to_string_lossy());
    e.usize(img.nx);
    e.usize(img.ny);
    let empty: [f32; 0] = [];
    e.f32s(if pixels { &img.image } else { &empty });
    e.f32s(if pixels { &img.ivar } else { &empty });
    e.i32s(if pixels { &img.mask } else { &[] });
    e.str(&img.camera);
    e.strs(&img.header);
    match (&img.readnoise, pixels) {
        (Some(rn), true) => {
            e.usize(1);
            e.f32s(rn);
        }
        _ => e.usize(0),
    }
    match &img.fibermap {
        Some(t) => {
            e.usize(1);
            e.str(&t.extname);
            e.usize(t.columns.len());
            for c in &t.columns {
                e.str(&c.name);
                e.str(&c.tform);
                e.str(&c.code.to_string());
                e.usize(c.repeat);
                e.usize(c.offset);
                e.usize(c.width);
            }
            e.strs(&t.cards);
            e.usize(t.row_bytes);
            e.usize(t.nrows);
            e.bytes(&t.data);
        }
        None => e.usize(0),
    }
}

/// Decodes a preproc image.
pub fn get_preproc(d: &mut Decoder) -> Result<PreprocImage, WireError> {
    let path = PathBuf::from(d.str()?);
    let (nx, ny) = (d.usize()?, d.usize()?);
    let (image, ivar, mask) = (d.f32s()?, d.f32s()?, d.i32s()?);
    let camera = d.str()?;
    let header = d.strs()?;
    let readnoise = if d.usize()? == 1 {
        Some(d.f32s()?)
    } else {
        None
    };
    let fibermap = if d.usize()? == 1 {
        let extname = d.str()?;
        let ncol = d.len(8, "table columns")?;
        let mut columns = Vec::with_capacity(ncol);
        for _ in 0..ncol {
            columns.push(TableColumn {
                name: d.str()?,
                tform: d.str()?,
                code: d.str()?.chars().next().unwrap_or(' '),
                repeat: d.usize()?,
                offset: d.usize()?,
                width: d.usize()?,
            });
        }
        Some(FitsTable {
            extname,
            columns,
            cards: d.strs()?,
            row_bytes: d.usize()?,
            nrows: d.usize()?,
            data: d.bytes()?,
        })
    } else {
        None
    };
    Ok(PreprocImage {
        path,
        nx,
        ny,
        image,
        ivar,
        mask,
        camera,
        header,
        readnoise,
        fibermap,
    })
}

fn put_issue(e: &mut Encoder, issue: &PatchIssue) {
    match issue {
        PatchIssue::Regularized { regularize, reason } => {
            e.usize(0);
            e.f64(*regularize);
            e.str(reason);
        }
        PatchIssue::Failed { reason } => {
            e.usize(1);
            e.str(reason);
        }
        PatchIssue::OffCcd => e.usize(2),
        PatchIssue::CpuFallback { reason } => {
            e.usize(3);
            e.str(reason);
        }
    }
}

fn get_issue(d: &mut Decoder) -> Result<PatchIssue, WireError> {
    Ok(match d.usize()? {
        0 => PatchIssue::Regularized {
            regularize: d.f64()?,
            reason: d.str()?,
        },
        1 => PatchIssue::Failed { reason: d.str()? },
        2 => PatchIssue::OffCcd,
        3 => PatchIssue::CpuFallback { reason: d.str()? },
        other => return Err(WireError(format!("unknown patch issue {other}"))),
    })
}

/// Encodes a finished bundle block.
pub fn put_block(e: &mut Encoder, b: &BundleBlock) {
    e.usize(b.bundle);
    let a = &b.arrays;
    for v in [a.specmin, a.nspec, a.nwave, a.ndiag] {
        e.usize(v);
    }
    for v in [&a.flux, &a.ivar, &a.rdiags, &a.chi2pix, &a.pixmask_fraction] {
        e.f64s(v);
    }
    e.usize(b.reports.len());
    for r in &b.reports {
        for v in [r.bundle, r.patch, r.ispec, r.iwave] {
            e.usize(v);
        }
        put_issue(e, &r.issue);
    }
    match &b.model {
        Some(m) => {
            e.usize(1);
            for v in [m.row_min, m.row_max, m.col_min, m.col_max] {
                e.usize(v);
            }
            e.f64s(&m.values);
        }
        None => e.usize(0),
    }
    e.usize(b.npatch);
}

/// Decodes a finished bundle block (checking its array sizes).
pub fn get_block(d: &mut Decoder) -> Result<BundleBlock, WireError> {
    let bundle = d.usize()?;
    let (specmin, nspec, nwave, ndiag) = (d.usize()?, d.usize()?, d.usize()?, d.usize()?);
    let arrays = FrameArrays {
        specmin,
        nspec,
        nwave,
        ndiag,
        flux: d.f64s()?,
        ivar: d.f64s()?,
        rdiags: d.f64s()?,
        chi2pix: d.f64s()?,
        pixmask_fraction: d.f64s()?,
    };
    let plain = nspec * nwave;
    let sizes = [
        arrays.flux.len(),
        arrays.ivar.len(),
        arrays.chi2pix.len(),
        arrays.pixmask_fraction.len(),
    ];
    if sizes.iter().any(|&n| n != plain) || arrays.rdiags.len() != plain * (2 * ndiag + 1) {
        return Err(WireError(format!(
            "bundle {bundle}: array sizes {sizes:?}/{} for {nspec} x {nwave} (ndiag {ndiag})",
            arrays.rdiags.len()
        )));
    }
    let nreport = d.len(8, "reports")?;
    let mut reports = Vec::with_capacity(nreport);
    for _ in 0..nreport {
        reports.push(PatchReport {
            bundle: d.usize()?,
            patch: d.usize()?,
            ispec: d.usize()?,
            iwave: d.usize()?,
            issue: get_issue(d)?,
        });
    }
    let model = if d.usize()? == 1 {
        let (row_min, row_max, col_min, col_max) = (d.usize()?, d.usize()?, d.usize()?, d.usize()?);
        let values = d.f64s()?;
        let expect = row_max.saturating_sub(row_min) * col_max.saturating_sub(col_min);
        if values.len() != expect {
            return Err(WireError(format!(
                "bundle {bundle}: model box of {} values, expected {expect}",
                values.len()
            )));
        }
        Some(ModelBox {
            row_min,
            row_max,
            col_min,
            col_max,
            values,
        })
    } else {
        None
    };
    Ok(BundleBlock {
        bundle,
        arrays,
        reports,
        model,
        npatch: d.usize()?,
    })
}

/// Encodes a list of blocks, or the error that stopped a rank.
pub fn encode_blocks(result: &Result<Vec<BundleBlock>, String>) -> Vec<u8> {
    let mut e = Encoder::new();
    match result {
        Ok(blocks) => {
            e.usize(0);
            e.usize(blocks.len());
            for b in blocks {
                put_block(&mut e, b);
            }
        }
        Err(msg) => {
            e.usize(1);
            e.str(msg);
        }
    }
    e.finish()
}

/// Decodes [`encode_blocks`]: `Ok(Err(message))` when the sending rank failed.
pub fn decode_blocks(buf: &[u8]) -> Result<Result<Vec<BundleBlock>, String>, WireError> {
    let mut d = Decoder::new(buf);
    let out = match d.usize()? {
        0 => {
            let n = d.len(8, "blocks")?;
            Ok((0..n)
                .map(|_| get_block(&mut d))
                .collect::<Result<_, _>>()?)
        }
        1 => Err(d.str()?),
        other => return Err(WireError(format!("unknown result tag {other}"))),
    };
    d.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(bundle: usize) -> BundleBlock {
        let mut arrays = FrameArrays::new(25 * bundle, 3, 4, 1);
        for (i, v) in arrays.flux.iter_mut().enumerate() {
            *v = i as f64 * 0.1 - 0.35;
        }
        arrays.rdiags[5] = f64::MIN_POSITIVE;
        arrays.ivar[2] = -0.0;
        BundleBlock {
            bundle,
            arrays,
            reports: vec![PatchReport {
                bundle,
                patch: 2,
                ispec: 25,
                iwave: 50,
                issue: PatchIssue::Regularized {
                    regularize: 1e-4,
                    reason: "not positive definite".into(),
                },
            }],
            model: Some(ModelBox {
                row_min: 3,
                row_max: 5,
                col_min: 7,
                col_max: 10,
                values: vec![1.5; 6],
            }),
            npatch: 5,
        }
    }

    #[test]
    fn blocks_round_trip_bit_for_bit() {
        let blocks = vec![block(1), block(3)];
        let back = decode_blocks(&encode_blocks(&Ok(blocks.clone()))).unwrap();
        let back = back.unwrap();
        assert_eq!(back, blocks);
        assert_eq!(back[0].arrays.ivar[2].to_bits(), (-0.0f64).to_bits());
        let err = decode_blocks(&encode_blocks(&Err("rank 2 failed".into()))).unwrap();
        assert_eq!(err, Err("rank 2 failed".to_string()));
    }

    #[test]
    fn truncated_messages_are_errors() {
        let bytes = encode_blocks(&Ok(vec![block(0)]));
        for cut in [0, 7, 8, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode_blocks(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_blocks(&longer).is_err());
    }

    #[test]
    fn preproc_round_trips_with_and_without_pixels() {
        let img = PreprocImage {
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
        };
        let mut e = Encoder::new();
        put_preproc(&mut e, &img, true);
        put_preproc(&mut e, &img, false);
        let bytes = e.finish();
        let mut d = Decoder::new(&bytes);
        let full = get_preproc(&mut d).unwrap();
        let meta = get_preproc(&mut d).unwrap();
        d.end().unwrap();
        assert_eq!(full.image[5].to_bits(), f32::NAN.to_bits());
        assert_eq!(full.mask, img.mask);
        assert_eq!(full.fibermap, img.fibermap);
        assert_eq!(full.readnoise, img.readnoise);
        assert!(meta.image.is_empty() && meta.readnoise.is_none());
        assert_eq!(meta.header, img.header);
        assert_eq!(meta.fibermap, img.fibermap);
    }
}
