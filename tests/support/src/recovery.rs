//! Shared by tests/netns/bulk_recovery.rs and benches/recovery.rs: a lab of two namespaces — the
//! agent with veth subscriber links and a veth to the server namespace running reference
//! servers — and the recovery pipeline run inside the agent namespace: bulk leasequery →
//! cache → route installer → kernel.

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lqagent::bulk::BulkConfig;
use lqagent::bulk::core::BulkBinding;
use lqagent::bulk::recovery::observation;
use lqagent::bulk::recovery::{
    BindingSink, CacheSink, RecoveryPlan, RecoveryReport, SinkClosed, recover,
};
use lqagent::bulk::stats::BulkStats;
use lqagent::cache::{BindingStore, Change};
use lqagent::kernel::RouteMapper;
use lqagent::kernel::{InstallerConfig, LinkRef, RouteChange, RouteSpec};
use lqagent::persist::{self, PersistConfig, StateWriter};
use lqagent::prefix::Ipv6Prefix;
use lqagent::time::AgentClock;
use lqagent::wire::Duid;
use tokio::sync::mpsc;

use crate::netns::{NetNs, proto_routes, veth};
use crate::refserver::{
    AddrLease, FaultPlan, HexBytes, LeaseEntry, LeaseTable, PrefixLease, Profile, RefServer,
    ServerConfig,
};

/// Our relay's DUID, as the servers recorded it.
pub const RELAY: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0xaa, 1];

pub fn link(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 1)
}

/// The delegated-prefix space of link `i` (1 ≤ i ≤ 31): 2001:db8:(8000 + i·400)::/38.
pub fn pd_space(i: u16) -> Ipv6Prefix {
    Ipv6Prefix::new(
        Ipv6Addr::new(0x2001, 0xdb8, 0x8000 | (i << 10), 0, 0, 0, 0, 0),
        38,
    )
    .unwrap()
}

/// The `subscriber_prefixes` of link `i`: its /64 for addresses and its delegated-prefix space.
pub fn subscriber_prefixes(i: u16) -> String {
    format!("[\"2001:db8:{i:x}::/64\", \"{}\"]", pd_space(i))
}

/// The `[[links]]` tables for links 1..=`links` of the lab, as `lqagent run` reads them.
pub fn links_config(links: u16) -> String {
    (1..=links)
        .map(|l| {
            format!(
                "\n[[links]]\nname = \"l{l}\"\ninterface = \"{}\"\nlink_address = \"{}\"\n\
                 subscriber_prefixes = {}\n",
                ifname(l),
                link(l),
                subscriber_prefixes(l)
            )
        })
        .collect()
}

/// The admission `lqagent run` builds from [`links_config`]: links 1..=`links`, each with its
/// /64 and its delegated-prefix space.
pub fn admission(links: u16) -> Arc<lqagent::admission::Admission> {
    let rules = (1..=links)
        .map(|l| {
            let own =
                Ipv6Prefix::new(Ipv6Addr::new(0x2001, 0xdb8, l, 0, 0, 0, 0, 0), 64).expect("a /64");
            let mut rule = crate::tasks::link(link(l), &ifname(l), &[own, pd_space(l)]);
            // `links_config` leaves `delegated_length` at its default.
            rule.delegated_length = (48, 64);
            rule
        })
        .collect();
    crate::tasks::admission(rules, &[], &[])
}

pub fn ifname(i: u16) -> String {
    format!("sub{i}")
}

/// Client `n`: on link `1 + n % links`; n % 3 == 0 an address, 1 a /56, 2 both. Every client
/// of a link has its own address and /56 for `n < links · 2^18` (a million routes and more).
pub fn client(n: u32, links: u16) -> LeaseEntry {
    let l = 1 + (n % u32::from(links)) as u16;
    // The client's place among its link's clients: its /56 in the link's /38.
    let i = n / u32::from(links);
    let mut e = LeaseEntry::new(
        [&[0u8, 2, 0, 0, 0x11, 0x8b][..], &n.to_be_bytes()].concat(),
        link(l),
    );
    let (hi, lo) = ((n >> 16) as u16, n as u16);
    if n % 3 != 1 {
        e.addrs.push(AddrLease {
            addr: Ipv6Addr::new(0x2001, 0xdb8, l, 0, 0, 0, hi, lo),
            preferred: 3000,
            valid: 6000,
        });
    }
    if n % 3 != 0 {
        e.prefixes.push(PrefixLease {
            // Each link's own /38 (`pd_space`) holds one /56 per client of that link (2^18 of
            // them), so links' subscriber prefixes never overlap.
            prefix: Ipv6Prefix::new(
                Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    pd_space(l).addr().segments()[2] | ((i >> 8) as u16 & 0x3ff),
                    ((i & 0xff) as u16) << 8,
                    0,
                    0,
                    0,
                    0,
                ),
                56,
            )
            .unwrap(),
            preferred: 3000,
            valid: 6000,
        });
    }
    e.clt_time = 5 + n % 50;
    e.peer_address = Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, hi, lo | 1));
    e.interface_id = Some(HexBytes(ifname(l).into_bytes()));
    e.relay_id = Some(HexBytes(RELAY.to_vec()));
    e
}

