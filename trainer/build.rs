//! Builds the C++ shim over what tch does not bind: `csrc/c10d_shim.cpp` (c10d's process
//! groups and their collectives) and `csrc/fused_ops.cpp` (fused AdamW, foreach copy),
//! against the headers of the same libtorch
//! tch links (`LIBTORCH`, set by `.venv/ove-env.sh`). Gloo's headers are not in the
//! PyTorch wheel: they come from Debian's `libgloo-dev` (`scripts/setup` installs it), or
//! from `GLOO_INCLUDE`. Only headers are used: the Gloo code itself is inside
//! libtorch_cpu.

use std::path::PathBuf;

fn main() {
    for f in [
        "csrc/c10d_shim.cpp",
        "csrc/fused_ops.cpp",
        "csrc/shim_error.h",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
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
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("csrc/c10d_shim.cpp")
        .file("csrc/fused_ops.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .compile("ove_torch_shim");
    // After the archive, so that its references to c10d resolve.
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
