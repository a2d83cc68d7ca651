//! Live call metrics: lock-free counters updated by the media threads, a serialisable snapshot for the
//! TUI and headless JSON, and the ITU-T G.107 E-model MOS estimate.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters shared by the media threads; every field is a relaxed atomic, so updating one per frame costs
/// an uncontended atomic add and never blocks.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) frames_sent: AtomicU64,
    pub(crate) payload_bytes_sent: AtomicU64,
    pub(crate) wire_bytes_sent: AtomicU64,
    pub(crate) datagrams_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) payload_bytes_received: AtomicU64,
    pub(crate) wire_bytes_received: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) unauthenticated: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) socket_errors: AtomicU64,
    pub(crate) capture_overruns: AtomicU64,
    pub(crate) queue_full_drops: AtomicU64,
    pub(crate) record_drops: AtomicU64,
    pub(crate) impaired_dropped: AtomicU64,
    pub(crate) peer_address_changes: AtomicU64,
    pub(crate) rtt_us: AtomicU64,
    /// Microseconds after engine start of the first audio frame sent / received (0 = none yet, stored +1).
    pub(crate) first_tx_us: AtomicU64,
    pub(crate) first_rx_us: AtomicU64,
    pub(crate) highest_index: AtomicU64,
    pub(crate) first_index: AtomicU64,
    pub(crate) peer_loss_permille: AtomicU64,
    pub(crate) peer_jitter_us: AtomicU64,
    pub(crate) fec_enabled: AtomicU64,
    // Jitter-buffer side, published by the playout thread once per frame.
    pub(crate) jb_played: AtomicU64,
    pub(crate) jb_concealed: AtomicU64,
    pub(crate) jb_fec: AtomicU64,
    pub(crate) jb_late: AtomicU64,
    pub(crate) jb_duplicates: AtomicU64,
    pub(crate) jb_underruns: AtomicU64,
    pub(crate) jb_shrink: AtomicU64,
    pub(crate) jb_overflow: AtomicU64,
    pub(crate) jb_depth_frames: AtomicU64,
    pub(crate) jb_wait_us: AtomicU64,
    pub(crate) jitter_us: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, v: u64) {
        c.fetch_add(v, Relaxed);
    }
    pub(crate) fn set(c: &AtomicU64, v: u64) {
        c.store(v, Relaxed);
    }
}

