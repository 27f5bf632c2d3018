//! Stage two: the file's strings and integers turned into typed values, every range and
//! cross-reference checked, every error naming its key path. Also the way back ([`to_file`]) for
//! printing the effective configuration.

use std::collections::HashSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use super::file::{self, File};
use super::{
    BulkSection, Config, ConfigError, ControlSection, IdentitySection, LeasequerySection,
    LimitsSection, LinkConfig, LogFormat, LogSection, MetricsSection, RemoteId, RequestorSection,
    RoutesSection, Server, ServerPolicy, SnoopSection, TriggerSection,
};
use crate::prefix::Ipv6Prefix;
use crate::time::Duration;
use crate::wire::{Duid, LeasequeryType};

/// Bounds that keep a config from asking for unbounded tables.
const MAX_SERVERS: usize = 16;
const MAX_LINKS: usize = 4096;
const MAX_PREFIXES_PER_LINK: usize = 256;
/// A DUID is a 2-octet type plus at most 128 octets (RFC 8415 section 11.1).
const DUID_LEN: (usize, usize) = (3, 130);
/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

type Result<T> = std::result::Result<T, ConfigError>;

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Stage one: TOML → [`File`], with the key path of any type error or unknown key.
pub(super) fn parse_file(text: &str) -> Result<File> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = match e.path().to_string() {
            p if p == "." || p.is_empty() => "(top level)".to_string(),
            p => p,
        };
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        ConfigError::Syntax {
            key,
            message: inner.message().trim().to_string(),
            line,
        }
    })
}

fn range(key: &str, v: u64, lo: u64, hi: u64) -> Result<u64> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(key, format!("{v} is out of range {lo}..={hi}")))
    }
}

fn secs(key: &str, v: u64, lo: u64, hi: u64) -> Result<Duration> {
    range(key, v, lo, hi).map(Duration::from_secs)
}

fn ipv6(key: &str, s: &str) -> Result<Ipv6Addr> {
    s.trim()
        .parse()
        .map_err(|_| invalid(key, format!("not an IPv6 address: {s:?}")))
}

fn hex_bytes(key: &str, s: &str, (lo, hi): (usize, usize)) -> Result<Vec<u8>> {
    let digits: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&digits).map_err(|_| {
        invalid(
            key,
            format!("not hex octets (like 000300010242ac110002 or 00:03:00:01:...): {s:?}"),
        )
    })?;
    if !(lo..=hi).contains(&bytes.len()) {
        return Err(invalid(
            key,
            format!("{} octets, want {lo}..={hi}", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// Linux `dev_valid_name`: 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
fn interface(key: &str, s: &str) -> Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(s.to_string())
    } else {
        Err(invalid(
            key,
            format!("not a valid interface name (1-15 bytes, no '/', ':' or spaces): {s:?}"),
        ))
    }
}

fn label(key: &str, s: &str) -> Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(invalid(
            key,
            format!("want 1-64 characters of [A-Za-z0-9._:-]: {s:?}"),
        ))
    }
}

fn absolute(key: &str, s: &str) -> Result<PathBuf> {
    let p = PathBuf::from(s);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(invalid(key, format!("not an absolute path: {s:?}")))
    }
}

/// Stage two: [`File`] → [`Config`].
pub(super) fn validate(f: &File) -> Result<Config> {
    let identity = identity(&f.identity)?;
    let (policy, requestor) = requestor(&f.requestor)?;
    let links = links(&f.links, f.trigger.enabled)?;
    let snoop = snoop(&f.snoop)?;
    link_interfaces(&links, &snoop)?;
    let bulk = bulk(&f.bulk, &identity)?;
    let (limits, routes) = (limits(&f.limits)?, routes(&f.routes)?);
    caps_within_routes(&limits, &routes)?;
    Ok(Config {
        state_dir: absolute("state_dir", &f.state_dir)?,
        servers: servers(&f.servers)?,
        policy,
        identity,
        requestor,
        limits,
        bulk,
        routes,
        snoop,
        trigger: trigger(&f.trigger)?,
        links,
        metrics: MetricsSection {
            listen: f.metrics.listen.trim().parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "metrics.listen",
                    format!(
                        "not a socket address (want IP:PORT, [IPv6]:PORT): {:?}",
                        f.metrics.listen
                    ),
                )
            })?,
        },
        control: control(&f.control)?,
        log: log(&f.log)?,
        leasequery: leasequery(&f.leasequery)?,
    })
}

