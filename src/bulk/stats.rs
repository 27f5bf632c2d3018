//! Bulk leasequery progress counters: plain atomics here, exported by `metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::core::{Discard, QueryResult};

/// What the bulk requestor counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Connects,
    ConnectFailures,
    ConnectionsLost,
    DataTimeouts,
    ProtocolErrors,
    /// QueryTerminated / UnspecFail: asked again later.
    StatusRetryable,
    Retries,
    QueriesCompleted,
    QueriesFailed,
    QueriesGivenUp,
    Bindings,
    BytesSent,
    BytesReceived,
}

impl Counter {
    pub const ALL: [Counter; 13] = [
        Counter::Connects,
        Counter::ConnectFailures,
        Counter::ConnectionsLost,
        Counter::DataTimeouts,
        Counter::ProtocolErrors,
        Counter::StatusRetryable,
        Counter::Retries,
        Counter::QueriesCompleted,
        Counter::QueriesFailed,
        Counter::QueriesGivenUp,
        Counter::Bindings,
        Counter::BytesSent,
        Counter::BytesReceived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Connects => "connects",
            Counter::ConnectFailures => "connect_failures",
            Counter::ConnectionsLost => "connections_lost",
            Counter::DataTimeouts => "data_timeouts",
            Counter::ProtocolErrors => "protocol_errors",
            Counter::StatusRetryable => "status_retryable",
            Counter::Retries => "retries",
            Counter::QueriesCompleted => "queries_completed",
            Counter::QueriesFailed => "queries_failed",
            Counter::QueriesGivenUp => "queries_given_up",
            Counter::Bindings => "bindings",
            Counter::BytesSent => "bytes_sent",
            Counter::BytesReceived => "bytes_received",
        }
    }
}

/// Shared by every server's task; read at any time for progress logs and metrics.
#[derive(Debug, Default)]
pub struct BulkStats {
    counters: [AtomicU64; Counter::ALL.len()],
    discards: [AtomicU64; Discard::ALL.len()],
    queries: QueryObserver,
}

/// Sees each finished query: (server, query kind as `BulkQuery::kind`, result).
type QueryFn = Box<dyn Fn(SocketAddr, &'static str, &QueryResult) + Send + Sync>;

#[derive(Default)]
struct QueryObserver(std::sync::OnceLock<QueryFn>);

impl std::fmt::Debug for QueryObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryObserver")
    }
}

impl BulkStats {
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    pub fn add(&self, c: Counter, n: u64) {
        self.counters[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Ordering::Relaxed)
    }

    pub fn discard(&self, d: Discard) {
        self.discards[d as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Messages dropped for reason `d`.
    pub fn discarded(&self, d: Discard) -> u64 {
        self.discards[d as usize].load(Ordering::Relaxed)
    }

    /// Have `f` see every finished query (the daemon counts them by type, server and outcome).
    /// Set once; later calls are ignored and return false.
    pub fn observe_queries(
        &self,
        f: impl Fn(SocketAddr, &'static str, &QueryResult) + Send + Sync + 'static,
    ) -> bool {
        self.queries.0.set(Box::new(f)).is_ok()
    }

    pub(crate) fn query_finished(&self, server: SocketAddr, kind: &'static str, r: &QueryResult) {
        if let Some(f) = self.queries.0.get() {
            f(server, kind, r);
        }
    }
}

impl BulkStats {
    /// Every counter with its label, for metrics.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|c| (c.as_str(), self.get(*c)))
            .collect()
    }

    /// Discarded messages by reason label, for metrics.
    pub fn discard_snapshot(&self) -> Vec<(&'static str, u64)> {
        Discard::ALL
            .iter()
            .map(|d| (d.label(), self.discarded(*d)))
            .collect()
    }
}
