//! Deciding what goes where, before anything is sent.
//!
//! First everything local is checked, without contacting the device: the --host and --dir
//! arguments, the binary's architecture, the bundle against its own manifest. Then the
//! device is asked once what it is (architecture, glibc, L4T, free space) and the sha256 of
//! every file it already holds, and the plan is the list of files that are missing or
//! different there, one `skip`/`copy` line each on stderr. Creating the deploy directories
//! is the only change this makes on the device.
//!
//! Layout, relative to the deploy directory: `bin/ove` first (so that a binary the device
//! cannot run stops the deploy before gigabytes of weights are sent), then
//! `bundles/NAME/...` with the bundle's `manifest.json` last (a device holding the new
//! manifest holds the files it names).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ove_core::manifest::{sha256_file, Manifest, MANIFEST_FILE};

use super::checks::{check_host, check_name, elf_arch, normalize_arch, remote_dir};
use super::ssh::{sh_quote, Ssh};
use super::verify::{hash_script, parse_hashes};
use super::{human, Args, DEFAULT_BINARY};

/// One file to put on the device.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) local: PathBuf,
    /// Relative to the deploy directory, `/`-separated, no `.` or `..`.
    pub(super) remote: String,
    pub(super) bytes: u64,
    pub(super) sha256: String,
    /// chmod mode of the deployed file.
    pub(super) mode: &'static str,
}

/// Where the binary is among the items: always first.
pub(super) const BINARY: usize = 0;

/// What is to be sent, checked here before the device is contacted.
pub(super) struct Local {
    /// The deploy directory as the remote shell should see it (see [`remote_dir`]).
    dir: String,
    /// The binary's architecture, as `uname -m` spells it.
    binary_arch: String,
    /// The binary, then the bundle's files.
    items: Vec<Item>,
    /// The bundle's name on the device, with --bundle.
    bundle: Option<String>,
}

impl Local {
    pub(super) fn check(args: &Args) -> Result<Self> {
        check_host(&args.host)?;
        let dir = remote_dir(&args.dir)?;
        let (binary_arch, binary) = binary_item(&args.binary)?;
        let mut items = vec![binary];
        let bundle = match &args.bundle {
            Some(path) => {
                let (name, files) = local_bundle(path, args.name.as_deref())?;
                items.extend(files);
                Some(name)
            }
            None => None,
        };
        Ok(Self {
            dir,
            binary_arch,
            items,
            bundle,
        })
    }
}

/// The deploy: every item, the device's answers, and which items are to be sent.
pub(super) struct Plan {
    /// The device, as given to --host.
    pub(super) host: String,
    /// The deploy directory's absolute path on the device (`pwd -P` there).
    pub(super) dir: String,
    pub(super) info: DeviceInfo,
    /// The binary (at [`BINARY`]), then the bundle's files, its manifest last.
    pub(super) items: Vec<Item>,
    /// The bundle's name on the device (DIR/bundles/NAME), with --bundle.
    pub(super) bundle: Option<String>,
    /// Indices into `items` of the files to send, in the order they are sent.
    pub(super) to_copy: Vec<usize>,
    /// Bytes to send.
    pub(super) copy_bytes: u64,
}

