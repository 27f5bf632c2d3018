//! Issue 21's ownership rule, against `lqagent run` (the built binary) in the access
//! concentrator of a real ISC topology (dhcpd -6, dhcrelay -6 -I, dhclient -6 -N -P;
//! tests/support/src/isc.rs): a binding is moved or removed only by its holder on its link, by a
//! server's positive assignment, or by the server's answer about that key; anything else is a
//! *doubt* that asks the server and, until it answers, keeps what works (`docs/security.md`,
//! "Ownership").
//!
//! Every test lets the real clients bind first, takes the full set of the agent's kernel routes
//! (`ip -6 route show proto 211` in the access concentrator: every subscriber's routes), does one
//! thing a neighbour or a stale CPE can do with plain DHCPv6 through the real relay and server,
//! and then checks that set again — and on every poll while it waits, so a route that goes and
//! comes back is caught too.
//!
//! - `strangers_rebind_of_a_neighbours_prefix_keeps_the_neighbours_route`: a client with another
//!   DUID, on the victim's own link, REBINDs the victim's address and delegated prefix. dhcpd
//!   answers the stranger with lifetime 0 for both (pinned in docs/interop.md); the agent counts
//!   a `zero_lifetime_other_client` doubt, the confirming leasequery cannot say for a prefix
//!   (ISC: NotConfigured → `unknown`) and the route stays; the victim's own RENEW later
//!   refreshes it.
//! - `release_with_a_neighbours_duid_from_another_link_keeps_the_route`: a RELEASE with the
//!   victim's DUID, IAID and prefix (and the server's DUID: all visible in the victim's traffic)
//!   sent from another link. dhcpd releases the prefix — it does not check the link (pinned in
//!   docs/interop.md) — the agent counts a `release_other_link` doubt and keeps the route
//!   (ISC cannot confirm a prefix: `unknown`).
//! - `stale_cpe_rebinding_a_prefix_now_delegated_elsewhere_keeps_the_new_holders_route`: client A
//!   holds P, releases it, P is delegated to client B, then A comes back and REBINDs P. B's route
//!   stays.
//!
//! The stranger, the stale CPE and its successor are hand-played clients ([`HandClient`]): an
//! extra link-local address on a client namespace's interface and a UDP socket on it, port 546,
//! beside the real dhclient (both sockets set SO_REUSEADDR; the kernel hands a unicast reply to
//! the more specific bind). They speak through the real dhcrelay to the real dhcpd, so everything
//! the agent sees is what a second host on that link would cause. Messages are built with the
//! crate's own codec (`lqagent::wire`).

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lqagent::prefix::Ipv6Prefix;
use lqagent::wire::{
    ClientMessage, DhcpOption, Duid, Ia, IaAddr, IaPrefix, Message, MessageType, StatusCode,
};
use support::agent::{start_agent, write_config};
use support::isc::{Client, IscLab, Lifetimes};
use support::netns::Route;
use support::scrape::{Exposition, scrape_in};

use crate::daemon_attacks::{all_client_routes, hex_duid, pd_iaid_and_server, routes};

const PROTO: &str = "211";
const DOUBTS: &str = "lqagent_binding_doubts_total";
const DHCP_SERVER_PORT: u16 = 547;
const DHCP_CLIENT_PORT: u16 = 546;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1): where a client sends.
const ALL_AGENTS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

fn doubts(m: &Exposition, reason: &str, outcome: Option<&str>) -> f64 {
    match outcome {
        Some(o) => m.value_or_zero(DOUBTS, &[("reason", reason), ("outcome", o)]),
        None => m.value_or_zero(DOUBTS, &[("reason", reason)]),
    }
}

/// The agent's configuration for these tests: no bulk recovery and no trigger (nothing but the
/// snooped exchanges and the doubts' own leasequeries asks the server anything).
fn config(lab: &IscLab) -> PathBuf {
    write_config(
        lab,
        &format!(
            "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
             [routes]\nprotocol = {PROTO}\n\n[log]\nlevel = \"info\"\n"
        ),
    )
}

