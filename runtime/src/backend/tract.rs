//! The tract backend: pure Rust, nothing to install.
//!
//! Each graph is loaded once with its symbolic dimensions (`P`, `S`, `K`, `T`, `L`) left
//! symbolic, optimized once, and turned into one runnable plan that every call reuses:
//! tract resolves the symbols from the input shapes on each run.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;

use super::{
    check_present, check_vision, check_vision_inputs, Backend, BackendKind, BackendOptions,
    DecoderInputs, Dims, VisionOutput,
};
use crate::bundle::{Bundle, GraphInfo};
use crate::kv::{tensor_names, KvCache, KvStore};

type Plan = Arc<TypedRunnableModel>;

/// A graph ready to run, with its inputs and outputs by name.
struct Graph {
    plan: Plan,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl Graph {
    fn load(info: &GraphInfo, threads: usize) -> Result<Self> {
        let path = &info.path;
        // Output shapes are left to tract: the file names them with their own symbols
        // (`T`), which tract derives itself as `K + S`.
        let model = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .model_for_path(path)
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| format!("tract cannot load {}", path.display()))?;
        let inputs = input_names(&model)?;
        let outputs = model
            .output_outlets()?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect::<Vec<_>>();
        let typed = model
            .into_optimized()
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| format!("tract cannot optimize {}", path.display()))?;
        let options = RunOptions {
            executor: (threads > 1)
                .then(|| tract_linalg::multithread::Executor::multithread(threads)),
            ..Default::default()
        };
        let plan = typed
            .into_runnable_with_options(&options)
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| format!("tract cannot plan {}", path.display()))?;
        Ok(Self {
            plan,
            inputs,
            outputs,
        })
    }

    fn input_index(&self, name: &str) -> Result<usize> {
        self.inputs
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| anyhow!("graph has no input {name:?}"))
    }

    fn output_index(&self, name: &str) -> Result<usize> {
        self.outputs
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| anyhow!("graph has no output {name:?}"))
    }
}

fn input_names(model: &InferenceModel) -> Result<Vec<String>> {
    Ok(model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect())
}

/// tract on a bundle: one plan per graph, reused across calls.
pub struct TractBackend {
    dims: Dims,
    vision: Graph,
    decoder: Graph,
    /// Decoder input positions: embeds, positions, bias, logits index, then the cache in
    /// [`tensor_names`] order.
    dec_in: [usize; 4],
    past_in: Vec<usize>,
    logits_out: usize,
    present_out: Vec<usize>,
    vis_in: [usize; 2],
    vis_out: [usize; 2],
    threads: usize,
}

impl TractBackend {
    pub fn load(bundle: &Bundle, opts: &BackendOptions) -> Result<Self> {
        let dims = Dims::from_manifest(bundle.manifest());
        let threads = opts.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let vision = Graph::load(bundle.vision(), threads)?;
        let decoder = Graph::load(bundle.decoder(), threads)?;
        let (past, present) = tensor_names(dims.kv.layers);
        let d = &decoder;
        Ok(Self {
            dec_in: [
                d.input_index("inputs_embeds")?,
                d.input_index("position_ids")?,
                d.input_index("attention_bias")?,
                d.input_index("logits_index")?,
            ],
            past_in: past
                .iter()
                .map(|n| d.input_index(n))
                .collect::<Result<_>>()?,
            logits_out: d.output_index("logits")?,
            present_out: present
                .iter()
                .map(|n| d.output_index(n))
                .collect::<Result<_>>()?,
            vis_in: [
                vision.input_index("pixel_values")?,
                vision.input_index("patch_pos")?,
            ],
            vis_out: [
                vision.output_index("vision_tokens")?,
                vision.output_index("image_embeds")?,
            ],
            dims,
            vision,
            decoder,
            threads,
        })
    }
}

fn tensor<T: Datum + Copy>(shape: &[usize], data: &[T]) -> Result<TValue> {
    Ok(Tensor::from_shape(shape, data)
        .map_err(|e| anyhow!("{e:?}"))?
        .into_tvalue())
}

