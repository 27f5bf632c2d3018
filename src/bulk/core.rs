//! The sans-IO RFC 5460 requestor for one TCP connection: fed received bytes and the time,
//! it produces bytes to send, a timer deadline and events (client data, finished queries).
//!
//! Per query (RFC 5460 §6.2): exactly one LEASEQUERY-REPLY — with a status and nothing else
//! it ends the query; with a CLIENT_DATA it starts a stream — then one LEASEQUERY-DATA per
//! further client, then LEASEQUERY-DONE (its status, if not Success, is the query's outcome,
//! e.g. QueryTerminated = retry later). A DONE for an unknown transaction id, a frame that does
//! not parse, or a length prefix that cannot be right means the stream cannot be trusted: the
//! connection is closed and whatever was in flight ends as [`Outcome::Lost`]. No progress for
//! [`ConnConfig::data_timeout`] (BULK_LQ_DATA_TIMEOUT, §6.3) ends what is in flight as
//! [`Outcome::TimedOut`] and closes too.
//!
//! One query is in flight at a time unless [`ConnConfig::pipelining`] is on: some deployed
//! servers drop queries pipelined behind another on one connection.
//!
//! ```text
//! submit(q) ─► [queue] ─send─► [in flight: xid] ──REPLY(data)──► streaming ──DONE──► Finished
//!                                       └──REPLY(status | no data)──────────────────► Finished
//! ```

use crate::label::labels;
use crate::time::{Duration, Instant};
use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};

use crate::cache::from_wire::ClientAnswer;

use crate::requestor::QueryId;
use crate::wire::bulk::{FrameConfig, FrameDecoder, frame_to_vec};
use crate::wire::{
    CheckedMessage, ClientData, ClientMessage, DhcpOption, Duid, LeasequeryType, LqQuery,
    MAX_TRANSACTION_ID, MessageType, MessageView, OptionCode, StatusCode,
};

/// What to ask a server for (RFC 5460 §5.3 query types).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BulkQuery {
    /// QUERY_BY_RELAY_ID: bindings a relay with this DUID relayed; `link` `::` = all links.
    RelayId { relay_id: Duid, link: Ipv6Addr },
    /// QUERY_BY_LINK_ADDRESS: bindings on the link the relay identified by this address.
    LinkAddress(Ipv6Addr),
    /// QUERY_BY_REMOTE_ID: bindings whose relay added this remote-id (RFC 4649).
    RemoteId {
        enterprise: u32,
        remote_id: Vec<u8>,
        link: Ipv6Addr,
    },
}

impl BulkQuery {
    /// The link this query is restricted to, if any.
    pub fn link(&self) -> Option<Ipv6Addr> {
        let l = match self {
            BulkQuery::RelayId { link, .. } | BulkQuery::RemoteId { link, .. } => *link,
            BulkQuery::LinkAddress(l) => *l,
        };
        (!l.is_unspecified()).then_some(l)
    }

    /// Which type of leasequery this is (its label is the log field and metric label value).
    pub fn kind(&self) -> LeasequeryType {
        match self {
            BulkQuery::RelayId { .. } => LeasequeryType::RelayId,
            BulkQuery::LinkAddress(_) => LeasequeryType::LinkAddress,
            BulkQuery::RemoteId { .. } => LeasequeryType::RemoteId,
        }
    }

    /// The label of [`BulkQuery::kind`].
    pub fn label(&self) -> &'static str {
        self.kind().label()
    }

    /// The LQ_QUERY option, asking for LQ_RELAY_DATA so each binding's link and the client's
    /// peer-address (the route's next hop) are known even for queries over every link.
    pub fn lq_query(&self) -> LqQuery {
        let link = match self {
            BulkQuery::RelayId { link, .. } | BulkQuery::RemoteId { link, .. } => *link,
            BulkQuery::LinkAddress(l) => *l,
        };
        let mut q = LqQuery::new(self.kind().code(), link);
        match self {
            BulkQuery::RelayId { relay_id, .. } => {
                q.options.push(DhcpOption::RelayId(relay_id.clone()))
            }
            BulkQuery::RemoteId {
                enterprise,
                remote_id,
                ..
            } => q.options.push(DhcpOption::RemoteId {
                enterprise: *enterprise,
                remote_id: remote_id.clone(),
            }),
            BulkQuery::LinkAddress(_) => {}
        }
        q.options
            .push(DhcpOption::Oro(vec![OptionCode::LQ_RELAY_DATA]));
        q
    }
}

