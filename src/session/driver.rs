//! The session driver: the one place that awaits the registry and the clock. It runs the sans-IO
//! handshake state machines from `qvoice-proto`, starts and stops the media engine, and reports everything
//! as [`SessionEvent`]s. Front ends (headless CLI, TUI) send [`SessionCommand`]s.
//!
//! One call at a time: an incoming call while another is in progress keeps ringing and is reported as
//! waiting; it is offered when the current call ends (we never answer `busy` for the user: that would tell
//! any caller, stranger or not, that we are in a call). Each call id is handled once, however often the
//! registry delivers it. No audio is sent before the handshake completed and verified (the media engine
//! only gets keys after REVEAL).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use qvoice_proto::{
    Answer, Callee, CalleeParams, Caller, CallerParams, Candidate, CandidateKind, Codec, CodecOffer, IdentitySecret,
    Offer, PrekeySecret, Refusal, Reveal, SessionKeys, Username, b64,
};
use qvoice_wire::{CallState, EndKind, ErrorCode, Event as RegistryEvent};
use tokio::sync::mpsc;

use super::client::{ClientError, EndRequest, RegistryClient};
use super::events::{AudioDirection, ContactView, Direction, EndReason, SessionCommand, SessionEvent, Trust};
use super::files::{Files, Transfers};
use super::store::{CallHistory, ContactBook, Keystore};
use super::waiting::SeenCalls;
use crate::media::transport::{RelayAllocation, TurnServer, net as media_net};
use crate::media::{AudioIn, AudioOut, CodecKind, Impairment, MediaConfig, MediaEngine, MediaEvent, MediaHandle};

/// Everything the driver needs.
#[derive(Debug)]
pub struct SessionOptions {
    pub registry_url: String,
    pub keystore: Keystore,
    pub contacts: ContactBook,
    pub display_name: Option<String>,
    pub input: AudioIn,
    pub output: AudioOut,
    /// Record each call into a subfolder of this folder.
    pub record_dir: Option<PathBuf>,
    /// Record from the start of each call.
    pub record_on: bool,
    pub auto_answer: bool,
    pub codecs: Vec<Codec>,
    pub frame_ms: u8,
    pub obfuscation: bool,
    pub media_port: u16,
    pub peer_timeout: Duration,
    pub impairment: Impairment,
    /// Fall back to long-polling `/call/pending` when `/events` is unavailable.
    pub poll_fallback: bool,
    /// Never open `/events`: learn of incoming calls by long-polling `/call/pending` and follow calls
    /// through `/call/status` (the seed's polling client; docs/REGISTRY.md, "Polling-only clients").
    pub poll_only: bool,
    /// Rotate the prekey at start-up when it is older than this.
    pub prekey_max_age: Option<Duration>,
    /// Interval of [`SessionEvent::Metrics`] during a call.
    pub metrics_interval: Duration,
    /// Start even when the registry cannot be reached (the TUI): report `Connection { connected: false }`,
    /// the pinned contacts and the saved history, and keep retrying the registration with backoff.
    pub start_offline: bool,
    /// Where received files are saved ([`SessionCommand::ReceiveFile`]); `None`: the XDG download folder.
    pub download_dir: Option<PathBuf>,
    /// Report the files waiting for us ([`SessionEvent::Files`]) after each registration and each new
    /// file (the TUI's Files pane); otherwise only on [`SessionCommand::ListFiles`].
    pub list_files: bool,
    /// Devices chosen with [`SessionCommand::SetDevices`] are saved here (`[audio] input`/`output`; the
    /// rest of the file is kept). `None`: they hold until the session ends (the demo, headless calls).
    pub config_file: Option<PathBuf>,
}

impl SessionOptions {
    /// Options with the defaults of `config.example.toml`.
    pub fn new(registry_url: String, keystore: Keystore, contacts: ContactBook) -> Self {
        Self {
            registry_url,
            keystore,
            contacts,
            display_name: None,
            input: AudioIn::Device(None),
            output: AudioOut::Device(None),
            record_dir: None,
            record_on: false,
            auto_answer: false,
            codecs: vec![Codec::Opus, Codec::Pcm16],
            frame_ms: 20,
            obfuscation: false,
            media_port: 0,
            peer_timeout: Duration::from_secs(10),
            impairment: Impairment::default(),
            poll_fallback: true,
            poll_only: false,
            prekey_max_age: None,
            metrics_interval: Duration::from_millis(500),
            start_offline: false,
            download_dir: None,
            list_files: false,
            config_file: None,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The call's media socket with what gathering found on it (our TURN allocation), carried from the
/// OFFER/ANSWER to the media engine.
struct MediaSocket {
    socket: UdpSocket,
    relay: Option<RelayAllocation>,
}

/// An active call's media between keys and audio: the session says "connecting" until audio flows.
struct MediaProgress {
    codec: Codec,
    frame_ms: u8,
    path: Option<String>,
    active_sent: bool,
}

/// Where a call is.
enum Call {
    /// We sent an OFFER and wait for the ANSWER.
    Dialing { call_id: String, peer: String, caller: Caller, socket: MediaSocket, since: Instant },
    /// Someone calls us; waiting for the user (or auto-answer).
    Incoming { call_id: String, peer: String, offer: Offer, since: Instant },
    /// We answered and wait for the REVEAL.
    Answered { call_id: String, peer: String, callee: Callee, socket: MediaSocket, since: Instant },
    /// Media flows. The handle sits behind a mutex only to make the driver `Sync` (its event receiver
    /// is not); the driver is its only user, so the lock is never contended.
    Active { call_id: String, peer: String, media: std::sync::Mutex<MediaHandle>, since: Instant, direction: Direction },
}

impl Call {
    fn id(&self) -> &str {
        match self {
            Self::Dialing { call_id, .. }
            | Self::Incoming { call_id, .. }
            | Self::Answered { call_id, .. }
            | Self::Active { call_id, .. } => call_id,
        }
    }

    fn peer(&self) -> &str {
        match self {
            Self::Dialing { peer, .. }
            | Self::Incoming { peer, .. }
            | Self::Answered { peer, .. }
            | Self::Active { peer, .. } => peer,
        }
    }
}

/// How long a call may ring (or wait for the callee) before we give up locally, should the registry never
/// tell us (it forgot the call in a restart, or the push stream dropped the event): its ringing timeout
/// (45 s by default) plus a margin.
const RING_DEADLINE: Duration = Duration::from_secs(60);
/// How long the callee waits for the caller's REVEAL after answering.
const REVEAL_DEADLINE: Duration = Duration::from_secs(30);
/// A prekey is replaced when it is this close to its expiry, whatever the rotation setting.
const PREKEY_RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(2 * 86_400);
/// How often a running client checks whether its prekey is due for renewal.
const PREKEY_CHECK: Duration = Duration::from_secs(3_600);

/// Messages from helper tasks into the driver loop.
enum Internal {
    Registry(RegistryEvent),
    Media { call_id: String, event: MediaEvent },
    PushState { up: bool },
}

struct Driver {
    opts: SessionOptions,
    client: RegistryClient,
    identity: Arc<IdentitySecret>,
    prekeys: Vec<PrekeySecret>,
    events: mpsc::Sender<SessionEvent>,
    internal_tx: mpsc::Sender<Internal>,
    call: Option<Call>,
    /// Our address as the registry saw it (its IP is a candidate).
    reflexive_ip: Option<IpAddr>,
    push_up: bool,
    recording: bool,
    muted: bool,
    /// The callee of the call we are dialing had no open event stream when it started ringing.
    dialed_offline: bool,
    /// Set from keys agreed until audio flows (see [`MediaProgress`]).
    progress: Option<MediaProgress>,
    /// Call ids already handled (each incoming OFFER is acted on once).
    seen: SeenCalls,
    /// Calls that rang while another call was in progress, oldest first.
    waiting: Vec<String>,
    /// The last call that ended here on the peer's word (BYE) without our telling the registry: the peer
    /// posts that hang-up, and until it lands the registry still counts us in that call.
    ended_unposted: Option<String>,
    /// Usernames in the last directory listing: presence of anyone else means a new registration.
    known: std::collections::HashSet<String>,
    /// File transfers running in the background.
    transfers: Transfers,
}

/// The bundled speech clip (espeak-ng, 16 kHz mono), offered as a microphone where there is no sound card.
const BUNDLED_CLIP: &[u8] = include_bytes!("../../tests/assets/speech16k.wav");
/// The first and the longest wait between registration attempts while the registry is unreachable.
const REGISTER_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// What a user without a sound card can set instead, in config keys that exist.
fn no_audio_hint(what: &str) -> String {
    format!(
        "no sound card ({what}): press s to pick a WAV file or the test clip, or set [audio] input = \"FILE.wav\" \
         (or \"silence\") and output = \"null\" (or \"FILE.wav\") in config.toml"
    )
}

/// Runs the session until [`SessionCommand::Shutdown`] or until `commands` closes. Registers first.
///
/// Fails when the registry cannot be reached for the initial registration or refuses it.
pub async fn run(
    opts: SessionOptions,
    mut commands: mpsc::Receiver<SessionCommand>,
    events: mpsc::Sender<SessionEvent>,
) -> anyhow::Result<()> {
    let identity = Arc::new(IdentitySecret::from_bytes(&opts.keystore.identity.to_bytes()));
    let client = RegistryClient::new(&opts.registry_url, opts.keystore.username.clone(), identity.clone())?;
    let (internal_tx, mut internal_rx) = mpsc::channel(256);
    let data_dir = opts.contacts.data_dir().map_or_else(|| PathBuf::from("."), std::path::Path::to_owned);
    let download_dir = opts.download_dir.clone().unwrap_or_else(|| super::files::default_download_dir(None));
    let transfers =
        Transfers::new(Files::new(client.clone(), identity.clone(), &data_dir), download_dir, events.clone());
    let mut d = Driver {
        prekeys: opts.keystore.prekey_secrets(),
        recording: opts.record_on,
        opts,
        client,
        identity,
        events,
        internal_tx,
        call: None,
        reflexive_ip: None,
        push_up: false,
        muted: false,
        dialed_offline: false,
        progress: None,
        seen: SeenCalls::default(),
        waiting: Vec::new(),
        ended_unposted: None,
        known: std::collections::HashSet::new(),
        transfers,
    };
    d.emit_saved_history().await;
    d.check_audio().await;
    let mut stream_task = None;
    let mut retry_in = REGISTER_RETRY.0;
    let retry = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry);
    match d.register().await {
        Ok(()) => {
            let (client, tx) = (d.client.clone(), d.internal_tx.clone());
            stream_task = Some(tokio::spawn(event_stream(client, tx, d.opts.poll_fallback, d.opts.poll_only)));
        }
        Err(e) if d.opts.start_offline => {
            d.offline(&e, retry_in).await;
            retry.as_mut().reset(tokio::time::Instant::now() + retry_in);
        }
        Err(e) => return Err(e),
    }
    let mut metrics_tick = tokio::time::interval(d.opts.metrics_interval);
    metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status_poll = tokio::time::interval(Duration::from_millis(250));
    status_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut deadlines = tokio::time::interval(Duration::from_secs(1));
    deadlines.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut prekey_check = tokio::time::interval_at(tokio::time::Instant::now() + PREKEY_CHECK, PREKEY_CHECK);
    prekey_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result = loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None | Some(SessionCommand::Shutdown) => break Ok(()),
                Some(cmd) => d.command(cmd).await,
            },
            Some(msg) = internal_rx.recv() => d.internal(msg).await,
            _ = metrics_tick.tick(), if matches!(d.call, Some(Call::Active { .. })) => d.emit_metrics().await,
            _ = status_poll.tick(), if !d.push_up && d.in_setup() => d.poll_status().await,
            _ = deadlines.tick(), if d.in_setup() => d.check_deadlines().await,
            _ = prekey_check.tick(), if stream_task.is_some() => d.renew_prekey().await,
            () = &mut retry, if stream_task.is_none() => match d.register().await {
                Ok(()) => {
                    let (client, tx) = (d.client.clone(), d.internal_tx.clone());
                    stream_task = Some(tokio::spawn(event_stream(client, tx, d.opts.poll_fallback, d.opts.poll_only)));
                }
                Err(e) => {
                    retry_in = (retry_in * 2).min(REGISTER_RETRY.1);
                    d.offline(&e, retry_in).await;
                    retry.as_mut().reset(tokio::time::Instant::now() + retry_in);
                }
            },
        }
        if d.call.is_none() {
            // Some failures end a call without end_call (the call was taken to advance it).
            d.reset_call_state(None).await;
        }
        if d.call.is_none() && !d.waiting.is_empty() {
            d.offer_waiting().await;
        }
    };
    d.end_call(EndReason::LocalHangup, true).await;
    if let Some(t) = stream_task {
        t.abort();
    }
    result
}

