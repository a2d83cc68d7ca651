//! The engine's threads and its public handle. See the module docs of [`crate::media`] for the layout.

use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qvoice_proto::frame::{AudioPayload, MAX_DATAGRAM, OVERHEAD, Probe, StatsReport};
use qvoice_proto::{FrameType, MediaCrypto};

use super::audio::{AudioSink, AudioSource, Captured, NullSink, WavRecorder, WavSink, WavSource};
use super::codec::{CodecKind, Decoder, Encoder, MAX_ENCODED, MAX_FRAME_SAMPLES, SAMPLE_RATE};
use super::device::{CpalSink, CpalSource};
use super::impair::{Impairer, Impairment};
use super::jitter::{JitterBuffer, JitterConfig, Pop};
use super::metrics::{Counters, MetricsSnapshot, mos_from_r, r_factor};
use super::{AudioError, MediaError};

/// Where the engine's microphone audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioIn {
    /// A sound device through cpal; `None` picks the default input.
    Device(Option<String>),
    /// A WAV file, read at real time from the engine's epoch (any integer ratio of 48 kHz, mono/stereo).
    Wav(PathBuf),
    /// Digital silence at real time (receive-only calls, tests).
    Silence,
    /// What an [`AudioOut::Echo`] on the same line played, delayed (the demo's echo contact).
    Echo(super::echo::EchoLine),
}

/// Where received audio goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOut {
    /// A sound device through cpal; `None` picks the default output.
    Device(Option<String>),
    /// A WAV file written on the engine's clock: output sample n is what played at `epoch + n / rate`.
    /// `rate` defaults to the input WAV's rate (so input and output compare sample for sample), else 48 kHz.
    Wav {
        /// Output file.
        path: PathBuf,
        /// Output sample rate.
        rate: Option<u32>,
    },
    /// Discard (paced like a device).
    Null,
    /// Feed an [`AudioIn::Echo`] on the same line.
    Echo(super::echo::EchoLine),
}

impl AudioIn {
    /// Parses the user's spelling: `default`, `silence`, a path ending in `.wav`, or a device name.
    pub fn from_spec(spec: &str) -> Self {
        match spec {
            "default" => Self::Device(None),
            "silence" | "none" => Self::Silence,
            s if s.ends_with(".wav") => Self::Wav(PathBuf::from(s)),
            s => Self::Device(Some(s.to_owned())),
        }
    }

    /// The spelling [`AudioIn::from_spec`] reads back.
    pub fn spec(&self) -> String {
        match self {
            Self::Device(None) => "default".into(),
            Self::Device(Some(n)) => n.clone(),
            Self::Wav(p) => p.display().to_string(),
            Self::Silence => "silence".into(),
            Self::Echo(_) => "echo".into(),
        }
    }
}

impl AudioOut {
    /// Parses the user's spelling: `default`, `null`, a path ending in `.wav`, or a device name.
    pub fn from_spec(spec: &str) -> Self {
        match spec {
            "default" => Self::Device(None),
            "null" | "none" => Self::Null,
            s if s.ends_with(".wav") => Self::Wav { path: PathBuf::from(s), rate: None },
            s => Self::Device(Some(s.to_owned())),
        }
    }

    /// The spelling [`AudioOut::from_spec`] reads back.
    pub fn spec(&self) -> String {
        match self {
            Self::Device(None) => "default".into(),
            Self::Device(Some(n)) => n.clone(),
            Self::Wav { path, .. } => path.display().to_string(),
            Self::Null => "null".into(),
            Self::Echo(_) => "echo".into(),
        }
    }
}

/// Everything the engine needs for one call.
#[derive(Debug)]
pub struct MediaConfig {
    /// Per-call media keys from the handshake (`SessionKeys::media`).
    pub crypto: MediaCrypto,
    /// The call's UDP socket, bound before the handshake so its address could be offered as a candidate.
    pub socket: UdpSocket,
    /// The peer's candidates from OFFER/ANSWER; probed until one answers with an authenticated frame.
    pub peer_candidates: Vec<SocketAddr>,
    /// Negotiated codec.
    pub codec: CodecKind,
    /// Negotiated frame duration in ms (Opus 10/20/40/60, PCM 10/20/40).
    pub frame_ms: u8,
    /// Audio input.
    pub input: AudioIn,
    /// Audio output.
    pub output: AudioOut,
    /// When set, `sent.wav` and `received.wav` (48 kHz) are recorded here.
    pub record_dir: Option<PathBuf>,
    /// Simulated network impairment applied to outgoing datagrams.
    pub impairment: Impairment,
    /// Clock origin for paced WAV I/O; engines sharing an epoch have sample-aligned files. Default: now.
    pub epoch: Option<Instant>,
    /// How long without an authenticated frame before [`MediaEvent::PeerSilent`].
    pub silence_timeout: Duration,
    /// How far the paced output clock (WAV or null sink) runs behind `epoch`. A sound card's playout
    /// clock has an arbitrary phase relative to the peer's capture clock; 0, the default, is the worst
    /// case for a WAV loopback, where every frame arrives just after a playout tick and waits a full frame.
    pub output_phase: Duration,
    /// Prefix of the engine's thread names (`<label>-capture`, `-net`, `-playout`), so tools can tell two
    /// engines in one process apart.
    pub label: String,
}

