//! The state writer on a full disk (a small tmpfs the test fills): persistence degrades,
//! nothing else does. Writes fail with ENOSPC → the writer enters the degraded mode (counted,
//! flagged), drops journal records instead of buffering them, leaves the journal ending on a
//! whole record, and once space returns writes a snapshot and leaves the mode; an unwritable
//! directory at start is not an error. Root only (mount).

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lqagent::cache::{ClientInfo, IaType, Lease, LeaseKey, Link, ServerId, Source, Timestamp};
use lqagent::persist::{self, JournalHandle, PersistConfig, Record, StateWriter};
use support::netns::require_root;
use support::tmpfs::SmallFs;

const T0: i64 = 1_795_000_000_000;

fn op(i: u32) -> (LeaseKey, Lease) {
    let k = LeaseKey::Address(Ipv6Addr::new(
        0x2001,
        0xdb8,
        1,
        0,
        0,
        0,
        (i >> 16) as u16,
        i as u16,
    ));
    let l = Lease {
        client: Arc::new(ClientInfo {
            duid: vec![0, 3, 0, 1, 2, 3, 4, (i % 250) as u8].into(),
            link: Link {
                address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
                interface: None,
            },
            relay: None,
        }),
        server: Arc::new(ServerId {
            duid: vec![0, 3, 0, 1, 9].into(),
            address: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1),
        }),
        ia: IaType::Na,
        iaid: i,
        preferred_until: Timestamp::from_millis(T0 + 1_000_000),
        valid_until: Timestamp::from_millis(T0 + 2_000_000),
        last_transaction: Timestamp::from_millis(T0),
        arrival: Timestamp::from_millis(T0),
        source: Source::Snoop,
        srsn: None,
        next_hop: None,
    };
    (k, l)
}

/// Poll `f` every 20 ms for up to `secs` seconds.
fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Answer the writer's snapshot requests as the cache task does, until `done`.
fn serve_snapshots(h: &JournalHandle, mirror: &BTreeMap<LeaseKey, Lease>) {
    if h.wants_snapshot() {
        assert!(h.snapshot(mirror.iter().map(|(k, l)| (*k, l.clone())).collect()));
    }
}

#[test]
fn full_disk_degrades_persistence_and_recovers() {
    if !require_root("full_disk_degrades_persistence_and_recovers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = SmallFs::mount(&dir.path().join("state"), "256k");
    let state = dir.path().join("state");
    let mut mirror = BTreeMap::new();
    for i in 0..100 {
        let (k, l) = op(i);
        mirror.insert(k, l);
    }
    let mut cfg = PersistConfig::new(&state);
    cfg.sync_interval_ms = 50;
    let w = StateWriter::start(cfg, mirror.clone().into_iter().collect(), 0).unwrap();
    let h = w.handle();
    let st = h.stats().clone();
    // The initial snapshot (the writer thread's first write) is on disk before it fills.
    assert!(h.sync());
    assert!(!st.is_degraded());

    // The disk fills up at run time: appends fail, the mode is entered once.
    fs.fill();
    let mut i = 100;
    wait("the writer to notice the full disk", 10, || {
        let (k, l) = op(i);
        mirror.insert(k, l.clone());
        h.record(Record::Upsert(k, l));
        i += 1;
        h.sync();
        st.is_degraded()
    });
    assert_eq!(st.degraded_entered.load(Ordering::Relaxed), 1);
    let errors = st.write_errors.load(Ordering::Relaxed);
    assert!(errors >= 1);
    // While degraded, records are dropped, not buffered.
    let dropped = st.records_dropped.load(Ordering::Relaxed);
    for _ in 0..1000 {
        let (k, l) = op(i);
        mirror.insert(k, l.clone());
        h.record_blocking(Record::Upsert(k, l));
        i += 1;
    }
    h.sync();
    assert!(st.records_dropped.load(Ordering::Relaxed) >= dropped + 1000);
    assert_eq!(
        st.degraded_entered.load(Ordering::Relaxed),
        1,
        "one transition"
    );
    // What is on disk still loads, and the journal ends on a whole record.
    let l = persist::load(&state, Timestamp::from_millis(T0)).unwrap();
    assert!(l.damaged.is_empty(), "{:?}", l.damaged);
    assert_eq!(l.truncated_bytes, 0);
    assert!(l.leases.len() >= 100);

    // Space returns: the next retry writes a snapshot and the mode is left.
    fs.free();
    wait("the writer to recover", 10, || {
        serve_snapshots(&h, &mirror);
        std::thread::sleep(Duration::from_millis(50));
        !st.is_degraded()
    });
    assert_eq!(st.degraded_left.load(Ordering::Relaxed), 1);
    assert!(h.sync());
    let l = persist::load(&state, Timestamp::from_millis(T0)).unwrap();
    assert_eq!(l.leases.into_iter().collect::<BTreeMap<_, _>>(), mirror);
    w.shutdown();
}

#[test]
fn unwritable_state_dir_at_start_is_not_fatal() {
    if !require_root("unwritable_state_dir_at_start_is_not_fatal") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let fs = SmallFs::mount(&state, "64k");
    fs.fill();
    let mut mirror = BTreeMap::new();
    for i in 0..500 {
        let (k, l) = op(i);
        mirror.insert(k, l);
    }
    let w = StateWriter::start(
        PersistConfig::new(&state),
        mirror.clone().into_iter().collect(),
        0,
    )
    .expect("a full state directory does not stop the start");
    let h = w.handle();
    let st = h.stats().clone();
    // The initial snapshot is the writer thread's first write: once synced, it has failed.
    assert!(h.sync());
    assert!(st.is_degraded());
    assert!(st.write_errors.load(Ordering::Relaxed) >= 1);
    // No half-written temporary file is left holding space.
    assert!(!state.join("bindings.snap.tmp").exists());
    fs.free();
    // The snapshot held since the start is written at the next retry (1 s).
    wait("the writer to recover", 10, || !st.is_degraded());
    assert!(h.sync());
    let l = persist::load(&state, Timestamp::from_millis(T0)).unwrap();
    assert_eq!(l.leases.into_iter().collect::<BTreeMap<_, _>>(), mirror);
    w.shutdown();
}
