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
//! ([`ProfileFile`]: `ove-profile.toml` in the bundle directory, or `--profile FILE`, TOML
//! or JSON by extension), then the command line (`--ep`, `--max-context`, `--device-id`).

use ove_core::graph_io as io;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use ove_core::manifest::Manifest;
use serde::Deserialize;

/// The profile file `ove` picks up from a bundle directory when `--profile` is not given.
pub const PROFILE_FILE: &str = "ove-profile.toml";
/// The same, as JSON (used when the TOML one is absent).
pub const PROFILE_FILE_JSON: &str = "ove-profile.json";
/// Where the TensorRT engine and timing caches go, inside the bundle directory, by default.
pub const TRT_CACHE_DIR: &str = ".trt-cache";

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

/// TensorRT settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRtSettings {
    /// Let TensorRT pick fp16 kernels (`trt_fp16_enable`). Default on: what the Jetson's
    /// tensor cores are for.
    pub fp16: bool,
    /// Persist built engines (`trt_engine_cache_enable`); the first run on a board builds
    /// them (minutes), later runs load them.
    pub engine_cache: bool,
    /// Persist TensorRT's kernel timing cache (`trt_timing_cache_enable`).
    pub timing_cache: bool,
    /// Root of the caches; default `BUNDLE/.trt-cache`. The caches go in a subdirectory
    /// keyed by bundle digest, TensorRT version and device ([`trt_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// `trt_max_workspace_size`, in MiB (default: ONNX Runtime's).
    pub workspace_mb: Option<u64>,
    /// `trt_builder_optimization_level` 0..=5 (default: ONNX Runtime's, 3).
    pub builder_optimization_level: Option<u8>,
    /// Images per prompt the vision profile allows: `carry` has up to this minus one rows.
    pub max_images: usize,
    /// Patches per image the vision profile allows (default: preprocessor max_pixels / 14²).
    pub max_patches: Option<usize>,
    /// The patch count TensorRT tunes for (default: the maximum; OCR pages are big).
    pub opt_patches: Option<usize>,
    /// New tokens per decoder call the profile allows (default: the context length, so that
    /// a whole prompt fits one call).
    pub max_new_tokens_per_call: Option<usize>,
}

impl Default for TensorRtSettings {
    fn default() -> Self {
        Self {
            fp16: true,
            engine_cache: true,
            timing_cache: true,
            cache_dir: None,
            workspace_mb: None,
            builder_optimization_level: None,
            max_images: 8,
            max_patches: None,
            opt_patches: None,
            max_new_tokens_per_call: None,
        }
    }
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

/// The profile file (`ove-profile.toml`, or JSON with the same keys). Every key is optional;
/// unknown keys are an error (a misspelt key must not be silently ignored).
///
/// ```toml
/// providers = ["tensorrt", "cuda", "cpu"]  # or "auto"
/// device_id = 0
/// max_context = 2048          # lower than the manifest's max_context
///
/// [tensorrt]
/// fp16 = true
/// engine_cache = true
/// timing_cache = true
/// cache_dir = "/var/cache/ove" # relative paths: from the profile file's directory
/// workspace_mb = 2048
/// builder_optimization_level = 3
/// max_images = 4
/// max_patches = 13056
/// opt_patches = 4096
/// max_new_tokens_per_call = 1024
///
/// [cuda]
/// memory_limit_mb = 4096
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub providers: Option<ProvidersKey>,
    pub device_id: Option<u32>,
    pub max_context: Option<usize>,
    pub tensorrt: Option<TensorRtFile>,
    pub cuda: Option<CudaFile>,
}