impl MediaConfig {
    /// A configuration with defaults: Opus 20 ms, default devices, no recording or impairment, 5 s
    /// silence timeout.
    pub fn new(crypto: MediaCrypto, socket: UdpSocket, peer_candidates: Vec<SocketAddr>) -> Self {
        Self {
            crypto,
            socket,
            peer_candidates,
            codec: CodecKind::Opus,
            frame_ms: 20,
            input: AudioIn::Device(None),
            output: AudioOut::Device(None),
            record_dir: None,
            impairment: Impairment::default(),
            epoch: None,
            silence_timeout: Duration::from_secs(5),
            output_phase: Duration::ZERO,
            label: "qv".into(),
        }
    }
}

/// Things the session layer and TUI react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The first authenticated frame arrived; media flows to `addr`.
    PeerConnected {
        /// The peer's address.
        addr: SocketAddr,
        /// When.
        at: Instant,
    },
    /// The peer's address changed mid-call (NAT rebinding); authenticated frames now come from `to`.
    PeerAddressChanged {
        /// Old address.
        from: SocketAddr,
        /// New address.
        to: SocketAddr,
    },
    /// The first received audio frame was handed to the output (for call-setup latency).
    FirstAudioPlayed {
        /// When.
        at: Instant,
        /// Time since the engine started.
        since_start: Duration,
    },
    /// No authenticated frame for `silent_for`.
    PeerSilent {
        /// How long.
        silent_for: Duration,
    },
    /// Frames arrive again after [`MediaEvent::PeerSilent`].
    PeerResumed,
    /// The peer ended the call (a BYE frame).
    PeerBye,
    /// The WAV input is exhausted (silence is sent from now on).
    InputEnded,
    /// A media thread hit an error it cannot recover from; the text is for the user.
    Failed(String),
}

/// State shared by the engine threads and the handle.
#[derive(Debug)]
struct Shared {
    counters: Counters,
    stop: AtomicBool,
    mute: AtomicBool,
    start: Instant,
    codec: CodecKind,
    frame_ms: u8,
    events: SyncSender<MediaEvent>,
    peer: Mutex<Option<SocketAddr>>,
}

impl Shared {
    fn event(&self, e: MediaEvent) {
        // A full event queue means nobody is listening; dropping is the right thing for a status event.
        let _ = self.events.try_send(e);
    }
}

/// An encoded frame on its way from the capture thread to the net thread.
#[derive(Clone, Copy)]
struct TxFrame {
    timestamp: u32,
    len: u16,
    data: [u8; MAX_ENCODED],
}

/// A received audio frame on its way from the net thread to the playout thread.
#[derive(Clone, Copy)]
struct RxFrame {
    timestamp: u32,
    arrival: Instant,
    len: u16,
    data: [u8; MAX_ENCODED],
}

/// Queue between capture and net, in frames.
const TX_QUEUE: usize = 8;
/// Queue between net and playout, in frames (more than the jitter buffer's cap so bursts fit).
const RX_QUEUE: usize = 64;
/// Largest datagram the engine sends: a PCM 40 ms frame plus timestamp and AEAD overhead.
const MAX_SEND: usize = MAX_ENCODED + AudioPayload::HEADER + OVERHEAD;
/// Delayed datagrams the impairment queue holds (2.5 s of 20 ms audio with duplicates).
const IMPAIR_QUEUE: usize = 256;
/// Probe interval while no candidate has answered.
const PROBE_FAST: Duration = Duration::from_millis(50);
/// Probe interval for RTT once connected.
const PROBE_SLOW: Duration = Duration::from_secs(1);
/// Receiver-report and keepalive interval.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// An output frame quieter than this RMS lets the jitter buffer drop a frame to shrink.
const QUIET_RMS: f64 = 300.0;

/// Entry point of the media engine.
#[derive(Debug)]
pub struct MediaEngine;

/// A running call's media. Dropping it without [`MediaHandle::stop`] stops the threads but loses the final
/// metrics and any error from finalising WAV files.
#[derive(Debug)]
pub struct MediaHandle {
    shared: Arc<Shared>,
    events: Option<Receiver<MediaEvent>>,
    stop_net: Option<tokio::sync::oneshot::Sender<()>>,
    capture: Option<JoinHandle<Result<(), MediaError>>>,
    net: Option<JoinHandle<Result<(), MediaError>>>,
    playout: Option<JoinHandle<Result<(), MediaError>>>,
    local_addr: SocketAddr,
}

