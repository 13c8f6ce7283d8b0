//! The launch environment of a distributed run, as torchrun sets it (and as a plain
//! launch can): `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT`; `TORCHELASTIC_USE_AGENT_STORE=True` when the launcher hosts the store
//! (then every rank joins it as a client), `TORCHELASTIC_RESTART_COUNT` to keep a
//! restarted group's keys apart; `GLOO_SOCKET_IFNAME` for the interface Gloo binds to.

use anyhow::{bail, Context, Result};

use super::group::StoreAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// The launcher hosts the store (torchrun's agent, `ove-train --nproc-per-node`).
    pub agent_store: bool,
    pub restart: u32,
    pub gloo_iface: Option<String>,
}

impl LaunchEnv {
    /// From the process environment; `None` when `WORLD_SIZE` is not set (one process,
    /// no group).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From any variable lookup (testable).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let num = |key: &str, value: &str| -> Result<usize> {
            value
                .trim()
                .parse::<usize>()
                .with_context(|| format!("{key}={value:?} is not a non-negative integer"))
        };
        let world = num("WORLD_SIZE", &world)?;
        if world == 0 {
            bail!("WORLD_SIZE=0: a group needs at least one rank");
        }
        let rank = match get("RANK") {
            Some(r) => num("RANK", &r)?,
            None if world == 1 => 0,
            None => bail!("WORLD_SIZE={world} is set but RANK is not"),
        };
        if rank >= world {
            bail!("RANK={rank} is not below WORLD_SIZE={world}");
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(r) => num("LOCAL_RANK", &r)?,
            None => rank,
        };
        let master_addr = match get("MASTER_ADDR") {
            Some(a) if !a.trim().is_empty() => a.trim().to_string(),
            _ if world == 1 => "127.0.0.1".to_string(),
            _ => bail!("WORLD_SIZE={world} is set but MASTER_ADDR (the store's host) is not"),
        };
        let master_port = match get("MASTER_PORT") {
            Some(p) => p
                .trim()
                .parse::<u16>()
                .with_context(|| format!("MASTER_PORT={p:?} is not a port number"))?,
            None if world == 1 => 0,
            None => bail!("WORLD_SIZE={world} is set but MASTER_PORT is not"),
        };
        let agent_store = get("TORCHELASTIC_USE_AGENT_STORE")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1");
        let restart = match get("TORCHELASTIC_RESTART_COUNT") {
            Some(r) => num("TORCHELASTIC_RESTART_COUNT", &r)? as u32,
            None => 0,
        };
        Ok(Some(Self {
            rank,
            world,
            local_rank,
            master_addr,
            master_port,
            agent_store,
            restart,
            gloo_iface: get("GLOO_SOCKET_IFNAME").filter(|s| !s.trim().is_empty()),
        }))
    }

    /// The store this rank joins: rank 0 hosts it unless the launcher does.
    pub fn store(&self) -> StoreAddr {
        StoreAddr {
            host: self.master_addr.clone(),
            port: self.master_port,
            is_server: self.rank == 0 && !self.agent_store,
            prefix: format!("ove-train/{}/", self.restart),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<LaunchEnv>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn no_world_size_is_one_process() {
        assert_eq!(env(&[("RANK", "3")]).unwrap(), None);
    }

    #[test]
    fn torchrun_variables() {
        let e = env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world, e.local_rank), (2, 4, 0));
        let s = e.store();
        assert!(!s.is_server, "the agent hosts the store");
        assert_eq!((s.host.as_str(), s.port), ("node0", 29500));
        assert_eq!(s.prefix, "ove-train/1/");
    }

    #[test]
    fn plain_launch_rank_zero_hosts_the_store() {
        let base = [
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "1234"),
        ];
        let r0 = env(&[base[0], base[1], base[2], ("RANK", "0")])
            .unwrap()
            .unwrap();
        let r1 = env(&[base[0], base[1], base[2], ("RANK", "1")])
            .unwrap()
            .unwrap();
        assert!(r0.store().is_server);
        assert!(!r1.store().is_server);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (pairs, needle) in [
            (vec![("WORLD_SIZE", "two")], "WORLD_SIZE"),
            (
                vec![
                    ("WORLD_SIZE", "2"),
                    ("MASTER_ADDR", "a"),
                    ("MASTER_PORT", "1"),
                ],
                "RANK",
            ),
            (vec![("WORLD_SIZE", "2"), ("RANK", "2")], "RANK=2"),
            (
                vec![("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_PORT", "1")],
                "MASTER_ADDR",
            ),
            (
                vec![
                    ("WORLD_SIZE", "2"),
                    ("RANK", "1"),
                    ("MASTER_ADDR", "a"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT",
            ),
        ] {
            let err = format!("{:#}", env(&pairs).unwrap_err());
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }
}
