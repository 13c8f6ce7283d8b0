// Gradient all-reduce that overlaps the backward: a post-accumulate-grad hook on every
// trained parameter (libtorch's C++ form of `register_post_accumulate_grad_hook`, which tch
// does not bind) marks its gradient final; when every gradient of the next bucket is final,
// the bucket is copied into a flat buffer and its all-reduce starts while the backward goes
// on. Buckets start strictly in their planned order, on every rank, so the collectives pair
// up even when a rank's graph misses some parameters (a micro-batch without images): those
// buckets, and all after them, start in ove_reducer_finish. The plan (which parameters, in
// which order, how many a bucket) is the Rust side's (dist/reducer.rs).
//
// A hook only counts while the reducer is armed: the Rust side arms it for the last
// backward of a step, in which every parameter's gradient is accumulated at most once
// (earlier micro-batches, and the chunked LM head's own backwards, accumulate before).
// A parameter accumulated again after its bucket started is an error at finish, never a
// silently lost gradient. Hooks never throw into the autograd engine: an error is kept and
// returned by finish.

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "c10d_shim.h"
#include "shim_error.h"

struct ove_reducer;

namespace {

struct ReadyHook : torch::autograd::PostAccumulateGradHook {
  ove_reducer* reducer;
  std::size_t index;
  ReadyHook(ove_reducer* r, std::size_t i) : reducer(r), index(i) {}
  void operator()(const torch::autograd::Variable& /*unused*/) override;
};

}  // namespace

struct ove_reducer {
  ove_pg* pg;  // not owned: the Rust side keeps the group alive longer than this
  std::vector<at::Tensor> params;
  std::vector<std::vector<std::size_t>> buckets;
  std::vector<std::size_t> bucket_of;

  std::mutex mu;
  bool armed = false;
  std::vector<char> fired;           // per parameter, this round
  std::vector<int64_t> order;        // parameters in the order their hooks fired
  std::vector<std::size_t> missing;  // per bucket: gradients not yet final
  std::size_t next = 0;              // the next bucket to start
  std::size_t started_in_backward = 0;
  std::vector<at::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  std::string error;

  // A fresh round: no gradient final, no bucket started.
  void reset_locked() {
    std::size_t nb = buckets.size();
    fired.assign(params.size(), 0);
    order.clear();
    missing.assign(nb, 0);
    for (std::size_t b = 0; b < nb; ++b) {
      missing[b] = buckets[b].size();
    }
    next = 0;
    started_in_backward = 0;
    flats.assign(nb, at::Tensor());
    works.assign(nb, c10::intrusive_ptr<c10d::Work>());
    error.clear();
  }

  void start_locked(std::size_t b) {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> parts;
    parts.reserve(buckets[b].size());
    for (auto i : buckets[b]) {
      const at::Tensor& g = params[i].grad();
      TORCH_CHECK(g.defined(), "parameter ", i, " has no gradient to all-reduce");
      parts.push_back(g.reshape({-1}));
    }
    flats[b] = at::cat(parts);
    std::vector<at::Tensor> ts{flats[b]};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp(c10d::ReduceOp::SUM);
    works[b] = pg->backend->allreduce(ts, o);
  }

  void ready(std::size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    ready_locked(i);
  }

  // Parameter i's gradient is final: count it, and start every bucket that is now whole
  // and next in line.
  void ready_locked(std::size_t i) {
    if (!armed || !error.empty()) {
      return;
    }
    std::size_t b = bucket_of[i];
    if (fired[i]) {
      if (b < next) {
        error = "the gradient of parameter " + std::to_string(i) +
                " was accumulated again after its bucket's all-reduce started";
      }
      return;
    }
    fired[i] = 1;
    order.push_back(static_cast<int64_t>(i));
    missing[b] -= 1;
    try {
      while (next < buckets.size() && missing[next] == 0) {
        start_locked(next);
        next += 1;
        started_in_backward += 1;
      }
    } catch (const std::exception& e) {
      error = std::string("starting a gradient all-reduce in the backward: ") + e.what();
    }
  }
};

void ReadyHook::operator()(const torch::autograd::Variable& /*unused*/) {
  reducer->ready(index);
}

