//! `cargo bench --bench latency` (root): what a subscriber waits for, through the path the daemon
//! really runs — `lqagent run` (the built binary) in the access concentrator of an ISC lab
//! (tests/support/src/isc.rs, four subscriber links), with its nftables trigger, NFLOG reader,
//! requestor, cache task, admission and route installer.
//!
//! Cases, each over `SAMPLES` distinct subscribers (a distinct source per sample: the trigger
//! reports a source at most once a second, and a sample must start from "unknown"):
//! - **unknown source → route**, against the reference server (tests/support, in this process)
//!   and against real ISC `dhcpd -6` (its lease file seeded with the bindings): one packet from a
//!   subscriber address the agent does not know, sent from the subscriber's namespace through a
//!   raw socket, until the kernel announces the /128 route;
//! - **snooped REPLY → route**: a relayed REQUEST goes up and the RELAY-REPL(REPLY) comes down
//!   the uplink, timed from the REPLY's send until the route is announced;
//! - **snooped RELEASE → route gone**: the relayed RELEASE up, its REPLY down, timed from the
//!   REPLY's send until the route's deletion is announced.
//!
//! Observation points are outside the daemon, so they cost it nothing and cannot lie about it:
//! the send (the bench's clock just before `sendto`), the leasequery leaving and its answer
//! arriving on the agent's uplink (a packet socket in the agent's namespace), and the route
//! as the kernel announces it (rtnetlink `RTNLGRP_IPV6_ROUTE`, sent once the route is in the
//! table). That splits unknown source → route into: packet → query on the wire (kernel rule,
//! NFLOG, trigger, on-demand queue, requestor), query → answer on the wire (the server's own
//! round-trip time, measured in the same run on the same packets), answer → route (requestor
//! read, admission, merge, cache task, installer, kernel). The daemon's own split of the first
//! and last parts is `lqagent_on_demand_stage_seconds` (docs/metrics.md), printed at the end.
//!
//! Last line: `latency: unknown source -> route p99 <X> ms (server RTT p99 <Y> ms), snooped
//! REPLY -> route p99 <Z> ms` (ASCII arrows), the unknown-source numbers from the dhcpd case.
//!
//! Without `--bench` in argv (as under `cargo test --all-targets`) it does a tiny smoke run.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lqagent::wire::{
    ClientMessage, DhcpOption, Duid, Ia, IaAddr, Message, MessageType, RelayMessage,
};
use support::agent::{start_agent, write_config};
use support::isc::{IscLab, Lifetimes};
use support::netns::NetNs;
use support::refserver::table::{AddrLease, LeaseEntry, LeaseTable};
use support::refserver::{RefServer, ServerConfig};
use support::scrape::scrape_in;

/// `[routes] protocol` of the agent under test: the route monitor looks only at these.
const PROTO: u8 = 217;
/// Subscriber links of the lab (the trigger's `limit rate` is per link: samples go round them).
const LINKS: usize = 4;
/// How long one sample may take before it is counted as lost.
const SAMPLE_BOUND: Duration = Duration::from_secs(3);
/// Least time between two unknown-source samples: samples go round the links, so each link
/// logs at most 1/(LINKS · PACE) = 167 packets a second, under the rule's `limit rate 200/second`
/// — the bench measures latency, not the kernel's rate limit.
const PACE: Duration = Duration::from_micros(1500);

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let samples = if full { 1000 } else { 8 };
    if !support::netns::require_root("bench latency") {
        return;
    }
    run(samples);
}

/// What the monitors saw, each stamped when the bench read it.
#[derive(Debug)]
enum Seen {
    RouteAdd(Ipv6Addr),
    RouteDel(Ipv6Addr),
    /// A LEASEQUERY left the uplink: transaction id, the address asked about.
    QueryOut(u32, Ipv6Addr),
    /// A LEASEQUERY-REPLY arrived on the uplink: transaction id.
    AnswerIn(u32),
}

type Events = mpsc::Receiver<(Instant, Seen)>;

