//! An echo line: what one engine's sink plays comes back out of its source after a delay. It is the
//! audio of `qvoice demo`'s echo contact (like Skype's "Echo / Sound Test Service"): the contact answers,
//! and the caller hears themselves a moment later, through the whole encrypted path both ways.
//!
//! Frames cross between the playout and capture threads as [`PcmBlock`]s by value through a bounded
//! channel; the only lock is taken when a call opens the line, never per frame.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::media::audio::{AudioError, AudioSink, AudioSource, Captured, Pacer, PcmBlock};

type Halves = (Option<SyncSender<PcmBlock>>, Option<Receiver<PcmBlock>>);

/// A shared loop from an [`AudioSink`] back to an [`AudioSource`], delayed by `delay`.
#[derive(Clone)]
pub struct EchoLine {
    halves: Arc<Mutex<Halves>>,
    delay: Duration,
}

impl EchoLine {
    pub fn new(delay: Duration) -> Self {
        Self { halves: Arc::new(Mutex::new((None, None))), delay }
    }

    /// A fresh channel per call: whichever end opens first creates it and leaves the other half.
    fn take(&self, sender: bool) -> (Option<SyncSender<PcmBlock>>, Option<Receiver<PcmBlock>>) {
        let Ok(mut h) = self.halves.lock() else { return (None, None) };
        let empty = if sender { h.0.is_none() } else { h.1.is_none() };
        if empty {
            // Room for the delay plus two seconds of slack at 10 ms frames.
            let cap = (self.delay.as_millis() / 10) as usize + 200;
            let (tx, rx) = sync_channel(cap);
            *h = (Some(tx), Some(rx));
        }
        if sender { (h.0.take(), None) } else { (None, h.1.take()) }
    }

    pub(crate) fn sink(&self, frame_samples: usize, epoch: Instant) -> Result<EchoSink, AudioError> {
        let tx = self.take(true).0.ok_or_else(|| AudioError::NoDevice("echo line is in use".into()))?;
        Ok(EchoSink { pacer: Pacer::new(epoch, frame_duration(frame_samples)), tx, frame_samples })
    }

    pub(crate) fn source(&self, frame_samples: usize, epoch: Instant) -> Result<EchoSource, AudioError> {
        let rx = self.take(false).1.ok_or_else(|| AudioError::NoDevice("echo line is in use".into()))?;
        let frame = frame_duration(frame_samples);
        let delay_frames = (self.delay.as_micros() / frame.as_micros().max(1)) as u64;
        Ok(EchoSource { pacer: Pacer::new(epoch, frame).skip(), rx, silent_frames: delay_frames })
    }
}

impl std::fmt::Debug for EchoLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EchoLine(delay {:?})", self.delay)
    }
}

impl PartialEq for EchoLine {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.halves, &other.halves)
    }
}

impl Eq for EchoLine {}

fn frame_duration(frame_samples: usize) -> Duration {
    Duration::from_micros(frame_samples as u64 * 1_000_000 / u64::from(crate::media::codec::SAMPLE_RATE))
}

/// Plays into the echo line, paced like a device.
pub(crate) struct EchoSink {
    pacer: Pacer,
    tx: SyncSender<PcmBlock>,
    frame_samples: usize,
}

impl AudioSink for EchoSink {
    fn play_frame(&mut self, fill: &mut dyn FnMut(&mut [i16])) -> Result<(), AudioError> {
        self.pacer.wait_next();
        let mut block = PcmBlock::new();
        block.len = self.frame_samples.min(block.data.len());
        fill(&mut block.data[..block.len]);
        // A full line means the source stopped reading: drop, as a device would.
        let _ = self.tx.try_send(block);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), AudioError> {
        Ok(())
    }
}

/// Captures from the echo line: silence for the delay, then what the sink played.
pub(crate) struct EchoSource {
    pacer: Pacer,
    rx: Receiver<PcmBlock>,
    silent_frames: u64,
}

impl AudioSource for EchoSource {
    fn read_frame(&mut self, out: &mut [i16]) -> Result<Captured, AudioError> {
        self.pacer.wait_next();
        out.fill(0);
        if self.silent_frames > 0 {
            self.silent_frames -= 1;
            return Ok(Captured::Audio);
        }
        if let Ok(block) = self.rx.try_recv() {
            let n = block.len.min(out.len());
            out[..n].copy_from_slice(&block.data[..n]);
        }
        Ok(Captured::Audio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_played_comes_back_after_the_delay() {
        let line = EchoLine::new(Duration::from_millis(40));
        let epoch = Instant::now();
        let mut sink = line.sink(480, epoch).unwrap();
        let mut src = line.source(480, epoch).unwrap();
        let mut out = vec![0i16; 480];
        for i in 0..6i16 {
            sink.play_frame(&mut |b| b.fill(i + 1)).unwrap();
            src.read_frame(&mut out).unwrap();
            // 40 ms at 10 ms frames: four frames of silence, then frame 1.
            let want = if i < 4 { 0 } else { i - 3 };
            assert!(out.iter().all(|&s| s == want), "frame {i}: {}", out[0]);
        }
        // A second call on the same line gets a fresh channel.
        drop((sink, src));
        assert!(line.sink(480, epoch).is_ok() && line.source(480, epoch).is_ok());
    }
}
