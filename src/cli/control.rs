//! `lqagent show bindings|servers|stats` and `lqagent clear binding`: talk to the running daemon
//! over its control socket and print a human table or (`--json`) the daemon's JSON answer.
//! Bindings are selected by what an operator has in hand: a client DUID, a link, an interface,
//! or a prefix that covers them (see [`FilterArgs`]).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use lqagent::config::{Config, DEFAULT_CONTROL_SOCKET};
use lqagent::control::client::Client;
use lqagent::control::{
    BindingFilter, BindingView, Request, Response, ServerView, StatsView, normalize_duid,
};
use lqagent::prefix::Ipv6Prefix;
use lqagent::wire::INFINITE_LIFETIME;

/// Where the daemon listens: `--socket`, else `control.socket` of `--config`, else the default.
#[derive(Debug, Args)]
pub(crate) struct SocketArgs {
    /// The control socket.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Read the control socket path from this configuration file.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

impl SocketArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        if let Some(c) = &self.config {
            let config = Config::load(c).map_err(|e| anyhow::anyhow!("{}: {e}", c.display()))?;
            return Ok(config.control.socket);
        }
        Ok(PathBuf::from(DEFAULT_CONTROL_SOCKET))
    }
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    #[command(subcommand)]
    what: ShowWhat,
    #[command(flatten)]
    socket: SocketArgs,
}

/// Which bindings: every option given must match; none given selects every binding.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct FilterArgs {
    /// Only bindings of this client (DUID in hex; colons allowed).
    #[arg(long, value_name = "HEX")]
    client_duid: Option<String>,
    /// Only bindings on this configured link (its `name`).
    #[arg(long, value_name = "NAME")]
    link: Option<String>,
    /// Only bindings whose route points out of this interface.
    #[arg(long, value_name = "IFNAME")]
    interface: Option<String>,
    /// Only bindings inside this prefix (a /48 selects the /56s and addresses in it); an
    /// address selects the binding holding it, also a delegated prefix containing it.
    #[arg(long, value_name = "PREFIX")]
    within: Option<String>,
}

/// A prefix, or an address as its /128.
fn prefix_or_address(s: &str) -> anyhow::Result<Ipv6Prefix> {
    if let Ok(a) = s.trim().parse::<std::net::Ipv6Addr>() {
        return Ok(Ipv6Prefix::host(a));
    }
    s.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{s:?}: not an IPv6 address or prefix ({e})"))
}

impl FilterArgs {
    fn filter(self) -> anyhow::Result<BindingFilter> {
        if let Some(d) = &self.client_duid {
            if normalize_duid(d).is_none() {
                bail!("--client-duid {d:?}: not hex octets");
            }
        }
        Ok(BindingFilter {
            link: self.link,
            interface: self.interface,
            client_duid: self.client_duid,
            within: self.within.as_deref().map(prefix_or_address).transpose()?,
        })
    }
}

