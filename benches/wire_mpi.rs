//! The message path between two MPI ranks, timed end to end: rank 0 encodes a message and
//! sends it, rank 1 receives and decodes it and answers with one byte; the median round trip
//! of 9 (after one warm-up) for the bundle blocks of a full 500-fiber r frame and for a full
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

use desi_extract::io::{read_psf, PreprocImage};
use desi_extract::parallel::wire::blocks::{read_share, share_message};
use desi_extract::parallel::wire::preproc::PreprocHead;
use desi_extract::parallel::wire::Outgoing;
use desi_extract::parallel::Comm;
use desi_extract::psf::GaussHermitePsf;
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

/// The reader's message: the PSF and the preproc image.
fn inputs_message<'a>(psf: &'a GaussHermitePsf, image: &'a PreprocImage) -> Outgoing<'a> {
    let mut planes = Vec::new();
    let head = (psf, PreprocHead::new(image, &mut planes));
    Outgoing::new(&head, planes).expect("encodes")
}

fn main() {
    let comm = Comm::init();
    if comm.size() != 2 {
        eprintln!("wire_mpi: run it under `mpirun -n 2` (this is a single process): skipped");
        return;
    }
    let blocks = wire_data::r_frame_blocks();
    let preproc = wire_data::full_preproc();
    let psf = read_psf(Path::new(PSF)).expect("bundled PSF");

    let blocks_s = round_trips(
        &comm,
        || comm.send_message(1, &share_message(Ok(&blocks)).expect("encodes")),
        || {
            let message = comm.recv_message(0).expect("receives");
            black_box(
                read_share(message)
                    .expect("decodes")
                    .expect("no remote error"),
            );
        },
    );
    let inputs_s = round_trips(
        &comm,
        || comm.send_message(1, &inputs_message(&psf, &preproc)),
        || {
            let mut message = comm.recv_message(0).expect("receives");
            let (psf, head): (GaussHermitePsf, PreprocHead) = message.head().expect("decodes");
            let image = head.into_image(&mut message).expect("decodes");
            black_box((psf, image));
        },
    );
    if let (Some(blocks_s), Some(inputs_s)) = (blocks_s, inputs_s) {
        println!("wire_mpi: blocks of a 500-fiber r frame: median {blocks_s:.4} s");
        println!("wire_mpi: preproc 4128x4114 + PSF:        median {inputs_s:.4} s");
    }
}