extern "C" {

// A reducer over `n` parameters (leaf tensors with a gradient, on the group's device),
// with one bucket of all of them until ove_reducer_plan says otherwise.
ove_reducer* ove_reducer_new(ove_pg* pg, at::Tensor** params, std::size_t n, char** err) {
  OVE_TRY
  auto r = std::make_unique<ove_reducer>();
  r->pg = pg;
  for (std::size_t i = 0; i < n; ++i) {
    TORCH_CHECK(params[i]->is_leaf() && params[i]->requires_grad(), "parameter ", i,
                " is not a leaf that requires a gradient");
    r->params.push_back(*params[i]);
    r->bucket_of.push_back(0);
  }
  if (n > 0) {
    r->buckets.emplace_back();
    for (std::size_t i = 0; i < n; ++i) {
      r->buckets[0].push_back(i);
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    torch::autograd::impl::set_post_acc_grad_hooks(
        r->params[i], std::make_unique<ReadyHook>(r.get(), i));
  }
  return r.release();
  OVE_CATCH(err, nullptr)
}

// The buckets, in the order they start: `lens[b]` parameter indices each, taken in turn
// from `indices` (every parameter exactly once).
int ove_reducer_plan(ove_reducer* r, const int64_t* indices, const int64_t* lens,
                     std::size_t n_buckets, char** err) {
  OVE_TRY
  std::lock_guard<std::mutex> lock(r->mu);
  TORCH_CHECK(!r->armed, "the reducer is armed; plan its buckets between steps");
  std::vector<std::vector<std::size_t>> buckets(n_buckets);
  std::vector<std::size_t> bucket_of(r->params.size(), SIZE_MAX);
  std::size_t k = 0;
  for (std::size_t b = 0; b < n_buckets; ++b) {
    for (int64_t j = 0; j < lens[b]; ++j, ++k) {
      auto i = static_cast<std::size_t>(indices[k]);
      TORCH_CHECK(i < r->params.size() && bucket_of[i] == SIZE_MAX, "parameter ", i,
                  " is out of range or in two buckets");
      bucket_of[i] = b;
      buckets[b].push_back(i);
    }
  }
  TORCH_CHECK(k == r->params.size(), "the buckets hold ", k, " of ", r->params.size(),
              " parameters");
  r->buckets = std::move(buckets);
  r->bucket_of = std::move(bucket_of);
  return 0;
  OVE_CATCH(err, -1)
}

// From now until finish, a final gradient may start its bucket's all-reduce; the `n`
// parameters in `final_now` are final already (their buckets may start at once).
void ove_reducer_arm(ove_reducer* r, const int64_t* final_now, std::size_t n) {
  std::lock_guard<std::mutex> lock(r->mu);
  r->reset_locked();
  r->armed = true;
  for (std::size_t k = 0; k < n; ++k) {
    auto i = static_cast<std::size_t>(final_now[k]);
    if (i < r->params.size()) {
      r->ready_locked(i);
    }
  }
}

// Starts the buckets not yet started (all of them when the reducer was not armed), waits
// for every one (timeout_ms > 0: at most that long each, which is how an NCCL collective
// blocks the CPU and fails on a dead peer), and writes the sums into the gradients.
// `*in_backward`: how many buckets started in the backward; `order` (n entries) gets the
// parameters in the order their hooks fired, then -1s. 0 on success.
int ove_reducer_finish(ove_reducer* r, int64_t timeout_ms, int64_t* in_backward,
                       int64_t* order, char** err) {
  OVE_TRY
  std::lock_guard<std::mutex> lock(r->mu);
  if (!r->armed) {
    r->reset_locked();
  }
  r->armed = false;
  TORCH_CHECK(r->error.empty(), r->error);
  while (r->next < r->buckets.size()) {
    r->start_locked(r->next);
    r->next += 1;
  }
  c10::NoGradGuard no_grad;
  for (std::size_t b = 0; b < r->buckets.size(); ++b) {
    if (timeout_ms > 0) {
      r->works[b]->wait(std::chrono::milliseconds(timeout_ms));
    } else {
      r->works[b]->wait();
    }
    int64_t offset = 0;
    for (auto i : r->buckets[b]) {
      at::Tensor g = r->params[i].mutable_grad();
      int64_t n = g.numel();
      g.copy_(r->flats[b].narrow(0, offset, n).view(g.sizes()));
      offset += n;
    }
    r->flats[b] = at::Tensor();
    r->works[b] = c10::intrusive_ptr<c10d::Work>();
  }
  *in_backward = static_cast<int64_t>(r->started_in_backward);
  for (std::size_t k = 0; k < r->params.size(); ++k) {
    order[k] = k < r->order.size() ? r->order[k] : -1;
  }
  return 0;
  OVE_CATCH(err, -1)
}

// Removes the hooks and frees the reducer.
void ove_reducer_free(ove_reducer* r) {
  for (auto& p : r->params) {
    torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
  }
  delete r;
}

}  // extern "C"