fn leasequery(f: &file::Leasequery) -> Result<LeasequerySection> {
    if let Some(code) = f.srsn_option {
        let known = crate::wire::OptionCode(code).name();
        if code == 0 || known.is_some() {
            return Err(invalid(
                "leasequery.srsn_option",
                format!(
                    "{code} is {}, not free for a local extension",
                    known.unwrap_or("reserved")
                ),
            ));
        }
    }
    Ok(LeasequerySection {
        srsn_option: f.srsn_option,
    })
}

fn servers(list: &[file::Server]) -> Result<Vec<Server>> {
    if list.is_empty() {
        return Err(invalid(
            "servers",
            "at least one [[servers]] entry with an address is required",
        ));
    }
    if list.len() > MAX_SERVERS {
        return Err(invalid(
            "servers",
            format!("{} servers, at most {MAX_SERVERS}", list.len()),
        ));
    }
    let mut out: Vec<Server> = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let key = format!("servers[{i}].address");
        let address = ipv6(&key, &s.address)?;
        if address.is_unspecified() {
            return Err(invalid(key, "the unspecified address :: is not a server"));
        }
        if address.is_multicast() {
            return Err(invalid(
                key,
                "a multicast address never works: a reply comes from the server's unicast \
                 address, and only replies from the address queried are accepted",
            ));
        }
        if address.is_unicast_link_local() {
            return Err(invalid(
                key,
                "a link-local address (fe80::/10) has no interface to go out of; use the \
                 server's global or unique-local address",
            ));
        }
        if let Some(j) = out.iter().position(|o| o.address == address) {
            return Err(invalid(key, format!("same address as servers[{j}]")));
        }
        let name = match &s.name {
            Some(n) => label(&format!("servers[{i}].name"), n)?,
            None => address.to_string(),
        };
        out.push(Server {
            address,
            name,
            complete_answers: s.complete_answers,
        });
    }
    Ok(out)
}

fn identity(f: &file::Identity) -> Result<IdentitySection> {
    Ok(IdentitySection {
        client_duid: f
            .client_duid
            .as_deref()
            .map(|s| hex_bytes("identity.client_duid", s, DUID_LEN).map(Duid::from))
            .transpose()?,
        relay_duid: f
            .relay_duid
            .as_deref()
            .map(|s| hex_bytes("identity.relay_duid", s, DUID_LEN).map(Duid::from))
            .transpose()?,
    })
}

fn requestor(f: &file::Requestor) -> Result<(ServerPolicy, RequestorSection)> {
    let policy = match f.policy.as_str() {
        "failover" => ServerPolicy::Failover,
        "parallel" => ServerPolicy::Parallel,
        other => {
            return Err(invalid(
                "requestor.policy",
                format!("want \"failover\" or \"parallel\", not {other:?}"),
            ));
        }
    };
    let timeout = secs("requestor.timeout_secs", f.timeout_secs, 1, 10)?;
    let max_timeout = secs("requestor.max_timeout_secs", f.max_timeout_secs, 1, 10)?;
    if max_timeout < timeout {
        return Err(invalid(
            "requestor.max_timeout_secs",
            format!(
                "{} is below requestor.timeout_secs ({})",
                f.max_timeout_secs, f.timeout_secs
            ),
        ));
    }
    let attempts = range("requestor.attempts", f.attempts, 1, 10)? as u8;
    let source_address = match &f.source_address {
        None => None,
        Some(s) => {
            let a = ipv6("requestor.source_address", s)?;
            if a.is_unspecified() || a.is_multicast() {
                return Err(invalid(
                    "requestor.source_address",
                    format!("{a} cannot be a source address (unset it to let the kernel choose)"),
                ));
            }
            Some(a)
        }
    };
    Ok((
        policy,
        RequestorSection {
            timeout,
            max_timeout,
            attempts,
            source_address,
        },
    ))
}

