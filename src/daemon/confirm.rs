//! The confirmer: settles the doubts of the ownership rule (`docs/security.md`) by asking the
//! server, and only the server's answer changes anything.
//!
//! A [`Doubt`] is something that would have changed a binding had it come from the binding's
//! holder on its link (a stranger's zero lifetime, a release from another link, an overlap, a
//! unicast exchange, a route inherited from the kernel). It changes nothing by itself; here it
//! becomes an RFC 5007 leasequery **by address** for its key, with the doubt's link-address,
//! through the same [`RequestorHandle`](crate::requestor::udp::RequestorHandle) as the on-demand
//! path — so the same deduplication, negative cache and rate limits stand between a flood of
//! doubts and the servers — and the answer decides ([`settle`]):
//!
//! | the servers say | what happens | outcome |
//! |---|---|---|
//! | a CLIENT_DATA naming the key, for the doubt's holder (or there is no holder) | fed to the cache like an on-demand answer (`Source::Leasequery`): refreshed | `held` |
//! | a CLIENT_DATA naming the key, for another client | fed to the cache: the merge moves it (and logs the move) | `moved` |
//! | success without CLIENT_DATA, from every server asked | [`CacheInput::Confirm`]: the key goes (and an inherited route with it) | `gone` |
//! | an error status (ISC's NotConfigured for a prefix), client links, or bindings not naming the key | nothing | `unknown` |
//! | silence | nothing | `no_answer` |
//! | nothing: refused by the rate limits or a full requestor queue, answered by the negative cache, or the key already asked about | nothing | `not_asked` |
//!
//! Never remove and never install on doubt: only an answer about the key does either.
//!
//! **Which address for a prefix.** A delegated prefix is asked about by its first address (the
//! host bits zero). It is inside the prefix whatever its length, is fixed by the key alone (two
//! doubts about one prefix ask the same question, so the requestor's deduplication and negative
//! cache see them as one), and a server that finds prefixes by address finds the prefix holding
//! it whichever address inside is named: the reference server (`tests/support`) answers with
//! the delegated prefix containing the address in its ideal and Kea profiles; in its ISC profile,
//! like ISC dhcpd 4.4 (`docs/interop.md`: dhcpd searches IA_NA leases only), every address
//! inside a delegated prefix gets NotConfigured — `unknown`, so with ISC a doubted prefix is
//! kept until its own lifetime ends, and no other address would have done better.
//!
//! **At most one question per key.** A key being asked about is not asked again until the
//! answer is in, and a settled key is remembered for [`ConfirmConfig::memory`]: a storm of
//! doubts about one key (a CPE repeating its REBIND) asks once. Both count as `not_asked`.
//! Questions in flight are bounded ([`ConfirmConfig::max_in_flight`]); while all are busy the
//! doubts wait in the sink's bounded queue, and a doubt that finds it full is counted
//! `not_asked` by the sink.

use crate::time::{Duration, Instant};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};

use crate::cache::binding::{Confirmation, Doubt, DoubtOutcome, DoubtStats};
use crate::cache::from_wire::{ClientDataContext, observation_from_reply};
use crate::cache::{LeaseKey, Link, Observation, ServerId, Source, Timestamp};
use crate::cache_task::{CacheInput, DoubtSink};
use crate::requestor::udp::QueryError;
use crate::requestor::{Answer, Query, QueryOutcome};
use crate::supervise::Inbox;

use super::ondemand::Lookup;

/// Settings of the confirmer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmConfig {
    /// Questions in flight at once.
    pub max_in_flight: usize,
    /// How long a settled key is not asked about again.
    pub memory: Duration,
    /// How many settled keys are remembered at most (the oldest are forgotten first).
    pub memory_capacity: usize,
}

impl Default for ConfirmConfig {
    fn default() -> Self {
        ConfirmConfig {
            max_in_flight: 64,
            memory: Duration::from_secs(30),
            memory_capacity: 65_536,
        }
    }
}

/// The address a leasequery about `key` names: the address itself, or a prefix's first
/// address (see the module docs for why that one).
pub fn asked_address(key: &LeaseKey) -> Ipv6Addr {
    match key {
        LeaseKey::Address(a) => *a,
        LeaseKey::Prefix(p) => p.addr(),
    }
}

/// Which keys are being asked about, and which were settled lately (pure: time is passed in).
#[derive(Debug)]
pub struct Questions {
    in_flight: HashSet<LeaseKey>,
    recent: HashMap<LeaseKey, Instant>,
    /// `recent` in the order it was filled (times never go back), to forget the oldest first.
    order: VecDeque<(Instant, LeaseKey)>,
    memory: Duration,
    capacity: usize,
}

impl Questions {
    pub fn new(memory: Duration, capacity: usize) -> Self {
        Questions {
            in_flight: HashSet::new(),
            recent: HashMap::new(),
            order: VecDeque::new(),
            memory,
            capacity: capacity.max(1),
        }
    }

