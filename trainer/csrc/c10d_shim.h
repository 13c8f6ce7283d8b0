// What the Gloo half (c10d_shim.cpp) and the NCCL half (nccl_shim.cpp, the `nccl` feature)
// of the process-group shim share: the group handle every collective takes, and the store
// a group meets at.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cstdint>

struct ove_pg {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

// A TCPStore at store_host:store_port (hosted here when is_server, joined otherwise) that
// waits for `world` ranks, under the key prefix `prefix`.
c10::intrusive_ptr<c10d::Store> ove_group_store(const char* store_host, uint16_t store_port,
                                                bool is_server, int world,
                                                std::chrono::milliseconds timeout,
                                                const char* prefix);
