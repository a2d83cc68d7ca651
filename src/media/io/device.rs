//! Sound-card capture and playback through cpal, behind [`AudioSource`] / [`AudioSink`].
//!
//! **Block-size independence.** Each direction has a wait-free SPSC ring (`rtrb`) of mono `f32` samples at
//! the device's own rate between the cpal callback and the engine thread. The callbacks only mix/spread
//! channels, push or pop samples, bump relaxed atomics and unpark the waiting engine thread (a futex wake
//! only when it is parked): no allocation, lock, blocking call or log. Any callback
//! size works (64, 441, 960, 1024, 4096 frames...): the capture side cuts 20 ms frames out of the ring as
//! soon as enough samples are in, the playout side keeps the ring filled to one device period plus a small
//! margin (measured from the callbacks, so the output delay follows the device's real period).
//!
//! **Any rate.** The device's native (default) configuration is used; `rubato`'s band-limited sinc
//! resampler converts between it and the engine's 48 kHz (44.1 kHz, 22.05 kHz, 96 kHz... all work). At
//! 48 kHz the samples pass through untouched.
//!
//! **Errors are events.** The error callback counts xruns and stream errors in [`DeviceHealth`] (shown in the
//! call metrics); a "device not available" error marks the device gone. Because some ALSA plugins (pulse,
//! jack) fail silently, the engine thread also watches the callback counter: no callback for
//! [`STALL_AFTER`] is a stall. Both end the call with [`AudioError::DeviceLost`], which names the device.
//! Dropping a stream can hang inside a dead driver, so streams are dropped on a helper thread that is
//! abandoned after [`DROP_DEADLINE`].
//!
//! On a machine without a sound card ALSA still lists `default` and fails when the stream is built; that
//! is reported as [`AudioError::NoDevice`] naming the WAV options. ALSA prints diagnostics straight to
//! stderr from C, which would corrupt a TUI; the thread that enumerates and opens devices installs
//! alsa-rs's thread-local error handler, which captures those messages into a buffer we drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, StreamConfig};
use rubato::{Resampler as _, SincFixedIn, SincFixedOut, SincInterpolationParameters, SincInterpolationType};

use crate::media::audio::{AudioError, AudioSink, AudioSource, Captured};
use crate::media::codec::SAMPLE_RATE;
use crate::media::dsp::pacer::CapturePacer;
use crate::media::io::jack_client::{self, JackRoute};

/// No callback for this long means the device stalled (driver or sound server gone without an error).
pub const STALL_AFTER: Duration = Duration::from_millis(1_500);
/// Extra time allowed for the first callback after the stream starts (servers can be slow to start).
const FIRST_CALLBACK_GRACE: Duration = Duration::from_millis(1_500);
/// Callbacks after which a stream counts as flowing (the start grace ends).
const FLOWING_AFTER: u64 = 4;
/// How long dropping a stream may take before its helper thread is abandoned.
pub const DROP_DEADLINE: Duration = Duration::from_millis(300);
/// Ring capacity in seconds of device audio (an upper bound; the fill is kept near one period).
const RING_SECONDS: usize = 1;
/// Scheduling margin kept in the playout ring on top of one device period.
const PLAYOUT_MARGIN: Duration = Duration::from_millis(4);
/// How long after a callback drained the playout ring the jitter buffer is read (see `play_frame`).
const PLAYOUT_PHASE: Duration = Duration::from_millis(6);
/// Time that must remain before the next callback after [`PLAYOUT_PHASE`].
const PLAYOUT_PHASE_SLACK: Duration = Duration::from_millis(12);
/// Capture audio older than this (backlog after the engine thread was descheduled) is discarded.
const CAPTURE_MAX_BACKLOG: Duration = Duration::from_millis(60);
/// Largest drift correction the controller applies (±0.5 %).
const MAX_DRIFT_CORRECTION: f64 = 0.005;
/// Ratio range the playout resampler is built for (relative).
pub const MAX_RATIO_ADJUST: f64 = 1.01;

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

/// Counters shared by a call's device callbacks and its engine threads (all relaxed atomics).
#[derive(Debug, Default)]
pub struct DeviceHealth {
    /// Capture callbacks run.
    pub in_callbacks: AtomicU64,
    /// Playback callbacks run.
    pub out_callbacks: AtomicU64,
    /// Largest capture callback seen, in device frames.
    pub in_period: AtomicU64,
    /// Largest playback callback over the last [`PERIOD_WINDOW`] to twice that many callbacks, in device
    /// frames (the playout keeps this much in the ring).
    pub out_period: AtomicU64,
    /// Xruns the driver reported (either direction).
    pub xruns: AtomicU64,
    /// Other stream errors the driver reported.
    pub stream_errors: AtomicU64,
    /// Samples dropped because a ring was full: captured samples the engine did not take in time (or a
    /// capture backlog it trimmed), or playout samples the device did not take.
    pub in_overruns: AtomicU64,
    /// Playback callbacks that found the ring short (the gap was filled with silence).
    pub out_underruns: AtomicU64,
    /// Streams rebuilt after the driver failed them.
    pub rebuilds: AtomicU64,
    /// Set when the driver reported the device gone.
    pub gone: AtomicBool,
    /// Set by the engine to make blocked device waits return at once.
    pub cancel: AtomicBool,
    /// Playout resampler ratio adjustment in parts per million (signed, stored as i64 bits).
    pub drift_ppm: AtomicU64,
    /// The thread that waits for captured audio; the capture callback unparks it.
    in_waiter: std::sync::OnceLock<std::thread::Thread>,
    /// The thread that waits for the playout ring to drain; the playback callback unparks it.
    out_waiter: std::sync::OnceLock<std::thread::Thread>,
}

/// Wakes the thread waiting on a device ring, if one registered. `Thread::unpark` is an atomic swap, and a
/// futex wake only when that thread is parked: no lock, no allocation, nothing that blocks.
fn wake(waiter: &std::sync::OnceLock<std::thread::Thread>) {
    if let Some(t) = waiter.get() {
        t.unpark();
    }
}

/// Waits up to `timeout` for the device callback to wake the calling thread (registered as `waiter` on
/// first use). A callback between the caller's check and this park is not lost: it leaves the thread's
/// token set and the park returns at once. Polling instead woke each engine thread about ten times per
/// 20 ms frame, and those wake-ups were a third of a client's CPU.
fn wait_for_callback(waiter: &std::sync::OnceLock<std::thread::Thread>, timeout: Duration) {
    waiter.get_or_init(std::thread::current);
    std::thread::park_timeout(timeout);
}