pub fn table(range: std::ops::Range<u32>, links: u16) -> LeaseTable {
    let mut t = LeaseTable::from_entries(range.map(|n| client(n, links)));
    for l in 1..=links {
        t.add_link(link(l));
    }
    t
}

pub use crate::netns::Route;

/// The routes the tables call for (RFC 8987 ): a /128 per address on the link's
/// interface, a route per delegated prefix via the client's peer-address.
pub fn expected_routes<'a>(tables: impl IntoIterator<Item = &'a LeaseTable>) -> BTreeSet<Route> {
    let mut out = BTreeSet::new();
    for t in tables {
        for e in t.entries() {
            let dev = ifname(e.link.segments()[2]);
            for a in e.addrs.iter().filter(|a| a.valid != 0) {
                out.insert((format!("{}/128", a.addr), None, dev.clone()));
            }
            for p in e.prefixes.iter().filter(|p| p.valid != 0) {
                let gw = e.peer_address.map(|g| g.to_string());
                out.insert((p.prefix.to_string(), gw, dev.clone()));
            }
        }
    }
    out
}

/// Our routes (protocol 211) in `ns`, read with `ip -j`.
pub fn kernel_routes(ns: &NetNs) -> BTreeSet<Route> {
    proto_routes(ns, &lqagent::kernel::DEFAULT_PROTOCOL.to_string())
}

/// Agent and server namespaces, subscriber links, reference servers.
pub struct Lab {
    pub agent: NetNs,
    pub srv: NetNs,
    pub links: u16,
    pub servers: Vec<SocketAddr>,
    pub refservers: Vec<RefServer>,
}

impl Lab {
    /// One reference server per table, at 2001:db8:ff::2, ::3, … port 547 in the server
    /// namespace; the agent is 2001:db8:ff::1 with links sub1..=subN. Each server has its own
    /// DUID and behaves as the RFCs say (profile `ideal`).
    pub fn new(tag: &str, links: u16, tables: Vec<LeaseTable>, faults: Vec<FaultPlan>) -> Lab {
        let servers = tables
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, ServerConfig::profiled(Profile::Ideal, i as u8)))
            .collect();
        Lab::with_servers(tag, links, servers, faults)
    }

    /// As [`Lab::new`], each server with its own settings (profile, DUID, sequence numbers),
    /// answering over TCP (bulk) and UDP (RFC 5007) on port 547.
    pub fn with_servers(
        tag: &str,
        links: u16,
        servers_cfg: Vec<(LeaseTable, ServerConfig)>,
        faults: Vec<FaultPlan>,
    ) -> Lab {
        let agent = NetNs::new(tag);
        let srv = NetNs::new(tag);
        veth(&agent, "lqa0", &srv, "lqs0");
        agent.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8:ff::1/64",
            "dev",
            "lqa0",
            "nodad",
        ]);
        for l in 1..=links {
            let name = ifname(l);
            // A veth pair inside the agent namespace stands for the subscriber link (no dummy
            // module in every container).
            let peer = format!("{name}p");
            agent.exec(&[
                "ip", "link", "add", &name, "type", "veth", "peer", "name", &peer,
            ]);
            agent.exec(&["ip", "link", "set", &name, "up"]);
            agent.exec(&["ip", "link", "set", &peer, "up"]);
            let addr = format!("{}/64", link(l));
            agent.exec(&["ip", "-6", "addr", "add", &addr, "dev", &name, "nodad"]);
        }
        let mut servers = Vec::new();
        let mut refservers = Vec::new();
        let mut faults = faults.into_iter();
        for (i, (t, config)) in servers_cfg.into_iter().enumerate() {
            let ip = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2 + i as u16);
            srv.exec(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                "lqs0",
                "nodad",
            ]);
            let addr = SocketAddr::from((ip, 547));
            let (listener, udp) = srv.run_in(move || {
                (
                    std::net::TcpListener::bind(addr).expect("bind tcp 547"),
                    std::net::UdpSocket::bind(addr).expect("bind udp 547"),
                )
            });
            let rs = RefServer::new(t, config);
            rs.set_faults(faults.next().unwrap_or_default());
            rs.serve_tcp(listener).unwrap();
            rs.serve_udp(udp, None).unwrap();
            servers.push(addr);
            refservers.push(rs);
        }
        for s in &servers {
            wait_reachable(&agent, s.ip());
        }
        Lab {
            agent,
            srv,
            links,
            servers,
            refservers,
        }
    }

    pub fn plan(&self) -> RecoveryPlan {
        RecoveryPlan {
            servers: self.servers.clone(),
            relay_id: Some(Duid::from(&RELAY)),
            links: Vec::new(),
            remote_ids: Vec::new(),
        }
    }
}

