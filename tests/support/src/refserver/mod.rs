//! Reference leasequery server — test support, **not part of the agent**.
//!
//! It answers RFC 5007 LEASEQUERY over UDP and RFC 5460 bulk leasequery over TCP from a lease
//! table ([`table`]), can stamp a server-reply-sequence-number option (a local extension, see
//! docs/interop.md), and injects faults on request ([`faults`]). Tests, benches and the lab
//! use it; the lab also because ISC dhcpd cannot answer leasequeries for delegated prefixes.
//!
//! A [`Profile`] makes it answer like a deployed server rather than like the RFCs: `isc` (ISC
//! dhcpd 4.4: absolute Unix CLT_TIME, configured lifetimes, by address only the asked lease,
//! NotConfigured inside a delegated prefix, UnknownQueryType for QUERY_BY_CLIENTID, replies to
//! port 546, no bulk) or `kea` (Kea 3 lease_query hook: elapsed CLT_TIME, remaining lifetimes,
//! one CLIENT_DATA per lease in bulk, LQ_RELAY_DATA at the top level over UDP and inside
//! CLIENT_DATA in bulk, a prefix found by an address inside it, LQ_CLIENT_LINK for a client on
//! several links, queries pipelined behind the first dropped, silence to requesters not in
//! [`ServerConfig::requesters`]). [`ServerConfig::profiled`] also gives each instance its own
//! server DUID, so tests can run several servers answering for the *same* clients with
//! different data.
//!
//! Use from a Rust test: bind the sockets yourself (in the namespace you want: a socket stays
//! in the namespace of the thread that created it), then hand them over:
//!
//! ```text
//! let srv = RefServer::new(table, ServerConfig::default());
//! srv.serve_udp(std::net::UdpSocket::bind("[2001:db8::1]:547")?, None)?;
//! srv.serve_tcp(std::net::TcpListener::bind("[2001:db8::1]:547")?)?;
//! srv.set_faults(FaultPlan::always(Faults { drop: true, ..Faults::default() }));
//! assert_eq!(srv.stats().udp_queries, 1);
//! ```
//!
//! The server runs on its own small tokio runtime (one worker thread), so it works the same
//! from plain and from `#[tokio::test]` tests; dropping the handle stops it.
//! The CLI is `lqrefserver` (examples/lqrefserver.rs).

pub mod answer;
pub mod codec;
pub mod faults;
pub mod table;
mod tcp;
mod udp;

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use answer::{Decision, Pick, Profile, Query, Transport};
pub use faults::{Corrupt, FaultPlan, FaultRule, Faults, RuleTransport};
pub use table::{AddrLease, HexBytes, LeaseEntry, LeaseTable, PrefixLease, RemoteId};

/// How many query records the server keeps for inspection (oldest dropped first).
pub const QUERY_LOG_CAP: usize = 100_000;

/// Server settings that do not change per query.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Our SERVERID (a DUID).
    pub server_duid: Vec<u8>,
    /// Option code carrying a 4-byte big-endian server reply sequence number in every reply
    /// message (LEASEQUERY-REPLY/-DATA/-DONE), counting up from 1 per server. `None`: off.
    pub srsn_option: Option<u16>,
    /// RFC 5460 §7.1 BULK_LQ_MAX_CONNS: further TCP connections are closed at once.
    pub max_tcp_conns: usize,
    /// TCP: answer queries that are pipelined on one connection interleaved (round-robin per
    /// message); otherwise one query at a time, in arrival order.
    pub tcp_interleave: bool,
    /// TCP: emulate servers that process one query per read and silently drop the others
    /// that arrived in the same read.
    pub tcp_drop_pipelined: bool,
    /// Which deployed server to behave like (see [`answer`] and [`codec::Shape`]).
    pub profile: Profile,
    /// Requestor addresses answered; others get nothing at all, not even NotAllowed (Kea 3).
    /// `None`: everyone.
    pub requesters: Option<Vec<std::net::IpAddr>>,
    /// The sequence number before the first one sent (the first reply carries this + 1).
    pub srsn_start: u32,
}

