//! The model, preprocessor and generation configs, deserialized straight from the
//! Hugging Face JSON files of a checkpoint.
//!
//! Unknown keys are tolerated (checkpoints carry many keys this toolkit does not use);
//! a missing or ill-typed required key is an error that names the file and the key path,
//! e.g. `config.json: text_config.hidden_size: invalid type: string "64", expected u64`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An error reading one of the checkpoint's JSON files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {key}: {message}")]
    Key {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
}

/// Parses `text` as a `T`, reporting the path of the offending key on failure.
pub fn parse_json<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::Key {
            file: file.to_path_buf(),
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message: inner.to_string(),
        }
    })
}

/// Reads and parses a JSON file.
pub fn read_json<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    parse_json(file, &read_text(file)?)
}

/// The text of a config file; the error names it.
fn read_text(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|source| ConfigError::Io {
        file: file.to_path_buf(),
        source,
    })
}

/// [`parse_json`], then the config's own checks; their message becomes an error naming
/// the file.
fn parse_valid<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    validate: fn(&T) -> Result<(), String>,
) -> Result<T, ConfigError> {
    let cfg: T = parse_json(file, text)?;
    validate(&cfg).map_err(|message| ConfigError::Invalid {
        file: file.to_path_buf(),
        message,
    })?;
    Ok(cfg)
}

/// `config.json` of a `llavaonevision1_5` checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub model_type: String,
    pub vision_config: VisionConfig,
    pub text_config: TextConfig,
    /// Id of `<|image_pad|>`; the merged image embeddings replace these tokens.
    pub image_token_id: i64,
    #[serde(default)]
    pub vision_start_token_id: Option<i64>,
    #[serde(default)]
    pub vision_end_token_id: Option<i64>,
    #[serde(default)]
    pub video_token_id: Option<i64>,
}

/// The RICE-ViT encoder's `vision_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Width of the merger's output, which must equal the decoder's hidden size.
    pub text_hidden_size: usize,
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_temporal_patch_size")]
    pub temporal_patch_size: usize,
    #[serde(default = "default_hidden_act_gelu")]
    pub hidden_act: String,
    /// Theta of the 2-D rotary; absent in the released configs (then
    /// [`crate::rope::DEFAULT_VISION_ROPE_THETA`], see [`VisionConfig::rope_theta`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
}

/// The Qwen3 decoder's `text_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Qwen3 states it explicitly (q_proj may be wider than the hidden size);
    /// older configs leave it out and mean `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub intermediate_size: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "default_hidden_act_silu")]
    pub hidden_act: String,
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}
fn default_in_channels() -> usize {
    3
}
fn default_temporal_patch_size() -> usize {
    1
}
fn default_max_position_embeddings() -> usize {
    32768
}
fn default_hidden_act_gelu() -> String {
    "gelu".into()
}
fn default_hidden_act_silu() -> String {
    "silu".into()
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    /// Values per pre-cut patch row: channels x temporal x patch x patch (588 for 14x14 RGB).
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
    /// Patches merged into one LLM token (4 for a 2x2 merge).
    pub fn merge_unit(&self) -> usize {
        self.spatial_merge_size * self.spatial_merge_size
    }
    /// Width of the merger's hidden layer: the concatenation of one merge block.
    pub fn merger_hidden(&self) -> usize {
        self.hidden_size * self.merge_unit()
    }
    /// Number of 2-D rotary inverse frequencies per axis (head_dim / 4).
    pub fn rotary_freqs(&self) -> usize {
        self.head_dim() / 4
    }
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    /// Query heads that share one key/value head (grouped-query attention).
    pub fn gqa_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
    /// Output width of q_proj (can exceed `hidden_size`).
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim()
    }
    /// Output width of k_proj and v_proj.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim()
    }
}

/// The largest layer or head count a config may give.
const MAX_COUNT: usize = 1 << 12;
/// The largest width (hidden, intermediate, head) a config may give.
const MAX_WIDTH: usize = 1 << 20;
/// The largest patch, merge, temporal or channel size a config may give.
const MAX_PATCH: usize = 1 << 10;
/// The largest vocabulary or position count a config may give.
const MAX_VOCAB: usize = 1 << 24;

