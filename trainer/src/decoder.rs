//! The Qwen3 language model: `model.embed_tokens`, `model.layers.{l}.*`, `model.norm`, `lm_head`.
//!
//! Per layer: RMSNorm -> attention (q/k/v projections, RMSNorm over head_dim on q and k,
//! 1-D RoPE, grouped-query attention, o_proj) -> residual; RMSNorm -> SwiGLU MLP -> residual.
//! Attention is causal; a packed sequence additionally cuts it at sample boundaries.
//! An optional [`KvCache`] makes step-by-step generation cheap.

use anyhow::{bail, ensure, Result};
use tch::nn::{self, Init, Module};
use tch::{Device, Kind, Tensor};

use ove_core::config::TextConfig;

use crate::layers::{activation, apply_rotary, linear_fused, Linear, RmsNorm, INIT_STD};
use crate::train::loss::backward_from;

/// How a packed row's block-diagonal causal attention is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PackedAttention {
    /// Varlen flash attention on CUDA in bf16/f16, a mask elsewhere.
    #[default]
    Auto,
    /// A boolean `[B, 1, T, T]` mask through scaled_dot_product_attention (any device).
    Mask,
    /// `aten::_flash_attention_forward` over the samples (`cu_seqlens`, `[T, H, D]`,
    /// grouped-query heads as they are): no mask, no attention across samples is computed
    /// at all. CUDA and bf16/f16 only; an error elsewhere.
    Flash,
}

/// How the decoder runs a training step: the same result, other speed and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecoderExec {
    pub packed_attention: PackedAttention,
    /// Activation checkpointing: the forward keeps only each layer's input, and the
    /// backward runs each layer again with autograd ([`Qwen3::forward_checkpointed`]).
    /// One layer's activations live at a time, for about a third more compute.
    pub checkpoint_layers: bool,
    /// q/k/v and gate/up each as one GEMM (their weights stacked a forward, still separate
    /// parameters under their checkpoint names): fewer, larger kernels on a GPU.
    pub fuse_projections: bool,
    /// The LM head and cross-entropy over at most this many target rows at a time, each
    /// chunk's backward run at once ([`crate::train::loss::head_loss_backward`]); `None`
    /// sizes chunks to about 1 GiB of f32 logits.
    pub loss_chunk_rows: Option<i64>,
}

/// Which positions a token may attend to (always only earlier or equal positions).
#[derive(Debug)]
pub enum AttentionMask {
    /// Plain causal attention over the whole row (and everything in the KV cache).
    Causal,
    /// A packed row: `[B, T]` sample ids; a token attends only to earlier tokens of its own
    /// sample (a block-diagonal causal mask). Not usable with a KV cache.
    Packed(Tensor),
}

/// The mask as one attention call takes it.
struct MaskSpec {
    /// Boolean `[B or 1, 1, T, S]`, true = may attend.
    mask: Option<Tensor>,
    /// Let SDPA apply the (top-left aligned) causal mask itself; only when T == S.
    is_causal: bool,
    /// Packed rows as varlen flash attention takes them, instead of a mask.
    varlen: Option<Varlen>,
    /// q/k/v and gate/up each as one GEMM ([`DecoderExec::fuse_projections`]); carried
    /// here because every layer's forward takes this spec.
    fuse_projections: bool,
}

/// The samples of packed rows, laid end to end over all rows: `cu_seqlens` (int32,
/// `[samples + 1]`, starting at 0) and the longest sample.
#[derive(Debug)]
pub struct Varlen {
    pub cu_seqlens: Tensor,
    pub max_len: i64,
}