impl DeviceHealth {
    fn on_error(&self, e: &cpal::Error) {
        // Errors arrive on cpal's worker thread, outside the sample callback; the first few are logged.
        if self.xruns.load(Relaxed) + self.stream_errors.load(Relaxed) < 4 {
            tracing::warn!(kind = ?e.kind(), error = %e, "sound device reported an error");
        }
        match e.kind() {
            cpal::ErrorKind::Xrun => {
                self.xruns.fetch_add(1, Relaxed);
            }
            cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::HostUnavailable => {
                self.stream_errors.fetch_add(1, Relaxed);
                self.gone.store(true, Relaxed);
            }
            _ => {
                self.stream_errors.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A device as listed for the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// The name `--input` / `--output`, the config and the TUI accept (an ALSA PCM name such as `default`,
    /// `pulse`, `hw:CARD=PCH,DEV=0` or a PCM defined in `~/.asoundrc`).
    pub name: String,
    /// The driver's description (first line).
    pub description: String,
    /// Stable backend id.
    pub id: String,
    /// Can capture.
    pub input: bool,
    /// Can play.
    pub output: bool,
    /// Native rate and channels (`48000 Hz 2 ch`), when the device could be probed.
    pub native: Option<String>,
}

/// The sound system a device name selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// An ALSA PCM through cpal's ALSA host (`hw:1,0`, `plughw:...`, `.asoundrc` PCMs).
    Alsa,
    /// A PulseAudio (or pipewire-pulse) sink or source through cpal's native PulseAudio client, which
    /// speaks the server's own protocol (no libpulse, no ALSA pulse plugin).
    Pulse,
    /// A native JACK client through cpal's JACK host (callbacks in the JACK process cycle, no ALSA jack
    /// plugin), connected to the physical ports or to a named one.
    Jack,
}

/// How a device name is read:
/// - `pulse` is the PulseAudio server's default source/sink (or `$PULSE_SOURCE` / `$PULSE_SINK` when set,
///   as libpulse clients do), `pulse:NAME` a named source or sink (`pulse:alsa_output.pci-0000_00_1f.3`,
///   `pulse:mysink.monitor`);
/// - `jack` is a native JACK client on the physical ports (`system:capture_1`, `system:playback_1..2`),
///   `jack:PORT` one connected to the JACK port `PORT` (`jack:jack_thru:output_1`);
/// - `alsa:NAME` is the ALSA PCM `NAME` (`alsa:default`, `alsa:pulse` for the ALSA pulse plugin, `alsa:jack`
///   for the ALSA jack plugin's PCM);
/// - `default` (or nothing) is `pulse` when a PulseAudio server answers, else ALSA's `default`: the ALSA
///   pulse plugin fails streams with EIO while the server has no timing data yet and then stops calling
///   back, so a desktop's sound server is reached natively;
/// - any other name is an ALSA PCM name, as before (`hw:1,0`, `qva` from `~/.asoundrc`).
///
/// Returns no backend for `default` (decided when opening) and the name within the backend (none: its
/// default).
fn parse_name(name: Option<&str>) -> (Option<Backend>, Option<&str>) {
    match name {
        None | Some("default") => (None, None),
        Some("pulse" | "pulse:") => (Some(Backend::Pulse), None),
        Some("jack" | "jack:") => (Some(Backend::Jack), None),
        Some(n) => {
            if let Some(rest) = n.strip_prefix("pulse:") {
                (Some(Backend::Pulse), Some(rest))
            } else if let Some(rest) = n.strip_prefix("jack:") {
                (Some(Backend::Jack), Some(rest))
            } else if let Some(rest) = n.strip_prefix("alsa:") {
                (Some(Backend::Alsa), Some(rest).filter(|r| !r.is_empty() && *r != "default"))
            } else {
                (Some(Backend::Alsa), Some(n))
            }
        }
    }
}

/// Lists the ALSA PCMs, `jack` (and a JACK server's ports as `jack:PORT`) and, when a PulseAudio server
/// answers, its sources and sinks (`pulse`, `pulse:NAME`); `probe` also opens each ALSA PCM to read its
/// native configuration.
///
/// Fails when neither host can enumerate devices.
pub fn list_devices_probed(probe: bool) -> Result<Vec<DeviceInfo>, AudioError> {
    let _quiet = AlsaQuiet::install();
    let mut out = Vec::new();
    let mut pulse_up = false;
    if let Some(pulse) = pulse_host()
        && let Ok(devices) = pulse.devices()
    {
        pulse_up = true;
        out.push(DeviceInfo {
            name: "pulse".into(),
            description: "PulseAudio: the server's default source and sink ($PULSE_SOURCE / $PULSE_SINK when set); \
                          `default` is this while the server answers"
                .into(),
            id: "pulseaudio:@DEFAULT@".into(),
            input: true,
            output: true,
            native: pulse.default_output_device().and_then(|d| native_summary(&d)),
        });
        for d in devices {
            let desc = d.description().ok();
            let Ok(id) = d.id() else { continue };
            out.push(DeviceInfo {
                name: format!("pulse:{}", id.id()),
                description: format!("PulseAudio: {}", desc.as_ref().map_or("", |x| x.name())),
                id: id.to_string(),
                input: desc.as_ref().is_some_and(|x| x.supports_input()),
                output: desc.as_ref().is_some_and(|x| x.supports_output()),
                native: native_summary(&d),
            });
        }
    }
    list_jack(&mut out);
    let alsa = alsa_host().devices().map_err(|e| AudioError::NoDevice(e.to_string()));
    let alsa = match alsa {
        Ok(devices) => devices,
        Err(e) if out.is_empty() => return Err(e),
        Err(_) => return Ok(out),
    };
    out.extend(alsa.map(|d| {
        let desc = d.description().ok();
        let mut name = desc.as_ref().and_then(|x| x.driver().map(str::to_owned)).unwrap_or_else(|| d.to_string());
        // With a PulseAudio server up, `default` and `pulse` name it natively; these ALSA PCMs keep `alsa:`.
        if pulse_up && (name == "default" || name == "pulse") {
            name = format!("alsa:{name}");
        }
        // `jack` is the native JACK client; the ALSA jack plugin's PCM is `alsa:jack`.
        if name == "jack" {
            name = "alsa:jack".into();
        }
        let native = probe.then(|| native_summary(&d)).flatten();
        DeviceInfo {
            description: desc.as_ref().map_or_else(String::new, |x| x.name().to_string()),
            name,
            id: d.id().map_or_else(|_| String::new(), |i| i.to_string()),
            input: desc.as_ref().is_some_and(|x| x.supports_input()),
            output: desc.as_ref().is_some_and(|x| x.supports_output()),
            native,
        }
    }));
    Ok(out)
}

/// Adds `jack` (when libjack loads) and, when a server answers, each of its audio ports as `jack:PORT`.
fn list_jack(out: &mut Vec<DeviceInfo>) {
    if !jack_client::available() {
        return;
    }
    let server = jack_client::server();
    let native = server.as_ref().map(|s| format!("{} Hz {} fr F32", s.rate, s.period));
    let description = if server.is_some() {
        "JACK (native client): system:capture_1 / system:playback_1..2"
    } else {
        "JACK (native client): no server answers now (start jackd)"
    };
    out.push(DeviceInfo {
        name: "jack".into(),
        description: description.into(),
        id: "jack".into(),
        input: true,
        output: true,
        native: native.clone(),
    });
    for (port, sends) in server.map(|s| s.ports).unwrap_or_default() {
        out.push(DeviceInfo {
            name: format!("jack:{port}"),
            description: if sends { "JACK port (capture from it)" } else { "JACK port (play into it)" }.into(),
            id: format!("jack:{port}"),
            input: sends,
            output: !sends,
            native: native.clone(),
        });
    }
}

/// Lists devices without opening the ALSA PCMs.
///
/// Fails when no host can enumerate devices.
pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    list_devices_probed(false)
}

/// The ALSA host, created once and kept for the life of the process. cpal's ALSA host frees ALSA's global
/// configuration when its last handle goes away; a stream opened after that (the pre-call device check
/// closes its streams, then the call opens them again) never gets a callback through the pulse plugin.
fn alsa_host() -> &'static cpal::Host {
    static HOST: std::sync::OnceLock<cpal::Host> = std::sync::OnceLock::new();
    HOST.get_or_init(|| cpal::host_from_id(cpal::HostId::Alsa).unwrap_or_else(|_| cpal::default_host()))
}

