//! The tokio shell around [`BulkConnection`]: one connection per server at a time, attempts
//! with exponential backoff, every server in parallel, bindings streamed out through a bounded
//! channel as they arrive (a slow consumer slows the reads: backpressure, nothing dropped).
//!
//! A query's attempt is used when it was sent and did not complete (connection lost, data
//! timeout, QueryTerminated/UnspecFail), or when the connection to its server could not be
//! made. After [`BulkConfig::max_attempts`] the query is given up. Other error statuses
//! (NotAllowed, NotConfigured, UnknownQueryType, MalformedQuery, …) are final at once: asking
//! the same server again would get the same answer (RFC 5007 §4.3.3).

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::BulkConfig;
use super::core::{
    BulkBinding, BulkConnection, BulkQuery, CloseReason, ConnConfig, ConnEvent, Outcome,
};
use super::stats::{BulkStats, Counter};
use crate::requestor::QueryId;
use crate::time::TokioInstant as Instant;
// Defined beside the core it summarises, so that `stats` (which counts it) need not import
// this shell, which imports `stats`.
pub use super::core::QueryResult;

/// What the bulk requestor reports, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkEvent {
    /// One client's data from `server`.
    Binding {
        server: SocketAddr,
        binding: Box<BulkBinding>,
    },
    /// A query is over for good.
    QueryFinished {
        server: SocketAddr,
        /// The id its bindings carry ([`BulkBinding::query`]).
        id: QueryId,
        query: BulkQuery,
        result: QueryResult,
    },
    /// Every query to `server` is over: it answered DONE or was given up on.
    ServerFinished {
        server: SocketAddr,
        report: ServerReport,
    },
}

/// Totals for one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerReport {
    pub completed: usize,
    pub failed: usize,
    pub gave_up: usize,
    pub bindings: u64,
    pub connections: u32,
}

impl ServerReport {
    /// Whether every query completed.
    pub fn all_complete(&self) -> bool {
        self.failed == 0 && self.gave_up == 0
    }
}

/// One server and what to ask it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerQueries {
    pub server: SocketAddr,
    pub queries: Vec<BulkQuery>,
}

/// Ask every server its queries in parallel; returns when all are finished (answered DONE
/// or given up), which is when recovery may signal readiness. Returns early with what it
/// has if `out` is closed.
pub async fn run(
    servers: Vec<ServerQueries>,
    cfg: Arc<BulkConfig>,
    out: mpsc::Sender<BulkEvent>,
    stats: Arc<BulkStats>,
) -> Vec<(SocketAddr, ServerReport)> {
    let runs = servers.into_iter().enumerate().map(|(i, s)| {
        let (cfg, out, stats) = (cfg.clone(), out.clone(), stats.clone());
        async move {
            let server = s.server;
            // Query ids unique across servers: the server's index in the high bits.
            let base = QueryId::new((i as u64) << 32);
            let report = run_server(s, base, &cfg, &out, &stats).await;
            let _ = out
                .send(BulkEvent::ServerFinished {
                    server,
                    report: report.clone(),
                })
                .await;
            (server, report)
        }
    });
    futures::future::join_all(runs).await
}

struct Pending {
    id: QueryId,
    query: BulkQuery,
    attempts: u32,
}

/// The receiver is gone: stop.
struct Closed;

struct ServerRun<'a> {
    server: SocketAddr,
    cfg: &'a BulkConfig,
    out: &'a mpsc::Sender<BulkEvent>,
    stats: &'a BulkStats,
    todo: VecDeque<Pending>,
    attempts: std::collections::HashMap<QueryId, u32>,
    report: ServerReport,
    progressed: bool,
}

/// Connect to `server`, from `source` when set: bind before connect, so a server that
/// authorizes requesters by address (Kea answers nothing to an unlisted one) sees the configured
/// address rather than whichever one the route picks.
async fn connect(server: SocketAddr, source: Option<Ipv6Addr>) -> std::io::Result<TcpStream> {
    let Some(src) = source else {
        return TcpStream::connect(server).await;
    };
    let sock = if server.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    sock.bind(SocketAddr::from((src, 0)))?;
    sock.connect(server).await
}