impl ServerConfig {
    /// Settings that make the server behave like `profile`, with DUID number `n` (instances
    /// with different `n` are different servers: RFC 5007 §4.3.4 tells them apart by DUID).
    pub fn profiled(profile: Profile, n: u8) -> Self {
        let mut c = ServerConfig {
            profile,
            server_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 5, 0x47u8.wrapping_add(n)],
            ..ServerConfig::default()
        };
        if profile == Profile::Kea {
            // Kea 3 answers one query per connection read; queries pipelined behind it vanish.
            c.tcp_drop_pipelined = true;
        }
        c
    }

    /// Whether a query from `peer` gets any answer.
    pub fn answers(&self, peer: std::net::IpAddr) -> bool {
        self.requesters.as_ref().is_none_or(|r| r.contains(&peer))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            // DUID-LL, Ethernet, 02:00:00:00:05:47.
            server_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 5, 0x47],
            srsn_option: None,
            max_tcp_conns: 10,
            tcp_interleave: false,
            tcp_drop_pipelined: false,
            profile: Profile::Ideal,
            requesters: None,
            srsn_start: 0,
        }
    }
}

/// One query as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRecord {
    pub transport: Transport,
    pub peer: SocketAddr,
    pub xid: u32,
    pub query_type: u8,
    pub link: Ipv6Addr,
}

/// Counters, read with [`RefServer::stats`].
#[derive(Debug, Default)]
struct Counters {
    udp_queries: AtomicU64,
    udp_discarded: AtomicU64,
    udp_answers_sent: AtomicU64,
    tcp_connections: AtomicU64,
    tcp_refused: AtomicU64,
    tcp_queries: AtomicU64,
    tcp_discarded: AtomicU64,
    tcp_pipelined_dropped: AtomicU64,
    tcp_data_sent: AtomicU64,
    tcp_done_sent: AtomicU64,
    tcp_resets: AtomicU64,
    tcp_active: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub udp_queries: u64,
    pub udp_discarded: u64,
    pub udp_answers_sent: u64,
    pub tcp_connections: u64,
    pub tcp_refused: u64,
    pub tcp_queries: u64,
    pub tcp_discarded: u64,
    pub tcp_pipelined_dropped: u64,
    pub tcp_data_sent: u64,
    pub tcp_done_sent: u64,
    pub tcp_resets: u64,
}

/// State shared by the UDP and TCP tasks.
#[derive(Debug)]
struct Shared {
    config: ServerConfig,
    table: RwLock<Arc<LeaseTable>>,
    faults: Mutex<FaultPlan>,
    counters: Counters,
    log: Mutex<VecDeque<QueryRecord>>,
    srsn: AtomicU32,
}

impl Shared {
    fn table(&self) -> Arc<LeaseTable> {
        self.table.read().expect("table lock").clone()
    }

    fn faults_for(&self, nth: u64, query_type: u8, transport: Transport) -> Faults {
        self.faults
            .lock()
            .expect("faults lock")
            .for_query(nth, query_type, transport)
    }

    fn record(&self, r: QueryRecord) {
        let mut log = self.log.lock().expect("log lock");
        if log.len() == QUERY_LOG_CAP {
            log.pop_front();
        }
        log.push_back(r);
    }

    /// The next sequence number, when the option is configured.
    fn next_srsn(&self) -> Option<(u16, u32)> {
        let code = self.config.srsn_option?;
        Some((code, self.srsn.fetch_add(1, Ordering::Relaxed) + 1))
    }
}

