//! `ove-train train --nproc-per-node N`: torchrun's job for one machine, built in. This
//! process hosts the group's store (as torchrun's agent does) on a free loopback port,
//! starts N copies of the same command line (without `--nproc-per-node`) with `RANK`,
//! `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` and
//! `TORCHELASTIC_USE_AGENT_STORE=True` set, and waits. When a rank fails, the others get
//! the group's timeout to stop by themselves (a dead peer ends their collectives), then
//! are killed; the exit is an error naming the first rank that failed.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracing::{error, info};

use super::group::StoreServer;

/// `args` without `--nproc-per-node N` / `--nproc-per-node=N`.
pub fn without_nproc_flag(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if a == "--nproc-per-node" {
            skip = true;
            continue;
        }
        if a.starts_with("--nproc-per-node=") {
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// Runs `nproc` ranks of this program's command line on this machine (see the module
/// docs).
pub fn run_local_ranks(nproc: usize, timeout: Duration) -> Result<()> {
    anyhow::ensure!(nproc >= 1, "--nproc-per-node must be at least 1");
    if std::env::var_os("WORLD_SIZE").is_some() {
        bail!(
            "--nproc-per-node starts its own ranks, but WORLD_SIZE is already set (launched \
             by torchrun?): give one or the other"
        );
    }
    let exe = std::env::current_exe().context("finding this program to start its ranks")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = without_nproc_flag(&args);
    let store = StoreServer::listen("127.0.0.1", 0, timeout)?;
    info!(nproc, port = store.port(), "starting ranks");
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let child = Command::new(&exe)
            .args(&args)
            .env("WORLD_SIZE", nproc.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", store.port().to_string())
            .env("TORCHELASTIC_USE_AGENT_STORE", "True")
            .env(
                "GLOO_SOCKET_IFNAME",
                std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_else(|_| "lo".into()),
            )
            .spawn()
            .with_context(|| format!("starting rank {rank} ({})", exe.display()))?;
        children.push((rank, child));
    }
    let mut failed: Option<(usize, String)> = None;
    let mut failed_at: Option<Instant> = None;
    loop {
        let mut running = 0;
        for (rank, child) in children.iter_mut() {
            match child.try_wait() {
                Ok(Some(status)) if !status.success() => {
                    if failed.is_none() {
                        error!(rank = *rank, %status, "rank failed");
                        failed = Some((*rank, status.to_string()));
                        failed_at = Some(Instant::now());
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => running += 1,
                Err(e) => {
                    if failed.is_none() {
                        failed = Some((*rank, e.to_string()));
                        failed_at = Some(Instant::now());
                    }
                }
            }
        }
        if running == 0 {
            break;
        }
        if failed_at.is_some_and(|t| t.elapsed() > timeout) {
            for (rank, child) in children.iter_mut() {
                if matches!(child.try_wait(), Ok(None)) {
                    error!(
                        rank = *rank,
                        "still running after a peer failed; killing it"
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(store);
    match failed {
        Some((rank, status)) => bail!("rank {rank} of {nproc} failed ({status})"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_and_its_value_are_removed() {
        let args: Vec<String> = [
            "train",
            "--nproc-per-node",
            "2",
            "--steps",
            "3",
            "--nproc-per-node=4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(without_nproc_flag(&args), vec!["train", "--steps", "3"]);
    }
}
