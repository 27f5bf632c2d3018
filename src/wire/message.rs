//! DHCPv6 messages, owned: client/server messages and relay messages (RFC 8415 §8, §9): their
//! constructors, accessors and encoding (the types are in `owned`, decoding in `decode`).
//!
//! ```text
//! client/server: msg-type(1) transaction-id(3) options(*)
//! relay:         msg-type(1) hop-count(1) link-address(16) peer-address(16) options(*)
//! ```
//! RELAY-FORW (12) and RELAY-REPL (13) use the relay layout; every other type, known or not,
//! uses the client/server layout. A relay message's RELAY_MSG holds the next level, up to
//! [`MAX_RELAY_DEPTH`](super::MAX_RELAY_DEPTH) relay headers; RELAY_MSG anywhere else is `Error::WrongKind`.

use super::buf::Writer;
use super::codes::MessageType;
use super::context::{CLIENT_HEADER_LEN, RELAY_HEADER_LEN};
use super::error::Error;
use super::owned::{ClientMessage, Message, Options, RelayMessage};
use std::net::Ipv6Addr;

/// Largest transaction id (24 bits).
pub const MAX_TRANSACTION_ID: u32 = 0x00ff_ffff;

impl Message {
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
    /// `None` if the chain ends in a relay without RELAY_MSG. Read by the one relay walk
    /// ([`RelayChain`](super::RelayChain)).
    pub fn innermost(&self) -> Option<&ClientMessage> {
        super::RelayChain::of_message(self).innermost()
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
        emit_with(buf, |w| self.emit_to(w))
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        vec_with(self.buffer_len(), |b| self.emit(b))
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
    pub const HEADER_LEN: usize = CLIENT_HEADER_LEN;

    pub fn new(msg_type: MessageType, transaction_id: u32) -> Self {
        ClientMessage {
            msg_type,
            transaction_id,
            options: Options::new(),
        }
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
        emit_with(buf, |w| self.emit_to(w))
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        vec_with(self.buffer_len(), |b| self.emit(b))
    }
}

impl RelayMessage {
    /// Header bytes before the options.
    pub const HEADER_LEN: usize = RELAY_HEADER_LEN;

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
        emit_with(buf, |w| self.emit_to(w))
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        vec_with(self.buffer_len(), |b| self.emit(b))
    }
}

/// The one body of every message's `emit`: runs its `emit_to` over `buf`, returns bytes written.
fn emit_with(
    buf: &mut [u8],
    emit_to: impl FnOnce(&mut Writer<'_>) -> Result<(), Error>,
) -> Result<usize, Error> {
    let mut w = Writer::new(buf);
    emit_to(&mut w)?;
    Ok(w.pos())
}

/// The one body of every message's `to_vec`: `len` (its `buffer_len()`) bytes, emitted into.
fn vec_with(
    len: usize,
    emit: impl FnOnce(&mut [u8]) -> Result<usize, Error>,
) -> Result<Vec<u8>, Error> {
    let mut v = vec![0; len];
    let n = emit(&mut v)?;
    v.truncate(n);
    Ok(v)
}
