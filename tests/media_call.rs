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
