//! Interop with the real ISC DHCP suite (Debian isc-dhcp-server/-relay/-client 4.4): in three
//! namespaces this test makes, a real `dhclient -6 -N -P` gets an address and a delegated
//! prefix through a real `dhcrelay -6` from a real `dhcpd -6` with `allow leasequery;`, and
//! then `lqagent query` (the binary, as an operator runs it) asks dhcpd about them.
//!
//! ```text
//!  ns srv: dhcpd -6 on s0 2001:db8::1/64 ──veth── r0 2001:db8::2/64  ns rly: dhcrelay -6,
//!                                                  r1 2001:db8:1::1/64   lqagent query (546)
//!                                                   └──veth── c1 (link-local)  ns cli: dhclient
//! ```
//!
//! What dhcpd 4.4.3 does here is written down in docs/interop.md; the assertions below pin
//! it, so a change in the peer shows up as a failing test rather than a silent surprise.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::isc::{Daemon, Lifetimes, add_address, dhclient, dhcpd_conf, quiet_dad, spawn_dhcpd};
use support::netns::{NetNs, require_root, veth};
use support::wait::wait_for;

/// The value of `key` in dhclient's lease file, e.g. "iaaddr" → "2001:db8:1::1a5".
fn lease_field(lease: &str, key: &str) -> Option<String> {
    lease.lines().find_map(|l| {
        let l = l.trim();
        l.strip_prefix(key)
            .map(|rest| rest.trim().trim_end_matches(['{', ';']).trim().to_string())
    })
}

/// "0:1:0:1:32:9d:..." (dhclient's client-id option) → hex without separators.
fn colon_hex(s: &str) -> String {
    s.split(':')
        .map(|b| format!("{:02x}", u8::from_str_radix(b, 16).unwrap()))
        .collect()
}

struct Query {
    code: i32,
    json: Value,
    took: Duration,
}

fn lqagent_query(ns: &NetNs, args: &[&str]) -> Query {
    let t0 = Instant::now();
    let out = ns
        .command(env!("CARGO_BIN_EXE_lqagent"))
        .arg("query")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "lqagent query {args:?}: {e}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Query {
        code: out.status.code().unwrap_or(-1),
        json,
        took,
    }
}

