//! RFC 5007 over UDP: one LEASEQUERY in, one LEASEQUERY-REPLY out (faults permitting).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::answer::{Decision, Profile, Transport, decide_as};
use super::codec::{self, ReplyBody, Shape};
use super::faults::Faults;
use super::{QueryRecord, Shared};

/// How long a reordered answer waits for a later one to overtake it.
const REORDER_HOLD: Duration = Duration::from_millis(300);

type Held = Arc<Mutex<Option<(Vec<u8>, SocketAddr)>>>;

pub(super) async fn serve(
    shared: Arc<Shared>,
    sock: std::net::UdpSocket,
    alt: Option<std::net::UdpSocket>,
) -> std::io::Result<()> {
    let sock = Arc::new(UdpSocket::from_std(sock)?);
    let alt = match alt {
        Some(a) => Some(Arc::new(UdpSocket::from_std(a)?)),
        None => None,
    };
    let held: Held = Arc::new(Mutex::new(None));
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = sock.recv_from(&mut buf).await?;
        let c = &shared.counters;
        if !shared.config.answers(peer.ip()) {
            // Kea 3: an unlisted requester gets nothing, not even NotAllowed.
            c.udp_discarded.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let incoming = match codec::parse_leasequery(&buf[..n]) {
            Ok(i) => i,
            Err(_) => {
                c.udp_discarded.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let nth = c.udp_queries.fetch_add(1, Ordering::Relaxed) + 1;
        let (qtype, link) = incoming
            .query
            .as_ref()
            .map(|q| (q.query_type, q.link))
            .unwrap_or((0, std::net::Ipv6Addr::UNSPECIFIED));
        shared.record(QueryRecord {
            transport: Transport::Udp,
            peer,
            xid: incoming.xid,
            query_type: qtype,
            link,
        });
        let faults = shared.faults_for(nth, qtype, Transport::Udp);
        if faults.drop {
            continue;
        }
        let table = shared.table();
        let decision = match (&incoming.query, faults.status) {
            (_, Some(code)) => Decision::Status(code, "injected status"),
            (Err(why), None) => Decision::Status(super::answer::STATUS_MALFORMED_QUERY, why),
            (Ok(q), None) => decide_as(shared.config.profile, &table, q, Transport::Udp),
        };
        let picks = decision.picks();
        let body = match (&decision, picks.first()) {
            (Decision::Status(code, msg), _) => ReplyBody::Status(*code, msg),
            (Decision::ClientLinks(links), _) => ReplyBody::ClientLinks(links),
            (_, Some(p)) => ReplyBody::Client(*p),
            (_, None) => ReplyBody::Empty,
        };
        let shape = Shape {
            query_type: qtype,
            ..Shape::now(shared.config.profile, Transport::Udp)
        };
        let oro = incoming
            .query
            .as_ref()
            .map(|q| q.oro.clone())
            .unwrap_or_default();
        let mut bytes = codec::emit_reply_as(
            incoming.xid,
            &shared.config.server_duid,
            &incoming.requestor,
            &table,
            body,
            &oro,
            shared.next_srsn(),
            &shape,
        );
        if let Some(c) = faults.corrupt {
            c.apply(&mut bytes);
        }
        let mut dest = peer;
        if shared.config.profile == Profile::Isc {
            // ISC dhcpd 4.4 answers to the client port whatever port the query came from.
            dest.set_port(546);
        }
        if let Some(p) = faults.reply_port {
            dest.set_port(p);
        }
        let out = if faults.wrong_source {
            alt.clone().unwrap_or_else(|| sock.clone())
        } else {
            sock.clone()
        };
        tokio::spawn(deliver(
            shared.clone(),
            out,
            sock.clone(),
            held.clone(),
            bytes,
            dest,
            faults,
        ));
    }
}

async fn deliver(
    shared: Arc<Shared>,
    out: Arc<UdpSocket>,
    main: Arc<UdpSocket>,
    held: Held,
    bytes: Vec<u8>,
    dest: SocketAddr,
    faults: Faults,
) {
    if faults.delay_ms > 0 {
        tokio::time::sleep(faults.delay()).await;
    }
    let sent = &shared.counters.udp_answers_sent;
    if faults.reorder {
        let previous = held.lock().expect("held lock").replace((bytes, dest));
        if let Some((b, d)) = previous {
            let _ = main.send_to(&b, d).await;
            sent.fetch_add(1, Ordering::Relaxed);
        }
        let held = held.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REORDER_HOLD).await;
            let taken = held.lock().expect("held lock").take();
            if let Some((b, d)) = taken {
                let _ = out.send_to(&b, d).await;
                shared
                    .counters
                    .udp_answers_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
        });
        return;
    }
    for _ in 0..=faults.duplicate {
        if out.send_to(&bytes, dest).await.is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    let taken = held.lock().expect("held lock").take();
    if let Some((b, d)) = taken {
        if main.send_to(&b, d).await.is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}
