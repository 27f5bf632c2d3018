//! DHCP Unique Identifiers (RFC 8415 §11): the body of CLIENTID, SERVERID and RELAY_ID.
//!
//! ```text
//! DUID-LLT (1): type(2) hw-type(2) time(4) link-layer-address(*)
//! DUID-EN  (2): type(2) enterprise-number(4) identifier(*)
//! DUID-LL  (3): type(2) hw-type(2) link-layer-address(*)
//! DUID-UUID(4): type(2) uuid(16)
//! ```
//! The agent never acts on a DUID's inside: a DUID is an opaque key (the client of a binding, the
//! server that answered, our own identity, the relay's). So there is one type for it, [`Duid`]:
//! the exact bytes, immutable and shared, so that the binding cache, its indexes, the state file
//! and the queries all hold the same value and a copy is a reference-count bump.
//! [`DuidKind`] is the typed reading of those bytes, for what shows a DUID to a person
//! (`lqagent decode`, the pretty printer) and for tests that build one field by field.
//!
//! Any DUID that does not fit one of the typed forms (unknown type, too short, a UUID of the
//! wrong size) reads as [`DuidKind::Other`] with its exact bytes, type included. Reading a DUID
//! never fails; the enclosing option decides about emptiness.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::buf::Writer;
use super::error::Error;

/// A DUID: its exact bytes, immutable. `Clone` shares them (no copy), so the cache can key its
/// indexes by the same value its leases hold. Equality, hashing and order are those of the
/// bytes, and it borrows as `[u8]`, so a map keyed by `Duid` is searched with a borrowed
/// `&[u8]` straight from a packet, without building a `Duid` per lookup.
/// `Display` and `Debug` print lowercase hex without separators, as logs and the control
/// socket show DUIDs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Duid(Arc<[u8]>);

impl Duid {
    /// The DUID's bytes, as on the wire (type code included).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The typed reading of the bytes (a new value; for display and tests, not for keys).
    pub fn kind(&self) -> DuidKind {
        DuidKind::parse(&self.0)
    }

    /// DUID-LL for an Ethernet MAC (hardware type 1), the usual shape for an agent's own DUID.
    pub fn ll_ethernet(mac: [u8; 6]) -> Duid {
        let [a, b, c, d, e, f] = mac;
        Duid::from([0, 3, 0, 1, a, b, c, d, e, f])
    }

    /// A copy of the bytes in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Bytes on the wire.
    pub fn buffer_len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.put(&self.0)
    }

    /// Writes the DUID into `buf` (which needs `buffer_len()` bytes); returns bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf);
        self.emit_to(&mut w)?;
        Ok(w.pos())
    }
}

