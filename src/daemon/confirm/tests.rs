//! The confirmer's pure parts: every outcome of [`settle`], the address asked for a prefix, and
//! the one-question-per-key memory.

use super::*;
use crate::cache::binding::{ClientInfo, DoubtReason};
use crate::requestor::{AnswerVerdict, ClientAnswer, ServerAnswer};
use crate::wire::{DhcpOption, StatusCode};

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn opt(code: u16, body: &[u8]) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

const HOLDER: &[u8] = &[0, 3, 0, 1, 0x0a, 0, 0, 0, 0, 1];
const STRANGER: &[u8] = &[0, 3, 0, 1, 0x0a, 0, 0, 0, 0, 2];
const LINK: &str = "2001:db8:1::1";

fn pd() -> LeaseKey {
    LeaseKey::Prefix("2001:db8:100::/56".parse().unwrap())
}

/// CLIENT_DATA for `duid` with one IAPREFIX (`prefix`/`len`) and CLT_TIME.
fn client_data(duid: &[u8], prefix: &str, len: u8) -> crate::wire::ClientData {
    let mut iapfx = 1800u32.to_be_bytes().to_vec();
    iapfx.extend_from_slice(&3600u32.to_be_bytes());
    iapfx.push(len);
    iapfx.extend_from_slice(&a(prefix).octets());
    let mut body = opt(1, duid);
    body.extend(opt(26, &iapfx));
    body.extend(opt(46, &5u32.to_be_bytes()));
    match DhcpOption::parse(&opt(45, &body)).unwrap() {
        DhcpOption::ClientData(cd) => cd,
        other => panic!("not CLIENT_DATA: {other:?}"),
    }
}

fn server(n: u8) -> std::net::SocketAddr {
    std::net::SocketAddr::new(format!("2001:db8:ffff::{n}").parse().unwrap(), 547)
}

fn answer(n: u8, answer: Answer) -> ServerAnswer {
    ServerAnswer {
        server: server(n),
        server_duid: Some(vec![0, 1, n].into()),
        link: a(LINK),
        answer,
        attempts: 1,
        elapsed: Duration::from_millis(3),
    }
}

fn bound(n: u8, duid: &[u8], prefix: &str, len: u8) -> ServerAnswer {
    answer(
        n,
        Answer::Bound(Box::new(ClientAnswer {
            data: client_data(duid, prefix, len),
            observed: crate::cache::from_wire::observed_leases(&client_data(duid, prefix, len)),
            top_relay_data: None,
            top_base_time: None,
            srsn: None,
            link: a(LINK),
            server_duid: vec![0, 1, n].into(),
            server: server(n),
            received: Instant::now(),
        })),
    )
}

fn status(n: u8) -> ServerAnswer {
    answer(
        n,
        Answer::Status {
            code: StatusCode::NOT_CONFIGURED,
            message: "Address not in a pool".into(),
        },
    )
}

fn outcome(answers: Vec<ServerAnswer>) -> QueryOutcome {
    QueryOutcome {
        query: Query::by_address(a("2001:db8:100::")),
        // `settle` reads the answers, not the requestor's summary of them.
        verdict: AnswerVerdict::Error,
        answers,
    }
}

fn doubt(reason: DoubtReason, holder: Option<&[u8]>) -> Doubt {
    Doubt {
        key: pd(),
        reason,
        holder: holder.map(|d| {
            Arc::new(ClientInfo {
                duid: d.into(),
                link: Link {
                    address: a(LINK),
                    interface: Some("sub0".into()),
                },
                relay: None,
            })
        }),
        claimant: Some(STRANGER.into()),
        link: a(LINK),
        interface: Some("sub0".into()),
        at: Timestamp::from_secs(1_800_000_000),
    }
}

const SENT: Timestamp = Timestamp::from_secs(1_800_000_010);
const NOW: Timestamp = Timestamp::from_secs(1_800_000_011);

fn run(d: &Doubt, answers: Vec<ServerAnswer>) -> Settled {
    let o = outcome(answers);
    settle(NOW, d, asked_address(&d.key), SENT, Ok(&o), |_| NOW)
}

