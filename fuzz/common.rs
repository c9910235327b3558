// Shared by the fuzz targets: write the input to a file, open it as a checkpoint, read every
// tensor and fuse whatever pairs it has. Errors are fine; panics, hangs and crashes are not.
use std::io::Write;

pub fn exercise(data: &[u8], suffix: &str) {
    let path = std::env::temp_dir().join(format!("weightnorm-fuzz-{}{suffix}", std::process::id()));
    {
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(data).unwrap();
    }
    if let Ok(ckpt) = weightnorm_core::formats::Checkpoint::open(&path, None) {
        for t in &ckpt.tensors {
            if t.byte_len() < (64 << 20) {
                let _ = t.bytes();
            }
        }
        if ckpt.tensors.iter().all(|t| t.byte_len() < (64 << 20))
            && let Ok((fused, _)) =
                weightnorm_core::surgery::fuse(
                &ckpt.tensors,
                &weightnorm_core::surgery::FuseOptions::default(),
            )
        {
            for t in &fused {
                let _ = t.bytes();
            }
        }
    }
}
