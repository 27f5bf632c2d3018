//! lqagent's routes reach the network through the box's routing daemon (docs/routing.md):
//! Debian's FRR in the agent's namespace redistributes kernel routes of the subscriber space into
//! BGP, and a second FRR in a peer namespace learns them. The routes are made by lqagent's own
//! code (the installer for a delegated /56, the R-5 sync for the /48 aggregate); the peer's kernel
//! is read with `ip -j route show proto bgp`. Withdrawing the /56 (what a release or expiry does)
//! withdraws it at the peer (RFC 8987 R-4) while the aggregate stays.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lqagent::kernel::unreachable::{self, Placement};
use lqagent::kernel::{
    DEFAULT_PROTOCOL, Installer, InstallerConfig, LinkRef, RouteChange, RouteSpec,
};
use lqagent::prefix::Ipv6Prefix;
use support::netns::{NetNs, agent_and_subscriber, require_root, veth};
use support::wait::wait_for;

const ZEBRA: &str = "/usr/lib/frr/zebra";
const BGPD: &str = "/usr/lib/frr/bgpd";
const DELEGATED: &str = "2001:db8:100:100::/56";
const AGGREGATE: &str = "2001:db8:100::/48";

fn have_frr() -> bool {
    if Path::new(ZEBRA).exists() && Path::new(BGPD).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").map(|v| v != "true").unwrap_or(true),
        "FRR missing under CI=true: tests/run.sh installs the frr package"
    );
    eprintln!("SKIP frr_bgp: apt-get install frr");
    false
}

/// The FRR configuration of the agent's box: redistribute kernel routes in the subscriber space.
fn agent_conf() -> String {
    "ipv6 prefix-list LQAGENT seq 10 permit 2001:db8:100::/48 le 128\n\
     route-map LQAGENT permit 10\n match ipv6 address prefix-list LQAGENT\n\
     router bgp 64500\n bgp router-id 10.0.0.1\n no bgp ebgp-requires-policy\n\
     neighbor 2001:db8:20::2 remote-as 64501\n address-family ipv6 unicast\n\
     redistribute kernel route-map LQAGENT\n neighbor 2001:db8:20::2 activate\n\
     exit-address-family\n"
        .to_string()
}

fn peer_conf() -> String {
    "router bgp 64501\n bgp router-id 10.0.0.2\n no bgp ebgp-requires-policy\n\
     neighbor 2001:db8:20::1 remote-as 64500\n address-family ipv6 unicast\n\
     neighbor 2001:db8:20::1 activate\n exit-address-family\n"
        .to_string()
}

/// zebra and bgpd in `ns`, with their sockets, pid files and config in `dir` (owned by frr).
/// They daemonize; the namespace's drop kills them.
fn start_frr(ns: &NetNs, dir: &Path, instance: &str, conf: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let conf_path = dir.join("frr.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "frr"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("user frr")
    };
    let (uid, gid) = (id("-u"), id("-g"));
    for p in [dir, conf_path.as_path()] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
    for (daemon, name) in [(ZEBRA, "zebra"), (BGPD, "bgpd")] {
        let out = ns
            .command(daemon)
            .arg("-d")
            .args(["-N", instance])
            .arg("-i")
            .arg(dir.join(format!("{name}.pid")))
            .arg("-z")
            .arg(dir.join("zserv.api"))
            .arg("--vty_socket")
            .arg(dir)
            .arg("-f")
            .arg(&conf_path)
            .args(["-A", "127.0.0.1", "-P", "0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {out:?}");
    }
}

/// Destinations in `ip -j route` output. Anything but a JSON array panics: a failed or garbled
/// read must not pass for "no routes", which the withdrawal check would take as withdrawn.
fn routes_of(json: &[u8]) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_slice(json)
        .unwrap_or_else(|e| panic!("ip -j output is not JSON ({e}): {json:?}"));
    v.as_array()
        .unwrap_or_else(|| panic!("ip -j output is not an array: {v}"))
        .iter()
        .filter_map(|r| r["dst"].as_str().map(str::to_string))
        .collect()
}

/// Run `f` on a current-thread runtime inside `ns`.
fn in_ns<T: Send + 'static>(ns: &NetNs, f: impl AsyncFnOnce() -> T + Send + 'static) -> T {
    ns.run_in(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

#[test]
fn protocol_211_routes_reach_a_bgp_peer_and_are_withdrawn() {
    if !require_root("protocol_211_routes_reach_a_bgp_peer_and_are_withdrawn") || !have_frr() {
        return;
    }
    let (agent, _sub) = agent_and_subscriber("frr");
    let peer = NetNs::new("frrpeer");
    veth(&agent, "up0", &peer, "core0");
    agent.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:20::1/64",
        "dev",
        "up0",
        "nodad",
    ]);
    peer.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:20::2/64",
        "dev",
        "core0",
        "nodad",
    ]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tag = std::process::id();
    start_frr(
        &agent,
        &dir.path().join("a"),
        &format!("lqa{tag}a"),
        &agent_conf(),
    );
    start_frr(
        &peer,
        &dir.path().join("b"),
        &format!("lqa{tag}b"),
        &peer_conf(),
    );

    // lqagent's routes: a delegated /56 by the installer, the /48 aggregate by the R-5 sync.
    let spec = RouteSpec::delegated(
        DELEGATED.parse().unwrap(),
        "2001:db8:10::2".parse::<Ipv6Addr>().unwrap(),
        LinkRef::Interface("sub0".into()),
    );
    // One installer throughout, as in the daemon: it withdraws what it installed.
    let peer_name = peer.name().to_string();
    // `sh` panics when `ip` fails: an error is never read as an empty routing table.
    let peer_routes = move || {
        let out = support::netns::sh(&[
            "ip", "-n", &peer_name, "-6", "-j", "route", "show", "proto", "bgp",
        ]);
        routes_of(&out.stdout)
    };
    in_ns(&agent, async move || {
        let mut inst = Installer::new(InstallerConfig::default()).await.unwrap();
        inst.apply([RouteChange::Upsert(spec)]).await.unwrap();
        let want: Vec<Ipv6Prefix> = vec![AGGREGATE.parse().unwrap()];
        let at = Placement {
            table: 254,
            protocol: DEFAULT_PROTOCOL,
            metric: 1024,
        };
        unreachable::sync(at, &want).await.unwrap();

        wait_for(
            "the peer to learn both prefixes",
            Duration::from_secs(60),
            || {
                let r = peer_routes();
                r.contains(DELEGATED) && r.contains(AGGREGATE)
            },
        );

        // Release: the installer withdraws the /56; BGP withdraws it at the peer.
        inst.apply([RouteChange::Withdraw(DELEGATED.parse().unwrap())])
            .await
            .unwrap();
        // Withdrawn means: the /56 gone from a read that still shows the aggregate (so the
        // session and the read are alive), not merely absent from whatever came back.
        wait_for("the peer to drop the /56", Duration::from_secs(30), || {
            let r = peer_routes();
            !r.contains(DELEGATED) && r.contains(AGGREGATE)
        });
    });
    assert!(
        routes_of(
            &peer
                .exec(&["ip", "-6", "-j", "route", "show", "proto", "bgp"])
                .stdout
        )
        .contains(AGGREGATE),
        "the aggregate stays advertised"
    );
}
