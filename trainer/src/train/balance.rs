//! Concept balancing as the upstream recipe does it (`ove-train balance`): each image gets
//! its top-k concepts by cosine similarity between its embedding and the concept
//! vocabulary's, each image is weighted by the inverse frequency of its concepts (the
//! mean of `1 / count(c)` over its k concepts), and samples are drawn with replacement in
//! proportion to the normalised weights.
//!
//! The similarity search runs in libtorch (normalised rows, chunked matmul, `topk`); the
//! weighting, sampling and entropy are plain functions over the concept lists.
//! Embeddings come as `.npy` (`<f4`, `<f8` or `<f2`, C order, 2-D) or `.safetensors`
//! (one tensor, or the one named `embeddings`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::train::binpack::SplitMix64;

/// A row-major `[rows, cols]` f32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// Reads a 2-D `.npy` file.
pub fn read_npy(path: &Path) -> Result<Matrix> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY",
        "{}: not a .npy file",
        path.display()
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "{}: truncated header", path.display());
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("{}: unsupported .npy version {v}", path.display()),
    };
    ensure!(
        bytes.len() >= start + header_len,
        "{}: truncated header",
        path.display()
    );
    let header = std::str::from_utf8(&bytes[start..start + header_len])?;
    let field = |key: &str| -> Result<&str> {
        let at = header
            .find(&format!("'{key}'"))
            .with_context(|| format!("{}: no '{key}' in the header", path.display()))?;
        let rest = &header[at + key.len() + 2..];
        Ok(rest.trim_start().trim_start_matches(':').trim_start())
    };
    ensure!(
        field("fortran_order")?.starts_with("False"),
        "{}: Fortran order is not supported",
        path.display()
    );
    let descr = field("descr")?;
    let descr = descr
        .trim_start_matches(['\'', '"'])
        .split(['\'', '"'])
        .next()
        .unwrap_or("");
    let shape_text = field("shape")?;
    let inner = shape_text
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or("");
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: bad shape {inner:?}", path.display()))?;
    ensure!(
        shape.len() == 2,
        "{}: expected a 2-D array, got shape {shape:?}",
        path.display()
    );
    let n = shape[0] * shape[1];
    let body = &bytes[start + header_len..];
    let data: Vec<f32> = match descr {
        "<f4" => {
            ensure!(body.len() >= 4 * n, "{}: truncated data", path.display());
            body[..4 * n]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        "<f8" => {
            ensure!(body.len() >= 8 * n, "{}: truncated data", path.display());
            body[..8 * n]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect()
        }
        "<f2" => {
            ensure!(body.len() >= 2 * n, "{}: truncated data", path.display());
            let raw: Vec<u8> = body[..2 * n].to_vec();
            let t = Tensor::from_data_size(&raw, &[n as i64], Kind::Half).to_kind(Kind::Float);
            Vec::<f32>::try_from(t)?
        }
        other => bail!(
            "{}: dtype {other:?} not supported (want <f4, <f8 or <f2)",
            path.display()
        ),
    };
    Ok(Matrix {
        rows: shape[0],
        cols: shape[1],
        data,
    })
}

/// Writes a little-endian f32 `.npy` file of `shape` (C order).
pub fn write_npy_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    ensure!(
        shape.iter().product::<usize>() == values.len(),
        "shape {shape:?} does not hold {} values",
        values.len()
    );
    let dims: String = match shape {
        [n] => format!("{n},"),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n', padded to 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Reads embeddings from `.npy` or `.safetensors` (by extension).
pub fn read_embeddings(path: &Path) -> Result<Matrix> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(path),
        Some("safetensors") => {
            let tensors = ove_core::tensor_file::read_safetensors(path)?;
            let t = match tensors.get("embeddings") {
                Some(t) => t,
                None if tensors.len() == 1 => tensors.values().next().expect("one tensor"),
                None => bail!(
                    "{}: {} tensors and none named \"embeddings\"",
                    path.display(),
                    tensors.len()
                ),
            };
            ensure!(
                t.shape().len() == 2,
                "{}: expected a 2-D tensor, got shape {:?}",
                path.display(),
                t.shape()
            );
            Ok(Matrix {
                rows: t.shape()[0],
                cols: t.shape()[1],
                data: t.to_f32(),
            })
        }
        _ => bail!("{}: want a .npy or .safetensors file", path.display()),
    }
}

