//! The capture socket in a real kernel: two namespaces joined by a veth; the kernel's BPF filter
//! must pass UDP from port 547 to 546/547 both ways (outgoing frames too) and nothing else —
//! not a datagram to 546 or 547 from any other port (a flood at the requestor's port 546).

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::time::Duration;

use lqagent::snoop::capture::{self, CaptureCounter, CaptureSocket, CaptureStats};
use support::netns::{NetNs, require_root, uplink};

/// One datagram from port 547 (DHCPv6 servers and relays send from there).
fn send(ns: &NetNs, from: &str, to: &str, port: u16, payload: &'static [u8]) {
    send_from(ns, from, 547, to, port, payload)
}

fn send_from(ns: &NetNs, from: &str, sport: u16, to: &str, port: u16, payload: &'static [u8]) {
    let (from, to): (Ipv6Addr, Ipv6Addr) = (from.parse().unwrap(), to.parse().unwrap());
    ns.run_in(move || {
        let s = UdpSocket::bind(SocketAddrV6::new(from, sport, 0, 0)).unwrap();
        s.send_to(payload, SocketAddrV6::new(to, port, 0, 0))
            .unwrap();
    });
}

#[test]
fn kernel_filter_passes_dhcpv6_both_ways_and_nothing_else() {
    if !require_root("kernel_filter_passes_dhcpv6_both_ways_and_nothing_else") {
        return;
    }
    let relay = NetNs::new("capr");
    let server = NetNs::new("caps");
    uplink(&relay, &server);

    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let stats = std::sync::Arc::new(CaptureStats::default());
    let st = stats.clone();
    let path = relay.path();
    // The capture runs on its own thread inside the relay namespace; it says when its socket
    // is open (packets sent before that are not seen).
    let (open_tx, open_rx) = std::sync::mpsc::channel();
    let capture_thread = std::thread::spawn(move || {
        let f = std::fs::File::open(path).unwrap();
        setns(&f);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let sock = CaptureSocket::open("up0", 1 << 20).unwrap();
            open_tx.send(()).unwrap();
            let _ = tokio::time::timeout(
                Duration::from_secs(3),
                capture::run(sock, capture::Queue::new(tx), st),
            )
            .await;
        });
    });
    open_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("capture socket open");

    // Outgoing from the relay: RELAY-FORW-like to 547, and noise to 53 and 5470.
    send(&relay, "2001:db8:f::1", "2001:db8:f::2", 53, b"dns");
    send(&relay, "2001:db8:f::1", "2001:db8:f::2", 547, b"\x0cforw");
    send(&relay, "2001:db8:f::1", "2001:db8:f::2", 5470, b"other");
    // Incoming to the relay: to 547 and to 546; and noise to 548, and to 546 and 547 from
    // other ports than 547 (junk at the requestor's port, as a flood would send it).
    send(&server, "2001:db8:f::2", "2001:db8:f::1", 548, b"noise");
    send_from(
        &server,
        "2001:db8:f::2",
        0,
        "2001:db8:f::1",
        546,
        b"\x0fjunk",
    );
    send_from(
        &server,
        "2001:db8:f::2",
        546,
        "2001:db8:f::1",
        547,
        b"\x0djunk",
    );
    send(&server, "2001:db8:f::2", "2001:db8:f::1", 547, b"\x0drepl");
    send(
        &server,
        "2001:db8:f::2",
        "2001:db8:f::1",
        546,
        b"\x0fclient",
    );

    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while got.len() < 3 && std::time::Instant::now() < deadline {
        if let Ok(m) = rx.try_recv() {
            got.push(m);
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Give stragglers (the noise, if the filter were wrong) a moment to show up: waiting for
    // something that must not come, so a fixed time is the check itself.
    std::thread::sleep(Duration::from_millis(200));
    while let Ok(m) = rx.try_recv() {
        got.push(m);
    }
    let summary: Vec<(bool, &[u8], String)> = got
        .iter()
        .map(|m| (m.outgoing, &m.payload[..], m.src.to_string()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (true, &b"\x0cforw"[..], "2001:db8:f::1".to_string()),
            (false, &b"\x0drepl"[..], "2001:db8:f::2".to_string()),
            (false, &b"\x0fclient"[..], "2001:db8:f::2".to_string()),
        ]
    );
    assert!(got.iter().all(|m| &*m.interface == "up0"));
    assert_eq!(
        stats.get(CaptureCounter::Received),
        3,
        "noise reached user space"
    );
    assert_eq!(stats.get(CaptureCounter::Malformed), 0);
    drop(rx);
    capture_thread.join().unwrap();
}

#[allow(unsafe_code)]
fn setns(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid, open namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0);
}
