//! Leasequery options (RFC 5007 §4.1.2, RFC 5460 §5.4, RFC 7653 §5.3).
//!
//! ```text
//! LQ_QUERY body:       query-type(1) link-address(16) query-options(*)
//! CLIENT_DATA body:    client-options(*)   (CLIENTID, IAADDR/IAPREFIX, CLT_TIME, ...)
//! CLT_TIME body:       client-last-transaction-time(4)
//! LQ_RELAY_DATA body:  peer-address(16) relay-message(*)  (a RELAY-FORW, client message removed)
//! LQ_CLIENT_LINK body: link-address(16) * n
//! LQ_BASE_TIME / LQ_START_TIME / LQ_END_TIME body: seconds since the epoch(4)
//! ```

use super::buf::{Reader, Writer};
use super::codes::{OptionCode, QueryType};
use super::duid::Duid;
use super::error::Error;
use super::ia::{IaAddr, IaPrefix, bad_len};
use super::message::RelayMessage;
use super::option::{Ctx, Options};
use std::net::Ipv6Addr;

/// OPTION_LQ_QUERY: what a requestor asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LqQuery {
    pub query_type: QueryType,
    /// The link to search; `::` means every link (RFC 5007 §4.1.2.1).
    pub link_address: Ipv6Addr,
    pub options: Options,
}

impl LqQuery {
    pub fn new(query_type: QueryType, link_address: Ipv6Addr) -> Self {
        LqQuery {
            query_type,
            link_address,
            options: Options::new(),
        }
    }

    pub(crate) fn parse_body(mut r: Reader<'_>, at: usize, ctx: Ctx) -> Result<Self, Error> {
        if r.remaining() < 17 {
            return Err(bad_len(
                at,
                OptionCode::LQ_QUERY,
                r.remaining(),
                "at least 17",
            ));
        }
        Ok(LqQuery {
            query_type: QueryType(r.u8("query-type")?),
            link_address: r.addr("link-address")?,
            options: Options::parse_in(r, ctx.nested(at)?)?,
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        17 + self.options.buffer_len()
    }

    pub(crate) fn emit_body(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u8(self.query_type.0)?;
        w.addr(&self.link_address)?;
        self.options.emit_to(w)
    }
}

/// OPTION_CLIENT_DATA: everything a server knows about one client (RFC 5007 §4.1.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientData {
    pub options: Options,
}

impl ClientData {
    /// The client's DUID (CLIENTID).
    pub fn client_id(&self) -> Option<&Duid> {
        self.options.client_id()
    }

    /// Address leases (IAADDR options directly inside CLIENT_DATA).
    pub fn addresses(&self) -> impl Iterator<Item = &IaAddr> {
        self.options.ia_addrs()
    }

    /// Delegated prefixes (IAPREFIX options directly inside CLIENT_DATA).
    pub fn prefixes(&self) -> impl Iterator<Item = &IaPrefix> {
        self.options.ia_prefixes()
    }

    /// Seconds since the server last heard from the client (CLT_TIME); a CLIENT_DATA without
    /// it must be discarded (RFC 5007 §4.3.3).
    pub fn clt_time(&self) -> Option<u32> {
        self.options.clt_time()
    }

    /// The relay data the server saved for this client, if asked for and present.
    pub fn relay_data(&self) -> Option<&LqRelayData> {
        self.options.lq_relay_data()
    }
}

/// OPTION_LQ_RELAY_DATA: the last relay message the server got for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LqRelayData {
    /// The address of the relay agent that sent it (or the client, for a direct message).
    pub peer_address: Ipv6Addr,
    /// The RELAY-FORW chain, without the client's own message.
    pub relay: RelayMessage,
}

impl LqRelayData {
    pub(crate) fn parse_body(mut r: Reader<'_>, at: usize, ctx: Ctx) -> Result<Self, Error> {
        if r.remaining() < 16 + RelayMessage::HEADER_LEN {
            return Err(bad_len(
                at,
                OptionCode::LQ_RELAY_DATA,
                r.remaining(),
                "at least 50 (peer-address and a relay header)",
            ));
        }
        let peer_address = r.addr("peer-address")?;
        let relay = RelayMessage::parse_in(r, ctx.nested(at)?.new_relay_chain())?;
        Ok(LqRelayData {
            peer_address,
            relay,
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        16 + self.relay.buffer_len()
    }

    pub(crate) fn emit_body(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.addr(&self.peer_address)?;
        self.relay.emit_to(w)
    }
}
