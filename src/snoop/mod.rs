//! Snooping of relayed DHCPv6 traffic and detection of unknown subscriber sources.
//!
//! - [`classify`] (pure) turns snooped RELAY-FORW / RELAY-REPL pairs into cache input.
pub mod classify;
