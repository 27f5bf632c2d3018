//! RFC 5460 bulk leasequery requestor over TCP: a sans-IO core and its TCP shell.
//!
//! [`core`] holds one connection's protocol state (queries, REPLY → DATA* → DONE, timeouts);
//! [`tcp`] drives one connection per server with attempts and backoff, all servers in
//! parallel, streaming each binding out through a bounded channel as it arrives.

pub mod core;