impl Deref for Duid {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Duid {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Lets `HashMap<Duid, _>` and friends be searched with a borrowed `&[u8]`: sound because
/// `Hash`, `Eq` and `Ord` of a `Duid` are exactly those of its bytes.
impl Borrow<[u8]> for Duid {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for Duid {
    fn from(b: &[u8]) -> Duid {
        Duid(Arc::from(b))
    }
}

impl From<&Vec<u8>> for Duid {
    fn from(v: &Vec<u8>) -> Duid {
        Duid::from(&v[..])
    }
}

impl From<Vec<u8>> for Duid {
    fn from(v: Vec<u8>) -> Duid {
        Duid(Arc::from(v))
    }
}

impl From<Box<[u8]>> for Duid {
    fn from(b: Box<[u8]>) -> Duid {
        Duid(Arc::from(b))
    }
}

impl From<Arc<[u8]>> for Duid {
    fn from(a: Arc<[u8]>) -> Duid {
        Duid(a)
    }
}

impl<const N: usize> From<[u8; N]> for Duid {
    fn from(a: [u8; N]) -> Duid {
        Duid::from(&a[..])
    }
}

impl<const N: usize> From<&[u8; N]> for Duid {
    fn from(a: &[u8; N]) -> Duid {
        Duid::from(&a[..])
    }
}

impl From<&DuidKind> for Duid {
    fn from(k: &DuidKind) -> Duid {
        Duid::from(k.to_vec())
    }
}

impl From<DuidKind> for Duid {
    fn from(k: DuidKind) -> Duid {
        Duid::from(&k)
    }
}

impl PartialEq<[u8]> for Duid {
    fn eq(&self, o: &[u8]) -> bool {
        *self.0 == *o
    }
}

impl PartialEq<&[u8]> for Duid {
    fn eq(&self, o: &&[u8]) -> bool {
        *self.0 == **o
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Duid {
    fn eq(&self, o: &[u8; N]) -> bool {
        *self.0 == o[..]
    }
}

impl PartialEq<Vec<u8>> for Duid {
    fn eq(&self, o: &Vec<u8>) -> bool {
        *self.0 == o[..]
    }
}

impl PartialEq<Duid> for [u8] {
    fn eq(&self, o: &Duid) -> bool {
        *self == *o.0
    }
}

impl PartialEq<Duid> for Vec<u8> {
    fn eq(&self, o: &Duid) -> bool {
        self[..] == *o.0
    }
}

impl fmt::Display for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A DUID read into its typed form when it fits one, else its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DuidKind {
    /// DUID-LLT: link-layer address plus time (seconds since 2000-01-01 UTC, mod 2^32).
    Llt {
        hw_type: u16,
        time: u32,
        link_layer: Vec<u8>,
    },
    /// DUID-EN: vendor enterprise number plus vendor-assigned identifier.
    En {
        enterprise: u32,
        identifier: Vec<u8>,
    },
    /// DUID-LL: link-layer address.
    Ll { hw_type: u16, link_layer: Vec<u8> },
    /// DUID-UUID (RFC 6355).
    Uuid([u8; 16]),
    /// Any other DUID, as its full bytes (type code included).
    Other(Vec<u8>),
}

impl DuidKind {
    pub const TYPE_LLT: u16 = 1;
    pub const TYPE_EN: u16 = 2;
    pub const TYPE_LL: u16 = 3;
    pub const TYPE_UUID: u16 = 4;

    /// Reads a DUID from the whole of `bytes`. Never fails: what does not fit a typed form
    /// becomes [`DuidKind::Other`].
    pub fn parse(bytes: &[u8]) -> DuidKind {
        let typed = match bytes {
            [0, 1, h0, h1, t0, t1, t2, t3, ll @ ..] => Some(DuidKind::Llt {
                hw_type: u16::from_be_bytes([*h0, *h1]),
                time: u32::from_be_bytes([*t0, *t1, *t2, *t3]),
                link_layer: ll.to_vec(),
            }),
            [0, 2, e0, e1, e2, e3, id @ ..] => Some(DuidKind::En {
                enterprise: u32::from_be_bytes([*e0, *e1, *e2, *e3]),
                identifier: id.to_vec(),
            }),
            [0, 3, h0, h1, ll @ ..] => Some(DuidKind::Ll {
                hw_type: u16::from_be_bytes([*h0, *h1]),
                link_layer: ll.to_vec(),
            }),
            [0, 4, uuid @ ..] => <[u8; 16]>::try_from(uuid).ok().map(DuidKind::Uuid),
            _ => None,
        };
        typed.unwrap_or_else(|| DuidKind::Other(bytes.to_vec()))
    }

    /// Bytes on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            DuidKind::Llt { link_layer, .. } => 8 + link_layer.len(),
            DuidKind::En { identifier, .. } => 6 + identifier.len(),
            DuidKind::Ll { link_layer, .. } => 4 + link_layer.len(),
            DuidKind::Uuid(_) => 18,
            DuidKind::Other(b) => b.len(),
        }
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        match self {
            DuidKind::Llt {
                hw_type,
                time,
                link_layer,
            } => {
                w.u16(Self::TYPE_LLT)?;
                w.u16(*hw_type)?;
                w.u32(*time)?;
                w.put(link_layer)
            }
            DuidKind::En {
                enterprise,
                identifier,
            } => {
                w.u16(Self::TYPE_EN)?;
                w.u32(*enterprise)?;
                w.put(identifier)
            }
            DuidKind::Ll {
                hw_type,
                link_layer,
            } => {
                w.u16(Self::TYPE_LL)?;
                w.u16(*hw_type)?;
                w.put(link_layer)
            }
            DuidKind::Uuid(u) => {
                w.u16(Self::TYPE_UUID)?;
                w.put(u)
            }
            DuidKind::Other(b) => w.put(b),
        }
    }

