//! Known-set updates as nf_tables netlink messages written by us (pure: ops in, bytes out; the
//! acks are read with [`super::nflog::messages`]). The hot path of the set sync: every cache
//! change that adds or removes a known source ends up here, so it costs one `sendmsg` and one
//! or two `recvmsg` instead of a fork and exec of `nft` per batch. The rule set itself and the
//! rare full resync still go through `nft -f -` ([`super::ruleset`]): they are written once, or
//! may be far bigger than a socket buffer, and there readable text and `nft`'s errors are worth
//! a process.
//!
//! One batch is one nf_tables transaction (all or nothing, like one `nft -f -` script):
//!
//! ```text
//! NFNL_MSG_BATCH_BEGIN                  nfgenmsg { AF_UNSPEC, 0, res_id = NFNL_SUBSYS_NFTABLES }
//! NFT_MSG_DELSETELEM  (REQUEST|ACK)     nfgenmsg { NFPROTO_IPV6, 0, 0 }
//!   NFTA_SET_ELEM_LIST_TABLE  "lqagent"
//!   NFTA_SET_ELEM_LIST_SET    "known_p0"
//!   NFTA_SET_ELEM_LIST_ELEMENTS
//!     NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE 16 bytes } [NFTA_SET_ELEM_FLAGS END] }
//! NFT_MSG_NEWSETELEM  (REQUEST|CREATE|ACK) ...                       removals first, then adds
//! NFNL_MSG_BATCH_END
//! ```
//!
//! An address set (`known_aN`, a hash) takes one element per address. An interval set
//! (`known_pN`, an rbtree) takes a prefix as two elements, as `nft` writes it: its first address,
//! and the first address after it flagged `NFT_SET_ELEM_INTERVAL_END` (left out when the prefix
//! reaches the top of the address space, where no interval can end). Deleting a prefix deletes
//! both. Element keys are the address in network byte order; netlink and attribute headers are in
//! host order.

use super::nfnl::{NLM_F_ACK, NLM_F_REQUEST, attr, close, finish, open, push_header};
use super::ruleset::{SetOp, TABLE};
use crate::prefix::Ipv6Prefix;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 12;
const NFT_MSG_DELSETELEM: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 14;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLM_F_CREATE: u16 = 0x400;
const NFPROTO_IPV6: u8 = 10;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;

/// Ops per element message: a prefix is two elements of at most 36 bytes, so 512 keep the
/// element list far below the 64 KiB an attribute length can say.
const OPS_PER_MESSAGE: usize = 512;

/// One encoded transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    /// Sequence numbers of the messages asking for an ack: `acks.start..acks.end`.
    pub acks: std::ops::Range<u32>,
}

