//! Data-parallel training over Gloo, two processes on this machine: world size 2 gives
//! the losses and weights of one process on the same global batch (plain DP and ZeRO-1);
//! a rank killed with SIGKILL makes its peer exit with an error within a minute and
//! leaves the last checkpoint whole; resuming from it gives the uninterrupted run (and one
//! process can resume it too); PyTorch's own `torchrun` launches the same group.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ove_train::train::resume::{read_state, resolve};

fn golden() -> PathBuf {
    common::golden().join("two-images")
}

/// Seven samples (one with an image) of different lengths, and a stage taking `batch` of
/// them a step.
fn write_inputs_with(dir: &Path, batch: usize) -> (PathBuf, PathBuf) {
    std::fs::copy(golden().join("img0.png"), dir.join("img0.png")).unwrap();
    let mut lines = vec![serde_json::json!({
        "prompt_ids": [1, 1655, 5, 6], "response_ids": [7, 8, 9], "images": ["img0.png"]
    })];
    for i in 0..6i64 {
        let prompt: Vec<i64> = (0..5 + i).map(|t| (t * 37 + i * 11) % 1600 + 2).collect();
        let response: Vec<i64> = (0..3 + i).map(|t| (t * 53 + i * 7) % 1600 + 2).collect();
        lines.push(serde_json::json!({"prompt_ids": prompt, "response_ids": response}));
    }
    let data = dir.join("data.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&data, text.join("\n")).unwrap();
    // No pack_length: one sample a micro-batch, so each rank gets batch / 2 of them.
    let stage = dir.join(format!("stage-{batch}.toml"));
    std::fs::write(
        &stage,
        format!(
            "name = \"dp\"\ntrainable = [\"all\"]\n[optimizer]\nlr = 2e-3\nmin_lr = 1e-5\n\
             warmup_ratio = 0.2\nweight_decay = 0.01\n[data]\nglobal_batch_size = {batch}\n"
        ),
    )
    .unwrap();
    (data, stage)
}

fn write_inputs(dir: &Path) -> (PathBuf, PathBuf) {
    write_inputs_with(dir, 4)
}

fn train_args(data: &Path, stage: &Path, out: &Path, steps: usize) -> Vec<String> {
    [
        "train",
        "--checkpoint",
        golden().join("checkpoint").to_str().unwrap(),
        "--stage",
        stage.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        &steps.to_string(),
        "--seed",
        "5",
        "--dist-timeout-s",
        "30",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn ove_train(args: &[String]) -> String {
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    common::ove_train(&refs)
}

/// Each step's loss in OUT/metrics.jsonl (the last line of a step written twice, as after
/// a resume from an earlier checkpoint).
fn losses(out: &Path) -> BTreeMap<u64, f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// Every tensor of OUT/model.safetensors as f32 values.
fn weights(out: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let v = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, v)
        })
        .collect()
}

fn assert_same_run(a: &Path, b: &Path, tol: f64, weight_tol: f64) {
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.keys().collect::<Vec<_>>(), lb.keys().collect::<Vec<_>>());
    for (step, x) in &la {
        let y = lb[step];
        assert!((x - y).abs() <= tol, "step {step}: loss {x} vs {y}");
    }
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    let mut worst = (0.0f64, String::new());
    for (name, x) in &wa {
        for (p, q) in x.iter().zip(&wb[name]) {
            let d = (*p as f64 - *q as f64).abs();
            if d > worst.0 {
                worst = (d, name.clone());
            }
        }
    }
    println!("max |weight difference| {:.3e} ({})", worst.0, worst.1);
    assert!(
        worst.0 <= weight_tol,
        "weights differ by {:.3e} in {}",
        worst.0,
        worst.1
    );
}

