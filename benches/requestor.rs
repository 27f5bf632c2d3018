//! `cargo bench --bench requestor`: the requestor (UDP shell + sans-IO core) against a lean
//! leasequery responder on loopback, configured as the daemon configures it. N = 1,000,000
//! queries by address, 1,000 in flight (1,000 caller tasks each asking one address after the
//! other), **every address distinct** (one per query: neither deduplication nor a warm negative
//! cache saves a round trip), asked as the on-demand path asks (link-address of one of 64
//! links, LQ_RELAY_DATA requested).
//!
//! The limiter and the negative cache are on, as `daemon::settings` builds them from
//! `[limits]`: token buckets of one second's worth at `global_qps` and `per_link_qps`, both at
//! the configuration's maximum (100 000/s), and the negative cache at its default TTL (30 s),
//! factor and capacity. One address in 16 has no binding, so the negative cache records (and
//! evicts, past 65 536) as it does under a scan of unused addresses. A query the limiter
//! refuses is counted and dropped, as the on-demand path drops it; the rate printed counts
//! answered queries only.
//!
//! Prints queries/s and p50/p99 latency (submit → outcome, as a caller sees it) and ends with
//! `requestor: <n> queries/s, p99 <us> us`.
//!
//! Without `--bench` in argv (as under `cargo test --all-targets`) it runs a smoke pass of
//! 2,000 queries with 100 in flight against both the lean responder and the reference server,
//! and checks every answer.

use support::refserver;

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lqagent::requestor::udp::{self, QueryError, UdpConfig};
use lqagent::requestor::{
    AnswerVerdict, Policy, Query, Rate, RefuseReason, RequestorConfig, RequestorCounter,
};
use lqagent::wire::{
    ClientData, ClientMessage, DhcpOption, Duid, IaAddr, Message, MessageType, StatusCode,
};
use refserver::{AddrLease, LeaseEntry, LeaseTable, RefServer, ServerConfig};

