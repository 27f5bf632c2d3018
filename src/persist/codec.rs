//! The state file's record codec: headers, record payloads and their framing, and the walk that
//! recovers every good record from a damaged file. Pure: bytes in, values out, no I/O — the
//! loader reads the files, the writer writes them (the layout is in the parent module's doc).
//!
//! Every byte decoded here may be damaged or hostile: lengths are bounded ([`MAX_RECORD`]),
//! every read is checked, and a bad record is reported, never a panic.

use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::sync::Arc;

use super::PersistError;
use crate::cache::binding::{
    AccessPort, ClientInfo, IaType, Lease, LeaseKey, Link, RelayData, ServerId, Source, Timestamp,
};
use crate::cache::storage::hash::KeyHashBuilder;
use crate::prefix::Ipv6Prefix;

const MAGIC: &[u8; 8] = b"LQAGSTAT";
pub const FORMAT_VERSION: u16 = 1;
pub(super) const KIND_SNAPSHOT: u8 = 1;
pub(super) const KIND_JOURNAL: u8 = 2;
pub(super) const HEADER_LEN: usize = 24;
/// Largest record payload accepted (a lease with maximal DUIDs and relay ids is far below).
pub const MAX_RECORD: usize = 64 * 1024;

const TAG_UPSERT: u8 = 1;
const TAG_REMOVE: u8 = 2;
const TAG_END: u8 = 3;
/// The relay flag of a lease whose relay data carries an [`AccessPort`] (an LDRA's level).
const RELAY_WITH_ACCESS: u8 = 2;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Upsert(LeaseKey, Lease),
    Remove(LeaseKey),
}

fn put_key(b: &mut Vec<u8>, k: &LeaseKey) {
    match k {
        LeaseKey::Address(a) => {
            b.push(0);
            b.extend_from_slice(&a.octets());
            b.push(128);
        }
        LeaseKey::Prefix(p) => {
            b.push(1);
            b.extend_from_slice(&p.addr().octets());
            b.push(p.len());
        }
    }
}

fn put_bytes16(b: &mut Vec<u8>, v: &[u8]) {
    let n = v.len().min(usize::from(u16::MAX));
    b.extend_from_slice(&(n as u16).to_le_bytes());
    b.extend_from_slice(&v[..n]);
}

fn put_opt_bytes(b: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            b.push(1);
            put_bytes16(b, v);
        }
        None => b.push(0),
    }
}

fn put_opt_addr(b: &mut Vec<u8>, a: Option<Ipv6Addr>) {
    match a {
        Some(a) => {
            b.push(1);
            b.extend_from_slice(&a.octets());
        }
        None => b.push(0),
    }
}

fn ia_to_u8(ia: IaType) -> u8 {
    match ia {
        IaType::Na => 0,
        IaType::Ta => 1,
        IaType::Pd => 2,
    }
}

/// Append the payload of `rec` to `b`.
pub fn encode_record(rec: &Record, b: &mut Vec<u8>) {
    match rec {
        Record::Remove(k) => {
            b.push(TAG_REMOVE);
            put_key(b, k);
        }
        Record::Upsert(k, l) => encode_upsert(k, l, b),
    }
}

