//! `/metrics` over loopback: every family has HELP text and a TYPE, every family is documented
//! in docs/metrics.md, values survive the trip, and the listener stays bounded. (The families
//! the daemon reads from its modules' stats at scrape time are pinned, values and docs, by
//! `daemon::export`'s unit tests, where those crate-private stats can be filled.)

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use lqagent::metrics::http::{self, MAX_CONNECTIONS};
use lqagent::metrics::servers::Exchange;
use lqagent::metrics::*;
use support::scrape::{Exposition, http as get};

fn start(metrics: Metrics) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(http::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(http::serve(listener, metrics, std::future::pending()));
    (addr, rt)
}

/// Touch one series of every labelled family `Metrics::new` makes, so samples exist to check.
fn exercise(m: &Metrics) {
    m.leasequeries
        .get_or_create(&QueryLabels {
            query_type: LeasequeryType::Address,
            server: "dhcp-a".into(),
            outcome: LeasequeryOutcome::Binding,
        })
        .inc_by(4);
    let server = ServerLabels {
        server: "dhcp-a".into(),
    };
    m.leasequery_rtt.get_or_create(&server).observe(0.003);
    m.leasequery_retransmissions.get_or_create(&server).inc();
    m.servers.configure([
        ("dhcp-a".to_string(), "2001:db8::a".parse().unwrap()),
        ("dhcp-b".to_string(), "2001:db8::b".parse().unwrap()),
    ]);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let rtt = std::time::Duration::from_millis(3);
    m.servers.record("dhcp-a", Exchange::Success, rtt, at);
    m.servers.record("dhcp-b", Exchange::NoAnswer, rtt, at);
    m.netlink_batch.observe(0.0002);
    m.rate_limited_drops
        .get_or_create(&LimitLabels {
            scope: LimitScope::Global,
        })
        .inc_by(9);
    m.recovery_in_progress.set(0);
    m.recovery_duration.set(1.5);
}

/// True when `docs` names `family` in backticks, as itself or with `_total`.
fn documented(docs: &str, family: &str) -> bool {
    docs.contains(&format!("`{family}`")) || docs.contains(&format!("`{family}_total`"))
}

