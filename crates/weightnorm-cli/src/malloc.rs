//! The process's allocator settings, made once at the start of `main` so that every command
//! (`bench`, `train`, `compare`, ...) runs with the same allocator behaviour.
//!
//! glibc's malloc serves a block of 128 KiB or more (the default `mmap_threshold`, raised
//! dynamically up to 32 MiB) with a fresh `mmap` and gives it back with `munmap` when freed;
//! and it returns the free top of its heap to the kernel once that exceeds 128 KiB (the
//! default `trim_threshold`). A weight of 4096x4096 f32 is 64 MiB: every weight-norm forward
//! then maps a new 64 MiB output, faults its 16,384 pages in one by one (each fault zeroes a
//! page), and unmaps it when the tensor is dropped, so the operation costs five to ten times a
//! copy of the same bytes. A training loop does this for every weight, activation and gradient
//! of every step.
//!
//! Raising both thresholds to [`THRESHOLD`] (1 GiB) keeps freed blocks in the heap, where the
//! next step's allocation of the same size finds them with their pages already mapped. The cost
//! is memory: the process keeps its peak heap (up to 1 GiB of free top, and every block below
//! it) instead of returning it between steps.
//!
//! The environment wins: if `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or a
//! `glibc.malloc` tunable in `GLIBC_TUNABLES` is set, glibc has read it at start-up and nothing
//! is changed here. `WEIGHTNORM_MALLOC=default` keeps glibc's defaults (to measure them).

use std::sync::OnceLock;

/// Both thresholds, in bytes: 1 GiB. Blocks below it come from the heap and stay there when
/// freed; only larger ones are mapped and unmapped per allocation.
pub const THRESHOLD: usize = 1 << 30;

/// Where the allocator's settings come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settings {
    /// Set by this program with `mallopt`: `mmap_threshold` and `trim_threshold` in bytes.
    Tuned {
        /// `M_MMAP_THRESHOLD`.
        mmap_threshold: usize,
        /// `M_TRIM_THRESHOLD`.
        trim_threshold: usize,
    },
    /// Left as the environment set them (the variables named).
    Environment(String),
    /// glibc's defaults, on request (`WEIGHTNORM_MALLOC=default`).
    Default,
    /// Not glibc, or `mallopt` refused a value: the platform's allocator as it is.
    Unchanged(&'static str),
}

impl std::fmt::Display for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tuned {
                mmap_threshold,
                trim_threshold,
            } => write!(
                f,
                "glibc malloc, mmap_threshold {mmap_threshold} and trim_threshold {trim_threshold} \
                 bytes (set by weightnorm)"
            ),
            Self::Environment(vars) => write!(f, "glibc malloc as the environment sets it: {vars}"),
            Self::Default => write!(f, "glibc malloc defaults (WEIGHTNORM_MALLOC=default)"),
            Self::Unchanged(why) => write!(f, "the system allocator, unchanged ({why})"),
        }
    }
}

