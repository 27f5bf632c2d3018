//! Codec hot paths (issue 2): decode a LEASEQUERY-REPLY carrying OPTION_CLIENT_DATA (CLIENTID,
//! 2×IAADDR, 1×IAPREFIX, CLT_TIME, LQ_RELAY_DATA) through the borrowed view's typed accessors,
//! visiting every nested option (down to the relay message's options inside LQ_RELAY_DATA) and
//! reading the values a requestor uses; and encode a LEASEQUERY by address
//! (CLIENTID + LQ_QUERY{IAADDR}) from the owned form into a reused buffer.
//!
//! `cargo bench --bench codec` runs criterion and ends with one line
//! `codec: decode <ns> ns, encode <ns> ns`: criterion's median estimates, read back from its
//! `estimates.json` (falling back to a median of our own timed batches if that file cannot be
//! found). Before it, a "best batch" line gives the fastest of 300 short batches, which on a
//! shared machine is closer to the code's own speed than the median. Without `--bench` (as under `cargo test --all-targets`) criterion runs each
//! benchmark once as a test and this file checks the results; no timing line is printed.

use criterion::Criterion;
use lqagent::prefix::Ipv6Prefix;
use lqagent::wire::*;
use std::hint::black_box;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn leasequery_reply() -> Vec<u8> {
    let client = Duid::Llt {
        hw_type: 1,
        time: 0x2abc_def0,
        link_layer: vec![2, 0, 0, 0, 0, 1],
    };
    let mut relay = RelayMessage::new(
        MessageType::RELAY_FORW,
        0,
        a("2001:db8:1::1"),
        a("fe80::201:2ff:fe00:1"),
    );
    relay
        .options
        .push(DhcpOption::InterfaceId(b"ge-0/0/1.100".to_vec()));
    let pfx = Ipv6Prefix::new(a("2001:db8:100::"), 56).unwrap();
    let cd = ClientData {
        options: Options(vec![
            DhcpOption::ClientId(client.clone()),
            DhcpOption::IaAddr(IaAddr::new(a("2001:db8:1::10"), 3600, 7200)),
            DhcpOption::IaAddr(IaAddr::new(a("2001:db8:1::11"), 3600, 7200)),
            DhcpOption::IaPrefix(IaPrefix::new(pfx, 3600, 7200)),
            DhcpOption::CltTime(42),
            DhcpOption::LqRelayData(Box::new(LqRelayData {
                peer_address: a("2001:db8:1::1"),
                relay,
            })),
        ]),
    };
    let mut m = ClientMessage::new(MessageType::LEASEQUERY_REPLY, 0xabcdef);
    m.options.push(DhcpOption::ServerId(Duid::ll_ethernet([
        2, 0, 0, 0, 0, 0xfe,
    ])));
    m.options.push(DhcpOption::ClientId(Duid::ll_ethernet([
        2, 0, 0, 0, 0, 0xaa,
    ])));
    m.options.push(DhcpOption::ClientData(cd));
    Message::from(m).to_vec().unwrap()
}

fn leasequery_by_address() -> Message {
    let mut q = LqQuery::new(QueryType::BY_ADDRESS, Ipv6Addr::UNSPECIFIED);
    q.options
        .push(DhcpOption::IaAddr(IaAddr::new(a("2001:db8:1::10"), 0, 0)));
    let mut m = ClientMessage::new(MessageType::LEASEQUERY, 0x123456);
    m.options.push(DhcpOption::ClientId(Duid::ll_ethernet([
        2, 0, 0, 0, 0, 0xaa,
    ])));
    m.options.push(DhcpOption::LqQuery(q));
    m.into()
}

/// What a requestor takes out of a reply; summed so nothing is optimised away.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    options: u32,
    addrs: u32,
    prefixes: u32,
    clt_time: u32,
    duid_bytes: usize,
    valid_sum: u64,
    relay_opts: u32,
}

