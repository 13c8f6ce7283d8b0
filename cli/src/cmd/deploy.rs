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

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ove_core::manifest::{sha256_file, Manifest, MANIFEST_FILE};

/// Where `targets/build-aarch64` writes the Jetson binary.
pub const DEFAULT_BINARY: &str = "target/aarch64-unknown-linux-gnu/release/ove";
/// The unit `--service` installs, with `@OVE_DIR@`, `@BUNDLE_DIR@`, `@BUNDLE_NAME@`, `@USER@`.
const UNIT_TEMPLATE: &str = include_str!("../../../targets/ove-ocr.service");
const UNIT_NAME: &str = "ove-ocr.service";
/// Suffix of the temporary name a file is written under before it is renamed into place.
const PARTIAL_SUFFIX: &str = ".ove-partial";
/// Exit status of the copy script when the received file's sha256 is not the expected one.
const CHECKSUM_EXIT: i32 = 3;
/// Exit status of the unit install script when it has neither root nor sudo.
const NO_ROOT_EXIT: i32 = 4;

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
    /// Also install and start the systemd unit (targets/ove-ocr.service: a boot-time warm-up
    /// of the bundle); needs root on the device or passwordless sudo.
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

/// One file to put on the device.
#[derive(Debug, Clone)]
struct Item {
    local: PathBuf,
    /// Relative to the deploy directory, `/`-separated, no `.` or `..`.
    remote: String,
    bytes: u64,
    sha256: String,
    /// chmod mode of the deployed file.
    mode: &'static str,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let started = Instant::now();
    check_host(&args.host)?;
    let dir = remote_dir(&args.dir)?;

    // --- what to send, checked here first ------------------------------------------------
    let binary_arch = elf_arch(&args.binary).with_context(|| {
        if args.binary == Path::new(DEFAULT_BINARY) {
            format!(
                "{DEFAULT_BINARY}: build the Jetson binary first (targets/build-aarch64) or pass --binary"
            )
        } else {
            format!("--binary {}", args.binary.display())
        }
    })?;
    let mut items = vec![Item {
        local: args.binary.clone(),
        remote: "bin/ove".into(),
        bytes: std::fs::metadata(&args.binary)
            .with_context(|| format!("reading {}", args.binary.display()))?
            .len(),
        sha256: sha256_file(&args.binary)?,
        mode: "0755",
    }];
    let bundle = match &args.bundle {
        Some(b) => Some(local_bundle(b, args.name.as_deref())?),
        None => None,
    };
    if let Some(b) = &bundle {
        items.extend(b.items.iter().cloned());
    }

