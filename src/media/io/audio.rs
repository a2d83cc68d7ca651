//! Audio I/O behind one pair of traits, with two real backends: WAV files (this module) and sound devices
//! through cpal ([`crate::media::device`]).
//!
//! Everything inside the engine is 48 kHz mono i16 in frames of the codec's size. A source blocks until the
//! next frame is captured; a sink blocks until the device wants the next frame and then asks the playout
//! code to fill it, so the jitter buffer is read as late as possible. WAV I/O can be paced by a clock at
//! real time, so it behaves like a device (latency and jitter included), or run unpaced for offline work.
//! The paced WAV sink writes output sample `n` at `epoch + n / rate`, the same clock the paced source reads
//! input on, so when both share an epoch input and output line up sample for sample.
//!
//! WAV writing (the sink, and call recording) happens on a dedicated writer thread fed through a bounded
//! queue, so a slow disk can never block the audio path; overflowing frames are dropped and counted.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::media::codec::{MAX_FRAME_SAMPLES, SAMPLE_RATE};
use crate::media::resample::{Direction, Resampler};

/// Errors from audio backends. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// No sound device could be opened (e.g. a machine without a sound card).
    #[error(
        "no usable audio device ({0}); on a machine without a sound card use WAV files instead: \
         `--input FILE.wav --output FILE.wav`, or `input = \"FILE.wav\"` and `output = \"null\"` under \
         [audio] in config.toml"
    )]
    NoDevice(String),
    /// A named device was not found.
    #[error("audio device {0:?} not found; list devices with `qvoice devices` or pick the default")]
    DeviceNotFound(String),
    /// The device stopped delivering audio.
    #[error("audio device stopped delivering frames")]
    Stalled,
    /// The device was lost mid-call (unplugged, sound server gone, driver stalled).
    #[error(
        "audio device {device:?} was lost: {why}; check the sound server (`pactl info`), then pick a \
         working device with `--input`/`--output` or `[audio] input`/`output` (list: `qvoice devices`)"
    )]
    DeviceLost {
        /// The device name.
        device: String,
        /// What happened.
        why: String,
    },
    /// The device exists but offers nothing the engine can run.
    #[error(
        "audio device {device:?} cannot be used: it offered {offered}; pick another with \
         `--input`/`--output` or `[audio] input`/`output` (list: `qvoice devices`), or use WAV files"
    )]
    Unusable {
        /// The device name.
        device: String,
        /// The configuration it offered and why it failed.
        offered: String,
    },
    /// A sample rate the engine cannot convert from 48 kHz with an integer ratio.
    #[error("unsupported sample rate {0} Hz (use 8, 12, 16, 24, 48 or 96 kHz)")]
    UnsupportedRate(u32),
    /// A WAV sample format other than 16-bit integer or 32-bit float.
    #[error("unsupported WAV format: {0} (use 16-bit PCM or 32-bit float)")]
    UnsupportedFormat(String),
    /// Reading or writing a WAV file failed.
    #[error("WAV file {path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What hound reported.
        source: hound::Error,
    },
    /// The writer thread died.
    #[error("WAV writer thread failed")]
    WriterGone,
}

/// Whether a captured frame is real input or silence after the input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Captured {
    /// A frame of input.
    Audio,
    /// The input has ended (WAV file exhausted); the frame is silence.
    Ended,
}

/// A capture device: yields 48 kHz mono frames.
pub trait AudioSource {
    /// Blocks until the next frame is captured and copies it into `out` (one frame of samples).
    ///
    /// Fails when the device stops delivering audio.
    fn read_frame(&mut self, out: &mut [i16]) -> Result<Captured, AudioError>;

    /// Starts the source over from its beginning, paced from now, if it has one (a file does; a live
    /// device does not). Returns whether it did: the engine then reads the first frame again, so the first
    /// frame a call sends carries the source's first audio even though the path came up later.
    fn restart(&mut self) -> bool {
        false
    }
}

/// A playback device: consumes 48 kHz mono frames.
pub trait AudioSink {
    /// Blocks until the device needs its next frame, lets `fill` write it into the given buffer (one
    /// frame of samples), then plays it.
    ///
    /// Fails when the device or writer is gone.
    fn play_frame(&mut self, fill: &mut dyn FnMut(&mut [i16])) -> Result<(), AudioError>;

    /// Stops playback and flushes (a WAV sink finalises its file).
    ///
    /// Fails when the file cannot be finalised.
    fn finish(self: Box<Self>) -> Result<(), AudioError>;

    /// Tells a device sink how full the buffer feeding it is (`level_ms`, the jitter buffer's mean wait)
    /// so it can compensate clock drift; file and null sinks ignore it.
    fn observe_buffer(&mut self, _now: Instant, _level_ms: f64, _frame_ms: f64) {}
}

