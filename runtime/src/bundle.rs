//! Opening a bundle: the manifest, every file checked against it, and each ONNX graph read
//! before any backend sees it.
//!
//! The graphs are parsed here (not left to the backend) for two reasons: a backend follows
//! an initializer's `external_data` location wherever it points, so a crafted `.onnx` could
//! make it read any file on the machine; and a graph whose inputs and outputs do not match
//! docs/BUNDLE.md should fail with a message naming the missing tensor, not deep inside
//! ONNX Runtime or tract.

use ove_core::graph_io as io;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ove_core::manifest::{resolve_in_bundle, BundleError, Manifest};
use ove_core::onnx_proto::{data_type, GraphProto, ModelProto, TensorProto, ValueInfoProto};

/// How much of each file to check against the manifest when opening a bundle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verify {
    /// Presence, size and sha256 of every file (reads the whole bundle once).
    #[default]
    Checksums,
    /// Presence and size only: for repeated starts of a bundle already checked once
    /// (hashing several GB takes seconds on a Jetson).
    SizesOnly,
}

/// One input or output of a graph, as declared in the ONNX file.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphIo {
    pub name: String,
    /// ONNX `TensorProto.DataType`.
    pub elem_type: i32,
    /// Fixed size, or `None` for a symbolic (or unknown) dimension.
    pub dims: Vec<Option<i64>>,
}

/// What the runtime learned from parsing one `.onnx` file.
#[derive(Debug, Clone)]
pub struct GraphInfo {
    /// Bundle-relative path of the `.onnx` file.
    pub rel: String,
    pub path: PathBuf,
    pub inputs: Vec<GraphIo>,
    pub outputs: Vec<GraphIo>,
    /// Bundle-relative paths of the external data files its initializers use.
    pub external_files: BTreeSet<String>,
}

impl GraphInfo {
    pub fn input(&self, name: &str) -> Option<&GraphIo> {
        self.inputs.iter().find(|i| i.name == name)
    }
    pub fn output(&self, name: &str) -> Option<&GraphIo> {
        self.outputs.iter().find(|i| i.name == name)
    }
}

/// An opened, verified bundle directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
    vision: GraphInfo,
    decoder: GraphInfo,
    /// The batched line encoder, when the bundle has one (`graphs.lines`).
    lines: Option<GraphInfo>,
    /// The decoder in ONNX Runtime's fused kernels, when the bundle has one
    /// (`graphs.decoder_ort`): the same inputs and outputs as `decoder`.
    decoder_ort: Option<GraphInfo>,
}

