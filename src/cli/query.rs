//! `lqagent query`: one RFC 5007 leasequery, asked by hand, answered like `dig` answers —
//! the servers asked, each one's status, the bindings with remaining lifetimes, timings — or
//! as JSON. Exit status: 0 bound, 1 no binding, 2 error or refused, 3 no answer.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, ValueEnum};
use serde_json::{Value, json};

use lqagent::cache::{LeaseKey, MergeConfig, ObservedLease};
use lqagent::requestor::udp::{self, QueryError, UdpConfig};
use lqagent::requestor::{
    Answer, AnswerVerdict, ClientAnswer, Policy, Query, QueryKind, QueryOutcome, RequestorConfig,
    RetransmitParams, ServerAnswer,
};
use lqagent::time::{Duration, Instant};
use lqagent::wire::{ALL_DHCP_SERVERS, INFINITE_LIFETIME, SERVER_PORT, StatusCode};

/// Exit status for "no binding".
pub(crate) const EXIT_NO_BINDING: i32 = 1;
/// Exit status for an error status, a refusal or a local failure.
pub(crate) const EXIT_ERROR: i32 = 2;
/// Exit status when no server answered.
pub(crate) const EXIT_NO_ANSWER: i32 = 3;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PolicyArg {
    Failover,
    Parallel,
}

/// Ask DHCPv6 servers who holds an address, or what a client holds (RFC 5007 leasequery).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["address", "client_id"])))]
pub(crate) struct QueryArgs {
    /// A leasequery server: ADDR, [ADDR]:PORT or ADDR%IFACE (port 547). Repeat for several;
    /// failover asks them in this order.
    #[arg(
        long = "server",
        value_name = "ADDR",
        required_unless_present = "multicast"
    )]
    servers: Vec<String>,
    /// Also ask All_DHCP_Servers (ff05::1:3) out of this interface, after the --server list.
    #[arg(long, value_name = "IFACE")]
    multicast: Option<String>,
    /// With --multicast: a server whose reply to the multicast query is accepted (its unicast
    /// address; the --server addresses count too). Repeat for several.
    #[arg(long = "accept-from", value_name = "ADDR")]
    accept_from: Vec<String>,
    /// QUERY_BY_ADDRESS: who leases this address (or a delegated prefix holding it).
    #[arg(long, value_name = "A")]
    address: Option<Ipv6Addr>,
    /// QUERY_BY_CLIENTID: the client's DUID in hex (colons allowed).
    #[arg(long = "client-id", value_name = "HEX")]
    client_id: Option<String>,
    /// Link-address to search; default `::` (every link).
    #[arg(long, value_name = "L")]
    link: Option<Ipv6Addr>,
    /// Ask for OPTION_LQ_RELAY_DATA.
    #[arg(long)]
    relay_data: bool,
    /// failover: one server at a time; parallel: all at once.
    #[arg(long, value_enum, default_value = "failover")]
    policy: PolicyArg,
    /// Give up on a server after this many seconds (default: the RFC's retransmission only).
    #[arg(long, value_name = "S")]
    timeout: Option<f64>,
    /// Transmissions per server (default LQ_MAX_RC = 5).
    #[arg(long, value_name = "N")]
    attempts: Option<u32>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Source address and port (ISC dhcpd replies to port 546).
    #[arg(long, default_value = "[::]:546", value_name = "ADDR:PORT")]
    bind: SocketAddr,
    /// Our DUID in hex; default DUID-LL from --interface or the first interface with a MAC.
    #[arg(long, value_name = "HEX")]
    duid: Option<String>,
    /// Interface whose MAC makes our DUID-LL.
    #[arg(long, value_name = "IFACE")]
    interface: Option<String>,
}

fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    let clean: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
    let v = hex::decode(&clean).with_context(|| format!("{s:?} is not hex"))?;
    if v.is_empty() {
        bail!("empty DUID");
    }
    if v.len() > 130 {
        bail!("DUID of {} bytes is longer than RFC 8415's 130", v.len());
    }
    Ok(v)
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .with_context(|| format!("no interface {name}"))?;
    Ok(text.trim().parse()?)
}

