//! The namespace helper itself: a namespace exists while held, veth links join two of them,
//! a thread can enter one, and dropping removes it.

use support::netns::{NetNs, require_root, veth};

#[test]
fn namespace_lifecycle_and_veth() {
    if !require_root("namespace_lifecycle_and_veth") {
        return;
    }
    let a = NetNs::new("sup");
    let b = NetNs::new("sup");
    assert_ne!(a.name(), b.name());
    veth(&a, "va", &b, "vb");
    a.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "va",
        "nodad",
    ]);
    b.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:1::2/64",
        "dev",
        "vb",
        "nodad",
    ]);
    let ping = a.try_exec(&["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::2"]);
    assert!(ping.status.success(), "ping across veth: {ping:?}");

    // A thread that entered `a` sees `va` and not the host's interfaces.
    let links = a.run_in(|| {
        std::fs::read_dir("/sys/class/net")
            .map(|d| d.count())
            .unwrap_or(0)
    });
    assert!(links >= 1);
    let name = a.name().to_string();
    let inside = a.run_in(|| {
        std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout
    });
    assert!(
        String::from_utf8_lossy(&inside).contains("va@"),
        "va visible inside {name}"
    );

    let path = a.path();
    drop(a);
    assert!(
        !std::path::Path::new(&path).exists(),
        "namespace removed on drop"
    );
}

/// The storm bench's route monitor times every route a burst installs, and honestly: each
/// stamp falls between the moment before the routes were added and the moment the monitor had
/// seen them all (never earlier than the kernel could have announced the route), and only the
/// /128s of the watched protocol are stamped. The routes are added in one `ip -batch` (one
/// netlink socket, back to back), so the notifications queue up while the monitor reads: a read
/// that dropped any of a batch's datagrams leaves the count short and fails the bounded wait.
#[test]
fn route_monitor_stamps_every_route_of_a_burst() {
    if !require_root("route_monitor_stamps_every_route_of_a_burst") {
        return;
    }
    use std::time::{Duration, Instant};
    const N: u32 = 3000;
    const PROTO: u8 = 200;
    let ns = NetNs::new("mon");
    // A veth with its peer inside (the test kernels have no dummy links).
    ns.exec(&[
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0p",
    ]);
    ns.exec(&["ip", "link", "set", "d0p", "up"]);
    ns.exec(&["ip", "link", "set", "d0", "up"]);
    let addr = |k: u32| -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x20, 0, 0, 0, (k >> 16) as u16, k as u16)
    };
    let mut batch = String::new();
    for k in 0..N {
        batch.push_str(&format!("route add {}/128 dev d0 proto {PROTO}\n", addr(k)));
    }
    // Not watched: another protocol's /128, and a shorter prefix of the watched protocol.
    batch.push_str("route add 2001:db8:21::1/128 dev d0 proto 201\n");
    batch.push_str(&format!(
        "route add 2001:db8:22::/64 dev d0 proto {PROTO}\n"
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("routes.batch");
    std::fs::write(&file, batch).expect("write batch");

    let monitor = support::storm::RouteMonitor::start(&ns, PROTO, N as usize);
    // The monitor is blocked in its read from here on: a stamp taken before its read returned
    // would fall before `before`.
    std::thread::sleep(Duration::from_millis(100));
    let before = Instant::now();
    ns.exec(&["ip", "-6", "-batch", &file.to_string_lossy()]);
    let end = Instant::now() + Duration::from_secs(30);
    while monitor.count() < N as usize && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = Instant::now();
    let seen = monitor.finish();
    assert_eq!(seen.overflows, 0, "the monitor's socket overflowed");
    assert_eq!(seen.truncated, 0, "a notification was cut");
    assert_eq!(
        seen.first.len(),
        N as usize,
        "every watched route once, nothing else"
    );
    for k in 0..N {
        let at = seen.first.get(&addr(k)).copied();
        let at = at.unwrap_or_else(|| panic!("route {} never stamped", addr(k)));
        assert!(
            at >= before,
            "route {} stamped before it was added",
            addr(k)
        );
        assert!(at <= after, "route {} stamped after it was seen", addr(k));
    }
    assert!(seen.reads >= 1 && seen.reads <= u64::from(N));
}

/// The monitor's parser reads only whole messages and attributes: a datagram cut anywhere, or
/// with a length field bent anywhere, yields no panic and no route from the damaged part; intact
/// messages of other types, protocols or prefix lengths yield nothing.
#[test]
fn route_monitor_parser_takes_only_whole_routes() {
    use support::storm::routes_in;
    let route = |ty: u16, dst_len: u8, proto: u8, dst: [u8; 16]| -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]); // flags, seq, pid
        m.extend_from_slice(&[10, dst_len, 0, 0, 254, proto, 0, 1, 0, 0, 0, 0]);
        m.extend_from_slice(&8u16.to_ne_bytes()); // RTA_TABLE first, as the kernel writes it
        m.extend_from_slice(&15u16.to_ne_bytes());
        m.extend_from_slice(&254u32.to_ne_bytes());
        m.extend_from_slice(&20u16.to_ne_bytes()); // RTA_DST
        m.extend_from_slice(&1u16.to_ne_bytes());
        m.extend_from_slice(&dst);
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        m
    };
    let a: [u8; 16] = "2001:db8:20::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let b: [u8; 16] = "2001:db8:20::2"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let mut dgram = route(24, 128, 200, a);
    dgram.extend(route(25, 128, 200, b)); // RTM_DELROUTE
    dgram.extend(route(24, 128, 201, b)); // another protocol
    dgram.extend(route(24, 64, 200, b)); // not a /128
    dgram.extend(route(24, 128, 200, b));
    let got = |d: &[u8]| {
        let mut v = Vec::new();
        routes_in(d, 200, |x| v.push(x.octets()));
        v
    };
    assert_eq!(got(&dgram), vec![a, b]);
    let one = route(24, 128, 200, a).len();
    for cut in 0..dgram.len() {
        let v = got(&dgram[..cut]);
        // Only messages wholly inside the cut count: the first, once it is whole (the last
        // watched one is whole only uncut).
        assert_eq!(v.len(), usize::from(cut >= one), "cut at {cut}");
    }
    for at in 0..dgram.len() {
        for bent in [0u8, 1, 3, 4, 19, 0x7f, 0xff] {
            let mut d = dgram.clone();
            d[at] = bent;
            for x in got(&d) {
                assert!(x == a || x == b || d.windows(16).any(|w| w == x));
            }
        }
    }
}
