//! DHCPv6 wire format (RFC 8415, 5007, 5460, 7653): pure decode and encode, no I/O.
//!
//! Two faces over one parser:
//! - the **borrowed view** (`view` module) walks a received message's options in place without
//!   allocating, and is where every decode check is written (headers, lengths, nesting bounds,
//!   where RELAY_MSG may appear). Every parse makes this one checking pass. The snooper reads
//!   the checked view ([`CheckedMessage`]) in place and copies only what it keeps; the
//!   requestor and bulk take the owned tree below; `lqagent decode` walks the view;
//! - the **owned representation** — [`Message`] (`Client(ClientMessage)` | `Relay(RelayMessage)`),
//!   [`Options`], [`DhcpOption`] — with `buffer_len`, `emit` and `to_vec`: what we build and send,
//!   and what tests and tools compare. Its `parse` copies out of a checked view (`decode`), so
//!   both faces accept the same bytes and report the same error at the same offset.
//!
//! Module layering, one way only: `context` (limits, nesting) and `buf` at the bottom; `view` on
//! them; `owned` declares the recursive owned types together; `message`, `option`, `ia`, `lq`
//! give them behaviour; `decode` joins the view to the owned types.
//!
//! Typed options: CLIENTID, SERVERID, RELAY_ID (as [`Duid`]), IA_NA, IA_TA, IA_PD, IAADDR,
//! IAPREFIX, ORO, ELAPSED_TIME, RELAY_MSG, STATUS_CODE, INTERFACE_ID, REMOTE_ID, SUBSCRIBER_ID,
//! CLIENT_LINKLAYER_ADDR, LQ_QUERY, CLIENT_DATA, CLT_TIME, LQ_RELAY_DATA, LQ_CLIENT_LINK,
//! LQ_BASE_TIME, LQ_START_TIME, LQ_END_TIME. Every other option is kept as code + bytes, in order,
//! so `emit(parse(b)) == b` for every message that parses.
//!
//! No-panic contract: `parse` and every accessor take any bytes and return a typed [`Error`]
//! with the offset of the fault; lengths from the wire are checked before use, allocation is
//! bounded by the input size, recursion by [`MAX_NESTING`] and [`MAX_RELAY_DEPTH`]. `emit`
//! needs a buffer of at least `buffer_len()` bytes and reports a short one as an error.
//!
//! [`bulk`] holds the RFC 5460 TCP framing; [`pretty`] renders a message for people (text, JSON).

mod buf;
pub mod bulk;
mod codes;
mod context;
mod decode;
mod duid;
mod error;
mod ia;
mod lq;
mod message;
mod option;
mod owned;
pub mod pretty;
mod relay;
mod status;
pub(crate) mod view;

pub use codes::{LeasequeryType, MessageType, OptionCode, QueryType, StatusCode};
pub use duid::{Duid, DuidKind};
pub use error::{Error, ErrorKind};
pub use ia::INFINITE_LIFETIME;
pub use lq::{LeasequeryRef, LqTarget};
pub use message::MAX_TRANSACTION_ID;
pub use owned::{
    ClientData, ClientMessage, DhcpOption, Ia, IaAddr, IaPrefix, IaTa, LqQuery, LqRelayData,
    Message, Options, RelayMessage,
};
pub use relay::{Inner, RelayChain, RelayChainView, RelayLevel};
pub use status::Status;
pub use view::{
    CheckedIa, CheckedMessage, ClientView, MessageView, OptionRef, OptionsIter, RelayView,
};

/// UDP port clients listen on (RFC 8415 §7.2).
pub(crate) const CLIENT_PORT: u16 = 546;
/// UDP port servers and relays listen on; also the bulk/active leasequery TCP port.
pub const SERVER_PORT: u16 = 547;
/// All_DHCP_Servers (RFC 8415 §7.1).
pub const ALL_DHCP_SERVERS: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xff05, 0, 0, 0, 0, 0, 1, 3);

#[cfg(test)]
mod tests;
