//! Logs fit their sink: the daemon run with its output going to pipes (as under systemd, where
//! the journal reads a pipe) writes no ANSI escape, in text and in JSON format; JSON lines stay
//! one parseable object each. The daemon is made to stop early (its metrics port is taken), after
//! it has logged its start-up line, so no root or namespace is needed.

use std::net::TcpListener;
use std::process::{Command, Stdio};

/// Run `lqagent run` with `format` and a metrics port that is already taken; returns stderr.
fn run_until_bind_fails(format: &str, no_color: Option<&str>) -> String {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lqagent.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {state:?}\n[metrics]\nlisten = \"{addr}\"\n[control]\nsocket = {sock:?}\n\
             [log]\nformat = \"{format}\"\nlevel = \"info\"\n\
             [[servers]]\naddress = \"2001:db8::547\"\n",
            state = dir.path().join("state"),
            addr = taken.local_addr().unwrap(),
            sock = dir.path().join("control.sock"),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lqagent"));
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "the metrics port was taken");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stdout.contains('\x1b'), "stdout: {stdout:?}");
    assert!(stderr.contains("lqagent starting"), "{stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "ANSI escape in a pipe: {stderr:?}"
    );
    stderr
}

#[test]
fn text_logs_to_a_pipe_carry_no_ansi_escapes() {
    let stderr = run_until_bind_fails("text", None);
    assert!(stderr.contains(" INFO "), "{stderr}");
}

#[test]
fn no_color_set_also_means_no_escapes() {
    run_until_bind_fails("text", Some("1"));
}

#[test]
fn json_logs_stay_one_object_per_line() {
    let stderr = run_until_bind_fails("json", None);
    let mut objects = 0;
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
        objects += 1;
    }
    assert!(objects >= 1, "{stderr}");
}
