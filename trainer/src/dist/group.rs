//! A process group and its collectives: the safe side of `csrc/c10d_shim.cpp` (libtorch's
//! c10d: `TCPStore`, `PrefixStore`, `ProcessGroupGloo`) and, with the `nccl` feature,
//! `csrc/nccl_shim.cpp` (`ProcessGroupNCCL`). Both backends share every collective; a
//! group says on which [`Device`] its tensors must live.
//!
//! Every collective returns a [`Work`] to wait on; waiting gives an error (naming the
//! collective) when a peer died or the group's timeout passed, so a run whose peer is gone
//! stops with a message instead of hanging.

use std::ffi::{c_char, CString};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Tensor};

use crate::shim::{take_error, CTensor, Handles};

mod ffi {
    use std::ffi::c_char;

    use crate::shim::CTensor;

    #[repr(C)]
    pub struct OvePg {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct OveWork {
        _private: [u8; 0],
    }

    #[repr(C)]
    pub struct OveStore {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn ove_store_new_server(
            host: *const c_char,
            port: u16,
            timeout_ms: i64,
            err: *mut *mut c_char,
        ) -> *mut OveStore;
        pub fn ove_store_port(s: *mut OveStore) -> u16;
        pub fn ove_store_free(s: *mut OveStore);
        #[allow(clippy::too_many_arguments)]
        pub fn ove_pg_new_gloo(
            store_host: *const c_char,
            store_port: u16,
            is_server: bool,
            rank: i32,
            world: i32,
            timeout_ms: i64,
            prefix: *const c_char,
            iface: *const c_char,
            err: *mut *mut c_char,
        ) -> *mut OvePg;
        #[cfg(feature = "nccl")]
        #[allow(clippy::too_many_arguments)]
        pub fn ove_pg_new_nccl(
            store_host: *const c_char,
            store_port: u16,
            is_server: bool,
            rank: i32,
            world: i32,
            timeout_ms: i64,
            prefix: *const c_char,
            device: i32,
            err: *mut *mut c_char,
        ) -> *mut OvePg;
        pub fn ove_pg_free(pg: *mut OvePg);
        pub fn ove_pg_allreduce(
            pg: *mut OvePg,
            t: *mut CTensor,
            op: i32,
            err: *mut *mut c_char,
        ) -> *mut OveWork;
        pub fn ove_pg_broadcast(
            pg: *mut OvePg,
            t: *mut CTensor,
            root: i32,
            err: *mut *mut c_char,
        ) -> *mut OveWork;
        pub fn ove_pg_reduce_scatter(
            pg: *mut OvePg,
            out: *mut CTensor,
            input: *mut CTensor,
            err: *mut *mut c_char,
        ) -> *mut OveWork;
        pub fn ove_pg_allgather(
            pg: *mut OvePg,
            out: *mut CTensor,
            input: *mut CTensor,
            err: *mut *mut c_char,
        ) -> *mut OveWork;
        pub fn ove_pg_barrier(pg: *mut OvePg, err: *mut *mut c_char) -> *mut OveWork;
        pub fn ove_work_wait(w: *mut OveWork, timeout_ms: i64, err: *mut *mut c_char) -> i32;
        pub fn ove_work_free(w: *mut OveWork);
    }
}

/// The C arguments every group constructor takes, alive for the call.
struct JoinArgs {
    host: *const c_char,
    prefix: *const c_char,
    timeout_ms: i64,
    err: *mut *mut c_char,
}

/// Where the group's store is and who hosts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAddr {
    pub host: String,
    pub port: u16,
    /// This process hosts the store (rank 0 of a plain launch).
    pub is_server: bool,
    /// Key prefix, so that several groups (or torchrun restarts) on one store stay apart.
    pub prefix: String,
}

/// Reduction of [`ProcessGroup::all_reduce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
}

/// A c10d process group: Gloo over CPU tensors, or NCCL over this rank's GPU.
pub struct ProcessGroup {
    ptr: *mut ffi::OvePg,
    rank: usize,
    world: usize,
    timeout: Duration,
    device: Device,
}

// SAFETY: c10d backends are thread-safe (their collectives are queued to worker threads);
// the pointer is owned by this value alone.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("timeout", &self.timeout)
            .field("device", &self.device)
            .finish()
    }
}

/// A collective in flight; [`Work::wait`] finishes it.
#[must_use = "a collective is only done once waited on"]
pub struct Work {
    ptr: *mut ffi::OveWork,
    /// "rank R of W: COLLECTIVE", for the error.
    what: String,
    /// 0: the backend's own wait (Gloo blocks until done or its timeout). NCCL's plain wait
    /// only orders the GPU stream; with a timeout it blocks the CPU until the collective is
    /// done and throws when it is not in time, so a dead peer is an error here (and the
    /// step's communication time is the collective's, not the time to queue it).
    timeout_ms: i64,
    /// The tensors the collective reads and writes, kept alive until it is done.
    _keep: Handles,
}