fn limits(f: &file::Limits) -> Result<LimitsSection> {
    let global_qps = range("limits.global_qps", f.global_qps, 1, 100_000)? as u32;
    let per_link_qps = range("limits.per_link_qps", f.per_link_qps, 1, 100_000)? as u32;
    if per_link_qps > global_qps {
        return Err(invalid(
            "limits.per_link_qps",
            format!("{per_link_qps} is above limits.global_qps ({global_qps})"),
        ));
    }
    let max_bindings = range("limits.max_bindings", f.max_bindings, 1, MAX_CAP_BINDINGS)?;
    let max_bindings_per_link = range(
        "limits.max_bindings_per_link",
        f.max_bindings_per_link,
        1,
        MAX_CAP_BINDINGS,
    )?;
    if max_bindings_per_link > max_bindings {
        return Err(invalid(
            "limits.max_bindings_per_link",
            format!("{max_bindings_per_link} is above limits.max_bindings ({max_bindings})"),
        ));
    }
    let max_bindings_per_interface = range(
        "limits.max_bindings_per_interface",
        f.max_bindings_per_interface,
        1,
        MAX_CAP_BINDINGS,
    )? as usize;
    let (max_bindings, max_bindings_per_link) =
        (max_bindings as usize, max_bindings_per_link as usize);
    Ok(LimitsSection {
        global_qps,
        per_link_qps,
        pending_max: range("limits.pending_max", f.pending_max, 1, 1_000_000)? as usize,
        negative_ttl: secs("limits.negative_ttl_secs", f.negative_ttl_secs, 0, 3600)?,
        max_prefixes_per_client: range(
            "limits.max_prefixes_per_client",
            f.max_prefixes_per_client,
            1,
            MAX_CAP_PER_CLIENT,
        )? as usize,
        max_addresses_per_client: range(
            "limits.max_addresses_per_client",
            f.max_addresses_per_client,
            1,
            MAX_CAP_PER_CLIENT,
        )? as usize,
        max_bindings_per_link,
        max_bindings_per_interface,
        max_bindings,
    })
}

/// Every binding is a route: a cap above `routes.max_routes` would admit bindings whose
/// routes the installer refuses (subscribers cached but without service), so each of the
/// per-link, per-interface and total caps must fit under it.
fn caps_within_routes(l: &LimitsSection, r: &RoutesSection) -> Result<()> {
    for (key, cap) in [
        ("limits.max_bindings", l.max_bindings),
        ("limits.max_bindings_per_link", l.max_bindings_per_link),
        (
            "limits.max_bindings_per_interface",
            l.max_bindings_per_interface,
        ),
    ] {
        if cap > r.max_routes {
            return Err(invalid(
                key,
                format!(
                    "{cap} is above routes.max_routes ({}): bindings past it would get no route",
                    r.max_routes
                ),
            ));
        }
    }
    Ok(())
}

/// Most leases one client may be allowed: a client holding more is an attack or a bug, and a
/// cap above it protects nothing.
const MAX_CAP_PER_CLIENT: u64 = 65_536;
/// Most bindings the cache may be allowed in total (~250 bytes each: 25 GB).
const MAX_CAP_BINDINGS: u64 = 100_000_000;

/// The bulk query types, by their one name (`relay_id`, as in the metrics), or by the older
/// spelling with a hyphen (`relay-id`) that configurations in the field were written with.
fn bulk_query(s: &str) -> Option<LeasequeryType> {
    [
        LeasequeryType::RelayId,
        LeasequeryType::LinkAddress,
        LeasequeryType::RemoteId,
    ]
    .into_iter()
    .find(|t| s == t.label() || s == t.label().replace('_', "-"))
}

