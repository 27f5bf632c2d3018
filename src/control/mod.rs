//! The local control socket: answers the operator's `show` / `clear` commands.
//!
//! Protocol: JSON lines over a Unix stream socket (default `/run/lqagent/control.sock`). The
//! client writes one [`Request`] object and a newline; the server answers with one [`Response`]
//! object and a newline, and may take further requests on the same connection.
//!
//! ```text
//! → {"command":"show_bindings","link":"cable1"}
//! ← {"status":"bindings","bindings":[{"network":"2001:db8:100::1a/128", ...}]}
//! → {"command":"clear_binding","target":"2001:db8:f100:100::/56"}
//! ← {"status":"cleared","removed":["2001:db8:f100:100::/56"]}
//! ```
//!
//! The server ([`server`]) knows nothing about the cache: the daemon supplies a [`Responder`]
//! that turns requests into answers, so this module is tested with a fake. The view types here
//! are plain data (strings for the cache's enums, via their `as_str()`), so the socket's format
//! does not change when the cache's internals do. Everything read from the socket is bounded
//! (line length, connections, time).

use std::future::Future;
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use crate::prefix::Ipv6Prefix;

pub mod client;
pub mod server;

/// A request from `lqagent show|clear`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every binding, or those of one link (by configured link name).
    ShowBindings {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<String>,
    },
    /// Counters and gauges.
    ShowStats,
    /// Forget the binding(s) covering `target` (an address or a delegated prefix) and withdraw
    /// their routes.
    ClearBinding {
        #[serde(with = "prefix_str")]
        target: Ipv6Prefix,
    },
}

/// The answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    Bindings {
        bindings: Vec<BindingView>,
    },
    Stats {
        stats: StatsView,
    },
    /// The leases removed (empty: nothing matched).
    Cleared {
        #[serde(with = "prefix_list")]
        removed: Vec<Ipv6Prefix>,
    },
    Error {
        message: String,
    },
}

/// One lease as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingView {
    /// The routed network: `ADDR/128` for an address, the delegated prefix otherwise.
    #[serde(with = "prefix_str")]
    pub network: Ipv6Prefix,
    /// `na`, `ta` or `pd`.
    pub ia_type: String,
    /// Configured link name, when the link is known.
    #[serde(default)]
    pub link: Option<String>,
    /// Local interface the route points out of, when known.
    #[serde(default)]
    pub interface: Option<String>,
    /// Client DUID, lowercase hex.
    pub client_duid: String,
    pub iaid: u32,
    /// For a delegated prefix: the client's address the route goes via (usually link-local).
    #[serde(default)]
    pub next_hop: Option<Ipv6Addr>,
    /// Seconds of preferred / valid lifetime left (`4294967295` = infinite).
    pub preferred_secs: u32,
    pub valid_secs: u32,
    /// Where the data came from: `snoop`, `leasequery`, `bulk`, `state`.
    pub source: String,
    /// Route state: `installed`, `parked`, `pending`, `dry_run`, `none`.
    pub route: String,
}

/// One counter or gauge series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Series name with labels, as in the metrics exposition: `lqagent_routes{state="installed"}`.
    pub series: String,
    pub value: f64,
}

/// `show stats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatsView {
    pub uptime_secs: u64,
    pub stats: Vec<Stat>,
}

impl StatsView {
    /// Build from a Prometheus/OpenMetrics text exposition (`Metrics::encode()`): every sample
    /// except histogram buckets, in order.
    pub fn from_exposition(uptime_secs: u64, text: &str) -> StatsView {
        let stats = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| !series.contains("_bucket{") && !series.ends_with("_bucket"))
            .filter_map(|(series, v)| {
                Some(Stat {
                    series: series.to_string(),
                    value: v.parse().ok()?,
                })
            })
            .collect();
        StatsView { uptime_secs, stats }
    }
}

/// What the daemon plugs into the control server: turns a request into a response.
/// `handle` runs on the control task; keep it short (read the cache, send a command to the
/// route task, await its answer).
pub trait Responder: Send + Sync + 'static {
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send;
}

/// Why the control socket or its client failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket {path}: {what} is not a socket; refusing to replace it")]
    NotASocket { path: String, what: &'static str },
    #[error("control socket: bad message: {0}")]
    Protocol(String),
    #[error("control socket: no answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// Counters of the control server, exported with `Metrics::register_stats`.
#[derive(Debug, Default)]
pub struct ControlStats {
    pub requests: std::sync::atomic::AtomicU64,
    pub bad_requests: std::sync::atomic::AtomicU64,
    pub oversized: std::sync::atomic::AtomicU64,
    pub rejected_connections: std::sync::atomic::AtomicU64,
    pub timeouts: std::sync::atomic::AtomicU64,
}

impl ControlStats {
    /// Export as `lqagent_control_events_total{event=...}`.
    pub fn register(self: &std::sync::Arc<Self>, metrics: &crate::metrics::Metrics) {
        let me = self.clone();
        metrics.register_stats(
            crate::metrics::names::CONTROL_EVENTS,
            "Control socket requests and refusals, by event",
            "event",
            move || me.snapshot(),
        );
    }

    /// `(label, count)` pairs for `lqagent_control_events_total{event=...}`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        vec![
            ("request", self.requests.load(Relaxed)),
            ("bad_request", self.bad_requests.load(Relaxed)),
            ("oversized", self.oversized.load(Relaxed)),
            (
                "rejected_connection",
                self.rejected_connections.load(Relaxed),
            ),
            ("timeout", self.timeouts.load(Relaxed)),
        ]
    }
}

/// `Ipv6Prefix` as its `ADDR/LEN` string.
mod prefix_str {
    use super::Ipv6Prefix;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(p: &Ipv6Prefix, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(p)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv6Prefix, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod prefix_list {
    use super::Ipv6Prefix;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Ipv6Prefix], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|p| p.to_string()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Ipv6Prefix>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_json_form() {
        let r = Request::ClearBinding {
            target: "2001:db8:f100:100::/56".parse().unwrap(),
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"{"command":"clear_binding","target":"2001:db8:f100:100::/56"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        assert_eq!(
            serde_json::to_string(&Request::ShowBindings { link: None }).unwrap(),
            r#"{"command":"show_bindings"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"reboot"}"#).is_err());
        assert!(
            serde_json::from_str::<Request>(r#"{"command":"clear_binding","target":"1.2.3.4"}"#)
                .is_err()
        );
    }

    #[test]
    fn stats_view_skips_buckets_and_comments() {
        let text = "# HELP a x\n# TYPE a counter\na_total 3\nh_bucket{le=\"1\"} 1\nh_count 1\nb{l=\"x y\"} 2.5\n# EOF\n";
        let v = StatsView::from_exposition(9, text);
        let series: Vec<_> = v
            .stats
            .iter()
            .map(|s| (s.series.as_str(), s.value))
            .collect();
        assert_eq!(
            series,
            vec![("a_total", 3.0), ("h_count", 1.0), ("b{l=\"x y\"}", 2.5)]
        );
    }
}
