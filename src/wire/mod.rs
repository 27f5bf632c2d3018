//! DHCPv6 wire format (RFC 8415, 5007, 5460, 7653): pure decode and encode, no I/O.
