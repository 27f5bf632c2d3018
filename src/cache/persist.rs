//! The crash-safe state file: a snapshot plus an append-only journal, both with per-record
//! checksums, so that after a crash or reboot the agent knows its bindings before any server
//! answers (RFC 8987 S-1).
//!
//! Files in the state directory:
//!
//! ```text
//! bindings.snap     header(kind=snapshot, generation G) · Upsert* · End(count)
//! bindings.journal  header(kind=journal,  generation G) · (Upsert | Remove)*
//!
//! header  = magic "LQAGSTAT" (8) · version u16 · kind u8 · 0 u8 · generation u64 · crc32 u32
//! record  = length u32 · crc32(length ‖ payload) u32 · payload (≤ 64 KiB)
//! ```
//!
//! All integers little-endian. Times are agent-clock milliseconds, i.e. Unix milliseconds (see
//! [`AgentClock`](super::AgentClock)), so deadlines keep their meaning across a reboot; leases whose
//! valid lifetime ended while the agent was down are dropped on load.
//!
//! Writing (one background thread, [`StateWriter`]; the cache task only does a non-blocking
//! `try_send`, so writes never block the hot path — a full queue drops the record, counts it, and
//! asks for a snapshot, which supersedes it):
//! - journal records are appended and handed to the kernel after each batch; `fdatasync` at most
//!   every `sync_interval_ms` and on shutdown — a power cut loses at most that window;
//! - a snapshot is written to `bindings.snap.tmp`, fsynced, renamed over `bindings.snap`, the
//!   directory fsynced; then a fresh journal with the same generation replaces the old one the same
//!   way. A crash between the two renames leaves a journal of the older generation, which the loader
//!   ignores (its records are in the snapshot);
//! - a snapshot waits in a one-slot mailbox (a newer one replaces it) together with the count of
//!   records queued before it, and the writer writes it exactly when it has taken that many records
//!   off the queue — never earlier (the records it already holds would be replayed from its fresh
//!   journal, and a crash part-way through them would mix older and newer values), never later
//!   (records queued after it would go to the journal it replaces and be lost). So the files
//!   always hold the state after some prefix of the records;
//! - while writes fail (degraded), records are not journaled but applied to the snapshot held for
//!   the next retry, so that recovery resumes the journal on the state after every record so far.
//!
//! Loading degrades record by record: a record that is cut short, fails its checksum or does not
//! decode costs that record, not the file — the reader resynchronises at the next offset where a
//! whole good record starts (every record carries its own CRC-32). A damaged snapshot (bad
//! records, a bad header, a missing or short `End`) is logged with what was kept and lost, a copy
//! is kept aside (`*.corrupt-<unix-secs>`, best effort), and its good records are used; a file
//! with no good record at all is moved aside. The journal applies only on top of a snapshot whose
//! header names its generation; damage reaching its end is a torn tail (a write cut short): the
//! journal is truncated there with a warning. Whatever is lost, the kernel's routes survive it:
//! routes no binding explains are inherited, not deleted (`kernel::reconcile`).
//!
//! Clock: the latest record arrival is a lower bound of the write time. A wall clock reading
//! earlier than that at start ([`Loaded::check_clock`]) is logged loudly and every lifetime is
//! shifted back by the difference, so it stays relative to the write time rather than reaching
//! into the far future.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::binding::{
    ClientInfo, IaType, Lease, LeaseKey, Link, RelayData, ServerId, Source, Timestamp,
};
use crate::prefix::Ipv6Prefix;

pub const SNAPSHOT_FILE: &str = "bindings.snap";
pub const JOURNAL_FILE: &str = "bindings.journal";
const MAGIC: &[u8; 8] = b"LQAGSTAT";
pub(crate) const FORMAT_VERSION: u16 = 1;
const KIND_SNAPSHOT: u8 = 1;
const KIND_JOURNAL: u8 = 2;
const HEADER_LEN: usize = 24;
/// Largest record payload accepted (a lease with maximal DUIDs and relay ids is far below).
pub(crate) const MAX_RECORD: usize = 64 * 1024;

const TAG_UPSERT: u8 = 1;
const TAG_REMOVE: u8 = 2;
const TAG_END: u8 = 3;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file record malformed at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Settings of the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistConfig {
    pub dir: PathBuf,
    /// Bound of the queue between the cache task and the writer thread.
    pub queue: usize,
    /// Longest time between journal `fdatasync`s while records keep coming.
    pub sync_interval_ms: u64,
    /// Journal records after which the cache task should send a snapshot.
    pub snapshot_after_records: u64,
    /// Largest single `write(2)`; only tests lower it, to make torn records likely under SIGKILL.
    pub max_write_chunk: usize,
}

impl PersistConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PersistConfig {
            dir: dir.into(),
            queue: 8192,
            sync_interval_ms: 1000,
            snapshot_after_records: 200_000,
            max_write_chunk: usize::MAX,
        }
    }
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Upsert(LeaseKey, Lease),
    Remove(LeaseKey),
}

// ---------------------------------------------------------------- encoding

fn put_key(b: &mut Vec<u8>, k: &LeaseKey) {
    match k {
        LeaseKey::Address(a) => {
            b.push(0);
            b.extend_from_slice(&a.octets());
            b.push(128);
        }
        LeaseKey::Prefix(p) => {
            b.push(1);
            b.extend_from_slice(&p.addr().octets());
            b.push(p.len());
        }
    }
}

fn put_bytes16(b: &mut Vec<u8>, v: &[u8]) {
    let n = v.len().min(usize::from(u16::MAX));
    b.extend_from_slice(&(n as u16).to_le_bytes());
    b.extend_from_slice(&v[..n]);
}

fn put_opt_bytes(b: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            b.push(1);
            put_bytes16(b, v);
        }
        None => b.push(0),
    }
}

fn put_opt_addr(b: &mut Vec<u8>, a: Option<Ipv6Addr>) {
    match a {
        Some(a) => {
            b.push(1);
            b.extend_from_slice(&a.octets());
        }
        None => b.push(0),
    }
}

