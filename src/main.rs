//! The `lqagent` command line: parses arguments and hands off to library code.
//! `anyhow` is used here only, at the binary edge.

use clap::{Parser, Subcommand};

mod cli;

/// DHCPv6 leasequery requestor and binding-cache agent for access concentrators.
#[derive(Debug, Parser)]
#[command(name = "lqagent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version and the build's pinned netlink crates.
    Version,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => cli::version::run(),
    }
}
