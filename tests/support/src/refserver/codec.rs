//! The server's use of the agent's own codec (`lqagent::wire`): pulling a [`Query`] out of a
//! LEASEQUERY and building LEASEQUERY-REPLY/-DATA/-DONE. No DHCPv6 encoding of its own.

use std::net::Ipv6Addr;

use lqagent::wire::{
    ClientData, ClientMessage, DhcpOption, Duid, IaAddr, IaPrefix, LqRelayData, Message,
    MessageType, OptionCode, Options, RelayMessage, Status, StatusCode,
};

use lqagent::prefix::Ipv6Prefix;

use super::answer::{Only, Pick, Profile, Query, Transport};
use super::table::{HexBytes, LeaseTable, RemoteId};

/// A LEASEQUERY worth answering.
#[derive(Debug)]
pub struct Incoming {
    pub xid: u32,
    /// The requestor's CLIENTID, echoed in the reply.
    pub requestor: Duid,
    /// The query, or why it is malformed (answered MalformedQuery).
    pub query: Result<Query, &'static str>,
}

/// Why a message is discarded without an answer.
#[derive(Debug)]
pub enum Reject {
    Parse(lqagent::wire::Error),
    NotLeasequery(MessageType),
    /// RFC 5007 §4.3.1: a LEASEQUERY without CLIENTID is discarded.
    NoClientId,
}

pub fn parse_leasequery(bytes: &[u8]) -> Result<Incoming, Reject> {
    let msg = Message::parse(bytes).map_err(Reject::Parse)?;
    let Message::Client(m) = msg else {
        return Err(Reject::NotLeasequery(msg.msg_type()));
    };
    if m.msg_type != MessageType::LEASEQUERY {
        return Err(Reject::NotLeasequery(m.msg_type));
    }
    let requestor = m.options.client_id().ok_or(Reject::NoClientId)?.clone();
    let query = match m.options.lq_query() {
        None => Err("LEASEQUERY without LQ_QUERY"),
        Some(lq) => {
            let o = &lq.options;
            Ok(Query {
                query_type: lq.query_type.0,
                link: lq.link_address,
                addr: o.ia_addrs().next().map(|a| a.addr),
                client_id: o.client_id().map(Duid::to_vec),
                relay_id: o.relay_id().map(Duid::to_vec),
                remote_id: o.remote_id().map(|(enterprise, id)| RemoteId {
                    enterprise,
                    id: HexBytes(id.to_vec()),
                }),
                oro: o
                    .oro()
                    .map(|v| v.iter().map(|c| c.0).collect())
                    .unwrap_or_default(),
            })
        }
    };
    Ok(Incoming {
        xid: m.transaction_id,
        requestor,
        query,
    })
}

/// What a LEASEQUERY-REPLY carries besides the identifiers.
#[derive(Debug, Clone, Copy)]
pub enum ReplyBody<'a> {
    Status(u16, &'a str),
    Empty,
    ClientLinks(&'a [Ipv6Addr]),
    /// CLIENT_DATA for this table entry (or one of its leases).
    Client(Pick),
}

fn srsn_option(srsn: Option<(u16, u32)>) -> Option<DhcpOption> {
    srsn.map(|(code, n)| DhcpOption::Unknown {
        code: OptionCode(code),
        data: n.to_be_bytes().to_vec(),
    })
}

fn to_bytes(msg_type: MessageType, xid: u32, options: Vec<DhcpOption>) -> Vec<u8> {
    Message::Client(ClientMessage {
        msg_type,
        transaction_id: xid,
        options: Options(options),
    })
    .to_vec()
    .expect("reference server builds only encodable messages")
}

/// How the answering server shapes its messages: its [`Profile`], the transport, and its clock
/// (ISC dhcpd 4.4 puts an absolute Unix time in CLT_TIME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub profile: Profile,
    pub transport: Transport,
    /// The server's time, Unix seconds.
    pub now_unix: u64,
    /// The query type answered (Kea's status text depends on it); 0 when unknown.
    pub query_type: u8,
}

impl Shape {
    /// RFC behaviour over UDP.
    pub fn ideal() -> Self {
        Shape {
            profile: Profile::Ideal,
            transport: Transport::Udp,
            now_unix: 0,
            query_type: 0,
        }
    }

    pub fn now(profile: Profile, transport: Transport) -> Self {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Shape {
            profile,
            transport,
            now_unix,
            query_type: 0,
        }
    }