fn observations(s: &Settled) -> Vec<&Observation> {
    s.inputs
        .iter()
        .map(|i| match i {
            CacheInput::Observe(o) => o,
            other => panic!("expected observations, got {other:?}"),
        })
        .collect()
}

#[test]
fn a_prefix_is_asked_about_by_its_first_address() {
    assert_eq!(asked_address(&pd()), a("2001:db8:100::"));
    let addr = LeaseKey::Address(a("2001:db8:1::7"));
    assert_eq!(asked_address(&addr), a("2001:db8:1::7"));
}

#[test]
fn the_holder_named_by_the_server_is_held_and_its_answer_fed_to_the_cache() {
    let d = doubt(DoubtReason::ZeroLifetimeOtherClient, Some(HOLDER));
    let s = run(&d, vec![bound(1, HOLDER, "2001:db8:100::", 56)]);
    assert_eq!(s.outcome, DoubtOutcome::Held);
    let obs = observations(&s);
    assert_eq!(obs.len(), 1);
    assert_eq!(&*obs[0].client_duid, HOLDER);
    assert_eq!(obs[0].source, Source::Leasequery);
    assert_eq!(obs[0].query_address, Some(a("2001:db8:100::")));
    assert_eq!(obs[0].link.address, a(LINK));
    assert_eq!(obs[0].link.interface.as_deref(), Some("sub0"));
    assert_eq!(s.named.as_deref(), Some(HOLDER));
}

#[test]
fn with_no_holder_any_client_named_is_held() {
    let d = doubt(DoubtReason::Inherited, None);
    let s = run(&d, vec![bound(1, STRANGER, "2001:db8:100::", 56)]);
    assert_eq!(s.outcome, DoubtOutcome::Held);
    assert_eq!(observations(&s).len(), 1);
}

#[test]
fn another_client_named_by_the_server_is_a_move_fed_to_the_cache() {
    let d = doubt(DoubtReason::ReleaseOtherLink, Some(HOLDER));
    let s = run(&d, vec![bound(1, STRANGER, "2001:db8:100::", 56)]);
    assert_eq!(s.outcome, DoubtOutcome::Moved);
    assert_eq!(&*observations(&s)[0].client_duid, STRANGER);
    assert_eq!(s.named.as_deref(), Some(STRANGER));
}

#[test]
fn an_answer_about_another_lease_is_not_installed_on_doubt() {
    // The address asked about is inside a /48 someone holds: that is not an answer about the
    // doubted /56, and nothing is fed to the cache.
    let d = doubt(DoubtReason::Overlap, Some(HOLDER));
    let s = run(&d, vec![bound(1, STRANGER, "2001:db8:100::", 48)]);
    assert_eq!(s.outcome, DoubtOutcome::Unknown);
    assert!(s.inputs.is_empty());
}

#[test]
fn no_binding_from_every_server_is_gone_and_confirmed_with_the_sending_time() {
    for d in [
        doubt(DoubtReason::ZeroLifetimeOtherClient, Some(HOLDER)),
        // An inherited route's key: the same one input (the store/route side withdraws it).
        doubt(DoubtReason::Inherited, None),
    ] {
        let s = run(
            &d,
            vec![answer(1, Answer::NoBinding), answer(2, Answer::NoBinding)],
        );
        assert_eq!(s.outcome, DoubtOutcome::Gone);
        let [CacheInput::Confirm(c)] = &s.inputs[..] else {
            panic!("expected one confirmation, got {:?}", s.inputs)
        };
        assert_eq!(
            c,
            &Confirmation {
                key: pd(),
                reason: d.reason,
                server: Arc::new(ServerId {
                    duid: vec![0, 1, 1].into(),
                    address: a("2001:db8:ffff::1"),
                }),
                asked: SENT,
                arrival: NOW,
            }
        );
    }
}

