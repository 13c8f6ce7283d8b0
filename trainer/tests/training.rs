//! Training foundations on the golden model: a packed row gives the same loss and
//! gradients as its samples one by one (and as with checkpointed layers and a chunked
//! loss), frozen modules get no gradient and no optimizer state, and a few steps lower the
//! loss.

mod common;

use std::collections::BTreeMap;

use ove_core::tensor_file::read_safetensors;
use ove_train::checkpoint::{load_model, LoadedModel};
use ove_train::decoder::DecoderExec;
use ove_train::train::stage::set_trainable;
use ove_train::train::{
    batch_backward, batch_loss_sum, pack, train_step, AdamW, AdamWConfig, Sample, StageConfig,
    StepStats,
};
use tch::{Device, Tensor};

/// A golden case as a training sample: its prompt, its own pixels, the second half trained.
fn case_sample(name: &str) -> Sample {
    let case = common::golden().join(name);
    let e = read_safetensors(&case.join("expected.safetensors")).unwrap();
    let ids = e["input_ids"].to_i64().unwrap();
    let n = ids.len();
    let supervised: Vec<bool> = (0..n).map(|t| t >= n / 2).collect();
    let (pixels, grids) = match (e.get("pixel_values"), e.get("image_grid_thw")) {
        (Some(pv), Some(g)) => (
            pv.to_f32(),
            g.to_i64()
                .unwrap()
                .chunks(3)
                .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
                .collect(),
        ),
        _ => (vec![], vec![]),
    };
    Sample::new(ids, &supervised, pixels, grids).unwrap()
}

fn model() -> LoadedModel {
    load_model(&common::golden().join("two-images/checkpoint"), Device::Cpu).unwrap()
}

fn grads(l: &LoadedModel) -> BTreeMap<String, Tensor> {
    l.vs.variables()
        .into_iter()
        .filter_map(|(n, t)| {
            let g = t.grad();
            g.defined().then(|| (n, g.copy()))
        })
        .collect()
}

