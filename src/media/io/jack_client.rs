//! Native JACK clients for the sound-device path: cpal's `jack` host builds the streams (callbacks in the
//! JACK process cycle, no ALSA jack plugin and its two-period buffer); this module names the clients,
//! connects them to the ports the user chose and talks to the server for `qvoice devices`.
//!
//! - `jack` is a client connected to the physical ports the way cpal does it: its one capture port from
//!   `system:capture_1`, its two playback ports to `system:playback_1` and `_2`.
//! - `jack:PORT` is a client with one port connected to `PORT` (`jack:jack_thru:output_1` to capture what
//!   that port carries, `jack:jack_thru:input_2` to play into it). cpal only connects to `system:` ports,
//!   so after the stream is built a short-lived helper client connects ours to `PORT`.
//!
//! Client names are unique per process and stream: `qvoice-<pid>-<n>_in` / `_out`. libjack is dlopen'ed
//! (the `jack` crate's default), so qvoice starts without it; without a server answering, choosing a JACK
//! device fails with a message saying so. libjack reports a missing server on stderr from C ("Cannot
//! connect to server socket"), which would corrupt a TUI: once libjack is loaded its error and info
//! callbacks are silenced before any client is opened.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::media::audio::AudioError;

/// cpal's JACK device type (not re-exported under its own name; reached through the host's trait).
type JackDevice = <cpal::platform::JackHost as cpal::traits::HostTrait>::Device;

/// The message for a JACK device when no server answers (`JACK_DEFAULT_SERVER` picks a named server).
pub const NO_SERVER: &str = "no JACK server answers; start jackd, or choose another --input/--output";

/// Where a JACK stream's ports go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JackRoute {
    /// The client name the stream runs as (`qvoice-<pid>-<n>_in`).
    pub client: String,
    /// The port to connect to; `None`: the physical ports, connected by cpal.
    pub port: Option<String>,
    /// Capture (`true`) or playback.
    pub input: bool,
}

impl JackRoute {
    /// Channels to open: one port when connecting to a named port or capturing, two playback ports
    /// (`system:playback_1..2`) otherwise.
    pub fn channels(&self) -> u16 {
        if self.input || self.port.is_some() { 1 } else { 2 }
    }

    /// Connects the stream's port to the named one (nothing to do for the physical ports, which cpal
    /// connected). Call after the stream is built (its client is active).
    ///
    /// Fails when no server answers or the server refuses the connection (a port that went away).
    pub fn connect(&self) -> Result<(), cpal::Error> {
        let Some(port) = &self.port else { return Ok(()) };
        let fail = |what: String| cpal::Error::with_message(cpal::ErrorKind::DeviceNotAvailable, what);
        let helper = open_client("link").map_err(|e| fail(e.to_string()))?;
        let ours = if self.input { format!("{}:in_0", self.client) } else { format!("{}:out_0", self.client) };
        let (from, to) = if self.input { (port.as_str(), ours.as_str()) } else { (ours.as_str(), port.as_str()) };
        helper
            .connect_ports_by_name(from, to)
            .map_err(|e| fail(format!("cannot connect JACK port {from} to {to}: {e}")))
    }
}

/// Whether libjack could be loaded; the first call silences its stderr messages.
pub fn available() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        let loaded = jack::jack_sys::library().is_ok();
        if loaded {
            // Before any client exists: the first `Client::new` would otherwise install the crate's
            // default logger, and libjack prints "Cannot connect to server socket" when none runs.
            jack::set_logger(jack::LoggerType::None);
        }
        loaded
    })
}

/// A fresh, process-unique client name stem: `qvoice-<pid>-<n>`.
fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("qvoice-{}-{}", std::process::id(), N.fetch_add(1, Relaxed))
}

/// Opens a short-lived client (`qvoice-<pid>-<n>_<role>`) to ask the server something.
fn open_client(role: &str) -> Result<jack::Client, AudioError> {
    if !available() {
        return Err(AudioError::NoDevice(
            "libjack is not installed (install libjack-jackd2-0), or choose another --input/--output".into(),
        ));
    }
    let name = format!("{}_{role}", unique_name());
    jack::Client::new(&name, jack::ClientOptions::NO_START_SERVER)
        .map(|(client, _)| client)
        .map_err(|_| AudioError::NoDevice(NO_SERVER.into()))
}

/// A JACK capture (`input`) or playback device for `port` (`None`: the physical ports), and where its
/// stream must be connected.
///
/// Fails with [`AudioError::NoDevice`] when libjack is missing or no server answers, and with
/// [`AudioError::DeviceNotFound`] when the server has no such port or it points the wrong way (capture
/// needs a port that sends audio, playback one that receives it).
pub fn device(input: bool, port: Option<&str>) -> Result<(cpal::Device, JackRoute), AudioError> {
    let probe = open_client("probe")?;
    if let Some(p) = port {
        let found = probe.port_by_name(p).filter(|found| {
            let flags = found.flags();
            if input { flags.contains(jack::PortFlags::IS_OUTPUT) } else { flags.contains(jack::PortFlags::IS_INPUT) }
        });
        if found.is_none() {
            return Err(AudioError::DeviceNotFound(format!("jack:{p}")));
        }
    }
    drop(probe);
    let stem = unique_name();
    let auto = port.is_none();
    let made = if input {
        JackDevice::default_input_device(&stem, auto, false)
    } else {
        JackDevice::default_output_device(&stem, auto, false)
    };
    let d = made.map_err(|e| AudioError::NoDevice(format!("{NO_SERVER} ({e})")))?;
    let client = format!("{stem}{}", if input { "_in" } else { "_out" });
    let route = JackRoute { client, port: port.map(str::to_owned), input };
    Ok((d.into(), route))
}

/// What a running JACK server offers: its rate, its period and its audio ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JackServer {
    /// Sample rate (Hz).
    pub rate: u32,
    /// Period (frames per process cycle).
    pub period: u32,
    /// Audio ports as `(name, sends audio)`: a port that sends audio can be captured from.
    pub ports: Vec<(String, bool)>,
}

/// The running server's rate, period and audio ports; `None` when no server answers (or libjack is
/// missing).
pub fn server() -> Option<JackServer> {
    let client = open_client("list").ok()?;
    let ports = client
        .ports(None, Some("32 bit float mono audio"), jack::PortFlags::empty())
        .into_iter()
        .filter_map(|name| {
            let sends = client.port_by_name(&name)?.flags().contains(jack::PortFlags::IS_OUTPUT);
            Some((name, sends))
        })
        .collect();
    Some(JackServer { rate: client.sample_rate(), period: client.buffer_size(), ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_are_unique_per_stream() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("qvoice-{}-", std::process::id())));
    }

    #[test]
    fn routes_open_one_port_except_the_physical_playback_pair() {
        let r = |port: Option<&str>, input| JackRoute { client: "c".into(), port: port.map(str::to_owned), input };
        assert_eq!(r(None, true).channels(), 1);
        assert_eq!(r(None, false).channels(), 2);
        assert_eq!(r(Some("jack_thru:output_1"), true).channels(), 1);
        assert_eq!(r(Some("jack_thru:input_2"), false).channels(), 1);
    }
}
