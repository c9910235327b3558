//! Everything that knows PyTorch checkpoints: the core's formats and surgery
//! ([`weightnorm_core::formats`], [`weightnorm_core::surgery`]: `.safetensors`, `.pt` zip and
//! legacy through a restricted unpickler, the two weight-norm key schemes, pair detection,
//! fuse / split / convert, architecture files), re-exported, and Burn modules in and out
//! ([`load_into_module`], [`save_module`]), which translate between PyTorch's layout (Linear
//! `[out, in]`) and Burn's (`[d_in, d_out]`).

mod module_io;

pub use module_io::{load_into_module, save_module};
pub use weightnorm_core::formats::{
    Action, ArchError, ArchNetwork, Binding, BindingKind, CANONICAL_SCALE_KEY, Checkpoint, Dtype,
    EntrySummary, Format, OpenOptions, OutputFormat, Planned, PtDict, PtError, PtTensor, PtValue,
    Result, SaveOptions, Shard, Sharding, TensorEntry, TorchError, WriteOptions, arch, field,
    file_kind, from_arch, lazy_entry, open_regular, read_pt, read_regular, to_tensors,
    vector_entry, write_pt, write_safetensors, write_safetensors_with,
};
pub use weightnorm_core::surgery::{
    FuseOptions, Pair, Scheme, Selector, SplitOptions, Stats, convert, detect_pairs, fuse,
    fuse_tensor, infer_axis, pair_keys, pair_stats, split, split_tensor,
};