impl Plan {
    /// Creates the deploy directories on the device, asks it what it is and what it holds,
    /// and decides what to send; refuses a device the binary is not for, or one short of space.
    pub(super) fn against_device(ssh: &Ssh, local: Local) -> Result<Self> {
        let host = &ssh.host;
        eprintln!("connecting to {host}...");
        let out = ssh
            .run_ok(
                &prepare_script(&local.dir, &local.items),
                "preparing the deploy directory",
            )
            .map_err(|e| hint_mkdir(e, &local.dir))?;
        let info = DeviceInfo::parse(&out);
        let dir = info
            .get("dir")
            .filter(|d| d.starts_with('/'))
            .ok_or_else(|| anyhow!("the device did not report the deploy directory: {out}"))?
            .to_string();
        if info.get("sha256sum") != Some("yes") {
            bail!("{host}: sha256sum is missing on the device (coreutils)");
        }
        let device_arch = normalize_arch(info.get("arch").unwrap_or("unknown"));
        if device_arch != local.binary_arch {
            bail!(
                "{} is an {} executable but {host} is {device_arch}: pass the binary built for it \
                 (targets/build-aarch64 writes {DEFAULT_BINARY})",
                local.items[BINARY].local.display(),
                local.binary_arch,
            );
        }
        eprintln!(
            "{host}: {device_arch}, {}{}, deploying to {dir}",
            info.get("glibc").unwrap_or("glibc unknown"),
            info.get("l4t")
                .filter(|s| !s.is_empty())
                .map(|s| format!(", L4T {s}"))
                .unwrap_or_default(),
        );
        let to_copy = choose(&local.items, &parse_hashes(&out, local.items.len()));
        let copy_bytes: u64 = to_copy.iter().map(|&i| local.items[i].bytes).sum();
        if let Some(avail) = info.get("avail_kb").and_then(|s| s.parse::<u64>().ok()) {
            if copy_bytes > avail.saturating_mul(1024) {
                bail!(
                    "{host}: {dir} has {} free, {} to copy",
                    human(avail * 1024),
                    human(copy_bytes)
                );
            }
        }
        Ok(Self {
            host: host.clone(),
            dir,
            info,
            items: local.items,
            bundle: local.bundle,
            to_copy,
            copy_bytes,
        })
    }

    /// The bundle's files (its manifest included); empty without --bundle.
    pub(super) fn bundle_items(&self) -> &[Item] {
        &self.items[BINARY + 1..]
    }
}

