//! Criterion benchmarks of the messages between ranks: encoding and decoding the bundle blocks
//! of a full 500-fiber r frame (what a rank sends to rank 0 in `extract` under MPI and what an
//! extractor sends to the writer in `exposure`) and a full preproc image with its PSF (what the
//! reader sends to an extractor). In memory, no MPI: benches/wire_mpi.rs times the transfer.
//!
//! `cargo bench --bench wire` (add `-- --quick` for a short run).

#[path = "common/wire_data.rs"]
mod wire_data;

use criterion::{criterion_group, criterion_main, Criterion};
use desi_extract::io::read_psf;
use desi_extract::parallel::wire::{self, Decoder, Encoder};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");

fn benches(c: &mut Criterion) {
    let blocks = Ok(wire_data::r_frame_blocks());
    let preproc = wire_data::full_preproc();
    let psf = read_psf(Path::new(PSF)).expect("bundled PSF");

    let mut g = c.benchmark_group("wire");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("blocks_r_frame_encode_decode", |b| {
        b.iter(|| {
            let bytes = wire::encode_blocks(black_box(&blocks));
            black_box(wire::decode_blocks(&bytes).expect("decodes"))
        })
    });
    g.bench_function("preproc_psf_encode_decode", |b| {
        b.iter(|| {
            let mut e = Encoder::new();
            wire::put_psf(&mut e, black_box(&psf));
            wire::put_preproc(&mut e, black_box(&preproc), true);
            let bytes = e.finish();
            let mut d = Decoder::new(&bytes);
            let back = (wire::get_psf(&mut d), wire::get_preproc(&mut d));
            black_box(back)
        })
    });
    g.bench_function("psf_encode_decode", |b| {
        b.iter(|| {
            let mut e = Encoder::new();
            wire::put_psf(&mut e, black_box(&psf));
            let bytes = e.finish();
            black_box(wire::get_psf(&mut Decoder::new(&bytes)))
        })
    });
    g.finish();
}

criterion_group!(wire_benches, benches);
criterion_main!(wire_benches);
