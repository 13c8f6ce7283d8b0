//! What the targets read besides the input: the built-in model's configs and tokenizer
//! (the files a real bundle carries), and a scratch bundle folder with a few files and a
//! link that points out of it, for the path checks. Made once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ove_core::config::{GenerationConfig, ModelConfig, PreprocessorConfig};
use ove_core::manifest::Manifest;

/// The built-in model's bundle in the source tree.
pub fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default-ocr")
}

/// The fuzz folder of the source tree (corpus, regressions, dictionaries).
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

pub struct Fixtures {
    /// A scratch bundle: the built-in manifest's files as small stand-ins, `inside.bin`,
    /// `sub/inner.bin`, and `escape` (a link to the folder above the bundle).
    pub bundle: PathBuf,
    /// Where `ove serve --allow-dir` points in the serve target (holds `page.png`).
    pub allowed: PathBuf,
    /// A scratch file the targets that read from a path write their input to (one per
    /// process).
    pub scratch: PathBuf,
    pub manifest: Manifest,
    pub config: ModelConfig,
    pub preprocessor: PreprocessorConfig,
    /// The built-in preprocessor resizing to 1-16 merged tokens: the same resize,
    /// normalisation and patch code, a millisecond an image.
    pub small_preprocessor: PreprocessorConfig,
    pub generation: GenerationConfig,
    pub tokenizer_path: PathBuf,
}

static FIXTURES: OnceLock<Fixtures> = OnceLock::new();

/// Where the fixtures live: one folder under the system's temporary directory, shared by
/// every process (AFL++ runs several; each writes the same files), a few kilobytes.
pub fn root() -> PathBuf {
    std::env::temp_dir().join("ove-fuzz")
}

/// The fixtures, made on first use.
pub fn get() -> &'static Fixtures {
    FIXTURES.get_or_init(|| make().unwrap_or_else(|e| panic!("ove-fuzz fixtures: {e:#}")))
}

fn make() -> anyhow::Result<Fixtures> {
    use anyhow::Context;
    let root = root();
    let bundle = root.join("bundle");
    let allowed = root.join("allowed");
    std::fs::create_dir_all(bundle.join("sub"))?;
    std::fs::create_dir_all(&allowed)?;
    let model = model_dir();
    let manifest_text = std::fs::read_to_string(model.join("manifest.json"))
        .with_context(|| format!("reading {}", model.display()))?;
    let manifest = Manifest::parse(&model, &manifest_text)?;
    for f in &manifest.files {
        let p = bundle.join(&f.path);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&p, vec![0u8; 4096])?;
    }
    std::fs::write(bundle.join("inside.bin"), b"inside")?;
    std::fs::write(bundle.join("sub/inner.bin"), b"inner")?;
    std::fs::write(root.join("outside.bin"), b"outside")?;
    if let Err(e) = std::os::unix::fs::symlink(&root, bundle.join("escape")) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e.into());
        }
    }
    let page = image::RgbImage::from_pixel(28, 28, image::Rgb([250, 250, 250]));
    // Written aside and renamed: another process may be reading it.
    let tmp = allowed.join(format!(".page-{}.png", std::process::id()));
    page.save(&tmp)?;
    std::fs::rename(&tmp, allowed.join("page.png"))?;
    let config = manifest.model.clone();
    let preprocessor = manifest.preprocessor.clone();
    let generation = manifest.generation.clone();
    let mut small_preprocessor = preprocessor.clone();
    let token = (preprocessor.factor() as u64).pow(2);
    small_preprocessor.min_pixels = Some(token);
    small_preprocessor.max_pixels = Some(16 * token);
    small_preprocessor.size = None;
    Ok(Fixtures {
        scratch: root.join(format!("input-{}.bin", std::process::id())),
        allowed: allowed.canonicalize()?,
        bundle,
        manifest,
        config,
        preprocessor,
        small_preprocessor,
        generation,
        tokenizer_path: model.join("tokenizer.json"),
    })
}
