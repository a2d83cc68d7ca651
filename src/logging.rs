//! Where tracing output goes. Headless commands log to stderr; the TUI owns the terminal, so its logs go
//! to a file (in the state directory, `~/.local/state/qvoice/qvoice.log`) and, line by line, into the TUI's
//! log pane. Nothing may print over the TUI. File lines carry UTC timestamps; the file is rotated at
//! [`MAX_LOG_BYTES`] keeping [`KEEP_ROTATED`] old files, and is readable by its owner only. [`Throttle`]
//! keeps a condition that repeats (a registry outage) to one line a minute with a count.

use std::io::Write as _;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing_subscriber::EnvFilter;

/// The STUN/TURN crates log normal protocol steps (the first 401 challenge of every allocation, a
/// permission already being created) at ERROR, and the PulseAudio client logs "Client disconnected" at
/// ERROR whenever a connection is closed (every device check); what matters is reported in our own words.
const QUIET_CRATES: &str = ",stun_proto=off,turn_client_proto=off,turn_types=off,stun_types=off,pulseaudio=off";

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("QVOICE_LOG").unwrap_or_else(|_| EnvFilter::new(format!("{default}{QUIET_CRATES}")))
}

/// Logs to stderr (headless commands). `QVOICE_LOG` overrides the level (e.g. `debug`).
pub fn to_stderr() {
    let _ = tracing_subscriber::fmt().with_env_filter(filter("warn")).with_writer(std::io::stderr).try_init();
}

/// The log file is rotated when a line would take it past this size.
pub const MAX_LOG_BYTES: u64 = 1 << 20;
/// Rotated files kept beside the log (`qvoice.log.1` is the newest).
pub const KEEP_ROTATED: u32 = 3;

/// Opens `file` for appending, owner-only, creating its folder (0700).
fn open_log(file: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file)
}

/// An append-only log file with a size cap: past `max` bytes it becomes `<name>.1` (older ones move up,
/// the oldest beyond `keep` is replaced) and a new file starts.
#[derive(Debug)]
struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max: u64,
    keep: u32,
}

impl RotatingFile {
    fn open(path: &Path, max: u64, keep: u32) -> std::io::Result<Self> {
        let file = open_log(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.to_owned(), file, size, max, keep })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, self.rotated(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = open_log(&self.path)?;
        self.size = 0;
        // Stderr sent to this file (the TUI's, see [`StderrToFile`]) follows it to the new file; it would
        // otherwise keep writing into the rotated one.
        let redirected = STDERR_TARGET.lock().is_ok_and(|t| t.as_deref() == Some(self.path.as_path()));
        if redirected {
            nix::unistd::dup2(self.file.as_raw_fd(), 2).map_err(std::io::Error::from)?;
        }
        Ok(())
    }
}

/// The log file the process's stderr currently goes to, if [`StderrToFile`] redirected it.
static STDERR_TARGET: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Logs to `file` (appending, rotated at [`MAX_LOG_BYTES`]) and sends each line, without its timestamp, to
/// the returned receiver for the TUI's log pane.
///
/// Fails when the log file cannot be opened.
pub fn to_file_and_pane(file: &Path) -> anyhow::Result<mpsc::Receiver<String>> {
    let f = RotatingFile::open(file, MAX_LOG_BYTES, KEEP_ROTATED)?;
    let (tx, rx) = mpsc::channel(512);
    let shared = Arc::new(Mutex::new(f));
    let make = move || PaneWriter { file: shared.clone(), tx: tx.clone(), line: Vec::new() };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("info,hyper=warn,reqwest=warn,rustls=warn"))
        .with_ansi(false)
        .with_target(false)
        .with_writer(make)
        .try_init();
    Ok(rx)
}

/// One log event's writer: buffers the formatted line, then appends it to the file and offers it to the
/// pane (dropped if the pane is behind; the file keeps everything).
struct PaneWriter {
    file: Arc<Mutex<RotatingFile>>,
    tx: mpsc::Sender<String>,
    line: Vec<u8>,
}

impl std::io::Write for PaneWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PaneWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_line(&self.line);
        }
        // The pane is 80 columns wide and shows lines as they happen: the timestamp stays in the file.
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_start().split_once(' ').map_or(&*text, |(_, rest)| rest).trim();
        let _ = self.tx.try_send(text.to_owned());
    }
}

