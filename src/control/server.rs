//! The control socket's tokio shell: accept, read bounded JSON lines, ask the [`Responder`],
//! write the answer.
//!
//! Bounds: [`MAX_CLIENTS`] connections at once, of which [`RESERVED_CLIENTS`] only root and the
//! service user may take, and [`MAX_PER_UID`] per other uid (more are closed at once and
//! counted); when every slot is open, root or the service user is still served by closing the
//! oldest stalled connection ([`slots`](super::slots) decides). Lines up to [`MAX_LINE`] bytes (a
//! longer one gets an error and the connection is closed); a whole request line must arrive
//! within [`READ_TIMEOUT`] (a peer that says nothing is closed and counted), each request is
//! answered within [`REQUEST_TIMEOUT`], and every write of an answer must complete within
//! [`WRITE_TIMEOUT`] (a peer that stops reading is closed and counted), so no peer holds a slot
//! longer than these deadlines without making progress.
//! The socket file is created with mode 0660 (root and the service's group), or 0666 when
//! `control.show_group` is set; a stale socket left by a crash is replaced, and anything else at
//! that path is left alone. Every connection and every request is checked against the peer's
//! kernel-reported credentials ([`access`](super::access)) and every `clear` is logged with who
//! asked and what it removed.
//!
//! Why 0666 and not the show group on the file: giving the file to another group takes
//! `chown`, which the packaged unit's `SystemCallFilter=~@privileged` answers with SIGSYS (the
//! daemon crash-looped on every start), and which a non-root service user may only do for a
//! group it is itself in. So with `show_group` anyone may connect, and a peer that is not root,
//! the service user or a member is answered `permission denied` and closed at once — the model
//! of the D-Bus system bus socket. The per-uid bound above keeps such peers from holding slots.

use crate::time::{Duration, Instant};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::AbortHandle;

use super::access::{self, Access, Peer};
use super::slots::{Admit, Limits, Phase, Refusal, Slots};
use super::{ControlError, ControlEvent, ControlStats, Reply, Request, Responder, Response};

/// Connections open at once, all peers together.
pub const MAX_CLIENTS: usize = 16;
/// Of [`MAX_CLIENTS`], the slots only root and the service user may take.
pub const RESERVED_CLIENTS: usize = 4;
/// Connections one uid other than root's and the service user's may hold at once.
pub const MAX_PER_UID: usize = 4;
pub const MAX_LINE: usize = 64 * 1024;
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a whole request line (after connecting or after the last answer).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one write of an answer (a whole line, or one chunk of a streamed one) may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

const LIMITS: Limits = Limits {
    total: MAX_CLIENTS,
    reserved: RESERVED_CLIENTS,
    per_uid: MAX_PER_UID,
};

/// The open connections and how to close each one early (eviction).
#[derive(Debug)]
struct Table {
    slots: Slots,
    handles: HashMap<u64, AbortHandle>,
}

