//! Classic BPF (the kernel's socket-filter language, `linux/filter.h`) as data: the instruction,
//! its opcode parts and the statement helpers the agent's two socket filters are written with
//! (*pure*: the programs are built here and there as values; the shells attach them).
//!
//! Why a module of its own: `snoop::bpf` (DHCPv6 from port 547 on the capture socket) and
//! `requestor::filter` (the configured servers' replies on port 546) are two programs in one
//! language. Each used to declare the instruction and its opcodes itself; one definition keeps
//! their encodings from drifting apart, and one test interpreter ([`interp`]) runs both.
//!
//! An opcode is the OR of a class, a size or ALU/jump operation, and a source or mode, as in
//! the kernel's headers: `LD | H | ABS` is `ldh [k]`, `JMP | JEQ | K` is `jeq #k`.

/// One classic-BPF instruction, laid out like the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Classes (linux/bpf_common.h).
pub(crate) const LD: u16 = 0x00;
pub(crate) const LDX: u16 = 0x01;
pub(crate) const ST: u16 = 0x02;
pub(crate) const ALU: u16 = 0x04;
pub(crate) const JMP: u16 = 0x05;
pub(crate) const RET: u16 = 0x06;
pub(crate) const MISC: u16 = 0x07;
// Load sizes.
pub(crate) const W: u16 = 0x00;
pub(crate) const H: u16 = 0x08;
pub(crate) const B: u16 = 0x10;
// Load modes.
pub(crate) const IMM: u16 = 0x00;
pub(crate) const ABS: u16 = 0x20;
pub(crate) const IND: u16 = 0x40;
pub(crate) const MEM: u16 = 0x60;
// ALU operations.
pub(crate) const ADD: u16 = 0x00;
pub(crate) const LSH: u16 = 0x60;
pub(crate) const RSH: u16 = 0x70;
// Jump operations.
pub(crate) const JA: u16 = 0x00;
pub(crate) const JEQ: u16 = 0x10;
// Operand sources.
pub(crate) const K: u16 = 0x00;
pub(crate) const X: u16 = 0x08;
// MISC operations.
pub(crate) const TAX: u16 = 0x00;

/// `SKF_AD_OFF + SKF_AD_PROTOCOL`: the ancillary load of `skb->protocol`.
pub(crate) const AD_PROTOCOL: u32 = (-0x1000i32) as u32;
/// `SKF_NET_OFF`: loads relative to the network (IPv6) header, whatever offset 0 is.
pub(crate) const NET_OFF: i32 = -0x0010_0000;

/// The kernel's limit on a classic-BPF program (`BPF_MAXINSNS`).
pub(crate) const MAX_INSNS: usize = 4096;

/// An instruction without jumps: `code` with operand `k`.
pub(crate) fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// `jeq #k, jt, jf`: skip `jt` instructions when the accumulator equals `k`, else `jf`.
pub(crate) fn jeq(k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: JMP | JEQ | K,
        jt,
        jf,
        k,
    }
}

/// A small interpreter of the instructions the agent's filters use, so their unit tests run
/// the programs on crafted packets (the kernel runs them in the netns and socket tests).
#[cfg(test)]
pub(crate) mod interp {
    use super::*;

    /// What a filter is run on: `data` is what offset 0 means (the network header on a packet
    /// socket, the UDP header on a UDP socket), `net` the network header reached through
    /// [`NET_OFF`], `protocol` the frame's `skb->protocol`.
    pub(crate) struct Packet<'a> {
        pub protocol: u16,
        pub net: &'a [u8],
        pub data: &'a [u8],
    }

    /// Runs `prog` on `pkt`; returns the accepted length (0 = drop). A load out of bounds
    /// drops, as in the kernel; an instruction this interpreter does not know panics.
    pub(crate) fn run(prog: &[Insn], pkt: &Packet<'_>) -> u32 {
        let (mut a, mut x, mut mem, mut pc) = (0u32, 0u32, [0u32; 16], 0usize);
        let load = |k: u32, size: usize| -> Option<u32> {
            if k == AD_PROTOCOL {
                return Some(u32::from(pkt.protocol));
            }
            let s = k as i32;
            let (bytes, off) = if s < 0 {
                assert!(s < -0x1000, "ancillary load {k:#x}");
                (pkt.net, s - NET_OFF)
            } else {
                (pkt.data, s)
            };
            let off = usize::try_from(off).ok()?;
            let b = bytes.get(off..off + size)?;
            Some(b.iter().fold(0u32, |acc, v| (acc << 8) | u32::from(*v)))
        };
        loop {
            let i = *prog.get(pc).expect("the program ends in a ret");
            pc += 1;
            let size = match i.code & 0x18 {
                W => 4,
                H => 2,
                _ => 1,
            };
            match i.code & 0x07 {
                LD => {
                    let v = match i.code & 0xe0 {
                        ABS => load(i.k, size),
                        IND => load(x.wrapping_add(i.k), size),
                        MEM => Some(mem[i.k as usize]),
                        c => panic!("ld mode {c:#x}"),
                    };
                    match v {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
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
}
