//! Bit-exactness against ONNX Runtime 1.32's own `MatMulNBits` quantizer.
//!
//! Reads `shared/golden/quant/matmulnbits.{json,safetensors}` (cases produced by ONNX Runtime:
//! float weight, its packed codes/scales/zero points, an input and ORT's MatMulNBits output).
//! Expected values come only from those files; nothing is copied into this source. A missing
//! golden directory is a failure, not a skip: a green run without it would prove nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ove_quant::{
    quantize_matmul_nbits, MatMulNBitsConfig, MatMulNBitsWeight, Quantized, WeightView,
};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn golden_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/quant");
    assert!(
        dir.join("matmulnbits.json").is_file() && dir.join("matmulnbits.safetensors").is_file(),
        "golden data missing: expected {}/matmulnbits.json and matmulnbits.safetensors \
         (the shared/ checkout must sit beside the repository)",
        dir.display()
    );
    dir
}

struct Golden {
    cases: BTreeMap<String, Value>,
    bytes: Vec<u8>,
}

impl Golden {
    fn load() -> Self {
        let dir = golden_dir();
        let json: Value =
            serde_json::from_slice(&std::fs::read(dir.join("matmulnbits.json")).unwrap()).unwrap();
        let cases = json["cases"]
            .as_object()
            .expect("matmulnbits.json has no \"cases\" object")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>();
        assert!(!cases.is_empty(), "matmulnbits.json lists no cases");
        let bytes = std::fs::read(dir.join("matmulnbits.safetensors")).unwrap();
        Self { cases, bytes }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("matmulnbits.safetensors does not parse")
    }
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("golden tensor {name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (v, t.shape().to_vec())
}

fn u8s(st: &SafeTensors<'_>, name: &str) -> (Vec<u8>, Vec<usize>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("golden tensor {name}: {e}"));
    assert_eq!(t.dtype(), Dtype::U8, "{name}");
    (t.data().to_vec(), t.shape().to_vec())
}

fn usize_field(case: &Value, key: &str) -> usize {
    case[key]
        .as_u64()
        .unwrap_or_else(|| panic!("case field {key} missing")) as usize
}

struct Case {
    name: String,
    k: usize,
    n: usize,
    block_size: usize,
    symmetric: bool,
    weight: Vec<f32>,
    b: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Option<Vec<u8>>,
    x: Vec<f32>,
    x_rows: usize,
    y_ort: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let g = Golden::load();
    let st = g.tensors();
    g.cases
        .iter()
        .map(|(name, c)| {
            let (k, n) = (usize_field(c, "K"), usize_field(c, "N"));
            let block_size = usize_field(c, "block_size");
            let symmetric = c["symmetric"].as_bool().expect("symmetric flag");
            // The node attributes must be what our attribute helper emits.
            let attrs = &c["attributes"];
            assert_eq!(attrs["K"].as_i64(), Some(k as i64), "{name}");
            assert_eq!(attrs["N"].as_i64(), Some(n as i64), "{name}");
            assert_eq!(attrs["bits"].as_i64(), Some(4), "{name}");
            assert_eq!(
                attrs["block_size"].as_i64(),
                Some(block_size as i64),
                "{name}"
            );
            let (weight, ws) = f32s(&st, &format!("{name}.weight"));
            assert_eq!(ws, vec![k, n], "{name}.weight shape");
            let (b, _) = u8s(&st, &format!("{name}.B"));
            let (scales, _) = f32s(&st, &format!("{name}.scales"));
            let zero_points = (!symmetric).then(|| u8s(&st, &format!("{name}.zero_points")).0);
            let (x, xs) = f32s(&st, &format!("{name}.x"));
            let (y_ort, _) = f32s(&st, &format!("{name}.y_ort"));
            assert_eq!(*xs.last().unwrap(), k, "{name}.x shape");
            Case {
                name: name.clone(),
                k,
                n,
                block_size,
                symmetric,
                weight,
                b,
                scales,
                zero_points,
                x_rows: x.len() / k,
                x,
                y_ort,
            }
        })
        .collect()
}

fn quantize(c: &Case, view: WeightView<'_>) -> Quantized<MatMulNBitsWeight> {
    quantize_matmul_nbits(
        view,
        MatMulNBitsConfig {
            block_size: c.block_size,
            symmetric: c.symmetric,
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

/// Asserts equality of every real code (k < K); codes in the padding past K are don't-care.
fn assert_codes_equal(c: &Case, ours: &MatMulNBitsWeight) {
    let golden = MatMulNBitsWeight::from_parts(
        c.k,
        c.n,
        c.block_size,
        c.b.clone(),
        c.scales.clone(),
        c.zero_points.clone(),
    )
    .unwrap_or_else(|e| panic!("{}: golden parts do not fit the layout: {e}", c.name));
    assert_eq!(ours.b_shape(), golden.b_shape(), "{}", c.name);
    let mut mismatches = Vec::new();
    for n in 0..c.n {
        for k in 0..c.k {
            if ours.code(k, n) != golden.code(k, n) {
                mismatches.push((k, n, ours.code(k, n), golden.code(k, n)));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}: {} of {} codes differ, first (k, n, ours, ort): {:?}",
        c.name,
        mismatches.len(),
        c.k * c.n,
        &mismatches[..mismatches.len().min(8)]
    );
}

fn assert_scales_bitwise(c: &Case, ours: &MatMulNBitsWeight) {
    assert_eq!(ours.scales.len(), c.scales.len(), "{}", c.name);
    let diff: Vec<_> = ours
        .scales
        .iter()
        .zip(&c.scales)
        .enumerate()
        .filter(|(_, (a, b))| a.to_bits() != b.to_bits())
        .map(|(i, (a, b))| (i, *a, *b))
        .collect();
    assert!(
        diff.is_empty(),
        "{}: {} scales differ bitwise, first (index, ours, ort): {:?}",
        c.name,
        diff.len(),
        &diff[..diff.len().min(8)]
    );
}

fn assert_zero_points_equal(c: &Case, ours: &MatMulNBitsWeight) {
    match &c.zero_points {
        None => assert!(
            ours.zero_points.is_none(),
            "{}: unexpected zero points",
            c.name
        ),
        Some(zp) => {
            let ours_zp = ours.zero_points.as_ref().expect("zero points missing");
            assert_eq!(ours_zp.len(), zp.len(), "{}", c.name);
            let stride = ours.blocks().div_ceil(2);
            // Real nibbles only (a padding nibble after an odd block count is never read).
            for n in 0..c.n {
                for blk in 0..ours.blocks() {
                    let g = (zp[n * stride + blk / 2] >> (4 * (blk % 2))) & 0xF;
                    assert_eq!(
                        ours.zero_point(n, blk),
                        g,
                        "{}: zero point of column {n} block {blk}",
                        c.name
                    );
                }
            }
        }
    }
}

/// `|ours - ort| <= 1e-5 * max(|y_ort|)` per element: relative to the output's scale, because
/// single outputs near zero (cancellation) carry ORT's f32 GEMM rounding in absolute terms.
fn assert_y_close(c: &Case, y: &[f32], what: &str) {
    assert_eq!(y.len(), c.y_ort.len(), "{}", c.name);
    let scale = c
        .y_ort
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(1e-30);
    for (i, (&a, &b)) in y.iter().zip(&c.y_ort).enumerate() {
        let rel = (a - b).abs() / scale;
        assert!(
            rel <= 1e-5,
            "{} ({what}): y[{i}] = {a}, ORT {b}, relative error {rel:e}",
            c.name
        );
    }
}

#[test]
fn golden_cases_cover_the_interesting_shapes() {
    let cases = cases();
    assert!(cases.iter().any(|c| c.symmetric) && cases.iter().any(|c| !c.symmetric));
    assert!(
        cases.iter().any(|c| c.k % c.block_size != 0),
        "no ragged-K case in the golden set"
    );
}

#[test]
fn codes_scales_zero_points_bit_identical_onnx_layout() {
    for c in cases() {
        let q = quantize(&c, WeightView::onnx(&c.weight, c.k, c.n).unwrap());
        assert_codes_equal(&c, &q.tensor);
        assert_scales_bitwise(&c, &q.tensor);
        assert_zero_points_equal(&c, &q.tensor);
        // Padding codes past K: ORT leaves 0 there and so do we.
        let blob = c.block_size / 2;
        let blocks = c.k.div_ceil(c.block_size);
        for n in 0..c.n {
            let last = &q.tensor.b[(n * blocks + blocks - 1) * blob..][..blob];
            let used = c.k - (blocks - 1) * c.block_size;
            assert!(
                last[used.div_ceil(2)..].iter().all(|&b| b == 0),
                "{}",
                c.name
            );
        }
    }
}

#[test]
fn torch_layout_gives_the_same_bits() {
    for c in cases() {
        let mut nk = vec![0.0f32; c.k * c.n];
        for k in 0..c.k {
            for n in 0..c.n {
                nk[n * c.k + k] = c.weight[k * c.n + n];
            }
        }
        let a = quantize(&c, WeightView::onnx(&c.weight, c.k, c.n).unwrap());
        let b = quantize(&c, WeightView::torch_linear(&nk, c.n, c.k).unwrap());
        assert_eq!(a, b, "{}", c.name);
        assert_codes_equal(&c, &b.tensor);
        assert_scales_bitwise(&c, &b.tensor);
        assert_zero_points_equal(&c, &b.tensor);
    }
}

#[test]
fn reference_matmul_reproduces_ort_output() {
    for c in cases() {
        // From ORT's own packed tensors: checks the dequantizer independently of the quantizer.
        let golden = MatMulNBitsWeight::from_parts(
            c.k,
            c.n,
            c.block_size,
            c.b.clone(),
            c.scales.clone(),
            c.zero_points.clone(),
        )
        .unwrap();
        assert_y_close(&c, &golden.matmul(&c.x, c.x_rows).unwrap(), "ORT tensors");
        // And from ours.
        let q = quantize(&c, WeightView::onnx(&c.weight, c.k, c.n).unwrap());
        assert_y_close(&c, &q.tensor.matmul(&c.x, c.x_rows).unwrap(), "our tensors");
    }
}

#[test]
fn metrics_match_a_direct_computation() {
    for c in cases() {
        let q = quantize(&c, WeightView::onnx(&c.weight, c.k, c.n).unwrap());
        // Same numbers as recomputing from the dequantized tensor (up to summation order).
        let direct = ove_quant::error_metrics(&c.weight, &q.tensor.dequantize());
        let d = (q.metrics.relative_frobenius - direct.relative_frobenius).abs();
        assert!(d < 1e-12, "{}: {:?} vs {:?}", c.name, q.metrics, direct);
        assert_eq!(q.metrics.max_abs, direct.max_abs, "{}", c.name);
        // ...and bit-identical to the helper that mirrors the quantizer's accumulation.
        let view = WeightView::onnx(&c.weight, c.k, c.n).unwrap();
        assert_eq!(
            q.metrics,
            ove_quant::matmul_nbits_error(view, &q.tensor),
            "{}",
            c.name
        );
        assert_eq!(q.metrics.numel, (c.k * c.n) as u64);
        // 4-bit RTN on these weights: clearly lossy, but far from destroying them.
        assert!(
            q.metrics.relative_frobenius > 1e-3 && q.metrics.relative_frobenius < 0.25,
            "{}: {:?}",
            c.name,
            q.metrics
        );
        let max_scale = q.tensor.scales.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(
            q.metrics.max_abs <= f64::from(max_scale) * 1.0001,
            "{}",
            c.name
        );
    }
}
