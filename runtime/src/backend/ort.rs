//! The ONNX Runtime backend: the fast path.
//!
//! ONNX Runtime is not linked: its shared library is found at run time ([`find_library`])
//! and loaded with `ort::init_from`, so one `ove` binary runs with whichever build the
//! machine has (the pip wheel on a workstation, JetPack's CUDA/TensorRT build on a Jetson)
//! and still starts, on tract, where there is none. A missing or unloadable library is an
//! error naming every place searched, never a panic.
//!
//! Search order (the first hit wins):
//! 1. the path given by the caller (`--ort-library`);
//! 2. `ORT_DYLIB_PATH` (when set it must point at the library: no silent fallback);
//! 3. next to the executable, and in `lib/` beside it;
//! 4. a Python virtual environment's wheel, `onnxruntime/capi/libonnxruntime.so*`:
//!    `$VIRTUAL_ENV`, then `.venv/lib/python3*/site-packages` in the current directory,
//!    the executable's directory, and each of their ancestors (this finds the project's
//!    own `.venv` from `target/*/ove` and from test binaries);
//! 5. `/usr/local/lib`, `/usr/lib`, `/usr/lib/<arch>-linux-gnu`, `/opt/onnxruntime/lib`;
//! 6. JetPack's places: the system Python's `dist-packages/onnxruntime/capi`
//!    (`/usr/local/lib/python3*/dist-packages`, `/usr/lib/python3/dist-packages`) and
//!    `/usr/local/onnxruntime/lib`.
//!
//! Execution providers (TensorRT -> CUDA -> CPU) are planned by [`crate::providers::plan`]
//! (pure, unit-tested) and registered here, per graph, with fallback to the next provider
//! when one is missing from the library, fails to register, or fails to build the session.

use ove_core::graph_io as io;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use ort::environment::Environment;
use ort::ep::{ArbitrarilyConfigurableExecutionProvider, ExecutionProvider as _};
use ort::logging::LogLevel;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorRef};

use super::{
    check_present, check_rows, check_vision, check_vision_inputs, Backend, BackendKind,
    BackendOptions, DecoderInputs, Dims, LineBatchInputs, OrtOptimization, VisionInputs,
    VisionOutput,
};
use crate::bundle::{Bundle, GraphInfo};
use crate::kv::{tensor_names, KvCache, KvStore, MAX_DECODER_ROWS};
use crate::providers::{self, DeviceInfo, Graph, GraphPlan, Provider, ProviderConfig};

/// The environment variable `ort` itself reads; honoured here first among the automatic places.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// ONNX Runtime session option fixing MatMulNBits' compute precision.
pub const INT4_ACCURACY_KEY: &str = "session.qdq_matmulnbits_accuracy_level";

/// Whether a file name is the ONNX Runtime library (not one of its provider plugins).
fn is_library_name(name: &str) -> bool {
    if cfg!(target_os = "windows") {
        name.eq_ignore_ascii_case("onnxruntime.dll")
    } else if cfg!(target_os = "macos") {
        name.starts_with("libonnxruntime") && name.ends_with(".dylib") && !name.contains('_')
    } else {
        name == "libonnxruntime.so"
            || name.strip_prefix("libonnxruntime.so.").is_some_and(|v| {
                v.split('.')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
            })
    }
}

/// The library in `dir`, preferring the highest version when there are several.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_library_name))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort_by_key(|p| version_key(p));
    found.pop()
}

