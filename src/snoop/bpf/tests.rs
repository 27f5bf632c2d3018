//! The filter run on crafted packets by a small interpreter of the instructions it uses (the
//! kernel itself runs it in `tests/netns/snoop_capture.rs`).

use super::*;
use crate::bpf::interp;

/// Runs `prog` on `pkt` (network header at 0) with `skb->protocol = proto`; returns the
/// accepted length (0 = drop).
fn run(prog: &[Insn], proto: u16, pkt: &[u8]) -> u32 {
    let pkt = interp::Packet {
        protocol: proto,
        net: pkt,
        data: pkt,
    };
    interp::run(prog, &pkt)
}

/// IPv6 header + extension headers (next-header values) + UDP header from 547 to `dport`.
fn packet(version: u8, exts: &[u8], last: u8, dport: u16) -> Vec<u8> {
    packet_from(547, version, exts, last, dport)
}

/// [`packet`] from source port `sport`.
fn packet_from(sport: u16, version: u8, exts: &[u8], last: u8, dport: u16) -> Vec<u8> {
    let mut p = vec![version << 4, 0, 0, 0, 0, 0, 0, 64];
    p[6] = exts.first().copied().unwrap_or(last);
    p.extend([0u8; 32]);
    for (i, _) in exts.iter().enumerate() {
        let next = exts.get(i + 1).copied().unwrap_or(last);
        // 16-byte extension header: Hdr Ext Len 1.
        let mut e = vec![next, 1];
        e.extend([0u8; 14]);
        p.extend(e);
    }
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend([0, 8, 0, 0]);
    p
}

#[test]
fn accepts_dhcpv6_udp_only() {
    let f = dhcpv6_filter();
    assert!(f.len() < 255, "jumps must stay in range");
    assert_eq!(run(&f, 0x86dd, &packet(6, &[], 17, 547)), SNAP_LEN);
    assert_eq!(run(&f, 0x86dd, &packet(6, &[], 17, 546)), SNAP_LEN);
    assert_eq!(run(&f, 0x86dd, &packet(6, &[], 17, 53)), 0);
    assert_eq!(run(&f, 0x86dd, &packet(6, &[], 6, 547)), 0, "TCP");
    assert_eq!(run(&f, 0x0800, &packet(6, &[], 17, 547)), 0, "not IPv6");
    assert_eq!(run(&f, 0x86dd, &packet(4, &[], 17, 547)), 0, "version");
    assert_eq!(run(&f, 0x86dd, &packet(6, &[], 17, 547)[..43]), 0, "short");
}

#[test]
fn walks_up_to_three_extension_headers() {
    let f = dhcpv6_filter();
    assert_eq!(run(&f, 0x86dd, &packet(6, &[0], 17, 547)), SNAP_LEN);
    assert_eq!(run(&f, 0x86dd, &packet(6, &[0, 60], 17, 547)), SNAP_LEN);
    assert_eq!(run(&f, 0x86dd, &packet(6, &[0, 43, 60], 17, 546)), SNAP_LEN);
    assert_eq!(run(&f, 0x86dd, &packet(6, &[0, 43, 60, 60], 17, 547)), 0);
    assert_eq!(run(&f, 0x86dd, &packet(6, &[60], 17, 80)), 0);
    assert_eq!(run(&f, 0x86dd, &packet(6, &[44], 17, 547)), 0, "fragment");
}

/// Only what the classifier can believe is copied: from port 547. A flood at port 546 (or 547)
/// from any other port stays in the kernel, after extension headers too.
#[test]
fn only_datagrams_from_port_547_pass() {
    let f = dhcpv6_filter();
    for sport in [546u16, 548, 5547, 0x2302, 40000] {
        for dport in [546, 547] {
            assert_eq!(
                run(&f, 0x86dd, &packet_from(sport, 6, &[], 17, dport)),
                0,
                "{sport}"
            );
            assert_eq!(
                run(&f, 0x86dd, &packet_from(sport, 6, &[0, 60], 17, dport)),
                0,
                "{sport} after extension headers"
            );
        }
    }
    assert_eq!(
        run(&f, 0x86dd, &packet_from(547, 6, &[0, 60], 17, 546)),
        SNAP_LEN
    );
    // A UDP header cut after the source port: dropped, never read past.
    assert_eq!(run(&f, 0x86dd, &packet_from(547, 6, &[], 17, 547)[..42]), 0);
}
