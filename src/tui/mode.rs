//! The one table of TUI modes. [`App::mode`] computes which mode the screen is in; [`Mode::bindings`] lists
//! the keys that mode answers to, each with the action it produces and the hint the footer shows for it. Key
//! dispatch ([`App::action_for`]) and the footer both read this table, so the footer can only advertise a
//! key that does something, and a key does nothing unless its mode lists it (gitui's `commands()` beside
//! `event()`). Overlay modes (help, devices, quit question, dial prompt, incoming call) take their bindings
//! from the overlay's component ([`super::overlays`]), which also handles those keys and draws itself.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::{Action, App, CallPhase, Overlay};
use super::keys::{KeyChord, KeySpec};
use super::overlays;
use crate::session::Trust;

/// What the screen is doing, from the most to the least urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// "Hang up and quit?" (drawn above everything, the incoming call included).
    ConfirmQuit,
    /// Someone is calling: accept or reject.
    Incoming,
    /// The key list.
    Help,
    /// The audio device picker.
    Devices,
    /// Typing a username to call.
    DialPrompt,
    /// Typing the path of a file to send.
    FilePrompt,
    /// The Files pane has the keys: save or discard incoming files.
    Files,
    /// Typing a contacts filter.
    Filter,
    /// In a call whose SAS the user has not compared yet.
    SasQuestion,
    /// Dialing, ringing, connecting or active.
    InCall,
    /// No call in progress.
    Idle,
}

/// One key binding of a mode: the keys, what they do, and the footer hint (none: works but not advertised).
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub keys: Vec<KeyChord>,
    pub action: Action,
    pub hint: Option<String>,
}

impl Binding {
    pub(super) fn new(keys: &[&KeySpec], action: Action, hint: Option<&str>) -> Self {
        let keys = keys.iter().flat_map(|k| k.chords().iter().copied()).collect();
        Self { keys, action, hint: hint.map(str::to_owned) }
    }

    pub(super) fn named(code: KeyCode, action: Action, hint: Option<&str>) -> Self {
        Self { keys: vec![KeyChord { code, ctrl: false, alt: false }], action, hint: hint.map(str::to_owned) }
    }

    pub fn matches(&self, key: &KeyEvent) -> bool {
        self.keys.iter().any(|c| c.matches(key))
    }

    /// The first key, as the footer shows it.
    pub fn primary(&self) -> String {
        self.keys.first().map(ToString::to_string).unwrap_or_default()
    }
}

/// While typing, only the ctrl/alt quit keys quit (`q` is a letter then).
pub(super) fn text_quit(app: &App) -> Binding {
    let keys = app.config.keys.quit.chords().iter().copied().filter(|c| c.ctrl || c.alt).collect();
    Binding { keys, action: Action::Quit, hint: None }
}

impl Mode {
    /// Whether printable keys that no binding takes are typed text.
    pub fn takes_text(self) -> bool {
        matches!(self, Self::Filter | Self::DialPrompt | Self::FilePrompt)
    }

