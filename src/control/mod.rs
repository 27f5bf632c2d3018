//! The local control socket: answers the operator's `show` / `clear` commands.
//!
//! Protocol: JSON lines over a Unix stream socket (default `/run/lqagent/control.sock`). The
//! client writes one [`Request`] object and a newline; the server answers with one [`Response`]
//! object and a newline, and may take further requests on the same connection.
//!
//! ```text
//! → {"command":"show_bindings","link":"cable1"}
//! ← {"status":"bindings","bindings":[{"network":"2001:db8:100::1a/128", ...}]}
//! → {"command":"clear_bindings","within":"2001:db8:f100::/40","client_duid":"000300010200000000c1"}
//! ← {"status":"cleared","removed":["2001:db8:f100:100::/56"]}
//! → {"command":"show_servers"}
//! ← {"status":"servers","servers":[{"name":"dhcp-a","up":true, ...}]}
//! ```
//!
//! `show` and `clear` select bindings the way an operator thinks of them ([`BindingFilter`]):
//! by client DUID, link, interface, or a covering prefix, every given criterion applying. The
//! format is documented for scripts in the repository's `docs/control.md`; fields are only ever
//! added.
//!
//! The server ([`server`]) knows nothing about the cache: the daemon supplies a [`Responder`]
//! that turns requests into answers, so this module is tested with a fake. The view types here
//! are plain data (strings for the cache's enums, via their `label()`), so the socket's format
//! does not change when the cache's internals do. Everything read from the socket is bounded
//! (line length, connections, time). A large `show bindings` is streamed ([`Reply::Bindings`]):
//! the server writes each binding into the answer line as it comes, so neither side of the
//! daemon holds the whole answer (a million bindings would be hundreds of MB).

use std::future::Future;
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use crate::prefix::Ipv6Prefix;

pub mod access;
pub mod client;
pub mod server;
pub(crate) mod slots;

/// A request from `lqagent show|clear`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// The bindings the filter selects (an empty filter: every binding).
    ShowBindings(BindingFilter),
    /// Counters and gauges.
    ShowStats,
    /// Each configured server's state.
    ShowServers,
    /// Forget the bindings the filter selects and withdraw their routes. An empty filter is
    /// refused: clearing everything takes an explicit `within: "::/0"`.
    ClearBindings(BindingFilter),
    /// The older form of [`Request::ClearBindings`] with only `within: target`.
    ClearBinding {
        #[serde(with = "prefix_str")]
        target: Ipv6Prefix,
    },
}

impl Request {
    /// `show_bindings` of every binding.
    pub fn show_all() -> Request {
        Request::ShowBindings(BindingFilter::default())
    }
}

/// Which bindings a `show` or `clear` is about: a binding must match every criterion given; no
/// criterion selects every binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingFilter {
    /// Configured link name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Interface the route points out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Client DUID in hex (colons and case do not matter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_duid: Option<String>,
    /// Bindings whose network lies inside this prefix: a /48 selects the /56s delegated from it
    /// and the addresses in it. A /128 (an address) also selects the delegated prefix
    /// containing it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_prefix_str"
    )]
    pub within: Option<Ipv6Prefix>,
}

