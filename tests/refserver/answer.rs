//! What the server answers to one query: pure lookups over the lease table, no I/O, no codec.
//!
//! Rules followed (RFC 5007 §4.3.2–4.3.3 for UDP, RFC 5460 §7 for TCP):
//! - a non-`::` link-address the server does not serve → NotConfigured;
//! - query by address: the client leasing the address, or delegated a prefix containing it;
//! - query by client-id with link `::`: over UDP a client on several links gets
//!   LQ_CLIENT_LINK (ask again per link); over TCP each link's data is sent (RFC 5460 does not
//!   use LQ_CLIENT_LINK);
//! - queries by relay-id (`::` = every link of that relay), link-address and remote-id are TCP
//!   only: over UDP they get NotAllowed;
//! - a missing mandatory query option → MalformedQuery; an unknown query type →
//!   UnknownQueryType;
//! - only leases with a non-zero valid lifetime are reported; a client with none is no binding.

use std::net::Ipv6Addr;

use super::table::{LeaseTable, RemoteId};

pub const QUERY_BY_ADDRESS: u8 = 1;
pub const QUERY_BY_CLIENTID: u8 = 2;
pub const QUERY_BY_RELAY_ID: u8 = 3;
pub const QUERY_BY_LINK_ADDRESS: u8 = 4;
pub const QUERY_BY_REMOTE_ID: u8 = 5;

pub const STATUS_UNKNOWN_QUERY_TYPE: u16 = 7;
pub const STATUS_MALFORMED_QUERY: u16 = 8;
pub const STATUS_NOT_CONFIGURED: u16 = 9;
pub const STATUS_NOT_ALLOWED: u16 = 10;

/// Which socket the query came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The parts of a LEASEQUERY the lookups need, already pulled out of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub query_type: u8,
    pub link: Ipv6Addr,
    pub addr: Option<Ipv6Addr>,
    pub client_id: Option<Vec<u8>>,
    pub relay_id: Option<Vec<u8>>,
    pub remote_id: Option<RemoteId>,
    /// Option codes asked for by an ORO inside LQ_QUERY.
    pub oro: Vec<u16>,
}

impl Query {
    pub fn new(query_type: u8, link: Ipv6Addr) -> Self {
        Query {
            query_type,
            link,
            addr: None,
            client_id: None,
            relay_id: None,
            remote_id: None,
            oro: Vec::new(),
        }
    }
}

/// The answer, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// REPLY with this status code and message, no client data.
    Status(u16, &'static str),
    /// REPLY with neither CLIENT_DATA nor LQ_CLIENT_LINK: no binding (RFC 5007 §4.3.3).
    NoBinding,
    /// REPLY with LQ_CLIENT_LINK listing these links (UDP only).
    ClientLinks(Vec<Ipv6Addr>),
    /// One CLIENT_DATA per table entry (UDP: exactly one).
    Bindings(Vec<usize>),
}

/// Decide the answer to `q` from `table`.
pub fn decide(table: &LeaseTable, q: &Query, transport: Transport) -> Decision {
    let any_link = q.link.is_unspecified();
    if !any_link && !table.knows_link(q.link) {
        return Decision::Status(STATUS_NOT_CONFIGURED, "link not served here");
    }
    let on_link = |i: &usize| any_link || table.entry(*i).link == q.link;
    let live = |i: &usize| table.entry(*i).has_live_lease();
    let found: Vec<usize> = match q.query_type {
        QUERY_BY_ADDRESS => {
            let Some(addr) = q.addr else {
                return Decision::Status(STATUS_MALFORMED_QUERY, "query by address needs IAADDR");
            };
            table
                .find_address(addr)
                .into_iter()
                .filter(on_link)
                .filter(live)
                .collect()
        }
        QUERY_BY_CLIENTID => {
            let Some(duid) = &q.client_id else {
                return Decision::Status(
                    STATUS_MALFORMED_QUERY,
                    "query by client-id needs CLIENTID",
                );
            };
            let v: Vec<usize> = table
                .by_duid(duid)
                .iter()
                .copied()
                .filter(on_link)
                .filter(live)
                .collect();
            if transport == Transport::Udp && v.len() > 1 {
                let mut links: Vec<Ipv6Addr> = v.iter().map(|&i| table.entry(i).link).collect();
                links.sort();
                links.dedup();
                return Decision::ClientLinks(links);
            }
            v
        }
        QUERY_BY_RELAY_ID | QUERY_BY_LINK_ADDRESS | QUERY_BY_REMOTE_ID
            if transport == Transport::Udp =>
        {
            return Decision::Status(STATUS_NOT_ALLOWED, "bulk query types need TCP (RFC 5460)");
        }
        QUERY_BY_RELAY_ID => {
            let Some(rid) = &q.relay_id else {
                return Decision::Status(
                    STATUS_MALFORMED_QUERY,
                    "query by relay-id needs RELAY_ID",
                );
            };
            table
                .by_relay_id(rid)
                .iter()
                .copied()
                .filter(on_link)
                .filter(live)
                .collect()
        }
        QUERY_BY_LINK_ADDRESS => {
            if any_link {
                return Decision::Status(
                    STATUS_MALFORMED_QUERY,
                    "query by link-address needs a link",
                );
            }
            table.by_link(q.link).iter().copied().filter(live).collect()
        }
        QUERY_BY_REMOTE_ID => {
            let Some(rid) = &q.remote_id else {
                return Decision::Status(
                    STATUS_MALFORMED_QUERY,
                    "query by remote-id needs REMOTE_ID",
                );
            };
            table
                .by_remote_id(rid)
                .iter()
                .copied()
                .filter(on_link)
                .filter(live)
                .collect()
        }
        _ => return Decision::Status(STATUS_UNKNOWN_QUERY_TYPE, "unknown query type"),
    };
    if found.is_empty() {
        Decision::NoBinding
    } else {
        Decision::Bindings(found)
    }
}
