//! The media engine: everything between a microphone and the other side's speaker.
//!
//! The session layer hands [`MediaEngine::start`] a bound UDP socket, the call's `MediaCrypto` and the
//! peer's address candidates; the engine then runs three threads until [`MediaHandle::stop`]:
//!
//! - **capture** (`qv-capture`): audio source → mute → encoder → bounded queue;
//! - **net** (`qv-net`): [`transport::net`], the only owner of the socket. A single-threaded tokio
//!   runtime waits on the socket, the encoder queue and the timers of the sans-IO [`transport`] at once;
//!   the transport owns the crypto state, checks every candidate pair (direct and through TURN relays),
//!   selects the path, follows the peer when its address changes, sends receiver reports and keepalives,
//!   and drops and counts malformed, unauthenticated and replayed datagrams;
//! - **playout** (`qv-playout`): paced by the sink; drains received frames into the adaptive jitter buffer,
//!   decodes or conceals (Opus FEC/PLC) one frame per device period.
//!
//! Frames move between threads by value through bounded queues, counters are relaxed atomics, and codec
//! and crypto write into caller buffers: nothing on the per-frame path allocates, locks or logs.
//! Submodules are plain code testable without I/O: [`jitter`] and [`impair`] take the time as an argument.

pub mod codec;
pub mod dsp;
pub(crate) mod engine;
pub mod impair;
pub mod io;
pub mod metrics;
pub mod transport;

// The pre-split paths stay valid (`media::audio`, `media::jitter`, ...).
pub use dsp::{drift, jitter, resample};
pub use io::{audio, device, echo};

pub use audio::{AudioError, AudioSink, AudioSource, Captured, WavRecorder, WavSink, WavSource};
pub use codec::{CodecError, CodecKind};
pub use device::{CpalSink, CpalSource, DeviceHealth, DeviceInfo, OpenedDevice, list_devices, list_devices_probed};
pub use echo::EchoLine;
pub use engine::{AudioDirection, AudioIn, AudioOut, MediaConfig, MediaEngine, MediaEvent, MediaHandle, check_devices};
pub use impair::Impairment;
pub use jitter::{JitterBuffer, JitterConfig};
pub use metrics::MetricsSnapshot;

/// Errors from starting or stopping the media engine.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// An audio device or file failed.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The codec could not be set up.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A socket or thread operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the engine was doing.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration cannot work (the text says why and what to change).
    #[error("invalid media configuration: {0}")]
    Config(String),
    /// A media thread did not stop in time and was abandoned (a hung audio driver).
    #[error("media thread {0} did not stop in time (audio driver hung); it was abandoned")]
    Stuck(&'static str),
    /// A media thread panicked.
    #[error("media thread {0} panicked")]
    ThreadPanicked(&'static str),
}