/// ADDR, [ADDR]:PORT, ADDR%IFACE or [ADDR%IFACE]:PORT.
fn parse_server(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.is_ipv4() {
            bail!("{s}: DHCPv6 servers have IPv6 addresses");
        }
        return Ok(a);
    }
    let (host, port) = match s.strip_prefix('[').and_then(|r| r.split_once("]:")) {
        Some((h, p)) => (h, p.parse::<u16>().context("bad port")?),
        None => (s, SERVER_PORT),
    };
    let (addr, scope) = match host.split_once('%') {
        Some((a, i)) => (a, ifindex(i)?),
        None => (host, 0),
    };
    let addr: Ipv6Addr = addr
        .parse()
        .with_context(|| format!("{s:?} is not an IPv6 server address"))?;
    Ok(SocketAddr::V6(SocketAddrV6::new(addr, port, 0, scope)))
}

fn hexs(b: &[u8]) -> String {
    hex::encode(b)
}

fn status_name(code: StatusCode) -> String {
    code.name()
        .map_or_else(|| format!("status {}", code.0), str::to_string)
}

/// The leases as the cache would take them (one extractor, `cache::from_wire`): an IAPREFIX
/// longer than 128 is skipped, the others shown.
fn leases(b: &ClientAnswer) -> Vec<ObservedLease> {
    b.observed.leases.clone()
}

/// Whether merge rule R13 reads this CLT_TIME as an absolute Unix time (ISC dhcpd 4.4).
fn clt_is_absolute(clt: u32) -> bool {
    clt >= MergeConfig::default().clt_unix_threshold
}

fn exit_code(v: AnswerVerdict) -> i32 {
    match v {
        AnswerVerdict::Bound => 0,
        AnswerVerdict::NoBinding => EXIT_NO_BINDING,
        AnswerVerdict::Error => EXIT_ERROR,
        AnswerVerdict::NoAnswer => EXIT_NO_ANSWER,
    }
}

