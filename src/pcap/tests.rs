//! Capture files of every supported format and link type, written here byte by byte, read back;
//! every truncation of them read without panicking.

use super::link::{self, LinkError};
use super::write::{PcapWriter, frame, ipv6_udp};
use super::*;
use std::net::Ipv6Addr;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn datagram(payload: &[u8]) -> Vec<u8> {
    ipv6_udp(a("2001:db8::2"), a("2001:db8::1"), 546, 547, payload).unwrap()
}

/// A classic file by hand: byte order and timestamp unit chosen.
fn classic(be: bool, nanos: bool, link: u16, packets: &[(u32, u32, &[u8])]) -> Vec<u8> {
    let u32b = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let u16b = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut f = Vec::new();
    f.extend(u32b(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    f.extend(u16b(2));
    f.extend(u16b(4));
    f.extend([0; 8]);
    f.extend(u32b(65535));
    // FCS flags in the upper bits must not change the link type.
    f.extend(u32b(0x1000_0000 | u32::from(link)));
    for (sec, frac, data) in packets {
        f.extend(u32b(*sec));
        f.extend(u32b(*frac));
        f.extend(u32b(data.len() as u32));
        f.extend(u32b(data.len() as u32 + 10));
        f.extend(*data);
    }
    f
}

#[test]
fn classic_both_byte_orders_and_units() {
    let d = datagram(b"\x0e\x01\x02\x03");
    for be in [false, true] {
        for nanos in [false, true] {
            let frac = if nanos { 123_456_789 } else { 123_456 };
            let f = classic(
                be,
                nanos,
                link::RAW,
                &[(1_795_888_164, frac, &d), (5, 0, &d)],
            );
            let cap = Capture::parse(&f).unwrap();
            assert_eq!(cap.format_name(), "pcap");
            let ps: Vec<_> = cap.packets().collect::<Result<_, _>>().unwrap();
            assert_eq!(ps.len(), 2, "be {be} nanos {nanos}");
            assert_eq!(ps[0].number, 1);
            assert_eq!(ps[1].number, 2);
            assert_eq!(ps[0].ts_sec, 1_795_888_164);
            let want_ns = if nanos { 123_456_789 } else { 123_456_000 };
            assert_eq!(ps[0].ts_nsec, want_ns);
            assert_eq!(ps[0].link_type, link::RAW);
            assert_eq!(ps[0].orig_len, d.len() as u32 + 10);
            let u = ps[0].udp6().unwrap();
            assert_eq!((u.src_port, u.dst_port), (546, 547));
            assert_eq!(u.payload, b"\x0e\x01\x02\x03");
            assert!(is_dhcpv6(&u));
        }
    }
}

#[test]
fn writer_output_reads_back_on_every_link_type() {
    let d = datagram(b"\x01\xaa\xbb\xcc");
    for lt in [
        link::ETHERNET,
        link::LINUX_SLL,
        link::LINUX_SLL2,
        link::RAW,
        link::IPV6,
    ] {
        let mut w = PcapWriter::new(lt);
        w.packet(7, 8, &frame(lt, &d).unwrap());
        let bytes = w.into_bytes();
        let cap = Capture::parse(&bytes).unwrap();
        let p = cap.packets().next().unwrap().unwrap();
        assert_eq!(p.link_type, lt);
        assert_eq!((p.ts_sec, p.ts_nsec), (7, 8000));
        let u = p.udp6().unwrap();
        assert_eq!(u.src, a("2001:db8::2"));
        assert_eq!(u.dst, a("2001:db8::1"));
        assert_eq!(u.payload, b"\x01\xaa\xbb\xcc", "link type {lt}");
        assert!(cap.packets().nth(1).is_none());
    }
    assert_eq!(frame(105, &d), None);
}

#[test]
fn udp_checksum_verifies() {
    for payload in [&b""[..], b"\x01", b"\x01\x02\x03", &[0xff; 301]] {
        let p = datagram(payload);
        // One's-complement sum over pseudo-header + UDP (checksum included) is all ones.
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
            }
        };
        add(&p[8..40]);
        add(&((p.len() - 40) as u32).to_be_bytes());
        add(&[0, 0, 0, 17]);
        add(&p[40..]);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "payload {payload:?}");
    }
}

#[test]
fn link_layers() {
    let d = datagram(b"\x0c");
    // Ethernet with two VLAN tags.
    let mut eth = vec![0u8; 12];
    eth.extend([0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x86, 0xdd]);
    eth.extend(&d);
    assert_eq!(link::ipv6_packet(link::ETHERNET, &eth).unwrap(), &d[..]);
    // IPv4 is not for us.
    let mut v4 = vec![0u8; 12];
    v4.extend([0x08, 0x00]);
    assert_eq!(
        link::ipv6_packet(link::ETHERNET, &v4),
        Err(LinkError::NotIpv6(0x0800))
    );
    // BSD null: AF_INET6 in host order (24 on NetBSD, 30 on macOS), loop: network order.
    for fam in [24u32, 30, 10] {
        let mut n = fam.to_le_bytes().to_vec();
        n.extend(&d);
        assert_eq!(link::ipv6_packet(link::NULL, &n).unwrap(), &d[..]);
        let mut l = fam.to_be_bytes().to_vec();
        l.extend(&d);
        assert_eq!(link::ipv6_packet(link::LOOP, &l).unwrap(), &d[..]);
    }
    assert_eq!(
        link::ipv6_packet(link::NULL, &2u32.to_le_bytes()),
        Err(LinkError::NotIpv6(2))
    );
    assert_eq!(link::ipv6_packet(105, &d), Err(LinkError::Unsupported(105)));
    for lt in [
        link::ETHERNET,
        link::LINUX_SLL,
        link::LINUX_SLL2,
        link::NULL,
    ] {
        let f = frame(lt, &d).unwrap_or_else(|| {
            let mut n = 24u32.to_le_bytes().to_vec();
            n.extend(&d);
            n
        });
        let header = f.len() - d.len();
        for n in 0..header {
            assert!(
                matches!(link::ipv6_packet(lt, &f[..n]), Err(LinkError::Truncated(_))),
                "link {lt} cut at {n}"
            );
        }
    }
}