/// `providers = "auto"` or `providers = ["tensorrt", "cpu"]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ProvidersKey {
    One(String),
    List(Vec<Provider>),
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorRtFile {
    pub fp16: Option<bool>,
    pub engine_cache: Option<bool>,
    pub timing_cache: Option<bool>,
    pub cache_dir: Option<PathBuf>,
    pub workspace_mb: Option<u64>,
    pub builder_optimization_level: Option<u8>,
    pub max_images: Option<usize>,
    pub max_patches: Option<usize>,
    pub opt_patches: Option<usize>,
    pub max_new_tokens_per_call: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CudaFile {
    pub memory_limit_mb: Option<u64>,
}

impl ProfileFile {
    /// Parses a profile: JSON when `json` is set, TOML otherwise.
    pub fn parse(text: &str, json: bool) -> Result<Self> {
        if json {
            Ok(serde_json::from_str(text)?)
        } else {
            Ok(toml::from_str(text)?)
        }
    }

    /// Reads a profile file (`.json`: JSON, anything else: TOML).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading profile {}", path.display()))?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        Self::parse(&text, json).with_context(|| format!("profile {}", path.display()))
    }

    /// The profile a bundle directory carries, if any (`ove-profile.toml`, else
    /// `ove-profile.json`).
    pub fn find_in(bundle: &Path) -> Option<PathBuf> {
        [PROFILE_FILE, PROFILE_FILE_JSON]
            .iter()
            .map(|n| bundle.join(n))
            .find(|p| p.is_file())
    }

    /// Applies the profile over `s`; relative paths are taken from `base` (the profile's
    /// directory).
    pub fn apply(&self, s: &mut ProviderSettings, base: &Path) -> Result<()> {
        match &self.providers {
            Some(ProvidersKey::One(v)) => {
                s.order = parse_ep_list(v)?;
                s.explicit = !v.trim().eq_ignore_ascii_case("auto");
            }
            Some(ProvidersKey::List(v)) => {
                if v.is_empty() {
                    bail!("providers: empty list");
                }
                s.order = normalize_order(v.clone());
                s.explicit = true;
            }
            None => {}
        }
        if let Some(v) = self.device_id {
            s.device_id = v;
        }
        if let Some(v) = self.max_context {
            s.max_context = Some(v);
        }
        if let Some(t) = &self.tensorrt {
            let d = &mut s.tensorrt;
            macro_rules! set {
                ($($k:ident),*) => { $( if let Some(v) = t.$k { d.$k = v; } )* };
            }
            set!(fp16, engine_cache, timing_cache, max_images);
            macro_rules! set_opt {
                ($($k:ident),*) => { $( if t.$k.is_some() { d.$k = t.$k; } )* };
            }
            set_opt!(
                workspace_mb,
                builder_optimization_level,
                max_patches,
                opt_patches,
                max_new_tokens_per_call
            );
            if let Some(p) = &t.cache_dir {
                d.cache_dir = Some(base.join(p));
            }
            if d.builder_optimization_level.is_some_and(|l| l > 5) {
                bail!("tensorrt.builder_optimization_level must be 0..=5");
            }
            if d.max_images == 0 {
                bail!("tensorrt.max_images must be at least 1");
            }
        }
        if let Some(c) = &self.cuda {
            if c.memory_limit_mb.is_some() {
                s.cuda.memory_limit_mb = c.memory_limit_mb;
            }
        }
        Ok(())
    }
}

/// Settings as `ove` resolves them: the defaults with `--ep auto` (TensorRT, CUDA, CPU), then
/// the profile file (`profile`, else the bundle's own `ove-profile.toml` / `.json`), then the
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
        None => ProfileFile::find_in(bundle_dir),
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
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Graph::Vision => "vision",
            Graph::Decoder => "decoder",
        })
    }
}

/// What is known about the machine: read by [`DeviceInfo::detect`], injected by tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceInfo {
    /// e.g. "10.3.0", from the installed `libnvinfer.so.X.Y.Z`.
    pub tensorrt_version: Option<String>,
    /// e.g. "NVIDIA Jetson Orin Nano Developer Kit".
    pub device_name: Option<String>,
}

