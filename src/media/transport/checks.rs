//! Candidate pairs and their connectivity checks.
//!
//! A pair is (our base, a remote address). Pairs are formed only from the candidates the peer signed in
//! the OFFER/ANSWER, plus peer-reflexive addresses from which an authenticated frame arrived. A check is
//! an encrypted probe frame; only the peer holding the call's keys can answer it, so a probe-ack proves
//! the pair works both ways. Checks are paced ([`CHECK_PACE`]), retried with backoff, and stop at
//! [`CHECK_TIMEOUT`] for pairs that never answered, so a signed list of third-party addresses costs them
//! at most a few dozen small datagrams each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use qvoice_proto::Candidate;

use super::candidates::{Base, PathKind, RemoteKind, pair_priority};
use super::timers::{
    CHECK_INTERVAL, CHECK_INTERVAL_MAX, CHECK_PACE, CHECK_TIMEOUT, CONSENT_INTERVAL, CONSENT_TIMEOUT, STANDBY_INTERVAL,
    STANDBY_TIMEOUT,
};

/// Most pairs one call keeps (signed ones plus peer-reflexive ones); also the probe-id space.
pub const MAX_PAIRS: usize = 32;
/// Most peer-reflexive remotes learned per call.
const MAX_PEER_REFLEXIVE: usize = 4;

/// Where a pair stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairState {
    /// Not answered yet; checks are sent.
    Checking,
    /// A check was answered (consent is fresh).
    Succeeded,
    /// Never answered before the check timeout, or lost consent: no more probes.
    Failed,
}

/// One candidate pair.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    /// Which of our addresses sends.
    pub base: Base,
    /// The peer's address.
    pub remote: SocketAddr,
    /// How we know the remote.
    pub kind: RemoteKind,
    /// Ordering key (higher is better).
    pub priority: u64,
    /// State.
    pub state: PairState,
    next_check: Instant,
    interval: Duration,
    /// When a probe on it was last answered.
    pub last_ack: Option<Instant>,
    /// Last measured round-trip time.
    pub rtt: Option<Duration>,
}

impl Pair {
    /// Direct or relayed.
    pub fn path_kind(&self) -> PathKind {
        PathKind::of(self.base, self.kind)
    }
}

/// All pairs of a call, and the pacing of their checks.
#[derive(Debug)]
pub struct CheckList {
    pairs: Vec<Pair>,
    start: Instant,
    next_pace: Instant,
    prflx: usize,
}

impl CheckList {
    /// Pairs every signed remote candidate with our host base (same address family) and, when we have a
    /// relay, with the relay base (IPv4 remotes; our allocations are IPv4).
    pub fn new(remote: &[Candidate], host_v6: bool, relay: bool, now: Instant) -> Self {
        let mut pairs = Vec::new();
        for (i, c) in remote.iter().enumerate().take(qvoice_proto::MAX_CANDIDATES) {
            let kind = RemoteKind::Signed(c.kind());
            let mut bases = Vec::with_capacity(2);
            if c.addr().is_ipv4() || host_v6 {
                bases.push(Base::Host);
            }
            if relay && c.addr().is_ipv4() {
                bases.push(Base::Relay);
            }
            for base in bases {
                if pairs.iter().any(|p: &Pair| p.base == base && p.remote == c.addr()) {
                    continue;
                }
                pairs.push(Pair {
                    base,
                    remote: c.addr(),
                    kind,
                    priority: pair_priority(base, kind, i),
                    state: PairState::Checking,
                    next_check: now,
                    interval: CHECK_INTERVAL,
                    last_ack: None,
                    rtt: None,
                });
            }
        }
        // Best first, so the first round of checks tries the likeliest paths first.
        pairs.sort_by_key(|p| std::cmp::Reverse(p.priority));
        Self { pairs, start: now, next_pace: now, prflx: 0 }
    }

    /// The pairs.
    pub fn pairs(&self) -> &[Pair] {
        &self.pairs
    }

    /// A pair by index.
    pub fn get(&self, i: usize) -> Option<&Pair> {
        self.pairs.get(i)
    }

    /// The pair on `(base, remote)`.
    pub fn find(&self, base: Base, remote: SocketAddr) -> Option<usize> {
        self.pairs.iter().position(|p| p.base == base && p.remote == remote)
    }

    /// Whether `remote` is an address the peer signed (any base).
    pub fn is_signed(&self, remote: SocketAddr) -> bool {
        self.pairs.iter().any(|p| p.remote == remote && matches!(p.kind, RemoteKind::Signed(_)))
    }

