//! Any bytes as a relay chain, read two ways: the borrowed path (`RelayView::relay_message`
//! level by level) and the owned path (`Message::relay_chain` / `innermost`). Whenever the
//! owned parse accepts the message, both see the same levels (type, hop-count, link-address,
//! peer-address, first Interface-Id) and the same innermost message; whenever the borrowed
//! full walk accepts it, so does the owned parse, and the other way round. `RelayChain` (the
//! one reading the cache uses) names this box's level as the outermost and the level below it
//! as the next one, over exactly those levels; and `RelayChainView` (the snooper's, read in
//! place from a `CheckedMessage`) reads the same levels and innermost message.
#![no_main]

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use lqagent::wire::{
    CheckedMessage, Error, Message, MessageType, MessageView, OptionCode, OptionRef, RelayChain,
    RelayChainView, RelayMessage,
};

#[derive(Debug, PartialEq, Eq)]
struct Level {
    msg_type: MessageType,
    hop_count: u8,
    link: Ipv6Addr,
    peer: Ipv6Addr,
    interface_id: Option<Vec<u8>>,
}

/// (relay levels outermost first, innermost client message type and xid if any)
type Chain = (Vec<Level>, Option<(MessageType, u32)>);

fn borrowed(data: &[u8]) -> Result<Chain, Error> {
    let mut levels = Vec::new();
    let mut m = MessageView::new_checked(data)?;
    loop {
        match m {
            MessageView::Client(c) => {
                return Ok((levels, Some((c.msg_type(), c.transaction_id()))));
            }
            MessageView::Relay(r) => {
                let interface_id = match r.options().find(OptionCode::INTERFACE_ID)? {
                    Some(o) => match o.kind()? {
                        OptionRef::InterfaceId(id) => Some(id.to_vec()),
                        other => panic!("INTERFACE_ID read as {other:?}"),
                    },
                    None => None,
                };
                levels.push(Level {
                    msg_type: r.msg_type(),
                    hop_count: r.hop_count(),
                    link: r.link_address(),
                    peer: r.peer_address(),
                    interface_id,
                });
                match r.relay_message()? {
                    Some(next) => m = next,
                    None => return Ok((levels, None)),
                }
            }
        }
    }
}

/// The owned message's relay levels, this box's first, read by hand: the oracle the one
/// relay-chain API is checked against.
fn owned_levels(msg: &Message) -> Vec<&RelayMessage> {
    let mut levels = Vec::new();
    let mut m = msg;
    while let Message::Relay(r) = m {
        levels.push(r);
        match r.options.relay_msg() {
            Some(next) => m = next,
            None => break,
        }
    }
    levels
}

fn owned(msg: &Message) -> Chain {
    let levels = owned_levels(msg)
        .into_iter()
        .map(|r| Level {
            msg_type: r.msg_type,
            hop_count: r.hop_count,
            link: r.link_address,
            peer: r.peer_address,
            interface_id: r.options.interface_id().map(<[u8]>::to_vec),
        })
        .collect();
    let inner = msg.innermost().map(|c| (c.msg_type, c.transaction_id));
    let all = owned_levels(msg);
    let chain = RelayChain::of_message(msg);
    assert_eq!(chain.len(), all.len());
    assert_eq!(chain.nested(), all.len().saturating_sub(1));
    assert!(std::ptr::eq(
        chain.ours().map_or(std::ptr::null(), |r| r),
        all.first().map_or(std::ptr::null(), |r| *r)
    ));
    assert!(std::ptr::eq(
        chain.below_ours().map_or(std::ptr::null(), |r| r),
        all.get(1).map_or(std::ptr::null(), |r| *r)
    ));
    assert_eq!(
        chain.link_address(),
        all.first()
            .map(|r| r.link_address)
            .filter(|a| !a.is_unspecified())
    );
    let api: Vec<*const RelayMessage> = chain.levels().map(|r| r as *const _).collect();
    let by_hand: Vec<*const RelayMessage> = all.iter().map(|r| *r as *const _).collect();
    assert_eq!(api, by_hand);
    (levels, inner)
}

fuzz_target!(|data: &[u8]| {
    let parsed = Message::parse(data);
    let walked = MessageView::new_checked(data).and_then(|v| v.walk());
    assert_eq!(
        parsed.is_ok(),
        walked.is_ok(),
        "parse {parsed:?} vs full walk {walked:?}"
    );
    let chain = borrowed(data);
    let checked = CheckedMessage::new(data);
    assert_eq!(checked.is_ok(), walked.is_ok());
    if let Ok(msg) = parsed {
        let chain = chain.expect("owned parse accepted, borrowed chain walk failed");
        assert_eq!(chain, owned(&msg), "owned and borrowed relay chains differ");
        let checked = checked.expect("owned parse accepted, checked message refused");
        let view = RelayChainView::of(checked);
        let all = owned_levels(&msg);
        assert_eq!(
            (view.len(), view.nested()),
            (all.len(), all.len().saturating_sub(1))
        );
        let header = |r: lqagent::wire::RelayView<'_>| {
            (
                r.msg_type(),
                r.hop_count(),
                r.link_address(),
                r.peer_address(),
            )
        };
        let owned_header = |r: &lqagent::wire::RelayMessage| {
            (r.msg_type, r.hop_count, r.link_address, r.peer_address)
        };
        assert_eq!(
            view.ours().map(header),
            all.first().map(|r| owned_header(r))
        );
        assert_eq!(
            view.below_ours().map(header),
            all.get(1).map(|r| owned_header(r))
        );
        assert_eq!(
            view.link_address(),
            RelayChain::of_message(&msg).link_address()
        );
        let inner = |c: lqagent::wire::ClientView<'_>| (c.msg_type(), c.transaction_id());
        assert_eq!(view.innermost().map(inner), chain.1);
        assert_eq!(checked.innermost().map(inner), chain.1);
    }
});
