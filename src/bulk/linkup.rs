//! Link-up triggers: when a subscriber interface comes up, ask every server for that link's
//! bindings (RFC 5460 query by link-address) — that link only.
//!
//! "Up" is operational: IFF_RUNNING (carrier), not just IFF_UP. [`LinkUpTracker`] is the pure
//! part: fed each interface's state as notifications arrive, it says which link-address just
//! came up. An interface seen for the first time counts as already up (start-up recovery asked
//! for every link), so only a down → up transition triggers. [`watch`] is the shell: it reads
//! link notifications from rtnetlink and runs a recovery per transition.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};

use super::BulkConfig;
use super::recovery::{BindingSink, RecoveryPlan, recover};
use super::stats::BulkStats;
use crate::kernel::KernelError;
use crate::kernel::watch::{LinkEvent, LinkWatch};

/// Which subscriber links came up.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkUpTracker {
    /// Interface name → the link-address of its subscriber link.
    links: HashMap<String, Ipv6Addr>,
    /// Last running state seen per interface name.
    running: HashMap<String, bool>,
}

impl LinkUpTracker {
    pub(crate) fn new(interfaces: impl IntoIterator<Item = (String, Ipv6Addr)>) -> Self {
        LinkUpTracker {
            links: interfaces.into_iter().collect(),
            running: HashMap::new(),
        }
    }

    /// Record that `name` is (not) running; the link-address when it just came up.
    pub(crate) fn link_state(&mut self, name: &str, running: bool) -> Option<Ipv6Addr> {
        let link = *self.links.get(name)?;
        let was = self
            .running
            .insert(name.to_string(), running)
            .unwrap_or(true);
        (running && !was).then_some(link)
    }
}

/// (name, running) from a link notification; `None` for other messages.
pub(crate) fn link_running(msg: &RouteNetlinkMessage) -> Option<(String, bool)> {
    let RouteNetlinkMessage::NewLink(m) = msg else {
        return None;
    };
    let name = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    let f = m.header.flags;
    Some((
        name,
        f.contains(LinkFlags::Up) && f.contains(LinkFlags::Running),
    ))
}

/// Follow link notifications until the socket closes; on each subscriber link coming up,
/// run a by-link recovery for it (in its own task, so a slow server does not delay the next
/// link). Must run inside a tokio runtime, in the agent's namespace.
pub async fn watch<S>(
    plan: RecoveryPlan,
    interfaces: Vec<(String, Ipv6Addr)>,
    cfg: Arc<BulkConfig>,
    stats: Arc<BulkStats>,
    sink: S,
) -> Result<(), KernelError>
where
    S: BindingSink + Clone + 'static,
{
    let mut w = LinkWatch::open(1 << 20)?;
    let mut tracker = LinkUpTracker::new(interfaces);
    while let Some(ev) = w.next().await {
        let LinkEvent::Changed(msg) = ev else {
            continue;
        };
        let Some((name, running)) = link_running(&msg) else {
            continue;
        };
        if let Some(link) = tracker.link_state(&name, running) {
            tracing::info!(interface = %name, %link, "subscriber link up: bulk leasequery for it");
            let queries = plan.link_up(link);
            tokio::spawn(recover(queries, cfg.clone(), stats.clone(), sink.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_down_to_up_of_a_subscriber_link_triggers() {
        let l1: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let mut t = LinkUpTracker::new([("sub1".to_string(), l1)]);
        assert_eq!(
            t.link_state("sub1", true),
            None,
            "first sight: start-up covered it"
        );
        assert_eq!(t.link_state("sub1", true), None);
        assert_eq!(t.link_state("sub1", false), None);
        assert_eq!(t.link_state("sub1", false), None);
        assert_eq!(t.link_state("sub1", true), Some(l1));
        assert_eq!(t.link_state("sub1", true), None);
        assert_eq!(t.link_state("eth0", false), None);
        assert_eq!(t.link_state("eth0", true), None, "not a subscriber link");
        let mut t = LinkUpTracker::new([("sub1".to_string(), l1)]);
        assert_eq!(t.link_state("sub1", false), None);
        assert_eq!(
            t.link_state("sub1", true),
            Some(l1),
            "down at start, then up"
        );
    }
}