fn ia_to_u8(ia: IaType) -> u8 {
    match ia {
        IaType::Na => 0,
        IaType::Ta => 1,
        IaType::Pd => 2,
    }
}

/// Append the payload of `rec` to `b`.
pub fn encode_record(rec: &Record, b: &mut Vec<u8>) {
    match rec {
        Record::Remove(k) => {
            b.push(TAG_REMOVE);
            put_key(b, k);
        }
        Record::Upsert(k, l) => {
            b.push(TAG_UPSERT);
            put_key(b, k);
            b.push(ia_to_u8(l.ia));
            b.extend_from_slice(&l.iaid.to_le_bytes());
            for t in [
                l.preferred_until,
                l.valid_until,
                l.last_transaction,
                l.arrival,
            ] {
                b.extend_from_slice(&t.millis().to_le_bytes());
            }
            b.push(l.source.to_u8());
            match l.srsn {
                Some(s) => {
                    b.push(1);
                    b.extend_from_slice(&s.to_le_bytes());
                }
                None => b.push(0),
            }
            put_opt_addr(b, l.next_hop);
            let c = &l.client;
            put_bytes16(b, &c.duid);
            b.extend_from_slice(&c.link.address.octets());
            put_opt_bytes(b, c.link.interface.as_deref().map(str::as_bytes));
            match &c.relay {
                Some(r) => {
                    b.push(1);
                    put_opt_addr(b, r.peer_address);
                    put_opt_bytes(b, r.interface_id.as_deref());
                    put_opt_bytes(b, r.remote_id.as_deref());
                }
                None => b.push(0),
            }
            put_bytes16(b, &l.server.duid);
            b.extend_from_slice(&l.server.address.octets());
        }
    }
}

/// Frame a payload: length, checksum, payload.
fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

fn header(kind: u8, generation: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10] = kind;
    h[12..20].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// `Some(generation)` when `bytes` starts with a valid header of `kind`.
fn parse_header(bytes: &[u8], kind: u8) -> Option<u64> {
    let h = bytes.get(..HEADER_LEN)?;
    let crc = u32::from_le_bytes(h[20..24].try_into().ok()?);
    if &h[..8] != MAGIC || crc32fast::hash(&h[..20]) != crc {
        return None;
    }
    if u16::from_le_bytes([h[8], h[9]]) != FORMAT_VERSION || h[10] != kind {
        return None;
    }
    Some(u64::from_le_bytes(h[12..20].try_into().ok()?))
}

// ---------------------------------------------------------------- decoding

/// Interns clients and servers while loading, so leases share them as in the live cache.
#[derive(Default)]
struct Interner {
    clients: HashMap<ClientInfo, Arc<ClientInfo>>,
    servers: HashMap<ServerId, Arc<ServerId>>,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PersistError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let Some(end) = end else {
            return Err(PersistError::Malformed { at: self.at, what });
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, PersistError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, PersistError> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, PersistError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, PersistError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(i64::from_le_bytes(a))
    }
    fn addr(&mut self, what: &'static str) -> Result<Ipv6Addr, PersistError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16, what)?);
        Ok(Ipv6Addr::from(a))
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, PersistError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(PersistError::Malformed {
                at: self.at - 1,
                what,
            }),
        }
    }
    fn bytes16(&mut self, what: &'static str) -> Result<Box<[u8]>, PersistError> {
        let n = usize::from(self.u16(what)?);
        Ok(self.take(n, what)?.into())
    }
    fn opt_bytes(&mut self, what: &'static str) -> Result<Option<Box<[u8]>>, PersistError> {
        Ok(if self.flag(what)? {
            Some(self.bytes16(what)?)
        } else {
            None
        })
    }
    fn opt_addr(&mut self, what: &'static str) -> Result<Option<Ipv6Addr>, PersistError> {
        Ok(if self.flag(what)? {
            Some(self.addr(what)?)
        } else {
            None
        })
    }
    fn key(&mut self) -> Result<LeaseKey, PersistError> {
        let kind = self.u8("key kind")?;
        let a = self.addr("key address")?;
        let len = self.u8("key length")?;
        let at = self.at;
        match kind {
            0 if len == 128 => Ok(LeaseKey::Address(a)),
            1 => Ipv6Prefix::new(a, len)
                .map(LeaseKey::Prefix)
                .map_err(|_| PersistError::Malformed { at, what: "prefix" }),
            _ => Err(PersistError::Malformed {
                at,
                what: "key kind",
            }),
        }
    }
}

enum Decoded {
    Rec(Record),
    End(u64),
}

fn decode_payload(p: &[u8], intern: &mut Interner) -> Result<Decoded, PersistError> {
    let mut c = Cursor { b: p, at: 0 };
    let d = match c.u8("tag")? {
        TAG_REMOVE => Decoded::Rec(Record::Remove(c.key()?)),
        TAG_END => {
            let n = c.i64("end count")?;
            Decoded::End(n as u64)
        }
        TAG_UPSERT => {
            let key = c.key()?;
            let ia = match c.u8("ia")? {
                0 => IaType::Na,
                1 => IaType::Ta,
                2 => IaType::Pd,
                _ => {
                    return Err(PersistError::Malformed {
                        at: c.at - 1,
                        what: "ia",
                    });
                }
            };
            let iaid = c.u32("iaid")?;
            let preferred_until = Timestamp::from_millis(c.i64("preferred")?);
            let valid_until = Timestamp::from_millis(c.i64("valid")?);
            let last_transaction = Timestamp::from_millis(c.i64("last transaction")?);
            let arrival = Timestamp::from_millis(c.i64("arrival")?);
            let source = Source::from_u8(c.u8("source")?).ok_or(PersistError::Malformed {
                at: c.at - 1,
                what: "source",
            })?;
            let srsn = if c.flag("srsn")? {
                Some(c.u32("srsn")?)
            } else {
                None
            };
            let next_hop = c.opt_addr("next hop")?;
            let duid = c.bytes16("client duid")?;
            let link_addr = c.addr("link address")?;
            let interface = match c.opt_bytes("interface")? {
                Some(b) => Some(Arc::<str>::from(std::str::from_utf8(&b).map_err(|_| {
                    PersistError::Malformed {
                        at: c.at,
                        what: "interface",
                    }
                })?)),
                None => None,
            };
            let relay = if c.flag("relay")? {
                Some(Box::new(RelayData {
                    peer_address: c.opt_addr("peer address")?,
                    interface_id: c.opt_bytes("interface-id")?,
                    remote_id: c.opt_bytes("remote-id")?,
                }))
            } else {
                None
            };
            let sduid = c.bytes16("server duid")?;
            let saddr = c.addr("server address")?;
            let client = ClientInfo {
                duid: duid.into(),
                link: Link {
                    address: link_addr,
                    interface,
                },
                relay,
            };
            let client = intern
                .clients
                .entry(client.clone())
                .or_insert_with(|| Arc::new(client))
                .clone();
            let server = ServerId {
                duid: sduid,
                address: saddr,
            };
            let server = intern
                .servers
                .entry(server.clone())
                .or_insert_with(|| Arc::new(server))
                .clone();
            Decoded::Rec(Record::Upsert(
                key,
                Lease {
                    client,
                    server,
                    ia,
                    iaid,
                    preferred_until,
                    valid_until,
                    last_transaction,
                    arrival,
                    source,
                    srsn,
                    next_hop,
                },
            ))
        }
        _ => return Err(PersistError::Malformed { at: 0, what: "tag" }),
    };
    if c.at != p.len() {
        return Err(PersistError::Malformed {
            at: c.at,
            what: "trailing bytes",
        });
    }
    Ok(d)
}

