//! The message path between two MPI ranks, timed end to end: rank 0 encodes a message, sends
//! it, rank 1 receives and decodes it and answers with one byte; the median round trip of 9
//! (after one warm-up) for the bundle blocks of a full 500-fiber r frame and for a full
//! preproc image with its PSF (benches/common/wire_data.rs). Not a criterion bench: it needs
//! two ranks.
//!
//! ```text
//! cargo bench --bench wire_mpi --no-run     # prints the executable
//! mpirun -n 2 target/release/deps/wire_mpi-<hash> --bench
//! ```
//!
//! Run without mpirun it says so and exits.

#[path = "common/wire_data.rs"]
mod wire_data;

use desi_extract::io::read_psf;
use desi_extract::parallel::wire::{self, Decoder, Encoder};
use desi_extract::parallel::Comm;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

const PSF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/psf-r0-00051060.fits");
const REPEATS: usize = 9;

/// Median seconds of `REPEATS` round trips (after one warm-up): `send` on rank 0, `receive`
/// on rank 1, which answers with one byte.
fn round_trips(comm: &Comm, send: impl Fn(), receive: impl Fn()) -> Option<f64> {
    let mut times = Vec::new();
    for _ in 0..=REPEATS {
        if comm.rank() == 0 {
            let t0 = Instant::now();
            send();
            comm.recv(1);
            times.push(t0.elapsed().as_secs_f64());
        } else {
            receive();
            comm.send(0, &[1]);
        }
    }
    if comm.rank() != 0 {
        return None;
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    Some(times[REPEATS / 2])
}

fn main() {
    let comm = Comm::init();
    if comm.size() != 2 {
        eprintln!("wire_mpi: run it under `mpirun -n 2` (this is a single process): skipped");
        return;
    }
    let blocks = Ok(wire_data::r_frame_blocks());
    let preproc = wire_data::full_preproc();
    let psf = read_psf(Path::new(PSF)).expect("bundled PSF");

    let blocks_s = round_trips(
        &comm,
        || comm.send(1, &wire::encode_blocks(&blocks)),
        || {
            let blocks = wire::decode_blocks(&comm.recv(0)).expect("decodes");
            black_box(blocks.expect("no remote error"));
        },
    );
    let inputs_s = round_trips(
        &comm,
        || {
            let mut e = Encoder::new();
            wire::put_psf(&mut e, &psf);
            wire::put_preproc(&mut e, &preproc, true);
            comm.send(1, &e.finish());
        },
        || {
            let bytes = comm.recv(0);
            let mut d = Decoder::new(&bytes);
            let psf = wire::get_psf(&mut d).expect("decodes");
            black_box((psf, wire::get_preproc(&mut d).expect("decodes")));
        },
    );
    if let (Some(blocks_s), Some(inputs_s)) = (blocks_s, inputs_s) {
        println!("wire_mpi: blocks of a 500-fiber r frame: median {blocks_s:.4} s");
        println!("wire_mpi: preproc 4128x4114 + PSF:        median {inputs_s:.4} s");
    }
}