fn bulk(f: &file::Bulk, id: &IdentitySection) -> Result<BulkSection> {
    let mut queries = Vec::new();
    for (i, q) in f.queries.iter().enumerate() {
        let key = format!("bulk.queries[{i}]");
        let Some(q) = bulk_query(q) else {
            return Err(invalid(
                key,
                format!("want \"relay_id\", \"link_address\" or \"remote_id\", not {q:?}"),
            ));
        };
        if queries.contains(&q) {
            return Err(invalid(key, format!("{:?} listed twice", q.label())));
        }
        queries.push(q);
    }
    let mut remote_ids = Vec::new();
    for (i, r) in f.remote_ids.iter().enumerate() {
        remote_ids.push(RemoteId {
            enterprise: range(
                &format!("bulk.remote_ids[{i}].enterprise"),
                r.enterprise,
                0,
                u64::from(u32::MAX),
            )? as u32,
            id: hex_bytes(&format!("bulk.remote_ids[{i}].id"), &r.id, (1, 128))?,
        });
    }
    if f.enabled {
        if queries.is_empty() {
            return Err(invalid(
                "bulk.queries",
                "bulk is enabled but no query kind is listed",
            ));
        }
        if queries.contains(&LeasequeryType::RelayId) && id.relay_duid.is_none() {
            return Err(invalid(
                "bulk.queries",
                "\"relay_id\" needs identity.relay_duid",
            ));
        }
        if queries.contains(&LeasequeryType::RemoteId) && remote_ids.is_empty() {
            return Err(invalid(
                "bulk.queries",
                "\"remote_id\" needs at least one bulk.remote_ids entry",
            ));
        }
    }
    Ok(BulkSection {
        enabled: f.enabled,
        queries,
        attempts: range("bulk.attempts", f.attempts, 1, 1000)? as u16,
        connect_timeout: secs("bulk.connect_timeout_secs", f.connect_timeout_secs, 1, 60)?,
        data_timeout: secs("bulk.data_timeout_secs", f.data_timeout_secs, 1, 3600)?,
        pipeline_depth: range("bulk.pipeline_depth", f.pipeline_depth, 1, 16)? as u8,
        remote_ids,
        max_connections: range("bulk.max_connections", f.max_connections, 1, 1024)? as u16,
    })
}

fn routes(f: &file::Routes) -> Result<RoutesSection> {
    let table = range("routes.table", f.table, 1, u64::from(u32::MAX))? as u32;
    if table == 255 {
        return Err(invalid(
            "routes.table",
            "255 is the kernel's local table; pick 254 (main) or your own",
        ));
    }
    Ok(RoutesSection {
        table,
        metric: range("routes.metric", f.metric, 0, u64::from(u32::MAX))? as u32,
        // 0..=4 are the kernel's own (unspec, redirect, kernel, boot, static).
        protocol: route_protocol(f.protocol)?,
        mirror_expiry: f.mirror_expiry,
        reconcile_interval: secs(
            "routes.reconcile_interval_secs",
            f.reconcile_interval_secs,
            1,
            86_400,
        )?,
        dry_run: f.dry_run,
        unreachable_aggregates: f.unreachable_aggregates,
        inherit_grace: secs("routes.inherit_grace_secs", f.inherit_grace_secs, 0, 86_400)?,
        max_routes: range("routes.max_routes", f.max_routes, 1, MAX_CAP_BINDINGS)? as usize,
    })
}

/// `routes.protocol`: in range, and not a number Linux or a routing daemon uses (the host's own
/// `rt_protos` files are read later, by [`Config::check_host`](super::Config::check_host)).
fn route_protocol(n: u64) -> Result<u8> {
    // 0..=4 are the kernel's own (unspec, redirect, kernel, boot, static).
    let n = range("routes.protocol", n, 5, 255)? as u8;
    match super::host::well_known_protocol(n) {
        Some(name) => Err(invalid(
            "routes.protocol",
            format!(
                "{n} is {name:?}'s route protocol: reconcile deletes every route of this protocol \
                 it did not make, so it would delete that daemon's routes; pick an unused number \
                 (default 211)"
            ),
        )),
        None => Ok(n),
    }
}