/// Wait until `addr` answers a ping from `ns`, at most 10 s. A server address is not reachable
/// the moment `ip addr add` returns: the kernel joins its solicited-node multicast group later,
/// from a work queue that waits for the RTNL lock (busy when parallel tests install routes), and
/// until then neighbour discovery for it goes unanswered and is only repeated a second later —
/// longer than a requestor's connect timeout. The ping also leaves both neighbour entries
/// resolved. ICMP, so the reference servers count nothing.
pub fn wait_reachable(ns: &NetNs, addr: std::net::IpAddr) {
    let dst = addr.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ping = ns.try_exec(&["ping", "-6", "-n", "-c", "1", "-W", "1", &dst]);
        if ping.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{dst} not reachable from {} within 10 s: {}",
            ns.name(),
            String::from_utf8_lossy(&ping.stdout)
        );
    }
}

pub fn bulk_config() -> BulkConfig {
    BulkConfig {
        requestor_duid: Duid::ll_ethernet([2, 0, 0, 0, 0, 1]),
        data_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        max_attempts: 3,
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..BulkConfig::default()
    }
}

/// The route a recovered binding calls for, straight from the wire data (used until the
/// cache sits in between).
pub fn direct_routes(b: &BulkBinding) -> Vec<RouteChange> {
    let Some(l) = b.answer.placed_link() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in b.answer.data.addresses().filter(|a| a.valid != 0) {
        out.push(RouteChange::Upsert(RouteSpec::address(
            a.addr,
            LinkRef::LinkAddress(l),
        )));
    }
    if let Some(hop) = b
        .answer
        .relay_data()
        .and_then(|rd| rd.chain().peer_address())
    {
        for p in b.answer.data.prefixes().filter(|p| p.valid != 0) {
            if let Ok(p) = p.prefix() {
                out.push(RouteChange::Upsert(RouteSpec::delegated(
                    p,
                    hop,
                    LinkRef::LinkAddress(l),
                )));
            }
        }
    }
    out
}

/// The kernel change for one cache change: the daemon's own mapping (`daemon::routes`), with
/// links left to the kernel's addresses and no lifetime mirrored.
pub fn route_change(c: &Change) -> Option<RouteChange> {
    RouteMapper::new([], None).route_change(c)
}

/// Bindings through the cache (merge rules, duplicates idempotent) into route changes.
pub fn via_cache(
    store: Arc<BindingStore>,
) -> impl FnMut(SocketAddr, BulkBinding) -> Vec<RouteChange> + Send + 'static {
    let clock = AgentClock::new();
    move |_server, b| {
        let Ok(obs) = observation(&b, clock.at_std(b.answer.received)) else {
            return Vec::new();
        };
        store
            .apply(&obs)
            .changes
            .iter()
            .filter_map(route_change)
            .collect()
    }
}

/// Sink: bindings → route changes → a bounded channel to the installer task.
struct KernelSink<F> {
    to_routes: F,
    tx: mpsc::Sender<RouteChange>,
}

impl<F: FnMut(SocketAddr, BulkBinding) -> Vec<RouteChange> + Send> BindingSink for KernelSink<F> {
    async fn deliver(&mut self, server: SocketAddr, b: BulkBinding) -> Result<(), SinkClosed> {
        for c in (self.to_routes)(server, b) {
            self.tx.send(c).await.map_err(|_| SinkClosed)?;
        }
        Ok(())
    }
}

/// What a recovery run in the lab produced.
pub struct Run {
    pub report: RecoveryReport,
    /// From the start of recovery to the last route acknowledged by the kernel.
    pub to_last_route: Duration,
    pub stats: Arc<BulkStats>,
}

/// Run recovery for `queries` inside the agent namespace, routes installed as bindings
/// arrive. `to_routes` turns each binding into route changes (through the cache, or direct).
pub fn run_recovery<F>(
    lab: &Lab,
    queries: Vec<lqagent::bulk::tcp::ServerQueries>,
    cfg: BulkConfig,
    to_routes: F,
) -> Run
where
    F: FnMut(SocketAddr, BulkBinding) -> Vec<RouteChange> + Send + 'static,
{
    lab.agent.run_in(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut inst = lqagent::kernel::Installer::new(InstallerConfig::default())
                .await
                .expect("installer");
            let (tx, mut rx) = mpsc::channel::<RouteChange>(4096);
            let started = Instant::now();
            let installer = tokio::spawn(async move {
                let mut batch = Vec::with_capacity(4096);
                while rx.recv_many(&mut batch, 4096).await > 0 {
                    inst.apply(batch.drain(..)).await.expect("kernel apply");
                }
                (started.elapsed(), inst)
            });
            let stats = Arc::new(BulkStats::default());
            let report = recover(
                queries,
                Arc::new(cfg),
                stats.clone(),
                KernelSink { to_routes, tx },
            )
            .await;
            let (to_last_route, _inst) = installer.await.unwrap();
            Run {
                report,
                to_last_route,
                stats,
            }
        })
    })
}

/// Write the cache's leases as the state file in `dir` (a snapshot, as the agent leaves it).
pub fn save_state(store: &BindingStore, dir: &std::path::Path) {
    let w = StateWriter::start(PersistConfig::new(dir), store.all(), 0).expect("write state");
    w.shutdown();
}

