//! `GET /metrics` over HTTP/1.1 with hyper: the thin tokio shell around [`Metrics::encode`].
//!
//! Answered from a snapshot: the exposition is encoded at most once per [`SNAPSHOT_MAX_AGE`]
//! (on a blocking thread), and every scrape within that age gets the same bytes; scrapes that
//! arrive while it is being encoded wait for that one encoding instead of starting their own.
//! Why: encoding walks the whole binding store (`lqagent_bindings{type,link}`), O(bindings);
//! per scrape, on one of the runtime's two workers, a storm of parallel scrapes would keep the
//! workers from everything else the daemon does.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once (more are closed at accept and
//! counted in `lqagent_metrics_connections_rejected_total`); a read that brings nothing for
//! [`READ_TIMEOUT`] (a silent client, or an idle keep-alive) and a write that cannot go out for
//! [`WRITE_TIMEOUT`] (a client that stopped reading) close the connection and count in
//! `lqagent_metrics_connections_timed_out_total{deadline}`; and every connection is closed after
//! [`CONNECTION_DEADLINE`] whatever it is doing (a client trickling a byte at a time), so a slow
//! or hostile scraper cannot pile up tasks or hold a slot.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use super::{Deadline, DeadlineLabels, Metrics};

/// Most scrape connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest a connection may stay open.
pub(crate) const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a read may bring nothing (before a request, or between keep-alive requests).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a write may stay blocked (the client not reading its answer).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Oldest a served exposition may be when no encoding is under way: zero, so a scrape never
/// reads a value from before its own question (a counter read right after a release or a
/// `clear` shows it). Scrapes that come while one encoding runs still share it, so a storm costs
/// one store walk at a time, never one per scraper. (A one-second age made the daemon's own tests
/// read counters up to two seconds old; a policy that waited for a fresh encoding at most once a
/// second hung the daemon's stop and was taken back: issue 24 keeps the rate limit open.)
pub const SNAPSHOT_MAX_AGE: Duration = Duration::ZERO;
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

/// The last encoding, when it was finished, and whether a new one is under way.
#[derive(Debug, Default)]
struct State {
    last: Option<(Instant, Bytes)>,
    refreshing: bool,
    /// Encodings finished: a waiter takes the one that finished after it began to wait.
    generation: u64,
}

/// What one scrape does, decided from the [`State`] (pure, so tested without a server).
#[derive(Debug, PartialEq, Eq)]
enum Serve {
    /// Answer with these bytes now.
    Now(Bytes),
    /// Start the one encoding, then wait for it.
    Refresh,
    /// An encoding is under way and nothing recent enough is at hand: wait for it.
    Wait,
}

/// A snapshot at most `max_age` old is served as it is. While one scrape's refresh is under
/// way, the others get the previous snapshot if it is at most twice `max_age` old (a storm
/// never waits for the walk; the data is at most about two seconds and one encoding old), else
/// they wait for the refresh: a scraper that comes every 15 s always gets fresh values.
fn decide(state: &State, now: Instant, max_age: Duration) -> Serve {
    let age = |at: &Instant| now.saturating_duration_since(*at);
    match &state.last {
        Some((at, body)) if age(at) <= max_age => Serve::Now(body.clone()),
        Some((at, body)) if state.refreshing && age(at) <= 2 * max_age => Serve::Now(body.clone()),
        _ if state.refreshing => Serve::Wait,
        _ => Serve::Refresh,
    }
}

/// The exposition as served: encoded at most once per `max_age`, in a task of its own (a
/// scraper that hangs up does not cancel it) on a blocking thread (it walks the store).
#[derive(Debug)]
struct Snapshot {
    max_age: Duration,
    state: std::sync::Mutex<State>,
    done: tokio::sync::Notify,
}

