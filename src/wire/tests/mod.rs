//! Unit tests for the codec against fixed bytes: construct, emit, parse, deconstruct.

mod checked;
mod lease_scan;
mod messages;
mod options;
mod pretty;

use crate::wire::{DhcpOption, Message, MessageType, RelayMessage};
use std::net::Ipv6Addr;

/// `m` relayed through `levels` RELAY-REPLs (link-address 2001:db8:<level>::1), each carrying
/// an Interface-Id before its RELAY_MSG and `after` behind it: the nested replies the check
/// and the scans are compared over.
fn relay_repl_levels(mut m: Message, levels: usize, after: &[DhcpOption]) -> Vec<u8> {
    for i in 0..levels {
        let link = Ipv6Addr::new(0x2001, 0xdb8, i as u16, 0, 0, 0, 0, 1);
        let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        let mut r = RelayMessage::new(MessageType::RELAY_REPL, 0, link, peer);
        r.options
            .push(DhcpOption::InterfaceId(b"ge-0/0/1.100".to_vec()));
        r.options.push(DhcpOption::RelayMsg(Box::new(m)));
        r.options.extend(after.iter().cloned());
        m = Message::from(r);
    }
    m.to_vec().unwrap()
}
