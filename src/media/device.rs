//! Sound-card capture and playback through cpal, behind [`AudioSource`] / [`AudioSink`].
//!
//! The device runs at its native rate when that is 48 kHz or an integer ratio of it (8–96 kHz);
//! conversion happens on the engine threads, never in the cpal callback. The callbacks only move samples
//! between the device buffer and fixed-size blocks on bounded queues: no allocation, no locks, no logging.
//!
//! On a machine without a sound card ALSA still lists `default` and fails when the stream is built; that
//! is reported as [`AudioError::NoDevice`] naming the WAV options. ALSA prints diagnostics straight to
//! stderr from C, which would corrupt a TUI; on Linux the thread that enumerates and opens devices
//! installs alsa-rs's safe thread-local error handler, which captures those messages into a buffer we
//! drop. Messages ALSA emits later from cpal's own stream thread (xrun recovery) are not covered; a TUI
//! should additionally redirect stderr to its log file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, StreamConfig};

use super::audio::{AudioError, AudioSink, AudioSource, Captured, PcmBlock};
use super::codec::{MAX_FRAME_SAMPLES, SAMPLE_RATE};
use super::resample::{Direction, Resampler};

/// Keeps ALSA's C-level stderr messages out of the terminal while it lives (current thread only).
#[derive(Debug)]
pub struct AlsaQuiet {
    #[cfg(target_os = "linux")]
    _out: Option<std::rc::Rc<std::cell::RefCell<alsa::Output>>>,
}

impl AlsaQuiet {
    /// Installs the capture on the calling thread.
    pub fn install() -> Self {
        Self {
            #[cfg(target_os = "linux")]
            _out: alsa::Output::local_error_handler().ok(),
        }
    }
}

/// A device as listed for the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// Human-readable name (what `--input-device` matches).
    pub name: String,
    /// Stable backend id.
    pub id: String,
    /// Can capture.
    pub input: bool,
    /// Can play.
    pub output: bool,
}

/// Lists the default host's devices.
///
/// Fails when the host cannot enumerate devices.
pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    let _quiet = AlsaQuiet::install();
    let host = cpal::default_host();
    let devices = host.devices().map_err(|e| AudioError::NoDevice(e.to_string()))?;
    Ok(devices
        .map(|d| {
            let desc = d.description().ok();
            DeviceInfo {
                name: desc.as_ref().map_or_else(|| d.to_string(), |x| x.name().to_string()),
                id: d.id().map_or_else(|_| String::new(), |i| i.to_string()),
                input: desc.as_ref().is_some_and(|x| x.supports_input()),
                output: desc.as_ref().is_some_and(|x| x.supports_output()),
            }
        })
        .collect())
}

fn matches(d: &cpal::Device, name: &str) -> bool {
    d.description().is_ok_and(|x| x.name() == name) || d.id().is_ok_and(|i| i.to_string() == name)
}

fn pick(input: bool, name: Option<&str>) -> Result<cpal::Device, AudioError> {
    let host = cpal::default_host();
    match name {
        None => {
            let d = if input { host.default_input_device() } else { host.default_output_device() };
            d.ok_or_else(|| AudioError::NoDevice("the audio host reports no default device".into()))
        }
        Some(n) => {
            let mut it = if input { host.input_devices() } else { host.output_devices() }
                .map_err(|e| AudioError::NoDevice(e.to_string()))?;
            it.find(|d| matches(d, n)).ok_or_else(|| AudioError::DeviceNotFound(n.to_string()))
        }
    }
}

