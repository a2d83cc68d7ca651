//! The overlays as components: each one owns its key bindings with their footer hints ([`Component::bindings`],
//! read by the mode table and the footer), what those keys do ([`Component::update`]) and how it draws
//! ([`Component::render`]). The incoming-call prompt, the quit question, help, the device picker and the
//! dial prompt are overlays; the main screen (contacts, filter, call) is not.

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Widget, Wrap};

use super::app::{Action, App, Call, CallPhase, DeviceList, Effect, Overlay};
use crossterm::event::KeyCode;

use super::mode::{Binding, Mode, text_quit};
use super::ui::{centered, trust_text};
use crate::session::{Direction, SessionCommand, Trust};

/// One overlay: its keys and hints, their effect, its drawing.
pub trait Component {
    /// Whether it is on screen.
    fn shown(&self, app: &App) -> bool;
    /// The keys it answers to, in priority order, with the hints the footer shows.
    fn bindings(&self, app: &App) -> Vec<Binding>;
    /// Applies an action produced by [`Component::bindings`] (anything else does nothing).
    fn update(&self, app: &mut App, action: Action) -> Option<Effect>;
    fn render(&self, app: &App, area: Rect, buf: &mut Buffer);
}

/// The overlay that has the keys in `mode`, if the mode is an overlay.
pub fn for_mode(mode: Mode) -> Option<&'static dyn Component> {
    match mode {
        Mode::ConfirmQuit => Some(&ConfirmQuit),
        Mode::Incoming => Some(&IncomingCall),
        Mode::Help => Some(&Help),
        Mode::Devices => Some(&Devices),
        Mode::DialPrompt => Some(&DialPrompt),
        Mode::FilePrompt => Some(&FilePrompt),
        Mode::Files | Mode::Filter | Mode::SasQuestion | Mode::InCall | Mode::Idle => None,
    }
}

/// "Hang up and quit?"
#[derive(Debug)]
pub struct ConfirmQuit;
/// Someone is calling us.
#[derive(Debug)]
pub struct IncomingCall;
/// The key list.
#[derive(Debug)]
pub struct Help;
/// The audio device picker: switches the devices of the call in progress (and the next calls), or picks
/// them for the next call; the session remembers the choice in the config file.
#[derive(Debug)]
pub struct Devices;
/// Typing any username to call.
#[derive(Debug)]
pub struct DialPrompt;
/// Typing the path of a file to send to the selected contact.
#[derive(Debug)]
pub struct FilePrompt;

impl Component for ConfirmQuit {
    fn shown(&self, app: &App) -> bool {
        app.overlay == Some(Overlay::ConfirmQuit)
    }

    fn bindings(&self, app: &App) -> Vec<Binding> {
        let k = &app.config.keys;
        let b = Binding::new;
        vec![
            b(
                &[&k.yes],
                Action::Yes,
                Some(if app.live_call().is_some() || app.incoming.is_some() {
                    "hang up & quit"
                } else {
                    "stop & quit"
                }),
            ),
            b(&[&k.no, &k.cancel], Action::No, Some("stay")),
            // A second ctrl-c (or q) means it.
            b(&[&k.quit], Action::Yes, None),
        ]
    }

    fn update(&self, app: &mut App, action: Action) -> Option<Effect> {
        match action {
            Action::Yes | Action::Quit => Some(Effect::Quit),
            Action::No | Action::Cancel => {
                app.overlay = None;
                None
            }
            _ => None,
        }
    }

    fn render(&self, app: &App, area: Rect, buf: &mut Buffer) {
        let k = &app.config.keys;
        let r = centered(area, 44, 5);
        Clear.render(r, buf);
        let block = Block::bordered().border_style(Style::new().fg(Color::Red)).title(" Quit? ");
        let lines = if app.live_call().is_some() || app.incoming.is_some() {
            let peer = app.live_call().map_or("a caller", |c| c.peer.as_str());
            vec![
                Line::from(format!("You are in a call with {peer}.")).centered(),
                Line::from(format!("Hang up and quit? ({}/{})", k.yes.primary(), k.no.primary())).bold().centered(),
            ]
        } else {
            // An upload resumes when the same file is sent again; a download starts over.
            vec![
                Line::from("A file transfer is running.").centered(),
                Line::from(format!("Stop it and quit? ({}/{})", k.yes.primary(), k.no.primary())).bold().centered(),
            ]
        };
        Paragraph::new(lines).block(block).alignment(Alignment::Center).render(r, buf);
    }
}