impl Varlen {
    /// From `[B, T]` sample ids (a sample is a run of equal ids within a row; rows never
    /// share a sample).
    pub fn from_sample_ids(ids: &Tensor) -> Result<Self> {
        let (b, t) = ids.size2()?;
        ensure!(b > 0 && t > 0, "packed sample ids of shape [{b}, {t}]");
        let device = ids.device();
        let change = ids.narrow(1, 1, t - 1).ne_tensor(&ids.narrow(1, 0, t - 1));
        let first = Tensor::ones([b, 1], (Kind::Bool, device));
        let starts = Tensor::cat(&[first, change], 1).reshape([-1]).nonzero();
        let end = Tensor::from_slice(&[b * t]).to_device(device);
        let cu = Tensor::cat(&[starts.reshape([-1]), end], 0);
        let lens = cu.narrow(0, 1, cu.size()[0] - 1) - cu.narrow(0, 0, cu.size()[0] - 1);
        Ok(Self {
            max_len: lens.max().int64_value(&[]),
            cu_seqlens: cu.to_kind(Kind::Int),
        })
    }
}

impl AttentionMask {
    fn spec(&self, t: i64, past: i64, embeds: &Tensor, exec: &DecoderExec) -> Result<MaskSpec> {
        let device = embeds.device();
        let packed = exec.packed_attention;
        let fuse_projections = exec.fuse_projections;
        let plain = |mask: Option<Tensor>, is_causal: bool| MaskSpec {
            mask,
            is_causal,
            varlen: None,
            fuse_projections,
        };
        match self {
            AttentionMask::Causal if t == 1 => Ok(plain(None, false)),
            AttentionMask::Causal if past == 0 => Ok(plain(None, true)),
            AttentionMask::Causal => {
                // Query i sits at absolute position past + i and sees keys 0..=past + i.
                let q = Tensor::arange(t, (Kind::Int64, device)).unsqueeze(1) + past;
                let k = Tensor::arange(past + t, (Kind::Int64, device)).unsqueeze(0);
                Ok(plain(
                    Some(k.le_tensor(&q).view([1, 1, t, past + t])),
                    false,
                ))
            }
            AttentionMask::Packed(ids) => {
                if past != 0 {
                    bail!("a packed attention mask cannot be combined with a KV cache");
                }
                let (b, len) = ids.size2()?;
                if len != t {
                    bail!("packed sample ids have length {len}, the sequence has {t}");
                }
                let ids = ids.to_device(device);
                let flash_capable =
                    device.is_cuda() && matches!(embeds.kind(), Kind::BFloat16 | Kind::Half);
                let flash = match packed {
                    PackedAttention::Auto => flash_capable,
                    PackedAttention::Mask => false,
                    PackedAttention::Flash => {
                        ensure!(
                            flash_capable,
                            "varlen flash attention needs CUDA and bf16/f16, not {device:?} \
                             and {:?} (use the mask)",
                            embeds.kind()
                        );
                        true
                    }
                };
                if flash {
                    return Ok(MaskSpec {
                        mask: None,
                        is_causal: true,
                        varlen: Some(Varlen::from_sample_ids(&ids)?),
                        fuse_projections,
                    });
                }
                let same = ids.unsqueeze(2).eq_tensor(&ids.unsqueeze(1));
                let causal = Tensor::ones([t, t], (Kind::Bool, device)).tril(0);
                Ok(plain(
                    Some(same.logical_and(&causal).view([b, 1, t, t])),
                    false,
                ))
            }
        }
    }
}

/// Keys and values of every layer for the tokens seen so far: `[B, kv_heads, S, head_dim]`
/// each, after RoPE and before the GQA repeat.
#[derive(Debug, Default)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: (0..num_layers).map(|_| None).collect(),
        }
    }

    /// Number of cached positions.
    pub fn seq_len(&self) -> i64 {
        match self.layers.first() {
            Some(Some((k, _))) => k.size()[2],
            _ => 0,
        }
    }
}

/// What [`Qwen3::forward_checkpointed`] keeps for the backward: each layer's input (no
/// graph), the leaf the hidden states hang off, and the rotary tables and mask.
pub struct Checkpointed {
    inputs: Vec<Tensor>,
    last: Tensor,
    cos: Tensor,
    sin: Tensor,
    spec: MaskSpec,
}