/// Restart from the state file alone, inside the agent namespace: load `dir`, restore each
/// lease into an empty cache, install the routes. Returns (time to the last route acknowledged,
/// leases restored).
pub fn recover_from_state(lab: &Lab, dir: std::path::PathBuf) -> (Duration, usize) {
    lab.agent.run_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut inst = lqagent::kernel::Installer::new(InstallerConfig::default())
                .await
                .expect("installer");
            let started = Instant::now();
            let clock = AgentClock::new();
            let now = clock.now();
            let loaded = persist::load(&dir, now).expect("load state file");
            let store = BindingStore::default();
            let n = loaded.leases.len();
            let mut batch = Vec::with_capacity(4096);
            for (k, l) in loaded.leases {
                if let Some(c) = store.restore(k, l, now) {
                    batch.extend(route_change(&c));
                }
                if batch.len() >= 4096 {
                    inst.apply(batch.drain(..)).await.expect("kernel apply");
                }
            }
            inst.apply(batch.drain(..)).await.expect("kernel apply");
            (started.elapsed(), n)
        })
    })
}

/// The daemon's path: recovery → [`CacheSink`] → cache task → change stream → installer.
/// Returns the run and the store the cache task filled.
pub fn run_recovery_via_cache_task(
    lab: &Lab,
    queries: Vec<lqagent::bulk::tcp::ServerQueries>,
    cfg: BulkConfig,
) -> (Run, Arc<BindingStore>) {
    let links = lab.links;
    lab.agent.run_in(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut inst = lqagent::kernel::Installer::new(InstallerConfig::default())
                .await
                .expect("installer");
            let clock = AgentClock::new();
            let store = Arc::new(BindingStore::default());
            let (handle, mut changes, task) = lqagent::cache_task::spawn(
                store.clone(),
                clock,
                None,
                Default::default(),
                admission(links),
                crate::tasks::no_confirmer(),
                &crate::tasks::supervisor(),
            );
            let started = Instant::now();
            let installer = tokio::spawn(async move {
                let mut batch = Vec::with_capacity(4096);
                while changes.recv_many(&mut batch, 4096).await > 0 {
                    let routes: Vec<RouteChange> =
                        batch.drain(..).filter_map(|c| route_change(&c)).collect();
                    inst.apply(routes).await.expect("kernel apply");
                }
                started.elapsed()
            });
            let stats = Arc::new(BulkStats::default());
            let report = recover(
                queries,
                Arc::new(cfg),
                stats.clone(),
                CacheSink::new(handle, clock),
            )
            .await;
            // The sink (the last cache handle) is gone: the task drains and closes the stream.
            let _ = task.await;
            let to_last_route = installer.await.unwrap();
            (
                Run {
                    report,
                    to_last_route,
                    stats,
                },
                store,
            )
        })
    })
}

/// What [`release_during_recovery`] saw.
pub struct ReleaseRun {
    pub report: RecoveryReport,
    /// Bindings recovery had streamed when the release was sent, and when its removal reached
    /// the installer (`None`: it never did).
    pub streamed_at_release: u64,
    pub streamed_at_removal: Option<u64>,
    pub store: Arc<BindingStore>,
}

