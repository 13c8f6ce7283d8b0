//! `ove deploy` end to end, against a throwaway OpenSSH server on 127.0.0.1.
//!
//! The server runs as the current user (root in CI) with a host key and an authorized key
//! made by ssh-keygen in a temporary directory, on a free high port; the "device" directory
//! is another temporary directory. The deployed binary is this build's `ove` itself (the
//! "device" is this x86 machine), so the remote `ove --version` check runs for real.
//!
//! Needs the OpenSSH server and client (Debian: openssh-server openssh-client, installed by
//! scripts/setup): without them the test FAILS, it does not skip.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ove_core::config::{GenerationConfig, ModelConfig, TextConfig, VisionConfig};
use ove_core::manifest::{
    file_entry, sha256_file, Graphs, Manifest, Quantization, TokenIds, SCHEMA_VERSION,
};
use ove_core::PreprocessorConfig;

const OVE: &str = env!("CARGO_BIN_EXE_ove");
/// Longest any one `ove deploy` may take here (a few MB over the loopback).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(180);

// --- the throwaway sshd -----------------------------------------------------------------------

/// A running sshd; killed (and reaped) on drop, also when the test panics.
struct Sshd {
    child: Child,
    port: u16,
    user: String,
    /// Client private key authorized on the server.
    key: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `name` in the usual system places and on PATH.
impl Sshd {
    /// `ove deploy` arguments for this server (throwaway key, no host-key checks), deploying
    /// `bundle` into `dir` with `binary`.
    fn deploy_args(&self, bundle: &Path, dir: &Path, binary: &Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "deploy".into(),
            "--host".into(),
            format!("{}@127.0.0.1", self.user).into(),
            "--port".into(),
            self.port.to_string().into(),
            "--identity".into(),
            self.key.clone().into(),
        ];
        for opt in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
        ] {
            args.push("--ssh-option".into());
            args.push(opt.into());
        }
        for (flag, value) in [("--bundle", bundle), ("--dir", dir), ("--binary", binary)] {
            args.push(flag.into());
            args.push(value.into());
        }
        args
    }
}

