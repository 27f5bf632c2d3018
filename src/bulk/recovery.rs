//! Recovery by bulk leasequery (RFC 5460; RFC 8987 S-1): what to ask at start and when a
//! subscriber link comes up, and the loop that streams the answers into the cache.
//!
//! At start (after the state file is loaded) every configured server is asked, in parallel,
//! by relay-id (our relay DUID, every link), by each configured subscriber link, and by each
//! configured remote-id — whichever of these the operator configured. On link-up only that
//! link is asked for, by link-address. Each binding goes to the [`BindingSink`] as it arrives
//! (the cache merges duplicates from overlapping queries and servers idempotently), so routes
//! follow while the stream is still running. [`recover`] returns when every server answered
//! DONE or was given up on: that is the moment to signal readiness.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::BulkConfig;
use super::core::{BulkBinding, BulkQuery};
use super::stats::{BulkStats, Counter};
use super::tcp::{self, BulkEvent, QueryResult, ServerQueries, ServerReport};
use crate::cache::from_wire::{ClientDataContext, FromWireError, observation_from_reply};
use crate::cache::{LeaseKey, Link, Observation, Source, Sweep, Timestamp};
use crate::cache_task::{CacheHandle, CacheInput};
use crate::requestor::QueryId;
use crate::time::{AgentClock, Duration, Instant};
use crate::wire::Duid;

/// What recovery asks for, and whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Bulk leasequery servers (TCP, normally port 547).
    pub servers: Vec<SocketAddr>,
    /// Our relay DUID: ask by relay-id over every link (needs the relay to send RELAY_ID).
    pub relay_id: Option<Duid>,
    /// Subscriber links (relay link-addresses) to ask for one by one.
    pub links: Vec<Ipv6Addr>,
    /// Remote-ids (enterprise, id) to ask for.
    pub remote_ids: Vec<(u32, Vec<u8>)>,
}

impl RecoveryPlan {
    fn per_server(&self, queries: Vec<BulkQuery>) -> Vec<ServerQueries> {
        self.servers
            .iter()
            .map(|&server| ServerQueries {
                server,
                queries: queries.clone(),
            })
            .collect()
    }

    /// Everything to ask after a restart.
    pub fn startup(&self) -> Vec<ServerQueries> {
        let mut q = Vec::new();
        if let Some(relay_id) = &self.relay_id {
            q.push(BulkQuery::RelayId {
                relay_id: relay_id.clone(),
                link: Ipv6Addr::UNSPECIFIED,
            });
        }
        q.extend(self.links.iter().map(|&l| BulkQuery::LinkAddress(l)));
        q.extend(
            self.remote_ids
                .iter()
                .map(|(enterprise, id)| BulkQuery::RemoteId {
                    enterprise: *enterprise,
                    remote_id: id.clone(),
                    link: Ipv6Addr::UNSPECIFIED,
                }),
        );
        self.per_server(q)
    }

    /// What to ask when the subscriber link `link` comes up: that link only.
    pub fn link_up(&self, link: Ipv6Addr) -> Vec<ServerQueries> {
        self.per_server(vec![BulkQuery::LinkAddress(link)])
    }
}

/// The consumer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("binding sink closed")]
pub struct SinkClosed;

/// What one bulk query by link-address or relay-id listed, once it finished with
/// LEASEQUERY-DONE: the server's whole holding in its scope (merge rule R16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The answering server's SERVERID.
    pub server_duid: Duid,
    /// The link the query covered; `None` = every link of our relay.
    pub link: Option<Ipv6Addr>,
    /// Every address and prefix its messages carried (usable or not).
    pub mentioned: HashSet<LeaseKey>,
    /// When the recovery run that asked it started (before its first attempt).
    pub started: Instant,
    /// When the query finished.
    pub finished: Instant,
}

/// Most bindings [`recover`] hands to its sink at once ([`BindingSink::deliver_batch`]): those
/// already waiting when one arrives, so a batch costs no wait. Bounded so that the cache task,
/// which takes a batch as one message, never holds more than this many decoded answers of one
/// batch, and the sink's back-pressure still reaches the TCP reads.
pub(crate) const DELIVER_BATCH: usize = 256;

/// Most keys one query's [`Listing`] collects; a larger answer is not swept (counted in the
/// log), which keeps the memory a listing takes bounded.
pub(crate) const MAX_LISTED: usize = 4 << 20;

/// Where recovered bindings go (the daemon: the cache, whose change stream drives routes).
pub trait BindingSink: Send {
    /// Take one binding from `server`. Awaiting here slows the TCP reads (backpressure).
    fn deliver(
        &mut self,
        server: SocketAddr,
        binding: BulkBinding,
    ) -> impl Future<Output = Result<(), SinkClosed>> + Send;

