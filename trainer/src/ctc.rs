//! The CTC line-reader head, training side: a linear layer over the vision encoder's patch
//! columns, F frames per column, over the bytes plus a blank. The alphabet, the column
//! pooling, the frame layout and greedy decoding are [`ove_core::ctc`]'s; this module runs
//! them on tensors so that the loss trains exactly the reader the runtime runs.
//!
//! The head lives in its own [`VarStore`] (not under the model's root), so a saved
//! checkpoint keeps only released tensor names in `model.safetensors`; the head is written
//! beside it as [`CTC_HEAD_FILE`].

use std::path::Path;

use anyhow::{ensure, Context, Result};
use tch::nn::{self, Init, Module, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

use ove_core::ctc::{self as core_ctc, BLANK, CLASSES, CTC_HEAD_FILE};

use crate::layers::Linear;

/// `ctc_head.proj`: `[F * CLASSES, D]` and its bias.
#[derive(Debug)]
pub struct CtcHead {
    pub proj: Linear,
    pub frames_per_column: usize,
    pub merge_size: usize,
    d: usize,
}

impl CtcHead {
    /// A fresh head under `vs` (the head's own store root): small random weights, zero bias.
    pub fn new(vs: &nn::Path, d: usize, frames_per_column: usize, merge_size: usize) -> Self {
        let rows = (frames_per_column * CLASSES) as i64;
        let p = vs / "ctc_head" / "proj";
        let weight = p.var(
            "weight",
            &[rows, d as i64],
            Init::Randn {
                mean: 0.,
                stdev: (d as f64).powf(-0.5),
            },
        );
        let bias = p.var("bias", &[rows], Init::Const(0.));
        Self {
            proj: Linear {
                weight,
                bias: Some(bias),
            },
            frames_per_column,
            merge_size,
            d,
        }
    }

    /// A head under `vs` with the weights of `file` (F from its shape).
    pub fn load(vs: &nn::Path, file: &Path, d: usize, merge_size: usize) -> Result<Self> {
        let saved = core_ctc::CtcHead::load(file)?;
        ensure!(
            saved.d == d,
            "{}: the head reads {}-wide tokens, the encoder gives {d}",
            file.display(),
            saved.d
        );
        let head = Self::new(vs, d, saved.frames_per_column, merge_size);
        tch::no_grad(|| {
            let mut w = head.proj.weight.shallow_clone();
            w.copy_(&Tensor::from_slice(&saved.weight).reshape(w.size()));
            if let Some(b) = &head.proj.bias {
                b.shallow_clone().copy_(&Tensor::from_slice(&saved.bias));
            }
        });
        Ok(head)
    }

    /// The head as the runtime reads it.
    pub fn to_core(&self) -> core_ctc::CtcHead {
        let flat = |t: &Tensor| -> Vec<f32> {
            let t = t.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]);
            Vec::<f32>::try_from(&t).expect("a float tensor")
        };
        core_ctc::CtcHead {
            weight: flat(&self.proj.weight),
            bias: flat(self.proj.bias.as_ref().expect("the head has a bias")),
            d: self.d,
            frames_per_column: self.frames_per_column,
        }
    }

    /// Writes `DIR/ctc_head.safetensors`.
    pub fn save_in(&self, dir: &Path) -> Result<()> {
        let path = dir.join(CTC_HEAD_FILE);
        self.to_core()
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Log-probabilities `[T_max, N, CLASSES]` of the frames of `N` line images from their
    /// vision tokens `[P, D]` (each image encoded alone, in order), and each image's frame
    /// count (frames past it are padding).
    pub fn log_probs(&self, tokens: &Tensor, grids: &[[usize; 3]]) -> Result<(Tensor, Vec<i64>)> {
        let device = tokens.device();
        let mut pooled = Vec::with_capacity(grids.len());
        let mut widths = Vec::with_capacity(grids.len());
        let mut start = 0i64;
        for g in grids {
            let (cols, w, rows) = core_ctc::token_columns(*g, self.merge_size);
            let n = cols.len() as i64;
            let idx: Vec<i64> = cols.iter().map(|&c| c as i64).collect();
            let idx = Tensor::from_slice(&idx).to_device(device);
            let sum = Tensor::zeros([w as i64, self.d as i64], (tokens.kind(), device)).index_add(
                0,
                &idx,
                &tokens.narrow(0, start, n),
            );
            pooled.push(sum / rows as f64);
            widths.push(w as i64);
            start += n;
        }
        ensure!(
            start == tokens.size()[0],
            "{} vision tokens for grids needing {start}",
            tokens.size()[0]
        );
        let f = self.frames_per_column as i64;
        // One matmul for every column of every image, then split back per image.
        let logits = self.proj.forward(&Tensor::cat(&pooled, 0));
        let t_max = widths.iter().max().copied().unwrap_or(0) * f;
        let mut rows = Vec::with_capacity(grids.len());
        let mut at = 0i64;
        for &w in &widths {
            let frames = logits
                .narrow(0, at, w)
                .reshape([w * f, CLASSES as i64])
                .to_kind(Kind::Float);
            rows.push(frames.constant_pad_nd([0, 0, 0, t_max - w * f]));
            at += w;
        }
        let lp = Tensor::stack(&rows, 1).log_softmax(-1, Kind::Float);
        Ok((lp, widths.iter().map(|w| w * f).collect()))
    }

    /// Mean CTC loss per target byte over the lines (the blank is class 0; a line too long
    /// for its frames contributes zero, not infinity), and the number of lines that fit.
    pub fn loss(&self, tokens: &Tensor, grids: &[[usize; 3]], texts: &[&str]) -> Result<Tensor> {
        ensure!(texts.len() == grids.len(), "one text per line image");
        let (lp, lengths) = self.log_probs(tokens, grids)?;
        let targets: Vec<Vec<i64>> = texts.iter().map(|t| core_ctc::targets(t)).collect();
        let target_lengths: Vec<i64> = targets.iter().map(|t| t.len() as i64).collect();
        let flat: Vec<i64> = targets.concat();
        let device = tokens.device();
        let loss = Tensor::ctc_loss_tensor(
            &lp,
            &Tensor::from_slice(&flat).to_device(device),
            &Tensor::from_slice(&lengths).to_device(device),
            &Tensor::from_slice(&target_lengths).to_device(device),
            BLANK as i64,
            Reduction::Mean,
            true,
        );
        Ok(loss)
    }

    /// Greedy transcriptions of the lines.
    pub fn greedy(&self, tokens: &Tensor, grids: &[[usize; 3]]) -> Result<Vec<String>> {
        let (lp, lengths) = tch::no_grad(|| self.log_probs(tokens, grids))?;
        let best = lp.argmax(-1, false).to_device(Device::Cpu); // [T, N]
        let best: Vec<i64> = Vec::try_from(&best.transpose(0, 1).contiguous().reshape([-1]))?;
        let t_max = lp.size()[0] as usize;
        lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let row: Vec<usize> = best[i * t_max..i * t_max + len as usize]
                    .iter()
                    .map(|&c| c as usize)
                    .collect();
                // As the runtime reads: the frames' probabilities only when the greedy
                // bytes are not valid UTF-8.
                Ok(core_ctc::reading_text(&row, || {
                    let probs = lp.select(1, i as i64).narrow(0, 0, len).exp();
                    Vec::<f32>::try_from(
                        &probs
                            .to_device(Device::Cpu)
                            .to_kind(Kind::Float)
                            .reshape([-1]),
                    )
                })?)
            })
            .collect()
    }
}

