//! The engine's transport against a hand-driven peer that uses the real proto crypto on plain sockets:
//! connectivity checks, probe echoes, hostile datagrams dropped and counted, NAT rebinding followed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod media_common;

use std::net::UdpSocket;
use std::time::Duration;

use media_common::*;
use qvoice::media::{AudioIn, AudioOut, MediaConfig, MediaEngine, MediaEvent};
use qvoice_proto::frame::{AudioPayload, Probe};
use qvoice_proto::{Candidate, Codec, FrameType, MediaCrypto};

/// Receives until a frame of `want` type opens (other frames, e.g. audio and probes, are skipped).
fn recv_frame(sock: &UdpSocket, crypto: &mut MediaCrypto, want: FrameType) -> Vec<u8> {
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    let mut out = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("engine stopped sending");
        if let Ok(o) = crypto.open(&buf[..n], &mut out)
            && o.ftype == want
        {
            return o.payload.to_vec();
        }
    }
}

/// Sends a probe from `sock` and waits for its echo: the engine handles datagrams in order, so everything
/// sent before has been processed when the ack arrives.
fn sync(sock: &UdpSocket, engine: std::net::SocketAddr, crypto: &mut MediaCrypto, id: u32) {
    let mut buf = [0u8; 128];
    let n = crypto.seal(FrameType::Probe, &Probe { id, sent_us: 5 }.to_bytes(), &mut buf).unwrap();
    sock.send_to(&buf[..n], engine).unwrap();
    loop {
        let ack = Probe::parse(&recv_frame(sock, crypto, FrameType::ProbeAck)).unwrap();
        if ack.id == id {
            assert_eq!(ack.sent_us, 5, "the ack echoes the probe");
            return;
        }
    }
}

#[test]
fn hostile_datagrams_are_counted_and_rebinding_is_followed() {
    let engine_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let p1 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (ka, kb) = handshake(Codec::Opus, &engine_sock, &p1, 5);
    let engine_addr = engine_sock.local_addr().unwrap();
    let mut peer = kb.media;
    // Two candidates: one nobody answers on (a port just released) and the real peer; the first
    // authenticated answer picks the path.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cfg =
        MediaConfig::new(ka.media, engine_sock, vec![Candidate::host(dead), Candidate::host(p1.local_addr().unwrap())]);
    cfg.input = AudioIn::Silence;
    cfg.output = AudioOut::Null;
    let mut engine = MediaEngine::start(cfg).unwrap();
    let events = engine.take_events().unwrap();

    // The engine probes its candidate; answering with an authenticated frame makes us its peer.
    let probe = Probe::parse(&recv_frame(&p1, &mut peer, FrameType::Probe)).unwrap();
    let mut buf = [0u8; 4096];
    let n = peer.seal(FrameType::ProbeAck, &probe.to_bytes(), &mut buf).unwrap();
    p1.send_to(&buf[..n], engine_addr).unwrap();
    let ev = wait_for(&events, Duration::from_secs(3), |e| matches!(e, MediaEvent::PeerConnected { .. }));
    assert!(matches!(ev, MediaEvent::PeerConnected { addr, .. } if addr == p1.local_addr().unwrap()));
    // Audio now flows to p1.
    recv_frame(&p1, &mut peer, FrameType::Audio);

    // Malformed: empty, short, garbage header, oversized.
    for d in [&[][..], &[0x11][..], &[0xff; 40][..], &[0u8; 5000][..]] {
        p1.send_to(d, engine_addr).unwrap();
    }
    // Unauthenticated: a valid frame with one ciphertext bit flipped.
    let mut payload = [0u8; 64];
    let pn = AudioPayload { timestamp: 0, data: &[1, 2, 3] }.write_to(&mut payload).unwrap();
    let n = peer.seal(FrameType::Audio, &payload[..pn], &mut buf).unwrap();
    let mut tampered = buf[..n].to_vec();
    tampered[16] ^= 1;
    p1.send_to(&tampered, engine_addr).unwrap();
    // Replayed: the same valid frame twice.
    let n = peer.seal(FrameType::Keepalive, &[], &mut buf).unwrap();
    p1.send_to(&buf[..n], engine_addr).unwrap();
    p1.send_to(&buf[..n], engine_addr).unwrap();
    sync(&p1, engine_addr, &mut peer, 100);
    let m = engine.metrics();
    assert_eq!(m.malformed, 4, "{m:?}");
    assert_eq!(m.unauthenticated, 1, "{m:?}");
    assert_eq!(m.replayed, 1, "{m:?}");
    assert_eq!(m.peer_address_changes, 0);

    // NAT rebinding: the peer's audio now comes from another port; the engine follows it.
    let p2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pn = AudioPayload { timestamp: 960, data: &[1, 2, 3] }.write_to(&mut payload).unwrap();
    let n = peer.seal(FrameType::Audio, &payload[..pn], &mut buf).unwrap();
    p2.send_to(&buf[..n], engine_addr).unwrap();
    sync(&p2, engine_addr, &mut peer, 101);
    let ev = wait_for(&events, Duration::from_secs(3), |e| matches!(e, MediaEvent::PeerAddressChanged { .. }));
    assert_eq!(ev, MediaEvent::PeerAddressChanged { from: p1.local_addr().unwrap(), to: p2.local_addr().unwrap() });
    recv_frame(&p2, &mut peer, FrameType::Audio);
    assert_eq!(engine.peer_addr(), Some(p2.local_addr().unwrap()));
    // An unauthenticated datagram from a third address does not move the path.
    let p3 = UdpSocket::bind("127.0.0.1:0").unwrap();
    p3.send_to(&tampered, engine_addr).unwrap();
    sync(&p2, engine_addr, &mut peer, 102);
    assert_eq!(engine.peer_addr(), Some(p2.local_addr().unwrap()));
    let m = engine.stop().unwrap();
    assert_eq!(m.peer_address_changes, 1);
    assert!(m.unauthenticated >= 1 && m.rtt_ms >= 0.0);
}

#[test]
fn a_silent_peer_is_reported_and_bye_is_delivered() {
    let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sb = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (ka, kb) = handshake(Codec::Pcm16, &sa, &sb, 6);
    let (pa, pb) = (sb.local_addr().unwrap(), sa.local_addr().unwrap());
    let mk = |k: qvoice_proto::SessionKeys, s, p| {
        let mut c = MediaConfig::new(k.media, s, vec![Candidate::host(p)]);
        c.codec = qvoice::media::CodecKind::Pcm;
        c.input = AudioIn::Silence;
        c.output = AudioOut::Null;
        c.silence_timeout = Duration::from_millis(1_500);
        c
    };
    let mut a = MediaEngine::start(mk(ka, sa, pa)).unwrap();
    let b = MediaEngine::start(mk(kb, sb, pb)).unwrap();
    let ea = a.take_events().unwrap();
    wait_for(&ea, Duration::from_secs(3), |e| matches!(e, MediaEvent::FirstAudioPlayed { .. }));
    b.stop().unwrap();
    wait_for(&ea, Duration::from_secs(3), |e| matches!(e, MediaEvent::PeerBye));
    let ev = wait_for(&ea, Duration::from_secs(5), |e| matches!(e, MediaEvent::PeerSilent { .. }));
    assert!(matches!(ev, MediaEvent::PeerSilent { silent_for } if silent_for >= Duration::from_millis(1_500)));
    a.stop().unwrap();
}