impl MediaEngine {
    /// Starts the capture, net and playout threads for one call.
    ///
    /// Fails when the codec/frame size is unsupported, the socket cannot be used, or an audio device or
    /// WAV file cannot be opened (devices are opened before this returns, so "no usable audio device"
    /// surfaces here with a message naming the WAV options).
    pub fn start(cfg: MediaConfig) -> Result<MediaHandle, MediaError> {
        let frame_samples = cfg.codec.frame_samples(cfg.frame_ms)?;
        if cfg.peer_candidates.is_empty() {
            return Err(MediaError::Config("no peer candidates to send media to".into()));
        }
        let encoder = Encoder::new(cfg.codec, cfg.frame_ms)?;
        let decoder = Decoder::new(cfg.codec, cfg.frame_ms)?;
        let local_addr = cfg
            .socket
            .local_addr()
            .map_err(|source| MediaError::Io { what: "reading the media socket address", source })?;
        cfg.socket
            .set_nonblocking(true)
            .map_err(|source| MediaError::Io { what: "making the media socket non-blocking", source })?;
        let epoch = cfg.epoch.unwrap_or_else(Instant::now);
        let (ev_tx, ev_rx) = sync_channel(64);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            mute: AtomicBool::new(false),
            start: Instant::now(),
            codec: cfg.codec,
            frame_ms: cfg.frame_ms,
            events: ev_tx,
            peer: Mutex::new(None),
        });
        let out_rate = match (&cfg.output, &cfg.input) {
            (AudioOut::Wav { rate: Some(r), .. }, _) => *r,
            (AudioOut::Wav { rate: None, .. }, AudioIn::Wav(p)) => wav_rate(p),
            _ => SAMPLE_RATE,
        };
        let frame = Duration::from_millis(u64::from(cfg.frame_ms));
        let (tx_frames, rx_tx) = tokio::sync::mpsc::channel::<TxFrame>(TX_QUEUE);
        let (to_playout, from_net) = sync_channel::<RxFrame>(RX_QUEUE);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();

        let mut handle = MediaHandle {
            shared: shared.clone(),
            events: Some(ev_rx),
            stop_net: Some(stop_tx),
            capture: None,
            net: None,
            playout: None,
            local_addr,
        };

        // Playout first, so the first frames have a consumer; device opening is reported back before
        // start() returns.
        let (ready_tx, ready_rx) = sync_channel::<Result<(), MediaError>>(1);
        let s = shared.clone();
        let out = cfg.output.clone();
        let rec = cfg.record_dir.clone();
        let out_epoch = epoch + cfg.output_phase;
        handle.playout = Some(spawn(format!("{}-playout", cfg.label), move || {
            let opened = open_sink(&out, out_rate, frame_samples, out_epoch).and_then(|sink| {
                let recorder = rec.map(|d| WavRecorder::create(&d.join("received.wav"), SAMPLE_RATE)).transpose()?;
                Ok((sink, recorder))
            });
            match opened {
                Ok((sink, recorder)) => {
                    let _ = ready_tx.send(Ok(()));
                    playout_loop(&s, sink, recorder, decoder, from_net, frame_samples)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    Ok(())
                }
            }
        })?);
        wait_ready(&ready_rx, "qv-playout")?;

        let (ready_tx, ready_rx) = sync_channel::<Result<(), MediaError>>(1);
        let s = shared.clone();
        let input = cfg.input.clone();
        let rec = cfg.record_dir.clone();
        handle.capture = Some(spawn(format!("{}-capture", cfg.label), move || {
            let opened = open_source(&input, frame, frame_samples, epoch).and_then(|src| {
                let recorder = rec.map(|d| WavRecorder::create(&d.join("sent.wav"), SAMPLE_RATE)).transpose()?;
                Ok((src, recorder))
            });
            match opened {
                Ok((src, recorder)) => {
                    let _ = ready_tx.send(Ok(()));
                    capture_loop(&s, src, recorder, encoder, tx_frames, frame_samples)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    Ok(())
                }
            }
        })?);
        if let Err(e) = wait_ready(&ready_rx, "qv-capture") {
            let _ = handle.shutdown();
            return Err(e);
        }

        let s = shared.clone();
        let net = Net::new(
            s,
            cfg.crypto,
            cfg.peer_candidates,
            cfg.impairment,
            cfg.silence_timeout,
            frame_samples,
            to_playout,
        );
        let socket = cfg.socket;
        handle.net = Some(spawn(format!("{}-net", cfg.label), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| MediaError::Io { what: "starting the media runtime", source })?;
            rt.block_on(net.run(socket, rx_tx, stop_rx))
        })?);
        Ok(handle)
    }
}

fn wav_rate(p: &std::path::Path) -> u32 {
    hound::WavReader::open(p).map_or(SAMPLE_RATE, |r| r.spec().sample_rate)
}

fn spawn(
    name: String,
    f: impl FnOnce() -> Result<(), MediaError> + Send + 'static,
) -> Result<JoinHandle<Result<(), MediaError>>, MediaError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|source| MediaError::Io { what: "spawning a media thread", source })
}

fn wait_ready(rx: &Receiver<Result<(), MediaError>>, name: &'static str) -> Result<(), MediaError> {
    rx.recv_timeout(Duration::from_secs(10)).map_err(|_| MediaError::ThreadPanicked(name))?
}

fn open_source(
    input: &AudioIn,
    frame: Duration,
    frame_samples: usize,
    epoch: Instant,
) -> Result<Box<dyn AudioSource>, AudioError> {
    Ok(match input {
        AudioIn::Device(name) => Box::new(CpalSource::open(name.as_deref(), frame_samples)?),
        AudioIn::Wav(p) => Box::new(WavSource::open(p, frame, Some(epoch))?),
        AudioIn::Silence => Box::new(SilenceSource { pacer: super::audio::Pacer::new(epoch, frame).skip() }),
        AudioIn::Echo(line) => Box::new(line.source(frame_samples, epoch)?),
    })
}

