//! The tokio shell around [`Requestor`]: owns the UDP socket and the clock, feeds the core,
//! sends what it returns and hands outcomes back to callers through a bounded channel.
//!
//! The socket binds `[::]:546` by default: ISC dhcpd 4.4 sends LEASEQUERY-REPLY to UDP port
//! 546 whatever port the query came from, so a requestor must send from and listen on 546.
//! Tests and benches bind other ports (or their own namespaces) so they never collide.
//!
//! A port anyone upstream can flood: before it is bound, the socket gets the classic-BPF
//! filter of [`super::filter`], so the kernel queues only datagrams from the sources the core
//! would take a reply from, and junk never takes the room a server's reply needs.

use crate::time::Instant;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use std::os::fd::AsFd;

use super::QueryId;
use super::core::{Requestor, Submit};
use super::{DropReason, Query, QueryOutcome, Rate, RefuseReason, RequestorConfig, RequestorStats};
use super::{filter, pktinfo};
use crate::supervise::{Inbox, Lifetime, Supervisor, Task};
use crate::wire::{CLIENT_PORT, Duid};

/// The shell's own settings.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Where to bind; the source address of every LEASEQUERY.
    pub bind: SocketAddr,
    /// Bound of the caller → shell channel; a full channel refuses the query.
    pub queue: usize,
    /// SO_RCVBUF asked for (the kernel caps it at net.core.rmem_max): room for a burst of
    /// replies to every query in flight, so a busy moment does not cost a retransmission.
    pub recv_buffer: usize,
    /// Interface index for queries sent to a multicast address (IPV6_MULTICAST_IF).
    pub multicast_if: Option<u32>,
    /// Subscriber-facing interfaces: a reply arriving on one of them cannot be a server's
    /// (it would be a subscriber forging the server's address) and is dropped (IPV6_PKTINFO).
    pub refuse_interfaces: Vec<String>,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            bind: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, CLIENT_PORT, 0, 0)),
            queue: 1024,
            recv_buffer: 4 << 20,
            multicast_if: None,
            refuse_interfaces: Vec::new(),
        }
    }
}

/// Why a query got no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error("query refused: {}", .0.label())]
    Refused(RefuseReason),
    #[error("requestor queue full")]
    Busy,
    #[error("requestor task has stopped")]
    Stopped,
}

enum Cmd {
    Query(Query, oneshot::Sender<Result<QueryOutcome, QueryError>>),
    SetRates(Option<Rate>, Option<Rate>),
}

/// A cheap, cloneable handle to a running requestor task.
#[derive(Debug, Clone)]
pub struct RequestorHandle {
    tx: mpsc::Sender<Cmd>,
    local: SocketAddr,
    stats: Arc<RequestorStats>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Query(q, _) => write!(f, "Query({q:?})"),
            Cmd::SetRates(g, l) => write!(f, "SetRates({g:?}, {l:?})"),
        }
    }
}

