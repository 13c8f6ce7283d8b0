//! ONNX Runtime execution providers: which ones, in what order, with which options.
//!
//! On a Jetson the order is TensorRT -> CUDA -> CPU. Every provider is optional: one that the
//! installed ONNX Runtime library was not built with, or that fails to register (a missing
//! `libnvinfer`, no GPU), is reported and skipped, and the next one is tried; the CPU is always
//! the last resort (ONNX Runtime runs there whatever no other provider took).
//!
//! Everything here is pure: [`plan`] turns the settings, the manifest and what is known about
//! the machine into a list of [`ProviderConfig`]s with ONNX Runtime's own option strings
//! (`trt_fp16_enable`, `trt_profile_min_shapes`, `gpu_mem_limit`, ...), which
//! `backend::ort` registers. The unit tests check that list without a GPU.
//!
//! Settings come from, lowest to highest precedence: the defaults, a profile file
//! ([`ProfileFile`]: `ove-profile.toml` in the bundle directory, or `--profile FILE`; TOML),
//! then the command line (`--ep`, `--max-context`, `--device-id`): [`resolve_settings`].
//!
//! This file holds the settings: the providers, `--ep`, [`ProviderSettings`] and
//! [`resolve_settings`]; the rest is in
//! - `plan.rs`: [`plan`], the providers and options for one graph;
//! - `profile.rs`: the profile file, its keys and where it is looked for;
//! - `device.rs`: what is known about the machine ([`DeviceInfo`]) and the TensorRT cache
//!   directory keyed by it;
//! - `tensorrt.rs`: TensorRT settings, optimization profiles ([`shape_limits`]) and options.

mod device;
mod plan;
mod profile;
mod tensorrt;

pub use device::{trt_cache_dir, DeviceInfo, TRT_CACHE_DIR};
pub use plan::{cuda_options, plan, GraphPlan, ProviderConfig};
pub use profile::{CudaFile, ProfileFile, ProvidersKey, TensorRtFile, PROFILE_FILE};
pub use tensorrt::{
    effective_max_context, profile_shapes, shape_limits, tensorrt_options, ShapeLimits,
    TensorRtSettings,
};

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// An ONNX Runtime execution provider `ove` knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[serde(rename = "tensorrt")]
    TensorRt,
    Cuda,
    Cpu,
}

impl Provider {
    /// TensorRT, CUDA, CPU: the preference order of `--ep auto`.
    pub const AUTO: [Provider; 3] = [Provider::TensorRt, Provider::Cuda, Provider::Cpu];

    /// ONNX Runtime's name for it (as `GetAvailableProviders` lists it).
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::TensorRt => "TensorrtExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::Cpu => "CPUExecutionProvider",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::TensorRt => "TensorRT",
            Provider::Cuda => "CUDA",
            Provider::Cpu => "CPU",
        })
    }
}

impl FromStr for Provider {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Provider::TensorRt,
            "cuda" => Provider::Cuda,
            "cpu" => Provider::Cpu,
            other => bail!("unknown execution provider {other:?} (tensorrt, cuda or cpu)"),
        })
    }
}

/// Parses `--ep`: `auto` (TensorRT, CUDA, CPU) or a comma-separated list such as
/// `tensorrt,cpu`. Duplicates are dropped; the CPU is appended when missing (it is always
/// the last resort).
pub fn parse_ep_list(s: &str) -> Result<Vec<Provider>> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(Provider::AUTO.to_vec());
    }
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let p: Provider = part.parse()?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        bail!("--ep needs auto or a list of providers (tensorrt, cuda, cpu)");
    }
    Ok(normalize_order(out))
}

fn normalize_order(mut order: Vec<Provider>) -> Vec<Provider> {
    let mut seen = Vec::new();
    order.retain(|p| {
        let new = !seen.contains(p);
        seen.push(*p);
        new
    });
    if let Some(i) = order.iter().position(|p| *p == Provider::Cpu) {
        // Nothing after the CPU would ever run.
        order.truncate(i + 1);
    } else {
        order.push(Provider::Cpu);
    }
    order
}