fn open_sink(
    out: &AudioOut,
    rate: u32,
    frame_samples: usize,
    epoch: Instant,
) -> Result<Box<dyn AudioSink>, AudioError> {
    Ok(match out {
        AudioOut::Device(name) => Box::new(CpalSink::open(name.as_deref(), frame_samples)?),
        AudioOut::Wav { path, .. } => Box::new(WavSink::create(path, rate, frame_samples, Some(epoch))?),
        AudioOut::Null => Box::new(NullSink::new(frame_samples, epoch)),
        AudioOut::Echo(line) => Box::new(line.sink(frame_samples, epoch)?),
    })
}

struct SilenceSource {
    pacer: super::audio::Pacer,
}

impl AudioSource for SilenceSource {
    fn read_frame(&mut self, out: &mut [i16]) -> Result<Captured, AudioError> {
        self.pacer.wait_next();
        out.fill(0);
        Ok(Captured::Audio)
    }
}

fn capture_loop(
    shared: &Shared,
    mut src: Box<dyn AudioSource>,
    mut recorder: Option<WavRecorder>,
    mut encoder: Encoder,
    tx: tokio::sync::mpsc::Sender<TxFrame>,
    frame_samples: usize,
) -> Result<(), MediaError> {
    let c = &shared.counters;
    let mut pcm = [0i16; MAX_FRAME_SAMPLES];
    let mut frame = TxFrame { timestamp: 0, len: 0, data: [0; MAX_ENCODED] };
    let mut ended = false;
    let mut loss_hint = 0u64;
    let mut timestamp = 0u32;
    while !shared.stop.load(Relaxed) {
        let got = match src.read_frame(&mut pcm[..frame_samples]) {
            Ok(g) => g,
            Err(e) => {
                shared.event(MediaEvent::Failed(e.to_string()));
                return Err(e.into());
            }
        };
        if got == Captured::Ended && !ended {
            ended = true;
            shared.event(MediaEvent::InputEnded);
        }
        if shared.mute.load(Relaxed) {
            pcm[..frame_samples].fill(0);
        }
        let hint = c.peer_loss_permille.load(Relaxed);
        if hint != loss_hint {
            loss_hint = hint;
            encoder.set_peer_loss(u16::try_from(hint).unwrap_or(u16::MAX))?;
            Counters::set(&c.fec_enabled, u64::from(encoder.fec_enabled()));
        }
        if let Some(r) = &mut recorder
            && !r.push(&pcm[..frame_samples])
        {
            Counters::add(&c.record_drops, 1);
        }
        match encoder.encode(&pcm[..frame_samples], &mut frame.data) {
            Ok(n) => {
                frame.len = n as u16;
                frame.timestamp = timestamp;
                if tx.try_send(frame).is_err() {
                    Counters::add(&c.queue_full_drops, 1);
                }
            }
            Err(e) => {
                shared.event(MediaEvent::Failed(e.to_string()));
                return Err(e.into());
            }
        }
        timestamp = timestamp.wrapping_add(frame_samples as u32);
    }
    if let Some(r) = recorder {
        r.finish()?;
    }
    Ok(())
}

fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len() as f64).sqrt()
}

fn playout_loop(
    shared: &Shared,
    mut sink: Box<dyn AudioSink>,
    mut recorder: Option<WavRecorder>,
    mut decoder: Decoder,
    rx: Receiver<RxFrame>,
    frame_samples: usize,
) -> Result<(), MediaError> {
    let c = &shared.counters;
    let mut jb = JitterBuffer::new(JitterConfig::for_frame_ms(shared.frame_ms), Instant::now());
    let mut quiet = true;
    let mut first_played = false;
    let mut failure: Option<AudioError> = None;
    while !shared.stop.load(Relaxed) {
        let mut played_audio = false;
        let r = sink.play_frame(&mut |buf: &mut [i16]| {
            let now = Instant::now();
            while let Ok(f) = rx.try_recv() {
                jb.push(f.arrival, f.timestamp, &f.data[..usize::from(f.len)]);
            }
            let out = &mut buf[..frame_samples];
            let result = match jb.pop(now, quiet) {
                Pop::Idle => {
                    out.fill(0);
                    Ok(0)
                }
                Pop::Frame(data) => {
                    played_audio = true;
                    decoder.decode(data, out)
                }
                Pop::Conceal { fec } => decoder.conceal(fec, out),
            };
            if result.is_err() {
                // A corrupt payload that still authenticated (a buggy peer): conceal instead.
                Counters::add(&c.decode_errors, 1);
                if decoder.conceal(None, out).is_err() {
                    out.fill(0);
                }
            }
            quiet = rms(out) < QUIET_RMS;
            let s = jb.stats();
            Counters::set(&c.jb_played, s.played);
            Counters::set(&c.jb_concealed, s.concealed);
            Counters::set(&c.jb_fec, s.fec_recovered);
            Counters::set(&c.jb_late, s.late);
            Counters::set(&c.jb_duplicates, s.duplicates);
            Counters::set(&c.jb_underruns, s.underruns);
            Counters::set(&c.jb_shrink, s.shrink_drops);
            Counters::set(&c.jb_overflow, s.overflow_drops);
            Counters::set(&c.jb_depth_frames, jb.depth_frames());
            Counters::set(&c.jb_wait_us, (jb.mean_wait_ms() * 1000.0) as u64);
            if let Some(r) = &mut recorder
                && !r.push(out)
            {
                Counters::add(&c.record_drops, 1);
            }
        });
        if let Err(e) = r {
            shared.event(MediaEvent::Failed(e.to_string()));
            failure = Some(e);
            break;
        }
        if played_audio && !first_played {
            first_played = true;
            let at = Instant::now();
            shared.event(MediaEvent::FirstAudioPlayed { at, since_start: at - shared.start });
        }
    }
    let finished = sink.finish();
    if let Some(r) = recorder {
        r.finish()?;
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    finished.map_err(Into::into)
}

/// A datagram held back by the impairment simulation.
struct Delayed {
    due: Instant,
    to: SocketAddr,
    len: u16,
    data: [u8; MAX_SEND],
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    // Reversed, so the max-heap pops the earliest deadline.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.due.cmp(&self.due)
    }
}

