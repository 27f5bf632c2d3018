//! Recorded real traffic under tests/data/, read back for tests: the UDP datagrams of a capture
//! (through the agent's own pcap reader) and the TCP streams of one (bulk leasequery), put
//! back together from the segments and split into RFC 5460 frames.
//!
//! The TCP reassembly is for captures this repository made on one veth (tests/data/kea/,
//! Ethernet link type, plain IPv6 without extension headers): segments are placed by sequence
//! number from each direction's SYN, retransmitted bytes are kept once. Anything else in the
//! file (UDP, other link types) is skipped, not an error. Every offset is checked: a file that
//! does not hold what it should fails the test that reads it with a message, never a panic on
//! an index.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::{Path, PathBuf};

use lqagent::pcap::{Capture, link};
use lqagent::wire::bulk::{FrameConfig, FrameDecoder};

/// A file under tests/data/.
pub fn data_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(rel)
}

/// One UDP datagram of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// 1-based position in the file (as tshark numbers frames).
    pub number: usize,
    /// Capture time, Unix seconds and nanoseconds.
    pub ts_sec: u64,
    pub ts_nsec: u32,
    pub src: SocketAddrV6,
    pub dst: SocketAddrV6,
    pub payload: Vec<u8>,
}

/// Every UDP datagram in the capture `rel` (under tests/data/), in file order.
pub fn udp(rel: &str) -> Vec<Datagram> {
    let bytes = std::fs::read(data_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let cap = Capture::parse(&bytes).unwrap_or_else(|e| panic!("{rel}: {e}"));
    cap.packets()
        .map(|p| p.unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter_map(|p| {
            let u = p.udp6().ok()?;
            Some(Datagram {
                number: p.number,
                ts_sec: p.ts_sec,
                ts_nsec: p.ts_nsec,
                src: SocketAddrV6::new(u.src, u.src_port, 0, 0),
                dst: SocketAddrV6::new(u.dst, u.dst_port, 0, 0),
                payload: u.payload.to_vec(),
            })
        })
        .collect()
}

/// One TCP connection of a capture, both directions put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConnection {
    /// The side that sent the first SYN.
    pub client: SocketAddrV6,
    pub server: SocketAddrV6,
    pub to_server: Vec<u8>,
    pub to_client: Vec<u8>,
    /// Whether the server side sent a SYN-ACK (the connection was accepted).
    pub accepted: bool,
    /// When the first SYN was captured, Unix seconds.
    pub started_sec: u64,
}

impl TcpConnection {
    /// The RFC 5460 messages the client sent (2-byte length framing removed).
    pub fn client_messages(&self) -> Vec<Vec<u8>> {
        frames(&self.to_server)
    }

    /// The RFC 5460 messages the server sent.
    pub fn server_messages(&self) -> Vec<Vec<u8>> {
        frames(&self.to_client)
    }
}

/// Split a byte stream into RFC 5460 frames with the agent's decoder; panics on a stream that
/// does not frame exactly (a recording that lost bytes should fail its test loudly).
pub fn frames(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut dec = FrameDecoder::new(FrameConfig::default());
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = dec.room().min(rest.len());
        assert!(n > 0, "frame decoder full");
        dec.push(&rest[..n]).expect("push frame bytes");
        rest = &rest[n..];
        while let Some(f) = dec.next_frame().expect("well-formed RFC 5460 framing") {
            out.push(f.to_vec());
        }
    }
    assert_eq!(
        dec.buffered(),
        0,
        "a partial frame at the end of the stream"
    );
    out
}

/// A segment's place in its connection.
struct Segment {
    src: SocketAddrV6,
    dst: SocketAddrV6,
    seq: u32,
    syn: bool,
    ack_flag: bool,
    payload: Vec<u8>,
}

/// The IPv6/TCP segment in an Ethernet frame, if it is one.
fn segment(link_type: u16, data: &[u8]) -> Option<Segment> {
    if link_type != link::ETHERNET || data.get(12..14)? != [0x86, 0xdd] {
        return None;
    }
    let ip = data.get(14..)?;
    if ip.first()? >> 4 != 6 || *ip.get(6)? != 6 {
        return None; // not IPv6, or an extension header / not TCP
    }
    let plen = usize::from(u16::from_be_bytes(ip.get(4..6)?.try_into().ok()?));
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(ip.get(8..24)?).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(ip.get(24..40)?).ok()?);
    let tcp = ip.get(40..40 + plen)?;
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(tcp.get(at..at + 2)?.try_into().ok()?))
    };
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    Some(Segment {
        src: SocketAddrV6::new(src, port(0)?, 0, 0),
        dst: SocketAddrV6::new(dst, port(2)?, 0, 0),
        seq,
        syn: flags & 0x02 != 0,
        ack_flag: flags & 0x10 != 0,
        payload: tcp.get(doff..)?.to_vec(),
    })
}

/// One direction being put back together.
#[derive(Default)]
struct Half {
    isn: Option<u32>,
    bytes: Vec<u8>,
}

impl Half {
    fn add(&mut self, s: &Segment) {
        if s.syn {
            self.isn = Some(s.seq);
            return;
        }
        let Some(isn) = self.isn else { return };
        if s.payload.is_empty() {
            return;
        }
        // Stream offset of the segment's first byte (the SYN takes one sequence number).
        let off = s.seq.wrapping_sub(isn).wrapping_sub(1) as usize;
        assert!(
            off <= self.bytes.len(),
            "a gap in a recorded TCP stream at offset {} (have {})",
            off,
            self.bytes.len()
        );
        let new = off + s.payload.len();
        if new > self.bytes.len() {
            let skip = self.bytes.len() - off;
            self.bytes.extend_from_slice(&s.payload[skip..]);
        }
    }
}

