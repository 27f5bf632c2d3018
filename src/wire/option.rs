//! DHCPv6 options, owned: [`DhcpOption`] (one option) and [`Options`] (an ordered list).
//!
//! ```text
//! option: option-code(2) option-len(2) option-data(option-len)      (RFC 8415 §21.1)
//! ```
//! Every option listed in the module docs of [`crate::wire`] has a typed variant; any other code
//! is [`DhcpOption::Unknown`] with its exact bytes. Order is preserved, so for any message that
//! parses, `emit(parse(b)) == b`. A known option whose body breaks its layout (a 1-byte
//! STATUS_CODE, a 3-byte ELAPSED_TIME) is an error, never a panic.
//!
//! Nesting is bounded: at most [`MAX_NESTING`] levels of encapsulated options in one buffer, and at
//! most [`MAX_RELAY_DEPTH`] relay headers in one relay chain.

use super::buf::{Reader, Writer};
use super::codes::OptionCode;
use super::codes::StatusCode;
use super::duid::Duid;
use super::error::Error;
use super::ia::{Ia, IaAddr, IaPrefix, IaTa, bad_len};
use super::lq::{ClientData, LqQuery, LqRelayData};
use super::message::Message;
use super::status::Status;
use std::net::Ipv6Addr;
use std::ops::{Deref, DerefMut};

/// Most relay headers accepted in one chain. RFC 3315 §5.1 had HOP_COUNT_LIMIT 32; RFC 8415
/// §7.6 lowered the relay's limit to 8, but a decoder must still read what older relays send.
pub const MAX_RELAY_DEPTH: usize = 32;

/// Most levels of encapsulated options (RELAY_MSG, IA_NA, CLIENT_DATA, ...) in one buffer. Room
/// for a maximal relay chain plus a full leasequery reply, and a bound on recursion.
pub const MAX_NESTING: usize = 64;

/// Where an option list sits: how deep, and whether RELAY_MSG is allowed there. Small and
/// `Copy` because every borrowed view carries one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    nesting: u8,
    relay_depth: u8,
    pub(crate) in_relay: bool,
}

impl Ctx {
    pub(crate) fn top() -> Ctx {
        Ctx {
            nesting: 0,
            relay_depth: 0,
            in_relay: false,
        }
    }

    /// The context for options encapsulated in the option at `at`.
    pub(crate) fn nested(self, at: usize) -> Result<Ctx, Error> {
        if usize::from(self.nesting) >= MAX_NESTING {
            return Err(Error::TooDeep {
                at,
                what: "option encapsulation",
                limit: MAX_NESTING,
            });
        }
        Ok(Ctx {
            nesting: self.nesting + 1,
            relay_depth: self.relay_depth,
            in_relay: false,
        })
    }

    /// The context for the options of a relay message starting at `at` (one more relay level).
    pub(crate) fn enter_relay(self, at: usize) -> Result<Ctx, Error> {
        if usize::from(self.relay_depth) >= MAX_RELAY_DEPTH {
            return Err(Error::TooDeep {
                at,
                what: "relay chain",
                limit: MAX_RELAY_DEPTH,
            });
        }
        Ok(Ctx {
            nesting: self.nesting,
            relay_depth: self.relay_depth + 1,
            in_relay: true,
        })
    }

    /// The context for a client/server message's options.
    pub(crate) fn enter_client(self) -> Ctx {
        Ctx {
            in_relay: false,
            ..self
        }
    }

    /// LQ_RELAY_DATA starts a relay chain of its own.
    pub(crate) fn new_relay_chain(self) -> Ctx {
        Ctx {
            relay_depth: 0,
            ..self
        }
    }
}

