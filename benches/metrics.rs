//! Scrape storm: 16 parallel `/metrics` readers against the real HTTP server (`metrics::http`,
//! on a two-worker runtime as the daemon's) over a store of 1 000 000 bindings (500k clients ×
//! one IA_NA address and one /56 IA_PD prefix, through `BindingStore::apply`), the
//! `lqagent_bindings` gauges registered the way the daemon does (`daemon::export`).
//!
//! Three rounds: `snapshot` (the server as shipped: an encoding started at most once a second,
//! each scrape answered by the first one that started after it asked, so a storm's scrapes wait
//! up to that second), `no-reuse` (the shipped server with no least time between encodings:
//! encodings back to back, one at a time, scrapes that arrive during one share the next) and
//! `inline` (what `/metrics` did before: an encoding per scrape, on the
//! runtime worker serving it). Each prints the
//! scrapes served, p50/p99/max scrape time, the server threads' CPU (runtime workers and
//! blocking pool, from /proc/self/task/*/stat) as seconds and % of one core, the encodings, and
//! the p99 lateness of a 10 ms timer on the same runtime (what the rest of the daemon would
//! feel). `cargo bench --bench metrics`; without `--bench` in argv (as under `cargo test
//! --all-targets`) it does a tiny smoke run.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lqagent::cache::{
    BindingStore, CacheConfig, IaType, LeaseKey, Link, Observation, ObservedLease, ServerId,
    Source, Timestamp,
};
use lqagent::metrics::{Metrics, Unlabelled};
use lqagent::prefix::Ipv6Prefix;

const READERS: usize = 16;
const SERVER_THREADS: &str = "lq-metrics";

fn observation(i: u32, server: &Arc<ServerId>, now: Timestamp) -> Observation {
    let mac = i.to_be_bytes();
    let pd = Ipv6Prefix::new(
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            (i >> 8) as u16,
            ((i & 0xff) << 8) as u16,
            0,
            0,
            0,
            0,
        ),
        56,
    )
    .unwrap();
    Observation {
        client_duid: vec![0, 3, 0, 1, 0x02, 0x42, mac[0], mac[1], mac[2], mac[3]].into(),
        link: Link {
            address: link_address(i % 100),
            interface: None,
        },
        relay: None,
        server: server.clone(),
        source: Source::Bulk,
        clt_time: Some(i % 600),
        base_time: None,
        srsn: None,
        complete: true,
        leases: vec![
            ObservedLease {
                key: LeaseKey::Address(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0xffff,
                    0,
                    0,
                    0,
                    (i >> 16) as u16,
                    i as u16,
                )),
                ia: IaType::Na,
                iaid: 1,
                preferred: 1800,
                valid: 3600,
            },
            ObservedLease {
                key: LeaseKey::Prefix(pd),
                ia: IaType::Pd,
                iaid: 2,
                preferred: 1800,
                valid: 3600,
            },
        ],
        arrival: now,
        query_address: None,
    }
}

fn link_address(n: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, n as u16 + 1)
}

/// CPU seconds of this process's threads named `name` (utime + stime, USER_HZ = 100).
fn threads_cpu_secs(name: &str) -> f64 {
    let mut ticks = 0.0;
    for t in std::fs::read_dir("/proc/self/task").into_iter().flatten() {
        let Ok(t) = t else { continue };
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.contains(&format!("({name}")) {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        ticks += tick(11) + tick(12);
    }
    ticks / 100.0
}

/// One scrape with `Connection: close`; `None` when refused or broken (counted, not fatal: a
/// reconnect can race the slot of the connection just closed).
fn scrape(addr: SocketAddr) -> Option<usize> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    raw.starts_with(b"HTTP/1.1 200").then_some(raw.len())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How the server under test answers.
#[derive(Clone, Copy)]
enum Server {
    /// `metrics::http::serve_with` with this least time between encodings.
    Shipped(Duration),
    /// What `/metrics` did before snapshots: hyper with the same limits, `Metrics::encode()`
    /// called for every scrape on the runtime worker that serves it.
    Inline,
}

async fn serve_inline(listener: tokio::net::TcpListener, metrics: Metrics) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req| {
                let body = Bytes::from(m.encode());
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
            drop(permit);
        });
    }
}