/// Settings for one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    /// The server this connection talks to (each answer names it).
    pub server: SocketAddr,
    /// Our DUID, sent as CLIENTID; replies must echo it.
    pub requestor_duid: Duid,
    /// Send every submitted query at once (opt-in) instead of one at a time.
    pub pipelining: bool,
    /// BULK_LQ_DATA_TIMEOUT: longest wait for the next message of a query in flight.
    pub data_timeout: Duration,
    /// First transaction id used; later ones count up (mod 2^24).
    pub first_xid: u32,
    /// Option code of the server reply sequence number (a local extension, see
    /// docs/interop.md): a 4-byte unsigned counter at the top level of REPLY/DATA.
    pub srsn_option: Option<u16>,
}

/// One client's data as received: the answer (the carrier the requestor hands on too), the
/// query it belongs to and its stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkBinding {
    pub query: QueryId,
    /// The CLIENT_DATA with its envelope: server, SERVERID (from the query's REPLY), the
    /// link the query asked about (`::` for every link), srsn, and when it was read.
    pub answer: ClientAnswer,
    /// When the server made the message, on our clock: its LQ_BASE_TIME mapped through the
    /// connection's one offset between the server's clock and ours (see
    /// [`BulkConnection`]'s `anchor`), else `answer.received`. CLT_TIME and lifetimes count
    /// from here, so data made before a snooped RELEASE but read after it (a recovery stream
    /// held back by a busy cache) stays older than the release (merge R14/R15, one clock).
    pub stamped: Instant,
}

/// How far before its reading a message may be stamped: bounds what a server clock stepping
/// backwards mid-connection can do to lifetimes (they count from the stamp).
pub(crate) const MAX_STAMP_LAG: Duration = Duration::from_secs(300);

/// How a query ended after all attempts (the shell in `tcp` retries [`Outcome`]s into one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryResult {
    /// Every binding was listed: LEASEQUERY-DONE with success (`bindings` > 0), or a REPLY
    /// without client data (RFC 5460 §6.2; `bindings` == 0).
    Complete { bindings: u64 },
    /// An error status that asking again would not change.
    Failed { code: StatusCode, message: String },
    /// Out of attempts.
    GaveUp { attempts: u32 },
}

/// How a query ended on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// DONE with success, or a REPLY without data (no bindings).
    Complete { bindings: u64 },
    /// The server answered with an error status (in the REPLY or the DONE).
    Status {
        code: StatusCode,
        message: String,
        bindings: u64,
    },
    /// The connection closed or broke before the query completed.
    Lost { bindings: u64 },
    /// No progress for the data timeout.
    TimedOut { bindings: u64 },
    /// Never sent: the connection ended first (no attempt used).
    NotSent,
}

impl Outcome {
    pub fn bindings(&self) -> u64 {
        match self {
            Outcome::Complete { bindings }
            | Outcome::Status { bindings, .. }
            | Outcome::Lost { bindings }
            | Outcome::TimedOut { bindings } => *bindings,
            Outcome::NotSent => 0,
        }
    }

    /// Whether asking again may help (RFC 5460 §6.3; RFC 5007 §4.3.3 for the statuses).
    pub fn retryable(&self) -> bool {
        match self {
            Outcome::Complete { .. } => false,
            Outcome::Status { code, .. } => {
                *code == StatusCode::QUERY_TERMINATED || *code == StatusCode::UNSPEC_FAIL
            }
            Outcome::Lost { .. } | Outcome::TimedOut { .. } | Outcome::NotSent => true,
        }
    }
}

