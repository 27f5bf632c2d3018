//! RFC 5007 leasequery requestor: a sans-IO core deciding what to ask and when, and its UDP shell.
