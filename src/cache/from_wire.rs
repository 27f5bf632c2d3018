//! Turning the codec's CLIENT_DATA (RFC 5007 §4.1.2.2) into the cache's [`Observation`].
//!
//! CLIENT_DATA carries IAADDR and IAPREFIX options directly, not inside IA_NA/IA_PD, so the IAID
//! is not known (recorded as 0) and an address is taken to be an IA_NA address. The relay data
//! (LQ_RELAY_DATA, §4.1.2.4) holds the RELAY-FORW chain the server last saw; its outermost level
//! is this box's (the relay nearest the server) and alone gives the link-address, the
//! Interface-Id and Remote-Id that select the link, and the client's address (`peer-address`,
//! the delegated-prefix next hop). A level below it (a Lightweight DHCPv6 Relay Agent's,
//! RFC 6221) is kept as the access port; admission decides whether the link accepts it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use super::binding::{
    AccessPort, IaType, LeaseKey, Link, Observation, ObservedLease, RelayData, ServerId, Source,
    Timestamp,
};
use crate::time::Instant;
use crate::wire::{ClientData, Duid, IaPrefix, LqRelayData, Options, RelayChain, RelayLevel};

/// Why a CLIENT_DATA cannot become an observation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FromWireError {
    #[error("CLIENT_DATA without CLIENTID")]
    NoClientId,
    /// RFC 5007 §4.3.3: a CLIENT_DATA without CLT_TIME is silently discarded.
    #[error("CLIENT_DATA without CLT_TIME (RFC 5007 §4.3.3: discarded)")]
    NoCltTime,
}

impl FromWireError {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            FromWireError::NoClientId => "no_client_id",
            FromWireError::NoCltTime => "no_clt_time",
        }
    }
}

/// One OPTION_CLIENT_DATA (RFC 5007 §4.1.2.2) as a server sent it, with what the message
/// around it said: the one carrier the requestor (UDP, `requestor::ClientAnswer`) and a bulk
/// connection (TCP, inside `bulk::BulkBinding`) hand on, and what [`observation_from_reply`]
/// converts. Neither reader interprets the leases: this module is the one conversion, run
/// once per answer where it is read ([`observed_leases`] into `observed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAnswer {
    /// The CLIENT_DATA, with CLT_TIME (both readers discard one without, RFC 5007 §4.3.3).
    pub data: ClientData,
    /// `data`'s leases, taken out once by the reader that received it ([`observed_leases`]):
    /// the reader counts the skipped bad prefixes, and the observation, a bulk listing and
    /// `lqagent query` read the leases from here instead of walking `data` again.
    pub observed: ObservedLeases,
    /// OPTION_LQ_RELAY_DATA at the top level of the reply, beside CLIENT_DATA (Kea 3 puts it
    /// there over UDP; RFC 5007 and bulk replies put it inside CLIENT_DATA).
    pub top_relay_data: Option<LqRelayData>,
    /// OPTION_LQ_BASE_TIME at the top level of a UDP reply (the server's clock when it
    /// answered). A bulk connection maps it into its stamp instead and leaves this `None`.
    pub top_base_time: Option<u32>,
    /// The server reply sequence number of the message (`[leasequery] srsn_option`), if any.
    pub srsn: Option<u32>,
    /// The link-address the query asked about (`::`: none, or every link).
    pub link: Ipv6Addr,
    /// The answering server's SERVERID.
    pub server_duid: Duid,
    pub server: SocketAddr,
    /// When the message carrying it was read: lifetimes and CLT_TIME count from here (a bulk
    /// connection's stamp may put it earlier, see `bulk::BulkBinding::stamped`).
    pub received: Instant,
}

impl ClientAnswer {
    /// The relay data wherever the server put it: inside CLIENT_DATA, else at the top level.
    pub fn relay_data(&self) -> Option<&LqRelayData> {
        self.data.relay_data().or(self.top_relay_data.as_ref())
    }