/// A fresh connection to the PulseAudio server, when one answers (cpal gives up after a short timeout). Each
/// open gets its own connection, so a server restarted between calls is found again; a stream keeps the
/// connection it was built on, so a rebuild after the server died fails instead of silently moving.
fn pulse_host() -> Option<cpal::Host> {
    if !cpal::available_hosts().contains(&cpal::HostId::PulseAudio) {
        return None;
    }
    cpal::host_from_id(cpal::HostId::PulseAudio).ok()
}

fn native_summary(d: &cpal::Device) -> Option<String> {
    let c = d.default_output_config().or_else(|_| d.default_input_config()).ok()?;
    Some(format!("{} Hz {} ch {:?}", c.sample_rate(), c.channels(), c.sample_format()))
}

fn matches(d: &cpal::Device, name: &str) -> bool {
    d.description().is_ok_and(|x| x.name() == name || x.driver() == Some(name))
        || d.id().is_ok_and(|i| i.to_string() == name)
}

/// The device a name selects; a JACK device comes with where its stream is to be connected.
fn pick(input: bool, name: Option<&str>) -> Result<(cpal::Device, Option<JackRoute>), AudioError> {
    let label = name.unwrap_or("default");
    let device = match parse_name(name) {
        (None, _) => match pulse_host() {
            Some(host) => pick_pulse(&host, input, None)?,
            None => return pick(input, Some("alsa:default")),
        },
        (Some(Backend::Pulse), n) => {
            let host = pulse_host().ok_or_else(|| {
                AudioError::NoDevice(format!(
                    "{label:?} needs a PulseAudio server and none answers (start it, or check `pactl info` \
                     and $PULSE_SERVER)"
                ))
            })?;
            pick_pulse(&host, input, n)?
        }
        (Some(Backend::Jack), port) => {
            let (device, route) = jack_client::device(input, port)?;
            return Ok((device, Some(route)));
        }
        (Some(Backend::Alsa), None) => {
            let host = alsa_host();
            let d = if input { host.default_input_device() } else { host.default_output_device() };
            d.ok_or_else(|| AudioError::NoDevice("the audio host reports no default device".into()))?
        }
        (Some(Backend::Alsa), Some(n)) => {
            let host = alsa_host();
            // An ALSA PCM name (`hw:1,0`, `qva`): cpal canonicalises `hw:1,0` to `hw:CARD=1,DEV=0`.
            match format!("alsa:{n}").parse::<cpal::DeviceId>().ok().and_then(|id| host.device_by_id(&id)) {
                Some(d) => d,
                None => {
                    let mut it = host.devices().map_err(|e| AudioError::NoDevice(e.to_string()))?;
                    it.find(|d| matches(d, n)).ok_or_else(|| AudioError::DeviceNotFound(n.to_string()))?
                }
            }
        }
    };
    Ok((device, None))
}

/// A PulseAudio source (`input`) or sink by name, or the default one (`$PULSE_SOURCE` / `$PULSE_SINK`,
/// else the server's default).
fn pick_pulse(host: &cpal::Host, input: bool, name: Option<&str>) -> Result<cpal::Device, AudioError> {
    let env = std::env::var(if input { "PULSE_SOURCE" } else { "PULSE_SINK" }).ok().filter(|v| !v.is_empty());
    let Some(wanted) = name.map(str::to_owned).or(env) else {
        let d = if input { host.default_input_device() } else { host.default_output_device() };
        return d.ok_or_else(|| AudioError::NoDevice("the PulseAudio server reports no default device".into()));
    };
    let devices = host.devices().map_err(|e| AudioError::NoDevice(format!("PulseAudio: {e}")))?;
    let mut found = devices.filter(|d| d.id().is_ok_and(|i| i.id() == wanted));
    // A sink and its monitor source have different names; a sink and a source never share one.
    found
        .find(|d| {
            let desc = d.description().ok();
            desc.is_some_and(|x| if input { x.supports_input() } else { x.supports_output() })
        })
        .ok_or_else(|| AudioError::DeviceNotFound(format!("pulse:{wanted}")))
}

/// What was opened, for logs and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedDevice {
    /// The device's name as the user spells it.
    pub name: String,
    /// Device rate.
    pub rate: u32,
    /// Device channels.
    pub channels: u16,
    /// Sample format.
    pub format: String,
}

impl std::fmt::Display for OpenedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} at {} Hz, {} ch, {}", self.name, self.rate, self.channels, self.format)
    }
}

/// The device's native configuration when its format is one we convert, else the closest usable one.
fn choose_config(
    device: &cpal::Device,
    input: bool,
    name: &str,
) -> Result<(StreamConfig, SampleFormat, Option<u32>), AudioError> {
    let usable = [SampleFormat::F32, SampleFormat::I16, SampleFormat::I32];
    let default = if input { device.default_input_config() } else { device.default_output_config() };
    let offered = match &default {
        Ok(d) => format!("{} Hz {:?} {} ch", d.sample_rate(), d.sample_format(), d.channels()),
        Err(e) => format!("no configuration ({e})"),
    };
    if let Ok(d) = &default
        && usable.contains(&d.sample_format())
    {
        let mut sc = d.config();
        sc.buffer_size = cpal::BufferSize::Default;
        let period = period_request(d.buffer_size(), sc.sample_rate);
        return Ok((sc, d.sample_format(), period));
    }
    let ranges: Vec<cpal::SupportedStreamConfigRange> = if input {
        device.supported_input_configs().map(Iterator::collect)
    } else {
        device.supported_output_configs().map(Iterator::collect)
    }
    .map_err(|e| AudioError::NoDevice(format!("{name:?}: {e}")))?;
    for fmt in usable {
        let mut candidates: Vec<_> = ranges.iter().filter(|r| r.sample_format() == fmt).collect();
        candidates.sort_by_key(|r| r.channels());
        if let Some(r) = candidates.first() {
            let rate = SAMPLE_RATE.clamp(r.min_sample_rate(), r.max_sample_rate());
            let cfg = (**r).with_sample_rate(rate);
            let mut sc = cfg.config();
            sc.buffer_size = cpal::BufferSize::Default;
            let period = period_request(cfg.buffer_size(), rate);
            return Ok((sc, fmt, period));
        }
    }
    Err(AudioError::Unusable { device: name.to_owned(), offered })
}

