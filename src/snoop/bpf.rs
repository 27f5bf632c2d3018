//! The classic-BPF program the kernel runs on every frame of a snooped interface, so that only
//! DHCPv6 reaches user space. Pure data; [`super::capture`] attaches it.
//!
//! The capture socket is `AF_PACKET`/`SOCK_DGRAM`, so offset 0 is the IPv6 header whatever the
//! link layer (for outgoing frames too: `packet_rcv` pulls to the network header). Accepted:
//! IPv6 (`skb->protocol` 0x86dd), version 6, UDP **from port 547** to port 546 or 547 —
//! directly after the fixed header or after up to [`EXT_HEADERS`] hop-by-hop (0), routing (43)
//! or destination-options (60) extension headers. Fragments (44) and everything else are refused
//! in the kernel.
//!
//! Only from port 547: everything the classifier believes comes from there (RELAY-FORW and
//! RELAY-REPL 547 → 547, a server's direct REPLY 547 → 546), so nothing else is worth a copy.
//! Port 546 on the uplink is also where the requestor's replies arrive and where anyone
//! upstream can flood (a junk flood of 30 s there once cost 3.25M `queue_full` drops here, and
//! the CPU to copy each datagram); such a flood now stays in the kernel unless it forges source
//! port 547.
//!
//! ```text
//!       ld   [SKF_AD_OFF+SKF_AD_PROTOCOL]   A = ethertype of the frame
//!       jeq  #0x86dd, next, drop
//!       ldb  [0] ; rsh #4 ; jeq #6, next, drop       IP version
//!       ldx  #40                                  X = offset of the next header
//!       ldb  [6]                                  A = Next Header
//!   N:  jeq  #17, udp                             (repeated EXT_HEADERS times)
//!       jeq  #0/#43/#60, ext, drop
//!  ext: ldb [x+0] ; st M[0]                      next header after this one
//!       ldb [x+1] ; add #1 ; lsh #3 ; add x ; tax   X += (Hdr Ext Len + 1) * 8
//!       ld  M[0] ; ja N'
//!  udp: ldh [x+0] ; jeq #547, next, drop          source port
//!       ldh [x+2]                                 destination port
//!       jeq #547, accept ; jeq #546, accept, drop
//! ```

use crate::bpf::{
    ABS, AD_PROTOCOL, ADD, ALU, B, H, IMM, IND, Insn, JA, JMP, K, LD, LDX, LSH, MEM, MISC, RET,
    RSH, ST, TAX, W, X, jeq, stmt,
};

/// How many IPv6 extension headers the filter walks before giving up on a packet.
pub(crate) const EXT_HEADERS: usize = 3;

/// Bytes of an accepted packet handed to user space (more than any UDP datagram).
pub(crate) const SNAP_LEN: u32 = 0x0004_0000;

const ETH_P_IPV6: u32 = 0x86dd;
const UDP: u32 = 17;

/// A jump placeholder; targets are patched once every label is placed.
enum Item {
    I(Insn),
    Jeq { k: u32, t: Label, f: Label },
    Ja(Label),
    Mark(Label),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Next,
    Round(usize),
    Ext(usize),
    Udp,
    Accept,
    Drop,
}

/// The filter program (see the module docs for its listing).
pub(crate) fn dhcpv6_filter() -> Vec<Insn> {
    use Item::*;
    let mut p = vec![
        I(stmt(LD | W | ABS, AD_PROTOCOL)),
        Jeq {
            k: ETH_P_IPV6,
            t: Label::Next,
            f: Label::Drop,
        },
        I(stmt(LD | B | ABS, 0)),
        I(stmt(ALU | RSH | K, 4)),
        Jeq {
            k: 6,
            t: Label::Next,
            f: Label::Drop,
        },
        I(stmt(LDX | W | IMM, 40)),
        I(stmt(LD | B | ABS, 6)),
    ];
    for n in 0..=EXT_HEADERS {
        p.push(Mark(Label::Round(n)));
        let last = n == EXT_HEADERS;
        p.push(Jeq {
            k: UDP,
            t: Label::Udp,
            f: if last { Label::Drop } else { Label::Next },
        });
        if last {
            break;
        }
        for (i, nh) in [0u32, 43, 60].iter().enumerate() {
            p.push(Jeq {
                k: *nh,
                t: Label::Ext(n),
                f: if i == 2 { Label::Drop } else { Label::Next },
            });
        }
        p.extend([
            Mark(Label::Ext(n)),
            I(stmt(LD | B | IND, 0)),
            I(stmt(ST, 0)),
            I(stmt(LD | B | IND, 1)),
            I(stmt(ALU | ADD | K, 1)),
            I(stmt(ALU | LSH | K, 3)),
            I(stmt(ALU | ADD | X, 0)),
            I(stmt(MISC | TAX, 0)),
            I(stmt(LD | MEM, 0)),
            Ja(Label::Round(n + 1)),
        ]);
    }
    p.extend([
        Mark(Label::Udp),
        I(stmt(LD | H | IND, 0)),
        Jeq {
            k: 547,
            t: Label::Next,
            f: Label::Drop,
        },
        I(stmt(LD | H | IND, 2)),
        Jeq {
            k: 547,
            t: Label::Accept,
            f: Label::Next,
        },
        Jeq {
            k: 546,
            t: Label::Accept,
            f: Label::Drop,
        },
        Mark(Label::Accept),
        I(stmt(RET | K, SNAP_LEN)),
        Mark(Label::Drop),
        I(stmt(RET | K, 0)),
    ]);
    assemble(&p)
}

fn assemble(items: &[Item]) -> Vec<Insn> {
    // Instruction index of each label.
    let mut pos = Vec::new();
    let mut n = 0usize;
    for it in items {
        match it {
            Item::Mark(l) => pos.push((*l, n)),
            _ => n += 1,
        }
    }
    let find = |l: Label| pos.iter().find(|(m, _)| *m == l).map(|(_, i)| *i);
    let mut out = Vec::with_capacity(n);
    for it in items {
        let here = out.len();
        let rel = |l: Label| -> u32 {
            let target = if l == Label::Next {
                here + 1
            } else {
                find(l).expect("label placed")
            };
            u32::try_from(target - here - 1).expect("forward jump")
        };
        match it {
            Item::Mark(_) => {}
            Item::I(i) => out.push(*i),
            Item::Jeq { k, t, f } => out.push(jeq(
                *k,
                u8::try_from(rel(*t)).expect("jump within 255"),
                u8::try_from(rel(*f)).expect("jump within 255"),
            )),
            Item::Ja(l) => out.push(stmt(JMP | JA, rel(*l))),
        }
    }
    out
}

#[cfg(test)]
mod tests;