/// The `k` most cosine-similar concepts of every image, most similar first, computed
/// `chunk` images at a time on `device`.
pub fn top_k_concepts(
    images: &Matrix,
    concepts: &Matrix,
    k: usize,
    chunk: usize,
    device: Device,
) -> Result<Vec<Vec<u32>>> {
    ensure!(
        images.cols == concepts.cols,
        "image embeddings have {} dims, concept embeddings {}",
        images.cols,
        concepts.cols
    );
    ensure!(
        k >= 1 && k <= concepts.rows,
        "--top-k {k} must lie in 1..={}",
        concepts.rows
    );
    let unit = |m: &Matrix| -> Tensor {
        let t = Tensor::from_slice(&m.data)
            .reshape([m.rows as i64, m.cols as i64])
            .to_device(device);
        let norm = t
            .norm_scalaropt_dim(2, [1i64].as_slice(), true)
            .clamp_min(1e-12);
        t / norm
    };
    let c = unit(concepts).tr();
    let mut out = Vec::with_capacity(images.rows);
    tch::no_grad(|| -> Result<()> {
        let all = unit(images);
        let mut start = 0;
        while start < images.rows {
            let len = chunk.max(1).min(images.rows - start);
            let sims = all.narrow(0, start as i64, len as i64).matmul(&c);
            let (_, idx) = sims.topk(k as i64, 1, true, true);
            let idx: Vec<i64> = Vec::try_from(idx.to_device(Device::Cpu).flatten(0, -1))?;
            out.extend(
                idx.chunks(k)
                    .map(|r| r.iter().map(|&i| i as u32).collect::<Vec<_>>()),
            );
            start += len;
        }
        Ok(())
    })?;
    Ok(out)
}

/// How often each concept appears over all the images' concept lists.
pub fn concept_counts(topk: &[Vec<u32>], num_concepts: usize) -> Vec<u64> {
    let mut counts = vec![0u64; num_concepts];
    for row in topk {
        for &c in row {
            counts[c as usize] += 1;
        }
    }
    counts
}

/// Each image's weight: the mean inverse frequency of its concepts, normalised to sum 1.
pub fn inverse_frequency_weights(topk: &[Vec<u32>], counts: &[u64]) -> Vec<f64> {
    let raw: Vec<f64> = topk
        .iter()
        .map(|row| {
            if row.is_empty() {
                return 0.0;
            }
            row.iter()
                .map(|&c| 1.0 / counts[c as usize] as f64)
                .sum::<f64>()
                / row.len() as f64
        })
        .collect();
    let total: f64 = raw.iter().sum();
    if total > 0.0 {
        raw.iter().map(|w| w / total).collect()
    } else {
        raw
    }
}

/// `n` indices drawn with replacement in proportion to `weights` (inverse CDF over the
/// cumulative weights), deterministic under `seed`.
pub fn sample_with_replacement(weights: &[f64], n: usize, seed: u64) -> Vec<u32> {
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for &w in weights {
        acc += w.max(0.0);
        cumulative.push(acc);
    }
    if acc <= 0.0 {
        return Vec::new();
    }
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let u = rng.unit() * acc;
            let i = cumulative.partition_point(|&c| c <= u);
            i.min(weights.len() - 1) as u32
        })
        .collect()
}

/// Shannon entropy (nats) of a count distribution.
pub fn entropy(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum()
}

/// What `ove-train balance` found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BalanceReport {
    pub images: usize,
    pub concepts: usize,
    pub top_k: usize,
    pub drawn: usize,
    /// Concepts that are someone's top-k.
    pub concepts_used: usize,
    /// Entropy (nats) of the concept distribution over all images' top-k lists.
    pub entropy_before: f64,
    /// The same over the drawn samples.
    pub entropy_after: f64,
    /// `ln(concepts_used)`: the entropy of a perfectly flat distribution.
    pub entropy_max: f64,
}

/// Weights, draws and the entropies, from the concept lists.
pub fn balance(
    topk: &[Vec<u32>],
    num_concepts: usize,
    draws: usize,
    seed: u64,
) -> (Vec<f64>, Vec<u32>, BalanceReport) {
    let counts = concept_counts(topk, num_concepts);
    let weights = inverse_frequency_weights(topk, &counts);
    let drawn = sample_with_replacement(&weights, draws, seed);
    let mut after = vec![0u64; num_concepts];
    for &i in &drawn {
        for &c in &topk[i as usize] {
            after[c as usize] += 1;
        }
    }
    let used = counts.iter().filter(|&&c| c > 0).count();
    let report = BalanceReport {
        images: topk.len(),
        concepts: num_concepts,
        top_k: topk.first().map_or(0, Vec::len),
        drawn: drawn.len(),
        concepts_used: used,
        entropy_before: entropy(&counts),
        entropy_after: entropy(&after),
        entropy_max: (used.max(1) as f64).ln(),
    };
    (weights, drawn, report)
}

