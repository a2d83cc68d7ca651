//! Path selection: which working pair media goes out on.
//!
//! The rule, the same on both sides so they converge without an extra message:
//! - the best working **direct** pair, as soon as one works;
//! - a **relayed** pair only when no direct pair has worked by [`RELAY_AFTER`], or when the direct
//!   pair in use lost consent;
//! - a direct pair that starts working later replaces a relayed one (upgrade);
//! - the callee (controlled side, as in ICE) also follows the caller: when the caller's newest audio
//!   arrives on another pair, the callee sends on that pair too. Either side follows audio from an
//!   address it has no pair for (the peer's NAT rebound mid-call).

use std::net::SocketAddr;
use std::time::Instant;

use super::candidates::{Base, PathKind};
use super::checks::{CheckList, PairState};
use super::timers::RELAY_AFTER;

/// The selected path as reported to the session layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// Direct or relayed.
    pub kind: PathKind,
    /// Which of our addresses sends.
    pub base: Base,
    /// The peer's address on this path.
    pub remote: SocketAddr,
    /// The TURN server in use on our side, when `base` is the relay.
    pub relay_server: Option<SocketAddr>,
}

impl std::fmt::Display for PathInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind, self.relay_server) {
            (PathKind::Direct, _) => write!(f, "direct {}", self.remote),
            (PathKind::Relayed, Some(server)) => write!(f, "relayed via {server} to {}", self.remote),
            (PathKind::Relayed, None) => write!(f, "relayed via the peer's relay {}", self.remote),
        }
    }
}

/// The selection state.
#[derive(Debug)]
pub struct PathSelector {
    start: Instant,
    controlling: bool,
    selected: Option<usize>,
    /// Set when the callee follows the caller's choice; cleared when that pair breaks.
    following: bool,
}

impl PathSelector {
    /// `controlling` is the caller.
    pub fn new(start: Instant, controlling: bool) -> Self {
        Self { start, controlling, selected: None, following: false }
    }

    /// The selected pair.
    pub fn selected(&self) -> Option<usize> {
        self.selected
    }

    /// Re-applies the rule; returns the new selection when it changed.
    pub fn update(&mut self, checks: &CheckList, now: Instant) -> Option<usize> {
        let current_ok = self.selected.and_then(|i| checks.get(i)).is_some_and(|p| p.state == PairState::Succeeded);
        if !current_ok {
            self.following = false;
        }
        if self.following {
            return None;
        }
        let direct = checks.best(PathKind::Direct);
        let relayed = checks.best(PathKind::Relayed);
        let current_kind = self.selected.and_then(|i| checks.get(i)).map(|p| p.path_kind());
        let want = match (direct, relayed) {
            (Some(d), _) => Some(d),
            // Relay only after the grace period, or at once when a direct path was in use and broke.
            (None, Some(r)) if now >= self.start + RELAY_AFTER || current_kind == Some(PathKind::Direct) => Some(r),
            (None, Some(_)) if current_ok => self.selected,
            _ if current_ok => self.selected,
            _ => None,
        };
        // Keep a working selection unless the rule's choice is strictly better (no flapping between
        // equal pairs).
        let better = match (want, self.selected) {
            (Some(w), Some(s)) if current_ok => {
                let (wp, sp) = (checks.get(w).map(|p| p.priority), checks.get(s).map(|p| p.priority));
                wp > sp
            }
            (Some(_), _) => true,
            (None, _) => false,
        };
        if better && want != self.selected {
            self.selected = want;
            return want;
        }
        if !current_ok && self.selected.is_some() && want.is_none() {
            self.selected = None;
        }
        None
    }

    /// The peer's newest audio arrived on pair `i`; returns true when we switched to it.
    /// `known` is false when the pair was just learned (peer-reflexive).
    pub fn follow_audio(&mut self, i: usize, known: bool) -> bool {
        if self.selected == Some(i) {
            return false;
        }
        if self.controlling && known && self.selected.is_some() {
            return false;
        }
        self.selected = Some(i);
        self.following = !self.controlling;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use qvoice_proto::{Candidate, CandidateKind};

    use super::*;

    fn list(now: Instant) -> CheckList {
        let remote = [
            Candidate("198.51.100.2:4000".parse().unwrap(), CandidateKind::ServerReflexive),
            Candidate("203.0.113.1:50000".parse().unwrap(), CandidateKind::Relayed),
        ];
        CheckList::new(&remote, false, false, now)
    }

    #[test]
    fn relay_waits_for_the_grace_period_then_direct_upgrades() {
        let t0 = Instant::now();
        let mut cl = list(t0);
        let mut ps = PathSelector::new(t0, true);
        let relayed = cl.find(Base::Host, "203.0.113.1:50000".parse().unwrap()).unwrap();
        let direct = cl.find(Base::Host, "198.51.100.2:4000".parse().unwrap()).unwrap();
        cl.succeeded(relayed, t0 + Duration::from_millis(50), None);
        assert_eq!(ps.update(&cl, t0 + Duration::from_millis(50)), None, "relay must wait");
        assert_eq!(ps.update(&cl, t0 + RELAY_AFTER), Some(relayed));
        assert_eq!(ps.update(&cl, t0 + RELAY_AFTER), None, "no change, no event");
        cl.succeeded(direct, t0 + Duration::from_secs(3), None);
        assert_eq!(ps.update(&cl, t0 + Duration::from_secs(3)), Some(direct), "upgrade to direct");
    }

    #[test]
    fn a_direct_path_that_breaks_falls_back_to_the_relay_at_once() {
        let t0 = Instant::now();
        let mut cl = list(t0);
        let mut ps = PathSelector::new(t0, true);
        let relayed = cl.find(Base::Host, "203.0.113.1:50000".parse().unwrap()).unwrap();
        let direct = cl.find(Base::Host, "198.51.100.2:4000".parse().unwrap()).unwrap();
        cl.succeeded(direct, t0, None);
        assert_eq!(ps.update(&cl, t0), Some(direct));
        let later = t0 + Duration::from_secs(3);
        cl.succeeded(relayed, later, None);
        cl.expire(later, Some(direct));
        assert_eq!(ps.update(&cl, later), None);
        cl.expire(t0 + Duration::from_millis(4100), Some(direct));
        assert_eq!(ps.update(&cl, t0 + Duration::from_millis(4100)), Some(relayed));
    }

    #[test]
    fn the_callee_follows_the_caller_and_the_caller_only_follows_rebinding() {
        let t0 = Instant::now();
        let mut cl = list(t0);
        let direct = cl.find(Base::Host, "198.51.100.2:4000".parse().unwrap()).unwrap();
        let relayed = cl.find(Base::Host, "203.0.113.1:50000".parse().unwrap()).unwrap();
        cl.succeeded(direct, t0, None);
        cl.succeeded(relayed, t0, None);
        let mut callee = PathSelector::new(t0, false);
        assert_eq!(callee.update(&cl, t0), Some(direct));
        assert!(callee.follow_audio(relayed, true));
        assert_eq!(callee.update(&cl, t0 + Duration::from_secs(1)), None, "following sticks");
        let mut caller = PathSelector::new(t0, true);
        assert_eq!(caller.update(&cl, t0), Some(direct));
        assert!(!caller.follow_audio(relayed, true));
        let rebound = cl.add_peer_reflexive(Base::Host, "198.51.100.2:4999".parse().unwrap(), t0).unwrap();
        assert!(caller.follow_audio(rebound, false));
    }
}
