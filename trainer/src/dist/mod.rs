//! Data-parallel training over libtorch's c10d: the launch environment ([`env`]), process
//! groups and their collectives through a small C++ shim ([`group`]; Gloo on the CPU),
//! gradient all-reduce in flat buckets ([`buckets`]) started from gradient hooks while
//! the backward runs ([`reducer`]), the ZeRO-1 optimizer that shards
//! the f32 masters and AdamW moments ([`zero`]), and `--nproc-per-node`, a launcher that
//! hosts the store as torchrun's agent does ([`launch`]).
//!
//! How a step is shared (see [`crate::train::run`]): every rank draws the same global
//! batch from the same epoch order, plans the same micro-batches, and runs only those
//! whose index is its rank modulo the world size. Each micro-batch's loss is divided by
//! the target-token count of the whole step (all-reduced), and gradients are summed over
//! ranks, so a step is the step one process takes on the whole batch: same losses, same
//! weights, up to the order of float additions.

pub mod buckets;
pub mod env;
pub mod group;
pub mod launch;
pub mod reducer;
pub mod zero;

use std::time::Duration;

use anyhow::{Context, Result};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use tracing::info;

pub use env::LaunchEnv;
pub use group::{ProcessGroup, ReduceOp, StoreAddr, StoreServer, Work};

/// Default timeout of a collective: a rank that died or hangs makes the others stop with
/// an error after at most this long (a dead peer's closed socket usually ends it sooner).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// This process's place in a distributed run.
#[derive(Debug)]
pub struct Dist {
    pub env: LaunchEnv,
    pub group: ProcessGroup,
}

impl Dist {
    /// Joins the group the environment describes (every rank must): Gloo when this rank
    /// trains on the CPU, NCCL on `cuda:LOCAL_RANK` when it trains on a GPU.
    pub fn init(env: LaunchEnv, timeout: Duration, device: Device) -> Result<Self> {
        let store = env.store();
        let group = if device.is_cuda() {
            ProcessGroup::nccl(&store, env.rank, env.world, timeout, env.local_rank)?
        } else {
            ProcessGroup::gloo(
                &store,
                env.rank,
                env.world,
                timeout,
                env.gloo_iface.as_deref(),
            )?
        };
        info!(
            rank = env.rank,
            world = env.world,
            device = ?group.device(),
            backend = if device.is_cuda() { "NCCL" } else { "Gloo" },
            "joined the process group"
        );
        Ok(Self { env, group })
    }

    /// Where the group's collectives read and write: the CPU (Gloo) or this rank's GPU.
    pub fn device(&self) -> Device {
        self.group.device()
    }

    pub fn rank(&self) -> usize {
        self.env.rank
    }

    pub fn world(&self) -> usize {
        self.env.world
    }

    /// Rank 0: the one that writes logs, metrics and checkpoints.
    pub fn is_main(&self) -> bool {
        self.env.rank == 0
    }

    /// The sum over ranks of `x` (in f64).
    pub fn sum_f64(&self, x: f64) -> Result<f64> {
        let t = Tensor::from_slice(&[x]).to_device(self.device());
        self.group.all_reduce(&t, ReduceOp::Sum)?.wait()?;
        Ok(t.double_value(&[0]))
    }

    /// The sum over ranks of `x`.
    pub fn sum_i64(&self, x: i64) -> Result<i64> {
        let t = Tensor::from_slice(&[x]).to_device(self.device());
        self.group.all_reduce(&t, ReduceOp::Sum)?.wait()?;
        Ok(t.int64_value(&[0]))
    }

    /// Every variable of `vs` (sorted by name) becomes rank 0's, so all ranks start from
    /// the same weights whatever each one loaded or initialised.
    pub fn broadcast_vars(&self, vs: &VarStore) -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| -> Result<()> {
            for (name, t) in &vars {
                let buf = on_device_contiguous(t, self.device());
                self.group
                    .broadcast(&buf, 0)?
                    .wait()
                    .with_context(|| format!("broadcasting {name} from rank 0"))?;
                if buf.data_ptr() != t.data_ptr() {
                    let mut t = t.shallow_clone();
                    t.copy_(&buf);
                }
            }
            Ok(())
        })
    }

    /// Waits until every rank is here.
    pub fn barrier(&self) -> Result<()> {
        self.group.barrier()?.wait()
    }
}

/// `t` itself when it is contiguous on `device` (the group's: Gloo reads and writes CPU
/// memory, NCCL its GPU's), otherwise a contiguous copy there.
pub(crate) fn on_device_contiguous(t: &Tensor, device: Device) -> Tensor {
    if t.device() == device && t.is_contiguous() {
        t.shallow_clone()
    } else {
        t.to_device(device).contiguous()
    }
}

/// Bytes of `numel` elements of `kind`.
pub(crate) fn bytes_of(numel: i64, kind: Kind) -> u64 {
    numel as u64 * kind.elt_size_in_bytes() as u64
}