fn snoop(f: &file::Snoop) -> Result<SnoopSection> {
    let mut interfaces: Vec<String> = Vec::new();
    for (i, name) in f.interfaces.iter().enumerate() {
        let key = format!("snoop.interfaces[{i}]");
        let name = interface(&key, name)?;
        if interfaces.contains(&name) {
            return Err(invalid(key, format!("{name:?} listed twice")));
        }
        interfaces.push(name);
    }
    let mut trusted_sources = Vec::new();
    for (i, a) in f.trusted_sources.iter().enumerate() {
        let key = format!("snoop.trusted_sources[{i}]");
        let a = ipv6(&key, a)?;
        if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
            return Err(invalid(
                key,
                "must be a unicast address of a relay or server",
            ));
        }
        trusted_sources.push(a);
    }
    Ok(SnoopSection {
        interfaces,
        trusted_sources,
        spoof_guard: f.spoof_guard,
    })
}

fn trigger(f: &file::Trigger) -> Result<TriggerSection> {
    if f.enforcement && !f.enabled {
        return Err(invalid(
            "trigger.enforcement",
            "enforcement needs trigger.enabled = true",
        ));
    }
    Ok(TriggerSection {
        enabled: f.enabled,
        nflog_group: range("trigger.nflog_group", f.nflog_group, 0, 65_535)? as u16,
        enforcement: f.enforcement,
        // Absolute: `PATH` is the environment's to choose, and an `nft` earlier in it would
        // be handed the firewall.
        nft_path: absolute("trigger.nft_path", &f.nft_path)?,
    })
}

/// Refuse a subscriber prefix that overlaps one of another link: a lease in the overlap could
/// be either link's, and its route would go out of the wrong interface. Prefixes are nested or
/// disjoint, so one sorted sweep with a stack of enclosing prefixes finds every overlap.
fn no_overlap_between_links(links: &[LinkConfig]) -> Result<()> {
    let mut all: Vec<(Ipv6Prefix, usize, usize)> = links
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            l.subscriber_prefixes
                .iter()
                .enumerate()
                .map(move |(k, p)| (*p, i, k))
        })
        .collect();
    all.sort_by_key(|(p, _, _)| (p.addr(), p.len()));
    let mut open: Vec<(Ipv6Prefix, usize, usize)> = Vec::new();
    for (p, i, k) in all {
        while open.last().is_some_and(|(o, _, _)| !o.covers(&p)) {
            open.pop();
        }
        if let Some(&(o, j, m)) = open.iter().find(|(_, j, _)| *j != i) {
            // Name the later link's key, the earlier one in the message.
            let ((fi, fk, fp), (si, sk, sp)) = if j < i {
                ((j, m, o), (i, k, p))
            } else {
                ((i, k, p), (j, m, o))
            };
            return Err(invalid(
                format!("links[{si}].subscriber_prefixes[{sk}]"),
                format!(
                    "{sp} overlaps {fp} of links[{fi}].subscriber_prefixes[{fk}]: a lease in the \
                     overlap could be on either link and its route would point out of the wrong \
                     interface"
                ),
            ));
        }
        open.push((p, i, k));
    }
    Ok(())
}

/// Shortest subscriber prefix: a /32 is a whole LIR allocation; anything shorter (`::/0`!) would
/// let admission take any address a relayed message names as a subscriber's.
pub(crate) const SHORTEST_SUBSCRIBER_PREFIX: u8 = 32;