fn run(samples: usize) {
    let Some(mut lab) = IscLab::without_clients("bench_latency", LINKS, Lifetimes::default())
    else {
        return;
    };
    // The relay's port and the server's are the bench's now: it plays both for the snooped
    // cases, and the server's address is the reference server's, then dhcpd's again.
    lab.stop_relay();
    lab.stop_server();
    let cfg = write_config(
        &lab,
        &format!(
            "[bulk]\nenabled = false\n\n[limits]\nglobal_qps = 100000\nper_link_qps = 100000\n\n\
             [routes]\nprotocol = {PROTO}\n\n[log]\nlevel = \"warn,lqagent::daemon=info\"\n"
        ),
    );
    let _agent = start_agent(&lab, &cfg, "lqagent.log");
    let (tx, events) = mpsc::channel();
    route_monitor(&lab.ac, tx.clone());
    query_monitor(&lab.ac, tx);
    let senders: Vec<RawSender> = lab
        .clients
        .iter()
        .map(|c| RawSender::new(&c.ns, c.link_address, lab.server_address))
        .collect();
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "latency: {samples} samples per case; load before: {}",
        load().trim()
    );

    // Snooped REPLY → route, then RELEASE → route gone.
    let (reply, release) = snooped(&lab, &events, samples);
    report("snooped REPLY -> route", &reply.total);
    report("snooped RELEASE -> route gone", &release.total);

    // Unknown source → route against the reference server (in this process, in the server's
    // namespace, on dhcpd's address).
    let table = LeaseTable::from_entries((0..samples + LINKS).map(|i| {
        let (l, a) = ref_subscriber(i);
        let mut e = LeaseEntry::new(duid(0x10, i), link_address(l));
        e.addrs.push(AddrLease {
            addr: a,
            preferred: 3000,
            valid: 6000,
        });
        e
    }));
    let srv = RefServer::new(table, ServerConfig::default());
    let sock = lab
        .server
        .run_in(|| UdpSocket::bind("[2001:db8::1]:547").expect("bind the reference server"));
    srv.serve_udp(sock, None).expect("serve");
    let refs = unknown_sources(&senders, &events, samples, ref_subscriber);
    drop(srv);
    report_unknown("reference server", &refs);

    // The same against ISC dhcpd -6, its lease file holding the subscribers.
    lab.restart_server_with_leases(&dhcpd_leases(samples + LINKS));
    let isc = unknown_sources(&senders, &events, samples, isc_subscriber);
    report_unknown("ISC dhcpd", &isc);

    print_daemon_stages(&lab.ac);
    println!("load after: {}", load().trim());
    println!(
        "latency: unknown source -> route p99 {:.2} ms (server RTT p99 {:.2} ms), snooped REPLY -> route p99 {:.2} ms",
        ms(pct(&isc.total, 99)),
        ms(pct(&isc.server, 99)),
        ms(pct(&reply.total, 99)),
    );
}

fn link_address(l: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, l as u16, 0, 0, 0, 0, 1)
}

/// Sample `i` against the reference server: link (1-based) and address, outside dhcpd's pools.
fn ref_subscriber(i: usize) -> (usize, Ipv6Addr) {
    let l = 1 + i % LINKS;
    (
        l,
        Ipv6Addr::new(0x2001, 0xdb8, l as u16, 0, 0, 2, 0, i as u16),
    )
}

/// Sample `i` against dhcpd: link and an address of its pool (`::100`–`::1ff`, 256 a link).
fn isc_subscriber(i: usize) -> (usize, Ipv6Addr) {
    let l = 1 + i % LINKS;
    let n = i / LINKS;
    assert!(n < 256, "dhcpd's pool on a link holds 256 addresses");
    (
        l,
        Ipv6Addr::new(0x2001, 0xdb8, l as u16, 0, 0, 0, 0, 0x100 + n as u16),
    )
}

fn duid(kind: u8, i: usize) -> Vec<u8> {
    let i = i as u32;
    [&[0u8, 3, 0, 1, 2, kind][..], &i.to_be_bytes()].concat()
}

