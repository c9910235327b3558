#![no_main]
#[path = "../common.rs"]
mod common;

// The legacy (non-zip) torch.save stream: five pickles and raw storages. Inputs are steered to
// that reader by giving them the legacy magic number's first pickle when they lack it.
const MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(data.strip_prefix(MAGIC).unwrap_or(data));
    common::exercise(&file, ".pt");
});
