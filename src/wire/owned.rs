//! The owned message tree's types: messages, options and the option bodies that hold options.
//!
//! They are declared together because they are one recursive type: a message holds options, an
//! option (RELAY_MSG, IA_NA, CLIENT_DATA, LQ_RELAY_DATA, ...) holds options or a message. Split
//! over files, each file would have to import the other. Their behaviour lives by concern:
//! encoding and accessors in `message`, `option`, `ia` and `lq`; decoding (built from the
//! borrowed view, which does every check) in `decode`.

use super::codes::{MessageType, OptionCode, QueryType};
use super::duid::Duid;
use super::status::Status;
use std::net::Ipv6Addr;
use std::ops::{Deref, DerefMut};

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
    /// 24-bit transaction id; values over [`MAX_TRANSACTION_ID`](super::MAX_TRANSACTION_ID) fail to emit.
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

/// IA_NA or IA_PD: an identity association with renewal timers (the variant says which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ia {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub options: Options,
}

/// IA_TA: temporary addresses, no timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaTa {
    pub iaid: u32,
    pub options: Options,
}

/// IAADDR: one address lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaAddr {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
    pub options: Options,
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

/// OPTION_LQ_QUERY: what a requestor asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LqQuery {
    pub query_type: QueryType,
    /// The link to search; `::` means every link (RFC 5007 §4.1.2.1).
    pub link_address: Ipv6Addr,
    pub options: Options,
}

/// OPTION_CLIENT_DATA: everything a server knows about one client (RFC 5007 §4.1.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientData {
    pub options: Options,
}

/// OPTION_LQ_RELAY_DATA: the last relay message the server got for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LqRelayData {
    /// The address of the relay agent that sent it (or the client, for a direct message).
    pub peer_address: Ipv6Addr,
    /// The RELAY-FORW chain, without the client's own message.
    pub relay: RelayMessage,
}
