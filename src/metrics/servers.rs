//! What each configured DHCPv6 server last did for us: the data behind `lqagent show servers`
//! and the `lqagent_server_up` / `lqagent_server_last_success_timestamp_seconds` families an
//! operator alerts on.
//!
//! Fed from the places that already see every answer (on-demand queries, bulk queries) by
//! server name; the two gauge families are set as events arrive, so a scrape needs no hook.
//! `up` is about reachability: 1 while the most recent exchange with the server got a reply of
//! any kind (also "no binding" or an error status), 0 after one that got none. A server not
//! asked anything yet counts as up: nothing says otherwise, and an idle standby must not alert.

use crate::label::labels;
use crate::time::{Duration, SystemTime};
use std::net::Ipv6Addr;
use std::sync::Mutex;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::{GaugeF64, ServerLabels};

/// How one exchange with a server ended, as far as its health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// A usable answer (a binding, or "no binding").
    Success,
    /// A reply, but an error status (NotAllowed, MalformedQuery, …): reachable, not useful.
    ErrorStatus,
    /// No reply after every retransmission, or it could not be sent.
    NoAnswer,
}

labels! {
    /// Last bulk leasequery result of a server.
    pub enum BulkStatus {
        /// No bulk query to it has finished yet.
        Never => "never",
        Complete => "complete",
        Failed => "failed",
        GaveUp => "gave_up",
    }
}

/// One server's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerState {
    pub name: String,
    pub address: Ipv6Addr,
    pub up: bool,
    /// When the server last replied at all.
    pub last_answer: Option<SystemTime>,
    /// When it last gave a usable answer ([`Exchange::Success`] or a completed bulk query).
    pub last_success: Option<SystemTime>,
    /// Round-trip time of its last reply (first transmission to answer).
    pub last_rtt: Option<Duration>,
    /// Exchanges without a reply since the last reply.
    pub consecutive_failures: u64,
    /// Exchanges without a reply, ever.
    pub failures: u64,
    /// Exchanges, ever.
    pub exchanges: u64,
    pub bulk: BulkStatus,
    pub bulk_at: Option<SystemTime>,
}

/// Every configured server's [`ServerState`], plus the gauges mirroring it.
#[derive(Debug, Default)]
pub struct ServerHealth {
    servers: Mutex<Vec<ServerState>>,
    pub(super) up: Family<ServerLabels, Gauge>,
    pub(super) last_success: Family<ServerLabels, GaugeF64>,
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl ServerHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ServerState>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn labels(name: &str) -> ServerLabels {
        ServerLabels {
            server: name.to_string(),
        }
    }

    /// Declare the configured servers (name, address), in order: each starts up, never answered.
    /// Servers already known keep their state (a reload).
    pub fn configure(&self, servers: impl IntoIterator<Item = (String, Ipv6Addr)>) {
        let mut v = self.lock();
        let old = std::mem::take(&mut *v);
        for (name, address) in servers {
            let s = old
                .iter()
                .find(|s| s.name == name && s.address == address)
                .cloned()
                .unwrap_or_else(|| ServerState {
                    name: name.clone(),
                    address,
                    up: true,
                    last_answer: None,
                    last_success: None,
                    last_rtt: None,
                    consecutive_failures: 0,
                    failures: 0,
                    exchanges: 0,
                    bulk: BulkStatus::Never,
                    bulk_at: None,
                });
            self.up
                .get_or_create(&Self::labels(&name))
                .set(i64::from(s.up));
            self.last_success
                .get_or_create(&Self::labels(&name))
                .set(s.last_success.map(unix_secs).unwrap_or(0.0));
            v.push(s);
        }
        for gone in old.iter().filter(|o| !v.iter().any(|s| s.name == o.name)) {
            self.up.remove(&Self::labels(&gone.name));
            self.last_success.remove(&Self::labels(&gone.name));
        }
    }

    /// Record one exchange with `server` (its configured name) that ended at `at`.
    pub fn record(&self, server: &str, exchange: Exchange, rtt: Duration, at: SystemTime) {
        let mut v = self.lock();
        let Some(s) = v.iter_mut().find(|s| s.name == server) else {
            return; // not a configured server (a reply from elsewhere is never counted here)
        };
        s.exchanges += 1;
        if exchange == Exchange::NoAnswer {
            s.failures += 1;
            s.consecutive_failures += 1;
            s.up = false;
        } else {
            s.consecutive_failures = 0;
            s.up = true;
            s.last_answer = Some(at);
            s.last_rtt = Some(rtt);
            if exchange == Exchange::Success {
                s.last_success = Some(at);
                self.last_success
                    .get_or_create(&Self::labels(server))
                    .set(unix_secs(at));
            }
        }
        self.up
            .get_or_create(&Self::labels(server))
            .set(i64::from(s.up));
    }

    /// Record the end of a bulk query to `server`; a completed one is also a successful exchange.
    pub fn bulk(&self, server: &str, status: BulkStatus, at: SystemTime) {
        if let Some(s) = self.lock().iter_mut().find(|s| s.name == server) {
            s.bulk = status;
            s.bulk_at = Some(at);
        }
        let exchange = match status {
            BulkStatus::Complete => Exchange::Success,
            BulkStatus::Failed => Exchange::ErrorStatus,
            BulkStatus::GaveUp | BulkStatus::Never => Exchange::NoAnswer,
        };
        if status != BulkStatus::Never {
            self.record(server, exchange, Duration::ZERO, at);
        }
    }

    /// Every configured server, in configuration order.
    pub fn snapshot(&self) -> Vec<ServerState> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> ServerHealth {
        let h = ServerHealth::default();
        h.configure([
            ("a".to_string(), "2001:db8::a".parse().unwrap()),
            ("b".to_string(), "2001:db8::b".parse().unwrap()),
        ]);
        h
    }

    fn up(h: &ServerHealth, name: &str) -> i64 {
        h.up.get_or_create(&ServerHealth::labels(name)).get()
    }

    #[test]
    fn no_answer_marks_down_until_any_reply() {
        let h = health();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(up(&h, "a"), 1, "not asked yet counts as up");
        h.record("a", Exchange::NoAnswer, Duration::ZERO, t);
        h.record("a", Exchange::NoAnswer, Duration::ZERO, t);
        let s = &h.snapshot()[0];
        assert!(!s.up);
        assert_eq!((s.consecutive_failures, s.failures, s.exchanges), (2, 2, 2));
        assert_eq!(up(&h, "a"), 0);
        h.record("a", Exchange::ErrorStatus, Duration::from_millis(3), t);
        let s = &h.snapshot()[0];
        assert!(s.up && s.consecutive_failures == 0 && s.failures == 2);
        assert_eq!(s.last_success, None, "an error status is not a success");
        assert_eq!(s.last_rtt, Some(Duration::from_millis(3)));
        h.record("a", Exchange::Success, Duration::from_millis(2), t);
        assert_eq!(h.snapshot()[0].last_success, Some(t));
        assert_eq!(
            h.last_success
                .get_or_create(&ServerHealth::labels("a"))
                .get(),
            1_000.0
        );
        assert_eq!(h.snapshot()[1].exchanges, 0, "b untouched");
    }

    #[test]
    fn unknown_servers_are_ignored_and_reload_keeps_state() {
        let h = health();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        h.record("nobody", Exchange::NoAnswer, Duration::ZERO, t);
        h.bulk("b", BulkStatus::Complete, t);
        h.configure([("b".to_string(), "2001:db8::b".parse().unwrap())]);
        let v = h.snapshot();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].bulk, BulkStatus::Complete);
        assert_eq!(v[0].last_success, Some(t));
    }
}
