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
//!
//! One API over both representations: [`RelayChain`] is generic over the level type
//! ([`RelayLevel`]: an owned `&RelayMessage` or a borrowed [`RelayView`]), and one walk
//! ([`RelayChain::walk`]) fills it for either. A chain keeps only what is ever read — this box's
//! level, the one below it, how many there are and the client message inside — so reading
//! one allocates nothing (the snooper's hot path). [`RelayChainView`] names the borrowed one.

use super::OptionCode;
use super::owned::{ClientMessage, LqRelayData, Message, RelayMessage};
use super::view::{CheckedMessage, ClientView, MessageView, RelayView};
use std::net::Ipv6Addr;

/// Most levels read; the codec bounds nesting well below this anyway.
const MAX_LEVELS: usize = 64;

/// What one step of a walk inward finds inside a level.
#[derive(Debug, Clone, Copy)]
pub enum Inner<L, C> {
    /// Another relay level.
    Relay(L),
    /// The client/server message.
    Client(C),
    /// Nothing (no RELAY_MSG, as in LQ_RELAY_DATA, or one that cannot be read).
    None,
}

/// One relay level, owned or borrowed: the four fields lqagent reads from a level.
pub trait RelayLevel: Copy + std::fmt::Debug {
    /// The client/server message a chain of these ends in.
    type Client: Copy + std::fmt::Debug;
    fn link_address(&self) -> Ipv6Addr;
    fn peer_address(&self) -> Ipv6Addr;
    /// OPTION_INTERFACE_ID's body.
    fn interface_id(&self) -> Option<&[u8]>;
    /// OPTION_REMOTE_ID: (enterprise number, remote-id).
    fn remote_id(&self) -> Option<(u32, &[u8])>;
    /// What RELAY_MSG holds: the next level inward, the client message, or nothing.
    fn inner(&self) -> Inner<Self, Self::Client>;
}

impl<'a> RelayLevel for &'a RelayMessage {
    type Client = &'a ClientMessage;
    fn link_address(&self) -> Ipv6Addr {
        self.link_address
    }
    fn peer_address(&self) -> Ipv6Addr {
        self.peer_address
    }
    fn interface_id(&self) -> Option<&[u8]> {
        self.options.interface_id()
    }
    fn remote_id(&self) -> Option<(u32, &[u8])> {
        self.options.remote_id()
    }
    fn inner(&self) -> Inner<Self, Self::Client> {
        match self.options.relay_msg() {
            Some(Message::Relay(r)) => Inner::Relay(r),
            Some(Message::Client(c)) => Inner::Client(c),
            None => Inner::None,
        }
    }
}

impl<'a> RelayLevel for RelayView<'a> {
    type Client = ClientView<'a>;
    #[inline]
    fn link_address(&self) -> Ipv6Addr {
        RelayView::link_address(self)
    }
    #[inline]
    fn peer_address(&self) -> Ipv6Addr {
        RelayView::peer_address(self)
    }
    #[inline]
    fn interface_id(&self) -> Option<&[u8]> {
        self.options().checked_data(OptionCode::INTERFACE_ID)
    }
    #[inline]
    fn remote_id(&self) -> Option<(u32, &[u8])> {
        self.options().checked_remote_id()
    }
    #[inline]
    fn inner(&self) -> Inner<Self, Self::Client> {
        // A checked message cannot fail here; an error reads as "no deeper level".
        match self.relay_message() {
            Ok(Some(MessageView::Relay(r))) => Inner::Relay(r),
            Ok(Some(MessageView::Client(c))) => Inner::Client(c),
            _ => Inner::None,
        }
    }
}

/// The levels of one relay chain, read from this box's (outermost) level inward: owned
/// (`RelayChain<&RelayMessage>`, from an answer's LQ_RELAY_DATA) or borrowed
/// ([`RelayChainView`], the snooper's).
#[derive(Debug, Clone, Copy)]
pub struct RelayChain<L: RelayLevel> {
    ours: Option<L>,
    below: Option<L>,
    levels: usize,
    innermost: Option<L::Client>,
}

/// [`RelayChain`] read in place from a [`CheckedMessage`] (the snooper's path).
pub type RelayChainView<'a> = RelayChain<RelayView<'a>>;

impl<L: RelayLevel> RelayChain<L> {
    /// The one walk: from `start` (what a message is: a relay level or the client message)
    /// inward, keeping this box's level, the one below it, the count and the client message.
    pub fn walk(start: Inner<L, L::Client>) -> Self {
        let mut chain = RelayChain {
            ours: None,
            below: None,
            levels: 0,
            innermost: None,
        };
        let mut cur = start;
        while chain.levels < MAX_LEVELS {
            match cur {
                Inner::Relay(r) => {
                    match chain.levels {
                        0 => chain.ours = Some(r),
                        1 => chain.below = Some(r),
                        _ => {}
                    }
                    chain.levels += 1;
                    cur = r.inner();
                }
                Inner::Client(c) => {
                    chain.innermost = Some(c);
                    break;
                }
                Inner::None => break,
            }
        }
        chain
    }

