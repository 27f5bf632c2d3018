//! The lease table the reference server answers from, and its lookups.
//!
//! File format: JSON lines, one client-on-a-link per line (blank lines and lines starting with
//! `#` are skipped). Every field but `duid` and `link` may be left out:
//!
//! ```text
//! {"duid":"000300010a0000000001","link":"2001:db8:1::1",
//!  "addrs":[{"addr":"2001:db8:1::100","preferred":3600,"valid":7200}],
//!  "prefixes":[{"prefix":"2001:db8:100::/56","preferred":3600,"valid":7200}],
//!  "clt_time":30,"peer_address":"fe80::1","interface_id":"657468302e3130",
//!  "remote_id":{"enterprise":4491,"id":"0102"},"relay_id":"0003000102000000aa01"}
//! ```
//!
//! - `duid`, `interface_id`, `remote_id.id`, `relay_id`: hex bytes.
//! - `link`: the link-address the relay used for this client (RFC 5007 link-address).
//! - lifetimes are returned as written (the server does not age them); `clt_time` likewise.
//! - `peer_address`, `relay_address`, `interface_id`, `remote_id`, `relay_id` describe the
//!   RELAY-FORW that the server last saw for the client (`relay_address` defaults to `link`): they feed LQ_RELAY_DATA and the RFC 5460 queries by
//!   relay-id and remote-id.
//!
//! A client (one DUID) may appear on several links (one line per link): that is how the
//! server comes to answer LQ_CLIENT_LINK. Two lines with the same DUID and link are merged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv6Addr;
use std::path::Path;

use lqagent::prefix::Ipv6Prefix;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Hex-encoded bytes in the file, raw bytes in memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let clean: String = s.chars().filter(|c| *c != ':').collect();
        hex::decode(clean)
            .map(HexBytes)
            .map_err(serde::de::Error::custom)
    }
}

fn de_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv6Prefix, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn ser_prefix<S: Serializer>(p: &Ipv6Prefix, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string())
}

/// One leased address (goes out as an IAADDR inside CLIENT_DATA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddrLease {
    pub addr: Ipv6Addr,
    #[serde(default)]
    pub preferred: u32,
    #[serde(default)]
    pub valid: u32,
}

/// One delegated prefix (goes out as an IAPREFIX inside CLIENT_DATA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixLease {
    #[serde(deserialize_with = "de_prefix", serialize_with = "ser_prefix")]
    pub prefix: Ipv6Prefix,
    #[serde(default)]
    pub preferred: u32,
    #[serde(default)]
    pub valid: u32,
}

/// RFC 4649 remote-id: enterprise number and opaque id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteId {
    pub enterprise: u32,
    pub id: HexBytes,
}

/// One line of the table: what the server knows about one client on one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseEntry {
    pub duid: HexBytes,
    pub link: Ipv6Addr,
    #[serde(default)]
    pub addrs: Vec<AddrLease>,
    #[serde(default)]
    pub prefixes: Vec<PrefixLease>,
    #[serde(default)]
    pub clt_time: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<Ipv6Addr>,
    /// The relay agent's own address (LQ_RELAY_DATA peer-address); defaults to `link`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_address: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_id: Option<HexBytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<RemoteId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_id: Option<HexBytes>,
}

impl LeaseEntry {
    /// A client on `link` with nothing leased yet; fill the public fields as needed.
    pub fn new(duid: Vec<u8>, link: Ipv6Addr) -> Self {
        LeaseEntry {
            duid: HexBytes(duid),
            link,
            addrs: Vec::new(),
            prefixes: Vec::new(),
            clt_time: 0,
            peer_address: None,
            relay_address: None,
            interface_id: None,
            remote_id: None,
            relay_id: None,
        }
    }

    /// Whether anything here has a non-zero valid lifetime (RFC 5007 §4.3.3: only such
    /// leases are reported).
    pub fn has_live_lease(&self) -> bool {
        self.addrs.iter().any(|a| a.valid != 0) || self.prefixes.iter().any(|p| p.valid != 0)
    }
}

/// Why a table file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {source}")]
    Line {
        line: usize,
        source: serde_json::Error,
    },
}

/// The loaded table with the indexes each query type needs.
#[derive(Debug, Default, Clone)]
pub struct LeaseTable {
    entries: Vec<LeaseEntry>,
    by_key: HashMap<(Vec<u8>, Ipv6Addr), usize>,
    by_addr: HashMap<Ipv6Addr, usize>,
    /// Delegated prefixes by network address; they do not overlap in a sane table, so the
    /// greatest start at or below an address is the only candidate that can contain it.
    by_prefix_start: BTreeMap<u128, Vec<(Ipv6Prefix, usize)>>,
    by_duid: HashMap<Vec<u8>, Vec<usize>>,
    by_link: HashMap<Ipv6Addr, Vec<usize>>,
    by_relay_id: HashMap<Vec<u8>, Vec<usize>>,
    by_remote_id: HashMap<RemoteId, Vec<usize>>,
    extra_links: HashSet<Ipv6Addr>,
}

impl LeaseTable {
    /// Build from entries (merging lines with the same DUID and link).
    pub fn from_entries(entries: impl IntoIterator<Item = LeaseEntry>) -> Self {
        let mut t = LeaseTable::default();
        for e in entries {
            t.insert(e);
        }
        t
    }

