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

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorRef};

use super::{
    check_present, check_vision, check_vision_inputs, Backend, BackendKind, BackendOptions,
    DecoderInputs, Dims, ExecutionProvider, OrtOptimization, VisionInputs, VisionOutput,
};
use crate::bundle::Bundle;
use crate::kv::{tensor_names, KvCache, KvStore};

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

fn ort_err<T, R>(r: std::result::Result<T, ort::Error<R>>) -> Result<T> {
    r.map_err(|e| anyhow!("{e}"))
}

/// The execution provider's place: CPU needs nothing (ONNX Runtime's fallback). CUDA and
/// TensorRT on the Jetson will register here, before the CPU fallback.
fn register_execution_provider(b: SessionBuilder, ep: ExecutionProvider) -> Result<SessionBuilder> {
    match ep {
        ExecutionProvider::Cpu => Ok(b),
    }
}

fn session(env: &Environment, path: &Path, opts: &BackendOptions) -> Result<Session> {
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
    b = register_execution_provider(b, opts.ort.execution_provider)?;
    ort_err(b.commit_from_file(path))
        .with_context(|| format!("ONNX Runtime cannot load {}", path.display()))
}

/// ONNX Runtime on a bundle: one session per graph, reused across calls.
pub struct OrtBackend {
    dims: Dims,
    library: PathBuf,
    threads: Option<usize>,
    vision: Session,
    decoder: Session,
    past: Vec<String>,
    present: Vec<String>,
}

impl OrtBackend {
    /// Loads the library (once per process) and both graphs.
    pub fn load(bundle: &Bundle, opts: &BackendOptions, library: &Path) -> Result<Self> {
        let env = environment(library)?;
        let dims = Dims::from_manifest(bundle.manifest());
        let vision = session(&env, &bundle.vision().path, opts)?;
        let decoder = session(&env, &bundle.decoder().path, opts)?;
        let (past, present) = tensor_names(dims.kv.layers);
        Ok(Self {
            dims,
            library: library.to_path_buf(),
            threads: opts.threads,
            vision,
            decoder,
            past,
            present,
        })
    }
}

fn values_f32(v: &DynValue, what: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let (shape, data) = v
        .try_extract_tensor::<f32>()
        .map_err(|e| anyhow!("{what}: {e}"))?;
    Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
}

fn take(outputs: &mut ort::session::SessionOutputs<'_>, name: &str) -> Result<DynValue> {
    outputs
        .remove(name)
        .ok_or_else(|| anyhow!("ONNX Runtime returned no output {name:?}"))
}

fn view<'a, T>(shape: Vec<usize>, data: &'a [T]) -> Result<SessionInputValue<'a>>
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
            "ONNX Runtime (CPU, {} threads) from {}",
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
                "pixel_values".into(),
                view(vec![p, self.dims.patch_dim], x.pixel_values)?,
            ),
            ("patch_pos".into(), view(vec![p, 2], x.patch_pos)?),
            (
                "carry".into(),
                view(vec![c, self.dims.vision_hidden], x.carry)?,
            ),
            ("window_index".into(), view(vec![p], x.window_index)?),
        ];
        let mut out =
            ort_err(self.vision.run(inputs)).context("ONNX Runtime failed running vision.onnx")?;
        let (_, vision_tokens) = values_f32(&take(&mut out, "vision_tokens")?, "vision_tokens")?;
        let (_, image_embeds) = values_f32(&take(&mut out, "image_embeds")?, "image_embeds")?;
        let (_, vision_states) = values_f32(&take(&mut out, "vision_states")?, "vision_states")?;
        let result = VisionOutput {
            vision_tokens,
            image_embeds,
            vision_states,
        };
        check_vision(&result, &self.dims, p)?;
        Ok(result)
    }

    fn decoder(&mut self, x: &DecoderInputs<'_>, cache: &mut KvCache) -> Result<Vec<f32>> {
        let k = cache.len();
        x.check(&self.dims, k)?;
        let s = x.new_tokens();
        let kv = self.dims.kv;
        let empty;
        let past: Vec<&DynValue> = match &cache.store {
            KvStore::Empty => {
                let t = ort_err(Tensor::<f32>::from_array((kv.dims(0).to_vec(), Vec::new())))?;
                empty = t.into_dyn();
                vec![&empty; self.past.len()]
            }
            KvStore::Ort(values) => values.iter().collect(),
            #[allow(unreachable_patterns)]
            _ => bail!("this KV cache was made by another backend"),
        };
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(4 + past.len());
        inputs.push((
            "inputs_embeds".into(),
            view(vec![s, self.dims.hidden], x.inputs_embeds)?,
        ));
        inputs.push(("position_ids".into(), view(vec![s], x.position_ids)?));
        inputs.push((
            "attention_bias".into(),
            view(vec![s, k + s], x.attention_bias)?,
        ));
        inputs.push((
            "logits_index".into(),
            view(vec![x.logits_index.len()], x.logits_index)?,
        ));
        for (name, v) in self.past.iter().zip(past) {
            // The previous step's output value itself: nothing is copied.
            inputs.push((Cow::Borrowed(name.as_str()), v.into()));
        }
        let mut out = ort_err(self.decoder.run(inputs))
            .context("ONNX Runtime failed running decoder.onnx")?;
        let (shape, logits) = values_f32(&take(&mut out, "logits")?, "logits")?;
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
            check_present(name, &dims, &kv, k + s)?;
            present.push(v);
        }
        drop(out);
        cache.store = KvStore::Ort(present);
        cache.len = k + s;
        Ok(logits)
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