impl Bundle {
    /// Reads the manifest, checks every file it lists, and parses both graphs.
    pub fn open(dir: &Path, verify: Verify) -> Result<Self> {
        let manifest = Manifest::read(dir)
            .map_err(anyhow::Error::new)
            .with_context(|| format!("cannot open bundle {}", dir.display()))?;
        match verify {
            Verify::Checksums => manifest.verify_files(dir),
            Verify::SizesOnly => verify_sizes(&manifest, dir),
        }
        .map_err(anyhow::Error::new)
        .with_context(|| {
            format!(
                "bundle {} does not match its manifest; re-export it or copy it again",
                dir.display()
            )
        })?;
        check_manifest(&manifest).with_context(|| {
            format!(
                "{}: inconsistent manifest",
                dir.join("manifest.json").display()
            )
        })?;
        let vision = read_graph(dir, &manifest, &manifest.graphs.vision)?;
        let decoder = read_graph(dir, &manifest, &manifest.graphs.decoder)?;
        check_vision_io(&vision, &manifest)?;
        check_decoder_io(&decoder, &manifest, false)?;
        let lines = match &manifest.graphs.lines {
            Some(rel) => {
                let g = read_graph(dir, &manifest, rel)?;
                check_lines_io(&g, &manifest)?;
                Some(g)
            }
            None => None,
        };
        let decoder_ort = match &manifest.graphs.decoder_ort {
            Some(rel) => {
                let g = read_graph(dir, &manifest, rel)?;
                check_decoder_io(&g, &manifest, true)?;
                Some(g)
            }
            None => None,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            vision,
            decoder,
            lines,
            decoder_ort,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn vision(&self) -> &GraphInfo {
        &self.vision
    }
    pub fn decoder(&self) -> &GraphInfo {
        &self.decoder
    }
    pub fn lines(&self) -> Option<&GraphInfo> {
        self.lines.as_ref()
    }
    pub fn decoder_ort(&self) -> Option<&GraphInfo> {
        self.decoder_ort.as_ref()
    }

    /// Path of a bundle-relative file, refusing anything outside the bundle.
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        Ok(self.manifest.path_of(&self.dir, rel)?)
    }

    pub fn embeddings_path(&self) -> Result<PathBuf> {
        self.path(&self.manifest.graphs.embeddings)
    }

    /// `tokenizer.json`, when the checkpoint had one.
    pub fn tokenizer_path(&self) -> Result<Option<PathBuf>> {
        self.manifest
            .graphs
            .tokenizer
            .as_deref()
            .map(|t| self.path(t))
            .transpose()
    }
}

/// Presence and size of every listed file, without hashing.
fn verify_sizes(manifest: &Manifest, dir: &Path) -> Result<(), BundleError> {
    for entry in &manifest.files {
        let path = resolve_in_bundle(dir, &entry.path)?;
        let meta = std::fs::metadata(&path)
            .map_err(|_| BundleError::MissingFile { path: path.clone() })?;
        if meta.len() != entry.bytes {
            return Err(BundleError::SizeMismatch {
                path,
                expected: entry.bytes,
                actual: meta.len(),
            });
        }
    }
    Ok(())
}

/// Relations between manifest fields that the runtime relies on.
fn check_manifest(m: &Manifest) -> Result<()> {
    m.model.validate().map_err(|e| anyhow!("model: {e}"))?;
    m.preprocessor
        .validate()
        .map_err(|e| anyhow!("preprocessor: {e}"))?;
    m.model
        .check_preprocessor(&m.preprocessor)
        .map_err(|e| anyhow!("manifest: {e}"))?;
    if !matches!(m.dtype.as_str(), "f32" | "f16") {
        bail!(
            "dtype {:?}: this runtime knows \"f32\" and \"f16\"",
            m.dtype
        );
    }
    if m.tokens.image_pad != m.model.image_token_id {
        bail!(
            "tokens.image_pad ({}) differs from model.image_token_id ({})",
            m.tokens.image_pad,
            m.model.image_token_id
        );
    }
    if m.max_context == 0 {
        bail!("max_context is 0");
    }
    Ok(())
}

/// Parses one `.onnx` file of the bundle and checks every external-data reference in it.
pub fn read_graph(dir: &Path, manifest: &Manifest, rel: &str) -> Result<GraphInfo> {
    let path = manifest.path_of(dir, rel)?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    graph_from_bytes(dir, manifest, rel, &bytes)
}

/// [`read_graph`] of the `.onnx` file's bytes, already read (the fuzzer's entry point).
pub fn graph_from_bytes(
    dir: &Path,
    manifest: &Manifest,
    rel: &str,
    bytes: &[u8],
) -> Result<GraphInfo> {
    let path = manifest.path_of(dir, rel)?;
    let model = ModelProto::from_bytes(bytes)
        .map_err(|e| anyhow!("{}: not a valid ONNX model: {e}", path.display()))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("{}: the ONNX model has no graph", path.display()))?;

    // External data locations are relative to the directory holding the .onnx file.
    let base = match rel.rfind('/') {
        Some(i) => &rel[..=i],
        None => "",
    };
    let mut external_files = BTreeSet::new();
    let mut problem = None;
    visit_tensors(graph, &mut |t| {
        if problem.is_some() {
            return;
        }
        if let Err(e) = check_external(dir, manifest, base, t, &mut external_files) {
            problem = Some(e);
        }
    });
    if let Some(e) = problem {
        return Err(e.context(format!("{}: refused", path.display())));
    }
    Ok(GraphInfo {
        rel: rel.to_string(),
        path,
        inputs: graph.input.iter().map(graph_io).collect(),
        outputs: graph.output.iter().map(graph_io).collect(),
        external_files,
    })
}

