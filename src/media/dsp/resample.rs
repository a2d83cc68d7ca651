//! Integer-ratio polyphase resampling between the engine's 48 kHz clock and 8/12/16/24/96 kHz devices,
//! files and the PCM16 codec's 16 kHz wire rate.
//!
//! Windowed-sinc FIR designed once at construction; `process` works on caller buffers and never allocates,
//! so it can run inside an audio callback.

use std::f32::consts::PI;

/// Taps per output phase; 16 gives ~60 dB stop-band with a Blackman window, at 48 kHz a group delay of
/// well under a millisecond.
const TAPS_PER_PHASE: usize = 16;

/// Direction of a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Low rate to 48 kHz (interpolate by the factor).
    Up,
    /// 48 kHz to a low rate (decimate by the factor).
    Down,
}

/// Stateful integer-factor resampler for mono i16 audio.
#[derive(Debug, Clone)]
pub struct Resampler {
    factor: usize,
    dir: Direction,
    /// Prototype low-pass at the high rate, `factor * TAPS_PER_PHASE` taps.
    taps: Vec<f32>,
    /// Circular history of input samples (low rate when up, high rate when down).
    hist: Vec<f32>,
    pos: usize,
    /// Decimation phase: input samples seen since the last output.
    phase: usize,
}

impl Resampler {
    /// A resampler between `rate` and 48 kHz, or `None` when the ratio is not an integer (44.1 kHz).
    pub fn between_48k(rate: u32, dir: Direction) -> Option<Self> {
        if rate == 0
            || (rate > 48_000 && !rate.is_multiple_of(48_000))
            || (rate <= 48_000 && !48_000u32.is_multiple_of(rate))
        {
            return None;
        }
        if rate > 48_000 {
            // Above 48 kHz the roles swap: capture at 96 kHz decimates, playback interpolates.
            let flipped = match dir {
                Direction::Up => Direction::Down,
                Direction::Down => Direction::Up,
            };
            return Some(Self::new((rate / 48_000) as usize, flipped));
        }
        Some(Self::new((48_000 / rate) as usize, dir))
    }

    /// A resampler by `factor` (1 is a pass-through).
    pub fn new(factor: usize, dir: Direction) -> Self {
        let factor = factor.max(1);
        let n = factor * TAPS_PER_PHASE;
        // Cut off at 0.45 of the low rate's Nyquist-normalised band so the transition fits below Nyquist.
        let fc = 0.5 / factor as f32 * 0.9;
        let mid = (n - 1) as f32 / 2.0;
        let mut taps: Vec<f32> = (0..n)
            .map(|i| {
                let x = i as f32 - mid;
                let sinc = if x.abs() < 1e-6 { 2.0 * fc } else { (2.0 * PI * fc * x).sin() / (PI * x) };
                let w = 0.42 - 0.5 * (2.0 * PI * i as f32 / (n - 1) as f32).cos()
                    + 0.08 * (4.0 * PI * i as f32 / (n - 1) as f32).cos();
                sinc * w
            })
            .collect();
        let sum: f32 = taps.iter().sum();
        let gain = if dir == Direction::Up { factor as f32 } else { 1.0 };
        for t in &mut taps {
            *t *= gain / sum;
        }
        let hist_len = if dir == Direction::Up { TAPS_PER_PHASE } else { n };
        Self { factor, dir, taps, hist: vec![0.0; hist_len], pos: 0, phase: 0 }
    }

    /// The conversion factor.
    pub fn factor(&self) -> usize {
        self.factor
    }

    /// Output samples produced for `input_len` input samples (exact for whole frames).
    pub fn output_len(&self, input_len: usize) -> usize {
        match self.dir {
            Direction::Up => input_len * self.factor,
            Direction::Down => (input_len + self.phase) / self.factor,
        }
    }

    /// Converts `input` into `out`, returning the samples written. Output beyond `out.len()` is dropped,
    /// so size `out` with [`Resampler::output_len`].
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        if self.factor == 1 {
            let n = input.len().min(out.len());
            out[..n].copy_from_slice(&input[..n]);
            return n;
        }
        let mut written = 0;
        let hl = self.hist.len();
        for &s in input {
            self.hist[self.pos] = f32::from(s);
            self.pos = (self.pos + 1) % hl;
            match self.dir {
                Direction::Up => {
                    for p in 0..self.factor {
                        let mut acc = 0.0f32;
                        // hist newest is at pos-1; tap p + k*factor multiplies the k-th newest sample.
                        for k in 0..TAPS_PER_PHASE {
                            let idx = (self.pos + hl - 1 - k) % hl;
                            acc += self.taps[p + k * self.factor] * self.hist[idx];
                        }
                        if let Some(o) = out.get_mut(written) {
                            *o = to_i16(acc);
                        }
                        written += 1;
                    }
                }
                Direction::Down => {
                    self.phase += 1;
                    if self.phase == self.factor {
                        self.phase = 0;
                        let mut acc = 0.0f32;
                        for (k, t) in self.taps.iter().enumerate() {
                            let idx = (self.pos + hl - 1 - k) % hl;
                            acc += t * self.hist[idx];
                        }
                        if let Some(o) = out.get_mut(written) {
                            *o = to_i16(acc);
                        }
                        written += 1;
                    }
                }
            }
        }
        written.min(out.len())
    }
}

fn to_i16(x: f32) -> i16 {
    x.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: f32, freq: f32, n: usize) -> Vec<i16> {
        (0..n).map(|i| ((2.0 * PI * freq * i as f32 / rate).sin() * 10_000.0) as i16).collect()
    }

    fn rms(x: &[i16]) -> f32 {
        (x.iter().map(|&s| f32::from(s).powi(2)).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn up_then_down_keeps_a_voice_band_tone() {
        let input = tone(16_000.0, 1_000.0, 1_600);
        let mut up = Resampler::between_48k(16_000, Direction::Up).unwrap();
        let mut down = Resampler::between_48k(16_000, Direction::Down).unwrap();
        let mut hi = vec![0i16; up.output_len(input.len())];
        assert_eq!(up.process(&input, &mut hi), 4_800);
        let mut lo = vec![0i16; down.output_len(hi.len())];
        assert_eq!(down.process(&hi, &mut lo), 1_600);
        let ratio = rms(&lo[200..]) / rms(&input[200..]);
        assert!((0.95..1.05).contains(&ratio), "gain {ratio}");
    }

    #[test]
    fn decimation_rejects_tones_above_the_new_nyquist() {
        let input = tone(48_000.0, 12_000.0, 4_800);
        let mut down = Resampler::new(3, Direction::Down);
        let mut lo = vec![0i16; 1_600];
        down.process(&input, &mut lo);
        assert!(rms(&lo[100..]) < rms(&input) * 0.01, "alias {}", rms(&lo[100..]));
    }

    #[test]
    fn non_integer_ratios_are_refused() {
        assert!(Resampler::between_48k(44_100, Direction::Up).is_none());
        assert!(Resampler::between_48k(96_000, Direction::Up).is_some());
    }
}
