//! The state file's writer: one background thread that appends the journal, writes snapshots
//! when the cache task asks, syncs on a timer, and keeps going in a degraded mode while the disk
//! refuses writes (see the parent module's doc for the ordering it guarantees).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;

use super::codec::{
    HEADER_LEN, KIND_JOURNAL, KIND_SNAPSHOT, Record, encode_end, encode_record, encode_upsert,
    frame, header, parse_header,
};
use super::{
    JOURNAL_FILE, LOCK_FILE, PersistConfig, PersistError, REFUSED_FILE, SNAPSHOT_FILE, io_err,
};
use crate::cache::binding::{Lease, LeaseKey};
use crate::time::{Duration, Instant};

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

crate::label::labels! {
    /// An event of the state writer: the `event` label of `lqagent_state_events_total`.
    pub enum StateEvent {
        RecordWritten => "record_written",
        RecordDropped => "record_dropped",
        SnapshotWritten => "snapshot_written",
        SnapshotCoalesced => "snapshot_coalesced",
        Sync => "sync",
        WriteError => "write_error",
        /// Entered the degraded mode.
        Degraded => "degraded",
        /// Left the degraded mode.
        Recovered => "recovered",
    }
}

impl PersistStats {
    /// How many `event`s happened (`lqagent_state_events_total{event}`).
    pub fn get(&self, event: StateEvent) -> u64 {
        let counter = match event {
            StateEvent::RecordWritten => &self.records_written,
            StateEvent::RecordDropped => &self.records_dropped,
            StateEvent::SnapshotWritten => &self.snapshots_written,
            StateEvent::SnapshotCoalesced => &self.snapshots_coalesced,
            StateEvent::Sync => &self.syncs,
            StateEvent::WriteError => &self.write_errors,
            StateEvent::Degraded => &self.degraded_entered,
            StateEvent::Recovered => &self.degraded_left,
        };
        counter.load(Ordering::Relaxed)
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
    /// The writer is writing a snapshot (the one it took from this slot, or its initial one).
    /// While it does, its queue is not drained and records that find it full are dropped; a
    /// new copy is not asked for until it is done (see [`JournalHandle::wants_snapshot`]).
    writing: bool,
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
    /// Leases in the last snapshot handed to the writer (the initial one at start). The journal
    /// may grow to this many records too before a snapshot is asked for: a fixed bound made a
    /// million-lease bulk recovery copy, encode and fsync the growing store every 200 000
    /// records (3 million leases written for 1 million, each copy stalling the cache task),
    /// while a bound that grows with the snapshot keeps the work per record constant
    /// (amortised) and the journal a load replays never longer than the snapshot beside it.
    snapshot_len: Arc<AtomicU64>,
    /// Leases the cache holds, as the cache task last said ([`JournalHandle::note_live`]). The
    /// journal may grow to this many records too: a replay then costs at most as much again as
    /// loading the live set, the bound that matters. While a cache grows from empty (a bulk
    /// recovery after a lost state file) its journal never catches up with it, so it is folded
    /// into one snapshot at the stop instead of one at each doubling (a million-lease bulk
    /// recovery wrote 200k, 400k and 800k-lease snapshots on the way, about a fifth of its CPU
    /// time beyond the routes, each copy of the store stalling the cache task).
    live: Arc<AtomicU64>,
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
    /// The handle of a writer just started: nothing queued yet, the journal's bound from the
    /// configuration, the last snapshot's size and the cache's (see [`Self::snapshot_threshold`]).
    fn new(
        cfg: &PersistConfig,
        tx: SyncSender<Msg>,
        stats: Arc<PersistStats>,
        pending: Arc<std::sync::Mutex<PendingSnapshot>>,
        snapshot_len: Arc<AtomicU64>,
        live: u64,
    ) -> JournalHandle {
        JournalHandle {
            tx,
            stats,
            snapshot_after: cfg.snapshot_after_records.max(1),
            snapshot_len,
            live: Arc::new(AtomicU64::new(live)),
            pending,
            queued: Arc::new(AtomicU64::new(0)),
        }
    }

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
                if n >= self.snapshot_threshold() {
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

    /// Journal records after which a snapshot is asked for: the configured count, or the
    /// last snapshot's size or the cache's lease count when larger (see the fields
    /// `snapshot_len` and `live`).
    pub(crate) fn snapshot_threshold(&self) -> u64 {
        self.snapshot_after
            .max(self.snapshot_len.load(Ordering::Relaxed))
            .max(self.live.load(Ordering::Relaxed))
    }

    /// The cache now holds `leases` leases (the cache task says so after its writes): the
    /// journal may grow to that many records before a snapshot is asked for.
    pub fn note_live(&self, leases: u64) {
        self.live.store(leases, Ordering::Relaxed);
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

    /// Whether the cache task should send a snapshot now: one is wanted (records were
    /// dropped, the journal grew long, or a degraded writer has nothing to retry) and the
    /// writer is neither writing one nor has one waiting.
    ///
    /// Why wait: while the writer writes a big snapshot its queue fills and every record that
    /// finds it full asks for a snapshot; taking a fresh copy of the store for each (the cache
    /// task waits for that walk) only to replace the one still waiting cost a 1M-lease bulk
    /// recovery 77 copies. The wish stays set, so once the writer is done the next copy is
    /// taken — after the last dropped record, which it therefore covers: a burst costs at
    /// most one more snapshot and loses nothing.
    pub fn wants_snapshot(&self) -> bool {
        self.stats.snapshot_wanted.load(Ordering::Relaxed) && {
            let p = lock(&self.pending);
            p.leases.is_none() && !p.writing
        }
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
        self.snapshot_len.store(all.len() as u64, Ordering::Relaxed);
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
    /// The state directory's lock, released after the thread's last write.
    lock: Option<DirLock>,
}

/// Most messages the writer takes off its queue in one turn.
const BATCH: usize = 4096;

/// Most messages the writer takes off its queue while it writes a snapshot (see
/// `Writer::snapshot`); past it the queue fills and records are dropped, as without the
/// helper. About 30 MB of records: a million-lease snapshot's write at a bulk recovery's rate.
const EARLY_MAX: usize = 256 * 1024;

/// How often the writer looks whether the snapshot's write is done while it takes messages.
const EARLY_POLL: Duration = Duration::from_millis(1);

/// How long the writer lets records gather after a turn that took records but found its queue
/// less than a quarter full. Without it, a record stream (a bulk recovery's) finds the writer
/// waiting on every send: each record then costs the cache task a futex wake-up and the writer
/// a sleep and a wake — more than encoding and writing the record. Records reach the file at
/// most this much later (the sync interval is a second); a queue a quarter full or more is
/// drained again at once, so the pause never makes a sender find it full (at the default 65 536,
/// a quarter filling within the pause would take eight million records a second).
const COALESCE: Duration = Duration::from_millis(2);

/// First retry after a failed write; doubles up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

impl StateWriter {
    /// Run the writer thread, whose first work is to write `initial` as a fresh snapshot of
    /// generation `generation + 1` and start a journal ([`JournalHandle::sync`] waits for it). A
    /// directory that cannot be made or written is not fatal: the writer goes degraded and
    /// retries (see [`PersistStats::degraded`]); only failing to start the thread is.
    pub fn start(
        cfg: PersistConfig,
        initial: Leases,
        generation: u64,
    ) -> Result<StateWriter, PersistError> {
        let mut files = Files::new(&cfg, generation, None, 0);
        let stats = Arc::new(PersistStats::default());
        let mut w = Writer::new(stats.clone(), &cfg);
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        // The thread's first work is writing the initial snapshot.
        let pending = Arc::new(std::sync::Mutex::new(PendingSnapshot {
            writing: true,
            ..PendingSnapshot::default()
        }));
        let interval = Duration::from_millis(cfg.sync_interval_ms);
        let p = pending.clone();
        let dir = cfg.dir.clone();
        let snapshot_len = Arc::new(AtomicU64::new(initial.len() as u64));
        let thread = std::thread::Builder::new()
            .name("lqagent-state".into())
            .spawn(move || {
                // The fresh snapshot is the thread's first write, so the start does not wait
                // for the disk (at a restart from a big state file that write held up the
                // routes' install); records queued meanwhile wait, then follow it into the new
                // journal. Until it is written the files of the last run stay as they were.
                let r = fs::create_dir_all(&dir)
                    .map_err(io_err(&dir))
                    .and_then(|()| files.write_snapshot(initial.iter().map(|(k, l)| (k, l))));
                match r {
                    Ok(()) => {
                        w.stats.snapshots_written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        w.held = Some(initial.into_iter().collect());
                        w.failed(&e);
                    }
                }
                lock(&p).writing = false;
                w.run(files, rx, p, interval)
            })
            .map_err(io_err(&cfg.dir))?;
        Ok(StateWriter {
            handle: JournalHandle::new(&cfg, tx, stats, pending, snapshot_len, 0),
            thread: Some(thread),
            lock: None,
        })
    }

    /// Run the writer thread on the files as they are: appends go on at the end of the
    /// journal of `generation` (its header checked here), no snapshot is written first. For
    /// a start whose loaded state is exactly what the files hold (see
    /// [`Loaded::is_on_disk`](super::Loaded::is_on_disk)): rewriting that state as a fresh
    /// snapshot would only cost the start a copy of every lease and the writer a full
    /// encode, write and fsync beside the routes' install — for nothing, since crash safety
    /// is the same (the files already hold the state, and each record appended extends it).
    /// `leases` is the snapshot's lease count and `journal_records` the records its journal
    /// holds already: the next snapshot is asked for as if this run had written them.
    ///
    /// An error (no journal, a journal of another generation or kind, one that cannot be
    /// opened for appending) leaves the files untouched: the caller starts with [`start`]
    /// instead.
    ///
    /// [`start`]: StateWriter::start
    pub fn resume(
        cfg: PersistConfig,
        generation: u64,
        leases: u64,
        journal_records: u64,
    ) -> Result<StateWriter, PersistError> {
        let path = cfg.dir.join(JOURNAL_FILE);
        let mut journal = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut head = [0u8; HEADER_LEN];
        io::Read::read_exact(&mut journal, &mut head).map_err(io_err(&path))?;
        if parse_header(&head, KIND_JOURNAL) != Some(generation) {
            return Err(io_err(&path)(io::Error::new(
                io::ErrorKind::InvalidData,
                "journal header does not name the loaded snapshot's generation",
            )));
        }
        let len = journal.metadata().map_err(io_err(&path))?.len();
        let files = Files::new(&cfg, generation, Some(journal), len);
        let stats = Arc::new(PersistStats::default());
        stats
            .records_since_snapshot
            .store(journal_records, Ordering::Relaxed);
        let w = Writer::new(stats.clone(), &cfg);
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let pending = Arc::new(std::sync::Mutex::new(PendingSnapshot::default()));
        let interval = Duration::from_millis(cfg.sync_interval_ms);
        let p = pending.clone();
        let thread = std::thread::Builder::new()
            .name("lqagent-state".into())
            .spawn(move || w.run(files, rx, p, interval))
            .map_err(io_err(&cfg.dir))?;
        let snapshot_len = Arc::new(AtomicU64::new(leases));
        Ok(StateWriter {
            handle: JournalHandle::new(&cfg, tx, stats, pending, snapshot_len, leases),
            thread: Some(thread),
            lock: None,
        })
    }

    pub fn handle(&self) -> JournalHandle {
        self.handle.clone()
    }

    /// Hold `lock` until this writer is shut down (after its last write).
    pub fn keep_lock(&mut self, lock: DirLock) {
        self.lock = Some(lock);
    }

    /// Flush, fsync and stop the thread.
    pub fn shutdown(mut self) {
        let _ = self.handle.tx.send(Msg::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.lock.take();
    }
}

/// The state directory's lock: an exclusive `flock` on [`LOCK_FILE`], held while this value
/// lives (the kernel drops it with the process, so a crash never leaves it stale).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Take the lock of `dir` (made if missing). [`PersistError::Locked`] when another process
    /// (or another open of the file) holds it; any other failure is an I/O error, which the
    /// daemon logs without refusing to start (a disk that cannot be written degrades
    /// persistence, not routing).
    pub fn acquire(dir: &Path) -> Result<DirLock, PersistError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // `File::try_lock` does this from Rust 1.89, above this crate's MSRV.
        #[allow(unsafe_code)]
        // SAFETY: flock(2) on a descriptor `file` owns and keeps open; no memory is passed.
        let r = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if r == 0 {
            return Ok(DirLock { _file: file, path });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(PersistError::Locked {
                dir: dir.to_path_buf(),
                lock: path,
            });
        }
        Err(io_err(&path)(e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Keep `refused` (leases admission refused at start) in [`REFUSED_FILE`] in snapshot format,
/// replaced atomically; none: the file is removed. So a configuration mistake (a typo in a
/// link's prefixes) does not erase leases for good: the next start offers them again.
pub fn write_refused(dir: &Path, refused: &[(LeaseKey, Lease)]) -> Result<(), PersistError> {
    let dst = dir.join(REFUSED_FILE);
    if refused.is_empty() {
        return match fs::remove_file(&dst) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&dst)(e)),
            _ => Ok(()),
        };
    }
    let mut out = Vec::with_capacity(HEADER_LEN + refused.len() * 120);
    out.extend_from_slice(&header(KIND_SNAPSHOT, 0));
    let mut p = Vec::with_capacity(256);
    for (k, l) in refused {
        p.clear();
        encode_upsert(k, l, &mut p);
        frame(&p, &mut out);
    }
    p.clear();
    encode_end(refused.len(), &mut p);
    frame(&p, &mut out);
    let tmp = dir.join(format!("{REFUSED_FILE}.tmp"));
    let r = (|| {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&out).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &dst).map_err(io_err(&dst))
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r?;
    sync_dir(dir).map_err(io_err(dir))
}

struct Files {
    dir: PathBuf,
    generation: u64,
    journal: Option<File>,
    /// Bytes of the journal that are whole records (where a failed append is cut back to).
    journal_len: u64,
    buf: Vec<u8>,
    /// The payload of the record being appended (reused).
    payload: Vec<u8>,
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
    /// The files of `generation` in the configured directory, appending to `journal` (whose
    /// first `journal_len` bytes are whole records) when one is open.
    fn new(cfg: &PersistConfig, generation: u64, journal: Option<File>, journal_len: u64) -> Files {
        Files {
            dir: cfg.dir.clone(),
            generation,
            journal,
            journal_len,
            buf: Vec::with_capacity(64 * 1024),
            payload: Vec::with_capacity(256),
            chunk: cfg.max_write_chunk.max(1),
        }
    }

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
            encode_upsert(k, l, &mut p);
            frame(&p, &mut out);
        }
        p.clear();
        encode_end(count, &mut p);
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
        // One payload buffer for every record (a record's allocation was the writer's
        // largest cost per record after the write itself).
        self.payload.clear();
        encode_record(rec, &mut self.payload);
        frame(&self.payload, &mut self.buf);
    }

    /// Write the buffer; on failure cut the journal back to its last whole record.
    fn flush(&mut self) -> Result<(), PersistError> {
        if self.buf.is_empty() {
            return Ok(());
        }
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
                // The path only for the error: a flush runs per batch of a storm's records.
                Err(io_err(&self.dir.join(JOURNAL_FILE))(e))
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
    /// Bound of the queue (see [`COALESCE`]).
    queue: usize,
}

fn backoff(attempt: u32) -> Duration {
    crate::time::backoff(attempt, RETRY_BASE, RETRY_MAX)
}

impl Writer {
    /// A writer in good health that has taken nothing yet.
    fn new(stats: Arc<PersistStats>, cfg: &PersistConfig) -> Writer {
        Writer {
            stats,
            degraded: None,
            held: None,
            taken: 0,
            queue: cfg.queue.max(1),
        }
    }

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
    ///
    /// The write runs on a helper thread while this one keeps taking messages off the queue
    /// into `early` (up to [`EARLY_MAX`]), in order, unprocessed: they are handled after the
    /// snapshot exactly as if they had waited in the queue. Without that the queue filled
    /// during every big snapshot and its records were dropped, each drop asking for another
    /// snapshot: a 1M-lease bulk recovery wrote one snapshot after another (16, two thirds of
    /// its records dropped), most of the writer's and the cache task's work.
    fn snapshot(
        &mut self,
        files: &mut Files,
        all: Leases,
        rx: &Receiver<Msg>,
        early: &mut VecDeque<Msg>,
    ) {
        if self.degraded.is_some_and(|d| Instant::now() < d.retry_at) {
            self.held = Some(all.into_iter().collect());
            return;
        }
        let dir = files.dir.clone();
        let r = std::thread::scope(|s| {
            let write = std::thread::Builder::new()
                .name("lqagent-snap".into())
                .spawn_scoped(s, || files.write_snapshot(all.iter().map(|(k, l)| (k, l))));
            let write = match write {
                Ok(w) => w,
                // No thread to be had: a failed write (degraded, retried with backoff).
                Err(e) => return Err(io_err(&dir)(e)),
            };
            while !write.is_finished() {
                if early.len() >= EARLY_MAX {
                    std::thread::sleep(EARLY_POLL);
                    continue;
                }
                match rx.recv_timeout(EARLY_POLL) {
                    Ok(m) => early.push_back(m),
                    Err(RecvTimeoutError::Timeout) => {}
                    // Every sender gone: the loop sees it again after the snapshot.
                    Err(RecvTimeoutError::Disconnected) => std::thread::sleep(EARLY_POLL),
                }
            }
            match write.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
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
        rx: &Receiver<Msg>,
        early: &mut VecDeque<Msg>,
    ) -> bool {
        let all = {
            let mut p = lock(pending);
            // `after > taken`: records it covers are still queued; they come first. (`after <
            // taken` cannot happen with one sending sequence; writing it then is the least bad.)
            if p.leases.is_none() || p.after > self.taken {
                return false;
            }
            p.writing = true;
            p.leases.take()
        };
        if let Some(all) = all {
            self.snapshot(files, all, rx, early);
        }
        lock(pending).writing = false;
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
        // Messages taken off the queue while a snapshot was written, not yet handled: they
        // come before whatever is still in the queue.
        let mut early: VecDeque<Msg> = VecDeque::new();
        // One batch buffer for the thread's life (it keeps the largest batch's room): in a
        // storm the writer wakes for a few records at a time, and a fresh Vec was an allocation
        // and a free per wake-up.
        let mut batch: Vec<Msg> = Vec::new();
        loop {
            let wait = match self.degraded {
                Some(d) => d
                    .retry_at
                    .saturating_duration_since(Instant::now())
                    .min(interval),
                None => interval,
            };
            batch.extend(early.drain(..early.len().min(BATCH)));
            if batch.is_empty() {
                let first = match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Msg::Shutdown),
                };
                batch.extend(first);
            }
            while batch.len() < BATCH && early.is_empty() {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut stop = false;
            let mut acks = Vec::new();
            let (taken, records) = (
                batch.len(),
                batch.iter().filter(|m| matches!(m, Msg::Record(_))).count(),
            );
            for m in batch.drain(..) {
                // The pending snapshot goes in at its place in the record stream (its marker
                // may sit later in the queue, or have found no room); records before it are in
                // it (it drops the buffer), records after it go to its fresh journal.
                if self.snapshot_if_due(&mut files, &pending, &rx, &mut early) {
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
            if self.snapshot_if_due(&mut files, &pending, &rx, &mut early) {
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
            if records > 0 && taken < BATCH.min(self.queue / 4) && early.is_empty() {
                std::thread::sleep(COALESCE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::cache::binding::{ClientInfo, IaType, Link, ServerId, Source, Timestamp};
    use crate::persist::load::{Loaded, load};

    const T0: i64 = 1_795_000_000_000;

    /// Ten leases on keys of their own (2001:db8:2::0-9), each the content of an upsert `op`.
    fn ten_leases() -> Leases {
        (0..10u32)
            .map(|i| match op(i * 5) {
                Record::Upsert(_, l) => (
                    LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, i as u16)),
                    l,
                ),
                Record::Remove(_) => unreachable!("op(5i) is an upsert"),
            })
            .collect()
    }

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

    /// The loader hands the leases back in key order, whatever order the snapshot and the
    /// journal hold them in, and leases of one client, one server, one interface share one
    /// value each, as in the live cache (a million leases must not mean a million copies).
    #[test]
    fn loaded_leases_come_in_key_order_and_share_clients_servers_and_interfaces() {
        let dir = tempfile::tempdir().unwrap();
        let lease = |i: u16| {
            let client = ClientInfo {
                duid: vec![0, 3, 0, 1, (i % 50) as u8].into(),
                link: Link {
                    address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
                    interface: Some(Arc::from(if i % 2 == 0 { "sub1" } else { "sub2" })),
                },
                relay: None,
            };
            let Record::Upsert(_, l) = op(u32::from(i % 4)) else {
                unreachable!("op 0..4 is an upsert")
            };
            let key = LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, i));
            (
                key,
                Lease {
                    client: Arc::new(client),
                    ..l
                },
            )
        };
        // Keys out of order, 150 in the snapshot, 50 more through the journal.
        let all: Vec<_> = (0..200u16).map(|i| lease((i * 77) % 200)).collect();
        let w = StateWriter::start(PersistConfig::new(dir.path()), all[..150].to_vec(), 0).unwrap();
        let h = w.handle();
        for (k, l) in &all[150..] {
            assert!(h.record_blocking(Record::Upsert(*k, l.clone())));
        }
        assert!(h.sync());
        w.shutdown();
        let loaded = load(dir.path(), Timestamp::from_millis(T0)).unwrap();
        let keys: Vec<LeaseKey> = loaded.leases.iter().map(|(k, _)| *k).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(keys.len(), 200);
        assert_eq!(keys, sorted, "in key order");
        let by_duid = |n: u8| {
            loaded
                .leases
                .iter()
                .filter(move |(_, l)| l.client.duid[4] == n)
                .map(|(_, l)| &l.client)
        };
        for n in [0u8, 7, 49] {
            let mut same = by_duid(n);
            let one = same.next().unwrap();
            assert!(same.all(|c| Arc::ptr_eq(c, one)), "client {n} shared");
        }
        assert!(!Arc::ptr_eq(
            by_duid(0).next().unwrap(),
            by_duid(1).next().unwrap()
        ));
        let (_, l0) = &loaded.leases[0];
        assert!(
            loaded
                .leases
                .iter()
                .all(|(_, l)| Arc::ptr_eq(&l.server, &l0.server))
        );
        let sub1: Vec<&Arc<str>> = loaded
            .leases
            .iter()
            .filter_map(|(_, l)| l.client.link.interface.as_ref())
            .filter(|i| &***i == "sub1")
            .collect();
        assert_eq!(sub1.len(), 100);
        assert!(
            sub1.iter().all(|i| Arc::ptr_eq(i, sub1[0])),
            "interface names shared"
        );
    }

    /// The journal may grow as long as the last snapshot before it asks for another: a big
    /// cache is not copied every `snapshot_after_records`, a small one still is.
    #[test]
    fn the_journal_asks_for_a_snapshot_after_as_many_records_as_the_last_snapshot_held() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = PersistConfig::new(dir.path());
        cfg.snapshot_after_records = 3;
        let initial = ten_leases();
        let w = StateWriter::start(cfg, initial.clone(), 0).unwrap();
        let h = w.handle();
        let wanted = || h.stats().snapshot_wanted.load(Ordering::Relaxed);
        for i in 0..9 {
            assert!(h.record(op(i)));
            assert!(!wanted(), "record {i}: below the 10 leases of the snapshot");
        }
        assert!(h.record(op(9)));
        assert!(wanted(), "10 records: as many as the snapshot held");
        // A small snapshot brings the configured count back.
        assert!(h.snapshot(initial[..2].to_vec()));
        for i in 0..2 {
            assert!(h.record(op(i)));
            assert!(!wanted());
        }
        assert!(h.record(op(2)));
        assert!(
            wanted(),
            "3 records: the configured count, above the snapshot's 2"
        );
        w.shutdown();
    }

    /// A cache growing past its snapshot (a bulk recovery): the journal may grow as long as
    /// the cache is large, so the growth costs no snapshot on the way (without it: one at 10
    /// records, the snapshot's size); a journal that outgrows the cache (records rewriting the
    /// same leases) still asks for one.
    #[test]
    fn the_journal_may_grow_as_long_as_the_cache_it_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = PersistConfig::new(dir.path());
        cfg.snapshot_after_records = 3;
        let w = StateWriter::start(cfg, ten_leases(), 0).unwrap();
        let h = w.handle();
        let wanted = || h.stats().snapshot_wanted.load(Ordering::Relaxed);
        // Each record a new lease: the cache stays ahead of its journal.
        for i in 0..30 {
            h.note_live(11 + u64::from(i));
            assert!(h.record(op(i)));
            assert!(!wanted(), "record {i}: a journal shorter than the cache");
        }
        // The cache holds 40 leases and stops growing: rewrites catch the journal up.
        for i in 30..39 {
            assert!(h.record(op(i)));
            assert!(!wanted(), "record {i}");
        }
        assert!(h.record(op(39)));
        assert!(wanted(), "40 records for a cache of 40 leases");
        w.shutdown();
    }

    /// A snapshot in key order with no journal is taken as read (no map): expired leases
    /// still go and are counted; a key written twice still loads once, its later record winning,
    /// as through the journal's map.
    #[test]
    fn a_snapshot_in_key_order_loads_as_read_and_a_repeated_key_keeps_its_last_record() {
        let at = |i: u16| LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, i));
        let lease = |iaid: u32, valid: i64| match op(0) {
            Record::Upsert(_, l) => Lease {
                iaid,
                valid_until: Timestamp::from_millis(T0 + valid),
                ..l
            },
            Record::Remove(_) => unreachable!("op 0 is an upsert"),
        };
        let load_of = |leases: Vec<(LeaseKey, Lease)>| {
            let dir = tempfile::tempdir().unwrap();
            StateWriter::start(PersistConfig::new(dir.path()), leases, 0)
                .unwrap()
                .shutdown();
            load(dir.path(), Timestamp::from_millis(T0)).unwrap()
        };
        let l = load_of(vec![
            (at(1), lease(1, 10)),
            (at(2), lease(2, -10)),
            (at(3), lease(3, 10)),
        ]);
        let got: Vec<(LeaseKey, u32)> = l.leases.iter().map(|(k, l)| (*k, l.iaid)).collect();
        assert_eq!(got, vec![(at(1), 1), (at(3), 3)]);
        assert_eq!(l.expired, 1);
        let l = load_of(vec![
            (at(1), lease(1, 10)),
            (at(2), lease(2, 10)),
            (at(2), lease(22, 10)),
            (at(3), lease(3, 10)),
        ]);
        let got: Vec<(LeaseKey, u32)> = l.leases.iter().map(|(k, l)| (*k, l.iaid)).collect();
        assert_eq!(got, vec![(at(1), 1), (at(2), 22), (at(3), 3)]);
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
            payload: Vec::new(),
            chunk: usize::MAX,
        };
        files.write_snapshot(std::iter::empty()).unwrap();
        let stats = Arc::new(PersistStats::default());
        let w = Writer {
            stats: stats.clone(),
            degraded: None,
            held: None,
            taken: 0,
            queue: 1,
        };
        (w, files, stats)
    }

    fn pending_at(after: u32) -> Arc<std::sync::Mutex<PendingSnapshot>> {
        Arc::new(std::sync::Mutex::new(PendingSnapshot {
            after: u64::from(after),
            leases: Some(state_after(after).into_iter().collect()),
            writing: false,
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
        // The initial snapshot is the thread's first write: once synced, it has failed.
        assert!(h.sync());
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

    /// A state directory holding a snapshot of `state_after(8)` and a journal with two more
    /// records; returns the files' bytes.
    fn written(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        let (_, mut files, _) = writer(dir);
        files.write_snapshot(state_after(8).iter()).unwrap();
        for i in 8..10 {
            files.append(&op(i));
        }
        files.flush().unwrap();
        (
            fs::read(dir.join(SNAPSHOT_FILE)).unwrap(),
            fs::read(dir.join(JOURNAL_FILE)).unwrap(),
        )
    }

    /// Reads `fail` fails with `kind` `times` times (every time when `None`), others read.
    struct Failing {
        fail: PathBuf,
        kind: io::ErrorKind,
        times: Option<u32>,
        calls: std::cell::Cell<u32>,
    }

    impl crate::persist::StateRead for Failing {
        fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
            if path == self.fail {
                let n = self.calls.get();
                self.calls.set(n + 1);
                if self.times.is_none_or(|t| n < t) {
                    return Err(io::Error::from(self.kind));
                }
            }
            crate::persist::FsRead.read(path)
        }
    }

    fn quick() -> crate::persist::ReadRetry {
        crate::persist::ReadRetry {
            attempts: 3,
            first_delay: Duration::ZERO,
        }
    }

    fn names(dir: &Path) -> std::collections::BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_read_error_is_retried_then_fatal_and_the_files_stay_untouched() {
        let now = Timestamp::from_millis(T0);
        for (file, kind) in [
            (SNAPSHOT_FILE, io::ErrorKind::Other),           // EIO
            (JOURNAL_FILE, io::ErrorKind::PermissionDenied), // EACCES
        ] {
            let d = tempfile::tempdir().unwrap();
            let (mut snap, journal) = written(d.path());
            if file == JOURNAL_FILE {
                // A snapshot with nothing usable would be moved aside — but not before the
                // journal was read too: an unreadable journal leaves both files as they are.
                snap = vec![0x5a; 300];
                fs::write(d.path().join(SNAPSHOT_FILE), &snap).unwrap();
            }
            let before = names(d.path());
            let r = Failing {
                fail: d.path().join(file),
                kind,
                times: None,
                calls: Default::default(),
            };
            let e = crate::persist::load_with(d.path(), now, &r, quick()).unwrap_err();
            match &e {
                PersistError::Unreadable {
                    path,
                    attempts,
                    source,
                } => {
                    assert_eq!(path, &d.path().join(file));
                    assert_eq!((*attempts, source.kind()), (3, kind));
                }
                other => panic!("{file}: {other:?}"),
            }
            assert_eq!(r.calls.get(), 3, "{file}: tried three times");
            assert!(e.to_string().contains("cannot be read"), "{e}");
            assert_eq!(
                names(d.path()),
                before,
                "{file}: nothing moved or copied aside"
            );
            assert_eq!(fs::read(d.path().join(SNAPSHOT_FILE)).unwrap(), snap);
            assert_eq!(fs::read(d.path().join(JOURNAL_FILE)).unwrap(), journal);
        }
    }

    #[test]
    fn a_read_that_works_on_a_later_try_loads_everything() {
        let d = tempfile::tempdir().unwrap();
        written(d.path());
        let r = Failing {
            fail: d.path().join(SNAPSHOT_FILE),
            kind: io::ErrorKind::Other,
            times: Some(2),
            calls: Default::default(),
        };
        let l =
            crate::persist::load_with(d.path(), Timestamp::from_millis(T0), &r, quick()).unwrap();
        let got: BTreeMap<_, _> = l.leases.into_iter().collect();
        assert_eq!(got, state_after(10));
        assert!(l.moved_aside.is_empty());
    }

    /// No fault injection: a directory where the snapshot should be (EISDIR on read, which root
    /// gets too, unlike EACCES).
    #[test]
    fn a_snapshot_path_that_cannot_be_read_is_fatal_not_empty() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join(SNAPSHOT_FILE)).unwrap();
        fs::write(d.path().join(SNAPSHOT_FILE).join("keep"), b"x").unwrap();
        let before = names(d.path());
        let e = crate::persist::load_with(
            d.path(),
            Timestamp::from_millis(T0),
            &crate::persist::FsRead,
            quick(),
        )
        .unwrap_err();
        assert!(matches!(e, PersistError::Unreadable { .. }), "{e:?}");
        assert_eq!(names(d.path()), before);
        assert!(d.path().join(SNAPSHOT_FILE).join("keep").exists());
    }

    #[test]
    fn a_second_lock_on_the_state_directory_is_refused_until_the_first_is_released() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let first = DirLock::acquire(&dir).unwrap();
        let e = DirLock::acquire(&dir).unwrap_err();
        assert!(matches!(e, PersistError::Locked { .. }), "{e:?}");
        assert!(e.to_string().contains("in use by another lqagent"), "{e}");
        drop(first);
        DirLock::acquire(&dir).expect("free again");
    }

    #[test]
    fn refused_leases_are_kept_aside_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let now = Timestamp::from_millis(T0);
        let read = |d: &Path| {
            crate::persist::load_refused(d, now, &crate::persist::FsRead, quick()).unwrap()
        };
        assert!(read(d.path()).is_empty(), "no file: nothing");
        let aside: Vec<_> = state_after(8).into_iter().collect();
        write_refused(d.path(), &aside).unwrap();
        assert_eq!(read(d.path()), aside);
        let past = crate::persist::load_refused(
            d.path(),
            Timestamp::from_millis(T0 + 3_000_000),
            &crate::persist::FsRead,
            quick(),
        )
        .unwrap();
        assert!(past.is_empty(), "expired ones are dropped");
        write_refused(d.path(), &[]).unwrap();
        assert!(
            !d.path().join(REFUSED_FILE).exists(),
            "none refused: no file"
        );
    }

    /// A start whose loaded state is what the files hold resumes them: the snapshot is left
    /// as it is (no rewrite), records go on at the journal's end, and a load afterwards sees
    /// the snapshot, the old journal records and the new ones. The next snapshot is asked
    /// for counting the journal records already there.
    #[test]
    fn a_resumed_writer_appends_to_the_journal_it_found_and_rewrites_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = PersistConfig::new(dir.path());
        cfg.snapshot_after_records = 1;
        let initial = ten_leases();
        let w = StateWriter::start(cfg.clone(), initial.clone(), 0).unwrap();
        for i in 0..3 {
            assert!(w.handle().record_blocking(op(i)));
        }
        assert!(w.handle().sync());
        w.shutdown();
        let first = load(dir.path(), Timestamp::from_millis(T0)).unwrap();
        assert!(first.is_on_disk());
        assert_eq!((first.generation, first.journal_records), (1, 3));
        let snap = fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap();

        let w = StateWriter::resume(
            cfg.clone(),
            first.generation,
            first.leases.len() as u64,
            first.journal_records,
        )
        .unwrap();
        let h = w.handle();
        let wanted = || h.stats().snapshot_wanted.load(Ordering::Relaxed);
        // 13 leases loaded, 3 records in the journal: 10 more before a snapshot is asked for.
        let n = first.leases.len() as u32;
        assert_eq!(n, 13);
        for i in 3..n - 1 {
            assert!(h.record(op(i)));
            assert!(
                !wanted(),
                "record {i}: the journal is shorter than the snapshot"
            );
        }
        assert!(h.record(op(n - 1)));
        assert!(wanted(), "13 journal records: as many as the leases loaded");
        assert!(h.sync());
        w.shutdown();
        assert_eq!(
            fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap(),
            snap,
            "the snapshot is not rewritten"
        );
        assert_eq!(h.stats().snapshots_written.load(Ordering::Relaxed), 0);
        let after = load(dir.path(), Timestamp::from_millis(T0)).unwrap();
        assert_eq!((after.generation, after.journal_records), (1, 13));
        // The same state as one writer taking every record.
        let one = tempfile::tempdir().unwrap();
        let w = StateWriter::start(PersistConfig::new(one.path()), initial, 0).unwrap();
        for i in 0..n {
            assert!(w.handle().record_blocking(op(i)));
        }
        assert!(w.handle().sync());
        w.shutdown();
        let want = load(one.path(), Timestamp::from_millis(T0)).unwrap();
        assert_eq!(after.leases, want.leases);
    }

