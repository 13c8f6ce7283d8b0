//! Builds the C++ shim over what tch does not bind: `csrc/c10d_shim.cpp` (c10d's process
//! groups and their collectives), `csrc/grad_reducer.cpp` (gradient all-reduce started
//! from post-accumulate-grad hooks, overlapping the backward) and `csrc/fused_ops.cpp`
//! (fused AdamW, foreach copy, varlen flash attention), against the headers of the same libtorch
//! tch links (`LIBTORCH`, set by `.venv/ove-env.sh`). Gloo's headers are not in the
//! PyTorch wheel: they come from Debian's `libgloo-dev` (`scripts/setup` installs it), or
//! from `GLOO_INCLUDE`. Only headers are used: the Gloo code itself is inside
//! libtorch_cpu.
//!
//! With the `nccl` feature also `csrc/nccl_shim.cpp` (ProcessGroupNCCL), against CUDA's
//! and NCCL's headers (`CUDA_INCLUDE`, `NCCL_INCLUDE`; by default those of the PyPI
//! wheels beside torch: `nvidia/cu13/include`, `nvidia/nccl/include`, which
//! `scripts/setup-torchrun` installs), and the binary then links libtorch_cuda and
//! c10_cuda: it needs the CUDA libraries to start. Without the feature
//! the binary runs on a machine with libtorch's CPU libraries alone.

use std::path::PathBuf;

fn main() {
    for f in [
        "csrc/c10d_shim.cpp",
        "csrc/c10d_shim.h",
        "csrc/fused_ops.cpp",
        "csrc/grad_reducer.cpp",
        "csrc/nccl_shim.cpp",
        "csrc/shim_error.h",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=CUDA_INCLUDE");
    println!("cargo:rerun-if-env-changed=NCCL_INCLUDE");
    let include = match std::env::var_os("LIBTORCH_INCLUDE") {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("LIBTORCH") {
            Some(dir) => PathBuf::from(dir).join("include"),
            None => fail(
                "LIBTORCH is not set: source .venv/ove-env.sh (scripts/setup writes it) so \
                 that the c10d shim builds against the libtorch tch links",
            ),
        },
    };
    if !include
        .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
        .exists()
    {
        fail(&format!(
            "{}: no torch/csrc/distributed/c10d headers (is LIBTORCH a full libtorch?)",
            include.display()
        ));
    }
    let gloo = std::env::var_os("GLOO_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    if !gloo.join("gloo/context.h").exists() {
        fail(&format!(
            "{}: no gloo/context.h; install Debian's libgloo-dev (scripts/setup does) or \
             set GLOO_INCLUDE",
            gloo.display()
        ));
    }
    let nccl = std::env::var_os("CARGO_FEATURE_NCCL").is_some();
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file("csrc/c10d_shim.cpp")
        .file("csrc/fused_ops.cpp")
        .file("csrc/grad_reducer.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false);
    if nccl {
        let wheels = include.join("../../nvidia");
        for (var, default, probe) in [
            (
                "CUDA_INCLUDE",
                wheels.join("cu13/include"),
                "cuda_runtime_api.h",
            ),
            ("NCCL_INCLUDE", wheels.join("nccl/include"), "nccl.h"),
        ] {
            let dir = std::env::var_os(var).map_or(default, PathBuf::from);
            if !dir.join(probe).exists() {
                fail(&format!(
                    "the nccl feature needs {probe} in {} (scripts/setup-torchrun installs \
                     torch's CUDA wheels; or set {var})",
                    dir.display()
                ));
            }
            build.include(dir);
        }
        build
            .file("csrc/nccl_shim.cpp")
            .define("USE_C10D_NCCL", None);
    }
    build.compile("ove_torch_shim");
    // After the archive, so that its references to c10d resolve.
    if nccl {
        // nccl_shim.o refers to ProcessGroupNCCL, so --as-needed keeps these.
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
