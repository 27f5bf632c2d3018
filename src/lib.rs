//! lqagent — a DHCPv6 leasequery requestor and binding-cache agent for access concentrators.
//!
//! The agent runs beside a DHCPv6 relay on a CMTS or BNG. It learns which subscriber holds which
//! IPv6 address and delegated prefix (by snooping relayed replies, by asking servers with RFC 5007
//! leasequery when unknown traffic shows up, and by RFC 5460 bulk leasequery after a reboot),
//! merges what several servers say into one cache, and keeps the kernel's routes in step with it.
//!
//! Architecture: protocol logic lives in pure, sans-IO cores that are fed bytes and time and
//! return actions; thin tokio shells own the sockets. Module map (each one sentence):
//!
//! - [`wire`] turns bytes into values and back.
//! - [`requestor`] decides what to ask and when (UDP leasequery).
//! - [`bulk`] does the same over TCP (bulk leasequery).
//! - [`admission`] decides what may be believed: every binding passes it before the cache.
//! - [`cache`] decides what is true.
//! - [`persist`] keeps the cache's bindings across restarts (the state file).
//! - [`kernel`] makes the kernel agree with the cache.
//! - [`snoop`] notices relayed DHCPv6 traffic.
//! - [`trigger`] notices traffic from sources the cache does not know (nftables + NFLOG).
//! - [`control`] answers the operator.
//! - [`config`] says what the operator wants.
//! - [`metrics`] says what happened.
//! - [`daemon`] connects them.
//! - [`pcap`] reads and writes capture files (`lqagent decode --pcap`, tests).
//! - [`time`] is the one agent clock (and the retry backoff) every module uses.
//! - [`logging`] sets up how the agent speaks; [`notify`] tells systemd how it is.

pub mod admission;
pub mod bulk;
pub mod cache;
pub mod config;
pub mod control;
pub mod daemon;
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pcap;
pub mod persist;
pub mod prefix;
pub mod requestor;
pub mod snoop;
pub mod time;
pub mod trigger;
pub mod wire;