impl DeviceInfo {
    /// Looks for `libnvinfer.so.X.Y.Z` (LD_LIBRARY_PATH, the CUDA and system library
    /// directories) and the board or GPU name (`/proc/device-tree/model` on a Jetson, the
    /// NVIDIA driver's `/proc/driver/nvidia/gpus/*/information` elsewhere).
    pub fn detect() -> Self {
        let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        for d in [
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/local/cuda/lib64",
            "/usr/local/cuda/targets/aarch64-linux/lib",
            "/usr/lib",
            "/usr/local/lib",
        ] {
            dirs.push(PathBuf::from(d));
        }
        let tensorrt_version = dirs.iter().find_map(|d| {
            let names = std::fs::read_dir(d)
                .ok()?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("libnvinfer.so."))
                        .map(str::to_string)
                });
            names
                .filter(|v| v.split('.').all(|p| p.parse::<u64>().is_ok()))
                .max_by_key(|v| {
                    v.split('.')
                        .map(|p| p.parse::<u64>().unwrap_or(0))
                        .collect::<Vec<_>>()
                })
        });
        let device_name = std::fs::read_to_string("/proc/device-tree/model")
            .ok()
            .map(|s| s.trim_matches(char::from(0)).trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                let dir = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
                dir.filter_map(|e| e.ok()).find_map(|e| {
                    let info = std::fs::read_to_string(e.path().join("information")).ok()?;
                    info.lines()
                        .find_map(|l| l.strip_prefix("Model:"))
                        .map(|m| m.trim().to_string())
                })
            });
        Self {
            tensorrt_version,
            device_name,
        }
    }
}

/// One provider to register, with ONNX Runtime's option keys and values.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub provider: Provider,
    pub options: Vec<(String, String)>,
}

impl ProviderConfig {
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The providers for one graph, in order, and why any were left out.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphPlan {
    pub graph: Graph,
    pub providers: Vec<ProviderConfig>,
    /// One line per provider skipped or caveat (for the log).
    pub notes: Vec<String>,
}

/// The dynamic dimensions of the TensorRT optimization profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeLimits {
    /// Patches per image: min (one merge unit), opt, max.
    pub patches: [usize; 3],
    /// Carried rows (`carry`): 0, 0, max_images - 1.
    pub carry: [usize; 3],
    /// New tokens per decoder call: 1, 1 (decoding), max.
    pub seq: [usize; 3],
    /// Cached tokens: 0, half the context, context - 1.
    pub past: [usize; 3],
}

/// The context length in force: the manifest's, or a lower `max_context` setting.
pub fn effective_max_context(m: &Manifest, s: &ProviderSettings) -> usize {
    s.max_context
        .map_or(m.max_context, |c| c.min(m.max_context))
        .max(1)
}

/// The profile ranges for a bundle: max patches = preprocessor max_pixels / patch_size²,
/// rounded down to the merge unit; sequence and past bounded by the context length.
pub fn shape_limits(m: &Manifest, s: &ProviderSettings) -> ShapeLimits {
    let v = &m.model.vision_config;
    let unit = v.merge_unit().max(1);
    let per_patch = (v.patch_size * v.patch_size).max(1) as u64;
    let from_pixels = m
        .preprocessor
        .max_pixels()
        .map_or(unit, |px| (px / per_patch) as usize);
    let round = |n: usize| (n / unit * unit).max(unit);
    let max_p = round(s.tensorrt.max_patches.unwrap_or(from_pixels));
    let opt_p = round(s.tensorrt.opt_patches.unwrap_or(max_p).min(max_p));
    let ctx = effective_max_context(m, s);
    let max_s = s
        .tensorrt
        .max_new_tokens_per_call
        .unwrap_or(ctx)
        .clamp(1, ctx);
    ShapeLimits {
        patches: [unit, opt_p, max_p],
        carry: [0, 0, s.tensorrt.max_images.max(1) - 1],
        seq: [1, 1, max_s],
        past: [0, ctx / 2, ctx.saturating_sub(1)],
    }
}

