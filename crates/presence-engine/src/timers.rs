//! One timer structure for every deadline in the engine: a min-heap of
//! (deadline, what) entries served by a single task. Stale entries (an endpoint
//! refreshed since, an instance republished) are recognised when they fire and skipped.

use crate::clock::Clock;
use parking_lot::Mutex;
use presence_model::{EndpointId, Timestamp, UserUri};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use tokio::sync::Notify;

/// Delay before a failed expiry (store unavailable) is tried again, in seconds.
pub const RETRY_SECS: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKey {
    /// Some `time` instance of this user may be due.
    Instances(UserUri),
    /// This endpoint's registration may be due.
    Endpoint(EndpointId),
}

#[derive(Default)]
struct Heap {
    entries: BinaryHeap<Reverse<(Timestamp, TimerKey)>>,
    /// The earliest deadline queued per key, so rescheduling the same deadline (every
    /// write of a user with a `time` instance does) adds nothing.
    earliest: HashMap<TimerKey, Timestamp>,
}

#[derive(Default)]
pub struct Timers {
    heap: Mutex<Heap>,
    changed: Notify,
}

impl Timers {
    pub fn schedule(&self, at: Timestamp, key: TimerKey) {
        let mut heap = self.heap.lock();
        if heap.earliest.get(&key).is_some_and(|t| *t <= at) {
            // An earlier firing re-schedules whatever is still pending then.
            return;
        }
        let earliest = heap.entries.peek().is_none_or(|Reverse((t, _))| at < *t);
        heap.earliest.insert(key.clone(), at);
        heap.entries.push(Reverse((at, key)));
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    pub fn pop_due(&self, now: Timestamp) -> Option<TimerKey> {
        let mut heap = self.heap.lock();
        match heap.entries.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                let Reverse((at, key)) = heap.entries.pop()?;
                if heap.earliest.get(&key) == Some(&at) {
                    heap.earliest.remove(&key);
                }
                Some(key)
            }
            _ => None,
        }
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.heap.lock().entries.len()
    }

    /// Sleeps until the earliest deadline or until an earlier one is scheduled.
    pub async fn wait(&self, clock: &Clock) {
        let next = self.heap.lock().entries.peek().map(|Reverse((at, _))| *at);
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(clock.instant_at(at)) => {}
                    _ = self.changed.notified() => {}
                }
            }
            None => self.changed.notified().await,
        }
    }
}