/// Keeps `/events` open, reconnecting with backoff; falls back to long-polling `/call/pending` when the
/// registry has no push stream, or only polls when `poll_only`.
async fn event_stream(client: RegistryClient, tx: mpsc::Sender<Internal>, poll_fallback: bool, poll_only: bool) {
    let (ev_tx, mut ev_rx) = mpsc::channel::<RegistryEvent>(64);
    let fwd_tx = tx.clone();
    let forward = tokio::spawn(async move {
        while let Some(ev) = ev_rx.recv().await {
            let up = matches!(ev, RegistryEvent::Ready { .. });
            if up && fwd_tx.send(Internal::PushState { up: true }).await.is_err() {
                return;
            }
            if fwd_tx.send(Internal::Registry(ev)).await.is_err() {
                return;
            }
        }
    });
    if poll_only {
        poll_pending(&client, &ev_tx).await;
        forward.abort();
        return;
    }
    let mut backoff = Duration::from_millis(200);
    // An outage retries every few seconds; the log says so once a minute, with a count.
    let mut quiet = crate::logging::Throttle::new(Duration::from_secs(60));
    loop {
        let err = match client.stream_events(&ev_tx).await {
            Ok(()) => break,
            Err(e) => e,
        };
        if tx.send(Internal::PushState { up: false }).await.is_err() {
            break;
        }
        let no_push = matches!(&err, ClientError::Api { status: 404 | 405 | 501, .. });
        if no_push && poll_fallback {
            tracing::warn!("registry has no /events; falling back to polling /call/pending");
            poll_pending(&client, &ev_tx).await;
            break;
        }
        if let Some(skipped) = quiet.check(std::time::Instant::now()) {
            tracing::info!(error = %err, "event stream down; retrying in {backoff:?}{}", crate::logging::repeats(skipped));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
        if matches!(err, ClientError::Api { .. }) {
            backoff = Duration::from_secs(10);
        }
    }
    forward.abort();
}

/// The seed's polling for incoming calls, as a long-poll.
async fn poll_pending(client: &RegistryClient, tx: &mpsc::Sender<RegistryEvent>) {
    let mut seen = std::collections::HashSet::new();
    let mut quiet = crate::logging::Throttle::new(Duration::from_secs(60));
    loop {
        match client.pending(25).await {
            Ok(p) => {
                for call in p.calls {
                    if seen.insert(call.call_id.clone()) && tx.send(RegistryEvent::IncomingCall(call)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                if let Some(skipped) = quiet.check(std::time::Instant::now()) {
                    tracing::info!(error = %e, "polling failed; retrying every 2 s{}", crate::logging::repeats(skipped));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Our global IPv6 address, if the host has a route for IPv6 (found like [`local_ip_towards`], with a
/// documentation-prefix destination: nothing is sent).
fn local_ipv6() -> Option<IpAddr> {
    let probe = UdpSocket::bind("[::]:0").ok()?;
    probe.connect("[2001:db8::1]:9").ok()?;
    let ip = probe.local_addr().ok()?.ip();
    match ip {
        IpAddr::V6(v6) if !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80 => {
            Some(ip)
        }
        _ => None,
    }
}

/// The local IPv4 address used to reach `registry` (the interface the OS routes through), learned without
/// sending anything: `connect` on a UDP socket only selects a route. IPv4 only: IPv6 comes from
/// [`local_ipv6`].
fn local_ip_towards(registry_url: &str) -> Option<IpAddr> {
    let url = reqwest::Url::parse(registry_url).ok()?;
    let (host, port) = (url.host_str()?.to_owned(), url.port_or_known_default()?);
    let target = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).ok()?.find(SocketAddr::is_ipv4)?;
    let probe = UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect(target).ok()?;
    Some(probe.local_addr().ok()?.ip())
}

/// What the user reads when the call's audio cannot start: the device's problem and the flags and config
/// keys that replace a sound card (every front end has `--input` / `--output`).
fn no_audio_text(e: &crate::media::AudioError) -> String {
    match e {
        crate::media::AudioError::NoDevice(detail) => format!(
            "no usable audio device ({}); without a sound card use a WAV file as microphone and a file or \
             nothing as speaker: `--input FILE.wav --output null`, or `input = \"FILE.wav\"` and \
             `output = \"null\"` under [audio] in config.toml",
            detail.trim_end_matches('.')
        ),
        other => other.to_string(),
    }
}

fn codec_kind(c: Codec) -> CodecKind {
    match c {
        Codec::Opus => CodecKind::Opus,
        Codec::Pcm16 => CodecKind::Pcm,
    }
}

/// The codecs we run, in `codecs` order, each at every protocol frame duration the media engine runs it
/// at (docs/PROTOCOL.md, "Codecs and frame durations"): this is what an OFFER lists and what [`choose`]
/// matches an incoming OFFER against.
///
/// [`choose`]: qvoice_proto::choose
fn codec_offers(codecs: &[Codec]) -> Vec<CodecOffer> {
    codecs
        .iter()
        .map(|&c| {
            let ms: Vec<u8> =
                c.protocol_durations().iter().filter(|&d| codec_kind(c).frame_samples(d).is_ok()).collect();
            CodecOffer::new(c, &ms)
        })
        .filter(|o| !o.durations.is_empty())
        .collect()
}

/// The reason we give the registry when the peer's handshake messages fail verification.
const VERIFICATION_FAILED: &str = "handshake verification failed";

/// What we tell the other party (through the registry) when we end a call for `reason`.
fn end_kind(reason: &EndReason) -> EndKind {
    match reason {
        EndReason::LocalHangup
        | EndReason::RemoteHangup
        | EndReason::Rejected
        | EndReason::Cancelled
        | EndReason::Offline
        | EndReason::UnknownUser => EndKind::Hangup,
        EndReason::Busy => EndKind::Busy,
        EndReason::Incompatible(_) | EndReason::PrekeyExpired(_) => EndKind::Incompatible,
        EndReason::Missed => EndKind::Timeout,
        EndReason::PeerVanished => EndKind::PeerVanished,
        EndReason::SecurityFailure(_) | EndReason::SasMismatch => EndKind::Security,
        EndReason::NoAudio(_) | EndReason::MediaFailed(_) => EndKind::MediaFailed,
        EndReason::NoMediaPath(_) => EndKind::NoMediaPath,
        EndReason::Failed(_) => EndKind::Error,
    }
}

/// How a call the registry reports as ended in `state` (with the ending party's `kind`) ends for us.
fn map_end_state(state: CallState, reason: Option<String>, kind: Option<EndKind>, we_are_caller: bool) -> EndReason {
    let by_peer = matches!(state, CallState::Rejected | CallState::Cancelled | CallState::Ended);
    match (state, kind) {
        (CallState::Rejected, Some(EndKind::Busy)) => EndReason::Busy,
        (CallState::Rejected | CallState::Cancelled, Some(EndKind::Incompatible)) => {
            EndReason::Incompatible(reason.unwrap_or_else(|| "the peer cannot run this call".into()))
        }
        (_, Some(EndKind::Security)) if by_peer => EndReason::SecurityFailure(format!(
            "the peer refused the call: {}",
            reason.as_deref().unwrap_or("our handshake messages failed its checks")
        )),
        (CallState::Rejected | CallState::Cancelled, Some(EndKind::Timeout)) => EndReason::Missed,
        (CallState::Ended, Some(EndKind::PeerVanished)) => EndReason::PeerVanished,
        (CallState::Ended, Some(EndKind::NoMediaPath)) => {
            EndReason::NoMediaPath(reason.unwrap_or_else(|| "no media path".into()))
        }
        (_, Some(EndKind::Error | EndKind::Unknown)) if by_peer => {
            EndReason::Failed(reason.unwrap_or_else(|| "the peer ended the call with an error".into()))
        }
        (CallState::Rejected, _) => EndReason::Rejected,
        (CallState::Cancelled, _) => EndReason::Cancelled,
        (CallState::Missed, _) => EndReason::Missed,
        (CallState::Busy, _) => EndReason::Busy,
        (CallState::Ended, _) => EndReason::RemoteHangup,
        (CallState::Failed, _) => EndReason::Failed(reason.unwrap_or_else(|| "handshake did not complete".into())),
        (other, _) => EndReason::Failed(format!(
            "registry reported {other:?} for a call we {}",
            if we_are_caller { "placed" } else { "received" }
        )),
    }
}

impl Driver {
    /// The registry could not be reached: say so, show the pinned contacts (presence unknown, shown offline).
    async fn offline(&mut self, e: &anyhow::Error, retry_in: Duration) {
        tracing::info!(error = %format!("{e:#}"), "registry unreachable; retrying in {retry_in:?}");
        let why = match e.downcast_ref::<ClientError>() {
            Some(ClientError::Unreachable { .. }) | None => "registry unreachable".to_owned(),
            Some(other) => other.to_string(),
        };
        let detail = format!("{why}; retrying in {} s", retry_in.as_secs());
        self.emit(SessionEvent::Connection { connected: false, detail }).await;
        let contacts = self
            .opts
            .contacts
            .contacts
            .keys()
            .map(|name| ContactView {
                trust: self.opts.contacts.trust(name),
                username: name.clone(),
                display_name: None,
                online: false,
            })
            .collect();
        self.emit(SessionEvent::Contacts { contacts }).await;
    }

    fn history(&self) -> Option<CallHistory> {
        self.opts.contacts.data_dir().map(CallHistory::in_dir)
    }

    async fn emit_saved_history(&self) {
        match self.history().map(|h| h.load()) {
            Some(Ok(entries)) if !entries.is_empty() => self.emit(SessionEvent::History { entries }).await,
            Some(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "could not read the call history"),
            _ => {}
        }
    }

    /// Opens the chosen sound devices for a moment (when they are devices, not files) and reports whether
    /// a call could use them, so front ends can say so before dialling rather than after the peer answered.
    async fn check_audio(&self) {
        let (input, output) = (self.opts.input.clone(), self.opts.output.clone());
        let probe = tokio::task::spawn_blocking(move || {
            let mut missing = Vec::new();
            if let AudioIn::Device(name) = &input
                && crate::media::CpalSource::probe(name.as_deref(), 960).is_err()
            {
                missing.push("no microphone");
            }
            if let AudioOut::Device(name) = &output
                && crate::media::CpalSink::probe(name.as_deref(), 960).is_err()
            {
                missing.push("no speaker");
            }
            missing
        })
        .await;
        let missing = probe.unwrap_or_default();
        let message = (!missing.is_empty()).then(|| no_audio_hint(&missing.join(", ")));
        self.emit(SessionEvent::Audio { usable: missing.is_empty(), message }).await;
    }

    /// Writes the bundled clip into the data dir (once) and returns its path, for the device picker.
    fn bundled_clip(&self) -> Option<String> {
        let path = self.opts.contacts.data_dir()?.join("test-clip.wav");
        if !path.exists() {
            super::store::write_atomic(&path, BUNDLED_CLIP, 0o600).ok()?;
        }
        Some(path.display().to_string())
    }

    async fn emit(&self, ev: SessionEvent) {
        // A front end that went away is handled by the command channel closing.
        let _ = self.events.send(ev).await;
    }

    async fn error(&self, message: String) {
        tracing::warn!("{message}");
        self.emit(SessionEvent::Error { message }).await;
    }

    /// Whether the current prekey is due for rotation: older than the configured rotation age, or (even
    /// with rotation off) within [`PREKEY_RENEW_BEFORE_EXPIRY`] of its expiry.
    fn prekey_due(&self) -> bool {
        let lifetime = Duration::from_millis(qvoice_proto::PREKEY_LIFETIME_MS);
        let limit = lifetime.saturating_sub(PREKEY_RENEW_BEFORE_EXPIRY);
        let max_age = self.opts.prekey_max_age.map_or(limit, |a| a.min(limit));
        let age = now_ms().saturating_sub(self.opts.keystore.current_prekey_created_ms());
        u128::from(age) > max_age.as_millis()
    }

    /// Long-running clients renew their prekey before it expires: rotate and publish when due.
    async fn renew_prekey(&mut self) {
        if !self.prekey_due() || self.call.is_some() {
            return;
        }
        if let Err(e) = self.register().await {
            self.error(format!("could not publish a new prekey: {e:#}")).await;
        }
    }

    async fn register(&mut self) -> anyhow::Result<()> {
        if self.prekey_due() {
            let id = self.opts.keystore.rotate_prekey(now_ms())?;
            self.prekeys = self.opts.keystore.prekey_secrets();
            tracing::info!(id, "rotated prekey");
        }
        let prekey = self.opts.keystore.signed_prekey();
        let port = (self.opts.media_port != 0).then_some(self.opts.media_port);
        let resp = self
            .client
            .register(&prekey, self.opts.display_name.as_deref(), port)
            .await
            .context("registering with the registry")?;
        self.reflexive_ip = resp.observed_addr.as_deref().and_then(|a| a.parse::<SocketAddr>().ok()).map(|a| a.ip());
        self.emit(SessionEvent::Registered {
            username: resp.username,
            registry: self.client.base_url().to_owned(),
            reflexive_addr: resp.observed_addr,
        })
        .await;
        self.refresh_contacts().await;
        if self.opts.list_files {
            self.transfers.list(self.prekey_copies());
        }
        Ok(())
    }

    /// Our prekey secrets, for a background transfer to own.
    fn prekey_copies(&self) -> Vec<PrekeySecret> {
        self.prekeys.iter().map(|p| PrekeySecret::from_seed(p.id(), &p.to_seed())).collect()
    }

    async fn refresh_contacts(&mut self) {
        match self.client.users().await {
            Ok(users) => {
                let me = self.client.username().as_str().to_owned();
                let contacts = users
                    .into_iter()
                    .filter(|u| u.username != me)
                    .map(|u| ContactView {
                        trust: self.opts.contacts.trust(&u.username),
                        username: u.username,
                        // A registry may not have checked it: no bidi or invisible characters on screen.
                        display_name: u
                            .display_name
                            .filter(|d| qvoice_proto::names::check_display_name(d).is_ok() && !d.is_empty()),
                        online: u.online,
                    })
                    .collect::<Vec<ContactView>>();
                self.known = contacts.iter().map(|c| c.username.clone()).collect();
                self.emit(SessionEvent::Contacts { contacts }).await;
            }
            Err(e) => self.error(format!("could not load contacts: {e}")).await,
        }
    }

    /// Binds the call's UDP socket (dual-stack where the host has IPv6) and gathers the addresses the
    /// peer may reach it at: host addresses, server-reflexive ones from STUN Binding on this very socket,
    /// and a relayed one from a TURN allocation, with servers and credentials from the registry. Runs the
    /// blocking part (name resolution, gathering, bounded by 1.5 s) off the async threads.
    async fn bind_media(&self) -> anyhow::Result<(MediaSocket, Vec<Candidate>)> {
        let servers = match self.client.media_servers().await {
            Ok(s) => s,
            Err(e) => {
                // An older registry without the endpoint, or a hiccup: host candidates still work on a LAN.
                tracing::info!(error = %e, "no STUN/TURN servers from the registry");
                Default::default()
            }
        };
        let (port, url, reflexive) = (self.opts.media_port, self.client.base_url().to_owned(), self.reflexive_ip);
        tokio::task::spawn_blocking(move || {
            let (socket, v6) =
                media_net::bind(port).with_context(|| format!("binding UDP port {port} for media"))?;
            let port = socket.local_addr()?.port();
            let mut ips: Vec<IpAddr> = Vec::new();
            if let Some(ip) = local_ip_towards(&url) {
                ips.push(ip);
            }
            if v6 && let Some(ip) = local_ipv6() {
                ips.push(ip);
            }
            if ips.is_empty() {
                ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            let host: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
            let resolve = |s: &str| -> Option<SocketAddr> {
                let mut addrs = std::net::ToSocketAddrs::to_socket_addrs(s).ok()?.collect::<Vec<_>>();
                addrs.sort_by_key(|a| !a.is_ipv4());
                addrs.into_iter().find(|a| v6 || a.is_ipv4())
            };
            let stun: Vec<SocketAddr> = servers.stun.iter().filter_map(|s| resolve(s)).collect();
            let turn = servers.turn.iter().find_map(|t| {
                Some(TurnServer { addr: resolve(&t.server)?, username: t.username.clone(), password: t.password.clone() })
            });
            let mut gathered = media_net::gather(&socket, v6, &stun, turn.as_ref(), &host)?;
            for p in &gathered.problems {
                tracing::warn!("{p}");
            }
            // Without a STUN answer, the address the registry saw is our best guess at the NAT's mapping
            // (right for port-preserving NATs).
            if gathered.stun_server.is_none()
                && let Some(ip) = reflexive.filter(|ip| ip.is_ipv4() && !host.iter().any(|h| h.ip() == *ip))
            {
                let at = host.len().min(gathered.candidates.len());
                gathered.candidates.insert(at, Candidate(SocketAddr::new(ip, port), CandidateKind::ServerReflexive));
                gathered.candidates.truncate(qvoice_proto::MAX_CANDIDATES);
            }
            tracing::info!(
                candidates = ?gathered.candidates.iter().map(|c| format!("{} {}", c.kind().name(), c.addr())).collect::<Vec<_>>(),
                "gathered media candidates"
            );
            Ok((MediaSocket { socket, relay: gathered.relay }, gathered.candidates))
        })
        .await
        .context("media socket task failed")?
    }

    async fn command(&mut self, cmd: SessionCommand) {
        match cmd {
            SessionCommand::Dial(name) => self.dial(name).await,
            SessionCommand::Accept(id) => {
                let id = self.incoming_id(id);
                self.accept(&id).await;
            }
            SessionCommand::Reject(id) => {
                let id = self.incoming_id(id);
                if matches!(&self.call, Some(Call::Incoming { call_id, .. }) if *call_id == id) {
                    self.end_call(EndReason::Rejected, true).await;
                }
            }
            SessionCommand::Hangup => {
                let reason = match self.call {
                    Some(Call::Dialing { .. }) => EndReason::Cancelled,
                    Some(Call::Incoming { .. }) => EndReason::Rejected,
                    _ => EndReason::LocalHangup,
                };
                self.end_call(reason, true).await;
            }
            SessionCommand::SetMute(on) => {
                self.muted = on;
                if let Some(Call::Active { media, .. }) = &self.call
                    && let Ok(m) = media.lock()
                {
                    m.set_mute(on);
                }
                self.emit(SessionEvent::Muted { on }).await;
            }
            SessionCommand::SetRecording(on) => self.set_recording(on).await,
            SessionCommand::SasMismatch => {
                let Some(peer) = self.call.as_ref().map(|c| c.peer().to_owned()) else { return };
                if let Err(e) = self.opts.contacts.mark_suspicious(&peer) {
                    self.error(format!("could not mark {peer} suspicious: {e:#}")).await;
                }
                tracing::warn!(%peer, "SAS mismatch: hanging up and marking the contact suspicious");
                self.end_call(EndReason::SasMismatch, true).await;
                self.refresh_contacts().await;
            }
            SessionCommand::SaveHistory(mut rec) => {
                if rec.at_ms == 0 {
                    rec.at_ms = now_ms();
                }
                if let Some(Err(e)) = self.history().map(|h| h.append(&rec)) {
                    tracing::warn!(error = %format!("{e:#}"), "could not save the call history");
                }
            }
            SessionCommand::Verify(name) => match self.opts.contacts.verify(&name) {
                Ok(()) => self.refresh_contacts().await,
                Err(e) => self.error(format!("{e:#}")).await,
            },
            SessionCommand::RefreshContacts => self.refresh_contacts().await,
            SessionCommand::ListDevices => self.list_devices().await,
            SessionCommand::SetDevices { input, output } => self.set_devices(input, output).await,
            SessionCommand::SendFile { to, path } => self.transfers.send(to, path),
            SessionCommand::ReceiveFile(id) => self.transfers.receive(id, self.prekey_copies()),
            SessionCommand::DiscardFile(id) => self.transfers.discard(id),
            SessionCommand::ListFiles => self.transfers.list(self.prekey_copies()),
            SessionCommand::Shutdown => {}
        }
    }

    /// During a call, asks the media engine to switch (the choice is kept and saved when it reports the
    /// switch worked, see [`Driver::device_switched`]); otherwise the choice is for the next call, and saved.
    async fn set_devices(&mut self, input: Option<String>, output: Option<String>) {
        if let Some(Call::Active { media, .. }) = &self.call {
            if let Ok(m) = media.lock() {
                if let Some(i) = &input {
                    m.switch_input(AudioIn::from_spec(i));
                }
                if let Some(o) = &output {
                    m.switch_output(AudioOut::from_spec(o));
                }
            }
            return;
        }
        if let Some(i) = input {
            self.opts.input = AudioIn::from_spec(&i);
            self.save_device(AudioDirection::Input, &i).await;
        }
        if let Some(o) = output {
            self.opts.output = AudioOut::from_spec(&o);
            self.save_device(AudioDirection::Output, &o).await;
        }
        tracing::info!(input = %self.opts.input.spec(), output = %self.opts.output.spec(), "audio devices for the next call");
        self.list_devices().await;
        self.check_audio().await;
    }

    /// The running call now uses `spec`: the next calls will too, and the config file remembers it.
    async fn device_switched(&mut self, dir: AudioDirection, spec: &str) {
        match dir {
            AudioDirection::Input => self.opts.input = AudioIn::from_spec(spec),
            AudioDirection::Output => self.opts.output = AudioOut::from_spec(spec),
        }
        self.save_device(dir, spec).await;
        // It opened, so the "no usable audio device" warning (if any) no longer holds.
        self.emit(SessionEvent::Audio { usable: true, message: None }).await;
    }

    /// Writes `[audio] input`/`output` into the config file (when the session has one). A failure is
    /// reported and changes nothing else: the choice holds until the session ends.
    async fn save_device(&self, dir: AudioDirection, spec: &str) {
        let Some(path) = self.opts.config_file.clone() else { return };
        let key = match dir {
            AudioDirection::Input => "input",
            AudioDirection::Output => "output",
        };
        let value = spec.to_owned();
        let p = path.clone();
        let saved = tokio::task::spawn_blocking(move || crate::config::save_audio_choice(&p, key, &value)).await;
        match saved {
            Ok(Ok(())) => tracing::info!("saved [audio] {key} = {spec:?} in {}", path.display()),
            Ok(Err(e)) => {
                self.error(format!(
                    "could not save the {} choice in {} ({e:#}); it holds until qvoice exits",
                    dir.noun(),
                    path.display()
                ))
                .await;
            }
            Err(e) => self.error(format!("saving the {} choice failed: {e}", dir.noun())).await,
        }
    }

    /// A call exists but media does not flow yet.
    fn in_setup(&self) -> bool {
        matches!(self.call, Some(Call::Dialing { .. } | Call::Incoming { .. } | Call::Answered { .. }))
    }

    /// Ends a call whose setup outlived its deadline without word from the registry.
    async fn check_deadlines(&mut self) {
        let reason = match &self.call {
            Some(Call::Dialing { since, .. } | Call::Incoming { since, .. }) if since.elapsed() > RING_DEADLINE => {
                EndReason::Missed
            }
            Some(Call::Answered { since, .. }) if since.elapsed() > REVEAL_DEADLINE => {
                EndReason::Failed("the caller never completed the handshake".into())
            }
            _ => return,
        };
        self.end_call(reason, true).await;
    }

    /// Lists sound devices (off the async threads: ALSA probing can take a while) plus the non-device
    /// choices, and reports them with the current selection.
    async fn list_devices(&self) {
        let found = tokio::task::spawn_blocking(crate::media::list_devices).await;
        let (mut inputs, mut outputs) = (vec!["default".to_owned()], vec!["default".to_owned()]);
        match found {
            Ok(Ok(list)) => {
                inputs.extend(list.iter().filter(|d| d.input).map(|d| d.name.clone()));
                outputs.extend(list.iter().filter(|d| d.output).map(|d| d.name.clone()));
            }
            Ok(Err(e)) => self.error(format!("{e}")).await,
            Err(e) => self.error(format!("device listing failed: {e}")).await,
        }
        inputs.push("silence".into());
        inputs.extend(self.bundled_clip());
        outputs.push("null".into());
        outputs.extend(self.opts.contacts.data_dir().map(|d| d.join("speaker.wav").display().to_string()));
        let (input, output) = (self.opts.input.spec(), self.opts.output.spec());
        for (list, cur) in [(&mut inputs, &input), (&mut outputs, &output)] {
            if !list.contains(cur) {
                list.push(cur.clone());
            }
        }
        self.emit(SessionEvent::Devices { inputs, outputs, input, output }).await;
    }

    /// An empty id means the call ringing now.
    fn incoming_id(&self, id: String) -> String {
        match &self.call {
            Some(Call::Incoming { call_id, .. }) if id.is_empty() => call_id.clone(),
            _ => id,
        }
    }

    async fn dial(&mut self, name: String) {
        if let Some(call) = &self.call {
            let msg = format!("already in a call with {}; hang up first", call.peer());
            self.error(msg).await;
            return;
        }
        let Ok(callee) = Username::parse(&name) else {
            self.end_unstarted(&name, EndReason::Failed(format!("{name:?} is not a valid username"))).await;
            return;
        };
        if let Err(msg) = self.check_devices().await {
            self.end_unstarted(&name, EndReason::NoAudio(msg)).await;
            return;
        }
        if let Err(e) = self.opts.contacts.reload() {
            self.error(format!("could not read contacts: {e:#}")).await;
        }
        let bundle = match self.client.fetch(&callee).await {
            Ok(b) => b,
            Err(e) if e.code() == Some(ErrorCode::UnknownUser) => {
                self.end_unstarted(&name, EndReason::UnknownUser).await;
                return;
            }
            Err(e) => {
                self.end_unstarted(&name, EndReason::Failed(e.to_string())).await;
                return;
            }
        };
        match self.opts.contacts.check(&name, &bundle.identity_key, now_ms()) {
            Ok(Trust::Suspicious) => {
                let reason = EndReason::SecurityFailure(format!(
                    "{name} is marked suspicious after a SAS mismatch; compare safety numbers, then run \
                     `qvoice verify {name}`"
                ));
                self.end_unstarted(&name, reason).await;
                return;
            }
            Ok(Trust::KeyChanged) => {
                self.key_warning(&name).await;
                let reason = EndReason::SecurityFailure(format!(
                    "{name}'s identity key changed; compare safety numbers, then run `qvoice verify {name}`"
                ));
                self.end_unstarted(&name, reason).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                self.end_unstarted(&name, EndReason::Failed(format!("could not save contacts: {e:#}"))).await;
                return;
            }
        }
        // A callee without an open event stream is rung all the same: its client may be polling
        // `/call/pending` (docs/REGISTRY.md, "Polling-only clients"). If nobody answers, we say it was offline.
        self.dialed_offline = !bundle.online;
        let codecs = codec_offers(&self.opts.codecs);
        if !codecs.iter().any(|c| c.durations.contains(self.opts.frame_ms)) {
            let runs: Vec<String> = codecs.iter().map(|c| format!("{} at {}", c.codec.name(), c.durations)).collect();
            let reason = EndReason::Failed(format!(
                "frame duration {} ms is not supported here ({}); set [media] frame_ms or --frame-ms accordingly",
                self.opts.frame_ms,
                runs.join(", ")
            ));
            self.end_unstarted(&name, reason).await;
            return;
        }
        let (socket, candidates) = match self.bind_media().await {
            Ok(x) => x,
            Err(e) => {
                self.end_unstarted(&name, EndReason::Failed(format!("{e:#}"))).await;
                return;
            }
        };
        let params = CallerParams {
            caller: self.client.username().clone(),
            callee,
            codecs,
            frame_ms: self.opts.frame_ms,
            candidates,
            obfuscation: self.opts.obfuscation,
        };
        let started =
            Caller::start(&mut rand::rng(), now_ms(), &self.identity, params, &bundle.identity_key, &bundle.prekey);
        let (caller, offer) = match started {
            Ok(x) => x,
            Err(qvoice_proto::Error::PrekeyExpired { expires_ms }) => {
                let days = now_ms().saturating_sub(expires_ms) / 86_400_000;
                let reason = EndReason::PrekeyExpired(format!(
                    "{name}'s published prekey expired {days} day(s) ago; {name} must run qvoice once to publish a \
                     new one (if they did, the registry serves a stale key)"
                ));
                self.end_unstarted(&name, reason).await;
                return;
            }
            Err(e @ qvoice_proto::Error::Malformed(_)) => {
                self.end_unstarted(&name, EndReason::Failed(e.to_string())).await;
                return;
            }
            Err(e) => {
                self.end_unstarted(&name, EndReason::SecurityFailure(e.to_string())).await;
                return;
            }
        };
        let call_id = offer.call_id.to_hex();
        self.emit(SessionEvent::Dialing { call_id: call_id.clone(), to: name.clone() }).await;
        self.call =
            Some(Call::Dialing { call_id: call_id.clone(), peer: name.clone(), caller, socket, since: Instant::now() });
        match self.client.initiate(offer.to_bytes()).await {
            Ok(r) => {
                if let Some(online) = r.callee_online {
                    self.dialed_offline = !online;
                }
                if self.dialed_offline {
                    tracing::info!(
                        "{name} has no open event stream; the call rings until {name}'s client polls for it or it is missed"
                    );
                }
                self.emit(SessionEvent::Ringing { call_id, to: name }).await;
            }
            Err(e) => {
                let reason = match e.code() {
                    Some(ErrorCode::Busy) => EndReason::Busy,
                    Some(ErrorCode::UnknownUser) => EndReason::UnknownUser,
                    _ => EndReason::Failed(e.to_string()),
                };
                self.end_call(reason, false).await;
            }
        }
    }

    /// Reports a call that never got a call id.
    async fn end_unstarted(&self, peer: &str, reason: EndReason) {
        self.emit(SessionEvent::Ended { call_id: String::new(), peer: peer.to_owned(), reason, duration_s: 0.0 }).await;
    }

    async fn key_warning(&self, name: &str) {
        let c = self.opts.contacts.contacts.get(name);
        self.emit(SessionEvent::KeyWarning {
            username: name.to_owned(),
            pinned: c.map(|c| fingerprint(&c.identity_key)).unwrap_or_default(),
            offered: c.and_then(|c| c.offered_key.as_deref()).map(fingerprint).unwrap_or_default(),
        })
        .await;
    }

    async fn internal(&mut self, msg: Internal) {
        match msg {
            Internal::PushState { up } => {
                if up != self.push_up {
                    self.push_up = up;
                    let detail = if up { "push events connected" } else { "push events lost; reconnecting" };
                    self.emit(SessionEvent::Connection { connected: up, detail: detail.into() }).await;
                    if up {
                        // Events sent while the stream was down are lost: catch up on the call and on
                        // calls ringing for us.
                        self.poll_status().await;
                        if self.call.is_none()
                            && let Ok(p) = self.client.pending(0).await
                        {
                            for inc in p.calls {
                                self.incoming(inc.call_id, inc.caller, &inc.offer).await;
                            }
                        }
                        self.refresh_contacts().await;
                    }
                }
            }
            Internal::Registry(ev) => self.registry_event(ev).await,
            Internal::Media { call_id, event } => self.media_event(&call_id, event).await,
        }
    }

    async fn registry_event(&mut self, ev: RegistryEvent) {
        match ev {
            RegistryEvent::Ready { .. } => {}
            RegistryEvent::UserRegistered { username } => {
                if !self.known.contains(&username) {
                    self.refresh_contacts().await;
                }
            }
            RegistryEvent::Presence { username, online } => {
                // Someone we have not listed yet came online: a new registration. Fetch the directory.
                if username != self.client.username().as_str() && !self.known.contains(&username) {
                    self.refresh_contacts().await;
                    // Once per name, even if the directory does not list it (no refresh storm).
                    self.known.insert(username.clone());
                }
                self.emit(SessionEvent::Presence { username, online }).await;
            }
            RegistryEvent::IncomingCall(inc) => self.incoming(inc.call_id, inc.caller, &inc.offer).await,
            RegistryEvent::CallAccepted { call_id, answer, .. } => self.on_answer(&call_id, &answer).await,
            RegistryEvent::CallConfirmed { call_id, reveal, .. } => self.on_reveal(&call_id, &reveal).await,
            RegistryEvent::IncomingFile { file_id, sender, size, expires_ms } => {
                let trust = self.opts.contacts.trust(&sender);
                self.emit(SessionEvent::IncomingFile { file_id, from: sender, size, expires_ms, trust }).await;
                // The listing opens the manifest: it tells the file's name.
                if self.opts.list_files {
                    self.transfers.list(self.prekey_copies());
                }
            }
            RegistryEvent::FileClosed { file_id, peer, outcome, reason } => {
                let outcome = outcome.as_str().to_owned();
                self.emit(SessionEvent::FileClosed { file_id, peer, outcome, reason }).await;
            }
            RegistryEvent::CallEnded { call_id, state, reason, kind } => {
                self.waiting.retain(|w| *w != call_id);
                if self.call.as_ref().is_some_and(|c| c.id() == call_id) {
                    let caller = matches!(self.call, Some(Call::Dialing { .. }))
                        || matches!(&self.call, Some(Call::Active { direction: Direction::Outgoing, .. }));
                    let reason = self.registry_ended(map_end_state(state, reason, kind, caller));
                    self.end_call(reason, false).await;
                }
            }
        }
    }

    async fn incoming(&mut self, call_id: String, caller: String, offer_b64: &str) {
        if self.call.as_ref().is_some_and(|c| c.id() == call_id) || !self.seen.insert(&call_id) {
            return;
        }
        self.take_call(call_id, caller, offer_b64).await;
    }

    /// Offers the oldest waiting call that still rings, now that no call is in progress.
    async fn offer_waiting(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        match self.client.pending(0).await {
            Ok(p) => {
                for inc in p.calls.into_iter().filter(|c| waiting.contains(&c.call_id)) {
                    // The first becomes the incoming call; any others wait again.
                    self.take_call(inc.call_id, inc.caller, &inc.offer).await;
                }
            }
            Err(e) => tracing::info!(error = %e, "could not read waiting calls"),
        }
    }

    async fn take_call(&mut self, call_id: String, caller: String, offer_b64: &str) {
        let parsed =
            b64::decode(offer_b64).map_err(|_| qvoice_proto::Error::Malformed("base64")).and_then(|b| Offer::parse(&b));
        let offer = match parsed {
            Ok(o) if o.call_id.to_hex() == call_id && o.caller.as_str() == caller => o,
            Err(qvoice_proto::Error::UnsupportedVersion(v)) => {
                self.refuse(call_id, caller, Refusal::Version { offered: v }).await;
                return;
            }
            _ => {
                self.error(format!("ignoring a malformed incoming call from {caller}")).await;
                return;
            }
        };
        // An OFFER we cannot run is refused before it rings (also while we are in another call), with the
        // reason the caller shows.
        if let Err(refusal) = qvoice_proto::choose(&offer, &codec_offers(&self.opts.codecs)) {
            self.refuse(call_id, caller, refusal).await;
            return;
        }
        if self.call.is_some() {
            let trust = self.opts.contacts.trust(&caller);
            self.waiting.push(call_id.clone());
            self.emit(SessionEvent::CallWaiting { call_id, from: caller, trust }).await;
            return;
        }
        if let Err(e) = self.opts.contacts.reload() {
            self.error(format!("could not read contacts: {e:#}")).await;
        }
        let trust = match self.opts.contacts.check(&caller, &offer.caller_key, now_ms()) {
            Ok(t) => t,
            Err(e) => {
                self.error(format!("could not save contacts: {e:#}")).await;
                let text = Some("callee could not store contacts");
                let _ = self.client.end(EndRequest::Reject, &call_id, Some(EndKind::Error), text).await;
                return;
            }
        };
        if trust == Trust::KeyChanged {
            self.key_warning(&caller).await;
            let text = Some("identity key changed");
            let _ = self.client.end(EndRequest::Reject, &call_id, Some(EndKind::Security), text).await;
            let reason = EndReason::SecurityFailure(format!(
                "{caller}'s identity key changed; compare safety numbers, then run `qvoice verify {caller}`"
            ));
            self.emit(SessionEvent::Ended { call_id, peer: caller, reason, duration_s: 0.0 }).await;
            return;
        }
        self.emit(SessionEvent::IncomingCall { call_id: call_id.clone(), from: caller.clone(), trust }).await;
        self.call = Some(Call::Incoming { call_id: call_id.clone(), peer: caller, offer, since: Instant::now() });
        if self.opts.auto_answer {
            self.accept(&call_id).await;
        }
    }

    /// Refuses an incoming call we cannot run (`/call/reject`, kind `incompatible`, the refusal as the
    /// reason) and reports it.
    async fn refuse(&mut self, call_id: String, caller: String, refusal: Refusal) {
        let text = refusal.to_string();
        tracing::info!(call = %call_id, %caller, "refusing an incoming call: {text}");
        let refused = self.client.end(EndRequest::Reject, &call_id, Some(EndKind::Incompatible), Some(&text)).await;
        if let Err(e) = refused {
            tracing::info!(error = %e, "could not tell the registry we refuse the call");
        }
        // Reported as an ended attempt only when no other call is on screen (an Ended event is about the
        // current call to front ends); during a call the log line above is the record.
        if self.call.is_none() {
            let reason = EndReason::Incompatible(text);
            self.emit(SessionEvent::Ended { call_id, peer: caller, reason, duration_s: 0.0 }).await;
        }
    }

    /// How a call that the registry (or the peer through it) ended, ends for us: a call to a callee
    /// without an event stream that nobody answered is reported as offline rather than missed.
    fn registry_ended(&self, reason: EndReason) -> EndReason {
        let dialing = matches!(self.call, Some(Call::Dialing { .. }));
        if reason == EndReason::Missed && dialing && self.dialed_offline { EndReason::Offline } else { reason }
    }

    /// Opens the configured sound devices briefly (off the async threads).
    async fn check_devices(&self) -> Result<(), String> {
        let (input, output) = (self.opts.input.clone(), self.opts.output.clone());
        match tokio::task::spawn_blocking(move || crate::media::check_devices(&input, &output)).await {
            Ok(Ok(opened)) => {
                for d in opened {
                    tracing::info!(device = %d, "sound device checked");
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("checking the sound devices failed: {e}")),
        }
    }

    async fn accept(&mut self, id: &str) {
        let Some(Call::Incoming { call_id, peer, offer, since }) = self.call.take_if(|c| c.id() == id) else {
            self.error(format!("no incoming call {id} to accept")).await;
            return;
        };
        // Never answer a call we cannot run: the caller is told at once instead of after ringing.
        if let Err(msg) = self.check_devices().await {
            self.call = Some(Call::Incoming { call_id, peer, offer, since });
            self.end_call(EndReason::NoAudio(msg), true).await;
            return;
        }
        let (socket, candidates) = match self.bind_media().await {
            Ok(x) => x,
            Err(e) => {
                self.call = Some(Call::Incoming { call_id, peer, offer, since });
                self.end_call(EndReason::Failed(format!("{e:#}")), true).await;
                return;
            }
        };
        let params = CalleeParams {
            callee: self.client.username().clone(),
            codecs: codec_offers(&self.opts.codecs),
            candidates,
            obfuscation: self.opts.obfuscation,
        };
        let caller_key = offer.caller_key;
        let answered = Callee::on_offer(&mut rand::rng(), now_ms(), &self.identity, &caller_key, &offer, params);
        match answered {
            Ok((callee, answer)) => {
                self.call =
                    Some(Call::Answered { call_id: call_id.clone(), peer, callee, socket, since: Instant::now() });
                if let Err(e) = self.accept_at_registry(&call_id, answer.to_bytes()).await {
                    self.end_call(EndReason::Failed(e.to_string()), false).await;
                }
            }
            Err(e) => {
                self.call = Some(Call::Incoming { call_id, peer, offer, since });
                self.end_call(EndReason::SecurityFailure(e.to_string()), true).await;
            }
        }
    }

    /// Posts ANSWER. A waiting call is accepted the moment the previous call ended on the peer's BYE, which
    /// can be before the peer's hang-up reached the registry (`already_in_call`): we then end that call at
    /// the registry ourselves (it is over for us too) and retry for up to two seconds.
    async fn accept_at_registry(&mut self, call_id: &str, answer: impl AsRef<[u8]>) -> Result<(), ClientError> {
        let mut tries = 0;
        loop {
            match self.client.accept(call_id, answer.as_ref()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some(ErrorCode::AlreadyInCall) && tries < 10 => {
                    tries += 1;
                    if let Some(prev) = self.ended_unposted.take() {
                        match self.client.end(EndRequest::Hangup, &prev, Some(EndKind::Hangup), None).await {
                            Ok(_) => {}
                            Err(e) if matches!(e.code(), Some(ErrorCode::WrongState | ErrorCode::UnknownCall)) => {}
                            Err(e) => tracing::info!(error = %e, "could not end the previous call at the registry"),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn on_answer(&mut self, id: &str, answer_b64: &str) {
        let Some(Call::Dialing { call_id, peer, caller, socket, since }) =
            self.call.take_if(|c| c.id() == id && matches!(c, Call::Dialing { .. }))
        else {
            return;
        };
        let parsed = b64::decode(answer_b64)
            .map_err(|_| qvoice_proto::Error::Malformed("base64"))
            .and_then(|b| Answer::parse(&b));
        let answer = match parsed {
            Ok(a) => a,
            Err(e) => {
                let reason = match e {
                    qvoice_proto::Error::UnsupportedVersion(v) => EndReason::Incompatible(format!(
                        "the callee answered in protocol version {v}, which this client does not speak; update qvoice"
                    )),
                    _ => EndReason::SecurityFailure("malformed ANSWER".into()),
                };
                self.call = Some(Call::Dialing { call_id, peer, caller, socket, since });
                self.end_call(reason, true).await;
                return;
            }
        };
        let revealed = caller.on_answer(&mut rand::rng(), &answer);
        match revealed {
            Ok((reveal, keys)) => {
                // Send REVEAL first so the callee can derive keys while our media starts.
                let confirm = self.client.confirm(&call_id, reveal.to_bytes()).await;
                if let Err(e) = confirm {
                    drop(keys);
                    let text = Some("could not confirm");
                    let _ = self.client.end(EndRequest::Cancel, &call_id, Some(EndKind::Error), text).await;
                    let reason = EndReason::Failed(format!("could not confirm the call: {e}"));
                    self.emit(SessionEvent::Ended { call_id, peer, reason, duration_s: 0.0 }).await;
                    return;
                }
                self.start_media(call_id, peer, keys, socket, Direction::Outgoing).await;
            }
            Err(e @ qvoice_proto::Error::Incompatible(_)) => {
                // A correctly signed ANSWER whose choices we did not offer: we cannot run it.
                let text = e.to_string();
                let _ = self.client.end(EndRequest::Cancel, &call_id, Some(EndKind::Incompatible), Some(&text)).await;
                let reason = EndReason::Incompatible(text);
                self.emit(SessionEvent::Ended { call_id, peer, reason, duration_s: 0.0 }).await;
            }
            Err(e) => {
                let text = Some(VERIFICATION_FAILED);
                let _ = self.client.end(EndRequest::Cancel, &call_id, Some(EndKind::Security), text).await;
                let reason = EndReason::SecurityFailure(format!("the ANSWER failed verification: {e}"));
                self.emit(SessionEvent::Ended { call_id, peer, reason, duration_s: 0.0 }).await;
            }
        }
    }

    async fn on_reveal(&mut self, id: &str, reveal_b64: &str) {
        let Some(Call::Answered { call_id, peer, callee, socket, .. }) =
            self.call.take_if(|c| c.id() == id && matches!(c, Call::Answered { .. }))
        else {
            return;
        };
        // `qvoice rotate-prekey` may have run in another process since we started.
        if self.opts.keystore.reload_prekeys().is_ok() {
            self.prekeys = self.opts.keystore.prekey_secrets();
        }
        let reveal = b64::decode(reveal_b64).ok().and_then(|b| Reveal::parse(&b).ok());
        let keys = match reveal {
            Some(r) => callee.on_reveal(&r, &self.prekeys).map_err(|e| e.to_string()),
            None => Err("malformed REVEAL".to_owned()),
        };
        match keys {
            Ok(keys) => self.start_media(call_id, peer, keys, socket, Direction::Incoming).await,
            Err(e) => {
                let text = Some(VERIFICATION_FAILED);
                let _ = self.client.end(EndRequest::Hangup, &call_id, Some(EndKind::Security), text).await;
                let reason = EndReason::SecurityFailure(format!("the REVEAL failed verification: {e}"));
                self.emit(SessionEvent::Ended { call_id, peer, reason, duration_s: 0.0 }).await;
            }
        }
    }

    async fn start_media(
        &mut self,
        call_id: String,
        peer: String,
        keys: SessionKeys,
        socket: MediaSocket,
        direction: Direction,
    ) {
        let trust = self.opts.contacts.trust(&peer);
        self.emit(SessionEvent::SasReady {
            call_id: call_id.clone(),
            peer: peer.clone(),
            sas: keys.sas.clone(),
            trust,
        })
        .await;
        let codec = keys.codec;
        let frame_ms = keys.frame_ms;
        let candidates = keys.peer_candidates.clone();
        let mut cfg = MediaConfig::new(keys.media, socket.socket, candidates.clone());
        cfg.relay = socket.relay;
        cfg.controlling = direction == Direction::Outgoing;
        cfg.codec = codec_kind(codec);
        cfg.frame_ms = frame_ms;
        cfg.input = self.opts.input.clone();
        cfg.output = self.opts.output.clone();
        cfg.impairment = self.opts.impairment;
        cfg.silence_timeout = self.opts.peer_timeout;
        let record_dir = self.call_record_dir(&call_id, &peer);
        if self.recording
            && let Some(d) = &record_dir
            && let Err(e) = create_private_dir(d)
        {
            self.error(format!("cannot record this call: {e}")).await;
            self.recording = false;
        }
        cfg.record_dir = record_dir.clone();
        cfg.record_paused = !self.recording;
        let started = tokio::task::spawn_blocking(move || MediaEngine::start(cfg)).await;
        let mut media = match started {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                let text = Some("media failed to start");
                let _ = self.client.end(EndRequest::Hangup, &call_id, Some(EndKind::MediaFailed), text).await;
                let reason = match e {
                    crate::media::MediaError::Audio(a) => EndReason::NoAudio(no_audio_text(&a)),
                    other => EndReason::Failed(other.to_string()),
                };
                self.emit(SessionEvent::Ended { call_id, peer, reason, duration_s: 0.0 }).await;
                return;
            }
            Err(e) => {
                let text = Some("media failed to start");
                let _ = self.client.end(EndRequest::Hangup, &call_id, Some(EndKind::MediaFailed), text).await;
                let reason = EndReason::MediaFailed(format!("media start task failed: {e}"));
                self.emit(SessionEvent::Ended { call_id, peer, reason, duration_s: 0.0 }).await;
                return;
            }
        };
        media.set_mute(self.muted);
        if self.recording {
            if let Some(d) = &record_dir {
                tracing::info!("recording the call with {peer} to {}", d.display());
            }
            let dir = record_dir.map(|d| d.display().to_string());
            self.emit(SessionEvent::Recording { on: true, dir }).await;
        }
        if let Some(rx) = media.take_events() {
            let tx = self.internal_tx.clone();
            let id = call_id.clone();
            let spawned = std::thread::Builder::new().name("qv-media-events".into()).spawn(move || {
                while let Ok(event) = rx.recv() {
                    if tx.blocking_send(Internal::Media { call_id: id.clone(), event }).is_err() {
                        break;
                    }
                }
            });
            if let Err(e) = spawned {
                self.error(format!("could not watch media events: {e}")).await;
            }
        }
        // Not active yet: connectivity checks run until a path works and the peer's audio plays.
        let checking = candidates.iter().map(|c| format!("{} {}", c.kind().name(), c.addr())).collect();
        self.emit(SessionEvent::Connecting { call_id: call_id.clone(), peer: peer.clone(), checking }).await;
        self.progress = Some(MediaProgress { codec, frame_ms, path: None, active_sent: false });
        let media = std::sync::Mutex::new(media);
        self.call = Some(Call::Active { call_id, peer, media, since: Instant::now(), direction });
    }

    async fn media_event(&mut self, id: &str, event: MediaEvent) {
        // A switch that worked is the user's choice from now on, even if the call ended meanwhile.
        if let MediaEvent::AudioInUse { dir, spec, switched: true, .. } = &event {
            self.device_switched(*dir, spec).await;
        }
        let Some(Call::Active { call_id, .. }) = &self.call else { return };
        if call_id != id {
            return;
        }
        match event {
            MediaEvent::PeerConnected { addr, .. } => tracing::info!(%addr, "media path up"),
            MediaEvent::PathChanged(p) => {
                let path = p.to_string();
                tracing::info!(%path, "media path");
                if let Some(pr) = &mut self.progress {
                    pr.path = Some(path.clone());
                }
                let (call_id, kind) = (call_id.clone(), Some(p.kind));
                self.emit(SessionEvent::Path { call_id, path, kind }).await;
            }
            MediaEvent::NoPath(why) => self.end_call(EndReason::NoMediaPath(why), true).await,
            MediaEvent::PeerAddressChanged { from, to } => tracing::info!(%from, %to, "peer address changed"),
            MediaEvent::PeerSilent { .. } => self.end_call(EndReason::PeerVanished, true).await,
            // The peer ended the call and tells the registry itself (docs/REGISTRY.md, "Hang-up
            // responsibilities"): posting /call/hangup too would only earn a 409.
            MediaEvent::PeerBye => {
                // A peer that hangs up for a reason (a SAS mismatch) tells the registry before its BYE:
                // ask, briefly, so the user sees why rather than "peer hung up".
                let status = tokio::time::timeout(Duration::from_secs(1), self.client.status(call_id)).await;
                let reason = match status {
                    Ok(Ok(st)) if st.state == CallState::Ended && st.end_kind == Some(EndKind::Security) => {
                        map_end_state(st.state, st.reason, st.end_kind, false)
                    }
                    _ => EndReason::RemoteHangup,
                };
                self.end_call(reason, false).await;
            }
            MediaEvent::Failed(msg) => self.end_call(EndReason::MediaFailed(msg), true).await,
            MediaEvent::FirstAudioPlayed { since_start, .. } => {
                tracing::debug!(?since_start, "first audio played");
                let call_id = call_id.clone();
                self.emit(SessionEvent::AudioFlowing { call_id: call_id.clone() }).await;
                let (peer, direction) = match &self.call {
                    Some(Call::Active { peer, direction, .. }) => (peer.clone(), *direction),
                    _ => return,
                };
                if let Some(pr) = self.progress.as_mut().filter(|p| !p.active_sent) {
                    pr.active_sent = true;
                    let (codec, frame_ms) = (pr.codec.name().into(), pr.frame_ms);
                    let path = pr.path.clone().unwrap_or_default();
                    self.emit(SessionEvent::Active { call_id, peer, direction, codec, frame_ms, path }).await;
                }
            }
            MediaEvent::AudioInUse { dir, spec, detail, switched } => {
                let call_id = call_id.clone();
                self.emit(SessionEvent::AudioDevice { call_id, direction: dir, device: spec, detail, switched }).await;
            }
            MediaEvent::SwitchFailed { dir, spec, message } => {
                let call_id = call_id.clone();
                self.emit(SessionEvent::AudioSwitchFailed { call_id, direction: dir, device: spec, message }).await;
            }
            MediaEvent::PeerResumed | MediaEvent::InputEnded => {}
        }
    }

    async fn emit_metrics(&self) {
        if let Some(Call::Active { call_id, media, .. }) = &self.call {
            let metrics = media.lock().map(|m| m.metrics()).unwrap_or_default();
            self.emit(SessionEvent::Metrics { call_id: call_id.clone(), metrics }).await;
        }
    }

    /// Without push events, follow the call through `/call/status`.
    async fn poll_status(&mut self) {
        // Only setup needs the registry; an active call's media carries BYE and survives a registry restart.
        if !self.in_setup() {
            return;
        }
        let Some(call) = &self.call else { return };
        let id = call.id().to_owned();
        let st = match self.client.status(&id).await {
            Ok(st) => st,
            Err(e) if e.code() == Some(ErrorCode::UnknownCall) => {
                // The registry forgot the call (it restarted): it can no longer complete.
                self.end_call(EndReason::Failed("the registry no longer knows this call".into()), false).await;
                return;
            }
            Err(_) => return,
        };
        match (&self.call, st.state) {
            (Some(Call::Dialing { .. }), CallState::Accepted) => {
                if let Some(a) = st.answer {
                    self.on_answer(&id, &a).await;
                }
            }
            (Some(Call::Answered { .. }), CallState::Active) => {
                if let Some(r) = st.reveal {
                    self.on_reveal(&id, &r).await;
                }
            }
            (_, s @ (CallState::Rejected | CallState::Cancelled | CallState::Missed | CallState::Busy)) => {
                let caller = matches!(self.call, Some(Call::Dialing { .. }));
                let reason = self.registry_ended(map_end_state(s, st.reason, st.end_kind, caller));
                self.end_call(reason, false).await;
            }
            (_, s @ (CallState::Ended | CallState::Failed)) => {
                self.end_call(map_end_state(s, st.reason, st.end_kind, false), false).await;
            }
            _ => {}
        }
    }

    /// Ends the current call (if any): tells the registry when `notify`, stops media (sending BYE,
    /// finalizing WAV files) and reports [`SessionEvent::Ended`].
    async fn end_call(&mut self, reason: EndReason, notify: bool) {
        let Some(call) = self.call.take() else { return };
        self.progress = None;
        let call_id = call.id().to_owned();
        let peer = call.peer().to_owned();
        let what = match &call {
            Call::Dialing { .. } => EndRequest::Cancel,
            Call::Incoming { .. } => EndRequest::Reject,
            Call::Answered { .. } | Call::Active { .. } => EndRequest::Hangup,
        };
        let duration_s = match &call {
            Call::Active { since, .. } => since.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        self.reset_call_state(self.call_record_dir(&call_id, &peer)).await;
        // A hang-up with a reason the peer must see goes to the registry before media stops (and sends
        // BYE), so the peer finds it when it asks on BYE.
        let tell_first = notify && reason == EndReason::SasMismatch;
        if tell_first {
            self.tell_registry(what, &call_id, &reason).await;
        }
        if let Call::Active { media, .. } = call {
            let stopped = match media.into_inner() {
                Ok(media) => tokio::task::spawn_blocking(move || media.stop()).await,
                Err(poisoned) => {
                    let media = poisoned.into_inner();
                    tokio::task::spawn_blocking(move || media.stop()).await
                }
            };
            match stopped {
                Ok(Ok(last)) => self.emit(SessionEvent::Metrics { call_id: call_id.clone(), metrics: last }).await,
                Ok(Err(e)) => self.error(format!("media stopped with an error: {e}")).await,
                Err(e) => self.error(format!("media stop task failed: {e}")).await,
            }
        }
        self.ended_unposted = (!notify && what == EndRequest::Hangup).then(|| call_id.clone());
        if notify && !tell_first {
            self.tell_registry(what, &call_id, &reason).await;
        }
        tracing::info!(call = %call_id, %peer, reason = %reason.label(), duration_s, "call ended");
        self.emit(SessionEvent::Ended { call_id, peer, reason, duration_s }).await;
    }

    /// Per-call state (mute, recording) does not carry into the next call: back to the configured defaults,
    /// telling front ends. `record_dir` is the ended call's recordings folder, if known.
    async fn reset_call_state(&mut self, record_dir: Option<PathBuf>) {
        if std::mem::take(&mut self.muted) {
            self.emit(SessionEvent::Muted { on: false }).await;
        }
        if self.recording != self.opts.record_on {
            let was = std::mem::replace(&mut self.recording, self.opts.record_on);
            if was {
                let dir = record_dir.map(|d| d.display().to_string());
                self.emit(SessionEvent::Recording { on: false, dir }).await;
            }
        }
    }

    /// Tells the registry that we end the call, and why.
    async fn tell_registry(&self, what: EndRequest, call_id: &str, reason: &EndReason) {
        let text = match reason {
            EndReason::Rejected => None,
            EndReason::SasMismatch => Some("the safety code (SAS) did not match on the other side".to_owned()),
            r => Some(r.label()),
        };
        match self.client.end(what, call_id, Some(end_kind(reason)), text.as_deref()).await {
            Ok(_) => {}
            // The registry ended it first (the peer's hang-up or a timeout crossed ours).
            Err(e) if matches!(e.code(), Some(ErrorCode::WrongState | ErrorCode::UnknownCall)) => {
                tracing::debug!(error = %e, "the call had already ended at the registry");
            }
            // The registry may be down or have restarted; the peer learns from BYE.
            Err(e) => tracing::info!(error = %e, "could not tell the registry the call ended"),
        }
    }

    /// Where the call's WAV files go, when a recordings folder is configured.
    fn call_record_dir(&self, call_id: &str, peer: &str) -> Option<PathBuf> {
        let short = call_id.get(..8).unwrap_or(call_id);
        self.opts.record_dir.as_ref().map(|d| d.join(format!("{short}-{peer}")))
    }

    /// Starts or stops recording the call in progress.
    async fn set_recording(&mut self, on: bool) {
        if on && self.opts.record_dir.is_none() {
            self.error(
                "recording needs a folder: set [recording] dir = \"/path/to/folder\" in config.toml (or start with \
                 --record-dir DIR)"
                    .into(),
            )
            .await;
            return;
        }
        let Some(Call::Active { call_id, peer, media, .. }) = &self.call else {
            if on {
                self.error(
                    "no call to record yet: record during a call, or set [recording] enabled = true to record every \
                     call"
                        .into(),
                )
                .await;
            }
            return;
        };
        let Some(dir) = self.call_record_dir(call_id, peer) else { return };
        if on && let Err(e) = create_private_dir(&dir) {
            self.error(format!("cannot record this call: {e}")).await;
            return;
        }
        if let Ok(m) = media.lock() {
            m.set_recording(on);
        }
        self.recording = on;
        tracing::info!(dir = %dir.display(), on, "recording");
        self.emit(SessionEvent::Recording { on, dir: Some(dir.display().to_string()) }).await;
    }
}

/// Creates `dir` (and parents) readable by the owner only; says which folder failed.
fn create_private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("could not create the folder {}: {e}", dir.display()))
}

/// Short fingerprint of a base64url identity key, for warnings.
fn fingerprint(key_b64: &str) -> String {
    b64::decode(key_b64)
        .ok()
        .and_then(|k| qvoice_proto::IdentityKey::from_bytes(&k).ok())
        .map(|k| k.short_fingerprint())
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_audio_text_names_flags_and_config_keys_not_types() {
        let t = no_audio_text(&crate::media::AudioError::NoDevice("no default device.".into()));
        assert!(t.contains("(no default device)") && t.contains("--input FILE.wav") && t.contains("[audio]"), "{t}");
        assert!(!t.contains("AudioIn") && !t.contains("AudioOut"), "{t}");
    }

    #[test]
    fn what_the_other_party_sees_follows_the_end_kind_not_the_text() {
        let r = |state, kind, reason: &str| map_end_state(state, Some(reason.to_owned()), kind, true);
        assert_eq!(r(CallState::Rejected, Some(EndKind::Busy), "x"), EndReason::Busy);
        assert_eq!(r(CallState::Rejected, None, "busy"), EndReason::Rejected, "text is never interpreted");
        assert_eq!(r(CallState::Rejected, Some(EndKind::Incompatible), "why"), EndReason::Incompatible("why".into()));
        assert_eq!(r(CallState::Cancelled, Some(EndKind::Incompatible), "why"), EndReason::Incompatible("why".into()));
        assert!(matches!(r(CallState::Ended, Some(EndKind::Security), "x"), EndReason::SecurityFailure(_)));
        assert_eq!(r(CallState::Cancelled, Some(EndKind::Timeout), "x"), EndReason::Missed);
        assert_eq!(r(CallState::Ended, Some(EndKind::PeerVanished), "x"), EndReason::PeerVanished);
        assert_eq!(r(CallState::Ended, Some(EndKind::Unknown), "new"), EndReason::Failed("new".into()));
        assert_eq!(r(CallState::Ended, Some(EndKind::MediaFailed), "x"), EndReason::RemoteHangup);
        assert_eq!(r(CallState::Ended, None, "handshake verification failed"), EndReason::RemoteHangup);
        assert_eq!(r(CallState::Missed, Some(EndKind::Security), "x"), EndReason::Missed, "registry states win");
    }

    #[test]
    fn offers_list_what_the_media_engine_runs() {
        let offers = codec_offers(&[Codec::Pcm16, Codec::Opus]);
        let list: Vec<(Codec, Vec<u8>)> = offers.iter().map(|o| (o.codec, o.durations.iter().collect())).collect();
        assert_eq!(list, vec![(Codec::Pcm16, vec![10, 20, 40]), (Codec::Opus, vec![10, 20, 40, 60])]);
    }
}
