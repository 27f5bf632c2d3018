//! The borrowed read path: views over a received message that walk its options in place.
//!
//! Every received message (snooped replies, leasequery replies, bulk streams) passes through
//! here once; nothing here allocates. The snooper reads it in place ([`CheckedMessage`]);
//! leasequery replies and bulk streams are then copied into the owned tree by `decode`. [`MessageView::new_checked`] checks the fixed header once; [`OptionsIter`] then
//! yields `Result<OptionView, Error>` per option and **stops for good after the first error**
//! (a truncated or overrunning option poisons the rest of its list, which must be dropped and
//! counted, not silently cut short). [`OptionView::kind`] checks one option's layout and gives
//! its typed borrowed form, [`OptionRef`], whose nested lists are again `OptionsIter`s.
//!
//! No-panic contract: for any input bytes, no constructor, accessor or iterator in this module
//! panics; every failure is a [`wire::Error`](super::Error) with the offset from the start of the
//! buffer given to `new_checked`. Nesting follows the same limits as the owned parser
//! ([`MAX_NESTING`](super::MAX_NESTING), [`MAX_RELAY_DEPTH`](super::MAX_RELAY_DEPTH)).
//!
//! This is the crate's one DHCPv6 parser: [`Message::parse`](super::Message::parse) and the other
//! owned `parse` functions copy out of a checked view, so every check is written here once and a
//! message accepted by a full walk is accepted by `Message::parse` with the same errors otherwise
//! (a property test still pins it).

use super::buf::Reader;
use super::codes::{MessageType, OptionCode, QueryType, StatusCode};
use super::context::{CLIENT_HEADER_LEN, Ctx, RELAY_HEADER_LEN, bad_len};
use super::error::Error;
use crate::prefix::{Ipv6Prefix, PrefixError};
use std::net::Ipv6Addr;

/// A checked view of a message of either layout.
#[derive(Debug, Clone, Copy)]
pub enum MessageView<'a> {
    Client(ClientView<'a>),
    Relay(RelayView<'a>),
}

impl<'a> MessageView<'a> {
    /// Checks the header of the message in `bytes`.
    #[inline]
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::checked_in(Reader::new(bytes, 0), Ctx::top())
    }

    #[inline]
    fn checked_in(r: Reader<'a>, ctx: Ctx) -> Result<Self, Error> {
        let t = MessageType(r.clone().u8("message type")?);
        if t.is_relay() {
            Ok(MessageView::Relay(RelayView::checked_in(r, ctx)?))
        } else {
            Ok(MessageView::Client(ClientView::checked_in(r, ctx)?))
        }
    }

    #[inline]
    pub fn msg_type(&self) -> MessageType {
        match self {
            MessageView::Client(c) => c.msg_type(),
            MessageView::Relay(r) => r.msg_type(),
        }
    }

    #[inline]
    pub fn options(&self) -> OptionsIter<'a> {
        match self {
            MessageView::Client(c) => c.options(),
            MessageView::Relay(r) => r.options(),
        }
    }
}

/// A checked view of a client/server message.
#[derive(Debug, Clone, Copy)]
pub struct ClientView<'a> {
    msg_type: MessageType,
    transaction_id: u32,
    options: OptionsIter<'a>,
}

impl<'a> ClientView<'a> {
    /// Checks the header; a relay type is `Error::WrongKind`.
    #[inline]
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::checked_in(Reader::new(bytes, 0), Ctx::top())
    }

    #[inline]
    fn checked_in(mut r: Reader<'a>, ctx: Ctx) -> Result<Self, Error> {
        let at = r.offset();
        let have = r.remaining();
        if have < CLIENT_HEADER_LEN {
            return Err(Error::Truncated {
                at,
                what: "message header",
                need: CLIENT_HEADER_LEN,
                have,
            });
        }
        let msg_type = MessageType(r.u8("message type")?);
        if msg_type.is_relay() {
            return Err(Error::WrongKind {
                at,
                what: "relay message where a client/server message was expected",
            });
        }
        let [a, b, c] = r.array::<3>("transaction id")?;
        Ok(ClientView {
            msg_type,
            transaction_id: u32::from_be_bytes([0, a, b, c]),
            options: OptionsIter::new(r, ctx.enter_client()),
        })
    }

    #[inline]
    pub fn msg_type(&self) -> MessageType {
        self.msg_type
    }

    #[inline]
    pub fn transaction_id(&self) -> u32 {
        self.transaction_id
    }

    #[inline]
    pub fn options(&self) -> OptionsIter<'a> {
        self.options
    }
}

