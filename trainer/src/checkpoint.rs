//! Hugging Face checkpoints <-> the `VarStore`.
//!
//! Loading goes through [`ove_core::checkpoint::Checkpoint`] (single `model.safetensors` or
//! shards named by `model.safetensors.index.json`; f32, bf16 or f16) and is strict: a
//! parameter missing from the checkpoint, a checkpoint tensor the model does not have, or a
//! shape that differs is an error naming the tensor(s).
//!
//! Saving writes the same layout `ove export` reads: `config.json`, the weights (one file,
//! or shards of at most `max_shard_bytes` plus the index), and the side files
//! (`preprocessor_config.json`, `tokenizer.json`, ...) copied from the source checkpoint.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, View};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use ove_core::checkpoint::{
    name_list, Checkpoint, CONFIG_FILE, GENERATION_FILE, PREPROCESSOR_FILE, SINGLE_WEIGHTS,
    TOKENIZER_FILE, WEIGHTS_INDEX,
};
use ove_core::config::ModelConfig;

use crate::model::LlavaOneVision;

/// Side files copied verbatim from the source checkpoint when present.
pub const SIDE_FILES: &[&str] = &[
    PREPROCESSOR_FILE,
    GENERATION_FILE,
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    ove_core::ctc::CTC_HEAD_FILE,
];

/// A model with its parameters and the checkpoint it came from.
pub struct LoadedModel {
    pub vs: VarStore,
    pub model: LlavaOneVision,
    pub checkpoint: Checkpoint,
}

/// Opens `dir`, builds the model on `device` (f32) and loads every weight strictly.
pub fn load_model(dir: &Path, device: Device) -> Result<LoadedModel> {
    let checkpoint =
        Checkpoint::open(dir).with_context(|| format!("opening checkpoint {}", dir.display()))?;
    let vs = VarStore::new(device);
    let model = LlavaOneVision::new(&vs.root(), &checkpoint.config)?;
    load_weights(&vs, &checkpoint)?;
    Ok(LoadedModel {
        vs,
        model,
        checkpoint,
    })
}

fn kind_of(dtype: Dtype) -> Result<Kind> {
    Ok(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F64 => Kind::Double,
        other => bail!("unsupported weight dtype {other:?} (want f32, bf16 or f16)"),
    })
}

/// Copies every tensor of `checkpoint` into the variable of the same name, converting the
/// dtype to the variable's. Names and shapes must match exactly, both ways.
pub fn load_weights(vs: &VarStore, checkpoint: &Checkpoint) -> Result<()> {
    let dir = checkpoint.dir.display();
    let vars = vs.variables();
    let missing: Vec<&str> = {
        let mut m: Vec<&str> = vars
            .keys()
            .map(String::as_str)
            .filter(|n| checkpoint.info(n).is_err())
            .collect();
        m.sort();
        m
    };
    let extra = checkpoint.unused_tensors(|n| vars.contains_key(n));
    if !missing.is_empty() || !extra.is_empty() {
        let mut msg = format!("{dir}: the checkpoint's tensors do not match the model");
        if !missing.is_empty() {
            msg.push_str(&format!("; missing: {}", name_list(&missing)));
        }
        if !extra.is_empty() {
            msg.push_str(&format!("; unexpected: {}", name_list(&extra)));
        }
        bail!(msg);
    }
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let info = checkpoint.info(name)?;
        let want: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
        if info.shape != want {
            bail!(
                "{dir}: tensor {name} has shape {:?}, the model (from config.json) needs {want:?}",
                info.shape
            );
        }
        let shape: Vec<i64> = want.iter().map(|&d| d as i64).collect();
        let kind = kind_of(info.dtype).with_context(|| format!("{dir}: tensor {name}"))?;
        let src = Tensor::f_from_data_size(checkpoint.raw(name)?, &shape, kind)
            .with_context(|| format!("{dir}: decoding tensor {name}"))?;
        tch::no_grad(|| {
            let mut var = var.shallow_clone();
            var.f_copy_(&src.to_kind(var.kind()).to_device(var.device()))
        })
        .with_context(|| format!("{dir}: copying tensor {name}"))?;
    }
    Ok(())
}

/// Float dtype of saved weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveDtype {
    F32,
    Bf16,
}

