// The multi-tensor kernels tch does not bind (`_fused_*`, `_foreach_*`), for the trainer's
// optimizer: one fused AdamW kernel over a list of parameters instead of ~8 elementwise
// kernels each, and one foreach copy of f32 masters into bf16 parameters.
//
// Tensors cross as arrays of `at::Tensor*` (tch's `C_tensor`). Also the varlen flash
// attention kernel (`_flash_attention_forward` with cu_seqlens), which tch does not bind.

#include <ATen/ATen.h>

#include <cstddef>
#include <vector>

#include "shim_error.h"

namespace {

std::vector<at::Tensor> list(at::Tensor** ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(*ts[i]);
  }
  return out;
}

}  // namespace

extern "C" {

// torch.optim.AdamW(fused=True)'s update of n parameters, in place: `steps` holds each
// parameter's step count already advanced to this step (f32 scalars on the parameters'
// device). All lists share one dtype and device.
int ove_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                    at::Tensor** exp_avg_sqs, at::Tensor** steps, size_t n, double lr,
                    double beta1, double beta2, double weight_decay, double eps, char** err) {
  OVE_TRY
  if (n == 0) {
    return 0;
  }
  auto p = list(params, n);
  auto g = list(grads, n);
  auto m = list(exp_avgs, n);
  auto v = list(exp_avg_sqs, n);
  auto s = list(steps, n);
  at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps,
                    /*amsgrad=*/false, /*maximize=*/false);
  return 0;
  OVE_CATCH(err, -1)
}

// dst[i].copy_(src[i]) for all i, as one foreach call (dtype conversion included).
int ove_foreach_copy(at::Tensor** dst, at::Tensor** src, size_t n, char** err) {
  OVE_TRY
  if (n == 0) {
    return 0;
  }
  auto d = list(dst, n);
  auto s = list(src, n);
  at::_foreach_copy_(d, s);
  return 0;
  OVE_CATCH(err, -1)
}

// Causal flash attention over samples laid end to end: q `[T, H, D]`, k and v
// `[T, Hkv, D]` (Hkv divides H), `cu_seqlens` int32 `[samples + 1]`. Goes through the
// dispatcher, so autograd records it (its backward is `_flash_attention_backward`). CUDA
// with bf16/f16 only: elsewhere ATen's error comes back. `*out` is a new tensor for tch.
int ove_flash_attention_varlen(at::Tensor* q, at::Tensor* k, at::Tensor* v,
                               at::Tensor* cu_seqlens, int64_t max_len, at::Tensor** out,
                               char** err) {
  OVE_TRY
  auto res = at::_flash_attention_forward(*q, *k, *v, *cu_seqlens, *cu_seqlens, max_len, max_len,
                                          /*dropout_p=*/0.0, /*is_causal=*/true,
                                          /*return_debug_mask=*/false);
  *out = new at::Tensor(std::get<0>(res));
  return 0;
  OVE_CATCH(err, -1)
}

}  // extern "C"
