#![no_main]
// Hostile ONNX models: decode, map the graph onto the calculus, and for what maps (and is
// small), canonicalize, write back, encode and read the result again. Errors are fine; panics,
// hangs, crashes and huge allocations are not. No directory is given, so external data is
// refused rather than read from wherever a hostile location points.
use weightnorm_core::canonical::canonicalize;
use weightnorm_core::formats::onnx::{Bytes, OnnxModel, encode, write_model};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(model) = OnnxModel::decode(Bytes::copy_from_slice(data), None) else {
        return;
    };
    let Ok(read) = model.network::<f32>() else {
        return;
    };
    if read.network.parameters() > 1 << 20 {
        return;
    }
    let Ok(c) = canonicalize(read.network.clone()) else {
        return;
    };
    let Ok(out) = write_model(&model, &read.graph, c.network(), Some(c.scale())) else {
        return;
    };
    if let Ok(bytes) = encode(&out) {
        let back = OnnxModel::decode(Bytes::from(bytes), None).expect("what was written decodes");
        let again = back.network::<f32>().expect("what was written reads back");
        assert_eq!(again.network.input(), read.network.input());
    }
});
