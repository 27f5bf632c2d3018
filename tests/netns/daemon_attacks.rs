//! Issue 13's attacks, replayed against `lqagent run` (the built binary) in the access
//! concentrator of a real ISC topology (dhcpd -6, dhcrelay -6, dhclient -6 -N -P;
//! tests/support/src/isc.rs). Every test lets real clients bind first (real snooped routes), then
//! attacks, then checks three things: the attack left no trace in the kernel (`ip -6 route show
//! proto 211`: the victims' routes exactly as before, no new route), the refusal is counted in
//! `/metrics` under the expected `source`/`reason`, and the agent still works afterwards (a real
//! RELEASE still withdraws).
//!
//! - `forged_relay_replies_from_either_side_are_refused`: a RELAY-REPL carrying a REPLY, sent as
//!   one UDP datagram (source port 547) — (a) moving a neighbour's delegated prefix to
//!   `via fe80::bad`, (b) a prefix nobody delegated, (c) zero valid lifetimes for a neighbour's
//!   address and prefix — from a subscriber to the server's port 547 (leaves the box:
//!   `wrong_direction`), from the server's namespace with the server's own address to the
//!   victim's port 546 (`wrong_port`) and 547 (`wrong_destination`), and to this box's address
//!   with no RELAY-FORW ever seen (`reply_unmatched`).
//! - `hostile_leasequery_server_is_refused`: a configured server (a UDP responder in the test)
//!   answers the on-demand leasequery that a ping from an unknown source fires with `::/0` via the
//!   subscriber, `2000::/3`, `fd00::1` (outside the link), another link's delegated prefix, an
//!   answer that does not cover the asked address, an answer whose relay data re-homes another
//!   link's prefix to `fe80::bad`, and right-xid answers sent from addresses that are not the
//!   queried server (`lqagent_replies_dropped_total{reason="wrong_source"}` for a configured
//!   server's address, `reason="kernel_dropped"` for any other: the socket filter). Last, what a
//!   configured server may do: give a prefix of the asking link to another client (the merge
//!   rules believe it), which is counted (`lqagent_binding_moves_total{source="leasequery"}`)
//!   and logged with both clients.
//! - `forw_flood_does_not_keep_a_release_from_withdrawing`: 20 000 RELAY-FORWs leave the box
//!   from its own address (as many clients' requests would, overflowing the classifier's
//!   memory) while a real dhclient RELEASEs: its routes still go.
//! - `hostile_answer_from_the_subscriber_side_is_dropped`: the same, plus a reply with the queried server's address and the right
//!   xid that comes in from a subscriber link.
//! - `forw_spoofing_this_boxs_address_does_not_move_a_neighbours_prefix`: a subscriber's RELAY-FORW with this box's own address
//!   as source is dropped by the spoof guard (its counter takes it), before the kernel forwards it
//!   out of the uplink where it would be believed as the relay's own; the guard outlives a stop.
//!   `forw_spoofing_this_boxs_address_moves_a_prefix_without_the_guard` is its control run.
//!
//! The hostile server's extra addresses are deprecated (`preferred_lft 0`): dhcpd binds the
//! wildcard address and would otherwise answer the relay from the newest address on its
//! interface, which the snooper rightly does not trust.
//!
//! Datagrams are written through a raw IPv6 UDP socket (UDP header and checksum built here), so a
//! test can send from port 547 where dhcpd or dhcrelay already own it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lqagent::prefix::Ipv6Prefix;
use lqagent::wire::{
    ClientData, ClientMessage, DhcpOption, Duid, Ia, IaAddr, IaPrefix, LqRelayData, Message,
    MessageType, RelayMessage,
};
use support::agent::{client_routes, route_dsts, start_agent, write_config};
use support::isc::{IscLab, Lifetimes};
use support::netns::{NetNs, Route, proto_routes};
use support::scrape::{Exposition, scrape_in};

const PROTO: &str = "211";
const REJECTED: &str = "lqagent_admission_rejected_total";
const MOVES: &str = "lqagent_binding_moves_total";
const DHCP_SERVER_PORT: u16 = 547;
const DHCP_CLIENT_PORT: u16 = 546;

pub(crate) fn routes(ns: &NetNs) -> BTreeSet<Route> {
    proto_routes(ns, PROTO)
}

pub(crate) fn all_client_routes(lab: &IscLab) -> BTreeSet<Route> {
    (0..lab.clients.len())
        .flat_map(|i| client_routes(lab, i))
        .collect()
}

fn rejected(m: &Exposition, source: &str, reason: &str) -> f64 {
    m.value_or_zero(REJECTED, &[("source", source), ("reason", reason)])
}

/// Start the agent in a lab without clients yet, then the clients, and wait for their routes.
fn bound_lab(
    test: &str,
    clients: usize,
    prepare: impl FnOnce(&IscLab) -> PathBuf,
) -> Option<(IscLab, support::isc::Daemon)> {
    let mut lab = IscLab::without_clients(test, clients, Lifetimes::default())?;
    let cfg = prepare(&lab);
    let agent = start_agent(&lab, &cfg, "lqagent.log");
    lab.start_clients();
    let want = all_client_routes(&lab);
    assert_eq!(want.len(), 2 * clients);
    wait_routes(
        &lab,
        "every client's routes",
        Duration::from_secs(15),
        || routes(&lab.ac) == want,
    );
    Some((lab, agent))
}