/// Append the payload of an upsert of `l` at `k` to `b`: [`encode_record`] without a record
/// to build (a snapshot encodes every lease of the cache from borrowed ones).
pub(crate) fn encode_upsert(k: &LeaseKey, l: &Lease, b: &mut Vec<u8>) {
    b.push(TAG_UPSERT);
    put_key(b, k);
    b.push(ia_to_u8(l.ia));
    b.extend_from_slice(&l.iaid.to_le_bytes());
    for t in [
        l.preferred_until,
        l.valid_until,
        l.last_transaction,
        l.arrival,
    ] {
        b.extend_from_slice(&t.millis().to_le_bytes());
    }
    b.push(l.source.to_u8());
    match l.srsn {
        Some(s) => {
            b.push(1);
            b.extend_from_slice(&s.to_le_bytes());
        }
        None => b.push(0),
    }
    put_opt_addr(b, l.next_hop);
    let c = &l.client;
    put_bytes16(b, &c.duid);
    b.extend_from_slice(&c.link.address.octets());
    put_opt_bytes(b, c.link.interface.as_deref().map(str::as_bytes));
    match &c.relay {
        Some(r) => {
            // 1: relay data; 2: relay data and an access port after it (files written
            // before access ports existed only hold 0 and 1, and still load).
            b.push(if r.access.is_some() {
                RELAY_WITH_ACCESS
            } else {
                1
            });
            put_opt_addr(b, r.peer_address);
            put_opt_bytes(b, r.interface_id.as_deref());
            put_opt_bytes(b, r.remote_id.as_deref());
            if let Some(a) = &r.access {
                b.push(a.levels);
                put_opt_addr(b, a.peer_address);
                put_opt_bytes(b, a.interface_id.as_deref());
                put_opt_bytes(b, a.remote_id.as_deref());
            }
        }
        None => b.push(0),
    }
    put_bytes16(b, &l.server.duid);
    b.extend_from_slice(&l.server.address.octets());
}

/// Append the payload of a snapshot's `End` marker (the number of leases before it) to `b`.
pub(super) fn encode_end(count: usize, b: &mut Vec<u8>) {
    b.push(TAG_END);
    b.extend_from_slice(&(count as i64).to_le_bytes());
}

/// Frame a payload: length, checksum, payload.
pub(super) fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

pub(super) fn header(kind: u8, generation: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10] = kind;
    h[12..20].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// `Some(generation)` when `bytes` starts with a valid header of `kind`.
pub(super) fn parse_header(bytes: &[u8], kind: u8) -> Option<u64> {
    let h = bytes.get(..HEADER_LEN)?;
    let crc = u32::from_le_bytes(h[20..24].try_into().ok()?);
    if &h[..8] != MAGIC || crc32fast::hash(&h[..20]) != crc {
        return None;
    }
    if u16::from_le_bytes([h[8], h[9]]) != FORMAT_VERSION || h[10] != kind {
        return None;
    }
    Some(u64::from_le_bytes(h[12..20].try_into().ok()?))
}

// ---------------------------------------------------------------- decoding

/// Interns clients, servers and interface names while loading, so leases share them as in the
/// live cache.
///
/// Built for a million-record load: the sets hold the shared `Arc`s themselves (a lookup borrows
/// the decoded value, nothing is cloned to serve as a key), hash with the cache's seeded word
/// hasher instead of SipHash, and a record whose server or interface is the one seen last (most
/// records: few servers, few interfaces) allocates nothing for it.
#[derive(Default)]
pub(super) struct Interner {
    clients: HashSet<Arc<ClientInfo>, KeyHashBuilder>,
    servers: HashSet<Arc<ServerId>, KeyHashBuilder>,
    interfaces: HashSet<Arc<str>, KeyHashBuilder>,
    last_server: Option<Arc<ServerId>>,
}

impl Interner {
    /// Room for `records` leases' clients without a rehash (a rehash of a growing set hashes
    /// every client again).
    pub(super) fn reserve(&mut self, records: usize) {
        self.clients.reserve(records);
    }

    /// Distinct clients seen so far.
    pub(super) fn clients(&self) -> usize {
        self.clients.len()
    }

    fn client(&mut self, c: ClientInfo) -> Arc<ClientInfo> {
        if let Some(held) = self.clients.get(&c) {
            return held.clone();
        }
        let c = Arc::new(c);
        self.clients.insert(c.clone());
        c
    }

