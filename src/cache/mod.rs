//! The binding cache: what is true about which subscriber holds which address and prefix.
//!
//! Inputs are [`Observation`]s (from the snooper, the requestor, bulk leasequery and the state
//! file) and [`Withdrawal`]s (released/declined leases, operator `clear`). The pure merge rules in
//! [`merge`] decide what is true (RFC 5007 §4.3.4 plus our documented extensions); the
//! [`store::BindingStore`] holds the result in concurrent indexes; [`expiry`] removes what lapses;
//! [`task`] is the tokio shell that serialises writes and emits an ordered, bounded [`Change`]
//! stream for the route installer; [`persist`] keeps a crash-safe state file.

pub(crate) mod binding;
pub(crate) mod expiry;
pub mod from_wire;
pub(crate) mod hash;
mod hugemem;
pub mod merge;
pub mod persist;
mod slab;
pub(crate) mod store;
mod table;
mod tagindex;
pub mod task;

pub use binding::{
    Change, ChangeKind, ClientInfo, INFINITE_LIFETIME, IaType, Lease, LeaseKey, Link, Observation,
    ObservedLease, RelayData, RouteView, ServerId, Source, Sweep, Timestamp, WithdrawReason,
    Withdrawal,
};
pub use merge::{CltCheck, MergeConfig, Verdict};
pub use store::{BindingStore, CacheConfig};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The agent clock: Unix time read once at start, advanced by the monotonic clock.
///
/// It never steps backwards while the agent runs (NTP steps do not move deadlines), and its
/// values are Unix milliseconds, so deadlines written to the state file mean the same after a
/// reboot (up to the wall-clock error at the two starts). It reads tokio's clock, so tests with
/// paused time move it too.
#[derive(Debug, Clone, Copy)]
pub struct AgentClock {
    start: Instant,
    unix_ms_at_start: i64,
}

impl AgentClock {
    pub fn new() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        AgentClock {
            start: Instant::now(),
            unix_ms_at_start: unix_ms,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// The monotonic instant of an agent-clock value (e.g. to sleep until a deadline, or for
    /// `RouteSpec::valid_until`); `None` for [`Timestamp::NEVER`], `start` for the past.
    pub fn instant_of(&self, t: Timestamp) -> Option<Instant> {
        if t == Timestamp::NEVER {
            return None;
        }
        let ms = t.millis().saturating_sub(self.unix_ms_at_start).max(0);
        Some(self.start + Duration::from_millis(ms as u64))
    }

    /// The agent-clock value of a monotonic instant (e.g. a packet's capture time).
    pub fn at_std(&self, t: std::time::Instant) -> Timestamp {
        self.at(Instant::from_std(t))
    }

    /// The agent-clock value of a monotonic instant (e.g. a packet's capture time).
    pub fn at(&self, t: Instant) -> Timestamp {
        let elapsed = t.saturating_duration_since(self.start).as_millis();
        Timestamp::from_millis(
            self.unix_ms_at_start
                .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX)),
        )
    }
}

impl Default for AgentClock {
    fn default() -> Self {
        AgentClock::new()
    }
}