fn zero_grads(l: &LoadedModel) {
    for (_, mut t) in l.vs.variables() {
        t.zero_grad();
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The parameter whose gradient differs most between `a` and `b`, and by how much.
fn worst_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> (String, f64) {
    let mut worst = (String::new(), 0.0f64);
    for (name, g) in a {
        let d = max_diff(g, &b[name]);
        if d > worst.1 {
            worst = (name.clone(), d);
        }
    }
    worst
}

#[test]
fn packed_equals_one_by_one() {
    let l = model();
    // Images of several samples (one with two images) land in one vision pass.
    let samples = vec![
        case_sample("one-image"),
        case_sample("text-only"),
        case_sample("two-images"),
    ];
    let total: i64 = samples.iter().map(|s| s.num_targets() as i64).sum();

    let packed = pack(&samples, Device::Cpu).unwrap();
    assert_eq!(packed.num_samples, 3);
    let (sum, count) = batch_loss_sum(&l.model, &packed).unwrap();
    assert_eq!(count, total);
    let packed_loss = sum.double_value(&[]) / total as f64;
    (sum / total as f64).backward();
    let packed_grads = grads(&l);
    zero_grads(&l);

    let mut one_by_one = 0.0;
    for s in &samples {
        let b = pack(std::slice::from_ref(s), Device::Cpu).unwrap();
        let (sum, _) = batch_loss_sum(&l.model, &b).unwrap();
        one_by_one += sum.double_value(&[]) / total as f64;
        (sum / total as f64).backward();
    }
    let single_grads = grads(&l);

    let dl = (packed_loss - one_by_one).abs();
    println!("loss packed {packed_loss:.7} one by one {one_by_one:.7} |diff| {dl:.2e}");
    assert!(dl <= 1e-5, "loss differs by {dl:e}");
    assert_eq!(packed_grads.len(), single_grads.len());
    assert_eq!(
        packed_grads.len(),
        l.vs.variables().len(),
        "every parameter gets a gradient"
    );
    let worst = worst_diff(&packed_grads, &single_grads);
    println!("gradients: worst max|diff| {:.2e} ({})", worst.1, worst.0);
    assert!(
        worst.1 <= 1e-5,
        "gradient of {} differs by {:e}",
        worst.0,
        worst.1
    );
}

/// Activation checkpointing (each decoder layer run again in the backward), the LM head's
/// loss in chunks and fused q/k/v and gate/up GEMMs change where memory and time go, not
/// what is computed: on a packed row
/// with three images (vision tower and merger in the graph) every parameter's gradient
/// and the loss equal those of one plain backward of the whole loss.
#[test]
fn checkpointed_layers_and_a_chunked_loss_give_the_same_gradients() {
    let mut l = model();
    let samples = vec![
        case_sample("one-image"),
        case_sample("text-only"),
        case_sample("two-images"),
    ];
    let packed = pack(&samples, Device::Cpu).unwrap();
    let scale = 1.0 / packed.num_targets as f64;
    let run = |l: &mut LoadedModel, exec: DecoderExec| {
        l.model.decoder.exec = exec;
        zero_grads(l);
        let (loss, count) = batch_backward(&l.model, &packed, scale).unwrap();
        assert_eq!(count, packed.num_targets);
        (loss, grads(l))
    };
    // The reference: one forward and one backward through the whole graph, the loss whole.
    zero_grads(&l);
    let (sum, _) = batch_loss_sum(&l.model, &packed).unwrap();
    let plain_loss = sum.double_value(&[]) * scale;
    (sum * scale).backward();
    let plain = grads(&l);
    assert_eq!(plain.len(), l.vs.variables().len(), "every parameter");
    let variants = [
        (
            "the step's default (head and trunk backward apart)",
            false,
            None,
            false,
        ),
        ("checkpointed layers", true, None, false),
        ("loss in chunks of 3 rows", false, Some(3), false),
        ("fused q/k/v and gate/up", false, None, true),
        ("all three", true, Some(5), true),
    ];
    for (what, checkpoint_layers, loss_chunk_rows, fuse_projections) in variants {
        let (loss, g) = run(
            &mut l,
            DecoderExec {
                checkpoint_layers,
                loss_chunk_rows,
                fuse_projections,
                ..DecoderExec::default()
            },
        );
        let dl = (loss - plain_loss).abs();
        // f32 sums in another order: within a few ulps of the loss.
        assert!(
            dl <= 1e-6 * plain_loss.abs().max(1.0),
            "{what}: loss {loss} vs {plain_loss}"
        );
        assert_eq!(g.len(), plain.len(), "{what}");
        let worst = worst_diff(&plain, &g);
        println!(
            "{what}: loss |diff| {dl:.1e}, worst gradient |diff| {:.2e} ({})",
            worst.1, worst.0
        );
        assert!(
            worst.1 <= 1e-6,
            "{what}: gradient of {} differs by {:e}",
            worst.0,
            worst.1
        );
    }
}

#[test]
fn frozen_modules_get_no_grads_or_state() {
    let l = model();
    let stage = StageConfig::load("stage1").unwrap();
    let split = set_trainable(&l.vs, &stage.trainable).unwrap();
    assert!(split
        .trainable
        .iter()
        .all(|n| n.starts_with("visual.merger.")));
    assert_eq!(split.trainable.len(), 6);
    let mut opt = AdamW::new(&l.vs, stage.adamw());
    assert_eq!(opt.params.len(), 6, "optimizer state only for the merger");

    let before: BTreeMap<String, Tensor> =
        l.vs.variables()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
    let batch = pack(&[case_sample("one-image")], Device::Cpu).unwrap();
    let stats = train_step(
        &l.model,
        &mut opt,
        &[batch],
        1e-3,
        stage.optimizer.grad_clip,
    )
    .unwrap();
    println!("stage-1 step: {stats:?}");
    for (name, t) in l.vs.variables() {
        let changed = !t.equal(&before[&name]);
        if name.starts_with("visual.merger.") {
            assert!(t.grad().defined(), "{name} has no gradient");
            assert!(changed, "{name} did not move");
        } else {
            assert!(!t.grad().defined(), "frozen {name} has a gradient");
            assert!(!changed, "frozen {name} moved");
        }
    }
    assert!(set_trainable(&l.vs, &["visual.mergr".to_string()]).is_err());
}

/// Five steps on the one-image and two-images cases: (first, last).
fn five_steps(l: &LoadedModel, opt: &mut AdamW) -> (StepStats, StepStats) {
    let batch = pack(
        &[case_sample("one-image"), case_sample("two-images")],
        Device::Cpu,
    )
    .unwrap();
    let first = train_step(&l.model, opt, std::slice::from_ref(&batch), 1e-3, 1.0).unwrap();
    let mut last = first;
    for _ in 0..4 {
        last = train_step(&l.model, opt, std::slice::from_ref(&batch), 1e-3, 1.0).unwrap();
    }
    (first, last)
}

#[test]
fn a_few_steps_lower_the_loss() {
    let l = model();
    set_trainable(&l.vs, &["all".to_string()]).unwrap();
    let mut opt = AdamW::new(
        &l.vs,
        AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
    );
    let (first, last) = five_steps(&l, &mut opt);
    println!("loss {:.4} -> {:.4}", first.loss, last.loss);
    assert!(last.loss < first.loss * 0.9, "{first:?} -> {last:?}");
    assert!(first.grad_norm > 0.0);
}

/// bf16 training (the GPU default): bf16 parameters and compute with f32 master weights
/// and moments; images included. The loss falls as in f32, and the bf16 parameters stay the
/// rounding of their f32 masters.
#[test]
fn bf16_with_f32_masters_lowers_the_loss() {
    let mut l = model();
    l.vs.bfloat16();
    set_trainable(&l.vs, &["all".to_string()]).unwrap();
    let mut opt = AdamW::new(&l.vs, AdamWConfig::default());
    let (first, last) = five_steps(&l, &mut opt);
    println!("bf16 loss {:.4} -> {:.4}", first.loss, last.loss);
    assert!(last.loss < first.loss * 0.9, "{first:?} -> {last:?}");
    for (name, p) in l.vs.variables() {
        assert_eq!(p.kind(), tch::Kind::BFloat16, "{name}");
    }
    let masters = opt.tensors().len();
    assert!(masters > 0);
    for s in &opt.params {
        let m = s
            .master
            .as_ref()
            .expect("a bf16 parameter has an f32 master");
        assert_eq!(m.kind(), tch::Kind::Float);
        assert_eq!(s.exp_avg.kind(), tch::Kind::Float);
        let rounded = m.to_kind(tch::Kind::BFloat16);
        assert!(
            rounded.equal(&s.param),
            "the parameter is not its master rounded"
        );
    }
}

#[test]
fn gradients_are_clipped_to_the_limit() {
    let l = model();
    let opt = AdamW::new(&l.vs, AdamWConfig::default());
    let batch = pack(&[case_sample("one-image")], Device::Cpu).unwrap();
    let (sum, n) = batch_loss_sum(&l.model, &batch).unwrap();
    (sum / n as f64 * 1000.0).backward();
    let before = ove_train::train::clip_grad_norm(&opt.tensors(), 1.0);
    assert!(before > 1.0);
    let after = ove_train::train::clip_grad_norm(&opt.tensors(), f64::INFINITY);
    assert!((after - 1.0).abs() < 1e-4, "norm after clipping {after}");
}

/// Five steps with `opt.step` (libtorch's fused AdamW kernel) or `opt.step_elementwise`
/// (the update written out): the losses.
fn five_updates(l: &LoadedModel, opt: &mut AdamW, fused: bool) -> Vec<f64> {
    let batch = pack(
        &[case_sample("one-image"), case_sample("two-images")],
        Device::Cpu,
    )
    .unwrap();
    (0..5)
        .map(|_| {
            opt.zero_grad();
            let (sum, n) = batch_loss_sum(&l.model, &batch).unwrap();
            let loss = sum / n as f64;
            loss.backward();
            ove_train::train::clip_grad_norm(&opt.tensors(), 1.0);
            if fused {
                opt.step(1e-3).unwrap();
            } else {
                opt.step_elementwise(1e-3);
            }
            loss.double_value(&[])
        })
        .collect()
}

/// The fused kernel is the same AdamW (decoupled decay on matrices only, bias correction,
/// f32 masters of bf16 parameters) as the elementwise reference.
#[test]
fn fused_adamw_matches_the_elementwise_update() {
    for bf16 in [false, true] {
        let (mut a, mut b) = (model(), model());
        if bf16 {
            a.vs.bfloat16();
            b.vs.bfloat16();
        }
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        set_trainable(&a.vs, &["all".to_string()]).unwrap();
        set_trainable(&b.vs, &["all".to_string()]).unwrap();
        let (mut oa, mut ob) = (AdamW::new(&a.vs, cfg), AdamW::new(&b.vs, cfg));
        let la = five_updates(&a, &mut oa, true);
        let lb = five_updates(&b, &mut ob, false);
        println!("bf16 {bf16}: fused {la:?}\n          elementwise {lb:?}");
        let tol = if bf16 { 2e-3 } else { 1e-6 };
        for (x, y) in la.iter().zip(&lb) {
            assert!((x - y).abs() <= tol * x.abs().max(1.0), "loss {x} vs {y}");
        }
        let mut worst = 0.0f64;
        for (p, q) in oa.params.iter().zip(&ob.params) {
            assert_eq!(p.name, q.name);
            let (x, y) = match (&p.master, &q.master) {
                (Some(x), Some(y)) => (x, y),
                _ => (&p.param, &q.param),
            };
            let d = (x - y).abs().max().double_value(&[]);
            worst = worst.max(d);
            let dm = (&p.exp_avg - &q.exp_avg).abs().max().double_value(&[]);
            assert!(dm <= tol, "{}: first moments differ by {dm}", p.name);
        }
        println!("bf16 {bf16}: max |master difference| {worst:.3e}");
        assert!(worst <= tol, "weights differ by {worst}");
        // Weight decay reached the matrices: the update is not a no-op.
        let moved = oa
            .params
            .iter()
            .any(|p| p.decay && p.param.grad().defined());
        assert!(moved);
    }
}