/// A pcapng file: SHB, IDB (if_tsresol = 10^-9), EPB, a custom block, SPB, in either order.
fn pcapng(be: bool, payloads: &[&[u8]]) -> Vec<u8> {
    let u32b = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let u16b = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let block = |t: u32, body: &[u8]| {
        let mut body = body.to_vec();
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let len = (body.len() + 12) as u32;
        let mut b = u32b(t).to_vec();
        b.extend(u32b(len));
        b.extend(body);
        b.extend(u32b(len));
        b
    };
    let mut shb = u32b(0x1a2b_3c4d).to_vec();
    shb.extend(u16b(1));
    shb.extend(u16b(0));
    shb.extend([0xff; 8]);
    let mut idb = u16b(link::RAW).to_vec();
    idb.extend([0, 0]);
    idb.extend(u32b(0));
    idb.extend(u16b(9));
    idb.extend(u16b(1));
    idb.extend([9, 0, 0, 0]);
    idb.extend(u16b(0));
    idb.extend(u16b(0));
    let mut f = block(0x0a0d_0d0a, &shb);
    f.extend(block(1, &idb));
    let ts: u64 = 1_795_888_164_123_456_789;
    let d0 = datagram(payloads[0]);
    let mut epb = u32b(0).to_vec();
    epb.extend(u32b((ts >> 32) as u32));
    epb.extend(u32b(ts as u32));
    epb.extend(u32b(d0.len() as u32));
    epb.extend(u32b(d0.len() as u32));
    epb.extend(&d0);
    f.extend(block(6, &epb));
    f.extend(block(0x0bad, b"custom"));
    let d1 = datagram(payloads[1]);
    let mut spb = u32b(d1.len() as u32).to_vec();
    spb.extend(&d1);
    f.extend(block(3, &spb));
    f
}

#[test]
fn pcapng_both_byte_orders() {
    for be in [false, true] {
        let f = pcapng(be, &[b"\x0f\x01", b"\x10\x02\x03"]);
        let cap = Capture::parse(&f).unwrap();
        assert_eq!(cap.format_name(), "pcapng");
        let ps: Vec<_> = cap.packets().collect::<Result<_, _>>().unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!((ps[0].ts_sec, ps[0].ts_nsec), (1_795_888_164, 123_456_789));
        assert_eq!(ps[0].udp6().unwrap().payload, b"\x0f\x01");
        assert_eq!(ps[1].udp6().unwrap().payload, b"\x10\x02\x03");
        assert_eq!(ps[1].number, 2);
    }
}

#[test]
fn bad_files_are_errors_never_panics() {
    assert_eq!(
        Capture::parse(b"GIF89a..................").err(),
        Some(PcapError::BadMagic { magic: 0x4749_4638 })
    );
    assert!(matches!(
        Capture::parse(b"\xd4\xc3"),
        Err(PcapError::Truncated { .. })
    ));
    let d = datagram(b"\x01");
    let mut huge = classic(false, false, link::RAW, &[(1, 2, &d)]);
    huge[24 + 8..24 + 12].copy_from_slice(&(MAX_PACKET as u32 + 1).to_le_bytes());
    let cap = Capture::parse(&huge).unwrap();
    assert!(matches!(
        cap.packets().next(),
        Some(Err(PcapError::TooLong { at: 24, .. }))
    ));
    let files = [
        classic(
            false,
            false,
            link::ETHERNET,
            &[(1, 2, &frame(1, &d).unwrap())],
        ),
        classic(
            true,
            true,
            link::LINUX_SLL2,
            &[(1, 2, &frame(276, &d).unwrap())],
        ),
        pcapng(false, &[b"\x01", b"\x02"]),
        pcapng(true, &[b"\x01", b"\x02"]),
    ];
    for f in files {
        let full = Capture::parse(&f).unwrap().packets().count();
        for n in 0..f.len() {
            let Ok(cap) = Capture::parse(&f[..n]) else {
                continue;
            };
            let mut errors = 0;
            for p in cap.packets() {
                match p {
                    Ok(p) => {
                        let _ = p.udp6();
                    }
                    Err(_) => errors += 1,
                }
            }
            assert!(errors <= 1, "iteration stops after the first error");
            if n < f.len() && n > 24 {
                assert!(
                    errors == 1 || cap.packets().count() < full,
                    "a cut file at {n} of {} reads as whole",
                    f.len()
                );
            }
        }
    }
    // pcapng: a packet naming an interface that was never described.
    let mut f = pcapng(false, &[b"\x01", b"\x02"]);
    let idb_end = 28 + 32;
    f.drain(28..idb_end);
    assert!(matches!(
        Capture::parse(&f).unwrap().packets().next(),
        Some(Err(PcapError::NoInterface { id: 0, .. }))
    ));
}
