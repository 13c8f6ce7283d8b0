//! The profile file: execution-provider settings kept next to a bundle (`ove-profile.toml`) or
//! named with `--profile FILE`, so that a board's choices (TensorRT caches, profile sizes, a
//! CUDA memory cap) need not be repeated on every command line.
//!
//! It sits between the defaults and the command line ([`super::resolve_settings`]). The
//! format is TOML only: a `.json` path is refused with an error that says so, rather than
//! read as TOML and failing on its first brace.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{normalize_order, parse_ep_list, Provider, ProviderSettings};

/// The profile file `ove` picks up from a bundle directory when `--profile` is not given.
pub const PROFILE_FILE: &str = "ove-profile.toml";

/// The profile file (`ove-profile.toml`). Every key is optional; unknown keys are an error (a
/// misspelt key must not be silently ignored).
///
/// ```toml
/// providers = ["tensorrt", "cuda", "cpu"]  # or "auto"
/// device_id = 0
/// max_context = 2048          # lower than the manifest's max_context
///
/// [tensorrt]
/// fp16 = true
/// engine_cache = true
/// timing_cache = true
/// cache_dir = "/var/cache/ove" # relative paths: from the profile file's directory
/// workspace_mb = 2048
/// builder_optimization_level = 3
/// max_images = 4
/// max_patches = 13056
/// opt_patches = 4096
/// max_new_tokens_per_call = 1024
///
/// [cuda]
/// memory_limit_mb = 4096
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub providers: Option<ProvidersKey>,
    pub device_id: Option<u32>,
    pub max_context: Option<usize>,
    pub tensorrt: Option<TensorRtFile>,
    pub cuda: Option<CudaFile>,
}

