//! Seeded network impairment for tests and demos (`tc netem` is not available on the build machines):
//! random and bursty loss (Gilbert–Elliott), fixed delay, uniform jitter, extra reordering and duplication,
//! applied to outgoing datagrams.
//!
//! Pure code: [`Impairer::decide`] maps a send time to the times at which copies of the datagram leave
//! (none when it is lost). The engine keeps the delayed copies in a fixed-size queue.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Impairment settings; `Default` is a clean link.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Impairment {
    /// Mean loss in percent.
    pub loss_pct: f64,
    /// Mean length of a loss burst in packets; 1 means independent (random) loss.
    pub burst_len: f64,
    /// Fixed one-way delay added to every datagram.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram (reorders when above the frame time).
    pub jitter: Duration,
    /// Percent of datagrams held back an extra `reorder_gap` so they arrive after their successors.
    pub reorder_pct: f64,
    /// How long a reordered datagram is held back.
    pub reorder_gap: Duration,
    /// Percent of datagrams sent twice.
    pub duplicate_pct: f64,
    /// RNG seed, so a run can be repeated exactly.
    pub seed: u64,
}

impl Default for Impairment {
    fn default() -> Self {
        Self {
            loss_pct: 0.0,
            burst_len: 1.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder_pct: 0.0,
            reorder_gap: Duration::from_millis(30),
            duplicate_pct: 0.0,
            seed: 1,
        }
    }
}

impl Impairment {
    /// True when the settings change nothing (the engine then bypasses the queue).
    pub fn is_clean(&self) -> bool {
        self.loss_pct <= 0.0
            && self.delay.is_zero()
            && self.jitter.is_zero()
            && self.reorder_pct <= 0.0
            && self.duplicate_pct <= 0.0
    }
}

/// Departure times for one datagram: up to two copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// When each copy should be sent; `None` slots are unused.
    pub copies: [Option<Instant>; 2],
}

/// The seeded impairment state machine.
#[derive(Debug)]
pub struct Impairer {
    cfg: Impairment,
    rng: StdRng,
    in_burst: bool,
    /// P(good → bad) and P(bad → good) of the two-state Gilbert–Elliott chain (loss in "bad").
    p_enter: f64,
    p_leave: f64,
}

impl Impairer {
    /// A new impairer; burst parameters are derived so the stationary loss equals `loss_pct`.
    pub fn new(cfg: Impairment) -> Self {
        let loss = (cfg.loss_pct / 100.0).clamp(0.0, 0.99);
        let burst = cfg.burst_len.max(1.0);
        // Mean burst length b = 1/p_leave; stationary loss = p_enter / (p_enter + p_leave).
        let p_leave = 1.0 / burst;
        let p_enter = if loss > 0.0 { loss * p_leave / (1.0 - loss) } else { 0.0 };
        Self { cfg, rng: StdRng::seed_from_u64(cfg.seed), in_burst: false, p_enter, p_leave }
    }

    /// Decides the fate of a datagram sent at `now`.
    pub fn decide(&mut self, now: Instant) -> Verdict {
        let lost = if self.cfg.loss_pct <= 0.0 {
            false
        } else if self.cfg.burst_len <= 1.0 {
            self.rng.random::<f64>() * 100.0 < self.cfg.loss_pct
        } else {
            let flip = self.rng.random::<f64>();
            self.in_burst = if self.in_burst { flip >= self.p_leave } else { flip < self.p_enter };
            self.in_burst
        };
        if lost {
            return Verdict::default();
        }
        let mut v = Verdict::default();
        v.copies[0] = Some(now + self.delay_sample());
        if self.cfg.duplicate_pct > 0.0 && self.rng.random::<f64>() * 100.0 < self.cfg.duplicate_pct {
            v.copies[1] = Some(now + self.delay_sample());
        }
        v
    }

    fn delay_sample(&mut self) -> Duration {
        let mut d = self.cfg.delay;
        if !self.cfg.jitter.is_zero() {
            d += self.cfg.jitter.mul_f64(self.rng.random::<f64>());
        }
        if self.cfg.reorder_pct > 0.0 && self.rng.random::<f64>() * 100.0 < self.cfg.reorder_pct {
            d += self.cfg.reorder_gap;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: Impairment, n: usize) -> (usize, usize, Vec<bool>) {
        let t0 = Instant::now();
        let mut imp = Impairer::new(cfg);
        let mut lost = Vec::new();
        let mut copies = 0;
        for i in 0..n {
            let v = imp.decide(t0 + Duration::from_millis(i as u64 * 20));
            let c = v.copies.iter().flatten().count();
            copies += c;
            lost.push(c == 0);
        }
        (lost.iter().filter(|&&l| l).count(), copies, lost)
    }

    #[test]
    fn random_loss_matches_the_rate_and_the_seed_repeats_it() {
        let cfg = Impairment { loss_pct: 10.0, seed: 9, ..Default::default() };
        let (lost, _, pattern) = run(cfg, 20_000);
        assert!((1_800..2_200).contains(&lost), "{lost}");
        assert_eq!(run(cfg, 20_000).2, pattern);
        let (_, _, other) = run(Impairment { seed: 10, ..cfg }, 20_000);
        assert_ne!(other, pattern);
    }

    #[test]
    fn bursty_loss_keeps_the_mean_and_clusters() {
        let cfg = Impairment { loss_pct: 10.0, burst_len: 4.0, seed: 3, ..Default::default() };
        let (lost, _, pattern) = run(cfg, 50_000);
        assert!((4_000..6_000).contains(&lost), "{lost}");
        let bursts = pattern.windows(2).filter(|w| !w[0] && w[1]).count();
        let mean_burst = lost as f64 / bursts as f64;
        assert!((3.0..5.0).contains(&mean_burst), "{mean_burst}");
    }

    #[test]
    fn delay_jitter_and_duplicates() {
        let t0 = Instant::now();
        let cfg = Impairment {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(30),
            duplicate_pct: 50.0,
            ..Default::default()
        };
        let mut imp = Impairer::new(cfg);
        let mut dups = 0;
        for _ in 0..1_000 {
            let v = imp.decide(t0);
            for at in v.copies.iter().flatten() {
                let d = *at - t0;
                assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(40));
            }
            dups += usize::from(v.copies[1].is_some());
        }
        assert!((400..600).contains(&dups), "{dups}");
        assert!(Impairment::default().is_clean());
        assert!(!cfg.is_clean());
    }
}
