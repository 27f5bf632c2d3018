//! The ISC lab topology for tests, in namespaces it creates and removes:
//!
//! ```text
//!  ns srv: dhcpd -6 ─ s0 2001:db8::1/64 ──veth── up0 2001:db8::2/64 ─ ns ac: dhcrelay -6 -I
//!                                                 sub0 2001:db8:1::1/64 ──veth── c0 ─ ns cli0: dhclient -6 -N -P
//!                                                 sub1 2001:db8:2::1/64 ──veth── c0 ─ ns cli1: dhclient -6 -N -P
//!                                                 ...
//! ```
//!
//! Client link `i` (0-based) is 2001:db8:{i+1}::/64 with addresses leased from `::100`–`::1ff`
//! and /56 prefixes delegated from the pool 2001:db8:{i+1}00::/40. `IscLab::start(n)` returns
//! when every client holds an address and a prefix (read from dhclient's own lease file),
//! has that address on its interface and a default route via the access concentrator, so a
//! ping from it crosses the box. Everything — daemons, namespaces, temp files — goes on drop.
//!
//! The quirks this works around are written down in docs/interop.md ("Running the ISC suite in
//! namespaces").

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::netns::{NetNs, require_root, veth};

/// Lease lifetimes dhcpd hands out (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// `default-lease-time`: the valid lifetime.
    pub valid: u32,
    /// `preferred-lifetime`.
    pub preferred: u32,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            valid: 600,
            preferred: 300,
        }
    }
}

/// dhcpd's own leases, per client link, with `allow leasequery;`: link `i` (1-based) is
/// 2001:db8:{i}::/64, addresses from `::100`–`::1ff`, /56 prefixes from 2001:db8:{i}00::/40.
pub fn dhcpd_conf(links: usize, life: Lifetimes) -> String {
    let mut c = format!(
        "default-lease-time {};\npreferred-lifetime {};\nmax-lease-time 7200;\n\
         allow leasequery;\nsubnet6 2001:db8::/64 {{ }}\n",
        life.valid, life.preferred
    );
    for i in 1..=links {
        c.push_str(&format!(
            "subnet6 2001:db8:{i:x}::/64 {{\n  range6 2001:db8:{i:x}::100 2001:db8:{i:x}::1ff;\n  \
             prefix6 2001:db8:{i:x}00:: 2001:db8:{i:x}ff:: /56;\n}}\n"
        ));
    }
    c
}

/// Kills and reaps a daemon when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub name: String,
}

impl Daemon {
    /// Spawn `args` in `ns`, stdout and stderr to `log`.
    pub fn spawn(ns: &NetNs, name: &str, args: &[&str], log: &Path) -> Daemon {
        Daemon::spawn_env(ns, name, args, log, &[])
    }