#[test]
fn an_error_status_is_unknown_and_changes_nothing() {
    let d = doubt(DoubtReason::ZeroLifetimeOtherClient, Some(HOLDER));
    let s = run(&d, vec![status(1)]);
    assert_eq!((s.outcome, s.inputs.len()), (DoubtOutcome::Unknown, 0));
    // One server cannot say, the next says no binding (split pools under failover): the first
    // may hold it, so it is not gone.
    let s = run(&d, vec![status(1), answer(2, Answer::NoBinding)]);
    assert_eq!((s.outcome, s.inputs.len()), (DoubtOutcome::Unknown, 0));
    let s = run(&d, vec![answer(1, Answer::ClientLinks(vec![a(LINK)]))]);
    assert_eq!((s.outcome, s.inputs.len()), (DoubtOutcome::Unknown, 0));
}

#[test]
fn silence_is_no_answer_and_changes_nothing() {
    let d = doubt(DoubtReason::ReleaseOtherClient, Some(HOLDER));
    let s = run(&d, vec![answer(1, Answer::NoAnswer)]);
    assert_eq!((s.outcome, s.inputs.len()), (DoubtOutcome::NoAnswer, 0));
    let s = run(
        &d,
        vec![answer(1, Answer::NoAnswer), answer(2, Answer::NoBinding)],
    );
    assert_eq!((s.outcome, s.inputs.len()), (DoubtOutcome::NoAnswer, 0));
}

#[test]
fn refused_or_answered_by_the_negative_cache_is_not_asked() {
    let d = doubt(DoubtReason::Unicast, Some(HOLDER));
    let refused = QueryError::Refused(crate::requestor::RefuseReason::LinkRate);
    let s = settle(NOW, &d, asked_address(&d.key), SENT, Err(&refused), |_| NOW);
    assert_eq!((s.outcome, s.inputs.len()), (DoubtOutcome::NotAsked, 0));
    let s = settle(
        NOW,
        &d,
        asked_address(&d.key),
        SENT,
        Err(&QueryError::Busy),
        |_| NOW,
    );
    assert_eq!(s.outcome, DoubtOutcome::NotAsked);
    // A negative-cache hit: a verdict without any server's answer.
    let mut o = outcome(Vec::new());
    o.verdict = AnswerVerdict::NoBinding;
    let s = settle(NOW, &d, asked_address(&d.key), SENT, Ok(&o), |_| NOW);
    assert_eq!((s.outcome, s.inputs.len()), (DoubtOutcome::NotAsked, 0));
}

#[test]
fn one_question_per_key_in_flight_and_a_short_memory_after() {
    let t0 = Instant::now();
    let mut q = Questions::new(Duration::from_secs(30), 100);
    let other = LeaseKey::Address(a("2001:db8:1::9"));
    assert!(q.ask(t0, pd()));
    assert!(!q.ask(t0, pd()), "in flight: not asked twice");
    assert!(q.ask(t0, other), "another key is its own question");
    q.settled(t0 + Duration::from_secs(1), pd());
    assert_eq!(q.in_flight(), 1);
    assert!(!q.ask(t0 + Duration::from_secs(30), pd()), "remembered");
    assert!(
        q.ask(t0 + Duration::from_secs(31), pd()),
        "forgotten after 30 s"
    );
}

#[test]
fn the_memory_is_bounded_and_forgets_the_oldest_first() {
    let t0 = Instant::now();
    let mut q = Questions::new(Duration::from_secs(30), 2);
    let k = |n: u16| LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n));
    for n in 1..=3 {
        assert!(q.ask(t0, k(n)));
        q.settled(t0 + Duration::from_millis(u64::from(n)), k(n));
    }
    assert!(q.ask(t0 + Duration::from_secs(1), k(1)), "the oldest went");
    assert!(!q.ask(t0 + Duration::from_secs(1), k(2)));
    assert!(!q.ask(t0 + Duration::from_secs(1), k(3)));
}

#[test]
fn the_log_is_limited_per_second() {
    let mut l = LogLimit::default();
    let t = Timestamp::from_secs(1_800_000_000);
    assert_eq!((0..20).filter(|_| l.allow(t)).count(), 10);
    assert!(l.allow(Timestamp::from_secs(1_800_000_001)));
}