/// A lean leasequery responder on one blocking thread: parses each LEASEQUERY with the
/// agent's codec and answers from the address alone (no table: a million distinct addresses
/// would need one of a million clients): an address whose host part `n` is [`bound`] gets a
/// LEASEQUERY-REPLY with client `n`'s CLIENT_DATA (CLIENTID, IAADDR, CLT_TIME), any other an
/// answer without client data ("no binding"). The reference server (tests/support/src/refserver/)
/// answers the same way but logs every query under a lock and spawns a task per answer for
/// its fault injection; this one measures the requestor.
struct Lean {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lean {
    fn start() -> Lean {
        let sock = {
            let s = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .expect("socket");
            // As the requestor does: room for a burst of 1,000 queries.
            let _ = s.set_recv_buffer_size(4 << 20);
            s.bind(&"[::1]:0".parse::<SocketAddr>().unwrap().into())
                .expect("bind lean responder");
            UdpSocket::from(s)
        };
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let server_duid = Duid::from(&[0, 3, 0, 1, 2, 0, 0, 0, 5, 0x47]);
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (s2, a2) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut out = Vec::with_capacity(512);
            while !s2.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(Message::Client(q)) = Message::parse(&buf[..n]) else {
                    continue;
                };
                if q.msg_type != MessageType::LEASEQUERY {
                    continue;
                }
                let mut r = ClientMessage::new(MessageType::LEASEQUERY_REPLY, q.transaction_id);
                r.options.push(DhcpOption::ServerId(server_duid.clone()));
                if let Some(c) = q.options.client_id() {
                    r.options.push(DhcpOption::ClientId(c.clone()));
                }
                let asked = q
                    .options
                    .lq_query()
                    .and_then(|lq| lq.options.ia_addrs().next().map(|a| a.addr));
                match asked {
                    Some(a) => {
                        let n = host_of(a);
                        if bound(n) {
                            let mut cd = ClientData::default();
                            cd.options
                                .push(DhcpOption::ClientId(Duid::from(&client_duid(n))));
                            cd.options
                                .push(DhcpOption::IaAddr(IaAddr::new(a, 3600, 7200)));
                            cd.options.push(DhcpOption::CltTime(5));
                            r.options.push(DhcpOption::ClientData(cd));
                        }
                    }
                    None => r
                        .options
                        .push(DhcpOption::StatusCode(lqagent::wire::Status::new(
                            StatusCode::MALFORMED_QUERY,
                            "no IAADDR",
                        ))),
                }
                out.resize(r.buffer_len(), 0);
                if r.emit(&mut out).is_ok() && sock.send_to(&out, peer).is_ok() {
                    a2.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Lean {
            addr,
            stop,
            answered,
            thread: Some(thread),
        }
    }
}

impl Drop for Lean {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn client_duid(n: u32) -> Vec<u8> {
    [&[0u8, 3, 0, 1, 2, 0][..], &n.to_be_bytes()].concat()
}

/// Whether the address with host part `n` has a binding: all but one in 16.
fn bound(n: u32) -> bool {
    n % 16 != 0
}

/// The reference server's table: clients `1..=n`, those [`bound`], each on its [`link_of`].
fn table(n: u32) -> LeaseTable {
    LeaseTable::from_entries((1..=n).filter(|&n| bound(n)).map(|n| {
        let mut e = LeaseEntry::new(client_duid(n), link_of(n));
        e.addrs.push(AddrLease {
            addr: addr_of(n),
            preferred: 3600,
            valid: 7200,
        });
        e.clt_time = 5;
        e
    }))
}

/// Addresses in 2001:db8:1::/64 with host part `n`.
fn addr_of(n: u32) -> Ipv6Addr {
    Ipv6Addr::from((0x2001_0db8_0001_0000u128 << 64) | u128::from(n))
}

fn host_of(a: Ipv6Addr) -> u32 {
    u128::from(a) as u32
}

/// The link-address the on-demand path would ask with for host `n`: one of 64 links, each
/// with bound and unbound addresses (a server answers an error for a link it has no lease on).
fn link_of(n: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, (n / 16 % 64) as u16 + 1)
}

/// `daemon::settings::rates`: a bucket of one second's worth at `qps`.
fn rate(qps: u32) -> Rate {
    let q = f64::from(qps.max(1));
    Rate {
        per_sec: q,
        burst: q,
    }
}

/// The configuration's maximum for `limits.global_qps` and `limits.per_link_qps`.
const MAX_QPS: u32 = 100_000;

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Run {
    queries: usize,
    elapsed: Duration,
    p50: u32,
    p99: u32,
    max: u32,
    retransmits: u64,
    dropped: u64,
    /// Queries the limiter refused (dropped, as the on-demand path drops them).
    refused: u64,
    no_binding: u64,
    negative_evicted: u64,
}

/// `total` queries, `in_flight` at once, against `server`: query `i` asks the address with
/// host part `i + 1`, so every address is asked once.
fn run(server: SocketAddr, total: u32, in_flight: u32) -> Run {
    let cfg = RequestorConfig {
        servers: vec![server],
        policy: Policy::Failover,
        duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0xbe, 0x11].into(),
        max_pending: in_flight as usize * 2,
        // As the daemon configures them (see the module doc).
        negative_ttl: Duration::from_secs(30),
        global_rate: Some(rate(MAX_QPS)),
        link_rate: Some(rate(MAX_QPS)),
        ..RequestorConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut lat, elapsed, refused, no_binding, stats) = rt.block_on(async move {
        let (h, _task) = udp::spawn(
            cfg,
            UdpConfig {
                bind: "[::1]:0".parse().unwrap(),
                queue: in_flight as usize * 2,
                ..UdpConfig::default()
            },
            &support::tasks::supervisor(),
        )
        .await
        .expect("spawn requestor");
        let per = total / in_flight;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..in_flight {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per as usize);
                let (mut bad, mut refused, mut no_binding) = (0u32, 0u64, 0u64);
                for i in 0..per {
                    // Every query its own address: host parts 1..=total, each once.
                    let n = i * in_flight + w + 1;
                    let q = Query::by_address(addr_of(n))
                        .with_link(link_of(n))
                        .with_relay_data(true);
                    let t = Instant::now();
                    let o = h.query_wait(q).await;
                    match o {
                        Ok(o) => {
                            lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                            match o.verdict {
                                AnswerVerdict::Bound if bound(n) => {}
                                AnswerVerdict::NoBinding if !bound(n) => no_binding += 1,
                                v => {
                                    if bad == 0 {
                                        eprintln!("host {n}: verdict {v:?}");
                                    }
                                    bad += 1
                                }
                            }
                        }
                        Err(QueryError::Refused(
                            RefuseReason::GlobalRate | RefuseReason::LinkRate,
                        )) => refused += 1,
                        Err(_) => bad += 1,
                    }
                }
                (lat, bad, refused, no_binding)
            }));
        }
        let mut lat = Vec::with_capacity(total as usize);
        let (mut bad, mut refused, mut no_binding) = (0, 0, 0);
        for t in tasks {
            let (l, b, r, nb) = t.await.expect("worker");
            lat.extend(l);
            bad += b;
            refused += r;
            no_binding += nb;
        }
        let elapsed = t0.elapsed();
        assert_eq!(
            bad, 0,
            "every answered query has the verdict its address calls for"
        );
        (lat, elapsed, refused, no_binding, h.stats().clone())
    });
    lat.sort_unstable();
    assert_eq!(
        stats.get(RequestorCounter::Replies),
        lat.len() as u64,
        "one reply per answered query"
    );
    assert_eq!(
        stats.get(RequestorCounter::NegativeHits),
        0,
        "distinct addresses: nothing is answered locally"
    );
    assert_eq!(
        stats.get(RequestorCounter::Deduplicated),
        0,
        "distinct addresses: no query joins another"
    );
    Run {
        queries: lat.len(),
        elapsed,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or(0),
        retransmits: stats.get(RequestorCounter::Retransmits),
        dropped: stats.dropped_total(),
        refused,
        no_binding,
        negative_evicted: stats.negative_evicted(),
    }
}

