//! The bundle's `generation_config.json` as the defaults of generation, and the
//! overrides a caller (a command-line flag, a request field) puts over them.
//!
//! A fine-tuned checkpoint says how it wants to be decoded; the runtime follows it unless
//! told otherwise, as transformers' `generate` does. The rules are transformers':
//! `do_sample` absent or false means greedy decoding whatever `temperature` says; with
//! `do_sample` the sampler takes `temperature` (default 1), `top_k` (default 50) and
//! `top_p` (default 1). The end-of-generation ids are already in the manifest's tokens
//! ([`ove_core::prompt::resolve_token_ids`]), not here.

use ove_core::config::GenerationConfig;

use crate::generate::{GenerateOptions, DEFAULT_PREFILL_CHUNK};
use crate::sampling::SamplingOptions;

/// `max_new_tokens` when neither generation_config.json nor the caller gives one.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 1024;

/// transformers' defaults for a sampling checkpoint that leaves a key out.
const HF_TEMPERATURE: f32 = 1.0;
const HF_TOP_K: usize = 50;

/// What a caller sets explicitly; `None` leaves the checkpoint's value (or the default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerateOverrides {
    pub max_new_tokens: Option<usize>,
    /// 0 is greedy; any other value samples, whatever `do_sample` says.
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
    /// Keep generating past the end-of-turn ids.
    pub ignore_eos: bool,
    /// Prompt tokens per decoder call; `Some(0)` runs the prompt at once.
    pub prefill_chunk: Option<usize>,
}

impl GenerateOverrides {
    /// The options in force: each override, else the checkpoint's value, else the default.
    pub fn resolve(&self, gen: &GenerationConfig) -> GenerateOptions {
        let samples = gen.do_sample == Some(true);
        let from_config = |v: Option<f32>, hf: f32| if samples { v.unwrap_or(hf) } else { 0.0 };
        let temperature = self
            .temperature
            .unwrap_or_else(|| from_config(gen.temperature, HF_TEMPERATURE));
        let prefill_chunk = self.prefill_chunk.unwrap_or(DEFAULT_PREFILL_CHUNK);
        GenerateOptions {
            max_new_tokens: self
                .max_new_tokens
                .or(gen.max_new_tokens)
                .unwrap_or(DEFAULT_MAX_NEW_TOKENS),
            sampling: SamplingOptions {
                temperature,
                top_k: self
                    .top_k
                    .or(gen.top_k)
                    .unwrap_or(if samples { HF_TOP_K } else { 0 }),
                top_p: self.top_p.or(gen.top_p).unwrap_or(1.0),
                seed: self.seed,
                repetition_penalty: self
                    .repetition_penalty
                    .or(gen.repetition_penalty)
                    .unwrap_or(1.0),
            },
            stop_at_eos: !self.ignore_eos,
            prefill_chunk: (prefill_chunk > 0).then_some(prefill_chunk),
        }
    }

    /// Refuses override values that have no meaning, before a model is loaded.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.resolve(&GenerationConfig::default())
            .sampling
            .validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling_config() -> GenerationConfig {
        GenerationConfig {
            do_sample: Some(true),
            temperature: Some(0.7),
            top_p: Some(0.8),
            repetition_penalty: Some(1.05),
            max_new_tokens: Some(300),
            ..GenerationConfig::default()
        }
    }

    #[test]
    fn the_checkpoint_decides_when_nothing_is_overridden() {
        let o = GenerateOverrides::default().resolve(&sampling_config());
        assert_eq!(o.max_new_tokens, 300);
        assert_eq!(o.sampling.temperature, 0.7);
        assert_eq!(o.sampling.top_k, HF_TOP_K, "transformers' default top_k");
        assert_eq!(o.sampling.top_p, 0.8);
        assert_eq!(o.sampling.repetition_penalty, 1.05);
        assert!(o.stop_at_eos);
    }

    #[test]
    fn without_do_sample_decoding_is_greedy() {
        let gen = GenerationConfig {
            do_sample: None,
            ..sampling_config()
        };
        let o = GenerateOverrides::default().resolve(&gen);
        assert!(o.sampling.is_greedy());
        // The penalty is not part of sampling: it holds for greedy decoding too.
        assert_eq!(o.sampling.repetition_penalty, 1.05);
        let empty = GenerateOverrides::default().resolve(&GenerationConfig::default());
        assert!(empty.sampling.is_greedy());
        assert_eq!(empty.max_new_tokens, DEFAULT_MAX_NEW_TOKENS);
        assert_eq!(empty.sampling.repetition_penalty, 1.0);
    }

    #[test]
    fn overrides_win() {
        let o = GenerateOverrides {
            max_new_tokens: Some(5),
            temperature: Some(0.0),
            top_p: Some(1.0),
            repetition_penalty: Some(1.0),
            ignore_eos: true,
            prefill_chunk: Some(0),
            ..GenerateOverrides::default()
        }
        .resolve(&sampling_config());
        assert_eq!(o.max_new_tokens, 5);
        assert!(o.sampling.is_greedy());
        assert_eq!(o.sampling.top_p, 1.0);
        assert_eq!(o.sampling.repetition_penalty, 1.0);
        assert!(!o.stop_at_eos);
        assert_eq!(o.prefill_chunk, None);
        // A temperature samples even when the checkpoint is greedy.
        let t = GenerateOverrides {
            temperature: Some(0.5),
            ..GenerateOverrides::default()
        }
        .resolve(&GenerationConfig::default());
        assert!(!t.sampling.is_greedy());
    }

    #[test]
    fn meaningless_overrides_are_refused() {
        for bad in [
            GenerateOverrides {
                temperature: Some(-1.0),
                ..Default::default()
            },
            GenerateOverrides {
                top_p: Some(1.5),
                ..Default::default()
            },
            GenerateOverrides {
                repetition_penalty: Some(0.0),
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(GenerateOverrides::default().validate().is_ok());
    }
}