/// Calls `f` on every tensor a graph embeds: initializers and node attributes, subgraphs too.
fn visit_tensors(graph: &GraphProto, f: &mut dyn FnMut(&TensorProto)) {
    for t in &graph.initializer {
        f(t);
    }
    for node in &graph.node {
        for attr in &node.attribute {
            if let Some(t) = &attr.t {
                f(t);
            }
            for t in &attr.tensors {
                f(t);
            }
            if let Some(g) = &attr.g {
                visit_tensors(g, f);
            }
            for g in &attr.graphs {
                visit_tensors(g, f);
            }
        }
    }
}

/// An external-data reference must stay inside the bundle, name a file the manifest lists
/// (so that its checksum was verified), and lie within that file.
fn check_external(
    dir: &Path,
    manifest: &Manifest,
    base: &str,
    t: &TensorProto,
    files: &mut BTreeSet<String>,
) -> Result<()> {
    let Some(loc) = t.external_location().map_err(|e| anyhow!(e))? else {
        return Ok(());
    };
    let name = t.name.as_deref().unwrap_or("?");
    let rel = format!("{base}{}", loc.location);
    let path = resolve_in_bundle(dir, &rel)
        .map_err(anyhow::Error::new)
        .with_context(|| {
            format!(
                "initializer {name}: external data location {:?} is outside the bundle",
                loc.location
            )
        })?;
    let Some(entry) = manifest.files.iter().find(|f| f.path == rel) else {
        bail!(
            "initializer {name}: external data file {rel:?} is not listed in manifest.json, \
             so its integrity cannot be checked"
        );
    };
    let end = loc
        .offset
        .checked_add(loc.length.unwrap_or(0))
        .ok_or_else(|| anyhow!("initializer {name}: external data offset overflows"))?;
    if end > entry.bytes {
        bail!(
            "initializer {name}: external data {}..{end} lies past the end of {} ({} bytes)",
            loc.offset,
            path.display(),
            entry.bytes
        );
    }
    files.insert(rel);
    Ok(())
}

fn graph_io(v: &ValueInfoProto) -> GraphIo {
    use ove_core::onnx_proto::tensor_shape_proto::dimension::Value as Dim;
    use ove_core::onnx_proto::type_proto::Value;
    let (elem_type, dims) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(t)) => (
            t.elem_type.unwrap_or(data_type::UNDEFINED),
            t.shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(Dim::DimValue(n)) => Some(n),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        None => (data_type::UNDEFINED, Vec::new()),
    };
    GraphIo {
        name: v.name.clone().unwrap_or_default(),
        elem_type,
        dims,
    }
}

/// Checks that a graph declares `name` with the dtype and rank the contract gives, and that
/// its fixed dimensions agree with `expect` (`None` = any size).
fn expect_io(
    graph: &GraphInfo,
    output: bool,
    name: &str,
    elem_type: i32,
    expect: &[Option<usize>],
) -> Result<()> {
    let (list, what) = if output {
        (&graph.outputs, "output")
    } else {
        (&graph.inputs, "input")
    };
    let io = list.iter().find(|i| i.name == name).ok_or_else(|| {
        anyhow!(
            "{}: has no {what} {name:?} (has {:?}); the bundle was written for another \
             runtime version (see docs/BUNDLE.md)",
            graph.path.display(),
            list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>()
        )
    })?;
    if io.elem_type != elem_type {
        bail!(
            "{}: {what} {name:?} has ONNX element type {}, expected {elem_type}",
            graph.path.display(),
            io.elem_type
        );
    }
    if !io.dims.is_empty() {
        if io.dims.len() != expect.len() {
            bail!(
                "{}: {what} {name:?} has rank {}, expected {}",
                graph.path.display(),
                io.dims.len(),
                expect.len()
            );
        }
        for (i, (have, want)) in io.dims.iter().zip(expect).enumerate() {
            if let (Some(h), Some(w)) = (have, want) {
                if *h as usize != *w {
                    bail!(
                        "{}: {what} {name:?} dimension {i} is {h}, the manifest implies {w}",
                        graph.path.display()
                    );
                }
            }
        }
    }
    Ok(())
}

