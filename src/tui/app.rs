//! The TUI's state and its one state-transition function. [`App::handle`] turns a raw [`Event`] into an
//! [`Action`] using the key bindings and the current mode, and [`App::update`] applies it. Neither does I/O:
//! the time is an argument and what should happen outside (send a command, ring the bell, quit) comes back
//! as an [`Effect`] for the run loop to carry out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossterm::event::KeyEvent;

use super::keys::TuiConfig;
use crate::media::MetricsSnapshot;
use crate::session::events::{AudioDirection, CallRecord};
use crate::session::{ContactView, Direction, EndReason, SessionCommand, SessionEvent, Trust};

/// Samples kept for each sparkline.
pub const HISTORY_SAMPLES: usize = 120;
/// How long a status message stays in the header.
const STATUS_TTL: Duration = Duration::from_secs(8);

/// Everything the run loop feeds the app.
// Session events (metrics, mostly) are a few hundred bytes and arrive about once a second, each moved once:
// boxing them would add an allocation and gain nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Key(KeyEvent),
    /// The periodic redraw tick.
    Tick,
    Resize(u16, u16),
    Session(SessionEvent),
    /// A log line (tracing output) for the log pane.
    Log(String),
}

/// What an event means, once the key bindings and the mode have been applied.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Dial,
    /// Open the prompt to type any username to call.
    DialAny,
    PromptInput(char),
    PromptBackspace,
    /// Call the username typed in the prompt.
    PromptSubmit,
    Accept,
    Reject,
    Hangup,
    ToggleMute,
    ToggleRecord,
    Devices,
    ToggleHelp,
    Quit,
    StartFilter,
    FilterInput(char),
    FilterBackspace,
    /// Keep the typed filter and go back to the list.
    FilterDone,
    Up,
    Down,
    Yes,
    No,
    /// Close an overlay, clear the filter, dismiss an ended call or a warning banner.
    Cancel,
    /// Open the path prompt to send a file to the selected contact.
    SendFile,
    /// Move the keys to the Files pane (and back).
    FocusFiles,
    /// Save the selected incoming file into the download folder.
    SaveFile,
    /// Delete the selected incoming file without saving it.
    DiscardFile,
    Tick,
    Resize(u16, u16),
    Session(SessionEvent),
    Log(String),
    /// A key with no binding in the current mode.
    Noop,
}

/// What the run loop should do after an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Command(SessionCommand),
    /// Write the terminal bell (`\x07`).
    Bell,
    /// Leave the TUI (the run loop tells the session to shut down, which hangs up any call).
    Quit,
}

/// Where a call is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallPhase {
    Dialing,
    Ringing,
    /// Accepted (or answered) and the handshake is running.
    Connecting,
    Active,
    Ended(EndReason),
}

/// The user's answer to "keys match?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SasCheck {
    Pending,
    Confirmed,
    Mismatch,
}

/// The call shown in the call pane (the current one, or the last one until dismissed).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub call_id: String,
    pub peer: String,
    pub direction: Direction,
    pub phase: CallPhase,
    pub trust: Trust,
    pub sas: Option<String>,
    pub sas_check: SasCheck,
    pub codec: Option<String>,
    pub frame_ms: u8,
    pub path: Option<String>,
    /// When the call went active, for the call clock.
    pub active_since: Option<Instant>,
    /// Final duration reported by the session.
    pub ended_duration_s: Option<f64>,
    pub metrics: Option<MetricsSnapshot>,
    /// The microphone the call's media uses (as `--input` spells it), once the session said.
    pub input: Option<String>,
    /// The speaker the call's media uses, once the session said.
    pub output: Option<String>,
}

impl Call {
    pub(super) fn new(call_id: String, peer: String, direction: Direction, phase: CallPhase, trust: Trust) -> Self {
        Self {
            call_id,
            peer,
            direction,
            phase,
            trust,
            sas: None,
            sas_check: SasCheck::Pending,
            codec: None,
            frame_ms: 0,
            path: None,
            active_since: None,
            ended_duration_s: None,
            metrics: None,
            input: None,
            output: None,
        }
    }

    /// Whether the call is still going (not ended).
    pub fn is_live(&self) -> bool {
        !matches!(self.phase, CallPhase::Ended(_))
    }

    /// Seconds on the call clock at `now`.
    pub fn duration_s(&self, now: Instant) -> f64 {
        match (self.ended_duration_s, self.active_since) {
            (Some(d), _) => d,
            (None, Some(t)) => now.saturating_duration_since(t).as_secs_f64(),
            (None, None) => 0.0,
        }
    }
}

/// A call waiting to be answered: the modal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub call_id: String,
    pub from: String,
    pub trust: Trust,
}

/// One finished call in the history pane.
pub type HistoryEntry = CallRecord;

/// A line in the log pane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub text: String,
    pub error: bool,
}

/// Recent values for the sparklines, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sparks {
    pub recv_kbps: VecDeque<u64>,
    pub rtt_ms: VecDeque<u64>,
    pub jitter_ms: VecDeque<u64>,
    /// Loss in tenths of a percent, so small losses still show.
    pub loss_permille: VecDeque<u64>,
}

impl Sparks {
    fn push(&mut self, m: &MetricsSnapshot) {
        fn put(q: &mut VecDeque<u64>, v: f64) {
            if q.len() == HISTORY_SAMPLES {
                q.pop_front();
            }
            q.push_back(v.max(0.0).round() as u64);
        }
        put(&mut self.recv_kbps, m.recv_wire_kbps);
        put(&mut self.rtt_ms, m.rtt_ms);
        put(&mut self.jitter_ms, m.jitter_ms);
        put(&mut self.loss_permille, m.loss_pct * 10.0);
    }
}

/// A y/n question or an informational overlay covering the main screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    Help,
    Devices,
    ConfirmQuit,
    /// Typing a username to call ([`App::prompt`]).
    DialPrompt,
    /// Typing the path of a file to send to [`App::send_to`] ([`App::prompt`]).
    FilePrompt,
}

/// Audio devices reported by the session, and the overlay's cursor over inputs then outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceList {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub input: String,
    pub output: String,
    pub cursor: usize,
}

impl DeviceList {
    pub(super) fn len(&self) -> usize {
        self.inputs.len() + self.outputs.len()
    }

    /// The command that selects the entry under the cursor.
    pub(super) fn choose(&self) -> Option<SessionCommand> {
        if let Some(i) = self.inputs.get(self.cursor) {
            return Some(SessionCommand::SetDevices { input: Some(i.clone()), output: None });
        }
        let o = self.outputs.get(self.cursor - self.inputs.len())?;
        Some(SessionCommand::SetDevices { input: None, output: Some(o.clone()) })
    }
}