    /// Whether to ask about `key` now: not while it is being asked about, nor within
    /// `memory` of its last answer. When true, `key` is in flight until [`Self::settled`].
    pub fn ask(&mut self, now: Instant, key: LeaseKey) -> bool {
        self.forget_before(now);
        if self.in_flight.contains(&key) || self.recent.contains_key(&key) {
            return false;
        }
        self.in_flight.insert(key);
        true
    }

    /// The question about `key` is settled at `now` (however it ended).
    pub fn settled(&mut self, now: Instant, key: LeaseKey) {
        self.in_flight.remove(&key);
        self.forget_before(now);
        while self.recent.len() >= self.capacity {
            let Some((t, k)) = self.order.pop_front() else {
                break;
            };
            if self.recent.get(&k) == Some(&t) {
                self.recent.remove(&k);
            }
        }
        self.recent.insert(key, now);
        self.order.push_back((now, key));
    }

    /// Keys being asked about.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some((t, k)) = self.order.front().copied() {
            if now.saturating_duration_since(t) < self.memory {
                break;
            }
            self.order.pop_front();
            if self.recent.get(&k) == Some(&t) {
                self.recent.remove(&k);
            }
        }
    }
}

/// How a doubt was settled, and what the cache task is sent for it.
#[derive(Debug, Clone)]
pub struct Settled {
    pub outcome: DoubtOutcome,
    /// In order: the observations of a `held`/`moved` answer, or the `gone` confirmation.
    pub inputs: Vec<CacheInput>,
    /// The client the server named for the key (the first, if several), for the log.
    pub named: Option<crate::wire::Duid>,
}

impl Settled {
    fn nothing(outcome: DoubtOutcome) -> Self {
        Settled {
            outcome,
            inputs: Vec::new(),
            named: None,
        }
    }
}

/// Decide what the leasequery about `doubt` settled (pure).
///
/// `asked` is the address the query named, `sent` when it was sent (a lease whose data arrived
/// later is newer than the answer), `now` when the outcome came back, and `arrival` the agent
/// time of a reply's receipt.
pub fn settle(
    now: Timestamp,
    doubt: &Doubt,
    asked: Ipv6Addr,
    sent: Timestamp,
    result: Result<&QueryOutcome, &QueryError>,
    arrival: impl Fn(Instant) -> Timestamp,
) -> Settled {
    let Ok(outcome) = result else {
        return Settled::nothing(DoubtOutcome::NotAsked);
    };
    // The negative cache answers without asking anyone: no server was asked this time.
    if outcome.answers.is_empty() {
        return Settled::nothing(DoubtOutcome::NotAsked);
    }
    let link = Link {
        address: doubt.link,
        interface: doubt.interface.clone(),
    };
    let names_key = |o: &Observation| o.leases.iter().any(|l| l.key == doubt.key && l.valid != 0);
    let mut named: Vec<Observation> = Vec::new();
    for b in outcome.bindings() {
        let ctx = ClientDataContext {
            source: Source::Leasequery,
            link: link.clone(),
            arrival: arrival(b.received),
        };
        if let Ok(mut obs) = observation_from_reply(b, &ctx) {
            // Only an answer about the doubted key settles it: one about another lease (a
            // shorter prefix holding the address) is not installed on doubt.
            if names_key(&obs) {
                // Admission drops an answer that does not cover what was asked (rule A6).
                obs.query_address = Some(asked);
                named.push(obs);
            }
        }
    }
    if !named.is_empty() {
        let held = match &doubt.holder {
            None => true,
            Some(h) => named.iter().any(|o| *o.client_duid == *h.duid),
        };
        return Settled {
            outcome: if held {
                DoubtOutcome::Held
            } else {
                DoubtOutcome::Moved
            },
            named: named.first().map(|o| o.client_duid.clone()),
            inputs: named.into_iter().map(CacheInput::Observe).collect(),
        };
    }
    let no_binding = |a: &Answer| matches!(a, Answer::NoBinding);
    if outcome.answers.iter().all(|a| no_binding(&a.answer)) {
        // Every server asked says nobody holds it (under failover all of them were asked).
        let first = &outcome.answers[0];
        return Settled {
            outcome: DoubtOutcome::Gone,
            inputs: vec![CacheInput::Confirm(Confirmation {
                key: doubt.key,
                reason: doubt.reason,
                server: Arc::new(ServerId {
                    duid: first.server_duid.clone().unwrap_or_default(),
                    address: v6(first.server.ip()),
                }),
                asked: sent,
                arrival: now,
            })],
            named: None,
        };
    }
    let could_not_say = |a: &Answer| {
        matches!(
            a,
            Answer::Status { .. } | Answer::ClientLinks(_) | Answer::Bound(_)
        )
    };
    if outcome.answers.iter().any(|a| could_not_say(&a.answer)) {
        Settled::nothing(DoubtOutcome::Unknown)
    } else {
        // Silence from a server that may hold it (split pools): not a "no".
        Settled::nothing(DoubtOutcome::NoAnswer)
    }
}

