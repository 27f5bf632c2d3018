//! The control socket's [`Responder`] over the live agent: bindings from the cache, route state
//! from the route task, stats from the metrics registry, and `clear binding` as an operator
//! withdrawal through the cache task (whose change stream then withdraws the route).

use std::net::Ipv6Addr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::cache::{AgentClock, IaType, Lease, LeaseKey, WithdrawReason, Withdrawal};
use crate::cache_task::{CacheHandle, CacheInput};
use crate::control::{
    BindingFilter, BindingView, Reply, Request, Responder, Response, ServerView, StatsView,
};
use crate::kernel::reconcile::{RouteCommand, RouteState};
use crate::metrics::Metrics;
use crate::prefix::Ipv6Prefix;
use crate::time::{Duration, SystemTime};

/// How long `clear binding` waits to see the cache drop what it named.
const CLEAR_WAIT: Duration = Duration::from_secs(2);

/// A configured link as the control socket names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ControlLink {
    pub name: String,
    pub address: Ipv6Addr,
    /// The link's configured interface: a snooped binding's route points out of it.
    pub interface: String,
}

/// The daemon's answers to `lqagent show|clear`.
#[derive(Debug)]
pub(crate) struct LiveResponder {
    pub cache: CacheHandle,
    pub routes: mpsc::Sender<RouteCommand>,
    pub metrics: Metrics,
    pub clock: AgentClock,
    /// The configured links.
    pub links: Arc<[ControlLink]>,
    pub started: crate::time::TokioInstant,
    /// `routes.dry_run`: routes are only logged.
    pub dry_run: bool,
}

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

