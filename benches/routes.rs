//! Route programming speed: lqagent's installer against `ip -6 -batch`, same routes, same run.
//!
//! In a fresh namespace pair (veth `va`/`vb`, 2001:db8:ffff::1/64 on `va`): install then delete
//! N /128 routes (`dev va`) and N /56 routes via a next hop on `va`, with `ip -6 -batch`
//! and with [`lqagent::kernel::Installer`]. Identical routes both ways (proto 211, metric 1024,
//! next hops `onlink`). Every phase is checked against the kernel (`ip -6 route show proto 211`).
//!
//! Several samples, each timing both tools once, the order alternating from sample to sample
//! (ip first, then lqagent first, ...): the first to run warms the kernel, so a fixed order
//! would hand the second an advantage every time. Per sample: wall times and CPU times (user +
//! system, from `/proc`: the installer's thread, `ip`'s waited-for children). The ratios are
//! printed as median and spread (min..max) over the samples.
//!
//! The goal is on the CPU ratio (on a busy machine wall time also measures the other load), so
//! the last line's ratios are the CPU ratios' medians (the wall ratios in a smoke run, whose
//! CPU times are too small for 10 ms ticks); the rates in brackets are the wall-clock install
//! rates' medians.
//!
//! `cargo bench --bench routes` (root): N = 100 000, 6 samples (`LQA_BENCH_SAMPLES` overrides).
//! Without `--bench` in argv (as under `cargo test --all-targets`): a smoke run with N = 200,
//! 2 samples. Last line: `routes: install <x>x ip-batch (<n>/s vs <m>/s), delete <y>x`.

use support::netns;

use std::io::Write;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use lqagent::kernel::{
    DEFAULT_PROTOCOL, Installer, InstallerConfig, LinkRef, RouteChange, RouteSpec,
};
use lqagent::prefix::Ipv6Prefix;
use netns::{NetNs, require_root, sh, veth};

fn host(i: u32) -> Ipv6Prefix {
    let a = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (i >> 16) as u16, i as u16);
    Ipv6Prefix::host(a)
}

fn pd(i: u32) -> (Ipv6Prefix, Ipv6Addr) {
    let p = Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x4000 + (i >> 8) as u16,
        ((i & 0xff) << 8) as u16,
        0,
        0,
        0,
        0,
    );
    let gw = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, (i % 1000 + 2) as u16);
    (Ipv6Prefix::new(p, 56).expect("aligned /56"), gw)
}

/// CPU seconds from a `/proc/.../stat` line: (utime + stime) of the thread, or
/// (cutime + cstime) of waited-for children. USER_HZ is 100 on Linux.
fn cpu(path: &str, children: bool) -> f64 {
    let s = std::fs::read_to_string(path).expect("read stat");
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .expect("stat format")
        .split_whitespace()
        .collect();
    let (u, k) = if children { (13, 14) } else { (11, 12) };
    let ticks: u64 = f[u].parse::<u64>().expect("ticks") + f[k].parse::<u64>().expect("ticks");
    ticks as f64 / 100.0
}

fn count_ours(ns: &str) -> usize {
    let out = sh(&[
        "ip",
        "-n",
        ns,
        "-6",
        "route",
        "show",
        "proto",
        &DEFAULT_PROTOCOL.to_string(),
    ]);
    out.stdout.iter().filter(|b| **b == b'\n').count()
}

/// Time `ip -6 -batch` over `lines`.
fn ip_batch(ns: &str, lines: impl Iterator<Item = String>) -> Duration {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    for l in lines {
        writeln!(f, "{l}").expect("write batch");
    }
    f.flush().expect("flush");
    let path = f.path().to_str().expect("utf-8 path").to_string();
    let c = cpu("/proc/self/stat", true);
    let t = Instant::now();
    sh(&["ip", "-n", ns, "-6", "-batch", &path]);
    let wall = t.elapsed();
    IP_CPU.with(|x| x.set(x.get() + cpu("/proc/self/stat", true) - c));
    wall
}