impl Settings {
    /// The settings as JSON: `{"kind", "mmap_threshold", "trim_threshold", "text"}` (the
    /// thresholds null unless set here).
    pub fn json(&self) -> serde_json::Value {
        let (kind, mmap, trim) = match self {
            Self::Tuned {
                mmap_threshold,
                trim_threshold,
            } => ("tuned", Some(*mmap_threshold), Some(*trim_threshold)),
            Self::Environment(_) => ("environment", None, None),
            Self::Default => ("default", None, None),
            Self::Unchanged(_) => ("unchanged", None, None),
        };
        serde_json::json!({
            "kind": kind,
            "mmap_threshold": mmap,
            "trim_threshold": trim,
            "text": self.to_string(),
        })
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// The environment variables that configure glibc's malloc thresholds, as `NAME=value` pairs.
fn malloc_environment(var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut set = Vec::new();
    for name in ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"] {
        if let Some(v) = var(name) {
            set.push(format!("{name}={v}"));
        }
    }
    if let Some(t) = var("GLIBC_TUNABLES").filter(|t| t.contains("glibc.malloc.")) {
        set.push(format!("GLIBC_TUNABLES={t}"));
    }
    set
}

/// What [`configure`] does, given the environment: the settings to report, and whether to call
/// `mallopt`.
fn decide(var: impl Fn(&str) -> Option<String>) -> Option<Settings> {
    if var("WEIGHTNORM_MALLOC").as_deref() == Some("default") {
        return Some(Settings::Default);
    }
    let env = malloc_environment(var);
    if !env.is_empty() {
        return Some(Settings::Environment(env.join(" ")));
    }
    None
}

/// Configures the allocator (see the module docs) and records what is in force. Call it first
/// thing in `main`, before any thread starts; later calls return the first call's settings.
pub fn configure() -> &'static Settings {
    SETTINGS.get_or_init(|| decide(|name| std::env::var(name).ok()).unwrap_or_else(set_thresholds))
}

/// The settings [`configure`] put in force (configuring now if it has not run).
pub fn settings() -> &'static Settings {
    configure()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> Settings {
    let value = libc::c_int::try_from(THRESHOLD).expect("1 GiB fits a C int");
    // SAFETY: `mallopt` only changes two numbers in glibc's allocator state, under its lock;
    // any value is valid for these parameters (glibc returns 0 for one it refuses).
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, value) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, value) == 1
    };
    if ok {
        Settings::Tuned {
            mmap_threshold: THRESHOLD,
            trim_threshold: THRESHOLD,
        }
    } else {
        Settings::Unchanged("glibc refused the thresholds")
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> Settings {
    Settings::Unchanged("not glibc")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_environment_wins_and_default_opts_out() {
        assert_eq!(decide(env(&[])), None);
        assert_eq!(
            decide(env(&[("WEIGHTNORM_MALLOC", "default")])),
            Some(Settings::Default)
        );
        assert_eq!(
            decide(env(&[("MALLOC_TRIM_THRESHOLD_", "5")])),
            Some(Settings::Environment("MALLOC_TRIM_THRESHOLD_=5".into()))
        );
        let tunables = "glibc.malloc.mmap_threshold=9";
        assert_eq!(
            decide(env(&[("GLIBC_TUNABLES", tunables)])),
            Some(Settings::Environment(format!("GLIBC_TUNABLES={tunables}")))
        );
        // Tunables of something else than malloc leave malloc to us.
        assert_eq!(
            decide(env(&[("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2")])),
            None
        );
    }

    #[test]
    fn settings_describe_themselves() {
        let s = Settings::Tuned {
            mmap_threshold: THRESHOLD,
            trim_threshold: THRESHOLD,
        };
        assert!(s.to_string().contains("mmap_threshold 1073741824"));
        assert_eq!(s.json()["mmap_threshold"], THRESHOLD);
        assert_eq!(Settings::Default.json()["kind"], "default");
        assert!(Settings::Default.json()["trim_threshold"].is_null());
    }

    /// With the thresholds raised, a 32 MiB block (above glibc's default threshold of 128 KiB
    /// and its dynamic limit of 32 MiB) comes from the heap, not from a fresh mapping: glibc's
    /// count of mapped bytes does not grow by it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn raised_thresholds_serve_large_blocks_from_the_heap() {
        if decide(|name| std::env::var(name).ok()).is_some() {
            return; // the environment configures malloc for this process
        }
        assert!(matches!(configure(), Settings::Tuned { .. }));
        // SAFETY: `mallinfo2` only reads glibc's statistics.
        let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
        let len = 32 << 20;
        let before = mapped();
        let block = vec![1u8; len];
        let during = mapped();
        assert_eq!(block[len - 1], 1);
        assert!(
            during < before + len,
            "a {len}-byte block was mapped: {before} -> {during} bytes in mappings"
        );
    }
}