/// The requestor's hot path: typed borrowed accessors, every nested option visited.
fn decode(bytes: &[u8]) -> Result<Seen, Error> {
    let mut s = Seen::default();
    let MessageView::Client(m) = MessageView::new_checked(bytes)? else {
        return Ok(s);
    };
    s.options += m.transaction_id() & 1;
    for o in m.options() {
        let o = o?;
        s.options += 1;
        match o.code() {
            OptionCode::SERVERID | OptionCode::CLIENTID => s.duid_bytes += o.duid()?.len(),
            OptionCode::CLIENT_DATA => {
                for o in o.client_data()? {
                    let o = o?;
                    s.options += 1;
                    match o.code() {
                        OptionCode::CLIENTID => s.duid_bytes += o.duid()?.len(),
                        OptionCode::IAADDR => {
                            let ia = o.ia_addr()?;
                            s.addrs += 1;
                            s.valid_sum += u64::from(ia.valid) + u64::from(ia.addr.octets()[15]);
                            s.options += nested(ia.options)?;
                        }
                        OptionCode::IAPREFIX => {
                            let p = o.ia_prefix()?;
                            s.prefixes += 1;
                            s.valid_sum += u64::from(p.valid) + u64::from(p.prefix_len);
                            s.options += nested(p.options)?;
                        }
                        OptionCode::CLT_TIME => s.clt_time = o.clt_time()?,
                        OptionCode::LQ_RELAY_DATA => {
                            let rd = o.lq_relay_data()?;
                            s.valid_sum += u64::from(rd.peer_address.octets()[15]);
                            s.relay_opts += nested(rd.relay.options())?;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Visits a nested list (status codes, interface-id, ...): code and length of each.
fn nested(opts: OptionsIter<'_>) -> Result<u32, Error> {
    let mut n = 0;
    for o in opts {
        let o = o?;
        n += 1;
        if o.code() == OptionCode::STATUS_CODE {
            n += u32::from(o.status()?.code.0);
        }
    }
    Ok(n)
}

fn encode(m: &Message, buf: &mut [u8]) -> usize {
    m.emit(buf).unwrap()
}

/// Criterion's median for `codec/<name>` in ns, if its estimates file is where we expect and
/// was written by this run.
fn criterion_median(name: &str, since: SystemTime) -> Option<f64> {
    let base = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("criterion"))
        })
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/criterion"));
    let path = base.join("codec").join(name).join("new/estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// Median ns per call over 31 batches, our own timing.
fn own_median(mut f: impl FnMut()) -> f64 {
    const BATCH: u32 = 20_000;
    let mut samples: Vec<f64> = (0..31)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCH {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(BATCH)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Fastest ns per call over 300 short batches: on a shared machine the median includes time
/// spent preempted; the best short batch is the closest to the code's own speed.
fn best_batch(mut f: impl FnMut()) -> f64 {
    const BATCH: u32 = 2_000;
    (0..300)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCH {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(BATCH)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let reply = leasequery_reply();
    let query = leasequery_by_address();
    let mut buf = [0u8; 256];

    // Correctness first, in every mode.
    let seen = decode(&reply).unwrap();
    assert_eq!((seen.addrs, seen.prefixes, seen.clt_time), (2, 1, 42));
    assert_eq!(seen.relay_opts, 1);
    let n = encode(&query, &mut buf);
    assert_eq!(Message::parse(&buf[..n]).unwrap(), query);

    let bench_mode = std::env::args().any(|a| a == "--bench");
    let started = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("codec");
    g.bench_function("decode", |b| b.iter(|| decode(black_box(&reply))));
    g.bench_function("encode", |b| {
        b.iter(|| encode(black_box(&query), black_box(&mut buf)))
    });
    g.finish();
    c.final_summary();
    if !bench_mode {
        return;
    }
    let dec = criterion_median("decode", started).unwrap_or_else(|| {
        own_median(|| {
            black_box(decode(black_box(&reply)).ok());
        })
    });
    let enc = criterion_median("encode", started).unwrap_or_else(|| {
        own_median(|| {
            black_box(encode(black_box(&query), &mut buf));
        })
    });
    let best_dec = best_batch(|| {
        black_box(decode(black_box(&reply)).ok());
    });
    let best_enc = best_batch(|| {
        black_box(encode(black_box(&query), &mut buf));
    });
    println!(
        "codec best batch (less load-sensitive): decode {best_dec:.1} ns, encode {best_enc:.1} ns"
    );
    println!("codec: decode {dec:.1} ns, encode {enc:.1} ns");
}
