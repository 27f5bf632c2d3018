//! Which control connections may be open: the server's admission decision as plain data (no
//! sockets, the caller's clock), so the rules are tested without either.
//!
//! Why: the socket is how root reaches a daemon in trouble (`show stats`, `clear`). A hung
//! monitoring script, or anyone who can connect, must not be able to fill every slot and lock
//! root out. So:
//!
//! - a peer that is neither root nor the service user (a *lesser* peer, e.g. a member of
//!   `control.show_group`) may hold at most [`Limits::per_uid`] connections, and only the first
//!   `total − reserved` slots: the last [`Limits::reserved`] are for root and the service user;
//! - when every slot is taken, root or the service user still gets in: the oldest connection that
//!   is *stalled* (waiting for a request, or blocked writing an answer nobody reads) is closed to
//!   make room, a lesser peer's before a privileged one's. A connection whose request is being
//!   answered is never closed this way (a `clear` half done would be logged as nothing).
//!
//! Every connection also has read and write deadlines (the server's), so a stalled connection
//! ends on its own; this only decides what happens before that.

use crate::time::Instant;

/// The bounds of one control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections open at once, all peers together.
    pub total: usize,
    /// Of [`Limits::total`], the slots only root and the service user may take.
    pub reserved: usize,
    /// Connections one lesser peer's uid may hold at once.
    pub per_uid: usize,
}

/// What a connection is doing, as far as eviction cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Waiting for the peer's next request line (a peer that says nothing stays here).
    Reading,
    /// Writing an answer (a peer that does not read stays here).
    Writing,
    /// The daemon is working out an answer: never evicted.
    Answering,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot a peer of its kind may take is open (and, for a privileged peer, every open
    /// connection is being answered).
    Full,
    /// A lesser peer's uid already holds [`Limits::per_uid`] connections.
    UidLimit,
}

/// The decision on one new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Open, under this id.
    Open(u64),
    /// Open under `id` after closing connection `evict` (already forgotten here).
    OpenEvicting {
        id: u64,
        evict: u64,
    },
    Refused(Refusal),
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    uid: u32,
    privileged: bool,
    phase: Phase,
    /// When it entered `phase`: the oldest stalled connection goes first.
    since: Instant,
}

/// The open connections of one control socket.
#[derive(Debug)]
pub(crate) struct Slots {
    limits: Limits,
    entries: Vec<Entry>,
    next_id: u64,
}

impl Slots {
    pub(crate) fn new(limits: Limits) -> Slots {
        Slots {
            limits,
            entries: Vec::with_capacity(limits.total),
            next_id: 0,
        }
    }

    /// Connections open now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Decide on a new connection from `uid` (`privileged`: root or the service user), opened
    /// at `now` in [`Phase::Reading`].
    pub(crate) fn admit(&mut self, now: Instant, uid: u32, privileged: bool) -> Admit {
        let mut evict = None;
        if privileged {
            if self.entries.len() >= self.limits.total {
                // Lesser peers first, then the longest stalled; readers before writers at a tie
                // of kind (a silent peer has shown less sign of life than one that asked).
                let victim = self
                    .entries
                    .iter()
                    .filter(|e| e.phase != Phase::Answering)
                    .min_by_key(|e| (e.privileged, e.since, e.phase))
                    .map(|e| e.id);
                let Some(v) = victim else {
                    return Admit::Refused(Refusal::Full);
                };
                self.close(v);
                evict = Some(v);
            }
        } else {
            let mine = self.entries.iter().filter(|e| e.uid == uid).count();
            if mine >= self.limits.per_uid {
                return Admit::Refused(Refusal::UidLimit);
            }
            if self.entries.len() >= self.limits.total.saturating_sub(self.limits.reserved) {
                return Admit::Refused(Refusal::Full);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(Entry {
            id,
            uid,
            privileged,
            phase: Phase::Reading,
            since: now,
        });
        match evict {
            Some(evict) => Admit::OpenEvicting { id, evict },
            None => Admit::Open(id),
        }
    }

    /// Connection `id` is now in `phase` (no-op when it is gone).
    pub(crate) fn set_phase(&mut self, now: Instant, id: u64, phase: Phase) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.phase = phase;
            e.since = now;
        }
    }

