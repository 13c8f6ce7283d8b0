//! `ove deploy`: copies the aarch64 `ove`, a bundle and (optionally) a systemd unit to a
//! Jetson over the system's OpenSSH client, and checks what arrived.
//!
//! Everything goes through `ssh` (no scp, no sftp): each remote step is one POSIX `sh -c`
//! script whose every path is single-quoted, and each file is streamed to `cat` on the
//! device, so the bytes are counted here (progress) and the remote side sees no file name it
//! could misread. One ssh connection is shared by all steps (OpenSSH connection
//! multiplexing, closed at the end).
//!
//! Idempotent and resumable at file granularity: the device is first asked for the sha256
//! of every file already there, and only missing or different files are sent. A file is
//! written under a temporary name beside its destination, hashed on the device and renamed
//! into place only when the hash is the expected one, so an interrupted deploy never leaves
//! a truncated file under a real name. At the end every file is hashed on the device again
//! and compared with the manifest, and the deployed `ove --version` is checked.
//!
//! This file holds the command line and the order of the steps; each step has its file:
//! - [`plan`]: what goes where (local checks, the device's layout, what it already holds);
//! - [`transfer`]: sending the files (and the systemd unit) to the device;
//! - [`verify`]: checking on the device that what arrived is what was meant;
//! - [`ssh`]: the one ssh connection all three run their remote scripts over;
//! - [`checks`]: the small pure checks of the arguments and of the binary.

mod checks;
mod plan;
mod ssh;
mod transfer;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use plan::Plan;
use ssh::{sh_quote, Ssh};

/// Where `targets/build-aarch64` writes the Jetson binary.
pub const DEFAULT_BINARY: &str = "target/aarch64-unknown-linux-gnu/release/ove";

/// Copy the aarch64 `ove`, a bundle and optionally a systemd unit to a Jetson over ssh.
///
/// Layout on the device: DIR/bin/ove, DIR/bundles/NAME/ (the bundle's files), and with
/// --service DIR/ove-ocr.service installed as /etc/systemd/system/ove-ocr.service.
/// Files already on the device with the right sha256 are not sent again; each file is
/// written under a temporary name and renamed once its sha256 is checked on the device.
/// Ends by hashing every deployed file on the device and running `DIR/bin/ove --version`.
///
/// Uses the system's `ssh` non-interactively (BatchMode=yes): set up key login first
/// (`ssh-copy-id USER@HOST`) and accept the host key once (`ssh USER@HOST true`).
#[derive(clap::Args)]
pub struct Args {
    /// The device, as ssh takes it: USER@HOST (or a Host alias of ~/.ssh/config).
    #[arg(long, value_name = "USER@HOST")]
    host: String,
    /// ssh port on the device.
    #[arg(long, short = 'p')]
    port: Option<u16>,
    /// Private key to log in with (ssh -i; only this key is offered).
    #[arg(long, short = 'i', value_name = "KEY")]
    identity: Option<PathBuf>,
    /// Bundle directory to deploy (as written by `ove export`); without it only the binary is.
    #[arg(long, value_name = "BUNDLE")]
    bundle: Option<PathBuf>,
    /// Name of the bundle on the device (DIR/bundles/NAME); default: the bundle directory's name.
    #[arg(long, requires = "bundle")]
    name: Option<String>,
    /// Directory on the device (created if missing; it must be writable by the ssh user:
    /// `sudo install -d -o $USER /opt/ove` once, or use ~/ove).
    #[arg(long, default_value = "/opt/ove")]
    dir: String,
    /// The `ove` executable for the device (see targets/build-aarch64).
    #[arg(long, default_value = DEFAULT_BINARY)]
    binary: PathBuf,
    /// Also install and start the systemd unit (targets/ove-ocr.service: `ove serve` on the
    /// bundle at 127.0.0.1:8080, its files verified at every start, restarted on failure);
    /// needs root on the device or passwordless sudo.
    #[arg(long, requires = "bundle")]
    service: bool,
    /// After verifying, run `ove bench` once on the device over ssh, so that ONNX Runtime
    /// builds and caches the TensorRT engines next to the bundle (the first run on a Jetson
    /// can take minutes; later loads reuse the cache).
    #[arg(long, requires = "bundle")]
    warm: bool,
    /// Unit template to install instead of the built-in one (same @PLACEHOLDERS@).
    #[arg(long, requires = "service", value_name = "FILE")]
    unit: Option<PathBuf>,
    /// Extra ssh option, passed as `-o OPT` (repeatable); e.g. StrictHostKeyChecking=accept-new.
    #[arg(long = "ssh-option", value_name = "OPT")]
    ssh_options: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let started = Instant::now();
    // Plan: the local files are checked before the device is contacted; then the device
    // says what it is and what it already holds.
    let local = plan::Local::check(&args)?;
    let ssh = Ssh::new(&args)?;
    let plan = Plan::against_device(&ssh, local)?;
    // Transfer: the missing or different files, the binary first.
    let copy_secs = transfer::send(&ssh, &plan)?;
    // Verify: every file hashed on the device again; then the optional warm-up run.
    verify::files(&ssh, &plan)?;
    if args.warm {
        verify::warm(&ssh, &plan)?;
    }
    if args.service {
        transfer::install_service(&ssh, &plan, args.unit.as_deref())?;
    }
    summary(&args, &plan, copy_secs, started);
    Ok(ExitCode::SUCCESS)
}

/// The closing report on stdout: what was copied and verified, and how to run it.
fn summary(args: &Args, plan: &Plan, copy_secs: f64, started: Instant) {
    let (dir, copied, copy_bytes) = (&plan.dir, plan.to_copy.len(), plan.copy_bytes);
    println!(
        "deployed to {}:{dir} in {:.1} s: {copied} copied ({}{}), {} up to date; {} verified (sha256)",
        plan.host,
        started.elapsed().as_secs_f64(),
        human(copy_bytes),
        if copied > 0 && copy_secs > 0.0 {
            format!(", {}/s", human((copy_bytes as f64 / copy_secs) as u64))
        } else {
            String::new()
        },
        plan.items.len() - copied,
        plan.items.len(),
    );
    println!("binary:  {dir}/bin/ove ({})", verify::expected_version());
    if let Some(name) = &plan.bundle {
        let files = plan.bundle_items();
        println!(
            "bundle:  {dir}/bundles/{name} ({} files, {})",
            files.len(),
            human(files.iter().map(|it| it.bytes).sum())
        );
        println!(
            "run:     ssh {} {} ocr --bundle {} PAGE.png",
            plan.host,
            shell_word(&format!("{dir}/bin/ove")),
            shell_word(&format!("{dir}/bundles/{name}")),
        );
    }
    if args.service {
        println!(
            "service: {} installed, enabled and started: ove serve on 127.0.0.1:8080 of the \
             device (curl http://127.0.0.1:8080/health there; logs: journalctl -u ove-ocr)",
            transfer::UNIT_NAME
        );
    }
}

/// A word as a user would type it: as is when nothing in it is special to a shell.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-,:=@%".contains(c))
    {
        s.to_string()
    } else {
        sh_quote(s)
    }
}

/// A byte count for people: `12 B`, `3.0 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/opt/ove/bin/ove"), "/opt/ove/bin/ove");
        assert_eq!(shell_word("/tmp/it's a dir"), r"'/tmp/it'\''s a dir'");
    }

    #[test]
    fn sizes() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(3 * 1024 * 1024), "3.0 MiB");
    }
}
