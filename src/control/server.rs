//! The control socket's tokio shell: accept, read bounded JSON lines, ask the [`Responder`],
//! write the answer.
//!
//! Bounds: [`MAX_CLIENTS`] connections at once (more are closed and counted), lines up to
//! [`MAX_LINE`] bytes (a longer one gets an error and the connection is closed), each request
//! answered within [`REQUEST_TIMEOUT`], and a connection idle for [`IDLE_TIMEOUT`] is closed.
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
//! of the D-Bus system bus socket.

use std::future::Future;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::access::{self, Access, Peer};
use super::{ControlError, ControlStats, Reply, Request, Responder, Response};

pub const MAX_CLIENTS: usize = 8;
pub const MAX_LINE: usize = 64 * 1024;
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// bounded by [`IDLE_TIMEOUT`].
    pub async fn serve<R: Responder>(
        self,
        responder: Arc<R>,
        stats: Arc<ControlStats>,
        shutdown: impl Future<Output = ()>,
    ) {
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
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
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                stats.rejected_connections.fetch_add(1, Relaxed);
                continue;
            };
            let peer = match stream.peer_cred() {
                Ok(c) => Peer {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "control peer credentials unreadable; closed");
                    stats.rejected_connections.fetch_add(1, Relaxed);
                    continue;
                }
            };
            // Unreadable (a kernel before 4.13): no supplementary groups, so only the peer's
            // primary group can make it a member — the check fails closed.
            let groups = access::peer_groups(stream.as_fd()).unwrap_or_else(|e| {
                tracing::debug!(error = %e, "control peer groups unreadable");
                Vec::new()
            });
            let (responder, stats, policy) = (responder.clone(), stats.clone(), policy.clone());
            tokio::spawn(async move {
                if let Err(message) = policy.may_connect(&peer, &groups) {
                    stats.refused.fetch_add(1, Relaxed);
                    tracing::warn!(uid = peer.uid, pid = peer.pid, "control connection refused");
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, refuse(stream, message)).await;
                    drop(permit);
                    return;
                }
                if let Err(e) =
                    connection(stream, peer, &groups, &policy, &*responder, &stats).await
                {
                    tracing::debug!(error = %e, "control connection ended");
                }
                drop(permit);
            });
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
async fn refuse(stream: UnixStream, message: String) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = Vec::new();
    BufReader::new(rd)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    write(&mut wr, &Response::Error { message }).await
}

async fn connection<R: Responder>(
    stream: UnixStream,
    peer: Peer,
    groups: &[u32],
    policy: &Access,
    responder: &R,
    stats: &ControlStats,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut rd).take(MAX_LINE as u64 + 1);
        let read = limited.read_until(b'\n', &mut line);
        let n = match tokio::time::timeout(IDLE_TIMEOUT, read).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            // Over MAX_LINE, or EOF in the middle of a line.
            let message = if line.len() > MAX_LINE {
                stats.oversized.fetch_add(1, Relaxed);
                format!("request longer than {MAX_LINE} bytes")
            } else {
                stats.bad_requests.fetch_add(1, Relaxed);
                "request not terminated by a newline".to_string()
            };
            write(&mut wr, &Response::Error { message }).await?;
            return Ok(());
        }
        stats.requests.fetch_add(1, Relaxed);
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => {
                if let Err(message) = policy.check(&peer, || groups.to_vec(), &req) {
                    stats.refused.fetch_add(1, Relaxed);
                    tracing::warn!(
                        uid = peer.uid,
                        pid = peer.pid,
                        request = ?req,
                        "control request refused"
                    );
                    write(&mut wr, &Response::Error { message }).await?;
                    continue;
                }
                let clear = (!access::read_only(&req)).then(|| req.clone());
                let reply = match tokio::time::timeout(REQUEST_TIMEOUT, responder.handle(req)).await
                {
                    Ok(reply) => reply,
                    Err(_) => {
                        stats.timeouts.fetch_add(1, Relaxed);
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
                        if !stream_bindings(&mut wr, rx).await? {
                            stats.timeouts.fetch_add(1, Relaxed);
                            return Ok(());
                        }
                        continue;
                    }
                }
            }
            Err(e) => {
                stats.bad_requests.fetch_add(1, Relaxed);
                Response::Error {
                    message: format!("bad request: {e}"),
                }
            }
        };
        write(&mut wr, &response).await?;
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
            wr.write_all(&buf).await?;
            buf.clear();
        }
    }
    buf.extend_from_slice(b"]}\n");
    wr.write_all(&buf).await?;
    wr.flush().await?;
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

async fn write(wr: &mut tokio::net::unix::OwnedWriteHalf, r: &Response) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    wr.write_all(&bytes).await?;
    wr.flush().await
}
