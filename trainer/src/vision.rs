//! RICE-ViT, the vision encoder (`visual.*` minus the merger).
//!
//! Input: pre-cut patches `[P, C*T*p*p]` (588 wide for 14x14 RGB) of one or several
//! images, in the preprocessor's patch order (2x2 merge blocks in raster order), and each
//! image's `(t, h, w)` patch grid. Output: one vector per patch, `[P, D]`, class tokens
//! removed, before the merger.
//!
//! Per image: `[class token ; patch tokens]` -> pre_layernorm -> blocks; the output is
//! rows `1..=P` of the whole sequence (see [`RiceVit::forward`] on what that means for
//! several images). Attention is bidirectional inside an image and never crosses images: the
//! sequence is cut at the image boundaries (`cu_seqlens`) and attention runs per image.
//! Position information is a 2-D rotary embedding: per patch the angle vector is
//! `[h * f ; w * f]` (head_dim/2 values, `f` = head_dim/4 inverse frequencies), duplicated
//! to head_dim and applied rotate-half style in f32; the class token uses the learned
//! angle vector `class_pos_emb` instead.

use anyhow::{bail, Result};
use tch::nn::{self, Init, Module};
use tch::{Kind, Tensor};

use ove_core::config::VisionConfig;
use ove_core::preprocess::patch_positions;

use crate::layers::{activation, apply_rotary, LayerNorm, Linear, INIT_STD};

/// `visual.patch_embed`: Conv2d(C -> D, kernel p, stride p, no bias) applied to pre-cut
/// patches, computed as one matmul with the kernel flattened to `[D, C*T*p*p]`.
#[derive(Debug)]
pub struct PatchEmbed {
    /// `[D, C, p, p]` (or `[D, C, T, p, p]` for a temporal patch size above 1): the
    /// on-disk shape of `visual.patch_embed.proj.weight`.
    pub weight: Tensor,
}

impl PatchEmbed {
    pub fn new(vs: nn::Path, cfg: &VisionConfig) -> Self {
        let (d, c, t, p) = (
            cfg.hidden_size as i64,
            cfg.in_channels as i64,
            cfg.temporal_patch_size as i64,
            cfg.patch_size as i64,
        );
        let shape: Vec<i64> = if t == 1 {
            vec![d, c, p, p]
        } else {
            vec![d, c, t, p, p]
        };
        let weight = (vs / "proj").var(
            "weight",
            &shape,
            Init::Randn {
                mean: 0.,
                stdev: INIT_STD,
            },
        );
        Self { weight }
    }
}

impl Module for PatchEmbed {
    fn forward(&self, patches: &Tensor) -> Tensor {
        let d = self.weight.size()[0];
        // Pixels arrive in f32; in bf16 training the weight is bf16.
        patches
            .to_kind(self.weight.kind())
            .matmul(&self.weight.reshape([d, -1]).tr())
    }
}

/// `visual.blocks.{i}.attn`: fused qkv, 2-D rotary on q and k, per-image attention, proj.
#[derive(Debug)]
pub struct VisionAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub num_heads: i64,
}

impl VisionAttention {
    pub fn new(vs: nn::Path, cfg: &VisionConfig) -> Self {
        let d = cfg.hidden_size;
        Self {
            qkv: Linear::new(&vs / "qkv", d, 3 * d, true),
            proj: Linear::new(&vs / "proj", d, d, true),
            num_heads: cfg.num_heads as i64,
        }
    }

    /// `x`: `[N, D]` (all images concatenated); `cos`/`sin`: `[N, head_dim]`;
    /// `segments`: `(start, len)` of each image in the sequence.
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[(i64, i64)],
    ) -> Tensor {
        let (n, d) = x.size2().expect("vision attention input must be [N, D]");
        let head_dim = d / self.num_heads;
        // qkv rows are q, then k, then v; each split into heads: [3, heads, N, head_dim].
        let qkv = self
            .qkv
            .forward(x)
            .reshape([n, 3, self.num_heads, head_dim])
            .permute([1, 2, 0, 3]);
        let (cos, sin) = (cos.unsqueeze(0), sin.unsqueeze(0));
        let q = apply_rotary(&qkv.get(0), &cos, &sin);
        let k = apply_rotary(&qkv.get(1), &cos, &sin);
        let v = qkv.get(2);
        let attend = |start: i64, len: i64| {
            Tensor::scaled_dot_product_attention::<Tensor>(
                &q.narrow(1, start, len).unsqueeze(0),
                &k.narrow(1, start, len).unsqueeze(0),
                &v.narrow(1, start, len).unsqueeze(0),
                None,
                0.0,
                false,
                None,
                false,
            )
            .squeeze_dim(0)
        };
        // Each image attends only to itself.
        let out = if segments.len() == 1 {
            attend(0, n)
        } else {
            let parts: Vec<Tensor> = segments.iter().map(|&(s, l)| attend(s, l)).collect();
            Tensor::cat(&parts, 1)
        };
        // [heads, N, head_dim] -> [N, D]
        let out = out.permute([1, 0, 2]).reshape([n, d]);
        self.proj.forward(&out)
    }
}