/// All of one server's queries, attempt after attempt, until each is over.
pub(crate) async fn run_server(
    s: ServerQueries,
    first_id: QueryId,
    cfg: &BulkConfig,
    out: &mpsc::Sender<BulkEvent>,
    stats: &BulkStats,
) -> ServerReport {
    let mut run = ServerRun {
        server: s.server,
        cfg,
        out,
        stats,
        todo: s
            .queries
            .into_iter()
            .enumerate()
            .map(|(i, query)| Pending {
                id: QueryId::new(first_id.get() + i as u64),
                query,
                attempts: 0,
            })
            .collect(),
        attempts: Default::default(),
        report: ServerReport::default(),
        progressed: false,
    };
    // Retries since the last progress: the delay is `retry_initial` doubling to `retry_max`.
    let mut attempt: u32 = 0;
    while !run.todo.is_empty() {
        run.progressed = false;
        // A slot under the global bound, held while the socket is open (connecting included)
        // and given back before the backoff.
        let slot = stats.connection_slot().await;
        let connected =
            tokio::time::timeout(cfg.connect_timeout, connect(s.server, cfg.source_address)).await;
        let result = match connected {
            Ok(Ok(stream)) => {
                stats.inc(Counter::Connects);
                run.report.connections += 1;
                run.connection(stream).await
            }
            _ => {
                stats.inc(Counter::ConnectFailures);
                tracing::debug!(server = %s.server, "bulk leasequery: connect failed");
                let failed: Vec<Pending> = run.todo.drain(..).collect();
                let mut r = Ok(());
                for p in failed {
                    r = r.and(run.retry_or_give_up(p.id, p.query, p.attempts + 1).await);
                }
                r
            }
        };
        drop(slot);
        if result.is_err() {
            break;
        }
        if run.todo.is_empty() {
            break;
        }
        if run.progressed {
            attempt = 0;
        }
        let backoff = crate::time::backoff(attempt, cfg.retry_initial, cfg.retry_max);
        tracing::info!(
            server = %s.server,
            pending = run.todo.len(),
            backoff_ms = backoff.as_millis() as u64,
            "bulk leasequery: retrying"
        );
        tokio::time::sleep(backoff).await;
        attempt = attempt.saturating_add(1);
    }
    run.report
}

