//! DHCPv6 messages, owned: client/server messages and relay messages (RFC 8415 §8, §9).
//!
//! ```text
//! client/server: msg-type(1) transaction-id(3) options(*)
//! relay:         msg-type(1) hop-count(1) link-address(16) peer-address(16) options(*)
//! ```
//! RELAY-FORW (12) and RELAY-REPL (13) use the relay layout; every other type, known or not,
//! uses the client/server layout. A relay message's RELAY_MSG holds the next level, up to
//! [`MAX_RELAY_DEPTH`](super::MAX_RELAY_DEPTH) relay headers; RELAY_MSG anywhere else is `Error::WrongKind`.

use super::buf::{Reader, Writer};
use super::codes::MessageType;
use super::error::Error;
use super::option::{Ctx, Options};
use std::net::Ipv6Addr;

/// Largest transaction id (24 bits).
pub const MAX_TRANSACTION_ID: u32 = 0x00ff_ffff;

/// A DHCPv6 message of either layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Client(ClientMessage),
    Relay(RelayMessage),
}

/// A client/server message (every type but RELAY-FORW/RELAY-REPL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub msg_type: MessageType,
    /// 24-bit transaction id; values over [`MAX_TRANSACTION_ID`] fail to emit.
    pub transaction_id: u32,
    pub options: Options,
}

/// A RELAY-FORW or RELAY-REPL message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayMessage {
    pub msg_type: MessageType,
    pub hop_count: u8,
    pub link_address: Ipv6Addr,
    pub peer_address: Ipv6Addr,
    pub options: Options,
}

impl Message {
    /// Parses a whole message from `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Message, Error> {
        Message::parse_in(Reader::new(bytes, 0), Ctx::top())
    }

    pub(crate) fn parse_in(r: Reader<'_>, ctx: Ctx) -> Result<Message, Error> {
        let mut peek = r.clone();
        let t = MessageType(peek.u8("message type")?);
        if t.is_relay() {
            Ok(Message::Relay(RelayMessage::parse_in(r, ctx)?))
        } else {
            Ok(Message::Client(ClientMessage::parse_in(r, ctx)?))
        }
    }

    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Client(m) => m.msg_type,
            Message::Relay(m) => m.msg_type,
        }
    }

    pub fn options(&self) -> &Options {
        match self {
            Message::Client(m) => &m.options,
            Message::Relay(m) => &m.options,
        }
    }

    pub fn options_mut(&mut self) -> &mut Options {
        match self {
            Message::Client(m) => &mut m.options,
            Message::Relay(m) => &mut m.options,
        }
    }

    /// The client/server message at the bottom of a relay chain (`self` if not a relay);
    /// `None` if the chain ends in a relay without RELAY_MSG.
    pub fn innermost(&self) -> Option<&ClientMessage> {
        let mut m = self;
        loop {
            match m {
                Message::Client(c) => return Some(c),
                Message::Relay(r) => m = r.options.relay_msg()?,
            }
        }
    }

    /// The relay headers from outermost to innermost.
    pub fn relay_chain(&self) -> Vec<&RelayMessage> {
        let mut out = Vec::new();
        let mut m = self;
        while let Message::Relay(r) = m {
            out.push(r);
            match r.options.relay_msg() {
                Some(next) => m = next,
                None => break,
            }
        }
        out
    }

    pub fn buffer_len(&self) -> usize {
        match self {
            Message::Client(m) => m.buffer_len(),
            Message::Relay(m) => m.buffer_len(),
        }
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        match self {
            Message::Client(m) => m.emit_to(w),
            Message::Relay(m) => m.emit_to(w),
        }
    }

    /// Writes the message into `buf` (at least `buffer_len()` bytes); returns bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf);
        self.emit_to(&mut w)?;
        Ok(w.pos())
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut v = vec![0; self.buffer_len()];
        let n = self.emit(&mut v)?;
        v.truncate(n);
        Ok(v)
    }
}

impl From<ClientMessage> for Message {
    fn from(m: ClientMessage) -> Self {
        Message::Client(m)
    }
}

impl From<RelayMessage> for Message {
    fn from(m: RelayMessage) -> Self {
        Message::Relay(m)
    }
}

impl ClientMessage {
    /// Header bytes before the options.
    pub const HEADER_LEN: usize = 4;

    pub fn new(msg_type: MessageType, transaction_id: u32) -> Self {
        ClientMessage {
            msg_type,
            transaction_id,
            options: Options::new(),
        }
    }