/// `visual.blocks.{i}.mlp`: fc1 -> GELU -> fc2.
#[derive(Debug)]
pub struct VisionMlp {
    pub fc1: Linear,
    pub fc2: Linear,
    act: fn(&Tensor) -> Tensor,
}

impl VisionMlp {
    pub fn new(vs: nn::Path, cfg: &VisionConfig) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(&vs / "fc1", cfg.hidden_size, cfg.intermediate_size, true),
            fc2: Linear::new(&vs / "fc2", cfg.intermediate_size, cfg.hidden_size, true),
            act: activation(&cfg.hidden_act)?,
        })
    }
}

impl Module for VisionMlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&(self.act)(&self.fc1.forward(x)))
    }
}

/// `visual.blocks.{i}`: pre-norm residual block.
#[derive(Debug)]
pub struct VisionBlock {
    pub norm1: LayerNorm,
    pub attn: VisionAttention,
    pub norm2: LayerNorm,
    pub mlp: VisionMlp,
}

impl VisionBlock {
    pub fn new(vs: nn::Path, cfg: &VisionConfig) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::new(&vs / "norm1", cfg.hidden_size, cfg.layer_norm_eps),
            attn: VisionAttention::new(&vs / "attn", cfg),
            norm2: LayerNorm::new(&vs / "norm2", cfg.hidden_size, cfg.layer_norm_eps),
            mlp: VisionMlp::new(&vs / "mlp", cfg)?,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[(i64, i64)],
    ) -> Tensor {
        let x = x + self
            .attn
            .forward(&self.norm1.forward(x), cos, sin, segments);
        &x + self.mlp.forward(&self.norm2.forward(&x))
    }
}

/// The RICE-ViT encoder (`visual.*` except `visual.merger`).
#[derive(Debug)]
pub struct RiceVit {
    pub patch_embed: PatchEmbed,
    /// `[D]`: the class token put in front of every image.
    pub class_embedding: Tensor,
    /// `[1, head_dim/2]`: the class token's rotary angle vector.
    pub class_pos_emb: Tensor,
    pub pre_layernorm: LayerNorm,
    pub blocks: Vec<VisionBlock>,
    /// `[head_dim/4]` inverse frequencies `theta^(-2i/(head_dim/2))` (not a parameter).
    inv_freq: Tensor,
    pub config: VisionConfig,
}

impl RiceVit {
    /// Builds the encoder under `vs` (normally `root / "visual"`).
    pub fn new(vs: nn::Path, cfg: &VisionConfig) -> Result<Self> {
        let d = cfg.hidden_size as i64;
        let head_dim = cfg.head_dim() as i64;
        let class_embedding = vs.var(
            "class_embedding",
            &[d],
            Init::Randn {
                mean: 0.,
                stdev: (d as f64).powf(-0.5),
            },
        );
        let class_pos_emb = vs.var(
            "class_pos_emb",
            &[1, head_dim / 2],
            Init::Randn {
                mean: 0.,
                stdev: 1.,
            },
        );
        let blocks = (0..cfg.depth)
            .map(|i| VisionBlock::new(&vs / "blocks" / i, cfg))
            .collect::<Result<Vec<_>>>()?;
        // The one definition of the encoder's frequencies (ove-core), as the exporter uses.
        let inv_freq = Tensor::from_slice(&cfg.rope_inv_freq()).to_device(vs.device());
        Ok(Self {
            patch_embed: PatchEmbed::new(&vs / "patch_embed", cfg),
            class_embedding,
            class_pos_emb,
            pre_layernorm: LayerNorm::new(
                &vs / "pre_layernorm",
                cfg.hidden_size,
                cfg.layer_norm_eps,
            ),
            blocks,
            inv_freq,
            config: cfg.clone(),
        })
    }