impl Work {
    /// Blocks until the collective is done; an error when it failed (a peer that died, the
    /// group's timeout).
    pub fn wait(self) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: ptr is a live work handle (freed in Drop, after this).
        let rc = unsafe { ffi::ove_work_wait(self.ptr, self.timeout_ms, &mut err) };
        if rc != 0 {
            bail!("{} failed: {}", self.what, take_error(err));
        }
        Ok(())
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        // SAFETY: ptr came from the shim and is freed once.
        unsafe { ffi::ove_work_free(self.ptr) }
    }
}

impl ProcessGroup {
    /// A Gloo group of `world` ranks meeting at `store` (every rank must call this);
    /// `iface` is the network interface Gloo binds to (None: the host's address).
    pub fn gloo(
        store: &StoreAddr,
        rank: usize,
        world: usize,
        timeout: Duration,
        iface: Option<&str>,
    ) -> Result<Self> {
        let iface = iface.map(CString::new).transpose().context("interface")?;
        Self::join("Gloo", store, rank, world, timeout, Device::Cpu, |c| {
            // SAFETY: valid NUL-terminated strings for the duration of the call.
            unsafe {
                ffi::ove_pg_new_gloo(
                    c.host,
                    store.port,
                    store.is_server,
                    rank as i32,
                    world as i32,
                    c.timeout_ms,
                    c.prefix,
                    iface.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                    c.err,
                )
            }
        })
    }

    /// An NCCL group of `world` ranks meeting at `store`, this rank's tensors on
    /// `cuda:device` (its LOCAL_RANK). Needs the `nccl` feature.
    pub fn nccl(
        store: &StoreAddr,
        rank: usize,
        world: usize,
        timeout: Duration,
        device: usize,
    ) -> Result<Self> {
        #[cfg(feature = "nccl")]
        {
            Self::join(
                "NCCL",
                store,
                rank,
                world,
                timeout,
                Device::Cuda(device),
                |c| {
                    // SAFETY: valid NUL-terminated strings for the duration of the call.
                    unsafe {
                        ffi::ove_pg_new_nccl(
                            c.host,
                            store.port,
                            store.is_server,
                            rank as i32,
                            world as i32,
                            c.timeout_ms,
                            c.prefix,
                            device as i32,
                            c.err,
                        )
                    }
                },
            )
        }
        #[cfg(not(feature = "nccl"))]
        {
            let _ = (store, timeout, device);
            bail!(
                "rank {rank} of {world}: data parallel on GPUs needs NCCL, and this ove-train \
                 was built without it (cargo build --release -p ove-train --features nccl, \
                 after scripts/setup-torchrun); on the CPU it runs over Gloo"
            )
        }
    }

    /// Joins a group through `create` (given the C strings), naming `backend` in errors.
    fn join(
        backend: &str,
        store: &StoreAddr,
        rank: usize,
        world: usize,
        timeout: Duration,
        device: Device,
        create: impl FnOnce(&JoinArgs) -> *mut ffi::OvePg,
    ) -> Result<Self> {
        anyhow::ensure!(
            world >= 1 && rank < world,
            "rank {rank} of world size {world}"
        );
        let host = CString::new(store.host.as_str()).context("store host")?;
        let prefix = CString::new(store.prefix.as_str()).context("store prefix")?;
        let mut err = std::ptr::null_mut();
        let ptr = create(&JoinArgs {
            host: host.as_ptr(),
            prefix: prefix.as_ptr(),
            timeout_ms: timeout.as_millis().min(i64::MAX as u128) as i64,
            err: &mut err,
        });
        if ptr.is_null() {
            return Err(anyhow!(take_error(err))).with_context(|| {
                format!(
                    "rank {rank} of {world}: joining the {backend} group at {}:{} (timeout {:?})",
                    store.host, store.port, timeout
                )
            });
        }
        Ok(Self {
            ptr,
            rank,
            world,
            timeout,
            device,
        })
    }

