//! `GET /metrics` over HTTP/1.1 with hyper: the thin tokio shell around [`Metrics::encode`].
//!
//! Answered from a snapshot that is never older than the scrape, refreshed at most once per
//! [`ENCODING_INTERVAL`]: an encoding (on a blocking thread) *starts* at most once a second, and
//! every scrape is answered by the first encoding that started after it arrived. Scrapes that
//! come together share one; a scrape that comes within a second of the last start waits for the
//! next one (at most that second). So what a scrape reads includes everything that happened
//! before it asked (an operator after a `clear`, a test after its action, never reads a counter
//! from before it), and a storm costs one store walk a second however many scrapers there are.
//! Why: encoding walks the whole binding store (`lqagent_bindings{type,link}`), O(bindings);
//! per scrape, on one of the runtime's two workers, a storm of parallel scrapes would keep the
//! workers from everything else the daemon does.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once. When all are open, a new one is
//! still served: the oldest open connection with no request under way (one that has said
//! nothing or not a whole request yet, or an idle keep-alive) is closed for it and counted in
//! `lqagent_metrics_connections_evicted_total`; only when every open connection is being
//! answered is the new one closed at accept (`lqagent_metrics_connections_rejected_total`). So
//! silent or trickling clients cannot lock a scraper out. A read that brings nothing for
//! [`READ_TIMEOUT`] and a write that cannot go out for [`WRITE_TIMEOUT`] (a client that stopped
//! reading) close the connection and count in `lqagent_metrics_connections_timed_out_total
//! {deadline}`; every connection is closed after [`CONNECTION_DEADLINE`] whatever it is doing.
//!
//! Stopping never waits on a scrape: when the shutdown future completes, [`serve`] returns and
//! every open connection (one waiting for its encoding included) is closed with it. An encoding
//! under way finishes on its blocking thread, unwaited for.

use crate::time::{Duration, Instant};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Sleep;

use super::{Deadline, DeadlineLabels, Metrics};

/// Most scrape connections open at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest a connection may stay open.
pub(crate) const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a read may bring nothing (before a request, or between keep-alive requests).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a write may stay blocked (the client not reading its answer).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between the starts of two encodings (the rate limit): scrapes within it share one,
/// and a scrape waits at most this long (plus one encoding) for an answer encoded after it asked.
pub const ENCODING_INTERVAL: Duration = Duration::from_secs(1);
/// The OpenMetrics text content type prometheus-client's encoder produces.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("metrics.listen {addr}: cannot bind: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind the listener (separate from [`serve`] so start-up fails early and tests can use port 0).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// The last encoding and when it *started*, and whether a new one is under way.
#[derive(Debug, Default)]
struct State {
    last: Option<(Instant, Bytes)>,
    refreshing: bool,
    /// When the last encoding (finished, failed or under way) started: the rate limit counts
    /// from it.
    started: Option<Instant>,
}

/// What one scrape does, decided from the [`State`] (pure, so tested without a server).
#[derive(Debug, PartialEq, Eq)]
enum Serve {
    /// Answer with these bytes now.
    Now(Bytes),
    /// Start the one encoding, then wait for it.
    Refresh,
    /// An encoding is under way: wait for it to finish, then decide again.
    Wait,
    /// The last encoding started less than the interval ago: wait until then, decide again.
    Delay(Instant),
}

/// A scrape that `asked` at that instant is answered by an encoding that started at or after
/// it; otherwise it waits for the one under way (one at a time: a store walk never runs beside
/// another), or until `interval` since the last start has passed, or starts one.
fn decide(now: Instant, state: &State, interval: Duration, asked: Instant) -> Serve {
    if let Some((started, body)) = &state.last
        && *started >= asked
    {
        return Serve::Now(body.clone());
    }
    if state.refreshing {
        return Serve::Wait;
    }
    match state.started {
        Some(started) if now < started + interval => Serve::Delay(started + interval),
        _ => Serve::Refresh,
    }
}

