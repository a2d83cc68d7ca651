//! The one stream of typed events the session layer emits, and the commands it takes. The headless CLI
//! prints events as JSON lines; the TUI folds them into its state. Both send the same commands.

use serde::{Deserialize, Serialize};

pub use crate::media::AudioDirection;
use crate::media::MetricsSnapshot;

/// How far a contact's identity key is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Pinned and verified out of band (safety number or SAS compared).
    Verified,
    /// Pinned on first use, not verified yet.
    Unverified,
    /// The registry now serves a different key than the pinned one: calls are blocked until re-verified.
    KeyChanged,
    /// Never seen before; will be pinned on first use.
    New,
    /// The user said the SAS did not match on a call with them: calls to them are blocked until
    /// `qvoice verify NAME`.
    Suspicious,
}

/// Why a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum EndReason {
    /// We hung up.
    LocalHangup,
    /// The peer hung up.
    RemoteHangup,
    /// The callee rejected the call.
    Rejected,
    /// The caller cancelled while it was ringing.
    Cancelled,
    /// Nobody answered before the ringing timeout.
    Missed,
    /// The callee was already in a call.
    Busy,
    /// The call was not answered, and the callee had no open event stream when it started ringing (a
    /// client that only polls could still have answered).
    Offline,
    /// One side cannot run the call as offered or answered: protocol version, capability, codec or frame
    /// duration (the text says which, as the refusing side wrote it).
    Incompatible(String),
    /// The callee's published prekey has expired: the callee must run qvoice once to publish a fresh
    /// one (or the registry serves a stale key).
    PrekeyExpired(String),
    /// No media from the peer for the configured timeout.
    PeerVanished,
    /// The handshake failed verification (the text says which check).
    SecurityFailure(String),
    /// No such user on the registry.
    UnknownUser,
    /// No usable audio device (the text says which and names the WAV options).
    NoAudio(String),
    /// We compared the SAS with the peer and it did not match: we hung up and marked them suspicious.
    SasMismatch,
    /// The media engine failed mid-call (the text says how).
    MediaFailed(String),
    /// No candidate pair worked after the keys were agreed (the text says what was tried and what to
    /// configure).
    NoMediaPath(String),
    /// Anything else (the text says what).
    Failed(String),
}

impl EndReason {
    /// A short human label for the UI.
    pub fn label(&self) -> String {
        match self {
            Self::LocalHangup => "you hung up".into(),
            Self::RemoteHangup => "peer hung up".into(),
            Self::Rejected => "rejected".into(),
            Self::Cancelled => "cancelled".into(),
            Self::Missed => "missed".into(),
            Self::Busy => "busy".into(),
            Self::Offline => "peer offline".into(),
            Self::Incompatible(s) => format!("incompatible: {s}"),
            Self::PrekeyExpired(s) => format!("callee's key expired: {s}"),
            Self::PeerVanished => "peer vanished (no media)".into(),
            Self::SecurityFailure(s) => format!("security check failed: {s}"),
            Self::UnknownUser => "no such user".into(),
            Self::NoAudio(s) => format!("no audio: {s}"),
            Self::SasMismatch => "SAS mismatch: you hung up".into(),
            Self::MediaFailed(s) => format!("media failed: {s}"),
            Self::NoMediaPath(s) => s.clone(),
            Self::Failed(s) => format!("failed: {s}"),
        }
    }
}

/// One contact as shown in a contacts list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContactView {
    pub username: String,
    pub display_name: Option<String>,
    pub online: bool,
    pub trust: Trust,
}

/// Which way a call goes, from our side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outgoing,
    Incoming,
}

/// One finished (or failed) call attempt, as kept in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// When it ended, ms since the Unix epoch.
    pub at_ms: u64,
    pub peer: String,
    pub direction: Direction,
    pub reason: EndReason,
    pub duration_ms: u64,
    /// An incoming call we never answered.
    pub missed: bool,
}