/// Picks 48 kHz when the device supports it, otherwise another integer ratio of 48 kHz.
fn choose_config(device: &cpal::Device, input: bool) -> Result<(StreamConfig, SampleFormat), AudioError> {
    let ranges: Vec<cpal::SupportedStreamConfigRange> = if input {
        device.supported_input_configs().map(Iterator::collect)
    } else {
        device.supported_output_configs().map(Iterator::collect)
    }
    .map_err(|e| AudioError::NoDevice(e.to_string()))?;
    let formats = [SampleFormat::F32, SampleFormat::I16];
    for rate in [48_000, 24_000, 16_000, 8_000] {
        for fmt in formats {
            let mut candidates: Vec<_> = ranges
                .iter()
                .filter(|r| r.sample_format() == fmt && r.min_sample_rate() <= rate && r.max_sample_rate() >= rate)
                .collect();
            candidates.sort_by_key(|r| r.channels());
            if let Some(r) = candidates.first() {
                let cfg = (**r).with_sample_rate(rate);
                let mut sc = cfg.config();
                sc.buffer_size = cpal::BufferSize::Default;
                return Ok((sc, fmt));
            }
        }
    }
    Err(AudioError::NoDevice("no 48 kHz-compatible f32/i16 configuration".into()))
}

/// Microphone capture.
pub struct CpalSource {
    rx: Receiver<PcmBlock>,
    _stream: cpal::Stream,
    up: Resampler,
    overruns: Arc<AtomicU64>,
}

impl std::fmt::Debug for CpalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpalSource").field("overruns", &self.overruns.load(Relaxed)).finish()
    }
}

impl CpalSource {
    /// Opens the named (or default) input device for frames of `frame_samples` at 48 kHz.
    ///
    /// Fails with [`AudioError::NoDevice`] when no device can be opened.
    pub fn open(name: Option<&str>, frame_samples: usize) -> Result<Self, AudioError> {
        let _quiet = AlsaQuiet::install();
        let device = pick(true, name)?;
        let (config, fmt) = choose_config(&device, true)?;
        let up = Resampler::between_48k(config.sample_rate, Direction::Up)
            .ok_or(AudioError::UnsupportedRate(config.sample_rate))?;
        let device_block = frame_samples * config.sample_rate as usize / SAMPLE_RATE as usize;
        let (tx, rx) = sync_channel(4);
        let overruns = Arc::new(AtomicU64::new(0));
        let stream = match fmt {
            SampleFormat::I16 => build_input::<i16>(&device, &config, tx, device_block, overruns.clone()),
            _ => build_input::<f32>(&device, &config, tx, device_block, overruns.clone()),
        }?;
        stream.play().map_err(|e| AudioError::NoDevice(e.to_string()))?;
        Ok(Self { rx, _stream: stream, up, overruns })
    }

    /// Frames dropped because the engine did not keep up.
    pub fn overruns(&self) -> u64 {
        self.overruns.load(Relaxed)
    }
}

fn build_input<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    tx: SyncSender<PcmBlock>,
    block_len: usize,
    overruns: Arc<AtomicU64>,
) -> Result<cpal::Stream, AudioError>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let ch = usize::from(config.channels.max(1));
    let block_len = block_len.clamp(1, MAX_FRAME_SAMPLES);
    let mut block = PcmBlock::new();
    device
        .build_input_stream::<T, _, _>(
            *config,
            move |data: &[T], _| {
                for frame in data.chunks(ch) {
                    let mono = frame.iter().map(|s| s.to_sample::<f32>()).sum::<f32>() / ch as f32;
                    block.data[block.len] = (mono * 32_767.0).clamp(-32_768.0, 32_767.0) as i16;
                    block.len += 1;
                    if block.len == block_len {
                        if let Err(TrySendError::Full(_)) = tx.try_send(block) {
                            overruns.fetch_add(1, Relaxed);
                        }
                        block.len = 0;
                    }
                }
            },
            |_err| {},
            Some(Duration::from_secs(2)),
        )
        .map_err(|e| AudioError::NoDevice(e.to_string()))
}

impl AudioSource for CpalSource {
    fn read_frame(&mut self, out: &mut [i16]) -> Result<Captured, AudioError> {
        let block = self.rx.recv_timeout(Duration::from_secs(2)).map_err(|_| AudioError::Stalled)?;
        let n = self.up.process(&block.data[..block.len], out);
        out[n..].fill(0);
        Ok(Captured::Audio)
    }
}

