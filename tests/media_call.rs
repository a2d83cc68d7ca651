//! Two media engines over real UDP on 127.0.0.1 with keys from a real handshake, WAV in and WAV out:
//! the audio that comes out must match what went in, and a chirp must arrive with a measured delay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod media_common;

use std::time::Duration;

use media_common::*;
use qvoice::media::{CodecKind, Impairment, MediaEvent};

struct Outcome {
    corr: f64,
    delays_ms: Vec<f64>,
    chirp_scores: Vec<f64>,
    out_len: usize,
    in_len: usize,
    metrics: qvoice::media::MetricsSnapshot,
}

fn run(codec: CodecKind, impairment: Impairment, name: &str) -> (Outcome, Outcome) {
    let dir = tempdir(name);
    let input = make_input(dir.path(), 3.0);
    let call = start_call(dir.path(), &input.path, codec, impairment);
    let secs = input.samples.len() as f64 / f64::from(RATE);
    let first = wait_for(&call.b_events, Duration::from_secs(5), |e| matches!(e, MediaEvent::FirstAudioPlayed { .. }));
    assert!(matches!(first, MediaEvent::FirstAudioPlayed { since_start, .. } if since_start < Duration::from_secs(2)));
    wait_for(&call.a_events, Duration::from_secs_f64(secs + 5.0), |e| matches!(e, MediaEvent::InputEnded));
    let ma = call.a.stop().unwrap();
    let mb = call.b.stop().unwrap();
    let analyse = |path: &std::path::Path, m: qvoice::media::MetricsSnapshot| {
        let (out, rate) = read_wav(path);
        assert_eq!(rate, RATE, "output is written at the input's rate");
        let found: Vec<(usize, f64)> = input.chirps.iter().map(|&p| chirp_delay(&out, p, RATE as usize / 2)).collect();
        let delays_ms = found.iter().map(|&(d, _)| d as f64 * 1000.0 / f64::from(RATE)).collect();
        let chirp_scores = found.iter().map(|&(_, s)| s).collect();
        let center = found.iter().find(|f| f.1 > 0.6).map_or(RATE as usize * 60 / 1000, |f| f.0);
        let corr = speech_correlation(&input, &out, center);
        Outcome { corr, delays_ms, chirp_scores, out_len: out.len(), in_len: input.samples.len(), metrics: m }
    };
    // a_out holds what B sent to A and vice versa; both directions carried the same input.
    let to_b = analyse(&call.b_out, mb);
    let to_a = analyse(&call.a_out, ma);
    (to_b, to_a)
}

fn check_clean(o: &Outcome, min_corr: f64, label: &str) {
    println!(
        "{label}: corr {:.3} delays {:?} ms metrics {}",
        o.corr,
        o.delays_ms,
        serde_json::to_string(&o.metrics).unwrap()
    );
    assert!(o.corr >= min_corr, "{label}: correlation {:.3} < {min_corr}", o.corr);
    assert!(o.chirp_scores.iter().all(|&s| s > 0.7), "{label}: chirps not found {:?}", o.chirp_scores);
    for &d in &o.delays_ms {
        // At least one frame of packetisation, and well under the jitter buffer's cap.
        assert!((20.0..200.0).contains(&d), "{label}: chirp delay {d} ms");
    }
    // Output is paced on the input's clock from the same epoch and stopped when the input ended.
    let diff = (o.out_len as f64 - o.in_len as f64).abs() / f64::from(RATE);
    assert!(diff < 0.15, "{label}: output length off by {diff} s");
    assert_eq!(o.metrics.unauthenticated + o.metrics.malformed + o.metrics.replayed, 0);
    assert!(o.metrics.frames_received > 150);
}

#[test]
fn pcm_call_carries_speech_and_chirps_faithfully() {
    let (to_b, to_a) = run(CodecKind::Pcm, Impairment::default(), "pcm");
    check_clean(&to_b, 0.9, "pcm a→b");
    check_clean(&to_a, 0.9, "pcm b→a");
    assert!(to_b.metrics.recv_payload_kbps > 200.0, "PCM16 at 16 kHz is 256 kbit/s while talking");
}

#[test]
fn opus_call_carries_speech_and_chirps_faithfully() {
    let (to_b, to_a) = run(CodecKind::Opus, Impairment::default(), "opus");
    check_clean(&to_b, 0.8, "opus a→b");
    check_clean(&to_a, 0.8, "opus b→a");
    assert!(to_b.metrics.send_wire_kbps < 48.0 && to_b.metrics.send_wire_kbps > 5.0, "{}", to_b.metrics.send_wire_kbps);
    assert!(to_b.metrics.rtt_ms > 0.0, "probe echoes measure RTT");
    assert!(to_b.metrics.mos > 4.0, "clean loopback MOS {}", to_b.metrics.mos);
}