/// The daemon's path ([`run_recovery_via_cache_task`]) with a snooper beside it (issue 21): a
/// subscriber on link 1 holding `victim` (a snooped REPLY, before recovery) releases it once
/// recovery has streamed `after` bindings; the release goes in through the snooper's own queue
/// (`CacheHandle::send_snooped`), as `snoop::shell` sends it.
pub fn release_during_recovery(
    lab: &Lab,
    queries: Vec<lqagent::bulk::tcp::ServerQueries>,
    cfg: BulkConfig,
    victim: Ipv6Addr,
    after: u64,
) -> ReleaseRun {
    use lqagent::bulk::stats::Counter;
    use lqagent::cache::{
        ChangeKind, IaType, LeaseKey, Link, Observation, ObservedLease, ServerId, Source,
        WithdrawReason, Withdrawal,
    };
    use lqagent::cache_task::CacheInput;
    use std::sync::atomic::{AtomicU64, Ordering};
    let links = lab.links;
    lab.agent.run_in(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut inst = lqagent::kernel::Installer::new(InstallerConfig::default())
                .await
                .expect("installer");
            let clock = AgentClock::new();
            let store = Arc::new(BindingStore::default());
            let (handle, mut changes, task) = lqagent::cache_task::spawn(
                store.clone(),
                clock,
                None,
                Default::default(),
                admission(links),
                crate::tasks::no_confirmer(),
                &crate::tasks::supervisor(),
            );
            let stats = Arc::new(BulkStats::default());
            let key = LeaseKey::Address(victim);
            let duid: Duid = vec![0, 3, 0, 1, 2, 0, 0, 0, 0xee, 1].into();
            let removal = Arc::new(AtomicU64::new(u64::MAX));
            let (st, rm) = (stats.clone(), removal.clone());
            let installer = tokio::spawn(async move {
                let mut batch = Vec::with_capacity(4096);
                while changes.recv_many(&mut batch, 4096).await > 0 {
                    if batch
                        .iter()
                        .any(|c| c.key == key && c.kind == ChangeKind::Removed)
                    {
                        rm.store(st.get(Counter::Bindings), Ordering::SeqCst);
                    }
                    let routes: Vec<RouteChange> =
                        batch.drain(..).filter_map(|c| route_change(&c)).collect();
                    inst.apply(routes).await.expect("kernel apply");
                }
            });
            // The victim's REPLY, snooped before recovery starts.
            handle
                .send_snooped(CacheInput::Observe(Observation {
                    client_duid: duid.clone(),
                    link: Link {
                        address: link(1),
                        interface: None,
                    },
                    relay: None,
                    server: Arc::new(ServerId {
                        duid: vec![0, 1, 0, 1, 9].into(),
                        address: Ipv6Addr::LOCALHOST,
                    }),
                    source: Source::Snoop,
                    clt_time: None,
                    base_time: None,
                    srsn: None,
                    complete: false,
                    leases: vec![ObservedLease {
                        key,
                        ia: IaType::Na,
                        iaid: 1,
                        preferred: 3000,
                        valid: 6000,
                    }],
                    arrival: clock.now(),
                    query_address: None,
                }))
                .await
                .expect("cache task");
            while store.get(&key).is_none() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let (st, h) = (stats.clone(), handle.clone());
            let snooper = tokio::spawn(async move {
                while st.get(Counter::Bindings) < after {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let at = st.get(Counter::Bindings);
                h.send_snooped(CacheInput::Withdraw(Withdrawal {
                    keys: vec![key],
                    client_duid: Some(duid),
                    link: Some(link(1)),
                    iaids: vec![1],
                    reason: WithdrawReason::Released,
                    arrival: clock.now(),
                }))
                .await
                .expect("a snooped RELEASE is never dropped");
                at
            });
            let report = recover(
                queries,
                Arc::new(cfg),
                stats.clone(),
                CacheSink::new(handle, clock),
            )
            .await;
            let streamed_at_release = snooper.await.unwrap();
            let _ = task.await;
            installer.await.unwrap();
            let r = removal.load(Ordering::SeqCst);
            ReleaseRun {
                report,
                streamed_at_release,
                streamed_at_removal: (r != u64::MAX).then_some(r),
                store,
            }
        })
    })
}

// ---------------------------------------------------------------------------------------------
// `cargo bench --bench recovery`: the daemon's recovery against the install-only floor.
// ---------------------------------------------------------------------------------------------

/// The argument that makes the bench binary a child doing one measured run (see [`child`]).
pub const CHILD_ARG: &str = "--recovery-child";

/// Links of the bench lab.
const BENCH_LINKS: u16 = 8;

/// Clients whose leases call for exactly `routes` routes: of every three clients one has an
/// address, one a /56 and one both (four routes).
pub fn clients_for_routes(routes: u32) -> u32 {
    assert!(routes % 4 == 0, "{routes} routes: a multiple of 4 please");
    routes / 4 * 3
}

/// One measured run, as a child process reported it.
#[derive(Debug, Clone, Copy)]
pub struct ChildRun {
    /// From the start to the last route acknowledged by the kernel (and, for the daemon's
    /// path, every lease in the cache and bulk recovery finished).
    pub elapsed: Duration,
    /// VmHWM of the child when the routes were in: the peak RSS of the process doing the work.
    pub peak_rss_kib: u64,
    /// CPU time of the child (all its threads, user and system: the kernel's route work is
    /// done in the installer's `sendmsg`) from its start to `elapsed`'s end. Unlike the wall
    /// time it hardly moves with other work on the machine, so the CPU ratio beside the wall
    /// ratio tells a slower run from a busier machine.
    pub cpu: Duration,
    /// Journal records written and dropped, snapshots written (0 for the floor).
    pub journal: (u64, u64, u64),
    /// Bindings the bulk requestor streamed (0 without bulk).
    pub bulk_bindings: u64,
}

/// The runs of one size, in one lab: the floor sampled before, between and after the two daemon
/// runs (the kernel's cost of a million routes moves from run to run — slab caches, the FIB's
/// growth, other work on the machine — and one sample would put all that noise into the ratio).
#[derive(Debug, Clone)]
pub struct Measured {
    pub routes: u32,
    /// Every floor sample, in the order run: before bulk, between bulk and the state file,
    /// after the state file.
    pub floors: Vec<ChildRun>,
    pub state_file: ChildRun,
    pub bulk: ChildRun,
    /// CPU time this process (the bench's parent: the reference server's threads, nothing
    /// else runs in it meanwhile) spent during the bulk run: the server's work, which shares
    /// the machine's cores with the agent here, unlike a real server on its own machine.
    pub bulk_server_cpu: Duration,
}

impl Measured {
    /// The floor the ratios are taken against: the median of the samples' wall times.
    pub fn floor(&self) -> Duration {
        median(self.floors.iter().map(|f| f.elapsed))
    }

    /// The median of the floor samples' CPU times.
    pub fn floor_cpu(&self) -> Duration {
        median(self.floors.iter().map(|f| f.cpu))
    }

    /// `r`'s wall time over the floor's median (the goal's ratio).
    pub fn ratio(&self, r: &ChildRun) -> f64 {
        r.elapsed.as_secs_f64() / self.floor().as_secs_f64()
    }
}

