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
//!
//! One exception, for speed on the snooper's path (every relayed message): [`CheckedMessage::new`]
//! first asks a yes/no reading of the same layout rules (`list_ok`), which builds no `Result` or
//! typed view per option; only a message it refuses is walked, and the walk's error is the one
//! returned. The two readings are held to each other by tests over every code and length and
//! over every one-byte change of real messages, by a debug assertion, and by the `relay_chain`
//! fuzz target.

use super::buf::Reader;
use super::codes::{MessageType, OptionCode, QueryType, StatusCode};
use super::context::{
    CLIENT_HEADER_LEN, Ctx, MAX_NESTING, MAX_RELAY_DEPTH, RELAY_HEADER_LEN, bad_len,
};
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
///
/// It keeps a reference to the 34-byte header rather than its fields: views are copied
/// along every snooped message's path (a checked message holds up to three), and a pointer
/// copies cheaper than two addresses.
#[derive(Clone, Copy)]
pub struct RelayView<'a> {
    header: &'a [u8; RELAY_HEADER_LEN],
    options: OptionsIter<'a>,
}

impl std::fmt::Debug for RelayView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayView")
            .field("msg_type", &self.msg_type())
            .field("hop_count", &self.hop_count())
            .field("link_address", &self.link_address())
            .field("peer_address", &self.peer_address())
            .field("options", &self.options)
            .finish()
    }
}