fn unix(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// Bindings per page of a streamed `show bindings`: one route-state question and at most this
/// many views in memory at a time.
const PAGE: usize = 1024;

/// How the operator sees the lease `k`/`l`; `links` names its link and gives the interface of a
/// lease that has none of its own.
fn view(
    now: crate::cache::Timestamp,
    links: &[ControlLink],
    k: &LeaseKey,
    l: &Lease,
    route: &str,
) -> BindingView {
    let link = links.iter().find(|c| c.address == l.client.link.address);
    BindingView {
        network: k.network(),
        ia_type: match l.ia {
            IaType::Na => "na",
            IaType::Ta => "ta",
            IaType::Pd => "pd",
        }
        .to_string(),
        link: link.map(|c| c.name.clone()),
        // The lease's own interface when it has one (Interface-Id mapping), else the link's
        // configured one, which is where its route points.
        interface: l
            .client
            .link
            .interface
            .as_deref()
            .map(str::to_string)
            .or_else(|| link.map(|c| c.interface.clone())),
        client_duid: hex::encode(&l.client.duid[..]),
        iaid: l.iaid,
        next_hop: l.next_hop,
        preferred_secs: l.preferred_until.remaining_secs(now),
        valid_secs: l.valid_until.remaining_secs(now),
        source: l.source.label().to_string(),
        route: route.to_string(),
        access_port: l
            .client
            .relay
            .as_ref()
            .and_then(|r| r.access.as_deref())
            .map(access_port_text),
    }
}

/// An LDRA's access port as the operator reads it: `port-3`, `port-3 remote-id 0000118b6d`.
fn access_port_text(a: &crate::cache::AccessPort) -> String {
    let mut out = a
        .interface_id
        .as_deref()
        .map_or_else(|| "-".to_string(), crate::config::interface_id_text);
    if let Some(r) = &a.remote_id {
        out.push_str(" remote-id ");
        out.push_str(&hex::encode(r));
    }
    out
}

async fn route_states(
    routes: &mpsc::Sender<RouteCommand>,
    dsts: Vec<Ipv6Prefix>,
) -> Option<Vec<RouteState>> {
    let (tx, rx) = oneshot::channel();
    routes.send(RouteCommand::States(dsts, tx)).await.ok()?;
    rx.await.ok()
}

impl LiveResponder {
    /// The keys of the leases `filter` selects, sorted by network. Uses the by-client or
    /// by-link index when the filter names one; otherwise one pass over the store. Only keys are
    /// kept (tens of bytes each), never every lease's view.
    fn select(&self, filter: &BindingFilter) -> Result<Vec<LeaseKey>, String> {
        let duid = filter.duid()?;
        let link_address = match &filter.link {
            None => None,
            Some(name) => match self.links.iter().find(|l| &l.name == name) {
                Some(l) => Some(l.address),
                None => return Err(format!("no link named {name:?} in the configuration")),
            },
        };
        let store = self.cache.store();
        let now = self.clock.now();
        let mut out: Vec<LeaseKey> = Vec::new();
        let mut take = |k: &LeaseKey, l: &Lease| {
            if !filter.within_matches(&k.network())
                || link_address.is_some_and(|a| l.client.link.address != a)
            {
                return;
            }
            if (filter.interface.is_none() && filter.client_duid.is_none())
                || filter.matches(&view(now, &self.links, k, l, ""))
            {
                out.push(*k);
            }
        };
        match (&duid, link_address) {
            (Some(d), _) => {
                let bytes = hex::decode(d).map_err(|e| format!("client_duid: {e}"))?;
                for (k, l) in store.by_client(&bytes) {
                    take(&k, &l);
                }
            }
            (None, Some(a)) => {
                for (k, l) in store.by_link(a) {
                    take(&k, &l);
                }
            }
            (None, None) => store.for_each(|k, l| take(k, l)),
        }
        out.sort_by_key(LeaseKey::network);
        Ok(out)
    }

    /// Stream the selected bindings, a page at a time, each page's route states asked at once.
    fn show_bindings(&self, filter: BindingFilter) -> Reply {
        let keys = match self.select(&filter) {
            Ok(k) => k,
            Err(e) => return error(e).into(),
        };
        let (tx, rx) = mpsc::channel(PAGE);
        let (store, routes, links, clock, dry_run) = (
            self.cache.store().clone(),
            self.routes.clone(),
            self.links.clone(),
            self.clock,
            self.dry_run,
        );
        tokio::spawn(async move {
            for page in keys.chunks(PAGE) {
                let now = clock.now();
                // A lease gone since the selection is skipped.
                let leases: Vec<(LeaseKey, Lease)> = page
                    .iter()
                    .filter_map(|k| store.get(k).map(|l| (*k, l)))
                    .collect();
                let dsts = leases.iter().map(|(k, _)| k.network()).collect();
                let states = route_states(&routes, dsts).await;
                for (i, (k, l)) in leases.iter().enumerate() {
                    let route = match states.as_ref().and_then(|s| s.get(i)) {
                        Some(RouteState::Pending) if dry_run => "dry_run",
                        Some(s) => s.label(),
                        None => "unknown",
                    };
                    if tx.send(view(now, &links, k, l, route)).await.is_err() {
                        return; // the connection went away
                    }
                }
            }
        });
        Reply::Bindings(rx)
    }

    async fn clear(&self, filter: BindingFilter) -> Response {
        if filter.is_empty() {
            return error(
                "clear needs a criterion (client_duid, link, interface or within); \
                 everything is within \"::/0\"",
            );
        }
        let keys: Vec<LeaseKey> = match self.select(&filter) {
            Ok(k) => k,
            Err(e) => return error(e),
        };
        if keys.is_empty() {
            return Response::Cleared {
                removed: Vec::new(),
            };
        }
        let store = self.cache.store();
        let w = Withdrawal {
            link: None,
            iaids: Vec::new(),
            keys: keys.clone(),
            client_duid: None,
            reason: WithdrawReason::Operator,
            arrival: self.clock.now(),
        };
        if let Err(e) = self.cache.send(CacheInput::Withdraw(w)).await {
            return error(format!("cannot clear: {e}"));
        }
        let deadline = crate::time::TokioInstant::now() + CLEAR_WAIT;
        while keys.iter().any(|k| store.get(k).is_some()) {
            if crate::time::TokioInstant::now() >= deadline {
                return error("the cache did not drop the bindings in time");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let removed: Vec<Ipv6Prefix> = keys.iter().map(LeaseKey::network).collect();
        tracing::info!(
            ?filter,
            removed = removed.len(),
            networks = ?removed,
            "operator cleared bindings"
        );
        Response::Cleared { removed }
    }

    fn servers(&self) -> Response {
        let servers = self
            .metrics
            .servers
            .snapshot()
            .into_iter()
            .map(|s| ServerView {
                name: s.name,
                address: s.address,
                up: s.up,
                last_answer_unix: unix(s.last_answer),
                last_success_unix: unix(s.last_success),
                last_rtt_ms: s.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
                consecutive_failures: s.consecutive_failures,
                failures: s.failures,
                exchanges: s.exchanges,
                bulk: s.bulk.label().to_string(),
                bulk_at_unix: unix(s.bulk_at),
            })
            .collect();
        Response::Servers { servers }
    }
}

impl Responder for LiveResponder {
    async fn handle(&self, request: Request) -> Reply {
        match request {
            Request::ShowBindings(filter) => self.show_bindings(filter),
            Request::ShowStats => {
                let text = self.metrics.encode();
                Response::Stats {
                    stats: StatsView::from_exposition(self.started.elapsed().as_secs(), &text),
                }
                .into()
            }
            Request::ShowServers => self.servers().into(),
            Request::ClearBindings(filter) => self.clear(filter).await.into(),
            Request::ClearBinding { target } => self
                .clear(BindingFilter {
                    within: Some(target),
                    ..BindingFilter::default()
                })
                .await
                .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::binding::snooped;
    use crate::cache::store::CacheConfig;
    use crate::cache::{BindingStore, ObservedLease};
    use crate::cache_task::{CacheTaskConfig, DoubtSink, spawn, testing};

    const CABLE1: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
    const CABLE2: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1);

    fn lease(key: &str) -> ObservedLease {
        let (key, ia) = if key.contains('/') {
            (LeaseKey::Prefix(key.parse().unwrap()), IaType::Pd)
        } else {
            (LeaseKey::Address(key.parse().unwrap()), IaType::Na)
        };
        ObservedLease {
            key,
            ia,
            iaid: 1,
            preferred: 1800,
            valid: 3600,
        }
    }

    /// A live responder over a real cache task, with a route task that says "installed".
    async fn responder() -> LiveResponder {
        let clock = AgentClock::new();
        let store = Arc::new(BindingStore::new(CacheConfig::default()));
        let (_stop, sup) = testing::supervisor();
        let (cache, mut changes, _join) = spawn(
            store.clone(),
            clock,
            None,
            CacheTaskConfig::default(),
            testing::admission_of(&[(CABLE1, "eth-c1"), (CABLE2, "eth-c2")]),
            DoubtSink::new(1).0,
            &sup,
        );
        tokio::spawn(async move { while changes.recv().await.is_some() {} });
        let (routes, mut rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                if let RouteCommand::States(dsts, reply) = c {
                    let _ = reply.send(vec![RouteState::Installed; dsts.len()]);
                }
            }
        });
        let a = vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 0xa];
        let obs = [
            snooped(
                a.clone(),
                CABLE1,
                vec![
                    lease("2001:db8:100::5"),
                    lease("2001:db8:100:100::/56"),
                    lease("2001:db8:100:200::/56"),
                ],
                clock.now(),
            ),
            snooped(
                vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 0xb],
                CABLE2,
                vec![lease("2001:db8:200::7"), lease("2001:db8:f100:100::/56")],
                clock.now(),
            ),
        ];
        for o in obs {
            cache.observe(o).await.unwrap();
        }
        let bound = crate::time::TokioInstant::now() + Duration::from_secs(5);
        while store.len() < 5 {
            assert!(
                crate::time::TokioInstant::now() < bound,
                "cache took the leases"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        LiveResponder {
            cache,
            routes,
            metrics: Metrics::new(),
            clock,
            links: Arc::from(vec![
                ControlLink {
                    name: "cable1".into(),
                    address: CABLE1,
                    interface: "eth-c1".into(),
                },
                ControlLink {
                    name: "cable2".into(),
                    address: CABLE2,
                    interface: "eth-c2".into(),
                },
            ]),
            started: crate::time::TokioInstant::now(),
            dry_run: false,
        }
    }

    async fn show(r: &LiveResponder, f: BindingFilter) -> Vec<String> {
        match r.handle(Request::ShowBindings(f)).await.collect().await {
            Response::Bindings { bindings } => {
                bindings.iter().map(|b| b.network.to_string()).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    fn within(p: &str) -> BindingFilter {
        BindingFilter {
            within: Some(p.parse().unwrap()),
            ..BindingFilter::default()
        }
    }

    #[tokio::test]
    async fn snooped_bindings_show_their_links_interface() {
        let r = responder().await;
        let Response::Bindings { bindings } = r.handle(Request::show_all()).await.collect().await
        else {
            panic!()
        };
        assert_eq!(bindings.len(), 5);
        for b in &bindings {
            let want = if b.link.as_deref() == Some("cable1") {
                "eth-c1"
            } else {
                "eth-c2"
            };
            assert_eq!(b.interface.as_deref(), Some(want), "{b:?}");
            assert_eq!(b.route, "installed");
        }
    }

    #[tokio::test]
    async fn show_filters_by_duid_link_interface_and_prefix() {
        let r = responder().await;
        let duid = BindingFilter {
            client_duid: Some("00:03:00:01:02:00:00:00:00:0b".into()),
            ..BindingFilter::default()
        };
        assert_eq!(
            show(&r, duid).await,
            ["2001:db8:200::7/128", "2001:db8:f100:100::/56"]
        );
        let link = BindingFilter {
            link: Some("cable1".into()),
            ..BindingFilter::default()
        };
        assert_eq!(show(&r, link).await.len(), 3);
        let interface = BindingFilter {
            interface: Some("eth-c2".into()),
            ..BindingFilter::default()
        };
        assert_eq!(show(&r, interface).await.len(), 2);
        assert_eq!(
            show(&r, within("2001:db8:f100::/40")).await,
            ["2001:db8:f100:100::/56"]
        );
        assert_eq!(
            show(&r, within("2001:db8:100:1ff::1/128")).await,
            ["2001:db8:100:100::/56"],
            "an address selects the delegated prefix holding it"
        );
        let unknown = BindingFilter {
            link: Some("nope".into()),
            ..BindingFilter::default()
        };
        assert!(matches!(
            r.handle(Request::ShowBindings(unknown)).await.collect().await,
            Response::Error { message } if message.contains("no link named")
        ));
    }

    #[tokio::test]
    async fn clearing_a_48_removes_every_lease_it_covers_and_only_those() {
        let r = responder().await;
        let Response::Cleared { removed } = r
            .handle(Request::ClearBinding {
                target: "2001:db8:100::/48".parse().unwrap(),
            })
            .await
            .collect()
            .await
        else {
            panic!()
        };
        let mut removed: Vec<String> = removed.iter().map(|p| p.to_string()).collect();
        removed.sort();
        assert_eq!(
            removed,
            [
                "2001:db8:100:100::/56",
                "2001:db8:100:200::/56",
                "2001:db8:100::5/128"
            ]
        );
        assert_eq!(
            show(&r, BindingFilter::default()).await,
            ["2001:db8:200::7/128", "2001:db8:f100:100::/56"]
        );
        // By client: the rest of client b.
        let by_duid = BindingFilter {
            client_duid: Some("0003000102000000000b".into()),
            ..BindingFilter::default()
        };
        let Response::Cleared { removed } = r
            .handle(Request::ClearBindings(by_duid))
            .await
            .collect()
            .await
        else {
            panic!()
        };
        assert_eq!(removed.len(), 2);
        assert_eq!(r.cache.store().len(), 0);
        // An empty filter is refused, not "everything".
        assert!(matches!(
            r.handle(Request::ClearBindings(BindingFilter::default()))
                .await
                .collect()
                .await,
            Response::Error { .. }
        ));
    }

    #[tokio::test]
    async fn servers_report_their_health() {
        let r = responder().await;
        r.metrics
            .servers
            .configure([("dhcp-a".to_string(), "2001:db8::a".parse().unwrap())]);
        r.metrics.servers.record(
            "dhcp-a",
            crate::metrics::servers::Exchange::NoAnswer,
            Duration::ZERO,
            SystemTime::now(),
        );
        let Response::Servers { servers } = r.handle(Request::ShowServers).await.collect().await
        else {
            panic!()
        };
        assert_eq!(servers.len(), 1);
        assert!(!servers[0].up);
        assert_eq!(servers[0].consecutive_failures, 1);
        assert_eq!(servers[0].bulk, "never");
        assert_eq!(servers[0].last_success_unix, None);
    }
}
