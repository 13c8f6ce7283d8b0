//! The bounded queue between the HTTP handlers and the model thread.
//!
//! A request that passes its checks is pushed here; when `--queue` requests are already
//! waiting it is refused at once (429 with Retry-After) instead of waiting without bound.
//! The model thread takes what is waiting in one go ([`JobQueue::next_batch`]), so requests
//! that arrive together are decoded together.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// A queue of at most `capacity` waiting items (those being served are not counted).
pub struct JobQueue<T> {
    capacity: usize,
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    waiting: VecDeque<T>,
    closed: bool,
}

/// Why an item was not queued (it comes back).
#[derive(Debug)]
pub enum Refused<T> {
    Full(T),
    Closed(T),
}

impl<T> JobQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock was held leaves a VecDeque that is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `item`, or gives it back at once when the queue is full or closed.
    pub fn try_push(&self, item: T) -> Result<(), Refused<T>> {
        let mut s = self.lock();
        if s.closed {
            return Err(Refused::Closed(item));
        }
        if s.waiting.len() >= self.capacity {
            return Err(Refused::Full(item));
        }
        s.waiting.push_back(item);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Waits for an item, then takes it and the items right behind it that `joins(first,
    /// next)` accepts, up to `most` in all, in queue order. `None` once the queue is closed
    /// and empty.
    pub fn next_batch(&self, most: usize, joins: impl Fn(&T, &T) -> bool) -> Option<Vec<T>> {
        let mut s = self.lock();
        loop {
            if let Some(first) = s.waiting.pop_front() {
                let mut batch = vec![first];
                while batch.len() < most.max(1) {
                    match s.waiting.front() {
                        Some(next) if joins(&batch[0], next) => {
                            batch.extend(s.waiting.pop_front());
                        }
                        _ => break,
                    }
                }
                return Some(batch);
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Refuses new items and wakes the taker; items already waiting are still taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_full_queue_refuses_at_once_and_gives_the_item_back() {
        let q = JobQueue::new(2);
        q.try_push(1).unwrap();
        q.try_push(2).unwrap();
        match q.try_push(3) {
            Err(Refused::Full(3)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_batch_takes_what_joins_in_order() {
        let q = JobQueue::new(10);
        for x in [2, 4, 6, 7, 8] {
            q.try_push(x).unwrap();
        }
        let even = |a: &i32, b: &i32| a % 2 == b % 2;
        assert_eq!(q.next_batch(2, even), Some(vec![2, 4]));
        assert_eq!(q.next_batch(5, even), Some(vec![6]));
        assert_eq!(q.next_batch(5, even), Some(vec![7]));
        assert_eq!(q.next_batch(5, even), Some(vec![8]));
    }

    #[test]
    fn the_taker_waits_for_an_item_and_ends_when_closed() {
        let q = Arc::new(JobQueue::new(4));
        let taker = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(b) = q.next_batch(4, |_, _| true) {
                    got.extend(b);
                }
                got
            })
        };
        q.try_push(5).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.try_push(6).unwrap();
        q.close();
        assert!(matches!(q.try_push(7), Err(Refused::Closed(7))));
        let got = taker.join().unwrap();
        assert_eq!(got, vec![5, 6]);
    }
}