    fn server(&mut self, duid: &[u8], address: Ipv6Addr) -> Arc<ServerId> {
        if let Some(s) = &self.last_server {
            if *s.duid == *duid && s.address == address {
                return s.clone();
            }
        }
        let id = ServerId {
            duid: duid.into(),
            address,
        };
        let s = match self.servers.get(&id) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(id);
                self.servers.insert(s.clone());
                s
            }
        };
        self.last_server = Some(s.clone());
        s
    }

    fn interface(&mut self, name: &str) -> Arc<str> {
        if let Some(i) = self.interfaces.get(name) {
            return i.clone();
        }
        let i = Arc::<str>::from(name);
        self.interfaces.insert(i.clone());
        i
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PersistError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let Some(end) = end else {
            return Err(PersistError::Malformed { at: self.at, what });
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, PersistError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, PersistError> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, PersistError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, PersistError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(i64::from_le_bytes(a))
    }
    fn addr(&mut self, what: &'static str) -> Result<Ipv6Addr, PersistError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16, what)?);
        Ok(Ipv6Addr::from(a))
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, PersistError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(PersistError::Malformed {
                at: self.at - 1,
                what,
            }),
        }
    }
    /// A length-prefixed byte string, borrowed from the record (the caller copies what it keeps,
    /// into the container it keeps it in).
    fn slice16(&mut self, what: &'static str) -> Result<&'a [u8], PersistError> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }
    fn bytes16(&mut self, what: &'static str) -> Result<Box<[u8]>, PersistError> {
        Ok(self.slice16(what)?.into())
    }
    fn opt_slice(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, PersistError> {
        Ok(if self.flag(what)? {
            Some(self.slice16(what)?)
        } else {
            None
        })
    }
    fn opt_bytes(&mut self, what: &'static str) -> Result<Option<Box<[u8]>>, PersistError> {
        Ok(if self.flag(what)? {
            Some(self.bytes16(what)?)
        } else {
            None
        })
    }
    fn opt_addr(&mut self, what: &'static str) -> Result<Option<Ipv6Addr>, PersistError> {
        Ok(if self.flag(what)? {
            Some(self.addr(what)?)
        } else {
            None
        })
    }
    fn key(&mut self) -> Result<LeaseKey, PersistError> {
        let kind = self.u8("key kind")?;
        let a = self.addr("key address")?;
        let len = self.u8("key length")?;
        let at = self.at;
        match kind {
            0 if len == 128 => Ok(LeaseKey::Address(a)),
            1 => Ipv6Prefix::new(a, len)
                .map(LeaseKey::Prefix)
                .map_err(|_| PersistError::Malformed { at, what: "prefix" }),
            _ => Err(PersistError::Malformed {
                at,
                what: "key kind",
            }),
        }
    }
}

pub(super) enum Decoded {
    Rec(Record),
    End(u64),
}

fn decode_payload(p: &[u8], intern: &mut Interner) -> Result<Decoded, PersistError> {
    let mut c = Cursor { b: p, at: 0 };
    let d = match c.u8("tag")? {
        TAG_REMOVE => Decoded::Rec(Record::Remove(c.key()?)),
        TAG_END => {
            let n = c.i64("end count")?;
            Decoded::End(n as u64)
        }
        TAG_UPSERT => {
            let key = c.key()?;
            let ia = match c.u8("ia")? {
                0 => IaType::Na,
                1 => IaType::Ta,
                2 => IaType::Pd,
                _ => {
                    return Err(PersistError::Malformed {
                        at: c.at - 1,
                        what: "ia",
                    });
                }
            };
            let iaid = c.u32("iaid")?;
            let preferred_until = Timestamp::from_millis(c.i64("preferred")?);
            let valid_until = Timestamp::from_millis(c.i64("valid")?);
            let last_transaction = Timestamp::from_millis(c.i64("last transaction")?);
            let arrival = Timestamp::from_millis(c.i64("arrival")?);
            let source = Source::from_u8(c.u8("source")?).ok_or(PersistError::Malformed {
                at: c.at - 1,
                what: "source",
            })?;
            let srsn = if c.flag("srsn")? {
                Some(c.u32("srsn")?)
            } else {
                None
            };
            let next_hop = c.opt_addr("next hop")?;
            let duid = c.slice16("client duid")?;
            let link_addr = c.addr("link address")?;
            let interface = match c.opt_slice("interface")? {
                Some(b) => Some(intern.interface(std::str::from_utf8(b).map_err(|_| {
                    PersistError::Malformed {
                        at: c.at,
                        what: "interface",
                    }
                })?)),
                None => None,
            };
            let relay = match c.u8("relay")? {
                0 => None,
                flag @ (1 | RELAY_WITH_ACCESS) => {
                    let mut r = RelayData {
                        peer_address: c.opt_addr("peer address")?,
                        interface_id: c.opt_bytes("interface-id")?,
                        remote_id: c.opt_bytes("remote-id")?,
                        access: None,
                    };
                    if flag == RELAY_WITH_ACCESS {
                        r.access = Some(Box::new(AccessPort {
                            levels: c.u8("access levels")?,
                            peer_address: c.opt_addr("access peer address")?,
                            interface_id: c.opt_bytes("access interface-id")?,
                            remote_id: c.opt_bytes("access remote-id")?,
                        }));
                    }
                    Some(Box::new(r))
                }
                _ => {
                    return Err(PersistError::Malformed {
                        at: c.at - 1,
                        what: "relay",
                    });
                }
            };
            let sduid = c.slice16("server duid")?;
            let saddr = c.addr("server address")?;
            let client = intern.client(ClientInfo {
                duid: duid.into(),
                link: Link {
                    address: link_addr,
                    interface,
                },
                relay,
            });
            let server = intern.server(sduid, saddr);
            Decoded::Rec(Record::Upsert(
                key,
                Lease {
                    client,
                    server,
                    ia,
                    iaid,
                    preferred_until,
                    valid_until,
                    last_transaction,
                    arrival,
                    source,
                    srsn,
                    next_hop,
                },
            ))
        }
        _ => return Err(PersistError::Malformed { at: 0, what: "tag" }),
    };
    if c.at != p.len() {
        return Err(PersistError::Malformed {
            at: c.at,
            what: "trailing bytes",
        });
    }
    Ok(d)
}