/// The period to ask for: 20 ms of device frames (one codec frame), within what the device supports. Left
/// to the driver (`BufferSize::Default`) some plugins pick enormous periods (the ALSA jack plugin chose
/// 61 440 frames); 10 ms periods through the pulse plugin (which rounds them to 6.7 ms) xrun on a loaded
/// 2-core machine, and its xrun recovery then fails the stream with EIO.
fn period_request(range: &cpal::SupportedBufferSize, rate: u32) -> Option<u32> {
    let want = (rate / 50).max(32);
    match range {
        cpal::SupportedBufferSize::Range { min, max } if *min <= *max => Some(want.clamp(*min, *max)),
        _ => Some(want),
    }
}

/// Builds a stream with the requested period, falling back to the driver's default when the request is
/// refused; the configuration that worked stays in `setup` for rebuilds. A default period longer than
/// [`MAX_DEFAULT_PERIOD`] is not kept: the ALSA jack plugin picked 61 440 frames.
fn build_with_period<R>(
    setup: &mut StreamSetup,
    period: Option<u32>,
    build: impl Fn(&StreamSetup) -> Result<R, cpal::Error>,
) -> Result<R, cpal::Error> {
    if let Some(p) = period {
        setup.config.buffer_size = cpal::BufferSize::Fixed(p);
        match build(setup) {
            Ok(r) => return Ok(r),
            Err(e) => tracing::debug!(period = p, error = %e, "period request refused; using the driver default"),
        }
    }
    setup.config.buffer_size = cpal::BufferSize::Default;
    build(setup)
}

/// A driver-chosen period longer than this is replaced by our request.
const MAX_DEFAULT_PERIOD: Duration = Duration::from_millis(50);

/// Ring capacity for a device: a second of audio, and at least eight requested periods.
fn ring_capacity(rate: u32, period: Option<u32>) -> usize {
    (rate as usize * RING_SECONDS).max(8 * period.unwrap_or(0) as usize)
}

/// No callback for this long after a stream error: rebuild the stream.
const REBUILD_AFTER: Duration = Duration::from_millis(150);
/// No callback for this long (after they had started), without any error: rebuild the stream.
const SILENT_REBUILD_AFTER: Duration = Duration::from_millis(1_300);
/// Rebuilds allowed per call before the device counts as lost.
const MAX_REBUILDS: u32 = 5;

/// What is needed to build a device's stream again after the driver failed it (the ALSA pulse plugin can
/// fail a stream with EIO and stop calling back while the server is fine).
struct StreamSetup {
    device: cpal::Device,
    /// For a native JACK client: the port its stream is connected to after each build.
    jack: Option<JackRoute>,
    config: StreamConfig,
    fmt: SampleFormat,
    capacity: usize,
    seen_errors: u64,
    rebuilds: u32,
    /// The period to switch to if the driver's default turns out too long.
    period_request: Option<u32>,
}

impl StreamSetup {
    /// Picks the named (or default) device for capture (`input`) or playback and chooses its configuration;
    /// returns the setup, what it is, and the period to ask for.
    fn prepare(input: bool, name: Option<&str>) -> Result<(Self, OpenedDevice, Option<u32>), AudioError> {
        let label = name.unwrap_or("default");
        let (device, jack) = pick(input, name)?;
        let (mut config, fmt, period) = choose_config(&device, input, label)?;
        if let Some(route) = &jack {
            config.channels = route.channels();
        }
        let rate = config.sample_rate;
        let opened =
            OpenedDevice { name: label.to_owned(), rate, channels: config.channels, format: format!("{fmt:?}") };
        let capacity = ring_capacity(rate, period);
        let setup = Self { device, jack, config, fmt, capacity, seen_errors: 0, rebuilds: 0, period_request: None };
        Ok((setup, opened, period))
    }

    fn input(&self, health: &Arc<DeviceHealth>, start: bool) -> Result<(cpal::Stream, CaptureRing), cpal::Error> {
        let (prod, cons) = rtrb::RingBuffer::new(self.capacity);
        let (times, times_rx) = rtrb::RingBuffer::new(CLOCK_EVENTS);
        let epoch = Instant::now();
        let cb = InputCallback { prod, times, epoch, written: 0, health: health.clone() };
        let stream = match self.fmt {
            SampleFormat::I16 => build_input::<i16>(&self.device, &self.config, cb),
            SampleFormat::I32 => build_input::<i32>(&self.device, &self.config, cb),
            _ => build_input::<f32>(&self.device, &self.config, cb),
        }?;
        if let Some(route) = &self.jack {
            route.connect()?;
        }
        if start {
            stream.play()?;
        }
        Ok((stream, CaptureRing { samples: cons, times: times_rx, epoch, read: 0 }))
    }

    fn output(
        &self,
        health: &Arc<DeviceHealth>,
        start: bool,
    ) -> Result<(cpal::Stream, rtrb::Producer<f32>), cpal::Error> {
        let (prod, cons) = rtrb::RingBuffer::new(self.capacity);
        let stream = match self.fmt {
            SampleFormat::I16 => build_output::<i16>(&self.device, &self.config, cons, health.clone()),
            SampleFormat::I32 => build_output::<i32>(&self.device, &self.config, cons, health.clone()),
            _ => build_output::<f32>(&self.device, &self.config, cons, health.clone()),
        }?;
        if let Some(route) = &self.jack {
            route.connect()?;
        }
        if start {
            stream.play()?;
        }
        Ok((stream, prod))
    }

    /// Whether the stream failed (new errors, then no callback for [`REBUILD_AFTER`]) and should be
    /// rebuilt; fails when it failed too often.
    fn needs_rebuild(
        &mut self,
        health: &DeviceHealth,
        quiet: Duration,
        started: bool,
        name: &str,
    ) -> Result<bool, AudioError> {
        let observed = health.in_period.load(Relaxed).max(health.out_period.load(Relaxed));
        let too_long = u64::from(self.config.sample_rate) * MAX_DEFAULT_PERIOD.as_millis() as u64 / 1000;
        if let Some(p) = self.period_request
            && observed > too_long
        {
            tracing::info!(
                device = name,
                observed,
                requested = p,
                "driver period too long; reopening with a shorter one"
            );
            self.config.buffer_size = cpal::BufferSize::Fixed(p);
            self.period_request = None;
            health.in_period.store(0, Relaxed);
            health.out_period.store(0, Relaxed);
            return Ok(true);
        }
        let errors = health.stream_errors.load(Relaxed);
        let failed = errors != self.seen_errors && quiet >= REBUILD_AFTER;
        // The pulse plugin can also stop calling back without any error.
        if !(failed || started && quiet >= SILENT_REBUILD_AFTER) {
            return Ok(false);
        }
        self.seen_errors = errors;
        if self.rebuilds >= MAX_REBUILDS {
            return Err(lost(name, health, "the stream kept failing"));
        }
        self.rebuilds += 1;
        health.rebuilds.fetch_add(1, Relaxed);
        tracing::warn!(
            device = name,
            quiet_ms = quiet.as_millis() as u64,
            errors,
            in_callbacks = health.in_callbacks.load(Relaxed),
            out_callbacks = health.out_callbacks.load(Relaxed),
            "sound stream failed; rebuilding it"
        );
        Ok(true)
    }
}