thread_local! {
    /// CPU seconds spent by `ip` children, per phase group.
    static IP_CPU: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

struct Times {
    add128: Duration,
    add56: Duration,
    del128: Duration,
    del56: Duration,
    /// CPU seconds (user + system) for the installs and for the deletes.
    cpu_install: f64,
    cpu_delete: f64,
}

impl Times {
    fn install(&self) -> Duration {
        self.add128 + self.add56
    }
    fn delete(&self) -> Duration {
        self.del128 + self.del56
    }
}

fn run_ip(ns: &str, n: u32) -> Times {
    let p = DEFAULT_PROTOCOL;
    IP_CPU.with(|x| x.set(0.0));
    let add128 = ip_batch(
        ns,
        (0..n).map(|i| format!("route add {} dev va proto {p} metric 1024", host(i))),
    );
    let add56 = ip_batch(
        ns,
        (0..n).map(|i| {
            let (d, gw) = pd(i);
            format!("route add {d} via {gw} dev va onlink proto {p} metric 1024")
        }),
    );
    let cpu_install = IP_CPU.with(|x| x.replace(0.0));
    assert_eq!(
        count_ours(ns),
        2 * n as usize,
        "ip -batch installed everything"
    );
    let del128 = ip_batch(
        ns,
        (0..n).map(|i| format!("route del {} dev va proto {p} metric 1024", host(i))),
    );
    let del56 = ip_batch(
        ns,
        (0..n).map(|i| {
            let (d, gw) = pd(i);
            format!("route del {d} via {gw} dev va proto {p} metric 1024")
        }),
    );
    let cpu_delete = IP_CPU.with(|x| x.get());
    assert_eq!(count_ours(ns), 0, "ip -batch deleted everything");
    Times {
        add128,
        add56,
        del128,
        del56,
        cpu_install,
        cpu_delete,
    }
}

/// The default installer settings; `LQA_BENCH_BATCH` / `LQA_BENCH_IN_FLIGHT` override the batch
/// size and the batches in flight, for tuning.
fn bench_config() -> InstallerConfig {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let mut cfg = InstallerConfig::default();
    if let Some(b) = env("LQA_BENCH_BATCH") {
        cfg.batch_size = b;
    }
    if let Some(f) = env("LQA_BENCH_IN_FLIGHT") {
        cfg.max_in_flight = f;
    }
    cfg
}

fn run_ours(ns: &NetNs, n: u32) -> Times {
    let name = ns.name().to_string();
    ns.run_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut inst = Installer::new(bench_config()).await.expect("installer");
            let link = LinkRef::Interface("va".into());
            let hosts: Vec<_> = (0..n)
                .map(|i| RouteChange::Upsert(RouteSpec::address(host(i).addr(), link.clone())))
                .collect();
            let pds: Vec<_> = (0..n)
                .map(|i| {
                    let (d, gw) = pd(i);
                    RouteChange::Upsert(RouteSpec::delegated(d, gw, link.clone()))
                })
                .collect();
            // This thread runs the installer and its netlink connection (current-thread runtime).
            let me = "/proc/thread-self/stat";
            let c = cpu(me, false);
            let t = Instant::now();
            inst.apply(hosts).await.expect("install /128");
            let add128 = t.elapsed();
            let t = Instant::now();
            inst.apply(pds).await.expect("install /56");
            let add56 = t.elapsed();
            let cpu_install = cpu(me, false) - c;
            let n2 = name.clone();
            let count = tokio::task::spawn_blocking(move || count_ours(&n2))
                .await
                .expect("count");
            assert_eq!(count, 2 * n as usize, "lqagent installed everything");
            let snap = inst.stats().snapshot();
            assert_eq!(snap.get(lqagent::kernel::RouteCounter::Failed), 0);
            let c = cpu(me, false);
            let t = Instant::now();
            inst.apply((0..n).map(|i| RouteChange::Withdraw(host(i))))
                .await
                .expect("delete /128");
            let del128 = t.elapsed();
            let t = Instant::now();
            inst.apply((0..n).map(|i| RouteChange::Withdraw(pd(i).0)))
                .await
                .expect("delete /56");
            let del56 = t.elapsed();
            let cpu_delete = cpu(me, false) - c;
            let count = tokio::task::spawn_blocking(move || count_ours(&name))
                .await
                .expect("count");
            assert_eq!(count, 0, "lqagent deleted everything");
            Times {
                add128,
                add56,
                del128,
                del56,
                cpu_install,
                cpu_delete,
            }
        })
    })
}