    /// Parses a client/server message; a relay type is `Error::WrongKind`.
    pub fn parse(bytes: &[u8]) -> Result<ClientMessage, Error> {
        ClientMessage::parse_in(Reader::new(bytes, 0), Ctx::top())
    }

    pub(crate) fn parse_in(mut r: Reader<'_>, ctx: Ctx) -> Result<ClientMessage, Error> {
        let at = r.offset();
        let have = r.remaining();
        if have < Self::HEADER_LEN {
            return Err(Error::Truncated {
                at,
                what: "message header",
                need: Self::HEADER_LEN,
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
        let transaction_id = u32::from_be_bytes([0, a, b, c]);
        let options = Options::parse_in(r, ctx.enter_client())?;
        Ok(ClientMessage {
            msg_type,
            transaction_id,
            options,
        })
    }

    pub fn buffer_len(&self) -> usize {
        Self::HEADER_LEN + self.options.buffer_len()
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        if self.transaction_id > MAX_TRANSACTION_ID {
            return Err(Error::FieldRange {
                what: "24-bit transaction id",
                value: u64::from(self.transaction_id),
            });
        }
        if self.msg_type.is_relay() {
            return Err(Error::FieldRange {
                what: "client/server message type (12 and 13 are relay types)",
                value: u64::from(self.msg_type.0),
            });
        }
        w.u8(self.msg_type.0)?;
        let [_, a, b, c] = self.transaction_id.to_be_bytes();
        w.put(&[a, b, c])?;
        self.options.emit_to(w)
    }

    /// Writes the message into `buf` (at least `buffer_len()` bytes); returns bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf);
        self.emit_to(&mut w)?;
        Ok(w.pos())
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut v = vec![0; self.buffer_len()];
        let n = self.emit(&mut v)?;
        v.truncate(n);
        Ok(v)
    }
}

impl RelayMessage {
    /// Header bytes before the options.
    pub const HEADER_LEN: usize = 34;

    pub fn new(
        msg_type: MessageType,
        hop_count: u8,
        link_address: Ipv6Addr,
        peer_address: Ipv6Addr,
    ) -> Self {
        RelayMessage {
            msg_type,
            hop_count,
            link_address,
            peer_address,
            options: Options::new(),
        }
    }

    /// Parses a relay message; a client/server type is `Error::WrongKind`.
    pub fn parse(bytes: &[u8]) -> Result<RelayMessage, Error> {
        RelayMessage::parse_in(Reader::new(bytes, 0), Ctx::top())
    }

    pub(crate) fn parse_in(mut r: Reader<'_>, ctx: Ctx) -> Result<RelayMessage, Error> {
        let at = r.offset();
        let have = r.remaining();
        if have < Self::HEADER_LEN {
            // A single byte is enough to tell the kind: report that first.
            if let Ok(t) = r.clone().u8("message type") {
                if !MessageType(t).is_relay() {
                    return Err(Error::WrongKind {
                        at,
                        what: "client/server message where a relay message was expected",
                    });
                }
            }
            return Err(Error::Truncated {
                at,
                what: "relay message header",
                need: Self::HEADER_LEN,
                have,
            });
        }
        let msg_type = MessageType(r.u8("message type")?);
        if !msg_type.is_relay() {
            return Err(Error::WrongKind {
                at,
                what: "client/server message where a relay message was expected",
            });
        }
        let inner = ctx.enter_relay(at)?;
        let hop_count = r.u8("hop-count")?;
        let link_address = r.addr("link-address")?;
        let peer_address = r.addr("peer-address")?;
        let options = Options::parse_in(r, inner)?;
        Ok(RelayMessage {
            msg_type,
            hop_count,
            link_address,
            peer_address,
            options,
        })
    }

    /// The next level (RELAY_MSG content), if any.
    pub fn relay_message(&self) -> Option<&Message> {
        self.options.relay_msg()
    }

    pub fn buffer_len(&self) -> usize {
        Self::HEADER_LEN + self.options.buffer_len()
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        if !self.msg_type.is_relay() {
            return Err(Error::FieldRange {
                what: "relay message type (12 or 13)",
                value: u64::from(self.msg_type.0),
            });
        }
        w.u8(self.msg_type.0)?;
        w.u8(self.hop_count)?;
        w.addr(&self.link_address)?;
        w.addr(&self.peer_address)?;
        self.options.emit_to(w)
    }

    /// Writes the message into `buf` (at least `buffer_len()` bytes); returns bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf);
        self.emit_to(&mut w)?;
        Ok(w.pos())
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut v = vec![0; self.buffer_len()];
        let n = self.emit(&mut v)?;
        v.truncate(n);
        Ok(v)
    }
}
