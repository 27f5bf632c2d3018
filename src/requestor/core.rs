//! The sans-IO leasequery requestor (RFC 5007 §4.3): fed queries, datagrams and the current
//! time; it returns datagrams to send ([`Requestor::poll_transmit`]), when to wake it
//! ([`Requestor::poll_timeout`]) and finished queries ([`Requestor::poll_event`]).
//!
//! A *query* is what a caller asked; it is carried out by one or more *exchanges*, each one
//! LEASEQUERY with its own random 24-bit transaction id to one destination, retransmitted per
//! RFC 8415 §15 until a valid LEASEQUERY-REPLY arrives or the limits are reached:
//!
//! ```text
//!  submit(q) ─► dedup join? ─► negative cache? ─► pending bound? ─► rate limits? ─► exchange(s)
//!  failover:  server 1 ──(no binding | no answer | NotAllowed | NotConfigured |
//!                          UnknownQueryType)──► server 2 ...   (a binding ends the search)
//!  parallel:  every server at once, every answer collected
//!  a reply with OPTION_LQ_CLIENT_LINK ─► one follow-up exchange per listed link, same server
//!  all exchanges of a query done ─► QueryOutcome (answers + verdict)
//!  verdict without a binding (no binding | error | no answer) ─► negative cache, backing off
//! ```
//!
//! Failover asks on after "no binding" because servers with split pools hold disjoint bindings:
//! "no binding" is an answer about one server, and the verdict is negative only when no server
//! asked had the binding. A CLIENT_DATA without CLT_TIME is discarded (RFC 5007 §4.3.3) and ends
//! its exchange as "no binding" from that server: retransmitting would get the same answer.
//!
//! ```text
//! ```
//!
//! Invariants: no two live exchanges share a transaction id; the pending table never holds more
//! than `max_pending` queries; every dropped datagram and refused query is counted.

use crate::time::Instant;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;

use rand::Rng;
use rand::rngs::StdRng;

use super::limiter::{LinkBuckets, LinkRefusal, NegativeCache, TokenBucket};
use super::msg::{self, Parsed};
use super::retransmit::{Retransmit, Step};
use super::{
    Answer, AnswerVerdict, ClientAnswer, DropReason, Policy, Query, QueryId, QueryOutcome, Rate,
    RefuseReason, RequestorConfig, RequestorCounter, RequestorStats, ServerAnswer,
};
use crate::wire::{Duid, StatusCode};

/// RFC 8415 §8: the transaction id is 24 bits.
const XID_MASK: u32 = 0x00ff_ffff;
/// How many finished transaction ids are remembered to tell late duplicates from strangers.
const RECENT_XIDS: usize = 4096;

/// What happened to a submitted query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// A new query is in flight; its outcome comes as an [`Event`] with this id.
    Started(QueryId),
    /// An equal query was already in flight; its outcome (same id) answers this one too.
    Joined(QueryId),
    /// The negative cache knows this lookup ended without a binding a short while ago (the
    /// verdict it ended with: no binding, error or no answer).
    Negative(AnswerVerdict),
    /// Not sent, and counted.
    Refused(RefuseReason),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// A finished query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: QueryId,
    pub outcome: QueryOutcome,
}

#[derive(Debug)]
struct Exchange {
    query: QueryId,
    dst: SocketAddr,
    link: Ipv6Addr,
    /// A CLIENT_LINK follow-up: its own CLIENT_LINK answers are not followed again.
    followup: bool,
    retransmit: Retransmit,
    payload: Vec<u8>,
}

#[derive(Debug)]
struct Pending {
    query: Query,
    answers: Vec<ServerAnswer>,
    /// Index of the next server to try under failover.
    next_server: usize,
    live: usize,
    /// A MalformedQuery answer ends the query: no other server is asked.
    stop: bool,
}

/// The requestor state machine. See the module docs.
#[derive(Debug)]
pub struct Requestor {
    cfg: RequestorConfig,
    rng: StdRng,
    next_id: u64,
    pending: HashMap<QueryId, Pending>,
    by_query: HashMap<Query, QueryId>,
    exchanges: HashMap<u32, Exchange>,
    /// (deadline, xid) of every live exchange, exactly one entry each.
    timers: BTreeSet<(Instant, u32)>,
    recent: VecDeque<u32>,
    recent_set: HashSet<u32>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    negative: NegativeCache<Query, AnswerVerdict>,
    global: Option<TokenBucket>,
    links: Option<LinkBuckets>,
    stats: Arc<RequestorStats>,
}

