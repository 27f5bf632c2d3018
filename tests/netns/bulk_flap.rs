//! Issue 24: a flapping subscriber link must not pile up bulk leasequery connections.
//!
//! `lqagent run` (the built binary) in the access concentrator of a real ISC lab with two bound
//! clients. Besides dhcpd (which has no bulk leasequery: its TCP port refuses) a second
//! configured server, `mute`, is a plain TCP listener in the server namespace that accepts every
//! connection and never answers — a server that is up but stuck. The agent's start-up recovery
//! holds one connection to it; then the subscriber link `sub1` is flapped 40 times (down, up,
//! 0.1 s apart, as the issue measured). Before the fix every link-up started a new recovery
//! (41 connections, +40 open files after 8 s); now a link has one recovery job at a time, a
//! link-up is debounced, and a link going down cancels its job. Bound stated here: at most
//! [`MAX_MUTE_CONNECTIONS`] established connections to `mute` (start-up's one and one for the
//! flapped link) and at most [`MAX_EXTRA_FDS`] more open files than before the flaps, sampled
//! after every flap and after they settle. Then a single down cancels the link's job (its
//! connection goes), and through it all the agent answers `show stats` on its control socket and
//! `/metrics`, and the unflapped client's routes stay exactly as they were.

use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::agent::{client_routes, start_agent, write_config};
use support::isc::{IscLab, Lifetimes, wait_for};
use support::netns::proto_routes;
use support::scrape::scrape_in;

const PROTO: &str = "219";
const MUTE: &str = "2001:db8::3";
/// Start-up recovery's connection plus one for the one flapped link.
const MAX_MUTE_CONNECTIONS: usize = 2;
/// Those two sockets and slack for a transient one (a control-socket or scrape connection).
const MAX_EXTRA_FDS: usize = 4;

/// A listener that accepts and never answers; dropped: it stops and closes everything.
struct MuteServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MuteServer {
    fn start(lab: &IscLab) -> MuteServer {
        lab.server.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{MUTE}/64"),
            "dev",
            "s0",
            "nodad",
        ]);
        let listener = lab.server.run_in(|| {
            let l = TcpListener::bind(SocketAddr::from((MUTE.parse::<Ipv6Addr>().unwrap(), 547)))
                .expect("bind the mute server");
            l.set_nonblocking(true).unwrap();
            l
        });
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        MuteServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for MuteServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Established TCP connections from the access concentrator to the mute server.
fn mute_connections(lab: &IscLab) -> usize {
    let out = lab.ac.exec(&["ss", "-Htn", "state", "established"]);
    let peer = format!("[{MUTE}]:547");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some(peer.as_str()))
        .count()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `lqagent show stats` over the control socket; panics unless it answers within 5 s.
fn show_stats(lab: &IscLab) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lqagent"))
        .args(["show", "stats", "--socket"])
        .arg(lab.dir().join("control.sock"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("show stats got no answer in 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "show stats: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn link(lab: &IscLab, dev: &str, state: &str) {
    lab.ac.exec(&["ip", "link", "set", dev, state]);
}

#[test]
fn a_flapping_link_keeps_one_bulk_job_and_bounded_connections() {
    let test = "a_flapping_link_keeps_one_bulk_job_and_bounded_connections";
    let Some(mut lab) = IscLab::without_clients(test, 2, Lifetimes::default()) else {
        return;
    };
    let mute = MuteServer::start(&lab);
    let cfg = write_config(
        &lab,
        &format!(
            "[[servers]]\nname = \"mute\"\naddress = \"{MUTE}\"\n\n\
             [bulk]\nattempts = 1000\n\n[trigger]\nenabled = false\n\n\
             [routes]\nprotocol = {PROTO}\n\n[log]\nlevel = \"info\"\n"
        ),
    );
    let mut agent = start_agent(&lab, &cfg, "lqagent-flap.log");
    let pid = agent.pid();
    lab.start_clients();
    let want0 = client_routes(&lab, 0);
    let want1 = client_routes(&lab, 1);
    wait_for("both clients' routes", Duration::from_secs(10), || {
        let r = proto_routes(&lab.ac, PROTO);
        want0.is_subset(&r) && want1.is_subset(&r)
    });
    wait_for(
        "start-up recovery's connection to the mute server",
        Duration::from_secs(10),
        || mute_connections(&lab) == 1,
    );
    let fds_before = open_fds(pid);

    let (mut max_conns, mut max_fds) = (0, 0);
    for _ in 0..40 {
        link(&lab, "sub1", "down");
        std::thread::sleep(Duration::from_millis(100));
        link(&lab, "sub1", "up");
        std::thread::sleep(Duration::from_millis(100));
        max_conns = max_conns.max(mute_connections(&lab));
        max_fds = max_fds.max(open_fds(pid));
        assert!(agent.running(), "the agent died during the flaps");
    }
    // After the last up (debounced), the link's one job connects.
    wait_for(
        "the flapped link's bulk query to connect",
        Duration::from_secs(10),
        || mute_connections(&lab) >= 2,
    );
    max_conns = max_conns.max(mute_connections(&lab));
    max_fds = max_fds.max(open_fds(pid));
    eprintln!(
        "after 40 flaps: max connections to the mute server {max_conns}, open files {fds_before} -> max {max_fds}"
    );
    assert!(
        max_conns <= MAX_MUTE_CONNECTIONS,
        "{max_conns} connections to a server that never answers (bound {MAX_MUTE_CONNECTIONS})"
    );
    assert!(
        max_fds <= fds_before + MAX_EXTRA_FDS,
        "open files grew from {fds_before} to {max_fds} (bound +{MAX_EXTRA_FDS})"
    );
    let m = scrape_in(&lab.ac);
    assert_eq!(
        m.value("lqagent_bulk_connections", &[]),
        Some(2.0),
        "the gauge counts start-up's and the link's connection"
    );

    // The link goes down: its job no longer matters and is cancelled, its connection closed;
    // start-up recovery's stays.
    link(&lab, "sub1", "down");
    wait_for(
        "the cancelled job's connection to close",
        Duration::from_secs(10),
        || mute_connections(&lab) == 1,
    );
    link(&lab, "sub1", "up");
    wait_for(
        "a new job after the link came back",
        Duration::from_secs(10),
        || mute_connections(&lab) == 2,
    );

    // Responsive throughout: the control socket and /metrics answer, and the routes of the
    // client whose link never flapped are exactly as before.
    let stats = show_stats(&lab);
    assert!(!stats.is_empty(), "show stats answered nothing");
    let m = scrape_in(&lab.ac);
    assert!(
        m.value_or_zero("lqagent_bulk_events_total", &[("event", "connects")]) >= 3.0,
        "start-up's, the flapped link's and the one after the last up"
    );
    let r = proto_routes(&lab.ac, PROTO);
    assert!(want0.is_subset(&r), "client 0's routes intact: {r:?}");
    assert!(agent.running());
    drop(mute);
}
