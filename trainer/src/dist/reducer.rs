//! Gradient all-reduce overlapped with the backward: the safe side of
//! `csrc/grad_reducer.cpp`. Every trained parameter gets a post-accumulate-grad hook; while
//! the reducer is armed (the last backward of a step), a bucket whose gradients are all
//! final starts its all-reduce at once, so communication runs beside the rest of the
//! backward instead of after it. [`GradReducer::finish`] starts what is left, waits, and
//! writes the sums back into the gradients.
//!
//! Buckets start in one fixed order on every rank (the collectives must pair up). The
//! first step uses the optimizer's order (sorted by name); after it, the buckets are
//! planned once more in the order rank 0's hooks fired (then the parameters whose hooks
//! did not fire, sorted), as PyTorch DDP rebuilds its buckets after its first iteration:
//! gradients that become final first then sit in the buckets that start first. Rank 0's
//! order is broadcast, so every rank plans the same buckets whatever its own graph was.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use tch::{Kind, Tensor};

use super::buckets::plan_buckets;
use super::Dist;
use crate::shim::{take_error, Handles};

mod ffi {
    use std::ffi::{c_char, c_void};

    use crate::shim::CTensor;

    #[repr(C)]
    pub struct OveReducer {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn ove_reducer_new(
            pg: *mut c_void,
            params: *const *mut CTensor,
            n: usize,
            err: *mut *mut c_char,
        ) -> *mut OveReducer;
        pub fn ove_reducer_plan(
            r: *mut OveReducer,
            indices: *const i64,
            lens: *const i64,
            n_buckets: usize,
            err: *mut *mut c_char,
        ) -> i32;
        pub fn ove_reducer_arm(r: *mut OveReducer, final_now: *const i64, n: usize);
        pub fn ove_reducer_finish(
            r: *mut OveReducer,
            timeout_ms: i64,
            in_backward: *mut i64,
            order: *mut i64,
            err: *mut *mut c_char,
        ) -> i32;
        pub fn ove_reducer_free(r: *mut OveReducer);
    }
}

/// What one step's gradient all-reduce did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReduceStats {
    /// Buckets all-reduced.
    pub buckets: usize,
    /// Of those, how many started during the backward (the rest started after it).
    pub in_backward: usize,
    /// Seconds spent in [`GradReducer::finish`]: the communication the backward did not
    /// hide.
    pub seconds: f64,
}

/// Sums the trained parameters' gradients over a data-parallel group, overlapping the
/// backward (see the module docs); lives no longer than the group.
pub struct GradReducer<'a> {
    ptr: *mut ffi::OveReducer,
    dist: &'a Dist,
    /// The parameters, alive as long as their hooks point here.
    _params: Handles,
    shapes: Vec<(i64, Kind)>,
    /// Indices of the parameters whose gradients are final when the reducer is armed.
    final_at_arm: Vec<i64>,
    bucket_bytes: u64,
    buckets: usize,
    /// Whether the buckets were planned again from a backward's order yet.
    replanned: bool,
}

impl<'a> GradReducer<'a> {
    /// Hooks onto `params` (the optimizer's, in its sorted order; on the group's device)
    /// and plans buckets of at most `bucket_bytes` (one dtype a bucket) in that order.
    /// Those of `params` that are also in `final_at_arm` (the LM head's own weight: its
    /// chunks' backwards are done before the reducer is armed) count as final as soon as
    /// it is armed, so their bucket need not wait for the end of the backward.
    pub fn new(
        dist: &'a Dist,
        params: &[Tensor],
        final_at_arm: &[Tensor],
        bucket_bytes: u64,
    ) -> Result<Self> {
        for (i, p) in params.iter().enumerate() {
            ensure!(
                p.device() == dist.device(),
                "trained parameter {i} is on {:?}, the process group on {:?}",
                p.device(),
                dist.device()
            );
        }
        let handles = Handles::new(params);
        let mut err = std::ptr::null_mut();
        // SAFETY: the pointers are live tensors, kept alive by `handles` for as long as
        // the reducer (which copies them) exists; the group outlives `'a`.
        let ptr = unsafe {
            ffi::ove_reducer_new(
                dist.group.raw(),
                handles.ptrs.as_ptr(),
                handles.ptrs.len(),
                &mut err,
            )
        };
        if ptr.is_null() {
            bail!("setting up the gradient all-reduce: {}", take_error(err));
        }
        let mut r = Self {
            ptr,
            dist,
            _params: handles,
            shapes: params
                .iter()
                .map(|p| (p.numel() as i64, p.kind()))
                .collect(),
            final_at_arm: params
                .iter()
                .enumerate()
                .filter(|(_, p)| final_at_arm.iter().any(|f| f.data_ptr() == p.data_ptr()))
                .map(|(i, _)| i as i64)
                .collect(),
            bucket_bytes,
            buckets: 0,
            replanned: false,
        };
        r.plan(&(0..params.len()).collect::<Vec<_>>())?;
        Ok(r)
    }

