//! `cargo bench --bench storm` (root): a reboot storm — every subscriber re-binding at once —
//! through the real agent.
//!
//! The built `lqagent` binary runs in the relay namespace of [`support::storm::Lab`], snooping
//! its uplink `up0` with its default pipeline settings (bulk and the trigger off: only the
//! snooped path is measured). The bench sends 50 000 clients' relayed exchanges
//! (RELAY-FORW(SOLICIT), RELAY-REPL(ADVERTISE), RELAY-FORW(REQUEST), RELAY-REPL(REPLY) each,
//! crafted with the agent's codec: see `support::storm` for why not real relays) as fast as one
//! thread can send them, the server's answers lagging its questions by a window of 1 024
//! clients. The agent matches each REPLY to its REQUEST (the trust rules), admits it, merges it
//! and installs the client's /128 on `sub0`.
//!
//! Measured: exchanges per second from the first packet sent to the last route announced by
//! the kernel; snooped messages dropped (the kernel's count at the capture socket, plus
//! exchanges the classifier lost: evicted or unmatched — must all be 0); REPLY → route, from
//! just before the REPLY is sent to the kernel's route notification read by a thread of the
//! bench (`RTNLGRP_IPV6_ROUTE`); and the CPU both sides used per exchange — the agent's, and the
//! sending thread's (which includes the kernel's delivery of each packet to the capture socket).
//! The sender does not wait for the agent: when the agent needs more CPU per exchange than the
//! sender and the two cannot each have a core, the backlog grows through the storm, and the
//! REPLY → route percentiles are then how long that queue is, not the length of the agent's
//! path. Last line:
//! `storm: <n> clients, <x> exchanges/s, dropped <d>, REPLY -> route p99 <y> ms`.
//!
//! Where a REPLY waits, printed before the last line: REPLY → route by position in the
//! window's REPLY burst (a flat profile: a wait every REPLY shares; a rising one: the burst's
//! own queue, its slope the agent's cost per REPLY minus the sender's), the slowest REPLY of
//! each window in the order sent (one window far above the rest: a stall that happens once,
//! such as a table growing — the windows after 3 584, 7 168, 14 336 and 28 672 clients, where
//! a hash table of a power-of-two size fills to seven eighths), and how long the
//! agent's threads and the bench's route monitor were runnable but waited for a CPU
//! (`schedstat`: on two cores beside a flat-out sender, time that is neither's work), and the
//! monitor's own cost on those cores: its CPU per route, its sleeps on its socket (each ended
//! by a wake-up the kernel does inside the agent's route add) and routes per read.
//!
//! `LQAGENT_STORM_TRACE=1` also prints when each window's first REPLY was sent, on the
//! `CLOCK_MONOTONIC` clock that `perf record -k CLOCK_MONOTONIC` stamps samples with (the three
//! slowest windows are always named with theirs): what the agent ran in a given window.
//!
//! `LQAGENT_STORM_RATE=<exchanges/s>` sends the same storm paced instead (an opt-in diagnostic:
//! up to which rate REPLY → route stays the agent's path); unset, it is sent flat out.
//!
//! `LQAGENT_STORM_SETTLE=1` waits after each window's REPLYs until their routes are in (an
//! opt-in diagnostic: the REPLY burst's own cost, the agent's CPU per REPLY beside the
//! sender's; see `settled`).
//!
//! Without `--bench` in argv (as under `cargo test --all-targets`) it does a tiny smoke run.

use std::time::{Duration, Instant};

use support::isc::{Daemon, wait_for};
use support::scrape::scrape_in;
use support::storm::{self, Lab, RouteMonitor};