/// Net-thread state: the socket's only owner.
struct Net {
    shared: Arc<Shared>,
    crypto: MediaCrypto,
    candidates: Vec<SocketAddr>,
    peer: Option<SocketAddr>,
    newest_counter: Option<u64>,
    impairer: Option<Impairer>,
    delayed: BinaryHeap<Delayed>,
    silence_timeout: Duration,
    frame_samples: u32,
    to_playout: SyncSender<RxFrame>,
    probe_id: u32,
    last_rx: Instant,
    last_tx: Instant,
    silent: bool,
    // Receive statistics on the audio timestamp sequence.
    first_index: Option<i64>,
    last_ts: u32,
    ext_ts: i64,
    highest_index: i64,
    received: u64,
    report_expected: u64,
    report_received: u64,
    prev_transit_us: Option<i64>,
    jitter_us: f64,
    seal_buf: [u8; MAX_SEND],
}

impl Net {
    fn new(
        shared: Arc<Shared>,
        crypto: MediaCrypto,
        candidates: Vec<SocketAddr>,
        impairment: Impairment,
        silence_timeout: Duration,
        frame_samples: usize,
        to_playout: SyncSender<RxFrame>,
    ) -> Self {
        let now = Instant::now();
        Self {
            shared,
            crypto,
            candidates,
            peer: None,
            newest_counter: None,
            impairer: (!impairment.is_clean()).then(|| Impairer::new(impairment)),
            delayed: BinaryHeap::with_capacity(IMPAIR_QUEUE),
            silence_timeout,
            frame_samples: frame_samples as u32,
            to_playout,
            probe_id: 0,
            last_rx: now,
            last_tx: now,
            silent: false,
            first_index: None,
            last_ts: 0,
            ext_ts: 0,
            highest_index: 0,
            received: 0,
            report_expected: 0,
            report_received: 0,
            prev_transit_us: None,
            jitter_us: 0.0,
            seal_buf: [0; MAX_SEND],
        }
    }

    fn now_us(&self) -> u64 {
        self.shared.start.elapsed().as_micros() as u64
    }