/// Decode one record payload (for tests and tools).
pub fn decode_record(p: &[u8]) -> Result<Record, PersistError> {
    match decode_payload(p, &mut Interner::default())? {
        Decoded::Rec(r) => Ok(r),
        Decoded::End(_) => Err(PersistError::Malformed {
            at: 0,
            what: "end marker",
        }),
    }
}

/// The record framed at `at`, and where the next one starts.
fn frame_at(
    bytes: &[u8],
    at: usize,
    intern: &mut Interner,
) -> Result<(Decoded, usize), &'static str> {
    let Some(h) = bytes.get(at..at.saturating_add(8)) else {
        return Err("truncated record header");
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_RECORD {
        return Err("record length over limit");
    }
    let end = at + 8 + len;
    let Some(p) = bytes.get(at + 8..end) else {
        return Err("truncated record");
    };
    let mut hs = crc32fast::Hasher::new();
    hs.update(&h[..4]);
    hs.update(p);
    if hs.finalize() != crc {
        return Err("checksum mismatch");
    }
    match decode_payload(p, intern) {
        Ok(d) => Ok((d, end)),
        Err(_) => Err("undecodable record"),
    }
}

/// A stretch of a state file that held no good record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first bad byte.
    pub at: usize,
    /// Offset of the next good record (the file's length for a damaged tail).
    pub until: usize,
    pub why: &'static str,
}