/// Clients whose REPLY has been answered while their REQUEST is not: the server's lag.
const WINDOW: usize = 1024;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: u32 = if full { 50_000 } else { 300 };
    if !support::netns::require_root("bench storm") {
        return;
    }
    let lab = Lab::new("storm");
    let dir = tempfile::tempdir().expect("temp dir");
    let proto = lqagent::kernel::DEFAULT_PROTOCOL;
    let cfg = dir.path().join("lqagent.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{state}\"\n\n[snoop]\ninterfaces = [\"up0\"]\n\n\
             [control]\nsocket = \"{sock}\"\n\n\
             [[servers]]\nname = \"srv\"\naddress = \"{server}\"\n\n\
             [[links]]\nname = \"l0\"\ninterface = \"{link_if}\"\nlink_address = \"{link}\"\n\
             interface_id = \"{link_if}\"\nsubscriber_prefixes = [\"{subnet}\"]\n\n\
             [bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
             [routes]\nprotocol = {proto}\n\n[log]\nlevel = \"info\"\n",
            state = dir.path().join("state").display(),
            sock = dir.path().join("control.sock").display(),
            server = storm::SERVER,
            link_if = storm::LINK_IF,
            link = storm::LINK_ADDRESS,
            subnet = storm::SUBNET,
        ),
    )
    .expect("write config");
    let bin = support::bin::lqagent();
    let log = dir.path().join("lqagent.log");
    let mut agent = Daemon::spawn(
        &lab.relay,
        "lqagent",
        &[
            bin.to_str().expect("utf-8 path"),
            "run",
            "--config",
            &cfg.to_string_lossy(),
        ],
        &log,
    );
    wait_for("lqagent to be ready", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(agent.running(), "lqagent exited:\n{text}");
        text.contains(" ready")
    });

    let exchanges: Vec<_> = (0..n).map(|i| storm::exchange(i, 3600)).collect();
    let senders = lab.senders();
    let monitor = RouteMonitor::start(&lab.relay, proto, n as usize);
    let cpu0 = cpu_seconds(agent.pid());
    let (agent_sched0, monitor_sched0, monitor_switches0) = (
        sched_by_name(agent.pid()),
        schedstat(&format!("/proc/self/task/{}/schedstat", monitor.tid())),
        switches(monitor.tid()),
    );
    // The sending thread is this process's main thread (its thread id is the process id).
    let me = std::process::id();
    let sender_path = format!("/proc/{me}/task/{me}/stat");
    let sender0 = cpu_seconds_at(&sender_path);
    let t0 = Instant::now();
    let sent = match (paced_rate(), settled()) {
        (Some(rate), _) => paced(&senders, &exchanges, rate, t0),
        (None, true) => settle(&senders, &exchanges, &monitor, agent.pid()),
        (None, false) => senders.storm(&exchanges, WINDOW),
    };
    let sending = t0.elapsed();
    let sender_cpu = cpu_seconds_at(&sender_path) - sender0;
    let end = Instant::now() + Duration::from_secs(300);
    while monitor.count() < n as usize && Instant::now() < end && agent.running() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu = cpu_seconds(agent.pid()) - cpu0;
    waits(
        &agent_sched0,
        &sched_by_name(agent.pid()),
        [
            monitor_sched0,
            schedstat(&format!("/proc/self/task/{}/schedstat", monitor.tid())),
        ],
        [monitor_switches0, switches(monitor.tid())],
        n,
    );
    // Let the capture read the kernel's drop count (it does when idle) before asking.
    std::thread::sleep(Duration::from_millis(500));
    let seen = monitor.finish();
    let m = scrape_in(&lab.relay);
    let capture = |e: &str| m.value_or_zero("lqagent_snoop_capture_total", &[("event", e)]);
    let classified = |e: &str| m.value_or_zero("lqagent_snoop_classified_total", &[("event", e)]);
    let kernel_drop = capture("kernel_drop");
    let lost = classified("pending_evicted") + classified("reply_unmatched");
    let dropped = (kernel_drop + lost) as u64;

    let mut lat: Vec<Duration> = Vec::with_capacity(n as usize);
    let mut last = t0;
    for (i, at) in sent.iter().enumerate() {
        if let Some(r) = seen.first.get(&storm::client_address(i as u32)) {
            lat.push(r.saturating_duration_since(*at));
            last = last.max(*r);
        }
    }
    let window = if paced_rate().is_some() {
        PACED_WINDOW
    } else {
        WINDOW
    };
    let slow: Vec<String> = seen
        .slow_turns
        .iter()
        .map(|(n, d)| format!("{:.2} ms at {n}", d.as_secs_f64() * 1e3))
        .collect();
    println!(
        "route monitor turns over {} us: {}",
        storm::SLOW_TURN.as_micros(),
        if slow.is_empty() {
            "none".to_string()
        } else {
            slow.join(", ")
        }
    );
    by_position(&sent, &seen, window);
    by_window(&sent, &seen, window);
    lat.sort();
    let pct = |p: f64| -> f64 {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let total = last.saturating_duration_since(t0);
    println!(
        "sent {} packets in {:.3} s ({:.0} exchanges/s offered); last route after {:.3} s",
        4 * n,
        sending.as_secs_f64(),
        f64::from(n) / sending.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "routes {} of {n}; capture received {} kernel_drop {} queue_full (waits) {}; \
         classifier reply_bind {} pending_evicted {} reply_unmatched {}; monitor overflows {} \
         truncated {}, {:.1} routes per read",
        lat.len(),
        capture("received"),
        kernel_drop,
        capture("queue_full"),
        classified("reply_bind"),
        classified("pending_evicted"),
        classified("reply_unmatched"),
        seen.overflows,
        seen.truncated,
        seen.first.len() as f64 / seen.reads.max(1) as f64,
    );
    // The agent's own CPU for the storm: what it costs whatever else the machine runs (on a
    // loaded machine the latencies below are mostly waiting for a CPU).
    println!(
        "agent CPU {cpu:.3} s: {:.1} us per exchange, {:.0} exchanges per CPU-second",
        cpu * 1e6 / f64::from(n),
        f64::from(n) / cpu
    );
    // The sender's own CPU: its sends, and the kernel's delivery of each packet through the
    // veth to the agent's capture socket, which runs in the sender's context. When it is below
    // the agent's cost per exchange on a machine with fewer free cores than the two need, the
    // sender outruns the agent: the backlog grows through the storm and the latencies below
    // measure that queue, not the agent's path.
    println!(
        "sender CPU {sender_cpu:.3} s: {:.1} us per exchange (one thread: sends and the kernel's \
         delivery to the capture socket)",
        sender_cpu * 1e6 / f64::from(n)
    );
    println!(
        "REPLY -> route: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    if lat.len() < n as usize {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<_> = text.lines().rev().take(20).collect();
        eprintln!(
            "lqagent log (last lines, newest first):\n{}",
            tail.join("\n")
        );
    }
    agent.signal("TERM");
    let _ = agent.wait_exit(Duration::from_secs(20));
    println!(
        "storm: {n} clients, {:.0} exchanges/s, dropped {dropped}, REPLY -> route p99 {:.3} ms",
        f64::from(n) / total.as_secs_f64(),
        pct(0.99)
    );
    // After the last line: a storm that lost anything fails, the smoke run under `cargo test`
    // included (no timing is asserted).
    assert_eq!(lat.len(), n as usize, "every client's route installed");
    // A notification the monitor lost (its socket overflowed) or cut would leave a route
    // untimed, or timed by a later notification of it: either way the run does not count.
    assert_eq!(
        (seen.overflows, seen.truncated),
        (0, 0),
        "the route monitor lost no notification"
    );
    assert_eq!(dropped, 0, "no snooped message dropped");
}