impl Snapshot {
    fn new(max_age: Duration) -> Snapshot {
        Snapshot {
            max_age,
            state: std::sync::Mutex::new(State::default()),
            done: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exposition to serve; `None` if encoding failed (panicked) and nothing older is at
    /// hand.
    async fn get(self: &Arc<Self>, metrics: &Metrics) -> Option<Bytes> {
        // Twice at most: a refresh that failed is not retried by its waiters in a loop.
        for _ in 0..2 {
            let notified = self.done.notified();
            tokio::pin!(notified);
            let seen = {
                let mut st = self.lock();
                match decide(&st, Instant::now(), self.max_age) {
                    Serve::Now(body) => return Some(body),
                    Serve::Refresh => {
                        st.refreshing = true;
                        self.refresh(metrics);
                    }
                    Serve::Wait => {}
                }
                // Registered before the lock goes, so the refresh cannot finish unseen.
                notified.as_mut().enable();
                st.generation
            };
            notified.await;
            let st = self.lock();
            if st.generation > seen
                && let Some((_, body)) = &st.last
            {
                return Some(body.clone());
            }
        }
        self.lock().last.as_ref().map(|(_, b)| b.clone())
    }

    fn refresh(self: &Arc<Self>, metrics: &Metrics) {
        let (me, m) = (self.clone(), metrics.clone());
        tokio::spawn(async move {
            let body = tokio::task::spawn_blocking(move || m.encode()).await;
            let mut st = me.lock();
            st.refreshing = false;
            match body {
                Ok(b) => {
                    st.last = Some((Instant::now(), Bytes::from(b)));
                    st.generation += 1;
                }
                Err(e) => tracing::error!(error = %e, "encoding metrics failed"),
            }
            drop(st);
            me.done.notify_waiters();
        });
    }
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
struct Deadlined<S> {
    io: S,
    read: Option<Pin<Box<Sleep>>>,
    write: Option<Pin<Box<Sleep>>>,
    timed_out: Family<DeadlineLabels, Counter>,
    counted: bool,
}

impl<S> Deadlined<S> {
    fn new(io: S, timed_out: Family<DeadlineLabels, Counter>) -> Self {
        Deadlined {
            io,
            read: None,
            write: None,
            timed_out,
            counted: false,
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
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read = None;
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(Deadline::Read, cx) => {
                Poll::Ready(Err(timed_out(Deadline::Read)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> Deadlined<S> {
    fn write_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match op(Pin::new(&mut self.io), cx) {
            Poll::Ready(r) => {
                self.write = None;
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(Deadline::Write, cx) => {
                Poll::Ready(Err(timed_out(Deadline::Write)))
            }
            Poll::Pending => Poll::Pending,
        }
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
        self.get_mut().write_op(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().write_op(cx, |io, cx| io.poll_shutdown(cx))
    }
}

/// Serve `/metrics` on `listener` until `shutdown` completes.
///
/// CANCEL-SAFETY: dropping this future stops accepting; connections in flight are detached
/// tasks that end at their deadline.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: impl Future<Output = ()>) {
    serve_with(listener, metrics, SNAPSHOT_MAX_AGE, shutdown).await;
}

/// [`serve`] with another snapshot age. Zero makes every scrape encode (a store walk per
/// scrape, as before snapshots): tests and the scrape-storm bench compare the two.
pub async fn serve_with(
    listener: TcpListener,
    metrics: Metrics,
    max_age: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let snapshot = Arc::new(Snapshot::new(max_age));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.connections_rejected.inc();
            drop(stream);
            continue;
        };
        let (metrics, snapshot) = (metrics.clone(), snapshot.clone());
        tokio::spawn(async move {
            let io = Deadlined::new(stream, metrics.connections_timed_out.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (metrics, snapshot) = (metrics.clone(), snapshot.clone());
                async move { Ok::<_, Infallible>(respond(&metrics, &snapshot, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(io), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection error"),
                Err(_) => tracing::debug!(%peer, "metrics connection closed at deadline"),
            }
            drop(permit);
        });
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

    /// A server on loopback whose every encoding is counted and, while `hold` is set, blocks
    /// (a store walk that takes long), on a two-worker runtime like the daemon's.
    fn server(
        max_age: Duration,
    ) -> (
        SocketAddr,
        Metrics,
        Arc<AtomicU64>,
        Arc<AtomicBool>,
        tokio::runtime::Runtime,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let m = Metrics::new();
        let (encodes, hold) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (e, h) = (encodes.clone(), hold.clone());
        m.on_scrape(move || {
            e.fetch_add(1, Ordering::SeqCst);
            let until = Instant::now() + Duration::from_secs(10);
            while h.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let listener = rt.block_on(bind("127.0.0.1:0".parse().unwrap())).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(serve_with(
            listener,
            m.clone(),
            max_age,
            std::future::pending(),
        ));
        (addr, m, encodes, hold, rt)
    }

    #[test]
    fn parallel_scrapes_share_one_encoding_done_off_the_workers() {
        let (addr, m, encodes, hold, rt) = server(Duration::from_secs(3600));
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
        assert_eq!(encodes.load(Ordering::SeqCst), 1, "one encoding shared");
        assert!(
            bodies
                .iter()
                .all(|b| b == &bodies[0] && b.ends_with("# EOF\n"))
        );
    }

    #[test]
    fn a_storm_gets_the_previous_snapshot_while_one_refresh_runs() {
        let t0 = Instant::now();
        let age = Duration::from_secs(1);
        let body = Bytes::from_static(b"x");
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut st = State::default();
        assert_eq!(decide(&st, t0, age), Serve::Refresh, "nothing yet");
        st.refreshing = true;
        assert_eq!(
            decide(&st, t0, age),
            Serve::Wait,
            "the first one is waited for"
        );
        st = State {
            last: Some((t0, body.clone())),
            refreshing: false,
            generation: 1,
        };
        assert_eq!(decide(&st, at(1000), age), Serve::Now(body.clone()));
        assert_eq!(decide(&st, at(1001), age), Serve::Refresh, "too old");
        st.refreshing = true;
        assert_eq!(
            decide(&st, at(1500), age),
            Serve::Now(body.clone()),
            "the previous one while refreshing"
        );
        assert_eq!(
            decide(&st, at(2001), age),
            Serve::Wait,
            "but not one older than twice the age"
        );
    }

    #[test]
    fn a_snapshot_older_than_its_age_is_encoded_again() {
        let (addr, m, encodes, _hold, _rt) = server(Duration::ZERO);
        m.recovery_bindings.inc_by(5);
        assert!(get(addr).contains("lqagent_recovery_bindings_total 5"));
        m.recovery_bindings.inc_by(1);
        assert!(get(addr).contains("lqagent_recovery_bindings_total 6"));
        assert_eq!(encodes.load(Ordering::SeqCst), 2);
    }
}