impl ModelConfig {
    /// Reads `config.json` and checks that its numbers are consistent.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json(path, &read_text(path)?)
    }

    /// Parses `config.json` text (the name is used in error messages).
    pub fn from_json(file: &Path, text: &str) -> Result<Self, ConfigError> {
        parse_valid(file, text, Self::validate)
    }

    /// The relations the architecture needs; a checkpoint that breaks one cannot run.
    /// Checks that a preprocessor cuts the patches this model's vision tower embeds: the
    /// same patch size, merge size and temporal patch size (the graph's `patch_dim` input
    /// width and the merger's `P / merge_unit` rows both depend on them).
    pub fn check_preprocessor(&self, p: &PreprocessorConfig) -> Result<(), String> {
        let v = &self.vision_config;
        for (what, pre, model) in [
            ("patch_size", p.patch_size, v.patch_size),
            ("merge_size", p.merge_size, v.spatial_merge_size),
            (
                "temporal_patch_size",
                p.temporal_patch_size,
                v.temporal_patch_size,
            ),
        ] {
            if pre != model {
                return Err(format!(
                    "preprocessor_config.json {what} is {pre} but config.json's vision_config \
                     says {model}: the images would be cut into patches the model cannot read"
                ));
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.model_type != "llavaonevision1_5" {
            return Err(format!(
                "model_type: expected \"llavaonevision1_5\", found {:?}",
                self.model_type
            ));
        }
        let v = &self.vision_config;
        let t = &self.text_config;
        let nonzero = [
            ("vision_config.depth", v.depth),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.num_heads", v.num_heads),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.spatial_merge_size", v.spatial_merge_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.num_attention_heads", t.num_attention_heads),
            ("text_config.num_key_value_heads", t.num_key_value_heads),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.vocab_size", t.vocab_size),
        ];
        for (key, value) in nonzero {
            if value == 0 {
                return Err(format!("{key}: must be positive"));
            }
        }
        // Far above any released model, far below where the derived sizes (q_dim, patch_dim,
        // merger width, parameter counts) stop fitting in a usize.
        let bounded = [
            ("vision_config.depth", v.depth, MAX_COUNT),
            ("vision_config.num_heads", v.num_heads, MAX_COUNT),
            ("vision_config.hidden_size", v.hidden_size, MAX_WIDTH),
            (
                "vision_config.intermediate_size",
                v.intermediate_size,
                MAX_WIDTH,
            ),
            (
                "vision_config.text_hidden_size",
                v.text_hidden_size,
                MAX_WIDTH,
            ),
            ("vision_config.patch_size", v.patch_size, MAX_PATCH),
            (
                "vision_config.spatial_merge_size",
                v.spatial_merge_size,
                MAX_PATCH,
            ),
            (
                "vision_config.temporal_patch_size",
                v.temporal_patch_size,
                MAX_PATCH,
            ),
            ("vision_config.in_channels", v.in_channels, MAX_PATCH),
            (
                "text_config.num_hidden_layers",
                t.num_hidden_layers,
                MAX_COUNT,
            ),
            (
                "text_config.num_attention_heads",
                t.num_attention_heads,
                MAX_COUNT,
            ),
            (
                "text_config.num_key_value_heads",
                t.num_key_value_heads,
                MAX_COUNT,
            ),
            ("text_config.hidden_size", t.hidden_size, MAX_WIDTH),
            (
                "text_config.intermediate_size",
                t.intermediate_size,
                MAX_WIDTH,
            ),
            ("text_config.head_dim", t.head_dim.unwrap_or(0), MAX_WIDTH),
            ("text_config.vocab_size", t.vocab_size, MAX_VOCAB),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
                MAX_VOCAB,
            ),
        ];
        for (key, value, most) in bounded {
            if value > most {
                return Err(format!(
                    "{key}: {value} is over the largest supported, {most}"
                ));
            }
        }
        let positive = [
            ("vision_config.rope_theta", v.rope_theta.unwrap_or(1.0)),
            ("text_config.rope_theta", t.rope_theta),
        ];
        for (key, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{key}: must be a positive number, found {value}"));
            }
        }
        for (key, value) in [
            ("vision_config.layer_norm_eps", v.layer_norm_eps),
            ("text_config.rms_norm_eps", t.rms_norm_eps),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{key}: must be a number >= 0, found {value}"));
            }
        }
        if !v.hidden_size.is_multiple_of(v.num_heads) {
            return Err(format!(
                "vision_config.hidden_size ({}) is not divisible by num_heads ({})",
                v.hidden_size, v.num_heads
            ));
        }
        if !v.head_dim().is_multiple_of(4) {
            return Err(format!(
                "vision head_dim ({}) must be divisible by 4 for the 2-D rotary embedding",
                v.head_dim()
            ));
        }
        if !t.num_attention_heads.is_multiple_of(t.num_key_value_heads) {
            return Err(format!(
                "text_config.num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                t.num_attention_heads, t.num_key_value_heads
            ));
        }
        if !t.head_dim().is_multiple_of(2) || t.head_dim() == 0 {
            return Err(format!(
                "text head_dim ({}) must be even and positive",
                t.head_dim()
            ));
        }
        if v.text_hidden_size != t.hidden_size {
            return Err(format!(
                "vision_config.text_hidden_size ({}) differs from text_config.hidden_size ({})",
                v.text_hidden_size, t.hidden_size
            ));
        }
        if self.image_token_id < 0 || self.image_token_id as usize >= t.vocab_size {
            return Err(format!(
                "image_token_id ({}) is outside the vocabulary (0..{})",
                self.image_token_id, t.vocab_size
            ));
        }
        Ok(())
    }

    /// LLM tokens one image contributes for a `(t, h, w)` patch grid.
    pub fn tokens_per_image(&self, grid_thw: [usize; 3]) -> usize {
        grid_thw[0] * grid_thw[1] * grid_thw[2] / self.vision_config.merge_unit()
    }
}