/// Every TCP connection in the capture `rel` (under tests/data/), in the order of their first
/// SYN.
pub fn tcp(rel: &str) -> Vec<TcpConnection> {
    let bytes = std::fs::read(data_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    tcp_in(rel, &bytes)
}

/// Every TCP connection in the capture file `bytes` (`rel` names it in panics).
pub fn tcp_in(rel: &str, bytes: &[u8]) -> Vec<TcpConnection> {
    let cap = Capture::parse(bytes).unwrap_or_else(|e| panic!("{rel}: {e}"));
    // Keyed by (client, server); value: index in `order`.
    let mut conns: BTreeMap<(SocketAddrV6, SocketAddrV6), usize> = BTreeMap::new();
    let mut order: Vec<(SocketAddrV6, SocketAddrV6, Half, Half, bool, u64)> = Vec::new();
    for p in cap.packets() {
        let p = p.unwrap_or_else(|e| panic!("{rel}: {e}"));
        let Some(s) = segment(p.link_type, p.data) else {
            continue;
        };
        let key_fwd = (s.src, s.dst);
        let key_rev = (s.dst, s.src);
        let (i, to_server) = if let Some(&i) = conns.get(&key_fwd) {
            (i, true)
        } else if let Some(&i) = conns.get(&key_rev) {
            (i, false)
        } else if s.syn && !s.ack_flag {
            order.push((
                s.src,
                s.dst,
                Half::default(),
                Half::default(),
                false,
                p.ts_sec,
            ));
            conns.insert(key_fwd, order.len() - 1);
            (order.len() - 1, true)
        } else {
            continue; // a connection whose start was not recorded
        };
        let c = &mut order[i];
        if to_server {
            c.2.add(&s);
        } else {
            if s.syn && s.ack_flag {
                c.4 = true;
            }
            c.3.add(&s);
        }
    }
    order
        .into_iter()
        .map(
            |(client, server, up, down, accepted, started_sec)| TcpConnection {
                client,
                server,
                to_server: up.bytes,
                to_client: down.bytes,
                accepted,
                started_sec,
            },
        )
        .collect()
}

/// One row of Kea's memfile lease file (kea-leases6.csv, saved beside the captures): what Kea
/// itself wrote down, so tests read expected values from it rather than typing them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeaLease {
    pub address: Ipv6Addr,
    /// 128 for an address, the delegated length for a prefix.
    pub prefix_len: u8,
    pub prefix: bool,
    pub duid: Vec<u8>,
    pub iaid: u32,
    pub subnet_id: u32,
    pub valid: u32,
    pub preferred: u32,
    /// Expiry, Unix seconds: the client's last transaction (CLTT) is `expire - valid`.
    pub expire: u64,
    /// Kea's lease state (0 default, 1 declined, 2 expired-reclaimed, 3 released).
    pub state: u32,
    /// The stored relay information (`user_context.ISC.relay-info`), if any.
    pub relay_info: Option<serde_json::Value>,
}

impl KeaLease {
    /// When Kea last heard from the client about this lease.
    pub fn cltt(&self) -> u64 {
        self.expire.saturating_sub(u64::from(self.valid))
    }
}

/// The rows of a Kea memfile v6 lease file under tests/data/, in file order (a lease file is a
/// journal: a later row for the same lease replaces an earlier one; valid lifetime 0 deletes).
pub fn kea_leases(rel: &str) -> Vec<KeaLease> {
    let text = std::fs::read_to_string(data_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{rel}: no column {name}"))
    };
    let (
        c_addr,
        c_duid,
        c_valid,
        c_expire,
        c_subnet,
        c_pref,
        c_type,
        c_iaid,
        c_plen,
        c_state,
        c_ctx,
    ) = (
        col("address"),
        col("duid"),
        col("valid_lifetime"),
        col("expire"),
        col("subnet_id"),
        col("pref_lifetime"),
        col("lease_type"),
        col("iaid"),
        col("prefix_len"),
        col("state"),
        col("user_context"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let get = |i: usize| *f.get(i).unwrap_or_else(|| panic!("{rel}: short row {l}"));
            let num = |i: usize| -> u64 {
                get(i)
                    .parse()
                    .unwrap_or_else(|e| panic!("{rel}: {e} in {l}"))
            };
            let duid = hex::decode(get(c_duid).replace(':', ""))
                .unwrap_or_else(|e| panic!("{rel}: duid: {e}"));
            // Kea escapes commas inside a field as "&#x2c".
            let ctx = get(c_ctx).replace("&#x2c", ",");
            let relay_info = (!ctx.is_empty())
                .then(|| serde_json::from_str::<serde_json::Value>(&ctx))
                .transpose()
                .unwrap_or_else(|e| panic!("{rel}: user_context: {e}"))
                .and_then(|v| v.pointer("/ISC/relay-info").cloned());
            KeaLease {
                address: get(c_addr).parse().unwrap_or_else(|e| panic!("{rel}: {e}")),
                prefix_len: num(c_plen) as u8,
                prefix: num(c_type) == 2,
                duid,
                iaid: num(c_iaid) as u32,
                subnet_id: num(c_subnet) as u32,
                valid: num(c_valid) as u32,
                preferred: num(c_pref) as u32,
                expire: num(c_expire),
                state: num(c_state) as u32,
                relay_info,
            }
        })
        .collect()
}