/// `libonnxruntime.so.1.32.0` -> [1, 32, 0]; the unversioned name sorts first.
fn version_key(p: &Path) -> Vec<u64> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(|n| {
            n.split(['.', '-'])
                .filter_map(|part| part.parse::<u64>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `pattern_dir/python3*/<rest>` for each Python 3 directory in `pattern_dir`.
fn python_dirs(lib_dir: &Path, rest: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(lib_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("python3"))
        })
        .map(|e| e.path().join(rest))
        .collect();
    out.sort();
    out
}

/// Every directory the automatic search looks in, in order (for the search and for the
/// error message when it finds nothing).
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(d) = &exe_dir {
        dirs.push(d.clone());
        dirs.push(d.join("lib"));
    }
    let wheel = "site-packages/onnxruntime/capi";
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        dirs.extend(python_dirs(&Path::new(&venv).join("lib"), wheel));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    for start in std::env::current_dir().ok().into_iter().chain(exe_dir) {
        for a in start.ancestors() {
            if !roots.iter().any(|r| r == a) {
                roots.push(a.to_path_buf());
            }
        }
    }
    for root in roots {
        dirs.extend(python_dirs(&root.join(".venv/lib"), wheel));
    }
    for d in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/opt/onnxruntime/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.extend(python_dirs(
        Path::new("/usr/local/lib"),
        "dist-packages/onnxruntime/capi",
    ));
    dirs.push(PathBuf::from(
        "/usr/lib/python3/dist-packages/onnxruntime/capi",
    ));
    dirs.push(PathBuf::from("/usr/local/onnxruntime/lib"));
    dirs
}

/// Finds the ONNX Runtime shared library (see the module docs for the order).
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!(
                "ONNX Runtime library {} does not exist (given explicitly)",
                p.display()
            );
        }
        return Ok(p.to_path_buf());
    }
    if let Some(v) = std::env::var_os(DYLIB_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        if !p.is_file() {
            bail!(
                "{DYLIB_ENV}={} does not point at a file; unset it to search the usual places, \
                 or use --backend tract",
                p.display()
            );
        }
        return Ok(p);
    }
    let dirs = search_dirs();
    for d in &dirs {
        if let Some(p) = library_in(d) {
            return Ok(p);
        }
    }
    bail!(
        "ONNX Runtime library (libonnxruntime.so) not found. Set {DYLIB_ENV} to its path, \
         install the onnxruntime wheel into .venv, or use --backend tract. Searched: {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The process's one ONNX Runtime environment and the library it came from: `ort` loads
/// the library once per process, so a second, different path cannot take effect.
static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Loads the library at `lib` (once per process) and returns the environment.
pub fn environment(lib: &Path) -> Result<Environment> {
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((path, env)) = loaded.as_ref() {
        if same_file(path, lib) {
            return Ok(env.clone());
        }
        bail!(
            "ONNX Runtime is already loaded from {} in this process; cannot switch to {}",
            path.display(),
            lib.display()
        );
    }
    if !lib.is_file() {
        bail!("ONNX Runtime library {} does not exist", lib.display());
    }
    let lib_abs = lib.canonicalize().unwrap_or_else(|_| lib.to_path_buf());
    // `ort` reports load failures as errors, but a library that loads and then misbehaves
    // can still reach an `expect` inside it: a panic here becomes an error too.
    let built = std::panic::catch_unwind(|| -> Result<Environment> {
        // `ort` announces the load (and a version newer than its API level) at info level;
        // the outcome is reported here instead, so its own messages are kept out of the log.
        let builder =
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                ort::init_from(&lib_abs)
            })
            .map_err(|e| anyhow!("{e}"))?;
        builder
            .with_name("ove")
            .with_logger(Arc::new(log_onnxruntime))
            .build()
            .map_err(|e| anyhow!("creating the ONNX Runtime environment: {e}"))
    })
    .map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        anyhow!("ONNX Runtime panicked while loading: {msg}")
    })?
    .with_context(|| format!("cannot load ONNX Runtime from {}", lib.display()))?;
    *loaded = Some((lib.to_path_buf(), built.clone()));
    tracing::debug!("ONNX Runtime loaded from {}", lib_abs.display());
    Ok(built)
}

