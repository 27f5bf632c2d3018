//! The installer's route socket: route requests go out as numbered messages packed into
//! datagrams, the kernel's answers come back matched by sequence number.
//!
//! Why a socket of its own beside the netlink-proto connection the installer dumps with: on the
//! write path that connection cost more CPU per route than the kernel's own work short of
//! creating the route (a message tree built per route, queued to the connection task,
//! serialised there, each error routed through a channel and parsed back to find its route).
//! Here a request is written straight into one reused buffer ([`netlink::encode_op`]), a
//! datagram is one `sendto`, and an answer is read into another reused buffer and known by its
//! sequence number alone — which is also exact where matching the quoted request was not (a
//! quote can be capped or truncated).
//!
//! The kernel handles a datagram of rtnetlink requests inside `sendto` and queues their answers
//! before the call returns; so an answer normally waits already when it is read, and only a
//! missing one (a lost answer after a receive overrun) makes the reader wait, never longer than
//! the deadline it is given.
//!
//! The sender of a datagram is not checked: only a process with CAP_NET_ADMIN may send to a
//! NETLINK_ROUTE socket's port (the kernel refuses others in `netlink_sendmsg`), and such a
//! process can change the routes itself anyway.

use std::io;

use netlink_sys::{AsyncSocket, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};

use super::netlink::{self, Answer};
use super::plan::RouteOp;
use super::{InstallerConfig, KernelError};
use crate::time::TokioInstant as Instant;

/// What one read from the socket gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A datagram: its answers are in [`RouteSocket::answers`].
    Datagram,
    /// The receive buffer overran (ENOBUFS): answers were lost.
    Overrun,
    /// The deadline passed with nothing to read.
    TimedOut,
}

/// A datagram being filled, a socket to send it on and the answers read back.
pub(crate) struct RouteSocket {
    sock: TokioSocket,
    /// The datagram being filled; kept between sends so it is allocated once.
    out: Vec<u8>,
    /// The last datagram read.
    inbuf: Vec<u8>,
    /// The sequence number of the next request.
    next_seq: u32,
}

/// Room for one received datagram: an answer is one message (36 bytes for an ack, an error
/// quotes its request: under 200 bytes), so this is ample; a longer datagram is truncated and
/// read as far as it is whole.
const RECV_LEN: usize = 16 << 10;

impl std::fmt::Debug for RouteSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSocket")
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl RouteSocket {
    /// Open the socket (non-blocking, receive buffer `cfg.recv_buffer`). Must run inside a tokio
    /// runtime, in the network namespace whose routes it writes.
    pub(crate) fn open(cfg: &InstallerConfig) -> Result<RouteSocket, KernelError> {
        // Non-blocking, registered with the runtime.
        let mut sock = TokioSocket::new(NETLINK_ROUTE).map_err(KernelError::Socket)?;
        sock.socket_mut().bind_auto().map_err(KernelError::Socket)?;
        netlink::set_recv_buffer(sock.socket_ref(), cfg.recv_buffer)?;
        Ok(RouteSocket {
            sock,
            out: Vec::with_capacity(cfg.batch_size.max(1) * netlink::MAX_OP_LEN),
            inbuf: Vec::with_capacity(RECV_LEN),
            // Any start will do: answers are only taken for numbers handed out since.
            next_seq: 1,
        })
    }

    /// Hand out the sequence numbers of `n` requests: the first is returned, the others follow
    /// it (wrapping).
    pub(crate) fn reserve_seq(&mut self, n: usize) -> u32 {
        let first = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(n as u32);
        first
    }

    /// Append one op's request to the datagram being filled.
    pub(crate) fn push(
        &mut self,
        cfg: &InstallerConfig,
        op: &RouteOp,
        expires: Option<u32>,
        seq: u32,
        ack: bool,
    ) {
        netlink::encode_op(&mut self.out, cfg, op, expires, seq, ack);
    }

    /// Send the datagram filled since the last send, as one `sendto` to the kernel, and start
    /// the next one empty (its memory kept).
    pub(crate) fn send(&mut self) -> io::Result<()> {
        let kernel = SocketAddr::new(0, 0);
        let r = loop {
            match self.sock.socket_ref().send_to(&self.out, &kernel, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.out.clear();
        r.map(|_| ())
    }

    /// Read one datagram, waiting for it until `deadline` at the latest.
    pub(crate) async fn recv(&mut self, deadline: Instant) -> io::Result<Received> {
        // The common case first: the answer is already queued, no readiness or timer needed.
        if let Some(r) = self.try_recv()? {
            return Ok(r);
        }
        let (sock, inbuf) = (&self.sock, &mut self.inbuf);
        inbuf.clear();
        let read = std::future::poll_fn(|cx| sock.poll_recv(cx, inbuf));
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => Ok(Received::TimedOut),
            Ok(Ok(())) => Ok(Received::Datagram),
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Received::Overrun),
            Ok(Err(e)) => Err(e),
        }
    }

    /// One non-blocking read: `None` when nothing waits.
    fn try_recv(&mut self) -> io::Result<Option<Received>> {
        self.inbuf.clear();
        loop {
            match self.sock.socket_ref().recv(&mut self.inbuf, 0) {
                Ok(_) => return Ok(Some(Received::Datagram)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return Ok(None),
                    Some(libc::ENOBUFS) => return Ok(Some(Received::Overrun)),
                    _ => return Err(e),
                },
            }
        }
    }

    /// The answers in the datagram [`RouteSocket::recv`] last read.
    pub(crate) fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        netlink::answers(&self.inbuf)
    }
}