/// `trt_profile_{min,opt,max}_shapes` for one graph: "name:AxB,name:C,...", in that order.
pub fn profile_shapes(m: &Manifest, s: &ProviderSettings, graph: Graph) -> [String; 3] {
    let l = shape_limits(m, s);
    let v = &m.model.vision_config;
    let t = &m.model.text_config;
    let fmt = |parts: Vec<(String, Vec<usize>)>| {
        parts
            .into_iter()
            .map(|(n, d)| {
                let dims: Vec<String> = d.iter().map(usize::to_string).collect();
                format!("{n}:{}", dims.join("x"))
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    std::array::from_fn(|i| match graph {
        Graph::Vision => {
            let (p, c) = (l.patches[i], l.carry[i]);
            fmt(vec![
                (io::PIXEL_VALUES.into(), vec![p, v.patch_dim()]),
                (io::PATCH_POS.into(), vec![p, 2]),
                (io::CARRY.into(), vec![c, v.hidden_size]),
                (io::WINDOW_INDEX.into(), vec![p]),
            ])
        }
        Graph::Decoder => {
            let (sq, k) = (l.seq[i], l.past[i]);
            // attention_bias is [S, K+S]; its second dim never exceeds the context.
            let total = (k + sq).min(effective_max_context(m, s)).max(1);
            let mut parts = vec![
                (io::INPUTS_EMBEDS.to_string(), vec![sq, t.hidden_size]),
                (io::POSITION_IDS.into(), vec![sq]),
                (io::ATTENTION_BIAS.into(), vec![sq, total]),
                (io::LOGITS_INDEX.into(), vec![sq]),
            ];
            let (kvh, hd) = (t.num_key_value_heads, t.head_dim());
            for layer in 0..t.num_hidden_layers {
                parts.push((io::past_key(layer), vec![kvh, k, hd]));
                parts.push((io::past_value(layer), vec![kvh, k, hd]));
            }
            fmt(parts)
        }
    })
}

/// Keeps a name usable as one path component.
fn path_safe(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let out = out.trim_matches('_').to_string();
    if out.is_empty() {
        "unknown".into()
    } else {
        out
    }
}

/// The TensorRT cache directory: `ROOT/<digest[..16]>-trt<version>-<device>`, ROOT being
/// `cache_root` or `BUNDLE/.trt-cache`. Engines are only valid for one model, one TensorRT
/// version and one GPU, so each combination gets its own directory.
pub fn trt_cache_dir(
    bundle_dir: &Path,
    cache_root: Option<&Path>,
    bundle_digest: &str,
    device: &DeviceInfo,
) -> PathBuf {
    let root = cache_root.map_or_else(|| bundle_dir.join(TRT_CACHE_DIR), Path::to_path_buf);
    let digest = &bundle_digest[..bundle_digest.len().min(16)];
    let version = device.tensorrt_version.as_deref().unwrap_or("unknown");
    let name = device.device_name.as_deref().unwrap_or("unknown-gpu");
    root.join(format!(
        "{}-trt{}-{}",
        path_safe(digest),
        path_safe(version),
        path_safe(name)
    ))
}

fn trt_major(device: &DeviceInfo) -> Option<u64> {
    device
        .tensorrt_version
        .as_deref()?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The TensorRT provider's options for one graph.
pub fn tensorrt_options(
    m: &Manifest,
    s: &ProviderSettings,
    graph: Graph,
    cache_dir: &Path,
) -> Vec<(String, String)> {
    let t = &s.tensorrt;
    let b = |v: bool| if v { "1" } else { "0" }.to_string();
    let mut o = vec![
        ("device_id".to_string(), s.device_id.to_string()),
        ("trt_fp16_enable".into(), b(t.fp16)),
        ("trt_engine_cache_enable".into(), b(t.engine_cache)),
        ("trt_timing_cache_enable".into(), b(t.timing_cache)),
    ];
    if t.engine_cache || t.timing_cache {
        let dir = cache_dir.display().to_string();
        if t.engine_cache {
            o.push(("trt_engine_cache_path".into(), dir.clone()));
        }
        if t.timing_cache {
            o.push(("trt_timing_cache_path".into(), dir));
        }
    }
    if let Some(mb) = t.workspace_mb {
        o.push((
            "trt_max_workspace_size".into(),
            (mb.saturating_mul(1 << 20)).to_string(),
        ));
    }
    if let Some(l) = t.builder_optimization_level {
        o.push(("trt_builder_optimization_level".into(), l.to_string()));
    }
    let [min, opt, max] = profile_shapes(m, s, graph);
    o.push(("trt_profile_min_shapes".into(), min));
    o.push(("trt_profile_opt_shapes".into(), opt));
    o.push(("trt_profile_max_shapes".into(), max));
    o
}

/// The CUDA provider's options.
pub fn cuda_options(s: &ProviderSettings) -> Vec<(String, String)> {
    let mut o = vec![("device_id".to_string(), s.device_id.to_string())];
    if let Some(mb) = s.cuda.memory_limit_mb {
        o.push((
            "gpu_mem_limit".into(),
            (mb.saturating_mul(1 << 20)).to_string(),
        ));
        // Grow the arena by what is asked, not by powers of two, to stay under the cap.
        o.push(("arena_extend_strategy".into(), "kSameAsRequested".into()));
    }
    o
}

/// Decides the providers for one graph. `available` says whether the loaded ONNX Runtime
/// has a provider (ort's `is_available()`, injected so that tests need no GPU); one that
/// is not there, or TensorRT for a bundle it cannot take, becomes a note and the next is
/// used. The CPU is always there, last.
pub fn plan(
    m: &Manifest,
    s: &ProviderSettings,
    graph: Graph,
    bundle_dir: &Path,
    device: &DeviceInfo,
    available: &dyn Fn(Provider) -> bool,
) -> GraphPlan {
    let mut providers = Vec::new();
    let mut notes = Vec::new();
    let q = &m.quantization;
    let int4 = q.scheme == "int4";
    let qdq = int4 && q.target.as_deref() == Some("tensorrt");
    for &p in &normalize_order(s.order.clone()) {
        if p != Provider::Cpu && !available(p) {
            notes.push(format!(
                "{p}: not in this ONNX Runtime build ({} missing); trying the next provider",
                p.ort_name()
            ));
            continue;
        }
        match p {
            Provider::TensorRt => {
                if qdq && trt_major(device).is_some_and(|v| v < 10) {
                    notes.push(format!(
                        "TensorRT: {graph}.onnx has int4 DequantizeLinear weights, which need \
                         TensorRT >= 10 (found {}); trying the next provider",
                        device.tensorrt_version.as_deref().unwrap_or("?")
                    ));
                    continue;
                }
                if int4 && !qdq && graph == Graph::Decoder {
                    notes.push(
                        "TensorRT: this int4 bundle uses MatMulNBits (export target ort), which \
                         TensorRT cannot run: those nodes go to the next provider; export with \
                         --int4 --target tensorrt for an all-TensorRT decoder"
                            .into(),
                    );
                }
                let dir = trt_cache_dir(
                    bundle_dir,
                    s.tensorrt.cache_dir.as_deref(),
                    &m.bundle_digest(),
                    device,
                );
                providers.push(ProviderConfig {
                    provider: p,
                    options: tensorrt_options(m, s, graph, &dir),
                });
            }
            Provider::Cuda => providers.push(ProviderConfig {
                provider: p,
                options: cuda_options(s),
            }),
            Provider::Cpu => providers.push(ProviderConfig {
                provider: p,
                options: Vec::new(),
            }),
        }
    }
    GraphPlan {
        graph,
        providers,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest shaped like the golden checkpoints' (tiny model, 2560000 max_pixels).
    fn manifest() -> Manifest {
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

    fn all(_: Provider) -> bool {
        true
    }

    fn auto() -> ProviderSettings {
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
    fn unavailable_providers_fall_through_in_order() {
        let m = manifest();
        let dir = Path::new("/b");
        let dev = DeviceInfo::default();
        let p = plan(&m, &auto(), Graph::Decoder, dir, &dev, &all);
        let order: Vec<_> = p.providers.iter().map(|c| c.provider).collect();
        assert_eq!(order, Provider::AUTO.to_vec());
        assert!(p.notes.is_empty(), "{:?}", p.notes);

        let no_trt = |p: Provider| p != Provider::TensorRt;
        let p = plan(&m, &auto(), Graph::Vision, dir, &dev, &no_trt);
        let order: Vec<_> = p.providers.iter().map(|c| c.provider).collect();
        assert_eq!(order, vec![Provider::Cuda, Provider::Cpu]);
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].contains("TensorrtExecutionProvider missing"));

        let cpu_only = |p: Provider| p == Provider::Cpu;
        let p = plan(&m, &auto(), Graph::Vision, dir, &dev, &cpu_only);
        assert_eq!(p.providers.len(), 1);
        assert_eq!(p.providers[0].provider, Provider::Cpu);
        assert_eq!(p.notes.len(), 2);

        // Asking for CUDA alone still ends on the CPU.
        let s = ProviderSettings {
            order: vec![Provider::Cuda],
            ..Default::default()
        };
        let p = plan(&m, &s, Graph::Vision, dir, &dev, &all);
        let order: Vec<_> = p.providers.iter().map(|c| c.provider).collect();
        assert_eq!(order, vec![Provider::Cuda, Provider::Cpu]);
    }

    #[test]
    fn profile_shapes_follow_the_manifest() {
        let m = manifest();
        let t = &m.model.text_config;
        let v = &m.model.vision_config;
        let s = auto();
        // 2560000 / 14² = 13061 patches, rounded down to the merge unit of 4.
        let l = shape_limits(&m, &s);
        assert_eq!(l.patches, [4, 13060, 13060]);
        assert_eq!(l.carry, [0, 0, 7]);
        assert_eq!(l.seq, [1, 1, 4096]);
        assert_eq!(l.past, [0, 2048, 4095]);
        let [min, opt, max] = profile_shapes(&m, &s, Graph::Vision);
        let d = v.hidden_size;
        assert_eq!(
            min,
            format!("pixel_values:4x588,patch_pos:4x2,carry:0x{d},window_index:4")
        );
        assert_eq!(
            max,
            format!("pixel_values:13060x588,patch_pos:13060x2,carry:7x{d},window_index:13060")
        );
        assert!(opt.starts_with("pixel_values:13060x588,"));

        let [min, opt, max] = profile_shapes(&m, &s, Graph::Decoder);
        let (h, kvh, hd) = (t.hidden_size, t.num_key_value_heads, t.head_dim());
        assert!(
            min.starts_with(&format!(
                "inputs_embeds:1x{h},position_ids:1,attention_bias:1x1,logits_index:1,\
                 past_key.0:{kvh}x0x{hd},past_value.0:{kvh}x0x{hd}"
            )),
            "{min}"
        );
        assert!(opt.contains(&format!(
            "attention_bias:1x2049,logits_index:1,past_key.0:{kvh}x2048x{hd}"
        )));
        assert!(max.contains(&format!(
            "inputs_embeds:4096x{h},position_ids:4096,attention_bias:4096x4096,"
        )));
        let last = t.num_hidden_layers - 1;
        assert!(max.ends_with(&format!("past_value.{last}:{kvh}x4095x{hd}")));
        assert_eq!(
            max.matches("past_").count(),
            2 * t.num_hidden_layers,
            "{max}"
        );

        // A lower --max-context bounds sequence and past; the manifest's is never exceeded.
        let s = ProviderSettings {
            max_context: Some(1024),
            tensorrt: TensorRtSettings {
                max_new_tokens_per_call: Some(256),
                max_patches: Some(4099),
                opt_patches: Some(1000),
                max_images: 1,
                ..Default::default()
            },
            ..auto()
        };
        let l = shape_limits(&m, &s);
        assert_eq!(l.patches, [4, 1000, 4096]);
        assert_eq!(l.carry, [0, 0, 0]);
        assert_eq!(l.seq, [1, 1, 256]);
        assert_eq!(l.past, [0, 512, 1023]);
        let big = ProviderSettings {
            max_context: Some(1 << 20),
            ..auto()
        };
        assert_eq!(effective_max_context(&m, &big), 4096);
    }

    #[test]
    fn cache_dir_is_keyed_by_bundle_version_and_device() {
        let m = manifest();
        let digest = m.bundle_digest();
        let dev = DeviceInfo {
            tensorrt_version: Some("10.3.0".into()),
            device_name: Some("NVIDIA Jetson Orin Nano Developer Kit".into()),
        };
        let d = trt_cache_dir(Path::new("/opt/ove/bundles/ocr"), None, &digest, &dev);
        assert_eq!(
            d,
            PathBuf::from(format!(
                "/opt/ove/bundles/ocr/.trt-cache/{}-trt10.3.0-NVIDIA_Jetson_Orin_Nano_Developer_Kit",
                &digest[..16]
            ))
        );
        let other = DeviceInfo {
            tensorrt_version: Some("8.6.2".into()),
            ..dev.clone()
        };
        assert_ne!(trt_cache_dir(Path::new("/b"), None, &digest, &other), d);
        let mut m2 = m.clone();
        m2.files[0].sha256 = "ff".into();
        assert_ne!(
            trt_cache_dir(Path::new("/b"), None, &m2.bundle_digest(), &dev),
            trt_cache_dir(Path::new("/b"), None, &digest, &dev)
        );
        let root = trt_cache_dir(Path::new("/b"), Some(Path::new("/cache")), &digest, &dev);
        assert!(root.starts_with("/cache"));
        let unknown = trt_cache_dir(Path::new("/b"), None, "ab/../cd", &DeviceInfo::default());
        assert_eq!(
            unknown,
            PathBuf::from("/b/.trt-cache/ab_.._cd-trtunknown-unknown-gpu")
        );

        // The options point both caches there.
        let p = plan(&m, &auto(), Graph::Vision, Path::new("/b"), &dev, &all);
        let trt = &p.providers[0];
        assert_eq!(trt.provider, Provider::TensorRt);
        let want = trt_cache_dir(Path::new("/b"), None, &digest, &dev)
            .display()
            .to_string();
        assert_eq!(trt.option("trt_engine_cache_path"), Some(want.as_str()));
        assert_eq!(trt.option("trt_timing_cache_path"), Some(want.as_str()));
        assert_eq!(trt.option("trt_fp16_enable"), Some("1"));
        assert_eq!(trt.option("trt_engine_cache_enable"), Some("1"));
    }

    #[test]
    fn provider_options_from_settings() {
        let m = manifest();
        let s = ProviderSettings {
            device_id: 1,
            tensorrt: TensorRtSettings {
                fp16: false,
                engine_cache: false,
                timing_cache: false,
                workspace_mb: Some(2048),
                builder_optimization_level: Some(5),
                ..Default::default()
            },
            cuda: CudaSettings {
                memory_limit_mb: Some(3072),
            },
            ..auto()
        };
        let p = plan(
            &m,
            &s,
            Graph::Decoder,
            Path::new("/b"),
            &DeviceInfo::default(),
            &all,
        );
        let trt = &p.providers[0];
        assert_eq!(trt.option("device_id"), Some("1"));
        assert_eq!(trt.option("trt_fp16_enable"), Some("0"));
        assert_eq!(trt.option("trt_engine_cache_path"), None);
        assert_eq!(trt.option("trt_max_workspace_size"), Some("2147483648"));
        assert_eq!(trt.option("trt_builder_optimization_level"), Some("5"));
        let cuda = &p.providers[1];
        assert_eq!(cuda.provider, Provider::Cuda);
        assert_eq!(cuda.option("device_id"), Some("1"));
        assert_eq!(cuda.option("gpu_mem_limit"), Some("3221225472"));
        assert!(p.providers[2].options.is_empty());
    }

    #[test]
    fn int4_bundles_and_tensorrt() {
        let mut m = manifest();
        m.quantization.scheme = "int4".into();
        m.quantization.target = Some("tensorrt".into());
        let old = DeviceInfo {
            tensorrt_version: Some("8.5.2".into()),
            ..Default::default()
        };
        let p = plan(&m, &auto(), Graph::Decoder, Path::new("/b"), &old, &all);
        assert_eq!(p.providers[0].provider, Provider::Cuda);
        assert!(p.notes[0].contains("TensorRT >= 10"), "{:?}", p.notes);
        let new = DeviceInfo {
            tensorrt_version: Some("10.3.0".into()),
            ..Default::default()
        };
        let p = plan(&m, &auto(), Graph::Decoder, Path::new("/b"), &new, &all);
        assert_eq!(p.providers[0].provider, Provider::TensorRt);
        assert!(p.notes.is_empty());
        m.quantization.target = Some("ort".into());
        let p = plan(&m, &auto(), Graph::Decoder, Path::new("/b"), &new, &all);
        assert_eq!(p.providers[0].provider, Provider::TensorRt);
        assert!(p.notes[0].contains("MatMulNBits"));
    }

    #[test]
    fn profile_files_parse_and_reject_unknown_keys() {
        let text = r#"
            providers = ["cuda"]
            device_id = 2
            max_context = 2048
            [tensorrt]
            fp16 = false
            cache_dir = "cache"
            workspace_mb = 1024
            max_images = 2
            [cuda]
            memory_limit_mb = 4096
        "#;
        let f = ProfileFile::parse(text, false).unwrap();
        let mut s = auto();
        f.apply(&mut s, Path::new("/bundle")).unwrap();
        assert_eq!(s.order, vec![Provider::Cuda, Provider::Cpu]);
        assert_eq!(s.device_id, 2);
        assert_eq!(s.max_context, Some(2048));
        assert!(!s.tensorrt.fp16);
        assert!(s.tensorrt.engine_cache);
        assert_eq!(s.tensorrt.cache_dir, Some(PathBuf::from("/bundle/cache")));
        assert_eq!(s.tensorrt.workspace_mb, Some(1024));
        assert_eq!(s.tensorrt.max_images, 2);
        assert_eq!(s.cuda.memory_limit_mb, Some(4096));

        let f = ProfileFile::parse(r#"providers = "auto""#, false).unwrap();
        let mut s = ProviderSettings::default();
        f.apply(&mut s, Path::new("/")).unwrap();
        assert_eq!(s.order, Provider::AUTO.to_vec());

        let json = r#"{"providers": ["tensorrt", "cpu"], "tensorrt": {"opt_patches": 1024}}"#;
        let f = ProfileFile::parse(json, true).unwrap();
        assert_eq!(f.tensorrt.unwrap().opt_patches, Some(1024));

        for bad in [
            "provider = [\"cuda\"]",
            "[tensorrt]\nfp61 = true",
            "[cuda]\nmemory_limit = 1",
            "[rocm]\ndevice_id = 0",
            "providers = [\"rocm\"]",
        ] {
            assert!(ProfileFile::parse(bad, false).is_err(), "accepted {bad:?}");
        }
        assert!(ProfileFile::parse(r#"{"tensorrt": {"fp16": true, "x": 1}}"#, true).is_err());
        let f = ProfileFile::parse("[tensorrt]\nbuilder_optimization_level = 9", false).unwrap();
        assert!(f.apply(&mut auto(), Path::new("/")).is_err());
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
        let other = dir.path().join("other.json");
        std::fs::write(&other, r#"{"providers": "tensorrt"}"#).unwrap();
        let s = resolve_settings(dir.path(), Some(&other), None, None, None).unwrap();
        assert_eq!(s.order, vec![Provider::TensorRt, Provider::Cpu]);
        std::fs::write(&other, r#"{"provider": "tensorrt"}"#).unwrap();
        let e = resolve_settings(dir.path(), Some(&other), None, None, None).unwrap_err();
        assert!(format!("{e:#}").contains("unknown field"), "{e:#}");
        assert!(resolve_settings(dir.path(), None, None, Some(0), None).is_err());
    }

    #[test]
    fn profile_files_are_found_in_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ProfileFile::find_in(dir.path()), None);
        std::fs::write(dir.path().join(PROFILE_FILE_JSON), "{}").unwrap();
        assert_eq!(
            ProfileFile::find_in(dir.path()),
            Some(dir.path().join(PROFILE_FILE_JSON))
        );
        std::fs::write(dir.path().join(PROFILE_FILE), "device_id = 1").unwrap();
        let found = ProfileFile::find_in(dir.path()).unwrap();
        assert_eq!(found, dir.path().join(PROFILE_FILE));
        assert_eq!(ProfileFile::read(&found).unwrap().device_id, Some(1));
    }
}
