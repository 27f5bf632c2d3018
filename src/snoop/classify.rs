//! What a snooped relayed exchange says about a client's bindings: pure, no I/O, time as input.
//!
//! The snooper listens on the relay's server-facing side, where every exchange shows up twice
//! with its full relay chain (RFC 8415 §19):
//!
//! ```text
//! relay → server  RELAY-FORW(link-address, peer-address, Interface-Id, Remote-Id, ...,
//!                   RELAY_MSG = [RELAY-FORW (LDRA, link ::) ...] client message)
//! server → relay  RELAY-REPL(same link/peer addresses, Interface-Id echoed,
//!                   RELAY_MSG = [RELAY-REPL ...] REPLY)
//! ```
//!
//! - A RELAY-FORW is remembered (bounded, with a time-to-live) under the client's transaction
//!   id and DUID: it tells which message the client sent (so a REPLY to RELEASE/DECLINE is
//!   known as one, RFC 8415 §18.3.7–18.3.8) and carries the relay options only the forward
//!   direction has (Remote-Id, RFC 4649).
//! - A RELAY-REPL carrying a REPLY yields an [`Observation`] with every IA_NA/IA_TA address and
//!   IA_PD prefix and its lifetimes, whatever the exchange was (REQUEST, RENEW, REBIND,
//!   rapid-commit SOLICIT, or one whose RELAY-FORW we missed: the REPLY alone is enough). A zero
//!   valid lifetime stays in the observation: the cache reads it as "no longer held"
//!   (RFC 8415 §18.2.10.1).
//! - A REPLY to a RELEASE or DECLINE yields a [`Withdrawal`] of the leases the client named.
//!
//! The relay level nearest the client gives the peer-address (the client's link-local address:
//! the PD next hop) and the link: every level is walked from the innermost outwards, because a
//! lightweight relay (LDRA, RFC 6221) adds a level with link-address `::` and the link-address
//! then comes from the next level out.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::cache::{
    IaType, LeaseKey, Link, Observation, ObservedLease, RelayData, ServerId, Source, Timestamp,
    WithdrawReason, Withdrawal,
};
use crate::wire::{ClientMessage, DhcpOption, Message, MessageType, Options, StatusCode};

/// Settings of the RELAY-FORW memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyConfig {
    /// Most RELAY-FORWs remembered while waiting for their RELAY-REPL; the oldest goes first.
    pub pending_capacity: usize,
    /// How long a RELAY-FORW waits for its RELAY-REPL, in milliseconds.
    pub pending_ttl_ms: i64,
    /// Option code of the server reply sequence number in a REPLY (`[leasequery] srsn_option`).
    pub srsn_option: Option<u16>,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            pending_capacity: 8192,
            pending_ttl_ms: 60_000,
            srsn_option: None,
        }
    }
}

/// What one snooped message taught us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// Leases seen in a REPLY (zero valid lifetime = gone).
    Bind(Observation),
    /// Leases given up by a RELEASE or DECLINE that the server answered.
    Withdraw(Withdrawal),
}

/// Counters of the classifier, labelled by [`ClassifyCounter::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClassifyCounter {
    /// RELAY-FORW remembered.
    RelayForw,
    /// RELAY-REPL carrying a REPLY, turned into an observation.
    ReplyBind,
    /// RELAY-REPL carrying a REPLY to RELEASE/DECLINE.
    ReplyRelease,
    /// REPLY that matched no remembered RELAY-FORW (still used for bindings).
    ReplyUnmatched,
    /// Relayed message that is neither a client request nor a REPLY (ADVERTISE, RECONFIGURE...).
    Ignored,
    /// Not a relay message at all (we only read the relay's upstream side).
    NotRelayed,
    /// REPLY or request without CLIENTID, or REPLY without SERVERID.
    MissingId,
    /// REPLY with a non-success top-level status: nothing learned.
    ErrorStatus,
    /// IAPREFIX with a length over 128.
    BadPrefix,
    /// RELAY-FORW dropped from a full memory.
    PendingEvicted,
}

