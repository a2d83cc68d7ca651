//! Fuzzes what the client's media socket does with datagrams from the network: the candidate gatherer's
//! STUN Binding and TURN Allocate answers (`src/media/transport/candidates.rs`, parsed by the `stun-proto`
//! and `turn-client-proto` crates) and the transport's demultiplexing of STUN, TURN and media frames
//! (`Transport::handle_datagram`).
//!
//! The input is a list of records: `source (u8) ‖ flags (u8) ‖ advance ms (u8) ‖ len (u8) ‖ bytes`. The
//! source picks who sent it (the STUN server, the TURN server, a signed peer candidate, a stranger); flag bit
//! 0 splices the transaction id of the last request sent to that server into bytes 8..20, so answers can
//! match a pending request the way a real server's do; bit 1 feeds the record to the transport instead of the
//! gatherer. The virtual clock moves by the advance byte, and both state machines get their timeouts.
//!
//! Properties: nothing panics; every datagram either side emits fits the wire limit; the gathered
//! candidate list respects the protocol's maximum; a transport without a relay never addresses anyone but
//! the signed candidates and the (unsigned, bounded) peer-reflexive ones it learned from authenticated frames.

#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use qvoice::media::metrics::Counters;
use qvoice::media::transport::{Gatherer, MAX_WIRE, Transport, TransportConfig, TurnServer};
use qvoice_proto::media::{DirectionKeys, MediaCrypto};
use qvoice_proto::{Candidate, MAX_CANDIDATES, SessionId};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("fixture address")
}

fn crypto() -> MediaCrypto {
    let a = DirectionKeys { key: [1; 32], iv: [2; 12], obf: [3; 32] };
    let b = DirectionKeys { key: [4; 32], iv: [5; 12], obf: [6; 32] };
    MediaCrypto::new(&a, &b, SessionId(7), SessionId(9), false)
}

fuzz_target!(|data: &[u8]| {
    let local = addr("10.0.0.2:5000");
    let stun = addr("192.0.2.1:3478");
    let turn = addr("192.0.2.2:3478");
    let peers = [addr("198.51.100.7:6000"), addr("[2001:db8::7]:6000")];
    let stranger = addr("203.0.113.66:9999");
    let start = Instant::now();
    let mut now = start;
    let server = TurnServer { addr: turn, username: "1767225600:alice".into(), password: "secret".into() };
    let mut gatherer = Gatherer::new(local, &[stun], Some(&server), now, Duration::from_millis(1500));
    let counters = Arc::new(Counters::default());
    let remote: Vec<Candidate> = peers.iter().map(|&a| Candidate::host(a)).collect();
    let cfg = TransportConfig {
        crypto: crypto(),
        remote: remote.clone(),
        controlling: true,
        host_v6: true,
        relay: None,
        silence_timeout: Duration::from_secs(5),
        frame_samples: 960,
    };
    let mut transport = Transport::new(cfg, counters, now);
    let mut last_to_stun: Option<Vec<u8>> = None;
    let mut last_to_turn: Option<Vec<u8>> = None;

    let mut rest = data;
    let mut buf = [0u8; 2048];
    while rest.len() >= 4 {
        let (source, flags, advance, len) = (rest[0], rest[1], rest[2], usize::from(rest[3]) * 8);
        rest = &rest[4..];
        let take = len.min(rest.len());
        let bytes = &rest[..take];
        rest = &rest[take..];
        let from = match source % 5 {
            0 => stun,
            1 => turn,
            2 => peers[0],
            3 => peers[1],
            _ => stranger,
        };
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        let last = if from == stun { &last_to_stun } else { &last_to_turn };
        if flags & 1 != 0
            && n >= 20
            && let Some(req) = last
            && req.len() >= 20
        {
            buf[8..20].copy_from_slice(&req[8..20]);
        }
        if flags & 2 != 0 {
            let _ = transport.handle_datagram(now, from, &buf[..n]);
        } else {
            let _ = gatherer.handle_datagram(now, from, &buf[..n]);
        }
        now += Duration::from_millis(u64::from(advance));
        gatherer.handle_timeout(now);
        transport.handle_timeout(now);
        while let Some(t) = gatherer.poll_transmit() {
            assert!(t.data.len() <= MAX_WIRE, "gatherer datagram of {} bytes", t.data.len());
            if t.to == stun {
                last_to_stun = Some(t.data);
            } else if t.to == turn {
                last_to_turn = Some(t.data);
            }
        }
        while let Some(t) = transport.poll_transmit() {
            assert!(t.bytes().len() <= MAX_WIRE, "transport datagram of {} bytes", t.bytes().len());
            // Without a relay, media and checks go only to signed candidates or to an address that sent
            // an authenticated frame (the fuzzer cannot forge one without the keys).
            assert!(peers.contains(&t.to), "transport sent to unsigned {}", t.to);
        }
        while transport.poll_event().is_some() {}
        let _ = gatherer.poll_timeout(now);
        let _ = transport.poll_timeout(now);
    }
    let gathered = gatherer.finish(&[local]);
    assert!(gathered.candidates.len() <= MAX_CANDIDATES);
});