/// The exposition as served: an encoding started at most once per interval, in a task of its
/// own (a scraper that hangs up, or a stop, does not cancel it) on a blocking thread (it walks
/// the store).
#[derive(Debug)]
struct Snapshot {
    interval: Duration,
    state: std::sync::Mutex<State>,
    done: tokio::sync::Notify,
}

impl Snapshot {
    fn new(interval: Duration) -> Snapshot {
        Snapshot {
            interval,
            state: std::sync::Mutex::new(State::default()),
            done: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exposition to serve, encoded after this call began; `None` if encoding failed
    /// (panicked) every time it was tried here.
    async fn get(self: &Arc<Self>, metrics: &Metrics) -> Option<Bytes> {
        let asked = Instant::now();
        // Each turn waits for an encoding or a delay, so the bound is never spun through: at
        // most a delay, an encoding under way and our own, plus a retry of a failed one.
        for _ in 0..6 {
            let notified = self.done.notified();
            tokio::pin!(notified);
            let delay = {
                let mut st = self.lock();
                match decide(Instant::now(), &st, self.interval, asked) {
                    Serve::Now(body) => return Some(body),
                    Serve::Refresh => {
                        let now = Instant::now();
                        st.refreshing = true;
                        st.started = Some(now);
                        self.refresh(metrics, now);
                        None
                    }
                    Serve::Wait => None,
                    Serve::Delay(until) => Some(until),
                }
            };
            match delay {
                Some(until) => tokio::time::sleep_until(until.into()).await,
                None => {
                    // Registered before the refresh can be seen finished: its
                    // `notify_waiters` cannot slip between the check and the wait.
                    notified.as_mut().enable();
                    if self.lock().refreshing {
                        notified.await;
                    }
                }
            }
        }
        None
    }

    fn refresh(self: &Arc<Self>, metrics: &Metrics, started: Instant) {
        let (me, m) = (self.clone(), metrics.clone());
        tokio::spawn(async move {
            let body = tokio::task::spawn_blocking(move || m.encode()).await;
            let mut st = me.lock();
            st.refreshing = false;
            match body {
                Ok(b) => st.last = Some((started, Bytes::from(b))),
                Err(e) => tracing::error!(error = %e, "encoding metrics failed"),
            }
            drop(st);
            me.done.notify_waiters();
        });
    }
}

/// Whether a connection has a request under way: from the moment its request head is read
/// until its answer is flushed. A connection without one (nothing or not a whole request
/// sent yet, or idle between keep-alive requests) may be closed to make room.
#[derive(Debug, Default)]
struct Answering {
    /// A request was read and its answer is not flushed yet.
    busy: AtomicBool,
    /// The service is still making the answer (a flush then is not the answer's).
    in_service: AtomicBool,
}

impl Answering {
    fn begin(&self) {
        self.in_service.store(true, Ordering::SeqCst);
        self.busy.store(true, Ordering::SeqCst);
    }

    fn answered(&self) {
        self.in_service.store(false, Ordering::SeqCst);
    }

    /// Everything written so far went out.
    fn flushed(&self) {
        if !self.in_service.load(Ordering::SeqCst) {
            self.busy.store(false, Ordering::SeqCst);
        }
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }
}

/// Which open connection (in accept order, oldest first; `true` = answering) makes room for a
/// new one: the oldest with no request under way; none when every one is being answered.
fn evictee(answering: impl IntoIterator<Item = bool>) -> Option<usize> {
    answering.into_iter().position(|busy| !busy)
}

async fn respond(
    metrics: &Metrics,
    snapshot: &Arc<Snapshot>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            metrics.scrapes.inc();
            let Some(body) = snapshot.get(metrics).await else {
                tracing::error!("no metrics exposition to serve");
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return resp;
            };
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
            );
            if req.method() == Method::GET {
                *resp.body_mut() = Full::new(body);
            }
        }
        (_, "/metrics") => {
            *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        _ => {
            *resp.status_mut() = StatusCode::NOT_FOUND;
            *resp.body_mut() = Full::new(Bytes::from_static(b"lqagent: try /metrics\n"));
        }
    }
    resp
}

