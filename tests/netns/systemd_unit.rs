//! The Debian package under a real systemd, installed as an operator would: a minimal Debian
//! bookworm root (`debootstrap --variant=minbase`, built once and cached under `target/`), booted
//! with `systemd-nspawn -b --private-network`, the `.deb` this test run builds installed with
//! `dpkg -i`, and the unit driven with `systemctl`/`journalctl` inside it (by `nsenter` into the
//! container's PID 1: the hosts CI runs on need not run systemd themselves, so there is no
//! machined to register with).
//!
//! Why: the unit's hardening (seccomp, `ProtectProc=`, the runtime directory's mode) only acts
//! under systemd, and `systemd-analyze verify` checks none of it. Under it `[control]
//! show_group` once crash-looped the daemon (SIGSYS on `chown`), group members could not `show`
//! (`/proc` hidden, directory closed), and every stop logged an `nft` error.
//!
//! One container serves the whole test (boot and install cost more than the checks). The
//! network is the container's own: a veth uplink and a veth pair to a subscriber namespace, all
//! 2001:db8::/32; no traffic leaves it. A drop-in shortens `WatchdogSec` (4 s) so that "no
//! restart across two watchdog periods" takes seconds, and lengthens `RestartSec` (8 s) so that
//! the gap between a crash and the restart can be observed; nothing else of the unit changes.
//!
//! Needs debootstrap, systemd-container (systemd-nspawn) and cargo-deb (tests/run.sh installs
//! them) and Debian's archive for the first build of the root (`LQAGENT_DEBIAN_MIRROR`
//! overrides `http://deb.debian.org/debian`). Under CI=true a missing one fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What the booted root needs beyond minbase: an init, D-Bus for systemctl's peers, the
/// package's dependencies (adduser, nftables) and tools the test drives (ip, ping).
const INCLUDE: &str = "systemd,systemd-sysv,dbus,nftables,iproute2,adduser,iputils-ping";

/// Written last into a finished root; its content names what was included, so a change to
/// [`INCLUDE`] rebuilds the cache.
const MARKER: &str = ".lqagent-root-complete";

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn tools_present() -> bool {
    let missing: Vec<&str> = ["debootstrap", "systemd-nspawn", "nsenter"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").map(|v| v != "true").unwrap_or(true),
        "{missing:?} missing under CI=true: tests/run.sh installs debootstrap and systemd-container"
    );
    eprintln!(
        "SKIP systemd_unit: {missing:?} missing (apt-get install debootstrap systemd-container)"
    );
    false
}

