//! Binding cache benchmark: memory per binding, lookups per second on 2 threads while a writer
//! changes the store, snapshot write and load time. `cargo bench --bench cache` runs 1M bindings (500k clients × one IA_NA address
//! and one /56 IA_PD prefix), inserted through the real merge path (`BindingStore::apply`).
//! It also fills one client with 1 000 and then 10 000 delegated prefixes and prints the merge
//! cost per lease of each (the two should be about equal: one merge does not copy the client's
//! other leases).
//!
//! Lookups run as in the daemon: the cache task writes while readers look up, each lookup the
//! on-demand path's `BindingStore::knows` for an unknown source (half of the queries exact
//! IA_NA addresses, half addresses inside delegated /56s). One writer
//! thread, flat out for the whole lookup phase, renews the queried clients (each renewal a new
//! lifetime, so a real change, not a no-op merge) and, one observation in four, adds or removes
//! one of a separate set of clients (structural changes to the indexes; the readers never ask
//! for those, so every lookup still hits). Its rate is printed beside the lookups'.
//! Lookups per wall second are lookups per CPU-second times the CPU the two readers got, so the
//! line prints both, with where the rest went: the writer's CPU, how often a reader slept on a
//! lock the writer held, the machine's idle and stolen (hypervisor) time, the load average. On
//! two cores the three threads share the CPUs, so a run's number moves with the readers' share
//! even when each lookup costs the same.
//! Without `--bench` in argv (as under `cargo test --all-targets`) it does a tiny
//! smoke run.
//! The last line is `cache: <bytes> B/binding, <n> lookups/s`.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lqagent::cache::{
    BindingStore, CacheConfig, IaType, LeaseKey, Link, Observation, ObservedLease, ServerId,
    Source, Timestamp,
};
use lqagent::persist::{self, PersistConfig, StateWriter};
use lqagent::prefix::Ipv6Prefix;

/// A "Key:   N kB" value from a /proc file of this process, in bytes (0 if absent).
fn proc_kb(file: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(file).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    proc_kb("/proc/self/status", "VmRSS:")
}

/// Anonymous memory backed by transparent huge pages.
fn huge_page_bytes() -> u64 {
    proc_kb("/proc/self/smaps_rollup", "AnonHugePages:")
}

/// CPU time of the calling thread in seconds (utime+stime from /proc/thread-self/stat, in
/// USER_HZ = 100 ticks; coarse, but the lookup phase runs for seconds).
fn thread_cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (tick(11) + tick(12)) / 100.0
}

/// How often the calling thread has given up the CPU of its own accord so far (from
/// /proc/thread-self/status): for a lookup thread, each is a wait for a shard lock the writer
/// held (a futex sleep), wall time the lookups lose whatever they cost on the CPU.
fn voluntary_switches() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("voluntary_ctxt_switches:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The whole machine's idle and steal time so far, in seconds (the "cpu" line of /proc/stat, in
/// USER_HZ): idle CPU during the lookups means nobody could use it (readers asleep on a lock),
/// steal means the hypervisor gave our virtual CPUs' time to someone else.
fn machine_idle_steal_secs() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let tick = |i: usize| f.get(i).copied().unwrap_or(0.0) / 100.0;
    (tick(3), tick(7))
}

/// CPU time of the calling thread in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`, exact at each
/// read). Unlike wall time it does not count the time other processes had the CPU: on a loaded
/// machine a 60 ms run is preempted, a 2 ms one rarely.
#[allow(unsafe_code)]
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, a valid exclusive borrow.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn na_addr(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, (i >> 16) as u16, i as u16)
}

