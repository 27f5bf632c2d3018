//! The state file's record codec: headers, record payloads and their framing, and the walk that
//! recovers every good record from a damaged file. Pure: bytes in, values out, no I/O — the
//! loader reads the files, the writer writes them (the layout is in the parent module's doc).
//!
//! Every byte decoded here may be damaged or hostile: lengths are bounded ([`MAX_RECORD`]),
//! every read is checked, and a bad record is reported, never a panic.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use super::PersistError;
use crate::cache::binding::{
    ClientInfo, IaType, Lease, LeaseKey, Link, RelayData, ServerId, Source, Timestamp,
};
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
        Record::Upsert(k, l) => {
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
                    b.push(1);
                    put_opt_addr(b, r.peer_address);
                    put_opt_bytes(b, r.interface_id.as_deref());
                    put_opt_bytes(b, r.remote_id.as_deref());
                }
                None => b.push(0),
            }
            put_bytes16(b, &l.server.duid);
            b.extend_from_slice(&l.server.address.octets());
        }
    }
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

/// Interns clients and servers while loading, so leases share them as in the live cache.
#[derive(Default)]
pub(super) struct Interner {
    clients: HashMap<ClientInfo, Arc<ClientInfo>>,
    servers: HashMap<ServerId, Arc<ServerId>>,
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
    fn bytes16(&mut self, what: &'static str) -> Result<Box<[u8]>, PersistError> {
        let n = usize::from(self.u16(what)?);
        Ok(self.take(n, what)?.into())
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
            let duid = c.bytes16("client duid")?;
            let link_addr = c.addr("link address")?;
            let interface = match c.opt_bytes("interface")? {
                Some(b) => Some(Arc::<str>::from(std::str::from_utf8(&b).map_err(|_| {
                    PersistError::Malformed {
                        at: c.at,
                        what: "interface",
                    }
                })?)),
                None => None,
            };
            let relay = if c.flag("relay")? {
                Some(Box::new(RelayData {
                    peer_address: c.opt_addr("peer address")?,
                    interface_id: c.opt_bytes("interface-id")?,
                    remote_id: c.opt_bytes("remote-id")?,
                }))
            } else {
                None
            };
            let sduid = c.bytes16("server duid")?;
            let saddr = c.addr("server address")?;
            let client = ClientInfo {
                duid: duid.into(),
                link: Link {
                    address: link_addr,
                    interface,
                },
                relay,
            };
            let client = intern
                .clients
                .entry(client.clone())
                .or_insert_with(|| Arc::new(client))
                .clone();
            let server = ServerId {
                duid: sduid,
                address: saddr,
            };
            let server = intern
                .servers
                .entry(server.clone())
                .or_insert_with(|| Arc::new(server))
                .clone();
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
    while at < bytes.len() {
        match frame_at(bytes, at, intern) {
            Ok((d, next)) => {
                f(d);
                at = next;
            }
            Err(why) => {
                let until = (at + 1..bytes.len())
                    .find(|p| frame_at(bytes, *p, &mut Interner::default()).is_ok())
                    .unwrap_or(bytes.len());
                damage.push(Damage { at, until, why });
                at = until;
            }
        }
    }
    damage
}