    /// The keys this mode answers to, in priority order, with their hints.
    pub fn bindings(self, app: &App) -> Vec<Binding> {
        let k = &app.config.keys;
        let b = Binding::new;
        match self {
            Self::ConfirmQuit | Self::Incoming | Self::Help | Self::Devices | Self::DialPrompt | Self::FilePrompt => {
                overlays::for_mode(self).map_or_else(Vec::new, |c| c.bindings(app))
            }
            Self::Files => {
                let idle = app.selected_file().is_some_and(|f| f.download.is_none() && !f.discarding);
                vec![
                    Binding::named(KeyCode::Enter, Action::SaveFile, idle.then_some("save")),
                    b(&[&k.accept], Action::SaveFile, None),
                    b(&[&k.discard], Action::DiscardFile, idle.then_some("discard")),
                    b(&[&k.cancel, &k.files], Action::Cancel, Some("back")),
                    b(&[&k.quit], Action::Quit, Some("quit")),
                    b(&[&k.up], Action::Up, None),
                    b(&[&k.down], Action::Down, None),
                ]
            }
            Self::Filter => vec![
                Binding::named(KeyCode::Enter, Action::FilterDone, Some("keep filter")),
                Binding::named(KeyCode::Esc, Action::Cancel, Some("clear")),
                Binding::named(KeyCode::Backspace, Action::FilterBackspace, None),
                Binding::named(KeyCode::Up, Action::Up, None),
                Binding::named(KeyCode::Down, Action::Down, None),
                text_quit(app),
            ],
            Self::SasQuestion | Self::InCall => {
                let mut v = Vec::new();
                if self == Self::SasQuestion {
                    v.push(b(&[&k.yes], Action::Yes, Some("keys match")));
                    v.push(b(&[&k.no], Action::No, Some("mismatch")));
                }
                let call = app.live_call();
                let setup = call.is_some_and(|c| matches!(c.phase, CallPhase::Dialing | CallPhase::Ringing));
                v.push(b(&[&k.hangup], Action::Hangup, Some(if setup { "cancel" } else { "hang up" })));
                v.push(b(&[&k.mute], Action::ToggleMute, Some(if app.muted { "unmute" } else { "mute" })));
                if app.media_running() {
                    v.push(b(&[&k.record], Action::ToggleRecord, Some(if app.recording { "stop rec" } else { "rec" })));
                }
                v.push(b(&[&k.help], Action::ToggleHelp, Some("help")));
                v.push(b(&[&k.quit], Action::Quit, Some("quit")));
                // The picker switches the running call's devices (shown when the footer has room).
                v.push(b(&[&k.devices], Action::Devices, Some("devices")));
                v.push(b(&[&k.send_file], Action::SendFile, None));
                v.push(b(&[&k.files], Action::FocusFiles, None));
                v.push(b(&[&k.filter], Action::StartFilter, None));
                v.push(b(&[&k.up], Action::Up, None));
                v.push(b(&[&k.down], Action::Down, None));
                v.push(b(&[&k.cancel], Action::Cancel, None));
                v
            }
            Self::Idle => {
                // Offline or without audio the dial keys only explain why not: bound, not advertised.
                let can_call = app.audio_problem.is_none() && !matches!(app.connected, Some((false, _)));
                let mut v = Vec::new();
                let dial_hint = (can_call && app.selected_contact().is_some()).then_some("dial");
                v.push(b(&[&k.dial], Action::Dial, dial_hint));
                v.push(b(&[&k.dial_any], Action::DialAny, can_call.then_some("call name")));
                v.push(b(&[&k.filter], Action::StartFilter, Some("filter")));
                v.push(b(&[&k.devices], Action::Devices, Some("devices")));
                v.push(b(&[&k.help], Action::ToggleHelp, Some("help")));
                v.push(b(&[&k.quit], Action::Quit, Some("quit")));
                // After quit: the files hint (when files wait) and then the send hint fit at 80 columns.
                v.push(b(&[&k.files], Action::FocusFiles, (!app.files.is_empty()).then_some("files")));
                let online = !matches!(app.connected, Some((false, _)));
                let sendable = app.selected_contact().is_some_and(|c| c.trust != Trust::Suspicious);
                let send_hint = (online && sendable).then_some("file");
                v.push(b(&[&k.send_file], Action::SendFile, send_hint));
                v.push(b(&[&k.up], Action::Up, None));
                v.push(b(&[&k.down], Action::Down, None));
                let dismiss = if !app.filter.is_empty() {
                    Some("clear filter")
                } else if !app.key_warnings.is_empty() || app.call.is_some() {
                    Some("dismiss")
                } else {
                    None
                };
                v.push(b(&[&k.cancel], Action::Cancel, dismiss));
                v
            }
        }
    }

    /// Maps a key press to this mode's action (typed text in text modes); [`Action::Noop`] when unbound.
    pub fn action_for(self, app: &App, key: &KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Noop;
        }
        if let Some(b) = self.bindings(app).into_iter().find(|b| b.matches(key)) {
            return b.action;
        }
        match key.code {
            KeyCode::Char(c)
                if self.takes_text() && !key.modifiers.intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                if self == Self::Filter { Action::FilterInput(c) } else { Action::PromptInput(c) }
            }
            _ => Action::Noop,
        }
    }
}

impl App {
    /// The mode the screen is in now (see [`Mode`]).
    pub fn mode(&self) -> Mode {
        match self.overlay {
            Some(Overlay::ConfirmQuit) => return Mode::ConfirmQuit,
            _ if self.incoming.is_some() => return Mode::Incoming,
            Some(Overlay::Help) => return Mode::Help,
            Some(Overlay::Devices) => return Mode::Devices,
            Some(Overlay::DialPrompt) => return Mode::DialPrompt,
            Some(Overlay::FilePrompt) => return Mode::FilePrompt,
            None => {}
        }
        if self.files_focused() {
            Mode::Files
        } else if self.filter_editing {
            Mode::Filter
        } else if self.sas_question() {
            Mode::SasQuestion
        } else if self.live_call().is_some() {
            Mode::InCall
        } else {
            Mode::Idle
        }
    }
}
