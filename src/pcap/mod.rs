//! Capture files, read and written in memory: classic libpcap (both byte orders, microsecond and
//! nanosecond timestamps) and pcapng (section, interface and enhanced/simple packet blocks).
//! Pure: the caller reads the file; [`Capture::parse`] checks the file header and
//! [`Capture::packets`] yields each packet or the first error, then stops.
//!
//! ```text
//! classic: magic(4) major(2) minor(2) zone(4) sigfigs(4) snaplen(4) linktype(4)
//!          { ts-sec(4) ts-frac(4) incl-len(4) orig-len(4) data(incl-len) }*
//! pcapng:  { block-type(4) block-len(4) body(block-len - 12) block-len(4) }*
//! ```
//! Every length from the file is checked against what is left before use and bounded by
//! [`MAX_PACKET`]; pcapng interfaces are bounded by [`MAX_INTERFACES`]. [`link`] turns a packet of
//! a supported link type into its IPv6 packet, and `snoop::datagram` reads IPv6 + UDP from there.
//! [`write`] makes classic captures (tests build them to check `lqagent decode` and tshark).

pub mod link;
pub mod write;

use crate::snoop::datagram::{self, DatagramError, Udp6};
use crate::wire::{CLIENT_PORT, SERVER_PORT};

/// Largest packet accepted (classic libpcap's own limit for most link types).
pub(crate) const MAX_PACKET: usize = 262_144;
/// Most pcapng interface description blocks kept per section.
pub(crate) const MAX_INTERFACES: usize = 1024;

/// Why a capture file cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PcapError {
    #[error("not a capture file: magic {magic:08x} is neither libpcap nor pcapng")]
    BadMagic { magic: u32 },
    #[error("truncated {what} at file offset {at}")]
    Truncated { what: &'static str, at: usize },
    #[error("{what} at file offset {at} claims {len} bytes, more than the limit of {max}")]
    TooLong {
        what: &'static str,
        at: usize,
        len: usize,
        max: usize,
    },
    #[error("pcapng block at file offset {at} has bad length {len}")]
    BadBlock { at: usize, len: usize },
    #[error("pcapng packet at file offset {at} names interface {id}, which was not described")]
    NoInterface { at: usize, id: u32 },
    #[error("pcapng section at file offset {at} describes more than {MAX_INTERFACES} interfaces")]
    TooManyInterfaces { at: usize },
}

/// One captured packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// 1-based position in the file (as Wireshark numbers frames).
    pub number: usize,
    /// Capture time, seconds and nanoseconds since 1970-01-01 UTC.
    pub ts_sec: u64,
    pub ts_nsec: u32,
    /// The link type (LINKTYPE_* number) of `data`.
    pub link_type: u16,
    /// The captured bytes (maybe fewer than the packet had on the wire).
    pub data: &'a [u8],
    pub orig_len: u32,
}

/// Why a packet holds no UDP-in-IPv6 datagram we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error(transparent)]
    Datagram(#[from] DatagramError),
}

impl<'a> Packet<'a> {
    /// The UDP datagram in this packet (link layer, IPv6 and its extension headers walked).
    pub fn udp6(&self) -> Result<Udp6<'a>, PacketError> {
        let ip = link::ipv6_packet(self.link_type, self.data)?;
        Ok(datagram::parse(ip)?)
    }
}

/// True for a datagram from or to a DHCPv6 port (546 or 547, RFC 8415 §7.2).
pub fn is_dhcpv6(d: &Udp6<'_>) -> bool {
    [d.src_port, d.dst_port]
        .iter()
        .any(|p| *p == CLIENT_PORT || *p == SERVER_PORT)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Classic libpcap: big-endian?, nanosecond timestamps?, link type.
    Classic {
        be: bool,
        nanos: bool,
        link: u16,
    },
    Pcapng,
}

/// A capture file's bytes with a checked header.
#[derive(Debug, Clone, Copy)]
pub struct Capture<'a> {
    bytes: &'a [u8],
    format: Format,
}

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;

