//! The filter run on crafted packets by a small interpreter of the instructions it uses (the
//! kernel itself runs it in `tests/netns/snoop_capture.rs`).

use super::*;

/// Runs `prog` on `pkt` (network header at 0) with `skb->protocol = proto`; returns the
/// accepted length (0 = drop). Out-of-bounds loads drop, as in the kernel.
fn run(prog: &[Insn], proto: u16, pkt: &[u8]) -> u32 {
    let (mut a, mut x, mut mem, mut pc) = (0u32, 0u32, [0u32; 16], 0usize);
    let load = |off: u32, size: usize| -> Option<u32> {
        let off = off as usize;
        let b = pkt.get(off..off + size)?;
        Some(b.iter().fold(0u32, |acc, v| (acc << 8) | u32::from(*v)))
    };
    loop {
        let i = prog[pc];
        pc += 1;
        let size = |c: u16| match c & 0x18 {
            W => 4,
            H => 2,
            _ => 1,
        };
        match i.code & 0x07 {
            LD => match i.code & 0xe0 {
                ABS if i.k == AD_PROTOCOL => a = u32::from(proto),
                ABS => match load(i.k, size(i.code)) {
                    Some(v) => a = v,
                    None => return 0,
                },
                IND => match load(x.wrapping_add(i.k), size(i.code)) {
                    Some(v) => a = v,
                    None => return 0,
                },
                MEM => a = mem[i.k as usize],
                c => panic!("ld mode {c:#x}"),
            },
            LDX => x = i.k,
            ST => mem[i.k as usize] = a,
            ALU => {
                let v = if i.code & X != 0 { x } else { i.k };
                a = match i.code & 0xf0 {
                    ADD => a.wrapping_add(v),
                    LSH => a << v,
                    RSH => a >> v,
                    c => panic!("alu {c:#x}"),
                }
            }
            JMP => match i.code & 0xf0 {
                JA => pc += i.k as usize,
                JEQ => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                c => panic!("jmp {c:#x}"),
            },
            RET => return i.k,
            MISC => x = a,
            c => panic!("class {c:#x}"),
        }
    }
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
