//! DHCP Unique Identifiers (RFC 8415 §11): the body of CLIENTID, SERVERID and RELAY_ID.
//!
//! ```text
//! DUID-LLT (1): type(2) hw-type(2) time(4) link-layer-address(*)
//! DUID-EN  (2): type(2) enterprise-number(4) identifier(*)
//! DUID-LL  (3): type(2) hw-type(2) link-layer-address(*)
//! DUID-UUID(4): type(2) uuid(16)
//! ```
//! Any DUID that does not fit one of these (unknown type, too short, a UUID of the wrong size)
//! is kept as [`Duid::Other`] with its exact bytes, type included, so it round-trips and still
//! works as a key. Parsing a DUID never fails; the enclosing option decides about emptiness.

use super::buf::Writer;
use super::error::Error;

/// A DUID in its typed form when it fits one, else its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Duid {
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

impl Duid {
    pub const TYPE_LLT: u16 = 1;
    pub const TYPE_EN: u16 = 2;
    pub const TYPE_LL: u16 = 3;
    pub const TYPE_UUID: u16 = 4;

    /// Reads a DUID from the whole of `bytes`. Never fails: what does not fit a typed form
    /// becomes [`Duid::Other`].
    pub fn parse(bytes: &[u8]) -> Duid {
        let typed = match bytes {
            [0, 1, h0, h1, t0, t1, t2, t3, ll @ ..] => Some(Duid::Llt {
                hw_type: u16::from_be_bytes([*h0, *h1]),
                time: u32::from_be_bytes([*t0, *t1, *t2, *t3]),
                link_layer: ll.to_vec(),
            }),
            [0, 2, e0, e1, e2, e3, id @ ..] => Some(Duid::En {
                enterprise: u32::from_be_bytes([*e0, *e1, *e2, *e3]),
                identifier: id.to_vec(),
            }),
            [0, 3, h0, h1, ll @ ..] => Some(Duid::Ll {
                hw_type: u16::from_be_bytes([*h0, *h1]),
                link_layer: ll.to_vec(),
            }),
            [0, 4, uuid @ ..] => <[u8; 16]>::try_from(uuid).ok().map(Duid::Uuid),
            _ => None,
        };
        typed.unwrap_or_else(|| Duid::Other(bytes.to_vec()))
    }

    /// Bytes on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            Duid::Llt { link_layer, .. } => 8 + link_layer.len(),
            Duid::En { identifier, .. } => 6 + identifier.len(),
            Duid::Ll { link_layer, .. } => 4 + link_layer.len(),
            Duid::Uuid(_) => 18,
            Duid::Other(b) => b.len(),
        }
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        match self {
            Duid::Llt {
                hw_type,
                time,
                link_layer,
            } => {
                w.u16(Self::TYPE_LLT)?;
                w.u16(*hw_type)?;
                w.u32(*time)?;
                w.put(link_layer)
            }
            Duid::En {
                enterprise,
                identifier,
            } => {
                w.u16(Self::TYPE_EN)?;
                w.u32(*enterprise)?;
                w.put(identifier)
            }
            Duid::Ll {
                hw_type,
                link_layer,
            } => {
                w.u16(Self::TYPE_LL)?;
                w.u16(*hw_type)?;
                w.put(link_layer)
            }
            Duid::Uuid(u) => {
                w.u16(Self::TYPE_UUID)?;
                w.put(u)
            }
            Duid::Other(b) => w.put(b),
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
    pub fn ll_ethernet(mac: [u8; 6]) -> Duid {
        Duid::Ll {
            hw_type: 1,
            link_layer: mac.to_vec(),
        }
    }
}