    /// Take bindings that arrived together, in order (each with its server). The default
    /// delivers them one by one; the cache's sink hands them over as one message.
    fn deliver_batch(
        &mut self,
        batch: Vec<(SocketAddr, BulkBinding)>,
    ) -> impl Future<Output = Result<(), SinkClosed>> + Send {
        async move {
            for (server, binding) in batch {
                self.deliver(server, binding).await?;
            }
            Ok(())
        }
    }

    /// A query by link-address or relay-id finished with LEASEQUERY-DONE: what it listed is all
    /// `server` holds in its scope. The default ignores it (no removal from silence).
    fn listed(
        &mut self,
        server: SocketAddr,
        listing: Listing,
    ) -> impl Future<Output = Result<(), SinkClosed>> + Send {
        let _ = (server, listing);
        std::future::ready(Ok(()))
    }
}

/// A channel is a sink.
impl BindingSink for mpsc::Sender<(SocketAddr, BulkBinding)> {
    async fn deliver(
        &mut self,
        server: SocketAddr,
        binding: BulkBinding,
    ) -> Result<(), SinkClosed> {
        self.send((server, binding)).await.map_err(|_| SinkClosed)
    }
}

/// Why a recovered binding did not become a cache observation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unusable {
    #[error("no link: neither LQ_RELAY_DATA nor the query names one")]
    NoLink,
    #[error(transparent)]
    Data(#[from] FromWireError),
}

impl Unusable {
    /// Log and metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Unusable::NoLink => "no_link",
            Unusable::Data(e) => e.label(),
        }
    }
}

/// The cache input for `b`, arrived at `arrival` (agent clock): the cache's own CLIENT_DATA
/// conversion ([`observation_from_reply`]), tagged `Source::Bulk`, which never makes it
/// `complete` (a bulk LEASEQUERY-DATA says nothing about leases it does not carry; only the end
/// of the whole query does: [`Listing`], merge rule R16). A binding whose link is still
/// unknown cannot be routed and is refused.
pub fn observation(b: &BulkBinding, arrival: Timestamp) -> Result<Observation, Unusable> {
    let ctx = ClientDataContext {
        source: Source::Bulk,
        link: Link {
            address: b.answer.link,
            interface: None,
        },
        arrival,
    };
    let obs = observation_from_reply(&b.answer, &ctx)?;
    if obs.link.address.is_unspecified() {
        return Err(Unusable::NoLink);
    }
    Ok(obs)
}

/// The daemon's sink: each binding becomes a `Source::Bulk` observation queued to the cache
/// task (awaiting room: back-pressure reaches the TCP reads). Bindings that cannot be placed
/// (no link) are counted in [`CacheSink::unusable`] and skipped.
#[derive(Debug, Clone)]
pub struct CacheSink {
    cache: CacheHandle,
    clock: AgentClock,
    unusable: Arc<AtomicU64>,
}

impl CacheSink {
    pub fn new(cache: CacheHandle, clock: AgentClock) -> Self {
        CacheSink {
            cache,
            clock,
            unusable: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bindings skipped because they could not become observations.
    pub fn unusable(&self) -> u64 {
        self.unusable.load(Ordering::Relaxed)
    }
}

impl BindingSink for CacheSink {
    async fn deliver(
        &mut self,
        server: SocketAddr,
        binding: BulkBinding,
    ) -> Result<(), SinkClosed> {
        match observation(&binding, self.clock.at_std(binding.stamped)) {
            Ok(obs) => self.cache.observe(obs).await.map_err(|_| SinkClosed),
            Err(why) => {
                self.unusable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%server, reason = why.label(), "bulk binding skipped");
                Ok(())
            }
        }
    }

    /// One cache message for the batch: the cache task takes it as that many observations, in
    /// order (with snooped inputs still served between them), for one send and one wake-up.
    async fn deliver_batch(
        &mut self,
        batch: Vec<(SocketAddr, BulkBinding)>,
    ) -> Result<(), SinkClosed> {
        let mut obs = Vec::with_capacity(batch.len());
        for (server, binding) in &batch {
            match observation(binding, self.clock.at_std(binding.stamped)) {
                Ok(o) => obs.push(o),
                Err(why) => {
                    self.unusable.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%server, reason = why.label(), "bulk binding skipped");
                }
            }
        }
        if obs.is_empty() {
            return Ok(());
        }
        self.cache
            .send(CacheInput::ObserveBatch(obs))
            .await
            .map_err(|_| SinkClosed)
    }