/// A subscriber prefix must be global unicast and at least a /32: the trust boundary admits any
/// lease inside it, so `::/0` would admit every /128 — this box's, its servers', anyone's.
fn subscriber_prefix(key: &str, p: Ipv6Prefix) -> Result<()> {
    if p.len() < SHORTEST_SUBSCRIBER_PREFIX {
        return Err(invalid(
            key,
            format!(
                "{p} is shorter than /{SHORTEST_SUBSCRIBER_PREFIX}: it would admit addresses far \
                 beyond any subscriber link"
            ),
        ));
    }
    // RFC 4291 §2.4: global unicast is everything but these (ULAs count as global scope). Each
    // is at most 10 bits long, so a prefix of /32 or longer lies wholly inside one or outside.
    let first = p.addr().segments()[0];
    let what = match first {
        f if f & 0xff00 == 0 => Some("reserved (::/8: unspecified, loopback, IPv4-mapped)"),
        f if f & 0xffc0 == 0xfe80 => Some("link-local (fe80::/10)"),
        f if f & 0xffc0 == 0xfec0 => Some("site-local (fec0::/10, deprecated)"),
        f if f & 0xff00 == 0xff00 => Some("multicast (ff00::/8)"),
        _ => None,
    };
    match what {
        Some(what) => Err(invalid(
            key,
            format!("{p} is not a global unicast prefix: it is {what}"),
        )),
        None => Ok(()),
    }
}

/// A subscriber link's interface is where its routes go and where the trigger treats traffic
/// as a subscriber's: the snooped (server-facing) uplink would route subscribers' addresses
/// upstream and make the servers "unknown sources", and `lo` is no link at all.
fn link_interfaces(links: &[LinkConfig], snoop: &SnoopSection) -> Result<()> {
    for (i, l) in links.iter().enumerate() {
        let key = format!("links[{i}].interface");
        if l.interface == "lo" {
            return Err(invalid(key, "\"lo\" (loopback) is not a subscriber link"));
        }
        if let Some(j) = snoop.interfaces.iter().position(|s| *s == l.interface) {
            return Err(invalid(
                key,
                format!(
                    "{:?} is snoop.interfaces[{j}], the server-facing side; a subscriber link \
                     is a different interface",
                    l.interface
                ),
            ));
        }
    }
    Ok(())
}

fn links(list: &[file::LinkSection], trigger_on: bool) -> Result<Vec<LinkConfig>> {
    if list.len() > MAX_LINKS {
        return Err(invalid(
            "links",
            format!("{} links, at most {MAX_LINKS}", list.len()),
        ));
    }
    let mut out: Vec<LinkConfig> = Vec::with_capacity(list.len());
    let mut names = HashSet::new();
    for (i, l) in list.iter().enumerate() {
        let name = label(&format!("links[{i}].name"), &l.name)?;
        if !names.insert(name.clone()) {
            return Err(invalid(
                format!("links[{i}].name"),
                format!("{name:?} is used by another link"),
            ));
        }
        let key = format!("links[{i}].link_address");
        let link_address = ipv6(&key, &l.link_address)?;
        if link_address.is_unspecified() || link_address.is_multicast() {
            return Err(invalid(
                key,
                "must be a unicast address of the link (RFC 5007 section 4.1.2.1)",
            ));
        }
        let interface_id = match &l.interface_id {
            Some(s) => Some(interface_id(&format!("links[{i}].interface_id"), s)?),
            None => None,
        };
        // Links may share a link-address (unnumbered subscriber VLANs) when the relay's
        // Interface-Id tells them apart: each needs its own, or one of them none (the fallback).
        if let Some(j) = out.iter().position(|o| {
            o.link_address == link_address
                && (o.interface_id == interface_id
                    || o.interface_id.is_none() && interface_id.is_none())
        }) {
            return Err(invalid(
                key,
                format!(
                    "same link_address as links[{j}]; links sharing one need distinct interface_id"
                ),
            ));
        }
        let [dmin, dmax] = l.delegated_length;
        if dmin < crate::admission::SHORTEST_DELEGATED_LENGTH || dmin > dmax || dmax > 128 {
            return Err(invalid(
                format!("links[{i}].delegated_length"),
                format!(
                    "[min, max] with {} <= min <= max <= 128",
                    crate::admission::SHORTEST_DELEGATED_LENGTH
                ),
            ));
        }
        if l.subscriber_prefixes.len() > MAX_PREFIXES_PER_LINK {
            return Err(invalid(
                format!("links[{i}].subscriber_prefixes"),
                format!("at most {MAX_PREFIXES_PER_LINK} prefixes"),
            ));
        }
        let mut subscriber_prefixes = Vec::with_capacity(l.subscriber_prefixes.len());
        for (k, p) in l.subscriber_prefixes.iter().enumerate() {
            let key = format!("links[{i}].subscriber_prefixes[{k}]");
            let p: Ipv6Prefix = p
                .trim()
                .parse()
                .map_err(|e| invalid(&key, format!("{e}")))?;
            subscriber_prefix(&key, p)?;
            subscriber_prefixes.push(p);
        }
        if l.trigger && trigger_on && subscriber_prefixes.is_empty() {
            return Err(invalid(
                format!("links[{i}].subscriber_prefixes"),
                "a link with trigger = true needs at least one subscriber prefix",
            ));
        }
        out.push(LinkConfig {
            name,
            interface: interface(&format!("links[{i}].interface"), &l.interface)?,
            link_address,
            subscriber_prefixes,
            trigger: l.trigger,
            delegated_length: (dmin, dmax),
            interface_id,
            ldra: l.ldra,
        });
    }
    no_overlap_between_links(&out)?;
    Ok(out)
}

