//! Fault injection: what the server does wrong, for the whole run or for chosen queries.
//!
//! A [`FaultPlan`] holds default [`Faults`] and a list of [`FaultRule`]s; the first rule that
//! matches a query (by its 1-based number on that transport, its query type, its transport)
//! replaces the defaults for that query. As JSON (CLI `--faults`):
//!
//! ```text
//! {"default":{"delay_ms":0},
//!  "rules":[{"from":1,"to":2,"transport":"udp","faults":{"drop":true}},
//!           {"query_type":3,"faults":{"reset_after_data":100}}]}
//! ```

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::answer::Transport;

/// How to damage an encoded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Corrupt {
    /// Keep only the first `n` bytes.
    Truncate(usize),
    /// XOR the byte at `at` (if the message is that long) with `xor`.
    Flip { at: usize, xor: u8 },
    /// Replace the message by the message type byte followed by `n` bytes of 0xff.
    Garbage(usize),
}

impl Corrupt {
    pub fn apply(&self, msg: &mut Vec<u8>) {
        match *self {
            Corrupt::Truncate(n) => msg.truncate(n),
            Corrupt::Flip { at, xor } => {
                if let Some(b) = msg.get_mut(at) {
                    *b ^= xor;
                }
            }
            Corrupt::Garbage(n) => {
                let first = msg.first().copied().unwrap_or(0);
                msg.clear();
                msg.push(first);
                msg.extend(std::iter::repeat_n(0xff, n));
            }
        }
    }
}

/// What goes wrong with one query's answer. The default is nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Wait this long before answering (TCP: before the REPLY).
    pub delay_ms: u64,
    /// TCP: wait this long before each further message (DATA, DONE): a slow server.
    pub data_delay_ms: u64,
    /// Never answer this query (UDP: send nothing; TCP: keep the connection open and silent).
    pub drop: bool,
    /// Send the (UDP) answer this many extra times.
    pub duplicate: u32,
    /// Damage the UDP answer, or the TCP REPLY (the frame length stays consistent).
    pub corrupt: Option<Corrupt>,
    /// UDP: hold this answer back and send it after the next one (or after 300 ms).
    pub reorder: bool,
    /// UDP: send the answer from the alternate socket (a wrong source address).
    pub wrong_source: bool,
    /// UDP: send the answer to this port instead of the query's source port (ISC dhcpd 4.4
    /// answers port 546 whatever the source port was).
    pub reply_port: Option<u16>,
    /// Answer with this status code (and no client data) whatever the table says.
    pub status: Option<u16>,
    /// TCP: after this many DATA messages, reset the connection (RST) mid-stream.
    pub reset_after_data: Option<usize>,
    /// TCP: after this many DATA messages, send DONE with QueryTerminated and close.
    pub terminate_after_data: Option<usize>,
    /// TCP: change the transaction id of the DONE (a DONE for an unknown query).
    pub wrong_done_xid: bool,
}

impl Faults {
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }

    pub fn data_delay(&self) -> Duration {
        Duration::from_millis(self.data_delay_ms)
    }
}

/// Transport selector in a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleTransport {
    Udp,
    Tcp,
}

/// Faults for the queries a rule matches. Absent fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultRule {
    /// First query number (1-based, counted per transport) the rule applies to.
    pub from: Option<u64>,
    /// Last query number the rule applies to.
    pub to: Option<u64>,
    pub query_type: Option<u8>,
    pub transport: Option<RuleTransport>,
    pub faults: Faults,
}

impl FaultRule {
    fn matches(&self, nth: u64, query_type: u8, transport: Transport) -> bool {
        self.from.is_none_or(|f| nth >= f)
            && self.to.is_none_or(|t| nth <= t)
            && self.query_type.is_none_or(|q| q == query_type)
            && self.transport.is_none_or(|t| {
                matches!(
                    (t, transport),
                    (RuleTransport::Udp, Transport::Udp) | (RuleTransport::Tcp, Transport::Tcp)
                )
            })
    }

    /// A rule for queries `from..=to` (1-based) on any transport.
    pub fn nth(from: u64, to: u64, faults: Faults) -> Self {
        FaultRule {
            from: Some(from),
            to: Some(to),
            faults,
            ..FaultRule::default()
        }
    }
}

/// Defaults plus rules; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    pub default: Faults,
    pub rules: Vec<FaultRule>,
}

impl FaultPlan {
    /// The same faults for every query.
    pub fn always(faults: Faults) -> Self {
        FaultPlan {
            default: faults,
            rules: Vec::new(),
        }
    }

    pub fn with_rule(mut self, rule: FaultRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// The faults for query number `nth` (1-based) of `query_type` on `transport`.
    pub fn for_query(&self, nth: u64, query_type: u8, transport: Transport) -> Faults {
        self.rules
            .iter()
            .find(|r| r.matches(nth, query_type, transport))
            .map(|r| r.faults.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}