labels! {
    /// Why a received message was not used.
    pub enum Discard {
        /// A message type that has no business on a bulk connection.
        WrongType => "wrong_type",
        /// REPLY or DATA for a transaction id not in flight, or DATA before the REPLY.
        UnknownXid => "unknown_xid",
        /// REPLY without SERVERID, or with a CLIENTID that is not ours (RFC 5007 §4.3.3).
        BadIdentifiers => "bad_identifiers",
        /// DATA without CLIENT_DATA (RFC 5460 §6.2).
        NoClientData => "no_client_data",
        /// CLIENT_DATA without CLT_TIME (RFC 5007 §4.3.3).
        NoCltTime => "no_clt_time",
        /// An IAPREFIX in a CLIENT_DATA that names no prefix (a length over 128): skipped, the
        /// binding's other leases used (one per IAPREFIX; the policy is
        /// `cache::from_wire::observed_leases`').
        BadPrefix => "bad_prefix",
    }
}

/// What the connection reads from one received message, by its type: only what the type's
/// handling looks at. Read in place from the checked view ([`read_message`]); the owned message
/// tree is never built.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Received {
    /// LEASEQUERY-REPLY.
    Reply {
        xid: u32,
        /// The first CLIENTID is the requestor's DUID (RFC 5007 §4.3.3).
        ours: bool,
        /// The first SERVERID.
        server: Option<Duid>,
        /// The first STATUS_CODE: code and message.
        status: Option<(StatusCode, String)>,
        data: Option<ReceivedData>,
    },
    /// LEASEQUERY-DATA.
    Data {
        xid: u32,
        data: Option<ReceivedData>,
    },
    /// LEASEQUERY-DONE with its first STATUS_CODE.
    Done {
        xid: u32,
        status: Option<(StatusCode, String)>,
    },
    /// Any other type, or a relay message: no business on a bulk connection.
    WrongType,
}

/// A REPLY's or DATA's first CLIENT_DATA, owned (it goes on to the cache: the one copy made of
/// a binding), with what the message around it says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReceivedData {
    data: ClientData,
    /// The first top-level LQ_BASE_TIME (the one inside CLIENT_DATA, if any, comes first).
    base_time: Option<u32>,
    /// The server reply sequence number, when its option code is configured.
    srsn: Option<u32>,
}

/// Reads one received message (a frame's body) in place from the checked view: the same bytes
/// accepted and refused as the owned parse (`Message::parse`), and every value the first of its
/// option as the owned finders read it (a test holds the two readings equal over every cut and
/// one-byte change of a stream's messages). Only the first CLIENT_DATA is copied, into what the
/// binding hands on, so a bulk answer costs the check and that one copy (the owned tree, then a
/// clone of its CLIENT_DATA, cost a second copy of every option of it).
fn read_message(
    bytes: &[u8],
    requestor: &Duid,
    srsn_option: Option<u16>,
) -> Result<Received, crate::wire::Error> {
    let checked = CheckedMessage::new(bytes)?;
    let m = match checked.view() {
        MessageView::Client(m) => m,
        MessageView::Relay(_) => return Ok(Received::WrongType),
    };
    let xid = m.transaction_id();
    let o = m.options();
    let status = || {
        o.checked_data(OptionCode::STATUS_CODE).and_then(|b| {
            let (code, text) = b.split_first_chunk::<2>()?;
            Some((
                StatusCode(u16::from_be_bytes(*code)),
                String::from_utf8_lossy(text).into_owned(),
            ))
        })
    };
    let data = || -> Result<Option<ReceivedData>, crate::wire::Error> {
        // A checked message cannot fail to copy; were it to, the message reads as unparsable.
        let Some(DhcpOption::ClientData(data)) = o
            .find(OptionCode::CLIENT_DATA)?
            .map(|v| v.to_owned_option())
            .transpose()?
        else {
            return Ok(None);
        };
        Ok(Some(ReceivedData {
            data,
            base_time: o
                .checked_data(OptionCode::LQ_BASE_TIME)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes),
            srsn: srsn_option.and_then(|c| o.checked_srsn(c)),
        }))
    };
    Ok(match m.msg_type() {
        MessageType::LEASEQUERY_REPLY => Received::Reply {
            xid,
            ours: o.checked_data(OptionCode::CLIENTID) == Some(&requestor[..]),
            server: o.checked_data(OptionCode::SERVERID).map(Duid::from),
            status: status(),
            data: data()?,
        },
        MessageType::LEASEQUERY_DATA => Received::Data { xid, data: data()? },
        MessageType::LEASEQUERY_DONE => Received::Done {
            xid,
            status: status(),
        },
        _ => Received::WrongType,
    })
}

