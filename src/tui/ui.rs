//! Rendering: `impl Widget for &App`. Reads the state, never changes it. The full layout needs 70x20; below
//! that the screen collapses to the one pane that matters (the call when there is one, else the contacts), and
//! the incoming-call prompt is drawn at any size.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Sparkline, StatefulWidget, Widget, Wrap};

use super::app::{App, Call, CallPhase, SasCheck};
use super::bigtext;
use super::files::{Transfer, human_bytes, human_pair, time_left};
use super::overlays::{Component, ConfirmQuit, Devices, DialPrompt, FilePrompt, Help, IncomingCall};
use crate::media::MetricsSnapshot;
use crate::session::{Direction, Trust};

const FULL_W: u16 = 70;
const FULL_H: u16 = 20;
const CONTACTS_W: u16 = 26;
const CALL_H: u16 = 8;
const LOG_H: u16 = 4;
const HISTORY_H: u16 = 7;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width < 24 || area.height < 6 {
            tiny(self, area, buf);
        } else {
            // Up to three lines, so a message with the settings to change is read whole.
            let banner_h = banner_text(self)
                .map_or(0, |t| (t.chars().count().div_ceil(area.width.max(1) as usize)).clamp(1, 3) as u16);
            let [header, banner, body, footer] = Layout::vertical([
                Constraint::Length(1),
                Constraint::Length(banner_h),
                Constraint::Fill(1),
                Constraint::Length(1),
            ])
            .areas(area);
            render_header(self, header, buf);
            render_banner(self, banner, buf);
            render_footer(self, footer, buf);
            if area.width >= FULL_W && area.height >= FULL_H {
                full_body(self, body, buf);
            } else {
                compact_body(self, body, buf);
            }
        }
        // Overlays draw themselves; nothing but the quit question may cover an incoming call.
        let overlays: [&dyn Component; 6] = [&Help, &Devices, &DialPrompt, &FilePrompt, &IncomingCall, &ConfirmQuit];
        for o in overlays {
            if o.shown(self) {
                o.render(self, area, buf);
            }
        }
    }
}

fn full_body(app: &App, area: Rect, buf: &mut Buffer) {
    let [main, log] = Layout::vertical([Constraint::Fill(1), Constraint::Length(LOG_H)]).areas(area);
    let [left, right] = Layout::horizontal([Constraint::Length(CONTACTS_W), Constraint::Fill(1)]).areas(main);
    let [contacts, history] = Layout::vertical([Constraint::Fill(1), Constraint::Length(HISTORY_H)]).areas(left);
    let files_h = files_height(app);
    let [call, files, gauges] =
        Layout::vertical([Constraint::Length(CALL_H), Constraint::Length(files_h), Constraint::Fill(1)]).areas(right);
    render_contacts(app, contacts, buf);
    render_history(app, history, buf);
    render_call(app, call, buf);
    if files_h > 0 {
        render_files(app, files, buf);
    }
    render_gauges(app, gauges, buf);
    render_log(app, log, buf);
}

fn compact_body(app: &App, area: Rect, buf: &mut Buffer) {
    if app.call.is_some() {
        let call_h = CALL_H.min(area.height);
        let [call, gauges] = Layout::vertical([Constraint::Length(call_h), Constraint::Fill(1)]).areas(area);
        render_call(app, call, buf);
        render_gauges(app, gauges, buf);
    } else if app.files_focused() || !app.uploads.is_empty() {
        let files_h = files_height(app).min(area.height);
        let [files, contacts] = Layout::vertical([Constraint::Length(files_h), Constraint::Fill(1)]).areas(area);
        render_files(app, files, buf);
        render_contacts(app, contacts, buf);
    } else {
        render_contacts(app, area, buf);
    }
}

/// Rows of the Files pane kept on screen at most (the cursor scrolls through the rest).
const FILES_ROWS: usize = 6;