/// The median (the mean of the middle two for an even count; zero for none).
pub fn median(v: impl IntoIterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = v.into_iter().collect();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// The bench for `routes` routes (IA_NA addresses + delegated prefixes), in one lab of two
/// namespaces (the reference server over TCP in one, the agent's links in the other), in this
/// order:
/// 1. the floor: the same routes, with the same attributes (the lease's valid lifetime as the
///    kernel expiry when `routes.mirror_expiry` is on, as it is by default), pushed straight
///    through the installer;
/// 2. bulk: `daemon::start_recovery` with an empty state directory and the server configured
///    (bulk leasequery → admission → cache task → journal → route feed → installer);
/// 3. the floor again;
/// 4. state file: `daemon::start_recovery` on the state directory run 2 left at its stop (a
///    snapshot, as SIGTERM leaves it), bulk off (state file → admission → cache task → journal
///    → installer);
/// 5. the floor a third time.
///
/// Each run is a child process (the bench binary again, [`child`]) inside the agent namespace
/// with the kernel's table of our protocol empty, so its peak RSS is its own. After each run the
/// kernel's routes are checked against the lease table (the whole set up to 100 000 routes, the
/// count above). `LQAGENT_BENCH_RECOVERY_MIRROR_EXPIRY=false` turns the kernel expiry off for
/// every run, the floor's included (its cost, measured apart).
pub fn measure(routes: u32) -> Measured {
    let clients = clients_for_routes(routes);
    let t = table(0..clients, BENCH_LINKS);
    let want = expected_routes([&t]);
    assert_eq!(
        want.len(),
        routes as usize,
        "the table calls for {routes} routes"
    );
    let lab = Lab::new("rbench", BENCH_LINKS, vec![t], Vec::new());
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let mirror =
        std::env::var("LQAGENT_BENCH_RECOVERY_MIRROR_EXPIRY").map_or(true, |v| v != "false");
    let check = |what: &str| {
        if routes <= 100_000 {
            assert!(
                kernel_routes(&lab.agent) == want,
                "{what}: kernel routes differ from the table"
            );
        }
        let (count, expiring) = kernel_route_counts(&lab.agent);
        assert_eq!(count, want.len(), "{what}: kernel route count");
        // The floor and the daemon send the same attributes: each route expires in the
        // kernel exactly when the lifetime is mirrored.
        assert_eq!(
            expiring,
            if mirror { count } else { 0 },
            "{what}: routes with a kernel expiry (mirror_expiry {mirror})"
        );
        flush_routes(&lab.agent);
    };
    let server = lab.servers[0].ip().to_string();
    let bulk_cfg = dir.path().join("bulk.toml");
    std::fs::write(&bulk_cfg, bench_config(&state, Some(&server), mirror)).unwrap();
    let state_cfg = dir.path().join("state.toml");
    std::fs::write(&state_cfg, bench_config(&state, None, mirror)).unwrap();
    let floor = || {
        let r = run_child(
            &lab,
            &["floor", &state_cfg.to_string_lossy(), &clients.to_string()],
        );
        check("floor");
        r
    };
    flush_routes(&lab.agent);
    let mut floors = vec![floor()];
    let server_cpu0 = cpu_time();
    let bulk = run_child(
        &lab,
        &["daemon", &bulk_cfg.to_string_lossy(), &routes.to_string()],
    );
    let bulk_server_cpu = cpu_time().saturating_sub(server_cpu0);
    check("bulk");
    assert_eq!(
        bulk.bulk_bindings,
        u64::from(clients),
        "bulk: bindings streamed"
    );
    floors.push(floor());
    let state_file = run_child(
        &lab,
        &["daemon", &state_cfg.to_string_lossy(), &routes.to_string()],
    );
    check("state file");
    floors.push(floor());
    Measured {
        routes,
        floors,
        state_file,
        bulk,
        bulk_server_cpu,
    }
}

/// The agent's configuration for a bench run: our links, the state directory, and the server
/// (bulk by link-address) or none (bulk off: the state file alone).
fn bench_config(state: &std::path::Path, server: Option<&str>, mirror_expiry: bool) -> String {
    let mut cfg = format!(
        "state_dir = \"{}\"\n\n[identity]\nclient_duid = \"00030001020000000001\"\n\n\
         [bulk]\nenabled = {}\nqueries = [\"link-address\"]\n\n[trigger]\nenabled = false\n\n\
         [snoop]\nspoof_guard = false\n\n[routes]\nmirror_expiry = {mirror_expiry}\n\n\
         [[servers]]\nname = \"ref\"\naddress = \"{}\"\n",
        state.display(),
        server.is_some(),
        server.unwrap_or("2001:db8:ff::2"),
    );
    cfg.push_str(&links_config(BENCH_LINKS));
    cfg
}

/// Run the bench binary as a child in the agent namespace; its last stdout line is the result.
fn run_child(lab: &Lab, args: &[&str]) -> ChildRun {
    let exe = std::env::current_exe().expect("current exe");
    // LQAGENT_BENCH_RECOVERY_PERF=<dir>: each child runs under `perf record -g` into that
    // directory (where the time goes, without the server's and the parent's samples).
    let mut cmd = match std::env::var("LQAGENT_BENCH_RECOVERY_PERF") {
        Ok(dir) => {
            let mut c = lab.agent.command("perf");
            c.args([
                "record",
                "-q",
                "-F",
                "999",
                "--call-graph",
                "dwarf,32768",
                "-o",
            ])
            .arg(format!("{dir}/{}-{}.data", args[0], std::process::id()))
            .arg("--")
            .arg(&exe);
            c
        }
        Err(_) => lab.agent.command(&exe.to_string_lossy()),
    };
    let out = cmd
        .arg(CHILD_ARG)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("spawn the bench child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench child {args:?} failed: {stdout}"
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("child:"))
        .unwrap_or_else(|| panic!("no result from the bench child {args:?}: {stdout}"));
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().expect("a number"))
        .collect();
    assert_eq!(v.len(), 7, "{line}");
    ChildRun {
        elapsed: Duration::from_nanos(v[0]),
        peak_rss_kib: v[1],
        cpu: Duration::from_nanos(v[6]),
        journal: (v[2], v[3], v[4]),
        bulk_bindings: v[5],
    }
}

