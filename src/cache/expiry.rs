//! Expiry without a timer per lease: one min-heap of (valid deadline, where the lease sits).
//!
//! Entries are never removed from the middle. When a lease is refreshed its new deadline is pushed
//! and the old entry goes stale; when a lease is removed its table slot may later hold another
//! lease. So a popped entry only says "look at this slot": whatever lease is there counts only if
//! its own valid deadline has passed (the store and the merge's `expire` check). Every live lease
//! with a finite lifetime has an entry at its current deadline, so none is missed. Stale entries
//! are bounded: when the heap holds more than twice the live leases (plus slack), the store
//! rebuilds it from the live set. Infinite lifetimes are never queued.
//!
//! An entry is one `u64`, whole Unix seconds (rounded up) above a 32-bit [`SlotRef`]: this heap
//! holds at least one entry per lease, so 8 bytes instead of a 24-byte (seconds, key) pair save
//! ~16 bytes per lease. A lease goes at most one second after its deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::binding::Timestamp;
use super::storage::SlotRef;

/// A deadline-ordered queue of lease slots.
#[derive(Debug, Default)]
pub(crate) struct ExpiryQueue {
    heap: BinaryHeap<Reverse<u64>>,
}

fn entry(deadline: Timestamp, r: SlotRef) -> Reverse<u64> {
    Reverse((u64::from(ceil_secs(deadline)) << 32) | u64::from(r.0))
}

fn unpack(e: u64) -> (Timestamp, SlotRef) {
    (from_secs((e >> 32) as u32), SlotRef(e as u32))
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
    /// Queue slot `r` to be checked at `deadline` (ignored for [`Timestamp::NEVER`]).
    pub(crate) fn push(&mut self, deadline: Timestamp, r: SlotRef) {
        if deadline != Timestamp::NEVER {
            self.heap.push(entry(deadline, r));
        }
    }

    /// The earliest queued deadline (possibly stale).
    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse(e)| unpack(*e).0)
    }

    /// Pop every entry due at or before `now`, at most `limit` of them.
    pub(crate) fn pop_due(&mut self, now: Timestamp, limit: usize) -> Vec<(Timestamp, SlotRef)> {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.heap.peek() {
                Some(Reverse(e)) if unpack(*e).0 <= now => {
                    if let Some(Reverse(e)) = self.heap.pop() {
                        out.push(unpack(e));
                    }
                }
                _ => break,
            }
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Whether stale entries have piled up beyond twice `live`.
    pub(crate) fn needs_rebuild(&self, live: usize) -> bool {
        self.heap.len() > 2 * live + 1024
    }

    /// Replace the contents with exactly `live` (deadline, slot) pairs.
    pub(crate) fn rebuild(&mut self, live: impl IntoIterator<Item = (Timestamp, SlotRef)>) {
        let v: Vec<_> = live
            .into_iter()
            .filter(|(t, _)| *t != Timestamp::NEVER)
            .map(|(t, r)| entry(t, r))
            .collect();
        self.heap = BinaryHeap::from(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u32) -> SlotRef {
        SlotRef(n)
    }

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let mut q = ExpiryQueue::default();
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
        let mut q = ExpiryQueue::default();
        q.push(Timestamp::from_millis(10_500), k(1));
        assert_eq!(q.next_deadline(), Some(Timestamp::from_secs(11)));
        assert!(q.pop_due(Timestamp::from_millis(10_999), 10).is_empty());
        assert_eq!(q.pop_due(Timestamp::from_secs(11), 10).len(), 1);
    }

    #[test]
    fn rebuild_drops_stale_entries() {
        let mut q = ExpiryQueue::default();
        for i in 0..3000 {
            q.push(Timestamp::from_secs(i), k(1));
        }
        assert!(q.needs_rebuild(1));
        q.rebuild([(Timestamp::from_secs(5000), k(1))]);
        assert_eq!(q.len(), 1);
        assert!(!q.needs_rebuild(1));
    }
}