    /// Where LQ_RELAY_DATA goes: `Some(true)` inside CLIENT_DATA, `Some(false)` at the top level
    /// of the message (Kea 3 over UDP), `None` not sent.
    fn relay_inside(&self, oro: &[u16], has_relay: bool) -> Option<bool> {
        match self.profile {
            // Kea ignores the ORO and sends what it stored with the lease.
            Profile::Kea if has_relay => Some(self.transport == Transport::Tcp),
            Profile::Kea => None,
            // ISC dhcpd 4.4 does not return relay data even when the ORO asks for it.
            Profile::Isc => None,
            Profile::Ideal => oro.contains(&OptionCode::LQ_RELAY_DATA.0).then_some(true),
        }
    }

    /// CLT_TIME as this server sends it: elapsed seconds, or (ISC dhcpd 4.4) the absolute Unix
    /// time of the last transaction.
    fn clt_time(&self, elapsed: u32) -> u32 {
        match self.profile {
            Profile::Isc => {
                u32::try_from(self.now_unix.saturating_sub(u64::from(elapsed))).unwrap_or(u32::MAX)
            }
            _ => elapsed,
        }
    }

    /// A lifetime as this server sends it: as configured (ideal, ISC), or what remains (Kea 3:
    /// configured − elapsed, left as configured when that would not be positive — as Kea does).
    fn lifetime(&self, configured: u32, elapsed: u32) -> u32 {
        match self.profile {
            Profile::Kea if elapsed < configured => configured - elapsed,
            _ => configured,
        }
    }
}

/// CLIENT_DATA for one table entry (RFC 5007 §4.1.2.2): CLIENTID, each live IAADDR and
/// IAPREFIX, CLT_TIME, and LQ_RELAY_DATA when the query's ORO asked for it (ideal shape).
pub fn client_data(table: &LeaseTable, i: usize, oro: &[u16]) -> ClientData {
    client_data_as(table, Pick::all(i), oro, &Shape::ideal()).0
}

/// CLIENT_DATA for `pick` shaped by `shape`, and the LQ_RELAY_DATA to put at the top level of
/// the message when the shape puts it there.
pub fn client_data_as(
    table: &LeaseTable,
    pick: Pick,
    oro: &[u16],
    shape: &Shape,
) -> (ClientData, Option<DhcpOption>) {
    let e = table.entry(pick.entry);
    let wanted_addr = |a: Ipv6Addr| match pick.only {
        None => true,
        Some(Only::Addr(x)) => x == a,
        Some(Only::Prefix(_)) => false,
    };
    let wanted_prefix = |p: Ipv6Prefix| match pick.only {
        None => true,
        Some(Only::Prefix(x)) => x == p,
        Some(Only::Addr(_)) => false,
    };
    let mut o = vec![DhcpOption::ClientId(Duid::from(&e.duid.0))];
    for a in e
        .addrs
        .iter()
        .filter(|a| a.valid != 0 && wanted_addr(a.addr))
    {
        o.push(DhcpOption::IaAddr(IaAddr::new(
            a.addr,
            shape.lifetime(a.preferred, e.clt_time),
            shape.lifetime(a.valid, e.clt_time),
        )));
    }
    for p in e
        .prefixes
        .iter()
        .filter(|p| p.valid != 0 && wanted_prefix(p.prefix))
    {
        o.push(DhcpOption::IaPrefix(IaPrefix::new(
            p.prefix,
            shape.lifetime(p.preferred, e.clt_time),
            shape.lifetime(p.valid, e.clt_time),
        )));
    }
    o.push(DhcpOption::CltTime(shape.clt_time(e.clt_time)));
    let mut top = None;
    match shape.relay_inside(oro, e.peer_address.is_some()) {
        Some(true) => o.push(relay_data(e, shape.profile)),
        Some(false) => top = Some(relay_data(e, shape.profile)),
        None => {}
    }
    (
        ClientData {
            options: Options(o),
        },
        top,
    )
}

/// LQ_RELAY_DATA (RFC 5007 §4.1.2.4) for an entry: the RELAY-FORW the server last saw. Its
/// peer-address is the relay's address (RFC 5007), except that Kea 3 puts the outermost relay
/// level's peer-address there (`makeRelayOption`: `relay_infos.front()->peeraddr_`) — for one
/// relay, the client's own address.
fn relay_data(e: &super::table::LeaseEntry, profile: Profile) -> DhcpOption {
    let mut ro = Vec::new();
    if let Some(id) = &e.interface_id {
        ro.push(DhcpOption::InterfaceId(id.0.clone()));
    }
    if let Some(r) = &e.remote_id {
        ro.push(DhcpOption::RemoteId {
            enterprise: r.enterprise,
            remote_id: r.id.0.clone(),
        });
    }
    if let Some(r) = &e.relay_id {
        ro.push(DhcpOption::RelayId(Duid::from(&r.0)));
    }
    let peer_address = match profile {
        Profile::Kea => e.peer_address.unwrap_or(Ipv6Addr::UNSPECIFIED),
        _ => e.relay_address.unwrap_or(e.link),
    };
    DhcpOption::LqRelayData(Box::new(LqRelayData {
        peer_address,
        relay: RelayMessage {
            msg_type: MessageType::RELAY_FORW,
            hop_count: 0,
            link_address: e.link,
            peer_address: e.peer_address.unwrap_or(Ipv6Addr::UNSPECIFIED),
            options: Options(ro),
        },
    }))
}

