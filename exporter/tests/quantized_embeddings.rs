//! The quantized embedding table (`--quantize-embeddings`): what the exporter writes
//! (`write_gather_block_quantized`) is what the runtime's row gather reads, bit-exactly the
//! rows `ove_quant::GatherBlockQuantizedWeight::gather` dequantizes.

use ove_exporter::bundle::{write_gather_block_quantized, EMBEDDINGS_ZERO_POINTS};
use ove_quant::{quantize_gather_block_quantized, GatherBlockQuantizedConfig};
use ove_runtime::embed::Embeddings;

fn table(v: usize, h: usize) -> Vec<f32> {
    (0..v * h)
        .map(|i| ((i * 7919 % 509) as f32 - 254.0) / 300.0 * if i % 13 == 0 { 4.0 } else { 1.0 })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn runtime_gather_is_bit_exact_with_the_quant_crate() {
    let dir = tempfile::tempdir().unwrap();
    // H = 96: whole blocks of 16 and 32, a partial last block at 64, an odd block count
    // (padded zero-point byte) at 32 and 64.
    let (v, h) = (37, 96);
    let t = table(v, h);
    let ids: Vec<i64> = vec![0, 36, 5, 5, 17, 1, 30];
    for symmetric in [true, false] {
        for block_size in [16, 32, 64] {
            let q = quantize_gather_block_quantized(
                &t,
                v,
                h,
                GatherBlockQuantizedConfig {
                    block_size,
                    symmetric,
                },
            )
            .unwrap();
            let path = dir
                .path()
                .join(format!("e-{symmetric}-{block_size}.safetensors"));
            write_gather_block_quantized(&path, &q.tensor).unwrap();
            let st = std::fs::read(&path).unwrap();
            let names = safetensors::SafeTensors::deserialize(&st)
                .unwrap()
                .names()
                .len();
            assert_eq!(names, if symmetric { 2 } else { 3 });
            let e = Embeddings::open(&path, h).unwrap();
            assert_eq!((e.vocab(), e.hidden()), (v, h));
            assert_eq!(e.quantized_block_size(), Some(block_size));
            let got = e.gather(&ids).unwrap();
            let want = q.tensor.gather(&ids).unwrap();
            assert_eq!(
                bits(&got),
                bits(&want),
                "sym {symmetric} block {block_size}"
            );
            let all: Vec<i64> = (0..v as i64).collect();
            assert_eq!(bits(&e.gather(&all).unwrap()), bits(&q.tensor.dequantize()));
            assert!(e
                .gather(&[v as i64])
                .unwrap_err()
                .to_string()
                .contains("outside"));
            assert!(e.gather(&[-1]).is_err());
            assert!(Embeddings::open(&path, h + 2)
                .unwrap_err()
                .to_string()
                .contains("hidden size"));
        }
    }
}

#[test]
fn inconsistent_quantized_tables_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (v, h) = (4, 64);
    let q = quantize_gather_block_quantized(
        &table(v, h),
        v,
        h,
        GatherBlockQuantizedConfig {
            block_size: 32,
            symmetric: false,
        },
    )
    .unwrap()
    .tensor;
    // Zero points dropped while the metadata still says asymmetric.
    let mut sym = q.clone();
    sym.zero_points = None;
    let path = dir.path().join("bad.safetensors");
    write_gather_block_quantized(&path, &sym).unwrap();
    // Rewrite the metadata by hand: same tensors, symmetric = false.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut md = meta.metadata().clone().unwrap();
    md.insert("symmetric".into(), "false".into());
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != EMBEDDINGS_ZERO_POINTS)
        .collect();
    safetensors::serialize_to_file(views, Some(md.clone()), &path).unwrap();
    let err = Embeddings::open(&path, h).unwrap_err().to_string();
    assert!(err.contains("zero points are absent"), "{err}");
    // A block size the scales do not match.
    md.insert("symmetric".into(), "true".into());
    md.insert("block_size".into(), "16".into());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != EMBEDDINGS_ZERO_POINTS)
        .collect();
    safetensors::serialize_to_file(views, Some(md), &path).unwrap();
    let err = Embeddings::open(&path, h).unwrap_err().to_string();
    assert!(err.contains("expected [4, 4] for block size 16"), "{err}");
}