/// Where in its window a REPLY waits: the median REPLY → route of the REPLYs at each eighth of
/// the windows' REPLY bursts (first to last sent). Flat: the wait is the same for every REPLY
/// (behind earlier phases' backlog, or a wake-up); rising: the burst's own queue, growing by
/// the agent's cost per REPLY minus the sender's — the slope, per REPLY, printed beside it.
fn by_position(sent: &[Instant], seen: &storm::RoutesSeen, window: usize) {
    const BINS: usize = 8;
    // A storm smaller than a window (the smoke run) is one window of its size.
    let window = window.min(sent.len()).max(BINS);
    let mut bins: Vec<Vec<f64>> = vec![Vec::new(); BINS];
    for (i, at) in sent.iter().enumerate() {
        if let Some(r) = seen.first.get(&storm::client_address(i as u32)) {
            let k = (i % window) * BINS / window;
            bins[k].push(r.saturating_duration_since(*at).as_secs_f64() * 1e3);
        }
    }
    let med: Vec<f64> = bins
        .iter_mut()
        .map(|b| {
            b.sort_by(f64::total_cmp);
            b.get(b.len() / 2).copied().unwrap_or(f64::NAN)
        })
        .collect();
    let slope_us = (med[BINS - 1] - med[0]) * 1e3 / ((window - window / BINS) as f64);
    let cells: Vec<String> = med.iter().map(|m| format!("{m:.2}")).collect();
    println!(
        "REPLY -> route p50 by position in the window's REPLY burst (eighths, ms): {}; \
         slope {slope_us:.1} us per REPLY",
        cells.join(" ")
    );
}