impl CallRecord {
    /// The short word the history pane shows after the name: the duration of a call that was answered,
    /// else what became of the attempt (`offline`, `no answer`, `missed`...).
    pub fn outcome(&self) -> String {
        if self.missed {
            return "missed".into();
        }
        if self.duration_ms > 0 {
            let s = self.duration_ms / 1000;
            return if s >= 3600 {
                format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
            } else {
                format!("{:02}:{:02}", s / 60, s % 60)
            };
        }
        match (&self.reason, self.direction) {
            (EndReason::Offline, _) => "offline".into(),
            (EndReason::Missed, Direction::Outgoing) => "no answer".into(),
            (EndReason::Rejected, Direction::Outgoing) => "declined".into(),
            (EndReason::Rejected, Direction::Incoming) => "rejected".into(),
            (EndReason::Busy, _) => "busy".into(),
            (EndReason::Cancelled, _) => "cancelled".into(),
            (EndReason::UnknownUser, _) => "no such user".into(),
            (EndReason::SasMismatch, _) | (EndReason::SecurityFailure(_), _) => "security".into(),
            (EndReason::NoAudio(_), _) => "no audio".into(),
            (EndReason::LocalHangup | EndReason::RemoteHangup, _) => "00:00".into(),
            _ => "failed".into(),
        }
    }
}

/// Everything the session layer reports. Serialized as `{"event": "<name>", ...fields}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
// Metrics is the big variant (one per second, moved once through a channel): boxing it would churn every
// consumer for no measurable gain.
#[allow(clippy::large_enum_variant)]
pub enum SessionEvent {
    /// Registered (or re-registered) with the registry.
    Registered { username: String, registry: String, reflexive_addr: Option<String> },
    /// The push event stream is up (true) or down and being retried (false).
    Connection { connected: bool, detail: String },
    /// The contact directory.
    Contacts { contacts: Vec<ContactView> },
    /// A contact came online or went offline.
    Presence { username: String, online: bool },
    /// Someone is calling us.
    IncomingCall { call_id: String, from: String, trust: Trust },
    /// Someone is calling while another call is in progress (call waiting). It keeps ringing for them;
    /// when our call ends and it still rings, it is reported as an [`SessionEvent::IncomingCall`].
    CallWaiting { call_id: String, from: String, trust: Trust },
    /// We sent an OFFER.
    Dialing { call_id: String, to: String },
    /// The callee's client has been told about the call (it is ringing there).
    Ringing { call_id: String, to: String },
    /// The handshake completed: compare this SAS with the peer.
    SasReady { call_id: String, peer: String, sas: String, trust: Trust },
    /// Keys are agreed; connectivity checks run on these candidates of the peer until a path works and
    /// its audio plays (then [`SessionEvent::Active`]).
    Connecting { call_id: String, peer: String, checking: Vec<String> },
    /// Media is flowing: the peer's first audio frame played.
    Active { call_id: String, peer: String, direction: Direction, codec: String, frame_ms: u8, path: String },
    /// The media path is known or changed (e.g. `direct 192.0.2.7:40000`,
    /// `relayed via 203.0.113.1:3478 to 198.51.100.7:40000`); `kind` is `direct` or `relayed`.
    Path { call_id: String, path: String, kind: Option<crate::media::transport::PathKind> },
    /// The first received audio frame was played: the peer is audible.
    AudioFlowing { call_id: String },
    /// Periodic media metrics of the active call.
    Metrics { call_id: String, metrics: MetricsSnapshot },
    /// The call ended.
    Ended { call_id: String, peer: String, reason: EndReason, duration_s: f64 },
    /// A contact's identity key changed: calls to or from them are blocked until `qvoice verify`.
    KeyWarning { username: String, pinned: String, offered: String },
    /// Recording started or stopped.
    Recording { on: bool, dir: Option<String> },
    /// Microphone muted or unmuted.
    Muted { on: bool },
    /// Audio devices to choose from, and the ones the next call will use (`default`, a device name,
    /// `silence`/`null`, or a WAV path).
    Devices { inputs: Vec<String>, outputs: Vec<String>, input: String, output: String },
    /// A file for us is waiting at the registry (`qvoice receive FILE_ID`).
    IncomingFile { file_id: String, from: String, size: u64, expires_ms: u64, trust: Trust },
    /// A file we sent or were sent left the registry (`delivered`, `discarded`, `refused`, `cancelled`,
    /// `expired`).
    FileClosed { file_id: String, peer: String, outcome: String, reason: Option<String> },
    /// Progress of a file transfer after each chunk: one we send (`direction` outgoing, keyed by `peer` and
    /// `path` as the command gave them; `file_id` is known from the first report on) or one we receive
    /// (incoming, keyed by `file_id`). `resumed` bytes were already at the registry when it (re)started.
    FileProgress {
        direction: Direction,
        peer: String,
        path: String,
        file_id: String,
        done: u64,
        total: u64,
        resumed: u64,
    },
    /// A file we sent is complete at the registry; it waits there for `to`.
    FileSent { to: String, path: String, file_id: String, name: String, size: u64 },
    /// A file we received was verified, decrypted and saved at `path`.
    FileSaved { file_id: String, from: String, path: String, size: u64 },
    /// A file we received was deleted at the registry without saving it, as asked.
    FileDiscarded { file_id: String },
    /// A transfer failed; `message` says why and what to do. `waiting` tells whether an incoming file is
    /// still at the registry (so it can be tried again).
    FileFailed { direction: Direction, peer: String, path: String, file_id: String, message: String, waiting: bool },
    /// The complete files waiting for us at the registry (at start-up, after a new one arrived, on request).
    Files { incoming: Vec<super::files::Incoming> },
    /// Something went wrong that the user should see (the text says what to do).
    Error { message: String },
    /// Call history saved by earlier runs, oldest first (sent once at start-up).
    History { entries: Vec<CallRecord> },
    /// Whether the audio devices chosen for the next call can be opened; `message` says what to set
    /// instead when they cannot (e.g. no sound card).
    Audio { usable: bool, message: Option<String> },
    /// The microphone (`direction` input) or speaker the current call uses: when its media starts, and
    /// after a switch during the call ([`SessionCommand::SetDevices`]; `switched`). `device` is spelled as
    /// `--input`/`--output` take it; `detail` says what was opened (a sound device's rate, channels and
    /// sample format, or "WAV file").
    AudioDevice { call_id: String, direction: AudioDirection, device: String, detail: String, switched: bool },
    /// A switch during the call could not be made: the call goes on with the previous device. `message`
    /// names the device and what to do.
    AudioSwitchFailed { call_id: String, direction: AudioDirection, device: String, message: String },
}