/// The Files pane's height: none when nothing is sent or waiting.
fn files_height(app: &App) -> u16 {
    let rows = app.uploads.len() + app.files.len();
    if rows == 0 { 0 } else { rows.min(FILES_ROWS) as u16 + 2 }
}

/// `███░░░░ 42% 4.2/10.0 MiB 1.1 MiB/s`
fn progress_spans(t: &Transfer, now: std::time::Instant, bar_w: usize) -> Vec<Span<'static>> {
    let filled = ((t.ratio() * bar_w as f64).round() as usize).min(bar_w);
    let rate = t.rate(now).map(|r| format!(" {}/s", human_bytes(r as u64))).unwrap_or_default();
    vec![
        Span::from("█".repeat(filled)).fg(Color::Green),
        Span::from("░".repeat(bar_w - filled)).fg(Color::DarkGray),
        Span::from(format!("{:>3.0}% ", t.ratio() * 100.0)).bold(),
        Span::from(format!("{}{rate}", human_pair(t.done, t.total))),
    ]
}

/// Files we send (↑) and files waiting for us (↓), with progress gauges while they move.
fn render_files(app: &App, area: Rect, buf: &mut Buffer) {
    let focused = app.files_focused();
    let k = &app.config.keys;
    let title = match (app.files.len(), focused) {
        (0, _) => " Files ".to_string(),
        (n, true) => format!(" Files ({n} waiting) "),
        (n, false) => format!(" Files ({n} waiting · {} to open) ", k.files.primary()),
    };
    let block = Block::bordered().title(title).border_style(if focused {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    });
    let inner = block.inner(area);
    block.render(area, buf);
    let bar_w = (inner.width as usize / 10).clamp(4, 16);
    // The name gets what the gauge and the numbers leave (at least 8 columns).
    let row = |mut head: Vec<Span<'static>>, name: &str, tail: Vec<Span<'static>>| {
        let used: usize = head.iter().chain(&tail).map(Span::width).sum();
        let name_w = (inner.width as usize).saturating_sub(used + 2).max(8);
        head.push(Span::from(format!(" {} ", truncate(name, name_w))));
        head.extend(tail);
        head
    };
    let mut lines: Vec<Line> = Vec::new();
    for u in &app.uploads {
        let head = vec![Span::from(" ↑ ").fg(Color::Cyan), Span::from(truncate(&u.to, 10)).bold()];
        let tail = match &u.progress {
            Some(t) => progress_spans(t, app.now, bar_w),
            None => vec![Span::from("encrypting…").dim()],
        };
        lines.push(Line::from(row(head, u.name(), tail)));
    }
    // Keep the cursor in view.
    let room = (inner.height as usize).saturating_sub(lines.len()).max(1);
    let skip = app.file_cursor.saturating_sub(room - 1);
    for (i, f) in app.files.iter().enumerate().skip(skip) {
        let cursor = focused && i == app.file_cursor;
        let head = vec![
            Span::from(if cursor { "›↓ " } else { " ↓ " }).fg(Color::Magenta),
            Span::from(format!("{} ", truncate(&f.from, 10))).bold(),
            trust_mark(f.trust),
        ];
        let tail = if let Some(t) = &f.download {
            progress_spans(t, app.now, bar_w)
        } else if f.discarding {
            vec![Span::from("discarding…").dim()]
        } else if f.trust == Trust::KeyChanged {
            vec![Span::from(format!("⚠ key changed: qvoice verify {}", f.from)).fg(Color::Red)]
        } else if let Some(p) = &f.problem {
            vec![Span::from(format!("⚠ {p}")).fg(Color::Red)]
        } else {
            let mut v = vec![Span::from(human_bytes(f.size))];
            if app.wall_ms > 0 {
                v.push(Span::from(format!("  {}", time_left(f.expires_ms, app.wall_ms))).dim());
            }
            v
        };
        let line = Line::from(row(head, &f.label(), tail));
        lines.push(if cursor { line.add_modifier(Modifier::REVERSED) } else { line });
    }
    Paragraph::new(lines).render(inner, buf);
}