fn reopen_failed(name: &str, e: &cpal::Error) -> AudioError {
    AudioError::DeviceLost {
        device: name.to_owned(),
        why: format!("the stream failed and could not be reopened ({e})"),
    }
}

/// Watches a callback counter; no change for [`STALL_AFTER`] is a stall.
#[derive(Debug)]
struct Watchdog {
    last: u64,
    since: Instant,
    grace: Duration,
}

impl Watchdog {
    fn new() -> Self {
        Self { last: 0, since: Instant::now(), grace: FIRST_CALLBACK_GRACE }
    }

    fn started(&self) -> bool {
        self.grace.is_zero()
    }

    fn quiet_for(&self, now: Instant) -> Duration {
        now.duration_since(self.since)
    }

    fn stalled(&mut self, count: u64, now: Instant) -> bool {
        if count != self.last {
            self.last = count;
            self.since = now;
            // A stream's first callbacks can come long before the rest: a PulseAudio null sink asks for
            // its prebuffer at once and then sleeps out its idle latency (about a second) before asking
            // again. The grace ends once callbacks flow.
            if count >= FLOWING_AFTER {
                self.grace = Duration::ZERO;
            }
            return false;
        }
        now.duration_since(self.since) > STALL_AFTER + self.grace
    }
}

fn lost(name: &str, health: &DeviceHealth, what: &str) -> AudioError {
    let why = if health.gone.load(Relaxed) { "the driver reported it gone" } else { what };
    AudioError::DeviceLost { device: name.to_owned(), why: why.to_owned() }
}

/// Drops a stream on a helper thread and waits at most [`DROP_DEADLINE`]: a dead sound server can make
/// cpal's join of its own worker hang, and stopping a call must not.
fn drop_stream(stream: Option<cpal::Stream>) {
    let Some(stream) = stream else { return };
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let spawned = std::thread::Builder::new().name("qv-stream-drop".into()).spawn(move || {
        drop(stream);
        let _ = tx.send(());
    });
    if spawned.is_ok() {
        // On timeout the helper is abandoned (it finishes or dies with the process).
        let _ = rx.recv_timeout(DROP_DEADLINE);
    }
}

fn sinc_params() -> SincInterpolationParameters {
    // 64 taps: about 0.7 ms of delay at 48 kHz, >70 dB image rejection in the voice band.
    SincInterpolationParameters {
        sinc_len: 64,
        f_cutoff: 0.92,
        oversampling_factor: 128,
        interpolation: SincInterpolationType::Linear,
        window: rubato::WindowFunction::BlackmanHarris2,
    }
}

fn to_i16(x: f32) -> i16 {
    (x * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16
}

/// Microphone capture.
pub struct CpalSource {
    setup: StreamSetup,
    cons: CaptureRing,
    /// Evens out send times on a device that delivers uneven chunks (PulseAudio).
    pacer: Option<CapturePacer>,
    stream: Option<cpal::Stream>,
    resampler: Option<SincFixedOut<f32>>,
    inbuf: Vec<f32>,
    outbuf: Vec<f32>,
    health: Arc<DeviceHealth>,
    watchdog: Watchdog,
    opened: OpenedDevice,
}

impl std::fmt::Debug for CpalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpalSource").field("opened", &self.opened).finish()
    }
}

impl CpalSource {
    /// Checks that the named (or default) input device opens for 48 kHz frames of `frame_samples`: the
    /// stream is built and configured but not started (a PulseAudio capture stream only starts once the
    /// server delivers data, which a null sink can take a second or two to do).
    ///
    /// Fails with [`AudioError::NoDevice`], [`AudioError::DeviceNotFound`] or [`AudioError::Unusable`]
    /// when no stream can be built.
    pub fn probe(name: Option<&str>, frame_samples: usize) -> Result<Self, AudioError> {
        Self::open_inner(name, frame_samples, Arc::new(DeviceHealth::default()), false)
    }

    /// Opens and starts the named (or default) input device, counting into `health`.
    ///
    /// Fails like [`CpalSource::probe`], or when the stream cannot be started.
    pub fn open_with(name: Option<&str>, frame_samples: usize, health: Arc<DeviceHealth>) -> Result<Self, AudioError> {
        Self::open_inner(name, frame_samples, health, true)
    }

    fn open_inner(
        name: Option<&str>,
        frame_samples: usize,
        health: Arc<DeviceHealth>,
        start: bool,
    ) -> Result<Self, AudioError> {
        let _quiet = AlsaQuiet::install();
        let label = name.unwrap_or("default");
        let (mut setup, opened, period) = StreamSetup::prepare(true, name)?;
        let rate = opened.rate;
        let (stream, cons) = build_with_period(&mut setup, period, |s| s.input(&health, start))
            .map_err(|e| AudioError::Unusable { device: label.to_owned(), offered: format!("{opened} ({e})") })?;
        let resampler = if rate == SAMPLE_RATE {
            None
        } else {
            Some(
                SincFixedOut::<f32>::new(
                    f64::from(SAMPLE_RATE) / f64::from(rate),
                    1.0,
                    sinc_params(),
                    frame_samples,
                    1,
                )
                .map_err(|e| AudioError::Unusable { device: label.to_owned(), offered: format!("{opened} ({e})") })?,
            )
        };
        let max_in = resampler.as_ref().map_or(frame_samples, |r| r.input_frames_max());
        let max_out = resampler.as_ref().map_or(frame_samples, |r| r.output_frames_max());
        // A PulseAudio source is timer-scheduled and hands over chunks of any size up to its fragment (the
        // period asked for): frames are held for one fragment so that they leave evenly.
        let pacer = is_pulse(&setup.device).then(|| {
            let fragment = period.unwrap_or(rate / 50);
            CapturePacer::new(rate, Duration::from_micros(u64::from(fragment) * 1_000_000 / u64::from(rate.max(1))))
        });
        tracing::info!(device = %opened, paced = pacer.is_some(), "capture device opened");
        Ok(Self {
            setup,
            cons,
            pacer,
            stream: Some(stream),
            resampler,
            inbuf: vec![0.0; max_in],
            outbuf: vec![0.0; max_out],
            health,
            watchdog: Watchdog::new(),
            opened,
        })
    }

    /// What was opened.
    pub fn opened(&self) -> &OpenedDevice {
        &self.opened
    }

    /// Holds the frame just read until the pacer's release time (see [`CapturePacer`]); returns at once
    /// when the engine stops.
    fn pace(&mut self) {
        let Some(p) = &mut self.pacer else { return };
        while let Ok((us, written)) = self.cons.times.pop() {
            p.delivered(us as f64 / 1e6, written);
        }
        let Some(release) = p.release(self.cons.read) else { return };
        loop {
            let now = self.cons.epoch.elapsed().as_secs_f64();
            if now >= release || self.health.cancel.load(Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_secs_f64((release - now).min(0.005)));
        }
    }
}