/// dhcpd.leases(5) with one active IA_NA per sample, valid for an hour from now.
fn dhcpd_leases(n: usize) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let date = |t: u64| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{t}"), "+%w %Y/%m/%d %H:%M:%S"])
            .output()
            .expect("date");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (cltt, ends) = (date(now), date(now + 3600));
    let mut s = String::from("authoring-byte-order little-endian;\n\n");
    for i in 0..n {
        let (_, a) = isc_subscriber(i);
        // The IA's key: IAID (4 bytes) then the client's DUID, each byte octal-escaped.
        let key: String = [&(i as u32).to_le_bytes()[..], &duid(0x20, i)]
            .concat()
            .iter()
            .map(|b| format!("\\{b:03o}"))
            .collect();
        s.push_str(&format!(
            "ia-na \"{key}\" {{\n  cltt {cltt};\n  iaaddr {a} {{\n    binding state active;\n    \
             preferred-life 1800;\n    max-life 3600;\n    ends {ends};\n  }}\n}}\n\n"
        ));
    }
    s
}

/// A raw IPv6 socket (header included) in a subscriber's namespace, its default route via the
/// access concentrator, sending 40-byte packets (no next header) from any source to the server.
struct RawSender {
    sock: socket2::Socket,
    dst: Ipv6Addr,
}

impl RawSender {
    fn new(ns: &NetNs, gateway: Ipv6Addr, dst: Ipv6Addr) -> RawSender {
        ns.exec(&[
            "ip",
            "-6",
            "route",
            "replace",
            "default",
            "via",
            &gateway.to_string(),
            "dev",
            "c0",
            "onlink",
        ]);
        let sock = ns.run_in(|| {
            use socket2::{Domain, Protocol, Socket, Type};
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(255))).expect("raw socket")
        });
        RawSender { sock, dst }
    }

    /// Sends one packet from `src`; returns when it was handed to the kernel.
    fn send(&self, src: Ipv6Addr) -> Instant {
        let mut pkt = [0u8; 40];
        pkt[0] = 0x60;
        pkt[6] = 59;
        pkt[7] = 64;
        pkt[8..24].copy_from_slice(&src.octets());
        pkt[24..40].copy_from_slice(&self.dst.octets());
        let to = socket2::SockAddr::from(SocketAddrV6::new(self.dst, 0, 0, 0));
        let t = Instant::now();
        self.sock.send_to(&pkt, &to).expect("raw send");
        t
    }
}

/// Route announcements of protocol [`PROTO`] for /128s in `ns`, on a thread.
fn route_monitor(ns: &NetNs, tx: mpsc::Sender<(Instant, Seen)>) {
    let sock = ns.run_in(|| {
        use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
        let mut s = Socket::new(NETLINK_ROUTE).expect("rtnetlink socket");
        s.bind(&SocketAddr::new(0, 0)).expect("bind");
        s.add_membership(libc::RTNLGRP_IPV6_ROUTE)
            .expect("join RTNLGRP_IPV6_ROUTE");
        s.set_rx_buf_sz(8 << 20).expect("receive buffer");
        s
    });
    std::thread::spawn(move || {
        let mut buf = Vec::with_capacity(1 << 16);
        loop {
            buf.clear();
            if sock.recv(&mut buf, 0).is_err() {
                continue;
            }
            let t = Instant::now();
            for (kind, dst) in routes_in(&buf) {
                let ev = if kind == libc::RTM_NEWROUTE {
                    Seen::RouteAdd(dst)
                } else {
                    Seen::RouteDel(dst)
                };
                if tx.send((t, ev)).is_err() {
                    return;
                }
            }
        }
    });
}

