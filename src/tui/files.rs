//! Encrypted file transfer in the TUI: the uploads we started (with a path prompt on the selected
//! contact, [`super::overlays::FilePrompt`]), the files waiting for us (the Files pane, fed by the
//! session's `IncomingFile`/`Files` events) and the progress of each transfer. The transfers themselves run
//! in the session's background tasks (`crate::session::files::Transfers`): nothing here waits.

use std::time::Instant;

use super::app::{Action, App, Effect, Overlay};
use crate::session::files::Incoming as Listed;
use crate::session::{Direction, SessionCommand, SessionEvent, Trust};

/// Incoming-file ids already saved, discarded or refused, so a listing that crossed with the
/// acknowledgement does not bring them back. Bounded: old ids are dropped.
const CLOSED_KEPT: usize = 64;

/// Bytes moved by one running transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub done: u64,
    pub total: u64,
    /// Bytes the registry already had when this run started (a resumed upload): not counted in the rate.
    pub resumed: u64,
    pub started: Instant,
}

impl Transfer {
    pub fn new(total: u64, now: Instant) -> Self {
        Self { done: 0, total, resumed: 0, started: now }
    }

    /// Done, 0.0 to 1.0.
    pub fn ratio(&self) -> f64 {
        if self.total == 0 { 1.0 } else { (self.done as f64 / self.total as f64).clamp(0.0, 1.0) }
    }

    /// Bytes per second moved by this run, once it has run long enough to say.
    pub fn rate(&self, now: Instant) -> Option<f64> {
        let secs = now.saturating_duration_since(self.started).as_secs_f64();
        (secs >= 0.5).then(|| self.done.saturating_sub(self.resumed) as f64 / secs)
    }
}

/// A file waiting for us at the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingFile {
    pub file_id: String,
    pub from: String,
    pub size: u64,
    /// The sender's file name (sanitised), once the listing opened the manifest.
    pub name: Option<String>,
    pub trust: Trust,
    /// When the registry deletes it unreceived, ms since the Unix epoch.
    pub expires_ms: u64,
    /// Why it cannot be received as it is (key changed, prekey gone).
    pub problem: Option<String>,
    /// Set while it downloads.
    pub download: Option<Transfer>,
    /// A discard was asked and not confirmed yet.
    pub discarding: bool,
}

impl IncomingFile {
    fn from_listing(l: Listed) -> Self {
        Self {
            file_id: l.file_id,
            from: l.sender,
            size: l.size,
            name: l.name,
            trust: l.trust,
            expires_ms: l.expires_ms,
            problem: l.problem,
            download: None,
            discarding: false,
        }
    }

    /// The name to show: the sender's, or the start of the id until it is known.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("file {}", &self.file_id[..self.file_id.len().min(8)]))
    }
}

/// A file we are sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub to: String,
    /// As typed in the prompt.
    pub path: String,
    /// Known from the first progress report on.
    pub file_id: String,
    /// `None` while the file is hashed and encrypted, before the first chunk.
    pub progress: Option<Transfer>,
}

impl Upload {
    /// The file's name (the last part of the path).
    pub fn name(&self) -> &str {
        self.path.trim_end_matches('/').rsplit('/').next().unwrap_or(&self.path)
    }
}

/// `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// `4.2/10.0 MiB`: both in the unit of the total.
pub fn human_pair(done: u64, total: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut t, mut d, mut u) = (total as f64, done as f64, 0);
    while t >= 1024.0 && u + 1 < UNITS.len() {
        t /= 1024.0;
        d /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{done}/{total} B") } else { format!("{d:.1}/{t:.1} {}", UNITS[u]) }
}

/// `6d left`, `3h left`, `12m left`.
pub fn time_left(expires_ms: u64, now_ms: u64) -> String {
    let s = expires_ms.saturating_sub(now_ms) / 1000;
    if s >= 86_400 {
        format!("{}d left", s / 86_400)
    } else if s >= 3600 {
        format!("{}h left", s / 3600)
    } else {
        format!("{}m left", s.div_ceil(60))
    }
}

