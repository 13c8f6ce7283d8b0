//! The plan for one graph: the providers to register, in order, with their options, and a
//! note for each one left out.
//!
//! This is where the settings meet the bundle and the machine: a provider missing from the
//! loaded ONNX Runtime, or TensorRT for an int4 bundle it cannot run, is skipped with the
//! reason, so that `backend::ort` only registers what can work and the log says why.

use std::path::Path;

use ove_core::manifest::Manifest;

use super::device::{self, trt_cache_dir, DeviceInfo};
use super::tensorrt::tensorrt_options;
use super::{normalize_order, Graph, Provider, ProviderSettings};

/// One provider to register, with ONNX Runtime's option keys and values.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub provider: Provider,
    pub options: Vec<(String, String)>,
}

impl ProviderConfig {
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The providers for one graph, in order, and why any were left out.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphPlan {
    pub graph: Graph,
    pub providers: Vec<ProviderConfig>,
    /// One line per provider skipped or caveat (for the log).
    pub notes: Vec<String>,
}

/// The CUDA provider's options.
pub fn cuda_options(s: &ProviderSettings) -> Vec<(String, String)> {
    let mut o = vec![("device_id".to_string(), s.device_id.to_string())];
    if let Some(mb) = s.cuda.memory_limit_mb {
        o.push((
            "gpu_mem_limit".into(),
            (mb.saturating_mul(1 << 20)).to_string(),
        ));
        // Grow the arena by what is asked, not by powers of two, to stay under the cap.
        o.push(("arena_extend_strategy".into(), "kSameAsRequested".into()));
    }
    o
}

/// Decides the providers for one graph. `available` says whether the loaded ONNX Runtime
/// has a provider (ort's `is_available()`, injected so that tests need no GPU); one that
/// is not there, or TensorRT for a bundle it cannot take, becomes a note and the next is
/// used. The CPU is always there, last.
pub fn plan(
    m: &Manifest,
    s: &ProviderSettings,
    graph: Graph,
    bundle_dir: &Path,
    device: &DeviceInfo,
    available: &dyn Fn(Provider) -> bool,
) -> GraphPlan {
    let mut providers = Vec::new();
    let mut notes = Vec::new();
    let q = &m.quantization;
    let int4 = q.scheme == "int4";
    let qdq = int4 && q.target.as_deref() == Some("tensorrt");
    for &p in &normalize_order(s.order.clone()) {
        if p != Provider::Cpu && !available(p) {
            notes.push(format!(
                "{p}: not in this ONNX Runtime build ({} missing); trying the next provider",
                p.ort_name()
            ));
            continue;
        }
        match p {
            Provider::TensorRt => {
                if qdq && device::trt_major(device).is_some_and(|v| v < 10) {
                    notes.push(format!(
                        "TensorRT: {graph}.onnx has int4 DequantizeLinear weights, which need \
                         TensorRT >= 10 (found {}); trying the next provider",
                        device.tensorrt_version.as_deref().unwrap_or("?")
                    ));
                    continue;
                }
                if int4 && !qdq && graph == Graph::Decoder {
                    notes.push(
                        "TensorRT: this int4 bundle uses MatMulNBits (export target ort), which \
                         TensorRT cannot run: those nodes go to the next provider; export with \
                         --int4 --target tensorrt for an all-TensorRT decoder"
                            .into(),
                    );
                }
                let dir = trt_cache_dir(
                    bundle_dir,
                    s.tensorrt.cache_dir.as_deref(),
                    &m.bundle_digest(),
                    device,
                );
                providers.push(ProviderConfig {
                    provider: p,
                    options: tensorrt_options(m, s, graph, &dir),
                });
            }
            Provider::Cuda => providers.push(ProviderConfig {
                provider: p,
                options: cuda_options(s),
            }),
            Provider::Cpu => providers.push(ProviderConfig {
                provider: p,
                options: Vec::new(),
            }),
        }
    }
    GraphPlan {
        graph,
        providers,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{all, auto, manifest};
    use super::super::{CudaSettings, TensorRtSettings};
    use super::*;

    #[test]
    fn unavailable_providers_fall_through_in_order() {
        let m = manifest();
        let dir = Path::new("/b");
        let dev = DeviceInfo::default();
        let p = plan(&m, &auto(), Graph::Decoder, dir, &dev, &all);
        let order: Vec<_> = p.providers.iter().map(|c| c.provider).collect();
        assert_eq!(order, Provider::AUTO.to_vec());
        assert!(p.notes.is_empty(), "{:?}", p.notes);

        let no_trt = |p: Provider| p != Provider::TensorRt;
        let p = plan(&m, &auto(), Graph::Vision, dir, &dev, &no_trt);
        let order: Vec<_> = p.providers.iter().map(|c| c.provider).collect();
        assert_eq!(order, vec![Provider::Cuda, Provider::Cpu]);
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].contains("TensorrtExecutionProvider missing"));

        let cpu_only = |p: Provider| p == Provider::Cpu;
        let p = plan(&m, &auto(), Graph::Vision, dir, &dev, &cpu_only);
        assert_eq!(p.providers.len(), 1);
        assert_eq!(p.providers[0].provider, Provider::Cpu);
        assert_eq!(p.notes.len(), 2);

        // Asking for CUDA alone still ends on the CPU.
        let s = ProviderSettings {
            order: vec![Provider::Cuda],
            ..Default::default()
        };
        let p = plan(&m, &s, Graph::Vision, dir, &dev, &all);
        let order: Vec<_> = p.providers.iter().map(|c| c.provider).collect();
        assert_eq!(order, vec![Provider::Cuda, Provider::Cpu]);
    }

