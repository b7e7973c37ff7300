//! libFuzzer target: the bytes as a file through every FITS reader of the crate (PSF, preproc,
//! frame, `info`'s detection and description). Any outcome but a panic, an abort or a hang is
//! fine: the readers must return an error for what they cannot use. Seed it with the small
//! files that tests/fuzz_inputs.rs builds, or with data/psf-r0-00051060.fits (see README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::Builder::new().suffix(".fits").tempfile() else {
        return;
    };
    if file.write_all(data).and_then(|()| file.flush()).is_err() {
        return;
    }
    let path = file.path();
    let _ = desi_extract::io::read_psf(path);
    let _ = desi_extract::io::read_preproc(path);
    let _ = desi_extract::io::read_frame(path);
    let _ = desi_extract::io::detect(path);
    let _ = desi_extract::io::describe(path);
});