/// The transaction applying `ops` (removals first, so a prefix that moves out from under a
/// removed covering prefix can be added in the same batch, as [`super::ruleset::update`] does),
/// numbered from `seq`. Consecutive ops on the same set share a message.
pub(crate) fn update(ops: &[SetOp], seq: u32) -> Encoded {
    let mut b = Vec::with_capacity(64 + ops.len() * 80);
    let mut next = seq;
    push_header(
        &mut b,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        next,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    next = next.wrapping_add(1);
    let first = next;
    for add in [false, true] {
        let mut pass = ops.iter().filter(|o| o.add == add).peekable();
        while let Some(op) = pass.next() {
            let set = (op.iface, op.network.len() == 128);
            let mut group = vec![op.network];
            while group.len() < OPS_PER_MESSAGE
                && let Some(o) = pass.next_if(|o| (o.iface, o.network.len() == 128) == set)
            {
                group.push(o.network);
            }
            push_elements(&mut b, add, set.0, set.1, &group, next);
            next = next.wrapping_add(1);
        }
    }
    let acks = first..next;
    push_header(
        &mut b,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        next,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    Encoded { bytes: b, acks }
}

fn push_elements(
    b: &mut Vec<u8>,
    add: bool,
    iface: usize,
    addresses: bool,
    nets: &[Ipv6Prefix],
    seq: u32,
) {
    let start = b.len();
    let (ty, flags) = if add {
        (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
    } else {
        (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
    };
    push_header(b, ty, flags, seq, NFPROTO_IPV6, 0);
    let set = if addresses {
        format!("known_a{iface}")
    } else {
        format!("known_p{iface}")
    };
    attr(
        b,
        NFTA_SET_ELEM_LIST_TABLE,
        &[TABLE.as_bytes(), &[0]].concat(),
    );
    attr(b, NFTA_SET_ELEM_LIST_SET, &[set.as_bytes(), &[0]].concat());
    let list = open(b, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
    for net in nets {
        push_element(b, u128::from(net.addr()), false);
        if !addresses {
            // The first address after the prefix; none past the top of the address space.
            let size = 1u128.checked_shl(128 - u32::from(net.len())).unwrap_or(0);
            if let Some(end) = u128::from(net.addr()).checked_add(size)
                && size != 0
            {
                push_element(b, end, true);
            }
        }
    }
    close(b, list);
    finish(b, start);
}

fn push_element(b: &mut Vec<u8>, key: u128, interval_end: bool) {
    let el = open(b, NFTA_LIST_ELEM | NLA_F_NESTED);
    let k = open(b, NFTA_SET_ELEM_KEY | NLA_F_NESTED);
    attr(b, NFTA_DATA_VALUE, &key.to_be_bytes());
    close(b, k);
    if interval_end {
        attr(
            b,
            NFTA_SET_ELEM_FLAGS,
            &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
        );
    }
    close(b, el);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(iface: usize, add: bool, net: &str) -> SetOp {
        SetOp {
            iface,
            add,
            network: net.parse().unwrap(),
        }
    }

    /// (type, flags, seq, body) of each message.
    fn messages(b: &[u8]) -> Vec<(u16, u16, u32, &[u8])> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let len = u32::from_ne_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes([b[at + 4], b[at + 5]]);
            let flags = u16::from_ne_bytes([b[at + 6], b[at + 7]]);
            let seq = u32::from_ne_bytes(b[at + 8..at + 12].try_into().unwrap());
            out.push((ty, flags, seq, &b[at + 16..at + len]));
            at += (len + 3) & !3;
        }
        out
    }

    /// (type, value) of each attribute in `b`.
    fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        while b.len() >= 4 {
            let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
            let ty = u16::from_ne_bytes([b[2], b[3]]);
            out.push((ty, &b[4..len]));
            b = &b[((len + 3) & !3).min(b.len())..];
        }
        out
    }

    /// (set, [(key, end flag)]) of an element message body.
    fn elements(body: &[u8]) -> (String, Vec<(std::net::Ipv6Addr, bool)>) {
        assert_eq!(body[0], NFPROTO_IPV6, "nfgen family");
        let a = attrs(&body[4..]);
        assert_eq!(a[0], (NFTA_SET_ELEM_LIST_TABLE, &b"lqagent\0"[..]));
        assert_eq!(a[1].0, NFTA_SET_ELEM_LIST_SET);
        let set = String::from_utf8(a[1].1.strip_suffix(&[0]).unwrap().to_vec()).unwrap();
        assert_eq!(a[2].0, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
        let els = attrs(a[2].1)
            .into_iter()
            .map(|(ty, el)| {
                assert_eq!(ty, NFTA_LIST_ELEM | NLA_F_NESTED);
                let parts = attrs(el);
                assert_eq!(parts[0].0, NFTA_SET_ELEM_KEY | NLA_F_NESTED);
                let key = attrs(parts[0].1);
                assert_eq!(key[0].0, NFTA_DATA_VALUE);
                let k: [u8; 16] = key[0].1.try_into().unwrap();
                let end = parts.get(1).map(|(ty, v)| {
                    assert_eq!(*ty, NFTA_SET_ELEM_FLAGS);
                    *v == 1u32.to_be_bytes()
                });
                (std::net::Ipv6Addr::from(k), end == Some(true))
            })
            .collect();
        (set, els)
    }

    fn a(s: &str) -> std::net::Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_batch_is_one_transaction_removals_first_one_message_per_set_run() {
        let ops = [
            op(0, true, "2001:db8:1::5/128"),
            op(0, true, "2001:db8:1::6/128"),
            op(0, false, "2001:db8:1:100::/56"),
            op(1, true, "2001:db8:2:100::/56"),
        ];
        let e = update(&ops, 7);
        let m = messages(&e.bytes);
        let kinds: Vec<(u16, u32)> = m.iter().map(|(t, _, s, _)| (*t, *s)).collect();
        assert_eq!(
            kinds,
            vec![
                (NFNL_MSG_BATCH_BEGIN, 7),
                (NFT_MSG_DELSETELEM, 8),
                (NFT_MSG_NEWSETELEM, 9),
                (NFT_MSG_NEWSETELEM, 10),
                (NFNL_MSG_BATCH_END, 11),
            ]
        );
        assert_eq!(e.acks, 8..11);
        // Batch begin/end name the nf_tables subsystem in res_id.
        assert_eq!(m[0].3, &[0, 0, 0, 10][..]);
        assert_eq!(m[4].3, &[0, 0, 0, 10][..]);
        assert_eq!(m[1].1, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(m[2].1, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(
            elements(m[1].3),
            (
                "known_p0".into(),
                vec![
                    (a("2001:db8:1:100::"), false),
                    (a("2001:db8:1:200::"), true)
                ]
            )
        );
        assert_eq!(
            elements(m[2].3),
            (
                "known_a0".into(),
                vec![(a("2001:db8:1::5"), false), (a("2001:db8:1::6"), false)]
            )
        );
        assert_eq!(
            elements(m[3].3),
            (
                "known_p1".into(),
                vec![
                    (a("2001:db8:2:100::"), false),
                    (a("2001:db8:2:200::"), true)
                ]
            )
        );
    }

    #[test]
    fn element_lists_stay_within_an_attribute_and_the_top_prefix_has_no_end() {
        let ops: Vec<SetOp> = (0..1500u32)
            .map(|i| op(0, true, &format!("2001:db8:{:x}::/48", i + 1)))
            .collect();
        let e = update(&ops, 1);
        let m = messages(&e.bytes);
        assert_eq!(m.len(), 2 + 3, "1500 prefixes in messages of 512");
        let n: usize = m[1..4].iter().map(|x| elements(x.3).1.len()).sum();
        assert_eq!(n, 3000, "start and end per prefix");
        let top = update(&[op(0, true, "ffff:ffff::/32")], 1);
        let m = messages(&top.bytes);
        assert_eq!(elements(m[1].3).1, vec![(a("ffff:ffff::"), false)]);
    }
}
