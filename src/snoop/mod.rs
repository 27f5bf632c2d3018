//! Snooping of relayed DHCPv6 traffic: what the servers told which subscriber.
//!
//! - [`capture`] copies DHCPv6 off the relay's server-facing interfaces (AF_PACKET + a kernel
//!   BPF filter from [`bpf`]; headers read by [`datagram`]);
//! - [`classify`] (pure) turns snooped RELAY-FORW / RELAY-REPL pairs into cache input;
//! - [`shell`] runs both and feeds the cache task;
//! - [`guard`] keeps subscribers from passing for this box (nftables ingress rule).
//!
//! Traffic from sources the cache does not know is noticed by [`crate::trigger`] (nftables +
//! NFLOG), a module of its own.
pub(crate) mod bpf;
pub mod capture;
pub mod classify;
pub mod datagram;
pub(crate) mod guard;
pub mod shell;