/// One DHCPv6 option in its typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhcpOption {
    ClientId(Duid),
    ServerId(Duid),
    IaNa(Ia),
    IaTa(IaTa),
    IaAddr(IaAddr),
    /// Requested option codes.
    Oro(Vec<OptionCode>),
    /// Hundredths of a second since the client began the exchange.
    ElapsedTime(u16),
    /// The relayed message (only in RELAY-FORW / RELAY-REPL).
    RelayMsg(Box<Message>),
    StatusCode(Status),
    InterfaceId(Vec<u8>),
    IaPd(Ia),
    IaPrefix(IaPrefix),
    /// RFC 4649: enterprise-number(4) remote-id(*).
    RemoteId {
        enterprise: u32,
        remote_id: Vec<u8>,
    },
    /// RFC 4580.
    SubscriberId(Vec<u8>),
    /// RFC 6939: link-layer type(2) link-layer address(*).
    ClientLinklayerAddr {
        hw_type: u16,
        addr: Vec<u8>,
    },
    /// RFC 5460 §5.4.1: the relay's DUID.
    RelayId(Duid),
    LqQuery(LqQuery),
    ClientData(ClientData),
    /// Seconds since the server last heard from the client.
    CltTime(u32),
    LqRelayData(Box<LqRelayData>),
    /// Links a client is on (RFC 5007 §4.1.2.5).
    LqClientLink(Vec<Ipv6Addr>),
    LqBaseTime(u32),
    LqStartTime(u32),
    LqEndTime(u32),
    /// Any other option, bytes exactly as sent.
    Unknown {
        code: OptionCode,
        data: Vec<u8>,
    },
}

fn fixed_u32(code: OptionCode, mut r: Reader<'_>, at: usize) -> Result<u32, Error> {
    if r.remaining() != 4 {
        return Err(bad_len(at, code, r.remaining(), "4"));
    }
    r.u32("32-bit option value")
}

impl DhcpOption {
    /// The option code on the wire.
    pub fn code(&self) -> OptionCode {
        match self {
            DhcpOption::ClientId(_) => OptionCode::CLIENTID,
            DhcpOption::ServerId(_) => OptionCode::SERVERID,
            DhcpOption::IaNa(_) => OptionCode::IA_NA,
            DhcpOption::IaTa(_) => OptionCode::IA_TA,
            DhcpOption::IaAddr(_) => OptionCode::IAADDR,
            DhcpOption::Oro(_) => OptionCode::ORO,
            DhcpOption::ElapsedTime(_) => OptionCode::ELAPSED_TIME,
            DhcpOption::RelayMsg(_) => OptionCode::RELAY_MSG,
            DhcpOption::StatusCode(_) => OptionCode::STATUS_CODE,
            DhcpOption::InterfaceId(_) => OptionCode::INTERFACE_ID,
            DhcpOption::IaPd(_) => OptionCode::IA_PD,
            DhcpOption::IaPrefix(_) => OptionCode::IAPREFIX,
            DhcpOption::RemoteId { .. } => OptionCode::REMOTE_ID,
            DhcpOption::SubscriberId(_) => OptionCode::SUBSCRIBER_ID,
            DhcpOption::ClientLinklayerAddr { .. } => OptionCode::CLIENT_LINKLAYER_ADDR,
            DhcpOption::RelayId(_) => OptionCode::RELAY_ID,
            DhcpOption::LqQuery(_) => OptionCode::LQ_QUERY,
            DhcpOption::ClientData(_) => OptionCode::CLIENT_DATA,
            DhcpOption::CltTime(_) => OptionCode::CLT_TIME,
            DhcpOption::LqRelayData(_) => OptionCode::LQ_RELAY_DATA,
            DhcpOption::LqClientLink(_) => OptionCode::LQ_CLIENT_LINK,
            DhcpOption::LqBaseTime(_) => OptionCode::LQ_BASE_TIME,
            DhcpOption::LqStartTime(_) => OptionCode::LQ_START_TIME,
            DhcpOption::LqEndTime(_) => OptionCode::LQ_END_TIME,
            DhcpOption::Unknown { code, .. } => *code,
        }
    }

    /// Parses one whole option (header included) from `bytes`, which must hold exactly it.
    pub fn parse(bytes: &[u8]) -> Result<DhcpOption, Error> {
        let mut opts = Options::parse_in(Reader::new(bytes, 0), Ctx::top())?;
        match (opts.0.pop(), opts.0.is_empty()) {
            (Some(o), true) => Ok(o),
            (None, _) => Err(Error::Truncated {
                at: 0,
                what: "option header",
                need: 4,
                have: bytes.len(),
            }),
            (Some(_), false) => Err(Error::WrongKind {
                at: 0,
                what: "more than one option where one was expected",
            }),
        }
    }