    /// The group the gradients are summed over.
    pub fn dist(&self) -> &'a Dist {
        self.dist
    }

    /// Buckets over the parameters in `order` (every index once).
    fn plan(&mut self, order: &[usize]) -> Result<()> {
        let shapes: Vec<(i64, Kind)> = order.iter().map(|&i| self.shapes[i]).collect();
        let buckets = plan_buckets(&shapes, self.bucket_bytes);
        let indices: Vec<i64> = buckets.iter().flatten().map(|&k| order[k] as i64).collect();
        let lens: Vec<i64> = buckets.iter().map(|b| b.len() as i64).collect();
        let mut err = std::ptr::null_mut();
        // SAFETY: ptr is live; the slices are valid for the call.
        let rc = unsafe {
            ffi::ove_reducer_plan(
                self.ptr,
                indices.as_ptr(),
                lens.as_ptr(),
                lens.len(),
                &mut err,
            )
        };
        if rc != 0 {
            bail!("planning the gradient buckets: {}", take_error(err));
        }
        self.buckets = buckets.len();
        Ok(())
    }

    /// From now on, a bucket whose gradients are all final starts its all-reduce. Call
    /// it before the step's last backward, once every gradient left to accumulate is
    /// accumulated at most once more.
    pub fn arm(&self) {
        // SAFETY: ptr is live; the slice is valid for the call.
        unsafe {
            ffi::ove_reducer_arm(
                self.ptr,
                self.final_at_arm.as_ptr(),
                self.final_at_arm.len(),
            )
        }
    }

    /// Starts the buckets not started yet, waits for all, and leaves every gradient the
    /// sum over ranks. After the first step, plans the buckets again in rank 0's order
    /// (a broadcast every rank takes part in).
    pub fn finish(&mut self) -> Result<ReduceStats> {
        let started = Instant::now();
        let n = self.shapes.len();
        let mut order = vec![-1i64; n];
        let mut in_backward = 0i64;
        let timeout_ms = if self.dist.device().is_cuda() {
            self.dist
                .group
                .timeout()
                .as_millis()
                .clamp(1, i64::MAX as u128) as i64
        } else {
            0
        };
        let mut err = std::ptr::null_mut();
        // SAFETY: ptr is live; `order` has room for n entries.
        let rc = unsafe {
            ffi::ove_reducer_finish(
                self.ptr,
                timeout_ms,
                &mut in_backward,
                order.as_mut_ptr(),
                &mut err,
            )
        };
        if rc != 0 {
            bail!(
                "rank {} of {}: all-reducing gradients failed: {}",
                self.dist.rank(),
                self.dist.world(),
                take_error(err)
            );
        }
        let stats = ReduceStats {
            buckets: self.buckets,
            in_backward: in_backward as usize,
            seconds: 0.0,
        };
        if !self.replanned {
            self.replanned = true;
            let t = Tensor::from_slice(&order).to_device(self.dist.device());
            self.dist
                .group
                .broadcast(&t, 0)?
                .wait()
                .context("broadcasting rank 0's gradient order")?;
            let theirs: Vec<i64> = Vec::<i64>::try_from(&t.to_device(tch::Device::Cpu))
                .context("reading the broadcast gradient order")?;
            self.plan(&backward_order(&theirs, n))?;
        }
        Ok(ReduceStats {
            seconds: started.elapsed().as_secs_f64(),
            ..stats
        })
    }
}