/// Decode one record payload (for tests and tools).
pub fn decode_record(p: &[u8]) -> Result<Record, PersistError> {
    match decode_payload(p, &mut Interner::default())? {
        Decoded::Rec(r) => Ok(r),
        Decoded::End(_) => Err(PersistError::Malformed {
            at: 0,
            what: "end marker",
        }),
    }
}

/// The record framed at `at`, and where the next one starts.
fn frame_at(
    bytes: &[u8],
    at: usize,
    intern: &mut Interner,
) -> Result<(Decoded, usize), &'static str> {
    let Some(h) = bytes.get(at..at.saturating_add(8)) else {
        return Err("truncated record header");
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_RECORD {
        return Err("record length over limit");
    }
    let end = at + 8 + len;
    let Some(p) = bytes.get(at + 8..end) else {
        return Err("truncated record");
    };
    let mut hs = crc32fast::Hasher::new();
    hs.update(&h[..4]);
    hs.update(p);
    if hs.finalize() != crc {
        return Err("checksum mismatch");
    }
    match decode_payload(p, intern) {
        Ok(d) => Ok((d, end)),
        Err(_) => Err("undecodable record"),
    }
}

/// A stretch of a state file that held no good record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first bad byte.
    pub at: usize,
    /// Offset of the next good record (the file's length for a damaged tail).
    pub until: usize,
    pub why: &'static str,
}

/// Walk framed records from `at`. A bad record costs that record, not the rest: the walk
/// resynchronises at the next offset where a whole record with a good checksum and content
/// starts (a false match needs a CRC-32 collision and a decodable payload). Returns the damaged
/// stretches in file order.
fn walk(
    bytes: &[u8],
    mut at: usize,
    intern: &mut Interner,
    mut f: impl FnMut(Decoded),
) -> Vec<Damage> {
    let mut damage = Vec::new();
    while at < bytes.len() {
        match frame_at(bytes, at, intern) {
            Ok((d, next)) => {
                f(d);
                at = next;
            }
            Err(why) => {
                let until = (at + 1..bytes.len())
                    .find(|p| frame_at(bytes, *p, &mut Interner::default()).is_ok())
                    .unwrap_or(bytes.len());
                damage.push(Damage { at, until, why });
                at = until;
            }
        }
    }
    damage
}

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The live leases (expired ones dropped), in key order.
    pub leases: Vec<(LeaseKey, Lease)>,
    /// Generation of the snapshot loaded (0 when none).
    pub generation: u64,
    pub journal_records: u64,
    /// Leases dropped because their valid lifetime ended before `now`.
    pub expired: u64,
    /// Bytes cut off the journal's torn tail.
    pub truncated_bytes: u64,
    /// Damaged stretches skipped in the snapshot and the journal (their records are lost, the
    /// records around them kept).
    pub damaged: Vec<Damage>,
    /// Snapshot records the `End` marker counts that were not read (lost to damage).
    pub lost_records: u64,
    /// Where a corrupt file was moved or copied.
    pub moved_aside: Vec<PathBuf>,
    /// The latest arrival time of any record read (expired ones too): a lower bound of when
    /// the state was last written, on the clock that wrote it. See [`Loaded::check_clock`].
    pub written_at: Option<Timestamp>,
}

impl Loaded {
    /// A wall clock earlier than the state's write time (a reset RTC, a clock not yet synced)
    /// would make every lifetime look longer than it is. When `now` is more than `tolerance_ms`
    /// behind [`Loaded::written_at`], shift every lease's times back by the difference, so that
    /// lifetimes stay relative to the write time (as if no time passed while the agent was
    /// down — the shorter of the two readings); returns the shift in milliseconds (0: none).
    pub fn check_clock(&mut self, now: Timestamp, tolerance_ms: i64) -> i64 {
        let Some(written) = self.written_at else {
            return 0;
        };
        let behind = written.millis().saturating_sub(now.millis());
        if behind <= tolerance_ms {
            return 0;
        }
        for (_, l) in &mut self.leases {
            for t in [
                &mut l.preferred_until,
                &mut l.valid_until,
                &mut l.last_transaction,
                &mut l.arrival,
            ] {
                if *t != Timestamp::NEVER {
                    *t = t.plus_millis(-behind);
                }
            }
        }
        // Seen from the write time, some of them had already run out.
        let before = self.leases.len();
        self.leases.retain(|(_, l)| l.valid_until > now);
        self.expired += (before - self.leases.len()) as u64;
        self.written_at = Some(now);
        behind
    }
}

