//! RFC 5460 over TCP: per query one LEASEQUERY-REPLY (with the first client's CLIENT_DATA),
//! one LEASEQUERY-DATA per further client, then LEASEQUERY-DONE — or a REPLY alone when there
//! is no data or an error (§7.3). Each connection has a reader task (frames → queries) and a
//! writer loop that answers one query at a time, or round-robin when interleaving is on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use lqagent::wire::bulk::{FrameConfig, FrameDecoder};

use super::answer::{Decision, Pick, Query, Transport, decide_as};
use super::codec::{self, ReplyBody, Shape};
use super::faults::Faults;
use super::table::LeaseTable;
use super::{QueryRecord, Shared};

/// RFC 5460 QueryTerminated.
const STATUS_QUERY_TERMINATED: u16 = 11;
/// Pause between the last message and a fault-injected reset.
const RESET_GRACE: Duration = Duration::from_millis(50);
/// Queries read but not yet answered, per connection.
const QUEUE: usize = 64;

pub(super) async fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let (stream, peer) = listener.accept().await?;
        let c = &shared.counters;
        c.tcp_connections.fetch_add(1, Ordering::Relaxed);
        if !shared.config.answers(peer.ip()) {
            c.tcp_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let active = c.tcp_active.fetch_add(1, Ordering::AcqRel);
        if active as usize >= shared.config.max_tcp_conns {
            c.tcp_active.fetch_sub(1, Ordering::AcqRel);
            c.tcp_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            connection(shared.clone(), stream).await;
            shared.counters.tcp_active.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// One parsed query waiting for its answer.
struct Job {
    xid: u32,
    requestor: lqagent::wire::Duid,
    query: Result<Query, &'static str>,
    nth: u64,
}

async fn connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let (mut rd, wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
    let reader_shared = shared.clone();
    let reader = tokio::spawn(async move {
        let c = &reader_shared.counters;
        let mut frames = FrameDecoder::new(FrameConfig::default());
        let mut chunk = vec![0u8; 16384];
        loop {
            let room = frames.room().min(chunk.len());
            let n = match rd.read(&mut chunk[..room]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frames.push(&chunk[..n]).is_err() {
                return;
            }
            let mut first_in_read = true;
            loop {
                let frame = match frames.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    // A zero or oversize length: the stream cannot be resynchronised.
                    Err(_) => return,
                };
                if !first_in_read && reader_shared.config.tcp_drop_pipelined {
                    c.tcp_pipelined_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                first_in_read = false;
                let Ok(inc) = codec::parse_leasequery(frame) else {
                    c.tcp_discarded.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let nth = c.tcp_queries.fetch_add(1, Ordering::Relaxed) + 1;
                let (qtype, link) = inc
                    .query
                    .as_ref()
                    .map(|q| (q.query_type, q.link))
                    .unwrap_or((0, std::net::Ipv6Addr::UNSPECIFIED));
                reader_shared.record(QueryRecord {
                    transport: Transport::Tcp,
                    peer,
                    xid: inc.xid,
                    query_type: qtype,
                    link,
                });
                let job = Job {
                    xid: inc.xid,
                    requestor: inc.requestor,
                    query: inc.query,
                    nth,
                };
                if tx.send(job).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut w = BufWriter::with_capacity(64 * 1024, wr);
    let end = writer(&shared, &mut rx, &mut w).await;
    let _ = w.flush().await;
    match end {
        End::Reset => {
            shared.counters.tcp_resets.fetch_add(1, Ordering::Relaxed);
            // An RST makes the peer's kernel drop what it has not read yet: give the data
            // sent before the reset a moment to be read, so "reset after N" means N arrived.
            tokio::time::sleep(RESET_GRACE).await;
            let half: &OwnedWriteHalf = w.get_ref();
            let _ = socket2::SockRef::from(half.as_ref()).set_linger(Some(Duration::ZERO));
            // Dropping a write half sends FIN; forget it so the close (when the reader's
            // half goes) is the abortive one: RST.
            w.into_inner().forget();
            reader.abort();
            let _ = reader.await;
            return;
        }
        End::Close => {
            let _ = w.shutdown().await;
            reader.abort();
        }
        End::PeerGone => {
            let _ = w.shutdown().await;
        }
    }
    drop(w);
    let _ = reader.await;
}

enum End {
    /// Reset the connection (RST).
    Reset,
    /// Close our side after what was sent.
    Close,
    /// The requestor closed; nothing left to answer.
    PeerGone,
}

/// One query's answer in progress.
struct Stream {
    xid: u32,
    requestor: lqagent::wire::Duid,
    oro: Vec<u16>,
    faults: Faults,
    decision: Decision,
    picks: Vec<Pick>,
    shape: Shape,
    table: Arc<LeaseTable>,
    /// Next binding to send; 0 = the REPLY is still to go.
    pos: usize,
    data_sent: usize,
    finished: bool,
}

enum Step {
    Send(Vec<u8>, Duration),
    Reset,
    /// Send this, then close the connection.
    SendClose(Vec<u8>),
    Silent,
}

impl Stream {
    fn new(shared: &Shared, job: Job) -> Stream {
        let qtype = job.query.as_ref().map(|q| q.query_type).unwrap_or(0);
        let faults = shared.faults_for(job.nth, qtype, Transport::Tcp);
        let table = shared.table();
        let decision = match (&job.query, faults.status) {
            (_, Some(code)) => Decision::Status(code, "injected status"),
            (Err(why), None) => Decision::Status(super::answer::STATUS_MALFORMED_QUERY, why),
            (Ok(q), None) => decide_as(shared.config.profile, &table, q, Transport::Tcp),
        };
        let oro = job.query.map(|q| q.oro).unwrap_or_default();
        Stream {
            xid: job.xid,
            requestor: job.requestor,
            oro,
            faults,
            picks: decision.picks(),
            shape: Shape {
                query_type: qtype,
                ..Shape::now(shared.config.profile, Transport::Tcp)
            },
            decision,
            table,
            pos: 0,
            data_sent: 0,
            finished: false,
        }
    }

    fn next(&mut self, shared: &Shared) -> Step {
        if self.faults.drop {
            return Step::Silent;
        }
        let srsn = shared.next_srsn();
        if self.pos == 0 {
            self.pos = 1;
            let body = match (&self.decision, self.picks.first()) {
                (Decision::Status(code, msg), _) => ReplyBody::Status(*code, msg),
                (_, Some(p)) => ReplyBody::Client(*p),
                (_, None) => ReplyBody::Empty,
            };
            let mut msg = codec::emit_reply_as(
                self.xid,
                &shared.config.server_duid,
                &self.requestor,
                &self.table,
                body,
                &self.oro,
                srsn,
                &self.shape,
            );
            if let Some(c) = self.faults.corrupt {
                c.apply(&mut msg);
            }
            if self.picks.is_empty() {
                self.finished = true;
            }
            return Step::Send(msg, self.faults.delay());
        }
        if self.picks.is_empty() {
            self.finished = true;
            return Step::Silent;
        }
        if Some(self.data_sent) == self.faults.reset_after_data {
            self.finished = true;
            return Step::Reset;
        }
        if Some(self.data_sent) == self.faults.terminate_after_data {
            self.finished = true;
            let msg = codec::emit_done(
                self.xid,
                Some((STATUS_QUERY_TERMINATED, "terminated by fault injection")),
                srsn,
            );
            shared
                .counters
                .tcp_done_sent
                .fetch_add(1, Ordering::Relaxed);
            return Step::SendClose(msg);
        }
        if let Some(&p) = self.picks.get(self.pos) {
            self.pos += 1;
            self.data_sent += 1;
            shared
                .counters
                .tcp_data_sent
                .fetch_add(1, Ordering::Relaxed);
            let msg = codec::emit_data_as(self.xid, &self.table, p, &self.oro, srsn, &self.shape);
            return Step::Send(msg, self.faults.data_delay());
        }
        self.finished = true;
        let xid = if self.faults.wrong_done_xid {
            self.xid ^ 0x00_5a5a
        } else {
            self.xid
        };
        shared
            .counters
            .tcp_done_sent
            .fetch_add(1, Ordering::Relaxed);
        Step::Send(codec::emit_done(xid, None, srsn), self.faults.data_delay())
    }
}

async fn writer(
    shared: &Shared,
    rx: &mut mpsc::Receiver<Job>,
    w: &mut BufWriter<OwnedWriteHalf>,
) -> End {
    let mut streams: VecDeque<Stream> = VecDeque::new();
    let mut silent = false;
    loop {
        if streams.is_empty() || silent {
            if w.flush().await.is_err() {
                return End::PeerGone;
            }
            match rx.recv().await {
                Some(job) if !silent => streams.push_back(Stream::new(shared, job)),
                Some(_) => continue,
                None => return End::PeerGone,
            }
        }
        while let Ok(job) = rx.try_recv() {
            streams.push_back(Stream::new(shared, job));
        }
        let rounds = if shared.config.tcp_interleave {
            streams.len()
        } else {
            1
        };
        for _ in 0..rounds {
            let Some(mut s) = streams.pop_front() else {
                break;
            };
            match s.next(shared) {
                Step::Send(msg, delay) => {
                    if !delay.is_zero() {
                        if w.flush().await.is_err() {
                            return End::PeerGone;
                        }
                        tokio::time::sleep(delay).await;
                    }
                    if write_frame(w, &msg).await.is_err() {
                        return End::PeerGone;
                    }
                }
                Step::SendClose(msg) => {
                    let _ = write_frame(w, &msg).await;
                    return End::Close;
                }
                Step::Reset => return End::Reset,
                Step::Silent => {
                    if !shared.config.tcp_interleave {
                        silent = true;
                    }
                    continue;
                }
            }
            if !s.finished {
                if shared.config.tcp_interleave {
                    streams.push_back(s);
                } else {
                    streams.push_front(s);
                }
            }
        }
    }
}

async fn write_frame(w: &mut BufWriter<OwnedWriteHalf>, msg: &[u8]) -> std::io::Result<()> {
    let framed = codec::frame(msg);
    w.write_all(&framed).await
}
