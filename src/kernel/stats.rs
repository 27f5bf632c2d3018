//! What the installer did, as atomics keyed by [`RouteCounter`].
//!
//! Shared as `Arc<InstallerStats>`: the installer bumps them, `daemon::export` reads them in
//! place at each scrape (the counters by [`InstallerStats::get`], the route gauges from a
//! [`StatsSnapshot`]); the enum is the label.

use crate::label::labels;
use crate::time::Duration;
use std::sync::atomic::{AtomicU64, Ordering};

labels! {
    /// Monotonic counters, one per event kind.
    pub enum RouteCounter {
        /// Routes added.
        Installed => "installed",
        /// Routes replaced (changed next hop or interface, or EEXIST on a route of ours).
        Replaced => "replaced",
        /// Routes deleted (or found already gone).
        Withdrawn => "withdrawn",
        /// Routes parked because their link had no interface.
        Parked => "parked",
        /// Parked routes whose interface appeared.
        Unparked => "unparked",
        /// Ops the kernel refused or left unanswered (each is retried).
        Failed => "failed",
        /// Retries sent.
        Retried => "retried",
        /// EEXIST from a route of another protocol at our destination and metric: left alone.
        Conflict => "conflict",
        /// Batches whose acknowledgement did not come within the ack timeout.
        AckTimeout => "ack_timeout",
        /// Netlink receive overruns (ENOBUFS); each triggers a re-dump.
        Overrun => "overrun",
        /// Full reconciles run.
        Reconcile => "reconcile",
        /// Ops only logged because of dry-run.
        DryRun => "dry_run",
        /// Upserts refused because the desired set was at its bound (kept aside, bounded, for
        /// re-admission).
        Dropped => "dropped",
        /// Refused upserts taken into the desired set when a withdrawal made room.
        Readmitted => "readmitted",
        /// Inherited routes (kept from before the start) that a cache binding came to explain.
        Adopted => "adopted",
        /// Inherited routes deleted because nothing explained them when inheritance ended
        /// (routes without a kernel expiry).
        Unconfirmed => "unconfirmed",
        /// Inherited routes removed at their kernel expiry, nothing having explained them.
        InheritedExpired => "inherited_expired",
        /// Inherited routes withdrawn because a RELEASE/DECLINE or zero lifetime from their
        /// link, or a server's answer, said nobody holds them.
        InheritedReleased => "inherited_released",
        /// Releases of an inherited route from another link than its interface's: kept.
        InheritedOtherLink => "inherited_other_link",
        /// Zero lifetimes for an inherited route via a next hop, answered to a client at
        /// another address on its link: kept.
        InheritedOtherNextHop => "inherited_other_next_hop",
    }
}

impl RouteCounter {
    fn index(self) -> usize {
        self as usize
    }
}

/// Live counters and gauges of one installer.
#[derive(Debug, Default)]
pub struct InstallerStats {
    counters: [AtomicU64; RouteCounter::ALL.len()],
    installed_now: AtomicU64,
    parked_now: AtomicU64,
    inherited_now: AtomicU64,
    batches: AtomicU64,
    batch_latency_us_sum: AtomicU64,
    batch_latency_us_max: AtomicU64,
    batch_observer: BatchObserver,
    /// Bumped by the route task every loop turn and while idle (the watchdog's proof).
    pub heartbeat: crate::notify::Heartbeat,
}

/// Called with each batch's latency (the daemon feeds its netlink histogram with it).
#[derive(Default)]
struct BatchObserver(std::sync::OnceLock<Box<dyn Fn(Duration) + Send + Sync>>);

impl std::fmt::Debug for BatchObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "BatchObserver(set)"
        } else {
            "BatchObserver(none)"
        })
    }
}

/// A copy of the stats at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub counters: Vec<(RouteCounter, u64)>,
    /// Routes of ours the installer believes are in the kernel.
    pub installed_now: u64,
    /// Routes waiting for their link.
    pub parked_now: u64,
    /// Routes kept from before the start that nothing explains yet.
    pub inherited_now: u64,
    /// Batches sent and acknowledged (or timed out).
    pub batches: u64,
    /// Sum and maximum of send-to-acknowledgement time per batch.
    pub batch_latency_sum: Duration,
    pub batch_latency_max: Duration,
}

impl StatsSnapshot {
    pub fn get(&self, c: RouteCounter) -> u64 {
        self.counters
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(0, |(_, v)| *v)
    }
}

impl InstallerStats {
    pub fn add(&self, c: RouteCounter, n: u64) {
        self.counters[c.index()].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, c: RouteCounter) -> u64 {
        self.counters[c.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn set_gauges(&self, installed: usize, parked: usize, inherited: usize) {
        self.installed_now
            .store(installed as u64, Ordering::Relaxed);
        self.parked_now.store(parked as u64, Ordering::Relaxed);
        self.inherited_now
            .store(inherited as u64, Ordering::Relaxed);
    }

    pub(crate) fn batch_done(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_latency_us_sum.fetch_add(us, Ordering::Relaxed);
        self.batch_latency_us_max.fetch_max(us, Ordering::Relaxed);
        if let Some(f) = self.batch_observer.0.get() {
            f(latency);
        }
    }

    /// Have `f` see every batch's send-to-acknowledgement time (set once; later calls are
    /// ignored and return false).
    pub fn observe_batches(&self, f: impl Fn(Duration) + Send + Sync + 'static) -> bool {
        self.batch_observer.0.set(Box::new(f)).is_ok()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            counters: RouteCounter::ALL
                .iter()
                .map(|c| (*c, self.get(*c)))
                .collect(),
            installed_now: self.installed_now.load(Ordering::Relaxed),
            parked_now: self.parked_now.load(Ordering::Relaxed),
            inherited_now: self.inherited_now.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            batch_latency_sum: Duration::from_micros(
                self.batch_latency_us_sum.load(Ordering::Relaxed),
            ),
            batch_latency_max: Duration::from_micros(
                self.batch_latency_us_max.load(Ordering::Relaxed),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_labels() {
        let s = InstallerStats::default();
        s.add(RouteCounter::Parked, 2);
        s.add(RouteCounter::Dropped, 1);
        s.batch_done(Duration::from_millis(3));
        s.batch_done(Duration::from_millis(1));
        let snap = s.snapshot();
        assert_eq!(snap.get(RouteCounter::Parked), 2);
        assert_eq!(snap.get(RouteCounter::Dropped), 1);
        assert_eq!(snap.get(RouteCounter::Installed), 0);
        assert_eq!(snap.batches, 2);
        assert_eq!(snap.batch_latency_max, Duration::from_millis(3));
        let labels: std::collections::HashSet<_> =
            RouteCounter::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), RouteCounter::ALL.len());
        for (i, c) in RouteCounter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
