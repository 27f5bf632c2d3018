//! Link-up triggers: when a subscriber interface comes up, ask every server for that link's
//! bindings (RFC 5460 query by link-address) — that link only.
//!
//! "Up" is operational: IFF_RUNNING (carrier), not just IFF_UP. [`LinkUpTracker`] is the pure
//! part: fed each interface's state as notifications arrive, it says which link-address just
//! came up. An interface seen for the first time counts as already up (start-up recovery asked
//! for every link), so only a down → up transition triggers. [`LinkJobs`] is the pure scheduler
//! of the recoveries those transitions ask for: one job per link at a time, a link-up debounced,
//! a job that no longer matters cancelled — a flapping port (an ordinary day on an access
//! network) must cost one connection per server, not one per flap. [`watch`] is the shell: it
//! reads link notifications from rtnetlink and runs the jobs the scheduler says.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};

use super::BulkConfig;
use super::recovery::{BindingSink, RecoveryPlan, recover};
use super::stats::{BulkStats, Counter};
use crate::kernel::KernelError;
use crate::kernel::watch::{LinkEvent, LinkWatch};
use crate::time::{Duration, Instant};

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
    #[cfg(test)]
    pub(crate) fn link_state(&mut self, name: &str, running: bool) -> Option<Ipv6Addr> {
        match self.transition(name, running)? {
            Transition::Up(link) => Some(link),
            Transition::Down(_) => None,
        }
    }

    /// Record that `name` is (not) running; which way its link just went, if it changed.
    pub(crate) fn transition(&mut self, name: &str, running: bool) -> Option<Transition> {
        let link = *self.links.get(name)?;
        let was = self
            .running
            .insert(name.to_string(), running)
            .unwrap_or(true);
        match (was, running) {
            (false, true) => Some(Transition::Up(link)),
            (true, false) => Some(Transition::Down(link)),
            _ => None,
        }
    }
}

/// A subscriber link's change of state, by its link-address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Up(Ipv6Addr),
    Down(Ipv6Addr),
}

/// How long a link must stay up before its recovery starts: a port that bounces settles first,
/// and only its last up costs a query.
pub const LINKUP_DEBOUNCE: Duration = Duration::from_secs(1);

/// One link's recovery job, as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Came up; the job starts at `at` unless it goes down first.
    Waiting { at: Instant },
    /// Running as generation `generation`; `again`: asked for once more while it ran.
    Running { generation: u64, again: bool },
}

/// What the shell must do for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobAction {
    /// Start `link`'s recovery, tagged `generation` (hand it back to [`LinkJobs::ended`]).
    Start { link: Ipv6Addr, generation: u64 },
    /// Stop `link`'s running job `generation` now (it no longer matters); drop its connections.
    Cancel { link: Ipv6Addr, generation: u64 },
}

/// The link-up recovery scheduler (pure: the caller passes the time). Per link at most one job
/// runs; a link-up while it runs marks it to run once more when it ends (debounced again), never
/// a second in parallel; a link going down cancels its job (what the link had is asked for
/// again at its next up) and a pending start. Generations tell a job that ended from a newer
/// one that superseded it.
#[derive(Debug, Clone)]
pub(crate) struct LinkJobs {
    debounce: Duration,
    jobs: HashMap<Ipv6Addr, Job>,
    next_generation: u64,
}

impl LinkJobs {
    pub(crate) fn new(debounce: Duration) -> Self {
        LinkJobs {
            debounce,
            jobs: HashMap::new(),
            next_generation: 1,
        }
    }

    /// `link` came up at `now`.
    pub(crate) fn up(&mut self, now: Instant, link: Ipv6Addr) {
        let at = now + self.debounce;
        match self.jobs.get_mut(&link) {
            Some(Job::Running { again, .. }) => *again = true,
            // A bounce during the debounce restarts it.
            Some(Job::Waiting { at: a }) => *a = at,
            None => {
                self.jobs.insert(link, Job::Waiting { at });
            }
        }
    }