    async fn run(
        mut self,
        socket: UdpSocket,
        mut frames: tokio::sync::mpsc::Receiver<TxFrame>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(), MediaError> {
        let sock = tokio::net::UdpSocket::from_std(socket)
            .map_err(|source| MediaError::Io { what: "registering the media socket", source })?;
        let mut rbuf = [0u8; MAX_DATAGRAM + 1];
        let mut obuf = [0u8; MAX_DATAGRAM];
        let mut payload = [0u8; MAX_ENCODED + AudioPayload::HEADER];
        let start = Instant::now();
        let mut next_probe = start;
        let mut next_report = start + REPORT_INTERVAL;
        let mut frames_open = true;
        loop {
            let next_delayed = self.delayed.peek().map(|d| d.due);
            let wake =
                [Some(next_probe), Some(next_report), next_delayed].into_iter().flatten().min().unwrap_or(next_report);
            tokio::select! {
                biased;
                _ = &mut stop => break,
                r = sock.recv_from(&mut rbuf) => {
                    match r {
                        Ok((n, from)) => self.on_datagram(&sock, &rbuf[..n], from, &mut obuf).await,
                        // ICMP port-unreachable and similar surface here on some platforms; not fatal.
                        Err(_) => Counters::add(&self.shared.counters.socket_errors, 1),
                    }
                }
                f = frames.recv(), if frames_open => {
                    match f {
                        Some(f) => {
                            let n = AudioPayload { timestamp: f.timestamp, data: &f.data[..usize::from(f.len)] }
                                .write_to(&mut payload)
                                .unwrap_or(0);
                            if let Some(peer) = self.peer
                                && self.send(&sock, FrameType::Audio, &payload[..n], peer).await
                            {
                                let c = &self.shared.counters;
                                if c.frames_sent.fetch_add(1, Relaxed) == 0 {
                                    Counters::set(&c.first_tx_us, self.now_us() + 1);
                                }
                                Counters::add(&c.payload_bytes_sent, u64::from(f.len));
                            }
                        }
                        None => frames_open = false,
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            while self.delayed.peek().is_some_and(|d| d.due <= now) {
                if let Some(d) = self.delayed.pop() {
                    self.transmit(&sock, &d.data[..usize::from(d.len)], d.to).await;
                }
            }
            if now >= next_probe {
                self.probe(&sock).await;
                next_probe = now + if self.peer.is_some() { PROBE_SLOW } else { PROBE_FAST };
            }
            if now >= next_report {
                next_report = now + REPORT_INTERVAL;
                self.housekeeping(&sock, now).await;
            }
        }
        if let Some(peer) = self.peer {
            // Best effort: tell the peer we hung up so it need not wait for the silence timeout.
            let _ = self.seal_and_send(&sock, FrameType::Bye, &[0], peer).await;
        }
        Ok(())
    }

    async fn probe(&mut self, sock: &tokio::net::UdpSocket) {
        self.probe_id = self.probe_id.wrapping_add(1);
        let p = Probe { id: self.probe_id, sent_us: self.now_us() }.to_bytes();
        match self.peer {
            Some(peer) => {
                self.send(sock, FrameType::Probe, &p, peer).await;
            }
            None => {
                for i in 0..self.candidates.len() {
                    let to = self.candidates[i];
                    self.send(sock, FrameType::Probe, &p, to).await;
                }
            }
        }
    }

    async fn housekeeping(&mut self, sock: &tokio::net::UdpSocket, now: Instant) {
        let silent_for = now.saturating_duration_since(self.last_rx);
        if !self.silent && silent_for >= self.silence_timeout {
            self.silent = true;
            self.shared.event(MediaEvent::PeerSilent { silent_for });
        }
        let Some(peer) = self.peer else { return };
        let expected = self.expected();
        let (de, dr) = (expected - self.report_expected, self.received - self.report_received);
        let loss_permille = (de.saturating_sub(dr) * 1000).checked_div(de).unwrap_or(0) as u16;
        self.report_expected = expected;
        self.report_received = self.received;
        let report = StatsReport {
            received: self.received,
            lost: expected.saturating_sub(self.received),
            jitter_us: self.jitter_us as u32,
            loss_permille,
        };
        self.send(sock, FrameType::Stats, &report.to_bytes(), peer).await;
        if now.saturating_duration_since(self.last_tx) >= REPORT_INTERVAL {
            self.send(sock, FrameType::Keepalive, &[], peer).await;
        }
    }

    fn expected(&self) -> u64 {
        match self.first_index {
            Some(f) => (self.highest_index - f + 1).max(0) as u64,
            None => 0,
        }
    }

    /// Seals and sends (through the impairment queue when configured); returns whether it was sent or
    /// queued.
    async fn send(&mut self, sock: &tokio::net::UdpSocket, ftype: FrameType, payload: &[u8], to: SocketAddr) -> bool {
        self.seal_and_send(sock, ftype, payload, to).await
    }

    async fn seal_and_send(
        &mut self,
        sock: &tokio::net::UdpSocket,
        ftype: FrameType,
        payload: &[u8],
        to: SocketAddr,
    ) -> bool {
        let c = &self.shared.counters;
        let n = match self.crypto.seal(ftype, payload, &mut self.seal_buf) {
            Ok(n) => n,
            Err(_) => {
                Counters::add(&c.socket_errors, 1);
                return false;
            }
        };
        self.last_tx = Instant::now();
        let Some(imp) = &mut self.impairer else {
            let buf = self.seal_buf;
            return self.transmit(sock, &buf[..n], to).await;
        };
        let v = imp.decide(self.last_tx);
        if v.copies.iter().all(Option::is_none) {
            Counters::add(&c.impaired_dropped, 1);
            return true;
        }
        for due in v.copies.into_iter().flatten() {
            if self.delayed.len() >= IMPAIR_QUEUE {
                Counters::add(&c.queue_full_drops, 1);
                continue;
            }
            self.delayed.push(Delayed { due, to, len: n as u16, data: self.seal_buf });
        }
        true
    }

    async fn transmit(&self, sock: &tokio::net::UdpSocket, dgram: &[u8], to: SocketAddr) -> bool {
        let c = &self.shared.counters;
        match sock.send_to(dgram, to).await {
            Ok(n) => {
                Counters::add(&c.datagrams_sent, 1);
                Counters::add(&c.wire_bytes_sent, n as u64);
                true
            }
            Err(_) => {
                Counters::add(&c.socket_errors, 1);
                false
            }
        }
    }

    async fn on_datagram(&mut self, sock: &tokio::net::UdpSocket, dgram: &[u8], from: SocketAddr, obuf: &mut [u8]) {
        let arrival = Instant::now();
        // A refcount bump, so the counters stay borrowable across `&mut self` calls below.
        let shared = Arc::clone(&self.shared);
        let c = &shared.counters;
        if dgram.len() > MAX_DATAGRAM {
            Counters::add(&c.malformed, 1);
            return;
        }
        let opened = match self.crypto.open(dgram, obuf) {
            Ok(o) => o,
            Err(e) => {
                let counter = match e {
                    qvoice_proto::Error::TagFailure => &c.unauthenticated,
                    qvoice_proto::Error::Replay | qvoice_proto::Error::TooOld => &c.replayed,
                    _ => &c.malformed,
                };
                Counters::add(counter, 1);
                return;
            }
        };
        Counters::add(&c.wire_bytes_received, dgram.len() as u64);
        self.last_rx = arrival;
        if self.silent {
            self.silent = false;
            self.shared.event(MediaEvent::PeerResumed);
        }
        // Follow the peer to a new address only on its newest frames, so a delayed packet from an old path
        // cannot pull us back.
        let newest = self.newest_counter.is_none_or(|n| opened.counter > n);
        if newest {
            self.newest_counter = Some(opened.counter);
            match self.peer {
                None => {
                    self.peer = Some(from);
                    self.set_shared_peer(from);
                    self.shared.event(MediaEvent::PeerConnected { addr: from, at: arrival });
                }
                Some(old) if old != from => {
                    self.peer = Some(from);
                    self.set_shared_peer(from);
                    Counters::add(&c.peer_address_changes, 1);
                    self.shared.event(MediaEvent::PeerAddressChanged { from: old, to: from });
                }
                Some(_) => {}
            }
        }
        let ftype = opened.ftype;
        let plen = opened.payload.len();
        match ftype {
            FrameType::Audio => {
                let Ok(audio) = AudioPayload::parse(&obuf[..plen]) else {
                    Counters::add(&c.malformed, 1);
                    return;
                };
                if audio.data.len() > MAX_ENCODED {
                    Counters::add(&c.malformed, 1);
                    return;
                }
                self.note_audio(audio.timestamp, arrival);
                if c.frames_received.fetch_add(1, Relaxed) == 0 {
                    Counters::set(&c.first_rx_us, self.now_us() + 1);
                }
                Counters::add(&c.payload_bytes_received, audio.data.len() as u64);
                let mut f = RxFrame {
                    timestamp: audio.timestamp,
                    arrival,
                    len: audio.data.len() as u16,
                    data: [0; MAX_ENCODED],
                };
                f.data[..audio.data.len()].copy_from_slice(audio.data);
                if self.to_playout.try_send(f).is_err() {
                    Counters::add(&c.queue_full_drops, 1);
                }
            }
            FrameType::Probe => {
                if let Ok(p) = Probe::parse(&obuf[..plen]) {
                    // Answer to where the probe came from: that is the path being tested.
                    self.send(sock, FrameType::ProbeAck, &p.to_bytes(), from).await;
                } else {
                    Counters::add(&c.malformed, 1);
                }
            }
            FrameType::ProbeAck => match Probe::parse(&obuf[..plen]) {
                Ok(p) => Counters::set(&c.rtt_us, self.now_us().saturating_sub(p.sent_us)),
                Err(_) => Counters::add(&c.malformed, 1),
            },
            FrameType::Stats => match StatsReport::parse(&obuf[..plen]) {
                Ok(r) => {
                    Counters::set(&c.peer_loss_permille, u64::from(r.loss_permille));
                    Counters::set(&c.peer_jitter_us, u64::from(r.jitter_us));
                }
                Err(_) => Counters::add(&c.malformed, 1),
            },
            FrameType::Bye => self.shared.event(MediaEvent::PeerBye),
            FrameType::Keepalive => {}
        }
    }

    fn set_shared_peer(&self, addr: SocketAddr) {
        // Written only when the path changes, read only by metrics(): never on the per-frame path.
        if let Ok(mut p) = self.shared.peer.lock() {
            *p = Some(addr);
        }
    }

    fn note_audio(&mut self, ts: u32, arrival: Instant) {
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
        let c = &self.shared.counters;
        Counters::set(&c.first_index, self.first_index.unwrap_or(0).max(0) as u64);
        Counters::set(&c.highest_index, self.highest_index.max(0) as u64);
        // RFC 3550 interarrival jitter.
        let arrival_us = arrival.saturating_duration_since(self.shared.start).as_micros() as i64;
        let transit = arrival_us - ext * 1_000_000 / i64::from(SAMPLE_RATE);
        if let Some(prev) = self.prev_transit_us {
            let d = (transit - prev).abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.prev_transit_us = Some(transit);
        Counters::set(&c.jitter_us, self.jitter_us as u64);
    }
}

impl MediaHandle {
    /// The local address of the call's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The peer's current address, once a candidate answered.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.peer.lock().ok().and_then(|p| *p)
    }

    /// Takes the event receiver (once); events are dropped if nobody takes it.
    pub fn take_events(&mut self) -> Option<Receiver<MediaEvent>> {
        self.events.take()
    }

    /// Mutes or unmutes the microphone (silence is still sent, so the peer's playout keeps its timing).
    pub fn set_mute(&self, mute: bool) {
        self.shared.mute.store(mute, Relaxed);
    }

    /// Whether the microphone is muted.
    pub fn is_muted(&self) -> bool {
        self.shared.mute.load(Relaxed)
    }

    /// A snapshot of the call's metrics; cheap enough to poll every TUI tick.
    pub fn metrics(&self) -> MetricsSnapshot {
        snapshot(&self.shared)
    }

    /// Stops all threads, finalises WAV files and returns the final metrics.
    ///
    /// Fails when a media thread failed (device lost, file not finalised) or panicked.
    pub fn stop(mut self) -> Result<MetricsSnapshot, MediaError> {
        self.shutdown()?;
        Ok(snapshot(&self.shared))
    }

    fn shutdown(&mut self) -> Result<(), MediaError> {
        self.shared.stop.store(true, Relaxed);
        if let Some(tx) = self.stop_net.take() {
            let _ = tx.send(());
        }
        let mut first_err = None;
        for (name, h) in
            [("qv-capture", self.capture.take()), ("qv-net", self.net.take()), ("qv-playout", self.playout.take())]
        {
            if let Some(h) = h {
                let r = h.join().map_err(|_| MediaError::ThreadPanicked(name)).and_then(|r| r);
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for MediaHandle {
    fn drop(&mut self) {
        // Errors were either returned by stop() or have nowhere to go now.
        let _ = self.shutdown();
    }
}

fn kbps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 { bytes as f64 * 8.0 / secs / 1000.0 } else { 0.0 }
}

fn snapshot(s: &Shared) -> MetricsSnapshot {
    let c = &s.counters;
    let g = |a: &AtomicU64| a.load(Relaxed);
    let elapsed = s.start.elapsed().as_secs_f64();
    // Seconds since a "first frame" mark (stored +1 so 0 means unset); bitrates average over talk time.
    let since = |mark: u64| if mark == 0 { 0.0 } else { elapsed - (mark - 1) as f64 / 1e6 };
    let expected =
        if g(&c.frames_received) > 0 { g(&c.highest_index).saturating_sub(g(&c.first_index)) + 1 } else { 0 };
    let lost = expected.saturating_sub(g(&c.frames_received));
    let pct = |n: u64, d: u64| if d > 0 { n as f64 * 100.0 / d as f64 } else { 0.0 };
    let played = g(&c.jb_played) + g(&c.jb_concealed);
    let loss_pct = pct(lost, expected);
    let rtt_ms = g(&c.rtt_us) as f64 / 1000.0;
    let wait_ms = g(&c.jb_wait_us) as f64 / 1000.0;
    let algorithmic_ms = match s.codec {
        CodecKind::Opus => 6.5,
        CodecKind::Pcm => 1.0,
    };
    let est_delay_ms = f64::from(s.frame_ms) + algorithmic_ms + wait_ms + rtt_ms / 2.0;
    // Frames lost to the network plus frames concealed for lateness both hurt the listener.
    let effective_loss = pct(lost + g(&c.jb_late), expected.max(1));
    let r = r_factor(Duration::from_secs_f64(est_delay_ms / 1000.0), effective_loss, s.codec.name());
    MetricsSnapshot {
        elapsed_s: elapsed,
        codec: s.codec.name(),
        frame_ms: s.frame_ms,
        frames_sent: g(&c.frames_sent),
        frames_received: g(&c.frames_received),
        send_payload_kbps: kbps(g(&c.payload_bytes_sent), since(g(&c.first_tx_us))),
        send_wire_kbps: kbps(g(&c.wire_bytes_sent), since(g(&c.first_tx_us))),
        recv_payload_kbps: kbps(g(&c.payload_bytes_received), since(g(&c.first_rx_us))),
        recv_wire_kbps: kbps(g(&c.wire_bytes_received), since(g(&c.first_rx_us))),
        rtt_ms,
        jitter_ms: g(&c.jitter_us) as f64 / 1000.0,
        loss_pct,
        late_pct: pct(g(&c.jb_late), expected),
        concealed_pct: pct(g(&c.jb_concealed), played),
        // PCM has no FEC; the jitter buffer's "next packet was here" count only means FEC for Opus.
        fec_recovered: if s.codec == CodecKind::Opus { g(&c.jb_fec) } else { 0 },
        jb_depth_frames: g(&c.jb_depth_frames),
        jb_depth_ms: g(&c.jb_depth_frames) as f64 * f64::from(s.frame_ms),
        jb_wait_ms: wait_ms,
        jb_underruns: g(&c.jb_underruns),
        jb_shrink_drops: g(&c.jb_shrink),
        jb_overflow_drops: g(&c.jb_overflow),
        duplicates: g(&c.jb_duplicates),
        malformed: g(&c.malformed),
        unauthenticated: g(&c.unauthenticated),
        replayed: g(&c.replayed),
        peer_address_changes: g(&c.peer_address_changes),
        peer_loss_pct: g(&c.peer_loss_permille) as f64 / 10.0,
        fec_enabled: g(&c.fec_enabled) != 0,
        local_drops: g(&c.capture_overruns) + g(&c.queue_full_drops) + g(&c.record_drops) + g(&c.socket_errors),
        est_delay_ms,
        r_factor: r,
        mos: mos_from_r(r),
    }
}
