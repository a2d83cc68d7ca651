//! The engine's threads and its public handle. See the module docs of [`crate::media`] for the layout.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::Release};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qvoice_proto::{Candidate, MediaCrypto};

use super::audio::{AudioSink, AudioSource, Captured, NullSink, WavRecorder, WavSink, WavSource};
use super::codec::{CodecError, CodecKind, Decoder, Encoder, MAX_ENCODED, MAX_FRAME_SAMPLES, SAMPLE_RATE};
use super::device::{CpalSink, CpalSource, DeviceHealth};
use super::impair::{Impairer, Impairment};
use super::jitter::{JitterBuffer, JitterConfig, Pop};
use super::metrics::{Counters, MetricsSnapshot, mos_from_r, r_factor};
use super::transport::net::Net;
use super::transport::{PathInfo, RelayAllocation, Transport, TransportConfig};
use super::{AudioError, MediaError};

/// Where the engine's microphone audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioIn {
    /// A sound device through cpal; `None` picks the default input.
    Device(Option<String>),
    /// A WAV file, read at real time from the engine's epoch (any integer ratio of 48 kHz, mono/stereo).
    Wav(PathBuf),
    /// A WAV file played over and over (spelled `loop:FILE.wav`; the demo's microphone clip).
    WavLoop(PathBuf),
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
            s if s.starts_with("loop:") && s.ends_with(".wav") => Self::WavLoop(PathBuf::from(&s[5..])),
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
            Self::WavLoop(p) => format!("loop:{}", p.display()),
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
    /// The peer's signed candidates from OFFER/ANSWER; the transport checks every pair they form.
    pub peer_candidates: Vec<Candidate>,
    /// We placed the call (the callee follows the caller's path choice).
    pub controlling: bool,
    /// Our TURN allocation from gathering on this socket, if any.
    pub relay: Option<RelayAllocation>,
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
    /// Do not record until [`MediaHandle::set_recording`] (the files are created then).
    pub record_paused: bool,
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
    pub fn new(crypto: MediaCrypto, socket: UdpSocket, peer_candidates: Vec<Candidate>) -> Self {
        Self {
            crypto,
            socket,
            peer_candidates,
            controlling: true,
            relay: None,
            codec: CodecKind::Opus,
            frame_ms: 20,
            input: AudioIn::Device(None),
            output: AudioOut::Device(None),
            record_dir: None,
            record_paused: false,
            impairment: Impairment::default(),
            epoch: None,
            silence_timeout: Duration::from_secs(5),
            output_phase: Duration::ZERO,
            label: "qv".into(),
        }
    }
}

/// Which side of the call's audio a device is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioDirection {
    /// The microphone (`--input`, `[audio] input`).
    Input,
    /// The speaker (`--output`, `[audio] output`).
    Output,
}

impl AudioDirection {
    /// The user's word for it.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Input => "microphone",
            Self::Output => "speaker",
        }
    }
}

/// Things the session layer and TUI react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A connectivity check succeeded and a path was selected: audio flows to `addr` from now on (the
    /// "path up" signal; [`MediaEvent::PathChanged`] with the details comes just before it).
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
    /// The selected path (direct or relayed) is now this one.
    PathChanged(PathInfo),
    /// No candidate pair worked within the check timeout; the text says what was tried and what to do.
    NoPath(String),
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
    /// The input or output now in use: once for each when the engine starts, and after each switch
    /// ([`MediaHandle::switch_input`] / [`MediaHandle::switch_output`]) that worked (`switched`).
    AudioInUse {
        /// Which one.
        dir: AudioDirection,
        /// Its spelling (as `--input` / `--output` take it).
        spec: String,
        /// What was opened: a sound device's name, rate, channels and sample format; "WAV file"...
        detail: String,
        /// After a switch (false: at start).
        switched: bool,
    },
    /// A switch could not be made: the old input or output stays in use and the call goes on. The
    /// message names the device and what to do.
    SwitchFailed {
        /// Which one.
        dir: AudioDirection,
        /// The spelling that was asked for.
        spec: String,
        /// For the user.
        message: String,
    },
}