fn check(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cached bookworm root, built when missing or built with another [`INCLUDE`].
fn bookworm_root() -> PathBuf {
    let base = Path::new(ROOT).join("target/systemd-root");
    let root = base.join("bookworm");
    if std::fs::read_to_string(root.join(MARKER)).is_ok_and(|m| m == INCLUDE) {
        return root;
    }
    let tmp = base.join("bookworm.partial");
    for d in [&root, &tmp] {
        if d.exists() {
            std::fs::remove_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        }
    }
    std::fs::create_dir_all(&base).unwrap();
    let mirror = std::env::var("LQAGENT_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let started = Instant::now();
    check(
        Command::new("debootstrap")
            .args([
                "--variant=minbase",
                &format!("--include={INCLUDE}"),
                "bookworm",
            ])
            .arg(&tmp)
            .arg(&mirror),
    );
    std::fs::write(tmp.join(MARKER), INCLUDE).unwrap();
    std::fs::rename(&tmp, &root).unwrap();
    eprintln!(
        "systemd_unit: debootstrap of {} took {:?}",
        root.display(),
        started.elapsed()
    );
    root
}

/// A booted container; shut down (SIGTERM to nspawn, then SIGKILL) when dropped. The root is
/// mounted read-only under a tmpfs overlay (`--volatile=overlay`), so the cached root stays as
/// debootstrap left it and every run starts from a clean system.
struct Machine {
    nspawn: Child,
    leader: u32,
    name: String,
}

impl Machine {
    fn boot(root: &Path, name: &str, share: &Path, log: &Path) -> Machine {
        let log = std::fs::File::create(log).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                "--boot",
                "--private-network",
                "--volatile=overlay",
            ])
            // No machined to register with (the host need not run systemd), no scope to make.
            .args(["--register=no", "--keep-unit", "--console=read-only"])
            .arg(format!("--machine={name}"))
            .arg("--directory")
            .arg(root)
            .arg(format!("--bind-ro={}:/mnt/lqagent", share.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn");
        let mut m = Machine {
            leader: 0,
            name: name.to_string(),
            nspawn,
        };
        let children = format!("/proc/{0}/task/{0}/children", m.nspawn.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        while m.leader == 0 {
            assert!(
                Instant::now() < deadline,
                "container {name}: no PID 1 within 60 s"
            );
            if let Ok(Some(status)) = m.nspawn.try_wait() {
                panic!("systemd-nspawn exited early: {status}");
            }
            m.leader = std::fs::read_to_string(&children)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .find(|p: &u32| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "systemd")
                })
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(50));
        }
        // Wait (bounded) until the container's systemd has reached its default target. Its
        // bus socket appears some time after the exec: until then systemctl fails, so poll.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = m.sh("systemctl is-system-running");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "container {name} did not boot within 120 s: {state:?} {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                m.journal("", 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `sh -c script` inside the container (all its namespaces, a clean environment).
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a", "--"])
            .args([
                "/usr/bin/env",
                "-i",
                &format!("PATH={PATH}"),
                "LANG=C.UTF-8",
            ])
            .args(["/bin/sh", "-c", script])
            .output()
            .expect("nsenter")
    }

    /// [`sh`](Self::sh) that must succeed; its stdout. A failure shows the unit's journal.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in {}: {script}: {}{}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal("-u lqagent", 40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`sh`](Self::sh) that must fail; its stderr and stdout.
    fn fails(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            !out.status.success(),
            "in {}: {script} succeeded: {}",
            self.name,
            String::from_utf8_lossy(&out.stdout)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
    }

    fn journal(&self, filter: &str, lines: usize) -> String {
        let out = self.sh(&format!(
            "journalctl --no-pager -o short-monotonic -n {lines} {filter}"
        ));
        format!(
            "--- journal {filter}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    }

    /// A property of the lqagent unit (`systemctl show -p NAME --value`).
    fn prop(&self, name: &str) -> String {
        self.ok(&format!("systemctl show -p {name} --value lqagent"))
            .trim()
            .to_string()
    }

    /// Wait (bounded) until `cond` holds.
    fn wait(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}\n{}",
                self.journal("-u lqagent", 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGTERM: nspawn asks the container's systemd to power off; SIGKILL if it takes long.
        let _ = Command::new("kill")
            .args(["-TERM", &self.nspawn.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// The daemon's configuration inside the container: one link with the trigger in enforcement
/// mode, `show_group` set, a server nobody answers for (the agent copes; no traffic leaves).
const CONFIG: &str = r#"state_dir = "/var/lib/lqagent"

[identity]
relay_duid = "000300010200000000aa"

[bulk]
enabled = false

[snoop]
interfaces = ["uplink0"]

[trigger]
enabled = true
enforcement = true

[routes]
reconcile_interval_secs = 60

[metrics]
listen = "127.0.0.1:9567"

[control]
socket = "/run/lqagent/control.sock"
show_group = "lqshow"

[[servers]]
name = "dhcp-a"
address = "2001:db8:0:547::a"

[[links]]
name = "cable1"
interface = "cable1"
link_address = "2001:db8:100::1"
subscriber_prefixes = ["2001:db8:100::/48"]
trigger = true
"#;

/// Test-only timing: two watchdog periods in seconds, and a crash-to-restart gap long enough
/// to look at.
const DROP_IN: &str = "[Service]\nWatchdogSec=4\nRestartSec=8\n";
const WATCHDOG: Duration = Duration::from_secs(4);

/// The network inside the container: `uplink0` (a veth whose other end nobody uses: where the
/// servers would be; veth, not dummy, because some CI kernels have no dummy driver) and
/// `cable1`, a veth to the subscriber namespace `sub` (2001:db8:100::99, inside the link's
/// prefix).
const NETWORK: &str = "set -e
ip link add uplink0 type veth peer name uplink1
ip -6 addr add 2001:db8:0:547::1/64 dev uplink0 nodad
ip link set uplink1 up
ip link set uplink0 up
ip link add cable1 type veth peer name sub0
ip -6 addr add 2001:db8:100::1/64 dev cable1 nodad
ip link set cable1 up
ip netns add sub
ip link set sub0 netns sub
ip -n sub link set lo up
ip -n sub -6 addr add 2001:db8:100::99/64 dev sub0 nodad
ip -n sub link set sub0 up";

/// Does a ping from the subscriber reach the box (its echo answered)?
fn subscriber_reaches_box(m: &Machine) -> bool {
    m.sh("ip netns exec sub ping -6 -c 1 -W 1 2001:db8:100::1")
        .status
        .success()
}

#[test]
fn the_package_under_systemd_starts_serves_the_show_group_crashes_open_and_purges() {
    let test = "the_package_under_systemd_starts_serves_the_show_group_crashes_open_and_purges";
    if !support::netns::require_root(test)
        || !tools_present()
        || !super::deb_package::have_cargo_deb()
    {
        return;
    }
    let started = Instant::now();
    let root = bookworm_root();
    let deb = super::deb_package::the_deb();
    let (share, deb_name) = (
        deb.parent().unwrap(),
        deb.file_name().unwrap().to_str().unwrap(),
    );
    let logs = tempfile::tempdir().unwrap();
    let prepared = started.elapsed();
    eprintln!("systemd_unit: root and .deb ready after {prepared:?}");

    let name = format!("lqagent-t{}", std::process::id());
    let m = Machine::boot(&root, &name, share, &logs.path().join("nspawn.log"));
    m.ok(NETWORK);
    m.ok("groupadd lqshow && useradd -M -G lqshow alice && useradd -M bob");

    // Install: the unit is enabled (the package does not start it: the config needs editing).
    m.ok(&format!("dpkg -i /mnt/lqagent/{deb_name}"));
    assert_eq!(m.ok("systemctl is-enabled lqagent").trim(), "enabled");
    assert_eq!(m.prop("ActiveState"), "inactive");
    m.ok(&format!(
        "cat > /etc/lqagent/lqagent.toml <<'EOF'\n{CONFIG}EOF\n\
         mkdir -p /etc/systemd/system/lqagent.service.d\n\
         printf '{}' > /etc/systemd/system/lqagent.service.d/test.conf\n\
         systemctl daemon-reload",
        DROP_IN.replace('\n', "\\n")
    ));

    // Start: Type=notify, so `systemctl start` returns once READY=1 came (or the start failed:
    // the SIGSYS crash-loop of show_group ended here).
    m.ok("timeout 150 systemctl start lqagent");
    let ready = Instant::now();
    let pid = m.prop("MainPID");
    assert_eq!(m.prop("ActiveState"), "active");
    assert_eq!(m.prop("SubState"), "running");
    assert_eq!(m.prop("NRestarts"), "0");
    let uid_line = m.ok(&format!("grep '^Uid:' /proc/{pid}/status"));
    let lqagent_uid = m.ok("id -u lqagent");
    assert!(
        uid_line.split_whitespace().nth(1) == Some(lqagent_uid.trim()),
        "runs as the lqagent user: {uid_line}"
    );

    // The control socket: root, a member of show_group (a supplementary group of alice's), not
    // bob; clear is root's only.
    let stats = m.ok("lqagent show stats");
    assert!(!stats.trim().is_empty(), "show stats printed nothing");
    let as_user = |u: &str, cmd: &str| {
        format!("setpriv --reuid={u} --regid={u} --init-groups -- lqagent {cmd}")
    };
    m.ok(&as_user("alice", "show stats"));
    m.ok(&as_user("alice", "show bindings"));
    let e = m.fails(&as_user("bob", "show stats"));
    assert!(e.contains("permission denied"), "{e}");
    let e = m.fails(&as_user("alice", "clear binding 2001:db8:100::/48"));
    assert!(e.contains("clear is for root"), "{e}");
    // Root's clear passes the check (there is nothing to clear: no server answers here).
    let e = m.fails("lqagent clear binding 2001:db8:100::/48");
    assert!(
        e.contains("no binding matched") && !e.contains("permission denied"),
        "{e}"
    );

    // /metrics answers and counted both refusals (bob's show, alice's clear).
    let metrics = m.ok(
        r#"bash -c 'exec 3<>/dev/tcp/127.0.0.1/9567; printf "GET /metrics HTTP/1.0\r\n\r\n" >&3; cat <&3'"#,
    );
    assert!(
        metrics.starts_with("HTTP/1.") && metrics.contains(" 200 "),
        "{metrics}"
    );
    assert!(
        metrics.contains("lqagent_control_events_total{event=\"refused\"} 2"),
        "{metrics}"
    );

    // Enforcement is on: the unknown subscriber's packets are dropped.
    m.ok("nft list table ip6 lqagent >/dev/null");
    assert!(
        !subscriber_reaches_box(&m),
        "enforcement on: an unknown source must be dropped"
    );

    // SIGHUP reload: a live key applied, same process.
    m.ok("sed -i 's/^reconcile_interval_secs = 60/reconcile_interval_secs = 30/' /etc/lqagent/lqagent.toml && systemctl reload lqagent");
    m.wait("reload applied", Duration::from_secs(30), || {
        let j = m.ok("journalctl --no-pager -o cat -u lqagent");
        j.lines()
            .any(|l| l.contains("routes.reconcile_interval_secs") && l.contains("applied"))
    });

    // Two watchdog periods since READY without a restart: WATCHDOG=1 keeps coming.
    let quiet = 2 * WATCHDOG + Duration::from_secs(1);
    if let Some(rest) = quiet.checked_sub(ready.elapsed()) {
        std::thread::sleep(rest);
    }
    assert_eq!(
        m.prop("MainPID"),
        pid,
        "no restart across two watchdog periods"
    );
    assert_eq!(m.prop("NRestarts"), "0");
    assert_eq!(m.prop("SubState"), "running");

    // A crash with enforcement on: the table goes with the agent (ExecStopPost), the subscriber
    // gets through in the gap, and the restart puts enforcement back.
    m.ok(&format!("kill -9 {pid}"));
    m.wait("unit waiting to restart", Duration::from_secs(20), || {
        m.prop("SubState") == "auto-restart"
    });
    let e = m.fails("nft list table ip6 lqagent");
    assert!(e.contains("No such file or directory"), "{e}");
    assert!(
        subscriber_reaches_box(&m),
        "no agent: the subscriber's traffic must flow"
    );
    assert_eq!(
        m.prop("SubState"),
        "auto-restart",
        "the restart came before the gap was observed (RestartSec of the drop-in too short?)"
    );
    m.wait("restarted and READY", Duration::from_secs(120), || {
        m.prop("NRestarts") == "1" && m.prop("SubState") == "running"
    });
    assert_ne!(m.prop("MainPID"), pid);
    m.ok("nft list table ip6 lqagent >/dev/null");
    assert!(
        !subscriber_reaches_box(&m),
        "enforcement restored by the restart"
    );
    m.ok(&as_user("alice", "show stats"));

    // A clean stop: no error line in the unit's journal from the stop on.
    let cursor = m.ok("journalctl -u lqagent -n 0 --show-cursor --no-pager");
    let cursor = cursor
        .lines()
        .find_map(|l| l.strip_prefix("-- cursor: "))
        .expect("a journal cursor")
        .to_string();
    m.ok("timeout 60 systemctl stop lqagent");
    assert_eq!(m.prop("ActiveState"), "inactive", "stopped, not failed");
    let stop_log = m.ok(&format!(
        "journalctl --no-pager -o cat -u lqagent --after-cursor='{cursor}'"
    ));
    assert!(
        stop_log.contains("shutting down"),
        "the stop is in the journal: {stop_log}"
    );
    assert!(
        !stop_log.to_lowercase().contains("error"),
        "the stop logged an error:\n{stop_log}"
    );
    // The spoof guard stays when the agent stops (src/snoop/guard.rs), the trigger's table not.
    m.ok("nft list table ip6 lqagent_guard >/dev/null");
    m.fails("nft list table ip6 lqagent");
    let errors = m.ok(&format!(
        "journalctl --no-pager -o cat -u lqagent -p err --after-cursor='{cursor}'"
    ));
    assert!(errors.trim().is_empty(), "error-priority lines: {errors}");

    // Purge: what the package made is gone; the system user stays (deploy/debian/postrm).
    m.ok("dpkg --purge lqagent");
    for gone in [
        "/usr/sbin/lqagent",
        "/etc/lqagent",
        "/var/lib/lqagent",
        "/lib/systemd/system/lqagent.service",
        "/etc/systemd/system/multi-user.target.wants/lqagent.service",
    ] {
        m.fails(&format!("test -e {gone}"));
    }
    m.ok("getent passwd lqagent >/dev/null");
    let e = m.fails("nft list table ip6 lqagent_guard");
    assert!(
        e.contains("No such file or directory"),
        "the guard goes with the package: {e}"
    );

    eprintln!(
        "systemd_unit: root and .deb ready after {prepared:?}; whole test {:?}",
        started.elapsed()
    );
}