/// Start the agent in a lab without clients yet (with `life` lifetimes), then the clients, and
/// wait for every client's routes.
fn bound_lab(
    test: &str,
    clients: usize,
    life: Lifetimes,
) -> Option<(IscLab, support::isc::Daemon)> {
    let mut lab = IscLab::without_clients(test, clients, life)?;
    let cfg = config(&lab);
    let agent = start_agent(&lab, &cfg, "lqagent.log");
    lab.start_clients();
    let want = all_client_routes(&lab);
    assert_eq!(want.len(), 2 * clients);
    settle(&lab, "every client's routes", || routes(&lab.ac) == want);
    Some((lab, agent))
}

/// How long a step may take: the relay, the server and the agent's confirming leasequery are
/// all local.
const STEP: Duration = Duration::from_secs(20);

/// Wait (at most [`STEP`]) for `done`, panicking with the routes and the agent's log on timeout.
fn settle(lab: &IscLab, what: &str, mut done: impl FnMut() -> bool) {
    keep_while(lab, what, &BTreeSet::new(), STEP, &mut done);
}

/// Wait (at most `timeout`) for `done` while every route of `kept` stays in the kernel: checked
/// on every poll, so a route withdrawn and put back in between is caught too.
fn keep_while(
    lab: &IscLab,
    what: &str,
    kept: &BTreeSet<Route>,
    timeout: Duration,
    done: &mut impl FnMut() -> bool,
) {
    let t0 = Instant::now();
    loop {
        let now = routes(&lab.ac);
        let gone: Vec<&Route> = kept.iter().filter(|r| !now.contains(r)).collect();
        assert!(
            gone.is_empty(),
            "while waiting for {what}: routes withdrawn: {gone:?}\nnow: {now:?}\n\
             doubts: {:?}\nagent log:\n{}",
            doubt_samples(lab),
            lab.log("lqagent")
        );
        if done() {
            return;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}\nroutes: {now:?}\ndoubts: {:?}\n\
             agent log:\n{}",
            doubt_samples(lab),
            lab.log("lqagent")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every non-zero `lqagent_binding_doubts_total` sample, for failure messages.
fn doubt_samples(lab: &IscLab) -> Vec<String> {
    scrape_in(&lab.ac)
        .samples
        .iter()
        .filter(|(n, _, v)| n == DOUBTS && *v > 0.0)
        .map(|(_, l, v)| format!("{l:?} = {v}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A hand-played client.

/// A DHCPv6 client the test plays by hand on a subscriber link: its own link-local address on
/// the interface of a client namespace (beside that namespace's real dhclient) and a UDP socket
/// bound to it on port 546. What it sends goes to ff02::1:2 on that link, so the real dhcrelay
/// relays it to the real dhcpd, and the answer comes back through the relay to this address.
pub(crate) struct HandClient {
    sock: UdpSocket,
    link_local: Ipv6Addr,
    scope: u32,
    duid: Duid,
    xid: std::cell::Cell<u32>,
}

impl HandClient {
    pub(crate) fn new(c: &Client, link_local: Ipv6Addr, duid: Duid) -> HandClient {
        c.ns.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{link_local}/64"),
            "dev",
            &c.interface,
            "nodad",
        ]);
        let ifname = c.interface.clone();
        let (sock, scope) = c.ns.run_in(move || {
            use socket2::{Domain, Protocol, Socket, Type};
            let name = std::ffi::CString::new(ifname).unwrap();
            // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
            #[allow(unsafe_code)]
            let scope = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(scope, 0, "no interface {name:?}");
            let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
            // dhclient holds [::]:546 with SO_REUSEADDR; a more specific bind beside it gets the
            // datagrams addressed to this address.
            s.set_reuse_address(true).unwrap();
            s.set_only_v6(true).unwrap();
            s.set_multicast_if_v6(scope).unwrap();
            s.bind(
                &SocketAddr::V6(SocketAddrV6::new(link_local, DHCP_CLIENT_PORT, 0, scope)).into(),
            )
            .unwrap_or_else(|e| panic!("bind [{link_local}%{scope}]:546: {e}"));
            let s: UdpSocket = s.into();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            (s, scope)
        });
        HandClient {
            sock,
            link_local,
            scope,
            duid,
            xid: std::cell::Cell::new(
                0x21_0000 + (u32::from(link_local.segments()[7] & 0xff) << 8),
            ),
        }
    }

    /// A message of `kind` from this client: its CLIENTID, ELAPSED_TIME, then `options`.
    pub(crate) fn message(&self, kind: MessageType, options: Vec<DhcpOption>) -> ClientMessage {
        self.xid.set(self.xid.get() + 1);
        let mut m = ClientMessage::new(kind, self.xid.get());
        m.options.push(DhcpOption::ClientId(self.duid.clone()));
        m.options.push(DhcpOption::ElapsedTime(0));
        m.options.extend(options);
        m
    }

    /// Send `msg` to ff02::1:2 and wait for the REPLY with its transaction id: sent again every
    /// second, at most 10 times (dhcrelay and dhcpd are local; a lost first datagram — the
    /// address is brand new — is the only expected reason to repeat).
    fn exchange(&self, msg: &ClientMessage) -> ClientMessage {
        self.exchange_for(msg, MessageType::REPLY)
    }

    /// [`exchange`](Self::exchange), waiting for an answer of type `want` (ADVERTISE to a
    /// SOLICIT).
    pub(crate) fn exchange_for(&self, msg: &ClientMessage, want: MessageType) -> ClientMessage {
        let bytes = Message::Client(msg.clone()).to_vec().expect("emit");
        let to = SocketAddrV6::new(ALL_AGENTS, DHCP_SERVER_PORT, 0, self.scope);
        let mut buf = [0u8; 2048];
        for _ in 0..10 {
            self.sock.send_to(&bytes, to).expect("send to ff02::1:2");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(1) {
                let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Ok(Message::Client(r)) = Message::parse(&buf[..n])
                    && r.msg_type == want
                    && r.transaction_id == msg.transaction_id
                {
                    return r;
                }
            }
        }
        panic!(
            "no REPLY to {:?} from {} (xid {:#x})",
            msg.msg_type, self.link_local, msg.transaction_id
        );
    }
}

fn ia_pd(iaid: u32, p: Ipv6Prefix) -> DhcpOption {
    let mut ia = Ia::new(iaid, 0, 0);
    ia.options
        .push(DhcpOption::IaPrefix(IaPrefix::new(p, 0, 0)));
    DhcpOption::IaPd(ia)
}

fn ia_na(iaid: u32, a: Ipv6Addr) -> DhcpOption {
    let mut ia = Ia::new(iaid, 0, 0);
    ia.options.push(DhcpOption::IaAddr(IaAddr::new(a, 0, 0)));
    DhcpOption::IaNa(ia)
}

/// The (preferred, valid) lifetimes a REPLY gives `p`, if it names it.
fn prefix_lifetimes(reply: &ClientMessage, p: Ipv6Prefix) -> Option<(u32, u32)> {
    reply
        .options
        .ia_pds()
        .flat_map(|ia| ia.options.ia_prefixes())
        .find(|x| x.prefix().ok() == Some(p))
        .map(|x| (x.preferred, x.valid))
}

/// The (preferred, valid) lifetimes a REPLY gives `a`, if it names it.
fn address_lifetimes(reply: &ClientMessage, a: Ipv6Addr) -> Option<(u32, u32)> {
    reply
        .options
        .ia_nas()
        .flat_map(|ia| ia.options.ia_addrs())
        .find(|x| x.addr == a)
        .map(|x| (x.preferred, x.valid))
}

/// Every lease a REPLY gives with a non-zero valid lifetime, as the routes the agent would
/// install for `holder` (a /128 on `ac_interface`; a prefix via `holder`).
pub(crate) fn granted_routes(
    reply: &ClientMessage,
    holder: Ipv6Addr,
    ac_interface: &str,
) -> BTreeSet<Route> {
    let addrs = reply
        .options
        .ia_nas()
        .flat_map(|ia| ia.options.ia_addrs())
        .filter(|a| a.valid > 0)
        .map(|a| (format!("{}/128", a.addr), None, ac_interface.to_string()));
    let pfxs = reply
        .options
        .ia_pds()
        .flat_map(|ia| ia.options.ia_prefixes())
        .filter(|p| p.valid > 0)
        .filter_map(|p| p.prefix().ok())
        .map(|p| {
            (
                p.to_string(),
                Some(holder.to_string()),
                ac_interface.to_string(),
            )
        });
    addrs.chain(pfxs).collect()
}

/// A short, readable account of a REPLY's leases and statuses, for the test's output (what
/// docs/interop.md quotes).
pub(crate) fn describe(reply: &ClientMessage) -> String {
    let mut out = Vec::new();
    if let Some(s) = reply.options.status() {
        out.push(format!("status {:?} {:?}", s.code, s.text()));
    }
    for ia in reply.options.ia_nas() {
        for a in ia.options.ia_addrs() {
            out.push(format!("IA_NA {} {}/{}", a.addr, a.preferred, a.valid));
        }
        if let Some(s) = ia.options.status() {
            out.push(format!("IA_NA status {:?} {:?}", s.code, s.text()));
        }
    }
    for ia in reply.options.ia_pds() {
        for p in ia.options.ia_prefixes() {
            out.push(format!(
                "IA_PD {}/{} {}/{}",
                p.prefix_addr, p.prefix_len, p.preferred, p.valid
            ));
        }
        if let Some(s) = ia.options.status() {
            out.push(format!("IA_PD status {:?} {:?}", s.code, s.text()));
        }
    }
    out.join("; ")
}

/// The `binding state …;` line of the last record dhcpd wrote for `record` (`iaprefix P {`,
/// `iaaddr A {`) in its lease file: the server's own word on a lease.
fn server_state(lab: &IscLab, record: &str) -> String {
    let leases = lab.server_leases();
    assert!(
        leases.contains(record),
        "{record} not in dhcpd's leases:\n{leases}"
    );
    let last = leases.rsplit(record).next().unwrap_or_default();
    last.lines()
        .find(|l| l.contains("binding state"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A DUID-LL (type 3, Ethernet) for a hand-played client.
pub(crate) fn hand_duid(tag: u8) -> Duid {
    Duid::from(&[0, 3, 0, 1, 0x02, 0x21, 0x21, 0, 0, tag])
}

/// The binding the agent shows for `network` (`lqagent show bindings --json`).
fn shown(lab: &IscLab, network: &str) -> Option<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lqagent"))
        .args(["show", "bindings", "--json", "--socket"])
        .arg(lab.dir().join("control.sock"))
        .output()
        .unwrap();
    assert!(out.status.success(), "show bindings: {out:?}");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON bindings");
    all.as_array()?
        .iter()
        .find(|b| b["network"] == network)
        .cloned()
}

/// Wait (at most `timeout`) until the lifetime the agent shows left for `network` goes up: a
/// renewal reached the cache. (It only goes down otherwise; dhcpd answers every renewal with
/// the full configured lifetime.) Every route of `kept` must stay meanwhile.
fn wait_refresh(
    lab: &IscLab,
    what: &str,
    kept: &BTreeSet<Route>,
    network: Ipv6Prefix,
    timeout: Duration,
) {
    let left = || shown(lab, &network.to_string()).and_then(|b| b["valid_secs"].as_u64());
    let mut last = left().unwrap_or_else(|| panic!("{network} is not bound"));
    keep_while(lab, what, kept, timeout, &mut || match left() {
        Some(now) if now > last => true,
        Some(now) => {
            last = now;
            false
        }
        None => false,
    });
}

// ---------------------------------------------------------------------------------------------
// (a) A stranger's REBIND of a neighbour's prefix, on the neighbour's own link.

#[test]
fn strangers_rebind_of_a_neighbours_prefix_keeps_the_neighbours_route() {
    let test = "strangers_rebind_of_a_neighbours_prefix_keeps_the_neighbours_route";
    // Short enough that the victim's own RENEW comes within the test, long enough that none
    // falls between the attack and the check (the test starts right after one).
    let life = Lifetimes {
        valid: 40,
        preferred: 20,
    };
    let Some((lab, _agent)) = bound_lab(test, 2, life) else {
        return;
    };
    // dhcpd sends T1 = 0 and leaves the renewal time to the client (dhclient's lease file says
    // `renew 0`); dhclient renews well inside the valid lifetime (at about half of it here).
    let renewal = Duration::from_secs(u64::from(life.valid));
    let victim = 1;
    let v = &lab.clients[victim];
    let lease = v.lease().unwrap();
    let pfx: Ipv6Prefix = lease.prefix.parse().unwrap();
    // Start right after one of the victim's own renewals, so the next is T1 away.
    wait_refresh(
        &lab,
        "the victim's first renewal",
        &BTreeSet::new(),
        pfx,
        renewal,
    );
    let before = routes(&lab.ac);
    let m0 = scrape_in(&lab.ac);

    // One REBIND, another DUID, on the victim's link, naming the victim's address and prefix
    // (both visible in its traffic).
    // The victim's own link-local (its prefix's next hop), read before the stranger's address
    // joins the same interface and `link_local()` could pick that one.
    let victim_hop = v.link_local();
    let stranger = HandClient::new(v, "fe80::5".parse().unwrap(), hand_duid(5));
    let rebind = stranger.message(
        MessageType::REBIND,
        vec![ia_na(1, lease.address), ia_pd(1, pfx)],
    );
    let reply = stranger.exchange(&rebind);
    eprintln!(
        "(a) dhcpd's REPLY to the stranger's REBIND: {}",
        describe(&reply)
    );
    // What ISC does (RFC 8415 §18.3.5, "not appropriate for this client"): the victim's prefix
    // back to the stranger with lifetime 0. Pinned in docs/interop.md.
    assert_eq!(
        prefix_lifetimes(&reply, pfx),
        Some((0, 0)),
        "dhcpd answered the stranger's REBIND of {pfx} otherwise: {}",
        describe(&reply)
    );
    // The victim's leases at the server are untouched.
    for what in [
        format!("iaprefix {pfx} {{"),
        format!("iaaddr {} {{", lease.address),
    ] {
        let state = server_state(&lab, &what);
        eprintln!("(a) dhcpd6.leases after the REBIND, {what}: {state}");
        assert!(state.contains("active"), "{what} at the server: {state}");
    }
    let addr_zeroed = address_lifetimes(&reply, lease.address) == Some((0, 0));
    // Whatever the server gave the stranger for itself is its own (a positive assignment).
    let mut expect = before.clone();
    expect.extend(granted_routes(&reply, stranger.link_local, &v.ac_interface));

    // A doubt, settled by asking the server: ISC cannot say for a prefix (NotConfigured).
    let reason = "zero_lifetime_other_client";
    let u0 = doubts(&m0, reason, Some("unknown"));
    keep_while(
        &lab,
        "the doubt about the victim's prefix to be settled as unknown",
        &before,
        STEP,
        &mut || doubts(&scrape_in(&lab.ac), reason, Some("unknown")) > u0,
    );
    if addr_zeroed {
        // The victim's address: dhcpd's leasequery says the victim still holds it.
        let h0 = doubts(&m0, reason, Some("held"));
        keep_while(
            &lab,
            "the doubt about the victim's address to be settled as held",
            &before,
            STEP,
            &mut || doubts(&scrape_in(&lab.ac), reason, Some("held")) > h0,
        );
    }
    keep_while(
        &lab,
        "every subscriber's routes after the REBIND (and the stranger's own)",
        &before,
        STEP,
        &mut || routes(&lab.ac) == expect,
    );
    let b = shown(&lab, &pfx.to_string()).expect("the victim's prefix is still bound");
    assert_eq!(b["client_duid"], lease.client_duid.as_str(), "{b}");
    eprintln!(
        "(a) victim's routes kept; doubts: {:?}",
        doubt_samples(&lab)
    );

    // Later the victim's own RENEW still refreshes it (no tombstone out-ranks it).
    wait_refresh(&lab, "the victim's own next renewal", &before, pfx, renewal);
    let b = shown(&lab, &pfx.to_string()).expect("the victim's prefix is bound");
    assert_eq!(b["client_duid"], lease.client_duid.as_str(), "{b}");
    assert_eq!(b["next_hop"], victim_hop.to_string().as_str(), "{b}");
    // The stranger's own new leases may lapse meanwhile (it never renews): nothing else moved.
    let now = routes(&lab.ac);
    assert!(
        before.is_subset(&now) && now.is_subset(&expect),
        "every subscriber's routes after the RENEW: {now:?}, want {before:?} (+ {expect:?})"
    );
    eprintln!("(a) the victim's own RENEW refreshed {pfx}");
}

// ---------------------------------------------------------------------------------------------
// (b) A RELEASE carrying a neighbour's DUID, IAID and prefix, from another link.

#[test]
fn release_with_a_neighbours_duid_from_another_link_keeps_the_route() {
    let test = "release_with_a_neighbours_duid_from_another_link_keeps_the_route";
    let Some((lab, _agent)) = bound_lab(test, 2, Lifetimes::default()) else {
        return;
    };
    let (attacker, victim) = (0, 1);
    let lease = lab.clients[victim].lease().unwrap();
    let pfx: Ipv6Prefix = lease.prefix.parse().unwrap();
    let (iaid, server_duid) = pd_iaid_and_server(&lab, victim);
    let before = routes(&lab.ac);
    let m0 = scrape_in(&lab.ac);

    // The victim's identity, played from the attacker's link.
    let impostor = HandClient::new(
        &lab.clients[attacker],
        "fe80::c".parse().unwrap(),
        hex_duid(&lease.client_duid),
    );
    let release = impostor.message(
        MessageType::RELEASE,
        vec![DhcpOption::ServerId(server_duid), ia_pd(iaid, pfx)],
    );
    let reply = impostor.exchange(&release);
    eprintln!(
        "(b) dhcpd's REPLY to the RELEASE from link 0: {}",
        describe(&reply)
    );
    // What ISC does: it releases the prefix, whatever link the RELEASE came through (it looks
    // the IA up by DUID and IAID only). Pinned in docs/interop.md.
    assert!(
        matches!(
            reply.options.status_code(),
            None | Some(StatusCode::SUCCESS)
        ),
        "dhcpd refused the RELEASE: {}",
        describe(&reply)
    );
    let state = server_state(&lab, &format!("iaprefix {pfx} {{"));
    eprintln!("(b) dhcpd6.leases now says of {pfx}: {state}");
    assert!(
        state.contains("released"),
        "dhcpd did not release {pfx}: {state}"
    );

    // Not the holder's link: a doubt, and the answer decides; ISC cannot say for a prefix.
    let reason = "release_other_link";
    let u0 = doubts(&m0, reason, Some("unknown"));
    keep_while(
        &lab,
        "the doubt about the released prefix to be settled as unknown",
        &before,
        STEP,
        &mut || doubts(&scrape_in(&lab.ac), reason, Some("unknown")) > u0,
    );
    assert_eq!(
        routes(&lab.ac),
        before,
        "every subscriber's routes after the RELEASE"
    );
    let b = shown(&lab, &pfx.to_string()).expect("the victim's prefix is still bound");
    assert_eq!(b["client_duid"], lease.client_duid.as_str(), "{b}");
    eprintln!(
        "(b) victim's routes kept; doubts: {:?}",
        doubt_samples(&lab)
    );
}

// ---------------------------------------------------------------------------------------------
// (c) A stale CPE REBINDing a prefix that was since delegated to another client.

/// The honest reproduction the lab allows: dhcpd picks a prefix for a client by hashing its DUID
/// and IAID, so two real dhclients would never be handed the same /56 in turn. The two CPEs
/// here are hand-played on link 1 (beside its real dhclient), each with its own DUID and
/// link-local address, through the real relay and server: A REQUESTs a prefix (a hint dhcpd
/// honours while it is free), RELEASEs it (from its own link: the holder; its route goes),
/// B REQUESTs the same prefix and gets it, and then A, back from being offline with a stale
/// lease, REBINDs it — what RFC 8415 §18.2.5 tells a client to do when its server does not
/// answer a RENEW. dhcpd answers A with lifetime 0; B's route must stay.
#[test]
fn stale_cpe_rebinding_a_prefix_now_delegated_elsewhere_keeps_the_new_holders_route() {
    let test = "stale_cpe_rebinding_a_prefix_now_delegated_elsewhere_keeps_the_new_holders_route";
    let Some((lab, _agent)) = bound_lab(test, 2, Lifetimes::default()) else {
        return;
    };
    let link = 1;
    let c = &lab.clients[link];
    let (_, server_duid) = pd_iaid_and_server(&lab, link);
    let real = c.lease().unwrap();
    // A free /56 of link 1's pool (2001:db8:200::/40 ... 2001:db8:2ff00::): not the real client's.
    let hint: Ipv6Prefix = "2001:db8:2f0::/56".parse().unwrap();
    assert_ne!(real.prefix, hint.to_string());

    let a = HandClient::new(c, "fe80::a".parse().unwrap(), hand_duid(0xa));
    let b = HandClient::new(c, "fe80::b".parse().unwrap(), hand_duid(0xb));
    let request = |who: &HandClient, p: Ipv6Prefix| {
        who.exchange(&who.message(
            MessageType::REQUEST,
            vec![DhcpOption::ServerId(server_duid.clone()), ia_pd(7, p)],
        ))
    };
    let route_via = |p: Ipv6Prefix, who: &HandClient| {
        (
            p.to_string(),
            Some(who.link_local.to_string()),
            c.ac_interface.clone(),
        )
    };

    // 1. A holds P.
    let base = routes(&lab.ac);
    let r = request(&a, hint);
    eprintln!("(c) A's REQUEST: {}", describe(&r));
    let p = r
        .options
        .ia_pds()
        .flat_map(|ia| ia.options.ia_prefixes())
        .find(|x| x.valid > 0)
        .and_then(|x| x.prefix().ok())
        .unwrap_or_else(|| panic!("dhcpd delegated nothing to A: {}", describe(&r)));
    settle(&lab, "A's route", || {
        routes(&lab.ac).contains(&route_via(p, &a))
    });

    // 2. A goes away, releasing P (the holder on its own link: its route goes).
    let r = a.exchange(&a.message(
        MessageType::RELEASE,
        vec![DhcpOption::ServerId(server_duid.clone()), ia_pd(7, p)],
    ));
    eprintln!("(c) A's RELEASE: {}", describe(&r));
    settle(&lab, "A's route to go", || routes(&lab.ac) == base);

    // 3. P is delegated to B.
    let r = request(&b, p);
    eprintln!("(c) B's REQUEST for {p}: {}", describe(&r));
    assert!(
        prefix_lifetimes(&r, p).is_some_and(|(_, v)| v > 0),
        "dhcpd did not delegate the freed {p} to B: {}",
        describe(&r)
    );
    let mut with_b = base.clone();
    with_b.insert(route_via(p, &b));
    settle(&lab, "B's route", || routes(&lab.ac) == with_b);
    let before = routes(&lab.ac);
    let m0 = scrape_in(&lab.ac);

    // 4. A comes back and REBINDs P.
    let r = a.exchange(&a.message(MessageType::REBIND, vec![ia_pd(7, p)]));
    eprintln!(
        "(c) dhcpd's REPLY to A's stale REBIND of {p}: {}",
        describe(&r)
    );
    assert_eq!(
        prefix_lifetimes(&r, p),
        Some((0, 0)),
        "dhcpd answered A's stale REBIND otherwise: {}",
        describe(&r)
    );
    // dhcpd gives the stale CPE a new prefix of its own in the same reply: a positive
    // assignment to A, routed via A.
    let mut expect = before.clone();
    expect.extend(granted_routes(&r, a.link_local, &c.ac_interface));
    let reason = "zero_lifetime_other_client";
    let u0 = doubts(&m0, reason, Some("unknown"));
    keep_while(
        &lab,
        "the doubt about B's prefix to be settled as unknown",
        &before,
        STEP,
        &mut || doubts(&scrape_in(&lab.ac), reason, Some("unknown")) > u0,
    );
    settle(
        &lab,
        "A's new prefix (and nothing else) to be routed",
        || routes(&lab.ac) == expect,
    );
    assert_eq!(
        routes(&lab.ac),
        expect,
        "every subscriber's routes after A's REBIND"
    );
    let shown_b = shown(&lab, &p.to_string()).expect("B's prefix is still bound");
    assert_eq!(
        shown_b["client_duid"],
        hex::encode(hand_duid(0xb).to_vec()),
        "{shown_b}"
    );
    eprintln!("(c) B's route kept; doubts: {:?}", doubt_samples(&lab));
}