fn check_vision_io(g: &GraphInfo, m: &Manifest) -> Result<()> {
    let v = &m.model.vision_config;
    let h = m.model.text_config.hidden_size;
    expect_io(
        g,
        false,
        io::PIXEL_VALUES,
        data_type::FLOAT,
        &[None, Some(v.patch_dim())],
    )?;
    expect_io(g, false, io::PATCH_POS, data_type::INT64, &[None, Some(2)])?;
    expect_io(
        g,
        true,
        io::VISION_TOKENS,
        data_type::FLOAT,
        &[None, Some(v.hidden_size)],
    )?;
    expect_io(
        g,
        true,
        io::IMAGE_EMBEDS,
        data_type::FLOAT,
        &[None, Some(h)],
    )?;
    Ok(())
}

fn check_lines_io(g: &GraphInfo, m: &Manifest) -> Result<()> {
    let v = &m.model.vision_config;
    expect_io(
        g,
        false,
        io::PIXEL_VALUES,
        data_type::FLOAT,
        &[None, None, Some(v.patch_dim())],
    )?;
    expect_io(
        g,
        false,
        io::PATCH_POS,
        data_type::INT64,
        &[None, None, Some(2)],
    )?;
    expect_io(g, false, io::KEY_BIAS, data_type::FLOAT, &[None, None])?;
    expect_io(
        g,
        true,
        io::LINE_TOKENS,
        data_type::FLOAT,
        &[None, None, Some(v.hidden_size)],
    )
}

/// `f16_kv`: the cache may be f16 (decoder_ort.onnx exported with `--kv-cache f16`); every
/// cache tensor then has the type of `past_key.0`.
fn check_decoder_io(g: &GraphInfo, m: &Manifest, f16_kv: bool) -> Result<()> {
    let t = &m.model.text_config;
    let (h, kvh, hd) = (t.hidden_size, t.num_key_value_heads, t.head_dim());
    // graphs.decoder_batch: a leading batch axis on every input but logits_index.
    let lead = |dims: &[Option<usize>]| -> Vec<Option<usize>> {
        let batch = m.graphs.decoder_batch.then_some(None);
        batch.into_iter().chain(dims.iter().copied()).collect()
    };
    expect_io(
        g,
        false,
        io::INPUTS_EMBEDS,
        data_type::FLOAT,
        &[None, Some(h)],
    )?;
    expect_io(g, false, io::POSITION_IDS, data_type::INT64, &lead(&[None]))?;
    expect_io(
        g,
        false,
        io::ATTENTION_BIAS,
        data_type::FLOAT,
        &lead(&[None, None]),
    )?;
    expect_io(g, false, io::LOGITS_INDEX, data_type::INT64, &[None])?;
    expect_io(
        g,
        true,
        io::LOGITS,
        data_type::FLOAT,
        &[None, Some(t.vocab_size)],
    )?;
    let kv = lead(&[Some(kvh), None, Some(hd)]);
    let kv_type = match g.input(&io::past_key(0)) {
        Some(p) if f16_kv && p.elem_type == data_type::FLOAT16 => data_type::FLOAT16,
        _ => data_type::FLOAT,
    };
    for l in 0..t.num_hidden_layers {
        for (output, prefix) in [
            (false, io::PAST_KEY),
            (false, io::PAST_VALUE),
            (true, io::PRESENT_KEY),
            (true, io::PRESENT_VALUE),
        ] {
            expect_io(g, output, &format!("{prefix}.{l}"), kv_type, &kv)?;
        }
    }
    let past_key = format!("{}.", io::PAST_KEY);
    let layers = g
        .inputs
        .iter()
        .filter(|i| i.name.starts_with(&past_key))
        .count();
    if layers != t.num_hidden_layers {
        bail!(
            "{}: has {layers} past_key inputs, the manifest says {} layers",
            g.path.display(),
            t.num_hidden_layers
        );
    }
    Ok(())
}
