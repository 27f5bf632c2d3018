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

use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::BulkConfig;
use super::core::{BulkBinding, BulkQuery};
use super::observe::observation;
use super::stats::{BulkStats, Counter};
use super::tcp::{self, BulkEvent, QueryResult, ServerQueries, ServerReport};
use crate::cache::AgentClock;
use crate::cache::task::CacheHandle;
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

/// Where recovered bindings go (the daemon: the cache, whose change stream drives routes).
pub trait BindingSink: Send {
    /// Take one binding from `server`. Awaiting here slows the TCP reads (backpressure).
    fn deliver(
        &mut self,
        server: SocketAddr,
        binding: BulkBinding,
    ) -> impl Future<Output = Result<(), SinkClosed>> + Send;
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
        match observation(server, &binding, self.clock.at_std(binding.received)) {
            Ok(obs) => self.cache.observe(obs).await.map_err(|_| SinkClosed),
            Err(why) => {
                self.unusable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%server, reason = why.as_str(), "bulk binding skipped");
                Ok(())
            }
        }
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
    let run = tokio::spawn(tcp::run(queries, cfg, tx, stats.clone()));
    let mut bindings = 0u64;
    let mut finished = 0usize;
    while let Some(ev) = rx.recv().await {
        match ev {
            BulkEvent::Binding { server, binding } => {
                if sink.deliver(server, *binding).await.is_err() {
                    break;
                }
                bindings += 1;
                if bindings % PROGRESS_EVERY == 0 {
                    tracing::info!(
                        bindings,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "bulk recovery: progress"
                    );
                }
            }
            BulkEvent::QueryFinished {
                server,
                query,
                result,
            } => match result {
                QueryResult::Complete { bindings } => {
                    tracing::debug!(%server, query = query.kind(), bindings, "bulk query done")
                }
                other => {
                    tracing::warn!(%server, query = query.kind(), result = ?other, "bulk query not complete")
                }
            },
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
    }
    drop(rx);
    let reports = run.await.unwrap_or_default();
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
