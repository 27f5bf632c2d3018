//! `cargo bench --bench recovery` (root): recovery at start through the daemon's own path,
//! against the install-only floor measured in the same run.
//!
//! For 100 000 and 1 000 000 routes (IA_NA addresses + delegated prefixes, over 8 links) five
//! runs, each a child process in the agent namespace of one lab (`support::recovery::measure`):
//! the floor (the same routes, with the same kernel expiry, pushed straight through the
//! installer), bulk leasequery from the reference server over TCP, the floor again, the state
//! file the bulk run left, the floor a third time — bulk and state file both through
//! `lqagent::daemon::start_recovery`, the start-up steps of `lqagent run` (admission, cache
//! task, journal, route feed, installer). Every sample is printed; the ratios are to the median
//! of the three floor samples (goal ≤ 1.5×). The ratio and the peak RSS
//! (VmHWM of the child doing the work) are printed, and beside them each run's CPU time and its
//! ratio to the floor's with the load average (a busy machine moves the wall ratio, hardly the
//! CPU one). Last line:
//! `recovery: 100k routes state-file <r>x bulk <r>x, 1M routes state-file <r>x bulk <r>x (floor median <s> s / <s> s), peak RSS <n> MiB`.
//!
//! `LQAGENT_BENCH_RECOVERY_ROUTES=N` measures only N routes (development);
//! `LQAGENT_BENCH_RECOVERY_MIRROR_EXPIRY=false` runs the daemon and the floor without the kernel
//! expiry (`routes.mirror_expiry` off), to see what it costs. Without `--bench` in
//! argv (as under `cargo test --all-targets`) it does a tiny smoke run of the same path.

use support::recovery::{self as recovery_support, ChildRun, Measured};

/// The agent's allocator (src/main.rs): the daemon path runs in this bench's own child, so
/// the runs and the floor are timed with what `lqagent run` allocates with.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == recovery_support::CHILD_ARG) {
        recovery_support::child(&args[i + 1..]);
        return;
    }
    if !support::netns::require_root("bench recovery") {
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let only = std::env::var("LQAGENT_BENCH_RECOVERY_ROUTES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    let sizes: Vec<u32> = match (full, only) {
        (_, Some(n)) => vec![n],
        (true, None) => vec![100_000, 1_000_000],
        (false, None) => vec![400],
    };
    let runs: Vec<Measured> = sizes
        .iter()
        .map(|&n| {
            let m = recovery_support::measure(n);
            print_detail(&m);
            m
        })
        .collect();
    let peak_mib = runs
        .iter()
        .flat_map(|m| [m.state_file.peak_rss_kib, m.bulk.peak_rss_kib])
        .max()
        .unwrap_or(0)
        / 1024;
    match runs.as_slice() {
        [small, big] if small.routes == 100_000 && big.routes == 1_000_000 => println!(
            "recovery: 100k routes state-file {:.2}x bulk {:.2}x, 1M routes state-file {:.2}x \
             bulk {:.2}x (floor median {:.3} s / {:.3} s), peak RSS {peak_mib} MiB",
            small.ratio(&small.state_file),
            small.ratio(&small.bulk),
            big.ratio(&big.state_file),
            big.ratio(&big.bulk),
            small.floor().as_secs_f64(),
            big.floor().as_secs_f64(),
        ),
        _ => {
            for m in &runs {
                println!(
                    "recovery: {} routes state-file {:.2}x bulk {:.2}x (floor median {:.3} s), peak RSS \
                     {peak_mib} MiB",
                    m.routes,
                    m.ratio(&m.state_file),
                    m.ratio(&m.bulk),
                    m.floor().as_secs_f64(),
                )
            }
        }
    }
}

/// Each run's wall time and ratio (the goal's), and its CPU time (every thread of the child,
/// user and system) with its ratio to the floor's: on a busy machine the wall ratio moves with
/// the other work, the CPU ratio hardly does. The load average is printed beside them.
fn print_detail(m: &Measured) {
    println!(
        "  load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let line = |what: &str, r: &ChildRun| {
        println!(
            "  {} routes {what:<10} {:>8.3} s  {:>5.2}x floor  CPU {:>7.2} s {:>5.2}x floor  peak \
             RSS {:>5} MiB  journal {} written {} dropped {} snapshots  bulk bindings {}",
            m.routes,
            r.elapsed.as_secs_f64(),
            m.ratio(r),
            r.cpu.as_secs_f64(),
            r.cpu.as_secs_f64() / m.floor_cpu().as_secs_f64().max(0.001),
            r.peak_rss_kib / 1024,
            r.journal.0,
            r.journal.1,
            r.journal.2,
            r.bulk_bindings,
        )
    };
    // In the order run: floor, bulk, floor, state file, floor.
    let [f0, f1, f2] = m.floors.as_slice() else {
        panic!("three floor samples, not {}", m.floors.len())
    };
    line("floor 1", f0);
    line("bulk", &m.bulk);
    line("floor 2", f1);
    line("state-file", &m.state_file);
    line("floor 3", f2);
    println!(
        "  {} routes floor median {:.3} s (CPU {:.2} s): every ratio is to it; the reference \
         server's CPU during the bulk run (on the same cores, not in the agent's) {:.2} s",
        m.routes,
        m.floor().as_secs_f64(),
        m.floor_cpu().as_secs_f64(),
        m.bulk_server_cpu.as_secs_f64()
    );
}