impl Checkpointed {
    /// After the hidden states' backward (which left a gradient on the last layer's
    /// output): each layer, last first, runs again with autograd from its kept input and
    /// backpropagates the gradient of its output, which accumulates into its parameters
    /// and gives the gradient of its input; the first layer's goes into `embeds`' graph
    /// (the embedding table, the vision tower). The same gradients as one backward through
    /// the whole graph: each layer computes exactly what it computed in the forward.
    pub fn backward(self, decoder: &Qwen3, embeds: &Tensor) -> Result<()> {
        if !self.last.requires_grad() {
            return Ok(()); // nothing trained below the final norm
        }
        let mut grad = self.last.grad();
        ensure!(
            grad.defined(),
            "checkpointed backward: the hidden states' backward did not reach the layers"
        );
        for (layer, input) in decoder.layers.iter().zip(&self.inputs).rev() {
            let x = input.detach().set_requires_grad(true);
            let y = layer.forward(&x, &self.cos, &self.sin, &self.spec, None)?;
            backward_from(&y, &grad)?;
            grad = x.grad();
        }
        if embeds.requires_grad() {
            backward_from(embeds, &grad)?;
        }
        Ok(())
    }
}

/// 1-D rotary embedding over absolute positions (f32).
#[derive(Debug)]
pub struct Rope {
    /// `[head_dim/2]` = `1 / theta^(arange(0, head_dim, 2) / head_dim)`.
    inv_freq: Tensor,
}

impl Rope {
    pub fn new(cfg: &TextConfig, device: Device) -> Self {
        // The one definition of the frequencies (ove-core), as the exporter uses.
        Self {
            inv_freq: Tensor::from_slice(&cfg.rope_inv_freq()).to_device(device),
        }
    }

    /// `positions` `[B, T]` -> `(cos, sin)` `[B, 1, T, head_dim]` in f32.
    pub fn cos_sin(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos(), emb.sin())
    }
}

/// `model.layers.{l}.self_attn`.
#[derive(Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: RmsNorm,
    pub k_norm: RmsNorm,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    pub fn new(vs: nn::Path, cfg: &TextConfig) -> Self {
        let (h, bias) = (cfg.hidden_size, cfg.attention_bias);
        Self {
            q_proj: Linear::new(&vs / "q_proj", h, cfg.q_dim(), bias),
            k_proj: Linear::new(&vs / "k_proj", h, cfg.kv_dim(), bias),
            v_proj: Linear::new(&vs / "v_proj", h, cfg.kv_dim(), bias),
            o_proj: Linear::new(&vs / "o_proj", cfg.q_dim(), h, false),
            q_norm: RmsNorm::new(&vs / "q_norm", cfg.head_dim(), cfg.rms_norm_eps),
            k_norm: RmsNorm::new(&vs / "k_norm", cfg.head_dim(), cfg.rms_norm_eps),
            num_heads: cfg.num_attention_heads as i64,
            num_kv_heads: cfg.num_key_value_heads as i64,
            head_dim: cfg.head_dim() as i64,
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &MaskSpec,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.size3()?;
        let hd = self.head_dim;
        // Project (one GEMM when fused), split into heads, RMSNorm q and k over head_dim,
        // then RoPE.
        let [q, k, v] = if mask.fuse_projections {
            linear_fused(x, [&self.q_proj, &self.k_proj, &self.v_proj])
        } else {
            [&self.q_proj, &self.k_proj, &self.v_proj].map(|l| l.forward(x))
        };
        let q = self.q_norm.forward(&q.view([b, t, self.num_heads, hd]));
        let k = self.k_norm.forward(&k.view([b, t, self.num_kv_heads, hd]));
        let v = v.view([b, t, self.num_kv_heads, hd]).transpose(1, 2);
        let q = apply_rotary(&q.transpose(1, 2), cos, sin);
        let mut k = apply_rotary(&k.transpose(1, 2), cos, sin);
        let mut v = v;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2);
                v = Tensor::cat(&[pv, &v], 2);
            }
            *slot = Some((k.shallow_clone(), v.shallow_clone()));
        }
        if let Some(varlen) = &mask.varlen {
            // [B, H, T, D] -> [B * T, H, D]: the samples end to end; flash attention reads
            // grouped-query heads as they are.
            let flat = |x: &Tensor, h: i64| x.transpose(1, 2).reshape([b * t, h, hd]);
            let out = crate::train::fused::flash_attention_varlen(
                &flat(&q, self.num_heads),
                &flat(&k, self.num_kv_heads),
                &flat(&v, self.num_kv_heads),
                varlen,
            )?;
            return Ok(self
                .o_proj
                .forward(&out.reshape([b, t, self.num_heads * hd])));
        }
        // Grouped-query attention: query head i reads kv head i / groups.
        let k = repeat_kv(&k, self.num_heads / self.num_kv_heads);
        let v = repeat_kv(&v, self.num_heads / self.num_kv_heads);
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask.mask.as_ref(),
            0.0,
            mask.is_causal,
            None,
            false,
        );
        let out = out.transpose(1, 2).reshape([b, t, self.num_heads * hd]);
        Ok(self.o_proj.forward(&out))
    }
}

