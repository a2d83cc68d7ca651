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
                        let Some(u) = self.uploads.iter_mut().find(|u| u.to == peer && u.path == path) else {
                            return None;
                        };
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
