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
    ClientData, Duid, LeasequeryRef, LqRelayData, LqTarget, Message, MessageType, StatusCode,
};

use super::{Query, QueryKind};

/// The LEASEQUERY for `query` asked on `link`, as bytes: written straight from the query's
/// parts ([`LeasequeryRef`]), no owned message built first.
pub(crate) fn emit_leasequery(xid: u32, our_duid: &[u8], query: &Query, link: Ipv6Addr) -> Vec<u8> {
    let target = match &query.kind {
        QueryKind::ByAddress(a) => LqTarget::Address(*a),
        QueryKind::ByClientId(d) => LqTarget::ClientId(d),
    };
    LeasequeryRef {
        xid,
        client_id: our_duid,
        link,
        target,
        relay_data: query.relay_data,
    }
    .to_vec()
    // Cannot fail: xid is masked to 24 bits and every option is far below 64 KiB
    // (a DUID is at most 130 bytes by RFC 8415 §11; config validates it).
    .unwrap_or_default()
}

/// What the core needs from one LEASEQUERY-REPLY.
#[derive(Debug)]
pub(crate) struct ReplyView {
    pub(crate) xid: u32,
    pub(crate) server_duid: Option<Duid>,
    pub(crate) client_id: Option<Duid>,
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
        server_duid: o.server_id().cloned(),
        client_id: o.client_id().cloned(),
        status: o.status().map(|s| (s.code, s.text().into_owned())),
        client_data: o.client_data().cloned(),
        relay_data: o.lq_relay_data().cloned(),
        base_time: o.lq_base_time(),
        srsn: srsn_option.and_then(|c| o.srsn(c)),
        client_links: o.lq_client_link().map(<[Ipv6Addr]>::to_vec),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ClientMessage, DhcpOption, IaAddr, LqQuery, OptionCode, QueryType};

    /// The LEASEQUERY as the owned tree would build it: what `emit_leasequery` must equal.
    fn owned(xid: u32, our_duid: &[u8], query: &Query, link: Ipv6Addr) -> Vec<u8> {
        let (qtype, qopt) = match &query.kind {
            QueryKind::ByAddress(a) => (
                QueryType::BY_ADDRESS,
                DhcpOption::IaAddr(IaAddr::new(*a, 0, 0)),
            ),
            QueryKind::ByClientId(d) => (QueryType::BY_CLIENTID, DhcpOption::ClientId(d.clone())),
        };
        let mut lq = LqQuery::new(qtype, link);
        lq.options.push(qopt);
        if query.relay_data {
            lq.options
                .push(DhcpOption::Oro(vec![OptionCode::LQ_RELAY_DATA]));
        }
        let mut m = ClientMessage::new(MessageType::LEASEQUERY, xid);
        m.options.push(DhcpOption::ClientId(Duid::from(our_duid)));
        m.options.push(DhcpOption::LqQuery(lq));
        Message::from(m).to_vec().unwrap()
    }

    #[test]
    fn written_leasequery_equals_the_owned_message() {
        let ours: &[&[u8]] = &[
            &[0, 3, 0, 1, 2, 0, 0, 0, 0xbe, 0x11],
            &[0, 1, 0, 1, 0x2a, 0xbc, 0xde, 0xf0, 2, 0, 0, 0, 0, 1],
            &[0, 2, 0, 0, 0x11, 0x8b, b'x'],
            &[7],
            &[],
        ];
        let link: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        for duid in ours {
            for relay_data in [false, true] {
                for query in [
                    Query::by_address("2001:db8:1::10".parse().unwrap()),
                    Query::by_client_id(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 0xaa]),
                    Query::by_client_id(vec![9; 40]),
                ] {
                    let query = query.with_relay_data(relay_data);
                    for (xid, link) in [(0, Ipv6Addr::UNSPECIFIED), (0xab_cdef, link)] {
                        let got = emit_leasequery(xid, duid, &query, link);
                        assert_eq!(got, owned(xid, duid, &query, link), "{query:?} {duid:?}");
                        assert_eq!(
                            LeasequeryRef {
                                xid,
                                client_id: duid,
                                link,
                                target: LqTarget::Address(Ipv6Addr::LOCALHOST),
                                relay_data,
                            }
                            .buffer_len(),
                            owned(
                                xid,
                                duid,
                                &Query::by_address(Ipv6Addr::LOCALHOST).with_relay_data(relay_data),
                                link
                            )
                            .len()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_oversized_leasequery_is_refused_not_cut() {
        let q = LeasequeryRef {
            xid: 1 << 24,
            client_id: &[1],
            link: Ipv6Addr::UNSPECIFIED,
            target: LqTarget::Address(Ipv6Addr::LOCALHOST),
            relay_data: false,
        };
        assert!(q.to_vec().is_err(), "a 25-bit xid");
        let big = vec![0u8; 70_000];
        let q = LeasequeryRef {
            xid: 1,
            target: LqTarget::ClientId(&big),
            ..q
        };
        assert!(q.to_vec().is_err(), "a DUID over 64 KiB");
    }
}