/// A running reference server; dropping it stops every task and closes the sockets.
#[derive(Debug)]
pub struct RefServer {
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl RefServer {
    pub fn new(table: LeaseTable, config: ServerConfig) -> Self {
        let srsn_start = config.srsn_start;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lqrefserver")
            .enable_all()
            .build()
            .expect("build refserver runtime");
        RefServer {
            shared: Arc::new(Shared {
                config,
                table: RwLock::new(Arc::new(table)),
                faults: Mutex::new(FaultPlan::default()),
                counters: Counters::default(),
                log: Mutex::new(VecDeque::new()),
                srsn: AtomicU32::new(srsn_start),
            }),
            rt: Some(rt),
        }
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime present until drop")
    }

    /// Answer RFC 5007 queries arriving on `sock`; `alt` is the socket used for the
    /// `wrong_source` fault (bind it to another address of the same namespace).
    pub fn serve_udp(
        &self,
        sock: std::net::UdpSocket,
        alt: Option<std::net::UdpSocket>,
    ) -> std::io::Result<SocketAddr> {
        sock.set_nonblocking(true)?;
        if let Some(a) = &alt {
            a.set_nonblocking(true)?;
        }
        let local = sock.local_addr()?;
        let shared = self.shared.clone();
        self.rt().spawn(async move {
            if let Err(e) = udp::serve(shared, sock, alt).await {
                eprintln!("lqrefserver udp: {e}");
            }
        });
        Ok(local)
    }

    /// Answer RFC 5460 bulk queries on connections accepted from `listener`. The `isc` profile
    /// has no bulk leasequery: it closes the listener (connections are refused).
    pub fn serve_tcp(&self, listener: std::net::TcpListener) -> std::io::Result<SocketAddr> {
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        if self.shared.config.profile == Profile::Isc {
            return Ok(local);
        }
        let shared = self.shared.clone();
        self.rt().spawn(async move {
            if let Err(e) = tcp::serve(shared, listener).await {
                eprintln!("lqrefserver tcp: {e}");
            }
        });
        Ok(local)
    }

    /// Replace the fault plan; takes effect for the next query.
    pub fn set_faults(&self, plan: FaultPlan) {
        *self.shared.faults.lock().expect("faults lock") = plan;
    }

    /// Replace the lease table; takes effect for the next query.
    pub fn set_table(&self, table: LeaseTable) {
        *self.shared.table.write().expect("table lock") = Arc::new(table);
    }

    /// Every query seen so far (up to [`QUERY_LOG_CAP`], newest last).
    pub fn queries(&self) -> Vec<QueryRecord> {
        self.shared
            .log
            .lock()
            .expect("log lock")
            .iter()
            .cloned()
            .collect()
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            udp_queries: g(&c.udp_queries),
            udp_discarded: g(&c.udp_discarded),
            udp_answers_sent: g(&c.udp_answers_sent),
            tcp_connections: g(&c.tcp_connections),
            tcp_refused: g(&c.tcp_refused),
            tcp_queries: g(&c.tcp_queries),
            tcp_discarded: g(&c.tcp_discarded),
            tcp_pipelined_dropped: g(&c.tcp_pipelined_dropped),
            tcp_data_sent: g(&c.tcp_data_sent),
            tcp_done_sent: g(&c.tcp_done_sent),
            tcp_resets: g(&c.tcp_resets),
        }
    }

    /// The counters once the server is done with `connections` TCP connections: each one
    /// accepted, read to its end and closed, none still open. The server counts a query when
    /// its reader gets to it, which can be after the requestor has timed out and closed (the
    /// bytes wait in the socket), so a test comparing the counters with what a requestor did
    /// asks here rather than [`RefServer::stats`]. Panics if that has not happened `within`.
    pub fn stats_after_tcp(&self, connections: u64, within: Duration) -> Stats {
        let c = &self.shared.counters;
        let deadline = Instant::now() + within;
        loop {
            // Acquire pairs with the release in `tcp::serve` after a connection's tasks end:
            // what they counted is visible to the loads in `stats`.
            let active = c.tcp_active.load(Ordering::Acquire);
            let stats = self.stats();
            if active == 0 && stats.tcp_connections >= connections {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "refserver not settled within {within:?}: {active} connections open, \
                 {stats:?}, waiting for {connections} connections"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn server_duid(&self) -> &[u8] {
        &self.shared.config.server_duid
    }
}

impl Drop for RefServer {
    fn drop(&mut self) {
        // shutdown_background is allowed inside an async context, unlike dropping a runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
