//! Snooping of relayed DHCPv6 traffic and detection of unknown subscriber sources.
