//! A relay chain read from this box's side: the one place every relay level is read (RFC 8415
//! §19, RFC 6221).
//!
//! lqagent sits beside the relay nearest the server side of a subscriber link (a BNG or CMTS).
//! Whatever it believes about a client's *link* must come from the level this box itself wrote,
//! never from levels inside it: those were written by whoever sent the message to us, and a
//! subscriber can wrap its own SOLICIT in a RELAY-FORW naming any link-address, peer-address
//! and Interface-Id it likes (posing as a Lightweight DHCPv6 Relay Agent, RFC 6221).
//!
//! Which level is this box's:
//! - a snooped RELAY-FORW/RELAY-REPL: the outermost level (the snooper's trust checks make sure
//!   the RELAY-FORW left this box and the RELAY-REPL was addressed to it);
//! - LQ_RELAY_DATA in a leasequery or bulk answer (RFC 5007 §4.1.2.4): the outermost level too,
//!   the relay message the server received, i.e. the one the relay nearest the server (us) sent.
//!
//! The levels below ours are an LDRA's at most (one level, when the link's configuration says
//! an LDRA stands in front of it); anything deeper is not a chain this box can vouch for.

use super::owned::{Message, RelayMessage};
use super::view::{CheckedMessage, ClientView, MessageView, RelayView};
use std::net::Ipv6Addr;

/// Most levels read; the codec bounds nesting well below this anyway.
const MAX_LEVELS: usize = 64;

/// The levels of one relay chain, this box's (outermost) first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayChain<'a> {
    /// Outermost (this box's) first, the level nearest the client last.
    levels: Vec<&'a RelayMessage>,
}

impl<'a> RelayChain<'a> {
    /// The chain of a snooped relay message (empty for a client/server message).
    pub fn of_message(m: &'a Message) -> Self {
        match m {
            Message::Relay(r) => Self::of_relay(r),
            Message::Client(_) => RelayChain { levels: Vec::new() },
        }
    }

    /// The chain starting at `outer`, this box's level (e.g. the relay message of LQ_RELAY_DATA).
    pub fn of_relay(outer: &'a RelayMessage) -> Self {
        let mut levels = vec![outer];
        let mut cur = outer;
        while levels.len() < MAX_LEVELS {
            match cur.options.relay_msg() {
                Some(Message::Relay(inner)) => {
                    levels.push(inner);
                    cur = inner;
                }
                _ => break,
            }
        }
        RelayChain { levels }
    }

    /// This box's level: the only one whose link-address and Interface-Id select a link.
    pub fn ours(&self) -> Option<&'a RelayMessage> {
        self.levels.first().copied()
    }

    /// How many levels lie below this box's (0 = the client talked to this box directly).
    pub fn nested(&self) -> usize {
        self.levels.len().saturating_sub(1)
    }

    /// The level directly below this box's: an LDRA's (RFC 6221), whose peer-address is the
    /// client's own address.
    pub fn below_ours(&self) -> Option<&'a RelayMessage> {
        self.levels.get(1).copied()
    }

    /// Every level, from the client outwards (the nearest the client first, this box's last).
    pub fn outward(&self) -> impl Iterator<Item = &'a RelayMessage> + '_ {
        self.levels.iter().rev().copied()
    }

    /// Every level, this box's first.
    pub fn inward(&self) -> impl Iterator<Item = &'a RelayMessage> + '_ {
        self.levels.iter().copied()
    }

    /// Number of levels.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// This box's link-address, `None` when `::` (or no level at all).
    pub fn link_address(&self) -> Option<Ipv6Addr> {
        self.ours()
            .map(|r| r.link_address)
            .filter(|a| !a.is_unspecified())
    }
}

/// [`RelayChain`] read in place from a [`CheckedMessage`] (the snooper's path): the same
/// levels, without the owned tree. Only what is read from a chain is kept — this box's level,
/// the one below it and how many there are — so it needs no allocation.
#[derive(Debug, Clone, Copy)]
pub struct RelayChainView<'a> {
    ours: Option<RelayView<'a>>,
    below: Option<RelayView<'a>>,
    levels: usize,
    innermost: Option<ClientView<'a>>,
}

impl<'a> RelayChainView<'a> {
    /// The chain of a snooped message (empty for a client/server message, which is then its
    /// own innermost message).
    #[inline]
    pub fn of(m: CheckedMessage<'a>) -> Self {
        // The check's walk noted the levels on its way down: no level is read again.
        let c = m.chain();
        RelayChainView {
            ours: match m.view() {
                MessageView::Relay(r) => Some(r),
                MessageView::Client(_) => None,
            },
            below: c.below,
            levels: c.levels.min(MAX_LEVELS),
            innermost: c.innermost,
        }
    }

    /// This box's level: the only one whose link-address and Interface-Id select a link.
    #[inline]
    pub fn ours(&self) -> Option<RelayView<'a>> {
        self.ours
    }

    /// How many levels lie below this box's (0 = the client talked to this box directly).
    #[inline]
    pub fn nested(&self) -> usize {
        self.levels.saturating_sub(1)
    }

    /// The level directly below this box's: an LDRA's (RFC 6221).
    #[inline]
    pub fn below_ours(&self) -> Option<RelayView<'a>> {
        self.below
    }

    /// The client/server message inside every level (`None`: a level without RELAY_MSG).
    #[inline]
    pub fn innermost(&self) -> Option<ClientView<'a>> {
        self.innermost
    }

    /// Number of levels.
    #[inline]
    pub fn len(&self) -> usize {
        self.levels
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.levels == 0
    }

    /// This box's link-address, `None` when `::` (or no level at all).
    #[inline]
    pub fn link_address(&self) -> Option<Ipv6Addr> {
        self.ours
            .map(|r| r.link_address())
            .filter(|a| !a.is_unspecified())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DhcpOption, MessageType};

    fn level(link: &str, peer: &str, inner: Message) -> RelayMessage {
        let mut r = RelayMessage::new(
            MessageType::RELAY_FORW,
            0,
            link.parse().unwrap(),
            peer.parse().unwrap(),
        );
        r.options.push(DhcpOption::RelayMsg(Box::new(inner)));
        r
    }

    #[test]
    fn ours_is_the_outermost_level_and_below_is_the_next() {
        let client = Message::Client(crate::wire::ClientMessage::new(MessageType::SOLICIT, 7));
        let ldra = level("::", "fe80::7", client);
        let ours = Message::Relay(level("2001:db8:1::1", "fe80::7", Message::Relay(ldra)));
        let c = RelayChain::of_message(&ours);
        assert_eq!(c.len(), 2);
        assert_eq!(c.nested(), 1);
        assert_eq!(c.link_address(), Some("2001:db8:1::1".parse().unwrap()));
        assert_eq!(
            c.below_ours().unwrap().link_address,
            Ipv6Addr::UNSPECIFIED,
            "the LDRA's level"
        );
        let outward: Vec<_> = c.outward().map(|r| r.link_address).collect();
        assert_eq!(outward[1], "2001:db8:1::1".parse::<Ipv6Addr>().unwrap());
        let bare = Message::Client(crate::wire::ClientMessage::new(MessageType::SOLICIT, 7));
        let c = RelayChain::of_message(&bare);
        assert!(c.is_empty());
        assert_eq!((c.nested(), c.ours(), c.link_address()), (0, None, None));
    }
}
