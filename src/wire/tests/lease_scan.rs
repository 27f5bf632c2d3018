//! The classifier's IA and lease scans ([`OptionsIter::checked_ias`],
//! [`checked_ia_addrs`](OptionsIter::checked_ia_addrs),
//! [`checked_ia_prefixes`](OptionsIter::checked_ia_prefixes)) against the reading they
//! replaced, `filter_map(Result::ok)` then `kind().ok()` per option: over every truncation and
//! every one-byte change (to each code and length the scans tell apart, and neighbours of
//! the byte there) of a snooped REPLY, of the codec bench's, and of one
//! through two relay levels, both readings give the same IAs (code, IAID, and the nested list
//! exactly: bytes, offset, context) and the same leases. A scan that accepted an option the
//! typed reading refuses (a short IA, an overrunning header, a list past the nesting bound)
//! would differ here.

use crate::prefix::Ipv6Prefix;
use crate::wire::view::OptionRef;
use crate::wire::*;
use std::net::Ipv6Addr;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// What a reading found: per IA its code, IAID and nested list (as `Debug`, which shows the
/// list's bytes, offset and context), then its addresses and prefixes with their own nested
/// lists.
type Reading = Vec<(u16, u32, String, Vec<String>, Vec<String>)>;

/// The reading the scans replaced (the classifier's `ias` and `leases_of` before them).
fn by_kind(opts: OptionsIter<'_>) -> Reading {
    opts.filter_map(Result::ok)
        .filter_map(|o| match o.kind().ok()? {
            OptionRef::IaNa(ia) | OptionRef::IaPd(ia) => Some((o.code().0, ia.iaid, ia.options)),
            OptionRef::IaTa { iaid, options } => Some((o.code().0, iaid, options)),
            _ => None,
        })
        .map(|(code, iaid, inner)| {
            let (mut addrs, mut prefixes) = (Vec::new(), Vec::new());
            for l in inner.filter_map(Result::ok) {
                match l.kind() {
                    Ok(OptionRef::IaAddr(v)) => addrs.push(format!("{v:?}")),
                    Ok(OptionRef::IaPrefix(v)) => prefixes.push(format!("{v:?}")),
                    _ => {}
                }
            }
            (code, iaid, format!("{inner:?}"), addrs, prefixes)
        })
        .collect()
}

/// The same through the scans.
fn by_scan(opts: OptionsIter<'_>) -> Reading {
    opts.checked_ias()
        .map(|ia| {
            (
                ia.code.0,
                ia.iaid,
                format!("{:?}", ia.options),
                ia.options
                    .checked_ia_addrs()
                    .map(|v| format!("{v:?}"))
                    .collect(),
                ia.options
                    .checked_ia_prefixes()
                    .map(|v| format!("{v:?}"))
                    .collect(),
            )
        })
        .collect()
}

/// Both readings agree on the list at `at` read raw (whatever the check says of the whole)
/// and on the innermost message of `bytes` when it checks (the classifier's case).
fn agree(bytes: &[u8], at: usize, what: &str) -> bool {
    let raw = OptionsIter::over(bytes.get(at..).unwrap_or_default());
    assert_eq!(by_scan(raw), by_kind(raw), "{what}: raw list");
    let Some(inner) = CheckedMessage::new(bytes).ok().and_then(|m| m.innermost()) else {
        return false;
    };
    assert_eq!(
        by_scan(inner.options()),
        by_kind(inner.options()),
        "{what}: checked"
    );
    true
}

fn status(code: StatusCode) -> DhcpOption {
    DhcpOption::StatusCode(Status::new(code, "x"))
}

