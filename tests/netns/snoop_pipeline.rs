//! Snooping end to end in real namespaces (without ISC): relayed DHCPv6 crossing a veth is
//! captured by the kernel filter, classified, and lands in (then leaves) the binding cache.

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lqagent::admission::OwnAddresses;
use lqagent::cache::{BindingStore, LeaseKey};
use lqagent::cache_task::{self, CacheTaskConfig};
use lqagent::snoop::capture::{CaptureConfig, CaptureCounter};
use lqagent::snoop::classify::{ClassifyConfig, ClassifyCounter, SnoopTrust};
use lqagent::snoop::shell;
use lqagent::time::AgentClock;
use lqagent::wire::{
    ClientMessage, DhcpOption, Duid, Ia, IaAddr, IaPrefix, Message, MessageType, RelayMessage,
};
use support::netns::{NetNs, require_root, uplink};
use support::storm;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn relayed(t: MessageType, inner_t: MessageType, xid: u32, ias: Vec<DhcpOption>) -> Vec<u8> {
    let mut c = ClientMessage::new(inner_t, xid);
    c.options
        .push(DhcpOption::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 0, 7])));
    if inner_t == MessageType::REPLY {
        c.options.push(DhcpOption::ServerId(Duid::ll_ethernet([
            2, 0, 0, 0, 0, 0xaa,
        ])));
    }
    c.options.extend(ias);
    let mut r = RelayMessage::new(t, 0, a("2001:db8:1::1"), a("fe80::7"));
    r.options
        .push(DhcpOption::RelayMsg(Box::new(Message::Client(c))));
    Message::Relay(r).to_vec().unwrap()
}

fn ias(valid: u32) -> Vec<DhcpOption> {
    let mut na = Ia::new(1, 0, 0);
    na.options.push(DhcpOption::IaAddr(IaAddr::new(
        a("2001:db8:1::77"),
        valid,
        valid,
    )));
    let mut pd = Ia::new(2, 0, 0);
    pd.options.push(DhcpOption::IaPrefix(IaPrefix::new(
        "2001:db8:700::/56".parse().unwrap(),
        valid,
        valid,
    )));
    vec![DhcpOption::IaNa(na), DhcpOption::IaPd(pd)]
}