    #[test]
    fn provider_options_from_settings() {
        let m = manifest();
        let s = ProviderSettings {
            device_id: 1,
            tensorrt: TensorRtSettings {
                fp16: false,
                engine_cache: false,
                timing_cache: false,
                workspace_mb: Some(2048),
                builder_optimization_level: Some(5),
                ..Default::default()
            },
            cuda: CudaSettings {
                memory_limit_mb: Some(3072),
            },
            ..auto()
        };
        let p = plan(
            &m,
            &s,
            Graph::Decoder,
            Path::new("/b"),
            &DeviceInfo::default(),
            &all,
        );
        let trt = &p.providers[0];
        assert_eq!(trt.option("device_id"), Some("1"));
        assert_eq!(trt.option("trt_fp16_enable"), Some("0"));
        assert_eq!(trt.option("trt_engine_cache_path"), None);
        assert_eq!(trt.option("trt_max_workspace_size"), Some("2147483648"));
        assert_eq!(trt.option("trt_builder_optimization_level"), Some("5"));
        let cuda = &p.providers[1];
        assert_eq!(cuda.provider, Provider::Cuda);
        assert_eq!(cuda.option("device_id"), Some("1"));
        assert_eq!(cuda.option("gpu_mem_limit"), Some("3221225472"));
        assert!(p.providers[2].options.is_empty());
    }

    #[test]
    fn int4_bundles_and_tensorrt() {
        let mut m = manifest();
        m.quantization.scheme = "int4".into();
        m.quantization.target = Some("tensorrt".into());
        let old = DeviceInfo {
            tensorrt_version: Some("8.5.2".into()),
            ..Default::default()
        };
        let p = plan(&m, &auto(), Graph::Decoder, Path::new("/b"), &old, &all);
        assert_eq!(p.providers[0].provider, Provider::Cuda);
        assert!(p.notes[0].contains("TensorRT >= 10"), "{:?}", p.notes);
        let new = DeviceInfo {
            tensorrt_version: Some("10.3.0".into()),
            ..Default::default()
        };
        let p = plan(&m, &auto(), Graph::Decoder, Path::new("/b"), &new, &all);
        assert_eq!(p.providers[0].provider, Provider::TensorRt);
        assert!(p.notes.is_empty());
        m.quantization.target = Some("ort".into());
        let p = plan(&m, &auto(), Graph::Decoder, Path::new("/b"), &new, &all);
        assert_eq!(p.providers[0].provider, Provider::TensorRt);
        assert!(p.notes[0].contains("MatMulNBits"));
    }
}