/// A point-in-time view of a call's media, for the TUI and `--json` output.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Seconds since the engine started.
    pub elapsed_s: f64,
    /// Codec name ("opus" or "pcm").
    pub codec: &'static str,
    /// Frame duration in ms.
    pub frame_ms: u8,
    /// Audio frames sent.
    pub frames_sent: u64,
    /// Audio frames received and authenticated.
    pub frames_received: u64,
    /// Codec payload bitrate sent, kbit/s, averaged since the first audio frame went out.
    pub send_payload_kbps: f64,
    /// Bitrate sent on the wire (UDP payload incl. header, tag, probes), kbit/s.
    pub send_wire_kbps: f64,
    /// Codec payload bitrate received, kbit/s.
    pub recv_payload_kbps: f64,
    /// Bitrate received on the wire, kbit/s.
    pub recv_wire_kbps: f64,
    /// Round-trip time from the last probe echo, ms (0 before the first echo).
    pub rtt_ms: f64,
    /// RFC 3550 interarrival jitter of received audio, ms.
    pub jitter_ms: f64,
    /// Received audio frames missing from the timestamp sequence, percent.
    pub loss_pct: f64,
    /// Frames that arrived after their playout slot, percent of expected.
    pub late_pct: f64,
    /// Frames played from concealment (PLC/FEC), percent of frames played.
    pub concealed_pct: f64,
    /// Concealed frames rebuilt from Opus in-band FEC.
    pub fec_recovered: u64,
    /// Jitter-buffer depth in frames at the last playout.
    pub jb_depth_frames: u64,
    /// Jitter-buffer depth in ms.
    pub jb_depth_ms: f64,
    /// Mean time a frame waits in the jitter buffer, ms.
    pub jb_wait_ms: f64,
    /// Jitter-buffer underruns, frames dropped to shrink and to cap the queue.
    pub jb_underruns: u64,
    /// Frames dropped during silence to shrink the delay.
    pub jb_shrink_drops: u64,
    /// Frames dropped because the queue hit its cap.
    pub jb_overflow_drops: u64,
    /// Duplicate audio frames dropped by the jitter buffer.
    pub duplicates: u64,
    /// Datagrams dropped as malformed (too short, wrong version, wrong session).
    pub malformed: u64,
    /// Authenticated audio frames that could not be decoded as the negotiated codec and frame duration
    /// (corrupt payload, or a size that does not match the frame duration): concealed and counted here.
    pub undecodable: u64,
    /// Datagrams that failed authentication.
    pub unauthenticated: u64,
    /// Datagrams rejected by the replay window (replays, and duplicates on the path).
    pub replayed: u64,
    /// Times the peer's address changed (NAT rebinding).
    pub peer_address_changes: u64,
    /// Loss the peer reports for our stream, percent.
    pub peer_loss_pct: f64,
    /// Whether our Opus encoder currently adds in-band FEC.
    pub fec_enabled: bool,
    /// Frames lost to local queues or I/O (capture overruns, full queues, recorder drops, socket errors).
    pub local_drops: u64,
    /// Estimated one-way mouth-to-ear delay used for the MOS, ms.
    pub est_delay_ms: f64,
    /// E-model rating R.
    pub r_factor: f64,
    /// E-model MOS estimate (1.0–4.5).
    pub mos: f64,
    /// Xruns the sound driver reported.
    pub device_xruns: u64,
    /// Other sound-stream errors the driver reported.
    pub device_errors: u64,
    /// Sound streams rebuilt after the driver failed them.
    pub device_rebuilds: u64,
    /// Playback callbacks that found too little audio (silence was played).
    pub device_underruns: u64,
    /// Captured (or playout) samples dropped because a device ring was full or backlogged.
    pub device_overruns: u64,
    /// Largest capture callback, in device frames (0 without a device).
    pub device_in_period: u64,
    /// Largest playback callback, in device frames.
    pub device_out_period: u64,
    /// Drift compensation applied to playout, in ppm (negative plays faster).
    pub drift_ppm: i64,
}

/// Codec impairment parameters for the E-model.
///
/// G.113 has no Opus entry; Ie = 0 and Bpl = 20 follow published wideband-Opus fits and are an estimate.
/// PCM uses G.711's values without PLC (Ie 0, Bpl 4.3): our repeat-and-fade concealment is crude.
pub fn codec_ie_bpl(codec: &str) -> (f64, f64) {
    match codec {
        "opus" => (0.0, 20.0),
        _ => (0.0, 4.3),
    }
}

/// E-model (ITU-T G.107) rating R for a one-way delay, packet loss (percent, random) and codec.
pub fn r_factor(one_way: Duration, loss_pct: f64, codec: &str) -> f64 {
    let d = one_way.as_secs_f64() * 1000.0;
    // Delay impairment Id (simplified G.107 form widely used for VoIP planning).
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let (ie, bpl) = codec_ie_bpl(codec);
    let ppl = loss_pct.clamp(0.0, 100.0);
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl);
    (93.2 - id - ie_eff).clamp(0.0, 100.0)
}

/// MOS from R (G.107 Annex B).
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).clamp(1.0, 4.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emodel_matches_reference_points() {
        // No delay, no loss: R = 93.2, MOS ≈ 4.41.
        let r = r_factor(Duration::ZERO, 0.0, "opus");
        assert!((r - 93.2).abs() < 1e-9);
        assert!((mos_from_r(r) - 4.41).abs() < 0.01, "{}", mos_from_r(r));
        // 150 ms and 1 % loss on G.711 without PLC: R ≈ 93.2 - 3.6 - 17.9 ≈ 71.7.
        let r = r_factor(Duration::from_millis(150), 1.0, "pcm");
        assert!((r - 71.68).abs() < 0.1, "{r}");
        // Monotone in delay and loss.
        assert!(r_factor(Duration::from_millis(300), 0.0, "opus") < r_factor(Duration::from_millis(100), 0.0, "opus"));
        assert!(r_factor(Duration::ZERO, 10.0, "opus") < r_factor(Duration::ZERO, 1.0, "opus"));
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
    }
}