impl Component for IncomingCall {
    fn shown(&self, app: &App) -> bool {
        app.incoming.is_some()
    }

    fn bindings(&self, app: &App) -> Vec<Binding> {
        let k = &app.config.keys;
        let b = Binding::new;
        let mut v = vec![
            b(&[&k.accept, &k.dial], Action::Accept, Some("accept")),
            b(&[&k.reject, &k.hangup], Action::Reject, Some("reject")),
        ];
        if !app.filter.is_empty() {
            v.push(b(&[&k.cancel], Action::Cancel, Some("clear filter")));
        }
        v.push(b(&[&k.quit], Action::Quit, Some("quit")));
        v
    }

    fn update(&self, app: &mut App, action: Action) -> Option<Effect> {
        let inc = app.incoming.clone()?;
        match action {
            Action::Accept => {
                if let Some(problem) = &app.audio_problem {
                    app.set_status(format!("cannot answer: {problem}"));
                    return None;
                }
                app.incoming = None;
                app.filter_editing = false;
                app.call = Some(Call::new(
                    inc.call_id.clone(),
                    inc.from,
                    Direction::Incoming,
                    CallPhase::Connecting,
                    inc.trust,
                ));
                Some(Effect::Command(SessionCommand::Accept(inc.call_id)))
            }
            Action::Reject => {
                app.incoming = None;
                Some(Effect::Command(SessionCommand::Reject(inc.call_id)))
            }
            Action::Cancel => {
                app.keeping_selection(|a| {
                    a.filter.clear();
                    a.filter_editing = false;
                });
                None
            }
            Action::Quit => {
                app.overlay = Some(Overlay::ConfirmQuit);
                None
            }
            _ => None,
        }
    }

    fn render(&self, app: &App, area: Rect, buf: &mut Buffer) {
        let Some(inc) = &app.incoming else { return };
        let k = &app.config.keys;
        let r = centered(area, 50, 10);
        Clear.render(r, buf);
        let block = Block::bordered()
            .border_type(BorderType::Double)
            .border_style(Style::new().fg(Color::Yellow).bold())
            .title(Line::from(" ☎ INCOMING CALL ").bold().centered())
            .style(Style::new().bg(Color::Black));
        let mut lines = vec![
            Line::from(""),
            Line::from(vec![Span::from(inc.from.as_str()).bold().fg(Color::White), Span::from(" is calling you")])
                .centered(),
            Line::from(trust_text(inc.trust)).centered(),
        ];
        if let Some(p) = &app.audio_problem {
            lines.push(Line::from(format!("cannot answer: {p}")).fg(Color::Red).centered());
        } else if inc.trust == Trust::KeyChanged {
            lines.push(Line::from("their key is not the one you pinned").fg(Color::Red).centered());
        } else {
            lines.push(Line::from("compare the SAS once connected").dim().centered());
        }
        lines.push(Line::from(""));
        lines.push(
            Line::from(vec![
                Span::from(format!(" {} ", k.accept.primary())).bg(Color::Green).fg(Color::Black).bold(),
                Span::from(" accept      "),
                Span::from(format!(" {} ", k.reject.primary())).bg(Color::Red).fg(Color::White).bold(),
                Span::from(" reject"),
            ])
            .centered(),
        );
        Paragraph::new(lines).block(block).wrap(Wrap { trim: false }).render(r, buf);
    }
}

impl Component for Help {
    fn shown(&self, app: &App) -> bool {
        app.overlay == Some(Overlay::Help)
    }

    fn bindings(&self, app: &App) -> Vec<Binding> {
        let k = &app.config.keys;
        let b = Binding::new;
        vec![b(&[&k.cancel, &k.help], Action::Cancel, Some("close")), b(&[&k.quit], Action::Quit, None)]
    }

    fn update(&self, app: &mut App, action: Action) -> Option<Effect> {
        match action {
            Action::Cancel | Action::ToggleHelp => {
                app.overlay = None;
                None
            }
            Action::Quit => {
                app.overlay = None;
                app.quit()
            }
            _ => None,
        }
    }