    /// This box's level: the only one whose link-address and Interface-Id select a link.
    #[inline]
    pub fn ours(&self) -> Option<L> {
        self.ours
    }

    /// How many levels lie below this box's (0 = the client talked to this box directly).
    #[inline]
    pub fn nested(&self) -> usize {
        self.levels.saturating_sub(1)
    }

    /// The level directly below this box's: an LDRA's (RFC 6221), whose peer-address is the
    /// client's own address.
    #[inline]
    pub fn below_ours(&self) -> Option<L> {
        self.below
    }

    /// The client/server message inside every level (`None`: a level without RELAY_MSG, as
    /// always in LQ_RELAY_DATA, or a chain deeper than this walk reads).
    #[inline]
    pub fn innermost(&self) -> Option<L::Client> {
        self.innermost
    }

    /// Every level, this box's first, inward to the one nearest the client: re-read from this
    /// box's level as it goes, so a chain still keeps only what it reads most (tools and tests
    /// list levels; the agent reads ours and the one below).
    pub fn levels(&self) -> impl Iterator<Item = L> + '_ {
        let mut next = self.ours;
        let mut left = self.levels;
        std::iter::from_fn(move || {
            let cur = next.filter(|_| left > 0)?;
            left -= 1;
            next = match cur.inner() {
                Inner::Relay(r) => Some(r),
                _ => None,
            };
            Some(cur)
        })
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

    /// [`RelayChain::link_address`] as a key: `::` when the chain names no link.
    #[inline]
    pub fn link_or_unspecified(&self) -> Ipv6Addr {
        self.link_address().unwrap_or(Ipv6Addr::UNSPECIFIED)
    }

    /// This box's level's peer-address, `None` when `::` (or no level): the client as this
    /// box saw it, the delegated-prefix next hop unless an LDRA stands in front.
    #[inline]
    pub fn peer_address(&self) -> Option<Ipv6Addr> {
        self.ours
            .map(|r| r.peer_address())
            .filter(|a| !a.is_unspecified())
    }
}

impl<'a> RelayChain<&'a RelayMessage> {
    /// The chain of a relay message or none (empty) for a client/server message.
    pub fn of_message(m: &'a Message) -> Self {
        Self::walk(match m {
            Message::Relay(r) => Inner::Relay(r),
            Message::Client(c) => Inner::Client(c),
        })
    }

    /// The chain starting at `outer`, this box's level (e.g. the relay message of LQ_RELAY_DATA).
    pub fn of_relay(outer: &'a RelayMessage) -> Self {
        Self::walk(Inner::Relay(outer))
    }
}

impl<'a> RelayChain<RelayView<'a>> {
    /// The chain of a snooped message (empty for a client/server message, which is then its
    /// own innermost message).
    #[inline]
    pub fn of(m: CheckedMessage<'a>) -> Self {
        // The check's walk noted the levels on its way down: no level is read again.
        let c = m.chain();
        RelayChain {
            ours: match m.view() {
                MessageView::Relay(r) => Some(r),
                MessageView::Client(_) => None,
            },
            below: c.below,
            levels: c.levels.min(MAX_LEVELS),
            innermost: c.innermost,
        }
    }
}

impl LqRelayData {
    /// The relay chain the server saved (RFC 5007 §4.1.2.4): its outermost level is this
    /// box's.
    pub fn chain(&self) -> RelayChain<&RelayMessage> {
        RelayChain::of_relay(&self.relay)
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
        let ours = Message::Relay(level("2001:db8:1::1", "fe80::1", Message::Relay(ldra)));
        let c = RelayChain::of_message(&ours);
        assert_eq!(c.len(), 2);
        assert_eq!(c.nested(), 1);
        assert_eq!(c.link_address(), Some("2001:db8:1::1".parse().unwrap()));
        assert_eq!(
            c.below_ours().unwrap().link_address,
            Ipv6Addr::UNSPECIFIED,
            "the LDRA's level"
        );
        assert_eq!(
            c.peer_address(),
            Some("fe80::1".parse().unwrap()),
            "ours, not the LDRA's"
        );
        assert_eq!(c.innermost().map(|m| m.transaction_id), Some(7));
        let links: Vec<_> = c
            .levels()
            .map(|r| (r.link_address, r.peer_address))
            .collect();
        let (ours, ldra) = ("2001:db8:1::1".parse().unwrap(), "fe80::7".parse().unwrap());
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        assert_eq!(links, [(ours, ll), (Ipv6Addr::UNSPECIFIED, ldra)]);
        let bare = Message::Client(crate::wire::ClientMessage::new(MessageType::SOLICIT, 7));
        let c = RelayChain::of_message(&bare);
        assert!(c.is_empty());
        assert_eq!((c.nested(), c.ours(), c.link_address()), (0, None, None));
        assert_eq!(c.link_or_unspecified(), Ipv6Addr::UNSPECIFIED);
        assert_eq!(
            c.innermost().map(|m| m.transaction_id),
            Some(7),
            "its own innermost"
        );
    }
}