/// `preprocessor_config.json` (a `Qwen2VLImageProcessor`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessorConfig {
    pub patch_size: usize,
    pub merge_size: usize,
    #[serde(default = "default_temporal_patch_size")]
    pub temporal_patch_size: usize,
    /// Lower bound on the resized pixel count. Older files only have `size.shortest_edge`.
    #[serde(default)]
    pub min_pixels: Option<u64>,
    /// Upper bound on the resized pixel count. Older files only have `size.longest_edge`.
    #[serde(default)]
    pub max_pixels: Option<u64>,
    #[serde(default)]
    pub size: Option<PreprocessorSize>,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    #[serde(default = "default_rescale_factor")]
    pub rescale_factor: f64,
    #[serde(default = "yes")]
    pub do_resize: bool,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "yes")]
    pub do_normalize: bool,
    #[serde(default = "yes")]
    pub do_convert_rgb: bool,
    /// PIL resampling filter id; 3 = bicubic, the only one the reference uses.
    #[serde(default = "default_resample")]
    pub resample: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessorSize {
    #[serde(default)]
    pub shortest_edge: Option<u64>,
    #[serde(default)]
    pub longest_edge: Option<u64>,
}

fn default_rescale_factor() -> f64 {
    1.0 / 255.0
}
fn yes() -> bool {
    true
}
fn default_resample() -> u32 {
    3
}

impl PreprocessorConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json(path, &read_text(path)?)
    }

    pub fn from_json(file: &Path, text: &str) -> Result<Self, ConfigError> {
        parse_valid(file, text, Self::validate)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.patch_size == 0 || self.merge_size == 0 || self.temporal_patch_size == 0 {
            return Err("patch_size, merge_size and temporal_patch_size must be positive".into());
        }
        if self.min_pixels().is_none() {
            return Err("min_pixels: missing (and no size.shortest_edge)".into());
        }
        if self.max_pixels().is_none() {
            return Err("max_pixels: missing (and no size.longest_edge)".into());
        }
        if self.min_pixels() > self.max_pixels() {
            return Err(format!(
                "min_pixels ({:?}) exceeds max_pixels ({:?})",
                self.min_pixels(),
                self.max_pixels()
            ));
        }
        if self.image_std.contains(&0.0) {
            return Err("image_std: must not contain 0".into());
        }
        if self.patch_size > MAX_PATCH
            || self.merge_size > MAX_PATCH
            || self.temporal_patch_size > MAX_PATCH
        {
            return Err(format!(
                "patch_size, merge_size and temporal_patch_size may be at most {MAX_PATCH}"
            ));
        }
        // f32 fields: JSON numbers past f32's range arrive as infinities.
        let mut floats = self.image_mean.iter().chain(&self.image_std);
        if !floats.all(|x| x.is_finite()) || !self.rescale_factor.is_finite() {
            return Err(format!(
                "image_mean {:?}, image_std {:?} and rescale_factor {} must be finite numbers",
                self.image_mean, self.image_std, self.rescale_factor
            ));
        }
        if self.resample != 3 {
            return Err(format!(
                "resample: only 3 (bicubic) is supported, found {}",
                self.resample
            ));
        }
        Ok(())
    }

    /// `min_pixels`, falling back on `size.shortest_edge` as transformers does.
    pub fn min_pixels(&self) -> Option<u64> {
        self.min_pixels
            .or_else(|| self.size.as_ref().and_then(|s| s.shortest_edge))
    }

    /// `max_pixels`, falling back on `size.longest_edge` as transformers does.
    pub fn max_pixels(&self) -> Option<u64> {
        self.max_pixels
            .or_else(|| self.size.as_ref().and_then(|s| s.longest_edge))
    }

    /// The resize factor: patch size times merge size (28 for the released model).
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Values per patch row (588 for 14x14 RGB).
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// The most patch rows one image can become: `max_pixels / patch_size²`, rounded down
    /// to whole merge blocks (`merge_size²` patches); at least one block. `None` without
    /// a `max_pixels`. This bounds the vision graph's patch axis (TensorRT profiles).
    pub fn max_patches(&self) -> Option<usize> {
        let unit = (self.merge_size * self.merge_size).max(1);
        let per_patch = (self.patch_size * self.patch_size).max(1) as u64;
        self.max_pixels()
            .map(|px| ((px / per_patch) as usize / unit * unit).max(unit))
    }
}