fn get<const N: usize>(b: &[u8], at: usize, what: &'static str) -> Result<[u8; N], PcapError> {
    b.get(at..at.saturating_add(N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(PcapError::Truncated { what, at })
}

fn u32_at(b: &[u8], at: usize, be: bool, what: &'static str) -> Result<u32, PcapError> {
    let a = get::<4>(b, at, what)?;
    Ok(if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    })
}

fn u16_at(b: &[u8], at: usize, be: bool, what: &'static str) -> Result<u16, PcapError> {
    let a = get::<2>(b, at, what)?;
    Ok(if be {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    })
}

impl<'a> Capture<'a> {
    /// Checks the file header.
    pub fn parse(bytes: &'a [u8]) -> Result<Capture<'a>, PcapError> {
        let magic = u32_at(bytes, 0, true, "file header")?;
        let format = match magic {
            PCAPNG_SHB => Format::Pcapng,
            _ => {
                let (be, nanos) = match (magic, magic.swap_bytes()) {
                    (MAGIC_US, _) => (true, false),
                    (MAGIC_NS, _) => (true, true),
                    (_, MAGIC_US) => (false, false),
                    (_, MAGIC_NS) => (false, true),
                    _ => return Err(PcapError::BadMagic { magic }),
                };
                // The upper 16 bits of the link-type field may hold FCS flags (pcap-savefile(5)).
                let link = u32_at(bytes, 20, be, "file header")? as u16;
                Format::Classic { be, nanos, link }
            }
        };
        Ok(Capture { bytes, format })
    }

    /// "pcap" or "pcapng".
    pub fn format_name(&self) -> &'static str {
        match self.format {
            Format::Classic { .. } => "pcap",
            Format::Pcapng => "pcapng",
        }
    }

    /// The packets, in file order; the first error ends the iteration.
    pub fn packets(&self) -> Packets<'a> {
        let at = match self.format {
            Format::Classic { .. } => 24,
            Format::Pcapng => 0,
        };
        Packets {
            bytes: self.bytes,
            format: self.format,
            at,
            number: 0,
            interfaces: Vec::new(),
            be: false,
            done: false,
        }
    }
}

/// A pcapng interface: link type and timestamp units per second.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link: u16,
    units_per_sec: u64,
}