    /// [`spawn`](Self::spawn) with extra environment variables.
    pub fn spawn_env(
        ns: &NetNs,
        name: &str,
        args: &[&str],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = std::fs::File::create(log).expect("create daemon log");
        let child = ns
            .command(args[0])
            .args(&args[1..])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Daemon {
            child,
            name: name.to_string(),
        }
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` (e.g. "TERM", "HUP") to the process.
    pub fn signal(&self, signal: &str) {
        let out = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .output()
            .expect("run kill");
        assert!(out.status.success(), "kill -{signal}: {out:?}");
    }

    /// Wait up to `timeout` for the process to exit; its status, or None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if t0.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The blocking wait the ISC tests have always imported from here.
pub use crate::wait::wait_for;

/// What dhclient wrote down for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhclientLease {
    pub address: Ipv6Addr,
    /// Delegated prefix as `ADDR/LEN` text (parse with `lqagent::prefix::Ipv6Prefix`).
    pub prefix: String,
    pub prefix_addr: Ipv6Addr,
    pub prefix_len: u8,
    /// The client's DUID, lowercase hex.
    pub client_duid: String,
}

/// Parse the last IA_NA address, IA_PD prefix and client-id of a dhclient6 lease file.
pub fn parse_lease(text: &str) -> Option<DhclientLease> {
    // dhclient appends a new `lease6 { ... }` block on every renewal: the last one is current.
    let last = text.rsplit("lease6 {").next()?;
    let field = |key: &str| {
        last.lines().find_map(|l| {
            l.trim()
                .strip_prefix(key)
                .map(|rest| rest.trim().trim_end_matches(['{', ';']).trim().to_string())
        })
    };
    let address = field("iaaddr ")?.parse().ok()?;
    let prefix = field("iaprefix ")?;
    let (pa, pl) = prefix.split_once('/')?;
    // The client-id: the last `option dhcp6.client-id` line (colon-separated hex octets).
    let duid = text.lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix("option dhcp6.client-id ")
            .map(|v| v.trim_end_matches(';').to_string())
    })?;
    let client_duid = duid
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).map(|b| format!("{b:02x}")))
        .collect::<Result<String, _>>()
        .ok()?;
    Some(DhclientLease {
        address,
        prefix_addr: pa.parse().ok()?,
        prefix_len: pl.parse().ok()?,
        prefix,
        client_duid,
    })
}

/// One subscriber link of the access concentrator and the client on it.
#[derive(Debug)]
pub struct Client {
    pub ns: NetNs,
    /// The access concentrator's interface towards this client.
    pub ac_interface: String,
    /// The access concentrator's global address on that link (dhcrelay's link-address).
    pub link_address: Ipv6Addr,
    /// The link's /64 (`2001:db8:{i+1}::/64`).
    pub subnet: String,
    /// The pool prefixes are delegated from (`2001:db8:{i+1}00::/40`).
    pub pd_pool: String,
    /// The client's interface name inside its namespace.
    pub interface: String,
    lease_file: PathBuf,
    pid_file: PathBuf,
    log_file: PathBuf,
    dhclient: Option<Daemon>,
}

impl Client {
    /// The client's current lease, if dhclient has written one with an address and a prefix.
    pub fn lease(&self) -> Option<DhclientLease> {
        parse_lease(&std::fs::read_to_string(&self.lease_file).ok()?)
    }

    pub fn lease_file(&self) -> &Path {
        &self.lease_file
    }

    /// The client's link-local address (the next hop for its delegated prefix).
    pub fn link_local(&self) -> Ipv6Addr {
        link_local(&self.ns, &self.interface)
    }

    /// Stop dhclient and send a RELEASE for its lease (`dhclient -6 -r`).
    pub fn release(&mut self) {
        self.dhclient.take();
        let args = dhclient("-r", &self.lease_file, &self.pid_file, &self.interface);
        let out = self
            .ns
            .try_exec(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "dhclient -r: {out:?}");
    }

    /// Stop dhclient without releasing (the lease is left to expire at the server).
    pub fn stop(&mut self) {
        self.dhclient.take();
    }

    /// Ping `dst` once from the client's leased address; true when answered.
    pub fn ping_from_lease(&self, dst: Ipv6Addr) -> bool {
        let lease = self.lease().expect("client has a lease");
        self.ns
            .try_exec(&[
                "ping",
                "-6",
                "-c",
                "1",
                "-W",
                "1",
                "-I",
                &lease.address.to_string(),
                &dst.to_string(),
            ])
            .status
            .success()
    }

    pub fn start_dhclient(&mut self) {
        let args = dhclient("-d", &self.lease_file, &self.pid_file, &self.interface);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.dhclient = Some(Daemon::spawn(&self.ns, "dhclient", &args, &self.log_file));
    }
}

/// The dhclient command line every test uses: DHCPv6 asking an address and a prefix
/// (`-6 -N -P`), no script (`-sf /bin/true`: the tests configure what they need), with its
/// lease and pid files, on `interface`; `mode` is `-d` (run in the foreground) or `-r` (send a
/// RELEASE for the lease in the file and exit).
pub fn dhclient(mode: &str, lease_file: &Path, pid_file: &Path, interface: &str) -> Vec<String> {
    [
        "dhclient",
        "-6",
        "-N",
        "-P",
        mode,
        "-sf",
        "/bin/true",
        "-lf",
        &lease_file.to_string_lossy(),
        "-pf",
        &pid_file.to_string_lossy(),
        interface,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// The link-local address of `dev` in `ns`.
pub fn link_local(ns: &NetNs, dev: &str) -> Ipv6Addr {
    let out = ns.exec(&[
        "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no link-local address on {dev}: {text}"))
}

/// The whole topology. Field order is drop order: daemons stop before namespaces go.
#[derive(Debug)]
pub struct IscLab {
    relay: Option<Daemon>,
    dhcpd: Option<Daemon>,
    pub clients: Vec<Client>,
    /// The access concentrator: dhcrelay runs here, and lqagent will.
    pub ac: NetNs,
    pub server: NetNs,
    /// dhcpd's address, where leasequeries go.
    pub server_address: Ipv6Addr,
    /// The access concentrator's upstream interface and address.
    pub ac_upstream: String,
    pub ac_address: Ipv6Addr,
    dir: tempfile::TempDir,
}

/// No DAD in a namespace: addresses are usable at once (dhclient and dhcrelay bind to them).
pub fn quiet_dad(ns: &NetNs) {
    ns.exec(&[
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ]);
}

/// `ip -6 addr add a dev dev nodad` in `ns`.
pub fn add_address(ns: &NetNs, a: &str, dev: &str) {
    ns.exec(&["ip", "-6", "addr", "add", a, "dev", dev, "nodad"]);
}

impl IscLab {
    /// Build the topology with `clients` client links and wait until every client is bound.
    /// Returns None (after a SKIP line) when not root outside CI; panics under CI=true.
    pub fn start(test: &str, clients: usize) -> Option<IscLab> {
        let mut lab = IscLab::without_clients(test, clients, Lifetimes::default())?;
        lab.start_clients();
        Some(lab)
    }

    /// Build the topology and start dhcpd (with `life` lifetimes) and dhcrelay, but no client
    /// yet: something that must watch the clients bind (lqagent) can start first. Then call
    /// [`start_clients`](Self::start_clients).
    pub fn without_clients(test: &str, clients: usize, life: Lifetimes) -> Option<IscLab> {
        if !require_root(test) {
            return None;
        }
        assert!((1..=9).contains(&clients), "1..=9 clients");
        let dir = tempfile::tempdir().expect("temp dir");
        let server = NetNs::new("iscsrv");
        let ac = NetNs::new("iscac");
        quiet_dad(&server);
        quiet_dad(&ac);
        veth(&server, "s0", &ac, "up0");
        add_address(&server, "2001:db8::1/64", "s0");
        add_address(&ac, "2001:db8::2/64", "up0");
        ac.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);

        let mut lab_clients = Vec::new();
        for i in 0..clients {
            let n = i + 1;
            let ns = NetNs::new(&format!("isccl{i}"));
            quiet_dad(&ns);
            let ac_if = format!("sub{i}");
            veth(&ac, &ac_if, &ns, "c0");
            let link_address: Ipv6Addr = format!("2001:db8:{n:x}::1").parse().unwrap();
            add_address(&ac, &format!("{link_address}/64"), &ac_if);
            // Return path for the server's answers to clients (ping crosses the box).
            server.exec(&[
                "ip",
                "-6",
                "route",
                "add",
                &format!("2001:db8:{n:x}::/64"),
                "via",
                "2001:db8::2",
            ]);
            lab_clients.push(Client {
                ns,
                ac_interface: ac_if,
                link_address,
                subnet: format!("2001:db8:{n:x}::/64"),
                pd_pool: format!("2001:db8:{n:x}00::/40"),
                interface: "c0".to_string(),
                lease_file: dir.path().join(format!("dhclient{i}.leases")),
                pid_file: dir.path().join(format!("dhclient{i}.pid")),
                log_file: dir.path().join(format!("dhclient{i}.log")),
                dhclient: None,
            });
        }

        let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
        std::fs::write(p("dhcpd6.conf"), dhcpd_conf(clients, life)).unwrap();
        std::fs::write(p("dhcpd6.leases"), "").unwrap();
        let dhcpd = spawn_dhcpd(&server, dir.path(), "");

        let mut relay_args: Vec<String> = ["dhcrelay", "-6", "-d", "-I", "-pf", &p("dhcrelay.pid")]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for c in &lab_clients {
            relay_args.push("-l".into());
            relay_args.push(c.ac_interface.clone());
        }
        relay_args.extend(["-u".to_string(), "2001:db8::1%up0".to_string()]);
        let relay_refs: Vec<&str> = relay_args.iter().map(String::as_str).collect();
        let relay_log = dir.path().join("dhcrelay.log");
        let mut relay = Daemon::spawn(&ac, "dhcrelay", &relay_refs, &relay_log);
        // dhcrelay logs its sockets once it has bound them.
        wait_for("dhcrelay to bind", Duration::from_secs(10), || {
            assert!(relay.running(), "dhcrelay exited: {}", read(&relay_log));
            read(&relay_log).contains("Sending on")
        });

        Some(IscLab {
            relay: Some(relay),
            dhcpd: Some(dhcpd),
            clients: lab_clients,
            ac,
            server,
            server_address: "2001:db8::1".parse().unwrap(),
            ac_upstream: "up0".to_string(),
            ac_address: "2001:db8::2".parse().unwrap(),
            dir,
        })
    }

    /// Start dhclient in every client namespace and wait until each is bound; then give each
    /// client its address and a default route via the access concentrator.
    pub fn start_clients(&mut self) {
        for c in &mut self.clients {
            c.start_dhclient();
        }
        self.wait_bound(Duration::from_secs(30));
        for c in &self.clients {
            let lease = c.lease().unwrap();
            // dhclient -sf /bin/true configures nothing: put the leased address on the
            // interface and route via the access concentrator, as the real script and an RA would.
            add_address(&c.ns, &format!("{}/128", lease.address), &c.interface);
            c.ns.exec(&[
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                &c.link_address.to_string(),
                "dev",
                &c.interface,
                "onlink",
            ]);
        }
    }

    /// Wait until every running client has an address and a prefix.
    pub fn wait_bound(&self, timeout: Duration) {
        wait_for("every client to be bound", timeout, || {
            self.clients.iter().all(|c| c.lease().is_some())
        });
    }

    /// dhcpd's lease database (`dhcpd6.leases`).
    pub fn server_leases(&self) -> String {
        read(&self.dir.path().join("dhcpd6.leases"))
    }

    /// A daemon's log, by name: `dhcpd`, `dhcrelay`, `dhclient0`, ...
    pub fn log(&self, name: &str) -> String {
        read(&self.dir.path().join(format!("{name}.log")))
    }

    /// The temp dir holding every config, lease and log file (for a test's own files too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An lqagent configuration for the access concentrator of this lab.
    pub fn lqagent_toml(&self) -> String {
        let mut t = format!(
            "state_dir = \"{}\"\n\n[snoop]\ninterfaces = [\"{}\"]\n\n[control]\nsocket = \"{}\"\n\n\
             [[servers]]\nname = \"dhcpd\"\naddress = \"{}\"\n",
            self.dir.path().join("state").display(),
            self.ac_upstream,
            self.dir.path().join("control.sock").display(),
            self.server_address,
        );
        for (i, c) in self.clients.iter().enumerate() {
            t.push_str(&format!(
                "\n[[links]]\nname = \"link{i}\"\ninterface = \"{}\"\nlink_address = \"{}\"\n\
                 subscriber_prefixes = [\"{}\", \"{}\"]\n",
                c.ac_interface, c.link_address, c.subnet, c.pd_pool
            ));
        }
        t
    }

    /// Stop dhcpd (its lease file stays).
    pub fn stop_server(&mut self) {
        self.dhcpd.take();
    }

    /// Stop dhcrelay.
    pub fn stop_relay(&mut self) {
        self.relay.take();
    }

    /// (Re)start dhcpd with `leases` as its lease database (`dhcpd6.leases`, in dhcpd.leases(5)
    /// form), so it holds bindings no client had to ask for — how a bench gets a thousand
    /// leases for leasequery without a thousand dhclients. Waits until it says it is serving.
    pub fn restart_server_with_leases(&mut self, leases: &str) {
        self.dhcpd.take();
        std::fs::write(self.dir.path().join("dhcpd6.leases"), leases).unwrap();
        self.dhcpd = Some(spawn_dhcpd(&self.server, self.dir.path(), ""));
    }
}

/// dhcpd -6 on `s0` in `server`, with the configuration `{name}dhcpd6.conf`, the lease file
/// `{name}dhcpd6.leases` and the pid file `{name}dhcpd.pid` in `dir` (`name` empty: the lab's
/// own), logging to `dhcpd.log` there; returns once it logged "Server starting". The one way
/// the tests start dhcpd.
pub fn spawn_dhcpd(server: &NetNs, dir: &Path, name: &str) -> Daemon {
    let p = |f: &str| {
        dir.join(format!("{name}{f}"))
            .to_string_lossy()
            .into_owned()
    };
    let log = dir.join("dhcpd.log");
    let mut dhcpd = Daemon::spawn(
        server,
        "dhcpd",
        &[
            "dhcpd",
            "-6",
            "-f",
            "-d",
            "-cf",
            &p("dhcpd6.conf"),
            "-lf",
            &p("dhcpd6.leases"),
            "-pf",
            &p("dhcpd.pid"),
            "s0",
        ],
        &log,
    );
    wait_for("dhcpd to start", Duration::from_secs(10), || {
        assert!(dhcpd.running(), "dhcpd exited: {}", read(&log));
        read(&log).contains("Server starting")
    });
    dhcpd
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Octets as dhclient writes them: colon-separated hex (`0:1:0:1:32:a7`, `6e:7f:00:a7`), or —
/// when every octet happens to be printable, as a random MAC's IAID can be — a quoted string
/// with C escapes (`"ab\"c"`, `"\000\001"`).
pub fn lease_file_octets(text: &str) -> Vec<u8> {
    let Some(quoted) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return text
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).expect("hex octet"))
            .collect();
    };
    let mut out = Vec::new();
    let mut bytes = quoted.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next().expect("escape at the end") {
            d @ b'0'..=b'7' => {
                let (d2, d3) = (bytes.next().expect("octal"), bytes.next().expect("octal"));
                let oct = [d, d2, d3].map(|c| (c - b'0') as u32);
                out.push((oct[0] * 64 + oct[1] * 8 + oct[2]) as u8);
            }
            b'x' => {
                let hex = [bytes.next().expect("hex"), bytes.next().expect("hex")];
                let hex = std::str::from_utf8(&hex).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
            }
            other => out.push(other),
        }
    }
    out
}
