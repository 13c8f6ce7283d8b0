//! The tract backend: pure Rust, nothing to install.
//!
//! Each graph is loaded once with its symbolic dimensions (`P`, `S`, `K`, `T`, `L`) left
//! symbolic, optimized once, and turned into one runnable plan that every call reuses:
//! tract resolves the symbols from the input shapes on each run.

use ove_core::graph_io as io;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;

use super::{
    check_present, check_rows, check_vision, check_vision_inputs, Backend, BackendKind,
    BackendOptions, DecoderInputs, Dims, LineBatchInputs, VisionInputs, VisionOutput,
};
use crate::bundle::{Bundle, GraphInfo};
use crate::kv::{tensor_names, KvCache, KvStore, MAX_DECODER_ROWS};

type Plan = Arc<TypedRunnableModel>;

/// A graph ready to run, with its inputs and outputs by name.
struct Graph {
    plan: Plan,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl Graph {
    /// Loads, types, optimizes and plans one graph. `facts` gives the input shapes in
    /// terms of shared symbols (by input name), so that tract can prove what the file's
    /// independent `dim_param`s cannot say: that `P` is a multiple of the merge unit, that
    /// the bias is `[S, K + S]` and every past tensor has the same `K`.
    fn load(
        info: &GraphInfo,
        threads: usize,
        cache: Option<&std::path::Path>,
        facts: impl Fn(&SymbolScope, &str) -> Option<InferenceFact>,
    ) -> Result<Self> {
        let path = &info.path;
        let fail = |what: &str| format!("tract cannot {what} {}", path.display());
        if let Some(c) = cache.filter(|c| c.is_file()) {
            match Self::from_cache(info, threads, c) {
                Ok(g) => return Ok(g),
                Err(e) => tracing::warn!(
                    "{}: the cached tract model {} does not load ({e:#}); loading the graph",
                    path.display(),
                    c.display()
                ),
            }
        }
        // Each phase's time goes to the log: a large decoder takes seconds to load, and
        // where they go decides what a cache could save.
        let t0 = std::time::Instant::now();
        // Output shapes are left to tract: the file names them with their own symbols
        // (`T`), which tract derives itself as `K + S`.
        let mut model = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .model_for_path(path)
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| fail("load"))?;
        let inputs = input_names(&model)?;
        for (i, name) in inputs.iter().enumerate() {
            if let Some(fact) = facts(&model.symbols, name) {
                model
                    .set_input_fact(i, fact)
                    .map_err(|e| anyhow!("{e:?}"))
                    .with_context(|| fail(&format!("shape input {name} of")))?;
            }
        }
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
        let parsed = t0.elapsed();
        let typed = model
            .into_typed()
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| fail("type"))?
            .into_decluttered()
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| fail("declutter"))?;
        let decluttered = t0.elapsed();
        if let Some(c) = cache {
            if let Err(e) = super::tract_cache::write(&typed, c) {
                tracing::warn!("{}: not cached ({e:#})", path.display());
            }
        }
        let plan = optimize_and_plan(typed, threads).with_context(|| fail("optimize"))?;
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e3).round();
        tracing::info!(
            graph = %path.display(),
            parse_ms = ms(parsed),
            type_declutter_ms = ms(decluttered - parsed),
            optimize_plan_ms = ms(t0.elapsed() - decluttered),
            "tract loaded a graph"
        );
        Ok(Self {
            plan,
            inputs,
            outputs,
        })
    }

    /// The graph from its cached decluttered model: optimized and planned as [`Self::load`]
    /// does; inputs and outputs keep the ONNX graph's order, named from the bundle's record
    /// of it.
    fn from_cache(info: &GraphInfo, threads: usize, c: &std::path::Path) -> Result<Self> {
        let t0 = std::time::Instant::now();
        let typed = super::tract_cache::read(c)?;
        let read = t0.elapsed();
        let (ins, outs) = (typed.input_outlets()?.len(), typed.output_outlets()?.len());
        if ins != info.inputs.len() || outs != info.outputs.len() {
            bail!(
                "{ins} inputs and {outs} outputs, the graph has {} and {}",
                info.inputs.len(),
                info.outputs.len()
            );
        }
        let plan = optimize_and_plan(typed, threads)?;
        tracing::info!(
            graph = %info.path.display(),
            cache = %c.display(),
            read_ms = (read.as_secs_f64() * 1e3).round(),
            optimize_plan_ms = ((t0.elapsed() - read).as_secs_f64() * 1e3).round(),
            "tract loaded a graph from its cache"
        );
        Ok(Self {
            plan,
            inputs: info.inputs.iter().map(|i| i.name.clone()).collect(),
            outputs: info.outputs.iter().map(|o| o.name.clone()).collect(),
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

/// Codegen for this machine and the runnable plan, matmuls on `threads` threads.
fn optimize_and_plan(mut typed: TypedModel, threads: usize) -> Result<Plan> {
    typed.optimize().map_err(|e| anyhow!("{e:?}"))?;
    let options = RunOptions {
        executor: (threads > 1).then(|| tract_linalg::multithread::Executor::multithread(threads)),
        ..Default::default()
    };
    typed
        .into_runnable_with_options(&options)
        .map_err(|e| anyhow!("{e:?}"))
}

fn input_names(model: &InferenceModel) -> Result<Vec<String>> {
    Ok(model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect())
}

/// lines.onnx, before and after its first use: the plan with its input positions (pixel
/// values, positions, key bias) and output position.
enum LazyLines {
    Pending(GraphInfo),
    Ready(Graph, [usize; 3], usize),
}

impl LazyLines {
    fn get(&mut self, dims: &Dims, threads: usize) -> Result<(&Graph, [usize; 3], usize)> {
        if let LazyLines::Pending(info) = self {
            let g = Graph::load(info, threads, None, |sym, name| {
                let (b, p) = (sym.sym("B").to_dim(), sym.sym("P").to_dim());
                let fact: InferenceFact = match name {
                    io::PIXEL_VALUES => f32::fact([b, p, dims.patch_dim.to_dim()]).into(),
                    io::PATCH_POS => i64::fact([b, p, 2.to_dim()]).into(),
                    io::KEY_BIAS => f32::fact([b, p + 1]).into(),
                    _ => return None,
                };
                Some(fact)
            })?;
            let ins = [
                g.input_index(io::PIXEL_VALUES)?,
                g.input_index(io::PATCH_POS)?,
                g.input_index(io::KEY_BIAS)?,
            ];
            let out = g.output_index(io::LINE_TOKENS)?;
            *self = LazyLines::Ready(g, ins, out);
        }
        match self {
            LazyLines::Ready(g, ins, out) => Ok((g, *ins, *out)),
            LazyLines::Pending(_) => unreachable!("loaded just above"),
        }
    }
}

/// Loads decoder.onnx with rows (B) `Some(n)` fixed or `None` symbolic; S, K, L symbolic.
fn load_decoder(
    info: &GraphInfo,
    threads: usize,
    cache: Option<&std::path::Path>,
    dims: Dims,
    rows: Option<usize>,
) -> Result<Graph> {
    let kv = dims.kv;
    Graph::load(info, threads, cache, |sym, name| {
        let (s, k, l) = (
            sym.sym("S").to_dim(),
            sym.sym("K").to_dim(),
            sym.sym("L").to_dim(),
        );
        let b = rows.map_or_else(|| sym.sym("B").to_dim(), |n| n.to_dim());
        // A batched graph: B leads every input but logits_index and inputs_embeds, whose
        // rows (all sequences', row-major) are B*S.
        let lead = |mut d: Vec<TDim>| {
            if kv.batched {
                d.insert(0, b.clone());
            }
            d
        };
        let all_rows = if kv.batched {
            b.clone() * s.clone()
        } else {
            s.clone()
        };
        let fact: InferenceFact = match name {
            io::INPUTS_EMBEDS => f32::fact([all_rows, dims.hidden.to_dim()]).into(),
            io::POSITION_IDS => i64::fact(lead(vec![s])).into(),
            io::ATTENTION_BIAS => f32::fact(lead(vec![s.clone(), k + s])).into(),
            io::LOGITS_INDEX => i64::fact([l]).into(),
            n if io::is_past(n) => {
                f32::fact(lead(vec![kv.kv_heads.to_dim(), k, kv.head_dim.to_dim()])).into()
            }
            _ => return None,
        };
        Some(fact)
    })
}

/// Whether the bundle's decoder matmuls are int4 `MatMulNBits`, which tract 0.23.9 runs as
/// Q4_0 block-quant matmuls that compute wrong results once their row count is more than
/// one symbol (B*S, even 4*S): such a decoder is planned for one row, and its sequences
/// decode one at a time on tract.
fn int4_decoder(m: &ove_core::manifest::Manifest) -> bool {
    let q = &m.quantization;
    q.scheme == "int4"
        && q.parts
            .iter()
            .any(|p| p == "decoder_linear" || p == "lm_head")
}

/// tract on a bundle: one plan per graph, reused across calls.
pub struct TractBackend {
    dims: Dims,
    vision: Graph,
    decoder: Graph,
    /// [`Backend::max_decoder_rows`]: 1 for an unbatched or int4 decoder (see
    /// [`int4_decoder`]).
    max_decoder_rows: usize,
    /// Decoder input positions: embeds, positions, bias, logits index, then the cache in
    /// [`tensor_names`] order.
    dec_in: [usize; 4],
    past_in: Vec<usize>,
    logits_out: usize,
    present_out: Vec<usize>,
    vis_in: [usize; 4],
    vis_out: [usize; 3],
    /// lines.onnx, loaded and optimized on the first line batch (so `ove run` and
    /// whole-page reading never pay for it).
    lines: Option<LazyLines>,
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
        let vision = Graph::load(bundle.vision(), threads, None, |sym, name| {
            let p = sym.sym("M").to_dim() * dims.merge_unit as i64;
            let c = sym.sym("C").to_dim();
            match name {
                io::PIXEL_VALUES => Some(f32::fact([p, dims.patch_dim.to_dim()]).into()),
                io::PATCH_POS => Some(i64::fact([p, 2.to_dim()]).into()),
                io::CARRY => Some(f32::fact([c, dims.vision_hidden.to_dim()]).into()),
                io::WINDOW_INDEX => Some(i64::fact([p]).into()),
                _ => None,
            }
        })?;
        let one_row = !dims.kv.batched || int4_decoder(bundle.manifest());
        let rows = one_row.then_some(1);
        let cache =
            super::tract_cache::path_for(bundle, &bundle.decoder().rel, &format!("rows={rows:?}"));
        let decoder = load_decoder(bundle.decoder(), threads, cache.as_deref(), dims, rows)?;
        let max_decoder_rows = if one_row { 1 } else { MAX_DECODER_ROWS };
        let lines = bundle.lines().cloned().map(LazyLines::Pending);
        let (past, present) = tensor_names(dims.kv.layers);
        let d = &decoder;
        Ok(Self {
            dec_in: [
                d.input_index(io::INPUTS_EMBEDS)?,
                d.input_index(io::POSITION_IDS)?,
                d.input_index(io::ATTENTION_BIAS)?,
                d.input_index(io::LOGITS_INDEX)?,
            ],
            past_in: past
                .iter()
                .map(|n| d.input_index(n))
                .collect::<Result<_>>()?,
            logits_out: d.output_index(io::LOGITS)?,
            present_out: present
                .iter()
                .map(|n| d.output_index(n))
                .collect::<Result<_>>()?,
            vis_in: [
                vision.input_index(io::PIXEL_VALUES)?,
                vision.input_index(io::PATCH_POS)?,
                vision.input_index(io::CARRY)?,
                vision.input_index(io::WINDOW_INDEX)?,
            ],
            vis_out: [
                vision.output_index(io::VISION_TOKENS)?,
                vision.output_index(io::IMAGE_EMBEDS)?,
                vision.output_index(io::VISION_STATES)?,
            ],
            dims,
            vision,
            decoder,
            max_decoder_rows,
            lines,
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

    fn vision(&mut self, x: &VisionInputs<'_>) -> Result<VisionOutput> {
        let (p, c) = check_vision_inputs(x, &self.dims)?;
        let mut inputs: Vec<Option<TValue>> = vec![None; self.vision.inputs.len()];
        inputs[self.vis_in[0]] = Some(tensor(&[p, self.dims.patch_dim], x.pixel_values)?);
        inputs[self.vis_in[1]] = Some(tensor(&[p, 2], x.patch_pos)?);
        inputs[self.vis_in[2]] = Some(tensor(&[c, self.dims.vision_hidden], x.carry)?);
        inputs[self.vis_in[3]] = Some(tensor(&[p], x.window_index)?);
        let inputs = collect_inputs(inputs, &self.vision.inputs)?;
        let out = run(&self.vision, inputs, "vision.onnx")?;
        let result = VisionOutput {
            vision_tokens: f32_values(&out[self.vis_out[0]])?,
            image_embeds: f32_values(&out[self.vis_out[1]])?,
            vision_states: f32_values(&out[self.vis_out[2]])?,
        };
        check_vision(&result, &self.dims, p)?;
        Ok(result)
    }

    fn lines(&mut self, x: &LineBatchInputs<'_>) -> Result<Vec<f32>> {
        x.check(&self.dims)?;
        let (b, p) = (x.batch, x.patches);
        let Some(lazy) = self.lines.as_mut() else {
            bail!("this bundle has no lines.onnx (re-export it with --ctc-head)");
        };
        let (graph, ins, out) = lazy.get(&self.dims, self.threads)?;
        let mut inputs: Vec<Option<TValue>> = vec![None; graph.inputs.len()];
        inputs[ins[0]] = Some(tensor(&[b, p, self.dims.patch_dim], x.pixel_values)?);
        inputs[ins[1]] = Some(tensor(&[b, p, 2], x.patch_pos)?);
        inputs[ins[2]] = Some(tensor(&[b, p + 1], x.key_bias)?);
        let inputs = collect_inputs(inputs, &graph.inputs)?;
        let result = run(graph, inputs, "lines.onnx")?;
        let tokens = f32_values(&result[out])?;
        let want = b * p * self.dims.vision_hidden;
        if tokens.len() != want {
            bail!(
                "lines.onnx output line_tokens has {} values, expected {b} x {p} x {}",
                tokens.len(),
                self.dims.vision_hidden
            );
        }
        Ok(tokens)
    }

    fn decoder(&mut self, x: &DecoderInputs<'_>, cache: &mut KvCache) -> Result<Vec<f32>> {
        let k = cache.len();
        x.check(&self.dims, k)?;
        check_rows(x, cache)?;
        let (rows, s) = (x.batch, x.new_tokens());
        let [embeds_shape, pos_shape, bias_shape] = x.shapes(&self.dims, k);
        let graph = &self.decoder;
        let mut inputs: Vec<Option<TValue>> = vec![None; graph.inputs.len()];
        inputs[self.dec_in[0]] = Some(tensor(&embeds_shape, x.inputs_embeds)?);
        inputs[self.dec_in[1]] = Some(tensor(&pos_shape, x.position_ids)?);
        inputs[self.dec_in[2]] = Some(tensor(&bias_shape, x.attention_bias)?);
        inputs[self.dec_in[3]] = Some(tensor(&[x.logits_index.len()], x.logits_index)?);
        match &cache.store {
            KvStore::Empty => {
                let empty = Tensor::zero::<f32>(&self.dims.kv.tensor_dims(rows, 0))
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
        let inputs = collect_inputs(inputs, &graph.inputs)?;
        let mut out = run(graph, inputs, "decoder.onnx")?;
        let (_, present_names) = tensor_names(self.dims.kv.layers);
        let mut present = Vec::with_capacity(self.present_out.len());
        for (&i, name) in self.present_out.iter().zip(&present_names) {
            check_present(name, out[i].shape(), &self.dims.kv, rows, k + s)?;
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

    fn max_decoder_rows(&self) -> usize {
        self.max_decoder_rows
    }
}

fn collect_inputs(inputs: Vec<Option<TValue>>, names: &[String]) -> Result<TVec<TValue>> {
    inputs
        .into_iter()
        .zip(names)
        .map(|(v, n)| v.ok_or_else(|| anyhow!("graph input {n:?} is not one this runtime feeds")))
        .collect()
}
