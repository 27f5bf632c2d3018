//! kill -9 in the middle of installing 50 000 routes, then a restart with the same desired set:
//! the kernel must end with exactly the expected routes of ours (0 missing, 0 extra), and routes
//! of another protocol — on stale and on desired prefixes alike — untouched.
//!
//! The installer runs in a child process: this test binary re-executed (`current_exe()`) inside
//! the namespace with a name filter and `LQA_KILL9_CHILD` set, running the ignored
//! `kill9_child` test. The child reports progress on stdout; the parent kills it with SIGKILL once
//! a good part (but not all) is in. Every check reads the kernel with `ip -6 -j route show`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv6Addr;
use std::process::Stdio;

use lqagent::kernel::{
    DEFAULT_PROTOCOL, Installer, InstallerConfig, LinkRef, RouteChange, RouteSpec,
};
use lqagent::prefix::Ipv6Prefix;
use support::netns::{
    MetricRoute, agent_and_subscriber, proto_routes_with_metric, require_root, sh,
};

const CHILD_ENV: &str = "LQA_KILL9_CHILD";
const HALF: u32 = 25_000;
const KILL_AFTER: usize = 15_000;
const CHUNK: usize = 5_000;
const KILL_DELAY_MS: u64 = 100;

/// 25 000 IA_NA /128s and 25 000 delegated /56s on the link of 2001:db8:10::1.
fn desired() -> Vec<RouteSpec> {
    let link = LinkRef::LinkAddress("2001:db8:10::1".parse().unwrap());
    let mut v = Vec::new();
    for i in 0..HALF {
        let a = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 1, (i >> 16) as u16, i as u16);
        v.push(RouteSpec::address(a, link.clone()));
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
        let gw = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, (i % 500 + 2) as u16);
        v.push(RouteSpec::delegated(
            Ipv6Prefix::new(p, 56).unwrap(),
            gw,
            link.clone(),
        ));
    }
    v
}

/// (dst, gateway, dev, metric) as the kernel shows it.
type Row = MetricRoute;

fn expected() -> BTreeSet<Row> {
    desired()
        .into_iter()
        .map(|s| {
            (
                s.dst.to_string(),
                s.via.map(|g| g.to_string()),
                "sub0".to_string(),
                1024,
            )
        })
        .collect()
}

/// The child: install the desired set in chunks of 5000 changes, as the cache would feed them,
/// printing how many are done before each chunk.
/// `f`'s test name as the harness lists it (`kernel_kill9::f`), for `--exact`.
fn test_name(f: &str) -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{f}")
}

#[test]
#[ignore = "child half of installer_killed_mid_way_converges_on_restart, which runs it"]
fn kill9_child() {
    assert!(
        std::env::var(CHILD_ENV).is_ok(),
        "run only by installer_killed_mid_way_converges_on_restart"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut inst = Installer::new(InstallerConfig::default()).await.unwrap();
        let mut done = 0;
        let mut out = std::io::stdout();
        for chunk in desired().chunks(CHUNK) {
            // Announce before applying, so the parent's SIGKILL lands inside an apply.
            writeln!(out, "progress {done}").unwrap();
            out.flush().unwrap();
            inst.apply(chunk.iter().cloned().map(RouteChange::Upsert))
                .await
                .unwrap();
            done += chunk.len();
        }
        writeln!(out, "progress done").unwrap();
    });
}

#[test]
fn installer_killed_mid_way_converges_on_restart() {
    if !require_root("installer_killed_mid_way_converges_on_restart") {
        return;
    }
    let (agent, _sub) = agent_and_subscriber("kill9");
    let name = agent.name().to_string();

    // Left behind by an earlier life: stale routes of ours; and static routes on a stale and on
    // desired prefixes, at another metric.
    let mut batch = tempfile::NamedTempFile::new().unwrap();
    for i in 0..300u32 {
        writeln!(
            batch,
            "route add 2001:db8:9000:{:x}::/64 dev sub0 proto {DEFAULT_PROTOCOL}",
            i
        )
        .unwrap();
    }
    writeln!(
        batch,
        "route add 2001:db8:9000:5::/64 dev sub0 proto static metric 2048"
    )
    .unwrap();
    writeln!(
        batch,
        "route add 2001:db8:4000::/56 via fe80::99 dev sub0 proto static metric 2048"
    )
    .unwrap();
    writeln!(
        batch,
        "route add 2001:db8:10::1:0:0/128 dev sub0 proto static metric 2048"
    )
    .unwrap();
    batch.flush().unwrap();
    sh(&[
        "ip",
        "-n",
        &name,
        "-6",
        "-batch",
        batch.path().to_str().unwrap(),
    ]);
    let statics = proto_routes_with_metric(&name, "static");
    assert_eq!(statics.len(), 3);

    let exe = std::env::current_exe().unwrap();
    let mut child = agent
        .command(exe.to_str().unwrap())
        .args(["--exact", &test_name("kill9_child")])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut killed_at = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let Some(p) = line.strip_prefix("progress ") else {
            continue;
        };
        let n: usize = p
            .parse()
            .unwrap_or_else(|_| panic!("child finished before the kill: {line}"));
        if n >= KILL_AFTER {
            // The chunk is under way: let some of its batches reach the kernel first.
            std::thread::sleep(std::time::Duration::from_millis(KILL_DELAY_MS));
            child.kill().unwrap(); // SIGKILL
            killed_at = Some(n);
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed_at.is_some() && !status.success(),
        "child was killed: {status:?}"
    );

    let expect = expected();
    let after_kill = proto_routes_with_metric(&name, &DEFAULT_PROTOCOL.to_string());
    let present = after_kill.intersection(&expect).count();
    eprintln!(
        "killed after progress {killed_at:?}: {present} of {} desired routes in the kernel, {} routes of ours in all",
        expect.len(),
        after_kill.len()
    );
    assert!(
        present >= KILL_AFTER && present < expect.len(),
        "killed mid-way: {present}"
    );
    if present % CHUNK != 0 {
        eprintln!(
            "the kill landed inside a chunk ({} of its routes in)",
            present % CHUNK
        );
    }

    // Restart with the same desired set.
    let report = agent.run_in(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut inst = Installer::new(InstallerConfig::default()).await.unwrap();
            inst.set_desired(desired()).await.unwrap()
        })
    });
    let after = proto_routes_with_metric(&name, &DEFAULT_PROTOCOL.to_string());
    let missing = expect.difference(&after).count();
    let extra = after.difference(&expect).count();
    eprintln!("after restart: {report:?}; missing {missing}, extra {extra}");
    assert_eq!((missing, extra), (0, 0));
    assert_eq!(report.deleted, 300, "the stale routes of ours went");
    assert_eq!(report.added, expect.len() - present);
    assert_eq!(
        proto_routes_with_metric(&name, "static"),
        statics,
        "other protocol untouched"
    );
}