impl Requestor {
    /// A requestor with `cfg`, drawing transaction ids and RAND from `rng` (seed it from the
    /// OS in production so ids are unpredictable; from a constant in tests). `now` starts the
    /// rate limiters.
    pub fn new(cfg: RequestorConfig, rng: StdRng, now: Instant) -> Self {
        Requestor::with_stats(cfg, rng, now, Arc::default())
    }

    /// [`new`](Self::new), counting into `stats` (the shell's, which outlive this core).
    pub fn with_stats(
        cfg: RequestorConfig,
        rng: StdRng,
        now: Instant,
        stats: Arc<RequestorStats>,
    ) -> Self {
        let global = cfg.global_rate.map(|r| TokenBucket::new(r, now));
        let links = cfg.link_rate.map(|r| LinkBuckets::new(r, cfg.max_links));
        Requestor {
            negative: NegativeCache::new(
                cfg.negative_ttl,
                cfg.negative_max_factor,
                cfg.negative_capacity,
            ),
            cfg,
            rng,
            next_id: 0,
            pending: HashMap::new(),
            by_query: HashMap::new(),
            exchanges: HashMap::new(),
            timers: BTreeSet::new(),
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            global,
            links,
            stats,
        }
    }

    /// New rate limits (configuration reload): the buckets start afresh (full) at `now`.
    pub fn set_rates(&mut self, now: Instant, global: Option<Rate>, link: Option<Rate>) {
        self.global = global.map(|r| TokenBucket::new(r, now));
        self.links = link.map(|r| LinkBuckets::new(r, self.cfg.max_links));
        self.cfg.global_rate = global;
        self.cfg.link_rate = link;
    }

    pub fn config(&self) -> &RequestorConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Arc<RequestorStats> {
        &self.stats
    }

    /// The shell dropped a datagram before the core saw it (e.g. it arrived on a
    /// subscriber-facing interface).
    pub fn drop_datagram(&mut self, reason: DropReason) {
        self.stats.count_drop(reason);
    }

    /// How many failures in a row the negative cache remembers for `query` (0: none).
    pub fn negative_strikes(&self, now: Instant, query: &Query) -> u32 {
        self.negative.strikes(now, query)
    }

    /// The shell could not send a datagram (counted; retransmission covers it).
    pub fn note_send_error(&mut self) {
        self.stats.count(RequestorCounter::SendErrors);
    }

    /// Queries in flight.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Ask `query`.
    pub fn submit(&mut self, now: Instant, query: Query) -> Submit {
        if let Some(id) = self.by_query.get(&query) {
            self.stats.count(RequestorCounter::Deduplicated);
            return Submit::Joined(*id);
        }
        if let Some(v) = self.negative.get(now, &query) {
            self.stats.count(RequestorCounter::NegativeHits);
            return Submit::Negative(v);
        }
        if let Err(r) = self.admit(now, &query) {
            self.stats.refuse(r);
            return Submit::Refused(r);
        }
        let id = QueryId::new(self.next_id);
        self.next_id += 1;
        self.stats.count(RequestorCounter::Queries);
        self.by_query.insert(query.clone(), id);
        self.pending.insert(
            id,
            Pending {
                query,
                answers: Vec::new(),
                next_server: 0,
                live: 0,
                stop: false,
            },
        );
        match self.cfg.policy {
            Policy::Failover => self.next_server(now, id),
            Policy::Parallel => {
                for i in 0..self.cfg.servers.len() {
                    let dst = self.cfg.servers[i];
                    self.start_exchange(now, id, dst, None);
                }
                if let Some(p) = self.pending.get_mut(&id) {
                    p.next_server = self.cfg.servers.len();
                }
            }
        }
        Submit::Started(id)
    }

    fn admit(&mut self, now: Instant, query: &Query) -> Result<(), RefuseReason> {
        if self.cfg.servers.is_empty() {
            return Err(RefuseReason::NoServers);
        }
        if self.pending.len() >= self.cfg.max_pending {
            return Err(RefuseReason::PendingFull);
        }
        if let Some(g) = &mut self.global {
            if !g.try_take(now) {
                return Err(RefuseReason::GlobalRate);
            }
        }
        if let Some(l) = &mut self.links {
            if let Err(e) = l.try_take(now, query.link) {
                if let Some(g) = &mut self.global {
                    g.refund();
                }
                return Err(match e {
                    LinkRefusal::Empty => RefuseReason::LinkRate,
                    LinkRefusal::TableFull => RefuseReason::LinkTableFull,
                });
            }
        }
        Ok(())
    }