fn send(ns: &NetNs, from: &str, to: &str, payload: Vec<u8>) {
    let (from, to) = (a(from), a(to));
    ns.run_in(move || {
        // Relay and server both speak from port 547 (RFC 8415 §7.2): the snooper checks it.
        let s = UdpSocket::bind(SocketAddrV6::new(from, 547, 0, 0)).unwrap();
        s.send_to(&payload, SocketAddrV6::new(to, 547, 0, 0))
            .unwrap();
    });
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(3);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn relayed_exchange_binds_then_release_withdraws() {
    if !require_root("relayed_exchange_binds_then_release_withdraws") {
        return;
    }
    let relay = NetNs::new("pipr");
    let server = NetNs::new("pips");
    uplink(&relay, &server);
    let store = Arc::new(BindingStore::default());
    let (stats, stop_tx, agent) = start_snooper(&relay, store.clone());

    // REQUEST goes up (outgoing on the relay), REPLY comes back (incoming).
    let up = relayed(MessageType::RELAY_FORW, MessageType::REQUEST, 0x10, vec![]);
    send(&relay, "2001:db8:f::1", "2001:db8:f::2", up);
    let down = relayed(MessageType::RELAY_REPL, MessageType::REPLY, 0x10, ias(3600));
    send(&server, "2001:db8:f::2", "2001:db8:f::1", down);
    let addr = LeaseKey::Address(a("2001:db8:1::77"));
    let pfx = LeaseKey::Prefix("2001:db8:700::/56".parse().unwrap());
    wait("the binding", || {
        store.get(&addr).is_some() && store.get(&pfx).is_some()
    });
    let lease = store.get(&pfx).unwrap();
    assert_eq!(lease.client.link.address, a("2001:db8:1::1"));
    assert_eq!(lease.server.address, a("2001:db8:f::2"));
    assert_eq!(
        lease.client.relay.as_ref().and_then(|r| r.peer_address),
        Some(a("fe80::7")),
        "the PD next hop is the client's link-local peer-address"
    );

    // RELEASE up, REPLY down: both leases go.
    let up = relayed(MessageType::RELAY_FORW, MessageType::RELEASE, 0x11, ias(0));
    send(&relay, "2001:db8:f::1", "2001:db8:f::2", up);
    let down = relayed(MessageType::RELAY_REPL, MessageType::REPLY, 0x11, vec![]);
    send(&server, "2001:db8:f::2", "2001:db8:f::1", down);
    wait("the release", || {
        store.get(&addr).is_none() && store.get(&pfx).is_none()
    });

    let c = &stats.classify;
    assert_eq!(c.get(ClassifyCounter::RelayForw), 2);
    assert_eq!(c.get(ClassifyCounter::ReplyBind), 1);
    assert_eq!(c.get(ClassifyCounter::ReplyRelease), 1);
    stop_tx.send(()).unwrap();
    agent.join().unwrap();
}

/// The snooper (capture on `up0`, classifier, cache task) on a thread inside `relay`.
fn start_snooper(
    relay: &NetNs,
    store: Arc<BindingStore>,
) -> (
    shell::SnoopStats,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let st = store;
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (stats_tx, stats_rx) = std::sync::mpsc::channel();
    let path = relay.path();
    let agent = std::thread::spawn(move || {
        let f = std::fs::File::open(path).unwrap();
        setns(&f);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let clock = AgentClock::new();
            let sup = support::tasks::supervisor();
            let admission = support::tasks::admit_documentation(a("2001:db8:1::1"), "sub0");
            let (cache, mut changes, _join) = cache_task::spawn(
                st,
                clock,
                None,
                CacheTaskConfig::default(),
                admission.clone(),
                support::tasks::no_confirmer(),
                &sup,
            );
            tokio::spawn(async move { while changes.recv().await.is_some() {} });
            let mut tasks = tokio::task::JoinSet::new();
            let cfg = CaptureConfig {
                interfaces: vec!["up0".into()],
                ..CaptureConfig::default()
            };
            let trust = SnoopTrust {
                servers: [a("2001:db8:f::2")].into_iter().collect(),
                own: Arc::new(OwnAddresses::new([a("2001:db8:f::1")])),
                admission,
            };
            let stats = shell::spawn(
                &cfg,
                ClassifyConfig::default(),
                trust,
                clock,
                cache,
                &mut tasks,
                &sup,
            )
            .unwrap();
            stats_tx.send(stats).unwrap();
            while stop_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    });
    let stats = stats_rx.recv().unwrap();
    (stats, stop_tx, agent)
}

/// A snoop interface that does not exist when snooping starts (a VLAN created later) is waited
/// for: once it appears, a relayed exchange on it binds.
#[test]
fn a_snoop_interface_missing_at_start_is_waited_for() {
    if !require_root("a_snoop_interface_missing_at_start_is_waited_for") {
        return;
    }
    let relay = NetNs::new("pipl");
    let server = NetNs::new("pipm");
    let store = Arc::new(BindingStore::default());
    // Snooping starts before `up0` exists: no error.
    let (stats, stop_tx, agent) = start_snooper(&relay, store.clone());
    // No signal says the snooper has looked for `up0` and found it missing (only a log line);
    // the pause makes that first look very likely to come before the interface exists.
    std::thread::sleep(Duration::from_millis(300));
    uplink(&relay, &server);
    let addr = LeaseKey::Address(a("2001:db8:1::77"));
    let end = Instant::now() + Duration::from_secs(30);
    let mut xid = 0x20;
    // Until the capture has reopened, exchanges go unseen; repeat one until it binds.
    while store.get(&addr).is_none() {
        assert!(
            Instant::now() < end,
            "the late interface was never captured"
        );
        let up = relayed(MessageType::RELAY_FORW, MessageType::REQUEST, xid, vec![]);
        send(&relay, "2001:db8:f::1", "2001:db8:f::2", up);
        let down = relayed(MessageType::RELAY_REPL, MessageType::REPLY, xid, ias(3600));
        send(&server, "2001:db8:f::2", "2001:db8:f::1", down);
        xid += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stats.classify.get(ClassifyCounter::ReplyBind) >= 1);
    stop_tx.send(()).unwrap();
    agent.join().unwrap();
}

/// The snooper with tiny internal queues on a thread inside `relay`, the cache's change stream
/// not read until `gate` fires: the whole pipeline (the capture with its classifier, the cache
/// task's snoop queue, the change stream) stands still, so a burst can only wait in the socket buffer
/// of `receive_buffer` bytes (its receive ring).
fn start_gated_snooper(
    relay: &NetNs,
    store: Arc<BindingStore>,
    receive_buffer: usize,
    gate: tokio::sync::oneshot::Receiver<()>,
) -> (
    shell::SnoopStats,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (stats_tx, stats_rx) = std::sync::mpsc::channel();
    let agent = relay.spawn_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let clock = AgentClock::new();
            let small = CacheTaskConfig {
                input_queue: 4,
                snoop_queue: 4,
                change_queue: 4,
                ..CacheTaskConfig::default()
            };
            let sup = support::tasks::supervisor();
            let admission =
                support::tasks::admit_documentation(storm::LINK_ADDRESS, storm::LINK_IF);
            let (cache, mut changes, _join) = cache_task::spawn(
                store,
                clock,
                None,
                small,
                admission.clone(),
                support::tasks::no_confirmer(),
                &sup,
            );
            tokio::spawn(async move {
                let _ = gate.await;
                while changes.recv().await.is_some() {}
            });
            let mut tasks = tokio::task::JoinSet::new();
            let cfg = CaptureConfig {
                interfaces: vec!["up0".into()],
                receive_buffer,
            };
            let trust = SnoopTrust {
                servers: [storm::SERVER].into_iter().collect(),
                own: Arc::new(OwnAddresses::new([storm::RELAY])),
                admission,
            };
            let stats = shell::spawn(
                &cfg,
                ClassifyConfig::default(),
                trust,
                clock,
                cache,
                &mut tasks,
                &sup,
            )
            .unwrap();
            stats_tx.send(stats).unwrap();
            while stop_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    });
    let stats = stats_rx.recv().unwrap();
    (stats, stop_tx, agent)
}