/// Sleeps until frame deadlines on a shared epoch, so file I/O runs at real time.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    epoch: Instant,
    frame: Duration,
    k: u64,
}

impl Pacer {
    /// A pacer whose frame `k` is due at `epoch + k * frame`.
    pub fn new(epoch: Instant, frame: Duration) -> Self {
        Self { epoch, frame, k: 0 }
    }

    /// Waits for the deadline of the current frame, then advances. Falls behind gracefully: a late call
    /// returns at once and the next deadline stays on the original grid.
    pub fn wait_next(&mut self) {
        let due = self.epoch + self.frame * (self.k as u32);
        self.k += 1;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }

    /// Skips the first deadline (a source delivers frame k when its last sample is in, at k+1).
    pub fn skip(mut self) -> Self {
        self.k += 1;
        self
    }
}

/// A fixed-size block of samples passed between threads by value, so queues never allocate per frame.
#[derive(Clone, Copy)]
pub struct PcmBlock {
    /// Valid samples in `data`.
    pub len: usize,
    /// Sample storage.
    pub data: [i16; MAX_FRAME_SAMPLES],
}

impl std::fmt::Debug for PcmBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PcmBlock({} samples)", self.len)
    }
}

impl PcmBlock {
    /// An empty block.
    pub const fn new() -> Self {
        Self { len: 0, data: [0; MAX_FRAME_SAMPLES] }
    }
}

impl Default for PcmBlock {
    fn default() -> Self {
        Self::new()
    }
}

fn wav_err(path: &Path) -> impl FnOnce(hound::Error) -> AudioError + '_ {
    move |source| AudioError::Wav { path: path.to_path_buf(), source }
}

/// Reads a WAV file into 48 kHz mono, mixing channels and resampling integer ratios.
///
/// Fails when the file is unreadable or its rate/format unsupported; returns the samples and the file's
/// original sample rate.
pub fn read_wav_48k(path: &Path) -> Result<(Vec<i16>, u32), AudioError> {
    let mut reader = hound::WavReader::open(path).map_err(wav_err(path))?;
    let spec = reader.spec();
    let ch = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => {
            reader.samples::<i16>().map(|s| s.map(f32::from)).collect::<Result<_, _>>().map_err(wav_err(path))?
        }
        (hound::SampleFormat::Float, 32) => {
            reader.samples::<f32>().map(|s| s.map(|v| v * 32_767.0)).collect::<Result<_, _>>().map_err(wav_err(path))?
        }
        (fmt, bits) => return Err(AudioError::UnsupportedFormat(format!("{fmt:?} {bits}-bit"))),
    };
    let mono: Vec<i16> = interleaved
        .chunks(ch)
        .map(|c| (c.iter().sum::<f32>() / c.len() as f32).clamp(-32_768.0, 32_767.0) as i16)
        .collect();
    let mut up =
        Resampler::between_48k(spec.sample_rate, Direction::Up).ok_or(AudioError::UnsupportedRate(spec.sample_rate))?;
    let mut out = vec![0i16; up.output_len(mono.len())];
    let n = up.process(&mono, &mut out);
    out.truncate(n);
    Ok((out, spec.sample_rate))
}

/// Capture from a WAV file.
#[derive(Debug)]
pub struct WavSource {
    samples: Vec<i16>,
    pos: usize,
    pacer: Option<Pacer>,
    rate: u32,
    /// Start over at the end instead of ending (the demo's microphone clip).
    looping: bool,
}

impl WavSource {
    /// Opens `path`; with `pacing = Some(epoch)` frame k is returned at `epoch + (k+1) * frame`, when its
    /// last sample would have been captured by a device.
    ///
    /// Fails when the file is unreadable or its format unsupported.
    pub fn open(path: &Path, frame: Duration, pacing: Option<Instant>) -> Result<Self, AudioError> {
        let (samples, rate) = read_wav_48k(path)?;
        Ok(Self { samples, pos: 0, pacer: pacing.map(|e| Pacer::new(e, frame).skip()), rate, looping: false })
    }

    /// Plays the file again from the start each time it ends, so the source never ends.
    pub fn looping(mut self) -> Self {
        self.looping = !self.samples.is_empty();
        self
    }

    /// The file's sample rate (a WAV sink uses it so output matches input sample for sample).
    pub fn file_rate(&self) -> u32 {
        self.rate
    }
}

impl AudioSource for WavSource {
    fn read_frame(&mut self, out: &mut [i16]) -> Result<Captured, AudioError> {
        if let Some(p) = &mut self.pacer {
            p.wait_next();
        }
        let mut filled = 0;
        loop {
            let avail = self.samples.len().saturating_sub(self.pos).min(out.len() - filled);
            out[filled..filled + avail].copy_from_slice(&self.samples[self.pos..self.pos + avail]);
            self.pos += avail;
            filled += avail;
            if filled == out.len() || !self.looping {
                break;
            }
            self.pos = 0;
        }
        out[filled..].fill(0);
        Ok(if filled == 0 { Captured::Ended } else { Captured::Audio })
    }

