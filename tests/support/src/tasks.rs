//! What a test needs to run the agent's tasks (`cache_task::spawn`, `snoop::shell::spawn`,
//! `requestor::udp::spawn`) without `lqagent run`: a supervisor and an admission. The agent
//! has no permissive admission — every observation passes the configured links' rules — so a
//! test gives it links whose rules admit the data it sends, as its configuration would.

use std::net::Ipv6Addr;
use std::sync::Arc;

use lqagent::admission::{Admission, LinkRule, OwnAddresses};
use lqagent::cache_task::DoubtSink;
use lqagent::prefix::Ipv6Prefix;
use lqagent::supervise::{Policy, Supervisor};

/// A supervisor nothing stops (the test's runtime ends its tasks), restarting at the
/// production pace.
pub fn supervisor() -> Supervisor {
    Supervisor::unstopped(Policy::default())
}

/// A configured link: its link-address, the interface its routes go on, and its
/// `subscriber_prefixes`; delegated prefixes from /32 to /128 are admitted.
pub fn link(link_address: Ipv6Addr, interface: &str, prefixes: &[Ipv6Prefix]) -> LinkRule {
    LinkRule {
        name: Arc::from(interface),
        interface: Arc::from(interface),
        link_address,
        interface_id: None,
        subscriber_prefixes: prefixes.to_vec(),
        delegated_length: (32, 128),
        ldra: false,
    }
}

/// The admission of `links`, with `servers` and `own` as the addresses no binding may take.
pub fn admission(links: Vec<LinkRule>, servers: &[Ipv6Addr], own: &[Ipv6Addr]) -> Arc<Admission> {
    Arc::new(Admission::new(
        links,
        servers.iter().copied(),
        Arc::new(OwnAddresses::new(own.iter().copied())),
    ))
}

/// One link, `link_address` on `interface`, whose subscribers may hold anything in the
/// documentation prefix 2001:db8::/32 (where every test's addresses are).
pub fn admit_documentation(link_address: Ipv6Addr, interface: &str) -> Arc<Admission> {
    let all: Ipv6Prefix = "2001:db8::/32".parse().expect("a prefix");
    admission(vec![link(link_address, interface, &[all])], &[], &[])
}

/// A doubt sink nobody reads (tests that ask no server): a doubt is counted `not_asked`.
pub fn no_confirmer() -> DoubtSink {
    DoubtSink::new(1).0
}