/// While alive, the process's stderr (fd 2) goes to a log file: audio libraries (ALSA through cpal) print
/// from threads we do not own, and nothing may print over the TUI. Dropping it restores stderr; a panic
/// restores it first, so the panic message reaches the terminal after the TUI has restored it.
#[derive(Debug)]
pub struct StderrToFile {
    saved: std::sync::Arc<OwnedFd>,
}

impl StderrToFile {
    /// Fails when the file cannot be opened or the descriptors cannot be duplicated.
    pub fn new(file: &Path) -> anyhow::Result<Self> {
        let f = open_log(file)?;
        let saved = std::sync::Arc::new(std::io::stderr().as_fd().try_clone_to_owned()?);
        nix::unistd::dup2(f.as_raw_fd(), 2)?;
        if let Ok(mut t) = STDERR_TARGET.lock() {
            *t = Some(file.to_owned());
        }
        // The hook owns a reference, so the saved descriptor stays open (and is never a reused number).
        let for_hook = saved.clone();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = nix::unistd::dup2(for_hook.as_raw_fd(), 2);
            prev(info);
        }));
        Ok(Self { saved })
    }
}

impl Drop for StderrToFile {
    fn drop(&mut self) {
        if let Ok(mut t) = STDERR_TARGET.lock() {
            *t = None;
        }
        let _ = nix::unistd::dup2(self.saved.as_raw_fd(), 2);
    }
}

/// Lets a repeating log line through at most once per period, counting the ones held back: the first
/// occurrence is logged at once, later ones only when the period has passed, with how many were skipped.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self { every, last: None, skipped: 0 }
    }

    /// Whether to log now: `Some(n)` with the number of occurrences held back since the last line, or
    /// `None` to stay quiet (the occurrence is counted).
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }

    /// Forgets the history (the condition cleared), so the next occurrence is logged at once.
    pub fn reset(&mut self) {
        self.last = None;
        self.skipped = 0;
    }
}

/// The tail of a throttled line: how many times it happened unlogged since the previous one.
pub fn repeats(skipped: u64) -> String {
    match skipped {
        0 => String::new(),
        1 => " (once more since the last such line)".into(),
        n => format!(" ({n} more times since the last such line)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn log_rotates_at_the_cap_and_keeps_three_owner_only_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/qvoice.log");
        let mut f = RotatingFile::open(&path, 100, 3).unwrap();
        for i in 0..20 {
            f.write_line(format!("line {i:02} {}\n", "x".repeat(30)).as_bytes()).unwrap();
        }
        // 40-byte lines, two per 100-byte file: 20 lines make 10 files, of which the newest 4 remain.
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.starts_with("line 18") && current.contains("line 19"), "{current}");
        assert!(std::fs::read_to_string(dir.path().join("state/qvoice.log.1")).unwrap().starts_with("line 16"));
        assert!(std::fs::read_to_string(dir.path().join("state/qvoice.log.3")).unwrap().starts_with("line 12"));
        assert!(!dir.path().join("state/qvoice.log.4").exists());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let d = std::fs::metadata(dir.path().join("state")).unwrap().permissions().mode() & 0o777;
        assert_eq!(d, 0o700);
        // Reopening continues the size count, so a restart cannot grow the file past the cap.
        drop(f);
        let mut f = RotatingFile::open(&path, 100, 3).unwrap();
        f.write_line(format!("line 20 {}\n", "x".repeat(30)).as_bytes()).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("line 20"));
    }

    #[test]
    fn redirected_stderr_follows_the_log_to_the_new_file_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/qvoice.log");
        let mut f = RotatingFile::open(&path, 100, 3).unwrap();
        let redirect = StderrToFile::new(&path).unwrap();
        for i in 0..3 {
            f.write_line(format!("line {i:02} {}\n", "x".repeat(30)).as_bytes()).unwrap();
        }
        // What a C library prints on fd 2 after the rotation lands in the current file, not in `.1`.
        nix::unistd::write(std::io::stderr(), b"from-fd-2-after-rotation\n").unwrap();
        drop(redirect);
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.contains("from-fd-2-after-rotation"), "current log:\n{current}");
    }

    #[test]
    fn throttle_logs_first_then_once_per_period_with_a_count() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.check(t0), Some(0));
        for s in 1..42 {
            assert_eq!(t.check(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(t.check(t0 + Duration::from_secs(61)), Some(41));
        assert_eq!(t.check(t0 + Duration::from_secs(62)), None);
        t.reset();
        assert_eq!(t.check(t0 + Duration::from_secs(63)), Some(0));
    }
}