    /// `link` went down: its pending start is dropped, its running job cancelled.
    pub(crate) fn down(&mut self, link: Ipv6Addr) -> Option<JobAction> {
        match self.jobs.remove(&link)? {
            Job::Waiting { .. } => None,
            Job::Running { generation, .. } => Some(JobAction::Cancel { link, generation }),
        }
    }

    /// Job `generation` of `link` ended (finished or failed) at `now`. A stale generation (a
    /// job cancelled and superseded meanwhile) changes nothing.
    pub(crate) fn ended(&mut self, now: Instant, link: Ipv6Addr, generation: u64) {
        match self.jobs.get(&link) {
            Some(&Job::Running {
                generation: g,
                again,
            }) if g == generation => {
                if again {
                    self.jobs.insert(
                        link,
                        Job::Waiting {
                            at: now + self.debounce,
                        },
                    );
                } else {
                    self.jobs.remove(&link);
                }
            }
            _ => {}
        }
    }

    /// The jobs due at `now`, now counted as running.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<JobAction> {
        let mut out = Vec::new();
        for (&link, job) in self.jobs.iter_mut() {
            if let Job::Waiting { at } = *job {
                if at <= now {
                    let generation = self.next_generation;
                    self.next_generation += 1;
                    *job = Job::Running {
                        generation,
                        again: false,
                    };
                    out.push(JobAction::Start { link, generation });
                }
            }
        }
        out
    }

    /// When the next waiting job is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter_map(|j| match j {
                Job::Waiting { at } => Some(*at),
                Job::Running { .. } => None,
            })
            .min()
    }

    /// Jobs running.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.jobs
            .values()
            .filter(|j| matches!(j, Job::Running { .. }))
            .count()
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

/// Follow link notifications until the socket closes; run the recoveries [`LinkJobs`] schedules
/// (each in its own task, so a slow server does not delay another link), cancelling a job by
/// aborting its task, which closes its connections. Must run inside a tokio runtime, in the
/// agent's namespace.
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
    let mut jobs = LinkJobs::new(cfg.linkup_debounce);
    let mut tasks: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    let mut handles: HashMap<(Ipv6Addr, u64), tokio::task::AbortHandle> = HashMap::new();
    loop {
        let due = jobs.next_due().map(crate::time::TokioInstant::from_std);
        tokio::select! {
            ev = w.next() => {
                let Some(ev) = ev else { break };
                let LinkEvent::Changed(msg) = ev else {
                    continue;
                };
                let Some((name, running)) = link_running(&msg) else {
                    continue;
                };
                match tracker.transition(&name, running) {
                    Some(Transition::Up(link)) => {
                        tracing::info!(interface = %name, %link, "subscriber link up: bulk leasequery for it once it stays up");
                        jobs.up(Instant::now(), link);
                    }
                    Some(Transition::Down(link)) => {
                        if let Some(JobAction::Cancel { link, generation }) = jobs.down(link) {
                            if let Some(h) = handles.remove(&(link, generation)) {
                                h.abort();
                            }
                            stats.inc(Counter::LinkupCancelled);
                            tracing::info!(interface = %name, %link, "subscriber link down: its bulk leasequery cancelled");
                        }
                    }
                    None => {}
                }
            }
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                // A cancelled task's handle was removed when it was aborted; a job that
                // panicked ended too (else its link would wait for it for ever).
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                let key = handles
                    .iter()
                    .find(|(_, h)| h.id() == id)
                    .map(|(k, _)| *k);
                if let Some((link, generation)) = key {
                    handles.remove(&(link, generation));
                    if let Err(e) = &done {
                        tracing::error!(%link, error = %e, "link-up bulk recovery failed");
                    }
                    jobs.ended(Instant::now(), link, generation);
                }
            }
            _ = sleep_until(due) => {}
        }
        for a in jobs.due(Instant::now()) {
            let JobAction::Start { link, generation } = a else {
                continue;
            };
            stats.inc(Counter::LinkupJobs);
            let run = recover(plan.link_up(link), cfg.clone(), stats.clone(), sink.clone());
            let h = tasks.spawn(async move {
                run.await;
            });
            handles.insert((link, generation), h);
        }
    }
    Ok(())
}