/// State shared by the engine threads and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Arc<Counters>,
    pub(crate) stop: AtomicBool,
    pub(crate) mute: AtomicBool,
    /// Record the call (see [`MediaHandle::set_recording`]).
    pub(crate) recording: AtomicBool,
    /// Set by the net thread when the transport selected its first path (audio may flow).
    pub(crate) path_up: AtomicBool,
    pub(crate) start: Instant,
    pub(crate) codec: CodecKind,
    pub(crate) frame_ms: u8,
    pub(crate) events: SyncSender<MediaEvent>,
    pub(crate) peer: Mutex<Option<SocketAddr>>,
    /// Sound-device callbacks' counters (xruns, errors, under/overruns) and the cancel flag for waits.
    pub(crate) device: Arc<DeviceHealth>,
    /// A new input asked for by [`MediaHandle::switch_input`], taken by the capture thread.
    pub(crate) switch_in: SwitchSlot<AudioIn>,
    /// A new output asked for by [`MediaHandle::switch_output`], taken by the playout thread.
    pub(crate) switch_out: SwitchSlot<AudioOut>,
}

/// A request handed to the thread that owns a device. The thread looks at the flag once per frame (a relaxed
/// load, no lock on the audio path) and takes the lock only when a request is there.
#[derive(Debug)]
pub(crate) struct SwitchSlot<T> {
    pending: AtomicBool,
    next: Mutex<Option<T>>,
}

impl<T> Default for SwitchSlot<T> {
    fn default() -> Self {
        Self { pending: AtomicBool::new(false), next: Mutex::new(None) }
    }
}

impl<T> SwitchSlot<T> {
    /// Asks for `v`; a request the thread has not taken yet is replaced (the last choice wins).
    fn put(&self, v: T) {
        if let Ok(mut next) = self.next.lock() {
            *next = Some(v);
            self.pending.store(true, Release);
        }
    }

    /// The request, if any (called by the owning thread once per frame).
    fn take(&self) -> Option<T> {
        if !self.pending.load(Relaxed) {
            return None;
        }
        let mut next = self.next.lock().ok()?;
        self.pending.store(false, Relaxed);
        next.take()
    }
}

impl Shared {
    pub(crate) fn event(&self, e: MediaEvent) {
        // A full event queue means nobody is listening; dropping is the right thing for a status event.
        let _ = self.events.try_send(e);
    }
}

/// An encoded frame on its way from the capture thread to the net thread.
#[derive(Clone, Copy)]
pub(crate) struct TxFrame {
    pub(crate) timestamp: u32,
    pub(crate) len: u16,
    pub(crate) data: [u8; MAX_ENCODED],
}

/// A received audio frame on its way from the net thread to the playout thread.
#[derive(Clone, Copy)]
pub(crate) struct RxFrame {
    pub(crate) timestamp: u32,
    pub(crate) arrival: Instant,
    pub(crate) len: u16,
    pub(crate) data: [u8; MAX_ENCODED],
}