/// A DUID as lowercase hex without separators; `None` when it is not hex octets.
pub fn normalize_duid(s: &str) -> Option<String> {
    let digits: String = s
        .trim()
        .chars()
        .filter(|c| *c != ':' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (!digits.is_empty() && digits.len() % 2 == 0 && digits.chars().all(|c| c.is_ascii_hexdigit()))
        .then_some(digits)
}

impl BindingFilter {
    /// No criterion given.
    pub fn is_empty(&self) -> bool {
        self == &BindingFilter::default()
    }

    /// The filter's DUID in [`normalize_duid`] form; an error names what is wrong.
    pub fn duid(&self) -> Result<Option<String>, String> {
        match &self.client_duid {
            None => Ok(None),
            Some(d) => normalize_duid(d)
                .map(Some)
                .ok_or_else(|| format!("client_duid: not hex octets: {d:?}")),
        }
    }

    /// Whether `network` is selected by [`BindingFilter::within`] (true when none is given).
    pub fn within_matches(&self, network: &Ipv6Prefix) -> bool {
        match &self.within {
            None => true,
            Some(w) => w.covers(network) || (w.len() == 128 && network.covers(w)),
        }
    }

    /// Whether the binding `b` is selected. `client_duid` must already be valid ([`Self::duid`]).
    pub fn matches(&self, b: &BindingView) -> bool {
        let duid_ok = match self.duid() {
            Ok(Some(d)) => b.client_duid == d,
            Ok(None) => true,
            Err(_) => false,
        };
        duid_ok
            && self.within_matches(&b.network)
            && (self.link.is_none() || b.link == self.link)
            && (self.interface.is_none() || b.interface == self.interface)
    }
}

/// One configured server as `show servers` reports it. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    pub name: String,
    pub address: Ipv6Addr,
    /// The most recent exchange got a reply (or none was asked yet).
    pub up: bool,
    /// When it last replied at all.
    pub last_answer_unix: Option<u64>,
    /// When it last gave a usable answer (a binding or "no binding", or a completed bulk query).
    pub last_success_unix: Option<u64>,
    /// Round-trip time of its last reply, in milliseconds.
    pub last_rtt_ms: Option<f64>,
    /// Exchanges without a reply since its last reply, and ever.
    pub consecutive_failures: u64,
    pub failures: u64,
    /// Exchanges (on-demand and bulk queries), ever.
    pub exchanges: u64,
    /// Last bulk leasequery result: `never`, `complete`, `failed`, `gave_up`.
    pub bulk: String,
    pub bulk_at_unix: Option<u64>,
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
    Servers {
        servers: Vec<ServerView>,
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
    /// For a client behind a Lightweight DHCPv6 Relay Agent (a link with `ldra = true`): the
    /// access port the LDRA named, its Interface-Id (text, or `hex:`) and Remote-Id if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_port: Option<String>,
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
    fn handle(&self, request: Request) -> impl Future<Output = Reply> + Send;
}

/// What a [`Responder`] answers: one response, or bindings streamed one by one, which the
/// server writes as one `{"status":"bindings","bindings":[...]}` line without collecting them.
/// A stream that ends early (the sender dropped after an error) still ends the line validly;
/// one that stalls longer than the request timeout has its connection closed.
#[derive(Debug)]
pub enum Reply {
    One(Response),
    Bindings(tokio::sync::mpsc::Receiver<BindingView>),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::One(r)
    }
}

impl Reply {
    /// The whole answer in memory (tests, small answers).
    pub async fn collect(self) -> Response {
        match self {
            Reply::One(r) => r,
            Reply::Bindings(mut rx) => {
                let mut bindings = Vec::new();
                while let Some(b) = rx.recv().await {
                    bindings.push(b);
                }
                Response::Bindings { bindings }
            }
        }
    }
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
    Timeout(crate::time::Duration),
}

crate::label::labels! {
    /// What the control server counts (`lqagent_control_events_total{event}`).
    pub enum ControlEvent {
        Request => "request",
        BadRequest => "bad_request",
        Oversized => "oversized",
        RejectedConnection => "rejected_connection",
        Timeout => "timeout",
        /// Requests the peer's credentials do not allow.
        Refused => "refused",
        /// Connections closed because no whole request line came within the read deadline.
        ReadTimeout => "read_timeout",
        /// Connections closed because an answer could not be written within the write
        /// deadline (the peer stopped reading).
        WriteTimeout => "write_timeout",
        /// Connections refused because their (lesser) peer's uid already held its share.
        UidLimit => "uid_limit",
        /// Stalled connections closed to make room for root or the service user.
        Evicted => "evicted",
    }
}

