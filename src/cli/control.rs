//! `lqagent show bindings|stats` and `lqagent clear binding X`: talk to the running daemon over
//! its control socket and print a human table or (`--json`) the daemon's JSON answer.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use lqagent::config::{Config, DEFAULT_CONTROL_SOCKET};
use lqagent::control::client::Client;
use lqagent::control::{BindingView, Request, Response, StatsView};
use lqagent::prefix::Ipv6Prefix;

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

#[derive(Debug, Subcommand)]
enum ShowWhat {
    /// The binding cache: every lease, its link, lifetimes and route state.
    Bindings {
        /// Only this link (configured link name).
        #[arg(long)]
        link: Option<String>,
        /// Print the daemon's JSON instead of a table.
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
    /// Forget the binding for an address or delegated prefix and withdraw its route.
    Binding {
        /// `2001:db8::1` or `2001:db8:f100:100::/56`.
        target: String,
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
        ShowWhat::Bindings { link, json } => {
            let resp = ask(&args.socket, &Request::ShowBindings { link })?;
            let Response::Bindings { bindings } = resp else {
                bail!("unexpected answer: {resp:?}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&bindings)?);
            } else {
                print!("{}", bindings_table(&bindings));
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
    let ClearWhat::Binding { target } = args.what;
    let target: Ipv6Prefix = target.parse()?;
    let resp = ask(&args.socket, &Request::ClearBinding { target })?;
    let Response::Cleared { removed } = resp else {
        bail!("unexpected answer: {resp:?}");
    };
    if removed.is_empty() {
        bail!("no binding for {target}");
    }
    for r in removed {
        println!("cleared {r}");
    }
    Ok(())
}

fn lifetime(secs: u32) -> String {
    if secs == u32::MAX {
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
            ]
        })
        .collect();
    let mut t = table(
        &[
            "NETWORK", "IA", "LINK", "IF", "NEXT-HOP", "IAID", "DUID", "VALID", "SOURCE", "ROUTE",
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
