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
use super::codes::QueryType;
use super::duid::Duid;
use super::error::Error;
use super::owned::{ClientData, IaAddr, IaPrefix, LqQuery, LqRelayData, Options};
use std::net::Ipv6Addr;

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