impl SaveDtype {
    fn kind(self) -> Kind {
        match self {
            SaveDtype::F32 => Kind::Float,
            SaveDtype::Bf16 => Kind::BFloat16,
        }
    }
    fn dtype(self) -> Dtype {
        match self {
            SaveDtype::F32 => Dtype::F32,
            SaveDtype::Bf16 => Dtype::BF16,
        }
    }
    fn bytes(self) -> u64 {
        match self {
            SaveDtype::F32 => 4,
            SaveDtype::Bf16 => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SaveOptions {
    pub dtype: SaveDtype,
    /// Shard the weights so that no file holds more than this many tensor bytes
    /// (a single tensor larger than the limit gets a shard of its own). `None`: one file.
    pub max_shard_bytes: Option<u64>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            dtype: SaveDtype::F32,
            max_shard_bytes: None,
        }
    }
}

/// A tch tensor as safetensors sees it; its bytes are produced only when written.
struct TchView {
    tensor: Tensor,
    shape: Vec<usize>,
    dtype: Dtype,
}

impl View for &TchView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let mut bytes = vec![0u8; self.data_len()];
        self.tensor.copy_data_u8(&mut bytes, self.tensor.numel());
        Cow::Owned(bytes)
    }
    fn data_len(&self) -> usize {
        self.tensor.numel() * self.tensor.kind().elt_size_in_bytes()
    }
}

/// Writes a checkpoint directory `out` that [`load_model`] and `ove export` read back:
/// the weights of `vs`, `config.json` (copied from `source` when given, else serialised
/// from `config`) and the side files of `source`. Old weight files in `out` are removed.
pub fn save_checkpoint(
    vs: &VarStore,
    config: &ModelConfig,
    source: Option<&Path>,
    out: &Path,
    opts: &SaveOptions,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    remove_old_weights(out)?;

    // Weights, sorted by name, grouped into shards.
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut shards: Vec<Vec<&String>> = vec![vec![]];
    let mut shard_bytes = 0u64;
    let mut total_bytes = 0u64;
    for name in names {
        let bytes = vars[name].numel() as u64 * opts.dtype.bytes();
        if let Some(limit) = opts.max_shard_bytes {
            if shard_bytes > 0 && shard_bytes + bytes > limit {
                shards.push(vec![]);
                shard_bytes = 0;
            }
        }
        shards.last_mut().expect("one shard at least").push(name);
        shard_bytes += bytes;
        total_bytes += bytes;
    }
    let n = shards.len();
    let file_name = |i: usize| {
        if n == 1 {
            SINGLE_WEIGHTS.to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        }
    };
    let mut weight_map = BTreeMap::new();
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    for (i, shard) in shards.iter().enumerate() {
        let file = file_name(i);
        let views = shard
            .iter()
            .map(|name| {
                let t = tch::no_grad(|| {
                    vars[*name]
                        .to_device(Device::Cpu)
                        .to_kind(opts.dtype.kind())
                        .contiguous()
                });
                let view = TchView {
                    shape: t.size().iter().map(|&d| d as usize).collect(),
                    tensor: t,
                    dtype: opts.dtype.dtype(),
                };
                ((*name).clone(), view)
            })
            .collect::<Vec<_>>();
        let path = out.join(&file);
        safetensors::serialize_to_file(
            views.iter().map(|(n, v)| (n.as_str(), v)),
            Some(metadata.clone()),
            &path,
        )
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
        for name in shard {
            weight_map.insert((*name).clone(), file.clone());
        }
    }
    if n > 1 {
        let index = serde_json::json!({
            "metadata": {"total_size": total_bytes},
            "weight_map": weight_map,
        });
        write_file(
            &out.join(WEIGHTS_INDEX),
            serde_json::to_string_pretty(&index)?.as_bytes(),
        )?;
    }

    // config.json and the side files (left alone when saving over the source itself).
    if same_dir(source, out) {
        return Ok(());
    }
    match source.map(|s| s.join(CONFIG_FILE)).filter(|p| p.is_file()) {
        Some(src) => copy_file(&src, &out.join(CONFIG_FILE))?,
        None => write_file(
            &out.join(CONFIG_FILE),
            serde_json::to_string_pretty(config)?.as_bytes(),
        )?,
    }
    if let Some(src) = source {
        for f in SIDE_FILES {
            let p = src.join(f);
            if p.is_file() {
                copy_file(&p, &out.join(f))?;
            }
        }
    }
    Ok(())
}

fn same_dir(a: Option<&Path>, b: &Path) -> bool {
    match a {
        Some(a) => match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
        None => false,
    }
}

fn remove_old_weights(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path: PathBuf = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_weights = name == SINGLE_WEIGHTS
            || name == WEIGHTS_INDEX
            || (name.starts_with("model-") && name.ends_with(".safetensors"));
        if is_weights {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    std::fs::copy(src, dst)
        .map(drop)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    // Golden and released files may be read-only; the copy must stay writable.
    let mut perms = std::fs::metadata(dst)
        .with_context(|| format!("reading the permissions of {}", dst.display()))?
        .permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(dst, perms)
        .with_context(|| format!("making {} writable", dst.display()))?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