/// Trains 5 steps in one process, then with 2 ranks (`--nproc-per-node 2`, plain and
/// `--zero1`), and checks each against the single process; returns the ZeRO-1 run's
/// `distributed.json`.
fn one_against_two(batch: usize, weight_tol: f64) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let (data, stage) = write_inputs_with(dir.path(), batch);
    let steps = 5;
    let single = dir.path().join("single");
    ove_train(&train_args(&data, &stage, &single, steps));
    let first = losses(&single);
    assert!(
        first[&4] < first[&0],
        "training should lower the loss: {first:?}"
    );

    // Buckets of 20 KiB (the model has 2.2 MB of f32 weights): many buckets, most of
    // which start their all-reduce from the gradient hooks while the backward runs.
    let dp = dir.path().join("dp");
    let mut args = train_args(&data, &stage, &dp, steps);
    args.extend(["--nproc-per-node", "2", "--bucket-mib", "0.02"].map(String::from));
    ove_train(&args);
    assert_same_run(&single, &dp, 1e-6, weight_tol);
    let metrics = |out: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect()
    };
    for m in metrics(&dp) {
        let t = &m["times"];
        let part = |k: &str| t[k].as_f64().unwrap();
        for k in ["forward", "head_loss", "backward", "optimizer"] {
            assert!(part(k) > 0.0, "{k}: {t}");
        }
        let sum = part("forward") + part("head_loss") + part("backward");
        assert!(
            sum <= part("forward_backward") + 1e-9,
            "the phases are parts of forward_backward: {t}"
        );
        assert!(
            part("communication") > 0.0,
            "a data-parallel step communicates: {t}"
        );
        let (buckets, early) = (
            m["buckets"].as_u64().unwrap(),
            m["buckets_in_backward"].as_u64().unwrap(),
        );
        assert!(buckets > 10 && early <= buckets, "{m}");
        // From the second step on the buckets follow the backward's order, so the
        // first ones fill (and start) before the backward is done.
        if m["step"].as_u64().unwrap() >= 1 {
            assert!(early > 0, "no bucket started during the backward: {m}");
        }
    }
    for m in metrics(&single) {
        let t = &m["times"];
        assert_eq!(t["communication"].as_f64(), Some(0.0), "one process: {t}");
        assert_eq!(m["buckets"].as_u64(), Some(0), "one process: {m}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dp.join("distributed.json")).unwrap())
            .unwrap();
    assert_eq!(report["world_size"], 2);
    assert_eq!(report["zero1"], false);

    let zero = dir.path().join("zero1");
    let mut args = train_args(&data, &stage, &zero, steps);
    args.extend(["--nproc-per-node".into(), "2".into(), "--zero1".into()]);
    ove_train(&args);
    assert_same_run(&single, &zero, 1e-6, weight_tol);
    serde_json::from_str(&std::fs::read_to_string(zero.join("distributed.json")).unwrap()).unwrap()
}

/// One micro-batch a rank: the sum over ranks adds the same two gradients one process
/// adds, so losses and weights agree to 1e-6.
#[test]
fn two_ranks_match_one_process_with_and_without_zero1() {
    let report = one_against_two(2, 1e-6);
    assert_eq!(report["zero1"], true);
    let mem = &report["optimizer_memory"];
    let (per_rank, whole) = (
        mem["state_bytes_per_rank"].as_u64().unwrap(),
        mem["state_bytes_unsharded"].as_u64().unwrap(),
    );
    println!("optimizer state per rank: {per_rank} bytes with ZeRO-1, {whole} without");
    // f32 parameters are their own masters: a rank holds the two moments of about half
    // the parameters (whole parameters a rank, so not exactly half).
    assert!(
        per_rank as f64 <= whole as f64 * 0.55,
        "{per_rank} vs {whole}"
    );
}

/// Two micro-batches a rank: the gradients are summed in another order ((a + c) + (b + d)
/// against ((a + b) + c) + d), a rounding difference that AdamW's normalisation magnifies
/// where a gradient is near zero; losses still agree to 1e-6, weights to 1e-4.
#[test]
fn two_ranks_with_several_micro_batches_each_match_one_process() {
    one_against_two(4, 1e-4);
}

/// PyTorch's launcher: `$OVE_TORCHRUN`, or the project's `.venv/bin/torchrun`, which
/// `scripts/setup-torchrun` makes work (scripts/test runs it).
fn torchrun() -> PathBuf {
    let path = std::env::var_os("OVE_TORCHRUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/torchrun"));
    let works = Command::new(&path)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        works,
        "{} does not run: scripts/setup-torchrun installs what `import torch` needs \
         (or point OVE_TORCHRUN at a torchrun)",
        path.display()
    );
    path
}