/// The whole `ove-train balance`: writes the normalised weights (`.npy`, f32, one per
/// image), `WEIGHTS.report.json` and, when asked, the drawn indices (one per line).
#[allow(clippy::too_many_arguments)]
pub fn run_balance(
    image_path: &Path,
    concept_path: &Path,
    k: usize,
    draws: Option<usize>,
    seed: u64,
    out: &Path,
    samples_out: Option<&Path>,
    device: Device,
) -> Result<BalanceReport> {
    let images = read_embeddings(image_path)?;
    let concepts = read_embeddings(concept_path)?;
    ensure!(images.rows > 0, "{}: no images", image_path.display());
    let topk = top_k_concepts(&images, &concepts, k, 4096, device)?;
    let (weights, drawn, report) =
        balance(&topk, concepts.rows, draws.unwrap_or(images.rows), seed);
    let w32: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
    write_npy_f32(out, &[w32.len()], &w32)?;
    let mut report_path = out.as_os_str().to_owned();
    report_path.push(".report.json");
    let mut json: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    json.insert("report", serde_json::to_value(&report)?);
    json.insert("seed", seed.into());
    std::fs::write(&report_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", Path::new(&report_path).display()))?;
    if let Some(path) = samples_out {
        let text: String = drawn.iter().map(|i| format!("{i}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `concepts` random unit directions in `dim` dims; 90% of the images sit near
    /// concept 0, the rest spread over the others, each with a little noise.
    fn planted(images: usize, concepts: usize, dim: usize) -> (Matrix, Matrix, Vec<u32>) {
        let mut rng = SplitMix64::new(5);
        let mut gauss = || {
            let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        };
        let c: Vec<f32> = (0..concepts * dim).map(|_| gauss()).collect();
        let mut truth = Vec::new();
        let mut data = Vec::new();
        for i in 0..images {
            let concept = if i % 10 != 0 {
                0
            } else {
                1 + (i / 10) % (concepts - 1)
            };
            truth.push(concept as u32);
            for d in 0..dim {
                data.push(c[concept * dim + d] * 3.0 + 0.1 * gauss());
            }
        }
        (
            Matrix {
                rows: images,
                cols: dim,
                data,
            },
            Matrix {
                rows: concepts,
                cols: dim,
                data: c,
            },
            truth,
        )
    }

    #[test]
    fn planted_imbalance_flattens() {
        let (images, concepts, truth) = planted(5000, 8, 32);
        let topk = top_k_concepts(&images, &concepts, 1, 700, Device::Cpu).unwrap();
        let found: Vec<u32> = topk.iter().map(|r| r[0]).collect();
        assert_eq!(found, truth, "top-1 recovers the planted concept");
        let (weights, drawn, r) = balance(&topk, 8, 20_000, 3);
        println!(
            "entropy before {:.4} after {:.4} (flat {:.4})",
            r.entropy_before, r.entropy_after, r.entropy_max
        );
        assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // A rare-concept image weighs more than a common one.
        assert!(weights[10] > 5.0 * weights[1]);
        assert_eq!(drawn.len(), 20_000);
        assert!(r.entropy_before < 0.75 * r.entropy_max);
        assert!(r.entropy_after > 0.98 * r.entropy_max, "{r:?}");
        // Deterministic under the seed.
        assert_eq!(balance(&topk, 8, 20_000, 3).1, drawn);
        assert_ne!(balance(&topk, 8, 20_000, 4).1, drawn);
    }

    #[test]
    fn top_k_is_ordered_by_similarity() {
        let concepts = Matrix {
            rows: 3,
            cols: 2,
            data: vec![1.0, 0.0, 0.0, 1.0, 0.7, 0.7],
        };
        let images = Matrix {
            rows: 2,
            cols: 2,
            data: vec![10.0, 1.0, 0.1, 5.0],
        };
        let topk = top_k_concepts(&images, &concepts, 2, 1, Device::Cpu).unwrap();
        assert_eq!(topk, vec![vec![0, 2], vec![1, 2]]);
        assert!(top_k_concepts(&images, &concepts, 4, 1, Device::Cpu).is_err());
    }

    #[test]
    fn npy_round_trip_and_sampling_follows_the_weights() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.npy");
        write_npy_f32(&p, &[3], &[0.5, 0.25, 0.25]).unwrap();
        // A 1-D file is refused by the 2-D reader; patch the shape to (1, 3) to read it.
        assert!(read_npy(&p).is_err());
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.windows(6).position(|w| w == b"(3,), ").unwrap();
        bytes[at..at + 6].copy_from_slice(b"(1, 3)");
        std::fs::write(&p, bytes).unwrap();
        let m = read_npy(&p).unwrap();
        assert_eq!((m.rows, m.cols), (1, 3));
        assert_eq!(m.data, vec![0.5, 0.25, 0.25]);
        write_npy_f32(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let m = read_npy(&p).unwrap();
        assert_eq!((m.rows, m.cols, m.data[5]), (2, 3, 6.0));

        let drawn = sample_with_replacement(&[0.5, 0.0, 0.25, 0.25], 40_000, 1);
        let mut hist = [0usize; 4];
        for i in drawn {
            hist[i as usize] += 1;
        }
        assert_eq!(hist[1], 0);
        assert!((hist[0] as f64 / 40_000.0 - 0.5).abs() < 0.01, "{hist:?}");
        assert!((hist[2] as f64 / 40_000.0 - 0.25).abs() < 0.01, "{hist:?}");
        assert!((entropy(&[1, 1, 1, 1]) - 4f64.ln()).abs() < 1e-12);
    }
}