fn report(who: &str, n: u32, t: &Times) {
    println!(
        "{who:9} CPU (user+sys): install {:.2} s, delete {:.2} s",
        t.cpu_install, t.cpu_delete
    );
    let rate = |d: Duration| (f64::from(n) / d.as_secs_f64()) as u64;
    println!(
        "{who:9} add /128 {:>8.3} s ({:>7}/s)  add /56 {:>8.3} s ({:>7}/s)  del /128 {:>8.3} s  del /56 {:>8.3} s",
        t.add128.as_secs_f64(),
        rate(t.add128),
        t.add56.as_secs_f64(),
        rate(t.add56),
        t.del128.as_secs_f64(),
        t.del56.as_secs_f64(),
    );
}

/// Median and spread (min..max) of `xs`.
fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    (median, v[0], v[v.len() - 1])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !require_root("bench routes") {
        return;
    }
    let n: u32 = if full { 100_000 } else { 200 };
    // LQA_BENCH_SAMPLES overrides the number of samples (each times both tools once).
    let samples: usize = std::env::var("LQA_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(if full { 6 } else { 2 });
    let ns = NetNs::new("bench");
    let peer = NetNs::new("bench");
    veth(&ns, "va", &peer, "vb");
    ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:ffff::1/64",
        "dev",
        "va",
        "nodad",
    ]);

    // The order alternates: whichever runs first pays for warming the kernel's FIB and
    // allocator caches, so a fixed order would favour the second tool every time.
    let (mut cpu_in, mut cpu_del, mut wall_in, mut wall_del) = (vec![], vec![], vec![], vec![]);
    let (mut ours_rates, mut ip_rates) = (vec![], vec![]);
    let total = f64::from(2 * n);
    for s in 0..samples {
        let ip_first = s % 2 == 0;
        let (ip, ours) = if ip_first {
            let ip = run_ip(ns.name(), n);
            (ip, run_ours(&ns, n))
        } else {
            let ours = run_ours(&ns, n);
            (run_ip(ns.name(), n), ours)
        };
        println!(
            "sample {s} ({} first):",
            if ip_first { "ip -batch" } else { "lqagent" }
        );
        report("ip -batch", n, &ip);
        report("lqagent", n, &ours);
        if ours.cpu_install > 0.0 && ours.cpu_delete > 0.0 {
            cpu_in.push(ip.cpu_install / ours.cpu_install);
            cpu_del.push(ip.cpu_delete / ours.cpu_delete);
        }
        wall_in.push(ip.install().as_secs_f64() / ours.install().as_secs_f64());
        wall_del.push(ip.delete().as_secs_f64() / ours.delete().as_secs_f64());
        ours_rates.push(total / ours.install().as_secs_f64());
        ip_rates.push(total / ip.install().as_secs_f64());
    }
    let (wi, wi_lo, wi_hi) = stats(&wall_in);
    let (wd, wd_lo, wd_hi) = stats(&wall_del);
    println!(
        "wall ratio over {samples} samples, median (min..max): install {wi:.2}x ({wi_lo:.2}..{wi_hi:.2}), \
         delete {wd:.2}x ({wd_lo:.2}..{wd_hi:.2})"
    );
    // CPU ticks are 10 ms: a smoke run of 200 routes may read 0 for lqagent; the wall ratio
    // stands in then.
    let (ci, cd) = if cpu_in.is_empty() {
        println!("CPU ratio: too little CPU time to read (smoke run); the last line uses wall");
        (wi, wd)
    } else {
        let (ci, ci_lo, ci_hi) = stats(&cpu_in);
        let (cd, cd_lo, cd_hi) = stats(&cpu_del);
        println!(
            "CPU ratio (load-independent) over {} samples, median (min..max): \
             install {ci:.2}x ({ci_lo:.2}..{ci_hi:.2}), delete {cd:.2}x ({cd_lo:.2}..{cd_hi:.2})",
            cpu_in.len()
        );
        (ci, cd)
    };
    let (ours_rate, _, _) = stats(&ours_rates);
    let (ip_rate, _, _) = stats(&ip_rates);
    println!(
        "routes: install {ci:.2}x ip-batch ({}/s vs {}/s), delete {cd:.2}x",
        ours_rate as u64, ip_rate as u64
    );
}