/// `torchrun --nproc-per-node 2 --no-python ove-train train ...`, as trainer/README.md
/// shows it: torchrun's agent hosts the store (`TORCHELASTIC_USE_AGENT_STORE`), both ranks
/// join it, and the run is the run one process makes on the same global batch.
#[test]
fn torchrun_launches_two_ranks_that_match_one_process() {
    let launcher = torchrun();
    let dir = tempfile::tempdir().unwrap();
    let (data, stage) = write_inputs_with(dir.path(), 2);
    let steps = 4;
    let single = dir.path().join("single");
    ove_train(&train_args(&data, &stage, &single, steps));

    let out = dir.path().join("torchrun");
    let port = free_port().to_string();
    let result = Command::new(&launcher)
        .args([
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            &port,
            "--no-python",
            env!("CARGO_BIN_EXE_ove-train"),
        ])
        .args(train_args(&data, &stage, &out, steps))
        .env("OMP_NUM_THREADS", "1")
        .env("GLOO_SOCKET_IFNAME", "lo")
        .output()
        .expect("running torchrun");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(result.status.success(), "torchrun failed:\n{log}");
    assert_same_run(&single, &out, 1e-6, 1e-6);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("distributed.json")).unwrap())
            .unwrap();
    assert_eq!(report["world_size"], 2, "{report}");
    assert_eq!(
        report["agent_store"], true,
        "under torchrun the agent hosts the store: {report}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Rank `rank` of 2 launched as torchrun would without its agent: rank 0 hosts the store.
fn spawn_rank(args: &[String], rank: usize, port: u16, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ove-train"))
        .args(args)
        .env("WORLD_SIZE", "2")
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("GLOO_SOCKET_IFNAME", "lo")
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_rank_stops_its_peer_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (data, stage) = write_inputs(dir.path());
    let steps = 40;
    let whole = dir.path().join("whole");
    let mut args = train_args(&data, &stage, &whole, steps);
    args.extend(["--nproc-per-node".into(), "2".into()]);
    ove_train(&args);

    let out = dir.path().join("killed");
    let mut args = train_args(&data, &stage, &out, steps);
    args.extend(["--save-every".into(), "2".into()]);
    let port = free_port();
    let mut r0 = spawn_rank(&args, 0, port, &dir.path().join("rank0.log"));
    let mut r1 = spawn_rank(&args, 1, port, &dir.path().join("rank1.log"));
    let latest = out.join("checkpoints/latest");
    let started = Instant::now();
    while !latest.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint in 2 minutes"
        );
        if let Some(status) = r0.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("rank0.log")).unwrap_or_default();
            panic!("rank 0 ended ({status}) before the kill:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    r1.kill().unwrap(); // SIGKILL
    let _ = r1.wait();
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = r0.try_wait().unwrap() {
            break s;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            let _ = r0.kill();
            panic!("rank 0 still running 60 s after its peer was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.path().join("rank0.log")).unwrap();
    println!(
        "rank 0 exited {status} {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert!(
        !status.success(),
        "rank 0 should fail when its peer dies:\n{log}"
    );
    assert!(
        log.contains("rank 0 of 2"),
        "the error names the rank:\n{log}"
    );
    assert!(!out.join("model.safetensors").exists());

    // The last checkpoint is whole, and resuming from it (as torchrun would restart the
    // group) ends where the uninterrupted run ends.
    let ckpt = resolve(&out).unwrap();
    let state = read_state(&ckpt).unwrap();
    assert!(state.step >= 2 && state.step.is_multiple_of(2), "{state:?}");
    assert!(!ckpt.with_extension("tmp").exists());
    // The checkpoint holds the gathered optimizer state and the global data cursor, so
    // one process can take over the run too (its sums come in another order: 1e-4).
    let alone = dir.path().join("resumed-alone");
    copy_dir(&out, &alone);
    let mut resume_alone = train_args(&data, &stage, &alone, steps);
    resume_alone.extend(["--resume".into(), alone.to_str().unwrap().into()]);
    ove_train(&resume_alone);
    assert_same_run(&whole, &alone, 1e-4, 1e-4);

    let mut resume = train_args(&data, &stage, &out, steps);
    resume.extend([
        "--resume".into(),
        out.to_str().unwrap().into(),
        "--nproc-per-node".into(),
        "2".into(),
    ]);
    ove_train(&resume);
    assert_same_run(&whole, &out, 1e-6, 1e-6);
}