fn f32_values(v: &TValue) -> Result<Vec<f32>> {
    Ok(v.try_as_plain_ram()
        .and_then(|p| p.as_slice::<f32>())
        .map_err(|e| anyhow!("{e:?}"))?
        .to_vec())
}

fn run(graph: &Graph, inputs: TVec<TValue>, what: &str) -> Result<TVec<TValue>> {
    graph
        .plan
        .run(inputs)
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| format!("tract failed running {what}"))
}

impl Backend for TractBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn describe(&self) -> String {
        format!("tract 0.23.9 (CPU, {} threads)", self.threads)
    }

    fn vision(&mut self, pixel_values: &[f32], patch_pos: &[i64]) -> Result<VisionOutput> {
        let p = check_vision_inputs(pixel_values, patch_pos, &self.dims)?;
        let mut inputs: Vec<Option<TValue>> = vec![None; self.vision.inputs.len()];
        inputs[self.vis_in[0]] = Some(tensor(&[p, self.dims.patch_dim], pixel_values)?);
        inputs[self.vis_in[1]] = Some(tensor(&[p, 2], patch_pos)?);
        let inputs = collect_inputs(inputs, &self.vision.inputs)?;
        let out = run(&self.vision, inputs, "vision.onnx")?;
        let result = VisionOutput {
            vision_tokens: f32_values(&out[self.vis_out[0]])?,
            image_embeds: f32_values(&out[self.vis_out[1]])?,
        };
        check_vision(&result, &self.dims, p)?;
        Ok(result)
    }

    fn decoder(&mut self, x: &DecoderInputs<'_>, cache: &mut KvCache) -> Result<Vec<f32>> {
        let k = cache.len();
        x.check(&self.dims, k)?;
        let s = x.new_tokens();
        let h = self.dims.hidden;
        let mut inputs: Vec<Option<TValue>> = vec![None; self.decoder.inputs.len()];
        inputs[self.dec_in[0]] = Some(tensor(&[s, h], x.inputs_embeds)?);
        inputs[self.dec_in[1]] = Some(tensor(&[s], x.position_ids)?);
        inputs[self.dec_in[2]] = Some(tensor(&[s, k + s], x.attention_bias)?);
        inputs[self.dec_in[3]] = Some(tensor(&[x.logits_index.len()], x.logits_index)?);
        match &cache.store {
            KvStore::Empty => {
                let empty = Tensor::zero::<f32>(&self.dims.kv.dims(0))
                    .map_err(|e| anyhow!("{e:?}"))?
                    .into_tvalue();
                for &i in &self.past_in {
                    inputs[i] = Some(empty.clone());
                }
            }
            KvStore::Tract(values) => {
                for (&i, v) in self.past_in.iter().zip(values) {
                    // A TValue is reference-counted: feeding it back copies nothing.
                    inputs[i] = Some(v.clone());
                }
            }
            #[allow(unreachable_patterns)]
            _ => bail!("this KV cache was made by another backend"),
        }
        let inputs = collect_inputs(inputs, &self.decoder.inputs)?;
        let mut out = run(&self.decoder, inputs, "decoder.onnx")?;
        let (_, present_names) = tensor_names(self.dims.kv.layers);
        let mut present = Vec::with_capacity(self.present_out.len());
        for (&i, name) in self.present_out.iter().zip(&present_names) {
            check_present(name, out[i].shape(), &self.dims.kv, k + s)?;
            present.push(out[i].clone());
        }
        let logits = f32_values(&out[self.logits_out])?;
        out.clear();
        let rows = x.logits_index.len();
        if logits.len() != rows * self.dims.vocab {
            bail!(
                "decoder output logits has {} values, expected {rows} x {}",
                logits.len(),
                self.dims.vocab
            );
        }
        cache.store = KvStore::Tract(present);
        cache.len = k + s;
        Ok(logits)
    }
}

fn collect_inputs(inputs: Vec<Option<TValue>>, names: &[String]) -> Result<TVec<TValue>> {
    inputs
        .into_iter()
        .zip(names)
        .map(|(v, n)| v.ok_or_else(|| anyhow!("graph input {n:?} is not one this runtime feeds")))
        .collect()
}