/// The address `AT` bytes into a relay header (link-address at 2, peer-address at 18).
#[inline]
fn header_addr<const AT: usize>(h: &[u8; RELAY_HEADER_LEN]) -> Ipv6Addr {
    h.get(AT..)
        .and_then(<[u8]>::first_chunk::<16>)
        .map_or(Ipv6Addr::UNSPECIFIED, |a| Ipv6Addr::from(*a))
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
        let header = r.array_ref::<RELAY_HEADER_LEN>("relay message header")?;
        Ok(RelayView {
            header,
            options: OptionsIter::new(r, inner),
        })
    }

    #[inline]
    pub fn msg_type(&self) -> MessageType {
        let [t, ..] = *self.header;
        MessageType(t)
    }

    #[inline]
    pub fn hop_count(&self) -> u8 {
        let [_, h, ..] = *self.header;
        h
    }

    #[inline]
    pub fn link_address(&self) -> Ipv6Addr {
        header_addr::<2>(self.header)
    }

    #[inline]
    pub fn peer_address(&self) -> Ipv6Addr {
        header_addr::<18>(self.header)
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
    pub fn walk(self) -> Result<usize, Error> {
        let mut n = 0;
        for o in self {
            n += 1;
            if let Some(inner) = o?.check()? {
                n += inner.walk()?;
            }
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

    /// IA_TA: its IAID and options (the caller has matched the code).
    #[inline]
    fn ia_ta(&self) -> Result<(u32, OptionsIter<'a>), Error> {
        let mut s = self.data;
        let Some(iaid) = be32(&mut s) else {
            return Err(self.bad_len("at least 4"));
        };
        Ok((iaid, self.nested(s)?))
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

    /// RELAY_MSG: the message it carries, its header checked; only a relay message's own
    /// options may carry one.
    #[inline]
    fn relay_msg(&self) -> Result<MessageView<'a>, Error> {
        if !self.ctx.in_relay() {
            return Err(Error::WrongKind {
                at: self.at,
                what: "RELAY_MSG outside a relay message",
            });
        }
        let r = Reader::new(self.data, self.at + 4);
        MessageView::checked_in(r, self.ctx.nested(self.at)?)
    }

    /// Checks this option's layout exactly as [`kind`](Self::kind) does (the same accessor
    /// per code, so the same error) and gives the option list it encapsulates, if any. This
    /// is what a walk needs: the codes every relayed message carries are dispatched here
    /// without building their typed form, which made the walk the snooper's largest cost.
    #[inline]
    fn check(&self) -> Result<Option<OptionsIter<'a>>, Error> {
        match self.code {
            OptionCode::CLIENTID
            | OptionCode::SERVERID
            | OptionCode::RELAY_ID
            | OptionCode::INTERFACE_ID
            | OptionCode::SUBSCRIBER_ID => Ok(None),
            OptionCode::IA_NA | OptionCode::IA_PD => self.ia().map(|ia| Some(ia.options)),
            OptionCode::IAADDR => self.ia_addr().map(|a| Some(a.options)),
            OptionCode::IAPREFIX => self.ia_prefix().map(|p| Some(p.options)),
            OptionCode::STATUS_CODE => self.status().map(|_| None),
            OptionCode::RELAY_MSG => self.relay_msg().map(|m| Some(m.options())),
            _ => self.kind_any().map(OptionRef::nested),
        }
    }

    /// Checks the layout for this option's code and returns its typed borrowed form.
    ///
    /// The codes every lease-carrying message has are read here, inlined into the reader's
    /// loop (where the typed form it matches on then costs nothing to build); the rest go to
    /// [`kind_any`](Self::kind_any), which reads every code the same way.
    #[inline(always)]
    pub fn kind(&self) -> Result<OptionRef<'a>, Error> {
        match self.code {
            OptionCode::IA_NA => Ok(OptionRef::IaNa(self.ia()?)),
            OptionCode::IA_PD => Ok(OptionRef::IaPd(self.ia()?)),
            OptionCode::IAADDR => Ok(OptionRef::IaAddr(self.ia_addr()?)),
            OptionCode::IAPREFIX => Ok(OptionRef::IaPrefix(self.ia_prefix()?)),
            OptionCode::CLIENTID => Ok(OptionRef::ClientId(self.data)),
            OptionCode::SERVERID => Ok(OptionRef::ServerId(self.data)),
            OptionCode::INTERFACE_ID => Ok(OptionRef::InterfaceId(self.data)),
            OptionCode::STATUS_CODE => Ok(OptionRef::StatusCode(self.status()?)),
            _ => self.kind_any(),
        }
    }

    /// [`kind`](Self::kind) for any code.
    #[inline(never)]
    fn kind_any(&self) -> Result<OptionRef<'a>, Error> {
        let data = self.data;
        let mut s = data;
        Ok(match self.code {
            OptionCode::CLIENTID => OptionRef::ClientId(data),
            OptionCode::SERVERID => OptionRef::ServerId(data),
            OptionCode::RELAY_ID => OptionRef::RelayId(data),
            OptionCode::IA_NA => OptionRef::IaNa(self.ia()?),
            OptionCode::IA_PD => OptionRef::IaPd(self.ia()?),
            OptionCode::IA_TA => {
                let (iaid, options) = self.ia_ta()?;
                OptionRef::IaTa { iaid, options }
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
            OptionCode::RELAY_MSG => OptionRef::RelayMsg(self.relay_msg()?),
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

impl OptionsIter<'_> {
    /// [`list_ok`] over this list, in its context.
    #[inline]
    fn layout_ok(&self) -> bool {
        list_ok(
            self.rest,
            self.ctx.nesting(),
            self.ctx.relay_depth(),
            self.ctx.in_relay(),
        )
    }
}

impl OptionView<'_> {
    /// [`option_ok`] for this option, in its context.
    #[inline]
    fn layout_ok(&self) -> bool {
        option_ok(
            self.code,
            self.data,
            self.ctx.nesting(),
            self.ctx.relay_depth(),
            self.ctx.in_relay(),
        )
    }
}

/// The fast check's verdict alone on a message whose header checked (for the tests that
/// hold it to the walk's).
#[cfg(test)]
pub(crate) fn fast_verdict(m: MessageView<'_>) -> bool {
    ChainIndex::default().check_level(m)
}

/// The fast check behind [`CheckedMessage::new`]: `true` when every option of the list
/// `rest`, and everything nested in it, has the layout [`OptionView::kind`] requires, in
/// the context given (`nesting` and `relay_depth` as [`Ctx`] counts them; `in_relay`: the
/// list is a relay message's own, where RELAY_MSG may appear).
///
/// Why a second reading of the rules: the walk builds a `Result<_, Error>` and a typed view
/// per option, which cost more than the snooper's whole budget per message; this pass only
/// answers yes or no, with every length from the wire still checked before use (no indexing:
/// `get`, `split_at_checked`, slice patterns). It never names an error: a refused message is
/// walked again by the walk, whose error is the one reported. Kept in step with `kind` by
/// tests over every code and length and over mutated messages (`wire::tests`), by the debug
/// assertion in [`CheckedMessage::new`], and by the `relay_chain` fuzz target (which compares
/// `CheckedMessage::new` with the walk on every input).
fn list_ok(mut rest: &[u8], nesting: usize, relay_depth: usize, in_relay: bool) -> bool {
    while let [c0, c1, l0, l1, ref tail @ ..] = *rest {
        let Some((data, next)) = tail.split_at_checked(usize::from(u16::from_be_bytes([l0, l1])))
        else {
            return false;
        };
        if !option_ok(
            OptionCode(u16::from_be_bytes([c0, c1])),
            data,
            nesting,
            relay_depth,
            in_relay,
        ) {
            return false;
        }
        rest = next;
    }
    rest.is_empty()
}

/// One option's layout, as [`OptionView::kind`] checks it (see [`list_ok`]). Inlined into
/// the list loop: one call per list rather than per option.
#[inline(always)]
fn option_ok(
    code: OptionCode,
    data: &[u8],
    nesting: usize,
    relay_depth: usize,
    in_relay: bool,
) -> bool {
    // An encapsulated list sits one level deeper, which `Ctx::nested` bounds.
    let deeper = nesting < MAX_NESTING;
    let nested = |fixed: usize| {
        deeper
            && data
                .get(fixed..)
                // Most leases nest nothing: no call for an empty list.
                .is_some_and(|l| l.is_empty() || list_ok(l, nesting + 1, relay_depth, false))
    };
    match code {
        OptionCode::IA_NA | OptionCode::IA_PD => nested(12),
        OptionCode::IA_TA => nested(4),
        OptionCode::IAADDR => nested(24),
        OptionCode::IAPREFIX => nested(25),
        OptionCode::LQ_QUERY => nested(17),
        OptionCode::CLIENT_DATA => nested(0),
        OptionCode::ORO => data.len() % 2 == 0,
        OptionCode::ELAPSED_TIME => data.len() == 2,
        OptionCode::STATUS_CODE | OptionCode::CLIENT_LINKLAYER_ADDR => data.len() >= 2,
        OptionCode::REMOTE_ID => data.len() >= 4,
        OptionCode::CLT_TIME
        | OptionCode::LQ_BASE_TIME
        | OptionCode::LQ_START_TIME
        | OptionCode::LQ_END_TIME => data.len() == 4,
        OptionCode::LQ_CLIENT_LINK => data.len() % 16 == 0,
        OptionCode::RELAY_MSG => in_relay && deeper && message_ok(data, nesting + 1, relay_depth),
        // peer-address(16), then a relay message starting a chain of its own.
        OptionCode::LQ_RELAY_DATA => {
            deeper && data.get(16..).is_some_and(|m| relay_ok(m, nesting + 1, 0))
        }
        _ => true,
    }
}

/// A message of either layout (RELAY_MSG's body), as [`MessageView`]'s constructor checks it.
#[inline]
fn message_ok(m: &[u8], nesting: usize, relay_depth: usize) -> bool {
    match m.first() {
        None => false,
        Some(&t) if MessageType(t).is_relay() => relay_ok(m, nesting, relay_depth),
        Some(_) => m
            .get(CLIENT_HEADER_LEN..)
            .is_some_and(|l| list_ok(l, nesting, relay_depth, false)),
    }
}

/// A relay message, as [`RelayView`]'s constructor checks it (one relay level more).
#[inline]
fn relay_ok(m: &[u8], nesting: usize, relay_depth: usize) -> bool {
    m.first().is_some_and(|&t| MessageType(t).is_relay())
        && relay_depth < MAX_RELAY_DEPTH
        && m.get(RELAY_HEADER_LEN..)
            .is_some_and(|l| list_ok(l, nesting, relay_depth + 1, true))
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
    /// DUID bytes (read with [`DuidKind::parse`](super::DuidKind::parse) if the type matters).
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

impl<'a> OptionRef<'a> {
    /// The option list this option encapsulates, if any (what a walk descends into).
    #[inline]
    fn nested(self) -> Option<OptionsIter<'a>> {
        match self {
            OptionRef::IaNa(ia) | OptionRef::IaPd(ia) => Some(ia.options),
            OptionRef::IaTa { options, .. }
            | OptionRef::ClientData(options)
            | OptionRef::IaAddr(IaAddrView { options, .. })
            | OptionRef::IaPrefix(IaPrefixView { options, .. })
            | OptionRef::LqQuery(LqQueryView { options, .. }) => Some(options),
            OptionRef::RelayMsg(m) => Some(m.options()),
            OptionRef::LqRelayData(d) => Some(d.relay.options()),
            _ => None,
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
///
/// The walk that checks also notes the relay chain on its way down (this box's level, the one
/// below it, how many, the client message inside), so [`innermost`](Self::innermost) and
/// [`RelayChainView::of`](super::RelayChainView::of) read it in O(1) instead of walking
/// each level's options and re-checking its RELAY_MSG again.
#[derive(Debug, Clone, Copy)]
pub struct CheckedMessage<'a> {
    view: MessageView<'a>,
    chain: ChainIndex<'a>,
}

/// The relay chain of a checked message as its walk found it: the levels reached by following
/// each level's first RELAY_MSG, outermost first, as
/// [`RelayView::relay_message`] reads them one by one.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChainIndex<'a> {
    /// The level inside the outermost one (which is the message's own view, not stored
    /// twice: the smaller a checked message, the cheaper every copy the snooper makes).
    pub(crate) below: Option<RelayView<'a>>,
    /// Relay levels in the chain.
    pub(crate) levels: usize,
    /// The client/server message inside every level; `None` when a level has no RELAY_MSG.
    pub(crate) innermost: Option<ClientView<'a>>,
}

impl<'a> ChainIndex<'a> {
    /// Notes the level `m` (or, for a client message, the innermost message).
    #[inline]
    fn note(&mut self, r: RelayView<'a>) {
        if self.levels == 1 {
            self.below = Some(r);
        }
        self.levels += 1;
    }

    /// The fast check ([`list_ok`]) over `m` and everything in it, noting the chain on the
    /// way down; `false` when anything is malformed (the walk then says what and where).
    #[inline]
    fn check_level(&mut self, m: MessageView<'a>) -> bool {
        match m {
            MessageView::Client(c) => self.check_client(c),
            MessageView::Relay(r) => self.check_relay(r),
        }
    }

    /// The client message inside every level: noted, and its options checked.
    #[inline(always)]
    fn check_client(&mut self, c: ClientView<'a>) -> bool {
        self.innermost = Some(c);
        c.options().layout_ok()
    }

    /// One relay level and everything in it. The client message its RELAY_MSG carries is
    /// handled here rather than by a call taking a [`MessageView`]: such a call passed the
    /// view through memory, stored piece by piece and read back whole (a store-forwarding
    /// stall that perf put at a quarter of this function's time on a relayed REPLY).
    fn check_relay(&mut self, r: RelayView<'a>) -> bool {
        self.note(r);
        let mut next_level = true;
        for o in r.options() {
            let Ok(o) = o else { return false };
            if next_level && o.code() == OptionCode::RELAY_MSG {
                next_level = false;
                let ok = match o.relay_msg() {
                    Ok(MessageView::Client(c)) => self.check_client(c),
                    Ok(MessageView::Relay(inner)) => self.check_relay(inner),
                    Err(_) => false,
                };
                if !ok {
                    return false;
                }
            } else if !o.layout_ok() {
                return false;
            }
        }
        true
    }

    /// Walks `m` as [`MessageView::walk`] does (same order, so the same first error) and
    /// notes the chain: `m` is a level of it, or the client message inside it.
    fn walk_level(&mut self, m: MessageView<'a>) -> Result<usize, Error> {
        let r = match m {
            MessageView::Client(c) => {
                self.innermost = Some(c);
                return c.options().walk();
            }
            MessageView::Relay(r) => r,
        };
        self.note(r);
        let mut next_level = true;
        let mut n = 0;
        for o in r.options() {
            let o = o?;
            n += 1;
            if next_level && o.code() == OptionCode::RELAY_MSG {
                next_level = false;
                n += self.walk_level(o.relay_msg()?)?;
            } else if let Some(inner) = o.check()? {
                n += inner.walk()?;
            }
        }
        Ok(n)
    }
}

impl<'a> CheckedMessage<'a> {
    /// Checks the header and walks every option at every depth; no allocation.
    ///
    /// Two passes over one set of rules' verdicts: the fast check ([`list_ok`]) decides
    /// a well-formed message in one tight pass; anything it refuses is walked again by
    /// [`MessageView::walk`]'s own path, which names the error and its offset (and is the
    /// authority: were the fast check ever stricter, the walk would still accept). In builds
    /// with debug assertions (tests) every fast acceptance is re-checked by the walk.
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Result<Self, Error> {
        let view = MessageView::new_checked(bytes)?;
        let mut chain = ChainIndex::default();
        if chain.check_level(view) {
            debug_assert!(
                view.walk().is_ok(),
                "the fast check accepted a message the walk refuses"
            );
            return Ok(CheckedMessage { view, chain });
        }
        let mut chain = ChainIndex::default();
        chain.walk_level(view)?;
        Ok(CheckedMessage { view, chain })
    }

    #[inline]
    pub fn view(&self) -> MessageView<'a> {
        self.view
    }

    #[inline]
    pub fn msg_type(&self) -> MessageType {
        self.view.msg_type()
    }

    /// The client/server message inside every relay level (`None`: a relay level without
    /// RELAY_MSG), as [`Message::innermost`](super::Message::innermost).
    #[inline]
    pub fn innermost(&self) -> Option<ClientView<'a>> {
        self.chain.innermost
    }

    /// The relay chain the walk noted.
    #[inline]
    pub(crate) fn chain(&self) -> ChainIndex<'a> {
        self.chain
    }
}