/// A checked view of a RELAY-FORW / RELAY-REPL message.
#[derive(Debug, Clone, Copy)]
pub struct RelayView<'a> {
    msg_type: MessageType,
    hop_count: u8,
    link_address: Ipv6Addr,
    peer_address: Ipv6Addr,
    options: OptionsIter<'a>,
}

impl<'a> RelayView<'a> {
    /// Checks the header; a client/server type is `Error::WrongKind`.
    #[inline]
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::checked_in(Reader::new(bytes, 0), Ctx::top())
    }

    #[inline]
    fn checked_in(mut r: Reader<'a>, ctx: Ctx) -> Result<Self, Error> {
        let at = r.offset();
        let have = r.remaining();
        let kind = r.clone().u8("message type").map(MessageType);
        // A single byte is enough to tell the kind: a wrong kind is reported before a short
        // header, and no bytes at all is a short relay header.
        if kind.is_ok_and(|t| !t.is_relay()) {
            return Err(Error::WrongKind {
                at,
                what: "client/server message where a relay message was expected",
            });
        }
        if have < RELAY_HEADER_LEN {
            return Err(Error::Truncated {
                at,
                what: "relay message header",
                need: RELAY_HEADER_LEN,
                have,
            });
        }
        let inner = ctx.enter_relay(at)?;
        let msg_type = MessageType(r.u8("message type")?);
        let hop_count = r.u8("hop-count")?;
        let link_address = r.addr("link-address")?;
        let peer_address = r.addr("peer-address")?;
        Ok(RelayView {
            msg_type,
            hop_count,
            link_address,
            peer_address,
            options: OptionsIter::new(r, inner),
        })
    }

    #[inline]
    pub fn msg_type(&self) -> MessageType {
        self.msg_type
    }

    #[inline]
    pub fn hop_count(&self) -> u8 {
        self.hop_count
    }

    #[inline]
    pub fn link_address(&self) -> Ipv6Addr {
        self.link_address
    }

    #[inline]
    pub fn peer_address(&self) -> Ipv6Addr {
        self.peer_address
    }

    #[inline]
    pub fn options(&self) -> OptionsIter<'a> {
        self.options
    }

    /// The next level (the first RELAY_MSG), `Ok(None)` if there is none; an error in the
    /// options before it is returned.
    pub fn relay_message(&self) -> Result<Option<MessageView<'a>>, Error> {
        for o in self.options() {
            let o = o?;
            if o.code() == OptionCode::RELAY_MSG {
                return match o.kind()? {
                    OptionRef::RelayMsg(m) => Ok(Some(m)),
                    _ => Ok(None),
                };
            }
        }
        Ok(None)
    }
}

/// Iterator over an option list; yields each option or the first error, then stops.
#[derive(Debug, Clone, Copy)]
pub struct OptionsIter<'a> {
    rest: &'a [u8],
    at: usize,
    ctx: Ctx,
}

impl<'a> OptionsIter<'a> {
    fn new(mut r: Reader<'a>, ctx: Ctx) -> Self {
        let at = r.offset();
        OptionsIter {
            rest: r.rest(),
            at,
            ctx,
        }
    }

    /// Iterates a bare option list (e.g. one option's bytes) that sits outside any message.
    #[inline]
    pub fn over(bytes: &'a [u8]) -> Self {
        OptionsIter::new(Reader::new(bytes, 0), Ctx::top())
    }