#[test]
fn opus_call_survives_ten_percent_loss_and_thirty_ms_jitter() {
    let imp = Impairment { loss_pct: 10.0, jitter: Duration::from_millis(30), ..Default::default() };
    let (to_b, to_a) = run(CodecKind::Opus, imp, "lossy");
    for (o, label) in [(&to_b, "lossy a→b"), (&to_a, "lossy b→a")] {
        println!(
            "{label}: corr {:.3} delays {:?} ms metrics {}",
            o.corr,
            o.delays_ms,
            serde_json::to_string(&o.metrics).unwrap()
        );
        let m = &o.metrics;
        // The call continued: audio kept flowing and nearly all of the expected frames were played.
        assert!(m.frames_received > 150);
        assert!((4.0..20.0).contains(&m.loss_pct), "{label}: measured loss {}", m.loss_pct);
        assert!(m.concealed_pct > 3.0, "{label}: concealment counters must move: {}", m.concealed_pct);
        assert!(m.fec_enabled, "{label}: the peer's loss reports switch FEC on");
        assert!(m.jitter_ms > 3.0, "{label}: jitter {}", m.jitter_ms);
        let diff = (o.out_len as f64 - o.in_len as f64).abs() / f64::from(RATE);
        assert!(diff < 0.15, "{label}: output length off by {diff} s");
        assert!(o.corr > 0.5, "{label}: speech still recognisable, correlation {:.3}", o.corr);
        // A chirp hit by loss is concealed; at least one must come through and be timed.
        let timed: Vec<f64> =
            o.delays_ms.iter().zip(&o.chirp_scores).filter(|(_, s)| **s > 0.6).map(|(d, _)| *d).collect();
        assert!(!timed.is_empty(), "{label}: no chirp found {:?}", o.chirp_scores);
        for d in timed {
            assert!((20.0..300.0).contains(&d), "{label}: chirp delay {d} ms");
        }
    }
}

/// Two engines whose start is staggered by `delay_b`, A sending `input`, each at its own frame duration.
fn staggered(
    dir: &std::path::Path,
    input: &std::path::Path,
    codec: CodecKind,
    frames: (u8, u8),
    delay_b: Duration,
) -> Call {
    use qvoice::media::{AudioIn, AudioOut, MediaConfig, MediaEngine};
    use std::net::UdpSocket;
    let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sb = UdpSocket::bind("127.0.0.1:0").unwrap();
    let proto = if codec == CodecKind::Opus { qvoice_proto::Codec::Opus } else { qvoice_proto::Codec::Pcm16 };
    let (ka, kb) = handshake(proto, &sa, &sb, 7);
    let (a_out, b_out) = (dir.join("a_out.wav"), dir.join("b_out.wav"));
    let mk = |keys: qvoice_proto::SessionKeys, sock: UdpSocket, out: &std::path::Path, frame_ms: u8, input: AudioIn| {
        let peers = keys.peer_candidates.clone();
        let mut cfg = MediaConfig::new(keys.media, sock, peers);
        cfg.codec = codec;
        cfg.frame_ms = frame_ms;
        cfg.input = input;
        cfg.output = AudioOut::Wav { path: out.to_path_buf(), rate: Some(RATE) };
        cfg
    };
    let mut a = MediaEngine::start(mk(ka, sa, &a_out, frames.0, AudioIn::Wav(input.to_path_buf()))).unwrap();
    std::thread::sleep(delay_b);
    let mut b = MediaEngine::start(mk(kb, sb, &b_out, frames.1, AudioIn::Silence)).unwrap();
    let a_events = a.take_events().unwrap();
    let b_events = b.take_events().unwrap();
    Call { a, b, a_events, b_events, a_out, b_out }
}

#[test]
fn the_first_frame_carries_the_first_captured_audio() {
    // A chirp at the very start of A's input, and B's engine starting 400 ms after A's: no path exists
    // until B answers the checks. Audio captured while waiting cannot be sent; the file starts again when
    // the path comes up, so B hears the opening chirp whole (it once lost the first ~60 ms of every call,
    // here it would lose all 400 ms).
    let dir = tempdir("first_frame");
    let mut samples = chirp();
    samples.extend(vec![0.0; RATE as usize]);
    let input = dir.path().join("chirp_first.wav");
    write_wav(&input, RATE, &samples);
    let call = staggered(dir.path(), &input, CodecKind::Pcm, (20, 20), Duration::from_millis(400));
    wait_for(&call.a_events, Duration::from_secs(6), |e| matches!(e, MediaEvent::InputEnded));
    std::thread::sleep(Duration::from_millis(300));
    let _ = call.a.stop().unwrap();
    let mb = call.b.stop().unwrap();
    let (out, _) = read_wav(&call.b_out);
    let (delay, score) = chirp_delay(&out, 0, out.len().saturating_sub(chirp().len()));
    println!(
        "opening chirp at {} ms in B's output, score {score:.3}; B metrics {}",
        delay * 1000 / RATE as usize,
        serde_json::to_string(&mb).unwrap()
    );
    assert!(score > 0.8, "the opening chirp did not arrive whole (best match {score:.3})");
}

#[test]
fn frames_of_the_wrong_duration_are_counted_not_silently_played() {
    // A sends 20 ms frames into a call B runs at 40 ms: each frame fills half of B's frame. They are
    // counted as undecodable (and concealed), never dropped silently or played with stale halves.
    for codec in [CodecKind::Opus, CodecKind::Pcm] {
        let dir = tempdir("missized");
        let input = make_input(dir.path(), 1.0);
        let call = staggered(dir.path(), &input.path, codec, (20, 40), Duration::ZERO);
        wait_for(&call.a_events, Duration::from_secs(8), |e| matches!(e, MediaEvent::InputEnded));
        let _ = call.a.stop().unwrap();
        let mb = call.b.stop().unwrap();
        println!("{codec:?}: B metrics {}", serde_json::to_string(&mb).unwrap());
        assert!(mb.frames_received > 50, "{codec:?}: frames arrived: {}", mb.frames_received);
        // Every frame is accounted for: decoded-and-refused as undecodable, or (two 20 ms timestamps in one
        // 40 ms slot) dropped as a duplicate by the jitter buffer.
        assert!(mb.undecodable > 20, "{codec:?}: mis-sized frames counted as undecodable: {}", mb.undecodable);
        assert!(
            (mb.undecodable + mb.duplicates) * 10 >= mb.frames_received * 9,
            "{codec:?}: only {} undecodable + {} duplicates of {} mis-sized frames accounted for",
            mb.undecodable,
            mb.duplicates,
            mb.frames_received
        );
    }
}
