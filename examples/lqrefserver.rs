//! `lqrefserver` — the reference leasequery server as a program. Test support for the lab and
//! for scripts, **not part of the agent**: see tests/support/src/refserver/mod.rs for what it does.
//!
//! ```text
//! lqrefserver --table leases.jsonl --udp '[2001:db8::1]:547' --tcp '[2001:db8::1]:547' \
//!     --srsn-option 65001 --faults '{"default":{"delay_ms":200}}'
//! ```
//! It prints `lqrefserver: ready udp=<addr> tcp=<addr> bindings=<n>` once listening, then
//! runs until killed. Built by `cargo test`, or on its own with
//! `cargo build --example lqrefserver` (it is `target/debug/examples/lqrefserver` then).

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use support::refserver;

use refserver::{FaultPlan, LeaseTable, RefServer, ServerConfig};

/// Reference DHCPv6 leasequery server (RFC 5007 UDP, RFC 5460 TCP) for tests and labs.
#[derive(Debug, Parser)]
#[command(name = "lqrefserver")]
struct Args {
    /// Lease table, JSON lines (format in tests/support/src/refserver/table.rs).
    #[arg(long)]
    table: PathBuf,
    /// UDP address to answer RFC 5007 queries on.
    #[arg(long)]
    udp: Option<SocketAddr>,
    /// TCP address to answer RFC 5460 bulk queries on.
    #[arg(long)]
    tcp: Option<SocketAddr>,
    /// Alternate UDP address for the wrong-source fault.
    #[arg(long)]
    alt_source: Option<SocketAddr>,
    /// Extra link-addresses served without clients (answered "no binding", not NotConfigured).
    #[arg(long = "link")]
    links: Vec<Ipv6Addr>,
    /// Server DUID, hex.
    #[arg(long)]
    server_duid: Option<String>,
    /// Option code for the server-reply-sequence-number (local extension); off when absent.
    #[arg(long)]
    srsn_option: Option<u16>,
    /// Fault plan as JSON (see tests/support/src/refserver/faults.rs).
    #[arg(long)]
    faults: Option<String>,
    /// Fault plan from a JSON file.
    #[arg(long)]
    faults_file: Option<PathBuf>,
    /// RFC 5460 BULK_LQ_MAX_CONNS.
    #[arg(long, default_value_t = 10)]
    max_conns: usize,
    /// Interleave answers to queries pipelined on one TCP connection.
    #[arg(long)]
    pipelining: bool,
    /// Drop queries pipelined behind the first one in the same read (buggy-server emulation).
    #[arg(long)]
    drop_pipelined: bool,
    /// Behave like a deployed server: ideal (the RFCs), isc (ISC dhcpd 4.4), kea (Kea 3).
    #[arg(long, default_value = "ideal")]
    profile: refserver::Profile,
    /// Answer only these requestor addresses (others get silence, as Kea does); repeatable.
    #[arg(long = "requester")]
    requesters: Vec<std::net::IpAddr>,
    /// Server number: a distinct server DUID per instance (ignored with --server-duid).
    #[arg(long, default_value_t = 0)]
    instance: u8,
    /// First server reply sequence number minus one.
    #[arg(long, default_value_t = 0)]
    srsn_start: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut table = LeaseTable::load(&args.table).context("load lease table")?;
    for l in &args.links {
        table.add_link(*l);
    }
    let base = ServerConfig::profiled(args.profile, args.instance);
    let mut config = ServerConfig {
        srsn_option: args.srsn_option,
        max_tcp_conns: args.max_conns,
        tcp_interleave: args.pipelining,
        tcp_drop_pipelined: args.drop_pipelined || base.tcp_drop_pipelined,
        requesters: (!args.requesters.is_empty()).then_some(args.requesters),
        srsn_start: args.srsn_start,
        ..base
    };
    if let Some(d) = &args.server_duid {
        config.server_duid = hex::decode(d).context("--server-duid is not hex")?;
    }
    let plan: FaultPlan = match (&args.faults, &args.faults_file) {
        (Some(j), _) => serde_json::from_str(j).context("--faults")?,
        (None, Some(p)) => {
            serde_json::from_str(&std::fs::read_to_string(p).context("read --faults-file")?)
                .context("--faults-file")?
        }
        (None, None) => FaultPlan::default(),
    };
    anyhow::ensure!(
        args.udp.is_some() || args.tcp.is_some(),
        "give --udp and/or --tcp"
    );
    let n = table.len();
    let srv = RefServer::new(table, config);
    srv.set_faults(plan);
    let udp = match args.udp {
        Some(a) => {
            let alt = match args.alt_source {
                Some(x) => Some(std::net::UdpSocket::bind(x).context("bind --alt-source")?),
                None => None,
            };
            let s = std::net::UdpSocket::bind(a).with_context(|| format!("bind udp {a}"))?;
            Some(srv.serve_udp(s, alt)?)
        }
        None => None,
    };
    let tcp = match args.tcp {
        Some(a) => {
            let l = std::net::TcpListener::bind(a).with_context(|| format!("bind tcp {a}"))?;
            Some(srv.serve_tcp(l)?)
        }
        None => None,
    };
    let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    println!(
        "lqrefserver: ready udp={} tcp={} bindings={n}",
        show(udp),
        show(tcp)
    );
    loop {
        std::thread::park();
    }
}