    /// Only the journal of the loaded snapshot's generation is resumed; anything else (none,
    /// an older one) is refused with the files untouched, and the start writes a snapshot.
    #[test]
    fn resuming_refuses_a_missing_journal_or_one_of_another_generation() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PersistConfig::new(dir.path());
        assert!(
            StateWriter::resume(cfg.clone(), 1, 0, 0).is_err(),
            "no journal"
        );
        let w = StateWriter::start(cfg.clone(), Vec::new(), 0).unwrap();
        assert!(w.handle().record_blocking(op(0)));
        assert!(w.handle().sync());
        w.shutdown();
        let journal = fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
        assert!(
            StateWriter::resume(cfg.clone(), 2, 0, 0).is_err(),
            "generation 1 on disk"
        );
        assert_eq!(fs::read(dir.path().join(JOURNAL_FILE)).unwrap(), journal);
        // A snapshot file standing where the journal should be is not a journal.
        fs::copy(
            dir.path().join(SNAPSHOT_FILE),
            dir.path().join(JOURNAL_FILE),
        )
        .unwrap();
        assert!(
            StateWriter::resume(cfg, 1, 0, 0).is_err(),
            "a snapshot's header"
        );
    }

    /// What the loader found is the files' state only when nothing was dropped or damaged.
    #[test]
    fn loaded_state_is_on_disk_only_when_nothing_was_lost_or_expired() {
        // A snapshot of generation 3 read, nothing else found.
        let whole = || Loaded {
            generation: 3,
            ..Loaded::default()
        };
        assert!(whole().is_on_disk());
        assert!(!Loaded::default().is_on_disk(), "no snapshot read");
        assert!(
            !Loaded {
                expired: 1,
                ..whole()
            }
            .is_on_disk()
        );
        assert!(
            !Loaded {
                lost_records: 1,
                ..whole()
            }
            .is_on_disk()
        );
        assert!(
            !Loaded {
                damaged: vec![crate::persist::Damage {
                    at: 0,
                    until: 1,
                    why: "x"
                }],
                ..whole()
            }
            .is_on_disk()
        );
        assert!(
            !Loaded {
                moved_aside: vec![PathBuf::from("x")],
                ..whole()
            }
            .is_on_disk()
        );
    }
}