/// `[B, kv, S, d]` -> `[B, kv * n, S, d]`, each kv head repeated n times in place.
fn repeat_kv(x: &Tensor, n: i64) -> Tensor {
    if n == 1 {
        return x.shallow_clone();
    }
    let (b, kv, s, d) = x.size4().expect("kv must be [B, kv, S, d]");
    x.unsqueeze(2)
        .expand([b, kv, n, s, d], false)
        .reshape([b, kv * n, s, d])
}

/// `model.layers.{l}.mlp`: `down(silu(gate(x)) * up(x))`.
#[derive(Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    act: fn(&Tensor) -> Tensor,
}

impl Mlp {
    pub fn new(vs: nn::Path, cfg: &TextConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::new(&vs / "gate_proj", h, i, false),
            up_proj: Linear::new(&vs / "up_proj", h, i, false),
            down_proj: Linear::new(&vs / "down_proj", i, h, false),
            act: activation(&cfg.hidden_act)?,
        })
    }

    /// `down(act(gate(x)) * up(x))`, gate and up as one GEMM when `fused`.
    fn forward_with(&self, x: &Tensor, fused: bool) -> Tensor {
        let [gate, up] = if fused {
            linear_fused(x, [&self.gate_proj, &self.up_proj])
        } else {
            [&self.gate_proj, &self.up_proj].map(|l| l.forward(x))
        };
        self.down_proj.forward(&((self.act)(&gate) * up))
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_with(x, false)
    }
}

/// `model.layers.{l}`.
#[derive(Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl DecoderLayer {
    pub fn new(vs: nn::Path, cfg: &TextConfig) -> Result<Self> {
        Ok(Self {
            input_layernorm: RmsNorm::new(
                &vs / "input_layernorm",
                cfg.hidden_size,
                cfg.rms_norm_eps,
            ),
            self_attn: Attention::new(&vs / "self_attn", cfg),
            post_attention_layernorm: RmsNorm::new(
                &vs / "post_attention_layernorm",
                cfg.hidden_size,
                cfg.rms_norm_eps,
            ),
            mlp: Mlp::new(&vs / "mlp", cfg)?,
        })
    }

    /// Whether any of the layer's parameters is trained (requires a gradient).
    fn trains(&self) -> bool {
        let a = &self.self_attn;
        let linears = [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj]
            .into_iter()
            .chain([&self.mlp.gate_proj, &self.mlp.up_proj, &self.mlp.down_proj]);
        let mut tensors = linears.flat_map(|l| std::iter::once(&l.weight).chain(l.bias.as_ref()));
        let norms = [
            &self.input_layernorm,
            &self.post_attention_layernorm,
            &a.q_norm,
            &a.k_norm,
        ];
        tensors.any(Tensor::requires_grad) || norms.iter().any(|n| n.weight.requires_grad())
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &MaskSpec,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let x =
            x + self
                .self_attn
                .forward(&self.input_layernorm.forward(x), cos, sin, mask, cache)?;
        Ok(&x
            + self.mlp.forward_with(
                &self.post_attention_layernorm.forward(&x),
                mask.fuse_projections,
            ))
    }
}