#[test]
fn isc_dhcpd_leasequery_interop() {
    if !require_root("isc_dhcpd_leasequery_interop") {
        return;
    }
    for tool in ["dhcpd", "dhcrelay", "dhclient"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} missing: tests/run.sh installs isc-dhcp-*");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f);
    let p = |f: &str| d(f).to_string_lossy().into_owned();

    let srv = NetNs::new("iscs");
    let rly = NetNs::new("iscr");
    let cli = NetNs::new("iscc");
    for ns in [&srv, &rly, &cli] {
        quiet_dad(ns);
    }
    veth(&srv, "s0", &rly, "r0");
    veth(&rly, "r1", &cli, "c1");
    add_address(&srv, "2001:db8::1/64", "s0");
    add_address(&rly, "2001:db8::2/64", "r0");
    add_address(&rly, "2001:db8:1::1/64", "r1");
    srv.exec(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:1::/64",
        "via",
        "2001:db8::2",
    ]);
    rly.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);

    std::fs::write(d("dhcpd6.conf"), dhcpd_conf(1, Lifetimes::default())).unwrap();
    std::fs::write(d("dhcpd6.leases"), "").unwrap();
    let _dhcpd = spawn_dhcpd(&srv, dir.path(), "");
    let _relay = Daemon::spawn(
        &rly,
        "dhcrelay",
        &[
            "dhcrelay",
            "-6",
            "-d",
            "-pf",
            &p("dhcrelay.pid"),
            "-l",
            "r1",
            "-u",
            "2001:db8::1%r0",
        ],
        &d("relay.log"),
    );
    // dhcrelay logs its sockets once it has bound them.
    wait_for("dhcrelay to bind", Duration::from_secs(10), || {
        std::fs::read_to_string(d("relay.log")).is_ok_and(|l| l.contains("Sending on"))
    });
    // Unix seconds before the client's first transaction: the floor of an absolute CLT_TIME.
    let before_client = unix_now();
    let _client = Daemon::spawn(
        &cli,
        "dhclient",
        &dhclient("-d", &d("dhclient.leases"), &d("dhclient.pid"), "c1")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &d("client.log"),
    );
    let lease_path = d("dhclient.leases");
    wait_for(
        "dhclient to get an address and a prefix",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&lease_path)
                .is_ok_and(|l| l.contains("iaaddr ") && l.contains("iaprefix "))
        },
    );
    let lease = std::fs::read_to_string(&lease_path).unwrap();
    let addr = lease_field(&lease, "iaaddr").expect("iaaddr in the lease");
    let prefix = lease_field(&lease, "iaprefix").expect("iaprefix in the lease");
    let client_id =
        colon_hex(&lease_field(&lease, "option dhcp6.client-id").expect("client-id in the lease"));
    eprintln!("dhclient got {addr} and {prefix} as {client_id}");

    // 1. Query by the leased address: the client's DUID and the address, sane lifetimes.
    let server = ["--server", "2001:db8::1", "--timeout", "3"];
    let mut args = server.to_vec();
    args.extend(["--address", &addr]);
    let q = lqagent_query(&rly, &args);
    assert_eq!(q.code, 0, "bound: {:#}", q.json);
    let b = &q.json["bindings"][0];
    assert_eq!(b["client_duid"], client_id);
    let leases = b["leases"].as_array().unwrap();
    let l = leases
        .iter()
        .find(|l| l["address"] == addr.as_str())
        .unwrap_or_else(|| panic!("leased address in the answer: {b:#}"));
    let valid = l["valid_remaining"].as_u64().unwrap();
    let preferred = l["preferred_remaining"].as_u64().unwrap();
    assert!(
        valid > 0 && valid <= 600,
        "valid lifetime within the configured 600 s: {l}"
    );
    assert!(preferred > 0 && preferred <= valid, "{l}");
    // dhcpd 4.4.3 puts the absolute time of the last transaction in CLT_TIME (seconds since
    // 1970), not the RFC's "seconds since": pin what it does (docs/interop.md, the CLT row).
    // The client's transaction happened between `before_client` and now, so an absolute time is
    // in that window; a relative one (seconds since, a small number) is not. Step 7 asks again
    // more than 2 s later and must get the same value: a relative form would have grown.
    let clt = b["clt_time"].as_u64().unwrap();
    let now = unix_now();
    eprintln!("CLT_TIME {clt}, dhclient started at {before_client}, now {now}");
    assert!(
        (before_client..=now).contains(&clt),
        "CLT_TIME {clt} is not the absolute time of the client's transaction \
         ({before_client}..={now})"
    );
    // Merge rule R13 reads it as an absolute time (from 10^9 s on); the JSON says so.
    assert_eq!(b["clt_time_absolute"], true, "{b:#}");
    assert_eq!(b["server"], "[2001:db8::1]:547");

    // 2. A free address inside the pool: Success without client data = no binding (exit 1).
    let free = if addr == "2001:db8:1::100" {
        "2001:db8:1::101"
    } else {
        "2001:db8:1::100"
    };
    let mut args = server.to_vec();
    args.extend(["--address", free]);
    let q = lqagent_query(&rly, &args);
    assert_eq!(q.code, 1, "{:#}", q.json);
    assert_eq!(q.json["answers"][0]["result"], "no_binding");

    // 3. An unused address outside every pool: dhcpd answers NotConfigured (exit 2).
    let mut args = server.to_vec();
    args.extend(["--address", "2001:db8:1::50"]);
    let q = lqagent_query(&rly, &args);
    assert_eq!(q.code, 2, "{:#}", q.json);
    assert_eq!(q.json["answers"][0]["status"]["code"], 9, "{:#}", q.json);

    // 4. An address inside the delegated prefix: dhcpd 4.4 does not search IA_PD leases.
    let pfx_addr = format!("{}1", prefix.split('/').next().unwrap());
    let mut args = server.to_vec();
    args.extend(["--address", &pfx_addr]);
    let q = lqagent_query(&rly, &args);
    eprintln!("query by an address in {prefix}: {}", q.json["answers"][0]);
    assert_eq!(q.json["answers"][0]["status"]["code"], 9, "{:#}", q.json);

    // 5. Query by client id: dhcpd 4.4 answers UnknownQueryType.
    let mut args = server.to_vec();
    args.extend(["--client-id", &client_id]);
    let q = lqagent_query(&rly, &args);
    assert_eq!(q.code, 2);
    assert_eq!(q.json["answers"][0]["status"]["code"], 7, "{:#}", q.json);

    // 6. A dead server configured first is failed over within the configured timeout.
    let q = lqagent_query(
        &rly,
        &[
            "--server",
            "2001:db8::dead",
            "--server",
            "2001:db8::1",
            "--timeout",
            "2",
            "--attempts",
            "3",
            "--address",
            &addr,
        ],
    );
    assert_eq!(q.code, 0, "{:#}", q.json);
    let answers = q.json["answers"].as_array().unwrap();
    assert_eq!(answers[0]["server"], "[2001:db8::dead]:547");
    assert_eq!(answers[0]["result"], "no_answer");
    let dead_ms = answers[0]["elapsed_ms"].as_f64().unwrap();
    eprintln!(
        "dead server given up after {dead_ms} ms; whole query {:?}",
        q.took
    );
    assert!(
        (1990.0..2500.0).contains(&dead_ms),
        "given up after the 2 s timeout: {dead_ms}"
    );
    assert_eq!(answers[1]["result"], "bound");
    assert_eq!(q.json["bindings"][0]["client_duid"], client_id);

    // 7. Multicast to All_DHCP_Servers out of r0, accepting dhcpd's unicast address.
    let q = lqagent_query(
        &rly,
        &[
            "--multicast",
            "r0",
            "--accept-from",
            "2001:db8::1",
            "--timeout",
            "3",
            "--address",
            &addr,
        ],
    );
    eprintln!("multicast query: {}", q.json["answers"]);
    assert_eq!(q.code, 0, "{:#}", q.json);
    assert_eq!(q.json["answers"][0]["server"], "[ff05::1:3]:547");
    assert_eq!(q.json["bindings"][0]["server"], "[2001:db8::1]:547");
    assert_eq!(q.json["bindings"][0]["client_duid"], client_id);
    assert_eq!(
        q.json["bindings"][0]["clt_time"].as_u64(),
        Some(clt),
        "CLT_TIME constant across queries (absolute, not seconds since): step 6 alone took 2 s"
    );

    // dhcpd logged our queries and its replies to port 546.
    let log = std::fs::read_to_string(d("dhcpd.log")).unwrap();
    assert!(
        log.contains("Sending Leasequery-reply to 2001:db8::2 port 546"),
        "{log}"
    );
}

/// Seconds since 1970 by this machine's clock (dhcpd's CLT_TIME is on the same clock).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
