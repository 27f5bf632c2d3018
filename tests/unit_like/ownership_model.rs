//! The ownership invariant of merge rule R17, checked over arbitrary input sequences: shared by
//! the proptest in `merge_table.rs` and the cargo-fuzz target `fuzz/fuzz_targets/ownership.rs`
//! (which includes this file by path), so both check exactly the same thing.
//!
//! Bytes decode into a sequence of store inputs — snooped REPLYs, leasequery and bulk answers
//! (some about a key asked for), releases (from any client, link, IAID), operator clears,
//! confirmations, expiry — about three clients on two links and a small set of keys that
//! overlap (a /64 and a /128 inside a /56). After every step:
//!
//! - **ownership**: a binding whose holder (DUID), link or next hop changed, or that went, was
//!   changed by its holder on its own link (its own data, its own release), by a server's word
//!   about that key (a positive assignment of it, a leasequery answer about it, a confirmation),
//!   by an operator clear or by its lifetime ending — or it is a prefix whose next hop followed
//!   another lease of the same client on that link that changed by one of those (R11);
//! - **no overlap by stealth**: a key that appeared inside a delegated prefix another client
//!   held, or a prefix that appeared over one, came from a server's answer about that key;
//! - **moves are never silent**: `lqagent_binding_moves_total` rose by exactly the number of
//!   bindings whose holder, link or next hop changed;
//! - **doubts change nothing**: every doubt names a key whose binding kept its holder and link
//!   (its next hop may follow R11 as above), and
//!   (but for an overlap, which names the other prefix's holder) its holder is the one the
//!   store had.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use lqagent::cache::{
    Applied, BindingStore, CacheConfig, Confirmation, DoubtReason, IaType, LeaseKey, Link,
    Observation, ObservedLease, RelayData, ServerId, Source, Timestamp, WithdrawReason, Withdrawal,
};
use lqagent::prefix::Ipv6Prefix;
use lqagent::wire::Duid;

const T0: i64 = 1_795_000_000;

/// One input to the store.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    Observe(Observation),
    Withdraw(Withdrawal),
    Confirm(Confirmation),
    Expire(Timestamp),
}

fn key(n: u8) -> LeaseKey {
    let p = |a: &str, l| LeaseKey::Prefix(Ipv6Prefix::new(a.parse().unwrap(), l).unwrap());
    let a = |a: &str| LeaseKey::Address(a.parse().unwrap());
    match n % 8 {
        0 => p("2001:db8:100::", 56),
        1 => p("2001:db8:200::", 56),
        2 => p("2001:db8:100:10::", 64), // inside 0
        3 => a("2001:db8:1::1"),
        4 => a("2001:db8:1::2"),
        5 => a("2001:db8:100::5"), // inside 0
        6 => p("2001:db8:300::", 56),
        _ => a("2001:db8:1::3"),
    }
}

fn duid(c: u8) -> Duid {
    vec![0, 1, 0, 1, c % 3 + 1].into()
}

fn link(l: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, u16::from(l % 2 + 1))
}

fn server(s: u8) -> Arc<ServerId> {
    Arc::new(ServerId {
        duid: vec![0, 3, 0, 1, s % 2 + 1].into(),
        address: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, u16::from(s % 2 + 1)),
    })
}

