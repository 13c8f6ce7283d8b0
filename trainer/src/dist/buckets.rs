//! Gradient all-reduce in flat buckets: the trained parameters' gradients, in the
//! optimizer's fixed order (sorted by name), copied into flat buffers of about
//! [`BUCKET_BYTES`] each (one dtype a bucket), summed over ranks, copied back. All
//! buckets are in flight at once, so the backend overlaps them with each other
//! (not yet with the backward: tch has no gradient hooks).

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use super::{bytes_of, on_device_contiguous, Dist, ReduceOp};

/// Bucket size, PyTorch DDP's default.
pub const BUCKET_BYTES: u64 = 25 << 20;

/// Runs of consecutive tensors that share a dtype and fill at most `limit` bytes (a
/// tensor larger than `limit` is a bucket alone); indices into `tensors`.
pub fn plan_buckets(tensors: &[(i64, Kind)], limit: u64) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0u64;
    let mut kind = None;
    for (i, &(numel, k)) in tensors.iter().enumerate() {
        let b = bytes_of(numel, k);
        let fits = kind == Some(k) && bytes + b <= limit;
        match out.last_mut() {
            Some(last) if fits => {
                last.push(i);
                bytes += b;
            }
            _ => {
                out.push(vec![i]);
                bytes = b;
                kind = Some(k);
            }
        }
    }
    out
}

/// Sums the gradients of `params` over all ranks, in place (an undefined gradient takes
/// part as zeros and stays undefined only if it is undefined everywhere; the optimizer
/// gives every trained parameter a gradient, so it is defined).
pub fn all_reduce_grads(dist: &Dist, params: &[Tensor]) -> Result<()> {
    let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).collect();
    let shapes: Vec<(i64, Kind)> = params
        .iter()
        .map(|p| (p.numel() as i64, p.kind()))
        .collect();
    let device = dist.device();
    tch::no_grad(|| -> Result<()> {
        let mut flights = Vec::new();
        for bucket in plan_buckets(&shapes, BUCKET_BYTES) {
            let parts: Vec<Tensor> = bucket
                .iter()
                .map(|&i| {
                    let g = &grads[i];
                    if g.defined() {
                        on_device_contiguous(g, device).view([-1])
                    } else {
                        Tensor::zeros([shapes[i].0], (shapes[i].1, device))
                    }
                })
                .collect();
            let flat = Tensor::cat(&parts, 0);
            let work = dist.group.all_reduce(&flat, ReduceOp::Sum)?;
            flights.push((bucket, flat, work));
        }
        for (bucket, flat, work) in flights {
            work.wait().context("all-reducing gradients")?;
            let mut offset = 0;
            for &i in &bucket {
                let n = shapes[i].0;
                let g = &grads[i];
                if g.defined() {
                    let mut g = g.shallow_clone();
                    g.copy_(&flat.narrow(0, offset, n).view_as(&g));
                }
                offset += n;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_order_split_by_size_and_dtype() {
        let f = Kind::Float;
        let t = [(10, f), (10, f), (30, f), (5, Kind::BFloat16), (5, f)];
        // 40 bytes a tensor of 10 f32; limit 80 bytes.
        assert_eq!(
            plan_buckets(&t, 80),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
        assert_eq!(plan_buckets(&t[..2], 1 << 20), vec![vec![0, 1]]);
        assert!(plan_buckets(&[], 80).is_empty());
    }
}
