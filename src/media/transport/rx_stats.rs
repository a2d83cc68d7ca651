//! Receive statistics on the peer's audio timestamps: expected vs received frames, RFC 3550
//! interarrival jitter, and the interval loss that goes into our receiver report.

use std::time::Instant;

use qvoice_proto::frame::StatsReport;

use crate::media::codec::SAMPLE_RATE;
use crate::media::metrics::Counters;

/// Per-call receive statistics.
#[derive(Debug)]
pub struct RxStats {
    start: Instant,
    frame_samples: u32,
    first_index: Option<i64>,
    last_ts: u32,
    ext_ts: i64,
    highest_index: i64,
    received: u64,
    report_expected: u64,
    report_received: u64,
    prev_transit_us: Option<i64>,
    jitter_us: f64,
}

impl RxStats {
    /// Statistics for frames of `frame_samples` samples at 48 kHz; `start` is the metrics origin.
    pub fn new(start: Instant, frame_samples: usize) -> Self {
        Self {
            start,
            frame_samples: frame_samples as u32,
            first_index: None,
            last_ts: 0,
            ext_ts: 0,
            highest_index: 0,
            received: 0,
            report_expected: 0,
            report_received: 0,
            prev_transit_us: None,
            jitter_us: 0.0,
        }
    }

    /// Frames the sender produced between the first and the newest one we saw.
    pub fn expected(&self) -> u64 {
        match self.first_index {
            Some(f) => (self.highest_index - f + 1).max(0) as u64,
            None => 0,
        }
    }

    /// Accounts one authenticated audio frame with `ts` arriving at `arrival`.
    pub fn note_audio(&mut self, ts: u32, arrival: Instant, c: &Counters) {
        if self.first_index.is_none() {
            self.last_ts = ts;
            self.ext_ts = i64::from(ts);
        }
        let delta = i64::from(ts.wrapping_sub(self.last_ts) as i32);
        let ext = self.ext_ts + delta;
        if delta > 0 {
            self.last_ts = ts;
            self.ext_ts = ext;
        }
        let index = ext.div_euclid(i64::from(self.frame_samples.max(1)));
        match self.first_index {
            None => {
                self.first_index = Some(index);
                self.highest_index = index;
            }
            Some(f) => {
                if index < f {
                    self.first_index = Some(index);
                }
                self.highest_index = self.highest_index.max(index);
            }
        }
        self.received += 1;
        Counters::set(&c.first_index, self.first_index.unwrap_or(0).max(0) as u64);
        Counters::set(&c.highest_index, self.highest_index.max(0) as u64);
        let arrival_us = arrival.saturating_duration_since(self.start).as_micros() as i64;
        let transit = arrival_us - ext * 1_000_000 / i64::from(SAMPLE_RATE);
        if let Some(prev) = self.prev_transit_us {
            let d = (transit - prev).abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.prev_transit_us = Some(transit);
        Counters::set(&c.jitter_us, self.jitter_us as u64);
    }

    /// The receiver report for the interval since the previous call.
    pub fn report(&mut self) -> StatsReport {
        let expected = self.expected();
        let (de, dr) = (expected - self.report_expected, self.received - self.report_received);
        let loss_permille = (de.saturating_sub(dr) * 1000).checked_div(de).unwrap_or(0) as u16;
        self.report_expected = expected;
        self.report_received = self.received;
        StatsReport {
            received: self.received,
            lost: expected.saturating_sub(self.received),
            jitter_us: self.jitter_us as u32,
            loss_permille,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn loss_and_wraparound() {
        let t0 = Instant::now();
        let c = Counters::default();
        let mut rx = RxStats::new(t0, 960);
        let base = u32::MAX - 960 * 2;
        for i in [0u32, 1, 3, 4] {
            rx.note_audio(base.wrapping_add(i * 960), t0 + Duration::from_millis(u64::from(i) * 20), &c);
        }
        let r = rx.report();
        assert_eq!((r.received, r.lost, r.loss_permille), (4, 1, 200));
        assert_eq!(rx.report().loss_permille, 0);
    }
}