/// A contact's key changed: shown as a banner until dismissed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyWarning {
    pub username: String,
    pub pinned: String,
    pub offered: String,
}

/// The whole TUI state.
#[derive(Debug)]
pub struct App {
    pub config: TuiConfig,
    pub username: String,
    pub registry: Option<String>,
    pub connected: Option<(bool, String)>,
    pub contacts: Vec<ContactView>,
    /// Index into [`App::visible_contacts`].
    pub selected: usize,
    pub filter: String,
    pub filter_editing: bool,
    pub call: Option<Call>,
    pub incoming: Option<Incoming>,
    pub history: VecDeque<HistoryEntry>,
    pub log: VecDeque<LogLine>,
    pub sparks: Sparks,
    pub overlay: Option<Overlay>,
    pub key_warnings: Vec<KeyWarning>,
    pub muted: bool,
    /// The current call is being recorded (into [`App::recording_dir`]).
    pub recording: bool,
    pub recording_dir: Option<String>,
    /// Text typed into the dial prompt.
    pub prompt: String,
    /// The username we last asked to dial, until its call shows up (a failed attempt has no call id).
    pub dialed: Option<String>,
    /// Why the chosen audio devices cannot be used (no sound card), with the settings that work instead.
    pub audio_problem: Option<String>,
    pub status: Option<(String, Instant)>,
    pub size: (u16, u16),
    pub now: Instant,
    /// Filled when the devices overlay asks the session.
    pub devices: Option<DeviceList>,
    /// Files waiting for us at the registry (the Files pane), oldest first.
    pub files: Vec<super::files::IncomingFile>,
    /// Index into [`App::files`].
    pub file_cursor: usize,
    /// The Files pane has the keys.
    pub files_focus: bool,
    /// Files we are sending.
    pub uploads: Vec<super::files::Upload>,
    /// Who the file prompt sends to.
    pub send_to: Option<String>,
    /// Wall-clock time, ms since the Unix epoch (set by the run loop; file expiry is shown against it).
    pub wall_ms: u64,
    /// See [`super::files`].
    pub(super) closed_files: Vec<String>,
}

impl App {
    pub fn new(config: TuiConfig, username: String, now: Instant) -> Self {
        Self {
            config,
            username,
            registry: None,
            connected: None,
            contacts: Vec::new(),
            selected: 0,
            filter: String::new(),
            filter_editing: false,
            call: None,
            incoming: None,
            history: VecDeque::new(),
            log: VecDeque::new(),
            sparks: Sparks::default(),
            overlay: None,
            key_warnings: Vec::new(),
            muted: false,
            recording: false,
            recording_dir: None,
            prompt: String::new(),
            dialed: None,
            audio_problem: None,
            status: None,
            size: (80, 24),
            now,
            devices: None,
            files: Vec::new(),
            file_cursor: 0,
            files_focus: false,
            uploads: Vec::new(),
            send_to: None,
            wall_ms: 0,
            closed_files: Vec::new(),
        }
    }

    /// Applies one event at time `now`: maps it to an action and updates.
    pub fn handle(&mut self, now: Instant, event: Event) -> Option<Effect> {
        self.now = now;
        let action = self.action_for(event);
        self.update(action)
    }

    /// Contacts matching the filter: online first, then by name.
    pub fn visible_contacts(&self) -> Vec<&ContactView> {
        let needle = self.filter.to_lowercase();
        let mut v: Vec<&ContactView> = self
            .contacts
            .iter()
            .filter(|c| {
                needle.is_empty()
                    || c.username.to_lowercase().contains(&needle)
                    || c.display_name.as_deref().is_some_and(|d| d.to_lowercase().contains(&needle))
            })
            .collect();
        v.sort_by(|a, b| b.online.cmp(&a.online).then_with(|| a.username.cmp(&b.username)));
        v
    }

    pub fn selected_contact(&self) -> Option<&ContactView> {
        self.visible_contacts().get(self.selected).copied()
    }

    /// Runs `change` (which may re-sort or refilter the list) and keeps the cursor on the same username
    /// if it is still listed, so a presence change never moves the cursor to someone else.
    pub(super) fn keeping_selection(&mut self, change: impl FnOnce(&mut Self)) {
        let before = self.selected_contact().map(|c| c.username.clone());
        change(self);
        let visible = self.visible_contacts();
        let n = visible.len();
        let found = before.and_then(|name| visible.iter().position(|c| c.username == name));
        self.selected = found.unwrap_or(self.selected).min(n.saturating_sub(1));
    }

    /// If `username` looks like another contact without being them, the contact it imitates.
    /// A verified contact is who they are: only the others are marked.
    pub fn lookalike_of(&self, username: &str) -> Option<&str> {
        let me = self.contacts.iter().find(|c| c.username == username);
        if me.is_some_and(|c| c.trust == Trust::Verified) {
            return None;
        }
        let display = me.and_then(|c| c.display_name.as_deref());
        let known = self
            .contacts
            .iter()
            .filter(|c| c.trust != Trust::New)
            .map(|c| (c.username.as_str(), c.display_name.as_deref()));
        qvoice_proto::names::lookalike(username, display, known)
    }

    /// The live call, if any.
    pub fn live_call(&self) -> Option<&Call> {
        self.call.as_ref().filter(|c| c.is_live())
    }

    /// Whether the live call's media engine runs (keys agreed): recording can start.
    pub fn media_running(&self) -> bool {
        self.live_call().is_some_and(|c| c.sas.is_some())
    }

    /// Whether a y/n answer to "keys match?" is awaited.
    pub fn sas_question(&self) -> bool {
        self.live_call().is_some_and(|c| c.sas.is_some() && c.sas_check == SasCheck::Pending)
    }

    /// Maps a raw event to an action: keys through the current mode's bindings ([`super::mode`]).
    pub fn action_for(&self, event: Event) -> Action {
        match event {
            Event::Key(k) => self.mode().action_for(self, &k),
            Event::Tick => Action::Tick,
            Event::Resize(w, h) => Action::Resize(w, h),
            Event::Session(e) => Action::Session(e),
            Event::Log(l) => Action::Log(l),
        }
    }

    /// Applies an action. Pure: returns what the outside world should do.
    pub fn update(&mut self, action: Action) -> Option<Effect> {
        if let Some((_, at)) = &self.status
            && self.now.saturating_duration_since(*at) > STATUS_TTL
        {
            self.status = None;
        }
        match action {
            Action::Tick | Action::Noop => None,
            Action::Resize(w, h) => {
                self.size = (w, h);
                None
            }
            Action::Session(e) => self.on_session(e),
            Action::Log(text) => {
                self.push_log(text, false);
                None
            }
            a => self.on_user(a),
        }
    }