/// `providers = "auto"` or `providers = ["tensorrt", "cpu"]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ProvidersKey {
    One(String),
    List(Vec<Provider>),
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorRtFile {
    pub fp16: Option<bool>,
    pub engine_cache: Option<bool>,
    pub timing_cache: Option<bool>,
    pub cache_dir: Option<PathBuf>,
    pub workspace_mb: Option<u64>,
    pub builder_optimization_level: Option<u8>,
    pub max_images: Option<usize>,
    pub max_patches: Option<usize>,
    pub opt_patches: Option<usize>,
    pub max_new_tokens_per_call: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CudaFile {
    pub memory_limit_mb: Option<u64>,
}

impl ProfileFile {
    /// Parses a profile (TOML).
    pub fn parse(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Reads a profile file. A name ending in `.json` is an error: profiles are TOML.
    pub fn read(path: &Path) -> Result<Self> {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            bail!(
                "profile {}: profiles are TOML, not JSON; write the same keys as TOML in a \
                 .toml file (e.g. {PROFILE_FILE})",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading profile {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("profile {}", path.display()))
    }

    /// The profile a bundle directory carries, if any (`ove-profile.toml`).
    pub fn find_in(bundle: &Path) -> Option<PathBuf> {
        Some(bundle.join(PROFILE_FILE)).filter(|p| p.is_file())
    }

    /// Applies the profile over `s`; relative paths are taken from `base` (the profile's
    /// directory).
    pub fn apply(&self, s: &mut ProviderSettings, base: &Path) -> Result<()> {
        match &self.providers {
            Some(ProvidersKey::One(v)) => {
                s.order = parse_ep_list(v)?;
                s.explicit = !v.trim().eq_ignore_ascii_case("auto");
            }
            Some(ProvidersKey::List(v)) => {
                if v.is_empty() {
                    bail!("providers: empty list");
                }
                s.order = normalize_order(v.clone());
                s.explicit = true;
            }
            None => {}
        }
        if let Some(v) = self.device_id {
            s.device_id = v;
        }
        if let Some(v) = self.max_context {
            s.max_context = Some(v);
        }
        if let Some(t) = &self.tensorrt {
            let d = &mut s.tensorrt;
            macro_rules! set {
                ($($k:ident),*) => { $( if let Some(v) = t.$k { d.$k = v; } )* };
            }
            set!(fp16, engine_cache, timing_cache, max_images);
            macro_rules! set_opt {
                ($($k:ident),*) => { $( if t.$k.is_some() { d.$k = t.$k; } )* };
            }
            set_opt!(
                workspace_mb,
                builder_optimization_level,
                max_patches,
                opt_patches,
                max_new_tokens_per_call
            );
            if let Some(p) = &t.cache_dir {
                d.cache_dir = Some(base.join(p));
            }
            if d.builder_optimization_level.is_some_and(|l| l > 5) {
                bail!("tensorrt.builder_optimization_level must be 0..=5");
            }
            if d.max_images == 0 {
                bail!("tensorrt.max_images must be at least 1");
            }
        }
        if let Some(c) = &self.cuda {
            if c.memory_limit_mb.is_some() {
                s.cuda.memory_limit_mb = c.memory_limit_mb;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::auto;
    use super::*;

    #[test]
    fn profile_files_parse_and_reject_unknown_keys() {
        let text = r#"
            providers = ["cuda"]
            device_id = 2
            max_context = 2048
            [tensorrt]
            fp16 = false
            cache_dir = "cache"
            workspace_mb = 1024
            max_images = 2
            [cuda]
            memory_limit_mb = 4096
        "#;
        let f = ProfileFile::parse(text).unwrap();
        let mut s = auto();
        f.apply(&mut s, Path::new("/bundle")).unwrap();
        assert_eq!(s.order, vec![Provider::Cuda, Provider::Cpu]);
        assert_eq!(s.device_id, 2);
        assert_eq!(s.max_context, Some(2048));
        assert!(!s.tensorrt.fp16);
        assert!(s.tensorrt.engine_cache);
        assert_eq!(s.tensorrt.cache_dir, Some(PathBuf::from("/bundle/cache")));
        assert_eq!(s.tensorrt.workspace_mb, Some(1024));
        assert_eq!(s.tensorrt.max_images, 2);
        assert_eq!(s.cuda.memory_limit_mb, Some(4096));

        let f = ProfileFile::parse(r#"providers = "auto""#).unwrap();
        let mut s = ProviderSettings::default();
        f.apply(&mut s, Path::new("/")).unwrap();
        assert_eq!(s.order, Provider::AUTO.to_vec());

        let f = ProfileFile::parse(
            "providers = [\"tensorrt\", \"cpu\"]\n[tensorrt]\nopt_patches = 1024",
        )
        .unwrap();
        assert_eq!(f.tensorrt.unwrap().opt_patches, Some(1024));

        for bad in [
            "provider = [\"cuda\"]",
            "[tensorrt]\nfp61 = true",
            "[tensorrt]\nfp16 = true\nx = 1",
            "[cuda]\nmemory_limit = 1",
            "[rocm]\ndevice_id = 0",
            "providers = [\"rocm\"]",
        ] {
            assert!(ProfileFile::parse(bad).is_err(), "accepted {bad:?}");
        }
        let f = ProfileFile::parse("[tensorrt]\nbuilder_optimization_level = 9").unwrap();
        assert!(f.apply(&mut auto(), Path::new("/")).is_err());
    }

    #[test]
    fn profile_files_are_found_in_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ProfileFile::find_in(dir.path()), None);
        // A JSON profile is not looked for.
        std::fs::write(dir.path().join("ove-profile.json"), "{}").unwrap();
        assert_eq!(ProfileFile::find_in(dir.path()), None);
        std::fs::write(dir.path().join(PROFILE_FILE), "device_id = 1").unwrap();
        let found = ProfileFile::find_in(dir.path()).unwrap();
        assert_eq!(found, dir.path().join(PROFILE_FILE));
        assert_eq!(ProfileFile::read(&found).unwrap().device_id, Some(1));
    }

    #[test]
    fn json_profiles_are_refused_as_not_toml() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["profile.json", "ove-profile.JSON"] {
            let p = dir.path().join(name);
            // Empty, which TOML would accept: the name alone decides.
            std::fs::write(&p, "").unwrap();
            let e = format!("{:#}", ProfileFile::read(&p).unwrap_err());
            assert!(e.contains(&p.display().to_string()), "{e}");
            assert!(e.contains("profiles are TOML, not JSON"), "{e}");
        }
        // Missing, it is the same error (not "No such file").
        let e = ProfileFile::read(&dir.path().join("gone.json")).unwrap_err();
        assert!(format!("{e:#}").contains("TOML"), "{e:#}");
    }
}