/// Wait up to `timeout` for `f`; on timeout, panic naming `what` with the kernel's routes and
/// the agent's log (what a reader of a failure needs).
fn wait_routes(lab: &IscLab, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() >= timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\nroutes: {:?}\n{}",
                routes(&lab.ac),
                lab.log("lqagent")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn plain_config(lab: &IscLab, trigger: bool) -> PathBuf {
    write_config(
        lab,
        &format!(
            "[bulk]\nenabled = false\n\n[trigger]\nenabled = {trigger}\n\n\
             [routes]\nprotocol = {PROTO}\n\n[log]\nlevel = \"info\"\n"
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Raw UDP datagrams.

/// The UDP checksum over the IPv6 pseudo-header (RFC 8200 §8.1).
fn udp_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, udp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u64::from(w);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(udp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 17]);
    add(udp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
    }
}

/// A UDP datagram (header + payload) from `src` to `dst`, checksum filled in.
fn udp_datagram(src: &SocketAddrV6, dst: &SocketAddrV6, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("datagram fits");
    let mut d = Vec::with_capacity(usize::from(len));
    d.extend_from_slice(&src.port().to_be_bytes());
    d.extend_from_slice(&dst.port().to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let c = udp_checksum(src.ip(), dst.ip(), &d);
    d[6..8].copy_from_slice(&c.to_be_bytes());
    d
}

/// A raw IPv6 socket for UDP in the calling thread's namespace, bound to `src`'s address (which
/// must be one of the namespace's). The kernel writes the IPv6 header; we write the UDP one.
fn raw_udp_socket(src: Ipv6Addr) -> socket2::Socket {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::UDP)).expect("raw UDP socket");
    s.bind(&SockAddr::from(SocketAddrV6::new(src, 0, 0, 0)))
        .expect("bind the raw socket to the source address");
    s
}

/// Send each payload as one UDP datagram `src` → `dst` from inside `ns`.
fn send_udp(ns: &NetNs, src: SocketAddrV6, dst: SocketAddrV6, payloads: Vec<Vec<u8>>) {
    ns.run_in(move || {
        let s = raw_udp_socket(*src.ip());
        let to = socket2::SockAddr::from(SocketAddrV6::new(*dst.ip(), 0, 0, 0));
        for p in &payloads {
            let d = udp_datagram(&src, &dst, p);
            let n = s.send_to(&d, &to).expect("raw send");
            assert_eq!(n, d.len());
        }
    });
}

// ---------------------------------------------------------------------------------------------
// DHCPv6 messages, built with lqagent::wire.

fn duid(bytes: &[u8]) -> Duid {
    Duid::from(bytes)
}

pub(crate) fn hex_duid(hex_text: &str) -> Duid {
    duid(&hex::decode(hex_text).expect("hex DUID"))
}

/// A server's DUID the forgeries and the hostile server sign with.
fn forged_server_duid() -> Duid {
    duid(&[0, 3, 0, 1, 0x02, 0xba, 0xd0, 0, 0, 0x13])
}

fn prefix(text: &str) -> Ipv6Prefix {
    text.parse().expect("prefix")
}

fn ia_pd(p: Ipv6Prefix, valid: u32) -> DhcpOption {
    let mut ia = Ia::new(1, valid / 2, valid * 4 / 5);
    ia.options
        .push(DhcpOption::IaPrefix(IaPrefix::new(p, valid / 2, valid)));
    DhcpOption::IaPd(ia)
}

fn ia_na(a: Ipv6Addr, valid: u32) -> DhcpOption {
    let mut ia = Ia::new(1, valid / 2, valid * 4 / 5);
    ia.options
        .push(DhcpOption::IaAddr(IaAddr::new(a, valid / 2, valid)));
    DhcpOption::IaNa(ia)
}

/// RELAY-REPL(link, peer, RELAY_MSG = REPLY(xid, CLIENTID, SERVERID, ias)): what a server's
/// answer through the relay looks like.
fn relay_repl(
    link: Ipv6Addr,
    peer: Ipv6Addr,
    xid: u32,
    client: &Duid,
    ias: Vec<DhcpOption>,
) -> Vec<u8> {
    let mut reply = ClientMessage::new(MessageType::REPLY, xid);
    reply.options.push(DhcpOption::ClientId(client.clone()));
    reply
        .options
        .push(DhcpOption::ServerId(forged_server_duid()));
    reply.options.extend(ias);
    let mut repl = RelayMessage::new(MessageType::RELAY_REPL, 0, link, peer);
    repl.options
        .push(DhcpOption::RelayMsg(Box::new(Message::Client(reply))));
    Message::Relay(repl).to_vec().expect("emit RELAY-REPL")
}

/// The three forged answers of issue 13 against `victim` (client index) of `lab`:
/// (a) its prefix moved to `via fe80::bad`; (b) a prefix nobody delegated; (c) zero valid
/// lifetimes for its address and prefix.
fn forged_replies(lab: &IscLab, victim: usize, nobody: Ipv6Prefix) -> Vec<Vec<u8>> {
    let c = &lab.clients[victim];
    let lease = c.lease().expect("victim bound");
    let pfx = prefix(&lease.prefix);
    let victim_duid = hex_duid(&lease.client_duid);
    let bad: Ipv6Addr = "fe80::bad".parse().unwrap();
    vec![
        relay_repl(
            c.link_address,
            bad,
            0x13_0001,
            &victim_duid,
            vec![ia_pd(pfx, 7200)],
        ),
        relay_repl(
            c.link_address,
            bad,
            0x13_0002,
            &duid(&[0, 3, 0, 1, 0x02, 0xa7, 0x7a, 0xc4, 0, 1]),
            vec![ia_pd(nobody, 7200)],
        ),
        relay_repl(
            c.link_address,
            c.link_local(),
            0x13_0003,
            &victim_duid,
            vec![ia_na(lease.address, 0), ia_pd(pfx, 0)],
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1 + 2: forged RELAY-REPLs from the subscriber side and from upstream.

#[test]
fn forged_relay_replies_from_either_side_are_refused() {
    let test = "forged_relay_replies_from_either_side_are_refused";
    let Some((mut lab, _agent)) = bound_lab(test, 2, |lab| plain_config(lab, false)) else {
        return;
    };
    let before = routes(&lab.ac);
    let (attacker, victim) = (0, 1);
    let victim_lease = lab.clients[victim].lease().unwrap();
    let nobody = prefix("2001:db8:2f0::/56");
    assert_ne!(victim_lease.prefix, nobody.to_string(), "nobody holds it");
    let attacks = forged_replies(&lab, victim, nobody);
    let n = attacks.len() as f64;
    let m0 = scrape_in(&lab.ac);
    let moves0 = m0.value_or_zero(MOVES, &[]);
    let unchanged = |what: &str| {
        let now = routes(&lab.ac);
        assert_eq!(now, before, "{what}: the kernel's routes changed");
        assert!(
            !route_dsts(&lab.ac, PROTO).contains(&nobody.to_string()),
            "{what}: a route for the undelegated prefix"
        );
    };
    let wait_counted = |what: &str, reason: &str, base: &Exposition| {
        let b = rejected(base, "snoop", reason);
        wait_routes(&lab, what, Duration::from_secs(10), || {
            rejected(&scrape_in(&lab.ac), "snoop", reason) >= b + n
        });
        let got = rejected(&scrape_in(&lab.ac), "snoop", reason) - b;
        assert_eq!(got, n, "{what}: one refusal per forged datagram");
    };

    // 1. From the subscriber side: to the server's port 547, from the attacker's leased address.
    let from = SocketAddrV6::new(
        lab.clients[attacker].lease().unwrap().address,
        DHCP_SERVER_PORT,
        0,
        0,
    );
    let server = SocketAddrV6::new(lab.server_address, DHCP_SERVER_PORT, 0, 0);
    send_udp(&lab.clients[attacker].ns, from, server, attacks.clone());
    wait_counted("(1) subscriber → server:547", "wrong_direction", &m0);
    unchanged("(1) from the subscriber side");
    eprintln!("(1) 3 forged RELAY-REPLs from a subscriber: refused as wrong_direction");

    // 2. From upstream, with the server's own address as the source.
    let spoofed = SocketAddrV6::new(lab.server_address, DHCP_SERVER_PORT, 0, 0);
    let m1 = scrape_in(&lab.ac);
    send_udp(
        &lab.server,
        spoofed,
        SocketAddrV6::new(victim_lease.address, DHCP_CLIENT_PORT, 0, 0),
        attacks.clone(),
    );
    wait_counted("(2a) server → victim:546", "wrong_port", &m1);
    unchanged("(2a) upstream to the victim's port 546");
    let m2 = scrape_in(&lab.ac);
    send_udp(
        &lab.server,
        spoofed,
        SocketAddrV6::new(victim_lease.address, DHCP_SERVER_PORT, 0, 0),
        attacks.clone(),
    );
    wait_counted("(2b) server → victim:547", "wrong_destination", &m2);
    unchanged("(2b) upstream to the victim's port 547");
    // Addressed to this box, from a configured server, 547 → 547: only the missing RELAY-FORW
    // gives it away (an on-path attacker could do no better).
    let m3 = scrape_in(&lab.ac);
    send_udp(
        &lab.server,
        spoofed,
        SocketAddrV6::new(lab.ac_address, DHCP_SERVER_PORT, 0, 0),
        attacks,
    );
    wait_counted("(2c) server → this box:547", "reply_unmatched", &m3);
    unchanged("(2c) upstream to this box, no RELAY-FORW");
    eprintln!(
        "(2) 9 forged RELAY-REPLs from upstream: wrong_port, wrong_destination, reply_unmatched"
    );

    let m = scrape_in(&lab.ac);
    assert_eq!(
        m.value_or_zero(MOVES, &[]),
        moves0,
        "no binding changed hands"
    );
    for reason in [
        "unknown_link",
        "outside_link",
        "prefix_length",
        "bad_next_hop",
    ] {
        assert_eq!(
            rejected(&m, "snoop", reason),
            rejected(&m0, "snoop", reason),
            "nothing forged got as far as admission ({reason})"
        );
    }

    // Still working: the victim releases for real and its routes go; the attacker keeps its own.
    lab.clients[victim].release();
    let rest = client_routes(&lab, attacker);
    wait_routes(
        &lab,
        "the released client's routes to go",
        Duration::from_secs(10),
        || routes(&lab.ac) == rest,
    );
    eprintln!("after: a real RELEASE still withdraws");
}

// ---------------------------------------------------------------------------------------------
// 3 + 4: a hostile leasequery server, and answers from the wrong source.

/// What the hostile server answers for one asked address.
#[derive(Debug, Clone)]
enum Answer {
    /// One CLIENT_DATA with these options (CLIENTID and CLT_TIME added), from the server's own
    /// address.
    ClientData(Vec<DhcpOption>),
    /// The same, but sent from each of these addresses (port 547), never from the server's.
    FromElsewhere(Vec<DhcpOption>, Vec<Ipv6Addr>),
    /// The same, with the queried server's address as source, but from a subscriber's side of
    /// the box (to this box's address on that subscriber link).
    ViaSubscriber(Vec<DhcpOption>),
}

/// LQ_RELAY_DATA: the relay chain the server says it last saw the client through.
fn lq_relay_data(link: Ipv6Addr, peer: Ipv6Addr) -> DhcpOption {
    DhcpOption::LqRelayData(Box::new(LqRelayData {
        peer_address: peer,
        relay: RelayMessage::new(MessageType::RELAY_FORW, 0, link, peer),
    }))
}

fn hostile_client_duid() -> Duid {
    duid(&[0, 3, 0, 1, 0x02, 0x66, 0x66, 0, 0, 0x01])
}

/// A LEASEQUERY-REPLY to `query` (correct xid, its CLIENTID echoed, our SERVERID) with one
/// CLIENT_DATA of `data` plus a client id and CLT_TIME 0; None when `query` is no LEASEQUERY.
fn hostile_reply(
    query: &[u8],
    answers: &BTreeMap<Ipv6Addr, Answer>,
) -> Option<(Ipv6Addr, Vec<u8>, Answer)> {
    let Ok(Message::Client(q)) = Message::parse(query) else {
        return None;
    };
    if q.msg_type != MessageType::LEASEQUERY {
        return None;
    }
    let asked = q.options.lq_query()?.options.ia_addrs().next()?.addr;
    let answer = answers.get(&asked)?.clone();
    let data = match &answer {
        Answer::ClientData(d) | Answer::FromElsewhere(d, _) | Answer::ViaSubscriber(d) => d.clone(),
    };
    let mut cd = ClientData::default();
    cd.options.push(DhcpOption::ClientId(hostile_client_duid()));
    cd.options.extend(data);
    cd.options.push(DhcpOption::CltTime(0));
    let mut r = ClientMessage::new(MessageType::LEASEQUERY_REPLY, q.transaction_id);
    r.options
        .push(DhcpOption::ClientId(q.options.client_id()?.clone()));
    r.options.push(DhcpOption::ServerId(forged_server_duid()));
    r.options.push(DhcpOption::ClientData(cd));
    Some((asked, Message::Client(r).to_vec().ok()?, answer))
}

/// A UDP socket on `addr`:547 in the server namespace, sharing the port with dhcpd (which binds
/// the wildcard address with SO_REUSEADDR; the more specific bind gets the datagrams).
fn server_socket(addr: Ipv6Addr) -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_only_v6(true).unwrap();
    s.bind(&SocketAddr::from((addr, DHCP_SERVER_PORT)).into())
        .unwrap_or_else(|e| panic!("bind [{addr}]:547: {e}"));
    s.into()
}

/// The hostile server: answers LEASEQUERYs on `addr`:547 per `answers` until `stop`; records the
/// addresses it was asked about.
struct Hostile {
    stop: Arc<AtomicBool>,
    asked: Arc<Mutex<Vec<Ipv6Addr>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    /// `spoof`: a raw IPv6 socket made in a subscriber's namespace and this box's address on
    /// that link, for [`Answer::ViaSubscriber`].
    fn start(
        ns: &NetNs,
        addr: Ipv6Addr,
        answers: BTreeMap<Ipv6Addr, Answer>,
        spoof: Option<(socket2::Socket, Ipv6Addr)>,
    ) -> Hostile {
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (st, ak) = (stop.clone(), asked.clone());
        let file = std::fs::File::open(ns.path()).expect("netns handle");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&file);
            let sock = server_socket(addr);
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut others: BTreeMap<Ipv6Addr, UdpSocket> = BTreeMap::new();
            for a in answers.values() {
                if let Answer::FromElsewhere(_, from) = a {
                    for f in from {
                        others.entry(*f).or_insert_with(|| server_socket(*f));
                    }
                }
            }
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                let Ok((len, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Some((q, reply, answer)) = hostile_reply(&buf[..len], &answers) else {
                    continue;
                };
                ak.lock().unwrap().push(q);
                match answer {
                    Answer::ClientData(_) => {
                        sock.send_to(&reply, peer).expect("hostile reply");
                    }
                    Answer::FromElsewhere(_, from) => {
                        for f in &from {
                            others[f]
                                .send_to(&reply, peer)
                                .expect("reply from elsewhere");
                        }
                    }
                    Answer::ViaSubscriber(_) => {
                        let (raw, box_addr) = spoof.as_ref().expect("a subscriber socket");
                        let src = SocketAddrV6::new(addr, DHCP_SERVER_PORT, 0, 0);
                        let dst = SocketAddrV6::new(*box_addr, peer.port(), 0, 0);
                        let to = socket2::SockAddr::from(SocketAddrV6::new(*box_addr, 0, 0, 0));
                        raw.send_to(&spoofed_packet(&src, &dst, &reply), &to)
                            .expect("spoofed reply");
                    }
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("hostile server bound");
        Hostile {
            stop,
            asked,
            thread: Some(thread),
        }
    }

    fn asked(&self) -> Vec<Ipv6Addr> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[allow(unsafe_code)]
fn enter(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid, open namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Give client `i` the extra address `a` and send one ping from it across the box, again
/// every 2 s until `done` (the trigger fires a leasequery for the unknown source).
fn ping_from_until(
    lab: &IscLab,
    i: usize,
    a: Ipv6Addr,
    what: &str,
    mut done: impl FnMut() -> bool,
) {
    let c = &lab.clients[i];
    c.ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{a}/128"),
        "dev",
        &c.interface,
        "nodad",
    ]);
    let t0 = Instant::now();
    loop {
        let _ = c.ns.try_exec(&[
            "ping",
            "-6",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            &a.to_string(),
            &lab.server_address.to_string(),
        ]);
        let t1 = Instant::now();
        while t1.elapsed() < Duration::from_secs(2) {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if t0.elapsed() >= Duration::from_secs(20) {
            let m = scrape_in(&lab.ac);
            let interesting: Vec<String> = m
                .samples
                .iter()
                .filter(|(n, _, _)| {
                    ["rejected", "dropped", "on_demand", "trigger", "leasequer"]
                        .iter()
                        .any(|k| n.contains(k))
                })
                .map(|(n, l, v)| format!("{n}{l:?} = {v}"))
                .collect();
            panic!(
                "timed out waiting for {what}\n{}\n{}",
                interesting.join("\n"),
                lab.log("lqagent")
            );
        }
    }
}

#[test]
fn hostile_leasequery_server_is_refused() {
    hostile_scenario("hostile_leasequery_server_is_refused", false);
}

/// The whole hostile scenario, then case (g) — a LEASEQUERY-REPLY with the queried server's address as source and the
/// right xid, sent by a subscriber to this box's address on its own link (the test's hostile
/// server hands the xid over; a real attacker must guess 24 bits within the retransmission
/// window). The requestor reads the arrival interface (IPV6_PKTINFO) and drops a reply that
/// came in on a subscriber link, whatever its source address.
#[test]
fn hostile_answer_from_the_subscriber_side_is_dropped() {
    hostile_scenario("hostile_answer_from_the_subscriber_side_is_dropped", true);
}

/// Cases (a)–(f) and 4 of the hostile server; with `from_subscriber_side`, case (g) too.
fn hostile_scenario(test: &str, from_subscriber_side: bool) {
    let Some(mut lab) = IscLab::without_clients(test, 2, Lifetimes::default()) else {
        return;
    };
    let hostile_addr: Ipv6Addr = "2001:db8::3".parse().unwrap();
    let stranger: Ipv6Addr = "2001:db8::4".parse().unwrap();
    // Deprecated (preferred_lft 0), so dhcpd's own answers keep leaving from its address.
    for a in [hostile_addr, stranger] {
        lab.server.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{a}/64"),
            "dev",
            "s0",
            "nodad",
            "preferred_lft",
            "0",
        ]);
    }
    // The hostile server is asked first (failover order); dhcpd stays configured, so its
    // relayed answers are still believed by the snooper.
    let dhcpd_block = format!(
        "[[servers]]\nname = \"dhcpd\"\naddress = \"{}\"\n",
        lab.server_address
    );
    let toml = lab.lqagent_toml();
    assert!(toml.contains(&dhcpd_block), "{toml}");
    let toml = toml.replace(
        &dhcpd_block,
        &format!("[[servers]]\nname = \"hostile\"\naddress = \"{hostile_addr}\"\n\n{dhcpd_block}"),
    );
    let cfg = lab.dir().join("lqagent.toml");
    std::fs::write(
        &cfg,
        format!(
            "{toml}\n[bulk]\nenabled = false\n\n[routes]\nprotocol = {PROTO}\n\n\
             [log]\nlevel = \"info\"\n"
        ),
    )
    .unwrap();
    let _agent = start_agent(&lab, &cfg, "lqagent.log");
    lab.start_clients();
    let want = all_client_routes(&lab);
    wait_routes(
        &lab,
        "every client's routes",
        Duration::from_secs(15),
        || routes(&lab.ac) == want,
    );
    let before = routes(&lab.ac);

    let c0 = &lab.clients[0];
    let link0 = c0.link_address;
    let ll0 = c0.link_local();
    let other = lab.clients[1].lease().unwrap();
    let other_pfx = prefix(&other.prefix);
    let bad: Ipv6Addr = "fe80::bad".parse().unwrap();
    let asked = |n: u16| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n);
    let iaaddr = |a: Ipv6Addr| DhcpOption::IaAddr(IaAddr::new(a, 300, 600));
    let iaprefix = |len: u8, a: Ipv6Addr| {
        DhcpOption::IaPrefix(IaPrefix {
            preferred: 300,
            valid: 600,
            prefix_len: len,
            prefix_addr: a,
            options: Default::default(),
        })
    };
    let fd00: Ipv6Addr = "fd00::1".parse().unwrap();
    // In the link's /64 but outside dhcpd's range6 (::100–::1ff), as every asked address here
    // is: inside it, the real client on this link could hold it (dhcpd picks an address of the
    // range per run) and its legitimate /128 would read as the hostile answer's route.
    let uncovered = asked(0x2f0);
    let answers = BTreeMap::from([
        // (a) ::/0 via the subscriber.
        (
            asked(0x71),
            Answer::ClientData(vec![
                iaprefix(0, Ipv6Addr::UNSPECIFIED),
                lq_relay_data(link0, ll0),
            ]),
        ),
        // (a') 2000::/3: everything global.
        (
            asked(0x72),
            Answer::ClientData(vec![
                iaprefix(3, "2000::".parse().unwrap()),
                lq_relay_data(link0, ll0),
            ]),
        ),
        // (b) the asked address, plus fd00::1 outside the link.
        (
            asked(0x73),
            Answer::ClientData(vec![iaaddr(asked(0x73)), iaaddr(fd00)]),
        ),
        // (c) the asked address, plus another link's delegated prefix on this link.
        (
            asked(0x74),
            Answer::ClientData(vec![
                iaaddr(asked(0x74)),
                DhcpOption::IaPrefix(IaPrefix::new(other_pfx, 300, 600)),
                lq_relay_data(link0, ll0),
            ]),
        ),
        // (d) an answer about another address than the one asked.
        (asked(0x75), Answer::ClientData(vec![iaaddr(uncovered)])),
        // (e) the asked address, plus another link's prefix, with relay data naming that
        // other link and a next hop of the server's choosing.
        (
            asked(0x76),
            Answer::ClientData(vec![
                iaaddr(asked(0x76)),
                DhcpOption::IaPrefix(IaPrefix::new(other_pfx, 300, 600)),
                lq_relay_data(lab.clients[1].link_address, bad),
            ]),
        ),
        // 4. A well-formed answer for the asked address, from addresses that are not the
        // queried server's (a stranger, and the other configured server).
        (
            asked(0x77),
            Answer::FromElsewhere(
                vec![iaaddr(asked(0x77))],
                vec![stranger, lab.server_address],
            ),
        ),
    ]);
    // (f) this link's own client's prefix, given to another client (via fe80::bad).
    let own_pfx = prefix(&c0.lease().unwrap().prefix);
    let mut answers = answers;
    answers.insert(
        asked(0x78),
        Answer::ClientData(vec![
            iaaddr(asked(0x78)),
            DhcpOption::IaPrefix(IaPrefix::new(own_pfx, 300, 600)),
            lq_relay_data(link0, bad),
        ]),
    );
    // (g) an answer with the queried server's address as source, sent by subscriber 0 to this
    // box's address on its link (right xid: the test's hostile server passes it on).
    answers.insert(
        asked(0x79),
        Answer::ViaSubscriber(vec![iaaddr(asked(0x79))]),
    );
    let spoof = (header_included_socket(&c0.ns), c0.link_address);
    let hostile = Hostile::start(&lab.server, hostile_addr, answers, Some(spoof));

    let m0 = scrape_in(&lab.ac);
    let moves0 = m0.value_or_zero(MOVES, &[]);
    let lq = |reason: &str| rejected(&scrape_in(&lab.ac), "leasequery", reason);
    let no_default = |what: &str| {
        let dsts = route_dsts(&lab.ac, PROTO);
        assert!(!dsts.contains("default"), "{what}: default route {dsts:?}");
        assert!(!dsts.contains("::/0"), "{what}: ::/0 route {dsts:?}");
        let out = lab.ac.exec(&["ip", "-6", "route", "show", "default"]);
        assert!(
            out.stdout.is_empty(),
            "{what}: a default route in the box: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    // Every expected route (the victims' unchanged, plus the asked addresses a case admits).
    let mut expect = before.clone();

    // (a) ::/0 (its network address is `::`, caught first as special_address) and (a')
    // 2000::/3 (prefix_length).
    for (n, what, reason) in [
        (0x71, "::/0", "special_address"),
        (0x72, "2000::/3", "prefix_length"),
    ] {
        let b = lq(reason);
        ping_from_until(&lab, 0, asked(n), what, || lq(reason) >= b + 1.0);
        no_default(what);
        assert!(!route_dsts(&lab.ac, PROTO).contains("2000::/3"), "{what}");
        assert_eq!(routes(&lab.ac), expect, "{what}: routes changed");
        eprintln!("(3a) hostile {what}: refused as {reason}");
    }

    // (b) fd00::1: outside_link; the asked address (inside the link) is admitted.
    let b = lq("outside_link");
    ping_from_until(&lab, 0, asked(0x73), "fd00::1", || {
        lq("outside_link") >= b + 1.0
    });
    expect.insert((
        format!("{}/128", asked(0x73)),
        None,
        c0.ac_interface.clone(),
    ));
    wait_routes(
        &lab,
        "the admitted part of (b)",
        Duration::from_secs(10),
        || routes(&lab.ac) == expect,
    );
    assert!(!route_dsts(&lab.ac, PROTO).contains("fd00::1/128"));
    eprintln!("(3b) hostile fd00::1: refused as outside_link, the asked address kept");

    // (c) another link's prefix on this link: outside_link; its owner's route untouched.
    let b = lq("outside_link");
    ping_from_until(&lab, 0, asked(0x74), "another link's prefix", || {
        lq("outside_link") >= b + 1.0
    });
    expect.insert((
        format!("{}/128", asked(0x74)),
        None,
        c0.ac_interface.clone(),
    ));
    wait_routes(
        &lab,
        "the admitted part of (c)",
        Duration::from_secs(10),
        || routes(&lab.ac) == expect,
    );
    eprintln!("(3c) hostile re-homing of {other_pfx}: refused as outside_link");

    // (d) not covering: dropped whole.
    let b = lq("not_covering");
    ping_from_until(&lab, 0, asked(0x75), "an uncovering answer", || {
        lq("not_covering") >= b + 1.0
    });
    assert_eq!(routes(&lab.ac), expect, "(d): routes changed");
    assert!(!route_dsts(&lab.ac, PROTO).contains(&format!("{uncovered}/128")));
    eprintln!(
        "(3d) hostile answer about {uncovered} for {}: refused as not_covering",
        asked(0x75)
    );

    // (e) relay data naming the other link, its prefix via fe80::bad: the asked address is
    // refused on that link, so nothing of the answer covers the question (not_covering).
    let b = lq("not_covering");
    ping_from_until(&lab, 0, asked(0x76), "a re-homing answer", || {
        lq("not_covering") >= b + 1.0
    });
    // Whatever was refused, the other link's prefix is still where its owner put it.
    let now = routes(&lab.ac);
    assert!(
        before.iter().all(|r| now.contains(r)),
        "(e): a victim's route changed:\nbefore {before:?}\nnow {now:?}"
    );
    assert!(
        !now.iter().any(|r| r.1.as_deref() == Some("fe80::bad")),
        "(e): a route via fe80::bad: {now:?}"
    );
    eprintln!(
        "(3e) hostile relay data re-homing {other_pfx} via fe80::bad: refused as not_covering"
    );

    // 4. Right xid, wrong source: dropped, nothing learnt. The stranger's reply is dropped by
    // the kernel (the requestor's socket filter passes configured servers only); the other
    // configured server's passes the filter and the requestor drops it as wrong_source.
    let dropped = |m: &Exposition, reason: &str| {
        m.value_or_zero("lqagent_replies_dropped_total", &[("reason", reason)])
    };
    let m = scrape_in(&lab.ac);
    let (d0, k0) = (dropped(&m, "wrong_source"), dropped(&m, "kernel_dropped"));
    ping_from_until(&lab, 0, asked(0x77), "wrong-source replies", || {
        let m = scrape_in(&lab.ac);
        dropped(&m, "wrong_source") >= d0 + 1.0 && dropped(&m, "kernel_dropped") >= k0 + 1.0
    });
    assert!(
        !route_dsts(&lab.ac, PROTO).contains(&format!("{}/128", asked(0x77))),
        "(4): an answer from the wrong source was believed"
    );
    eprintln!(
        "(4) right xid from {stranger} (dropped by the kernel's filter) and from dhcpd's address \
         (dropped as wrong_source)"
    );

    // (g) Right server address, right xid, wrong side of the box: not the interface towards
    // the server. It is counted as `wrong_interface` — its own reason, so wrong_source drops
    // still arriving from (4) cannot end the wait before this reply was judged.
    if from_subscriber_side {
        let wrong_interface = || {
            scrape_in(&lab.ac).value_or_zero(
                "lqagent_replies_dropped_total",
                &[("reason", "wrong_interface")],
            )
        };
        let d0 = wrong_interface();
        ping_from_until(
            &lab,
            0,
            asked(0x79),
            "a reply from the subscriber side",
            || {
                wrong_interface() > d0
                    || route_dsts(&lab.ac, PROTO).contains(&format!("{}/128", asked(0x79)))
            },
        );
        assert!(
            !route_dsts(&lab.ac, PROTO).contains(&format!("{}/128", asked(0x79))),
            "(g): an answer that came in from a subscriber link was believed"
        );
        eprintln!("(g) the queried server's address from the subscriber side: dropped");
    }

    let m = scrape_in(&lab.ac);
    assert_eq!(
        m.value_or_zero(MOVES, &[]),
        moves0,
        "no binding changed hands"
    );
    let asked_now = hostile.asked();
    for n in [0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77] {
        assert!(
            asked_now.contains(&asked(n)),
            "the hostile server was asked about {}",
            asked(n)
        );
    }
    no_default("after all");
    assert!(
        before.iter().all(|r| routes(&lab.ac).contains(r)),
        "victims' routes as before"
    );

    // (f) Inside the link, a configured server may say a prefix changed hands (the merge rules
    // decide), but never silently: counted by source and logged with both clients.
    let moved = |m: &Exposition| m.value_or_zero(MOVES, &[("source", "leasequery")]);
    let mv0 = moved(&scrape_in(&lab.ac));
    ping_from_until(&lab, 0, asked(0x78), "a counted move", || {
        moved(&scrape_in(&lab.ac)) >= mv0 + 1.0
    });
    let log = lab.log("lqagent");
    let line = log
        .lines()
        .find(|l| l.contains("lease changed hands") && l.contains(&own_pfx.to_string()))
        .unwrap_or_else(|| panic!("no log line for the move of {own_pfx}:\n{log}"));
    assert!(
        line.contains(&c0.lease().unwrap().client_duid)
            && line.contains(&hex::encode(hostile_client_duid().to_vec())),
        "the move names both clients: {line}"
    );
    eprintln!(
        "(3f) {own_pfx} given to another client on its own link: counted as a move and logged; \
         routes now {:?}",
        routes(&lab.ac)
    );
    drop(hostile);

    // Still working: a real RELEASE withdraws.
    let gone = client_routes(&lab, 1);
    lab.clients[1].release();
    wait_routes(
        &lab,
        "the released client's routes to go",
        Duration::from_secs(10),
        || {
            let now = routes(&lab.ac);
            gone.iter().all(|r| !now.contains(r))
        },
    );
    let c0 = &lab.clients[0];
    assert!(
        routes(&lab.ac).contains(&(
            format!("{}/128", c0.lease().unwrap().address),
            None,
            c0.ac_interface.clone()
        )),
        "client 0 keeps its address route"
    );
    eprintln!("after: a real RELEASE still withdraws");
}

// ---------------------------------------------------------------------------------------------
// 5: a RELAY-FORW flood while a real client releases.

/// Hop count that marks the flood's RELAY-FORWs (dhcrelay sends 0), so the server namespace can
/// drop them: the test is about lqagent's memory, not dhcpd's queue.
const FLOOD_HOPS: u8 = 7;

fn flood_forw(i: u32, link: Ipv6Addr) -> Vec<u8> {
    let mut req = ClientMessage::new(MessageType::REQUEST, i & 0x00ff_ffff);
    let [a, b, c, d] = i.to_be_bytes();
    req.options.push(DhcpOption::ClientId(duid(&[
        0, 3, 0, 1, 0x02, 0xf1, a, b, c, d,
    ])));
    req.options.push(ia_na(
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0x100, 1),
        600,
    ));
    let mut forw = RelayMessage::new(
        MessageType::RELAY_FORW,
        FLOOD_HOPS,
        link,
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xf100, (i >> 16) as u16, i as u16),
    );
    forw.options
        .push(DhcpOption::RelayMsg(Box::new(Message::Client(req))));
    Message::Relay(forw).to_vec().expect("emit RELAY-FORW")
}

/// The classifier's memory of binding exchanges' RELAY-FORWs (its default
/// `pending_capacity`): a flood must push more than this past a pending RELEASE.
const FORW_MEMORY: f64 = 8192.0;

fn classified(ns: &NetNs, event: &str) -> f64 {
    scrape_in(ns).value_or_zero("lqagent_snoop_classified_total", &[("event", event)])
}

fn snooped_releases(ns: &NetNs) -> f64 {
    scrape_in(ns).value_or_zero(
        "lqagent_snooped_messages_total",
        &[("message_type", "RELEASE")],
    )
}

/// Send `kill -SIG` to every process of `ns` (the lab's server namespace runs dhcpd alone).
fn signal_all(ns: &NetNs, sig: &str) {
    let out = support::netns::sh(&["ip", "netns", "pids", ns.name()]);
    let pids = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!pids.trim().is_empty(), "no process in {}", ns.name());
    for pid in pids.split_whitespace() {
        support::netns::sh(&["kill", &format!("-{sig}"), pid]);
    }
}

#[test]
fn forw_flood_does_not_keep_a_release_from_withdrawing() {
    const FLOOD: u32 = 80_000;
    const RATE: u64 = 8_000;
    let test = "forw_flood_does_not_keep_a_release_from_withdrawing";
    let Some((mut lab, _agent)) = bound_lab(test, 2, |lab| plain_config(lab, false)) else {
        return;
    };
    // The server drops the flood (RELAY-FORW with hop count FLOOD_HOPS).
    lab.server.exec(&["nft", "add", "table", "ip6", "flood"]);
    lab.server.exec(&[
        "nft",
        "add chain ip6 flood in { type filter hook input priority 0; }",
    ]);
    lab.server.exec(&[
        "nft",
        &format!("add rule ip6 flood in udp dport 547 @th,64,8 12 @th,72,8 {FLOOD_HOPS} drop"),
    ]);
    let forw0 = classified(&lab.ac, "relay_forw");
    let evicted0 = classified(&lab.ac, "pending_evicted");
    let released = client_routes(&lab, 0);
    let rest = client_routes(&lab, 1);

    // The flood: from this box's own address to the server, 547 → 547 — what the snooper must
    // believe — paced at RATE a second until stopped.
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (sent, stop) = (sent.clone(), stop.clone());
        let (src, dst) = (
            SocketAddrV6::new(lab.ac_address, DHCP_SERVER_PORT, 0, 0),
            SocketAddrV6::new(lab.server_address, DHCP_SERVER_PORT, 0, 0),
        );
        let link = lab.clients[1].link_address;
        let file = std::fs::File::open(lab.ac.path()).unwrap();
        std::thread::spawn(move || {
            enter(&file);
            let s = raw_udp_socket(*src.ip());
            let to = socket2::SockAddr::from(SocketAddrV6::new(*dst.ip(), 0, 0, 0));
            let t0 = Instant::now();
            for i in 0..FLOOD {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let d = udp_datagram(&src, &dst, &flood_forw(i, link));
                loop {
                    match s.send_to(&d, &to) {
                        Ok(_) => break,
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            std::thread::yield_now()
                        }
                        Err(e) => panic!("flood send: {e}"),
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
                if i % 200 == 199 {
                    let due = Duration::from_millis(u64::from(i + 1) * 1000 / RATE);
                    if let Some(rest) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            }
            t0.elapsed()
        })
    };
    // Once the flood has filled the memory, hold dhcpd (SIGSTOP) so the RELEASE waits for its
    // answer while more than a whole memory of FORWs goes past it, then let dhcpd answer.
    wait_routes(
        &lab,
        "the flood to fill the FORW memory",
        Duration::from_secs(10),
        || classified(&lab.ac, "relay_forw") >= forw0 + FORW_MEMORY + 500.0,
    );
    let releases0 = snooped_releases(&lab.ac);
    signal_all(&lab.server, "STOP");
    let (client0, ac, server) = (&mut lab.clients[0], &lab.ac, &lab.server);
    let (forws_past, release_seen_at) = std::thread::scope(|sc| {
        let releasing = sc.spawn(move || client0.release());
        // Count FORWs from the last RELEASE transmission the snooper saw (dhclient retransmits
        // while the server is silent; each retransmission refreshes the pending entry).
        let t0 = Instant::now();
        let mut last = (releases0, 0.0);
        loop {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "no quiet window of {FORW_MEMORY} FORWs after a RELEASE"
            );
            let (r, f) = (snooped_releases(ac), classified(ac, "relay_forw"));
            if r > last.0 {
                last = (r, f);
            } else if r > releases0 && f >= last.1 + FORW_MEMORY + 1000.0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let forws_past = classified(ac, "relay_forw") - last.1;
        signal_all(server, "CONT");
        releasing.join().expect("dhclient -r");
        (forws_past, last.0 - releases0)
    });
    let sent_at_answer = sent.load(Ordering::Relaxed);
    wait_routes(
        &lab,
        "the released client's routes to go",
        Duration::from_secs(10),
        || routes(&lab.ac) == rest,
    );
    stop.store(true, Ordering::Relaxed);
    let took = flood.join().expect("flood thread");
    let forws = classified(&lab.ac, "relay_forw") - forw0;
    let evicted = classified(&lab.ac, "pending_evicted") - evicted0;
    eprintln!(
        "(5) {} RELAY-FORWs in {took:?} ({sent_at_answer} when dhcpd answered); {release_seen_at} \
         RELEASE transmissions seen; {forws_past} FORWs remembered between the last one and the \
         answer; classifier: {forws} FORWs, {evicted} evicted; released routes {released:?} gone",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        forws_past > FORW_MEMORY,
        "more FORWs than the memory holds went past the pending RELEASE"
    );
    assert!(evicted >= 1.0, "the flood overflowed the FORW memory");
    assert_eq!(routes(&lab.ac), rest, "the other client's routes stay");
}

/// A raw IPv6 socket with the header included (`IPPROTO_RAW`), made inside `ns`: it sends
/// packets with any source address.
fn header_included_socket(ns: &NetNs) -> socket2::Socket {
    ns.run_in(|| {
        use socket2::{Domain, Protocol, Socket, Type};
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(255)))
            .expect("raw IPv6 socket (IPPROTO_RAW: header included)")
    })
}

/// An IPv6 packet carrying one UDP datagram `src` → `dst`.
fn spoofed_packet(src: &SocketAddrV6, dst: &SocketAddrV6, payload: &[u8]) -> Vec<u8> {
    let udp = udp_datagram(src, dst, payload);
    let mut pkt = vec![0x60, 0, 0, 0];
    pkt.extend_from_slice(&u16::try_from(udp.len()).unwrap().to_be_bytes());
    pkt.extend_from_slice(&[17, 64]);
    pkt.extend_from_slice(&src.ip().octets());
    pkt.extend_from_slice(&dst.ip().octets());
    pkt.extend_from_slice(&udp);
    pkt
}

/// Send one IPv6 packet with a header we write (any source address) from inside `ns`.
fn send_spoofed(ns: &NetNs, src: SocketAddrV6, dst: SocketAddrV6, payload: Vec<u8>) {
    let s = header_included_socket(ns);
    let to = socket2::SockAddr::from(SocketAddrV6::new(*dst.ip(), 0, 0, 0));
    s.send_to(&spoofed_packet(&src, &dst, &payload), &to)
        .expect("raw send");
}

/// Octets as dhclient writes them (`support::isc::lease_file_octets`).
fn colon_hex(text: &str) -> Vec<u8> {
    support::isc::lease_file_octets(text)
}

#[test]
fn lease_file_octets_reads_both_forms_dhclient_writes() {
    assert_eq!(colon_hex("6e:7f:00:a7"), vec![0x6e, 0x7f, 0, 0xa7]);
    assert_eq!(colon_hex(r#""ab\"c""#), b"ab\"c".to_vec());
    assert_eq!(colon_hex(r#""\000\001a\\""#), vec![0, 1, b'a', b'\\']);
}

/// From client `i`'s dhclient lease file: its IA_PD's IAID and the server's DUID.
pub(crate) fn pd_iaid_and_server(lab: &IscLab, i: usize) -> (u32, Duid) {
    let text = std::fs::read_to_string(lab.clients[i].lease_file()).expect("lease file");
    let last = text.rsplit("lease6 {").next().expect("a lease");
    let field = |key: &str| {
        last.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().trim_end_matches(['{', ';']).trim().to_string())
            .unwrap_or_else(|| panic!("no {key} in {last}"))
    };
    let iaid = colon_hex(&field("ia-pd "));
    let iaid = u32::from_be_bytes(iaid.try_into().expect("4-octet IAID"));
    (iaid, duid(&colon_hex(&field("option dhcp6.server-id "))))
}

/// A subscriber sends a RELAY-FORW
/// whose IPv6 source is this box's own upstream address. The kernel forwards it out of the
/// uplink, where the capture sees it leave from our address, 547 → 547, to the server: exactly
/// the relay's own traffic, so the snooper remembers it. It carries a RENEW in the neighbour's
/// name (its DUID, IAID and prefix, the server's DUID — what the victim's own exchanges show)
/// with peer-address `fe80::bad`; dhcpd renews and answers this box, and the matched REPLY moves
/// the neighbour's prefix to `via fe80::bad` — unless the spoof guard (`snoop.spoof_guard`,
/// nftables `fib saddr type local counter drop` on the subscriber interfaces) drops it at
/// ingress, which is what this test shows: the guard's own counter takes the packet, no route
/// moves, and the guard table outlives the agent's stop and still drops the next forgery
/// (docs/security.md). `forw_spoofing_this_boxs_address_moves_a_prefix_without_the_guard` is
/// the control run: the same packet with the guard off does move the prefix, so this pass is
/// the guard's and not some other drop's.
#[test]
fn forw_spoofing_this_boxs_address_does_not_move_a_neighbours_prefix() {
    let test = "forw_spoofing_this_boxs_address_does_not_move_a_neighbours_prefix";
    let Some((mut lab, mut agent)) = bound_lab(test, 2, |lab| plain_config(lab, false)) else {
        return;
    };
    let before = routes(&lab.ac);
    let drops0 = guard_drops(&lab.ac).expect("the guard table is installed");
    send_spoofed_renew(&lab);
    let t0 = Instant::now();
    while guard_drops(&lab.ac) == Some(drops0) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the guard's counter never took the forged FORW"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "guarded: counted by the guard ({drops0} → {:?})",
        guard_drops(&lab.ac)
    );
    // A counter is not yet a drop. The attacker's own RELEASE, sent after the forgery, goes the
    // same way (relay, dhcpd in arrival order, snooper): once its routes are gone, an answer to
    // a forged FORW that got through would have moved the victim's prefix already.
    let released = client_routes(&lab, 0);
    lab.clients[0].release();
    let rest: BTreeSet<Route> = before.difference(&released).cloned().collect();
    wait_routes(
        &lab,
        "the attacker's release to withdraw its routes, and nothing else to change",
        Duration::from_secs(10),
        || routes(&lab.ac) == rest,
    );

    // The guard stays installed when the agent stops, and still drops.
    agent.signal("TERM");
    let st = agent
        .wait_exit(Duration::from_secs(10))
        .expect("exit within 10 s of SIGTERM");
    assert!(st.success(), "exit status {st:?}");
    let drops1 = guard_drops(&lab.ac).expect("the guard table outlives the stop");
    send_spoofed_renew(&lab);
    let t0 = Instant::now();
    while guard_drops(&lab.ac) == Some(drops1) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the guard left after the stop does not drop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(routes(&lab.ac), rest);
}

/// The control run of the test above: `snoop.spoof_guard = false`, no guard table, and the same
/// forged FORW moves the neighbour's prefix to `via fe80::bad`. If this stops passing, the
/// guarded run no longer shows what the guard does.
#[test]
fn forw_spoofing_this_boxs_address_moves_a_prefix_without_the_guard() {
    let test = "forw_spoofing_this_boxs_address_moves_a_prefix_without_the_guard";
    let Some((lab, _agent)) = bound_lab(test, 2, |lab| {
        let path = lab.dir().join("lqagent.toml");
        let toml = lab
            .lqagent_toml()
            .replacen("[snoop]\n", "[snoop]\nspoof_guard = false\n", 1);
        assert!(toml.contains("spoof_guard = false"));
        std::fs::write(
            &path,
            format!(
                "{toml}\n[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
                 [routes]\nprotocol = {PROTO}\n\n[log]\nlevel = \"info\"\n"
            ),
        )
        .unwrap();
        path
    }) else {
        return;
    };
    assert_eq!(
        guard_drops(&lab.ac),
        None,
        "no guard table with the guard off"
    );
    let victim = 1;
    let pfx = client_routes(&lab, victim)
        .into_iter()
        .find(|r| r.1.is_some())
        .expect("the victim's prefix route");
    let moved = (pfx.0.clone(), Some("fe80::bad".to_string()), pfx.2.clone());
    send_spoofed_renew(&lab);
    wait_routes(
        &lab,
        "the unguarded forgery to move the neighbour's prefix",
        Duration::from_secs(15),
        || routes(&lab.ac).contains(&moved),
    );
    eprintln!("unguarded: {} now via fe80::bad", pfx.0);
}

/// Packets the spoof guard's rule has dropped in `ns` (its `counter`), or `None` when the
/// `ip6 lqagent_guard` table is not there.
fn guard_drops(ns: &NetNs) -> Option<u64> {
    let out = ns.try_exec(&["nft", "list", "table", "ip6", "lqagent_guard"]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let n = text
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .unwrap_or_else(|| panic!("no counter in the guard table:\n{text}"));
    Some(n.parse().expect("packet count"))
}

/// Subscriber 0 sends the forged RELAY-FORW: this box's upstream address as source, a RENEW in
/// subscriber 1's name with peer-address `fe80::bad`.
fn send_spoofed_renew(lab: &IscLab) {
    let (attacker, victim) = (0, 1);
    let v = &lab.clients[victim];
    let lease = v.lease().unwrap();
    let (iaid, server_duid) = pd_iaid_and_server(lab, victim);
    let mut renew = ClientMessage::new(MessageType::RENEW, 0x13_5000);
    renew
        .options
        .push(DhcpOption::ClientId(hex_duid(&lease.client_duid)));
    renew.options.push(DhcpOption::ServerId(server_duid));
    let mut ia = Ia::new(iaid, 0, 0);
    ia.options.push(DhcpOption::IaPrefix(IaPrefix::new(
        prefix(&lease.prefix),
        0,
        0,
    )));
    renew.options.push(DhcpOption::IaPd(ia));
    let mut forw = RelayMessage::new(
        MessageType::RELAY_FORW,
        0,
        v.link_address,
        "fe80::bad".parse().unwrap(),
    );
    forw.options
        .push(DhcpOption::RelayMsg(Box::new(Message::Client(renew))));
    let forw = Message::Relay(forw).to_vec().unwrap();
    send_spoofed(
        &lab.clients[attacker].ns,
        SocketAddrV6::new(lab.ac_address, DHCP_SERVER_PORT, 0, 0),
        SocketAddrV6::new(lab.server_address, DHCP_SERVER_PORT, 0, 0),
        forw,
    );
}