/// Why the connection is being closed by us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// A frame or message that cannot be trusted, or a DONE for an unknown query.
    Protocol(&'static str),
    DataTimeout,
}

/// What the connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnEvent {
    Binding(Box<BulkBinding>),
    Finished {
        id: QueryId,
        query: BulkQuery,
        outcome: Outcome,
    },
    Discarded(Discard),
    /// The connection must be closed (after sending nothing more).
    Close(CloseReason),
}

#[derive(Debug)]
struct InFlight {
    id: QueryId,
    query: BulkQuery,
    xid: u32,
    server_duid: Option<Duid>,
    replied: bool,
    bindings: u64,
}

/// One bulk leasequery connection's protocol state.
#[derive(Debug)]
pub(crate) struct BulkConnection {
    cfg: ConnConfig,
    queue: VecDeque<(QueryId, BulkQuery)>,
    inflight: Vec<InFlight>,
    next_xid: u32,
    frames: FrameDecoder,
    tx: Vec<u8>,
    events: VecDeque<ConnEvent>,
    deadline: Option<Instant>,
    closed: bool,
    /// The one offset between the server's clock and ours for this connection: (our instant,
    /// server LQ_BASE_TIME) of the message that arrived with the least delay so far. A later
    /// message's base time maps through it; a message that arrives earlier than the mapping
    /// says (less delay, or a server clock stepping forwards) becomes the anchor.
    anchor: Option<(Instant, u32)>,
}

impl BulkConnection {
    pub(crate) fn new(cfg: ConnConfig) -> Self {
        let next_xid = cfg.first_xid & MAX_TRANSACTION_ID;
        BulkConnection {
            cfg,
            queue: VecDeque::new(),
            inflight: Vec::new(),
            next_xid,
            frames: FrameDecoder::new(FrameConfig::default()),
            tx: Vec::new(),
            events: VecDeque::new(),
            deadline: None,
            closed: false,
            anchor: None,
        }
    }

    /// The instant on our clock of a message the server made at `base` (LQ_BASE_TIME, Unix
    /// seconds on its clock), read at `now`: never after `now`, never more than
    /// [`MAX_STAMP_LAG`] before it; `now` without a base time.
    fn stamp(&mut self, now: Instant, base: Option<u32>) -> Instant {
        let Some(b) = base else {
            return now;
        };
        let mapped = self.anchor.and_then(|(a0, b0)| {
            let d = Duration::from_secs(u64::from(b.abs_diff(b0)));
            if b >= b0 {
                a0.checked_add(d)
            } else {
                a0.checked_sub(d)
            }
        });
        match mapped {
            Some(m) if m < now => m.max(now.checked_sub(MAX_STAMP_LAG).unwrap_or(m)),
            _ => {
                self.anchor = Some((now, b));
                now
            }
        }
    }

    /// Queue a query; it is sent now or when the one in flight completes.
    pub(crate) fn submit(&mut self, now: Instant, id: QueryId, query: BulkQuery) {
        if self.closed {
            self.events.push_back(ConnEvent::Finished {
                id,
                query,
                outcome: Outcome::NotSent,
            });
            return;
        }
        self.queue.push_back((id, query));
        self.send_queued(now);
    }

