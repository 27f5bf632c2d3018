//! `lqbulk` — RFC 5460 bulk leasequeries by hand, sent by the agent's own bulk requestor
//! (`lqagent::bulk::tcp`, the code `lqagent run` uses for recovery). Test support, **not part
//! of the agent**: tests/data/kea/record.sh uses it to record what a real server answers.
//!
//! ```text
//! lqbulk --server '[2001:db8::1]:547' --duid 000300010200000002 01 \
//!     --link 2001:db8:1::1 --relay-id 0002000009bf0000000a --remote-id 2495:0a0b0c
//! ```
//! Each query given is asked in order on one connection (`--pipelining`: all at once); each
//! binding is printed as it arrives, then each query's result. Exit status 0 when every query
//! completed, 1 otherwise.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use lqagent::bulk::BulkConfig;
use lqagent::bulk::core::BulkQuery;
use lqagent::bulk::stats::BulkStats;
use lqagent::bulk::tcp::{self, BulkEvent, ServerQueries};
use lqagent::wire::Duid;

/// Bulk leasequery (RFC 5460) with lqagent's requestor.
#[derive(Debug, Parser)]
#[command(name = "lqbulk")]
struct Args {
    /// The server's TCP address.
    #[arg(long)]
    server: SocketAddr,
    /// Our DUID (sent as CLIENTID), hex.
    #[arg(long)]
    duid: String,
    /// Connect from this address (a server may answer only listed requesters).
    #[arg(long)]
    source: Option<Ipv6Addr>,
    /// QUERY_BY_LINK_ADDRESS for this link; repeatable.
    #[arg(long = "link")]
    links: Vec<Ipv6Addr>,
    /// QUERY_BY_RELAY_ID for this relay DUID (hex), over every link; repeatable.
    #[arg(long = "relay-id")]
    relay_ids: Vec<String>,
    /// QUERY_BY_REMOTE_ID: ENTERPRISE:HEX; repeatable.
    #[arg(long = "remote-id")]
    remote_ids: Vec<String>,
    /// Send every query at once on the connection instead of one after the other.
    #[arg(long)]
    pipelining: bool,
    /// Seconds to wait for the next message of a query (BULK_LQ_DATA_TIMEOUT).
    #[arg(long, default_value_t = 5)]
    data_timeout: u64,
    /// Attempts per query.
    #[arg(long, default_value_t = 1)]
    attempts: u32,
}

fn hex_bytes(s: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(s.replace(':', "")).with_context(|| format!("{s:?} is not hex"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut queries = Vec::new();
    for r in &args.relay_ids {
        queries.push(BulkQuery::RelayId {
            relay_id: Duid::from(&hex_bytes(r)?),
            link: Ipv6Addr::UNSPECIFIED,
        });
    }
    queries.extend(args.links.iter().map(|&l| BulkQuery::LinkAddress(l)));
    for r in &args.remote_ids {
        let (ent, id) = r.split_once(':').context("--remote-id is ENTERPRISE:HEX")?;
        queries.push(BulkQuery::RemoteId {
            enterprise: ent.parse().context("remote-id enterprise number")?,
            remote_id: hex_bytes(id)?,
            link: Ipv6Addr::UNSPECIFIED,
        });
    }
    anyhow::ensure!(
        !queries.is_empty(),
        "give --link, --relay-id or --remote-id"
    );
    let cfg = Arc::new(BulkConfig {
        requestor_duid: Duid::from(&hex_bytes(&args.duid)?),
        pipelining: args.pipelining,
        data_timeout: Duration::from_secs(args.data_timeout),
        max_attempts: args.attempts,
        source_address: args.source,
        ..BulkConfig::default()
    });
    let rt = tokio::runtime::Runtime::new()?;
    let all_complete = rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let servers = vec![ServerQueries {
            server: args.server,
            queries,
        }];
        let stats = Arc::new(BulkStats::with_max_connections(1));
        let run = tokio::spawn(tcp::run(servers, cfg, tx, stats));
        let mut ok = true;
        while let Some(ev) = rx.recv().await {
            match ev {
                BulkEvent::Binding { binding, .. } => println!(
                    "binding link={:?} peer={:?} {:?}",
                    binding.answer.placed_link(),
                    binding
                        .answer
                        .relay_data()
                        .and_then(|rd| rd.chain().peer_address()),
                    binding.answer.data
                ),
                BulkEvent::QueryFinished { query, result, .. } => {
                    ok &= matches!(result, tcp::QueryResult::Complete { .. });
                    println!("finished {} {:?}: {result:?}", query.label(), query.link());
                }
                BulkEvent::ServerFinished { report, .. } => println!("server {report:?}"),
            }
        }
        let _ = run.await;
        ok
    });
    std::process::exit(if all_complete { 0 } else { 1 })
}