    /// The bytes not yet yielded (after an error: none).
    #[inline]
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    /// The first option with `code` (errors before it are returned).
    #[inline]
    pub fn find(self, code: OptionCode) -> Result<Option<OptionView<'a>>, Error> {
        for o in self {
            let o = o?;
            if o.code() == code {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    /// Walks the list and, recursively, every option nested in it, checking every layout.
    /// `Ok(n)` is the number of options seen; no allocation.
    #[inline]
    pub fn walk(self) -> Result<usize, Error> {
        let mut n = 0;
        for o in self {
            n += 1 + o?.kind()?.walk()?;
        }
        Ok(n)
    }
}

impl<'a> Iterator for OptionsIter<'a> {
    type Item = Result<OptionView<'a>, Error>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let at = self.at;
        let item = match *self.rest {
            [c0, c1, l0, l1, ref tail @ ..] => {
                let code = u16::from_be_bytes([c0, c1]);
                let len = usize::from(u16::from_be_bytes([l0, l1]));
                match tail.split_at_checked(len) {
                    Some((data, next)) => {
                        self.rest = next;
                        self.at = at + 4 + len;
                        return Some(Ok(OptionView {
                            code: OptionCode(code),
                            data,
                            at,
                            ctx: self.ctx,
                        }));
                    }
                    None => Error::OptionOverrun {
                        at,
                        code,
                        len,
                        room: tail.len(),
                    },
                }
            }
            _ => Error::Truncated {
                at,
                what: "option header",
                need: 4,
                have: self.rest.len(),
            },
        };
        self.rest = &[];
        Some(Err(item))
    }
}

/// One option: code, body and where it sits.
#[derive(Debug, Clone, Copy)]
pub struct OptionView<'a> {
    code: OptionCode,
    data: &'a [u8],
    at: usize,
    ctx: Ctx,
}

impl<'a> OptionView<'a> {
    #[inline]
    pub fn code(&self) -> OptionCode {
        self.code
    }

    /// The option body (after the 4-byte header).
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Offset of the option header in the outermost buffer.
    #[inline]
    pub fn offset(&self) -> usize {
        self.at
    }

    /// The nested option list that starts `used` bytes into this option's body.
    #[inline]
    fn nested(&self, rest: &'a [u8]) -> Result<OptionsIter<'a>, Error> {
        Ok(OptionsIter {
            rest,
            at: self.at + 4 + (self.data.len() - rest.len()),
            ctx: self.ctx.nested(self.at)?,
        })
    }

    fn bad_len(&self, expected: &'static str) -> Error {
        bad_len(self.at, self.code, self.data.len(), expected)
    }

    /// `WrongKind` unless this option has `code` (the typed accessors check before reading).
    #[inline]
    fn expect(&self, code: OptionCode, what: &'static str) -> Result<(), Error> {
        if self.code == code {
            Ok(())
        } else {
            Err(Error::WrongKind { at: self.at, what })
        }
    }

    /// CLIENTID / SERVERID / RELAY_ID: the DUID bytes.
    #[inline]
    pub fn duid(&self) -> Result<&'a [u8], Error> {
        match self.code {
            OptionCode::CLIENTID | OptionCode::SERVERID | OptionCode::RELAY_ID => Ok(self.data),
            _ => Err(Error::WrongKind {
                at: self.at,
                what: "option does not carry a DUID",
            }),
        }
    }