/// A connection whose reads and writes each fail with `TimedOut` once they have been pending
/// for their deadline (counted once per connection). A read or write that completes re-arms it.
/// A flush that completes tells `answering` the answer went out.
struct Deadlined<S> {
    io: S,
    read: Option<Pin<Box<Sleep>>>,
    write: Option<Pin<Box<Sleep>>>,
    timed_out: Family<DeadlineLabels, Counter>,
    counted: bool,
    answering: Arc<Answering>,
}

impl<S> Deadlined<S> {
    fn new(io: S, timed_out: Family<DeadlineLabels, Counter>, answering: Arc<Answering>) -> Self {
        Deadlined {
            io,
            read: None,
            write: None,
            timed_out,
            counted: false,
            answering,
        }
    }

    /// The operation in `which` is pending: arm its deadline if it is not, and say whether it
    /// has passed (then counted, once).
    fn expired(&mut self, which: Deadline, cx: &mut Context<'_>) -> bool {
        let (slot, after) = match which {
            Deadline::Read => (&mut self.read, READ_TIMEOUT),
            Deadline::Write => (&mut self.write, WRITE_TIMEOUT),
        };
        let sleep = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        if !self.counted {
            self.counted = true;
            self.timed_out
                .get_or_create(&DeadlineLabels { deadline: which })
                .inc();
        }
        true
    }