/// Below 24x6: a few lines of plain text, still saying what the call is doing.
fn tiny(app: &App, area: Rect, buf: &mut Buffer) {
    let mut lines = vec![Line::from("qvoice".bold())];
    match &app.call {
        Some(c) => {
            lines.push(Line::from(format!("{} {}", phase_label(c), c.peer)));
            lines.push(Line::from(clock(c.duration_s(app.now))));
        }
        None => lines.push(Line::from("enlarge terminal".dim())),
    }
    Paragraph::new(lines).render(area, buf);
}

fn render_header(app: &App, area: Rect, buf: &mut Buffer) {
    let bar = Style::new().bg(Color::Blue).fg(Color::White);
    buf.set_style(area, bar);
    let mut left = vec![Span::from(" qvoice ").bold(), Span::from("│ "), Span::from(app.username.as_str()).bold()];
    if let Some(r) = &app.registry {
        left.push(Span::from(format!(" @ {r}")));
    }
    match &app.connected {
        Some((true, _)) => left.push(Span::from("  ● online").fg(Color::LightGreen)),
        Some((false, _)) => left.push(Span::from("  ○ offline").fg(Color::LightRed)),
        None => left.push(Span::from("  ○ connecting").fg(Color::Gray)),
    }
    let mut right = Vec::new();
    if app.audio_problem.is_some() {
        right.push(Span::from(" NO AUDIO DEVICE ").bg(Color::Red).fg(Color::White).bold());
        right.push(Span::from(" "));
    }
    if app.muted {
        right.push(Span::from(" MUTED ").bg(Color::Yellow).fg(Color::Black).bold());
        right.push(Span::from(" "));
    }
    if app.recording {
        right.push(Span::from(" ● REC ").bg(Color::Red).fg(Color::White).bold());
        right.push(Span::from(" "));
    }
    let right_line = Line::from(right);
    let rw = (right_line.width() as u16).min(area.width);
    let [l, r] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(rw)]).areas(area);
    Line::from(left).render(l, buf);
    right_line.render(r, buf);
}

/// The line under the header: a key-change warning first, else a status message, else the audio problem.
fn banner_text(app: &App) -> Option<String> {
    let Some(w) = app.key_warnings.last() else {
        if let Some((msg, _)) = &app.status {
            return Some(format!(" {msg}"));
        }
        return app.audio_problem.as_ref().map(|p| format!(" ⚠ {p}"));
    };
    let more = match app.key_warnings.len() {
        1 => String::new(),
        n => format!(" (+{} more)", n - 1),
    };
    Some(format!(" ⚠ {}'s KEY CHANGED. Calls blocked until you run: qvoice verify {}{more}", w.username, w.username))
}

fn render_banner(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(text) = banner_text(app) else { return };
    let style = if app.key_warnings.is_empty() {
        Style::new().bg(Color::Yellow).fg(Color::Black)
    } else {
        Style::new().bg(Color::Red).fg(Color::White).add_modifier(Modifier::BOLD)
    };
    buf.set_style(area, style);
    Paragraph::new(text).wrap(Wrap { trim: false }).render(area, buf);
}

/// The footer lists exactly the hinted bindings of the current mode ([`App::mode`]): nothing else.
fn render_footer(app: &App, area: Rect, buf: &mut Buffer) {
    let mode = app.mode();
    let mut spans = vec![Span::from(" ")];
    if mode.takes_text() {
        spans.push(Span::from("type  ").dim());
    }
    // Whole hints only, in the table's order (most important first): a cut-off hint would lie.
    let mut width: usize = spans.iter().map(Span::width).sum();
    for b in mode.bindings(app) {
        let Some(hint) = &b.hint else { continue };
        let key = format!(" {} ", b.primary());
        let what = format!(" {hint}  ");
        let w = key.chars().count() + what.trim_end().chars().count() + 1;
        if width + w > area.width as usize {
            break;
        }
        width += key.chars().count() + what.chars().count();
        spans.push(Span::from(key).bg(Color::DarkGray).fg(Color::White).bold());
        spans.push(Span::from(what));
    }
    Line::from(spans).render(area, buf);
}

