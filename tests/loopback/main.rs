//! Integration tests over real sockets on loopback, no root needed for most: the requestor
//! against the reference server with faults, bulk leasequery over TCP, the reference server
//! itself, on-demand failover, /metrics, the control socket and the log sink.

mod bulk_tcp;
mod confirm;
mod control_socket;
mod kea_replay;
mod log_sink;
mod lqrefserver;
mod metrics_http;
mod ondemand_failover;
mod requestor_faults;

use std::net::SocketAddr;
use std::time::Duration;

use lqagent::requestor::udp::{self, RequestorHandle, UdpConfig};
use lqagent::requestor::{Policy, RequestorConfig, RetransmitParams};

/// A requestor on `[::1]` (a free port) asking `servers` in failover order as `duid`, quick to
/// give up (100 ms doubling to 200 ms, two tries) and without rate limits: what the on-demand and
/// confirmer tests ask through, so a silent server costs them well under a second.
async fn quick_requestor(servers: &[SocketAddr], duid: &[u8]) -> RequestorHandle {
    let (h, _task) = udp::spawn(
        RequestorConfig {
            servers: servers.to_vec(),
            policy: Policy::Failover,
            duid: duid.into(),
            retransmit: RetransmitParams {
                irt: Duration::from_millis(100),
                mrt: Duration::from_millis(200),
                mrc: 2,
                mrd: None,
            },
            global_rate: None,
            link_rate: None,
            ..RequestorConfig::default()
        },
        UdpConfig {
            bind: "[::1]:0".parse().unwrap(),
            ..UdpConfig::default()
        },
        &support::tasks::supervisor(),
    )
    .await
    .unwrap();
    h
}
