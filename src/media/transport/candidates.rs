//! Candidates and their priorities, and the gatherer that finds our own server-reflexive and relayed
//! addresses before the handshake (STUN Binding and TURN Allocate from the media socket itself).
//!
//! Priorities follow RFC 8445 §5.1.2 in spirit: a pair's kind (direct before relayed) comes first, then
//! the remote candidate's type preference (host > peer-reflexive > server-reflexive > relayed), then its
//! position in the peer's signed list. The gatherer is sans-IO like the rest of the transport: the socket
//! owner ([`super::net::gather`]) feeds it datagrams and timeouts.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use qvoice_proto::{Candidate, CandidateKind};
use stun_proto::types::attribute::XorMappedAddress;
use stun_proto::types::message::{BINDING, Message, MessageWriteVec, TransactionId};
use stun_proto::types::prelude::*;
use turn_client_proto::api::{TurnConfig, TurnEvent, TurnRecvRet};
use turn_client_proto::prelude::*;
use turn_client_proto::types::{TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

use super::timers::{STUN_RETRANSMIT, STUN_RETRIES, Sans};

/// Which of our addresses a pair sends from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Base {
    /// Straight from the media socket (our host address, seen by the peer as host, server- or
    /// peer-reflexive).
    Host,
    /// Through our TURN allocation.
    Relay,
}

/// How we know a remote address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemoteKind {
    /// Signed by the peer in the OFFER or ANSWER.
    Signed(CandidateKind),
    /// Learned from an authenticated frame that arrived from an address the peer did not sign (its NAT
    /// mapped it differently towards us, or rebound mid-call).
    PeerReflexive,
}

/// Whether media on a pair goes through a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Peer to peer (possibly through NATs).
    Direct,
    /// Through a TURN relay (ours, the peer's, or both).
    Relayed,
}

impl PathKind {
    /// The kind of a pair from `base` to a remote of kind `remote`.
    pub fn of(base: Base, remote: RemoteKind) -> Self {
        match (base, remote) {
            (Base::Relay, _) | (_, RemoteKind::Signed(CandidateKind::Relayed)) => Self::Relayed,
            _ => Self::Direct,
        }
    }

    /// `direct` or `relayed`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relayed => "relayed",
        }
    }
}

/// RFC 8445 type preferences (§5.1.2.2), by remote kind.
fn type_preference(remote: RemoteKind) -> u64 {
    match remote {
        RemoteKind::Signed(CandidateKind::Host) => 126,
        RemoteKind::PeerReflexive => 110,
        RemoteKind::Signed(CandidateKind::ServerReflexive) => 100,
        RemoteKind::Signed(CandidateKind::Relayed) => 0,
    }
}

/// A pair's priority: higher is better. Direct pairs rank above every relayed pair; a pair through one
/// relay above one through two; then the remote type, then the peer's own order (`index` in its list).
pub fn pair_priority(base: Base, remote: RemoteKind, index: usize) -> u64 {
    let direct = u64::from(PathKind::of(base, remote) == PathKind::Direct);
    let relays = u64::from(base == Base::Relay) + u64::from(remote == RemoteKind::Signed(CandidateKind::Relayed));
    let order = 255u64.saturating_sub(index as u64);
    direct << 40 | (2 - relays) << 32 | type_preference(remote) << 16 | order
}

/// What gathering found, handed from the driver to the media engine with the socket.
#[derive(Debug)]
pub struct Gathered {
    /// Our candidates in priority order (host first), at most [`qvoice_proto::MAX_CANDIDATES`].
    pub candidates: Vec<Candidate>,
    /// The TURN client holding our allocation, if one was made.
    pub relay: Option<RelayAllocation>,
    /// Where the server-reflexive address came from (for logs).
    pub stun_server: Option<SocketAddr>,
    /// Human-readable notes on what failed (a STUN server that did not answer, a refused allocation).
    pub problems: Vec<String>,
}

/// A live TURN allocation: the sans-IO client and the address the relay allocated for us.
#[derive(Debug)]
pub struct RelayAllocation {
    /// The client state (refreshes, permissions, channels).
    pub client: TurnClientUdp,
    /// The TURN server's address.
    pub server: SocketAddr,
    /// Our relayed transport address on it.
    pub relayed: SocketAddr,
}

/// TURN server and credentials as the registry hands them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// Server address (UDP).
    pub addr: SocketAddr,
    /// TURN REST API user name (`<expiry>:<user>`).
    pub username: String,
    /// TURN REST API password.
    pub password: String,
}

/// A datagram the gatherer wants sent from the media socket.
#[derive(Debug)]
pub struct GatherTransmit {
    /// Destination.
    pub to: SocketAddr,
    /// Bytes.
    pub data: Vec<u8>,
}

struct StunQuery {
    server: SocketAddr,
    txid: TransactionId,
    request: Vec<u8>,
    sent: u32,
    next: Instant,
    result: Option<SocketAddr>,
}