    /// Adds a peer-reflexive pair after an authenticated frame came from `(base, remote)`; `None` when
    /// the per-call limit is reached. Its first check goes out at once (a triggered check).
    pub fn add_peer_reflexive(&mut self, base: Base, remote: SocketAddr, now: Instant) -> Option<usize> {
        if let Some(i) = self.find(base, remote) {
            return Some(i);
        }
        if self.prflx >= MAX_PEER_REFLEXIVE || self.pairs.len() >= MAX_PAIRS {
            return None;
        }
        self.prflx += 1;
        let kind = RemoteKind::PeerReflexive;
        self.pairs.push(Pair {
            base,
            remote,
            kind,
            priority: pair_priority(base, kind, 0),
            state: PairState::Checking,
            next_check: now,
            interval: CHECK_INTERVAL,
            last_ack: None,
            rtt: None,
        });
        Some(self.pairs.len() - 1)
    }

    /// Schedules a check on pair `i` now (the peer just probed us on it: answer its check with ours).
    pub fn trigger(&mut self, i: usize, now: Instant) {
        if let Some(p) = self.pairs.get_mut(i)
            && p.state != PairState::Succeeded
        {
            if p.state == PairState::Failed && now < self.start + CHECK_TIMEOUT {
                p.state = PairState::Checking;
            }
            p.next_check = p.next_check.min(now);
        }
    }

    /// Marks pair `i` as working: a probe sent on it was answered (or, for `rtt = None`, media arrived on
    /// it and we follow the peer).
    pub fn succeeded(&mut self, i: usize, now: Instant, rtt: Option<Duration>) {
        if let Some(p) = self.pairs.get_mut(i) {
            p.state = PairState::Succeeded;
            p.last_ack = Some(now);
            if rtt.is_some() {
                p.rtt = rtt;
            }
            p.interval = CHECK_INTERVAL;
            p.next_check = p.next_check.max(now + STANDBY_INTERVAL.min(CONSENT_INTERVAL));
        }
    }

    /// Pair `i` was just selected: its consent checks start at the consent interval.
    pub fn selected(&mut self, i: usize, now: Instant) {
        if let Some(p) = self.pairs.get_mut(i) {
            p.next_check = p.next_check.min(now + CONSENT_INTERVAL);
        }
    }

