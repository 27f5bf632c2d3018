//! The control socket's [`Responder`] over the live agent: bindings from the cache, route state
//! from the route task, stats from the metrics registry, and `clear binding` as an operator
//! withdrawal through the cache task (whose change stream then withdraws the route).

use std::net::Ipv6Addr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::cache::task::{CacheHandle, CacheInput};
use crate::cache::{AgentClock, IaType, Lease, LeaseKey, WithdrawReason, Withdrawal};
use crate::control::{BindingView, Request, Responder, Response, StatsView};
use crate::kernel::reconcile::{RouteCommand, RouteState};
use crate::metrics::Metrics;
use crate::prefix::Ipv6Prefix;

/// How long `clear binding` waits to see the cache drop what it named.
const CLEAR_WAIT: Duration = Duration::from_secs(2);

/// The daemon's answers to `lqagent show|clear`.
#[derive(Debug)]
pub struct LiveResponder {
    pub cache: CacheHandle,
    pub routes: mpsc::Sender<RouteCommand>,
    pub metrics: Metrics,
    pub clock: AgentClock,
    /// Configured link name → link-address, and back.
    pub links: Vec<(String, Ipv6Addr)>,
    pub started: tokio::time::Instant,
    /// `routes.dry_run`: routes are only logged.
    pub dry_run: bool,
}

impl LiveResponder {
    fn link_name(&self, a: Ipv6Addr) -> Option<String> {
        self.links
            .iter()
            .find(|(_, l)| *l == a)
            .map(|(n, _)| n.clone())
    }

    async fn route_states(&self, dsts: Vec<Ipv6Prefix>) -> Option<Vec<RouteState>> {
        let (tx, rx) = oneshot::channel();
        self.routes
            .send(RouteCommand::States(dsts, tx))
            .await
            .ok()?;
        rx.await.ok()
    }

    async fn show_bindings(&self, link: Option<String>) -> Response {
        let leases = match &link {
            None => self.cache.store().all(),
            Some(name) => match self.links.iter().find(|(n, _)| n == name) {
                Some((_, a)) => self.cache.store().by_link(*a),
                None => {
                    return Response::Error {
                        message: format!("no link named {name:?} in the configuration"),
                    };
                }
            },
        };
        let dsts = leases.iter().map(|(k, _)| k.network()).collect();
        let states = self.route_states(dsts).await;
        let now = self.clock.now();
        let mut bindings: Vec<BindingView> = leases
            .iter()
            .enumerate()
            .map(|(i, (k, l))| {
                let route = match states.as_ref().and_then(|s| s.get(i)) {
                    Some(RouteState::Pending) if self.dry_run => "dry_run",
                    Some(s) => s.as_str(),
                    None => "unknown",
                };
                self.view(k, l, now, route)
            })
            .collect();
        bindings.sort_by_key(|a| a.network);
        Response::Bindings { bindings }
    }

    fn view(
        &self,
        k: &LeaseKey,
        l: &Lease,
        now: crate::cache::Timestamp,
        route: &str,
    ) -> BindingView {
        BindingView {
            network: k.network(),
            ia_type: match l.ia {
                IaType::Na => "na",
                IaType::Ta => "ta",
                IaType::Pd => "pd",
            }
            .to_string(),
            link: self.link_name(l.client.link.address),
            interface: l.client.link.interface.as_deref().map(str::to_string),
            client_duid: hex::encode(&l.client.duid[..]),
            iaid: l.iaid,
            next_hop: l.next_hop,
            preferred_secs: l.preferred_until.remaining_secs(now),
            valid_secs: l.valid_until.remaining_secs(now),
            source: l.source.as_str().to_string(),
            route: route.to_string(),
        }
    }

    async fn clear(&self, target: Ipv6Prefix) -> Response {
        let store = self.cache.store();
        let mut keys = Vec::new();
        if target.len() == 128 {
            if let Some((k, _)) = store.lookup_address(target.addr()) {
                keys.push(k);
            }
        } else if store.get(&LeaseKey::Prefix(target)).is_some() {
            keys.push(LeaseKey::Prefix(target));
        }
        if keys.is_empty() {
            return Response::Cleared {
                removed: Vec::new(),
            };
        }
        let w = Withdrawal {
            keys: keys.clone(),
            client_duid: None,
            reason: WithdrawReason::Operator,
            arrival: self.clock.now(),
        };
        if let Err(e) = self.cache.send(CacheInput::Withdraw(w)).await {
            return Response::Error {
                message: format!("cannot clear: {e}"),
            };
        }
        let deadline = tokio::time::Instant::now() + CLEAR_WAIT;
        while keys.iter().any(|k| store.get(k).is_some()) {
            if tokio::time::Instant::now() >= deadline {
                return Response::Error {
                    message: "the cache did not drop the binding in time".to_string(),
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(%target, removed = keys.len(), "operator cleared binding");
        Response::Cleared {
            removed: keys.iter().map(LeaseKey::network).collect(),
        }
    }
}

impl Responder for LiveResponder {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::ShowBindings { link } => self.show_bindings(link).await,
            Request::ShowStats => {
                let text = self.metrics.encode();
                Response::Stats {
                    stats: StatsView::from_exposition(self.started.elapsed().as_secs(), &text),
                }
            }
            Request::ClearBinding { target } => self.clear(target).await,
        }
    }
}

/// Link name → address pairs of the configuration, for [`LiveResponder::links`].
pub fn link_names(cfg: &crate::config::Config) -> Vec<(String, Ipv6Addr)> {
    cfg.links
        .iter()
        .map(|l| (l.name.clone(), l.link_address))
        .collect()
}