impl RequestorHandle {
    /// Ask `query` and wait for its outcome. A negative-cache hit comes back at once as an
    /// outcome without answers, with the verdict the lookup last ended with.
    ///
    /// CANCEL-SAFETY: dropping the future abandons only this caller's interest; the query
    /// itself runs to its end inside the task.
    pub async fn query(&self, query: Query) -> Result<QueryOutcome, QueryError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Cmd::Query(query, tx))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => QueryError::Busy,
                mpsc::error::TrySendError::Closed(_) => QueryError::Stopped,
            })?;
        rx.await.map_err(|_| QueryError::Stopped)?
    }

    /// Like [`query`](Self::query) but waits for room in the queue instead of refusing.
    pub async fn query_wait(&self, query: Query) -> Result<QueryOutcome, QueryError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Query(query, tx))
            .await
            .map_err(|_| QueryError::Stopped)?;
        rx.await.map_err(|_| QueryError::Stopped)?
    }

    /// The counters, as the task counts them (shared, read in place; every run of the task
    /// counts into the same ones), the kernel's drops at the socket asked for first.
    pub fn stats(&self) -> &Arc<RequestorStats> {
        self.stats.count_kernel_drops();
        &self.stats
    }

    /// Change the global and per-link rate limits of the running requestor (reload).
    pub async fn set_rates(
        &self,
        global: Option<Rate>,
        link: Option<Rate>,
    ) -> Result<(), QueryError> {
        self.tx
            .send(Cmd::SetRates(global, link))
            .await
            .map_err(|_| QueryError::Stopped)
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Bind the socket and start the requestor task under `sup` (task label `requestor`): a run
/// that fails (panics) is followed by a new one on the same socket and command channel, so
/// every handle keeps working. The task ends when every handle is dropped and no query is left
/// in flight.
pub async fn spawn(
    cfg: RequestorConfig,
    udp: UdpConfig,
    sup: &Supervisor,
) -> io::Result<(RequestorHandle, JoinHandle<()>)> {
    let (handle, runner) = start(cfg, udp)?;
    let faults = sup.clone();
    let task = tokio::spawn(
        sup.restart(Task::Requestor, Lifetime::UntilDone, move |run| {
            let r = runner.clone();
            // The test hook may fail the first run only.
            let fault = (run == 0).then(|| faults.fault(Task::Requestor));
            async move {
                match fault {
                    Some(fault) => tokio::select! {
                        () = r.run() => {}
                        () = fault => panic!("test hook: requestor task fails"),
                    },
                    None => r.run().await,
                }
                Ok::<(), std::convert::Infallible>(())
            }
        }),
    );
    Ok((handle, task))
}

/// Bind the socket and make the handle and the runner: each [`RequestorRunner::run`] is one
/// life of the task ([`spawn`] runs them).
fn start(cfg: RequestorConfig, udp: UdpConfig) -> io::Result<(RequestorHandle, RequestorRunner)> {
    let sources = filter::reply_sources(&cfg.servers, &cfg.multicast_sources);
    let socket = bind(&udp, &sources)?;
    let local = socket.local_addr()?;
    if local.is_ipv6() {
        pktinfo::enable(socket.as_fd())?;
    }
    let (tx, rx) = mpsc::channel(udp.queue.max(1));
    let socket = Arc::new(socket);
    let stats = Arc::new(RequestorStats::default());
    // What the filter refused arrives with no datagram to report it: a reader asks the socket
    // (weakly held: the stats do not keep the port bound).
    let weak = Arc::downgrade(&socket);
    stats.read_kernel_drops_with(Box::new(move || {
        let socket = weak.upgrade()?;
        pktinfo::drops(socket.as_fd()).ok()
    }));
    let runner = RequestorRunner {
        cfg,
        socket,
        rx: Inbox::new(rx),
        refuse: udp.refuse_interfaces,
        rates: Arc::new(std::sync::Mutex::new(None)),
        stats: stats.clone(),
    };
    Ok((RequestorHandle { tx, local, stats }, runner))
}

/// What outlives one run of the requestor task: the socket, the command channel (so handles
/// never see it closed while the task restarts), the rates last set by a reload and the
/// counters.
///
/// Each run starts a fresh core: a run that panicked may have left its core half-changed, so
/// nothing of it is reused. What that costs: the queries in flight end with
/// [`QueryError::Stopped`] (their callers treat that as no answer) and the negative cache
/// starts empty. The counters go on (atomics, never half-changed), the kernel's drop count
/// from where it was last counted, so a flood before the restart is not counted twice.
#[derive(Clone)]
struct RequestorRunner {
    cfg: RequestorConfig,
    socket: Arc<UdpSocket>,
    rx: Inbox<Cmd>,
    refuse: Vec<String>,
    rates: RatesSlot,
    /// Every run counts here; also what the kernel dropped at the socket (SO_RXQ_OVFL,
    /// SO_MEMINFO), as last counted.
    stats: Arc<RequestorStats>,
}

/// The (global, per-link) rates a reload set, replayed into each new core.
type RatesSlot = Arc<std::sync::Mutex<Option<(Option<Rate>, Option<Rate>)>>>;

impl std::fmt::Debug for RequestorRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestorRunner")
            .field("socket", &self.socket.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl RequestorRunner {
    /// One life of the requestor task; ends when every handle is dropped and no query is left
    /// in flight.
    async fn run(&self) {
        let mut rx = self.rx.lend().await;
        // Transaction ids come from a ChaCha generator seeded by the OS (RFC 5007 §4.1.1 wants
        // them unpredictable: a guessed id is how a forged reply would win).
        let mut core = Requestor::with_stats(
            self.cfg.clone(),
            StdRng::from_os_rng(),
            Instant::now(),
            self.stats.clone(),
        );
        let rates = *self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((global, link)) = rates {
            core.set_rates(Instant::now(), global, link);
        }
        let refused = RefusedInterfaces::new(self.refuse.clone());
        run(&self.socket, core, &mut rx, refused, &self.rates).await;
    }
}

/// Open the socket, filter it to `sources` (IPv6 sockets: the filter reads an IPv6 header),
/// then bind it — in that order, so not one unfiltered datagram is queued.
fn bind(udp: &UdpConfig, sources: &[SocketAddr]) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, SockFilter, Socket, Type};
    let s = Socket::new(
        Domain::for_address(udp.bind),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if udp.bind.is_ipv6() {
        s.set_only_v6(true)?;
        match filter::reply_filter(sources) {
            Some(prog) => {
                let prog: Vec<SockFilter> = prog
                    .iter()
                    .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
                    .collect();
                s.attach_filter(&prog)?;
            }
            None => tracing::warn!(
                sources = sources.len(),
                max = filter::MAX_SOURCES,
                "too many servers for the requestor's socket filter: port 546 stays unfiltered, \
                 and a flood there can drown replies"
            ),
        }
    }
    // Best effort: a smaller buffer still works, it only drops more under bursts.
    let _ = s.set_recv_buffer_size(udp.recv_buffer);
    if let Some(idx) = udp.multicast_if {
        s.set_multicast_if_v6(idx)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&udp.bind.into())?;
    UdpSocket::from_std(s.into())
}

type Waiters = HashMap<QueryId, Vec<oneshot::Sender<Result<QueryOutcome, QueryError>>>>;

/// How many datagrams or commands are taken in one go before the core is polled again.
const BATCH: usize = 256;

/// The subscriber-facing interfaces' indexes, re-read every few seconds (an interface can be
/// deleted and created again with a new index).
struct RefusedInterfaces {
    names: Vec<String>,
    indexes: Vec<u32>,
    read_at: Option<Instant>,
}

impl RefusedInterfaces {
    fn new(names: Vec<String>) -> Self {
        RefusedInterfaces {
            names,
            indexes: Vec::new(),
            read_at: None,
        }
    }

    fn contains(&mut self, now: Instant, ifindex: Option<u32>) -> bool {
        let Some(i) = ifindex else { return false };
        if self.names.is_empty() {
            return false;
        }
        if self
            .read_at
            .is_none_or(|t| now.saturating_duration_since(t) > crate::time::Duration::from_secs(5))
        {
            self.indexes = self
                .names
                .iter()
                .filter_map(|n| pktinfo::ifindex(n))
                .collect();
            self.read_at = Some(now);
        }
        self.indexes.contains(&i)
    }
}

/// Hand every queued datagram (up to a batch) to the core; one arriving on a refused
/// interface is counted and dropped. The kernel's drop count a datagram carries
/// (SO_RXQ_OVFL) is counted too.
fn drain(
    socket: &UdpSocket,
    core: &mut Requestor,
    buf: &mut [u8],
    refused: &mut RefusedInterfaces,
) {
    for _ in 0..BATCH {
        let r = socket.try_io(tokio::io::Interest::READABLE, || {
            pktinfo::recv(socket.as_fd(), buf)
        });
        let Ok(pktinfo::Received {
            len: n,
            from: src,
            ifindex,
            overflow,
        }) = r
        else {
            break;
        };
        if let Some(total) = overflow {
            core.stats().kernel_total(total);
        }
        let now = Instant::now();
        if refused.contains(now, ifindex) {
            core.drop_datagram(DropReason::WrongInterface);
            continue;
        }
        core.handle_datagram(now, src, &buf[..n]);
    }
}

async fn run(
    socket: &UdpSocket,
    mut core: Requestor,
    rx: &mut mpsc::Receiver<Cmd>,
    mut refused: RefusedInterfaces,
    rates: &RatesSlot,
) {
    let mut waiters: Waiters = HashMap::new();
    let mut buf = vec![0u8; 65535];
    let mut open = true;
    loop {
        core.handle_timeout(Instant::now());
        while let Some(t) = core.poll_transmit() {
            if socket.send_to(&t.payload, t.dst).await.is_err() {
                core.note_send_error();
            }
        }
        while let Some(ev) = core.poll_event() {
            let mut ws = waiters.remove(&ev.id).unwrap_or_default();
            let last = ws.pop();
            for w in ws {
                let _ = w.send(Ok(ev.outcome.clone()));
            }
            if let Some(w) = last {
                let _ = w.send(Ok(ev.outcome));
            }
        }
        if !open && core.pending() == 0 {
            break;
        }
        let deadline = core.poll_timeout();
        // Fair turns: a turn that reads datagrams (at most a batch) also takes the commands
        // already queued (at most a batch), so a datagram flood at our port — the socket is
        // then always readable — cannot starve the command channel; nor can a command storm
        // starve the socket, whose batch comes first. After a turn that read datagrams the task
        // yields: under a flood the socket is always readable, and without the yield one poll
        // of this task runs until tokio's budget runs out (128 turns of a batch each), holding
        // a runtime worker for long enough that the trigger and on-demand tasks — which make
        // the commands — waited seconds to run (tests/netns/daemon_trigger_e2e.rs, the flood).
        tokio::select! {
            biased;
            r = socket.readable() => {
                if r.is_ok() {
                    drain(socket, &mut core, &mut buf, &mut refused);
                }
                if open {
                    open = take_queued(&mut core, &mut waiters, rx, rates);
                }
                tokio::task::yield_now().await;
            }
            cmd = rx.recv(), if open => match cmd {
                None => open = false,
                Some(c) => {
                    submit(&mut core, &mut waiters, c, rates);
                    open = take_queued(&mut core, &mut waiters, rx, rates);
                }
            },
            _ = sleep_until(deadline), if deadline.is_some() => {}
        }
    }
}

/// Submit up to a batch of the commands already queued, without waiting; false once the
/// channel is closed and empty.
fn take_queued(
    core: &mut Requestor,
    waiters: &mut Waiters,
    rx: &mut mpsc::Receiver<Cmd>,
    rates: &RatesSlot,
) -> bool {
    for _ in 0..BATCH {
        match rx.try_recv() {
            Ok(c) => submit(core, waiters, c, rates),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(crate::time::TokioInstant::from_std(at)).await;
    }
}

fn submit(core: &mut Requestor, waiters: &mut Waiters, cmd: Cmd, rates: &RatesSlot) {
    match cmd {
        Cmd::SetRates(global, link) => {
            *rates.lock().unwrap_or_else(|e| e.into_inner()) = Some((global, link));
            core.set_rates(Instant::now(), global, link);
        }
        Cmd::Query(q, tx) => match core.submit(Instant::now(), q.clone()) {
            Submit::Started(id) | Submit::Joined(id) => waiters.entry(id).or_default().push(tx),
            Submit::Negative(verdict) => {
                let _ = tx.send(Ok(QueryOutcome {
                    query: q,
                    verdict,
                    answers: Vec::new(),
                }));
            }
            Submit::Refused(r) => {
                let _ = tx.send(Err(QueryError::Refused(r)));
            }
        },
    }
}

/// Our DUID when none is configured (RFC 8415 §11.4): DUID-LL (type 3, hardware type 1) from
/// `iface`'s MAC address, or from the first interface with a non-zero one; a random DUID-UUID
/// (RFC 6355) on a machine without any.
pub fn system_duid(iface: Option<&str>) -> io::Result<Duid> {
    let names: Vec<String> = match iface {
        Some(i) => vec![i.to_string()],
        None => {
            let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            v.sort();
            v
        }
    };
    for name in &names {
        let path = format!("/sys/class/net/{name}/address");
        let Ok(text) = std::fs::read_to_string(&path) else {
            if iface.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no such interface {name}"),
                ));
            }
            continue;
        };
        let mac: Vec<u8> = text
            .trim()
            .split(':')
            .filter_map(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        if mac.len() == 6 && mac.iter().any(|b| *b != 0) {
            let mut duid = vec![0, 3, 0, 1];
            duid.extend_from_slice(&mac);
            return Ok(duid.into());
        }
    }
    if let Some(name) = iface {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface {name} has no Ethernet address for a DUID-LL"),
        ));
    }
    let mut duid = vec![0, 4];
    duid.extend_from_slice(&rand::random::<[u8; 16]>());
    Ok(duid.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::time::Duration;

    use crate::requestor::DropReason;

    /// Poll the requestor's counters (the kernel's drops asked first, as a scrape does) until
    /// `done` holds (bounded: 10 s).
    async fn stats_until(
        h: &RequestorHandle,
        done: impl Fn(&RequestorStats) -> bool,
    ) -> Arc<RequestorStats> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let st = h.stats().clone();
            if done(&st) || Instant::now() > end {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// On loopback: a server's socket, a stranger's, a requestor config whose one server is
    /// the former, and a shell bound to an ephemeral port.
    fn server_and_stranger() -> (
        std::net::UdpSocket,
        std::net::UdpSocket,
        RequestorConfig,
        UdpConfig,
    ) {
        let server = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let stranger = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let cfg = RequestorConfig {
            servers: vec![server.local_addr().unwrap()],
            ..RequestorConfig::default()
        };
        let udp = UdpConfig {
            bind: "[::1]:0".parse().unwrap(),
            ..UdpConfig::default()
        };
        (server, stranger, cfg, udp)
    }

    /// The kernel runs the socket filter: junk from a port that is not a server's never
    /// reaches the requestor (nothing read and judged malformed; the kernel's drop count has
    /// it), while a datagram from the server's address and port does.
    #[tokio::test]
    async fn the_kernel_drops_what_no_server_sent_before_it_takes_room_in_the_buffer() {
        let (server, stranger, cfg, udp) = server_and_stranger();
        let sup = Supervisor::unstopped(crate::supervise::Policy::default());
        let (h, _task) = spawn(cfg, udp, &sup).await.unwrap();
        for _ in 0..100 {
            stranger.send_to(&[0u8; 48], h.local_addr()).unwrap();
        }
        // What the requestor read and judged: every drop but the kernel's.
        let read = |s: &RequestorStats| s.dropped_total() - s.dropped(DropReason::KernelDropped);
        let st = stats_until(&h, |s| s.dropped(DropReason::KernelDropped) >= 100).await;
        assert_eq!(st.dropped(DropReason::KernelDropped), 100, "{st:?}");
        assert_eq!(read(&st), 0, "junk was read: {st:?}");
        // The server's junk passes the filter, and the core judges it.
        server.send_to(&[0u8; 48], h.local_addr()).unwrap();
        let st = stats_until(&h, |s| read(s) >= 1).await;
        assert_eq!(read(&st), 1, "{st:?}");
        assert_eq!(st.dropped(DropReason::KernelDropped), 100, "{st:?}");
    }

    /// A new run of the task (after a panic) counts only what the kernel dropped since the last
    /// run counted: a flood before the restart is not counted again by the fresh core, nor
    /// are the counters reset.
    #[tokio::test]
    async fn a_new_run_does_not_count_the_kernels_old_drops_again() {
        let (_server, stranger, cfg, udp) = server_and_stranger();
        let (h, runner) = start(cfg, udp).unwrap();
        let first = tokio::spawn({
            let r = runner.clone();
            async move { r.run().await }
        });
        for _ in 0..50 {
            stranger.send_to(&[0u8; 48], h.local_addr()).unwrap();
        }
        let st = stats_until(&h, |s| s.dropped(DropReason::KernelDropped) >= 50).await;
        assert_eq!(st.dropped(DropReason::KernelDropped), 50, "{st:?}");
        first.abort();
        let _ = first.await;
        let _second = tokio::spawn(async move { runner.run().await });
        for _ in 0..10 {
            stranger.send_to(&[0u8; 48], h.local_addr()).unwrap();
        }
        let st = stats_until(&h, |s| s.dropped(DropReason::KernelDropped) >= 60).await;
        assert_eq!(
            st.dropped(DropReason::KernelDropped),
            60,
            "the new run counted the old drops again: {st:?}"
        );
    }
}