/// The whole decoder: embeddings, layers, final norm and the LM head.
#[derive(Debug)]
pub struct Qwen3 {
    /// `model.embed_tokens.weight` `[V, H]`.
    pub embed_tokens: Tensor,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `lm_head.weight` `[V, H]`; the embedding table itself when the config ties them.
    pub lm_head: Tensor,
    pub rope: Rope,
    pub config: TextConfig,
    /// How a training step runs (speed and memory only; the same result).
    pub exec: DecoderExec,
}

impl Qwen3 {
    /// Parameters only the LM head uses (`lm_head.weight` unless tied to the embedding):
    /// their gradients are final once the head's chunks are done, before the trunk's
    /// backward.
    pub fn head_only_params(&self) -> Vec<Tensor> {
        if self.config.tie_word_embeddings {
            Vec::new()
        } else {
            vec![self.lm_head.shallow_clone()]
        }
    }

    /// Builds the decoder: `model.*` under `model_vs`, `lm_head` under `lm_head_vs`.
    pub fn new(model_vs: nn::Path, lm_head_vs: nn::Path, cfg: &TextConfig) -> Result<Self> {
        let (v, h) = (cfg.vocab_size as i64, cfg.hidden_size as i64);
        let init = Init::Randn {
            mean: 0.,
            stdev: INIT_STD,
        };
        let embed_tokens = (&model_vs / "embed_tokens").var("weight", &[v, h], init);
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            lm_head_vs.var("weight", &[v, h], init)
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| DecoderLayer::new(&model_vs / "layers" / l, cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm: RmsNorm::new(&model_vs / "norm", cfg.hidden_size, cfg.rms_norm_eps),
            lm_head,
            rope: Rope::new(cfg, model_vs.device()),
            config: cfg.clone(),
            exec: DecoderExec::default(),
        })
    }

    /// Token embeddings `[B, T, H]` of ids `[B, T]`.
    pub fn embed(&self, input_ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false)
    }

    /// Runs the layers on input embeddings `[B, T, H]` at `positions` `[B, T]`, returns the
    /// final-normed hidden states `[B, T, H]`. With a cache, the new keys/values are appended.
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        mask: &AttentionMask,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        let (spec, cos, sin) = self.layer_inputs(embeds, positions, mask, past)?;
        let mut x = embeds.shallow_clone();
        for (l, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[l]);
            x = layer.forward(&x, &cos, &sin, &spec, slot)?;
        }
        Ok(self.norm.forward(&x))
    }

    /// What every layer takes besides its input, for embeddings `[B, T, H]` at `positions`
    /// `[B, T]` after `past` cached positions: the attention spec and the rotary tables.
    fn layer_inputs(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        mask: &AttentionMask,
        past: i64,
    ) -> Result<(MaskSpec, Tensor, Tensor)> {
        let (b, t, _) = embeds.size3()?;
        ensure!(
            positions.size() == [b, t],
            "positions have shape {:?}, expected [{b}, {t}]",
            positions.size()
        );
        let spec = mask.spec(t, past, embeds, &self.exec)?;
        let (cos, sin) = self.rope.cos_sin(positions);
        Ok((spec, cos, sin))
    }

    /// Which attention kernel a forward over `embeds` `[B, T, H]` with `mask` runs, in
    /// words: varlen flash attention for packed rows where it applies, otherwise the
    /// backend scaled_dot_product_attention picks for these shapes, dtype, device and mask
    /// (`aten::_fused_sdp_choice`: flash, memory-efficient, cuDNN or the math fallback).
    pub fn attention_kernel(&self, embeds: &Tensor, mask: &AttentionMask) -> Result<String> {
        let (b, t, _) = embeds.size3()?;
        let spec = mask.spec(t, 0, embeds, &self.exec)?;
        if spec.varlen.is_some() {
            return Ok(
                "varlen flash attention (aten::_flash_attention_forward, cu_seqlens)".into(),
            );
        }
        let (heads, hd) = (
            self.config.num_attention_heads as i64,
            self.config.head_dim() as i64,
        );
        let q = Tensor::zeros([b, heads, t, hd], (embeds.kind(), embeds.device()));
        let choice = Tensor::f_internal_fused_sdp_choice(
            &q,
            &q,
            &q,
            spec.mask.as_ref(),
            0.0,
            spec.is_causal,
            None,
            false,
        )?;
        let name = match choice {
            0 => "math (unfused)",
            1 => "flash",
            2 => "memory-efficient",
            3 => "cuDNN",
            4 => "overrideable",
            _ => "none (no kernel fits)",
        };
        Ok(format!(
            "scaled_dot_product_attention: {name} (_fused_sdp_choice = {choice}; {})",
            if spec.mask.is_some() {
                "with a boolean mask"
            } else {
                "causal, no mask"
            }
        ))
    }

    /// [`Self::forward_embeds`] for training with activation checkpointing: the layers run
    /// without autograd, keeping only their inputs; the returned hidden states hang off a
    /// leaf (the last layer's output), so their backward stops there. Then
    /// [`Checkpointed::backward`] runs the layers again, last first, and carries the
    /// gradient on into the parameters and `embeds`.
    pub fn forward_checkpointed(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        mask: &AttentionMask,
    ) -> Result<(Tensor, Checkpointed)> {
        let (spec, cos, sin) = self.layer_inputs(embeds, positions, mask, 0)?;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = embeds.detach();
        {
            let _no_grad = tch::no_grad_guard();
            for layer in &self.layers {
                let next = layer.forward(&x, &cos, &sin, &spec, None)?;
                inputs.push(x);
                x = next;
            }
        }
        // The layers are run again only when a gradient has somewhere to go: a trained
        // layer, or `embeds`' own graph (a trained embedding table or vision tower).
        let needed = embeds.requires_grad() || self.layers.iter().any(DecoderLayer::trains);
        let last = x.set_requires_grad(needed);
        let hidden = self.norm.forward(&last);
        Ok((
            hidden,
            Checkpointed {
                inputs,
                last,
                cos,
                sin,
                spec,
            },
        ))
    }

    /// Logits `[.., V]` of final hidden states `[.., H]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.lm_head.tr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlen_cuts_rows_at_each_sample_and_each_row() {
        let ids = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 2, 0, 0, 1, 1, 1, 1]).view([2, 6]);
        let v = Varlen::from_sample_ids(&ids).unwrap();
        assert_eq!(v.cu_seqlens.kind(), Kind::Int);
        assert_eq!(
            Vec::<i64>::try_from(v.cu_seqlens.to_kind(Kind::Int64)).unwrap(),
            vec![0, 3, 5, 6, 8, 12]
        );
        assert_eq!(v.max_len, 4);
        // Same id in two rows: still two samples.
        let ids = Tensor::from_slice(&[7i64, 7, 7, 7]).view([2, 2]);
        let v = Varlen::from_sample_ids(&ids).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(v.cu_seqlens.to_kind(Kind::Int64)).unwrap(),
            vec![0, 2, 4]
        );
    }

    #[test]
    fn flash_attention_on_the_cpu_is_an_error_not_a_crash() {
        let ids = Tensor::zeros([1, 4], (Kind::Int64, Device::Cpu));
        let embeds = Tensor::zeros([1, 4, 8], (Kind::BFloat16, Device::Cpu));
        let flash = DecoderExec {
            packed_attention: PackedAttention::Flash,
            ..DecoderExec::default()
        };
        let err = AttentionMask::Packed(ids.shallow_clone())
            .spec(4, 0, &embeds, &flash)
            .err()
            .expect("flash on the CPU must be refused");
        assert!(err.to_string().contains("needs CUDA"), "{err}");
        // Auto takes the mask on the CPU.
        let spec = AttentionMask::Packed(ids.shallow_clone())
            .spec(4, 0, &embeds, &DecoderExec::default())
            .unwrap();
        assert!(spec.varlen.is_none() && spec.mask.is_some());
        // The kernel itself, called on the CPU, returns ATen's error through the shim.
        let q = Tensor::zeros([4, 2, 8], (Kind::BFloat16, Device::Cpu));
        let varlen = Varlen::from_sample_ids(&ids).unwrap();
        let err = crate::train::fused::flash_attention_varlen(&q, &q, &q, &varlen)
            .expect_err("no CPU kernel");
        assert!(err.to_string().contains("varlen flash attention"), "{err}");
    }
}
