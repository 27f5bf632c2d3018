//! `lqagent decode` as an operator runs it: the built binary on the real captures in
//! tests/data/, on captures written here (every link type, malformed and foreign packets, a cut
//! file) and on hex, checking output, JSON and exit status.

use std::net::Ipv6Addr;
use std::path::Path;
use std::process::{Command, Output};

use lqagent::pcap::link;
use lqagent::pcap::write::{PcapWriter, frame, ipv6_udp};
use lqagent::wire::{ClientMessage, DhcpOption, Duid, Message, MessageType};

fn decode(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lqagent"))
        .arg("decode")
        .args(args)
        .output()
        .expect("run lqagent")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn real_relay_capture_as_text() {
    let o = decode(&["--pcap", &data("relay-server.pcap")]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = stdout(&o);
    for want in [
        "#1 2026-11-28T17:49:19.294746Z [2001:db8::2]:547 -> [2001:db8::1]:547\n",
        "RELAY-FORW(12) hop-count 0 link-address 2001:db8:1::1 peer-address fe80::ff:fe00:301",
        "\n  RELAY_MSG(9) len 72 @42\n    SOLICIT(1) xid 0x72471e (72 bytes @46)\n",
        "CLIENTID(1) len 14 @50: DUID-LLT hw-type 1 time 849203358 (2026-11-28T17:49:18Z) link-layer 02:00:00:00:03:01",
        "IAPREFIX(26) len 25 @110: 2001:db8:1ff::/56 preferred 300s valid 600s",
        "RELEASE(8) xid 0xadfc9c",
        "pcap 8 packets, 8 DHCPv6 messages (0 malformed), 0 skipped",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn real_leasequery_capture_as_json() {
    // Linux cooked v2 link type (tcpdump -i any).
    let o = decode(&["--pcap", &data("leasequery.pcap"), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "pcap");
    assert_eq!(v["packets"], 14);
    assert_eq!(v["malformed_messages"], 0);
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 14);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["packet"], i + 1);
        let (want_type, from_port) = if i % 2 == 0 {
            ("LEASEQUERY", 546)
        } else {
            ("LEASEQUERY-REPLY", 547)
        };
        assert_eq!(m["message"]["type_name"], want_type, "packet {}", i + 1);
        assert_eq!(m["src_port"], from_port);
        assert_eq!(m["malformed"], 0);
    }
    let reply = &msgs[1]["message"];
    assert_eq!(reply["transaction_id"], 0x8dbed1);
    let cd = &reply["options"][0];
    assert_eq!(cd["name"], "CLIENT_DATA");
    assert_eq!(cd["options"][1]["value"]["address"], "2001:db8:1::1cc");
    assert_eq!(cd["options"][2]["value"]["seconds"], 1_795_888_164u32);
    let status = &msgs[5]["message"]["options"][2]["value"];
    assert_eq!(status["name"], "UnknownQueryType");
    assert_eq!(status["message"], "QUERY_BY_CLIENTID not supported.");
}

fn solicit(xid: u32) -> Vec<u8> {
    let mut m = ClientMessage::new(MessageType::SOLICIT, xid);
    m.options
        .push(DhcpOption::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 0, 9])));
    m.options.push(DhcpOption::ElapsedTime(100));
    Message::from(m).to_vec().unwrap()
}