    /// IA_NA or IA_PD.
    #[inline]
    pub fn ia(&self) -> Result<IaView<'a>, Error> {
        if self.code != OptionCode::IA_NA && self.code != OptionCode::IA_PD {
            return Err(Error::WrongKind {
                at: self.at,
                what: "option is not IA_NA or IA_PD",
            });
        }
        let mut s = self.data;
        let (Some(iaid), Some(t1), Some(t2)) = (be32(&mut s), be32(&mut s), be32(&mut s)) else {
            return Err(self.bad_len("at least 12"));
        };
        Ok(IaView {
            iaid,
            t1,
            t2,
            options: self.nested(s)?,
        })
    }

    /// IAADDR.
    #[inline]
    pub fn ia_addr(&self) -> Result<IaAddrView<'a>, Error> {
        self.expect(OptionCode::IAADDR, "option is not IAADDR")?;
        let mut s = self.data;
        let (Some(addr), Some(preferred), Some(valid)) = (addr(&mut s), be32(&mut s), be32(&mut s))
        else {
            return Err(self.bad_len("at least 24"));
        };
        Ok(IaAddrView {
            addr,
            preferred,
            valid,
            options: self.nested(s)?,
        })
    }

    /// IAPREFIX.
    #[inline]
    pub fn ia_prefix(&self) -> Result<IaPrefixView<'a>, Error> {
        self.expect(OptionCode::IAPREFIX, "option is not IAPREFIX")?;
        let mut s = self.data;
        let (Some(preferred), Some(valid), Some([prefix_len]), Some(prefix_addr)) =
            (be32(&mut s), be32(&mut s), chunk::<1>(&mut s), addr(&mut s))
        else {
            return Err(self.bad_len("at least 25"));
        };
        Ok(IaPrefixView {
            preferred,
            valid,
            prefix_len,
            prefix_addr,
            options: self.nested(s)?,
        })
    }

    /// STATUS_CODE.
    #[inline]
    pub fn status(&self) -> Result<StatusView<'a>, Error> {
        self.expect(OptionCode::STATUS_CODE, "option is not STATUS_CODE")?;
        match self.data.split_first_chunk::<2>() {
            Some((code, message)) => Ok(StatusView {
                code: StatusCode(u16::from_be_bytes(*code)),
                message,
            }),
            None => Err(self.bad_len("at least 2")),
        }
    }

    /// CLIENT_DATA: its options.
    #[inline]
    pub fn client_data(&self) -> Result<OptionsIter<'a>, Error> {
        self.expect(OptionCode::CLIENT_DATA, "option is not CLIENT_DATA")?;
        self.nested(self.data)
    }

    /// CLT_TIME.
    #[inline]
    pub fn clt_time(&self) -> Result<u32, Error> {
        self.expect(OptionCode::CLT_TIME, "option is not CLT_TIME")?;
        self.fixed_u32()
    }

    /// LQ_RELAY_DATA.
    #[inline]
    pub fn lq_relay_data(&self) -> Result<LqRelayDataView<'a>, Error> {
        self.expect(OptionCode::LQ_RELAY_DATA, "option is not LQ_RELAY_DATA")?;
        let mut s = self.data;
        let Some(peer_address) = addr(&mut s).filter(|_| s.len() >= RELAY_HEADER_LEN) else {
            return Err(self.bad_len("at least 50 (peer-address and a relay header)"));
        };
        let r = Reader::new(s, self.at + 4 + 16);
        let ctx = self.ctx.nested(self.at)?.new_relay_chain();
        Ok(LqRelayDataView {
            peer_address,
            relay: RelayView::checked_in(r, ctx)?,
        })
    }

    /// Checks the layout for this option's code and returns its typed borrowed form.
    pub fn kind(&self) -> Result<OptionRef<'a>, Error> {
        let data = self.data;
        let mut s = data;
        Ok(match self.code {
            OptionCode::CLIENTID => OptionRef::ClientId(data),
            OptionCode::SERVERID => OptionRef::ServerId(data),
            OptionCode::RELAY_ID => OptionRef::RelayId(data),
            OptionCode::IA_NA => OptionRef::IaNa(self.ia()?),
            OptionCode::IA_PD => OptionRef::IaPd(self.ia()?),
            OptionCode::IA_TA => {
                let Some(iaid) = be32(&mut s) else {
                    return Err(self.bad_len("at least 4"));
                };
                OptionRef::IaTa {
                    iaid,
                    options: self.nested(s)?,
                }
            }
            OptionCode::IAADDR => OptionRef::IaAddr(self.ia_addr()?),
            OptionCode::IAPREFIX => OptionRef::IaPrefix(self.ia_prefix()?),
            OptionCode::ORO => {
                if data.len() % 2 != 0 {
                    return Err(self.bad_len("a multiple of 2"));
                }
                OptionRef::Oro(OroView { data })
            }
            OptionCode::ELAPSED_TIME => match *data {
                [a, b] => OptionRef::ElapsedTime(u16::from_be_bytes([a, b])),
                _ => return Err(self.bad_len("2")),
            },
            OptionCode::RELAY_MSG => {
                if !self.ctx.in_relay {
                    return Err(Error::WrongKind {
                        at: self.at,
                        what: "RELAY_MSG outside a relay message",
                    });
                }
                let r = Reader::new(data, self.at + 4);
                OptionRef::RelayMsg(MessageView::checked_in(r, self.ctx.nested(self.at)?)?)
            }
            OptionCode::STATUS_CODE => OptionRef::StatusCode(self.status()?),
            OptionCode::INTERFACE_ID => OptionRef::InterfaceId(data),
            OptionCode::SUBSCRIBER_ID => OptionRef::SubscriberId(data),
            OptionCode::REMOTE_ID => match be32(&mut s) {
                Some(enterprise) => OptionRef::RemoteId {
                    enterprise,
                    remote_id: s,
                },
                None => return Err(self.bad_len("at least 4")),
            },
            OptionCode::CLIENT_LINKLAYER_ADDR => match data.split_first_chunk::<2>() {
                Some((t, addr)) => OptionRef::ClientLinklayerAddr {
                    hw_type: u16::from_be_bytes(*t),
                    addr,
                },
                None => return Err(self.bad_len("at least 2")),
            },
            OptionCode::LQ_QUERY => {
                let (Some([query_type]), Some(link_address)) = (chunk::<1>(&mut s), addr(&mut s))
                else {
                    return Err(self.bad_len("at least 17"));
                };
                OptionRef::LqQuery(LqQueryView {
                    query_type: QueryType(query_type),
                    link_address,
                    options: self.nested(s)?,
                })
            }
            OptionCode::CLIENT_DATA => OptionRef::ClientData(self.client_data()?),
            OptionCode::CLT_TIME => OptionRef::CltTime(self.fixed_u32()?),
            OptionCode::LQ_RELAY_DATA => OptionRef::LqRelayData(self.lq_relay_data()?),
            OptionCode::LQ_CLIENT_LINK => {
                if data.len() % 16 != 0 {
                    return Err(self.bad_len("a multiple of 16"));
                }
                OptionRef::LqClientLink(ClientLinkView { data })
            }
            OptionCode::LQ_BASE_TIME => OptionRef::LqBaseTime(self.fixed_u32()?),
            OptionCode::LQ_START_TIME => OptionRef::LqStartTime(self.fixed_u32()?),
            OptionCode::LQ_END_TIME => OptionRef::LqEndTime(self.fixed_u32()?),
            _ => OptionRef::Unknown(*self),
        })
    }

    #[inline]
    fn fixed_u32(&self) -> Result<u32, Error> {
        match *self.data {
            [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(self.bad_len("4")),
        }
    }
}