fn flush_routes(ns: &NetNs) {
    let proto = lqagent::kernel::DEFAULT_PROTOCOL.to_string();
    ns.exec(&["ip", "-6", "route", "flush", "proto", &proto]);
    assert_eq!(kernel_route_count(ns), 0, "routes of our protocol left");
}

/// Unicast routes of our protocol in `ns`, counted (`ip -j` of a million routes is too slow to
/// parse); the RFC 8987 R-5 unreachable aggregates the daemon adds (one per link) are not.
pub fn kernel_route_count(ns: &NetNs) -> usize {
    kernel_route_counts(ns).0
}

/// As [`kernel_route_count`], and of those the routes with a kernel expiry (`expires <n>sec`).
pub fn kernel_route_counts(ns: &NetNs) -> (usize, usize) {
    let proto = lqagent::kernel::DEFAULT_PROTOCOL.to_string();
    let out = ns.exec(&["ip", "-6", "route", "show", "proto", &proto]);
    let unicast = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"unreachable"));
    unicast.fold((0, 0), |(n, e), l| {
        (
            n + 1,
            e + usize::from(l.windows(8).any(|w| w == b"expires ")),
        )
    })
}

/// CPU time of this process so far (every thread, user and system), from `/proc/self/stat`
/// (clock ticks: 10 ms steps at the usual 100 Hz).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // USER_HZ is 100 on every Linux the lab runs.
    Duration::from_millis(ticks * 10)
}

/// Each thread of this process still alive: its name, CPU time and time spent runnable but
/// waiting for a core (`/proc/self/task/*/schedstat`: run ns, run-queue wait ns), largest CPU
/// first, those under 10 ms left out. Printed after a run to show which stage held a core and
/// which waited for one (on 2 cores shared with the reference server and other work).
pub fn thread_times() -> Vec<(String, Duration, Duration)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let p = e.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let sched = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
        let mut f = sched
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        let (run, wait) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
        if run >= 10_000_000 {
            out.push((
                name.trim().to_string(),
                Duration::from_nanos(run),
                Duration::from_nanos(wait),
            ));
        }
    }
    out.sort_by_key(|t| std::cmp::Reverse(t.1));
    out
}

/// [`thread_times`] on stderr, one line, for the bench's detail.
fn print_thread_times() {
    let t: Vec<String> = thread_times()
        .iter()
        .map(|(n, run, wait)| {
            format!(
                "{n} {:.2} s (waited {:.2} s)",
                run.as_secs_f64(),
                wait.as_secs_f64()
            )
        })
        .collect();
    eprintln!("    (threads: {})", t.join(", "));
}

/// VmHWM of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How long a child waits for its run before it gives up (a bound, not a measurement).
const CHILD_BOUND: Duration = Duration::from_secs(1800);

/// The child's side (argv after [`CHILD_ARG`]), already inside the agent namespace:
/// - `floor <config> <clients>`: the routes of the bench table, pushed straight through the
///   installer (`Installer::apply`, batches of 4096, as the route task gathers them), with the
///   kernel expiry the daemon would give them under `config`;
/// - `daemon <config> <routes>`: `lqagent::daemon::start_recovery`, until the kernel holds
///   every route, the cache every lease and bulk recovery (when on) is over; then stopped as on
///   SIGTERM (the state file written).
///
/// Prints `child: <ns> <VmHWM KiB> <records written> <records dropped> <snapshots> <bulk
/// bindings> <cpu ns>`, and on stderr its threads' CPU and run-queue wait ([`thread_times`]).
pub fn child(args: &[String]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = match args.first().map(String::as_str) {
        Some("floor") => {
            let text = std::fs::read_to_string(&args[1]).expect("bench config");
            let cfg = lqagent::config::Config::parse(&text).expect("bench config parses");
            let clients: u32 = args[2].parse().expect("clients");
            rt.block_on(floor(&cfg, clients))
        }
        Some("daemon") => {
            let text = std::fs::read_to_string(&args[1]).expect("bench config");
            let cfg = lqagent::config::Config::parse(&text).expect("bench config parses");
            let routes: u64 = args[2].parse().expect("routes");
            rt.block_on(daemon_recovery(&cfg, routes))
        }
        other => panic!("unknown bench child mode {other:?}"),
    };
    println!(
        "child: {} {} {} {} {} {} {}",
        r.elapsed.as_nanos(),
        r.peak_rss_kib,
        r.journal.0,
        r.journal.1,
        r.journal.2,
        r.bulk_bindings,
        r.cpu.as_nanos()
    );
}