/// Whether a device is reached through cpal's PulseAudio host.
fn is_pulse(d: &cpal::Device) -> bool {
    d.id().is_ok_and(|id| id.host() == cpal::HostId::PulseAudio)
}

impl Drop for CpalSource {
    fn drop(&mut self) {
        drop_stream(self.stream.take());
    }
}

/// Timing events the capture callback can queue before the engine thread reads them (a few seconds of
/// callbacks; more are dropped, which only delays the pacer's estimate).
const CLOCK_EVENTS: usize = 512;

/// What the capture callback owns: the sample ring's writing end and the queue of (µs since `epoch`,
/// samples written so far) after each callback, from which [`CapturePacer`] learns the device's clock.
struct InputCallback {
    prod: rtrb::Producer<f32>,
    times: rtrb::Producer<(u64, u64)>,
    epoch: Instant,
    written: u64,
    health: Arc<DeviceHealth>,
}

/// The engine thread's side of a capture stream: the samples, the callbacks' timing, and how many samples
/// it took out of the ring (kept or discarded).
struct CaptureRing {
    samples: rtrb::Consumer<f32>,
    times: rtrb::Consumer<(u64, u64)>,
    epoch: Instant,
    read: u64,
}

fn build_input<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut cb: InputCallback,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let ch = usize::from(config.channels.max(1));
    let h = cb.health.clone();
    device.build_input_stream::<T, _, _>(
        *config,
        move |data: &[T], _| {
            let frames = data.len() / ch;
            cb.health.in_callbacks.fetch_add(1, Relaxed);
            cb.health.in_period.fetch_max(frames as u64, Relaxed);
            let n = frames.min(cb.prod.slots());
            if let Ok(chunk) = cb.prod.write_chunk_uninit(n) {
                let scale = 1.0 / ch as f32;
                chunk.fill_from_iter(
                    data.chunks_exact(ch).map(|f| f.iter().map(|s| s.to_sample::<f32>()).sum::<f32>() * scale),
                );
            }
            if n < frames {
                cb.health.in_overruns.fetch_add((frames - n) as u64, Relaxed);
            }
            cb.written += n as u64;
            // Reading the monotonic clock is a vDSO call: no lock, no allocation, no system call.
            let _ = cb.times.push((cb.epoch.elapsed().as_micros() as u64, cb.written));
            wake(&cb.health.in_waiter);
        },
        move |e| h.on_error(&e),
        Some(Duration::from_secs(2)),
    )
}

impl AudioSource for CpalSource {
    fn read_frame(&mut self, out: &mut [i16]) -> Result<Captured, AudioError> {
        let need = self.resampler.as_ref().map_or(out.len(), |r| r.input_frames_next());
        let rate = self.opened.rate as usize;
        loop {
            let avail = self.cons.samples.slots();
            if avail >= need {
                // A backlog (the thread was descheduled, or the path just came up) would add delay for
                // the rest of the call: keep only the newest audio.
                let max = need + rate * CAPTURE_MAX_BACKLOG.as_millis() as usize / 1000;
                if avail > max
                    && let Ok(c) = self.cons.samples.read_chunk(avail - need)
                {
                    self.health.in_overruns.fetch_add(c.len() as u64, Relaxed);
                    self.cons.read += c.len() as u64;
                    c.commit_all();
                }
                break;
            }
            if self.health.cancel.load(Relaxed) {
                out.fill(0);
                return Ok(Captured::Audio);
            }
            let now = Instant::now();
            if self.health.gone.load(Relaxed) || self.watchdog.stalled(self.health.in_callbacks.load(Relaxed), now) {
                return Err(lost(&self.opened.name, &self.health, "the capture callback stopped (no audio for 1.5 s)"));
            }
            if self.setup.needs_rebuild(
                &self.health,
                self.watchdog.quiet_for(now),
                self.watchdog.started(),
                &self.opened.name,
            )? {
                drop_stream(self.stream.take());
                let (stream, cons) =
                    self.setup.input(&self.health, true).map_err(|e| reopen_failed(&self.opened.name, &e))?;
                self.stream = Some(stream);
                self.cons = cons;
                if let Some(p) = &mut self.pacer {
                    p.reset();
                }
                self.watchdog = Watchdog::new();
                continue;
            }
            // Only a callback adds samples, and it wakes this thread at once (capture-to-send delay is
            // mouth-to-ear delay); the timeout bounds how long a stall or a stop goes unnoticed.
            wait_for_callback(&self.health.in_waiter, WAIT_MAX);
        }
        let chunk = self.cons.samples.read_chunk(need).map_err(|_| AudioError::Stalled)?;
        let (a, b) = chunk.as_slices();
        self.inbuf[..a.len()].copy_from_slice(a);
        self.inbuf[a.len()..a.len() + b.len()].copy_from_slice(b);
        chunk.commit_all();
        self.cons.read += need as u64;
        self.pace();
        match &mut self.resampler {
            None => {
                for (o, &s) in out.iter_mut().zip(&self.inbuf[..need]) {
                    *o = to_i16(s);
                }
            }
            Some(r) => {
                let (_, n) = r
                    .process_into_buffer(&[&self.inbuf[..need]], &mut [&mut self.outbuf[..]], None)
                    .map_err(|e| AudioError::DeviceLost { device: self.opened.name.clone(), why: e.to_string() })?;
                for (o, &s) in out.iter_mut().zip(&self.outbuf[..n]) {
                    *o = to_i16(s);
                }
                let n = n.min(out.len());
                out[n..].fill(0);
            }
        }
        Ok(Captured::Audio)
    }
}

/// Speaker playback.
pub struct CpalSink {
    setup: StreamSetup,
    prod: rtrb::Producer<f32>,
    capacity: usize,
    stream: Option<cpal::Stream>,
    resampler: SincFixedIn<f32>,
    buf: Box<[i16]>,
    inbuf: Vec<f32>,
    outbuf: Vec<f32>,
    health: Arc<DeviceHealth>,
    watchdog: Watchdog,
    opened: OpenedDevice,
    drift: crate::media::drift::DriftControl,
}

impl std::fmt::Debug for CpalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpalSink").field("opened", &self.opened).finish()
    }
}

impl CpalSink {
    /// Checks that the named (or default) output device opens for 48 kHz frames of `frame_samples`: the
    /// stream is built and configured but not started (a PulseAudio capture stream only starts once the
    /// server delivers data, which a null sink can take a second or two to do).
    ///
    /// Fails with [`AudioError::NoDevice`], [`AudioError::DeviceNotFound`] or [`AudioError::Unusable`]
    /// when no stream can be built.
    pub fn probe(name: Option<&str>, frame_samples: usize) -> Result<Self, AudioError> {
        Self::open_inner(name, frame_samples, Arc::new(DeviceHealth::default()), false)
    }

    /// Opens and starts the named (or default) output device, counting into `health`.
    ///
    /// Fails like [`CpalSink::probe`], or when the stream cannot be started.
    pub fn open_with(name: Option<&str>, frame_samples: usize, health: Arc<DeviceHealth>) -> Result<Self, AudioError> {
        Self::open_inner(name, frame_samples, health, true)
    }

