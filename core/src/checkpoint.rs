//! A Hugging Face checkpoint directory: config files plus one or many safetensors files.
//!
//! Tensors are memory-mapped and decoded one at a time, so that a consumer (the exporter)
//! can stream a multi-GB checkpoint in bounded memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::Dtype;
use serde::Deserialize;

use crate::config::{GenerationConfig, ModelConfig, PreprocessorConfig};

pub const CONFIG_FILE: &str = "config.json";
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";
pub const GENERATION_FILE: &str = "generation_config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const SINGLE_WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// The output head's tensor, which a tied model need not have (or use).
pub const TIED_LM_HEAD: &str = "lm_head.weight";

/// Tensor names for an error message: the first dozen, then how many in all.
pub fn name_list(names: &[&str]) -> String {
    const SHOWN: usize = 12;
    let mut s = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", ... ({} in all)", names.len()));
    }
    s
}

/// `model.safetensors.index.json`: which shard holds which tensor.
#[derive(Debug, Clone, Deserialize)]
pub struct WeightIndex {
    pub weight_map: BTreeMap<String, String>,
}

/// One memory-mapped safetensors file and its parsed header.
struct Shard {
    path: PathBuf,
    mmap: memmap2::Mmap,
}

/// Where a tensor lives and how it is stored.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    shard: usize,
    start: usize,
    end: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An opened checkpoint directory.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    /// Absent in some training checkpoints; the exporter then requires `--preprocessor`.
    pub preprocessor: Option<PreprocessorConfig>,
    pub generation: GenerationConfig,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, TensorInfo>,
}

impl Checkpoint {
    /// Opens `dir`: parses the configs and the safetensors headers (no tensor data is read).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: not a checkpoint directory", dir.display());
        }
        let config = ModelConfig::from_file(&dir.join(CONFIG_FILE))?;
        let pre_path = dir.join(PREPROCESSOR_FILE);
        let preprocessor = if pre_path.is_file() {
            Some(PreprocessorConfig::from_file(&pre_path)?)
        } else {
            None
        };
        let gen_path = dir.join(GENERATION_FILE);
        let generation = if gen_path.is_file() {
            GenerationConfig::from_file(&gen_path)?
        } else {
            GenerationConfig::default()
        };

        let files = weight_files(dir)?;
        let mut shards = Vec::new();
        let mut tensors = BTreeMap::new();
        for file in files {
            let path = dir.join(&file);
            let f = std::fs::File::open(&path)
                .with_context(|| format!("{}: cannot open", path.display()))?;
            // SAFETY: the map is read-only; a file truncated under us while mapped is
            // outside what any reader of checkpoints can defend against.
            let mmap = unsafe { memmap2::Mmap::map(&f) }
                .with_context(|| format!("{}: cannot map", path.display()))?;
            let shard_idx = shards.len();
            for info in read_header(&path, &mmap, shard_idx)? {
                if tensors.contains_key(&info.name) {
                    bail!(
                        "{}: tensor {} appears in two shards",
                        path.display(),
                        info.name
                    );
                }
                tensors.insert(info.name.clone(), info);
            }
            shards.push(Shard { path, mmap });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            preprocessor,
            generation,
            shards,
            tensors,
        })
    }

    /// Names of every tensor, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .get(name)
            .ok_or_else(|| anyhow!("{}: tensor {name} is missing", self.dir.display()))
    }

    /// Raw little-endian bytes of a tensor, straight from the map.
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        let info = self.info(name)?;
        Ok(&self.shards[info.shard].mmap[info.start..info.end])
    }

    /// A tensor decoded to f32 (from f32, bf16 or f16), with its expected shape checked.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        if info.shape != shape {
            bail!(
                "{}: tensor {name} has shape {:?}, the config implies {:?}",
                self.shards[info.shard].path.display(),
                info.shape,
                shape
            );
        }
        let b = self.raw(name)?;
        Ok(match info.dtype {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => bail!("tensor {name}: unsupported dtype {other:?} (want f32, bf16 or f16)"),
        })
    }

    /// The checkpoint's tensors that `used` does not claim, sorted. A model with tied
    /// embeddings may still carry `lm_head.weight` (a copy of the embedding table): that
    /// one counts as used.
    pub fn unused_tensors(&self, used: impl Fn(&str) -> bool) -> Vec<&str> {
        let tied = self.config.text_config.tie_word_embeddings;
        self.names()
            .filter(|n| !(used(n) || (tied && *n == TIED_LM_HEAD)))
            .collect()
    }

    /// Path of `tokenizer.json` when the checkpoint has one.
    pub fn tokenizer_path(&self) -> Option<PathBuf> {
        let p = self.dir.join(TOKENIZER_FILE);
        p.is_file().then_some(p)
    }
}