/// A head and its own store.
pub struct HeadStore {
    pub vs: VarStore,
    pub head: CtcHead,
}

impl HeadStore {
    /// The head of checkpoint `dir` when it has one, else a fresh one with `frames`.
    pub fn open_or_new(
        dir: &Path,
        device: Device,
        d: usize,
        merge_size: usize,
        frames: usize,
    ) -> Result<Self> {
        let vs = VarStore::new(device);
        let file = dir.join(CTC_HEAD_FILE);
        let head = if file.is_file() {
            CtcHead::load(&vs.root(), &file, d, merge_size)?
        } else {
            CtcHead::new(&vs.root(), d, frames, merge_size)
        };
        Ok(Self { vs, head })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tensor_reader_matches_the_runtime_reader() {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let head = CtcHead::new(&vs.root(), 8, 3, 2);
        let grids = [[1, 2, 4], [1, 4, 2]];
        let tokens = Tensor::randn([16, 8], (Kind::Float, Device::Cpu));
        let got = head.greedy(&tokens, &grids).unwrap();
        let core = head.to_core();
        let flat: Vec<f32> = Vec::try_from(&tokens.reshape([-1])).unwrap();
        let first = core.read(&flat[..64], grids[0], 2).unwrap();
        let second = core.read(&flat[64..], grids[1], 2).unwrap();
        assert_eq!(got, vec![first, second]);
    }

    #[test]
    fn the_loss_falls_when_the_head_learns_a_line() {
        tch::manual_seed(4);
        let vs = VarStore::new(Device::Cpu);
        let head = CtcHead::new(&vs.root(), 8, 4, 2);
        let grids = [[1, 2, 6]];
        let tokens = Tensor::randn([12, 8], (Kind::Float, Device::Cpu));
        let mut opt = nn::OptimizerConfig::build(nn::Adam::default(), &vs, 0.05).unwrap();
        let first = head
            .loss(&tokens, &grids, &["ab1"])
            .unwrap()
            .double_value(&[]);
        for _ in 0..60 {
            let loss = head.loss(&tokens, &grids, &["ab1"]).unwrap();
            opt.backward_step(&loss);
        }
        let last = head
            .loss(&tokens, &grids, &["ab1"])
            .unwrap()
            .double_value(&[]);
        assert!(last < first * 0.2, "loss {first} -> {last}");
        assert_eq!(
            head.greedy(&tokens, &grids).unwrap(),
            vec!["ab1".to_string()]
        );
    }
}