#[test]
fn every_family_has_help_and_is_documented() {
    let m = Metrics::new();
    exercise(&m);
    let control = std::sync::Arc::new(lqagent::control::ControlStats::default());
    lqagent::daemon::export::register_control(&m, &control);
    let doubts = std::sync::Arc::new(lqagent::cache::DoubtStats::default());
    lqagent::daemon::export::register_doubts(&m, &doubts);
    doubts.count(
        lqagent::cache::DoubtReason::Overlap,
        lqagent::cache::DoubtOutcome::Unknown,
    );
    control.count(lqagent::control::ControlEvent::Request);
    control.count(lqagent::control::ControlEvent::Request);
    let (addr, _rt) = start(m);
    let resp = get(addr, "GET", "/metrics");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some(http::CONTENT_TYPE_OPENMETRICS)
    );
    let e = Exposition::parse(&resp.body);
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");

    for name in names::ALL.iter().chain(process::ALL) {
        assert!(e.families.contains_key(*name), "family {name} not exposed");
    }
    for (name, meta) in &e.families {
        let help = meta.help.as_deref().unwrap_or("");
        assert!(!help.trim().is_empty(), "family {name} lacks HELP text");
        assert!(meta.kind.is_some(), "family {name} lacks TYPE");
        assert!(
            documented(&docs, name),
            "family {name} is missing from docs/metrics.md"
        );
    }

    let v = |n: &str, l: &[(&str, &str)]| e.value(n, l).unwrap_or_else(|| panic!("no {n} {l:?}"));
    assert_eq!(
        v(
            "lqagent_leasequeries_total",
            &[
                ("query_type", "address"),
                ("server", "dhcp-a"),
                ("outcome", "binding")
            ]
        ),
        4.0
    );
    assert_eq!(
        v(
            "lqagent_leasequery_rtt_seconds_count",
            &[("server", "dhcp-a")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "lqagent_leasequery_rtt_seconds_bucket",
            &[("server", "dhcp-a"), ("le", "0.004")]
        ),
        1.0,
        "3 ms lands in the 4 ms bucket"
    );
    assert_eq!(
        v("lqagent_rate_limited_drops_total", &[("scope", "global")]),
        9.0
    );
    assert_eq!(v("lqagent_recovery_duration_seconds", &[]), 1.5);
    assert!(v("process_resident_memory_bytes", &[]) > 1_000_000.0);
    assert!(v("process_open_fds", &[]) >= 3.0);
    assert!(v("process_cpu_seconds_total", &[]) >= 0.0);
    assert_eq!(v("lqagent_server_up", &[("server", "dhcp-a")]), 1.0);
    assert_eq!(v("lqagent_server_up", &[("server", "dhcp-b")]), 0.0);
    assert_eq!(
        v(
            "lqagent_server_last_success_timestamp_seconds",
            &[("server", "dhcp-a")]
        ),
        1_700_000_000.0
    );
    assert_eq!(
        v(
            "lqagent_server_last_success_timestamp_seconds",
            &[("server", "dhcp-b")]
        ),
        0.0,
        "never succeeded"
    );
    assert_eq!(
        v(
            "lqagent_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        v("lqagent_metrics_scrapes_total", &[]),
        1.0,
        "this scrape counted"
    );
}

#[test]
fn other_paths_and_methods_are_refused() {
    let (addr, _rt) = start(Metrics::new());
    assert_eq!(get(addr, "GET", "/").status, 404);
    let post = get(addr, "POST", "/metrics");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = get(addr, "HEAD", "/metrics");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

/// A big exposition (tens of thousands of series, megabytes): one answer is more than the
/// buffers between server and a small-buffered client can hold.
fn make_big(m: &Metrics) {
    for i in 0..40_000 {
        m.leasequeries
            .get_or_create(&QueryLabels {
                query_type: LeasequeryType::Address,
                server: format!("server-{i}"),
                outcome: LeasequeryOutcome::Binding,
            })
            .inc();
    }
}

/// A scraper that asks and never reads: a small receive buffer and a few pipelined requests,
/// so (with [`make_big`]) the server's writes block. Few, so that many of these are set up
/// well within the write deadline.
fn never_reader(addr: SocketAddr) -> TcpStream {
    use std::io::Write;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.repeat(16).as_bytes()).unwrap();
    s
}

fn counter(m: &Metrics, family: &str) -> f64 {
    Exposition::parse(&m.encode())
        .value(family, &[])
        .unwrap_or(0.0)
}

/// The server has read a request from each of `n` connections (each is being answered).
fn wait_scrapes(m: &Metrics, n: f64) {
    support::wait::wait_for("the requests to be read", Duration::from_secs(20), || {
        counter(m, "lqagent_metrics_scrapes_total") >= n
    });
}

#[test]
fn connections_beyond_the_limit_are_closed_and_counted() {
    use std::io::Read;
    let m = Metrics::new();
    make_big(&m);
    let (addr, _rt) = start(m.clone());
    // Every slot held by a connection being answered (a scraper that does not read): none can
    // be closed for a newcomer, so the one over the limit is closed at once.
    let held: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| never_reader(addr)).collect();
    wait_scrapes(&m, MAX_CONNECTIONS as f64);
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    support::closed::assert_closed(
        extra.read(&mut buf),
        "the connection over the limit is closed at once",
    );
    assert_eq!(
        counter(&m, "lqagent_metrics_connections_rejected_total"),
        1.0
    );
    assert_eq!(
        counter(&m, "lqagent_metrics_connections_evicted_total"),
        0.0
    );
    drop(held);
    // Slots free up as the held connections close; a scrape then works again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ok = std::panic::catch_unwind(|| get(addr, "GET", "/metrics").status == 200);
        if ok.unwrap_or(false) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "listener did not recover"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn silent_and_never_reading_scrapers_do_not_lock_a_scraper_out() {
    use std::io::Read;
    let m = Metrics::new();
    make_big(&m);
    let (addr, _rt) = start(m.clone());
    // Four that ask and never read, oldest of all: being answered, they are not closed for
    // newcomers (their write deadline deals with them).
    let _stuck: Vec<TcpStream> = (0..4).map(|_| never_reader(addr)).collect();
    wait_scrapes(&m, 4.0);
    // Sixteen that connect and say nothing: twelve fill the slots, each of the last four
    // closes the oldest silent one.
    let silent: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // A scraper still gets its answer (within `get`'s bounded read), in the place of a fifth.
    let answer = get(addr, "GET", "/metrics");
    assert_eq!(answer.status, 200);
    assert!(answer.body.ends_with("# EOF\n"));
    support::wait::wait_for("five evictions", Duration::from_secs(10), || {
        counter(&m, "lqagent_metrics_connections_evicted_total") == 5.0
    });
    assert_eq!(
        counter(&m, "lqagent_metrics_connections_rejected_total"),
        0.0
    );
    // Who went: the five oldest silent ones, in accept order; the rest are open. Read at once:
    // the silent ones that stay are closed by their read deadline 5 s after they connected.
    let mut buf = [0u8; 16];
    for (i, mut s) in silent.iter().enumerate() {
        if i < 5 {
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            support::closed::assert_closed(s.read(&mut buf), &format!("silent #{i} evicted"));
        } else {
            s.set_nonblocking(true).unwrap();
            let r = s.read(&mut buf);
            assert!(
                matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "silent #{i} still open: {r:?}"
            );
        }
    }
}

fn timed_out(m: &Metrics, deadline: &str) -> f64 {
    Exposition::parse(&m.encode())
        .value(
            "lqagent_metrics_connections_timed_out_total",
            &[("deadline", deadline)],
        )
        .unwrap_or(0.0)
}

/// Wait (bounded) until the server closes `s`: end of stream or a reset, after any data.
fn wait_closed(s: &mut TcpStream, what: &str, within: Duration) {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
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
fn a_silent_scraper_is_closed_at_the_read_deadline_and_counted() {
    let m = Metrics::new();
    let (addr, _rt) = start(m.clone());
    let mut silent = TcpStream::connect(addr).unwrap();
    wait_closed(
        &mut silent,
        "a scraper that says nothing",
        http::READ_TIMEOUT + Duration::from_secs(20),
    );
    assert_eq!(timed_out(&m, "read"), 1.0);
    assert_eq!(timed_out(&m, "write"), 0.0);
}

#[test]
fn a_scraper_that_stops_reading_is_closed_at_the_write_deadline_and_counted() {
    let m = Metrics::new();
    // One answer is more than the buffers between can hold, however slowly answers come (an
    // encoding at most once a second).
    make_big(&m);
    let (addr, _rt) = start(m.clone());
    // A small receive buffer, and pipelined requests whose answers it never reads: the
    // server's writes block once the buffers between are full.
    let mut s = never_reader(addr);
    support::wait::wait_for(
        "the write deadline",
        http::WRITE_TIMEOUT + Duration::from_secs(20),
        || timed_out(&m, "write") == 1.0,
    );
    s.set_nonblocking(false).unwrap();
    wait_closed(
        &mut s,
        "a scraper that does not read",
        Duration::from_secs(30),
    );
    assert_eq!(timed_out(&m, "read"), 0.0);
}