async fn sleep_until(at: Option<crate::time::TokioInstant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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

    fn l(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 1)
    }

    fn starts(a: &[JobAction]) -> Vec<Ipv6Addr> {
        a.iter()
            .filter_map(|a| match a {
                JobAction::Start { link, .. } => Some(*link),
                JobAction::Cancel { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_link_up_starts_one_job_after_the_debounce() {
        let t0 = Instant::now();
        let d = Duration::from_secs(1);
        let mut j = LinkJobs::new(d);
        j.up(t0, l(1));
        assert_eq!(j.next_due(), Some(t0 + d));
        assert!(j.due(t0).is_empty(), "not before the debounce");
        assert_eq!(starts(&j.due(t0 + d)), [l(1)]);
        assert_eq!(j.running(), 1);
        assert!(j.due(t0 + 10 * d).is_empty(), "started once");
        assert_eq!(j.next_due(), None);
    }

    #[test]
    fn a_bouncing_link_costs_one_job_when_it_settles() {
        let t0 = Instant::now();
        let d = Duration::from_secs(1);
        let mut j = LinkJobs::new(d);
        let mut t = t0;
        for _ in 0..40 {
            j.up(t, l(1));
            t += d / 4;
            assert_eq!(j.down(l(1)), None, "nothing ran yet: nothing to cancel");
            t += d / 4;
            assert!(j.due(t).is_empty());
        }
        j.up(t, l(1));
        assert!(
            j.due(t + d / 2).is_empty(),
            "a bounce restarts the debounce"
        );
        assert_eq!(starts(&j.due(t + d)), [l(1)]);
        assert_eq!(j.running(), 1);
    }

    #[test]
    fn an_up_while_running_runs_again_after_not_beside() {
        let t0 = Instant::now();
        let d = Duration::from_secs(1);
        let mut j = LinkJobs::new(d);
        j.up(t0, l(1));
        let a = j.due(t0 + d);
        let JobAction::Start { generation: g1, .. } = a[0] else {
            panic!("{a:?}")
        };
        j.up(t0 + 2 * d, l(1));
        j.up(t0 + 3 * d, l(1));
        assert!(j.due(t0 + 9 * d).is_empty(), "never a second in parallel");
        assert_eq!(j.running(), 1);
        j.ended(t0 + 10 * d, l(1), g1);
        assert_eq!(j.running(), 0);
        assert!(j.due(t0 + 10 * d).is_empty(), "debounced again");
        let a = j.due(t0 + 11 * d);
        assert_eq!(starts(&a), [l(1)], "once, for both ups");
        let JobAction::Start { generation: g2, .. } = a[0] else {
            panic!("{a:?}")
        };
        assert_ne!(g1, g2);
        j.ended(t0 + 12 * d, l(1), g2);
        assert!(j.due(t0 + 20 * d).is_empty(), "no third run");
        assert_eq!(j.running(), 0);
    }

    #[test]
    fn a_link_down_cancels_its_job_and_a_stale_end_changes_nothing() {
        let t0 = Instant::now();
        let d = Duration::from_secs(1);
        let mut j = LinkJobs::new(d);
        j.up(t0, l(1));
        j.up(t0, l(2));
        let a = j.due(t0 + d);
        assert_eq!(a.len(), 2, "links are independent");
        let g1 = a
            .iter()
            .find_map(|a| match a {
                JobAction::Start { link, generation } if *link == l(1) => Some(*generation),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            j.down(l(1)),
            Some(JobAction::Cancel {
                link: l(1),
                generation: g1
            })
        );
        assert_eq!(j.running(), 1, "link 2's job runs on");
        // Up again: a new job supersedes the cancelled one, whose late end is ignored.
        j.up(t0 + 2 * d, l(1));
        let a = j.due(t0 + 3 * d);
        assert_eq!(starts(&a), [l(1)]);
        j.ended(t0 + 3 * d, l(1), g1);
        assert_eq!(j.running(), 2, "the stale end did not end the new job");
        assert_eq!(j.down(l(3)), None, "an unknown link");
    }
}