fn trust_mark(t: Trust) -> Span<'static> {
    match t {
        Trust::Verified => Span::from("✔").fg(Color::Green),
        Trust::Unverified => Span::from("?").fg(Color::Yellow),
        Trust::KeyChanged => Span::from("⚠").fg(Color::Red).bold(),
        Trust::New => Span::from("new").fg(Color::Cyan),
        Trust::Suspicious => Span::from("✗").fg(Color::Red).bold(),
    }
}

pub(super) fn trust_text(t: Trust) -> Span<'static> {
    match t {
        Trust::Verified => Span::from("✔ verified").fg(Color::Green),
        Trust::Unverified => Span::from("? unverified").fg(Color::Yellow),
        Trust::KeyChanged => Span::from("⚠ KEY CHANGED").fg(Color::Red).bold(),
        Trust::New => Span::from("new contact (first call)").fg(Color::Cyan),
        Trust::Suspicious => Span::from("✗ SUSPICIOUS (SAS mismatch)").fg(Color::Red).bold(),
    }
}

fn render_contacts(app: &App, area: Rect, buf: &mut Buffer) {
    let visible = app.visible_contacts();
    let online = app.contacts.iter().filter(|c| c.online).count();
    let mut block = Block::bordered().title(format!(" Contacts {online}/{} ", app.contacts.len()));
    if app.filter_editing || !app.filter.is_empty() {
        let cursor = if app.filter_editing { "▏" } else { "" };
        block = block.title_bottom(Line::from(format!(" /{}{cursor} ", app.filter)).fg(Color::Yellow));
    }
    let inner_w = area.width.saturating_sub(2) as usize;
    let items: Vec<ListItem> = visible
        .iter()
        .map(|c| {
            let dot =
                if c.online { Span::from("● ").fg(Color::Green) } else { Span::from("○ ").fg(Color::DarkGray) };
            let mark = trust_mark(c.trust);
            let name_w = inner_w.saturating_sub(2 + 2 + 4);
            // Usernames everywhere (they are what calls, history and the SAS refer to); a display name
            // follows, dimmed, where there is room. A name that imitates a contact says so.
            let look = app.lookalike_of(&c.username);
            let extra = match (look, c.display_name.as_deref()) {
                (Some(other), _) => format!(" ≈{other}!"),
                (None, Some(d)) if d != c.username => format!(" {d}"),
                _ => String::new(),
            };
            let name = truncate(&c.username, name_w);
            let extra = truncate(&extra, name_w.saturating_sub(name.chars().count()));
            let pad = name_w.saturating_sub(name.chars().count() + extra.chars().count()) + 4 - mark.width().min(4);
            let name_span = if c.online { Span::from(name) } else { Span::from(name).fg(Color::DarkGray) };
            let extra_span =
                if look.is_some() { Span::from(extra).fg(Color::Red).bold() } else { Span::from(extra).dim() };
            ListItem::new(Line::from(vec![dot, name_span, extra_span, Span::from(" ".repeat(pad)), mark]))
        })
        .collect();
    let empty = items.is_empty();
    let list = List::new(items)
        .block(block)
        .highlight_symbol("› ")
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = ListState::default().with_selected((!empty).then_some(app.selected));
    StatefulWidget::render(list, area, buf, &mut state);
    if empty && area.height > 2 {
        let msg = if app.contacts.is_empty() { "no contacts yet" } else { "no match" };
        let inner = Rect { x: area.x + 2, y: area.y + 1, width: area.width.saturating_sub(4), height: 1 };
        Line::from(msg).dim().render(inner, buf);
    }
}