/// The floor: every route of the table through the installer, nothing else — but the same
/// routes the daemon installs under `cfg`, attributes included: with `routes.mirror_expiry`
/// (the default) each carries its lease's valid lifetime as the kernel expiry (RTA_EXPIRES),
/// which the kernel also files on its list of expiring routes; a floor without it would time
/// cheaper kernel work than the daemon's.
async fn floor(cfg: &lqagent::config::Config, clients: u32) -> ChildRun {
    let expiry = cfg.routes.mirror_expiry;
    let now = Instant::now();
    let until = |valid: u32| now + Duration::from_secs(u64::from(valid));
    let specs: Vec<RouteChange> = table(0..clients, BENCH_LINKS)
        .entries()
        .iter()
        .flat_map(|e| {
            let dev = LinkRef::Interface(ifname(e.link.segments()[2]).into());
            let hop = e.peer_address.expect("a peer address");
            e.addrs
                .iter()
                .map(|a| (RouteSpec::address(a.addr, dev.clone()), a.valid))
                .chain(
                    e.prefixes
                        .iter()
                        .map(|p| (RouteSpec::delegated(p.prefix, hop, dev.clone()), p.valid)),
                )
                .map(|(spec, valid)| match expiry {
                    true => spec.valid_until(until(valid)),
                    false => spec,
                })
                .map(RouteChange::Upsert)
                .collect::<Vec<_>>()
        })
        .collect();
    let n = specs.len() as u64;
    let (started, cpu0) = (Instant::now(), cpu_time());
    let mut inst = lqagent::kernel::Installer::new(InstallerConfig {
        expiry,
        ..InstallerConfig::default()
    })
    .await
    .expect("installer");
    let mut specs = specs.into_iter();
    loop {
        let batch: Vec<RouteChange> = specs.by_ref().take(4096).collect();
        if batch.is_empty() {
            break;
        }
        inst.apply(batch).await.expect("kernel apply");
    }
    let (elapsed, cpu) = (started.elapsed(), cpu_time().saturating_sub(cpu0));
    assert_eq!(
        inst.stats().snapshot().installed_now,
        n,
        "floor: every route installed"
    );
    print_thread_times();
    ChildRun {
        elapsed,
        peak_rss_kib: peak_rss_kib(),
        journal: (0, 0, 0),
        bulk_bindings: 0,
        cpu,
    }
}

/// The daemon's recovery, from its start to every route in the kernel.
async fn daemon_recovery(cfg: &lqagent::config::Config, routes: u64) -> ChildRun {
    use lqagent::bulk::stats::Counter;
    use std::sync::atomic::Ordering;
    let (started, cpu0) = (Instant::now(), cpu_time());
    let r = lqagent::daemon::start_recovery(cfg)
        .await
        .expect("start recovery");
    let steps: Vec<String> = r
        .steps()
        .iter()
        .map(|(s, t)| format!("{s} {:.3} s", t.as_secs_f64()))
        .collect();
    let (mut all_routes, mut all_leases) = (None, None);
    // Polled every millisecond (a bounded wait for a condition, not a timing threshold).
    loop {
        if all_routes.is_none() && r.routes_installed() >= routes {
            all_routes = Some(started.elapsed());
        }
        if all_leases.is_none() && r.leases() as u64 >= routes {
            all_leases = Some(started.elapsed());
        }
        if all_routes.is_some() && all_leases.is_some() && !r.bulk_in_progress() {
            break;
        }
        assert!(
            started.elapsed() < CHILD_BOUND,
            "recovery stuck: {} routes installed, {} leases, bulk in progress {}",
            r.routes_installed(),
            r.leases(),
            r.bulk_in_progress()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (elapsed, cpu) = (started.elapsed(), cpu_time().saturating_sub(cpu0));
    eprintln!(
        "    (start steps: {}; every route in the kernel {all_routes:?}, every lease in \
         the cache {all_leases:?})",
        steps.join(", ")
    );
    print_thread_times();
    let peak = peak_rss_kib();
    let j = r.journal_stats().clone();
    let bulk_bindings = r.bulk_stats().get(Counter::Bindings);
    r.shutdown().await;
    ChildRun {
        elapsed,
        peak_rss_kib: peak,
        journal: (
            j.records_written.load(Ordering::Relaxed),
            j.records_dropped.load(Ordering::Relaxed),
            j.snapshots_written.load(Ordering::Relaxed),
        ),
        bulk_bindings,
        cpu,
    }
}