    /// The link the client is on: this box's level of the relay data names it, else the link
    /// the query asked about; `None` when neither does.
    pub fn placed_link(&self) -> Option<Ipv6Addr> {
        self.relay_data()
            .and_then(|rd| rd.chain().link_address())
            .or(Some(self.link).filter(|l| !l.is_unspecified()))
    }

    /// The client's DUID (empty when the server sent none); a shared copy of the answer's.
    pub fn client_duid(&self) -> Duid {
        self.data.client_id().cloned().unwrap_or_default()
    }

    /// CLT_TIME as sent (0 only if the readers' check was bypassed).
    pub fn clt_time(&self) -> u32 {
        self.data.clt_time().unwrap_or(0)
    }

    /// The server's address as the cache keeps it (IPv4 mapped into IPv6).
    pub fn server_address(&self) -> Ipv6Addr {
        match self.server.ip() {
            IpAddr::V6(a) => a,
            IpAddr::V4(a) => a.to_ipv6_mapped(),
        }
    }
}

/// What the receiving side knows beyond the answer: which path asked, the link it asked about
/// with the interface known for it, and the arrival on the agent clock.
#[derive(Debug, Clone)]
pub(crate) struct ClientDataContext {
    pub source: Source,
    /// The link the query was about (used when the relay data does not name one; `::` if unknown).
    pub link: Link,
    pub arrival: Timestamp,
}

/// OPTION_REMOTE_ID's whole body, enterprise-number (4 bytes) then remote-id (RFC 4649 §3).
fn remote_id_of(level: &impl RelayLevel) -> Option<Box<[u8]>> {
    level.remote_id().map(|(enterprise, id)| {
        let mut v = enterprise.to_be_bytes().to_vec();
        v.extend_from_slice(id);
        v.into_boxed_slice()
    })
}

/// The cache's [`RelayData`] of a relay chain, snooped (borrowed) or from LQ_RELAY_DATA
/// (owned): peer-address, Interface-Id and Remote-Id of this box's level only, and the level
/// directly below it, if any, as the [`AccessPort`] (admission decides whether the link
/// accepts it and whether its peer-address becomes the next hop). Copied out only here, where
/// they are kept.
pub(crate) fn relay_data_of<L: RelayLevel>(chain: &RelayChain<L>) -> RelayData {
    let Some(ours) = chain.ours() else {
        return RelayData::default();
    };
    RelayData {
        peer_address: chain.peer_address(),
        interface_id: ours.interface_id().map(Box::from),
        remote_id: remote_id_of(&ours),
        access: access_of(chain),
    }
}

/// The level directly below this box's, as the [`AccessPort`] (see [`relay_data_of`]).
fn access_of<L: RelayLevel>(chain: &RelayChain<L>) -> Option<Box<AccessPort>> {
    let nonzero = |a: Ipv6Addr| Some(a).filter(|a| !a.is_unspecified());
    chain.below_ours().map(|below| {
        Box::new(AccessPort {
            levels: u8::try_from(chain.nested()).unwrap_or(u8::MAX),
            peer_address: nonzero(below.peer_address()),
            interface_id: below.interface_id().map(Box::from),
            remote_id: remote_id_of(&below),
        })
    })
}

/// The [`RelayData`] of a snooped exchange: the RELAY-REPL's chain (`chain`) over what its
/// RELAY-FORW gave (`forw`). This box's link/peer addresses and Interface-Id come from the
/// REPL, falling back on the FORW's; the Remote-Id and the levels below ours from the FORW
/// (only the forward direction is sure to carry them), falling back on the REPL's. The same
/// answer as merging two [`relay_data_of`]s field by field, but what the FORW already holds is
/// kept rather than copied out of the REPL again and dropped: a REPLY whose Interface-Id
/// echoes the FORW's (every relay's) costs no allocation for it.
pub(crate) fn relay_data_over<L: RelayLevel>(chain: &RelayChain<L>, forw: RelayData) -> RelayData {
    let Some(ours) = chain.ours() else {
        return forw;
    };
    let interface_id = match ours.interface_id() {
        Some(id) => match forw.interface_id {
            Some(kept) if *kept == *id => Some(kept),
            _ => Some(Box::from(id)),
        },
        None => forw.interface_id,
    };
    RelayData {
        peer_address: chain.peer_address().or(forw.peer_address),
        interface_id,
        remote_id: forw.remote_id.or_else(|| remote_id_of(&ours)),
        access: forw.access.or_else(|| access_of(chain)),
    }
}

