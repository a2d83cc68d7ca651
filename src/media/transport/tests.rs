//! Two transports on a virtual clock over a simulated network: NAT routers with port-preserving or
//! address-dependent mapping and address-and-port-dependent filtering (a home router that drops
//! unsolicited packets), 10 ms links. Whole call setups run in microseconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qvoice_proto::{
    Answer, Callee, CalleeParams, Caller, CallerParams, Candidate, CandidateKind, Codec, IdentitySecret, Offer,
    PrekeySecret, Reveal, Username,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const LINK: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mapping {
    /// Endpoint-independent, keeps the source port (Linux `masquerade` when the port is free).
    PortPreserving,
    /// A new port for every destination (`masquerade random`, many mobile and CGNAT networks).
    AddressDependent,
}

/// A NAT router with address-and-port-dependent filtering: inbound passes only as a reply to an
/// outbound packet of the same 5-tuple.
struct Nat {
    public: IpAddr,
    mapping: Mapping,
    /// (internal, remote) → public port.
    sessions: HashMap<(SocketAddr, SocketAddr), u16>,
    next_port: u16,
}

impl Nat {
    fn new(public: &str, mapping: Mapping) -> Self {
        Self { public: public.parse().unwrap(), mapping, sessions: HashMap::new(), next_port: 40_000 }
    }

    fn outbound(&mut self, internal: SocketAddr, remote: SocketAddr) -> SocketAddr {
        if let Some(&p) = self.sessions.get(&(internal, remote)) {
            return SocketAddr::new(self.public, p);
        }
        let port = match self.mapping {
            Mapping::PortPreserving => internal.port(),
            Mapping::AddressDependent => {
                self.next_port += 7;
                self.next_port
            }
        };
        self.sessions.insert((internal, remote), port);
        SocketAddr::new(self.public, port)
    }

    fn inbound(&self, from: SocketAddr, to: SocketAddr) -> Option<SocketAddr> {
        if to.ip() != self.public {
            return None;
        }
        self.sessions.iter().find(|((_, remote), port)| *remote == from && **port == to.port()).map(|((i, _), _)| *i)
    }

    /// The router forgets every binding and maps from a new address (a DHCP change, a CGNAT rebalance).
    fn rebind(&mut self, public: &str) {
        self.public = public.parse().unwrap();
        self.sessions.clear();
    }
}

/// One endpoint: its transport, its socket address, and the NAT in front of it (if any).
struct Peer {
    t: Transport,
    addr: SocketAddr,
    nat: Option<Nat>,
    audio_rx: usize,
    events: Vec<TransportEvent>,
    sent_to: HashMap<SocketAddr, usize>,
}

struct Datagram {
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

struct Sim {
    now: Instant,
    peers: [Peer; 2],
    wire: Vec<Datagram>,
}

fn keys(a: &[Candidate], b: &[Candidate]) -> (qvoice_proto::SessionKeys, qvoice_proto::SessionKeys) {
    let mut rng = StdRng::seed_from_u64(10);
    let (ida, idb) = (IdentitySecret::generate(&mut rng), IdentitySecret::generate(&mut rng));
    let prekeys = vec![PrekeySecret::generate(&mut rng, 7)];
    let now = 1_790_000_000_000;
    let caller_params = CallerParams {
        caller: Username::parse("alice").unwrap(),
        callee: Username::parse("bob").unwrap(),
        codecs: vec![Codec::Opus.into()],
        frame_ms: 20,
        candidates: a.to_vec(),
        obfuscation: false,
    };
    let (caller, offer) = Caller::start(
        &mut rng,
        now,
        &ida,
        caller_params,
        &idb.public(),
        &prekeys[0].sign(&idb, now + qvoice_proto::PREKEY_LIFETIME_MS),
    )
    .unwrap();
    let offer = Offer::parse(offer.to_bytes()).unwrap();
    let callee_params = CalleeParams {
        callee: Username::parse("bob").unwrap(),
        codecs: vec![Codec::Opus.into()],
        candidates: b.to_vec(),
        obfuscation: false,
    };
    let (callee, answer) = Callee::on_offer(&mut rng, now, &idb, &ida.public(), &offer, callee_params).unwrap();
    let (reveal, ck) = caller.on_answer(&mut rng, &Answer::parse(answer.to_bytes()).unwrap()).unwrap();
    let sk = callee.on_reveal(&Reveal::parse(reveal.to_bytes()).unwrap(), &prekeys).unwrap();
    (ck, sk)
}

/// Candidates as gathering would find them: host, and the NAT's mapping towards a STUN server.
fn gathered(addr: SocketAddr, nat: &mut Option<Nat>) -> Vec<Candidate> {
    let mut c = vec![Candidate::host(addr)];
    if let Some(n) = nat {
        let stun: SocketAddr = "198.51.100.1:3478".parse().unwrap();
        c.push(Candidate(n.outbound(addr, stun), CandidateKind::ServerReflexive));
    }
    c
}

impl Sim {
    fn new(a: (&str, Option<Nat>), b: (&str, Option<Nat>)) -> Self {
        let now = Instant::now();
        let (aa, ba): (SocketAddr, SocketAddr) = (a.0.parse().unwrap(), b.0.parse().unwrap());
        let (mut na, mut nb) = (a.1, b.1);
        let (ca, cb) = (gathered(aa, &mut na), gathered(ba, &mut nb));
        let (ka, kb) = keys(&ca, &cb);
        let mk = |k: qvoice_proto::SessionKeys, controlling| {
            let cfg = TransportConfig {
                crypto: k.media,
                remote: k.peer_candidates,
                controlling,
                host_v6: false,
                relay: None,
                silence_timeout: Duration::from_secs(5),
                frame_samples: 960,
            };
            Transport::new(cfg, Arc::new(Counters::default()), now)
        };
        let peer = |t, addr, nat| Peer { t, addr, nat, audio_rx: 0, events: Vec::new(), sent_to: HashMap::new() };
        Self { now, peers: [peer(mk(ka, true), aa, na), peer(mk(kb, false), ba, nb)], wire: Vec::new() }
    }