/// Finds server-reflexive addresses (STUN Binding to each server) and a relayed address (TURN Allocate)
/// from the media socket, within a bounded time.
#[derive(Debug)]
pub struct Gatherer {
    local: SocketAddr,
    epoch: Instant,
    stun: Vec<StunQuery>,
    turn: Option<(TurnClientUdp, SocketAddr)>,
    relayed: Option<SocketAddr>,
    turn_failed: Option<String>,
    deadline: Instant,
    out: VecDeque<GatherTransmit>,
}

impl std::fmt::Debug for StunQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StunQuery").field("server", &self.server).field("result", &self.result).finish()
    }
}

impl Gatherer {
    /// Starts queries to `stun_servers` and an allocation on `turn`, giving up at `now + timeout`.
    pub fn new(
        local: SocketAddr,
        stun_servers: &[SocketAddr],
        turn: Option<&TurnServer>,
        now: Instant,
        timeout: Duration,
    ) -> Self {
        let stun = stun_servers
            .iter()
            .map(|&server| {
                let msg = Message::builder_request(BINDING, MessageWriteVec::new());
                let txid = msg.transaction_id();
                StunQuery { server, txid, request: msg.finish(), sent: 0, next: now, result: None }
            })
            .collect();
        let turn = turn.map(|t| {
            let config = TurnConfig::new(TurnCredentials::new(&t.username, &t.password));
            (TurnClientUdp::allocate(local, t.addr, config), t.addr)
        });
        let mut g = Self {
            local,
            epoch: now,
            stun,
            turn,
            relayed: None,
            turn_failed: None,
            deadline: now + timeout,
            out: VecDeque::new(),
        };
        g.handle_timeout(now);
        g
    }

    fn sans(&self, now: Instant) -> stun_proto::Instant {
        Sans::at(self.epoch, now)
    }

