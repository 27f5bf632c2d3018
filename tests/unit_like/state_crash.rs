//! The state file survives SIGKILL at any point: a child process (this test binary re-executed
//! with `LQAGENT_CRASH_CHILD` set) appends journal records and takes snapshots, split into 7-byte
//! `write(2)` calls so that kills land inside records; the parent kills it at a random moment,
//! reloads, and checks that what it got is exactly the state after some prefix of the operations
//! the child performed — never a corrupt, partial or invented lease. Plus unit-sized checks of
//! the corrupt-file and expiry paths.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lqagent::cache::{
    AccessPort, ClientInfo, IaType, Lease, LeaseKey, Link, RelayData, ServerId, Source, Timestamp,
};
use lqagent::persist::{self, PersistConfig, Record, StateWriter};
use lqagent::wire::Duid;
use rand::Rng;

const OPS: u64 = 2000;
const KEYS: u64 = 48;
const T0: i64 = 1_795_000_000_000;
const CHILD_ENV: &str = "LQAGENT_CRASH_CHILD";

fn key(i: u64) -> LeaseKey {
    let k = (i % KEYS) as u16;
    if k % 3 == 0 {
        LeaseKey::Prefix(
            lqagent::prefix::Ipv6Prefix::new(
                Ipv6Addr::new(0x2001, 0xdb8, 0x100 + k, 0, 0, 0, 0, 0),
                56,
            )
            .unwrap(),
        )
    } else {
        LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, k))
    }
}

/// Operation `i`: every 7th is a removal, the rest an upsert whose content encodes `i`.
fn op(i: u64) -> Record {
    let k = key(i);
    if i % 7 == 3 {
        return Record::Remove(k);
    }
    let duid: Duid = (0..(i % 40) as u8 + 4)
        .map(|b| b ^ (i as u8))
        .collect::<Vec<u8>>()
        .into();
    Record::Upsert(
        k,
        Lease {
            client: Arc::new(ClientInfo {
                duid,
                link: Link {
                    address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
                    interface: (i % 2 == 0).then(|| Arc::from(format!("cm{}", i % 5))),
                },
                relay: (i % 3 == 0).then(|| {
                    Box::new(RelayData {
                        peer_address: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i as u16)),
                        interface_id: Some(vec![1, 2, (i % 251) as u8].into()),
                        remote_id: None,
                        // Every other relayed client behind an LDRA: its access port persists.
                        access: (i % 2 == 0).then(|| {
                            Box::new(AccessPort {
                                levels: 1,
                                peer_address: Some(Ipv6Addr::new(
                                    0xfe80, 0, 0, 0, 0, 0, 1, i as u16,
                                )),
                                interface_id: Some(vec![b'p', (i % 7) as u8].into()),
                                remote_id: (i % 4 == 0).then(|| vec![0, 0, 0, 9, i as u8].into()),
                            })
                        }),
                    })
                }),
            }),
            server: Arc::new(ServerId {
                duid: vec![0, 3, 0, 1, (i % 3) as u8].into(),
                address: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1),
            }),
            ia: if matches!(k, LeaseKey::Prefix(_)) {
                IaType::Pd
            } else {
                IaType::Na
            },
            iaid: i as u32,
            preferred_until: Timestamp::from_millis(T0 + 1_000_000 + i as i64),
            valid_until: Timestamp::from_millis(T0 + 2_000_000 + i as i64),
            last_transaction: Timestamp::from_millis(T0 - i as i64),
            arrival: Timestamp::from_millis(T0 + i as i64),
            source: Source::Bulk,
            srsn: (i % 2 == 1).then_some(i as u32),
            next_hop: None,
        },
    )
}

/// The state after the first `m` operations.
fn state_after(m: u64) -> BTreeMap<LeaseKey, Lease> {
    let mut s = BTreeMap::new();
    for i in 0..m {
        match op(i) {
            Record::Upsert(k, l) => {
                s.insert(k, l);
            }
            Record::Remove(k) => {
                s.remove(&k);
            }
        }
    }
    s
}

