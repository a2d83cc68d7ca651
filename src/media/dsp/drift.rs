//! Clock-drift compensation for device playout: a PI controller that keeps the jitter buffer's delay flat
//! by nudging the playout resampler's ratio (pure code, time is an argument).
//!
//! The peer's capture clock and our playback clock run at slightly different rates (tens to hundreds of
//! ppm); uncorrected, received audio piles up in the jitter buffer (delay creeps) or drains from it
//! (underruns). Once a second the controller compares the smoothed buffer wait with an anchor taken after
//! the call settles and sets a relative ratio within ±`max_adjust`: a buffer above the anchor plays the
//! 48 kHz stream slightly faster (ratio below 1), one below it slightly slower. The jitter buffer's own
//! adaptation moves the wait by whole frames; a jump larger than three quarters of a frame re-anchors instead of being
//! fought, while the integral (the drift estimate) is kept. See `docs/AUDIO.md`.

use std::time::{Duration, Instant};

/// How long after the first observation the anchor is taken.
const SETTLE: Duration = Duration::from_secs(3);
/// Controller update interval.
const PERIOD: Duration = Duration::from_secs(1);
/// Proportional gain: relative ratio per ms of error.
const KP: f64 = 1e-5;
/// Integral gain: relative ratio per ms of error per second.
const KI: f64 = 4e-6;
/// Errors smaller than this (ms) are treated as zero: the wait estimate moves by a few ms with arrival
/// jitter and playout phase, and resampling against that would warp the timeline (a 100 ppm correction
/// moves the audio by 1 ms in 10 s) without any drift to correct. Real drift (tens of ppm) crosses it
/// within a minute or two.
const DEADBAND_MS: f64 = 3.0;

/// The drift controller. See the module docs.
#[derive(Debug, Clone)]
pub struct DriftControl {
    max_adjust: f64,
    first: Option<Instant>,
    next_update: Option<Instant>,
    anchor: Option<f64>,
    smoothed: Option<f64>,
    integral: f64,
    rel: f64,
}

impl DriftControl {
    /// A controller that never moves the ratio more than `max_adjust` (e.g. 0.005 = ±0.5 %) from 1.
    pub fn new(max_adjust: f64) -> Self {
        Self { max_adjust, first: None, next_update: None, anchor: None, smoothed: None, integral: 0.0, rel: 1.0 }
    }

    /// The current relative ratio.
    pub fn ratio(&self) -> f64 {
        self.rel
    }

    /// Feeds one observation of the buffer level (`level_ms`, e.g. the jitter buffer's mean wait) with the
    /// frame duration; returns a new relative ratio when it changed.
    pub fn update(&mut self, now: Instant, level_ms: f64, frame_ms: f64) -> Option<f64> {
        let first = *self.first.get_or_insert(now);
        let s = match self.smoothed {
            None => level_ms,
            Some(s) => s + (level_ms - s) / 25.0,
        };
        self.smoothed = Some(s);
        if now.duration_since(first) < SETTLE {
            return None;
        }
        let anchor = *self.anchor.get_or_insert(s);
        if self.next_update.is_some_and(|t| now < t) {
            return None;
        }
        self.next_update = Some(now + PERIOD);
        let mut err = s - anchor;
        if err.abs() > frame_ms * 0.75 {
            // The jitter buffer grew or shrank by a frame on purpose: follow it. What the integral gathered
            // while the step passed through the smoothing was the step, not drift: drop it.
            self.anchor = Some(s);
            self.integral = 0.0;
            err = 0.0;
        }
        let e = if err.abs() < DEADBAND_MS { 0.0 } else { err - DEADBAND_MS * err.signum() };
        self.integral = (self.integral + KI * e * PERIOD.as_secs_f64()).clamp(-self.max_adjust, self.max_adjust);
        let u = (KP * e + self.integral).clamp(-self.max_adjust, self.max_adjust);
        let rel = 1.0 - u;
        if (rel - self.rel).abs() < 1e-7 {
            return None;
        }
        self.rel = rel;
        Some(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer filled at the peer's clock and drained at ours, with the controller's ratio applied.
    fn simulate(drift_ppm: f64, secs: u64) -> (f64, f64, f64) {
        let mut c = DriftControl::new(0.005);
        let t0 = Instant::now();
        let mut level = 40.0f64;
        let mut start_level = None;
        let dt = 0.02;
        for k in 0..(secs * 50) {
            let now = t0 + Duration::from_millis(k * 20);
            // Per 20 ms: the peer delivers 20 ms * (1 + drift); we consume 20 ms / rel of its stream.
            level += dt * 1000.0 * (drift_ppm * 1e-6) + dt * 1000.0 * (1.0 - 1.0 / c.ratio());
            // Arrival jitter dithers the estimate.
            let noise = if k % 2 == 0 { 0.8 } else { -0.8 };
            c.update(now, level + noise, 20.0);
            if k == 250 {
                start_level = Some(level);
            }
        }
        (start_level.unwrap_or(level), level, c.ratio())
    }

    #[test]
    fn positive_and_negative_drift_keep_the_delay_flat() {
        for ppm in [300.0, -300.0, 80.0] {
            let (start, end, rel) = simulate(ppm, 600);
            assert!((end - start).abs() < 12.0, "{ppm} ppm: {start} -> {end}");
            // The ratio settles near the drift (faster playout for a faster peer).
            assert!((rel - (1.0 - ppm * 1e-6)).abs() < 1e-4, "{ppm} ppm: ratio {rel}");
        }
    }

    #[test]
    fn no_drift_leaves_the_ratio_at_one() {
        let (start, end, rel) = simulate(0.0, 120);
        assert!((end - start).abs() < 1.0);
        assert!((rel - 1.0).abs() < 1e-9, "{rel}");
    }

    #[test]
    fn the_adjustment_is_bounded() {
        // An offset the ratio cannot remove (no feedback): the integral saturates at the bound.
        let mut c = DriftControl::new(0.005);
        let t0 = Instant::now();
        for k in 0..40_000u64 {
            let level = if k < 200 { 40.0 } else { 48.0 };
            c.update(t0 + Duration::from_millis(k * 20), level, 20.0);
        }
        assert!((c.ratio() - 0.995).abs() < 1e-9, "{}", c.ratio());
    }

    #[test]
    fn a_frame_sized_jump_reanchors_instead_of_being_fought() {
        let mut c = DriftControl::new(0.005);
        let t0 = Instant::now();
        for k in 0..400u64 {
            let level = if k < 200 { 40.0 } else { 20.0 };
            c.update(t0 + Duration::from_millis(k * 20), level, 20.0);
        }
        assert!((c.ratio() - 1.0).abs() < 2e-4, "{}", c.ratio());
    }
}