type Shared = Arc<Mutex<Table>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Table> {
    // Nothing here panics while holding the lock in a way that leaves the table unusable.
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection's entry in the table: its phase as it goes, its slot freed when it ends
/// (however it ends: returned, failed, or aborted by an eviction).
struct Tracker {
    id: u64,
    table: Shared,
}

impl Tracker {
    fn phase(&self, phase: Phase) {
        lock(&self.table)
            .slots
            .set_phase(Instant::now(), self.id, phase);
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let mut t = lock(&self.table);
        t.slots.close(self.id);
        t.handles.remove(&self.id);
    }
}

/// A bound control socket; the file is removed on drop.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    access: Access,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl ControlSocket {
    /// Bind `path`, replacing a stale socket file; the parent directory must exist
    /// (systemd's `RuntimeDirectory=lqagent` makes `/run/lqagent`).
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        let access = Access::for_this_process(None).map_err(io_err(path))?;
        ControlSocket::bind_with(path, access)
    }

    /// [`bind`](Self::bind) with a policy: with a `show_gid` the socket file is 0666 so that
    /// group's members can connect (and `show`); the peer check keeps everyone else out.
    pub fn bind_with(path: &Path, access: Access) -> Result<ControlSocket, ControlError> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(io_err(path))?;
            }
            Ok(meta) => {
                return Err(ControlError::NotASocket {
                    path: path.display().to_string(),
                    what: if meta.is_dir() {
                        "a directory"
                    } else {
                        "a file"
                    },
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err(path))?;
        let mode = if access.show_gid.is_some() {
            0o666
        } else {
            0o660
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err(path))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            access,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve until `shutdown` completes.
    ///
    /// CANCEL-SAFETY: dropping the future stops accepting; open connections are detached tasks
    /// bounded by [`READ_TIMEOUT`], [`REQUEST_TIMEOUT`] and [`WRITE_TIMEOUT`].
    pub async fn serve<R: Responder>(
        self,
        responder: Arc<R>,
        stats: Arc<ControlStats>,
        shutdown: impl Future<Output = ()>,
    ) {
        let table: Shared = Arc::new(Mutex::new(Table {
            slots: Slots::new(LIMITS),
            handles: HashMap::new(),
        }));
        let policy = Arc::new(self.access.clone());
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "control accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let peer = match stream.peer_cred() {
                Ok(c) => Peer {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "control peer credentials unreadable; closed");
                    stats.count(ControlEvent::RejectedConnection);
                    continue;
                }
            };
            // Unreadable (a kernel before 4.13): no supplementary groups, so only the peer's
            // primary group can make it a member — the check fails closed.
            let groups = access::peer_groups(stream.as_fd()).unwrap_or_else(|e| {
                tracing::debug!(error = %e, "control peer groups unreadable");
                Vec::new()
            });
            let privileged = policy.privileged(&peer);
            let mut t = lock(&table);
            let (id, evicted) = match t.slots.admit(Instant::now(), peer.uid, privileged) {
                Admit::Open(id) => (id, None),
                Admit::OpenEvicting { id, evict } => (id, t.handles.remove(&evict)),
                Admit::Refused(why) => {
                    drop(t);
                    stats.count(match why {
                        Refusal::Full => ControlEvent::RejectedConnection,
                        Refusal::UidLimit => ControlEvent::UidLimit,
                    });
                    tracing::debug!(uid = peer.uid, pid = peer.pid, reason = ?why, "control connection refused");
                    continue;
                }
            };
            let tracker = Tracker {
                id,
                table: table.clone(),
            };
            let (responder, stats2, policy) = (responder.clone(), stats.clone(), policy.clone());
            let task = tokio::spawn(async move {
                let stats = stats2;
                if let Err(message) = policy.may_connect(&peer, &groups) {
                    stats.count(ControlEvent::Refused);
                    tracing::warn!(uid = peer.uid, pid = peer.pid, "control connection refused");
                    tracker.phase(Phase::Writing);
                    let _ =
                        tokio::time::timeout(READ_TIMEOUT, refuse(stream, message, &stats)).await;
                    drop(tracker);
                    return;
                }
                if let Err(e) = connection(
                    stream,
                    peer,
                    &groups,
                    &policy,
                    &*responder,
                    &stats,
                    &tracker,
                )
                .await
                {
                    tracing::debug!(error = %e, "control connection ended");
                }
                drop(tracker);
            });
            // Under the lock, so the task's tracker cannot remove its entry before it is in.
            t.handles.insert(id, task.abort_handle());
            drop(t);
            if let Some(h) = evicted {
                stats.count(ControlEvent::Evicted);
                tracing::info!(
                    uid = peer.uid,
                    pid = peer.pid,
                    "control: every slot open; closed the oldest stalled connection to serve a privileged peer"
                );
                h.abort();
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answer a peer that may make no request at all: read its first line (bounded, so a client
/// that writes before it reads gets the answer rather than a broken pipe), answer the reason,
/// close.
async fn refuse(stream: UnixStream, message: String, stats: &ControlStats) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = Vec::new();
    BufReader::new(rd)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    write(&mut wr, &Response::Error { message }, stats).await
}

async fn connection<R: Responder>(
    stream: UnixStream,
    peer: Peer,
    groups: &[u32],
    policy: &Access,
    responder: &R,
    stats: &ControlStats,
    tracker: &Tracker,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        tracker.phase(Phase::Reading);
        line.clear();
        let mut limited = (&mut rd).take(MAX_LINE as u64 + 1);
        let read = limited.read_until(b'\n', &mut line);
        let n = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(r) => r?,
            Err(_) => {
                stats.count(ControlEvent::ReadTimeout);
                tracing::debug!(
                    uid = peer.uid,
                    pid = peer.pid,
                    "control: no request within the read deadline; closed"
                );
                return Ok(());
            }
        };
        if n == 0 {
            return Ok(());
        }
        tracker.phase(Phase::Answering);
        if line.last() != Some(&b'\n') {
            // Over MAX_LINE, or EOF in the middle of a line.
            let message = if line.len() > MAX_LINE {
                stats.count(ControlEvent::Oversized);
                format!("request longer than {MAX_LINE} bytes")
            } else {
                stats.count(ControlEvent::BadRequest);
                "request not terminated by a newline".to_string()
            };
            tracker.phase(Phase::Writing);
            write(&mut wr, &Response::Error { message }, stats).await?;
            return Ok(());
        }
        stats.count(ControlEvent::Request);
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => {
                if let Err(message) = policy.check(&peer, || groups.to_vec(), &req) {
                    stats.count(ControlEvent::Refused);
                    tracing::warn!(
                        uid = peer.uid,
                        pid = peer.pid,
                        request = ?req,
                        "control request refused"
                    );
                    tracker.phase(Phase::Writing);
                    write(&mut wr, &Response::Error { message }, stats).await?;
                    continue;
                }
                let clear = (!access::read_only(&req)).then(|| req.clone());
                let reply = match tokio::time::timeout(REQUEST_TIMEOUT, responder.handle(req)).await
                {
                    Ok(reply) => reply,
                    Err(_) => {
                        stats.count(ControlEvent::Timeout);
                        Reply::One(Response::Error {
                            message: format!("no answer within {REQUEST_TIMEOUT:?}"),
                        })
                    }
                };
                match reply {
                    Reply::One(resp) => {
                        if let Some(req) = clear {
                            log_clear(&peer, &req, &resp);
                        }
                        resp
                    }
                    Reply::Bindings(rx) => {
                        tracker.phase(Phase::Writing);
                        if !stream_bindings(&mut wr, rx, stats).await? {
                            stats.count(ControlEvent::Timeout);
                            return Ok(());
                        }
                        continue;
                    }
                }
            }
            Err(e) => {
                stats.count(ControlEvent::BadRequest);
                Response::Error {
                    message: format!("bad request: {e}"),
                }
            }
        };
        tracker.phase(Phase::Writing);
        write(&mut wr, &response, stats).await?;
    }
}

