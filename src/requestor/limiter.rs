//! What keeps the requestor's query volume low on a box that sees hostile traffic
//! (RFC 5007 §5: "the requestor SHOULD limit the rate of leasequery messages", negative caching):
//! token buckets (one global, one per link) and a negative cache, with exponential backoff, of
//! lookups that ended without a binding. Every structure here is bounded; time comes in as an
//! argument.

use crate::time::{Duration, Instant};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::Ipv6Addr;

/// A rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Bucket size: how many queries may go at once after a quiet spell.
    pub burst: f64,
}

/// A token bucket: `burst` tokens, refilled at `per_sec`, one token per query.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub(crate) fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: rate.burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate.per_sec).min(self.rate.burst);
        self.last = self.last.max(now);
    }

    /// Take one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Give back a token taken for a query that was refused later on.
    pub(crate) fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.rate.burst);
    }

    /// Whether the bucket has refilled completely (an idle link: safe to forget).
    pub(crate) fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.rate.burst
    }
}

/// One token bucket per link-address, at most `max_links` of them. When the table is full,
/// buckets that have refilled (idle links) are forgotten first; if none has, the query is
/// refused rather than the table growing.
#[derive(Debug)]
pub(crate) struct LinkBuckets {
    rate: Rate,
    max_links: usize,
    buckets: HashMap<Ipv6Addr, TokenBucket>,
}

/// Why a per-link bucket refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkRefusal {
    /// This link used up its rate.
    Empty,
    /// Too many links are busy at once to track another.
    TableFull,
}

impl LinkBuckets {
    pub(crate) fn new(rate: Rate, max_links: usize) -> Self {
        LinkBuckets {
            rate,
            max_links: max_links.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Take a token for `link`.
    pub(crate) fn try_take(&mut self, now: Instant, link: Ipv6Addr) -> Result<(), LinkRefusal> {
        if !self.buckets.contains_key(&link) && self.buckets.len() >= self.max_links {
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= self.max_links {
                return Err(LinkRefusal::TableFull);
            }
        }
        let rate = self.rate;
        let bucket = self
            .buckets
            .entry(link)
            .or_insert_with(|| TokenBucket::new(rate, now));
        if bucket.try_take(now) {
            Ok(())
        } else {
            Err(LinkRefusal::Empty)
        }
    }

    /// How many links are tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The negative cache (RFC 5007 §5): lookups that ended without a binding — "no binding" from
/// every server asked, an error status, or silence — are answered locally for a while instead of
/// being asked again for every packet a flood of unknown sources brings.
///
/// Backoff: the first failure of a key is remembered for `base`; each further failure that comes
/// while the key is still known (within `base × max_factor` of its last expiry) doubles that, up
/// to `base × max_factor`. A key quiet for that long starts again from `base`; a binding found
/// for it forgets it at once ([`remove`](Self::remove)).
///
/// Bounded: at most `capacity` keys. Making room evicts the least recently failed key (the
/// front of a recording-order queue) and counts it in [`evicted`](Self::evicted); the queue's
/// stale entries (keys recorded again later) are compacted so it stays within `2 × capacity`.
#[derive(Debug)]
pub(crate) struct NegativeCache<K, V> {
    base: Duration,
    max_factor: u32,
    capacity: usize,
    entries: HashMap<K, Negative<V>>,
    /// (recording sequence, key), oldest first; an entry is current when its sequence matches.
    order: VecDeque<(u64, K)>,
    seq: u64,
    evicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Negative<V> {
    value: V,
    /// Answered locally until then.
    until: Instant,
    /// The failure count is forgotten after then (a quiet key starts afresh).
    forget: Instant,
    /// Failures in a row (1 for the first).
    strikes: u32,
    seq: u64,
}

impl<K: Hash + Eq + Clone, V: Copy> NegativeCache<K, V> {
    /// `base` is the first failure's time (zero disables the cache), doubled per repeated
    /// failure up to `base × max_factor` (at least 1×).
    pub(crate) fn new(base: Duration, max_factor: u32, capacity: usize) -> Self {
        NegativeCache {
            base,
            max_factor: max_factor.max(1),
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            evicted: 0,
        }
    }

    fn cap(&self) -> Duration {
        self.base.saturating_mul(self.max_factor)
    }

    /// Forget keys quiet for long enough, oldest first (stops at the first one still known:
    /// recording order is close to expiry order, and capacity bounds the rest).
    pub(crate) fn purge(&mut self, now: Instant) {
        while let Some((seq, key)) = self.order.front() {
            match self.entries.get(key) {
                Some(e) if e.seq == *seq && e.forget > now => break,
                Some(e) if e.seq == *seq => {
                    self.entries.remove(key);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// `key` failed again at `now` with `value`: remember it and return for how long it is
    /// answered locally (zero when the cache is disabled).
    pub(crate) fn record(&mut self, now: Instant, key: K, value: V) -> Duration {
        if self.base.is_zero() || self.capacity == 0 {
            return Duration::ZERO;
        }
        self.purge(now);
        let strikes = match self.entries.get(&key) {
            Some(e) if e.forget > now => e.strikes.saturating_add(1),
            _ => 1,
        };
        while self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let Some((seq, old)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&old);
                self.evicted += 1;
            }
        }
        let factor = 1u32
            .checked_shl(strikes.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX)
            .min(self.max_factor);
        let ttl = self.base.saturating_mul(factor);
        self.seq += 1;
        let until = now + ttl;
        self.entries.insert(
            key.clone(),
            Negative {
                value,
                until,
                forget: until + self.cap(),
                strikes,
                seq: self.seq,
            },
        );
        self.order.push_back((self.seq, key));
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(seq, k)| entries.get(k).is_some_and(|e| e.seq == *seq));
        }
        ttl
    }

    /// The remembered failure for `key` when it is still answered locally at `now`.
    pub(crate) fn get(&self, now: Instant, key: &K) -> Option<V> {
        self.entries
            .get(key)
            .filter(|e| e.until > now)
            .map(|e| e.value)
    }

    /// Failures in a row remembered for `key` (0 when none).
    pub(crate) fn strikes(&self, now: Instant, key: &K) -> u32 {
        self.entries
            .get(key)
            .filter(|e| e.forget > now)
            .map_or(0, |e| e.strikes)
    }

    /// Forget `key` (a binding for it was found).
    pub(crate) fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Keys held now (answered locally or still counting strikes).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys evicted to make room since the start.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            Rate {
                per_sec: 10.0,
                burst: 3.0,
            },
            t0,
        );
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0), "burst of 3 used up");
        assert!(!b.try_take(t0 + ms(50)), "half a token after 50 ms");
        assert!(b.try_take(t0 + ms(100)), "one token per 100 ms");
        assert!(!b.try_take(t0 + ms(100)));
        assert!(b.is_full(t0 + ms(500)));
    }

