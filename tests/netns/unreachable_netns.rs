//! RFC 8987 R-5 loop protection against a real kernel: three namespaces, an upstream router
//! (`core`), the agent's box and a subscriber router holding a delegated /56. The box's default
//! route points upstream and upstream's points back at the box, the situation in which traffic to
//! undelegated space loops. With the unreachable aggregate in place a ping to undelegated space
//! inside the /48 gets ICMPv6 "no route" from the box; a ping into the delegated /56 still reaches
//! the subscriber (longest match wins); the installer's reconcile leaves the aggregate alone.

use std::net::Ipv6Addr;

use lqagent::kernel::unreachable::{self, Placement};
use lqagent::kernel::{DEFAULT_PROTOCOL, Installer, InstallerConfig, LinkRef, RouteSpec};
use lqagent::prefix::Ipv6Prefix;
use support::netns::{NetNs, agent_and_subscriber, require_root, unreachable_routes, veth};

const AGGREGATE: &str = "2001:db8:100::/48";
const DELEGATED: &str = "2001:db8:100:100::/56";
const HOST_IN_DELEGATED: &str = "2001:db8:100:100::1";
const UNDELEGATED: &str = "2001:db8:100:200::1";

fn placement() -> Placement {
    Placement {
        table: 254,
        protocol: DEFAULT_PROTOCOL,
        metric: 1024,
    }
}

/// `ping -6 -c1` from `ns` to `dst`: (answered, output).
fn ping(ns: &NetNs, dst: &str) -> (bool, String) {
    let out = ns.try_exec(&["ping", "-6", "-n", "-c", "1", "-W", "2", dst]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Ping until `want` holds for the outcome, at most 10 times (the first packets into a fresh
/// namespace can be lost to neighbour discovery); returns the last outcome.
fn ping_until(ns: &NetNs, dst: &str, want: impl Fn(bool, &str) -> bool) -> (bool, String) {
    let mut last = ping(ns, dst);
    for _ in 0..9 {
        if want(last.0, &last.1) {
            break;
        }
        last = ping(ns, dst);
    }
    last
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
fn undelegated_space_is_unreachable_and_delegated_space_is_routed() {
    if !require_root("undelegated_space_is_unreachable_and_delegated_space_is_routed") {
        return;
    }
    let (agent, sub) = agent_and_subscriber("r5");
    let core = NetNs::new("r5core");
    veth(&agent, "up0", &core, "core0");
    for (ns, args) in [
        (
            &agent,
            vec![
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:20::1/64",
                "dev",
                "up0",
                "nodad",
            ],
        ),
        (
            &agent,
            vec![
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                "2001:db8:20::2",
            ],
        ),
        (
            &agent,
            vec!["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
        ),
        (
            &core,
            vec![
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:20::2/64",
                "dev",
                "core0",
                "nodad",
            ],
        ),
        (
            &core,
            vec![
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                "2001:db8:20::1",
            ],
        ),
        (
            &core,
            vec!["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
        ),
        (
            &sub,
            vec![
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:10::2/64",
                "dev",
                "cpe0",
                "nodad",
            ],
        ),
        (
            &sub,
            vec![
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                "2001:db8:10::1",
            ],
        ),
        (&sub, vec!["ip", "link", "set", "lo", "up"]),
        (
            &sub,
            vec![
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:100:100::1/128",
                "dev",
                "lo",
            ],
        ),
    ] {
        ns.exec(&args);
    }

    // The delegated /56 via the subscriber router, as the installer makes it.
    let delegated = RouteSpec::delegated(
        DELEGATED.parse().unwrap(),
        "2001:db8:10::2".parse::<Ipv6Addr>().unwrap(),
        LinkRef::Interface("sub0".into()),
    );
    let d2 = delegated.clone();
    in_ns(&agent, async move || {
        let mut inst = Installer::new(InstallerConfig::default()).await.unwrap();
        inst.set_desired([d2]).await.unwrap();
    });
    let (ok, text) = ping_until(&core, HOST_IN_DELEGATED, |ok, _| ok);
    assert!(ok, "delegated space is routed: {text}");

    // Without loop protection undelegated space goes back upstream and loops.
    let (ok, text) = ping_until(&core, UNDELEGATED, |_, t| t.contains("Time exceeded"));
    assert!(!ok, "{text}");
    assert!(
        text.contains("Time exceeded"),
        "loops until the hop limit: {text}"
    );

    let want: Vec<Ipv6Prefix> = vec![AGGREGATE.parse().unwrap()];
    let report = in_ns(&agent, async move || {
        unreachable::sync(placement(), &want).await
    })
    .expect("sync");
    assert_eq!(report.added.len(), 1, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        unreachable_routes(agent.name(), &DEFAULT_PROTOCOL.to_string()),
        [AGGREGATE.to_string()].into()
    );

    let (ok, text) = ping_until(&core, UNDELEGATED, |_, t| t.contains("unreachable"));
    assert!(!ok, "{text}");
    assert!(
        text.contains("Destination unreachable") && text.contains("No route"),
        "ICMPv6 no route from the box, not a loop: {text}"
    );
    let (ok, text) = ping(&core, HOST_IN_DELEGATED);
    assert!(ok, "the more specific delegated route wins: {text}");

    // A full reconcile of the per-lease routes leaves the aggregate alone.
    in_ns(&agent, async move || {
        let mut inst = Installer::new(InstallerConfig::default()).await.unwrap();
        inst.set_desired([delegated]).await.unwrap();
        inst.set_desired([]).await.unwrap();
    });
    assert_eq!(
        unreachable_routes(agent.name(), &DEFAULT_PROTOCOL.to_string()),
        [AGGREGATE.to_string()].into(),
        "reconcile must not delete the unreachable aggregate"
    );

    // Syncing again is a no-op; syncing to nothing (key turned off) removes it.
    let report = in_ns(&agent, async move || {
        let again = unreachable::sync(placement(), &[AGGREGATE.parse().unwrap()])
            .await
            .unwrap();
        let off = unreachable::sync(placement(), &[]).await.unwrap();
        (again, off)
    });
    assert!(
        report.0.added.is_empty() && report.0.removed.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.1.removed.len(), 1, "{report:?}");
    assert!(unreachable_routes(agent.name(), &DEFAULT_PROTOCOL.to_string()).is_empty());
}
