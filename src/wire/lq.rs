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

use super::buf::Writer;
use super::codes::{MessageType, OptionCode, QueryType};
use super::duid::Duid;
use super::error::Error;
use super::owned::{ClientData, IaAddr, IaPrefix, LqQuery, LqRelayData, Options};
use std::net::Ipv6Addr;

/// What a LEASEQUERY asks by (RFC 5007 §4.1.2.1), borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LqTarget<'a> {
    /// QUERY_BY_ADDRESS: OPTION_IAADDR with zero lifetimes.
    Address(Ipv6Addr),
    /// QUERY_BY_CLIENTID: OPTION_CLIENTID with the DUID's bytes.
    ClientId(&'a [u8]),
}

/// A LEASEQUERY written straight from borrowed parts, the requestor's one message:
///
/// ```text
/// msg-type 14, xid, OPTION_CLIENTID (our DUID),
/// OPTION_LQ_QUERY { query-type, link-address, OPTION_IAADDR | OPTION_CLIENTID,
///                   [OPTION_ORO { OPTION_LQ_RELAY_DATA }] }
/// ```
///
/// The same bytes as the owned `ClientMessage` holding those options (a test pins it), without
/// building the tree first: the owned form costs an allocation per option and per DUID for a
/// message that is emitted once and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasequeryRef<'a> {
    /// Transaction id, at most 24 bits.
    pub xid: u32,
    /// Our DUID's bytes (OPTION_CLIENTID).
    pub client_id: &'a [u8],
    /// The link-address in OPTION_LQ_QUERY (`::`: any link).
    pub link: Ipv6Addr,
    pub target: LqTarget<'a>,
    /// Ask for OPTION_LQ_RELAY_DATA (an ORO inside OPTION_LQ_QUERY).
    pub relay_data: bool,
}

impl LeasequeryRef<'_> {
    /// Bytes on the wire.
    pub fn buffer_len(&self) -> usize {
        let target = match self.target {
            LqTarget::Address(_) => 4 + 24,
            LqTarget::ClientId(d) => 4 + d.len(),
        };
        let oro = if self.relay_data { 4 + 2 } else { 0 };
        4 + (4 + self.client_id.len()) + (4 + 17 + target + oro)
    }

    /// Writes the message into `buf` (at least `buffer_len()` bytes); returns bytes written.
    /// Fails on a transaction id over 24 bits or an option over 64 KiB, as the owned form does.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.xid > super::MAX_TRANSACTION_ID {
            return Err(Error::FieldRange {
                what: "24-bit transaction id",
                value: u64::from(self.xid),
            });
        }
        let mut w = Writer::new(buf);
        w.u8(MessageType::LEASEQUERY.0)?;
        let [_, a, b, c] = self.xid.to_be_bytes();
        w.put(&[a, b, c])?;
        let id = w.begin_option(OptionCode::CLIENTID.0)?;
        w.put(self.client_id)?;
        w.end_option(id)?;
        let lq = w.begin_option(OptionCode::LQ_QUERY.0)?;
        match self.target {
            LqTarget::Address(addr) => {
                w.u8(QueryType::BY_ADDRESS.0)?;
                w.addr(&self.link)?;
                let ia = w.begin_option(OptionCode::IAADDR.0)?;
                w.addr(&addr)?;
                w.u32(0)?;
                w.u32(0)?;
                w.end_option(ia)?;
            }
            LqTarget::ClientId(duid) => {
                w.u8(QueryType::BY_CLIENTID.0)?;
                w.addr(&self.link)?;
                let id = w.begin_option(OptionCode::CLIENTID.0)?;
                w.put(duid)?;
                w.end_option(id)?;
            }
        }
        if self.relay_data {
            let oro = w.begin_option(OptionCode::ORO.0)?;
            w.u16(OptionCode::LQ_RELAY_DATA.0)?;
            w.end_option(oro)?;
        }
        w.end_option(lq)?;
        Ok(w.pos())
    }

    /// The message as a new vector of exactly its length.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut v = vec![0; self.buffer_len()];
        let n = self.emit(&mut v)?;
        v.truncate(n);
        Ok(v)
    }
}

impl LqQuery {
    pub fn new(query_type: QueryType, link_address: Ipv6Addr) -> Self {
        LqQuery {
            query_type,
            link_address,
            options: Options::new(),
        }
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

impl LqRelayData {
    pub(crate) fn body_len(&self) -> usize {
        16 + self.relay.buffer_len()
    }

    pub(crate) fn emit_body(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.addr(&self.peer_address)?;
        self.relay.emit_to(w)
    }
}
