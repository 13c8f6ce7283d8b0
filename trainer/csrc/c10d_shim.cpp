// A C interface over libtorch's c10d (TCPStore, PrefixStore, ProcessGroupGloo; NCCL's
// group is in nccl_shim.cpp, built with the `nccl` feature) for
// ove-train's data-parallel training: tch binds none of it. Every entry point catches
// C++ exceptions and returns them as a message (`*err`, freed with ove_str_free), so a
// failed collective (a peer that died, a timeout) is an error in Rust, never an abort.
//
// Tensors cross as `at::Tensor*`, which is what tch's `C_tensor` points to.

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "c10d_shim.h"
#include "shim_error.h"

struct ove_store {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

struct ove_work {
  c10::intrusive_ptr<c10d::Work> work;
};

c10::intrusive_ptr<c10d::Store> ove_group_store(const char* store_host, uint16_t store_port,
                                                bool is_server, int world,
                                                std::chrono::milliseconds timeout,
                                                const char* prefix) {
  c10d::TCPStoreOptions opts;
  opts.port = store_port;
  opts.isServer = is_server;
  // Every rank counts itself in (the server waits for all `world` of them), as
  // torch.distributed's env:// rendezvous does, also against torchrun's agent store.
  opts.numWorkers = static_cast<std::size_t>(world);
  opts.waitWorkers = true;  // a client only counts itself in; the server waits
  opts.timeout = timeout;
  auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(store_host), opts);
  return c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
}

extern "C" {

void ove_str_free(char* s) { std::free(s); }

// A Gloo process group over a TCPStore at store_host:store_port. `is_server`: this
// process hosts the store (rank 0 of a plain env launch); otherwise it connects to one
// (the other ranks, or every rank when torchrun's agent hosts it). `iface`: the network
// interface Gloo binds to (GLOO_SOCKET_IFNAME), or null for the host's default address.
ove_pg* ove_pg_new_gloo(const char* store_host, uint16_t store_port, bool is_server,
                        int rank, int world, int64_t timeout_ms, const char* prefix,
                        const char* iface, char** err) {
  OVE_TRY
  auto timeout = std::chrono::milliseconds(timeout_ms);
  auto store = ove_group_store(store_host, store_port, is_server, world, timeout, prefix);
  auto gloo = c10d::ProcessGroupGloo::Options::create(timeout);
  if (iface != nullptr && iface[0] != '\0') {
    gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
  } else {
    gloo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  auto pg = new ove_pg();
  pg->store = store;
  pg->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, gloo);
  return pg;
  OVE_CATCH(err, nullptr)
}

void ove_pg_free(ove_pg* pg) { delete pg; }

// A TCPStore server alone, as torchrun's agent hosts one for its workers (who then join
// with is_server false). Port 0 picks a free port: ove_store_port says which.
ove_store* ove_store_new_server(const char* host, uint16_t port, int64_t timeout_ms,
                                char** err) {
  OVE_TRY
  c10d::TCPStoreOptions opts;
  opts.port = port;
  opts.isServer = true;
  opts.waitWorkers = false;
  opts.timeout = std::chrono::milliseconds(timeout_ms);
  return new ove_store{c10::make_intrusive<c10d::TCPStore>(std::string(host), opts)};
  OVE_CATCH(err, nullptr)
}

uint16_t ove_store_port(ove_store* s) { return s->store->getPort(); }

void ove_store_free(ove_store* s) { delete s; }

// op: 0 sum, 1 max.
ove_work* ove_pg_allreduce(ove_pg* pg, at::Tensor* t, int op, char** err) {
  OVE_TRY
  std::vector<at::Tensor> ts{*t};
  c10d::AllreduceOptions o;
  o.reduceOp = op == 1 ? c10d::ReduceOp(c10d::ReduceOp::MAX) : c10d::ReduceOp(c10d::ReduceOp::SUM);
  return new ove_work{pg->backend->allreduce(ts, o)};
  OVE_CATCH(err, nullptr)
}

ove_work* ove_pg_broadcast(ove_pg* pg, at::Tensor* t, int root, char** err) {
  OVE_TRY
  std::vector<at::Tensor> ts{*t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  return new ove_work{pg->backend->broadcast(ts, o)};
  OVE_CATCH(err, nullptr)
}

// out (numel n) <- the sum over ranks of this rank's n-element block of in (numel world*n).
ove_work* ove_pg_reduce_scatter(ove_pg* pg, at::Tensor* out, at::Tensor* in, char** err) {
  OVE_TRY
  return new ove_work{pg->backend->_reduce_scatter_base(*out, *in)};
  OVE_CATCH(err, nullptr)
}

// out (numel world*n) <- every rank's in (numel n), in rank order.
ove_work* ove_pg_allgather(ove_pg* pg, at::Tensor* out, at::Tensor* in, char** err) {
  OVE_TRY
  return new ove_work{pg->backend->_allgather_base(*out, *in)};
  OVE_CATCH(err, nullptr)
}

ove_work* ove_pg_barrier(ove_pg* pg, char** err) {
  OVE_TRY
  return new ove_work{pg->backend->barrier()};
  OVE_CATCH(err, nullptr)
}

// Waits for the work (timeout_ms <= 0: the group's timeout); 0 on success.
int ove_work_wait(ove_work* w, int64_t timeout_ms, char** err) {
  OVE_TRY
  if (timeout_ms > 0) {
    w->work->wait(std::chrono::milliseconds(timeout_ms));
  } else {
    w->work->wait();
  }
  return 0;
  OVE_CATCH(err, -1)
}

void ove_work_free(ove_work* w) { delete w; }

}  // extern "C"