impl App {
    /// Whether the Files pane has the keys.
    pub fn files_focused(&self) -> bool {
        self.files_focus && !self.files.is_empty()
    }

    /// Whether an upload or a download is under way (quitting stops it).
    pub fn transfers_running(&self) -> bool {
        !self.uploads.is_empty() || self.files.iter().any(|f| f.download.is_some())
    }

    /// The incoming file under the cursor of the Files pane.
    pub fn selected_file(&self) -> Option<&IncomingFile> {
        self.files.get(self.file_cursor)
    }

    fn closed(&mut self, file_id: &str) {
        self.files.retain(|f| f.file_id != file_id);
        if self.closed_files.len() >= CLOSED_KEPT {
            self.closed_files.remove(0);
        }
        self.closed_files.push(file_id.to_owned());
        self.file_cursor = self.file_cursor.min(self.files.len().saturating_sub(1));
        if self.files.is_empty() {
            self.files_focus = false;
        }
    }

    fn file_row(&mut self, file_id: &str) -> Option<&mut IncomingFile> {
        self.files.iter_mut().find(|f| f.file_id == file_id)
    }

    /// Opens the path prompt to send a file to the selected contact.
    pub(super) fn start_send_file(&mut self) -> Option<Effect> {
        let Some(c) = self.selected_contact() else {
            self.set_status("no contact selected: pick who gets the file".into());
            return None;
        };
        let (to, trust) = (c.username.clone(), c.trust);
        if let Some((false, detail)) = &self.connected {
            self.set_status(format!("offline: sending a file needs the registry ({detail})"));
            return None;
        }
        if trust == Trust::Suspicious {
            self.set_status(format!(
                "{to} is marked suspicious (SAS mismatch): compare safety numbers, then run `qvoice verify {to}`"
            ));
            return None;
        }
        self.prompt.clear();
        self.send_to = Some(to);
        self.overlay = Some(Overlay::FilePrompt);
        None
    }

    /// The path prompt's Enter: starts the upload in the background.
    pub(super) fn submit_send_file(&mut self) -> Option<Effect> {
        let path = self.prompt.trim().to_owned();
        if path.is_empty() {
            return None;
        }
        let to = self.send_to.take()?;
        self.overlay = None;
        self.prompt.clear();
        self.push_log(format!("sending {path} to {to}…"), false);
        self.uploads.push(Upload { to: to.clone(), path: path.clone(), file_id: String::new(), progress: None });
        Some(Effect::Command(SessionCommand::SendFile { to, path }))
    }

    /// A key in the Files pane.
    pub(super) fn on_files(&mut self, action: Action) -> Option<Effect> {
        match action {
            Action::Up => {
                self.file_cursor = self.file_cursor.saturating_sub(1);
                None
            }
            Action::Down => {
                if self.file_cursor + 1 < self.files.len() {
                    self.file_cursor += 1;
                }
                None
            }
            Action::SaveFile => {
                let now = self.now;
                let f = self.files.get_mut(self.file_cursor)?;
                if f.download.is_some() || f.discarding {
                    let msg = format!("{} is already being handled", f.label());
                    self.set_status(msg);
                    return None;
                }
                f.download = Some(Transfer::new(f.size, now));
                let id = f.file_id.clone();
                Some(Effect::Command(SessionCommand::ReceiveFile(id)))
            }
            Action::DiscardFile => {
                let f = self.files.get_mut(self.file_cursor)?;
                if f.download.is_some() || f.discarding {
                    let msg = format!("{} is already being handled", f.label());
                    self.set_status(msg);
                    return None;
                }
                f.discarding = true;
                let id = f.file_id.clone();
                Some(Effect::Command(SessionCommand::DiscardFile(id)))
            }
            Action::Cancel | Action::FocusFiles => {
                self.files_focus = false;
                None
            }
            Action::Quit => self.quit(),
            _ => None,
        }
    }