    /// Writes the DUID into `buf` (which needs `buffer_len()` bytes); returns bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf);
        self.emit_to(&mut w)?;
        Ok(w.pos())
    }

    /// The wire bytes as a new vector (handy as a map key or for comparing with a view).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.buffer_len()];
        // Cannot fail: the buffer has exactly buffer_len() bytes.
        let n = self.emit(&mut v).unwrap_or(0);
        v.truncate(n);
        v
    }

    /// DUID-LL for an Ethernet MAC (hardware type 1), the usual shape for an agent's own DUID.
    pub fn ll_ethernet(mac: [u8; 6]) -> DuidKind {
        DuidKind::Ll {
            hw_type: 1,
            link_layer: mac.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    /// Logs, `lqagent cache` and the control socket print a DUID as `hex::encode` does:
    /// `Display` and `Debug` must keep that text.
    #[test]
    fn display_and_debug_are_lowercase_hex_as_logs_print_it() {
        let bytes = [0u8, 3, 0, 1, 0xab, 0xcd, 0x0e, 0xf0];
        let d = Duid::from(&bytes);
        assert_eq!(d.to_string(), hex::encode(bytes));
        assert_eq!(format!("{d:?}"), "00030001abcd0ef0");
        assert_eq!(Duid::default().to_string(), "");
    }

    /// The store keys its indexes by `Duid` and looks them up with the packet's `&[u8]`; the
    /// merge's tie-break (R3) orders server DUIDs as byte strings, as it did on `Box<[u8]>`.
    #[test]
    fn a_duid_is_its_bytes_as_key_and_in_order() {
        let a = Duid::from(vec![0, 1, 0, 1, 9]);
        let mut h = HashMap::new();
        h.insert(a.clone(), 1);
        assert_eq!(h.get(&[0u8, 1, 0, 1, 9][..]), Some(&1));
        assert_eq!(h.get(&[0u8, 1, 0, 1][..]), None);
        let mut b = BTreeMap::new();
        b.insert(a.clone(), 1);
        assert_eq!(b.get(&[0u8, 1, 0, 1, 9][..]), Some(&1));
        let ordered = |x: &[u8], y: &[u8]| Duid::from(x).cmp(&Duid::from(y)) == x.cmp(y);
        assert!(ordered(&[0, 1], &[0, 1, 0]));
        assert!(ordered(&[0, 2], &[0, 1, 9]));
        assert!(ordered(&[], &[0]));
        assert_eq!(a, Duid::from(&[0u8, 1, 0, 1, 9]));
        assert_eq!(a, [0u8, 1, 0, 1, 9]);
    }

    /// Cheap to clone: a clone shares the bytes, so handing a DUID on never copies it.
    #[test]
    fn a_clone_shares_the_bytes() {
        let a = Duid::from(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
        let b = a.clone();
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
    }

    /// The typed reading and the bytes agree both ways, for every form and for what fits none.
    #[test]
    fn kind_reads_the_bytes_and_writes_them_back() {
        let kinds = [
            DuidKind::Llt {
                hw_type: 1,
                time: 0x2abc_def0,
                link_layer: vec![2, 0, 0, 0, 0, 1],
            },
            DuidKind::En {
                enterprise: 2495,
                identifier: vec![0xaa, 0xbb],
            },
            DuidKind::ll_ethernet([2, 0, 0, 0, 0, 2]),
            DuidKind::Uuid([7; 16]),
            DuidKind::Other(vec![0, 4, 1, 2]),
            DuidKind::Other(vec![0, 9, 0xff]),
        ];
        for k in kinds {
            let d = Duid::from(&k);
            assert_eq!(d.as_bytes(), &k.to_vec()[..]);
            assert_eq!(d.kind(), k);
        }
        assert_eq!(
            Duid::ll_ethernet([2, 0, 0, 0, 0, 2]),
            Duid::from(DuidKind::ll_ethernet([2, 0, 0, 0, 0, 2]))
        );
    }
}
