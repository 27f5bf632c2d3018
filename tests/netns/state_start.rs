//! Issue 24, the state directory at start, with the built `lqagent run` in a real ISC lab (one
//! client, bulk and the trigger off, so bindings come back only from the state file):
//!
//! - a second `lqagent run` on the same state directory (its own control socket and metrics
//!   port) is refused by the directory's lock, and the first runs on;
//! - leases a configuration mistake makes admission refuse are kept aside, not erased: fixed,
//!   the next start has them again;
//! - a state file that cannot be read (a directory in its place: EISDIR, which root gets too)
//!   fails the start with a clear error, and nothing in the directory is moved, copied or
//!   rewritten — before, it was read as empty and a fresh snapshot written over the state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::agent::{client_routes, start_agent, write_config};
use support::isc::{Daemon, IscLab, Lifetimes, wait_for};
use support::netns::proto_routes;

const PROTO: &str = "221";

fn tables() -> String {
    format!(
        "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
         [routes]\nprotocol = {PROTO}\n\n[log]\nlevel = \"info\"\n"
    )
}

/// `show bindings --json` over `socket`: how many bindings the agent holds.
fn bindings(socket: &Path) -> usize {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lqagent"))
        .args(["show", "bindings", "--json", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "show bindings: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON bindings");
    v.as_array().map_or(0, Vec::len)
}

/// Start `lqagent run --config cfg` and wait for it to exit; its status and log.
fn run_to_exit(lab: &IscLab, cfg: &Path, log: &str) -> (std::process::ExitStatus, String) {
    let log = lab.dir().join(log);
    let mut d = Daemon::spawn(
        &lab.ac,
        "lqagent",
        &[
            env!("CARGO_BIN_EXE_lqagent"),
            "run",
            "--config",
            &cfg.to_string_lossy(),
        ],
        &log,
    );
    let status = d
        .wait_exit(Duration::from_secs(20))
        .expect("the agent to give up within 20 s");
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

fn names(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn stop(agent: &mut Daemon) {
    agent.signal("TERM");
    assert!(
        agent
            .wait_exit(Duration::from_secs(15))
            .is_some_and(|s| s.success()),
        "the agent stops cleanly"
    );
}

#[test]
fn the_state_directory_is_locked_refusals_kept_aside_and_unreadable_files_left_alone() {
    let test = "the_state_directory_is_locked_refusals_kept_aside_and_unreadable_files_left_alone";
    let Some(mut lab) = IscLab::without_clients(test, 1, Lifetimes::default()) else {
        return;
    };
    let cfg = write_config(&lab, &tables());
    let socket = lab.dir().join("control.sock");
    let state: PathBuf = lab.dir().join("state");
    let mut agent = start_agent(&lab, &cfg, "lqagent-a.log");
    lab.start_clients();
    let want = client_routes(&lab, 0);
    wait_for("the client's routes", Duration::from_secs(10), || {
        proto_routes(&lab.ac, PROTO) == want
    });
    assert_eq!(bindings(&socket), 2, "address and prefix");

    // A second agent on the same state directory, with its own socket and metrics port.
    let second = lab.dir().join("second.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &socket.display().to_string(),
        &lab.dir().join("second.sock").display().to_string(),
    ) + "\n[metrics]\nlisten = \"127.0.0.1:9568\"\n";
    std::fs::write(&second, text).unwrap();
    let (status, log) = run_to_exit(&lab, &second, "lqagent-second.log");
    assert!(!status.success(), "the second agent must not run:\n{log}");
    assert!(
        log.contains("in use by another lqagent"),
        "the refusal says why:\n{log}"
    );
    assert!(agent.running(), "the first runs on");
    assert_eq!(bindings(&socket), 2, "and still answers");

    // A mistake in the configuration: the link's prefixes no longer cover the client's leases.
    lab.clients[0].stop();
    stop(&mut agent);
    let good = std::fs::read_to_string(&cfg).unwrap();
    let c = &lab.clients[0];
    let typo = good
        .replace(&c.subnet, "2001:db8:eeee::/64")
        .replace(&c.pd_pool, "2001:db8:ee00::/40");
    assert_ne!(typo, good);
    std::fs::write(&cfg, &typo).unwrap();
    let mut agent = start_agent(&lab, &cfg, "lqagent-typo.log");
    assert_eq!(bindings(&socket), 0, "refused by admission");
    assert!(
        state.join("bindings.refused").exists(),
        "kept aside: {:?}",
        names(&state)
    );
    stop(&mut agent);
    // Fixed: the next start has them again, from the file alone (the client is stopped).
    std::fs::write(&cfg, &good).unwrap();
    let mut agent = start_agent(&lab, &cfg, "lqagent-fixed.log");
    assert_eq!(bindings(&socket), 2, "the refused leases are back");
    assert!(!state.join("bindings.refused").exists(), "none refused now");
    stop(&mut agent);

    // The snapshot cannot be read: a directory where the file should be.
    let snap = state.join("bindings.snap");
    std::fs::rename(&snap, state.join("saved.snap")).unwrap();
    std::fs::create_dir(&snap).unwrap();
    std::fs::write(snap.join("inside"), b"x").unwrap();
    let journal = std::fs::read(state.join("bindings.journal")).unwrap();
    let before = names(&state);
    let (status, log) = run_to_exit(&lab, &cfg, "lqagent-unreadable.log");
    assert!(
        !status.success(),
        "an unreadable state file fails the start:\n{log}"
    );
    assert!(
        log.contains("cannot be read") && log.contains("left untouched"),
        "the error says what and what was done:\n{log}"
    );
    assert_eq!(names(&state), before, "nothing moved, copied or written");
    assert!(snap.join("inside").exists());
    assert_eq!(
        std::fs::read(state.join("bindings.journal")).unwrap(),
        journal
    );
    // Readable again: the leases are there.
    std::fs::remove_dir_all(&snap).unwrap();
    std::fs::rename(state.join("saved.snap"), &snap).unwrap();
    let mut agent = start_agent(&lab, &cfg, "lqagent-readable.log");
    assert_eq!(bindings(&socket), 2, "nothing was lost");
    stop(&mut agent);
}