    fn restart(&mut self) -> bool {
        self.pos = 0;
        if let Some(p) = &mut self.pacer {
            // The frame just read was due now: the restarted first frame is due one frame later.
            *p = Pacer::new(Instant::now(), p.frame).skip();
        }
        true
    }
}

/// Writes 48 kHz frames to a WAV file at `rate` on a background thread, through a bounded queue.
#[derive(Debug)]
pub struct WavRecorder {
    tx: Option<SyncSender<PcmBlock>>,
    down: Resampler,
    block: PcmBlock,
    thread: Option<JoinHandle<Result<(), AudioError>>>,
}

/// Frames the writer queue holds (2.4 s at 20 ms) before frames are dropped.
const RECORDER_QUEUE: usize = 120;

impl WavRecorder {
    /// Creates `path` (16-bit mono at `rate`) and starts the writer thread.
    ///
    /// Fails when the file cannot be created, or `rate` is not an integer divisor of 48 kHz.
    pub fn create(path: &Path, rate: u32) -> Result<Self, AudioError> {
        let down = Resampler::between_48k(rate, Direction::Down).ok_or(AudioError::UnsupportedRate(rate))?;
        if rate > SAMPLE_RATE {
            return Err(AudioError::UnsupportedRate(rate));
        }
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        // Recordings hold decrypted call audio: owner-only, like key files.
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts
            .open(path)
            .map_err(|e| AudioError::Wav { path: path.to_path_buf(), source: hound::Error::IoError(e) })?;
        let mut writer = hound::WavWriter::new(std::io::BufWriter::new(file), spec).map_err(wav_err(path))?;
        let (tx, rx): (SyncSender<PcmBlock>, Receiver<PcmBlock>) = sync_channel(RECORDER_QUEUE);
        let p = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("qv-wav-writer".into())
            .spawn(move || {
                for block in rx {
                    for &s in &block.data[..block.len] {
                        writer.write_sample(s).map_err(wav_err(&p))?;
                    }
                }
                writer.finalize().map_err(wav_err(&p))
            })
            .map_err(|e| AudioError::Wav { path: path.to_path_buf(), source: hound::Error::IoError(e) })?;
        Ok(Self { tx: Some(tx), down, block: PcmBlock::new(), thread: Some(thread) })
    }

    /// Queues one 48 kHz frame; returns false when the queue was full and the frame was dropped.
    pub fn push(&mut self, frame48: &[i16]) -> bool {
        self.block.len = self.down.process(frame48, &mut self.block.data);
        match &self.tx {
            Some(tx) => match tx.try_send(self.block) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        }
    }

    /// Flushes the queue and finalises the file.
    ///
    /// Fails when writing or finalising failed on the writer thread.
    pub fn finish(mut self) -> Result<(), AudioError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), AudioError> {
        drop(self.tx.take());
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| AudioError::WriterGone)?,
            None => Ok(()),
        }
    }
}

impl Drop for WavRecorder {
    fn drop(&mut self) {
        // Finalise even on early exit so the header is valid; the error was either reported by `finish`
        // or has nowhere to go.
        let _ = self.close();
    }
}

/// Playback into a WAV file, optionally paced.
#[derive(Debug)]
pub struct WavSink {
    rec: WavRecorder,
    pacer: Option<Pacer>,
    buf: Box<[i16]>,
    frame_samples: usize,
    dropped: u64,
}

impl WavSink {
    /// Creates `path` at `rate`; with `pacing = Some(epoch)` output frame k is produced at `epoch + k *
    /// frame` and occupies samples `k * frame` onward.
    ///
    /// Fails when the file cannot be created or the rate is unsupported.
    pub fn create(path: &Path, rate: u32, frame_samples: usize, pacing: Option<Instant>) -> Result<Self, AudioError> {
        let frame = Duration::from_micros(frame_samples as u64 * 1_000_000 / u64::from(SAMPLE_RATE));
        Ok(Self {
            rec: WavRecorder::create(path, rate)?,
            pacer: pacing.map(|e| Pacer::new(e, frame)),
            buf: vec![0; frame_samples].into_boxed_slice(),
            frame_samples,
            dropped: 0,
        })
    }