impl Drop for GradReducer<'_> {
    fn drop(&mut self) {
        // SAFETY: ptr came from ove_reducer_new and is freed once; it removes its hooks.
        unsafe { ffi::ove_reducer_free(self.ptr) }
    }
}

/// The parameters in the order a backward made their gradients final (`fired`: indices,
/// then -1s), then those it did not reach in index order: every index in `0..n` once.
/// Indices out of range or repeated are ignored (the order is advice, not data).
pub fn backward_order(fired: &[i64], n: usize) -> Vec<usize> {
    let mut seen = vec![false; n];
    let mut out = Vec::with_capacity(n);
    for &i in fired {
        if i >= 0 && (i as usize) < n && !seen[i as usize] {
            seen[i as usize] = true;
            out.push(i as usize);
        }
    }
    out.extend((0..n).filter(|&i| !seen[i]));
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tch::Device;

    use super::*;
    use crate::dist::LaunchEnv;

    fn group_of_one() -> Dist {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = LaunchEnv {
            rank: 0,
            world: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
            restart: 0,
            gloo_iface: None,
        };
        Dist::init(env, Duration::from_secs(30), Device::Cpu).unwrap()
    }

    fn grad(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.grad()).unwrap()
    }

    /// A group of one, so every sum is the gradient itself: the hooks start both buckets
    /// (one parameter each) during an armed backward, none during an unarmed one, the
    /// gradients come out whole, and a parameter accumulated again after its bucket
    /// started is an error, not a lost gradient; a parameter final at arming starts its
    /// bucket then.
    #[test]
    fn hooks_start_buckets_in_the_backward_and_a_late_gradient_is_an_error() {
        let dist = group_of_one();
        let a = Tensor::from_slice(&[1f32, 2., 3., 4.]).set_requires_grad(true);
        let b = Tensor::from_slice(&[5f32, 6., 7., 8.]).set_requires_grad(true);
        (&a * 0.0 + &b * 0.0).sum(Kind::Float).backward();
        // 16 bytes: one parameter of 4 f32 a bucket.
        let params = [a.shallow_clone(), b.shallow_clone()];
        let mut r = GradReducer::new(&dist, &params, &[], 16).unwrap();
        let loss = || (&a * 2.0).sum(Kind::Float) + (&b * &b).sum(Kind::Float);
        for armed in [false, true] {
            for t in [&a, &b] {
                let _ = t.grad().zero_();
            }
            if armed {
                r.arm();
            }
            loss().backward();
            let s = r.finish().unwrap();
            assert_eq!((s.buckets, s.in_backward), (2, if armed { 2 } else { 0 }));
            assert_eq!(grad(&a), [2.0; 4]);
            assert_eq!(grad(&b), [10.0, 12.0, 14.0, 16.0]);
        }
        r.arm();
        loss().backward();
        (&b * 1.0).sum(Kind::Float).backward();
        let e = r.finish().unwrap_err();
        assert!(format!("{e:#}").contains("accumulated again"), "{e:#}");
        drop(r);

        // `a` as the LM head: its gradient is final before the reducer is armed, and its
        // bucket starts when it is.
        let mut r = GradReducer::new(&dist, &params, &[a.shallow_clone()], 16).unwrap();
        for _ in 0..2 {
            for t in [&a, &b] {
                let _ = t.grad().zero_();
            }
            (&a * 2.0).sum(Kind::Float).backward();
            r.arm();
            (&b * &b).sum(Kind::Float).backward();
            let s = r.finish().unwrap();
            assert_eq!((s.buckets, s.in_backward), (2, 2));
            assert_eq!(grad(&a), [2.0; 4]);
            assert_eq!(grad(&b), [10.0, 12.0, 14.0, 16.0]);
        }
    }

    #[test]
    fn backward_order_takes_the_fired_then_the_rest() {
        assert_eq!(backward_order(&[3, 1, -1, -1, -1], 5), vec![3, 1, 0, 2, 4]);
        assert_eq!(backward_order(&[-1, -1], 2), vec![0, 1]);
        assert_eq!(backward_order(&[2, 2, 9, 0], 3), vec![2, 0, 1]);
    }
}