    fn parse_body(code: OptionCode, r: Reader<'_>, at: usize, ctx: Ctx) -> Result<Self, Error> {
        let len = r.remaining();
        Ok(match code {
            OptionCode::CLIENTID => DhcpOption::ClientId(Duid::parse(r.clone().rest())),
            OptionCode::SERVERID => DhcpOption::ServerId(Duid::parse(r.clone().rest())),
            OptionCode::RELAY_ID => DhcpOption::RelayId(Duid::parse(r.clone().rest())),
            OptionCode::IA_NA => DhcpOption::IaNa(Ia::parse_body(code, r, at, ctx)?),
            OptionCode::IA_PD => DhcpOption::IaPd(Ia::parse_body(code, r, at, ctx)?),
            OptionCode::IA_TA => DhcpOption::IaTa(IaTa::parse_body(r, at, ctx)?),
            OptionCode::IAADDR => DhcpOption::IaAddr(IaAddr::parse_body(r, at, ctx)?),
            OptionCode::IAPREFIX => DhcpOption::IaPrefix(IaPrefix::parse_body(r, at, ctx)?),
            OptionCode::ORO => {
                if len % 2 != 0 {
                    return Err(bad_len(at, code, len, "a multiple of 2"));
                }
                let body = r.clone().rest();
                DhcpOption::Oro(
                    body.chunks_exact(2)
                        .filter_map(|c| <[u8; 2]>::try_from(c).ok())
                        .map(|c| OptionCode(u16::from_be_bytes(c)))
                        .collect(),
                )
            }
            OptionCode::ELAPSED_TIME => {
                if len != 2 {
                    return Err(bad_len(at, code, len, "2"));
                }
                let mut r = r;
                DhcpOption::ElapsedTime(r.u16("elapsed-time")?)
            }
            OptionCode::RELAY_MSG => {
                if !ctx.in_relay {
                    return Err(Error::WrongKind {
                        at,
                        what: "RELAY_MSG outside a relay message",
                    });
                }
                DhcpOption::RelayMsg(Box::new(Message::parse_in(r, ctx.nested(at)?)?))
            }
            OptionCode::STATUS_CODE => DhcpOption::StatusCode(Status::parse_body(r, at)?),
            OptionCode::INTERFACE_ID => DhcpOption::InterfaceId(r.clone().rest().to_vec()),
            OptionCode::SUBSCRIBER_ID => DhcpOption::SubscriberId(r.clone().rest().to_vec()),
            OptionCode::REMOTE_ID => {
                if len < 4 {
                    return Err(bad_len(at, code, len, "at least 4"));
                }
                let mut r = r;
                DhcpOption::RemoteId {
                    enterprise: r.u32("enterprise-number")?,
                    remote_id: r.rest().to_vec(),
                }
            }
            OptionCode::CLIENT_LINKLAYER_ADDR => {
                if len < 2 {
                    return Err(bad_len(at, code, len, "at least 2"));
                }
                let mut r = r;
                DhcpOption::ClientLinklayerAddr {
                    hw_type: r.u16("link-layer type")?,
                    addr: r.rest().to_vec(),
                }
            }
            OptionCode::LQ_QUERY => DhcpOption::LqQuery(LqQuery::parse_body(r, at, ctx)?),
            OptionCode::CLIENT_DATA => DhcpOption::ClientData(ClientData {
                options: Options::parse_in(r, ctx.nested(at)?)?,
            }),
            OptionCode::CLT_TIME => DhcpOption::CltTime(fixed_u32(code, r, at)?),
            OptionCode::LQ_RELAY_DATA => {
                DhcpOption::LqRelayData(Box::new(LqRelayData::parse_body(r, at, ctx)?))
            }
            OptionCode::LQ_CLIENT_LINK => {
                if len % 16 != 0 {
                    return Err(bad_len(at, code, len, "a multiple of 16"));
                }
                let body = r.clone().rest();
                DhcpOption::LqClientLink(
                    body.chunks_exact(16)
                        .filter_map(|c| <[u8; 16]>::try_from(c).ok())
                        .map(Ipv6Addr::from)
                        .collect(),
                )
            }
            OptionCode::LQ_BASE_TIME => DhcpOption::LqBaseTime(fixed_u32(code, r, at)?),
            OptionCode::LQ_START_TIME => DhcpOption::LqStartTime(fixed_u32(code, r, at)?),
            OptionCode::LQ_END_TIME => DhcpOption::LqEndTime(fixed_u32(code, r, at)?),
            _ => DhcpOption::Unknown {
                code,
                data: r.clone().rest().to_vec(),
            },
        })
    }

