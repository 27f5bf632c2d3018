//! The control socket end to end: a fake responder standing in for the daemon, the real server
//! on a Unix socket in a temp dir, the blocking client, and the `lqagent show|clear` CLI.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lqagent::control::ControlEvent;
use lqagent::control::access::Access;
use lqagent::control::client::Client;
use lqagent::control::server::{
    ControlSocket, MAX_CLIENTS, MAX_LINE, MAX_PER_UID, READ_TIMEOUT, RESERVED_CLIENTS,
    WRITE_TIMEOUT,
};
use lqagent::control::{
    BindingFilter, BindingView, ControlError, ControlStats, Reply, Request, Responder, Response,
    ServerView, StatsView,
};
use lqagent::prefix::Ipv6Prefix;

/// Stands in for the daemon: a list of bindings; clear removes what the target covers.
struct Fake {
    bindings: Mutex<Vec<BindingView>>,
}

impl Responder for Fake {
    async fn handle(&self, request: Request) -> Reply {
        // Bindings are streamed, as the daemon does.
        if let Request::ShowBindings(f) = &request {
            let selected: Vec<BindingView> = {
                let b = self.bindings.lock().unwrap();
                b.iter().filter(|v| f.matches(v)).cloned().collect()
            };
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                for v in selected {
                    let _ = tx.send(v).await;
                }
            });
            return Reply::Bindings(rx);
        }
        self.answer(request).into()
    }
}

impl Fake {
    fn answer(&self, request: Request) -> Response {
        let mut b = self.bindings.lock().unwrap();
        let mut clear = |f: BindingFilter| {
            let (gone, kept): (Vec<_>, Vec<_>) = b.drain(..).partition(|v| f.matches(v));
            *b = kept;
            Response::Cleared {
                removed: gone.into_iter().map(|v| v.network).collect(),
            }
        };
        match request {
            Request::ShowBindings(f) => Response::Bindings {
                bindings: b.iter().filter(|v| f.matches(v)).cloned().collect(),
            },
            Request::ShowStats => Response::Stats {
                stats: StatsView::from_exposition(
                    42,
                    &format!(
                        "# TYPE lqagent_bindings gauge\nlqagent_bindings{{type=\"address\",link=\"cable1\"}} {}\n# EOF\n",
                        b.len()
                    ),
                ),
            },
            Request::ShowServers => Response::Servers {
                servers: vec![ServerView {
                    name: "dhcp-a".into(),
                    address: "2001:db8::547".parse().unwrap(),
                    up: false,
                    last_answer_unix: Some(1),
                    last_success_unix: None,
                    last_rtt_ms: Some(2.5),
                    consecutive_failures: 3,
                    failures: 4,
                    exchanges: 9,
                    bulk: "gave_up".into(),
                    bulk_at_unix: Some(1),
                }],
            },
            Request::ClearBindings(f) => clear(f),
            Request::ClearBinding { target } => clear(BindingFilter {
                within: Some(target),
                ..BindingFilter::default()
            }),
        }
    }
}

fn binding(network: &str, ia: &str, link: &str, next_hop: Option<&str>) -> BindingView {
    let client = if link == "cable2" { "0b" } else { "0a" };
    BindingView {
        network: network.parse().unwrap(),
        ia_type: ia.to_string(),
        link: Some(link.to_string()),
        interface: Some(format!("{link}-if")),
        client_duid: format!("000300010200000000{client}"),
        iaid: 1,
        next_hop: next_hop.map(|a| a.parse().unwrap()),
        preferred_secs: 1800,
        valid_secs: 3600,
        source: "snoop".to_string(),
        route: "installed".to_string(),
        access_port: None,
    }
}

struct Running {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stats: Arc<ControlStats>,
    _rt: tokio::runtime::Runtime,
}

fn start() -> Running {
    start_with(None)
}