/// The codec bench's REPLY (CLIENTID, SERVERID, IA_NA{IAADDR}, IA_PD{IAPREFIX}), or with
/// `more`, one with nested lists in its leases, an IA_TA and a second address.
fn reply(more: bool) -> ClientMessage {
    let mut m = ClientMessage::new(MessageType::REPLY, 0x4242);
    m.options
        .push(DhcpOption::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 0, 1])));
    m.options.push(DhcpOption::ServerId(Duid::ll_ethernet([
        2, 0, 0, 0, 0, 0xfe,
    ])));
    let mut na = Ia::new(1, 1800, 2880);
    let mut addr = IaAddr::new(a("2001:db8:1::10"), 3600, 7200);
    if more {
        addr.options.push(status(StatusCode::SUCCESS));
    }
    na.options.push(DhcpOption::IaAddr(addr));
    if more {
        na.options.push(DhcpOption::IaAddr(IaAddr::new(
            a("2001:db8:1::11"),
            3600,
            7200,
        )));
        na.options.push(status(StatusCode::SUCCESS));
    }
    m.options.push(DhcpOption::IaNa(na));
    if more {
        m.options.push(DhcpOption::IaTa(IaTa {
            iaid: 3,
            options: Options(vec![DhcpOption::IaAddr(IaAddr::new(
                a("2001:db8:1::12"),
                60,
                120,
            ))]),
        }));
    }
    let mut pd = Ia::new(2, 1800, 2880);
    let mut p = IaPrefix::new(
        Ipv6Prefix::new(a("2001:db8:100::"), 56).unwrap(),
        3600,
        7200,
    );
    if more {
        p.options.push(status(StatusCode::SUCCESS));
    }
    pd.options.push(DhcpOption::IaPrefix(p));
    m.options.push(DhcpOption::IaPd(pd));
    m
}

/// `inner` relayed through `levels` RELAY-REPLs, each with an Interface-Id before RELAY_MSG.
fn relayed(inner: ClientMessage, levels: usize) -> Vec<u8> {
    super::relay_repl_levels(Message::from(inner), levels, &[])
}

#[test]
fn the_scans_read_what_the_typed_reading_reads_over_every_cut_and_byte_change() {
    for (name, msg, levels) in [
        ("the bench's relayed REPLY", relayed(reply(false), 1), 1),
        ("a REPLY through two relays", relayed(reply(true), 2), 2),
    ] {
        // Where the REPLY's options start: each relay level adds its header, the
        // Interface-Id (4 + 12) and RELAY_MSG's header; then the REPLY's own header.
        let at = levels * (34 + 16 + 4) + 4;
        assert!(agree(&msg, at, name), "{name} checks");
        let whole = by_scan(
            CheckedMessage::new(&msg)
                .unwrap()
                .innermost()
                .unwrap()
                .options(),
        );
        assert_eq!(whole.len(), if levels == 1 { 2 } else { 3 }, "{name}: IAs");
        let (mut checked, mut total) = (0, 0);
        for cut in 0..msg.len() {
            total += 1;
            checked += usize::from(agree(&msg[..cut], at, &format!("{name} cut at {cut}")));
        }
        for i in 0..msg.len() {
            // Every option code the scans tell apart (IA_NA 3, IA_TA 4, IAADDR 5, STATUS 13,
            // IA_PD 25, IAPREFIX 26) and every length around the fixed parts (4, 12, 24, 25),
            // either byte of a 16-bit field, and neighbours of what was there.
            let b = msg[i];
            for v in [
                0,
                1,
                2,
                3,
                4,
                5,
                11,
                12,
                13,
                23,
                24,
                25,
                26,
                0x7f,
                0x80,
                0xfe,
                0xff,
                b ^ 1,
                b ^ 0x80,
                b.wrapping_add(1),
                b.wrapping_sub(1),
            ] {
                let mut m = msg.clone();
                m[i] = v;
                total += 1;
                checked += usize::from(agree(&m, at, &format!("{name} byte {i} = {v}")));
            }
        }
        // Both kinds of input were compared: some changes still check, some do not.
        assert!(
            checked > 0 && checked < total,
            "{name}: {checked} of {total}"
        );
    }
}
