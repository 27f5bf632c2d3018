//! Bulk leasequery progress counters: plain atomics here, exported by `metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::core::{Discard, QueryResult};

crate::label::labels! {
    /// What the bulk requestor counts.
    pub enum Counter {
        Connects => "connects",
        ConnectFailures => "connect_failures",
        ConnectionsLost => "connections_lost",
        DataTimeouts => "data_timeouts",
        ProtocolErrors => "protocol_errors",
        /// QueryTerminated / UnspecFail: asked again later.
        StatusRetryable => "status_retryable",
        Retries => "retries",
        QueriesCompleted => "queries_completed",
        QueriesFailed => "queries_failed",
        QueriesGivenUp => "queries_given_up",
        Bindings => "bindings",
        BytesSent => "bytes_sent",
        BytesReceived => "bytes_received",
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
            .map(|c| (c.label(), self.get(*c)))
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