    fn open_inner(
        name: Option<&str>,
        frame_samples: usize,
        health: Arc<DeviceHealth>,
        start: bool,
    ) -> Result<Self, AudioError> {
        let _quiet = AlsaQuiet::install();
        let label = name.unwrap_or("default");
        let (mut setup, opened, period) = StreamSetup::prepare(false, name)?;
        let (rate, capacity) = (opened.rate, setup.capacity);
        let unusable = |e: &dyn std::fmt::Display| AudioError::Unusable {
            device: label.to_owned(),
            offered: format!("{opened} ({e})"),
        };
        // Always a resampler (even at 48 kHz): its ratio is what drift compensation adjusts.
        let resampler = SincFixedIn::<f32>::new(
            f64::from(rate) / f64::from(SAMPLE_RATE),
            MAX_RATIO_ADJUST,
            sinc_params(),
            frame_samples,
            1,
        )
        .map_err(|e| unusable(&e))?;
        let (stream, prod) =
            build_with_period(&mut setup, period, |s| s.output(&health, start)).map_err(|e| unusable(&e))?;
        tracing::info!(device = %opened, "playback device opened");
        let max_out = resampler.output_frames_max();
        Ok(Self {
            setup,
            prod,
            capacity,
            stream: Some(stream),
            resampler,
            buf: vec![0; frame_samples].into_boxed_slice(),
            inbuf: vec![0.0; frame_samples],
            outbuf: vec![0.0; max_out],
            health,
            watchdog: Watchdog::new(),
            opened,
            drift: crate::media::drift::DriftControl::new(MAX_DRIFT_CORRECTION),
        })
    }

    /// What was opened.
    pub fn opened(&self) -> &OpenedDevice {
        &self.opened
    }

    /// The fill level (device samples) the playout keeps in the ring before each callback.
    fn target_fill(&self) -> usize {
        let rate = self.opened.rate as usize;
        let period = self.health.out_period.load(Relaxed) as usize;
        // One period is enough when the thread runs between callbacks; a small margin only helps when
        // callbacks are much shorter than a frame (the frame itself then covers several callbacks).
        let margin = rate * PLAYOUT_MARGIN.as_micros() as usize / 1_000_000;
        let frame = self.inbuf.len() * rate / SAMPLE_RATE as usize;
        let target = if period + margin <= frame { period + margin } else { period.max(1) };
        target.min(self.capacity / 2)
    }

    /// Sets the relative playout rate (drift compensation): > 1 plays the 48 kHz stream slower.
    pub fn set_rate_adjust(&mut self, rel: f64) {
        let rel = rel.clamp(1.0 / MAX_RATIO_ADJUST, MAX_RATIO_ADJUST);
        if self.resampler.set_resample_ratio_relative(rel, true).is_ok() {
            self.health.drift_ppm.store(((rel - 1.0) * 1e6).round() as i64 as u64, Relaxed);
        }
    }
}

impl Drop for CpalSink {
    fn drop(&mut self) {
        drop_stream(self.stream.take());
    }
}

/// Longest wait for a device callback before the engine threads look at the stall watchdog and the
/// stop flag again.
const WAIT_MAX: Duration = Duration::from_millis(10);

/// Playback callbacks per window of [`PeriodWindow`].
const PERIOD_WINDOW: u32 = 128;

/// The largest callback over the current and the previous window of [`PERIOD_WINDOW`] callbacks. A sound
/// server that once asks for more (PulseAudio refilling after a scheduling hiccup asks for two periods)
/// raises the playout's target for a window or two, not for the rest of the call: a running maximum kept
/// that extra period in the ring, and in the delay, until the call ended.
#[derive(Debug, Default)]
struct PeriodWindow {
    seen: u32,
    current: u64,
    previous: u64,
}

impl PeriodWindow {
    fn observe(&mut self, frames: u64) -> u64 {
        self.current = self.current.max(frames);
        let largest = self.current.max(self.previous);
        self.seen += 1;
        if self.seen >= PERIOD_WINDOW {
            self.previous = self.current;
            self.current = 0;
            self.seen = 0;
        }
        largest
    }
}

fn build_output<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut cons: rtrb::Consumer<f32>,
    health: Arc<DeviceHealth>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let ch = usize::from(config.channels.max(1));
    let h = health.clone();
    // Underruns count only once audio has flowed (the ring starts empty).
    let mut primed = false;
    let mut periods = PeriodWindow::default();
    device.build_output_stream::<T, _, _>(
        *config,
        move |data: &mut [T], _| {
            let frames = data.len() / ch;
            // The first callback asks for the whole prebuffer (PulseAudio: two periods); the period the
            // playout keeps in the ring is that of the callbacks after it.
            if health.out_callbacks.fetch_add(1, Relaxed) > 0 {
                health.out_period.store(periods.observe(frames as u64), Relaxed);
            }
            let n = frames.min(cons.slots());
            let mut written = 0;
            if let Ok(chunk) = cons.read_chunk(n) {
                let (a, b) = chunk.as_slices();
                for (frame, &s) in data.chunks_exact_mut(ch).zip(a.iter().chain(b)) {
                    let v = T::from_sample(s);
                    for o in frame.iter_mut() {
                        *o = v;
                    }
                }
                written = n;
                chunk.commit_all();
            }
            if written > 0 {
                primed = true;
            }
            wake(&health.out_waiter);
            if written < frames {
                for o in &mut data[written * ch..] {
                    *o = T::from_sample(0.0f32);
                }
                if primed {
                    health.out_underruns.fetch_add(1, Relaxed);
                }
            }
        },
        move |e| h.on_error(&e),
        Some(Duration::from_secs(2)),
    )
}

