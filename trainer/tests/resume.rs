//! Resumable checkpoints: a run stopped midway and resumed gives the same per-step losses
//! (and the same final weights) as an uninterrupted one; a non-finite loss stops the run
//! with the last good checkpoint intact.

mod common;

use std::path::{Path, PathBuf};

use ove_train::checkpoint::{load_model, SaveDtype, SaveOptions};
use ove_train::train::resume::{read_state, resolve};
use ove_train::train::run::{run, StepMetrics, TrainRun};
use ove_train::train::StageConfig;
use tch::{Device, Kind};

/// The golden two-images case.
fn golden() -> PathBuf {
    common::golden().join("two-images")
}

/// Five samples (one with an image), so three per step cross epoch boundaries.
fn write_data(dir: &Path) -> PathBuf {
    std::fs::copy(golden().join("img0.png"), dir.join("img0.png")).unwrap();
    let mut lines = vec![serde_json::json!({
        "prompt_ids": [1, 1655, 5, 6], "response_ids": [7, 8, 9], "images": ["img0.png"]
    })];
    for i in 0..4i64 {
        let prompt: Vec<i64> = (0..6 + i).map(|t| (t * 37 + i * 11) % 1600 + 2).collect();
        let response: Vec<i64> = (0..4 + i).map(|t| (t * 53 + i * 7) % 1600 + 2).collect();
        lines.push(serde_json::json!({"prompt_ids": prompt, "response_ids": response}));
    }
    let path = dir.join("data.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&path, text.join("\n")).unwrap();
    path
}

fn stage(lr: f64, warmup: f64) -> StageConfig {
    StageConfig::from_toml(
        "test",
        &format!(
            "name = \"test\"\ntrainable = [\"all\"]\n[optimizer]\nlr = {lr:e}\nmin_lr = 1e-5\n\
             warmup_ratio = {warmup}\nweight_decay = 0.01\n[data]\nglobal_batch_size = 3\n\
             pack_length = 512\n"
        ),
    )
    .unwrap()
}

fn train_run(data: &Path, out: &Path, stage: StageConfig, steps: usize) -> TrainRun {
    TrainRun {
        checkpoint: golden().join("checkpoint"),
        stage,
        data: data.to_path_buf(),
        steps,
        out: out.to_path_buf(),
        save_every: None,
        save: SaveOptions {
            dtype: SaveDtype::F32,
            max_shard_bytes: None,
        },
        device: Device::Cpu,
        seed: 11,
        resume: None,
        stop_after: None,
        peak_flops: None,
        eval_data: None,
        eval_every: None,
        packed: None,
        bf16: false,
        zero1: false,
        bucket_bytes: 25 << 20,
        exec: Default::default(),
    }
}

fn metrics(out: &Path) -> Vec<StepMetrics> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn stopped_and_resumed_matches_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path());
    let steps = 6;

    let full_out = dir.path().join("full");
    let full = run(&train_run(&data, &full_out, stage(2e-3, 0.3), steps)).unwrap();
    assert_eq!(full.len(), steps);

    let split_out = dir.path().join("split");
    let mut first = train_run(&data, &split_out, stage(2e-3, 0.3), steps);
    first.stop_after = Some(3);
    first.save_every = Some(2);
    let head = run(&first).unwrap();
    assert_eq!(head.len(), 3);
    // Stopped: a resumable checkpoint, no final weights.
    assert!(!split_out.join("model.safetensors").exists());
    let ckpt = resolve(&split_out).unwrap();
    assert!(
        ckpt.ends_with("checkpoints/step-00000003"),
        "{}",
        ckpt.display()
    );
    let state = read_state(&ckpt).unwrap();
    assert_eq!((state.step, state.optimizer_steps), (3, 3));
    assert_eq!((state.data.epoch, state.data.offset), (1, 4));
    assert!(ckpt.with_file_name("step-00000002").is_dir());
    assert!(!ckpt.with_file_name("step-00000003.tmp").exists());

    let mut second = train_run(&data, &split_out, stage(2e-3, 0.3), steps);
    second.resume = Some(split_out.clone());
    let tail = run(&second).unwrap();
    assert_eq!(tail.len(), 3);

    let resumed: Vec<f64> = head.iter().chain(&tail).map(|s| s.loss).collect();
    let uninterrupted: Vec<f64> = full.iter().map(|s| s.loss).collect();
    println!("uninterrupted {uninterrupted:?}\nresumed       {resumed:?}");
    assert_eq!(resumed, uninterrupted);
    let lrs: Vec<f64> = head.iter().chain(&tail).map(|s| s.lr).collect();
    assert_eq!(lrs, full.iter().map(|s| s.lr).collect::<Vec<_>>());
    assert!(uninterrupted[5] < uninterrupted[0]);

    // Metrics: one line per step in both runs, the same losses; throughput recorded.
    let (m_full, m_split) = (metrics(&full_out), metrics(&split_out));
    assert_eq!(
        m_full.iter().map(|m| m.step).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    assert_eq!(
        m_split.iter().map(|m| m.step).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    for (a, b) in m_full.iter().zip(&m_split) {
        assert_eq!(a.loss, b.loss);
        assert!(a.tokens_per_s > 0.0 && a.mfu > 0.0 && a.grad_norm > 0.0);
    }
    // The same final weights.
    let weights = |out: &Path| std::fs::read(out.join("model.safetensors")).unwrap();
    assert!(
        weights(&full_out) == weights(&split_out),
        "final weights differ"
    );

    // A resume must keep the settings.
    let mut wrong = train_run(&data, &split_out, stage(2e-3, 0.3), steps + 1);
    wrong.resume = Some(ckpt);
    let err = run(&wrong).unwrap_err();
    assert!(format!("{err:#}").contains("--steps"), "{err:#}");
}

#[test]
fn a_non_finite_loss_stops_with_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path());
    let out = dir.path().join("out");
    // lr 1e30 with no warmup: the first step blows the weights up, the second one's loss
    // is no longer finite.
    let mut cfg = train_run(&data, &out, stage(1e30, 0.0), 5);
    cfg.save_every = Some(1);
    let err = run(&cfg).unwrap_err();
    let msg = format!("{err:#}");
    println!("{msg}");
    assert!(msg.contains("non-finite loss"), "{msg}");
    assert!(msg.contains("training stopped at step 1"), "{msg}");
    assert!(msg.contains("step-00000001"), "{msg}");
    assert_eq!(metrics(&out).len(), 1);
    assert!(!out.join("model.safetensors").exists());
    // The last good checkpoint is whole: it loads strictly, every weight finite.
    let last = resolve(&out).unwrap();
    assert!(last.ends_with("step-00000001"));
    assert_eq!(read_state(&last).unwrap().step, 1);
    let loaded = load_model(&last, Device::Cpu).unwrap();
    for (name, t) in loaded.vs.variables() {
        let finite = t.isfinite().all().int64_value(&[]) == 1;
        assert!(finite, "{name} is not finite");
        let _ = t.to_kind(Kind::Float);
    }
    let mut resumed = train_run(&data, &out, stage(1e30, 0.0), 5);
    resumed.resume = Some(out.clone());
    assert!(run(&resumed).is_err(), "resuming repeats the failure");
}

