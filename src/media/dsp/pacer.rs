//! Even send times for a capture device that hands over audio in uneven chunks (pure code, time is an
//! argument).
//!
//! A PulseAudio source is scheduled by the server's timer, not by a sound card's interrupts: it delivers
//! whatever accumulated since its last wake-up, in chunks of any size up to the requested fragment (on a
//! null sink's monitor, 150 to 800 samples at 48 kHz, every 6 to 20 ms). A 20 ms frame is complete when
//! the chunk holding its last sample arrives, so its send time wanders by up to a fragment against the
//! audio's own timeline, and the boundaries of the chunks slide against the frame grid: the wander sweeps
//! slowly through the whole fragment (1–2 ms per second was measured), then jumps back. The peer's jitter
//! buffer sees that as a creeping delay, runs dry after several seconds and stretches by a frame, an audible
//! step.
//!
//! The pacer estimates the device's sample clock from the callbacks (sample `n` is available at the earliest
//! at `origin + n / rate`, with `origin` the smallest `time - delivered / rate` seen over the last few
//! seconds) and holds each frame until `origin + end / rate + hold`, with `hold` the largest chunk the
//! device may deliver. Frames then leave on the device's clock, evenly; one completed later than that still
//! leaves at once. The delay added is what the peer's jitter buffer would otherwise have had to keep, and it
//! is added once, at the source, instead of discovered a frame at a time. A device whose callbacks are its
//! period and line up with the frames (JACK, ALSA hardware) needs no hold.

use std::time::Duration;

/// How far back the smallest origin is looked for: long enough that the chunk phases seen cover their
/// range, short enough to follow a device clock that drifts against ours.
const WINDOW: Duration = Duration::from_secs(4);

/// The pacer. See the module docs.
#[derive(Debug, Clone)]
pub struct CapturePacer {
    rate: f64,
    hold: f64,
    /// Sliding minimum of the origin over two half-windows: (start of the current half, its minimum,
    /// the previous half's minimum).
    halves: Option<(f64, f64, f64)>,
}

impl CapturePacer {
    /// A pacer for a device at `rate` samples per second whose chunks may be up to `hold` long.
    pub fn new(rate: u32, hold: Duration) -> Self {
        Self { rate: f64::from(rate.max(1)), hold: hold.as_secs_f64(), halves: None }
    }

    /// A callback delivered the device's samples up to `end` (counted from the stream's start) at `t`
    /// seconds on the caller's clock.
    pub fn delivered(&mut self, t: f64, end: u64) {
        let origin = t - end as f64 / self.rate;
        let half = WINDOW.as_secs_f64() / 2.0;
        self.halves = Some(match self.halves {
            None => (t, origin, origin),
            Some((start, cur, _)) if t - start >= half => (t, origin, cur),
            Some((start, cur, prev)) => (start, cur.min(origin), prev),
        });
    }

    /// When (seconds on the caller's clock) the frame whose last sample is `end` should be sent; `None`
    /// before the first callback.
    pub fn release(&self, end: u64) -> Option<f64> {
        let (_, cur, prev) = self.halves?;
        Some(cur.min(prev) + end as f64 / self.rate + self.hold)
    }

    /// Forgets the device's clock (a rebuilt stream counts its samples from zero again).
    pub fn reset(&mut self) {
        self.halves = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timer-scheduled device at 48 kHz: chunks of uneven sizes, delivered when their last sample is
    /// due plus a scheduling delay; frames of 960 samples are read as soon as they are complete. Returns
    /// each frame's send time minus its last sample's due time, in ms.
    fn send_offsets(pacer: Option<&mut CapturePacer>, secs: f64) -> Vec<f64> {
        let rate = 48_000.0;
        let mut pacer = pacer;
        let (mut delivered, mut t, mut next_frame_end, mut k) = (0u64, 0.0f64, 960u64, 0u64);
        let mut out = Vec::new();
        while t < secs {
            // Chunk sizes cycle through an uneven pattern that does not divide 960 (as on a null sink).
            let chunk = [347u64, 612, 455, 781, 233, 508][(k % 6) as usize];
            k += 1;
            delivered += chunk;
            let jitter = [0.0003, 0.0011, 0.0, 0.0007][(k % 4) as usize];
            t = delivered as f64 / rate + jitter;
            if let Some(p) = pacer.as_deref_mut() {
                p.delivered(t, delivered);
            }
            while next_frame_end <= delivered {
                let due = next_frame_end as f64 / rate;
                let sent = match pacer.as_deref() {
                    Some(p) => p.release(next_frame_end).map_or(t, |r| r.max(t)),
                    None => t,
                };
                out.push((sent - due) * 1000.0);
                next_frame_end += 960;
            }
        }
        out
    }

    fn spread(x: &[f64]) -> f64 {
        let (lo, hi) = x.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        hi - lo
    }

    #[test]
    fn uneven_chunks_make_uneven_send_times_without_it() {
        let offsets = send_offsets(None, 20.0);
        assert!(spread(&offsets[50..]) > 10.0, "spread {}", spread(&offsets[50..]));
    }

    #[test]
    fn frames_leave_evenly_on_the_devices_clock() {
        let mut p = CapturePacer::new(48_000, Duration::from_millis(20));
        let offsets = send_offsets(Some(&mut p), 20.0);
        // After the first half-window has seen the chunk pattern, every frame leaves the same time after
        // its last sample was due: within the delivery jitter (1.1 ms) of each other.
        let settled = &offsets[(2.0 * 50.0) as usize..];
        assert!(spread(settled) < 1.2, "spread {}", spread(settled));
        // And no later than the hold plus that jitter.
        assert!(settled.iter().all(|&o| o <= 21.2), "{settled:?}");
    }

    #[test]
    fn follows_a_device_clock_that_drifts() {
        // A device 200 ppm slower or faster than our clock, delivering 10 ms chunks on time: every frame
        // is held for the hold, less what the window's minimum trails a slow clock by (4 s x 200 ppm),
        // so the hold neither runs out nor grows over a long call.
        for ppm in [-200.0, 200.0] {
            let mut p = CapturePacer::new(48_000, Duration::from_millis(20));
            let rate = 48_000.0 * (1.0 + ppm * 1e-6);
            for i in 1..=60_000u64 {
                let end = i * 480;
                let t = end as f64 / rate;
                p.delivered(t, end);
                if i % 2 == 0 {
                    let held = p.release(end).map_or(0.0, |r| r - t);
                    assert!((0.0191..=0.02001).contains(&held), "{ppm} ppm, frame {i}: held {held}");
                }
            }
        }
    }

    #[test]
    fn nothing_is_released_before_the_first_callback_and_reset_forgets() {
        let mut p = CapturePacer::new(16_000, Duration::from_millis(20));
        assert_eq!(p.release(320), None);
        p.delivered(1.0, 320);
        assert!(p.release(320).is_some_and(|r| (r - 1.02).abs() < 1e-9));
        p.reset();
        assert_eq!(p.release(320), None);
    }
}