fn child(dir: &Path) {
    let mut cfg = PersistConfig::new(dir);
    cfg.max_write_chunk = 7;
    cfg.queue = 64;
    let w = StateWriter::start(cfg, Vec::new(), 0).unwrap();
    let h = w.handle();
    let mut mirror = BTreeMap::new();
    for i in 0..OPS {
        let r = op(i);
        match &r {
            Record::Upsert(k, l) => {
                mirror.insert(*k, l.clone());
            }
            Record::Remove(k) => {
                mirror.remove(k);
            }
        }
        assert!(h.record_blocking(r));
        if i % 250 == 249 {
            assert!(h.snapshot(mirror.iter().map(|(k, l)| (*k, l.clone())).collect()));
        }
    }
    assert!(h.sync());
    w.shutdown();
}

/// Not a test of its own: the entry point of the child process, which
/// `sigkill_at_random_points_leaves_a_prefix` runs (re-executing this binary with `--ignored`).
#[test]
#[ignore = "child half of sigkill_at_random_points_leaves_a_prefix, which runs it"]
fn crash_child_entry() {
    let dir =
        std::env::var(CHILD_ENV).expect("run only by sigkill_at_random_points_leaves_a_prefix");
    child(Path::new(&dir));
}

/// `f`'s test name as the harness lists it (`state_crash::f`), for `--exact`.
fn test_name(f: &str) -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{f}")
}