/// How many of clients `0..n` the store holds.
fn bound_clients(store: &BindingStore, n: u32) -> u32 {
    (0..n)
        .filter(|&i| {
            store
                .get(&LeaseKey::Address(storm::client_address(i)))
                .is_some()
        })
        .count() as u32
}

/// A burst far larger than every internal queue, sent while the pipeline stands still, loses
/// nothing inside the agent: the capture waits for room instead of dropping (its `queue_full`
/// counts the waits), the packets wait in the socket's receive ring, and once the pipeline moves every
/// client of the burst is bound. Before the capture waited, all but the first few dozen REPLYs
/// were dropped at the full queue.
#[test]
fn a_burst_larger_than_the_queues_is_held_back_not_dropped() {
    if !require_root("a_burst_larger_than_the_queues_is_held_back_not_dropped") {
        return;
    }
    const N: u32 = 2000;
    let lab = storm::Lab::new("pipb");
    let store = Arc::new(BindingStore::default());
    let (gate_tx, gate) = tokio::sync::oneshot::channel();
    let (stats, stop_tx, agent) = start_gated_snooper(&lab.relay, store.clone(), 64 << 20, gate);
    let senders = lab.senders();
    let exchanges: Vec<_> = (0..N).map(|i| storm::exchange(i, 3600)).collect();
    senders.storm(&exchanges, 256);
    // The burst (4 messages a client) waits in the socket buffer behind the full queues.
    wait("the capture to be held back by the full queue", || {
        stats.capture.get(CaptureCounter::QueueFull) > 0
    });
    gate_tx.send(()).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while bound_clients(&store, N) < N {
        assert!(
            Instant::now() < end,
            "{} of {N} clients bound; capture {:?}, classifier {:?}",
            bound_clients(&store, N),
            stats.capture.snapshot(),
            stats.classify
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stats.capture.get(CaptureCounter::KernelDrop), 0);
    assert_eq!(
        stats.capture.get(CaptureCounter::Received),
        u64::from(4 * N)
    );
    stop_tx.send(()).unwrap();
    agent.join().unwrap();
}

/// Where the receive ring is too small for a burst the kernel drops, and every drop is
/// counted: each packet sent is either received or in `kernel_drop`. Fewer than 256 packets
/// get through — the capture's regular read of the kernel's count comes every 256 — so only
/// its read when idle can count these drops. What was received is bound in full.
#[test]
fn a_burst_the_socket_buffer_cannot_hold_is_counted_as_kernel_drops() {
    if !require_root("a_burst_the_socket_buffer_cannot_hold_is_counted_as_kernel_drops") {
        return;
    }
    const N: u32 = 50;
    let lab = storm::Lab::new("pipk");
    let store = Arc::new(BindingStore::default());
    let (gate_tx, gate) = tokio::sync::oneshot::channel();
    // A ring of 16 KiB (8 frames of 2 KiB): a few packets of the burst's 200.
    let (stats, stop_tx, agent) = start_gated_snooper(&lab.relay, store.clone(), 16 << 10, gate);
    let senders = lab.senders();
    let exchanges: Vec<_> = (0..N).map(|i| storm::exchange(i, 3600)).collect();
    // One client after the other: the first few exchanges get in whole.
    senders.storm(&exchanges, 1);
    gate_tx.send(()).unwrap();
    let sent = u64::from(4 * N);
    let accounted = || {
        stats.capture.get(CaptureCounter::Received) + stats.capture.get(CaptureCounter::KernelDrop)
    };
    let end = Instant::now() + Duration::from_secs(30);
    while accounted() < sent {
        assert!(
            Instant::now() < end,
            "{} of {sent} packets received or counted as dropped: {:?}",
            accounted(),
            stats.capture.snapshot()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(accounted(), sent, "{:?}", stats.capture.snapshot());
    assert!(stats.capture.get(CaptureCounter::KernelDrop) > 0);
    assert!(stats.capture.get(CaptureCounter::Received) < 256);
    // What was received was classified and bound in full: the only loss is the counted one.
    let binds = || stats.classify.get(ClassifyCounter::ReplyBind);
    let parsed = || stats.messages.seen().iter().map(|(_, n)| n).sum::<u64>();
    let end = Instant::now() + Duration::from_secs(30);
    let received = stats.capture.get(CaptureCounter::Received);
    while parsed() < received || u64::from(bound_clients(&store, N)) != binds() {
        assert!(
            Instant::now() < end,
            "{} of {received} received messages parsed, {} of {} bound",
            parsed(),
            bound_clients(&store, N),
            binds()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(binds() > 0);
    stop_tx.send(()).unwrap();
    agent.join().unwrap();
}

#[allow(unsafe_code)]
fn setns(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid, open namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0);
}