fn pd_prefix(i: u32) -> Ipv6Prefix {
    Ipv6Prefix::new(
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
    .unwrap()
}

fn observation(i: u32, servers: &[Arc<ServerId>], now: Timestamp) -> Observation {
    let mac = i.to_be_bytes();
    Observation {
        client_duid: vec![0, 3, 0, 1, 0x02, 0x42, mac[0], mac[1], mac[2], mac[3]].into(),
        link: Link {
            address: Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, (i % 1000) as u16 + 1),
            interface: None,
        },
        relay: None,
        server: servers[(i % 2) as usize].clone(),
        source: Source::Bulk,
        clt_time: Some(i % 600),
        base_time: None,
        srsn: None,
        complete: true,
        leases: vec![
            ObservedLease {
                key: LeaseKey::Address(na_addr(i)),
                ia: IaType::Na,
                iaid: 1,
                preferred: 1800,
                valid: 3600,
            },
            ObservedLease {
                key: LeaseKey::Prefix(pd_prefix(i)),
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

/// Fill one client (one IA_NA address, then `n` delegated /64s, one observation each, as a CPE
/// behind which a misbehaving or very large network asks for prefix after prefix) and return the
/// merge cost per lease in nanoseconds. Linear fill: the same per-lease cost at any `n`.
fn one_client_per_lease_ns(n: u32, server: &Arc<ServerId>, now: Timestamp) -> f64 {
    let mut cfg = CacheConfig::default();
    cfg.merge.max_prefixes_per_client = 65_536;
    let store = BindingStore::new(cfg);
    let lease = |key, ia| ObservedLease {
        key,
        ia,
        iaid: 1,
        preferred: 1800,
        valid: 3600,
    };
    let obs = |leases, i: u32| Observation {
        client_duid: vec![0, 3, 0, 1, 0x02, 0x42, 0, 0, 0, 1].into(),
        link: Link {
            address: Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, 1),
            interface: None,
        },
        relay: None,
        server: server.clone(),
        source: Source::Snoop,
        clt_time: None,
        base_time: None,
        srsn: None,
        complete: false,
        leases,
        arrival: now.plus_millis(i64::from(i)),
        query_address: None,
    };
    store.apply(&obs(
        vec![lease(LeaseKey::Address(na_addr(0)), IaType::Na)],
        0,
    ));
    let prefixes: Vec<LeaseKey> = (0..n)
        .map(|i| {
            let a = Ipv6Addr::new(0x2001, 0xdb8, 0x4000, i as u16, 0, 0, 0, 0);
            LeaseKey::Prefix(Ipv6Prefix::new(a, 64).unwrap())
        })
        .collect();
    let (t, cpu) = (Instant::now(), thread_cpu_ns());
    for (i, k) in prefixes.iter().enumerate() {
        store.apply(&obs(vec![lease(*k, IaType::Pd)], i as u32 + 1));
    }
    let ns = match (cpu, thread_cpu_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64,
        _ => t.elapsed().as_nanos() as f64,
    };
    assert_eq!(store.len() as u32, n + 1);
    ns / f64::from(n)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let clients: u32 = if full { 500_000 } else { 1_000 };
    let lookup_time = if full {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(50)
    };
    let servers: Vec<Arc<ServerId>> = (1..=2u8)
        .map(|n| {
            Arc::new(ServerId {
                duid: vec![0, 1, 0, 1, 0x30, 0x39, 0, n].into(),
                address: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0xffff, 0, 0, 0, u16::from(n)),
            })
        })
        .collect();
    let now = Timestamp::from_secs(1_795_000_000);

    let store = Arc::new(BindingStore::new(CacheConfig::default()));
    let before = rss_bytes();
    let t = Instant::now();
    for i in 0..clients {
        store.apply(&observation(i, &servers, now));
    }
    let insert = t.elapsed();
    let after = rss_bytes();
    let bindings = store.len() as u64;
    assert_eq!(bindings, u64::from(clients) * 2);
    let per_binding = after.saturating_sub(before) / bindings.max(1);
    println!(
        "insert: {bindings} bindings via apply() in {:.2} s ({:.0} bindings/s); RSS {} -> {} MiB, \
         {} MiB of it in transparent huge pages",
        insert.as_secs_f64(),
        bindings as f64 / insert.as_secs_f64(),
        before >> 20,
        after >> 20,
        huge_page_bytes() >> 20
    );

    // Query sets prepared before timing: half exact addresses, half addresses inside prefixes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut queries = Vec::with_capacity(1 << 20);
    for q in 0..(1u32 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % u64::from(clients)) as u32;
        queries.push(if q % 2 == 0 {
            na_addr(i)
        } else {
            let p = u128::from(pd_prefix(i).addr()) | u128::from((x >> 20) & 0xffff_ffff);
            Ipv6Addr::from(p)
        });
    }
    let queries = Arc::new(queries);
    let threads = 2;
    // The concurrent writer: renewals of queried clients, and churn among clients the readers
    // never ask for (indexes `clients..clients + churn`, in the same address plans).
    let churn: u32 = if full { 50_000 } else { 100 };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop, servers) = (store.clone(), stop.clone(), servers.clone());
        std::thread::spawn(move || {
            let mut writes = 0u64;
            let mut round = 0u32;
            let cpu0 = thread_cpu_secs();
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                for k in 0..1024u32 {
                    let j = round.wrapping_mul(1024).wrapping_add(k);
                    let at = now.plus_millis(i64::from(round));
                    let mut o = if k % 4 == 3 {
                        // Churn: present in odd passes over the set, gone in even ones.
                        let c = j / 4 % churn;
                        let mut o = observation(clients + c, &servers, at);
                        if (j / 4 / churn) % 2 == 0 {
                            for l in &mut o.leases {
                                l.valid = 0;
                                l.preferred = 0;
                            }
                        }
                        o
                    } else {
                        observation(j % clients, &servers, at)
                    };
                    // A renewal with a new lifetime: a change the store must publish.
                    for l in &mut o.leases {
                        if l.valid != 0 {
                            l.valid = 3600 + round % 60;
                        }
                    }
                    o.arrival = at;
                    store.apply(&o);
                    writes += 1;
                }
            }
            (writes, thread_cpu_secs() - cpu0)
        })
    };
    let (idle0, steal0) = machine_idle_steal_secs();
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|n| {
            let store = store.clone();
            let queries = queries.clone();
            std::thread::spawn(move || {
                let mut done = 0u64;
                let mut hits = 0u64;
                let cpu0 = thread_cpu_secs();
                let slept0 = voluntary_switches();
                let start = Instant::now();
                let mut j = n * 4096;
                while start.elapsed() < lookup_time {
                    for _ in 0..4096 {
                        let a = queries[j & (queries.len() - 1)];
                        // What the daemon asks per packet: the on-demand path's "does the
                        // cache already cover this source?" before it sends a leasequery
                        // (`daemon::ondemand`), an address hit or else a covering prefix.
                        if store.knows(a) {
                            hits += 1;
                        }
                        j += 1;
                    }
                    done += 4096;
                }
                (
                    done,
                    hits,
                    thread_cpu_secs() - cpu0,
                    voluntary_switches() - slept0,
                )
            })
        })
        .collect();
    let (mut total, mut hits, mut cpu, mut slept) = (0u64, 0u64, 0f64, 0u64);
    for h in handles {
        let (d, k, c, v) = h.join().unwrap();
        total += d;
        hits += k;
        cpu += c;
        slept += v;
    }
    let elapsed = t.elapsed();
    let (idle1, steal1) = machine_idle_steal_secs();
    stop.store(true, Ordering::Relaxed);
    let (writes, writer_cpu) = writer.join().unwrap();
    assert!(writes > 0, "the writer ran during the lookups");
    assert_eq!(hits, total, "every query address is covered by a binding");
    let per_sec = (total as f64 / elapsed.as_secs_f64()) as u64;
    // Lookups per second of wall time are lookups per CPU-second times the CPU the readers got:
    // the two are printed apart, with what took the rest (the writer's CPU, and how often a
    // reader slept on a lock the writer held), so a slow run says which of them it was.
    println!(
        "knows (exact /128, else covering /56) on {threads} threads with a writer \
         ({writes} observations applied, {:.0}/s, {writer_cpu:.2} s CPU): {total} in {:.2} s \
         wall, {:.2} s CPU ({:.0} lookups per CPU-second; readers slept {slept} times; the \
         machine idle {:.2} s, stolen {:.2} s, load average {})",
        writes as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        cpu,
        total as f64 / cpu.max(0.01),
        idle1 - idle0,
        steal1 - steal0,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );

    let dir = tempfile::tempdir().unwrap();
    let all = store.all();
    // The queried bindings and whichever churn clients the writer left present.
    let stored = all.len() as u64;
    assert!(stored >= bindings);
    let t = Instant::now();
    let w = StateWriter::start(PersistConfig::new(dir.path()), all, 0).unwrap();
    let write = t.elapsed();
    w.shutdown();
    let size = std::fs::metadata(dir.path().join(persist::SNAPSHOT_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    let t = Instant::now();
    let loaded = persist::load(dir.path(), now).unwrap();
    let load = t.elapsed();
    assert_eq!(loaded.leases.len() as u64, stored);
    println!(
        "snapshot: write {:.2} s (incl. fsync), load {:.2} s, {} MiB, {} bindings",
        write.as_secs_f64(),
        load.as_secs_f64(),
        size >> 20,
        loaded.leases.len()
    );
    // One client with very many leases: the merge cost per lease must not grow with the count.
    let (small, large) = if full { (1_000, 10_000) } else { (50, 500) };
    // The best of three fills each (thread CPU time): cache and scheduler noise only add.
    let best = |n| {
        (0..3)
            .map(|_| one_client_per_lease_ns(n, &servers[0], now))
            .fold(f64::INFINITY, f64::min)
    };
    let (ns_small, ns_large) = (best(small), best(large));
    println!(
        "one client: {small} leases {ns_small:.0} ns/lease, {large} leases {ns_large:.0} ns/lease \
         of thread CPU (ratio {:.2}; linear fill keeps it near 1)",
        ns_large / ns_small
    );
    println!("cache: {per_binding} B/binding, {per_sec} lookups/s");
}
