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
//!
//! That is the `ideal` [`Profile`]. [`decide_as`] narrows or refuses the same answer the way a
//! deployed server does (per the real servers' code and behaviour, not the RFC):
//! - `isc` (ISC dhcpd 4.4): by address, only an IA_NA address is found and only that lease is
//!   returned, whatever link-address the query named, without relay data even when asked; an
//!   address inside a delegated prefix is NotConfigured ("Address not in a pool");
//!   QUERY_BY_CLIENTID is UnknownQueryType; no bulk leasequery at all.
//! - `kea` (Kea 3 lease_query hook): by address, the IA_NA lease or the one delegated prefix
//!   containing the address, alone, whatever link-address the query named; by client-id every
//!   lease of the client (LQ_CLIENT_LINK when on several links); in bulk one CLIENT_DATA per
//!   lease, so a client's address and prefix go out in separate messages; the bulk query types
//!   over UDP are UnknownQueryType; every answer has a status with Kea's text, "no active
//!   lease" (Success) for no binding included.

use std::net::Ipv6Addr;

use lqagent::prefix::Ipv6Prefix;

use super::table::{LeaseTable, RemoteId};

/// Which deployed server the reference server behaves like (see the module docs and
/// [`super::codec`] for what each changes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// What RFC 5007 and RFC 5460 say.
    #[default]
    Ideal,
    /// ISC dhcpd 4.4.
    Isc,
    /// Kea 3 with the lease_query hook.
    Kea,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ideal" => Ok(Profile::Ideal),
            "isc" => Ok(Profile::Isc),
            "kea" => Ok(Profile::Kea),
            other => Err(format!("unknown profile {other:?} (ideal, isc, kea)")),
        }
    }
}

/// One lease of a table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    Addr(Ipv6Addr),
    Prefix(Ipv6Prefix),
}

/// One CLIENT_DATA to send: a table entry, all its live leases or only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub entry: usize,
    pub only: Option<Only>,
}

impl Pick {
    pub fn all(entry: usize) -> Self {
        Pick { entry, only: None }
    }
}

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
    /// One CLIENT_DATA per pick (a profile narrowed the answer; UDP: exactly one).
    Leases(Vec<Pick>),
}

impl Decision {
    /// The CLIENT_DATAs to send, in order (empty for a status, no binding or client links).
    pub fn picks(&self) -> Vec<Pick> {
        match self {
            Decision::Bindings(v) => v.iter().map(|&i| Pick::all(i)).collect(),
            Decision::Leases(v) => v.clone(),
            _ => Vec::new(),
        }
    }
}

/// Decide the answer to `q` as `profile` does (see the module docs).
pub fn decide_as(
    profile: Profile,
    table: &LeaseTable,
    q: &Query,
    transport: Transport,
) -> Decision {
    match profile {
        Profile::Ideal => decide(table, q, transport),
        Profile::Isc => {
            if q.query_type == QUERY_BY_CLIENTID {
                return Decision::Status(STATUS_UNKNOWN_QUERY_TYPE, "unknown query type");
            }
            if q.query_type != QUERY_BY_ADDRESS {
                return decide(table, q, transport);
            }
            let Some(addr) = q.addr else {
                return decide(table, q, transport);
            };
            if !table.has_address(addr) && table.find_address(addr).is_some() {
                return Decision::Status(STATUS_NOT_CONFIGURED, "Address not in a pool");
            }
            // dhcpd 4.4 ignores the query's link-address: the lease is returned whatever link
            // was named.
            let anywhere = Query {
                link: Ipv6Addr::UNSPECIFIED,
                ..q.clone()
            };
            narrow_by_address(decide(table, &anywhere, transport), addr, table)
        }
        Profile::Kea => kea_texts(decide_kea(table, q, transport), q.query_type),
    }
}