/// Counters of the control server, keyed by [`ControlEvent`] (read in place by
/// `daemon::export` at scrape time).
#[derive(Debug, Default)]
pub struct ControlStats {
    counts: [std::sync::atomic::AtomicU64; ControlEvent::ALL.len()],
}

impl ControlStats {
    pub fn get(&self, e: ControlEvent) -> u64 {
        self.counts[e as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn count(&self, e: ControlEvent) {
        self.counts[e as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

mod opt_prefix_str {
    use super::Ipv6Prefix;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        p: &Option<Ipv6Prefix>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.collect_str(p),
            None => s.serialize_none(),
        }
    }

    /// A bare address is taken as its /128.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Ipv6Prefix>, D::Error> {
        let Some(s) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        if let Ok(a) = s.parse::<std::net::Ipv6Addr>() {
            return Ok(Some(Ipv6Prefix::host(a)));
        }
        s.parse().map(Some).map_err(serde::de::Error::custom)
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
            serde_json::to_string(&Request::show_all()).unwrap(),
            r#"{"command":"show_bindings"}"#
        );
        let f = Request::ClearBindings(BindingFilter {
            link: Some("cable1".into()),
            within: Some("2001:db8:100::/48".parse().unwrap()),
            ..BindingFilter::default()
        });
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(
            j,
            r#"{"command":"clear_bindings","link":"cable1","within":"2001:db8:100::/48"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), f);
        assert!(
            serde_json::from_str::<Request>(r#"{"command":"show_bindings","lnk":"x"}"#).is_err(),
            "a misspelt criterion must not silently select everything"
        );
        assert_eq!(
            serde_json::from_str::<Request>(
                r#"{"command":"show_bindings","within":"2001:db8::1"}"#
            )
            .unwrap(),
            Request::ShowBindings(BindingFilter {
                within: Some("2001:db8::1/128".parse().unwrap()),
                ..BindingFilter::default()
            })
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"reboot"}"#).is_err());
        assert!(
            serde_json::from_str::<Request>(r#"{"command":"clear_binding","target":"1.2.3.4"}"#)
                .is_err()
        );
    }

    fn view(network: &str, duid: &str, link: &str) -> BindingView {
        BindingView {
            network: network.parse().unwrap(),
            ia_type: "pd".into(),
            link: Some(link.into()),
            interface: Some(format!("{link}-if")),
            client_duid: duid.into(),
            iaid: 1,
            next_hop: None,
            preferred_secs: 1,
            valid_secs: 2,
            source: "snoop".into(),
            route: "installed".into(),
            access_port: None,
        }
    }

    #[test]
    fn filters_select_by_every_criterion_given() {
        let pd = view("2001:db8:100:100::/56", "0003000102000000000a", "cable1");
        let na = view("2001:db8:100::5/128", "0003000102000000000a", "cable1");
        let within = |p: &str| BindingFilter {
            within: Some(p.parse().unwrap()),
            ..BindingFilter::default()
        };
        assert!(BindingFilter::default().matches(&pd));
        assert!(within("2001:db8:100::/48").matches(&pd));
        assert!(within("2001:db8:100::/48").matches(&na));
        assert!(
            !within("2001:db8:100:100::/60").matches(&pd),
            "narrower than the lease"
        );
        assert!(
            within("2001:db8:100:1a0::1/128").matches(&pd),
            "an address inside the /56"
        );
        assert!(!within("2001:db8:100::6/128").matches(&na));
        let duid = |d: &str| BindingFilter {
            client_duid: Some(d.into()),
            ..BindingFilter::default()
        };
        assert!(duid("00:03:00:01:02:00:00:00:00:0A").matches(&pd));
        assert!(!duid("0003000102000000000b").matches(&pd));
        assert!(!duid("xyz").matches(&pd));
        assert!(duid("xyz").duid().is_err());
        let both = BindingFilter {
            link: Some("cable1".into()),
            interface: Some("cable2-if".into()),
            ..BindingFilter::default()
        };
        assert!(!both.matches(&pd), "every criterion must hold");
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
