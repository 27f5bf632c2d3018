//! Identity associations and their leases (RFC 8415 §21.4–21.6, §21.21–21.22).
//!
//! ```text
//! IA_NA / IA_PD body: IAID(4) T1(4) T2(4) options(*)
//! IA_TA body:         IAID(4) options(*)
//! IAADDR body:        address(16) preferred-lifetime(4) valid-lifetime(4) options(*)
//! IAPREFIX body:      preferred-lifetime(4) valid-lifetime(4) prefix-length(1) prefix(16) options(*)
//! ```
//! Lifetimes are kept as the wire's seconds; `0xffffffff` means infinity (RFC 8415 §7.7).
//! An IAPREFIX keeps the prefix bytes and length exactly as sent (host bits and lengths over
//! 128 included) so it round-trips; [`IaPrefix::prefix`] gives the checked network.

use super::buf::Writer;
use super::error::Error;
use super::owned::{Ia, IaAddr, IaPrefix, IaTa, Options};
use crate::prefix::{Ipv6Prefix, PrefixError};
use std::net::Ipv6Addr;

/// The lifetime value meaning "forever" (RFC 8415 §7.7): the one name for it, in the codec, the
/// cache's clock arithmetic and the CLI's display.
pub const INFINITE_LIFETIME: u32 = 0xffff_ffff;

impl Ia {
    pub fn new(iaid: u32, t1: u32, t2: u32) -> Self {
        Ia {
            iaid,
            t1,
            t2,
            options: Options::new(),
        }
    }

    pub(crate) fn body_len(&self) -> usize {
        12 + self.options.buffer_len()
    }

    pub(crate) fn emit_body(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u32(self.iaid)?;
        w.u32(self.t1)?;
        w.u32(self.t2)?;
        self.options.emit_to(w)
    }
}

impl IaTa {
    pub(crate) fn body_len(&self) -> usize {
        4 + self.options.buffer_len()
    }

    pub(crate) fn emit_body(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u32(self.iaid)?;
        self.options.emit_to(w)
    }
}

impl IaAddr {
    pub fn new(addr: Ipv6Addr, preferred: u32, valid: u32) -> Self {
        IaAddr {
            addr,
            preferred,
            valid,
            options: Options::new(),
        }
    }

    pub(crate) fn body_len(&self) -> usize {
        24 + self.options.buffer_len()
    }

    pub(crate) fn emit_body(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.addr(&self.addr)?;
        w.u32(self.preferred)?;
        w.u32(self.valid)?;
        self.options.emit_to(w)
    }
}

impl IaPrefix {
    pub fn new(prefix: Ipv6Prefix, preferred: u32, valid: u32) -> Self {
        IaPrefix {
            preferred,
            valid,
            prefix_len: prefix.len(),
            prefix_addr: prefix.addr(),
            options: Options::new(),
        }
    }

    /// The delegated network, host bits cleared; an error if the length is over 128.
    pub fn prefix(&self) -> Result<Ipv6Prefix, PrefixError> {
        Ipv6Prefix::new_truncating(self.prefix_addr, self.prefix_len)
    }

    pub(crate) fn body_len(&self) -> usize {
        25 + self.options.buffer_len()
    }

    pub(crate) fn emit_body(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u32(self.preferred)?;
        w.u32(self.valid)?;
        w.u8(self.prefix_len)?;
        w.addr(&self.prefix_addr)?;
        self.options.emit_to(w)
    }
}
