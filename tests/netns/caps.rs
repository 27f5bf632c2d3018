//! Issue 24's per-port cap, against `lqagent run` (the built binary) in the access concentrator
//! of a real ISC topology (dhcpd -6, dhcrelay -6 -I, dhclient -6 -N -P; tests/support/src/isc.rs):
//! a client chooses its DUID, so the per-client caps cannot hold a port whose clients invent
//! DUIDs; `limits.max_bindings_per_interface` (merge rule R10) does.
//!
//! - `per_port_cap_refuses_one_duid_too_many_while_a_neighbour_port_is_routed`: the cap set to 2;
//!   the real client on port 0 binds an address and a prefix (2 bindings: the port is full). A
//!   hand-played client with a new DUID on the same port then gets an address and a prefix from
//!   the real dhcpd through the real relay (SOLICIT, ADVERTISE, REQUEST, REPLY): the agent
//!   refuses both, counts them in `lqagent_cap_refused_total{cap="bindings_per_interface"}`,
//!   installs no route for them and keeps port 0's; then the real client on port 1 binds and is
//!   routed.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::time::Duration;

use lqagent::wire::{DhcpOption, Ia, MessageType};
use support::agent::{client_routes, start_agent, write_config};
use support::isc::{IscLab, Lifetimes};
use support::scrape::scrape_in;
use support::wait::wait_for;

use crate::daemon_attacks::routes;
use crate::ownership::{HandClient, describe, granted_routes, hand_duid};

const REFUSED: &str = "lqagent_cap_refused_total";
/// Every step is local (relay, server, agent).
const STEP: Duration = Duration::from_secs(30);

#[test]
fn per_port_cap_refuses_one_duid_too_many_while_a_neighbour_port_is_routed() {
    let test = "per_port_cap_refuses_one_duid_too_many_while_a_neighbour_port_is_routed";
    let Some(mut lab) = IscLab::without_clients(test, 2, Lifetimes::default()) else {
        return;
    };
    let cfg = write_config(
        &lab,
        "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
         [limits]\nmax_bindings_per_interface = 2\n\n\
         [routes]\nprotocol = 211\n\n[log]\nlevel = \"info\"\n",
    );
    let _agent = start_agent(&lab, &cfg, "lqagent.log");
    let refused =
        || scrape_in(&lab.ac).value_or_zero(REFUSED, &[("cap", "bindings_per_interface")]);
    let log = |lab: &IscLab| lab.log("lqagent");

    // Port 0's own client: an address and a prefix, the port's two.
    lab.clients[0].start_dhclient();
    wait_for("client 0 bound", STEP, || lab.clients[0].lease().is_some());
    let port0 = client_routes(&lab, 0);
    wait_for("client 0's routes", STEP, || routes(&lab.ac) == port0);
    assert_eq!(refused(), 0.0);

    // One DUID too many on port 0, with a real lease from the real server.
    let ll: Ipv6Addr = "fe80::24".parse().unwrap();
    let stranger = HandClient::new(&lab.clients[0], ll, hand_duid(0x24));
    let solicit = stranger.message(
        MessageType::SOLICIT,
        vec![
            DhcpOption::IaNa(Ia::new(0x24, 0, 0)),
            DhcpOption::IaPd(Ia::new(0x25, 0, 0)),
        ],
    );
    let adv = stranger.exchange_for(&solicit, MessageType::ADVERTISE);
    let request = stranger.message(
        MessageType::REQUEST,
        adv.options
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    DhcpOption::ServerId(_) | DhcpOption::IaNa(_) | DhcpOption::IaPd(_)
                )
            })
            .cloned()
            .collect(),
    );
    let reply = stranger.exchange_for(&request, MessageType::REPLY);
    let granted = granted_routes(&reply, ll, &lab.clients[0].ac_interface);
    eprintln!("dhcpd's REPLY to the DUID too many: {}", describe(&reply));
    assert_eq!(granted.len(), 2, "{}", describe(&reply));
    wait_for("the port-0 refusals to be counted", STEP, || {
        refused() >= 2.0
    });
    let now = routes(&lab.ac);
    assert_eq!(
        now,
        port0,
        "port 0 keeps its client's routes and gets none of the DUID too many ({granted:?})\n{}",
        log(&lab)
    );
    assert!(log(&lab).contains("new binding refused: cache cap reached"));

    // The neighbour on port 1 is admitted and routed.
    lab.clients[1].start_dhclient();
    wait_for("client 1 bound", STEP, || lab.clients[1].lease().is_some());
    let want: BTreeSet<_> = port0.union(&client_routes(&lab, 1)).cloned().collect();
    wait_for("both clients' routes", STEP, || routes(&lab.ac) == want);
    assert!(routes(&lab.ac).is_disjoint(&granted));
    eprintln!(
        "refused on port 0: {} (cap=bindings_per_interface); routes: {want:?}",
        refused()
    );
}
