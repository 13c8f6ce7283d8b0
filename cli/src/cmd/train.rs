//! `ove train ...`: forwards to `ove-train`, the trainer, which links libtorch. Keeping it a
//! separate binary keeps `ove` small and free of libtorch (it must run on a Jetson).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

/// Train, pack data or trace with the trainer (`ove-train`, needs libtorch): every argument
/// is passed on, e.g. `ove train trace --checkpoint DIR --case CASE --out OUT.safetensors`.
#[derive(clap::Args)]
pub struct Args {
    /// Arguments for ove-train (see `ove train --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// `ove-train` next to this executable first (an installed toolkit), else on PATH.
fn trainer_path() -> PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("ove-train")));
    match sibling {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("ove-train"),
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let exe = trainer_path();
    let status = Command::new(&exe)
        .args(&args.args)
        .status()
        .with_context(|| {
            format!(
                "cannot start {} (build it with `cargo build --release -p ove-train` after \
             `scripts/setup`, with .venv/ove-env.sh sourced for libtorch)",
                exe.display()
            )
        })?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
        None => ExitCode::from(1),
    })
}