    async fn listed(&mut self, server: SocketAddr, l: Listing) -> Result<(), SinkClosed> {
        tracing::debug!(%server, link = ?l.link, mentioned = l.mentioned.len(), "bulk query listed its scope: sweeping what it did not mention");
        let sweep = Sweep {
            server_duid: l.server_duid,
            link: l.link,
            mentioned: l.mentioned,
            started: self.clock.at_std(l.started),
            finished: self.clock.at_std(l.finished),
        };
        self.cache
            .send(CacheInput::Sweep(sweep))
            .await
            .map_err(|_| SinkClosed)
    }
}

/// The addresses and prefixes one binding carries: the same leases its observation holds (one
/// extractor, one bad-prefix policy; a bad prefix was counted when the connection read it).
fn keys_of(b: &BulkBinding) -> impl Iterator<Item = LeaseKey> + '_ {
    b.answer.observed.leases.iter().map(|l| l.key)
}

/// What one query has listed so far (across its attempts).
#[derive(Debug, Default)]
struct Listed {
    server_duid: Option<Duid>,
    keys: HashSet<LeaseKey>,
    /// Too many keys, or answers under two server DUIDs (the server changed between attempts):
    /// no sweep.
    overflow: bool,
}

impl Listed {
    fn add(&mut self, b: &BulkBinding) {
        match &self.server_duid {
            None => self.server_duid = Some(b.answer.server_duid.clone()),
            Some(d) if *d != b.answer.server_duid => self.overflow = true,
            Some(_) => {}
        }
        for k in keys_of(b) {
            if self.keys.len() >= MAX_LISTED {
                self.overflow = true;
                return;
            }
            self.keys.insert(k);
        }
    }

    /// The listing to sweep by, when `query` finished with `result` and may sweep (R16).
    fn listing(self, query: &BulkQuery, result: &QueryResult, started: Instant) -> Option<Listing> {
        let link = match query {
            BulkQuery::LinkAddress(l) => Some(*l),
            BulkQuery::RelayId { .. } => query.link(),
            BulkQuery::RemoteId { .. } => return None,
        };
        // Bindings > 0 means the stream ended with DONE (a REPLY with data starts a stream).
        let done = matches!(result, QueryResult::Complete { bindings } if *bindings > 0);
        if !done || self.overflow {
            return None;
        }
        Some(Listing {
            server_duid: self.server_duid?,
            link,
            mentioned: self.keys,
            started,
            finished: Instant::now(),
        })
    }
}

/// How a recovery run went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub servers: Vec<(SocketAddr, ServerReport)>,
    pub bindings: u64,
    pub elapsed: Duration,
}

impl RecoveryReport {
    /// Servers whose every query completed.
    pub fn complete_servers(&self) -> usize {
        self.servers
            .iter()
            .filter(|(_, r)| r.all_complete())
            .count()
    }
}

