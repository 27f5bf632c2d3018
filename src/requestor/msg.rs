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
    CheckedMessage, ClientData, DhcpOption, Duid, LeasequeryRef, LqRelayData, LqTarget,
    MessageType, MessageView, OptionCode, StatusCode,
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
#[derive(Debug, PartialEq)]
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
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    Reply(Box<ReplyView>),
    /// A LEASEQUERY: a requestor discards it (RFC 5007 §4.2).
    Leasequery,
    Other,
}

/// Read `bytes`; any codec error makes the datagram malformed. `srsn_option`: the option code
/// of the server reply sequence number (`[leasequery] srsn_option`), if any.
///
/// Read in place from the checked view ([`CheckedMessage`]: the same bytes accepted, the same
/// error, as the owned parse), copying only what the core keeps: the identifiers, status,
/// and the CLIENT_DATA / LQ_RELAY_DATA an answer hands on to the cache. The owned message
/// tree is never built, so a reply that changes nothing (NotConfigured, an unknown xid, a
/// stray message) costs the check alone. Every value is the first of its option, as the owned
/// finders read it (a test holds the two readings equal).
pub(crate) fn parse(bytes: &[u8], srsn_option: Option<u16>) -> Result<Parsed, crate::wire::Error> {
    let m = match CheckedMessage::new(bytes)?.view() {
        MessageView::Client(m) => m,
        MessageView::Relay(_) => return Ok(Parsed::Other),
    };
    if m.msg_type() == MessageType::LEASEQUERY {
        return Ok(Parsed::Leasequery);
    }
    if m.msg_type() != MessageType::LEASEQUERY_REPLY {
        return Ok(Parsed::Other);
    }
    let o = m.options();
    // The first option with `code`, owned; a checked message cannot fail to copy.
    let owned = |code: OptionCode| -> Result<Option<DhcpOption>, crate::wire::Error> {
        o.find(code)?.map(|v| v.to_owned_option()).transpose()
    };
    let client_data = match owned(OptionCode::CLIENT_DATA)? {
        Some(DhcpOption::ClientData(cd)) => Some(cd),
        _ => None,
    };
    let relay_data = match owned(OptionCode::LQ_RELAY_DATA)? {
        Some(DhcpOption::LqRelayData(rd)) => Some(*rd),
        _ => None,
    };
    let status = o.checked_data(OptionCode::STATUS_CODE).and_then(|b| {
        let (code, text) = b.split_first_chunk::<2>()?;
        Some((
            StatusCode(u16::from_be_bytes(*code)),
            String::from_utf8_lossy(text).into_owned(),
        ))
    });
    let fixed_u32 = |code: OptionCode| {
        o.checked_data(code)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
    };
    let client_links = o.checked_data(OptionCode::LQ_CLIENT_LINK).map(|b| {
        b.chunks_exact(16)
            .filter_map(|a| <[u8; 16]>::try_from(a).ok())
            .map(Ipv6Addr::from)
            .collect()
    });
    Ok(Parsed::Reply(Box::new(ReplyView {
        xid: m.transaction_id(),
        server_duid: o.checked_data(OptionCode::SERVERID).map(Duid::from),
        client_id: o.checked_data(OptionCode::CLIENTID).map(Duid::from),
        status,
        client_data,
        relay_data,
        base_time: fixed_u32(OptionCode::LQ_BASE_TIME),
        srsn: srsn_option.and_then(|c| o.checked_srsn(c)),
        client_links,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        ClientMessage, DhcpOption, IaAddr, LqQuery, Message, OptionCode, Options, QueryType,
        RelayMessage, Status,
    };

    /// The reading before the checked view: the owned tree built, then read by its finders.
    /// The oracle `parse` is held to.
    fn parse_owned(bytes: &[u8], srsn_option: Option<u16>) -> Result<Parsed, crate::wire::Error> {
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

    const SRSN: u16 = 0x1234;

    /// A LEASEQUERY-REPLY with every option `parse` reads, most of them twice (the first
    /// counts), the SRSN first with a wrong length, and relay data inside and beside
    /// CLIENT_DATA.
    fn full_reply() -> Vec<u8> {
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let mut relay =
            RelayMessage::new(MessageType::RELAY_FORW, 0, a("2001:db8:1::1"), a("fe80::1"));
        relay
            .options
            .push(DhcpOption::InterfaceId(b"ge-0/0/1.100".to_vec()));
        let rd = LqRelayData {
            peer_address: a("2001:db8:1::1"),
            relay,
        };
        let cd = |n: u8| ClientData {
            options: Options(vec![
                DhcpOption::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 0, n])),
                DhcpOption::IaAddr(IaAddr::new(a("2001:db8:1::10"), 3600, 7200)),
                DhcpOption::CltTime(42),
                DhcpOption::LqRelayData(Box::new(rd.clone())),
            ]),
        };
        let mut m = ClientMessage::new(MessageType::LEASEQUERY_REPLY, 0xabcdef);
        for o in [
            DhcpOption::Unknown {
                code: OptionCode(SRSN),
                data: vec![0, 0, 1],
            },
            DhcpOption::ServerId(Duid::ll_ethernet([2, 0, 0, 0, 0, 0xfe])),
            DhcpOption::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 0, 0xaa])),
            DhcpOption::StatusCode(Status::new(StatusCode::SUCCESS, "fine\u{e9}")),
            DhcpOption::ClientData(cd(1)),
            DhcpOption::LqRelayData(Box::new(rd.clone())),
            DhcpOption::LqBaseTime(1000),
            DhcpOption::LqClientLink(vec![a("2001:db8:1::1"), a("2001:db8:2::1")]),
            DhcpOption::Unknown {
                code: OptionCode(SRSN),
                data: vec![0, 0, 0, 7],
            },
            DhcpOption::ServerId(Duid::ll_ethernet([2, 0, 0, 0, 0, 0xff])),
            DhcpOption::StatusCode(Status::new(StatusCode::NOT_CONFIGURED, "no")),
            DhcpOption::ClientData(cd(2)),
            DhcpOption::LqBaseTime(2000),
            DhcpOption::LqClientLink(vec![a("2001:db8:3::1")]),
        ] {
            m.options.push(o);
        }
        Message::from(m).to_vec().unwrap()
    }

    #[test]
    fn the_checked_reading_equals_the_owned_one() {
        let reply = full_reply();
        let Ok(Parsed::Reply(r)) = parse(&reply, Some(SRSN)) else {
            panic!("the reply reads");
        };
        assert_eq!(r.srsn, Some(7), "the first 4-byte SRSN");
        assert_eq!(r.base_time, Some(1000));
        assert_eq!(r.status.as_ref().map(|s| s.0), Some(StatusCode::SUCCESS));
        assert_eq!(r.status.as_ref().map(|s| s.1.as_str()), Some("fine\u{e9}"));
        assert_eq!(r.server_duid.as_ref().and_then(|d| d.last()), Some(&0xfe));
        assert_eq!(r.client_links.as_ref().map(Vec::len), Some(2));
        assert!(r.client_data.is_some() && r.relay_data.is_some());
        let mut leasequery = reply.clone();
        leasequery[0] = MessageType::LEASEQUERY.0;
        let samples = [reply.clone(), leasequery, {
            let mut other = reply.clone();
            other[0] = MessageType::REPLY.0;
            other
        }];
        for msg in &samples {
            for srsn in [None, Some(SRSN), Some(OptionCode::STATUS_CODE.0)] {
                assert_eq!(parse(msg, srsn), parse_owned(msg, srsn));
                for cut in 0..msg.len() {
                    let m = &msg[..cut];
                    assert_eq!(parse(m, srsn), parse_owned(m, srsn), "cut at {cut}");
                }
            }
            for at in 0..msg.len() {
                for v in [0u8, 1, 2, 9, 13, 45, 0xff, msg[at] ^ 1] {
                    let mut m = msg.clone();
                    m[at] = v;
                    let srsn = Some(SRSN);
                    assert_eq!(parse(&m, srsn), parse_owned(&m, srsn), "byte {at} = {v}");
                }
            }
        }
    }

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
