//! Helpers shared by the trainer's tests (each test crate uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The golden reference cases (`../shared/golden` beside the project, as in CI).
pub fn golden() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden");
    assert!(p.is_dir(), "golden data missing at {}", p.display());
    p
}

/// Runs `ove-train ARGS` single-threaded (the tests share two cores), asserting success;
/// returns its stdout.
pub fn ove_train(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ove-train"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .output()
        .expect("running ove-train");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ove-train {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