/// LEASEQUERY-REPLY: SERVERID, the requestor's CLIENTID, then the body (ideal shape).
pub fn emit_reply(
    xid: u32,
    server_duid: &[u8],
    requestor: &Duid,
    table: &LeaseTable,
    body: ReplyBody<'_>,
    oro: &[u16],
    srsn: Option<(u16, u32)>,
) -> Vec<u8> {
    emit_reply_as(
        xid,
        server_duid,
        requestor,
        table,
        body,
        oro,
        srsn,
        &Shape::ideal(),
    )
}

/// LEASEQUERY-REPLY shaped by `shape`: Kea 3 adds LQ_RELAY_DATA at the top level (UDP) and a
/// Success status beside client data or client links, and sends its options in option-code
/// order (Kea keeps a packet's options in a map keyed by code: CLIENTID, SERVERID,
/// STATUS_CODE, CLIENT_DATA, LQ_RELAY_DATA).
#[allow(clippy::too_many_arguments)]
pub fn emit_reply_as(
    xid: u32,
    server_duid: &[u8],
    requestor: &Duid,
    table: &LeaseTable,
    body: ReplyBody<'_>,
    oro: &[u16],
    srsn: Option<(u16, u32)>,
    shape: &Shape,
) -> Vec<u8> {
    let mut o = vec![
        DhcpOption::ServerId(Duid::from(server_duid)),
        DhcpOption::ClientId(requestor.clone()),
    ];
    match body {
        ReplyBody::Status(code, msg) => {
            o.push(DhcpOption::StatusCode(Status::new(StatusCode(code), msg)))
        }
        ReplyBody::Empty => {}
        ReplyBody::ClientLinks(links) => o.push(DhcpOption::LqClientLink(links.to_vec())),
        ReplyBody::Client(pick) => {
            let (cd, top) = client_data_as(table, pick, oro, shape);
            o.push(DhcpOption::ClientData(cd));
            o.extend(top);
        }
    }
    if shape.profile == Profile::Kea {
        if matches!(body, ReplyBody::Client(_) | ReplyBody::ClientLinks(_)) {
            let text = if shape.query_type == super::answer::QUERY_BY_ADDRESS {
                "active lease found"
            } else {
                "active lease(s) found"
            };
            o.push(DhcpOption::StatusCode(Status::new(
                StatusCode::SUCCESS,
                text,
            )));
        }
        o.sort_by_key(|x| x.code().0);
    }
    o.extend(srsn_option(srsn));
    to_bytes(MessageType::LEASEQUERY_REPLY, xid, o)
}

/// LEASEQUERY-DATA with one client's CLIENT_DATA (RFC 5460 §5.2), ideal shape.
pub fn emit_data(
    xid: u32,
    table: &LeaseTable,
    i: usize,
    oro: &[u16],
    srsn: Option<(u16, u32)>,
) -> Vec<u8> {
    emit_data_as(xid, table, Pick::all(i), oro, srsn, &Shape::ideal())
}

/// LEASEQUERY-DATA for `pick` shaped by `shape`.
pub fn emit_data_as(
    xid: u32,
    table: &LeaseTable,
    pick: Pick,
    oro: &[u16],
    srsn: Option<(u16, u32)>,
    shape: &Shape,
) -> Vec<u8> {
    let (cd, top) = client_data_as(table, pick, oro, shape);
    let mut o = vec![DhcpOption::ClientData(cd)];
    o.extend(top);
    o.extend(srsn_option(srsn));
    to_bytes(MessageType::LEASEQUERY_DATA, xid, o)
}

/// LEASEQUERY-DONE, with a status when the query ended in error (RFC 5460 §7.3).
pub fn emit_done(xid: u32, status: Option<(u16, &str)>, srsn: Option<(u16, u32)>) -> Vec<u8> {
    let mut o = Vec::new();
    if let Some((code, msg)) = status {
        o.push(DhcpOption::StatusCode(Status::new(StatusCode(code), msg)));
    }
    o.extend(srsn_option(srsn));
    to_bytes(MessageType::LEASEQUERY_DONE, xid, o)
}

/// The 2-byte length prefix plus the message (RFC 5460 §5.1); `msg` may be corrupted bytes.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let header = lqagent::wire::bulk::frame_header(msg.len())
        .expect("reference server messages fit a frame");
    let mut v = Vec::with_capacity(2 + msg.len());
    v.extend_from_slice(&header);
    v.extend_from_slice(msg);
    v
}
