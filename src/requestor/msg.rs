//! The requestor's two uses of the codec: emit one LEASEQUERY, and read a received datagram
//! into the few facts the core decides on. Pure; the layouts live in `crate::wire`.
//!
//! ```text
//! LEASEQUERY (RFC 5007 §4.3.1): msg-type 14, xid, OPTION_CLIENTID (our DUID),
//!   OPTION_LQ_QUERY { query-type, link-address,
//!                     OPTION_IAADDR (by address) | OPTION_CLIENTID (by client id),
//!                     [OPTION_ORO { OPTION_LQ_RELAY_DATA }] }
//! ```

use std::net::Ipv6Addr;

use crate::wire::{
    ClientData, ClientMessage, DhcpOption, Duid, IaAddr, LqQuery, LqRelayData, Message,
    MessageType, OptionCode, QueryType, StatusCode,
};

use super::{Query, QueryKind};

/// The LEASEQUERY for `query` asked on `link`, as bytes.
pub(crate) fn emit_leasequery(xid: u32, our_duid: &[u8], query: &Query, link: Ipv6Addr) -> Vec<u8> {
    let (qtype, qopt) = match &query.kind {
        QueryKind::ByAddress(a) => (
            QueryType::BY_ADDRESS,
            DhcpOption::IaAddr(IaAddr::new(*a, 0, 0)),
        ),
        QueryKind::ByClientId(d) => (QueryType::BY_CLIENTID, DhcpOption::ClientId(Duid::parse(d))),
    };
    let mut lq = LqQuery::new(qtype, link);
    lq.options.push(qopt);
    if query.relay_data {
        lq.options
            .push(DhcpOption::Oro(vec![OptionCode::LQ_RELAY_DATA]));
    }
    let mut m = ClientMessage::new(MessageType::LEASEQUERY, xid);
    m.options.push(DhcpOption::ClientId(Duid::parse(our_duid)));
    m.options.push(DhcpOption::LqQuery(lq));
    // Cannot fail: xid is masked to 24 bits and every option is far below 64 KiB
    // (a DUID is at most 130 bytes by RFC 8415 §11; config validates it).
    m.to_vec().unwrap_or_default()
}

/// What the core needs from one LEASEQUERY-REPLY.
#[derive(Debug)]
pub(crate) struct ReplyView {
    pub(crate) xid: u32,
    pub(crate) server_duid: Option<Vec<u8>>,
    pub(crate) client_id: Option<Vec<u8>>,
    /// (code, message) from a top-level OPTION_STATUS_CODE.
    pub(crate) status: Option<(StatusCode, String)>,
    pub(crate) client_data: Option<ClientData>,
    /// OPTION_LQ_RELAY_DATA beside CLIENT_DATA (where Kea puts it over UDP).
    pub(crate) relay_data: Option<LqRelayData>,
    pub(crate) base_time: Option<u32>,
    /// The server reply sequence number, when an option code for it is configured.
    pub(crate) srsn: Option<u32>,
    pub(crate) client_links: Option<Vec<Ipv6Addr>>,
}

/// A received datagram, classified.
#[derive(Debug)]
pub(crate) enum Parsed {
    Reply(Box<ReplyView>),
    /// A LEASEQUERY: a requestor discards it (RFC 5007 §4.2).
    Leasequery,
    Other,
}

/// Read `bytes`; any codec error makes the datagram malformed. `srsn_option`: the option code
/// of the server reply sequence number (`[leasequery] srsn_option`), if any.
pub(crate) fn parse(bytes: &[u8], srsn_option: Option<u16>) -> Result<Parsed, crate::wire::Error> {
    let m = match Message::parse(bytes)? {
        Message::Client(m) => m,
        Message::Relay(_) => return Ok(Parsed::Other),
    };
    if m.msg_type == MessageType::LEASEQUERY {
        return Ok(Parsed::Leasequery);
    }
    if m.msg_type != MessageType::LEASEQUERY_REPLY {
        return Ok(Parsed::Other);
    }
    let o = &m.options;
    Ok(Parsed::Reply(Box::new(ReplyView {
        xid: m.transaction_id,
        server_duid: o.server_id().map(Duid::to_vec),
        client_id: o.client_id().map(Duid::to_vec),
        status: o.status().map(|s| (s.code, s.text().into_owned())),
        client_data: o.client_data().cloned(),
        relay_data: o.lq_relay_data().cloned(),
        base_time: o.lq_base_time(),
        srsn: srsn_option.and_then(|c| o.srsn(c)),
        client_links: o.lq_client_link().map(<[Ipv6Addr]>::to_vec),
    })))
}