/// Walk framed records from `at`. A bad record costs that record, not the rest: the walk
/// resynchronises at the next offset where a whole record with a good checksum and content
/// starts (a false match needs a CRC-32 collision and a decodable payload). Returns the damaged
/// stretches in file order.
pub(super) fn walk(
    bytes: &[u8],
    mut at: usize,
    intern: &mut Interner,
    mut f: impl FnMut(Decoded),
) -> Vec<Damage> {
    let mut damage = Vec::new();
    // Resynchronising only asks whether a frame decodes; what it interns is thrown away.
    let mut scratch = Interner::default();
    while at < bytes.len() {
        match frame_at(bytes, at, intern) {
            Ok((d, next)) => {
                f(d);
                at = next;
            }
            Err(why) => {
                let until = (at + 1..bytes.len())
                    .find(|p| frame_at(bytes, *p, &mut scratch).is_ok())
                    .unwrap_or(bytes.len());
                damage.push(Damage { at, until, why });
                at = until;
            }
        }
    }
    damage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(relay: Option<RelayData>) -> Lease {
        Lease {
            client: Arc::new(ClientInfo {
                duid: vec![0, 3, 0, 1, 2, 0x42, 0, 0, 0, 7].into(),
                link: Link {
                    address: "2001:db8:1::1".parse().unwrap(),
                    interface: Some(Arc::from("sub0")),
                },
                relay: relay.map(Box::new),
            }),
            server: Arc::new(ServerId {
                duid: vec![0, 1].into(),
                address: "2001:db8:ffff::2".parse().unwrap(),
            }),
            ia: IaType::Pd,
            iaid: 9,
            preferred_until: Timestamp::from_millis(1_000),
            valid_until: Timestamp::from_millis(2_000),
            last_transaction: Timestamp::from_millis(3),
            arrival: Timestamp::from_millis(4),
            source: Source::Snoop,
            srsn: None,
            next_hop: Some("fe80::7".parse().unwrap()),
        }
    }

    fn key() -> LeaseKey {
        LeaseKey::Prefix("2001:db8:100::/56".parse().unwrap())
    }

    /// A record as format version 1 wrote it before access ports existed, byte by byte: a
    /// state file written by an older lqagent must load unchanged.
    fn old_record() -> Vec<u8> {
        let mut b = vec![TAG_UPSERT, 1];
        b.extend_from_slice(&"2001:db8:100::".parse::<Ipv6Addr>().unwrap().octets());
        b.push(56);
        b.push(2); // IA_PD
        b.extend_from_slice(&9u32.to_le_bytes());
        for t in [1_000i64, 2_000, 3, 4] {
            b.extend_from_slice(&t.to_le_bytes());
        }
        b.push(0); // source snoop
        b.push(0); // no srsn
        b.push(1);
        b.extend_from_slice(&"fe80::7".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&10u16.to_le_bytes());
        b.extend_from_slice(&[0, 3, 0, 1, 2, 0x42, 0, 0, 0, 7]);
        b.extend_from_slice(&"2001:db8:1::1".parse::<Ipv6Addr>().unwrap().octets());
        b.push(1);
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(b"sub0");
        b.push(1); // relay data, old layout: peer, interface-id, remote-id
        b.push(1);
        b.extend_from_slice(&"fe80::7".parse::<Ipv6Addr>().unwrap().octets());
        b.push(1);
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(b"sub0");
        b.push(0);
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&[0, 1]);
        b.extend_from_slice(&"2001:db8:ffff::2".parse::<Ipv6Addr>().unwrap().octets());
        b
    }

    fn plain_relay() -> RelayData {
        RelayData {
            peer_address: Some("fe80::7".parse().unwrap()),
            interface_id: Some(b"sub0".to_vec().into()),
            remote_id: None,
            access: None,
        }
    }

    #[test]
    fn a_record_without_access_port_is_the_old_layout_and_old_records_load() {
        let want = Record::Upsert(key(), lease(Some(plain_relay())));
        assert_eq!(decode_record(&old_record()).unwrap(), want);
        let mut b = Vec::new();
        encode_record(&want, &mut b);
        assert_eq!(
            b,
            old_record(),
            "no access port: byte for byte what older versions wrote"
        );
    }

    #[test]
    fn an_access_port_round_trips_and_damage_is_reported() {
        let mut relay = plain_relay();
        relay.access = Some(Box::new(AccessPort {
            levels: 1,
            peer_address: Some("fe80::7".parse().unwrap()),
            interface_id: Some(b"port-3".to_vec().into()),
            remote_id: Some(vec![0, 0, 0x11, 0x8b, b'x'].into()),
        }));
        let rec = Record::Upsert(key(), lease(Some(relay)));
        let mut b = Vec::new();
        encode_record(&rec, &mut b);
        assert_eq!(decode_record(&b).unwrap(), rec);
        for cut in 1..b.len() {
            assert!(decode_record(&b[..cut]).is_err(), "truncated at {cut}");
        }
        // An unknown relay flag is damage, not a guess.
        let mut bad = old_record();
        let at = bad.len() - (16 + 2 + 2) - (1 + 1 + 2 + 4) - (1 + 16) - 1;
        assert_eq!(bad[at], 1, "the relay flag");
        bad[at] = 3;
        assert!(decode_record(&bad).is_err());
    }
}