fn render_history(app: &App, area: Rect, buf: &mut Buffer) {
    let missed = app.history.iter().filter(|h| h.missed).count();
    let title = if missed > 0 { format!(" History · {missed} missed ") } else { " History ".into() };
    let block = Block::bordered().title(title);
    let inner_w = area.width.saturating_sub(2) as usize;
    let lines: Vec<Line> = app
        .history
        .iter()
        .map(|h| {
            let arrow = match h.direction {
                Direction::Outgoing => "↗ ",
                Direction::Incoming => "↙ ",
            };
            let detail = h.outcome();
            let name_w = inner_w.saturating_sub(2 + detail.chars().count() + 1).max(1);
            let name = truncate(&h.peer, name_w);
            let pad = name_w.saturating_sub(name.chars().count()) + 1;
            let style = if h.missed { Style::new().fg(Color::Red) } else { Style::new() };
            Line::from(vec![Span::from(arrow), Span::from(name), Span::from(" ".repeat(pad)), Span::from(detail)])
                .style(style)
        })
        .collect();
    let p = if lines.is_empty() { Paragraph::new(Line::from("no calls yet").dim()) } else { Paragraph::new(lines) };
    p.block(block).render(area, buf);
}

fn phase_label(c: &Call) -> &'static str {
    match c.phase {
        CallPhase::Dialing => "DIALING",
        CallPhase::Ringing => "RINGING",
        CallPhase::Connecting => "CONNECTING",
        CallPhase::Active => "ACTIVE",
        CallPhase::Ended(_) => "ENDED",
    }
}

fn phase_style(c: &Call) -> Style {
    let s = Style::new().bold();
    match c.phase {
        CallPhase::Dialing | CallPhase::Ringing => s.fg(Color::Yellow),
        CallPhase::Connecting => s.fg(Color::Cyan),
        CallPhase::Active => s.fg(Color::Green),
        CallPhase::Ended(_) => s.fg(Color::Red),
    }
}

fn render_call(app: &App, area: Rect, buf: &mut Buffer) {
    let block = Block::bordered().title(" Call ");
    let inner = block.inner(area);
    block.render(area, buf);
    let k = &app.config.keys;
    let Some(c) = &app.call else {
        let lines = vec![
            Line::from("No call.".bold()),
            Line::from(""),
            Line::from(format!(
                "Select a contact ({}/{}) and press {} to dial.",
                k.up.primary(),
                k.down.primary(),
                k.dial.primary()
            )),
            Line::from(format!("Press {} for all keys.", k.help.primary())).dim(),
        ];
        Paragraph::new(lines).wrap(Wrap { trim: true }).render(inner, buf);
        return;
    };
    let sas_w = (bigtext::width("9aep") as u16 + 1).min(inner.width / 2);
    let show_big = c.is_live() && inner.width >= 50 && inner.height as usize > bigtext::HEIGHT;
    let [info, sas_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(if show_big { sas_w } else { 0 })]).areas(inner);

    let arrow = match c.direction {
        Direction::Outgoing => "↗ to",
        Direction::Incoming => "↙ from",
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("● {}", phase_label(c)), phase_style(c)),
            Span::from("  "),
            Span::from(clock(c.duration_s(app.now))).bold(),
        ]),
        Line::from(vec![
            Span::from(format!("{arrow} ")),
            Span::from(c.peer.as_str()).bold(),
            Span::from("  "),
            trust_text(c.trust),
        ]),
    ];
    if let CallPhase::Ended(reason) = &c.phase {
        lines.push(Line::from(vec![Span::from("reason "), Span::from(reason.label()).fg(Color::Red).bold()]));
    }
    match &c.codec {
        Some(codec) => lines.push(Line::from(format!("codec  {codec} · {} ms frames", c.frame_ms))),
        None if c.is_live() => lines.push(Line::from("codec  negotiating…").dim()),
        None => {}
    }
    if let Some(p) = &c.path {
        lines.push(Line::from(format!("path   {p}")));
    }
    if c.is_live() && (c.input.is_some() || c.output.is_some()) {
        // A WAV file by its name: the folder rarely fits.
        let short = |d: &str| match std::path::Path::new(d).file_name() {
            Some(f) if d.ends_with(".wav") => f.to_string_lossy().into_owned(),
            _ => d.to_owned(),
        };
        // Each name gets half of what the pane leaves beside "mic " and " · spk ".
        let room = (usize::from(info.width).saturating_sub(11) / 2).max(4);
        let name = |d: &Option<String>| d.as_deref().map_or_else(|| "?".to_owned(), |d| truncate(&short(d), room));
        lines.push(Line::from(format!("mic {} · spk {}", name(&c.input), name(&c.output))));
    }
    if !show_big
        && c.is_live()
        && let Some(sas) = &c.sas
    {
        lines.push(sas_line(app, c, sas));
    }
    if !c.is_live() {
        lines.push(Line::from(format!("{} dismiss", k.cancel.primary())).dim());
    }
    Paragraph::new(lines).wrap(Wrap { trim: false }).render(info, buf);

    if !show_big {
        return;
    }
    match &c.sas {
        Some(sas) if c.is_live() => {
            let style = match c.sas_check {
                SasCheck::Pending => Style::new().fg(Color::Yellow).bold(),
                SasCheck::Confirmed => Style::new().fg(Color::Green).bold(),
                SasCheck::Mismatch => Style::new().fg(Color::Red).bold(),
            };
            let mut big: Vec<Line> = bigtext::render(sas).into_iter().map(|r| Line::styled(r, style)).collect();
            big.push(sas_line(app, c, sas));
            Paragraph::new(big).render(sas_area, buf);
        }
        None if c.is_live() => {
            Paragraph::new(vec![Line::from("SAS").dim(), Line::from("after handshake…").dim()]).render(sas_area, buf);
        }
        _ => {}
    }
}

