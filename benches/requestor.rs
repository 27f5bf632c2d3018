//! `cargo bench --bench requestor`: the requestor (UDP shell + sans-IO core) against the
//! in-repo reference leasequery server on loopback. N = 1,000,000 queries by address, 1,000
//! in flight (1,000 caller tasks each asking one address after the other), every address
//! distinct so neither deduplication nor the negative cache saves a round trip. Prints
//! queries/s and p50/p99 latency (submit → outcome, as a caller sees it) and ends with
//! `requestor: <n> queries/s, p99 <us> us`.
//!
//! Without `--bench` in argv (as under `cargo test --all-targets`) it runs a smoke pass of
//! 2,000 queries with 100 in flight and checks every answer.

use support::refserver;

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lqagent::requestor::udp::{self, UdpConfig};
use lqagent::requestor::{AnswerVerdict, Policy, Query, RequestorConfig};
use lqagent::wire::{
    ClientData, ClientMessage, DhcpOption, Duid, IaAddr, Message, MessageType, StatusCode,
};
use refserver::{AddrLease, LeaseEntry, LeaseTable, RefServer, ServerConfig};

/// A lean leasequery responder on one blocking thread: parses each LEASEQUERY with the
/// agent's codec, looks the address up, and emits a LEASEQUERY-REPLY with the client's
/// CLIENT_DATA (CLIENTID, IAADDR, CLT_TIME) or, for an unknown address, no client data.
/// The reference server (tests/support/src/refserver/) answers the same way but logs every query under a
/// lock and spawns a task per answer for its fault injection; this one measures the requestor.
struct Lean {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lean {
    fn start(clients: u32) -> Lean {
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
        let server_duid = Duid::parse(&[0, 3, 0, 1, 2, 0, 0, 0, 5, 0x47]);
        let data: HashMap<Ipv6Addr, DhcpOption> = (1..=clients)
            .map(|n| {
                let mut cd = ClientData::default();
                cd.options
                    .push(DhcpOption::ClientId(Duid::parse(&client_duid(n))));
                cd.options
                    .push(DhcpOption::IaAddr(IaAddr::new(addr_of(n), 3600, 7200)));
                cd.options.push(DhcpOption::CltTime(5));
                (addr_of(n), DhcpOption::ClientData(cd))
            })
            .collect();
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
                        if let Some(cd) = data.get(&a) {
                            r.options.push(cd.clone());
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

/// The bound addresses: 2001:db8:1::/64 with host part 1..=CLIENTS.
const CLIENTS: u32 = 10_000;

fn table() -> LeaseTable {
    LeaseTable::from_entries((1..=CLIENTS).map(|n| {
        let mut e = LeaseEntry::new(client_duid(n), "2001:db8:1::1".parse().unwrap());
        e.addrs.push(AddrLease {
            addr: addr_of(n),
            preferred: 3600,
            valid: 7200,
        });
        e.clt_time = 5;
        e
    }))
}

fn addr_of(n: u32) -> Ipv6Addr {
    Ipv6Addr::from((0x2001_0db8_0001_0000u128 << 64) | u128::from(n))
}

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
}

/// `total` queries, `in_flight` at once, against `server`.
fn run(server: SocketAddr, total: u32, in_flight: u32) -> Run {
    let cfg = RequestorConfig {
        servers: vec![server],
        policy: Policy::Failover,
        duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0xbe, 0x11],
        max_pending: in_flight as usize * 2,
        negative_ttl: Duration::ZERO,
        global_rate: None,
        link_rate: None,
        ..RequestorConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut lat, elapsed, stats) = rt.block_on(async move {
        let (h, _task) = udp::spawn(
            cfg,
            UdpConfig {
                bind: "[::1]:0".parse().unwrap(),
                queue: in_flight as usize * 2,
                ..UdpConfig::default()
            },
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
                let mut bad = 0u32;
                for i in 0..per {
                    // Distinct workers never ask the same address at once (CLIENTS is a
                    // multiple of in_flight), so no query joins another.
                    let n = (i * in_flight + w) % CLIENTS + 1;
                    let t = Instant::now();
                    let o = h.query_wait(Query::by_address(addr_of(n))).await;
                    lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    match o {
                        Ok(o) if o.verdict == AnswerVerdict::Bound => {}
                        _ => bad += 1,
                    }
                }
                (lat, bad)
            }));
        }
        let mut lat = Vec::with_capacity(total as usize);
        let mut bad = 0;
        for t in tasks {
            let (l, b) = t.await.expect("worker");
            lat.extend(l);
            bad += b;
        }
        let elapsed = t0.elapsed();
        assert_eq!(bad, 0, "every query must be answered with a binding");
        (lat, elapsed, h.stats().await.expect("stats"))
    });
    lat.sort_unstable();
    assert_eq!(stats.replies, lat.len() as u64, "one reply per query");
    Run {
        queries: lat.len(),
        elapsed,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or(0),
        retransmits: stats.retransmits,
        dropped: stats.dropped_total(),
    }
}

fn report(name: &str, in_flight: u32, r: &Run) -> u64 {
    let qps = (r.queries as f64 / r.elapsed.as_secs_f64()).round() as u64;
    println!(
        "[{name}] queries {}, in flight {in_flight}, elapsed {:.3} s, {qps} queries/s, \
         latency p50 {} us p99 {} us max {} us, retransmits {}, dropped replies {}",
        r.queries,
        r.elapsed.as_secs_f64(),
        r.p50,
        r.p99,
        r.max,
        r.retransmits,
        r.dropped
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
    let srv = RefServer::new(table(), ServerConfig::default());
    let ref_addr = srv
        .serve_udp(UdpSocket::bind("[::1]:0").expect("bind server"), None)
        .expect("serve");
    let lean = Lean::start(CLIENTS);
    if !bench {
        // Smoke: both responders, every answer checked.
        let r = run(ref_addr, total, in_flight);
        report("refserver smoke", in_flight, &r);
        let r = run(lean.addr, total, in_flight);
        report("lean smoke", in_flight, &r);
        assert!(lean.answered.load(Ordering::Relaxed) >= u64::from(total));
        println!("requestor: smoke run only (pass --bench for the measurement)");
        return;
    }
    let (name, server) = if which == "refserver" {
        ("refserver", ref_addr)
    } else {
        ("lean", lean.addr)
    };
    let r = run(server, total, in_flight);
    let qps = report(name, in_flight, &r);
    println!("requestor: {qps} queries/s, p99 {} us", r.p99);
}