    /// A user action, interpreted in the current mode: overlays ([`super::overlays`]) first, else the main
    /// screen. An action the mode does not bind does nothing.
    fn on_user(&mut self, action: Action) -> Option<Effect> {
        match super::overlays::for_mode(self.mode()) {
            Some(overlay) => overlay.update(self, action),
            None if self.mode() == super::mode::Mode::Files => self.on_files(action),
            None => self.on_main(action),
        }
    }

    pub(super) fn quit(&mut self) -> Option<Effect> {
        if self.live_call().is_some() || self.incoming.is_some() || self.transfers_running() {
            self.overlay = Some(Overlay::ConfirmQuit);
            None
        } else {
            Some(Effect::Quit)
        }
    }

    pub(super) fn dial(&mut self, to: String) -> Option<Effect> {
        if let Some(c) = self.live_call() {
            self.set_status(format!("already in a call with {}: hang up first", c.peer));
            return None;
        }
        if let Some(problem) = &self.audio_problem {
            self.set_status(format!("cannot call: {problem}"));
            return None;
        }
        if let Some((false, detail)) = &self.connected {
            self.set_status(format!("offline: calls need the registry ({detail})"));
            return None;
        }
        if to == self.username {
            self.set_status("that is you: pick someone else to call".into());
            return None;
        }
        if self.trust_of(&to) == Trust::Suspicious {
            self.set_status(format!(
                "{to} is marked suspicious (SAS mismatch): compare safety numbers, then run `qvoice verify {to}`"
            ));
            return None;
        }
        self.dialed = Some(to.clone());
        Some(Effect::Command(SessionCommand::Dial(to)))
    }

    /// The main screen (list, filter typing, call pane).
    fn on_main(&mut self, action: Action) -> Option<Effect> {
        match action {
            Action::Yes => self.answer_sas(true),
            Action::No => self.answer_sas(false),
            Action::Dial => {
                let Some(contact) = self.selected_contact() else {
                    self.set_status("no contact selected".into());
                    return None;
                };
                let to = contact.username.clone();
                self.dial(to)
            }
            Action::DialAny => {
                self.prompt.clear();
                self.overlay = Some(Overlay::DialPrompt);
                None
            }
            Action::SendFile => self.start_send_file(),
            Action::FocusFiles => {
                if self.files.is_empty() {
                    self.set_status("no files are waiting for you".into());
                } else {
                    self.files_focus = true;
                }
                None
            }
            Action::Hangup => self.live_call().map(|_| Effect::Command(SessionCommand::Hangup)),
            Action::ToggleMute => {
                self.live_call()?;
                Some(Effect::Command(SessionCommand::SetMute(!self.muted)))
            }
            Action::ToggleRecord => {
                if !self.media_running() {
                    return None;
                }
                Some(Effect::Command(SessionCommand::SetRecording(!self.recording)))
            }
            Action::Devices => {
                self.overlay = Some(Overlay::Devices);
                Some(Effect::Command(SessionCommand::ListDevices))
            }
            Action::ToggleHelp => {
                self.overlay = Some(Overlay::Help);
                None
            }
            Action::Quit => self.quit(),
            Action::StartFilter => {
                self.filter_editing = true;
                None
            }
            Action::FilterInput(c) => {
                self.filter.push(c);
                self.selected = 0;
                None
            }
            Action::FilterBackspace => {
                self.filter.pop();
                self.selected = 0;
                None
            }
            Action::FilterDone => {
                self.filter_editing = false;
                None
            }
            Action::Up => {
                self.selected = self.selected.saturating_sub(1);
                None
            }
            Action::Down => {
                let n = self.visible_contacts().len();
                if self.selected + 1 < n {
                    self.selected += 1;
                }
                None
            }
            Action::Cancel => {
                if self.filter_editing || !self.filter.is_empty() {
                    self.keeping_selection(|a| {
                        a.filter_editing = false;
                        a.filter.clear();
                    });
                } else if !self.key_warnings.is_empty() {
                    self.key_warnings.clear();
                } else if self.call.as_ref().is_some_and(|c| !c.is_live()) {
                    self.call = None;
                } else {
                    self.status = None;
                }
                None
            }
            _ => None,
        }
    }

    fn answer_sas(&mut self, matches: bool) -> Option<Effect> {
        let call = self.call.as_mut().filter(|c| c.is_live() && c.sas.is_some() && c.sas_check == SasCheck::Pending)?;
        let peer = call.peer.clone();
        if matches {
            call.sas_check = SasCheck::Confirmed;
            call.trust = Trust::Verified;
            if let Some(c) = self.contacts.iter_mut().find(|c| c.username == peer) {
                c.trust = Trust::Verified;
            }
            Some(Effect::Command(SessionCommand::Verify(peer)))
        } else {
            // A different SAS means someone may be in the middle: stop talking, tell the peer why, and
            // distrust the contact until it is verified again.
            call.sas_check = SasCheck::Mismatch;
            call.trust = Trust::Suspicious;
            if let Some(c) = self.contacts.iter_mut().find(|c| c.username == peer) {
                c.trust = Trust::Suspicious;
            }
            let msg = format!(
                "SAS mismatch with {peer}: hung up; {peer} is marked suspicious until you compare safety numbers \
                 and run `qvoice verify {peer}`"
            );
            self.push_log(msg.clone(), true);
            self.set_status(msg);
            Some(Effect::Command(SessionCommand::SasMismatch))
        }
    }