fn sas_line<'a>(app: &App, c: &Call, sas: &str) -> Line<'a> {
    let k = &app.config.keys;
    match c.sas_check {
        SasCheck::Pending => Line::from(vec![
            Span::from(format!("SAS {sas} · ")).bold(),
            Span::from(format!("match? ({}/{})", k.yes.primary(), k.no.primary())).fg(Color::Yellow).bold(),
        ]),
        SasCheck::Confirmed => Line::from(format!("SAS {sas} ✔ keys match")).fg(Color::Green),
        SasCheck::Mismatch => Line::from(format!("SAS {sas} ✗ MISMATCH")).fg(Color::Red).bold(),
    }
}

fn metric_lines(m: &MetricsSnapshot) -> Vec<Line<'static>> {
    let label = |s: &'static str| Span::from(s).fg(Color::Gray);
    let mos_color = if m.mos >= 4.0 {
        Color::Green
    } else if m.mos >= 3.6 {
        Color::Yellow
    } else {
        Color::Red
    };
    let mos_word = if m.mos >= 4.3 {
        "excellent"
    } else if m.mos >= 4.0 {
        "good"
    } else if m.mos >= 3.6 {
        "fair"
    } else if m.mos >= 3.1 {
        "poor"
    } else {
        "bad"
    };
    let loss_color = if m.loss_pct >= 5.0 {
        Color::Red
    } else if m.loss_pct >= 1.0 {
        Color::Yellow
    } else {
        Color::Reset
    };
    vec![
        Line::from(vec![
            label("send   "),
            Span::from(format!("{:5.1} kb/s  wire {:.1}", m.send_payload_kbps, m.send_wire_kbps)),
        ]),
        Line::from(vec![
            label("recv   "),
            Span::from(format!("{:5.1} kb/s  wire {:.1}", m.recv_payload_kbps, m.recv_wire_kbps)),
        ]),
        Line::from(vec![
            label("RTT    "),
            Span::from(format!("{:5.1} ms", m.rtt_ms)),
            label("  jitter "),
            Span::from(format!("{:.1} ms", m.jitter_ms)),
        ]),
        Line::from(vec![
            label("loss   "),
            Span::from(format!("{:5.1} %", m.loss_pct)).fg(loss_color),
            label("   peer "),
            Span::from(format!("{:.1} %", m.peer_loss_pct)),
        ]),
        Line::from(vec![
            label("MOS    "),
            Span::from(format!("{:5.2} ", m.mos)).fg(mos_color).bold(),
            Span::from(mos_word).fg(mos_color),
        ]),
        Line::from(vec![
            label("JB     "),
            Span::from(format!("{:5} fr  wait {:.0} ms", m.jb_depth_frames, m.jb_wait_ms)),
        ]),
        Line::from(vec![label("frames "), Span::from(format!("↑{}  ↓{}", m.frames_sent, m.frames_received))]),
        Line::from(vec![
            label("concealed "),
            Span::from(format!("{:.1} %", m.concealed_pct)),
            label(if m.fec_enabled { "  FEC on" } else { "" }),
        ]),
    ]
}

