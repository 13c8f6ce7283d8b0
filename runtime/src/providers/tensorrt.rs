//! TensorRT: its settings, the optimization profiles of the bundle's dynamic dimensions, and
//! the provider's option strings.
//!
//! TensorRT builds an engine for a range of input shapes given up front (min / opt / max per
//! dynamic dimension) and fails on a call outside it, so the ranges are derived here from the
//! manifest (patches per image from the preprocessor, sequence and past from the context
//! length) and the settings ([`shape_limits`]), then written as ONNX Runtime's
//! `trt_profile_{min,opt,max}_shapes` strings ([`profile_shapes`]) among the other
//! `trt_*` options ([`tensorrt_options`]).

use std::path::{Path, PathBuf};

use ove_core::graph_io as io;
use ove_core::manifest::Manifest;

use super::{Graph, ProviderSettings};
use crate::read::{MAX_LINE_BATCH, MAX_LINE_PATCHES};

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
    /// keyed by bundle digest, TensorRT version and device
    /// ([`trt_cache_dir`](super::trt_cache_dir)).
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
    /// Sequences per decoder call the profile allows (a batched decoder graph). Default 1:
    /// TensorRT sizes its memory for the largest shape of the profile, and the attention of
    /// B rows of a whole prompt is B times one row's; raise it for batched reading of short
    /// line prompts. The runtime decodes larger batches in groups of this many.
    pub max_decoder_rows: usize,
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
            max_decoder_rows: 1,
        }
    }
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

/// The profile ranges for a bundle: max patches from the preprocessor
/// ([`ove_core::config::PreprocessorConfig::max_patches`]), a setting's rounded down to the
/// merge unit; sequence and past bounded by the context length.
pub fn shape_limits(m: &Manifest, s: &ProviderSettings) -> ShapeLimits {
    let v = &m.model.vision_config;
    let unit = v.merge_unit().max(1);
    let from_pixels = m.preprocessor.max_patches().unwrap_or(unit);
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
        Graph::Lines => {
            // Up to a page's worth of lines a call, each as long as one image may be.
            let b = [1, MAX_LINE_BATCH.div_ceil(2), MAX_LINE_BATCH][i];
            let longest = l.patches[2].min(MAX_LINE_PATCHES);
            let p = [l.patches[0], 256.min(longest), longest][i];
            fmt(vec![
                (io::PIXEL_VALUES.into(), vec![b, p, v.patch_dim()]),
                (io::PATCH_POS.into(), vec![b, p, 2]),
                (io::KEY_BIAS.into(), vec![b, p + 1]),
            ])
        }
        Graph::Decoder => {
            let (sq, k) = (l.seq[i], l.past[i]);
            // attention_bias is [S, K+S]; its second dim never exceeds the context.
            let total = (k + sq).min(effective_max_context(m, s)).max(1);
            // A batched graph leads with B (at most max_decoder_rows; tuned for one).
            let rows = [1, 1, s.tensorrt.max_decoder_rows.max(1)][i];
            let lead = |mut d: Vec<usize>| {
                if m.graphs.decoder_batch {
                    d.insert(0, rows);
                }
                d
            };
            let mut parts = vec![
                (
                    io::INPUTS_EMBEDS.to_string(),
                    vec![sq * rows, t.hidden_size],
                ),
                (io::POSITION_IDS.into(), lead(vec![sq])),
                (io::ATTENTION_BIAS.into(), lead(vec![sq, total])),
                (io::LOGITS_INDEX.into(), vec![sq * rows]),
            ];
            let (kvh, hd) = (t.num_key_value_heads, t.head_dim());
            for layer in 0..t.num_hidden_layers {
                parts.push((io::past_key(layer), lead(vec![kvh, k, hd])));
                parts.push((io::past_value(layer), lead(vec![kvh, k, hd])));
            }
            fmt(parts)
        }
    })
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

#[cfg(test)]
mod tests {
    use super::super::tests::{all, auto, manifest};
    use super::super::{plan, trt_cache_dir, DeviceInfo, Provider};
    use super::*;

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

        // A line batch: 1..16 lines, each at most MAX_LINE_PATCHES patches long.
        let [min, opt, max] = profile_shapes(&m, &s, Graph::Lines);
        assert_eq!(min, "pixel_values:1x4x588,patch_pos:1x4x2,key_bias:1x5");
        assert_eq!(
            opt,
            "pixel_values:8x256x588,patch_pos:8x256x2,key_bias:8x257"
        );
        assert_eq!(
            max,
            format!(
                "pixel_values:16x{p}x588,patch_pos:16x{p}x2,key_bias:16x{}",
                MAX_LINE_PATCHES + 1,
                p = MAX_LINE_PATCHES
            )
        );

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
    fn a_batched_decoder_profile_leads_with_the_row_bound() {
        let mut m = manifest();
        m.graphs.decoder_batch = true;
        let t = &m.model.text_config;
        let (h, kvh, hd) = (t.hidden_size, t.num_key_value_heads, t.head_dim());
        let mut s = auto();
        let [min, _, max] = profile_shapes(&m, &s, Graph::Decoder);
        assert!(
            min.starts_with(&format!(
                "inputs_embeds:1x{h},position_ids:1x1,attention_bias:1x1x1,logits_index:1,\
                 past_key.0:1x{kvh}x0x{hd}"
            )),
            "{min}"
        );
        assert!(
            max.starts_with(&format!("inputs_embeds:4096x{h},")),
            "{max}"
        );
        s.tensorrt.max_decoder_rows = 4;
        let [_, opt, max] = profile_shapes(&m, &s, Graph::Decoder);
        assert!(opt.starts_with(&format!("inputs_embeds:1x{h},")), "{opt}");
        assert!(
            max.starts_with(&format!(
                "inputs_embeds:16384x{h},position_ids:4x4096,attention_bias:4x4096x4096,\
                 logits_index:16384,past_key.0:4x{kvh}x4095x{hd}"
            )),
            "{max}"
        );
    }

    #[test]
    fn the_options_point_both_caches_at_the_keyed_directory() {
        let m = manifest();
        let digest = m.bundle_digest();
        let dev = DeviceInfo {
            tensorrt_version: Some("10.3.0".into()),
            device_name: Some("NVIDIA Jetson Orin Nano Developer Kit".into()),
        };
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
}