    fn on_session(&mut self, event: SessionEvent) -> Option<Effect> {
        match event {
            SessionEvent::Registered { username, registry, .. } => {
                self.username = username;
                self.registry = Some(registry);
            }
            SessionEvent::Connection { connected, detail } => {
                if !connected {
                    self.push_log(format!("registry: {detail}"), true);
                }
                self.connected = Some((connected, detail));
            }
            SessionEvent::Contacts { contacts } => self.keeping_selection(|a| a.contacts = contacts),
            SessionEvent::Presence { username, online } => self.keeping_selection(|a| {
                if let Some(c) = a.contacts.iter_mut().find(|c| c.username == username) {
                    c.online = online;
                }
            }),
            SessionEvent::IncomingCall { call_id, from, trust } => {
                // The prompt takes over the keys: close what would hide it; typed filter text stays.
                self.overlay = None;
                self.prompt.clear();
                self.filter_editing = false;
                self.push_log(format!("incoming call from {from}"), false);
                self.incoming = Some(Incoming { call_id, from, trust });
                return self.config.bell.then_some(Effect::Bell);
            }
            SessionEvent::CallWaiting { from, .. } => {
                let msg = format!("{from} is calling (call waiting): hang up to take the call");
                self.push_log(msg.clone(), false);
                self.set_status(msg);
            }
            SessionEvent::Dialing { call_id, to } => {
                let trust = self.trust_of(&to);
                self.dialed = None;
                self.start_call(Call::new(call_id, to, Direction::Outgoing, CallPhase::Dialing, trust));
            }
            SessionEvent::Ringing { call_id, .. } => {
                if let Some(c) = self.call_mut(&call_id) {
                    c.phase = CallPhase::Ringing;
                }
            }
            SessionEvent::SasReady { call_id, peer, sas, trust } => {
                if self.call_mut(&call_id).is_none() {
                    self.start_call(Call::new(
                        call_id.clone(),
                        peer,
                        Direction::Incoming,
                        CallPhase::Connecting,
                        trust,
                    ));
                }
                if let Some(c) = self.call_mut(&call_id) {
                    if matches!(c.phase, CallPhase::Dialing | CallPhase::Ringing) {
                        c.phase = CallPhase::Connecting;
                    }
                    c.sas = Some(sas);
                    c.trust = trust;
                }
            }
            SessionEvent::Active { call_id, peer, direction, codec, frame_ms, path } => {
                let now = self.now;
                if self.call_mut(&call_id).is_none() {
                    let trust = self.trust_of(&peer);
                    self.start_call(Call::new(call_id.clone(), peer, direction, CallPhase::Active, trust));
                }
                if let Some(c) = self.call_mut(&call_id) {
                    c.phase = CallPhase::Active;
                    c.direction = direction;
                    c.codec = Some(codec);
                    c.frame_ms = frame_ms;
                    c.path = Some(path);
                    c.active_since = Some(now);
                }
                self.sparks = Sparks::default();
            }
            SessionEvent::Path { call_id, path, .. } => {
                if let Some(c) = self.call_mut(&call_id) {
                    c.path = Some(path);
                }
            }
            SessionEvent::AudioFlowing { .. } | SessionEvent::Connecting { .. } => {}
            SessionEvent::Devices { inputs, outputs, input, output } => {
                let cursor = self.devices.as_ref().map_or(0, |d| d.cursor);
                let list = DeviceList { inputs, outputs, input, output, cursor: 0 };
                let cursor = cursor.min(list.len().saturating_sub(1));
                self.devices = Some(DeviceList { cursor, ..list });
            }
            SessionEvent::Metrics { call_id, metrics } => {
                if self.call_mut(&call_id).is_some() {
                    self.sparks.push(&metrics);
                }
                if let Some(c) = self.call_mut(&call_id) {
                    c.metrics = Some(metrics);
                }
            }
            SessionEvent::Ended { call_id, peer, reason, duration_s } => {
                return self.on_ended(call_id, peer, reason, duration_s);
            }
            SessionEvent::KeyWarning { username, pinned, offered } => {
                if let Some(c) = self.contacts.iter_mut().find(|c| c.username == username) {
                    c.trust = Trust::KeyChanged;
                }
                self.push_log(format!("{username}'s identity key changed: calls blocked until verified"), true);
                self.key_warnings.retain(|w| w.username != username);
                self.key_warnings.push(KeyWarning { username, pinned, offered });
            }
            SessionEvent::Recording { on, dir } => {
                // Only the current call is ever recorded: the flag follows it.
                self.recording = on && self.media_running();
                if self.recording {
                    let d = dir.as_deref().unwrap_or("?");
                    let msg = format!("recording this call to {d}/sent.wav and {d}/received.wav");
                    self.push_log(msg.clone(), false);
                    self.set_status(msg);
                } else if let Some(d) = &dir
                    && !on
                    && self.recording_dir.is_some()
                {
                    self.push_log(format!("recording stopped; files in {d}"), false);
                }
                self.recording_dir = dir;
            }
            SessionEvent::Muted { on } => self.muted = on && self.live_call().is_some(),
            e @ (SessionEvent::IncomingFile { .. }
            | SessionEvent::FileClosed { .. }
            | SessionEvent::Files { .. }
            | SessionEvent::FileProgress { .. }
            | SessionEvent::FileSent { .. }
            | SessionEvent::FileSaved { .. }
            | SessionEvent::FileDiscarded { .. }
            | SessionEvent::FileFailed { .. }) => return self.on_file_event(e),
            SessionEvent::Error { message } => {
                self.push_log(message.clone(), true);
                self.set_status(message);
            }
            SessionEvent::History { entries } => {
                // Saved oldest first; the pane lists newest first, after anything already shown.
                for e in entries.into_iter().rev() {
                    if self.history.len() >= self.config.history_len {
                        break;
                    }
                    self.history.push_back(e);
                }
            }
            SessionEvent::Audio { usable, message } => {
                self.audio_problem =
                    if usable { None } else { message.or_else(|| Some("no usable audio device".into())) };
            }
            SessionEvent::AudioDevice { call_id, direction, device, detail, switched } => {
                let c = self.call_mut(&call_id).filter(|c| c.is_live())?;
                match direction {
                    AudioDirection::Input => c.input = Some(device.clone()),
                    AudioDirection::Output => c.output = Some(device.clone()),
                }
                if let Some(d) = &mut self.devices {
                    match direction {
                        AudioDirection::Input => d.input.clone_from(&device),
                        AudioDirection::Output => d.output.clone_from(&device),
                    }
                }
                if switched {
                    let msg = format!("{} switched to {device} ({detail})", direction.noun());
                    self.push_log(msg.clone(), false);
                    self.set_status(msg);
                }
            }
            SessionEvent::AudioSwitchFailed { message, .. } => {
                self.push_log(message.clone(), true);
                self.set_status(message);
            }
        }
        None
    }

    /// A new call replaces the shown one; per-call state (mute, recording) starts fresh.
    fn start_call(&mut self, call: Call) {
        self.call = Some(call);
        self.muted = false;
        self.recording = false;
    }