/// Ask `queries`, feed every binding to `sink` as it arrives, return when every server is
/// finished (readiness). Progress is logged every `PROGRESS_EVERY` bindings and counted in
/// `stats`.
pub async fn recover(
    queries: Vec<ServerQueries>,
    cfg: Arc<BulkConfig>,
    stats: Arc<BulkStats>,
    mut sink: impl BindingSink,
) -> RecoveryReport {
    const PROGRESS_EVERY: u64 = 10_000;
    let started = Instant::now();
    let servers = queries.len();
    let (tx, mut rx) = mpsc::channel(cfg.channel_capacity.max(1));
    // Aborted when this future is dropped (a link-up job cancelled): the connections close
    // with it rather than waiting out a silent server's data timeout.
    let mut run = AbortOnDrop(tokio::spawn(tcp::run(queries, cfg, tx, stats.clone())));
    let mut bindings = 0u64;
    let mut finished = 0usize;
    let mut listed: HashMap<(SocketAddr, QueryId), Listed> = HashMap::new();
    let mut next = rx.recv().await;
    while let Some(ev) = next.take() {
        match ev {
            BulkEvent::Binding { server, binding } => {
                // The bindings already waiting behind this one go with it, in order, up to
                // DELIVER_BATCH: one hand-over to the sink for them all. Any other event ends
                // the batch and is handled right after it.
                let mut batch = Vec::with_capacity(DELIVER_BATCH.min(rx.len() + 1));
                let mut one = Some((server, binding));
                while let Some((server, binding)) = one.take() {
                    listed
                        .entry((server, binding.query))
                        .or_default()
                        .add(&binding);
                    batch.push((server, *binding));
                    if batch.len() >= DELIVER_BATCH {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(BulkEvent::Binding { server, binding }) => one = Some((server, binding)),
                        Ok(other) => next = Some(other),
                        Err(_) => {}
                    }
                }
                let n = batch.len() as u64;
                if sink.deliver_batch(batch).await.is_err() {
                    break;
                }
                let before = bindings;
                bindings += n;
                if bindings / PROGRESS_EVERY != before / PROGRESS_EVERY {
                    tracing::info!(
                        bindings,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "bulk recovery: progress"
                    );
                }
            }
            BulkEvent::QueryFinished {
                server,
                id,
                query,
                result,
            } => {
                stats.query_finished(server, query.kind(), &result);
                let l = listed.remove(&(server, id)).unwrap_or_default();
                if l.overflow {
                    tracing::warn!(%server, query = query.label(), "bulk query not swept: more than MAX_LISTED leases, or answers under two server DUIDs");
                }
                if let Some(listing) = l.listing(&query, &result, started) {
                    if sink.listed(server, listing).await.is_err() {
                        break;
                    }
                }
                match result {
                    QueryResult::Complete { bindings } => {
                        tracing::debug!(%server, query = query.label(), bindings, "bulk query done")
                    }
                    other => {
                        tracing::warn!(%server, query = query.label(), result = ?other, "bulk query not complete")
                    }
                }
            }
            BulkEvent::ServerFinished { server, report } => {
                finished += 1;
                tracing::info!(
                    %server,
                    bindings = report.bindings,
                    complete = report.all_complete(),
                    finished,
                    servers,
                    "bulk recovery: server finished"
                );
            }
        }
        if next.is_none() {
            next = rx.recv().await;
        }
    }
    drop(rx);
    let reports = (&mut run.0).await.unwrap_or_default();
    let report = RecoveryReport {
        servers: reports,
        bindings,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        bindings,
        servers,
        complete = report.complete_servers(),
        given_up = stats.get(Counter::QueriesGivenUp),
        elapsed_ms = report.elapsed.as_millis() as u64,
        "bulk recovery finished"
    );
    report
}

