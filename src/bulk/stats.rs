//! Bulk leasequery progress counters: atomics keyed by [`Counter`] and [`Discard`], read in
//! place when the daemon exports them (`daemon::export`, at scrape time).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::core::{Discard, QueryResult};
use crate::wire::LeasequeryType;

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
        /// Link-up recoveries started (one per link at a time, debounced).
        LinkupJobs => "linkup_jobs",
        /// Link-up recoveries cancelled because their link went down again.
        LinkupCancelled => "linkup_cancelled",
        /// Connections that waited for a slot under the global bound.
        SlotWaits => "slot_waits",
    }
}

/// Shared by every server's task; read at any time for progress logs and metrics. It also holds
/// the one thing every bulk run shares besides counters: the global bound on open connections
/// (start-up and every link-up recovery draw from the same slots).
#[derive(Debug)]
pub struct BulkStats {
    counters: [AtomicU64; Counter::ALL.len()],
    discards: [AtomicU64; Discard::ALL.len()],
    queries: QueryObserver,
    slots: tokio::sync::Semaphore,
    max_connections: usize,
}

/// Default bound on bulk connections open at once, over every server and recovery.
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;

impl Default for BulkStats {
    fn default() -> Self {
        BulkStats::with_max_connections(DEFAULT_MAX_CONNECTIONS)
    }
}

/// Sees each finished query: (server, query type as `BulkQuery::kind`, result).
type QueryFn = Box<dyn Fn(SocketAddr, LeasequeryType, &QueryResult) + Send + Sync>;

#[derive(Default)]
struct QueryObserver(std::sync::OnceLock<QueryFn>);

impl std::fmt::Debug for QueryObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryObserver")
    }
}

impl BulkStats {
    /// Stats whose runs together open at most `max` connections (at least one).
    pub fn with_max_connections(max: usize) -> Self {
        let max = max.max(1);
        BulkStats {
            counters: Default::default(),
            discards: Default::default(),
            queries: QueryObserver::default(),
            slots: tokio::sync::Semaphore::new(max),
            max_connections: max,
        }
    }

    /// Wait for a connection slot; the connection may be open while the permit lives. Waiting
    /// (the bound reached) is counted as `slot_waits`.
    pub(crate) async fn connection_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if let Ok(p) = self.slots.try_acquire() {
            return Some(p);
        }
        self.inc(Counter::SlotWaits);
        // The semaphore is never closed, so this returns a permit.
        self.slots.acquire().await.ok()
    }

    /// Bulk connections open (or being opened) now: `lqagent_bulk_connections`.
    pub fn open_connections(&self) -> usize {
        self.max_connections - self.slots.available_permits()
    }

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
        f: impl Fn(SocketAddr, LeasequeryType, &QueryResult) + Send + Sync + 'static,
    ) -> bool {
        self.queries.0.set(Box::new(f)).is_ok()
    }

    pub(crate) fn query_finished(&self, server: SocketAddr, kind: LeasequeryType, r: &QueryResult) {
        if let Some(f) = self.queries.0.get() {
            f(server, kind, r);
        }
    }
}