    /// The call ended: record it in the history (and have it saved), reset per-call state.
    fn on_ended(&mut self, call_id: String, peer: String, reason: EndReason, duration_s: f64) -> Option<Effect> {
        let was_incoming_prompt = self.incoming.as_ref().is_some_and(|i| i.call_id == call_id);
        if was_incoming_prompt {
            self.incoming = None;
        }
        // A dial that failed before it got a call id has no call here: it is ours, outgoing.
        let ours = self.dialed.as_deref() == Some(peer.as_str()) && !was_incoming_prompt;
        let (direction, answered) = match self.call_mut(&call_id).filter(|_| !call_id.is_empty()) {
            Some(c) => {
                let answered = c.active_since.is_some() || c.phase == CallPhase::Connecting;
                c.phase = CallPhase::Ended(reason.clone());
                c.ended_duration_s = Some(duration_s);
                (c.direction, answered)
            }
            None if ours => {
                let trust = self.trust_of(&peer);
                let mut c =
                    Call::new(call_id, peer.clone(), Direction::Outgoing, CallPhase::Ended(reason.clone()), trust);
                c.ended_duration_s = Some(0.0);
                self.call = Some(c);
                (Direction::Outgoing, false)
            }
            None => (Direction::Incoming, false),
        };
        if ours {
            self.dialed = None;
        }
        let missed = direction == Direction::Incoming
            && !answered
            && matches!(reason, EndReason::Cancelled | EndReason::Missed | EndReason::Offline);
        self.push_log(format!("call with {peer} ended: {}", reason.label()), false);
        if self.live_call().is_none() {
            self.recording = false;
            self.muted = false;
        }
        let record = CallRecord {
            at_ms: 0,
            peer,
            direction,
            reason,
            duration_ms: (duration_s.max(0.0) * 1000.0) as u64,
            missed,
        };
        self.history.push_front(record.clone());
        self.history.truncate(self.config.history_len);
        Some(Effect::Command(SessionCommand::SaveHistory(record)))
    }

    fn call_mut(&mut self, call_id: &str) -> Option<&mut Call> {
        self.call.as_mut().filter(|c| c.call_id == call_id)
    }

    pub(super) fn trust_of(&self, user: &str) -> Trust {
        self.contacts.iter().find(|c| c.username == user).map_or(Trust::New, |c| c.trust)
    }

    pub(super) fn set_status(&mut self, msg: String) {
        self.status = Some((msg, self.now));
    }

    pub(super) fn push_log(&mut self, text: String, error: bool) {
        if self.log.len() >= self.config.log_lines.max(1) {
            self.log.pop_front();
        }
        self.log.push_back(LogLine { text, error });
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyModifiers};

    use super::*;

    fn key(c: char) -> Event {
        Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }
    fn code(c: KeyCode) -> Event {
        Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
    }
    fn contact(name: &str, online: bool, trust: Trust) -> ContactView {
        ContactView { username: name.into(), display_name: None, online, trust }
    }
    fn app() -> (App, Instant) {
        let t0 = Instant::now();
        let mut a = App::new(TuiConfig::default(), "alice".into(), t0);
        a.handle(
            t0,
            Event::Session(SessionEvent::Contacts {
                contacts: vec![
                    contact("carol", false, Trust::Unverified),
                    contact("bob", true, Trust::Verified),
                    contact("echo", true, Trust::New),
                ],
            }),
        );
        (a, t0)
    }
    fn cmd(c: SessionCommand) -> Option<Effect> {
        Some(Effect::Command(c))
    }

    #[test]
    fn devices_overlay_lists_and_chooses_for_the_next_call() {
        let (mut a, t) = app();
        assert_eq!(a.handle(t, key('s')), cmd(SessionCommand::ListDevices));
        a.handle(
            t,
            Event::Session(SessionEvent::Devices {
                inputs: vec!["default".into(), "USB mic".into(), "silence".into()],
                outputs: vec!["default".into(), "null".into()],
                input: "default".into(),
                output: "default".into(),
            }),
        );
        a.handle(t, code(KeyCode::Down));
        let pick_mic = a.handle(t, code(KeyCode::Enter));
        assert_eq!(pick_mic, cmd(SessionCommand::SetDevices { input: Some("USB mic".into()), output: None }));
        // Up from the first entry wraps to the last output.
        a.handle(t, code(KeyCode::Up));
        a.handle(t, code(KeyCode::Up));
        let pick_out = a.handle(t, code(KeyCode::Enter));
        assert_eq!(pick_out, cmd(SessionCommand::SetDevices { input: None, output: Some("null".into()) }));
        a.handle(t, code(KeyCode::Esc));
        assert_eq!(a.overlay, None);
    }
    #[test]
    fn devices_overlay_switches_the_call_in_progress() {
        let (mut a, t) = app();
        a.handle(t, Event::Session(SessionEvent::Dialing { call_id: "c1".into(), to: "bob".into() }));
        let hint = |a: &App| a.mode().bindings(a).into_iter().find(|b| b.action == Action::Dial).and_then(|b| b.hint);
        a.handle(t, key('s'));
        assert_eq!(hint(&a).as_deref(), Some("use for this call"), "dialing: applies when the media starts");
        a.handle(t, code(KeyCode::Esc));
        active(&mut a, t);
        let audio = |dir, device: &str, switched| {
            Event::Session(SessionEvent::AudioDevice {
                call_id: "c1".into(),
                direction: dir,
                device: device.into(),
                detail: "\"x\" at 48000 Hz, 2 ch, F32".into(),
                switched,
            })
        };
        a.handle(t, audio(AudioDirection::Input, "default", false));
        a.handle(t, audio(AudioDirection::Output, "default", false));
        assert_eq!(a.status, None, "the devices a call starts with are shown, not announced");
        assert_eq!(a.handle(t, key('s')), cmd(SessionCommand::ListDevices));
        assert_eq!(hint(&a).as_deref(), Some("switch to it"));
        a.handle(
            t,
            Event::Session(SessionEvent::Devices {
                inputs: vec!["default".into(), "USB mic".into()],
                outputs: vec!["default".into()],
                input: "default".into(),
                output: "default".into(),
            }),
        );
        a.handle(t, code(KeyCode::Down));
        let pick = a.handle(t, code(KeyCode::Enter));
        assert_eq!(pick, cmd(SessionCommand::SetDevices { input: Some("USB mic".into()), output: None }));
        // Nothing changes until the session says the switch worked.
        assert_eq!(a.devices.as_ref().unwrap().input, "default");
        a.handle(t, audio(AudioDirection::Input, "USB mic", true));
        assert_eq!(a.devices.as_ref().unwrap().input, "USB mic");
        assert_eq!(a.call.as_ref().unwrap().input.as_deref(), Some("USB mic"));
        let status = a.status.clone().unwrap().0;
        assert!(status.starts_with("microphone switched to USB mic (\"x\" at 48000 Hz"), "{status}");
        let failed = "could not switch the speaker to \"hw:9\": audio device \"hw:9\" not found; the call goes on with \"default\"";
        a.handle(
            t,
            Event::Session(SessionEvent::AudioSwitchFailed {
                call_id: "c1".into(),
                direction: AudioDirection::Output,
                device: "hw:9".into(),
                message: failed.into(),
            }),
        );
        assert_eq!(a.status.clone().unwrap().0, failed);
        assert_eq!(a.log.back(), Some(&LogLine { text: failed.into(), error: true }));
        assert_eq!(a.call.as_ref().unwrap().output.as_deref(), Some("default"));
        // Another call's report changes nothing.
        a.handle(
            t,
            Event::Session(SessionEvent::AudioDevice {
                call_id: "old".into(),
                direction: AudioDirection::Output,
                device: "null".into(),
                detail: String::new(),
                switched: true,
            }),
        );
        assert_eq!(a.call.as_ref().unwrap().output.as_deref(), Some("default"));
    }