impl AudioSink for CpalSink {
    fn play_frame(&mut self, fill: &mut dyn FnMut(&mut [i16])) -> Result<(), AudioError> {
        // Wait until the device has drained the ring below its target: the device clock paces playout,
        // and the jitter buffer is read as late as possible.
        let mut waited = false;
        loop {
            let level = self.capacity - self.prod.slots();
            let target = self.target_fill();
            if level < target {
                break;
            }
            if self.health.cancel.load(Relaxed) {
                return Ok(());
            }
            let now = Instant::now();
            if self.health.gone.load(Relaxed) || self.watchdog.stalled(self.health.out_callbacks.load(Relaxed), now) {
                return Err(lost(
                    &self.opened.name,
                    &self.health,
                    "the playback callback stopped (no audio for 1.5 s)",
                ));
            }
            if self.setup.needs_rebuild(
                &self.health,
                self.watchdog.quiet_for(now),
                self.watchdog.started(),
                &self.opened.name,
            )? {
                drop_stream(self.stream.take());
                let (stream, prod) =
                    self.setup.output(&self.health, true).map_err(|e| reopen_failed(&self.opened.name, &e))?;
                self.stream = Some(stream);
                self.prod = prod;
                self.watchdog = Watchdog::new();
                continue;
            }
            // Only a callback drains the ring, and it wakes this thread. (Sleeping for the time the
            // excess would take to drain, as before, assumed a continuous drain: with the level a few
            // samples above the target it polled every 0.5 ms until the next period, 1 300 wake-ups a
            // second on JACK.)
            wait_for_callback(&self.health.out_waiter, WAIT_MAX);
            waited = true;
        }
        // Just after a callback drained the ring, a frame captured on the same clock edge (the peer on
        // one machine, or one JACK server) is still on its way: reading the jitter buffer now races with
        // it and makes it stretch and shrink. With a whole period of slack, read it a little later.
        let period_us = self.health.out_period.load(Relaxed) * 1_000_000 / self.opened.rate.max(1) as u64;
        if waited && period_us >= (PLAYOUT_PHASE + PLAYOUT_PHASE_SLACK).as_micros() as u64 {
            std::thread::sleep(PLAYOUT_PHASE);
        }
        if self.health.out_callbacks.load(Relaxed) < FLOWING_AFTER {
            // Until the device calls back at its steady pace, silence covers its start-up requests (a
            // PulseAudio stream first asks for its whole prebuffer, then may pause for its server's idle
            // latency). Reading the jitter buffer now would pull several frames in quick succession and
            // leave the frames that follow with less wait than it chose for them.
            self.buf.fill(0);
        } else {
            fill(&mut self.buf);
        }
        for (d, &s) in self.inbuf.iter_mut().zip(self.buf.iter()) {
            *d = f32::from(s) / 32_768.0;
        }
        let (_, n) = self
            .resampler
            .process_into_buffer(&[&self.inbuf[..]], &mut [&mut self.outbuf[..]], None)
            .map_err(|e| AudioError::DeviceLost { device: self.opened.name.clone(), why: e.to_string() })?;
        let (_, dropped) = self.prod.push_partial_slice(&self.outbuf[..n]);
        if !dropped.is_empty() {
            self.health.in_overruns.fetch_add(dropped.len() as u64, Relaxed);
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), AudioError> {
        Ok(())
    }

    fn observe_buffer(&mut self, now: Instant, level_ms: f64, frame_ms: f64) {
        if let Some(rel) = self.drift.update(now, level_ms, frame_ms) {
            self.set_rate_adjust(rel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On machines without a sound card (CI, these build boxes) opening must fail with a clear message;
    /// with a card it must succeed. Either way it must not panic.
    #[test]
    fn opening_a_missing_device_fails_clearly() {
        match CpalSink::probe(Some("no-such-device-qvoice"), 960) {
            Err(AudioError::DeviceNotFound(n)) => assert_eq!(n, "no-such-device-qvoice"),
            Err(AudioError::NoDevice(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn device_names_select_the_sound_system() {
        assert_eq!(parse_name(None), (None, None));
        assert_eq!(parse_name(Some("default")), (None, None));
        assert_eq!(parse_name(Some("pulse")), (Some(Backend::Pulse), None));
        assert_eq!(parse_name(Some("pulse:mysink.monitor")), (Some(Backend::Pulse), Some("mysink.monitor")));
        assert_eq!(parse_name(Some("alsa:default")), (Some(Backend::Alsa), None));
        assert_eq!(parse_name(Some("alsa:pulse")), (Some(Backend::Alsa), Some("pulse")));
        assert_eq!(parse_name(Some("hw:1,0")), (Some(Backend::Alsa), Some("hw:1,0")));
        assert_eq!(parse_name(Some("qva")), (Some(Backend::Alsa), Some("qva")));
        assert_eq!(parse_name(Some("jack")), (Some(Backend::Jack), None));
        assert_eq!(parse_name(Some("jack:")), (Some(Backend::Jack), None));
        assert_eq!(parse_name(Some("jack:jack_thru:output_1")), (Some(Backend::Jack), Some("jack_thru:output_1")));
        assert_eq!(parse_name(Some("alsa:jack")), (Some(Backend::Alsa), Some("jack")));
    }

    #[test]
    fn a_one_off_large_playback_request_is_forgotten_after_two_windows() {
        let mut w = PeriodWindow::default();
        assert_eq!(w.observe(960), 960);
        assert_eq!(w.observe(1920), 1920, "a larger request raises the period at once");
        let mut last = 0;
        for i in 0..(2 * PERIOD_WINDOW) {
            last = w.observe(960);
            if i < PERIOD_WINDOW - 2 {
                assert_eq!(last, 1920, "kept for the rest of its window and the next");
            }
        }
        assert_eq!(last, 960, "forgotten two windows later");
        // Uneven callbacks (44.1 kHz through PulseAudio: 882, sometimes 903) keep the largest.
        for i in 0..(3 * PERIOD_WINDOW) {
            assert!(w.observe(if i % 50 == 0 { 903 } else { 882 }) <= 960);
        }
        assert_eq!(w.observe(882), 903);
    }

    #[test]
    fn watchdog_allows_a_slow_start_then_catches_a_stall() {
        let mut w = Watchdog::new();
        let t0 = w.since;
        assert!(!w.stalled(0, t0 + Duration::from_millis(2_900)));
        assert!(w.stalled(0, t0 + Duration::from_millis(3_100)));
        // A first callback (the prebuffer) then a long pause: still the start grace.
        assert!(!w.stalled(1, t0 + Duration::from_millis(3_200)));
        assert!(!w.started());
        assert!(!w.stalled(1, t0 + Duration::from_millis(6_100)));
        assert!(w.stalled(1, t0 + Duration::from_millis(6_300)));
        // Once callbacks flow, 1.5 s without one is a stall.
        let t1 = t0 + Duration::from_millis(6_400);
        assert!(!w.stalled(FLOWING_AFTER, t1));
        assert!(w.started());
        assert!(!w.stalled(FLOWING_AFTER, t1 + Duration::from_millis(1_400)));
        assert!(w.stalled(FLOWING_AFTER, t1 + Duration::from_millis(1_600)));
    }
}

#[cfg(test)]
mod probe {
    use super::*;

    /// Manual probe: `QV_PROBE_DEVICE=default cargo test --lib probe -- --ignored --nocapture` with a sound
    /// server running prints what the callbacks did in one second.
    #[test]
    #[ignore = "needs a sound server"]
    fn callbacks_run() {
        let name = std::env::var("QV_PROBE_DEVICE").unwrap_or_else(|_| "default".into());
        if std::env::var("QV_PROBE_TWICE").is_ok() {
            let t = Instant::now();
            drop(CpalSource::probe(Some(&name), 960).unwrap());
            drop(CpalSink::probe(Some(&name), 960).unwrap());
            eprintln!("probe open+close took {:?}", t.elapsed());
        }
        let h = Arc::new(DeviceHealth::default());
        let mut sink = CpalSink::open_with(Some(&name), 960, h.clone()).unwrap();
        let mut src = CpalSource::open_with(Some(&name), 960, h.clone()).unwrap();
        let mut frame = [0i16; 960];
        for _ in 0..250 {
            src.read_frame(&mut frame).unwrap();
            sink.play_frame(&mut |b| b.copy_from_slice(&frame)).unwrap();
        }
        eprintln!("{:?} {h:?}", sink.opened());
    }
}