/// Write all of `bytes` within [`WRITE_TIMEOUT`]; past it the peer is taken to have stopped
/// reading: counted, and an error that ends the connection.
async fn send(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    bytes: &[u8],
    stats: &ControlStats,
) -> std::io::Result<()> {
    let all = async {
        wr.write_all(bytes).await?;
        wr.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, all).await {
        Ok(r) => r,
        Err(_) => {
            stats.count(ControlEvent::WriteTimeout);
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("answer not taken within {WRITE_TIMEOUT:?}; closed"),
            ))
        }
    }
}

/// Bytes of a streamed answer buffered before they go to the socket.
const STREAM_CHUNK: usize = 64 * 1024;

/// Write `{"status":"bindings","bindings":[...]}` and a newline, one binding at a time as `rx`
/// yields them, holding at most about [`STREAM_CHUNK`] bytes. `Ok(false)`: the producer stalled
/// past [`REQUEST_TIMEOUT`]; the line is unfinished and the connection must close.
async fn stream_bindings(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    mut rx: tokio::sync::mpsc::Receiver<super::BindingView>,
    stats: &ControlStats,
) -> std::io::Result<bool> {
    let mut buf = Vec::with_capacity(STREAM_CHUNK + 1024);
    buf.extend_from_slice(br#"{"status":"bindings","bindings":["#);
    let mut first = true;
    loop {
        let next = match tokio::time::timeout(REQUEST_TIMEOUT, rx.recv()).await {
            Ok(n) => n,
            Err(_) => {
                tracing::warn!("control: bindings stream stalled; connection closed");
                return Ok(false);
            }
        };
        let Some(b) = next else { break };
        if !first {
            buf.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut buf, &b).map_err(std::io::Error::other)?;
        if buf.len() >= STREAM_CHUNK {
            send(wr, &buf, stats).await?;
            buf.clear();
        }
    }
    buf.extend_from_slice(b"]}\n");
    send(wr, &buf, stats).await?;
    Ok(true)
}

/// Networks named in one clear's log line at most (the count is always there).
const LOGGED_NETWORKS: usize = 32;

/// The audit line of one `clear`: who (uid, pid), what they asked, what went.
fn log_clear(peer: &Peer, req: &Request, resp: &Response) {
    match resp {
        Response::Cleared { removed } => {
            let shown: Vec<String> = removed
                .iter()
                .take(LOGGED_NETWORKS)
                .map(|p| p.to_string())
                .collect();
            tracing::info!(
                uid = peer.uid,
                pid = peer.pid,
                request = ?req,
                removed = removed.len(),
                networks = ?shown,
                "control clear"
            );
        }
        other => tracing::warn!(
            uid = peer.uid,
            pid = peer.pid,
            request = ?req,
            answer = ?other,
            "control clear failed"
        ),
    }
}

async fn write(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    r: &Response,
    stats: &ControlStats,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    send(wr, &bytes, stats).await
}