fn v6(ip: std::net::IpAddr) -> Ipv6Addr {
    match ip {
        std::net::IpAddr::V6(a) => a,
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// At most [`LogLimit::PER_SEC`] settled-doubt lines per second of agent time (like the store's
/// move log): a storm is counted in full but cannot flood the journal.
#[derive(Debug, Default)]
pub struct LogLimit {
    second: i64,
    used: u32,
}

impl LogLimit {
    pub const PER_SEC: u32 = 10;

    pub fn allow(&mut self, now: Timestamp) -> bool {
        let sec = now.secs();
        if self.second != sec {
            self.second = sec;
            self.used = 0;
        }
        if self.used >= Self::PER_SEC {
            return false;
        }
        self.used += 1;
        true
    }
}

/// What a question needs: the on-demand path's lookup (requestor, cache, clock, metrics), so
/// the confirmer's queries are counted, limited and cached like on-demand ones.
#[derive(Debug, Clone)]
pub struct Confirmer {
    pub lookup: Lookup,
    /// Where the outcomes are counted (the sink's: `lqagent_binding_doubts_total`).
    pub stats: Arc<DoubtStats>,
    pub config: ConfirmConfig,
}

impl Confirmer {
    /// A confirmer counting into `sink`'s stats.
    pub fn new(lookup: Lookup, sink: &DoubtSink, config: ConfirmConfig) -> Self {
        Confirmer {
            lookup,
            stats: sink.stats().clone(),
            config,
        }
    }

    /// Ask about one doubt and hand the cache what the answer says; returns the outcome (also
    /// counted and logged).
    pub async fn confirm(&self, doubt: &Doubt, log: &Mutex<LogLimit>) -> DoubtOutcome {
        let l = &self.lookup;
        let asked = asked_address(&doubt.key);
        let q = Query::by_address(asked)
            .with_link(doubt.link)
            .with_relay_data(l.relay_data);
        let sent = l.clock.now();
        let result = l.requestor.query(q).await;
        match &result {
            Ok(o) => o.answers.iter().for_each(|a| l.count_answer(a)),
            Err(e) => l.count_refusal(e),
        }
        let now = l.clock.now();
        let settled = settle(now, doubt, asked, sent, result.as_ref(), |t| {
            l.clock.at_std(t)
        });
        for input in settled.inputs {
            if l.cache.send(input).await.is_err() {
                break;
            }
        }
        self.stats.count(doubt.reason, settled.outcome);
        let allowed = log.lock().map(|mut g| g.allow(now)).unwrap_or(false);
        if allowed {
            let hex = |d: Option<&[u8]>| d.map_or_else(|| "-".to_string(), hex::encode);
            tracing::info!(
                lease = %doubt.key,
                reason = doubt.reason.label(),
                outcome = settled.outcome.label(),
                holder = %hex(doubt.holder.as_ref().map(|h| &h.duid[..])),
                claimant = %hex(doubt.claimant.as_deref()),
                answered_client = %hex(settled.named.as_deref()),
                link = %doubt.link,
                asked = %asked,
                "doubt settled"
            );
        }
        settled.outcome
    }
}

/// The confirmer task, ready to run (again) on the same doubt queue.
#[derive(Clone)]
pub struct ConfirmRunner {
    rx: Inbox<Doubt>,
    confirmer: Arc<Confirmer>,
}

impl std::fmt::Debug for ConfirmRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfirmRunner")
    }
}

impl ConfirmRunner {
    /// A runner taking doubts from `rx` (the receiver [`DoubtSink::new`] returned).
    pub fn new(confirmer: Confirmer, rx: mpsc::Receiver<Doubt>) -> Self {
        ConfirmRunner {
            rx: Inbox::new(rx),
            confirmer: Arc::new(confirmer),
        }
    }

    /// Settle doubts until every sink is gone. Each run starts with a fresh memory of
    /// questions (one that died may have left some unanswered).
    pub async fn run(self) {
        let ConfirmRunner { rx, confirmer } = self;
        let mut rx = rx.lend().await;
        let cfg = &confirmer.config;
        let questions = Arc::new(Mutex::new(Questions::new(cfg.memory, cfg.memory_capacity)));
        let log = Arc::new(Mutex::new(LogLimit::default()));
        let slots = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
        let mut running = tokio::task::JoinSet::new();
        while let Some(d) = rx.recv().await {
            while running.try_join_next().is_some() {}
            let ask = questions
                .lock()
                .map(|mut q| q.ask(Instant::now(), d.key))
                .unwrap_or(false);
            if !ask {
                confirmer.stats.count(d.reason, DoubtOutcome::NotAsked);
                continue;
            }
            // Bounded: while every slot is busy, doubts wait in the sink's bounded queue.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (c, q, log) = (confirmer.clone(), questions.clone(), log.clone());
            running.spawn(async move {
                c.confirm(&d, &log).await;
                if let Ok(mut q) = q.lock() {
                    q.settled(Instant::now(), d.key);
                }
                drop(permit);
            });
        }
        while running.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests;
