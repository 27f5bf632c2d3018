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

use super::buf::{Reader, Writer};
use super::codes::OptionCode;
use super::error::Error;
use super::option::{Ctx, Options};
use crate::prefix::{Ipv6Prefix, PrefixError};
use std::net::Ipv6Addr;

/// Lifetime value meaning "forever" (RFC 8415 §7.7).
pub const INFINITY: u32 = 0xffff_ffff;

pub(crate) fn bad_len(at: usize, code: OptionCode, len: usize, expected: &'static str) -> Error {
    Error::BadLength {
        at,
        code: code.0,
        len,
        expected,
    }
}

/// IA_NA or IA_PD: an identity association with renewal timers (the variant says which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ia {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub options: Options,
}

impl Ia {
    pub fn new(iaid: u32, t1: u32, t2: u32) -> Self {
        Ia {
            iaid,
            t1,
            t2,
            options: Options::new(),
        }
    }

    pub(crate) fn parse_body(
        code: OptionCode,
        mut r: Reader<'_>,
        at: usize,
        ctx: Ctx,
    ) -> Result<Self, Error> {
        if r.remaining() < 12 {
            return Err(bad_len(at, code, r.remaining(), "at least 12"));
        }
        Ok(Ia {
            iaid: r.u32("IAID")?,
            t1: r.u32("T1")?,
            t2: r.u32("T2")?,
            options: Options::parse_in(r, ctx.nested(at)?)?,
        })
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

/// IA_TA: temporary addresses, no timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaTa {
    pub iaid: u32,
    pub options: Options,
}

impl IaTa {
    pub(crate) fn parse_body(mut r: Reader<'_>, at: usize, ctx: Ctx) -> Result<Self, Error> {
        if r.remaining() < 4 {
            return Err(bad_len(at, OptionCode::IA_TA, r.remaining(), "at least 4"));
        }
        Ok(IaTa {
            iaid: r.u32("IAID")?,
            options: Options::parse_in(r, ctx.nested(at)?)?,
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        4 + self.options.buffer_len()
    }

    pub(crate) fn emit_body(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u32(self.iaid)?;
        self.options.emit_to(w)
    }
}

/// IAADDR: one address lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaAddr {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
    pub options: Options,
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

    pub(crate) fn parse_body(mut r: Reader<'_>, at: usize, ctx: Ctx) -> Result<Self, Error> {
        if r.remaining() < 24 {
            return Err(bad_len(
                at,
                OptionCode::IAADDR,
                r.remaining(),
                "at least 24",
            ));
        }
        Ok(IaAddr {
            addr: r.addr("IAADDR address")?,
            preferred: r.u32("preferred-lifetime")?,
            valid: r.u32("valid-lifetime")?,
            options: Options::parse_in(r, ctx.nested(at)?)?,
        })
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

/// IAPREFIX: one delegated prefix lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaPrefix {
    pub preferred: u32,
    pub valid: u32,
    pub prefix_len: u8,
    pub prefix_addr: Ipv6Addr,
    pub options: Options,
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

    pub(crate) fn parse_body(mut r: Reader<'_>, at: usize, ctx: Ctx) -> Result<Self, Error> {
        if r.remaining() < 25 {
            return Err(bad_len(
                at,
                OptionCode::IAPREFIX,
                r.remaining(),
                "at least 25",
            ));
        }
        Ok(IaPrefix {
            preferred: r.u32("preferred-lifetime")?,
            valid: r.u32("valid-lifetime")?,
            prefix_len: r.u8("prefix-length")?,
            prefix_addr: r.addr("IAPREFIX prefix")?,
            options: Options::parse_in(r, ctx.nested(at)?)?,
        })
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
