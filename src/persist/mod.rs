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
//! [`AgentClock`](crate::time::AgentClock)), so deadlines keep their meaning across a reboot; leases whose
//! valid lifetime ended while the agent was down are dropped on load.
//!
//! Writing (one background thread, [`StateWriter`]; the cache task only does a non-blocking
//! `try_send`, so writes never block the hot path — a full queue drops the record, counts it, and
//! asks for a snapshot, which supersedes it; the cache task takes that copy of the store only once
//! the writer has no snapshot waiting or being written, so a burst of drops while a big snapshot
//! is written costs one more snapshot, taken after the last drop, not one per drop):
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
//!   always hold the state after some prefix of the records. While the writer writes a snapshot
//!   (on a helper thread) it keeps taking messages off the queue, up to 256k, and handles them
//!   after it in their order, exactly as if they had waited in the queue: a big snapshot no longer
//!   fills the queue and drops the records behind it;
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
//!
//! Reading is not damage: an I/O error reading a file (EIO, EACCES, a directory in its place) is
//! retried ([`ReadRetry`]) and then fatal ([`PersistError::Unreadable`]), never taken for an
//! empty file — the fresh snapshot written at start would otherwise destroy it (a start whose
//! loaded state is exactly the files' resumes them instead, see [`StateWriter::resume`]). Only a file that
//! was read and found damaged is copied or moved aside. Leases admission refuses at start are
//! written to [`REFUSED_FILE`] rather than dropped, and offered to admission again at the next
//! start. One agent per state directory: [`DirLock`] (`flock` on [`LOCK_FILE`]).
//!
//! Inside: [`codec`] (pure record codec: headers, payloads, framing, the damage-tolerant walk),
//! [`load`](mod@load) (reads the files at start), [`writer`] (the writer thread). The cache rules
//! never see the files; the cache task hands records to the writer and gets loaded leases at
//! start.

pub(crate) mod codec;
pub mod load;
pub(crate) mod writer;

use std::io;
use std::path::{Path, PathBuf};

pub use codec::{Damage, FORMAT_VERSION, MAX_RECORD, Record, decode_record, encode_record};
pub use load::{FsRead, Loaded, ReadRetry, StateRead, load, load_refused, load_with};
pub use writer::{DirLock, JournalHandle, PersistStats, StateEvent, StateWriter, write_refused};

pub const SNAPSHOT_FILE: &str = "bindings.snap";
pub const JOURNAL_FILE: &str = "bindings.journal";
/// Leases admission refused at start (snapshot format), kept so that a configuration mistake
/// does not erase them for good: the next start offers them to admission again.
pub const REFUSED_FILE: &str = "bindings.refused";
/// The state directory's lock file (`flock`), held while the agent runs.
pub const LOCK_FILE: &str = "lock";
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
    /// Reading failed (EIO, EACCES, …) on every attempt. Not "empty": an empty cache would be
    /// written over the file at once, destroying what a later read might still get. The file is
    /// left exactly as it is.
    #[error(
        "state file {path} cannot be read ({attempts} attempts): {source}; not starting, the file \
         is left untouched: fix the cause, or move the file away to start without it"
    )]
    Unreadable {
        path: PathBuf,
        attempts: u32,
        #[source]
        source: io::Error,
    },
    /// Another process holds the state directory's lock: two agents on one state file would
    /// each truncate and replace what the other writes.
    #[error(
        "state directory {dir} is in use by another lqagent (lock {lock} is held); not starting"
    )]
    Locked { dir: PathBuf, lock: PathBuf },
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
    /// Bound of the queue between the cache task and the writer thread. A record that finds
    /// it full is dropped and costs a snapshot (a copy of the whole store); 65 536 records
    /// (a few MB of queue) ride out the writer thread being kept off a busy CPU for half a second of
    /// a bulk recovery's stream, where 8192 overflowed under load and cost one or two extra
    /// million-lease snapshots in some runs and none in others.
    pub queue: usize,
    /// Longest time between journal `fdatasync`s while records keep coming.
    pub sync_interval_ms: u64,
    /// Journal records after which the cache task should send a snapshot, or the last
    /// snapshot's lease count when that is larger (the journal never outgrows its snapshot
    /// by much before it is folded in, and a big cache is not copied every few records).
    pub snapshot_after_records: u64,
    /// Largest single `write(2)`; only tests lower it, to make torn records likely under SIGKILL.
    pub max_write_chunk: usize,
}

impl PersistConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PersistConfig {
            dir: dir.into(),
            queue: 65_536,
            sync_interval_ms: 1000,
            snapshot_after_records: 200_000,
            max_write_chunk: usize::MAX,
        }
    }
}