    /// Queries submitted and not finished yet.
    pub(crate) fn outstanding(&self) -> usize {
        self.queue.len() + self.inflight.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// How many received bytes [`BulkConnection::handle_bytes`] accepts now (read at most
    /// this much from the socket).
    pub(crate) fn room(&self) -> usize {
        self.frames.room()
    }

    fn send_queued(&mut self, now: Instant) {
        while !self.closed && (self.cfg.pipelining || self.inflight.is_empty()) {
            let Some((id, query)) = self.queue.pop_front() else {
                break;
            };
            let xid = self.next_xid;
            self.next_xid = (self.next_xid + 1) & MAX_TRANSACTION_ID;
            let mut m = ClientMessage::new(MessageType::LEASEQUERY, xid);
            m.options
                .push(DhcpOption::ClientId(self.cfg.requestor_duid.clone()));
            m.options.push(DhcpOption::LqQuery(query.lq_query()));
            match frame_to_vec(&m.into()) {
                Ok(bytes) => self.tx.extend_from_slice(&bytes),
                Err(_) => {
                    // Only an oversized remote-id or relay-id can get here: not retryable.
                    self.events.push_back(ConnEvent::Finished {
                        id,
                        query,
                        outcome: Outcome::Status {
                            code: StatusCode::MALFORMED_QUERY,
                            message: "query does not fit a frame".into(),
                            bindings: 0,
                        },
                    });
                    continue;
                }
            }
            self.inflight.push(InFlight {
                id,
                query,
                xid,
                server_duid: None,
                replied: false,
                bindings: 0,
            });
            if self.deadline.is_none() {
                self.deadline = Some(now + self.cfg.data_timeout);
            }
        }
    }

    /// Bytes to write to the socket, if any.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.tx.is_empty()).then(|| std::mem::take(&mut self.tx))
    }

