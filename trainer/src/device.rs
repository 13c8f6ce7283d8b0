//! Device selection: `cpu`, `cuda` or `cuda:N`.
//!
//! The linker drops `libtorch_cuda.so` (it is linked `--as-needed` and nothing refers to
//! it by symbol), so without help libtorch sees no CUDA backend at all. When a CUDA device
//! is asked for, [`parse_device`] loads it with `dlopen` first (found through the usual
//! library path, e.g. `LD_LIBRARY_PATH=$TORCH/lib`), then checks that a GPU is there.

use anyhow::{bail, Context, Result};
use tch::Device;

/// Loads `libtorch_cuda.so` into the process (`RTLD_NOW | RTLD_GLOBAL`) so that its CUDA
/// kernels and hooks register with libtorch. Loading it twice is harmless.
pub fn load_torch_cuda() -> Result<()> {
    let name = c"libtorch_cuda.so";
    // SAFETY: dlopen with a valid NUL-terminated name; the handle is kept for the
    // lifetime of the process on purpose (never dlclose'd).
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a NUL-terminated string or null.
        let err = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown error".to_string()
            } else {
                std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        bail!(
            "cannot load libtorch_cuda.so ({err}); a CUDA device needs a CUDA build of \
             libtorch on the library path (e.g. LD_LIBRARY_PATH=$TORCH/lib)"
        );
    }
    Ok(())
}

/// `cpu`, `cuda` (device 0) or `cuda:N`; for CUDA, loads the CUDA backend and checks that
/// the device exists.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let index = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("bad device {s:?}: expected cpu, cuda or cuda:N"))?,
        None => bail!("bad device {s:?}: expected cpu, cuda or cuda:N"),
    };
    load_torch_cuda()?;
    if !tch::Cuda::is_available() {
        bail!("libtorch_cuda.so loaded but no CUDA device is available (driver, CUDA_VISIBLE_DEVICES?)");
    }
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        bail!("device {s:?} asked for, but only {count} CUDA device(s) are visible");
    }
    Ok(Device::Cuda(index))
}

/// Waits for the device's queued work (a no-op on the CPU).
pub fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        assert!(parse_device("cudax").is_err());
    }

    /// `cuda` is a GPU or an error with its reason: never the CPU in disguise.
    #[test]
    fn cuda_is_a_gpu_or_an_error_with_a_reason() {
        match parse_device("cuda") {
            Ok(d) => assert_eq!(d, Device::Cuda(0)),
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(
                    msg.contains("libtorch_cuda.so") || msg.contains("CUDA device"),
                    "unhelpful error: {msg}"
                );
            }
        }
    }
}
