//! Network namespaces for privileged tests: unique per test, torn down on drop.
//!
//! Names are `lqa-<tag>-<pid>-<n>` so parallel tests and parallel test binaries never collide,
//! and leftovers of a crashed earlier run with the same name are removed first.
//!
//! Root handling: `require_root()` returns `true` when the test may go on. Without root it panics
//! under `CI=true` (a privileged test must never pass silently in CI) and otherwise prints a loud
//! SKIP line and returns `false`.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when running as root; panics under CI=true when not.
pub fn require_root(test: &str) -> bool {
    // SAFETY-free: geteuid via `id -u` keeps tests free of unsafe.
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    let root = String::from_utf8_lossy(&out.stdout).trim() == "0";
    if root {
        return true;
    }
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{test}: needs root (network namespaces, netlink) and CI=true: refusing to skip");
    }
    eprintln!("SKIP {test}: needs root; run tests/run.sh as root");
    false
}

/// Run a command, panicking with its stderr when it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A network namespace that exists for the lifetime of this value.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Create a fresh namespace with loopback up. `tag` is a short word naming the test.
    pub fn new(tag: &str) -> NetNs {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("lqa-{tag}-{}-{n}", std::process::id());
        assert!(name.len() <= 64, "namespace name too long: {name}");
        // Leftover from a crashed run with the same pid and counter: remove it first.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run a command inside the namespace (`ip netns exec`), panicking on failure.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Like `exec`, but returns the output whatever the exit status.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("spawn ip netns exec")
    }

    /// A `Command` that runs `program` inside the namespace, for spawning daemons.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Path of the namespace handle, for `setns(2)`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Run `f` on a new OS thread that has entered this namespace (setns is per-thread), so
    /// sockets it opens — netlink, UDP — live in the namespace. Build a current-thread tokio
    /// runtime inside `f` if it needs async.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).expect("open netns handle");
        std::thread::spawn(move || {
            nix_setns(&file);
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }

    /// [`run_in`](Self::run_in) without waiting: `f` runs on a new OS thread inside this
    /// namespace, and the caller joins it (a helper that serves for a test's length).
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = std::fs::File::open(self.path()).expect("open netns handle");
        std::thread::spawn(move || {
            nix_setns(&file);
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Kill anything still running inside, then delete the namespace.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Create a veth pair with one end in `a` and the other in `b`, both up.
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    sh(&[
        "ip",
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    a.exec(&["ip", "link", "set", a_if, "up"]);
    b.exec(&["ip", "link", "set", b_if, "up"]);
}

#[allow(unsafe_code)]
fn nix_setns(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid, open namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// The snoop tests' uplink: the relay's `up0` (2001:db8:f::1/64) veth'd to the server
/// namespace's `dn0` (2001:db8:f::2/64).
pub fn uplink(relay: &NetNs, server: &NetNs) {
    veth(relay, "up0", server, "dn0");
    relay.exec(&[
        "ip",
        "addr",
        "add",
        "2001:db8:f::1/64",
        "dev",
        "up0",
        "nodad",
    ]);
    server.exec(&[
        "ip",
        "addr",
        "add",
        "2001:db8:f::2/64",
        "dev",
        "dn0",
        "nodad",
    ]);
}

/// The kernel tests' pair: an agent namespace whose `sub0` holds the relay's subscriber-link
/// address 2001:db8:10::1/64, veth'd to a subscriber namespace (`cpe0`).
pub fn agent_and_subscriber(tag: &str) -> (NetNs, NetNs) {
    let agent = NetNs::new(tag);
    let sub = NetNs::new(tag);
    veth(&agent, "sub0", &sub, "cpe0");
    agent.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:10::1/64",
        "dev",
        "sub0",
        "nodad",
    ]);
    (agent, sub)
}

/// A route as `ip -6 -j route` shows it: (destination with its length, gateway, device).
pub type Route = (String, Option<String>, String);

/// A route with its metric: (destination with its length, gateway, device, metric).
pub type MetricRoute = (String, Option<String>, String, u64);

/// The IPv6 unicast routes of protocol `proto` (number or name) in `ns`, read with
/// `ip -6 -j route show proto N` (the kernel's view, never the agent's bookkeeping). The
/// agent's `unreachable` aggregates (RFC 8987 R-5) are left out: see [`unreachable_routes`].
pub fn proto_routes(ns: &NetNs, proto: &str) -> std::collections::BTreeSet<Route> {
    proto_routes_with_metric(ns.name(), proto)
        .into_iter()
        .map(|(dst, gw, dev, _)| (dst, gw, dev))
        .collect()
}

/// [`proto_routes`] in routing table `table` (a number or a name such as `main`).
pub fn proto_routes_in_table(
    ns: &NetNs,
    table: &str,
    proto: &str,
) -> std::collections::BTreeSet<Route> {
    unicast_routes(&[
        "ip",
        "-n",
        ns.name(),
        "-6",
        "-j",
        "route",
        "show",
        "table",
        table,
        "proto",
        proto,
    ])
    .into_iter()
    .map(|(dst, gw, dev, _)| (dst, gw, dev))
    .collect()
}

/// [`proto_routes`] with each route's metric, in the namespace named `ns`.
pub fn proto_routes_with_metric(ns: &str, proto: &str) -> std::collections::BTreeSet<MetricRoute> {
    unicast_routes(&["ip", "-n", ns, "-6", "-j", "route", "show", "proto", proto])
}

/// The unicast routes an `ip -6 -j route show …` command lists (a host route's `dst` given its
/// `/128`, which `ip` leaves out).
fn unicast_routes(ip: &[&str]) -> std::collections::BTreeSet<MetricRoute> {
    let out = sh(ip);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j is JSON");
    v.as_array()
        .expect("array of routes")
        .iter()
        .filter(|r| r["type"].as_str().is_none_or(|t| t == "unicast"))
        .map(|r| {
            let dst = r["dst"].as_str().expect("dst").to_string();
            let dst = if dst.contains('/') {
                dst
            } else {
                format!("{dst}/128")
            };
            (
                dst,
                r["gateway"].as_str().map(str::to_string),
                r["dev"].as_str().expect("dev").to_string(),
                r["metric"].as_u64().expect("metric"),
            )
        })
        .collect()
}

/// Destinations of the `unreachable` routes of protocol `proto` in the namespace named `ns`.
pub fn unreachable_routes(ns: &str, proto: &str) -> std::collections::BTreeSet<String> {
    let out = sh(&[
        "ip",
        "-n",
        ns,
        "-6",
        "-j",
        "route",
        "show",
        "proto",
        proto,
        "type",
        "unreachable",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j is JSON");
    v.as_array()
        .expect("array of routes")
        .iter()
        .filter_map(|r| r["dst"].as_str().map(str::to_string))
        .collect()
}