    /// Parse the JSON-lines text described in the module docs.
    pub fn parse(text: &str) -> Result<Self, TableError> {
        let mut t = LeaseTable::default();
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let e: LeaseEntry = serde_json::from_str(line).map_err(|source| TableError::Line {
                line: no + 1,
                source,
            })?;
            t.insert(e);
        }
        Ok(t)
    }

    pub fn load(path: &Path) -> Result<Self, TableError> {
        let text = std::fs::read_to_string(path).map_err(|source| TableError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The table as JSON lines (what `parse` reads back).
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&serde_json::to_string(e).expect("entry serialises"));
            out.push('\n');
        }
        out
    }

    /// Declare a link the server serves even though no client is on it (so a query naming
    /// it gets "no binding" rather than NotConfigured).
    pub fn add_link(&mut self, link: Ipv6Addr) {
        self.extra_links.insert(link);
    }

    pub fn insert(&mut self, e: LeaseEntry) {
        let key = (e.duid.0.clone(), e.link);
        if let Some(&i) = self.by_key.get(&key) {
            let old = &mut self.entries[i];
            old.addrs.extend(e.addrs.iter().cloned());
            old.prefixes.extend(e.prefixes.iter().cloned());
            old.clt_time = e.clt_time;
            if e.peer_address.is_some() {
                old.peer_address = e.peer_address;
            }
            if e.relay_address.is_some() {
                old.relay_address = e.relay_address;
            }
            if e.interface_id.is_some() {
                old.interface_id = e.interface_id.clone();
            }
            if e.remote_id.is_some() {
                old.remote_id = e.remote_id.clone();
            }
            if e.relay_id.is_some() {
                old.relay_id = e.relay_id.clone();
            }
            self.index_leases(i, &e);
            if let Some(r) = &e.relay_id {
                push_unique(self.by_relay_id.entry(r.0.clone()).or_default(), i);
            }
            if let Some(r) = &e.remote_id {
                push_unique(self.by_remote_id.entry(r.clone()).or_default(), i);
            }
            return;
        }
        let i = self.entries.len();
        self.by_key.insert(key, i);
        self.index_leases(i, &e);
        self.by_duid.entry(e.duid.0.clone()).or_default().push(i);
        self.by_link.entry(e.link).or_default().push(i);
        if let Some(r) = &e.relay_id {
            self.by_relay_id.entry(r.0.clone()).or_default().push(i);
        }
        if let Some(r) = &e.remote_id {
            self.by_remote_id.entry(r.clone()).or_default().push(i);
        }
        self.entries.push(e);
    }

    fn index_leases(&mut self, i: usize, e: &LeaseEntry) {
        for a in &e.addrs {
            self.by_addr.insert(a.addr, i);
        }
        for p in &e.prefixes {
            self.by_prefix_start
                .entry(u128::from(p.prefix.addr()))
                .or_default()
                .push((p.prefix, i));
        }
    }

    pub fn entries(&self) -> &[LeaseEntry] {
        &self.entries
    }

    pub fn entry(&self, i: usize) -> &LeaseEntry {
        &self.entries[i]
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the server "serves" this link: a client is on it or it was declared.
    pub fn knows_link(&self, link: Ipv6Addr) -> bool {
        self.by_link.contains_key(&link) || self.extra_links.contains(&link)
    }

    /// Whether `addr` lies in the /64 of a link the server serves (Kea's subnets are /64s in
    /// every test that uses this).
    pub fn serves_64_of(&self, addr: Ipv6Addr) -> bool {
        self.link_of_64(addr).is_some()
    }

    /// The served link in the /64 of `addr` (the smallest, if several).
    pub fn link_of_64(&self, addr: Ipv6Addr) -> Option<Ipv6Addr> {
        let net = |a: Ipv6Addr| u128::from(a) >> 64;
        self.by_link
            .keys()
            .chain(self.extra_links.iter())
            .filter(|l| net(**l) == net(addr))
            .min()
            .copied()
    }

    /// The entry leasing `addr` as an IA_NA address or holding a delegated prefix that
    /// contains it (RFC 5007 §4.3.2 query by address).
    pub fn find_address(&self, addr: Ipv6Addr) -> Option<usize> {
        if let Some(&i) = self.by_addr.get(&addr) {
            return Some(i);
        }
        let (_, cands) = self
            .by_prefix_start
            .range(..=u128::from(addr))
            .next_back()?;
        cands
            .iter()
            .find(|(p, _)| p.contains(addr))
            .map(|&(_, i)| i)
    }

    /// Whether `addr` is leased as an IA_NA address (not merely inside a delegated prefix).
    pub fn has_address(&self, addr: Ipv6Addr) -> bool {
        self.by_addr.contains_key(&addr)
    }

    pub fn by_duid(&self, duid: &[u8]) -> &[usize] {
        self.by_duid.get(duid).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn by_link(&self, link: Ipv6Addr) -> &[usize] {
        self.by_link.get(&link).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn by_relay_id(&self, relay_id: &[u8]) -> &[usize] {
        self.by_relay_id
            .get(relay_id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn by_remote_id(&self, remote: &RemoteId) -> &[usize] {
        self.by_remote_id
            .get(remote)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

fn push_unique(v: &mut Vec<usize>, i: usize) {
    if !v.contains(&i) {
        v.push(i);
    }
}