    fn active(a: &mut App, t: Instant) {
        a.handle(t, Event::Session(SessionEvent::Dialing { call_id: "c1".into(), to: "bob".into() }));
        a.handle(
            t,
            Event::Session(SessionEvent::SasReady {
                call_id: "c1".into(),
                peer: "bob".into(),
                sas: "9aep".into(),
                trust: Trust::Unverified,
            }),
        );
        a.handle(
            t,
            Event::Session(SessionEvent::Active {
                call_id: "c1".into(),
                peer: "bob".into(),
                direction: Direction::Outgoing,
                codec: "opus".into(),
                frame_ms: 20,
                path: "direct".into(),
            }),
        );
    }

    #[test]
    fn navigation_and_dial() {
        let (mut a, t) = app();
        // Online first, then by name: bob, echo, carol.
        assert_eq!(a.selected_contact().unwrap().username, "bob");
        assert_eq!(a.handle(t, key('j')), None);
        assert_eq!(a.handle(t, code(KeyCode::Down)), None);
        assert_eq!(a.handle(t, code(KeyCode::Down)), None);
        assert_eq!(a.selected_contact().unwrap().username, "carol");
        a.handle(t, key('k'));
        assert_eq!(a.handle(t, key('d')), cmd(SessionCommand::Dial("echo".into())));
        assert_eq!(a.handle(t, code(KeyCode::Enter)), cmd(SessionCommand::Dial("echo".into())));
        active(&mut a, t);
        assert_eq!(a.handle(t, key('d')), None, "no second call while in one (and no footer hint for it)");
        assert_eq!(a.action_for(key('d')), Action::Noop);
        assert_eq!(a.handle(t, key('h')), cmd(SessionCommand::Hangup));
        assert_eq!(a.handle(t, key('m')), cmd(SessionCommand::SetMute(true)));
        a.handle(t, Event::Session(SessionEvent::Muted { on: true }));
        assert_eq!(a.handle(t, key('m')), cmd(SessionCommand::SetMute(false)));
        assert_eq!(a.handle(t, key('R')), cmd(SessionCommand::SetRecording(true)));
    }

    #[test]
    fn filter_typing_captures_keys() {
        let (mut a, t) = app();
        assert_eq!(a.handle(t, key('/')), None);
        assert!(a.filter_editing);
        // 'd' and 'q' are text while filtering, not dial/quit.
        for c in "ca".chars() {
            assert_eq!(a.handle(t, key(c)), None);
        }
        assert_eq!(a.visible_contacts().len(), 1);
        assert_eq!(a.selected_contact().unwrap().username, "carol");
        a.handle(t, key('q'));
        assert!(a.visible_contacts().is_empty());
        a.handle(t, code(KeyCode::Backspace));
        a.handle(t, code(KeyCode::Enter));
        assert!(!a.filter_editing);
        assert_eq!(a.filter, "ca");
        assert_eq!(a.handle(t, key('d')), cmd(SessionCommand::Dial("carol".into())));
        a.handle(t, code(KeyCode::Esc));
        assert_eq!(a.filter, "");
        assert_eq!(a.visible_contacts().len(), 3);
    }

