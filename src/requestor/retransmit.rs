//! The RFC 8415 §15 retransmission schedule, with RFC 5007 §4.3.1's leasequery parameters.
//!
//! One [`Retransmit`] follows one exchange (one transaction id to one destination). Time and
//! randomness come in as arguments, so a fake clock and a seeded generator script it exactly.
//!
//! ```text
//!   RT(1)   = IRT + RAND*IRT                 RAND uniform in [-0.1, +0.1]
//!   RT(n+1) = 2*RT(n) + RAND*RT(n)
//!   if RT > MRT:  RT = MRT + RAND*MRT
//!   fail after MRC transmissions (MRC != 0) or once MRD has elapsed since the first (MRD != 0)
//! ```
//!
//! Leasequery (RFC 5007 §4.3.1, §6): IRT = LQ_TIMEOUT 1 s, MRT = LQ_MAX_RT 10 s,
//! MRC = LQ_MAX_RC 5, MRD = 0 — roughly 1, 2, 4, 8, 10 s, about 25 s before giving up.
//! Operators may override MRC ("attempts") and MRD ("timeout"): the exchange then ends at
//! whichever limit comes first, and the last wait is cut short so MRD is never overrun.

use crate::time::{Duration, Instant};

use rand::Rng;

/// RFC 8415 §15 parameters for one kind of exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitParams {
    /// Initial retransmission time (IRT).
    pub irt: Duration,
    /// Maximum retransmission time (MRT); zero means no cap.
    pub mrt: Duration,
    /// Maximum transmissions (MRC); zero means no limit.
    pub mrc: u32,
    /// Maximum retransmission duration (MRD); `None` means no limit.
    pub mrd: Option<Duration>,
}

/// LQ_TIMEOUT (RFC 5007 §6).
pub(crate) const LQ_TIMEOUT: Duration = Duration::from_secs(1);
/// LQ_MAX_RT (RFC 5007 §6).
pub(crate) const LQ_MAX_RT: Duration = Duration::from_secs(10);
/// LQ_MAX_RC (RFC 5007 §6).
pub(crate) const LQ_MAX_RC: u32 = 5;

impl RetransmitParams {
    /// The leasequery defaults: LQ_TIMEOUT, LQ_MAX_RT, LQ_MAX_RC, no MRD.
    pub const LEASEQUERY: RetransmitParams = RetransmitParams {
        irt: LQ_TIMEOUT,
        mrt: LQ_MAX_RT,
        mrc: LQ_MAX_RC,
        mrd: None,
    };
}

impl Default for RetransmitParams {
    fn default() -> Self {
        RetransmitParams::LEASEQUERY
    }
}

/// What to do when an exchange's timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send the same message again (same transaction id) and wait until `deadline`.
    Retransmit { deadline: Instant },
    /// The attempt limit or the duration limit is reached: the exchange failed.
    GiveUp,
}

/// The retransmission state of one exchange.
#[derive(Debug, Clone)]
pub(crate) struct Retransmit {
    params: RetransmitParams,
    started: Instant,
    rt: Duration,
    sent: u32,
    deadline: Instant,
}

/// RAND: uniform in [-0.1, +0.1] (RFC 8415 §15).
fn rand_factor<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    rng.random_range(-0.1..=0.1)
}

fn scale(d: Duration, f: f64) -> Duration {
    d.mul_f64(f.max(0.0))
}

impl Retransmit {
    /// The first transmission happens at `now`; returns the state, whose
    /// [`deadline`](Self::deadline) is when to act next.
    pub(crate) fn start<R: Rng + ?Sized>(
        now: Instant,
        params: RetransmitParams,
        rng: &mut R,
    ) -> Self {
        let rt = scale(params.irt, 1.0 + rand_factor(rng));
        let rt = Self::cap(params, rt, rng);
        let mut r = Retransmit {
            params,
            started: now,
            rt,
            sent: 1,
            deadline: now,
        };
        r.deadline = r.bounded(now + rt);
        r
    }

    fn cap<R: Rng + ?Sized>(params: RetransmitParams, rt: Duration, rng: &mut R) -> Duration {
        if !params.mrt.is_zero() && rt > params.mrt {
            scale(params.mrt, 1.0 + rand_factor(rng))
        } else {
            rt
        }
    }

    /// Never wait past MRD.
    fn bounded(&self, at: Instant) -> Instant {
        match self.params.mrd {
            Some(mrd) => at.min(self.started + mrd),
            None => at,
        }
    }

    /// When the current wait ends.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How many times the message has been sent so far.
    pub(crate) fn sent(&self) -> u32 {
        self.sent
    }

