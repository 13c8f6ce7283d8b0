//! Gradient buckets: the trained parameters' gradients, in a fixed order, are all-reduced
//! in flat buffers of about [`BUCKET_BYTES`] each (one dtype a bucket); [`super::reducer`]
//! starts each as soon as its gradients are final.

use tch::Kind;

use super::bytes_of;

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
