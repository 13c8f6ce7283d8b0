//! What is known about the machine, and what is keyed by it.
//!
//! [`DeviceInfo::detect`] reads the installed TensorRT version and the board or GPU name; tests
//! inject a [`DeviceInfo`] instead, so that planning needs no GPU. Two things depend on it: the
//! TensorRT cache directory ([`trt_cache_dir`]: an engine is only valid for one model, one
//! TensorRT version and one GPU) and whether TensorRT can take an int4 QDQ bundle
//! (TensorRT >= 10).

use std::path::{Path, PathBuf};

/// Where the TensorRT engine and timing caches go, inside the bundle directory, by default.
pub const TRT_CACHE_DIR: &str = ".trt-cache";

/// What is known about the machine: read by [`DeviceInfo::detect`], injected by tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceInfo {
    /// e.g. "10.3.0", from the installed `libnvinfer.so.X.Y.Z`.
    pub tensorrt_version: Option<String>,
    /// e.g. "NVIDIA Jetson Orin Nano Developer Kit".
    pub device_name: Option<String>,
}

impl DeviceInfo {
    /// Looks for `libnvinfer.so.X.Y.Z` (LD_LIBRARY_PATH, the CUDA and system library
    /// directories) and the board or GPU name (`/proc/device-tree/model` on a Jetson, the
    /// NVIDIA driver's `/proc/driver/nvidia/gpus/*/information` elsewhere).
    pub fn detect() -> Self {
        let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        for d in [
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/local/cuda/lib64",
            "/usr/local/cuda/targets/aarch64-linux/lib",
            "/usr/lib",
            "/usr/local/lib",
        ] {
            dirs.push(PathBuf::from(d));
        }
        let tensorrt_version = dirs.iter().find_map(|d| {
            let names = std::fs::read_dir(d)
                .ok()?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("libnvinfer.so."))
                        .map(str::to_string)
                });
            names
                .filter(|v| v.split('.').all(|p| p.parse::<u64>().is_ok()))
                .max_by_key(|v| {
                    v.split('.')
                        .map(|p| p.parse::<u64>().unwrap_or(0))
                        .collect::<Vec<_>>()
                })
        });
        let device_name = std::fs::read_to_string("/proc/device-tree/model")
            .ok()
            .map(|s| s.trim_matches(char::from(0)).trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                let dir = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
                dir.filter_map(|e| e.ok()).find_map(|e| {
                    let info = std::fs::read_to_string(e.path().join("information")).ok()?;
                    info.lines()
                        .find_map(|l| l.strip_prefix("Model:"))
                        .map(|m| m.trim().to_string())
                })
            });
        Self {
            tensorrt_version,
            device_name,
        }
    }
}

/// Keeps a name usable as one path component.
fn path_safe(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let out = out.trim_matches('_').to_string();
    if out.is_empty() {
        "unknown".into()
    } else {
        out
    }
}

/// The TensorRT cache directory: `ROOT/<digest[..16]>-trt<version>-<device>`, ROOT being
/// `cache_root` or `BUNDLE/.trt-cache`. Engines are only valid for one model, one TensorRT
/// version and one GPU, so each combination gets its own directory.
pub fn trt_cache_dir(
    bundle_dir: &Path,
    cache_root: Option<&Path>,
    bundle_digest: &str,
    device: &DeviceInfo,
) -> PathBuf {
    let root = cache_root.map_or_else(|| bundle_dir.join(TRT_CACHE_DIR), Path::to_path_buf);
    let digest = &bundle_digest[..bundle_digest.len().min(16)];
    let version = device.tensorrt_version.as_deref().unwrap_or("unknown");
    let name = device.device_name.as_deref().unwrap_or("unknown-gpu");
    root.join(format!(
        "{}-trt{}-{}",
        path_safe(digest),
        path_safe(version),
        path_safe(name)
    ))
}

/// The major version of the installed TensorRT, when known.
pub(super) fn trt_major(device: &DeviceInfo) -> Option<u64> {
    device
        .tensorrt_version
        .as_deref()?
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::super::tests::manifest;
    use super::*;

    #[test]
    fn cache_dir_is_keyed_by_bundle_version_and_device() {
        let m = manifest();
        let digest = m.bundle_digest();
        let dev = DeviceInfo {
            tensorrt_version: Some("10.3.0".into()),
            device_name: Some("NVIDIA Jetson Orin Nano Developer Kit".into()),
        };
        let d = trt_cache_dir(Path::new("/opt/ove/bundles/ocr"), None, &digest, &dev);
        assert_eq!(
            d,
            PathBuf::from(format!(
                "/opt/ove/bundles/ocr/.trt-cache/{}-trt10.3.0-NVIDIA_Jetson_Orin_Nano_Developer_Kit",
                &digest[..16]
            ))
        );
        let other = DeviceInfo {
            tensorrt_version: Some("8.6.2".into()),
            ..dev.clone()
        };
        assert_ne!(trt_cache_dir(Path::new("/b"), None, &digest, &other), d);
        let mut m2 = m.clone();
        m2.files[0].sha256 = "ff".into();
        assert_ne!(
            trt_cache_dir(Path::new("/b"), None, &m2.bundle_digest(), &dev),
            trt_cache_dir(Path::new("/b"), None, &digest, &dev)
        );
        let root = trt_cache_dir(Path::new("/b"), Some(Path::new("/cache")), &digest, &dev);
        assert!(root.starts_with("/cache"));
        let unknown = trt_cache_dir(Path::new("/b"), None, "ab/../cd", &DeviceInfo::default());
        assert_eq!(
            unknown,
            PathBuf::from("/b/.trt-cache/ab_.._cd-trtunknown-unknown-gpu")
        );
    }
}