    /// Failover: start an exchange with the next configured server, if any is left.
    fn next_server(&mut self, now: Instant, id: QueryId) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        if p.stop || p.next_server >= self.cfg.servers.len() {
            return;
        }
        let dst = self.cfg.servers[p.next_server];
        p.next_server += 1;
        self.start_exchange(now, id, dst, None);
    }

    fn fresh_xid(&mut self) -> u32 {
        loop {
            // The pending bound keeps the live set far below 2^24, so this ends quickly.
            let xid = self.rng.random::<u32>() & XID_MASK;
            if !self.exchanges.contains_key(&xid) && !self.recent_set.contains(&xid) {
                return xid;
            }
        }
    }

    /// Start one exchange of query `id` to `dst`; `followup_link` for CLIENT_LINK follow-ups.
    fn start_exchange(
        &mut self,
        now: Instant,
        id: QueryId,
        dst: SocketAddr,
        followup_link: Option<Ipv6Addr>,
    ) {
        let xid = self.fresh_xid();
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        let link = followup_link.unwrap_or(p.query.link);
        let payload = msg::emit_leasequery(xid, &self.cfg.duid, &p.query, link);
        p.live += 1;
        let retransmit = Retransmit::start(now, self.cfg.retransmit, &mut self.rng);
        self.timers.insert((retransmit.deadline(), xid));
        self.transmits.push_back(Transmit {
            dst,
            payload: payload.clone(),
        });
        self.stats.count(RequestorCounter::Sent);
        self.exchanges.insert(
            xid,
            Exchange {
                query: id,
                dst,
                link,
                followup: followup_link.is_some(),
                retransmit,
                payload,
            },
        );
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next finished query.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Time has reached `now`: retransmit or give up on every exchange that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, xid)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(x) = self.exchanges.get_mut(&xid) else {
                continue;
            };
            match x.retransmit.on_timeout(now, &mut self.rng) {
                Step::Retransmit { deadline } => {
                    self.timers.insert((deadline, xid));
                    self.transmits.push_back(Transmit {
                        dst: x.dst,
                        payload: x.payload.clone(),
                    });
                    self.stats.count(RequestorCounter::Sent);
                    self.stats.count(RequestorCounter::Retransmits);
                }
                Step::GiveUp => {
                    self.stats.count(RequestorCounter::Timeouts);
                    self.finish_exchange(now, xid, None, Answer::NoAnswer);
                }
            }
        }
    }

    /// A datagram arrived from `src`.
    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) {
        if let Err(reason) = self.accept(now, src, bytes) {
            self.stats.count_drop(reason);
        }
    }

    fn accept(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) -> Result<(), DropReason> {
        let reply =
            match msg::parse(bytes, self.cfg.srsn_option).map_err(|_| DropReason::Malformed)? {
                Parsed::Reply(r) => *r,
                Parsed::Leasequery => return Err(DropReason::LeasequeryReceived),
                Parsed::Other => return Err(DropReason::NotReply),
            };
        let Some(x) = self.exchanges.get(&reply.xid) else {
            return Err(if self.recent_set.contains(&reply.xid) {
                DropReason::Duplicate
            } else {
                DropReason::UnknownXid
            });
        };
        if !self.source_ok(x.dst, src) {
            return Err(DropReason::WrongSource);
        }
        // RFC 5007 §4.2: discard without SERVERID, or with a CLIENTID missing or not ours.
        let Some(server_duid) = reply.server_duid else {
            return Err(DropReason::NoServerId);
        };
        match &reply.client_id {
            None => return Err(DropReason::NoClientId),
            Some(c) if *c != self.cfg.duid => return Err(DropReason::ForeignClientId),
            Some(_) => {}
        }
        let answer = match reply.status {
            Some((code, message)) if code != StatusCode::SUCCESS => {
                Answer::Status { code, message }
            }
            _ => match (reply.client_data, reply.client_links) {
                // RFC 5007 §4.3.3: a CLIENT_DATA without CLT_TIME is discarded (counted). What
                // is left is a Success without client data: this server's "no binding", and
                // the exchange ends — the server would answer a retransmission the same way.
                (Some(cd), _) if cd.clt_time().is_none() => {
                    self.stats.count_drop(DropReason::NoCltTime);
                    Answer::NoBinding
                }
                (Some(data), _) => {
                    let observed = crate::cache::from_wire::observed_leases(&data);
                    if observed.bad_prefixes > 0 {
                        let bad = observed.bad_prefixes as u64;
                        self.stats.count_drops(DropReason::BadPrefix, bad);
                    }
                    Answer::Bound(Box::new(ClientAnswer {
                        data,
                        observed,
                        top_relay_data: reply.relay_data,
                        top_base_time: reply.base_time,
                        srsn: reply.srsn,
                        link: x.link,
                        server_duid: server_duid.clone(),
                        server: src,
                        received: now,
                    }))
                }
                (None, Some(links)) if !links.is_empty() => Answer::ClientLinks(links),
                (None, _) => Answer::NoBinding,
            },
        };
        self.stats.count(RequestorCounter::Replies);
        self.finish_exchange(now, reply.xid, Some(server_duid), answer);
        Ok(())
    }

    fn source_ok(&self, dst: SocketAddr, src: SocketAddr) -> bool {
        if dst.ip().is_multicast() {
            self.cfg.multicast_sources.contains(&src)
        } else {
            dst.ip() == src.ip() && dst.port() == src.port()
        }
    }

    fn remember_xid(&mut self, xid: u32) {
        if self.recent.len() >= RECENT_XIDS {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
        self.recent.push_back(xid);
        self.recent_set.insert(xid);
    }

    fn finish_exchange(
        &mut self,
        now: Instant,
        xid: u32,
        server_duid: Option<Duid>,
        answer: Answer,
    ) {
        let Some(x) = self.exchanges.remove(&xid) else {
            return;
        };
        self.timers.remove(&(x.retransmit.deadline(), xid));
        self.remember_xid(xid);
        let id = x.query;
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.live = p.live.saturating_sub(1);
        let mut followups = Vec::new();
        let mut failover = false;
        match &answer {
            Answer::ClientLinks(links) if !x.followup => {
                let take = links.len().min(self.cfg.max_client_links);
                self.stats.add(
                    RequestorCounter::ClientLinksDropped,
                    (links.len() - take) as u64,
                );
                followups.extend_from_slice(&links[..take]);
            }
            Answer::Status { code, .. } => {
                if failover_status(*code) {
                    failover = !x.followup;
                } else if *code == StatusCode::MALFORMED_QUERY {
                    // Change the query; asking elsewhere will not help.
                    p.stop = true;
                }
            }
            // Another server may hold it (split pools), or answer at all.
            Answer::NoBinding | Answer::NoAnswer => failover = !x.followup,
            _ => {}
        }
        p.answers.push(ServerAnswer {
            server: x.dst,
            server_duid,
            link: x.link,
            answer,
            attempts: x.retransmit.sent(),
            elapsed: now.saturating_duration_since(x.retransmit.started()),
        });
        for link in followups {
            self.start_exchange(now, id, x.dst, Some(link));
        }
        if failover && self.cfg.policy == Policy::Failover {
            self.next_server(now, id);
        }
        if self.pending.get(&id).is_some_and(|p| p.live == 0) {
            self.complete(now, id);
        }
    }

    fn complete(&mut self, now: Instant, id: QueryId) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        self.by_query.remove(&p.query);
        let verdict = verdict(&p.answers);
        if verdict == AnswerVerdict::Bound {
            self.negative.remove(&p.query);
        } else {
            self.negative.record(now, p.query.clone(), verdict);
            self.stats.set_negative_evicted(self.negative.evicted());
        }
        self.stats.verdict(verdict);
        self.events.push_back(Event {
            id,
            outcome: QueryOutcome {
                query: p.query,
                verdict,
                answers: p.answers,
            },
        });
    }
}

/// RFC 5007 §4.3.3: statuses after which another server may help.
fn failover_status(code: StatusCode) -> bool {
    code == StatusCode::UNKNOWN_QUERY_TYPE
        || code == StatusCode::NOT_CONFIGURED
        || code == StatusCode::NOT_ALLOWED
}

/// Strongest answer wins: a binding, then "no binding", then an error status, then silence.
fn verdict(answers: &[ServerAnswer]) -> AnswerVerdict {
    let has = |f: fn(&Answer) -> bool| answers.iter().any(|a| f(&a.answer));
    if has(|a| matches!(a, Answer::Bound(_))) {
        AnswerVerdict::Bound
    } else if has(|a| matches!(a, Answer::NoBinding)) {
        AnswerVerdict::NoBinding
    } else if has(|a| matches!(a, Answer::Status { .. })) {
        AnswerVerdict::Error
    } else {
        AnswerVerdict::NoAnswer
    }
}

#[cfg(test)]
mod tests;