/// What a front end asks the session layer to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCommand {
    Dial(String),
    /// Accept the incoming call with this call id (empty: the one ringing now).
    Accept(String),
    /// Reject the incoming call with this call id (empty: the one ringing now).
    Reject(String),
    /// Hang up or cancel the current call.
    Hangup,
    SetMute(bool),
    SetRecording(bool),
    /// Mark a contact verified (after comparing the SAS or safety number).
    Verify(String),
    /// The SAS of the current call did not match: hang up, tell the peer why, mark them suspicious.
    SasMismatch,
    /// Append a finished call to the saved history.
    SaveHistory(CallRecord),
    RefreshContacts,
    /// Answer with [`SessionEvent::Devices`].
    ListDevices,
    /// Use these audio devices (same spellings as `--input`/`--output`): during a call the running media
    /// switches to them (reported by [`SessionEvent::AudioDevice`] or [`SessionEvent::AudioSwitchFailed`]),
    /// and they are used for the next calls and saved as `[audio] input`/`output` in the config file (once
    /// the switch worked, during a call).
    SetDevices {
        input: Option<String>,
        output: Option<String>,
    },
    /// Encrypt and upload a file (`~/` is the home folder) to a user, in the background: reported by
    /// [`SessionEvent::FileProgress`], then [`SessionEvent::FileSent`] or [`SessionEvent::FileFailed`].
    SendFile {
        to: String,
        path: String,
    },
    /// Download, verify and save an incoming file into the download folder.
    ReceiveFile(String),
    /// Delete an incoming file at the registry without saving it.
    DiscardFile(String),
    /// Answer with [`SessionEvent::Files`].
    ListFiles,
    Shutdown,
}