    fn owner(&mut self, to: SocketAddr) -> Option<(usize, SocketAddr)> {
        for (i, p) in self.peers.iter().enumerate() {
            match &p.nat {
                None if p.addr == to => return Some((i, to)),
                _ => {}
            }
        }
        None
    }

    /// Runs the network until `until`, sending 50 audio frames per second once a path is up.
    fn run(&mut self, until: Instant) {
        let mut next_audio = self.now;
        while self.now < until {
            let step = Duration::from_millis(1);
            self.now += step;
            let now = self.now;
            // Deliver due datagrams.
            let due: Vec<Datagram> = {
                let (due, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|d| d.at <= now);
                self.wire = rest;
                due
            };
            for d in due {
                let target = self.owner(d.to).or_else(|| {
                    self.peers
                        .iter()
                        .enumerate()
                        .find_map(|(i, p)| p.nat.as_ref()?.inbound(d.from, d.to).map(|a| (i, a)))
                });
                if let Some((i, _)) = target {
                    let p = &mut self.peers[i];
                    if p.t.handle_datagram(now, d.from, &d.data).is_some() {
                        p.audio_rx += 1;
                    }
                }
            }
            let audio = now >= next_audio;
            if audio {
                next_audio = now + Duration::from_millis(20);
            }
            for p in &mut self.peers {
                if audio {
                    p.t.send_audio(now, 0, &[0x55; 60]);
                }
                p.t.handle_timeout(now);
                while let Some(tx) = p.t.poll_transmit() {
                    *p.sent_to.entry(tx.to).or_default() += 1;
                    let from = match &mut p.nat {
                        Some(n) => n.outbound(p.addr, tx.to),
                        None => p.addr,
                    };
                    self.wire.push(Datagram { at: now + LINK, from, to: tx.to, data: tx.bytes().to_vec() });
                }
                while let Some(e) = p.t.poll_event() {
                    p.events.push(e);
                }
            }
        }
    }

