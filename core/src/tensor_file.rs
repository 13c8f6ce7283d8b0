//! Small owned tensors and their safetensors files: what `ove preprocess` and `ove trace`
//! write, and what the tests read back from the golden `expected.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};

/// An owned tensor of one of the dtypes the toolkit exchanges.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    F32 {
        shape: Vec<usize>,
        data: Vec<f32>,
    },
    I64 {
        shape: Vec<usize>,
        data: Vec<i64>,
    },
    U8 {
        shape: Vec<usize>,
        data: Vec<u8>,
    },
    F16 {
        shape: Vec<usize>,
        data: Vec<half::f16>,
    },
}

impl Tensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor::F32 { shape, data }
    }
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor::I64 { shape, data }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32 { shape, .. }
            | Tensor::I64 { shape, .. }
            | Tensor::U8 { shape, .. }
            | Tensor::F16 { shape, .. } => shape,
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            Tensor::F32 { .. } => Dtype::F32,
            Tensor::I64 { .. } => Dtype::I64,
            Tensor::U8 { .. } => Dtype::U8,
            Tensor::F16 { .. } => Dtype::F16,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Tensor::F32 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Tensor::I64 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Tensor::U8 { data, .. } => data.clone(),
            Tensor::F16 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// The values as f32 (integers converted), for comparisons.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Tensor::F32 { data, .. } => data.clone(),
            Tensor::I64 { data, .. } => data.iter().map(|&x| x as f32).collect(),
            Tensor::U8 { data, .. } => data.iter().map(|&x| x as f32).collect(),
            Tensor::F16 { data, .. } => data.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// The values as i64; an error for float tensors.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        match self {
            Tensor::I64 { data, .. } => Ok(data.clone()),
            Tensor::U8 { data, .. } => Ok(data.iter().map(|&x| x as i64).collect()),
            _ => bail!("expected an integer tensor, found {:?}", self.dtype()),
        }
    }

    /// Decodes a safetensors view (f32, f16, bf16, i64, i32, u8) into an owned tensor;
    /// bf16 becomes f32 since nothing downstream computes in bf16.
    pub fn from_view(view: &TensorView<'_>) -> Result<Self> {
        let shape = view.shape().to_vec();
        let b = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => Tensor::F32 {
                shape,
                data: b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            },
            Dtype::F16 => Tensor::F16 {
                shape,
                data: b
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            },
            Dtype::BF16 => Tensor::F32 {
                shape,
                data: b
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            },
            Dtype::I64 => Tensor::I64 {
                shape,
                data: b
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            },
            Dtype::I32 => Tensor::I64 {
                shape,
                data: b
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            },
            Dtype::U8 => Tensor::U8 {
                shape,
                data: b.to_vec(),
            },
            other => bail!("unsupported tensor dtype {other:?}"),
        })
    }
}

/// Writes named tensors to a safetensors file (atomically: temporary file, then rename).
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.dtype(), t.shape().to_vec(), t.bytes()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, None, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads every tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_safetensors(path, &bytes)
}

/// [`read_safetensors`] of a file already in memory; `path` names it in errors.
pub fn parse_safetensors(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = Tensor::from_view(&view).with_context(|| format!("{}: {name}", path.display()))?;
        out.insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let mut m = BTreeMap::new();
        m.insert(
            "a".to_string(),
            Tensor::f32(vec![2, 2], vec![1.0, -2.0, 3.5, 0.0]),
        );
        m.insert("b".to_string(), Tensor::i64(vec![1, 3], vec![1, 20, 300]));
        write_safetensors(&p, &m).unwrap();
        assert_eq!(read_safetensors(&p).unwrap(), m);
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        std::fs::write(&p, b"definitely not safetensors").unwrap();
        assert!(read_safetensors(&p).is_err());
    }
}