impl<'a> OptionsIter<'a> {
    /// The body of the first option with `code`, as the owned finders read it; for a list of
    /// a [`CheckedMessage`], where an error cannot occur (one would read as absence).
    ///
    /// A bare scan of headers (no [`OptionView`] or `Result` per option): every header is
    /// still bound-checked, and one that is cut short or overruns ends the scan with `None`,
    /// as [`find`](Self::find)'s error would.
    #[inline]
    pub fn checked_data(self, code: OptionCode) -> Option<&'a [u8]> {
        let mut rest = self.rest;
        while let [c0, c1, l0, l1, ref tail @ ..] = *rest {
            let (data, next) = tail.split_at_checked(usize::from(u16::from_be_bytes([l0, l1])))?;
            if u16::from_be_bytes([c0, c1]) == code.0 {
                return Some(data);
            }
            rest = next;
        }
        None
    }

    /// The first STATUS_CODE's code (`None`: none, which RFC 8415 §21.13 reads as Success).
    #[inline]
    pub fn checked_status_code(self) -> Option<StatusCode> {
        let (code, _) = self
            .checked_data(OptionCode::STATUS_CODE)?
            .split_first_chunk::<2>()?;
        Some(StatusCode(u16::from_be_bytes(*code)))
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

    /// Every option of a list as a bare header scan: no `Result` per option, and it ends at
    /// the first header that is cut short or overruns, as `filter_map(Result::ok)` over the
    /// iterator does (which stops for good after its first error).
    #[inline]
    fn checked_views(self) -> impl Iterator<Item = OptionView<'a>> {
        let OptionsIter {
            mut rest,
            mut at,
            ctx,
        } = self;
        std::iter::from_fn(move || {
            let [c0, c1, l0, l1, ref tail @ ..] = *rest else {
                return None;
            };
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            let (data, next) = tail.split_at_checked(len)?;
            let o = OptionView {
                code: OptionCode(u16::from_be_bytes([c0, c1])),
                data,
                at,
                ctx,
            };
            rest = next;
            at += 4 + len;
            Some(o)
        })
    }

    /// The IA_NA, IA_PD and IA_TA options of a list, in order, for a list of a
    /// [`CheckedMessage`]: what the classifier reads leases from.
    ///
    /// Why not `filter_map(|o| o.kind().ok())`: `kind` dispatches on every code and builds
    /// the typed form of each option only to drop all but three, which made that loop half
    /// of the snooper's decode. Here a code is compared first and only an IA is read, with
    /// the same accessors `kind` uses (so the same layouts and nesting bound are required);
    /// an option `kind` would refuse is skipped, as the error of `kind().ok()` would be.
    #[inline]
    pub fn checked_ias(self) -> impl Iterator<Item = CheckedIa<'a>> {
        self.checked_views().filter_map(|o| match o.code {
            OptionCode::IA_NA | OptionCode::IA_PD => o.ia().ok().map(|ia| CheckedIa {
                code: o.code,
                iaid: ia.iaid,
                options: ia.options,
            }),
            OptionCode::IA_TA => o.ia_ta().ok().map(|(iaid, options)| CheckedIa {
                code: o.code,
                iaid,
                options,
            }),
            _ => None,
        })
    }

    /// The IAADDR options of a list, in order (an IA's addresses), read as
    /// [`checked_ias`](Self::checked_ias) reads IAs: a malformed one is skipped.
    #[inline]
    pub fn checked_ia_addrs(self) -> impl Iterator<Item = IaAddrView<'a>> {
        self.checked_views()
            .filter(|o| o.code == OptionCode::IAADDR)
            .filter_map(|o| o.ia_addr().ok())
    }

    /// The IAPREFIX options of a list, in order (an IA_PD's prefixes), read as
    /// [`checked_ias`](Self::checked_ias) reads IAs: a malformed one is skipped.
    #[inline]
    pub fn checked_ia_prefixes(self) -> impl Iterator<Item = IaPrefixView<'a>> {
        self.checked_views()
            .filter(|o| o.code == OptionCode::IAPREFIX)
            .filter_map(|o| o.ia_prefix().ok())
    }
}

/// One IA_NA, IA_PD or IA_TA, as [`OptionsIter::checked_ias`] yields it.
#[derive(Debug, Clone, Copy)]
pub struct CheckedIa<'a> {
    /// `IA_NA`, `IA_PD` or `IA_TA`.
    pub code: OptionCode,
    pub iaid: u32,
    /// The IA's own options (its leases, its status).
    pub options: OptionsIter<'a>,
}