    /// Rotary angle vectors `[h*f ; w*f]` of one image's patches, in patch order: `[t*h*w, head_dim/2]`.
    /// The grid must be a multiple of the merge size (checked by [`Self::forward`]).
    fn patch_angles(&self, grid: [usize; 3]) -> Tensor {
        let positions = patch_positions(grid, self.config.spatial_merge_size);
        let flat: Vec<i64> = positions.iter().flat_map(|p| [p[0], p[1]]).collect();
        let pos = Tensor::from_slice(&flat)
            .to_device(self.inv_freq.device())
            .reshape([-1, 2])
            .to_kind(Kind::Float);
        // [N, 2, 1] * [f] -> [N, 2, f] -> [N, 2f]: the h angles, then the w angles.
        (pos.unsqueeze(-1) * &self.inv_freq).flatten(1, 2)
    }

    /// `[P, D]`: rows `1..=P` of the sequence after the last block, as the reference returns
    /// them for the images of one prompt (for a single image: its patch vectors, class
    /// token removed).
    pub fn forward(&self, pixel_values: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        self.forward_grouped(pixel_values, grids, &[grids.len()])
    }

    /// [`Self::forward`] for the images of several prompts (a packed batch) in one pass:
    /// `group_sizes[i]` consecutive images belong to prompt `i`. The result is exactly the
    /// concatenation of one [`Self::forward`] per prompt (attention never crosses images,
    /// and the reference's class-token removal is applied per prompt).
    pub fn forward_grouped(
        &self,
        pixel_values: &Tensor,
        grids: &[[usize; 3]],
        group_sizes: &[usize],
    ) -> Result<Tensor> {
        if group_sizes.iter().sum::<usize>() != grids.len() || group_sizes.contains(&0) {
            bail!(
                "image groups {group_sizes:?} do not partition the {} images",
                grids.len()
            );
        }
        let counts: Vec<i64> = grids.iter().map(|g| (g[0] * g[1] * g[2]) as i64).collect();
        let total: i64 = counts.iter().sum();
        let rows = pixel_values.size();
        let patch_dim = self.config.patch_dim() as i64;
        if rows.len() != 2 || rows[0] != total || rows[1] != patch_dim {
            bail!(
                "pixel_values has shape {rows:?}, the image grids {grids:?} need [{total}, {patch_dim}]"
            );
        }
        if grids.is_empty() {
            bail!("no image grids given");
        }
        for g in grids {
            let m = self.config.spatial_merge_size;
            if g[1] % m != 0 || g[2] % m != 0 {
                bail!("image grid {g:?} is not a multiple of the merge size {m}");
            }
        }
        let x = self.patch_embed.forward(pixel_values);
        let cls = self.class_embedding.to_kind(x.kind()).unsqueeze(0);

        // [cls_0 ; patches_0 ; cls_1 ; patches_1 ; ...] and the matching angle vectors.
        let mut tokens = Vec::with_capacity(2 * grids.len());
        let mut angles = Vec::with_capacity(2 * grids.len());
        let mut segments = Vec::with_capacity(grids.len());
        let (mut src, mut dst) = (0i64, 0i64);
        for (grid, &n) in grids.iter().zip(&counts) {
            tokens.push(cls.shallow_clone());
            tokens.push(x.narrow(0, src, n));
            angles.push(self.class_pos_emb.to_kind(Kind::Float));
            angles.push(self.patch_angles(*grid));
            segments.push((dst, n + 1));
            src += n;
            dst += n + 1;
        }
        let hidden = Tensor::cat(&tokens, 0);
        let angles = Tensor::cat(&angles, 0);
        let emb = Tensor::cat(&[&angles, &angles], -1);
        let (cos, sin) = (emb.cos(), emb.sin());

        let mut hidden = self.pre_layernorm.forward(&hidden);
        for block in &self.blocks {
            hidden = block.forward(&hidden, &cos, &sin, &segments);
        }
        // The reference removes the class tokens by keeping rows 1..=P of the sequence of
        // P + n rows of a prompt's n images. With one image these are exactly its patches.
        // With n > 1 the class tokens of images 1..n stay in and the last n - 1 rows (the
        // final patches of the last image) fall off, so every later row is shifted. The
        // golden two-images case pins this down (a per-image removal is off by 4.3 there);
        // the exported model must reproduce the same.
        let mut out = Vec::with_capacity(group_sizes.len());
        let (mut image, mut seq_start) = (0usize, 0i64);
        for &g in group_sizes {
            let patches: i64 = counts[image..image + g].iter().sum();
            out.push(hidden.narrow(0, seq_start + 1, patches));
            seq_start += patches + g as i64;
            image += g;
        }
        Ok(if out.len() == 1 {
            out.pop().expect("one group")
        } else {
            Tensor::cat(&out, 0)
        })
    }
}