#[test]
fn command_line_stop_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path());
    let stage_file = dir.path().join("stage.toml");
    std::fs::write(
        &stage_file,
        "name = \"cli\"\ntrainable = [\"visual.merger\", \"model.norm\"]\n[optimizer]\nlr = 1e-3\n\
         min_lr = 1e-5\nwarmup_ratio = 0.2\n[data]\nglobal_batch_size = 2\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let train = |extra: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ove-train"))
            .arg("train")
            .arg("--checkpoint")
            .arg(golden().join("checkpoint"))
            .arg("--stage")
            .arg(&stage_file)
            .arg("--data")
            .arg(&data)
            .args(["--steps", "5", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let first = train(&["--stop-after", "2"]);
    assert!(first.contains("stopped early"), "{first}");
    assert_eq!(metrics(&out).len(), 2);
    let resume = out.to_string_lossy().to_string();
    let second = train(&["--resume", &resume]);
    assert!(second.contains("3 steps"), "{second}");
    let steps: Vec<usize> = metrics(&out).iter().map(|m| m.step).collect();
    assert_eq!(steps, [0, 1, 2, 3, 4]);
    assert!(out.join("model.safetensors").is_file());
    // Plot the run.
    let png = dir.path().join("curves.png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ove-train"))
        .arg("plot")
        .arg("--metrics")
        .arg(out.join("metrics.jsonl"))
        .arg("--out")
        .arg(&png)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (900, 880));
}

