//! tract's decluttered decoder, cached on disk between runs.
//!
//! Loading a large decoder in tract is mostly analysis, not reading: at the Qwen3-1.7B shape
//! (int4) parsing takes 0.9 s, typing and decluttering 7.7 s and optimizing 5.3 s. The
//! decluttered model is written once as an NNEF archive (tract's own format, the int4
//! weights in its block-quant layout) and read back at the next start, so only the
//! optimization is left to do.
//!
//! Where: `$OVE_CACHE_DIR/tract`, else `$XDG_CACHE_HOME/ove/tract`, else
//! `$HOME/.cache/ove/tract`; `OVE_TRACT_CACHE=off` turns it off. The file name hashes the
//! bundle's digest (every file's sha256, from the manifest), the graph and its row setting,
//! then the build (tract and ove versions, the executable's size and time), so a re-exported
//! bundle or another build never reads a stale archive; writing one removes the other
//! builds' archives of the same bundle graph. An archive that cannot be written or read is a
//! warning, never an error: the graph is loaded from the bundle as without it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use tract_onnx::prelude::*;

use crate::bundle::Bundle;

/// The tract version the cached archives are written by (the workspace pins it).
const TRACT_VERSION: &str = "0.23.9";

/// The cache directory, or `None` when caching is off or no directory is known.
fn dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if env("OVE_TRACT_CACHE").is_some_and(|v| v == "off" || v == "0") {
        return None;
    }
    let base = env("OVE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| env("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("ove")))
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache").join("ove")))?;
    Some(base.join("tract"))
}

fn hash(v: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// What the build that writes an archive is: the tract and ove versions and the running
/// executable's size and modification time, so a rebuilt `ove` (whose tract facts may have
/// changed) never reads an older build's archive.
fn build_id() -> u64 {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| (m.len(), m.modified().ok()));
    hash((TRACT_VERSION, env!("CARGO_PKG_VERSION"), exe.ok()))
}

/// Where the decluttered model of the bundle's graph `rel` (loaded with `variant`, e.g. its
/// row setting) is cached: `{bundle}-{build}.nnef.tar`, where `{bundle}` hashes the bundle's
/// digest, the graph and the variant, and `{build}` the build ([`build_id`]).
pub(super) fn path_for(bundle: &Bundle, rel: &str, variant: &str) -> Option<PathBuf> {
    let key = hash((bundle.manifest().bundle_digest(), rel, variant));
    Some(dir()?.join(format!("{key:016x}-{:016x}.nnef.tar", build_id())))
}

/// Removes the archives of the same bundle graph that other builds wrote (one archive per
/// bundle graph stays: they are as large as the decoder's weights).
fn remove_older(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Some((bundle, _)) = name.split_once('-') else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let other = e.file_name();
        let other = other.to_string_lossy();
        if other != name && other.starts_with(&format!("{bundle}-")) && other.ends_with(".nnef.tar")
        {
            tracing::debug!(archive = %e.path().display(), "removing an older tract cache");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn nnef() -> tract_nnef::framework::Nnef {
    tract_nnef::nnef().with_onnx()
}

/// Writes `model` to `path` (through a temporary file and a rename, so a reader never sees
/// half an archive).
pub(super) fn write(model: &TypedModel, path: &Path) -> Result<()> {
    let dir = path.parent().context("cache path without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("partial-{}", std::process::id()));
    let t0 = std::time::Instant::now();
    let result = (|| {
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let w = nnef()
            .write_to_tar(model, std::io::BufWriter::new(file))
            .map_err(|e| anyhow!("{e:?}"))
            .context("writing the NNEF archive")?;
        w.into_inner()
            .map_err(|e| anyhow!("{e}"))?
            .sync_all()
            .context("flushing")?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    remove_older(path);
    tracing::info!(
        cache = %path.display(),
        ms = (t0.elapsed().as_secs_f64() * 1e3).round(),
        "tract model cached"
    );
    Ok(())
}

/// Reads a cached model.
pub(super) fn read(path: &Path) -> Result<TypedModel> {
    nnef()
        .model_for_path(path)
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| format!("reading {}", path.display()))
}