/// The fake daemon behind a socket with `access` (default: this process's policy).
fn start_with(access: Option<Access>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let fake = Arc::new(Fake {
        bindings: Mutex::new(vec![
            binding("2001:db8:100::1a/128", "na", "cable1", None),
            binding("2001:db8:f100:100::/56", "pd", "cable1", Some("fe80::1a")),
            binding("2001:db8:200::2b/128", "na", "cable2", None),
            binding("2001:db8:100:100::/56", "pd", "cable1", Some("fe80::1b")),
        ]),
    });
    let stats = Arc::new(ControlStats::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sock = rt
        .block_on(async {
            match access {
                Some(a) => ControlSocket::bind_with(&path, a),
                None => ControlSocket::bind(&path),
            }
        })
        .unwrap();
    rt.spawn(sock.serve(fake, stats.clone(), std::future::pending()));
    Running {
        _dir: dir,
        path,
        stats,
        _rt: rt,
    }
}

fn cli(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lqagent"))
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap()
}

#[test]
fn client_shows_filters_and_clears() {
    let r = start();
    let mut c = Client::connect(&r.path).unwrap();
    let Response::Bindings { bindings } = c.request(&Request::show_all()).unwrap() else {
        panic!("not bindings")
    };
    assert_eq!(bindings.len(), 4);
    let Response::Bindings { bindings } = c
        .request(&Request::ShowBindings(BindingFilter {
            link: Some("cable2".into()),
            ..BindingFilter::default()
        }))
        .unwrap()
    else {
        panic!("not bindings")
    };
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].network.to_string(), "2001:db8:200::2b/128");

    let target: Ipv6Prefix = "2001:db8:f100:100::/56".parse().unwrap();
    let resp = c.request(&Request::ClearBinding { target }).unwrap();
    assert_eq!(
        resp,
        Response::Cleared {
            removed: vec![target]
        }
    );
    let Response::Stats { stats } = c.request(&Request::ShowStats).unwrap() else {
        panic!("not stats")
    };
    assert_eq!(stats.uptime_secs, 42);
    assert_eq!(stats.stats[0].value, 3.0, "three bindings left");
    assert_eq!(r.stats.get(ControlEvent::Request), 4);
}

