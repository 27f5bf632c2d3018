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
use lqagent::daemon::routes::RouteMapper;
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

pub fn ifname(i: u16) -> String {
    format!("sub{i}")
}

/// Client `n`: on link `1 + n % links`; n % 3 == 0 an address, 1 a /56, 2 both.
pub fn client(n: u32, links: u16) -> LeaseEntry {
    let l = 1 + (n % u32::from(links)) as u16;
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
            // Each link's own /38 (`pd_space`) holds one /56 per client of that link, so links'
            // subscriber prefixes never overlap.
            prefix: Ipv6Prefix::new(
                Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    pd_space(l).addr().segments()[2] | ((n >> 8) as u16 & 0x3ff),
                    (lo & 0xff) << 8,
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
            relay_id: Some(Duid::parse(&RELAY)),
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
    let Some(l) = b.link else { return Vec::new() };
    let mut out = Vec::new();
    for a in b.data.addresses().filter(|a| a.valid != 0) {
        out.push(RouteChange::Upsert(RouteSpec::address(
            a.addr,
            LinkRef::LinkAddress(l),
        )));
    }
    if let Some(hop) = b.peer_address {
        for p in b.data.prefixes().filter(|p| p.valid != 0) {
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
    move |server, b| {
        let Ok(obs) = observation(server, &b, clock.at_std(b.received)) else {
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
            let (handle, mut changes, task) = lqagent::cache::task::spawn(
                store.clone(),
                clock,
                None,
                Default::default(),
                Vec::new(),
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

/// What the bench reports.
pub struct Measured {
    pub bindings: u64,
    pub bulk: Duration,
    pub state_file: Duration,
}

/// The bench: `n` bindings on one reference server over 8 links, recovered by relay-id along
/// the daemon's path (cache task, change stream, installer); then the same from the state file.
pub fn measure(n: u32) -> Measured {
    let links = 8;
    let t = table(0..n, links);
    let want = expected_routes([&t]);
    let lab = Lab::new("bench", links, vec![t], Vec::new());
    let (run, store) = run_recovery_via_cache_task(&lab, lab.plan().startup(), bulk_config());
    assert_eq!(store.len(), want.len(), "every lease in the cache");
    let got = kernel_routes(&lab.agent);
    assert_eq!(got.len(), want.len(), "every route in the kernel");
    assert!(got == want, "kernel routes differ from the table");
    // The same again from the state file alone: save, empty the kernel, restart from it.
    let dir = tempfile::tempdir().expect("temp dir");
    save_state(&store, dir.path());
    let proto = lqagent::kernel::DEFAULT_PROTOCOL.to_string();
    lab.agent
        .exec(&["ip", "-6", "route", "flush", "proto", &proto]);
    assert!(kernel_routes(&lab.agent).is_empty());
    let (state_file, restored) = recover_from_state(&lab, dir.path().to_path_buf());
    assert_eq!(restored, want.len());
    assert!(
        kernel_routes(&lab.agent) == want,
        "state-file routes differ"
    );
    Measured {
        bindings: run.report.bindings,
        bulk: run.to_last_route,
        state_file,
    }
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
    use lqagent::cache::task::CacheInput;
    use lqagent::cache::{
        ChangeKind, IaType, LeaseKey, Link, Observation, ObservedLease, ServerId, Source,
        WithdrawReason, Withdrawal,
    };
    use std::sync::atomic::{AtomicU64, Ordering};
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
            let (handle, mut changes, task) = lqagent::cache::task::spawn(
                store.clone(),
                clock,
                None,
                Default::default(),
                Vec::new(),
            );
            let stats = Arc::new(BulkStats::default());
            let key = LeaseKey::Address(victim);
            let duid: Box<[u8]> = vec![0, 3, 0, 1, 2, 0, 0, 0, 0xee, 1].into();
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