/// Reads bytes as small numbers; past the end, zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Decode `data` into at most 64 inputs.
pub(crate) fn decode(data: &[u8]) -> Vec<Input> {
    let mut b = Bytes(data);
    let mut now = T0;
    let mut out = Vec::new();
    while !b.is_empty() && out.len() < 64 {
        let op = b.next();
        now += i64::from(b.next() % 4);
        // Some inputs arrive late (an answer held back, a reordered reply).
        let lag = i64::from(b.next() % 16).saturating_sub(8).max(0);
        let at = Timestamp::from_secs(now - lag);
        let input = match op % 8 {
            0..=3 => {
                let snoop = op % 8 < 2;
                let c = b.next();
                let l = b.next();
                let iaid = if snoop {
                    u32::from(b.next() % 2 + 1)
                } else {
                    0
                };
                let n = b.next() % 3 + 1;
                let mut leases: Vec<ObservedLease> = Vec::new();
                for _ in 0..n {
                    let k = key(b.next());
                    let valid = [0, 60, 3600][usize::from(b.next() % 3)];
                    if leases.iter().any(|x| x.key == k) {
                        continue;
                    }
                    leases.push(ObservedLease {
                        key: k,
                        ia: match k {
                            LeaseKey::Prefix(_) => IaType::Pd,
                            LeaseKey::Address(_) => IaType::Na,
                        },
                        iaid,
                        preferred: valid / 2,
                        valid,
                    });
                }
                let relay = match b.next() % 3 {
                    0 => None,
                    r => Some(RelayData {
                        peer_address: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(r))),
                        ..RelayData::default()
                    }),
                };
                let s = b.next();
                let clt = b.next() % 40;
                let asked = b.next();
                let query_address = (!snoop && asked % 3 != 0).then(|| {
                    let k = key(asked / 3);
                    match k {
                        LeaseKey::Address(a) => a,
                        LeaseKey::Prefix(p) => p.addr(),
                    }
                });
                Input::Observe(Observation {
                    client_duid: duid(c),
                    link: Link {
                        address: link(l),
                        interface: None,
                    },
                    relay,
                    server: server(s),
                    source: match op % 8 {
                        0 | 1 => Source::Snoop,
                        2 => Source::Leasequery,
                        _ => Source::Bulk,
                    },
                    clt_time: (!snoop).then_some(u32::from(clt)),
                    base_time: None,
                    srsn: None,
                    complete: false,
                    leases,
                    arrival: at,
                    query_address,
                })
            }
            4 | 5 => {
                let c = b.next();
                let l = b.next();
                let n = b.next() % 2 + 1;
                let keys: Vec<LeaseKey> = (0..n).map(|_| key(b.next())).collect();
                let iaids: Vec<u32> = if b.next() % 2 == 0 {
                    Vec::new()
                } else {
                    keys.iter().map(|_| u32::from(b.next() % 2 + 1)).collect()
                };
                let operator = b.next() % 8 == 0;
                Input::Withdraw(Withdrawal {
                    keys,
                    client_duid: (!operator).then(|| duid(c)),
                    link: match (operator, l % 3) {
                        (true, _) | (_, 0) => None,
                        (_, x) => Some(link(x)),
                    },
                    iaids,
                    reason: if operator {
                        WithdrawReason::Operator
                    } else {
                        WithdrawReason::Released
                    },
                    arrival: at,
                })
            }
            6 => {
                let k = key(b.next());
                let s = b.next();
                let ago = i64::from(b.next() % 20);
                Input::Confirm(Confirmation {
                    key: k,
                    reason: DoubtReason::ZeroLifetimeOtherClient,
                    server: server(s),
                    asked: Timestamp::from_secs(now - ago),
                    arrival: Timestamp::from_secs(now),
                })
            }
            _ => {
                now += i64::from(b.next()) * 4;
                Input::Expire(Timestamp::from_secs(now))
            }
        };
        out.push(input);
    }
    out
}

/// What the invariant compares per binding: holder, link, next hop, valid deadline.
type View = (Duid, Ipv6Addr, Option<Ipv6Addr>, Timestamp);

fn view(s: &BindingStore) -> BTreeMap<LeaseKey, View> {
    s.all()
        .into_iter()
        .map(|(k, l)| {
            (
                k,
                (
                    l.client.duid.clone(),
                    l.client.link.address,
                    l.next_hop,
                    l.valid_until,
                ),
            )
        })
        .collect()
}

fn moves(s: &BindingStore) -> u64 {
    s.stats().moves().iter().map(|(_, _, n)| n).sum()
}

/// Whether `input` is the word of a server about `k`: a positive assignment of it, a
/// leasequery answer about it, a confirmation of it.
fn about(input: &Input, k: &LeaseKey) -> bool {
    match input {
        Input::Observe(o) => {
            o.query_address.is_some_and(|a| k.network().contains(a))
                || o.leases.iter().any(|l| l.key == *k && l.valid > 0)
        }
        Input::Confirm(c) => c.key == *k,
        _ => false,
    }
}

