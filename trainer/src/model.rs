//! The whole LLaVA-OneVision-1.5 model: RICE-ViT -> merger -> Qwen3, with the merged image
//! embeddings scattered into the `<|image_pad|>` positions of the prompt, in order.

use anyhow::{bail, ensure, Context, Result};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use ove_core::config::ModelConfig;

use crate::decoder::{AttentionMask, KvCache, Qwen3};
use crate::merger::Merger;
use crate::vision::RiceVit;

/// Pixels of the images of one batch, in the order their image pads appear.
#[derive(Debug)]
pub struct Images<'a> {
    /// `[P, C*T*p*p]` pre-cut patches of all images.
    pub pixel_values: &'a Tensor,
    /// `(t, h, w)` patch grid of each image.
    pub grids: &'a [[usize; 3]],
    /// Images per prompt when a packed batch holds several prompts (see
    /// [`RiceVit::forward_grouped`]); `None`: all images belong to one prompt.
    pub group_sizes: Option<&'a [usize]>,
}

impl<'a> Images<'a> {
    /// The images of one prompt.
    pub fn new(pixel_values: &'a Tensor, grids: &'a [[usize; 3]]) -> Self {
        Self {
            pixel_values,
            grids,
            group_sizes: None,
        }
    }
}

/// A greedy continuation.
#[derive(Debug, Default, Clone)]
pub struct Greedy {
    pub ids: Vec<i64>,
    /// Top-1 minus top-2 logit at each step (how firmly each token won).
    pub margins: Vec<f32>,
}

/// What the vision side produces for a set of images.
#[derive(Debug)]
pub struct VisionOutput {
    /// `[P, D]` RICE-ViT output per patch (class tokens removed), before the merger.
    pub vision_tokens: Tensor,
    /// `[P/4, H]` merger output: the rows that replace the image pads.
    pub image_embeds: Tensor,
}

#[derive(Debug)]
pub struct LlavaOneVision {
    pub config: ModelConfig,
    /// `visual.*` (patch embedding, class token, blocks).
    pub visual: RiceVit,
    /// `visual.merger.*`.
    pub merger: Merger,
    /// `model.*` and `lm_head`.
    pub decoder: Qwen3,
}