    /// When the first transmission happened.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The timer fired at `now` (at or after [`deadline`](Self::deadline)).
    pub(crate) fn on_timeout<R: Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) -> Step {
        if self.params.mrc != 0 && self.sent >= self.params.mrc {
            return Step::GiveUp;
        }
        if let Some(mrd) = self.params.mrd {
            if now.saturating_duration_since(self.started) >= mrd {
                return Step::GiveUp;
            }
        }
        // RT = 2*RTprev + RAND*RTprev, i.e. within [1.9, 2.1] * RTprev.
        let rt = scale(self.rt, 2.0 + rand_factor(rng));
        self.rt = Self::cap(self.params, rt, rng);
        self.sent += 1;
        self.deadline = self.bounded(now + self.rt);
        Step::Retransmit {
            deadline: self.deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    /// The default schedule over many seeds: 5 transmissions, waits within ±10 % of
    /// 1, 2, 4, 8 then capped at 10 s, and the doubling rule relative to the previous wait.
    #[test]
    fn leasequery_schedule_within_rfc_bounds() {
        for seed in 0..500 {
            let mut rng = StdRng::seed_from_u64(seed);
            let t0 = Instant::now();
            let mut r = Retransmit::start(t0, RetransmitParams::LEASEQUERY, &mut rng);
            let mut waits = vec![r.deadline() - t0];
            let mut now = r.deadline();
            while let Step::Retransmit { deadline } = r.on_timeout(now, &mut rng) {
                waits.push(deadline - now);
                now = deadline;
            }
            assert_eq!(waits.len(), 5, "LQ_MAX_RC transmissions, seed {seed}");
            assert_eq!(r.sent(), 5);
            let w: Vec<f64> = waits.iter().map(|d| secs(*d)).collect();
            assert!((0.9..=1.1).contains(&w[0]), "RT1 {w:?}");
            for i in 1..w.len() {
                let lo = (1.9 * w[i - 1]).min(9.0);
                let hi = (2.1 * w[i - 1]).min(11.0);
                assert!(
                    w[i] >= lo - 1e-9 && w[i] <= hi + 1e-9,
                    "RT{} = {} not in [{lo}, {hi}] (seed {seed}, {w:?})",
                    i + 1,
                    w[i]
                );
                assert!(w[i] <= 11.0 + 1e-9, "MRT cap with RAND: {w:?}");
            }
            let total: f64 = w.iter().sum();
            assert!((20.0..=31.0).contains(&total), "give-up after {total} s");
        }
    }

    #[test]
    fn randomisation_actually_varies() {
        let t0 = Instant::now();
        let firsts: std::collections::HashSet<Duration> = (0..50)
            .map(|s| {
                let mut rng = StdRng::seed_from_u64(s);
                Retransmit::start(t0, RetransmitParams::LEASEQUERY, &mut rng).deadline() - t0
            })
            .collect();
        assert!(firsts.len() > 10, "RAND must spread the first timeout");
    }

    #[test]
    fn attempts_override_gives_up_after_n() {
        let p = RetransmitParams {
            mrc: 2,
            ..RetransmitParams::LEASEQUERY
        };
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut r = Retransmit::start(t0, p, &mut rng);
        let now = r.deadline();
        assert!(matches!(
            r.on_timeout(now, &mut rng),
            Step::Retransmit { .. }
        ));
        let now = r.deadline();
        assert_eq!(r.on_timeout(now, &mut rng), Step::GiveUp);
        assert_eq!(r.sent(), 2);
    }

    #[test]
    fn duration_override_is_never_overrun() {
        let p = RetransmitParams {
            mrc: 10,
            mrd: Some(Duration::from_millis(2500)),
            ..RetransmitParams::LEASEQUERY
        };
        for seed in 0..100 {
            let mut rng = StdRng::seed_from_u64(seed);
            let t0 = Instant::now();
            let mut r = Retransmit::start(t0, p, &mut rng);
            let mut now = r.deadline();
            let mut n = 1;
            while let Step::Retransmit { deadline } = r.on_timeout(now, &mut rng) {
                assert!(deadline <= t0 + Duration::from_millis(2500));
                now = deadline;
                n += 1;
            }
            assert!(now - t0 <= Duration::from_millis(2500));
            assert!(now - t0 >= Duration::from_millis(2500), "gave up early");
            assert_eq!(n, 2, "1 s then ~2 s cut to 2.5 s total: two transmissions");
        }
    }

    #[test]
    fn tiny_mrd_cuts_the_first_wait() {
        let p = RetransmitParams {
            mrd: Some(Duration::from_millis(300)),
            ..RetransmitParams::LEASEQUERY
        };
        let mut rng = StdRng::seed_from_u64(7);
        let t0 = Instant::now();
        let mut r = Retransmit::start(t0, p, &mut rng);
        assert_eq!(r.deadline(), t0 + Duration::from_millis(300));
        assert_eq!(r.on_timeout(r.deadline(), &mut rng), Step::GiveUp);
    }
}