    // --- the device --------------------------------------------------------------------
    let ssh = Ssh::new(&args)?;
    eprintln!("connecting to {}...", args.host);
    let mut dirs: Vec<String> = vec![format!("{dir}/bin")];
    for it in &items {
        if let Some((parent, _)) = it.remote.rsplit_once('/') {
            let d = format!("{dir}/{parent}");
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    let out = ssh
        .run_ok(
            &format!(
                "set -e\nmkdir -p -- {}\ncd -- {}\n{}\n{}",
                dirs.iter()
                    .map(|d| sh_quote(d))
                    .collect::<Vec<_>>()
                    .join(" "),
                sh_quote(&dir),
                INFO_SCRIPT,
                hash_script(&items),
            ),
            "preparing the deploy directory",
        )
        .map_err(|e| hint_mkdir(e, &dir))?;
    let info = DeviceInfo::parse(&out);
    let abs_dir = info
        .get("dir")
        .filter(|d| d.starts_with('/'))
        .ok_or_else(|| anyhow!("the device did not report the deploy directory: {out}"))?
        .to_string();
    if info.get("sha256sum") != Some("yes") {
        bail!(
            "{}: sha256sum is missing on the device (coreutils)",
            args.host
        );
    }
    let device_arch = normalize_arch(info.get("arch").unwrap_or("unknown"));
    if device_arch != binary_arch {
        bail!(
            "{} is an {binary_arch} executable but {} is {device_arch}: pass the binary built for it \
             (targets/build-aarch64 writes {DEFAULT_BINARY})",
            args.binary.display(),
            args.host
        );
    }
    eprintln!(
        "{}: {}, {}{}, deploying to {abs_dir}",
        args.host,
        device_arch,
        info.get("glibc").unwrap_or("glibc unknown"),
        info.get("l4t")
            .filter(|s| !s.is_empty())
            .map(|s| format!(", L4T {s}"))
            .unwrap_or_default(),
    );

    // --- what is already there ------------------------------------------------------------
    let present = parse_hashes(&out, items.len());
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
    let copy_bytes: u64 = to_copy.iter().map(|&i| items[i].bytes).sum();
    if let Some(avail) = info.get("avail_kb").and_then(|s| s.parse::<u64>().ok()) {
        if copy_bytes > avail.saturating_mul(1024) {
            bail!(
                "{}: {abs_dir} has {} free, {} to copy",
                args.host,
                human(avail * 1024),
                human(copy_bytes)
            );
        }
    }

    // --- copy: the binary first, so that a binary the device cannot run stops the deploy
    //     before gigabytes of weights are sent; the manifest last -------------------------
    let copy_started = Instant::now();
    for (n, &i) in to_copy.iter().enumerate() {
        ssh.upload(&abs_dir, &items[i], n + 1, to_copy.len())?;
        if i == 0 {
            check_version(&ssh, &abs_dir, &info)?;
        }
    }
    let copy_secs = copy_started.elapsed().as_secs_f64();
    if !to_copy.contains(&0) {
        check_version(&ssh, &abs_dir, &info)?;
    }

    // --- verify everything as it is now on the device -------------------------------------
    let total_bytes: u64 = items.iter().map(|it| it.bytes).sum();
    eprintln!(
        "verifying {} file(s) ({}) on the device...",
        items.len(),
        human(total_bytes)
    );
    let out = ssh.run_ok(
        &format!("cd -- {}\n{}", sh_quote(&abs_dir), hash_script(&items)),
        "verifying the deployed files",
    )?;
    let now = parse_hashes(&out, items.len());
    let mut bad = Vec::new();
    for (i, it) in items.iter().enumerate() {
        match &now[i] {
            Some(h) if h.eq_ignore_ascii_case(&it.sha256) => {}
            Some(h) => bad.push(format!(
                "{}: sha256 {h}, expected {} (checksum mismatch)",
                it.remote, it.sha256
            )),
            None => bad.push(format!("{}: missing on the device", it.remote)),
        }
    }
    if !bad.is_empty() {
        bail!(
            "{}:{abs_dir}: verification failed after the copy:\n  {}",
            args.host,
            bad.join("\n  ")
        );
    }

    // --- engine-cache warm-up ---------------------------------------------------------------
    if args.warm {
        let b = bundle.as_ref().expect("clap: --warm requires --bundle");
        let bundle_dir = format!("{abs_dir}/bundles/{}", b.name);
        eprintln!(
            "warming {bundle_dir} on the device (ove bench builds the TensorRT engine cache)"
        );
        let report = ssh.run_ok(
            &format!(
                "cd -- {} && ./bin/ove bench --bundle {} --decode-tokens 1",
                sh_quote(&abs_dir),
                sh_quote(&bundle_dir)
            ),
            "warming the bundle (ove bench on the device)",
        )?;
        eprint!("{report}");
    }

    // --- systemd unit ---------------------------------------------------------------------
    let mut unit_line = None;
    if args.service {
        let b = bundle.as_ref().expect("clap: --service requires --bundle");
        let template = match &args.unit {
            Some(p) => {
                std::fs::read_to_string(p).with_context(|| format!("--unit {}", p.display()))?
            }
            None => UNIT_TEMPLATE.to_string(),
        };
        let user = info.get("user").unwrap_or("root");
        let unit = render_unit(&template, &abs_dir, &b.name, user)?;
        install_unit(&ssh, &abs_dir, &unit)?;
        unit_line = Some(format!(
            "service: {UNIT_NAME} installed, enabled and started (journalctl -u ove-ocr)"
        ));
    }

    // --- summary ----------------------------------------------------------------------------
    let copied = to_copy.len();
    println!(
        "deployed to {}:{abs_dir} in {:.1} s: {copied} copied ({}{}), {} up to date; {} verified (sha256)",
        args.host,
        started.elapsed().as_secs_f64(),
        human(copy_bytes),
        if copied > 0 && copy_secs > 0.0 {
            format!(", {}/s", human((copy_bytes as f64 / copy_secs) as u64))
        } else {
            String::new()
        },
        items.len() - copied,
        items.len(),
    );
    println!("binary:  {abs_dir}/bin/ove ({})", expected_version());
    if let Some(b) = &bundle {
        println!(
            "bundle:  {abs_dir}/bundles/{} ({} files, {})",
            b.name,
            b.items.len(),
            human(b.items.iter().map(|it| it.bytes).sum())
        );
        println!(
            "run:     ssh {} {} ocr --bundle {} PAGE.png",
            args.host,
            shell_word(&format!("{abs_dir}/bin/ove")),
            shell_word(&format!("{abs_dir}/bundles/{}", b.name)),
        );
    }
    if let Some(line) = unit_line {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The local bundle: its manifest read and every file checked before anything is sent.
struct LocalBundle {
    name: String,
    items: Vec<Item>,
}

fn local_bundle(path: &Path, name: Option<&str>) -> Result<LocalBundle> {
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
            local: manifest.path_of(path, &f.path)?,
            remote: format!("bundles/{name}/{}", clean.join("/")),
            bytes: f.bytes,
            sha256: f.sha256.to_ascii_lowercase(),
            mode: "0644",
        });
    }
    if items
        .iter()
        .any(|it| it.remote == format!("bundles/{name}/{MANIFEST_FILE}"))
    {
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
        remote: format!("bundles/{name}/{MANIFEST_FILE}"),
        mode: "0644",
    });
    Ok(LocalBundle { name, items })
}