fn storm(metrics: &Metrics, encodes: &AtomicU64, server: Server, secs: Duration, name: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(lqagent::metrics::http::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    match server {
        Server::Shipped(max_age) => rt.spawn(lqagent::metrics::http::serve_with(
            listener,
            metrics.clone(),
            max_age,
            std::future::pending(),
        )),
        Server::Inline => rt.spawn(serve_inline(listener, metrics.clone())),
    };
    // What the rest of the daemon would feel: a 10 ms timer's lateness on the same runtime.
    let lags = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (lags, stop) = (lags.clone(), stop.clone());
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                let late = t.elapsed().saturating_sub(Duration::from_millis(10));
                lags.lock().unwrap().push(late);
            }
        });
    }
    // One scrape first, so both rounds start from a warm server.
    let _ = scrape(addr);
    let (encodes0, cpu0, t0) = (
        encodes.load(Ordering::Relaxed),
        threads_cpu_secs(SERVER_THREADS),
        Instant::now(),
    );
    lags.lock().unwrap().clear();
    let failed = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let failed = failed.clone();
            std::thread::spawn(move || {
                let mut times = Vec::new();
                while t0.elapsed() < secs {
                    let t = Instant::now();
                    match scrape(addr) {
                        Some(_) => times.push(t.elapsed()),
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                times
            })
        })
        .collect();
    let mut times: Vec<Duration> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = threads_cpu_secs(SERVER_THREADS) - cpu0;
    let encoded = encodes.load(Ordering::Relaxed) - encodes0;
    stop.store(true, Ordering::Relaxed);
    times.sort();
    let mut lag = lags.lock().unwrap().clone();
    lag.sort();
    println!(
        "metrics {name:>10}: {} scrapes ({} failed) in {wall:.1} s by {READERS} readers; \
         scrape p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; server CPU {cpu:.2} s ({:.0} % of a core); \
         {encoded} encodings; runtime timer lateness p99 {:.2} ms",
        times.len(),
        failed.load(Ordering::Relaxed),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        cpu / wall * 100.0,
        percentile(&lag, 0.99).as_secs_f64() * 1e3,
    );
    rt.shutdown_timeout(Duration::from_secs(1));
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (clients, secs) = if full {
        (500_000u32, Duration::from_secs(10))
    } else {
        (1_000, Duration::from_millis(300))
    };
    let server = Arc::new(ServerId {
        duid: vec![0, 1, 0, 1, 0x30, 0x39, 0, 1].into(),
        address: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0xffff, 0, 0, 0, 1),
    });
    let now = Timestamp::from_secs(1_795_000_000);
    let store = Arc::new(BindingStore::new(CacheConfig::default()));
    for i in 0..clients {
        store.apply(&observation(i, &server, now));
    }
    assert_eq!(store.len(), 2 * clients as usize);
    let links = (0..100)
        .map(|n| (link_address(n), format!("link{n}")))
        .collect();
    let metrics = Metrics::new();
    lqagent::daemon::export::register_bindings(&metrics, &store, links);
    let encodes = Arc::new(AtomicU64::new(0));
    let e = encodes.clone();
    // Encodings counted by a family of their own (read, like every family, at each encoding).
    metrics.register_stats("bench_encodings", "Encodings", move || {
        vec![(Unlabelled, e.fetch_add(1, Ordering::Relaxed) + 1)]
    });
    let t = Instant::now();
    let body = metrics.encode();
    println!(
        "metrics: {} bindings; one encoding {:.1} ms, {} bytes",
        store.len(),
        t.elapsed().as_secs_f64() * 1e3,
        body.len()
    );
    storm(
        &metrics,
        &encodes,
        Server::Shipped(lqagent::metrics::http::ENCODING_INTERVAL),
        secs,
        "snapshot",
    );
    storm(
        &metrics,
        &encodes,
        Server::Shipped(Duration::ZERO),
        secs,
        "no-reuse",
    );
    storm(&metrics, &encodes, Server::Inline, secs, "inline");
}
