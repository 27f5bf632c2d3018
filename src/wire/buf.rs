//! Checked byte cursors shared by every codec in `wire`.
//!
//! `Reader` never indexes past its slice: every read checks the remaining length first and
//! returns `Error::Truncated` with the absolute offset. `Writer` likewise checks room before every
//! write and back-patches 16-bit option lengths once the body is written, so nested encodings
//! need no second pass.

use super::error::Error;
use std::net::Ipv6Addr;

/// A read cursor over one region (message, option body) of the outermost buffer.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the outermost buffer, for error reports.
    base: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    /// Absolute offset of the next byte.
    #[inline]
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes, or `Truncated` naming `what`.
    #[inline]
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        let have = self.remaining();
        if n > have {
            return Err(Error::Truncated {
                at: self.offset(),
                what,
                need: n,
                have,
            });
        }
        let out = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(Error::Truncated {
                at: self.offset(),
                what,
                need: n,
                have,
            })?;
        self.pos += n;
        Ok(out)
    }

    /// Everything not read yet.
    #[inline]
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        out
    }

    #[inline]
    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let s = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// The next `N` bytes, borrowed as an array (a header kept by reference).
    #[inline]
    pub(crate) fn array_ref<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<&'a [u8; N], Error> {
        let at = self.offset();
        let s = self.take(N, what)?;
        s.first_chunk::<N>().ok_or(Error::Truncated {
            at,
            what,
            need: N,
            have: s.len(),
        })
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }
}

/// A write cursor over a caller-provided buffer.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    #[inline]
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn put(&mut self, data: &[u8]) -> Result<(), Error> {
        let have = self.buf.len();
        let end = self.pos + data.len();
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.copy_from_slice(data);
                self.pos = end;
                Ok(())
            }
            None => Err(Error::BufferTooSmall { need: end, have }),
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self, v: u8) -> Result<(), Error> {
        self.put(&[v])
    }

    #[inline]
    pub(crate) fn u16(&mut self, v: u16) -> Result<(), Error> {
        self.put(&v.to_be_bytes())
    }

    #[inline]
    pub(crate) fn u32(&mut self, v: u32) -> Result<(), Error> {
        self.put(&v.to_be_bytes())
    }

    #[inline]
    pub(crate) fn addr(&mut self, a: &Ipv6Addr) -> Result<(), Error> {
        self.put(&a.octets())
    }

    /// Writes an option header with a placeholder length; returns the body start for
    /// [`Writer::end_option`].
    #[inline]
    pub(crate) fn begin_option(&mut self, code: u16) -> Result<usize, Error> {
        self.u16(code)?;
        self.u16(0)?;
        Ok(self.pos)
    }

    /// Back-patches the length of the option whose body started at `body_start`.
    #[inline]
    pub(crate) fn end_option(&mut self, body_start: usize) -> Result<(), Error> {
        let len = self.pos - body_start;
        let len16 = u16::try_from(len).map_err(|_| Error::TooLong {
            what: "option body",
            len,
        })?;
        let have = self.buf.len();
        let start = body_start.checked_sub(2).unwrap_or(usize::MAX);
        match self.buf.get_mut(start..body_start) {
            Some(dst) => {
                dst.copy_from_slice(&len16.to_be_bytes());
                Ok(())
            }
            None => Err(Error::BufferTooSmall {
                need: body_start,
                have,
            }),
        }
    }
}