    /// Connection `id` closed (no-op when it is already gone, e.g. evicted).
    pub(crate) fn close(&mut self, id: u64) {
        self.entries.retain(|e| e.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    const LIMITS: Limits = Limits {
        total: 6,
        reserved: 2,
        per_uid: 2,
    };

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn id(a: Admit) -> u64 {
        match a {
            Admit::Open(id) | Admit::OpenEvicting { id, .. } => id,
            Admit::Refused(r) => panic!("refused: {r:?}"),
        }
    }

    #[test]
    fn a_lesser_uid_is_bounded_and_never_takes_the_reserved_slots() {
        let t0 = Instant::now();
        let mut s = Slots::new(LIMITS);
        id(s.admit(t0, 1000, false));
        id(s.admit(t0, 1000, false));
        assert_eq!(
            s.admit(t0, 1000, false),
            Admit::Refused(Refusal::UidLimit),
            "third connection of one uid"
        );
        id(s.admit(t0, 1001, false));
        id(s.admit(t0, 1001, false));
        assert_eq!(
            s.admit(t0, 1002, false),
            Admit::Refused(Refusal::Full),
            "only total - reserved slots for lesser peers"
        );
        // The reserved slots are root's and the service user's.
        id(s.admit(t0, 0, true));
        id(s.admit(t0, 998, true));
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn root_evicts_the_oldest_stalled_lesser_peer_first() {
        let t0 = Instant::now();
        let mut s = Slots::new(LIMITS);
        let a = id(s.admit(at(t0, 0), 1000, false));
        let b = id(s.admit(at(t0, 1), 1001, false));
        let _c = id(s.admit(at(t0, 4), 1002, false));
        let _d = id(s.admit(at(t0, 5), 1003, false));
        // Root's older than every lesser peer but `a`: still not the one to go.
        let _root_old = id(s.admit(at(t0, 0), 0, true));
        let _root = id(s.admit(at(t0, 3), 0, true));
        // `a` is being answered: not evictable even though it is the oldest lesser one.
        s.set_phase(at(t0, 6), a, Phase::Answering);
        let Admit::OpenEvicting { evict, .. } = s.admit(at(t0, 7), 0, true) else {
            panic!("root must get in")
        };
        assert_eq!(evict, b, "oldest stalled lesser peer, not root's older one");
        assert_eq!(s.len(), 6, "one out, one in");
        // With only privileged and answering connections left, the oldest privileged goes.
        let mut s = Slots::new(Limits {
            total: 2,
            reserved: 1,
            per_uid: 1,
        });
        let busy = id(s.admit(at(t0, 0), 0, true));
        s.set_phase(at(t0, 0), busy, Phase::Answering);
        let _ = id(s.admit(at(t0, 1), 0, true));
        assert_eq!(
            s.admit(at(t0, 2), 0, true),
            Admit::OpenEvicting { id: 2, evict: 1 }
        );
    }

    #[test]
    fn root_is_refused_only_when_every_connection_is_being_answered() {
        let t0 = Instant::now();
        let mut s = Slots::new(Limits {
            total: 2,
            reserved: 1,
            per_uid: 1,
        });
        for _ in 0..2 {
            let i = id(s.admit(t0, 0, true));
            s.set_phase(t0, i, Phase::Answering);
        }
        assert_eq!(s.admit(t0, 0, true), Admit::Refused(Refusal::Full));
        // An answer written and nobody reading it: that one goes.
        s.set_phase(t0, 0, Phase::Writing);
        assert_eq!(
            s.admit(t0, 0, true),
            Admit::OpenEvicting { id: 2, evict: 0 }
        );
    }

    #[test]
    fn a_closed_connection_frees_its_slot_and_its_uids_share() {
        let t0 = Instant::now();
        let mut s = Slots::new(LIMITS);
        let a = id(s.admit(t0, 1000, false));
        id(s.admit(t0, 1000, false));
        assert_eq!(s.admit(t0, 1000, false), Admit::Refused(Refusal::UidLimit));
        s.close(a);
        s.close(a);
        id(s.admit(t0, 1000, false));
        assert_eq!(s.len(), 2);
        s.set_phase(t0, a, Phase::Writing); // gone: no-op
        assert_eq!(s.len(), 2);
    }
}