/// When in the storm REPLYs wait longest: the slowest REPLY → route of each window, in the
/// order sent. Even maxima: the burst's own queue; a few windows far above the rest: a stall
/// that happens once (a table growing, a snapshot), which is what sets the p99. The three
/// slowest are named with when their first REPLY was sent on the `CLOCK_MONOTONIC` clock, to
/// find them in a `perf record -a -k CLOCK_MONOTONIC` of the same run (what ran then).
fn by_window(sent: &[Instant], seen: &storm::RoutesSeen, window: usize) {
    let window = window.min(sent.len()).max(1);
    let maxima: Vec<f64> = sent
        .chunks(window)
        .enumerate()
        .map(|(w, chunk)| {
            chunk
                .iter()
                .enumerate()
                .filter_map(|(j, at)| {
                    let r = seen
                        .first
                        .get(&storm::client_address((w * window + j) as u32))?;
                    Some(r.saturating_duration_since(*at).as_secs_f64() * 1e3)
                })
                .fold(0.0_f64, f64::max)
        })
        .collect();
    let cells: Vec<String> = maxima.iter().map(|m| format!("{m:.1}")).collect();
    println!(
        "REPLY -> route max by window (ms, in the order sent): {}",
        cells.join(" ")
    );
    let mut worst: Vec<usize> = (0..maxima.len()).collect();
    worst.sort_by(|a, b| maxima[*b].total_cmp(&maxima[*a]));
    let named: Vec<String> = worst
        .iter()
        .take(3)
        .filter_map(|&w| {
            let at = sent.get(w * window)?;
            Some(format!(
                "#{w} {:.1} ms (first REPLY at monotonic {:.6} s)",
                maxima[w],
                storm::monotonic_secs(*at)
            ))
        })
        .collect();
    println!("slowest windows: {}", named.join(", "));
    // `LQAGENT_STORM_TRACE=1`: every window's first REPLY on the same clock, to compare what
    // ran in any window (the ones where tables grow) with what ran in its neighbours.
    if std::env::var("LQAGENT_STORM_TRACE").is_ok_and(|v| v == "1") {
        let starts: Vec<String> = sent
            .iter()
            .step_by(window)
            .map(|at| format!("{:.6}", storm::monotonic_secs(*at)))
            .collect();
        println!("window starts (monotonic s): {}", starts.join(" "));
    }
}