#[test]
fn every_link_type_malformed_and_foreign_packets() {
    let dir = tempfile::tempdir().unwrap();
    for lt in [link::ETHERNET, link::LINUX_SLL, link::LINUX_SLL2, link::RAW] {
        let mut w = PcapWriter::new(lt);
        let good = ipv6_udp(a("fe80::1"), a("ff02::1:2"), 546, 547, &solicit(0xabcdef)).unwrap();
        w.packet(1, 0, &frame(lt, &good).unwrap());
        // A SOLICIT whose ELAPSED_TIME has 3 bytes.
        let mut bad = solicit(0x000102);
        let n = bad.len();
        bad[n - 3] = 3;
        bad.push(0);
        let bad = ipv6_udp(a("fe80::1"), a("ff02::1:2"), 546, 547, &bad).unwrap();
        w.packet(2, 0, &frame(lt, &bad).unwrap());
        // DNS is not ours.
        let dns = ipv6_udp(a("2001:db8::1"), a("2001:db8::2"), 5353, 53, b"xx").unwrap();
        w.packet(3, 0, &frame(lt, &dns).unwrap());
        let path = dir.path().join(format!("lt{lt}.pcap"));
        std::fs::write(&path, w.into_bytes()).unwrap();

        let o = decode(&["--pcap", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "link type {lt}: {o:?}");
        let out = stdout(&o);
        assert!(out.contains("SOLICIT(1) xid 0xabcdef"), "{out}");
        assert!(
            out.contains("CLIENTID(1) len 10 @4: DUID-LL hw-type 1 link-layer 02:00:00:00:00:09")
        );
        assert!(
            out.contains("!! MALFORMED @18: option 8 at offset 18 has length 3, expected 2"),
            "{out}"
        );
        assert!(
            out.contains("3 packets, 2 DHCPv6 messages (1 malformed), 1 skipped"),
            "{out}"
        );
        assert!(out.contains("skipped 1: not UDP port 546/547"), "{out}");

        let o = decode(&["--pcap", path.to_str().unwrap(), "--json"]);
        assert_eq!(o.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["malformed_messages"], 1);
        assert_eq!(v["messages"][1]["malformed"], 1);
        assert_eq!(
            v["messages"][1]["message"]["options"][1]["error"]["reason"],
            "bad_length"
        );
        assert_eq!(v["skipped"]["not UDP port 546/547"], 1);
    }
}

#[test]
fn cut_capture_shows_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = PcapWriter::new(link::RAW);
    for xid in [1, 2] {
        let p = ipv6_udp(a("fe80::1"), a("ff02::1:2"), 546, 547, &solicit(xid)).unwrap();
        w.packet(1, 0, &p);
    }
    let mut bytes = w.into_bytes();
    bytes.truncate(bytes.len() - 5);
    let path = dir.path().join("cut.pcap");
    std::fs::write(&path, bytes).unwrap();
    let o = decode(&["--pcap", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains("SOLICIT(1) xid 0x000001"));
    assert!(!out.contains("xid 0x000002"));
    assert!(
        out.contains("capture file unreadable from here on: truncated packet data"),
        "{out}"
    );
}

#[test]
fn hex_input_and_errors() {
    let hex = hex::encode(solicit(0x123456));
    let o = decode(&["--hex", &hex]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout(&o).starts_with("SOLICIT(1) xid 0x123456"));
    // Separators and 0x are accepted.
    let spaced: Vec<String> = hex
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let o = decode(&["--hex", &format!("0x{}", spaced.join(":")), "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["message"]["transaction_id"], 0x123456);
    assert_eq!(v["message"]["options"][1]["value"]["hundredths"], 100);

    let o = decode(&["--hex", "0c00"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("!! MALFORMED @0: truncated relay message header"),
        "{o:?}"
    );

    for args in [
        &["--hex", "0g"][..],
        &["--pcap", "/nonexistent/x.pcap"],
        &["--pcap", env!("CARGO_MANIFEST_DIR")],
        &[],
        &["--hex", "01", "--pcap", "x"],
    ] {
        let o = decode(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(!o.stderr.is_empty());
    }
    let o = decode(&["--pcap", &data("README.md")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a capture file"),
        "{o:?}"
    );
}

/// The same captures converted by Wireshark's editcap (an independent writer) to pcapng and to
/// nanosecond libpcap read exactly as the originals: same messages, same times.
#[test]
fn editcap_conversions_read_the_same() {
    for (orig, conv, format) in [
        ("leasequery.pcap", "leasequery.pcapng", "pcapng"),
        ("relay-server.pcap", "relay-server-ns.pcap", "pcap"),
    ] {
        let read = |f: &str| {
            let o = decode(&["--pcap", &data(f), "--json"]);
            assert_eq!(o.status.code(), Some(0), "{f}: {o:?}");
            serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
        };
        let (a, b) = (read(orig), read(conv));
        assert_eq!(b["format"], format);
        assert!(!a["messages"].as_array().unwrap().is_empty());
        assert_eq!(a["messages"], b["messages"], "{orig} vs {conv}");
        assert_eq!(a["packets"], b["packets"]);
    }
}