/// Iterator over a capture's packets.
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    bytes: &'a [u8],
    format: Format,
    at: usize,
    number: usize,
    interfaces: Vec<Interface>,
    /// pcapng: byte order of the current section.
    be: bool,
    done: bool,
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<Packet<'a>, PcapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.at >= self.bytes.len() {
            return None;
        }
        let r = match self.format {
            Format::Classic { be, nanos, link } => self.classic(be, nanos, link).map(Some),
            Format::Pcapng => self.pcapng(),
        };
        match r {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<'a> Packets<'a> {
    fn classic(&mut self, be: bool, nanos: bool, link: u16) -> Result<Packet<'a>, PcapError> {
        let b = self.bytes;
        let at = self.at;
        let what = "packet record header";
        let ts_sec = u32_at(b, at, be, what)?;
        let frac = u32_at(b, at + 4, be, what)?;
        let incl = u32_at(b, at + 8, be, what)? as usize;
        let orig_len = u32_at(b, at + 12, be, what)?;
        if incl > MAX_PACKET {
            return Err(PcapError::TooLong {
                what: "packet record",
                at,
                len: incl,
                max: MAX_PACKET,
            });
        }
        let data = b.get(at + 16..at + 16 + incl).ok_or(PcapError::Truncated {
            what: "packet data",
            at: at + 16,
        })?;
        self.at = at + 16 + incl;
        self.number += 1;
        let ts_nsec = if nanos {
            frac
        } else {
            frac.saturating_mul(1000)
        };
        Ok(Packet {
            number: self.number,
            ts_sec: u64::from(ts_sec) + u64::from(ts_nsec / 1_000_000_000),
            ts_nsec: ts_nsec % 1_000_000_000,
            link_type: link,
            data,
            orig_len,
        })
    }

    /// The next packet block of a pcapng file, reading the other blocks on the way.
    fn pcapng(&mut self) -> Result<Option<Packet<'a>>, PcapError> {
        loop {
            let b = self.bytes;
            let at = self.at;
            if at >= b.len() {
                return Ok(None);
            }
            let raw_type = get::<4>(b, at, "block header")?;
            if u32::from_be_bytes(raw_type) == PCAPNG_SHB {
                // A new section: its byte-order magic decides the byte order from here on.
                let bom = get::<4>(b, at + 8, "section header")?;
                self.be = match (u32::from_be_bytes(bom), u32::from_le_bytes(bom)) {
                    (PCAPNG_BOM, _) => true,
                    (_, PCAPNG_BOM) => false,
                    (magic, _) => return Err(PcapError::BadMagic { magic }),
                };
                self.interfaces.clear();
            }
            let be = self.be;
            let block_type = u32_at(b, at, be, "block header")?;
            let len = u32_at(b, at + 4, be, "block header")? as usize;
            if len < 12 || len % 4 != 0 {
                return Err(PcapError::BadBlock { at, len });
            }
            let block = b
                .get(at..at.saturating_add(len))
                .ok_or(PcapError::Truncated {
                    what: "pcapng block",
                    at,
                })?;
            let body = block.get(8..len - 4).unwrap_or(&[]);
            self.at = at + len;
            match block_type {
                1 => self.interface(body, at)?,
                6 => return self.enhanced(body, at).map(Some),
                3 => return self.simple(body, at).map(Some),
                _ => {}
            }
        }
    }

    fn interface(&mut self, body: &[u8], at: usize) -> Result<(), PcapError> {
        let be = self.be;
        let link = u16_at(body, 0, be, "interface description")?;
        let mut units_per_sec = 1_000_000;
        // Options from byte 8: code(2) len(2) value padded to 4; if_tsresol is code 9.
        let mut o = 8;
        while let (Ok(code), Ok(olen)) = (u16_at(body, o, be, ""), u16_at(body, o + 2, be, "")) {
            let olen = usize::from(olen);
            if code == 0 {
                break;
            }
            if code == 9 && olen == 1 {
                let [r] = get::<1>(body, o + 4, "if_tsresol")?;
                let exp = u32::from(r & 0x7f);
                units_per_sec = if r & 0x80 == 0 {
                    10u64.checked_pow(exp).unwrap_or(u64::MAX)
                } else {
                    2u64.checked_pow(exp).unwrap_or(u64::MAX)
                };
            }
            o += 4 + olen.div_ceil(4) * 4;
        }
        if self.interfaces.len() >= MAX_INTERFACES {
            return Err(PcapError::TooManyInterfaces { at });
        }
        self.interfaces.push(Interface {
            link,
            units_per_sec,
        });
        Ok(())
    }

    fn iface(&self, id: u32, at: usize) -> Result<Interface, PcapError> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.interfaces.get(i))
            .copied()
            .ok_or(PcapError::NoInterface { at, id })
    }

    fn enhanced(&mut self, body: &[u8], at: usize) -> Result<Packet<'a>, PcapError> {
        let be = self.be;
        let what = "enhanced packet block";
        let iface = self.iface(u32_at(body, 0, be, what)?, at)?;
        let ts =
            u64::from(u32_at(body, 4, be, what)?) << 32 | u64::from(u32_at(body, 8, be, what)?);
        let cap = u32_at(body, 12, be, what)? as usize;
        let orig_len = u32_at(body, 16, be, what)?;
        if cap > MAX_PACKET {
            return Err(PcapError::TooLong {
                what,
                at,
                len: cap,
                max: MAX_PACKET,
            });
        }
        // `body` borrows from `self.bytes`: re-slice from there to keep the 'a lifetime.
        let start = at + 8 + 20;
        let data = self
            .bytes
            .get(start..start + cap)
            .filter(|_| 20 + cap <= body.len())
            .ok_or(PcapError::Truncated {
                what: "enhanced packet data",
                at: start,
            })?;
        Ok(self.packet(iface, ts, data, orig_len))
    }

    fn simple(&mut self, body: &[u8], at: usize) -> Result<Packet<'a>, PcapError> {
        let iface = self.iface(0, at)?;
        let orig_len = u32_at(body, 0, self.be, "simple packet block")?;
        let cap = (orig_len as usize)
            .min(body.len().saturating_sub(4))
            .min(MAX_PACKET);
        let start = at + 8 + 4;
        let data = self
            .bytes
            .get(start..start + cap)
            .ok_or(PcapError::Truncated {
                what: "simple packet data",
                at: start,
            })?;
        Ok(self.packet(iface, 0, data, orig_len))
    }

    fn packet(&mut self, iface: Interface, ts: u64, data: &'a [u8], orig_len: u32) -> Packet<'a> {
        self.number += 1;
        let units = iface.units_per_sec.max(1);
        let frac = u128::from(ts % units) * 1_000_000_000 / u128::from(units);
        Packet {
            number: self.number,
            ts_sec: ts / units,
            ts_nsec: u32::try_from(frac).unwrap_or(0),
            link_type: iface.link,
            data,
            orig_len,
        }
    }
}

#[cfg(test)]
mod tests;
