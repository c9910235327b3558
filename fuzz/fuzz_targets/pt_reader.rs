#![no_main]
#[path = "../common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Steer every input to the PyTorch (zip) reader: it is chosen by the zip magic number.
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(data.strip_prefix(b"PK\x03\x04").unwrap_or(data));
    common::exercise(&zip, ".pt");
});