/// The tensors a safetensors file's header lists, each checked against the file: its
/// bytes lie inside the data section and match its shape and dtype. `bytes` is the whole
/// file; `path` names it in errors; `shard` is recorded in each [`TensorInfo`]. Nothing
/// is allocated from what the header announces.
pub fn read_header(path: &Path, bytes: &[u8], shard: usize) -> Result<Vec<TensorInfo>> {
    let (header_len, metadata) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("{}: corrupt safetensors header: {e:?}", path.display()))?;
    let data_len = bytes
        .len()
        .checked_sub(8 + header_len)
        .ok_or_else(|| anyhow!("{}: header longer than the file", path.display()))?;
    let mut out = Vec::new();
    for (name, info) in metadata.tensors() {
        let (start, end) = info.data_offsets;
        if end > data_len || start > end {
            bail!(
                "{}: tensor {name} lies past the end of the file (truncated checkpoint)",
                path.display()
            );
        }
        let expected = info
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .map(|bits| bits / 8);
        if expected != Some(end - start) {
            bail!(
                "{}: tensor {name} has {} bytes, its shape {:?} and dtype {:?} need {}",
                path.display(),
                end - start,
                info.shape,
                info.dtype,
                expected.map_or("more than can be addressed".to_string(), |n| n.to_string())
            );
        }
        out.push(TensorInfo {
            name,
            dtype: info.dtype,
            shape: info.shape.clone(),
            shard,
            start: 8 + header_len + start,
            end: 8 + header_len + end,
        });
    }
    Ok(out)
}

/// The shard files `model.safetensors.index.json` names (its text; `index` names it in
/// errors), sorted and without repeats, each checked to stay inside `dir` and to exist.
pub fn index_shards(dir: &Path, index: &Path, text: &str) -> Result<Vec<String>> {
    let idx: WeightIndex = crate::config::parse_json(index, text)?;
    let mut files: Vec<String> = idx.weight_map.values().cloned().collect();
    files.sort();
    files.dedup();
    for f in &files {
        crate::manifest::resolve_in_bundle(dir, f)
            .map_err(|e| anyhow!("{}: {e}", index.display()))?;
        if !dir.join(f).is_file() {
            bail!("{}: names shard {f}, which is missing", index.display());
        }
    }
    if files.is_empty() {
        bail!("{}: weight_map is empty", index.display());
    }
    Ok(files)
}

/// The safetensors files of a checkpoint: those named by the index, else `model.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<String>> {
    let index = dir.join(WEIGHTS_INDEX);
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("{}: cannot read", index.display()))?;
        return index_shards(dir, &index, &text);
    }
    if dir.join(SINGLE_WEIGHTS).is_file() {
        return Ok(vec![SINGLE_WEIGHTS.to_string()]);
    }
    bail!(
        "{}: no {SINGLE_WEIGHTS} and no {WEIGHTS_INDEX}",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden_checkpoint() -> PathBuf {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/one-image/checkpoint");
        assert!(p.is_dir(), "golden data missing at {}", p.display());
        p
    }

    #[test]
    fn opens_the_golden_checkpoint() {
        let ck = Checkpoint::open(&golden_checkpoint()).unwrap();
        let h = ck.config.text_config.hidden_size;
        let v = ck.config.text_config.vocab_size;
        assert_eq!(
            ck.f32("model.embed_tokens.weight", &[v, h]).unwrap().len(),
            v * h
        );
        assert!(ck.f32("model.embed_tokens.weight", &[v, h + 1]).is_err());
        assert!(ck.preprocessor.is_some());
    }

    /// Splits the golden checkpoint into two shards with an index, as released checkpoints are.
    #[test]
    fn reads_a_sharded_checkpoint() {
        let src = golden_checkpoint();
        let dir = tempfile::tempdir().unwrap();
        for f in [CONFIG_FILE, PREPROCESSOR_FILE] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let all = crate::tensor_file::read_safetensors(&src.join(SINGLE_WEIGHTS)).unwrap();
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        let mut map = BTreeMap::new();
        for (i, (n, t)) in all.iter().enumerate() {
            let (shard, file) = if i % 2 == 0 {
                (&mut a, "model-00001-of-00002.safetensors")
            } else {
                (&mut b, "model-00002-of-00002.safetensors")
            };
            shard.insert(n.clone(), t.clone());
            map.insert(n.clone(), file.to_string());
        }
        crate::tensor_file::write_safetensors(
            &dir.path().join("model-00001-of-00002.safetensors"),
            &a,
        )
        .unwrap();
        crate::tensor_file::write_safetensors(
            &dir.path().join("model-00002-of-00002.safetensors"),
            &b,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(WEIGHTS_INDEX),
            serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
        )
        .unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ck.names().count(), all.len());
        for (n, t) in &all {
            assert_eq!(ck.f32(n, t.shape()).unwrap(), t.to_f32(), "{n}");
        }

        // A missing shard is a clear error.
        std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
        let err = Checkpoint::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn truncated_weights_are_an_error() {
        let src = golden_checkpoint();
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(src.join(CONFIG_FILE), dir.path().join(CONFIG_FILE)).unwrap();
        let bytes = std::fs::read(src.join(SINGLE_WEIGHTS)).unwrap();
        std::fs::write(dir.path().join(SINGLE_WEIGHTS), &bytes[..bytes.len() - 100]).unwrap();
        assert!(Checkpoint::open(dir.path()).is_err());
        std::fs::write(dir.path().join(SINGLE_WEIGHTS), &bytes[..5]).unwrap();
        assert!(Checkpoint::open(dir.path()).is_err());
    }
}
