//! `Ipv6Prefix`: an IPv6 network (address + length) shared by the wire, cache and kernel layers.
//!
//! Invariant: `len <= 128` and every bit past `len` in `addr` is zero, so two equal networks
//! compare equal and hash alike whatever host bits the wire carried. Constructing from a wire
//! value with host bits set is possible only through [`Ipv6Prefix::new_truncating`], which says so.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// An IPv6 network: the address with host bits cleared, and the prefix length (0..=128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

/// Why a prefix could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrefixError {
    #[error("prefix length {0} is over 128")]
    LengthOver128(u8),
    #[error("prefix {0} has host bits set past its length")]
    HostBitsSet(String),
    #[error("cannot parse {0:?} as an IPv6 prefix (want ADDR/LEN)")]
    Syntax(String),
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Ipv6Prefix {
    /// A prefix whose address has no bits set past `len`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 128 {
            return Err(PrefixError::LengthOver128(len));
        }
        if u128::from(addr) & !mask(len) != 0 {
            return Err(PrefixError::HostBitsSet(format!("{addr}/{len}")));
        }
        Ok(Ipv6Prefix { addr, len })
    }

    /// A prefix from any address, clearing host bits (servers sometimes send them).
    pub fn new_truncating(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 128 {
            return Err(PrefixError::LengthOver128(len));
        }
        Ok(Ipv6Prefix {
            addr: Ipv6Addr::from(u128::from(addr) & mask(len)),
            len,
        })
    }

    /// The /128 holding exactly `addr`.
    pub fn host(addr: Ipv6Addr) -> Self {
        Ipv6Prefix { addr, len: 128 }
    }

    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for ::/0 only; here to satisfy the `len`/`is_empty` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `a` lies inside this network.
    pub fn contains(&self, a: Ipv6Addr) -> bool {
        u128::from(a) & mask(self.len) == u128::from(self.addr)
    }

    /// Whether `other` lies wholly inside this network.
    pub fn covers(&self, other: &Ipv6Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv6Prefix {
    type Err = PrefixError;

    /// `ADDR/LEN`, or a bare address meaning `/128`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PrefixError::Syntax(s.to_string());
        match s.split_once('/') {
            Some((a, l)) => {
                let addr = a.parse().map_err(|_| syntax())?;
                let len = l.parse().map_err(|_| syntax())?;
                Ipv6Prefix::new(addr, len)
            }
            None => Ok(Ipv6Prefix::host(s.parse().map_err(|_| syntax())?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_round_trip() {
        let p: Ipv6Prefix = "2001:db8:100::/56".parse().unwrap();
        assert_eq!(p.len(), 56);
        assert_eq!(p.to_string(), "2001:db8:100::/56");
        let h: Ipv6Prefix = "2001:db8::1".parse().unwrap();
        assert_eq!(h.len(), 128);
    }

    #[test]
    fn rejects_host_bits_and_long_lengths() {
        assert!(matches!(
            "2001:db8::1/64".parse::<Ipv6Prefix>(),
            Err(PrefixError::HostBitsSet(_))
        ));
        assert_eq!(
            Ipv6Prefix::new(Ipv6Addr::UNSPECIFIED, 129),
            Err(PrefixError::LengthOver128(129))
        );
        assert!(matches!(
            "nonsense".parse::<Ipv6Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
        let t = Ipv6Prefix::new_truncating("2001:db8::1".parse().unwrap(), 64).unwrap();
        assert_eq!(t.to_string(), "2001:db8::/64");
    }

    #[test]
    fn containment() {
        let p: Ipv6Prefix = "2001:db8:100::/56".parse().unwrap();
        assert!(p.contains("2001:db8:100:ff::1".parse().unwrap()));
        assert!(!p.contains("2001:db8:101::1".parse().unwrap()));
        assert!(p.covers(&"2001:db8:100:10::/64".parse().unwrap()));
        assert!(!p.covers(&"2001:db8::/48".parse().unwrap()));
        let all: Ipv6Prefix = "::/0".parse().unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
    }
}
