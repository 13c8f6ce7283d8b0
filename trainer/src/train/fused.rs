//! The fused optimizer kernels of `csrc/fused_ops.cpp`: `aten::_fused_adamw_` (what
//! `torch.optim.AdamW(fused=True)` runs: one multi-tensor kernel for the whole update) and
//! `aten::_foreach_copy_`. tch binds neither; they exist on the CPU and on CUDA. And
//! varlen flash attention (`aten::_flash_attention_forward` with cu_seqlens; CUDA only).

use std::ffi::{c_char, c_void};

use anyhow::{bail, ensure, Result};
use tch::{Kind, Tensor};

use crate::decoder::Varlen;
use crate::shim::{take_error, Handles};
use crate::train::optim::AdamWConfig;

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn ove_fused_adamw(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        exp_avgs: *const *mut c_void,
        exp_avg_sqs: *const *mut c_void,
        steps: *const *mut c_void,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        err: *mut *mut c_char,
    ) -> i32;
    fn ove_foreach_copy(
        dst: *const *mut c_void,
        src: *const *mut c_void,
        n: usize,
        err: *mut *mut c_char,
    ) -> i32;
    fn ove_flash_attention_varlen(
        q: *mut c_void,
        k: *mut c_void,
        v: *mut c_void,
        cu_seqlens: *mut c_void,
        max_len: i64,
        out: *mut *mut c_void,
        err: *mut *mut c_char,
    ) -> i32;
}

/// Causal attention within each sample of packed rows, the samples laid end to end:
/// q `[T, H, D]`, k and v `[T, Hkv, D]` (Hkv divides H; no repeat needed), output
/// `[T, H, D]`; the softmax scale is 1/sqrt(D), as scaled_dot_product_attention's. Autograd
/// records it. CUDA and bf16/f16 only (an error otherwise).
pub fn flash_attention_varlen(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    varlen: &Varlen,
) -> Result<Tensor> {
    let mut handles = Handles::new([q, k, v, &varlen.cu_seqlens]);
    let p = &mut handles.ptrs;
    let mut out = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    // SAFETY: four live tensor pointers kept alive by `handles`; on success the shim hands
    // over a new `at::Tensor*`, which tch then owns.
    let rc = unsafe {
        ove_flash_attention_varlen(p[0], p[1], p[2], p[3], varlen.max_len, &mut out, &mut err)
    };
    if rc != 0 {
        bail!(
            "varlen flash attention (q {:?} {:?} on {:?}): {}",
            q.size(),
            q.kind(),
            q.device(),
            take_error(err)
        );
    }
    // SAFETY: `out` is a fresh heap `at::Tensor*` from the shim.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

/// One AdamW update of `params` in place (`grads`, `exp_avgs`, `exp_avg_sqs` alike in
/// shape, dtype and device), at step `step` (1 for the first update), with `weight_decay`
/// applied to all of them (call once per decay group).
#[allow(clippy::too_many_arguments)]
pub fn fused_adamw(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    step: i64,
    lr: f64,
    config: &AdamWConfig,
    weight_decay: f64,
) -> Result<()> {
    let n = params.len();
    ensure!(
        grads.len() == n && exp_avgs.len() == n && exp_avg_sqs.len() == n,
        "fused AdamW: {n} parameters but {} gradients, {} and {} moments",
        grads.len(),
        exp_avgs.len(),
        exp_avg_sqs.len()
    );
    if n == 0 {
        return Ok(());
    }
    let device = params[0].device();
    let step_t = Tensor::from(step as f32).to_device(device);
    let steps: Vec<Tensor> = (0..n).map(|_| step_t.shallow_clone()).collect();
    let (p, g, m, v, s) = (
        Handles::new(params),
        Handles::new(grads),
        Handles::new(exp_avgs),
        Handles::new(exp_avg_sqs),
        Handles::new(&steps),
    );
    let mut err = std::ptr::null_mut();
    // SAFETY: five arrays of n live tensor pointers, kept alive by the handles.
    let rc = unsafe {
        ove_fused_adamw(
            p.ptrs.as_ptr(),
            g.ptrs.as_ptr(),
            m.ptrs.as_ptr(),
            v.ptrs.as_ptr(),
            s.ptrs.as_ptr(),
            n,
            lr,
            config.beta1,
            config.beta2,
            weight_decay,
            config.eps,
            &mut err,
        )
    };
    if rc != 0 {
        bail!("fused AdamW over {n} tensors: {}", take_error(err));
    }
    Ok(())
}

/// `dst[i].copy_(src[i])` for every i in one foreach call (e.g. f32 masters into bf16
/// parameters).
pub fn foreach_copy(dst: &[Tensor], src: &[Tensor]) -> Result<()> {
    ensure!(
        dst.len() == src.len(),
        "foreach copy: {} into {}",
        src.len(),
        dst.len()
    );
    if dst.is_empty() {
        return Ok(());
    }
    let (d, s) = (Handles::new(dst), Handles::new(src));
    let mut err = std::ptr::null_mut();
    // SAFETY: two arrays of live tensor pointers of the same length.
    let rc = unsafe { ove_foreach_copy(d.ptrs.as_ptr(), s.ptrs.as_ptr(), dst.len(), &mut err) };
    if rc != 0 {
        bail!("foreach copy of {} tensors: {}", dst.len(), take_error(err));
    }
    Ok(())
}

/// The gradient as the update reads it: f32 for an f32 master of a low-precision
/// parameter, itself otherwise.
pub fn grad_for(target_kind: Kind, grad: &Tensor) -> Tensor {
    if grad.kind() == target_kind {
        grad.shallow_clone()
    } else {
        grad.to_kind(target_kind)
    }
}