    /// Frames dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl AudioSink for WavSink {
    fn play_frame(&mut self, fill: &mut dyn FnMut(&mut [i16])) -> Result<(), AudioError> {
        if let Some(p) = &mut self.pacer {
            p.wait_next();
        }
        fill(&mut self.buf[..self.frame_samples]);
        if !self.rec.push(&self.buf[..self.frame_samples]) {
            self.dropped += 1;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), AudioError> {
        self.rec.finish()
    }
}

/// Discards audio, paced like a device (for calls with no output).
#[derive(Debug)]
pub struct NullSink {
    pacer: Pacer,
    buf: Box<[i16]>,
}

impl NullSink {
    /// A sink that consumes one frame per frame period from `epoch`.
    pub fn new(frame_samples: usize, epoch: Instant) -> Self {
        let frame = Duration::from_micros(frame_samples as u64 * 1_000_000 / u64::from(SAMPLE_RATE));
        Self { pacer: Pacer::new(epoch, frame), buf: vec![0; frame_samples].into_boxed_slice() }
    }
}

impl AudioSink for NullSink {
    fn play_frame(&mut self, fill: &mut dyn FnMut(&mut [i16])) -> Result<(), AudioError> {
        self.pacer.wait_next();
        fill(&mut self.buf);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), AudioError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_tone(path: &Path, rate: u32, secs: f32) -> Vec<i16> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        let n = (rate as f32 * secs) as usize;
        let v: Vec<i16> = (0..n).map(|i| ((i as f32 * 0.05).sin() * 8_000.0) as i16).collect();
        for &s in &v {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        v
    }

    #[test]
    fn looping_wav_source_starts_over_and_never_ends() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("clip.wav");
        // 0.05 s at 48 kHz = 2400 samples: 2.5 frames of 960, so the wrap lands inside a frame.
        let orig = write_tone(&input, 48_000, 0.05);
        let mut src = WavSource::open(&input, Duration::from_millis(20), None).unwrap().looping();
        let mut got = Vec::new();
        let mut frame = [0i16; 960];
        for _ in 0..10 {
            assert_eq!(src.read_frame(&mut frame).unwrap(), Captured::Audio);
            got.extend_from_slice(&frame);
        }
        let expected: Vec<i16> = orig.iter().copied().cycle().take(got.len()).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn unpaced_wav_round_trip_at_16k_keeps_length_and_signal() {
        let dir = std::env::temp_dir().join(format!("qv-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.wav");
        let orig = write_tone(&input, 16_000, 0.5);
        let mut src = WavSource::open(&input, Duration::from_millis(20), None).unwrap();
        assert_eq!(src.file_rate(), 16_000);
        let out = dir.join("out.wav");
        let mut sink: Box<dyn AudioSink> = Box::new(WavSink::create(&out, 16_000, 960, None).unwrap());
        let mut frame = [0i16; 960];
        let mut frames = 0;
        while src.read_frame(&mut frame).unwrap() == Captured::Audio {
            sink.play_frame(&mut |b| b.copy_from_slice(&frame)).unwrap();
            frames += 1;
        }
        sink.finish().unwrap();
        assert_eq!(frames, 25);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let back: Vec<i16> = hound::WavReader::open(&out).unwrap().samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(back.len(), orig.len());
        // Up and down filters delay by a few samples; compare after aligning.
        let lag = (0..40)
            .max_by_key(|&l| {
                orig[100..7_000].iter().zip(&back[100 + l..]).map(|(&a, &b)| i64::from(a) * i64::from(b)).sum::<i64>()
            })
            .unwrap();
        let err: f64 =
            orig[100..7_000].iter().zip(&back[100 + lag..]).map(|(&a, &b)| f64::from(a - b).powi(2)).sum::<f64>();
        let sig: f64 = orig[100..7_000].iter().map(|&a| f64::from(a).powi(2)).sum();
        assert!(err / sig < 0.01, "relative error {}", err / sig);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paced_source_delivers_at_real_time() {
        let dir = std::env::temp_dir().join(format!("qv-paced-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.wav");
        write_tone(&input, 48_000, 0.1);
        let epoch = Instant::now();
        let mut src = WavSource::open(&input, Duration::from_millis(20), Some(epoch)).unwrap();
        let mut frame = [0i16; 960];
        for k in 1..=5u32 {
            src.read_frame(&mut frame).unwrap();
            assert!(epoch.elapsed() >= Duration::from_millis(20) * k);
        }
        assert!(epoch.elapsed() < Duration::from_millis(100 + 50));
        assert_eq!(src.read_frame(&mut frame).unwrap(), Captured::Ended);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unsupported_inputs_are_refused_with_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("qv-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.wav");
        write_tone(&input, 44_100, 0.05);
        let e = WavSource::open(&input, Duration::from_millis(20), None).unwrap_err();
        assert!(e.to_string().contains("44100"), "{e}");
        let e = WavSource::open(&dir.join("missing.wav"), Duration::from_millis(20), None).unwrap_err();
        assert!(e.to_string().contains("missing.wav"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