    fn path_up_at(&self, i: usize) -> Option<PathInfo> {
        self.peers[i].events.iter().find_map(|e| match e {
            TransportEvent::PathUp(p) => Some(*p),
            _ => None,
        })
    }
}

#[test]
fn port_preserving_nats_connect_directly_within_a_few_round_trips() {
    let mut sim = Sim::new(
        ("198.18.1.2:5000", Some(Nat::new("203.0.113.10", Mapping::PortPreserving))),
        ("198.18.2.2:6000", Some(Nat::new("203.0.113.20", Mapping::PortPreserving))),
    );
    let t0 = sim.now;
    sim.run(t0 + Duration::from_millis(500));
    let (a, b) = (sim.path_up_at(0).expect("A has a path"), sim.path_up_at(1).expect("B has a path"));
    assert_eq!((a.kind, b.kind), (PathKind::Direct, PathKind::Direct));
    assert_eq!(a.remote, "203.0.113.20:6000".parse().unwrap());
    assert_eq!(b.remote, "203.0.113.10:5000".parse().unwrap());
    sim.run(t0 + Duration::from_secs(2));
    assert!(sim.peers[0].audio_rx > 60 && sim.peers[1].audio_rx > 60, "audio both ways");
    // Consent holds the path for the whole call: no spurious path changes, and past the check timeout
    // only the selected pair is still probed (once a second) besides standby pairs.
    sim.run(t0 + Duration::from_secs(30));
    for p in &sim.peers {
        assert!(p.events.iter().all(|e| matches!(e, TransportEvent::PathUp(_))), "{:?}", p.events);
        assert_eq!(p.t.working_pairs(), 1);
    }
}

#[test]
fn address_dependent_nats_without_a_relay_report_no_path_at_the_check_timeout_and_stop_probing() {
    let mut sim = Sim::new(
        ("198.18.1.2:5000", Some(Nat::new("203.0.113.10", Mapping::AddressDependent))),
        ("198.18.2.2:6000", Some(Nat::new("203.0.113.20", Mapping::AddressDependent))),
    );
    let t0 = sim.now;
    sim.run(t0 + CHECK_TIMEOUT - Duration::from_millis(5));
    assert!(sim.peers.iter().all(|p| p.events.is_empty()), "nothing before the timeout");
    sim.run(t0 + CHECK_TIMEOUT + Duration::from_millis(50));
    for p in &sim.peers {
        assert!(
            matches!(&p.events[..], [TransportEvent::NoPath(why)] if why.contains("configure a TURN relay")),
            "{:?}",
            p.events
        );
        assert_eq!(p.audio_rx, 0);
        assert!(p.t.is_dead());
    }
    // Probing limits: only signed candidates were probed, a bounded number of times, and never again.
    let before: Vec<usize> = sim.peers.iter().map(|p| p.sent_to.values().sum()).collect();
    sim.run(t0 + Duration::from_secs(30));
    let after: Vec<usize> = sim.peers.iter().map(|p| p.sent_to.values().sum()).collect();
    assert_eq!(before, after, "no probes after the check timeout");
    for p in &sim.peers {
        assert_eq!(p.sent_to.len(), 2, "only the two signed candidates: {:?}", p.sent_to);
        assert!(p.sent_to.values().all(|&n| n <= 14), "{:?}", p.sent_to);
    }
}

#[test]
fn a_public_peer_learns_a_peer_reflexive_address_behind_an_address_dependent_nat() {
    let mut sim = Sim::new(
        ("198.18.1.2:5000", Some(Nat::new("203.0.113.10", Mapping::AddressDependent))),
        ("192.0.2.10:6000", None),
    );
    let t0 = sim.now;
    sim.run(t0 + Duration::from_secs(1));
    let b = sim.path_up_at(1).expect("the public peer has a path");
    assert_eq!(b.kind, PathKind::Direct);
    // A's NAT mapped towards B with a port nobody signed: B learned it from A's authenticated probe.
    assert_ne!(b.remote, sim.peers[0].t.pairs()[0].remote);
    assert!(sim.peers[1].t.pairs().iter().any(|p| p.kind == RemoteKind::PeerReflexive && p.remote == b.remote));
    sim.run(t0 + Duration::from_secs(2));
    assert!(sim.peers[0].audio_rx > 30 && sim.peers[1].audio_rx > 30);
}

#[test]
fn the_call_follows_a_nat_rebinding_mid_call() {
    let mut sim = Sim::new(
        ("198.18.1.2:5000", Some(Nat::new("203.0.113.10", Mapping::PortPreserving))),
        ("192.0.2.10:6000", None),
    );
    let t0 = sim.now;
    sim.run(t0 + Duration::from_secs(2));
    assert_eq!(sim.path_up_at(1).unwrap().remote, "203.0.113.10:5000".parse().unwrap());
    if let Some(n) = &mut sim.peers[0].nat {
        n.rebind("203.0.113.11");
    }
    let before = sim.peers[1].audio_rx;
    sim.run(t0 + Duration::from_secs(4));
    let moved = sim.peers[1].events.iter().any(
        |e| matches!(e, TransportEvent::PathChanged { to, .. } if to.remote == "203.0.113.11:5000".parse().unwrap()),
    );
    assert!(moved, "{:?}", sim.peers[1].events);
    assert!(sim.peers[1].audio_rx - before > 90, "audio keeps flowing to B");
    let a_before = sim.peers[0].audio_rx;
    sim.run(t0 + Duration::from_secs(5));
    assert!(sim.peers[0].audio_rx - a_before > 40, "and back to A");
}

#[test]
fn hostile_and_foreign_datagrams_are_dropped_and_counted() {
    let mut sim = Sim::new(("192.0.2.5:5000", None), ("192.0.2.6:6000", None));
    let now = sim.now;
    let t = &mut sim.peers[0].t;
    let from: SocketAddr = "192.0.2.99:1".parse().unwrap();
    assert!(t.handle_datagram(now, from, &[]).is_none());
    assert!(t.handle_datagram(now, from, &[0x11; 40]).is_none());
    assert!(t.handle_datagram(now, from, &vec![0u8; MAX_WIRE + 1]).is_none());
    // STUN is recognised and never taken for media.
    let stun = Message::builder_request(BINDING, MessageWriteVec::new()).finish().to_vec();
    assert!(is_stun(&stun));
    assert!(t.handle_datagram(now, from, &stun).is_none());
    let c = &t.counters;
    assert_eq!(c.malformed.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert!(t.path().is_none(), "nothing authenticated, nothing selected");
    assert!(t.pairs().iter().all(|p| p.kind != RemoteKind::PeerReflexive));
}