fn render_gauges(app: &App, area: Rect, buf: &mut Buffer) {
    let block = Block::bordered().title(" Gauges ");
    let inner = block.inner(area);
    block.render(area, buf);
    let Some(m) = app.call.as_ref().and_then(|c| c.metrics.as_ref()) else {
        let msg = match app.live_call() {
            Some(_) => "waiting for media…",
            None => "bitrate, RTT, jitter, loss and MOS show here during a call",
        };
        Paragraph::new(Line::from(msg).dim()).wrap(Wrap { trim: true }).render(inner, buf);
        return;
    };
    // Each sparkline takes a label row and a graph row; with no room for one, the numbers get the width.
    let n_sparks = (inner.height / 2).min(4);
    let spark_w = if inner.width >= 48 && n_sparks > 0 { inner.width.saturating_sub(31) } else { 0 };
    let [text, sparks] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(spark_w)]).areas(inner);
    Paragraph::new(metric_lines(m)).render(text, buf);
    if spark_w == 0 {
        return;
    }
    let s = &app.sparks;
    let last = |q: &std::collections::VecDeque<u64>| q.back().copied().unwrap_or(0);
    let rows = [
        (format!("recv wire {} kb/s", last(&s.recv_kbps)), &s.recv_kbps, Color::Cyan),
        (format!("RTT {} ms", last(&s.rtt_ms)), &s.rtt_ms, Color::Magenta),
        (format!("jitter {} ms", last(&s.jitter_ms)), &s.jitter_ms, Color::Blue),
        (format!("loss {:.1} %", last(&s.loss_permille) as f64 / 10.0), &s.loss_permille, Color::Red),
    ];
    let per = sparks.height / n_sparks;
    for (i, (label, data, color)) in rows.into_iter().take(n_sparks as usize).enumerate() {
        let y = sparks.y + i as u16 * per;
        let label_area = Rect { x: sparks.x, y, width: sparks.width, height: 1 };
        Line::from(label).fg(Color::Gray).render(label_area, buf);
        let spark_area = Rect { x: sparks.x, y: y + 1, width: sparks.width, height: per - 1 };
        let w = spark_area.width as usize;
        let tail: Vec<u64> = data.iter().skip(data.len().saturating_sub(w)).copied().collect();
        Sparkline::default().data(&tail).style(Style::new().fg(color)).render(spark_area, buf);
    }
}

fn render_log(app: &App, area: Rect, buf: &mut Buffer) {
    let block = Block::new().borders(Borders::TOP).title(" Log ").border_style(Style::new().fg(Color::DarkGray));
    let inner = block.inner(area);
    block.render(area, buf);
    let n = inner.height as usize;
    let lines: Vec<Line> = app
        .log
        .iter()
        .skip(app.log.len().saturating_sub(n))
        .map(|l| if l.error { Line::from(l.text.as_str()).fg(Color::Red) } else { Line::from(l.text.as_str()).dim() })
        .collect();
    Paragraph::new(lines).render(inner, buf);
}

/// A centred rectangle of at most `w` x `h`, clamped to `area`.
pub(super) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else if max == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn clock(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}