fn suffixed(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut to = path.as_os_str().to_owned();
    to.push(format!(".corrupt-{secs}"));
    PathBuf::from(to)
}

fn move_aside(path: &Path, loaded: &mut Loaded) -> Result<(), PersistError> {
    let to = suffixed(path);
    fs::rename(path, &to).map_err(io_err(path))?;
    loaded.moved_aside.push(to);
    Ok(())
}

/// Keep a copy of a damaged file for inspection (best effort: a full disk must not stop the
/// start); the file itself stays until the next snapshot replaces it.
fn copy_aside(path: &Path, loaded: &mut Loaded) {
    let to = suffixed(path);
    match fs::copy(path, &to) {
        Ok(_) => loaded.moved_aside.push(to),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "could not keep a copy of the damaged state file")
        }
    }
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, PersistError> {
    match File::open(path) {
        Ok(mut f) => {
            let mut v = Vec::new();
            f.read_to_end(&mut v).map_err(io_err(path))?;
            Ok(Some(v))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Load the state directory (see the module doc for what happens to damaged files).
pub fn load(dir: &Path, now: Timestamp) -> Result<Loaded, PersistError> {
    let mut out = Loaded::default();
    let mut map: BTreeMap<LeaseKey, Lease> = BTreeMap::new();
    let mut intern = Interner::default();
    let snap_path = dir.join(SNAPSHOT_FILE);
    let journal_path = dir.join(JOURNAL_FILE);
    let mut latest: Option<Timestamp> = None;
    let mut seen = |l: &Lease| {
        if latest.is_none_or(|t| l.arrival > t) {
            latest = Some(l.arrival);
        }
    };

    // The snapshot's generation, when its header is intact (only then does the journal apply).
    let mut snap_generation = None;
    if let Some(bytes) = read_opt(&snap_path)? {
        let header = parse_header(&bytes, KIND_SNAPSHOT);
        let mut end = None;
        let mut count = 0u64;
        let mut misplaced = 0u64;
        let mut damage = walk(
            &bytes,
            HEADER_LEN.min(bytes.len()),
            &mut intern,
            |d| match d {
                Decoded::Rec(Record::Upsert(k, l)) if end.is_none() => {
                    count += 1;
                    seen(&l);
                    map.insert(k, l);
                }
                Decoded::End(n) if end.is_none() => end = Some(n),
                _ => misplaced += 1, // anything after End, or a Remove: not a snapshot's
            },
        );
        if header.is_none() {
            damage.insert(
                0,
                Damage {
                    at: 0,
                    until: HEADER_LEN.min(bytes.len()),
                    why: "bad header",
                },
            );
        }
        let lost = match end {
            Some(n) => n.saturating_sub(count),
            None => 0,
        };
        out.lost_records += lost;
        if header.is_none() && count == 0 {
            // Nothing of ours in it: not a snapshot at all.
            move_aside(&snap_path, &mut out)?;
            tracing::error!(file = %snap_path.display(),
                "state snapshot is unreadable; moved aside, starting with an empty cache");
        } else if !damage.is_empty() || end != Some(count) || misplaced > 0 {
            copy_aside(&snap_path, &mut out);
            tracing::error!(file = %snap_path.display(), kept = count, lost_records = lost,
                damaged_stretches = damage.len(), first = ?damage.first(),
                end_marker = end.is_some(), misplaced,
                "state snapshot is damaged: the good records are kept, the damaged ones lost");
        }
        out.damaged.extend(damage);
        if let Some(g) = header {
            out.generation = g;
            snap_generation = Some(g);
        }
    }

    if let Some(bytes) = read_opt(&journal_path)? {
        match parse_header(&bytes, KIND_JOURNAL) {
            Some(g) if snap_generation == Some(g) => {
                let mut n = 0u64;
                let damage = walk(&bytes, HEADER_LEN, &mut intern, |d| {
                    if let Decoded::Rec(rec) = d {
                        n += 1;
                        match rec {
                            Record::Upsert(k, l) => {
                                seen(&l);
                                map.insert(k, l);
                            }
                            Record::Remove(k) => {
                                map.remove(&k);
                            }
                        }
                    }
                });
                out.journal_records = n;
                // A damaged stretch reaching the end is a torn tail (a write cut short):
                // truncate it so appends continue on a record boundary.
                let tail = damage.last().filter(|d| d.until == bytes.len()).copied();
                let middle = damage.len() - usize::from(tail.is_some());
                if middle > 0 {
                    tracing::error!(file = %journal_path.display(), damaged_stretches = middle,
                        first = ?damage.first(),
                        "state journal has damaged records; skipped, the records around them kept");
                }
                if let Some(t) = tail {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&journal_path)
                        .map_err(io_err(&journal_path))?;
                    f.set_len(t.at as u64).map_err(io_err(&journal_path))?;
                    f.sync_all().map_err(io_err(&journal_path))?;
                    out.truncated_bytes = (bytes.len() - t.at) as u64;
                    tracing::warn!(file = %journal_path.display(), at = t.at, reason = t.why,
                        dropped_bytes = out.truncated_bytes,
                        "state journal has a torn tail; truncated, earlier records kept");
                }
                out.damaged.extend(damage);
            }
            Some(_) if snap_generation.is_some() => {
                tracing::info!(file = %journal_path.display(),
                    "state journal is from an older snapshot generation; ignored");
            }
            Some(_) => {} // no snapshot header: the journal's generation cannot be checked
            None => {
                move_aside(&journal_path, &mut out)?;
                tracing::error!(file = %journal_path.display(),
                    "state journal header is corrupt; moved aside");
            }
        }
    }

    out.written_at = latest;
    for (k, l) in map {
        if l.valid_until <= now {
            out.expired += 1;
        } else {
            out.leases.push((k, l));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- writing

/// Counters of the state writer (exported as `lqagent_state_events_total` and
/// `lqagent_state_degraded`).
#[derive(Debug, Default)]
pub struct PersistStats {
    pub records_written: AtomicU64,
    /// Records dropped because the writer queue was full or persistence is degraded (a
    /// snapshot then covers them).
    pub records_dropped: AtomicU64,
    pub snapshots_written: AtomicU64,
    /// Snapshots replaced by a newer one before the writer got to them.
    pub snapshots_coalesced: AtomicU64,
    pub syncs: AtomicU64,
    pub write_errors: AtomicU64,
    /// True while writes fail (full disk, I/O error, unwritable directory): routing goes on,
    /// records are dropped, a snapshot is retried with backoff.
    pub degraded: AtomicBool,
    /// Transitions into and out of the degraded mode.
    pub degraded_entered: AtomicU64,
    pub degraded_left: AtomicU64,
    /// Set when a record was dropped or the journal grew long: the cache task should snapshot.
    pub snapshot_wanted: AtomicBool,
    pub records_since_snapshot: AtomicU64,
}

impl PersistStats {
    /// `(label, count)` pairs for `lqagent_state_events_total{event=...}`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("record_written", g(&self.records_written)),
            ("record_dropped", g(&self.records_dropped)),
            ("snapshot_written", g(&self.snapshots_written)),
            ("snapshot_coalesced", g(&self.snapshots_coalesced)),
            ("sync", g(&self.syncs)),
            ("write_error", g(&self.write_errors)),
            ("degraded", g(&self.degraded_entered)),
            ("recovered", g(&self.degraded_left)),
        ]
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }
}

type Leases = Vec<(LeaseKey, Lease)>;

/// The one snapshot waiting for the writer (a newer one replaces it: snapshots coalesce instead
/// of queueing), with its place in the record stream.
///
/// The place is what keeps a reload equal to the state after some prefix of the records: the
/// snapshot is written exactly when the writer has taken the `after` records queued before it
/// off the queue, and not one more. Taken earlier, records it already holds would be replayed
/// on top of it from the fresh journal (a crash part-way leaves older values beside newer ones);
/// taken later, records queued after it would go to the journal it replaces and be lost.
#[derive(Debug, Default)]
struct PendingSnapshot {
    /// Records queued before the snapshot was taken ([`JournalHandle::queued`] at that moment).
    after: u64,
    leases: Option<Leases>,
}

enum Msg {
    Record(Record),
    /// A snapshot is in the pending slot: wakes the writer (the slot, not this marker, says
    /// where in the record stream it belongs; the marker may not fit in a full queue).
    Snapshot,
    Sync(SyncSender<()>),
    /// Test hook ([`JournalHandle::hold`]): the writer stops here, as on a hung disk, until
    /// the other end is dropped.
    Hold(Receiver<()>),
    Shutdown,
}

/// The cache task's side of the writer: cheap, non-blocking sends.
#[derive(Debug, Clone)]
pub struct JournalHandle {
    tx: SyncSender<Msg>,
    stats: Arc<PersistStats>,
    snapshot_after: u64,
    pending: Arc<std::sync::Mutex<PendingSnapshot>>,
    /// Records queued so far (counted after a send succeeds), the position a snapshot takes.
    /// Clones share it: records and snapshots must be sent in one sequence (the cache task,
    /// then the shutdown path after it stopped), as the snapshot has to cover what was queued.
    queued: Arc<AtomicU64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

fn lock(m: &std::sync::Mutex<PendingSnapshot>) -> std::sync::MutexGuard<'_, PendingSnapshot> {
    // Only plain assignments happen under this lock: a poisoned one is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl JournalHandle {
    /// Queue a record without blocking; on a full queue it is dropped, counted, and a snapshot
    /// is requested. Returns whether it was queued.
    pub fn record(&self, rec: Record) -> bool {
        match self.tx.try_send(Msg::Record(rec)) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::SeqCst);
                let n = self
                    .stats
                    .records_since_snapshot
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if n >= self.snapshot_after {
                    self.stats.snapshot_wanted.store(true, Ordering::Relaxed);
                }
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.records_dropped.fetch_add(1, Ordering::Relaxed);
                self.stats.snapshot_wanted.store(true, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queue a record, waiting for room (for loaders and tests, not the hot path).
    pub fn record_blocking(&self, rec: Record) -> bool {
        self.stats
            .records_since_snapshot
            .fetch_add(1, Ordering::Relaxed);
        let ok = self.tx.send(Msg::Record(rec)).is_ok();
        if ok {
            self.queued.fetch_add(1, Ordering::SeqCst);
        }
        ok
    }

    /// Whether the cache task should send a snapshot now.
    pub fn wants_snapshot(&self) -> bool {
        self.stats.snapshot_wanted.load(Ordering::Relaxed)
    }

    /// Hand a full copy of the cache to the writer without blocking (the copy was taken from
    /// the store after every record already queued, so it supersedes them). It replaces a
    /// snapshot the writer has not taken yet. The writer writes it once it has taken every
    /// record queued before this call, and before any queued after it, whether or not the
    /// queue had room for the wake-up marker. False when the writer is gone.
    pub fn snapshot(&self, all: Leases) -> bool {
        self.stats.snapshot_wanted.store(false, Ordering::Relaxed);
        self.stats
            .records_since_snapshot
            .store(0, Ordering::Relaxed);
        {
            let mut p = lock(&self.pending);
            if p.leases.is_some() {
                self.stats
                    .snapshots_coalesced
                    .fetch_add(1, Ordering::Relaxed);
            }
            p.after = self.queued.load(Ordering::SeqCst);
            p.leases = Some(all);
        }
        !matches!(
            self.tx.try_send(Msg::Snapshot),
            Err(TrySendError::Disconnected(_))
        )
    }

    /// Wait until everything queued so far is written and fsynced (shutdown, tests).
    pub fn sync(&self) -> bool {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx.send(Msg::Sync(tx)).is_ok() && rx.recv().is_ok()
    }

    pub fn stats(&self) -> &Arc<PersistStats> {
        &self.stats
    }

    /// Test hook: the writer thread blocks, as on a hung disk, from the moment it takes this
    /// off its queue until the returned guard is dropped. Waits for room in the queue.
    #[doc(hidden)]
    pub fn hold(&self) -> SyncSender<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        let _ = self.tx.send(Msg::Hold(rx));
        tx
    }
}

/// The writer thread.
#[derive(Debug)]
pub struct StateWriter {
    handle: JournalHandle,
    thread: Option<JoinHandle<()>>,
}

/// First retry after a failed write; doubles up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

impl StateWriter {
    /// Write `initial` as a fresh snapshot of generation `generation + 1`, start a journal, and
    /// run the writer thread. A directory that cannot be made or written is not fatal: the
    /// writer starts degraded and retries (see [`PersistStats::degraded`]); only failing to
    /// start the thread is.
    pub fn start(
        cfg: PersistConfig,
        initial: Leases,
        generation: u64,
    ) -> Result<StateWriter, PersistError> {
        let mut files = Files {
            dir: cfg.dir.clone(),
            generation,
            journal: None,
            journal_len: 0,
            buf: Vec::with_capacity(64 * 1024),
            chunk: cfg.max_write_chunk.max(1),
        };
        let stats = Arc::new(PersistStats::default());
        let mut w = Writer {
            stats: stats.clone(),
            degraded: None,
            held: None,
            taken: 0,
        };
        let r = fs::create_dir_all(&cfg.dir)
            .map_err(io_err(&cfg.dir))
            .and_then(|()| files.write_snapshot(initial.iter().map(|(k, l)| (k, l))));
        match r {
            Ok(()) => {
                stats.snapshots_written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                w.held = Some(initial.into_iter().collect());
                w.failed(&e);
            }
        }
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let pending = Arc::new(std::sync::Mutex::new(PendingSnapshot::default()));
        let interval = Duration::from_millis(cfg.sync_interval_ms);
        let p = pending.clone();
        let thread = std::thread::Builder::new()
            .name("lqagent-state".into())
            .spawn(move || w.run(files, rx, p, interval))
            .map_err(io_err(&cfg.dir))?;
        Ok(StateWriter {
            handle: JournalHandle {
                tx,
                stats,
                snapshot_after: cfg.snapshot_after_records.max(1),
                pending,
                queued: Arc::new(AtomicU64::new(0)),
            },
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> JournalHandle {
        self.handle.clone()
    }

    /// Flush, fsync and stop the thread.
    pub fn shutdown(mut self) {
        let _ = self.handle.tx.send(Msg::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Files {
    dir: PathBuf,
    generation: u64,
    journal: Option<File>,
    /// Bytes of the journal that are whole records (where a failed append is cut back to).
    journal_len: u64,
    buf: Vec<u8>,
    chunk: usize,
}

fn write_chunked(f: &mut File, bytes: &[u8], chunk: usize) -> io::Result<()> {
    for c in bytes.chunks(chunk) {
        f.write_all(c)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Files {
    /// Replace `name` atomically with `bytes` (tmp file, fsync, rename, fsync directory). A
    /// failure removes the temporary file (it would hold space on a full disk).
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<File, PersistError> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        let dst = self.dir.join(name);
        let r = (|| {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            write_chunked(&mut f, bytes, self.chunk).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
            Ok(f)
        })();
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        let f = r?;
        sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(f)
    }

    fn write_snapshot<'a>(
        &mut self,
        all: impl ExactSizeIterator<Item = (&'a LeaseKey, &'a Lease)>,
    ) -> Result<(), PersistError> {
        // The snapshot supersedes whatever is buffered.
        self.buf.clear();
        let generation = self.generation + 1;
        let count = all.len();
        let mut out = Vec::with_capacity(HEADER_LEN + count * 120);
        out.extend_from_slice(&header(KIND_SNAPSHOT, generation));
        let mut p = Vec::with_capacity(256);
        for (k, l) in all {
            p.clear();
            encode_record(&Record::Upsert(*k, l.clone()), &mut p);
            frame(&p, &mut out);
        }
        p.clear();
        p.push(TAG_END);
        p.extend_from_slice(&(count as i64).to_le_bytes());
        frame(&p, &mut out);
        self.replace(SNAPSHOT_FILE, &out)?;
        // From here the new snapshot is on disk; appends to the old journal would be ignored.
        self.journal = None;
        let journal = self.replace(JOURNAL_FILE, &header(KIND_JOURNAL, generation))?;
        self.journal = Some(journal);
        self.journal_len = HEADER_LEN as u64;
        self.generation = generation;
        Ok(())
    }

    fn append(&mut self, rec: &Record) {
        let mut p = Vec::with_capacity(256);
        encode_record(rec, &mut p);
        frame(&p, &mut self.buf);
    }

    /// Write the buffer; on failure cut the journal back to its last whole record.
    fn flush(&mut self) -> Result<(), PersistError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(JOURNAL_FILE);
        let r = match self.journal.as_mut() {
            Some(f) => write_chunked(f, &self.buf, self.chunk),
            None => Ok(()),
        };
        let n = self.buf.len() as u64;
        self.buf.clear();
        match r {
            Ok(()) => {
                self.journal_len += n;
                Ok(())
            }
            Err(e) => {
                if let Some(f) = self.journal.take() {
                    // Best effort; the next snapshot replaces the journal anyway.
                    let _ = f.set_len(self.journal_len);
                }
                Err(io_err(&path)(e))
            }
        }
    }

    fn sync(&mut self) -> Result<(), PersistError> {
        self.flush()?;
        let path = self.dir.join(JOURNAL_FILE);
        if let Some(f) = self.journal.as_ref() {
            f.sync_data().map_err(io_err(&path))?;
        }
        Ok(())
    }
}

/// Degraded-mode bookkeeping.
#[derive(Debug, Clone, Copy)]
struct Degraded {
    attempt: u32,
    retry_at: Instant,
}

struct Writer {
    stats: Arc<PersistStats>,
    degraded: Option<Degraded>,
    /// While degraded: the latest snapshot, written at the next retry. Records taken after it
    /// are applied to it (they cannot go to the journal), so that it stays the state after
    /// every record taken so far and recovery resumes the journal on a matching snapshot.
    held: Option<BTreeMap<LeaseKey, Lease>>,
    /// Records taken off the queue so far (appended or dropped): where the writer is in the
    /// record stream, compared with [`PendingSnapshot::after`].
    taken: u64,
}

fn backoff(attempt: u32) -> Duration {
    let f = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
    RETRY_BASE.saturating_mul(f).min(RETRY_MAX)
}

impl Writer {
    /// A write failed: enter (or stay in) the degraded mode; one log line per transition.
    fn failed(&mut self, e: &PersistError) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        match &mut self.degraded {
            Some(d) => {
                d.attempt = d.attempt.saturating_add(1);
                d.retry_at = now + backoff(d.attempt);
                tracing::debug!(error = %e, retry_in = ?backoff(d.attempt), "state file still not writable");
            }
            None => {
                self.degraded = Some(Degraded {
                    attempt: 0,
                    retry_at: now + backoff(0),
                });
                self.stats.degraded.store(true, Ordering::Relaxed);
                self.stats.degraded_entered.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e,
                    "state persistence degraded: routing continues, journal records are dropped, \
                     a snapshot is retried with backoff");
            }
        }
    }

    fn recovered(&mut self) {
        if self.degraded.take().is_some() {
            self.stats.degraded.store(false, Ordering::Relaxed);
            self.stats.degraded_left.fetch_add(1, Ordering::Relaxed);
            tracing::info!("state persistence recovered: snapshot written, journal resumed");
        }
    }

    /// Write `all`, or hold it for the next retry while degraded and not yet due.
    fn snapshot(&mut self, files: &mut Files, all: Leases) {
        if self.degraded.is_some_and(|d| Instant::now() < d.retry_at) {
            self.held = Some(all.into_iter().collect());
            return;
        }
        let r = files.write_snapshot(all.iter().map(|(k, l)| (k, l)));
        self.snapshot_done(r, || all.into_iter().collect());
    }

    /// Retry the held snapshot.
    fn retry_held(&mut self, files: &mut Files, held: BTreeMap<LeaseKey, Lease>) {
        let r = files.write_snapshot(held.iter());
        self.snapshot_done(r, || held);
    }

    fn snapshot_done(
        &mut self,
        r: Result<(), PersistError>,
        keep: impl FnOnce() -> BTreeMap<LeaseKey, Lease>,
    ) {
        match r {
            Ok(()) => {
                self.stats.snapshots_written.fetch_add(1, Ordering::Relaxed);
                self.held = None;
                self.recovered();
            }
            Err(e) => {
                self.held = Some(keep());
                self.failed(&e);
            }
        }
    }

    /// A record taken off the queue: journaled, or while degraded dropped from the journal and
    /// applied to the held snapshot.
    fn take_record(&mut self, files: &mut Files, rec: Record) -> bool {
        self.taken += 1;
        if self.degraded.is_none() {
            files.append(&rec);
            self.stats.records_written.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if let Some(h) = &mut self.held {
            match rec {
                Record::Upsert(k, l) => {
                    h.insert(k, l);
                }
                Record::Remove(k) => {
                    h.remove(&k);
                }
            }
        }
        self.stats.records_dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Write the pending snapshot if the writer stands at its place in the record stream
    /// (every record queued before it taken, none queued after it). True when one was taken.
    fn snapshot_if_due(
        &mut self,
        files: &mut Files,
        pending: &std::sync::Mutex<PendingSnapshot>,
    ) -> bool {
        let all = {
            let mut p = lock(pending);
            // `after > taken`: records it covers are still queued; they come first. (`after <
            // taken` cannot happen with one sending sequence; writing it then is the least bad.)
            if p.leases.is_none() || p.after > self.taken {
                return false;
            }
            p.leases.take()
        };
        if let Some(all) = all {
            self.snapshot(files, all);
        }
        true
    }

    fn run(
        mut self,
        mut files: Files,
        rx: Receiver<Msg>,
        pending: Arc<std::sync::Mutex<PendingSnapshot>>,
        interval: Duration,
    ) {
        let mut last_sync = Instant::now();
        let mut dirty = false;
        loop {
            let wait = match self.degraded {
                Some(d) => d
                    .retry_at
                    .saturating_duration_since(Instant::now())
                    .min(interval),
                None => interval,
            };
            let first = match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Msg::Shutdown),
            };
            let mut batch: Vec<Msg> = first.into_iter().collect();
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut stop = false;
            let mut acks = Vec::new();
            for m in batch {
                // The pending snapshot goes in at its place in the record stream (its marker
                // may sit later in the queue, or have found no room); records before it are in
                // it (it drops the buffer), records after it go to its fresh journal.
                if self.snapshot_if_due(&mut files, &pending) {
                    dirty = false;
                }
                match m {
                    Msg::Record(r) => {
                        if self.take_record(&mut files, r) {
                            dirty = true;
                        }
                    }
                    Msg::Snapshot => {}
                    Msg::Sync(ack) => {
                        if self.degraded.is_none() {
                            if let Err(e) = files.sync() {
                                self.failed(&e);
                            }
                            self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                            dirty = false;
                        }
                        acks.push(ack);
                    }
                    Msg::Hold(until) => {
                        let _ = until.recv();
                    }
                    Msg::Shutdown => stop = true,
                }
            }
            // A snapshot taken right after the batch's last record.
            if self.snapshot_if_due(&mut files, &pending) {
                dirty = false;
            }
            if let Err(e) = files.flush() {
                self.failed(&e);
            }
            if let Some(d) = self.degraded {
                if Instant::now() >= d.retry_at {
                    match self.held.take() {
                        Some(all) => self.retry_held(&mut files, all),
                        None => {
                            // Nothing held: ask the cache task for a fresh copy.
                            self.stats.snapshot_wanted.store(true, Ordering::Relaxed);
                            if let Some(d) = &mut self.degraded {
                                d.retry_at = Instant::now() + backoff(d.attempt);
                            }
                        }
                    }
                }
            }
            if self.degraded.is_none() && (stop || (dirty && last_sync.elapsed() >= interval)) {
                if let Err(e) = files.sync() {
                    self.failed(&e);
                }
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                last_sync = Instant::now();
                dirty = false;
            }
            for ack in acks {
                let _ = ack.send(());
            }
            if stop {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_000_000_000;

    /// Record `i`: upserts of 4 keys whose content encodes `i`; every 5th a removal.
    fn op(i: u32) -> Record {
        let k = LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, (i % 4) as u16));
        if i % 5 == 4 {
            return Record::Remove(k);
        }
        Record::Upsert(
            k,
            Lease {
                client: Arc::new(ClientInfo {
                    duid: vec![0, 3, 0, 1, i as u8].into(),
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
                arrival: Timestamp::from_millis(T0 + i64::from(i)),
                source: Source::Bulk,
                srsn: None,
                next_hop: None,
            },
        )
    }

    fn state_after(n: u32) -> BTreeMap<LeaseKey, Lease> {
        let mut s = BTreeMap::new();
        for i in 0..n {
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

    fn loaded(dir: &Path) -> (Loaded, BTreeMap<LeaseKey, Lease>) {
        let l = load(dir, Timestamp::from_millis(T0)).unwrap();
        let m = l.leases.iter().cloned().collect();
        (l, m)
    }

    /// A writer on `dir` with an empty generation-1 snapshot, not yet running.
    fn writer(dir: &Path) -> (Writer, Files, Arc<PersistStats>) {
        let mut files = Files {
            dir: dir.to_path_buf(),
            generation: 0,
            journal: None,
            journal_len: 0,
            buf: Vec::new(),
            chunk: usize::MAX,
        };
        files.write_snapshot(std::iter::empty()).unwrap();
        let stats = Arc::new(PersistStats::default());
        let w = Writer {
            stats: stats.clone(),
            degraded: None,
            held: None,
            taken: 0,
        };
        (w, files, stats)
    }

    fn pending_at(after: u32) -> Arc<std::sync::Mutex<PendingSnapshot>> {
        Arc::new(std::sync::Mutex::new(PendingSnapshot {
            after: u64::from(after),
            leases: Some(state_after(after).into_iter().collect()),
        }))
    }

    #[test]
    fn a_snapshot_whose_marker_found_no_room_keeps_the_records_after_it() {
        // The queue was full when snapshot(after 5) was handed over: no marker, and records
        // 5..10 queued behind it. They belong to the snapshot's fresh journal.
        let dir = tempfile::tempdir().unwrap();
        let (w, files, stats) = writer(dir.path());
        let (tx, rx) = mpsc::sync_channel(64);
        for i in 0..10 {
            tx.send(Msg::Record(op(i))).unwrap();
        }
        tx.send(Msg::Shutdown).unwrap();
        w.run(files, rx, pending_at(5), Duration::from_secs(1));
        assert_eq!(stats.snapshots_written.load(Ordering::Relaxed), 1);
        let (l, got) = loaded(dir.path());
        assert_eq!(l.generation, 2);
        assert_eq!(l.journal_records, 5, "records 5..10, after the snapshot");
        assert_eq!(got, state_after(10));
    }

    #[test]
    fn a_snapshot_waits_for_the_records_it_covers() {
        // snapshot(after 8) is pending while only records 0..5 are queued (the rest are on
        // their way): writing it now would replay records 5..8 from its fresh journal.
        let dir = tempfile::tempdir().unwrap();
        let (w, files, stats) = writer(dir.path());
        let (tx, rx) = mpsc::sync_channel(64);
        for i in 0..5 {
            tx.send(Msg::Record(op(i))).unwrap();
        }
        tx.send(Msg::Snapshot).unwrap();
        let (tx_ack, rx_ack) = mpsc::sync_channel(1);
        tx.send(Msg::Sync(tx_ack)).unwrap();
        let pending = pending_at(8);
        let t = std::thread::spawn(move || w.run(files, rx, pending, Duration::from_secs(1)));
        // Acked: the writer has taken its whole queue, marker included, and synced.
        rx_ack.recv().unwrap();
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 5);
        assert_eq!(stats.snapshots_written.load(Ordering::Relaxed), 0);
        let (l, got) = loaded(dir.path());
        assert_eq!((l.generation, l.journal_records), (1, 5));
        assert_eq!(got, state_after(5));
        for i in 5..10 {
            tx.send(Msg::Record(op(i))).unwrap();
        }
        tx.send(Msg::Shutdown).unwrap();
        t.join().unwrap();
        assert_eq!(stats.snapshots_written.load(Ordering::Relaxed), 1);
        let (l, got) = loaded(dir.path());
        assert_eq!(l.generation, 2);
        assert_eq!(l.journal_records, 2, "records 8 and 9 only");
        assert_eq!(got, state_after(10));
    }

    #[test]
    fn records_taken_while_degraded_reach_the_snapshot_written_on_recovery() {
        // The state directory cannot be made (a file stands where its parent should be): the
        // writer starts degraded, holding the initial snapshot.
        let base = tempfile::tempdir().unwrap();
        let block = base.path().join("block");
        fs::write(&block, b"").unwrap();
        let dir = block.join("state");
        let w = StateWriter::start(
            PersistConfig::new(&dir),
            state_after(3).into_iter().collect(),
            0,
        )
        .unwrap();
        let h = w.handle();
        let st = h.stats().clone();
        assert!(st.is_degraded());
        for i in 3..10 {
            assert!(h.record_blocking(op(i)));
        }
        assert!(h.sync());
        assert_eq!(st.records_dropped.load(Ordering::Relaxed), 7);
        assert_eq!(st.records_written.load(Ordering::Relaxed), 0);
        // The directory becomes writable; the retry (1 s) writes the held snapshot.
        fs::remove_file(&block).unwrap();
        fs::create_dir_all(&dir).unwrap();
        let since = Instant::now();
        while st.is_degraded() {
            assert!(since.elapsed() < Duration::from_secs(10), "no recovery");
            std::thread::sleep(Duration::from_millis(20));
        }
        for i in 10..12 {
            assert!(h.record_blocking(op(i)));
        }
        assert!(h.sync());
        w.shutdown();
        let (l, got) = loaded(&dir);
        assert_eq!(l.journal_records, 2);
        assert_eq!(
            got,
            state_after(12),
            "records dropped from the journal are not lost"
        );
    }
}