/// ONNX Runtime's own log, one level quieter than it rates itself: its "info" narrates
/// every graph transformation and arena allocation, which is debugging detail for `ove`.
fn log_onnxruntime(level: LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Verbose => {
            tracing::trace!(target: "onnxruntime", "{category} {location}: {message}")
        }
        LogLevel::Info => tracing::debug!(target: "onnxruntime", "{message}"),
        LogLevel::Warning => tracing::warn!(target: "onnxruntime", "{message}"),
        LogLevel::Error | LogLevel::Fatal => {
            tracing::error!(target: "onnxruntime", "{message} ({location})")
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

pub(super) fn ort_err<T, R>(r: std::result::Result<T, ort::Error<R>>) -> Result<T> {
    r.map_err(|e| anyhow!("{e}"))
}

/// Whether the loaded ONNX Runtime library was built with `p` (the CPU always is). An error
/// asking is reported and counts as "no".
pub fn provider_available(p: Provider) -> bool {
    let r = match p {
        Provider::TensorRt => ort::ep::TensorRT::is_available(),
        Provider::Cuda => ort::ep::CUDA::is_available(),
        Provider::Cpu => return true,
    };
    r.unwrap_or_else(|e| {
        tracing::warn!("cannot ask ONNX Runtime whether it has {p}: {e}");
        false
    })
}

/// Registers one provider with its option strings. Registration is where a provider whose
/// libraries are missing (libnvinfer, libcudart, the provider plugin) fails: an error, never
/// a panic.
fn register(b: &mut SessionBuilder, c: &ProviderConfig) -> Result<()> {
    match c.provider {
        Provider::TensorRt => {
            let mut ep = ort::ep::TensorRT::default();
            for (k, v) in &c.options {
                ep = ep.with_arbitrary_config(k, v);
            }
            ort_err(ep.register(b))
        }
        Provider::Cuda => {
            let mut ep = ort::ep::CUDA::default();
            for (k, v) in &c.options {
                ep = ep.with_arbitrary_config(k, v);
            }
            ort_err(ep.register(b))
        }
        // ONNX Runtime's own fallback: always there, nothing to register.
        Provider::Cpu => Ok(()),
    }
}

/// Creates the TensorRT cache directory; when that fails the caches are switched off (the
/// engines are then rebuilt at every start, which is slow but works).
fn with_cache_dir(c: &ProviderConfig, graph: Graph) -> ProviderConfig {
    let Some(dir) = c
        .option("trt_engine_cache_path")
        .or_else(|| c.option("trt_timing_cache_path"))
    else {
        return c.clone();
    };
    match std::fs::create_dir_all(dir) {
        Ok(()) => {
            tracing::debug!("{graph}.onnx: TensorRT caches in {dir}");
            c.clone()
        }
        Err(e) => {
            tracing::warn!(
                "{graph}.onnx: cannot create the TensorRT cache directory {dir} ({e}); \
                 engines will be rebuilt at every start (set tensorrt.cache_dir in the profile)"
            );
            let mut c = c.clone();
            c.options
                .retain(|(k, _)| k != "trt_engine_cache_path" && k != "trt_timing_cache_path");
            for (k, v) in &mut c.options {
                if k == "trt_engine_cache_enable" || k == "trt_timing_cache_enable" {
                    *v = "0".into();
                }
            }
            c
        }
    }
}

/// A session builder with the settings every graph gets (no providers yet).
fn base_builder(env: &Environment, opts: &BackendOptions) -> Result<SessionBuilder> {
    let level = match opts.ort.optimization {
        OrtOptimization::Disable => GraphOptimizationLevel::Disable,
        OrtOptimization::Basic => GraphOptimizationLevel::Level1,
        OrtOptimization::Extended => GraphOptimizationLevel::Level2,
        OrtOptimization::All => GraphOptimizationLevel::All,
    };
    let acc = opts.ort.int4_accuracy_level;
    if acc > 4 {
        bail!("int4 accuracy level must be 0..=4, got {acc}");
    }
    let mut b = ort_err(Session::builder(env))?;
    b = ort_err(b.with_optimization_level(level))?;
    if let Some(n) = opts.threads {
        b = ort_err(b.with_intra_threads(n))?;
    }
    b = ort_err(b.with_config_entry(INT4_ACCURACY_KEY, acc.to_string()))?;
    Ok(b)
}

/// The external data files of a graph (absolute paths), whose mappings
/// [`super::ort_mem::Trimmer`] pages out while the graph's session is made.
fn data_files(bundle: &Bundle, g: &GraphInfo) -> Vec<PathBuf> {
    g.external_files
        .iter()
        .map(|f| bundle.dir().join(f))
        .collect()
}

/// Opens one graph with the planned providers. A provider that fails to register is
/// reported and skipped; when the session cannot be created with a GPU provider (a TensorRT
/// engine build that fails, say), it is retried without that provider, down to the CPU.
/// Returns the session and the providers it was created with (CPU last). `data`: the
/// graph's external data files, paged out while the session is made (see
/// [`super::ort_mem`]: the peak RSS of a load then holds ONNX Runtime's packed copy of the
/// weights, not the mapped file pages it packed them from).
fn session(
    env: &Environment,
    path: &Path,
    data: &[PathBuf],
    opts: &BackendOptions,
    plan: &GraphPlan,
) -> Result<(Session, Vec<Provider>)> {
    let graph = plan.graph;
    let _trim = super::ort_mem::Trimmer::start(&format!("{graph}.onnx"), data);
    // With the automatic order a provider the library lacks is expected (the CPU-only
    // wheel): a debug line. One asked for by name is worth a warning.
    let asked = opts.ort.providers.explicit;
    for note in &plan.notes {
        if asked {
            tracing::warn!("{graph}.onnx: {note}");
        } else {
            tracing::debug!("{graph}.onnx: {note}");
        }
    }
    let mut start = 0;
    loop {
        let mut b = base_builder(env, opts)?;
        let mut registered: Vec<(usize, Provider)> = Vec::new();
        for (i, c) in plan.providers.iter().enumerate().skip(start) {
            if c.provider == Provider::Cpu {
                break;
            }
            let c = if c.provider == Provider::TensorRt {
                with_cache_dir(c, graph)
            } else {
                c.clone()
            };
            match register(&mut b, &c) {
                Ok(()) => registered.push((i, c.provider)),
                Err(e) => tracing::warn!(
                    "{graph}.onnx: {} could not be registered ({e:#}); trying the next provider",
                    c.provider
                ),
            }
        }
        let result = ort_err(b.commit_from_file(path))
            .with_context(|| format!("ONNX Runtime cannot load {}", path.display()));
        match result {
            Ok(s) => {
                let mut used: Vec<Provider> = registered.iter().map(|&(_, p)| p).collect();
                used.push(Provider::Cpu);
                let list = used
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ");
                if used.len() > 1 {
                    tracing::info!("{graph}.onnx: execution providers {list}");
                } else {
                    tracing::debug!("{graph}.onnx: execution providers {list}");
                }
                return Ok((s, used));
            }
            Err(e) => match registered.first() {
                Some(&(i, p)) => {
                    tracing::warn!(
                        "{graph}.onnx: the session failed with {p} ({e:#}); retrying without it"
                    );
                    start = i + 1;
                }
                None => return Err(e),
            },
        }
    }
}

/// `vision: TensorRT, decoder: CUDA` (the first provider of each graph).
fn describe_providers(vision: &[Provider], decoder: &[Provider]) -> String {
    let first = |v: &[Provider]| v.first().copied().unwrap_or(Provider::Cpu);
    let (a, b) = (first(vision), first(decoder));
    if a == b {
        a.to_string()
    } else {
        format!("vision: {a}, decoder: {b}")
    }
}

/// A session made on first use.
enum LazySession {
    Pending(Box<PendingSession>),
    Ready(Session),
}

/// What making the session takes.
struct PendingSession {
    env: Environment,
    path: PathBuf,
    data: Vec<PathBuf>,
    opts: BackendOptions,
    plan: GraphPlan,
}

impl LazySession {
    fn get(&mut self) -> Result<&mut Session> {
        if let LazySession::Pending(p) = self {
            let (s, _) = session(&p.env, &p.path, &p.data, &p.opts, &p.plan)?;
            *self = LazySession::Ready(s);
        }
        match self {
            LazySession::Ready(s) => Ok(s),
            LazySession::Pending { .. } => unreachable!("made just above"),
        }
    }
}

/// ONNX Runtime on a bundle: one session per graph, reused across calls.
pub struct OrtBackend {
    dims: Dims,
    library: PathBuf,
    /// The providers each session was created with, in order (CPU last).
    vision_providers: Vec<Provider>,
    decoder_providers: Vec<Provider>,
    threads: Option<usize>,
    vision: Session,
    decoder: Session,
    /// lines.onnx, when the bundle has it: its session is made on the first line batch,
    /// so `ove run` and whole-page reading never hold its second copy of the vision weights
    /// (or build its TensorRT engine).
    lines: Option<LazySession>,
    past: Vec<String>,
    present: Vec<String>,
    /// [`Backend::max_decoder_rows`]: the TensorRT profile's batch bound when TensorRT
    /// runs the decoder.
    max_decoder_rows: usize,
    /// Whether `decoder` is decoder_ort.onnx (its cache in place: [`super::ort_kv`]).
    fused: bool,
    /// The element type of the fused graph's cache.
    kv_elem: super::ort_kv::KvElem,
    /// The bundle's context bound (rows of the fused graph's rotary tables).
    max_context: usize,
}

/// The decoder session: decoder_ort.onnx or decoder.onnx, as
/// [`super::OrtDecoderGraph`] and the providers decide. Returns the session, its
/// providers and whether it is the fused graph.
fn decoder_session(
    env: &Environment,
    bundle: &Bundle,
    opts: &BackendOptions,
    plan: &GraphPlan,
) -> Result<(Session, Vec<Provider>, bool)> {
    use super::OrtDecoderGraph as Choice;
    let choice = opts.ort.decoder_graph;
    // The in-place cache is host memory: the fused graph runs on the CPU provider only.
    let cpu_only = plan.providers.iter().all(|c| c.provider == Provider::Cpu);
    let fused = match (choice, bundle.decoder_ort()) {
        (Choice::Portable, _) => None,
        (Choice::Auto, Some(g)) if cpu_only => Some(g),
        (Choice::Auto, _) => None,
        (Choice::Fused, None) => bail!(
            "--ort-decoder fused: this bundle has no decoder_ort.onnx (re-export it with \
             ove export without --no-ort-decoder)"
        ),
        (Choice::Fused, Some(_)) if !cpu_only => bail!(
            "--ort-decoder fused runs on the CPU provider only (its KV cache is host memory); \
             pass --ep cpu or --ort-decoder portable"
        ),
        (Choice::Fused, Some(g)) => Some(g),
    };
    if let Some(g) = fused {
        match session(env, &g.path, &data_files(bundle, g), opts, plan) {
            Ok((s, p)) => return Ok((s, p, true)),
            Err(e) if choice == Choice::Auto => tracing::warn!(
                "{}: {e:#}; running decoder.onnx instead (an ONNX Runtime older than \
                 the fused graph's operators?)",
                g.path.display()
            ),
            Err(e) => return Err(e),
        }
    }
    let decoder = bundle.decoder();
    let (s, p) = session(env, &decoder.path, &data_files(bundle, decoder), opts, plan)?;
    Ok((s, p, false))
}

impl OrtBackend {
    /// Loads the library (once per process) and both graphs.
    pub fn load(bundle: &Bundle, opts: &BackendOptions, library: &Path) -> Result<Self> {
        let env = environment(library)?;
        let m = bundle.manifest();
        let dims = Dims::from_manifest(m);
        let settings = &opts.ort.providers;
        let device = if settings.order.contains(&Provider::TensorRt) {
            DeviceInfo::detect()
        } else {
            DeviceInfo::default()
        };
        let plan = |g| providers::plan(m, settings, g, bundle.dir(), &device, &provider_available);
        let (vision, vision_providers) = session(
            &env,
            &bundle.vision().path,
            &data_files(bundle, bundle.vision()),
            opts,
            &plan(Graph::Vision),
        )?;
        let decoder_plan = plan(Graph::Decoder);
        let (decoder, decoder_providers, fused) =
            decoder_session(&env, bundle, opts, &decoder_plan)?;
        let lines = bundle.lines().map(|g| {
            LazySession::Pending(Box::new(PendingSession {
                env: env.clone(),
                path: g.path.clone(),
                data: data_files(bundle, g),
                opts: opts.clone(),
                plan: plan(Graph::Lines),
            }))
        });
        let (past, present) = tensor_names(dims.kv.layers);
        let max_decoder_rows = if !dims.kv.batched {
            1
        } else if decoder_providers.first() == Some(&Provider::TensorRt) {
            settings.tensorrt.max_decoder_rows.max(1)
        } else {
            MAX_DECODER_ROWS
        };
        let kv_elem = match bundle.decoder_ort().and_then(|g| g.input(&io::past_key(0))) {
            Some(p) if p.elem_type == ove_core::onnx_proto::data_type::FLOAT16 => {
                super::ort_kv::KvElem::F16
            }
            _ => super::ort_kv::KvElem::F32,
        };
        Ok(Self {
            max_decoder_rows,
            fused,
            kv_elem,
            max_context: m.max_context,
            dims,
            library: library.to_path_buf(),
            vision_providers,
            decoder_providers,
            threads: opts.threads,
            vision,
            decoder,
            lines,
            past,
            present,
        })
    }
}

pub(super) fn values_f32(v: &DynValue, what: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let (shape, data) = v
        .try_extract_tensor::<f32>()
        .map_err(|e| anyhow!("{what}: {e}"))?;
    Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
}

pub(super) fn take(outputs: &mut ort::session::SessionOutputs<'_>, name: &str) -> Result<DynValue> {
    outputs
        .remove(name)
        .ok_or_else(|| anyhow!("ONNX Runtime returned no output {name:?}"))
}

pub(super) fn view<'a, T>(shape: Vec<usize>, data: &'a [T]) -> Result<SessionInputValue<'a>>
where
    T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static,
{
    Ok(ort_err(TensorRef::from_array_view((shape, data)))?.into())
}

impl Backend for OrtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ort
    }

    fn describe(&self) -> String {
        format!(
            "ONNX Runtime ({}, {} decoder{}, {} threads) from {}",
            describe_providers(&self.vision_providers, &self.decoder_providers),
            if self.fused { "fused" } else { "portable" },
            if self.fused && self.kv_elem == super::ort_kv::KvElem::F16 {
                ", f16 KV cache"
            } else {
                ""
            },
            self.threads
                .map(|n| n.to_string())
                .unwrap_or_else(|| "default".into()),
            self.library.display()
        )
    }

    fn vision(&mut self, x: &VisionInputs<'_>) -> Result<VisionOutput> {
        let (p, c) = check_vision_inputs(x, &self.dims)?;
        let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                io::PIXEL_VALUES.into(),
                view(vec![p, self.dims.patch_dim], x.pixel_values)?,
            ),
            (io::PATCH_POS.into(), view(vec![p, 2], x.patch_pos)?),
            (
                io::CARRY.into(),
                view(vec![c, self.dims.vision_hidden], x.carry)?,
            ),
            (io::WINDOW_INDEX.into(), view(vec![p], x.window_index)?),
        ];
        let mut out =
            ort_err(self.vision.run(inputs)).context("ONNX Runtime failed running vision.onnx")?;
        let (_, vision_tokens) =
            values_f32(&take(&mut out, io::VISION_TOKENS)?, io::VISION_TOKENS)?;
        let (_, image_embeds) = values_f32(&take(&mut out, io::IMAGE_EMBEDS)?, io::IMAGE_EMBEDS)?;
        let (_, vision_states) =
            values_f32(&take(&mut out, io::VISION_STATES)?, io::VISION_STATES)?;
        let result = VisionOutput {
            vision_tokens,
            image_embeds,
            vision_states,
        };
        check_vision(&result, &self.dims, p)?;
        Ok(result)
    }

    fn lines(&mut self, x: &LineBatchInputs<'_>) -> Result<Vec<f32>> {
        x.check(&self.dims)?;
        let (b, p) = (x.batch, x.patches);
        let Some(lazy) = self.lines.as_mut() else {
            bail!("this bundle has no lines.onnx (re-export it with --ctc-head)");
        };
        let session = lazy.get()?;
        let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                io::PIXEL_VALUES.into(),
                view(vec![b, p, self.dims.patch_dim], x.pixel_values)?,
            ),
            (io::PATCH_POS.into(), view(vec![b, p, 2], x.patch_pos)?),
            (io::KEY_BIAS.into(), view(vec![b, p + 1], x.key_bias)?),
        ];
        let mut out =
            ort_err(session.run(inputs)).context("ONNX Runtime failed running lines.onnx")?;
        let (shape, tokens) = values_f32(&take(&mut out, io::LINE_TOKENS)?, io::LINE_TOKENS)?;
        let want = [b, p, self.dims.vision_hidden];
        if shape != want {
            bail!("lines.onnx output line_tokens has shape {shape:?}, expected {want:?}");
        }
        Ok(tokens)
    }

    fn decoder(&mut self, x: &DecoderInputs<'_>, cache: &mut KvCache) -> Result<Vec<f32>> {
        let k = cache.len();
        x.check(&self.dims, k)?;
        check_rows(x, cache)?;
        let (rows, s) = (x.batch, x.new_tokens());
        if self.fused {
            let mut kv = match std::mem::replace(&mut cache.store, KvStore::Empty) {
                KvStore::Empty => None,
                KvStore::OrtInPlace(kv) => Some(kv),
                other => {
                    cache.store = other;
                    bail!("this KV cache was made by another backend or decoder graph")
                }
            };
            let result = super::ort_kv::step(
                &mut self.decoder,
                &self.dims,
                self.kv_elem,
                &self.present,
                &self.past,
                self.max_context,
                &mut kv,
                x,
                k,
            );
            if let Some(kv) = kv {
                cache.store = KvStore::OrtInPlace(kv);
            }
            let logits = result?;
            cache.len = k + s;
            return Ok(logits);
        }
        let kv = self.dims.kv;
        let empty;
        let past: Vec<&DynValue> = match &cache.store {
            KvStore::Empty => {
                let t = ort_err(Tensor::<f32>::from_array((
                    kv.tensor_dims(rows, 0),
                    Vec::new(),
                )))?;
                empty = t.into_dyn();
                vec![&empty; self.past.len()]
            }
            KvStore::Ort(values) => values.iter().collect(),
            #[allow(unreachable_patterns)]
            _ => bail!("this KV cache was made by another backend or decoder graph"),
        };
        let [embeds_shape, pos_shape, bias_shape] = x.shapes(&self.dims, k);
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(4 + past.len());
        inputs.push((
            io::INPUTS_EMBEDS.into(),
            view(embeds_shape, x.inputs_embeds)?,
        ));
        inputs.push((io::POSITION_IDS.into(), view(pos_shape, x.position_ids)?));
        inputs.push((
            io::ATTENTION_BIAS.into(),
            view(bias_shape, x.attention_bias)?,
        ));
        inputs.push((
            io::LOGITS_INDEX.into(),
            view(vec![x.logits_index.len()], x.logits_index)?,
        ));
        for (name, v) in self.past.iter().zip(past) {
            // The previous step's output value itself: nothing is copied.
            inputs.push((Cow::Borrowed(name.as_str()), v.into()));
        }
        let mut out = ort_err(self.decoder.run(inputs))
            .context("ONNX Runtime failed running decoder.onnx")?;
        let (shape, logits) = values_f32(&take(&mut out, io::LOGITS)?, io::LOGITS)?;
        let want = [x.logits_index.len(), self.dims.vocab];
        if shape != want {
            bail!("decoder output logits has shape {shape:?}, expected {want:?}");
        }
        let mut present = Vec::with_capacity(self.present.len());
        for name in &self.present {
            let v = take(&mut out, name)?;
            let dims: Vec<usize> = ort_err(v.try_extract_tensor::<f32>())?
                .0
                .iter()
                .map(|&d| d as usize)
                .collect();
            check_present(name, &dims, &kv, rows, k + s)?;
            present.push(v);
        }
        drop(out);
        cache.store = KvStore::Ort(present);
        cache.len = k + s;
        Ok(logits)
    }

    fn max_decoder_rows(&self) -> usize {
        self.max_decoder_rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        if cfg!(target_os = "linux") {
            assert!(is_library_name("libonnxruntime.so"));
            assert!(is_library_name("libonnxruntime.so.1.32.0"));
            assert!(!is_library_name("libonnxruntime_providers_shared.so"));
            assert!(!is_library_name("libonnxruntime.so.1.32.0.py"));
        }
    }

    #[test]
    fn highest_version_wins() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime.so",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        std::fs::write(dir.path().join("libonnxruntime_providers_shared.so"), b"").unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(
                library_in(dir.path()).unwrap().file_name().unwrap(),
                "libonnxruntime.so.1.32.0"
            );
        }
    }

    #[test]
    fn explicit_missing_library_is_an_error() {
        let err = find_library(Some(Path::new("/nonexistent/libonnxruntime.so")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn providers_the_library_lacks_fail_to_register_cleanly() {
        // Needs an ONNX Runtime library (the project's .venv has the CPU-only wheel);
        // without one there is nothing to check here.
        let Ok(lib) = find_library(None) else { return };
        let Ok(env) = environment(&lib) else { return };
        let opts = BackendOptions::default();
        for (p, opts) in [
            (
                Provider::TensorRt,
                vec![
                    ("trt_fp16_enable".to_string(), "1".to_string()),
                    ("trt_profile_min_shapes".into(), "x:1".into()),
                ],
            ),
            (Provider::Cuda, vec![("device_id".into(), "0".into())]),
        ] {
            let available = provider_available(p);
            let mut b = base_builder(&env, &BackendOptions::default()).unwrap();
            let r = register(
                &mut b,
                &ProviderConfig {
                    provider: p,
                    options: opts,
                },
            );
            if !available {
                // A library without the provider: an error to report, not a crash.
                let e = r.expect_err("registering a provider the library lacks");
                assert!(!format!("{e:#}").is_empty());
            }
        }
        let mut b = base_builder(&env, &opts).unwrap();
        let cpu = ProviderConfig {
            provider: Provider::Cpu,
            options: Vec::new(),
        };
        register(&mut b, &cpu).unwrap();
    }

    #[test]
    fn unusable_cache_dirs_switch_the_caches_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let c = ProviderConfig {
            provider: Provider::TensorRt,
            options: vec![
                ("trt_engine_cache_enable".into(), "1".into()),
                (
                    "trt_engine_cache_path".into(),
                    file.join("sub").display().to_string(),
                ),
                ("trt_timing_cache_enable".into(), "1".into()),
            ],
        };
        let off = with_cache_dir(&c, Graph::Vision);
        assert_eq!(off.option("trt_engine_cache_enable"), Some("0"));
        assert_eq!(off.option("trt_timing_cache_enable"), Some("0"));
        assert_eq!(off.option("trt_engine_cache_path"), None);
        let good = dir.path().join("cache/key").display().to_string();
        let mut c2 = c.clone();
        c2.options[1].1 = good.clone();
        assert_eq!(with_cache_dir(&c2, Graph::Vision), c2);
        assert!(Path::new(&good).is_dir());
    }

    #[test]
    fn provider_descriptions() {
        use Provider::*;
        assert_eq!(
            describe_providers(&[TensorRt, Cuda, Cpu], &[TensorRt, Cpu]),
            "TensorRT"
        );
        assert_eq!(
            describe_providers(&[Cuda, Cpu], &[Cpu]),
            "vision: CUDA, decoder: CPU"
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("libonnxruntime.so");
        std::fs::write(&fake, b"not a shared object").unwrap();
        // Either dlopen fails, or (when another test already loaded the real library in
        // this process) the switch is refused: an error both ways.
        let err = environment(&fake).expect_err("must fail");
        assert!(format!("{err:#}").contains("ONNX Runtime"), "{err:#}");
    }
}