/// (RTM_NEWROUTE or RTM_DELROUTE, destination) of each /128 route of ours in a netlink datagram.
fn routes_in(mut b: &[u8]) -> Vec<(u16, Ipv6Addr)> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(b[4..6].try_into().unwrap());
        if len < 16 || len > b.len() {
            break;
        }
        let m = &b[16..len];
        // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
        if (kind == libc::RTM_NEWROUTE || kind == libc::RTM_DELROUTE)
            && m.len() >= 12
            && m[1] == 128
            && m[5] == PROTO
        {
            let mut a = &m[12..];
            while a.len() >= 4 {
                let alen = u16::from_ne_bytes([a[0], a[1]]) as usize;
                let atype = u16::from_ne_bytes([a[2], a[3]]);
                if alen < 4 || alen > a.len() {
                    break;
                }
                if atype == libc::RTA_DST && alen == 20 {
                    let o: [u8; 16] = a[4..20].try_into().unwrap();
                    out.push((kind, Ipv6Addr::from(o)));
                }
                a = a.get((alen + 3) & !3..).unwrap_or_default();
            }
        }
        b = b.get((len + 3) & !3..).unwrap_or_default();
    }
    out
}

/// LEASEQUERY leaving and LEASEQUERY-REPLY arriving on any interface of `ns` (a packet socket,
/// network layer), on a thread.
fn query_monitor(ns: &NetNs, tx: mpsc::Sender<(Instant, Seen)>) {
    let sock = ns.run_in(|| {
        use socket2::{Domain, Protocol, Socket, Type};
        // ETH_P_ALL, not ETH_P_IPV6: only ETH_P_ALL taps see what the host sends.
        let proto = (libc::ETH_P_ALL as u16).to_be();
        Socket::new(
            Domain::PACKET,
            Type::DGRAM,
            Some(Protocol::from(i32::from(proto))),
        )
        .expect("packet socket")
    });
    sock.set_recv_buffer_size(8 << 20).expect("receive buffer");
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 2048];
        loop {
            let Ok(n) = (&sock).read(&mut buf) else {
                continue;
            };
            let t = Instant::now();
            if let Some(ev) = leasequery_in(&buf[..n])
                && tx.send((t, ev)).is_err()
            {
                return;
            }
        }
    });
}