/// Run the query; returns the exit status.
pub(crate) fn run(args: QueryArgs) -> anyhow::Result<i32> {
    let mut servers = args
        .servers
        .iter()
        .map(|s| parse_server(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut multicast_sources = args
        .accept_from
        .iter()
        .map(|s| parse_server(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let multicast_if = match &args.multicast {
        Some(iface) => {
            if servers.is_empty() && multicast_sources.is_empty() {
                bail!("--multicast needs --accept-from (or --server) to know whose replies count");
            }
            multicast_sources.extend(servers.iter().copied());
            let idx = ifindex(iface)?;
            servers.push(SocketAddr::V6(SocketAddrV6::new(
                ALL_DHCP_SERVERS,
                SERVER_PORT,
                0,
                // ff05:: is site scope: the interface goes in IPV6_MULTICAST_IF instead.
                0,
            )));
            Some(idx)
        }
        None => None,
    };
    let kind = match (&args.address, &args.client_id) {
        (Some(a), _) => QueryKind::ByAddress(*a),
        (None, Some(c)) => QueryKind::ByClientId(parse_hex(c)?.into()),
        (None, None) => bail!("--address or --client-id is needed"),
    };
    let query = Query {
        kind,
        link: args.link.unwrap_or(Ipv6Addr::UNSPECIFIED),
        relay_data: args.relay_data,
    };
    let duid = match &args.duid {
        Some(h) => parse_hex(h)?.into(),
        None => udp::system_duid(args.interface.as_deref()).context("choosing our DUID")?,
    };
    let mut retransmit = RetransmitParams::LEASEQUERY;
    if let Some(n) = args.attempts {
        if n == 0 {
            bail!("--attempts must be at least 1");
        }
        retransmit.mrc = n;
    }
    if let Some(t) = args.timeout {
        if !(t > 0.0 && t <= 3600.0) {
            bail!("--timeout must be between 0 and 3600 seconds");
        }
        retransmit.mrd = Some(Duration::from_secs_f64(t));
    }
    let cfg = RequestorConfig {
        servers,
        policy: match args.policy {
            PolicyArg::Failover => Policy::Failover,
            PolicyArg::Parallel => Policy::Parallel,
        },
        duid,
        retransmit,
        multicast_sources,
        negative_ttl: Duration::ZERO,
        global_rate: None,
        link_rate: None,
        ..RequestorConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let res = rt.block_on(async {
        // One query, then the process ends: nothing stops this supervisor but the exit.
        let sup = lqagent::supervise::Supervisor::unstopped(Default::default());
        let (handle, _task) = udp::spawn(
            cfg.clone(),
            UdpConfig {
                bind: args.bind,
                multicast_if,
                ..UdpConfig::default()
            },
            &sup,
        )
        .await
        .with_context(|| format!("binding {}", args.bind))?;
        anyhow::Ok(handle.query(query.clone()).await)
    })?;
    let total = started.elapsed();
    let outcome = match res {
        Ok(o) => o,
        Err(QueryError::Refused(r)) => {
            eprintln!("lqagent query: refused ({})", r.label());
            return Ok(EXIT_ERROR);
        }
        Err(e) => bail!(e),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&cfg, &outcome, total))?
        );
    } else {
        print_text(&cfg, &args, &outcome, total);
    }
    Ok(exit_code(outcome.verdict))
}

fn describe(q: &Query) -> String {
    let what = match &q.kind {
        QueryKind::ByAddress(a) => format!("QUERY_BY_ADDRESS {a}"),
        QueryKind::ByClientId(d) => format!("QUERY_BY_CLIENTID {}", hexs(d)),
    };
    format!(
        "{what} link {}{}",
        q.link,
        if q.relay_data { " +relay-data" } else { "" }
    )
}

/// Seconds left of a lifetime `secs` that was counted from `received`.
fn remaining(secs: u32, received: Instant) -> Option<u64> {
    if secs == INFINITE_LIFETIME {
        return None;
    }
    Some(u64::from(secs).saturating_sub(received.elapsed().as_secs()))
}

fn life(secs: u32, received: Instant) -> String {
    match remaining(secs, received) {
        None => "infinite".to_string(),
        Some(s) => format!("{s}s"),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn answer_line(a: &ServerAnswer) -> String {
    let what = match &a.answer {
        Answer::Bound(b) => format!("Success, binding ({} leases)", leases(b).len()),
        Answer::NoBinding => "Success, no binding".to_string(),
        Answer::ClientLinks(l) => format!("Success, client on {} links (asked each)", l.len()),
        Answer::Status { code, message } => {
            format!(
                "{} ({}) \"{}\"",
                status_name(*code),
                code.0,
                message.escape_default()
            )
        }
        Answer::NoAnswer => "no answer".to_string(),
    };
    let duid = a
        .server_duid
        .as_deref()
        .map_or(String::new(), |d| format!("  server-duid {}", hexs(d)));
    format!(
        ";; SERVER {}  link {}  {what}  attempts {}  time {:.1} ms{duid}",
        a.server,
        a.link,
        a.attempts,
        ms(a.elapsed)
    )
}

fn print_binding(b: &ClientAnswer) {
    println!(
        ";; BINDING from {} (server-duid {})",
        b.server,
        hexs(&b.server_duid)
    );
    println!("client-duid   {}", hexs(&b.client_duid()));
    println!("link          {}", b.link);
    if clt_is_absolute(b.clt_time()) {
        println!(
            "clt-time      {} (an absolute Unix time, as ISC dhcpd sends; merge rule R13)",
            b.clt_time()
        );
    } else {
        println!("clt-time      {}s", b.clt_time());
    }
    for l in leases(b) {
        print_lease(&l, b.received);
    }
    if let Some(r) = b.relay_data() {
        let place = r.chain();
        let at = if b.data.relay_data().is_some() {
            "client-data"
        } else {
            "top-level"
        };
        println!(
            "relay-data    ({at}) peer {}  link {}  next-hop {}",
            r.peer_address,
            place
                .link_address()
                .map_or("::".to_string(), |a| a.to_string()),
            place
                .peer_address()
                .map_or("-".to_string(), |a| a.to_string()),
        );
    }
}

fn lease_kind(l: &ObservedLease) -> (&'static str, String) {
    match l.key {
        LeaseKey::Address(a) => ("address", a.to_string()),
        LeaseKey::Prefix(p) => ("prefix", p.to_string()),
    }
}

fn print_lease(l: &ObservedLease, received: Instant) {
    let (kind, what) = lease_kind(l);
    println!(
        "{kind:<13} {what}  preferred {}  valid {} remaining  ia {} iaid {}",
        life(l.preferred, received),
        life(l.valid, received),
        l.ia.label(),
        l.iaid
    );
}

fn print_text(cfg: &RequestorConfig, args: &QueryArgs, o: &QueryOutcome, total: Duration) {
    println!("; <<>> lqagent query <<>> {}", describe(&o.query));
    println!(
        ";; policy {:?}, attempts {}, timeout {}, from {}, requestor-duid {}",
        cfg.policy,
        cfg.retransmit.mrc,
        cfg.retransmit
            .mrd
            .map_or("none".to_string(), |d| format!("{}s", d.as_secs_f64())),
        args.bind,
        hexs(&cfg.duid)
    );
    println!(
        ";; servers {}",
        cfg.servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    for a in &o.answers {
        println!("{}", answer_line(a));
    }
    for b in o.bindings() {
        println!();
        print_binding(b);
    }
    println!();
    println!(
        ";; VERDICT {} (exit {})  query time {:.1} ms",
        o.verdict.label(),
        exit_code(o.verdict),
        ms(total)
    );
}

fn binding_json(b: &ClientAnswer) -> Value {
    let leases: Vec<Value> = leases(b)
        .iter()
        .map(|l| {
            let (kind, what) = lease_kind(l);
            json!({
                "type": kind,
                kind: what,
                "ia": {"type": l.ia.label(), "iaid": l.iaid},
                "preferred": l.preferred,
                "valid": l.valid,
                "preferred_remaining": remaining(l.preferred, b.received),
                "valid_remaining": remaining(l.valid, b.received),
            })
        })
        .collect();
    json!({
        "client_duid": hexs(&b.client_duid()),
        "link": b.link.to_string(),
        "clt_time": b.clt_time(),
        "clt_time_absolute": clt_is_absolute(b.clt_time()),
        "server": b.server.to_string(),
        "server_duid": hexs(&b.server_duid),
        "leases": leases,
        "relay_data": b.relay_data().map(|r| {
            let place = r.chain();
            json!({
                "top_level": b.data.relay_data().is_none(),
                "peer": r.peer_address.to_string(),
                "link_address": place.link_address().map(|a| a.to_string()),
                "next_hop": place.peer_address().map(|a| a.to_string()),
                "interface_id": r.relay.options.interface_id().map(hexs),
            })
        }),
    })
}

fn to_json(cfg: &RequestorConfig, o: &QueryOutcome, total: Duration) -> Value {
    let (qtype, key) = match &o.query.kind {
        QueryKind::ByAddress(a) => ("by_address", a.to_string()),
        QueryKind::ByClientId(d) => ("by_client_id", hexs(d)),
    };
    let answers: Vec<Value> = o
        .answers
        .iter()
        .map(|a| {
            let mut v = json!({
                "server": a.server.to_string(),
                "server_duid": a.server_duid.as_deref().map(hexs),
                "link": a.link.to_string(),
                "attempts": a.attempts,
                "elapsed_ms": ms(a.elapsed),
            });
            let (result, extra) = match &a.answer {
                Answer::Bound(b) => ("bound", json!({"binding": binding_json(b)})),
                Answer::NoBinding => ("no_binding", json!({})),
                Answer::ClientLinks(l) => (
                    "client_links",
                    json!({"links": l.iter().map(ToString::to_string).collect::<Vec<_>>()}),
                ),
                Answer::Status { code, message } => (
                    "status",
                    json!({"status": {"code": code.0, "name": status_name(*code), "message": message}}),
                ),
                Answer::NoAnswer => ("no_answer", json!({})),
            };
            v["result"] = json!(result);
            if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
                m.extend(e);
            }
            v
        })
        .collect();
    json!({
        "query": {"type": qtype, "key": key, "link": o.query.link.to_string(),
                  "relay_data": o.query.relay_data},
        "policy": cfg.policy,
        "requestor_duid": hexs(&cfg.duid),
        "verdict": o.verdict,
        "exit": exit_code(o.verdict),
        "answers": answers,
        "bindings": o.bindings().map(binding_json).collect::<Vec<_>>(),
        "elapsed_ms": ms(total),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_forms() {
        assert_eq!(
            parse_server("2001:db8::1").unwrap(),
            "[2001:db8::1]:547".parse().unwrap()
        );
        assert_eq!(
            parse_server("[2001:db8::1]:5547").unwrap(),
            "[2001:db8::1]:5547".parse().unwrap()
        );
        let lo = parse_server("fe80::1%lo").unwrap();
        let SocketAddr::V6(v6) = lo else { panic!("v6") };
        assert_eq!(v6.port(), 547);
        assert_ne!(v6.scope_id(), 0);
        assert!(parse_server("192.0.2.1:547").is_err());
        assert!(parse_server("nonsense").is_err());
    }

    #[test]
    fn hex_duids() {
        assert_eq!(parse_hex("00:01:0a").unwrap(), vec![0, 1, 10]);
        assert!(parse_hex("").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex(&"00".repeat(131)).is_err());
    }
}