impl ClassifyCounter {
    pub const ALL: [ClassifyCounter; 10] = [
        ClassifyCounter::RelayForw,
        ClassifyCounter::ReplyBind,
        ClassifyCounter::ReplyRelease,
        ClassifyCounter::ReplyUnmatched,
        ClassifyCounter::Ignored,
        ClassifyCounter::NotRelayed,
        ClassifyCounter::MissingId,
        ClassifyCounter::ErrorStatus,
        ClassifyCounter::BadPrefix,
        ClassifyCounter::PendingEvicted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClassifyCounter::RelayForw => "relay_forw",
            ClassifyCounter::ReplyBind => "reply_bind",
            ClassifyCounter::ReplyRelease => "reply_release",
            ClassifyCounter::ReplyUnmatched => "reply_unmatched",
            ClassifyCounter::Ignored => "ignored",
            ClassifyCounter::NotRelayed => "not_relayed",
            ClassifyCounter::MissingId => "missing_id",
            ClassifyCounter::ErrorStatus => "error_status",
            ClassifyCounter::BadPrefix => "bad_prefix",
            ClassifyCounter::PendingEvicted => "pending_evicted",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counter values, indexed by [`ClassifyCounter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassifyStats {
    counts: [u64; ClassifyCounter::ALL.len()],
}

impl ClassifyStats {
    pub fn get(&self, c: ClassifyCounter) -> u64 {
        self.counts[c.index()]
    }

    /// `(label, value)` for every counter.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        ClassifyCounter::ALL
            .iter()
            .map(|c| (c.as_str(), self.get(*c)))
            .collect()
    }

    fn bump(&mut self, c: ClassifyCounter) {
        self.counts[c.index()] = self.counts[c.index()].saturating_add(1);
    }
}

/// A remembered RELAY-FORW.
#[derive(Debug, Clone)]
struct Pending {
    client_type: MessageType,
    relay: RelayData,
    /// Leases a RELEASE/DECLINE names.
    named: Vec<LeaseKey>,
    at: Timestamp,
}

type PendingKey = (u32, Box<[u8]>);

/// Pairs RELAY-FORW with RELAY-REPL and turns REPLYs into cache input.
#[derive(Debug)]
pub struct Classifier {
    cfg: ClassifyConfig,
    pending: HashMap<PendingKey, Pending>,
    /// Insertion order for eviction and time-to-live; may hold keys already removed.
    order: VecDeque<(Timestamp, PendingKey)>,
    stats: ClassifyStats,
}

impl Classifier {
    pub fn new(cfg: ClassifyConfig) -> Self {
        Classifier {
            cfg,
            pending: HashMap::new(),
            order: VecDeque::new(),
            stats: ClassifyStats::default(),
        }
    }

    pub fn stats(&self) -> &ClassifyStats {
        &self.stats
    }

    /// RELAY-FORWs waiting for their answer.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one snooped DHCPv6 message. `sender` is the datagram's IPv6 source: for a
    /// RELAY-REPL, the server's address.
    pub fn on_message(
        &mut self,
        msg: &Message,
        sender: Ipv6Addr,
        now: Timestamp,
    ) -> Option<Learned> {
        self.expire(now);
        let Message::Relay(outer) = msg else {
            self.stats.bump(ClassifyCounter::NotRelayed);
            return None;
        };
        let Some(client) = msg.innermost() else {
            self.stats.bump(ClassifyCounter::Ignored);
            return None;
        };
        let chain = msg.relay_chain();
        match outer.msg_type {
            MessageType::RELAY_FORW => {
                self.on_forw(&chain, client, now);
                None
            }
            _ if client.msg_type == MessageType::REPLY => {
                self.on_reply(&chain, client, sender, now)
            }
            _ => {
                self.stats.bump(ClassifyCounter::Ignored);
                None
            }
        }
    }

    fn on_forw(
        &mut self,
        chain: &[&crate::wire::RelayMessage],
        client: &ClientMessage,
        now: Timestamp,
    ) {
        let Some(duid) = client.options.client_id() else {
            self.stats.bump(ClassifyCounter::MissingId);
            return;
        };
        let named = match client.msg_type {
            MessageType::RELEASE | MessageType::DECLINE => {
                leases_of(&client.options, &mut self.stats)
                    .into_iter()
                    .map(|l| l.key)
                    .collect()
            }
            _ => Vec::new(),
        };
        let key: PendingKey = (client.transaction_id, duid.to_vec().into_boxed_slice());
        let entry = Pending {
            client_type: client.msg_type,
            relay: relay_data(chain),
            named,
            at: now,
        };
        self.stats.bump(ClassifyCounter::RelayForw);
        if self.pending.insert(key.clone(), entry).is_none() {
            self.order.push_back((now, key));
        }
        while self.pending.len() > self.cfg.pending_capacity {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            if self.pending.remove(&old).is_some() {
                self.stats.bump(ClassifyCounter::PendingEvicted);
            }
        }
    }

    fn on_reply(
        &mut self,
        chain: &[&crate::wire::RelayMessage],
        reply: &ClientMessage,
        sender: Ipv6Addr,
        now: Timestamp,
    ) -> Option<Learned> {
        let (Some(duid), Some(server)) = (reply.options.client_id(), reply.options.server_id())
        else {
            self.stats.bump(ClassifyCounter::MissingId);
            return None;
        };
        let duid: Box<[u8]> = duid.to_vec().into_boxed_slice();
        let forw = self.pending.remove(&(reply.transaction_id, duid.clone()));
        if forw.is_none() {
            self.stats.bump(ClassifyCounter::ReplyUnmatched);
        }
        if let Some(f) = &forw {
            if matches!(f.client_type, MessageType::RELEASE | MessageType::DECLINE) {
                self.stats.bump(ClassifyCounter::ReplyRelease);
                return Some(Learned::Withdraw(Withdrawal {
                    keys: f.named.clone(),
                    client_duid: Some(duid),
                    reason: WithdrawReason::Released,
                    arrival: now,
                }));
            }
        }
        if reply
            .options
            .status_code()
            .is_some_and(|c| c != StatusCode::SUCCESS)
        {
            self.stats.bump(ClassifyCounter::ErrorStatus);
            return None;
        }
        let leases = leases_of(&reply.options, &mut self.stats);
        if leases.is_empty() {
            self.stats.bump(ClassifyCounter::Ignored);
            return None;
        }
        // The REPL echoes the link/peer addresses and Interface-Id; the FORW adds Remote-Id.
        let mut relay = relay_data(chain);
        if let Some(f) = forw {
            relay.peer_address = relay.peer_address.or(f.relay.peer_address);
            relay.interface_id = relay.interface_id.or(f.relay.interface_id);
            relay.remote_id = f.relay.remote_id.or(relay.remote_id);
        }
        self.stats.bump(ClassifyCounter::ReplyBind);
        Some(Learned::Bind(Observation {
            client_duid: duid,
            link: Link {
                address: link_address(chain),
                interface: None,
            },
            relay: Some(relay),
            server: Arc::new(ServerId {
                duid: server.to_vec().into_boxed_slice(),
                address: sender,
            }),
            source: Source::Snoop,
            clt_time: None,
            base_time: None,
            srsn: self.cfg.srsn_option.and_then(|c| reply.options.srsn(c)),
            complete: false,
            leases,
            arrival: now,
        }))
    }

    fn expire(&mut self, now: Timestamp) {
        while let Some((at, _)) = self.order.front() {
            if now.millis().saturating_sub(at.millis()) < self.cfg.pending_ttl_ms {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                // Only drop the entry if it is the one this order slot was made for.
                if self.pending.get(&key).is_some_and(|p| p.at == at) {
                    self.pending.remove(&key);
                }
            }
        }
    }
}

/// The link-address of the level nearest the client that has one (an LDRA's level has `::`).
fn link_address(chain: &[&crate::wire::RelayMessage]) -> Ipv6Addr {
    chain
        .iter()
        .rev()
        .map(|r| r.link_address)
        .find(|a| !a.is_unspecified())
        .unwrap_or(Ipv6Addr::UNSPECIFIED)
}

/// Relay data from the level nearest the client outwards: its peer-address, and the
/// Interface-Id and Remote-Id found nearest the client.
fn relay_data(chain: &[&crate::wire::RelayMessage]) -> RelayData {
    let mut out = RelayData {
        peer_address: chain.last().map(|r| r.peer_address),
        interface_id: None,
        remote_id: None,
    };
    for r in chain.iter().rev() {
        if out.interface_id.is_none() {
            out.interface_id = r.options.interface_id().map(Into::into);
        }
        if out.remote_id.is_none() {
            out.remote_id = r.options.iter().find_map(|o| match o {
                DhcpOption::RemoteId {
                    enterprise,
                    remote_id,
                } => {
                    let mut v = enterprise.to_be_bytes().to_vec();
                    v.extend_from_slice(remote_id);
                    Some(v.into_boxed_slice())
                }
                _ => None,
            });
        }
    }
    out
}

/// Every address and prefix in the IA_NA, IA_TA and IA_PD options of `opts`.
fn leases_of(opts: &Options, stats: &mut ClassifyStats) -> Vec<ObservedLease> {
    let mut out = Vec::new();
    for o in opts.iter() {
        let (ia, iaid, inner) = match o {
            DhcpOption::IaNa(ia) => (IaType::Na, ia.iaid, &ia.options),
            DhcpOption::IaPd(ia) => (IaType::Pd, ia.iaid, &ia.options),
            DhcpOption::IaTa(ia) => (IaType::Ta, ia.iaid, &ia.options),
            _ => continue,
        };
        for l in inner.iter() {
            match l {
                DhcpOption::IaAddr(a) if ia != IaType::Pd => out.push(ObservedLease {
                    key: LeaseKey::Address(a.addr),
                    ia,
                    iaid,
                    preferred: a.preferred,
                    valid: a.valid,
                }),
                DhcpOption::IaPrefix(p) if ia == IaType::Pd => match p.prefix() {
                    Ok(prefix) => out.push(ObservedLease {
                        key: LeaseKey::Prefix(prefix),
                        ia,
                        iaid,
                        preferred: p.preferred,
                        valid: p.valid,
                    }),
                    Err(_) => stats.bump(ClassifyCounter::BadPrefix),
                },
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