impl ServerRun<'_> {
    async fn retry_or_give_up(
        &mut self,
        id: QueryId,
        query: BulkQuery,
        attempts: u32,
    ) -> Result<(), Closed> {
        if attempts >= self.cfg.max_attempts {
            self.stats.inc(Counter::QueriesGivenUp);
            self.report.gave_up += 1;
            tracing::warn!(server = %self.server, query = query.label(), attempts, "bulk leasequery: giving up");
            return self
                .finish(id, query, QueryResult::GaveUp { attempts })
                .await;
        }
        self.stats.inc(Counter::Retries);
        self.todo.push_back(Pending {
            id,
            query,
            attempts,
        });
        Ok(())
    }

    async fn finish(
        &mut self,
        id: QueryId,
        query: BulkQuery,
        result: QueryResult,
    ) -> Result<(), Closed> {
        self.out
            .send(BulkEvent::QueryFinished {
                server: self.server,
                id,
                query,
                result,
            })
            .await
            .map_err(|_| Closed)
    }

    async fn on_finished(
        &mut self,
        id: QueryId,
        query: BulkQuery,
        outcome: Outcome,
    ) -> Result<(), Closed> {
        let attempts = self.attempts.remove(&id).unwrap_or(0);
        match outcome {
            Outcome::Complete { bindings } => {
                self.progressed = true;
                self.stats.inc(Counter::QueriesCompleted);
                self.report.completed += 1;
                self.finish(id, query, QueryResult::Complete { bindings })
                    .await
            }
            Outcome::NotSent => {
                self.todo.push_back(Pending {
                    id,
                    query,
                    attempts,
                });
                Ok(())
            }
            o if o.retryable() => {
                match &o {
                    Outcome::Lost { .. } => self.stats.inc(Counter::ConnectionsLost),
                    Outcome::TimedOut { .. } => self.stats.inc(Counter::DataTimeouts),
                    _ => self.stats.inc(Counter::StatusRetryable),
                }
                self.retry_or_give_up(id, query, attempts + 1).await
            }
            Outcome::Status { code, message, .. } => {
                self.stats.inc(Counter::QueriesFailed);
                self.report.failed += 1;
                tracing::warn!(server = %self.server, query = query.label(), status = code.0, %message, "bulk leasequery: query failed");
                self.finish(id, query, QueryResult::Failed { code, message })
                    .await
            }
            // retryable() covers every other outcome.
            Outcome::Lost { .. } | Outcome::TimedOut { .. } => {
                self.retry_or_give_up(id, query, attempts + 1).await
            }
        }
    }

    /// Run the pending queries on one connection until each is finished on it.
    async fn connection(&mut self, mut stream: TcpStream) -> Result<(), Closed> {
        let _ = stream.set_nodelay(true);
        let mut conn = BulkConnection::new(ConnConfig {
            server: self.server,
            requestor_duid: self.cfg.requestor_duid.clone(),
            pipelining: self.cfg.pipelining,
            data_timeout: self.cfg.data_timeout,
            first_xid: rand::random(),
            srsn_option: self.cfg.srsn_option,
        });
        let now = Instant::now().into_std();
        for p in std::mem::take(&mut self.todo) {
            self.attempts.insert(p.id, p.attempts);
            conn.submit(now, p.id, p.query);
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(bytes) = conn.poll_transmit() {
                self.stats.add(Counter::BytesSent, bytes.len() as u64);
                if stream.write_all(&bytes).await.is_err() {
                    conn.handle_closed();
                }
            }
            while let Some(ev) = conn.poll_event() {
                self.on_event(ev).await?;
            }
            if conn.is_closed() || conn.outstanding() == 0 {
                return Ok(());
            }
            let room = conn.room().min(buf.len());
            let deadline = conn.poll_timeout().map(Instant::from_std);
            tokio::select! {
                // Reading first: time spent waiting for our own consumer (back-pressure) must
                // not look like a silent server when its data is already waiting.
                biased;
                // CANCEL-SAFETY: `read` is cancel-safe; nothing is lost if the timer wins.
                r = stream.read(&mut buf[..room]) => match r {
                    Ok(0) | Err(_) => conn.handle_closed(),
                    Ok(n) => {
                        self.stats.add(Counter::BytesReceived, n as u64);
                        conn.handle_bytes(Instant::now().into_std(), &buf[..n]);
                    }
                },
                _ = sleep_until(deadline) => conn.handle_timeout(Instant::now().into_std()),
            }
        }
    }

    async fn on_event(&mut self, ev: ConnEvent) -> Result<(), Closed> {
        match ev {
            ConnEvent::Binding(b) => {
                self.progressed = true;
                self.stats.inc(Counter::Bindings);
                self.report.bindings += 1;
                self.out
                    .send(BulkEvent::Binding {
                        server: self.server,
                        binding: b,
                    })
                    .await
                    .map_err(|_| Closed)
            }
            ConnEvent::Finished { id, query, outcome } => {
                self.on_finished(id, query, outcome).await
            }
            ConnEvent::Discarded(d) => {
                self.stats.discard(d);
                Ok(())
            }
            ConnEvent::Close(reason) => {
                match reason {
                    CloseReason::Protocol(why) => {
                        self.stats.inc(Counter::ProtocolErrors);
                        tracing::warn!(server = %self.server, why, "bulk leasequery: closing connection");
                    }
                    CloseReason::DataTimeout => {
                        tracing::warn!(server = %self.server, "bulk leasequery: data timeout");
                    }
                }
                Ok(())
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_come_from_the_source_address() {
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let lo = Ipv6Addr::LOCALHOST;
        let stream = connect(server, Some(lo)).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V6(lo));
        assert_eq!(stream.local_addr().unwrap(), peer);
        // An address this host does not have: the bind fails, nothing is sent from elsewhere.
        let foreign: Ipv6Addr = "2001:db8:ffff::dead".parse().unwrap();
        let err = connect(server, Some(foreign)).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrNotAvailable, "{err}");
    }

    /// Two servers that accept and never answer, one connection slot: the second server waits
    /// for the slot instead of opening a second connection, and aborting the run gives it back.
    #[tokio::test]
    async fn connections_wait_for_a_slot_under_the_global_bound() {
        let (a, b) = (
            tokio::net::TcpListener::bind("[::1]:0").await.unwrap(),
            tokio::net::TcpListener::bind("[::1]:0").await.unwrap(),
        );
        let servers = [a.local_addr().unwrap(), b.local_addr().unwrap()]
            .into_iter()
            .map(|server| ServerQueries {
                server,
                queries: vec![BulkQuery::LinkAddress("2001:db8:1::1".parse().unwrap())],
            })
            .collect();
        let stats = Arc::new(BulkStats::with_max_connections(1));
        let (tx, _rx) = mpsc::channel(16);
        let run = tokio::spawn(run(
            servers,
            Arc::new(BulkConfig::default()),
            tx,
            stats.clone(),
        ));
        let first = tokio::time::timeout(crate::time::Duration::from_secs(10), async {
            tokio::select! {
                r = a.accept() => r.unwrap().0,
                r = b.accept() => r.unwrap().0,
            }
        })
        .await
        .expect("one server is connected to");
        tokio::time::timeout(crate::time::Duration::from_secs(10), async {
            while stats.get(Counter::SlotWaits) == 0 || stats.get(Counter::Connects) == 0 {
                tokio::time::sleep(crate::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the second server waits for the slot");
        assert_eq!(stats.open_connections(), 1);
        assert_eq!(
            stats.get(Counter::Connects),
            1,
            "the other waits for the slot"
        );
        run.abort();
        let _ = run.await;
        assert_eq!(stats.open_connections(), 0, "slots given back");
        drop(first);
    }
}
