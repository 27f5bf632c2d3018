//! Time for the whole agent: the agent clock, its instants, and the retry backoff.
//!
//! Every module takes its time types from here: [`Timestamp`] (agent-clock milliseconds, what
//! leases and the state file hold), [`Instant`] and [`Duration`] (the monotonic instant the
//! sans-IO cores are handed, `std`'s, so a core depends on no runtime), [`SystemTime`] (wall
//! clock for displays), and [`TokioInstant`] (the runtime's instant, which paused test time moves)
//! for the tokio shells' timers, whose cores are handed `into_std()` of it. Nothing else in the
//! crate names `std::time` or `tokio::time::Instant` (the architecture test holds it), so which
//! clock a module reads is decided here alone.
//!
//! One clock serves the cache, the requestor, bulk recovery, the route installer and the state
//! file, so all of them agree on what "now" and "expired" mean: [`AgentClock`] reads Unix time
//! once at start and advances it by the monotonic clock, and its values are [`Timestamp`]s (Unix
//! milliseconds). Pure cores never read a clock; they are handed `Timestamp`s or `Instant`s.
//! [`backoff`] is the one exponential backoff (doubling from a base, capped) every retry loop
//! that counts its attempts uses.

use std::time::UNIX_EPOCH;
pub use std::time::{Duration, Instant, SystemTime};
pub use tokio::time::Instant as TokioInstant;

use crate::wire::INFINITE_LIFETIME;

/// An instant on the agent clock, in milliseconds (Unix-aligned: see [`AgentClock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant that never comes: deadline of an infinite lifetime.
    pub const NEVER: Timestamp = Timestamp(i64::MAX);

    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn from_secs(s: i64) -> Self {
        Timestamp(s.saturating_mul(1000))
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds (floor), e.g. for comparing with a server's Unix-seconds value.
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// `self + lifetime`, where `0xffffffff` means [`Timestamp::NEVER`].
    pub fn after_lifetime(self, lifetime: u32) -> Timestamp {
        if lifetime == INFINITE_LIFETIME {
            Timestamp::NEVER
        } else {
            Timestamp(self.0.saturating_add(i64::from(lifetime) * 1000))
        }
    }

    /// `self - secs` seconds.
    pub fn minus_secs(self, secs: u32) -> Timestamp {
        Timestamp(self.0.saturating_sub(i64::from(secs) * 1000))
    }

    pub fn plus_millis(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Seconds left until `self`, seen from `now` (0 when past; `INFINITE_LIFETIME` for NEVER).
    pub fn remaining_secs(self, now: Timestamp) -> u32 {
        if self == Timestamp::NEVER {
            return INFINITE_LIFETIME;
        }
        let left = (self.0.saturating_sub(now.0)).max(0) / 1000;
        u32::try_from(left)
            .unwrap_or(INFINITE_LIFETIME - 1)
            .min(INFINITE_LIFETIME - 1)
    }
}

/// The agent clock: Unix time read once at start, advanced by the monotonic clock.
///
/// It never steps backwards while the agent runs (NTP steps do not move deadlines), and its
/// values are Unix milliseconds, so deadlines written to the state file mean the same after a
/// reboot (up to the wall-clock error at the two starts). It reads tokio's clock, so tests with
/// paused time move it too.
#[derive(Debug, Clone, Copy)]
pub struct AgentClock {
    start: TokioInstant,
    unix_ms_at_start: i64,
}

impl AgentClock {
    pub fn new() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        AgentClock {
            start: TokioInstant::now(),
            unix_ms_at_start: unix_ms,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.at(TokioInstant::now())
    }

    /// The monotonic instant of an agent-clock value (e.g. to sleep until a deadline, or for
    /// `RouteSpec::valid_until`); `None` for [`Timestamp::NEVER`], `start` for the past.
    pub fn instant_of(&self, t: Timestamp) -> Option<TokioInstant> {
        if t == Timestamp::NEVER {
            return None;
        }
        let ms = t.millis().saturating_sub(self.unix_ms_at_start).max(0);
        Some(self.start + Duration::from_millis(ms as u64))
    }

    /// The agent-clock value of a monotonic instant (e.g. a packet's capture time).
    pub fn at_std(&self, t: Instant) -> Timestamp {
        self.at(TokioInstant::from_std(t))
    }

    /// The agent-clock value of a monotonic instant (e.g. a packet's capture time).
    pub fn at(&self, t: TokioInstant) -> Timestamp {
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

/// Whole seconds of Unix wall-clock time now (0 if the system clock is before 1970); for names
/// and displays, never for deadlines (those use [`AgentClock`]).
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Delay before retry number `attempt` (0-based): `base · 2^attempt`, capped at `max`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(0, base, max), base);
        assert_eq!(backoff(1, base, max), Duration::from_secs(1));
        assert_eq!(backoff(3, base, max), Duration::from_secs(4));
        assert_eq!(backoff(10, base, max), max);
        assert_eq!(backoff(u32::MAX, base, max), max);
    }
}