/// `generation_config.json`; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    #[serde(default)]
    pub eos_token_id: Option<OneOrMany>,
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default)]
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
}

/// A JSON value that is either one integer or a list of them (`eos_token_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(i64),
    Many(Vec<i64>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            OneOrMany::One(x) => vec![*x],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

impl GenerationConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json(path, &read_text(path)?)
    }

    /// Parses `generation_config.json` text (the name is used in error messages).
    pub fn from_json(file: &Path, text: &str) -> Result<Self, ConfigError> {
        parse_valid(file, text, Self::validate)
    }

    /// The sampling numbers are finite (a JSON number past f32's range arrives as an
    /// infinity, which no sampler can use and no JSON writer can write back).
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("repetition_penalty", self.repetition_penalty),
        ] {
            if let Some(x) = value.filter(|x| !x.is_finite()) {
                return Err(format!("{key}: must be a finite number, found {x}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn golden_config_text() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/golden/one-image/checkpoint/config.json");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("golden data missing at {}: {e}", path.display()))
    }

    /// Tensor shapes from the golden checkpoint's safetensors header: facts the upstream
    /// implementation wrote, independent of our formulas.
    fn golden_shapes() -> BTreeMap<String, Vec<usize>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/golden/one-image/checkpoint/model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        header
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| {
                let shape = v.get("shape")?.as_array()?;
                Some((
                    k.clone(),
                    shape.iter().map(|d| d.as_u64().unwrap() as usize).collect(),
                ))
            })
            .collect()
    }

    /// The derived quantities against the shapes the reference's weights have (not the
    /// formulas restated): q_norm is head_dim wide, q_proj/k_proj give q_dim/kv_dim, the
    /// patch embedding's kernel is patch_dim, class_pos_emb is the vision head_dim / 2, the
    /// merger's first layer is merger_hidden square.
    #[test]
    fn golden_config_quantities_match_the_golden_weights() {
        let cfg = ModelConfig::from_json(Path::new("config.json"), &golden_config_text()).unwrap();
        let w = golden_shapes();
        let (t, v) = (&cfg.text_config, &cfg.vision_config);
        let shape = |n: &str| {
            w.get(n)
                .unwrap_or_else(|| panic!("{n} not in golden"))
                .clone()
        };
        assert_eq!(
            shape("model.layers.0.self_attn.q_norm.weight"),
            [t.head_dim()]
        );
        assert_eq!(
            shape("model.layers.0.self_attn.q_proj.weight"),
            [t.q_dim(), t.hidden_size]
        );
        assert_eq!(
            shape("model.layers.0.self_attn.k_proj.weight"),
            [t.kv_dim(), t.hidden_size]
        );
        let (q, k) = (
            shape("model.layers.0.self_attn.q_proj.weight")[0],
            shape("model.layers.0.self_attn.k_proj.weight")[0],
        );
        assert_eq!(t.gqa_groups(), q / k);
        let pe = shape("visual.patch_embed.proj.weight");
        assert_eq!(v.patch_dim(), pe[1..].iter().product::<usize>());
        assert_eq!(shape("visual.class_pos_emb"), [1, v.head_dim() / 2]);
        assert_eq!(v.rope_inv_freq().len() * 2, v.head_dim() / 2);
        assert_eq!(
            shape("visual.merger.mlp.0.weight"),
            [v.merger_hidden(), v.merger_hidden()]
        );
        assert_eq!(shape("visual.merger.mlp.2.weight")[0], v.text_hidden_size);
        let raw: serde_json::Value = serde_json::from_str(&golden_config_text()).unwrap();
        assert_eq!(cfg.image_token_id, raw["image_token_id"].as_i64().unwrap());
    }

    #[test]
    fn released_4b_shape_quantities() {
        let text = r#"{"model_type":"llavaonevision1_5","image_token_id":151655,
          "vision_config":{"depth":24,"hidden_size":1024,"num_heads":16,"intermediate_size":4096,
            "patch_size":14,"spatial_merge_size":2,"text_hidden_size":2560},
          "text_config":{"hidden_size":2560,"num_hidden_layers":36,"num_attention_heads":32,
            "num_key_value_heads":8,"head_dim":128,"intermediate_size":9728,"rope_theta":5e6,
            "rms_norm_eps":1e-6,"vocab_size":151936}}"#;
        let cfg = ModelConfig::from_json(Path::new("config.json"), text).unwrap();
        assert_eq!(cfg.text_config.gqa_groups(), 4);
        assert_eq!(cfg.text_config.q_dim(), 4096);
        assert_eq!(cfg.text_config.kv_dim(), 1024);
        assert_eq!(cfg.vision_config.head_dim(), 64);
        assert_eq!(cfg.vision_config.rotary_freqs(), 16);
        assert_eq!(cfg.vision_config.rope_inv_freq().len(), 16);
        assert_eq!(cfg.vision_config.rope_theta(), 10000.0);
        assert_eq!(cfg.vision_config.merger_hidden(), 4096);
        // A 1008x728 page: grid (1, 72, 52) -> 936 LLM tokens.
        assert_eq!(cfg.tokens_per_image([1, 72, 52]), 936);
    }

    #[test]
    fn unknown_keys_are_tolerated() {
        let mut v: serde_json::Value = serde_json::from_str(&golden_config_text()).unwrap();
        v["some_future_key"] = serde_json::json!({"nested": [1, 2, 3]});
        v["text_config"]["another_unknown"] = serde_json::json!("x");
        ModelConfig::from_json(Path::new("config.json"), &v.to_string()).unwrap();
    }

    #[test]
    fn missing_key_names_file_and_key() {
        let mut v: serde_json::Value = serde_json::from_str(&golden_config_text()).unwrap();
        v["text_config"]
            .as_object_mut()
            .unwrap()
            .remove("num_key_value_heads");
        let err = ModelConfig::from_json(Path::new("ckpt/config.json"), &v.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ckpt/config.json"), "{err}");
        assert!(err.contains("text_config"), "{err}");
        assert!(err.contains("num_key_value_heads"), "{err}");
    }

    #[test]
    fn wrong_type_names_file_and_key() {
        let mut v: serde_json::Value = serde_json::from_str(&golden_config_text()).unwrap();
        v["vision_config"]["depth"] = serde_json::json!("two");
        let err = ModelConfig::from_json(Path::new("config.json"), &v.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(err.contains("vision_config.depth"), "{err}");
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn inconsistent_numbers_are_rejected() {
        let mut v: serde_json::Value = serde_json::from_str(&golden_config_text()).unwrap();
        v["text_config"]["num_key_value_heads"] = serde_json::json!(3);
        let err = ModelConfig::from_json(Path::new("config.json"), &v.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("num_key_value_heads"), "{err}");

        let mut v: serde_json::Value = serde_json::from_str(&golden_config_text()).unwrap();
        v["model_type"] = serde_json::json!("llama");
        assert!(ModelConfig::from_json(Path::new("config.json"), &v.to_string()).is_err());
    }

    #[test]
    fn preprocessor_must_cut_the_models_patches() {
        let cfg = ModelConfig::from_json(Path::new("config.json"), &golden_config_text()).unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/golden/one-image/checkpoint/preprocessor_config.json");
        let mut pre = PreprocessorConfig::from_file(&path).unwrap();
        cfg.check_preprocessor(&pre).unwrap();
        pre.merge_size = 3;
        let err = cfg.check_preprocessor(&pre).unwrap_err();
        assert!(err.contains("merge_size is 3"), "{err}");
        pre.merge_size = cfg.vision_config.spatial_merge_size;
        pre.patch_size = 16;
        let err = cfg.check_preprocessor(&pre).unwrap_err();
        assert!(err.contains("patch_size is 16"), "{err}");
    }

    #[test]
    fn preprocessor_config_falls_back_on_size() {
        let text = r#"{"patch_size":14,"merge_size":2,"image_mean":[0.5,0.5,0.5],
            "image_std":[0.5,0.5,0.5],"size":{"shortest_edge":3136,"longest_edge":12845056}}"#;
        let cfg = PreprocessorConfig::from_json(Path::new("p.json"), text).unwrap();
        assert_eq!(cfg.min_pixels(), Some(3136));
        assert_eq!(cfg.max_pixels(), Some(12845056));
        assert_eq!(cfg.factor(), 28);
        // 12845056 / 14² = 65536 patches exactly; 2560000 / 14² = 13061.2, down to 13060.
        assert_eq!(cfg.max_patches(), Some(65536));
        let mut smaller = cfg.clone();
        smaller.max_pixels = Some(2_560_000);
        assert_eq!(smaller.max_patches(), Some(13060));

        let err = PreprocessorConfig::from_json(
            Path::new("p.json"),
            r#"{"patch_size":14,"merge_size":2,"image_mean":[0.5,0.5],"image_std":[0.5,0.5,0.5],"min_pixels":1,"max_pixels":2}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("image_mean"), "{err}");
    }

    /// Found by the configs and manifest fuzz targets: numbers a reader accepted but no
    /// JSON writer can write back (f32 infinities) or no derived size can hold.
    #[test]
    fn out_of_range_numbers_are_refused_with_their_key() {
        let refused = |v: &serde_json::Value| {
            ModelConfig::from_json(Path::new("config.json"), &v.to_string())
                .unwrap_err()
                .to_string()
        };
        let mut v: serde_json::Value = serde_json::from_str(&golden_config_text()).unwrap();
        v["text_config"]["vocab_size"] = serde_json::json!(1u64 << 40);
        assert!(
            refused(&v).contains("text_config.vocab_size"),
            "{}",
            refused(&v)
        );
        let mut v: serde_json::Value = serde_json::from_str(&golden_config_text()).unwrap();
        v["vision_config"]["patch_size"] = serde_json::json!(1u64 << 33);
        assert!(
            refused(&v).contains("vision_config.patch_size"),
            "{}",
            refused(&v)
        );
        let mut v: serde_json::Value = serde_json::from_str(&golden_config_text()).unwrap();
        v["text_config"]["rope_theta"] = serde_json::json!(-1.0);
        assert!(refused(&v).contains("rope_theta"), "{}", refused(&v));

        let pre = r#"{"patch_size":14,"merge_size":2,"image_mean":[0.5,0.5,0.5],
            "image_std":[1e39,0.5,0.5],"min_pixels":1,"max_pixels":2}"#;
        let err = PreprocessorConfig::from_json(Path::new("p.json"), pre)
            .unwrap_err()
            .to_string();
        // Refused by the parser (float_roundtrip parses f32 exactly and refuses overflow);
        // `validate` refuses an infinity that arrives any other way.
        assert!(err.contains("p.json") && err.contains("image_std"), "{err}");
        let mut inf =
            PreprocessorConfig::from_json(Path::new("p.json"), &pre.replace("1e39", "0.5"))
                .unwrap();
        inf.image_std[0] = f32::INFINITY;
        assert!(inf.validate().unwrap_err().contains("finite"));
        let err = GenerationConfig::from_json(Path::new("g.json"), r#"{"temperature":1e39}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("g.json") && err.contains("temperature"),
            "{err}"
        );
        assert!(GenerationConfig::from_json(Path::new("g.json"), r#"{"top_p":0.9}"#).is_ok());
    }

    #[test]
    fn generation_config_eos_one_or_many() {
        let g: GenerationConfig =
            parse_json(Path::new("g.json"), r#"{"eos_token_id":[1,2],"top_k":5}"#).unwrap();
        assert_eq!(g.eos_token_id.unwrap().to_vec(), vec![1, 2]);
        let g: GenerationConfig = parse_json(Path::new("g.json"), r#"{"eos_token_id":7}"#).unwrap();
        assert_eq!(g.eos_token_id.unwrap().to_vec(), vec![7]);
    }
}
