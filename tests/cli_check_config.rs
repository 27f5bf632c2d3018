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
