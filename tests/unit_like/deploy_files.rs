//! The files in deploy/ agree with the code: the systemd unit asks for what the daemon needs
//! (notify, watchdog, the three capabilities, netlink and AF_PACKET allowed, the directories the
//! config defaults point into) and `systemd-analyze verify` accepts it; the lab scripts parse.

use std::process::Command;

const UNIT: &str = include_str!("../../deploy/systemd/lqagent.service");

fn directive(key: &str) -> Vec<&'static str> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn unit_matches_what_the_daemon_needs() {
    assert_eq!(directive("Type"), ["notify"]);
    assert!(!directive("WatchdogSec").is_empty());
    // Never give up restarting, start after the clock is set, and leave bulk recovery time.
    assert_eq!(directive("StartLimitIntervalSec"), ["0"]);
    assert!(directive("After")[0].contains("time-sync.target"));
    assert_eq!(directive("Restart"), ["on-failure"]);
    // READY comes once the state is loaded and the kernel reconciled (recovery runs on after
    // it): a start timeout in minutes, not one sized for bulk recovery.
    let start = directive("TimeoutStartSec")[0].parse::<u64>().unwrap();
    assert!((60..=300).contains(&start), "TimeoutStartSec={start}");
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let caps: Vec<&str> = directive(key)[0].split_whitespace().collect();
        assert_eq!(
            caps,
            ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"],
            "{key}"
        );
    }
    let families = directive("RestrictAddressFamilies")[0];
    for f in ["AF_NETLINK", "AF_PACKET", "AF_UNIX", "AF_INET6"] {
        assert!(families.contains(f), "RestrictAddressFamilies lacks {f}");
    }
    assert!(
        directive("PrivateNetwork").is_empty(),
        "must see the host's interfaces"
    );
    // The config defaults live in the directories systemd makes for us.
    assert_eq!(directive("StateDirectory"), ["lqagent"]);
    assert_eq!(directive("RuntimeDirectory"), ["lqagent"]);
    assert_eq!(lqagent::config::DEFAULT_STATE_DIR, "/var/lib/lqagent");
    assert!(lqagent::config::DEFAULT_CONTROL_SOCKET.starts_with("/run/lqagent/"));
    assert!(directive("ExecStart")[0].contains(lqagent::config::DEFAULT_CONFIG_PATH));
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var("CI").map(|v| v != "true").unwrap_or(true),
            "systemd-analyze missing under CI=true: tests/run.sh installs the systemd package"
        );
        eprintln!("SKIP systemd_analyze_verifies_the_unit: no systemd-analyze on this machine");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lqagent.service");
    // Point ExecStart at the binary under test: verify checks that it exists.
    std::fs::write(
        &path,
        UNIT.replace("/usr/sbin/lqagent", env!("CARGO_BIN_EXE_lqagent")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("lqagent.service:"),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn lab_scripts_parse() {
    for script in ["deploy/lab/up.sh", "deploy/lab/down.sh"] {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + script;
        let out = Command::new("bash").args(["-n", &path]).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