/// Whether `input` may change the binding `before` holds at `k` (see the module doc).
fn may_change(input: &Input, k: &LeaseKey, before: &View) -> bool {
    let (holder, on, _, valid_until) = before;
    if about(input, k) {
        return true;
    }
    match input {
        Input::Observe(o) => o.client_duid == *holder && o.link.address == *on,
        Input::Withdraw(w) => match w.reason {
            WithdrawReason::Operator => true,
            WithdrawReason::Released => {
                w.client_duid.as_ref() == Some(holder) && w.link.is_none_or(|l| l == *on)
            }
        },
        Input::Confirm(_) => false,
        Input::Expire(now) => valid_until <= now,
    }
}

fn changed(a: &View, b: Option<&View>) -> bool {
    b.is_none_or(|b| (&a.0, a.1, a.2) != (&b.0, b.1, b.2))
}

/// Apply `inputs` to a fresh store, checking the invariant after each; panics on a violation.
pub(crate) fn check(inputs: &[Input]) {
    let s = BindingStore::new(CacheConfig::default());
    for (step, input) in inputs.iter().enumerate() {
        let before = view(&s);
        let moves_before = moves(&s);
        let applied: Applied = match input {
            Input::Observe(o) => s.apply(o),
            Input::Withdraw(w) => s.withdraw(w),
            Input::Confirm(c) => s.confirm(c),
            Input::Expire(t) => s.expire_due(*t),
        };
        let after = view(&s);
        let ctx = || format!("step {step}: {input:?}\nbefore {before:?}\nafter {after:?}");
        // Ownership, first for everything but R11's follow-ups.
        let direct: Vec<&LeaseKey> = before
            .iter()
            .filter(|(k, b)| changed(b, after.get(k)) && may_change(input, k, b))
            .map(|(k, _)| k)
            .collect();
        for (k, b) in &before {
            if !changed(b, after.get(k)) || direct.contains(&k) {
                continue;
            }
            // R11: a prefix whose next hop follows an address of the same client on the same
            // link that changed rightfully in this step.
            let follows = matches!(k, LeaseKey::Prefix(_))
                && after.get(k).is_some_and(|a| (&a.0, a.1) == (&b.0, b.1))
                && direct.iter().any(|d| {
                    let o = &before[*d];
                    (&o.0, o.1) == (&b.0, b.1)
                });
            assert!(
                follows,
                "ownership: {k} changed without its holder or a server's word\n{}",
                ctx()
            );
        }
        // No overlap by stealth.
        for (k, a) in after.iter().filter(|(k, _)| !before.contains_key(k)) {
            let net = k.network();
            let inside_other = before.iter().any(|(p, b)| {
                matches!(p, LeaseKey::Prefix(pp) if pp.len() < net.len() && pp.covers(&net))
                    && b.0 != a.0
            });
            // The reverse: a new prefix over another client's delegated prefix.
            let over_other = matches!(k, LeaseKey::Prefix(_))
                && before.iter().any(|(p, b)| {
                    matches!(p, LeaseKey::Prefix(pp) if net.len() < pp.len() && net.covers(pp))
                        && b.0 != a.0
                });
            let answered = matches!(input, Input::Observe(o)
                if o.query_address.is_some_and(|q| net.contains(q)));
            assert!(
                !inside_other || answered,
                "overlap: {k} added inside another client's prefix\n{}",
                ctx()
            );
            assert!(
                !over_other || answered,
                "overlap: {k} added over another client's prefix\n{}",
                ctx()
            );
        }
        // Moves are never silent.
        let moved = before
            .iter()
            .filter(|(k, b)| after.get(k).is_some_and(|a| changed(b, Some(a))))
            .count() as u64;
        assert_eq!(moves(&s) - moves_before, moved, "moves counted \n{}", ctx());
        // Doubts change nothing, and name the holder the store had.
        for d in &applied.doubts {
            // Holder and link (its next hop may still follow R11 when the same input moved
            // another lease of the holder by a server's word).
            assert_eq!(
                before.get(&d.key).map(|b| (&b.0, b.1)),
                after.get(&d.key).map(|a| (&a.0, a.1)),
                "doubt {d:?} changed its key\n{}",
                ctx()
            );
            let holder = d.holder.as_ref().expect("the store names the holder");
            if d.reason != DoubtReason::Overlap {
                assert_eq!(
                    before.get(&d.key).map(|b| &b.0[..]),
                    Some(&holder.duid[..]),
                    "doubt {d:?}: holder\n{}",
                    ctx()
                );
            }
        }
    }
}
