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
/// `Copy` because every borrowed view carries one.
///
/// Held as one `u32` (nesting in bits 0-7, relay depth in bits 8-15, the relay flag in bit 16)
/// rather than three byte fields: every nested view makes a new context, and the compiler
/// built the three-field form byte by byte in memory and then read it back whole, a
/// store-forwarding stall that was the largest single cost of the snooper's lease loop. As one
/// integer, a new context is a mask and an add in a register.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ctx(u32);

const NESTING_SHIFT: u32 = 0;
const RELAY_DEPTH_SHIFT: u32 = 8;
const IN_RELAY: u32 = 1 << 16;

// Both limits must fit their byte, so a count below its limit plus one never carries over.
const _: () = assert!(MAX_NESTING < 0xff && MAX_RELAY_DEPTH < 0xff);

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("nesting", &self.nesting())
            .field("relay_depth", &self.relay_depth())
            .field("in_relay", &self.in_relay())
            .finish()
    }
}

impl Ctx {
    pub(crate) fn top() -> Ctx {
        Ctx(0)
    }

    /// Levels of encapsulation above this list.
    #[inline]
    pub(crate) fn nesting(self) -> usize {
        ((self.0 >> NESTING_SHIFT) & 0xff) as usize
    }

    /// Relay levels above this list in its chain.
    #[inline]
    pub(crate) fn relay_depth(self) -> usize {
        ((self.0 >> RELAY_DEPTH_SHIFT) & 0xff) as usize
    }

    /// Whether this list is a relay message's own (where RELAY_MSG may appear).
    #[inline]
    pub(crate) fn in_relay(self) -> bool {
        self.0 & IN_RELAY != 0
    }

    /// The context for options encapsulated in the option at `at`.
    #[inline]
    pub(crate) fn nested(self, at: usize) -> Result<Ctx, Error> {
        if self.nesting() >= MAX_NESTING {
            return Err(Error::TooDeep {
                at,
                what: "option encapsulation",
                limit: MAX_NESTING,
            });
        }
        Ok(Ctx((self.0 & !IN_RELAY) + (1 << NESTING_SHIFT)))
    }

    /// The context for the options of a relay message starting at `at` (one more relay level).
    #[inline]
    pub(crate) fn enter_relay(self, at: usize) -> Result<Ctx, Error> {
        if self.relay_depth() >= MAX_RELAY_DEPTH {
            return Err(Error::TooDeep {
                at,
                what: "relay chain",
                limit: MAX_RELAY_DEPTH,
            });
        }
        Ok(Ctx((self.0 + (1 << RELAY_DEPTH_SHIFT)) | IN_RELAY))
    }

    /// The context for a client/server message's options.
    #[inline]
    pub(crate) fn enter_client(self) -> Ctx {
        Ctx(self.0 & !IN_RELAY)
    }

    /// LQ_RELAY_DATA starts a relay chain of its own.
    #[inline]
    pub(crate) fn new_relay_chain(self) -> Ctx {
        Ctx(self.0 & !(0xff << RELAY_DEPTH_SHIFT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed form keeps each count and the flag apart through every transition, up to
    /// and over each limit.
    #[test]
    fn each_transition_changes_only_its_own_field() {
        let mut c = Ctx::top();
        for depth in 0..MAX_RELAY_DEPTH {
            assert_eq!(
                (c.nesting(), c.relay_depth(), c.in_relay()),
                (0, depth, depth > 0)
            );
            c = c.enter_relay(0).unwrap();
        }
        assert!(c.enter_relay(0).is_err());
        let deep = c;
        for n in 0..MAX_NESTING {
            assert_eq!((c.nesting(), c.relay_depth()), (n, MAX_RELAY_DEPTH));
            c = c.nested(0).unwrap();
            assert!(!c.in_relay());
        }
        assert!(c.nested(0).is_err());
        assert_eq!(c.nesting(), MAX_NESTING);
        let fresh = c.new_relay_chain();
        assert_eq!((fresh.nesting(), fresh.relay_depth()), (MAX_NESTING, 0));
        assert!(!deep.enter_client().in_relay());
        assert_eq!(deep.enter_client().relay_depth(), MAX_RELAY_DEPTH);
        let r = fresh.enter_relay(0).unwrap();
        assert_eq!(
            (r.nesting(), r.relay_depth(), r.in_relay()),
            (MAX_NESTING, 1, true)
        );
    }
}