/// How long stopping the engine waits for its threads before abandoning them.
const STOP_DEADLINE: Duration = Duration::from_millis(1_200);
/// Queue between capture and net, in frames.
const TX_QUEUE: usize = 8;
/// Queue between net and playout, in frames (more than the jitter buffer's cap so bursts fit).
const RX_QUEUE: usize = 64;
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
        let epoch = cfg.epoch.unwrap_or_else(Instant::now);
        let (ev_tx, ev_rx) = sync_channel(64);
        let shared = Arc::new(Shared {
            counters: Arc::new(Counters::default()),
            stop: AtomicBool::new(false),
            mute: AtomicBool::new(false),
            recording: AtomicBool::new(cfg.record_dir.is_some() && !cfg.record_paused),
            path_up: AtomicBool::new(false),
            start: Instant::now(),
            codec: cfg.codec,
            frame_ms: cfg.frame_ms,
            events: ev_tx,
            peer: Mutex::new(None),
            device: Arc::new(DeviceHealth::default()),
            switch_in: SwitchSlot::default(),
            switch_out: SwitchSlot::default(),
        });
        let out_rate = match (&cfg.output, &cfg.input) {
            (AudioOut::Wav { rate: Some(r), .. }, _) => *r,
            (AudioOut::Wav { rate: None, .. }, AudioIn::Wav(p) | AudioIn::WavLoop(p)) => wav_rate(p),
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
        let rec = cfg.record_dir.as_ref().map(|d| d.join("received.wav"));
        let out_epoch = epoch + cfg.output_phase;
        let sink_ctx = SinkCtx { rate: out_rate, frame_samples, epoch: out_epoch, frame };
        handle.playout = Some(spawn(format!("{}-playout", cfg.label), move || {
            let opened = open_sink(&out, &sink_ctx, out_epoch, &s.device).and_then(|sink| {
                let recorder = Recording::open(rec, s.recording.load(Relaxed))?;
                Ok((sink, recorder))
            });
            match opened {
                Ok(((sink, detail), recorder)) => {
                    let _ = ready_tx.send(Ok(()));
                    s.event(MediaEvent::AudioInUse {
                        dir: AudioDirection::Output,
                        spec: out.spec(),
                        detail: detail.clone(),
                        switched: false,
                    });
                    let sink = Current { dev: sink, spec: out, detail };
                    playout_loop(&s, sink, recorder, decoder, from_net, &sink_ctx)
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
        let rec = cfg.record_dir.as_ref().map(|d| d.join("sent.wav"));
        let source_ctx = SourceCtx { frame_samples, epoch, frame };
        handle.capture = Some(spawn(format!("{}-capture", cfg.label), move || {
            let opened = open_source(&input, &source_ctx, epoch, &s.device).and_then(|src| {
                let recorder = Recording::open(rec, s.recording.load(Relaxed))?;
                Ok((src, recorder))
            });
            match opened {
                Ok(((src, detail), recorder)) => {
                    let _ = ready_tx.send(Ok(()));
                    s.event(MediaEvent::AudioInUse {
                        dir: AudioDirection::Input,
                        spec: input.spec(),
                        detail: detail.clone(),
                        switched: false,
                    });
                    let src = Current { dev: src, spec: input, detail };
                    capture_loop(&s, src, recorder, encoder, tx_frames, &source_ctx)
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

        let transport = Transport::new(
            TransportConfig {
                crypto: cfg.crypto,
                remote: cfg.peer_candidates,
                controlling: cfg.controlling,
                host_v6: local_addr.is_ipv6(),
                relay: cfg.relay,
                silence_timeout: cfg.silence_timeout,
                frame_samples,
            },
            shared.counters.clone(),
            Instant::now(),
        );
        let net = Net {
            shared: shared.clone(),
            transport,
            impairer: (!cfg.impairment.is_clean()).then(|| Impairer::new(cfg.impairment)),
            to_playout,
            v6: local_addr.is_ipv6(),
        };
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

/// Opens the sound devices `input` / `output` name (if any) and closes them again, so a call that could not
/// run is refused before dialling or answering. Returns what was opened, for the log.
///
/// Fails with the device's error (naming it, the configuration it offered and what to change).
pub fn check_devices(input: &AudioIn, output: &AudioOut) -> Result<Vec<super::device::OpenedDevice>, AudioError> {
    let mut opened = Vec::new();
    if let AudioIn::Device(name) = input {
        opened.push(CpalSource::probe(name.as_deref(), 960)?.opened().clone());
    }
    if let AudioOut::Device(name) = output {
        opened.push(CpalSink::probe(name.as_deref(), 960)?.opened().clone());
    }
    Ok(opened)
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

/// What a source is opened with besides the spelling.
#[derive(Clone, Copy)]
struct SourceCtx {
    frame_samples: usize,
    /// The engine's clock origin: paced sources deliver frame k at `epoch + (k+1) * frame`.
    epoch: Instant,
    frame: Duration,
}

/// What a sink is opened with besides the spelling.
#[derive(Clone, Copy)]
struct SinkCtx {
    /// A WAV sink's rate when the output does not name one.
    rate: u32,
    frame_samples: usize,
    /// The output clock's origin (the engine's epoch plus the output phase).
    epoch: Instant,
    frame: Duration,
}

/// The input or output a thread runs now, with what to report about it.
struct Current<D: ?Sized, S> {
    dev: Box<D>,
    spec: S,
    detail: String,
}

/// The first point of `epoch`'s frame grid at or after `now` minus one frame: a paced file or silence opened
/// mid-call continues on the engine's grid instead of catching up from the epoch in a burst.
fn grid_at(epoch: Instant, frame: Duration, now: Instant) -> Instant {
    let Some(since) = now.checked_duration_since(epoch) else { return epoch };
    let k = since.as_nanos() / frame.as_nanos().max(1);
    epoch + frame * u32::try_from(k).unwrap_or(u32::MAX)
}

/// Opens an input; `epoch` is where its pacing starts (the engine's epoch at start, the current grid point
/// on a switch). Returns it with what to tell the user about it.
fn open_source(
    input: &AudioIn,
    ctx: &SourceCtx,
    epoch: Instant,
    health: &Arc<DeviceHealth>,
) -> Result<(Box<dyn AudioSource + Send>, String), AudioError> {
    let (frame, frame_samples) = (ctx.frame, ctx.frame_samples);
    Ok(match input {
        AudioIn::Device(name) => {
            let src = CpalSource::open_with(name.as_deref(), frame_samples, health.clone())?;
            let detail = src.opened().to_string();
            (Box::new(src), detail)
        }
        AudioIn::Wav(p) => (Box::new(WavSource::open(p, frame, Some(epoch))?), "WAV file".into()),
        AudioIn::WavLoop(p) => {
            (Box::new(WavSource::open(p, frame, Some(epoch))?.looping()), "WAV file, played over and over".into())
        }
        AudioIn::Silence => {
            (Box::new(SilenceSource { pacer: super::audio::Pacer::new(epoch, frame).skip() }), "silence".into())
        }
        AudioIn::Echo(line) => (Box::new(line.source(frame_samples, epoch)?), "echo line".into()),
    })
}

/// Opens an output paced from `epoch` (see [`open_source`]); returns it with what to tell the user.
fn open_sink(
    out: &AudioOut,
    ctx: &SinkCtx,
    epoch: Instant,
    health: &Arc<DeviceHealth>,
) -> Result<(Box<dyn AudioSink + Send>, String), AudioError> {
    let frame_samples = ctx.frame_samples;
    Ok(match out {
        AudioOut::Device(name) => {
            let sink = CpalSink::open_with(name.as_deref(), frame_samples, health.clone())?;
            let detail = sink.opened().to_string();
            (Box::new(sink), detail)
        }
        AudioOut::Wav { path, rate } => {
            let rate = rate.unwrap_or(ctx.rate);
            (Box::new(WavSink::create(path, rate, frame_samples, Some(epoch))?), format!("WAV file at {rate} Hz"))
        }
        AudioOut::Null => (Box::new(NullSink::new(frame_samples, epoch)), "discarded".into()),
        AudioOut::Echo(line) => (Box::new(line.sink(frame_samples, epoch)?), "echo line".into()),
    })
}

/// The user-facing text of a switch that did not happen.
fn switch_failed_text(dir: AudioDirection, spec: &str, old: &str, e: &str) -> String {
    format!("could not switch the {} to {spec:?}: {e}; the call goes on with {old:?}", dir.noun())
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

/// A call's recording of one direction: the WAV file is created when recording first switches on (at
/// start or mid-call, [`MediaHandle::set_recording`]) and gets frames while it is on.
struct Recording {
    path: Option<PathBuf>,
    wav: Option<WavRecorder>,
}

impl Recording {
    fn open(path: Option<PathBuf>, now: bool) -> Result<Self, AudioError> {
        let wav = match (&path, now) {
            (Some(p), true) => Some(WavRecorder::create(p, SAMPLE_RATE)?),
            _ => None,
        };
        Ok(Self { path, wav })
    }

    /// Records `frame` when recording is on; false when a frame had to be dropped.
    fn push(&mut self, on: bool, frame: &[i16]) -> bool {
        if !on {
            return true;
        }
        if self.wav.is_none()
            && let Some(p) = self.path.take()
        {
            match WavRecorder::create(&p, SAMPLE_RATE) {
                Ok(w) => self.wav = Some(w),
                Err(_) => return false,
            }
        }
        self.wav.as_mut().is_none_or(|w| w.push(frame))
    }

    fn finish(self) -> Result<(), AudioError> {
        self.wav.map_or(Ok(()), WavRecorder::finish)
    }
}

/// An input or output being opened for a switch. Sound devices and WAV inputs (read and resampled whole)
/// open on a helper thread, so the call goes on with the old one meanwhile and a driver that hangs while
/// opening cannot hang the call; the rest opens at once. Either way the result comes through `rx`.
struct Opening<D: ?Sized, S> {
    spec: S,
    rx: Receiver<Result<(Box<D>, String), AudioError>>,
    since: Instant,
}

impl<D: ?Sized + 'static, S> Opening<D, S>
where
    Box<D>: Send,
{
    fn start(
        spec: S,
        background: bool,
        open: impl FnOnce() -> Result<(Box<D>, String), AudioError> + Send + 'static,
    ) -> Self {
        let (tx, rx) = sync_channel(1);
        if background {
            // If the thread cannot start, `tx` is dropped with the closure and the switch fails.
            let _ = std::thread::Builder::new().name("qv-device-open".into()).spawn(move || {
                // When nobody waits any more (a newer choice, the call ended) the device is dropped here.
                let _ = tx.send(open());
            });
        } else {
            let _ = tx.send(open());
        }
        Self { spec, rx, since: Instant::now() }
    }

    /// The result once the opening finished.
    fn poll(&self) -> Option<Result<(Box<D>, String), String>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r.map_err(|e| e.to_string())),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                Some(Err("the thread opening it could not run (out of threads or memory)".into()))
            }
        }
    }
}

/// Takes a pending input switch and finishes one that opened: the new input is opened while the old one
/// still runs (see [`Opening`]), then they are swapped (a sound device's stream is dropped on a helper
/// thread abandoned after 300 ms, so a stuck driver cannot hang the call), the new device's stall watchdog
/// and period measurement start afresh, and the input in use is reported. When the new input cannot be
/// opened the old one stays and the event says why. A file starts from its beginning, paced from now.
fn switch_source(
    shared: &Shared,
    cur: &mut Current<dyn AudioSource + Send, AudioIn>,
    opening: &mut Option<Opening<dyn AudioSource + Send, AudioIn>>,
    ctx: &SourceCtx,
) {
    let request = shared.switch_in.take();
    let start = |next: AudioIn| {
        let background = matches!(next, AudioIn::Device(_) | AudioIn::Wav(_) | AudioIn::WavLoop(_));
        let (input, ctx, health) = (next.clone(), *ctx, shared.device.clone());
        let epoch = grid_at(ctx.epoch, ctx.frame, Instant::now());
        Opening::start(next, background, move || open_source(&input, &ctx, epoch, &health))
    };
    let swap = |cur: &mut Current<dyn AudioSource + Send, AudioIn>, mut dev: Box<dyn AudioSource + Send>| {
        // A file opened on the helper thread was paced from then; it starts now.
        dev.restart();
        drop(std::mem::replace(&mut cur.dev, dev));
        // The callback counter and period now belong to the new device: its watchdog gets the slow-start
        // grace, and the period it reports is its own.
        shared.device.in_callbacks.store(0, Relaxed);
        shared.device.in_period.store(0, Relaxed);
    };
    switch_device(shared, AudioDirection::Input, cur, opening, request, AudioIn::spec, start, swap);
}

/// The output side of [`switch_source`]: the old output is finished (a WAV file is finalised) and dropped,
/// and the new device starts with its own drift controller (re-anchored), period measurement and
/// watchdog. The jitter buffer is the call's and stays. Only sound devices open on a helper thread: a file
/// or null output opens at once, on the output clock's next frame.
fn switch_sink(
    shared: &Shared,
    cur: &mut Current<dyn AudioSink + Send, AudioOut>,
    opening: &mut Option<Opening<dyn AudioSink + Send, AudioOut>>,
    ctx: &SinkCtx,
) {
    let request = shared.switch_out.take();
    let start = |next: AudioOut| {
        let background = matches!(next, AudioOut::Device(_));
        let (out, ctx, health) = (next.clone(), *ctx, shared.device.clone());
        // The old output just played the frame due at the current grid point: the new one starts at the next.
        let epoch = grid_at(ctx.epoch, ctx.frame, Instant::now()) + ctx.frame;
        Opening::start(next, background, move || open_sink(&out, &ctx, epoch, &health))
    };
    let swap = |cur: &mut Current<dyn AudioSink + Send, AudioOut>, dev: Box<dyn AudioSink + Send>| {
        if let Err(e) = std::mem::replace(&mut cur.dev, dev).finish() {
            tracing::warn!(output = %cur.spec.spec(), error = %e, "the previous output did not close cleanly");
        }
        let d = &shared.device;
        d.out_callbacks.store(0, Relaxed);
        d.out_period.store(0, Relaxed);
        d.drift_ppm.store(0, Relaxed);
    };
    switch_device(shared, AudioDirection::Output, cur, opening, request, AudioOut::spec, start, swap);
}

/// What both directions do: a request for what is already in use cancels an opening under way (the last
/// choice wins) and is reported; another request starts opening it; an opening that finished is swapped in
/// (`swap` does the direction's part) and reported, or its failure is reported and the old device stays.
#[allow(clippy::too_many_arguments)]
fn switch_device<D: ?Sized + 'static, S: PartialEq>(
    shared: &Shared,
    dir: AudioDirection,
    cur: &mut Current<D, S>,
    opening: &mut Option<Opening<D, S>>,
    request: Option<S>,
    spec_of: fn(&S) -> String,
    start: impl FnOnce(S) -> Opening<D, S>,
    swap: impl FnOnce(&mut Current<D, S>, Box<D>),
) where
    Box<D>: Send,
{
    if let Some(next) = request {
        if next == cur.spec {
            *opening = None;
            shared.event(MediaEvent::AudioInUse {
                dir,
                spec: spec_of(&next),
                detail: cur.detail.clone(),
                switched: true,
            });
        } else {
            *opening = Some(start(next));
        }
    }
    let Some(result) = opening.as_ref().and_then(Opening::poll) else { return };
    let Some(op) = opening.take() else { return };
    let spec = spec_of(&op.spec);
    match result {
        Ok((dev, detail)) => {
            swap(cur, dev);
            tracing::info!(
                from = %spec_of(&cur.spec),
                to = %spec,
                device = %detail,
                took_ms = op.since.elapsed().as_millis() as u64,
                "{} switched",
                dir.noun()
            );
            cur.spec = op.spec;
            cur.detail.clone_from(&detail);
            shared.event(MediaEvent::AudioInUse { dir, spec, detail, switched: true });
        }
        Err(e) => {
            let message = switch_failed_text(dir, &spec, &spec_of(&cur.spec), &e);
            tracing::warn!("{message}");
            shared.event(MediaEvent::SwitchFailed { dir, spec, message });
        }
    }
}

fn capture_loop(
    shared: &Shared,
    mut src: Current<dyn AudioSource + Send, AudioIn>,
    mut recorder: Recording,
    mut encoder: Encoder,
    tx: tokio::sync::mpsc::Sender<TxFrame>,
    ctx: &SourceCtx,
) -> Result<(), MediaError> {
    let frame_samples = ctx.frame_samples;
    let mut opening = None;
    let c = &shared.counters;
    let mut pcm = [0i16; MAX_FRAME_SAMPLES];
    let mut frame = TxFrame { timestamp: 0, len: 0, data: [0; MAX_ENCODED] };
    let mut ended = false;
    let mut loss_hint = 0u64;
    let mut timestamp = 0u32;
    let (mut path_up, mut waited) = (false, false);
    while !shared.stop.load(Relaxed) {
        switch_source(shared, &mut src, &mut opening, ctx);
        let got = match src.dev.read_frame(&mut pcm[..frame_samples]) {
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
        if !path_up {
            if !shared.path_up.load(Relaxed) {
                // Nothing can be sent before a path is selected; queueing would only start the peer's
                // jitter buffer deep. A device keeps being drained at its own pace.
                waited = true;
                continue;
            }
            // The path is up: the first frame sent (timestamp 0) carries the first audio of the call. A
            // file starts again from its first sample (what was read while waiting was only pacing); a
            // device's first frame is the one it just captured.
            path_up = true;
            if waited && src.dev.restart() {
                continue;
            }
        }
        if !recorder.push(shared.recording.load(Relaxed), &pcm[..frame_samples]) {
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
    recorder.finish()?;
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
    mut sink: Current<dyn AudioSink + Send, AudioOut>,
    mut recorder: Recording,
    mut decoder: Decoder,
    rx: Receiver<RxFrame>,
    ctx: &SinkCtx,
) -> Result<(), MediaError> {
    let frame_samples = ctx.frame_samples;
    let mut opening = None;
    let c = &shared.counters;
    let mut jb = JitterBuffer::new(JitterConfig::for_frame_ms(shared.frame_ms), Instant::now());
    let mut quiet = true;
    let mut first_played = false;
    let mut failure: Option<AudioError> = None;
    while !shared.stop.load(Relaxed) {
        switch_sink(shared, &mut sink, &mut opening, ctx);
        let mut played_audio = false;
        let r = sink.dev.play_frame(&mut |buf: &mut [i16]| {
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
                    // A frame must fill the negotiated duration exactly: a shorter one (a peer sending 20 ms
                    // Opus packets into a 40 ms call) would leave part of the frame stale, so it counts as
                    // undecodable and is concealed like a corrupt one.
                    match decoder.decode(data, out) {
                        Ok(n) if n != frame_samples => Err(CodecError::BadPacket),
                        r => r,
                    }
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
            if !recorder.push(shared.recording.load(Relaxed), out) {
                Counters::add(&c.record_drops, 1);
            }
        });
        if let Err(e) = r {
            shared.event(MediaEvent::Failed(e.to_string()));
            failure = Some(e);
            break;
        }
        if jb.is_playing() {
            sink.dev.observe_buffer(Instant::now(), jb.mean_wait_ms(), f64::from(shared.frame_ms));
        }
        if played_audio && !first_played {
            first_played = true;
            let at = Instant::now();
            shared.event(MediaEvent::FirstAudioPlayed { at, since_start: at - shared.start });
        }
    }
    let finished = sink.dev.finish();
    recorder.finish()?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    finished.map_err(Into::into)
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

    /// Starts or pauses recording (needs [`MediaConfig::record_dir`]; the files are created on first start).
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Relaxed);
    }

    /// Switches the call's input to `input` without interrupting the call. The capture thread takes the
    /// request at its next frame, opens the new input while the old one still runs, and swaps them; it
    /// reports [`MediaEvent::AudioInUse`] (with `switched`) or, when the new input cannot be opened,
    /// [`MediaEvent::SwitchFailed`] and keeps the old one. A request not yet taken is replaced by a newer
    /// one. A file starts from its beginning.
    pub fn switch_input(&self, input: AudioIn) {
        self.shared.switch_in.put(input);
    }

    /// Switches the call's output to `output`, like [`MediaHandle::switch_input`] on the playout thread. A
    /// WAV file is written from the switch on; the previous one is finalised.
    pub fn switch_output(&self, output: AudioOut) {
        self.shared.switch_out.put(output);
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
        let running = self.capture.is_some() || self.net.is_some() || self.playout.is_some();
        self.shared.stop.store(true, Relaxed);
        self.shared.device.cancel.store(true, Relaxed);
        if let Some(tx) = self.stop_net.take() {
            let _ = tx.send(());
        }
        let mut first_err = None;
        // One deadline for all threads: a thread stuck in a dead audio driver is abandoned (it holds no
        // lock the rest of the process needs), so stopping a call, and with it SIGTERM, always finishes.
        let deadline = Instant::now() + STOP_DEADLINE;
        for (name, h) in
            [("qv-capture", self.capture.take()), ("qv-net", self.net.take()), ("qv-playout", self.playout.take())]
        {
            let Some(h) = h else { continue };
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if !h.is_finished() {
                tracing::warn!(thread = name, "media thread did not stop within {STOP_DEADLINE:?}; abandoned");
                first_err.get_or_insert(MediaError::Stuck(name));
                continue;
            }
            let r = h.join().map_err(|_| MediaError::ThreadPanicked(name)).and_then(|r| r);
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        let d = &self.shared.device;
        if running && d.in_callbacks.load(Relaxed) + d.out_callbacks.load(Relaxed) > 0 {
            tracing::info!(
                capture_period = d.in_period.load(Relaxed),
                playback_period = d.out_period.load(Relaxed),
                xruns = d.xruns.load(Relaxed),
                stream_errors = d.stream_errors.load(Relaxed),
                rebuilds = d.rebuilds.load(Relaxed),
                underruns = d.out_underruns.load(Relaxed),
                "sound devices stopped (periods in device frames)"
            );
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
    let d = &s.device;
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
        undecodable: g(&c.decode_errors),
        unauthenticated: g(&c.unauthenticated),
        replayed: g(&c.replayed),
        peer_address_changes: g(&c.peer_address_changes),
        peer_loss_pct: g(&c.peer_loss_permille) as f64 / 10.0,
        fec_enabled: g(&c.fec_enabled) != 0,
        device_xruns: g(&d.xruns),
        device_errors: g(&d.stream_errors),
        device_rebuilds: g(&d.rebuilds),
        device_underruns: g(&d.out_underruns),
        device_overruns: g(&d.in_overruns),
        device_in_period: g(&d.in_period),
        device_out_period: g(&d.out_period),
        drift_ppm: g(&d.drift_ppm) as i64,
        local_drops: g(&c.capture_overruns) + g(&c.queue_full_drops) + g(&c.record_drops) + g(&c.socket_errors),
        est_delay_ms,
        r_factor: r,
        mos: mos_from_r(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switched_file_keeps_the_engine_frame_grid() {
        let epoch = Instant::now();
        let frame = Duration::from_millis(20);
        assert_eq!(grid_at(epoch, frame, epoch), epoch);
        // Before the epoch (a switch while the call's clock has not started): the epoch itself.
        assert_eq!(grid_at(epoch + Duration::from_millis(45), frame, epoch), epoch + Duration::from_millis(45));
        assert_eq!(grid_at(epoch, frame, epoch + Duration::from_millis(45)), epoch + Duration::from_millis(40));
        assert_eq!(grid_at(epoch, frame, epoch + Duration::from_millis(60)), epoch + Duration::from_millis(60));
    }

    #[test]
    fn the_last_switch_request_wins_and_is_taken_once() {
        let slot = SwitchSlot::<AudioIn>::default();
        assert_eq!(slot.take(), None);
        slot.put(AudioIn::Silence);
        slot.put(AudioIn::Device(Some("pulse".into())));
        assert_eq!(slot.take(), Some(AudioIn::Device(Some("pulse".into()))));
        assert_eq!(slot.take(), None);
    }

    #[test]
    fn an_opening_reports_its_result_or_the_error_text() {
        type Opened = Result<(Box<dyn AudioSource + Send>, String), AudioError>;
        let ok: Opening<dyn AudioSource + Send, &str> = Opening::start("silence", false, || -> Opened {
            let pacer = super::super::audio::Pacer::new(Instant::now(), Duration::from_millis(20));
            Ok((Box::new(SilenceSource { pacer }), "silence".into()))
        });
        assert!(matches!(ok.poll(), Some(Ok((_, d))) if d == "silence"));
        let bad: Opening<dyn AudioSource + Send, &str> =
            Opening::start("x", true, || -> Opened { Err(AudioError::DeviceNotFound("x".into())) });
        let deadline = Instant::now() + Duration::from_secs(5);
        let result = loop {
            if let Some(r) = bad.poll() {
                break r;
            }
            assert!(Instant::now() < deadline, "the opening thread never answered");
            std::thread::sleep(Duration::from_millis(1));
        };
        let Err(text) = result else { panic!("opened a missing device") };
        assert!(text.contains("audio device \"x\" not found"), "{text}");
        let msg = switch_failed_text(AudioDirection::Input, "x", "default", &text);
        assert!(msg.starts_with("could not switch the microphone to \"x\": audio device \"x\" not found"), "{msg}");
        assert!(msg.ends_with("the call goes on with \"default\""), "{msg}");
    }
}