    /// Length of the option body (without the 4-byte header).
    fn body_len(&self) -> usize {
        match self {
            DhcpOption::ClientId(d) | DhcpOption::ServerId(d) | DhcpOption::RelayId(d) => {
                d.buffer_len()
            }
            DhcpOption::IaNa(ia) | DhcpOption::IaPd(ia) => ia.body_len(),
            DhcpOption::IaTa(ia) => ia.body_len(),
            DhcpOption::IaAddr(a) => a.body_len(),
            DhcpOption::IaPrefix(p) => p.body_len(),
            DhcpOption::Oro(codes) => 2 * codes.len(),
            DhcpOption::ElapsedTime(_) => 2,
            DhcpOption::RelayMsg(m) => m.buffer_len(),
            DhcpOption::StatusCode(s) => s.body_len(),
            DhcpOption::InterfaceId(b) | DhcpOption::SubscriberId(b) => b.len(),
            DhcpOption::RemoteId { remote_id, .. } => 4 + remote_id.len(),
            DhcpOption::ClientLinklayerAddr { addr, .. } => 2 + addr.len(),
            DhcpOption::LqQuery(q) => q.body_len(),
            DhcpOption::ClientData(c) => c.options.buffer_len(),
            DhcpOption::CltTime(_)
            | DhcpOption::LqBaseTime(_)
            | DhcpOption::LqStartTime(_)
            | DhcpOption::LqEndTime(_) => 4,
            DhcpOption::LqRelayData(d) => d.body_len(),
            DhcpOption::LqClientLink(links) => 16 * links.len(),
            DhcpOption::Unknown { data, .. } => data.len(),
        }
    }

    /// Bytes on the wire, header included.
    pub fn buffer_len(&self) -> usize {
        4 + self.body_len()
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        let start = w.begin_option(self.code().0)?;
        match self {
            DhcpOption::ClientId(d) | DhcpOption::ServerId(d) | DhcpOption::RelayId(d) => {
                d.emit_to(w)?
            }
            DhcpOption::IaNa(ia) | DhcpOption::IaPd(ia) => ia.emit_body(w)?,
            DhcpOption::IaTa(ia) => ia.emit_body(w)?,
            DhcpOption::IaAddr(a) => a.emit_body(w)?,
            DhcpOption::IaPrefix(p) => p.emit_body(w)?,
            DhcpOption::Oro(codes) => {
                for c in codes {
                    w.u16(c.0)?;
                }
            }
            DhcpOption::ElapsedTime(t) => w.u16(*t)?,
            DhcpOption::RelayMsg(m) => m.emit_to(w)?,
            DhcpOption::StatusCode(s) => s.emit_body(w)?,
            DhcpOption::InterfaceId(b) | DhcpOption::SubscriberId(b) => w.put(b)?,
            DhcpOption::RemoteId {
                enterprise,
                remote_id,
            } => {
                w.u32(*enterprise)?;
                w.put(remote_id)?;
            }
            DhcpOption::ClientLinklayerAddr { hw_type, addr } => {
                w.u16(*hw_type)?;
                w.put(addr)?;
            }
            DhcpOption::LqQuery(q) => q.emit_body(w)?,
            DhcpOption::ClientData(c) => c.options.emit_to(w)?,
            DhcpOption::CltTime(t)
            | DhcpOption::LqBaseTime(t)
            | DhcpOption::LqStartTime(t)
            | DhcpOption::LqEndTime(t) => w.u32(*t)?,
            DhcpOption::LqRelayData(d) => d.emit_body(w)?,
            DhcpOption::LqClientLink(links) => {
                for l in links {
                    w.addr(l)?;
                }
            }
            DhcpOption::Unknown { data, .. } => w.put(data)?,
        }
        w.end_option(start)
    }