/// CUDA settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CudaSettings {
    /// Cap of the CUDA memory arena (`gpu_mem_limit`), in MiB. On an 8 GB board, whose GPU
    /// shares the RAM, a cap keeps room for the rest of the system.
    pub memory_limit_mb: Option<u64>,
}

/// Which providers to try and how to configure them.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// Preference order, CPU last (see [`parse_ep_list`]).
    pub order: Vec<Provider>,
    /// The order was asked for by name (`--ep cuda`, a profile's list), not `auto`: a
    /// provider the library lacks is then a warning rather than a debug line.
    pub explicit: bool,
    /// The GPU, for CUDA and TensorRT.
    pub device_id: u32,
    /// A context length lower than the manifest's `max_context`: bounds the TensorRT
    /// profiles (and with them the KV cache TensorRT plans for).
    pub max_context: Option<usize>,
    pub tensorrt: TensorRtSettings,
    pub cuda: CudaSettings,
}

impl Default for ProviderSettings {
    /// The CPU alone: what `ove` did before GPU providers existed, and what a build without
    /// a GPU library gets anyway. The CLI's `--ep auto` asks for [`Provider::AUTO`].
    fn default() -> Self {
        Self {
            order: vec![Provider::Cpu],
            explicit: false,
            device_id: 0,
            max_context: None,
            tensorrt: TensorRtSettings::default(),
            cuda: CudaSettings::default(),
        }
    }
}

/// Settings as `ove` resolves them: the defaults with `--ep auto` (TensorRT, CUDA, CPU), then
/// the profile file (`profile`, else the bundle's own `ove-profile.toml`), then the
/// command-line values (`ep`: see [`parse_ep_list`]).
pub fn resolve_settings(
    bundle_dir: &Path,
    profile: Option<&Path>,
    ep: Option<&str>,
    max_context: Option<usize>,
    device_id: Option<u32>,
) -> Result<ProviderSettings> {
    let mut s = ProviderSettings {
        order: Provider::AUTO.to_vec(),
        ..Default::default()
    };
    let file = match profile {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let found = ProfileFile::find_in(bundle_dir);
            let old = bundle_dir.join("ove-profile.json");
            if found.is_none() && old.is_file() {
                // It used to be read: say that its settings no longer apply.
                tracing::warn!(
                    "{}: ignored, profiles are TOML now (write the same keys to {PROFILE_FILE})",
                    old.display()
                );
            }
            found
        }
    };
    if let Some(f) = file {
        let base = f.parent().unwrap_or(Path::new(".")).to_path_buf();
        ProfileFile::read(&f)?
            .apply(&mut s, &base)
            .with_context(|| format!("profile {}", f.display()))?;
        tracing::debug!("execution provider profile: {}", f.display());
    }
    if let Some(ep) = ep {
        s.order = parse_ep_list(ep)?;
        s.explicit = !ep.trim().eq_ignore_ascii_case("auto");
    }
    if let Some(c) = max_context {
        if c == 0 {
            bail!("--max-context must be at least 1");
        }
        s.max_context = Some(c);
    }
    if let Some(d) = device_id {
        s.device_id = d;
    }
    Ok(s)
}

/// Which graph of the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Graph {
    Vision,
    Decoder,
    /// The batched line encoder (`lines.onnx`), when the bundle has one.
    Lines,
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Graph::Vision => "vision",
            Graph::Decoder => "decoder",
            Graph::Lines => "lines",
        })
    }
}

/// The settings' tests, and the helpers the tests of every part of the module share.
#[cfg(test)]
mod tests {
    use super::*;
    use ove_core::manifest::Manifest;