/// A LEASEQUERY (with the address of its OPTION_LQ_QUERY's IAADDR) or a LEASEQUERY-REPLY in an
/// IPv6 packet without extension headers.
fn leasequery_in(p: &[u8]) -> Option<Seen> {
    if p.len() < 48 || p[0] >> 4 != 6 || p[6] != 17 {
        return None;
    }
    let d = &p[48..];
    let xid = u32::from_be_bytes([0, *d.get(1)?, *d.get(2)?, *d.get(3)?]);
    match *d.first()? {
        15 => Some(Seen::AnswerIn(xid)),
        14 => {
            let q = option(&d[4..], 44)?;
            // query-type (1), link-address (16), then options: OPTION_IAADDR (5).
            let ia = option(q.get(17..)?, 5)?;
            let a: [u8; 16] = ia.get(..16)?.try_into().ok()?;
            Some(Seen::QueryOut(xid, Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// The body of the first option `code` in a DHCPv6 option list.
fn option(mut b: &[u8], code: u16) -> Option<&[u8]> {
    while b.len() >= 4 {
        let c = u16::from_be_bytes([b[0], b[1]]);
        let l = u16::from_be_bytes([b[2], b[3]]) as usize;
        let body = b.get(4..4 + l)?;
        if c == code {
            return Some(body);
        }
        b = &b[4 + l..];
    }
    None
}

#[derive(Default)]
struct Unknown {
    total: Vec<Duration>,
    to_query: Vec<Duration>,
    server: Vec<Duration>,
    to_route: Vec<Duration>,
    lost: usize,
}

/// Unknown source → route for `samples` subscribers (plus one warm-up per link, not counted:
/// the first packet on a link waits for neighbour discovery).
fn unknown_sources(
    senders: &[RawSender],
    events: &Events,
    samples: usize,
    subscriber: fn(usize) -> (usize, Ipv6Addr),
) -> Unknown {
    let mut u = Unknown::default();
    let mut queries: HashMap<Ipv6Addr, (u32, Instant)> = HashMap::new();
    let mut answers: HashMap<u32, Instant> = HashMap::new();
    let mut last = Instant::now();
    for i in 0..samples + LINKS {
        let (l, src) = subscriber(i);
        if let Some(wait) = (last + PACE).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t0 = senders[l - 1].send(src);
        last = t0;
        let routed = wait_for_event(events, SAMPLE_BOUND, |t, ev| match ev {
            Seen::RouteAdd(a) if *a == src => Some(t),
            Seen::QueryOut(x, a) => {
                queries.insert(*a, (*x, t));
                None
            }
            Seen::AnswerIn(x) => {
                answers.insert(*x, t);
                None
            }
            _ => None,
        });
        // The answer was on the wire before the route: its event may only be queued behind.
        let answered = |q: &HashMap<Ipv6Addr, (u32, Instant)>, a: &HashMap<u32, Instant>| {
            q.get(&src)
                .and_then(|(x, tq)| a.get(x).map(|ta| (*tq, *ta)))
        };
        if routed.is_some() && answered(&queries, &answers).is_none() {
            wait_for_event(events, Duration::from_millis(200), |t, ev| match ev {
                Seen::QueryOut(x, a) => {
                    queries.insert(*a, (*x, t));
                    None
                }
                Seen::AnswerIn(x) => {
                    answers.insert(*x, t);
                    answered(&queries, &answers).map(|_| t)
                }
                _ => None,
            });
        }
        if i < LINKS {
            continue;
        }
        let Some(tr) = routed else {
            u.lost += 1;
            continue;
        };
        u.total.push(tr - t0);
        if let Some((tq, ta)) = answered(&queries, &answers) {
            u.to_query.push(tq.saturating_duration_since(t0));
            u.server.push(ta.saturating_duration_since(tq));
            u.to_route.push(tr.saturating_duration_since(ta));
        }
        queries.remove(&src);
    }
    u
}

/// Reads events until `f` returns `Some` (returned) or `bound` passes (`None`).
fn wait_for_event(
    events: &Events,
    bound: Duration,
    mut f: impl FnMut(Instant, &Seen) -> Option<Instant>,
) -> Option<Instant> {
    let end = Instant::now() + bound;
    loop {
        let left = end.checked_duration_since(Instant::now())?;
        let (t, ev) = events.recv_timeout(left).ok()?;
        if let Some(r) = f(t, &ev) {
            return Some(r);
        }
    }
}

#[derive(Default)]
struct Timed {
    total: Vec<Duration>,
    lost: usize,
}

/// Snooped REPLY → route and RELEASE → route gone for `samples` clients on link 1: the bench
/// sends the relayed messages as the relay (from the access concentrator) and as the server.
fn snooped(lab: &IscLab, events: &Events, samples: usize) -> (Timed, Timed) {
    let up = lab
        .ac
        .run_in(|| UdpSocket::bind("[2001:db8::2]:547").expect("bind relay port"));
    let down = lab
        .server
        .run_in(|| UdpSocket::bind("[2001:db8::1]:547").expect("bind server port"));
    let (server, relay): (SocketAddrV6, SocketAddrV6) = (
        "[2001:db8::1]:547".parse().unwrap(),
        "[2001:db8::2]:547".parse().unwrap(),
    );
    let (mut reply, mut release) = (Timed::default(), Timed::default());
    for i in 0..samples {
        let a = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 3, 0, i as u16);
        let xid = 2 * i as u32;
        up.send_to(&relayed(MessageType::REQUEST, i, xid, a, 0), server)
            .unwrap();
        let t0 = Instant::now();
        down.send_to(&relayed(MessageType::REPLY, i, xid, a, 3600), relay)
            .unwrap();
        match wait_for_event(events, SAMPLE_BOUND, |t, ev| {
            matches!(ev, Seen::RouteAdd(r) if *r == a).then_some(t)
        }) {
            Some(t) => reply.total.push(t - t0),
            None => {
                reply.lost += 1;
                continue;
            }
        }
        up.send_to(&relayed(MessageType::RELEASE, i, xid + 1, a, 0), server)
            .unwrap();
        let t0 = Instant::now();
        down.send_to(&relayed(MessageType::REPLY, i, xid + 1, a, 0), relay)
            .unwrap();
        match wait_for_event(events, SAMPLE_BOUND, |t, ev| {
            matches!(ev, Seen::RouteDel(r) if *r == a).then_some(t)
        }) {
            Some(t) => release.total.push(t - t0),
            None => release.lost += 1,
        }
    }
    if reply.lost + release.lost > 0 {
        println!(
            "snooped: lost {} REPLY, {} RELEASE samples",
            reply.lost, release.lost
        );
    }
    (reply, release)
}

/// A relayed message of client `i` on link 1 (RELAY-FORW for REQUEST/RELEASE, RELAY-REPL for
/// REPLY), with an IA_NA holding `addr` (lifetimes `valid`; none in the REPLY to a RELEASE).
fn relayed(t: MessageType, i: usize, xid: u32, addr: Ipv6Addr, valid: u32) -> Vec<u8> {
    let mut c = ClientMessage::new(t, xid & 0xff_ffff);
    let mac = (i as u32).to_be_bytes();
    c.options.push(DhcpOption::ClientId(Duid::ll_ethernet([
        2, 0x30, mac[0], mac[1], mac[2], mac[3],
    ])));
    let is_reply = t == MessageType::REPLY;
    if is_reply {
        c.options.push(DhcpOption::ServerId(Duid::ll_ethernet([
            2, 0, 0, 0, 0, 0xaa,
        ])));
    }
    if !is_reply || valid > 0 {
        let mut na = Ia::new(1, 0, 0);
        na.options
            .push(DhcpOption::IaAddr(IaAddr::new(addr, valid, valid)));
        c.options.push(DhcpOption::IaNa(na));
    }
    let kind = if is_reply {
        MessageType::RELAY_REPL
    } else {
        MessageType::RELAY_FORW
    };
    let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 3, i as u16);
    let mut r = RelayMessage::new(kind, 0, link_address(1), peer);
    r.options
        .push(DhcpOption::RelayMsg(Box::new(Message::Client(c))));
    Message::Relay(r).to_vec().unwrap()
}

fn pct(v: &[Duration], p: usize) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    s[(s.len() * p / 100).min(s.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(what: &str, v: &[Duration]) {
    println!(
        "  {what:<44} n={:<5} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
        v.len(),
        ms(pct(v, 50)),
        ms(pct(v, 99)),
        ms(v.iter().max().copied().unwrap_or_default()),
    );
}

fn report_unknown(server: &str, u: &Unknown) {
    println!("unknown source -> route, {server} (lost {}):", u.lost);
    report("total: packet sent -> route announced", &u.total);
    report("packet sent -> leasequery on the wire", &u.to_query);
    report("leasequery -> answer on the wire (server RTT)", &u.server);
    report("answer on the wire -> route announced", &u.to_route);
}

/// The daemon's own split of the on-demand path (`lqagent_on_demand_stage_seconds`), from the
/// histogram's buckets: the upper bound of the bucket holding the 50th / 99th sample.
fn print_daemon_stages(ac: &NetNs) {
    let m = scrape_in(ac);
    let mut stages: Vec<String> = m
        .samples
        .iter()
        .filter(|(n, _, _)| n == "lqagent_on_demand_stage_seconds_count")
        .filter_map(|(_, l, _)| l.get("stage").cloned())
        .collect();
    stages.sort();
    stages.dedup();
    if stages.is_empty() {
        return;
    }
    println!("daemon stages (lqagent_on_demand_stage_seconds, whole run, bucket upper bounds):");
    for s in stages {
        let mut buckets: Vec<(f64, f64)> = m
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == "lqagent_on_demand_stage_seconds_bucket" && l.get("stage") == Some(&s)
            })
            .filter_map(|(_, l, v)| {
                let le = l.get("le")?.as_str();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = buckets.last().map(|b| b.1).unwrap_or(0.0);
        let at = |p: f64| {
            buckets
                .iter()
                .find(|(_, c)| *c >= count * p)
                .map(|b| b.0 * 1e3)
                .unwrap_or(f64::NAN)
        };
        println!(
            "  {s:<44} n={count:<5} p50 <= {:.3} ms  p99 <= {:.3} ms",
            at(0.5),
            at(0.99)
        );
    }
}
