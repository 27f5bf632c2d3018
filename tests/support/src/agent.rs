//! `lqagent run` (the built binary) in the access concentrator of an [`IscLab`]: its
//! configuration file, starting it and waiting until it says it is ready, and the destinations
//! of its routes as the kernel shows them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::isc::{Daemon, IscLab, wait_for};
use super::netns::{NetNs, proto_routes};

/// Write `lqagent.toml` into the lab's directory: the lab's own configuration
/// ([`IscLab::lqagent_toml`]: state, snoop, control, the server, one link per client), then
/// `tables`, whole TOML tables the test adds (`[bulk]`, `[routes]`, `[log]`, ...).
pub fn write_config(lab: &IscLab, tables: &str) -> PathBuf {
    let path = lab.dir().join("lqagent.toml");
    std::fs::write(&path, format!("{}\n{tables}", lab.lqagent_toml())).unwrap();
    path
}

/// Start `lqagent run --config CFG` in the access concentrator, its output in `log` (a file
/// name in the lab's directory), and wait up to 10 s for its " ready" line.
pub fn start_agent(lab: &IscLab, cfg: &Path, log: &str) -> Daemon {
    start_agent_env(lab, cfg, log, &[])
}

/// [`start_agent`] with extra environment variables (`NOTIFY_SOCKET`, ...).
pub fn start_agent_env(lab: &IscLab, cfg: &Path, log: &str, env: &[(&str, &str)]) -> Daemon {
    let bin = super::bin::lqagent();
    let bin = bin.to_str().expect("utf-8 target path");
    let log = lab.dir().join(log);
    let mut d = Daemon::spawn_env(
        &lab.ac,
        "lqagent",
        &[bin, "run", "--config", &cfg.to_string_lossy()],
        &log,
        env,
    );
    wait_for("lqagent to be ready", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(d.running(), "lqagent exited:\n{text}");
        text.contains(" ready")
    });
    d
}

/// Destinations of the routes of protocol `proto` in `ns` (`/128` spelled out).
pub fn route_dsts(ns: &NetNs, proto: &str) -> BTreeSet<String> {
    proto_routes(ns, proto).into_iter().map(|r| r.0).collect()
}

/// Whether `ns` has a route of protocol `proto` to `dst`.
pub fn has_route(ns: &NetNs, proto: &str, dst: &str) -> bool {
    route_dsts(ns, proto).contains(dst)
}

/// The routes client `i` of `lab` calls for (RFC 8987 ): its /128 on its link, its
/// delegated prefix via its link-local address.
pub fn client_routes(lab: &IscLab, i: usize) -> BTreeSet<super::netns::Route> {
    let c = &lab.clients[i];
    let lease = c.lease().expect("bound");
    let pfx: lqagent::prefix::Ipv6Prefix = lease.prefix.parse().expect("prefix");
    BTreeSet::from([
        (
            format!("{}/128", lease.address),
            None,
            c.ac_interface.clone(),
        ),
        (
            pfx.to_string(),
            Some(c.link_local().to_string()),
            c.ac_interface.clone(),
        ),
    ])
}