    /// Where this group's tensors live: the CPU (Gloo) or this rank's GPU (NCCL).
    pub fn device(&self) -> Device {
        self.device
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The shim's group handle, for other parts of the shim (the gradient reducer); valid
    /// while this group lives.
    pub(crate) fn raw(&self) -> *mut std::ffi::c_void {
        self.ptr.cast()
    }

    /// Starts a collective on `tensors` (their pointers go to `call`, in order); the
    /// returned [`Work`] keeps them alive until it is done.
    fn work(
        &self,
        what: &'static str,
        tensors: &[&Tensor],
        call: impl FnOnce(&[*mut CTensor], *mut *mut c_char) -> *mut ffi::OveWork,
    ) -> Result<Work> {
        let keep = Handles::new(tensors.iter().copied());
        let mut err = std::ptr::null_mut();
        let ptr = call(&keep.ptrs, &mut err);
        if ptr.is_null() {
            bail!(
                "rank {} of {}: {what} failed to start: {}",
                self.rank,
                self.world,
                take_error(err)
            );
        }
        Ok(Work {
            ptr,
            timeout_ms: if self.device.is_cuda() {
                self.timeout.as_millis().clamp(1, i64::MAX as u128) as i64
            } else {
                0
            },
            what: format!("rank {} of {}: {what}", self.rank, self.world),
            _keep: keep,
        })
    }

    /// In place: `t` becomes the reduction of every rank's `t`.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<Work> {
        let op = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
        };
        // SAFETY: the pointers are live tensors, kept alive by the returned Work.
        self.work("all_reduce", &[t], |p, e| unsafe {
            ffi::ove_pg_allreduce(self.ptr, p[0], op, e)
        })
    }

    /// In place: every rank's `t` becomes `root`'s.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<Work> {
        // SAFETY: as in all_reduce.
        self.work("broadcast", &[t], |p, e| unsafe {
            ffi::ove_pg_broadcast(self.ptr, p[0], root as i32, e)
        })
    }

    /// `out` (n elements) becomes the sum over ranks of block `rank` of `input`
    /// (`world` x n elements, contiguous).
    pub fn reduce_scatter(&self, out: &Tensor, input: &Tensor) -> Result<Work> {
        // SAFETY: as in all_reduce.
        self.work("reduce_scatter", &[out, input], |p, e| unsafe {
            ffi::ove_pg_reduce_scatter(self.ptr, p[0], p[1], e)
        })
    }

    /// `out` (`world` x n elements) becomes every rank's `input` (n elements) in rank
    /// order.
    pub fn all_gather(&self, out: &Tensor, input: &Tensor) -> Result<Work> {
        // SAFETY: as in all_reduce.
        self.work("all_gather", &[out, input], |p, e| unsafe {
            ffi::ove_pg_allgather(self.ptr, p[0], p[1], e)
        })
    }

    pub fn barrier(&self) -> Result<Work> {
        // SAFETY: ptr is live.
        self.work("barrier", &[], |_, e| unsafe {
            ffi::ove_pg_barrier(self.ptr, e)
        })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: ptr came from the shim and is freed once.
        unsafe { ffi::ove_pg_free(self.ptr) }
    }
}

/// A TCPStore server hosted by this process for others to join (what torchrun's agent
/// does for its workers: they join with `TORCHELASTIC_USE_AGENT_STORE=True`).
pub struct StoreServer {
    ptr: *mut ffi::OveStore,
    port: u16,
}

// SAFETY: the store server runs on its own threads; the handle is only freed in Drop.
unsafe impl Send for StoreServer {}

impl StoreServer {
    /// Listens on `host:port` (port 0: a free port, see [`StoreServer::port`]).
    pub fn listen(host: &str, port: u16, timeout: Duration) -> Result<Self> {
        let c_host = CString::new(host).context("store host")?;
        let mut err = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated string for the duration of the call.
        let ptr = unsafe {
            ffi::ove_store_new_server(
                c_host.as_ptr(),
                port,
                timeout.as_millis().min(i64::MAX as u128) as i64,
                &mut err,
            )
        };
        if ptr.is_null() {
            bail!("hosting a TCPStore on {host}:{port}: {}", take_error(err));
        }
        // SAFETY: ptr is live.
        let port = unsafe { ffi::ove_store_port(ptr) };
        Ok(Self { ptr, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        // SAFETY: ptr came from the shim and is freed once.
        unsafe { ffi::ove_store_free(self.ptr) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a GPU (or without the `nccl` feature) asking for an NCCL group is an error
    /// that says so, before any rendezvous, never an abort.
    #[test]
    fn an_nccl_group_without_a_gpu_is_an_error() {
        if tch::Cuda::is_available() {
            return; // a GPU machine: the GPU script exercises the group itself
        }
        let store = StoreAddr {
            host: "127.0.0.1".into(),
            port: 1,
            is_server: false,
            prefix: "t/".into(),
        };
        let err =
            ProcessGroup::nccl(&store, 0, 1, Duration::from_secs(1), 0).expect_err("no GPU here");
        let text = format!("{err:#}");
        assert!(text.contains("NCCL"), "{text}");
    }
}