    #[test]
    fn quit_asks_only_during_a_call() {
        let (mut a, t) = app();
        assert_eq!(a.handle(t, key('q')), Some(Effect::Quit));
        active(&mut a, t);
        assert_eq!(a.handle(t, key('q')), None);
        assert_eq!(a.overlay, Some(Overlay::ConfirmQuit));
        assert_eq!(a.handle(t, key('n')), None);
        assert_eq!(a.overlay, None);
        assert!(a.live_call().is_some());
        a.handle(t, Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert_eq!(a.overlay, Some(Overlay::ConfirmQuit));
        // A second ctrl-c or y quits.
        assert_eq!(a.handle(t, key('y')), Some(Effect::Quit));
    }

    #[test]
    fn sas_confirmation_sends_verify_or_hangs_up() {
        let (mut a, t) = app();
        active(&mut a, t);
        assert!(a.sas_question());
        assert_eq!(a.handle(t, key('y')), cmd(SessionCommand::Verify("bob".into())));
        assert_eq!(a.call.as_ref().unwrap().sas_check, SasCheck::Confirmed);
        assert_eq!(a.contacts.iter().find(|c| c.username == "bob").unwrap().trust, Trust::Verified);
        assert_eq!(a.handle(t, key('y')), None, "asked once");

        let (mut a, t) = app();
        active(&mut a, t);
        assert_eq!(a.handle(t, key('n')), cmd(SessionCommand::SasMismatch));
        assert_eq!(a.call.as_ref().unwrap().sas_check, SasCheck::Mismatch);
        assert!(a.log.back().unwrap().error);
    }

    fn ended(call_id: &str, peer: &str, reason: EndReason) -> Event {
        Event::Session(SessionEvent::Ended { call_id: call_id.into(), peer: peer.into(), reason, duration_s: 0.0 })
    }
    fn ring(id: &str, from: &str) -> Event {
        Event::Session(SessionEvent::IncomingCall { call_id: id.into(), from: from.into(), trust: Trust::Unverified })
    }

    #[test]
    fn every_footer_hint_is_a_key_that_works() {
        let (mut a, t) = app();
        let mut states: Vec<(&str, App)> = Vec::new();
        let snap = |a: &App| {
            let mut b = App::new(a.config.clone(), a.username.clone(), a.now);
            b.contacts = a.contacts.clone();
            b.filter = a.filter.clone();
            b.filter_editing = a.filter_editing;
            b.call = a.call.clone();
            b.incoming = a.incoming.clone();
            b.overlay = a.overlay;
            b.muted = a.muted;
            b.recording = a.recording;
            b.key_warnings = a.key_warnings.clone();
            b.files = a.files.clone();
            b.file_cursor = a.file_cursor;
            b.files_focus = a.files_focus;
            b.uploads = a.uploads.clone();
            b.send_to = a.send_to.clone();
            b.prompt = a.prompt.clone();
            b
        };
        states.push(("idle", snap(&a)));
        a.handle(t, key('f'));
        states.push(("file prompt, empty", snap(&a)));
        a.handle(t, key('x'));
        states.push(("file prompt, typed", snap(&a)));
        a.handle(t, code(KeyCode::Esc));
        a.handle(
            t,
            Event::Session(SessionEvent::IncomingFile {
                file_id: "0123456789abcdef0123456789abcdef".into(),
                from: "bob".into(),
                size: 10,
                expires_ms: 0,
                trust: Trust::Verified,
            }),
        );
        states.push(("idle with a waiting file", snap(&a)));
        a.handle(t, key('F'));
        states.push(("files pane", snap(&a)));
        a.handle(t, code(KeyCode::Esc));
        a.handle(t, key('/'));
        states.push(("filter", snap(&a)));
        a.handle(t, ring("c9", "dave"));
        states.push(("incoming over filter", snap(&a)));
        a.handle(t, key('r'));
        a.handle(t, key(':'));
        states.push(("dial prompt", snap(&a)));
        a.handle(t, code(KeyCode::Esc));
        a.handle(t, key('?'));
        states.push(("help", snap(&a)));
        a.handle(t, code(KeyCode::Esc));
        a.handle(t, Event::Session(SessionEvent::Dialing { call_id: "c1".into(), to: "bob".into() }));
        states.push(("dialing", snap(&a)));
        active(&mut a, t);
        states.push(("sas question", snap(&a)));
        a.handle(t, key('y'));
        states.push(("active", snap(&a)));
        a.handle(t, key('q'));
        states.push(("confirm quit", snap(&a)));
        for (name, st) in states {
            let mode = st.mode();
            for b in mode.bindings(&st) {
                let Some(hint) = &b.hint else { continue };
                let k = b.keys[0];
                let mods = if k.ctrl { KeyModifiers::CONTROL } else { KeyModifiers::NONE };
                let got = st.action_for(Event::Key(KeyEvent::new(k.code, mods)));
                assert_eq!(got, b.action, "{name}: footer says {} {hint}", b.primary());
                assert_ne!(got, Action::Noop, "{name}: {hint}");
                // And the action changes the state or asks the session for something.
                let mut probe = snap(&st);
                let state = |p: &App| {
                    format!(
                        "{:?}{:?}{:?}{:?}{}{:?}{}{:?}",
                        p.overlay, p.incoming, p.call, p.filter_editing, p.filter, p.files, p.files_focus, p.uploads
                    )
                };
                let before = state(&probe);
                let effect = probe.update(got);
                let after = state(&probe);
                assert!(effect.is_some() || before != after, "{name}: `{}` ({hint}) did nothing", b.primary());
            }
        }
    }

    #[test]
    fn incoming_call_while_filtering_can_be_answered() {
        let (mut a, t) = app();
        a.handle(t, key('/'));
        a.handle(t, key('e'));
        assert_eq!(a.handle(t, ring("c1", "carol")), Some(Effect::Bell));
        assert_eq!(a.mode(), super::super::mode::Mode::Incoming);
        // Esc clears the filter behind the prompt; the call keeps ringing.
        assert_eq!(a.handle(t, code(KeyCode::Esc)), None);
        assert_eq!(a.filter, "");
        assert!(a.incoming.is_some());
        assert_eq!(a.handle(t, key('a')), cmd(SessionCommand::Accept("c1".into())));

        let (mut a, t) = app();
        a.handle(t, key('/'));
        a.handle(t, ring("c2", "carol"));
        assert_eq!(a.handle(t, key('r')), cmd(SessionCommand::Reject("c2".into())));
        assert!(!a.filter_editing, "the filter is no longer capturing keys");
    }

    #[test]
    fn enter_and_h_answer_and_decline_a_ringing_call() {
        let (mut a, t) = app();
        a.handle(t, ring("c1", "carol"));
        assert_eq!(a.handle(t, code(KeyCode::Enter)), cmd(SessionCommand::Accept("c1".into())));
        let (mut a, t) = app();
        a.handle(t, ring("c2", "carol"));
        assert_eq!(a.handle(t, key('h')), cmd(SessionCommand::Reject("c2".into())));
        // And h cancels our own ringing call.
        let (mut a, t) = app();
        a.handle(t, Event::Session(SessionEvent::Dialing { call_id: "c3".into(), to: "bob".into() }));
        a.handle(t, Event::Session(SessionEvent::Ringing { call_id: "c3".into(), to: "bob".into() }));
        assert_eq!(a.handle(t, key('h')), cmd(SessionCommand::Hangup));
    }

    #[test]
    fn mute_is_per_call() {
        let (mut a, t) = app();
        assert_eq!(a.handle(t, key('m')), None, "no mute while idle");
        a.handle(t, Event::Session(SessionEvent::Muted { on: true }));
        assert!(!a.muted, "a stray mute event outside a call is not shown");
        active(&mut a, t);
        assert_eq!(a.handle(t, key('m')), cmd(SessionCommand::SetMute(true)));
        a.handle(t, Event::Session(SessionEvent::Muted { on: true }));
        assert!(a.muted);
        a.handle(t, ended("c1", "bob", EndReason::LocalHangup));
        assert!(!a.muted);
        a.handle(t, Event::Session(SessionEvent::Dialing { call_id: "c2".into(), to: "echo".into() }));
        assert!(!a.muted);
    }

    #[test]
    fn sas_mismatch_marks_suspicious_and_blocks_dialling() {
        let (mut a, t) = app();
        active(&mut a, t);
        assert_eq!(a.handle(t, key('n')), cmd(SessionCommand::SasMismatch));
        assert_eq!(a.contacts.iter().find(|c| c.username == "bob").unwrap().trust, Trust::Suspicious);
        let saved = a.handle(t, ended("c1", "bob", EndReason::SasMismatch));
        assert!(matches!(saved, Some(Effect::Command(SessionCommand::SaveHistory(_)))));
        a.handle(t, code(KeyCode::Esc));
        assert_eq!(a.selected_contact().unwrap().username, "bob");
        assert_eq!(a.handle(t, key('d')), None, "dialling a suspicious contact is refused");
        assert!(a.status.as_ref().unwrap().0.contains("qvoice verify bob"));
    }

    #[test]
    fn failed_and_unanswered_dials_are_outgoing() {
        let (mut a, t) = app();
        for _ in 0..2 {
            a.handle(t, key('j'));
        }
        assert_eq!(a.handle(t, key('d')), cmd(SessionCommand::Dial("carol".into())));
        let saved = a.handle(t, ended("", "carol", EndReason::Offline));
        let h = &a.history[0];
        assert_eq!((h.direction, h.missed, h.outcome().as_str()), (Direction::Outgoing, false, "offline"));
        assert_eq!(saved, cmd(SessionCommand::SaveHistory(h.clone())));
        a.handle(t, Event::Session(SessionEvent::Dialing { call_id: "c2".into(), to: "echo".into() }));
        a.handle(t, Event::Session(SessionEvent::Ringing { call_id: "c2".into(), to: "echo".into() }));
        a.handle(t, ended("c2", "echo", EndReason::Missed));
        let h = &a.history[0];
        assert_eq!((h.direction, h.missed, h.outcome().as_str()), (Direction::Outgoing, false, "no answer"));
        // Someone else's call that nobody answered is a missed incoming one.
        a.handle(t, ring("c3", "carol"));
        a.handle(t, ended("c3", "carol", EndReason::Cancelled));
        assert!(a.history[0].missed);
    }

    #[test]
    fn recording_is_for_the_current_call_only() {
        let (mut a, t) = app();
        assert_eq!(a.handle(t, key('R')), None, "no recording key while idle");
        a.handle(t, Event::Session(SessionEvent::Recording { on: true, dir: Some("/r".into()) }));
        assert!(!a.recording, "REC is never shown without a call");
        active(&mut a, t);
        assert_eq!(a.handle(t, key('R')), cmd(SessionCommand::SetRecording(true)));
        a.handle(t, Event::Session(SessionEvent::Recording { on: true, dir: Some("/r/c1-bob".into()) }));
        assert!(a.recording);
        assert!(a.status.as_ref().unwrap().0.contains("/r/c1-bob/sent.wav"));
        a.handle(t, ended("c1", "bob", EndReason::LocalHangup));
        assert!(!a.recording);
    }

    #[test]
    fn cursor_stays_on_the_same_person_when_the_list_resorts() {
        let (mut a, t) = app();
        a.handle(t, key('j'));
        assert_eq!(a.selected_contact().unwrap().username, "echo");
        // carol comes online and sorts above echo: the cursor follows echo.
        a.handle(t, Event::Session(SessionEvent::Presence { username: "carol".into(), online: true }));
        assert_eq!(a.selected_contact().unwrap().username, "echo");
        a.handle(
            t,
            Event::Session(SessionEvent::Contacts {
                contacts: vec![
                    contact("aaron", true, Trust::New),
                    contact("echo", true, Trust::New),
                    contact("bob", true, Trust::Verified),
                ],
            }),
        );
        assert_eq!(a.selected_contact().unwrap().username, "echo");
    }

    #[test]
    fn dial_any_username_and_no_audio_refusal() {
        let (mut a, t) = app();
        assert_eq!(a.handle(t, key(':')), None);
        for c in "zoe".chars() {
            a.handle(t, key(c));
        }
        a.handle(t, code(KeyCode::Backspace));
        a.handle(t, key('e'));
        assert_eq!(a.handle(t, code(KeyCode::Enter)), cmd(SessionCommand::Dial("zoe".into())));
        let (mut a, t) = app();
        a.handle(t, Event::Session(SessionEvent::Audio { usable: false, message: Some("set [audio] input".into()) }));
        assert_eq!(a.handle(t, key('d')), None);
        assert!(a.status.as_ref().unwrap().0.contains("[audio] input"));
        a.handle(t, Event::Session(SessionEvent::Audio { usable: true, message: None }));
        assert_eq!(a.handle(t, key('d')), cmd(SessionCommand::Dial("bob".into())));
    }

    #[test]
    fn incoming_modal_accept_reject_and_missed() {
        let (mut a, t) = app();
        let ring = |id: &str| {
            Event::Session(SessionEvent::IncomingCall {
                call_id: id.into(),
                from: "carol".into(),
                trust: Trust::Unverified,
            })
        };
        assert_eq!(a.handle(t, ring("c1")), Some(Effect::Bell));
        // The modal swallows other keys.
        assert_eq!(a.handle(t, key('m')), None);
        assert_eq!(a.handle(t, key('j')), None);
        assert_eq!(a.handle(t, key('a')), cmd(SessionCommand::Accept("c1".into())));
        assert!(a.incoming.is_none());
        assert_eq!(a.call.as_ref().unwrap().phase, CallPhase::Connecting);

        let (mut a, t) = app();
        a.handle(t, ring("c2"));
        assert_eq!(a.handle(t, key('r')), cmd(SessionCommand::Reject("c2".into())));
        a.handle(
            t,
            Event::Session(SessionEvent::Ended {
                call_id: "c2".into(),
                peer: "carol".into(),
                reason: EndReason::Rejected,
                duration_s: 0.0,
            }),
        );
        assert!(!a.history[0].missed);

        a.handle(t, ring("c3"));
        a.handle(
            t,
            Event::Session(SessionEvent::Ended {
                call_id: "c3".into(),
                peer: "carol".into(),
                reason: EndReason::Cancelled,
                duration_s: 0.0,
            }),
        );
        assert!(a.incoming.is_none(), "prompt closes when the caller gives up");
        assert!(a.history[0].missed);
        let quiet = TuiConfig { bell: false, ..TuiConfig::default() };
        let mut b = App::new(quiet, "alice".into(), t);
        assert_eq!(b.handle(t, ring("c4")), None);
    }

    #[test]
    fn call_clock_and_end() {
        let (mut a, t) = app();
        active(&mut a, t);
        let later = t + Duration::from_secs(83);
        a.handle(later, Event::Tick);
        assert_eq!(a.live_call().unwrap().duration_s(a.now) as u64, 83);
        a.handle(
            later,
            Event::Session(SessionEvent::Ended {
                call_id: "c1".into(),
                peer: "bob".into(),
                reason: EndReason::RemoteHangup,
                duration_s: 83.2,
            }),
        );
        assert!(a.live_call().is_none());
        assert_eq!(a.handle(later, key('h')), None);
        assert_eq!(a.handle(later, key('q')), Some(Effect::Quit), "no question once the call ended");
        a.handle(later, code(KeyCode::Esc));
        assert!(a.call.is_none());
    }

    #[test]
    fn help_overlay_and_key_warning() {
        let (mut a, t) = app();
        a.handle(t, key('?'));
        assert_eq!(a.overlay, Some(Overlay::Help));
        assert_eq!(a.handle(t, key('d')), None, "keys go to the overlay");
        a.handle(t, code(KeyCode::Esc));
        assert_eq!(a.overlay, None);
        a.handle(
            t,
            Event::Session(SessionEvent::KeyWarning {
                username: "carol".into(),
                pinned: "aa".into(),
                offered: "bb".into(),
            }),
        );
        assert_eq!(a.contacts[0].trust, Trust::KeyChanged);
        assert_eq!(a.key_warnings.len(), 1);
        a.handle(t, code(KeyCode::Esc));
        assert!(a.key_warnings.is_empty());
    }

    #[test]
    fn log_is_bounded() {
        let cfg = TuiConfig { log_lines: 3, ..TuiConfig::default() };
        let t = Instant::now();
        let mut a = App::new(cfg, "alice".into(), t);
        for i in 0..10 {
            a.handle(t, Event::Log(format!("line {i}")));
        }
        assert_eq!(a.log.len(), 3);
        assert_eq!(a.log[0].text, "line 7");
    }
}
