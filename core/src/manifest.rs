//! The bundle manifest (`manifest.json`): written by `ove export`, checked by the runtime.
//!
//! It records everything the runtime needs to trust a bundle without the checkpoint:
//! the model config, every file with its size and sha256, the dtypes, the special token
//! ids, the preprocessing config and exactly what was quantized and how. See docs/BUNDLE.md.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{GenerationConfig, ModelConfig, PreprocessorConfig};

/// The newest schema this build reads; a bundle is written with the oldest version that
/// carries what it holds ([`Reading::schema_version`]).
pub const SCHEMA_VERSION: u32 = 5;
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}: not a bundle directory (no manifest.json)")]
    NoManifest(PathBuf),
    #[error("{file}: {message}")]
    Manifest { file: PathBuf, message: String },
    #[error("bundle schema version {found} is newer than this ove understands ({supported}); upgrade ove")]
    NewerSchema { found: u32, supported: u32 },
    #[error("path {path:?} in the bundle escapes the bundle directory")]
    PathEscapes { path: String },
    #[error("{path}: missing from the bundle")]
    MissingFile { path: PathBuf },
    #[error("{path}: size {actual} bytes, manifest says {expected} (truncated or replaced file)")]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: sha256 {actual}, manifest says {expected} (corrupt file)")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Special token ids, read from the checkpoint's config and tokenizer at export time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenIds {
    pub image_pad: i64,
    #[serde(default)]
    pub vision_start: Option<i64>,
    #[serde(default)]
    pub vision_end: Option<i64>,
    #[serde(default)]
    pub im_start: Option<i64>,
    #[serde(default)]
    pub im_end: Option<i64>,
    /// Generation stops at any of these (end of turn first).
    #[serde(default)]
    pub eos: Vec<i64>,
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the bundle directory, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// How one group of weights is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizedTensor {
    pub name: String,
    /// e.g. "matmulnbits", "dequantizelinear-int4", "gatherblockquantized".
    pub format: String,
    pub bits: u32,
    pub block_size: usize,
    pub symmetric: bool,
    /// ||W - deq(Q(W))||_F / ||W||_F.
    pub rel_frobenius_error: f64,
    pub max_abs_error: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    /// "none" or "int4".
    pub scheme: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub block_size: Option<usize>,
    #[serde(default)]
    pub symmetric: Option<bool>,
    /// Which parts were quantized: "decoder_linear", "lm_head", "embeddings", "vision".
    #[serde(default)]
    pub parts: Vec<String>,
    /// The `accuracy_level` written on the MatMulNBits nodes (ort target): 0 for f32
    /// matmuls on the dequantized weights, 4 for int8 activations (ONNX Runtime's fast
    /// kernels). Absent: 0 (bundles before it was recorded, and the TensorRT target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_level: Option<u8>,
    #[serde(default)]
    pub tensors: Vec<QuantizedTensor>,
}

/// The graphs and data files the runtime loads, by role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graphs {
    pub vision: String,
    pub decoder: String,
    /// safetensors file holding the `embed_tokens` table [V, H].
    pub embeddings: String,
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// safetensors file of the CTC line reader's head ([`crate::ctc`]), when the bundle
    /// carries one (`ove export --ctc-head`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctc_head: Option<String>,
    /// The batched line encoder (`lines.onnx`, schema version 3): the vision encoder over a
    /// batch of line crops, each attending only to itself, so a page's lines are encoded in
    /// one call. Written with the CTC head (its weights are vision.onnx's, shared through
    /// `vision.onnx.data`); absent, lines are encoded one by one by `vision.onnx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<String>,
    /// Whether `decoder.onnx` takes a batch of sequences (schema version 4): a leading
    /// batch axis `B` on every input and cache tensor, so several sequences (a page's line
    /// crops, concurrent requests) decode in one call per step. Absent (older bundles): the
    /// graph takes one sequence and the runtime runs batch rows one at a time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decoder_batch: bool,
    /// The decoder built from ONNX Runtime's fused kernels (`decoder_ort.onnx`: same inputs,
    /// outputs and weights as `decoder.onnx`, whose data file it points at): ONNX Runtime
    /// runs it instead of `decoder.onnx`, with its KV cache written in place. Absent: every
    /// engine runs `decoder.onnx`. A runtime that does not know it ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_ort: Option<String>,
}

impl Graphs {
    /// The oldest schema version that carries these graphs (5 for the fused ONNX Runtime
    /// decoder, 4 for the batched decoder and 3 for the batched line encoder: graphs an
    /// older runtime would not know).
    pub fn schema_version(&self) -> u32 {
        if self.decoder_ort.is_some() {
            5
        } else if self.decoder_batch {
            4
        } else if self.lines.is_some() {
            3
        } else {
            1
        }
    }
}