    /// Feeds a datagram that arrived on the media socket. Returns false when it was not for us.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let sn = self.sans(now);
        if let Some((client, server)) = &mut self.turn
            && from == *server
        {
            let t = turn_client_proto::api::Transmit::new(data, TransportType::Udp, from, self.local);
            match client.recv(t, sn) {
                TurnRecvRet::Handled => {
                    self.drain_turn(now);
                    return true;
                }
                TurnRecvRet::Ignored(_) => {}
                TurnRecvRet::PeerData(_) | TurnRecvRet::PeerIcmp { .. } => return true,
            }
        }
        let Ok(msg) = Message::from_bytes(data) else { return false };
        let Some(q) = self.stun.iter_mut().find(|q| q.server == from && q.txid == msg.transaction_id()) else {
            return false;
        };
        if msg.has_class(stun_proto::types::message::MessageClass::Success)
            && let Ok(x) = msg.attribute::<XorMappedAddress>()
        {
            q.result = Some(x.addr(msg.transaction_id()));
        }
        true
    }

    fn drain_turn(&mut self, now: Instant) {
        let sn = self.sans(now);
        let Some((client, _)) = &mut self.turn else { return };
        while let Some(t) = client.poll_transmit(sn) {
            self.out.push_back(GatherTransmit { to: t.to, data: t.data.to_vec() });
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                TurnEvent::AllocationCreated(_, addr) => self.relayed = Some(addr),
                TurnEvent::AllocationCreateFailed(family) => {
                    self.turn_failed = Some(format!("the TURN server refused an {family:?} allocation"));
                }
                _ => {}
            }
        }
    }

    /// Advances retransmissions and the TURN client.
    pub fn handle_timeout(&mut self, now: Instant) {
        for q in &mut self.stun {
            if q.result.is_none() && q.sent < STUN_RETRIES && now >= q.next {
                q.sent += 1;
                q.next = now + STUN_RETRANSMIT * q.sent;
                self.out.push_back(GatherTransmit { to: q.server, data: q.request.clone() });
            }
        }
        let sn = self.sans(now);
        if let Some((client, _)) = &mut self.turn
            && let turn_client_proto::api::TurnPollRet::Closed = client.poll(sn)
            && self.relayed.is_none()
        {
            self.turn_failed.get_or_insert_with(|| "the TURN server did not answer".into());
        }
        self.drain_turn(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<GatherTransmit> {
        self.out.pop_front()
    }

    /// When to call [`Gatherer::handle_timeout`] next.
    pub fn poll_timeout(&mut self, now: Instant) -> Instant {
        let mut t = self.deadline;
        for q in &self.stun {
            if q.result.is_none() && q.sent < STUN_RETRIES {
                t = t.min(q.next);
            }
        }
        if let Some((client, _)) = &mut self.turn
            && let turn_client_proto::api::TurnPollRet::WaitUntil(w) = client.poll(Sans::at(self.epoch, now))
        {
            t = t.min(Sans::to_std(self.epoch, w));
        }
        t.max(now)
    }

    /// Whether every query has an answer (or has failed) or the deadline passed.
    pub fn is_done(&self, now: Instant) -> bool {
        let stun_done = self.stun.iter().all(|q| q.result.is_some() || q.sent >= STUN_RETRIES && now >= q.next);
        let turn_done = self.turn.is_none() || self.relayed.is_some() || self.turn_failed.is_some();
        now >= self.deadline || stun_done && turn_done
    }

    /// Our candidates: `host` first, then distinct server-reflexive addresses, then the relayed one.
    pub fn finish(self, host: &[SocketAddr]) -> Gathered {
        let mut candidates: Vec<Candidate> = host.iter().map(|&a| Candidate::host(a)).collect();
        let mut problems = Vec::new();
        let mut stun_server = None;
        for q in &self.stun {
            match q.result {
                Some(addr) => {
                    stun_server.get_or_insert(q.server);
                    if !candidates.iter().any(|c| c.addr() == addr) {
                        candidates.push(Candidate(addr, CandidateKind::ServerReflexive));
                    }
                }
                None => problems.push(format!("STUN server {} did not answer", q.server)),
            }
        }
        let relay = match (self.turn, self.relayed) {
            (Some((client, server)), Some(relayed)) => {
                candidates.push(Candidate(relayed, CandidateKind::Relayed));
                Some(RelayAllocation { client, server, relayed })
            }
            (Some((_, server)), None) => {
                let why = self.turn_failed.unwrap_or_else(|| "no answer in time".into());
                problems.push(format!("TURN server {server}: {why}"));
                None
            }
            _ => None,
        };
        // Keep the relayed candidate even when the list is full: it is the one that always works.
        if candidates.len() > qvoice_proto::MAX_CANDIDATES {
            let relayed = candidates.iter().position(|c| c.kind() == CandidateKind::Relayed);
            let keep = relayed.map(|i| candidates[i]);
            candidates.truncate(qvoice_proto::MAX_CANDIDATES - usize::from(keep.is_some()));
            candidates.extend(keep);
        }
        Gathered { candidates, relay, stun_server, problems }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_pairs_outrank_relayed_ones_and_host_outranks_reflexive() {
        let host = pair_priority(Base::Host, RemoteKind::Signed(CandidateKind::Host), 0);
        let prflx = pair_priority(Base::Host, RemoteKind::PeerReflexive, 7);
        let srflx = pair_priority(Base::Host, RemoteKind::Signed(CandidateKind::ServerReflexive), 1);
        let via_theirs = pair_priority(Base::Host, RemoteKind::Signed(CandidateKind::Relayed), 2);
        let via_ours = pair_priority(Base::Relay, RemoteKind::Signed(CandidateKind::Host), 0);
        let via_both = pair_priority(Base::Relay, RemoteKind::Signed(CandidateKind::Relayed), 0);
        assert!(host > prflx && prflx > srflx && srflx > via_theirs.max(via_ours));
        assert!(via_theirs.min(via_ours) > via_both);
        assert_eq!(PathKind::of(Base::Host, RemoteKind::Signed(CandidateKind::Relayed)), PathKind::Relayed);
        assert_eq!(PathKind::of(Base::Host, RemoteKind::PeerReflexive), PathKind::Direct);
        assert!(
            pair_priority(Base::Host, RemoteKind::Signed(CandidateKind::Host), 0)
                > pair_priority(Base::Host, RemoteKind::Signed(CandidateKind::Host), 1)
        );
    }

    #[test]
    fn gatherer_learns_the_mapped_address_and_gives_up_on_silent_servers() {
        let t0 = Instant::now();
        let local: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let (alive, dead): (SocketAddr, SocketAddr) =
            ("192.0.2.1:3478".parse().unwrap(), "192.0.2.9:3478".parse().unwrap());
        let mut g = Gatherer::new(local, &[alive, dead], None, t0, Duration::from_millis(1500));
        let first: Vec<_> = std::iter::from_fn(|| g.poll_transmit()).collect();
        assert_eq!(first.len(), 2);
        let req = first.iter().find(|t| t.to == alive).unwrap();
        let req = Message::from_bytes(&req.data).unwrap();
        let mut resp = Message::builder_success(&req, MessageWriteVec::new());
        let mapped: SocketAddr = "203.0.113.5:61000".parse().unwrap();
        resp.add_attribute(&XorMappedAddress::new(mapped, req.transaction_id())).unwrap();
        let resp = resp.finish();
        assert!(!g.handle_datagram(t0, dead, &resp), "an answer from the wrong server is not ours");
        assert!(g.handle_datagram(t0, alive, &resp));
        assert!(!g.is_done(t0));
        let mut now = t0;
        let mut sent_to_dead = 1;
        while !g.is_done(now) {
            now = g.poll_timeout(now).max(now + Duration::from_millis(1));
            g.handle_timeout(now);
            sent_to_dead += std::iter::from_fn(|| g.poll_transmit()).filter(|t| t.to == dead).count();
        }
        assert!(now <= t0 + Duration::from_millis(1500));
        assert_eq!(sent_to_dead as u32, STUN_RETRIES, "bounded retransmissions");
        let host: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let got = g.finish(&[host]);
        assert_eq!(got.candidates, vec![Candidate::host(host), Candidate(mapped, CandidateKind::ServerReflexive)]);
        assert_eq!(got.problems.len(), 1);
    }
}