/// A spawned task that ends with its owner.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::from_wire::{ClientAnswer, observed_leases};
    use crate::cache::{IaType, LeaseKey};
    use crate::wire::{
        ClientData, DhcpOption, IaAddr, IaPrefix, LqRelayData, Message, MessageType, Options,
        RelayMessage,
    };

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// A CLIENT_DATA whose LQ_RELAY_DATA holds two relay levels: the outer one, this box's (link
    /// 2001:db8:9::1, peer = the inner relay) and the inner one nearest the client (link
    /// 2001:db8:1::1, peer = the client's link-local address, Interface-Id, Remote-Id): an
    /// LDRA's, or a subscriber's posing as one.
    fn binding() -> BulkBinding {
        let mut inner =
            RelayMessage::new(MessageType::RELAY_FORW, 0, a("2001:db8:1::1"), a("fe80::7"));
        inner
            .options
            .push(DhcpOption::InterfaceId(b"sub1".to_vec()));
        inner.options.push(DhcpOption::RemoteId {
            enterprise: 9,
            remote_id: vec![1],
        });
        let mut outer = RelayMessage::new(
            MessageType::RELAY_FORW,
            1,
            a("2001:db8:9::1"),
            a("2001:db8:1::2"),
        );
        outer
            .options
            .push(DhcpOption::RelayMsg(Box::new(Message::Relay(inner))));
        let data = ClientData {
            options: Options(vec![
                DhcpOption::ClientId(Duid::ll_ethernet([0xa, 0, 0, 0, 0, 7])),
                DhcpOption::IaAddr(IaAddr::new(a("2001:db8:1::7"), 10, 20)),
                DhcpOption::IaPrefix(IaPrefix::new("2001:db8:700::/56".parse().unwrap(), 30, 40)),
                DhcpOption::CltTime(3),
                DhcpOption::LqRelayData(Box::new(LqRelayData {
                    peer_address: a("2001:db8:9::1"),
                    relay: outer,
                })),
            ]),
        };
        BulkBinding {
            query: QueryId::new(1),
            answer: ClientAnswer {
                observed: observed_leases(&data),
                data,
                top_relay_data: None,
                top_base_time: None,
                srsn: Some(9),
                link: a("2001:db8:9::1"),
                server_duid: Duid::ll_ethernet([2, 0, 0, 0, 5, 0x47]),
                server: "[2001:db8:ff::2]:547".parse().unwrap(),
                received: Instant::now(),
            },
            stamped: Instant::now(),
        }
    }

    #[test]
    fn bulk_binding_becomes_an_incomplete_observation_from_this_boxs_relay_level() {
        let o = observation(&binding(), Timestamp::from_secs(1000)).unwrap();
        assert_eq!(o.source, Source::Bulk);
        // One LEASEQUERY-DATA never implies that what it does not carry is gone (R7, R16).
        assert!(!o.complete);
        // This box's level (the outermost) names the link and gives the peer-address; the
        // level inside it is only the access port, for admission to accept or refuse (A7).
        assert_eq!(o.link.address, a("2001:db8:9::1"));
        let r = o.relay.as_ref().unwrap();
        assert_eq!(r.peer_address, Some(a("2001:db8:1::2")));
        assert_eq!(r.interface_id, None);
        let access = r.access.as_ref().unwrap();
        assert_eq!(access.levels, 1);
        assert_eq!(access.peer_address, Some(a("fe80::7")));
        assert_eq!(access.interface_id.as_deref(), Some(&b"sub1"[..]));
        // Remote-Id as the snooper stores it: enterprise-number then remote-id.
        assert_eq!(access.remote_id.as_deref(), Some(&[0, 0, 0, 9, 1][..]));
        assert_eq!(o.server.address, a("2001:db8:ff::2"));
        assert_eq!(o.clt_time, Some(3));
        assert_eq!(o.srsn, Some(9));
        assert_eq!(o.leases.len(), 2);
        assert_eq!(o.leases[0].key, LeaseKey::Address(a("2001:db8:1::7")));
        assert_eq!((o.leases[1].ia, o.leases[1].valid), (IaType::Pd, 40));
    }

    #[test]
    fn only_a_link_or_relay_id_query_that_ended_with_done_lists_its_scope() {
        let b = binding();
        let listed = |q: &BulkQuery, r: &QueryResult, extra: Option<BulkBinding>| {
            let mut l = Listed::default();
            l.add(&b);
            if let Some(x) = extra {
                l.add(&x);
            }
            l.listing(q, r, Instant::now())
        };
        let done = QueryResult::Complete { bindings: 1 };
        let link = BulkQuery::LinkAddress(a("2001:db8:1::1"));
        let got = listed(&link, &done, None).expect("a finished link query lists its link");
        assert_eq!(got.link, Some(a("2001:db8:1::1")));
        assert_eq!(
            got.server_duid,
            Duid::ll_ethernet([2, 0, 0, 0, 5, 0x47]).to_vec()
        );
        assert!(
            got.mentioned
                .contains(&LeaseKey::Address(a("2001:db8:1::7")))
        );
        assert!(
            got.mentioned
                .contains(&LeaseKey::Prefix("2001:db8:700::/56".parse().unwrap()))
        );
        let relay = BulkQuery::RelayId {
            relay_id: Duid::ll_ethernet([2, 0, 0, 0, 0xaa, 1]),
            link: Ipv6Addr::UNSPECIFIED,
        };
        assert_eq!(
            listed(&relay, &done, None).unwrap().link,
            None,
            "every link"
        );
        let remote = BulkQuery::RemoteId {
            enterprise: 9,
            remote_id: vec![1],
            link: Ipv6Addr::UNSPECIFIED,
        };
        assert!(
            listed(&remote, &done, None).is_none(),
            "remote-id: no sweep"
        );
        for r in [
            QueryResult::Complete { bindings: 0 },
            QueryResult::GaveUp { attempts: 3 },
            QueryResult::Failed {
                code: crate::wire::StatusCode::NOT_ALLOWED,
                message: String::new(),
            },
        ] {
            assert!(listed(&link, &r, None).is_none(), "{r:?}: no sweep");
        }
        let mut other = binding();
        other.answer.server_duid = Duid::ll_ethernet([2, 0, 0, 0, 5, 0x48]);
        assert!(
            listed(&link, &done, Some(other)).is_none(),
            "answers under two server DUIDs: no sweep"
        );
    }

    #[test]
    fn bindings_without_link_or_clt_time_are_refused_with_a_reason() {
        let mut b = binding();
        b.answer.link = Ipv6Addr::UNSPECIFIED;
        b.answer
            .data
            .options
            .0
            .retain(|o| !matches!(o, DhcpOption::LqRelayData(_)));
        let e = observation(&b, Timestamp::from_secs(1)).unwrap_err();
        assert_eq!((e.clone(), e.label()), (Unusable::NoLink, "no_link"));

        let mut b = binding();
        b.answer
            .data
            .options
            .0
            .retain(|o| !matches!(o, DhcpOption::CltTime(_)));
        let e = observation(&b, Timestamp::from_secs(1)).unwrap_err();
        assert_eq!(e.label(), "no_clt_time");
    }
}
