//! `lqagent decode (--hex HEX | --pcap FILE) [--json]`: print every DHCPv6 message found — one
//! raw message in hex, or every UDP datagram from or to port 546/547 in a capture file — as an
//! indented tree (relay chains and nested options unfolded, malformed parts shown with their
//! offset) or as JSON. The rendering is `lqagent::wire::pretty`; reading captures is
//! `lqagent::pcap`. Exit status: 0 every message decoded, 1 something was malformed (a message,
//! or the capture file itself), 2 the input could not be read at all.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args};
use serde::Serialize;

use lqagent::pcap::{Capture, is_dhcpv6};
use lqagent::wire::pretty::{Decoded, utc};

/// Exit status when something was malformed.
pub(crate) const EXIT_MALFORMED: i32 = 1;
/// Exit status when the input could not be read.
pub(crate) const EXIT_ERROR: i32 = 2;

/// Largest capture file read (it is read whole into memory).
const MAX_FILE: u64 = 1 << 30;
/// Largest DHCPv6 message over UDP.
const MAX_MESSAGE: usize = 65_527;

/// Decode DHCPv6 messages for troubleshooting.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["hex", "pcap"])))]
pub(crate) struct DecodeArgs {
    /// One DHCPv6 message (a UDP payload) in hex; spaces, colons and a 0x prefix are ignored.
    #[arg(long, value_name = "HEX")]
    hex: Option<String>,
    /// A capture file (libpcap or pcapng; Ethernet, Linux cooked v1/v2 or raw IPv6): every UDP
    /// datagram from or to port 546 or 547 is decoded.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One DHCPv6 datagram of a capture.
#[derive(Debug, Serialize)]
struct Found {
    packet: usize,
    time: String,
    src: Ipv6Addr,
    src_port: u16,
    dst: Ipv6Addr,
    dst_port: u16,
    #[serde(flatten)]
    decoded: Decoded,
}

/// Everything read from a capture.
#[derive(Debug, Serialize)]
struct Report {
    file: String,
    format: &'static str,
    packets: usize,
    messages: Vec<Found>,
    malformed_messages: usize,
    /// Packets that are not DHCPv6 over UDP/IPv6, by reason.
    skipped: BTreeMap<String, usize>,
    /// Why the file could not be read to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let clean: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != '-')
        .collect();
    if clean.len() > 2 * MAX_MESSAGE {
        bail!("more than {MAX_MESSAGE} bytes: not one DHCPv6 message");
    }
    hex::decode(&clean).context("--hex is not hex")
}

/// Runs the subcommand; returns the exit status.
pub(crate) fn run(args: DecodeArgs) -> anyhow::Result<i32> {
    match (&args.hex, &args.pcap) {
        (Some(h), _) => {
            let bytes = parse_hex(h)?;
            let d = Decoded::new(&bytes);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", d.to_text());
            }
            Ok(if d.malformed == 0 { 0 } else { EXIT_MALFORMED })
        }
        (None, Some(path)) => {
            let r = read_capture(path)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_report(&r);
            }
            let bad = r.malformed_messages > 0 || r.error.is_some();
            Ok(if bad { EXIT_MALFORMED } else { 0 })
        }
        (None, None) => bail!("--hex or --pcap is needed"),
    }
}

fn read_capture(path: &Path) -> anyhow::Result<Report> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_FILE {
        bail!(
            "{}: {size} bytes, more than the {MAX_FILE} read",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let cap = Capture::parse(&bytes).with_context(|| path.display().to_string())?;
    let mut r = Report {
        file: path.display().to_string(),
        format: cap.format_name(),
        packets: 0,
        messages: Vec::new(),
        malformed_messages: 0,
        skipped: BTreeMap::new(),
        error: None,
    };
    for p in cap.packets() {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                r.error = Some(e.to_string());
                break;
            }
        };
        r.packets += 1;
        let udp = match p.udp6() {
            Ok(u) if is_dhcpv6(&u) => u,
            Ok(_) => {
                *r.skipped.entry("not UDP port 546/547".into()).or_default() += 1;
                continue;
            }
            Err(e) => {
                *r.skipped.entry(e.to_string()).or_default() += 1;
                continue;
            }
        };
        let decoded = Decoded::new(udp.payload);
        if decoded.malformed > 0 {
            r.malformed_messages += 1;
        }
        let secs = i64::try_from(p.ts_sec).unwrap_or(i64::MAX / 2);
        let t = utc(secs);
        r.messages.push(Found {
            packet: p.number,
            time: format!("{}.{:06}Z", t.trim_end_matches('Z'), p.ts_nsec / 1000),
            src: udp.src,
            src_port: udp.src_port,
            dst: udp.dst,
            dst_port: udp.dst_port,
            decoded,
        });
    }
    Ok(r)
}

fn print_report(r: &Report) {
    for m in &r.messages {
        println!(
            "#{} {} [{}]:{} -> [{}]:{}",
            m.packet, m.time, m.src, m.src_port, m.dst, m.dst_port
        );
        print!("{}", m.decoded.to_text());
        println!();
    }
    let skipped: usize = r.skipped.values().sum();
    println!(
        "-- {}: {} {} packets, {} DHCPv6 messages ({} malformed), {} skipped",
        r.file,
        r.format,
        r.packets,
        r.messages.len(),
        r.malformed_messages,
        skipped
    );
    for (why, n) in &r.skipped {
        println!("--   skipped {n}: {why}");
    }
    if let Some(e) = &r.error {
        println!("-- capture file unreadable from here on: {e}");
    }
}
