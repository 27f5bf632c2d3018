//! The state file's loader: reads the snapshot and journal at start and degrades record by record
//! (damaged stretches are skipped and reported, damaged files kept aside, a torn journal tail
//! truncated), so that what survives is used.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::codec::{
    Decoded, HEADER_LEN, Interner, KIND_JOURNAL, KIND_SNAPSHOT, Record, parse_header, walk,
};
use super::{Damage, JOURNAL_FILE, PersistError, REFUSED_FILE, SNAPSHOT_FILE, io_err};
use crate::cache::binding::{Lease, LeaseKey, Timestamp};
use crate::cache::storage::hash::KeyHashBuilder;

/// The fewest bytes a framed lease record takes in a snapshot (frame header, tag, key, times,
/// addresses): a snapshot of `n` bytes holds at most `n / MIN_RECORD_BYTES` leases.
const MIN_RECORD_BYTES: usize = 100;

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The live leases (expired ones dropped), in key order.
    pub leases: Vec<(LeaseKey, Lease)>,
    /// Distinct clients the records named (expired ones' too): room to reserve for them.
    pub clients: usize,
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
    /// Whether [`Loaded::leases`] is exactly the state the files hold: a snapshot with an
    /// intact header read whole, nothing damaged, lost, moved aside or dropped as expired (a
    /// torn journal tail was cut off the file already). Then the start need not write them
    /// again as a fresh snapshot: the writer appends to the journal as it is
    /// ([`StateWriter::resume`](super::StateWriter::resume)). Whoever changes the leases after
    /// loading (admission refusing some, leases set aside earlier coming back, a clock shift)
    /// makes that untrue and has to write them.
    pub fn is_on_disk(&self) -> bool {
        self.generation > 0
            && self.damaged.is_empty()
            && self.lost_records == 0
            && self.moved_aside.is_empty()
            && self.expired == 0
    }

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
    let secs = crate::time::unix_now_secs();
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

/// How the loader reads a whole file: the seam tests fail reads through.
pub trait StateRead {
    /// The file's bytes; `Ok(None)` when it does not exist.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
}

/// The file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsRead;

impl StateRead for FsRead {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match File::open(path) {
            Ok(mut f) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v)?;
                Ok(Some(v))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// How often a failing read is tried, and the wait before the second try (doubling after).
/// A transient EIO (a path failing over, a disk waking) may read on a later try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRetry {
    pub attempts: u32,
    pub first_delay: crate::time::Duration,
}

impl Default for ReadRetry {
    fn default() -> Self {
        ReadRetry {
            attempts: 4,
            first_delay: crate::time::Duration::from_millis(250),
        }
    }
}

fn read_opt(
    r: &impl StateRead,
    retry: ReadRetry,
    path: &Path,
) -> Result<Option<Vec<u8>>, PersistError> {
    let attempts = retry.attempts.max(1);
    let mut delay = retry.first_delay;
    let mut attempt = 1;
    loop {
        match r.read(path) {
            Ok(v) => return Ok(v),
            Err(source) if attempt >= attempts => {
                return Err(PersistError::Unreadable {
                    path: path.to_path_buf(),
                    attempts,
                    source,
                });
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, attempt, attempts,
                    "cannot read the state file; trying again");
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
                attempt += 1;
            }
        }
    }
}

/// Load the state directory (see the module doc for what happens to damaged files), reading
/// through the file system with the default retries.
pub fn load(dir: &Path, now: Timestamp) -> Result<Loaded, PersistError> {
    load_with(dir, now, &FsRead, ReadRetry::default())
}

/// The leases of the [`REFUSED_FILE`] admission refused at an earlier start, expired ones
/// dropped (damaged records skipped: the file is a courtesy copy, not the state).
pub fn load_refused(
    dir: &Path,
    now: Timestamp,
    r: &impl StateRead,
    retry: ReadRetry,
) -> Result<Vec<(LeaseKey, Lease)>, PersistError> {
    let path = dir.join(REFUSED_FILE);
    let Some(bytes) = read_opt(r, retry, &path)? else {
        return Ok(Vec::new());
    };
    let mut intern = Interner::default();
    let mut map = BTreeMap::new();
    let damage = walk(&bytes, HEADER_LEN.min(bytes.len()), &mut intern, |d| {
        if let Decoded::Rec(Record::Upsert(k, l)) = d {
            map.insert(k, l);
        }
    });
    if !damage.is_empty() || parse_header(&bytes, KIND_SNAPSHOT).is_none() {
        tracing::warn!(file = %path.display(), damaged_stretches = damage.len(),
            "file of refused leases is damaged; its good records are used");
    }
    Ok(map
        .into_iter()
        .filter(|(_, l)| l.valid_until > now)
        .collect())
}

/// [`load`] reading through `r`, a failing read tried `retry.attempts` times.
pub fn load_with(
    dir: &Path,
    now: Timestamp,
    r: &impl StateRead,
    retry: ReadRetry,
) -> Result<Loaded, PersistError> {
    let mut out = Loaded::default();
    // The snapshot's records as read. The writer writes them in key order, one per key, so
    // with no journal to apply on top (a stop leaves none) this already is the answer and no
    // map is built (at a million leases the map's inserts and the sort after them were a
    // third of the load). Anything else — a journal, keys out of order or repeated (an older
    // writer, damage) — goes through `map`.
    let mut records: Vec<(LeaseKey, Lease)> = Vec::new();
    let mut in_order = true;
    // A hash map, sorted once at the end: a million ordered inserts into a B-tree cost more
    // than the whole decode. Its size hint is the snapshot's bytes over a record's least size
    // (bounded by a file already in memory).
    let mut map: HashMap<LeaseKey, Lease, KeyHashBuilder> = HashMap::default();
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
    // Both files are read before anything is changed: a journal that cannot be read must not
    // leave a snapshot moved aside behind it.
    let snap_bytes = read_opt(r, retry, &snap_path)?;
    let journal_bytes = read_opt(r, retry, &journal_path)?;
    if let Some(bytes) = snap_bytes {
        records.reserve(bytes.len() / MIN_RECORD_BYTES);
        intern.reserve(bytes.len() / MIN_RECORD_BYTES);
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
                    in_order &= records.last().is_none_or(|(last, _)| *last < k);
                    records.push((k, l));
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

    if let Some(bytes) = journal_bytes {
        match parse_header(&bytes, KIND_JOURNAL) {
            Some(g) if snap_generation == Some(g) => {
                if bytes.len() > HEADER_LEN {
                    // Records to apply: by key from here on.
                    in_order = false;
                }
                if !in_order {
                    map.reserve(records.len());
                    map.extend(records.drain(..));
                }
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
    out.clients = intern.clients();
    if in_order {
        // Unique and in key order as written; only the expired ones go.
        let before = records.len();
        records.retain(|(_, l)| l.valid_until > now);
        out.expired += (before - records.len()) as u64;
        out.leases = records;
        return Ok(out);
    }
    map.extend(records.drain(..));
    out.leases.reserve(map.len());
    for (k, l) in map {
        if l.valid_until <= now {
            out.expired += 1;
        } else {
            out.leases.push((k, l));
        }
    }
    // Keys are unique (they were a map's): an unstable sort gives the one key order.
    out.leases.sort_unstable_by_key(|(k, _)| *k);
    Ok(out)
}