    /// The file-transfer events of the session.
    pub(super) fn on_file_event(&mut self, event: SessionEvent) -> Option<Effect> {
        match event {
            SessionEvent::IncomingFile { file_id, from, size, expires_ms, trust } => {
                if self.closed_files.contains(&file_id) || self.file_row(&file_id).is_some() {
                    return None;
                }
                let k = &self.config.keys;
                self.push_log(
                    format!("{from} sent you a file ({}): {} to see it", human_bytes(size), k.files.primary()),
                    false,
                );
                self.files.push(IncomingFile {
                    file_id,
                    from,
                    size,
                    name: None,
                    trust,
                    expires_ms,
                    problem: None,
                    download: None,
                    discarding: false,
                });
                // A bell only when nothing else holds the user's attention (no call, no prompt, no typing).
                let idle = self.mode() == super::mode::Mode::Idle && self.call.is_none();
                return (self.config.bell && idle).then_some(Effect::Bell);
            }
            SessionEvent::Files { incoming } => {
                let mut rows = Vec::new();
                for l in incoming {
                    if self.closed_files.contains(&l.file_id) {
                        continue;
                    }
                    let old = self.files.iter().find(|f| f.file_id == l.file_id);
                    let (download, discarding) = old.map_or((None, false), |o| (o.download.clone(), o.discarding));
                    rows.push(IncomingFile { download, discarding, ..IncomingFile::from_listing(l) });
                }
                // A file announced after this listing was taken stays until the next one.
                for f in &self.files {
                    if !rows.iter().any(|r| r.file_id == f.file_id) && (f.download.is_some() || f.name.is_none()) {
                        rows.push(f.clone());
                    }
                }
                let cursor_id = self.selected_file().map(|f| f.file_id.clone());
                self.files = rows;
                self.file_cursor = cursor_id
                    .and_then(|id| self.files.iter().position(|f| f.file_id == id))
                    .unwrap_or(self.file_cursor)
                    .min(self.files.len().saturating_sub(1));
                if self.files.is_empty() {
                    self.files_focus = false;
                }
            }
            SessionEvent::FileProgress { direction, peer, path, file_id, done, total, resumed } => {
                let now = self.now;
                let t = match direction {
                    Direction::Outgoing => {
                        let u = self.uploads.iter_mut().find(|u| u.to == peer && u.path == path)?;
                        u.file_id = file_id;
                        u.progress.get_or_insert_with(|| Transfer { resumed, ..Transfer::new(total, now) })
                    }
                    Direction::Incoming => {
                        let f = self.file_row(&file_id)?;
                        f.download.get_or_insert_with(|| Transfer::new(total, now))
                    }
                };
                t.done = done;
                t.total = total;
                t.resumed = resumed;
            }
            SessionEvent::FileSent { to, path, file_id: _, name, size } => {
                self.uploads.retain(|u| !(u.to == to && u.path == path));
                let msg = format!(
                    "sent {name} ({}) to {to}: it waits at the registry until {to} saves it",
                    human_bytes(size)
                );
                self.push_log(msg.clone(), false);
                self.set_status(msg);
            }
            SessionEvent::FileSaved { file_id, from, path, size } => {
                self.closed(&file_id);
                let msg = format!("saved {path} ({} from {from}, verified)", human_bytes(size));
                self.push_log(msg.clone(), false);
                self.set_status(msg);
            }
            SessionEvent::FileDiscarded { file_id } => {
                let label = self.files.iter().find(|f| f.file_id == file_id).map(|f| (f.label(), f.from.clone()));
                self.closed(&file_id);
                let msg = match label {
                    Some((name, from)) => format!("discarded {name} from {from}"),
                    None => "discarded the file".into(),
                };
                self.push_log(msg, false);
            }
            SessionEvent::FileFailed { direction, peer, path, file_id, message, waiting } => {
                let msg = match direction {
                    Direction::Outgoing => {
                        self.uploads.retain(|u| !(u.to == peer && u.path == path));
                        format!("could not send {path} to {peer}: {message}")
                    }
                    Direction::Incoming => {
                        let what = self.file_row(&file_id).map(|f| {
                            f.download = None;
                            f.discarding = false;
                            format!("{} from {}", f.label(), f.from)
                        });
                        if !waiting {
                            self.closed(&file_id);
                        }
                        format!("could not receive {}: {message}", what.unwrap_or_else(|| "the file".into()))
                    }
                };
                self.push_log(msg.clone(), true);
                self.set_status(msg);
            }
            SessionEvent::FileClosed { file_id, peer, outcome, reason } => {
                if self.closed_files.contains(&file_id) {
                    return None;
                }
                let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
                if let Some(f) = self.files.iter().find(|f| f.file_id == file_id) {
                    let msg = format!("{} from {} is gone from the registry ({outcome}{why})", f.label(), f.from);
                    self.closed(&file_id);
                    self.push_log(msg, false);
                    return None;
                }
                let (msg, bad) = match outcome.as_str() {
                    "delivered" => (format!("{peer} saved the file you sent"), false),
                    "discarded" => (format!("{peer} discarded the file you sent"), false),
                    "refused" => (format!("{peer}'s qvoice refused the file you sent{why}"), true),
                    "expired" => (format!("the file you sent to {peer} expired before they saved it"), true),
                    other => (format!("the file you sent to {peer}: {other}{why}"), false),
                };
                self.push_log(msg, bad);
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::super::app::Event;
    use super::super::keys::TuiConfig;
    use super::super::mode::Mode;
    use super::*;
    use crate::session::ContactView;

    const ID: &str = "00112233445566778899aabbccddeeff";

    fn key(c: char) -> Event {
        Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }
    fn code(c: KeyCode) -> Event {
        Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
    }
    fn ev(e: SessionEvent) -> Event {
        Event::Session(e)
    }
    fn cmd(c: SessionCommand) -> Option<Effect> {
        Some(Effect::Command(c))
    }
    fn app() -> (App, Instant) {
        let t = Instant::now();
        let mut a = App::new(TuiConfig::default(), "alice".into(), t);
        let c = |n: &str, trust| ContactView { username: n.into(), display_name: None, online: true, trust };
        a.handle(
            t,
            ev(SessionEvent::Contacts { contacts: vec![c("bob", Trust::Verified), c("eve", Trust::Suspicious)] }),
        );
        (a, t)
    }
    fn incoming(id: &str) -> SessionEvent {
        SessionEvent::IncomingFile {
            file_id: id.into(),
            from: "bob".into(),
            size: 3 << 20,
            expires_ms: 7 * 86_400_000,
            trust: Trust::Verified,
        }
    }
    fn listed(id: &str, name: &str) -> Listed {
        Listed {
            file_id: id.into(),
            sender: "bob".into(),
            size: 3 << 20,
            name: Some(name.into()),
            trust: Trust::Verified,
            created_ms: 0,
            expires_ms: 7 * 86_400_000,
            problem: None,
        }
    }

    #[test]
    fn send_prompt_opens_on_the_selected_contact_and_sends_in_the_background() {
        let (mut a, t) = app();
        assert_eq!(a.handle(t, key('f')), None);
        assert_eq!(a.mode(), Mode::FilePrompt);
        assert_eq!(a.send_to.as_deref(), Some("bob"));
        assert_eq!(a.handle(t, code(KeyCode::Enter)), None, "nothing typed: nothing sent");
        for c in "~/report.pdfx".chars() {
            a.handle(t, key(c));
        }
        // Letters that are keys elsewhere (q, f, x) are text here.
        a.handle(t, code(KeyCode::Backspace));
        let sent = a.handle(t, code(KeyCode::Enter));
        assert_eq!(sent, cmd(SessionCommand::SendFile { to: "bob".into(), path: "~/report.pdf".into() }));
        assert_eq!(a.mode(), Mode::Idle);
        assert_eq!(a.uploads.len(), 1);
        assert_eq!((a.uploads[0].name(), a.uploads[0].progress.is_none()), ("report.pdf", true));

        // Esc cancels without sending.
        a.handle(t, key('f'));
        a.handle(t, key('a'));
        assert_eq!(a.handle(t, code(KeyCode::Esc)), None);
        assert_eq!((a.overlay, a.send_to.as_ref(), a.prompt.as_str()), (None, None, ""));
        assert_eq!(a.uploads.len(), 1);
    }

    #[test]
    fn send_is_refused_to_a_suspicious_contact_and_offline() {
        let (mut a, t) = app();
        a.handle(t, key('j'));
        assert_eq!(a.selected_contact().unwrap().username, "eve");
        assert_eq!(a.handle(t, key('f')), None);
        assert_eq!(a.overlay, None);
        assert!(a.status.as_ref().unwrap().0.contains("qvoice verify eve"));
        let (mut a, t) = app();
        a.handle(t, ev(SessionEvent::Connection { connected: false, detail: "connection refused".into() }));
        a.handle(t, key('f'));
        assert_eq!(a.overlay, None);
        assert!(a.status.as_ref().unwrap().0.contains("offline"));
    }

    fn progress(dir: Direction, id: &str, done: u64, total: u64, resumed: u64) -> SessionEvent {
        let (peer, path) = if dir == Direction::Outgoing { ("bob", "~/report.pdf") } else { ("", "") };
        SessionEvent::FileProgress {
            direction: dir,
            peer: peer.into(),
            path: path.into(),
            file_id: id.into(),
            done,
            total,
            resumed,
        }
    }

    #[test]
    fn upload_gauge_follows_progress_then_logs_the_outcome() {
        let (mut a, t) = app();
        a.handle(t, key('f'));
        for c in "~/report.pdf".chars() {
            a.handle(t, key(c));
        }
        a.handle(t, code(KeyCode::Enter));
        a.handle(t, ev(progress(Direction::Outgoing, ID, 1 << 20, 10 << 20, 1 << 20)));
        // Quitting would stop the upload: asked first.
        assert_eq!(a.handle(t, key('q')), None);
        assert_eq!(a.overlay, Some(Overlay::ConfirmQuit));
        a.handle(t, key('n'));
        let later = t + Duration::from_secs(2);
        a.handle(later, ev(progress(Direction::Outgoing, ID, 5 << 20, 10 << 20, 1 << 20)));
        let u = &a.uploads[0];
        assert_eq!(u.file_id, ID);
        let p = u.progress.as_ref().unwrap();
        assert_eq!((p.done, p.total, p.ratio()), (5 << 20, 10 << 20, 0.5));
        // 4 MiB moved in 2 s by this run: the resumed MiB does not count.
        assert_eq!(p.rate(later), Some((2 << 20) as f64));
        a.handle(
            later,
            ev(SessionEvent::FileSent {
                to: "bob".into(),
                path: "~/report.pdf".into(),
                file_id: ID.into(),
                name: "report.pdf".into(),
                size: 10 << 20,
            }),
        );
        assert!(a.uploads.is_empty());
        let last = a.log.back().unwrap();
        assert!(!last.error && last.text.contains("sent report.pdf (10.0 MiB) to bob"), "{}", last.text);
        assert_eq!(a.handle(later, key('q')), Some(Effect::Quit), "nothing running: q quits");

        a.handle(t, key('f'));
        for c in "big.iso".chars() {
            a.handle(t, key(c));
        }
        a.handle(t, code(KeyCode::Enter));
        a.handle(
            t,
            ev(SessionEvent::FileFailed {
                direction: Direction::Outgoing,
                peer: "bob".into(),
                path: "big.iso".into(),
                file_id: String::new(),
                message: "big.iso is too large for this registry: at most 100 bytes".into(),
                waiting: false,
            }),
        );
        assert!(a.uploads.is_empty());
        let last = a.log.back().unwrap();
        assert!(last.error && last.text.contains("could not send big.iso to bob: big.iso is too large"));
    }

    #[test]
    fn incoming_file_is_listed_named_and_rings_only_when_idle() {
        let (mut a, t) = app();
        assert_eq!(a.handle(t, ev(incoming(ID))), Some(Effect::Bell));
        assert_eq!(a.files.len(), 1);
        assert_eq!(a.files[0].label(), "file 00112233");
        assert_eq!(a.handle(t, ev(incoming(ID))), None, "announced once");
        a.handle(t, ev(SessionEvent::Files { incoming: vec![listed(ID, "notes.txt")] }));
        assert_eq!(a.files[0].label(), "notes.txt");
        // Typing a filter is not idle: no bell, but the file is listed.
        a.handle(t, key('/'));
        assert_eq!(a.handle(t, ev(incoming("ff112233445566778899aabbccddeeff"))), None);
        assert_eq!(a.files.len(), 2);
        let quiet = TuiConfig { bell: false, ..TuiConfig::default() };
        let mut b = App::new(quiet, "alice".into(), t);
        assert_eq!(b.handle(t, ev(incoming(ID))), None);
        assert_eq!(time_left(7 * 86_400_000, 0), "7d left");
        assert_eq!(time_left(90_000, 0), "2m left");
    }

    #[test]
    fn files_pane_saves_with_a_gauge_and_discards() {
        let (mut a, t) = app();
        a.handle(
            t,
            ev(SessionEvent::Files { incoming: vec![listed(ID, "notes.txt"), listed(&ID.replace('0', "e"), "b.bin")] }),
        );
        assert_eq!(a.handle(t, key('F')), None);
        assert_eq!(a.mode(), Mode::Files);
        assert_eq!(a.handle(t, code(KeyCode::Enter)), cmd(SessionCommand::ReceiveFile(ID.into())));
        assert_eq!(a.handle(t, code(KeyCode::Enter)), None, "asked once");
        a.handle(t, ev(progress(Direction::Incoming, ID, 1 << 20, 3 << 20, 0)));
        assert_eq!(a.files[0].download.as_ref().unwrap().done, 1 << 20);
        a.handle(
            t,
            ev(SessionEvent::FileSaved {
                file_id: ID.into(),
                from: "bob".into(),
                path: "/home/alice/Downloads/notes.txt".into(),
                size: 3 << 20,
            }),
        );
        assert_eq!(a.files.len(), 1);
        assert!(a.status.as_ref().unwrap().0.contains("saved /home/alice/Downloads/notes.txt"));
        // A listing that crossed with the save does not bring it back.
        a.handle(
            t,
            ev(SessionEvent::Files { incoming: vec![listed(ID, "notes.txt"), listed(&ID.replace('0', "e"), "b.bin")] }),
        );
        assert_eq!(a.files.len(), 1);
        let other = ID.replace('0', "e");
        assert_eq!(a.handle(t, key('x')), cmd(SessionCommand::DiscardFile(other.clone())));
        assert!(a.files[0].discarding);
        a.handle(t, ev(SessionEvent::FileDiscarded { file_id: other }));
        assert!(a.files.is_empty());
        assert_eq!(a.mode(), Mode::Idle, "the pane gives the keys back when empty");
        assert!(a.log.back().unwrap().text.contains("discarded b.bin from bob"));
    }

    #[test]
    fn a_failed_download_stays_listed_when_the_file_still_waits() {
        let (mut a, t) = app();
        a.handle(t, ev(SessionEvent::Files { incoming: vec![listed(ID, "notes.txt")] }));
        a.handle(t, key('F'));
        a.handle(t, key('a'));
        let failed = |waiting| {
            ev(SessionEvent::FileFailed {
                direction: Direction::Incoming,
                peer: String::new(),
                path: String::new(),
                file_id: ID.into(),
                message: "cannot reach the registry".into(),
                waiting,
            })
        };
        a.handle(t, failed(true));
        assert!(a.files[0].download.is_none());
        assert!(a.log.back().unwrap().text.contains("could not receive notes.txt from bob"));
        assert_eq!(a.handle(t, key('a')), cmd(SessionCommand::ReceiveFile(ID.into())), "can try again");
        a.handle(t, failed(false));
        assert!(a.files.is_empty());
    }
}