/// `LQAGENT_STORM_RATE=<exchanges/s>`: an opt-in paced run, for finding the rate up to which
/// the agent's REPLY → route stays short (its path, not a queue). Unset, the storm is sent as
/// fast as one thread can — the measure, and the last line's.
fn paced_rate() -> Option<f64> {
    std::env::var("LQAGENT_STORM_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|r| *r > 0.0)
}

/// Send the storm at `rate` exchanges a second: windows of [`PACED_WINDOW`] clients, each
/// started on its schedule (sleeping, so the sender leaves its CPU to the agent meanwhile).
fn paced(
    senders: &storm::Senders,
    exchanges: &[storm::Exchange],
    rate: f64,
    t0: Instant,
) -> Vec<Instant> {
    println!("paced run: {rate:.0} exchanges/s offered in windows of {PACED_WINDOW} clients");
    let mut sent = Vec::with_capacity(exchanges.len());
    for (i, w) in exchanges.chunks(PACED_WINDOW).enumerate() {
        let due = t0 + Duration::from_secs_f64((i * PACED_WINDOW) as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent.extend(senders.storm(w, PACED_WINDOW));
    }
    sent
}

/// `LQAGENT_STORM_SETTLE=1`: an opt-in diagnostic run that waits, after each window's REPLYs,
/// until the agent has installed all their routes before the next window. Each window's REPLY
/// burst then meets an agent with no backlog from earlier windows, so its REPLY → route is what
/// the burst alone costs, and the agent's CPU from the burst's start to its last route is its
/// cost per REPLY (classify, admit, merge, journal, install, the kernel's route add), printed
/// beside the sender's own per REPLY: the burst's queue grows by their difference per REPLY.
fn settled() -> bool {
    std::env::var("LQAGENT_STORM_SETTLE").is_ok_and(|v| v == "1")
}

/// The settled run (see [`settled`]).
fn settle(
    senders: &storm::Senders,
    exchanges: &[storm::Exchange],
    monitor: &RouteMonitor,
    agent: u32,
) -> Vec<Instant> {
    println!("settled run: each window of {WINDOW} waits for its routes before the next");
    let me = std::process::id();
    let (mut agent_ns, mut sender_ns, mut replies) = (0u64, 0u64, 0usize);
    let (mut a0, mut s0) = (0u64, 0u64);
    let sent = senders.storm_phased(exchanges, WINDOW, |phase| match phase {
        storm::Phase::Replies => {
            a0 = runtime_ns(agent, None);
            s0 = runtime_ns(me, Some(me));
        }
        storm::Phase::RepliesSent(n) => {
            sender_ns += runtime_ns(me, Some(me)) - s0;
            let end = Instant::now() + Duration::from_secs(30);
            while monitor.count() < n && Instant::now() < end {
                std::thread::sleep(Duration::from_micros(200));
            }
            agent_ns += runtime_ns(agent, None) - a0;
            replies = n;
        }
    });
    let per = |ns: u64| ns as f64 / 1e3 / replies.max(1) as f64;
    println!(
        "settled: agent CPU {:.1} us per REPLY (burst start to its last route), sender {:.1} us per REPLY sent",
        per(agent_ns),
        per(sender_ns)
    );
    sent
}

/// Nanoseconds on a CPU (`/proc/PID/task/TID/schedstat`, first field) of thread `tid` of
/// `pid`, or of all its threads.
fn runtime_ns(pid: u32, tid: Option<u32>) -> u64 {
    let read = |path: std::path::PathBuf| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    };
    let task = std::path::PathBuf::from(format!("/proc/{pid}/task"));
    match tid {
        Some(t) => read(task.join(t.to_string()).join("schedstat")),
        None => std::fs::read_dir(&task)
            .map(|d| d.flatten().map(|e| read(e.path().join("schedstat"))).sum())
            .unwrap_or(0),
    }
}

/// `/proc/.../schedstat` of one thread: nanoseconds on a CPU, nanoseconds runnable but waiting
/// for a CPU, time slices run.
fn schedstat(path: &str) -> [u64; 3] {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut f = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    [
        f.next().unwrap_or(0),
        f.next().unwrap_or(0),
        f.next().unwrap_or(0),
    ]
}

/// [`schedstat`] of every thread of `pid`, summed by thread name (the agent's runtime workers
/// share theirs; the journal writer and the snapshot thread have their own).
fn sched_by_name(pid: u32) -> std::collections::BTreeMap<String, [u64; 3]> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let s = schedstat(&t.path().join("schedstat").to_string_lossy());
        let e: &mut [u64; 3] = out.entry(name.trim().to_string()).or_default();
        for (a, b) in e.iter_mut().zip(s) {
            *a += b;
        }
    }
    out
}