    /// Writes the option into `buf` (at least `buffer_len()` bytes); returns bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf);
        self.emit_to(&mut w)?;
        Ok(w.pos())
    }
}

/// An ordered list of options (a message's, or those encapsulated in an option).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options(pub Vec<DhcpOption>);

impl Deref for Options {
    type Target = Vec<DhcpOption>;
    fn deref(&self) -> &Vec<DhcpOption> {
        &self.0
    }
}

impl DerefMut for Options {
    fn deref_mut(&mut self) -> &mut Vec<DhcpOption> {
        &mut self.0
    }
}

impl From<Vec<DhcpOption>> for Options {
    fn from(v: Vec<DhcpOption>) -> Self {
        Options(v)
    }
}

impl FromIterator<DhcpOption> for Options {
    fn from_iter<I: IntoIterator<Item = DhcpOption>>(iter: I) -> Self {
        Options(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Options {
    type Item = &'a DhcpOption;
    type IntoIter = std::slice::Iter<'a, DhcpOption>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

macro_rules! finder {
    ($(#[$m:meta])* $name:ident, $variant:ident, $ty:ty) => {
        $(#[$m])*
        pub fn $name(&self) -> Option<$ty> {
            self.0.iter().find_map(|o| match o {
                DhcpOption::$variant(v) => Some(v),
                _ => None,
            })
        }
    };
}

impl Options {
    pub fn new() -> Self {
        Options(Vec::new())
    }

    /// Reads options until `r` is exhausted.
    pub(crate) fn parse_in(mut r: Reader<'_>, ctx: Ctx) -> Result<Options, Error> {
        let mut out = Vec::new();
        while !r.is_empty() {
            let at = r.offset();
            if r.remaining() < 4 {
                return Err(Error::Truncated {
                    at,
                    what: "option header",
                    need: 4,
                    have: r.remaining(),
                });
            }
            let code = OptionCode(r.u16("option code")?);
            let len = usize::from(r.u16("option length")?);
            let room = r.remaining();
            if len > room {
                return Err(Error::OptionOverrun {
                    at,
                    code: code.0,
                    len,
                    room,
                });
            }
            let body_at = r.offset();
            let body = r.take(len, "option body")?;
            out.push(DhcpOption::parse_body(
                code,
                Reader::new(body, body_at),
                at,
                ctx,
            )?);
        }
        Ok(Options(out))
    }

    /// Bytes on the wire for all the options.
    pub fn buffer_len(&self) -> usize {
        self.0.iter().map(DhcpOption::buffer_len).sum()
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        for o in &self.0 {
            o.emit_to(w)?;
        }
        Ok(())
    }

    /// The first option with `code`.
    pub fn find(&self, code: OptionCode) -> Option<&DhcpOption> {
        self.0.iter().find(|o| o.code() == code)
    }

    /// Every option with `code`, in order.
    pub fn find_all(&self, code: OptionCode) -> impl Iterator<Item = &DhcpOption> {
        self.0.iter().filter(move |o| o.code() == code)
    }

    finder!(/// CLIENTID.
        client_id, ClientId, &Duid);
    finder!(/// SERVERID.
        server_id, ServerId, &Duid);
    finder!(/// RELAY_ID.
        relay_id, RelayId, &Duid);
    finder!(/// STATUS_CODE.
        status, StatusCode, &Status);
    finder!(/// LQ_QUERY.
        lq_query, LqQuery, &LqQuery);
    finder!(/// CLIENT_DATA (the first; bulk replies carry one per message).
        client_data, ClientData, &ClientData);
    finder!(/// INTERFACE_ID.
        interface_id_bytes, InterfaceId, &Vec<u8>);
    finder!(/// ORO.
        oro, Oro, &Vec<OptionCode>);

    /// The status code, `None` when no STATUS_CODE is present (which RFC 8415 §21.13 reads as
    /// Success).
    pub fn status_code(&self) -> Option<StatusCode> {
        self.status().map(|s| s.code)
    }

    /// INTERFACE_ID as a slice.
    pub fn interface_id(&self) -> Option<&[u8]> {
        self.interface_id_bytes().map(Vec::as_slice)
    }

    /// The message inside RELAY_MSG.
    pub fn relay_msg(&self) -> Option<&Message> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::RelayMsg(m) => Some(&**m),
            _ => None,
        })
    }

    /// LQ_RELAY_DATA.
    pub fn lq_relay_data(&self) -> Option<&LqRelayData> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::LqRelayData(d) => Some(&**d),
            _ => None,
        })
    }