    fn render(&self, app: &App, area: Rect, buf: &mut Buffer) {
        let k = &app.config.keys;
        let rows: [(&str, String); 17] = [
            ("dial selected contact", k.dial.to_string()),
            ("call any username", k.dial_any.to_string()),
            ("send a file to the contact", k.send_file.to_string()),
            ("incoming files pane", k.files.to_string()),
            ("save / discard there", format!("enter {} / {}", k.accept.primary(), k.discard.primary())),
            ("accept incoming call", format!("{} {}", k.accept, k.dial)),
            ("reject incoming call", format!("{} {}", k.reject, k.hangup)),
            ("hang up / cancel", k.hangup.to_string()),
            ("mute / unmute", k.mute.to_string()),
            ("record on / off", k.record.to_string()),
            ("audio devices", k.devices.to_string()),
            ("filter contacts", k.filter.to_string()),
            ("move selection", format!("{} / {}", k.up, k.down)),
            ("SAS matches / not", format!("{} / {}", k.yes, k.no)),
            ("close / clear / dismiss", k.cancel.to_string()),
            ("this help", k.help.to_string()),
            ("quit", k.quit.to_string()),
        ];
        let r = centered(area, 64, rows.len() as u16 + 5);
        Clear.render(r, buf);
        let block = Block::bordered()
            .border_type(BorderType::Rounded)
            .title(Line::from(" Keys ").bold().centered())
            .title_bottom(Line::from(format!(" {} to close · rebind in [tui.keys] ", k.cancel.primary())).centered());
        let mut lines: Vec<Line> = rows
            .iter()
            .map(|(what, key)| {
                Line::from(vec![Span::from(format!(" {key:>16}  ")).fg(Color::Yellow).bold(), Span::from(*what)])
            })
            .collect();
        lines.push(Line::from(""));
        lines.push(Line::from(" ● online  ○ offline  ✔ verified  ? unverified  new: unpinned").dim());
        lines.push(Line::from(" ⚠ key changed  ✗ SAS mismatch  ≈bob! name imitates bob").dim());
        Paragraph::new(lines).block(block).render(r, buf);
    }
}

/// The picker's title and the hint of its choose key: what a choice applies to now.
fn devices_scope(app: &App) -> (&'static str, &'static str) {
    if app.media_running() {
        (" Audio devices (switch this call) ", "switch to it")
    } else if app.live_call().is_some() {
        (" Audio devices (this call) ", "use for this call")
    } else {
        (" Audio devices (next call) ", "use for the next call")
    }
}

impl Component for Devices {
    fn shown(&self, app: &App) -> bool {
        app.overlay == Some(Overlay::Devices)
    }

    fn bindings(&self, app: &App) -> Vec<Binding> {
        let k = &app.config.keys;
        let b = Binding::new;
        vec![
            b(&[&k.dial], Action::Dial, Some(devices_scope(app).1)),
            b(&[&k.up], Action::Up, None),
            b(&[&k.down], Action::Down, None),
            b(&[&k.cancel, &k.devices], Action::Cancel, Some("close")),
            b(&[&k.quit], Action::Quit, None),
        ]
    }

    fn update(&self, app: &mut App, action: Action) -> Option<Effect> {
        match action {
            Action::Cancel | Action::Devices => {
                app.overlay = None;
                None
            }
            Action::Up | Action::Down => {
                if let Some(d) = &mut app.devices {
                    let n = d.len().max(1);
                    d.cursor = if action == Action::Up { (d.cursor + n - 1) % n } else { (d.cursor + 1) % n };
                }
                None
            }
            Action::Dial => app.devices.as_ref().and_then(DeviceList::choose).map(Effect::Command),
            Action::Quit => {
                app.overlay = None;
                app.quit()
            }
            _ => None,
        }
    }

    fn render(&self, app: &App, area: Rect, buf: &mut Buffer) {
        let k = &app.config.keys;
        let Some(d) = &app.devices else {
            let r = centered(area, 40, 3);
            Clear.render(r, buf);
            let block = Block::bordered().border_type(BorderType::Rounded).title(" Audio devices ");
            Paragraph::new("looking for devices…").block(block).render(r, buf);
            return;
        };
        let rows = (d.inputs.len() + d.outputs.len() + 5) as u16;
        let r = centered(area, 60, rows.min(area.height));
        Clear.render(r, buf);
        let block = Block::bordered().border_type(BorderType::Rounded).title(devices_scope(app).0);
        let mut lines = Vec::new();
        let item = |lines: &mut Vec<Line<'static>>, idx: usize, name: &str, current: &str| {
            let cursor = if idx == d.cursor { "›" } else { " " };
            let mark = if name == current { "●" } else { "○" };
            let line = Line::from(format!("{cursor} {mark} {name}"));
            lines.push(if idx == d.cursor { line.bold() } else { line });
        };
        lines.push(Line::from("Microphone").bold());
        for (i, name) in d.inputs.iter().enumerate() {
            item(&mut lines, i, name, &d.input);
        }
        lines.push(Line::from("Speaker").bold());
        for (i, name) in d.outputs.iter().enumerate() {
            item(&mut lines, d.inputs.len() + i, name, &d.output);
        }
        lines.push(Line::from(format!("{} choose · {} close", k.dial.primary(), k.cancel.primary())).dim());
        Paragraph::new(lines).block(block).render(r, buf);
    }
}

