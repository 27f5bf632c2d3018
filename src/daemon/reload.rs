//! SIGHUP: what a re-read configuration changes. Pure: [`plan`] compares the running
//! configuration with the new one and says what can be applied live and, by key name, what
//! only takes effect after a restart. The daemon applies the first and logs the second.

use crate::time::Duration;

use crate::config::Config;
use crate::requestor::Rate;

/// One change the running agent can take on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Live {
    /// `log.level` (ignored while `RUST_LOG` is set).
    LogLevel(String),
    /// `limits.global_qps` / `limits.per_link_qps`.
    Rates(Option<Rate>, Option<Rate>),
    /// `routes.reconcile_interval_secs`.
    ReconcileInterval(Duration),
}

/// What a reload does.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReloadPlan {
    pub live: Vec<Live>,
    /// Keys (or sections) whose new value needs a restart.
    pub restart: Vec<&'static str>,
}

/// Compare `old` (running) with `new` (just read and validated).
pub(crate) fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut p = ReloadPlan::default();
    if old.log.level != new.log.level {
        p.live.push(Live::LogLevel(new.log.level.clone()));
    }
    if old.limits.global_qps != new.limits.global_qps
        || old.limits.per_link_qps != new.limits.per_link_qps
    {
        let (g, l) = super::settings::rates(new);
        p.live.push(Live::Rates(g, l));
    }
    if old.routes.reconcile_interval != new.routes.reconcile_interval {
        p.live
            .push(Live::ReconcileInterval(new.routes.reconcile_interval));
    }
    let mut restart = |key: &'static str, changed: bool| {
        if changed {
            p.restart.push(key);
        }
    };
    restart("state_dir", old.state_dir != new.state_dir);
    restart("servers", old.servers != new.servers);
    restart("requestor.policy", old.policy != new.policy);
    restart("identity", old.identity != new.identity);
    restart("requestor", old.requestor != new.requestor);
    restart(
        "limits.pending_max",
        old.limits.pending_max != new.limits.pending_max,
    );
    restart(
        "limits.negative_ttl_secs",
        old.limits.negative_ttl != new.limits.negative_ttl,
    );
    // The cache caps and the installer's bound are read once at start (the store and the
    // book are sized by them): a change must be named, not silently ignored.
    let (ol, nl) = (&old.limits, &new.limits);
    restart(
        "limits.max_prefixes_per_client",
        ol.max_prefixes_per_client != nl.max_prefixes_per_client,
    );
    restart(
        "limits.max_addresses_per_client",
        ol.max_addresses_per_client != nl.max_addresses_per_client,
    );
    restart(
        "limits.max_bindings_per_link",
        ol.max_bindings_per_link != nl.max_bindings_per_link,
    );
    restart(
        "limits.max_bindings_per_interface",
        ol.max_bindings_per_interface != nl.max_bindings_per_interface,
    );
    restart("limits.max_bindings", ol.max_bindings != nl.max_bindings);
    restart("bulk", old.bulk != new.bulk);
    restart("routes.table", old.routes.table != new.routes.table);
    restart("routes.metric", old.routes.metric != new.routes.metric);
    restart(
        "routes.protocol",
        old.routes.protocol != new.routes.protocol,
    );
    restart(
        "routes.mirror_expiry",
        old.routes.mirror_expiry != new.routes.mirror_expiry,
    );
    restart("routes.dry_run", old.routes.dry_run != new.routes.dry_run);
    restart(
        "routes.max_routes",
        old.routes.max_routes != new.routes.max_routes,
    );
    restart(
        "routes.inherit_grace_secs",
        old.routes.inherit_grace != new.routes.inherit_grace,
    );
    restart("snoop.interfaces", old.snoop != new.snoop);
    restart("trigger", old.trigger != new.trigger);
    restart("links", old.links != new.links);
    restart("metrics.listen", old.metrics != new.metrics);
    restart("control.socket", old.control != new.control);
    restart("log.format", old.log.format != new.log.format);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        Config::parse(&format!(
            "{extra}\n[[servers]]\naddress = \"2001:db8::1\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn nothing_changed_nothing_to_do() {
        assert_eq!(plan(&cfg(""), &cfg("")), ReloadPlan::default());
    }

    #[test]
    fn live_keys_apply_and_others_are_named() {
        let old = cfg("");
        let new = cfg("[log]\nlevel = \"debug\"\n[limits]\nglobal_qps = 70\n\
             [routes]\nreconcile_interval_secs = 5\nprotocol = 212\n[metrics]\nlisten = \"127.0.0.1:9999\"\n");
        let p = plan(&old, &new);
        assert!(p.live.contains(&Live::LogLevel("debug".into())));
        assert!(
            p.live
                .contains(&Live::ReconcileInterval(Duration::from_secs(5)))
        );
        assert!(p.live.iter().any(|l| matches!(
            l,
            Live::Rates(Some(Rate { per_sec, .. }), _) if *per_sec == 70.0
        )));
        assert_eq!(p.restart, vec!["routes.protocol", "metrics.listen"]);
    }

    /// The caps are sized into the store and the installer at start: a reload names them.
    #[test]
    fn cap_changes_need_a_restart_and_say_so() {
        let p = plan(
            &cfg(""),
            &cfg(
                "[limits]\nmax_bindings_per_interface = 10\nmax_bindings = 1000000\n\
                  [routes]\nmax_routes = 1000000\n",
            ),
        );
        assert_eq!(
            p.restart,
            vec![
                "limits.max_bindings_per_interface",
                "limits.max_bindings",
                "routes.max_routes"
            ]
        );
    }
}