/// Speaker playback.
pub struct CpalSink {
    tx: SyncSender<PcmBlock>,
    _stream: cpal::Stream,
    down: Resampler,
    buf: Box<[i16]>,
    underruns: Arc<AtomicU64>,
}

impl std::fmt::Debug for CpalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpalSink").field("underruns", &self.underruns.load(Relaxed)).finish()
    }
}

impl CpalSink {
    /// Opens the named (or default) output device for frames of `frame_samples` at 48 kHz.
    ///
    /// Fails with [`AudioError::NoDevice`] when no device can be opened.
    pub fn open(name: Option<&str>, frame_samples: usize) -> Result<Self, AudioError> {
        let _quiet = AlsaQuiet::install();
        let device = pick(false, name)?;
        let (config, fmt) = choose_config(&device, false)?;
        let down = Resampler::between_48k(config.sample_rate, Direction::Down)
            .ok_or(AudioError::UnsupportedRate(config.sample_rate))?;
        // One block queued plus the one playing: about two frames of output latency.
        let (tx, rx) = sync_channel(1);
        let underruns = Arc::new(AtomicU64::new(0));
        let stream = match fmt {
            SampleFormat::I16 => build_output::<i16>(&device, &config, rx, underruns.clone()),
            _ => build_output::<f32>(&device, &config, rx, underruns.clone()),
        }?;
        stream.play().map_err(|e| AudioError::NoDevice(e.to_string()))?;
        Ok(Self { tx, _stream: stream, down, buf: vec![0; frame_samples].into_boxed_slice(), underruns })
    }

    /// Callbacks that found no frame ready.
    pub fn underruns(&self) -> u64 {
        self.underruns.load(Relaxed)
    }
}

fn build_output<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    rx: Receiver<PcmBlock>,
    underruns: Arc<AtomicU64>,
) -> Result<cpal::Stream, AudioError>
where
    T: SizedSample + FromSample<f32>,
{
    let ch = usize::from(config.channels.max(1));
    let mut block = PcmBlock::new();
    let mut pos = 0usize;
    device
        .build_output_stream::<T, _, _>(
            *config,
            move |data: &mut [T], _| {
                for frame in data.chunks_mut(ch) {
                    if pos == block.len {
                        match rx.try_recv() {
                            Ok(b) => {
                                block = b;
                                pos = 0;
                            }
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                                underruns.fetch_add(1, Relaxed);
                                block.len = 0;
                                pos = 0;
                            }
                        }
                    }
                    let s = if pos < block.len {
                        pos += 1;
                        f32::from(block.data[pos - 1]) / 32_768.0
                    } else {
                        0.0
                    };
                    for out in frame.iter_mut() {
                        *out = T::from_sample(s);
                    }
                }
            },
            |_err| {},
            Some(Duration::from_secs(2)),
        )
        .map_err(|e| AudioError::NoDevice(e.to_string()))
}

impl AudioSink for CpalSink {
    fn play_frame(&mut self, fill: &mut dyn FnMut(&mut [i16])) -> Result<(), AudioError> {
        fill(&mut self.buf);
        let mut block = PcmBlock::new();
        block.len = self.down.process(&self.buf, &mut block.data);
        // Blocks while the device still has a frame queued: the device clock paces playout.
        self.tx.send(block).map_err(|_| AudioError::Stalled)
    }

    fn finish(self: Box<Self>) -> Result<(), AudioError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On machines without a sound card (CI, these build boxes) opening must fail with the clear message;
    /// with a card it must succeed. Either way it must not panic.
    #[test]
    fn opening_the_default_device_fails_clearly_or_works() {
        match CpalSource::open(None, 960) {
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("no usable audio device") && msg.contains("WAV"), "{msg}");
            }
        }
        match CpalSink::open(Some("no-such-device-qvoice"), 960) {
            Err(AudioError::DeviceNotFound(n)) => assert_eq!(n, "no-such-device-qvoice"),
            Err(AudioError::NoDevice(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
