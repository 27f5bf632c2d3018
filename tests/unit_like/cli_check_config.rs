//! `lqagent check-config` as an operator runs it: the sample passes and prints the effective
//! config; a broken file fails with a non-zero exit and a message naming the key.

use std::process::Command;

fn lqagent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lqagent"))
}

#[test]
fn sample_config_checks_and_prints_effective_config() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/lqagent.toml");
    let out = lqagent()
        .args(["check-config", "--config", sample])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("address = \"2001:db8:0:547::a\""),
        "{stdout}"
    );
    assert!(stdout.contains("[[links]]"), "{stdout}");
    assert!(stdout.contains("negative_ttl_secs = 30"), "{stdout}");
}

#[test]
fn broken_config_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[servers]]\naddress = \"2001:db8::1\"\n[[servers]]\naddress = \"not-an-address\"\n",
    )
    .unwrap();
    let out = lqagent()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("servers[1].address: not an IPv6 address"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing printed on error");
}

/// `check-config` on `body` (plus a valid server unless `body` has one): exit 1 and the stderr
/// message, which must name `key` and contain `reason`.
fn refused(body: &str, key: &str, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lqagent.toml");
    let state = dir.path().join("state");
    let mut text = format!("state_dir = {state:?}\n{body}\n");
    if !body.contains("[[servers]]") {
        text.push_str("[[servers]]\naddress = \"2001:db8::547\"\n");
    }
    std::fs::write(&path, text).unwrap();
    let out = lqagent()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{body}: {stderr}");
    assert!(stderr.contains(&format!("{key}: ")), "{key}: {stderr}");
    assert!(stderr.contains(reason), "{reason}: {stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn route_protocol_of_another_daemon_is_refused() {
    refused(
        "[routes]\nprotocol = 12",
        "routes.protocol",
        "\"bird\"'s route protocol",
    );
    refused("[routes]\nprotocol = 186", "routes.protocol", "bgp (FRR)");
    refused("[routes]\nprotocol = 18", "routes.protocol", "keepalived");
}

#[test]
fn route_protocol_named_in_the_hosts_rt_protos_is_refused() {
    // The host's own file (iproute2 installs it): a number it names and we do not know.
    let Ok(text) = std::fs::read_to_string("/etc/iproute2/rt_protos") else {
        assert!(
            std::env::var("CI").is_err(),
            "iproute2 is in tests/run.sh PKGS"
        );
        return;
    };
    // A drop-in made for this test, removed after: the path check-config must read.
    let dropin = std::path::Path::new("/etc/iproute2/rt_protos.d/lqagent-test-h16.conf");
    assert!(!text.contains("\n233"), "233 unused on this host");
    if std::fs::write(dropin, "233 testdaemon\n").is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "root writes /etc/iproute2 in CI"
        );
        return;
    }
    struct Rm<'a>(&'a std::path::Path);
    impl Drop for Rm<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _rm = Rm(dropin);
    refused(
        "[routes]\nprotocol = 233",
        "routes.protocol",
        "\"testdaemon\" in /etc/iproute2/rt_protos.d/lqagent-test-h16.conf",
    );
}

#[test]
fn multicast_or_link_local_server_is_refused() {
    refused(
        "[[servers]]\naddress = \"ff05::1:3\"",
        "servers[0].address",
        "multicast address never works",
    );
    refused(
        "[[servers]]\naddress = \"2001:db8::1\"\n[[servers]]\naddress = \"fe80::1\"",
        "servers[1].address",
        "link-local",
    );
}

#[test]
fn overlapping_subscriber_prefixes_between_links_are_refused() {
    let links = "[[links]]\nname = \"a\"\ninterface = \"a0\"\nlink_address = \"2001:db8:1::1\"\n\
                 subscriber_prefixes = [\"2001:db8:100::/48\"]\n\
                 [[links]]\nname = \"b\"\ninterface = \"b0\"\nlink_address = \"2001:db8:2::1\"\n\
                 subscriber_prefixes = [\"2001:db8:f000::/40\", \"2001:db8:100:ff00::/56\"]\n";
    refused(
        links,
        "links[1].subscriber_prefixes[1]",
        "2001:db8:100:ff00::/56 overlaps 2001:db8:100::/48 of links[0].subscriber_prefixes[0]",
    );
}

#[test]
fn unwritable_state_dir_is_refused() {
    // A regular file where a directory is needed: unwritable for root too.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let path = dir.path().join("lqagent.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = {:?}\n[[servers]]\naddress = \"2001:db8::547\"\n",
            file.join("state")
        ),
    )
    .unwrap();
    let out = lqagent()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("state_dir: ") && stderr.contains("is not a directory"),
        "{stderr}"
    );
    // The library's parse() does not look at the filesystem: the same text parses.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(lqagent::config::Config::parse(&text).is_ok());
}

/// The unit's `ExecStartPre`, run as systemd runs it (the binary under test, the sample file in
/// place of /etc's): a good file leaves nothing on stdout — the journal — and a broken one still
/// refuses the start with the key named on stderr.
#[test]
fn unit_pre_check_is_quiet_on_success_and_still_names_the_key() {
    let unit = include_str!("../../deploy/systemd/lqagent.service");
    let pre = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("the unit has ExecStartPre");
    let mut words = pre.split_whitespace();
    assert_eq!(words.next(), Some("/usr/sbin/lqagent"), "{pre}");
    let args: Vec<&str> = words.collect();
    assert_eq!(args.first(), Some(&"check-config"), "{pre}");
    let run = |config: &std::path::Path| {
        let args = args.iter().map(|a| {
            if *a == lqagent::config::DEFAULT_CONFIG_PATH {
                config.as_os_str()
            } else {
                std::ffi::OsStr::new(a)
            }
        });
        lqagent().args(args).output().unwrap()
    };

    let sample = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/lqagent.toml"));
    let out = run(sample);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "the pre-check printed on success: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("lqagent.toml");
    std::fs::write(&bad, "[[servers]]\naddress = \"not-an-address\"\n").unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("servers[0].address: not an IPv6 address"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