    /// When [`BulkConnection::handle_timeout`] must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.closed { None } else { self.deadline }
    }

    pub(crate) fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    /// Feed bytes read from the socket (at most [`BulkConnection::room`]).
    pub(crate) fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if self.closed {
            return;
        }
        if self.frames.push(bytes).is_err() {
            self.close(CloseReason::Protocol("receive buffer overrun"), false);
            return;
        }
        loop {
            let msg = match self.frames.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => read_message(f, &self.cfg.requestor_duid, self.cfg.srsn_option),
                Err(_) => {
                    self.close(CloseReason::Protocol("bad frame length"), false);
                    return;
                }
            };
            match msg {
                Ok(m) => self.handle_message(now, m),
                Err(_) => {
                    self.close(CloseReason::Protocol("message does not parse"), false);
                    return;
                }
            }
            if self.closed {
                return;
            }
        }
        self.send_queued(now);
    }

    fn position(&self, xid: u32) -> Option<usize> {
        self.inflight.iter().position(|q| q.xid == xid)
    }

    fn progress(&mut self, now: Instant) {
        self.deadline = Some(now + self.cfg.data_timeout);
    }

    fn finish(&mut self, now: Instant, idx: usize, outcome_of: impl FnOnce(u64) -> Outcome) {
        let q = self.inflight.remove(idx);
        self.events.push_back(ConnEvent::Finished {
            id: q.id,
            query: q.query,
            outcome: outcome_of(q.bindings),
        });
        if self.inflight.is_empty() {
            self.deadline = None;
        }
        self.send_queued(now);
    }

    /// Finishes query `idx` with the server's status (not success) and its message.
    fn finish_status(&mut self, now: Instant, idx: usize, code: StatusCode, message: String) {
        self.finish(now, idx, |bindings| Outcome::Status {
            code,
            message,
            bindings,
        });
    }

    fn emit_binding(&mut self, now: Instant, idx: usize, received: ReceivedData) {
        let ReceivedData {
            data,
            base_time,
            srsn,
        } = received;
        if data.clt_time().is_none() {
            self.events
                .push_back(ConnEvent::Discarded(Discard::NoCltTime));
            return;
        }
        let base = data.options.lq_base_time().or(base_time);
        let observed = crate::cache::from_wire::observed_leases(&data);
        for _ in 0..observed.bad_prefixes {
            self.events
                .push_back(ConnEvent::Discarded(Discard::BadPrefix));
        }
        let stamped = self.stamp(now, base);
        let server = self.cfg.server;
        let q = &mut self.inflight[idx];
        // Set by the REPLY that let this query stream; without it nothing is emitted.
        let Some(server_duid) = q.server_duid.clone() else {
            self.events
                .push_back(ConnEvent::Discarded(Discard::BadIdentifiers));
            return;
        };
        q.bindings += 1;
        self.events
            .push_back(ConnEvent::Binding(Box::new(BulkBinding {
                query: q.id,
                answer: ClientAnswer {
                    data,
                    observed,
                    top_relay_data: None,
                    top_base_time: None,
                    srsn,
                    link: q.query.link().unwrap_or(Ipv6Addr::UNSPECIFIED),
                    server_duid,
                    server,
                    received: now,
                },
                stamped,
            })));
    }

    fn handle_message(&mut self, now: Instant, m: Received) {
        match m {
            Received::Reply {
                xid,
                ours,
                server,
                status,
                data,
            } => {
                let Some(idx) = self.position(xid).filter(|&i| !self.inflight[i].replied) else {
                    self.events
                        .push_back(ConnEvent::Discarded(Discard::UnknownXid));
                    return;
                };
                let Some(server) = server.filter(|_| ours) else {
                    self.events
                        .push_back(ConnEvent::Discarded(Discard::BadIdentifiers));
                    return;
                };
                self.progress(now);
                let q = &mut self.inflight[idx];
                q.replied = true;
                q.server_duid = Some(server);
                if let Some((code, message)) = status.filter(|s| s.0 != StatusCode::SUCCESS) {
                    if code == StatusCode::NO_BINDING {
                        self.finish(now, idx, |b| Outcome::Complete { bindings: b });
                    } else {
                        self.finish_status(now, idx, code, message);
                    }
                    return;
                }
                match data {
                    Some(d) => self.emit_binding(now, idx, d),
                    // §6.2: a REPLY without client data completes the query.
                    None => self.finish(now, idx, |b| Outcome::Complete { bindings: b }),
                }
            }
            Received::Data { xid, data } => {
                let Some(idx) = self.position(xid).filter(|&i| self.inflight[i].replied) else {
                    self.events
                        .push_back(ConnEvent::Discarded(Discard::UnknownXid));
                    return;
                };
                self.progress(now);
                match data {
                    Some(d) => self.emit_binding(now, idx, d),
                    None => self
                        .events
                        .push_back(ConnEvent::Discarded(Discard::NoClientData)),
                }
            }
            Received::Done { xid, status } => {
                let Some(idx) = self.position(xid) else {
                    // §6.2: a DONE for an unknown query: close the connection.
                    self.close(
                        CloseReason::Protocol("LEASEQUERY-DONE for an unknown query"),
                        false,
                    );
                    return;
                };
                self.progress(now);
                match status.filter(|s| s.0 != StatusCode::SUCCESS) {
                    Some((code, message)) => self.finish_status(now, idx, code, message),
                    None => self.finish(now, idx, |b| Outcome::Complete { bindings: b }),
                }
            }
            Received::WrongType => self
                .events
                .push_back(ConnEvent::Discarded(Discard::WrongType)),
        }
    }

    /// Call at (or after) [`BulkConnection::poll_timeout`].
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) && !self.inflight.is_empty() {
            self.close(CloseReason::DataTimeout, true);
        }
    }

    /// The socket closed or failed: every query in flight is lost, queued ones were not sent.
    pub(crate) fn handle_closed(&mut self) {
        if !self.closed {
            self.fail_all(false);
            self.closed = true;
        }
    }

    fn close(&mut self, reason: CloseReason, timed_out: bool) {
        self.events.push_back(ConnEvent::Close(reason));
        self.fail_all(timed_out);
        self.closed = true;
    }

    fn fail_all(&mut self, timed_out: bool) {
        for q in self.inflight.drain(..) {
            let outcome = if timed_out {
                Outcome::TimedOut {
                    bindings: q.bindings,
                }
            } else {
                Outcome::Lost {
                    bindings: q.bindings,
                }
            };
            self.events.push_back(ConnEvent::Finished {
                id: q.id,
                query: q.query,
                outcome,
            });
        }
        for (id, query) in self.queue.drain(..) {
            self.events.push_back(ConnEvent::Finished {
                id,
                query,
                outcome: Outcome::NotSent,
            });
        }
        self.deadline = None;
        self.tx.clear();
    }
}

#[cfg(test)]
mod tests;