    #[test]
    fn link_buckets_are_separate_and_bounded() {
        let t0 = Instant::now();
        let rate = Rate {
            per_sec: 1.0,
            burst: 1.0,
        };
        let mut l = LinkBuckets::new(rate, 2);
        let a: Ipv6Addr = "2001:db8:a::".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:b::".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:c::".parse().unwrap();
        assert_eq!(l.try_take(t0, a), Ok(()));
        assert_eq!(l.try_take(t0, a), Err(LinkRefusal::Empty));
        assert_eq!(l.try_take(t0, b), Ok(()), "another link has its own bucket");
        assert_eq!(l.try_take(t0, c), Err(LinkRefusal::TableFull));
        assert_eq!(l.len(), 2);
        // After a second both refilled: idle buckets are forgotten to make room.
        assert_eq!(l.try_take(t0 + ms(1000), c), Ok(()));
        assert!(l.len() <= 2);
    }

    /// One step of a backoff script: at `t` ms, key `k` either fails (`Fail`, expecting the
    /// returned time in ms) or is looked up (`Hit`/`Miss`).
    enum Step {
        Fail(u64, u32, u64),
        Hit(u64, u32),
        Miss(u64, u32),
        Found(u32),
    }

    #[test]
    fn negative_cache_backs_off_per_key_and_caps() {
        use Step::*;
        // base 1 s, cap 4×: 1, 2, 4, 4 s; a key quiet for 4 s past its expiry starts afresh;
        // a binding found forgets it; another key has its own count.
        let script = [
            Fail(0, 1, 1000),
            Hit(999, 1),
            Miss(1000, 1),
            Fail(1000, 1, 2000),
            Hit(2999, 1),
            Miss(3000, 1),
            Fail(3000, 1, 4000),
            Fail(7000, 1, 4000),
            Fail(11_000, 1, 4000),
            Fail(11_000, 2, 1000),
            Hit(14_999, 1),
            Miss(15_000, 1),
            Fail(19_000, 1, 1000), // quiet 4 s (cap) after expiry at 15 s: forgotten
            Found(1),
            Miss(19_001, 1),
            Fail(19_001, 1, 1000),
        ];
        let t0 = Instant::now();
        let mut n: NegativeCache<u32, &str> = NegativeCache::new(ms(1000), 4, 16);
        for (i, step) in script.iter().enumerate() {
            match *step {
                Fail(t, k, want) => {
                    assert_eq!(n.record(t0 + ms(t), k, "x"), ms(want), "step {i}");
                }
                Hit(t, k) => assert_eq!(n.get(t0 + ms(t), &k), Some("x"), "step {i}"),
                Miss(t, k) => assert_eq!(n.get(t0 + ms(t), &k), None, "step {i}"),
                Found(k) => n.remove(&k),
            }
        }
    }

    #[test]
    fn negative_cache_is_bounded_and_counts_evictions() {
        let t0 = Instant::now();
        let mut n = NegativeCache::new(ms(1000), 16, 2);
        n.record(t0, 1u32, ());
        n.record(t0 + ms(10), 2, ());
        n.record(t0 + ms(20), 3, ());
        assert_eq!(n.len(), 2, "capacity 2: oldest evicted");
        assert_eq!(n.evicted(), 1);
        assert_eq!(n.get(t0 + ms(20), &1), None);
        assert_eq!(n.get(t0 + ms(20), &3), Some(()));
        // Re-recording refreshes a key: its stale queue entry does not evict it, and the queue
        // stays bounded.
        for i in 0..100 {
            n.record(t0 + ms(30 + i), 2, ());
        }
        assert_eq!(n.get(t0 + ms(200), &2), Some(()));
        assert_eq!(n.get(t0 + ms(200), &3), Some(()));
        assert!(n.order.len() <= 4, "queue stays bounded: {}", n.order.len());
        assert_eq!(n.evicted(), 1);
        // Quiet keys are purged once their strikes are forgotten.
        n.purge(t0 + ms(1_000_000));
        assert!(n.is_empty());
    }

    #[test]
    fn zero_ttl_disables() {
        let t0 = Instant::now();
        let mut n = NegativeCache::new(Duration::ZERO, 16, 10);
        assert_eq!(n.record(t0, 1u8, ()), Duration::ZERO);
        assert_eq!(n.get(t0, &1), None);
    }
}