/// Kea 3's lease_query hook (`lease_query_impl6.cc`, `bulk_lease_query6.cc` in Kea 3.0.4).
fn decide_kea(table: &LeaseTable, q: &Query, transport: Transport) -> Decision {
    match (q.query_type, transport) {
        // Over UDP Kea serves QUERY_BY_ADDRESS and QUERY_BY_CLIENTID only; the bulk types get
        // UnknownQueryType there, not the NotAllowed of RFC 5460 §5.3.
        (QUERY_BY_ADDRESS | QUERY_BY_CLIENTID, _) | (_, Transport::Tcp) => {}
        _ => return Decision::Status(STATUS_UNKNOWN_QUERY_TYPE, "unknown query-type"),
    }
    if q.query_type == QUERY_BY_ADDRESS {
        let Some(addr) = q.addr else {
            return Decision::Status(STATUS_MALFORMED_QUERY, "missing D6O_IAADDR");
        };
        // Kea looks an address up without the query's link-address.
        let anywhere = Query {
            link: Ipv6Addr::UNSPECIFIED,
            ..q.clone()
        };
        return match narrow_by_address(decide(table, &anywhere, transport), addr, table) {
            // Not leased: Kea says "no active lease" for an address of a configured pool and
            // NotConfigured for any other; the table knows links, not pools: an address in
            // the /64 of a served link stands for "in a pool" (seen: 2001:db8:1::1ff and
            // 2001:db8:99::1 in tests/data/kea/).
            Decision::NoBinding if !table.serves_64_of(addr) => {
                Decision::Status(STATUS_NOT_CONFIGURED, "address not in a configured pool")
            }
            d => d,
        };
    }
    // Kea places a link-address in the subnet containing it (its LQ_CLIENT_LINK names the
    // subnets by their prefix, e.g. 2001:db8:1::, and the follow-ups ask with those).
    let mut q = q.clone();
    if !q.link.is_unspecified() && !table.knows_link(q.link) {
        if let Some(l) = table.link_of_64(q.link) {
            q.link = l;
        }
    }
    match (decide(table, &q, transport), transport) {
        (Decision::Bindings(v), Transport::Tcp) => Decision::Leases(one_per_lease(table, &v)),
        (Decision::ClientLinks(links), _) => {
            let mut v: Vec<Ipv6Addr> = links
                .into_iter()
                .map(|l| Ipv6Addr::from(u128::from(l) >> 64 << 64))
                .collect();
            v.dedup();
            Decision::ClientLinks(v)
        }
        (d, _) => d,
    }
}

/// Kea's status texts, and its Success status where the RFC sends none: Kea puts a STATUS_CODE
/// in every LEASEQUERY-REPLY, "no active lease" included.
fn kea_texts(d: Decision, query_type: u8) -> Decision {
    let by_address = query_type == QUERY_BY_ADDRESS;
    match d {
        Decision::NoBinding if by_address => Decision::Status(0, "no active lease"),
        Decision::NoBinding => Decision::Status(0, "no active leases"),
        Decision::Status(STATUS_NOT_CONFIGURED, _) if by_address => {
            Decision::Status(STATUS_NOT_CONFIGURED, "address not in a configured pool")
        }
        Decision::Status(STATUS_NOT_CONFIGURED, _) => {
            Decision::Status(STATUS_NOT_CONFIGURED, "not a configured link")
        }
        Decision::Status(STATUS_UNKNOWN_QUERY_TYPE, _) => {
            Decision::Status(STATUS_UNKNOWN_QUERY_TYPE, "unknown query-type")
        }
        Decision::Status(STATUS_MALFORMED_QUERY, _) if query_type == QUERY_BY_CLIENTID => {
            Decision::Status(STATUS_MALFORMED_QUERY, "missing D6O_CLIENTID")
        }
        other => other,
    }
}

/// Only the lease the address names: the IA_NA address, else the prefix containing it.
fn narrow_by_address(d: Decision, addr: Ipv6Addr, table: &LeaseTable) -> Decision {
    let Decision::Bindings(v) = d else { return d };
    let picks = v
        .into_iter()
        .filter_map(|i| {
            let e = table.entry(i);
            let only = if e.addrs.iter().any(|a| a.addr == addr && a.valid != 0) {
                Only::Addr(addr)
            } else {
                let p = e
                    .prefixes
                    .iter()
                    .find(|p| p.valid != 0 && p.prefix.contains(addr))?;
                Only::Prefix(p.prefix)
            };
            Some(Pick {
                entry: i,
                only: Some(only),
            })
        })
        .collect::<Vec<_>>();
    if picks.is_empty() {
        Decision::NoBinding
    } else {
        Decision::Leases(picks)
    }
}

/// Kea's bulk answers: one CLIENT_DATA per live lease.
fn one_per_lease(table: &LeaseTable, entries: &[usize]) -> Vec<Pick> {
    let mut out = Vec::new();
    for &i in entries {
        let e = table.entry(i);
        for a in e.addrs.iter().filter(|a| a.valid != 0) {
            out.push(Pick {
                entry: i,
                only: Some(Only::Addr(a.addr)),
            });
        }
        for p in e.prefixes.iter().filter(|p| p.valid != 0) {
            out.push(Pick {
                entry: i,
                only: Some(Only::Prefix(p.prefix)),
            });
        }
    }
    out
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