/// The leases of a CLIENT_DATA: the one extractor every answer's leases come out of (on-demand,
/// confirmer, bulk, its listings, `lqagent query`). RFC 5007 §4.1.2.2 puts IAADDR / IAPREFIX
/// directly inside it (no IA, so the IAID is unknown: 0, an address taken as IA_NA); leases a
/// server wraps in IA_NA / IA_TA / IA_PD are taken too, with their IA type and IAID.
///
/// The one bad-prefix policy: an IAPREFIX that names no prefix (a length over 128, as only a
/// broken or hostile server sends) is skipped, and never voids the good leases beside it. It is
/// counted where the answer is received, from [`ObservedLeases::bad_prefixes`] of this same
/// walk, by the requestor and the bulk connection (`lqagent_replies_dropped_total{reason=
/// "bad_prefix"}`, `lqagent_bulk_discarded_total{reason="bad_prefix"}`), which keep the result
/// in [`ClientAnswer::observed`] so nothing walks the CLIENT_DATA a second time.
pub fn observed_leases(cd: &ClientData) -> ObservedLeases {
    let o = &cd.options;
    let mut bad_prefixes = 0;
    let mut leases = Vec::new();
    let mut push_addrs = |opts: &Options, ia: IaType, iaid: u32| {
        for a in opts.ia_addrs() {
            leases.push(ObservedLease {
                key: LeaseKey::Address(a.addr),
                ia,
                iaid,
                preferred: a.preferred,
                valid: a.valid,
            });
        }
    };
    push_addrs(o, IaType::Na, 0);
    for ia in o.ia_nas() {
        push_addrs(&ia.options, IaType::Na, ia.iaid);
    }
    for ia in o.ia_tas() {
        push_addrs(&ia.options, IaType::Ta, ia.iaid);
    }
    for (iaid, p) in prefixes(cd) {
        match p.prefix() {
            Ok(prefix) => leases.push(ObservedLease {
                key: LeaseKey::Prefix(prefix),
                ia: IaType::Pd,
                iaid,
                preferred: p.preferred,
                valid: p.valid,
            }),
            Err(_) => bad_prefixes += 1,
        }
    }
    ObservedLeases {
        leases,
        bad_prefixes,
    }
}

/// What [`observed_leases`] took out of one CLIENT_DATA.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedLeases {
    /// Every lease that names an address or a prefix, in the CLIENT_DATA's order.
    pub leases: Vec<ObservedLease>,
    /// How many IAPREFIX options named no prefix and were skipped (the bad-prefix policy):
    /// what the receiving side counts, and what keeps an answer from being `complete`.
    pub bad_prefixes: usize,
}

/// Every IAPREFIX of a CLIENT_DATA with its IAID: directly inside it (IAID 0) or in an IA_PD.
fn prefixes(cd: &ClientData) -> impl Iterator<Item = (u32, &IaPrefix)> {
    let o = &cd.options;
    let direct = o.ia_prefixes().map(|p| (0, p));
    let wrapped = o
        .ia_pds()
        .flat_map(|ia| ia.options.ia_prefixes().map(move |p| (ia.iaid, p)));
    direct.chain(wrapped)
}

