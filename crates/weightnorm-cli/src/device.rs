//! Where commands compute: `--device cpu|cuda[:N]|wgpu[:N]` and the global `--threads N`.
//!
//! The CPU device is Burn's `flex` backend, always compiled in and always the default, also in
//! a binary built with `--features cuda` or `--features wgpu` (Burn's own default device would
//! then be the GPU). A backend that was not compiled in is a one-line error naming the cargo
//! feature that brings it, never a panic.

use std::ffi::OsStr;

use anyhow::Result;
use burn::tensor::Device;
use clap::ValueEnum;
use clap::builder::{EnumValueParser, PossibleValue, TypedValueParser};

use crate::Failure;

/// A compute backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Burn's `flex` CPU backend (the fused CPU kernel).
    Cpu,
    /// An NVIDIA GPU through CUDA (build with `--features cuda`).
    Cuda,
    /// A GPU (or Mesa's software Vulkan) through wgpu (build with `--features wgpu`).
    Wgpu,
}

impl Backend {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
        }
    }
}

/// The value of `--device`: a backend and, for the GPU ones, an optional device index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceArg {
    /// The backend.
    pub backend: Backend,
    /// The device's index among the backend's devices (`cuda:1`); `None` is the first (CUDA)
    /// or the one wgpu prefers.
    pub index: Option<usize>,
}

impl Default for DeviceArg {
    fn default() -> Self {
        Self {
            backend: Backend::Cpu,
            index: None,
        }
    }
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}:{i}", self.backend.name()),
            None => write!(f, "{}", self.backend.name()),
        }
    }
}

/// Parses `cpu`, `cuda`, `cuda:N`, `wgpu`, `wgpu:N`; `--help` lists the backends and a typo
/// gets clap's suggestion, as for any value enum.
#[derive(Clone, Copy, Default)]
pub struct DeviceParser;