/// How long the agent's threads, and the bench's route monitor, were runnable but waited for a
/// CPU during the storm (`schedstat`): with two cores and a sender that takes one flat out, a
/// REPLY can wait for the agent to get a CPU, and a route for the monitor to read it — neither
/// is the agent's work. Printed per thread name, per exchange and per time slice.
///
/// The monitor's own cost is printed beside its wait: its CPU per route (what it takes from the
/// two cores the agent and the sender share) and how often it went to sleep on its socket
/// (voluntary switches: each one a wake-up the kernel does later from inside the agent's route
/// add, when the next notification arrives) or was preempted (involuntary).
fn waits(
    before: &std::collections::BTreeMap<String, [u64; 3]>,
    after: &std::collections::BTreeMap<String, [u64; 3]>,
    [monitor0, monitor1]: [[u64; 3]; 2],
    [switches0, switches1]: [[u64; 2]; 2],
    n: u32,
) {
    let mut parts = Vec::new();
    for (name, a) in after {
        let b = before.get(name).copied().unwrap_or_default();
        let (run, wait, slices) = (
            a[0] - b[0].min(a[0]),
            a[1] - b[1].min(a[1]),
            a[2] - b[2].min(a[2]),
        );
        if slices == 0 {
            continue;
        }
        parts.push(format!(
            "{name} ran {:.1} us, waited {:.1} us per exchange ({} slices, {:.0} us wait each)",
            run as f64 / 1e3 / f64::from(n),
            wait as f64 / 1e3 / f64::from(n),
            slices,
            wait as f64 / 1e3 / slices as f64
        ));
    }
    println!("agent threads: {}", parts.join("; "));
    let (wait, slices) = (
        monitor1[1].saturating_sub(monitor0[1]),
        monitor1[2].saturating_sub(monitor0[2]),
    );
    println!(
        "route monitor waited for a CPU {:.1} ms in all ({} slices, {:.0} us each)",
        wait as f64 / 1e6,
        slices,
        wait as f64 / 1e3 / slices.max(1) as f64
    );
    let run = monitor1[0].saturating_sub(monitor0[0]);
    println!(
        "route monitor ran {:.1} ms: {:.2} us per route; {} sleeps on its socket (wake-ups), \
         {} preemptions",
        run as f64 / 1e6,
        run as f64 / 1e3 / f64::from(n),
        switches1[0].saturating_sub(switches0[0]),
        switches1[1].saturating_sub(switches0[1]),
    );
}

/// Voluntary and involuntary context switches of this process's thread `tid`
/// (`/proc/self/task/TID/status`): a thread that blocks on a socket switches voluntarily, and
/// each such sleep ends in a wake-up.
fn switches(tid: u32) -> [u64; 2] {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    [
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    ]
}

/// Clients per window of a paced run: small, so a window's own burst adds little queue.
const PACED_WINDOW: usize = 64;

/// User + system CPU seconds `pid` has used (`/proc/PID/stat` fields 14 and 15, in clock ticks
/// of 1/100 s — `USER_HZ` is 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    cpu_seconds_at(&format!("/proc/{pid}/stat"))
}

/// User + system CPU seconds from a `stat` file of `/proc` (a process's or one thread's).
fn cpu_seconds_at(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).expect("a stat file of /proc");
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After ')': field 3 is index 0, so utime (14) is index 11 and stime (15) index 12.
    (ticks(11) + ticks(12)) / 100.0
}