    /// LQ_CLIENT_LINK addresses.
    pub fn lq_client_link(&self) -> Option<&[Ipv6Addr]> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::LqClientLink(l) => Some(l.as_slice()),
            _ => None,
        })
    }

    /// REMOTE_ID as (enterprise-number, remote-id).
    pub fn remote_id(&self) -> Option<(u32, &[u8])> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::RemoteId {
                enterprise,
                remote_id,
            } => Some((*enterprise, remote_id.as_slice())),
            _ => None,
        })
    }

    fn u32_of(&self, code: OptionCode) -> Option<u32> {
        self.0.iter().find_map(|o| match (o, o.code() == code) {
            (
                DhcpOption::CltTime(t)
                | DhcpOption::LqBaseTime(t)
                | DhcpOption::LqStartTime(t)
                | DhcpOption::LqEndTime(t),
                true,
            ) => Some(*t),
            _ => None,
        })
    }

    /// CLT_TIME.
    pub fn clt_time(&self) -> Option<u32> {
        self.u32_of(OptionCode::CLT_TIME)
    }

    /// LQ_BASE_TIME.
    pub fn lq_base_time(&self) -> Option<u32> {
        self.u32_of(OptionCode::LQ_BASE_TIME)
    }

    /// The server reply sequence number carried in option `code` (a local extension after the
    /// expired draft-ietf-dhc-dhcpv6-srsn-option, which never got an IANA code): a 4-byte
    /// unsigned counter at the top level of the message. `None` when absent or not 4 bytes.
    pub fn srsn(&self, code: u16) -> Option<u32> {
        self.iter().find_map(|o| match o {
            DhcpOption::Unknown { code: c, data } if c.0 == code => {
                <[u8; 4]>::try_from(data.as_slice())
                    .ok()
                    .map(u32::from_be_bytes)
            }
            _ => None,
        })
    }

    /// LQ_START_TIME.
    pub fn lq_start_time(&self) -> Option<u32> {
        self.u32_of(OptionCode::LQ_START_TIME)
    }

    /// LQ_END_TIME.
    pub fn lq_end_time(&self) -> Option<u32> {
        self.u32_of(OptionCode::LQ_END_TIME)
    }

    /// ELAPSED_TIME.
    pub fn elapsed_time(&self) -> Option<u16> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::ElapsedTime(t) => Some(*t),
            _ => None,
        })
    }

    /// IA_NA options, in order.
    pub fn ia_nas(&self) -> impl Iterator<Item = &Ia> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaNa(ia) => Some(ia),
            _ => None,
        })
    }

    /// IA_PD options, in order.
    pub fn ia_pds(&self) -> impl Iterator<Item = &Ia> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaPd(ia) => Some(ia),
            _ => None,
        })
    }

    /// IA_TA options, in order.
    pub fn ia_tas(&self) -> impl Iterator<Item = &IaTa> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaTa(ia) => Some(ia),
            _ => None,
        })
    }

    /// IAADDR options directly in this list (not inside IAs).
    pub fn ia_addrs(&self) -> impl Iterator<Item = &IaAddr> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaAddr(a) => Some(a),
            _ => None,
        })
    }

    /// IAPREFIX options directly in this list (not inside IAs).
    pub fn ia_prefixes(&self) -> impl Iterator<Item = &IaPrefix> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaPrefix(p) => Some(p),
            _ => None,
        })
    }

    /// Every CLIENT_DATA, in order.
    pub fn client_datas(&self) -> impl Iterator<Item = &ClientData> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::ClientData(c) => Some(c),
            _ => None,
        })
    }
}