/// How the model reads a page (`ove ocr --layout auto` takes this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageReading {
    /// The whole page in one pass: what a large checkpoint (a released
    /// LLaVA-OneVision-1.5) is trained to do.
    #[default]
    Page,
    /// Line by line: the runtime's layout stage finds the text lines and each line crop is
    /// read on its own (small models trained on lines and words).
    Lines,
}

/// What the runtime needs to know about the model's reading (absent in older bundles:
/// whole pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reading {
    #[serde(default)]
    pub layout: PageReading,
    /// The text height in pixels the model was trained on: a line crop is scaled so that
    /// its line's ink box is this tall. `None`: crops keep their size.
    #[serde(default)]
    pub line_height: Option<u32>,
    /// What reads a line crop: the decoder (default) or the CTC head on the vision
    /// encoder (needs `graphs.ctc_head`; schema version 2).
    #[serde(default)]
    pub reader: LineReader,
}

/// What reads a line crop when a page is read line by line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineReader {
    /// The decoder, prompted with the OCR instruction (the model's own way).
    #[default]
    Decoder,
    /// The CTC head over the vision encoder's patch columns: no decoder step at all.
    Ctc,
}

impl Reading {
    /// The oldest schema version that carries this reading (2 for the CTC reader, which a
    /// runtime of schema 1 would silently ignore).
    pub fn schema_version(&self) -> u32 {
        match self.reader {
            LineReader::Decoder => 1,
            LineReader::Ctc => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// `ove <version>` that wrote the bundle.
    pub created_by: String,
    /// Float dtype of the unquantized weights: "f32" or "f16".
    pub dtype: String,
    pub model: ModelConfig,
    pub preprocessor: PreprocessorConfig,
    #[serde(default)]
    pub generation: GenerationConfig,
    pub tokens: TokenIds,
    pub graphs: Graphs,
    /// Longest sequence (prompt + generated) the runtime will run.
    pub max_context: usize,
    pub quantization: Quantization,
    /// How the model reads a page; optional (older bundles: whole pages).
    #[serde(default)]
    pub reading: Reading,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Reads `BUNDLE/manifest.json` and checks its schema version; files are not verified here.
    pub fn read(bundle: &Path) -> Result<Self, BundleError> {
        let file = bundle.join(MANIFEST_FILE);
        if !file.is_file() {
            return Err(BundleError::NoManifest(bundle.to_path_buf()));
        }
        let text = std::fs::read_to_string(&file).map_err(|source| BundleError::Io {
            path: file.clone(),
            source,
        })?;
        Self::parse(bundle, &text)
    }

    /// Parses the text of `BUNDLE/manifest.json` and checks it as [`Self::read`] does
    /// (schema version, paths inside the bundle, graphs listed in `files`); files are
    /// not verified here. Kept apart from the file read so the fuzzer can drive it.
    pub fn parse(bundle: &Path, text: &str) -> Result<Self, BundleError> {
        let file = bundle.join(MANIFEST_FILE);
        // The schema version is checked before the rest, so a newer manifest gets the
        // "upgrade ove" message rather than a confusing missing-key error.
        let head: serde_json::Value =
            serde_json::from_str(text).map_err(|e| BundleError::Manifest {
                file: file.clone(),
                message: format!("not valid JSON: {e}"),
            })?;
        let found = head
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| BundleError::Manifest {
                file: file.clone(),
                message: "schema_version: missing or not an integer".into(),
            })? as u32;
        if found > SCHEMA_VERSION {
            return Err(BundleError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let manifest: Manifest =
            crate::config::parse_json(&file, text).map_err(|e| BundleError::Manifest {
                file: file.clone(),
                message: e.to_string(),
            })?;
        // The configs are checked as the exporter checked them: a manifest edited (or
        // damaged) into sizes nothing can run, or numbers no JSON writer can write back,
        // is refused here rather than deep inside a backend.
        let invalid = |what: &str, message: String| BundleError::Manifest {
            file: file.clone(),
            message: format!("{what}: {message}"),
        };
        manifest.model.validate().map_err(|m| invalid("model", m))?;
        manifest
            .preprocessor
            .validate()
            .map_err(|m| invalid("preprocessor", m))?;
        manifest
            .generation
            .validate()
            .map_err(|m| invalid("generation", m))?;
        for entry in &manifest.files {
            resolve_in_bundle(bundle, &entry.path)?;
        }
        for path in [
            &manifest.graphs.vision,
            &manifest.graphs.decoder,
            &manifest.graphs.embeddings,
        ]
        .into_iter()
        .chain(manifest.graphs.tokenizer.as_ref())
        .chain(manifest.graphs.ctc_head.as_ref())
        .chain(manifest.graphs.lines.as_ref())
        {
            if !manifest.files.iter().any(|f| &f.path == path) {
                return Err(BundleError::Manifest {
                    file,
                    message: format!("graphs names {path:?}, which is not listed in files"),
                });
            }
        }
        if manifest.reading.reader == LineReader::Ctc && manifest.graphs.ctc_head.is_none() {
            return Err(BundleError::Manifest {
                file,
                message: "reading.reader is \"ctc\" but graphs.ctc_head names no file".into(),
            });
        }
        Ok(manifest)
    }

    /// Writes the manifest (pretty JSON) atomically: a temporary file, then a rename.
    pub fn write(&self, bundle: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let tmp = bundle.join(".manifest.json.tmp");
        let named = |what: &str, p: &Path, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
        };
        std::fs::write(&tmp, text).map_err(|e| named("writing", &tmp, e))?;
        let dest = bundle.join(MANIFEST_FILE);
        std::fs::rename(&tmp, &dest).map_err(|e| named("renaming to", &dest, e))
    }

    /// Checks every listed file: present, inside the bundle, right size, right sha256.
    pub fn verify_files(&self, bundle: &Path) -> Result<(), BundleError> {
        for entry in &self.files {
            let path = resolve_in_bundle(bundle, &entry.path)?;
            let meta = std::fs::metadata(&path)
                .map_err(|_| BundleError::MissingFile { path: path.clone() })?;
            if meta.len() != entry.bytes {
                return Err(BundleError::SizeMismatch {
                    path,
                    expected: entry.bytes,
                    actual: meta.len(),
                });
            }
            let actual = sha256_file(&path)?;
            if !actual.eq_ignore_ascii_case(&entry.sha256) {
                return Err(BundleError::ChecksumMismatch {
                    path,
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// The path of a listed file (checked to stay inside the bundle).
    pub fn path_of(&self, bundle: &Path, rel: &str) -> Result<PathBuf, BundleError> {
        resolve_in_bundle(bundle, rel)
    }

    /// A digest of the whole bundle (the sha256 of the sorted file checksums): a cache key.
    pub fn bundle_digest(&self) -> String {
        let mut entries: Vec<_> = self.files.iter().collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mut h = Sha256::new();
        for e in entries {
            h.update(e.path.as_bytes());
            h.update([0]);
            h.update(e.sha256.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

/// Size and sha256 of a file, for the manifest.
pub fn file_entry(bundle: &Path, rel: &str) -> Result<FileEntry, BundleError> {
    let path = resolve_in_bundle(bundle, rel)?;
    let bytes = std::fs::metadata(&path)
        .map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?
        .len();
    Ok(FileEntry {
        path: rel.to_string(),
        bytes,
        sha256: sha256_file(&path)?,
    })
}

/// Streams a file through sha256 (bundles hold multi-GB weight files).
pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Joins a bundle-relative path to the bundle directory, refusing anything that could
/// leave it: absolute paths, `..`, and (when the file exists) symlinks pointing outside.
pub fn resolve_in_bundle(bundle: &Path, rel: &str) -> Result<PathBuf, BundleError> {
    let escapes = || BundleError::PathEscapes {
        path: rel.to_string(),
    };
    let rel_path = Path::new(rel);
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return Err(escapes());
    }
    for c in rel_path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => return Err(escapes()),
        }
    }
    let joined = bundle.join(rel_path);
    if joined.exists() {
        let root = bundle.canonicalize().map_err(|source| BundleError::Io {
            path: bundle.to_path_buf(),
            source,
        })?;
        let real = joined.canonicalize().map_err(|source| BundleError::Io {
            path: joined.clone(),
            source,
        })?;
        if !real.starts_with(&root) {
            return Err(escapes());
        }
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_escape_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../x", "", "a\\..\\b"] {
            assert!(
                matches!(
                    resolve_in_bundle(dir.path(), bad),
                    Err(BundleError::PathEscapes { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        assert!(resolve_in_bundle(dir.path(), "decoder.onnx").is_ok());
        assert!(resolve_in_bundle(dir.path(), "sub/./w.bin").is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_bundle_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        assert!(matches!(
            resolve_in_bundle(dir.path(), "link"),
            Err(BundleError::PathEscapes { .. })
        ));
    }

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