#[derive(Debug, Subcommand)]
enum ShowWhat {
    /// The binding cache: leases, their link, interface, lifetimes and route state.
    Bindings {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print the daemon's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Each configured DHCPv6 server: up, last answer, RTT, failures, bulk status.
    Servers {
        #[arg(long)]
        json: bool,
    },
    /// Counters and gauges (the /metrics series, without histogram buckets).
    Stats {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ClearArgs {
    #[command(subcommand)]
    what: ClearWhat,
    #[command(flatten)]
    socket: SocketArgs,
}

#[derive(Debug, Subcommand)]
enum ClearWhat {
    /// Forget the selected bindings and withdraw their routes; prints how many were removed.
    #[command(visible_alias = "bindings")]
    Binding {
        /// An address or prefix: the same as `--within`.
        target: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Print the daemon's JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

fn ask(socket: &SocketArgs, req: &Request) -> anyhow::Result<Response> {
    let path = socket.path()?;
    let mut client = Client::connect(&path).context("is lqagent running?")?;
    match client.request(req)? {
        Response::Error { message } => bail!("lqagent: {message}"),
        r => Ok(r),
    }
}

pub(crate) fn show(args: ShowArgs) -> anyhow::Result<()> {
    match args.what {
        ShowWhat::Bindings { filter, json } => {
            let resp = ask(&args.socket, &Request::ShowBindings(filter.filter()?))?;
            let Response::Bindings { bindings } = resp else {
                bail!("unexpected answer: {resp:?}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&bindings)?);
            } else {
                print!("{}", bindings_table(&bindings));
            }
        }
        ShowWhat::Servers { json } => {
            let resp = ask(&args.socket, &Request::ShowServers)?;
            let Response::Servers { servers } = resp else {
                bail!("unexpected answer: {resp:?}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&servers)?);
            } else {
                print!("{}", servers_table(&servers, now_unix()));
            }
        }
        ShowWhat::Stats { json } => {
            let resp = ask(&args.socket, &Request::ShowStats)?;
            let Response::Stats { stats } = resp else {
                bail!("unexpected answer: {resp:?}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", stats_table(&stats));
            }
        }
    }
    Ok(())
}

pub(crate) fn clear(args: ClearArgs) -> anyhow::Result<()> {
    let ClearWhat::Binding {
        target,
        mut filter,
        json,
    } = args.what;
    if let Some(t) = target {
        if filter.within.is_some() {
            bail!("give the address or prefix either as an argument or as --within, not both");
        }
        filter.within = Some(t);
    }
    let filter = filter.filter()?;
    if filter.is_empty() {
        bail!("clear what? give an address or prefix, --client-duid, --link or --interface");
    }
    let resp = ask(&args.socket, &Request::ClearBindings(filter))?;
    let Response::Cleared { removed } = resp else {
        bail!("unexpected answer: {resp:?}");
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Response::Cleared { removed })?
        );
        return Ok(());
    }
    if removed.is_empty() {
        bail!("no binding matched; nothing cleared");
    }
    for r in &removed {
        println!("cleared {r}");
    }
    println!("{} binding(s) cleared", removed.len());
    Ok(())
}

fn now_unix() -> u64 {
    lqagent::time::unix_now_secs()
}

/// "12s ago", or "never".
fn ago(t: Option<u64>, now: u64) -> String {
    match t {
        Some(t) => format!("{}s ago", now.saturating_sub(t)),
        None => "never".to_string(),
    }
}

fn servers_table(servers: &[ServerView], now: u64) -> String {
    let rows = servers
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.address.to_string(),
                if s.up { "up" } else { "down" }.to_string(),
                ago(s.last_answer_unix, now),
                ago(s.last_success_unix, now),
                s.last_rtt_ms
                    .map(|ms| format!("{ms:.1}ms"))
                    .unwrap_or_else(|| "-".to_string()),
                format!("{}/{}", s.consecutive_failures, s.failures),
                s.exchanges.to_string(),
                match s.bulk_at_unix {
                    Some(_) => format!("{} {}", s.bulk, ago(s.bulk_at_unix, now)),
                    None => s.bulk.clone(),
                },
            ]
        })
        .collect();
    table(
        &[
            "SERVER",
            "ADDRESS",
            "STATE",
            "LAST-ANSWER",
            "LAST-SUCCESS",
            "RTT",
            "FAILS(RUN/ALL)",
            "QUERIES",
            "BULK",
        ],
        rows,
    )
}

fn lifetime(secs: u32) -> String {
    if secs == INFINITE_LIFETIME {
        "infinite".to_string()
    } else {
        format!("{secs}s")
    }
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
    out
}

fn bindings_table(bindings: &[BindingView]) -> String {
    let dash = || "-".to_string();
    let rows = bindings
        .iter()
        .map(|b| {
            vec![
                b.network.to_string(),
                b.ia_type.clone(),
                b.link.clone().unwrap_or_else(dash),
                b.interface.clone().unwrap_or_else(dash),
                b.next_hop.map(|a| a.to_string()).unwrap_or_else(dash),
                b.iaid.to_string(),
                b.client_duid.clone(),
                lifetime(b.valid_secs),
                b.source.clone(),
                b.route.clone(),
                b.access_port.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    let mut t = table(
        &[
            "NETWORK", "IA", "LINK", "IF", "NEXT-HOP", "IAID", "DUID", "VALID", "SOURCE", "ROUTE",
            "ACCESS",
        ],
        rows,
    );
    t.push_str(&format!("{} binding(s)\n", bindings.len()));
    t
}

fn stats_table(stats: &StatsView) -> String {
    let rows = stats
        .stats
        .iter()
        .map(|s| vec![s.series.clone(), s.value.to_string()])
        .collect();
    format!(
        "uptime {}s\n{}",
        stats.uptime_secs,
        table(&["SERIES", "VALUE"], rows)
    )
}