/// The keys of a one-line text prompt: `submit` (advertised once something is typed), cancel, backspace.
fn prompt_bindings(app: &App, submit: &'static str) -> Vec<Binding> {
    vec![
        Binding::named(KeyCode::Enter, Action::PromptSubmit, (!app.prompt.trim().is_empty()).then_some(submit)),
        Binding::named(KeyCode::Esc, Action::Cancel, Some("cancel")),
        Binding::named(KeyCode::Backspace, Action::PromptBackspace, None),
        text_quit(app),
    ]
}

/// Applies typing and backspace to the prompt; whether `action` was one of them.
fn edit_prompt(app: &mut App, action: &Action) -> bool {
    match action {
        Action::PromptInput(c) => app.prompt.push(*c),
        Action::PromptBackspace => {
            app.prompt.pop();
        }
        _ => return false,
    }
    true
}

impl Component for DialPrompt {
    fn shown(&self, app: &App) -> bool {
        app.overlay == Some(Overlay::DialPrompt)
    }

    fn bindings(&self, app: &App) -> Vec<Binding> {
        prompt_bindings(app, "call")
    }

    fn update(&self, app: &mut App, action: Action) -> Option<Effect> {
        if edit_prompt(app, &action) {
            return None;
        }
        match action {
            Action::PromptSubmit => {
                let name = app.prompt.trim().to_owned();
                if name.is_empty() {
                    return None;
                }
                app.overlay = None;
                app.prompt.clear();
                app.dial(name)
            }
            Action::Cancel => {
                app.overlay = None;
                app.prompt.clear();
                None
            }
            Action::Quit => Some(Effect::Quit),
            _ => None,
        }
    }

    fn render(&self, app: &App, area: Rect, buf: &mut Buffer) {
        let r = centered(area, 44, 5);
        Clear.render(r, buf);
        let block = Block::bordered().border_type(BorderType::Rounded).title(" Call a username ");
        let lines = vec![
            Line::from(vec![Span::from("name: "), Span::from(format!("{}▏", app.prompt)).bold()]),
            Line::from("enter to call · esc to cancel").dim(),
        ];
        Paragraph::new(lines).block(block).render(r, buf);
    }
}

impl Component for FilePrompt {
    fn shown(&self, app: &App) -> bool {
        app.overlay == Some(Overlay::FilePrompt)
    }

    fn bindings(&self, app: &App) -> Vec<Binding> {
        prompt_bindings(app, "send")
    }

    fn update(&self, app: &mut App, action: Action) -> Option<Effect> {
        if edit_prompt(app, &action) {
            return None;
        }
        match action {
            Action::PromptSubmit => app.submit_send_file(),
            Action::Cancel => {
                app.overlay = None;
                app.prompt.clear();
                app.send_to = None;
                None
            }
            Action::Quit => Some(Effect::Quit),
            _ => None,
        }
    }

    fn render(&self, app: &App, area: Rect, buf: &mut Buffer) {
        let r = centered(area, 64, 6);
        Clear.render(r, buf);
        let to = app.send_to.as_deref().unwrap_or("?");
        let block = Block::bordered().border_type(BorderType::Rounded).title(format!(" Send a file to {to} "));
        // The end of a long path is the part being typed: show that.
        let room = r.width.saturating_sub(10) as usize;
        let typed: String = {
            let n = app.prompt.chars().count();
            if n > room {
                format!("…{}", app.prompt.chars().skip(n + 1 - room).collect::<String>())
            } else {
                app.prompt.clone()
            }
        };
        let lines = vec![
            Line::from(vec![Span::from("path: "), Span::from(format!("{typed}▏")).bold()]),
            Line::from("end-to-end encrypted; waits at the registry until saved").dim(),
            Line::from("enter to send · esc to cancel · ~/ is your home folder").dim(),
        ];
        Paragraph::new(lines).block(block).render(r, buf);
    }
}
