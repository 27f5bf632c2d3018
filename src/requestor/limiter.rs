//! What keeps the requestor's query volume low on a box that sees hostile traffic
//! (RFC 5007 §5: "the requestor SHOULD limit the rate of leasequery messages", negative caching):
//! token buckets (one global, one per link) and a negative cache of lookups that found no
//! binding. Every structure here is bounded; time comes in as an argument.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

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
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: Rate, now: Instant) -> Self {
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
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Give back a token taken for a query that was refused later on.
    pub fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.rate.burst);
    }

    /// Whether the bucket has refilled completely (an idle link: safe to forget).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.rate.burst
    }
}

/// One token bucket per link-address, at most `max_links` of them. When the table is full,
/// buckets that have refilled (idle links) are forgotten first; if none has, the query is
/// refused rather than the table growing.
#[derive(Debug)]
pub struct LinkBuckets {
    rate: Rate,
    max_links: usize,
    buckets: HashMap<Ipv6Addr, TokenBucket>,
}

/// Why a per-link bucket refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// This link used up its rate.
    Empty,
    /// Too many links are busy at once to track another.
    TableFull,
}

impl LinkBuckets {
    pub fn new(rate: Rate, max_links: usize) -> Self {
        LinkBuckets {
            rate,
            max_links: max_links.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Take a token for `link`.
    pub fn try_take(&mut self, link: Ipv6Addr, now: Instant) -> Result<(), LinkRefusal> {
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
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Remembers keys (lookups that found no binding) for `ttl`, at most `capacity` of them; the
/// oldest entry is evicted to make room. Entries all live the same `ttl`, so insertion order
/// is expiry order and a queue indexes it.
#[derive(Debug)]
pub struct NegativeCache<K> {
    ttl: Duration,
    capacity: usize,
    expiry: HashMap<K, Instant>,
    order: VecDeque<(Instant, K)>,
}

impl<K: Hash + Eq + Clone> NegativeCache<K> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        NegativeCache {
            ttl,
            capacity,
            expiry: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Drop entries whose time is up.
    pub fn purge(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            let Some((at, key)) = self.order.pop_front() else {
                break;
            };
            // Only remove when this queue entry is the key's current one (it may be re-inserted).
            if self.expiry.get(&key) == Some(&at) {
                self.expiry.remove(&key);
            }
        }
    }

    /// Remember `key` as unbound until `now + ttl`. A zero TTL or capacity disables the cache.
    pub fn insert(&mut self, key: K, now: Instant) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        self.purge(now);
        while self.expiry.len() >= self.capacity && !self.expiry.contains_key(&key) {
            let Some((at, old)) = self.order.pop_front() else {
                break;
            };
            if self.expiry.get(&old) == Some(&at) {
                self.expiry.remove(&old);
            }
        }
        let at = now + self.ttl;
        self.expiry.insert(key.clone(), at);
        self.order.push_back((at, key));
        // Re-inserted keys leave stale queue entries behind; keep the queue bounded too.
        if self.order.len() > 2 * self.capacity {
            let expiry = &self.expiry;
            self.order.retain(|(at, k)| expiry.get(k) == Some(at));
        }
    }

    /// Whether `key` is known unbound at `now`.
    pub fn contains(&mut self, key: &K, now: Instant) -> bool {
        match self.expiry.get(key) {
            Some(at) if *at > now => true,
            Some(_) => {
                self.purge(now);
                false
            }
            None => false,
        }
    }

    /// Forget `key` (e.g. a binding for it was learnt some other way).
    pub fn remove(&mut self, key: &K) {
        self.expiry.remove(key);
    }

    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
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
        assert_eq!(l.try_take(a, t0), Ok(()));
        assert_eq!(l.try_take(a, t0), Err(LinkRefusal::Empty));
        assert_eq!(l.try_take(b, t0), Ok(()), "another link has its own bucket");
        assert_eq!(l.try_take(c, t0), Err(LinkRefusal::TableFull));
        assert_eq!(l.len(), 2);
        // After a second both refilled: idle buckets are forgotten to make room.
        assert_eq!(l.try_take(c, t0 + ms(1000)), Ok(()));
        assert!(l.len() <= 2);
    }

    #[test]
    fn negative_cache_expires_and_is_bounded() {
        let t0 = Instant::now();
        let mut n = NegativeCache::new(ms(1000), 2);
        n.insert(1u32, t0);
        assert!(n.contains(&1, t0 + ms(999)));
        assert!(!n.contains(&1, t0 + ms(1000)), "expired at ttl");
        assert!(n.is_empty());
        n.insert(1, t0);
        n.insert(2, t0 + ms(10));
        n.insert(3, t0 + ms(20));
        assert_eq!(n.len(), 2, "capacity 2: oldest evicted");
        assert!(!n.contains(&1, t0 + ms(20)));
        assert!(n.contains(&3, t0 + ms(20)));
        // Re-inserting refreshes the expiry and the stale queue entry does not evict it.
        n.insert(2, t0 + ms(900));
        n.purge(t0 + ms(1015));
        assert!(n.contains(&2, t0 + ms(1015)));
        for i in 0..100 {
            n.insert(2, t0 + ms(1000 + i));
        }
        assert!(n.order.len() <= 4, "queue stays bounded: {}", n.order.len());
    }

    #[test]
    fn zero_ttl_disables() {
        let t0 = Instant::now();
        let mut n = NegativeCache::new(Duration::ZERO, 10);
        n.insert(1u8, t0);
        assert!(!n.contains(&1, t0));
    }
}