// --- ssh ------------------------------------------------------------------------------------

/// The ssh command line shared by every step, and the multiplexed connection's socket.
struct Ssh {
    host: String,
    options: Vec<OsString>,
    control_dir: Option<PathBuf>,
}

impl Ssh {
    fn new(args: &Args) -> Result<Self> {
        // Fail early and clearly when there is no ssh at all.
        match Command::new("ssh")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("ssh not found: install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client)")
            }
            Err(e) => bail!("cannot run ssh: {e}"),
            Ok(_) => {}
        }
        let mut options: Vec<OsString> = Vec::new();
        // ssh keeps the first value it gets for an option: the user's come first.
        for o in &args.ssh_options {
            options.push("-o".into());
            options.push(o.into());
        }
        for o in [
            "BatchMode=yes",
            "ConnectTimeout=15",
            "ServerAliveInterval=15",
            "ServerAliveCountMax=4",
        ] {
            options.push("-o".into());
            options.push(o.into());
        }
        if let Some(p) = args.port {
            options.push("-p".into());
            options.push(p.to_string().into());
        }
        if let Some(key) = &args.identity {
            if !key.is_file() {
                bail!("--identity {}: no such file", key.display());
            }
            options.push("-i".into());
            options.push(key.into());
            options.push("-o".into());
            options.push("IdentitiesOnly=yes".into());
        }
        let control_dir = control_dir();
        if let Some(d) = &control_dir {
            options.push("-o".into());
            options.push("ControlMaster=auto".into());
            options.push("-o".into());
            let mut p = OsString::from("ControlPath=");
            p.push(d.join("%C"));
            options.push(p);
            options.push("-o".into());
            options.push("ControlPersist=60".into());
        }
        Ok(Self {
            host: args.host.clone(),
            options,
            control_dir,
        })
    }

    /// `ssh OPTIONS -- HOST "sh -c 'SCRIPT'"`: the login shell only sees a quoted word.
    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(&self.options)
            .arg("--")
            .arg(&self.host)
            .arg(format!("sh -c {}", sh_quote(script)));
        c
    }

    /// Runs a script, stdin closed; ssh's own failures (status 255) become a connection error.
    fn run(&self, script: &str) -> Result<Output> {
        let out = self
            .command(script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| anyhow!("cannot run ssh: {e}"))?;
        self.check_connection(&out)?;
        Ok(out)
    }

    /// Runs a script that must succeed; returns its stdout.
    fn run_ok(&self, script: &str, what: &str) -> Result<String> {
        let out = self.run(script)?;
        if !out.status.success() {
            bail!(
                "{}: {what} failed ({}): {}",
                self.host,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn check_connection(&self, out: &Output) -> Result<()> {
        if out.status.code() == Some(255) {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            bail!(
                "cannot reach {} over ssh: {msg}{}",
                self.host,
                connection_hint(&msg)
            );
        }
        Ok(())
    }

    /// Streams a file into `DIR/PATH.ove-partial`, checks its sha256 there and renames it.
    fn upload(&self, dir: &str, it: &Item, n: usize, of: usize) -> Result<()> {
        let (parent, base) = match it.remote.rsplit_once('/') {
            Some((p, b)) => (format!("{p}/"), b),
            None => (String::new(), it.remote.as_str()),
        };
        let tmp = format!("{parent}.{base}{PARTIAL_SUFFIX}");
        let script = format!(
            "set -e\ncd -- {dir}\nt={tmp}\ncat > \"$t\"\nh=$(sha256sum < \"$t\")\nh=${{h%% *}}\n\
             if [ \"$h\" != {sum} ]; then rm -f -- \"$t\"; echo \"ove-deploy-checksum $h\" >&2; exit {CHECKSUM_EXIT}; fi\n\
             chmod {mode} -- \"$t\"\nmv -f -- \"$t\" {dest}\n",
            dir = sh_quote(dir),
            tmp = sh_quote(&tmp),
            sum = sh_quote(&it.sha256),
            mode = it.mode,
            dest = sh_quote(&it.remote),
        );
        let mut child = self
            .command(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow!("cannot run ssh: {e}"))?;
        // ssh's stderr is drained on a thread so that it can never block the copy.
        let mut stderr = child.stderr.take().expect("piped");
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let label = format!("[{n}/{of}] {}", it.remote);
        let pb = progress_bar(&format!("[{n}/{of}] {base}"), &label, it.bytes);
        let t0 = Instant::now();
        let mut stdin = child.stdin.take().expect("piped");
        let sent = (|| -> std::io::Result<u64> {
            let mut f = std::fs::File::open(&it.local).map_err(|e| {
                std::io::Error::new(e.kind(), format!("opening {}: {e}", it.local.display()))
            })?;
            let mut buf = vec![0u8; 1 << 20];
            let mut sent = 0u64;
            loop {
                let k = f.read(&mut buf)?;
                if k == 0 {
                    return Ok(sent);
                }
                stdin.write_all(&buf[..k])?;
                sent += k as u64;
                pb.set_position(sent);
            }
        })();
        drop(stdin); // EOF: the remote cat ends, the script goes on
        let status = child.wait()?;
        let stderr = err_thread.join().unwrap_or_default();
        pb.finish_and_clear();
        let out = Output {
            status,
            stdout: Vec::new(),
            stderr: stderr.clone().into_bytes(),
        };
        self.check_connection(&out)?;
        if status.code() == Some(CHECKSUM_EXIT) {
            let got = stderr
                .lines()
                .find_map(|l| l.strip_prefix("ove-deploy-checksum "))
                .unwrap_or("?");
            bail!(
                "{}: checksum mismatch after copy: the device received sha256 {got}, expected {} \
                 (the local file changed during the copy, or the transfer or the device's storage is faulty); \
                 nothing was replaced, run the deploy again",
                it.remote,
                it.sha256
            );
        }
        match sent {
            Err(e) => bail!(
                "{}: copying {} failed: {e}; {}",
                it.remote,
                it.local.display(),
                stderr.trim()
            ),
            Ok(_) if !status.success() => {
                bail!(
                    "{}: copy failed on {} ({status}): {}",
                    it.remote,
                    self.host,
                    stderr.trim()
                )
            }
            Ok(sent) => {
                let secs = t0.elapsed().as_secs_f64();
                eprintln!(
                    "{label}: {} in {secs:.1} s{}",
                    human(sent),
                    if sent >= 1 << 20 && secs > 0.0 {
                        format!(" ({}/s)", human((sent as f64 / secs) as u64))
                    } else {
                        String::new()
                    }
                );
                Ok(())
            }
        }
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        if let Some(d) = &self.control_dir {
            // Close the shared connection (if one was opened), then its socket directory.
            let _ = Command::new("ssh")
                .args(&self.options)
                .arg("-O")
                .arg("exit")
                .arg("--")
                .arg(&self.host)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A private directory for the multiplexing socket (unix socket paths are short: /tmp).
fn control_dir() -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let d = PathBuf::from(format!("/tmp/ove-deploy-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&d).ok()?;
    Some(d)
}

fn connection_hint(msg: &str) -> &'static str {
    if msg.contains("Permission denied") {
        " (key login failed: install your key with ssh-copy-id, or pass --identity)"
    } else if msg.contains("Host key verification failed") {
        " (the device's host key is not known: connect once with `ssh HOST true`, or pass --ssh-option StrictHostKeyChecking=accept-new)"
    } else if msg.contains("Connection refused") {
        " (is sshd running on the device, on this --port?)"
    } else if msg.contains("timed out") || msg.contains("No route to host") {
        " (is the device on and on this network?)"
    } else {
        ""
    }
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

struct DeviceInfo(Vec<(String, String)>);

impl DeviceInfo {
    fn parse(out: &str) -> Self {
        Self(
            out.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect(),
        )
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A script printing `ove-sha256 INDEX HASH` for every item present (run in the deploy dir).
fn hash_script(items: &[Item]) -> String {
    let files: Vec<String> = items.iter().map(|it| sh_quote(&it.remote)).collect();
    format!(
        "i=0\nfor f in {}; do\n  if [ -f \"$f\" ]; then h=$(sha256sum < \"$f\") || exit 1; \
         printf 'ove-sha256 %s %s\\n' \"$i\" \"${{h%% *}}\"; fi\n  i=$((i + 1))\ndone\n",
        files.join(" ")
    )
}

fn parse_hashes(out: &str, n: usize) -> Vec<Option<String>> {
    let mut v = vec![None; n];
    for l in out.lines() {
        let mut w = l.split_whitespace();
        if w.next() != Some("ove-sha256") {
            continue;
        }
        if let (Some(Ok(i)), Some(h)) = (w.next().map(str::parse::<usize>), w.next()) {
            if i < n && h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                v[i] = Some(h.to_ascii_lowercase());
            }
        }
    }
    v
}

/// What `ove --version` of this build prints (the deployed binary must say the same).
fn expected_version() -> String {
    format!("ove {}", env!("CARGO_PKG_VERSION"))
}

fn check_version(ssh: &Ssh, dir: &str, info: &DeviceInfo) -> Result<()> {
    let out = ssh.run(&format!("cd -- {} && ./bin/ove --version", sh_quote(dir)))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        let hint = if stderr.contains("GLIBC_") {
            format!(
                " (the binary needs a newer glibc than the device's {}: see targets/README.md, JetPack 5)",
                info.get("glibc").unwrap_or("glibc")
            )
        } else if stderr.contains("xec format") || stderr.contains("cannot execute") {
            " (wrong architecture)".to_string()
        } else {
            String::new()
        };
        bail!("{dir}/bin/ove does not run on {}: {stderr}{hint}", ssh.host);
    }
    if stdout != expected_version() {
        bail!(
            "{dir}/bin/ove --version says {stdout:?}, this ove is {:?}: rebuild the device binary \
             from this checkout (targets/build-aarch64) or deploy with the matching ove",
            expected_version()
        );
    }
    eprintln!("{dir}/bin/ove --version: {stdout}");
    Ok(())
}

fn install_unit(ssh: &Ssh, dir: &str, unit: &str) -> Result<()> {
    let script = format!(
        "set -e\ncd -- {dir}\ncat > .{UNIT_NAME}{PARTIAL_SUFFIX}\nmv -f -- .{UNIT_NAME}{PARTIAL_SUFFIX} {UNIT_NAME}\n\
         if [ \"$(id -u)\" -eq 0 ]; then S=; elif command -v sudo >/dev/null 2>&1; then S='sudo -n'; \
         else echo 'neither root nor sudo' >&2; exit {NO_ROOT_EXIT}; fi\n\
         $S install -m 0644 {UNIT_NAME} /etc/systemd/system/{UNIT_NAME}\n\
         $S systemctl daemon-reload\n$S systemctl enable {UNIT_NAME}\n$S systemctl restart --no-block {UNIT_NAME}\n",
        dir = sh_quote(dir)
    );
    let mut child = ssh
        .command(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("cannot run ssh: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(unit.as_bytes())?;
    let out = child.wait_with_output()?;
    ssh.check_connection(&out)?;
    if !out.status.success() {
        bail!(
            "installing {UNIT_NAME} failed: {}\n(the unit is in {dir}/{UNIT_NAME}; install it by hand: \
             sudo install -m 0644 {dir}/{UNIT_NAME} /etc/systemd/system/ && sudo systemctl daemon-reload && \
             sudo systemctl enable --now {UNIT_NAME})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn render_unit(template: &str, dir: &str, name: &str, user: &str) -> Result<String> {
    // systemd splits ExecStart on spaces and expands % and $: keep the paths plain.
    for (what, v) in [("the deploy directory", dir), ("the device user", user)] {
        if v.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "%$\\\"';".contains(c))
        {
            bail!("{what} {v:?} cannot be written into a systemd unit: use a plain path/name");
        }
    }
    let unit = template
        .replace("@BUNDLE_DIR@", &format!("{dir}/bundles/{name}"))
        .replace("@BUNDLE_NAME@", name)
        .replace("@OVE_DIR@", dir)
        .replace("@USER@", user);
    Ok(unit)
}

// --- checks and small helpers ---------------------------------------------------------------

fn check_host(host: &str) -> Result<()> {
    if host.is_empty()
        || host.starts_with('-')
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("--host {host:?}: expected USER@HOST");
    }
    Ok(())
}

/// The deploy directory as the remote shell should see it: `~/x` is made relative (ssh
/// commands start in the home directory); quoting takes care of everything else.
fn remote_dir(dir: &str) -> Result<String> {
    let d = dir.trim_end_matches('/');
    let d = if dir.starts_with('/') && d.is_empty() {
        "/"
    } else {
        d
    };
    let d = match d {
        "~" => ".",
        _ => d.strip_prefix("~/").unwrap_or(d),
    };
    if d.is_empty() || d.contains('\n') || d.contains('\0') {
        bail!("--dir {dir:?}: not a usable directory");
    }
    if d.starts_with('~') {
        bail!("--dir {dir:?}: ~user is not supported: give the absolute path");
    }
    Ok(d.to_string())
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if !ok {
        bail!("bundle name {name:?}: use letters, digits and . _ + - (pass --name)");
    }
    Ok(())
}

/// The architecture an ELF executable is for, as `uname -m` spells it.
fn elf_arch(path: &Path) -> Result<String> {
    let mut head = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| anyhow!("cannot read the executable: {e}"))?;
    elf_arch_of(&head).ok_or_else(|| anyhow!("not a Linux (ELF) executable"))
}

fn elf_arch_of(head: &[u8; 20]) -> Option<String> {
    if &head[..4] != b"\x7fELF" {
        return None;
    }
    let machine = match head[5] {
        1 => u16::from_le_bytes([head[18], head[19]]),
        2 => u16::from_be_bytes([head[18], head[19]]),
        _ => return None,
    };
    Some(match machine {
        0xB7 => "aarch64".into(),
        0x3E => "x86_64".into(),
        0x28 => "arm".into(),
        0x03 => "i686".into(),
        0xF3 => "riscv64".into(),
        m => format!("ELF machine {m:#x}"),
    })
}

fn normalize_arch(uname_m: &str) -> String {
    match uname_m {
        "arm64" | "aarch64_be" => "aarch64".into(),
        "amd64" => "x86_64".into(),
        a if a.starts_with("armv") => "arm".into(),
        a if a.len() == 4 && a.starts_with('i') && a.ends_with("86") => "i686".into(),
        a => a.into(),
    }
}

/// Single-quotes a word for a POSIX shell: nothing inside is interpreted.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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

/// A byte progress bar on a terminal (`short` label); without one, a line when the copy starts.
fn progress_bar(short: &str, label: &str, bytes: u64) -> ProgressBar {
    if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(bytes);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:30!} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        pb.set_message(short.to_string());
        pb
    } else {
        eprintln!("{label}: sending {}...", human(bytes));
        ProgressBar::hidden()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_shell() {
        for s in [
            "plain",
            "with space",
            "it's",
            "'",
            "$(rm -rf /)",
            "`x`",
            "a\"b",
            "a\\b",
            "*",
            "",
        ] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh_quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/opt/ove/bin/ove"), "/opt/ove/bin/ove");
        assert_eq!(shell_word("/tmp/it's a dir"), r"'/tmp/it'\''s a dir'");
    }

    #[test]
    fn remote_dirs() {
        assert_eq!(remote_dir("/opt/ove/").unwrap(), "/opt/ove");
        assert_eq!(remote_dir("~/ove").unwrap(), "ove");
        assert_eq!(remote_dir("~").unwrap(), ".");
        assert_eq!(remote_dir("/").unwrap(), "/");
        assert!(remote_dir("~bob/ove").is_err());
        assert!(remote_dir("").is_err());
    }

    #[test]
    fn hosts_and_names() {
        assert!(check_host("nvidia@orin.local").is_ok());
        assert!(check_host("-oProxyCommand=x").is_err());
        assert!(check_host("a b").is_err());
        assert!(check_name("ocr-int4_v1.2").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a'b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn elf_machines() {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[5] = 1;
        h[18] = 0xB7;
        assert_eq!(elf_arch_of(&h).as_deref(), Some("aarch64"));
        h[18] = 0x3E;
        assert_eq!(elf_arch_of(&h).as_deref(), Some("x86_64"));
        h[0] = b'#';
        assert_eq!(elf_arch_of(&h), None);
        assert_eq!(normalize_arch("arm64"), "aarch64");
        assert_eq!(normalize_arch("aarch64"), "aarch64");
        // The binary running this test is an ELF for the machine it runs on.
        let me = elf_arch(&std::env::current_exe().unwrap()).unwrap();
        assert_eq!(me, std::env::consts::ARCH);
    }

    #[test]
    fn hash_script_reports_present_files_by_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub dir")).unwrap();
        std::fs::write(dir.path().join("sub dir/it's"), b"abc").unwrap();
        let item = |remote: &str| Item {
            local: PathBuf::new(),
            remote: remote.into(),
            bytes: 0,
            sha256: String::new(),
            mode: "0644",
        };
        let items = [item("missing"), item("sub dir/it's")];
        let out = Command::new("sh")
            .arg("-c")
            .arg(hash_script(&items))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        let got = parse_hashes(&String::from_utf8(out.stdout).unwrap(), 2);
        assert_eq!(got[0], None);
        assert_eq!(
            got[1].as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[test]
    fn unit_template_renders() {
        let u = render_unit(UNIT_TEMPLATE, "/opt/ove", "ocr", "nvidia").unwrap();
        assert!(!u.contains('@'), "a placeholder was left:\n{u}");
        assert!(u.contains("ExecStart=/opt/ove/bin/ove bench --bundle /opt/ove/bundles/ocr\n"));
        assert!(u.contains("User=nvidia\n"));
        assert!(render_unit(UNIT_TEMPLATE, "/opt/my ove", "ocr", "nvidia").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(3 * 1024 * 1024), "3.0 MiB");
    }
}
