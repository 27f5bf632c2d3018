//! A small Lightweight DHCPv6 Relay Agent (RFC 6221) for tests: what an access node in front
//! of a BNG does, in a namespace of its own between a real client and the relay.
//!
//! It listens on UDP 547 in its namespace. A client message arriving on the `down` interface
//! (dhclient's multicast to All_DHCP_Relay_Agents_and_Servers) is wrapped in a RELAY-FORW with
//! link-address `::`, peer-address = the client's source address and Interface-Id = the access
//! port (RFC 6221 §6.1), and multicast on the `up` interface to the relay (dhcrelay), which adds
//! its own level. A RELAY-REPL arriving from the relay whose Interface-Id names this port is
//! unwrapped and its message sent to the peer-address, port 546, on `down` (§6.2). Anything
//! else is ignored. The thread stops when the [`Ldra`] is dropped.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use lqagent::wire::{DhcpOption, Message, MessageType, RelayMessage};

use super::netns::NetNs;

const ALL_RELAYS_AND_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// A running LDRA; stops on drop.
#[derive(Debug)]
pub struct Ldra {
    stop: Arc<AtomicBool>,
    /// Messages wrapped up / unwrapped down so far.
    pub relayed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ldra {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The index of `dev` in `ns`.
pub fn ifindex(ns: &NetNs, dev: &str) -> u32 {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{dev}/ifindex")]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("ifindex of {dev}: {text:?}"))
}

impl Ldra {
    /// Start an LDRA in `ns` between `down` (the client side) and `up` (the relay side), naming
    /// the access port `port` in the Interface-Id it adds.
    pub fn start(ns: &NetNs, down: &str, up: &str, port: &str) -> Ldra {
        let (down_idx, up_idx) = (ifindex(ns, down), ifindex(ns, up));
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicU64::new(0));
        let port = port.as_bytes().to_vec();
        let (st, count) = (stop.clone(), relayed.clone());
        // The socket is made inside the namespace; the loop then runs on in that thread.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn_in(move || {
            let s = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 547, 0, 0))
                .expect("LDRA binds :547");
            s.join_multicast_v6(&ALL_RELAYS_AND_SERVERS, down_idx)
                .expect("join ff02::1:2 on the client side");
            s.set_multicast_loop_v6(false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = vec![0u8; 65_536];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, SocketAddr::V6(from))) = s.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(msg) = Message::parse(&buf[..n]) else {
                    continue;
                };
                match msg {
                    Message::Client(c) if from.scope_id() == down_idx => {
                        if matches!(
                            c.msg_type,
                            MessageType::ADVERTISE | MessageType::REPLY | MessageType::RECONFIGURE
                        ) {
                            continue;
                        }
                        let mut r = RelayMessage::new(
                            MessageType::RELAY_FORW,
                            0,
                            Ipv6Addr::UNSPECIFIED,
                            *from.ip(),
                        );
                        r.options.push(DhcpOption::InterfaceId(port.clone()));
                        r.options
                            .push(DhcpOption::RelayMsg(Box::new(Message::Client(c))));
                        let out = Message::Relay(r).to_vec().expect("encode RELAY-FORW");
                        let to = SocketAddrV6::new(ALL_RELAYS_AND_SERVERS, 547, 0, up_idx);
                        if s.send_to(&out, to).is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Message::Relay(r)
                        if r.msg_type == MessageType::RELAY_REPL
                            && from.scope_id() == up_idx
                            && r.options.interface_id() == Some(&port[..]) =>
                    {
                        let Some(inner) = r.options.relay_msg() else {
                            continue;
                        };
                        let Ok(out) = inner.to_vec() else {
                            continue;
                        };
                        let to = SocketAddrV6::new(r.peer_address, 546, 0, down_idx);
                        if s.send_to(&out, to).is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the LDRA to bind");
        Ldra {
            stop,
            relayed,
            thread: Some(thread),
        }
    }
}