fn spawn_child(dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .arg(test_name("crash_child_entry"))
        .args(["--exact", "--ignored", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The `m` for which `loaded == state_after(m)`, if any.
fn prefix_length(
    loaded: &BTreeMap<LeaseKey, Lease>,
    cache: &mut Vec<BTreeMap<LeaseKey, Lease>>,
) -> Option<u64> {
    // Candidates: the highest operation index seen, and (for removals at the end) a few after it.
    let hi = loaded
        .values()
        .map(|l| u64::from(l.iaid) + 1)
        .max()
        .unwrap_or(0);
    (hi..=(hi + KEYS).min(OPS)).find(|m| {
        let m = *m as usize;
        while cache.len() <= m {
            let n = cache.len() as u64;
            cache.push(state_after(n));
        }
        &cache[m] == loaded
    })
}

#[test]
fn sigkill_at_random_points_leaves_a_prefix() {
    let base = tempfile::tempdir().unwrap();
    // Calibrate: how long does a full child run take on this machine?
    let d0 = base.path().join("calibrate");
    let t = Instant::now();
    let status = spawn_child(&d0).wait().unwrap();
    assert!(status.success(), "child failed on its own");
    let full = t.elapsed();
    let l = persist::load(&d0, Timestamp::from_millis(T0)).unwrap();
    let got: BTreeMap<_, _> = l.leases.into_iter().collect();
    assert_eq!(got, state_after(OPS), "a clean run must reload completely");

    let mut cache = Vec::new();
    let mut rng = rand::rng();
    let (mut torn, mut empty, mut mid) = (0, 0, 0);
    let runs = 200;
    for run in 0..runs {
        let dir = base.path().join(format!("run{run}"));
        let mut c = spawn_child(&dir);
        let delay = rng.random_range(0..full.as_micros() as u64 + 1);
        std::thread::sleep(Duration::from_micros(delay));
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
        if !dir.join(persist::SNAPSHOT_FILE).exists() {
            empty += 1; // killed before the first snapshot landed
        }
        let loaded = persist::load(&dir, Timestamp::from_millis(T0)).unwrap();
        assert!(
            loaded.moved_aside.is_empty(),
            "run {run}: a crash must never look like corruption"
        );
        if loaded.truncated_bytes > 0 {
            torn += 1;
        }
        let map: BTreeMap<_, _> = loaded.leases.into_iter().collect();
        let m = prefix_length(&map, &mut cache);
        assert!(
            m.is_some(),
            "run {run}: reload is not the state after any prefix of the operations"
        );
        if m.is_some_and(|m| m > 0 && m < OPS) {
            mid += 1;
        }
        // Loading again after the truncation gives the same, with nothing more to cut.
        let again = persist::load(&dir, Timestamp::from_millis(T0)).unwrap();
        assert_eq!(again.truncated_bytes, 0);
        assert_eq!(again.leases.into_iter().collect::<BTreeMap<_, _>>(), map);
    }
    eprintln!(
        "state_crash: {runs} runs, {mid} killed mid-stream, {torn} torn tails, {empty} before first snapshot; full run {full:?}"
    );
    assert!(
        mid >= runs / 4,
        "too few kills landed mid-stream ({mid}) to mean anything"
    );
    assert!(
        torn > 0,
        "no kill produced a torn record; the test is not exercising truncation"
    );
}

/// Offsets of the records of a state file (after its 24-byte header).
fn record_offsets(b: &[u8]) -> Vec<usize> {
    let mut at = 24;
    let mut v = Vec::new();
    while at + 8 <= b.len() {
        v.push(at);
        at += 8 + u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    }
    v
}

#[test]
fn a_corrupt_record_costs_that_record_not_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let all = state_after(100);
    let w = StateWriter::start(
        PersistConfig::new(dir.path()),
        all.clone().into_iter().collect(),
        0,
    )
    .unwrap();
    let h = w.handle();
    // Journal: three upserts of new keys' content (ops 100..103).
    for i in 100..103 {
        assert!(h.record_blocking(op(i)));
    }
    assert!(h.sync());
    w.shutdown();
    let snap = dir.path().join(persist::SNAPSHOT_FILE);
    let journal = dir.path().join(persist::JOURNAL_FILE);
    let mut b = std::fs::read(&snap).unwrap();
    let recs = record_offsets(&b);
    assert_eq!(recs.len(), all.len() + 1, "upserts and End");
    // Table: (what is damaged, how) → one record lost each time.
    let victims = [recs[0] + 3, recs[10] + 20, recs[all.len() / 2] + 8];
    for v in victims {
        b[v] ^= 0x10;
    }
    std::fs::write(&snap, &b).unwrap();
    let mut j = std::fs::read(&journal).unwrap();
    let jrecs = record_offsets(&j);
    assert_eq!(jrecs.len(), 3);
    j[jrecs[1] + 12] ^= 0x01; // the middle journal record
    std::fs::write(&journal, &j).unwrap();

    let l = persist::load(dir.path(), Timestamp::from_millis(T0)).unwrap();
    let got: BTreeMap<_, _> = l.leases.iter().cloned().collect();
    assert_eq!(l.lost_records, 3, "three snapshot records lost");
    assert_eq!(
        l.journal_records, 2,
        "the journal records around the bad one"
    );
    assert_eq!(l.damaged.len(), 4, "{:?}", l.damaged);
    assert_eq!(l.truncated_bytes, 0, "damage in the middle is no torn tail");
    // Exactly the damaged records are missing: snapshot records are in key order, so the
    // victims are the 1st, 11th and middle key; the journal's middle record (op 101) is lost.
    let keys: Vec<LeaseKey> = all.keys().copied().collect();
    let mut want = all.clone();
    for i in [0, 10, all.len() / 2] {
        want.remove(&keys[i]);
    }
    for i in [100, 102] {
        match op(i) {
            Record::Upsert(k, l) => {
                want.insert(k, l);
            }
            Record::Remove(k) => {
                want.remove(&k);
            }
        }
    }
    assert_eq!(got, want);
    // The damaged snapshot stays in place (the next snapshot replaces it); a copy is kept.
    assert!(snap.exists());
    assert_eq!(l.moved_aside.len(), 1);
    assert!(std::fs::read(&l.moved_aside[0]).unwrap() == b);

    // A bad header costs the header: the records behind it still load (journal unusable).
    let mut b2 = b.clone();
    b2[0] ^= 0xff;
    std::fs::write(&snap, &b2).unwrap();
    let l2 = persist::load(dir.path(), Timestamp::from_millis(T0)).unwrap();
    assert_eq!(l2.leases.len(), all.len() - 3);
    assert_eq!(l2.generation, 0);
}

#[test]
fn a_clock_behind_the_write_time_keeps_lifetimes_relative() {
    let dir = tempfile::tempdir().unwrap();
    let all = state_after(10);
    let w = StateWriter::start(
        PersistConfig::new(dir.path()),
        all.clone().into_iter().collect(),
        0,
    )
    .unwrap();
    w.shutdown();
    // Written at T0 + 9 (the latest arrival); the clock now reads a day earlier.
    let day = 86_400_000;
    let now = Timestamp::from_millis(T0 - day);
    let mut l = persist::load(dir.path(), now).unwrap();
    assert_eq!(l.written_at, Some(Timestamp::from_millis(T0 + 9)));
    let behind = l.check_clock(now, 2_000);
    assert_eq!(behind, day + 9);
    for (k, lease) in &l.leases {
        let orig = &all[k];
        // Remaining lifetime seen from now = remaining lifetime seen from the write time.
        assert_eq!(
            lease.valid_until.millis() - now.millis(),
            orig.valid_until.millis() - (T0 + 9),
            "{k:?}"
        );
    }
    // Within the tolerance nothing moves.
    let mut l = persist::load(dir.path(), Timestamp::from_millis(T0)).unwrap();
    assert_eq!(l.check_clock(Timestamp::from_millis(T0), 2_000), 0);
    assert_eq!(
        l.leases.into_iter().collect::<BTreeMap<_, _>>(),
        state_after(10)
    );
}

#[test]
fn corrupt_snapshot_is_moved_aside_and_start_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let w = StateWriter::start(
        PersistConfig::new(dir.path()),
        state_after(100).into_iter().collect(),
        0,
    )
    .unwrap();
    w.shutdown();
    let ok = persist::load(dir.path(), Timestamp::from_millis(T0)).unwrap();
    assert_eq!(ok.leases.len(), state_after(100).len());
    assert_eq!(ok.generation, 1);
    // Garbage where the snapshot was: no record of ours in it.
    let p = dir.path().join(persist::SNAPSHOT_FILE);
    let b: Vec<u8> = (0..4096u32).map(|i| (i * 151 % 251) as u8).collect();
    std::fs::write(&p, &b).unwrap();
    let l = persist::load(dir.path(), Timestamp::from_millis(T0)).unwrap();
    assert!(l.leases.is_empty());
    assert_eq!(l.moved_aside.len(), 1);
    assert!(l.moved_aside[0].to_string_lossy().contains(".corrupt-"));
    assert!(!p.exists());
    // A garbage journal header is moved aside too; a missing state dir is simply empty.
    std::fs::write(dir.path().join(persist::JOURNAL_FILE), b"not a journal").unwrap();
    let l = persist::load(dir.path(), Timestamp::from_millis(T0)).unwrap();
    assert_eq!(l.moved_aside.len(), 1);
    let l = persist::load(&dir.path().join("nope"), Timestamp::from_millis(T0)).unwrap();
    assert!(l.leases.is_empty() && l.moved_aside.is_empty());
}

#[test]
fn expired_leases_are_dropped_on_load_and_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let w = StateWriter::start(PersistConfig::new(dir.path()), Vec::new(), 0).unwrap();
    let h = w.handle();
    for i in 0..50 {
        assert!(h.record(op(i)));
    }
    assert!(h.sync());
    w.shutdown();
    let all = persist::load(dir.path(), Timestamp::from_millis(T0)).unwrap();
    assert_eq!(
        all.leases.into_iter().collect::<BTreeMap<_, _>>(),
        state_after(50)
    );
    assert_eq!(all.journal_records, 50);
    // valid_until = T0 + 2_000_000 + i: at T0 + 2_000_030 the first ones have lapsed.
    let later = persist::load(dir.path(), Timestamp::from_millis(T0 + 2_000_030)).unwrap();
    assert!(later.expired > 0);
    assert!(
        later
            .leases
            .iter()
            .all(|(_, l)| l.valid_until > Timestamp::from_millis(T0 + 2_000_030))
    );
    // Encode/decode of single records.
    for i in 0..20 {
        let mut b = Vec::new();
        persist::encode_record(&op(i), &mut b);
        assert_eq!(persist::decode_record(&b).unwrap(), op(i));
        assert!(persist::decode_record(&b[..b.len() - 1]).is_err());
    }
}
