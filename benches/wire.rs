//! Criterion benchmarks of the messages between ranks, in memory (no MPI; benches/wire_mpi.rs
//! times the transfer): the bundle blocks of a full 500-fiber r frame (what a rank sends to
//! rank 0 in `extract` under MPI, and an extractor to the writer in `exposure`) and a full
//! preproc image with its PSF (what the reader sends to an extractor).
//!
//! - `wire/*`: the format in use: the postcard head encoded and decoded, the planes moved into
//!   the message as MPI delivers them (the copy MPI makes is in wire_mpi).
//! - `postcard_inline/*`: the alternative measured against it: the same arrays serialized by
//!   postcard inside the message, value by value.
//!
//! `cargo bench --bench wire` (add `-- --quick` for a short run).

#[path = "common/wire_data.rs"]
mod wire_data;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use desi_extract::extract::BundleBlock;
use desi_extract::io::{read_psf, PreprocImage};
use desi_extract::parallel::wire::blocks::{read_share, share_message};
use desi_extract::parallel::wire::preproc::PreprocHead;
use desi_extract::parallel::wire::{Incoming, Outgoing, Plane, PlaneRef, WireError};
use desi_extract::psf::GaussHermitePsf;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

/// The message's planes as the receiver gets them (made outside the timed part).
fn delivered(message: &Outgoing) -> Vec<Plane> {
    message.planes().iter().map(PlaneRef::to_plane).collect()
}

/// The receiving side: the envelope parsed and `planes` moved in, as MPI delivers them.
fn receive(envelope: Vec<u8>, planes: Vec<Plane>) -> Result<Incoming, WireError> {
    let mut planes = planes.into_iter();
    Incoming::receive(envelope, |_| {
        planes
            .next()
            .ok_or_else(|| WireError("missing plane".into()))
    })
}

/// The reader's message: the PSF and the preproc image.
fn inputs_message<'a>(psf: &'a GaussHermitePsf, image: &'a PreprocImage) -> Outgoing<'a> {
    let mut planes = Vec::new();
    let head = (psf, PreprocHead::new(image, &mut planes));
    Outgoing::new(&head, planes).expect("encodes")
}

fn read_inputs(mut message: Incoming) -> (GaussHermitePsf, PreprocImage) {
    let (psf, head): (GaussHermitePsf, PreprocHead) = message.head().expect("decodes");
    let image = head.into_image(&mut message).expect("decodes");
    message.end().expect("every plane used");
    (psf, image)
}

/// One bundle block with its arrays inside the postcard message.
#[derive(Serialize, Deserialize)]
struct InlineBlock {
    bundle: usize,
    flux: Vec<f64>,
    ivar: Vec<f64>,
    rdiags: Vec<f64>,
    chi2pix: Vec<f64>,
    pixmask_fraction: Vec<f64>,
}

/// A preproc image's pixels inside the postcard message.
#[derive(Serialize, Deserialize)]
struct InlinePixels {
    image: Vec<f32>,
    ivar: Vec<f32>,
    mask: Vec<i32>,
}

fn inline_blocks(blocks: &[BundleBlock]) -> Vec<InlineBlock> {
    blocks
        .iter()
        .map(|b| InlineBlock {
            bundle: b.bundle,
            flux: b.arrays.flux.clone(),
            ivar: b.arrays.ivar.clone(),
            rdiags: b.arrays.rdiags.clone(),
            chi2pix: b.arrays.chi2pix.clone(),
            pixmask_fraction: b.arrays.pixmask_fraction.clone(),
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let blocks = wire_data::r_frame_blocks();
    let preproc = wire_data::full_preproc();
    let psf = read_psf(Path::new(PSF)).expect("bundled PSF");

    let mut g = c.benchmark_group("wire");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("blocks_r_frame_encode_decode", |b| {
        let planes = delivered(&share_message(Ok(&blocks)).expect("encodes"));
        b.iter_batched(
            || planes.clone(),
            |planes| {
                let message = share_message(Ok(black_box(&blocks))).expect("encodes");
                let back = read_share(receive(message.envelope().to_vec(), planes).expect("ok"));
                black_box(back.expect("decodes"))
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("preproc_psf_encode_decode", |b| {
        let planes = delivered(&inputs_message(&psf, &preproc));
        b.iter_batched(
            || planes.clone(),
            |planes| {
                let message = inputs_message(black_box(&psf), black_box(&preproc));
                black_box(read_inputs(
                    receive(message.envelope().to_vec(), planes).expect("ok"),
                ))
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("psf_encode_decode", |b| {
        b.iter(|| {
            let bytes = desi_extract::parallel::wire::to_bytes(black_box(&psf)).expect("encodes");
            black_box(
                desi_extract::parallel::wire::from_bytes::<GaussHermitePsf>(&bytes, "psf")
                    .expect("decodes"),
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("postcard_inline");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let inline = inline_blocks(&blocks);
    g.bench_function("blocks_r_frame_encode_decode", |b| {
        b.iter(|| {
            let bytes = postcard::to_allocvec(black_box(&inline)).expect("encodes");
            black_box(postcard::from_bytes::<Vec<InlineBlock>>(&bytes).expect("decodes"))
        })
    });
    let pixels = InlinePixels {
        image: preproc.image.clone(),
        ivar: preproc.ivar.clone(),
        mask: preproc.mask.clone(),
    };
    g.bench_function("preproc_pixels_encode_decode", |b| {
        b.iter(|| {
            let bytes = postcard::to_allocvec(black_box(&pixels)).expect("encodes");
            black_box(postcard::from_bytes::<InlinePixels>(&bytes).expect("decodes"))
        })
    });
    g.finish();
}

criterion_group!(wire_benches, benches);
criterion_main!(wire_benches);
