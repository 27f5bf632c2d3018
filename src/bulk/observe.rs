//! A recovered binding as the cache's input: one [`Observation`] per CLIENT_DATA.
//!
//! RFC 5007 §4.1.2.2: a CLIENT_DATA carries every lease the server holds for that client on
//! that link, so the observation is `complete` (a lease the server reported before and now
//! omits is gone). The link comes from LQ_RELAY_DATA (or the query's link); a binding whose
//! link is unknown cannot be routed and is not turned into an observation.

use std::net::SocketAddr;
use std::sync::Arc;

use super::core::BulkBinding;
use crate::cache::{
    IaType, LeaseKey, Link, Observation, ObservedLease, RelayData, ServerId, Source, Timestamp,
};
use crate::wire::DhcpOption;

/// Why a binding did not become an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unusable {
    #[error("no link: neither LQ_RELAY_DATA nor the query names one")]
    NoLink,
    #[error("CLIENT_DATA without CLIENTID")]
    NoClientId,
    #[error("no SERVERID seen for the query")]
    NoServerId,
}

impl Unusable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unusable::NoLink => "no_link",
            Unusable::NoClientId => "no_client_id",
            Unusable::NoServerId => "no_server_id",
        }
    }
}

/// The cache input for `b`, received from `server`; `arrival` is `b.received` on the agent
/// clock (`AgentClock::at_std`).
pub fn observation(
    server: SocketAddr,
    b: &BulkBinding,
    arrival: Timestamp,
) -> Result<Observation, Unusable> {
    let link = b.link.ok_or(Unusable::NoLink)?;
    let duid = b.data.client_id().ok_or(Unusable::NoClientId)?;
    let server_duid = b.server_duid.as_ref().ok_or(Unusable::NoServerId)?;
    let address = match server.ip() {
        std::net::IpAddr::V6(a) => a,
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
    };
    let relay = b.data.relay_data().map(|r| {
        let opts = &r.relay.options;
        RelayData {
            peer_address: Some(r.relay.peer_address),
            interface_id: opts
                .interface_id_bytes()
                .map(|v| v.clone().into_boxed_slice()),
            remote_id: opts.iter().find_map(|o| match o {
                DhcpOption::RemoteId {
                    enterprise,
                    remote_id,
                } => Some([&enterprise.to_be_bytes()[..], remote_id].concat().into()),
                _ => None,
            }),
        }
    });
    let mut leases = Vec::new();
    for a in b.data.addresses() {
        leases.push(ObservedLease {
            key: LeaseKey::Address(a.addr),
            ia: IaType::Na,
            iaid: 0,
            preferred: a.preferred,
            valid: a.valid,
        });
    }
    for p in b.data.prefixes() {
        // A prefix with a length over 128 names no network: skip it, keep the rest.
        if let Ok(net) = p.prefix() {
            leases.push(ObservedLease {
                key: LeaseKey::Prefix(net),
                ia: IaType::Pd,
                iaid: 0,
                preferred: p.preferred,
                valid: p.valid,
            });
        }
    }
    Ok(Observation {
        client_duid: duid.to_vec().into_boxed_slice(),
        link: Link {
            address: link,
            interface: None,
        },
        relay,
        server: Arc::new(ServerId {
            duid: server_duid.to_vec().into_boxed_slice(),
            address,
        }),
        source: Source::Bulk,
        clt_time: b.data.clt_time(),
        base_time: b.data.options.lq_base_time(),
        srsn: b.srsn,
        complete: true,
        leases,
        arrival,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RelayMessage;
    use crate::wire::{ClientData, Duid, IaAddr, IaPrefix, LqRelayData, MessageType, Options};
    use std::net::Ipv6Addr;
    use std::time::Instant;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn client_data_becomes_a_complete_bulk_observation() {
        let mut relay =
            RelayMessage::new(MessageType::RELAY_FORW, 0, a("2001:db8:1::1"), a("fe80::7"));
        relay
            .options
            .push(DhcpOption::InterfaceId(b"sub1".to_vec()));
        relay.options.push(DhcpOption::RemoteId {
            enterprise: 9,
            remote_id: vec![1],
        });
        let data = ClientData {
            options: Options(vec![
                DhcpOption::ClientId(Duid::ll_ethernet([0xa, 0, 0, 0, 0, 7])),
                DhcpOption::IaAddr(IaAddr::new(a("2001:db8:1::7"), 10, 20)),
                DhcpOption::IaPrefix(IaPrefix::new("2001:db8:700::/56".parse().unwrap(), 30, 40)),
                DhcpOption::CltTime(3),
                DhcpOption::LqRelayData(Box::new(LqRelayData {
                    peer_address: a("2001:db8:1::1"),
                    relay,
                })),
            ]),
        };
        let b = BulkBinding {
            query: 1,
            server_duid: Some(Duid::ll_ethernet([2, 0, 0, 0, 5, 0x47])),
            link: Some(a("2001:db8:1::1")),
            peer_address: Some(a("fe80::7")),
            data,
            srsn: Some(9),
            received: Instant::now(),
        };
        let server: SocketAddr = "[2001:db8:ff::2]:547".parse().unwrap();
        let o = observation(server, &b, Timestamp::from_secs(1000)).unwrap();
        assert_eq!(o.source, Source::Bulk);
        assert!(o.complete);
        assert_eq!(o.link.address, a("2001:db8:1::1"));
        assert_eq!(o.server.address, a("2001:db8:ff::2"));
        assert_eq!(o.clt_time, Some(3));
        assert_eq!(o.srsn, Some(9));
        let r = o.relay.unwrap();
        assert_eq!(r.peer_address, Some(a("fe80::7")));
        assert_eq!(r.interface_id.as_deref(), Some(&b"sub1"[..]));
        assert_eq!(r.remote_id.as_deref(), Some(&[0, 0, 0, 9, 1][..]));
        assert_eq!(o.leases.len(), 2);
        assert_eq!(o.leases[0].key, LeaseKey::Address(a("2001:db8:1::7")));
        assert_eq!((o.leases[1].ia, o.leases[1].valid), (IaType::Pd, 40));
        let mut nolink = b.clone();
        nolink.link = None;
        assert_eq!(
            observation(server, &nolink, Timestamp::from_secs(1)).unwrap_err(),
            Unusable::NoLink
        );
    }
}