    /// The next pair to probe, if one is due at `now` and pacing allows; schedules its next probe.
    /// `selected` is probed at the consent interval, other working pairs at the standby interval.
    pub fn next_check(&mut self, now: Instant, selected: Option<usize>) -> Option<usize> {
        self.expire(now, selected);
        if now < self.next_pace {
            return None;
        }
        let i = self
            .pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state != PairState::Failed && p.next_check <= now)
            .max_by_key(|(_, p)| (p.state == PairState::Checking, p.priority))
            .map(|(i, _)| i)?;
        let p = &mut self.pairs[i];
        p.next_check = match p.state {
            PairState::Checking => {
                let next = now + p.interval;
                p.interval = (p.interval * 2).min(CHECK_INTERVAL_MAX);
                next
            }
            _ if selected == Some(i) => now + CONSENT_INTERVAL,
            _ => now + STANDBY_INTERVAL,
        };
        self.next_pace = now + CHECK_PACE;
        Some(i)
    }

    /// Fails pairs that never answered by the check timeout and working pairs that lost consent (no
    /// answer for [`CONSENT_TIMEOUT`] on the selected pair, [`STANDBY_TIMEOUT`] on the others).
    pub fn expire(&mut self, now: Instant, selected: Option<usize>) {
        let checks_over = now >= self.start + CHECK_TIMEOUT;
        for (i, p) in self.pairs.iter_mut().enumerate() {
            let timeout = if selected == Some(i) { CONSENT_TIMEOUT } else { STANDBY_TIMEOUT };
            match p.state {
                PairState::Checking if checks_over => p.state = PairState::Failed,
                PairState::Succeeded if p.last_ack.is_some_and(|t| now >= t + timeout) => {
                    // Lost consent: check it again like a new pair until the check timeout, then give up.
                    p.state = if checks_over { PairState::Failed } else { PairState::Checking };
                    p.next_check = now;
                    p.interval = CHECK_INTERVAL;
                }
                _ => {}
            }
        }
    }

    /// When [`CheckList::next_check`] may next return a pair.
    pub fn poll_timeout(&self, selected: Option<usize>) -> Option<Instant> {
        let due = self.pairs.iter().filter(|p| p.state != PairState::Failed).map(|p| p.next_check).min()?;
        let consent = self
            .pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PairState::Succeeded)
            .filter_map(|(i, p)| {
                let timeout = if selected == Some(i) { CONSENT_TIMEOUT } else { STANDBY_TIMEOUT };
                p.last_ack.map(|t| t + timeout)
            })
            .min();
        let checks_over = (self.start + CHECK_TIMEOUT).max(self.start);
        let any_checking = self.pairs.iter().any(|p| p.state == PairState::Checking);
        let mut t = due.max(self.next_pace);
        if let Some(c) = consent {
            t = t.min(c);
        }
        if any_checking {
            t = t.min(checks_over);
        }
        Some(t)
    }

    /// Whether every pair has failed (nothing left to try).
    pub fn all_failed(&self) -> bool {
        self.pairs.iter().all(|p| p.state == PairState::Failed)
    }

    /// The best working pair of the given kind.
    pub fn best(&self, kind: PathKind) -> Option<usize> {
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PairState::Succeeded && p.path_kind() == kind)
            .max_by_key(|(_, p)| p.priority)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use qvoice_proto::CandidateKind;

    use super::*;

    fn cands() -> Vec<Candidate> {
        vec![
            Candidate::host("10.1.0.2:4000".parse().unwrap()),
            Candidate("198.51.100.2:4000".parse().unwrap(), CandidateKind::ServerReflexive),
            Candidate("[2001:db8::2]:4000".parse().unwrap(), CandidateKind::Host),
            Candidate("203.0.113.1:50000".parse().unwrap(), CandidateKind::Relayed),
        ]
    }

    #[test]
    fn pairs_follow_families_and_are_checked_best_first_at_a_bounded_pace() {
        let t0 = Instant::now();
        let mut cl = CheckList::new(&cands(), false, true, t0);
        // No IPv6 on our socket: the v6 host candidate gets no host pair, and relays are IPv4 only.
        assert_eq!(cl.pairs().len(), 6);
        assert!(cl.pairs().windows(2).all(|w| w[0].priority >= w[1].priority));
        assert_eq!(cl.pairs()[0].remote, "10.1.0.2:4000".parse().unwrap());
        // With IPv6 on our socket the v6 host candidate is paired too (host base only).
        let v6 = CheckList::new(&cands(), true, true, t0);
        assert_eq!(v6.pairs().len(), 7);
        assert!(v6.find(Base::Host, "[2001:db8::2]:4000".parse().unwrap()).is_some());
        // Pace: one check per CHECK_PACE, and never more than one per call at the same instant.
        assert!(cl.next_check(t0, None).is_some());
        assert!(cl.next_check(t0, None).is_none());
        let mut sent = 0usize;
        let mut now = t0;
        while now < t0 + CHECK_TIMEOUT + Duration::from_secs(5) {
            if cl.next_check(now, None).is_some() {
                sent += 1;
            }
            now += Duration::from_millis(5);
        }
        // Backoff to 800 ms per pair: ~10 probes per pair within the 8 s timeout, then nothing.
        assert!(sent <= 6 * 14, "sent {sent}");
        assert!(cl.all_failed());
        assert!(cl.next_check(now, None).is_none());
        assert!(cl.poll_timeout(None).is_none());
    }

    #[test]
    fn consent_and_selection_intervals() {
        let t0 = Instant::now();
        let mut cl = CheckList::new(&cands()[..1], false, false, t0);
        assert_eq!(cl.next_check(t0, None), Some(0));
        cl.succeeded(0, t0 + Duration::from_millis(30), Some(Duration::from_millis(30)));
        assert_eq!(cl.best(PathKind::Direct), Some(0));
        assert_eq!(cl.best(PathKind::Relayed), None);
        // Selected: probed every second; answered probes keep it working.
        let mut now = t0 + Duration::from_millis(30);
        let mut probes = 0;
        while now < t0 + Duration::from_secs(10) {
            if cl.next_check(now, Some(0)).is_some() {
                probes += 1;
                cl.succeeded(0, now, None);
            }
            now += Duration::from_millis(10);
        }
        assert!((9..=11).contains(&probes), "{probes}");
        // Unanswered from here: consent is lost after CONSENT_TIMEOUT; past the check timeout it fails.
        let silent_from = now;
        while cl.pairs()[0].state == PairState::Succeeded {
            cl.next_check(now, Some(0));
            now += Duration::from_millis(10);
        }
        assert!(now - silent_from <= CONSENT_TIMEOUT + Duration::from_millis(20));
        assert_eq!(cl.pairs()[0].state, PairState::Failed);
    }

    #[test]
    fn peer_reflexive_pairs_are_bounded() {
        let t0 = Instant::now();
        let mut cl = CheckList::new(&cands()[..1], false, false, t0);
        for port in 0..10u16 {
            let r = SocketAddr::from(([198, 51, 100, 9], 6000 + port));
            let added = cl.add_peer_reflexive(Base::Host, r, t0);
            assert_eq!(added.is_some(), port < 4);
        }
        assert!(!cl.is_signed("198.51.100.9:6000".parse().unwrap()));
        assert!(cl.is_signed("10.1.0.2:4000".parse().unwrap()));
    }
}