    /// A manifest shaped like the golden checkpoints' (tiny model, 2560000 max_pixels).
    pub(super) fn manifest() -> Manifest {
        let v = serde_json::json!({
            "schema_version": 1,
            "created_by": "ove test",
            "dtype": "f32",
            "model": golden("config.json"),
            "preprocessor": golden("preprocessor_config.json"),
            "tokens": { "image_pad": 1655, "eos": [1645] },
            "graphs": { "vision": "vision.onnx", "decoder": "decoder.onnx", "embeddings": "embed.safetensors" },
            "max_context": 4096,
            "quantization": { "scheme": "none" },
            "files": [
                { "path": "vision.onnx", "bytes": 1, "sha256": "aa" },
                { "path": "decoder.onnx", "bytes": 1, "sha256": "bb" },
                { "path": "embed.safetensors", "bytes": 1, "sha256": "cc" }
            ]
        });
        serde_json::from_value(v).expect("test manifest")
    }

    /// A file of the golden checkpoint (the real key set of config.json and
    /// preprocessor_config.json).
    fn golden(name: &str) -> serde_json::Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/golden/one-image/checkpoint")
            .join(name);
        let text = std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("golden file {}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    }

    pub(super) fn all(_: Provider) -> bool {
        true
    }

    pub(super) fn auto() -> ProviderSettings {
        ProviderSettings {
            order: Provider::AUTO.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn ep_lists_parse() {
        assert_eq!(parse_ep_list("auto").unwrap(), Provider::AUTO.to_vec());
        assert_eq!(
            parse_ep_list("cuda").unwrap(),
            vec![Provider::Cuda, Provider::Cpu]
        );
        assert_eq!(
            parse_ep_list("trt, cuda,tensorrt").unwrap(),
            vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu]
        );
        assert_eq!(parse_ep_list("cpu,cuda").unwrap(), vec![Provider::Cpu]);
        assert!(parse_ep_list("rocm").is_err());
        assert!(parse_ep_list("").is_err());
    }

    #[test]
    fn flags_beat_the_profile_which_beats_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let s = resolve_settings(dir.path(), None, None, None, None).unwrap();
        assert_eq!(s.order, Provider::AUTO.to_vec());
        assert!(!s.explicit);
        let s = resolve_settings(dir.path(), None, Some("tensorrt,cuda"), None, None).unwrap();
        assert_eq!(s.order, Provider::AUTO.to_vec());
        assert!(s.explicit);
        std::fs::write(
            dir.path().join(PROFILE_FILE),
            "providers = [\"cuda\"]\ndevice_id = 3\n[tensorrt]\ncache_dir = \"c\"",
        )
        .unwrap();
        let s = resolve_settings(dir.path(), None, None, None, None).unwrap();
        assert_eq!(s.order, vec![Provider::Cuda, Provider::Cpu]);
        assert_eq!(s.device_id, 3);
        assert_eq!(s.tensorrt.cache_dir, Some(dir.path().join("c")));
        let s = resolve_settings(dir.path(), None, Some("cpu"), Some(512), Some(0)).unwrap();
        assert_eq!(s.order, vec![Provider::Cpu]);
        assert_eq!((s.device_id, s.max_context), (0, Some(512)));
        let other = dir.path().join("other.toml");
        std::fs::write(&other, r#"providers = "tensorrt""#).unwrap();
        let s = resolve_settings(dir.path(), Some(&other), None, None, None).unwrap();
        assert_eq!(s.order, vec![Provider::TensorRt, Provider::Cpu]);
        std::fs::write(&other, r#"provider = "tensorrt""#).unwrap();
        let e = resolve_settings(dir.path(), Some(&other), None, None, None).unwrap_err();
        assert!(format!("{e:#}").contains("unknown field"), "{e:#}");
        assert!(resolve_settings(dir.path(), None, None, Some(0), None).is_err());
    }

    #[test]
    fn a_json_profile_is_an_error_that_says_toml() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("other.json");
        std::fs::write(&json, r#"{"providers": "tensorrt"}"#).unwrap();
        let e = resolve_settings(dir.path(), Some(&json), None, None, None).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains(&json.display().to_string()), "{e}");
        assert!(e.contains("profiles are TOML, not JSON"), "{e}");
        // In the bundle, the old JSON name is not read (a warning says so).
        std::fs::write(dir.path().join("ove-profile.json"), r#"{"device_id": 3}"#).unwrap();
        let s = resolve_settings(dir.path(), None, None, None, None).unwrap();
        assert_eq!(s.device_id, 0);
    }
}