    /// An operation under the `which` deadline was polled: one that completed re-arms the
    /// deadline (the next operation starts afresh); one still pending past it fails `TimedOut`.
    /// Reads and writes go through here alike.
    fn settle<T>(
        &mut self,
        which: Deadline,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                match which {
                    Deadline::Read => self.read = None,
                    Deadline::Write => self.write = None,
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(which, cx) => Poll::Ready(Err(timed_out(which))),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn timed_out(which: Deadline) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("metrics connection: {} deadline passed", which.label()),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlined<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.settle(Deadline::Read, cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> Deadlined<S> {
    fn write_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        let polled = op(Pin::new(&mut self.io), cx);
        self.settle(Deadline::Write, cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().write_op(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = this.write_op(cx, |io, cx| io.poll_flush(cx));
        if let Poll::Ready(Ok(())) = r {
            // hyper flushes only after writing out what it buffered: the answer is gone.
            this.answering.flushed();
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().write_op(cx, |io, cx| io.poll_shutdown(cx))
    }
}

/// Serve `/metrics` on `listener` until `shutdown` completes.
///
/// CANCEL-SAFETY: completing `shutdown` or dropping this future stops accepting and closes every
/// open connection (their tasks are aborted); an encoding under way ends on its own.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: impl Future<Output = ()>) {
    serve_with(listener, metrics, ENCODING_INTERVAL, shutdown).await;
}

/// An open connection, in accept order.
struct Open {
    task: AbortHandle,
    answering: Arc<Answering>,
}

/// [`serve`] with another least time between encodings. Zero lets every scrape start its own
/// encoding (one at a time still): the scrape-storm bench compares the two.
pub async fn serve_with(
    listener: TcpListener,
    metrics: Metrics,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let snapshot = Arc::new(Snapshot::new(interval));
    // Dropped on return: every connection task is aborted, so a stop never waits on a scrape.
    let mut tasks = JoinSet::new();
    let mut open: Vec<Open> = Vec::with_capacity(MAX_CONNECTIONS);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                open.retain(|o| o.task.id() != id);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if open.len() >= MAX_CONNECTIONS {
            match evictee(open.iter().map(|o| o.answering.busy())) {
                Some(i) => {
                    // Its slot is ours now; its socket closes as the abort lands.
                    let old = open.remove(i);
                    old.task.abort();
                    metrics.connections_evicted.inc();
                    tracing::debug!(%peer, "metrics: every slot open, closed the oldest without a request");
                }
                None => {
                    metrics.connections_rejected.inc();
                    drop(stream);
                    continue;
                }
            }
        }
        let answering = Arc::new(Answering::default());
        let task = tasks.spawn(connection(
            stream,
            peer,
            metrics.clone(),
            snapshot.clone(),
            answering.clone(),
        ));
        open.push(Open { task, answering });
    }
}

/// One connection: hyper over the deadlined stream, closed after [`CONNECTION_DEADLINE`].
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    metrics: Metrics,
    snapshot: Arc<Snapshot>,
    answering: Arc<Answering>,
) {
    let io = Deadlined::new(
        stream,
        metrics.connections_timed_out.clone(),
        answering.clone(),
    );
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        // A whole request head was read: this connection is being answered.
        answering.begin();
        let (metrics, snapshot, answering) = (metrics.clone(), snapshot.clone(), answering.clone());
        async move {
            let resp = respond(&metrics, &snapshot, &req).await;
            answering.answered();
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), service);
    match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection error"),
        Err(_) => tracing::debug!(%peer, "metrics connection closed at deadline"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    fn get(addr: SocketAddr) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    /// A two-worker runtime, like the daemon's.
    fn daemon_like_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A server on loopback whose every encoding is counted and, while `hold` is set, blocks
    /// (a store walk that takes long), on a two-worker runtime like the daemon's.
    fn server(
        interval: Duration,
    ) -> (
        SocketAddr,
        Metrics,
        Arc<AtomicU64>,
        Arc<AtomicBool>,
        tokio::runtime::Runtime,
    ) {
        let rt = daemon_like_runtime();
        let m = Metrics::new();
        let (encodes, hold) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (e, h) = (encodes.clone(), hold.clone());
        m.register_stats("lqagent_test_encodings", "Encodings", move || {
            let n = e.fetch_add(1, Ordering::SeqCst) + 1;
            let until = Instant::now() + Duration::from_secs(10);
            while h.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
            vec![(crate::metrics::Unlabelled, n)]
        });
        let listener = rt.block_on(bind("127.0.0.1:0".parse().unwrap())).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(serve_with(
            listener,
            m.clone(),
            interval,
            std::future::pending(),
        ));
        (addr, m, encodes, hold, rt)
    }

    #[test]
    fn parallel_scrapes_share_one_encoding_done_off_the_workers() {
        // Scrapes that came while the first encoding ran are answered by the next one (it
        // started after them): two encodings at most for the whole storm.
        let (addr, m, encodes, hold, rt) = server(Duration::from_millis(200));
        hold.store(true, Ordering::SeqCst);
        let readers: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|_| std::thread::spawn(move || get(addr)))
            .collect();
        // Every scrape has arrived (counted before it waits for the exposition) while the
        // first encoding is still held; with a walk on a worker, the workers would be stuck in
        // it and the others never counted.
        let until = Instant::now() + Duration::from_secs(10);
        while m.scrapes.get() < MAX_CONNECTIONS as u64 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let arrived = m.scrapes.get();
        // Meanwhile the runtime still runs other work.
        let ran = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), tokio::spawn(async { 7 })).await
        });
        hold.store(false, Ordering::SeqCst);
        let bodies: Vec<String> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(
            arrived, MAX_CONNECTIONS as u64,
            "scrapes counted while encoding"
        );
        assert!(matches!(ran, Ok(Ok(7))), "runtime free while encoding");
        let n = encodes.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&n),
            "{n} encodings for {MAX_CONNECTIONS} scrapes"
        );
        assert!(bodies.iter().all(|b| b.ends_with("# EOF\n")));
    }

    #[test]
    fn a_scrape_is_answered_by_an_encoding_started_after_it_at_most_one_a_second() {
        let t0 = Instant::now();
        let gap = Duration::from_secs(1);
        let body = Bytes::from_static(b"x");
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut st = State::default();
        assert_eq!(decide(t0, &st, gap, t0), Serve::Refresh, "nothing yet");
        st.refreshing = true;
        st.started = Some(t0);
        assert_eq!(decide(t0, &st, gap, t0), Serve::Wait, "one under way");
        st = State {
            last: Some((t0, body.clone())),
            refreshing: false,
            started: Some(t0),
        };
        assert_eq!(
            decide(at(10), &st, gap, t0),
            Serve::Now(body.clone()),
            "started when it asked"
        );
        assert_eq!(
            decide(at(500), &st, gap, at(400)),
            Serve::Delay(at(1000)),
            "asked after that encoding started, within the interval: waits for the next"
        );
        assert_eq!(
            decide(at(1000), &st, gap, at(400)),
            Serve::Refresh,
            "then starts it"
        );
        st.refreshing = true;
        st.started = Some(at(1000));
        assert_eq!(
            decide(at(1100), &st, gap, at(1050)),
            Serve::Wait,
            "asked while one runs that began before it: waits for it (never two walks at once)"
        );
        st = State {
            last: Some((at(1000), body.clone())),
            refreshing: false,
            started: Some(at(1000)),
        };
        assert_eq!(
            decide(at(1200), &st, gap, at(1050)),
            Serve::Delay(at(2000)),
            "that one is older than the question: the next one"
        );
        // A failed encoding (nothing new in `last`) still counts for the rate limit.
        st.started = Some(at(2000));
        assert_eq!(decide(at(2100), &st, gap, at(2050)), Serve::Delay(at(3000)));
    }

    #[test]
    fn a_scrape_right_after_another_reads_what_changed_between_them() {
        // Within the interval a scrape does not get the last exposition: it waits for the
        // next encoding, so a value changed just before it asked is already in its answer.
        let (addr, m, encodes, _hold, _rt) = server(Duration::from_millis(300));
        m.routes_limit.set(5);
        assert!(get(addr).contains("lqagent_routes_limit 5"));
        m.routes_limit.set(6);
        assert!(get(addr).contains("lqagent_routes_limit 6"));
        m.routes_limit.set(7);
        assert!(get(addr).contains("lqagent_routes_limit 7"));
        assert_eq!(encodes.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn the_oldest_connection_without_a_request_makes_room() {
        assert_eq!(evictee([true, false, false]), Some(1));
        assert_eq!(evictee([false, true]), Some(0));
        assert_eq!(evictee([true, true, true]), None);
        let a = Answering::default();
        assert!(!a.busy(), "a new connection has no request");
        a.begin();
        a.flushed();
        assert!(
            a.busy(),
            "a flush while the answer is being made is not the answer's"
        );
        a.answered();
        assert!(a.busy(), "answered, not yet written out");
        a.flushed();
        assert!(!a.busy(), "written out: idle until the next request");
    }

    #[test]
    fn a_stop_closes_a_connection_waiting_for_its_encoding() {
        use std::io::Read;
        let rt = daemon_like_runtime();
        let m = Metrics::new();
        let listener = rt.block_on(bind("127.0.0.1:0".parse().unwrap())).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // An hour between encodings: the second scrape waits for the next one.
        let server = rt.spawn(serve_with(
            listener,
            m.clone(),
            Duration::from_secs(3600),
            async {
                let _ = stopped.await;
            },
        ));
        assert!(get(addr).ends_with("# EOF\n"));
        let mut waiting = std::net::TcpStream::connect(addr).unwrap();
        write!(waiting, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while m.scrapes.get() < 2 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(m.scrapes.get(), 2, "the second scrape is waiting");
        stop.send(()).unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .expect("serve returns at the stop, not after the scrape")
                .unwrap();
        });
        // Closed without an answer at the stop. Left open, it would be closed only by its read
        // deadline (hyper keeps reading while the answer is made), so wait less than that.
        waiting.set_read_timeout(Some(READ_TIMEOUT / 2)).unwrap();
        let mut buf = [0u8; 64];
        match waiting.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the waiting scrape's connection outlived the stop: {other:?}"),
        }
    }
}
