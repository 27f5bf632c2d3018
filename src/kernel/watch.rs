//! Link and address notifications (`ip monitor link address`): how parked routes learn that
//! their interface appeared, and how routes on a deleted interface get re-planned.
//!
//! A separate netlink socket joins RTNLGRP_LINK and RTNLGRP_IPV6_IFADDR with an enlarged receive
//! buffer. When the kernel overruns it (ENOBUFS), notifications were lost: the stream yields
//! [`LinkEvent::Overrun`] and the caller re-dumps links and addresses — never silent divergence.
//! Open the watch *before* the first dump so no change falls between the two.

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_proto::sys::{AsyncSocket, SocketAddr};
use rtnetlink::MulticastGroup;

use super::{KernelError, netlink};

/// One notification.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// A link or address message to feed to [`super::Installer::link_event`].
    Changed(RouteNetlinkMessage),
    /// The socket overran: re-dump with [`super::Installer::refresh_links`].
    Overrun,
}

/// The notification socket; dropping it stops its connection task.
#[derive(Debug)]
pub(crate) struct LinkWatch {
    rx: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl LinkWatch {
    /// Join the link and IPv6 address groups. Must run inside a tokio runtime.
    pub(crate) fn open(recv_buffer: usize) -> Result<LinkWatch, KernelError> {
        let (mut conn, _handle, rx) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .map_err(KernelError::Socket)?;
        netlink::set_recv_buffer(conn.socket_mut().socket_mut(), recv_buffer)?;
        let conn = tokio::spawn(conn);
        Ok(LinkWatch { rx, conn })
    }

    /// The next event; `None` when the socket closed.
    ///
    /// CANCEL-SAFETY: cancel-safe (a receive from a channel).
    pub(crate) async fn next(&mut self) -> Option<LinkEvent> {
        loop {
            let (msg, _) = self.rx.next().await?;
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => return Some(LinkEvent::Changed(m)),
                NetlinkPayload::Overrun(_) => return Some(LinkEvent::Overrun),
                _ => {}
            }
        }
    }
}