impl LlavaOneVision {
    /// Creates every parameter under `root`, named exactly as the Hugging Face checkpoint.
    pub fn new(root: &nn::Path, config: &ModelConfig) -> Result<Self> {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("config.json: {e}"))?;
        let visual_vs = root / "visual";
        Ok(Self {
            config: config.clone(),
            visual: RiceVit::new(visual_vs.clone(), &config.vision_config)
                .context("building the vision encoder")?,
            merger: Merger::new(&visual_vs / "merger", &config.vision_config),
            decoder: Qwen3::new(root / "model", root / "lm_head", &config.text_config)
                .context("building the decoder")?,
        })
    }

    pub fn device(&self) -> Device {
        self.decoder.embed_tokens.device()
    }

    /// Runs the vision encoder and the merger.
    pub fn encode_images(&self, images: &Images) -> Result<VisionOutput> {
        let vision_tokens = match images.group_sizes {
            None => self.visual.forward(images.pixel_values, images.grids)?,
            Some(groups) => {
                self.visual
                    .forward_grouped(images.pixel_values, images.grids, groups)?
            }
        };
        let image_embeds = self.merger.forward(&vision_tokens);
        Ok(VisionOutput {
            vision_tokens,
            image_embeds,
        })
    }

    /// Input embeddings `[B, T, H]` for ids `[B, T]`, the image pads (in row-major order over
    /// the batch) replaced by the rows of `image_embeds` `[K, H]`.
    pub fn embed(&self, input_ids: &Tensor, image_embeds: Option<&Tensor>) -> Result<Tensor> {
        let embeds = self.decoder.embed(input_ids);
        let (b, t, h) = embeds.size3()?;
        let flat_ids = input_ids.reshape([-1]);
        let pads = flat_ids
            .eq(self.config.image_token_id)
            .nonzero()
            .squeeze_dim(1);
        let n_pads = pads.size()[0];
        match image_embeds {
            None if n_pads == 0 => Ok(embeds),
            None => bail!(
                "the prompt has {n_pads} image pad tokens (id {}) but no image was given",
                self.config.image_token_id
            ),
            Some(img) => {
                let rows = img.size();
                ensure!(
                    rows.len() == 2 && rows[0] == n_pads && rows[1] == h,
                    "the images give {rows:?} embeddings, the prompt has {n_pads} image pad tokens \
                     (id {}) of width {h}",
                    self.config.image_token_id
                );
                let flat = embeds.reshape([b * t, h]);
                let flat = flat.index_put(&[Some(pads)], &img.to_kind(flat.kind()), false);
                Ok(flat.reshape([b, t, h]))
            }
        }
    }

    /// Logits `[B, T, V]` for every position of `input_ids` `[B, T]` (one forward, no cache).
    /// `positions` default to `0..T` per row.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        images: Option<&Images>,
        positions: Option<&Tensor>,
        mask: &AttentionMask,
    ) -> Result<Tensor> {
        let image_embeds = images
            .map(|im| self.encode_images(im).map(|o| o.image_embeds))
            .transpose()?;
        self.forward_with_image_embeds(input_ids, image_embeds.as_ref(), positions, mask)
    }

    /// As [`Self::forward`], with the image embeddings already computed.
    pub fn forward_with_image_embeds(
        &self,
        input_ids: &Tensor,
        image_embeds: Option<&Tensor>,
        positions: Option<&Tensor>,
        mask: &AttentionMask,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, image_embeds, positions, mask, None)?;
        Ok(self.decoder.logits(&hidden))
    }

    /// Final hidden states `[B, T, H]` (before the LM head).
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        image_embeds: Option<&Tensor>,
        positions: Option<&Tensor>,
        mask: &AttentionMask,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.size2().context("input_ids must be [B, T]")?;
        let embeds = self.embed(input_ids, image_embeds)?;
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        let default_positions;
        let positions = match positions {
            Some(p) => p,
            None => {
                default_positions = (Tensor::arange(t, (Kind::Int64, self.device())) + past)
                    .unsqueeze(0)
                    .expand([b, t], false);
                &default_positions
            }
        };
        self.decoder.forward_embeds(&embeds, positions, mask, cache)
    }

    /// Greedy continuation of one prompt with a KV cache: `max_new_tokens` ids, no stop token.
    pub fn generate_greedy(
        &self,
        input_ids: &[i64],
        image_embeds: Option<&Tensor>,
        max_new_tokens: usize,
    ) -> Result<Greedy> {
        ensure!(!input_ids.is_empty(), "empty prompt");
        let _guard = tch::no_grad_guard();
        let mut cache = KvCache::new(self.decoder.layers.len());
        let prompt = Tensor::from_slice(input_ids)
            .to_device(self.device())
            .unsqueeze(0);
        let mut hidden = self.hidden_states(
            &prompt,
            image_embeds,
            None,
            &AttentionMask::Causal,
            Some(&mut cache),
        )?;
        let mut out = Greedy::default();
        while out.ids.len() < max_new_tokens {
            let logits = self.decoder.logits(&hidden.select(1, -1)).select(0, 0);
            let next = logits.argmax(-1, false).int64_value(&[]);
            let (top, _) = logits.topk(2.min(logits.size()[0]), -1, true, true);
            let top: Vec<f32> = Vec::try_from(top.to_kind(Kind::Float))?;
            out.margins
                .push(top[0] - top.get(1).copied().unwrap_or(f32::NEG_INFINITY));
            out.ids.push(next);
            if out.ids.len() == max_new_tokens {
                break;
            }
            let step = Tensor::from_slice(&[next])
                .to_device(self.device())
                .unsqueeze(0);
            // Generated tokens are plain text: no image scatter.
            let embeds = self.decoder.embed(&step);
            let pos = Tensor::from_slice(&[cache.seq_len()])
                .to_device(self.device())
                .unsqueeze(0);
            hidden = self.decoder.forward_embeds(
                &embeds,
                &pos,
                &AttentionMask::Causal,
                Some(&mut cache),
            )?;
        }
        Ok(out)
    }
}