/// The first script: creates the directories, prints [`INFO_SCRIPT`]'s answers and the
/// sha256 of every item already there.
fn prepare_script(dir: &str, items: &[Item]) -> String {
    let mut dirs: Vec<String> = vec![format!("{dir}/bin")];
    for it in items {
        if let Some((parent, _)) = it.remote.rsplit_once('/') {
            let d = format!("{dir}/{parent}");
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    format!(
        "set -e\nmkdir -p -- {}\ncd -- {}\n{}\n{}",
        dirs.iter()
            .map(|d| sh_quote(d))
            .collect::<Vec<_>>()
            .join(" "),
        sh_quote(dir),
        INFO_SCRIPT,
        hash_script(items),
    )
}

/// The indices of the items to send: missing on the device, or there with another sha256.
fn choose(items: &[Item], present: &[Option<String>]) -> Vec<usize> {
    let mut to_copy = Vec::new();
    for (i, it) in items.iter().enumerate() {
        match &present[i] {
            Some(h) if h.eq_ignore_ascii_case(&it.sha256) => {
                eprintln!("skip  {} (up to date)", it.remote)
            }
            Some(_) => {
                eprintln!("copy  {} (differs on the device)", it.remote);
                to_copy.push(i);
            }
            None => {
                eprintln!("copy  {} (missing on the device)", it.remote);
                to_copy.push(i);
            }
        }
    }
    to_copy
}

fn hint_mkdir(e: anyhow::Error, dir: &str) -> anyhow::Error {
    let msg = format!("{e:#}");
    if msg.contains("Permission denied") && !msg.starts_with("cannot reach") {
        anyhow!(
            "{msg}\n(the ssh user cannot write {dir}: on the device run `sudo install -d -o $USER {dir}` once, or deploy with --dir ~/ove)"
        )
    } else {
        e
    }
}

/// What the first script prints about the device, one `key=value` per line.
const INFO_SCRIPT: &str = r#"echo "dir=$(pwd -P)"
echo "arch=$(uname -m)"
echo "user=$(id -un)"
echo "glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null || true)"
echo "l4t=$(head -n 1 /etc/nv_tegra_release 2>/dev/null | sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/\1.\2/p')"
echo "avail_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')"
if command -v sha256sum >/dev/null 2>&1; then echo sha256sum=yes; else echo sha256sum=no; fi"#;

/// The device's answers to [`INFO_SCRIPT`].
pub(super) struct DeviceInfo(Vec<(String, String)>);

impl DeviceInfo {
    fn parse(out: &str) -> Self {
        Self(
            out.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect(),
        )
    }
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

// --- the local files --------------------------------------------------------------------------

/// The binary's architecture and its item (`bin/ove`, executable).
fn binary_item(binary: &Path) -> Result<(String, Item)> {
    let arch = elf_arch(binary).with_context(|| {
        if binary == Path::new(DEFAULT_BINARY) {
            format!(
                "{DEFAULT_BINARY}: build the Jetson binary first (targets/build-aarch64) or pass --binary"
            )
        } else {
            format!("--binary {}", binary.display())
        }
    })?;
    let item = Item {
        local: binary.to_path_buf(),
        remote: "bin/ove".into(),
        bytes: std::fs::metadata(binary)
            .with_context(|| format!("reading {}", binary.display()))?
            .len(),
        sha256: sha256_file(binary)?,
        mode: "0755",
    };
    Ok((arch, item))
}

/// The local bundle's name on the device and its items, its manifest read and every file
/// checked against it before anything is sent.
fn local_bundle(path: &Path, name: Option<&str>) -> Result<(String, Vec<Item>)> {
    let manifest = Manifest::read(path).with_context(|| format!("--bundle {}", path.display()))?;
    let name = match name {
        Some(n) => n.to_string(),
        None => path
            .canonicalize()
            .with_context(|| format!("--bundle {}", path.display()))?
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow!(
                    "--bundle {}: no usable directory name: pass --name",
                    path.display()
                )
            })?,
    };
    check_name(&name)?;
    let total: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    eprintln!(
        "checking the local bundle {} ({} files, {})...",
        path.display(),
        manifest.files.len(),
        human(total)
    );
    manifest.verify_files(path).with_context(|| {
        format!(
            "the local bundle {} is damaged (export it again)",
            path.display()
        )
    })?;
    let items = bundle_items(&manifest, path, &name)?;
    Ok((name, items))
}

/// One item per file of the manifest under `bundles/NAME/`, then the manifest itself.
fn bundle_items(manifest: &Manifest, path: &Path, name: &str) -> Result<Vec<Item>> {
    let mut items = Vec::with_capacity(manifest.files.len() + 1);
    for f in &manifest.files {
        let clean: Vec<&str> = f
            .path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if clean.is_empty() || clean.contains(&"..") {
            bail!("{}: bad path {:?} in the manifest", path.display(), f.path);
        }
        items.push(Item {
            local: manifest
                .path_of(path, &f.path)
                .with_context(|| format!("--bundle {}", path.display()))?,
            remote: format!("bundles/{name}/{}", clean.join("/")),
            bytes: f.bytes,
            sha256: f.sha256.to_ascii_lowercase(),
            mode: "0644",
        });
    }
    let remote = format!("bundles/{name}/{MANIFEST_FILE}");
    if items.iter().any(|it| it.remote == remote) {
        bail!(
            "{}: the manifest lists {MANIFEST_FILE} itself",
            path.display()
        );
    }
    // The manifest goes last: a device holding the new manifest holds the files it names.
    let mpath = path.join(MANIFEST_FILE);
    items.push(Item {
        bytes: std::fs::metadata(&mpath)
            .with_context(|| format!("reading {}", mpath.display()))?
            .len(),
        sha256: sha256_file(&mpath)?,
        local: mpath,
        remote,
        mode: "0644",
    });
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_or_different_files_are_sent() {
        let item = |remote: &str, sha256: &str| Item {
            local: PathBuf::new(),
            remote: remote.into(),
            bytes: 0,
            sha256: sha256.into(),
            mode: "0644",
        };
        let items = [item("bin/ove", "aa"), item("a", "bb"), item("b", "cc")];
        let present = [Some("AA".to_string()), Some("00".to_string()), None];
        assert_eq!(choose(&items, &present), [1, 2]);
    }
}