fn find_program(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    extra
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require(name: &str, extra: &[&str], package: &str) -> PathBuf {
    find_program(name, extra).unwrap_or_else(|| {
        panic!(
            "`{name}` not found: this test needs OpenSSH (Debian/Ubuntu: apt-get install {package}; \
             scripts/setup installs it)"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "ove-deploy-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen");
    assert!(st.success(), "ssh-keygen failed for {}", path.display());
}

fn start_sshd() -> Sshd {
    let sshd = require(
        "sshd",
        &["/usr/sbin", "/usr/local/sbin", "/sbin"],
        "openssh-server",
    );
    require("ssh", &[], "openssh-client");
    require("ssh-keygen", &[], "openssh-client");

    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    if uid == 0 {
        // sshd running as root insists on its privilege separation directory, which the
        // Debian package only creates when its service starts (not in a container).
        let privsep = Path::new("/run/sshd");
        if !privsep.is_dir() {
            std::fs::create_dir_all(privsep).expect("creating /run/sshd for sshd");
        }
    }
    let user = String::from_utf8(
        Command::new("id")
            .arg("-un")
            .output()
            .expect("id -un")
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();

    let dir = tempfile::tempdir().unwrap();
    let host_key = dir.path().join("host_ed25519");
    let key = dir.path().join("client_ed25519");
    keygen(&host_key);
    keygen(&key);
    let authorized = dir.path().join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &authorized).unwrap();

    // A few tries in case another process takes the port between the probe and sshd's bind.
    let log = dir.path().join("sshd.log");
    for _attempt in 0..3 {
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile none\nStrictModes no\nUsePAM no\nPubkeyAuthentication yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel VERBOSE\n",
                host_key.display(),
                authorized.display(),
            ),
        )
        .unwrap();
        let mut child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", sshd.display()));
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        // Up to 10 s for the port to open.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = loop {
            if let Some(st) = child.try_wait().unwrap() {
                let text = read_log();
                if text.contains("Address already in use") {
                    break false;
                }
                panic!("sshd exited at start ({st}):\n{text}");
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                break true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sshd did not listen on port {port} within 10 s:\n{}",
                    read_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if listening {
            return Sshd {
                child,
                port,
                user,
                key,
                log,
                _dir: dir,
            };
        }
    }
    panic!(
        "sshd found no free port in 3 tries:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

// --- a small fake bundle with a valid manifest ------------------------------------------------

/// Deterministic bytes (an LCG), so that files differ and are not trivially compressible.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// A bundle directory whose manifest lists every file with its real size and sha256
/// (graphs included: `Manifest::read` refuses graphs that are not listed in `files`).
fn fake_bundle(dir: &Path) -> Manifest {
    let files: [(&str, Vec<u8>); 7] = [
        ("vision.onnx", b"not really an onnx graph (vision)".to_vec()),
        ("vision.onnx.data", bytes(1, 300_000)),
        (
            "decoder.onnx",
            b"not really an onnx graph (decoder)".to_vec(),
        ),
        // Over 2 MiB: several 1 MiB chunks of the copy loop.
        ("decoder.onnx.data", bytes(2, 2_500_000)),
        ("embed_tokens.safetensors", bytes(3, 70_000)),
        ("tokenizer.json", br#"{"version": "1.0"}"#.to_vec()),
        (
            "extra/notes with space's.txt",
            b"a file in a subdirectory".to_vec(),
        ),
    ];
    for (rel, data) in &files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        created_by: format!("ove {} (cli/tests/deploy.rs)", env!("CARGO_PKG_VERSION")),
        dtype: "f32".into(),
        model: ModelConfig {
            model_type: "llavaonevision1_5".into(),
            vision_config: VisionConfig {
                depth: 1,
                hidden_size: 16,
                num_heads: 2,
                intermediate_size: 32,
                patch_size: 14,
                spatial_merge_size: 2,
                layer_norm_eps: 1e-5,
                text_hidden_size: 16,
                in_channels: 3,
                temporal_patch_size: 1,
                hidden_act: "gelu".into(),
                rope_theta: None,
            },
            text_config: TextConfig {
                hidden_size: 16,
                num_hidden_layers: 1,
                num_attention_heads: 2,
                num_key_value_heads: 1,
                head_dim: Some(8),
                intermediate_size: 32,
                rope_theta: 10000.0,
                rms_norm_eps: 1e-6,
                vocab_size: 64,
                tie_word_embeddings: false,
                max_position_embeddings: 512,
                attention_bias: false,
                hidden_act: "silu".into(),
            },
            image_token_id: 60,
            vision_start_token_id: Some(61),
            vision_end_token_id: Some(62),
            video_token_id: None,
        },
        preprocessor: PreprocessorConfig::from_file(&examples.join("preprocessor_config.json"))
            .unwrap(),
        generation: GenerationConfig::default(),
        tokens: TokenIds {
            image_pad: 60,
            vision_start: Some(61),
            vision_end: Some(62),
            im_start: None,
            im_end: None,
            eos: vec![63],
        },
        graphs: Graphs {
            vision: "vision.onnx".into(),
            decoder: "decoder.onnx".into(),
            embeddings: "embed_tokens.safetensors".into(),
            tokenizer: Some("tokenizer.json".into()),
            ctc_head: None,
            lines: None,
            decoder_batch: true,
            decoder_ort: None,
        },
        max_context: 512,
        quantization: Quantization {
            scheme: "none".into(),
            ..Default::default()
        },
        reading: Default::default(),
        files: files
            .iter()
            .map(|(rel, _)| file_entry(dir, rel).unwrap())
            .collect(),
    };
    manifest.write(dir).unwrap();
    // The bundle is valid as the runtime sees it.
    let read = Manifest::read(dir).expect("the fake bundle's manifest reads back");
    read.verify_files(dir).expect("the fake bundle verifies");
    manifest
}

// --- running ove --------------------------------------------------------------------------------

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ove deploy: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `ove ARGS` with a time limit (killed past it); output goes through files so that a
/// chatty child can never block on a full pipe.
fn ove(args: &[&std::ffi::OsStr], env_path: Option<&Path>) -> Run {
    let out = tempfile::tempdir().unwrap();
    let (o, e) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut cmd = Command::new(OVE);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap());
    if let Some(p) = env_path {
        cmd.env("PATH", p);
    }
    let mut child = cmd.spawn().expect("running ove");
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ove {args:?} did not finish in {DEPLOY_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stdout: std::fs::read_to_string(&o).unwrap(),
        stderr: std::fs::read_to_string(&e).unwrap(),
    }
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// Inode of every file under `dir` (relative path -> inode): a file that was copied again
/// was renamed into place, so it has a new inode; one left alone keeps its own.
fn inodes(dir: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, u64>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, e.metadata().unwrap().ino());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

// --- the tests ----------------------------------------------------------------------------------

#[test]
fn deploy_over_ssh_is_verified_idempotent_and_repairs() {
    let server = start_sshd();
    let bundle_parent = tempfile::tempdir().unwrap();
    let bundle = bundle_parent.path().join("ocr-test");
    std::fs::create_dir(&bundle).unwrap();
    let manifest = fake_bundle(&bundle);
    let device = tempfile::tempdir().unwrap();
    // Quotes and spaces in the remote path: every remote path must be quoted properly.
    let dir = device.path().join("it's a dir");

    let deploy_with = |binary: &Path| {
        ove(
            &server
                .deploy_args(&bundle, &dir, binary)
                .iter()
                .map(os)
                .collect::<Vec<_>>(),
            None,
        )
    };
    let deploy = || deploy_with(Path::new(OVE));
    let remote_bundle = dir.join("bundles/ocr-test");
    let n_items = manifest.files.len() + 2; // + the binary and manifest.json

    // 1. A first deploy copies everything, and everything matches.
    let run = deploy();
    assert!(run.status.success(), "{run}\nsshd log:\n{}", server.log());
    assert!(
        run.stdout.contains(&format!(": {n_items} copied (")),
        "first deploy should copy all {n_items} files:\n{run}"
    );
    assert_eq!(
        sha256_file(&dir.join("bin/ove")).unwrap(),
        sha256_file(Path::new(OVE)).unwrap()
    );
    for f in &manifest.files {
        assert_eq!(
            sha256_file(&remote_bundle.join(&f.path)).unwrap(),
            f.sha256,
            "{}",
            f.path
        );
    }
    assert_eq!(
        std::fs::read(remote_bundle.join("manifest.json")).unwrap(),
        std::fs::read(bundle.join("manifest.json")).unwrap()
    );
    // The deployed bundle is a valid bundle, and no temporary file was left behind.
    Manifest::read(&remote_bundle)
        .unwrap()
        .verify_files(&remote_bundle)
        .unwrap();
    let first = inodes(&dir);
    assert_eq!(
        first.len(),
        n_items,
        "unexpected files on the device: {first:?}"
    );
    assert!(
        std::fs::metadata(dir.join("bin/ove")).unwrap().mode() & 0o111 != 0,
        "bin/ove is not executable"
    );

    // 2. Deploying again copies nothing: every file keeps its inode.
    let run = deploy();
    assert!(run.status.success(), "{run}");
    assert!(
        run.stdout.contains(": 0 copied (")
            && run.stdout.contains(&format!("{n_items} up to date")),
        "second deploy should copy nothing:\n{run}"
    );
    assert!(!run.stderr.contains("copy  "), "{run}");
    assert_eq!(
        inodes(&dir),
        first,
        "files were replaced by an idempotent deploy"
    );

    // 3. A corrupted file on the device (same size, other bytes) is the only one sent again.
    let victim = "decoder.onnx.data";
    let victim_path = remote_bundle.join(victim);
    let mut data = std::fs::read(&victim_path).unwrap();
    data[1_234_567] ^= 0xff;
    std::fs::write(&victim_path, &data).unwrap();
    let run = deploy();
    assert!(run.status.success(), "{run}");
    assert!(
        run.stdout.contains(": 1 copied (")
            && run.stderr.contains(&format!(
                "copy  bundles/ocr-test/{victim} (differs on the device)"
            )),
        "only {victim} should be copied again:\n{run}"
    );
    let third = inodes(&dir);
    for (rel, ino) in &first {
        if rel.ends_with(victim) {
            assert_ne!(third[rel], *ino, "{rel} was not replaced");
        } else {
            assert_eq!(
                third[rel], *ino,
                "{rel} was copied again but had not changed"
            );
        }
    }
    assert_eq!(third.len(), n_items);
    assert_eq!(
        sha256_file(&victim_path).unwrap(),
        manifest
            .files
            .iter()
            .find(|f| f.path == victim)
            .unwrap()
            .sha256
    );

    // 4. A binary for another machine is refused before anything is copied.
    let aarch64 = bundle_parent.path().join("ove-aarch64");
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little endian
    elf[18] = 0xB7; // EM_AARCH64
    std::fs::write(&aarch64, &elf).unwrap();
    if std::env::consts::ARCH != "aarch64" {
        let run = deploy_with(&aarch64);
        assert!(!run.status.success(), "{run}");
        assert!(
            run.stderr.contains("is an aarch64 executable but"),
            "expected the architecture mismatch error:\n{run}"
        );
        assert_eq!(inodes(&dir), third, "files changed after a refused deploy");
    }
}

/// `--warm` runs the deployed bundle once on the device: a real bundle (the golden one-image
/// checkpoint exported by this `ove`) must load and bench there.
#[test]
fn warm_runs_the_deployed_bundle_on_the_device() {
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/one-image/checkpoint");
    assert!(
        golden.is_dir(),
        "golden data missing at {}",
        golden.display()
    );
    let server = start_sshd();
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("golden");
    let export = ove(
        &[
            os("export"),
            os("--checkpoint"),
            os(&golden),
            os("--out"),
            os(&bundle),
        ],
        None,
    );
    assert!(export.status.success(), "{export}");
    let dir = work.path().join("device");
    let mut args = server.deploy_args(&bundle, &dir, Path::new(OVE));
    args.push("--warm".into());
    let run = ove(&args.iter().map(os).collect::<Vec<_>>(), None);
    assert!(run.status.success(), "{run}");
    assert!(run.stderr.contains("warming"), "{run}");
    assert!(
        run.stderr.contains("prefill"),
        "the device's bench report is missing:\n{run}"
    );
}

#[test]
fn unreachable_host_is_a_clear_error() {
    require("ssh", &[], "openssh-client");
    let port = free_port().to_string(); // nothing listens there any more
    let run = ove(
        &[
            os("deploy"),
            os("--host"),
            os("nobody@127.0.0.1"),
            os("--port"),
            os(&port),
            os("--binary"),
            os(OVE),
            os("--dir"),
            os("/nonexistent/ove"),
            os("--ssh-option"),
            os("ConnectTimeout=5"),
        ],
        None,
    );
    assert!(!run.status.success(), "{run}");
    assert!(
        run.stderr
            .contains("cannot reach nobody@127.0.0.1 over ssh")
            && run.stderr.contains("Connection refused"),
        "{run}"
    );
}

#[test]
fn missing_ssh_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let run = ove(
        &[
            os("deploy"),
            os("--host"),
            os("nobody@127.0.0.1"),
            os("--binary"),
            os(OVE),
        ],
        Some(empty.path()),
    );
    assert!(!run.status.success(), "{run}");
    assert!(run.stderr.contains("ssh not found"), "{run}");
}

#[test]
fn damaged_local_bundle_is_refused_before_connecting() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("b");
    std::fs::create_dir(&bundle).unwrap();
    fake_bundle(&bundle);
    std::fs::write(
        bundle.join("decoder.onnx"),
        b"not really an onnx graph (decodeX)",
    )
    .unwrap();
    let run = ove(
        &[
            os("deploy"),
            // Never contacted: the bundle check comes first.
            os("--host"),
            os("nobody@host.invalid"),
            os("--binary"),
            os(OVE),
            os("--bundle"),
            os(&bundle),
        ],
        None,
    );
    assert!(!run.status.success(), "{run}");
    assert!(
        run.stderr.contains("is damaged") && run.stderr.contains("decoder.onnx"),
        "{run}"
    );
    assert!(!run.stderr.contains("connecting"), "{run}");
}

#[test]
fn missing_binary_points_to_the_build_script() {
    let tmp = tempfile::tempdir().unwrap();
    let run = ove(
        &[
            os("deploy"),
            os("--host"),
            os("nobody@host.invalid"),
            os("--binary"),
            os(&tmp.path().join("no-such-ove")),
        ],
        None,
    );
    assert!(!run.status.success(), "{run}");
    assert!(run.stderr.contains("no-such-ove"), "{run}");
}