/// The one conversion of a server's CLIENT_DATA into a cache observation, for UDP and bulk.
///
/// - Relay data wherever the server put it: inside CLIENT_DATA (RFC 5007, bulk), else at the
///   top level of the reply beside it (`top_relay`; Kea over UDP). Either way the outermost
///   level (this box's) names the link and gives the peer-address; a link other than
///   `ctx.link` drops the interface known for it.
/// - CLT_TIME is passed on as sent: merge rule R13 (`cache::merge`) decides what it means (an
///   ISC absolute time included), on every path alike.
/// - LQ_BASE_TIME (inside CLIENT_DATA, else `top_base_time`) is the server's clock when it
///   answered: merge uses it only as the offset between that clock and ours.
/// - `complete` is decided here, once, by the kind of answer (`ctx.source`): a UDP
///   LEASEQUERY-REPLY's CLIENT_DATA lists every lease of the client on that link (RFC 5007
///   §4.1.2.2), so it is complete; a bulk LEASEQUERY-DATA says nothing about leases it does not
///   carry (Kea 3 sends one CLIENT_DATA per lease), so it never is — only the end of the whole
///   bulk query speaks for what it left out (merge rule R16). An answer with a skipped bad
///   prefix ([`observed_leases`]) is not complete either: as with a lease admission refuses
///   (A2–A4), what could not be read never turns into the removal of a lease the client holds.
pub(crate) fn observation_from_reply(
    answer: &ClientAnswer,
    ctx: &ClientDataContext,
) -> Result<Observation, FromWireError> {
    let cd = &answer.data;
    let duid = cd.client_id().ok_or(FromWireError::NoClientId)?.clone();
    let clt = cd.clt_time().ok_or(FromWireError::NoCltTime)?;
    let ObservedLeases {
        leases,
        bad_prefixes,
    } = &answer.observed;
    let mut link = ctx.link.clone();
    let relay = answer.relay_data().map(|rd| {
        let chain = rd.chain();
        if let Some(a) = chain.link_address() {
            if a != link.address {
                // Another link than the one asked about: the interface we knew is not it.
                link.interface = None;
            }
            link.address = a;
        }
        relay_data_of(&chain)
    });
    Ok(Observation {
        client_duid: duid,
        link,
        relay,
        server: Arc::new(ServerId {
            duid: answer.server_duid.clone(),
            address: answer.server_address(),
        }),
        source: ctx.source,
        clt_time: Some(clt),
        base_time: cd.options.lq_base_time().or(answer.top_base_time),
        srsn: answer.srsn,
        complete: ctx.source != Source::Bulk && *bad_prefixes == 0,
        leases: leases.clone(),
        arrival: ctx.arrival,
        query_address: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::DhcpOption;

    pub(super) fn opt(code: u16, body: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    pub(super) fn a(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    /// CLIENT_DATA with CLIENTID, IAADDR, IAPREFIX, CLT_TIME and LQ_RELAY_DATA holding an LDRA
    /// level (link `::`, Interface-Id) inside a relay level that names the link.
    fn client_data(with_clt: bool) -> ClientData {
        let duid = [0, 3, 0, 1, 2, 0x42, 0, 0, 0, 7];
        let mut iaaddr = a("2001:db8:1::7").to_vec();
        iaaddr.extend_from_slice(&1800u32.to_be_bytes());
        iaaddr.extend_from_slice(&3600u32.to_be_bytes());
        let mut iapfx = 1800u32.to_be_bytes().to_vec();
        iapfx.extend_from_slice(&3600u32.to_be_bytes());
        iapfx.push(56);
        iapfx.extend_from_slice(&a("2001:db8:100::"));
        let mut ldra = vec![12, 0];
        ldra.extend_from_slice(&a("::"));
        ldra.extend_from_slice(&a("fe80::7"));
        ldra.extend(opt(18, b"port-3"));
        let mut relay = vec![12, 1];
        relay.extend_from_slice(&a("2001:db8:1::1"));
        relay.extend_from_slice(&a("2001:db8:1::2"));
        relay.extend(opt(9, &ldra));
        let mut lqrd = a("2001:db8:ffff::9").to_vec();
        lqrd.extend(relay);
        let mut body = opt(1, &duid);
        body.extend(opt(5, &iaaddr));
        body.extend(opt(26, &iapfx));
        if with_clt {
            body.extend(opt(46, &30u32.to_be_bytes()));
        }
        body.extend(opt(47, &lqrd));
        match DhcpOption::parse(&opt(45, &body)).unwrap() {
            DhcpOption::ClientData(cd) => cd,
            other => panic!("not CLIENT_DATA: {other:?}"),
        }
    }

    fn ctx() -> ClientDataContext {
        ClientDataContext {
            source: Source::Leasequery,
            link: Link {
                address: Ipv6Addr::UNSPECIFIED,
                interface: None,
            },
            arrival: Timestamp::from_secs(1_795_000_000),
        }
    }

    /// `cd` as a server at 2001:db8:ffff::1 answered it, with the top-level options given.
    fn answer(cd: &ClientData, top: Option<&LqRelayData>, base: Option<u32>) -> ClientAnswer {
        ClientAnswer {
            data: cd.clone(),
            observed: observed_leases(cd),
            top_relay_data: top.cloned(),
            top_base_time: base,
            srsn: None,
            link: Ipv6Addr::UNSPECIFIED,
            server_duid: vec![0, 1].into(),
            server: "[2001:db8:ffff::1]:547".parse().unwrap(),
            received: Instant::now(),
        }
    }

    fn from_reply(
        cd: &ClientData,
        top: Option<&LqRelayData>,
        base: Option<u32>,
        ctx: &ClientDataContext,
    ) -> Result<Observation, FromWireError> {
        observation_from_reply(&answer(cd, top, base), ctx)
    }

    #[test]
    fn client_data_becomes_a_complete_observation() {
        let o = from_reply(&client_data(true), None, None, &ctx()).unwrap();
        assert_eq!(&*o.client_duid, &[0, 3, 0, 1, 2, 0x42, 0, 0, 0, 7]);
        assert_eq!(o.clt_time, Some(30));
        assert!(o.complete);
        // The server as the carrier names it: SERVERID and address.
        assert_eq!(&*o.server.duid, &[0, 1]);
        assert_eq!(
            o.server.address,
            "2001:db8:ffff::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(o.leases.len(), 2);
        assert_eq!(
            o.leases[0].key,
            LeaseKey::Address("2001:db8:1::7".parse().unwrap())
        );
        assert_eq!(
            o.leases[1].key,
            LeaseKey::Prefix("2001:db8:100::/56".parse().unwrap())
        );
        assert_eq!((o.leases[1].preferred, o.leases[1].valid), (1800, 3600));
        // The outermost level is this box's: it alone names the link and gives the
        // peer-address and Interface-Id; the LDRA level below is kept as the access port.
        assert_eq!(o.link.address, "2001:db8:1::1".parse::<Ipv6Addr>().unwrap());
        let r = o.relay.unwrap();
        assert_eq!(r.peer_address, Some("2001:db8:1::2".parse().unwrap()));
        assert_eq!(r.interface_id, None);
        let access = r.access.expect("the LDRA level");
        assert_eq!(access.levels, 1);
        assert_eq!(access.peer_address, Some("fe80::7".parse().unwrap()));
        assert_eq!(access.interface_id.as_deref(), Some(&b"port-3"[..]));
    }

    #[test]
    fn an_inner_level_never_names_the_link() {
        // A subscriber's own RELAY-FORW inside ours, naming another link, next hop and port.
        let mut fake = vec![12, 0];
        fake.extend_from_slice(&a("2001:db8:2::1"));
        fake.extend_from_slice(&a("2001:db8:2::66"));
        fake.extend(opt(18, b"victim-port"));
        let mut ours = vec![12, 1];
        ours.extend_from_slice(&a("2001:db8:1::1"));
        ours.extend_from_slice(&a("fe80::9"));
        ours.extend(opt(18, b"sub0"));
        ours.extend(opt(9, &fake));
        let mut lqrd = a("fe80::9").to_vec();
        lqrd.extend(ours);
        let rd = match DhcpOption::parse(&opt(47, &lqrd)).unwrap() {
            DhcpOption::LqRelayData(rd) => *rd,
            other => panic!("not LQ_RELAY_DATA: {other:?}"),
        };
        let place = rd.chain();
        assert_eq!(place.link_address(), Some("2001:db8:1::1".parse().unwrap()));
        assert_eq!(place.peer_address(), Some("fe80::9".parse().unwrap()));
        assert_eq!(place.nested(), 1);
        let o = from_reply(&bare_client_data(5), Some(&rd), None, &ctx()).unwrap();
        assert_eq!(o.link.address, "2001:db8:1::1".parse::<Ipv6Addr>().unwrap());
        let r = o.relay.unwrap();
        assert_eq!(r.interface_id.as_deref(), Some(&b"sub0"[..]));
        assert_eq!(r.peer_address, Some("fe80::9".parse().unwrap()));
        let access = r.access.unwrap();
        assert_eq!(access.interface_id.as_deref(), Some(&b"victim-port"[..]));
    }

    /// CLIENT_DATA with a delegated prefix and no relay data inside, as Kea sends over UDP.
    fn bare_client_data(clt: u32) -> ClientData {
        let mut body = opt(1, &[0, 3, 0, 1, 2, 0x42, 0, 0, 0, 8]);
        let mut iaaddr = a("2001:db8:1::8").to_vec();
        iaaddr.extend_from_slice(&1800u32.to_be_bytes());
        iaaddr.extend_from_slice(&3600u32.to_be_bytes());
        body.extend(opt(5, &iaaddr));
        let mut iapfx = 1800u32.to_be_bytes().to_vec();
        iapfx.extend_from_slice(&3600u32.to_be_bytes());
        iapfx.push(56);
        iapfx.extend_from_slice(&a("2001:db8:200::"));
        body.extend(opt(26, &iapfx));
        body.extend(opt(46, &clt.to_be_bytes()));
        match DhcpOption::parse(&opt(45, &body)).unwrap() {
            DhcpOption::ClientData(cd) => cd,
            other => panic!("not CLIENT_DATA: {other:?}"),
        }
    }

    /// LQ_RELAY_DATA: one relay level on link 2001:db8:1::1 that saw the client at fe80::8,
    /// with a Remote-Id (enterprise 4491, "cm-8").
    fn top_level_relay_data() -> LqRelayData {
        let mut relay = vec![12, 0];
        relay.extend_from_slice(&a("2001:db8:1::1"));
        relay.extend_from_slice(&a("fe80::8"));
        let mut rid = 4491u32.to_be_bytes().to_vec();
        rid.extend_from_slice(b"cm-8");
        relay.extend(opt(37, &rid));
        let mut lqrd = a("2001:db8:1::1").to_vec();
        lqrd.extend(relay);
        match DhcpOption::parse(&opt(47, &lqrd)).unwrap() {
            DhcpOption::LqRelayData(rd) => *rd,
            other => panic!("not LQ_RELAY_DATA: {other:?}"),
        }
    }

    #[test]
    fn top_level_relay_data_gives_the_link_local_next_hop() {
        let rd = top_level_relay_data();
        let mut c = ctx();
        c.link = Link {
            address: "2001:db8:1::1".parse().unwrap(),
            interface: Some(Arc::from("sub0")),
        };
        let o = from_reply(&bare_client_data(5), Some(&rd), None, &c).unwrap();
        let r = o.relay.as_ref().expect("relay data from the top level");
        assert_eq!(r.peer_address, Some("fe80::8".parse().unwrap()));
        // Remote-Id stored as the whole option body, as the snooper stores it.
        let mut rid = 4491u32.to_be_bytes().to_vec();
        rid.extend_from_slice(b"cm-8");
        assert_eq!(r.remote_id.as_deref(), Some(&rid[..]));
        assert_eq!(o.link.interface.as_deref(), Some("sub0"), "same link kept");
        // Through the merge rules: the prefix routes via the link-local address (R11), exactly
        // as when the relay data sits inside CLIENT_DATA.
        let mut inside = bare_client_data(5);
        inside
            .options
            .push(DhcpOption::LqRelayData(Box::new(rd.clone())));
        let o2 = from_reply(&inside, None, None, &c).unwrap();
        assert_eq!(o.relay, o2.relay);
        assert_eq!(o.link, o2.link);
        let m = crate::cache::merge::merge(
            &Default::default(),
            &Default::default(),
            &o,
            &crate::cache::MergeConfig::default(),
        );
        let pfx = LeaseKey::Prefix("2001:db8:200::/56".parse().unwrap());
        let hop = m
            .changes
            .iter()
            .find(|ch| ch.key == pfx)
            .and_then(|ch| ch.new.as_ref())
            .and_then(|v| v.next_hop);
        assert_eq!(hop, Some("fe80::8".parse().unwrap()));
        // Relay data inside CLIENT_DATA wins over a top-level one.
        let o3 = from_reply(&client_data(true), Some(&rd), None, &ctx()).unwrap();
        assert_eq!(
            o3.relay.unwrap().peer_address,
            Some("2001:db8:1::2".parse().unwrap())
        );
    }

    #[test]
    fn clt_time_and_base_time_pass_through_for_merge_rule_r13() {
        // ISC dhcpd's absolute CLT_TIME is not filtered here: R13 decides, on every path.
        let o = from_reply(&bare_client_data(1_795_875_086), None, Some(7), &ctx()).unwrap();
        assert_eq!(o.clt_time, Some(1_795_875_086));
        assert_eq!(o.base_time, Some(7), "top-level LQ_BASE_TIME");
    }

    #[test]
    fn a_bad_prefix_is_skipped_and_counted_and_the_good_leases_stay() {
        // A hostile or broken server: a /129 beside a good address and a good /56, and one more
        // inside an IA_PD.
        let mut cd = bare_client_data(5);
        let bad = |len| IaPrefix {
            prefix_len: len,
            ..IaPrefix::new("2001:db8:300::/56".parse().unwrap(), 1800, 3600)
        };
        cd.options.push(DhcpOption::IaPrefix(bad(129)));
        let mut pd = crate::wire::Ia::new(9, 0, 0);
        pd.options.push(DhcpOption::IaPrefix(bad(200)));
        pd.options.push(DhcpOption::IaPrefix(IaPrefix::new(
            "2001:db8:400::/56".parse().unwrap(),
            1800,
            3600,
        )));
        cd.options.push(DhcpOption::IaPd(pd));
        assert_eq!(observed_leases(&cd).bad_prefixes, 2);
        let o = from_reply(&cd, None, None, &ctx()).unwrap();
        let keys: Vec<_> = o.leases.iter().map(|l| (l.key, l.iaid)).collect();
        assert_eq!(
            keys,
            [
                (LeaseKey::Address("2001:db8:1::8".parse().unwrap()), 0),
                (LeaseKey::Prefix("2001:db8:200::/56".parse().unwrap()), 0),
                (LeaseKey::Prefix("2001:db8:400::/56".parse().unwrap()), 9),
            ]
        );
        assert!(
            !o.complete,
            "a skipped lease: no removal inferred from this answer"
        );
        assert_eq!(observed_leases(&bare_client_data(5)).bad_prefixes, 0);
    }

    #[test]
    fn client_data_without_clt_time_is_refused() {
        let e = from_reply(&client_data(false), None, None, &ctx()).unwrap_err();
        assert_eq!(e, FromWireError::NoCltTime);
        assert_eq!(e.label(), "no_clt_time");
    }
}

#[cfg(test)]
mod relay_over_tests {
    use super::tests::{a, opt};
    use super::*;
    use crate::wire::{CheckedMessage, RelayChainView};

    /// A relay message of `kind` (12 FORW, 13 REPL) around a client REPLY: this box's level
    /// with or without Interface-Id and Remote-Id, and with or without an LDRA level below it.
    fn relayed(kind: u8, iface: Option<&[u8]>, remote: Option<&[u8]>, ldra: bool) -> Vec<u8> {
        let mut client = vec![7, 0, 0, 9];
        client.extend(opt(1, &[0, 3, 0, 1, 2, 0, 0, 0, 0, 9]));
        let inner = if ldra {
            let mut l = vec![kind, 0];
            l.extend_from_slice(&a("::"));
            l.extend_from_slice(&a("fe80::7"));
            l.extend(opt(18, b"port-3"));
            let mut rid = 9u32.to_be_bytes().to_vec();
            rid.extend_from_slice(b"olt");
            l.extend(opt(37, &rid));
            l.extend(opt(9, &client));
            l
        } else {
            client
        };
        let mut m = vec![kind, u8::from(ldra)];
        m.extend_from_slice(&a("2001:db8:1::1"));
        m.extend_from_slice(&a("fe80::2"));
        if let Some(i) = iface {
            m.extend(opt(18, i));
        }
        if let Some(r) = remote {
            let mut rid = 4491u32.to_be_bytes().to_vec();
            rid.extend_from_slice(r);
            m.extend(opt(37, &rid));
        }
        m.extend(opt(9, &inner));
        m
    }

    fn relay_of(bytes: &[u8]) -> RelayData {
        let msg = CheckedMessage::new(bytes).expect("a valid message");
        relay_data_of(&RelayChainView::of(msg))
    }

    /// `relay_data_over` is the field-by-field merge the classifier did before (the REPL's
    /// peer-address and Interface-Id over the FORW's, the FORW's Remote-Id and access port over
    /// the REPL's), for every mix of what each direction carries; and an Interface-Id the REPL
    /// echoes is the FORW's own, kept, not a fresh copy.
    #[test]
    fn the_reply_over_its_forward_is_the_old_field_by_field_merge() {
        let ids: [Option<&[u8]>; 3] = [None, Some(b"sub0"), Some(b"sub1")];
        let mut forws = vec![RelayData::default()];
        let mut repls = Vec::new();
        for iface in ids {
            for remote in ids {
                for ldra in [false, true] {
                    forws.push(relay_of(&relayed(12, iface, remote, ldra)));
                    repls.push(relayed(13, iface, remote, ldra));
                }
            }
        }
        let mut checked = 0;
        for repl in &repls {
            let chain = RelayChainView::of(CheckedMessage::new(repl).unwrap());
            for forw in &forws {
                let mut want = relay_data_of(&chain);
                let f = forw.clone();
                want.peer_address = want.peer_address.or(f.peer_address);
                want.interface_id = want.interface_id.or(f.interface_id);
                want.remote_id = f.remote_id.or(want.remote_id);
                want.access = f.access.or(want.access);
                let got = relay_data_over(&chain, forw.clone());
                assert_eq!(got, want, "REPL {repl:?} over FORW {forw:?}");
                checked += 1;
                // The pointer of what was passed in: the same bytes, not a copy of them.
                let f = forw.clone();
                let passed = f.interface_id.as_deref().map(<[u8]>::as_ptr);
                let got = relay_data_over(&chain, f);
                if got.interface_id.is_some() && got.interface_id == forw.interface_id {
                    assert_eq!(
                        got.interface_id.as_deref().map(<[u8]>::as_ptr),
                        passed,
                        "the FORW's Interface-Id is kept, not copied again"
                    );
                }
            }
        }
        assert_eq!(checked, 18 * 19);
    }
}
