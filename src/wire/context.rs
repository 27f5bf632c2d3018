//! Where an option list sits while it is decoded, and the limits that bound decoding.
//!
//! Shared by the borrowed view (which does every check) and the owned types (which name the
//! limits in their docs), so it lives below both: nothing here imports another wire module but
//! the error type and the option codes.

use super::codes::OptionCode;
use super::error::Error;

/// Most relay headers accepted in one chain. RFC 3315 §5.1 had HOP_COUNT_LIMIT 32; RFC 8415
/// §7.6 lowered the relay's limit to 8, but a decoder must still read what older relays send.
pub(crate) const MAX_RELAY_DEPTH: usize = 32;

/// Most levels of encapsulated options (RELAY_MSG, IA_NA, CLIENT_DATA, ...) in one buffer. Room
/// for a maximal relay chain plus a full leasequery reply, and a bound on recursion.
pub(crate) const MAX_NESTING: usize = 64;

/// Header bytes of a client/server message before its options: msg-type(1) transaction-id(3).
pub(crate) const CLIENT_HEADER_LEN: usize = 4;

/// Header bytes of a relay message before its options: msg-type(1) hop-count(1)
/// link-address(16) peer-address(16).
pub(crate) const RELAY_HEADER_LEN: usize = 34;

/// An option body whose length breaks its layout.
pub(crate) fn bad_len(at: usize, code: OptionCode, len: usize, expected: &'static str) -> Error {
    Error::BadLength {
        at,
        code: code.0,
        len,
        expected,
    }
}

/// Where an option list sits: how deep, and whether RELAY_MSG is allowed there. Small and
/// `Copy` because every borrowed view carries one; aligned to 4 so that copying a view
/// moves it whole rather than as odd-offset pieces (which stalled the snooper's copies).
#[derive(Debug, Clone, Copy)]
#[repr(align(4))]
pub(crate) struct Ctx {
    pub(crate) nesting: u8,
    pub(crate) relay_depth: u8,
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
