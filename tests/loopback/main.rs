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
