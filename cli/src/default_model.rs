//! The default OCR model, embedded in `ove` (feature `embedded-model`, on by default).
//!
//! The bundle's files are compiled in (see `build.rs`). On first use they are written to a
//! cache folder named by the sha256 of the embedded manifest, through a temporary folder and
//! one rename, so a crash or a concurrent first run never leaves a half-written bundle. From
//! then on the folder is opened like any other bundle, checksums included.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_bundle.rs"));
}

/// Overrides where the default bundle is unpacked.
pub const CACHE_ENV: &str = "OVE_CACHE_DIR";

/// Whether this binary carries the default model.
pub fn available() -> bool {
    !embedded::FILES.is_empty()
}

/// `$OVE_CACHE_DIR`, else `$XDG_CACHE_HOME/ove`, else `$HOME/.cache/ove`, else a folder in
/// the system's temporary directory.
fn cache_root() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var(CACHE_ENV)
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("ove")))
        .or_else(|| var("HOME").map(|p| p.join(".cache").join("ove")))
        .unwrap_or_else(|| std::env::temp_dir().join("ove-cache"))
}

/// The folder of the default bundle, unpacked on first use.
pub fn bundle_dir() -> Result<PathBuf> {
    if !available() {
        bail!(
            "no --bundle given, and this `ove` was built without the default model (feature \
             `embedded-model` off, or models/default-ocr missing at build time): pass --bundle DIR"
        );
    }
    let manifest = embedded::FILES
        .iter()
        .find(|(name, _)| *name == "manifest.json")
        .map(|(_, bytes)| *bytes)
        .context("the embedded default model has no manifest.json")?;
    let digest: String = Sha256::digest(manifest)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = cache_root();
    let dir = root.join(format!("default-ocr-{digest}"));
    if dir.join("manifest.json").is_file() {
        return Ok(dir);
    }
    unpack(&root, &dir).with_context(|| {
        format!(
            "unpacking the default model to {} (set {CACHE_ENV} to a writable folder)",
            dir.display()
        )
    })?;
    Ok(dir)
}

fn unpack(root: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(root)?;
    let tmp = root.join(format!(
        ".{}.tmp-{}",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("default-ocr"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for (name, bytes) in embedded::FILES {
        std::fs::write(tmp.join(name), bytes)
            .with_context(|| format!("writing {}", tmp.join(name).display()))?;
    }
    tracing::info!("default model unpacked to {}", dir.display());
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Another `ove` unpacked it first: theirs is as good as ours.
        Err(_) if dir.join("manifest.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e.into())
        }
    }
}