fn report(name: &str, in_flight: u32, r: &Run) -> u64 {
    let qps = (r.queries as f64 / r.elapsed.as_secs_f64()).round() as u64;
    println!(
        "[{name}] queries {}, in flight {in_flight}, elapsed {:.3} s, {qps} queries/s, \
         latency p50 {} us p99 {} us max {} us, retransmits {}, dropped replies {}, \
         refused by the limiter {}, no binding {} (negative cache evicted {})",
        r.queries,
        r.elapsed.as_secs_f64(),
        r.p50,
        r.p99,
        r.max,
        r.retransmits,
        r.dropped,
        r.refused,
        r.no_binding,
        r.negative_evicted
    );
    qps
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    // LQAGENT_BENCH_RESPONDER=refserver measures against the fault-injecting reference
    // server instead of the lean responder.
    let which = std::env::var("LQAGENT_BENCH_RESPONDER").unwrap_or_else(|_| "lean".into());
    // LQAGENT_BENCH_N overrides N (for profiling runs).
    let n = std::env::var("LQAGENT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000u32);
    let (total, in_flight) = if bench { (n, 1_000u32) } else { (2_000, 100) };
    let lean = Lean::start();
    if !bench {
        // Smoke: both responders, every answer checked.
        let srv = RefServer::new(table(total), ServerConfig::default());
        let ref_addr = srv
            .serve_udp(UdpSocket::bind("[::1]:0").expect("bind server"), None)
            .expect("serve");
        let r = run(ref_addr, total, in_flight);
        report("refserver smoke", in_flight, &r);
        let r = run(lean.addr, total, in_flight);
        report("lean smoke", in_flight, &r);
        assert!(lean.answered.load(Ordering::Relaxed) >= u64::from(total) - r.refused);
        assert_eq!(
            r.no_binding,
            u64::from(total / 16),
            "one address in 16 unbound"
        );
        println!("requestor: smoke run only (pass --bench for the measurement)");
        return;
    }
    // Kept alive until the run ends.
    let mut _srv = None;
    let (name, server) = if which == "refserver" {
        let srv = RefServer::new(table(total), ServerConfig::default());
        let addr = srv
            .serve_udp(UdpSocket::bind("[::1]:0").expect("bind server"), None)
            .expect("serve");
        _srv = Some(srv);
        ("refserver", addr)
    } else {
        ("lean", lean.addr)
    };
    let r = run(server, total, in_flight);
    let qps = report(name, in_flight, &r);
    println!("requestor: {qps} queries/s, p99 {} us", r.p99);
}