impl TypedValueParser for DeviceParser {
    type Value = DeviceArg;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<DeviceArg, clap::Error> {
        let text = value.to_str().unwrap_or("").trim();
        let (name, index) = match text.split_once(':') {
            Some((n, i)) => (n, Some(i)),
            None => (text, None),
        };
        let backend = EnumValueParser::<Backend>::new().parse_ref(cmd, arg, OsStr::new(name))?;
        let index = match index {
            None => None,
            Some(_) if backend == Backend::Cpu => {
                return Err(invalid(cmd, arg, text, "the CPU device takes no index"));
            }
            Some(i) => Some(i.parse::<usize>().map_err(|_| {
                invalid(
                    cmd,
                    arg,
                    text,
                    "the index after ':' is a device number (cuda:0, wgpu:1)",
                )
            })?),
        };
        Ok(DeviceArg { backend, index })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            Backend::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// clap's "invalid value" error for `value` of `arg`, with `why`.
fn invalid(cmd: &clap::Command, arg: Option<&clap::Arg>, value: &str, why: &str) -> clap::Error {
    let name = arg.map_or("--device".to_string(), |a| format!("--{}", a.get_id()));
    clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("invalid value '{value}' for '{name}': {why}\n"),
    )
    .with_cmd(cmd)
}

impl DeviceArg {
    /// The Burn device, or a [`Failure`] naming the cargo feature when the backend was not
    /// compiled into this binary, or saying so when no such device can be opened.
    ///
    /// # Errors
    ///
    /// As above.
    pub fn device(self) -> Result<Device> {
        let device = match self.backend {
            Backend::Cpu => Device::flex(),
            Backend::Cuda => cuda(self.index)?,
            Backend::Wgpu => wgpu(self.index)?,
        };
        if self.backend != Backend::Cpu {
            probe(&device, self)?;
        }
        Ok(device)
    }
}

#[cfg(feature = "cuda")]
fn cuda(index: Option<usize>) -> Result<Device> {
    Ok(Device::cuda(index.unwrap_or(0)))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: Option<usize>) -> Result<Device> {
    Err(not_compiled("cuda"))
}

#[cfg(feature = "wgpu")]
fn wgpu(index: Option<usize>) -> Result<Device> {
    use burn::tensor::DeviceKind;
    Ok(Device::wgpu(index.map_or(
        DeviceKind::DefaultDevice,
        DeviceKind::DiscreteGpu,
    )))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu(_: Option<usize>) -> Result<Device> {
    Err(not_compiled("wgpu"))
}

/// The error for a backend this binary was built without.
#[allow(dead_code)] // unused in a build with every feature
fn not_compiled(feature: &str) -> anyhow::Error {
    Failure::input(anyhow::anyhow!(
        "--device {feature}: this binary was built without the {feature} backend; rebuild with \
         `cargo build --release --features {feature}`"
    ))
    .into()
}

/// Opens `device` with a tiny computation, turning the backend's panic (no driver, no such
/// device) into a one-line error.
fn probe(device: &Device, arg: DeviceArg) -> Result<()> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let device = device.clone();
    let opened = std::panic::catch_unwind(move || {
        burn::tensor::Tensor::<1>::from_data([1.0f32, 2.0], &device)
            .sum()
            .into_scalar::<f32>()
    });
    std::panic::set_hook(previous);
    match opened {
        Ok(3.0) => Ok(()),
        Ok(s) => Err(anyhow::anyhow!(
            "--device {arg}: a test sum gave {s}, not 3: the device does not compute correctly"
        )),
        Err(p) => {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the backend panicked".into());
            Err(Failure::input(anyhow::anyhow!(
                "--device {arg}: cannot open the device: {}",
                why.lines().next().unwrap_or("")
            ))
            .into())
        }
    }
}

/// The most worker threads `--threads` may ask for.
pub const MAX_THREADS: usize = 1024;

/// Checks `--threads` before anything is started: from 1 to [`MAX_THREADS`].
///
/// # Errors
///
/// A [`Failure`] (exit 2) for a number outside that range.
pub fn check_threads(threads: Option<usize>) -> Result<()> {
    match threads {
        Some(0) => Err(Failure::input(anyhow::anyhow!("--threads must be at least 1")).into()),
        Some(n) if n > MAX_THREADS => Err(Failure::input(anyhow::anyhow!(
            "--threads {n} is more than the {MAX_THREADS} threads a process of this program may start"
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Sets the number of worker threads of the CPU kernels and Burn's CPU backend (rayon's
/// global pool); `None` leaves rayon's default (one per core, or `RAYON_NUM_THREADS`).
///
/// # Errors
///
/// A [`Failure`] for a number [`check_threads`] refuses.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    check_threads(threads)?;
    let Some(n) = threads else { return Ok(()) };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot start {n} threads: {e}"))
}

/// Applies `WEIGHTNORM_STREAM_MIN_BYTES` (a size in bytes, or `none`): the CPU kernels write
/// outputs of that size and more with streaming stores (see
/// [`weightnorm::ops::set_streaming_stores`]). Unset: plain stores, the library's default.
///
/// # Errors
///
/// A value that is neither a size in bytes nor `none` (an input error, exit code 2).
pub fn set_streaming_stores() -> Result<()> {
    const VAR: &str = "WEIGHTNORM_STREAM_MIN_BYTES";
    let Some(value) = std::env::var_os(VAR) else {
        return Ok(());
    };
    let text = value.to_string_lossy();
    let min = match text.trim() {
        "none" => None,
        t => Some(t.parse::<usize>().map_err(|_| {
            Failure::input(anyhow::anyhow!(
                "{VAR}={text:?} is neither a size in bytes nor `none`"
            ))
        })?),
    };
    weightnorm::ops::set_streaming_stores(min);
    Ok(())
}

/// The number of worker threads the CPU backend uses.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[arg(long, value_parser = DeviceParser, default_value = "cpu")]
        device: DeviceArg,
    }

    fn parse(v: &str) -> Result<DeviceArg, String> {
        T::try_parse_from(["t", "--device", v])
            .map(|t| t.device)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn devices_parse_with_and_without_an_index() {
        assert_eq!(parse("cpu").unwrap(), DeviceArg::default());
        assert_eq!(
            parse("cuda:1").unwrap(),
            DeviceArg {
                backend: Backend::Cuda,
                index: Some(1)
            }
        );
        assert_eq!(parse("wgpu").unwrap().index, None);
        assert_eq!(parse("cuda:1").unwrap().to_string(), "cuda:1");
    }

    #[test]
    fn bad_devices_name_the_option() {
        let e = parse("gpu").unwrap_err();
        assert!(
            e.contains("--device") && e.contains("cpu, cuda, wgpu"),
            "{e}"
        );
        let e = parse("cpu:0").unwrap_err();
        assert!(e.contains("--device") && e.contains("no index"), "{e}");
        let e = parse("cuda:x").unwrap_err();
        assert!(e.contains("--device") && e.contains("device number"), "{e}");
        assert!(parse("cuda").is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_not_compiled_in_names_its_feature() {
        let e = parse("cuda").unwrap().device().unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn the_cpu_device_computes() {
        let d = DeviceArg::default().device().unwrap();
        let s = burn::tensor::Tensor::<1>::from_data([1.0f32, 2.0], &d)
            .sum()
            .into_scalar::<f32>();
        assert_eq!(s, 3.0);
    }
}