#[test]
fn cli_prints_tables_json_and_clears() {
    let r = start();
    let out = cli(&r.path, &["show", "bindings"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("NETWORK") && header.contains("NEXT-HOP"),
        "{text}"
    );
    assert!(text.contains("2001:db8:f100:100::/56  pd"), "{text}");
    assert!(text.contains("fe80::1a"), "{text}");
    assert!(text.contains("4 binding(s)"), "{text}");

    let out = cli(&r.path, &["show", "bindings", "--link", "cable2", "--json"]);
    assert!(out.status.success());
    let parsed: Vec<BindingView> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].link.as_deref(), Some("cable2"));

    let out = cli(&r.path, &["show", "stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("uptime 42s"), "{text}");
    assert!(
        text.contains("lqagent_bindings{type=\"address\",link=\"cable1\"}  4"),
        "{text}"
    );

    let out = cli(&r.path, &["clear", "binding", "2001:db8:100::1a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cleared 2001:db8:100::1a/128\n1 binding(s) cleared\n"
    );
    let out = cli(&r.path, &["clear", "binding", "2001:db8:100::1a"]);
    assert!(!out.status.success(), "clearing twice fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no binding matched"));

    let out = cli(&r.path, &["clear", "binding", "not-an-address"]);
    assert!(!out.status.success());
}

#[test]
fn cli_filters_by_duid_interface_and_prefix() {
    let r = start();
    let networks = |args: &[&str]| -> Vec<String> {
        let out = cli(&r.path, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Vec<BindingView> = serde_json::from_slice(&out.stdout).unwrap();
        v.iter().map(|b| b.network.to_string()).collect()
    };
    assert_eq!(
        networks(&[
            "show",
            "bindings",
            "--json",
            "--client-duid",
            "00:03:00:01:02:00:00:00:00:0B"
        ]),
        ["2001:db8:200::2b/128"]
    );
    assert_eq!(
        networks(&["show", "bindings", "--json", "--interface", "cable1-if"]).len(),
        3
    );
    assert_eq!(
        networks(&[
            "show",
            "bindings",
            "--json",
            "--within",
            "2001:db8:100::/48"
        ]),
        ["2001:db8:100::1a/128", "2001:db8:100:100::/56"]
    );
    let out = cli(&r.path, &["show", "bindings", "--client-duid", "zz"]);
    assert!(!out.status.success(), "a bad DUID is refused before asking");

    // A /48 clear removes the /56 and the /128 it covers, says how many, and nothing else.
    let out = cli(&r.path, &["clear", "binding", "2001:db8:100::/48"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("cleared 2001:db8:100:100::/56"), "{text}");
    assert!(text.contains("cleared 2001:db8:100::1a/128"), "{text}");
    assert!(text.ends_with("2 binding(s) cleared\n"), "{text}");
    assert_eq!(networks(&["show", "bindings", "--json"]).len(), 2);

    // Clear by link; an empty clear is refused by the CLI.
    let out = cli(
        &r.path,
        &["clear", "bindings", "--link", "cable2", "--json"],
    );
    let resp: Response = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        resp,
        Response::Cleared {
            removed: vec!["2001:db8:200::2b/128".parse().unwrap()]
        }
    );
    let out = cli(&r.path, &["clear", "binding"]);
    assert!(!out.status.success());
    assert_eq!(networks(&["show", "bindings", "--json"]).len(), 1);
}

#[test]
fn cli_shows_servers() {
    let r = start();
    let out = cli(&r.path, &["show", "servers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = text.lines().next().unwrap();
    for col in [
        "SERVER",
        "STATE",
        "LAST-ANSWER",
        "LAST-SUCCESS",
        "RTT",
        "BULK",
    ] {
        assert!(header.contains(col), "{text}");
    }
    let row = text.lines().nth(1).unwrap();
    assert!(row.starts_with("dhcp-a"), "{text}");
    assert!(
        row.contains("down") && row.contains("never") && row.contains("2.5ms"),
        "{row}"
    );
    assert!(row.contains("3/4") && row.contains("gave_up"), "{row}");
    let out = cli(&r.path, &["show", "servers", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "dhcp-a");
    assert_eq!(v[0]["up"], false);
    assert_eq!(v[0]["last_success_unix"], serde_json::Value::Null);
}

/// `lqagent ARGS --socket SOCKET` as uid/gid 65534 (`nobody`/`nogroup`), no supplementary groups.
fn cli_as_nobody(socket: &Path, args: &[&str]) -> std::process::Output {
    cli_as(socket, 65534, None, args)
}

/// `lqagent ARGS --socket SOCKET` as uid 65534, primary group `gid`, supplementary `groups`.
fn cli_as(socket: &Path, gid: u32, groups: Option<&str>, args: &[&str]) -> std::process::Output {
    let groups = groups.map_or("--clear-groups".to_string(), |g| format!("--groups={g}"));
    Command::new("setpriv")
        .args(["--reuid=65534", &format!("--regid={gid}"), &groups, "--"])
        .arg(env!("CARGO_BIN_EXE_lqagent"))
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("setpriv (util-linux)")
}

#[test]
fn unprivileged_peer_may_show_with_the_group_but_never_clear() {
    if !support::netns::require_root("unprivileged_peer_may_show_with_the_group_but_never_clear") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let r = start_with(Some(Access {
        service_uid: 0,
        show_gid: Some(65534),
    }));
    // Let nobody reach the socket file; with a show group the socket is 0666 and the peer
    // check is the gate (the daemon cannot chown under the packaged unit's seccomp filter).
    let dir = r.path.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let meta = std::fs::metadata(&r.path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);

    let out = cli_as_nobody(&r.path, &["show", "bindings", "--json"]);
    assert!(
        out.status.success(),
        "the show group may show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Vec<BindingView> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown.len(), 4);
    // A member through a supplementary group (what `usermod -aG` makes): read from the socket
    // (SO_PEERGROUPS), not from /proc, which the packaged unit hides.
    let out = cli_as(&r.path, 1234, Some("4,65534"), &["show", "stats"]);
    assert!(
        out.status.success(),
        "a supplementary member may show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A non-member reaches the 0666 file and is refused at once.
    let out = cli_as(&r.path, 1234, Some("4"), &["show", "stats"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a non-member must not show");
    assert!(
        stderr.contains("permission denied: show is for root"),
        "{stderr}"
    );
    assert_eq!(r.stats.get(ControlEvent::Refused), 1);

    let out = cli_as_nobody(&r.path, &["clear", "binding", "2001:db8:100::/48"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody must not clear");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert_eq!(r.stats.get(ControlEvent::Refused), 2);
    // Nothing was removed: root still sees every binding, and root may clear.
    let out = cli(&r.path, &["show", "bindings", "--json"]);
    let v: Vec<BindingView> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.len(), 4);
    let out = cli(&r.path, &["clear", "binding", "2001:db8:100::/48"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unprivileged_peer_outside_the_group_may_not_even_show() {
    if !support::netns::require_root("unprivileged_peer_outside_the_group_may_not_even_show") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // No show group: the file stays root's group, so open the file to test the peer check
    // itself (a deployment keeps it 0660).
    let r = start_with(Some(Access {
        service_uid: 0,
        show_gid: None,
    }));
    std::fs::set_permissions(
        r.path.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&r.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = cli_as_nobody(&r.path, &["show", "stats"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("permission denied: show is for root"),
        "{stderr}"
    );
}

#[test]
fn cli_without_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&dir.path().join("none.sock"), &["show", "stats"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is lqagent running?"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn raw(path: &Path) -> (BufReader<UnixStream>, UnixStream) {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (BufReader::new(s.try_clone().unwrap()), s)
}

#[test]
fn hostile_input_gets_errors_not_crashes() {
    let r = start();
    let (mut rd, mut wr) = raw(&r.path);
    let mut answer = String::new();
    wr.write_all(b"{\"command\":\"reboot\"}\n").unwrap();
    rd.read_line(&mut answer).unwrap();
    let resp: Response = serde_json::from_str(&answer).unwrap();
    assert!(
        matches!(resp, Response::Error { ref message } if message.contains("bad request")),
        "{answer}"
    );
    // The connection stays usable after a bad request.
    answer.clear();
    wr.write_all(b"{\"command\":\"show_stats\"}\n").unwrap();
    rd.read_line(&mut answer).unwrap();
    assert!(answer.starts_with("{\"status\":\"stats\""), "{answer}");

    // A line over the limit: an error, then the server closes.
    let (mut rd, mut wr) = raw(&r.path);
    let big = vec![b'x'; MAX_LINE + 10];
    let _ = wr.write_all(&big);
    answer.clear();
    rd.read_line(&mut answer).unwrap();
    assert!(answer.contains("longer than"), "{answer}");
    answer.clear();
    support::closed::assert_closed(rd.read_line(&mut answer), "closed after oversize");
    assert_eq!(r.stats.get(ControlEvent::BadRequest), 1);
    assert_eq!(r.stats.get(ControlEvent::Oversized), 1);
}

/// A connection the server has surely taken: it asked once and got its answer; from then on
/// it says nothing.
fn silent_after_one_answer(path: &Path) -> (BufReader<UnixStream>, UnixStream) {
    let (mut rd, mut wr) = raw(path);
    wr.write_all(b"{\"command\":\"show_stats\"}\n").unwrap();
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    assert!(line.starts_with("{\"status\":\"stats\""), "{line}");
    (rd, wr)
}

/// A peer that asks and asks and never reads: its requests go out (non-blocking, until its
/// own buffer is full) and the server's answers pile up until the server blocks writing.
fn never_reading(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_nonblocking(true).unwrap();
    let req = b"{\"command\":\"show_bindings\"}\n";
    let mut sent = 0usize;
    // Bounded: 16 MiB of requests at most; the buffers fill long before.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sent < 16 << 20 && std::time::Instant::now() < deadline {
        match (&s).write(req) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Full both ways once the server has stopped reading too.
                std::thread::sleep(Duration::from_millis(20));
                match (&s).write(req) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    s
}

/// Wait (bounded) until the server closes `rd`: end of stream or a reset, after any data.
fn wait_closed(rd: &mut impl std::io::Read, what: &str, within: Duration) {
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match rd.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(t0.elapsed() < within, "{what}: still open after {within:?}");
    }
}

#[test]
fn root_is_served_when_every_slot_is_held_by_stalled_peers() {
    // This process is root or the service user (the socket's policy is this process's), so a
    // privileged peer: the oldest stalled connection makes room for it.
    let r = start();
    let mut silent: Vec<_> = (0..MAX_CLIENTS - 4)
        .map(|_| silent_after_one_answer(&r.path))
        .collect();
    let deaf: Vec<_> = (0..4).map(|_| never_reading(&r.path)).collect();
    // 16 held: 12 silent, 4 blocked writing to peers that do not read.
    let out = cli(&r.path, &["show", "stats"]);
    assert!(
        out.status.success(),
        "show stats with every slot held: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&r.path, &["clear", "binding", "2001:db8:200::/48"]);
    assert!(
        out.status.success(),
        "clear with every slot held: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(r.stats.get(ControlEvent::Evicted) >= 1);
    assert_eq!(r.stats.get(ControlEvent::RejectedConnection), 0);
    // The oldest silent connection was the one closed for the first.
    let (rd, _) = &mut silent[0];
    rd.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    support::closed::assert_closed(rd.read_line(&mut line), "the oldest stalled connection");
    drop(deaf);
}

#[test]
fn a_silent_peer_and_a_peer_that_stops_reading_are_closed_and_counted() {
    let r = start();
    let (mut rd, _wr) = raw(&r.path);
    rd.get_ref()
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let deaf = never_reading(&r.path);
    wait_closed(
        &mut rd,
        "a peer that says nothing",
        READ_TIMEOUT + Duration::from_secs(20),
    );
    assert_eq!(r.stats.get(ControlEvent::ReadTimeout), 1);
    support::wait::wait_for(
        "the write deadline of the peer that does not read",
        WRITE_TIMEOUT + Duration::from_secs(20),
        || r.stats.get(ControlEvent::WriteTimeout) == 1,
    );
    // Its answers so far can still be read, then the end.
    deaf.set_nonblocking(false).unwrap();
    deaf.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    wait_closed(
        &mut &deaf,
        "a peer that does not read",
        Duration::from_secs(20),
    );
    assert_eq!(r.stats.get(ControlEvent::ReadTimeout), 1);
}

/// Connect to `path` as uid `uid` (and back): the credentials are per thread in Linux, so a
/// thread of this (root) process can take another uid for its `connect`, which is what
/// `SO_PEERCRED` reports.
#[allow(unsafe_code)]
fn connect_as(path: &Path, uid: u32) -> UnixStream {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: raw setresuid changes only this thread's credentials (glibc's wrapper would
        // change every thread's); the saved uid stays 0 so nothing else is lost for good, and
        // the thread ends right after.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, 0) };
        assert_eq!(rc, 0, "setresuid");
        let s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    })
    .join()
    .unwrap()
}

/// Whether the server serves `s` (an answer comes) or closed it at once.
fn served(s: &UnixStream) -> bool {
    let mut w = s;
    if w.write_all(b"{\"command\":\"show_stats\"}\n").is_err() {
        return false;
    }
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(0) => false,
        // An error answer (a refusal) is not being served.
        Ok(_) => line.starts_with("{\"status\"") && !line.starts_with("{\"status\":\"error\""),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
        Err(e) => panic!("neither an answer nor a close: {e}"),
    }
}

#[test]
fn a_lesser_uid_holds_a_bounded_share_and_never_the_reserved_slots() {
    if !support::netns::require_root(
        "a_lesser_uid_holds_a_bounded_share_and_never_the_reserved_slots",
    ) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // The show group is gid 0, the group these test threads keep after `setresuid`: so every
    // lesser uid below is a member and may connect and `show` (a non-member is closed at its
    // first request, which is another test's).
    let r = start_with(Some(Access {
        service_uid: 0,
        show_gid: Some(0),
    }));
    std::fs::set_permissions(
        r.path.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&r.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    // uid 65534 takes its share; one more is closed at once and counted.
    let mine: Vec<_> = (0..MAX_PER_UID)
        .map(|_| connect_as(&r.path, 65534))
        .collect();
    assert!(mine.iter().all(served), "its share is served");
    let over = connect_as(&r.path, 65534);
    assert!(!served(&over), "one over its share is closed");
    assert_eq!(r.stats.get(ControlEvent::UidLimit), 1);
    // Other lesser uids fill what lesser peers may take ...
    let lesser_slots = MAX_CLIENTS - RESERVED_CLIENTS;
    let others: Vec<_> = (0..lesser_slots - MAX_PER_UID)
        .map(|i| connect_as(&r.path, 60000 + (i / MAX_PER_UID) as u32))
        .collect();
    assert!(others.iter().all(served));
    let late = connect_as(&r.path, 61000);
    assert!(!served(&late), "no lesser peer in the reserved slots");
    assert_eq!(r.stats.get(ControlEvent::RejectedConnection), 1);
    // ... and root still gets in, through a reserved slot, nobody closed for it.
    let out = cli(&r.path, &["show", "stats"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r.stats.get(ControlEvent::Evicted), 0);
    assert!(
        mine.iter().chain(&others).all(served),
        "the lesser peers stay served"
    );
}

#[test]
fn bind_replaces_stale_socket_but_not_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    // A socket file left by a crashed daemon.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sock = rt.block_on(async { ControlSocket::bind(&path) }).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    drop(sock);
    assert!(!path.exists(), "socket file removed on drop");

    let file = dir.path().join("precious");
    std::fs::write(&file, b"keep me").unwrap();
    let err = rt
        .block_on(async { ControlSocket::bind(&file) })
        .unwrap_err();
    assert!(matches!(err, ControlError::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

/// Streams `n` generated bindings for any show, like the daemon over a big cache.
struct Many(u32);

impl Responder for Many {
    async fn handle(&self, _request: Request) -> Reply {
        let n = self.0;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            for i in 0..n {
                let a = std::net::Ipv6Addr::from(
                    0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i),
                );
                let v = binding(&format!("{a}/128"), "na", "cable1", None);
                if tx.send(v).await.is_err() {
                    return;
                }
            }
        });
        Reply::Bindings(rx)
    }
}

#[test]
fn a_large_show_is_streamed_as_one_valid_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sock = rt.block_on(async { ControlSocket::bind(&path) }).unwrap();
    let n = 20_000; // ~5 MB of JSON: many 64 KiB chunks
    rt.spawn(sock.serve(
        Arc::new(Many(n)),
        Arc::new(ControlStats::default()),
        std::future::pending(),
    ));
    let mut c = Client::connect(&path).unwrap();
    for _ in 0..2 {
        // Twice on one connection: the stream ends its line and the connection stays usable.
        let Response::Bindings { bindings } = c.request(&Request::show_all()).unwrap() else {
            panic!("not bindings")
        };
        assert_eq!(bindings.len(), n as usize);
        assert_eq!(bindings[0].network.to_string(), "2001:db8::/128");
        assert_eq!(
            bindings[n as usize - 1].network.to_string(),
            "2001:db8::4e1f/128"
        );
    }
}

/// Everything logged in this test binary, for the audit-line test (one global subscriber).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogSink(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(sub).expect("first subscriber");
        buf
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn every_clear_is_logged_with_who_and_what() {
    let logs = captured_logs();
    let r = start();
    let out = cli(&r.path, &["clear", "binding", "2001:db8:200::/48"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = std::process::id(); // not the CLI's: the line must carry the CLI's own pid
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("control clear") && l.contains("2001:db8:200::2b/128"))
        .unwrap_or_else(|| panic!("no audit line: {text}"));
    assert!(
        line.contains("uid=0") || line.contains(&format!("uid={}", uid())),
        "{line}"
    );
    let peer_pid: u32 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid: {line}"));
    assert_ne!(
        peer_pid, pid,
        "the peer's (the CLI's) pid, not ours: {line}"
    );
    assert!(line.contains("removed=1"), "{line}");
}

/// This process's uid (the CLI child runs as the same user).
fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}
