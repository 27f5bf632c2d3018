//! Expiry without a timer per lease: one min-heap of (valid deadline, key).
//!
//! Entries are never removed from the middle. When a lease is refreshed its new deadline is pushed
//! and the old entry goes stale; a popped key counts only if its lease's valid deadline has passed
//! (the merge's `expire` checks). Stale entries are bounded: when the heap holds more than twice the
//! live leases (plus slack), the store rebuilds it from the live set. Infinite lifetimes are never
//! queued. Deadlines are kept as whole Unix seconds, rounded up (24-byte entries instead of 32 —
//! this heap holds one entry per lease), so a lease goes at most one second after its deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::binding::{LeaseKey, Timestamp};

/// A deadline-ordered queue of lease keys.
#[derive(Debug, Default)]
pub struct ExpiryQueue {
    heap: BinaryHeap<Reverse<(u32, LeaseKey)>>,
}

/// Whole seconds, rounded up, saturating to the u32 range.
fn ceil_secs(t: Timestamp) -> u32 {
    let s = t.millis().div_euclid(1000) + i64::from(t.millis().rem_euclid(1000) != 0);
    u32::try_from(s.max(0)).unwrap_or(u32::MAX)
}

fn from_secs(s: u32) -> Timestamp {
    Timestamp::from_secs(i64::from(s))
}

impl ExpiryQueue {
    pub fn new() -> Self {
        ExpiryQueue::default()
    }

    /// Queue `key` to be checked at `deadline` (ignored for [`Timestamp::NEVER`]).
    pub fn push(&mut self, deadline: Timestamp, key: LeaseKey) {
        if deadline != Timestamp::NEVER {
            self.heap.push(Reverse((ceil_secs(deadline), key)));
        }
    }

    /// The earliest queued deadline (possibly stale).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse((t, _))| from_secs(*t))
    }

    /// Pop every entry due at or before `now`, at most `limit` of them.
    pub fn pop_due(&mut self, now: Timestamp, limit: usize) -> Vec<(Timestamp, LeaseKey)> {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.heap.peek() {
                Some(Reverse((t, _))) if from_secs(*t) <= now => {
                    if let Some(Reverse((t, k))) = self.heap.pop() {
                        out.push((from_secs(t), k));
                    }
                }
                _ => break,
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Whether stale entries have piled up beyond twice `live`.
    pub fn needs_rebuild(&self, live: usize) -> bool {
        self.heap.len() > 2 * live + 1024
    }

    /// Replace the contents with exactly `live` (key, deadline) pairs.
    pub fn rebuild(&mut self, live: impl IntoIterator<Item = (Timestamp, LeaseKey)>) {
        let v: Vec<_> = live
            .into_iter()
            .filter(|(t, _)| *t != Timestamp::NEVER)
            .map(|(t, k)| Reverse((ceil_secs(t), k)))
            .collect();
        self.heap = BinaryHeap::from(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u16) -> LeaseKey {
        LeaseKey::Address(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n))
    }

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let mut q = ExpiryQueue::new();
        q.push(Timestamp::from_secs(30), k(3));
        q.push(Timestamp::from_secs(10), k(1));
        q.push(Timestamp::NEVER, k(9));
        q.push(Timestamp::from_secs(20), k(2));
        assert_eq!(q.len(), 3, "infinite lifetimes are not queued");
        assert_eq!(q.next_deadline(), Some(Timestamp::from_secs(10)));
        assert!(q.pop_due(Timestamp::from_secs(5), 10).is_empty());
        let due = q.pop_due(Timestamp::from_secs(20), 10);
        assert_eq!(
            due,
            vec![
                (Timestamp::from_secs(10), k(1)),
                (Timestamp::from_secs(20), k(2))
            ]
        );
        assert_eq!(q.pop_due(Timestamp::from_secs(99), 0), vec![]);
        assert_eq!(q.pop_due(Timestamp::from_secs(99), 10).len(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn deadlines_round_up_to_whole_seconds() {
        let mut q = ExpiryQueue::new();
        q.push(Timestamp::from_millis(10_500), k(1));
        assert_eq!(q.next_deadline(), Some(Timestamp::from_secs(11)));
        assert!(q.pop_due(Timestamp::from_millis(10_999), 10).is_empty());
        assert_eq!(q.pop_due(Timestamp::from_secs(11), 10).len(), 1);
    }

    #[test]
    fn rebuild_drops_stale_entries() {
        let mut q = ExpiryQueue::new();
        for i in 0..3000 {
            q.push(Timestamp::from_secs(i), k(1));
        }
        assert!(q.needs_rebuild(1));
        q.rebuild([(Timestamp::from_secs(5000), k(1))]);
        assert_eq!(q.len(), 1);
        assert!(!q.needs_rebuild(1));
    }
}