fn control(f: &file::Control) -> Result<ControlSection> {
    let socket = absolute("control.socket", &f.socket)?;
    if f.socket.len() > MAX_SOCKET_PATH {
        return Err(invalid(
            "control.socket",
            format!(
                "{} bytes, a Unix socket path has at most {MAX_SOCKET_PATH}",
                f.socket.len()
            ),
        ));
    }
    let show_group = match &f.show_group {
        Some(g) => Some(label("control.show_group", g)?),
        None => None,
    };
    Ok(ControlSection { socket, show_group })
}

fn log(f: &file::Log) -> Result<LogSection> {
    let format = match f.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "log.format",
                format!("want \"text\" or \"json\", not {other:?}"),
            ));
        }
    };
    tracing_subscriber::EnvFilter::builder()
        .parse(&f.level)
        .map_err(|e| {
            invalid(
                "log.level",
                format!("not a tracing filter ({e}): {:?}", f.level),
            )
        })?;
    Ok(LogSection {
        format,
        level: f.level.clone(),
    })
}

/// The way back, for printing: every value as the file would spell it.
pub(super) fn to_file(c: &Config) -> File {
    File {
        state_dir: c.state_dir.display().to_string(),
        identity: file::Identity {
            client_duid: c.identity.client_duid.as_ref().map(hex::encode),
            relay_duid: c.identity.relay_duid.as_ref().map(hex::encode),
        },
        requestor: file::Requestor {
            policy: c.policy.label().to_string(),
            timeout_secs: c.requestor.timeout.as_secs(),
            max_timeout_secs: c.requestor.max_timeout.as_secs(),
            attempts: c.requestor.attempts.into(),
            source_address: c.requestor.source_address.map(|a| a.to_string()),
        },
        limits: file::Limits {
            global_qps: c.limits.global_qps.into(),
            per_link_qps: c.limits.per_link_qps.into(),
            pending_max: c.limits.pending_max as u64,
            negative_ttl_secs: c.limits.negative_ttl.as_secs(),
            max_prefixes_per_client: c.limits.max_prefixes_per_client as u64,
            max_addresses_per_client: c.limits.max_addresses_per_client as u64,
            max_bindings_per_link: c.limits.max_bindings_per_link as u64,
            max_bindings_per_interface: c.limits.max_bindings_per_interface as u64,
            max_bindings: c.limits.max_bindings as u64,
        },
        bulk: file::Bulk {
            enabled: c.bulk.enabled,
            queries: c
                .bulk
                .queries
                .iter()
                .map(|q| q.label().to_string())
                .collect(),
            attempts: c.bulk.attempts.into(),
            connect_timeout_secs: c.bulk.connect_timeout.as_secs(),
            data_timeout_secs: c.bulk.data_timeout.as_secs(),
            pipeline_depth: c.bulk.pipeline_depth.into(),
            max_connections: c.bulk.max_connections.into(),
            remote_ids: c
                .bulk
                .remote_ids
                .iter()
                .map(|r| file::RemoteId {
                    enterprise: r.enterprise.into(),
                    id: hex::encode(&r.id),
                })
                .collect(),
        },
        routes: file::Routes {
            table: c.routes.table.into(),
            metric: c.routes.metric.into(),
            protocol: c.routes.protocol.into(),
            mirror_expiry: c.routes.mirror_expiry,
            reconcile_interval_secs: c.routes.reconcile_interval.as_secs(),
            dry_run: c.routes.dry_run,
            unreachable_aggregates: c.routes.unreachable_aggregates,
            inherit_grace_secs: c.routes.inherit_grace.as_secs(),
            max_routes: c.routes.max_routes as u64,
        },
        snoop: file::Snoop {
            interfaces: c.snoop.interfaces.clone(),
            trusted_sources: c
                .snoop
                .trusted_sources
                .iter()
                .map(|a| a.to_string())
                .collect(),
            spoof_guard: c.snoop.spoof_guard,
        },
        trigger: file::Trigger {
            enabled: c.trigger.enabled,
            nflog_group: c.trigger.nflog_group.into(),
            enforcement: c.trigger.enforcement,
            nft_path: c.trigger.nft_path.to_string_lossy().into_owned(),
        },
        metrics: file::Metrics {
            listen: c.metrics.listen.to_string(),
        },
        control: file::Control {
            socket: c.control.socket.display().to_string(),
            show_group: c.control.show_group.clone(),
        },
        log: file::Log {
            format: c.log.format.label().to_string(),
            level: c.log.level.clone(),
        },
        leasequery: file::Leasequery {
            srsn_option: c.leasequery.srsn_option,
        },
        servers: c
            .servers
            .iter()
            .map(|s| file::Server {
                address: s.address.to_string(),
                name: Some(s.name.clone()),
                complete_answers: s.complete_answers,
            })
            .collect(),
        links: c
            .links
            .iter()
            .map(|l| file::LinkSection {
                name: l.name.clone(),
                interface: l.interface.clone(),
                link_address: l.link_address.to_string(),
                subscriber_prefixes: l
                    .subscriber_prefixes
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                trigger: l.trigger,
                delegated_length: [l.delegated_length.0, l.delegated_length.1],
                interface_id: l.interface_id.as_ref().map(|id| interface_id_text(id)),
                ldra: l.ldra,
            })
            .collect(),
    }
}

/// An Interface-Id as the operator writes it: its text when it is printable ASCII (ISC
/// dhcrelay 4.4 sends a 4-byte number, which comes out as `hex:`), else `hex:` and its bytes.
pub(crate) fn interface_id_text(id: &[u8]) -> String {
    if !id.is_empty() && id.iter().all(|b| b.is_ascii_graphic()) && !id.starts_with(b"hex:") {
        String::from_utf8_lossy(id).into_owned()
    } else {
        format!("hex:{}", hex::encode(id))
    }
}

fn interface_id(key: &str, s: &str) -> Result<Vec<u8>> {
    let id = match s.strip_prefix("hex:") {
        Some(h) => hex_bytes(key, h, (1, 128))?,
        None => s.as_bytes().to_vec(),
    };
    if id.is_empty() || id.len() > 128 {
        return Err(invalid(key, "1 to 128 bytes (text, or hex:... for binary)"));
    }
    Ok(id)
}
