// ProcessGroupNCCL for ove-train's data-parallel training on GPUs (the `nccl` feature:
// this file needs CUDA's and NCCL's headers and links libtorch_cuda). The group handle
// is the Gloo half's `ove_pg`, so every collective of c10d_shim.cpp (allreduce,
// broadcast, _reduce_scatter_base, _allgather_base, barrier, wait) serves both: one code
// path, two backends.

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <c10/cuda/CUDAFunctions.h>

#include <chrono>
#include <cstdint>

#include "c10d_shim.h"
#include "shim_error.h"

extern "C" {

// An NCCL group over the same TCPStore rendezvous as the Gloo group; this rank's
// tensors live on cuda:`device` (its LOCAL_RANK), which becomes the current device.
// NCCL's watchdog turns a collective that outlives `timeout_ms` (a dead or hung peer)
// into an error instead of a hang.
ove_pg* ove_pg_new_nccl(const char* store_host, uint16_t store_port, bool is_server,
                        int rank, int world, int64_t timeout_ms, const char* prefix,
                        int device, char** err) {
  OVE_TRY
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  auto timeout = std::chrono::milliseconds(timeout_ms);
  auto store = ove_group_store(store_host, store_port, is_server, world, timeout, prefix);
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  auto pg = new ove_pg();
  pg->store = store;
  pg->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
  return pg;
  OVE_CATCH(err, nullptr)
}

}  // extern "C"
