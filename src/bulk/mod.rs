//! RFC 5460 bulk leasequery requestor over TCP: a sans-IO core and its TCP shell.