/// `[schedule]` in a stage file: evaluation every N steps and after the last one, on
/// held-out data, written to OUT/eval.jsonl; zero intervals are refused.
#[test]
fn eval_interval_writes_held_out_losses() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path());
    let mut st = stage(3e-3, 0.0);
    st.schedule.eval_every = Some(2);
    let out = dir.path().join("out");
    let mut run = train_run(&data, &out, st, 5);
    run.eval_data = Some(data.clone());
    run.eval_every = run.stage.schedule.eval_every;
    ove_train::train::run::run(&run).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<i64> = lines.iter().map(|v| v["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, [1, 3, 4], "after steps 2 and 4 and the last (5th)");
    for v in &lines {
        let loss = v["eval_loss"].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{v}");
        assert!(v["eval_tokens"].as_i64().unwrap() > 0);
    }
    // Trained on the same samples, the loss on them falls.
    let first = lines[0]["eval_loss"].as_f64().unwrap();
    let last = lines[2]["eval_loss"].as_f64().unwrap();
    assert!(last < first, "{first} -> {last}");

    let bad = "name = \"t\"\ntrainable = [\"all\"]\n[optimizer]\nlr = 1e-3\nmin_lr = 0.0\n\
               warmup_ratio = 0.0\n[data]\nglobal_batch_size = 1\n[schedule]\neval_every = 0\n";
    let e = StageConfig::from_toml("t", bad).unwrap_err();
    assert!(format!("{e:#}").contains("schedule.eval_every"), "{e:#}");
    let ok = bad.replace("eval_every = 0", "max_steps = 7\nsave_every = 3");
    let st = StageConfig::from_toml("t", &ok).unwrap();
    assert_eq!(st.schedule.max_steps, Some(7));
    assert_eq!(st.schedule.save_every, Some(3));
}

/// `--packed`: the bins of `ove-train pack` are the rows. Every step is made of whole bins
/// (its token count a sum of bin totals), and the run trains.
#[test]
fn trains_on_offline_bins() {
    use ove_train::train::binpack::PackConfig;
    use ove_train::train::pack_manifest::{pack_manifest, read_bins};
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path());
    let ckpt = load_model(&golden().join("checkpoint"), Device::Cpu).unwrap();
    let bins_dir = dir.path().join("bins");
    let cfg = PackConfig {
        capacity: 40,
        ..PackConfig::default()
    };
    pack_manifest(
        &data,
        &ckpt.checkpoint.config,
        ckpt.checkpoint.preprocessor.as_ref(),
        &cfg,
        &bins_dir,
    )
    .unwrap();
    let bins = read_bins(&bins_dir).unwrap();
    assert!(bins.len() >= 2, "{bins:?}");
    let totals: Vec<serde_json::Value> = std::fs::read_to_string(bins_dir.join("bins-00000.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let bin_tokens: Vec<u64> = totals
        .iter()
        .map(|v| v["tokens"].as_u64().unwrap())
        .collect();

    let out = dir.path().join("out");
    let mut run = train_run(&data, &out, stage(3e-3, 0.0), 4);
    run.packed = Some(bins_dir.clone());
    let history = ove_train::train::run::run(&run).unwrap();
    assert_eq!(history.len(), 4);
    for m in metrics(&out) {
        // A sum of whole bins (a bin may come twice across an epoch boundary).
        let t = m.tokens as u64;
        let mut reachable = vec![false; t as usize + 1];
        reachable[0] = true;
        for i in 1..=t as usize {
            reachable[i] = bin_tokens
                .iter()
                .any(|&b| b as usize <= i && reachable[i - b as usize]);
        }
        assert!(
            (t as usize) < reachable.len() && reachable[t as usize],
            "step {}: {t} tokens is not a sum of bins {bin_tokens:?}",
            m.step
        );
    }
    // Bins from another manifest are refused.
    let other = dir.path().join("other.jsonl");
    std::fs::write(
        &other,
        std::fs::read_to_string(&data)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let mut bad = train_run(&other, &dir.path().join("bad"), stage(3e-3, 0.0), 1);
    bad.packed = Some(bins_dir);
    let e = ove_train::train::run::run(&bad).unwrap_err();
    assert!(format!("{e:#}").contains("another manifest"), "{e:#}");
}