/// Takes the first `N` bytes off `s`.
#[inline]
fn chunk<const N: usize>(s: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = s.split_first_chunk::<N>()?;
    *s = tail;
    Some(*head)
}

#[inline]
fn be32(s: &mut &[u8]) -> Option<u32> {
    chunk::<4>(s).map(u32::from_be_bytes)
}

#[inline]
fn addr(s: &mut &[u8]) -> Option<Ipv6Addr> {
    chunk::<16>(s).map(Ipv6Addr::from)
}

/// The typed borrowed form of one option (see [`OptionView::kind`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum OptionRef<'a> {
    /// DUID bytes (parse with [`Duid::parse`](super::Duid::parse) if the type matters).
    ClientId(&'a [u8]),
    ServerId(&'a [u8]),
    RelayId(&'a [u8]),
    IaNa(IaView<'a>),
    IaPd(IaView<'a>),
    IaTa {
        iaid: u32,
        options: OptionsIter<'a>,
    },
    IaAddr(IaAddrView<'a>),
    IaPrefix(IaPrefixView<'a>),
    Oro(OroView<'a>),
    ElapsedTime(u16),
    RelayMsg(MessageView<'a>),
    StatusCode(StatusView<'a>),
    InterfaceId(&'a [u8]),
    SubscriberId(&'a [u8]),
    RemoteId {
        enterprise: u32,
        remote_id: &'a [u8],
    },
    ClientLinklayerAddr {
        hw_type: u16,
        addr: &'a [u8],
    },
    LqQuery(LqQueryView<'a>),
    ClientData(OptionsIter<'a>),
    CltTime(u32),
    LqRelayData(LqRelayDataView<'a>),
    LqClientLink(ClientLinkView<'a>),
    LqBaseTime(u32),
    LqStartTime(u32),
    LqEndTime(u32),
    /// Any option without a typed form.
    Unknown(OptionView<'a>),
}

impl OptionRef<'_> {
    /// Walks whatever this option encapsulates; returns the number of nested options.
    #[inline]
    fn walk(self) -> Result<usize, Error> {
        match self {
            OptionRef::IaNa(ia) | OptionRef::IaPd(ia) => ia.options.walk(),
            OptionRef::IaTa { options, .. }
            | OptionRef::ClientData(options)
            | OptionRef::IaAddr(IaAddrView { options, .. })
            | OptionRef::IaPrefix(IaPrefixView { options, .. })
            | OptionRef::LqQuery(LqQueryView { options, .. }) => options.walk(),
            OptionRef::RelayMsg(m) => m.options().walk(),
            OptionRef::LqRelayData(d) => d.relay.options().walk(),
            _ => Ok(0),
        }
    }
}

/// IA_NA or IA_PD.
#[derive(Debug, Clone, Copy)]
pub struct IaView<'a> {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub options: OptionsIter<'a>,
}

/// IAADDR.
#[derive(Debug, Clone, Copy)]
pub struct IaAddrView<'a> {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
    pub options: OptionsIter<'a>,
}

/// IAPREFIX.
#[derive(Debug, Clone, Copy)]
pub struct IaPrefixView<'a> {
    pub preferred: u32,
    pub valid: u32,
    pub prefix_len: u8,
    pub prefix_addr: Ipv6Addr,
    pub options: OptionsIter<'a>,
}

impl IaPrefixView<'_> {
    /// The delegated network, host bits cleared; an error if the length is over 128.
    pub fn prefix(&self) -> Result<Ipv6Prefix, PrefixError> {
        Ipv6Prefix::new_truncating(self.prefix_addr, self.prefix_len)
    }
}

/// STATUS_CODE.
#[derive(Debug, Clone, Copy)]
pub struct StatusView<'a> {
    pub code: StatusCode,
    /// Message bytes as sent (meant to be UTF-8).
    pub message: &'a [u8],
}

/// LQ_QUERY.
#[derive(Debug, Clone, Copy)]
pub struct LqQueryView<'a> {
    pub query_type: QueryType,
    pub link_address: Ipv6Addr,
    pub options: OptionsIter<'a>,
}

/// LQ_RELAY_DATA.
#[derive(Debug, Clone, Copy)]
pub struct LqRelayDataView<'a> {
    pub peer_address: Ipv6Addr,
    pub relay: RelayView<'a>,
}

/// ORO: a list of option codes (length checked even).
#[derive(Debug, Clone, Copy)]
pub struct OroView<'a> {
    data: &'a [u8],
}

impl<'a> OroView<'a> {
    pub fn codes(&self) -> impl Iterator<Item = OptionCode> + 'a {
        self.data
            .chunks_exact(2)
            .filter_map(|c| <[u8; 2]>::try_from(c).ok())
            .map(|c| OptionCode(u16::from_be_bytes(c)))
    }
}

/// LQ_CLIENT_LINK: a list of link-addresses (length checked a multiple of 16).
#[derive(Debug, Clone, Copy)]
pub struct ClientLinkView<'a> {
    data: &'a [u8],
}

impl<'a> ClientLinkView<'a> {
    pub fn addresses(&self) -> impl Iterator<Item = Ipv6Addr> + 'a {
        self.data
            .chunks_exact(16)
            .filter_map(|c| <[u8; 16]>::try_from(c).ok())
            .map(Ipv6Addr::from)
    }
}

impl<'a> MessageView<'a> {
    /// Checks every option at every depth (relay levels included); no allocation.
    #[inline]
    pub fn walk(&self) -> Result<usize, Error> {
        self.options().walk()
    }
}

/// A message whose every option at every depth passed [`MessageView::walk`]: made only by
/// [`CheckedMessage::new`]. Readers of a checked message (the snooper) take what it carries
/// straight from the received bytes, copying only what they keep; since every layout was
/// checked once, an accessor's error cannot happen on it, and the `checked_*` readers below
/// read one as absence rather than failing.
///
/// The same messages are accepted as by [`Message::parse`](super::Message::parse) (which walks
/// the same view), without building the owned tree: that is the point on the hot path, where
/// most messages teach nothing that is kept.
#[derive(Debug, Clone, Copy)]
pub struct CheckedMessage<'a>(MessageView<'a>);

impl<'a> CheckedMessage<'a> {
    /// Checks the header and walks every option at every depth; no allocation.
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Result<Self, Error> {
        let m = MessageView::new_checked(bytes)?;
        m.walk()?;
        Ok(CheckedMessage(m))
    }

    #[inline]
    pub fn view(&self) -> MessageView<'a> {
        self.0
    }

    #[inline]
    pub fn msg_type(&self) -> MessageType {
        self.0.msg_type()
    }

    /// The client/server message inside every relay level (`None`: a relay level without
    /// RELAY_MSG), as [`Message::innermost`](super::Message::innermost).
    pub fn innermost(&self) -> Option<ClientView<'a>> {
        super::RelayChainView::of(*self).innermost()
    }
}

impl<'a> OptionsIter<'a> {
    /// The body of the first option with `code`, as the owned finders read it; for a list of
    /// a [`CheckedMessage`], where an error cannot occur (one would read as absence).
    #[inline]
    pub fn checked_data(self, code: OptionCode) -> Option<&'a [u8]> {
        self.find(code).ok().flatten().map(|o| o.data())
    }

    /// The first STATUS_CODE's code (`None`: none, which RFC 8415 §21.13 reads as Success).
    #[inline]
    pub fn checked_status_code(self) -> Option<StatusCode> {
        self.find(OptionCode::STATUS_CODE)
            .ok()
            .flatten()
            .and_then(|o| o.status().ok())
            .map(|s| s.code)
    }

    /// The first Remote-Id: (enterprise number, remote-id).
    #[inline]
    pub fn checked_remote_id(self) -> Option<(u32, &'a [u8])> {
        match self
            .find(OptionCode::REMOTE_ID)
            .ok()
            .flatten()?
            .kind()
            .ok()?
        {
            OptionRef::RemoteId {
                enterprise,
                remote_id,
            } => Some((enterprise, remote_id)),
            _ => None,
        }
    }

    /// The first option with the untyped `code` whose body is 4 bytes, as a number (a server
    /// reply sequence number), as [`Options::srsn`](super::Options::srsn) reads it.
    #[inline]
    pub fn checked_srsn(self, code: u16) -> Option<u32> {
        self.filter_map(Result::ok)
            .filter(|o| o.code().0 == code)
            .find_map(|o| match o.kind() {
                Ok(OptionRef::Unknown(u)) => {
                    <[u8; 4]>::try_from(u.data()).ok().map(u32::from_be_bytes)
                }
                _ => None,
            })
    }
}
